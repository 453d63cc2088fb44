//! The unified answer `{"code","msg","data","sign"}`, its codes, and the one place where every
//! lifecycle error becomes a unified answer.
//!
//! Jeepay answers business failures with code 9999 and a Chinese message (`BizException`);
//! the messages below are Jeepay's where it has one, followed by an English gloss in parentheses
//! so that a developer reading a log knows exactly what went wrong.

use crate::render::Data;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tillgate_core::service::LifecycleError;
use tillgate_core::{Dialect, Rejection, StoreError};
use tillgate_domain::{CancelRejected, PayRejected, RefundRejected};

/// Jeepay's `ApiCodeEnum` values the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: the request was processed (a declined payment is still a processed request).
    Success,
    /// 10: system error; nothing was changed; retry.
    SystemError,
    /// 11: a parameter is missing or malformed.
    ParamsError,
    /// 9999: signature, credentials or a business rule (`CUSTOM_FAIL`).
    CustomFail,
}

impl Code {
    pub fn as_i64(self) -> i64 {
        match self {
            Code::Success => 0,
            Code::SystemError => 10,
            Code::ParamsError => 11,
            Code::CustomFail => 9999,
        }
    }

    /// The code as text, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "0",
            Code::SystemError => "10",
            Code::ParamsError => "11",
            Code::CustomFail => "9999",
        }
    }
}

/// A unified error answer: `{"code":N,"msg":"…"}`, no data and no sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiedError {
    pub code: Code,
    pub msg: String,
    pub status: StatusCode,
}

impl UnifiedError {
    pub fn new(code: Code, msg: impl Into<String>) -> UnifiedError {
        UnifiedError {
            code,
            msg: msg.into(),
            status: StatusCode::OK,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> UnifiedError {
        self.status = status;
        self
    }

    /// Code 11: a parameter is malformed.
    pub fn params(msg: impl Into<String>) -> UnifiedError {
        UnifiedError::new(Code::ParamsError, msg)
    }

    /// Code 11: a required parameter is missing.
    pub fn missing(field: &str) -> UnifiedError {
        UnifiedError::params(format!("参数{field}不能为空 ({field} is required)"))
    }

    /// Code 10 with HTTP 429: over a rate limit (of `whose` requests); nothing was changed.
    pub fn busy(busy: tillgate_wire::Busy, whose: &str) -> UnifiedError {
        UnifiedError::new(
            Code::SystemError,
            format!(
                "系统繁忙，请稍后再试 (too many requests of {whose}; nothing was changed; retry in {} s)",
                busy.retry_after_secs()
            ),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Code 9999: a business rule, credentials or signature.
    pub fn fail(msg: impl Into<String>) -> UnifiedError {
        UnifiedError::new(Code::CustomFail, msg)
    }

    /// Code 10: the gateway could not do it now; nothing was changed.
    pub fn system(status: StatusCode) -> UnifiedError {
        UnifiedError::new(
            Code::SystemError,
            "系统异常，请稍后重试 (system error; nothing was changed; retry later)",
        )
        .with_status(status)
    }
}

impl IntoResponse for UnifiedError {
    fn into_response(self) -> Response {
        tillgate_core::note::answer(Dialect::Unified, self.code.as_str());
        let body = json!({ "code": self.code.as_i64(), "msg": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A successful answer: the data and its sign with the app's secret.
pub fn success(data: &Data, secret: &str) -> Response {
    tillgate_core::note::answer(Dialect::Unified, Code::Success.as_str());
    axum::Json(json!({
        "code": Code::Success.as_i64(),
        "msg": "SUCCESS",
        "data": data.to_json(),
        "sign": data.sign(secret),
    }))
    .into_response()
}

/// Which request failed, with the merchant's keys that messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    UnifiedOrder { mch_order_no: &'a str },
    Query,
    Close,
    Cancel,
    CancelQuery,
    RefundOrder { mch_refund_no: &'a str },
    RefundQuery,
}

/// Every lifecycle error as a unified answer. Causes of system errors are logged, never sent.
pub fn from_lifecycle(op: Op<'_>, e: LifecycleError) -> UnifiedError {
    match e {
        LifecycleError::NotFound => UnifiedError::fail(match op {
            Op::RefundQuery => "退款订单不存在 (no refund order with that refundOrderId or mchRefundNo)",
            Op::CancelQuery => "撤销订单不存在 (no cancel order with that cancelOrderId)",
            _ => "订单不存在 (no order with that payOrderId or mchOrderNo)",
        }),
        LifecycleError::KeyReused => UnifiedError::fail(match op {
            Op::UnifiedOrder { mch_order_no } => format!(
                "商户订单[{mch_order_no}]已存在 (mchOrderNo was already used with other parameters)"
            ),
            Op::RefundOrder { mch_refund_no } => format!(
                "商户退款订单号[{mch_refund_no}]已存在 (mchRefundNo was already used with other parameters)"
            ),
            _ => "请求参数与原请求不一致 (the key was already used with other parameters)".into(),
        }),
        // The unified API has no terminal methods; a terminal error cannot reach it.
        LifecycleError::TerminalOffline => UnifiedError::fail("终端不在线 (the terminal is offline)"),
        LifecycleError::InProgress => UnifiedError::fail(match op {
            Op::RefundOrder { .. } => {
                "支付订单具有在途退款申请，请稍后再试 (a refund with this mchRefundNo is in progress; retry later)"
            }
            _ => "请求处理中，请稍后再试 (a request with the same key is in progress; retry later)",
        }),
        // mchRefundNo is always required by this dialect; the policy cannot fail here.
        LifecycleError::RefundReferenceRequired => {
            UnifiedError::fail("商户退款单号不能为空 (mchRefundNo is required)")
        }
        LifecycleError::Rejected(r) => rejection(op, r),
        LifecycleError::Store(e) => store(e),
    }
}

fn rejection(op: Op<'_>, r: Rejection) -> UnifiedError {
    let msg = match r {
        Rejection::Pay(p) => pay_rejected(op, p),
        Rejection::Refund(r) => refund_rejected(r),
        Rejection::Cancel(c) if op == Op::Close => close_rejected(c),
        Rejection::Cancel(c) => cancel_rejected(c),
        Rejection::Replay => "订单状态不正确 (the order is not in a state for this request)".into(),
    };
    UnifiedError::fail(msg)
}

/// A pay refusal can only follow an add that replayed: the merchant sent an order number it had
/// used before, with another authCode, and the order went its own way since.
fn pay_rejected(op: Op<'_>, p: PayRejected) -> String {
    let why = match p {
        PayRejected::AlreadySubmitted => "the order was already submitted with another authCode",
        PayRejected::AlreadyPaid => "the order is already paid",
        PayRejected::Cancelled => "the order was cancelled",
        PayRejected::Closed => "the order is closed or expired",
        PayRejected::Failed => "the order was declined; place a new order",
        PayRejected::CancelInProgress => "a cancel of the order is in progress",
    };
    match op {
        Op::UnifiedOrder { mch_order_no } => format!("商户订单[{mch_order_no}]已存在 ({why})"),
        _ => format!("订单状态不正确 ({why})"),
    }
}

fn refund_rejected(r: RefundRejected) -> String {
    match r {
        RefundRejected::CurrencyMismatch => {
            "退款币种与订单币种不一致 (currency differs from the order's currency)".into()
        }
        RefundRejected::NotPaid { .. } => {
            "订单状态不正确， 无法完成退款 (the order is not paid)".into()
        }
        RefundRejected::FullyRefunded => {
            "订单已全额退款，本次申请失败 (the order is already refunded in full)".into()
        }
        RefundRejected::Cancelled => {
            "订单状态不正确， 无法完成退款 (the order was cancelled)".into()
        }
        RefundRejected::CancelInProgress => {
            "订单状态不正确， 无法完成退款 (a cancel of the order is in progress)".into()
        }
        RefundRejected::ExceedsRefundable { refundable } => format!(
            "申请金额超出订单可退款余额，请检查退款金额 (refundAmount exceeds the refundable {} minor units)",
            refundable.minor()
        ),
    }
}

/// Jeepay closes only orders in state 0 or 1; every other refusal reads the same.
fn close_rejected(c: CancelRejected) -> String {
    let why = match c {
        CancelRejected::AlreadyCancelled => "the order was cancelled",
        CancelRejected::Closed => "the order is already closed",
        CancelRejected::AlreadyPaid => "the order is paid; refund it instead",
        CancelRejected::Failed => "the order was declined",
        CancelRejected::AfterRefund => "the order is paid and refunded",
        CancelRejected::RefundInProgress => "the order is paid and a refund is in progress",
        CancelRejected::OutsideSameDayWindow => "the order is paid",
        CancelRejected::InProgress => "a cancel or close of the order is in progress",
    };
    format!("当前订单不可关闭 ({why})")
}

fn cancel_rejected(c: CancelRejected) -> String {
    match c {
        CancelRejected::AlreadyCancelled => "订单已撤销 (the order is already cancelled)".into(),
        CancelRejected::Closed => "订单已关闭，无法撤销 (the order is closed)".into(),
        CancelRejected::AlreadyPaid | CancelRejected::Failed => {
            "订单状态不正确，无法撤销 (the order was declined; nothing to cancel)".into()
        }
        CancelRejected::AfterRefund => {
            "订单已发生退款，无法撤销 (the order has refunds; refund the rest instead)".into()
        }
        CancelRejected::RefundInProgress => {
            "支付订单具有在途退款申请，请稍后再试 (a refund of the order is in progress)".into()
        }
        CancelRejected::OutsideSameDayWindow => {
            "仅支持撤销当天的订单 (only an order paid today can be cancelled; refund it instead)"
                .into()
        }
        CancelRejected::InProgress => {
            "订单撤销中，请稍后再试 (a cancel of the order is in progress; retry later)".into()
        }
    }
}

fn store(e: StoreError) -> UnifiedError {
    match e {
        StoreError::Corrupt(cause) => {
            // Not the caller's fault and not transient: a bug or tampering, for the operator.
            tracing::error!(%cause, "stored data is inconsistent");
            UnifiedError::system(StatusCode::INTERNAL_SERVER_ERROR)
        }
        other => {
            tracing::warn!(error = %other, "store unavailable");
            UnifiedError::system(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_domain::{Currency, Money, PaymentState};

    fn cny(minor: i64) -> Money {
        Money::from_minor(minor, Currency::from_code("CNY").unwrap()).unwrap()
    }

    #[test]
    fn keys_reused_name_the_merchants_key() {
        let e = from_lifecycle(
            Op::UnifiedOrder {
                mch_order_no: "M-1",
            },
            LifecycleError::KeyReused,
        );
        assert_eq!(e.code, Code::CustomFail);
        assert!(e.msg.starts_with("商户订单[M-1]已存在"));
        let e = from_lifecycle(
            Op::RefundOrder {
                mch_refund_no: "R-1",
            },
            LifecycleError::KeyReused,
        );
        assert!(e.msg.starts_with("商户退款订单号[R-1]已存在"));
        let e = from_lifecycle(
            Op::UnifiedOrder {
                mch_order_no: "M-2",
            },
            LifecycleError::Rejected(Rejection::Pay(PayRejected::AlreadyPaid)),
        );
        assert!(e.msg.starts_with("商户订单[M-2]已存在"));
    }

    #[test]
    fn refund_rules_use_jeepays_messages() {
        let refund = Op::RefundOrder { mch_refund_no: "r" };
        let msg = |r| from_lifecycle(refund, LifecycleError::Rejected(Rejection::Refund(r))).msg;
        assert!(msg(RefundRejected::ExceedsRefundable {
            refundable: cny(40)
        })
        .starts_with("申请金额超出订单可退款余额，请检查退款金额"));
        assert!(msg(RefundRejected::NotPaid {
            state: PaymentState::Created
        })
        .starts_with("订单状态不正确， 无法完成退款"));
        assert!(from_lifecycle(refund, LifecycleError::InProgress)
            .msg
            .starts_with("支付订单具有在途退款申请，请稍后再试"));
    }

    #[test]
    fn close_refusals_all_read_as_jeepays_and_not_found_is_per_order_kind() {
        for c in [
            CancelRejected::AlreadyPaid,
            CancelRejected::Failed,
            CancelRejected::AfterRefund,
            CancelRejected::Closed,
        ] {
            let e = from_lifecycle(Op::Close, LifecycleError::Rejected(Rejection::Cancel(c)));
            assert!(e.msg.starts_with("当前订单不可关闭"), "{c:?}");
        }
        assert!(from_lifecycle(Op::Query, LifecycleError::NotFound)
            .msg
            .starts_with("订单不存在"));
        assert!(from_lifecycle(Op::RefundQuery, LifecycleError::NotFound)
            .msg
            .starts_with("退款订单不存在"));
    }

    #[test]
    fn store_failures_are_system_errors_with_a_retryable_status() {
        let e = from_lifecycle(
            Op::Query,
            LifecycleError::Store(StoreError::Unavailable("down".into())),
        );
        assert_eq!(e.code.as_i64(), 10);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.msg.contains("down"));
    }
}
