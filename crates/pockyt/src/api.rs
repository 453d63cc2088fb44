//! The Pockyt v3 endpoints.

use crate::envelope::{from_lifecycle, success, Op, PockytError, RetCode};
use crate::params::{Params, ParamsError};
use crate::{render, sign};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use std::sync::Arc;
use tillgate_core::replay::{self, StoredAnswer};
use tillgate_core::service::{
    AddRequest, CancelOptions, CredentialError, Credentials, Lifecycle, LifecycleError, NotifyTo,
    PayRequest, RefundRequest, StoreCredential,
};
use tillgate_core::{Dialect, PaymentKey};
use tillgate_domain::{BusinessDayRule, CancelIntent, Currency, Key, Money};
use tillgate_wire::RateLimit;

type App = State<Arc<Lifecycle>>;
type Limit = Extension<RateLimit>;
type Body = Result<Bytes, BytesRejection>;

/// The Pockyt v3 routes, with the aliases the official SDKs use, and no rate limit.
pub fn router(app: Arc<Lifecycle>) -> Router {
    router_with(app, RateLimit::off())
}

/// The Pockyt v3 routes; `merchant_limit` counts each merchant's requests once their
/// signature is verified.
pub fn router_with(app: Arc<Lifecycle>, merchant_limit: RateLimit) -> Router {
    Router::new()
        .route("/app-instore/v3/add", post(add))
        .route("/app-instore/v3/pay", post(pay))
        .route("/app-instore/v3/prepay", post(pay))
        .route("/app-data-search/v3/cancel", post(cancel))
        .route("/app-data-search/v3/reverse", post(cancel))
        .route("/app-instore/v3/reverse", post(cancel))
        .route("/app-data-search/v3/refund", post(refund))
        .route("/app-data-search/v3/tran-query", post(query))
        .layer(Extension(merchant_limit))
        .with_state(app)
}

/// A request whose signature was verified, with the store it speaks for.
struct Signed {
    params: Params,
    credential: Arc<StoreCredential>,
}

/// Parses the body, finds the store's token and verifies `verifySign` before anything else;
/// then counts the request against its merchant's rate limit.
async fn authenticate(
    credentials: &Credentials,
    limit: &RateLimit,
    headers: &HeaderMap,
    body: Body,
) -> Result<Signed, PockytError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            PockytError::new(
                RetCode::ParameterValueError,
                "request body is larger than 64 KiB",
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            PockytError::new(
                RetCode::ParameterValueError,
                "request body could not be read",
            )
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let params = Params::parse(content_type, &body).map_err(|e| match e {
        ParamsError::Empty => PockytError::new(RetCode::ParameterNull, e.to_string()),
        _ => PockytError::new(RetCode::ParameterValueError, e.to_string()),
    })?;
    let merchant_no = params
        .text("merchantNo")
        .ok_or_else(|| PockytError::missing("merchantNo"))?;
    let store_no = params
        .text("storeNo")
        .ok_or_else(|| PockytError::missing("storeNo"))?;
    let signature = params
        .text("verifySign")
        .ok_or_else(|| PockytError::missing("verifySign"))?;
    let credential = credentials
        .store_credential(merchant_no, store_no)
        .await
        .map_err(|e| match e {
            CredentialError::Unknown => {
                PockytError::new(RetCode::NoRights, "unknown merchantNo or storeNo")
            }
            CredentialError::Store(e) => from_lifecycle(Op::Query, e.into()),
            CredentialError::Sealed(e) => {
                tracing::error!(error = %e, "a stored token does not open with the master key");
                PockytError::new(RetCode::SystemError, "system error")
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        })?;
    // The token in force, or the one before a rotation while it is still accepted.
    let verified = |token: &tillgate_core::Secret<String>| {
        let token_md5 = sign::md5_hex(token.expose().as_bytes());
        sign::verify_with_token_md5(&params, &token_md5, signature)
    };
    let previous = tillgate_core::credentials::previous_at(&credential.previous, credentials.now());
    if !verified(&credential.token) && !previous.is_some_and(verified) {
        return Err(PockytError::new(
            RetCode::NoRights,
            "verifySign does not match the parameters and the store's token",
        ));
    }
    limit
        .check(credential.merchant.merchant_no.as_str())
        .map_err(|busy| PockytError::busy(busy, "this merchant"))?;
    Ok(Signed { params, credential })
}

fn payment_key(params: &Params) -> Result<PaymentKey, PockytError> {
    match (params.text("transactionNo"), params.text("reference")) {
        (Some(t), None) => Ok(PaymentKey::TransactionNo(t.to_owned())),
        (None, Some(r)) => Ok(PaymentKey::Reference(r.to_owned())),
        (None, None) => Err(PockytError::missing("transactionNo or reference")),
        (Some(_), Some(_)) => Err(PockytError::new(
            RetCode::ParameterValueError,
            "send exactly one of transactionNo and reference, not both",
        )),
    }
}

fn currency(params: &Params, field: &str) -> Result<Currency, PockytError> {
    let code = params
        .text(field)
        .ok_or_else(|| PockytError::missing(field))?;
    Currency::from_code(&code.to_ascii_uppercase())
        .ok_or_else(|| PockytError::invalid(field, "is not a supported ISO 4217 currency code"))
}

/// A currency the official SDKs may leave out (`add`'s `currency` and `settleCurrency`):
/// absent, it is the store's default currency, USD when the store has none.
fn currency_or_default(
    params: &Params,
    field: &str,
    credential: &StoreCredential,
) -> Result<Currency, PockytError> {
    if params.text(field).is_none() {
        return credential
            .default_currency
            .or_else(|| Currency::from_code("USD"))
            .ok_or_else(|| PockytError::missing(field));
    }
    currency(params, field)
}

fn amount(params: &Params, field: &str, currency: Currency) -> Result<Money, PockytError> {
    let text = params
        .text(field)
        .ok_or_else(|| PockytError::missing(field))?;
    Money::parse_positive(text, currency).map_err(|e| PockytError::invalid(field, e))
}

fn key(params: &Params, field: &str) -> Result<Option<Key>, PockytError> {
    params
        .text(field)
        .map(|k| Key::parse(k).map_err(|e| PockytError::invalid(field, e)))
        .transpose()
}

fn optional_text(params: &Params, field: &str, max: usize) -> Result<Option<String>, PockytError> {
    match params.text(field) {
        Some(t) if t.chars().count() > max => Err(PockytError::invalid(
            field,
            format!("is longer than {max} characters"),
        )),
        Some(t) if t.chars().any(char::is_control) => {
            Err(PockytError::invalid(field, "contains a control character"))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// A notification URL: http or https, bounded in length, allowed by the gateway's policy.
fn notify_url(
    app: &Lifecycle,
    params: &Params,
    field: &str,
) -> Result<Option<String>, PockytError> {
    let url = optional_text(params, field, 512)?;
    if let Some(u) = &url {
        app.check_notify_url(u)
            .map_err(|why| PockytError::invalid(field, why))?;
    }
    Ok(url)
}

async fn add(
    State(app): App,
    Extension(limit): Limit,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PockytError> {
    let Signed { params, credential } =
        authenticate(app.credentials(), &limit, &headers, body).await?;
    let cur = currency_or_default(&params, "currency", &credential)?;
    // storeAdminNo (the cashier) is kept with the payment and echoed in its answers.
    let extra = optional_text(&params, "storeAdminNo", 64)?
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::json!({ "storeAdminNo": s }).to_string());
    let req = AddRequest {
        amount: amount(&params, "amount", cur)?,
        settle_currency: currency_or_default(&params, "settleCurrency", &credential)?,
        reference: key(&params, "reference")?.ok_or_else(|| PockytError::missing("reference"))?,
        store_no: credential.store_no.clone(),
        description: optional_text(&params, "description", 256)?,
        notify_url: notify_url(&app, &params, "ipnUrl")?,
        timeout_minutes: match params.text("timeout") {
            None => None,
            Some(t) => Some(
                t.parse::<i64>()
                    .ok()
                    .filter(|m| (1..=43_200).contains(m))
                    .ok_or_else(|| {
                        PockytError::invalid("timeout", "must be whole minutes from 1 to 43200")
                    })?,
            ),
        },
        dialect: Dialect::Pockyt,
        extra,
    };
    let zone = credential.merchant.zone;
    let out = app
        .add(&credential.merchant, req)
        .await
        .map_err(|e| from_lifecycle(Op::Add, e))?;
    Ok(success(
        render::transaction(&out.value, zone),
        "add success",
    ))
}

async fn pay(
    State(app): App,
    Extension(limit): Limit,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PockytError> {
    let Signed { params, credential } =
        authenticate(app.credentials(), &limit, &headers, body).await?;
    let key = payment_key(&params)?;
    let req = PayRequest {
        barcode: Some(
            optional_text(&params, "paymentBarcode", 128)?
                .ok_or_else(|| PockytError::missing("paymentBarcode"))?,
        ),
        vendor: optional_text(&params, "vendor", 32)?,
    };
    let out = app
        .pay(&credential.merchant, &key, req)
        .await
        .map_err(|e| from_lifecycle(Op::Pay, e))?;
    Ok(success(
        render::transaction(&out.value, credential.merchant.zone),
        "prepay success",
    ))
}

async fn cancel(
    State(app): App,
    Extension(limit): Limit,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PockytError> {
    let Signed { params, credential } =
        authenticate(app.credentials(), &limit, &headers, body).await?;
    let key = payment_key(&params)?;
    let rule = BusinessDayRule::calendar_day(credential.merchant.zone);
    // The cancel's IPN goes where the transaction's notifications go (its ipnUrl).
    let found = app
        .query(&credential.merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::Cancel, e))?;
    let out = app
        .cancel(
            &credential.merchant,
            &key,
            rule,
            CancelIntent::Cancel,
            CancelOptions {
                notify_url: found.payment.notify_url,
                ..CancelOptions::default()
            },
        )
        .await
        .map_err(|e| from_lifecycle(Op::Cancel, e))?;
    let (payment, cancel) = &out.value;
    Ok(success(render::cancel(payment, cancel), "cancel success"))
}

async fn refund(
    State(app): App,
    Extension(limit): Limit,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PockytError> {
    let signed = authenticate(app.credentials(), &limit, &headers, body).await?;
    if signed.params.text("refundReference").is_some() {
        return refund_signed(&app, signed).await;
    }
    // No key of the merchant's, and Pockyt signs no time or nonce: an exact copy of this
    // signed request gets the first answer instead of refunding again.
    let signature = signed.params.text("verifySign").unwrap_or_default();
    let digest = replay::digest(Dialect::Pockyt.as_str(), "refund", signature);
    let merchant_id = signed.credential.merchant.id;
    let answer = app
        .replays()
        .run(merchant_id, digest, || async {
            let response = refund_signed(&app, signed).await.into_response();
            let (status, content_type, body) = tillgate_wire::replay::capture(response).await;
            StoredAnswer {
                status,
                content_type,
                body,
            }
        })
        .await
        .map_err(|e| from_lifecycle(Op::Refund, e.into()))?;
    match answer {
        Some(a) => Ok(tillgate_wire::replay::restore(
            a.status,
            &a.content_type,
            a.body,
        )),
        None => Err(from_lifecycle(Op::Refund, LifecycleError::InProgress)),
    }
}

async fn refund_signed(app: &Lifecycle, signed: Signed) -> Result<Response, PockytError> {
    let Signed { params, credential } = signed;
    let key = payment_key(&params)?;
    let cur = currency(&params, "currency")?;
    let req = RefundRequest {
        amount: amount(&params, "refundAmount", cur)?,
        settle_currency: Some(currency(&params, "settleCurrency")?),
        refund_reference: self::key(&params, "refundReference")?,
        // Refund notifications go to the refund's own ipnUrl, else to the transaction's.
        notify: match notify_url(app, &params, "ipnUrl")? {
            Some(url) => NotifyTo::Url(url),
            None => NotifyTo::PaymentUrl,
        },
        extra: None,
    };
    let out = app
        .refund(&credential.merchant, &key, req)
        .await
        .map_err(|e| from_lifecycle(Op::Refund, e))?;
    let (payment, refund) = &out.value;
    Ok(success(render::refund(payment, refund), "refund success "))
}

async fn query(
    State(app): App,
    Extension(limit): Limit,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PockytError> {
    let Signed { params, credential } =
        authenticate(app.credentials(), &limit, &headers, body).await?;
    let key = payment_key(&params)?;
    let found = app
        .query(&credential.merchant, &key)
        .await
        .map_err(|e| from_lifecycle(Op::Query, e))?;
    Ok(success(
        render::query(&found.payment, &found.refunds, credential.merchant.zone),
        "query success ",
    ))
}
