//! Tests of `/Payments` and the notifications against the real lifecycle service (SQLite
//! store, sandbox wallet, a manual clock) with an in-memory terminal hub that approves,
//! declines, stays silent or is offline. Requests are signed, and notifications checked, with
//! an independent implementation of the HMAC sign.

use crate::api::handle;
use crate::envelope::Code;
use crate::notify::YabandRenderer;
use crate::YabandConfig;
use axum::http::StatusCode;
use chrono::{DateTime, Duration};
use hmac::{Hmac, Mac};
use serde_json::{json, Value as Json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use tillgate_core::model::NotificationFilter;
use tillgate_core::notify::{RenderError, Renderer, Snapshot};
use tillgate_core::service::{LifecycleError, PayRequest};
use tillgate_core::snapshot::Topic;
use tillgate_core::terminal::{CommandKind, TerminalResult};
use tillgate_core::{Dialect, PaymentKey};
use tillgate_domain::{ChannelOutcome, MerchantZone};
use tillgate_testkit::{start, Kit, Mode};

const MERCHANT: &str = "Y100001";
/// Seed 003's terminal (its secret is not public; the tests choose one).
const TID: &str = "T125119061";
const SECRET: &str = "3b1f0c6a9d2e4f5a8b7c6d5e4f3a2b1c";
/// A second terminal of the same merchant.
const TID2: &str = "T125119062";
const SECRET2: &str = "second-terminal-secret";
/// The docs' user and the secret that reproduces their vectors.
const DOCS_USER: &str = "016683";
const DOCS_SECRET: &str = "62184c09df1aeb63239e07079875be81";
/// A terminal of another merchant.
const OTHER_MERCHANT: &str = "Y200002";
const OTHER_TID: &str = "T900000001";
const OTHER_SECRET: &str = "other-merchant-secret";

struct Harness {
    kit: Kit,
    config: YabandConfig,
}

impl std::ops::Deref for Harness {
    type Target = Kit;
    fn deref(&self) -> &Kit {
        &self.kit
    }
}

async fn harness() -> Harness {
    let kit = Kit::builder("yabandpay").with_hub().build().await;
    let zone = MerchantZone::parse("Europe/Amsterdam").unwrap();
    let m = kit.merchant(MERCHANT, zone).await;
    for (tid, secret) in [(TID, SECRET), (TID2, SECRET2), (DOCS_USER, DOCS_SECRET)] {
        kit.terminal_of(&m, tid, secret).await;
    }
    let other = kit.merchant(OTHER_MERCHANT, zone).await;
    kit.terminal_of(&other, OTHER_TID, OTHER_SECRET).await;
    Harness {
        kit,
        config: YabandConfig {
            time_window: std::time::Duration::from_secs(300),
            terminal_wait: std::time::Duration::from_secs(1),
            merchant_limit: tillgate_wire::RateLimit::off(),
        },
    }
}

/// The text a JSON scalar is signed as.
fn scalar_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// An independent sign: a sorted map of every field's text, `k=v` joined by `&`, HMAC-SHA256.
/// `skip` leaves out the fields the signer drops (its empty-value rule).
fn independent_sign(
    fields: &BTreeMap<String, String>,
    secret: &str,
    skip: &dyn Fn(&str) -> bool,
) -> String {
    let text = fields
        .iter()
        .filter(|(_, v)| !skip(v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn body_with(
    user: &str,
    secret: &str,
    method: &str,
    time: Json,
    data: Json,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<u8> {
    let mut fields = BTreeMap::new();
    fields.insert("user".to_owned(), user.to_owned());
    fields.insert("method".to_owned(), method.to_owned());
    fields.insert("time".to_owned(), scalar_text(&time));
    for (k, v) in data.as_object().unwrap() {
        fields.insert(k.clone(), scalar_text(v));
    }
    let sign = independent_sign(&fields, secret, skip);
    serde_json::to_vec(&json!({
        "user": user, "sign": sign, "method": method, "time": time, "data": data
    }))
    .unwrap()
}

fn signed(h: &Harness, user: &str, secret: &str, method: &str, data: Json) -> Vec<u8> {
    body_with(
        user,
        secret,
        method,
        json!(h.app.now().timestamp()),
        data,
        &|_| false,
    )
}

async fn raw(h: &Harness, body: &[u8]) -> (StatusCode, Json) {
    let response = handle(&h.app, &h.config, body).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Sends a request signed by `user` and checks the envelope's shape.
async fn call_as(h: &Harness, user: &str, secret: &str, method: &str, data: Json) -> Json {
    let (status, body) = raw(h, &signed(h, user, secret, method, data)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_envelope(&body);
    body
}

fn assert_envelope(body: &Json) {
    let keys: HashSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["status", "code", "data", "message"]),
        "{body}"
    );
    if body["status"] == true {
        assert_eq!(
            (&body["code"], &body["message"]),
            (&json!("200"), &json!(""))
        );
        assert!(!body["data"].as_object().unwrap().is_empty());
    } else {
        assert_eq!(body["data"], json!({}), "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
}

async fn call(h: &Harness, method: &str, data: Json) -> Json {
    call_as(h, TID, SECRET, method, data).await
}

/// The data of a successful answer.
fn ok(body: &Json) -> Json {
    assert_eq!(body["status"], true, "{body}");
    body["data"].clone()
}

fn code(body: &Json) -> &str {
    body["code"].as_str().unwrap()
}

fn barcode(order_id: &str, amount: &str) -> Json {
    json!({
        "pay_method": "offline",
        "sub_pay_method": "WeChat Pay",
        "order_id": order_id,
        "auth_code": "134567890123456789",
        "amount": amount,
        "tip_amount": "0",
        "currency": "EUR",
        "description": "YabandPay test",
        "notify_url": "https://shop.example/notify",
        "demo": "test",
    })
}

/// A barcode payment made by terminal `TID`; its answer's data.
async fn paid(h: &Harness, order_id: &str, amount: &str) -> Json {
    ok(&call(h, "v3.BarcodePayment", barcode(order_id, amount)).await)
}

fn pos(order_id: &str, amount: &str, request_id: &str) -> Json {
    json!({
        "tid": TID,
        "order_id": order_id,
        "amount": amount,
        "currency": "EUR",
        "request_id": request_id,
        "operation": "1",
        "description": "counter 3",
        "notify_url": "https://shop.example/notify",
    })
}

fn reversal(trade_id: &Json, request_id: &str) -> Json {
    json!({"tid": TID, "trade_id": trade_id, "request_id": request_id})
}

async fn trade_state(h: &Harness, trade_id: &Json) -> String {
    let body = call(h, "v3.QueryOrder", json!({"trade_id": trade_id})).await;
    ok(&body)["transaction_info"]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The trade of `order_id` made by a request that did not answer it (offline terminal).
async fn trade_of(h: &Harness, order_id: &str) -> Json {
    let cred = h.credentials.terminal_credential(TID).await.unwrap();
    let found = h
        .app
        .query(&cred.merchant, &PaymentKey::Reference(order_id.into()))
        .await
        .unwrap();
    json!(found.payment.transaction_no)
}

/// The notifications the core queued, oldest first.
async fn queued(h: &Harness) -> Vec<(String, Snapshot)> {
    let rows = h
        .app
        .store()
        .notifications(&NotificationFilter {
            limit: 100,
            ..NotificationFilter::default()
        })
        .await
        .unwrap();
    let mut out: Vec<(String, Snapshot)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.dialect, Dialect::YabandPay);
            let snapshot = Snapshot::from_json(&r.snapshot, r.dialect).unwrap();
            (r.target_url.clone(), snapshot)
        })
        .collect();
    out.sort_by_key(|(_, f)| f.at);
    out
}

#[tokio::test]
async fn the_docs_query_order_request_authenticates_as_sent() {
    let h = harness().await;
    h.clock
        .set(DateTime::from_timestamp(1_546_588_959, 0).unwrap());
    // The docs' request, byte for byte as they print it (the trade is not in this gateway).
    let body = br#"{"user":"016683","sign":"5c8dada0e7369f2b0e42887bda855a278f064b5d34c5aa4bfd03b74310c50102","method":"v3.QueryOrder","time":1546588959,"data":{"trade_id":"a8d9be05-8b39-a766-dad0-553b0640d06a"}}"#;
    let (status, answer) = raw(&h, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_envelope(&answer);
    assert_eq!(code(&answer), "-4114", "{answer}");
    assert_eq!(
        answer["message"],
        "The trade_id does not exist: no trade of this merchant has that trade_id"
    );
    // One character of the sign off, and it is refused before anything is read.
    let forged = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("5c8dada0", "5c8dada1");
    assert_eq!(code(&raw(&h, forged.as_bytes()).await.1), "-3003");
}

#[tokio::test]
async fn a_barcode_payment_is_paid_replayed_and_guarded() {
    let h = harness().await;
    let d = paid(&h, "order-1", "0.10").await;
    let trade_id = d["trade_id"].as_str().unwrap().to_owned();
    assert_eq!(trade_id.len(), 18);
    let at = start().timestamp().to_string();
    assert_eq!(
        d,
        json!({
            "type": "payment",
            "user": TID,
            "amount": "0.10",
            "currency": "EUR",
            "trade_id": trade_id,
            "description": "YabandPay test",
            "order_id": "order-1",
            "createDate": at,
            "demo": "test",
            "transaction_id": "",
            "state": "paid",
            "pay_method": "offline",
            "sub_pay_method": "WeChat Pay",
            "settlement_amount": "0.10",
            "settlement_currency": "EUR",
            "paid_time": at,
        })
    );
    // The same request again answers the same trade.
    assert_eq!(paid(&h, "order-1", "0.10").await, d);
    // The same order_id with another amount is refused; with another auth_code the trade is
    // already paid.
    let body = call(&h, "v3.BarcodePayment", barcode("order-1", "0.20")).await;
    assert_eq!(code(&body), "-3009", "{body}");
    let mut other_code = barcode("order-1", "0.10");
    other_code["auth_code"] = json!("999");
    assert_eq!(
        code(&call(&h, "v3.BarcodePayment", other_code).await),
        "-4119"
    );

    // The sandbox wallet: 51 declined, 52 unknown (pending until played).
    assert_eq!(paid(&h, "order-51", "10.51").await["state"], "failed");
    let pending = paid(&h, "order-52", "10.52").await;
    assert_eq!(pending["state"], "processing");
    assert_eq!(pending["paid_time"], "");
    let mut other_code = barcode("order-52", "10.52");
    other_code["auth_code"] = json!("999");
    assert_eq!(
        code(&call(&h, "v3.BarcodePayment", other_code).await),
        "-3009"
    );

    // Field errors change nothing.
    let cases: [(&str, Json, &str); 7] = [
        ("tip_amount", json!("1.00"), "-3008"),
        ("amount", json!("0.001"), "-3007"),
        ("amount", json!("0"), "-3007"),
        ("currency", json!("EURO"), "-3007"),
        ("description", json!(""), "-3001"),
        ("notify_url", json!("http://127.0.0.1:9/n"), "-3007"),
        ("order_id", json!(" x"), "-3007"),
    ];
    for (field, value, expected) in cases {
        let mut d = barcode("order-bad", "1.00");
        d[field] = value.clone();
        let body = call(&h, "v3.BarcodePayment", d).await;
        assert_eq!(code(&body), expected, "{field}={value}: {body}");
    }
    let mut no_auth = barcode("order-bad", "1.00");
    no_auth.as_object_mut().unwrap().remove("auth_code");
    assert_eq!(code(&call(&h, "v3.BarcodePayment", no_auth).await), "-3001");
    let cred = h.credentials.terminal_credential(TID).await.unwrap();
    assert!(matches!(
        h.app
            .query(&cred.merchant, &PaymentKey::Reference("order-bad".into()))
            .await,
        Err(LifecycleError::NotFound)
    ));
    // Amounts as JSON numbers are read from their literal text.
    let mut number = barcode("order-n", "0");
    number["amount"] = json!(12.5);
    assert_eq!(
        ok(&call(&h, "v3.BarcodePayment", number).await)["amount"],
        "12.50"
    );
}

#[tokio::test]
async fn a_qr_payment_waits_for_the_customer() {
    let h = harness().await;
    let body = call(
        &h,
        "v3.QRcodePayment",
        json!({
            "pay_method": "offline",
            "sub_pay_method": "QRcode",
            "order_id": "qr-1",
            "amount": "24.99",
            "currency": "eur",
            "description": "table 4",
            "timeout": "0",
        }),
    )
    .await;
    let d = ok(&body);
    assert_eq!(d["state"], "processing");
    let trade_id = d["trade_id"].as_str().unwrap().to_owned();
    let url = h.app.payment_page_url(&trade_id);
    assert!(url.contains(&format!("/pay/{trade_id}-")), "{url}");
    assert_eq!(
        (d["url"].as_str(), d["qrcode"].as_str()),
        (Some(url.as_str()), Some(url.as_str()))
    );
    h.clock.advance(Duration::seconds(30));
    h.app
        .wallet_settles_payment(&trade_id, ChannelOutcome::Approved)
        .await
        .unwrap();
    let info = ok(&call(&h, "v3.QueryOrder", json!({"trade_id": trade_id})).await)
        ["transaction_info"]
        .clone();
    assert_eq!(info["state"], "paid");
    assert_eq!(info["paid_time"], (start().timestamp() + 30).to_string());
    let bad = call(
        &h,
        "v3.QRcodePayment",
        json!({"order_id": "qr-2", "amount": "1", "currency": "EUR", "timeout": "-5"}),
    )
    .await;
    assert_eq!(code(&bad), "-3007");
}

#[tokio::test]
async fn query_order_shows_the_trade_under_transaction_info() {
    let h = harness().await;
    let d = paid(&h, "q-1", "30.00").await;
    let trade_id = d["trade_id"].clone();
    ok(&call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": trade_id, "refund_amount": "5", "refund_currency": "EUR", "refund_description": "r"}),
    )
    .await);
    let body = call(&h, "v3.QueryOrder", json!({"trade_id": trade_id})).await;
    let at = start().timestamp().to_string();
    assert_eq!(
        ok(&body),
        json!({"transaction_info": {
            "type": "payment",
            "user": TID,
            "amount": "30.00",
            "currency": "EUR",
            "trade_id": trade_id,
            "description": "YabandPay test",
            "order_id": "q-1",
            "created_at": at,
            "demo": "test",
            "transaction_id": "",
            "state": "paid",
            "pay_method": "offline",
            "sub_pay_method": "WeChat Pay",
            "settlement_amount": "30.00",
            "settlement_currency": "EUR",
            "paid_time": at,
            "refund_amount": "5.00",
        }})
    );
    // Another terminal of the merchant sees it; another merchant does not.
    let by_other_terminal = call_as(
        &h,
        TID2,
        SECRET2,
        "v3.QueryOrder",
        json!({"trade_id": trade_id}),
    )
    .await;
    assert_eq!(by_other_terminal["status"], true);
    let by_other_merchant = call_as(
        &h,
        OTHER_TID,
        OTHER_SECRET,
        "v3.QueryOrder",
        json!({"trade_id": trade_id}),
    )
    .await;
    assert_eq!(code(&by_other_merchant), "-4114");
    assert_eq!(code(&call(&h, "v3.QueryOrder", json!({})).await), "-3001");
}

#[tokio::test]
async fn refunds_in_parts_are_idempotent_on_m_refund_id() {
    let h = harness().await;
    let trade_id = paid(&h, "r-1", "10.00").await["trade_id"].clone();
    let refund = |amount: &str, m_refund_id: &str| {
        json!({
            "trade_id": trade_id,
            "refund_amount": amount,
            "refund_currency": "EUR",
            "refund_description": "returned one item",
            "m_refund_id": m_refund_id,
        })
    };
    let first = ok(&call(&h, "v3.CreateRefund", refund("4.00", "rf-1")).await);
    let refund_id = first["refund_id"].as_str().unwrap().to_owned();
    assert_eq!(
        first,
        json!({
            "type": "refund",
            "user": TID,
            "trade_id": trade_id,
            "order_id": "r-1",
            "refund_id": refund_id,
            "m_refund_id": "rf-1",
            "refund_amount": "4.00",
            "refund_currency": "EUR",
            "refund_description": "returned one item",
            "amount": "10.00",
            "currency": "EUR",
            "createDate": start().timestamp().to_string(),
            "state": "refunded",
        })
    );
    assert_eq!(
        ok(&call(&h, "v3.CreateRefund", refund("4.00", "rf-1")).await),
        first
    );
    assert_eq!(
        code(&call(&h, "v3.CreateRefund", refund("4.01", "rf-1")).await),
        "-3009"
    );
    let over = call(&h, "v3.CreateRefund", refund("6.01", "rf-2")).await;
    assert_eq!(code(&over), "-4118");
    assert!(
        over["message"]
            .as_str()
            .unwrap()
            .ends_with("at most 6.00 EUR can still be refunded"),
        "{over}"
    );
    let mut usd = refund("1.00", "rf-3");
    usd["refund_currency"] = json!("USD");
    assert_eq!(code(&call(&h, "v3.CreateRefund", usd).await), "-4121");
    let declined = ok(&call(&h, "v3.CreateRefund", refund("0.61", "rf-4")).await);
    assert_eq!(declined["state"], "failed");
    let mut no_description = refund("1.00", "rf-5");
    no_description["refund_description"] = json!("");
    assert_eq!(
        code(&call(&h, "v3.CreateRefund", no_description).await),
        "-3001"
    );

    let by_id = ok(&call(&h, "v3.QueryRefundOrder", json!({"refund_id": refund_id})).await);
    assert_eq!(by_id, first);
    let by_key = ok(&call(&h, "v3.QueryRefundOrder", json!({"m_refund_id": "rf-1"})).await);
    assert_eq!(by_key, first);
    assert_eq!(
        code(&call(&h, "v3.QueryRefundOrder", json!({"refund_id": "1"})).await),
        "-4122"
    );
    assert_eq!(
        code(&call(&h, "v3.QueryRefundOrder", json!({})).await),
        "-3001"
    );
    let other = call_as(
        &h,
        OTHER_TID,
        OTHER_SECRET,
        "v3.QueryRefundOrder",
        json!({"refund_id": refund_id}),
    )
    .await;
    assert_eq!(code(&other), "-4122");

    // The rest, then nothing more.
    ok(&call(&h, "v3.CreateRefund", refund("6.00", "rf-6")).await);
    assert_eq!(trade_state(&h, &trade_id).await, "refunded");
    assert_eq!(
        code(&call(&h, "v3.CreateRefund", refund("0.01", "rf-7")).await),
        "-4118"
    );
    // An unpaid trade is not refundable, a cancelled one has nothing to refund.
    let pending = paid(&h, "r-2", "1.52").await["trade_id"].clone();
    let mut f = refund("1.00", "rf-8");
    f["trade_id"] = pending;
    assert_eq!(code(&call(&h, "v3.CreateRefund", f).await), "-4119");
    let cancelled = paid(&h, "r-3", "1.00").await["trade_id"].clone();
    ok(&call(&h, "v3.CancelPayment", json!({"trade_id": cancelled})).await);
    let mut f = refund("1.00", "rf-9");
    f["trade_id"] = cancelled;
    assert_eq!(code(&call(&h, "v3.CreateRefund", f).await), "-4116");
}

#[tokio::test]
async fn a_pos_sale_is_taken_on_the_terminal() {
    let h = harness().await;
    let body = call(
        &h,
        "v3.POS",
        pos("280244567856723026", "0.10", "req-000000000000000000000001"),
    )
    .await;
    let d = ok(&body);
    assert_eq!(d["state"], "paid");
    assert_eq!(d["tid"], TID);
    assert_eq!(d["request_id"], "req-000000000000000000000001");
    assert_eq!(d["order_id"], "280244567856723026");
    assert_eq!(d["description"], "counter 3");
    let (tid, command) = h.hub().last().unwrap();
    assert_eq!(tid, TID);
    assert_eq!(command.kind, CommandKind::Sale);
    assert_eq!(
        (command.amount_minor, command.currency.as_str()),
        (10, "EUR")
    );
    assert_eq!(json!(command.transaction_no), d["trade_id"]);

    // The same request_id again is refused, whatever the rest says.
    let again = call(
        &h,
        "v3.POS",
        pos("another-order", "0.10", "req-000000000000000000000001"),
    )
    .await;
    assert_eq!(code(&again), "-3002");
    assert_eq!(again["message"], "duplicate request_id: this terminal used request_id req-000000000000000000000001 before; send a new one");
    // A new request_id for the same order answers the paid trade without a second sale.
    let sales = h.hub().count();
    let replay = ok(&call(&h, "v3.POS", pos("280244567856723026", "0.10", "req-2")).await);
    assert_eq!(replay["trade_id"], d["trade_id"]);
    assert_eq!(replay["state"], "paid");
    assert_eq!(h.hub().count(), sales);

    h.hub().set(TID, Mode::Decline);
    assert_eq!(
        ok(&call(&h, "v3.POS", pos("o-declined", "1.00", "req-3")).await)["state"],
        "declined"
    );
    h.hub().set(TID, Mode::Vanish);
    assert_eq!(
        ok(&call(&h, "v3.POS", pos("o-vanished", "1.00", "req-4")).await)["state"],
        "declined"
    );

    // Offline: nothing reaches the terminal; the order waits for a retry with a new request_id.
    h.hub().set(TID, Mode::Offline);
    assert_eq!(
        code(&call(&h, "v3.POS", pos("o-offline", "2.00", "req-5")).await),
        "-5001"
    );
    h.hub().set(TID, Mode::Approve);
    let retried = ok(&call(&h, "v3.POS", pos("o-offline", "2.00", "req-6")).await);
    assert_eq!(retried["state"], "paid");

    // No answer within the wait: processing; the late result is applied and notified.
    h.hub().set(TID, Mode::Silent);
    let slow = ok(&call(&h, "v3.POS", pos("o-slow", "3.00", "req-7")).await);
    assert_eq!(slow["state"], "processing");
    let (_, command) = h.hub().last().unwrap();
    h.clock.advance(Duration::seconds(20));
    h.app
        .apply_terminal_result(
            &command.id,
            TerminalResult {
                outcome: ChannelOutcome::Approved,
                message: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(trade_state(&h, &slow["trade_id"]).await, "paid");
    let notified = queued(&h).await;
    let (url, facts) = notified.last().unwrap();
    assert_eq!(url, "https://shop.example/notify");
    assert_eq!(
        (facts.topic.as_str(), json!(facts.payment.transaction_no)),
        ("payment.paid", slow["trade_id"].clone())
    );

    // Refusals before anything is sent.
    h.hub().set(TID, Mode::Approve);
    let mut auth = pos("o-auth", "1.00", "req-8");
    auth["operation"] = json!("2");
    assert_eq!(code(&call(&h, "v3.POS", auth).await), "-3008");
    let mut other_tid = pos("o-tid", "1.00", "req-9");
    other_tid["tid"] = json!(TID2);
    assert_eq!(code(&call(&h, "v3.POS", other_tid).await), "-3010");
    let mut no_request = pos("o-req", "1.00", "x");
    no_request.as_object_mut().unwrap().remove("request_id");
    assert_eq!(code(&call(&h, "v3.POS", no_request).await), "-3001");
    let mut no_tid = pos("o-req", "1.00", "req-10");
    no_tid.as_object_mut().unwrap().remove("tid");
    assert_eq!(code(&call(&h, "v3.POS", no_tid).await), "-3001");
    // The order_id of another method's payment is taken.
    paid(&h, "o-barcode", "1.00").await;
    assert_eq!(
        code(&call(&h, "v3.POS", pos("o-barcode", "1.00", "req-11")).await),
        "-3009"
    );
}

#[tokio::test]
async fn a_reversal_on_the_terminal_answers_as_seed_003_shows() {
    let h = harness().await;
    let sale = ok(&call(&h, "v3.POS", pos("280244567856723026", "0.10", "sale-1")).await);
    let trade_id = sale["trade_id"].clone();
    h.clock.advance(Duration::minutes(5));
    let body = call(
        &h,
        "v3.POSReversal",
        reversal(&trade_id, "a7z1lox4l6z6mdx1udgn5gtezasze1x0"),
    )
    .await;
    assert_eq!(
        ok(&body),
        json!({
            "type": "payment",
            "user": TID,
            "amount": "0.10",
            "currency": "EUR",
            "trade_id": trade_id,
            "description": "counter 3",
            "order_id": "280244567856723026",
            "createDate": start().timestamp().to_string(),
            "demo": "",
            "transaction_id": "",
            "state": "cancelled",
        })
    );
    let (tid, command) = h.hub().last().unwrap();
    assert_eq!((tid.as_str(), command.kind), (TID, CommandKind::Reversal));
    assert_eq!(trade_state(&h, &trade_id).await, "cancelled");
    // Seed 003's codes: the same request_id, then a new one for a cancelled trade.
    assert_eq!(
        code(
            &call(
                &h,
                "v3.POSReversal",
                reversal(&trade_id, "a7z1lox4l6z6mdx1udgn5gtezasze1x0")
            )
            .await
        ),
        "-3002"
    );
    let again = call(&h, "v3.POSReversal", reversal(&trade_id, "rev-2")).await;
    assert_eq!(code(&again), "-4116");
    assert_eq!(again["message"], "The transaction has been cancelled");
    // The merchant is told at the payment's notify_url.
    let (url, facts) = queued(&h).await.pop().unwrap();
    assert_eq!(
        (url.as_str(), facts.topic.as_str()),
        ("https://shop.example/notify", "cancel.succeeded")
    );
}

#[tokio::test]
async fn reversal_refusals_use_seed_003s_codes() {
    let h = harness().await;
    let rev = |trade_id: &Json, request_id: &str| reversal(trade_id, request_id);
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&json!("123"), "r-1")).await),
        "-4114"
    );
    // Another terminal's trade of the same merchant, and another merchant's, read as unknown.
    let of_tid2 = ok(&call_as(
        &h,
        TID2,
        SECRET2,
        "v3.BarcodePayment",
        barcode("t2-1", "1.00"),
    )
    .await);
    let refused = call(&h, "v3.POSReversal", rev(&of_tid2["trade_id"], "r-2")).await;
    assert_eq!(code(&refused), "-4114");
    let of_other = ok(&call_as(
        &h,
        OTHER_TID,
        OTHER_SECRET,
        "v3.BarcodePayment",
        barcode("o-1", "1.00"),
    )
    .await);
    let refused_other = call(&h, "v3.POSReversal", rev(&of_other["trade_id"], "r-3")).await;
    assert_eq!(refused_other["message"], refused["message"]);
    assert_eq!(code(&refused_other), "-4114");
    assert_eq!(trade_state(&h, &of_tid2["trade_id"]).await, "paid");

    // Unpaid and declined trades cannot be reversed; a refunded one is "cleared".
    let pending = paid(&h, "p-1", "1.52").await["trade_id"].clone();
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&pending, "r-4")).await),
        "-4115"
    );
    let declined = paid(&h, "p-2", "1.51").await["trade_id"].clone();
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&declined, "r-5")).await),
        "-4115"
    );
    let refunded = paid(&h, "p-3", "5.00").await["trade_id"].clone();
    ok(&call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": refunded, "refund_amount": "1", "refund_currency": "EUR", "refund_description": "r"}),
    )
    .await);
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&refunded, "r-6")).await),
        "-4112"
    );

    // The terminal says no, or is not there.
    let sold = paid(&h, "p-4", "2.00").await["trade_id"].clone();
    h.hub().set(TID, Mode::Decline);
    let no = call(&h, "v3.POSReversal", rev(&sold, "r-7")).await;
    assert_eq!(code(&no), "-4115", "{no}");
    assert_eq!(trade_state(&h, &sold).await, "paid");
    h.hub().set(TID, Mode::Offline);
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&sold, "r-8")).await),
        "-5001"
    );

    // No answer in time: processing; another reversal meanwhile is refused as in progress;
    // the late approval cancels the trade.
    h.hub().set(TID, Mode::Silent);
    let slow = ok(&call(&h, "v3.POSReversal", rev(&sold, "r-9")).await);
    assert_eq!(slow["state"], "processing");
    assert_eq!(
        code(&call(&h, "v3.POSReversal", rev(&sold, "r-10")).await),
        "-4120"
    );
    let refund_meanwhile = call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": sold, "refund_amount": "1", "refund_currency": "EUR", "refund_description": "r"}),
    )
    .await;
    assert_eq!(code(&refund_meanwhile), "-4120");
    let (_, command) = h.hub().last().unwrap();
    h.app
        .apply_terminal_result(
            &command.id,
            TerminalResult {
                outcome: ChannelOutcome::Approved,
                message: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(trade_state(&h, &sold).await, "cancelled");
    h.hub().set(TID, Mode::Approve);

    // After 00:30 CET the next day the window is closed; until then it is open.
    let late = paid(&h, "p-5", "3.00").await["trade_id"].clone();
    let grace = paid(&h, "p-6", "3.00").await["trade_id"].clone();
    // 10:00 UTC + 13:29 = 23:29 UTC = 00:29 CET.
    h.clock.advance(Duration::minutes(13 * 60 + 29));
    assert_eq!(
        ok(&call(&h, "v3.POSReversal", rev(&grace, "r-11")).await)["state"],
        "cancelled"
    );
    h.clock.advance(Duration::minutes(2));
    let body = call(&h, "v3.POSReversal", rev(&late, "r-12")).await;
    assert_eq!(code(&body), "-4111", "{body}");
}

#[tokio::test]
async fn expired_trades_are_refused_as_expired() {
    let h = harness().await;
    // A sale that never reached the terminal leaves the order unpaid; it then expires.
    h.hub().set(TID, Mode::Offline);
    assert_eq!(
        code(&call(&h, "v3.POS", pos("exp-1", "1.00", "e-1")).await),
        "-5001"
    );
    let trade_id = trade_of(&h, "exp-1").await;
    assert_eq!(trade_state(&h, &trade_id).await, "pending");
    h.clock.advance(Duration::minutes(121));
    let cred = h.credentials.terminal_credential(TID).await.unwrap();
    let expired = h
        .app
        .pay(
            &cred.merchant,
            &PaymentKey::TransactionNo(trade_id.as_str().unwrap().to_owned()),
            PayRequest {
                barcode: Some("1".into()),
                vendor: None,
            },
        )
        .await;
    assert!(expired.is_err());
    assert_eq!(trade_state(&h, &trade_id).await, "expired");
    h.hub().set(TID, Mode::Approve);
    assert_eq!(
        code(&call(&h, "v3.POSReversal", reversal(&trade_id, "e-2")).await),
        "-4117"
    );
    assert_eq!(
        code(&call(&h, "v3.CancelPayment", json!({"trade_id": trade_id})).await),
        "-4117"
    );
    let body = call(&h, "v3.POSCancel", reversal(&trade_id, "e-3")).await;
    assert_eq!(code(&body), "-4117");
}

#[tokio::test]
async fn pos_cancel_cancels_an_unpaid_order_on_the_terminal() {
    let h = harness().await;
    h.hub().set(TID, Mode::Offline);
    call(&h, "v3.POS", pos("pc-1", "1.00", "c-1")).await;
    let trade_id = trade_of(&h, "pc-1").await;
    h.hub().set(TID, Mode::Approve);
    let d = ok(&call(&h, "v3.POSCancel", reversal(&trade_id, "c-2")).await);
    assert_eq!(d["state"], "cancelled");
    assert_eq!(h.hub().last().unwrap().1.kind, CommandKind::Cancel);
    assert_eq!(
        code(&call(&h, "v3.POSCancel", reversal(&trade_id, "c-3")).await),
        "-4116"
    );
    let sold = ok(&call(&h, "v3.POS", pos("pc-2", "1.00", "c-4")).await)["trade_id"].clone();
    let body = call(&h, "v3.POSCancel", reversal(&sold, "c-5")).await;
    assert_eq!(code(&body), "-4115");
    assert!(body["message"].as_str().unwrap().contains("v3.POSReversal"));
    assert_eq!(
        code(&call(&h, "v3.POSCancel", json!({"tid": TID, "request_id": "c-6"})).await),
        "-3001"
    );
}

#[tokio::test]
async fn a_silent_cancel_reverses_until_half_past_midnight_cet_and_not_after_a_refund() {
    let h = harness().await;
    let trade_id = paid(&h, "s-1", "1.00").await["trade_id"].clone();
    let sent = h.hub().count();
    let d = ok(&call(&h, "v3.CancelPayment", json!({"trade_id": trade_id})).await);
    assert_eq!(d["state"], "cancelled");
    assert_eq!(
        h.hub().count(),
        sent,
        "a silent cancel never reaches a terminal"
    );
    // A retry answers as the first did.
    assert_eq!(
        ok(&call(&h, "v3.CancelPayment", json!({"trade_id": trade_id})).await),
        d
    );
    // An unpaid trade is cancelled too; a wallet that does not answer leaves it in progress.
    let pending = paid(&h, "s-2", "1.52").await["trade_id"].clone();
    assert_eq!(
        ok(&call(&h, "v3.CancelPayment", json!({"trade_id": pending})).await)["state"],
        "cancelled"
    );
    let slow = paid(&h, "s-3", "1.53").await["trade_id"].clone();
    let in_progress = ok(&call(&h, "v3.CancelPayment", json!({"trade_id": slow})).await);
    assert_eq!(in_progress["state"], "processing");
    let declined = paid(&h, "s-4", "1.51").await["trade_id"].clone();
    assert_eq!(
        code(&call(&h, "v3.CancelPayment", json!({"trade_id": declined})).await),
        "-4115"
    );
    let refunded = paid(&h, "s-5", "5.00").await["trade_id"].clone();
    ok(&call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": refunded, "refund_amount": "5", "refund_currency": "EUR", "refund_description": "all"}),
    )
    .await);
    assert_eq!(
        code(&call(&h, "v3.CancelPayment", json!({"trade_id": refunded})).await),
        "-4112"
    );
    let late = paid(&h, "s-6", "1.00").await["trade_id"].clone();
    h.clock.advance(Duration::minutes(13 * 60 + 31));
    assert_eq!(
        code(&call(&h, "v3.CancelPayment", json!({"trade_id": late})).await),
        "-4111"
    );
    assert_eq!(
        code(&call(&h, "v3.CancelPayment", json!({})).await),
        "-3001"
    );
}

#[tokio::test]
async fn authentication_comes_first_and_each_failure_is_named() {
    let h = harness().await;
    let data = json!({"trade_id": "1"});
    let unknown = call_as(&h, "T-nobody", SECRET, "v3.QueryOrder", data.clone()).await;
    assert_eq!(code(&unknown), "-3005");
    let wrong = call_as(&h, TID, SECRET2, "v3.QueryOrder", data.clone()).await;
    assert_eq!(code(&wrong), "-3003");
    let unknown_method = call(&h, "v3.SplitPayment", data.clone()).await;
    assert_eq!(code(&unknown_method), "-3006");
    assert!(unknown_method["message"]
        .as_str()
        .unwrap()
        .contains("v3.POSReversal"));

    // Seconds or milliseconds, within five minutes either side.
    let now = h.app.now();
    let at = |time: Json| body_with(TID, SECRET, "v3.QueryOrder", time, data.clone(), &|_| false);
    for (time, expected) in [
        (json!(now.timestamp()), "-4114"),
        (json!(now.timestamp_millis()), "-4114"),
        (json!(now.timestamp().to_string()), "-4114"),
        (json!(now.timestamp() + 299), "-4114"),
        (json!(now.timestamp() - 301), "-3004"),
        (json!(now.timestamp_millis() + 301_000), "-3004"),
        (json!("1.5e9"), "-3007"),
        (json!(-5), "-3007"),
    ] {
        let (_, body) = raw(&h, &at(time.clone())).await;
        assert_eq!(code(&body), expected, "time {time}: {body}");
    }

    // Both empty-value forms verify: empty values signed as `k=`, or left out (also "0").
    let with_empties = json!({"trade_id": "1", "demo": "", "cancel_url": null, "tip_amount": "0"});
    let time = json!(now.timestamp());
    for skip in [
        &(|_: &str| false) as &dyn Fn(&str) -> bool,
        &|v: &str| v.is_empty(),
        &|v: &str| v.is_empty() || v == "0",
    ] {
        let body = body_with(
            TID,
            SECRET,
            "v3.QueryOrder",
            time.clone(),
            with_empties.clone(),
            skip,
        );
        assert_eq!(code(&raw(&h, &body).await.1), "-4114");
    }
    // Signing another value than the one sent does not.
    let mut body: Json = serde_json::from_slice(&body_with(
        TID,
        SECRET,
        "v3.QueryOrder",
        time.clone(),
        data.clone(),
        &|_| false,
    ))
    .unwrap();
    body["data"]["trade_id"] = json!("2");
    assert_eq!(
        code(&raw(&h, &serde_json::to_vec(&body).unwrap()).await.1),
        "-3003"
    );

    // Malformed bodies and missing fields, before any credential is read.
    for (bad, expected) in [
        ("", "-3007"),
        ("not json", "-3007"),
        ("[]", "-3007"),
        (
            r#"{"user":"T125119061","sign":"x","method":"v3.QueryOrder","time":1,"data":{"a":[1]}}"#,
            "-3007",
        ),
        (
            r#"{"sign":"x","method":"v3.QueryOrder","time":1,"data":{}}"#,
            "-3001",
        ),
        (
            r#"{"user":"T125119061","method":"v3.QueryOrder","time":1,"data":{}}"#,
            "-3001",
        ),
        (
            r#"{"user":"T125119061","sign":"x","method":"v3.QueryOrder","time":1}"#,
            "-3001",
        ),
    ] {
        let (status, body) = raw(&h, bad.as_bytes()).await;
        assert_eq!(status, StatusCode::OK);
        assert_envelope(&body);
        assert_eq!(code(&body), expected, "{bad:?}: {body}");
    }
}

#[tokio::test]
async fn a_store_that_is_down_answers_a_retryable_system_error() {
    let h = harness().await;
    // The credential is cached, so the request gets past authentication to the store.
    h.credentials.terminal_credential(TID).await.unwrap();
    h.app.store().close().await;
    let (status, body) = raw(
        &h,
        &signed(&h, TID, SECRET, "v3.QueryOrder", json!({"trade_id": "1"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_envelope(&body);
    assert_eq!(code(&body), "-5000");
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
async fn the_router_serves_payments_and_answers_an_oversized_body_in_its_envelope() {
    let h = harness().await;
    let router = crate::router(h.app.clone()).layer(axum::extract::DefaultBodyLimit::max(1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let body = signed(
        &h,
        TID,
        SECRET,
        "v3.BarcodePayment",
        barcode("http-1", "1.00"),
    );
    let (status, answer) = http_post(addr, "/Payments", &body).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (status, answer) = http_post(addr, "/Payments", &vec![b'{'; 4096]).await;
    assert_eq!((status, code(&answer)), (200, "-3007"), "{answer}");
    server.abort();
}

/// Checks a notification body's sign with the independent implementation; its data fields.
fn verified_notification(body: &[u8], secret: &str) -> BTreeMap<String, String> {
    let v: Json = serde_json::from_slice(body).unwrap();
    let keys: HashSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["sign", "data"]));
    let fields: BTreeMap<String, String> = v["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().expect("every value is a string").to_owned(),
            )
        })
        .collect();
    assert!(
        fields.values().all(|v| !v.is_empty() && v != "0"),
        "{fields:?}"
    );
    assert_eq!(v["sign"], independent_sign(&fields, secret, &|_| false));
    fields
}

#[tokio::test]
async fn notifications_are_signed_json_acknowledged_by_ok() {
    let h = harness().await;
    let renderer = YabandRenderer::new(h.credentials.clone());
    let d = paid(&h, "n-1", "10.00").await;
    h.clock.advance(Duration::seconds(5));
    let refund = ok(&call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": d["trade_id"], "refund_amount": "2.50", "refund_currency": "EUR",
               "refund_description": "one item", "m_refund_id": "mr-1"}),
    )
    .await);
    h.clock.advance(Duration::seconds(5));
    ok(&call(
        &h,
        "v3.CreateRefund",
        json!({"trade_id": d["trade_id"], "refund_amount": "0.61", "refund_currency": "EUR",
               "refund_description": "declined", "notify_url": "https://shop.example/refunds"}),
    )
    .await);
    h.clock.advance(Duration::seconds(5));
    let sale = ok(&call_as(
        &h,
        TID2,
        SECRET2,
        "v3.BarcodePayment",
        barcode("n-2", "4.00"),
    )
    .await);
    ok(&call_as(
        &h,
        TID2,
        SECRET2,
        "v3.CancelPayment",
        json!({"trade_id": sale["trade_id"]}),
    )
    .await);

    let notified = queued(&h).await;
    let topics: Vec<(&str, &str)> = notified
        .iter()
        .map(|(url, f)| (url.as_str(), f.topic.as_str()))
        .collect();
    assert_eq!(
        topics,
        [
            ("https://shop.example/notify", "payment.paid"),
            ("https://shop.example/notify", "refund.succeeded"),
            ("https://shop.example/refunds", "refund.failed"),
            ("https://shop.example/notify", "payment.paid"),
            ("https://shop.example/notify", "cancel.succeeded"),
        ]
    );
    let t0 = start().timestamp();

    let pay = renderer.render(&notified[0].1).await.unwrap();
    assert_eq!(pay.content_type, "application/json");
    assert!(pay.ack.accepts(b"ok") && pay.ack.accepts(b" OK\n") && !pay.ack.accepts(b"bad"));
    let f = verified_notification(&pay.body, SECRET);
    let expected: BTreeMap<String, String> = [
        ("type", "payment"),
        ("user", TID),
        ("order_id", "n-1"),
        ("trade_id", d["trade_id"].as_str().unwrap()),
        ("amount", "10.00"),
        ("currency", "EUR"),
        ("settlement_amount", "10.00"),
        ("settlement_currency", "EUR"),
        ("description", "YabandPay test"),
        ("createDate", &t0.to_string()),
        ("paid_time", &t0.to_string()),
        ("demo", "test"),
        ("pay_method", "offline"),
        ("sub_pay_method", "WeChat Pay"),
        ("state", "paid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(f, expected);

    let refunded =
        verified_notification(&renderer.render(&notified[1].1).await.unwrap().body, SECRET);
    assert_eq!(refunded["type"], "refund");
    assert_eq!(refunded["state"], "refunded");
    assert_eq!(refunded["m_refund_id"], "mr-1");
    assert_eq!(refunded["refund_id"], refund["refund_id"].as_str().unwrap());
    assert_eq!(refunded["refund_amount"], "2.50");
    assert_eq!(refunded["createDate"], (t0 + 5).to_string());
    let failed =
        verified_notification(&renderer.render(&notified[2].1).await.unwrap().body, SECRET);
    assert_eq!(
        (failed["state"].as_str(), failed.get("m_refund_id")),
        ("failed", None)
    );
    // The terminal that made the payment signs its notifications.
    let cancelled = verified_notification(
        &renderer.render(&notified[4].1).await.unwrap().body,
        SECRET2,
    );
    assert_eq!(
        (cancelled["user"].as_str(), cancelled["state"].as_str()),
        (TID2, "cancelled")
    );

    // Snapshots the dialect cannot render are refused as such. Unknown topics, states and
    // currencies no longer reach a renderer: snapshots are typed, and one that does not read
    // back is refused by `Snapshot::from_json` (tested in the core).
    let good = notified[0].1.clone();
    let mut no_refund = good.clone();
    no_refund.topic = Topic::RefundSucceeded;
    let mut gone = good.clone();
    gone.payment.store_no = "T-gone".into();
    let mut other_merchant = good.clone();
    other_merchant.payment.merchant_no = OTHER_MERCHANT.into();
    for (name, facts) in [
        ("refund snapshot", no_refund),
        ("unknown terminal", gone),
        ("other merchant", other_merchant),
    ] {
        assert!(
            matches!(renderer.render(&facts).await, Err(RenderError::Invalid(_))),
            "{name}"
        );
    }
}

/// Every code of the table is answered by some request (the other tests check each in its
/// story; this one makes sure none is left out).
#[tokio::test]
async fn every_code_is_reachable() {
    let h = harness().await;
    let mut seen: HashSet<String> = HashSet::new();
    let mut note = |body: &Json| {
        seen.insert(code(body).to_owned());
    };
    let sold = paid(&h, "all-1", "5.00").await["trade_id"].clone();
    let refund = |trade: &Json, amount: &str, currency: &str| {
        json!({"trade_id": trade, "refund_amount": amount, "refund_currency": currency,
               "refund_description": "r"})
    };
    note(&call(&h, "v3.QueryOrder", json!({"trade_id": sold})).await);
    note(&call(&h, "v3.QueryOrder", json!({})).await);
    note(&call(&h, "v3.POS", pos("all-2", "1.00", "dup")).await);
    note(&call(&h, "v3.POS", pos("all-3", "1.00", "dup")).await);
    note(&call_as(&h, TID, SECRET2, "v3.QueryOrder", json!({"trade_id": "1"})).await);
    note(
        &raw(
            &h,
            &body_with(
                TID,
                SECRET,
                "v3.QueryOrder",
                json!(1),
                json!({"trade_id": "1"}),
                &|_| false,
            ),
        )
        .await
        .1,
    );
    note(&call_as(&h, "nobody", SECRET, "v3.QueryOrder", json!({})).await);
    note(&call(&h, "v3.Nothing", json!({})).await);
    note(&raw(&h, b"[]").await.1);
    note(
        &call(&h, "v3.BarcodePayment", {
            let mut b = barcode("all-4", "1.00");
            b["tip_amount"] = json!("0.50");
            b
        })
        .await,
    );
    note(&call(&h, "v3.BarcodePayment", barcode("all-1", "6.00")).await);
    note(
        &call(&h, "v3.POS", {
            let mut p = pos("all-5", "1.00", "tid");
            p["tid"] = json!(TID2);
            p
        })
        .await,
    );
    note(&call(&h, "v3.QueryOrder", json!({"trade_id": "404"})).await);
    note(
        &call(
            &h,
            "v3.POSReversal",
            reversal(&paid(&h, "all-6", "1.51").await["trade_id"], "r1"),
        )
        .await,
    );
    note(&call(&h, "v3.CreateRefund", refund(&sold, "9.00", "EUR")).await);
    note(&call(&h, "v3.CreateRefund", refund(&sold, "1.00", "USD")).await);
    note(
        &call(
            &h,
            "v3.CreateRefund",
            refund(&paid(&h, "all-7", "1.52").await["trade_id"], "1.00", "EUR"),
        )
        .await,
    );
    note(&call(&h, "v3.QueryRefundOrder", json!({"refund_id": "404"})).await);
    note(&call(&h, "v3.CreateRefund", refund(&sold, "1.00", "EUR")).await);
    note(&call(&h, "v3.POSReversal", reversal(&sold, "r2")).await);
    let cancelled = paid(&h, "all-8", "1.00").await["trade_id"].clone();
    note(&call(&h, "v3.POSReversal", reversal(&cancelled, "r3")).await);
    note(&call(&h, "v3.POSReversal", reversal(&cancelled, "r4")).await);
    let slow = paid(&h, "all-9", "1.53").await["trade_id"].clone();
    note(&call(&h, "v3.CancelPayment", json!({"trade_id": slow})).await);
    note(&call(&h, "v3.POSReversal", reversal(&slow, "r5")).await);
    let yesterdays = paid(&h, "all-11", "1.00").await["trade_id"].clone();
    h.hub().set(TID, Mode::Offline);
    note(&call(&h, "v3.POS", pos("all-10", "1.00", "off")).await);
    let unpaid = trade_of(&h, "all-10").await;
    h.clock.advance(Duration::minutes(121));
    let cred = h.credentials.terminal_credential(TID).await.unwrap();
    let _ = h
        .app
        .pay(
            &cred.merchant,
            &PaymentKey::TransactionNo(unpaid.as_str().unwrap().to_owned()),
            PayRequest {
                barcode: Some("1".into()),
                vendor: None,
            },
        )
        .await;
    note(&call(&h, "v3.CancelPayment", json!({"trade_id": unpaid})).await);
    h.clock.advance(Duration::days(1));
    note(&call(&h, "v3.CancelPayment", json!({"trade_id": yesterdays})).await);
    h.app.store().close().await;
    note(
        &raw(
            &h,
            &signed(&h, TID, SECRET, "v3.QueryOrder", json!({"trade_id": sold})),
        )
        .await
        .1,
    );
    // A merchant over its rate limit: −5002 with HTTP 429 (on a harness of its own, since the
    // store above was made to fail).
    let fresh = harness().await;
    let limited = YabandConfig {
        merchant_limit: tillgate_wire::RateLimit::per_second(1, 1),
        ..fresh.config.clone()
    };
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let body = signed(
            &fresh,
            TID,
            SECRET,
            "v3.QueryOrder",
            json!({"trade_id": "1"}),
        );
        let response = handle(&fresh.app, &limited, &body).await;
        assert_eq!(response.status(), expected);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        note(&serde_json::from_slice(&bytes).unwrap());
    }
    let all: HashSet<String> = Code::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    let missing: Vec<&String> = all.difference(&seen).collect();
    assert!(missing.is_empty(), "codes never answered: {missing:?}");
}
