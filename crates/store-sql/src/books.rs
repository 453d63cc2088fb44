//! The books' statements, the same on both backends (SQLite `?N` placeholders; the PostgreSQL
//! backend rewrites them as `$N`), and their rows as records.
//!
//! A booked operation's time: a payment's `paid_at` (a declined or pending one's `updated_at`),
//! a refund's or cancel's `updated_at`. Pages are ordered by (that time, id), which the
//! `*_booked` indexes of migration 9 serve, so each page is one index range scan.

use crate::{corrupt, currency, time, Columns};
use tillgate_core::books::*;
use tillgate_core::StoreError;
use tillgate_domain::{CancelKind, CancelState, Money, PaymentState, RefundState};

/// The parts of a kind's statement: its select list and tables, its time and id expressions,
/// and the condition that keeps only operations the wallet was asked for.
fn parts(kind: BookKind) -> (String, &'static str, &'static str, String) {
    let in_flight = RefundState::InProgress.code();
    let (ok, failed) = (RefundState::Succeeded.code(), RefundState::Failed.code());
    debug_assert_eq!(ok, CancelState::Succeeded.code());
    match kind {
        BookKind::Payment => (
            format!(
                "SELECT p.id AS id, p.transaction_no AS number, p.transaction_no AS transaction_no, \
                 p.merchant_no AS merchant_no, p.store_no AS store_no, p.reference AS reference, \
                 CAST(NULL AS TEXT) AS cancel_kind, p.amount_minor AS amount_minor, \
                 p.currency AS currency, \
                 CASE WHEN p.paid_at IS NOT NULL THEN 'approved' \
                      WHEN p.state = '{failed_state}' THEN 'declined' ELSE 'pending' END AS outcome, \
                 COALESCE(p.paid_at, p.updated_at) AS booked_at, \
                 CAST(CASE WHEN p.fingerprint = '{fixture}' THEN 0 ELSE 1 END AS BIGINT) AS at_wallet \
                 FROM payments p",
                failed_state = PaymentState::Failed.as_str(),
                fixture = SANDBOX_FIXTURE,
            ),
            "COALESCE(p.paid_at, p.updated_at)",
            "p.id",
            format!(
                "(p.paid_at IS NOT NULL OR p.state IN ('{}', '{}'))",
                PaymentState::Failed.as_str(),
                PaymentState::Pending.as_str()
            ),
        ),
        BookKind::Refund => (
            format!(
                "SELECT r.id AS id, r.refund_no AS number, p.transaction_no AS transaction_no, \
                 p.merchant_no AS merchant_no, p.store_no AS store_no, \
                 r.refund_reference AS reference, CAST(NULL AS TEXT) AS cancel_kind, \
                 r.amount_minor AS amount_minor, r.currency AS currency, \
                 CASE r.state WHEN {ok} THEN 'approved' WHEN {failed} THEN 'declined' \
                      ELSE 'pending' END AS outcome, \
                 r.updated_at AS booked_at, CAST(1 AS BIGINT) AS at_wallet \
                 FROM refunds r JOIN payments p ON p.id = r.payment_id"
            ),
            "r.updated_at",
            "r.id",
            format!(
                "r.state IN ({in_flight}, {ok}, {failed}) AND NOT EXISTS ({})",
                crate::never_sent("r")
            ),
        ),
        BookKind::Cancel => (
            format!(
                "SELECT c.id AS id, c.cancel_no AS number, p.transaction_no AS transaction_no, \
                 p.merchant_no AS merchant_no, p.store_no AS store_no, \
                 CAST(NULL AS TEXT) AS reference, c.kind AS cancel_kind, \
                 p.amount_minor AS amount_minor, p.currency AS currency, \
                 CASE c.state WHEN {ok} THEN 'approved' WHEN {failed} THEN 'declined' \
                      ELSE 'pending' END AS outcome, \
                 c.updated_at AS booked_at, CAST(1 AS BIGINT) AS at_wallet \
                 FROM cancels c JOIN payments p ON p.id = c.payment_id"
            ),
            "c.updated_at",
            "c.id",
            format!("c.state IN ({in_flight}, {ok}, {failed})"),
        ),
    }
}

/// One page of `kind`: `?1` from (ms), `?2` to (ms), `?3` merchant id or NULL, `?4` store
/// number or NULL, `?5`/`?6` the (time, id) to start after, `?7` the page size.
///
/// Two index seeks, never a scan from the start of the range: the rest of the rows at the
/// previous page's last time (`time = ?5 AND id > ?6`, in id order), then the rows after that
/// time; so a page costs the same whether many rows share one millisecond or none do.
pub fn entries_sql(kind: BookKind) -> String {
    let (select, at, id, wanted) = parts(kind);
    let merchant = match kind {
        BookKind::Payment => "p.merchant_id",
        BookKind::Refund => "r.merchant_id",
        BookKind::Cancel => "c.merchant_id",
    };
    let common = format!(
        "{at} >= ?1 AND {at} < ?2 AND (?3 IS NULL OR {merchant} = ?3) \
         AND (?4 IS NULL OR p.store_no = ?4) AND {wanted}"
    );
    format!(
        "SELECT * FROM (\
           SELECT * FROM ({select} WHERE {at} = ?5 AND {id} > ?6 AND {common} \
             ORDER BY {id} LIMIT ?7) same_time \
           UNION ALL \
           SELECT * FROM ({select} WHERE {at} > ?5 AND {common} \
             ORDER BY {at}, {id} LIMIT ?7) later\
         ) page ORDER BY booked_at, id LIMIT ?7"
    )
}

/// How many entries of `kind` the pages of [`entries_sql`] hold together: its first four
/// parameters.
pub fn count_sql(kind: BookKind) -> String {
    let (select, at, _, wanted) = parts(kind);
    let merchant = match kind {
        BookKind::Payment => "p.merchant_id",
        BookKind::Refund => "r.merchant_id",
        BookKind::Cancel => "c.merchant_id",
    };
    format!(
        "SELECT COUNT(*) AS n FROM ({select} WHERE {at} >= ?1 AND {at} < ?2 \
         AND (?3 IS NULL OR {merchant} = ?3) AND (?4 IS NULL OR p.store_no = ?4) \
         AND {wanted}) counted"
    )
}

/// The parameters of a page, in the order of [`entries_sql`].
pub fn entries_params(q: &BookQuery) -> (i64, i64, Option<i64>, Option<String>, i64, i64, i64) {
    let (after_at, after_id) = match q.after {
        Some((at, id)) => (at.timestamp_millis(), id),
        None => (q.from.timestamp_millis() - 1, 0),
    };
    (
        q.from.timestamp_millis(),
        q.to.timestamp_millis(),
        q.merchant_id,
        q.store_no.clone(),
        after_at,
        after_id,
        q.limit.clamp(1, 10_000),
    )
}

/// What the gateway booked for an operation the wallet knows by a key (`?1`), on any day.
pub fn entry_of_sql(class: OperationClass) -> String {
    let (kind, column) = match class {
        OperationClass::Pay => (BookKind::Payment, "p.transaction_no"),
        OperationClass::Refund => (BookKind::Refund, "r.refund_no"),
        OperationClass::Cancel => (BookKind::Cancel, "p.transaction_no"),
    };
    let (select, at, id, wanted) = parts(kind);
    format!("{select} WHERE {column} = ?1 AND {wanted} ORDER BY {at} DESC, {id} DESC LIMIT 1")
}

/// A booked operation of `kind` from its row.
pub fn book_entry(kind: BookKind, row: &impl Columns) -> Result<BookEntry, StoreError> {
    let cur = currency(&row.text("currency")?)?;
    Ok(BookEntry {
        id: row.int("id")?,
        kind,
        number: row.text("number")?,
        transaction_no: row.text("transaction_no")?,
        merchant_no: row.text("merchant_no")?,
        store_no: row.text("store_no")?,
        reference: row.opt_text("reference")?,
        cancel_kind: match row.opt_text("cancel_kind")? {
            Some(k) => Some(CancelKind::parse(&k).ok_or_else(|| corrupt("cancel kind"))?),
            None => None,
        },
        amount: Money::from_minor(row.int("amount_minor")?, cur)
            .ok_or_else(|| corrupt("booked amount"))?,
        outcome: BookOutcome::parse(&row.text("outcome")?).ok_or_else(|| corrupt("outcome"))?,
        at: time(row.int("booked_at")?)?,
        at_wallet: row.int("at_wallet")? != 0,
    })
}

pub const SET_FEE_PLAN: &str =
    "UPDATE merchants SET fee_bps = ?1, fee_fixed_minor = ?2 WHERE id = ?3";
pub const FEE_PLAN: &str = "SELECT fee_bps, fee_fixed_minor FROM merchants WHERE id = ?1";
pub const MERCHANTS: &str = "SELECT * FROM merchants ORDER BY merchant_no";

/// A fee plan from its two columns (none when the merchant has none).
pub fn fee_plan(row: &impl Columns) -> Result<Option<FeePlan>, StoreError> {
    match (row.opt_int("fee_bps")?, row.opt_int("fee_fixed_minor")?) {
        (None, None) => Ok(None),
        (bps, fixed) => FeePlan::new(bps.unwrap_or(0), fixed.unwrap_or(0))
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("fee plan: {e}"))),
    }
}

/// Claims a run: `?1` day, `?2` scope, `?3` node, `?4` now, `?5` claims older than this are
/// stale, `?6` 1 to take a finished run again. Answers the run's id when this caller has it.
pub const CLAIM_RUN: &str = "\
INSERT INTO reconciliations (day, scope, node, status, claimed_at) VALUES (?1, ?2, ?3, 'running', ?4)
ON CONFLICT (day, scope) DO UPDATE SET node = excluded.node, status = 'running',
    claimed_at = excluded.claimed_at, finished_at = NULL, error = NULL
WHERE (reconciliations.status = 'running' AND reconciliations.claimed_at < ?5)
   OR reconciliations.status = 'failed' OR ?6 = 1
RETURNING id";

/// Opens a case unless the same one is open or was closed: `?1`..`?11`.
pub const INSERT_CASE: &str = "\
INSERT INTO recon_cases (day, scope, finding, operation, number, transaction_no, merchant_no,
    gateway, wallet, opened_at, status)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'open')
ON CONFLICT (scope, operation, number, finding) DO NOTHING";

/// Finishes a run: `?1` id, `?2` status, `?3` finished at, `?4`..`?7` counts, `?8` error.
pub const FINISH_RUN: &str = "\
UPDATE reconciliations SET status = ?2, finished_at = ?3, gateway_lines = ?4, wallet_lines = ?5,
    matched = ?6, mismatched = ?7, error = ?8 WHERE id = ?1";

pub const RUN: &str = "SELECT * FROM reconciliations WHERE day = ?1 AND scope = ?2";
pub const CASES: &str = "SELECT * FROM recon_cases WHERE (?1 IS NULL OR status = ?1) \
     AND (?2 IS NULL OR day = ?2) ORDER BY id LIMIT ?3";
pub const CASE: &str = "SELECT * FROM recon_cases WHERE id = ?1";
pub const CLOSE_CASE: &str = "UPDATE recon_cases SET status = 'closed', closed_at = ?2, note = ?3 \
     WHERE id = ?1 AND status = 'open'";
pub const OPEN_CASES: &str = "SELECT COUNT(*) AS n FROM recon_cases WHERE status = 'open'";

fn day(text: &str) -> Result<chrono::NaiveDate, StoreError> {
    parse_day(text).map_err(|_| corrupt("day"))
}

pub fn run_record(row: &impl Columns) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.int("id")?,
        day: day(&row.text("day")?)?,
        scope: row.text("scope")?,
        node: row.text("node")?,
        status: row.text("status")?,
        claimed_at: time(row.int("claimed_at")?)?,
        finished_at: row.opt_int("finished_at")?.map(time).transpose()?,
        gateway_lines: row.int("gateway_lines")?,
        wallet_lines: row.int("wallet_lines")?,
        matched: row.int("matched")?,
        mismatched: row.int("mismatched")?,
        error: row.opt_text("error")?,
    })
}

pub fn case_record(row: &impl Columns) -> Result<CaseRecord, StoreError> {
    Ok(CaseRecord {
        id: row.int("id")?,
        case: NewCase {
            day: day(&row.text("day")?)?,
            scope: row.text("scope")?,
            finding: FindingKind::parse(&row.text("finding")?).ok_or_else(|| corrupt("finding"))?,
            class: OperationClass::parse(&row.text("operation")?)
                .ok_or_else(|| corrupt("operation"))?,
            number: row.text("number")?,
            transaction_no: row.text("transaction_no")?,
            merchant_no: row.opt_text("merchant_no")?,
            gateway: row.opt_text("gateway")?,
            wallet: row.opt_text("wallet")?,
            opened_at: time(row.int("opened_at")?)?,
        },
        status: CaseStatus::parse(&row.text("status")?).ok_or_else(|| corrupt("case status"))?,
        closed_at: row.opt_int("closed_at")?.map(time).transpose()?,
        note: row.opt_text("note")?,
    })
}
