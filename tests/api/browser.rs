//! Checkout in a real browser: headless Chromium driven over WebDriver (`webdriver.rs`).
//!
//! A shop's page on another origin calls the Pockyt API the way the Yuansfer JavaScript SDK
//! does (form-urlencoded POSTs, which a browser sends without a preflight, and reads the
//! answer only with CORS), a YabandPay `v3.CreatePayments` checkout is clicked through on the
//! hosted page to the shop's `redirect_url`, a unified `QR_CASHIER` page follows a payment
//! made elsewhere without being reloaded, and an expired page says so.
//!
//! They need Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them
//! outside CI the tests are listed as ignored (`build.rs`).

use crate::helpers::*;
use crate::webdriver::Browser;
use serde_json::{json, Value};

/// A shop: its own origin (another port of 127.0.0.1) serving `page` at `/` and a thank-you
/// page at `/thanks`. Answers its base address.
async fn shop(page: String) -> String {
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        )
        .route(
            "/thanks",
            axum::routing::get(|| async {
                axum::response::Html("<!doctype html><title>Thanks</title><h1 id=thanks>Thank you for your order</h1>")
            }),
        )
        .route(
            "/cart",
            axum::routing::get(|| async {
                axum::response::Html("<!doctype html><title>Cart</title><h1 id=cart>Your cart</h1>")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// The shop's checkout script: each call as the SDK makes it (a form body, the SDK's
/// `Content-Type`), its answer or the browser's failure written into the page.
fn sdk_page(gateway: &str, calls: &[(&str, &str, String)]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(
            |(id, path, body)| json!({ "id": id, "url": format!("{gateway}{path}"), "body": body }),
        )
        .collect();
    format!(
        r#"<!doctype html><html><head><title>Shop</title></head><body>
<div id="log"></div>
<script>
const calls = {calls};
(async () => {{
  for (const c of calls) {{
    const out = document.createElement("pre");
    out.id = c.id;
    try {{
      const r = await fetch(c.url, {{ method: "POST", body: c.body,
        headers: {{ "Content-Type": "application/x-www-form-urlencoded" }} }});
      out.textContent = JSON.stringify(await r.json());
    }} catch (e) {{
      out.textContent = "Network Error: " + e.message;
    }}
    document.getElementById("log").appendChild(out);
  }}
  const done = document.createElement("p"); done.id = "done"; document.body.appendChild(done);
}})();
</script></body></html>"#,
        calls = serde_json::to_string(&calls).unwrap()
    )
}

fn form(pairs: Vec<(String, String)>) -> String {
    serde_urlencoded_pairs(&pairs)
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn a_shop_page_on_another_origin_adds_pays_and_queries_through_the_pockyt_api() {
    // Two shops on their own origins: the gateway allows the first only.
    let config_dir = TempDir::new();
    // The shops' addresses are known only once they listen, so each serves its page from a
    // cell filled in after the gateway starts.
    let allowed_page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let refused_page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let allowed = shop_from(allowed_page.clone()).await;
    let refused = shop_from(refused_page.clone()).await;
    let config = config_dir.0.join("tillgate.toml");
    std::fs::write(
        &config,
        format!("[cors]\nallowed_origins = [\"{allowed}\"]\n"),
    )
    .unwrap();
    let app = spawn_app_with(
        Backend::Sqlite,
        &["--config", &config.display().to_string()],
    )
    .await
    .expect("SQLite always runs");
    let pos = app.pos();
    let order = reference("sdk");
    let calls = vec![
        (
            "add",
            "/app-instore/v3/add",
            form(pos.signed(&[
                ("amount", "12.34"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &order),
            ])),
        ),
        (
            "pay",
            "/app-instore/v3/pay",
            form(pos.signed(&[
                ("reference", &order),
                ("paymentBarcode", "281234567890123456"),
                ("vendor", "alipay"),
            ])),
        ),
        (
            "query",
            "/app-data-search/v3/tran-query",
            form(pos.signed(&[("reference", &order)])),
        ),
    ];
    *allowed_page.lock().unwrap() = sdk_page(&app.base, &calls);
    let other = reference("sdk");
    *refused_page.lock().unwrap() = sdk_page(
        &app.base,
        &[(
            "add",
            "/app-instore/v3/add",
            form(pos.signed(&[
                ("amount", "1.00"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &other),
            ])),
        )],
    );

    let browser = Browser::start().await;
    browser.goto(&allowed).await;
    browser.find("#done").await;
    let answer = |id: &'static str| {
        let browser = &browser;
        async move {
            let text = browser.text(&format!("#{id}")).await;
            serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("{id}: {text}"))
        }
    };
    let add = answer("add").await;
    assert_eq!(add["ret_code"], "000100", "{add}");
    let pay = answer("pay").await;
    assert_eq!(pay["ret_code"], "000100", "{pay}");
    assert_eq!(pay["result"]["transactionStatus"], "success", "{pay}");
    let query = answer("query").await;
    assert_eq!(query["result"]["transactionStatus"], "success", "{query}");
    assert_eq!(query["result"]["amount"], "12.34", "{query}");

    // The other origin's page cannot read the answer, as the browser enforces it.
    browser.goto(&refused).await;
    browser.find("#done").await;
    let text = browser.text("#add").await;
    assert!(text.starts_with("Network Error"), "{text}");
    browser.quit().await;
}

async fn shop_from(page: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// A call of the sandbox's YabandPay terminal (seed 003's `T125119061`).
async fn yaband(app: &TestApp, method: &str, data: Value) -> Value {
    crate::yabandpay::call(&app.base, crate::yabandpay::TID, method, data).await
}

/// YabandPay's signature of a notification, written here independently: the `data` fields
/// sorted, `k=v` joined with `&` (empty values kept or left out), HMAC-SHA256, hex.
fn data_sign(data: &Value, secret: &str, empties: bool) -> String {
    use hmac::Mac;
    let mut pairs: Vec<(String, String)> = data
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .filter(|(_, v)| empties || !v.is_empty())
        .collect();
    pairs.sort();
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn a_create_payments_checkout_is_clicked_through_to_the_shops_redirect_url() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let shop = shop(String::new()).await;
    let created = yaband(
        &app,
        "v3.CreatePayments",
        json!({
            "pay_method": "online",
            "sub_pay_method": "iDEAL",
            "order_id": reference("web"),
            "amount": "42.50",
            "currency": "EUR",
            "description": "Order 1042: 2 × espresso beans",
            "notify_url": receiver.url,
            "timeout": "30",
            "redirect_url": format!("{shop}/thanks"),
            "cancel_url": format!("{shop}/cart"),
        }),
    )
    .await;
    assert_eq!(created["status"], true, "{created}");
    let trade_id = created["data"]["trade_id"].as_str().unwrap().to_owned();
    let url = created["data"]["url"].as_str().unwrap().to_owned();

    let named = std::process::Command::new(binary())
        .args([
            "merchant",
            "update",
            "--merchant-no",
            "200043",
            "--name",
            "Espresso Bar",
        ])
        .args(["--database-url", &app.database_url])
        .current_dir(&app.dir.0)
        .output()
        .unwrap();
    assert!(named.status.success());

    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert_eq!(browser.text("[data-test=merchant]").await, "Espresso Bar");
    assert_eq!(browser.text("[data-test=amount]").await, "42.50 EUR");
    assert!(browser.text("main").await.contains("iDEAL"));
    browser.find("[data-test=qr] svg").await;
    let shot = browser.screenshot("checkout").await;
    println!("checkout page: {}", shot.display());
    browser.click("[data-test=pay]").await;
    browser.wait_for_url(&format!("{shop}/thanks"), 15).await;
    assert_eq!(browser.text("#thanks").await, "Thank you for your order");

    // The shop's server hears of it, signed by the terminal's secret.
    let got = receiver.wait_for(1, 20).await;
    let note: Value = serde_json::from_slice(&got[0].body).unwrap_or_else(|_| panic!("{got:?}"));
    assert_eq!(note["data"]["trade_id"], trade_id.as_str(), "{note}");
    assert_eq!(note["data"]["state"], "paid", "{note}");
    let signs =
        [true, false].map(|empties| data_sign(&note["data"], crate::yabandpay::SECRET, empties));
    assert!(
        signs.iter().any(|s| note["sign"] == s.as_str()),
        "signed over data with the terminal's secret: {note}"
    );
    browser.quit().await;
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn a_qr_cashier_page_follows_a_payment_made_elsewhere_and_an_expired_page_says_so() {
    let app = spawn_app().await;
    let mut order = json!({
        "mchNo": "M1621873433953",
        "appId": "60cc09bce4b0f1c0b83761c9",
        "reqTime": "1700000000123",
        "version": "1.0",
        "signType": "MD5",
        "mchOrderNo": reference("qr"),
        "wayCode": "QR_CASHIER",
        "amount": "880",
        "currency": "cny",
        "subject": "tea",
        "body": "jasmine tea",
    });
    let sign = |order: &Value| {
        let pairs: Vec<(String, String)> = order
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        crate::unified::jeepay_sign(&pairs, "offline-test-key")
    };
    order["sign"] = json!(sign(&order));
    let v: Value = app
        .client
        .post(format!("{}/api/pay/unifiedOrder", app.base))
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 0, "{v}");
    let url = v["data"]["payData"].as_str().unwrap().to_owned();
    let transaction_no = v["data"]["payOrderId"]
        .as_str()
        .unwrap()
        .trim_start_matches('P')
        .to_owned();

    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert_eq!(browser.text("[data-test=amount]").await, "8.80 CNY");
    // The customer pays in the wallet app (here: the sandbox's control endpoint); the page,
    // left open, notices by itself.
    browser.run("window.notReloaded = true; return true").await;
    let (status, body) = app.settle(&transaction_no, "paid").await;
    assert_eq!(status, 200, "{body}");
    browser
        .wait_until(
            "return !window.notReloaded && document.querySelector('main').dataset.state === 'paid'",
            15,
        )
        .await;
    assert_eq!(browser.text("[data-test=status]").await, "Paid. Thank you.");

    // Another order paid on its own page: the customer presses Pay (the sandbox's wallet).
    order["mchOrderNo"] = json!(reference("qr"));
    order.as_object_mut().unwrap().remove("sign");
    order["sign"] = json!(sign(&order));
    let v: Value = app
        .client
        .post(format!("{}/api/pay/unifiedOrder", app.base))
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["data"]["payData"].as_str().unwrap().to_owned();
    let pay_order_id = v["data"]["payOrderId"].as_str().unwrap().to_owned();
    browser.goto(&url).await;
    browser.click("[data-test=pay]").await;
    browser
        .wait_until(
            "return document.querySelector('main').dataset.state === 'paid'",
            15,
        )
        .await;
    let mut query = json!({
        "mchNo": "M1621873433953", "appId": "60cc09bce4b0f1c0b83761c9", "reqTime": "1700000000123",
        "version": "1.0", "signType": "MD5", "payOrderId": pay_order_id,
    });
    query["sign"] = json!(sign(&query));
    let q: Value = app
        .client
        .post(format!("{}/api/pay/query", app.base))
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        q["data"]["state"], 2,
        "paid, as the merchant's query says: {q}"
    );

    // Another order left past its time-out: its page says it expired, and offers no payment.
    order["mchOrderNo"] = json!(reference("qr"));
    order.as_object_mut().unwrap().remove("sign");
    order["sign"] = json!(sign(&order));
    let v: Value = app
        .client
        .post(format!("{}/api/pay/unifiedOrder", app.base))
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["data"]["payData"].as_str().unwrap().to_owned();
    let no = v["data"]["payOrderId"].as_str().unwrap().to_owned();
    let (status, body) = app
        .raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/payments/{no}/age"),
            Some("application/json"),
            br#"{"hours":3}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    browser.goto(&url).await;
    let text = browser.text("[data-test=status]").await;
    assert!(text.contains("expired"), "{text}");
    let buttons = browser
        .run("return document.querySelectorAll('[data-test=pay]').length")
        .await;
    assert_eq!(buttons, json!(0));
    browser.screenshot("expired").await;
    browser.quit().await;
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn an_operator_signs_in_finds_a_transaction_and_reads_its_story() {
    let app = spawn_app().await;
    let pos = app.pos();
    let order = reference("console");
    let no = pos.paid(&order, "48.20").await;
    let refund = pos.refund(&no, "8.20", Some("rf-browser-1")).await;
    assert_eq!(refund["ret_code"], "000100", "{refund}");
    for i in 0..3 {
        pos.paid(&format!("{order}-other-{i}"), "1.00").await;
    }

    let browser = Browser::start().await;
    browser.goto(&format!("{}/console", app.base)).await;
    browser
        .wait_for_url(&format!("{}/console/login", app.base), 10)
        .await;
    browser
        .run(
            "document.querySelector('#login').value = 'operator';
             document.querySelector('#password').value = 'wrong password';
             return true",
        )
        .await;
    browser.click("[data-test=sign-in]").await;
    assert!(browser
        .text("[data-test=error]")
        .await
        .contains("Wrong login"));
    browser
        .run(
            "document.querySelector('#login').value = 'operator';
             document.querySelector('#password').value = 'sandbox-operator';
             return true",
        )
        .await;
    browser.click("[data-test=sign-in]").await;
    browser
        .wait_for_url(&format!("{}/console/transactions", app.base), 10)
        .await;
    assert_eq!(browser.text("[data-test=who]").await, "operator");

    browser
        .run(&format!(
            "document.querySelector('input[name=reference]').value = '{order}'; return true"
        ))
        .await;
    browser.click("[data-test=search]").await;
    browser
        .wait_until(
            "return document.querySelectorAll('[data-test=transactions] tbody tr').length === 1",
            10,
        )
        .await;
    browser.screenshot("console-transactions").await;
    browser
        .click(&format!("a[href='/console/transactions/{no}']"))
        .await;
    assert_eq!(browser.text("[data-test=amount]").await, "48.20 USD");
    assert_eq!(
        browser.text("[data-test=state]").await,
        "partially_refunded"
    );
    assert!(browser
        .text("[data-test=refunds]")
        .await
        .contains("rf-browser-1"));
    let timeline = browser.text("[data-test=timeline]").await;
    assert!(timeline.contains("refund"), "{timeline}");
    browser.screenshot("console-transaction").await;

    // Signing out ends the session: the console asks to sign in again.
    browser.click("[data-test=logout]").await;
    browser
        .wait_for_url(&format!("{}/console/login", app.base), 10)
        .await;
    browser
        .goto(&format!("{}/console/transactions/{no}", app.base))
        .await;
    browser
        .wait_for_url(&format!("{}/console/login", app.base), 10)
        .await;
    browser.quit().await;
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn a_transaction_page_follows_a_terminal_sale_and_reversal_without_reloading() {
    use crate::terminal_client::TestTerminal;
    let app = spawn_app().await;
    let mut terminal =
        TestTerminal::connect(&app.base, crate::yabandpay::TID, crate::yabandpay::SECRET).await;
    let order_id = crate::yabandpay::order_id();
    let sale = tokio::spawn({
        let base = app.base.clone();
        let order_id = order_id.clone();
        async move {
            crate::yabandpay::call(
                &base,
                crate::yabandpay::TID,
                "v3.POS",
                json!({"tid": crate::yabandpay::TID, "order_id": order_id, "amount": "16.40",
                       "currency": "EUR", "request_id": reference("live"), "operation": "1"}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    // The sale is on its way to the terminal: find it, and open its page.
    let found: Value = app
        .client
        .get(format!(
            "{}/admin/v1/transactions?reference={order_id}",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let no = found["transactions"][0]["transactionNo"]
        .as_str()
        .unwrap_or_else(|| panic!("{found}"))
        .to_owned();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/console/login", app.base)).await;
    browser
        .run(
            "document.querySelector('#login').value = 'cashier';
             document.querySelector('#password').value = 'sandbox-cashier';
             return true",
        )
        .await;
    browser.click("[data-test=sign-in]").await;
    browser
        .wait_for_url(&format!("{}/console/transactions", app.base), 10)
        .await;
    // The terminals page shows it connected, with the command it has not finished.
    browser
        .goto(&format!("{}/console/terminals", app.base))
        .await;
    browser
        .find(&format!("[data-test=online-{}]", crate::yabandpay::TID))
        .await;
    browser
        .goto(&format!("{}/console/transactions/{no}", app.base))
        .await;
    browser.run("window.notReloaded = true; return true").await;
    let before = browser.text("[data-test=state]").await;
    assert_ne!(before, "paid");

    terminal.complete(&command, "approved").await;
    let answer = sale.await.unwrap();
    assert_eq!(answer["data"]["state"], "paid", "{answer}");
    browser
        .wait_until(
            "return window.notReloaded === true
                && document.querySelectorAll('[data-test=timeline] tr.fresh').length > 0
                && document.querySelector('[data-test=state]').textContent === 'paid'",
            15,
        )
        .await;
    // The same day, a reversal on the terminal: its progress shows step by step, live.
    let trade = no.clone();
    let reversal = tokio::spawn({
        let base = app.base.clone();
        let trade = trade.clone();
        async move {
            crate::yabandpay::call(
                &base,
                crate::yabandpay::TID,
                "v3.POSReversal",
                json!({"tid": crate::yabandpay::TID, "trade_id": trade, "request_id": reference("rev")}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    assert_eq!(command["kind"], "reversal");
    terminal
        .send(json!({"type": "ack", "id": command["id"]}))
        .await;
    terminal
        .send(json!({"type": "progress", "id": command["id"], "stage": "customer is looking"}))
        .await;
    browser
        .wait_until(
            "return [...document.querySelectorAll('[data-test=timeline] tr.fresh')]
                .some(r => r.textContent.includes('customer is looking'))",
            15,
        )
        .await;
    assert_eq!(
        browser.text("[data-test=state]").await,
        "paid",
        "not reversed yet"
    );
    terminal.complete(&command, "approved").await;
    let answer = reversal.await.unwrap();
    assert_eq!(answer["data"]["state"], "cancelled", "{answer}");
    browser
        .wait_until(
            "return window.notReloaded === true
                && document.querySelector('[data-test=state]').textContent === 'cancelled'",
            15,
        )
        .await;
    browser.screenshot("console-live").await;
    browser.quit().await;
}

/// Signs in through the form; the browser lands on the transactions page.
async fn sign_in_as(browser: &Browser, base: &str, login: &str, password: &str) {
    browser.goto(&format!("{base}/console/login")).await;
    browser
        .run(&format!(
            "document.querySelector('#login').value = '{login}';
             document.querySelector('#password').value = '{password}';
             return true"
        ))
        .await;
    browser.click("[data-test=sign-in]").await;
    browser
        .wait_for_url(&format!("{base}/console/transactions"), 10)
        .await;
}

async fn sign_out(browser: &Browser, base: &str) {
    browser.click("[data-test=logout]").await;
    browser
        .wait_for_url(&format!("{base}/console/login"), 10)
        .await;
}

/// Posts a form of the page again with `fetch` (as a second click would), optionally without
/// its CSRF token; answers the HTTP status.
async fn post_again(browser: &Browser, form: &str, drop_csrf: bool) -> i64 {
    let script = format!(
        "const form = document.querySelector('{form}');
         const data = new URLSearchParams(new FormData(form));
         if ({drop_csrf}) {{ data.delete('csrf'); }}
         const r = await fetch(form.action, {{ method: 'POST', body: data, redirect: 'manual' }});
         return r.status;"
    );
    // The script is async: run it and wait for its answer.
    let v = browser
        .run(&format!(
            "window.__posted = undefined; (async () => {{ {script} }})().then(s => window.__posted = s); return true"
        ))
        .await;
    assert_eq!(v, Value::Bool(true));
    for _ in 0..100 {
        let got = browser
            .run("return window.__posted === undefined ? null : window.__posted")
            .await;
        if let Some(n) = got.as_i64() {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the post did not finish");
}

fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) {
    let out = tillgate_command(app, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The console's story in a browser: find, refund under a maker-checker policy, the second
/// person approves, isolation, CSRF, the auditor, and a failed notification sent again.
async fn the_console_in_a_browser(app: TestApp) {
    cli(
        &app,
        &[
            "merchant",
            "update",
            "--merchant-no",
            "200043",
            "--refund-authority",
            "approval",
            "--approval-threshold-minor",
            "500",
        ],
        None,
    );
    cli(
        &app,
        &[
            "user",
            "create",
            "--login",
            "boss",
            "--role",
            "merchant-admin",
            "--merchant-no",
            "200043",
            "--password-stdin",
        ],
        Some("boss password 123\n"),
    );
    cli(
        &app,
        &[
            "user",
            "create",
            "--login",
            "audra",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        Some("auditor password 1\n"),
    );
    let receiver = Receiver::start().await;
    // The shop's server is down for the first notification.
    receiver.script(vec![Answer {
        status: 500,
        body: "down",
        delay_ms: 0,
    }]);
    let pos = app.pos();
    let order = reference("story");
    let added = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "40.00"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &order),
                ("ipnUrl", &receiver.url),
            ],
        )
        .await;
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "success");
    receiver.wait_for(1, 20).await;
    let other_merchant = {
        let mut order = json!({
            "mchNo": "M1621873433953", "appId": "60cc09bce4b0f1c0b83761c9", "reqTime": "1700000000123",
            "version": "1.0", "signType": "MD5", "mchOrderNo": reference("b"), "wayCode": "QR_CASHIER",
            "amount": "500", "currency": "cny", "subject": "b", "body": "b",
        });
        let pairs: Vec<(String, String)> = order
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        order["sign"] = json!(crate::unified::jeepay_sign(&pairs, "offline-test-key"));
        let v: Value = app
            .client
            .post(format!("{}/api/pay/unifiedOrder", app.base))
            .json(&order)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["payOrderId"]
            .as_str()
            .unwrap()
            .trim_start_matches('P')
            .to_owned()
    };

    let base = app.base.clone();
    let browser = Browser::start().await;
    sign_in_as(&browser, &base, "cashier", "sandbox-cashier").await;
    // Find it by reference, and by today's date range.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for query in [
        format!("reference={order}"),
        format!("from={today}&to={today}&currency=USD&min=40.00&max=40.00"),
    ] {
        browser
            .goto(&format!("{base}/console/transactions?{query}"))
            .await;
        browser
            .find(&format!("a[href='/console/transactions/{no}']"))
            .await;
    }
    browser
        .click(&format!("a[href='/console/transactions/{no}']"))
        .await;
    // Ask for a refund above the threshold — with a double click.
    browser
        .run(
            "document.querySelector('[data-test=refund-amount]').value = '12.00';
                 document.querySelector('input[name=reason]').value = 'double click'; return true",
        )
        .await;
    assert_eq!(
        post_again(&browser, "[data-test=refund-form]", false).await,
        0,
        "a redirect (opaque)"
    );
    browser.click("[data-test=refund]").await;
    assert!(browser
        .text("[data-test=notice]")
        .await
        .contains("waits for a second person"));
    // Without the session's token the same form is refused.
    assert_eq!(
        post_again(&browser, "[data-test=refund-form]", true).await,
        403
    );
    browser.goto(&format!("{base}/console/approvals")).await;
    let pending = browser.text("[data-test=pending]").await;
    assert_eq!(pending.matches("double click").count(), 1, "{pending}");
    assert!(
        pending.contains("yours: another person decides"),
        "{pending}"
    );
    // Another merchant's transaction, by its address: refused.
    browser
        .goto(&format!("{base}/console/transactions/{other_merchant}"))
        .await;
    assert_eq!(browser.text("h1").await, "No such transaction.");
    sign_out(&browser, &base).await;

    // The merchant's admin approves; the refund is made and notified.
    sign_in_as(&browser, &base, "boss", "boss password 123").await;
    browser.goto(&format!("{base}/console/approvals")).await;
    browser.click("[data-test^=approve-]").await;
    assert_eq!(
        browser.text("[data-test=notice]").await,
        "Approved and carried out."
    );
    browser
        .goto(&format!("{base}/console/transactions/{no}"))
        .await;
    let refunds = browser.text("[data-test=refunds]").await;
    assert!(
        refunds.contains("12.00") && refunds.contains("Succeeded"),
        "{refunds}"
    );
    // The failed payment notification, sent again from its row.
    receiver.wait_for(2, 20).await;
    browser
        .goto(&format!("{base}/console/transactions/{no}"))
        .await;
    let notes = browser.text("[data-test=notifications]").await;
    assert!(
        notes.contains("500"),
        "the failed attempt is shown: {notes}"
    );
    let before = receiver.received().len();
    browser.click("[data-test^=resend-]").await;
    assert!(browser
        .text("[data-test=notice]")
        .await
        .contains("sent again"));
    receiver.wait_for(before + 1, 20).await;
    sign_out(&browser, &base).await;

    // An auditor sees no action and a forged action is refused.
    sign_in_as(&browser, &base, "audra", "auditor password 1").await;
    browser
        .goto(&format!("{base}/console/transactions/{no}"))
        .await;
    let buttons = browser.run("return document.querySelectorAll('[data-test=refund], [data-test=cancel], [data-test^=resend-]').length").await;
    assert_eq!(buttons, json!(0));
    let status = browser
        .run(&format!(
            "window.__posted = undefined;
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch('/console/transactions/{no}/refund', {{ method: 'POST', redirect: 'manual',
               body: new URLSearchParams({{ csrf, key: 'a'.repeat(32), amount: '1.00' }}) }})
               .then(r => window.__posted = r.status);
             return true"
        ))
        .await;
    assert_eq!(status, json!(true));
    let mut forged = Value::Null;
    for _ in 0..50 {
        forged = browser
            .run("return window.__posted === undefined ? null : window.__posted")
            .await;
        if !forged.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(forged, json!(403));
    let q = pos.query(&no).await;
    assert_eq!(
        q["result"]["refundAmount"], "12.00",
        "one refund, approved: {q}"
    );
    browser
        .screenshot(&format!(
            "console-story-{}",
            if app.database.is_some() {
                "postgres"
            } else {
                "sqlite"
            }
        ))
        .await;
    browser.quit().await;
}

mod console_story {
    use super::*;

    #[tokio::test]
    #[cfg_attr(
        tillgate_no_browser,
        ignore = "chromium and chromedriver are not installed"
    )]
    async fn on_sqlite() {
        let app = spawn_app_on(Backend::Sqlite)
            .await
            .expect("SQLite always runs");
        the_console_in_a_browser(app).await
    }

    #[tokio::test]
    #[cfg_attr(
        all(tillgate_no_browser, not(tillgate_no_postgres)),
        ignore = "chromium and chromedriver are not installed"
    )]
    #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
    async fn on_postgres() {
        let app = spawn_app_on(Backend::Postgres)
            .await
            .expect("TILLGATE_TEST_POSTGRES_URL is set");
        the_console_in_a_browser(app).await
    }
}

#[tokio::test]
#[cfg_attr(
    tillgate_no_browser,
    ignore = "chromium and chromedriver are not installed"
)]
async fn an_operator_rotates_a_token_and_the_old_one_works_only_during_its_grace() {
    const OLD: &str = "359c05eb811c7c8576f4a8a277dc6f6b";
    let app = spawn_app().await;
    let base = app.base.clone();
    let browser = Browser::start().await;
    sign_in_as(&browser, &base, "operator", "sandbox-operator").await;
    let rotate = |grace: &'static str| {
        let (browser, base) = (&browser, &base);
        async move {
            browser
                .goto(&format!("{base}/console/merchants/200043"))
                .await;
            browser
                .run(&format!(
                    "document.querySelector('[data-test=rotate-key]').value = '303660';
                     document.querySelector('[data-test=rotate] input[name=grace]').value = '{grace}';
                     return true"
                ))
                .await;
            browser.click("[data-test=rotate-button]").await;
            browser.text("[data-test=new-secret]").await
        }
    };
    let add = |token: String| {
        let app = &app;
        async move {
            let v = app
                .pos_for("200043", "303660", &token)
                .add(&reference("rot"), "1.00")
                .await;
            v["ret_code"].as_str().unwrap_or("?").to_owned()
        }
    };
    let fresh = rotate("60").await;
    assert_eq!(fresh.len(), 32);
    assert_eq!(add(fresh.clone()).await, "000100");
    assert_eq!(add(OLD.to_owned()).await, "000100", "during the grace");
    let newest = rotate("0").await;
    browser.screenshot("console-rotated").await;
    assert_eq!(add(newest).await, "000100");
    assert_ne!(add(fresh).await, "000100", "after the grace");
    browser.quit().await;
}
