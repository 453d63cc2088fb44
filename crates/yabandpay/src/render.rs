//! Answer data and notification fields: a payment or refund, read from a snapshot (of its
//! record for answers, frozen in the outbox for notifications), in YabandPay's field names and
//! state names.
//!
//! Every value is a string, as in seed 003's example; times are Unix seconds (`createDate`
//! "1706771212"), amounts decimal strings in major units ("0.10").

use crate::extra::{self, PayExtra, RefundExtra};
use serde_json::{Map, Value as Json};
use tillgate_core::snapshot::{PaymentSnapshot, RefundSnapshot};
use tillgate_domain::{Money, PaymentState, RefundState};

/// The state a payment shows while a cancel of it waits for the terminal or the wallet.
pub const CANCEL_IN_PROGRESS: &str = "processing";

/// YabandPay's name of a payment state (DESIGN.md's table). A sale refused on the terminal is
/// `declined` (the terminal said no); a wallet payment refused is `failed`.
pub fn payment_state(state: PaymentState, terminal_sale: bool) -> &'static str {
    match state {
        PaymentState::Created => "pending",
        PaymentState::Pending => "processing",
        PaymentState::Paid | PaymentState::PartiallyRefunded => "paid",
        PaymentState::Refunded => "refunded",
        PaymentState::Failed if terminal_sale => "declined",
        PaymentState::Failed => "failed",
        PaymentState::Cancelled => "cancelled",
        PaymentState::Closed => "expired",
    }
}

/// YabandPay's name of a refund state.
pub fn refund_state(state: RefundState) -> &'static str {
    match state {
        RefundState::Generated => "refund pending",
        RefundState::InProgress => "refund processing",
        RefundState::Succeeded => "refunded",
        RefundState::Failed | RefundState::Closed => "failed",
    }
}

/// A payment as the dialect shows it.
#[derive(Debug, Clone)]
pub struct PaymentView {
    /// The terminal (YabandPay user) that made it.
    pub user: String,
    pub trade_id: String,
    pub order_id: String,
    pub amount: Money,
    pub state: PaymentState,
    pub refunded: Money,
    pub created_at_s: i64,
    pub paid_at_s: Option<i64>,
    pub description: Option<String>,
    pub extra: PayExtra,
}

impl PaymentView {
    pub fn of(p: &PaymentSnapshot) -> PaymentView {
        let extra: PayExtra = extra::parse_lenient(p.extra.as_deref());
        PaymentView {
            user: p.store_no.clone(),
            trade_id: p.transaction_no.clone(),
            order_id: p.reference.clone(),
            amount: p.payment.amount(),
            state: p.payment.state(),
            refunded: p.payment.refunded(),
            created_at_s: p.created_at.timestamp(),
            paid_at_s: p.payment.paid_at().map(|t| t.timestamp()),
            description: p.description.clone().or_else(|| extra.description.clone()),
            extra,
        }
    }

    pub fn state_name(&self) -> &'static str {
        payment_state(self.state, self.extra.is_terminal_sale())
    }
}

/// A refund as the dialect shows it.
#[derive(Debug, Clone)]
pub struct RefundView {
    pub refund_id: String,
    pub m_refund_id: Option<String>,
    pub amount: Money,
    pub state: RefundState,
    pub created_at_s: i64,
    pub extra: RefundExtra,
}

impl RefundView {
    pub fn of(r: &RefundSnapshot) -> RefundView {
        RefundView {
            refund_id: r.refund_no.clone(),
            m_refund_id: r.refund_reference.clone(),
            amount: r.amount,
            state: r.state,
            created_at_s: r.created_at.timestamp(),
            extra: extra::parse_lenient(r.extra.as_deref()),
        }
    }
}

/// Answer data: string values in the order given.
pub type Data = Map<String, Json>;

fn data(pairs: Vec<(&str, String)>) -> Data {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Json::String(v)))
        .collect()
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Seed 003's answer fields: what a cancel of any kind answers.
pub fn payment_core(v: &PaymentView, state: &str) -> Data {
    data(vec![
        ("type", "payment".into()),
        ("user", v.user.clone()),
        ("amount", v.amount.to_decimal_string()),
        ("currency", v.amount.currency().code().to_owned()),
        ("trade_id", v.trade_id.clone()),
        ("description", opt(&v.description)),
        ("order_id", v.order_id.clone()),
        ("createDate", v.created_at_s.to_string()),
        ("demo", opt(&v.extra.demo)),
        // The wallet's own transaction id; the gateway's channels do not report one.
        ("transaction_id", String::new()),
        ("state", state.to_owned()),
    ])
}

/// A payment's answer to the method that created it: seed 003's fields plus the payment's.
pub fn payment(v: &PaymentView) -> Data {
    let mut d = payment_core(v, v.state_name());
    d.extend(data(vec![
        ("pay_method", pay_method(v).into()),
        ("sub_pay_method", opt(&v.extra.sub_pay_method)),
        ("settlement_amount", v.amount.to_decimal_string()),
        ("settlement_currency", v.amount.currency().code().to_owned()),
        (
            "paid_time",
            v.paid_at_s.map(|s| s.to_string()).unwrap_or_default(),
        ),
    ]));
    if !v.refunded.is_zero() {
        d.insert(
            "refund_amount".into(),
            Json::String(v.refunded.to_decimal_string()),
        );
    }
    d
}

/// `v3.QueryOrder`'s answer: the payment under `transaction_info`.
pub fn query_order(v: &PaymentView) -> Data {
    let mut info = payment(v);
    info.remove("createDate");
    info.insert(
        "created_at".into(),
        Json::String(v.created_at_s.to_string()),
    );
    info.insert(
        "refund_amount".into(),
        Json::String(v.refunded.to_decimal_string()),
    );
    let mut d = Data::new();
    d.insert("transaction_info".into(), Json::Object(info));
    d
}

/// `online` for a payment of `v3.CreatePayments`, `offline` for the others.
fn pay_method(v: &PaymentView) -> &'static str {
    if v.extra.method.as_deref() == Some(crate::api::Method::CreatePayments.name()) {
        "online"
    } else {
        "offline"
    }
}

/// `v3.CreatePayments`' answer: the payment and the hosted page the customer completes it on.
pub fn online_payment(v: &PaymentView, page_url: &str) -> Data {
    let mut d = payment(v);
    d.insert("url".into(), Json::String(page_url.to_owned()));
    d.insert("exchange_rate".into(), Json::String("1".into()));
    d
}

/// A QR payment's answer: the payment and the code the customer scans (the address of its
/// hosted page, which shows the code and follows the payment).
pub fn qr_payment(v: &PaymentView, page_url: &str) -> Data {
    let mut d = payment(v);
    d.insert("url".into(), Json::String(page_url.to_owned()));
    d.insert("qrcode".into(), Json::String(page_url.to_owned()));
    d
}

/// A refund's answer (create and query) and notification fields.
pub fn refund(p: &PaymentView, r: &RefundView) -> Data {
    data(vec![
        ("type", "refund".into()),
        ("user", p.user.clone()),
        ("trade_id", p.trade_id.clone()),
        ("order_id", p.order_id.clone()),
        ("refund_id", r.refund_id.clone()),
        ("m_refund_id", opt(&r.m_refund_id)),
        ("refund_amount", r.amount.to_decimal_string()),
        ("refund_currency", r.amount.currency().code().to_owned()),
        ("refund_description", opt(&r.extra.refund_description)),
        ("amount", p.amount.to_decimal_string()),
        ("currency", p.amount.currency().code().to_owned()),
        ("createDate", r.created_at_s.to_string()),
        ("state", refund_state(r.state).to_owned()),
    ])
}

/// Data as notification fields: strings only, none empty or `"0"` (some verifiers drop those
/// before signing, others sign them; without them both agree), nothing nested.
pub fn notification_fields(d: &Data) -> Vec<(String, String)> {
    d.iter()
        .filter_map(|(k, v)| match v {
            Json::String(s) if !s.is_empty() && s != "0" => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_state_has_a_yabandpay_name() {
        let names: Vec<&str> = PaymentState::ALL
            .into_iter()
            .map(|s| payment_state(s, false))
            .collect();
        assert_eq!(
            names,
            [
                "pending",
                "processing",
                "paid",
                "paid",
                "refunded",
                "failed",
                "cancelled",
                "expired"
            ]
        );
        assert_eq!(payment_state(PaymentState::Failed, true), "declined");
        assert_eq!(refund_state(RefundState::Succeeded), "refunded");
        assert_eq!(refund_state(RefundState::Generated), "refund pending");
        assert_eq!(refund_state(RefundState::InProgress), "refund processing");
        assert_eq!(refund_state(RefundState::Failed), "failed");
    }

    #[test]
    fn notification_fields_leave_out_empty_and_zero_values() {
        let d = data(vec![
            ("a", "x".into()),
            ("b", String::new()),
            ("c", "0".into()),
            ("d", "0.00".into()),
        ]);
        assert_eq!(
            notification_fields(&d),
            [
                ("a".to_owned(), "x".to_owned()),
                ("d".to_owned(), "0.00".to_owned())
            ]
        );
    }
}
