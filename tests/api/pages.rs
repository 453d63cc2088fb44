//! Hosted payment pages over plain HTTP: what a page shows, where it sends the browser, and
//! what a stranger with a wrong or changed token gets. (The click-through in a real browser is
//! in `browser.rs`.)

use crate::helpers::*;
use serde_json::{json, Value};

/// A call of the sandbox's YabandPay terminal (seed 003's `T125119061`).
async fn yaband(app: &TestApp, method: &str, data: Value) -> Value {
    crate::yabandpay::call(&app.base, crate::yabandpay::TID, method, data).await
}

/// A `v3.CreatePayments` checkout; answers (trade_id, page url).
pub async fn checkout(app: &TestApp, notify_url: &str, amount: &str) -> (String, String) {
    let created = yaband(
        app,
        "v3.CreatePayments",
        json!({
            "pay_method": "online",
            "sub_pay_method": "iDEAL",
            "order_id": reference("page"),
            "amount": amount,
            "currency": "EUR",
            "description": "2 × espresso <b>beans</b>",
            "notify_url": notify_url,
            "timeout": "30",
            "redirect_url": "https://shop.example/thanks?order=7",
            "cancel_url": "https://shop.example/cart",
        }),
    )
    .await;
    assert_eq!(created["status"], true, "{created}");
    let d = &created["data"];
    (
        d["trade_id"].as_str().unwrap().to_owned(),
        d["url"].as_str().unwrap().to_owned(),
    )
}

fn merchant(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .arg("merchant")
        .args(args)
        .args(["--database-url", &app.database_url])
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = no_redirects().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Option<String>) {
    let resp = no_redirects().post(url).form(form).send().await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), location)
}

fn location(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers.get("location").map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_page_shows_the_payment_and_sends_the_customer_back_once_paid() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (trade_id, url) = checkout(&app, &receiver.url, "24.99").await;
    assert!(
        url.starts_with(&format!("{}/pay/{trade_id}-", app.base)),
        "the page is under the gateway's own address: {url}"
    );

    // Without a name the page shows the merchant's number; with one, its name (escaped).
    let (_, _, html) = get(&url).await;
    assert!(html.contains("Merchant 200043"), "{html}");
    let out = merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            "200043",
            "--name",
            "Café <Zürich>",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["name"], "Café <Zürich>");
    let out = merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            "200043",
            "--name",
            &"x".repeat(81),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 80"));

    let (status, headers, html) = get(&url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Café &lt;Zürich&gt;"), "{html}");
    assert!(html.contains("24.99 EUR"), "{html}");
    assert!(html.contains("iDEAL"), "{html}");
    assert!(
        html.contains("2 × espresso &lt;b&gt;beans&lt;/b&gt;"),
        "the description is escaped: {html}"
    );
    assert!(html.contains("<svg"), "a QR code: {html}");
    assert!(
        html.contains("data-test=\"pay\""),
        "sandbox buttons: {html}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");

    let (status, _, body) = get(&format!("{url}/status")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "pending"
    );

    // The customer pays (the sandbox plays the wallet): back to the page, which sends the
    // browser to the shop's redirect_url.
    let (status, to) = post_form(&format!("{url}/sandbox"), &[("outcome", "paid")]).await;
    assert_eq!(status, 303);
    assert_eq!(to.as_deref(), Some(url.strip_prefix(&app.base).unwrap()));
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, 303);
    assert_eq!(
        location(&headers),
        Some("https://shop.example/thanks?order=7")
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let (_, _, body) = get(&format!("{url}/status")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "paid"
    );

    // The merchant hears of it, signed, and sees it paid.
    let got = receiver.wait_for(1, 20).await;
    assert!(
        got.iter()
            .any(|r| r.form.iter().any(|(k, _)| k.contains(&trade_id))),
        "{got:?}"
    );
    let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": trade_id })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "paid", "{q}");

    // A second click of "Pay" changes nothing.
    let (status, _) = post_form(&format!("{url}/sandbox"), &[("outcome", "declined")]).await;
    assert_eq!(status, 303);
    let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": trade_id })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "paid", "{q}");
}

#[tokio::test]
async fn a_customer_who_cancels_goes_back_to_the_cart_and_the_payment_is_cancelled() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (trade_id, url) = checkout(&app, &receiver.url, "9.90").await;
    let (status, _) = post_form(&format!("{url}/cancel"), &[]).await;
    assert_eq!(status, 303);
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, 303);
    assert_eq!(location(&headers), Some("https://shop.example/cart"));
    let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": trade_id })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled", "{q}");
    // Nothing can be paid on it any more.
    let (status, _) = post_form(&format!("{url}/sandbox"), &[("outcome", "paid")]).await;
    assert_eq!(status, 303);
    let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": trade_id })).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled", "{q}");
}

#[tokio::test]
async fn a_page_past_its_time_out_says_it_expired_and_pays_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (trade_id, url) = checkout(&app, &receiver.url, "5.00").await;
    // An hour later (the checkout's time-out is 30 minutes).
    let (status, body) = app
        .raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/payments/{trade_id}/age"),
            Some("application/json"),
            br#"{"hours":1}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, html) = get(&url).await;
    assert_eq!(status, 410, "{html}");
    assert!(html.contains("expired"), "{html}");
    assert!(!html.contains("data-test=\"pay\""), "{html}");
    let (_, _, body) = get(&format!("{url}/status")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "expired"
    );
    post_form(&format!("{url}/sandbox"), &[("outcome", "paid")]).await;
    let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": trade_id })).await;
    assert_ne!(q["data"]["transaction_info"]["state"], "paid", "{q}");
}

#[tokio::test]
async fn a_wrong_or_changed_token_opens_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (trade_id, url) = checkout(&app, &receiver.url, "7.00").await;
    let (other_trade, _) = checkout(&app, &receiver.url, "8.00").await;
    let mac = url.rsplit_once('-').unwrap().1;
    let mut flipped = mac.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let base = &app.base;
    for bad in [
        // Another payment's number with this payment's MAC.
        format!("{base}/pay/{other_trade}-{mac}"),
        format!("{base}/pay/{trade_id}-{flipped}"),
        format!("{base}/pay/{trade_id}"),
        format!("{base}/pay/{trade_id}-"),
        format!("{base}/pay/{trade_id}-{}", &mac[..10]),
        format!("{base}/pay/%00{trade_id}-{mac}"),
        format!("{base}/pay/..%2F..%2Fadmin%2Fv1"),
        format!("{base}/pay/{}", "9".repeat(5000)),
    ] {
        let (status, _, html) = get(&bad).await;
        assert!(
            status == 404 || status == 400 || status == 414,
            "{bad}: {status} {html}"
        );
        assert!(
            !html.contains("7.00") && !html.contains("8.00"),
            "{bad}: {html}"
        );
        let (status, _) = post_form(&format!("{bad}/sandbox"), &[("outcome", "paid")]).await;
        assert!(
            status == 404 || status == 400 || status == 414,
            "{bad}: {status}"
        );
        let (status, _) = post_form(&format!("{bad}/cancel"), &[]).await;
        assert!(
            status == 404 || status == 400 || status == 414,
            "{bad}: {status}"
        );
    }
    // Neither payment moved.
    for t in [&trade_id, &other_trade] {
        let q = yaband(&app, "v3.QueryOrder", json!({ "trade_id": t })).await;
        assert_eq!(q["data"]["transaction_info"]["state"], "processing", "{q}");
    }
    // A bad form is refused with a clear answer.
    let (status, _) = post_form(&format!("{url}/sandbox"), &[("outcome", "steal")]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_unified_qr_cashier_order_is_paid_on_its_page_and_returns_to_return_url() {
    let app = spawn_app().await;
    let mut body = json!({
        "mchNo": "M1621873433953",
        "appId": "60cc09bce4b0f1c0b83761c9",
        "reqTime": "1700000000123",
        "version": "1.0",
        "signType": "MD5",
        "mchOrderNo": reference("qr"),
        "wayCode": "QR_CASHIER",
        "amount": "1250",
        "currency": "cny",
        "subject": "tea",
        "body": "jasmine tea",
        "returnUrl": "https://shop.example/back",
    });
    let pairs: Vec<(String, String)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    body["sign"] = json!(crate::unified::jeepay_sign(&pairs, "offline-test-key"));
    let body = serde_json::to_vec(&body).unwrap();
    let resp = app
        .client
        .post(format!("{}/api/pay/unifiedOrder", app.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 0, "{v}");
    let url = v["data"]["payData"].as_str().unwrap().to_owned();
    let (status, _, html) = get(&url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("12.50 CNY"), "{html}");
    post_form(&format!("{url}/sandbox"), &[("outcome", "paid")]).await;
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, 303);
    assert_eq!(location(&headers), Some("https://shop.example/back"));
}
