//! What web shops and the vendors' own client libraries send, unchanged: a Pockyt add that
//! names no currency, the cashier number, ISV fields tillgate does not use.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::Command;

fn merchant_create(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["merchant", "create", "--database-url", &app.database_url])
        .args(args)
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

async fn an_add_without_currency_is_in_the_stores_default_currency_usd_when_unset(app: TestApp) {
    // The official SDK's add: no currency, no settleCurrency, an ISV group number and a cashier.
    let pos = app.pos();
    let added = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "12.50"),
                ("reference", &reference("sdk")),
                ("merGroupNo", "100001"),
                ("storeAdminNo", "cashier-7"),
            ],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    let tx = &added["result"];
    assert_eq!(tx["currency"], "USD");
    assert_eq!(tx["settleCurrency"], "USD");
    assert_eq!(tx["amount"], "12.50");
    assert_eq!(tx["storeAdminNo"], "cashier-7");
    // Paying answers the same transaction, the cashier still on it.
    let paid = pos.pay(tx["transactionNo"].as_str().unwrap()).await;
    assert_eq!(paid["result"]["storeAdminNo"], "cashier-7", "{paid}");

    // A store created with a default currency of EUR: the same add is in euros.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700501",
            "--store-no",
            "1",
            "--currency",
            "eur",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["pockyt"]["currency"], "EUR");
    let token = created["pockyt"]["token"].as_str().unwrap();
    let shop = app.pos_for("700501", "1", token);
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[("amount", "3.10"), ("reference", &reference("eur"))],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    assert_eq!(added["result"]["currency"], "EUR");
    assert_eq!(added["result"]["settleCurrency"], "EUR");
    assert_eq!(added["result"]["storeAdminNo"], serde_json::Value::Null);
    // A currency that is sent wins over the store's default.
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "1000"),
                ("currency", "JPY"),
                ("reference", &reference("jpy")),
            ],
        )
        .await;
    assert_eq!(added["result"]["currency"], "JPY", "{added}");
    assert_eq!(added["result"]["settleCurrency"], "EUR");
    // A currency that is sent but not a code is still refused.
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "1"),
                ("currency", "EURO"),
                ("reference", &reference("bad")),
            ],
        )
        .await;
    assert_ne!(added["ret_code"], "000100", "{added}");

    // The operator's command refuses a default that is no currency.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700502",
            "--store-no",
            "1",
            "--currency",
            "XYZ1",
        ],
    );
    assert!(!out.status.success());
}

on_both_backends!(
    an_add_without_currency_is_in_the_stores_default_currency_usd_when_unset,
    a_merchants_own_origin_reads_its_answers_and_no_other_merchants,
    a_web_shop_checkout_with_create_payments,
);

/// A server whose configuration allows the pages of `origins` to read the merchant APIs.
async fn with_origins(origins: &str) -> (TestApp, TempDir) {
    let config_dir = TempDir::new();
    let config = config_dir.0.join("tillgate.toml");
    std::fs::write(&config, format!("[cors]\nallowed_origins = [{origins}]\n")).unwrap();
    let config = config.display().to_string();
    let app = spawn_app_with(Backend::Sqlite, &["--config", &config])
        .await
        .expect("SQLite always runs");
    (app, config_dir)
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

async fn add_from(app: &TestApp, origin: &str) -> reqwest::Response {
    let pos = app.pos();
    let params = [
        ("merchantNo", pos.merchant_no.as_str()),
        ("storeNo", pos.store_no.as_str()),
        ("amount", "2.00"),
        ("currency", "USD"),
        ("settleCurrency", "USD"),
        ("reference", &reference("cors")),
    ];
    let sign = verify_sign(&params, &pos.token);
    let mut body: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    body.insert("verifySign".into(), sign.into());
    app.client
        .post(format!("{}/app-instore/v3/add", app.base))
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn allow_origin(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_listed_origin_may_read_the_merchant_apis_and_others_may_not() {
    let (app, _config) = with_origins("\"https://shop.example\", \"http://127.0.0.1:9\"").await;

    // The browser's preflight of the listed origin is answered: POST, the asked headers.
    let pre = preflight(&app, "/app-instore/v3/add", "https://shop.example").await;
    assert_eq!(pre.status(), 204);
    assert_eq!(allow_origin(&pre).as_deref(), Some("https://shop.example"));
    assert_eq!(pre.headers()["access-control-allow-methods"], "POST");
    assert_eq!(
        pre.headers()["access-control-allow-headers"],
        "content-type"
    );
    // The same for the other dialects' paths.
    for path in [
        "/api/pay/unifiedOrder",
        "/Payments",
        "/app-data-search/v3/refund",
    ] {
        let pre = preflight(&app, path, "http://127.0.0.1:9").await;
        assert_eq!(
            allow_origin(&pre).as_deref(),
            Some("http://127.0.0.1:9"),
            "{path}"
        );
    }
    // The add itself: carried out, and the page may read the answer.
    let added = add_from(&app, "https://shop.example").await;
    assert_eq!(
        allow_origin(&added).as_deref(),
        Some("https://shop.example")
    );
    let body: serde_json::Value = added.json().await.unwrap();
    assert_eq!(body["ret_code"], "000100", "{body}");

    // An origin not listed: its preflight gets no CORS headers (the browser sends nothing),
    // and a request it sends anyway gets an answer the page may not read.
    let pre = preflight(&app, "/app-instore/v3/add", "https://evil.example").await;
    assert_eq!(allow_origin(&pre), None);
    assert!(pre.headers().get("access-control-allow-methods").is_none());
    let added = add_from(&app, "https://evil.example").await;
    assert_eq!(allow_origin(&added), None);
    // The operator's surfaces never answer another origin, listed or not.
    let pre = preflight(&app, "/admin/v1/notifications", "https://shop.example").await;
    assert_eq!(allow_origin(&pre), None);
}

#[tokio::test]
async fn by_default_no_origin_may_read_the_merchant_apis() {
    let app = spawn_app_on(Backend::Sqlite)
        .await
        .expect("SQLite always runs");
    let pre = preflight(&app, "/app-instore/v3/add", "https://shop.example").await;
    assert_eq!(allow_origin(&pre), None);
    assert!(pre.headers().get("access-control-allow-methods").is_none());
    let added = add_from(&app, "https://shop.example").await;
    assert_eq!(allow_origin(&added), None);
    let body: serde_json::Value = added.json().await.unwrap();
    assert_eq!(body["ret_code"], "000100", "{body}");
}

#[tokio::test]
async fn an_origin_that_is_no_origin_stops_the_gateway_at_start() {
    let config_dir = TempDir::new();
    let config = config_dir.0.join("tillgate.toml");
    std::fs::write(
        &config,
        "[cors]\nallowed_origins = [\"https://shop.example/cart\"]\n",
    )
    .unwrap();
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let config = config.display().to_string();
    let err = start(&dir, &url, &["--config", &config]).expect_err("refused");
    assert!(err.contains("origin"), "{err}");
}

async fn a_merchants_own_origin_reads_its_answers_and_no_other_merchants(app: TestApp) {
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700601",
            "--store-no",
            "1",
            "--cors-origin",
            "https://Shop-A.example/",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["corsOrigins"][0], "https://shop-a.example");
    let token = created["pockyt"]["token"].as_str().unwrap().to_owned();

    // The preflight names no merchant: a merchant's origin is answered.
    let pre = preflight(&app, "/app-instore/v3/add", "https://shop-a.example").await;
    assert_eq!(pre.status(), 204);
    assert_eq!(
        allow_origin(&pre).as_deref(),
        Some("https://shop-a.example")
    );
    let pre = preflight(&app, "/app-instore/v3/add", "https://shop-b.example").await;
    assert_eq!(allow_origin(&pre), None);

    // The merchant's own request from its origin: the page reads the answer.
    let shop = app.pos_for("700601", "1", &token);
    let added = add_from_pos(&app, &shop, "https://shop-a.example").await;
    assert_eq!(
        allow_origin(&added).as_deref(),
        Some("https://shop-a.example")
    );
    let body: serde_json::Value = added.json().await.unwrap();
    assert_eq!(body["ret_code"], "000100", "{body}");
    // Another merchant's request from that origin: carried out, not readable by the page.
    let other = add_from(&app, "https://shop-a.example").await;
    assert_eq!(allow_origin(&other), None);
    // The same as a form: the merchant is read from the form too.
    let form = shop
        .client
        .post(format!("{}/app-instore/v3/tran-query", app.base))
        .header("origin", "https://shop-a.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded_pairs(&signed_pairs(
            &shop,
            &[("reference", "nothing-here")],
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        allow_origin(&form).as_deref(),
        Some("https://shop-a.example")
    );

    // A merchant origin that is no origin is refused by the operator's command.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700602",
            "--store-no",
            "1",
            "--cors-origin",
            "*",
        ],
    );
    assert!(!out.status.success());
}

fn signed_pairs(pos: &Pos, params: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("merchantNo", pos.merchant_no.as_str()),
        ("storeNo", pos.store_no.as_str()),
    ];
    all.extend_from_slice(params);
    let sign = verify_sign(&all, &pos.token);
    let mut out: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.push(("verifySign".into(), sign));
    out
}

async fn add_from_pos(app: &TestApp, pos: &Pos, origin: &str) -> reqwest::Response {
    let pairs = signed_pairs(
        pos,
        &[("amount", "2.00"), ("reference", &reference("cors"))],
    );
    let body: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::from(v)))
        .collect();
    app.client
        .post(format!("{}/app-instore/v3/add", app.base))
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The sandbox's YabandPay terminal (seed 003) and its secret.
const YABAND_TID: &str = "T125119061";
const YABAND_SECRET: &str = "62184c09df1aeb63239e07079875be81";

async fn yaband(app: &TestApp, user: &str, secret: &str, method: &str, data: Value) -> Value {
    let time = chrono::Utc::now().timestamp();
    let body = json!({
        "user": user,
        "method": method,
        "time": time,
        "sign": crate::yabandpay::yaband_sign(user, method, time, &data, secret),
        "data": data,
    });
    let resp = app
        .client
        .post(format!("{}/Payments", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status().as_u16(), 500);
    resp.json().await.unwrap()
}

fn online(order_id: &str, sub: &str, amount: &str, notify_url: &str) -> Value {
    json!({
        "pay_method": "online",
        "sub_pay_method": sub,
        "order_id": order_id,
        "amount": amount,
        "currency": "EUR",
        "description": "webshop order",
        "notify_url": notify_url,
        "timeout": "0",
        "redirect_url": "https://shop.example/thanks",
        "cancel_url": "https://shop.example/cart",
    })
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("?")
}

async fn a_web_shop_checkout_with_create_payments(app: TestApp) {
    let receiver = Receiver::start().await;
    let call = |method: &'static str, data: Value| {
        let app = &app;
        async move { yaband(app, YABAND_TID, YABAND_SECRET, method, data).await }
    };

    // Each online method creates a payment awaiting the customer, with its page.
    let mut trades = Vec::new();
    for sub in ["WeChat Pay", "Alipay", "iDEAL", "Payconiq"] {
        let order = reference("ws");
        let created = call(
            "v3.CreatePayments",
            online(&order, sub, "24.99", &receiver.url),
        )
        .await;
        assert_eq!(created["status"], true, "{created}");
        let d = &created["data"];
        assert_eq!(d["order_id"], order.as_str());
        assert_eq!(d["amount"], "24.99");
        assert_eq!(d["currency"], "EUR");
        assert_eq!(d["settlement_amount"], "24.99");
        assert_eq!(d["settlement_currency"], "EUR");
        assert_eq!(d["exchange_rate"], "1");
        assert_eq!(d["pay_method"], "online");
        assert_eq!(d["sub_pay_method"], sub);
        // Waiting for the customer: YabandPay's word is processing, as for the QR code.
        assert_eq!(d["state"], "processing");
        let trade_id = d["trade_id"].as_str().unwrap().to_owned();
        assert!(
            d["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/pay/{trade_id}-", app.base)),
            "{d}"
        );
        trades.push(trade_id);
    }

    // The customer pays the first (the sandbox wallet's answer); QueryOrder says paid.
    let paid = trades[0].clone();
    let (status, _) = app.settle(&paid, "paid").await;
    assert_eq!(status, 200);
    let q = call("v3.QueryOrder", json!({ "trade_id": paid })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "paid", "{q}");
    // The signed notification reaches the shop's notify_url.
    let got = receiver.wait_for(1, 20).await;
    assert!(
        got.iter().any(|r| r
            .form
            .iter()
            .any(|(k, _)| k.contains(&paid) && k.contains("paid"))),
        "{got:?}"
    );

    // Refunded in part once paid; a cancel after a refund is refused by the documented rule.
    let refund = call(
        "v3.CreateRefund",
        json!({
            "trade_id": paid,
            "refund_amount": "4.99",
            "refund_currency": "EUR",
            "refund_description": "one item back",
        }),
    )
    .await;
    assert_eq!(refund["status"], true, "{refund}");
    assert_eq!(refund["data"]["refund_amount"], "4.99");
    let cancel = call("v3.CancelPayment", json!({ "trade_id": paid })).await;
    assert_eq!(code(&cancel), "-4112", "{cancel}");
    // An unpaid one is cancelled in full.
    let cancel = call("v3.CancelPayment", json!({ "trade_id": trades[1] })).await;
    assert_eq!(cancel["data"]["state"], "cancelled", "{cancel}");
    let q = call("v3.QueryOrder", json!({ "trade_id": trades[1] })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled", "{q}");

    // Bad input: precise codes, never a 500.
    let mut offline = online(&reference("ws"), "WeChat Pay", "1.00", &receiver.url);
    offline["pay_method"] = "offline".into();
    assert_eq!(code(&call("v3.CreatePayments", offline).await), "-3008");
    let bitcoin = online(&reference("ws"), "Bitcoin", "1.00", &receiver.url);
    assert_eq!(code(&call("v3.CreatePayments", bitcoin).await), "-3008");
    let mut no_notify = online(&reference("ws"), "iDEAL", "1.00", &receiver.url);
    no_notify.as_object_mut().unwrap().remove("notify_url");
    assert_eq!(code(&call("v3.CreatePayments", no_notify).await), "-3001");
    let garbage = online(&reference("ws"), "iDEAL", "1.0.0", &receiver.url);
    assert_eq!(code(&call("v3.CreatePayments", garbage).await), "-3007");
    let mut bad_return = online(&reference("ws"), "iDEAL", "1.00", &receiver.url);
    bad_return["redirect_url"] = "javascript:alert(1)".into();
    assert_eq!(code(&call("v3.CreatePayments", bad_return).await), "-3007");
    let variant = online(&reference("ws"), "WeChat Pay", "1.00", &receiver.url);
    let v = call("v3.CreatePaymentsWechatH5Pay", variant.clone()).await;
    assert_eq!(code(&v), "-3008", "{v}");
    assert_eq!(code(&call("v3.NoSuchThing", variant).await), "-3006");

    // Another merchant's terminal reads none of it.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700701",
            "--store-no",
            "1",
            "--tid",
            "T700701",
            "--terminal-secret",
            "another-merchants-secret",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = |method: &'static str, data: Value| {
        let app = &app;
        async move { yaband(app, "T700701", "another-merchants-secret", method, data).await }
    };
    let q = other("v3.QueryOrder", json!({ "trade_id": paid })).await;
    assert_eq!(code(&q), "-4114", "{q}");
    let r = other(
        "v3.CreateRefund",
        json!({"trade_id": paid, "refund_amount": "1.00", "refund_currency": "EUR", "refund_description": "x"}),
    )
    .await;
    assert_eq!(code(&r), "-4114", "{r}");
    let c = other("v3.CancelPayment", json!({ "trade_id": trades[2] })).await;
    assert_eq!(code(&c), "-4114", "{c}");
}
