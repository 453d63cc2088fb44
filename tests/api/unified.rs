//! The unified (Jeepay-style) dialect end to end: seed 004's cancel story with its signed
//! notification, refunds, close, and bad input — against seed 004's sandbox merchant.

use crate::helpers::*;
use md5::{Digest, Md5};
use serde_json::{json, Value};

const MCH_NO: &str = "M1621873433953";
const APP_ID: &str = "60cc09bce4b0f1c0b83761c9";
const SECRET: &str = "offline-test-key";

/// The Jeepay sign, written here independently: non-empty values as `k=v&` fragments sorted
/// case-insensitively, then `key=<secret>`, MD5, upper case.
pub fn jeepay_sign(pairs: &[(String, String)], secret: &str) -> String {
    let mut fragments: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    fragments.sort_by_key(|f| f.to_lowercase());
    let text = format!("{}key={secret}", fragments.concat());
    hex::encode_upper(Md5::digest(text.as_bytes()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A merchant system speaking the unified API.
pub(crate) struct Shop<'a> {
    app: &'a TestApp,
    mch_no: String,
    app_id: String,
    secret: String,
}

impl Shop<'_> {
    pub(crate) async fn call(&self, path: &str, params: Value) -> Value {
        let mut body = params.as_object().unwrap().clone();
        body.insert("mchNo".into(), json!(self.mch_no));
        body.insert("appId".into(), json!(self.app_id));
        body.insert("reqTime".into(), json!("1700000000123"));
        body.insert("version".into(), json!("1.0"));
        body.insert("signType".into(), json!("MD5"));
        let pairs: Vec<(String, String)> = body.iter().map(|(k, v)| (k.clone(), text(v))).collect();
        body.insert("sign".into(), json!(jeepay_sign(&pairs, &self.secret)));
        let (status, answer) = self
            .app
            .raw(
                reqwest::Method::POST,
                path,
                Some("application/json"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert!(
            status == 200 || answer["code"] == 10,
            "{path}: HTTP {status} {answer}"
        );
        if answer["code"] == 0 {
            // Every successful answer's data is signed with the app secret.
            let data: Vec<(String, String)> = answer["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            assert_eq!(answer["sign"], jeepay_sign(&data, &self.secret), "{answer}");
        }
        answer
    }

    pub(crate) async fn order(
        &self,
        mch_order_no: &str,
        amount: i64,
        notify_url: Option<&str>,
    ) -> Value {
        let mut p = json!({
            "mchOrderNo": mch_order_no,
            "wayCode": "AUTO_BAR",
            "amount": amount,
            "currency": "cny",
            "subject": "coffee",
            "body": "two coffees",
            "channelExtra": "{\"authCode\":\"134567890123456789\"}",
        });
        if let Some(url) = notify_url {
            p["notifyUrl"] = json!(url);
        }
        self.call("/api/pay/unifiedOrder", p).await
    }
}

pub(crate) fn shop(app: &TestApp) -> Shop<'_> {
    Shop {
        app,
        mch_no: MCH_NO.into(),
        app_id: APP_ID.into(),
        secret: SECRET.into(),
    }
}

fn verifies(r: &Received) -> bool {
    r.field("sign") == Some(jeepay_sign(&r.form, SECRET).as_str())
}

async fn seed_004_cancel_story_with_its_notification(app: TestApp) {
    let shop = shop(&app);
    let pay_receiver = Receiver::start().await;
    let cancel_receiver = Receiver::start().await;
    let order_no = reference("u-order");
    let paid = shop.order(&order_no, 100, Some(&pay_receiver.url)).await;
    assert_eq!(paid["code"], 0, "{paid}");
    assert_eq!(paid["data"]["orderState"], 2);
    let pay_order_id = paid["data"]["payOrderId"].as_str().unwrap().to_owned();
    assert!(pay_order_id.starts_with('P'));

    // The pay notification, signed with the app secret.
    let got = pay_receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1);
    assert!(verifies(&got[0]), "{:?}", got[0].form);
    assert_eq!(got[0].field("payOrderId"), Some(pay_order_id.as_str()));
    assert_eq!(got[0].field("state"), Some("2"));
    assert_eq!(got[0].field("amount"), Some("100"));

    let cancelled = shop
        .call("/api/pay/cancel", json!({ "payOrderId": pay_order_id, "notifyUrl": cancel_receiver.url, "extParam": "till-7" }))
        .await;
    assert_eq!(cancelled["code"], 0, "{cancelled}");
    assert_eq!(cancelled["data"]["state"], 2);
    let cancel_order_id = cancelled["data"]["cancelOrderId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cancel_order_id.starts_with('C'));

    let q = shop
        .call(
            "/api/cancel/query",
            json!({ "cancelOrderId": cancel_order_id }),
        )
        .await;
    assert_eq!(q["code"], 0, "{q}");
    assert_eq!(q["data"]["state"], 2);
    assert_eq!(q["data"]["payAmount"], 100);
    assert_eq!(q["data"]["payOrderId"], pay_order_id.as_str());
    assert_eq!(q["data"]["mchNo"], MCH_NO);
    assert!(q["data"]["successTime"].is_i64());

    let got = cancel_receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1, "one cancel notification");
    let n = &got[0];
    assert_eq!(n.content_type, "application/x-www-form-urlencoded");
    assert!(
        verifies(n),
        "the cancel notification verifies with the app secret: {:?}",
        n.form
    );
    assert_eq!(n.field("cancelOrderId"), Some(cancel_order_id.as_str()));
    assert_eq!(n.field("state"), Some("2"));
    assert_eq!(n.field("payAmount"), Some("100"));
    assert_eq!(n.field("extraParam"), Some("till-7"));
    assert!(n.field("reqTime").is_some());
    assert!(n.form.iter().all(|(_, v)| !v.is_empty()));

    let order = shop
        .call("/api/pay/query", json!({ "mchOrderNo": order_no }))
        .await;
    assert_eq!(order["data"]["state"], 4, "cancelled: {order}");
    // A refund after the cancel is refused.
    let refund = shop
        .call("/api/refund/refundOrder", json!({ "payOrderId": pay_order_id, "mchRefundNo": reference("r"), "refundAmount": 1, "currency": "cny", "refundReason": "x" }))
        .await;
    assert_eq!(refund["code"], 9999, "{refund}");
}

async fn partial_refunds_and_their_query(app: TestApp) {
    let shop = shop(&app);
    let order_no = reference("u-refund");
    let paid = shop.order(&order_no, 1000, None).await;
    let pay_order_id = paid["data"]["payOrderId"].as_str().unwrap().to_owned();
    let receiver = Receiver::start().await;
    let r1 = reference("mr");
    let first = shop
        .call("/api/refund/refundOrder", json!({ "mchOrderNo": order_no, "mchRefundNo": r1, "refundAmount": 300, "currency": "CNY", "refundReason": "broken cup", "notifyUrl": receiver.url }))
        .await;
    assert_eq!(first["code"], 0, "{first}");
    assert_eq!(first["data"]["state"], 2);
    assert_eq!(first["data"]["refundAmount"], 300);
    let again = shop
        .call("/api/refund/refundOrder", json!({ "mchOrderNo": order_no, "mchRefundNo": r1, "refundAmount": 300, "currency": "CNY", "refundReason": "broken cup", "notifyUrl": receiver.url }))
        .await;
    assert_eq!(
        again["data"]["refundOrderId"], first["data"]["refundOrderId"],
        "a retry replays"
    );
    let other = shop
        .call("/api/refund/refundOrder", json!({ "mchOrderNo": order_no, "mchRefundNo": r1, "refundAmount": 301, "currency": "CNY", "refundReason": "broken cup" }))
        .await;
    assert_eq!(other["code"], 9999, "{other}");
    let second = shop
        .call("/api/refund/refundOrder", json!({ "payOrderId": pay_order_id, "mchRefundNo": reference("mr"), "refundAmount": 300, "currency": "cny", "refundReason": "second" }))
        .await;
    assert_eq!(second["data"]["state"], 2, "{second}");
    let over = shop
        .call("/api/refund/refundOrder", json!({ "payOrderId": pay_order_id, "mchRefundNo": reference("mr"), "refundAmount": 401, "currency": "cny", "refundReason": "too much" }))
        .await;
    assert_eq!(over["code"], 9999, "{over}");
    assert!(
        over["msg"]
            .as_str()
            .unwrap()
            .contains("申请金额超出订单可退款余额"),
        "{over}"
    );

    let q = shop
        .call("/api/refund/query", json!({ "mchRefundNo": r1 }))
        .await;
    assert_eq!(q["code"], 0, "{q}");
    assert_eq!(q["data"]["state"], 2);
    assert_eq!(q["data"]["refundAmount"], 300);
    assert_eq!(q["data"]["payAmount"], 1000);
    assert_eq!(q["data"]["payOrderId"], pay_order_id.as_str());
    let by_id = shop
        .call(
            "/api/refund/query",
            json!({ "refundOrderId": first["data"]["refundOrderId"] }),
        )
        .await;
    assert_eq!(by_id["data"]["mchRefundNo"], r1.as_str());

    let order = shop
        .call("/api/pay/query", json!({ "payOrderId": pay_order_id }))
        .await;
    assert_eq!(
        order["data"]["state"], 2,
        "partially refunded stays paid: {order}"
    );
    // The refund notification, signed, with the refund's fields.
    let got = receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1);
    assert!(verifies(&got[0]), "{:?}", got[0].form);
    assert_eq!(got[0].field("mchRefundNo"), Some(r1.as_str()));
    assert_eq!(got[0].field("state"), Some("2"));
}

async fn a_qr_order_is_closed_and_a_slow_cancel_stays_in_progress_until_the_wallet_answers(
    app: TestApp,
) {
    let shop = shop(&app);
    let qr = shop
        .call("/api/pay/unifiedOrder", json!({ "mchOrderNo": reference("qr"), "wayCode": "QR_CASHIER", "amount": 500, "currency": "cny", "subject": "s", "body": "b" }))
        .await;
    assert_eq!(qr["data"]["orderState"], 1, "{qr}");
    assert_eq!(qr["data"]["payDataType"], "codeUrl");
    let id = qr["data"]["payOrderId"].as_str().unwrap().to_owned();
    let closed = shop
        .call("/api/pay/close", json!({ "payOrderId": id }))
        .await;
    assert_eq!(closed["code"], 0, "{closed}");
    let q = shop
        .call("/api/pay/query", json!({ "payOrderId": id }))
        .await;
    assert_eq!(q["data"]["state"], 6);

    // 5.53 CNY: the sandbox wallet leaves the cancel in progress.
    let paid = shop.order(&reference("slow"), 553, None).await;
    let id = paid["data"]["payOrderId"].as_str().unwrap().to_owned();
    let c = shop
        .call("/api/pay/cancel", json!({ "payOrderId": id }))
        .await;
    assert_eq!(c["data"]["state"], 1, "{c}");
    let cancel_id = c["data"]["cancelOrderId"].as_str().unwrap().to_owned();
    let again = shop
        .call("/api/pay/cancel", json!({ "payOrderId": id }))
        .await;
    assert_eq!(
        again["data"]["cancelOrderId"],
        cancel_id.as_str(),
        "the same cancel order answers"
    );
    let (status, _) = app
        .raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/cancels/{cancel_id}/settle"),
            Some("application/json"),
            br#"{"outcome":"succeeded"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let q = shop
        .call("/api/cancel/query", json!({ "cancelOrderId": cancel_id }))
        .await;
    assert_eq!(q["data"]["state"], 2, "{q}");
    assert_eq!(
        shop.call("/api/pay/query", json!({ "payOrderId": id }))
            .await["data"]["state"],
        4
    );
}

async fn bad_unified_requests_get_precise_errors_and_change_nothing(app: TestApp) {
    let good = shop(&app);
    let order_no = reference("bad");
    let paid = good.order(&order_no, 800, None).await;
    let id = paid["data"]["payOrderId"].as_str().unwrap().to_owned();

    let wrong_secret = Shop {
        secret: "not-the-secret".into(),
        ..shop(&app)
    };
    let a = wrong_secret
        .call("/api/pay/query", json!({ "payOrderId": id }))
        .await;
    assert_eq!(a["code"], 9999);
    assert!(a["msg"].as_str().unwrap().contains("验签失败"), "{a}");
    let wrong_mch = Shop {
        mch_no: "M0000000000".into(),
        ..shop(&app)
    };
    let b = wrong_mch
        .call("/api/pay/query", json!({ "payOrderId": id }))
        .await;
    assert!(
        b["msg"]
            .as_str()
            .unwrap()
            .contains("参数appId与商户号不匹配"),
        "{b}"
    );
    let unknown = good
        .call("/api/pay/query", json!({ "payOrderId": "P1" }))
        .await;
    assert!(
        unknown["msg"].as_str().unwrap().contains("订单不存在"),
        "{unknown}"
    );
    let bad_amount = good
        .call("/api/pay/unifiedOrder", json!({ "mchOrderNo": reference("x"), "wayCode": "AUTO_BAR", "amount": "1.5", "currency": "cny", "subject": "s", "body": "b", "channelExtra": "{\"authCode\":\"1\"}" }))
        .await;
    assert_eq!(bad_amount["code"], 11, "{bad_amount}");

    // Cancel on another day: the sandbox ages the payment by a day.
    let (status, _) = app
        .raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/payments/{id}/age"),
            Some("application/json"),
            br#"{"hours":25}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let late = good
        .call("/api/pay/cancel", json!({ "payOrderId": id }))
        .await;
    assert_eq!(late["code"], 9999, "{late}");
    assert!(late["msg"].as_str().unwrap().contains("当天"), "{late}");
    // A refund is still possible, and nothing above changed the order.
    let q = good
        .call("/api/pay/query", json!({ "mchOrderNo": order_no }))
        .await;
    assert_eq!(q["data"]["state"], 2);
    let unknown_path = app
        .raw(
            reqwest::Method::POST,
            "/api/pay/nothing",
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(unknown_path.0, 404);
    assert_eq!(unknown_path.1["code"], 11);
}

on_both_backends!(
    seed_004_cancel_story_with_its_notification,
    partial_refunds_and_their_query,
    a_qr_order_is_closed_and_a_slow_cancel_stays_in_progress_until_the_wallet_answers,
    bad_unified_requests_get_precise_errors_and_change_nothing,
);

/// `success ` with a space is not `success`: the unified notification is sent again.
async fn a_unified_acknowledgement_with_white_space_is_retried(backend: Backend) {
    let schedule = ["--notify-schedule-s", "0,1,1", "--notify-timeout-ms", "400"];
    let Some(app) = spawn_app_with(backend, &schedule).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![Answer::ok("success "), Answer::ok("success\n")]);
    let paid = shop(&app)
        .order(&reference("ws"), 200, Some(&receiver.url))
        .await;
    let id = paid["data"]["payOrderId"].as_str().unwrap().to_owned();
    let got = receiver.wait_for(3, 15).await;
    assert_eq!(got.len(), 3, "two answers with white space, then SUCCESS");
    assert!(got.iter().all(verifies));
    let no = id.trim_start_matches('P');
    let n = app.wait_for_notification(no, 0, "delivered", 10).await;
    assert_eq!(n["attempts"], 3, "{n}");
}

#[tokio::test]
async fn a_unified_acknowledgement_with_white_space_is_retried_on_sqlite() {
    a_unified_acknowledgement_with_white_space_is_retried(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_unified_acknowledgement_with_white_space_is_retried_on_postgres() {
    a_unified_acknowledgement_with_white_space_is_retried(Backend::Postgres).await
}
