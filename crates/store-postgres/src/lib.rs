//! The PostgreSQL backend of the store, for several stateless gateway nodes on one database.
//!
//! A state change costs two round trips and no explicit transaction: the payment is read, the
//! domain decides, and one statement writes the payment (compare-and-swap on its `version`), the
//! refund or cancel row, the events and the outbox rows. A single statement is atomic, so the
//! writes land together or not at all; a concurrent change makes the swap miss, and the decision
//! runs again on the fresh row. Under heavy contention on one payment the backend falls back to
//! a `SELECT … FOR UPDATE` transaction, so no request starves. `synchronous_commit` is on for
//! every connection: an answer is sent only after its commit is durable.

mod migrate;
mod sql;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Executor, PgPool, Row};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tillgate_core::store::{
    CancelWrite, CommitStats, Guard, Inserted, MutateFn, Mutated, RefundWrite, Store, StoreError,
    Writes,
};
use tillgate_core::*;
use tillgate_store_sql::Columns;

pub use migrate::MIGRATIONS;

/// Optimistic attempts before a mutation takes the row lock instead.
const OPTIMISTIC_ATTEMPTS: usize = 4;

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    operations: AtomicU64,
}

/// A loaded row seen through the shared column view.
struct Loaded(PgRow);

fn column<'r, T>(row: &'r PgRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

impl Columns for Loaded {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        column(&self.0, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        column(&self.0, col)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        column(&self.0, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        column(&self.0, col)
    }
}

/// Maps a driver error: unique violations are conflicts, serialization failures and deadlocks
/// are retried by the caller, everything else means the database is unavailable.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict("unique key");
        }
        if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) {
            return StoreError::Conflict("serialization");
        }
    }
    StoreError::Unavailable(e.to_string())
}

/// What one write statement reports. Short-lived; not worth boxing.
#[allow(clippy::large_enum_variant)]
enum Written {
    /// The version matched: everything is written.
    Done(Option<RefundRecord>, Option<CancelRecord>),
    /// Another change came first, or the guard did not hold; decide again (or, when the guard
    /// no longer holds, answer that nothing is left to do).
    Raced(Option<Guard>),
}

impl PgStore {
    /// Connects with a pool of at most `max_connections`, applies pending migrations under an
    /// advisory lock (nodes starting together do not race), and checks the connection.
    pub async fn open(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad postgres url: {e}")))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .statement_cache_capacity(256);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(true)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Durability is not negotiable, whatever the server's default says.
                    conn.execute("SET synchronous_commit = on").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate::apply(&pool).await?;
        Ok(PgStore {
            pool,
            operations: AtomicU64::new(0),
        })
    }

    async fn load(&self, payment_id: i64) -> Result<PaymentRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM payments WHERE id = $1")
            .bind(payment_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        tillgate_store_sql::payment(&Loaded(row))
    }

    /// Runs the decision against `rec` and, unless it refuses, writes it with one statement.
    async fn decide_and_write<'e, E>(
        executor: E,
        mut rec: PaymentRecord,
        decide: &mut MutateFn,
    ) -> Result<Result<(Written, PaymentRecord), Mutated>, StoreError>
    where
        E: Executor<'e, Database = sqlx::Postgres>,
    {
        let before = rec.clone();
        let writes = match decide(&mut rec) {
            Ok(w) => w,
            Err(rejection) => return Ok(Err(Mutated::Rejected(rejection, before))),
        };
        let at = writes.at.unwrap_or(rec.updated_at);
        rec.updated_at = at;
        let written = sql::write(
            executor,
            &rec,
            before.version,
            at.timestamp_millis(),
            writes,
        )
        .await?;
        if let Written::Done(..) = written {
            rec.version = before.version + 1;
        }
        Ok(Ok((written, rec)))
    }

    /// Inserts a credential row unless its key exists; answers the existing row's sealed secret
    /// otherwise.
    async fn add_credential(
        &self,
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
        let done = q.execute(&self.pool).await.map_err(db_error)?;
        if done.rows_affected() == 1 {
            return Ok(StoreAdded::Added);
        }
        let existing = dollar_placeholders(table.existing);
        let row = sqlx::query(&existing)
            .bind(merchant_id)
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let owner: i64 = row.try_get(0).map_err(db_error)?;
        if let Some(conflict) = table.global_key {
            if owner != merchant_id {
                return Err(StoreError::Conflict(conflict));
            }
        }
        Ok(StoreAdded::Exists {
            sealed: row.try_get(1).map_err(db_error)?,
        })
    }

    /// True when a change's guard holds right now.
    async fn guard_holds(&self, guard: Guard) -> Result<bool, StoreError> {
        let (sql, id) = match guard {
            Guard::RefundInProgress(id) => ("SELECT state FROM refunds WHERE id = $1", id),
            Guard::CancelInProgress(id) => ("SELECT state FROM cancels WHERE id = $1", id),
        };
        let state: Option<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(state == Some(1))
    }

    async fn mutate_locked(
        &self,
        payment_id: i64,
        decide: &mut MutateFn,
    ) -> Result<Mutated, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query("SELECT * FROM payments WHERE id = $1 FOR UPDATE")
            .bind(payment_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        let rec = tillgate_store_sql::payment(&Loaded(row))?;
        match Self::decide_and_write(&mut *tx, rec, decide).await? {
            Err(rejected) => Ok(rejected),
            Ok((Written::Done(refund, cancel), payment)) => {
                tx.commit().await.map_err(db_error)?;
                Ok(Mutated::Done {
                    payment,
                    refund,
                    cancel,
                })
            }
            // Under the lock only the guard can have failed.
            Ok((Written::Raced(Some(_)), payment)) => {
                Ok(Mutated::Rejected(tillgate_core::Rejection::Replay, payment))
            }
            Ok((Written::Raced(None), _)) => Err(StoreError::Corrupt(
                "a locked payment changed under its lock".into(),
            )),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
        sqlx::query(
            "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_no) DO NOTHING",
        )
        .bind(&m.merchant_no)
        .bind(m.zone.name())
        .bind(i64::from(m.sandbox))
        .bind(m.created_at.timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        self.merchant(&m.merchant_no)
            .await?
            .ok_or_else(|| StoreError::Corrupt("merchant vanished after insert".into()))
    }

    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE merchant_no = $1")
            .bind(merchant_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::merchant(&Loaded(r)))
            .transpose()
    }

    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE id = $1")
            .bind(merchant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::merchant(&Loaded(r)))
            .transpose()
    }

    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM merchants WHERE sandbox = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn add_store(
        &self,
        merchant_id: i64,
        store_no: &str,
        token_sealed: &str,
    ) -> Result<StoreAdded, StoreError> {
        self.add_credential(
            &tillgate_store_sql::STORES,
            merchant_id,
            store_no,
            token_sealed,
            None,
        )
        .await
    }

    async fn store_row(
        &self,
        merchant_no: &str,
        store_no: &str,
    ) -> Result<Option<StoreRow>, StoreError> {
        let row = sqlx::query(
            "SELECT m.*, s.store_no, s.token_sealed FROM stores s \
             JOIN merchants m ON m.id = s.merchant_id \
             WHERE m.merchant_no = $1 AND s.store_no = $2",
        )
        .bind(merchant_no)
        .bind(store_no)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::store_row(&Loaded(r)))
            .transpose()
    }

    async fn insert_payment(&self, p: NewPayment) -> Result<Inserted, StoreError> {
        let row = sqlx::query(sql::INSERT_PAYMENT)
            .bind(&p.transaction_no)
            .bind(p.merchant_id)
            .bind(&p.merchant_no)
            .bind(&p.store_no)
            .bind(&p.reference)
            .bind(p.amount.minor())
            .bind(p.amount.currency().code())
            .bind(p.settle_currency.code())
            .bind(&p.description)
            .bind(&p.notify_url)
            .bind(&p.fingerprint)
            .bind(p.created_at.timestamp_millis())
            .bind(p.expires_at.timestamp_millis())
            .bind(p.amount.to_string())
            .bind(p.dialect.as_str())
            .bind(&p.extra)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => {
                self.operations.fetch_add(1, Ordering::Relaxed);
                Ok(Inserted::Inserted(tillgate_store_sql::payment(&Loaded(
                    row,
                ))?))
            }
            None => {
                let key = PaymentKey::Reference(p.reference.clone());
                let existing = self.payment(p.merchant_id, &key).await?.ok_or_else(|| {
                    StoreError::Corrupt("reference conflict without a payment".into())
                })?;
                Ok(Inserted::Existing(existing))
            }
        }
    }

    async fn payment(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let (query, value) = match key {
            PaymentKey::TransactionNo(n) => (
                "SELECT * FROM payments WHERE transaction_no = $1 AND merchant_id = $2",
                n,
            ),
            PaymentKey::Reference(r) => (
                "SELECT * FROM payments WHERE reference = $1 AND merchant_id = $2",
                r,
            ),
        };
        let row = sqlx::query(query)
            .bind(value)
            .bind(merchant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::payment(&Loaded(r)))
            .transpose()
    }

    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM payments WHERE transaction_no = $1")
            .bind(transaction_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::payment(&Loaded(r)))
            .transpose()
    }

    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError> {
        match self.load(payment_id).await {
            Ok(p) => Ok(Some(p)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::refund(&Loaded(r)))
            .collect()
    }

    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND refund_reference = $2")
                .bind(merchant_id)
                .bind(refund_reference)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::refund(&Loaded(r)))
            .transpose()
    }

    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM cancels WHERE payment_id = $1 ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::cancel(&Loaded(r)))
            .collect()
    }

    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM events WHERE payment_id = $1 ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::event(&Loaded(r)))
            .collect()
    }

    async fn mutate_from(
        &self,
        payment: &PaymentRecord,
        mut decide: MutateFn,
    ) -> Result<Mutated, StoreError> {
        // One round trip instead of two when the caller's copy is still current; a lost swap or
        // a rejection (which may be the stale copy's doing) goes the usual way on a fresh read.
        if let Ok(Ok((Written::Done(refund, cancel), payment))) =
            Self::decide_and_write(&self.pool, payment.clone(), &mut decide).await
        {
            self.operations.fetch_add(1, Ordering::Relaxed);
            return Ok(Mutated::Done {
                payment,
                refund,
                cancel,
            });
        }
        self.mutate(payment.id, decide).await
    }

    async fn mutate(&self, payment_id: i64, mut decide: MutateFn) -> Result<Mutated, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let rec = self.load(payment_id).await?;
            match Self::decide_and_write(&self.pool, rec, &mut decide).await {
                Ok(Err(rejected)) => return Ok(rejected),
                Ok(Ok((Written::Done(refund, cancel), payment))) => {
                    self.operations.fetch_add(1, Ordering::Relaxed);
                    return Ok(Mutated::Done {
                        payment,
                        refund,
                        cancel,
                    });
                }
                Ok(Ok((Written::Raced(Some(guard)), payment))) => {
                    if !self.guard_holds(guard).await? {
                        let fresh = self.load(payment_id).await.unwrap_or(payment);
                        return Ok(Mutated::Rejected(tillgate_core::Rejection::Replay, fresh));
                    }
                    continue;
                }
                Ok(Ok((Written::Raced(None), _))) | Err(StoreError::Conflict("serialization")) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        let done = self.mutate_locked(payment_id, &mut decide).await?;
        if let Mutated::Done { .. } = done {
            self.operations.fetch_add(1, Ordering::Relaxed);
        }
        Ok(done)
    }

    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND refund_no = $2")
            .bind(merchant_id)
            .bind(refund_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::refund(&Loaded(r)))
            .transpose()
    }

    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM cancels WHERE cancel_no = $1 AND ($2::bigint IS NULL OR merchant_id = $2)",
        )
        .bind(cancel_no)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::cancel(&Loaded(r)))
            .transpose()
    }

    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<StoreAdded, StoreError> {
        self.add_credential(
            &tillgate_store_sql::APPS,
            merchant_id,
            app_id,
            secret_sealed,
            Some(at.timestamp_millis()),
        )
        .await
    }

    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError> {
        let row = sqlx::query(
            "SELECT m.*, a.app_id, a.secret_sealed FROM apps a \
             JOIN merchants m ON m.id = a.merchant_id WHERE a.app_id = $1",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::app_row(&Loaded(r)))
            .transpose()
    }

    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE merchants SET notify_schedule = $1 WHERE id = $2")
            .bind(schedule)
            .bind(merchant_id)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn claim_notifications(
        &self,
        claim: &NotificationClaim,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = dollar_placeholders(&tillgate_store_sql::claim_sql(true));
        let rows = sqlx::query(&sql)
            .bind(claim.now.timestamp_millis())
            .bind(claim.lease_until.timestamp_millis())
            .bind(claim.limit)
            .bind(claim.per_merchant)
            .bind(tillgate_store_sql::held_json(&claim.held))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| tillgate_store_sql::outbox(&Loaded(r)))
            .collect()
    }

    async fn finish_attempt(&self, a: AttemptRecord, next: AttemptNext) -> Result<(), StoreError> {
        let (status, next_at, delivered_at) = match next {
            AttemptNext::Delivered => ("delivered", None, Some(a.at.timestamp_millis())),
            AttemptNext::RetryAt(t) => ("pending", Some(t.timestamp_millis()), None),
            AttemptNext::Failed => ("failed", None, None),
        };
        // One statement: the attempt and the notification's new state land together.
        sqlx::query(
            "WITH a AS (INSERT INTO notification_attempts (outbox_id, attempt, at, http_status, \
               response_head, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7)) \
             UPDATE outbox SET status = $8, attempts = $2, \
               next_attempt_at = COALESCE($9, next_attempt_at), last_attempt_at = $3, \
               delivered_at = $10, leased_until = NULL WHERE id = $1",
        )
        .bind(a.outbox_id)
        .bind(a.attempt)
        .bind(a.at.timestamp_millis())
        .bind(a.http_status)
        .bind(&a.response_head)
        .bind(a.latency_ms)
        .bind(&a.error)
        .bind(status)
        .bind(next_at)
        .bind(delivered_at)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(db_error)
    }

    async fn next_notification_due(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let due: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        due.map(tillgate_store_sql::time).transpose()
    }

    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let found = sqlx::query(
            "SELECT * FROM outbox WHERE ($1::text IS NULL OR status = $1) AND created_at >= $2 \
             AND ($3::bigint IS NULL OR payment_id = $3) ORDER BY id LIMIT $4",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.since.map_or(0, |t| t.timestamp_millis()))
        .bind(filter.payment_id)
        .bind(filter.limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::outbox(&Loaded(r)))
            .collect()
    }

    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::outbox(&Loaded(r)))
            .transpose()
    }

    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let found =
            sqlx::query("SELECT * FROM notification_attempts WHERE outbox_id = $1 ORDER BY id")
                .bind(outbox_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::attempt(&Loaded(r)))
            .collect()
    }

    async fn resend(
        &self,
        what: Resend,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let done = match what {
            Resend::One(id) => sqlx::query(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, \
                 leased_until = NULL, delivered_at = NULL WHERE id = $2",
            )
            .bind(now.timestamp_millis())
            .bind(id),
            Resend::FailedSince(t) => sqlx::query(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, \
                 leased_until = NULL WHERE status = 'failed' AND created_at >= $2",
            )
            .bind(now.timestamp_millis())
            .bind(t.timestamp_millis()),
        }
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<StoreAdded, StoreError> {
        self.add_credential(
            &tillgate_store_sql::TERMINALS,
            merchant_id,
            tid,
            secret_sealed,
            Some(at.timestamp_millis()),
        )
        .await
    }

    async fn terminal_row(
        &self,
        tid: &str,
    ) -> Result<Option<tillgate_core::terminal::TerminalRow>, StoreError> {
        let row = sqlx::query(
            "SELECT m.*, t.tid, t.secret_sealed, t.online_node, t.last_seen_at FROM terminals t \
             JOIN merchants m ON m.id = t.merchant_id WHERE t.tid = $1",
        )
        .bind(tid)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::terminal_row(&Loaded(r)))
            .transpose()
    }

    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE terminals SET online_node = $1, last_seen_at = $2 WHERE tid = $3")
            .bind(node)
            .bind(at.timestamp_millis())
            .bind(tid)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: chrono::DateTime<chrono::Utc>,
        forget_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM terminal_nonces WHERE at < $1")
            .bind(forget_before.timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let done = sqlx::query(
            "INSERT INTO terminal_nonces (tid, nonce, at) VALUES ($1, $2, $3) \
             ON CONFLICT (tid, nonce) DO NOTHING",
        )
        .bind(tid)
        .bind(nonce)
        .bind(at.timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO request_keys (scope, request_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, request_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(at.timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn command(
        &self,
        command_id: &str,
    ) -> Result<Option<tillgate_core::terminal::CommandRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM terminal_commands WHERE command_id = $1")
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|r| tillgate_store_sql::command(&Loaded(r)))
            .transpose()
    }

    async fn open_commands(
        &self,
        tid: &str,
    ) -> Result<Vec<tillgate_core::terminal::CommandRecord>, StoreError> {
        let found = sqlx::query(
            "SELECT * FROM terminal_commands WHERE tid = $1 AND state = 'open' ORDER BY id LIMIT 100",
        )
        .bind(tid)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::command(&Loaded(r)))
            .collect()
    }

    async fn finish_command(
        &self,
        command_id: &str,
        outcome: &str,
        message: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE terminal_commands SET state = 'done', outcome = $1, message = $2, \
             updated_at = $3 WHERE command_id = $4 AND state = 'open'",
        )
        .bind(outcome)
        .bind(message)
        .bind(at.timestamp_millis())
        .bind(command_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_event(
        &self,
        payment_id: i64,
        at: chrono::DateTime<chrono::Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO events (payment_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(payment_id)
            .bind(at.timestamp_millis())
            .bind(kind)
            .bind(detail)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn unresolved(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let sql = dollar_placeholders(tillgate_store_sql::UNRESOLVED_SQL);
        let found = sqlx::query(&sql)
            .bind(before.timestamp_millis())
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::unresolved(&Loaded(r)))
            .collect()
    }

    async fn announce_command(&self, command_id: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify('tillgate_commands', $1)")
            .bind(command_id)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(db_error)?;
        listener
            .listen("tillgate_commands")
            .await
            .map_err(db_error)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // recv reconnects by itself after a lost connection; the hub also re-reads
                // open commands whenever a terminal connects, so a missed announcement only
                // delays a command, never loses it.
                match listener.recv().await {
                    Ok(n) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "command listener failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    fn commit_stats(&self) -> CommitStats {
        // Every operation is its own durable commit on PostgreSQL.
        let operations = self.operations.load(Ordering::Relaxed);
        CommitStats {
            operations,
            commits: operations,
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rewrites SQLite-style `?N` placeholders as PostgreSQL's `$N`.
fn dollar_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Which refund or cancel row a write statement carries (at most one of them).
fn shape(w: &Writes) -> Result<(Option<&RefundWrite>, Option<&CancelWrite>), StoreError> {
    match (&w.refund, &w.cancel) {
        (Some(_), Some(_)) => Err(StoreError::Corrupt(
            "one change may write a refund or a cancel, not both".into(),
        )),
        (r, c) => Ok((r.as_ref(), c.as_ref())),
    }
}
