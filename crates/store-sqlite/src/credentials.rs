//! Merchants, their credentials and request keys on SQLite.

use crate::writer::{self, native, one, Bind};
use crate::{rows, SqliteStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use tillgate_core::store::CredentialStore;
use tillgate_core::terminal::TerminalRow;
use tillgate_core::*;
use tillgate_domain::MerchantZone;

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn rotate_secret(&self, r: Rotation) -> Result<bool, StoreError> {
        let (keep, replace) = tillgate_store_sql::rotation_sql(r.kind);
        self.write(move |conn| {
            conn.execute(
                &keep,
                params![
                    r.kind.as_str(),
                    r.previous_key,
                    r.until.timestamp_millis(),
                    r.merchant_id,
                    r.key
                ],
            )
            .map_err(native)?;
            let n = conn
                .execute(&replace, params![r.new_sealed, r.merchant_id, r.key])
                .map_err(native)?;
            Ok(n == 1)
        })
        .await
    }

    async fn previous_secret(
        &self,
        kind: CredentialKind,
        key: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        self.read_one(
            tillgate_store_sql::PREVIOUS_SECRET,
            params![kind.as_str(), key],
            |r| {
                use tillgate_store_sql::Columns;
                Ok((
                    r.text("sealed")?,
                    tillgate_store_sql::time(r.int("until_at")?)?,
                ))
            },
        )
    }

    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
        self.write(move |conn| upsert_merchant(conn, m)).await
    }

    async fn set_refund_reference_required(
        &self,
        merchant_id: i64,
        required: Option<bool>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(required.map(i64::from)),
            Bind::Int(Some(merchant_id)),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE merchants SET refund_reference_required = ? WHERE id = ?",
                binds,
            )
            .map(drop)
        })
        .await
    }

    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM merchants WHERE merchant_no = ?",
            params![merchant_no],
            |r| rows::merchant(r),
        )
    }

    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM merchants WHERE id = ?",
            params![merchant_id],
            |r| rows::merchant(r),
        )
    }

    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .read_scalar("SELECT COUNT(*) FROM merchants WHERE sandbox = ?", 1)?
            .unwrap_or(0))
    }

    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(schedule.map(str::to_owned)),
            Bind::Int(Some(merchant_id)),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE merchants SET notify_schedule = ? WHERE id = ?",
                binds,
            )
            .map(drop)
        })
        .await
    }

    async fn add_store(
        &self,
        merchant_id: i64,
        store_no: &str,
        token_sealed: &str,
    ) -> Result<StoreAdded, StoreError> {
        let (s, t) = (store_no.to_owned(), token_sealed.to_owned());
        self.write(move |conn| add_store(conn, merchant_id, &s, &t))
            .await
    }

    async fn store_row(
        &self,
        merchant_no: &str,
        store_no: &str,
    ) -> Result<Option<StoreRow>, StoreError> {
        self.read_one(
            "SELECT m.*, s.store_no, s.token_sealed, s.default_currency FROM stores s \
             JOIN merchants m ON m.id = s.merchant_id \
             WHERE m.merchant_no = ? AND s.store_no = ?",
            params![merchant_no, store_no],
            |r| rows::store_row(r),
        )
    }

    async fn set_display_name(
        &self,
        merchant_id: i64,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(name.map(str::to_owned)),
            Bind::Int(Some(merchant_id)),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE merchants SET display_name = ? WHERE id = ?",
                binds,
            )
            .map(drop)
        })
        .await
    }

    async fn set_cors_origins(
        &self,
        merchant_id: i64,
        origins: Option<&str>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(origins.map(str::to_owned)),
            Bind::Int(Some(merchant_id)),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE merchants SET cors_origins = ? WHERE id = ?",
                binds,
            )
            .map(drop)
        })
        .await
    }

    async fn origin_of_a_merchant(&self, origin: &str) -> Result<bool, StoreError> {
        let n = self.read_scalar(
            "SELECT COUNT(*) FROM merchants \
             WHERE instr(' ' || cors_origins || ' ', ' ' || ? || ' ') > 0",
            origin,
        )?;
        Ok(n.unwrap_or(0) > 0)
    }

    async fn set_store_currency(
        &self,
        merchant_id: i64,
        store_no: &str,
        currency: Option<&str>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(currency.map(str::to_owned)),
            Bind::Int(Some(merchant_id)),
            Bind::Text(Some(store_no.to_owned())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE stores SET default_currency = ? WHERE merchant_id = ? AND store_no = ?",
                binds,
            )
            .map(drop)
        })
        .await
    }

    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let (app_id, sealed) = (app_id.to_owned(), secret_sealed.to_owned());
        let at_ms = at.timestamp_millis();
        self.write(move |conn| add_app(conn, merchant_id, &app_id, &sealed, at_ms))
            .await
    }

    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError> {
        self.read_one(
            "SELECT m.*, a.app_id, a.secret_sealed FROM apps a \
             JOIN merchants m ON m.id = a.merchant_id WHERE a.app_id = ?",
            params![app_id],
            |r| tillgate_store_sql::app_row(r),
        )
    }

    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let (tid, sealed) = (tid.to_owned(), secret_sealed.to_owned());
        let at_ms = at.timestamp_millis();
        self.write(move |conn| add_terminal(conn, merchant_id, &tid, &sealed, at_ms))
            .await
    }

    async fn terminal_row(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError> {
        self.read_one(
            "SELECT m.*, t.tid, t.secret_sealed, t.online_node, t.last_seen_at FROM terminals t \
             JOIN merchants m ON m.id = t.merchant_id WHERE t.tid = ?",
            params![tid],
            |r| tillgate_store_sql::terminal_row(r),
        )
    }

    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Text(Some(scope.to_owned())),
            Bind::Text(Some(key.to_owned())),
            Bind::Int(Some(at.timestamp_millis())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "INSERT INTO request_keys (scope, request_key, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (scope, request_key) DO NOTHING",
                binds,
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn set_zone(&self, merchant_id: i64, zone: &MerchantZone) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(Some(zone.name().to_owned())),
            Bind::Int(Some(merchant_id)),
        ];
        self.write(move |conn| writer::execute(conn, tillgate_store_sql::SET_ZONE, binds).map(drop))
            .await
    }

    async fn set_up_merchant(&self, setup: MerchantSetup) -> Result<MerchantSetUp, StoreError> {
        // One job of the writer: its savepoint is rolled back whole when any part fails.
        self.write(move |conn| set_up_merchant(conn, setup)).await
    }

    async fn key_check(&self) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            writer::one(conn, tillgate_store_sql::KEY_CHECK, [], |r| {
                tillgate_store_sql::Columns::text(r, "sealed")
            })
        })
    }

    async fn record_key_check(
        &self,
        sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let binds = vec![
            Bind::Text(Some(sealed.to_owned())),
            Bind::Int(Some(at.timestamp_millis())),
        ];
        self.write(move |conn| {
            writer::execute(conn, tillgate_store_sql::RECORD_KEY_CHECK, binds)?;
            one(conn, tillgate_store_sql::KEY_CHECK, [], |r| {
                tillgate_store_sql::Columns::text(r, "sealed")
            })?
            .ok_or_else(|| StoreError::Corrupt("the key check vanished after insert".into()))
        })
        .await
    }

    async fn first_store_row(&self) -> Result<Option<StoreRow>, StoreError> {
        self.read_one(tillgate_store_sql::FIRST_STORE_ROW, [], |r| {
            rows::store_row(r)
        })
    }
}

fn set_up_merchant(conn: &Connection, s: MerchantSetup) -> Result<MerchantSetUp, StoreError> {
    let inserted = conn
        .prepare_cached(tillgate_store_sql::INSERT_MERCHANT)
        .and_then(|mut st| {
            st.execute(params![
                s.merchant.merchant_no,
                s.merchant.zone.name(),
                i64::from(s.merchant.sandbox),
                s.merchant.created_at.timestamp_millis()
            ])
        })
        .map_err(native)?;
    let created = inserted == 1;
    if let (true, Some(schedule)) = (created, &s.notify_schedule) {
        conn.prepare_cached(tillgate_store_sql::SET_SCHEDULE_BY_NO)
            .and_then(|mut st| st.execute(params![schedule, s.merchant.merchant_no]))
            .map_err(native)?;
    }
    let merchant = one(
        conn,
        "SELECT * FROM merchants WHERE merchant_no = ?",
        [&s.merchant.merchant_no],
        |r| tillgate_store_sql::merchant(r),
    )?
    .ok_or_else(|| StoreError::Corrupt("merchant vanished after insert".into()))?;
    let store = add_store(conn, merchant.id, &s.store_no, &s.token_sealed)?;
    let at = s.merchant.created_at.timestamp_millis();
    let app = wanted(
        conn,
        &tillgate_store_sql::APPS,
        merchant.id,
        created,
        s.app,
        at,
    )?;
    let terminal = wanted(
        conn,
        &tillgate_store_sql::TERMINALS,
        merchant.id,
        created,
        s.terminal,
        at,
    )?;
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
fn wanted(
    conn: &Connection,
    table: &tillgate_store_sql::CredentialTable,
    merchant_id: i64,
    created: bool,
    w: WantedCredential,
    at_ms: i64,
) -> Result<Option<(String, StoreAdded)>, StoreError> {
    if !w.named && !created {
        return conn
            .prepare_cached(table.first)
            .and_then(|mut st| {
                st.query_row(params![merchant_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
            })
            .map(|(key, sealed)| Some((key, StoreAdded::Exists { sealed })))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(native(e)),
            });
    }
    let added = add_credential(conn, table, merchant_id, &w.key, &w.sealed, Some(at_ms))?;
    Ok(Some((w.key, added)))
}

fn upsert_merchant(conn: &Connection, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
    conn.prepare_cached(
        "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (merchant_no) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.merchant_no,
            m.zone.name(),
            i64::from(m.sandbox),
            m.created_at.timestamp_millis()
        ])
    })
    .map_err(native)?;
    one(
        conn,
        "SELECT * FROM merchants WHERE merchant_no = ?",
        [&m.merchant_no],
        |r| tillgate_store_sql::merchant(r),
    )?
    .ok_or_else(|| StoreError::Corrupt("merchant vanished after insert".into()))
}

/// Inserts a credential row unless its key exists; answers the existing row's sealed secret
/// otherwise.
fn add_credential(
    conn: &Connection,
    table: &tillgate_store_sql::CredentialTable,
    merchant_id: i64,
    key: &str,
    sealed: &str,
    at_ms: Option<i64>,
) -> Result<StoreAdded, StoreError> {
    let inserted = match at_ms {
        Some(at) => conn
            .prepare_cached(table.insert)
            .and_then(|mut s| s.execute(params![merchant_id, key, sealed, at])),
        None => conn
            .prepare_cached(table.insert)
            .and_then(|mut s| s.execute(params![merchant_id, key, sealed])),
    }
    .map_err(native)?;
    if inserted == 1 {
        return Ok(StoreAdded::Added);
    }
    let (owner, sealed): (i64, String) = conn
        .prepare_cached(table.existing)
        .and_then(|mut s| s.query_row(params![merchant_id, key], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(native)?;
    if let Some(conflict) = table.global_key {
        if owner != merchant_id {
            return Err(conflict.into());
        }
    }
    Ok(StoreAdded::Exists { sealed })
}

fn add_store(
    conn: &Connection,
    merchant_id: i64,
    store_no: &str,
    sealed: &str,
) -> Result<StoreAdded, StoreError> {
    add_credential(
        conn,
        &tillgate_store_sql::STORES,
        merchant_id,
        store_no,
        sealed,
        None,
    )
}

fn add_app(
    conn: &Connection,
    merchant_id: i64,
    app_id: &str,
    sealed: &str,
    at_ms: i64,
) -> Result<StoreAdded, StoreError> {
    add_credential(
        conn,
        &tillgate_store_sql::APPS,
        merchant_id,
        app_id,
        sealed,
        Some(at_ms),
    )
}

fn add_terminal(
    conn: &Connection,
    merchant_id: i64,
    tid: &str,
    sealed: &str,
    at_ms: i64,
) -> Result<StoreAdded, StoreError> {
    add_credential(
        conn,
        &tillgate_store_sql::TERMINALS,
        merchant_id,
        tid,
        sealed,
        Some(at_ms),
    )
}
