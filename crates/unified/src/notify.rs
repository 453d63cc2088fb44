//! Unified notifications: frozen snapshots rendered as Jeepay's form-POSTed, signed notify.
//!
//! A pay notify carries the pay query's fields, a refund notify the refund query's, a cancel
//! notify seed 004's fields; each adds `reqTime` (epoch ms, now) and `sign` over all of them
//! with the app's secret. The merchant acknowledges with `success` in any case, untrimmed.

use crate::extra::{self, PayExtra};
use crate::render::{self, CancelView, Data, PayView, RefundView};
use async_trait::async_trait;
use std::sync::Arc;
use tillgate_core::credentials::{CredentialError, Credentials};
use tillgate_core::notify::{Ack, RenderError, Rendered, Renderer, Snapshot};
use tillgate_core::snapshot::Topic;
use tillgate_domain::Clock;

/// Seed 004 and Jeepay: the body `success`, any case, nothing around it.
pub const ACK: Ack = Ack {
    expected: "success",
    ignore_case: true,
    trim: false,
};

/// Renders the notifications of payments added through the unified dialect.
pub struct UnifiedRenderer {
    credentials: Arc<Credentials>,
    /// Stamps `reqTime`.
    clock: Arc<dyn Clock>,
}

impl UnifiedRenderer {
    pub fn new(credentials: Arc<Credentials>, clock: Arc<dyn Clock>) -> UnifiedRenderer {
        UnifiedRenderer { credentials, clock }
    }
}

/// The fields a notification of `snapshot` carries, before `reqTime` and `sign`, and the app
/// whose secret signs it: the payment's app (its secret is the one the merchant's notifyUrl
/// knows from the order it placed).
pub fn fields_of(snapshot: &Snapshot) -> Result<(Data, String), RenderError> {
    let p = &snapshot.payment;
    let e: PayExtra = extra::parse(p.extra.as_deref()).map_err(RenderError::Invalid)?;
    let app_id = e.app_id.ok_or_else(|| {
        RenderError::Invalid("the payment's extra has no appId (not a unified payment)".into())
    })?;
    let missing = |what: &str| RenderError::Invalid(format!("{what} snapshot is missing"));
    let data = match snapshot.topic {
        Topic::PaymentPaid => render::pay_query(&PayView::of(p, &app_id)),
        Topic::RefundSucceeded | Topic::RefundFailed => {
            let r = snapshot.refund.as_ref().ok_or_else(|| missing("refund"))?;
            render::refund_query(&RefundView::of(p, r, &app_id))
        }
        Topic::CancelSucceeded => {
            let c = snapshot.cancel.as_ref().ok_or_else(|| missing("cancel"))?;
            render::cancel_query(&CancelView::of(p, c, &app_id))
        }
    };
    Ok((data, app_id))
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
    async fn render(&self, snapshot: &Snapshot) -> Result<Rendered, RenderError> {
        let (data, app_id) = fields_of(snapshot)?;
        let credential = self
            .credentials
            .app_credential(&app_id)
            .await
            .map_err(|e| match e {
                CredentialError::Unknown => {
                    RenderError::Invalid(format!("app {app_id} no longer exists"))
                }
                CredentialError::Store(e) => RenderError::Unavailable(e.to_string()),
                CredentialError::Sealed(e) => RenderError::Unavailable(e.to_string()),
            })?;
        let merchant_no = &snapshot.payment.merchant_no;
        if &credential.merchant.merchant_no != merchant_no {
            // Never sign one merchant's notification with another merchant's secret.
            return Err(RenderError::Invalid(format!(
                "app {app_id} does not belong to merchant {merchant_no}"
            )));
        }
        Ok(Rendered {
            content_type: "application/x-www-form-urlencoded",
            body: body(
                data,
                self.clock.now().timestamp_millis(),
                credential.secret.expose(),
            ),
            ack: ACK,
        })
    }
}
