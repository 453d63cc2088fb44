//! Records rendered as Pockyt result objects. Amounts are strings in major units.

use serde_json::{json, Value as Json};
use tillgate_core::{CancelRecord, PaymentRecord, RefundRecord};
use tillgate_domain::{CancelState, MerchantZone, Money, PaymentState, RefundState};

/// Pockyt's `transactionStatus` of a payment (DESIGN.md's state table).
pub fn transaction_status(p: &PaymentRecord) -> &'static str {
    match p.payment.state() {
        PaymentState::Created => "init",
        PaymentState::Pending => "pending",
        PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded => "success",
        PaymentState::Failed => "failed",
        // A paid transaction reversed by cancel reads as refunded in full through the void.
        PaymentState::Cancelled if p.payment.was_reversed() => "success",
        PaymentState::Cancelled | PaymentState::Closed => "closed",
    }
}

fn refund_status(state: RefundState) -> &'static str {
    match state {
        RefundState::Succeeded => "success",
        RefundState::Failed | RefundState::Closed => "failed",
        RefundState::Generated | RefundState::InProgress => "pending",
    }
}

fn cancel_status(state: CancelState) -> &'static str {
    match state {
        CancelState::Succeeded => "success",
        CancelState::Failed | CancelState::Closed => "failed",
        CancelState::Generated | CancelState::InProgress => "pending",
    }
}

fn time(zone: MerchantZone, at: chrono::DateTime<chrono::Utc>) -> String {
    zone.local_time(at).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn money(m: Money) -> String {
    m.to_decimal_string()
}

/// What went back to the customer by the cancel (the whole amount of a reversal).
fn voided(p: &PaymentRecord) -> Money {
    if p.payment.was_reversed() {
        p.payment.amount()
    } else {
        Money::zero(p.payment.amount().currency())
    }
}

/// The refunded total a merchant sees: refunds plus a reversal.
fn refunded(p: &PaymentRecord) -> Money {
    p.payment
        .refunded()
        .checked_add(voided(p))
        .unwrap_or(p.payment.amount())
}

/// The cashier the add named (`storeAdminNo`), kept in the payment's dialect-owned JSON.
fn store_admin_no(p: &PaymentRecord) -> Option<String> {
    let extra: Json = serde_json::from_str(p.extra.as_deref()?).ok()?;
    extra.get("storeAdminNo")?.as_str().map(str::to_owned)
}

/// The transaction object of add and pay answers.
pub fn transaction(p: &PaymentRecord, zone: MerchantZone) -> Json {
    json!({
        "amount": money(p.payment.amount()),
        "createTime": time(zone, p.created_at),
        "currency": p.payment.amount().currency().code(),
        "merchantNo": p.merchant_no,
        "originalTransactionNo": null,
        "paymentTime": p.payment.paid_at().map(|t| time(zone, t)),
        "reference": p.reference,
        "refundAmount": money(refunded(p)),
        "settleCurrency": p.settle_currency.code(),
        "storeAdminNo": store_admin_no(p),
        "storeNo": p.store_no,
        "transactionNo": p.transaction_no,
        "transactionStatus": transaction_status(p),
        "transactionType": "payment",
        "voidAmount": money(voided(p)),
    })
}

/// The answer of a refund.
pub fn refund(p: &PaymentRecord, r: &RefundRecord) -> Json {
    json!({
        "amount": money(p.payment.amount()),
        "currency": p.payment.amount().currency().code(),
        "reference": p.reference,
        "refundAmount": money(r.amount),
        "refundReference": r.refund_reference,
        "refundTransactionNo": r.refund_no,
        "settleCurrency": p.settle_currency.code(),
        "status": refund_status(r.state),
        "transactionNo": p.transaction_no,
    })
}

/// The answer of a cancel.
pub fn cancel(p: &PaymentRecord, c: &CancelRecord) -> Json {
    json!({
        "amount": money(p.payment.amount()),
        "currency": p.payment.amount().currency().code(),
        "reference": p.reference,
        "status": cancel_status(c.state),
        "transactionNo": p.transaction_no,
        "transactionStatus": transaction_status(p),
    })
}

/// The answer of a transaction query, with every refund.
pub fn query(p: &PaymentRecord, refunds: &[RefundRecord], zone: MerchantZone) -> Json {
    let last = refunds
        .iter()
        .rev()
        .find(|r| r.state == RefundState::Succeeded);
    json!({
        "transactionNo": p.transaction_no,
        "reference": p.reference,
        "amount": money(p.payment.amount()),
        "status": transaction_status(p),
        "transactionStatus": transaction_status(p),
        "currency": p.payment.amount().currency().code(),
        "settleCurrency": p.settle_currency.code(),
        "transactionType": "payment",
        "createTime": time(zone, p.created_at),
        "paymentTime": p.payment.paid_at().map(|t| time(zone, t)),
        "refundAmount": money(refunded(p)),
        "voidAmount": money(voided(p)),
        "refundTransactionId": last.map(|r| r.refund_no.clone()),
        "refundReference": last.and_then(|r| r.refund_reference.clone()),
        "refundRmbAmount": null,
        "merchantNo": p.merchant_no,
        "storeNo": p.store_no,
        "refunds": refunds.iter().map(|r| json!({
            "refundTransactionNo": r.refund_no,
            "refundReference": r.refund_reference,
            "refundAmount": money(r.amount),
            "status": refund_status(r.state),
            "createTime": time(zone, r.created_at),
        })).collect::<Vec<_>>(),
    })
}
