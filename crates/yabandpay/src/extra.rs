//! What the dialect keeps with a payment, a refund and a cancel (the records' `extra` JSON),
//! so that answers and notifications can repeat the merchant's own fields later.
//!
//! The payment's extra is part of the add request's fingerprint, so it holds only what the
//! request said, never a time, a generated value or the `request_id` (a retry of a sale with a
//! new `request_id` must replay the same `order_id`). The `auth_code` is deliberately not kept:
//! it is a one-time customer credential.

use serde::{Deserialize, Serialize};

/// The YabandPay fields of a payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayExtra {
    /// The method that created it (`v3.POS`, `v3.BarcodePayment`, `v3.QRcodePayment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_pay_method: Option<String>,
    /// Kept here as well as on the payment: notifications render from frozen facts, which do
    /// not carry the payment's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The merchant's `demo` field, echoed in answers (seed 003's example shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<String>,
    /// `v3.CreatePayments`: where the customer goes once paid, and once cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ideal_email: Option<String>,
}

impl PayExtra {
    /// True for a sale taken on a POS terminal: its refusal is the terminal's decline.
    pub fn is_terminal_sale(&self) -> bool {
        self.method.as_deref() == Some(crate::api::Method::Pos.name())
    }
}

/// The YabandPay fields of a refund.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefundExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_description: Option<String>,
}

/// The YabandPay fields of a cancel, for the payment's timeline and the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CancelExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Serialises an extra; a struct of strings always serialises.
pub fn to_json<T: Serialize>(extra: &T) -> String {
    serde_json::to_string(extra).unwrap_or_else(|_| "{}".to_owned())
}

/// Reads an extra for an answer; none, or one written by another dialect, is the empty one.
pub fn parse_lenient<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> T {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_writes_the_same_text_and_foreign_extras_read_as_empty() {
        let e = PayExtra {
            method: Some("v3.POS".into()),
            description: Some("coffee".into()),
            ..PayExtra::default()
        };
        let text = to_json(&e);
        assert_eq!(text, r#"{"method":"v3.POS","description":"coffee"}"#);
        assert!(parse_lenient::<PayExtra>(Some(&text)).is_terminal_sale());
        assert_eq!(parse_lenient::<PayExtra>(Some("[1]")), PayExtra::default());
        assert_eq!(parse_lenient::<RefundExtra>(None), RefundExtra::default());
        let c: CancelExtra = parse_lenient(Some(r#"{"tid":"T1","later":1}"#));
        assert_eq!(c.tid.as_deref(), Some("T1"));
    }
}
