//! Rate limits per merchant and per client address: a request over its limit gets its
//! dialect's busy answer (Pockyt `000000`, unified `10`, YabandPay `−5002`) with HTTP 429 and
//! changes nothing, while another merchant, or another address, is served as before. The
//! limits are 1 request per second with a burst of 2; a test sends requests until one is
//! refused (a bounded number), it never waits for a rate.

use crate::helpers::*;
use crate::unified::jeepay_sign;
use crate::yabandpay::yaband_sign;
use serde_json::{json, Value};
use std::process::Command;

const UNIFIED_MCH_NO: &str = "M1621873433953";
const UNIFIED_APP_ID: &str = "60cc09bce4b0f1c0b83761c9";
const UNIFIED_SECRET: &str = "offline-test-key";
const TID: &str = "T125119061";
const YABAND_SECRET: &str = "62184c09df1aeb63239e07079875be81";
/// A paid sandbox transaction of merchant 200043, store 303660 (100.00 USD).
const FIXTURE: &str = "316129873376769782";

/// More requests than a burst of 2 at 1 per second can pass, sent back to back.
const ATTEMPTS: usize = 20;

/// An answer: HTTP status, `Retry-After` if any, and the JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> Answer {
    let resp = client.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap();
    Answer {
        status,
        retry_after,
        body,
    }
}

fn pockyt_body(merchant_no: &str, store_no: &str, token: &str, params: &[(&str, &str)]) -> Value {
    let mut all: Vec<(&str, &str)> = vec![("merchantNo", merchant_no), ("storeNo", store_no)];
    all.extend_from_slice(params);
    let sign = verify_sign(&all, token);
    let mut body: serde_json::Map<String, Value> =
        all.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    body.insert("verifySign".into(), json!(sign));
    Value::Object(body)
}

fn unified_body(mch_no: &str, app_id: &str, secret: &str, params: &[(&str, &str)]) -> Value {
    let mut pairs: Vec<(String, String)> = [
        ("mchNo", mch_no),
        ("appId", app_id),
        ("reqTime", "1700000000123"),
        ("version", "1.0"),
        ("signType", "MD5"),
    ]
    .iter()
    .chain(params)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sign = jeepay_sign(&pairs, secret);
    pairs.push(("sign".into(), sign));
    Value::Object(pairs.into_iter().map(|(k, v)| (k, json!(v))).collect())
}

fn yaband_body(user: &str, secret: &str, method: &str, data: Value) -> Value {
    let time = chrono::Utc::now().timestamp();
    json!({
        "user": user,
        "method": method,
        "time": time,
        "sign": yaband_sign(user, method, time, &data, secret),
        "data": data,
    })
}

/// Sends `body()` until an answer is HTTP 429 (at most [`ATTEMPTS`]); returns the answers that
/// passed and the refusal.
async fn until_busy(
    client: &reqwest::Client,
    url: &str,
    mut body: impl FnMut(usize) -> Value,
) -> (Vec<Value>, Answer) {
    let mut passed = Vec::new();
    for i in 0..ATTEMPTS {
        let answer = post(client, url.to_owned(), &body(i)).await;
        if answer.status == 429 {
            return (passed, answer);
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        passed.push(answer.body);
    }
    panic!(
        "{ATTEMPTS} requests back to back to {url} were never refused; the last answer: {:?}",
        passed.last()
    );
}

/// Runs `tillgate merchant create` against the server's database; returns its credentials.
fn create_merchant(app: &TestApp, merchant_no: &str) -> Value {
    let out = Command::new(binary())
        .args(["merchant", "create", "--database-url", &app.database_url])
        .args(["--merchant-no", merchant_no, "--store-no", "1"])
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A server on `backend` whose configuration file holds `rates` as its `[rate_limit]`.
async fn limited(backend: Backend, rates: &str) -> Option<(TestApp, TempDir)> {
    let config_dir = TempDir::new();
    let config = config_dir.0.join("tillgate.toml");
    std::fs::write(&config, format!("[rate_limit]\n{rates}")).unwrap();
    let config = config.display().to_string();
    let app = spawn_app_with(backend, &["--config", &config]).await?;
    Some((app, config_dir))
}

async fn a_merchant_over_its_rate_is_refused_in_its_dialect_and_others_are_served(
    backend: Backend,
) {
    let Some((app, _config)) = limited(
        backend,
        "per_merchant = 1\nper_merchant_burst = 2\nper_address = 0\n",
    )
    .await
    else {
        return;
    };
    let other = create_merchant(&app, "700001");
    let client = reqwest::Client::new();
    let base = app.base.clone();

    // Merchant 200043 refunds 0.01 of its paid sample until it is refused.
    let refund = |i: usize| {
        let r = format!("{}-{i}", reference("rate"));
        pockyt_body(
            MERCHANT_NO,
            STORE_NO,
            TOKEN,
            &[
                ("transactionNo", FIXTURE),
                ("refundAmount", "0.01"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("refundReference", &r),
            ],
        )
    };
    let (passed, busy) = until_busy(
        &client,
        &format!("{base}/app-data-search/v3/refund"),
        refund,
    )
    .await;
    assert_eq!(busy.body["ret_code"], "000000", "{}", busy.body);
    assert!(
        busy.body["ret_msg"]
            .as_str()
            .unwrap()
            .contains("too many requests of this merchant"),
        "{}",
        busy.body
    );
    assert!(
        passed.iter().all(|a| a["ret_code"] == "000100"),
        "{passed:?}"
    );
    let refunded = passed.len();

    // Another merchant, in the same dialect, is served at once.
    let token = other["pockyt"]["token"].as_str().unwrap();
    let q = post(
        &client,
        format!("{base}/app-data-search/v3/tran-query"),
        &pockyt_body("700001", "1", token, &[("transactionNo", FIXTURE)]),
    )
    .await;
    assert_eq!(
        (q.status, &q.body["ret_code"]),
        (200, &json!("000021")),
        "{}",
        q.body
    );
    // And in the unified dialect (merchant M1621873433953), until its own limit.
    let (passed, busy) = until_busy(&client, &format!("{base}/api/pay/query"), |_| {
        unified_body(
            UNIFIED_MCH_NO,
            UNIFIED_APP_ID,
            UNIFIED_SECRET,
            &[("mchOrderNo", "nothing-here")],
        )
    })
    .await;
    assert!(
        !passed.is_empty(),
        "another merchant's first request passes"
    );
    assert_eq!(passed[0]["code"], 9999, "{}", passed[0]);
    assert_eq!(busy.body["code"], 10, "{}", busy.body);
    assert!(busy.body.get("data").is_none(), "{}", busy.body);
    // YabandPay: merchant 200043's terminal shares the merchant's allowance.
    let (_, busy) = until_busy(&client, &format!("{base}/Payments"), |_| {
        yaband_body(
            TID,
            YABAND_SECRET,
            "v3.QueryOrder",
            json!({"trade_id": "1"}),
        )
    })
    .await;
    assert_eq!(busy.body["status"], false, "{}", busy.body);
    assert_eq!(busy.body["code"], "-5002", "{}", busy.body);
    // The new merchant's terminal is served.
    let tid = other["terminal"]["tid"].as_str().unwrap();
    let secret = other["terminal"]["secret"].as_str().unwrap();
    let own = post(
        &client,
        format!("{base}/Payments"),
        &yaband_body(tid, secret, "v3.QueryOrder", json!({"trade_id": "1"})),
    )
    .await;
    assert_eq!(
        (own.status, &own.body["code"]),
        (200, &json!("-4114")),
        "{}",
        own.body
    );

    // The refused refund changed nothing: once the merchant may ask again, the transaction
    // shows exactly the refunds that were answered.
    let mut query = None;
    for _ in 0..ATTEMPTS {
        let q = post(
            &client,
            format!("{base}/app-data-search/v3/tran-query"),
            &pockyt_body(MERCHANT_NO, STORE_NO, TOKEN, &[("transactionNo", FIXTURE)]),
        )
        .await;
        if q.status == 200 {
            query = Some(q.body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let query = query.expect("the merchant is served again after its wait");
    let refunds = query["result"]["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), refunded, "{query}");
    assert_eq!(
        query["result"]["refundAmount"],
        format!("0.{refunded:02}"),
        "{query}"
    );
}

async fn an_address_over_its_rate_is_refused_in_each_dialect_and_others_are_served(
    backend: Backend,
) {
    let Some((app, _config)) = limited(
        backend,
        "per_address = 1\nper_address_burst = 2\nper_merchant = 0\n",
    )
    .await
    else {
        return;
    };
    let base = app.base.clone();
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let noisy = from("127.0.0.1");
    let query = || pockyt_body(MERCHANT_NO, STORE_NO, TOKEN, &[("transactionNo", "1")]);
    let (_, busy) = until_busy(
        &noisy,
        &format!("{base}/app-data-search/v3/tran-query"),
        |_| query(),
    )
    .await;
    assert_eq!(busy.body["ret_code"], "000000", "{}", busy.body);
    assert!(
        busy.body["ret_msg"]
            .as_str()
            .unwrap()
            .contains("too many requests from this address"),
        "{}",
        busy.body
    );
    let wait: u64 = busy.retry_after.expect("Retry-After").parse().unwrap();
    assert!(wait >= 1, "{wait}");
    // The same address in the other dialects.
    let (_, busy) = until_busy(&noisy, &format!("{base}/api/pay/query"), |_| {
        unified_body(
            UNIFIED_MCH_NO,
            UNIFIED_APP_ID,
            UNIFIED_SECRET,
            &[("mchOrderNo", "nothing-here")],
        )
    })
    .await;
    assert_eq!(busy.body["code"], 10, "{}", busy.body);
    let (_, busy) = until_busy(&noisy, &format!("{base}/Payments"), |_| {
        yaband_body(
            TID,
            YABAND_SECRET,
            "v3.QueryOrder",
            json!({"trade_id": "1"}),
        )
    })
    .await;
    assert_eq!(busy.body["code"], "-5002", "{}", busy.body);
    // Another address, the same merchant: served.
    let q = post(
        &from("127.0.0.2"),
        format!("{base}/app-data-search/v3/tran-query"),
        &query(),
    )
    .await;
    assert_eq!(
        (q.status, &q.body["ret_code"]),
        (200, &json!("000021")),
        "{}",
        q.body
    );
    // Operator surfaces are not counted: the admin API still answers the noisy address.
    let status = noisy
        .get(format!("{base}/admin/v1/unresolved"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn a_merchant_over_its_rate_is_refused_in_its_dialect_and_others_are_served_on_sqlite() {
    a_merchant_over_its_rate_is_refused_in_its_dialect_and_others_are_served(Backend::Sqlite).await
}

#[tokio::test]
async fn a_merchant_over_its_rate_is_refused_in_its_dialect_and_others_are_served_on_postgres() {
    a_merchant_over_its_rate_is_refused_in_its_dialect_and_others_are_served(Backend::Postgres)
        .await
}

#[tokio::test]
async fn an_address_over_its_rate_is_refused_in_each_dialect_and_others_are_served_on_sqlite() {
    an_address_over_its_rate_is_refused_in_each_dialect_and_others_are_served(Backend::Sqlite).await
}

#[tokio::test]
async fn rate_limits_are_off_in_sandbox_by_default() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    for _ in 0..ATTEMPTS {
        let q = post(
            &client,
            format!("{}/app-data-search/v3/tran-query", app.base),
            &pockyt_body(MERCHANT_NO, STORE_NO, TOKEN, &[("transactionNo", "1")]),
        )
        .await;
        assert_eq!(
            (q.status, &q.body["ret_code"]),
            (200, &json!("000021")),
            "{}",
            q.body
        );
    }
}
