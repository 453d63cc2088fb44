//! Tests of the endpoints and notifications against the real lifecycle service (SQLite store,
//! sandbox wallet, a manual clock), signing requests and checking answers with an independent
//! implementation of the Jeepay sign.

use crate::api::{handle, Endpoint};
use crate::notify::UnifiedRenderer;
use axum::http::StatusCode;
use chrono::Duration;
use md5::{Digest, Md5};
use serde_json::{json, Value as Json};
use tillgate_core::model::NotificationFilter;
use tillgate_core::notify::{RenderError, Renderer, Snapshot};
use tillgate_core::snapshot::Topic;
use tillgate_core::{Dialect, PaymentKey};
use tillgate_domain::MerchantZone;
use tillgate_testkit::{start, Kit};
use tillgate_wire::Params;

const MCH: &str = "M1621873433953";
const APP: &str = "60cc09bce4b0f1c0b83761c9";
const SECRET: &str = "offline-test-key";
const OTHER_MCH: &str = "M2000000000001";
const OTHER_APP: &str = "70cc09bce4b0f1c0b83761c9";
const OTHER_SECRET: &str = "other-secret";

type Harness = Kit;

async fn harness() -> Harness {
    let h = Kit::builder("unified").build().await;
    let m = h.merchant(MCH, MerchantZone::utc()).await;
    h.app_of(&m, APP, SECRET).await;
    let other = h.merchant(OTHER_MCH, MerchantZone::utc()).await;
    h.app_of(&other, OTHER_APP, OTHER_SECRET).await;
    h
}

fn renderer(h: &Harness) -> UnifiedRenderer {
    UnifiedRenderer::new(h.credentials.clone(), h.clock.clone())
}

/// An independent Jeepay sign: ASCII keys, so lower-casing the fragments gives Java's order.
fn independent_sign(entries: &[(String, String)], secret: &str) -> String {
    let mut fragments: Vec<String> = entries
        .iter()
        .filter(|(k, v)| k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    fragments.sort_by_key(|f| f.to_lowercase());
    let text = format!("{}key={secret}", fragments.concat());
    hex::encode_upper(Md5::digest(text.as_bytes()))
}

fn json_entries(data: &Json) -> Vec<(String, String)> {
    data.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// A request as the SDK sends it: JSON, common fields, signed over everything.
fn request(mch: &str, app: &str, secret: &str, fields: &[(&str, Json)]) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("mchNo".into(), json!(mch));
    object.insert("appId".into(), json!(app));
    object.insert("reqTime".into(), json!("1700000000123"));
    object.insert("version".into(), json!("1.0"));
    object.insert("signType".into(), json!("MD5"));
    for (k, v) in fields {
        object.insert((*k).to_owned(), v.clone());
    }
    let sign = independent_sign(&json_entries(&Json::Object(object.clone())), secret);
    object.insert("sign".into(), json!(sign));
    serde_json::to_vec(&Json::Object(object)).unwrap()
}

async fn raw(h: &Harness, ep: Endpoint, content_type: &str, body: &[u8]) -> (StatusCode, Json) {
    let response = handle(
        &h.app,
        &tillgate_wire::RateLimit::off(),
        ep,
        Some(content_type),
        body,
    )
    .await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Sends a signed request and checks the envelope: a success carries data signed with the
/// app's secret, an error has neither data nor sign.
async fn call(h: &Harness, ep: Endpoint, fields: &[(&str, Json)]) -> Json {
    let (status, body) = raw(
        h,
        ep,
        "application/json",
        &request(MCH, APP, SECRET, fields),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    if body["code"] == 0 {
        assert_eq!(body["msg"], "SUCCESS");
        let expected = independent_sign(&json_entries(&body["data"]), SECRET);
        assert_eq!(body["sign"], expected, "answer sign of {body}");
    } else {
        assert!(
            body.get("data").is_none() && body.get("sign").is_none(),
            "{body}"
        );
    }
    body
}

fn order(
    mch_order_no: &str,
    amount: i64,
    way: &str,
    auth: Option<&str>,
) -> Vec<(&'static str, Json)> {
    let mut f = vec![
        ("mchOrderNo", json!(mch_order_no)),
        ("wayCode", json!(way)),
        ("amount", json!(amount)),
        ("currency", json!("cny")),
        ("subject", json!("商品")),
        ("body", json!("测试商品")),
        ("clientIp", json!("192.166.1.132")),
        ("extParam", json!("ext-1")),
    ];
    if let Some(code) = auth {
        f.push((
            "channelExtra",
            json!(json!({ "authCode": code }).to_string()),
        ));
    }
    f
}

async fn paid_order(h: &Harness, mch_order_no: &str, amount: i64) -> Json {
    let body = call(
        h,
        Endpoint::UnifiedOrder,
        &order(mch_order_no, amount, "AUTO_BAR", Some("134567890123456789")),
    )
    .await;
    assert_eq!(body["code"], 0, "{body}");
    body["data"].clone()
}

fn msg(body: &Json) -> &str {
    body["msg"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_barcode_order_is_paid_replayed_and_guarded() {
    let h = harness().await;
    let data = paid_order(&h, "order-1", 100).await;
    assert_eq!(data["orderState"], 2);
    assert_eq!(data["mchOrderNo"], "order-1");
    assert_eq!(data["payDataType"], "none");
    let pay_order_id = data["payOrderId"].as_str().unwrap().to_owned();
    assert!(pay_order_id.starts_with('P') && pay_order_id.len() == 19);
    assert!(data.get("errCode").is_none());

    // The same request again replays the same order.
    let again = paid_order(&h, "order-1", 100).await;
    assert_eq!(again["payOrderId"], pay_order_id.as_str());

    // The same mchOrderNo with another amount, or another authCode, is refused.
    let body = call(
        &h,
        Endpoint::UnifiedOrder,
        &order("order-1", 200, "AUTO_BAR", Some("134567890123456789")),
    )
    .await;
    assert_eq!(body["code"], 9999);
    assert!(msg(&body).starts_with("商户订单[order-1]已存在"), "{body}");
    let body = call(
        &h,
        Endpoint::UnifiedOrder,
        &order("order-1", 100, "AUTO_BAR", Some("999")),
    )
    .await;
    assert!(msg(&body).starts_with("商户订单[order-1]已存在"), "{body}");
}

#[tokio::test]
async fn the_sandbox_amount_chooses_declined_or_pending() {
    let h = harness().await;
    let declined = paid_order(&h, "order-51", 151).await;
    assert_eq!(declined["orderState"], 3);
    assert_eq!(declined["errCode"], "DECLINED");
    let pending = paid_order(&h, "order-52", 152).await;
    assert_eq!(pending["orderState"], 1);
    let query = call(&h, Endpoint::Query, &[("mchOrderNo", json!("order-51"))]).await;
    assert_eq!(query["data"]["state"], 3);
    assert!(query["data"].get("successTime").is_none());
}

#[tokio::test]
async fn a_qr_cashier_order_waits_for_the_customer_and_closes() {
    let h = harness().await;
    let body = call(
        &h,
        Endpoint::UnifiedOrder,
        &order("qr-1", 300, "QR_CASHIER", None),
    )
    .await;
    let data = &body["data"];
    assert_eq!(data["orderState"], 1, "{body}");
    assert_eq!(data["payDataType"], "codeUrl");
    let pay_order_id = data["payOrderId"].as_str().unwrap();
    let transaction_no = pay_order_id.strip_prefix('P').unwrap();
    assert_eq!(data["payData"], h.app.payment_page_url(transaction_no));
    assert!(
        data["payData"]
            .as_str()
            .unwrap()
            .contains(&format!("/pay/{transaction_no}-")),
        "{body}"
    );

    let closed = call(&h, Endpoint::Close, &[("payOrderId", json!(pay_order_id))]).await;
    assert_eq!(closed["code"], 0, "{closed}");
    assert_eq!(closed["data"], json!({}));
    assert_eq!(
        closed["sign"],
        hex::encode_upper(Md5::digest(format!("key={SECRET}").as_bytes()))
    );
    let query = call(&h, Endpoint::Query, &[("mchOrderNo", json!("qr-1"))]).await;
    assert_eq!(query["data"]["state"], 6);
    // Jeepay closes only orders in state 0 or 1.
    let again = call(&h, Endpoint::Close, &[("mchOrderNo", json!("qr-1"))]).await;
    assert!(msg(&again).starts_with("当前订单不可关闭"), "{again}");
    // A cancel of a closed order is not a cancel.
    let cancel = call(&h, Endpoint::Cancel, &[("mchOrderNo", json!("qr-1"))]).await;
    assert_eq!(cancel["code"], 9999, "{cancel}");
    // A paid order cannot be closed.
    paid_order(&h, "paid-1", 100).await;
    let body = call(&h, Endpoint::Close, &[("mchOrderNo", json!("paid-1"))]).await;
    assert!(msg(&body).starts_with("当前订单不可关闭"), "{body}");
}

#[tokio::test]
async fn unsupported_way_codes_and_missing_auth_codes() {
    let h = harness().await;
    let body = call(
        &h,
        Endpoint::UnifiedOrder,
        &order("o-1", 100, "WX_JSAPI", None),
    )
    .await;
    assert_eq!(body["code"], 9999);
    assert!(msg(&body).starts_with("不支持的支付方式"));
    let body = call(
        &h,
        Endpoint::UnifiedOrder,
        &order("o-2", 100, "ALI_BAR", None),
    )
    .await;
    assert_eq!(body["code"], 11, "{body}");
    // Neither created an order.
    let q = call(&h, Endpoint::Query, &[("mchOrderNo", json!("o-2"))]).await;
    assert!(msg(&q).starts_with("订单不存在"));
    // Notification URLs follow the gateway's policy (by default not the gateway's own machine).
    for url in ["ftp://shop.example/n", "http://127.0.0.1:9000/n"] {
        let mut f = order("o-3", 100, "AUTO_BAR", Some("1"));
        f.push(("notifyUrl", json!(url)));
        let body = call(&h, Endpoint::UnifiedOrder, &f).await;
        assert_eq!(body["code"], 11, "{url}: {body}");
    }
}

/// One HTTP/1.1 request over a plain socket; the status and the body.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Json) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer before it has read an oversized body.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text[9..12].parse().unwrap();
    let (_, json_body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(json_body).unwrap())
}

#[tokio::test]
async fn the_router_serves_every_path_and_answers_an_oversized_body_in_its_envelope() {
    let h = harness().await;
    let router = crate::router(h.app.clone()).layer(axum::extract::DefaultBodyLimit::max(1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let paths = [
        "/api/pay/unifiedOrder",
        "/api/pay/query",
        "/api/pay/close",
        "/api/pay/cancel",
        "/api/cancel/query",
        "/api/refund/refundOrder",
        "/api/refund/query",
    ];
    for path in paths {
        let (status, body) = http_post(addr, path, &request(MCH, APP, SECRET, &[])).await;
        assert_eq!(status, 200, "{path}");
        // Signed, but each endpoint misses its own fields.
        assert_eq!(body["code"], 11, "{path}: {body}");
    }
    let big = vec![b'a'; 4096];
    let (status, body) = http_post(addr, "/api/pay/query", &big).await;
    assert_eq!((status, body["code"].clone()), (200, json!(11)), "{body}");
    server.abort();
}

#[tokio::test]
async fn authentication_comes_first_and_each_failure_is_named() {
    let h = harness().await;
    let fields = [("mchOrderNo", json!("x"))];
    // Unknown app, app of another merchant, wrong secret.
    let (_, body) = raw(
        &h,
        Endpoint::Query,
        "application/json",
        &request(MCH, "no-such-app", SECRET, &fields),
    )
    .await;
    assert_eq!(body, json!({"code": 9999, "msg": msg(&body)}));
    assert!(msg(&body).starts_with("商户或商户应用不存在"));
    let (_, body) = raw(
        &h,
        Endpoint::Query,
        "application/json",
        &request(MCH, OTHER_APP, OTHER_SECRET, &fields),
    )
    .await;
    assert!(msg(&body).starts_with("参数appId与商户号不匹配"), "{body}");
    let (_, body) = raw(
        &h,
        Endpoint::Query,
        "application/json",
        &request(MCH, APP, "wrong", &fields),
    )
    .await;
    assert!(msg(&body).starts_with("验签失败"), "{body}");

    // Missing common fields and malformed bodies are code 11.
    for (missing, bad_body) in [
        (
            "mchNo",
            r#"{"appId":"a","sign":"s","reqTime":"1","version":"1.0","signType":"MD5"}"#,
        ),
        (
            "appId",
            r#"{"mchNo":"m","sign":"s","reqTime":"1","version":"1.0","signType":"MD5"}"#,
        ),
        (
            "sign",
            r#"{"mchNo":"m","appId":"a","reqTime":"1","version":"1.0","signType":"MD5"}"#,
        ),
        (
            "reqTime",
            r#"{"mchNo":"m","appId":"a","sign":"s","version":"1.0","signType":"MD5"}"#,
        ),
    ] {
        let (status, body) =
            raw(&h, Endpoint::Query, "application/json", bad_body.as_bytes()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["code"], 11, "{missing}: {body}");
        assert!(msg(&body).contains(missing), "{missing}: {body}");
    }
    for garbage in ["", "{", "[1,2]", r#"{"a":{"b":1}}"#, "\u{0}\u{1}"] {
        let (status, body) = raw(
            &h,
            Endpoint::UnifiedOrder,
            "application/json",
            garbage.as_bytes(),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::OK, json!(11)),
            "{garbage:?}"
        );
    }

    // Field errors after a good sign: amounts must be integer minor units.
    for amount in [
        json!("1.5"),
        json!(-1),
        json!(0),
        json!("abc"),
        json!("99999999999999999999"),
    ] {
        let mut f = order("bad-amount", 0, "AUTO_BAR", Some("1"));
        f[2] = ("amount", amount.clone());
        let body = call(&h, Endpoint::UnifiedOrder, &f).await;
        assert_eq!(body["code"], 11, "{amount}: {body}");
    }
    let mut f = order("bad-currency", 100, "AUTO_BAR", Some("1"));
    f[3] = ("currency", json!("xyz"));
    assert_eq!(call(&h, Endpoint::UnifiedOrder, &f).await["code"], 11);
}

#[tokio::test]
async fn a_form_body_and_a_sign_over_the_beans_fields_alone_both_verify() {
    let h = harness().await;
    paid_order(&h, "form-1", 100).await;
    let mut entries: Vec<(String, String)> = [
        ("mchNo", MCH),
        ("appId", APP),
        ("reqTime", "1700000000123"),
        ("version", "1.0"),
        ("signType", "MD5"),
        ("mchOrderNo", "form-1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // Signed before an unknown field is added: Jeepay ignores fields its bean lacks.
    let sign = independent_sign(&entries, SECRET);
    entries.push(("clientTag".into(), "pos-7".into()));
    entries.push(("sign".into(), sign));
    let form = serde_urlencoded::to_string(&entries).unwrap();
    let (_, body) = raw(
        &h,
        Endpoint::Query,
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )
    .await;
    assert_eq!(body["code"], 0, "{body}");
    assert_eq!(body["data"]["mchOrderNo"], "form-1");
}

#[tokio::test]
async fn the_query_shows_the_order_as_jeepay_does() {
    let h = harness().await;
    let data = paid_order(&h, "q-1", 100).await;
    let pay_order_id = data["payOrderId"].as_str().unwrap().to_owned();
    let bare = pay_order_id.trim_start_matches('P').to_owned();
    let by_id = call(&h, Endpoint::Query, &[("payOrderId", json!(pay_order_id))]).await;
    let by_bare = call(&h, Endpoint::Query, &[("payOrderId", json!(bare))]).await;
    let by_ref = call(&h, Endpoint::Query, &[("mchOrderNo", json!("q-1"))]).await;
    let both = call(
        &h,
        Endpoint::Query,
        &[
            ("payOrderId", json!(pay_order_id)),
            ("mchOrderNo", json!("q-1")),
        ],
    )
    .await;
    assert_eq!(by_id["data"], by_bare["data"]);
    assert_eq!(by_id["data"], by_ref["data"]);
    assert_eq!(by_id["data"], both["data"]);
    let d = &by_id["data"];
    let at = start().timestamp_millis();
    assert_eq!(
        d,
        &json!({
            "payOrderId": pay_order_id,
            "mchNo": MCH,
            "appId": APP,
            "mchOrderNo": "q-1",
            "ifCode": "sandbox",
            "wayCode": "AUTO_BAR",
            "amount": 100,
            "currency": "cny",
            "state": 2,
            "refundState": 0,
            "clientIp": "192.166.1.132",
            "subject": "商品",
            "body": "测试商品",
            "extParam": "ext-1",
            "successTime": at,
            "createdAt": at,
        })
    );
    let mismatch = call(
        &h,
        Endpoint::Query,
        &[
            ("payOrderId", json!(pay_order_id)),
            ("mchOrderNo", json!("q-2")),
        ],
    )
    .await;
    assert!(msg(&mismatch).starts_with("订单不存在"), "{mismatch}");
    let neither = call(&h, Endpoint::Query, &[]).await;
    assert_eq!(neither["code"], 11);
    // Another merchant's app cannot see it.
    let (_, other) = raw(
        &h,
        Endpoint::Query,
        "application/json",
        &request(
            OTHER_MCH,
            OTHER_APP,
            OTHER_SECRET,
            &[("mchOrderNo", json!("q-1"))],
        ),
    )
    .await;
    assert!(msg(&other).starts_with("订单不存在"), "{other}");
}

#[tokio::test]
async fn refunds_in_parts_with_idempotent_keys_and_jeepays_refusals() {
    let h = harness().await;
    let data = paid_order(&h, "r-1", 200).await;
    let pay_order_id = data["payOrderId"].as_str().unwrap().to_owned();
    let refund = |no: &str, amount: i64| {
        vec![
            ("payOrderId", json!(pay_order_id.clone())),
            ("mchRefundNo", json!(no)),
            ("refundAmount", json!(amount)),
            ("currency", json!("CNY")),
            ("refundReason", json!("退货")),
            ("extParam", json!("re-1")),
        ]
    };
    let first = call(&h, Endpoint::RefundOrder, &refund("rf-1", 40)).await;
    let d = &first["data"];
    assert_eq!(d["state"], 2, "{first}");
    assert_eq!(
        (d["payAmount"].clone(), d["refundAmount"].clone()),
        (json!(200), json!(40))
    );
    assert_eq!(d["mchRefundNo"], "rf-1");
    let refund_order_id = d["refundOrderId"].as_str().unwrap().to_owned();
    assert!(refund_order_id.starts_with('R'));

    let replay = call(&h, Endpoint::RefundOrder, &refund("rf-1", 40)).await;
    assert_eq!(replay["data"]["refundOrderId"], refund_order_id.as_str());
    let reused = call(&h, Endpoint::RefundOrder, &refund("rf-1", 41)).await;
    assert!(
        msg(&reused).starts_with("商户退款订单号[rf-1]已存在"),
        "{reused}"
    );
    let over = call(&h, Endpoint::RefundOrder, &refund("rf-2", 170)).await;
    assert!(
        msg(&over).starts_with("申请金额超出订单可退款余额，请检查退款金额"),
        "{over}"
    );
    let declined = call(&h, Endpoint::RefundOrder, &refund("rf-3", 61)).await;
    assert_eq!(declined["data"]["state"], 3, "{declined}");
    assert_eq!(declined["data"]["errCode"], "DECLINED");
    let mut other_currency = refund("rf-4", 10);
    other_currency[3] = ("currency", json!("USD"));
    let body = call(&h, Endpoint::RefundOrder, &other_currency).await;
    assert_eq!(body["code"], 9999, "{body}");

    let q = call(&h, Endpoint::Query, &[("payOrderId", json!(pay_order_id))]).await;
    assert_eq!(
        (q["data"]["state"].clone(), q["data"]["refundState"].clone()),
        (json!(2), json!(1))
    );

    let by_no = call(
        &h,
        Endpoint::RefundQuery,
        &[("refundOrderId", json!(refund_order_id))],
    )
    .await;
    let by_ref = call(&h, Endpoint::RefundQuery, &[("mchRefundNo", json!("rf-1"))]).await;
    assert_eq!(by_no["data"], by_ref["data"]);
    let at = start().timestamp_millis();
    assert_eq!(
        by_no["data"],
        json!({
            "refundOrderId": refund_order_id,
            "payOrderId": pay_order_id,
            "mchNo": MCH,
            "appId": APP,
            "mchRefundNo": "rf-1",
            "payAmount": 200,
            "refundAmount": 40,
            "currency": "cny",
            "state": 2,
            "extParam": "re-1",
            "successTime": at,
            "createdAt": at,
        })
    );
    let mismatch = call(
        &h,
        Endpoint::RefundQuery,
        &[
            ("refundOrderId", json!(refund_order_id)),
            ("mchRefundNo", json!("rf-3")),
        ],
    )
    .await;
    assert!(msg(&mismatch).starts_with("退款订单不存在"), "{mismatch}");

    // The rest, then nothing more.
    let rest = call(&h, Endpoint::RefundOrder, &refund("rf-5", 160)).await;
    assert_eq!(rest["data"]["state"], 2);
    let q = call(&h, Endpoint::Query, &[("payOrderId", json!(pay_order_id))]).await;
    assert_eq!(
        (q["data"]["state"].clone(), q["data"]["refundState"].clone()),
        (json!(5), json!(2))
    );
    let body = call(&h, Endpoint::RefundOrder, &refund("rf-6", 1)).await;
    assert!(msg(&body).starts_with("订单已全额退款"), "{body}");

    // A pending order is not refundable.
    let pending = paid_order(&h, "r-2", 152).await;
    let mut f = refund("rf-7", 10);
    f[0] = ("payOrderId", pending["payOrderId"].clone());
    let body = call(&h, Endpoint::RefundOrder, &f).await;
    assert!(
        msg(&body).starts_with("订单状态不正确， 无法完成退款"),
        "{body}"
    );
}

#[tokio::test]
async fn a_same_day_cancel_answers_its_cancel_order_and_is_queried() {
    let h = harness().await;
    let data = paid_order(&h, "c-1", 100).await;
    let pay_order_id = data["payOrderId"].as_str().unwrap().to_owned();
    let fields = [
        ("payOrderId", json!(pay_order_id)),
        ("mchOrderNo", json!("c-1")),
        ("clientIp", json!("192.166.1.132")),
        ("notifyUrl", json!("https://shop.example/cancel-notify")),
        ("channelExtra", json!("")),
        ("extParam", json!("cx-1")),
    ];
    let body = call(&h, Endpoint::Cancel, &fields).await;
    let d = &body["data"];
    assert_eq!(d["state"], 2, "{body}");
    let cancel_order_id = d["cancelOrderId"].as_str().unwrap().to_owned();
    assert!(cancel_order_id.starts_with('C'));
    let again = call(&h, Endpoint::Cancel, &fields).await;
    assert_eq!(again["data"]["cancelOrderId"], cancel_order_id.as_str());
    let q = call(&h, Endpoint::Query, &[("payOrderId", json!(pay_order_id))]).await;
    assert_eq!(q["data"]["state"], 4);

    let cq = call(
        &h,
        Endpoint::CancelQuery,
        &[("cancelOrderId", json!(cancel_order_id))],
    )
    .await;
    let at = start().timestamp_millis();
    assert_eq!(
        cq["data"],
        json!({
            "cancelOrderId": cancel_order_id,
            "payOrderId": pay_order_id,
            "mchNo": MCH,
            "appId": APP,
            "payAmount": 100,
            "currency": "cny",
            "state": 2,
            "extraParam": "cx-1",
            "successTime": at,
            "createdAt": at,
        })
    );
    let missing = call(&h, Endpoint::CancelQuery, &[]).await;
    assert_eq!(missing["code"], 11);
    let unknown = call(&h, Endpoint::CancelQuery, &[("cancelOrderId", json!("C1"))]).await;
    assert!(msg(&unknown).starts_with("撤销订单不存在"));

    // In progress while the wallet has not answered (sandbox: amounts ending in 53).
    let slow = paid_order(&h, "c-2", 153).await;
    let body = call(
        &h,
        Endpoint::Cancel,
        &[("payOrderId", slow["payOrderId"].clone())],
    )
    .await;
    assert_eq!(body["data"]["state"], 1, "{body}");
    let again = call(
        &h,
        Endpoint::Cancel,
        &[("payOrderId", slow["payOrderId"].clone())],
    )
    .await;
    assert_eq!(again["data"], body["data"]);

    // Not after a refund, and not on another day.
    paid_order(&h, "c-3", 100).await;
    let refund = call(
        &h,
        Endpoint::RefundOrder,
        &[
            ("mchOrderNo", json!("c-3")),
            ("mchRefundNo", json!("c-3-r")),
            ("refundAmount", json!(10)),
            ("currency", json!("cny")),
            ("refundReason", json!("r")),
        ],
    )
    .await;
    assert_eq!(refund["code"], 0);
    let body = call(&h, Endpoint::Cancel, &[("mchOrderNo", json!("c-3"))]).await;
    assert!(msg(&body).starts_with("订单已发生退款"), "{body}");
    paid_order(&h, "c-4", 100).await;
    h.clock.advance(Duration::days(1));
    let body = call(&h, Endpoint::Cancel, &[("mchOrderNo", json!("c-4"))]).await;
    assert!(msg(&body).starts_with("仅支持撤销当天的订单"), "{body}");
}

/// Parses a rendered form body and checks its sign with the independent implementation.
fn verified_form(body: &[u8], secret: &str) -> Vec<(String, String)> {
    let params = Params::parse(Some("application/x-www-form-urlencoded"), body).unwrap();
    let entries: Vec<(String, String)> = params
        .iter()
        .map(|(k, _)| (k.to_owned(), params.text(k).unwrap_or("").to_owned()))
        .collect();
    assert!(entries.iter().all(|(_, v)| !v.is_empty()), "{entries:?}");
    let sign = params.text("sign").unwrap();
    assert_eq!(sign, independent_sign(&entries, secret), "{entries:?}");
    entries
}

fn field<'a>(entries: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The notifications the core queued, as snapshots.
async fn queued(h: &Harness) -> Vec<Snapshot> {
    let rows = h
        .app
        .store()
        .notifications(&NotificationFilter {
            limit: 100,
            ..NotificationFilter::default()
        })
        .await
        .unwrap();
    let mut snapshots: Vec<Snapshot> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.dialect, Dialect::Unified);
            Snapshot::from_json(&r.snapshot, r.dialect).unwrap()
        })
        .collect();
    snapshots.sort_by_key(|f| f.at);
    snapshots
}

#[tokio::test]
async fn notifications_carry_the_query_fields_and_a_verifiable_sign() {
    let h = harness().await;
    let renderer = renderer(&h);
    let mut f = order("n-1", 100, "WX_BAR", Some("134"));
    f.push(("notifyUrl", json!("https://shop.example/pay-notify")));
    let placed = call(&h, Endpoint::UnifiedOrder, &f).await;
    let pay_order_id = placed["data"]["payOrderId"].as_str().unwrap().to_owned();
    h.clock.advance(Duration::seconds(5));
    let refund = call(
        &h,
        Endpoint::RefundOrder,
        &[
            ("mchOrderNo", json!("n-1")),
            ("mchRefundNo", json!("n-1-r")),
            ("refundAmount", json!(30)),
            ("currency", json!("cny")),
            ("refundReason", json!("r")),
            ("notifyUrl", json!("https://shop.example/refund-notify")),
            ("extParam", json!("rx")),
        ],
    )
    .await;
    assert_eq!(refund["code"], 0, "{refund}");
    h.clock.advance(Duration::seconds(5));
    let mut g = order("n-2", 200, "ALI_BAR", Some("135"));
    g.push(("notifyUrl", json!("https://shop.example/pay-notify")));
    let second = call(&h, Endpoint::UnifiedOrder, &g).await;
    h.clock.advance(Duration::seconds(5));
    let cancel = call(
        &h,
        Endpoint::Cancel,
        &[
            ("payOrderId", second["data"]["payOrderId"].clone()),
            ("notifyUrl", json!("https://shop.example/cancel-notify")),
            ("extParam", json!("cx")),
        ],
    )
    .await;
    assert_eq!(cancel["data"]["state"], 2, "{cancel}");

    let facts = queued(&h).await;
    let topics: Vec<&str> = facts.iter().map(|f| f.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "payment.paid",
            "refund.succeeded",
            "payment.paid",
            "cancel.succeeded"
        ]
    );

    let t0 = start().timestamp_millis();
    let now = t0 + 15_000;
    // The pay notify: the query's fields, as of when it was paid, plus reqTime and sign.
    let pay = renderer.render(&facts[0]).await.unwrap();
    assert_eq!(pay.content_type, "application/x-www-form-urlencoded");
    assert!(pay.ack.accepts(b"SUCCESS") && !pay.ack.accepts(b"success\n"));
    let e = verified_form(&pay.body, SECRET);
    assert_eq!(field(&e, "payOrderId"), Some(pay_order_id.as_str()));
    assert_eq!(field(&e, "state"), Some("2"));
    assert_eq!(field(&e, "amount"), Some("100"));
    assert_eq!(field(&e, "currency"), Some("cny"));
    assert_eq!(field(&e, "wayCode"), Some("WX_BAR"));
    assert_eq!(field(&e, "ifCode"), Some("sandbox"));
    assert_eq!(field(&e, "subject"), Some("商品"));
    assert_eq!(field(&e, "successTime"), Some(t0.to_string().as_str()));
    assert_eq!(field(&e, "reqTime"), Some(now.to_string().as_str()));
    assert_eq!(field(&e, "errCode"), None);

    let refunded = renderer.render(&facts[1]).await.unwrap();
    let e = verified_form(&refunded.body, SECRET);
    assert_eq!(
        field(&e, "refundOrderId"),
        refund["data"]["refundOrderId"].as_str()
    );
    assert_eq!(field(&e, "payOrderId"), Some(pay_order_id.as_str()));
    assert_eq!(field(&e, "mchRefundNo"), Some("n-1-r"));
    assert_eq!(field(&e, "refundAmount"), Some("30"));
    assert_eq!(field(&e, "payAmount"), Some("100"));
    assert_eq!(field(&e, "state"), Some("2"));
    assert_eq!(field(&e, "extParam"), Some("rx"));
    assert_eq!(
        field(&e, "successTime"),
        Some((t0 + 5_000).to_string().as_str())
    );

    let cancelled = renderer.render(&facts[3]).await.unwrap();
    let e = verified_form(&cancelled.body, SECRET);
    let names: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "appId",
            "cancelOrderId",
            "createdAt",
            "currency",
            "extraParam",
            "mchNo",
            "payAmount",
            "payOrderId",
            "reqTime",
            "sign",
            "state",
            "successTime"
        ]
    );
    assert_eq!(
        field(&e, "cancelOrderId"),
        cancel["data"]["cancelOrderId"].as_str()
    );
    assert_eq!(field(&e, "payAmount"), Some("200"));
    assert_eq!(field(&e, "state"), Some("2"));
    assert_eq!(field(&e, "extraParam"), Some("cx"));
    assert_eq!(
        field(&e, "successTime"),
        Some((t0 + 15_000).to_string().as_str())
    );
}

#[tokio::test]
async fn snapshots_the_dialect_cannot_sign_are_refused_by_kind() {
    let h = harness().await;
    let renderer = renderer(&h);
    paid_order(&h, "f-1", 100).await;
    let merchant = h
        .credentials
        .app_credential(APP)
        .await
        .unwrap()
        .merchant
        .clone();
    let found = h
        .app
        .query(&merchant, &PaymentKey::Reference("f-1".into()))
        .await
        .unwrap();
    let good = Snapshot::of(Topic::PaymentPaid, &found.payment, h.app.now());
    assert!(renderer.render(&good).await.is_ok());

    // Unknown topics and states no longer reach a renderer: a snapshot is typed, and one
    // that does not read back is refused by `Snapshot::from_json` (tested in the core).
    let mut no_extra = good.clone();
    no_extra.payment.extra = None;
    let mut no_refund = good.clone();
    no_refund.topic = Topic::RefundSucceeded;
    let mut gone_app = good.clone();
    gone_app.payment.extra = Some(r#"{"appId":"gone"}"#.into());
    let mut other_merchant = good.clone();
    other_merchant.payment.merchant_no = OTHER_MCH.into();
    for (name, facts) in [
        ("no extra", no_extra),
        ("refund snapshot", no_refund),
        ("unknown app", gone_app),
        ("other merchant", other_merchant),
    ] {
        assert!(
            matches!(renderer.render(&facts).await, Err(RenderError::Invalid(_))),
            "{name}"
        );
    }
}
