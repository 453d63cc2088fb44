//! What people do from a transaction's page: refund part of it, cancel or reverse it, send a
//! notification again, and in the sandbox play the wallet's answer.
//!
//! Every action goes through the lifecycle the merchant APIs use, with the same rules (the
//! refundable amount, the business day of a reversal). Each rendered refund form carries a key
//! of its own, which becomes the refund's reference (`console-…`): a double click or a form
//! posted again replays the first refund instead of making a second. A cancel asked twice
//! answers with the first. Each action, done or refused, is written to the audit log with the
//! transaction's number.

use super::*;
use rand::RngCore;
use tillgate_core::console::{ApprovalState, Decision, NewApproval, RefundAuthority};
use tillgate_core::service::{NotifyTo, RefundRequest};
use tillgate_core::{LifecycleError, MerchantRecord, PaymentKey, Rejection, Resend};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, ChannelOutcome, Key, Money, PaymentState, RefundRejected,
};

/// What the signed-in user may do on a transaction's page.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    pub refund: bool,
    pub cancel: bool,
    pub resend: bool,
    pub settle: bool,
}

impl Allowed {
    pub fn of(user: &UserRecord, _merchant: Option<&MerchantRecord>, sandbox: bool) -> Allowed {
        let acts = user.role != Role::Auditor;
        Allowed {
            refund: acts,
            cancel: acts,
            resend: acts,
            settle: acts && sandbox,
        }
    }
}

fn form_key() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The fixed texts an action's redirect may show (`?done=`).
pub fn done_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "refund" => "Refund done.",
        "refund-pending" => "Refund sent to the wallet; its answer is not in yet.",
        "refund-failed" => "The wallet declined the refund; nothing was refunded.",
        "cancel" => "Cancelled.",
        "cancel-pending" => "Cancel sent; the wallet's answer is not in yet.",
        "resend" => "The notification will be sent again now.",
        "settled" => "The wallet's answer was played.",
        "refund-requested" => "Refund requested: it waits for a second person's approval.",
        "approved" => "Approved and carried out.",
        "rejected" => "Rejected: nothing was refunded.",
        _ => return None,
    })
}

/// The action forms of a transaction's page.
pub fn forms(p: &PaymentRecord, csrf: &str, can: Allowed) -> Markup {
    let state = p.payment.state();
    let refundable = p.payment.refundable();
    let here = format!("/console/transactions/{}", p.transaction_no);
    let cancellable = matches!(
        state,
        PaymentState::Created | PaymentState::Pending | PaymentState::Paid
    );
    html! {
        @if can.refund && !refundable.is_zero() && matches!(state, PaymentState::Paid | PaymentState::PartiallyRefunded) {
            h2 { "Refund" }
            form.filters method="post" action={ (here) "/refund" } data-test="refund-form" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="key" value=(form_key());
                label { "Amount (" (refundable.currency().code()) ", at most " (refundable.to_decimal_string()) ")"
                    input name="amount" required inputmode="decimal" data-test="refund-amount"; }
                label { "Reason" input name="reason" maxlength="200"; }
                button.primary type="submit" data-test="refund" { "Refund" }
            }
        }
        @if can.cancel && cancellable {
            h2 { "Cancel" }
            form method="post" action={ (here) "/cancel" } {
                input type="hidden" name="csrf" value=(csrf);
                p.muted { @if state == PaymentState::Paid {
                    "Reverses the whole payment: only on the day it was paid, and only while nothing was refunded."
                } @else { "Abandons the unpaid payment." } }
                button.primary type="submit" data-test="cancel" { @if state == PaymentState::Paid { "Reverse in full" } @else { "Cancel" } }
            }
        }
        @if can.settle && state == PaymentState::Pending {
            h2 { "Sandbox" }
            div.filters {
                @for (outcome, label) in [("paid", "The customer paid"), ("declined", "The wallet declined")] {
                    form method="post" action={ (here) "/settle" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="outcome" value=(outcome);
                        button.primary type="submit" data-test={ "settle-" (outcome) } { (label) }
                    }
                }
            }
        }
    }
}

pub fn resend_form(transaction_no: &str, id: i64, csrf: &str) -> Markup {
    html! {
        form method="post" action={ "/console/transactions/" (transaction_no) "/notifications/" (id) "/resend" } {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" data-test={ "resend-" (id) } { "Send again" }
        }
    }
}

/// The user, the transaction and its merchant for an action, once the form is proven to be the
/// session's own; or the answer refusing it.
async fn begin(
    c: &Console,
    headers: &HeaderMap,
    transaction_no: &str,
    csrf: &str,
    allowed: fn(Allowed) -> bool,
) -> Result<(SignedIn, PaymentRecord, MerchantRecord), Response> {
    let s = posted(c, headers, csrf).await?;
    let store = c.app.store().as_ref();
    let p = match store.payment_by_transaction_no(transaction_no).await {
        Ok(Some(p)) if s.user.sees(p.merchant_id, &p.store_no) => p,
        Ok(_) => {
            return Err(failure(
                StatusCode::NOT_FOUND,
                Some(&s),
                "No such transaction.",
            ))
        }
        Err(e) => return Err(unavailable(e)),
    };
    let merchant = match store.merchant_by_id(p.merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(failure(
                StatusCode::NOT_FOUND,
                Some(&s),
                "No such transaction.",
            ))
        }
        Err(e) => return Err(unavailable(e)),
    };
    if !allowed(Allowed::of(&s.user, Some(&merchant), c.sandbox)) {
        return Err(failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Your role may not do this.",
        ));
    }
    Ok((s, p, merchant))
}

fn back(transaction_no: &str, done: &str) -> Response {
    go(&format!(
        "/console/transactions/{transaction_no}?done={done}"
    ))
}

/// Why the lifecycle refused, in words for the page.
fn refusal(e: &LifecycleError) -> String {
    match e {
        LifecycleError::Rejected(Rejection::Refund(r)) => match r {
            RefundRejected::ExceedsRefundable { refundable } => format!(
                "Refused: more than is refundable ({} {}).",
                refundable.to_decimal_string(),
                refundable.currency().code()
            ),
            RefundRejected::NotPaid { state } => {
                format!("Refused: the payment is {}, not paid.", state.as_str())
            }
            RefundRejected::FullyRefunded => "Refused: already refunded in full.".into(),
            RefundRejected::Cancelled => "Refused: the payment was cancelled.".into(),
            RefundRejected::CancelInProgress => "Refused: a cancel is in progress.".into(),
            RefundRejected::CurrencyMismatch => "Refused: another currency.".into(),
        },
        LifecycleError::Rejected(Rejection::Cancel(r)) => format!("Refused: {r:?}."),
        LifecycleError::Rejected(r) => format!("Refused: {r:?}."),
        LifecycleError::KeyReused => {
            "Refused: this form was already used for another amount; reload the page.".into()
        }
        LifecycleError::InProgress => {
            "The same request is still in progress; reload the page in a moment.".into()
        }
        other => format!("Not done: {other}."),
    }
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

pub async fn refund(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(transaction_no): Path<String>,
    Form(form): Form<RefundForm>,
) -> Response {
    let (s, p, merchant) =
        match begin(&c, &headers, &transaction_no, &form.csrf, |a| a.refund).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let currency = p.payment.amount().currency();
    let amount = match Money::parse_positive(form.amount.trim(), currency) {
        Ok(a) => a,
        Err(_) => {
            let msg = format!(
                "The amount must be a positive amount of {} such as 1.00.",
                currency.code()
            );
            return show_transaction(
                &c,
                &s,
                &transaction_no,
                StatusCode::BAD_REQUEST,
                Some((true, msg)),
            )
            .await;
        }
    };
    let Ok(reference) = Key::parse(&format!("console-{}", form.key)) else {
        return show_transaction(
            &c,
            &s,
            &transaction_no,
            StatusCode::BAD_REQUEST,
            Some((true, "The form is damaged; reload the page.".into())),
        )
        .await;
    };
    if form.key.len() != 32 || form.reason.chars().count() > 200 {
        return show_transaction(
            &c,
            &s,
            &transaction_no,
            StatusCode::BAD_REQUEST,
            Some((true, "The form is damaged; reload the page.".into())),
        )
        .await;
    }
    let detail = format!(
        "{} {} ({}){}",
        amount.to_decimal_string(),
        currency.code(),
        reference.as_str(),
        if form.reason.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", form.reason.trim())
        }
    );
    if merchant.refund_authority == RefundAuthority::Disabled && s.user.role == Role::MerchantStaff
    {
        audited(
            &c,
            &s,
            "refund refused",
            Some(&p.transaction_no),
            format!("{detail}: refunds by the merchant's staff are disabled"),
        )
        .await;
        return show_transaction(
            &c,
            &s,
            &transaction_no,
            StatusCode::FORBIDDEN,
            Some((
                true,
                "Refunds by this merchant's staff are disabled: ask its admin.".into(),
            )),
        )
        .await;
    }
    if merchant
        .refund_authority
        .needs_approval(merchant.approval_threshold_minor, amount.minor())
    {
        let asked_at = c.app.clock().now();
        let asked = c
            .app
            .store()
            .insert_approval(NewApproval {
                payment_id: p.id,
                merchant_id: p.merchant_id,
                transaction_no: p.transaction_no.clone(),
                amount_minor: amount.minor(),
                currency: currency.code().to_owned(),
                reason: form.reason.trim().to_owned(),
                form_key: form.key.clone(),
                requested_by: s.user.id,
                requested_login: s.user.login.clone(),
                requested_at: asked_at,
            })
            .await;
        return match asked {
            Ok(a) if a.requested_by == s.user.id && a.amount_minor == amount.minor() => {
                // Posted again, the form finds its first request: said once in the log.
                if a.requested_at.timestamp_millis() == asked_at.timestamp_millis() {
                    audited(
                        &c,
                        &s,
                        "refund requested",
                        Some(&p.transaction_no),
                        format!("{detail} (approval #{})", a.id),
                    )
                    .await;
                }
                back(&p.transaction_no, "refund-requested")
            }
            Ok(_) => {
                show_transaction(
                    &c,
                    &s,
                    &transaction_no,
                    StatusCode::CONFLICT,
                    Some((
                        true,
                        "This form was already used for another request; reload the page.".into(),
                    )),
                )
                .await
            }
            Err(e) => unavailable(e),
        };
    }
    let done = carry_out(&c, &merchant, &p, amount, reference).await;
    match done {
        Ok(out) => {
            let (_, r) = &out.value;
            let code = match r.state {
                tillgate_domain::RefundState::Succeeded => "refund",
                tillgate_domain::RefundState::Failed => "refund-failed",
                _ => "refund-pending",
            };
            if !out.replayed {
                audited(
                    &c,
                    &s,
                    "refund",
                    Some(&p.transaction_no),
                    format!("{detail} → {}", r.refund_no),
                )
                .await;
            }
            back(&p.transaction_no, code)
        }
        Err(e @ LifecycleError::Store(_)) => unavailable(e),
        Err(e) => {
            audited(
                &c,
                &s,
                "refund refused",
                Some(&p.transaction_no),
                format!("{detail}: {e}"),
            )
            .await;
            show_transaction(
                &c,
                &s,
                &transaction_no,
                StatusCode::CONFLICT,
                Some((true, refusal(&e))),
            )
            .await
        }
    }
}

/// Makes a refund through the lifecycle, with the form's reference.
async fn carry_out(
    c: &Console,
    merchant: &MerchantRecord,
    p: &PaymentRecord,
    amount: Money,
    reference: Key,
) -> Result<
    tillgate_core::service::Outcome<(PaymentRecord, tillgate_core::RefundRecord)>,
    LifecycleError,
> {
    c.app
        .refund_at_once(
            merchant,
            &PaymentKey::TransactionNo(p.transaction_no.clone()),
            RefundRequest {
                amount,
                settle_currency: None,
                refund_reference: Some(reference),
                notify: NotifyTo::PaymentUrl,
                extra: None,
            },
        )
        .await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// The business day a dialect's merchants cancel by: the calendar day in the merchant's zone,
/// or YabandPay's day in CET until 00:30 the next.
fn cancel_rule(p: &PaymentRecord, merchant: &MerchantRecord) -> BusinessDayRule {
    match p.dialect {
        tillgate_core::Dialect::YabandPay => {
            let cet = MerchantZone::parse("Europe/Amsterdam").unwrap_or_else(MerchantZone::utc);
            BusinessDayRule::with_grace(cet, chrono::Duration::minutes(30))
        }
        _ => BusinessDayRule::calendar_day(merchant.zone),
    }
}

pub async fn cancel(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(transaction_no): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let (s, p, merchant) =
        match begin(&c, &headers, &transaction_no, &form.csrf, |a| a.cancel).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let done = c
        .app
        .cancel(
            &merchant,
            &PaymentKey::TransactionNo(p.transaction_no.clone()),
            cancel_rule(&p, &merchant),
            CancelIntent::Cancel,
            tillgate_core::service::CancelOptions::default(),
        )
        .await;
    match done {
        Ok(out) => {
            let (_, x) = &out.value;
            if !out.replayed {
                audited(
                    &c,
                    &s,
                    "cancel",
                    Some(&p.transaction_no),
                    format!("{} {}", x.kind.as_str(), x.cancel_no),
                )
                .await;
            }
            let code = if x.state == tillgate_domain::CancelState::Succeeded {
                "cancel"
            } else {
                "cancel-pending"
            };
            back(&p.transaction_no, code)
        }
        Err(e @ LifecycleError::Store(_)) => unavailable(e),
        Err(e) => {
            audited(
                &c,
                &s,
                "cancel refused",
                Some(&p.transaction_no),
                e.to_string(),
            )
            .await;
            show_transaction(
                &c,
                &s,
                &transaction_no,
                StatusCode::CONFLICT,
                Some((true, refusal(&e))),
            )
            .await
        }
    }
}

pub async fn resend(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((transaction_no, id)): Path<(String, i64)>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let (s, p, _) = match begin(&c, &headers, &transaction_no, &form.csrf, |a| a.resend).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    // Only a notification of this transaction: an id of another merchant's is not found.
    match store.notification(id).await {
        Ok(Some(n)) if n.payment_id == p.id => {}
        Ok(_) => return failure(StatusCode::NOT_FOUND, Some(&s), "No such notification."),
        Err(e) => return unavailable(e),
    }
    match store.resend(Resend::One(id), c.app.now()).await {
        Ok(_) => {
            c.app.outbox_wake().notify_one();
            audited(
                &c,
                &s,
                "notification resent",
                Some(&p.transaction_no),
                format!("#{id}"),
            )
            .await;
            back(&p.transaction_no, "resend")
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub struct SettleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    outcome: String,
}

pub async fn settle(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(transaction_no): Path<String>,
    Form(form): Form<SettleForm>,
) -> Response {
    let (s, p, _) = match begin(&c, &headers, &transaction_no, &form.csrf, |a| a.settle).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let outcome = match form.outcome.as_str() {
        "paid" => ChannelOutcome::Approved,
        "declined" => ChannelOutcome::Declined,
        _ => {
            return failure(
                StatusCode::BAD_REQUEST,
                Some(&s),
                "outcome must be paid or declined",
            )
        }
    };
    match c
        .app
        .wallet_settles_payment(&p.transaction_no, outcome)
        .await
    {
        Ok(_) => {
            audited(
                &c,
                &s,
                "sandbox settle",
                Some(&p.transaction_no),
                form.outcome.clone(),
            )
            .await;
            back(&p.transaction_no, "settled")
        }
        Err(e @ LifecycleError::Store(_)) => unavailable(e),
        Err(e) => {
            show_transaction(
                &c,
                &s,
                &transaction_no,
                StatusCode::CONFLICT,
                Some((true, refusal(&e))),
            )
            .await
        }
    }
}

/// The approvals page: refunds waiting for a second person (of the user's merchant, or all),
/// then the latest decided.
pub async fn approvals(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(said): Query<Said>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    let listed = async {
        let pending = store.approvals(scope(&s.user), true, 200).await?;
        let all = store.approvals(scope(&s.user), false, 50).await?;
        Ok::<_, tillgate_core::StoreError>((pending, all))
    }
    .await;
    let (mut pending, mut all) = match listed {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    // A user confined to some stores sees the approvals of those stores' payments only.
    if !s.user.stores.is_empty() {
        let mut visible = std::collections::HashSet::new();
        for a in pending.iter().chain(all.iter()) {
            match store.payment_by_id(a.payment_id).await {
                Ok(Some(p)) if s.user.sees(p.merchant_id, &p.store_no) => {
                    visible.insert(a.id);
                }
                Ok(_) => {}
                Err(e) => return unavailable(e),
            }
        }
        pending.retain(|a| visible.contains(&a.id));
        all.retain(|a| visible.contains(&a.id));
    }
    let decided: Vec<_> = all
        .iter()
        .filter(|a| a.state != ApprovalState::Pending)
        .collect();
    let notice = said.done.as_deref().and_then(done_message);
    let body = html! {
        h1 { "Refunds waiting for approval" }
        @if let Some(n) = notice { p.done data-test="notice" { (n) } }
        @if let Some(e) = said.error.as_deref().and_then(error_message) { p.error data-test="notice" { (e) } }
        @if pending.is_empty() { p.muted data-test="none-pending" { "Nothing waits." } } @else {
            table data-test="pending" {
                thead { tr { th { "#" } th { "Transaction" } th { "Amount" } th { "Reason" } th { "Asked by" } th { "At" } th { "Decide" } } }
                tbody { @for a in &pending { tr {
                    td { (a.id) }
                    td { a href={ "/console/transactions/" (a.transaction_no) } { (a.transaction_no) } }
                    td.num { (minor_text(a.amount_minor, &a.currency)) " " (a.currency) }
                    td.wrap { (a.reason) }
                    td { (a.requested_login) }
                    td { (at(a.requested_at, c.zone)) }
                    td {
                        @if may_decide(&s.user, a) {
                            div.filters {
                                form method="post" action={ "/console/approvals/" (a.id) "/approve" } {
                                    input type="hidden" name="csrf" value=(s.session.csrf);
                                    button.primary type="submit" data-test={ "approve-" (a.id) } { "Approve" }
                                }
                                form method="post" action={ "/console/approvals/" (a.id) "/reject" } {
                                    input type="hidden" name="csrf" value=(s.session.csrf);
                                    input name="reason" placeholder="why not" required maxlength="200" data-test={ "reason-" (a.id) };
                                    button type="submit" data-test={ "reject-" (a.id) } { "Reject" }
                                }
                            }
                        } @else if a.requested_by == s.user.id {
                            span.muted { "yours: another person decides" }
                        } @else {
                            span.muted { "an operator or the merchant's admin decides" }
                        }
                    }
                } } }
            }
        }
        h2 { "Decided" }
        @if decided.is_empty() { p.muted { "None yet." } } @else {
            table data-test="decided" {
                thead { tr { th { "#" } th { "Transaction" } th { "Amount" } th { "Asked by" } th { "Decision" } th { "By" } th { "Why" } th { "Outcome" } } }
                tbody { @for a in &decided { tr {
                    td { (a.id) }
                    td { a href={ "/console/transactions/" (a.transaction_no) } { (a.transaction_no) } }
                    td.num { (minor_text(a.amount_minor, &a.currency)) " " (a.currency) }
                    td { (a.requested_login) }
                    td { (a.state.as_str()) }
                    td { (a.decided_login.as_deref().unwrap_or("")) }
                    td.wrap { (a.decision_reason.as_deref().unwrap_or("")) }
                    td.wrap {
                        (a.outcome.as_deref().unwrap_or("not carried out yet"))
                        // A rejected held refund not failed yet (interrupted): finish it.
                        @if a.state == ApprovalState::Rejected && a.refund_id.is_some() && a.outcome.is_none() && may_decide(&s.user, a) {
                            form method="post" action={ "/console/approvals/" (a.id) "/reject" } {
                                input type="hidden" name="csrf" value=(s.session.csrf);
                                input type="hidden" name="reason" value=(a.decision_reason.as_deref().unwrap_or("rejected"));
                                button type="submit" { "Fail the held refund" }
                            }
                        }
                    }
                } } }
            }
        }
    };
    respond(StatusCode::OK, layout("Approvals", Some(&s), body))
}

/// An amount in minor units as decimal text in its currency.
pub fn minor_text(minor: i64, currency: &str) -> String {
    tillgate_domain::Currency::from_code(currency)
        .and_then(|c| Money::from_minor(minor, c))
        .map_or_else(|| minor.to_string(), |m| m.to_decimal_string())
}

/// Who decides an approval: an operator, or the merchant's admin; never the one who asked.
fn may_decide(user: &UserRecord, a: &tillgate_core::console::ApprovalRecord) -> bool {
    let role = match user.role {
        Role::Operator => true,
        Role::MerchantAdmin => user.merchant_id == Some(a.merchant_id),
        Role::MerchantStaff | Role::Auditor => false,
    };
    role && user.id != a.requested_by
}

/// The fixed texts of an approval refused (`?error=`).
pub fn error_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "decided" => "It was already decided.",
        "not-yours" => {
            "You may not decide this one: another person must (never the one who asked)."
        }
        "refused" => "Approved, but the refund was refused by the payment rules: see its outcome.",
        "reason" => "Say why it is rejected.",
        _ => return None,
    })
}

/// The audit line of a decision on an approval.
fn decision_line(a: &tillgate_core::console::ApprovalRecord, why: &str) -> String {
    format!(
        "approval #{} of {} {} asked by {}: {why}",
        a.id,
        minor_text(a.amount_minor, &a.currency),
        a.currency,
        a.requested_login
    )
}

#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn begin_decision(
    c: &Console,
    headers: &HeaderMap,
    id: i64,
    csrf: &str,
) -> Result<(SignedIn, tillgate_core::console::ApprovalRecord), Response> {
    let s = posted(c, headers, csrf).await?;
    let a = match c.app.store().approval(id).await {
        Ok(Some(a)) if scope(&s.user).is_none_or(|m| m == a.merchant_id) => a,
        Ok(_) => {
            return Err(failure(
                StatusCode::NOT_FOUND,
                Some(&s),
                "No such approval.",
            ))
        }
        Err(e) => return Err(unavailable(e)),
    };
    if !may_decide(&s.user, &a) {
        return Err(go("/console/approvals?error=not-yours"));
    }
    Ok((s, a))
}

pub async fn approve(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<DecideForm>,
) -> Response {
    let (s, a) = match begin_decision(&c, &headers, id, &form.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = c.app.store().as_ref();
    let claimed = store
        .decide_approval(Decision {
            id,
            state: ApprovalState::Approved,
            by: s.user.id,
            login: s.user.login.clone(),
            at: c.app.clock().now(),
            reason: form.reason.trim().chars().take(200).collect(),
        })
        .await;
    match claimed {
        Ok(true) => {}
        // Approved earlier but not carried out (a crash between the two): carry it out now;
        // its reference makes a second run replay the first. Not a held API refund: once
        // approved it may already be with the wallet, and it is the janitor's to ask about.
        Ok(false)
            if a.state == ApprovalState::Approved
                && a.outcome.is_none()
                && a.refund_id.is_none() => {}
        Ok(false) => return go("/console/approvals?error=decided"),
        Err(e) => return unavailable(e),
    }
    if let Some(refund_id) = a.refund_id {
        let done = c.app.approve_held_refund(a.payment_id, refund_id).await;
        return decided_held(&c, &s, &a, "refund approved", done, "approved").await;
    }
    let loaded = async {
        let p = store.payment_by_id(a.payment_id).await?;
        let m = store.merchant_by_id(a.merchant_id).await?;
        Ok::<_, tillgate_core::StoreError>(p.zip(m))
    }
    .await;
    let (p, merchant) = match loaded {
        Ok(Some(v)) => v,
        Ok(None) => return failure(StatusCode::NOT_FOUND, Some(&s), "The transaction is gone."),
        Err(e) => return unavailable(e),
    };
    let currency = p.payment.amount().currency();
    let (Some(amount), Ok(reference)) = (
        Money::from_minor(a.amount_minor, currency),
        Key::parse(&format!("console-{}", a.form_key)),
    ) else {
        return failure(
            StatusCode::CONFLICT,
            Some(&s),
            "The approval does not match its transaction.",
        );
    };
    let outcome = match carry_out(&c, &merchant, &p, amount, reference).await {
        Ok(out) => {
            let (_, r) = &out.value;
            Ok(format!("refund {} {:?}", r.refund_no, r.state))
        }
        Err(e @ LifecycleError::Store(_)) => return unavailable(e),
        Err(e) => Err(refusal(&e)),
    };
    let text = match &outcome {
        Ok(t) | Err(t) => t.clone(),
    };
    if let Err(e) = store.approval_outcome(id, &text).await {
        return unavailable(e);
    }
    audited(
        &c,
        &s,
        "refund approved",
        Some(&a.transaction_no),
        decision_line(&a, &text),
    )
    .await;
    match outcome {
        Ok(_) => go("/console/approvals?done=approved"),
        Err(_) => go("/console/approvals?error=refused"),
    }
}

pub async fn reject(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<DecideForm>,
) -> Response {
    let (s, a) = match begin_decision(&c, &headers, id, &form.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reason: String = form.reason.trim().chars().take(200).collect();
    if reason.is_empty() {
        return go("/console/approvals?error=reason");
    }
    let decided = c
        .app
        .store()
        .decide_approval(Decision {
            id,
            state: ApprovalState::Rejected,
            by: s.user.id,
            login: s.user.login.clone(),
            at: c.app.clock().now(),
            reason: reason.clone(),
        })
        .await;
    match decided {
        Ok(true) => {}
        // Rejected earlier but its held refund not failed yet (a crash between the two):
        // fail it now.
        Ok(false)
            if a.state == ApprovalState::Rejected
                && a.refund_id.is_some()
                && a.outcome.is_none() => {}
        Ok(false) => return go("/console/approvals?error=decided"),
        Err(e) => return unavailable(e),
    }
    if let Some(refund_id) = a.refund_id {
        let done = c
            .app
            .reject_held_refund(a.payment_id, refund_id, &reason)
            .await;
        let why = format!("rejected ({reason})");
        return decided_held(&c, &s, &a, "refund rejected", done, &why).await;
    }
    let detail = decision_line(&a, &reason);
    audited(&c, &s, "refund rejected", Some(&a.transaction_no), detail).await;
    go("/console/approvals?done=rejected")
}

/// Keeps and audits what a decision did to a held refund (asked through a merchant API), and
/// answers the approvals page.
async fn decided_held(
    c: &Console,
    s: &SignedIn,
    a: &tillgate_core::console::ApprovalRecord,
    action: &str,
    done: Result<
        tillgate_core::service::Outcome<(PaymentRecord, tillgate_core::RefundRecord)>,
        LifecycleError,
    >,
    decision: &str,
) -> Response {
    let text = match &done {
        Ok(out) => {
            let (_, r) = &out.value;
            format!("{decision}: refund {} {:?}", r.refund_no, r.state)
        }
        Err(e @ LifecycleError::Store(_)) => return unavailable(e),
        Err(e) => refusal(e),
    };
    if let Err(e) = c.app.store().approval_outcome(a.id, &text).await {
        return unavailable(e);
    }
    audited(
        c,
        s,
        action,
        Some(&a.transaction_no),
        decision_line(a, &text),
    )
    .await;
    match done {
        Ok(_) if action == "refund rejected" => go("/console/approvals?done=rejected"),
        Ok(_) => go("/console/approvals?done=approved"),
        Err(_) => go("/console/approvals?error=refused"),
    }
}
