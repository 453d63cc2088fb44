//! `tillgate user create|list|disable|enable|reset-password`: the console's users.
//!
//! A new user, or a reset password, gets a random password printed once (or the one read from
//! standard input with `--password-stdin`); only its argon2id hash is stored. Disabling a user
//! or resetting its password ends its sessions. Each change is written to the audit log.

use crate::output::{emit, emit_json, table, Column, Format};
use crate::Common;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::io::BufRead;
use tillgate_core::console::{NewAudit, NewUser, Role, UserRecord};
use tillgate_core::{Conflict, Store, StoreError};
use tillgate_domain::Clock;
use tillgate_server::console::{check_new_password, hash_password};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a console user and print its password (once).
    Create(CreateArgs),
    /// List the console's users.
    List {
        #[command(flatten)]
        common: Common,
        /// json or table.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// Stop a user from signing in, and end its sessions.
    Disable(LoginArgs),
    /// Let a disabled user sign in again.
    Enable(LoginArgs),
    /// Give a user a new password (printed once), ending its sessions and its lock.
    ResetPassword(PasswordArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Every merchant: sees and acts on all of them.
    Operator,
    /// One merchant (--merchant-no): sees and acts on its transactions.
    MerchantAdmin,
    /// One merchant (--merchant-no): sees its transactions; acts as the merchant's policy allows.
    MerchantStaff,
    /// Every merchant, read only.
    Auditor,
}

impl RoleArg {
    fn role(self) -> Role {
        match self {
            RoleArg::Operator => Role::Operator,
            RoleArg::MerchantAdmin => Role::MerchantAdmin,
            RoleArg::MerchantStaff => Role::MerchantStaff,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The name the user signs in with (letters, digits, . _ @ -; at most 64).
    #[arg(long)]
    pub login: String,
    /// What the user may see and do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The merchant of a merchant-admin or merchant-staff user.
    #[arg(long)]
    pub merchant_no: Option<String>,
    /// Confine a merchant role to this store of its merchant (repeatable; default: all).
    #[arg(long = "store")]
    pub stores: Vec<String>,
    /// Read the password (at least 12 characters) from the first line of standard input
    /// instead of generating one.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub common: Common,
    /// The user's login.
    #[arg(long)]
    pub login: String,
}

#[derive(Args)]
pub struct PasswordArgs {
    #[command(flatten)]
    pub common: Common,
    /// The user's login.
    #[arg(long)]
    pub login: String,
    /// Read the new password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

fn check_login(login: &str) -> anyhow::Result<()> {
    if login.is_empty()
        || login.len() > 64
        || !login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        bail!("--login must be 1 to 64 letters, digits, '.', '_', '@' or '-'");
    }
    Ok(())
}

/// The password to set: read from standard input, or generated (and then printed).
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        check_new_password(&line).map_err(anyhow::Error::msg)?;
        Ok((line, false))
    } else {
        let key = tillgate_core::SecretBox::generate_key_hex();
        Ok((key.expose()[..24].to_owned(), true))
    }
}

async fn open(common: &Common) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let config = common.config()?;
    let store =
        tillgate_server::open_existing_store(&config.database_url, config.database_max_connections)
            .await?;
    tillgate_server::keys::check_given_key(&config, store.clone()).await?;
    Ok(store)
}

async fn audit(store: &dyn Store, user: &UserRecord, action: &str) -> Result<(), StoreError> {
    store
        .audit(NewAudit {
            at: tillgate_domain::SystemClock.now(),
            user_id: Some(user.id),
            login: "command line".into(),
            action: action.into(),
            transaction_no: None,
            detail: format!("user {}", user.login),
            address: None,
        })
        .await
}

fn user_json(u: &UserRecord) -> serde_json::Value {
    serde_json::json!({
        "login": u.login,
        "role": u.role.as_str(),
        "merchantNo": u.merchant_no,
        "stores": u.stores,
        "disabled": u.disabled,
        "locked": u.locked_until.is_some_and(|t| t > tillgate_domain::SystemClock.now()),
        "createdAt": u.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

async fn find(store: &dyn Store, login: &str) -> anyhow::Result<UserRecord> {
    store
        .user_by_login(login)
        .await?
        .with_context(|| format!("there is no console user {login}"))
}

pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create(args) => create(args).await,
        UserCommand::List { common, format } => {
            let store = open(&common).await?;
            let users = store.users().await;
            store.close().await;
            let rows: Vec<serde_json::Value> = users?.iter().map(user_json).collect();
            match format {
                Format::Json => emit_json(&serde_json::Value::Array(rows)),
                Format::Table => emit(&table(
                    &rows,
                    &[
                        Column {
                            heading: "LOGIN",
                            cell: |r| r["login"].as_str().unwrap_or("").into(),
                        },
                        Column {
                            heading: "ROLE",
                            cell: |r| r["role"].as_str().unwrap_or("").into(),
                        },
                        Column {
                            heading: "MERCHANT",
                            cell: |r| r["merchantNo"].as_str().unwrap_or("-").into(),
                        },
                        Column {
                            heading: "STATUS",
                            cell: |r| {
                                if r["disabled"] == true {
                                    "disabled".into()
                                } else if r["locked"] == true {
                                    "locked".into()
                                } else {
                                    "active".into()
                                }
                            },
                        },
                    ],
                    "no console users",
                )),
            }
        }
        UserCommand::Disable(args) => set_disabled(args, true).await,
        UserCommand::Enable(args) => set_disabled(args, false).await,
        UserCommand::ResetPassword(args) => {
            let (password, generated) = password(args.password_stdin)?;
            let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            let store = open(&args.common).await?;
            let done = async {
                let user = find(store.as_ref(), &args.login).await?;
                store.set_password(user.id, &hash).await?;
                store.delete_sessions_of(user.id).await?;
                audit(store.as_ref(), &user, "password reset").await?;
                anyhow::Ok(user)
            }
            .await;
            store.close().await;
            let mut out = user_json(&done?);
            if generated {
                out["password"] = password.into();
            }
            emit_json(&out)
        }
    }
}

async fn set_disabled(args: LoginArgs, disabled: bool) -> anyhow::Result<()> {
    let store = open(&args.common).await?;
    let done = async {
        let user = find(store.as_ref(), &args.login).await?;
        store.set_disabled(user.id, disabled).await?;
        if disabled {
            store.delete_sessions_of(user.id).await?;
        }
        let action = if disabled {
            "user disabled"
        } else {
            "user enabled"
        };
        audit(store.as_ref(), &user, action).await?;
        anyhow::Ok(find(store.as_ref(), &args.login).await?)
    }
    .await;
    store.close().await;
    emit_json(&user_json(&done?))
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    check_login(&args.login)?;
    let role = args.role.role();
    match (role.is_merchants(), &args.merchant_no) {
        (true, None) => bail!(
            "a {} belongs to one merchant: give --merchant-no",
            role.as_str()
        ),
        (false, Some(_)) => bail!(
            "an {} sees every merchant: leave out --merchant-no",
            role.as_str()
        ),
        _ => {}
    }
    let (password, generated) = password(args.password_stdin)?;
    let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    let store = open(&args.common).await?;
    let done = async {
        let merchant_id = match &args.merchant_no {
            Some(no) => Some(
                store
                    .merchant(no)
                    .await?
                    .with_context(|| format!("there is no merchant {no}"))?
                    .id,
            ),
            None => None,
        };
        if let Some(no) = &args.merchant_no {
            for store_no in &args.stores {
                if store.store_row(no, store_no).await?.is_none() {
                    bail!("merchant {no} has no store {store_no}");
                }
            }
        }
        let created = store
            .insert_user(NewUser {
                login: args.login.clone(),
                password_hash: hash,
                role,
                merchant_id,
                stores: args.stores.clone(),
                created_at: tillgate_domain::SystemClock.now(),
            })
            .await;
        match created {
            Ok(_) => {}
            Err(StoreError::Conflict(Conflict::UniqueKey)) => bail!(
                "there is already a console user {}; `tillgate user reset-password --login {}` \
                 gives it a new password",
                args.login,
                args.login
            ),
            Err(e) => return Err(e.into()),
        }
        let user = find(store.as_ref(), &args.login).await?;
        audit(store.as_ref(), &user, "user created").await?;
        anyhow::Ok(user)
    }
    .await;
    store.close().await;
    let mut out = user_json(&done?);
    if generated {
        out["password"] = password.into();
    }
    emit_json(&out)
}
