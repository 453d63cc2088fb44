//! The SQLite backend of the store: WAL, `synchronous=FULL`, and group commit.
//!
//! All writes go through one writer thread that owns one synchronous connection. It takes every
//! write that is waiting, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. Many operations share one fsync, none is answered
//! before its commit is durable, and because there is exactly one writer, the check-and-reserve
//! of a refund can never interleave with another. Reads use their own read-only connections on
//! the caller's thread (WAL readers do not block the writer).

mod migrate;
mod rows;
mod writer;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions;
use std::str::FromStr;
use std::time::Duration;
use tillgate_core::store::{Inserted, MutateFn, Mutated, Store, StoreError};
use tillgate_core::*;
use tokio::sync::{mpsc, oneshot};

pub use migrate::MIGRATIONS;
use writer::Bind;
pub use writer::MAX_BATCH;

/// Read connections: more than the runtime's worker threads, which are the most reads that
/// can run at once (each runs on the thread of the request that makes it).
const READ_CONNECTIONS: usize = 8;

/// How many writes may wait for the writer before callers wait to enqueue (a bound, rule 9).
const WRITE_QUEUE: usize = 4096;

/// The SQLite store.
pub struct SqliteStore {
    /// Read-only connections, used from the caller's thread.
    reads: Vec<std::sync::Mutex<rusqlite::Connection>>,
    next_read: std::sync::atomic::AtomicUsize,
    /// Set by `close`: from then on every read and write is refused.
    closed: std::sync::atomic::AtomicBool,
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
        let reads = (0..READ_CONNECTIONS)
            .map(|_| writer::open_read_only(&path).map(std::sync::Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
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
            next_read: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
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

    /// Runs `f` on a read connection. Reads by key take tens of microseconds, so they run on
    /// the calling thread: no hand-off to another thread per statement.
    fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let n = self.reads.len();
        let start = self
            .next_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % n;
        for i in 0..n {
            if let Ok(conn) = self.reads[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.reads[start].lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    fn read_one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rows::Native) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(writer::native)?;
            let mut rows = stmt.query(params).map_err(writer::native)?;
            match rows.next().map_err(writer::native)? {
                Some(row) => map(&rows::Native(row)).map(Some),
                None => Ok(None),
            }
        })
    }

    fn read_all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl Fn(&rows::Native) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(writer::native)?;
            let mut rows = stmt.query(params).map_err(writer::native)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(writer::native)? {
                out.push(map(&rows::Native(row))?);
            }
            Ok(out)
        })
    }

    fn read_scalar(&self, sql: &str) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<i64>>(0)))
                .map_err(writer::native)
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
        self.write(move |conn| writer::upsert_merchant(conn, m))
            .await
    }

    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM merchants WHERE merchant_no = ?",
            rusqlite::params![merchant_no],
            |r| rows::merchant(r),
        )
    }

    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM merchants WHERE id = ?",
            rusqlite::params![merchant_id],
            |r| tillgate_store_sql::merchant(r),
        )
    }

    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .read_scalar("SELECT COUNT(*) FROM merchants WHERE sandbox = 1")?
            .unwrap_or(0))
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
        self.read_one(
            "SELECT m.*, s.store_no, s.token_sealed FROM stores s \
             JOIN merchants m ON m.id = s.merchant_id \
             WHERE m.merchant_no = ? AND s.store_no = ?",
            rusqlite::params![merchant_no, store_no],
            |r| rows::store_row(r),
        )
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
        self.read_one(sql, rusqlite::params![value, merchant_id], |r| {
            rows::payment(r)
        })
    }

    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM payments WHERE transaction_no = ?",
            rusqlite::params![transaction_no],
            |r| rows::payment(r),
        )
    }

    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM payments WHERE id = ?",
            rusqlite::params![payment_id],
            |r| rows::payment(r),
        )
    }

    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM refunds WHERE payment_id = ? ORDER BY id",
            rusqlite::params![payment_id],
            |r| rows::refund(r),
        )
    }

    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM refunds WHERE merchant_id = ? AND refund_reference = ?",
            rusqlite::params![merchant_id, refund_reference],
            |r| rows::refund(r),
        )
    }

    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM cancels WHERE payment_id = ? ORDER BY id",
            rusqlite::params![payment_id],
            |r| rows::cancel(r),
        )
    }

    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM events WHERE payment_id = ? ORDER BY id",
            rusqlite::params![payment_id],
            |r| rows::event(r),
        )
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
        self.read_one(
            "SELECT * FROM refunds WHERE merchant_id = ? AND refund_no = ?",
            rusqlite::params![merchant_id, refund_no],
            |r| rows::refund(r),
        )
    }

    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM cancels WHERE cancel_no = ? AND (? IS NULL OR merchant_id = ?)",
            rusqlite::params![cancel_no, merchant_id, merchant_id],
            |r| rows::cancel(r),
        )
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
        self.read_one(
            "SELECT m.*, a.app_id, a.secret_sealed FROM apps a \
             JOIN merchants m ON m.id = a.merchant_id WHERE a.app_id = ?",
            rusqlite::params![app_id],
            |r| tillgate_store_sql::app_row(r),
        )
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
        claim: &NotificationClaim,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let claim = claim.clone();
        self.write(move |conn| writer::claim(conn, &claim)).await
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
        self.read_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")?
            .map(rows::time)
            .transpose()
    }

    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let status = filter.status.map(|s| s.as_str().to_owned());
        self.read_all(
            "SELECT * FROM outbox WHERE (? IS NULL OR status = ?) AND created_at >= ? \
             AND (? IS NULL OR payment_id = ?) ORDER BY id LIMIT ?",
            rusqlite::params![
                &status,
                &status,
                filter.since.map_or(0, |t| t.timestamp_millis()),
                filter.payment_id,
                filter.payment_id,
                filter.limit.clamp(1, 10_000)
            ],
            |r| tillgate_store_sql::outbox(r),
        )
    }

    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM outbox WHERE id = ?",
            rusqlite::params![id],
            |r| tillgate_store_sql::outbox(r),
        )
    }

    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM notification_attempts WHERE outbox_id = ? ORDER BY id",
            rusqlite::params![outbox_id],
            |r| tillgate_store_sql::attempt(r),
        )
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
        self.read_one(
            "SELECT m.*, t.tid, t.secret_sealed, t.online_node, t.last_seen_at FROM terminals t \
             JOIN merchants m ON m.id = t.merchant_id WHERE t.tid = ?",
            rusqlite::params![tid],
            |r| tillgate_store_sql::terminal_row(r),
        )
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
        self.read_one(
            "SELECT * FROM terminal_commands WHERE command_id = ?",
            rusqlite::params![command_id],
            |r| tillgate_store_sql::command(r),
        )
    }

    async fn open_commands(
        &self,
        tid: &str,
    ) -> Result<Vec<tillgate_core::terminal::CommandRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM terminal_commands WHERE tid = ? AND state = 'open' ORDER BY id LIMIT 100",
            rusqlite::params![tid],
            |r| tillgate_store_sql::command(r),
        )
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
        self.read_all(
            tillgate_store_sql::UNRESOLVED_SQL,
            rusqlite::params![before.timestamp_millis(), limit.clamp(1, 10_000)],
            |r| tillgate_store_sql::unresolved(r),
        )
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
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        // The writer finishes every write queued before this one, then stops.
        let _ = self.writes.send(writer::Job::Shutdown).await;
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        // Read connections close when the store is dropped.
    }
}
