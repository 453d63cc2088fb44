//! Payments and the changes that move their money on PostgreSQL: a change is a read and one
//! statement that swaps the payment on its version (`sql.rs`); a lost race decides again, and
//! repeated losses take the row lock.

use crate::writer::Statement;
use crate::{db_error, sql, Loaded, PgStore, Written, OPTIMISTIC_ATTEMPTS};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use tillgate_core::store::{Conflict, Guard, Inserted, MutateFn, Mutated, PaymentStore, Rejection};
use tillgate_core::*;
use tillgate_domain::{CancelState, PaymentState, RefundState};

#[async_trait]
impl PaymentStore for PgStore {
    async fn insert_payment(&self, p: NewPayment) -> Result<Inserted, StoreError> {
        let currency = p.amount.currency();
        let display = p.amount.to_string();
        let reference = p.reference;
        let q = sqlx::query(sql::INSERT_PAYMENT)
            .bind(p.transaction_no)
            .bind(p.merchant_id)
            .bind(p.merchant_no)
            .bind(p.store_no)
            .bind(reference.clone())
            .bind(p.amount.minor())
            .bind(currency.code().to_owned())
            .bind(p.settle_currency.code().to_owned())
            .bind(p.description)
            .bind(p.notify_url)
            .bind(p.fingerprint)
            .bind(p.created_at.timestamp_millis())
            .bind(p.expires_at.timestamp_millis())
            .bind(display)
            .bind(p.dialect.as_str())
            .bind(p.extra)
            .bind(PaymentState::Created.as_str());
        let statement = Statement::of(sql::INSERT_PAYMENT, q)?;
        if let Some(row) = self.writers.write(None, statement).await?.row() {
            return Ok(Inserted::Inserted(tillgate_store_sql::payment(&Loaded(
                row,
            ))?));
        }
        // The merchant's reference is taken (the unique index answered): the payment holding it.
        let key = PaymentKey::Reference(reference);
        let existing = self
            .payment(p.merchant_id, &key)
            .await?
            .ok_or_else(|| StoreError::Corrupt("reference conflict without a payment".into()))?;
        Ok(Inserted::Existing(existing))
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
        let q = sqlx::query(query).bind(value).bind(merchant_id);
        self.one(q, tillgate_store_sql::payment).await
    }

    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM payments WHERE transaction_no = $1").bind(transaction_no);
        self.one(q, tillgate_store_sql::payment).await
    }

    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM payments WHERE id = $1").bind(payment_id);
        self.one(q, tillgate_store_sql::payment).await
    }

    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY id").bind(payment_id);
        self.all(q, tillgate_store_sql::refund).await
    }

    async fn payment_with_refunds(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<(PaymentRecord, Vec<RefundRecord>)>, StoreError> {
        // One statement: the payment's row, and its refunds as one JSON array beside it (whole
        // rows, so a column added to refunds is read without a change here).
        const BY_NO: &str = "SELECT p.*, COALESCE((SELECT jsonb_agg(to_jsonb(r) ORDER BY r.id) \
            FROM refunds r WHERE r.payment_id = p.id), '[]'::jsonb)::text AS refunds_json \
            FROM payments p WHERE p.transaction_no = $1 AND p.merchant_id = $2";
        const BY_REFERENCE: &str = "SELECT p.*, COALESCE((SELECT jsonb_agg(to_jsonb(r) \
            ORDER BY r.id) FROM refunds r WHERE r.payment_id = p.id), '[]'::jsonb)::text \
            AS refunds_json FROM payments p WHERE p.reference = $1 AND p.merchant_id = $2";
        let (query, value) = match key {
            PaymentKey::TransactionNo(n) => (BY_NO, n),
            PaymentKey::Reference(r) => (BY_REFERENCE, r),
        };
        let q = sqlx::query(query).bind(value).bind(merchant_id);
        self.one(q, |row| {
            let payment = tillgate_store_sql::payment(row)?;
            let text: String = tillgate_store_sql::Columns::text(row, "refunds_json")?;
            let refunds = crate::json_rows(&text)?
                .iter()
                .map(|r| tillgate_store_sql::refund(&crate::JsonRow(r)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((payment, refunds))
        })
        .await
    }

    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND refund_reference = $2")
                .bind(merchant_id)
                .bind(refund_reference);
        self.one(q, tillgate_store_sql::refund).await
    }

    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND refund_no = $2")
            .bind(merchant_id)
            .bind(refund_no);
        self.one(q, tillgate_store_sql::refund).await
    }

    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM cancels WHERE payment_id = $1 ORDER BY id").bind(payment_id);
        self.all(q, tillgate_store_sql::cancel).await
    }

    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError> {
        let q = sqlx::query(
            "SELECT * FROM cancels WHERE cancel_no = $1 AND ($2::bigint IS NULL OR merchant_id = $2)",
        )
        .bind(cancel_no)
        .bind(merchant_id);
        self.one(q, tillgate_store_sql::cancel).await
    }

    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM events WHERE payment_id = $1 ORDER BY id").bind(payment_id);
        self.all(q, tillgate_store_sql::event).await
    }

    async fn append_event(
        &self,
        payment_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO events (payment_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(payment_id)
        .bind(at.timestamp_millis())
        .bind(kind)
        .bind(detail);
        self.exec(q).await.map(drop)
    }

    async fn mutate_from(
        &self,
        payment: &PaymentRecord,
        mut decide: MutateFn,
    ) -> Result<Mutated, StoreError> {
        // One round trip instead of two when the caller's copy is still current; a lost swap or
        // a rejection (which may be the stale copy's doing) goes the usual way on a fresh read.
        match self.decide_and_write(payment.clone(), &mut decide).await {
            Ok(Ok((Written::Done(refund, cancel), payment))) => {
                return Ok(Mutated::Done {
                    payment,
                    refund,
                    cancel,
                })
            }
            // A failed write is answered as it is, never tried again here: its commit may be
            // in doubt (the connection went during COMMIT), and deciding again on a row it
            // already changed would change it twice. The caller's key makes its retry safe.
            Err(e) if !matches!(e, StoreError::Conflict(Conflict::Serialization)) => return Err(e),
            _ => {}
        }
        self.mutate(payment.id, decide).await
    }

    async fn mutate(&self, payment_id: i64, mut decide: MutateFn) -> Result<Mutated, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let rec = self.load(payment_id).await?;
            match self.decide_and_write(rec, &mut decide).await {
                Ok(Err(rejected)) => return Ok(rejected),
                Ok(Ok((Written::Done(refund, cancel), payment))) => {
                    return Ok(Mutated::Done {
                        payment,
                        refund,
                        cancel,
                    });
                }
                Ok(Ok((Written::Raced(Some(guard)), payment))) => {
                    if !self.guard_holds(guard).await? {
                        let fresh = self.load(payment_id).await.unwrap_or(payment);
                        return Ok(Mutated::Rejected(Rejection::Replay, fresh));
                    }
                    continue;
                }
                Ok(Ok((Written::Raced(None), _)))
                | Err(StoreError::Conflict(Conflict::Serialization)) => continue,
                Err(e) => return Err(e),
            }
        }
        self.mutate_locked(payment_id, &mut decide).await
    }

    async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.waiting(false, before, i64::MAX, limit).await
    }

    async fn due_queries(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.waiting(true, before, now.timestamp_millis(), limit)
            .await
    }

    async fn defer_query(&self, op: &Unresolved, next_at: DateTime<Utc>) -> Result<(), StoreError> {
        let (text, number) = tillgate_store_sql::defer_query(op);
        let text = crate::dollar_placeholders(text);
        let mut q = sqlx::query(&text)
            .bind(next_at.timestamp_millis())
            .bind(op.payment_id);
        if let Some(n) = number {
            q = q.bind(n);
        }
        self.exec(q).await.map(drop)
    }
}

impl PgStore {
    /// Operations in flight (see `tillgate_store_sql::waiting_sql`).
    async fn waiting(
        &self,
        due_first: bool,
        before: DateTime<Utc>,
        due_by_ms: i64,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let text = crate::dollar_placeholders(&tillgate_store_sql::waiting_sql(due_first));
        let q = sqlx::query(&text)
            .bind(before.timestamp_millis())
            .bind(limit.clamp(1, 10_000))
            .bind(due_by_ms);
        self.all(q, tillgate_store_sql::unresolved).await
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

    /// Runs the decision against `rec` and, unless it refuses, has a writer commit it (one
    /// statement, grouped with the other requests' writes).
    async fn decide_and_write(
        &self,
        rec: PaymentRecord,
        decide: &mut MutateFn,
    ) -> Result<Result<(Written, PaymentRecord), Mutated>, StoreError> {
        let (statement, outcome, rec) = match Self::decide(rec, decide)? {
            Ok(decided) => decided,
            Err(rejected) => return Ok(Err(rejected)),
        };
        let row = self.writers.write(Some(rec.id), statement).await?.row();
        Ok(Ok(Self::written(outcome, row, rec)?))
    }

    /// Runs the decision against `rec`: the refusal, or the statement that writes the change
    /// with how to read its answer and the record as it will be.
    #[allow(clippy::type_complexity)]
    fn decide(
        mut rec: PaymentRecord,
        decide: &mut MutateFn,
    ) -> Result<Result<(Statement, sql::Outcome, PaymentRecord), Mutated>, StoreError> {
        let before = rec.clone();
        let writes = match decide(&mut rec) {
            Ok(w) => w,
            Err(rejection) => return Ok(Err(Mutated::Rejected(rejection, before))),
        };
        let at = writes.at.unwrap_or(rec.updated_at);
        rec.updated_at = at;
        // The swap compares with the version read; the decision never moves it.
        rec.version = before.version;
        let (statement, outcome) = sql::write(&rec, rec.version, at.timestamp_millis(), &writes)?;
        Ok(Ok((statement, outcome, rec)))
    }

    /// The change's answer: on success the record takes its next version.
    fn written(
        outcome: sql::Outcome,
        row: Option<sqlx::postgres::PgRow>,
        mut rec: PaymentRecord,
    ) -> Result<(Written, PaymentRecord), StoreError> {
        let written = outcome.read(row)?;
        if let Written::Done(..) = written {
            rec.version += 1;
        }
        Ok((written, rec))
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
        Ok(match guard {
            Guard::RefundInProgress(_) => {
                state.and_then(RefundState::from_code) == Some(RefundState::InProgress)
            }
            Guard::CancelInProgress(_) => {
                state.and_then(CancelState::from_code) == Some(CancelState::InProgress)
            }
        })
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
        let written = match Self::decide(rec, decide)? {
            Err(rejected) => Err(rejected),
            Ok((statement, outcome, rec)) => {
                let row = statement
                    .query()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                Ok(Self::written(outcome, row, rec)?)
            }
        };
        match written {
            Err(rejected) => Ok(rejected),
            Ok((Written::Done(refund, cancel), payment)) => {
                tx.commit().await.map_err(db_error)?;
                self.operations.fetch_add(1, Ordering::Relaxed);
                Ok(Mutated::Done {
                    payment,
                    refund,
                    cancel,
                })
            }
            // Under the lock only the guard can have failed.
            Ok((Written::Raced(Some(_)), payment)) => {
                Ok(Mutated::Rejected(Rejection::Replay, payment))
            }
            Ok((Written::Raced(None), _)) => Err(StoreError::Corrupt(
                "a locked payment changed under its lock".into(),
            )),
        }
    }
}
