//! Crash tests: merchants in every dialect (Pockyt v3, unified, YabandPay) add, pay, refund and
//! cancel concurrently while the gateway process is killed with SIGKILL at random moments, and
//! started again on the same database. After every restart, everything the gateway acknowledged
//! is found as it was answered, every payment's refunded total equals its succeeded refunds and
//! its reserved amount the refunds in flight, and the outbox holds a notification for every
//! acknowledged change. A request cut off by a crash is sent again with its idempotency key
//! until it gets an answer (safe to retry). At the end nothing is left in flight, and with the
//! HTTP wallet — which times out now and then, sends its callbacks twice, and is killed too at
//! about half the crashes — the wallet's ledger agrees with the gateway's books.
//!
//! The moments of the crashes and the clients' choices come from one seed, printed at the start
//! (`TILLGATE_CRASH_SEED=N` replays a seed's choices; the moments a request meets a crash still
//! depend on the machine). `TILLGATE_CRASH_CYCLES` sets the crashes of a run (default 5).

use crate::helpers::*;
use crate::unified::jeepay_sign;
use crate::yabandpay::{yaband_sign, SECRET as YABAND_SECRET, TID};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The HTTP wallet's key (hex).
const WALLET_KEY: &str = "63726173682d746573742d77616c6c65742d6b6579";
/// Concurrent merchant clients (spread over the three dialects).
const CLIENTS: usize = 6;
/// How long one request may keep being retried before the gateway counts as not recovered.
const RECOVERY: Duration = Duration::from_secs(60);

/// A small deterministic generator (SplitMix64): the test's only source of choices.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The run's seed: `TILLGATE_CRASH_SEED`, else drawn from the clock (and printed).
pub fn seed() -> u64 {
    let seed = std::env::var("TILLGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (TILLGATE_CRASH_SEED={seed} replays its choices)");
    seed
}

/// Crashes per run: `TILLGATE_CRASH_CYCLES`, default 5.
pub fn cycles() -> usize {
    std::env::var("TILLGATE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// A `tillgate serve` process that can be killed and started again on its database and port.
pub struct Gateway {
    pub dir: Arc<TempDir>,
    pub database_url: String,
    pub port: u16,
    pub args: Vec<String>,
    pub child: Option<Child>,
    pub starts: usize,
}

impl Gateway {
    pub fn new(dir: Arc<TempDir>, database_url: &str, args: &[&str]) -> Gateway {
        Gateway {
            dir,
            database_url: database_url.to_owned(),
            port: restartable_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            starts: 0,
        }
    }

    /// The gateway's address (the same after every restart).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it listens (its standard error goes to a file of
    /// the test's directory, so a long run never blocks on a full pipe).
    pub fn start(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.starts += 1;
            let log = self
                .dir
                .0
                .join(format!("gateway-{}-{}.log", self.port, self.starts));
            let mut child = Command::new(binary())
                .arg("serve")
                .args(["--listen", &listen, "--database-url", &self.database_url])
                .args(&self.args)
                .current_dir(&self.dir.0)
                .env("RUST_LOG", "warn")
                .env_remove("TILLGATE_MASTER_KEY")
                .env_remove("TILLGATE_MASTER_KEY_FILE")
                .env_remove("TILLGATE_MODE")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("cannot run tillgate");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("listening on ") {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(30)).is_ok() {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "the gateway did not start again: {stderr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Why a request is sent again when it got no answer at all.
const NO_ANSWER: &str = "no answer";

/// What a request came to.
enum Reply {
    /// An answer that stands (success or a business refusal).
    Answer(Value),
    /// No answer, a system error, or "in progress, retry": send it again with the same key.
    Retry(String),
}

/// The gateway's view of an operation's outcome, whatever the dialect calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Pockyt,
    Unified,
    Yaband,
}

/// An operation the gateway acknowledged, with the answer it gave.
#[derive(Debug, Clone)]
pub enum Acked {
    Added {
        tx: String,
        amount: i64,
        dialect: Dialect,
        key: String,
    },
    Paid {
        tx: String,
        status: Status,
    },
    Refund {
        tx: String,
        refund_no: String,
        amount: i64,
        status: Status,
        dialect: Dialect,
        key: String,
    },
    Cancel {
        tx: String,
        status: Status,
    },
}

/// A merchant's client of one dialect.
struct Client {
    dialect: Dialect,
    base: String,
    http: reqwest::Client,
    notify_url: String,
    /// Requests sent again because they got a retryable answer, and because they got none.
    retries: Arc<AtomicU64>,
    unanswered: Arc<AtomicU64>,
}

impl Client {
    fn new(dialect: Dialect, base: &str, notify_url: &str) -> Client {
        Client {
            dialect,
            base: base.to_owned(),
            http: reqwest::Client::new(),
            notify_url: notify_url.to_owned(),
            retries: Arc::default(),
            unanswered: Arc::default(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, serde_json::from_str(&text).ok()?))
    }

    async fn pockyt(&self, path: &str, params: Vec<(&'static str, String)>) -> Reply {
        let mut all: Vec<(&str, &str)> = vec![("merchantNo", MERCHANT_NO), ("storeNo", STORE_NO)];
        all.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let sign = verify_sign(&all, TOKEN);
        let mut body: serde_json::Map<String, Value> =
            all.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        body.insert("verifySign".into(), json!(sign));
        match self.post(path, &Value::Object(body)).await {
            None => Reply::Retry(NO_ANSWER.into()),
            Some((_, v)) if v["ret_code"] == "000000" => Reply::Retry(v.to_string()),
            Some((_, v)) if v["ret_msg"].as_str().unwrap_or("").contains("retry") => {
                Reply::Retry(v.to_string())
            }
            Some((_, v)) => Reply::Answer(v),
        }
    }

    async fn unified(&self, path: &str, params: Value) -> Reply {
        let mut body = params.as_object().unwrap().clone();
        body.insert("mchNo".into(), json!("M1621873433953"));
        body.insert("appId".into(), json!("60cc09bce4b0f1c0b83761c9"));
        body.insert("reqTime".into(), json!("1700000000123"));
        body.insert("version".into(), json!("1.0"));
        body.insert("signType".into(), json!("MD5"));
        let pairs: Vec<(String, String)> = body.iter().map(|(k, v)| (k.clone(), text(v))).collect();
        body.insert(
            "sign".into(),
            json!(jeepay_sign(&pairs, "offline-test-key")),
        );
        match self.post(path, &Value::Object(body)).await {
            None => Reply::Retry(NO_ANSWER.into()),
            Some((_, v)) if v["code"] == 10 => Reply::Retry(v.to_string()),
            Some((_, v)) if v["msg"].as_str().unwrap_or("").contains("retry") => {
                Reply::Retry(v.to_string())
            }
            Some((_, v)) => Reply::Answer(v),
        }
    }

    async fn yaband(&self, method: &str, data: Value) -> Reply {
        let time = chrono::Utc::now().timestamp();
        let body = json!({
            "user": TID,
            "method": method,
            "time": time,
            "sign": yaband_sign(TID, method, time, &data, YABAND_SECRET),
            "data": data,
        });
        match self.post("/Payments", &body).await {
            None => Reply::Retry(NO_ANSWER.into()),
            Some((_, v)) if v["code"] == "-5000" || v["code"] == "-4120" => {
                Reply::Retry(v.to_string())
            }
            Some((_, v)) => Reply::Answer(v),
        }
    }

    /// Sends a request again (same key) until it gets an answer that stands.
    async fn until_answered<F, Fut>(&self, what: &str, mut send: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Reply>,
    {
        let deadline = Instant::now() + RECOVERY;
        loop {
            match send().await {
                Reply::Answer(v) => return v,
                Reply::Retry(why) => {
                    if why == NO_ANSWER {
                        self.unanswered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{:?} {what}: no answer within {RECOVERY:?}: {why}",
                        self.dialect
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Sends a request until its answer is final (a pending answer is asked again: the same
    /// key replays the operation's current state).
    async fn until_final<F, Fut>(
        &self,
        what: &str,
        mut send: F,
        read: impl Fn(&Value) -> Status,
    ) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Reply>,
    {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let v = self.until_answered(what, &mut send).await;
            if read(&v) != Status::Pending {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} {what} stays pending: {v}",
                self.dialect
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates and pays a transaction of `amount` minor units keyed by `key`.
    async fn create_and_pay(&self, key: &str, amount: i64, journal: &Journal) -> (String, Status) {
        let decimal = format!("{}.{:02}", amount / 100, amount % 100);
        match self.dialect {
            Dialect::Pockyt => {
                let added = self
                    .until_answered("add", || {
                        self.pockyt(
                            "/app-instore/v3/add",
                            vec![
                                ("amount", decimal.to_string()),
                                ("currency", "USD".to_string()),
                                ("settleCurrency", "USD".to_string()),
                                ("reference", key.to_string()),
                                ("ipnUrl", self.notify_url.to_string()),
                            ],
                        )
                    })
                    .await;
                assert_eq!(added["ret_code"], "000100", "{added}");
                let tx = added["result"]["transactionNo"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                journal.ack(Acked::Added {
                    tx: tx.clone(),
                    amount,
                    dialect: self.dialect,
                    key: key.to_owned(),
                });
                let read = |v: &Value| status_of(v["result"]["transactionStatus"].as_str());
                let paid = self
                    .until_final(
                        "pay",
                        || {
                            self.pockyt(
                                "/app-instore/v3/pay",
                                vec![
                                    ("transactionNo", tx.to_string()),
                                    ("paymentBarcode", "281234567890123456".to_string()),
                                    ("vendor", "alipay".to_string()),
                                ],
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(paid["ret_code"], "000100", "{paid}");
                journal.ack(Acked::Paid {
                    tx: tx.clone(),
                    status: read(&paid),
                });
                (tx, read(&paid))
            }
            Dialect::Unified => {
                let read = |v: &Value| match v["data"]["orderState"].as_i64() {
                    Some(2) => Status::Succeeded,
                    Some(3) => Status::Failed,
                    _ => Status::Pending,
                };
                let paid = self
                    .until_final(
                        "unifiedOrder",
                        || {
                            self.unified(
                                "/api/pay/unifiedOrder",
                                json!({
                                    "mchOrderNo": key,
                                    "wayCode": "AUTO_BAR",
                                    "amount": amount,
                                    "currency": "cny",
                                    "subject": "crash",
                                    "body": "crash test",
                                    "channelExtra": "{\"authCode\":\"134567890123456789\"}",
                                    "notifyUrl": self.notify_url,
                                }),
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(paid["code"], 0, "{paid}");
                let tx = strip(paid["data"]["payOrderId"].as_str().unwrap(), 'P');
                journal.ack(Acked::Added {
                    tx: tx.clone(),
                    amount,
                    dialect: self.dialect,
                    key: key.to_owned(),
                });
                journal.ack(Acked::Paid {
                    tx: tx.clone(),
                    status: read(&paid),
                });
                (tx, read(&paid))
            }
            Dialect::Yaband => {
                let read = |v: &Value| match v["data"]["state"].as_str() {
                    Some("paid") => Status::Succeeded,
                    Some("failed") | Some("declined") => Status::Failed,
                    _ => Status::Pending,
                };
                let paid = self
                    .until_final(
                        "v3.BarcodePayment",
                        || {
                            self.yaband(
                                "v3.BarcodePayment",
                                json!({
                                    "order_id": key,
                                    "auth_code": "281234567890123456",
                                    "amount": decimal,
                                    "currency": "EUR",
                                    "description": "crash",
                                    "notify_url": self.notify_url,
                                }),
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(paid["status"], true, "{paid}");
                let tx = paid["data"]["trade_id"].as_str().unwrap().to_owned();
                journal.ack(Acked::Added {
                    tx: tx.clone(),
                    amount,
                    dialect: self.dialect,
                    key: key.to_owned(),
                });
                journal.ack(Acked::Paid {
                    tx: tx.clone(),
                    status: read(&paid),
                });
                (tx, read(&paid))
            }
        }
    }

    /// Refunds `amount` of `tx` under the merchant's refund key `key`.
    async fn refund(&self, tx: &str, key: &str, amount: i64, journal: &Journal) -> Status {
        let decimal = format!("{}.{:02}", amount / 100, amount % 100);
        let (refund_no, status) = match self.dialect {
            Dialect::Pockyt => {
                let read = |v: &Value| status_of(v["result"]["status"].as_str());
                let v = self
                    .until_final(
                        "refund",
                        || {
                            self.pockyt(
                                "/app-data-search/v3/refund",
                                vec![
                                    ("transactionNo", tx.to_string()),
                                    ("refundAmount", decimal.to_string()),
                                    ("currency", "USD".to_string()),
                                    ("settleCurrency", "USD".to_string()),
                                    ("refundReference", key.to_string()),
                                ],
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(v["ret_code"], "000100", "{v}");
                let no = v["result"]["refundTransactionNo"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                (no, read(&v))
            }
            Dialect::Unified => {
                let read = |v: &Value| match v["data"]["state"].as_i64() {
                    Some(2) => Status::Succeeded,
                    Some(3) => Status::Failed,
                    _ => Status::Pending,
                };
                let v = self
                    .until_final(
                        "refundOrder",
                        || {
                            self.unified(
                                "/api/refund/refundOrder",
                                json!({
                                    "payOrderId": format!("P{tx}"),
                                    "mchRefundNo": key,
                                    "refundAmount": amount,
                                    "currency": "cny",
                                    "refundReason": "crash",
                                    "notifyUrl": self.notify_url,
                                }),
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(v["code"], 0, "{v}");
                let no = strip(v["data"]["refundOrderId"].as_str().unwrap(), 'R');
                (no, read(&v))
            }
            Dialect::Yaband => {
                let read = |v: &Value| match v["data"]["state"].as_str() {
                    Some("refunded") => Status::Succeeded,
                    Some("failed") => Status::Failed,
                    _ => Status::Pending,
                };
                let v = self
                    .until_final(
                        "v3.CreateRefund",
                        || {
                            self.yaband(
                                "v3.CreateRefund",
                                json!({
                                    "trade_id": tx,
                                    "refund_amount": decimal,
                                    "refund_currency": "EUR",
                                    "refund_description": "crash",
                                    "m_refund_id": key,
                                    "notify_url": self.notify_url,
                                }),
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(v["status"], true, "{v}");
                let no = v["data"]["refund_id"].as_str().unwrap().to_owned();
                (no, read(&v))
            }
        };
        journal.ack(Acked::Refund {
            tx: tx.to_owned(),
            refund_no,
            amount,
            status,
            dialect: self.dialect,
            key: key.to_owned(),
        });
        status
    }

    /// Cancels (reverses in full) the paid transaction `tx`.
    async fn cancel(&self, tx: &str, journal: &Journal) {
        let status = match self.dialect {
            Dialect::Pockyt => {
                let read = |v: &Value| status_of(v["result"]["status"].as_str());
                let v = self
                    .until_final(
                        "cancel",
                        || {
                            self.pockyt(
                                "/app-data-search/v3/cancel",
                                vec![("transactionNo", tx.to_string())],
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(v["ret_code"], "000100", "{v}");
                read(&v)
            }
            Dialect::Unified => {
                let read = |v: &Value| match v["data"]["state"].as_i64() {
                    Some(2) => Status::Succeeded,
                    Some(3) => Status::Failed,
                    _ => Status::Pending,
                };
                let v = self
                    .until_final(
                        "cancel",
                        || {
                            self.unified(
                                "/api/pay/cancel",
                                json!({ "payOrderId": format!("P{tx}"), "notifyUrl": self.notify_url }),
                            )
                        },
                        read,
                    )
                    .await;
                assert_eq!(v["code"], 0, "{v}");
                read(&v)
            }
            Dialect::Yaband => {
                // A retry of a cancel that went through is answered "already cancelled".
                let read = |v: &Value| match (v["code"].as_str(), v["data"]["state"].as_str()) {
                    (Some("-4116"), _) | (_, Some("cancelled")) => Status::Succeeded,
                    (Some("200"), _) => Status::Pending,
                    _ => Status::Failed,
                };
                let v = self
                    .until_final(
                        "v3.CancelPayment",
                        || self.yaband("v3.CancelPayment", json!({ "trade_id": tx })),
                        read,
                    )
                    .await;
                assert_eq!(read(&v), Status::Succeeded, "{v}");
                read(&v)
            }
        };
        journal.ack(Acked::Cancel {
            tx: tx.to_owned(),
            status,
        });
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strip(id: &str, prefix: char) -> String {
    id.strip_prefix(prefix).unwrap_or(id).to_owned()
}

fn status_of(pockyt: Option<&str>) -> Status {
    match pockyt {
        Some("success") => Status::Succeeded,
        Some("failed") => Status::Failed,
        _ => Status::Pending,
    }
}

/// Everything the gateway acknowledged, in order.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Acked>>>);

impl Journal {
    fn ack(&self, a: Acked) {
        self.0.lock().unwrap().push(a);
    }

    pub fn all(&self) -> Vec<Acked> {
        self.0.lock().unwrap().clone()
    }
}

/// An amount in minor units whose last two digits the sandbox reads as `approve` (or, with
/// `decline`, as a declined payment): never 52 or 53, which wait for a played answer.
fn payment_amount(rng: &mut Rng) -> i64 {
    let base = rng.range(10, 200) as i64 * 100;
    if rng.chance(10) {
        return base + 51;
    }
    let cents = rng.range(0, 99) as i64;
    base + if cents == 51 || cents == 52 || cents == 53 {
        cents + 3
    } else {
        cents
    }
}

/// One merchant client's life: transactions, one after another, each paid and then refunded
/// in parts, cancelled, or left alone, every step sent again until answered.
async fn client_loop(
    client: Client,
    mut rng: Rng,
    tag: String,
    stop: Arc<AtomicBool>,
    journal: Journal,
) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{tag}{n:04}");
        let amount = payment_amount(&mut rng);
        let (tx, paid) = client.create_and_pay(&key, amount, &journal).await;
        if paid != Status::Succeeded {
            continue;
        }
        match rng.range(0, 3) {
            0 | 1 => {
                let mut left = amount;
                for r in 0..rng.range(1, 3) {
                    if stop.load(Ordering::Relaxed) || left < 2 {
                        break;
                    }
                    let mut part = rng.range(1, (left / 2) as u64) as i64;
                    // Now and then a refund the sandbox declines (its amount ends in 61).
                    if rng.chance(15) && left / 2 >= 161 {
                        part = (part / 100).max(1) * 100 + 61;
                    }
                    let status = client
                        .refund(&tx, &format!("{key}r{r}"), part, &journal)
                        .await;
                    if status == Status::Succeeded {
                        left -= part;
                    }
                }
            }
            2 => client.cancel(&tx, &journal).await,
            _ => {}
        }
    }
    n
}

/// Merchant clients of every dialect running against one or more gateway nodes.
pub struct Load {
    pub stop: Arc<AtomicBool>,
    pub journal: Journal,
    /// Requests sent again after a retryable answer (system error, in progress).
    pub retries: Arc<AtomicU64>,
    /// Requests sent again after no answer at all (the connection broke).
    pub unanswered: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<usize>>,
}

impl Load {
    /// Starts `per_base` clients (Pockyt, unified, YabandPay in turn) on each of `bases`.
    pub fn start(
        bases: &[String],
        per_base: usize,
        rng: &mut Rng,
        seed: u64,
        notify_url: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let journal = Journal::default();
        let retries = Arc::new(AtomicU64::new(0));
        let unanswered = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for (b, base) in bases.iter().enumerate() {
            for i in 0..per_base {
                let dialect = [Dialect::Pockyt, Dialect::Unified, Dialect::Yaband][i % 3];
                let client = Client {
                    dialect,
                    base: base.clone(),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap(),
                    notify_url: notify_url.to_owned(),
                    retries: retries.clone(),
                    unanswered: unanswered.clone(),
                };
                // YabandPay's order ids are digits; the others take any key.
                let tag = format!("{}{b}{i}", seed % 1_000_000 + 1_000_000);
                tags_are_digits(&tag);
                clients.push(tokio::spawn(client_loop(
                    client,
                    Rng::new(rng.next()),
                    tag,
                    stop.clone(),
                    journal.clone(),
                )));
            }
        }
        Load {
            stop,
            journal,
            retries,
            unanswered,
            clients,
        }
    }

    /// Lets every client finish the operation it is at (until answered); returns how many
    /// transactions they started.
    pub async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut transactions = 0;
        for c in self.clients {
            transactions += c.await.unwrap();
        }
        transactions
    }
}

/// The database the gateway writes, read directly (both backends speak the same SQL here).
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A payment's books as stored.
#[derive(Debug, Clone)]
pub struct Books {
    pub tx: String,
    pub amount: i64,
    pub state: String,
    pub refunded: i64,
    pub reserved: i64,
    /// Sum of its succeeded refunds, and of those in flight.
    pub succeeded: i64,
    pub in_flight: i64,
}

const BOOKS: &str = "SELECT p.transaction_no, CAST(p.amount_minor AS BIGINT), p.state, \
     CAST(p.refunded_minor AS BIGINT), CAST(p.reserved_minor AS BIGINT), \
     CAST(COALESCE((SELECT SUM(r.amount_minor) FROM refunds r WHERE r.payment_id = p.id AND r.state = 2), 0) AS BIGINT), \
     CAST(COALESCE((SELECT SUM(r.amount_minor) FROM refunds r WHERE r.payment_id = p.id AND r.state IN (0, 1)), 0) AS BIGINT) \
     FROM payments p";
const REFUNDS: &str = "SELECT r.refund_no, p.transaction_no, CAST(r.amount_minor AS BIGINT), \
     CAST(r.state AS BIGINT) FROM refunds r JOIN payments p ON p.id = r.payment_id";
const CANCELS: &str = "SELECT p.transaction_no, CAST(c.state AS BIGINT) FROM cancels c \
     JOIN payments p ON p.id = c.payment_id";
const OUTBOX: &str = "SELECT p.transaction_no, o.topic, o.snapshot FROM outbox o \
     JOIN payments p ON p.id = o.payment_id";
const UNRESOLVED: &str = "SELECT CAST(\
     (SELECT COUNT(*) FROM payments WHERE state = 'pending') + \
     (SELECT COUNT(*) FROM refunds WHERE state IN (0, 1)) + \
     (SELECT COUNT(*) FROM cancels WHERE state IN (0, 1)) AS BIGINT)";

type BookRow = (String, i64, String, i64, i64, i64, i64);

impl Db {
    pub async fn open(url: &str) -> Db {
        if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(url.trim_start_matches("sqlite://"))
                .read_only(true);
            Db::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .unwrap(),
            )
        } else {
            Db::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .unwrap(),
            )
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    pub async fn books(&self) -> Vec<Books> {
        let rows: Vec<BookRow> = match self {
            Db::Sqlite(p) => sqlx::query_as(BOOKS).fetch_all(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_as(BOOKS).fetch_all(p).await.unwrap(),
        };
        rows.into_iter()
            .map(
                |(tx, amount, state, refunded, reserved, succeeded, in_flight)| Books {
                    tx,
                    amount,
                    state,
                    refunded,
                    reserved,
                    succeeded,
                    in_flight,
                },
            )
            .collect()
    }

    /// refund_no → (transaction, amount, state).
    pub async fn refunds(&self) -> std::collections::HashMap<String, (String, i64, i64)> {
        let rows: Vec<(String, String, i64, i64)> = match self {
            Db::Sqlite(p) => sqlx::query_as(REFUNDS).fetch_all(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_as(REFUNDS).fetch_all(p).await.unwrap(),
        };
        rows.into_iter()
            .map(|(no, tx, amount, state)| (no, (tx, amount, state)))
            .collect()
    }

    pub async fn cancels(&self) -> Vec<(String, i64)> {
        match self {
            Db::Sqlite(p) => sqlx::query_as(CANCELS).fetch_all(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_as(CANCELS).fetch_all(p).await.unwrap(),
        }
    }

    /// (transaction, topic, snapshot) of every notification.
    pub async fn outbox(&self) -> Vec<(String, String, String)> {
        match self {
            Db::Sqlite(p) => sqlx::query_as(OUTBOX).fetch_all(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_as(OUTBOX).fetch_all(p).await.unwrap(),
        }
    }

    /// Payments, refunds and cancels waiting for the wallet's answer.
    pub async fn unresolved(&self) -> i64 {
        match self {
            Db::Sqlite(p) => sqlx::query_scalar(UNRESOLVED).fetch_one(p).await.unwrap(),
            Db::Postgres(p) => sqlx::query_scalar(UNRESOLVED).fetch_one(p).await.unwrap(),
        }
    }
}

/// Checks what the database holds against everything acknowledged; returns how many
/// acknowledged operations were found.
pub async fn verify(db: &Db, acked: &[Acked]) -> usize {
    use std::collections::HashMap;
    let books: HashMap<String, Books> = db
        .books()
        .await
        .into_iter()
        .map(|b| (b.tx.clone(), b))
        .collect();
    for b in books.values() {
        assert_eq!(
            b.refunded, b.succeeded,
            "refunded total ≠ succeeded refunds: {b:?}"
        );
        assert_eq!(
            b.reserved, b.in_flight,
            "reserved ≠ refunds in flight: {b:?}"
        );
        assert!(b.refunded + b.reserved <= b.amount, "over-refunded: {b:?}");
    }
    let refunds = db.refunds().await;
    let cancels = db.cancels().await;
    let outbox = db.outbox().await;
    let notified = |tx: &str, topic: &str, containing: Option<&str>| {
        outbox.iter().any(|(t, top, snap)| {
            t == tx && top == topic && containing.is_none_or(|c| snap.contains(c))
        })
    };
    for a in acked {
        match a {
            Acked::Added { tx, amount, .. } => {
                let b = books
                    .get(tx)
                    .unwrap_or_else(|| panic!("acknowledged {tx} is gone"));
                assert_eq!(b.amount, *amount, "{tx}");
            }
            Acked::Paid { tx, status } => {
                let state = books[tx].state.as_str();
                match status {
                    Status::Succeeded => {
                        assert!(
                            ["paid", "partially_refunded", "refunded", "cancelled"]
                                .contains(&state),
                            "{tx} was answered paid and is {state}"
                        );
                        assert!(
                            notified(tx, "payment.paid", None),
                            "{tx}: no payment.paid notification"
                        );
                    }
                    Status::Failed => assert_eq!(state, "failed", "{tx}"),
                    Status::Pending => {}
                }
            }
            Acked::Refund {
                tx,
                refund_no,
                amount,
                status,
                ..
            } => {
                let (rtx, ramount, rstate) = refunds
                    .get(refund_no)
                    .unwrap_or_else(|| panic!("acknowledged refund {refund_no} is gone"));
                assert_eq!((rtx, ramount), (tx, amount), "{refund_no}");
                match status {
                    Status::Succeeded => {
                        assert_eq!(*rstate, 2, "{refund_no} was answered success");
                        assert!(
                            notified(tx, "refund.succeeded", Some(refund_no)),
                            "{refund_no}: no notification"
                        );
                    }
                    Status::Failed => {
                        assert_eq!(*rstate, 3, "{refund_no} was answered failed");
                        assert!(
                            notified(tx, "refund.failed", Some(refund_no)),
                            "{refund_no}: no notification"
                        );
                    }
                    Status::Pending => {}
                }
            }
            Acked::Cancel { tx, status } => {
                if *status == Status::Succeeded {
                    assert_eq!(books[tx].state, "cancelled", "{tx} was answered cancelled");
                    assert!(
                        cancels.iter().any(|(t, s)| t == tx && *s == 2),
                        "{tx}: no succeeded cancel"
                    );
                    assert!(
                        notified(tx, "cancel.succeeded", None),
                        "{tx}: no cancel notification"
                    );
                }
            }
        }
    }
    // Nothing applied twice: one refund row per refund number is the key's own; a payment has
    // at most one succeeded cancel.
    for b in books.values() {
        let n = cancels
            .iter()
            .filter(|(t, s)| *t == b.tx && *s == 2)
            .count();
        assert!(n <= 1, "{} cancelled {n} times", b.tx);
    }
    acked.len()
}

/// Sends acknowledged requests again with their keys — about half of the refunds (every
/// dialect) and of the Pockyt adds, at most `at_most` — as a merchant retrying would: each
/// must answer as it did the first time (the same refund, in the same state; the same
/// transaction), and nothing may change. Returns how many were sent again.
pub async fn replay(
    base: &str,
    notify_url: &str,
    acked: &[Acked],
    rng: &mut Rng,
    at_most: usize,
    db: &Db,
) -> usize {
    let (payments, refunds) = (db.books().await.len(), db.refunds().await.len());
    let scratch = Journal::default();
    let mut sent = 0;
    for a in acked {
        if sent >= at_most {
            break;
        }
        if !rng.chance(50) {
            continue;
        }
        match a {
            Acked::Refund {
                tx,
                refund_no,
                amount,
                status,
                dialect,
                key,
            } => {
                let again = Client::new(*dialect, base, notify_url)
                    .refund(tx, key, *amount, &scratch)
                    .await;
                assert_eq!(again, *status, "refund {key} answered otherwise again");
                match scratch.all().pop() {
                    Some(Acked::Refund { refund_no: no, .. }) => {
                        assert_eq!(&no, refund_no, "refund {key} sent again made another")
                    }
                    other => panic!("{other:?}"),
                }
            }
            Acked::Added {
                tx,
                amount,
                dialect: Dialect::Pockyt,
                key,
            } => {
                let client = Client::new(Dialect::Pockyt, base, notify_url);
                let decimal = format!("{}.{:02}", amount / 100, amount % 100);
                let again = client
                    .until_answered("add again", || {
                        client.pockyt(
                            "/app-instore/v3/add",
                            vec![
                                ("amount", decimal.clone()),
                                ("currency", "USD".to_string()),
                                ("settleCurrency", "USD".to_string()),
                                ("reference", key.clone()),
                                ("ipnUrl", notify_url.to_string()),
                            ],
                        )
                    })
                    .await;
                assert_eq!(again["result"]["transactionNo"], tx.as_str(), "{again}");
            }
            _ => continue,
        }
        sent += 1;
    }
    assert_eq!(
        (db.books().await.len(), db.refunds().await.len()),
        (payments, refunds),
        "requests sent again made new payments or refunds"
    );
    sent
}

/// Waits until nothing waits for the wallet's answer any more.
pub async fn settled(db: &Db, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = db.unresolved().await;
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} operations still wait for the wallet after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The HTTP wallet simulator, on a port and state file of its own.
pub struct WalletSim {
    pub child: Child,
    pub base: String,
    args: Vec<String>,
}

impl WalletSim {
    fn start(dir: &TempDir, callback_url: &str, faults: &[&str]) -> WalletSim {
        let listen = format!("127.0.0.1:{}", free_port());
        let state = dir.0.join("wallet.json").display().to_string();
        let mut args = vec![
            "wallet-sim",
            "--listen",
            &listen,
            "--state",
            &state,
            "--key",
            WALLET_KEY,
            "--callback-url",
            callback_url,
        ];
        args.extend_from_slice(faults);
        let (child, base) = start_process(&args, dir);
        WalletSim {
            child,
            base,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// SIGKILL, then a start on the same port and state file.
    fn crash_and_restart(&mut self, dir: &TempDir) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, base) = start_process(&args, dir);
        self.child = child;
        self.base = base;
    }

    async fn orders(&self) -> Value {
        reqwest::get(format!("{}/control/orders", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for WalletSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wallet's ledger agrees with the gateway's books: every payment the gateway holds paid
/// the wallet approved, every refund it holds succeeded the wallet approved for that amount,
/// and every refund it holds failed the wallet did not approve.
async fn ledger_agrees(wallet: &WalletSim, db: &Db, acked: &[Acked]) {
    let orders = wallet.orders().await;
    // `{"orders": [{"transactionNo", "payment", "cancel", "refunds": {no: …}}, …]}`
    let order_of = |tx: &str| -> Value {
        orders["orders"]
            .as_array()
            .and_then(|all| all.iter().find(|o| o["transactionNo"] == tx))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let refunds = db.refunds().await;
    let mut checked = 0;
    // The sandbox's sample transactions were made paid at start, not through the wallet.
    let ours: std::collections::HashSet<&str> = acked
        .iter()
        .filter_map(|a| match a {
            Acked::Added { tx, .. } => Some(tx.as_str()),
            _ => None,
        })
        .collect();
    for b in db.books().await {
        if !ours.contains(b.tx.as_str()) {
            continue;
        }
        let order = order_of(&b.tx);
        let payment = order["payment"]["outcome"].as_str();
        match b.state.as_str() {
            "paid" | "partially_refunded" | "refunded" | "cancelled" => {
                assert_eq!(payment, Some("approved"), "{}: {order}", b.tx)
            }
            "failed" => assert_ne!(payment, Some("approved"), "{}: {order}", b.tx),
            _ => {}
        }
        if b.state == "cancelled" {
            assert_eq!(order["cancel"]["outcome"], "approved", "{}: {order}", b.tx);
        }
        let mut approved = 0;
        for (no, (tx, amount, state)) in &refunds {
            if *tx != b.tx {
                continue;
            }
            let w = &order["refunds"][no.as_str()];
            match state {
                2 => {
                    assert_eq!(w["outcome"], "approved", "refund {no}: {order}");
                    assert_eq!(w["amountMinor"].as_i64(), Some(*amount), "refund {no}");
                    approved += amount;
                }
                3 => assert_ne!(w["outcome"], "approved", "refund {no}: {order}"),
                _ => {}
            }
        }
        assert_eq!(approved, b.refunded, "{}", b.tx);
        checked += 1;
    }
    eprintln!("wallet ledger agrees with the gateway's books on {checked} payments");
}

/// Which wallet the gateway runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wallet {
    Sandbox,
    Http,
}

/// The crash run: clients of every dialect under SIGKILL crashes of the gateway.
async fn crash_run(backend: Backend, wallet: Wallet) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = Arc::new(TempDir::new());
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let Some(admin_url) = postgres_admin_url() else {
                return;
            };
            Some(PgDatabase::create(&admin_url).await)
        }
    };
    let database_url = match &pg {
        None => format!("sqlite://{}", dir.0.join("tillgate.db").display()),
        Some(db) => db.url.clone(),
    };
    let mut args = vec![
        "--channel-timeout-ms",
        "300",
        "--janitor-interval-ms",
        "200",
    ];
    let mut gateway = Gateway::new(dir.clone(), &database_url, &[]);
    let callback_url = format!("{}/wallet/v1/callbacks", gateway.base());
    let mut sim = match wallet {
        Wallet::Sandbox => None,
        // A wallet that now and then does not answer in time (the operation stays in flight
        // until the janitor asks) and sends its callbacks twice, late.
        Wallet::Http => Some(WalletSim::start(
            &dir,
            &callback_url,
            &[
                "--timeout-rate",
                "0.05",
                "--timeout-hold-ms",
                "1000",
                "--duplicate-callback-rate",
                "0.2",
                "--late-callback-ms",
                "200",
                "--seed",
                &(seed % 1_000_000).to_string(),
            ],
        )),
    };
    let sim_base = sim.as_ref().map(|s| s.base.clone());
    if let Some(base) = &sim_base {
        args.extend(["--channel", base, "--channel-key", WALLET_KEY]);
    }
    gateway.args = args.iter().map(|a| a.to_string()).collect();
    gateway.start();
    let receiver = Receiver::start().await;

    let load = Load::start(&[gateway.base()], CLIENTS, &mut rng, seed, &receiver.url);
    let journal = load.journal.clone();

    let db = Db::open(&database_url).await;
    let cycles = cycles();
    let mut wallet_crashes = 0;
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.range(400, 1500))).await;
        gateway.crash();
        let acked = journal.all();
        // Every other time the HTTP wallet goes down too (it keeps its ledger in a file).
        if let Some(sim) = sim.as_mut().filter(|_| rng.chance(50)) {
            sim.crash_and_restart(&dir);
            wallet_crashes += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        gateway.start();
        let found = verify(&db, &acked).await;
        eprintln!(
            "crash {}/{cycles}: {found} acknowledged operations found after restart",
            cycle + 1
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (retries, unanswered) = (load.retries.clone(), load.unanswered.clone());
    let transactions = load.finish().await;
    settled(&db, Duration::from_secs(30)).await;
    let acked = journal.all();
    let found = verify(&db, &acked).await;
    if let Some(sim) = &sim {
        ledger_agrees(sim, &db, &acked).await;
    }
    let replayed = replay(&gateway.base(), &receiver.url, &acked, &mut rng, 200, &db).await;
    eprintln!(
        "{backend:?} with the {wallet:?} wallet: {cycles} crashes survived ({wallet_crashes} of the wallet too), \
         {transactions} transactions, \
         {found} acknowledged operations all found; requests sent again: {} after no answer, \
         {} after a retryable answer; {replayed} acknowledged requests sent again at the end \
         answered as the first time",
        unanswered.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed)
    );
    assert!(found > 0);
    db.close().await;
    gateway.crash();
    drop(pg);
}

fn tags_are_digits(tag: &str) {
    assert!(
        tag.bytes().all(|b| b.is_ascii_digit()) && tag.len() < 15,
        "{tag}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_operations_survive_crashes_on_sqlite_with_the_sandbox_wallet() {
    crash_run(Backend::Sqlite, Wallet::Sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_operations_survive_crashes_on_sqlite_with_the_http_wallet() {
    crash_run(Backend::Sqlite, Wallet::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn acknowledged_operations_survive_crashes_on_postgres_with_the_sandbox_wallet() {
    crash_run(Backend::Postgres, Wallet::Sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn acknowledged_operations_survive_crashes_on_postgres_with_the_http_wallet() {
    crash_run(Backend::Postgres, Wallet::Http).await;
}

/// The gap this test was written for: a refund in flight when the gateway crashed stayed
/// "in progress" for ever on the sandbox wallet, which answered the janitor "unknown". The
/// refund is left in flight by an HTTP wallet that never answers it; the gateway is killed and
/// comes back with the sandbox wallet, whose janitor must settle it by the sandbox's rules.
#[tokio::test]
async fn a_refund_in_flight_at_a_crash_is_settled_by_the_janitor_on_the_sandbox() {
    let dir = Arc::new(TempDir::new());
    let database_url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let mut gateway = Gateway::new(dir.clone(), &database_url, &[]);
    let sim = WalletSim::start(
        &dir,
        &format!("{}/wallet/v1/callbacks", gateway.base()),
        &[],
    );
    gateway.args = [
        "--channel",
        &sim.base,
        "--channel-key",
        WALLET_KEY,
        "--channel-timeout-ms",
        "300",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    gateway.start();
    let pos = Pos {
        base: gateway.base(),
        merchant_no: MERCHANT_NO.into(),
        store_no: STORE_NO.into(),
        token: TOKEN.into(),
        client: reqwest::Client::new(),
    };
    let tx = pos.paid(&reference("crash-refund"), "30.00").await;
    // The wallet stops answering: the refund's outcome is unknown, its amount reserved.
    reqwest::Client::new()
        .post(format!("{}/control/faults", sim.base))
        .json(&json!({ "timeoutRate": 1.0 }))
        .send()
        .await
        .unwrap();
    let declined = pos.refund(&tx, "1.61", Some("in-flight-61")).await;
    let approved = pos.refund(&tx, "2.00", Some("in-flight-200")).await;
    for r in [&declined, &approved] {
        assert_eq!(r["result"]["status"], "pending", "{r}");
    }
    gateway.crash();
    // Back with the sandbox wallet, its janitor asking at once.
    gateway.args = [
        "--channel-timeout-ms",
        "100",
        "--janitor-interval-ms",
        "100",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    gateway.start();
    // The old process's connections died with it.
    let pos = Pos {
        client: reqwest::Client::new(),
        ..pos
    };
    // The janitor asks once the call's time-out has passed twice; on a loaded machine that
    // can take a while, and the loop ends as soon as both are settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = loop {
        let q = pos.query(&tx).await;
        let refunds = q["result"]["refunds"].as_array().unwrap();
        if refunds.iter().all(|r| r["status"] != "pending") || Instant::now() > deadline {
            break q;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = |key: &str| {
        q["result"]["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["refundReference"] == key)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status("in-flight-61"), Some(json!("failed")), "{q}");
    assert_eq!(status("in-flight-200"), Some(json!("success")), "{q}");
    assert_eq!(q["result"]["refundAmount"], "2.00", "{q}");
    let db = Db::open(&database_url).await;
    verify(&db, &[]).await;
    assert_eq!(db.unresolved().await, 0);
    db.close().await;
}

/// A free port below the kernel's range of ephemeral ports (32768 and up), so that no other
/// test's listener on port 0 takes it while the gateway is down between a crash and its
/// restart.
fn restartable_port() -> u16 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    for _ in 0..1000 {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = 20_000 + (n >> 8) as u16 % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}
