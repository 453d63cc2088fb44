//! Pockyt's response envelope and its `ret_code` table, and the one place where every error
//! of the gateway becomes a Pockyt answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use tillgate_core::service::LifecycleError;
use tillgate_core::{Dialect, Rejection, StoreError};
use tillgate_domain::{CancelRejected, PayRejected, RefundRejected};

/// Pockyt's `ret_code` values (docs "notes" page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetCode {
    SystemError,
    ApiVersionError,
    ParameterNull,
    NoRelatedInformation,
    ParametersDoNotMatch,
    ParameterValueError,
    NoRights,
    TransactionStatusError,
    SupplierSystemError,
    Success,
}

impl RetCode {
    /// The code as sent: always a string (the JavaScript SDK compares with `===`).
    pub fn as_str(self) -> &'static str {
        match self {
            RetCode::SystemError => "000000",
            RetCode::ApiVersionError => "000010",
            RetCode::ParameterNull => "000020",
            RetCode::NoRelatedInformation => "000021",
            RetCode::ParametersDoNotMatch => "000022",
            RetCode::ParameterValueError => "000023",
            RetCode::NoRights => "000030",
            RetCode::TransactionStatusError => "000040",
            RetCode::SupplierSystemError => "000080",
            RetCode::Success => "000100",
        }
    }
}

/// A Pockyt error answer: a code, a message for the developer, and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PockytError {
    pub code: RetCode,
    pub message: String,
    pub status: StatusCode,
}

impl PockytError {
    pub fn new(code: RetCode, message: impl Into<String>) -> PockytError {
        PockytError {
            code,
            message: message.into(),
            status: StatusCode::OK,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> PockytError {
        self.status = status;
        self
    }

    pub fn missing(field: &str) -> PockytError {
        PockytError::new(RetCode::ParameterNull, format!("{field} is required"))
    }

    pub fn invalid(field: &str, why: impl std::fmt::Display) -> PockytError {
        PockytError::new(RetCode::ParameterValueError, format!("{field} {why}"))
    }

    /// Over a rate limit (of `whose` requests): Pockyt has no busy code, so `000000` with
    /// HTTP 429; nothing was changed and a retry after the wait passes.
    pub fn busy(busy: tillgate_wire::Busy, whose: &str) -> PockytError {
        PockytError::new(
            RetCode::SystemError,
            format!(
                "too many requests of {whose}; nothing was changed; retry in {} s",
                busy.retry_after_secs()
            ),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS)
    }
}

/// A successful answer.
pub fn success(result: Json, message: &str) -> Response {
    tillgate_core::note::answer(Dialect::Pockyt, RetCode::Success.as_str());
    axum::Json(
        json!({ "result": result, "ret_code": RetCode::Success.as_str(), "ret_msg": message }),
    )
    .into_response()
}

impl IntoResponse for PockytError {
    fn into_response(self) -> Response {
        tillgate_core::note::answer(Dialect::Pockyt, self.code.as_str());
        let body = json!({ "ret_code": self.code.as_str(), "ret_msg": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Which request failed, so that messages name the right key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Pay,
    Cancel,
    Refund,
    Query,
}

/// Every lifecycle error as a Pockyt answer. Causes of system errors are logged, never sent.
pub fn from_lifecycle(op: Op, e: LifecycleError) -> PockytError {
    use RetCode::*;
    match e {
        LifecycleError::NotFound => PockytError::new(
            NoRelatedInformation,
            "no transaction with that transactionNo or reference",
        ),
        LifecycleError::KeyReused => PockytError::new(
            ParametersDoNotMatch,
            match op {
                Op::Refund => "refundReference was already used with different parameters",
                _ => "reference was already used with different parameters",
            },
        ),
        LifecycleError::TerminalOffline => {
            PockytError::new(TransactionStatusError, "the terminal is not connected")
        }
        LifecycleError::InProgress => PockytError::new(
            TransactionStatusError,
            "a request with the same key is still in progress; retry later",
        ),
        LifecycleError::RefundReferenceRequired => PockytError::new(
            ParameterNull,
            "refundReference is required: this merchant's refunds must carry their own reference",
        ),
        LifecycleError::Rejected(r) => rejection(r),
        LifecycleError::Store(e) => store(e),
    }
}

fn rejection(r: Rejection) -> PockytError {
    use RetCode::*;
    let msg: String = match r {
        Rejection::Pay(p) => match p {
            PayRejected::AlreadySubmitted => {
                "the transaction was already submitted with another paymentBarcode".into()
            }
            PayRejected::AlreadyPaid => "the transaction is already paid".into(),
            PayRejected::Cancelled => "the transaction is cancelled".into(),
            PayRejected::Closed => "the transaction is closed (expired)".into(),
            PayRejected::Failed => "the transaction was declined; add a new one".into(),
            PayRejected::CancelInProgress => "a cancel of the transaction is in progress".into(),
        },
        Rejection::Refund(r) => match r {
            RefundRejected::CurrencyMismatch => {
                return PockytError::new(
                    ParametersDoNotMatch,
                    "currency does not match the transaction's currency",
                )
            }
            RefundRejected::NotPaid { .. } => "the transaction is not paid".into(),
            RefundRejected::FullyRefunded => "the transaction is already refunded in full".into(),
            RefundRejected::Cancelled => "the transaction is cancelled".into(),
            RefundRejected::CancelInProgress => "a cancel of the transaction is in progress".into(),
            RefundRejected::ExceedsRefundable { refundable } => format!(
                "refundAmount exceeds the refundable amount of {}",
                refundable.to_decimal_string()
            ),
        },
        Rejection::Cancel(c) => match c {
            CancelRejected::AlreadyCancelled => "the transaction is already cancelled".into(),
            CancelRejected::Closed => "the transaction is closed (expired)".into(),
            CancelRejected::AlreadyPaid => "the transaction is already paid".into(),
            CancelRejected::Failed => "the transaction was declined; nothing to cancel".into(),
            CancelRejected::AfterRefund => {
                "the transaction has refunds; refund the rest instead of cancelling".into()
            }
            CancelRejected::RefundInProgress => "a refund of the transaction is in progress".into(),
            CancelRejected::OutsideSameDayWindow => {
                "a paid transaction can be cancelled only on the day it was paid; use refund".into()
            }
            CancelRejected::InProgress => {
                return PockytError::new(
                    TransactionStatusError,
                    "a cancel of the transaction is in progress; retry later",
                )
            }
        },
        Rejection::Replay => "the transaction is not in a state for this request".into(),
    };
    PockytError::new(TransactionStatusError, msg)
}

fn store(e: StoreError) -> PockytError {
    match e {
        StoreError::Corrupt(cause) => {
            tracing::error!(%cause, "stored data is inconsistent");
            PockytError::new(RetCode::SystemError, "system error")
                .with_status(StatusCode::INTERNAL_SERVER_ERROR)
        }
        other => {
            tracing::warn!(error = %other, "store unavailable");
            PockytError::new(RetCode::SystemError, "system error; retry later")
                .with_status(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}
