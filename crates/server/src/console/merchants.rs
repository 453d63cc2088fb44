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

/// A form posted about merchant `merchant_no`: the checked session (see `posted`) and the
/// merchant, if the user's scope holds it.
async fn posted_for(
    c: &Console,
    headers: &HeaderMap,
    csrf: &str,
    merchant_no: &str,
) -> Result<(SignedIn, tillgate_core::MerchantRecord), Response> {
    let s = posted(c, headers, csrf).await?;
    let m = load(c, &s, merchant_no).await?;
    Ok((s, m))
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
            dt { "API refunds" } dd data-test="api-approval" {
                @if m.api_refunds_need_approval {
                    "need approval too, under the refund authority: held (answered in progress) until decided"
                } @else { "refunded at once" }
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
                label { input type="checkbox" name="api_approval" value="on" checked[m.api_refunds_need_approval] data-test="api-approval-box";
                    " API refunds need approval too" }
                button.primary type="submit" data-test="save" { "Save" }
            }
            @if s.user.role == Role::Operator {
                h2 { "Add a credential" }
                form.filters method="post" action={ "/console/merchants/" (m.merchant_no) "/add" } data-test="add" {
                    input type="hidden" name="csrf" value=(s.session.csrf);
                    label { "What" select name="kind" {
                        option value="store" { "store (Pockyt token)" }
                        option value="app" { "app (unified secret)" }
                        option value="terminal" { "POS terminal (YabandPay)" }
                    } }
                    label { "Store number (for a store)" input name="key" maxlength="32" data-test="add-key"; }
                    button.primary type="submit" data-test="add-button" { "Add" }
                }
            }
            h2 { "Rotate a credential" }
            p.muted { "A new secret is in force at once and shown once; requests signed with the old one are still accepted for the grace period, then refused. Answers and notifications are signed with the new one." }
            form.filters method="post" action={ "/console/merchants/" (m.merchant_no) "/rotate" } data-test="rotate" {
                input type="hidden" name="csrf" value=(s.session.csrf);
                label { "Kind" select name="kind" {
                    option value="store" { "store token (Pockyt)" }
                    option value="app" { "app secret (unified)" }
                    option value="terminal" { "terminal secret (YabandPay)" }
                } }
                label { "Store no, app id or tid" input name="key" required maxlength="64" data-test="rotate-key"; }
                label { "Grace (minutes)" input name="grace" value="60" size="6" inputmode="numeric"; }
                button.primary type="submit" data-test="rotate-button" { "Rotate" }
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
    /// The checkbox "API refunds need approval too": sent ("on") only when ticked.
    #[serde(default)]
    api_approval: Option<String>,
}

pub async fn save(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(merchant_no): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    let (s, m) = match posted_for(&c, &headers, &form.csrf, &merchant_no).await {
        Ok(v) => v,
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
    let api_approval = form.api_approval.is_some();
    let store = c.app.store().as_ref();
    let written = async {
        store.set_display_name(m.id, name.as_deref()).await?;
        store.set_zone(m.id, &zone).await?;
        store.set_notify_schedule(m.id, schedule.as_deref()).await?;
        store
            .set_refund_authority(m.id, authority, threshold, api_approval)
            .await
    }
    .await;
    if let Err(e) = written {
        return unavailable(e);
    }
    audited(
        &c,
        &s,
        "merchant settings",
        None,
        format!(
            "{}: name {:?}, zone {}, schedule {}, refunds {}{}{}",
            m.merchant_no,
            name.as_deref().unwrap_or(""),
            zone.name(),
            schedule.as_deref().unwrap_or("default"),
            authority.as_str(),
            threshold.map(|t| format!(" above {t}")).unwrap_or_default(),
            if api_approval {
                ", API refunds too"
            } else {
                ""
            }
        ),
    )
    .await;
    go(&format!("/console/merchants/{}?done=saved", m.merchant_no))
}

fn random_hex(len: usize) -> String {
    let key = tillgate_core::SecretBox::generate_key_hex();
    key.expose()[..len.min(64)].to_owned()
}

fn new_form(s: &SignedIn, status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "New merchant" }
        @if let Some(e) = error { p.error data-test="notice" { (e) } }
        p.muted { "Creates the merchant with a store (Pockyt), an app (unified API) and a POS terminal (YabandPay); their secrets are shown once." }
        form.filters method="post" action="/console/merchants/new" data-test="new-merchant" {
            input type="hidden" name="csrf" value=(s.session.csrf);
            label { "Merchant number" input name="merchant_no" required maxlength="32"; }
            label { "Store number" input name="store_no" required maxlength="32"; }
            label { "Name" input name="name" maxlength="80"; }
            label { "Time zone (IANA)" input name="zone" value="UTC" size="18"; }
            button.primary type="submit" data-test="create" { "Create" }
        }
    };
    respond(status, layout("New merchant", Some(s), body))
}

pub async fn new_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match require(&c, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.user.role != Role::Operator {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Only an operator creates merchants.",
        );
    }
    new_form(&s, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct NewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    merchant_no: String,
    #[serde(default)]
    store_no: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    zone: String,
}

/// Creates a merchant with its first store, app and terminal, and shows their secrets once.
/// A number already taken is refused: the console never shows an existing merchant's secrets.
pub async fn create(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<NewForm>,
) -> Response {
    use tillgate_core::credentials::{CredentialWanted, MerchantWanted};
    use tillgate_core::Secret;
    let s = match posted(&c, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if s.user.role != Role::Operator {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Only an operator creates merchants.",
        );
    }
    let checked = (|| {
        let merchant_no = tillgate_domain::MerchantNo::parse(form.merchant_no.trim())
            .map_err(|e| format!("The merchant number {e}."))?;
        let store_no = tillgate_domain::StoreNo::parse(form.store_no.trim())
            .map_err(|e| format!("The store number {e}."))?;
        let zone = MerchantZone::parse(form.zone.trim())
            .ok_or("The time zone must be an IANA name such as Europe/Amsterdam.")?;
        let name = tillgate_core::credentials::display_name(&form.name)?.map(str::to_owned);
        Ok::<_, String>((
            merchant_no.as_str().to_owned(),
            store_no.as_str().to_owned(),
            zone,
            name,
        ))
    })();
    let (merchant_no, store_no, zone, name) = match checked {
        Ok(v) => v,
        Err(e) => return new_form(&s, StatusCode::BAD_REQUEST, Some(&e)),
    };
    let store = c.app.store().as_ref();
    match store.merchant(&merchant_no).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return new_form(
                &s,
                StatusCode::CONFLICT,
                Some("That merchant exists: manage it on its page."),
            )
        }
        Err(e) => return unavailable(e),
    }
    let wanted = MerchantWanted {
        merchant_no: merchant_no.clone(),
        zone,
        notify_schedule: None,
        store: CredentialWanted {
            key: store_no,
            secret: Secret::new(random_hex(32)),
            named: true,
        },
        app: CredentialWanted {
            key: random_hex(24),
            secret: Secret::new(random_hex(64)),
            named: true,
        },
        terminal: CredentialWanted {
            key: format!("T{}", random_hex(10).to_uppercase()),
            secret: Secret::new(random_hex(32)),
            named: true,
        },
    };
    let done = match c.app.credentials().set_up_merchant(wanted).await {
        Ok(done) if done.created => done,
        Ok(_) => {
            return new_form(
                &s,
                StatusCode::CONFLICT,
                Some("That merchant exists: manage it on its page."),
            )
        }
        Err(e) => return unavailable(e),
    };
    if let Some(name) = &name {
        if let Err(e) = store.set_display_name(done.merchant.id, Some(name)).await {
            return unavailable(e);
        }
    }
    audited(
        &c,
        &s,
        "merchant created",
        None,
        format!("{} with store {}", merchant_no, done.store.key),
    )
    .await;
    let body = html! {
        h1 { "Merchant " (merchant_no) " created" }
        p.done data-test="notice" { "Its credentials, shown this once: give them to the merchant now." }
        div.card { dl.facts data-test="credentials" {
            dt { "Pockyt merchantNo / storeNo" } dd { (merchant_no) " / " (done.store.key) }
            dt { "Pockyt token" } dd data-test="token" { (done.store.secret.expose()) }
            @if let Some(app) = &done.app {
                dt { "Unified mchNo / appId" } dd { (merchant_no) " / " (app.key) }
                dt { "Unified app secret" } dd data-test="app-secret" { (app.secret.expose()) }
            }
            @if let Some(t) = &done.terminal {
                dt { "Terminal (YabandPay user)" } dd data-test="tid" { (t.key) }
                dt { "Terminal secret" } dd data-test="terminal-secret" { (t.secret.expose()) }
            }
        } }
        p { a href={ "/console/merchants/" (merchant_no) } { "Its settings →" } }
    };
    respond(StatusCode::OK, layout("Merchant created", Some(&s), body))
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    grace: String,
}

/// Rotates one of the merchant's credentials and shows the new secret once.
pub async fn rotate(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(merchant_no): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    use tillgate_core::CredentialKind;
    let (s, m) = match posted_for(&c, &headers, &form.csrf, &merchant_no).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !may_change(&s.user, m.id) {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Your role may not do this.",
        );
    }
    let kind = match form.kind.as_str() {
        "store" => CredentialKind::Store,
        "app" => CredentialKind::App,
        "terminal" => CredentialKind::Terminal,
        _ => {
            return render(
                &s,
                &m,
                StatusCode::BAD_REQUEST,
                Some((true, "Choose a kind of credential.".into())),
            )
        }
    };
    let Some(minutes) = form
        .grace
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|g| (0..=60 * 24 * 30).contains(g))
    else {
        return render(
            &s,
            &m,
            StatusCode::BAD_REQUEST,
            Some((true, "The grace period is 0 to 43200 minutes.".into())),
        );
    };
    let key = form.key.trim();
    let secret = match c
        .app
        .credentials()
        .rotate(kind, &m, key, chrono::Duration::minutes(minutes))
        .await
    {
        Ok(secret) => secret,
        Err(tillgate_core::credentials::CredentialError::Unknown) => {
            return render(
                &s,
                &m,
                StatusCode::NOT_FOUND,
                Some((
                    true,
                    format!("The merchant has no {} {key:?}.", kind.as_str()),
                )),
            )
        }
        Err(e) => return unavailable(e),
    };
    let until = c.app.clock().now() + chrono::Duration::minutes(minutes);
    audited(
        &c,
        &s,
        "credential rotated",
        None,
        format!(
            "{}: {} {key}, the old one accepted until {}",
            m.merchant_no,
            kind.as_str(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .await;
    let body = html! {
        h1 { "New " (kind.as_str()) " secret for " (key) }
        p.done data-test="notice" { "In force now; shown this once. The old one is accepted until " (at(until, c.zone)) " " (c.zone.name()) "." }
        div.card { dl.facts {
            dt { "Secret" } dd data-test="new-secret" { (secret.expose()) }
        } }
        p { a href={ "/console/merchants/" (m.merchant_no) } { "← Merchant " (m.merchant_no) } }
    };
    respond(StatusCode::OK, layout("Credential rotated", Some(&s), body))
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    /// A store number, or empty for a random app id or tid.
    #[serde(default)]
    key: String,
}

/// Adds a store, an app or a terminal to an existing merchant, and shows its secret once. A
/// key that exists is refused: its secret is never shown again (rotate it instead).
pub async fn add(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(merchant_no): Path<String>,
    Form(form): Form<AddForm>,
) -> Response {
    use tillgate_core::credentials::{CredentialWanted, MerchantWanted};
    use tillgate_core::Secret;
    let (s, m) = match posted_for(&c, &headers, &form.csrf, &merchant_no).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if s.user.role != Role::Operator {
        return failure(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Only an operator adds credentials.",
        );
    }
    let key = form.key.trim();
    // The set-up names the one credential asked for; the others stand for the merchant's
    // first of their kind, which an existing merchant keeps as they are (their keys unused).
    let unnamed = |k: String| CredentialWanted {
        key: k,
        secret: Secret::new(random_hex(32)),
        named: false,
    };
    let (store, app, terminal, label) = match form.kind.as_str() {
        "store" => match tillgate_domain::StoreNo::parse(key) {
            Ok(no) => (
                CredentialWanted {
                    key: no.as_str().to_owned(),
                    secret: Secret::new(random_hex(32)),
                    named: true,
                },
                unnamed(random_hex(24)),
                unnamed(format!("T{}", random_hex(10).to_uppercase())),
                "store",
            ),
            Err(e) => {
                return render(
                    &s,
                    &m,
                    StatusCode::BAD_REQUEST,
                    Some((true, format!("The store number {e}."))),
                )
            }
        },
        "app" => (
            unnamed(random_hex(8)),
            CredentialWanted {
                key: random_hex(24),
                secret: Secret::new(random_hex(64)),
                named: true,
            },
            unnamed(format!("T{}", random_hex(10).to_uppercase())),
            "app",
        ),
        "terminal" => (
            unnamed(random_hex(8)),
            unnamed(random_hex(24)),
            CredentialWanted {
                key: format!("T{}", random_hex(10).to_uppercase()),
                secret: Secret::new(random_hex(32)),
                named: true,
            },
            "terminal",
        ),
        _ => {
            return render(
                &s,
                &m,
                StatusCode::BAD_REQUEST,
                Some((true, "Choose what to add.".into())),
            )
        }
    };
    let wanted = MerchantWanted {
        merchant_no: m.merchant_no.clone(),
        zone: m.zone,
        notify_schedule: None,
        store,
        app,
        terminal,
    };
    let done = match c.app.credentials().set_up_merchant(wanted).await {
        Ok(done) => done,
        Err(e) => return unavailable(e),
    };
    let added = match label {
        "store" => Some(done.store),
        "app" => done.app,
        _ => done.terminal,
    }
    .filter(|cred| cred.created);
    let Some(added) = added else {
        return render(
            &s,
            &m,
            StatusCode::CONFLICT,
            Some((
                true,
                format!("That {label} exists: rotate it to get a new secret."),
            )),
        );
    };
    audited(
        &c,
        &s,
        "credential added",
        None,
        format!("{}: {label} {}", m.merchant_no, added.key),
    )
    .await;
    let body = html! {
        h1 { "New " (label) " of merchant " (m.merchant_no) }
        p.done data-test="notice" { "Shown this once: give it to the merchant now." }
        div.card { dl.facts {
            dt { "Key (store no, app id or tid)" } dd data-test="new-key" { (added.key) }
            dt { "Secret" } dd data-test="new-secret" { (added.secret.expose()) }
        } }
        p { a href={ "/console/merchants/" (m.merchant_no) } { "← Merchant " (m.merchant_no) } }
    };
    respond(StatusCode::OK, layout("Credential added", Some(&s), body))
}
