//! Unified notifications: frozen facts rendered as Jeepay's form-POSTed, signed notify.
//!
//! A pay notify carries the pay query's fields, a refund notify the refund query's, a cancel
//! notify seed 004's fields; each adds `reqTime` (epoch ms, now) and `sign` over all of them
//! with the app's secret. The merchant acknowledges with `success` in any case, untrimmed.

use crate::render::{self, CancelView, Data, PayView, RefundView};
use async_trait::async_trait;
use std::sync::Arc;
use tillgate_core::notify::{Ack, Facts, RenderError, Rendered, Renderer};
use tillgate_core::service::{CredentialError, Lifecycle};

/// Seed 004 and Jeepay: the body `success`, any case, nothing around it.
pub const ACK: Ack = Ack {
    expected: "success",
    ignore_case: true,
    trim: false,
};

/// Renders the notifications of payments added through the unified dialect.
pub struct UnifiedRenderer {
    app: Arc<Lifecycle>,
}

impl UnifiedRenderer {
    pub fn new(app: Arc<Lifecycle>) -> UnifiedRenderer {
        UnifiedRenderer { app }
    }
}

/// The fields a notification of `facts` carries, before `reqTime` and `sign`, and the app
/// whose secret signs it.
pub fn fields_of(facts: &Facts) -> Result<(Data, String), RenderError> {
    let invalid = RenderError::Invalid;
    match facts.topic.as_str() {
        "payment.paid" => {
            let v = PayView::of_facts(facts).map_err(invalid)?;
            let app_id = v.app_id.clone();
            Ok((render::pay_query(&v), app_id))
        }
        "refund.succeeded" | "refund.failed" => {
            let v = RefundView::of_facts(facts).map_err(invalid)?;
            // The payment's app signs: its secret is the one the merchant's notifyUrl knows
            // from the order it placed.
            let app_id = v.pay.app_id.clone();
            Ok((render::refund_query(&v), app_id))
        }
        "cancel.succeeded" => {
            let v = CancelView::of_facts(facts).map_err(invalid)?;
            let app_id = v.pay.app_id.clone();
            Ok((render::cancel_query(&v), app_id))
        }
        other => Err(RenderError::Invalid(format!(
            "the unified dialect has no notification for topic {other:?}"
        ))),
    }
}

/// The form body: the fields, `reqTime` and the sign over both.
pub fn body(data: Data, req_time_ms: i64, secret: &str) -> Vec<u8> {
    let data = data.text("reqTime", Some(&req_time_ms.to_string()));
    let sign = data.sign(secret);
    let mut entries = data.entries();
    entries.push(("sign", sign));
    serde_urlencoded::to_string(&entries)
        .unwrap_or_default()
        .into_bytes()
}

#[async_trait]
impl Renderer for UnifiedRenderer {
    async fn render(&self, facts: &Facts) -> Result<Rendered, RenderError> {
        let (data, app_id) = fields_of(facts)?;
        let credential = self
            .app
            .app_credential(&app_id)
            .await
            .map_err(|e| match e {
                CredentialError::Unknown => {
                    RenderError::Invalid(format!("app {app_id} no longer exists"))
                }
                CredentialError::Store(e) => RenderError::Unavailable(e.to_string()),
                CredentialError::Sealed(e) => RenderError::Unavailable(e.to_string()),
            })?;
        if credential.merchant.merchant_no != facts.merchant_no {
            // Never sign one merchant's facts with another merchant's secret.
            return Err(RenderError::Invalid(format!(
                "app {app_id} does not belong to merchant {}",
                facts.merchant_no
            )));
        }
        Ok(Rendered {
            content_type: "application/x-www-form-urlencoded",
            body: body(
                data,
                self.app.now().timestamp_millis(),
                credential.secret.expose(),
            ),
            ack: ACK,
        })
    }
}
