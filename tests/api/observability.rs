//! What operators see of a running gateway, seen from outside: readiness that follows the
//! database, metrics that count a merchant's requests by dialect, endpoint and code, health and
//! metrics closed in production without the admin token (or moved to a listener of their own),
//! and one log line per request, in text or JSON, without colour codes or secrets.

use crate::helpers::{binary, TempDir, TestApp, MERCHANT_NO, PRODUCTION_WALLET, TOKEN};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The admin token of the production stories.
const ADMIN_TOKEN: &str = "observability-admin-token";

/// A gateway process whose standard error is kept, and the address of each listener.
struct Server {
    child: Child,
    base: String,
    /// The listener of health and metrics, when it has one of its own.
    observability: Option<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `tillgate serve` on a fresh SQLite database with `args`, logging at `log_level`.
    fn start(args: &[&str], log_level: &str) -> Server {
        let dir = TempDir::new();
        let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
            .args(args)
            .current_dir(&dir.0)
            .env("RUST_LOG", log_level)
            .env("TILLGATE_MASTER_KEY", "11".repeat(32))
            .env_remove("TILLGATE_MODE")
            .env_remove("TILLGATE_LOG_FORMAT")
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run tillgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                kept.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut observability = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(at) = line.strip_prefix("observability listening on ") {
                        observability = Some(at.to_owned());
                    } else if let Some(base) = line.strip_prefix("listening on ") {
                        return Server {
                            child,
                            base: base.to_owned(),
                            observability,
                            stderr,
                            _dir: dir,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tillgate did not start: {}",
                        String::from_utf8_lossy(&stderr.lock().unwrap())
                    );
                }
            }
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until a line of standard error contains `needle`, and answers it. The line is
    /// written before the answer is sent, so only the pipe's reader may still be behind.
    async fn log_line(&self, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no log line with {needle:?} in:\n{}", self.stderr());
    }

    /// The sandbox merchant's POS on this server.
    fn pos(&self) -> crate::helpers::Pos {
        crate::helpers::Pos {
            base: self.base.clone(),
            merchant_no: MERCHANT_NO.into(),
            store_no: crate::helpers::STORE_NO.into(),
            token: TOKEN.into(),
            client: reqwest::Client::new(),
        }
    }
}

/// GETs `base + path`, with the admin token when given; answers the status and the body.
async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Polls `/readyz` until it answers `status` (a bounded number of times); answers the body.
async fn readyz_until(app: &TestApp, status: u16) -> Value {
    let mut last = (0, String::new());
    for _ in 0..150 {
        last = get(&app.base, "/readyz", None).await;
        if last.0 == status {
            return serde_json::from_str(&last.1).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}; last {last:?}");
}

/// Readiness goes through the database: while it cannot be written (SQLite: another process
/// holds its write lock; PostgreSQL: the database takes no connections and the gateway's were
/// ended) `/readyz` answers 503 with the reason, and 200 again once the database is back.
/// `/healthz` (alive) answers all along.
async fn readiness_follows_the_database(app: TestApp) {
    let (status, body) = get(&app.base, "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));

    enum Held {
        Sqlite(sqlx::SqliteConnection),
        Postgres,
    }
    let held = match &app.database {
        None => {
            use sqlx::ConnectOptions;
            let mut side = app
                .database_url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::Executor::execute(&mut side, "BEGIN EXCLUSIVE")
                .await
                .unwrap();
            Held::Sqlite(side)
        }
        Some(db) => {
            crate::helpers::admin(
                &db.admin_url,
                &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", db.name),
            )
            .await;
            crate::helpers::admin(
                &db.admin_url,
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    db.name
                ),
            )
            .await;
            Held::Postgres
        }
    };
    let (status, body) = get(&app.base, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    let reason = body["reason"].as_str().unwrap_or_default();
    match held {
        Held::Sqlite(_) => assert!(reason.contains("writer"), "{reason}"),
        Held::Postgres => assert!(reason.contains("database"), "{reason}"),
    }
    let (status, alive) = get(&app.base, "/healthz", None).await;
    assert_eq!(
        (status, alive.as_str()),
        (200, "ok"),
        "alive while not ready"
    );

    match held {
        Held::Sqlite(mut side) => {
            sqlx::Executor::execute(&mut side, "ROLLBACK")
                .await
                .unwrap();
        }
        Held::Postgres => {
            let db = app.database.as_ref().unwrap();
            crate::helpers::admin(
                &db.admin_url,
                &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", db.name),
            )
            .await;
        }
    }
    let again = readyz_until(&app, 200).await;
    assert_eq!(again["ready"], true);
}

/// A Pockyt add and refund (and a refused refund) are counted by dialect, endpoint and
/// ret_code, timed in a histogram, and so are the wallet's calls; the store's commits grow.
async fn metrics_count_requests_by_dialect_endpoint_and_code(app: TestApp) {
    let (status, before) = get(&app.base, "/metrics", None).await;
    assert_eq!(status, 200, "{before}");
    let commits_before = sample(&before, "tillgate_store_commits_total", &[]).unwrap();

    let pos = app.pos();
    let no = pos
        .paid(&crate::helpers::reference("metrics"), "3.00")
        .await;
    let refunded = pos.refund(&no, "1.00", Some("metrics-refund-1")).await;
    assert_eq!(refunded["ret_code"], "000100", "{refunded}");
    let refused = pos.refund(&no, "9.00", Some("metrics-refund-2")).await;
    assert_eq!(refused["ret_code"], "000040", "{refused}");

    let (status, text) = get(&app.base, "/metrics", None).await;
    assert_eq!(status, 200);
    let requests = |endpoint: &str, code: &str| {
        sample(
            &text,
            "tillgate_http_requests_total",
            &[
                ("dialect", "pockyt"),
                ("endpoint", endpoint),
                ("code", code),
            ],
        )
    };
    assert_eq!(
        requests("/app-instore/v3/add", "000100"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests("/app-instore/v3/pay", "000100"), Some(1.0));
    assert_eq!(requests("/app-data-search/v3/refund", "000100"), Some(1.0));
    assert_eq!(requests("/app-data-search/v3/refund", "000040"), Some(1.0));
    let add = [("dialect", "pockyt"), ("endpoint", "/app-instore/v3/add")];
    assert_eq!(
        sample(&text, "tillgate_http_request_duration_seconds_count", &add),
        Some(1.0)
    );
    let mut infinite = add.to_vec();
    infinite.push(("le", "+Inf"));
    assert_eq!(
        sample(
            &text,
            "tillgate_http_request_duration_seconds_bucket",
            &infinite
        ),
        Some(1.0)
    );
    let wallet = |operation: &str| {
        sample(
            &text,
            "tillgate_wallet_calls_total",
            &[("operation", operation), ("outcome", "approved")],
        )
    };
    assert_eq!((wallet("pay"), wallet("refund")), (Some(1.0), Some(1.0)));

    let commits = sample(&text, "tillgate_store_commits_total", &[]).unwrap();
    let operations = sample(&text, "tillgate_store_operations_total", &[]).unwrap();
    assert!(commits > commits_before, "{commits_before} -> {commits}");
    assert!(operations >= commits);
    assert_eq!(
        sample(&text, "tillgate_unresolved_operations", &[]),
        Some(0.0)
    );
    assert!(sample(&text, "tillgate_notifications_pending", &[]).is_some());
    assert_eq!(sample(&text, "tillgate_terminals_online", &[]), Some(0.0));
    // Both stores commit in batches (SQLite's writer, PostgreSQL's writers) and count them.
    let batches = sample(&text, "tillgate_store_batch_operations_count", &[]);
    assert!(batches.is_some_and(|n| n >= 1.0), "{text}");
}

on_both_backends!(
    readiness_follows_the_database,
    metrics_count_requests_by_dialect_endpoint_and_code,
);

/// In production, health and metrics answer only with the admin token on the gateway's own
/// listener; with a listener of their own they leave the gateway's and are open there; with
/// neither they are not served.
#[tokio::test]
async fn health_and_metrics_are_closed_in_production_without_the_admin_token() {
    let production = [
        &["--mode", "production", "--admin-token", ADMIN_TOKEN][..],
        &PRODUCTION_WALLET,
    ]
    .concat();
    let server = Server::start(&production, "warn");
    for path in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(get(&server.base, path, None).await.0, 401, "{path}");
        assert_eq!(
            get(&server.base, path, Some("wrong")).await.0,
            401,
            "{path}"
        );
    }
    let (status, text) = get(&server.base, "/metrics", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        sample(&text, "tillgate_store_commits_total", &[]).is_some(),
        "{text}"
    );
    let (status, ready) = get(&server.base, "/readyz", Some(ADMIN_TOKEN)).await;
    assert_eq!((status, ready.as_str()), (200, r#"{"ready":true}"#));
    drop(server);

    let own = [&production[..], &["--observability-listen", "127.0.0.1:0"]].concat();
    let server = Server::start(&own, "warn");
    let observability = server.observability.clone().expect("its own listener");
    assert_eq!(
        get(&server.base, "/metrics", Some(ADMIN_TOKEN)).await.0,
        404,
        "not on the gateway's listener"
    );
    let (status, text) = get(&observability, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(sample(&text, "tillgate_store_commits_total", &[]).is_some());
    assert_eq!(get(&observability, "/readyz", None).await.0, 200);
    assert_eq!(
        get(&observability, "/healthz", None).await,
        (200, "ok".to_owned())
    );
    drop(server);

    let neither = [&["--mode", "production"][..], &PRODUCTION_WALLET].concat();
    let server = Server::start(&neither, "warn");
    assert_eq!(get(&server.base, "/metrics", None).await.0, 404);
    assert_eq!(get(&server.base, "/readyz", None).await.0, 404);
}

/// Each request writes one line at info with its id (the client's, echoed in X-Request-Id, or
/// a new one), dialect, endpoint, merchant, transaction and code; standard error, being no
/// terminal, holds no escape byte; neither the store's token nor the signature is logged.
#[tokio::test]
async fn a_request_writes_one_log_line_with_its_id_dialect_merchant_and_code() {
    let server = Server::start(&[], "info");
    let pos = server.pos();
    let params = [
        ("amount", "2.00"),
        ("currency", "USD"),
        ("settleCurrency", "USD"),
        ("reference", "log-line-1"),
    ];
    let mut all = vec![("merchantNo", MERCHANT_NO), ("storeNo", "303660")];
    all.extend_from_slice(&params);
    let sign = crate::helpers::verify_sign(&all, TOKEN);
    let mut body: serde_json::Map<String, Value> = all
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    body.insert("verifySign".into(), Value::String(sign.clone()));
    let response = reqwest::Client::new()
        .post(format!("{}/app-instore/v3/add", server.base))
        .header("x-request-id", "pos-7.request:1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "pos-7.request:1");
    let added: Value = response.json().await.unwrap();
    assert_eq!(added["ret_code"], "000100", "{added}");
    let no = added["result"]["transactionNo"].as_str().unwrap();

    let line = server.log_line("request_id=\"pos-7.request:1\"").await;
    for field in [
        " INFO ".to_owned(),
        "dialect=\"pockyt\"".into(),
        "endpoint=\"/app-instore/v3/add\"".into(),
        format!("merchant=\"{MERCHANT_NO}\""),
        format!("transaction_no=\"{no}\""),
        "code=\"000100\"".into(),
        "status=200".into(),
        "latency_us=".into(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }

    // Without an id of the client's, the gateway makes one and sends it back.
    let queried = reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    let made = queried.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 16, "{made}");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    let refused = pos.query("999999999999999999").await;
    assert_eq!(refused["ret_code"], "000021", "{refused}");
    let line = server
        .log_line("endpoint=\"/app-data-search/v3/tran-query\"")
        .await;
    assert!(
        line.contains("code=\"000021\"") && line.contains("merchant="),
        "{line}"
    );

    let log = server.stderr();
    assert!(
        !log.contains('\u{1b}'),
        "escape bytes in a log that is no terminal"
    );
    assert!(!log.contains(TOKEN), "the store's token was logged");
    assert!(!log.contains(&sign), "a signature was logged");
}

/// With `--log-format json` every line of standard error is a JSON object, and a request's
/// line carries its fields at the top level.
#[tokio::test]
async fn json_log_lines_parse_as_json_objects_with_the_request_fields() {
    let server = Server::start(&["--log-format", "json"], "info");
    let no = server
        .pos()
        .paid(&crate::helpers::reference("json-log"), "4.00")
        .await;
    let line = server
        .log_line(&format!("\"transaction_no\":\"{no}\""))
        .await;
    let request: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["message"], "request");
    assert_eq!(request["dialect"], "pockyt");
    assert_eq!(request["merchant"], MERCHANT_NO);
    assert_eq!(request["code"], "000100");
    assert!(request["request_id"]
        .as_str()
        .is_some_and(|id| id.len() == 16));
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
    assert!(!log.contains('\u{1b}'));
}

#[test]
fn the_sample_reader_matches_labels_exactly() {
    let text = "# TYPE x counter\nx{a=\"1\",b=\"2\"} 3\nx{a=\"10\"} 4\ny 5\n";
    assert_eq!(sample(text, "x", &[("a", "1")]), Some(3.0));
    assert_eq!(sample(text, "x", &[("a", "10")]), Some(4.0));
    assert_eq!(sample(text, "x", &[("b", "3")]), None);
    assert_eq!(sample(text, "y", &[]), Some(5.0));
}
