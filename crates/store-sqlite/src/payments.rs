//! Payments and the changes that move their money: reads on the caller's thread, and the
//! writes the writer runs inside its batch (a payment's insert, and `mutate`: the decision
//! and everything it writes, in one savepoint).

use crate::rows;
use crate::writer::{self, native, one, Bind};
use crate::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tillgate_core::store::{
    CancelWrite, FinishCommand, Guard, Inserted, MutateFn, Mutated, PaymentStore, RefundWrite,
    Writes,
};
use tillgate_core::terminal::{CommandState, NewCommand};
use tillgate_core::*;
use tillgate_domain::{CancelState, PaymentState, RefundState};

/// A merchant's payment by its key: the statement and the key's value.
fn payment_sql(key: &PaymentKey) -> (&'static str, &String) {
    match key {
        PaymentKey::TransactionNo(n) => (
            "SELECT * FROM payments WHERE transaction_no = ? AND merchant_id = ?",
            n,
        ),
        PaymentKey::Reference(r) => (
            "SELECT * FROM payments WHERE reference = ? AND merchant_id = ?",
            r,
        ),
    }
}

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn insert_payment(&self, p: NewPayment) -> Result<Inserted, StoreError> {
        self.write(move |conn| insert_payment(conn, p)).await
    }

    async fn payment(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let (sql, value) = payment_sql(key);
        self.read_one(sql, params![value, merchant_id], |r| rows::payment(r))
    }

    async fn payment_with_refunds(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<(PaymentRecord, Vec<RefundRecord>)>, StoreError> {
        let (sql, value) = payment_sql(key);
        // One read connection, one transaction: the refunds belong to the payment as read.
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(native)?;
            let Some(payment) =
                writer::one(&tx, sql, params![value, merchant_id], |r| rows::payment(r))?
            else {
                return Ok(None);
            };
            let refunds = writer::all(
                &tx,
                "SELECT * FROM refunds WHERE payment_id = ? ORDER BY id",
                params![payment.id],
                |r| rows::refund(r),
            )?;
            Ok(Some((payment, refunds)))
        })
    }

    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM payments WHERE transaction_no = ?",
            params![transaction_no],
            |r| rows::payment(r),
        )
    }

    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM payments WHERE id = ?",
            params![payment_id],
            |r| rows::payment(r),
        )
    }

    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM refunds WHERE payment_id = ? ORDER BY id",
            params![payment_id],
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
            params![merchant_id, refund_reference],
            |r| rows::refund(r),
        )
    }

    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM refunds WHERE merchant_id = ? AND refund_no = ?",
            params![merchant_id, refund_no],
            |r| rows::refund(r),
        )
    }

    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM cancels WHERE payment_id = ? ORDER BY id",
            params![payment_id],
            |r| rows::cancel(r),
        )
    }

    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM cancels WHERE cancel_no = ? AND (? IS NULL OR merchant_id = ?)",
            params![cancel_no, merchant_id, merchant_id],
            |r| rows::cancel(r),
        )
    }

    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM events WHERE payment_id = ? ORDER BY id",
            params![payment_id],
            |r| rows::event(r),
        )
    }

    async fn append_event(
        &self,
        payment_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (kind, detail) = (kind.to_owned(), detail.to_owned());
        let at_ms = at.timestamp_millis();
        self.write(move |conn| insert_event(conn, payment_id, at_ms, &kind, &detail))
            .await
    }

    async fn mutate(&self, payment_id: i64, decide: MutateFn) -> Result<Mutated, StoreError> {
        self.write(move |conn| mutate(conn, payment_id, decide))
            .await
    }

    async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.waiting(false, before, i64::MAX, limit)
    }

    async fn due_queries(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.waiting(true, before, now.timestamp_millis(), limit)
    }

    async fn defer_query(&self, op: &Unresolved, next_at: DateTime<Utc>) -> Result<(), StoreError> {
        let (sql, number) = tillgate_store_sql::defer_query(op);
        let mut binds = vec![
            Bind::Int(Some(next_at.timestamp_millis())),
            Bind::Int(Some(op.payment_id)),
        ];
        if let Some(n) = number {
            binds.push(Bind::Text(Some(n.to_owned())));
        }
        self.write(move |conn| writer::execute(conn, sql, binds).map(drop))
            .await
    }
}

impl SqliteStore {
    /// Operations in flight (see `tillgate_store_sql::waiting_sql`).
    fn waiting(
        &self,
        due_first: bool,
        before: DateTime<Utc>,
        due_by_ms: i64,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.read_all(
            &tillgate_store_sql::waiting_sql(due_first),
            params![before.timestamp_millis(), limit.clamp(1, 10_000), due_by_ms],
            |r| tillgate_store_sql::unresolved(r),
        )
    }
}

fn insert_payment(conn: &Connection, p: NewPayment) -> Result<Inserted, StoreError> {
    let created = p.created_at.timestamp_millis();
    let inserted = one(
        conn,
        "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
         amount_minor, currency, settle_currency, state, description, notify_url, fingerprint, \
         created_at, updated_at, expires_at, dialect, extra) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
            PaymentState::Created.as_str(),
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

fn insert_event(
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

/// Loads the payment, runs the decision, and writes what it asks for; runs on the writer
/// inside the job's savepoint, so a failure half-way undoes only this change.
pub(crate) fn mutate(
    conn: &Connection,
    payment_id: i64,
    mut decide: MutateFn,
) -> Result<Mutated, StoreError> {
    let mut rec = one(
        conn,
        "SELECT * FROM payments WHERE id = ?",
        [payment_id],
        |r| rows::payment(r),
    )?
    .ok_or(StoreError::NotFound)?;
    let before = rec.clone();
    let writes: Writes = match decide(&mut rec) {
        Ok(w) => w,
        Err(rejection) => return Ok(Mutated::Rejected(rejection, before)),
    };
    if let Some(guard) = writes.guard {
        if !guard_holds(conn, guard)? {
            return Ok(Mutated::Rejected(Rejection::Replay, before));
        }
    }
    let at = writes.at.unwrap_or(rec.updated_at);
    rec.updated_at = at;
    let at_ms = at.timestamp_millis();
    update_payment(conn, &mut rec, &writes, at_ms)?;
    let refund = match &writes.refund {
        None => None,
        Some(w) => Some(write_refund(conn, &rec, w, at_ms)?),
    };
    if let (true, Some(r), Some(RefundWrite::Insert(_))) = (writes.hold, &refund, &writes.refund) {
        hold_refund(conn, &rec, r, at_ms)?;
    }
    let cancel = match &writes.cancel {
        None => None,
        Some(w) => Some(write_cancel(conn, &rec, w, at_ms)?),
    };
    if let Some(c) = &writes.command {
        insert_command(conn, payment_id, cancel.as_ref().map(|x| x.id), c, at_ms)?;
    }
    if let Some(f) = &writes.finish_command {
        finish_command(conn, f, at_ms)?;
    }
    for (kind, detail) in &writes.events {
        insert_event(conn, payment_id, at_ms, kind, detail)?;
    }
    for o in &writes.outbox {
        insert_outbox(conn, &rec, o, at_ms)?;
    }
    Ok(Mutated::Done {
        payment: rec,
        refund,
        cancel,
    })
}

/// Writes the pending approval of a refund held for one (asked through a merchant API).
fn hold_refund(
    conn: &Connection,
    rec: &PaymentRecord,
    refund: &RefundRecord,
    at_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO refund_approvals (payment_id, merchant_id, transaction_no, amount_minor, \
         currency, reason, form_key, requested_by, requested_login, requested_at, state, \
         refund_id) VALUES (?, ?, ?, ?, ?, '', 'api-' || ?, 0, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rec.id,
            rec.merchant_id,
            rec.transaction_no,
            refund.amount.minor(),
            refund.amount.currency().code(),
            refund.refund_no,
            tillgate_core::console::API_REQUESTER,
            at_ms,
            tillgate_core::console::ApprovalState::Pending.as_str(),
            refund.id,
        ])
    })
    .map(drop)
    .map_err(native)
}

/// True when the refund or cancel a change requires is still in progress.
fn guard_holds(conn: &Connection, guard: Guard) -> Result<bool, StoreError> {
    let (sql, id) = match guard {
        Guard::RefundInProgress(id) => ("SELECT state FROM refunds WHERE id = ?", id),
        Guard::CancelInProgress(id) => ("SELECT state FROM cancels WHERE id = ?", id),
    };
    let state: Option<i64> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(native)?;
    Ok(match guard {
        Guard::RefundInProgress(_) => {
            state.and_then(RefundState::from_code) == Some(RefundState::InProgress)
        }
        Guard::CancelInProgress(_) => {
            state.and_then(CancelState::from_code) == Some(CancelState::InProgress)
        }
    })
}

/// Writes the payment's decided state. `created_at` is written only when the change moves it
/// (the sandbox's ageing, which moves `expires_at` by as much), never from the record a
/// decision ran on.
fn update_payment(
    conn: &Connection,
    rec: &mut PaymentRecord,
    writes: &Writes,
    at_ms: i64,
) -> Result<(), StoreError> {
    let p = &rec.payment;
    conn.prepare_cached(
        "UPDATE payments SET state = ?, refunded_minor = ?, reserved_minor = ?, \
         cancel_in_flight = ?, paid_at = ?, pay_fingerprint = ?, vendor = ?, updated_at = ?, \
         expires_at = expires_at - COALESCE(created_at - ?, 0), \
         created_at = COALESCE(?, created_at), version = version + 1 WHERE id = ?",
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
            writes.created_at.map(|t| t.timestamp_millis()),
            writes.created_at.map(|t| t.timestamp_millis()),
            rec.id,
        ])
    })
    .map_err(native)?;
    rec.version += 1;
    Ok(())
}

fn write_refund(
    conn: &Connection,
    rec: &PaymentRecord,
    write: &RefundWrite,
    at_ms: i64,
) -> Result<RefundRecord, StoreError> {
    let written = match write {
        RefundWrite::Insert(n) => one(
            conn,
            "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
             amount_minor, currency, state, fingerprint, created_at, updated_at, notify_url, \
             extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            params![
                n.refund_no,
                rec.id,
                rec.merchant_id,
                n.refund_reference,
                n.amount.minor(),
                n.amount.currency().code(),
                RefundState::InProgress.code(),
                n.fingerprint,
                at_ms,
                at_ms,
                n.notify_url,
                n.extra,
            ],
            |r| rows::refund(r),
        )?,
        RefundWrite::SetState { refund_id, state } => one(
            conn,
            "UPDATE refunds SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
             RETURNING *",
            params![state.code(), at_ms, refund_id, rec.id],
            |r| rows::refund(r),
        )?,
    };
    written.ok_or_else(|| StoreError::Corrupt("refund row not written".into()))
}

fn write_cancel(
    conn: &Connection,
    rec: &PaymentRecord,
    write: &CancelWrite,
    at_ms: i64,
) -> Result<CancelRecord, StoreError> {
    let written = match write {
        CancelWrite::Insert(n) => one(
            conn,
            "INSERT INTO cancels (cancel_no, payment_id, merchant_id, kind, state, \
             created_at, updated_at, notify_url, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING *",
            params![
                n.cancel_no,
                rec.id,
                rec.merchant_id,
                n.kind.as_str(),
                CancelState::InProgress.code(),
                at_ms,
                at_ms,
                n.notify_url,
                n.extra,
            ],
            |r| rows::cancel(r),
        )?,
        CancelWrite::SetState { cancel_id, state } => one(
            conn,
            "UPDATE cancels SET state = ?, updated_at = ? WHERE id = ? AND payment_id = ? \
             RETURNING *",
            params![state.code(), at_ms, cancel_id, rec.id],
            |r| rows::cancel(r),
        )?,
    };
    written.ok_or_else(|| StoreError::Corrupt("cancel row not written".into()))
}

fn insert_command(
    conn: &Connection,
    payment_id: i64,
    cancel_id: Option<i64>,
    c: &NewCommand,
    at_ms: i64,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(&c.command)
        .map_err(|e| StoreError::Corrupt(format!("command payload: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO terminal_commands (command_id, tid, kind, payment_id, cancel_id, payload, \
         state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.command.id,
            c.tid,
            c.command.kind.as_str(),
            payment_id,
            cancel_id,
            payload,
            CommandState::Open.as_str(),
            at_ms,
            at_ms,
        ])
    })
    .map(drop)
    .map_err(native)
}

/// Marks an open command done; a command done already stays as it is.
pub(crate) fn finish_command(
    conn: &Connection,
    f: &FinishCommand,
    at_ms: i64,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "UPDATE terminal_commands SET state = ?, outcome = ?, message = ?, updated_at = ? \
         WHERE command_id = ? AND state = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            CommandState::Done.as_str(),
            f.outcome.as_str(),
            f.message,
            at_ms,
            f.command_id,
            CommandState::Open.as_str(),
        ])
    })
    .map(|n| n == 1)
    .map_err(native)
}

fn insert_outbox(
    conn: &Connection,
    rec: &PaymentRecord,
    o: &tillgate_core::store::OutboxWrite,
    at_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot, \
         next_attempt_at, created_at, dialect) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rec.merchant_id,
            rec.id,
            o.topic.as_str(),
            o.target_url,
            o.snapshot,
            o.first_attempt_at.timestamp_millis(),
            at_ms,
            o.dialect.as_str(),
        ])
    })
    .map(drop)
    .map_err(native)
}
