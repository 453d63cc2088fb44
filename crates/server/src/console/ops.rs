//! The operator's lists across merchants: notifications (failed ones sent again, one or all
//! failed since a time) and operations the wallet has not answered. Merchant roles see these
//! on each transaction's page instead.

use super::*;
use tillgate_core::{NotificationFilter, OutboxStatus, Resend};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NotificationQuery {
    status: Option<String>,
    done: Option<String>,
}

fn operator_only(s: &SignedIn) -> Option<Response> {
    (!matches!(s.user.role, Role::Operator | Role::Auditor)).then(|| {
        failure(
            StatusCode::NOT_FOUND,
            Some(s),
            "This list is for operators; each transaction's page shows its own.",
        )
    })
}

pub async fn notifications(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<NotificationQuery>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = operator_only(&s) {
        return r;
    }
    let status = match q.status.as_deref().filter(|v| !v.is_empty()) {
        None => Some(OutboxStatus::Failed),
        Some("any") => None,
        Some(v) => match OutboxStatus::parse(v) {
            Some(st) => Some(st),
            None => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    Some(&s),
                    "status is pending, delivered, failed or any",
                )
            }
        },
    };
    let store = c.app.store().as_ref();
    let listed = async {
        let notes = store
            .notifications(&NotificationFilter {
                status,
                since: None,
                payment_id: None,
                limit: 200,
            })
            .await?;
        let mut rows = Vec::new();
        for n in notes {
            let payment = store.payment_by_id(n.payment_id).await?;
            let last = store.attempts_of(n.id).await?.pop();
            rows.push((n, payment, last));
        }
        Ok::<_, tillgate_core::StoreError>(rows)
    }
    .await;
    let rows = match listed {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let acts = s.user.role == Role::Operator;
    let shown = status.map_or("any", |s| s.as_str());
    let since_default = (c.app.clock().now() - chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = html! {
        h1 { "Notifications (" (shown) ")" }
        @if q.done.as_deref() == Some("resent") { p.done data-test="notice" { "Sent again: they go out now." } }
        form.filters method="get" action="/console/notifications" {
            label { "Status" select name="status" {
                @for v in ["failed", "pending", "delivered", "any"] { option value=(v) selected[v == shown] { (v) } }
            } }
            button.primary type="submit" { "Show" }
        }
        @if acts {
            form.filters method="post" action="/console/notifications/resend" {
                input type="hidden" name="csrf" value=(s.session.csrf);
                label { "Send again every failed notification since (UTC)" input name="since" value=(since_default) size="22"; }
                button.primary type="submit" data-test="resend-failed" { "Send again" }
            }
        }
        table data-test="notifications" {
            thead { tr { th { "#" } th { "Transaction" } th { "Merchant" } th { "Topic" } th { "To" } th { "Status" } th { "Attempts" } th { "Last answer" } } }
            tbody {
                @for (n, p, last) in &rows { tr {
                    td { (n.id) }
                    td { @if let Some(p) = p { a href={ "/console/transactions/" (p.transaction_no) } { (p.transaction_no) } } }
                    td { @if let Some(p) = p { (p.merchant_no) } }
                    td { (format!("{:?}", n.topic)) }
                    td.wrap { (n.target_url) }
                    td { (n.status.as_str()) }
                    td.num { (n.attempts) }
                    td.wrap { @if let Some(a) = last {
                        (a.http_status.map(|h| h.to_string()).unwrap_or_default()) " "
                        (a.error.as_deref().unwrap_or(&a.response_head))
                    } }
                } }
                @if rows.is_empty() { tr { td colspan="8" .muted { "None." } } }
            }
        }
    };
    respond(StatusCode::OK, layout("Notifications", Some(&s), body))
}

#[derive(Deserialize)]
pub struct ResendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    since: String,
}

pub async fn resend_failed(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ResendForm>,
) -> Response {
    let s = match posted(&c, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.user.role != Role::Operator {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Your role may not do this.",
        );
    }
    let Some(since) = crate::admin::parse_time(form.since.trim()) else {
        return failure(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "since must be an RFC 3339 time or a date",
        );
    };
    match c
        .app
        .store()
        .resend(Resend::FailedSince(since), c.app.now())
        .await
    {
        Ok(n) => {
            c.app.outbox_wake().notify_one();
            audited(
                &c,
                &s,
                "notifications resent",
                None,
                format!("{n} failed since {}", since.to_rfc3339()),
            )
            .await;
            go("/console/notifications?status=pending&done=resent")
        }
        Err(e) => unavailable(e),
    }
}

pub async fn unresolved(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = operator_only(&s) {
        return r;
    }
    let ops = match c.app.store().unresolved(c.app.now(), 500).await {
        Ok(o) => o,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "Money in flight: operations the wallet has not answered" }
        p.muted { "The janitor asks the wallet about each of them; the oldest first." }
        table data-test="unresolved" {
            thead { tr { th { "Since (" (c.zone.name()) ")" } th { "Kind" } th { "Transaction" } th { "Merchant" } th { "Operation" } } }
            tbody {
                @for op in &ops {
                    @let (kind, number) = match &op.kind {
                        tillgate_core::UnresolvedKind::Payment => ("payment", String::new()),
                        tillgate_core::UnresolvedKind::Refund { refund_no } => ("refund", refund_no.clone()),
                        tillgate_core::UnresolvedKind::Cancel { cancel_no } => ("cancel", cancel_no.clone()),
                    };
                    tr {
                        td { (at(op.since, c.zone)) }
                        td { (kind) }
                        td { a href={ "/console/transactions/" (op.transaction_no) } { (op.transaction_no) } }
                        td { (op.merchant_no) }
                        td { (number) }
                    }
                }
                @if ops.is_empty() { tr { td colspan="5" .muted { "Nothing is in flight." } } }
            }
        }
    };
    respond(StatusCode::OK, layout("Unresolved", Some(&s), body))
}

/// The POS terminals: which are connected (and to which node), and the commands they have not
/// finished. A merchant's roles see their merchant's terminals.
pub async fn terminals(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match c.app.store().terminal_listing(scope(&s.user)).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "Terminals" }
        table data-test="terminals" {
            thead { tr { th { "Terminal" } th { "Merchant" } th { "Connection" } th { "Last heard (" (c.zone.name()) ")" } th { "Open commands" } } }
            tbody {
                @for t in &rows { tr {
                    td { (t.tid) }
                    td { (t.merchant_no) }
                    td { @match &t.online_node {
                        Some(node) => {
                            span.state.paid data-test={ "online-" (t.tid) } { "online" }
                            span.muted { " · node " (node) }
                        }
                        None => { span.state.failed data-test={ "offline-" (t.tid) } { "offline" } }
                    } }
                    td { (t.last_seen_at.map(|t| at(t, c.zone)).unwrap_or_default()) }
                    td.num { (t.open_commands) }
                } }
                @if rows.is_empty() { tr { td colspan="5" .muted { "No terminal." } } }
            }
        }
    };
    respond(StatusCode::OK, layout("Terminals", Some(&s), body))
}
