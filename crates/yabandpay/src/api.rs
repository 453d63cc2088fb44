//! `POST /Payments`: authentication (user, sign, time) before anything is read, the method's
//! fields, the lifecycle call, and the answer.

use crate::envelope::{from_lifecycle, success, Code, Op, YabandError};
use crate::extra::{self, CancelExtra, PayExtra, RefundExtra};
use crate::fields;
use crate::render::{self, Data, PaymentView, RefundView};
use crate::request::{self, Request};
use crate::sign;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::replay::{self, StoredAnswer};
use tillgate_core::service::{
    AddRequest, CancelOptions, CredentialError, Credentials, Lifecycle, LifecycleError, NotifyTo,
    PayRequest, RefundKey, RefundRequest, TerminalCredential,
};
use tillgate_core::{PaymentKey, PaymentRecord};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelState, Clock, Key, MerchantZone, PaymentState,
};
use tillgate_wire::RateLimit;

/// The dialect name the payments of this crate carry (their notifications come back here).
pub const DIALECT: tillgate_core::Dialect = tillgate_core::Dialect::YabandPay;

/// Tunables of the dialect.
#[derive(Debug, Clone)]
pub struct YabandConfig {
    /// How far a request's `time` may be from the gateway's clock, either side.
    pub time_window: Duration,
    /// How long a terminal method waits for the terminal's result before it answers with the
    /// payment still in progress (the result is applied when it comes, and notified).
    pub terminal_wait: Duration,
    /// Each merchant's requests, counted once their sign and time are verified.
    pub merchant_limit: RateLimit,
}

impl Default for YabandConfig {
    fn default() -> Self {
        YabandConfig {
            time_window: Duration::from_secs(300),
            terminal_wait: Duration::from_secs(60),
            merchant_limit: RateLimit::off(),
        }
    }
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pos,
    PosReversal,
    PosCancel,
    CancelPayment,
    BarcodePayment,
    QrCodePayment,
    CreatePayments,
    QueryOrder,
    CreateRefund,
    QueryRefundOrder,
}

/// The `v3.Create…` variants YabandPay documents and tillgate does not build: answered with
/// "not supported" (−3008) rather than "unknown method".
pub const NOT_SUPPORTED: [&str; 9] = [
    "v3.CreatePaymentsWechatMiniPay",
    "v3.CreatePaymentsWechatAPPPay",
    "v3.CreatePaymentsWechatH5Pay",
    "v3.CreatePaymentsAlipayWap",
    "v3.CreatePaymentsAlipayAppPay",
    "v3.CreateWechatNativePay",
    "v3.CreateCardPayments",
    "v3.BankTransfer",
    "v3.CreatePaymentsVoucher",
];

/// The `sub_pay_method`s of `v3.CreatePayments` (pay_method online). In the sandbox each one
/// waits for the customer on the hosted page, who pays or declines there or through the
/// sandbox control endpoint.
pub const ONLINE_METHODS: [&str; 4] = ["WeChat Pay", "Alipay", "iDEAL", "Payconiq"];

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Pos,
        Method::PosReversal,
        Method::PosCancel,
        Method::CancelPayment,
        Method::BarcodePayment,
        Method::QrCodePayment,
        Method::CreatePayments,
        Method::QueryOrder,
        Method::CreateRefund,
        Method::QueryRefundOrder,
    ];

    /// The `method` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Method::Pos => "v3.POS",
            Method::PosReversal => "v3.POSReversal",
            Method::PosCancel => "v3.POSCancel",
            Method::CancelPayment => "v3.CancelPayment",
            Method::BarcodePayment => "v3.BarcodePayment",
            Method::QrCodePayment => "v3.QRcodePayment",
            Method::CreatePayments => "v3.CreatePayments",
            Method::QueryOrder => "v3.QueryOrder",
            Method::CreateRefund => "v3.CreateRefund",
            Method::QueryRefundOrder => "v3.QueryRefundOrder",
        }
    }

    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

struct Dialect {
    app: Arc<Lifecycle>,
    config: YabandConfig,
}

type Body = Result<Bytes, BytesRejection>;

/// The YabandPay route with the default configuration.
pub fn router(app: Arc<Lifecycle>) -> Router {
    router_with(app, YabandConfig::default())
}

/// The YabandPay route: `POST /Payments`.
pub fn router_with(app: Arc<Lifecycle>, config: YabandConfig) -> Router {
    let dialect = Arc::new(Dialect { app, config });
    Router::new()
        .route(
            "/Payments",
            post(|State(d): State<Arc<Dialect>>, body: Body| async move { serve(&d, body).await }),
        )
        .with_state(dialect)
}

async fn serve(d: &Dialect, body: Body) -> Response {
    match body {
        Ok(b) => handle(&d.app, &d.config, &b).await,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            YabandError::malformed("the request body is larger than the gateway accepts")
                .into_response()
        }
        Err(_) => YabandError::malformed("the request body could not be read").into_response(),
    }
}

/// Answers one request body: the data, or the error envelope.
pub(crate) async fn handle(app: &Lifecycle, config: &YabandConfig, body: &[u8]) -> Response {
    let s = match authenticate(app.credentials(), app.clock().as_ref(), config, body).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let keyed = matches!(fields::optional_key(s.data(), "m_refund_id"), Ok(Some(_)));
    if s.method == Method::CreateRefund && !keyed {
        return refund_once(app, config, s).await;
    }
    respond(answer(app, config, &s).await)
}

fn respond(answer: Result<Data, YabandError>) -> Response {
    match answer {
        Ok(data) => success(data),
        Err(e) => e.into_response(),
    }
}

/// A refund without the merchant's `m_refund_id`: an exact copy of the signed request within
/// the replay window (its signed `time` is fresh for five minutes) gets the first answer
/// instead of refunding again.
async fn refund_once(app: &Lifecycle, config: &YabandConfig, s: Signed) -> Response {
    let digest = replay::digest(DIALECT.as_str(), Method::CreateRefund.name(), &s.req.sign);
    let merchant_id = s.user.merchant.id;
    let remembered = app
        .replays()
        .run(merchant_id, digest, || async {
            let response = respond(answer(app, config, &s).await);
            let (status, content_type, body) = tillgate_wire::replay::capture(response).await;
            StoredAnswer {
                status,
                content_type,
                body,
            }
        })
        .await;
    match remembered {
        Ok(Some(a)) => tillgate_wire::replay::restore(a.status, &a.content_type, a.body),
        Ok(None) => from_lifecycle(Op::Refund, LifecycleError::InProgress).into_response(),
        Err(e) => from_lifecycle(Op::Refund, e.into()).into_response(),
    }
}

async fn answer(app: &Lifecycle, config: &YabandConfig, s: &Signed) -> Result<Data, YabandError> {
    match s.method {
        Method::Pos => pos(app, config, s).await,
        Method::PosReversal => cancel(app, config, s, Cancel::Reversal).await,
        Method::PosCancel => cancel(app, config, s, Cancel::OnTerminal).await,
        Method::CancelPayment => cancel(app, config, s, Cancel::Silent).await,
        Method::BarcodePayment => barcode(app, s).await,
        Method::QrCodePayment => qr_code(app, s).await,
        Method::CreatePayments => create_payments(app, s).await,
        Method::QueryOrder => query_order(app, s).await,
        Method::CreateRefund => create_refund(app, s).await,
        Method::QueryRefundOrder => query_refund(app, s).await,
    }
}

/// A request whose sign and time were verified, with the terminal it speaks for.
struct Signed {
    req: Request,
    user: Arc<TerminalCredential>,
    method: Method,
}

impl Signed {
    fn data(&self) -> &tillgate_wire::Params {
        &self.req.data
    }
}

/// Parses the body, finds the user's secret and verifies the sign and the time before anything
/// else; only then is the method looked at.
async fn authenticate(
    credentials: &Credentials,
    clock: &dyn Clock,
    config: &YabandConfig,
    body: &[u8],
) -> Result<Signed, YabandError> {
    let req = request::parse(body)?;
    let user = credentials
        .terminal_credential(&req.user)
        .await
        .map_err(|e| match e {
            CredentialError::Unknown => YabandError::new(
                Code::UnknownUser,
                format!("no terminal or user {:?}", req.user),
            ),
            CredentialError::Store(e) => from_lifecycle(Op::Query, e.into()),
            CredentialError::Sealed(e) => {
                tracing::error!(error = %e, "a stored terminal secret does not open with the master key");
                YabandError::system(StatusCode::INTERNAL_SERVER_ERROR)
            }
        })?;
    // The secret in force, or the one before a rotation while it is still accepted.
    let entries = req.sign_entries();
    let verified =
        |secret: &tillgate_core::Secret<String>| sign::verify(&entries, secret.expose(), &req.sign);
    let previous = tillgate_core::credentials::previous_at(&user.previous, clock.now());
    if !verified(&user.secret) && !previous.is_some_and(verified) {
        return Err(YabandError::new(
            Code::BadSign,
            "sign is hex(HMAC-SHA256(secret_key, k=v&…)) over user, method, time and every data field, sorted by key",
        ));
    }
    sign::check_time(&req.time, clock.now(), config.time_window).map_err(|e| match e {
        sign::TimeError::Malformed => YabandError::malformed(e.to_string()),
        sign::TimeError::Stale { .. } => YabandError::new(Code::StaleTime, e.to_string()),
    })?;
    config
        .merchant_limit
        .check(user.merchant.merchant_no.as_str())
        .map_err(|busy| YabandError::busy(busy, "this merchant"))?;
    if NOT_SUPPORTED.contains(&req.method.as_str()) {
        return Err(YabandError::new(
            Code::Unsupported,
            format!(
                "{} is not supported by this gateway; use v3.CreatePayments with pay_method online",
                req.method
            ),
        ));
    }
    let method = Method::parse(&req.method).ok_or_else(|| {
        YabandError::new(
            Code::UnknownMethod,
            format!(
                "{:?} is not one of {}",
                req.method,
                Method::ALL.map(Method::name).join(", ")
            ),
        )
    })?;
    // One path serves every method: the method is the endpoint in logs and metrics.
    tillgate_core::note::endpoint(method.name());
    Ok(Signed { req, user, method })
}

/// `data.tid` of a terminal method: required, and the terminal that signed the request.
fn terminal_tid(s: &Signed) -> Result<&str, YabandError> {
    let tid = s
        .data()
        .text("tid")
        .ok_or_else(|| YabandError::missing("data.tid"))?;
    if tid != s.user.tid {
        return Err(YabandError::new(
            Code::TidMismatch,
            "data.tid must be the terminal that signs the request (user)",
        ));
    }
    Ok(&s.user.tid)
}

/// Spends a `request_id`: unique per terminal, forever, across all terminal methods. It is
/// spent once the request passed authentication and its field checks, whatever follows (an
/// offline terminal, an unknown trade): a retry always carries a new one.
async fn claim(credentials: &Credentials, tid: &str, request_id: &Key) -> Result<(), YabandError> {
    let scope = format!("{DIALECT}:{tid}");
    let fresh = credentials
        .claim_request_key(&scope, request_id.as_str())
        .await
        .map_err(|e| from_lifecycle(Op::Query, e.into()))?;
    if fresh {
        Ok(())
    } else {
        Err(YabandError::new(
            Code::DuplicateRequestId,
            format!("this terminal used request_id {request_id} before; send a new one"),
        ))
    }
}

/// What a new payment keeps for its answers and notifications (part of the add fingerprint,
/// so only what the request said).
fn pay_extra(
    method: Method,
    description: &Option<String>,
    p: &tillgate_wire::Params,
) -> Result<PayExtra, YabandError> {
    Ok(PayExtra {
        method: Some(method.name().to_owned()),
        sub_pay_method: fields::text(p, "sub_pay_method", 32)?,
        description: description.clone(),
        demo: fields::text(p, "demo", 64)?,
        ..PayExtra::default()
    })
}

/// `v3.POS`: a sale taken on the terminal, which the cloud starts.
async fn pos(app: &Lifecycle, config: &YabandConfig, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    let tid = terminal_tid(s)?;
    let order_id = fields::key(p, "order_id")?;
    let currency = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "amount", currency)?;
    let request_id = fields::key(p, "request_id")?;
    let description = fields::text(p, "description", 256)?;
    let notify_url = fields::notify_url(p, &|u| app.check_notify_url(u))?;
    fields::sale_operation(p)?;
    let extra = pay_extra(Method::Pos, &description, p)?;
    claim(app.credentials(), tid, &request_id).await?;
    let sold = app
        .terminal_sale(
            &s.user.merchant,
            tid,
            AddRequest {
                // Every YabandPay user is a terminal; it plays the part of a Pockyt store.
                store_no: tid.to_owned(),
                reference: order_id,
                amount,
                settle_currency: currency,
                description,
                notify_url,
                timeout_minutes: None,
                dialect: DIALECT,
                extra: Some(extra::to_json(&extra)),
            },
            config.terminal_wait,
        )
        .await
        .map_err(|e| from_lifecycle(Op::Pay, e))?;
    let mut data = render::payment(&PaymentView::of(&sold.value.snapshot()));
    data.insert("tid".into(), Json::String(tid.to_owned()));
    data.insert(
        "request_id".into(),
        Json::String(request_id.as_str().to_owned()),
    );
    Ok(data)
}

/// Adds a payment and submits it to the wallet (`auth_code` scanned, or none for a QR code).
async fn add_and_pay(
    app: &Lifecycle,
    s: &Signed,
    add: AddRequest,
    pay: PayRequest,
) -> Result<PaymentRecord, YabandError> {
    let merchant = &s.user.merchant;
    let added = app
        .add(merchant, add)
        .await
        .map_err(|e| from_lifecycle(Op::Pay, e))?;
    let paid = app
        .pay(
            merchant,
            &PaymentKey::TransactionNo(added.value.transaction_no.clone()),
            pay,
        )
        .await
        .map_err(|e| from_lifecycle(Op::Pay, e))?;
    Ok(paid.value)
}

/// `v3.BarcodePayment`: the customer's wallet code, scanned by the merchant.
async fn barcode(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    let order_id = fields::key(p, "order_id")?;
    let auth_code = fields::required_text(p, "auth_code", 128)?;
    let currency = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "amount", currency)?;
    fields::no_tip(p, currency)?;
    let description = Some(fields::required_text(p, "description", 256)?);
    let notify_url = fields::notify_url(p, &|u| app.check_notify_url(u))?;
    let extra = pay_extra(Method::BarcodePayment, &description, p)?;
    let vendor = extra.sub_pay_method.clone();
    let paid = add_and_pay(
        app,
        s,
        AddRequest {
            store_no: s.user.tid.clone(),
            reference: order_id,
            amount,
            settle_currency: currency,
            description,
            notify_url,
            timeout_minutes: None,
            dialect: DIALECT,
            extra: Some(extra::to_json(&extra)),
        },
        PayRequest {
            barcode: Some(auth_code),
            vendor,
        },
    )
    .await?;
    Ok(render::payment(&PaymentView::of(&paid.snapshot())))
}

/// `v3.QRcodePayment`: a code the customer scans; pending until the customer pays.
async fn qr_code(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    let order_id = fields::key(p, "order_id")?;
    let currency = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "amount", currency)?;
    fields::no_tip(p, currency)?;
    let description = fields::text(p, "description", 256)?;
    let notify_url = fields::notify_url(p, &|u| app.check_notify_url(u))?;
    let timeout_minutes = fields::timeout_minutes(p)?;
    let extra = pay_extra(Method::QrCodePayment, &description, p)?;
    let vendor = Some(
        extra
            .sub_pay_method
            .clone()
            .unwrap_or_else(|| "QRcode".to_owned()),
    );
    let paid = add_and_pay(
        app,
        s,
        AddRequest {
            store_no: s.user.tid.clone(),
            reference: order_id,
            amount,
            settle_currency: currency,
            description,
            notify_url,
            timeout_minutes,
            dialect: DIALECT,
            extra: Some(extra::to_json(&extra)),
        },
        PayRequest {
            barcode: None,
            vendor,
        },
    )
    .await?;
    Ok(render::qr_payment(
        &PaymentView::of(&paid.snapshot()),
        &app.payment_page_url(&paid.transaction_no),
    ))
}

/// A return address of the shop's (`redirect_url`, `cancel_url`): http or https, bounded.
fn return_url(p: &tillgate_wire::Params, field: &str) -> Result<Option<String>, YabandError> {
    let Some(text) = fields::text(p, field, 512)? else {
        return Ok(None);
    };
    match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(Some(text)),
        _ => Err(YabandError::malformed(format!(
            "data.{field} is not an http or https URL"
        ))),
    }
}

/// `v3.CreatePayments`: an online payment (WeChat Pay, Alipay, iDEAL, Payconiq) the customer
/// completes on the hosted page at `url`; pending until the customer pays.
async fn create_payments(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    match fields::required_text(p, "pay_method", 32)?.as_str() {
        "online" => {}
        other => {
            return Err(YabandError::new(
                Code::Unsupported,
                format!("data.pay_method {other:?}: v3.CreatePayments takes online"),
            ))
        }
    }
    let sub_pay_method = fields::required_text(p, "sub_pay_method", 32)?;
    if !ONLINE_METHODS.contains(&sub_pay_method.as_str()) {
        return Err(YabandError::new(
            Code::Unsupported,
            format!(
                "data.sub_pay_method {sub_pay_method:?} is not one of {}",
                ONLINE_METHODS.join(", ")
            ),
        ));
    }
    let order_id = fields::key(p, "order_id")?;
    let currency = fields::currency(p, "currency")?;
    let amount = fields::amount(p, "amount", currency)?;
    let description = Some(fields::required_text(p, "description", 256)?);
    let notify_url = fields::notify_url(p, &|u| app.check_notify_url(u))?
        .ok_or_else(|| YabandError::missing("data.notify_url"))?;
    let timeout_minutes = fields::timeout_minutes(p)?;
    let mut extra = pay_extra(Method::CreatePayments, &description, p)?;
    extra.redirect_url = return_url(p, "redirect_url")?;
    extra.cancel_url = return_url(p, "cancel_url")?;
    extra.ideal_email = fields::text(p, "ideal_email", 256)?;
    let paid = add_and_pay(
        app,
        s,
        AddRequest {
            store_no: s.user.tid.clone(),
            reference: order_id,
            amount,
            settle_currency: currency,
            description,
            notify_url: Some(notify_url),
            timeout_minutes,
            dialect: DIALECT,
            extra: Some(extra::to_json(&extra)),
        },
        PayRequest {
            barcode: None,
            vendor: Some(sub_pay_method),
        },
    )
    .await?;
    Ok(render::online_payment(
        &PaymentView::of(&paid.snapshot()),
        &app.payment_page_url(&paid.transaction_no),
    ))
}

/// The three ways to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// `v3.POSReversal`: a paid trade of the day, reversed in full on its terminal.
    Reversal,
    /// `v3.POSCancel`: an unpaid trade, cancelled on its terminal.
    OnTerminal,
    /// `v3.CancelPayment`: paid or unpaid, through the wallet, nothing shown on a terminal.
    Silent,
}

/// YabandPay's cancel window: the day of payment in CET, until 00:30 the next day.
fn cancel_window() -> BusinessDayRule {
    let cet = MerchantZone::parse("Europe/Amsterdam").unwrap_or_else(MerchantZone::utc);
    BusinessDayRule::with_grace(cet, chrono::Duration::minutes(30))
}

async fn cancel(
    app: &Lifecycle,
    config: &YabandConfig,
    s: &Signed,
    how: Cancel,
) -> Result<Data, YabandError> {
    let p = s.data();
    let (tid, request_id) = match how {
        Cancel::Silent => (None, None),
        Cancel::Reversal | Cancel::OnTerminal => {
            (Some(terminal_tid(s)?), Some(fields::key(p, "request_id")?))
        }
    };
    let trade_id = fields::id(p, "trade_id")?;
    if let (Some(tid), Some(request_id)) = (tid, &request_id) {
        claim(app.credentials(), tid, request_id).await?;
    }
    let merchant = &s.user.merchant;
    let key = PaymentKey::TransactionNo(trade_id);
    let found = app
        .query(merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::Cancel, e))?
        .payment;
    if tid.is_some_and(|tid| found.store_no != tid) {
        // Another terminal's trade reads exactly as no trade at all.
        return Err(from_lifecycle(
            Op::Cancel,
            tillgate_core::service::LifecycleError::NotFound,
        ));
    }
    let state = found.payment.state();
    let unpaid = matches!(state, PaymentState::Created | PaymentState::Pending);
    let paid = matches!(
        state,
        PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded
    );
    if how == Cancel::Reversal && unpaid {
        return Err(YabandError::new(
            Code::CannotCancel,
            "the transaction is not paid; cancel it with v3.POSCancel",
        ));
    }
    if how == Cancel::OnTerminal && paid {
        return Err(YabandError::new(
            Code::CannotCancel,
            "the transaction is paid; reverse it with v3.POSReversal",
        ));
    }
    let method = match how {
        Cancel::Reversal => Method::PosReversal,
        Cancel::OnTerminal => Method::PosCancel,
        Cancel::Silent => Method::CancelPayment,
    };
    let cancel_extra = CancelExtra {
        method: Some(method.name().to_owned()),
        tid: tid.map(str::to_owned),
        request_id: request_id.map(|k| k.as_str().to_owned()),
    };
    let out = app
        .cancel(
            merchant,
            &key,
            cancel_window(),
            CancelIntent::Cancel,
            CancelOptions {
                // A cancel that finishes after the answer (the terminal or the wallet was slow)
                // is told where the payment's notifications go.
                notify_url: found.notify_url.clone(),
                extra: Some(extra::to_json(&cancel_extra)),
                terminal: tid.map(str::to_owned),
                terminal_wait: config.terminal_wait,
            },
        )
        .await
        .map_err(|e| from_lifecycle(Op::Cancel, e))?;
    let (payment, cancelled) = out.value;
    if out.replayed && how != Cancel::Silent {
        // A terminal method carries a new request_id each time, so an earlier cancel means
        // this one asks for what is done or under way. The silent cancel has no key of its
        // own: its retry answers as the first did.
        return Err(match cancelled.state {
            CancelState::Succeeded => YabandError::new(Code::AlreadyCancelled, ""),
            _ => YabandError::new(
                Code::InProgress,
                "a cancel of the transaction is already under way; query it with v3.QueryOrder",
            ),
        });
    }
    let view = PaymentView::of(&payment.snapshot());
    match cancelled.state {
        CancelState::Succeeded => Ok(render::payment_core(&view, view.state_name())),
        CancelState::Generated | CancelState::InProgress => {
            Ok(render::payment_core(&view, render::CANCEL_IN_PROGRESS))
        }
        CancelState::Failed | CancelState::Closed => Err(YabandError::new(
            Code::CannotCancel,
            match how {
                Cancel::Silent => "the wallet refused the cancel; the transaction is unchanged",
                _ => "the terminal declined the cancel; the transaction is unchanged",
            },
        )),
    }
}

/// `v3.QueryOrder`: the payment by `trade_id`.
async fn query_order(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let trade_id = fields::id(s.data(), "trade_id")?;
    let found = app
        .query(&s.user.merchant, &PaymentKey::TransactionNo(trade_id))
        .await
        .map_err(|e| from_lifecycle(Op::Query, e))?;
    Ok(render::query_order(&PaymentView::of(
        &found.payment.snapshot(),
    )))
}

/// `v3.CreateRefund`: part or all of a paid trade; `m_refund_id` makes it idempotent.
async fn create_refund(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    let trade_id = fields::id(p, "trade_id")?;
    let currency = fields::currency(p, "refund_currency")?;
    let amount = fields::amount(p, "refund_amount", currency)?;
    let refund_description = fields::required_text(p, "refund_description", 256)?;
    let m_refund_id = fields::optional_key(p, "m_refund_id")?;
    let notify_url = fields::notify_url(p, &|u| app.check_notify_url(u))?;
    let out = app
        .refund(
            &s.user.merchant,
            &PaymentKey::TransactionNo(trade_id),
            RefundRequest {
                amount,
                settle_currency: None,
                refund_reference: m_refund_id,
                // Without its own URL a refund is told where the payment's notifications go.
                notify: notify_url.map_or(NotifyTo::PaymentUrl, NotifyTo::Url),
                extra: Some(extra::to_json(&RefundExtra {
                    refund_description: Some(refund_description),
                })),
            },
        )
        .await
        .map_err(|e| from_lifecycle(Op::Refund, e))?;
    let (payment, refund) = &out.value;
    Ok(render::refund(
        &PaymentView::of(&payment.snapshot()),
        &RefundView::of(&refund.snapshot()),
    ))
}

/// `v3.QueryRefundOrder`: a refund by `refund_id` (or by the merchant's `m_refund_id`).
async fn query_refund(app: &Lifecycle, s: &Signed) -> Result<Data, YabandError> {
    let p = s.data();
    let key = match (
        fields::text(p, "refund_id", 64)?,
        fields::optional_key(p, "m_refund_id")?,
    ) {
        (Some(no), _) => RefundKey::RefundNo(no),
        (None, Some(reference)) => RefundKey::Reference(reference.as_str().to_owned()),
        (None, None) => return Err(YabandError::missing("data.refund_id")),
    };
    let (payment, refund) = app
        .refund_by(&s.user.merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::RefundQuery, e))?;
    Ok(render::refund(
        &PaymentView::of(&payment.snapshot()),
        &RefundView::of(&refund.snapshot()),
    ))
}
