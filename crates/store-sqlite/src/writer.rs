//! The single writer: group commit of every queued write into one durable transaction.
//!
//! It runs on a thread of its own with a synchronous SQLite connection: a batch of writes is one
//! `BEGIN IMMEDIATE … COMMIT` run straight through, with no hand-off between threads per
//! statement (the benchmark showed those hand-offs, not SQLite, to be the cost). Callers wait on
//! a oneshot answered only after the `COMMIT` returned.

use crate::rows::Native;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tillgate_core::store::{CancelWrite, Guard, Inserted, MutateFn, Mutated, RefundWrite, Writes};
use tillgate_core::*;
use tokio::sync::{mpsc, oneshot};

/// The most operations one transaction carries.
pub const MAX_BATCH: usize = 256;

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

/// Counters for the benchmark: how many operations shared how many commits.
#[derive(Debug, Default)]
pub struct Stats {
    operations: AtomicU64,
    commits: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.operations.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
        )
    }
}

/// A driver error as a store error: unique violations are conflicts.
pub fn native(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            return StoreError::Conflict("unique key");
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
            // Dropping the jobs drops their answer channels: each caller learns that its
            // write was not committed.
            stopping = batch.iter().any(|j| matches!(j, Job::Shutdown));
            batch.clear();
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut broken = None;
        for job in std::mem::take(&mut batch) {
            match job {
                Job::Shutdown => stopping = true,
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
        if commit.is_ok() {
            stats
                .operations
                .fetch_add(answers.len() as u64, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        for ran in answers {
            (ran.reply)(&commit);
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

fn one<T>(
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

pub fn upsert_merchant(conn: &Connection, m: NewMerchant) -> Result<MerchantRecord, StoreError> {
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
            return Err(StoreError::Conflict(conflict));
        }
    }
    Ok(StoreAdded::Exists { sealed })
}

pub fn add_store(
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

pub fn add_app(
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

pub fn add_terminal(
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

pub fn insert_payment(conn: &Connection, p: NewPayment) -> Result<Inserted, StoreError> {
    let created = p.created_at.timestamp_millis();
    let inserted = one(
        conn,
        "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
         amount_minor, currency, settle_currency, state, description, notify_url, fingerprint, \
         created_at, updated_at, expires_at, dialect, extra) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (merchant_id, reference) DO NOTHING RETURNING *",
        params![
            p.transaction_no,
            p.merchant_id,
            p.merchant_no,
            p.store_no,
            p.reference,
            p.amount.minor(),
            p.amount.currency().code(),
            p.settle_currency.code(),
            p.description,
            p.notify_url,
            p.fingerprint,
            created,
            created,
            p.expires_at.timestamp_millis(),
            p.dialect.as_str(),
            p.extra,
        ],
        |r| tillgate_store_sql::payment(r),
    )?;
    match inserted {
        Some(rec) => {
            insert_event(
                conn,
                rec.id,
                created,
                "payment.created",
                &p.amount.to_string(),
            )?;
            Ok(Inserted::Inserted(rec))
        }
        None => one(
            conn,
            "SELECT * FROM payments WHERE merchant_id = ? AND reference = ?",
            params![p.merchant_id, p.reference],
            |r| tillgate_store_sql::payment(r),
        )?
        .map(Inserted::Existing)
        .ok_or_else(|| StoreError::Corrupt("reference conflict without a payment".into())),
    }
}

pub fn insert_event(
    conn: &Connection,
    payment_id: i64,
    at_ms: i64,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO events (payment_id, at, kind, detail) VALUES (?, ?, ?, ?)")
        .and_then(|mut s| s.execute(params![payment_id, at_ms, kind, detail]))
        .map(drop)
        .map_err(native)
}

pub fn mutate(
    conn: &Connection,
    payment_id: i64,
    mut decide: MutateFn,
) -> Result<Mutated, StoreError> {
    let mut rec = one(
        conn,
        "SELECT * FROM payments WHERE id = ?",
        [payment_id],
        |r| tillgate_store_sql::payment(r),
    )?
    .ok_or(StoreError::NotFound)?;
    let before = rec.clone();
    let writes: Writes = match decide(&mut rec) {
        Ok(w) => w,
        Err(rejection) => return Ok(Mutated::Rejected(rejection, before)),
    };
    if let Some(guard) = writes.guard {
        let (sql, id) = match guard {
            Guard::RefundInProgress(id) => ("SELECT state FROM refunds WHERE id = ?", id),
            Guard::CancelInProgress(id) => ("SELECT state FROM cancels WHERE id = ?", id),
        };
        let state: Option<i64> = conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(native)?;
        if state != Some(1) {
            return Ok(Mutated::Rejected(tillgate_core::Rejection::Replay, before));
        }
    }
    let at = writes.at.unwrap_or(rec.updated_at);
    rec.updated_at = at;
    let at_ms = at.timestamp_millis();
    let p = &rec.payment;
    conn.prepare_cached(
        "UPDATE payments SET state = ?, refunded_minor = ?, reserved_minor = ?, \
         cancel_in_flight = ?, paid_at = ?, pay_fingerprint = ?, vendor = ?, updated_at = ?, \
         created_at = ?, version = version + 1 WHERE id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            p.state().as_str(),
            p.refunded().minor(),
            p.reserved().minor(),
            p.cancel_in_flight().map(|k| k.as_str()),
            p.paid_at().map(|t| t.timestamp_millis()),
            rec.pay_fingerprint,
            rec.vendor,
            at_ms,
            rec.created_at.timestamp_millis(),
            payment_id,
        ])
    })
    .map_err(native)?;
    rec.version += 1;

    let refund = match &writes.refund {
        None => None,
        Some(RefundWrite::Insert(n)) => one(
            conn,
            "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
             amount_minor, currency, state, fingerprint, created_at, updated_at, notify_url, \
             extra) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING *",
            params![
                n.refund_no,
                payment_id,
                rec.merchant_id,
                n.refund_reference,
                n.amount.minor(),
                n.amount.currency().code(),
                n.fingerprint,
                at_ms,
                at_ms,
                n.notify_url,
                n.extra,
            ],
            |r| tillgate_store_sql::refund(r),
        )?,
        Some(RefundWrite::SetState { refund_id, state }) => one(
            conn,
            "UPDATE refunds SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
             RETURNING *",
            params![state.code(), at_ms, refund_id, payment_id],
            |r| tillgate_store_sql::refund(r),
        )?,
    };
    if writes.refund.is_some() && refund.is_none() {
        return Err(StoreError::Corrupt("refund row not written".into()));
    }
    let cancel = match &writes.cancel {
        None => None,
        Some(CancelWrite::Insert(n)) => one(
            conn,
            "INSERT INTO cancels (cancel_no, payment_id, merchant_id, kind, state, \
             created_at, updated_at, notify_url, extra) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) \
             RETURNING *",
            params![
                n.cancel_no,
                payment_id,
                rec.merchant_id,
                n.kind.as_str(),
                at_ms,
                at_ms,
                n.notify_url,
                n.extra,
            ],
            |r| tillgate_store_sql::cancel(r),
        )?,
        Some(CancelWrite::SetState { cancel_id, state }) => one(
            conn,
            "UPDATE cancels SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
             RETURNING *",
            params![state.code(), at_ms, cancel_id, payment_id],
            |r| tillgate_store_sql::cancel(r),
        )?,
    };
    if writes.cancel.is_some() && cancel.is_none() {
        return Err(StoreError::Corrupt("cancel row not written".into()));
    }
    if let Some(c) = &writes.command {
        let payload = serde_json::to_string(&c.command)
            .map_err(|e| StoreError::Corrupt(format!("command payload: {e}")))?;
        conn.prepare_cached(
            "INSERT INTO terminal_commands (command_id, tid, kind, payment_id, cancel_id, payload, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.command.id,
                c.tid,
                c.command.kind.as_str(),
                payment_id,
                cancel.as_ref().map(|x| x.id),
                payload,
                at_ms,
                at_ms,
            ])
        })
        .map_err(native)?;
    }
    for (kind, detail) in &writes.events {
        insert_event(conn, payment_id, at_ms, kind, detail)?;
    }
    for o in &writes.outbox {
        conn.prepare_cached(
            "INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot, \
             next_attempt_at, created_at, dialect) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .and_then(|mut s| {
            s.execute(params![
                rec.merchant_id,
                payment_id,
                o.topic.as_str(),
                o.target_url,
                o.snapshot,
                o.first_attempt_at.timestamp_millis(),
                at_ms,
                o.dialect.as_str(),
            ])
        })
        .map_err(native)?;
    }
    Ok(Mutated::Done {
        payment: rec,
        refund,
        cancel,
    })
}

pub fn claim(
    conn: &Connection,
    claim: &NotificationClaim,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let sql = tillgate_store_sql::claim_sql(false);
    let mut stmt = conn.prepare_cached(&sql).map_err(native)?;
    let mut rows = stmt
        .query(params![
            claim.now.timestamp_millis(),
            claim.lease_until.timestamp_millis(),
            claim.limit,
            claim.per_merchant,
            tillgate_store_sql::held_json(&claim.held),
        ])
        .map_err(native)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(native)? {
        out.push(tillgate_store_sql::outbox(&Native(row))?);
    }
    Ok(out)
}

/// The outbox columns an attempt's outcome sets: status, next attempt time, delivery time.
fn next_columns(a: &AttemptRecord, next: AttemptNext) -> (&'static str, Option<i64>, Option<i64>) {
    match next {
        AttemptNext::Delivered => ("delivered", None, Some(a.at.timestamp_millis())),
        AttemptNext::RetryAt(t) => ("pending", Some(t.timestamp_millis()), None),
        AttemptNext::Failed => ("failed", None, None),
    }
}

pub fn finish_attempt(
    conn: &Connection,
    a: AttemptRecord,
    next: AttemptNext,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO notification_attempts (outbox_id, attempt, at, http_status, response_head, \
         latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.outbox_id,
            a.attempt,
            a.at.timestamp_millis(),
            a.http_status,
            a.response_head,
            a.latency_ms,
            a.error,
        ])
    })
    .map_err(native)?;
    let (status, next_at, delivered_at) = next_columns(&a, next);
    conn.prepare_cached(
        "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
         last_attempt_at = ?, delivered_at = ?, leased_until = NULL WHERE id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            status,
            a.attempt,
            next_at,
            a.at.timestamp_millis(),
            delivered_at,
            a.outbox_id,
        ])
    })
    .map(drop)
    .map_err(native)
}

pub fn resend(conn: &Connection, what: Resend, now_ms: i64) -> Result<u64, StoreError> {
    let n = match what {
        Resend::One(id) => conn
            .prepare_cached(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL, delivered_at = NULL WHERE id = ?",
            )
            .and_then(|mut s| s.execute(params![now_ms, id])),
        Resend::FailedSince(t) => conn
            .prepare_cached(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL WHERE status = 'failed' AND created_at >= ?",
            )
            .and_then(|mut s| s.execute(params![now_ms, t.timestamp_millis()])),
    }
    .map_err(native)?;
    Ok(n as u64)
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
