//! `/console/merchants/{no}`: a merchant's settings — its name, time zone, notification
//! schedule and refund authority — seen by its people and operators, changed by an operator
//! or the merchant's admin. Each change is written to the audit log.

use super::*;
use tillgate_core::console::RefundAuthority;

/// Who changes a merchant's settings: an operator, or that merchant's admin.
fn may_change(user: &UserRecord, merchant_id: i64) -> bool {
    match user.role {
        Role::Operator => true,
        Role::MerchantAdmin => user.merchant_id == Some(merchant_id),
        Role::MerchantStaff | Role::Auditor => false,
    }
}

async fn load(
    c: &Console,
    s: &SignedIn,
    merchant_no: &str,
) -> Result<tillgate_core::MerchantRecord, Response> {
    match c.app.store().merchant(merchant_no).await {
        Ok(Some(m)) if scope(&s.user).is_none_or(|id| id == m.id) => Ok(m),
        Ok(_) => Err(failure(StatusCode::NOT_FOUND, Some(s), "No such merchant.")),
        Err(e) => Err(unavailable(e)),
    }
}

fn render(
    s: &SignedIn,
    m: &tillgate_core::MerchantRecord,
    status: StatusCode,
    notice: Option<(bool, String)>,
) -> Response {
    let edit = may_change(&s.user, m.id);
    let body = html! {
        h1 { "Merchant " (m.merchant_no) }
        @if let Some((is_error, text)) = &notice {
            @if *is_error { p.error data-test="notice" { (text) } } @else { p.done data-test="notice" { (text) } }
        }
        div.card { dl.facts {
            dt { "Name" } dd data-test="name" { (m.display_name.as_deref().unwrap_or("—")) }
            dt { "Time zone" } dd data-test="zone" { (m.zone.name()) }
            dt { "Notification schedule" } dd { (m.notify_schedule.as_deref().unwrap_or("the gateway's")) }
            dt { "Refund authority" } dd data-test="authority" {
                (m.refund_authority.as_str())
                @if m.refund_authority == RefundAuthority::Approval {
                    @match m.approval_threshold_minor {
                        Some(t) => { " above " (t) " (minor units)" }
                        None => { ", every refund" }
                    }
                }
            }
            dt { "Sandbox" } dd { @if m.sandbox { "yes: public sample credentials" } @else { "no" } }
        } }
        @if edit {
            h2 { "Change" }
            form.filters method="post" action={ "/console/merchants/" (m.merchant_no) } data-test="settings" {
                input type="hidden" name="csrf" value=(s.session.csrf);
                label { "Name" input name="name" value=[m.display_name.as_deref()] maxlength="80"; }
                label { "Time zone (IANA)" input name="zone" value=(m.zone.name()) size="18"; }
                label { "Schedule (s, or default)" input name="schedule" value=(m.notify_schedule.as_deref().unwrap_or("default")) size="16"; }
                label { "Refund authority" select name="authority" {
                    @for a in [RefundAuthority::Immediate, RefundAuthority::Approval, RefundAuthority::Disabled] {
                        option value=(a.as_str()) selected[a == m.refund_authority] { (a.as_str()) }
                    }
                } }
                label { "Approval above (minor units, empty: every refund)"
                    input name="threshold" value=[m.approval_threshold_minor] size="10" inputmode="numeric"; }
                button.primary type="submit" data-test="save" { "Save" }
            }
        }
    };
    respond(
        status,
        layout(&format!("Merchant {}", m.merchant_no), Some(s), body),
    )
}

pub async fn page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(merchant_no): Path<String>,
    Query(said): Query<Said>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = match load(&c, &s, &merchant_no).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let notice = (said.done.as_deref() == Some("saved")).then(|| (false, "Saved.".to_owned()));
    render(&s, &m, StatusCode::OK, notice)
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    authority: String,
    #[serde(default)]
    threshold: String,
}

pub async fn save(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(merchant_no): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !auth::same_origin(&headers) || !auth::csrf_ok(&s.session, &form.csrf) {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Refused: the form is stale or came from another site. Reload the page.",
        );
    }
    let m = match load(&c, &s, &merchant_no).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if !may_change(&s.user, m.id) {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Your role may not do this.",
        );
    }
    // Everything is read before anything is written: a bad field changes nothing.
    let checked = (|| {
        let name = tillgate_core::credentials::display_name(&form.name)?;
        let zone = MerchantZone::parse(form.zone.trim())
            .ok_or("the time zone must be an IANA name such as Europe/Amsterdam")?;
        let schedule = match form.schedule.trim() {
            "" | "default" => None,
            text => Some(
                crate::config::parse_schedule(text)
                    .map_err(|_| "the schedule is seconds such as 0,30,60, or default")?
                    .to_text(),
            ),
        };
        let authority = RefundAuthority::parse(form.authority.trim())
            .ok_or("the refund authority is immediate, approval or disabled")?;
        let threshold = match form.threshold.trim() {
            "" => None,
            t => Some(
                t.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or("the threshold is an amount in minor units, 0 or more")?,
            ),
        };
        Ok::<_, &'static str>((
            name.map(str::to_owned),
            zone,
            schedule,
            authority,
            threshold,
        ))
    })();
    let (name, zone, schedule, authority, threshold) = match checked {
        Ok(v) => v,
        Err(message) => {
            return render(
                &s,
                &m,
                StatusCode::BAD_REQUEST,
                Some((true, message.to_owned())),
            )
        }
    };
    let store = c.app.store().as_ref();
    let written = async {
        store.set_display_name(m.id, name.as_deref()).await?;
        store.set_zone(m.id, &zone).await?;
        store.set_notify_schedule(m.id, schedule.as_deref()).await?;
        store.set_refund_authority(m.id, authority, threshold).await
    }
    .await;
    if let Err(e) = written {
        return unavailable(e);
    }
    let entry = NewAudit {
        at: c.app.clock().now(),
        user_id: Some(s.user.id),
        login: s.user.login.clone(),
        action: "merchant settings".into(),
        transaction_no: None,
        detail: format!(
            "{}: name {:?}, zone {}, schedule {}, refunds {}{}",
            m.merchant_no,
            name.as_deref().unwrap_or(""),
            zone.name(),
            schedule.as_deref().unwrap_or("default"),
            authority.as_str(),
            threshold.map(|t| format!(" above {t}")).unwrap_or_default()
        ),
        address: None,
    };
    if let Err(e) = store.audit(entry).await {
        tracing::warn!(error = %e, "console: audit line not written");
    }
    go(&format!("/console/merchants/{}?done=saved", m.merchant_no))
}
