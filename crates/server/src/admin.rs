//! The admin API of operators: notifications and their attempts, and resending.
//!
//! `Authorization: Bearer <admin token>` (config `admin_token`, env `TILLGATE_ADMIN_TOKEN`).
//! Without a configured token the admin API is open in sandbox mode (a developer's machine)
//! and absent in production.

use crate::config::{Config, Mode};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tillgate_core::service::Lifecycle;
use tillgate_core::{
    AttemptRecord, NotificationFilter, OutboxRecord, OutboxStatus, Resend, Secret, Store,
    StoreError,
};

/// The admin routes, or none in production without a token.
pub fn routes(app: Arc<Lifecycle>, config: &Config) -> Router {
    if config.mode == Mode::Production && config.admin_token.is_none() {
        return Router::new();
    }
    let token = config.admin_token.clone();
    Router::new()
        .route("/admin/v1/notifications", get(list))
        .route("/admin/v1/notifications/resend", post(resend_failed))
        .route("/admin/v1/notifications/{id}", get(one))
        .route("/admin/v1/notifications/{id}/resend", post(resend_one))
        .route(
            "/admin/v1/transactions",
            get({
                let zone = config.default_timezone;
                move |app, query| search(app, query, zone)
            }),
        )
        .route("/admin/v1/transactions/{transaction_no}", get(transaction))
        .route("/admin/v1/unresolved", get(unresolved))
        .with_state(app)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { authorize(token.as_ref(), req, next).await }
        }))
}

/// Lets a request through when no token is configured, or when it carries the token (compared
/// in constant time); else answers 401.
pub(crate) async fn authorize(
    token: Option<&Secret<String>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "admin token missing or wrong");
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::warn!(error = %e, "admin request failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later")
}

/// Parses an RFC 3339 time or a calendar date (midnight UTC).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// A notification with its attempts, as operators see it.
pub fn notification_json(n: &OutboxRecord, attempts: &[AttemptRecord]) -> Value {
    let snapshot = tillgate_core::Snapshot::from_json(&n.snapshot, n.dialect).ok();
    json!({
        "id": n.id,
        "transactionNo": snapshot.map(|s| s.payment.transaction_no),
        "topic": n.topic.as_str(),
        "dialect": n.dialect.as_str(),
        "targetUrl": n.target_url,
        "status": n.status.as_str(),
        "attempts": n.attempts,
        "nextAttemptAt": (n.status == OutboxStatus::Pending).then(|| n.next_attempt_at.to_rfc3339()),
        "createdAt": n.created_at.to_rfc3339(),
        "lastAttemptAt": n.last_attempt_at.map(|t| t.to_rfc3339()),
        "deliveredAt": n.delivered_at.map(|t| t.to_rfc3339()),
        "attemptLog": attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "at": a.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "httpStatus": a.http_status,
            "response": a.response_head,
            "latencyMs": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    since: Option<String>,
    #[serde(rename = "transactionNo")]
    transaction_no: Option<String>,
    limit: Option<i64>,
}

/// Builds the filter of a listing; `Err` carries the message for the operator.
pub async fn filter(
    store: &dyn Store,
    status: Option<&str>,
    since: Option<&str>,
    transaction_no: Option<&str>,
    limit: Option<i64>,
) -> Result<Option<NotificationFilter>, String> {
    let status = match status {
        None => None,
        Some(s) => {
            Some(OutboxStatus::parse(s).ok_or("status must be pending, delivered or failed")?)
        }
    };
    let since = match since {
        None => None,
        Some(t) => Some(parse_time(t).ok_or("since must be an RFC 3339 time or a date")?),
    };
    let payment_id = match transaction_no {
        None => None,
        Some(no) => match store.payment_by_transaction_no(no).await {
            Ok(Some(p)) => Some(p.id),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        },
    };
    Ok(Some(NotificationFilter {
        status,
        since,
        payment_id,
        limit: limit.unwrap_or(100).clamp(1, 1000),
    }))
}

/// The notifications of a filter with their attempts.
pub async fn listing(store: &dyn Store, filter: &NotificationFilter) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for n in store.notifications(filter).await? {
        let attempts = store.attempts_of(n.id).await?;
        out.push(notification_json(&n, &attempts));
    }
    Ok(json!({ "notifications": out }))
}

async fn list(State(app): State<Arc<Lifecycle>>, Query(q): Query<ListQuery>) -> Response {
    let store = app.store().as_ref();
    let f = match filter(
        store,
        q.status.as_deref(),
        q.since.as_deref(),
        q.transaction_no.as_deref(),
        q.limit,
    )
    .await
    {
        Ok(Some(f)) => f,
        Ok(None) => return Json(json!({ "notifications": [] })).into_response(),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match listing(store, &f).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

/// Operations waiting for the wallet since before `before`, each with its timeline.
pub async fn unresolved_listing(
    store: &dyn Store,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for op in store.unresolved(before, limit.clamp(1, 1000)).await? {
        let events = store.events_of(op.payment_id).await?;
        let (kind, number) = match &op.kind {
            tillgate_core::UnresolvedKind::Payment => ("payment", None),
            tillgate_core::UnresolvedKind::Refund { refund_no } => {
                ("refund", Some(refund_no.clone()))
            }
            tillgate_core::UnresolvedKind::Cancel { cancel_no } => {
                ("cancel", Some(cancel_no.clone()))
            }
        };
        out.push(json!({
            "kind": kind,
            "transactionNo": op.transaction_no,
            "merchantNo": op.merchant_no,
            "operationNo": number,
            "since": op.since.to_rfc3339(),
            "events": events.iter().map(|e| json!({
                "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "kind": e.kind,
                "detail": e.detail,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({ "unresolved": out }))
}

async fn unresolved(State(app): State<Arc<Lifecycle>>) -> Response {
    match unresolved_listing(app.store().as_ref(), app.now(), 1000).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /admin/v1/transactions?merchant=&store=&terminal=&status=&dialect=&from=&to=&no=&reference=&refund=&cancel=&before=&limit=`:
/// the transactions matching every filter given, newest first, a page at a time (`next` is the
/// `before` of the following page). The console's transactions page runs the same search.
async fn search(
    State(app): State<Arc<Lifecycle>>,
    Query(filter): Query<crate::console::search::Filter>,
    zone: tillgate_domain::MerchantZone,
) -> Response {
    use crate::console::search::FilterError;
    let store = app.store().as_ref();
    let found = async {
        let limit = filter.limit(50)?;
        let (search, zone) = filter.search(store, None, &[], zone, limit).await?;
        let rows = store.search_payments(&search).await?;
        Ok::<_, FilterError>((rows, zone, limit))
    }
    .await;
    let (rows, zone, limit) = match found {
        Ok(v) => v,
        Err(FilterError::Invalid(message)) => return error(StatusCode::BAD_REQUEST, &message),
        Err(FilterError::Store(e)) => return store_error(e),
    };
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|p| p.id))
        .flatten();
    Json(json!({
        "timezone": zone.name(),
        "transactions": rows.iter().map(|p| json!({
            "transactionNo": p.transaction_no,
            "merchantNo": p.merchant_no,
            "storeNo": p.store_no,
            "reference": p.reference,
            "dialect": p.dialect.as_str(),
            "state": p.payment.state().as_str(),
            "amountMinor": p.payment.amount().minor(),
            "currency": p.payment.amount().currency().code(),
            "refundedMinor": p.payment.refunded().minor(),
            "createdAt": p.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })).collect::<Vec<_>>(),
        "next": next.map(|id| id.to_string()),
    }))
    .into_response()
}

/// A transaction's state and audit timeline.
async fn transaction(
    State(app): State<Arc<Lifecycle>>,
    Path(transaction_no): Path<String>,
) -> Response {
    let store = app.store();
    let found = match store.payment_by_transaction_no(&transaction_no).await {
        Ok(Some(p)) => p,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such transaction"),
        Err(e) => return store_error(e),
    };
    let events = match store.events_of(found.id).await {
        Ok(e) => e,
        Err(e) => return store_error(e),
    };
    Json(json!({
        "transactionNo": found.transaction_no,
        "merchantNo": found.merchant_no,
        "reference": found.reference,
        "state": found.payment.state().as_str(),
        "amountMinor": found.payment.amount().minor(),
        "currency": found.payment.amount().currency().code(),
        "refundedMinor": found.payment.refunded().minor(),
        "events": events.iter().map(|e| json!({
            "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "kind": e.kind,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn one(State(app): State<Arc<Lifecycle>>, Path(id): Path<i64>) -> Response {
    let store = app.store();
    match store.notification(id).await {
        Ok(Some(n)) => match store.attempts_of(id).await {
            Ok(a) => Json(notification_json(&n, &a)).into_response(),
            Err(e) => store_error(e),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, "no such notification"),
        Err(e) => store_error(e),
    }
}

async fn resend_one(State(app): State<Arc<Lifecycle>>, Path(id): Path<i64>) -> Response {
    match app.store().resend(Resend::One(id), app.now()).await {
        Ok(0) => error(StatusCode::NOT_FOUND, "no such notification"),
        Ok(n) => {
            app.outbox_wake().notify_one();
            Json(json!({ "resent": n })).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct ResendQuery {
    failed_since: Option<String>,
}

async fn resend_failed(
    State(app): State<Arc<Lifecycle>>,
    Query(q): Query<ResendQuery>,
) -> Response {
    let Some(since) = q.failed_since.as_deref().and_then(parse_time) else {
        return error(
            StatusCode::BAD_REQUEST,
            "failed_since must be an RFC 3339 time or a date",
        );
    };
    match app
        .store()
        .resend(Resend::FailedSince(since), app.now())
        .await
    {
        Ok(n) => {
            app.outbox_wake().notify_one();
            Json(json!({ "resent": n })).into_response()
        }
        Err(e) => store_error(e),
    }
}
