//! Group commit on PostgreSQL: the writers of a node, each committing the writes of concurrent
//! requests together in one transaction.
//!
//! A write is one statement (a payment's swap on its version with everything the change writes,
//! or a new payment). Each writer takes what is queued (up to its batch size), runs the
//! statements one after the other inside `BEGIN … COMMIT` on a connection of the pool, and
//! answers every caller only after the `COMMIT` returned, so one durable flush serves the whole
//! batch. A batch of one runs as its own autocommitted statement.
//!
//! Writes stay isolated without a savepoint each (savepoints cost a round trip apiece and
//! overflow PostgreSQL's per-backend cache of subtransactions in large batches): a statement
//! that fails (a unique key taken, a deadlock with another node) aborts the transaction, which
//! is rolled back; that write gets its error, and the others run again in a fresh transaction.
//! A version swap that misses is not an error: the statement writes nothing and says so, and the
//! caller decides again, as it would without the writer. When the transaction itself breaks —
//! `BEGIN` or `COMMIT` fails, the connection is lost, a failover — every write of the batch is
//! answered with the error and none with success; whether an in-doubt `COMMIT` landed is for the
//! caller's retry to find out, by its key.
//!
//! The writers share one queue: whichever is idle takes what is queued, so a lone write never
//! waits behind another's flush while a writer is free, and under load the writers' batches
//! grow with the queue. Each batch runs its writes in the order of their payments' ids, so two
//! batches (of this node or another) never take payment rows' locks in opposite orders. The
//! queue is bounded: a caller waits for room (back-pressure) instead of piling up work.

use crate::db_error;
use crate::hosts::Moves;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Execute, Executor, PgPool, Postgres};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tillgate_core::store::StoreError;
use tokio::sync::{mpsc, oneshot, Mutex};

/// How many writers a node runs and how much they take at once (`database_writers`,
/// `database_write_queue`, `database_write_batch` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Writers of this node, each with a connection of the pool while it commits.
    pub writers: usize,
    /// Writes waiting for the writers.
    pub queue: usize,
    /// The most writes one transaction carries.
    pub batch: usize,
}

impl Default for WriterOptions {
    fn default() -> WriterOptions {
        WriterOptions {
            writers: DEFAULT_WRITERS,
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
        }
    }
}

/// Eight: each writer runs its statements one round trip at a time (sqlx does not pipeline),
/// so several keep PostgreSQL's own flush shared by their commits; fewer were slower at 16
/// connections in BENCHMARKS.md's measurement, more leave the pool's other users less.
pub const DEFAULT_WRITERS: usize = 8;
/// As many writes as the SQLite writer queues.
pub const DEFAULT_QUEUE: usize = 4096;
/// Large enough to take every connection's write of a busy node in one flush; small enough to
/// stay within PostgreSQL's cache of a transaction's row locks and subtransactions.
pub const DEFAULT_BATCH: usize = 64;

/// One statement with its parameters, kept so that it can run again after a rollback.
pub(crate) struct Statement {
    sql: &'static str,
    args: PgArguments,
    /// The caller wants how many rows it changed, not its row.
    count: bool,
}

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, PgArguments>;

impl Statement {
    /// Takes the text and the bound parameters of `q`.
    pub(crate) fn of(sql: &'static str, mut q: PgQuery) -> Result<Statement, StoreError> {
        let args = q
            .take_arguments()
            .map_err(|e| StoreError::Corrupt(format!("a parameter could not be encoded: {e}")))?
            .unwrap_or_default();
        Ok(Statement {
            sql,
            args,
            count: false,
        })
    }

    /// Like [`Statement::of`], for a statement whose caller wants the rows it changed.
    pub(crate) fn counted(sql: &'static str, q: PgQuery) -> Result<Statement, StoreError> {
        Ok(Statement {
            count: true,
            ..Statement::of(sql, q)?
        })
    }

    pub(crate) fn query(&self) -> PgQuery {
        sqlx::query_with(self.sql, self.args.clone())
    }

    async fn run(&self, conn: &mut sqlx::PgConnection) -> Result<Reply, sqlx::Error> {
        if self.count {
            let done = self.query().execute(conn).await?;
            Ok(Reply::Count(done.rows_affected()))
        } else {
            Ok(Reply::Row(self.query().fetch_optional(conn).await?))
        }
    }
}

/// What a write answers: the statement's row, if it returned one, or the rows it changed.
pub(crate) enum Reply {
    Row(Option<PgRow>),
    Count(u64),
}

impl Reply {
    /// The statement's row (none for a counted statement).
    pub(crate) fn row(self) -> Option<PgRow> {
        match self {
            Reply::Row(row) => row,
            Reply::Count(_) => None,
        }
    }

    /// The rows the statement changed (a returned row counts as one).
    pub(crate) fn count(&self) -> u64 {
        match self {
            Reply::Row(row) => u64::from(row.is_some()),
            Reply::Count(n) => *n,
        }
    }
}

type Answer = Result<Reply, StoreError>;

struct Job {
    payment_id: Option<i64>,
    statement: Statement,
    reply: oneshot::Sender<Answer>,
}

/// Counters for the metrics and the benchmark: writes committed and the commits they took.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub operations: AtomicU64,
    pub commits: AtomicU64,
}

/// The writers of a node: one bounded queue, taken from by whichever writer is idle.
pub(crate) struct Writers {
    queue: mpsc::Sender<Job>,
    pub stats: Arc<Stats>,
}

impl Writers {
    /// Starts `options.writers` writers on `pool`; they stop when the store is dropped.
    pub(crate) fn start(pool: &PgPool, moves: &Arc<Moves>, options: WriterOptions) -> Writers {
        let batch = options.batch.max(1);
        let stats = Arc::new(Stats::default());
        let (queue, rx) = mpsc::channel(options.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..options.writers.max(1) {
            let writer = run(
                pool.clone(),
                moves.clone(),
                rx.clone(),
                batch,
                stats.clone(),
            );
            tokio::spawn(writer);
        }
        Writers { queue, stats }
    }

    /// Commits `statement` with whatever else is queued; answers after the commit returned.
    /// `payment_id` orders it in its batch (a new payment has none yet).
    pub(crate) async fn write(&self, payment_id: Option<i64>, statement: Statement) -> Answer {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            payment_id,
            statement,
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the store's writer dropped the write uncommitted".into())
        })?
    }
}

/// One writer's loop: until every sender is gone, wait for the queue (one writer at a time
/// waits; the others are committing), take what is queued and commit it. A writer keeps its
/// connection from batch to batch while writes keep coming (no check of it before each batch);
/// it gives it back to the pool when the queue is empty, after any failure, and when the pool
/// has moved to another host since it was taken (a failover).
async fn run(
    pool: PgPool,
    moves: Arc<Moves>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    batch: usize,
    stats: Arc<Stats>,
) {
    let mut jobs = Vec::with_capacity(batch);
    let mut held: Option<(PoolConnection<Postgres>, Instant)> = None;
    loop {
        if queue.lock().await.recv_many(&mut jobs, batch).await == 0 {
            return;
        }
        // In the order of their payments: two batches never lock payment rows in opposite
        // orders (a deadlock), on this node or on another.
        jobs.sort_by_key(|job| job.payment_id);
        if held
            .as_ref()
            .is_some_and(|(_, since)| moves.predates_last_move(since.elapsed()))
        {
            held = None;
        }
        let (mut conn, since) = match held.take() {
            Some(kept) => kept,
            None => match pool.acquire().await {
                Ok(conn) => (conn, Instant::now()),
                Err(e) => {
                    fail_all(&mut jobs, &db_error(e));
                    continue;
                }
            },
        };
        let intact = commit(&mut conn, &mut jobs, &stats).await;
        jobs.clear();
        // Another writer waiting on the queue means it is empty.
        let busy = queue.try_lock().is_ok_and(|rx| !rx.is_empty());
        if intact && busy {
            held = Some((conn, since));
        } else if !intact {
            conn.close_on_drop();
        }
    }
}

/// The histogram of writes per commit (the SQLite writer's name: one metric for both).
const BATCH_METRIC: &str = "tillgate_store_batch_operations";

impl Stats {
    fn committed(&self, writes: usize) {
        self.operations.fetch_add(writes as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!(BATCH_METRIC).record(writes as f64);
    }
}

/// Answers every job with `error`.
fn fail_all(jobs: &mut Vec<Job>, error: &StoreError) {
    for job in jobs.drain(..) {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// Commits `jobs` on `conn` (answering each of them), dropping the ones whose statement fails.
/// Answers whether the connection is still fit for use.
async fn commit(conn: &mut PoolConnection<Postgres>, jobs: &mut Vec<Job>, stats: &Stats) -> bool {
    if let [_] = jobs.as_slice() {
        // Alone: one statement is a transaction of its own (and as durable).
        let job = jobs.remove(0);
        let answer = job.statement.run(conn).await;
        let intact = match &answer {
            Ok(_) => {
                stats.committed(1);
                true
            }
            // A key taken or a deadlock leaves the connection as it was; anything else (the
            // server ending the session among them) may not.
            Err(sqlx::Error::Database(db)) => {
                matches!(
                    db.code().as_deref().and_then(|c| c.get(..2)),
                    Some("23" | "40")
                )
            }
            Err(_) => false,
        };
        let _ = job.reply.send(answer.map_err(db_error));
        return intact;
    }
    while !jobs.is_empty() {
        if let Err(e) = conn.execute("BEGIN").await {
            fail_all(jobs, &db_error(e));
            return false;
        }
        let mut rows = Vec::with_capacity(jobs.len());
        let mut failed = None;
        for (i, job) in jobs.iter().enumerate() {
            match job.statement.run(conn).await {
                Ok(row) => rows.push(row),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        match failed {
            None => match conn.execute("COMMIT").await {
                Ok(_) => {
                    stats.committed(jobs.len());
                    for (job, row) in jobs.drain(..).zip(rows) {
                        let _ = job.reply.send(Ok(row));
                    }
                }
                Err(e) => {
                    // Refused (rolled back) or in doubt (the connection went): nobody is told
                    // it succeeded.
                    tracing::error!(error = %e, writes = jobs.len(), "a group commit failed");
                    fail_all(jobs, &db_error(e));
                    return false;
                }
            },
            // The statement's own failure (a key taken, a deadlock): it alone is refused.
            Some((i, e @ sqlx::Error::Database(_))) => {
                let job = jobs.remove(i);
                let rolled_back = conn.execute("ROLLBACK").await;
                let _ = job.reply.send(Err(db_error(e)));
                if let Err(e) = rolled_back {
                    fail_all(jobs, &db_error(e));
                    return false;
                }
            }
            // The connection's failure: nothing of the batch is committed.
            Some((_, e)) => {
                tracing::error!(error = %e, writes = jobs.len(), "a group commit broke");
                fail_all(jobs, &db_error(e));
                return false;
            }
        }
    }
    true
}
