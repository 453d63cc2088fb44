//! The write statements: each change of a payment is one statement of data-modifying CTEs,
//! guarded by a compare-and-swap on the payment's version.

use crate::writer::Statement;
use crate::{shape, Loaded, Written};
use sqlx::postgres::PgRow;
use tillgate_core::console::{ApprovalState, API_REQUESTER};
use tillgate_core::store::{CancelWrite, Guard, RefundWrite, Writes};
use tillgate_core::terminal::CommandState;
use tillgate_core::{PaymentRecord, StoreError};
use tillgate_domain::{CancelState, RefundState};

/// Inserts a payment and its "created" event unless the merchant's reference is taken.
pub const INSERT_PAYMENT: &str = "\
WITH p AS (
    INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference,
        amount_minor, currency, settle_currency, state, description, notify_url, fingerprint,
        created_at, updated_at, expires_at, dialect, extra)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $17, $9, $10, $11, $12, $12, $13, $15, $16)
    ON CONFLICT (merchant_id, reference) DO NOTHING
    RETURNING *),
e AS (
    INSERT INTO events (payment_id, at, kind, detail)
    SELECT id, $12, 'payment.created', $14 FROM p)
SELECT * FROM p";

/// The part every change shares: the swap of the payment row (guarded by its version and, when
/// the change has one, the refund or cancel it requires still in progress), its events, outbox
/// rows and the terminal command it finishes. Parameters $1..$18 and $26..$39; the refund or
/// cancel part uses $19..$25. States are bound from the domain's values ($33, $34, $38, $39),
/// never spelled in the text.
macro_rules! base {
    () => {
        "WITH u AS (
    UPDATE payments SET state = $3, refunded_minor = $4, reserved_minor = $5,
        cancel_in_flight = $6, paid_at = $7, pay_fingerprint = $8, vendor = $9,
        updated_at = $10, expires_at = expires_at - COALESCE(created_at - $26, 0),
        created_at = COALESCE($26, created_at), version = version + 1
    WHERE id = $1 AND version = $2
      AND ($31::bigint IS NULL OR EXISTS (SELECT 1 FROM refunds WHERE id = $31 AND state = $33))
      AND ($32::bigint IS NULL OR EXISTS (SELECT 1 FROM cancels WHERE id = $32 AND state = $34))
    RETURNING id),
f AS (
    UPDATE terminal_commands SET state = $38, outcome = $36, message = $37, updated_at = $10
    WHERE command_id = $35 AND state = $39 AND EXISTS (SELECT 1 FROM u)),
e AS (
    INSERT INTO events (payment_id, at, kind, detail)
    SELECT u.id, $10, x.k, x.d FROM u, unnest($12::text[], $13::text[]) AS x(k, d)),
o AS (
    INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot,
        next_attempt_at, created_at, dialect)
    SELECT $11, u.id, y.t, y.url, y.snap, y.due, $10, y.dialect
    FROM u, unnest($14::text[], $15::text[], $16::text[], $17::bigint[], $18::text[])
        AS y(t, url, snap, due, dialect))"
    };
}

/// The terminal command written with a change (parameters $27..$30, NULL when none).
macro_rules! command_cte {
    () => {
        ",
t AS (
    INSERT INTO terminal_commands (command_id, tid, kind, payment_id, cancel_id, payload,
        state, created_at, updated_at)
    SELECT $27, $28, $29, u.id, NULL, $30, $39, $10, $10 FROM u WHERE $27::text IS NOT NULL)"
    };
}

const PAYMENT_ONLY: &str = concat!(
    base!(),
    command_cte!(),
    "\nSELECT count(*) AS updated FROM u"
);

const REFUND_INSERT: &str = concat!(
    base!(),
    ",
r AS (
    INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, amount_minor,
        currency, state, fingerprint, created_at, updated_at, notify_url, extra)
    SELECT $19, u.id, $11, $20, $21, $22, $33, $23, $10, $10, $24, $25 FROM u
    RETURNING *),
h AS (
    INSERT INTO refund_approvals (payment_id, merchant_id, transaction_no, amount_minor,
        currency, reason, form_key, requested_by, requested_login, requested_at, state,
        refund_id)
    SELECT r.payment_id, r.merchant_id, p.transaction_no, r.amount_minor, r.currency, '',
        'api-' || r.refund_no, 0, $41, $10, $40, r.id
    FROM r JOIN payments p ON p.id = r.payment_id WHERE $40::text IS NOT NULL)",
    command_cte!(),
    "
SELECT * FROM r"
);

const REFUND_STATE: &str = concat!(
    base!(),
    ",
r AS (
    UPDATE refunds SET state = $20, updated_at = $10
    WHERE id = $19 AND payment_id = $1 AND EXISTS (SELECT 1 FROM u)
    RETURNING *)",
    command_cte!(),
    "
SELECT * FROM r"
);

const CANCEL_INSERT: &str = concat!(
    base!(),
    ",
c AS (
    INSERT INTO cancels (cancel_no, payment_id, merchant_id, kind, state, created_at, updated_at,
        notify_url, extra)
    SELECT $19, u.id, $11, $20, $34, $10, $10, $21, $22 FROM u
    RETURNING *),
t AS (
    INSERT INTO terminal_commands (command_id, tid, kind, payment_id, cancel_id, payload,
        state, created_at, updated_at)
    SELECT $27, $28, $29, c.payment_id, c.id, $30, $39, $10, $10 FROM c WHERE $27::text IS NOT NULL)
SELECT * FROM c"
);

const CANCEL_STATE: &str = concat!(
    base!(),
    ",
c AS (
    UPDATE cancels SET state = $20, updated_at = $10
    WHERE id = $19 AND payment_id = $1 AND EXISTS (SELECT 1 FROM u)
    RETURNING *)",
    command_cte!(),
    "
SELECT * FROM c"
);

/// Which statement a change takes, and so what its row says.
#[derive(Debug, Clone, Copy)]
enum Shape {
    PaymentOnly,
    Refund,
    Cancel,
}

/// How to read what a change's statement answered.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    shape: Shape,
    guard: Option<Guard>,
}

impl Outcome {
    /// What the statement's row (none: nothing was written) says about the change.
    pub fn read(self, row: Option<PgRow>) -> Result<Written, StoreError> {
        let Some(row) = row else {
            return Ok(Written::Raced(self.guard));
        };
        let loaded = Loaded(row);
        Ok(match self.shape {
            Shape::PaymentOnly => {
                if tillgate_store_sql::Columns::int(&loaded, "updated")? == 1 {
                    Written::Done(None, None)
                } else {
                    Written::Raced(self.guard)
                }
            }
            Shape::Refund => Written::Done(Some(tillgate_store_sql::refund(&loaded)?), None),
            Shape::Cancel => Written::Done(None, Some(tillgate_store_sql::cancel(&loaded)?)),
        })
    }
}

/// The statement that writes `rec` (which was read at `version`) with everything the decision
/// asked for, and how to read its answer.
pub fn write(
    rec: &PaymentRecord,
    version: i64,
    at_ms: i64,
    writes: &Writes,
) -> Result<(Statement, Outcome), StoreError> {
    let (refund, cancel) = shape(writes)?;
    let (text, shape) = match (refund, cancel) {
        (None, None) => (PAYMENT_ONLY, Shape::PaymentOnly),
        (Some(RefundWrite::Insert(_)), _) => (REFUND_INSERT, Shape::Refund),
        (Some(RefundWrite::SetState { .. }), _) => (REFUND_STATE, Shape::Refund),
        (_, Some(CancelWrite::Insert(_))) => (CANCEL_INSERT, Shape::Cancel),
        (_, Some(CancelWrite::SetState { .. })) => (CANCEL_STATE, Shape::Cancel),
    };
    let q = bind_payment(sqlx::query(text), rec, version, at_ms, writes);
    let q = pad_to_25(bind_order(q, refund, cancel), refund, cancel);
    // $40, $41: the approval a held refund waits for (NULL: not held).
    let q = bind_tail(q, writes)?
        .bind(writes.hold.then_some(ApprovalState::Pending.as_str()))
        .bind(API_REQUESTER);
    let outcome = Outcome {
        shape,
        guard: writes.guard,
    };
    Ok((Statement::of(text, q)?, outcome))
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// $1..$18: the payment's swap, its events and outbox rows.
fn bind_payment<'q>(
    q: PgQuery<'q>,
    rec: &PaymentRecord,
    version: i64,
    at_ms: i64,
    writes: &Writes,
) -> PgQuery<'q> {
    let p = &rec.payment;
    let (kinds, details): (Vec<String>, Vec<String>) = writes.events.iter().cloned().unzip();
    let outbox = &writes.outbox;
    let topics: Vec<&str> = outbox.iter().map(|o| o.topic.as_str()).collect();
    let urls: Vec<String> = outbox.iter().map(|o| o.target_url.clone()).collect();
    let snapshots: Vec<String> = outbox.iter().map(|o| o.snapshot.clone()).collect();
    let dues: Vec<i64> = outbox
        .iter()
        .map(|o| o.first_attempt_at.timestamp_millis())
        .collect();
    let dialects: Vec<&str> = outbox.iter().map(|o| o.dialect.as_str()).collect();
    q.bind(rec.id)
        .bind(version)
        .bind(p.state().as_str())
        .bind(p.refunded().minor())
        .bind(p.reserved().minor())
        .bind(p.cancel_in_flight().map(|k| k.as_str()))
        .bind(p.paid_at().map(|t| t.timestamp_millis()))
        .bind(rec.pay_fingerprint.clone())
        .bind(rec.vendor.clone())
        .bind(at_ms)
        .bind(rec.merchant_id)
        .bind(kinds)
        .bind(details)
        .bind(topics)
        .bind(urls)
        .bind(snapshots)
        .bind(dues)
        .bind(dialects)
}

/// $19 on: the refund or cancel row the change writes.
fn bind_order<'q>(
    q: PgQuery<'q>,
    refund: Option<&RefundWrite>,
    cancel: Option<&CancelWrite>,
) -> PgQuery<'q> {
    match (refund, cancel) {
        (Some(RefundWrite::Insert(n)), _) => q
            .bind(n.refund_no.clone())
            .bind(n.refund_reference.clone())
            .bind(n.amount.minor())
            .bind(n.amount.currency().code().to_owned())
            .bind(n.fingerprint.clone())
            .bind(n.notify_url.clone())
            .bind(n.extra.clone()),
        (Some(RefundWrite::SetState { refund_id, state }), _) => {
            q.bind(*refund_id).bind(state.code())
        }
        (_, Some(CancelWrite::Insert(n))) => q
            .bind(n.cancel_no.clone())
            .bind(n.kind.as_str())
            .bind(n.notify_url.clone())
            .bind(n.extra.clone()),
        (_, Some(CancelWrite::SetState { cancel_id, state })) => {
            q.bind(*cancel_id).bind(state.code())
        }
        (None, None) => q,
    }
}

/// $26..$39: the creation time the sandbox's ageing sets, the terminal command written, the
/// guard, the command finished, and the states these compare with. Bound after the padding so
/// that each shape's own parameters keep their numbers (the driver sends every parameter's
/// type, so numbers a shape does not use are harmless).
fn bind_tail<'q>(q: PgQuery<'q>, writes: &Writes) -> Result<PgQuery<'q>, StoreError> {
    let command = match &writes.command {
        Some(c) => Some((
            c.command.id.clone(),
            c.tid.clone(),
            c.command.kind.as_str(),
            serde_json::to_string(&c.command)
                .map_err(|e| StoreError::Corrupt(format!("command payload: {e}")))?,
        )),
        None => None,
    };
    let finish = writes.finish_command.as_ref();
    Ok(q.bind(writes.created_at.map(|t| t.timestamp_millis()))
        .bind(command.as_ref().map(|c| c.0.clone()))
        .bind(command.as_ref().map(|c| c.1.clone()))
        .bind(command.as_ref().map(|c| c.2))
        .bind(command.as_ref().map(|c| c.3.clone()))
        .bind(match writes.guard {
            Some(Guard::RefundInProgress(id)) => Some(id),
            _ => None,
        })
        .bind(match writes.guard {
            Some(Guard::CancelInProgress(id)) => Some(id),
            _ => None,
        })
        .bind(RefundState::InProgress.code())
        .bind(CancelState::InProgress.code())
        .bind(finish.map(|f| f.command_id.clone()))
        .bind(finish.map(|f| f.outcome.as_str()))
        .bind(finish.and_then(|f| f.message.clone()))
        .bind(CommandState::Done.as_str())
        .bind(CommandState::Open.as_str()))
}

/// Binds NULLs up to parameter $25, so that $26 is the same for every statement shape.
fn pad_to_25<'q>(
    mut q: PgQuery<'q>,
    refund: Option<&RefundWrite>,
    cancel: Option<&CancelWrite>,
) -> PgQuery<'q> {
    let bound = 18
        + match (refund, cancel) {
            (Some(RefundWrite::Insert(_)), _) => 7,
            (Some(RefundWrite::SetState { .. }), _) => 2,
            (_, Some(CancelWrite::Insert(_))) => 4,
            (_, Some(CancelWrite::SetState { .. })) => 2,
            (None, None) => 0,
        };
    for _ in bound..25 {
        q = q.bind(None::<i64>);
    }
    q
}
