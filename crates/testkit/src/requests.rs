//! Requests as a merchant's POS sends them, for tests that drive the lifecycle directly.

use crate::Kit;
use tillgate_core::service::{AddRequest, CancelOptions, NotifyTo, PayRequest, RefundRequest};
use tillgate_core::{
    CancelRecord, Dialect, MerchantRecord, PaymentKey, PaymentRecord, RefundRecord,
};
use tillgate_domain::{BusinessDayRule, CancelIntent, Currency, Key, Money};

/// `minor` US cents.
pub fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::from_code("USD").expect("USD is known"))
        .expect("a valid amount")
}

/// Adds `amount` in the Pockyt dialect, keyed by `reference`, notified to a closed port.
pub fn add_request(reference: &str, amount: Money) -> AddRequest {
    AddRequest {
        store_no: "300001".into(),
        reference: Key::parse(reference).expect("a valid reference"),
        amount,
        settle_currency: amount.currency(),
        description: None,
        notify_url: Some("http://127.0.0.1:9/notify".into()),
        timeout_minutes: None,
        dialect: Dialect::Pockyt,
        extra: None,
    }
}

/// A wallet barcode scanned by the POS.
pub fn pay_request() -> PayRequest {
    PayRequest {
        barcode: Some("281234567890123456".into()),
        vendor: Some("alipay".into()),
    }
}

/// Refunds `amount`, keyed by `reference` when given, notified where the payment is.
pub fn refund_request(amount: Money, reference: Option<&str>) -> RefundRequest {
    RefundRequest {
        amount,
        settle_currency: None,
        refund_reference: reference.map(|r| Key::parse(r).expect("a valid reference")),
        notify: NotifyTo::PaymentUrl,
        extra: None,
    }
}

/// The key of a payment by its transaction number.
pub fn key(p: &PaymentRecord) -> PaymentKey {
    PaymentKey::TransactionNo(p.transaction_no.clone())
}

impl Kit {
    /// Adds and pays a transaction; the wallet's answer to the pay is whatever it is told.
    pub async fn added_and_paid(
        &self,
        merchant: &MerchantRecord,
        reference: &str,
        amount: Money,
    ) -> PaymentRecord {
        let added = self
            .app
            .add(merchant, add_request(reference, amount))
            .await
            .unwrap_or_else(|e| panic!("add {reference}: {e}"));
        self.app
            .pay(merchant, &key(&added.value), pay_request())
            .await
            .unwrap_or_else(|e| panic!("pay {reference}: {e}"))
            .value
    }

    /// Refunds `amount` of `p`, keyed by `reference` when given; the wallet's answer is
    /// whatever it is told. Answers the refund as it then stands.
    pub async fn refunded(
        &self,
        merchant: &MerchantRecord,
        p: &PaymentRecord,
        amount: Money,
        reference: Option<&str>,
    ) -> RefundRecord {
        self.app
            .refund(merchant, &key(p), refund_request(amount, reference))
            .await
            .unwrap_or_else(|e| panic!("refund of {}: {e}", p.transaction_no))
            .value
            .1
    }

    /// Cancels `p` through the wallet, within the calendar day of the merchant's zone; the
    /// wallet's answer is whatever it is told. Answers the cancel as it then stands.
    pub async fn cancelled(&self, merchant: &MerchantRecord, p: &PaymentRecord) -> CancelRecord {
        let rule = BusinessDayRule::calendar_day(merchant.zone);
        let options = CancelOptions::default();
        self.app
            .cancel(merchant, &key(p), rule, CancelIntent::Cancel, options)
            .await
            .unwrap_or_else(|e| panic!("cancel of {}: {e}", p.transaction_no))
            .value
            .1
    }
}
