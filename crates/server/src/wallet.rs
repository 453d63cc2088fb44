//! The HTTP wallet's callbacks: `POST /wallet/v1/callbacks`, signed with the channel key.
//!
//! The signature is checked before anything is read: it must be made with the key of one of
//! the configured wallets. A wallet's key then counts only for the merchants that wallet
//! serves (those configured with it as their own, or, for the default wallet, those without a
//! wallet of their own): a callback about another merchant's transaction is answered as if
//! the transaction did not exist. A callback is applied only when it names an operation the
//! gateway knows, for the same amount and currency; anything else is refused (4xx, so the
//! wallet stops sending it) and logged. A callback for something already settled
//! the same way is acknowledged and changes nothing; one that contradicts what was recorded is
//! logged as an error for an operator.

use crate::config::{ChannelConfig, Config};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tillgate_core::service::{Lifecycle, LifecycleError};
use tillgate_core::{Rejection, Secret};
use tillgate_domain::{CancelState, ChannelOutcome, Money, PaymentState, RefundState};
use tillgate_wallet::protocol::{self, Callback, CallbackKind, Outcome};

struct Callbacks {
    app: Arc<Lifecycle>,
    /// The key of the default wallet, when it is an HTTP wallet.
    default_key: Option<Secret<Vec<u8>>>,
    /// Merchants with a wallet of their own (by merchant number): its key, or none when that
    /// wallet is the sandbox, which never calls back.
    own_keys: HashMap<String, Option<Secret<Vec<u8>>>>,
}

impl Callbacks {
    /// Every HTTP wallet's key.
    fn keys(&self) -> impl Iterator<Item = &Secret<Vec<u8>>> {
        self.default_key
            .iter()
            .chain(self.own_keys.values().flatten())
    }

    /// The key of the wallet that moves `merchant_no`'s money.
    fn key_of(&self, merchant_no: &str) -> Option<&Secret<Vec<u8>>> {
        match self.own_keys.get(merchant_no) {
            Some(own) => own.as_ref(),
            None => self.default_key.as_ref(),
        }
    }
}

/// The key of an HTTP wallet's configuration; none for the sandbox.
fn key_of(channel: &ChannelConfig) -> Option<Secret<Vec<u8>>> {
    if channel.wallet == "sandbox" {
        return None;
    }
    protocol::parse_key_hex(channel.key.as_ref()?.expose()).ok()
}

/// The callback route, when the gateway talks to an HTTP wallet.
pub fn routes(app: Arc<Lifecycle>, config: &Config) -> Option<Router> {
    let state = Callbacks {
        app,
        default_key: key_of(&config.channel),
        own_keys: config
            .merchant_channels
            .iter()
            .map(|(merchant_no, channel)| (merchant_no.clone(), key_of(channel)))
            .collect(),
    };
    // Without an HTTP wallet nothing calls back.
    state.keys().next()?;
    let state = Arc::new(state);
    Some(
        Router::new()
            .route("/wallet/v1/callbacks", post(callback))
            .with_state(state),
    )
}

fn answer(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

fn refuse(status: StatusCode, cb: &Callback, why: &str) -> Response {
    tracing::warn!(transaction_no = %cb.transaction_no, kind = ?cb.kind, %why, "wallet callback refused");
    answer(status, "refused", why)
}

async fn callback(State(s): State<Arc<Callbacks>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = s.app.now().timestamp();
    let mut verified = Err(None);
    for key in s.keys() {
        match protocol::verify_headers(key.expose(), &headers, &body, now) {
            Ok(_) => {
                verified = Ok(());
                break;
            }
            Err(e) => verified = Err(Some(e)),
        }
    }
    if let Err(e) = verified {
        let why = e.map_or_else(|| "no key".to_owned(), |e| e.to_string());
        tracing::warn!(error = %why, "wallet callback with a bad signature");
        return answer(StatusCode::UNAUTHORIZED, "bad_signature", &why);
    }
    let cb: Callback = match serde_json::from_slice(&body) {
        Ok(cb) => cb,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    let money = match cb.check() {
        Ok(m) => m,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    let outcome = match cb.outcome {
        Outcome::Approved => ChannelOutcome::Approved,
        Outcome::Declined => ChannelOutcome::Declined,
        Outcome::Pending => {
            return answer(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a callback reports a decision",
            )
        }
    };
    let signed_by = |merchant_no: &str| {
        s.key_of(merchant_no)
            .is_some_and(|key| protocol::verify_headers(key.expose(), &headers, &body, now).is_ok())
    };
    match apply(&s.app, &cb, money, outcome, &signed_by).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "wallet callback could not be applied now");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "retry later",
            )
        }
    }
}

/// Keeps a wallet answer that contradicts what was recorded in the transaction's timeline, so
/// an operator finds it there and not only in a log.
async fn contradiction(app: &Lifecycle, payment_id: i64, cb: &Callback) {
    let detail = format!(
        "{:?} {} {:?} {} {}",
        cb.kind,
        cb.refund_no.as_deref().unwrap_or(""),
        cb.outcome,
        cb.amount_minor,
        cb.currency
    );
    if let Err(e) = app
        .store()
        .append_event(payment_id, app.now(), "wallet.contradiction", &detail)
        .await
    {
        tracing::error!(error = %e, "cannot record a wallet contradiction");
    }
}

/// Applies a verified callback; `signed_by(merchant_no)` says whether it was signed with the
/// key of the wallet serving that merchant.
async fn apply(
    app: &Lifecycle,
    cb: &Callback,
    money: Money,
    outcome: ChannelOutcome,
    signed_by: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Response, LifecycleError> {
    let store = app.store();
    let Some(payment) = store.payment_by_transaction_no(&cb.transaction_no).await? else {
        return Ok(refuse(StatusCode::NOT_FOUND, cb, "no such transaction"));
    };
    if !signed_by(&payment.merchant_no) {
        // Another wallet's merchant: the same answer as for an unknown transaction, so a
        // wallet learns nothing about the transactions of merchants it does not serve.
        tracing::warn!(
            transaction_no = %cb.transaction_no,
            merchant_no = %payment.merchant_no,
            "wallet callback signed with the key of a wallet that does not serve this merchant"
        );
        return Ok(answer(
            StatusCode::NOT_FOUND,
            "refused",
            "no such transaction",
        ));
    }
    let ok = || Ok(answer(StatusCode::OK, "", "applied"));
    match cb.kind {
        CallbackKind::Payment => {
            if money != payment.payment.amount() {
                return Ok(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    cb,
                    "amount or currency does not match the payment",
                ));
            }
            match app
                .wallet_settles_payment(&cb.transaction_no, outcome)
                .await
            {
                Ok(_) => ok(),
                Err(LifecycleError::Rejected(Rejection::Replay)) => {
                    let agrees = match outcome {
                        ChannelOutcome::Approved => payment.payment.paid_at().is_some(),
                        _ => payment.payment.state() == PaymentState::Failed,
                    };
                    if !agrees {
                        tracing::error!(transaction_no = %cb.transaction_no, ?outcome, state = payment.payment.state().as_str(), "the wallet contradicts the recorded payment");
                        contradiction(app, payment.id, cb).await;
                    }
                    ok()
                }
                Err(e) => Err(e),
            }
        }
        CallbackKind::Refund => {
            let refund_no = cb.refund_no.clone().unwrap_or_default();
            let refund = store
                .refund_by_no(payment.merchant_id, &refund_no)
                .await?
                .filter(|r| r.payment_id == payment.id);
            let Some(refund) = refund else {
                return Ok(refuse(
                    StatusCode::NOT_FOUND,
                    cb,
                    "no such refund of this transaction",
                ));
            };
            if money != refund.amount {
                return Ok(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    cb,
                    "amount or currency does not match the refund",
                ));
            }
            let (_, now) = app
                .wallet_settles_refund(&cb.transaction_no, &refund_no, outcome)
                .await?;
            if now.state != RefundState::after(outcome) {
                tracing::error!(%refund_no, ?outcome, state = now.state.code(), "the wallet contradicts the recorded refund");
                contradiction(app, payment.id, cb).await;
            }
            ok()
        }
        CallbackKind::Cancel => {
            if money != payment.payment.amount() {
                return Ok(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    cb,
                    "amount or currency does not match the payment",
                ));
            }
            let cancels = store.cancels_of(payment.id).await?;
            let named = cb
                .cancel_no
                .as_ref()
                .and_then(|no| cancels.iter().find(|c| &c.cancel_no == no));
            let target = named.or_else(|| {
                cancels
                    .iter()
                    .rev()
                    .find(|c| c.state == CancelState::InProgress)
            });
            let Some(cancel) = target else {
                if cancels
                    .iter()
                    .any(|c| c.state == CancelState::after(outcome))
                {
                    return ok();
                }
                return Ok(refuse(
                    StatusCode::NOT_FOUND,
                    cb,
                    "no cancel of this transaction",
                ));
            };
            match app.wallet_settles_cancel(&cancel.cancel_no, outcome).await {
                Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => ok(),
                Err(e) => Err(e),
            }
        }
    }
}
