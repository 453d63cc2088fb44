//! Records and notification facts rendered as unified `data` objects: the field names, the
//! state numbers, and the text each value is signed as.
//!
//! A pay notification carries the fields of the pay query and a refund notification those of
//! the refund query (as Jeepay's `QueryPayOrderRS`/`QueryRefundOrderRS`), so each is built once,
//! from a view of a snapshot: of a stored record for an answer, or the one frozen in the
//! outbox for a notification.

use crate::extra::{self, CancelExtra, PayExtra, RefundExtra};
use crate::sign;
use serde_json::{Map, Value as Json};
use tillgate_core::snapshot::{CancelSnapshot, PaymentSnapshot, RefundSnapshot};
use tillgate_domain::{CancelState, PaymentState, RefundState};

/// The `ifCode` of every order: the wallet behind the gateway.
pub const IF_CODE: &str = "sandbox";

/// One value of a `data` object: amounts, states and times are JSON numbers (Java `Long` and
/// `Byte` fields), everything else a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(i64),
    Text(String),
}

impl Field {
    /// The text the value is signed as (`toString` of the Java value).
    pub fn text(&self) -> String {
        match self {
            Field::Int(n) => n.to_string(),
            Field::Text(s) => s.clone(),
        }
    }
}

/// A `data` object. Absent and empty values are never included (fastjson leaves out nulls;
/// Jeepay's sign leaves out empty strings, so emitting them would only invite disagreement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    fields: Vec<(&'static str, Field)>,
}

impl Data {
    pub fn new() -> Data {
        Data::default()
    }

    pub fn int(mut self, name: &'static str, value: i64) -> Data {
        self.fields.push((name, Field::Int(value)));
        self
    }

    pub fn opt_int(self, name: &'static str, value: Option<i64>) -> Data {
        match value {
            Some(v) => self.int(name, v),
            None => self,
        }
    }

    pub fn text(mut self, name: &'static str, value: Option<&str>) -> Data {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.fields.push((name, Field::Text(v.to_owned())));
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields in their text form, in the order they were added.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        self.fields.iter().map(|(n, v)| (*n, v.text())).collect()
    }

    pub fn to_json(&self) -> Json {
        let mut map = Map::new();
        for (name, value) in &self.fields {
            let v = match value {
                Field::Int(n) => Json::from(*n),
                Field::Text(s) => Json::from(s.as_str()),
            };
            map.insert((*name).to_owned(), v);
        }
        Json::Object(map)
    }

    /// The sign of the data's fields with `secret`.
    pub fn sign(&self, secret: &str) -> String {
        let entries = self.entries();
        sign::sign(entries.iter().map(|(n, v)| (*n, v.as_str())), secret)
    }
}

/// The unified pay order state of a payment (DESIGN.md's table).
pub fn pay_state(state: PaymentState) -> i64 {
    match state {
        PaymentState::Created => 0,
        PaymentState::Pending => 1,
        // A partly refunded order is still a successful payment; refundState tells the rest.
        PaymentState::Paid | PaymentState::PartiallyRefunded => 2,
        PaymentState::Failed => 3,
        // Cancelled before payment or reversed in full on its day: Jeepay's 已撤销.
        PaymentState::Cancelled => 4,
        PaymentState::Refunded => 5,
        PaymentState::Closed => 6,
    }
}

/// Jeepay's `refundState` of a pay order: 0 none, 1 partial, 2 full.
pub fn refund_state(amount_minor: i64, refunded_minor: i64) -> i64 {
    if refunded_minor <= 0 {
        0
    } else if refunded_minor >= amount_minor {
        2
    } else {
        1
    }
}

/// The wallet's error of a failed order. The core keeps no channel error with the records, so
/// a fixed code stands for "declined".
fn channel_error(failed: bool, what: &'static str) -> (Option<&'static str>, Option<&'static str>) {
    if failed {
        (Some("DECLINED"), Some(what))
    } else {
        (None, None)
    }
}

pub fn pay_order_id(transaction_no: &str) -> String {
    format!("P{transaction_no}")
}

pub fn refund_order_id(refund_no: &str) -> String {
    format!("R{refund_no}")
}

pub fn cancel_order_id(cancel_no: &str) -> String {
    format!("C{cancel_no}")
}

/// A pay order as the unified dialect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayView {
    pub transaction_no: String,
    pub mch_no: String,
    pub app_id: String,
    pub mch_order_no: String,
    pub way_code: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub state: i64,
    pub refund_state: i64,
    pub client_ip: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub ext_param: Option<String>,
    pub success_time: Option<i64>,
    pub created_at: i64,
}

impl PayView {
    /// A payment. `app_id` names the asking app when the payment does not say (one added
    /// through another dialect).
    pub fn of(p: &PaymentSnapshot, app_id: &str) -> PayView {
        let e: PayExtra = extra::parse_lenient(p.extra.as_deref());
        let amount = p.payment.amount();
        PayView {
            transaction_no: p.transaction_no.clone(),
            mch_no: p.merchant_no.clone(),
            app_id: e.app_id.unwrap_or_else(|| app_id.to_owned()),
            mch_order_no: p.reference.clone(),
            way_code: e.way_code.or_else(|| p.vendor.clone()),
            amount: amount.minor(),
            currency: e
                .currency
                .unwrap_or_else(|| amount.currency().code().to_owned()),
            state: pay_state(p.payment.state()),
            refund_state: refund_state(amount.minor(), p.payment.refunded().minor()),
            client_ip: e.client_ip,
            subject: e.subject.or_else(|| p.description.clone()),
            body: e.body,
            ext_param: e.ext_param,
            success_time: p.payment.paid_at().map(|t| t.timestamp_millis()),
            created_at: p.created_at.timestamp_millis(),
        }
    }

    fn failed(&self) -> bool {
        self.state == pay_state(PaymentState::Failed)
    }
}

/// How the customer pays an order that waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayData {
    /// `payDataType`: "codeUrl" for a QR code, "none" for a scanned barcode.
    pub kind: &'static str,
    pub data: Option<String>,
}

/// The answer of unifiedOrder.
pub fn unified_order(v: &PayView, pay: &PayData) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet declined the payment");
    Data::new()
        .text("payOrderId", Some(&pay_order_id(&v.transaction_no)))
        .text("mchOrderNo", Some(&v.mch_order_no))
        .int("orderState", v.state)
        .text("payDataType", Some(pay.kind))
        .text("payData", pay.data.as_deref())
        .text("errCode", err_code)
        .text("errMsg", err_msg)
}

/// The answer of the pay query, and the fields of a pay notification.
pub fn pay_query(v: &PayView) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet declined the payment");
    Data::new()
        .text("payOrderId", Some(&pay_order_id(&v.transaction_no)))
        .text("mchNo", Some(&v.mch_no))
        .text("appId", Some(&v.app_id))
        .text("mchOrderNo", Some(&v.mch_order_no))
        .text("ifCode", Some(IF_CODE))
        .text("wayCode", v.way_code.as_deref())
        .int("amount", v.amount)
        .text("currency", Some(&v.currency))
        .int("state", v.state)
        .int("refundState", v.refund_state)
        .text("clientIp", v.client_ip.as_deref())
        .text("subject", v.subject.as_deref())
        .text("body", v.body.as_deref())
        .text("errCode", err_code)
        .text("errMsg", err_msg)
        .text("extParam", v.ext_param.as_deref())
        .opt_int("successTime", v.success_time)
        .int("createdAt", v.created_at)
}

/// A refund order as the unified dialect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundView {
    pub refund_no: String,
    pub pay: PayView,
    pub app_id: String,
    pub mch_refund_no: Option<String>,
    pub refund_amount: i64,
    pub state: i64,
    pub ext_param: Option<String>,
    pub success_time: Option<i64>,
    pub created_at: i64,
}

impl RefundView {
    pub fn of(p: &PaymentSnapshot, r: &RefundSnapshot, app_id: &str) -> RefundView {
        let pay = PayView::of(p, app_id);
        let e: RefundExtra = extra::parse_lenient(r.extra.as_deref());
        RefundView {
            refund_no: r.refund_no.clone(),
            app_id: e.app_id.unwrap_or_else(|| pay.app_id.clone()),
            pay,
            mch_refund_no: r.refund_reference.clone(),
            refund_amount: r.amount.minor(),
            state: r.state.code(),
            ext_param: e.ext_param,
            success_time: (r.state == RefundState::Succeeded)
                .then(|| r.updated_at.timestamp_millis()),
            created_at: r.created_at.timestamp_millis(),
        }
    }

    fn failed(&self) -> bool {
        self.state == RefundState::Failed.code()
    }
}

/// The answer of refundOrder.
pub fn refund_order(v: &RefundView) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet declined the refund");
    Data::new()
        .text("refundOrderId", Some(&refund_order_id(&v.refund_no)))
        .text("mchRefundNo", v.mch_refund_no.as_deref())
        .int("payAmount", v.pay.amount)
        .int("refundAmount", v.refund_amount)
        .int("state", v.state)
        .text("errCode", err_code)
        .text("errMsg", err_msg)
}

/// The answer of the refund query, and the fields of a refund notification.
pub fn refund_query(v: &RefundView) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet declined the refund");
    Data::new()
        .text("refundOrderId", Some(&refund_order_id(&v.refund_no)))
        .text("payOrderId", Some(&pay_order_id(&v.pay.transaction_no)))
        .text("mchNo", Some(&v.pay.mch_no))
        .text("appId", Some(&v.app_id))
        .text("mchRefundNo", v.mch_refund_no.as_deref())
        .int("payAmount", v.pay.amount)
        .int("refundAmount", v.refund_amount)
        .text("currency", Some(&v.pay.currency))
        .int("state", v.state)
        .text("errCode", err_code)
        .text("errMsg", err_msg)
        .text("extParam", v.ext_param.as_deref())
        .opt_int("successTime", v.success_time)
        .int("createdAt", v.created_at)
}

/// A cancel order as the unified dialect shows it (seed 004).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelView {
    pub cancel_no: String,
    pub pay: PayView,
    pub app_id: String,
    pub state: i64,
    pub extra_param: Option<String>,
    pub success_time: Option<i64>,
    pub created_at: i64,
}

impl CancelView {
    pub fn of(p: &PaymentSnapshot, c: &CancelSnapshot, app_id: &str) -> CancelView {
        let pay = PayView::of(p, app_id);
        let e: CancelExtra = extra::parse_lenient(c.extra.as_deref());
        CancelView {
            cancel_no: c.cancel_no.clone(),
            app_id: e.app_id.unwrap_or_else(|| pay.app_id.clone()),
            pay,
            state: c.state.code(),
            extra_param: e.ext_param,
            // Seed 004: the success time of a cancel is when the wallet confirmed it.
            success_time: (c.state == CancelState::Succeeded)
                .then(|| c.updated_at.timestamp_millis()),
            created_at: c.created_at.timestamp_millis(),
        }
    }

    fn failed(&self) -> bool {
        self.state == CancelState::Failed.code()
    }
}

/// The answer of cancel (seed 004).
pub fn cancel_order(v: &CancelView) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet refused the cancel");
    Data::new()
        .text("cancelOrderId", Some(&cancel_order_id(&v.cancel_no)))
        .int("state", v.state)
        .text("errCode", err_code)
        .text("errMsg", err_msg)
}

/// The answer of the cancel query, and the fields of a cancel notification (seed 004; note
/// its `extraParam`, not `extParam`).
pub fn cancel_query(v: &CancelView) -> Data {
    let (err_code, err_msg) = channel_error(v.failed(), "the wallet refused the cancel");
    Data::new()
        .text("cancelOrderId", Some(&cancel_order_id(&v.cancel_no)))
        .text("payOrderId", Some(&pay_order_id(&v.pay.transaction_no)))
        .text("mchNo", Some(&v.pay.mch_no))
        .text("appId", Some(&v.app_id))
        .int("payAmount", v.pay.amount)
        .text("currency", Some(&v.pay.currency))
        .int("state", v.state)
        .text("errCode", err_code)
        .text("errMsg", err_msg)
        .text("extraParam", v.extra_param.as_deref())
        .opt_int("successTime", v.success_time)
        .int("createdAt", v.created_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payment_state_has_its_unified_number() {
        let expected = [
            (PaymentState::Created, 0),
            (PaymentState::Pending, 1),
            (PaymentState::Paid, 2),
            (PaymentState::PartiallyRefunded, 2),
            (PaymentState::Refunded, 5),
            (PaymentState::Failed, 3),
            (PaymentState::Cancelled, 4),
            (PaymentState::Closed, 6),
        ];
        assert_eq!(expected.len(), PaymentState::ALL.len());
        for (state, code) in expected {
            assert_eq!(pay_state(state), code, "{state:?}");
        }
        assert_eq!(refund_state(100, 0), 0);
        assert_eq!(refund_state(100, 1), 1);
        assert_eq!(refund_state(100, 100), 2);
    }

    #[test]
    fn data_leaves_out_absent_and_empty_values_and_signs_its_text() {
        let d = Data::new()
            .text("payOrderId", Some("P1"))
            .text("errCode", None)
            .text("errMsg", Some(""))
            .int("amount", 100)
            .opt_int("successTime", None);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.to_json(),
            serde_json::json!({"payOrderId": "P1", "amount": 100})
        );
        assert_eq!(
            d.sign("s"),
            sign::md5_upper("amount=100&payOrderId=P1&key=s")
        );
        assert_eq!(Data::new().sign("s"), sign::md5_upper("key=s"));
    }
}
