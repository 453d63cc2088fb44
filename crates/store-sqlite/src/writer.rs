//! The single writer: group commit of every queued write into one durable transaction.

use crate::{rows, unavailable};
use sqlx::SqliteConnection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tillgate_core::store::{CancelWrite, Inserted, MutateFn, Mutated, RefundWrite, Writes};
use tillgate_core::*;
use tokio::sync::{mpsc, oneshot};

/// The most operations one transaction carries.
pub const MAX_BATCH: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write waiting for the writer.
pub enum Job {
    UpsertMerchant(NewMerchant, Reply<MerchantRecord>),
    AddStore(i64, String, String, Reply<StoreAdded>),
    InsertPayment(Box<NewPayment>, Reply<Inserted>),
    Mutate(i64, MutateFn, Reply<Mutated>),
    /// Finish what was queued before, then stop.
    Shutdown,
}

/// A finished job's answer, held until the commit tells whether it stands. Answers live only
/// for one batch, so their differing sizes cost nothing worth boxing.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Merchant(Reply<MerchantRecord>, Result<MerchantRecord, StoreError>),
    Store(Reply<StoreAdded>, Result<StoreAdded, StoreError>),
    Payment(Reply<Inserted>, Result<Inserted, StoreError>),
    Mutated(Reply<Mutated>, Result<Mutated, StoreError>),
}

impl Answer {
    fn send(self, commit: &Result<(), StoreError>) {
        fn pick<T>(
            r: Result<T, StoreError>,
            commit: &Result<(), StoreError>,
        ) -> Result<T, StoreError> {
            match commit {
                Ok(()) => r,
                Err(e) => Err(e.clone()),
            }
        }
        // A caller that went away (its request was cancelled) simply misses the answer; the
        // write itself stands or falls with the commit.
        let _ = match self {
            Answer::Merchant(tx, r) => tx.send(pick(r, commit)).map_err(drop),
            Answer::Store(tx, r) => tx.send(pick(r, commit)).map_err(drop),
            Answer::Payment(tx, r) => tx.send(pick(r, commit)).map_err(drop),
            Answer::Mutated(tx, r) => tx.send(pick(r, commit)).map_err(drop),
        };
    }
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
        let mut answers = Vec::with_capacity(batch.len());
        let begun = exec(&mut conn, "BEGIN IMMEDIATE").await;
        for job in std::mem::take(&mut batch) {
            if let Job::Shutdown = job {
                stopping = true;
                continue;
            }
            let answer = match &begun {
                Ok(()) => run_job(&mut conn, job).await,
                Err(e) => refuse(job, e.clone()),
            };
            if let Some(a) = answer {
                answers.push(a);
            }
        }
        let commit = match begun {
            Ok(()) => match exec(&mut conn, "COMMIT").await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the batch is rolled back");
                    let _ = exec(&mut conn, "ROLLBACK").await;
                    Err(e)
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "could not begin a write transaction");
                Err(e)
            }
        };
        if commit.is_ok() {
            stats
                .operations
                .fetch_add(answers.len() as u64, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        for a in answers {
            a.send(&commit);
        }
    }
    let _ = sqlx::Connection::close(conn).await;
}

fn refuse(job: Job, e: StoreError) -> Option<Answer> {
    Some(match job {
        Job::UpsertMerchant(_, tx) => Answer::Merchant(tx, Err(e)),
        Job::AddStore(_, _, _, tx) => Answer::Store(tx, Err(e)),
        Job::InsertPayment(_, tx) => Answer::Payment(tx, Err(e)),
        Job::Mutate(_, _, tx) => Answer::Mutated(tx, Err(e)),
        Job::Shutdown => return None,
    })
}

/// Runs one job inside its own savepoint, so that its failure undoes only its own writes.
///
/// Boxed with an explicit `Send` bound: sqlx's executor futures otherwise trip the compiler's
/// higher-ranked lifetime inference when spawned.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn boxed<'a, T>(f: impl std::future::Future<Output = T> + Send + 'a) -> Boxed<'a, T> {
    Box::pin(f)
}

fn run_job(conn: &mut SqliteConnection, job: Job) -> Boxed<'_, Option<Answer>> {
    Box::pin(run_job_inner(conn, job))
}

async fn run_job_inner(conn: &mut SqliteConnection, job: Job) -> Option<Answer> {
    if let Err(e) = exec(conn, "SAVEPOINT op").await {
        return refuse(job, e);
    }
    let (answer, ok) = match job {
        Job::UpsertMerchant(m, tx) => {
            let r = boxed(upsert_merchant(conn, m)).await;
            let ok = r.is_ok();
            (Answer::Merchant(tx, r), ok)
        }
        Job::AddStore(merchant_id, store_no, sealed, tx) => {
            let r = boxed(add_store(conn, merchant_id, &store_no, &sealed)).await;
            let ok = r.is_ok();
            (Answer::Store(tx, r), ok)
        }
        Job::InsertPayment(p, tx) => {
            let r = boxed(insert_payment(conn, *p)).await;
            let ok = r.is_ok();
            (Answer::Payment(tx, r), ok)
        }
        Job::Mutate(id, decide, tx) => {
            let r = boxed(mutate(conn, id, decide)).await;
            let ok = r.is_ok();
            (Answer::Mutated(tx, r), ok)
        }
        Job::Shutdown => return None,
    };
    let end = if ok {
        exec(conn, "RELEASE op").await
    } else {
        match exec(conn, "ROLLBACK TO op").await {
            Ok(()) => exec(conn, "RELEASE op").await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = end {
        tracing::error!(error = %e, "savepoint could not be closed");
    }
    Some(answer)
}

async fn upsert_merchant(
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

async fn add_store(
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
    Ok(StoreAdded::Exists { token_sealed })
}

async fn insert_payment(
    conn: &mut SqliteConnection,
    p: NewPayment,
) -> Result<Inserted, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
         amount_minor, currency, settle_currency, state, description, notify_url, fingerprint, \
         created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?, ?, ?, ?, ?) \
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

async fn insert_event(
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

async fn mutate(
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
    let at = writes.at.unwrap_or(rec.updated_at);
    rec.updated_at = at;
    let at_ms = at.timestamp_millis();
    let p = &rec.payment;
    sqlx::query(
        "UPDATE payments SET state = ?, refunded_minor = ?, reserved_minor = ?, \
         cancel_in_flight = ?, paid_at = ?, pay_fingerprint = ?, vendor = ?, updated_at = ?, \
         version = version + 1 WHERE id = ?",
    )
    .bind(p.state().as_str())
    .bind(p.refunded().minor())
    .bind(p.reserved().minor())
    .bind(p.cancel_in_flight().map(|k| k.as_str()))
    .bind(p.paid_at().map(|t| t.timestamp_millis()))
    .bind(&rec.pay_fingerprint)
    .bind(&rec.vendor)
    .bind(at_ms)
    .bind(payment_id)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;

    let refund = match writes.refund {
        None => None,
        Some(RefundWrite::Insert(n)) => {
            let row = sqlx::query(
                "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
                 amount_minor, currency, state, fingerprint, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) RETURNING *",
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
    let cancel = match writes.cancel {
        None => None,
        Some(CancelWrite::Insert(n)) => {
            let row = sqlx::query(
                "INSERT INTO cancels (cancel_no, payment_id, merchant_id, kind, state, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?) RETURNING *",
            )
            .bind(&n.cancel_no)
            .bind(payment_id)
            .bind(rec.merchant_id)
            .bind(n.kind.as_str())
            .bind(at_ms)
            .bind(at_ms)
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
    for (kind, detail) in &writes.events {
        insert_event(conn, payment_id, at_ms, kind, detail).await?;
    }
    for o in &writes.outbox {
        sqlx::query(
            "INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot, \
             next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(rec.merchant_id)
        .bind(payment_id)
        .bind(&o.topic)
        .bind(&o.target_url)
        .bind(&o.snapshot)
        .bind(at_ms)
        .bind(at_ms)
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
