//! The single writer: group commit of every queued write into one durable transaction.
//!
//! It runs on a thread of its own with a synchronous SQLite connection: a batch of writes is one
//! `BEGIN IMMEDIATE … COMMIT` run straight through, with no hand-off between threads per
//! statement (the benchmark showed those hand-offs, not SQLite, to be the cost). Callers wait on
//! a oneshot answered only after the `COMMIT` returned.

use crate::rows::Native;
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tillgate_core::store::{Conflict, StoreError};
use tokio::sync::{mpsc, oneshot};

/// The most operations one transaction carries.
pub const MAX_BATCH: usize = 256;

/// The histogram of operations per commit.
pub const BATCH_METRIC: &str = "tillgate_store_batch_operations";

/// Sends a job's answer once the batch's commit result is known.
type AnswerFn = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// What a job hands back after it ran: the answer to send once the commit is known, and
/// whether the job itself succeeded (a failed job's savepoint is rolled back).
pub struct Ran {
    reply: AnswerFn,
    ok: bool,
}

type Work = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// One write waiting for the writer.
pub enum Job {
    Work(Work),
    /// Answered with the outcome of the next transaction, writing nothing itself: whether the
    /// writer is alive and can take the write lock and commit (the store's health).
    Probe(oneshot::Sender<Result<(), StoreError>>),
    /// Finish what was queued before, then stop.
    Shutdown,
}

/// A job that runs `f` on the writer's connection and answers through `tx` after the commit.
pub fn job<T, F>(tx: oneshot::Sender<Result<T, StoreError>>, f: F) -> Job
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    Job::Work(Box::new(move |conn| {
        let result = f(conn);
        let ok = result.is_ok();
        let reply = Box::new(move |commit: &Result<(), StoreError>| {
            // A caller that went away (its request was cancelled) misses the answer; the
            // write itself stands or falls with the commit.
            let _ = tx.send(match commit {
                Ok(()) => result,
                Err(e) => Err(e.clone()),
            });
        });
        Ran { reply, ok }
    }))
}

/// Counters for the benchmark and the metrics: how many operations shared how many commits;
/// and why the last transaction failed, until one succeeds again.
#[derive(Debug, Default)]
pub struct Stats {
    operations: AtomicU64,
    commits: AtomicU64,
    failure: std::sync::Mutex<Option<String>>,
}

impl Stats {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.operations.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
        )
    }

    /// Why the writer's last transaction failed, when no later one succeeded.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, outcome: &Result<(), StoreError>, operations: usize) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                *failure = None;
                // A transaction that carried only probes wrote nothing: no durable commit.
                if operations > 0 {
                    self.operations
                        .fetch_add(operations as u64, Ordering::Relaxed);
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    metrics::histogram!(BATCH_METRIC).record(operations as f64);
                }
            }
            Err(e) => *failure = Some(e.to_string()),
        }
    }
}

/// A driver error as a store error: unique violations are conflicts.
pub fn native(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            return Conflict::UniqueKey.into();
        }
    }
    StoreError::Unavailable(e.to_string())
}

/// Opens the writer's connection with the durability the gateway promises.
pub fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(native)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(native)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(native)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read-only connection (WAL readers never block the writer, nor it them).
pub fn open_read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(native)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(native)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer's loop; runs on its own thread until `Shutdown` or until every sender is gone.
pub fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    let mut stopping = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "could not begin a write transaction");
            let failed = Err(native(e));
            stats.record(&failed, 0);
            stopping = batch.iter().any(|j| matches!(j, Job::Shutdown));
            // Dropping the jobs drops their answer channels: each caller learns that its
            // write was not committed.
            for job in batch.drain(..) {
                if let Job::Probe(tx) = job {
                    let _ = tx.send(failed.clone());
                }
            }
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut probes = Vec::new();
        let mut broken = None;
        for job in std::mem::take(&mut batch) {
            match job {
                Job::Shutdown => stopping = true,
                Job::Probe(tx) => probes.push(tx),
                // Once the transaction is in doubt no further job runs: dropping it tells its
                // caller that nothing was committed.
                Job::Work(_) if broken.is_some() => {}
                Job::Work(work) => {
                    let (ran, intact) = run_job(&conn, work);
                    answers.push(ran);
                    if let Err(e) = intact {
                        broken = Some(e);
                    }
                }
            }
        }
        let commit = match broken {
            // A savepoint could not be closed, or SQLite rolled the whole transaction back
            // already (SQLITE_FULL, IOERR, BUSY…): a COMMIT now could commit jobs that ran
            // outside it. Roll back and answer every job of the batch with the error, so no
            // caller is told "failed" about a write that stands, or the reverse.
            Some(e) => {
                tracing::error!(error = %e, "the write transaction broke; the batch is rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
            None => match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the batch is rolled back");
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(native(e))
                }
            },
        };
        stats.record(&commit, answers.len());
        for ran in answers {
            (ran.reply)(&commit);
        }
        for tx in probes {
            let _ = tx.send(commit.clone());
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the writer's connection failed");
    }
}

/// Runs one job inside its own savepoint, so that its failure undoes only its own writes.
/// The second value says whether the batch's transaction is still intact afterwards.
fn run_job(conn: &Connection, work: Work) -> (Ran, Result<(), StoreError>) {
    if let Err(e) = conn.execute_batch("SAVEPOINT op") {
        // The work never ran; dropping it tells its caller that nothing was committed.
        let ran = Ran {
            reply: Box::new(|_| {}),
            ok: false,
        };
        return (ran, Err(native(e)));
    }
    let ran = work(conn);
    let end = if ran.ok {
        conn.execute_batch("RELEASE op")
    } else {
        conn.execute_batch("ROLLBACK TO op; RELEASE op")
    };
    let intact = match end {
        Err(e) => Err(native(e)),
        // In autocommit mode there is no transaction any more: SQLite rolled it back.
        Ok(()) if conn.is_autocommit() => Err(StoreError::Unavailable(
            "the write transaction was rolled back by SQLite".into(),
        )),
        Ok(()) => Ok(()),
    };
    (ran, intact)
}

/// The query helper: the first row of `sql`, mapped (the writer's and the readers' own).
pub fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&Native) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(native)?;
    let mut rows = stmt.query(params).map_err(native)?;
    match rows.next().map_err(native)? {
        Some(row) => map(&Native(row)).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql`, mapped.
pub fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&Native) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(native)?;
    let mut rows = stmt.query(params).map_err(native)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(native)? {
        out.push(map(&Native(row))?);
    }
    Ok(out)
}

/// A parameter of a simple statement run by the writer.
pub enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

impl rusqlite::ToSql for Bind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Bind::Int(v) => v.to_sql(),
            Bind::Text(v) => v.to_sql(),
        }
    }
}

/// Runs one simple statement; answers how many rows it changed.
pub fn execute(conn: &Connection, sql: &'static str, binds: Vec<Bind>) -> Result<u64, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(rusqlite::params_from_iter(binds.iter())))
        .map(|n| n as u64)
        .map_err(native)
}
