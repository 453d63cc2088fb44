//! The PostgreSQL backend of the store, for several stateless gateway nodes on one database.
//!
//! A state change is a read and one statement: the payment is read, the domain decides, and one
//! statement writes the payment (compare-and-swap on its `version`), the refund or cancel row,
//! the events and the outbox rows. A single statement is atomic, so the writes land together or
//! not at all; a concurrent change (on this node or another) makes the swap miss, and the
//! decision runs again on the fresh row. The statements of concurrent requests, and the inserts
//! of new payments, are committed together by the node's writers (`writer`: group commit, one
//! durable flush for a batch). Under heavy contention on one payment the backend falls back to
//! a `SELECT … FOR UPDATE` transaction, so no request starves. `synchronous_commit` is on for
//! every connection: an answer is sent only after its commit is durable.
//!
//! The URL may name several hosts (a primary and its standbys, `hosts`): the store connects to
//! the one that takes writes and moves there by itself after a failover.

mod books;
mod console;
mod credentials;
pub mod hosts;
mod migrate;
mod outbox;
mod payments;
mod replays;
mod sql;
mod terminals;
mod writer;

use async_trait::async_trait;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Executor, PgPool, Row};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::store::{
    CancelWrite, CommitStats, Conflict, Guard, RefundWrite, Store, StoreError, Writes,
};
use tillgate_core::{CancelRecord, RefundRecord};
use tillgate_store_sql::Columns;

pub use migrate::MIGRATIONS;
pub use writer::{WriterOptions, DEFAULT_BATCH, DEFAULT_QUEUE, DEFAULT_WRITERS};

/// Optimistic attempts before a mutation takes the row lock instead.
const OPTIMISTIC_ATTEMPTS: usize = 4;

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// Changes committed outside the writers (under the row lock), one commit each.
    operations: AtomicU64,
    writers: writer::Writers,
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

/// A row PostgreSQL sent as a JSON object (`to_jsonb(row)`), seen through the column view.
pub(crate) struct JsonRow<'a>(pub &'a serde_json::Map<String, serde_json::Value>);

/// The objects of a JSON array of rows.
pub(crate) fn json_rows(
    text: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("rows as JSON: {e}")))
}

impl JsonRow<'_> {
    fn value(&self, col: &str) -> Option<&serde_json::Value> {
        self.0.get(col).filter(|v| !v.is_null())
    }

    fn wrong(col: &str) -> StoreError {
        StoreError::Corrupt(format!("column {col}: missing or of another type"))
    }
}

impl Columns for JsonRow<'_> {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.opt_int(col)?.ok_or_else(|| Self::wrong(col))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.value(col)
            .map(|v| v.as_i64().ok_or_else(|| Self::wrong(col)))
            .transpose()
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.opt_text(col)?.ok_or_else(|| Self::wrong(col))
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.value(col)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Self::wrong(col))
            })
            .transpose()
    }
}

/// Maps a driver error: unique violations are conflicts, serialization failures and deadlocks
/// are retried by the caller, everything else means the database is unavailable.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return Conflict::UniqueKey.into();
        }
        if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) {
            return Conflict::Serialization.into();
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
        PgStore::open_with(url, max_connections, WriterOptions::default(), true).await
    }

    /// Like [`PgStore::open`], with the node's writers sized by `writers`.
    pub async fn open_with_writers(
        url: &str,
        max_connections: u32,
        writers: WriterOptions,
    ) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, max_connections, writers, true).await
    }

    /// Like [`PgStore::open`], for a database that must hold tillgate's schema already: one
    /// without it is [`StoreError::Missing`] and left as it is.
    pub async fn open_existing(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, max_connections, WriterOptions::default(), false).await
    }

    async fn open_with(
        url: &str,
        max_connections: u32,
        writers: WriterOptions,
        create: bool,
    ) -> Result<PgStore, StoreError> {
        let mut hosts = hosts::Hosts::parse(url)?;
        for options in &mut hosts.options {
            *options = options
                .clone()
                .log_statements(tracing::log::LevelFilter::Trace)
                .statement_cache_capacity(256);
        }
        let hosts = Arc::new(hosts);
        // With several hosts, the one that takes writes (the first such, in the order given).
        let (current, options) = match hosts.options.as_slice() {
            [one] if !hosts.read_write => (0, one.clone()),
            _ => hosts.find().await?,
        };
        let read_write = hosts.read_write;
        let moves = Arc::new(hosts::Moves::new());
        let moved = moves.clone();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(true)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // Durability is not negotiable, whatever the server's default says.
                    conn.execute("SET synchronous_commit = on").await?;
                    // A standby answers reads and refuses every change: not for this pool.
                    if read_write {
                        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                            .fetch_one(&mut *conn)
                            .await?;
                        if standby {
                            return Err(sqlx::Error::Protocol(
                                "the database host is a standby (in recovery)".into(),
                            ));
                        }
                    }
                    Ok(())
                })
            })
            // After a failover, connections opened before it may be on the old host.
            .before_acquire(move |_, meta| {
                let keep = !moved.predates_last_move(meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate::apply(&pool, create).await?;
        let writers = writer::Writers::start(&pool, &moves, writers);
        if hosts.read_write {
            tokio::spawn(hosts::watch(pool.clone(), hosts.clone(), moves, current));
        }
        Ok(PgStore {
            writers,
            pool,
            operations: AtomicU64::new(0),
        })
    }

    /// The query helper: the first row of `q`, mapped.
    async fn one<T>(
        &self,
        q: PgQuery<'_>,
        map: impl FnOnce(&Loaded) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = q.fetch_optional(&self.pool).await.map_err(db_error)?;
        row.map(|r| map(&Loaded(r))).transpose()
    }

    /// Every row of `q`, mapped.
    async fn all<T>(
        &self,
        q: PgQuery<'_>,
        map: impl Fn(&Loaded) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = q.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.into_iter().map(|r| map(&Loaded(r))).collect()
    }

    /// Runs `q`; answers how many rows it changed.
    async fn exec(&self, q: PgQuery<'_>) -> Result<u64, StoreError> {
        q.execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(db_error)
    }
}

/// A statement with its parameters bound.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

#[async_trait]
impl Store for PgStore {
    fn commit_stats(&self) -> CommitStats {
        // The writers' batches, and the changes made under the row lock (a commit each).
        let locked = self.operations.load(Ordering::Relaxed);
        let stats = &self.writers.stats;
        CommitStats {
            operations: locked + stats.operations.load(Ordering::Relaxed),
            commits: locked + stats.commits.load(Ordering::Relaxed),
        }
    }

    async fn health(&self, within: Duration) -> Result<(), StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        // One round trip: the schema version, and whether this server takes writes (a standby
        // promoted away from, or one in recovery, answers reads and refuses every change).
        let asked = sqlx::query_as::<_, (Option<i64>, bool)>(
            "SELECT (SELECT MAX(version) FROM schema_migrations), pg_is_in_recovery()",
        )
        .fetch_one(&self.pool);
        let (version, read_only) = match tokio::time::timeout(within, asked).await {
            Ok(answer) => answer.map_err(db_error)?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "the database did not answer within {} ms",
                    within.as_millis()
                )))
            }
        };
        if read_only {
            return Err(StoreError::Unavailable(
                "the database is in recovery (a standby): it refuses writes".into(),
            ));
        }
        migrate::check_version(version)
    }

    async fn backlog(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<tillgate_core::store::Backlog, StoreError> {
        let sql = dollar_placeholders(&tillgate_store_sql::backlog_sql());
        let (pending, due, unresolved) = sqlx::query_as::<_, (i64, i64, i64)>(&sql)
            .bind(now.timestamp_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(tillgate_core::store::Backlog {
            notifications_pending: pending,
            notifications_due: due,
            unresolved,
        })
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
