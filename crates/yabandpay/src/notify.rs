//! YabandPay notifications: a JSON POST of `{"sign","data":{…}}` to the `notify_url`, `sign`
//! the HMAC over the `data` fields alone (sorted) with the terminal's secret, acknowledged by
//! the body `ok`.
//!
//! A payment notification (`type` "payment") is sent when a payment is paid and when a cancel
//! of it succeeded (state `cancelled`); a refund notification (`type` "refund") when a refund
//! succeeded or failed. No field is empty, `"0"` or nested, so verifiers that drop such values
//! before signing and verifiers that sign them agree.

use crate::render::{self, PaymentView, RefundView};
use crate::sign;
use async_trait::async_trait;
use serde_json::{json, Map, Value as Json};
use std::sync::Arc;
use tillgate_core::credentials::{CredentialError, Credentials};
use tillgate_core::notify::{Ack, RenderError, Rendered, Renderer, Snapshot};
use tillgate_core::snapshot::Topic;

/// The official plugins answer `ok` (and `bad` on failure); white space and case are forgiven.
pub const ACK: Ack = Ack {
    expected: "ok",
    ignore_case: true,
    trim: true,
};

/// Renders the notifications of payments made through the YabandPay dialect.
pub struct YabandRenderer {
    credentials: Arc<Credentials>,
}

impl YabandRenderer {
    pub fn new(credentials: Arc<Credentials>) -> YabandRenderer {
        YabandRenderer { credentials }
    }
}

/// The `data` fields of a notification of `snapshot`, unsigned.
pub fn fields_of(snapshot: &Snapshot) -> Result<Vec<(String, String)>, RenderError> {
    let payment = PaymentView::of(&snapshot.payment);
    let data = match snapshot.topic {
        Topic::PaymentPaid | Topic::CancelSucceeded => render::payment(&payment),
        Topic::RefundSucceeded | Topic::RefundFailed => {
            let refund = snapshot.refund.as_ref().ok_or_else(|| {
                RenderError::Invalid("a refund notification without its refund".into())
            })?;
            render::refund(&payment, &RefundView::of(refund))
        }
    };
    Ok(render::notification_fields(&data))
}

/// The JSON body: the fields under `data` and their sign.
pub fn body(fields: &[(String, String)], secret: &str) -> Vec<u8> {
    let data: Map<String, Json> = fields
        .iter()
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    let body = json!({ "sign": sign::sign_fields(fields, secret), "data": data });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[async_trait]
impl Renderer for YabandRenderer {
    async fn render(&self, snapshot: &Snapshot) -> Result<Rendered, RenderError> {
        let fields = fields_of(snapshot)?;
        let merchant_no = &snapshot.payment.merchant_no;
        // The terminal that made the payment signs: its secret is the one the merchant's
        // notify_url knows. It was stored as the payment's store number.
        let tid = &snapshot.payment.store_no;
        let credential = self
            .credentials
            .terminal_credential(tid)
            .await
            .map_err(|e| match e {
                CredentialError::Unknown => {
                    RenderError::Invalid(format!("terminal {tid} no longer exists"))
                }
                CredentialError::Store(e) => RenderError::Unavailable(e.to_string()),
                CredentialError::Sealed(e) => RenderError::Unavailable(e.to_string()),
            })?;
        if &credential.merchant.merchant_no != merchant_no {
            // Never sign one merchant's notification with another merchant's secret.
            return Err(RenderError::Invalid(format!(
                "terminal {tid} does not belong to merchant {merchant_no}"
            )));
        }
        Ok(Rendered {
            content_type: "application/json",
            body: body(&fields, credential.secret.expose()),
            ack: ACK,
        })
    }
}
