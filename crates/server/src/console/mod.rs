//! The console at `/console`: operators and merchant staff sign in, find transactions and see
//! each one's whole story. Pages are rendered on the server (maud) with their stylesheet
//! compiled in; sessions live in the database, so any node serves any browser.
//!
//! Roles: an operator and an auditor see every merchant; a merchant admin and merchant staff
//! see their own merchant only — another merchant's transaction is "not found" to them, as if
//! it did not exist. Every sign-in (and every refused one) and sign-out is written to the
//! audit log, shown on the transaction's page and on the user's page.

mod actions;
mod auth;
mod dashboard;
mod export;
mod live;
mod merchants;
mod ops;
pub mod search;

pub use auth::{check_new_password, hash_password};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tillgate_core::console::{ApprovalState, NewAudit, Role, UserRecord};
use tillgate_core::{Lifecycle, PaymentRecord, Store};
use tillgate_domain::MerchantZone;

use auth::SignedIn;
use search::Filter;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";
/// Transactions per page.
const PAGE: u32 = 50;

#[derive(Clone)]
struct Console {
    app: Arc<Lifecycle>,
    /// Production: the session cookie is `Secure`.
    secure: bool,
    /// The zone of dates when no merchant is chosen.
    zone: MerchantZone,
    /// Sandbox mode: a pending payment can be settled from its page.
    sandbox: bool,
}

pub fn routes(app: Arc<Lifecycle>, secure: bool, zone: MerchantZone) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/transactions") }),
        )
        .route("/console/assets/console.css", get(css))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/dashboard", get(dashboard::page))
        .route("/console/notifications", get(ops::notifications))
        .route("/console/notifications/resend", post(ops::resend_failed))
        .route("/console/unresolved", get(ops::unresolved))
        .route("/console/terminals", get(ops::terminals))
        .route(
            "/console/merchants/new",
            get(merchants::new_page).post(merchants::create),
        )
        .route(
            "/console/merchants/{merchant_no}",
            get(merchants::page).post(merchants::save),
        )
        .route(
            "/console/merchants/{merchant_no}/rotate",
            post(merchants::rotate),
        )
        .route("/console/merchants/{merchant_no}/add", post(merchants::add))
        .route("/console/assets/console.js", get(js))
        .route(
            "/console/transactions/{transaction_no}/live",
            get(live::timeline),
        )
        .route("/console/transactions", get(transactions))
        .route("/console/transactions.csv", get(export::csv))
        .route("/console/transactions/{transaction_no}", get(transaction))
        .route("/console/users/{login}", get(user_page))
        .route("/console/approvals", get(actions::approvals))
        .route("/console/approvals/{id}/approve", post(actions::approve))
        .route("/console/approvals/{id}/reject", post(actions::reject))
        .route(
            "/console/transactions/{transaction_no}/refund",
            post(actions::refund),
        )
        .route(
            "/console/transactions/{transaction_no}/cancel",
            post(actions::cancel),
        )
        .route(
            "/console/transactions/{transaction_no}/settle",
            post(actions::settle),
        )
        .route(
            "/console/transactions/{transaction_no}/notifications/{id}/resend",
            post(actions::resend),
        )
        .with_state(Console {
            app,
            secure,
            zone,
            sandbox: !secure,
        })
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        JS,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CSS,
    )
        .into_response()
}

fn guard(r: &mut Response) {
    crate::pages::protect(r, CSP, "same-origin");
}

fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, Html(markup.into_string())).into_response();
    guard(&mut r);
    r
}

fn go(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    guard(&mut r);
    r
}

fn layout(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · tillgate console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                @if let Some(s) = who {
                    nav {
                        span.brand { "tillgate" }
                        a href="/console/dashboard" data-test="dashboard" { "Dashboard" }
                        a href="/console/transactions" { "Transactions" }
                        a href="/console/approvals" data-test="approvals" { "Approvals" }
                        a href="/console/terminals" { "Terminals" }
                        @if s.user.role == Role::Operator {
                            a href="/console/merchants/new" data-test="new-merchant-link" { "New merchant" }
                        }
                        @if !s.user.role.is_merchants() {
                            a href="/console/notifications" { "Notifications" }
                            a href="/console/unresolved" { "Unresolved" }
                        }
                        span.who {
                            a href={ "/console/users/" (s.user.login) } data-test="who" { (s.user.login) }
                            " · " (s.user.role.as_str())
                            @if let Some(m) = &s.user.merchant_no { " · merchant " a href={ "/console/merchants/" (m) } { (m) } }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.session.csrf);
                            button type="submit" data-test="logout" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn failure(status: StatusCode, who: Option<&SignedIn>, message: &str) -> Response {
    respond(status, layout("Error", who, html! { h1 { (message) } }))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: store unavailable");
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "The database is not answering; try again in a moment.",
    )
}

fn address(info: Option<&axum::Extension<ConnectInfo<SocketAddr>>>) -> Option<String> {
    info.map(|axum::Extension(ConnectInfo(a))| a.ip().to_string())
}

/// Writes a line of the audit log about `user` (or a login that named no user); a failure
/// to write it is logged, never shown to the user.
async fn audit(
    store: &dyn Store,
    now: chrono::DateTime<chrono::Utc>,
    who: (Option<&UserRecord>, &str),
    action: &str,
    detail: String,
    address: Option<String>,
) {
    let (user, login) = who;
    let entry = NewAudit {
        at: now,
        user_id: user.map(|u| u.id),
        login: login.to_owned(),
        action: action.to_owned(),
        transaction_no: None,
        detail,
        address,
    };
    if let Err(e) = store.audit(entry).await {
        tracing::warn!(error = %e, action, "console: audit line not written");
    }
}

/// The signed-in user, or the answer that sends the browser to sign in.
async fn require(c: &Console, headers: &HeaderMap) -> Result<SignedIn, Response> {
    match auth::signed_in(c.app.store().as_ref(), headers, c.app.clock().now()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(go("/console/login")),
        Err(e) => Err(unavailable(e)),
    }
}

/// The signed-in user of a posted form, once the form is proven the session's own (its CSRF
/// token) and not another site's page; or the answer refusing it.
async fn posted(c: &Console, headers: &HeaderMap, csrf: &str) -> Result<SignedIn, Response> {
    let s = require(c, headers).await?;
    if !auth::same_origin(headers) || !auth::csrf_ok(&s.session, csrf) {
        return Err(failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Refused: the form is stale or came from another site. Reload the page.",
        ));
    }
    Ok(s)
}

/// Writes a line of the audit log of what `s` did (about a transaction, when given); a failure
/// to write it is logged, never shown to the user.
async fn audited(
    c: &Console,
    s: &SignedIn,
    action: &str,
    transaction_no: Option<&str>,
    detail: String,
) {
    let entry = NewAudit {
        at: c.app.clock().now(),
        user_id: Some(s.user.id),
        login: s.user.login.clone(),
        action: action.to_owned(),
        transaction_no: transaction_no.map(str::to_owned),
        detail,
        address: None,
    };
    if let Err(e) = c.app.store().audit(entry).await {
        tracing::warn!(error = %e, action, "console: audit line not written");
    }
}

/// The merchant a user is confined to (`None`: every merchant).
fn scope(user: &UserRecord) -> Option<i64> {
    if user.role.is_merchants() {
        // A merchant role always has its merchant; one without sees nothing.
        Some(user.merchant_id.unwrap_or(-1))
    } else {
        None
    }
}

fn login_form(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            div.card.login {
                h1 { "tillgate console" }
                @if let Some(e) = error { p.error data-test="error" { (e) } }
                form method="post" action="/console/login" {
                    label for="login" { "Login" }
                    input #login name="login" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password name="password" type="password" autocomplete="current-password" required;
                    p { button.primary type="submit" data-test="sign-in" { "Sign in" } }
                }
            }
        },
    )
}

async fn login_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) =
        auth::signed_in(c.app.store().as_ref(), &headers, c.app.clock().now()).await
    {
        return go("/console/transactions");
    }
    respond(StatusCode::OK, login_form(None))
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
}

const REFUSED: &str = "Wrong login or password, or too many attempts: try again later.";

async fn login(
    State(c): State<Console>,
    info: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !auth::same_origin(&headers) {
        return failure(
            StatusCode::FORBIDDEN,
            None,
            "Refused: the form came from another site.",
        );
    }
    let Ok(Form(form)) = form else {
        return respond(
            StatusCode::BAD_REQUEST,
            login_form(Some("Give a login and a password.")),
        );
    };
    let store = c.app.store().as_ref();
    let now = c.app.clock().now();
    let addr = address(info.as_ref());
    let login = form.login.trim();
    let user = match store.user_by_login(login).await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    // Unknown logins cost the same time as known ones.
    let hash = user
        .as_ref()
        .map_or(auth::decoy_hash(), |u| u.password_hash.as_str())
        .to_owned();
    let password = form.password;
    let matches = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let refused = |reason: &'static str| {
        let user = user.clone();
        let addr = addr.clone();
        async move {
            let who = (user.as_ref(), login);
            audit(store, now, who, "sign-in refused", reason.into(), addr).await;
            respond(StatusCode::UNAUTHORIZED, login_form(Some(REFUSED)))
        }
    };
    let Some(u) = user.as_ref() else {
        return refused("unknown login").await;
    };
    if u.disabled {
        return refused("user disabled").await;
    }
    if u.locked_until.is_some_and(|until| until > now) {
        return refused("locked after wrong passwords").await;
    }
    if !matches {
        if let Err(e) = store
            .login_failed(u.id, auth::LOCK_AFTER, now + auth::LOCK_FOR)
            .await
        {
            return unavailable(e);
        }
        return refused("wrong password").await;
    }
    let cookie = match async {
        store.login_succeeded(u.id).await?;
        auth::open_session(store, u, now).await
    }
    .await
    {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let who = (Some(u), u.login.as_str());
    audit(store, now, who, "sign-in", String::new(), addr).await;
    let mut r = go("/console/transactions");
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(Some(&cookie), c.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Console>,
    info: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let s = match posted(&c, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    if let Err(e) = store.delete_session(&s.session.id_hash).await {
        return unavailable(e);
    }
    let now = c.app.clock().now();
    audit(
        store,
        now,
        (Some(&s.user), &s.user.login),
        "sign-out",
        String::new(),
        address(info.as_ref()),
    )
    .await;
    let mut r = go("/console/login");
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(None, c.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn money(p: &PaymentRecord) -> String {
    let a = p.payment.amount();
    format!("{} {}", a.to_decimal_string(), a.currency().code())
}

fn at(t: chrono::DateTime<chrono::Utc>, zone: MerchantZone) -> String {
    zone.local_time(t).format("%Y-%m-%d %H:%M:%S").to_string()
}

async fn transactions(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    let (rows, error, zone) = match filter
        .search(store, scope(&s.user), &s.user.stores, c.zone, PAGE)
        .await
    {
        Ok((search, zone)) => match store.search_payments(&search).await {
            Ok(rows) => (rows, None, zone),
            Err(e) => return unavailable(e),
        },
        Err(search::FilterError::Invalid(message)) => (Vec::new(), Some(message), c.zone),
        Err(search::FilterError::Store(e)) => return unavailable(e),
    };
    let next = (rows.len() == PAGE as usize)
        .then(|| rows.last().map(|p| filter.with_before(p.id)))
        .flatten();
    let body = html! {
        h1 { "Transactions" }
        form.filters method="get" action="/console/transactions" {
            @if !s.user.role.is_merchants() {
                label { "Merchant" input name="merchant" value=[filter.merchant.as_deref()] size="10"; }
            }
            label { "Store" input name="store" value=[filter.store.as_deref()] size="8"; }
            label { "Terminal" input name="terminal" value=[filter.terminal.as_deref()] size="10" data-test="terminal"; }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for state in search::STATES {
                        option value=(state) selected[filter.status.as_deref() == Some(*state)] { (state) }
                    }
                }
            }
            label { "Dialect"
                select name="dialect" {
                    option value="" { "any" }
                    @for d in ["pockyt", "unified", "yabandpay"] {
                        option value=(d) selected[filter.dialect.as_deref() == Some(d)] { (d) }
                    }
                }
            }
            label { "Currency" input name="currency" value=[filter.currency.as_deref()] size="4"; }
            label { "Amount from" input name="min" value=[filter.min.as_deref()] size="8" inputmode="decimal"; }
            label { "to" input name="max" value=[filter.max.as_deref()] size="8" inputmode="decimal"; }
            label { "From (day)" input name="from" type="date" value=[filter.from.as_deref()]; }
            label { "To (day)" input name="to" type="date" value=[filter.to.as_deref()]; }
            label { "Transaction no" input name="no" value=[filter.no.as_deref()]; }
            label { "Reference" input name="reference" value=[filter.reference.as_deref()]; }
            label { "Refund no / reference" input name="refund" value=[filter.refund.as_deref()]; }
            label { "Cancel no" input name="cancel" value=[filter.cancel.as_deref()]; }
            button.primary type="submit" data-test="search" { "Search" }
        }
        @if let Some(e) = &error { p.error data-test="error" { (e) } }
        table data-test="transactions" {
            thead { tr {
                th { "Created (" (zone.name()) ")" } th { "Transaction" } th { "Merchant" } th { "Store" }
                th { "Reference" } th { "Dialect" } th { "Amount" } th { "Refunded" } th { "State" }
            } }
            tbody {
                @for p in &rows {
                    tr {
                        td { (at(p.created_at, zone)) }
                        td { a href={ "/console/transactions/" (p.transaction_no) } { (p.transaction_no) } }
                        td { (p.merchant_no) }
                        td { (p.store_no) }
                        td.wrap { (p.reference) }
                        td { (p.dialect.as_str()) }
                        td.num { (money(p)) }
                        td.num { (p.payment.refunded().to_decimal_string()) }
                        td { span class={ "state " (p.payment.state().as_str()) } { (p.payment.state().as_str()) } }
                    }
                }
                @if rows.is_empty() && error.is_none() {
                    tr { td colspan="9" .muted { "No transaction matches." } }
                }
            }
        }
        div.pager {
            span { (rows.len()) " shown, newest first · "
                a href={ "/console/transactions.csv?" (filter.query(None)) } data-test="csv" { "CSV of every match" } }
            @if let Some(next) = &next { a href=(next) data-test="older" { "Older →" } }
        }
    };
    respond(StatusCode::OK, layout("Transactions", Some(&s), body))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Said {
    /// What an action just did, as a fixed code (never text from the request).
    done: Option<String>,
    /// Why it was not done, as a fixed code.
    error: Option<String>,
}

async fn transaction(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(transaction_no): Path<String>,
    Query(said): Query<Said>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let notice = said
        .done
        .as_deref()
        .and_then(actions::done_message)
        .map(|m| (false, m.to_owned()));
    show_transaction(&c, &s, &transaction_no, StatusCode::OK, notice).await
}

/// A transaction's page, with a notice (`true`: an error) above it.
async fn show_transaction(
    c: &Console,
    s: &SignedIn,
    transaction_no: &str,
    status: StatusCode,
    notice: Option<(bool, String)>,
) -> Response {
    let s = s.clone();
    let store = c.app.store().as_ref();
    let p = match store.payment_by_transaction_no(transaction_no).await {
        Ok(Some(p)) if s.user.sees(p.merchant_id, &p.store_no) => p,
        Ok(_) => return failure(StatusCode::NOT_FOUND, Some(&s), "No such transaction."),
        Err(e) => return unavailable(e),
    };
    let loaded = async {
        let merchant = store.merchant_by_id(p.merchant_id).await?;
        let refunds = store.refunds_of(p.id).await?;
        let cancels = store.cancels_of(p.id).await?;
        let events = store.events_of(p.id).await?;
        let notes = store
            .notifications(&tillgate_core::NotificationFilter {
                status: None,
                since: None,
                payment_id: Some(p.id),
                limit: 100,
            })
            .await?;
        let mut attempts = Vec::new();
        for n in &notes {
            attempts.push((n.clone(), store.attempts_of(n.id).await?));
        }
        let audit = store.audit_of_transaction(&p.transaction_no).await?;
        let approvals = store.approvals_of_payment(p.id).await?;
        Ok::<_, tillgate_core::StoreError>((
            merchant, refunds, cancels, events, attempts, audit, approvals,
        ))
    }
    .await;
    let (merchant, refunds, cancels, events, notes, audit_lines, approvals) = match loaded {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let zone = merchant.as_ref().map_or(c.zone, |m| m.zone);
    let can = actions::Allowed::of(&s.user, merchant.as_ref(), c.sandbox);
    let body = html! {
        p { a href="/console/transactions" { "← Transactions" } }
        h1 { "Transaction " (p.transaction_no) }
        @if let Some((is_error, text)) = &notice {
            @if *is_error { p.error data-test="notice" { (text) } } @else { p.done data-test="notice" { (text) } }
        }
        div.card {
            dl.facts {
                dt { "Merchant" } dd data-test="merchant" {
                    a href={ "/console/merchants/" (p.merchant_no) } { (p.merchant_no) }
                    @if let Some(name) = merchant.as_ref().and_then(|m| m.display_name.as_deref()) { " · " (name) }
                }
                dt { "Store" } dd { (p.store_no) }
                dt { "Reference" } dd { (p.reference) }
                dt { "Dialect" } dd { (p.dialect.as_str()) }
                dt { "Amount" } dd data-test="amount" { (money(&p)) }
                dt { "Refunded" } dd { (p.payment.refunded().to_decimal_string()) }
                dt { "In flight" } dd { (p.payment.reserved().to_decimal_string()) }
                dt { "State" } dd { span class={ "state " (p.payment.state().as_str()) } data-test="state" data-live-state { (p.payment.state().as_str()) } }
                @if let Some(d) = &p.description { dt { "Description" } dd { (d) } }
                dt { "Created" } dd { (at(p.created_at, zone)) " " (zone.name()) }
                dt { "Expires" } dd { (at(p.expires_at, zone)) }
            }
        }
        (actions::forms(&p, &s.session.csrf, can))
        h2 { "Refunds" }
        @if refunds.is_empty() { p.muted { "None." } } @else {
            table data-test="refunds" {
                thead { tr { th { "Refund" } th { "Reference" } th { "Amount" } th { "State" } th { "Created" } } }
                tbody { @for r in &refunds { tr {
                    td { (r.refund_no) } td { (r.refund_reference.as_deref().unwrap_or("")) }
                    td.num { (r.amount.to_decimal_string()) }
                    td data-test={ "refund-state-" (r.refund_no) } {
                        (format!("{:?}", r.state))
                        @if !r.state.is_final() && approvals.iter().any(|a| a.refund_id == Some(r.id) && a.state != ApprovalState::Approved) {
                            " · held: not sent to the wallet, waits for approval"
                        }
                    }
                    td { (at(r.created_at, zone)) }
                } } }
            }
        }
        @if !approvals.is_empty() {
            h2 { "Refunds asked for approval" }
            table data-test="approvals" {
                thead { tr { th { "#" } th { "Amount" } th { "Asked by" } th { "State" } th { "By" } th { "Why" } th { "Outcome" } } }
                tbody { @for a in &approvals { tr {
                    td { (a.id) }
                    td.num { (actions::minor_text(a.amount_minor, &a.currency)) " " (a.currency) }
                    td { (a.requested_login) }
                    td { (a.state.as_str()) }
                    td { (a.decided_login.as_deref().unwrap_or("")) }
                    td.wrap { (a.decision_reason.as_deref().unwrap_or(&a.reason)) }
                    td.wrap { (a.outcome.as_deref().unwrap_or("")) }
                } } }
            }
        }
        h2 { "Cancels" }
        @if cancels.is_empty() { p.muted { "None." } } @else {
            table {
                thead { tr { th { "Cancel" } th { "Kind" } th { "State" } th { "Created" } } }
                tbody { @for x in &cancels { tr {
                    td { (x.cancel_no) } td { (format!("{:?}", x.kind)) } td { (format!("{:?}", x.state)) }
                    td { (at(x.created_at, zone)) }
                } } }
            }
        }
        h2 { "Timeline" }
        table data-test="timeline" data-live={ "/console/transactions/" (p.transaction_no) "/live?shown=" (events.len()) } {
            thead { tr { th { "At" } th { "What" } th { "Detail" } } }
            tbody {
                @for e in &events { tr { td { (at(e.at, zone)) } td { (e.kind) } td.wrap { (e.detail) } } }
            }
        }
        h2 { "Notifications" }
        @if notes.is_empty() { p.muted { "None." } } @else {
            table data-test="notifications" {
                thead { tr { th { "#" } th { "Topic" } th { "To" } th { "Status" } th { "Attempt" } th { "At" } th { "HTTP" } th { "ms" } th { "Answer" } th {} } }
                tbody {
                    @for (n, attempts) in &notes {
                        @if attempts.is_empty() {
                            tr { td { (n.id) } td { (format!("{:?}", n.topic)) } td.wrap { (n.target_url) } td { (n.status.as_str()) } td colspan="5" .muted { "not tried yet" } }
                        }
                        @for a in attempts {
                            tr {
                                td { (n.id) } td { (format!("{:?}", n.topic)) } td.wrap { (n.target_url) } td { (n.status.as_str()) }
                                td { (a.attempt) } td { (at(a.at, zone)) }
                                td { (a.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                                td.num { (a.latency_ms) }
                                td.wrap { (a.error.as_deref().unwrap_or(&a.response_head)) }
                                td { @if can.resend && a.attempt == n.attempts {
                                    (actions::resend_form(&p.transaction_no, n.id, &s.session.csrf))
                                } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Console actions" }
        @if audit_lines.is_empty() { p.muted { "None." } } @else {
            table data-test="audit" {
                thead { tr { th { "At" } th { "Who" } th { "What" } th { "Detail" } } }
                tbody { @for a in &audit_lines { tr { td { (at(a.at, zone)) } td { (a.login) } td { (a.action) } td.wrap { (a.detail) } } } }
            }
        }
    };
    respond(
        status,
        layout(&format!("Transaction {}", p.transaction_no), Some(&s), body),
    )
}

/// A user's page: who they are and what they did (their own, or anyone's for an operator or
/// an auditor).
async fn user_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(login): Path<String>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    let may_see_others = matches!(s.user.role, Role::Operator | Role::Auditor);
    if login != s.user.login && !may_see_others {
        return failure(StatusCode::NOT_FOUND, Some(&s), "No such user.");
    }
    let user = match store.user_by_login(&login).await {
        Ok(Some(u)) => u,
        Ok(None) => return failure(StatusCode::NOT_FOUND, Some(&s), "No such user."),
        Err(e) => return unavailable(e),
    };
    let lines = match store.audit_of_user(user.id, 200).await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "User " (user.login) }
        div.card { dl.facts {
            dt { "Role" } dd { (user.role.as_str()) }
            @if let Some(m) = &user.merchant_no { dt { "Merchant" } dd { (m) } }
            dt { "Status" } dd { @if user.disabled { "disabled" } @else { "active" } }
            dt { "Created" } dd { (at(user.created_at, c.zone)) " " (c.zone.name()) }
        } }
        h2 { "Audit log" }
        table data-test="audit" {
            thead { tr { th { "At (" (c.zone.name()) ")" } th { "What" } th { "Transaction" } th { "Detail" } th { "From" } } }
            tbody { @for a in &lines { tr {
                td { (at(a.at, c.zone)) } td { (a.action) }
                td { @if let Some(t) = &a.transaction_no { a href={ "/console/transactions/" (t) } { (t) } } }
                td.wrap { (a.detail) } td { (a.address.as_deref().unwrap_or("")) }
            } } }
        }
    };
    respond(
        StatusCode::OK,
        layout(&format!("User {}", user.login), Some(&s), body),
    )
}
