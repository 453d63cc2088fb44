//! The unified endpoints: authentication (appId, mchNo, sign) before anything is read, field
//! parsing, the lifecycle call, and the signed answer.

use crate::envelope::{from_lifecycle, success, Op, UnifiedError};
use crate::extra::{self, CancelExtra, PayExtra, RefundExtra};
use crate::fields;
use crate::render::{self, CancelView, Data, PayData, PayView, RefundView};
use crate::sign;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use std::sync::Arc;
use tillgate_core::service::{
    AddRequest, AppCredential, CancelOptions, CredentialError, Lifecycle, NotifyTo, PayRequest,
    RefundKey, RefundRequest,
};
use tillgate_core::PaymentKey;
use tillgate_domain::{BusinessDayRule, CancelIntent, CancelKind, CancelState};
use tillgate_wire::{Params, ParamsError, RateLimit};

type App = State<Arc<Lifecycle>>;
type Body = Result<Bytes, BytesRejection>;

/// The dialect name the payments of this crate carry (their notifications come back here).
pub const DIALECT: tillgate_core::Dialect = tillgate_core::Dialect::Unified;

/// The wayCodes paid with the customer's barcode, carried in `channelExtra.authCode`.
const BARCODE_WAY_CODES: [&str; 3] = ["AUTO_BAR", "WX_BAR", "ALI_BAR"];

/// The wayCode of an order the customer pays by scanning a QR code.
const QR_WAY_CODE: &str = "QR_CASHIER";

/// One unified endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    UnifiedOrder,
    Query,
    Close,
    Cancel,
    CancelQuery,
    RefundOrder,
    RefundQuery,
}

/// The fields every request carries.
const COMMON: [&str; 6] = ["mchNo", "appId", "reqTime", "version", "signType", "sign"];

impl Endpoint {
    /// The fields of Jeepay's request bean for the endpoint: its sign is computed over these
    /// alone, the SDK's over everything it sends; both are accepted.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Endpoint::UnifiedOrder => &[
                "mchOrderNo",
                "wayCode",
                "amount",
                "currency",
                "clientIp",
                "subject",
                "body",
                "notifyUrl",
                "returnUrl",
                "expiredTime",
                "channelExtra",
                "extParam",
                "divisionMode",
            ],
            Endpoint::Query | Endpoint::Close => &["payOrderId", "mchOrderNo"],
            Endpoint::Cancel => &[
                "payOrderId",
                "mchOrderNo",
                "clientIp",
                "notifyUrl",
                "channelExtra",
                "extParam",
            ],
            Endpoint::CancelQuery => &["cancelOrderId"],
            Endpoint::RefundOrder => &[
                "payOrderId",
                "mchOrderNo",
                "mchRefundNo",
                "refundAmount",
                "currency",
                "refundReason",
                "clientIp",
                "notifyUrl",
                "channelExtra",
                "extParam",
            ],
            Endpoint::RefundQuery => &["refundOrderId", "mchRefundNo"],
        }
    }
}

/// The unified routes, with no rate limit.
pub fn router(app: Arc<Lifecycle>) -> Router {
    router_with(app, RateLimit::off())
}

/// The unified routes; `merchant_limit` counts each merchant's requests once their sign is
/// verified.
pub fn router_with(app: Arc<Lifecycle>, merchant_limit: RateLimit) -> Router {
    fn route(ep: Endpoint) -> axum::routing::MethodRouter<Arc<Lifecycle>> {
        post(
            move |State(app): App,
                  Extension(limit): Extension<RateLimit>,
                  headers: HeaderMap,
                  body: Body| async move { serve(&app, &limit, ep, &headers, body).await },
        )
    }
    Router::new()
        .route("/api/pay/unifiedOrder", route(Endpoint::UnifiedOrder))
        .route("/api/pay/query", route(Endpoint::Query))
        .route("/api/pay/close", route(Endpoint::Close))
        .route("/api/pay/cancel", route(Endpoint::Cancel))
        .route("/api/cancel/query", route(Endpoint::CancelQuery))
        .route("/api/refund/refundOrder", route(Endpoint::RefundOrder))
        .route("/api/refund/query", route(Endpoint::RefundQuery))
        .layer(Extension(merchant_limit))
        .with_state(app)
}

async fn serve(
    app: &Lifecycle,
    limit: &RateLimit,
    ep: Endpoint,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return UnifiedError::params(
                "请求体过大 (the request body is larger than the gateway accepts)",
            )
            .into_response()
        }
        Err(_) => {
            return UnifiedError::params("请求体无法读取 (the request body could not be read)")
                .into_response()
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    handle(app, limit, ep, content_type, &body).await
}

/// Answers one request: the signed data, or the error envelope.
pub(crate) async fn handle(
    app: &Lifecycle,
    limit: &RateLimit,
    ep: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let signed = match authenticate(app, limit, ep, content_type, body).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let answer = match ep {
        Endpoint::UnifiedOrder => unified_order(app, &signed).await,
        Endpoint::Query => query(app, &signed).await,
        Endpoint::Close => close(app, &signed).await,
        Endpoint::Cancel => cancel(app, &signed).await,
        Endpoint::CancelQuery => cancel_query(app, &signed).await,
        Endpoint::RefundOrder => refund_order(app, &signed).await,
        Endpoint::RefundQuery => refund_query(app, &signed).await,
    };
    match answer {
        Ok(data) => success(&data, signed.app.secret.expose()),
        Err(e) => e.into_response(),
    }
}

/// A request whose sign was verified, with the app it speaks for.
struct Signed {
    params: Params,
    app: Arc<AppCredential>,
}

/// Parses the body, finds the app's secret and verifies the sign before anything else; then
/// counts the request against its merchant's rate limit.
async fn authenticate(
    app: &Lifecycle,
    limit: &RateLimit,
    ep: Endpoint,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Signed, UnifiedError> {
    let params = Params::parse(content_type, body).map_err(|e| match e {
        ParamsError::Empty => UnifiedError::params("请求参数不能为空 (the request body is empty)"),
        other => UnifiedError::params(format!("请求参数格式错误 ({other})")),
    })?;
    let mch_no = fields::required(&params, "mchNo")?;
    let app_id = fields::required_text(&params, "appId", 64)?;
    let signature = fields::required(&params, "sign")?;
    // Jeepay's @NotBlank fields; their values are not checked.
    for field in ["reqTime", "version", "signType"] {
        fields::required(&params, field)?;
    }
    let credential = app.credentials().app_credential(&app_id).await.map_err(|e| match e {
        CredentialError::Unknown => {
            UnifiedError::fail("商户或商户应用不存在 (no app with that appId)")
        }
        CredentialError::Store(e) => from_lifecycle(Op::Query, e.into()),
        CredentialError::Sealed(e) => {
            tracing::error!(error = %e, "a stored app secret does not open with the master key");
            UnifiedError::system(StatusCode::INTERNAL_SERVER_ERROR)
        }
    })?;
    if credential.merchant.merchant_no != mch_no {
        return Err(UnifiedError::fail(
            "参数appId与商户号不匹配 (the app does not belong to that mchNo)",
        ));
    }
    let known: Vec<&str> = COMMON.iter().chain(ep.fields()).copied().collect();
    // The secret in force, or the one before a rotation while it is still accepted.
    let verified = |secret: &tillgate_core::Secret<String>| {
        sign::verify(&params, secret.expose(), &known, signature)
    };
    let previous =
        tillgate_core::credentials::previous_at(&credential.previous, app.credentials().now());
    if !verified(&credential.secret) && !previous.is_some_and(verified) {
        return Err(UnifiedError::fail(
            "验签失败 (sign does not match the parameters and the app's secret)",
        ));
    }
    limit
        .check(credential.merchant.merchant_no.as_str())
        .map_err(|busy| UnifiedError::busy(busy, "this merchant"))?;
    Ok(Signed {
        params,
        app: credential,
    })
}

/// The payment a request names by `payOrderId` or `mchOrderNo`; when both are given they must
/// name the same order.
async fn payment_key(app: &Lifecycle, s: &Signed, op: Op<'_>) -> Result<PaymentKey, UnifiedError> {
    let pay_order_id = fields::order_id(&s.params, "payOrderId", 'P')?;
    let mch_order_no = fields::optional_text(&s.params, "mchOrderNo", 64)?;
    match (pay_order_id, mch_order_no) {
        (Some(no), None) => Ok(PaymentKey::TransactionNo(no)),
        (None, Some(reference)) => Ok(PaymentKey::Reference(reference)),
        (None, None) => Err(UnifiedError::params(
            "mchOrderNo 和 payOrderId不能同时为空 (send payOrderId or mchOrderNo)",
        )),
        (Some(no), Some(reference)) => {
            let key = PaymentKey::TransactionNo(no);
            let found = app
                .query(&s.app.merchant, &key)
                .await
                .map_err(|e| from_lifecycle(op, e))?;
            if found.payment.reference != reference {
                return Err(UnifiedError::fail(
                    "订单不存在 (payOrderId and mchOrderNo do not name the same order)",
                ));
            }
            Ok(key)
        }
    }
}

async fn unified_order(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let p = &s.params;
    let reference = fields::key(p, "mchOrderNo")?;
    let way_code = fields::required_text(p, "wayCode", 32)?;
    let (currency, currency_sent) = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "amount", currency)?;
    let subject = fields::required_text(p, "subject", 64)?;
    let body = fields::required_text(p, "body", 256)?;
    let client_ip = fields::optional_text(p, "clientIp", 64)?;
    let notify_url = fields::notify_url(p, "notifyUrl", &|u| app.check_notify_url(u))?;
    let return_url = fields::optional_text(p, "returnUrl", 512)?;
    let timeout_minutes = fields::expired_minutes(p)?;
    let ext_param = fields::optional_text(p, "extParam", 512)?;
    let division_mode = fields::division_mode(p)?;
    let barcode = if BARCODE_WAY_CODES.contains(&way_code.as_str()) {
        Some(fields::auth_code(p)?)
    } else if way_code == QR_WAY_CODE {
        None
    } else {
        return Err(UnifiedError::fail(format!(
            "不支持的支付方式 (wayCode {way_code} is not supported; use AUTO_BAR, WX_BAR, ALI_BAR or QR_CASHIER)"
        )));
    };
    let pay_extra = PayExtra {
        app_id: Some(s.app.app_id.clone()),
        way_code: Some(way_code.clone()),
        currency: Some(currency_sent),
        subject: Some(subject.clone()),
        body: Some(body),
        client_ip,
        ext_param,
        return_url,
        division_mode,
    };
    let op = Op::UnifiedOrder {
        mch_order_no: reference.as_str(),
    };
    let merchant = &s.app.merchant;
    let added = app
        .add(
            merchant,
            AddRequest {
                // The app is the unified API's counterpart of a Pockyt store: it says which
                // integration of the merchant created the payment.
                store_no: s.app.app_id.clone(),
                reference: reference.clone(),
                amount,
                settle_currency: currency,
                description: Some(subject),
                notify_url,
                timeout_minutes,
                dialect: DIALECT,
                extra: Some(extra::to_json(&pay_extra)),
            },
        )
        .await
        .map_err(|e| from_lifecycle(op, e))?;
    let paid = app
        .pay(
            merchant,
            &PaymentKey::TransactionNo(added.value.transaction_no.clone()),
            PayRequest {
                barcode: barcode.clone(),
                vendor: Some(way_code),
            },
        )
        .await
        .map_err(|e| from_lifecycle(op, e))?;
    let view = PayView::of(&paid.value.snapshot(), &s.app.app_id);
    let pay_data = match barcode {
        Some(_) => PayData {
            kind: "none",
            data: None,
        },
        None => PayData {
            kind: "codeUrl",
            data: Some(app.payment_page_url(&paid.value.transaction_no)),
        },
    };
    Ok(render::unified_order(&view, &pay_data))
}

async fn query(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let key = payment_key(app, s, Op::Query).await?;
    let found = app
        .query(&s.app.merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::Query, e))?;
    Ok(render::pay_query(&PayView::of(
        &found.payment.snapshot(),
        &s.app.app_id,
    )))
}

fn cancel_extra(s: &Signed) -> Result<CancelExtra, UnifiedError> {
    Ok(CancelExtra {
        app_id: Some(s.app.app_id.clone()),
        client_ip: fields::optional_text(&s.params, "clientIp", 64)?,
        ext_param: fields::optional_text(&s.params, "extParam", 512)?,
    })
}

async fn close(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let extra = cancel_extra(s)?;
    let key = payment_key(app, s, Op::Close).await?;
    let merchant = &s.app.merchant;
    let out = app
        .cancel(
            merchant,
            &key,
            BusinessDayRule::calendar_day(merchant.zone),
            CancelIntent::Close,
            CancelOptions {
                notify_url: None,
                extra: Some(extra::to_json(&extra)),
                ..CancelOptions::default()
            },
        )
        .await
        .map_err(|e| from_lifecycle(Op::Close, e))?;
    let (_, c) = &out.value;
    // Jeepay closes only orders in state 0 or 1: an order closed (or cancelled) earlier is not
    // closable any more. A close still waiting for the wallet answers as accepted again.
    if out.replayed && (c.state == CancelState::Succeeded || c.kind != CancelKind::Close) {
        return Err(UnifiedError::fail(
            "当前订单不可关闭 (the order is already closed or cancelled)",
        ));
    }
    if c.state == CancelState::Failed {
        return Err(UnifiedError::fail(
            "关闭订单失败 (the wallet refused to close the order)",
        ));
    }
    Ok(Data::new())
}

async fn cancel(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let extra = cancel_extra(s)?;
    let notify_url = fields::notify_url(&s.params, "notifyUrl", &|u| app.check_notify_url(u))?;
    // channelExtra is accepted and ignored: the wallet needs nothing more to cancel, and the
    // seed's own example of it is not JSON.
    let key = payment_key(app, s, Op::Cancel).await?;
    let merchant = &s.app.merchant;
    let out = app
        .cancel(
            merchant,
            &key,
            BusinessDayRule::calendar_day(merchant.zone),
            CancelIntent::Cancel,
            CancelOptions {
                notify_url,
                extra: Some(extra::to_json(&extra)),
                ..CancelOptions::default()
            },
        )
        .await
        .map_err(|e| from_lifecycle(Op::Cancel, e))?;
    let (payment, c) = &out.value;
    // The service answers a repeated request with the order's earlier cancel; a close is not a
    // cancel the merchant asked for.
    if c.kind == CancelKind::Close {
        return Err(UnifiedError::fail(
            "订单已关闭，无法撤销 (the order was closed, not cancelled)",
        ));
    }
    Ok(render::cancel_order(&CancelView::of(
        &payment.snapshot(),
        &c.snapshot(),
        &s.app.app_id,
    )))
}

async fn cancel_query(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let no = fields::order_id(&s.params, "cancelOrderId", 'C')?
        .ok_or_else(|| UnifiedError::missing("cancelOrderId"))?;
    let (payment, c) = app
        .cancel_by_no(&s.app.merchant, &no)
        .await
        .map_err(|e| from_lifecycle(Op::CancelQuery, e))?;
    Ok(render::cancel_query(&CancelView::of(
        &payment.snapshot(),
        &c.snapshot(),
        &s.app.app_id,
    )))
}

async fn refund_order(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let p = &s.params;
    let mch_refund_no = fields::key(p, "mchRefundNo")?;
    let (currency, _) = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "refundAmount", currency)?;
    let refund_reason = fields::required_text(p, "refundReason", 256)?;
    let client_ip = fields::optional_text(p, "clientIp", 64)?;
    let notify_url = fields::notify_url(p, "notifyUrl", &|u| app.check_notify_url(u))?;
    let ext_param = fields::optional_text(p, "extParam", 512)?;
    let op = Op::RefundOrder {
        mch_refund_no: mch_refund_no.as_str(),
    };
    let key = payment_key(app, s, op).await?;
    let refund_extra = RefundExtra {
        app_id: Some(s.app.app_id.clone()),
        refund_reason: Some(refund_reason),
        client_ip,
        ext_param,
    };
    let out = app
        .refund(
            &s.app.merchant,
            &key,
            RefundRequest {
                amount,
                settle_currency: None,
                refund_reference: Some(mch_refund_no.clone()),
                notify: notify_url.map_or(NotifyTo::Nowhere, NotifyTo::Url),
                extra: Some(extra::to_json(&refund_extra)),
            },
        )
        .await
        .map_err(|e| from_lifecycle(op, e))?;
    let (payment, refund) = &out.value;
    Ok(render::refund_order(&RefundView::of(
        &payment.snapshot(),
        &refund.snapshot(),
        &s.app.app_id,
    )))
}

async fn refund_query(app: &Lifecycle, s: &Signed) -> Result<Data, UnifiedError> {
    let refund_no = fields::order_id(&s.params, "refundOrderId", 'R')?;
    let reference = fields::optional_text(&s.params, "mchRefundNo", 64)?;
    let merchant = &s.app.merchant;
    let (key, must_match) = match (refund_no, reference) {
        (Some(no), reference) => (RefundKey::RefundNo(no), reference),
        (None, Some(reference)) => (RefundKey::Reference(reference), None),
        (None, None) => {
            return Err(UnifiedError::params(
                "mchRefundNo 和 refundOrderId不能同时为空 (send refundOrderId or mchRefundNo)",
            ))
        }
    };
    let (payment, refund) = app
        .refund_by(merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::RefundQuery, e))?;
    if must_match.is_some() && refund.refund_reference != must_match {
        return Err(UnifiedError::fail(
            "退款订单不存在 (refundOrderId and mchRefundNo do not name the same refund order)",
        ));
    }
    Ok(render::refund_query(&RefundView::of(
        &payment.snapshot(),
        &refund.snapshot(),
        &s.app.app_id,
    )))
}
