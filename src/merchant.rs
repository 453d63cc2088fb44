//! `tillgate merchant create` and `tillgate merchant update`.
//!
//! `create` is idempotent and atomic: the same arguments give the same credentials and add
//! nothing (an existing merchant's store, app and terminal are printed as they are), more apps
//! and terminals come only with `--add-app`/`--add-terminal` or a new `--app-id`/`--tid`, and a
//! failure writes nothing. A setting given to `create` is never silently ignored: one that
//! differs from an existing merchant's is refused, with the `update` that changes it.

use crate::output::emit_json;
use crate::Common;
use anyhow::{bail, Context};
use clap::Args;
use tillgate_core::credentials::{CredentialError, CredentialWanted, MerchantWanted};
use tillgate_core::{MerchantRecord, Secret};
use tillgate_domain::{Key, MerchantNo, StoreNo};
use tillgate_server::config::{parse_schedule, parse_zone};

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Create the database when it does not exist (operator commands never create one
    /// otherwise).
    #[arg(long)]
    pub create: bool,
    /// The merchant's number (Pockyt merchantNo, unified mchNo).
    #[arg(long)]
    pub merchant_no: String,
    /// The store's number (Pockyt storeNo); a new one is added to an existing merchant.
    #[arg(long)]
    pub store_no: String,
    /// The store's API token; random when absent. An existing store keeps its token.
    #[arg(long)]
    pub token: Option<String>,
    /// IANA time zone of a new merchant's business day (default: the configured default).
    #[arg(long)]
    pub timezone: Option<String>,
    /// The store's default currency (ISO 4217): what a Pockyt add naming no currency or
    /// settle currency is in (USD when never set).
    #[arg(long)]
    pub currency: Option<String>,
    /// An origin (https://shop.example) whose browser pages may read this merchant's answers
    /// The merchant's name as its customers see it on the hosted payment pages.
    #[arg(long)]
    pub name: Option<String>,
    /// (CORS); repeat for several. Given, it replaces the merchant's list.
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// A unified-API app id: added unless the merchant has it. Without it, the merchant's
    /// first app (a new merchant gets one with a random id).
    #[arg(long)]
    pub app_id: Option<String>,
    /// The app's secret; random when absent.
    #[arg(long)]
    pub app_secret: Option<String>,
    /// Add another unified-API app with a random id, even when the merchant has one.
    #[arg(long, conflicts_with = "app_id")]
    pub add_app: bool,
    /// A new merchant's own notification schedule, e.g. "0,30,60" (default: the gateway's).
    #[arg(long)]
    pub notify_schedule_s: Option<String>,
    /// A POS terminal's id (also the YabandPay user of its methods): added unless the
    /// merchant has it. Without it, the merchant's first terminal (a new merchant gets one
    /// with a random id).
    #[arg(long)]
    pub tid: Option<String>,
    /// The terminal's secret key; random when absent.
    #[arg(long)]
    pub terminal_secret: Option<String>,
    /// Add another terminal with a random id, even when the merchant has one.
    #[arg(long, conflicts_with = "tid")]
    pub add_terminal: bool,
}

/// A merchant's refund policy as `update` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Its refunds must carry its own refund reference.
    True,
    /// Its refunds need not carry one.
    False,
    /// The gateway's default (`[replay] require_refund_reference`).
    Default,
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args([
            "timezone",
            "notify_schedule_s",
            "require_refund_reference",
            "name",
            "refund_authority",
            "approval_threshold_minor",
            "api_refunds_need_approval",
            "fee_bps",
            "fee_fixed"
        ])
))]
pub struct UpdateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The merchant to change.
    #[arg(long)]
    pub merchant_no: String,
    /// Its name as customers see it on the hosted payment pages ("" clears it).
    #[arg(long)]
    pub name: Option<String>,
    /// Who may refund from the console: immediate (whoever may act), approval (a refund above
    /// --approval-threshold-minor, or any without one, waits for a second person), disabled
    /// (the merchant's staff cannot refund).
    #[arg(long, value_parser = ["immediate", "approval", "disabled"])]
    pub refund_authority: Option<String>,
    /// Under `approval`: refunds up to this amount (minor units, e.g. 5000 for 50.00) need no
    /// second person; "none": every refund does.
    #[arg(long)]
    pub approval_threshold_minor: Option<String>,
    /// Whether refunds through the merchant APIs need approval too, under the same authority
    /// and threshold: such a refund is reserved and answered "in progress", and goes to the
    /// wallet only once a person approves it in the console (rejected: it fails).
    #[arg(long, value_parser = clap::value_parser!(bool))]
    pub api_refunds_need_approval: Option<bool>,
    /// IANA time zone of the merchant's business day (which day a same-day cancel belongs to).
    #[arg(long)]
    pub timezone: Option<String>,
    /// The merchant's own notification schedule ("0,30,60"), or "default" for the gateway's.
    #[arg(long)]
    pub notify_schedule_s: Option<String>,
    /// Whether the merchant's refunds must carry its own refund reference; "default" follows
    /// the gateway's `[replay] require_refund_reference`.
    #[arg(long)]
    pub require_refund_reference: Option<Policy>,
    /// The fee plan's share of each approved payment, in basis points (0 to 10000; 150 is
    /// 1.5 %), rounded half up to a minor unit per payment.
    #[arg(long)]
    pub fee_bps: Option<i64>,
    /// The fee plan's fixed part per approved payment, in minor units of the payment's
    /// currency (30 is 0.30 USD).
    #[arg(long)]
    pub fee_fixed: Option<i64>,
}

/// A credential from the command line (at least 16 characters), or a random one of `len` hex
/// digits.
fn secret_arg(flag: &str, given: Option<String>, len: usize) -> anyhow::Result<Secret<String>> {
    match given {
        Some(t) if t.len() < 16 => bail!("{flag} must be at least 16 characters"),
        Some(t) => Ok(Secret::new(t)),
        None => Ok(Secret::new(random_hex(len))),
    }
}

/// `len` random lower-case hex digits (at most 64).
fn random_hex(len: usize) -> String {
    let key = tillgate_core::SecretBox::generate_key_hex();
    key.expose()[..len.min(64)].to_owned()
}

fn key_arg(flag: &str, given: &str) -> anyhow::Result<String> {
    Ok(Key::parse(given)
        .map_err(|e| anyhow::anyhow!("{flag} {e}"))?
        .as_str()
        .to_owned())
}

pub async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let config = args.common.config()?;
    let merchant_no = MerchantNo::parse(&args.merchant_no)
        .map_err(|e| anyhow::anyhow!("--merchant-no {e}"))?
        .as_str()
        .to_owned();
    let store_no = StoreNo::parse(&args.store_no)
        .map_err(|e| anyhow::anyhow!("--store-no {e}"))?
        .as_str()
        .to_owned();
    let zone = args.timezone.as_deref().map(parse_zone).transpose()?;
    let schedule = args
        .notify_schedule_s
        .as_deref()
        .map(parse_schedule)
        .transpose()?;
    let currency = args
        .currency
        .as_deref()
        .map(|c| {
            tillgate_domain::Currency::from_code(&c.to_ascii_uppercase())
                .ok_or_else(|| anyhow::anyhow!("--currency {c} is not an ISO 4217 code"))
        })
        .transpose()?;
    let name = args
        .name
        .as_deref()
        .map(|n| {
            tillgate_core::credentials::display_name(n).map_err(|e| anyhow::anyhow!("--name: {e}"))
        })
        .transpose()?
        .flatten()
        .map(str::to_owned);
    let cors_origins = args
        .cors_origins
        .iter()
        .map(|o| {
            tillgate_server::cors::parse_origin(o).map_err(|e| anyhow::anyhow!("--cors-origin {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let app_id = args
        .app_id
        .as_deref()
        .map(|id| key_arg("--app-id", id))
        .transpose()?;
    let tid = args
        .tid
        .as_deref()
        .map(|t| key_arg("--tid", t))
        .transpose()?;
    let token_given = args.token.is_some();
    let token = secret_arg("--token", args.token, 32)?;
    let app_secret_given = args.app_secret.is_some();
    let app_secret = secret_arg("--app-secret", args.app_secret, 64)?;
    let terminal_secret_given = args.terminal_secret.is_some();
    let terminal_secret = secret_arg("--terminal-secret", args.terminal_secret, 32)?;

    let store = if args.create {
        tillgate_server::open_store(&config.database_url, config.database_max_connections).await?
    } else {
        tillgate_server::open_existing_store(&config.database_url, config.database_max_connections)
            .await?
    };
    let credentials = tillgate_server::keys::open_credentials(&config, store.clone()).await?;

    // What is given is never ignored: a setting an existing merchant has otherwise is refused
    // before anything is written.
    if let Some(existing) = credentials.merchant(&merchant_no).await? {
        if let Some(zone) = &zone {
            if zone.name() != existing.zone.name() {
                bail!(
                    "merchant {merchant_no} exists with time zone {}; `merchant create` does not \
                     change it: use `tillgate merchant update --merchant-no {merchant_no} \
                     --timezone {}`",
                    existing.zone.name(),
                    zone.name()
                );
            }
        }
        if let Some(schedule) = &schedule {
            if existing.notify_schedule.as_deref() != Some(schedule.to_text().as_str()) {
                bail!(
                    "merchant {merchant_no} exists with the notification schedule {}; \
                     `merchant create` does not change it: use `tillgate merchant update \
                     --merchant-no {merchant_no} --notify-schedule-s {}`",
                    existing
                        .notify_schedule
                        .as_deref()
                        .unwrap_or("of the gateway"),
                    schedule.to_text()
                );
            }
        }
        if token_given {
            match credentials.store_credential(&merchant_no, &store_no).await {
                Ok(found) if found.token.expose() != token.expose() => bail!(
                    "store {store_no} of merchant {merchant_no} exists with another token; \
                     `merchant create` does not change tokens"
                ),
                Ok(_) | Err(CredentialError::Unknown) => {}
                Err(e) => return Err(e).context("cannot read the existing store"),
            }
        }
    }
    if let (Some(id), true) = (&app_id, app_secret_given) {
        match credentials.app_credential(id).await {
            Ok(found) if found.secret.expose() != app_secret.expose() => {
                bail!("app {id} exists with another secret; `merchant create` does not change it")
            }
            Ok(_) | Err(CredentialError::Unknown) => {}
            Err(e) => return Err(e).context("cannot read the existing app"),
        }
    }
    if let (Some(tid), true) = (&tid, terminal_secret_given) {
        match credentials.terminal_credential(tid).await {
            Ok(found) if found.secret.expose() != terminal_secret.expose() => bail!(
                "terminal {tid} exists with another secret; `merchant create` does not change it"
            ),
            Ok(_) | Err(CredentialError::Unknown) => {}
            Err(e) => return Err(e).context("cannot read the existing terminal"),
        }
    }

    let wanted = MerchantWanted {
        merchant_no: merchant_no.clone(),
        zone: zone.unwrap_or(config.default_timezone),
        notify_schedule: schedule,
        store: CredentialWanted {
            key: store_no.clone(),
            secret: token,
            named: true,
        },
        app: CredentialWanted {
            named: app_id.is_some() || args.add_app,
            key: app_id.unwrap_or_else(|| random_hex(24)),
            secret: app_secret,
        },
        terminal: CredentialWanted {
            named: tid.is_some() || args.add_terminal,
            key: tid.unwrap_or_else(|| format!("T{}", random_hex(10).to_uppercase())),
            secret: terminal_secret,
        },
    };
    let done = credentials.set_up_merchant(wanted).await;
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            store.close().await;
            return Err(e).with_context(|| {
                format!("cannot set up merchant {merchant_no}; nothing was written")
            });
        }
    };
    let settled = async {
        if let Some(name) = &name {
            credentials
                .set_display_name(&done.merchant, Some(name))
                .await
                .context("cannot set the merchant's name")?;
        }
        if !cors_origins.is_empty() {
            credentials
                .set_cors_origins(&done.merchant, &cors_origins)
                .await
                .context("cannot set the merchant's CORS origins")?;
        }
        if let Some(currency) = currency {
            credentials
                .set_store_currency(&done.merchant, &store_no, Some(currency))
                .await
                .context("cannot set the store's currency")?;
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    settled?;
    let mut out = merchant_json(&done.merchant);
    if !cors_origins.is_empty() {
        out["corsOrigins"] = cors_origins.clone().into();
    }
    if name.is_some() {
        out["name"] = name.clone().into();
    }
    out["created"] = done.created.into();
    out["pockyt"] = serde_json::json!({
        "merchantNo": merchant_no,
        "storeNo": done.store.key,
        "token": done.store.secret.expose(),
        "currency": currency.as_ref().map(tillgate_domain::Currency::code),
        "created": done.store.created,
    });
    out["unified"] = done.app.map_or(serde_json::Value::Null, |app| {
        serde_json::json!({
            "mchNo": merchant_no,
            "appId": app.key,
            "appSecret": app.secret.expose(),
            "created": app.created,
        })
    });
    out["terminal"] = done.terminal.map_or(serde_json::Value::Null, |t| {
        serde_json::json!({
            "tid": t.key,
            "secret": t.secret.expose(),
            "created": t.created,
        })
    });
    emit_json(&out)
}

/// A merchant's settings as the commands print them.
fn merchant_json(m: &MerchantRecord) -> serde_json::Value {
    serde_json::json!({
        "merchantNo": m.merchant_no,
        "name": m.display_name,
        "timezone": m.zone.name(),
        "notifySchedule": m.notify_schedule,
        "requireRefundReference": m.refund_reference_required,
        "refundAuthority": m.refund_authority.as_str(),
        "approvalThresholdMinor": m.approval_threshold_minor,
        "apiRefundsNeedApproval": m.api_refunds_need_approval,
        "corsOrigins": m.cors_origins,
    })
}

pub async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let config = args.common.config()?;
    let zone = args.timezone.as_deref().map(parse_zone).transpose()?;
    let schedule = match args.notify_schedule_s.as_deref() {
        None => None,
        Some("default") => Some(None),
        Some(text) => Some(Some(parse_schedule(text).with_context(|| {
            format!(
                "--notify-schedule-s {text:?} is not a schedule such as \"0,30,60\" or \"default\""
            )
        })?)),
    };
    let name = args
        .name
        .as_deref()
        .map(|n| {
            tillgate_core::credentials::display_name(n).map_err(|e| anyhow::anyhow!("--name: {e}"))
        })
        .transpose()?;
    if args.fee_bps.is_some() || args.fee_fixed.is_some() {
        tillgate_core::books::FeePlan::new(args.fee_bps.unwrap_or(0), args.fee_fixed.unwrap_or(0))
            .map_err(|e| anyhow::anyhow!("{e} (--fee-bps, --fee-fixed)"))?;
    }
    let store =
        tillgate_server::open_existing_store(&config.database_url, config.database_max_connections)
            .await?;
    tillgate_server::keys::check_given_key(&config, store.clone()).await?;
    let updated = async {
        let Some(merchant) = store.merchant(&args.merchant_no).await? else {
            bail!("there is no merchant {}", args.merchant_no);
        };
        if let Some(zone) = &zone {
            store.set_zone(merchant.id, zone).await?;
        }
        if let Some(name) = name {
            store.set_display_name(merchant.id, name).await?;
        }
        if args.refund_authority.is_some()
            || args.approval_threshold_minor.is_some()
            || args.api_refunds_need_approval.is_some()
        {
            let authority = match args.refund_authority.as_deref() {
                Some(a) => tillgate_core::console::RefundAuthority::parse(a)
                    .context("--refund-authority is immediate, approval or disabled")?,
                None => merchant.refund_authority,
            };
            let threshold = match args.approval_threshold_minor.as_deref() {
                None => merchant.approval_threshold_minor,
                Some("none") => None,
                Some(t) => Some(
                    t.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .context("--approval-threshold-minor is an amount in minor units (0 or more) or \"none\"")?,
                ),
            };
            let api = args
                .api_refunds_need_approval
                .unwrap_or(merchant.api_refunds_need_approval);
            store
                .set_refund_authority(merchant.id, authority, threshold, api)
                .await?;
        }
        if let Some(schedule) = &schedule {
            let text = schedule.as_ref().map(|s| s.to_text());
            store
                .set_notify_schedule(merchant.id, text.as_deref())
                .await?;
        }
        if let Some(policy) = args.require_refund_reference {
            let required = match policy {
                Policy::True => Some(true),
                Policy::False => Some(false),
                Policy::Default => None,
            };
            store
                .set_refund_reference_required(merchant.id, required)
                .await?;
        }
        if args.fee_bps.is_some() || args.fee_fixed.is_some() {
            let now = store.fee_plan(merchant.id).await?.unwrap_or_default();
            let plan = tillgate_core::books::FeePlan::new(
                args.fee_bps.unwrap_or(now.bps),
                args.fee_fixed.unwrap_or(now.fixed_minor),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            store.set_fee_plan(merchant.id, Some(plan)).await?;
        }
        let plan = store.fee_plan(merchant.id).await?.unwrap_or_default();
        let merchant = store
            .merchant_by_id(merchant.id)
            .await?
            .context("the merchant vanished while it was changed")?;
        let mut shown = merchant_json(&merchant);
        shown["feePlan"] = serde_json::json!({ "bps": plan.bps, "fixedMinor": plan.fixed_minor });
        Ok(shown)
    }
    .await;
    store.close().await;
    emit_json(&updated?)
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("credential")
        .required(true)
        .args(["store_no", "app_id", "tid"])
))]
pub struct RotateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The merchant whose credential is rotated.
    #[arg(long)]
    pub merchant_no: String,
    /// Rotate this store's Pockyt token.
    #[arg(long)]
    pub store_no: Option<String>,
    /// Rotate this unified app's secret.
    #[arg(long)]
    pub app_id: Option<String>,
    /// Rotate this terminal's (YabandPay user's) secret.
    #[arg(long)]
    pub tid: Option<String>,
    /// How long requests signed with the old secret are still accepted (0: refused at once).
    #[arg(long, default_value_t = 60)]
    pub grace_minutes: u32,
}

/// `tillgate merchant rotate`: a new secret in force at once, the old one accepted for the
/// grace period; the new one is printed once.
pub async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    use tillgate_core::CredentialKind;
    let config = args.common.config()?;
    let (kind, key) = match (&args.store_no, &args.app_id, &args.tid) {
        (Some(k), _, _) => (CredentialKind::Store, k.clone()),
        (_, Some(k), _) => (CredentialKind::App, k.clone()),
        (_, _, Some(k)) => (CredentialKind::Terminal, k.clone()),
        _ => bail!("name the credential: --store-no, --app-id or --tid"),
    };
    let grace = chrono::Duration::minutes(i64::from(args.grace_minutes));
    let store =
        tillgate_server::open_existing_store(&config.database_url, config.database_max_connections)
            .await?;
    let credentials = tillgate_server::keys::open_credentials(&config, store.clone()).await;
    let done = async {
        let credentials = credentials?;
        let Some(merchant) = store.merchant(&args.merchant_no).await? else {
            bail!("there is no merchant {}", args.merchant_no);
        };
        let secret = credentials
            .rotate(kind, &merchant, &key, grace)
            .await
            .map_err(|e| match e {
                tillgate_core::credentials::CredentialError::Unknown => anyhow::anyhow!(
                    "merchant {} has no {} {key}",
                    args.merchant_no,
                    kind.as_str()
                ),
                other => other.into(),
            })?;
        anyhow::Ok((secret, credentials.now() + grace))
    }
    .await;
    store.close().await;
    let (secret, until) = done?;
    emit_json(&serde_json::json!({
        "merchantNo": args.merchant_no,
        "kind": kind.as_str(),
        "key": key,
        "secret": secret.expose(),
        "previousAcceptedUntil": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}
