//! Hosted payment pages: where a customer pays a QR payment (unified `QR_CASHIER`, YabandPay
//! `v3.QRcodePayment`) or a web shop's checkout (YabandPay `v3.CreatePayments`).
//!
//! `GET /pay/{token}` shows the merchant, amount, description and methods, the payment's code
//! as an SVG QR code, and follows the payment (a small script asks `/pay/{token}/status`;
//! without JavaScript the page refreshes itself). Once paid the browser goes to the shop's
//! return address, once cancelled or closed to its cancel address; a payment past its time-out
//! shows an expired page. In sandbox mode the page also plays the wallet: "Pay" and "Decline"
//! settle the payment as a customer's wallet would. The token is the only key (see
//! `tillgate_core::page`): a page shows the one payment its token names, nothing else.
//!
//! Pages are rendered on the server (maud; markup escaped by default) with their stylesheet
//! and script compiled into the binary, and carry a strict Content-Security-Policy, no caching
//! and no referrer (the token must not reach the shop in a `Referer`).

mod qr;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use std::sync::Arc;
use tillgate_core::model::{Dialect, PaymentRecord};
use tillgate_core::{Lifecycle, LifecycleError};
use tillgate_domain::{ChannelOutcome, PaymentState};

const CSS: &str = include_str!("assets/checkout.css");
const JS: &str = include_str!("assets/checkout.js");

/// The pages' policy: only the gateway's own stylesheet and script, inline SVG, requests to
/// itself. Forms may post anywhere the gateway redirects them (the shop's addresses).
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Pages {
    app: Arc<Lifecycle>,
    /// Sandbox mode: the page offers "Pay" and "Decline", playing the customer's wallet.
    sandbox: bool,
}

pub fn routes(app: Arc<Lifecycle>, sandbox: bool) -> Router {
    Router::new()
        .route("/pay/assets/checkout.css", get(css))
        .route("/pay/assets/checkout.js", get(js))
        .route("/pay/{token}", get(page))
        .route("/pay/{token}/status", get(status))
        .route("/pay/{token}/cancel", post(cancel))
        .route("/pay/{token}/sandbox", post(play))
        .with_state(Pages { app, sandbox })
}

/// Where the payment stands, as its page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the customer (or for the wallet's answer).
    Awaiting,
    Paid,
    Declined,
    /// Cancelled or closed by the shop or the customer.
    Cancelled,
    /// Not paid before its time-out.
    Expired,
}

impl Stage {
    fn of(p: &PaymentRecord, now: chrono::DateTime<chrono::Utc>) -> Stage {
        match p.payment.state() {
            PaymentState::Created | PaymentState::Pending if now >= p.expires_at => Stage::Expired,
            PaymentState::Created | PaymentState::Pending => Stage::Awaiting,
            PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded => {
                Stage::Paid
            }
            PaymentState::Failed => Stage::Declined,
            PaymentState::Cancelled => Stage::Cancelled,
            PaymentState::Closed if now >= p.expires_at => Stage::Expired,
            PaymentState::Closed => Stage::Cancelled,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Awaiting => "pending",
            Stage::Paid => "paid",
            Stage::Declined => "declined",
            Stage::Cancelled => "cancelled",
            Stage::Expired => "expired",
        }
    }
}

/// The shop's addresses kept with the payment by its dialect: where the customer goes once
/// paid, and once cancelled. Only http(s) addresses are followed.
struct ShopLinks {
    paid: Option<String>,
    cancelled: Option<String>,
}

impl ShopLinks {
    fn of(p: &PaymentRecord) -> ShopLinks {
        let extra = p.extra.as_deref();
        let (paid, cancelled) = match p.dialect {
            Dialect::Unified => {
                let e: tillgate_unified::extra::PayExtra =
                    tillgate_unified::extra::parse_lenient(extra);
                (e.return_url, None)
            }
            Dialect::YabandPay => {
                let e: tillgate_yabandpay::extra::PayExtra =
                    tillgate_yabandpay::extra::parse_lenient(extra);
                (e.redirect_url, e.cancel_url)
            }
            Dialect::Pockyt => (None, None),
        };
        ShopLinks {
            paid: paid.filter(|u| web_address(u)),
            cancelled: cancelled.filter(|u| web_address(u)),
        }
    }
}

fn web_address(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// How the methods the payment may be paid with read on its page.
fn methods(p: &PaymentRecord) -> String {
    if p.dialect == Dialect::YabandPay {
        let e: tillgate_yabandpay::extra::PayExtra =
            tillgate_yabandpay::extra::parse_lenient(p.extra.as_deref());
        if let Some(sub) = e.sub_pay_method {
            return sub;
        }
    }
    match p.vendor.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("wechatpay" | "wx_bar" | "wx_native" | "wechat pay") => "WeChat Pay".into(),
        Some("alipay" | "ali_bar" | "ali_qr") => "Alipay".into(),
        Some("unionpay") => "UnionPay".into(),
        _ => "WeChat Pay · Alipay".into(),
    }
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A rendered page with the pages' headers.
fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, Html(markup.into_string())).into_response();
    guard(&mut r);
    r
}

fn guard(r: &mut Response) {
    protect(r, CSP, "no-referrer");
}

/// The headers every page of the gateway carries: its content policy, no caching, the
/// referrer policy, no framing, no type sniffing. (The console's pages use it too.)
pub(crate) fn protect(r: &mut Response, csp: &'static str, referrer: &'static str) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Sends the browser on with 303 (a form's POST becomes a GET), without a referrer.
fn go(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    guard(&mut r);
    r
}

fn layout(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · tillgate" }
                link rel="stylesheet" href="/pay/assets/checkout.css";
                @if refresh {
                    noscript { meta http-equiv="refresh" content="5"; }
                    script src="/pay/assets/checkout.js" defer {}
                }
            }
            body { (body) }
        }
    }
}

fn not_found() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        layout(
            "Payment not found",
            false,
            html! {
                main {
                    h1 { "Payment not found" }
                    p.description { "This payment page does not exist. Check the link the shop gave you." }
                }
            },
        ),
    )
}

fn unavailable() -> Response {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Try again",
            false,
            html! {
                main {
                    h1 { "Please try again" }
                    p.description { "The payment service is busy. Reload this page in a moment; nothing was charged twice." }
                }
            },
        ),
    )
}

/// What every page of a payment shows at its top; `merchant` is its merchant's name.
fn summary(p: &PaymentRecord, merchant: &str, sandbox: bool) -> Markup {
    let amount = p.payment.amount();
    html! {
        header {
            span.merchant data-test="merchant" { (merchant) }
            @if sandbox { span.badge { "Sandbox" } }
        }
        p.amount data-test="amount" { (amount.to_decimal_string()) " " (amount.currency().code()) }
        @if let Some(d) = &p.description {
            p.description data-test="description" { (d) }
        }
    }
}

async fn page(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let p = match pages.app.payment_of_page(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "payment page: store unavailable");
            return unavailable();
        }
    };
    let stage = Stage::of(&p, pages.app.clock().now());
    let links = ShopLinks::of(&p);
    let merchant = match pages.app.store().merchant_by_id(p.merchant_id).await {
        Ok(Some(m)) => m
            .display_name
            .unwrap_or_else(|| format!("Merchant {}", m.merchant_no)),
        Ok(None) => format!("Merchant {}", p.merchant_no),
        Err(_) => return unavailable(),
    };
    match stage {
        Stage::Paid => {
            if let Some(to) = &links.paid {
                return go(to);
            }
        }
        Stage::Cancelled => {
            if let Some(to) = &links.cancelled {
                return go(to);
            }
        }
        _ => {}
    }
    let status = if stage == Stage::Expired {
        StatusCode::GONE
    } else {
        StatusCode::OK
    };
    let here = format!("/pay/{token}");
    let body = html! {
        main data-state=(stage.name()) data-status=[(stage == Stage::Awaiting).then(|| format!("{here}/status"))] {
            (summary(&p, &merchant, pages.sandbox))
            @match stage {
                Stage::Awaiting => {
                    p.methods { "Pay with " (methods(&p)) }
                    div.qr data-test="qr" aria-label="QR code to scan with your wallet app" {
                        (PreEscaped(qr::svg(&pages.app.payment_page_url(&p.transaction_no))))
                    }
                    p.status.waiting data-test="status" { "Scan the code with your wallet app. This page follows the payment." }
                    @if pages.sandbox {
                        div.sandbox {
                            p { "Sandbox: play the customer's wallet." }
                            div.actions {
                                form method="post" action={ (here) "/sandbox" } {
                                    input type="hidden" name="outcome" value="paid";
                                    button.pay type="submit" data-test="pay" { "Pay" }
                                }
                                form method="post" action={ (here) "/sandbox" } {
                                    input type="hidden" name="outcome" value="declined";
                                    button.decline type="submit" data-test="decline" { "Decline" }
                                }
                            }
                        }
                    }
                    form.cancel method="post" action={ (here) "/cancel" } {
                        button type="submit" data-test="cancel" { "Cancel and return to the shop" }
                    }
                }
                Stage::Paid => {
                    p.status.ok data-test="status" { "Paid. Thank you." }
                }
                Stage::Declined => {
                    p.status.bad data-test="status" { "The payment was declined. Nothing was charged." }
                    @if let Some(to) = &links.cancelled {
                        a.button href=(to) { "Return to the shop" }
                    }
                }
                Stage::Cancelled => {
                    p.status.bad data-test="status" { "This payment was cancelled." }
                }
                Stage::Expired => {
                    p.status.bad data-test="status" { "This payment page has expired. Nothing was charged; start again at the shop." }
                    @if let Some(to) = &links.cancelled {
                        a.button href=(to) { "Return to the shop" }
                    }
                }
            }
            footer { "Transaction " (p.transaction_no) }
        }
    };
    let title = match stage {
        Stage::Awaiting => "Pay",
        Stage::Paid => "Paid",
        Stage::Declined => "Declined",
        Stage::Cancelled => "Cancelled",
        Stage::Expired => "Expired",
    };
    respond(status, layout(title, stage == Stage::Awaiting, body))
}

async fn status(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let mut r = match pages.app.payment_of_page(&token).await {
        Ok(Some(p)) => {
            let stage = Stage::of(&p, pages.app.clock().now());
            Json(serde_json::json!({ "state": stage.name() })).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such payment page" })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "try again" })),
        )
            .into_response(),
    };
    guard(&mut r);
    r
}

#[derive(Deserialize)]
struct Play {
    outcome: String,
}

/// Sandbox: the customer's wallet pays or declines the payment.
async fn play(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    form: Result<Form<Play>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !pages.sandbox {
        return not_found();
    }
    let Ok(Form(form)) = form else {
        return respond(
            StatusCode::BAD_REQUEST,
            layout(
                "Bad request",
                false,
                html! { main { h1 { "Bad request" } p.description { "outcome must be paid or declined" } } },
            ),
        );
    };
    let outcome = match form.outcome.as_str() {
        "paid" => ChannelOutcome::Approved,
        "declined" => ChannelOutcome::Declined,
        _ => {
            return respond(
                StatusCode::BAD_REQUEST,
                layout(
                    "Bad request",
                    false,
                    html! { main { h1 { "Bad request" } p.description { "outcome must be paid or declined" } } },
                ),
            )
        }
    };
    let p = match pages.app.payment_of_page(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(_) => return unavailable(),
    };
    // An expired page pays nothing, whatever the payment row still says.
    if Stage::of(&p, pages.app.clock().now()) == Stage::Awaiting {
        match pages
            .app
            .wallet_settles_payment(&p.transaction_no, outcome)
            .await
        {
            Ok(_) | Err(LifecycleError::Rejected(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "payment page: sandbox settle failed");
                return unavailable();
            }
        }
    }
    go(&format!("/pay/{token}"))
}

/// The customer gives up: the payment is closed (the wallet is told), and the browser goes
/// back to the shop's cancel address, or to the page, which says it was cancelled.
async fn cancel(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let p = match pages.app.payment_of_page(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(_) => return unavailable(),
    };
    if Stage::of(&p, pages.app.clock().now()) == Stage::Awaiting {
        match pages.app.customer_closes(&p).await {
            Ok(()) | Err(LifecycleError::Rejected(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "payment page: close failed");
                return unavailable();
            }
        }
    }
    go(&format!("/pay/{token}"))
}
