//! The records the store keeps and the service hands to dialects.

use chrono::{DateTime, Utc};
use tillgate_domain::{
    CancelKind, CancelState, Currency, MerchantZone, Money, Payment, RefundState,
};

/// A merchant as the gateway knows it.
#[derive(Debug, Clone)]
pub struct MerchantRecord {
    pub id: i64,
    pub merchant_no: String,
    pub zone: MerchantZone,
    /// Created by sandbox mode with public sample credentials; production refuses to start
    /// while one exists.
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
}

/// A Pockyt store credential as stored: the token is sealed.
#[derive(Debug, Clone)]
pub struct StoreRow {
    pub merchant: MerchantRecord,
    pub store_no: String,
    pub token_sealed: String,
}

/// A new merchant to create (or find, when the number exists).
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub merchant_no: String,
    pub zone: MerchantZone,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
}

/// The answer of adding a store to a merchant.
#[derive(Debug, Clone)]
pub enum StoreAdded {
    Added,
    /// The store exists; its sealed token is returned unchanged.
    Exists {
        token_sealed: String,
    },
}

/// How a merchant names one of its payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentKey {
    /// The gateway's transaction number.
    TransactionNo(String),
    /// The merchant's own reference.
    Reference(String),
}

/// One payment with everything the dialects render.
#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub id: i64,
    pub transaction_no: String,
    pub merchant_id: i64,
    pub merchant_no: String,
    pub store_no: String,
    pub reference: String,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub notify_url: Option<String>,
    pub vendor: Option<String>,
    /// Digest of the add request's parameters, for idempotent replays.
    pub fingerprint: String,
    /// Digest of the pay request's parameters, once one was accepted.
    pub pay_fingerprint: Option<String>,
    pub payment: Payment,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Bumped by every change; backends use it for compare-and-swap updates.
    pub version: i64,
}

/// A payment to insert.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub transaction_no: String,
    pub merchant_id: i64,
    pub merchant_no: String,
    pub store_no: String,
    pub reference: String,
    pub amount: Money,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub notify_url: Option<String>,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One refund order of a payment.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub id: i64,
    pub refund_no: String,
    pub payment_id: i64,
    pub merchant_id: i64,
    pub refund_reference: Option<String>,
    pub amount: Money,
    pub state: RefundState,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A refund to insert.
#[derive(Debug, Clone)]
pub struct NewRefund {
    pub refund_no: String,
    pub refund_reference: Option<String>,
    pub amount: Money,
    pub fingerprint: String,
}

/// One cancel order of a payment: a close of an unpaid payment or a same-day reversal.
#[derive(Debug, Clone)]
pub struct CancelRecord {
    pub id: i64,
    pub cancel_no: String,
    pub payment_id: i64,
    pub merchant_id: i64,
    pub kind: CancelKind,
    pub state: CancelState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A cancel to insert.
#[derive(Debug, Clone)]
pub struct NewCancel {
    pub cancel_no: String,
    pub kind: CancelKind,
}

/// One line of a payment's audit timeline.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub payment_id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}
