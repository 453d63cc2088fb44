//! The YabandPay answer `{"status","code","data","message"}`, its codes, and the one place
//! where every lifecycle error becomes a YabandPay answer.
//!
//! Seed 003 gives the codes of `v3.POSReversal` (−3001, −3002, −4111…−4117); the same code
//! means the same thing on every method. The other failures have tillgate's own codes, chosen
//! outside the seed's (−4113 is left alone: the seed skips it, so YabandPay may use it).
//! Messages start with the seed's text where it has one and then say exactly what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};
use tillgate_core::service::LifecycleError;
use tillgate_core::{Dialect, Rejection, StoreError};
use tillgate_domain::{CancelRejected, PayRejected, RefundRejected};

/// Every code the dialect answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 200: the request was processed (a declined payment is a processed request).
    Success,
    /// −3001 (seed 003): a required field is missing.
    MissingField,
    /// −3002 (seed 003): the terminal used this `request_id` before.
    DuplicateRequestId,
    /// −3003: `sign` does not match the request and the user's secret.
    BadSign,
    /// −3004: `time` is outside the freshness window.
    StaleTime,
    /// −3005: no user (terminal) with that id.
    UnknownUser,
    /// −3006: no such `method`.
    UnknownMethod,
    /// −3007: the body or a field is malformed (JSON, amount, currency, length, URL).
    Malformed,
    /// −3008: a valid value the gateway does not support (authorisation, tips).
    Unsupported,
    /// −3009: `order_id` or `m_refund_id` was used before with other parameters.
    KeyReused,
    /// −3010: `data.tid` is not the `user` that signed the request.
    TidMismatch,
    /// −4111 (seed 003): past the cancel window (00:30 the next day, CET).
    CancelWindow,
    /// −4112 (seed 003): the transaction has refunds ("cleared"), so it cannot be cancelled.
    Cleared,
    /// −4114 (seed 003): no such trade for this user.
    TradeNotFound,
    /// −4115 (seed 003): the transaction cannot be cancelled (not paid, declined, the terminal
    /// refused).
    CannotCancel,
    /// −4116 (seed 003): the transaction is cancelled.
    AlreadyCancelled,
    /// −4117 (seed 003): the transaction expired unpaid.
    Expired,
    /// −4118: the refund is more than what is left to refund.
    ExceedsRefundable,
    /// −4119: the transaction's state does not allow the request.
    StateNotAllowed,
    /// −4120: a request on this transaction is still in progress; retry later.
    InProgress,
    /// −4121: `refund_currency` is not the order's currency.
    CurrencyMismatch,
    /// −4122: no such refund.
    RefundNotFound,
    /// −5000: system error; nothing was changed; retry.
    SystemError,
    /// −5001: the terminal is not connected.
    TerminalOffline,
    /// −5002: too many requests (of this merchant, or from this address); nothing was
    /// changed; retry later.
    Busy,
}

impl Code {
    pub const ALL: [Code; 25] = [
        Code::Success,
        Code::MissingField,
        Code::DuplicateRequestId,
        Code::BadSign,
        Code::StaleTime,
        Code::UnknownUser,
        Code::UnknownMethod,
        Code::Malformed,
        Code::Unsupported,
        Code::KeyReused,
        Code::TidMismatch,
        Code::CancelWindow,
        Code::Cleared,
        Code::TradeNotFound,
        Code::CannotCancel,
        Code::AlreadyCancelled,
        Code::Expired,
        Code::ExceedsRefundable,
        Code::StateNotAllowed,
        Code::InProgress,
        Code::CurrencyMismatch,
        Code::RefundNotFound,
        Code::SystemError,
        Code::TerminalOffline,
        Code::Busy,
    ];

    /// The code as the wire carries it (a string, as in seed 003's example).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "200",
            Code::MissingField => "-3001",
            Code::DuplicateRequestId => "-3002",
            Code::BadSign => "-3003",
            Code::StaleTime => "-3004",
            Code::UnknownUser => "-3005",
            Code::UnknownMethod => "-3006",
            Code::Malformed => "-3007",
            Code::Unsupported => "-3008",
            Code::KeyReused => "-3009",
            Code::TidMismatch => "-3010",
            Code::CancelWindow => "-4111",
            Code::Cleared => "-4112",
            Code::TradeNotFound => "-4114",
            Code::CannotCancel => "-4115",
            Code::AlreadyCancelled => "-4116",
            Code::Expired => "-4117",
            Code::ExceedsRefundable => "-4118",
            Code::StateNotAllowed => "-4119",
            Code::InProgress => "-4120",
            Code::CurrencyMismatch => "-4121",
            Code::RefundNotFound => "-4122",
            Code::SystemError => "-5000",
            Code::TerminalOffline => "-5001",
            Code::Busy => "-5002",
        }
    }

    /// The message every answer with this code starts with (seed 003's text for its codes).
    pub fn message(self) -> &'static str {
        match self {
            Code::Success => "",
            Code::MissingField => "Required field is missing",
            Code::DuplicateRequestId => "duplicate request_id",
            Code::BadSign => "sign does not match the request and the user's secret",
            Code::StaleTime => "time is outside the accepted window",
            Code::UnknownUser => "unknown user",
            Code::UnknownMethod => "unknown method",
            Code::Malformed => "malformed request",
            Code::Unsupported => "not supported",
            Code::KeyReused => "the key was already used with other parameters",
            Code::TidMismatch => "tid does not match user",
            Code::CancelWindow => "Exceed cancel window",
            Code::Cleared => "The transaction has been cleared cannot be cancelled",
            Code::TradeNotFound => "The trade_id does not exist",
            Code::CannotCancel => "The transaction cannot be cancelled",
            Code::AlreadyCancelled => "The transaction has been cancelled",
            Code::Expired => "The transaction has been Expired",
            Code::ExceedsRefundable => "refund_amount exceeds the refundable amount",
            Code::StateNotAllowed => "the transaction's state does not allow this request",
            Code::InProgress => "a request on this transaction is in progress; retry later",
            Code::CurrencyMismatch => "refund_currency differs from the order's currency",
            Code::RefundNotFound => "The refund_id does not exist",
            Code::SystemError => "system error; nothing was changed; retry later",
            Code::TerminalOffline => "the terminal is offline",
            Code::Busy => "too many requests; nothing was changed; retry later",
        }
    }
}

/// A failure answer: `{"status":false,"code":"-3001","data":{},"message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YabandError {
    pub code: Code,
    pub message: String,
    pub status: StatusCode,
}

impl YabandError {
    /// The code's message followed by what exactly was wrong.
    pub fn new(code: Code, detail: impl AsRef<str>) -> YabandError {
        let detail = detail.as_ref();
        let message = if detail.is_empty() {
            code.message().to_owned()
        } else {
            format!("{}: {detail}", code.message())
        };
        YabandError {
            code,
            message,
            status: StatusCode::OK,
        }
    }

    pub fn missing(field: &str) -> YabandError {
        YabandError::new(Code::MissingField, field)
    }

    pub fn malformed(detail: impl AsRef<str>) -> YabandError {
        YabandError::new(Code::Malformed, detail)
    }

    /// −5002 with HTTP 429: over a rate limit (of `whose` requests).
    pub fn busy(busy: tillgate_wire::Busy, whose: &str) -> YabandError {
        YabandError {
            status: StatusCode::TOO_MANY_REQUESTS,
            ..YabandError::new(
                Code::Busy,
                format!("{whose}; retry in {} s", busy.retry_after_secs()),
            )
        }
    }

    /// −5000 with a status that tells a client whether retrying may help.
    pub fn system(status: StatusCode) -> YabandError {
        YabandError {
            status,
            ..YabandError::new(Code::SystemError, "")
        }
    }
}

impl IntoResponse for YabandError {
    fn into_response(self) -> Response {
        tillgate_core::note::answer(Dialect::YabandPay, self.code.as_str());
        let body = json!({
            "status": false,
            "code": self.code.as_str(),
            "data": {},
            "message": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A success answer: `{"status":true,"code":"200","data":{…},"message":""}`.
pub fn success(data: Map<String, Json>) -> Response {
    tillgate_core::note::answer(Dialect::YabandPay, Code::Success.as_str());
    axum::Json(json!({
        "status": true,
        "code": Code::Success.as_str(),
        "data": data,
        "message": "",
    }))
    .into_response()
}

/// Which method failed: messages and a few codes depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A payment that adds a transaction (`v3.POS`, `v3.BarcodePayment`, `v3.QRcodePayment`).
    Pay,
    /// A cancel of any kind (`v3.POSReversal`, `v3.POSCancel`, `v3.CancelPayment`).
    Cancel,
    Refund,
    Query,
    RefundQuery,
}

/// Every lifecycle error as a YabandPay answer. Causes of system errors are logged, never sent.
pub fn from_lifecycle(op: Op, e: LifecycleError) -> YabandError {
    match e {
        LifecycleError::NotFound if op == Op::RefundQuery => YabandError::new(
            Code::RefundNotFound,
            "no refund of this merchant has that id",
        ),
        LifecycleError::NotFound => YabandError::new(
            Code::TradeNotFound,
            "no trade of this merchant has that trade_id",
        ),
        LifecycleError::KeyReused => YabandError::new(
            Code::KeyReused,
            match op {
                Op::Refund => "m_refund_id was used before for another refund",
                _ => "order_id was used before with other parameters (amount, currency, description, notify_url or method)",
            },
        ),
        LifecycleError::InProgress => YabandError::new(
            Code::InProgress,
            match op {
                Op::Refund => "a refund with this m_refund_id is still waiting for the wallet",
                _ => "the same request is still being processed",
            },
        ),
        LifecycleError::TerminalOffline => YabandError::new(
            Code::TerminalOffline,
            "the terminal holds no connection to the gateway; nothing was sent to it",
        ),
        LifecycleError::RefundReferenceRequired => YabandError::new(
            Code::MissingField,
            "data.m_refund_id is required: this merchant's refunds must carry their own id",
        ),
        LifecycleError::Rejected(r) => rejection(r),
        LifecycleError::Store(e) => store(e),
    }
}

fn rejection(r: Rejection) -> YabandError {
    match r {
        Rejection::Pay(p) => pay_rejected(p),
        Rejection::Refund(r) => refund_rejected(r),
        Rejection::Cancel(c) => cancel_rejected(c),
        Rejection::Replay => YabandError::new(
            Code::StateNotAllowed,
            "the transaction already is where this request would take it",
        ),
    }
}

/// A pay refusal follows an `order_id` used before with the same parameters, whose
/// transaction went its own way since.
fn pay_rejected(p: PayRejected) -> YabandError {
    match p {
        PayRejected::AlreadySubmitted => YabandError::new(
            Code::KeyReused,
            "the order_id was already submitted with another auth_code",
        ),
        PayRejected::AlreadyPaid => YabandError::new(
            Code::StateNotAllowed,
            "the order_id is already paid; query it with v3.QueryOrder",
        ),
        PayRejected::Cancelled => {
            YabandError::new(Code::AlreadyCancelled, "the order_id was cancelled")
        }
        PayRejected::Closed => YabandError::new(
            Code::Expired,
            "the order_id expired unpaid; place a new order",
        ),
        PayRejected::Failed => YabandError::new(
            Code::StateNotAllowed,
            "the order_id was declined; place a new order",
        ),
        PayRejected::CancelInProgress => {
            YabandError::new(Code::InProgress, "a cancel of the order_id is in progress")
        }
    }
}

fn refund_rejected(r: RefundRejected) -> YabandError {
    match r {
        RefundRejected::CurrencyMismatch => YabandError::new(
            Code::CurrencyMismatch,
            "refund in the currency the order was paid in",
        ),
        RefundRejected::NotPaid { state } => YabandError::new(
            Code::StateNotAllowed,
            format!(
                "only a paid transaction can be refunded; this one is {}",
                state.as_str()
            ),
        ),
        RefundRejected::FullyRefunded => YabandError::new(
            Code::ExceedsRefundable,
            "the transaction is already refunded in full; nothing is left to refund",
        ),
        RefundRejected::Cancelled => YabandError::new(
            Code::AlreadyCancelled,
            "a cancelled transaction has nothing to refund",
        ),
        RefundRejected::CancelInProgress => YabandError::new(
            Code::InProgress,
            "a cancel of the transaction is in progress",
        ),
        RefundRejected::ExceedsRefundable { refundable } => YabandError::new(
            Code::ExceedsRefundable,
            format!(
                "at most {} {} can still be refunded",
                refundable.to_decimal_string(),
                refundable.currency().code()
            ),
        ),
    }
}

/// The seed's codes for a cancel. "Cleared" (−4112) is read as "has refunds": a transaction
/// with a refund done or in flight can no longer be reversed in full; refund the rest.
fn cancel_rejected(c: CancelRejected) -> YabandError {
    match c {
        CancelRejected::OutsideSameDayWindow => YabandError::new(
            Code::CancelWindow,
            "a paid transaction can be cancelled until 00:30 CET the day after it was paid; refund it instead",
        ),
        CancelRejected::AfterRefund => YabandError::new(
            Code::Cleared,
            "the transaction has refunds; refund the rest instead",
        ),
        CancelRejected::RefundInProgress => YabandError::new(
            Code::Cleared,
            "a refund of the transaction is in progress",
        ),
        CancelRejected::AlreadyCancelled => YabandError::new(Code::AlreadyCancelled, ""),
        CancelRejected::Closed => YabandError::new(Code::Expired, "it was never paid"),
        CancelRejected::Failed => YabandError::new(
            Code::CannotCancel,
            "the payment was declined; nothing to cancel",
        ),
        // Only a close asks this, and this dialect never closes; kept for completeness.
        CancelRejected::AlreadyPaid => {
            YabandError::new(Code::CannotCancel, "the transaction is paid")
        }
        CancelRejected::InProgress => YabandError::new(
            Code::InProgress,
            "a cancel of the transaction is in progress",
        ),
    }
}

fn store(e: StoreError) -> YabandError {
    match e {
        StoreError::Corrupt(cause) => {
            // Not the caller's fault and not transient: a bug or tampering, for the operator.
            tracing::error!(%cause, "stored data is inconsistent");
            YabandError::system(StatusCode::INTERNAL_SERVER_ERROR)
        }
        other => {
            tracing::warn!(error = %other, "store unavailable");
            YabandError::system(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tillgate_domain::{Currency, Money, PaymentState};

    #[test]
    fn codes_are_unique_and_seed_003s_keep_their_numbers_and_messages() {
        let texts: HashSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(texts.len(), Code::ALL.len());
        let set: HashSet<Code> = Code::ALL.into_iter().collect();
        assert_eq!(set.len(), Code::ALL.len());
        let seed = [
            (Code::MissingField, "-3001", "Required field is missing"),
            (Code::DuplicateRequestId, "-3002", "duplicate request_id"),
            (Code::CancelWindow, "-4111", "Exceed cancel window"),
            (
                Code::Cleared,
                "-4112",
                "The transaction has been cleared cannot be cancelled",
            ),
            (Code::TradeNotFound, "-4114", "The trade_id does not exist"),
            (
                Code::CannotCancel,
                "-4115",
                "The transaction cannot be cancelled",
            ),
            (
                Code::AlreadyCancelled,
                "-4116",
                "The transaction has been cancelled",
            ),
            (Code::Expired, "-4117", "The transaction has been Expired"),
        ];
        for (code, text, message) in seed {
            assert_eq!((code.as_str(), code.message()), (text, message));
        }
        assert!(!texts.contains("-4113"));
        for c in Code::ALL {
            let n: i64 = c.as_str().parse().unwrap();
            assert!(c == Code::Success || n < 0, "{c:?}");
        }
    }

    #[test]
    fn store_failures_are_system_errors_that_hide_their_cause() {
        let e = from_lifecycle(
            Op::Query,
            LifecycleError::Store(StoreError::Unavailable("disk on fire".into())),
        );
        assert_eq!(e.code, Code::SystemError);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("disk"));
        let e = from_lifecycle(
            Op::Query,
            LifecycleError::Store(StoreError::Corrupt("bad row".into())),
        );
        assert_eq!(
            (e.code, e.status),
            (Code::SystemError, StatusCode::INTERNAL_SERVER_ERROR)
        );
    }

    #[test]
    fn every_rejection_has_a_code_that_names_it() {
        let eur = Currency::from_code("EUR").unwrap();
        let code = |r| from_lifecycle(Op::Cancel, LifecycleError::Rejected(r)).code;
        assert_eq!(
            code(Rejection::Cancel(CancelRejected::AlreadyPaid)),
            Code::CannotCancel
        );
        assert_eq!(
            code(Rejection::Cancel(CancelRejected::InProgress)),
            Code::InProgress
        );
        assert_eq!(code(Rejection::Replay), Code::StateNotAllowed);
        assert_eq!(
            code(Rejection::Pay(PayRejected::AlreadySubmitted)),
            Code::KeyReused
        );
        assert_eq!(code(Rejection::Pay(PayRejected::Closed)), Code::Expired);
        assert_eq!(
            code(Rejection::Refund(RefundRejected::NotPaid {
                state: PaymentState::Created
            })),
            Code::StateNotAllowed
        );
        let e = from_lifecycle(
            Op::Refund,
            LifecycleError::Rejected(Rejection::Refund(RefundRejected::ExceedsRefundable {
                refundable: Money::from_minor(40, eur).unwrap(),
            })),
        );
        assert!(
            e.message
                .ends_with("at most 0.40 EUR can still be refunded"),
            "{}",
            e.message
        );
        assert_eq!(
            from_lifecycle(Op::RefundQuery, LifecycleError::NotFound).code,
            Code::RefundNotFound
        );
    }
}
