//! The books: what a business day came to, and whether the wallet agrees.
//!
//! - [`BookEntry`]: the gateway's own record of one operation it asked the wallet for (a
//!   payment, a refund, a cancel), with its outcome and the time it was booked: a payment when
//!   it was paid (declined or pending ones when they last changed), a refund or cancel when it
//!   last changed. The store lists them by [`BookQuery`], in pages ordered by (time, row id):
//!   keyset pagination, so a day of 10⁶ rows is read in constant memory.
//! - [`FeePlan`] and [`Settlement`]: counts and sums by currency of a merchant's payments,
//!   refunds, cancels and reversals of a business day in its time zone, its fees and the net.
//! - [`StatementLine`] and [`reconcile_lines`]: the wallet's signed daily statement matched
//!   line by line with the gateway's entries, each difference a [`Finding`] that opens a case.
//!
//! Money is integer minor units throughout; no float is ever involved.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use tillgate_domain::{CancelKind, Currency, MerchantZone, Money};

/// A merchant's fee plan: a share of each approved payment in basis points (1/100 of a
/// percent) plus a fixed part in minor units of the payment's currency.
///
/// Rounding: the basis-point part is computed per payment in exact integer arithmetic and
/// rounded half up to a whole minor unit (`(amount × bps + 5000) / 10000`); the fixed part is
/// added after. A payment of 0.50 at 150 bps has a fee part of 0.75 minor units, which rounds to
/// 1; at 100 bps it is exactly 0.5 minor units, which rounds up to 1; 0.49 rounds to 0.
/// Refunds and reversals do not give fees back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeePlan {
    pub bps: i64,
    pub fixed_minor: i64,
}

impl FeePlan {
    /// The largest share: 100 %.
    pub const MAX_BPS: i64 = 10_000;

    /// A plan of `bps` (0 to 10 000) and a fixed part (0 or more minor units).
    pub fn new(bps: i64, fixed_minor: i64) -> Result<FeePlan, String> {
        if !(0..=FeePlan::MAX_BPS).contains(&bps) {
            return Err(format!(
                "the fee in basis points must be between 0 and {} (100 %), not {bps}",
                FeePlan::MAX_BPS
            ));
        }
        if fixed_minor < 0 {
            return Err(format!(
                "the fixed fee must be 0 or more minor units, not {fixed_minor}"
            ));
        }
        Ok(FeePlan { bps, fixed_minor })
    }

    /// The fee of one approved payment of `amount_minor` (see the rounding rule above).
    pub fn fee(&self, amount_minor: i64) -> i64 {
        let share = (i128::from(amount_minor) * i128::from(self.bps) + 5_000) / 10_000;
        i64::try_from(share + i128::from(self.fixed_minor)).unwrap_or(i64::MAX)
    }
}

/// Which table an entry comes from (and what an export lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BookKind {
    Payment,
    Refund,
    Cancel,
}

impl BookKind {
    pub const ALL: [BookKind; 3] = [BookKind::Payment, BookKind::Refund, BookKind::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            BookKind::Payment => "payment",
            BookKind::Refund => "refund",
            BookKind::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<BookKind> {
        BookKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What an operation came to, as either side tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BookOutcome {
    Approved,
    Declined,
    /// Not answered yet: money possibly in flight.
    Pending,
}

impl BookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BookOutcome::Approved => "approved",
            BookOutcome::Declined => "declined",
            BookOutcome::Pending => "pending",
        }
    }

    pub fn parse(text: &str) -> Option<BookOutcome> {
        [
            BookOutcome::Approved,
            BookOutcome::Declined,
            BookOutcome::Pending,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// One operation the gateway asked the wallet for, as the gateway booked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookEntry {
    /// The row's id in its table (the second half of the pagination key).
    pub id: i64,
    pub kind: BookKind,
    /// The operation's number: the transaction's, the refund's or the cancel's.
    pub number: String,
    pub transaction_no: String,
    pub merchant_no: String,
    pub store_no: String,
    /// The merchant's reference (payments) or refund reference (refunds).
    pub reference: Option<String>,
    /// What a cancel did: void or close an unpaid payment, or reverse a paid one.
    pub cancel_kind: Option<CancelKind>,
    /// A cancel's amount is its payment's.
    pub amount: Money,
    pub outcome: BookOutcome,
    pub at: DateTime<Utc>,
    /// Whether a wallet was asked for it: false only for the sandbox's sample transactions,
    /// which sandbox mode makes paid without any wallet (reconciliation leaves them out).
    pub at_wallet: bool,
}

/// The fingerprint of the sandbox's sample transactions (paid without a wallet).
pub const SANDBOX_FIXTURE: &str = "sandbox-fixture";

impl BookEntry {
    /// What the wallet knows the operation by: a payment and a cancel by their transaction's
    /// number (the wallet is idempotent on it), a refund by its own.
    pub fn key(&self) -> LineKey {
        match self.kind {
            BookKind::Payment => LineKey::new(OperationClass::Pay, &self.transaction_no),
            BookKind::Refund => LineKey::new(OperationClass::Refund, &self.number),
            BookKind::Cancel => LineKey::new(OperationClass::Cancel, &self.transaction_no),
        }
    }
}

/// Which entries a page lists: one kind, booked in `[from, to)`, of one merchant (and store)
/// or all, after the last entry of the previous page.
#[derive(Debug, Clone)]
pub struct BookQuery {
    pub kind: BookKind,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub merchant_id: Option<i64>,
    pub store_no: Option<String>,
    /// The (time, id) of the previous page's last entry.
    pub after: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

impl BookQuery {
    /// The first page of `kind` in `[from, to)`.
    pub fn new(kind: BookKind, from: DateTime<Utc>, to: DateTime<Utc>) -> BookQuery {
        BookQuery {
            kind,
            from,
            to,
            merchant_id: None,
            store_no: None,
            after: None,
            limit: 1000,
        }
    }

    /// The query of the page after `page` (whose last entry it starts after).
    pub fn next_after(&mut self, page: &[BookEntry]) -> bool {
        match page.last() {
            Some(last) if page.len() as i64 >= self.limit => {
                self.after = Some((last.at, last.id));
                true
            }
            _ => false,
        }
    }
}

/// The instants `[from, to)` of calendar day `date` in `zone`.
pub fn day_bounds(date: NaiveDate, zone: MerchantZone) -> (DateTime<Utc>, DateTime<Utc>) {
    zone.day_bounds(date)
}

/// Parses a business day, `YYYY-MM-DD`, with a message an operator can act on.
pub fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("the date must be a calendar day as YYYY-MM-DD, not {text:?}"))
}

/// A count and a sum in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub count: i64,
    pub sum_minor: i64,
}

impl Tally {
    fn add(&mut self, minor: i64) {
        self.count += 1;
        self.sum_minor = self.sum_minor.saturating_add(minor);
    }
}

/// What one currency of a settlement came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrencyTotals {
    /// Approved payments (paid on the day, whatever happened to them later).
    pub payments: Tally,
    /// Refunds that succeeded on the day.
    pub refunds: Tally,
    /// Unpaid payments voided or closed on the day (no money moved; the sum is of their
    /// amounts, for information).
    pub cancels: Tally,
    /// Paid payments reversed in full on the day.
    pub reversals: Tally,
    /// Fees of the day's approved payments.
    pub fees_minor: i64,
    /// payments − refunds − reversals − fees.
    pub net_minor: i64,
}

/// A business day of one merchant (or one of its stores), by currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub date: NaiveDate,
    pub merchant_no: String,
    pub store_no: Option<String>,
    pub timezone: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub fee_plan: FeePlan,
    pub currencies: BTreeMap<String, CurrencyTotals>,
}

impl Settlement {
    pub fn new(
        date: NaiveDate,
        merchant_no: &str,
        store_no: Option<&str>,
        zone: MerchantZone,
        fee_plan: FeePlan,
    ) -> Settlement {
        let (from, to) = day_bounds(date, zone);
        Settlement {
            date,
            merchant_no: merchant_no.to_owned(),
            store_no: store_no.map(str::to_owned),
            timezone: zone.name().to_owned(),
            from,
            to,
            fee_plan,
            currencies: BTreeMap::new(),
        }
    }

    /// Counts one entry of the day; entries that moved no money (declined, pending) count
    /// nowhere.
    pub fn add(&mut self, e: &BookEntry) {
        if e.outcome != BookOutcome::Approved {
            return;
        }
        let minor = e.amount.minor();
        let totals = self
            .currencies
            .entry(e.amount.currency().code().to_owned())
            .or_default();
        match e.kind {
            BookKind::Payment => {
                totals.payments.add(minor);
                totals.fees_minor = totals.fees_minor.saturating_add(self.fee_plan.fee(minor));
            }
            BookKind::Refund => totals.refunds.add(minor),
            BookKind::Cancel => match e.cancel_kind {
                Some(CancelKind::Reverse) => totals.reversals.add(minor),
                _ => totals.cancels.add(minor),
            },
        }
        totals.net_minor = totals
            .payments
            .sum_minor
            .saturating_sub(totals.refunds.sum_minor)
            .saturating_sub(totals.reversals.sum_minor)
            .saturating_sub(totals.fees_minor);
    }
}

/// The kinds of wallet operation a statement line can be, matched by class: a close and a
/// reverse are both the transaction's cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationClass {
    Pay,
    Refund,
    Cancel,
}

impl OperationClass {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationClass::Pay => "pay",
            OperationClass::Refund => "refund",
            OperationClass::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<OperationClass> {
        match text {
            "pay" => Some(OperationClass::Pay),
            "refund" => Some(OperationClass::Refund),
            "cancel" | "close" | "reverse" => Some(OperationClass::Cancel),
            _ => None,
        }
    }
}

/// What both sides know an operation by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineKey {
    pub class: OperationClass,
    /// The transaction's number (payments, cancels) or the refund's.
    pub number: String,
}

impl LineKey {
    pub fn new(class: OperationClass, number: &str) -> LineKey {
        LineKey {
            class,
            number: number.to_owned(),
        }
    }
}

/// One line of the wallet's statement, read from the protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub class: OperationClass,
    /// The wallet's own name of the operation: pay, refund, close or reverse.
    pub operation: String,
    pub transaction_no: String,
    pub refund_no: Option<String>,
    pub amount_minor: i64,
    /// As the wallet wrote it; it need not be a currency the gateway knows.
    pub currency: String,
    pub outcome: BookOutcome,
    pub at: DateTime<Utc>,
    pub wallet_ref: Option<String>,
}

impl StatementLine {
    pub fn key(&self) -> LineKey {
        match (self.class, &self.refund_no) {
            (OperationClass::Refund, Some(no)) => LineKey::new(OperationClass::Refund, no),
            (class, _) => LineKey::new(class, &self.transaction_no),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "operation": self.operation,
            "transactionNo": self.transaction_no,
            "refundNo": self.refund_no,
            "amountMinor": self.amount_minor,
            "currency": self.currency,
            "outcome": self.outcome.as_str(),
            "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "walletRef": self.wallet_ref,
        })
    }
}

/// How the two sides differ about one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    /// On the wallet's statement, unknown to the gateway (a phantom refund, say).
    OnlyAtWallet,
    /// Booked by the gateway, absent from the wallet's statement of that day and the days
    /// around it.
    OnlyAtGateway,
    AmountMismatch,
    CurrencyMismatch,
    /// Approved on one side, declined or pending on the other.
    OutcomeMismatch,
    /// Both sides have it, on different days.
    DayMismatch,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::OnlyAtWallet,
        FindingKind::OnlyAtGateway,
        FindingKind::AmountMismatch,
        FindingKind::CurrencyMismatch,
        FindingKind::OutcomeMismatch,
        FindingKind::DayMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::OnlyAtWallet => "only_at_wallet",
            FindingKind::OnlyAtGateway => "only_at_gateway",
            FindingKind::AmountMismatch => "amount_mismatch",
            FindingKind::CurrencyMismatch => "currency_mismatch",
            FindingKind::OutcomeMismatch => "outcome_mismatch",
            FindingKind::DayMismatch => "day_mismatch",
        }
    }

    pub fn parse(text: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One difference: the operation and what each side says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub key: LineKey,
    pub transaction_no: String,
    pub merchant_no: Option<String>,
    pub gateway: Option<BookEntry>,
    pub wallet: Option<StatementLine>,
}

/// What a match of one day came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matched {
    pub gateway_lines: i64,
    pub wallet_lines: i64,
    pub matched: i64,
    pub findings: Vec<Finding>,
}

/// Lines of adjacent days closer than this to the gateway's time are the same day's (the two
/// clocks may straddle midnight).
pub const DAY_SKEW: Duration = Duration::minutes(5);

/// Matches the gateway's entries of a day with the wallet's statement of that day.
///
/// `nearby` holds the statement lines of the days before and after, and `elsewhere` answers
/// what the gateway booked for a key on any day: with them a line that one side has on
/// another day is a [`FindingKind::DayMismatch`], not a line missing on both days. Of several
/// gateway entries of one key (a cancel declined, then tried again) the latest counts.
pub fn reconcile_lines(
    gateway: &[BookEntry],
    statement: &[StatementLine],
    nearby: &[StatementLine],
    elsewhere: &dyn Fn(&LineKey) -> Option<BookEntry>,
) -> Matched {
    let mut ours: BTreeMap<LineKey, &BookEntry> = BTreeMap::new();
    for e in gateway {
        let key = e.key();
        match ours.get(&key) {
            Some(earlier) if (earlier.at, earlier.id) > (e.at, e.id) => {}
            _ => {
                ours.insert(key, e);
            }
        }
    }
    let mut theirs: BTreeMap<LineKey, &StatementLine> = BTreeMap::new();
    for l in statement {
        theirs.insert(l.key(), l);
    }
    let mut nearby_lines: BTreeMap<LineKey, &StatementLine> = BTreeMap::new();
    for l in nearby {
        nearby_lines.insert(l.key(), l);
    }
    let mut out = Matched {
        gateway_lines: ours.len() as i64,
        wallet_lines: theirs.len() as i64,
        ..Matched::default()
    };
    let finding = |kind, key: &LineKey, g: Option<&BookEntry>, w: Option<&StatementLine>| Finding {
        kind,
        key: key.clone(),
        transaction_no: g
            .map(|g| g.transaction_no.clone())
            .or_else(|| w.map(|w| w.transaction_no.clone()))
            .unwrap_or_default(),
        merchant_no: g.map(|g| g.merchant_no.clone()),
        gateway: g.cloned(),
        wallet: w.cloned(),
    };
    for (key, g) in &ours {
        match theirs.get(key) {
            Some(w) => {
                let before = out.findings.len();
                if w.amount_minor != g.amount.minor() {
                    out.findings
                        .push(finding(FindingKind::AmountMismatch, key, Some(g), Some(w)));
                }
                if w.currency != g.amount.currency().code() {
                    out.findings.push(finding(
                        FindingKind::CurrencyMismatch,
                        key,
                        Some(g),
                        Some(w),
                    ));
                }
                if w.outcome != g.outcome {
                    out.findings
                        .push(finding(FindingKind::OutcomeMismatch, key, Some(g), Some(w)));
                }
                if out.findings.len() == before {
                    out.matched += 1;
                }
            }
            None => match nearby_lines.get(key) {
                Some(w) if (w.at - g.at).abs() <= DAY_SKEW => out.matched += 1,
                Some(w) => {
                    out.findings
                        .push(finding(FindingKind::DayMismatch, key, Some(g), Some(w)))
                }
                None => out
                    .findings
                    .push(finding(FindingKind::OnlyAtGateway, key, Some(g), None)),
            },
        }
    }
    for (key, w) in &theirs {
        if ours.contains_key(key) {
            continue;
        }
        match elsewhere(key) {
            Some(g) if (w.at - g.at).abs() <= DAY_SKEW => out.matched += 1,
            Some(g) => out
                .findings
                .push(finding(FindingKind::DayMismatch, key, Some(&g), Some(w))),
            None => out
                .findings
                .push(finding(FindingKind::OnlyAtWallet, key, None, Some(w))),
        }
    }
    out
}

/// Where a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CaseStatus {
    Open,
    Closed,
}

impl CaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<CaseStatus> {
        match text {
            "open" => Some(CaseStatus::Open),
            "closed" => Some(CaseStatus::Closed),
            _ => None,
        }
    }
}

/// A case to open for a finding (the store keeps one per scope, operation and kind of
/// finding, so running a day again opens nothing twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    pub day: NaiveDate,
    pub scope: String,
    pub finding: FindingKind,
    pub class: OperationClass,
    pub number: String,
    pub transaction_no: String,
    pub merchant_no: Option<String>,
    /// What each side said, as JSON text.
    pub gateway: Option<String>,
    pub wallet: Option<String>,
    pub opened_at: DateTime<Utc>,
}

impl NewCase {
    pub fn of(f: &Finding, day: NaiveDate, scope: &str, at: DateTime<Utc>) -> NewCase {
        NewCase {
            day,
            scope: scope.to_owned(),
            finding: f.kind,
            class: f.key.class,
            number: f.key.number.clone(),
            transaction_no: f.transaction_no.clone(),
            merchant_no: f.merchant_no.clone(),
            gateway: f.gateway.as_ref().map(|g| entry_json(g).to_string()),
            wallet: f.wallet.as_ref().map(|w| w.to_json().to_string()),
            opened_at: at,
        }
    }
}

/// A case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub id: i64,
    pub case: NewCase,
    pub status: CaseStatus,
    pub closed_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// Which cases an operator lists.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    pub day: Option<NaiveDate>,
    pub limit: i64,
}

/// A reconciliation of one day and scope (a wallet), as stored: claimed by one node, then
/// finished with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub day: NaiveDate,
    pub scope: String,
    pub node: String,
    pub status: String,
    pub claimed_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub gateway_lines: i64,
    pub wallet_lines: i64,
    pub matched: i64,
    pub mismatched: i64,
    pub error: Option<String>,
}

/// An entry as JSON (the export's JSON lines, a case's gateway side).
pub fn entry_json(e: &BookEntry) -> serde_json::Value {
    serde_json::json!({
        "kind": e.kind.as_str(),
        "number": e.number,
        "transactionNo": e.transaction_no,
        "merchantNo": e.merchant_no,
        "storeNo": e.store_no,
        "reference": e.reference,
        "cancelKind": e.cancel_kind.map(|k| k.as_str()),
        "amount": e.amount.to_decimal_string(),
        "amountMinor": e.amount.minor(),
        "currency": e.amount.currency().code(),
        "outcome": e.outcome.as_str(),
        "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// The CSV heading of exported entries.
pub const CSV_HEADING: &str =
    "kind,number,transaction_no,merchant_no,store_no,reference,cancel_kind,amount,amount_minor,currency,outcome,at";

/// An entry as one CSV line (RFC 4180 quoting where a field needs it).
pub fn entry_csv(e: &BookEntry) -> String {
    let fields = [
        e.kind.as_str().to_owned(),
        e.number.clone(),
        e.transaction_no.clone(),
        e.merchant_no.clone(),
        e.store_no.clone(),
        e.reference.clone().unwrap_or_default(),
        e.cancel_kind
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        e.amount.to_decimal_string(),
        e.amount.minor().to_string(),
        e.amount.currency().code().to_owned(),
        e.outcome.as_str().to_owned(),
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// One CSV field, quoted when it holds a comma, a quote or a line break.
pub fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_owned()
    }
}

/// A money amount of `currency` in minor units as a decimal string (for people's tables).
pub fn decimal(minor: i64, currency: &str) -> String {
    Currency::from_code(currency)
        .and_then(|c| Money::from_minor(minor.abs(), c))
        .map(|m| {
            let text = m.to_decimal_string();
            if minor < 0 {
                format!("-{text}")
            } else {
                text
            }
        })
        .unwrap_or_else(|| minor.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basis_point_part_rounds_half_up_per_payment() {
        let plan = FeePlan::new(100, 0).unwrap(); // 1 %
        assert_eq!(plan.fee(50), 1, "0.5 minor units round up");
        assert_eq!(plan.fee(49), 0, "0.49 rounds down");
        assert_eq!(plan.fee(150), 2, "1.5 rounds up");
        assert_eq!(plan.fee(10_000), 100, "exact");
        let plan = FeePlan::new(290, 30).unwrap(); // 2.9 % + 0.30
        assert_eq!(plan.fee(1_000), 29 + 30);
        assert_eq!(plan.fee(1_017), 29 + 30, "29.493 rounds down");
        assert_eq!(plan.fee(1_018), 30 + 30, "29.522 rounds up");
        assert_eq!(FeePlan::new(15, 0).unwrap().fee(1), 0);
        assert_eq!(
            FeePlan::new(5_000, 0).unwrap().fee(1),
            1,
            "half of one rounds up"
        );
        assert_eq!(FeePlan::default().fee(123_456), 0);
        assert_eq!(FeePlan::new(10_000, 0).unwrap().fee(i64::MAX), i64::MAX);
        assert_eq!(FeePlan::new(10_000, 1).unwrap().fee(i64::MAX), i64::MAX);
    }

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cancel(id: i64, outcome: BookOutcome, time: &str) -> BookEntry {
        BookEntry {
            id,
            kind: BookKind::Cancel,
            number: format!("C{id}"),
            transaction_no: "T1".into(),
            merchant_no: "M".into(),
            store_no: "S".into(),
            reference: None,
            cancel_kind: Some(CancelKind::Reverse),
            amount: usd(700),
            outcome,
            at: at(time),
            at_wallet: true,
        }
    }

    fn line(class: OperationClass, outcome: BookOutcome, time: &str) -> StatementLine {
        StatementLine {
            class,
            operation: "reverse".into(),
            transaction_no: "T1".into(),
            refund_no: None,
            amount_minor: 700,
            currency: "USD".into(),
            outcome,
            at: at(time),
            wallet_ref: None,
        }
    }

    #[test]
    fn a_cancel_tried_again_is_matched_by_its_latest_attempt() {
        let gateway = [
            cancel(1, BookOutcome::Declined, "2026-12-05T10:00:00Z"),
            cancel(2, BookOutcome::Approved, "2026-12-05T11:00:00Z"),
        ];
        let wallet = [line(
            OperationClass::Cancel,
            BookOutcome::Approved,
            "2026-12-05T11:00:00.010Z",
        )];
        let m = reconcile_lines(&gateway, &wallet, &[], &|_| None);
        assert_eq!((m.matched, m.findings.len()), (1, 0), "{m:?}");
    }

    #[test]
    fn clocks_straddling_midnight_are_forgiven_and_a_real_day_apart_is_not() {
        let gateway = [cancel(1, BookOutcome::Approved, "2026-12-05T23:59:59Z")];
        let next_day = [line(
            OperationClass::Cancel,
            BookOutcome::Approved,
            "2026-12-06T00:00:01Z",
        )];
        let m = reconcile_lines(&gateway, &[], &next_day, &|_| None);
        assert_eq!((m.matched, m.findings.len()), (1, 0));
        let days_later = [line(
            OperationClass::Cancel,
            BookOutcome::Approved,
            "2026-12-06T18:00:00Z",
        )];
        let m = reconcile_lines(&gateway, &[], &days_later, &|_| None);
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].kind, FindingKind::DayMismatch);
        // With nothing anywhere, it is only the gateway's; a line nobody booked, only the
        // wallet's.
        let m = reconcile_lines(&gateway, &[], &[], &|_| None);
        assert_eq!(m.findings[0].kind, FindingKind::OnlyAtGateway);
        let m = reconcile_lines(&[], &days_later, &[], &|_| None);
        assert_eq!(m.findings[0].kind, FindingKind::OnlyAtWallet);
        assert_eq!(m.findings[0].merchant_no, None);
    }

    #[test]
    fn one_line_can_differ_in_several_ways_each_its_own_finding() {
        let gateway = [cancel(1, BookOutcome::Approved, "2026-12-05T10:00:00Z")];
        let mut w = line(
            OperationClass::Cancel,
            BookOutcome::Declined,
            "2026-12-05T10:00:00Z",
        );
        w.amount_minor = 701;
        w.currency = "EUR".into();
        let m = reconcile_lines(&gateway, &[w], &[], &|_| None);
        let kinds: Vec<_> = m.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FindingKind::AmountMismatch,
                FindingKind::CurrencyMismatch,
                FindingKind::OutcomeMismatch
            ]
        );
        assert_eq!(m.matched, 0);
    }

    #[test]
    fn a_csv_field_is_quoted_only_when_it_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(decimal(-1959, "USD"), "-19.59");
        assert_eq!(decimal(5, "JPY"), "5");
    }

    #[test]
    fn a_fee_plan_out_of_range_is_refused() {
        assert!(FeePlan::new(-1, 0).is_err());
        assert!(FeePlan::new(10_001, 0).is_err());
        assert!(FeePlan::new(0, -1).is_err());
    }

    #[test]
    fn a_business_day_is_midnight_to_midnight_in_the_zone() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let (from, to) = day_bounds(d, MerchantZone::parse("Asia/Shanghai").unwrap());
        assert_eq!(from.to_rfc3339(), "2026-12-04T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-05T16:00:00+00:00");
        // The day summer time starts in Amsterdam has 23 hours.
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let (from, to) = day_bounds(d, MerchantZone::parse("Europe/Amsterdam").unwrap());
        assert_eq!((to - from).num_hours(), 23);
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("yesterday").is_err());
    }
}
