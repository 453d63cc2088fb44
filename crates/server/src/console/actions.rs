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
    let s = require(c, headers).await?;
    if !auth::same_origin(headers) || !auth::csrf_ok(&s.session, csrf) {
        return Err(failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Refused: the form is stale or came from another site. Reload the page.",
        ));
    }
    let store = c.app.store().as_ref();
    let p = match store.payment_by_transaction_no(transaction_no).await {
        Ok(Some(p)) if scope(&s.user).is_none_or(|m| m == p.merchant_id) => p,
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

async fn audit_action(
    c: &Console,
    s: &SignedIn,
    transaction_no: &str,
    action: &str,
    detail: String,
) {
    let entry = NewAudit {
        at: c.app.clock().now(),
        user_id: Some(s.user.id),
        login: s.user.login.clone(),
        action: action.to_owned(),
        transaction_no: Some(transaction_no.to_owned()),
        detail,
        address: None,
    };
    if let Err(e) = c.app.store().audit(entry).await {
        tracing::warn!(error = %e, action, "console: audit line not written");
    }
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
    let done = c
        .app
        .refund(
            &merchant,
            &PaymentKey::TransactionNo(p.transaction_no.clone()),
            RefundRequest {
                amount,
                settle_currency: None,
                refund_reference: Some(reference),
                notify: NotifyTo::PaymentUrl,
                extra: None,
            },
        )
        .await;
    match done {
        Ok(out) => {
            let (_, r) = &out.value;
            let code = match r.state {
                tillgate_domain::RefundState::Succeeded => "refund",
                tillgate_domain::RefundState::Failed => "refund-failed",
                _ => "refund-pending",
            };
            if !out.replayed {
                audit_action(
                    &c,
                    &s,
                    &p.transaction_no,
                    "refund",
                    format!("{detail} → {}", r.refund_no),
                )
                .await;
            }
            back(&p.transaction_no, code)
        }
        Err(e @ LifecycleError::Store(_)) => unavailable(e),
        Err(e) => {
            audit_action(
                &c,
                &s,
                &p.transaction_no,
                "refund refused",
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
                audit_action(
                    &c,
                    &s,
                    &p.transaction_no,
                    "cancel",
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
            audit_action(&c, &s, &p.transaction_no, "cancel refused", e.to_string()).await;
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
            audit_action(
                &c,
                &s,
                &p.transaction_no,
                "notification resent",
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
            audit_action(
                &c,
                &s,
                &p.transaction_no,
                "sandbox settle",
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
