//! Pockyt's IPN: a form POST of the transaction's facts signed with the store's token
//! (verifySign), acknowledged by the plain-text body `success`.
//!
//! No field is ever sent empty: the PHP SDK signs empty fields and the Go SDK skips them, so a
//! notification without empty fields is the only one both verify.

use crate::params::{Params, Value};
use crate::sign;
use async_trait::async_trait;
use std::sync::Arc;
use tillgate_core::credentials::{CredentialError, Credentials};
use tillgate_core::notify::{Ack, RenderError, Rendered, Renderer, Snapshot};
use tillgate_core::snapshot::PaymentSnapshot;
use tillgate_domain::{PaymentState, RefundState};

/// Renders Pockyt IPNs.
pub struct PockytRenderer {
    credentials: Arc<Credentials>,
}

impl PockytRenderer {
    pub fn new(credentials: Arc<Credentials>) -> PockytRenderer {
        PockytRenderer { credentials }
    }
}

/// The `status` a notification reports, from the payment's state after the change.
fn status(p: &PaymentSnapshot) -> &'static str {
    match p.payment.state() {
        PaymentState::Created => "init",
        PaymentState::Pending => "pending",
        PaymentState::Failed => "failed",
        PaymentState::Cancelled if p.payment.was_reversed() => "success",
        PaymentState::Cancelled | PaymentState::Closed => "closed",
        _ => "success",
    }
}

/// The IPN's fields, without the signature.
pub fn fields(snapshot: &Snapshot, zone: tillgate_domain::MerchantZone) -> Vec<(String, String)> {
    let p = &snapshot.payment;
    let amount = p.payment.amount();
    let mut out = vec![
        ("transactionNo".to_owned(), p.transaction_no.clone()),
        ("reference".to_owned(), p.reference.clone()),
        ("status".to_owned(), status(p).to_owned()),
        ("amount".to_owned(), amount.to_decimal_string()),
        ("currency".to_owned(), amount.currency().code().to_owned()),
        (
            "settleCurrency".to_owned(),
            p.settle_currency.code().to_owned(),
        ),
        (
            "time".to_owned(),
            zone.local_time(snapshot.at)
                .format("%Y%m%d%H%M%S")
                .to_string(),
        ),
    ];
    let reversed = p.payment.was_reversed();
    if !p.payment.refunded().is_zero() || reversed {
        let refunded = if reversed {
            amount
        } else {
            p.payment.refunded()
        };
        out.push(("refundAmount".to_owned(), refunded.to_decimal_string()));
    }
    if let Some(r) = &snapshot.refund {
        out.push(("refundTransactionNo".to_owned(), r.refund_no.clone()));
        if let Some(reference) = &r.refund_reference {
            out.push(("refundReference".to_owned(), reference.clone()));
        }
        out.push((
            "refundStatus".to_owned(),
            match r.state {
                RefundState::Succeeded => "success",
                RefundState::Failed | RefundState::Closed => "failed",
                _ => "pending",
            }
            .to_owned(),
        ));
        out.push((
            "refundTransactionAmount".to_owned(),
            r.amount.to_decimal_string(),
        ));
    }
    out.retain(|(_, v)| !v.is_empty());
    out
}

#[async_trait]
impl Renderer for PockytRenderer {
    async fn render(&self, snapshot: &Snapshot) -> Result<Rendered, RenderError> {
        let p = &snapshot.payment;
        let credential = self
            .credentials
            .store_credential(&p.merchant_no, &p.store_no)
            .await
            .map_err(|e| match e {
                CredentialError::Unknown => {
                    RenderError::Invalid("the store no longer exists".into())
                }
                other => RenderError::Unavailable(other.to_string()),
            })?;
        let mut pairs = fields(snapshot, credential.merchant.zone);
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

/// Form-urlencodes pairs (the `application/x-www-form-urlencoded` serializer the HTTP stack
/// uses, so what a receiver decodes is exactly what was signed).
pub fn form(pairs: &[(String, String)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        use tillgate_core::snapshot::{PaymentSnapshot, Topic};
        use tillgate_domain::{Currency, Money, Payment};
        // 2022-10-20 14:28:17 in Shanghai.
        let at = chrono::DateTime::from_timestamp_millis(1_666_247_297_000).unwrap();
        let usd = Currency::from_code("USD").unwrap();
        let payment = Payment::restore(
            Money::from_minor(1, usd).unwrap(),
            PaymentState::Paid,
            0,
            0,
            None,
            Some(at),
        )
        .unwrap();
        Snapshot {
            topic: Topic::PaymentPaid,
            at,
            payment: PaymentSnapshot {
                transaction_no: "305680500880311923".into(),
                merchant_no: "200043".into(),
                store_no: "300014".into(),
                reference: "test1666247277861".into(),
                payment,
                settle_currency: usd,
                description: None,
                vendor: None,
                dialect: tillgate_core::Dialect::Pockyt,
                extra: None,
                created_at: at,
            },
            refund: None,
            cancel: None,
        }
    }

    #[test]
    fn an_ipn_carries_the_documented_fields_and_signs_like_the_java_sdk_vector() {
        let zone = tillgate_domain::MerchantZone::parse("Asia/Shanghai").unwrap();
        let pairs = fields(&snapshot(), zone);
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

    #[test]
    fn a_form_body_decodes_to_exactly_the_pairs_that_were_signed() {
        let pairs: Vec<(String, String)> = vec![
            ("reference".into(), "a*b~c d+e/f%g&h=i".into()),
            ("note".into(), "caf\u{e9} \u{4e2d}\u{6587}".into()),
            ("empty".into(), String::new()),
        ];
        let decoded: Vec<(String, String)> =
            serde_urlencoded::from_str(&form(&pairs)).expect("a well-formed body");
        assert_eq!(decoded, pairs);
    }
}
