//! Merchants, their credentials and request keys on PostgreSQL.

use crate::{db_error, dollar_placeholders, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use tillgate_core::store::CredentialStore;
use tillgate_core::terminal::TerminalRow;
use tillgate_core::*;
use tillgate_domain::MerchantZone;

#[async_trait]
impl CredentialStore for PgStore {
    async fn rotate_secret(&self, r: Rotation) -> Result<bool, StoreError> {
        let (keep, replace) = tillgate_store_sql::rotation_sql(r.kind);
        let (keep, replace) = (dollar_placeholders(&keep), dollar_placeholders(&replace));
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(&keep)
            .bind(r.kind.as_str())
            .bind(&r.previous_key)
            .bind(r.until.timestamp_millis())
            .bind(r.merchant_id)
            .bind(&r.key)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let n = sqlx::query(&replace)
            .bind(&r.new_sealed)
            .bind(r.merchant_id)
            .bind(&r.key)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(n == 1)
    }

    async fn previous_secret(
        &self,
        kind: CredentialKind,
        key: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let text = dollar_placeholders(tillgate_store_sql::PREVIOUS_SECRET);
        self.one(sqlx::query(&text).bind(kind.as_str()).bind(key), |r| {
            use tillgate_store_sql::Columns;
            Ok((
                r.text("sealed")?,
                tillgate_store_sql::time(r.int("until_at")?)?,
            ))
        })
        .await
    }

    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
        let q = sqlx::query(
            "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_no) DO NOTHING",
        )
        .bind(&m.merchant_no)
        .bind(m.zone.name())
        .bind(i64::from(m.sandbox))
        .bind(m.created_at.timestamp_millis());
        self.exec(q).await?;
        self.merchant(&m.merchant_no)
            .await?
            .ok_or_else(|| StoreError::Corrupt("merchant vanished after insert".into()))
    }

    async fn set_refund_reference_required(
        &self,
        merchant_id: i64,
        required: Option<bool>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE merchants SET refund_reference_required = $1 WHERE id = $2")
            .bind(required.map(i64::from))
            .bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM merchants WHERE merchant_no = $1").bind(merchant_no);
        self.one(q, tillgate_store_sql::merchant).await
    }

    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM merchants WHERE id = $1").bind(merchant_id);
        self.one(q, tillgate_store_sql::merchant).await
    }

    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM merchants WHERE sandbox = $1")
            .bind(1_i64)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE merchants SET notify_schedule = $1 WHERE id = $2")
            .bind(schedule)
            .bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn add_store(
        &self,
        merchant_id: i64,
        store_no: &str,
        token_sealed: &str,
    ) -> Result<StoreAdded, StoreError> {
        let table = &tillgate_store_sql::STORES;
        self.add_credential(table, merchant_id, store_no, token_sealed, None)
            .await
    }

    async fn store_row(
        &self,
        merchant_no: &str,
        store_no: &str,
    ) -> Result<Option<StoreRow>, StoreError> {
        let q = sqlx::query(
            "SELECT m.*, s.store_no, s.token_sealed, s.default_currency FROM stores s \
             JOIN merchants m ON m.id = s.merchant_id \
             WHERE m.merchant_no = $1 AND s.store_no = $2",
        )
        .bind(merchant_no)
        .bind(store_no);
        self.one(q, tillgate_store_sql::store_row).await
    }

    async fn set_display_name(
        &self,
        merchant_id: i64,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE merchants SET display_name = $1 WHERE id = $2")
            .bind(name)
            .bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn set_cors_origins(
        &self,
        merchant_id: i64,
        origins: Option<&str>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE merchants SET cors_origins = $1 WHERE id = $2")
            .bind(origins)
            .bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn origin_of_a_merchant(&self, origin: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM merchants \
             WHERE strpos(' ' || cors_origins || ' ', ' ' || $1 || ' ') > 0",
        )
        .bind(origin)
        .fetch_one(&self.pool)
        .await
        .map(|n| n > 0)
        .map_err(db_error)
    }

    async fn set_store_currency(
        &self,
        merchant_id: i64,
        store_no: &str,
        currency: Option<&str>,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE stores SET default_currency = $1 WHERE merchant_id = $2 AND store_no = $3",
        )
        .bind(currency)
        .bind(merchant_id)
        .bind(store_no);
        self.exec(q).await.map(drop)
    }

    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let at = Some(at.timestamp_millis());
        let table = &tillgate_store_sql::APPS;
        self.add_credential(table, merchant_id, app_id, secret_sealed, at)
            .await
    }

    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError> {
        let q = sqlx::query(
            "SELECT m.*, a.app_id, a.secret_sealed FROM apps a \
             JOIN merchants m ON m.id = a.merchant_id WHERE a.app_id = $1",
        )
        .bind(app_id);
        self.one(q, tillgate_store_sql::app_row).await
    }

    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let at = Some(at.timestamp_millis());
        let table = &tillgate_store_sql::TERMINALS;
        self.add_credential(table, merchant_id, tid, secret_sealed, at)
            .await
    }

    async fn terminal_row(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError> {
        let q = sqlx::query(
            "SELECT m.*, t.tid, t.secret_sealed, t.online_node, t.last_seen_at FROM terminals t \
             JOIN merchants m ON m.id = t.merchant_id WHERE t.tid = $1",
        )
        .bind(tid);
        self.one(q, tillgate_store_sql::terminal_row).await
    }

    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO request_keys (scope, request_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, request_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(at.timestamp_millis());
        Ok(self.exec(q).await? == 1)
    }

    async fn set_zone(&self, merchant_id: i64, zone: &MerchantZone) -> Result<(), StoreError> {
        let sql = dollar_placeholders(tillgate_store_sql::SET_ZONE);
        let q = sqlx::query(&sql).bind(zone.name()).bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn set_up_merchant(&self, setup: MerchantSetup) -> Result<MerchantSetUp, StoreError> {
        // One transaction: dropped without its commit on any error, so nothing of it stays.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = set_up_merchant(&mut tx, setup).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }

    async fn key_check(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(tillgate_store_sql::KEY_CHECK)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn record_key_check(
        &self,
        sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let sql = dollar_placeholders(tillgate_store_sql::RECORD_KEY_CHECK);
        let q = sqlx::query(&sql).bind(sealed).bind(at.timestamp_millis());
        self.exec(q).await?;
        self.key_check()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the key check vanished after insert".into()))
    }

    async fn first_store_row(&self) -> Result<Option<StoreRow>, StoreError> {
        let q = sqlx::query(tillgate_store_sql::FIRST_STORE_ROW);
        self.one(q, tillgate_store_sql::store_row).await
    }
}

async fn set_up_merchant(
    tx: &mut sqlx::PgConnection,
    s: MerchantSetup,
) -> Result<MerchantSetUp, StoreError> {
    let insert = dollar_placeholders(tillgate_store_sql::INSERT_MERCHANT);
    let inserted = sqlx::query(&insert)
        .bind(&s.merchant.merchant_no)
        .bind(s.merchant.zone.name())
        .bind(i64::from(s.merchant.sandbox))
        .bind(s.merchant.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let created = inserted.rows_affected() == 1;
    if let (true, Some(schedule)) = (created, &s.notify_schedule) {
        let sql = dollar_placeholders(tillgate_store_sql::SET_SCHEDULE_BY_NO);
        sqlx::query(&sql)
            .bind(schedule)
            .bind(&s.merchant.merchant_no)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    let row = sqlx::query("SELECT * FROM merchants WHERE merchant_no = $1")
        .bind(&s.merchant.merchant_no)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    let merchant = tillgate_store_sql::merchant(&crate::Loaded(row))?;
    let store = add_credential(
        &mut *tx,
        &tillgate_store_sql::STORES,
        merchant.id,
        &s.store_no,
        &s.token_sealed,
        None,
    )
    .await?;
    let at = s.merchant.created_at.timestamp_millis();
    let apps = &tillgate_store_sql::APPS;
    let app = wanted(&mut *tx, apps, merchant.id, created, s.app, at).await?;
    let terminals = &tillgate_store_sql::TERMINALS;
    let terminal = wanted(&mut *tx, terminals, merchant.id, created, s.terminal, at).await?;
    Ok(MerchantSetUp {
        merchant,
        created,
        store,
        app,
        terminal,
    })
}

/// The credential a set-up asks for: the named one (added unless it exists), or the
/// merchant's first (the wanted one added only for a merchant the set-up created).
async fn wanted(
    tx: &mut sqlx::PgConnection,
    table: &tillgate_store_sql::CredentialTable,
    merchant_id: i64,
    created: bool,
    w: WantedCredential,
    at_ms: i64,
) -> Result<Option<(String, StoreAdded)>, StoreError> {
    if !w.named && !created {
        let first = dollar_placeholders(table.first);
        let row = sqlx::query(&first)
            .bind(merchant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        return row
            .map(|r| -> Result<_, StoreError> {
                let key: String = r.try_get(0).map_err(db_error)?;
                let sealed: String = r.try_get(1).map_err(db_error)?;
                Ok((key, StoreAdded::Exists { sealed }))
            })
            .transpose();
    }
    let added = add_credential(tx, table, merchant_id, &w.key, &w.sealed, Some(at_ms)).await?;
    Ok(Some((w.key, added)))
}

/// Inserts a credential row unless its key exists; answers the existing row's sealed secret
/// otherwise.
async fn add_credential(
    conn: &mut sqlx::PgConnection,
    table: &tillgate_store_sql::CredentialTable,
    merchant_id: i64,
    key: &str,
    sealed: &str,
    at_ms: Option<i64>,
) -> Result<StoreAdded, StoreError> {
    let insert = dollar_placeholders(table.insert);
    let mut q = sqlx::query(&insert)
        .bind(merchant_id)
        .bind(key)
        .bind(sealed);
    if let Some(at) = at_ms {
        q = q.bind(at);
    }
    let done = q.execute(&mut *conn).await.map_err(db_error)?;
    if done.rows_affected() == 1 {
        return Ok(StoreAdded::Added);
    }
    let existing = dollar_placeholders(table.existing);
    let row = sqlx::query(&existing)
        .bind(merchant_id)
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let owner: i64 = row.try_get(0).map_err(db_error)?;
    if let Some(conflict) = table.global_key {
        if owner != merchant_id {
            return Err(conflict.into());
        }
    }
    Ok(StoreAdded::Exists {
        sealed: row.try_get(1).map_err(db_error)?,
    })
}

impl PgStore {
    /// Inserts a credential row unless its key exists, on a connection of the pool.
    async fn add_credential(
        &self,
        table: &tillgate_store_sql::CredentialTable,
        merchant_id: i64,
        key: &str,
        sealed: &str,
        at_ms: Option<i64>,
    ) -> Result<StoreAdded, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        add_credential(&mut conn, table, merchant_id, key, sealed, at_ms).await
    }
}
