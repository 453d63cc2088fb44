//! Test harness: each test gets its own `tillgate serve` process on port 0 with a fresh database,
//! and talks to it over HTTP like a merchant's POS would.

use md5::{Digest, Md5};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const MERCHANT_NO: &str = "200043";
pub const STORE_NO: &str = "303660";
pub const TOKEN: &str = "359c05eb811c7c8576f4a8a277dc6f6b";

/// A wallet for production-mode tests that move no money: production refuses to start without
/// one. Nothing listens at the address.
pub const PRODUCTION_WALLET: [&str; 4] = [
    "--channel",
    "http://127.0.0.1:9",
    "--channel-key",
    "00112233445566778899aabbccddeeff",
];

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tillgate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running gateway process.
pub struct TestApp {
    pub base: String,
    pub child: Child,
    pub dir: std::sync::Arc<TempDir>,
    pub database_url: String,
    pub client: reqwest::Client,
    /// Drops the PostgreSQL test database after the process is gone.
    pub database: Option<std::sync::Arc<PgDatabase>>,
}

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub use tillgate_testkit::pg::{admin, postgres_admin_url, PgDatabase};

/// Starts `tillgate serve` on a fresh database of `backend`; `None` when PostgreSQL is not
/// configured outside CI.
pub async fn spawn_app_on(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app_on`], with extra `serve` arguments.
pub async fn spawn_app_with(backend: Backend, extra: &[&str]) -> Option<TestApp> {
    let dir = std::sync::Arc::new(TempDir::new());
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
            Some(spawn_on(dir, &url, extra).await)
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url()?;
            let db = std::sync::Arc::new(PgDatabase::create(&admin_url).await);
            let mut app = spawn_on(dir, &db.url.clone(), extra).await;
            app.database = Some(db);
            Some(app)
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The database guard (if any) drops after this, once the process is gone.
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tillgate")
}

/// Starts `tillgate serve` on port 0 with a fresh SQLite database in sandbox mode.
pub async fn spawn_app() -> TestApp {
    let dir = std::sync::Arc::new(TempDir::new());
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    spawn_on(dir, &url, &[]).await
}

/// Starts `tillgate serve` on an existing database directory with extra arguments.
pub async fn spawn_on(dir: std::sync::Arc<TempDir>, database_url: &str, extra: &[&str]) -> TestApp {
    let (child, base) = start(&dir, database_url, extra).expect("server did not start");
    TestApp {
        base,
        child,
        dir,
        database_url: database_url.to_owned(),
        client: reqwest::Client::new(),
        database: None,
    }
}

/// Starts the server; on failure returns what it wrote to stderr.
pub fn start(dir: &TempDir, database_url: &str, extra: &[&str]) -> Result<(Child, String), String> {
    start_limited(dir, database_url, extra, None)
}

/// Like [`start`]; with `nofile`, the server process may hold at most that many descriptors
/// (the shell sets the limit, then becomes the server).
pub fn start_limited(
    dir: &TempDir,
    database_url: &str,
    extra: &[&str],
    nofile: Option<u32>,
) -> Result<(Child, String), String> {
    let listen = if extra.contains(&"--listen") {
        vec![]
    } else {
        vec!["--listen", "127.0.0.1:0"]
    };
    let mut command = match nofile {
        None => Command::new(binary()),
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                binary(),
            ]);
            sh
        }
    };
    let mut child = command
        .arg("serve")
        .args(listen)
        .args(["--database-url", database_url])
        .args(extra)
        .current_dir(&dir.0)
        .env("RUST_LOG", "warn")
        .env_remove("TILLGATE_MASTER_KEY")
        .env_remove("TILLGATE_MASTER_KEY_FILE")
        .env_remove("TILLGATE_MODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run tillgate");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => Ok((child, base)),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// Writes a master key file of 32 bytes `byte` (two hex digits) into `dir`, readable by its
/// owner only; returns its path.
pub fn key_file(dir: &TempDir, byte: &str) -> String {
    let path = dir.0.join(format!("master-{byte}.key"));
    std::fs::write(&path, format!("{}\n", byte.repeat(32))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.display().to_string()
}

/// A free port on loopback (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command that prints `… listening on http://HOST:PORT`; returns it and the address.
pub fn start_process(args: &[&str], dir: &TempDir) -> (Child, String) {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(&dir.0)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run tillgate");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on ") {
                let _ = tx.send(line[i + "listening on ".len()..].to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{:?} did not start: {}",
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Pockyt's verifySign, written here independently of the gateway's implementation.
pub fn verify_sign(params: &[(&str, &str)], token: &str) -> String {
    let mut sorted: Vec<_> = params
        .iter()
        .filter(|(k, v)| *k != "verifySign" && !v.is_empty())
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut text: String = sorted.iter().map(|(k, v)| format!("{k}={v}&")).collect();
    text.push_str(&hex::encode(Md5::digest(token.as_bytes())));
    hex::encode(Md5::digest(text.as_bytes()))
}

/// A merchant's POS speaking Pockyt v3 with one store's credentials.
#[derive(Clone)]
pub struct Pos {
    pub base: String,
    pub merchant_no: String,
    pub store_no: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl TestApp {
    /// The sandbox merchant's POS for store 303660.
    pub fn pos(&self) -> Pos {
        self.pos_for(MERCHANT_NO, STORE_NO, TOKEN)
    }

    pub fn pos_for(&self, merchant_no: &str, store_no: &str, token: &str) -> Pos {
        Pos {
            base: self.base.clone(),
            merchant_no: merchant_no.into(),
            store_no: store_no.into(),
            token: token.into(),
            client: self.client.clone(),
        }
    }

    /// Sends a raw body and returns the HTTP status and the JSON answer.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, json)
    }

    /// The wallet's late answer through the sandbox control endpoint.
    pub async fn settle(&self, transaction_no: &str, outcome: &str) -> (u16, Value) {
        let body = serde_json::json!({ "outcome": outcome })
            .to_string()
            .into_bytes();
        self.raw(
            reqwest::Method::POST,
            &format!("/sandbox/v1/payments/{transaction_no}/settle"),
            Some("application/json"),
            body,
        )
        .await
    }

    /// The admin API's view of a transaction's notifications.
    pub async fn notifications_of(&self, transaction_no: &str) -> Vec<Value> {
        let (status, v) = self
            .raw(
                reqwest::Method::GET,
                &format!("/admin/v1/notifications?transactionNo={transaction_no}"),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["notifications"].as_array().unwrap().clone()
    }

    /// Waits until the transaction's notification number `index` reaches `status`.
    pub async fn wait_for_notification(
        &self,
        transaction_no: &str,
        index: usize,
        status: &str,
        secs: u64,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let all = self.notifications_of(transaction_no).await;
            if let Some(n) = all.get(index) {
                if n["status"] == status || std::time::Instant::now() > deadline {
                    return n.clone();
                }
            } else if std::time::Instant::now() > deadline {
                panic!("no notification {index} of {transaction_no}: {all:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server with SIGTERM and waits; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().success()
    }
}

impl Pos {
    pub fn signed(&self, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all: Vec<(&str, &str)> = vec![
            ("merchantNo", &self.merchant_no),
            ("storeNo", &self.store_no),
        ];
        all.extend_from_slice(params);
        let sign = verify_sign(&all, &self.token);
        let mut out: Vec<(String, String)> = all
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.push(("verifySign".into(), sign));
        out
    }

    /// Signs `params` (plus merchantNo and storeNo) and POSTs them as JSON.
    pub async fn call(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let body: serde_json::Map<String, Value> = self
            .signed(params)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "HTTP status of {path}");
        resp.json().await.unwrap()
    }

    /// Signs `params` and POSTs them form-urlencoded, as the PHP and JavaScript SDKs do.
    pub async fn call_form(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded_pairs(&self.signed(params)))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }

    pub async fn add(&self, reference: &str, amount: &str) -> Value {
        self.call(
            "/app-instore/v3/add",
            &[
                ("amount", amount),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", reference),
            ],
        )
        .await
    }

    pub async fn pay(&self, transaction_no: &str) -> Value {
        self.call(
            "/app-instore/v3/pay",
            &[
                ("transactionNo", transaction_no),
                ("paymentBarcode", "281234567890123456"),
                ("vendor", "alipay"),
            ],
        )
        .await
    }

    /// Adds and pays a transaction; returns its transactionNo.
    pub async fn paid(&self, reference: &str, amount: &str) -> String {
        let added = self.add(reference, amount).await;
        assert_eq!(added["ret_code"], "000100", "{added}");
        let no = added["result"]["transactionNo"]
            .as_str()
            .unwrap()
            .to_owned();
        let paid = self.pay(&no).await;
        assert_eq!(paid["result"]["transactionStatus"], "success", "{paid}");
        no
    }

    pub async fn refund(
        &self,
        transaction_no: &str,
        amount: &str,
        refund_reference: Option<&str>,
    ) -> Value {
        let mut p = vec![
            ("transactionNo", transaction_no),
            ("refundAmount", amount),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
        ];
        if let Some(r) = refund_reference {
            p.push(("refundReference", r));
        }
        self.call("/app-data-search/v3/refund", &p).await
    }

    pub async fn query(&self, transaction_no: &str) -> Value {
        self.call(
            "/app-data-search/v3/tran-query",
            &[("transactionNo", transaction_no)],
        )
        .await
    }

    pub async fn cancel(&self, transaction_no: &str) -> Value {
        self.call(
            "/app-data-search/v3/cancel",
            &[("transactionNo", transaction_no)],
        )
        .await
    }
}

pub fn serde_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A unique merchant reference for a test.
pub fn reference(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the notification receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: &'static str,
    pub delay_ms: u64,
}

impl Answer {
    pub fn ok(body: &'static str) -> Answer {
        Answer {
            status: 200,
            body,
            delay_ms: 0,
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub content_type: String,
    pub form: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct ReceiverState {
    script: std::collections::VecDeque<Answer>,
    received: Vec<Received>,
}

/// A real HTTP server on a loopback port that records notifications and answers from a
/// script (then `success`).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let handler =
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let answer = {
                        let mut s = shared.lock().unwrap();
                        s.received.push(Received {
                            at: std::time::Instant::now(),
                            path: uri.path().to_owned(),
                            content_type: headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned(),
                            form: url_decode_form(&body),
                            body: body.to_vec(),
                        });
                        s.script.pop_front().unwrap_or(Answer::ok("success"))
                    };
                    if answer.delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(answer.delay_ms)).await;
                    }
                    (
                        axum::http::StatusCode::from_u16(answer.status).unwrap(),
                        answer.body,
                    )
                }
            };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state }
    }

    /// Answers the next requests with `answers`, in order.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests arrived (at most `secs` seconds).
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Decodes an application/x-www-form-urlencoded body, keeping order.
pub fn url_decode_form(body: &[u8]) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    std::str::from_utf8(body)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

/// Runs a `tillgate` command against the app's database (its arguments, then
/// `--database-url`), with `stdin` written to it when given.
pub fn tillgate_command(app: &TestApp, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .args(["--database-url", &app.database_url])
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}
