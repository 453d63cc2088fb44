//! Sandbox mode: the sample merchant of the seeds and public docs, sample transactions the
//! seeds' own requests refer to, and the control endpoint through which a developer plays the
//! wallet side.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tillgate_core::service::{Lifecycle, LifecycleError};
use tillgate_core::store::{Conflict, Inserted, Rejection, Writes};
use tillgate_core::{NewPayment, Secret, StoreError};
use tillgate_domain::{ChannelOutcome, Currency, MerchantZone, Money};

/// The sandbox merchant of seed 000 and the public docs.
pub const MERCHANT_NO: &str = "200043";
/// (store, token): seed 000's JavaScript sample, and the docs' token that seed 002's curl uses.
pub const STORES: [(&str, &str); 2] = [
    ("303660", "359c05eb811c7c8576f4a8a277dc6f6b"),
    ("300014", "5cbfb079f15b150122261c8537086d77a"),
];
/// The unified-API sandbox merchant and app of seed 004, with the secret of the public
/// signature vectors.
pub const UNIFIED_MCH_NO: &str = "M1621873433953";
pub const UNIFIED_APP_ID: &str = "60cc09bce4b0f1c0b83761c9";
pub const UNIFIED_APP_SECRET: &str = "offline-test-key";
/// The YabandPay sandbox terminal of seed 003, and the docs' user 016683; both sign with the
/// secret key that reproduces the docs' examples.
pub const YABANDPAY_TIDS: [&str; 2] = ["T125119061", "016683"];
pub const YABANDPAY_SECRET: &str = "62184c09df1aeb63239e07079875be81";

/// Paid transactions the seeds refund: (store, transactionNo, reference, amount in cents).
pub const FIXTURES: [(&str, &str, &str, i64); 2] = [
    ("300014", "297553638301777927", "test20200101306", 1),
    (
        "303660",
        "316129873376769782",
        "seed-javascript-sample",
        10_000,
    ),
];

/// Creates the sandbox merchant on an empty database and prints its credentials.
pub async fn bootstrap(app: &Lifecycle, zone: MerchantZone) -> anyhow::Result<()> {
    let store = app.store();
    let credentials = app.credentials();
    let fresh = store.merchant(MERCHANT_NO).await?.is_none();
    let merchant = credentials.create_merchant(MERCHANT_NO, zone, true).await?;
    for (store_no, token) in STORES {
        credentials
            .add_store(&merchant, store_no, &Secret::new(token.to_owned()))
            .await?;
    }
    if fresh {
        let usd = Currency::from_code("USD").ok_or_else(|| anyhow::anyhow!("USD is unknown"))?;
        for (store_no, transaction_no, reference, cents) in FIXTURES {
            let amount = Money::from_minor(cents, usd)
                .ok_or_else(|| anyhow::anyhow!("bad fixture amount"))?;
            let now = app.now();
            let inserted = match store
                .insert_payment(NewPayment {
                    transaction_no: transaction_no.into(),
                    merchant_id: merchant.id,
                    merchant_no: MERCHANT_NO.into(),
                    store_no: store_no.into(),
                    reference: reference.into(),
                    amount,
                    settle_currency: usd,
                    description: Some("sandbox sample transaction of the seeds".into()),
                    notify_url: None,
                    dialect: tillgate_core::Dialect::Pockyt,
                    extra: None,
                    fingerprint: tillgate_core::books::SANDBOX_FIXTURE.into(),
                    created_at: now,
                    expires_at: now,
                })
                .await
            {
                Ok(inserted) => inserted,
                // Another node starting on the same database created it first.
                Err(StoreError::Conflict(Conflict::UniqueKey)) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Inserted::Inserted(p) = inserted {
                store
                    .mutate(
                        p.id,
                        Box::new(move |p| {
                            p.payment.submit().map_err(Rejection::Pay)?;
                            p.payment.settle_submission(ChannelOutcome::Approved, now);
                            Ok(Writes::at(now).event("sandbox.fixture", "paid".into()))
                        }),
                    )
                    .await?;
            }
        }
    }
    let unified = credentials
        .create_merchant(UNIFIED_MCH_NO, zone, true)
        .await?;
    credentials
        .add_app(
            &unified,
            UNIFIED_APP_ID,
            &Secret::new(UNIFIED_APP_SECRET.to_owned()),
        )
        .await?;
    for tid in YABANDPAY_TIDS {
        credentials
            .add_terminal(&merchant, tid, &Secret::new(YABANDPAY_SECRET.to_owned()))
            .await?;
    }
    println!(
        "sandbox merchant {MERCHANT_NO} (time zone {}):",
        merchant.zone.name()
    );
    for (store_no, token) in STORES {
        println!("  pockyt: merchantNo={MERCHANT_NO} storeNo={store_no} token={token}");
    }
    for tid in YABANDPAY_TIDS {
        println!("  yabandpay / terminal: user=tid={tid} secret={YABANDPAY_SECRET}");
    }
    for (_, transaction_no, _, cents) in FIXTURES {
        println!("  paid sample transaction {transaction_no} ({cents} cents)");
    }
    println!(
        "sandbox merchant {UNIFIED_MCH_NO}:\n  unified: mchNo={UNIFIED_MCH_NO} appId={UNIFIED_APP_ID} appSecret={UNIFIED_APP_SECRET}"
    );
    for (login, password, role) in CONSOLE_USERS {
        if store.user_by_login(login).await?.is_none() {
            let hash = crate::console::hash_password(password).map_err(anyhow::Error::msg)?;
            let user = tillgate_core::console::NewUser {
                login: login.to_owned(),
                password_hash: hash,
                role,
                merchant_id: role.is_merchants().then_some(merchant.id),
                stores: Vec::new(),
                created_at: app.now(),
            };
            match store.insert_user(user).await {
                // Another node starting on the same database created it first.
                Ok(_) | Err(StoreError::Conflict(Conflict::UniqueKey)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        println!(
            "sandbox console user (/console): login={login} password={password} role={}",
            role.as_str()
        );
    }
    Ok(())
}

/// The sandbox's console users, with public passwords like every sandbox credential: an
/// operator, and a cashier of merchant 200043.
const CONSOLE_USERS: [(&str, &str, tillgate_core::console::Role); 2] = [
    (
        "operator",
        "sandbox-operator",
        tillgate_core::console::Role::Operator,
    ),
    (
        "cashier",
        "sandbox-cashier",
        tillgate_core::console::Role::MerchantStaff,
    ),
];

#[derive(Deserialize)]
struct Settle {
    outcome: String,
}

/// `POST /sandbox/v1/payments/{transactionNo}/settle` with `{"outcome":"paid"|"declined"}`:
/// the wallet's late answer to a pending payment (or the customer paying a QR code).
/// `POST /sandbox/v1/cancels/{cancelNo}/settle` with `{"outcome":"succeeded"|"failed"}`: the
/// wallet's late answer to a cancel in progress.
/// `POST /sandbox/v1/payments/{transactionNo}/cancel/settle` with the same body: the same for
/// the cancel in progress of that transaction (a Pockyt or YabandPay cancel answers no cancel
/// number).
/// `POST /sandbox/v1/payments/{transactionNo}/age` with `{"hours": N}`: moves the payment's
/// creation and payment times into the past, to try next-day rules.
pub fn routes(app: Arc<Lifecycle>) -> Router {
    Router::new()
        .route("/sandbox/v1/payments/{transaction_no}/settle", post(settle))
        .route("/sandbox/v1/payments/{transaction_no}/age", post(age))
        .route(
            "/sandbox/v1/cancels/{cancel_no}/settle",
            post(settle_cancel),
        )
        .route(
            "/sandbox/v1/payments/{transaction_no}/cancel/settle",
            post(settle_cancel_of_payment),
        )
        .with_state(app)
}

#[derive(Deserialize)]
struct Age {
    hours: i64,
}

async fn age(
    State(app): State<Arc<Lifecycle>>,
    Path(transaction_no): Path<String>,
    body: Result<Json<Age>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(Age { hours })) = body else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON {\"hours\": N}");
    };
    if !(1..=24 * 366).contains(&hours) {
        return error(StatusCode::BAD_REQUEST, "hours must be from 1 to 8784");
    }
    let no = transaction_no.strip_prefix('P').unwrap_or(&transaction_no);
    match app
        .sandbox_age_payment(no, chrono::Duration::hours(hours))
        .await
    {
        Ok(p) => Json(json!({
            "transactionNo": p.transaction_no,
            "createdAt": p.created_at.to_rfc3339(),
            "paidAt": p.payment.paid_at().map(|t| t.to_rfc3339()),
        }))
        .into_response(),
        Err(LifecycleError::NotFound) => error(StatusCode::NOT_FOUND, "no such transaction"),
        Err(e) => {
            tracing::warn!(error = %e, "sandbox age failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later")
        }
    }
}

/// The cancel in progress of a transaction, settled as [`settle_cancel`] settles it.
async fn settle_cancel_of_payment(
    State(app): State<Arc<Lifecycle>>,
    Path(transaction_no): Path<String>,
    body: Result<Json<Settle>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let no = transaction_no.strip_prefix('P').unwrap_or(&transaction_no);
    let store = app.store();
    let payment = match store.payment_by_transaction_no(no).await {
        Ok(Some(p)) => p,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such transaction"),
        Err(e) => {
            tracing::warn!(error = %e, "sandbox cancel settle failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later");
        }
    };
    let in_progress = match store.cancels_of(payment.id).await {
        Ok(cancels) => cancels
            .into_iter()
            .find(|c| c.state == tillgate_domain::CancelState::InProgress),
        Err(e) => {
            tracing::warn!(error = %e, "sandbox cancel settle failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later");
        }
    };
    match in_progress {
        Some(cancel) => settle_cancel(State(app), Path(cancel.cancel_no), body).await,
        None => error(
            StatusCode::CONFLICT,
            "the transaction has no cancel in progress",
        ),
    }
}

async fn settle_cancel(
    State(app): State<Arc<Lifecycle>>,
    Path(cancel_no): Path<String>,
    body: Result<Json<Settle>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"outcome\": \"succeeded\" | \"failed\"}",
        );
    };
    let outcome = match body.outcome.as_str() {
        "succeeded" => ChannelOutcome::Approved,
        "failed" => ChannelOutcome::Declined,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "outcome must be succeeded or failed",
            )
        }
    };
    // Cancel numbers are shown with a "C" prefix by the unified API.
    let no = cancel_no.strip_prefix('C').unwrap_or(&cancel_no);
    match app.wallet_settles_cancel(no, outcome).await {
        Ok((p, c)) => Json(json!({
            "cancelNo": c.cancel_no,
            "cancelState": c.state.code(),
            "transactionNo": p.transaction_no,
            "state": p.payment.state().as_str(),
        }))
        .into_response(),
        Err(LifecycleError::NotFound) => error(StatusCode::NOT_FOUND, "no such cancel"),
        Err(LifecycleError::Rejected(_)) => {
            error(StatusCode::CONFLICT, "the cancel is not in progress")
        }
        Err(e) => {
            tracing::warn!(error = %e, "sandbox cancel settle failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later")
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn settle(
    State(app): State<Arc<Lifecycle>>,
    Path(transaction_no): Path<String>,
    body: Result<Json<Settle>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {\"outcome\": \"paid\" | \"declined\"}",
        );
    };
    let outcome = match body.outcome.as_str() {
        "paid" => ChannelOutcome::Approved,
        "declined" => ChannelOutcome::Declined,
        _ => return error(StatusCode::BAD_REQUEST, "outcome must be paid or declined"),
    };
    // Transaction numbers are shown with a "P" prefix by the unified API.
    let no = transaction_no.strip_prefix('P').unwrap_or(&transaction_no);
    match app.wallet_settles_payment(no, outcome).await {
        Ok(p) => Json(json!({
            "transactionNo": p.transaction_no,
            "state": p.payment.state().as_str(),
        }))
        .into_response(),
        Err(LifecycleError::NotFound) => error(StatusCode::NOT_FOUND, "no such transaction"),
        Err(LifecycleError::Rejected(_)) => {
            error(StatusCode::CONFLICT, "the transaction is not pending")
        }
        Err(e) => {
            tracing::warn!(error = %e, "sandbox settle failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "system error; retry later")
        }
    }
}
