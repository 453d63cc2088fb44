//! The HTTP channel against the real simulator over loopback: every operation and outcome,
//! faults that leave the outcome unknown, signatures both ways, idempotent repeats, callbacks,
//! and the simulator's memory across a restart.

// The simulator under test runs on the wall clock; its signed timestamps are checked
// against it.
#![allow(clippy::disallowed_methods)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tillgate_core::{Channel, ChannelOp, QueryTarget, Secret};
use tillgate_domain::{ChannelOutcome, Currency, Money};
use tillgate_wallet::protocol::{self, Callback, CallbackKind, Outcome, ProtocolError};
use tillgate_wallet::{HttpChannel, Simulator, SimulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &[u8] = b"tillgate-wallet-test-key-0001";

/// The longest any test waits for something to happen (a bound, not an expectation).
const WAIT_BOUND: Duration = Duration::from_secs(15);

fn key() -> Secret<Vec<u8>> {
    Secret::new(KEY.to_vec())
}

/// A fresh state file path in the system's temp directory.
fn state_file(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tillgate-wallet-{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("wallet-sim.json")
}

fn config(name: &str) -> SimulatorConfig {
    SimulatorConfig::new("127.0.0.1:0".parse().unwrap(), key(), state_file(name))
}

fn channel(sim: &Simulator) -> HttpChannel {
    HttpChannel::new(&sim.base_url(), key(), Duration::from_secs(5)).unwrap()
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
}

fn pay(tx: &str, minor: i64) -> ChannelOp {
    ChannelOp::Pay {
        transaction_no: tx.into(),
        amount: usd(minor),
        barcode: Some("281234567890123456".into()),
        vendor: Some("alipay".into()),
    }
}

fn refund(tx: &str, no: &str, minor: i64) -> ChannelOp {
    ChannelOp::Refund {
        transaction_no: tx.into(),
        refund_no: no.into(),
        amount: usd(minor),
    }
}

fn query(tx: &str, operation: QueryTarget) -> ChannelOp {
    ChannelOp::Query {
        transaction_no: tx.into(),
        operation,
        amount: usd(1),
        qr_code: false,
    }
}

async fn outcome(channel: &HttpChannel, op: ChannelOp) -> ChannelOutcome {
    channel.execute(op).await.outcome
}

async fn control_get(sim: &Simulator, path: &str) -> (StatusCode, Value) {
    let r = reqwest::get(format!("{}{path}", sim.base_url()))
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap())
}

async fn control_post(sim: &Simulator, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap())
}

/// Polls `check` until it holds, for at most `WAIT_BOUND`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_BOUND;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One callback as the receiver saw it: whether its signature held, and what it said.
type Received = (Result<i64, ProtocolError>, Callback);

/// A gateway's callback endpoint: checks each callback's signature with the shared key and
/// answers with a status the test can change.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let app = axum::Router::new().route(
            "/wallet/callback",
            axum::routing::post({
                let got = got.clone();
                let status = status.clone();
                move |headers: HeaderMap, body: Bytes| async move {
                    let now = chrono::Utc::now().timestamp();
                    let verified = protocol::verify_headers(KEY, &headers, &body, now);
                    let callback: Callback = serde_json::from_slice(&body).unwrap();
                    got.lock().unwrap().push((verified, callback));
                    StatusCode::from_u16(status.load(Ordering::SeqCst))
                        .unwrap()
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, got, status }
    }

    fn url(&self) -> String {
        format!("http://{}/wallet/callback", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn every_operation_gets_the_sandbox_answer_over_http() {
    let sim = Simulator::start(config("ops")).await.unwrap();
    let ch = channel(&sim);

    let approved = ch.execute(pay("t1", 1300)).await;
    assert_eq!(approved.outcome, ChannelOutcome::Approved);
    assert!(
        approved.channel_ref.is_some(),
        "the wallet's reference comes back"
    );
    let declined = ch.execute(pay("t2", 1351)).await;
    assert_eq!(declined.outcome, ChannelOutcome::Declined);
    assert!(declined.message.unwrap().contains("51"));
    assert_eq!(outcome(&ch, pay("t3", 1352)).await, ChannelOutcome::Unknown);
    let qr = ChannelOp::Pay {
        transaction_no: "t4".into(),
        amount: usd(1300),
        barcode: None,
        vendor: None,
    };
    assert_eq!(outcome(&ch, qr).await, ChannelOutcome::Unknown);

    assert_eq!(
        outcome(&ch, refund("t1", "r1", 500)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, refund("t1", "r2", 161)).await,
        ChannelOutcome::Declined
    );
    assert_eq!(
        outcome(&ch, refund("t1", "r3", 900)).await,
        ChannelOutcome::Declined,
        "only 800 is left"
    );

    let close = |tx: &str, minor| ChannelOp::Close {
        transaction_no: tx.into(),
        amount: usd(minor),
        cancel_no: format!("c-{tx}"),
    };
    assert_eq!(
        outcome(&ch, close("t5", 1000)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, close("t6", 1053)).await,
        ChannelOutcome::Unknown
    );
    assert_eq!(
        outcome(&ch, pay("t7", 2000)).await,
        ChannelOutcome::Approved
    );
    let reverse = ChannelOp::Reverse {
        transaction_no: "t7".into(),
        amount: usd(2000),
        cancel_no: "c-t7".into(),
    };
    assert_eq!(outcome(&ch, reverse).await, ChannelOutcome::Approved);

    let q = |tx: &str, target| query(tx, target);
    assert_eq!(
        outcome(&ch, q("t1", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, q("t2", QueryTarget::Payment)).await,
        ChannelOutcome::Declined
    );
    assert_eq!(
        outcome(&ch, q("t3", QueryTarget::Payment)).await,
        ChannelOutcome::Unknown
    );
    let refund_q = |no: &str| QueryTarget::Refund {
        refund_no: no.into(),
    };
    assert_eq!(
        outcome(&ch, q("t1", refund_q("r1"))).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, q("t1", refund_q("r2"))).await,
        ChannelOutcome::Declined
    );
    let cancel_q = || QueryTarget::Cancel {
        cancel_no: "c1".into(),
    };
    assert_eq!(
        outcome(&ch, q("t5", cancel_q())).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, q("t6", cancel_q())).await,
        ChannelOutcome::Unknown
    );
    assert_eq!(
        outcome(&ch, q("t7", cancel_q())).await,
        ChannelOutcome::Approved
    );
    // A payment the wallet never saw is declined for good: it is refused should it arrive.
    assert_eq!(
        outcome(&ch, q("t8", QueryTarget::Payment)).await,
        ChannelOutcome::Declined
    );
    assert_eq!(
        outcome(&ch, pay("t8", 1300)).await,
        ChannelOutcome::Declined
    );
    // A closed order takes no payment.
    assert_eq!(
        outcome(&ch, pay("t5", 1000)).await,
        ChannelOutcome::Declined
    );

    let (status, orders) = control_get(&sim, "/control/orders").await;
    assert_eq!(status, StatusCode::OK);
    let t1 = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["transactionNo"] == "t1")
        .unwrap();
    assert_eq!(t1["payment"]["outcome"], "approved");
    assert_eq!(t1["payment"]["amountMinor"], 1300);
    assert_eq!(t1["refunds"]["r1"]["outcome"], "approved");
    assert_eq!(t1["refunds"]["r2"]["outcome"], "declined");
    let (_, t7) = control_get(&sim, "/control/orders/t7").await;
    assert!(
        t7["payment"]["returnedAt"].is_string(),
        "the reversal gave the money back"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_repeated_operation_answers_what_the_wallet_recorded() {
    let sim = Simulator::start(config("repeat")).await.unwrap();
    let ch = channel(&sim);
    let first = ch.execute(pay("t1", 1300)).await;
    let again = ch.execute(pay("t1", 1300)).await;
    assert_eq!(first, again, "same wallet reference, nothing charged twice");
    assert_eq!(
        outcome(&ch, refund("t1", "r1", 1300)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, refund("t1", "r1", 1300)).await,
        ChannelOutcome::Approved,
        "not 'exceeds'"
    );
    // The same key with another amount is a conflict: the channel does not guess.
    assert_eq!(outcome(&ch, pay("t1", 1400)).await, ChannelOutcome::Unknown);
    let (_, order) = control_get(&sim, "/control/orders/t1").await;
    assert_eq!(order["payment"]["requests"], 2);
    assert_eq!(order["refunds"]["r1"]["requests"], 2);
    assert_eq!(order["payment"]["amountMinor"], 1300);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_time_out_is_unknown_and_the_wallet_still_did_it() {
    let mut cfg = config("timeout");
    cfg.timeout_rate = 1.0;
    cfg.timeout_hold_ms = 10_000;
    let sim = Simulator::start(cfg).await.unwrap();
    let ch = HttpChannel::new(&sim.base_url(), key(), Duration::from_millis(300)).unwrap();
    assert_eq!(outcome(&ch, pay("t1", 1300)).await, ChannelOutcome::Unknown);
    let (status, _) = control_post(&sim, "/control/faults", json!({"timeoutRate": 0.0})).await;
    assert_eq!(status, StatusCode::OK);
    // The wallet performed the payment before it went quiet: a query and a retry both say so.
    assert_eq!(
        outcome(&ch, query("t1", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, pay("t1", 1300)).await,
        ChannelOutcome::Approved
    );
    let (_, order) = control_get(&sim, "/control/orders/t1").await;
    assert_eq!(order["payment"]["requests"], 2);
    // Shutdown ends the held connection rather than waiting out the hold.
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_answer_is_unknown_and_the_wallet_still_did_it() {
    let mut cfg = config("drop");
    cfg.drop_rate = 1.0;
    let sim = Simulator::start(cfg).await.unwrap();
    let ch = channel(&sim);
    assert_eq!(outcome(&ch, pay("t1", 1300)).await, ChannelOutcome::Unknown);
    assert_eq!(
        outcome(&ch, refund("t1", "r1", 300)).await,
        ChannelOutcome::Unknown
    );
    control_post(&sim, "/control/faults", json!({"dropRate": 0.0})).await;
    assert_eq!(
        outcome(&ch, query("t1", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    let r1 = QueryTarget::Refund {
        refund_no: "r1".into(),
    };
    assert_eq!(
        outcome(&ch, query("t1", r1)).await,
        ChannelOutcome::Approved
    );

    // On the wire, a dropped answer is a closed connection with not one byte of an answer.
    control_post(&sim, "/control/faults", json!({"dropRate": 1.0})).await;
    let body = br#"{"transactionNo":"t2","amountMinor":1300,"currency":"USD","barcode":"2812"}"#;
    let ts = chrono::Utc::now().timestamp();
    let request = format!(
        "POST /v1/pay HTTP/1.1\r\nhost: wallet\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-tillgate-timestamp: {ts}\r\nx-tillgate-signature: {}\r\n\r\n",
        body.len(),
        protocol::sign(KEY, ts, body)
    );
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT_BOUND, stream.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    control_post(&sim, "/control/faults", json!({"dropRate": 0.0})).await;
    assert_eq!(
        outcome(&ch, query("t2", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_delays_the_answer_but_not_the_outcome() {
    let mut cfg = config("latency");
    cfg.latency_ms = 30;
    let sim = Simulator::start(cfg).await.unwrap();
    let ch = channel(&sim);
    assert_eq!(
        outcome(&ch, pay("t1", 1300)).await,
        ChannelOutcome::Approved
    );
    let slow = HttpChannel::new(&sim.base_url(), key(), Duration::from_millis(1)).unwrap();
    control_post(&sim, "/control/faults", json!({"latencyMs": 2000})).await;
    assert_eq!(
        outcome(&slow, pay("t2", 1300)).await,
        ChannelOutcome::Unknown
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wallet_that_does_not_share_the_key_is_refused_both_ways() {
    let sim = Simulator::start(config("key")).await.unwrap();
    let wrong = HttpChannel::new(
        &sim.base_url(),
        Secret::new(b"some-other-key-of-enough-bytes".to_vec()),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        outcome(&wrong, pay("t1", 1300)).await,
        ChannelOutcome::Unknown
    );
    let (status, _) = control_get(&sim, "/control/orders/t1").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused request changes nothing"
    );

    // Unsigned, malformed and oversized requests get JSON errors.
    let client = reqwest::Client::new();
    let url = format!("{}{}", sim.base_url(), protocol::PAY_PATH);
    let r = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_signature");
    let signed_post = |body: Vec<u8>| {
        let ts = chrono::Utc::now().timestamp();
        let mut req = client.post(&url).body(body.clone());
        for (name, value) in protocol::signature_headers(KEY, ts, &body) {
            req = req.header(name, value);
        }
        req.send()
    };
    let r = signed_post(b"{not json".to_vec()).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    let r = signed_post(br#"{"transactionNo":"t","amountMinor":-1,"currency":"USD"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = signed_post(vec![b' '; protocol::MAX_BODY_BYTES + 1])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "too_large");
    let (status, body) = control_post(&sim, "/control/faults", json!({"dropRate": 1.5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    sim.shutdown().await;
}

/// A stand-in wallet whose answer the test writes: body, status and signing key.
async fn fake_wallet(
    status: u16,
    body: &'static str,
    signing_key: Option<&'static [u8]>,
) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(k) = signing_key {
            let ts = chrono::Utc::now().timestamp();
            for (name, value) in protocol::signature_headers(k, ts, body.as_bytes()) {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
        }
        response
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_leaves_the_outcome_unknown() {
    let sim = Simulator::start(config("redirect")).await.unwrap();
    // A wallet address that answers every call with a redirect to the real wallet.
    let target = format!("{}{}", sim.base_url(), protocol::PAY_PATH);
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let ch = HttpChannel::new(&format!("http://{addr}"), key(), Duration::from_secs(5)).unwrap();
    assert_eq!(
        outcome(&ch, pay("t-redirected", 1300)).await,
        ChannelOutcome::Unknown
    );
    // The signed request was not re-sent where the redirect pointed.
    let (status, _) = control_get(&sim, "/control/orders/t-redirected").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn only_a_signed_answer_about_the_same_order_decides() {
    const GOOD: &str = r#"{"transactionNo":"t1","outcome":"approved","walletRef":"W1"}"#;
    let cases: [(u16, &'static str, Option<&'static [u8]>, ChannelOutcome); 7] = [
        (200, GOOD, Some(KEY), ChannelOutcome::Approved),
        (200, GOOD, None, ChannelOutcome::Unknown),
        (
            200,
            GOOD,
            Some(b"a-key-the-gateway-does-not-know"),
            ChannelOutcome::Unknown,
        ),
        (
            200,
            r#"{"transactionNo":"t2","outcome":"approved"}"#,
            Some(KEY),
            ChannelOutcome::Unknown,
        ),
        (
            200,
            r#"{"transactionNo":"t1","outcome":"approved","amountMinor":1,"currency":"USD"}"#,
            Some(KEY),
            ChannelOutcome::Unknown,
        ),
        (200, "approved", Some(KEY), ChannelOutcome::Unknown),
        (500, GOOD, Some(KEY), ChannelOutcome::Unknown),
    ];
    for (status, body, signing_key, expected) in cases {
        let url = fake_wallet(status, body, signing_key).await;
        let ch = HttpChannel::new(&url, key(), Duration::from_secs(5)).unwrap();
        assert_eq!(
            outcome(&ch, pay("t1", 1300)).await,
            expected,
            "{status} {body} signed: {}",
            signing_key.is_some()
        );
    }
    // Nobody listening is unknown too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ch = HttpChannel::new(&format!("http://{closed}"), key(), Duration::from_secs(5)).unwrap();
    assert_eq!(outcome(&ch, pay("t1", 1300)).await, ChannelOutcome::Unknown);
}

#[tokio::test]
async fn a_pending_payment_is_called_back_once_decided_and_twice_under_the_duplicate_fault() {
    let receiver = Receiver::start(200).await;
    let mut cfg = config("callback");
    cfg.callback_url = Some(receiver.url());
    cfg.late_callback_ms = 20;
    cfg.duplicate_callback_rate = 1.0;
    let sim = Simulator::start(cfg).await.unwrap();
    let ch = channel(&sim);
    assert_eq!(outcome(&ch, pay("t1", 1352)).await, ChannelOutcome::Unknown);
    wait_until("two callbacks", || async { receiver.received().len() >= 2 }).await;
    let got = receiver.received();
    for (verified, callback) in &got {
        assert!(verified.is_ok(), "signed with the shared key: {verified:?}");
        assert_eq!(callback.kind, CallbackKind::Payment);
        assert_eq!(callback.transaction_no, "t1");
        assert_eq!(callback.amount_minor, 1352);
        assert_eq!(callback.currency, "USD");
        assert_eq!(callback.outcome, Outcome::Approved);
    }
    assert_eq!(
        got[0].1.callback_id, got[1].1.callback_id,
        "a duplicate, not a new result"
    );
    assert_eq!(
        outcome(&ch, query("t1", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    let (_, order) = control_get(&sim, "/control/orders/t1").await;
    wait_until("both recorded as delivered", || async {
        let (_, order) = control_get(&sim, "/control/orders/t1").await;
        order["callbacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "delivered")
            .count()
            == 2
    })
    .await;
    assert!(order["payment"]["decidedAt"].is_string());

    // The customer scans a QR code: pending until the control endpoint plays the payment.
    control_post(
        &sim,
        "/control/faults",
        json!({"duplicateCallbackRate": 0.0}),
    )
    .await;
    let qr = ChannelOp::Pay {
        transaction_no: "t2".into(),
        amount: usd(700),
        barcode: None,
        vendor: None,
    };
    assert_eq!(outcome(&ch, qr).await, ChannelOutcome::Unknown);
    let (status, _) = control_post(&sim, "/control/pay/t2", json!({})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an outcome is required in a body"
    );
    let (status, paid) = reqwest::Client::new()
        .post(format!("{}/control/pay/t2", sim.base_url()))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        paid.json::<Value>().await.unwrap()["payment"]["outcome"],
        "approved"
    );
    wait_until("the QR payment's callback", || async {
        receiver
            .received()
            .iter()
            .any(|(_, c)| c.transaction_no == "t2")
    })
    .await;
    assert_eq!(
        outcome(&ch, query("t2", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    let (status, _) = control_post(&sim, "/control/pay/t2", json!({"outcome": "approved"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "it is no longer pending");

    // A pending cancel is called back as well.
    let close = ChannelOp::Close {
        transaction_no: "t3".into(),
        amount: usd(153),
        cancel_no: "c-t3".into(),
    };
    assert_eq!(outcome(&ch, close).await, ChannelOutcome::Unknown);
    wait_until("the cancel's callback", || async {
        receiver
            .received()
            .iter()
            .any(|(_, c)| c.transaction_no == "t3" && c.kind == CallbackKind::Cancel)
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_callbacks_can_be_injected() {
    let receiver = Receiver::start(200).await;
    let mut cfg = config("inject");
    cfg.callback_url = Some(receiver.url());
    let sim = Simulator::start(cfg).await.unwrap();
    let (status, record) = control_post(
        &sim,
        "/control/callback",
        json!({"kind": "payment", "transactionNo": "nobody", "amountMinor": 1, "currency": "EUR", "outcome": "approved"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(record["injected"], true);
    let (status, _) = control_post(
        &sim,
        "/control/callback",
        json!({"kind": "refund", "transactionNo": "nobody", "refundNo": "r9", "amountMinor": 5, "currency": "USD", "outcome": "declined", "corruptSignature": true}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_until("both injected callbacks", || async {
        receiver.received().len() >= 2
    })
    .await;
    let got = receiver.received();
    let unknown = got
        .iter()
        .find(|(_, c)| c.kind == CallbackKind::Payment)
        .unwrap();
    assert!(unknown.0.is_ok());
    assert_eq!(unknown.1.currency, "EUR");
    let corrupt = got
        .iter()
        .find(|(_, c)| c.kind == CallbackKind::Refund)
        .unwrap();
    assert_eq!(corrupt.0, Err(ProtocolError::BadSignature));
    // A resend is a duplicate of a recorded callback.
    let id = record["id"].as_u64().unwrap();
    let (status, _) =
        control_post(&sim, &format!("/control/callbacks/{id}/resend"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_until("the resend", || async { receiver.received().len() >= 3 }).await;
    let (_, orders) = control_get(&sim, "/control/orders").await;
    assert_eq!(
        orders["callbacksForUnknownOrders"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn after_a_restart_the_wallet_remembers_what_it_did() {
    let mut cfg = config("restart");
    cfg.late_callback_ms = 3_600_000;
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let ch = channel(&sim);
    assert_eq!(
        outcome(&ch, pay("t1", 1300)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, refund("t1", "r1", 300)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(outcome(&ch, pay("t2", 1352)).await, ChannelOutcome::Unknown);
    assert_eq!(
        outcome(&ch, pay("t3", 1351)).await,
        ChannelOutcome::Declined
    );
    sim.shutdown().await;

    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let ch = channel(&sim);
    assert_eq!(
        outcome(&ch, query("t1", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    let r1 = QueryTarget::Refund {
        refund_no: "r1".into(),
    };
    assert_eq!(
        outcome(&ch, query("t1", r1)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, query("t2", QueryTarget::Payment)).await,
        ChannelOutcome::Unknown
    );
    assert_eq!(
        outcome(&ch, query("t3", QueryTarget::Payment)).await,
        ChannelOutcome::Declined
    );
    // Repeats still answer the recorded results, and what is left to refund is remembered.
    assert_eq!(
        outcome(&ch, pay("t1", 1300)).await,
        ChannelOutcome::Approved
    );
    assert_eq!(
        outcome(&ch, refund("t1", "r2", 1001)).await,
        ChannelOutcome::Declined
    );
    // The pending payment is still pending and can still be decided.
    let (status, _) = reqwest::Client::new()
        .post(format!("{}/control/pay/t2", sim.base_url()))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        outcome(&ch, query("t2", QueryTarget::Payment)).await,
        ChannelOutcome::Approved
    );
    let (_, order) = control_get(&sim, "/control/orders/t1").await;
    assert_eq!(order["payment"]["requests"], 2);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(cfg.state_file.parent().unwrap());
}

#[tokio::test]
async fn callbacks_owed_at_a_crash_are_sent_after_the_restart() {
    let receiver = Receiver::start(503).await;
    let mut cfg = config("owed");
    cfg.callback_url = Some(receiver.url());
    cfg.callback_retry_base_ms = 20;
    cfg.callback_attempts_max = 50;
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let ch = channel(&sim);
    let qr = ChannelOp::Pay {
        transaction_no: "t1".into(),
        amount: usd(900),
        barcode: None,
        vendor: None,
    };
    assert_eq!(outcome(&ch, qr).await, ChannelOutcome::Unknown);
    reqwest::Client::new()
        .post(format!("{}/control/pay/t1", sim.base_url()))
        .send()
        .await
        .unwrap();
    wait_until("a refused attempt", || async {
        !receiver.received().is_empty()
    })
    .await;
    sim.shutdown().await;
    let first = receiver.received().len();

    // The gateway now acknowledges; the restarted simulator delivers what it still owed.
    receiver.status.store(200, Ordering::SeqCst);
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    wait_until("the owed callback delivered", || async {
        let (_, order) = control_get(&sim, "/control/orders/t1").await;
        order["callbacks"][0]["status"] == "delivered"
    })
    .await;
    let got = receiver.received();
    assert!(got.len() > first);
    let (verified, callback) = got.last().unwrap();
    assert!(verified.is_ok());
    assert_eq!(callback.outcome, Outcome::Approved);
    assert_eq!(callback.amount_minor, 900);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(cfg.state_file.parent().unwrap());
}

#[tokio::test]
async fn a_seed_replays_the_same_faults() {
    async fn run(seed: u64) -> Vec<bool> {
        let mut cfg = config("seed");
        cfg.drop_rate = 0.5;
        cfg.seed = seed;
        let sim = Simulator::start(cfg).await.unwrap();
        let ch = channel(&sim);
        let mut answered = Vec::new();
        for i in 0..24 {
            let o = outcome(&ch, pay(&format!("t{i}"), 1300)).await;
            answered.push(o == ChannelOutcome::Approved);
        }
        sim.shutdown().await;
        answered
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[tokio::test]
async fn run_simulator_stops_when_told() {
    let cfg = config("run");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(tillgate_wallet::run_simulator(cfg, async move {
        let _ = stop_rx.await;
    }));
    stop_tx.send(()).unwrap();
    tokio::time::timeout(WAIT_BOUND, running)
        .await
        .expect("stopped within the bound")
        .unwrap()
        .unwrap();
}

/// The daily statement over HTTP: every operation of the day in order, over several pages, each
/// signed; an injected discrepancy changes the statement and nothing else; a refused edit or a
/// bad date says why.
#[tokio::test]
async fn the_daily_statement_lists_every_operation_over_several_signed_pages() {
    let sim = Simulator::start(config("statement")).await.unwrap();
    let channel = channel(&sim);
    // 450 payments and one refund: three pages of 200.
    for i in 0..450 {
        let tx = format!("2200000000000{i:05}");
        assert_eq!(
            outcome(&channel, pay(&tx, 1_000)).await,
            ChannelOutcome::Approved
        );
    }
    let first = "220000000000000000";
    assert_eq!(
        outcome(&channel, refund(first, "R-1", 300)).await,
        ChannelOutcome::Approved
    );
    let today = chrono::Utc::now().date_naive();
    let lines = channel.statement(today).await.unwrap();
    assert_eq!(lines.len(), 451);
    assert!(
        lines.windows(2).all(|w| w[0].at <= w[1].at),
        "in time order"
    );
    let refund_line = lines
        .iter()
        .find(|l| l.refund_no.as_deref() == Some("R-1"))
        .unwrap();
    assert_eq!(
        (refund_line.amount_minor, refund_line.operation.as_str()),
        (300, "refund")
    );
    // Another day holds none of them.
    let yesterday = today.pred_opt().unwrap();
    assert!(channel.statement(yesterday).await.unwrap().is_empty());

    // The statement shows the refund otherwise; the wallet's own record stays as it was.
    let (status, _) = control_post(
        &sim,
        "/control/statement",
        json!({"kind": "amount", "operation": "refund", "transactionNo": first,
               "refundNo": "R-1", "amountMinor": 350}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = control_post(
        &sim,
        "/control/statement",
        json!({"kind": "otherDay", "operation": "pay", "transactionNo": first, "days": -1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines = channel.statement(today).await.unwrap();
    assert_eq!(lines.len(), 450);
    let refund_line = lines
        .iter()
        .find(|l| l.refund_no.as_deref() == Some("R-1"))
        .unwrap();
    assert_eq!(refund_line.amount_minor, 350);
    let moved = channel.statement(yesterday).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].transaction_no, first);
    let (_, order) = control_get(&sim, &format!("/control/orders/{first}")).await;
    assert_eq!(order["refunds"]["R-1"]["amountMinor"], 300, "{order}");

    // An edit naming nothing the wallet did is refused; so is a phantom of a real refund.
    let (status, _) = control_post(
        &sim,
        "/control/statement",
        json!({"kind": "missing", "operation": "refund", "transactionNo": first,
               "refundNo": "R-404"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = control_post(
        &sim,
        "/control/statement",
        json!({"kind": "phantomRefund", "transactionNo": first, "refundNo": "R-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A date that is no calendar day is refused, signed.
    let body = br#"{"date":"2026-02-30"}"#;
    let now = chrono::Utc::now().timestamp();
    let r = reqwest::Client::new()
        .post(format!("{}{}", sim.base_url(), protocol::STATEMENT_PATH))
        .header(protocol::TIMESTAMP_HEADER, now.to_string())
        .header(protocol::SIGNATURE_HEADER, protocol::sign(KEY, now, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().contains_key(protocol::SIGNATURE_HEADER));
    sim.shutdown().await;
}
