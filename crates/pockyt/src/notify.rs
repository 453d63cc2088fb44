//! Pockyt's IPN: a form POST of the transaction's facts signed with the store's token
//! (verifySign), acknowledged by the plain-text body `success`.
//!
//! No field is ever sent empty: the PHP SDK signs empty fields and the Go SDK skips them, so a
//! notification without empty fields is the only one both verify.

use crate::params::{Params, Value};
use crate::sign;
use async_trait::async_trait;
use std::sync::Arc;
use tillgate_core::notify::{Ack, Facts, RenderError, Rendered, Renderer};
use tillgate_core::service::{CredentialError, Lifecycle};
use tillgate_domain::{Currency, Money, PaymentState, RefundState};

/// Renders Pockyt IPNs.
pub struct PockytRenderer {
    app: Arc<Lifecycle>,
}

impl PockytRenderer {
    pub fn new(app: Arc<Lifecycle>) -> PockytRenderer {
        PockytRenderer { app }
    }
}

/// The `status` a notification reports, from the payment's state after the change.
fn status(facts: &Facts) -> &'static str {
    match PaymentState::parse(&facts.state) {
        Some(PaymentState::Created) => "init",
        Some(PaymentState::Pending) => "pending",
        Some(PaymentState::Failed) => "failed",
        Some(PaymentState::Cancelled) if facts.reversed => "success",
        Some(PaymentState::Cancelled) | Some(PaymentState::Closed) => "closed",
        _ => "success",
    }
}

fn money(minor: i64, currency: Currency) -> Result<String, RenderError> {
    Money::from_minor(minor, currency)
        .map(|m| m.to_decimal_string())
        .ok_or_else(|| RenderError::Invalid("amount out of range".into()))
}

/// The IPN's fields, without the signature.
pub fn fields(
    facts: &Facts,
    zone: tillgate_domain::MerchantZone,
) -> Result<Vec<(String, String)>, RenderError> {
    let currency = Currency::from_code(&facts.currency)
        .ok_or_else(|| RenderError::Invalid("unknown currency".into()))?;
    let at = chrono::DateTime::from_timestamp_millis(facts.at_ms)
        .ok_or_else(|| RenderError::Invalid("bad time".into()))?;
    let mut out = vec![
        ("transactionNo".to_owned(), facts.transaction_no.clone()),
        ("reference".to_owned(), facts.reference.clone()),
        ("status".to_owned(), status(facts).to_owned()),
        ("amount".to_owned(), money(facts.amount_minor, currency)?),
        ("currency".to_owned(), facts.currency.clone()),
        ("settleCurrency".to_owned(), facts.settle_currency.clone()),
        (
            "time".to_owned(),
            zone.local_time(at).format("%Y%m%d%H%M%S").to_string(),
        ),
    ];
    if facts.refunded_minor > 0 || facts.reversed {
        let refunded = if facts.reversed {
            facts.amount_minor
        } else {
            facts.refunded_minor
        };
        out.push(("refundAmount".to_owned(), money(refunded, currency)?));
    }
    if let Some(r) = &facts.refund {
        out.push(("refundTransactionNo".to_owned(), r.refund_no.clone()));
        if let Some(reference) = &r.refund_reference {
            out.push(("refundReference".to_owned(), reference.clone()));
        }
        out.push((
            "refundStatus".to_owned(),
            match RefundState::from_code(r.state) {
                Some(RefundState::Succeeded) => "success",
                Some(RefundState::Failed) | Some(RefundState::Closed) => "failed",
                _ => "pending",
            }
            .to_owned(),
        ));
        out.push((
            "refundTransactionAmount".to_owned(),
            money(r.amount_minor, currency)?,
        ));
    }
    out.retain(|(_, v)| !v.is_empty());
    Ok(out)
}

#[async_trait]
impl Renderer for PockytRenderer {
    async fn render(&self, facts: &Facts) -> Result<Rendered, RenderError> {
        let credential = self
            .app
            .store_credential(&facts.merchant_no, &facts.store_no)
            .await
            .map_err(|e| match e {
                CredentialError::Unknown => {
                    RenderError::Invalid("the store no longer exists".into())
                }
                other => RenderError::Unavailable(other.to_string()),
            })?;
        let mut pairs = fields(facts, credential.merchant.zone)?;
        let params = Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::Text(v.clone())))
                .collect(),
        )
        .map_err(|e| RenderError::Invalid(e.to_string()))?;
        pairs.push((
            "verifySign".to_owned(),
            sign::sign(&params, credential.token.expose()),
        ));
        let body = form(&pairs);
        Ok(Rendered {
            content_type: "application/x-www-form-urlencoded",
            body: body.into_bytes(),
            // PHP merchants echo "success", often with a trailing newline.
            ack: Ack {
                expected: "success",
                ignore_case: false,
                trim: true,
            },
        })
    }
}

/// Form-urlencodes pairs.
pub fn form(pairs: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            topic: "payment.paid".into(),
            merchant_no: "200043".into(),
            store_no: "300014".into(),
            transaction_no: "305680500880311923".into(),
            reference: "test1666247277861".into(),
            amount_minor: 1,
            currency: "USD".into(),
            settle_currency: "USD".into(),
            state: "paid".into(),
            refunded_minor: 0,
            reversed: false,
            created_at_ms: 1_666_247_297_000,
            paid_at_ms: Some(1_666_247_297_000),
            // 2022-10-20 14:28:17 in Shanghai.
            at_ms: 1_666_247_297_000,
            extra: None,
            refund: None,
            cancel: None,
        }
    }

    #[test]
    fn an_ipn_carries_the_documented_fields_and_signs_like_the_java_sdk_vector() {
        let zone = tillgate_domain::MerchantZone::parse("Asia/Shanghai").unwrap();
        let pairs = fields(&facts(), zone).unwrap();
        let params = Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::Text(v.clone())))
                .collect(),
        )
        .unwrap();
        // The java-sdk VerifySignTest vector: same fields, same token, same signature.
        assert_eq!(
            sign::sign(&params, "5cbfb079f15b150122261c8537086d77a"),
            "435d01c5d5fa88cfe8168fbfbf732519"
        );
        assert!(pairs.iter().all(|(_, v)| !v.is_empty()));
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(form(&[("a b".into(), "x&y=z".into())]), "a+b=x%26y%3Dz");
    }
}
