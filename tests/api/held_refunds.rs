//! Refunds through the merchant APIs under a merchant's "API refunds need approval too": held
//! (reserved, answered in progress, never sent to the wallet) until a person decides in the
//! console; approved, they go to the wallet and are notified; rejected, they fail, release
//! their reservation and are notified. On both backends, with a real notification receiver.

use crate::console::{client, csrf_of, page, sign_in};
use crate::helpers::*;
use serde_json::{json, Value};

/// A janitor that looks every 200 ms at operations older than 600 ms, and notifications sent
/// at once and retried every second.
const QUICK: &[&str] = &[
    "--channel-timeout-ms",
    "300",
    "--janitor-interval-ms",
    "200",
    "--notify-schedule-s",
    "0,1,1,1",
];

fn merchant_update(app: &TestApp, merchant_no: &str, args: &[&str]) {
    let mut all = vec!["merchant", "update", "--merchant-no", merchant_no];
    all.extend_from_slice(args);
    let out = tillgate_command(app, &all, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn create_user(app: &TestApp, login: &str, role: &str, merchant_no: &str, password: &str) {
    let out = tillgate_command(
        app,
        &[
            "user",
            "create",
            "--login",
            login,
            "--role",
            role,
            "--merchant-no",
            merchant_no,
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Posts a decision (`approve` or `reject`) on approval `id`; answers (status, location).
async fn decide(app: &TestApp, cookie: &str, id: i64, what: &str, reason: &str) -> (u16, String) {
    let csrf = csrf_of(&page(app, cookie, "/console/approvals").await.1);
    let resp = client()
        .post(format!("{}/console/approvals/{id}/{what}", app.base))
        .header("cookie", cookie)
        .form(&[("csrf", csrf.as_str()), ("reason", reason)])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location)
}

/// The pending approvals the page shows `cookie`'s user: (id, the row's text).
async fn pending(app: &TestApp, cookie: &str) -> Vec<(i64, String)> {
    let (status, html) = page(app, cookie, "/console/approvals").await;
    assert_eq!(status, 200, "{html}");
    let Some(table) = html.split("data-test=\"pending\"").nth(1) else {
        return Vec::new();
    };
    let table = table.split("</table>").next().unwrap();
    table
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let id = row
                .split("<td>")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (id, row.to_owned())
        })
        .collect()
}

/// The approval of the pending one whose row names `amount`.
async fn approval_of(app: &TestApp, cookie: &str, amount: &str) -> i64 {
    let all = pending(app, cookie).await;
    let found: Vec<_> = all
        .iter()
        .filter(|(_, row)| row.contains(&format!(">{amount} ")))
        .collect();
    assert_eq!(found.len(), 1, "one pending approval of {amount}: {all:?}");
    assert!(
        found[0].1.contains("<td>API</td>"),
        "asked by the API: {}",
        found[0].1
    );
    found[0].0
}

/// One sample of a metric with these labels, from `/metrics` (open in sandbox mode).
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> i64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let rest = rest.strip_suffix('}')?;
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().unwrap() as i64)
        })
        .unwrap_or(0)
}

async fn wallet_calls(app: &TestApp, operation: &str) -> i64 {
    let mut n = 0;
    for outcome in ["approved", "declined", "unknown"] {
        n += metric(
            app,
            "tillgate_wallet_calls_total",
            &[("operation", operation), ("outcome", outcome)],
        )
        .await;
    }
    n
}

async fn unresolved(app: &TestApp) -> Vec<Value> {
    let (status, v) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/unresolved",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["unresolved"].as_array().unwrap().clone()
}

/// A Pockyt transaction of merchant 200043, paid, its notifications sent to `ipn`.
async fn paid_with_ipn(app: &TestApp, ipn: &str, amount: &str) -> String {
    let pos = app.pos();
    let added = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", amount),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &reference("held")),
                ("ipnUrl", ipn),
            ],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "success");
    no
}

/// The receiver's refund notifications of refund `refund_no`.
fn refund_notes(receiver: &Receiver, refund_no: &str) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.field("refundTransactionNo") == Some(refund_no))
        .collect()
}

async fn wait_for_refund_note(receiver: &Receiver, refund_no: &str) -> Received {
    for _ in 0..200 {
        if let Some(r) = refund_notes(receiver, refund_no).pop() {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "no notification of refund {refund_no}: {:?}",
        receiver.received()
    );
}

async fn pockyt_refunds_wait_for_a_person_and_end_as_decided(backend: Backend) {
    let Some(app) = spawn_app_with(backend, QUICK).await else {
        return;
    };
    merchant_update(
        &app,
        "200043",
        &[
            "--refund-authority",
            "approval",
            "--approval-threshold-minor",
            "500",
            "--api-refunds-need-approval",
            "true",
        ],
    );
    create_user(
        &app,
        "boss",
        "merchant-admin",
        "200043",
        "boss password 123",
    );
    create_user(
        &app,
        "stranger",
        "merchant-admin",
        "M1621873433953",
        "stranger password 1",
    );
    let receiver = Receiver::start().await;
    let pos = app.pos();
    let no = paid_with_ipn(&app, &receiver.url, "30.00").await;

    // Up to the threshold an API refund is not held.
    let small = pos.refund(&no, "5.00", Some(&reference("r"))).await;
    assert_eq!(small["result"]["status"], "success", "{small}");
    assert_eq!(wallet_calls(&app, "refund").await, 1);

    // Above it: reserved, answered in progress, and the wallet is not asked.
    let r1 = reference("r");
    let held = pos.refund(&no, "12.00", Some(&r1)).await;
    assert_eq!(held["ret_code"], "000100", "{held}");
    assert_eq!(held["result"]["status"], "pending", "{held}");
    let held_no = held["result"]["refundTransactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        wallet_calls(&app, "refund").await,
        1,
        "the wallet was not asked"
    );
    // Its retry answers the same, and the transaction shows it pending.
    let again = pos.refund(&no, "12.00", Some(&r1)).await;
    assert_eq!(again["result"], held["result"], "{again}");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "5.00", "{q}");
    let listed = q["result"]["refunds"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r["refundTransactionNo"] == held_no.as_str() && r["status"] == "pending"),
        "{q}"
    );

    // Concurrent refunds cannot reserve more than is left (30 - 5 - 12 = 13): one of four
    // asking 10.00 is admitted (and held), the others are refused.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pos = app.pos();
            let no = no.clone();
            tokio::spawn(async move { pos.refund(&no, "10.00", Some(&reference("c"))).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let admitted: Vec<&Value> = answers
        .iter()
        .filter(|a| a["ret_code"] == "000100")
        .collect();
    assert_eq!(admitted.len(), 1, "{answers:?}");
    assert_eq!(admitted[0]["result"]["status"], "pending");
    let second_no = admitted[0]["result"]["refundTransactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    let over = pos.refund(&no, "3.01", Some(&reference("o"))).await;
    assert_ne!(over["ret_code"], "000100", "only 3.00 is left: {over}");

    // Well past the janitor's age: held refunds are not waiting for the wallet, so neither
    // the janitor nor the unresolved list nor the backlog ever has them.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(unresolved(&app).await.is_empty());
    assert_eq!(metric(&app, "tillgate_unresolved_operations", &[]).await, 0);
    assert_eq!(wallet_calls(&app, "query").await, 0);
    assert_eq!(wallet_calls(&app, "refund").await, 1);
    // The books know only the refund the wallet was asked for.
    assert_eq!(
        refunds_booked(&app).await,
        json!({"count": 1, "sum": "5.00", "sumMinor": 500})
    );

    // The console: the approvals list both, asked by the API; the transaction shows them held.
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let first = approval_of(&app, &operator, "12.00").await;
    let second = approval_of(&app, &operator, "10.00").await;
    let (_, html) = page(&app, &operator, &format!("/console/transactions/{no}")).await;
    assert!(html.contains("held: not sent to the wallet"), "{html}");
    // Another merchant's admin sees neither and cannot decide them; the merchant's staff
    // cannot either.
    let stranger = sign_in(&app, "stranger", "stranger password 1")
        .await
        .unwrap();
    assert!(pending(&app, &stranger).await.is_empty());
    assert_eq!(decide(&app, &stranger, first, "approve", "").await.0, 404);
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    assert_eq!(
        decide(&app, &cashier, first, "approve", "").await.1,
        "/console/approvals?error=not-yours"
    );
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "5.00");

    // Approved: sent to the wallet through the normal path, settled, notified.
    assert_eq!(
        decide(&app, &operator, first, "approve", "").await.1,
        "/console/approvals?done=approved"
    );
    assert_eq!(wallet_calls(&app, "refund").await, 2);
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "17.00", "{q}");
    let note = wait_for_refund_note(&receiver, &held_no).await;
    assert_eq!(
        note.field("refundStatus"),
        Some("success"),
        "{:?}",
        note.form
    );
    let again = pos.refund(&no, "12.00", Some(&r1)).await;
    assert_eq!(again["result"]["status"], "success", "{again}");
    // A decision is final.
    assert_eq!(
        decide(&app, &operator, first, "reject", "too late").await.1,
        "/console/approvals?error=decided"
    );

    // Rejected by the merchant's admin: failed, its reservation released, the failure
    // notified; the wallet never heard of it.
    let boss = sign_in(&app, "boss", "boss password 123").await.unwrap();
    assert_eq!(
        decide(&app, &boss, second, "reject", "no receipt").await.1,
        "/console/approvals?done=rejected"
    );
    assert_eq!(wallet_calls(&app, "refund").await, 2);
    let note = wait_for_refund_note(&receiver, &second_no).await;
    assert_eq!(
        note.field("refundStatus"),
        Some("failed"),
        "{:?}",
        note.form
    );
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "17.00", "{q}");
    assert!(
        q["result"]["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["refundTransactionNo"] == second_no.as_str() && r["status"] == "failed"),
        "{q}"
    );
    let (_, html) = page(&app, &operator, &format!("/console/transactions/{no}")).await;
    assert!(
        html.contains("refund.rejected") && html.contains("no receipt"),
        "{html}"
    );
    assert!(!html.contains("held: not sent to the wallet"), "{html}");

    // Policy off: the API refunds at once again, and all that is left (13.00, the rejected
    // refund's reservation released) is refundable.
    merchant_update(&app, "200043", &["--api-refunds-need-approval", "false"]);
    let rest = pos.refund(&no, "13.00", Some(&reference("r"))).await;
    assert_eq!(rest["result"]["status"], "success", "{rest}");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "30.00", "{q}");
    assert_eq!(q["result"]["transactionStatus"], "success", "{q}");
    assert_eq!(wallet_calls(&app, "refund").await, 3);
    assert!(pending(&app, &operator).await.is_empty());
    // The rejected refund is in no book: three refunds, 30.00.
    assert_eq!(
        refunds_booked(&app).await,
        json!({"count": 3, "sum": "30.00", "sumMinor": 3000})
    );
}

/// Today's refunds of merchant 200043 (in UTC, its time zone) in the settlement.
async fn refunds_booked(app: &TestApp) -> Value {
    let date = chrono::Utc::now().date_naive();
    let (status, v) = app
        .raw(
            reqwest::Method::GET,
            &format!("/admin/v1/settlement?date={date}&merchantNo=200043"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["settlements"][0]["currencies"][0]["refunds"].clone()
}

/// The unified dialect answers and queries a held refund as refunding (state 1), and notifies
/// state 2 once approved; YabandPay answers "refund processing", and its query says the same
/// until the refund is rejected (then "failed").
async fn unified_and_yabandpay_refunds_held_answer_in_progress(backend: Backend) {
    let Some(app) = spawn_app_with(backend, QUICK).await else {
        return;
    };
    for merchant in ["200043", "M1621873433953"] {
        merchant_update(
            &app,
            merchant,
            &[
                "--refund-authority",
                "approval",
                "--api-refunds-need-approval",
                "true",
            ],
        );
    }
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let receiver = Receiver::start().await;

    // Unified: a paid order, a refund held.
    let shop = crate::unified::shop(&app);
    let order_no = reference("u-held");
    let paid = shop.order(&order_no, 1000, None).await;
    assert_eq!(paid["data"]["orderState"], 2, "{paid}");
    let mr = reference("mr");
    let ask = json!({ "mchOrderNo": order_no, "mchRefundNo": mr, "refundAmount": 400, "currency": "CNY", "refundReason": "cold", "notifyUrl": receiver.url });
    let held = shop.call("/api/refund/refundOrder", ask.clone()).await;
    assert_eq!(held["code"], 0, "{held}");
    assert_eq!(held["data"]["state"], 1, "{held}");
    let again = shop.call("/api/refund/refundOrder", ask).await;
    assert_eq!(again["data"], held["data"], "{again}");
    let q = shop
        .call("/api/refund/query", json!({ "mchRefundNo": mr }))
        .await;
    assert_eq!(q["data"]["state"], 1, "{q}");
    assert_eq!(wallet_calls(&app, "refund").await, 0);
    let id = approval_of(&app, &operator, "4.00").await;
    assert_eq!(
        decide(&app, &operator, id, "approve", "").await.1,
        "/console/approvals?done=approved"
    );
    let q = shop
        .call("/api/refund/query", json!({ "mchRefundNo": mr }))
        .await;
    assert_eq!(q["data"]["state"], 2, "{q}");
    let got = receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].field("mchRefundNo"), Some(mr.as_str()));
    assert_eq!(got[0].field("state"), Some("2"));

    // YabandPay: a barcode payment on a terminal, a refund held, then rejected.
    let tid = crate::yabandpay::TID;
    let paid = crate::yabandpay::call(&app.base, tid, "v3.BarcodePayment", json!({"order_id": crate::yabandpay::order_id(), "auth_code": "2812", "amount": "9.00", "currency": "EUR", "description": "x"})).await;
    let trade = paid["data"]["trade_id"].as_str().unwrap().to_owned();
    let m_refund_id = reference("y");
    let ask = json!({"trade_id": trade, "refund_amount": "2.00", "refund_currency": "EUR", "refund_description": "x", "m_refund_id": m_refund_id, "notify_url": receiver.url});
    let held = crate::yabandpay::call(&app.base, tid, "v3.CreateRefund", ask.clone()).await;
    assert_eq!(held["status"], true, "{held}");
    assert_eq!(held["data"]["state"], "refund processing", "{held}");
    let again = crate::yabandpay::call(&app.base, tid, "v3.CreateRefund", ask).await;
    assert_eq!(again["data"]["state"], "refund processing", "{again}");
    assert_eq!(again["data"]["refund_id"], held["data"]["refund_id"]);
    let query = || {
        crate::yabandpay::call(
            &app.base,
            tid,
            "v3.QueryRefundOrder",
            json!({ "m_refund_id": m_refund_id }),
        )
    };
    assert_eq!(query().await["data"]["state"], "refund processing");
    assert_eq!(wallet_calls(&app, "refund").await, 1);
    let id = approval_of(&app, &operator, "2.00").await;
    assert_eq!(
        decide(&app, &operator, id, "reject", "not this one")
            .await
            .1,
        "/console/approvals?done=rejected"
    );
    let q = query().await;
    assert_eq!(q["data"]["state"], "failed", "{q}");
    assert_eq!(wallet_calls(&app, "refund").await, 1);
    let got = receiver.wait_for(2, 10).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let body = String::from_utf8_lossy(&got[1].body).into_owned();
    assert!(
        body.contains(&m_refund_id) && body.contains("failed"),
        "{body}"
    );
}

#[tokio::test]
async fn held_pockyt_refunds_on_sqlite() {
    pockyt_refunds_wait_for_a_person_and_end_as_decided(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn held_pockyt_refunds_on_postgres() {
    pockyt_refunds_wait_for_a_person_and_end_as_decided(Backend::Postgres).await
}

#[tokio::test]
async fn held_unified_and_yabandpay_refunds_on_sqlite() {
    unified_and_yabandpay_refunds_held_answer_in_progress(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn held_unified_and_yabandpay_refunds_on_postgres() {
    unified_and_yabandpay_refunds_held_answer_in_progress(Backend::Postgres).await
}

/// The setting on the merchant's page: ticked by its admin, it holds the next API refund above
/// the threshold; unticked, the API refunds at once again.
async fn the_merchant_page_sets_api_refunds_to_need_approval(backend: Backend) {
    let Some(app) = spawn_app_with(backend, QUICK).await else {
        return;
    };
    create_user(
        &app,
        "boss",
        "merchant-admin",
        "200043",
        "boss password 123",
    );
    let boss = sign_in(&app, "boss", "boss password 123").await.unwrap();
    let path = "/console/merchants/200043";
    let (_, html) = page(&app, &boss, path).await;
    assert!(
        html.contains("data-test=\"api-approval\">refunded at once"),
        "{html}"
    );
    let save = |api: bool| {
        let (app, boss, html) = (&app, &boss, &html);
        async move {
            let csrf = csrf_of(html);
            let mut form = vec![
                ("csrf", csrf.as_str()),
                ("name", ""),
                ("zone", "UTC"),
                ("schedule", "default"),
                ("authority", "approval"),
                ("threshold", "500"),
            ];
            if api {
                form.push(("api_approval", "on"));
            }
            let resp = client()
                .post(format!("{}{path}", app.base))
                .header("cookie", boss.as_str())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 303);
        }
    };
    save(true).await;
    let (_, html) = page(&app, &boss, path).await;
    assert!(
        html.contains("data-test=\"api-approval\">need approval too"),
        "{html}"
    );
    let pos = app.pos();
    let no = pos.paid(&reference("page"), "20.00").await;
    let held = pos.refund(&no, "6.00", Some(&reference("r"))).await;
    assert_eq!(held["result"]["status"], "pending", "{held}");
    assert_eq!(wallet_calls(&app, "refund").await, 0);
    save(false).await;
    let (_, html) = page(&app, &boss, path).await;
    assert!(
        html.contains("data-test=\"api-approval\">refunded at once"),
        "{html}"
    );
    let (_, audit) = page(&app, &boss, "/console/users/boss").await;
    assert!(audit.contains("API refunds too"), "{audit}");
    let now = pos.refund(&no, "6.00", Some(&reference("r"))).await;
    assert_eq!(now["result"]["status"], "success", "{now}");
}

#[tokio::test]
async fn held_refund_setting_on_the_merchant_page_on_sqlite() {
    the_merchant_page_sets_api_refunds_to_need_approval(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn held_refund_setting_on_the_merchant_page_on_postgres() {
    the_merchant_page_sets_api_refunds_to_need_approval(Backend::Postgres).await
}
