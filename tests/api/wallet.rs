//! The wallet over the network: the gateway against a real `tillgate wallet-sim` process, with
//! faults, late and duplicate callbacks, and a crash of the wallet — money never left in limbo.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::Child;
use std::time::Duration;

pub(crate) const KEY: &str = "74696c6c676174652d77616c6c65742d746573742d6b6579";
/// The key of a second wallet, serving another merchant.
const OTHER_KEY: &str = "6f746865722d77616c6c65742d6f662d6d65726368616e742d62";

pub(crate) struct Wallet {
    child: Child,
    pub(crate) base: String,
    port: u16,
    state: String,
    callback_url: String,
    key: &'static str,
}

impl Drop for Wallet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Wallet {
    pub(crate) fn start(dir: &TempDir, port: u16, callback_url: &str, faults: &[&str]) -> Wallet {
        Wallet::start_with_key(dir, port, callback_url, KEY, faults)
    }

    /// A wallet signing with `key`, keeping its state in a file of its own.
    fn start_with_key(
        dir: &TempDir,
        port: u16,
        callback_url: &str,
        key: &'static str,
        faults: &[&str],
    ) -> Wallet {
        let state = dir
            .0
            .join(format!("wallet-{port}.json"))
            .display()
            .to_string();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "wallet-sim",
            "--listen",
            &listen,
            "--state",
            &state,
            "--key",
            key,
            "--callback-url",
            callback_url,
        ];
        args.extend_from_slice(faults);
        let (child, base) = start_process(&args, dir);
        Wallet {
            child,
            base,
            port,
            state: state.clone(),
            callback_url: callback_url.to_owned(),
            key,
        }
    }

    /// Kills the wallet outright and starts it again on the same port and state file.
    fn crash_and_restart(&mut self, dir: &TempDir) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let listen = format!("127.0.0.1:{}", self.port);
        let args = [
            "wallet-sim",
            "--listen",
            &listen,
            "--state",
            &self.state,
            "--key",
            self.key,
            "--callback-url",
            &self.callback_url,
        ];
        let (child, base) = start_process(&args, dir);
        self.child = child;
        self.base = base;
    }

    pub(crate) async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        resp.json().await.unwrap_or(Value::Null)
    }

    /// Waits until the wallet holds at least `n` callbacks and has finished every one of them
    /// (the gateway acknowledged or refused it), and returns them.
    async fn callbacks_finished(&self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let all = self
                .control(reqwest::Method::GET, "/control/callbacks", None)
                .await;
            let all = all.as_array().cloned().unwrap_or_default();
            if all.len() >= n && all.iter().all(|c| c["status"] != "owed") {
                return all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the wallet did not finish its callbacks: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn faults(&self, faults: Value) {
        self.control(reqwest::Method::POST, "/control/faults", Some(faults))
            .await;
    }

    /// What the wallet says it did to a transaction.
    async fn order(&self, transaction_no: &str) -> Value {
        self.control(
            reqwest::Method::GET,
            &format!("/control/orders/{transaction_no}"),
            None,
        )
        .await
    }
}

/// A gateway wired to a wallet simulator, each knowing the other's address.
async fn gateway_and_wallet(faults: &[&str]) -> (TestApp, Wallet) {
    let dir = std::sync::Arc::new(TempDir::new());
    let gateway_port = free_port();
    let callback_url = format!("http://127.0.0.1:{gateway_port}/wallet/v1/callbacks");
    let wallet = Wallet::start(&dir, free_port(), &callback_url, faults);
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let listen = format!("127.0.0.1:{gateway_port}");
    let app = spawn_on(
        dir,
        &url,
        &[
            "--listen",
            &listen,
            "--channel",
            &wallet.base,
            "--channel-key",
            KEY,
            "--channel-timeout-ms",
            "500",
            "--janitor-interval-ms",
            "200",
        ],
    )
    .await;
    (app, wallet)
}

pub(crate) async fn added(pos: &Pos, amount: &str) -> String {
    let a = pos.add(&reference("w"), amount).await;
    assert_eq!(a["ret_code"], "000100", "{a}");
    a["result"]["transactionNo"].as_str().unwrap().to_owned()
}

async fn wait_status(pos: &Pos, no: &str, status: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let q = pos.query(no).await;
        if q["result"]["transactionStatus"] == status || std::time::Instant::now() > deadline {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pay_refund_cancel_and_declines_go_through_the_http_wallet() {
    let (app, wallet) = gateway_and_wallet(&[]).await;
    let pos = app.pos();
    let no = added(&pos, "10.00").await;
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "success");
    assert_eq!(
        pos.refund(&no, "2.00", None).await["result"]["status"],
        "success"
    );
    assert_eq!(
        pos.refund(&no, "0.61", None).await["result"]["status"],
        "failed"
    );
    let declined = added(&pos, "10.51").await;
    assert_eq!(
        pos.pay(&declined).await["result"]["transactionStatus"],
        "failed"
    );
    let reversed = added(&pos, "7.00").await;
    pos.pay(&reversed).await;
    assert_eq!(pos.cancel(&reversed).await["result"]["status"], "success");
    // The wallet's truth agrees with the gateway's.
    let truth = wallet.order(&no).await;
    assert!(truth.to_string().contains("approved"), "{truth}");
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "2.00");
}

#[tokio::test]
async fn a_timed_out_payment_stays_pending_until_the_janitor_asks_the_wallet() {
    let (app, wallet) =
        gateway_and_wallet(&["--timeout-rate", "1", "--timeout-hold-ms", "2000"]).await;
    let pos = app.pos();
    let no = added(&pos, "12.00").await;
    let paid = pos.pay(&no).await;
    assert_eq!(
        paid["result"]["transactionStatus"], "pending",
        "an unknown outcome is never closed: {paid}"
    );
    // The operator sees it, with its history.
    let (_, unresolved) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/unresolved",
            None,
            Vec::new(),
        )
        .await;
    assert!(
        unresolved["unresolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["transactionNo"] == no.as_str()),
        "{unresolved}"
    );
    // The wallet did take the money; once it answers again the janitor learns it.
    wallet.faults(json!({ "timeoutRate": 0.0 })).await;
    let q = wait_status(&pos, &no, "success", 20).await;
    assert_eq!(q["result"]["transactionStatus"], "success", "{q}");
    let (_, unresolved) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/unresolved",
            None,
            Vec::new(),
        )
        .await;
    assert!(!unresolved["unresolved"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["transactionNo"] == no.as_str()));
}

#[tokio::test]
async fn duplicate_and_late_callbacks_settle_once() {
    let (app, wallet) = gateway_and_wallet(&[
        "--duplicate-callback-rate",
        "1",
        "--late-callback-ms",
        "300",
    ])
    .await;
    let pos = app.pos();
    // 10.52: the wallet answers pending, then calls back (twice).
    let no = added(&pos, "10.52").await;
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "pending");
    let q = wait_status(&pos, &no, "success", 15).await;
    assert_eq!(q["result"]["transactionStatus"], "success", "{q}");
    // Both copies reached the gateway and were answered before the timeline is read.
    let callbacks = wallet.callbacks_finished(2).await;
    assert!(
        callbacks.iter().all(|c| c["status"] == "delivered"),
        "{callbacks:?}"
    );
    let (_, timeline) = app
        .raw(
            reqwest::Method::GET,
            &format!("/admin/v1/transactions/{no}"),
            None,
            Vec::new(),
        )
        .await;
    let paid_events = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "payment.paid")
        .count();
    assert_eq!(paid_events, 1, "{timeline}");
    // A refund afterwards sees the full amount, exactly once.
    assert_eq!(
        pos.refund(&no, "10.52", None).await["result"]["status"],
        "success"
    );
    assert_eq!(pos.refund(&no, "0.01", None).await["ret_code"], "000040");
}

#[tokio::test]
async fn callbacks_for_unknown_orders_or_other_amounts_are_refused() {
    let (app, wallet) = gateway_and_wallet(&["--late-callback-ms", "600000"]).await;
    let pos = app.pos();
    let no = added(&pos, "20.52").await;
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "pending");
    let wrong_amount = json!({"kind": "payment", "transactionNo": no, "amountMinor": 1, "currency": "USD", "outcome": "approved"});
    wallet
        .control(
            reqwest::Method::POST,
            "/control/callback",
            Some(wrong_amount),
        )
        .await;
    let unknown = json!({"kind": "payment", "transactionNo": "999999999999999999", "amountMinor": 2052, "currency": "USD", "outcome": "approved"});
    wallet
        .control(reqwest::Method::POST, "/control/callback", Some(unknown))
        .await;
    let forged = json!({"kind": "payment", "transactionNo": no, "amountMinor": 2052, "currency": "USD", "outcome": "approved", "corruptSignature": true});
    wallet
        .control(reqwest::Method::POST, "/control/callback", Some(forged))
        .await;
    // The gateway answered all three before the payment is looked at: each was refused.
    let callbacks = wallet.callbacks_finished(3).await;
    assert!(
        callbacks.iter().all(|c| c["status"] == "refused"),
        "{callbacks:?}"
    );
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "pending",
        "nothing was applied"
    );
    // The right callback is applied.
    let right = json!({"kind": "payment", "transactionNo": no, "amountMinor": 2052, "currency": "USD", "outcome": "approved"});
    wallet
        .control(reqwest::Method::POST, "/control/callback", Some(right))
        .await;
    assert_eq!(
        wait_status(&pos, &no, "success", 10).await["result"]["transactionStatus"],
        "success"
    );
}

#[tokio::test]
async fn a_wallet_crash_in_the_middle_of_a_refund_is_resolved_after_it_restarts() {
    let (app, mut wallet) = gateway_and_wallet(&[]).await;
    let pos = app.pos();
    let no = added(&pos, "30.00").await;
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "success");
    wallet
        .faults(json!({ "timeoutRate": 1.0, "timeoutHoldMs": 60000 }))
        .await;
    let refund = pos.refund(&no, "5.00", Some("crash-refund")).await;
    assert_eq!(refund["result"]["status"], "pending", "{refund}");
    // Nothing can be refunded past the reservation while the outcome is unknown.
    assert_eq!(pos.refund(&no, "25.01", None).await["ret_code"], "000040");
    let dir = app.dir.clone();
    wallet.crash_and_restart(&dir);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = pos.query(&no).await;
        if q["result"]["refundAmount"] == "5.00" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the janitor never resolved the refund: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = pos.refund(&no, "5.00", Some("crash-refund")).await;
    assert_eq!(
        again["result"]["status"], "success",
        "a retry replays the resolved refund: {again}"
    );
}

#[tokio::test]
async fn a_timed_out_reversal_and_a_late_void_are_resolved_and_agree_with_the_wallet() {
    let (app, wallet) = gateway_and_wallet(&["--late-callback-ms", "300"]).await;
    let pos = app.pos();
    // A reversal whose answer is lost: in progress until the janitor asks.
    let paid = added(&pos, "40.00").await;
    assert_eq!(
        pos.pay(&paid).await["result"]["transactionStatus"],
        "success"
    );
    wallet
        .faults(json!({ "timeoutRate": 1.0, "timeoutHoldMs": 60000 }))
        .await;
    let c = pos.cancel(&paid).await;
    assert_eq!(c["result"]["status"], "pending", "{c}");
    assert_eq!(
        pos.refund(&paid, "1.00", None).await["ret_code"],
        "000040",
        "no refund while a cancel is in flight"
    );
    wallet.faults(json!({ "timeoutRate": 0.0 })).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = pos.query(&paid).await;
        if q["result"]["voidAmount"] == "40.00" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reversal was never resolved: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An unpaid transaction of 5.53: the wallet answers its void later, by callback.
    let unpaid = added(&pos, "5.53").await;
    let v = pos.cancel(&unpaid).await;
    assert_eq!(v["result"]["status"], "pending", "{v}");
    assert_eq!(
        wait_status(&pos, &unpaid, "closed", 15).await["result"]["transactionStatus"],
        "closed"
    );
    assert!(wallet.order(&paid).await.to_string().contains("approved"));
}

#[tokio::test]
async fn a_merchant_with_a_wallet_of_its_own_pays_through_it_while_the_others_use_the_sandbox() {
    let dir = std::sync::Arc::new(TempDir::new());
    let gateway_port = free_port();
    let callback_url = format!("http://127.0.0.1:{gateway_port}/wallet/v1/callbacks");
    let wallet = Wallet::start(&dir, free_port(), &callback_url, &[]);
    let config = dir.0.join("tillgate.toml");
    std::fs::write(
        &config,
        format!(
            "[merchant_channels.\"700009\"]\nwallet = \"{}\"\nkey = \"{KEY}\"\ntimeout_ms = 500\n",
            wallet.base
        ),
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let listen = format!("127.0.0.1:{gateway_port}");
    let config_path = config.display().to_string();
    let app = spawn_on(
        dir.clone(),
        &url,
        &["--listen", &listen, "--config", &config_path],
    )
    .await;
    let out = std::process::Command::new(binary())
        .args([
            "merchant",
            "create",
            "--database-url",
            &url,
            "--merchant-no",
            "700009",
            "--store-no",
            "1",
            "--token",
            "own-wallet-token-0001",
        ])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let own = app.pos_for("700009", "1", "own-wallet-token-0001");
    let theirs = added(&own, "11.00").await;
    assert_eq!(
        own.pay(&theirs).await["result"]["transactionStatus"],
        "success"
    );
    let sandboxed = added(&app.pos(), "11.00").await;
    assert_eq!(
        app.pos().pay(&sandboxed).await["result"]["transactionStatus"],
        "success"
    );
    assert!(
        wallet.order(&theirs).await.to_string().contains("approved"),
        "the merchant's wallet moved its money"
    );
    assert!(
        !wallet
            .order(&sandboxed)
            .await
            .to_string()
            .contains("approved"),
        "the sandbox merchant's did not go there"
    );
}

/// Waits until the wallet's callback about `transaction_no` was answered by the gateway;
/// returns the gateway's HTTP status.
async fn callback_answer(wallet: &Wallet, transaction_no: &str) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = wallet
            .control(reqwest::Method::GET, "/control/orders", None)
            .await;
        let records = all["orders"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|o| o["callbacks"].as_array().unwrap().iter())
            .chain(all["callbacksForUnknownOrders"].as_array().unwrap().iter());
        for r in records {
            if r["callback"]["transactionNo"] == transaction_no {
                if let Some(status) = r["lastHttpStatus"].as_u64() {
                    return status;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the callback never got an answer: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_wallet_key_settles_only_the_payments_of_the_merchants_its_wallet_serves() {
    let dir = std::sync::Arc::new(TempDir::new());
    let gateway_port = free_port();
    let callback_url = format!("http://127.0.0.1:{gateway_port}/wallet/v1/callbacks");
    // Both wallets leave an amount ending in 52 pending and call back only when told to.
    let late = ["--late-callback-ms", "600000"];
    let default_wallet = Wallet::start(&dir, free_port(), &callback_url, &late);
    let own_wallet = Wallet::start_with_key(&dir, free_port(), &callback_url, OTHER_KEY, &late);
    let config = dir.0.join("tillgate.toml");
    std::fs::write(
        &config,
        format!(
            "[channel]\nwallet = \"{}\"\nkey = \"{KEY}\"\ntimeout_ms = 500\n\n\
             [merchant_channels.\"700009\"]\nwallet = \"{}\"\nkey = \"{OTHER_KEY}\"\n\
             timeout_ms = 500\n",
            default_wallet.base, own_wallet.base
        ),
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let listen = format!("127.0.0.1:{gateway_port}");
    let config_path = config.display().to_string();
    let app = spawn_on(
        dir.clone(),
        &url,
        &["--listen", &listen, "--config", &config_path],
    )
    .await;
    let out = std::process::Command::new(binary())
        .args(["merchant", "create", "--database-url", &url])
        .args(["--merchant-no", "700009", "--store-no", "1"])
        .args(["--token", "own-wallet-token-0001"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = app.pos();
    let b = app.pos_for("700009", "1", "own-wallet-token-0001");
    let a_no = added(&a, "20.52").await;
    assert_eq!(a.pay(&a_no).await["result"]["transactionStatus"], "pending");
    let b_no = added(&b, "30.52").await;
    assert_eq!(b.pay(&b_no).await["result"]["transactionStatus"], "pending");

    // Merchant B's wallet signs, with its own valid key, that A's payment was approved; the
    // default wallet does the same for B's. Neither is that merchant's wallet.
    let approve = |no: &str, minor: i64| {
        json!({"kind": "payment", "transactionNo": no, "amountMinor": minor,
               "currency": "USD", "outcome": "approved"})
    };
    own_wallet
        .control(
            reqwest::Method::POST,
            "/control/callback",
            Some(approve(&a_no, 2052)),
        )
        .await;
    default_wallet
        .control(
            reqwest::Method::POST,
            "/control/callback",
            Some(approve(&b_no, 3052)),
        )
        .await;
    assert_eq!(
        callback_answer(&own_wallet, &a_no).await,
        404,
        "answered as an unknown transaction"
    );
    assert_eq!(callback_answer(&default_wallet, &b_no).await, 404);
    assert_eq!(
        a.query(&a_no).await["result"]["transactionStatus"],
        "pending",
        "another merchant's wallet key settled nothing"
    );
    assert_eq!(
        b.query(&b_no).await["result"]["transactionStatus"],
        "pending"
    );

    // Each payment's own wallet settles it.
    default_wallet
        .control(
            reqwest::Method::POST,
            "/control/callback",
            Some(approve(&a_no, 2052)),
        )
        .await;
    own_wallet
        .control(
            reqwest::Method::POST,
            "/control/callback",
            Some(approve(&b_no, 3052)),
        )
        .await;
    assert_eq!(
        wait_status(&a, &a_no, "success", 10).await["result"]["transactionStatus"],
        "success"
    );
    assert_eq!(
        wait_status(&b, &b_no, "success", 10).await["result"]["transactionStatus"],
        "success"
    );
}
