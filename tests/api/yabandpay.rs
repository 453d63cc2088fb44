//! The YabandPay dialect and the terminal hub end to end, with a real WebSocket terminal:
//! seed 003's same-day reversal shown live on the terminal.

use crate::helpers::*;
use crate::terminal_client::TestTerminal;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

pub(crate) const TID: &str = "T125119061";
pub(crate) const OTHER_TID: &str = "016683";
pub(crate) const SECRET: &str = "62184c09df1aeb63239e07079875be81";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// YabandPay's sign, written here independently: user, method, time and the data fields,
/// sorted, `k=v` joined with `&`, HMAC-SHA256 with the secret, lower-case hex.
pub(crate) fn yaband_sign(
    user: &str,
    method: &str,
    time: i64,
    data: &Value,
    secret: &str,
) -> String {
    let mut pairs: Vec<(String, String)> = data
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    pairs.push(("user".into(), user.into()));
    pairs.push(("method".into(), method.into()));
    pairs.push(("time".into(), time.to_string()));
    pairs.sort();
    let s = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(s.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) async fn call(base: &str, user: &str, method: &str, data: Value) -> Value {
    let time = chrono::Utc::now().timestamp();
    let body = json!({
        "user": user,
        "method": method,
        "time": time,
        "sign": yaband_sign(user, method, time, &data, SECRET),
        "data": data,
    });
    let resp = reqwest::Client::new()
        .post(format!("{base}/Payments"))
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

pub(crate) fn order_id() -> String {
    // Digits, under 20 characters, unique per run.
    let n = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64 % 10_000_000_000_000_000;
    format!("{n}")
}

async fn events(app_base: &str, transaction_no: &str) -> Vec<String> {
    let v: Value = reqwest::get(format!("{app_base}/admin/v1/transactions/{transaction_no}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect()
}

/// A sale on the terminal, completed by it; returns the trade_id.
pub(crate) async fn sale_on_terminal(
    base: &str,
    terminal: &mut TestTerminal,
    amount: &str,
) -> String {
    let pos = tokio::spawn({
        let base = base.to_owned();
        let amount = amount.to_owned();
        async move {
            call(&base, TID, "v3.POS", json!({"tid": TID, "order_id": order_id(), "amount": amount, "currency": "EUR", "request_id": reference("pos"), "operation": "1"})).await
        }
    });
    let command = terminal.command().await;
    assert_eq!(command["kind"], "sale");
    terminal.complete(&command, "approved").await;
    let answer = pos.await.unwrap();
    assert_eq!(answer["status"], true, "{answer}");
    assert_eq!(answer["data"]["state"], "paid", "{answer}");
    answer["data"]["trade_id"].as_str().unwrap().to_owned()
}

async fn seed_003_reversal_is_shown_live_on_the_terminal(app: TestApp) {
    let mut terminal = TestTerminal::connect(&app.base, TID, SECRET).await;
    let trade = sale_on_terminal(&app.base, &mut terminal, "10.00").await;

    let reversal = tokio::spawn({
        let base = app.base.clone();
        let trade = trade.clone();
        async move {
            call(
                &base,
                TID,
                "v3.POSReversal",
                json!({"tid": TID, "trade_id": trade, "request_id": reference("rev")}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    assert_eq!(command["kind"], "reversal");
    assert_eq!(command["transactionNo"], trade.as_str());
    assert_eq!(command["amountMinor"], 1000);
    terminal.complete(&command, "approved").await;
    let answer = reversal.await.unwrap();
    assert_eq!(answer["status"], true, "{answer}");
    assert_eq!(answer["code"], "200");
    assert_eq!(answer["data"]["state"], "cancelled", "{answer}");
    assert_eq!(answer["data"]["trade_id"], trade.as_str());

    // The progress the terminal showed is in the timeline, in order.
    let timeline = events(&app.base, &trade).await;
    let progress: Vec<&String> = timeline
        .iter()
        .filter(|e| e.starts_with("terminal.progress reversal"))
        .collect();
    assert_eq!(
        progress,
        [
            "terminal.progress reversal acknowledged",
            "terminal.progress reversal received",
            "terminal.progress reversal shown to customer",
            "terminal.progress reversal processing",
        ],
        "{timeline:?}"
    );
    let q = call(&app.base, TID, "v3.QueryOrder", json!({"trade_id": trade})).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled", "{q}");
}

async fn the_silent_cancel_needs_no_terminal(app: TestApp) {
    let paid = call(&app.base, TID, "v3.BarcodePayment", json!({"pay_method": "offline", "order_id": order_id(), "auth_code": "281234567890123456", "amount": "4.20", "currency": "EUR", "description": "tea"})).await;
    assert_eq!(paid["data"]["state"], "paid", "{paid}");
    let trade = paid["data"]["trade_id"].as_str().unwrap().to_owned();
    let c = call(
        &app.base,
        TID,
        "v3.CancelPayment",
        json!({"trade_id": trade}),
    )
    .await;
    assert_eq!(c["status"], true, "{c}");
    assert_eq!(c["data"]["state"], "cancelled");
    let q = call(&app.base, TID, "v3.QueryOrder", json!({"trade_id": trade})).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled");
    assert!(
        !events(&app.base, &trade)
            .await
            .iter()
            .any(|e| e.starts_with("terminal.")),
        "nothing went to a terminal"
    );
}

async fn seed_003_codes_offline_terminal_and_another_terminals_trade(app: TestApp) {
    let base = &app.base;
    let paid = call(base, TID, "v3.BarcodePayment", json!({"order_id": order_id(), "auth_code": "2812", "amount": "8.00", "currency": "EUR", "description": "x"})).await;
    let trade = paid["data"]["trade_id"].as_str().unwrap().to_owned();
    // No terminal connected: refused at once, nothing changed.
    let offline = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": trade, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(offline["status"], false);
    assert_eq!(offline["code"], "-5001", "{offline}");
    let missing = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": trade}),
    )
    .await;
    assert_eq!(missing["code"], "-3001", "{missing}");
    let unknown = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": "1", "request_id": reference("r")}),
    )
    .await;
    assert_eq!(unknown["code"], "-4114", "{unknown}");
    let rid = reference("dup");
    call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": "1", "request_id": rid}),
    )
    .await;
    let dup = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": "1", "request_id": rid}),
    )
    .await;
    assert_eq!(dup["code"], "-3002", "{dup}");

    let mut terminal = TestTerminal::connect(base, TID, SECRET).await;
    // Another terminal's trade is not this terminal's to reverse.
    let other = call(base, OTHER_TID, "v3.BarcodePayment", json!({"order_id": order_id(), "auth_code": "2812", "amount": "3.00", "currency": "EUR", "description": "x"})).await;
    let other_trade = other["data"]["trade_id"].as_str().unwrap().to_owned();
    let foreign = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": other_trade, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(foreign["code"], "-4114", "{foreign}");

    // After a refund: cleared (-4112). Another day: outside the window (-4111).
    let own = sale_on_terminal(base, &mut terminal, "6.00").await;
    let refund = call(base, TID, "v3.CreateRefund", json!({"trade_id": own, "refund_amount": "1.00", "refund_currency": "EUR", "refund_description": "x"})).await;
    assert_eq!(refund["status"], true, "{refund}");
    let cleared = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": own, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(cleared["code"], "-4112", "{cleared}");
    let old = sale_on_terminal(base, &mut terminal, "7.00").await;
    let (status, _) = app
        .raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/payments/{old}/age"),
            Some("application/json"),
            br#"{"hours":49}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let late = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": old, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(late["code"], "-4111", "{late}");
    // Reversed twice: already cancelled (-4116).
    let twice = sale_on_terminal(base, &mut terminal, "9.00").await;
    let first = tokio::spawn({
        let base = base.clone();
        let twice = twice.clone();
        async move {
            call(
                &base,
                TID,
                "v3.POSReversal",
                json!({"tid": TID, "trade_id": twice, "request_id": reference("r")}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    terminal.complete(&command, "approved").await;
    assert_eq!(first.await.unwrap()["data"]["state"], "cancelled");
    let again = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": twice, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(again["code"], "-4116", "{again}");
    // An unpaid (QR) trade cannot be reversed (-4115).
    let qr = call(base, TID, "v3.QRcodePayment", json!({"pay_method": "offline", "sub_pay_method": "QRcode", "order_id": order_id(), "amount": "2.00", "currency": "EUR", "description": "x"})).await;
    let qr_trade = qr["data"]["trade_id"].as_str().unwrap().to_owned();
    let unpaid = call(
        base,
        TID,
        "v3.POSReversal",
        json!({"tid": TID, "trade_id": qr_trade, "request_id": reference("r")}),
    )
    .await;
    assert_eq!(unpaid["code"], "-4115", "{unpaid}");
    // A bad signature and a stale time change nothing either.
    let time = chrono::Utc::now().timestamp() - 3600;
    let data = json!({"trade_id": own});
    let stale = json!({"user": TID, "method": "v3.QueryOrder", "time": time, "sign": yaband_sign(TID, "v3.QueryOrder", time, &data, SECRET), "data": data});
    let (_, stale) = app
        .raw(
            reqwest::Method::POST,
            "/Payments",
            Some("application/json"),
            stale.to_string().into_bytes(),
        )
        .await;
    assert_eq!(stale["code"], "-3004", "{stale}");
    let q = call(base, TID, "v3.QueryOrder", json!({"trade_id": own})).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "paid", "{q}");
}

async fn a_terminal_dropping_mid_reversal_finishes_it_after_reconnecting(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &["--terminal-wait-ms", "1500"]).await else {
        return;
    };
    let mut terminal = TestTerminal::connect(&app.base, TID, SECRET).await;
    let trade = sale_on_terminal(&app.base, &mut terminal, "15.00").await;
    let reversal = tokio::spawn({
        let base = app.base.clone();
        let trade = trade.clone();
        async move {
            call(
                &base,
                TID,
                "v3.POSReversal",
                json!({"tid": TID, "trade_id": trade, "request_id": reference("rev")}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    terminal
        .send(json!({"type": "ack", "id": command["id"]}))
        .await;
    terminal.drop_connection().await;
    let answer = reversal.await.unwrap();
    assert_eq!(
        answer["data"]["state"], "processing",
        "in progress, not lost: {answer}"
    );
    let q = call(&app.base, TID, "v3.QueryOrder", json!({"trade_id": trade})).await;
    assert_eq!(
        q["data"]["transaction_info"]["state"], "paid",
        "nothing happened yet: {q}"
    );

    // The terminal comes back, gets the open command again, and finishes it.
    let mut terminal = TestTerminal::connect(&app.base, TID, SECRET).await;
    let again = terminal.command().await;
    assert_eq!(again["id"], command["id"]);
    terminal.complete(&again, "approved").await;
    let q = call(&app.base, TID, "v3.QueryOrder", json!({"trade_id": trade})).await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled", "{q}");
}

#[tokio::test]
async fn a_terminal_dropping_mid_reversal_finishes_it_after_reconnecting_on_sqlite() {
    a_terminal_dropping_mid_reversal_finishes_it_after_reconnecting(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_terminal_dropping_mid_reversal_finishes_it_after_reconnecting_on_postgres() {
    a_terminal_dropping_mid_reversal_finishes_it_after_reconnecting(Backend::Postgres).await
}

#[tokio::test]
async fn replayed_and_stale_terminal_handshakes_are_refused() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let (_, first) = TestTerminal::connect_raw(&app.base, TID, SECRET, now, "once").await;
    assert_eq!(first["type"], "welcome");
    let (_, replay) = TestTerminal::connect_raw(&app.base, TID, SECRET, now, "once").await;
    assert_eq!(replay["type"], "error", "{replay}");
    let (_, stale) = TestTerminal::connect_raw(&app.base, TID, SECRET, now - 600, "stale").await;
    assert_eq!(stale["type"], "error", "{stale}");
    let (_, wrong) =
        TestTerminal::connect_raw(&app.base, TID, "not-the-secret", now, "wrong").await;
    assert_eq!(wrong["type"], "error", "{wrong}");
}

/// Two nodes on one PostgreSQL: the terminal holds a socket to node 0, the merchant's
/// request reaches node 1, and the command crosses through the database.
#[tokio::test]
async fn a_command_reaches_a_terminal_connected_to_another_node() {
    let Some((apps, _db)) = crate::postgres_nodes::nodes(2).await else {
        return;
    };
    let mut terminal = TestTerminal::connect(&apps[0].base, TID, SECRET).await;
    let trade = sale_on_terminal(&apps[1].base, &mut terminal, "21.00").await;
    let reversal = tokio::spawn({
        let base = apps[1].base.clone();
        let trade = trade.clone();
        async move {
            call(
                &base,
                TID,
                "v3.POSReversal",
                json!({"tid": TID, "trade_id": trade, "request_id": reference("rev")}),
            )
            .await
        }
    });
    let command = terminal.command().await;
    assert_eq!(command["kind"], "reversal");
    terminal.complete(&command, "approved").await;
    assert_eq!(reversal.await.unwrap()["data"]["state"], "cancelled");
    let q = call(
        &apps[0].base,
        TID,
        "v3.QueryOrder",
        json!({"trade_id": trade}),
    )
    .await;
    assert_eq!(q["data"]["transaction_info"]["state"], "cancelled");
}

/// A refund without `m_refund_id`, captured and sent again within its signed time's window,
/// is answered with the first answer and refunds once; a fresh request of the same refund is
/// another refund.
async fn a_captured_refund_without_m_refund_id_refunds_once(app: TestApp) {
    let base = &app.base;
    let paid = call(base, TID, "v3.BarcodePayment", json!({"order_id": order_id(), "auth_code": "2812", "amount": "9.00", "currency": "EUR", "description": "x"})).await;
    let trade = paid["data"]["trade_id"].as_str().unwrap().to_owned();
    let time = chrono::Utc::now().timestamp();
    let data = json!({"trade_id": trade, "refund_amount": "1.00", "refund_currency": "EUR", "refund_description": "x"});
    let body = json!({
        "user": TID,
        "method": "v3.CreateRefund",
        "time": time,
        "sign": yaband_sign(TID, "v3.CreateRefund", time, &data, SECRET),
        "data": data,
    })
    .to_string();
    let send = || async {
        reqwest::Client::new()
            .post(format!("{base}/Payments"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    };
    let first = send().await;
    let first_json: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first_json["status"], true, "{first_json}");
    for _ in 0..3 {
        assert_eq!(send().await, first, "a copy gets the first answer");
    }
    let q = call(base, TID, "v3.QueryOrder", json!({"trade_id": trade})).await;
    assert_eq!(
        q["data"]["transaction_info"]["refund_amount"], "1.00",
        "{q}"
    );
    // The same refund asked afresh (a new time, so a new sign) is a second refund.
    let again = call(base, TID, "v3.CreateRefund", json!({"trade_id": trade, "refund_amount": "1.00", "refund_currency": "EUR", "refund_description": "x"})).await;
    assert_eq!(again["status"], true, "{again}");
}

on_both_backends!(
    a_captured_refund_without_m_refund_id_refunds_once,
    seed_003_reversal_is_shown_live_on_the_terminal,
    the_silent_cancel_needs_no_terminal,
    seed_003_codes_offline_terminal_and_another_terminals_trade,
);
