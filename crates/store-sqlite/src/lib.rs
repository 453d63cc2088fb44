//! The SQLite backend of the store: WAL, `synchronous=FULL`, and group commit.
//!
//! All writes go through one writer thread that owns one synchronous connection. It takes every
//! write that is waiting, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction, commits once, and only then answers each caller. Many operations share one fsync, none is answered
//! before its commit is durable, and because there is exactly one writer, the check-and-reserve
//! of a refund can never interleave with another. Reads use their own read-only connections on
//! the caller's thread (WAL readers do not block the writer).

mod books;
mod console;
mod credentials;
mod migrate;
mod outbox;
mod payments;
mod replays;
mod rows;
mod terminals;
mod writer;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions;
use std::str::FromStr;
use std::time::Duration;
use tillgate_core::store::{Conflict, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

pub use migrate::MIGRATIONS;
pub use writer::{BATCH_METRIC, MAX_BATCH};

/// Read connections: twice the machine's parallelism and at least 8, more than the runtime's
/// worker threads (a point read runs on the thread of the request that makes it) with room for
/// the long reads that hand their worker's tasks over while they run ([`SqliteStore::read_long`]).
fn read_connections() -> usize {
    std::thread::available_parallelism().map_or(8, |n| n.get().saturating_mul(2).max(8))
}

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
    /// The database file, and which file it was when opened (see [`FileId`]).
    path: std::path::PathBuf,
    file: Option<FileId>,
}

/// Which file a path names: a database file removed or replaced while the gateway runs keeps
/// taking writes through the open connections, and every one of them is lost at the next
/// start. The health check compares the path's file with the one opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(path: &std::path::Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileId {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    #[cfg(not(unix))]
    fn of(_path: &std::path::Path) -> Option<FileId> {
        None
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return Conflict::UniqueKey.into();
        }
    }
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite:path`),
    /// applies pending migrations and starts the writer.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(url, true).await
    }

    /// Opens the tillgate database at `url`, which must exist: a missing file, or one that
    /// holds no tillgate schema, is [`StoreError::Missing`] and nothing is created. Pending
    /// migrations of an existing tillgate database are applied.
    pub async fn open_existing(url: &str) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad sqlite url {url:?}: {e}")))?;
        if !create && !options.get_filename().exists() {
            return Err(StoreError::Missing(format!(
                "there is no database file {}",
                options.get_filename().display()
            )));
        }
        let options = options
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .log_statements(tracing::log::LevelFilter::Trace);
        let mut conn = options.connect().await.map_err(unavailable)?;
        migrate::apply(&mut conn, create).await?;
        sqlx::Connection::close(conn).await.map_err(unavailable)?;
        let path = options.get_filename().to_owned();
        let file = FileId::of(&path);
        let native = writer::open(&path)?;
        let reads = (0..read_connections())
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
            path,
            file,
        })
    }

    /// The writer's answer to a probe: it takes the write lock and commits an empty
    /// transaction, after the writes queued before it.
    async fn probe_writer(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(writer::Job::Probe(tx))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    /// Everything the health check asks that does not wait for the writer.
    fn check_file_and_schema(&self) -> Result<(), StoreError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        if let Some(opened) = self.file {
            if FileId::of(&self.path) != Some(opened) {
                return Err(StoreError::Unavailable(format!(
                    "the database file {} was removed or replaced since start; writes would be \
                     lost: restart the gateway on the right file",
                    self.path.display()
                )));
            }
        }
        let version = self.read(|conn| {
            conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(writer::native)
        })?;
        migrate::check_version(version)
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

    /// A read that may run long (lists, searches, sums over many rows): on a multi-threaded
    /// runtime the worker hands its other tasks to another thread while it runs (tokio's
    /// `block_in_place`), so requests queued on that worker are not held up behind it. Point
    /// reads by key stay plain [`read`](Self::read)s: they take microseconds, less than a hand-off.
    fn read_long<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        match flavor {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.read(f))
            }
            _ => self.read(f),
        }
    }

    /// The query helper of reads: the first row of `sql`, mapped.
    fn read_one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rows::Native) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.read(|conn| writer::one(conn, sql, params, map))
    }

    /// Every row of `sql`, mapped: a long read.
    fn read_all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl Fn(&rows::Native) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read_long(|conn| writer::all(conn, sql, params, map))
    }

    /// The one value `sql` selects, given one parameter.
    fn read_scalar(
        &self,
        sql: &str,
        param: impl rusqlite::ToSql,
    ) -> Result<Option<i64>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row([param], |r| r.get::<_, Option<i64>>(0)))
                .map_err(writer::native)
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn commit_stats(&self) -> tillgate_core::store::CommitStats {
        let (operations, commits) = self.stats.snapshot();
        tillgate_core::store::CommitStats {
            operations,
            commits,
        }
    }

    async fn health(&self, within: Duration) -> Result<(), StoreError> {
        self.check_file_and_schema()?;
        match tokio::time::timeout(within, self.probe_writer()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(match self.stats.failure() {
                Some(why) => format!(
                    "the writer has not committed within {} ms; its last transaction failed: \
                     {why}",
                    within.as_millis()
                ),
                None => format!(
                    "the writer has not committed within {} ms (another process may hold the \
                     database's write lock, or the disk is stalled)",
                    within.as_millis()
                ),
            })),
        }
    }

    async fn backlog(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<tillgate_core::store::Backlog, StoreError> {
        let sql = tillgate_store_sql::backlog_sql();
        self.read_long(|conn| {
            conn.query_row(&sql, [now.timestamp_millis()], |r| {
                Ok(tillgate_core::store::Backlog {
                    notifications_pending: r.get(0)?,
                    notifications_due: r.get(1)?,
                    unresolved: r.get(2)?,
                })
            })
            .map_err(writer::native)
        })
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
