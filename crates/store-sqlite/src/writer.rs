//! The single writer: group commit of every queued write into one durable transaction.

use crate::{rows, unavailable};
use sqlx::SqliteConnection;
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

/// A boxed future with an explicit `Send` bound: sqlx's executor futures otherwise trip the
/// compiler's higher-ranked lifetime inference when the writer is spawned.
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

type Work = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Ran> + Send>;

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
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    Job::Work(Box::new(move |conn| {
        Box::pin(async move {
            let result = f(conn).await;
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
        })
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

fn exec<'a>(
    conn: &'a mut SqliteConnection,
    sql: &'static str,
) -> Boxed<'a, Result<(), StoreError>> {
    Box::pin(async move {
        sqlx::Executor::execute(&mut *conn, sql)
            .await
            .map(drop)
            .map_err(unavailable)
    })
}

pub async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    let mut stopping = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while !stopping {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&mut conn, "BEGIN IMMEDIATE").await {
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
                    let (ran, intact) = run_job(&mut conn, work).await;
                    answers.push(ran);
                    if let Err(e) = intact {
                        broken = Some(e);
                    }
                }
            }
        }
        let commit = match broken {
            // A savepoint could not be closed: SQLite may have rolled the whole transaction
            // back already (SQLITE_FULL, IOERR, BUSY…), and a COMMIT now could commit later
            // jobs that ran outside it. Roll back and answer every job of the batch with the
            // error, so no caller is told "failed" about a write that stands, or the reverse.
            Some(e) => {
                tracing::error!(error = %e, "the write transaction broke; the batch is rolled back");
                let _ = exec(&mut conn, "ROLLBACK").await;
                Err(e)
            }
            None => match exec(&mut conn, "COMMIT").await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the batch is rolled back");
                    let _ = exec(&mut conn, "ROLLBACK").await;
                    Err(e)
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
    let _ = sqlx::Connection::close(conn).await;
}

pub fn boxed<'a, T>(f: impl std::future::Future<Output = T> + Send + 'a) -> Boxed<'a, T> {
    Box::pin(f)
}

/// Runs one job inside its own savepoint, so that its failure undoes only its own writes.
/// The second value says whether the batch's transaction is still intact afterwards.
async fn run_job(conn: &mut SqliteConnection, work: Work) -> (Ran, Result<(), StoreError>) {
    if let Err(e) = exec(conn, "SAVEPOINT op").await {
        // The work never ran; dropping it tells its caller that nothing was committed.
        let ran = Ran {
            reply: Box::new(|_| {}),
            ok: false,
        };
        return (ran, Err(e));
    }
    let ran = work(conn).await;
    let end = if ran.ok {
        exec(conn, "RELEASE op").await
    } else {
        match exec(conn, "ROLLBACK TO op").await {
            Ok(()) => exec(conn, "RELEASE op").await,
            Err(e) => Err(e),
        }
    };
    (ran, end)
}

pub async fn upsert_merchant(
    conn: &mut SqliteConnection,
    m: NewMerchant,
) -> Result<MerchantRecord, StoreError> {
    sqlx::query(
        "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (merchant_no) DO NOTHING",
    )
    .bind(&m.merchant_no)
    .bind(m.zone.name())
    .bind(i64::from(m.sandbox))
    .bind(m.created_at.timestamp_millis())
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    let row = sqlx::query("SELECT * FROM merchants WHERE merchant_no = ?")
        .bind(&m.merchant_no)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    rows::merchant(&rows::Loaded(row))
}

pub async fn add_store(
    conn: &mut SqliteConnection,
    merchant_id: i64,
    store_no: &str,
    sealed: &str,
) -> Result<StoreAdded, StoreError> {
    let done = sqlx::query(
        "INSERT INTO stores (merchant_id, store_no, token_sealed) VALUES (?, ?, ?) \
         ON CONFLICT (merchant_id, store_no) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(store_no)
    .bind(sealed)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 1 {
        return Ok(StoreAdded::Added);
    }
    let token_sealed: String = sqlx::query_scalar(
        "SELECT token_sealed FROM stores WHERE merchant_id = ? AND store_no = ?",
    )
    .bind(merchant_id)
    .bind(store_no)
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok(StoreAdded::Exists {
        sealed: token_sealed,
    })
}

pub async fn insert_payment(
    conn: &mut SqliteConnection,
    p: NewPayment,
) -> Result<Inserted, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
         amount_minor, currency, settle_currency, state, description, notify_url, fingerprint, \
         created_at, updated_at, expires_at, dialect, extra) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (merchant_id, reference) DO NOTHING RETURNING *",
    )
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
    .bind(p.created_at.timestamp_millis())
    .bind(p.expires_at.timestamp_millis())
    .bind(&p.dialect)
    .bind(&p.extra)
    .fetch_optional(&mut *conn)
    .await
    .map_err(unavailable)?;
    match inserted {
        Some(row) => {
            let rec = rows::payment(&rows::Loaded(row))?;
            insert_event(
                conn,
                rec.id,
                p.created_at.timestamp_millis(),
                "payment.created",
                &p.amount.to_string(),
            )
            .await?;
            Ok(Inserted::Inserted(rec))
        }
        None => {
            let row = sqlx::query("SELECT * FROM payments WHERE merchant_id = ? AND reference = ?")
                .bind(p.merchant_id)
                .bind(&p.reference)
                .fetch_one(&mut *conn)
                .await
                .map_err(unavailable)?;
            Ok(Inserted::Existing(rows::payment(&rows::Loaded(row))?))
        }
    }
}

pub async fn insert_event(
    conn: &mut SqliteConnection,
    payment_id: i64,
    at_ms: i64,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO events (payment_id, at, kind, detail) VALUES (?, ?, ?, ?)")
        .bind(payment_id)
        .bind(at_ms)
        .bind(kind)
        .bind(detail)
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

pub async fn mutate(
    conn: &mut SqliteConnection,
    payment_id: i64,
    mut decide: MutateFn,
) -> Result<Mutated, StoreError> {
    let row = sqlx::query("SELECT * FROM payments WHERE id = ?")
        .bind(payment_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound)?;
    let mut rec = rows::payment(&rows::Loaded(row))?;
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
        let state: Option<i64> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
        if state != Some(1) {
            return Ok(Mutated::Rejected(tillgate_core::Rejection::Replay, before));
        }
    }
    let at = writes.at.unwrap_or(rec.updated_at);
    rec.updated_at = at;
    let at_ms = at.timestamp_millis();
    let p = &rec.payment;
    sqlx::query(
        "UPDATE payments SET state = ?, refunded_minor = ?, reserved_minor = ?, \
         cancel_in_flight = ?, paid_at = ?, pay_fingerprint = ?, vendor = ?, updated_at = ?, \
         created_at = ?, version = version + 1 WHERE id = ?",
    )
    .bind(p.state().as_str())
    .bind(p.refunded().minor())
    .bind(p.reserved().minor())
    .bind(p.cancel_in_flight().map(|k| k.as_str()))
    .bind(p.paid_at().map(|t| t.timestamp_millis()))
    .bind(&rec.pay_fingerprint)
    .bind(&rec.vendor)
    .bind(at_ms)
    .bind(rec.created_at.timestamp_millis())
    .bind(payment_id)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;

    let refund = match writes.refund {
        None => None,
        Some(RefundWrite::Insert(n)) => {
            let row = sqlx::query(
                "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
                 amount_minor, currency, state, fingerprint, created_at, updated_at, notify_url, \
                 extra) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING *",
            )
            .bind(&n.refund_no)
            .bind(payment_id)
            .bind(rec.merchant_id)
            .bind(&n.refund_reference)
            .bind(n.amount.minor())
            .bind(n.amount.currency().code())
            .bind(&n.fingerprint)
            .bind(at_ms)
            .bind(at_ms)
            .bind(&n.notify_url)
            .bind(&n.extra)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
            Some(rows::refund(&rows::Loaded(row))?)
        }
        Some(RefundWrite::SetState { refund_id, state }) => {
            let row = sqlx::query(
                "UPDATE refunds SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
                 RETURNING *",
            )
            .bind(state.code())
            .bind(at_ms)
            .bind(refund_id)
            .bind(payment_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
            Some(rows::refund(&rows::Loaded(row))?)
        }
    };
    let cancel_written = match writes.cancel {
        None => None,
        Some(CancelWrite::Insert(n)) => {
            let row = sqlx::query(
                "INSERT INTO cancels (cancel_no, payment_id, merchant_id, kind, state, \
                 created_at, updated_at, notify_url, extra) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) \
                 RETURNING *",
            )
            .bind(&n.cancel_no)
            .bind(payment_id)
            .bind(rec.merchant_id)
            .bind(n.kind.as_str())
            .bind(at_ms)
            .bind(at_ms)
            .bind(&n.notify_url)
            .bind(&n.extra)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
            Some(rows::cancel(&rows::Loaded(row))?)
        }
        Some(CancelWrite::SetState { cancel_id, state }) => {
            let row = sqlx::query(
                "UPDATE cancels SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
                 RETURNING *",
            )
            .bind(state.code())
            .bind(at_ms)
            .bind(cancel_id)
            .bind(payment_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
            Some(rows::cancel(&rows::Loaded(row))?)
        }
    };
    let cancel = cancel_written;
    if let Some(c) = &writes.command {
        let payload = serde_json::to_string(&c.command)
            .map_err(|e| StoreError::Corrupt(format!("command payload: {e}")))?;
        sqlx::query(
            "INSERT INTO terminal_commands (command_id, tid, kind, payment_id, cancel_id, payload, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.command.id)
        .bind(&c.tid)
        .bind(c.command.kind.as_str())
        .bind(payment_id)
        .bind(cancel.as_ref().map(|x| x.id))
        .bind(payload)
        .bind(at_ms)
        .bind(at_ms)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    }
    for (kind, detail) in &writes.events {
        insert_event(conn, payment_id, at_ms, kind, detail).await?;
    }
    for o in &writes.outbox {
        sqlx::query(
            "INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot, \
             next_attempt_at, created_at, dialect) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(rec.merchant_id)
        .bind(payment_id)
        .bind(&o.topic)
        .bind(&o.target_url)
        .bind(&o.snapshot)
        .bind(o.first_attempt_at.timestamp_millis())
        .bind(at_ms)
        .bind(&o.dialect)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    }
    Ok(Mutated::Done {
        payment: rec,
        refund,
        cancel,
    })
}

pub async fn add_app(
    conn: &mut SqliteConnection,
    merchant_id: i64,
    app_id: String,
    sealed: String,
    at_ms: i64,
) -> Result<StoreAdded, StoreError> {
    let done = sqlx::query(
        "INSERT INTO apps (merchant_id, app_id, secret_sealed, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (app_id) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(&app_id)
    .bind(&sealed)
    .bind(at_ms)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 1 {
        return Ok(StoreAdded::Added);
    }
    let row = sqlx::query("SELECT merchant_id, secret_sealed FROM apps WHERE app_id = ?")
        .bind(&app_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    let owner: i64 = sqlx::Row::try_get(&row, 0).map_err(unavailable)?;
    if owner != merchant_id {
        return Err(StoreError::Conflict("app_id belongs to another merchant"));
    }
    Ok(StoreAdded::Exists {
        sealed: sqlx::Row::try_get(&row, 1).map_err(unavailable)?,
    })
}

pub async fn set_notify_schedule(
    conn: &mut SqliteConnection,
    merchant_id: i64,
    schedule: Option<String>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE merchants SET notify_schedule = ? WHERE id = ?")
        .bind(schedule)
        .bind(merchant_id)
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(unavailable)
}

pub async fn claim(
    conn: &mut SqliteConnection,
    now_ms: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let rows = sqlx::query(&tillgate_store_sql::claim_sql(false))
        .bind(now_ms)
        .bind(lease_ms)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|r| tillgate_store_sql::outbox(&rows::Loaded(r)))
        .collect()
}

pub async fn finish_attempt(
    conn: &mut SqliteConnection,
    a: AttemptRecord,
    next: AttemptNext,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notification_attempts (outbox_id, attempt, at, http_status, response_head, \
         latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.outbox_id)
    .bind(a.attempt)
    .bind(a.at.timestamp_millis())
    .bind(a.http_status)
    .bind(&a.response_head)
    .bind(a.latency_ms)
    .bind(&a.error)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    let (status, next_at, delivered_at) = next_columns(&a, next);
    sqlx::query(
        "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
         last_attempt_at = ?, delivered_at = ?, leased_until = NULL WHERE id = ?",
    )
    .bind(status)
    .bind(a.attempt)
    .bind(next_at)
    .bind(a.at.timestamp_millis())
    .bind(delivered_at)
    .bind(a.outbox_id)
    .execute(&mut *conn)
    .await
    .map(drop)
    .map_err(unavailable)
}

/// The outbox columns an attempt's outcome sets: status, next attempt time, delivery time.
pub fn next_columns(
    a: &AttemptRecord,
    next: AttemptNext,
) -> (&'static str, Option<i64>, Option<i64>) {
    match next {
        AttemptNext::Delivered => ("delivered", None, Some(a.at.timestamp_millis())),
        AttemptNext::RetryAt(t) => ("pending", Some(t.timestamp_millis()), None),
        AttemptNext::Failed => ("failed", None, None),
    }
}

pub async fn resend(
    conn: &mut SqliteConnection,
    what: Resend,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let done = match what {
        Resend::One(id) => sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL, delivered_at = NULL WHERE id = ?",
        )
        .bind(now_ms)
        .bind(id),
        Resend::FailedSince(t) => sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL WHERE status = 'failed' AND created_at >= ?",
        )
        .bind(now_ms)
        .bind(t.timestamp_millis()),
    }
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected())
}

pub async fn add_terminal(
    conn: &mut SqliteConnection,
    merchant_id: i64,
    tid: String,
    sealed: String,
    at_ms: i64,
) -> Result<StoreAdded, StoreError> {
    let done = sqlx::query(
        "INSERT INTO terminals (merchant_id, tid, secret_sealed, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (tid) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(&tid)
    .bind(&sealed)
    .bind(at_ms)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 1 {
        return Ok(StoreAdded::Added);
    }
    let row = sqlx::query("SELECT merchant_id, secret_sealed FROM terminals WHERE tid = ?")
        .bind(&tid)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    let owner: i64 = sqlx::Row::try_get(&row, 0).map_err(unavailable)?;
    if owner != merchant_id {
        return Err(StoreError::Conflict("tid belongs to another merchant"));
    }
    Ok(StoreAdded::Exists {
        sealed: sqlx::Row::try_get(&row, 1).map_err(unavailable)?,
    })
}

pub async fn execute(
    conn: &mut SqliteConnection,
    sql: &'static str,
    binds: Vec<Bind>,
) -> Result<u64, StoreError> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = match b {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    q.execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(unavailable)
}

/// A parameter of a simple statement run by the writer.
pub enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}
