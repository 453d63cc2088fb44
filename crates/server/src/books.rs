//! The books as operators see them: settlements, reconciliations with the HTTP wallets'
//! statements, and the cases they open — as JSON (the admin API and the CLI share it), the
//! admin routes, and the daily schedule inside `serve`.
//!
//! Admin API (same bearer token as the rest of `/admin/v1`):
//!
//! - `GET /admin/v1/settlement?date=YYYY-MM-DD[&merchantNo=N][&storeNo=S]`
//! - `GET /admin/v1/reconciliations?date=YYYY-MM-DD` — each wallet's run of that day, if any
//! - `POST /admin/v1/reconciliations?date=YYYY-MM-DD` — reconcile that UTC day now (again)
//! - `GET /admin/v1/cases[?status=open|closed][&date=YYYY-MM-DD][&limit=N]`
//! - `GET /admin/v1/cases/{id}` — both sides and the transaction's timeline
//! - `POST /admin/v1/cases/{id}/close` with `{"note": "…"}`

use crate::config::{ChannelConfig, Config, Mode};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tillgate_core::books::*;
use tillgate_core::closing::{self, Scope, ScopeMerchants, StatementSource};
use tillgate_core::service::Lifecycle;
use tillgate_core::{Store, StoreError};
use tillgate_domain::Clock;

/// Why a books request was not answered: the operator's input, or the store.
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The wallets whose statements can be reconciled, and what cannot be (the sandbox wallet keeps
/// no statement), said in words.
pub struct Wallets {
    pub scopes: Vec<Scope>,
    pub without_statement: Vec<String>,
}

fn http_wallet(c: &ChannelConfig) -> anyhow::Result<Arc<dyn StatementSource>> {
    use anyhow::Context;
    let key = c
        .key
        .as_ref()
        .context("an HTTP wallet needs its key: set TILLGATE_CHANNEL_KEY (hex)")?;
    let key = tillgate_wallet::protocol::parse_key_hex(key.expose())
        .map_err(|e| anyhow::anyhow!("channel key: {e}"))?;
    // A statement of a busy day has many pages; each gets the call's time-out at least.
    let timeout = std::time::Duration::from_millis(c.timeout_ms.max(10_000));
    let http = tillgate_wallet::HttpChannel::new(&c.wallet, key, timeout)
        .map_err(|e| anyhow::anyhow!("channel: {e}"))?;
    Ok(Arc::new(http))
}

/// Every configured HTTP wallet as a scope of reconciliation: `default` (the `[channel]`
/// wallet, for merchants without their own) and `merchant:N` for each merchant's own wallet.
pub fn wallets(config: &Config) -> anyhow::Result<Wallets> {
    let own: BTreeSet<String> = config.merchant_channels.keys().cloned().collect();
    let mut w = Wallets {
        scopes: Vec::new(),
        without_statement: Vec::new(),
    };
    let sandbox = |who: &str| {
        format!(
            "{who} is the in-process sandbox wallet, which keeps no statement: there is nothing \
             to reconcile its operations with (reconciliation needs an HTTP wallet: --channel \
             URL or [channel] wallet)"
        )
    };
    if config.channel.wallet == "sandbox" {
        w.without_statement.push(sandbox("the default wallet"));
    } else {
        w.scopes.push(Scope {
            name: "default".into(),
            wallet: http_wallet(&config.channel)?,
            merchants: ScopeMerchants::AllBut(own.clone()),
        });
    }
    for (merchant_no, c) in &config.merchant_channels {
        if c.wallet == "sandbox" {
            w.without_statement
                .push(sandbox(&format!("merchant {merchant_no}'s wallet")));
            continue;
        }
        w.scopes.push(Scope {
            name: format!("merchant:{merchant_no}"),
            wallet: http_wallet(c)?,
            merchants: ScopeMerchants::Only([merchant_no.clone()].into()),
        });
    }
    Ok(w)
}

fn money(minor: i64, currency: &str) -> Value {
    json!(decimal(minor, currency))
}

fn tally(t: &Tally, currency: &str) -> Value {
    json!({ "count": t.count, "sum": money(t.sum_minor, currency), "sumMinor": t.sum_minor })
}

/// A settlement as JSON: amounts as decimal strings and as integer minor units.
pub fn settlement_json(s: &Settlement) -> Value {
    json!({
        "date": s.date.to_string(),
        "merchantNo": s.merchant_no,
        "storeNo": s.store_no,
        "timezone": s.timezone,
        "from": s.from.to_rfc3339(),
        "to": s.to.to_rfc3339(),
        "feePlan": { "bps": s.fee_plan.bps, "fixedMinor": s.fee_plan.fixed_minor },
        "currencies": s.currencies.iter().map(|(c, t)| json!({
            "currency": c,
            "payments": tally(&t.payments, c),
            "refunds": tally(&t.refunds, c),
            "cancels": tally(&t.cancels, c),
            "reversals": tally(&t.reversals, c),
            "fees": money(t.fees_minor, c),
            "feesMinor": t.fees_minor,
            "net": money(t.net_minor, c),
            "netMinor": t.net_minor,
        })).collect::<Vec<_>>(),
    })
}

/// The settlements of a business day: of one merchant (and store), or of every merchant, each
/// in its own time zone.
pub async fn settlements(
    store: &dyn Store,
    date: &str,
    merchant_no: Option<&str>,
    store_no: Option<&str>,
) -> Result<Value, BooksError> {
    let date = parse_day(date).map_err(BooksError::Input)?;
    let merchants = match merchant_no {
        Some(no) => vec![store
            .merchant(no)
            .await?
            .ok_or_else(|| BooksError::NotFound(format!("there is no merchant {no}")))?],
        None => {
            if store_no.is_some() {
                return Err(BooksError::Input(
                    "a store number needs its merchant's number (--merchant-no)".into(),
                ));
            }
            store.merchants().await?
        }
    };
    let mut out = Vec::new();
    for m in &merchants {
        let s = closing::settlement(store, m, store_no, date).await?;
        out.push(settlement_json(&s));
    }
    Ok(json!({ "date": date.to_string(), "settlements": out }))
}

/// The CSV heading of a settlement report; one line per merchant and currency follows.
pub const SETTLEMENT_CSV_HEADING: &str = "date,merchant_no,store_no,timezone,currency,\
payments_count,payments_sum,refunds_count,refunds_sum,cancels_count,cancels_sum,\
reversals_count,reversals_sum,fees,net";

/// The settlements of [`settlements`] as CSV lines (without the heading).
pub fn settlement_csv(listing: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    for s in listing["settlements"].as_array().into_iter().flatten() {
        for c in s["currencies"].as_array().into_iter().flatten() {
            let fields = [
                text(&s["date"]),
                text(&s["merchantNo"]),
                text(&s["storeNo"]),
                text(&s["timezone"]),
                text(&c["currency"]),
                text(&c["payments"]["count"]),
                text(&c["payments"]["sum"]),
                text(&c["refunds"]["count"]),
                text(&c["refunds"]["sum"]),
                text(&c["cancels"]["count"]),
                text(&c["cancels"]["sum"]),
                text(&c["reversals"]["count"]),
                text(&c["reversals"]["sum"]),
                text(&c["fees"]),
                text(&c["net"]),
            ];
            lines.push(
                fields
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    lines
}

/// Reconciles the UTC day `date` with every wallet of `wallets`. `again`: an operator's run,
/// which takes a day already reconciled again (opening no case twice); the schedule's runs do
/// not.
pub async fn reconcile(
    store: &dyn Store,
    wallets: &Wallets,
    date: NaiveDate,
    node: &str,
    now: DateTime<Utc>,
    again: bool,
) -> Value {
    let mut scopes = Vec::new();
    for scope in &wallets.scopes {
        let done = closing::reconcile(store, scope, date, node, now, again).await;
        let outcome = match &done {
            Ok(Some(r)) if r.findings.is_empty() => "clean",
            Ok(Some(_)) => "mismatched",
            Ok(None) => "skipped",
            Err(_) => "failed",
        };
        if outcome != "skipped" {
            metrics::counter!(crate::observe::exporter::RECONCILIATIONS, "outcome" => outcome)
                .increment(1);
        }
        scopes.push(match done {
            Ok(Some(r)) => {
                tracing::info!(day = %date, scope = %scope.name, matched = r.run.matched,
                    mismatched = r.run.mismatched, opened = r.opened, "reconciled");
                json!({
                    "scope": scope.name,
                    "status": outcome,
                    "gatewayLines": r.run.gateway_lines,
                    "walletLines": r.run.wallet_lines,
                    "matched": r.run.matched,
                    "mismatched": r.run.mismatched,
                    "casesOpened": r.opened,
                    "findings": r.findings.iter().map(|f| json!({
                        "finding": f.kind.as_str(),
                        "operation": f.key.class.as_str(),
                        "number": f.key.number,
                        "transactionNo": f.transaction_no,
                    })).collect::<Vec<_>>(),
                })
            }
            Ok(None) => json!({
                "scope": scope.name,
                "status": outcome,
                "reason": "reconciled already, or another node is reconciling it",
            }),
            Err(e) => {
                tracing::warn!(day = %date, scope = %scope.name, error = %e, "reconciliation failed");
                json!({ "scope": scope.name, "status": outcome, "error": e.to_string() })
            }
        });
    }
    json!({
        "date": date.to_string(),
        "reconciliations": scopes,
        "notReconciled": wallets.without_statement,
    })
}

fn side(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// A case as JSON; with `timeline`, the transaction's events too.
pub fn case_json(c: &CaseRecord, timeline: Option<Value>) -> Value {
    let mut v = json!({
        "id": c.id,
        "day": c.case.day.to_string(),
        "scope": c.case.scope,
        "finding": c.case.finding.as_str(),
        "operation": c.case.class.as_str(),
        "number": c.case.number,
        "transactionNo": c.case.transaction_no,
        "merchantNo": c.case.merchant_no,
        "status": c.status.as_str(),
        "openedAt": c.case.opened_at.to_rfc3339(),
        "closedAt": c.closed_at.map(|t| t.to_rfc3339()),
        "note": c.note,
        "gateway": side(&c.case.gateway),
        "wallet": side(&c.case.wallet),
    });
    if let Some(t) = timeline {
        v["timeline"] = t;
    }
    v
}

/// Cases, newest last.
pub async fn case_listing(
    store: &dyn Store,
    status: Option<&str>,
    day: Option<&str>,
    limit: i64,
) -> Result<Value, BooksError> {
    let status = match status {
        None | Some("all") => None,
        Some(s) => Some(
            CaseStatus::parse(s)
                .ok_or_else(|| BooksError::Input("status must be open, closed or all".into()))?,
        ),
    };
    let day = day.map(parse_day).transpose().map_err(BooksError::Input)?;
    let filter = CaseFilter {
        status,
        day,
        limit: limit.clamp(1, 10_000),
    };
    let cases = store.cases(&filter).await?;
    Ok(json!({ "cases": cases.iter().map(|c| case_json(c, None)).collect::<Vec<_>>() }))
}

/// One case with both sides and its transaction's timeline.
pub async fn case_detail(store: &dyn Store, id: i64) -> Result<Value, BooksError> {
    let c = store
        .case(id)
        .await?
        .ok_or_else(|| BooksError::NotFound(format!("there is no case {id}")))?;
    let timeline = match store
        .payment_by_transaction_no(&c.case.transaction_no)
        .await?
    {
        Some(p) => {
            let events = store.events_of(p.id).await?;
            json!({
                "state": p.payment.state().as_str(),
                "events": events.iter().map(|e| json!({
                    "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "kind": e.kind,
                    "detail": e.detail,
                })).collect::<Vec<_>>(),
            })
        }
        None => Value::Null,
    };
    Ok(case_json(&c, Some(timeline)))
}

/// Closes an open case with the operator's note.
pub async fn close_case(
    store: &dyn Store,
    id: i64,
    note: &str,
    now: DateTime<Utc>,
) -> Result<Value, BooksError> {
    if note.trim().is_empty() {
        return Err(BooksError::Input(
            "say why the case is closed (a note)".into(),
        ));
    }
    if store.case(id).await?.is_none() {
        return Err(BooksError::NotFound(format!("there is no case {id}")));
    }
    if !store.close_case(id, note, now).await? {
        return Err(BooksError::Input(format!("case {id} is closed already")));
    }
    case_detail(store, id).await
}

/// What the books routes share.
#[derive(Clone)]
struct Books {
    app: Arc<Lifecycle>,
    wallets: Arc<Wallets>,
    node: String,
}

/// The books' admin routes, behind the admin token (none in production without one).
pub fn routes(app: Arc<Lifecycle>, config: &Config, node: String) -> Router {
    if config.mode == Mode::Production && config.admin_token.is_none() {
        return Router::new();
    }
    let token = config.admin_token.clone();
    let wallets = wallets(config).unwrap_or_else(|e| Wallets {
        scopes: Vec::new(),
        without_statement: vec![e.to_string()],
    });
    let state = Books {
        app,
        wallets: Arc::new(wallets),
        node,
    };
    Router::new()
        .route("/admin/v1/settlement", get(settlement_route))
        .route(
            "/admin/v1/reconciliations",
            get(runs_route).post(reconcile_route),
        )
        .route("/admin/v1/cases", get(cases_route))
        .route("/admin/v1/cases/{id}", get(case_route))
        .route("/admin/v1/cases/{id}/close", post(close_route))
        .with_state(state)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { crate::admin::authorize(token.as_ref(), req, next).await }
        }))
}

fn answer(result: Result<Value, BooksError>) -> Response {
    let error =
        |status, message: String| (status, Json(json!({ "error": message }))).into_response();
    match result {
        Ok(v) => Json(v).into_response(),
        Err(BooksError::Input(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(BooksError::NotFound(m)) => error(StatusCode::NOT_FOUND, m),
        Err(BooksError::Store(e)) => {
            tracing::warn!(error = %e, "books request failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "system error; retry later".into(),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettlementQuery {
    date: Option<String>,
    merchant_no: Option<String>,
    store_no: Option<String>,
}

async fn settlement_route(State(b): State<Books>, Query(q): Query<SettlementQuery>) -> Response {
    let Some(date) = q.date else {
        return answer(Err(BooksError::Input("date=YYYY-MM-DD is required".into())));
    };
    answer(
        settlements(
            b.app.store().as_ref(),
            &date,
            q.merchant_no.as_deref(),
            q.store_no.as_deref(),
        )
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct DateQuery {
    date: Option<String>,
}

async fn reconcile_route(State(b): State<Books>, Query(q): Query<DateQuery>) -> Response {
    let date = match q.date.as_deref().map(parse_day) {
        Some(Ok(d)) => d,
        Some(Err(m)) => return answer(Err(BooksError::Input(m))),
        None => return answer(Err(BooksError::Input("date=YYYY-MM-DD is required".into()))),
    };
    if b.wallets.scopes.is_empty() {
        return answer(Err(BooksError::Input(
            b.wallets.without_statement.join("; "),
        )));
    }
    let store = b.app.store().clone();
    Json(reconcile(store.as_ref(), &b.wallets, date, &b.node, b.app.now(), true).await)
        .into_response()
}

/// Each wallet's reconciliation of a day, as recorded: who ran it, when, and what it found.
pub async fn runs(store: &dyn Store, wallets: &Wallets, date: &str) -> Result<Value, BooksError> {
    let date = parse_day(date).map_err(BooksError::Input)?;
    let mut out = Vec::new();
    for scope in &wallets.scopes {
        let run = store.reconciliation(date, &scope.name).await?;
        out.push(match run {
            Some(r) => json!({
                "scope": r.scope,
                "status": r.status,
                "node": r.node,
                "claimedAt": r.claimed_at.to_rfc3339(),
                "finishedAt": r.finished_at.map(|t| t.to_rfc3339()),
                "gatewayLines": r.gateway_lines,
                "walletLines": r.wallet_lines,
                "matched": r.matched,
                "mismatched": r.mismatched,
                "error": r.error,
            }),
            None => json!({ "scope": scope.name, "status": "not_run" }),
        });
    }
    Ok(json!({ "date": date.to_string(), "reconciliations": out }))
}

async fn runs_route(State(b): State<Books>, Query(q): Query<DateQuery>) -> Response {
    let Some(date) = q.date else {
        return answer(Err(BooksError::Input("date=YYYY-MM-DD is required".into())));
    };
    answer(runs(b.app.store().as_ref(), &b.wallets, &date).await)
}

#[derive(Debug, Deserialize)]
struct CasesQuery {
    status: Option<String>,
    date: Option<String>,
    limit: Option<i64>,
}

async fn cases_route(State(b): State<Books>, Query(q): Query<CasesQuery>) -> Response {
    answer(
        case_listing(
            b.app.store().as_ref(),
            q.status.as_deref(),
            q.date.as_deref(),
            q.limit.unwrap_or(1000),
        )
        .await,
    )
}

async fn case_route(State(b): State<Books>, Path(id): Path<i64>) -> Response {
    answer(case_detail(b.app.store().as_ref(), id).await)
}

#[derive(Debug, Deserialize)]
struct CloseBody {
    note: String,
}

async fn close_route(
    State(b): State<Books>,
    Path(id): Path<i64>,
    body: Result<Json<CloseBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return answer(Err(BooksError::Input(
            "the body must be {\"note\": \"why it is closed\"}".into(),
        )));
    };
    answer(close_case(b.app.store().as_ref(), id, &body.note, b.app.now()).await)
}

/// The daily reconciliation inside `serve`: from `at` (UTC) each day, every node tries to
/// reconcile the previous UTC day with every wallet; the claim in the database gives each
/// day's run of a wallet to one node. A run that failed is tried again ten minutes later.
pub async fn schedule(
    store: Arc<dyn Store>,
    wallets: Wallets,
    at: NaiveTime,
    clock: Arc<dyn Clock>,
    node: String,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    if wallets.scopes.is_empty() {
        for why in &wallets.without_statement {
            tracing::warn!("the daily reconciliation has nothing to do: {why}");
        }
        return;
    }
    let mut done: Option<NaiveDate> = None;
    let mut retry_after: Option<DateTime<Utc>> = None;
    loop {
        let now = clock.now();
        let day = now.date_naive().pred_opt();
        let due = now.time() >= at && day.is_some() && done != day;
        if due && retry_after.is_none_or(|t| now >= t) {
            if let Some(day) = day {
                let result = reconcile(store.as_ref(), &wallets, day, &node, now, false).await;
                let failed = result["reconciliations"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|s| s["status"] == "failed"));
                if failed {
                    retry_after = Some(now + chrono::Duration::minutes(10));
                } else {
                    done = Some(day);
                    retry_after = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
    }
}
