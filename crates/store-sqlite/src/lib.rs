//! The SQLite backend of the store: WAL, `synchronous=FULL`, and group commit.
//!
//! All writes go through one writer thread that owns one synchronous connection. It takes every
//! write that is waiting, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. Many operations share one fsync, none is answered
//! before its commit is durable, and because there is exactly one writer, the check-and-reserve
//! of a refund can never interleave with another. Reads use a separate pool (WAL readers do not
//! block the writer).

mod migrate;
mod rows;
mod writer;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use tillgate_core::store::{Inserted, MutateFn, Mutated, Store, StoreError};
use tillgate_core::*;
use tokio::sync::{mpsc, oneshot};

pub use migrate::MIGRATIONS;
use writer::Bind;
pub use writer::MAX_BATCH;

/// How many writes may wait for the writer before callers wait to enqueue (a bound, rule 9).
const WRITE_QUEUE: usize = 4096;

/// The SQLite store.
pub struct SqliteStore {
    reads: SqlitePool,
    writes: mpsc::Sender<writer::Job>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: std::sync::Arc<writer::Stats>,
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict("unique key");
        }
    }
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite:path`),
    /// applies pending migrations and starts the writer.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad sqlite url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Trace);
        let mut conn = options.connect().await.map_err(unavailable)?;
        migrate::apply(&mut conn).await?;
        sqlx::Connection::close(conn).await.map_err(unavailable)?;
        let path = options.get_filename().to_owned();
        let native = writer::open(&path)?;
        let reads = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let stats = std::sync::Arc::new(writer::Stats::default());
        let handle = std::thread::Builder::new()
            .name("tillgate-sqlite-writer".into())
            .spawn({
                let stats = stats.clone();
                move || writer::run(native, rx, stats)
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            reads,
            writes: tx,
            writer: std::sync::Mutex::new(Some(handle)),
            stats,
        })
    }

    /// Queues `f` for the writer; answers after the batch that holds it committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(writer::job(tx, f))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the write was not committed".into()))?
    }

    async fn read_outbox(
        &self,
        sql: &str,
        bind: Vec<i64>,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut q = sqlx::query(sql);
        for b in bind {
            q = q.bind(b);
        }
        let found = q.fetch_all(&self.reads).await.map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::outbox(&rows::Loaded(r)))
            .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
        self.write(move |conn| writer::upsert_merchant(conn, m))
            .await
    }

    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE merchant_no = ?")
            .bind(merchant_no)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| rows::merchant(&rows::Loaded(r))).transpose()
    }

    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE id = ?")
            .bind(merchant_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| tillgate_store_sql::merchant(&rows::Loaded(r)))
            .transpose()
    }

    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM merchants WHERE sandbox = 1")
            .fetch_one(&self.reads)
            .await
            .map_err(unavailable)
    }

    async fn add_store(
        &self,
        merchant_id: i64,
        store_no: &str,
        token_sealed: &str,
    ) -> Result<StoreAdded, StoreError> {
        let (s, t) = (store_no.to_owned(), token_sealed.to_owned());
        self.write(move |conn| writer::add_store(conn, merchant_id, &s, &t))
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
             WHERE m.merchant_no = ? AND s.store_no = ?",
        )
        .bind(merchant_no)
        .bind(store_no)
        .fetch_optional(&self.reads)
        .await
        .map_err(unavailable)?;
        row.map(|r| rows::store_row(&rows::Loaded(r))).transpose()
    }

    async fn insert_payment(&self, p: NewPayment) -> Result<Inserted, StoreError> {
        self.write(move |conn| writer::insert_payment(conn, p))
            .await
    }

    async fn payment(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let (sql, value) = match key {
            PaymentKey::TransactionNo(n) => (
                "SELECT * FROM payments WHERE transaction_no = ? AND merchant_id = ?",
                n,
            ),
            PaymentKey::Reference(r) => (
                "SELECT * FROM payments WHERE reference = ? AND merchant_id = ?",
                r,
            ),
        };
        let row = sqlx::query(sql)
            .bind(value)
            .bind(merchant_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| rows::payment(&rows::Loaded(r))).transpose()
    }

    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM payments WHERE transaction_no = ?")
            .bind(transaction_no)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| rows::payment(&rows::Loaded(r))).transpose()
    }

    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM payments WHERE id = ?")
            .bind(payment_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| rows::payment(&rows::Loaded(r))).transpose()
    }

    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM refunds WHERE payment_id = ? ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.reads)
            .await
            .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| rows::refund(&rows::Loaded(r)))
            .collect()
    }

    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM refunds WHERE merchant_id = ? AND refund_reference = ?")
                .bind(merchant_id)
                .bind(refund_reference)
                .fetch_optional(&self.reads)
                .await
                .map_err(unavailable)?;
        row.map(|r| rows::refund(&rows::Loaded(r))).transpose()
    }

    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM cancels WHERE payment_id = ? ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.reads)
            .await
            .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| rows::cancel(&rows::Loaded(r)))
            .collect()
    }

    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        let found = sqlx::query("SELECT * FROM events WHERE payment_id = ? ORDER BY id")
            .bind(payment_id)
            .fetch_all(&self.reads)
            .await
            .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| rows::event(&rows::Loaded(r)))
            .collect()
    }

    async fn mutate(&self, payment_id: i64, decide: MutateFn) -> Result<Mutated, StoreError> {
        self.write(move |conn| writer::mutate(conn, payment_id, decide))
            .await
    }

    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM refunds WHERE merchant_id = ? AND refund_no = ?")
            .bind(merchant_id)
            .bind(refund_no)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| rows::refund(&rows::Loaded(r))).transpose()
    }

    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM cancels WHERE cancel_no = ? AND (? IS NULL OR merchant_id = ?)",
        )
        .bind(cancel_no)
        .bind(merchant_id)
        .bind(merchant_id)
        .fetch_optional(&self.reads)
        .await
        .map_err(unavailable)?;
        row.map(|r| rows::cancel(&rows::Loaded(r))).transpose()
    }

    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let (app_id, sealed) = (app_id.to_owned(), secret_sealed.to_owned());
        let at_ms = at.timestamp_millis();
        self.write(move |conn| writer::add_app(conn, merchant_id, &app_id, &sealed, at_ms))
            .await
    }

    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError> {
        let row = sqlx::query(
            "SELECT m.*, a.app_id, a.secret_sealed FROM apps a \
             JOIN merchants m ON m.id = a.merchant_id WHERE a.app_id = ?",
        )
        .bind(app_id)
        .fetch_optional(&self.reads)
        .await
        .map_err(unavailable)?;
        row.map(|r| tillgate_store_sql::app_row(&rows::Loaded(r)))
            .transpose()
    }

    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError> {
        let schedule = schedule.map(str::to_owned);
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE merchants SET notify_schedule = ? WHERE id = ?",
                vec![Bind::Text(schedule), Bind::Int(Some(merchant_id))],
            )
            .map(drop)
        })
        .await
    }

    async fn claim_notifications(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let (now_ms, lease_ms) = (now.timestamp_millis(), lease_until.timestamp_millis());
        self.write(move |conn| writer::claim(conn, now_ms, lease_ms, limit))
            .await
    }

    async fn finish_attempt(
        &self,
        attempt: AttemptRecord,
        next: AttemptNext,
    ) -> Result<(), StoreError> {
        self.write(move |conn| writer::finish_attempt(conn, attempt, next))
            .await
    }

    async fn next_notification_due(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let due: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
                .fetch_one(&self.reads)
                .await
                .map_err(unavailable)?;
        due.map(rows::time).transpose()
    }

    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let status = filter.status.map(|s| s.as_str().to_owned());
        let found = sqlx::query(
            "SELECT * FROM outbox WHERE (? IS NULL OR status = ?) AND created_at >= ? \
             AND (? IS NULL OR payment_id = ?) ORDER BY id LIMIT ?",
        )
        .bind(&status)
        .bind(&status)
        .bind(filter.since.map_or(0, |t| t.timestamp_millis()))
        .bind(filter.payment_id)
        .bind(filter.payment_id)
        .bind(filter.limit.clamp(1, 10_000))
        .fetch_all(&self.reads)
        .await
        .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::outbox(&rows::Loaded(r)))
            .collect()
    }

    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        Ok(self
            .read_outbox("SELECT * FROM outbox WHERE id = ?", vec![id])
            .await?
            .pop())
    }

    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let found =
            sqlx::query("SELECT * FROM notification_attempts WHERE outbox_id = ? ORDER BY id")
                .bind(outbox_id)
                .fetch_all(&self.reads)
                .await
                .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::attempt(&rows::Loaded(r)))
            .collect()
    }

    async fn resend(
        &self,
        what: Resend,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let now_ms = now.timestamp_millis();
        self.write(move |conn| writer::resend(conn, what, now_ms))
            .await
    }

    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<StoreAdded, StoreError> {
        let (tid, sealed) = (tid.to_owned(), secret_sealed.to_owned());
        let at_ms = at.timestamp_millis();
        self.write(move |conn| writer::add_terminal(conn, merchant_id, &tid, &sealed, at_ms))
            .await
    }

    async fn terminal_row(
        &self,
        tid: &str,
    ) -> Result<Option<tillgate_core::terminal::TerminalRow>, StoreError> {
        let row = sqlx::query(
            "SELECT m.*, t.tid, t.secret_sealed, t.online_node, t.last_seen_at FROM terminals t \
             JOIN merchants m ON m.id = t.merchant_id WHERE t.tid = ?",
        )
        .bind(tid)
        .fetch_optional(&self.reads)
        .await
        .map_err(unavailable)?;
        row.map(|r| tillgate_store_sql::terminal_row(&rows::Loaded(r)))
            .transpose()
    }

    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(node.map(str::to_owned)),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Text(Some(tid.to_owned())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE terminals SET online_node = ?, last_seen_at = ? WHERE tid = ?",
                binds,
            )
        })
        .await
        .map(drop)
    }

    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: chrono::DateTime<chrono::Utc>,
        forget_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let forget = vec![Bind::Int(Some(forget_before.timestamp_millis()))];
        let binds = vec![
            Bind::Text(Some(tid.to_owned())),
            Bind::Text(Some(nonce.to_owned())),
            Bind::Int(Some(at.timestamp_millis())),
        ];
        self.write(move |conn| {
            writer::execute(conn, "DELETE FROM terminal_nonces WHERE at < ?", forget)?;
            writer::execute(
                conn,
                "INSERT INTO terminal_nonces (tid, nonce, at) VALUES (?, ?, ?) \
                 ON CONFLICT (tid, nonce) DO NOTHING",
                binds,
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: chrono::DateTime<chrono::Utc>,
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

    async fn command(
        &self,
        command_id: &str,
    ) -> Result<Option<tillgate_core::terminal::CommandRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM terminal_commands WHERE command_id = ?")
            .bind(command_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(unavailable)?;
        row.map(|r| tillgate_store_sql::command(&rows::Loaded(r)))
            .transpose()
    }

    async fn open_commands(
        &self,
        tid: &str,
    ) -> Result<Vec<tillgate_core::terminal::CommandRecord>, StoreError> {
        let found = sqlx::query(
            "SELECT * FROM terminal_commands WHERE tid = ? AND state = 'open' ORDER BY id LIMIT 100",
        )
        .bind(tid)
        .fetch_all(&self.reads)
        .await
        .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::command(&rows::Loaded(r)))
            .collect()
    }

    async fn finish_command(
        &self,
        command_id: &str,
        outcome: &str,
        message: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Text(Some(outcome.to_owned())),
            Bind::Text(message.map(str::to_owned)),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Text(Some(command_id.to_owned())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE terminal_commands SET state = 'done', outcome = ?, message = ?, \
                 updated_at = ? WHERE command_id = ? AND state = 'open'",
                binds,
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn append_event(
        &self,
        payment_id: i64,
        at: chrono::DateTime<chrono::Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(payment_id)),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Text(Some(kind.to_owned())),
            Bind::Text(Some(detail.to_owned())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "INSERT INTO events (payment_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                binds,
            )
        })
        .await
        .map(drop)
    }

    async fn unresolved(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let found = sqlx::query(tillgate_store_sql::UNRESOLVED_SQL)
            .bind(before.timestamp_millis())
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.reads)
            .await
            .map_err(unavailable)?;
        found
            .into_iter()
            .map(|r| tillgate_store_sql::unresolved(&rows::Loaded(r)))
            .collect()
    }

    async fn announce_command(&self, _command_id: &str) -> Result<(), StoreError> {
        // One node: the hub that wrote the command delivers it itself.
        Ok(())
    }

    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        Ok(None)
    }

    fn commit_stats(&self) -> tillgate_core::store::CommitStats {
        let (operations, commits) = self.stats.snapshot();
        tillgate_core::store::CommitStats {
            operations,
            commits,
        }
    }

    async fn close(&self) {
        // The writer finishes every write queued before this one, then stops.
        let _ = self.writes.send(writer::Job::Shutdown).await;
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.reads.close().await;
    }
}
