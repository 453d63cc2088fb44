//! The simulator's memory: what the wallet did to each order and which callbacks it owes, and
//! the sandbox's amount rules that decide each operation. No I/O here; the server persists the
//! ledger after each change and runs the timers and deliveries the ledger asks for.
//!
//! | operation | last two digits of the amount in minor units | answer |
//! |---|---|---|
//! | pay with a barcode | 51 | declined |
//! | pay with a barcode | 52 | pending, approved `late_callback_ms` later (callback) |
//! | pay with a barcode | anything else | approved |
//! | pay without a barcode (QR code) | any | pending until `POST /control/pay/{transactionNo}` |
//! | refund | 61 | declined |
//! | refund | anything else | approved, if a payment was approved and enough is left |
//! | close, reverse | 53 | pending, approved `late_callback_ms` later (callback) |
//! | close, reverse | anything else | approved (declined once the order has refunds) |

use crate::protocol::{Answer, Callback, CallbackKind, Outcome, QueryOperation, StatementLine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tillgate_domain::Money;

/// The state file's format version.
pub const LEDGER_VERSION: u32 = 1;
/// The most orders the simulator remembers; beyond it new orders are answered `503`.
pub const MAX_ORDERS: usize = 100_000;
/// The most refunds (and refund numbers sealed by queries) of one order.
pub const MAX_REFUNDS_PER_ORDER: usize = 100;
/// The most callback records kept, owed or finished; finished ones make room first.
pub const MAX_CALLBACK_RECORDS: usize = 10_000;

/// What kind of operation a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpKind {
    Pay,
    Close,
    Reverse,
    Refund,
}

/// One operation the wallet performed, and what it came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation: OpKind,
    pub amount_minor: i64,
    pub currency: String,
    /// A payment without a barcode: the customer scans a QR code.
    #[serde(default)]
    pub qr_code: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_no: Option<String>,
    pub outcome: Outcome,
    pub wallet_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// When it stopped being pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// When a pending operation decides itself (none: only the control endpoint decides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_due_at: Option<DateTime<Utc>>,
    /// How many requests asked for it (repeats answer the recorded result).
    pub requests: u32,
    /// For a payment: when a cancel gave the money back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned_at: Option<DateTime<Utc>>,
    /// For a cancel: how many earlier attempts were declined and replaced by this one.
    #[serde(default)]
    pub earlier_declined: u32,
}

/// Everything the wallet did to one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub transaction_no: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<Operation>,
    #[serde(default)]
    pub refunds: BTreeMap<String, Operation>,
    /// A query found no payment at this time; a pay arriving later is declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_sealed_at: Option<DateTime<Utc>>,
    /// Refund numbers a query found nothing for; those refunds are declined if they arrive.
    #[serde(default)]
    pub refunds_sealed: BTreeMap<String, DateTime<Utc>>,
}

impl Order {
    fn new(transaction_no: &str, now: DateTime<Utc>) -> Order {
        Order {
            transaction_no: transaction_no.to_owned(),
            created_at: now,
            payment: None,
            cancel: None,
            refunds: BTreeMap::new(),
            payment_sealed_at: None,
            refunds_sealed: BTreeMap::new(),
        }
    }

    /// A cancel that went through or may still go through closes the order for new money.
    fn cancel_holds(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.outcome != Outcome::Declined)
    }
}

/// Where a callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallbackStatus {
    /// Not acknowledged yet; the next attempt is at `dueAt`.
    Owed,
    /// The gateway answered 2xx.
    Delivered,
    /// The gateway answered 4xx: it will not take it, so it is not retried.
    Refused,
    /// No acknowledgement after the last attempt.
    Failed,
}

/// One callback delivery the wallet owes or owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRecord {
    /// The delivery's id (a duplicate has its own id and the same `callback.callbackId`).
    pub id: u64,
    pub callback: Callback,
    pub status: CallbackStatus,
    pub attempts: u32,
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Injected through the control endpoint rather than owed for an operation.
    #[serde(default)]
    pub injected: bool,
    /// The second copy sent by the duplicate-callback fault (or a resend).
    #[serde(default)]
    pub duplicate: bool,
    /// Sent with a wrong signature on purpose.
    #[serde(default)]
    pub corrupt_signature: bool,
}

/// A pending operation that decides itself at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    Payment(String),
    Cancel(String),
}

/// What a change asks the server to do next.
#[derive(Debug, Default)]
pub struct Effects {
    /// The ledger changed and must be persisted before anyone is told.
    pub changed: bool,
    pub timers: Vec<(Timer, DateTime<Utc>)>,
    /// Callback records to deliver.
    pub callbacks: Vec<u64>,
}

/// Why a request is not answered with an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The key was used with another amount or currency (`409`).
    Conflict(String),
    /// The ledger is full (`503`).
    Full,
    /// The control endpoint asked for something that is not there (`404`).
    NotFound(String),
}

/// Whether and how decisions owe callbacks.
pub struct CallbackPolicy<'a> {
    /// A callback URL is configured.
    pub enabled: bool,
    /// Draws the duplicate-callback fault for one callback.
    pub duplicate: &'a mut dyn FnMut() -> bool,
}

/// The simulator's whole memory, as kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    pub version: u32,
    pub orders: BTreeMap<String, Order>,
    pub callbacks: Vec<CallbackRecord>,
    pub next_wallet_ref: u64,
    pub next_callback_id: u64,
    /// Discrepancies injected into the statement (`POST /control/statement`); the operations
    /// themselves are left as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statement_edits: Vec<StatementEdit>,
    /// Counts changes in this process, so a write can tell it already holds a later snapshot.
    #[serde(skip)]
    pub changes: u64,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger {
            version: LEDGER_VERSION,
            orders: BTreeMap::new(),
            callbacks: Vec::new(),
            next_wallet_ref: 1,
            next_callback_id: 1,
            statement_edits: Vec::new(),
            changes: 0,
        }
    }
}

/// What an injected discrepancy does to the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EditKind {
    /// A refund line the wallet never performed (approved, at the time it was injected).
    PhantomRefund,
    /// The operation's line is left out.
    Missing,
    /// The line shows `amountMinor` instead.
    Amount,
    /// The line shows `currency` instead.
    Currency,
    /// The line shows `outcome` instead.
    Outcome,
    /// The line is moved `days` days (its time shifted), onto another day's statement.
    OtherDay,
}

/// One discrepancy injected into the statement. `operation` (`pay`, `refund`, `cancel`) and
/// `transactionNo` (with `refundNo` for a refund) name the line it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatementEdit {
    pub kind: EditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub transaction_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    /// When it was injected (a phantom refund's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

fn line_of(order: &Order, op: &Operation, refund_no: Option<&str>) -> StatementLine {
    StatementLine {
        operation: match op.operation {
            OpKind::Pay => "pay",
            OpKind::Close => "close",
            OpKind::Reverse => "reverse",
            OpKind::Refund => "refund",
        }
        .to_owned(),
        transaction_no: order.transaction_no.clone(),
        refund_no: refund_no.map(str::to_owned),
        cancel_no: op.cancel_no.clone(),
        amount_minor: op.amount_minor,
        currency: op.currency.clone(),
        outcome: op.outcome,
        at: op
            .decided_at
            .unwrap_or(op.requested_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        wallet_ref: Some(op.wallet_ref.clone()),
    }
}

/// Whether a statement line is the one an edit names.
fn names(edit: &StatementEdit, line: &StatementLine) -> bool {
    fn class(op: &str) -> &str {
        match op {
            "close" | "reverse" => "cancel",
            other => other,
        }
    }
    line.transaction_no == edit.transaction_no
        && edit.operation.as_deref().map(class) == Some(class(&line.operation))
        && (line.operation != "refund" || line.refund_no == edit.refund_no)
}

fn line_time(line: &StatementLine) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&line.at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn last_two_digits(minor: i64) -> i64 {
    minor % 100
}

fn due(now: DateTime<Utc>, late: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(late).unwrap_or(chrono::Duration::MAX)
}

fn answer_of(transaction_no: &str, refund_no: Option<&str>, op: &Operation) -> Answer {
    Answer {
        transaction_no: transaction_no.to_owned(),
        refund_no: refund_no.map(str::to_owned),
        outcome: op.outcome,
        wallet_ref: Some(op.wallet_ref.clone()),
        message: op.message.clone(),
        amount_minor: Some(op.amount_minor),
        currency: Some(op.currency.clone()),
    }
}

fn not_found(transaction_no: &str, refund_no: Option<&str>, message: &str) -> Answer {
    Answer {
        transaction_no: transaction_no.to_owned(),
        refund_no: refund_no.map(str::to_owned),
        outcome: Outcome::Declined,
        wallet_ref: None,
        message: Some(message.to_owned()),
        amount_minor: None,
        currency: None,
    }
}

fn same_money(op: &Operation, money: Money) -> bool {
    op.amount_minor == money.minor() && op.currency == money.currency().code()
}

/// What a request asked for, to build its operation record.
struct Asked<'a> {
    kind: OpKind,
    money: Money,
    qr_code: bool,
    vendor: Option<&'a str>,
    cancel_no: Option<&'a str>,
}

impl Ledger {
    /// Every operation decided (or asked for, while pending) on the UTC calendar day `date`,
    /// in the order of their times, with the injected discrepancies applied.
    pub fn statement(&self, date: chrono::NaiveDate) -> Vec<StatementLine> {
        let mut lines = Vec::new();
        for order in self.orders.values() {
            if let Some(op) = &order.payment {
                lines.push(line_of(order, op, None));
            }
            if let Some(op) = &order.cancel {
                lines.push(line_of(order, op, None));
            }
            for (no, op) in &order.refunds {
                lines.push(line_of(order, op, Some(no)));
            }
        }
        for edit in &self.statement_edits {
            if edit.kind == EditKind::PhantomRefund {
                lines.push(StatementLine {
                    operation: "refund".into(),
                    transaction_no: edit.transaction_no.clone(),
                    refund_no: edit.refund_no.clone(),
                    cancel_no: None,
                    amount_minor: edit.amount_minor.unwrap_or(100),
                    currency: edit.currency.clone().unwrap_or_else(|| "USD".into()),
                    outcome: Outcome::Approved,
                    at: edit
                        .at
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    wallet_ref: Some("W-PHANTOM".into()),
                });
                continue;
            }
            let Some(i) = lines.iter().position(|l| names(edit, l)) else {
                continue;
            };
            let line = &mut lines[i];
            match edit.kind {
                EditKind::Missing => {
                    lines.remove(i);
                }
                EditKind::Amount => {
                    line.amount_minor = edit.amount_minor.unwrap_or(line.amount_minor)
                }
                EditKind::Currency => {
                    line.currency = edit
                        .currency
                        .clone()
                        .unwrap_or_else(|| line.currency.clone())
                }
                EditKind::Outcome => line.outcome = edit.outcome.unwrap_or(line.outcome),
                EditKind::OtherDay => {
                    let moved = line_time(line) + chrono::Duration::days(edit.days.unwrap_or(1));
                    line.at = moved.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                }
                EditKind::PhantomRefund => {}
            }
        }
        lines.retain(|l| line_time(l).date_naive() == date);
        lines.sort_by(|a, b| {
            (line_time(a), &a.transaction_no, &a.operation, &a.refund_no).cmp(&(
                line_time(b),
                &b.transaction_no,
                &b.operation,
                &b.refund_no,
            ))
        });
        lines
    }

    /// Injects a discrepancy into the statement. The line it changes must exist (a phantom
    /// refund needs a refund number the wallet does not know).
    pub fn edit_statement(
        &mut self,
        mut edit: StatementEdit,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let order = self.orders.get(&edit.transaction_no);
        if edit.kind == EditKind::PhantomRefund {
            let no = edit
                .refund_no
                .get_or_insert_with(|| format!("PHANTOM{}", self.statement_edits.len() + 1));
            if order.is_some_and(|o| o.refunds.contains_key(no.as_str())) {
                return Err(Refusal::Conflict(format!(
                    "the wallet performed refund {no}"
                )));
            }
        } else {
            let exists = order.is_some_and(|o| {
                let line = |op: &Operation, no: Option<&str>| names(&edit, &line_of(o, op, no));
                o.payment.as_ref().is_some_and(|op| line(op, None))
                    || o.cancel.as_ref().is_some_and(|op| line(op, None))
                    || o.refunds.iter().any(|(no, op)| line(op, Some(no)))
            });
            if !exists {
                return Err(Refusal::NotFound(format!(
                    "no {} of transaction {} on the wallet's books",
                    edit.operation.as_deref().unwrap_or("operation"),
                    edit.transaction_no
                )));
            }
        }
        edit.at.get_or_insert(now);
        self.statement_edits.push(edit);
        self.changes += 1;
        Ok(())
    }

    fn touch(&mut self, effects: &mut Effects) {
        self.changes += 1;
        effects.changed = true;
    }

    fn wallet_ref(&mut self) -> String {
        let n = self.next_wallet_ref;
        self.next_wallet_ref += 1;
        format!("W{n:012}")
    }

    fn new_operation(
        &mut self,
        asked: Asked<'_>,
        outcome: Outcome,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Operation {
        Operation {
            operation: asked.kind,
            amount_minor: asked.money.minor(),
            currency: asked.money.currency().code().to_owned(),
            qr_code: asked.qr_code,
            vendor: asked.vendor.map(str::to_owned),
            cancel_no: asked.cancel_no.map(str::to_owned),
            outcome,
            wallet_ref: self.wallet_ref(),
            message: message.map(str::to_owned),
            requested_at: now,
            decided_at: (outcome != Outcome::Pending).then_some(now),
            decide_due_at: None,
            requests: 1,
            returned_at: None,
            earlier_declined: 0,
        }
    }

    /// The order of `transaction_no`, created if new; `Full` when no room is left.
    fn order_entry(
        &mut self,
        transaction_no: &str,
        now: DateTime<Utc>,
    ) -> Result<&mut Order, Refusal> {
        if !self.orders.contains_key(transaction_no) && self.orders.len() >= MAX_ORDERS {
            return Err(Refusal::Full);
        }
        Ok(self
            .orders
            .entry(transaction_no.to_owned())
            .or_insert_with(|| Order::new(transaction_no, now)))
    }

    /// `POST /v1/pay`.
    pub fn pay(
        &mut self,
        transaction_no: &str,
        money: Money,
        barcode: Option<&str>,
        vendor: Option<&str>,
        now: DateTime<Utc>,
        late: Duration,
    ) -> Result<(Answer, Effects), Refusal> {
        let mut effects = Effects::default();
        let order = self.order_entry(transaction_no, now)?;
        if let Some(p) = &mut order.payment {
            if !same_money(p, money) {
                return Err(Refusal::Conflict(format!(
                    "transactionNo {transaction_no} was paid with {} {}",
                    p.amount_minor, p.currency
                )));
            }
            p.requests += 1;
            let answer = answer_of(transaction_no, None, p);
            self.touch(&mut effects);
            return Ok((answer, effects));
        }
        let (outcome, message, decides_later) = if order.payment_sealed_at.is_some() {
            (
                Outcome::Declined,
                Some("a query found no payment before this one arrived; the order is closed"),
                false,
            )
        } else if order.cancel_holds() {
            (Outcome::Declined, Some("the order is closed"), false)
        } else if barcode.is_none() {
            (
                Outcome::Pending,
                Some("waiting for the customer to scan the QR code"),
                false,
            )
        } else {
            match last_two_digits(money.minor()) {
                51 => (
                    Outcome::Declined,
                    Some("amounts ending in 51 are declined"),
                    false,
                ),
                52 => (Outcome::Pending, None, true),
                _ => (Outcome::Approved, None, false),
            }
        };
        let asked = Asked {
            kind: OpKind::Pay,
            money,
            qr_code: barcode.is_none(),
            vendor,
            cancel_no: None,
        };
        let mut op = self.new_operation(asked, outcome, message, now);
        if decides_later {
            let at = due(now, late);
            op.decide_due_at = Some(at);
            effects
                .timers
                .push((Timer::Payment(transaction_no.to_owned()), at));
        }
        let answer = answer_of(transaction_no, None, &op);
        if let Some(order) = self.orders.get_mut(transaction_no) {
            order.payment = Some(op);
        }
        self.touch(&mut effects);
        Ok((answer, effects))
    }

    /// `POST /v1/close` and `POST /v1/reverse`: one cancel per transaction. A repeat answers
    /// the recorded cancel unless it was declined, in which case the new request tries again
    /// (the gateway asks anew only after it recorded the decline).
    #[allow(clippy::too_many_arguments)]
    pub fn cancel(
        &mut self,
        kind: OpKind,
        transaction_no: &str,
        money: Money,
        cancel_no: Option<&str>,
        now: DateTime<Utc>,
        late: Duration,
        calls: &mut CallbackPolicy<'_>,
    ) -> Result<(Answer, Effects), Refusal> {
        let mut effects = Effects::default();
        let order = self.order_entry(transaction_no, now)?;
        let mut earlier_declined = 0;
        if let Some(c) = &mut order.cancel {
            if c.outcome != Outcome::Declined {
                if !same_money(c, money) {
                    return Err(Refusal::Conflict(format!(
                        "transactionNo {transaction_no} was cancelled with {} {}",
                        c.amount_minor, c.currency
                    )));
                }
                c.requests += 1;
                let answer = answer_of(transaction_no, None, c);
                self.touch(&mut effects);
                return Ok((answer, effects));
            }
            earlier_declined = c.earlier_declined + 1;
        }
        if let Some(p) = &order.payment {
            if !same_money(p, money) {
                return Err(Refusal::Conflict(format!(
                    "transactionNo {transaction_no} was paid with {} {}",
                    p.amount_minor, p.currency
                )));
            }
        }
        let has_refunds = order
            .refunds
            .values()
            .any(|r| r.outcome != Outcome::Declined);
        let (outcome, message, decides_later) = if has_refunds {
            (
                Outcome::Declined,
                Some("the order has refunds; refund the rest instead"),
                false,
            )
        } else if last_two_digits(money.minor()) == 53 {
            (Outcome::Pending, None, true)
        } else {
            (Outcome::Approved, None, false)
        };
        let asked = Asked {
            kind,
            money,
            qr_code: false,
            vendor: None,
            cancel_no,
        };
        let mut op = self.new_operation(asked, outcome, message, now);
        op.earlier_declined = earlier_declined;
        if decides_later {
            let at = due(now, late);
            op.decide_due_at = Some(at);
            effects
                .timers
                .push((Timer::Cancel(transaction_no.to_owned()), at));
        }
        let answer = answer_of(transaction_no, None, &op);
        if let Some(order) = self.orders.get_mut(transaction_no) {
            order.cancel = Some(op);
        }
        if outcome == Outcome::Approved {
            self.cancel_takes_effect(transaction_no, now, calls, &mut effects);
        }
        self.touch(&mut effects);
        Ok((answer, effects))
    }

    /// An approved cancel ends a pending payment (declined, with a callback) or gives a paid
    /// one's money back.
    fn cancel_takes_effect(
        &mut self,
        transaction_no: &str,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
        effects: &mut Effects,
    ) {
        let Some(payment) = self
            .orders
            .get_mut(transaction_no)
            .and_then(|o| o.payment.as_mut())
        else {
            return;
        };
        match payment.outcome {
            Outcome::Pending => {
                payment.outcome = Outcome::Declined;
                payment.message = Some("closed before the customer paid".into());
                payment.decided_at = Some(now);
                payment.decide_due_at = None;
                let callback = callback_of(CallbackKind::Payment, transaction_no, None, payment);
                self.owe(callback, now, calls, effects);
            }
            Outcome::Approved => payment.returned_at = Some(now),
            Outcome::Declined => {}
        }
    }

    /// `POST /v1/refund`.
    pub fn refund(
        &mut self,
        transaction_no: &str,
        refund_no: &str,
        money: Money,
        now: DateTime<Utc>,
    ) -> Result<(Answer, Effects), Refusal> {
        let mut effects = Effects::default();
        let order = self.order_entry(transaction_no, now)?;
        if let Some(r) = order.refunds.get_mut(refund_no) {
            if !same_money(r, money) {
                return Err(Refusal::Conflict(format!(
                    "refundNo {refund_no} was used for {} {}",
                    r.amount_minor, r.currency
                )));
            }
            r.requests += 1;
            let answer = answer_of(transaction_no, Some(refund_no), r);
            self.touch(&mut effects);
            return Ok((answer, effects));
        }
        if order.refunds.len() + order.refunds_sealed.len() >= MAX_REFUNDS_PER_ORDER {
            // Not recorded, and every later refund of the order is declined the same way, so
            // the answer stays true without using more memory.
            return Ok((
                not_found(
                    transaction_no,
                    Some(refund_no),
                    "the order has too many refunds",
                ),
                effects,
            ));
        }
        let refundable = match &order.payment {
            Some(p) if p.outcome == Outcome::Approved && p.returned_at.is_none() => {
                let refunded: i64 = order
                    .refunds
                    .values()
                    .filter(|r| r.outcome == Outcome::Approved)
                    .map(|r| r.amount_minor)
                    .sum();
                Some((p.currency.clone(), p.amount_minor - refunded))
            }
            _ => None,
        };
        let (outcome, message) = if order.refunds_sealed.contains_key(refund_no) {
            (
                Outcome::Declined,
                "a query found no refund before this one arrived".to_owned(),
            )
        } else if order.cancel_holds() {
            (Outcome::Declined, "the order is cancelled".to_owned())
        } else {
            match refundable {
                None => (
                    Outcome::Declined,
                    "no approved payment to refund".to_owned(),
                ),
                Some((currency, _)) if currency != money.currency().code() => {
                    (Outcome::Declined, format!("the payment is in {currency}"))
                }
                Some((_, left)) if money.minor() > left => (
                    Outcome::Declined,
                    format!("exceeds the refundable {left} minor units"),
                ),
                Some(_) if last_two_digits(money.minor()) == 61 => (
                    Outcome::Declined,
                    "refunds ending in 61 are declined".to_owned(),
                ),
                Some(_) => (Outcome::Approved, String::new()),
            }
        };
        let message = (!message.is_empty()).then_some(message);
        let asked = Asked {
            kind: OpKind::Refund,
            money,
            qr_code: false,
            vendor: None,
            cancel_no: None,
        };
        let op = self.new_operation(asked, outcome, message.as_deref(), now);
        let answer = answer_of(transaction_no, Some(refund_no), &op);
        if let Some(order) = self.orders.get_mut(transaction_no) {
            order.refunds.insert(refund_no.to_owned(), op);
        }
        self.touch(&mut effects);
        Ok((answer, effects))
    }

    /// `POST /v1/query`. Finding no payment or refund seals it: it will be declined if it
    /// still arrives, so the `declined` answer stays true.
    pub fn query(
        &mut self,
        transaction_no: &str,
        operation: &QueryOperation,
        now: DateTime<Utc>,
    ) -> Result<(Answer, Effects), Refusal> {
        let mut effects = Effects::default();
        let order = self.orders.get(transaction_no);
        match operation {
            QueryOperation::Payment => {
                if let Some(p) = order.and_then(|o| o.payment.as_ref()) {
                    return Ok((answer_of(transaction_no, None, p), effects));
                }
                let order = self.order_entry(transaction_no, now)?;
                order.payment_sealed_at.get_or_insert(now);
                self.touch(&mut effects);
                Ok((not_found(transaction_no, None, "no such payment"), effects))
            }
            QueryOperation::Refund(refund_no) => {
                if let Some(r) = order.and_then(|o| o.refunds.get(refund_no)) {
                    return Ok((answer_of(transaction_no, Some(refund_no), r), effects));
                }
                let order = self.order_entry(transaction_no, now)?;
                if order.refunds.len() + order.refunds_sealed.len() < MAX_REFUNDS_PER_ORDER
                    || order.refunds_sealed.contains_key(refund_no)
                {
                    order.refunds_sealed.entry(refund_no.clone()).or_insert(now);
                    self.touch(&mut effects);
                }
                Ok((
                    not_found(transaction_no, Some(refund_no), "no such refund"),
                    effects,
                ))
            }
            QueryOperation::Cancel(_) => match order.and_then(|o| o.cancel.as_ref()) {
                Some(c) => Ok((answer_of(transaction_no, None, c), effects)),
                None => Ok((
                    not_found(transaction_no, None, "no cancel of this order"),
                    effects,
                )),
            },
        }
    }

    /// When the timer's operation decides itself, if it is still pending.
    pub fn timer_due(&self, timer: &Timer) -> Option<DateTime<Utc>> {
        let (transaction_no, is_payment) = match timer {
            Timer::Payment(t) => (t, true),
            Timer::Cancel(t) => (t, false),
        };
        let order = self.orders.get(transaction_no)?;
        let op = if is_payment {
            order.payment.as_ref()
        } else {
            order.cancel.as_ref()
        };
        op.filter(|o| o.outcome == Outcome::Pending)
            .and_then(|o| o.decide_due_at)
    }

    /// A timer fired: the pending operation decides itself as approved, unless something
    /// (the control endpoint, a cancel) decided it first.
    pub fn timer_fired(
        &mut self,
        timer: &Timer,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
    ) -> Effects {
        let mut effects = Effects::default();
        let (transaction_no, is_payment) = match timer {
            Timer::Payment(t) => (t, true),
            Timer::Cancel(t) => (t, false),
        };
        let Some(order) = self.orders.get(transaction_no) else {
            return effects;
        };
        let op = if is_payment {
            order.payment.as_ref()
        } else {
            order.cancel.as_ref()
        };
        let ripe = op.is_some_and(|o| {
            o.outcome == Outcome::Pending && o.decide_due_at.is_some_and(|d| d <= now)
        });
        if !ripe {
            return effects;
        }
        if is_payment {
            self.decide_payment(
                transaction_no,
                Outcome::Approved,
                None,
                now,
                calls,
                &mut effects,
            );
        } else {
            self.decide_cancel(transaction_no, now, calls, &mut effects);
        }
        effects
    }

    /// `POST /control/pay/{transactionNo}`: the customer pays (or refuses) a pending payment.
    pub fn customer_decides(
        &mut self,
        transaction_no: &str,
        outcome: Outcome,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
    ) -> Result<Effects, Refusal> {
        let pending = self
            .orders
            .get(transaction_no)
            .and_then(|o| o.payment.as_ref())
            .map(|p| p.outcome == Outcome::Pending);
        match pending {
            None => Err(Refusal::NotFound(format!(
                "no payment of transaction {transaction_no}"
            ))),
            Some(false) => Err(Refusal::Conflict(format!(
                "the payment of transaction {transaction_no} is not pending"
            ))),
            Some(true) if outcome == Outcome::Pending => Err(Refusal::Conflict(
                "the customer decides approved or declined".into(),
            )),
            Some(true) => {
                let mut effects = Effects::default();
                let message = (outcome == Outcome::Declined).then_some("the customer declined");
                self.decide_payment(transaction_no, outcome, message, now, calls, &mut effects);
                Ok(effects)
            }
        }
    }

    fn decide_payment(
        &mut self,
        transaction_no: &str,
        outcome: Outcome,
        message: Option<&str>,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
        effects: &mut Effects,
    ) {
        let Some(p) = self
            .orders
            .get_mut(transaction_no)
            .and_then(|o| o.payment.as_mut())
        else {
            return;
        };
        p.outcome = outcome;
        p.message = message.map(str::to_owned);
        p.decided_at = Some(now);
        p.decide_due_at = None;
        let callback = callback_of(CallbackKind::Payment, transaction_no, None, p);
        self.owe(callback, now, calls, effects);
        self.touch(effects);
    }

    fn decide_cancel(
        &mut self,
        transaction_no: &str,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
        effects: &mut Effects,
    ) {
        let Some(c) = self
            .orders
            .get_mut(transaction_no)
            .and_then(|o| o.cancel.as_mut())
        else {
            return;
        };
        c.outcome = Outcome::Approved;
        c.decided_at = Some(now);
        c.decide_due_at = None;
        let callback = callback_of(CallbackKind::Cancel, transaction_no, None, c);
        self.owe(callback, now, calls, effects);
        self.cancel_takes_effect(transaction_no, now, calls, effects);
        self.touch(effects);
    }

    /// Records a callback to deliver now (twice when the duplicate fault strikes).
    pub fn owe(
        &mut self,
        mut callback: Callback,
        now: DateTime<Utc>,
        calls: &mut CallbackPolicy<'_>,
        effects: &mut Effects,
    ) {
        if !calls.enabled {
            return;
        }
        if callback.callback_id.is_none() {
            callback.callback_id = Some(format!("cb-{}", self.next_callback_id));
        }
        let copies = if (calls.duplicate)() { 2 } else { 1 };
        for copy in 0..copies {
            if let Some(id) = self.record_callback(callback.clone(), now, copy > 0) {
                effects.callbacks.push(id);
            }
        }
        self.touch(effects);
    }

    /// Adds a delivery record, making room by dropping the oldest finished ones. `None` when
    /// every kept record is still owed.
    pub fn record_callback(
        &mut self,
        callback: Callback,
        now: DateTime<Utc>,
        duplicate: bool,
    ) -> Option<u64> {
        if self.callbacks.len() >= MAX_CALLBACK_RECORDS {
            if let Some(i) = self
                .callbacks
                .iter()
                .position(|c| c.status != CallbackStatus::Owed)
            {
                self.callbacks.remove(i);
            } else {
                tracing::warn!(
                    transaction_no = %callback.transaction_no,
                    "wallet-sim: {MAX_CALLBACK_RECORDS} callbacks owed; this one is not kept"
                );
                return None;
            }
        }
        let id = self.next_callback_id;
        self.next_callback_id += 1;
        self.callbacks.push(CallbackRecord {
            id,
            callback,
            status: CallbackStatus::Owed,
            attempts: 0,
            due_at: now,
            created_at: now,
            finished_at: None,
            last_http_status: None,
            last_error: None,
            injected: false,
            duplicate,
            corrupt_signature: false,
        });
        self.changes += 1;
        Some(id)
    }

    pub fn callback(&self, id: u64) -> Option<&CallbackRecord> {
        self.callbacks.iter().find(|c| c.id == id)
    }

    pub fn callback_mut(&mut self, id: u64) -> Option<&mut CallbackRecord> {
        self.changes += 1;
        self.callbacks.iter_mut().find(|c| c.id == id)
    }

    /// Records one delivery attempt: `http_status` is the gateway's answer, `None` with
    /// `error` when none came. Returns when to try again, if ever.
    pub fn callback_attempted(
        &mut self,
        id: u64,
        http_status: Option<u16>,
        error: Option<String>,
        now: DateTime<Utc>,
        attempts_max: u32,
        retry_base: Duration,
    ) -> Option<DateTime<Utc>> {
        let record = self.callback_mut(id)?;
        record.attempts += 1;
        record.last_http_status = http_status;
        record.last_error = error;
        let status = match http_status {
            Some(s) if (200..300).contains(&s) => CallbackStatus::Delivered,
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => CallbackStatus::Refused,
            _ if record.attempts >= attempts_max => CallbackStatus::Failed,
            _ => CallbackStatus::Owed,
        };
        record.status = status;
        if status != CallbackStatus::Owed {
            record.finished_at = Some(now);
            return None;
        }
        // Doubling pauses: base, 2×base, 4×base…, the exponent capped so it cannot overflow.
        let factor = 1u32 << record.attempts.saturating_sub(1).min(16);
        let pause = retry_base.saturating_mul(factor);
        record.due_at = due(now, pause);
        Some(record.due_at)
    }

    /// Timers and deliveries still owed, to restart them after a restart of the simulator.
    pub fn outstanding(&self) -> (Vec<(Timer, DateTime<Utc>)>, Vec<u64>) {
        let mut timers = Vec::new();
        for order in self.orders.values() {
            let pending_at = |op: &Option<Operation>| {
                op.as_ref()
                    .filter(|o| o.outcome == Outcome::Pending)
                    .and_then(|o| o.decide_due_at)
            };
            if let Some(at) = pending_at(&order.payment) {
                timers.push((Timer::Payment(order.transaction_no.clone()), at));
            }
            if let Some(at) = pending_at(&order.cancel) {
                timers.push((Timer::Cancel(order.transaction_no.clone()), at));
            }
        }
        let callbacks = self
            .callbacks
            .iter()
            .filter(|c| c.status == CallbackStatus::Owed)
            .map(|c| c.id)
            .collect();
        (timers, callbacks)
    }
}

fn callback_of(
    kind: CallbackKind,
    transaction_no: &str,
    refund_no: Option<&str>,
    op: &Operation,
) -> Callback {
    Callback {
        callback_id: None,
        kind,
        transaction_no: transaction_no.to_owned(),
        refund_no: refund_no.map(str::to_owned),
        cancel_no: op.cancel_no.clone(),
        amount_minor: op.amount_minor,
        currency: op.currency.clone(),
        outcome: op.outcome,
        wallet_ref: Some(op.wallet_ref.clone()),
        message: op.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_domain::Currency;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap()
    }

    const LATE: Duration = Duration::from_millis(500);

    fn no_dup() -> bool {
        false
    }

    fn pay(l: &mut Ledger, tx: &str, minor: i64) -> Answer {
        l.pay(tx, usd(minor), Some("2812"), None, now(), LATE)
            .unwrap()
            .0
    }

    #[test]
    fn the_amount_decides_a_payment() {
        let mut l = Ledger::default();
        assert_eq!(pay(&mut l, "1", 1300).outcome, Outcome::Approved);
        assert_eq!(pay(&mut l, "2", 1351).outcome, Outcome::Declined);
        let (answer, effects) = l
            .pay("3", usd(1352), Some("2812"), None, now(), LATE)
            .unwrap();
        assert_eq!(answer.outcome, Outcome::Pending);
        assert_eq!(effects.timers.len(), 1);
        let (qr, effects) = l.pay("4", usd(1300), None, None, now(), LATE).unwrap();
        assert_eq!(qr.outcome, Outcome::Pending);
        assert!(
            effects.timers.is_empty(),
            "a QR payment waits for the customer"
        );
    }

    #[test]
    fn a_repeat_answers_the_recorded_result_and_another_amount_conflicts() {
        let mut l = Ledger::default();
        let first = pay(&mut l, "1", 1300);
        let again = pay(&mut l, "1", 1300);
        assert_eq!(first, again);
        assert_eq!(l.orders["1"].payment.as_ref().unwrap().requests, 2);
        assert!(matches!(
            l.pay("1", usd(1400), Some("2812"), None, now(), LATE),
            Err(Refusal::Conflict(_))
        ));
        let r1 = l.refund("1", "r1", usd(500), now()).unwrap().0;
        assert_eq!(r1.outcome, Outcome::Approved);
        assert_eq!(l.refund("1", "r1", usd(500), now()).unwrap().0, r1);
        assert!(matches!(
            l.refund("1", "r1", usd(600), now()),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn refunds_follow_the_rules_and_never_exceed_the_payment() {
        let mut l = Ledger::default();
        pay(&mut l, "1", 1000);
        let refund =
            |l: &mut Ledger, no: &str, minor| l.refund("1", no, usd(minor), now()).unwrap().0;
        assert_eq!(refund(&mut l, "a", 161).outcome, Outcome::Declined);
        assert_eq!(refund(&mut l, "b", 600).outcome, Outcome::Approved);
        assert_eq!(refund(&mut l, "c", 500).outcome, Outcome::Declined);
        assert_eq!(refund(&mut l, "d", 400).outcome, Outcome::Approved);
        let none = l.refund("9", "e", usd(100), now()).unwrap().0;
        assert_eq!(none.outcome, Outcome::Declined);
        let eur = Money::from_minor(100, Currency::from_code("EUR").unwrap()).unwrap();
        pay(&mut l, "2", 1000);
        assert_eq!(
            l.refund("2", "f", eur, now()).unwrap().0.outcome,
            Outcome::Declined
        );
    }

    #[test]
    fn a_cancel_closes_a_pending_payment_and_returns_a_paid_one() {
        let mut l = Ledger::default();
        let mut dup = no_dup;
        let mut calls = CallbackPolicy {
            enabled: true,
            duplicate: &mut dup,
        };
        l.pay("1", usd(1352), Some("2812"), None, now(), LATE)
            .unwrap();
        let (answer, effects) = l
            .cancel(OpKind::Close, "1", usd(1352), None, now(), LATE, &mut calls)
            .unwrap();
        assert_eq!(answer.outcome, Outcome::Approved);
        assert_eq!(
            effects.callbacks.len(),
            1,
            "the payment's decline is called back"
        );
        let p = l.orders["1"].payment.as_ref().unwrap();
        assert_eq!(p.outcome, Outcome::Declined);
        // The payment's timer finds it decided and does nothing.
        let fired = l.timer_fired(
            &Timer::Payment("1".into()),
            now() + chrono::Duration::seconds(1),
            &mut calls,
        );
        assert!(!fired.changed);
        // A pay for a closed order is declined.
        assert_eq!(pay(&mut l, "2", 100).outcome, Outcome::Approved);
        l.cancel(
            OpKind::Reverse,
            "2",
            usd(100),
            None,
            now(),
            LATE,
            &mut calls,
        )
        .unwrap();
        assert!(l.orders["2"]
            .payment
            .as_ref()
            .unwrap()
            .returned_at
            .is_some());
        assert_eq!(
            l.refund("2", "r", usd(10), now()).unwrap().0.outcome,
            Outcome::Declined
        );
        let closed_first = l
            .cancel(OpKind::Close, "3", usd(100), None, now(), LATE, &mut calls)
            .unwrap()
            .0;
        assert_eq!(closed_first.outcome, Outcome::Approved);
        assert_eq!(pay(&mut l, "3", 100).outcome, Outcome::Declined);
    }

    #[test]
    fn pending_operations_decide_when_their_timer_fires() {
        let mut l = Ledger::default();
        let mut dup = || true;
        let mut calls = CallbackPolicy {
            enabled: true,
            duplicate: &mut dup,
        };
        l.pay("1", usd(1352), Some("2812"), None, now(), LATE)
            .unwrap();
        let early = l.timer_fired(&Timer::Payment("1".into()), now(), &mut calls);
        assert!(!early.changed, "not before it is due");
        let later = now() + chrono::Duration::seconds(1);
        let fired = l.timer_fired(&Timer::Payment("1".into()), later, &mut calls);
        assert_eq!(
            fired.callbacks.len(),
            2,
            "the duplicate fault sends it twice"
        );
        assert_eq!(
            l.callback(fired.callbacks[0]).unwrap().callback.callback_id,
            l.callback(fired.callbacks[1]).unwrap().callback.callback_id
        );
        assert_eq!(
            l.query("1", &QueryOperation::Payment, later)
                .unwrap()
                .0
                .outcome,
            Outcome::Approved
        );
        let (answer, effects) = l
            .cancel(
                OpKind::Reverse,
                "1",
                usd(1352),
                None,
                later,
                LATE,
                &mut calls,
            )
            .unwrap();
        assert_eq!(answer.outcome, Outcome::Approved);
        assert!(effects.timers.is_empty());
        l.pay("2", usd(253), Some("2812"), None, now(), LATE)
            .unwrap();
        let (answer, effects) = l
            .cancel(
                OpKind::Reverse,
                "2",
                usd(253),
                None,
                now(),
                LATE,
                &mut calls,
            )
            .unwrap();
        assert_eq!(answer.outcome, Outcome::Pending);
        assert_eq!(effects.timers.len(), 1);
        l.timer_fired(&Timer::Cancel("2".into()), later, &mut calls);
        assert_eq!(
            l.query("2", &QueryOperation::Cancel("c".into()), later)
                .unwrap()
                .0
                .outcome,
            Outcome::Approved
        );
    }

    #[test]
    fn a_query_that_finds_nothing_makes_the_decline_final() {
        let mut l = Ledger::default();
        let q = l.query("1", &QueryOperation::Payment, now()).unwrap();
        assert_eq!(q.0.outcome, Outcome::Declined);
        assert!(q.1.changed);
        assert_eq!(pay(&mut l, "1", 1300).outcome, Outcome::Declined);
        pay(&mut l, "2", 1300);
        let q = l
            .query("2", &QueryOperation::Refund("r".into()), now())
            .unwrap()
            .0;
        assert_eq!(q.outcome, Outcome::Declined);
        assert_eq!(q.refund_no.as_deref(), Some("r"));
        assert_eq!(
            l.refund("2", "r", usd(100), now()).unwrap().0.outcome,
            Outcome::Declined
        );
        assert_eq!(
            l.refund("2", "s", usd(100), now()).unwrap().0.outcome,
            Outcome::Approved
        );
    }

    #[test]
    fn callbacks_are_retried_with_growing_pauses_then_kept_as_failed() {
        let mut l = Ledger::default();
        let cb = Callback {
            callback_id: None,
            kind: CallbackKind::Payment,
            transaction_no: "1".into(),
            refund_no: None,
            cancel_no: None,
            amount_minor: 100,
            currency: "USD".into(),
            outcome: Outcome::Approved,
            wallet_ref: None,
            message: None,
        };
        let id = l.record_callback(cb.clone(), now(), false).unwrap();
        let base = Duration::from_millis(100);
        let first = l
            .callback_attempted(id, Some(503), None, now(), 3, base)
            .unwrap();
        assert_eq!(first, now() + chrono::Duration::milliseconds(100));
        let second = l
            .callback_attempted(id, None, Some("refused".into()), now(), 3, base)
            .unwrap();
        assert_eq!(second, now() + chrono::Duration::milliseconds(200));
        assert_eq!(
            l.callback_attempted(id, Some(500), None, now(), 3, base),
            None
        );
        assert_eq!(l.callback(id).unwrap().status, CallbackStatus::Failed);
        let id = l.record_callback(cb.clone(), now(), false).unwrap();
        assert_eq!(
            l.callback_attempted(id, Some(409), None, now(), 3, base),
            None
        );
        assert_eq!(l.callback(id).unwrap().status, CallbackStatus::Refused);
        let id = l.record_callback(cb, now(), false).unwrap();
        assert_eq!(
            l.callback_attempted(id, Some(200), None, now(), 3, base),
            None
        );
        assert_eq!(l.callback(id).unwrap().status, CallbackStatus::Delivered);
    }

    #[test]
    fn the_ledger_survives_a_round_trip_through_json() {
        let mut l = Ledger::default();
        pay(&mut l, "1", 1352);
        l.refund("1", "r", usd(1), now()).unwrap();
        let text = serde_json::to_vec(&l).unwrap();
        let mut back: Ledger = serde_json::from_slice(&text).unwrap();
        back.changes = l.changes;
        assert_eq!(back, l);
        assert_eq!(back.outstanding().0.len(), 1);
    }
}
