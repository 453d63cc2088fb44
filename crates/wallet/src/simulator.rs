//! The wallet simulator: a standalone wallet server speaking the wallet protocol, with the
//! sandbox's amount rules, faults drawn from a seeded random generator, a state file that
//! survives crashes, and a control endpoint that tells what it did.
//!
//! Faults (flags of `tillgate wallet-sim`, or `POST /control/faults` at run time):
//!
//! - `latency_ms`: every answer leaves this much later (the operation is performed on arrival).
//! - `timeout_rate`: this share of requests is performed and recorded, then the connection is
//!   held for `timeout_hold_ms` (longer than any sensible client time-out) and closed without
//!   an answer.
//! - `drop_rate`: this share of requests is performed and recorded, then the connection is
//!   closed at once without an answer.
//! - `duplicate_callback_rate`: this share of callbacks is sent twice.
//! - `late_callback_ms`: how long a `pending` payment (amount ending 52) or cancel (ending 53)
//!   waits before it is approved and called back.
//!
//! Draws happen in the order requests and callbacks arrive, from a generator seeded with
//! `seed`, so one run of a single-client test is reproducible.
//!
//! The state file is rewritten after every change (temporary file, fsync, rename, fsync of the
//! directory) and read at start: after a crash the simulator answers queries truthfully, keeps
//! every pending timer and sends every callback it still owes.
//!
//! Control endpoint (no signature; refused with 403 unless the peer is on loopback):
//!
//! - `GET /control/orders` — every order: each operation with its amount, outcome, request
//!   count and times, and the callbacks sent for it; plus callbacks for unknown orders.
//! - `GET /control/orders/{transactionNo}` — one order.
//! - `GET /control/faults`, `POST /control/faults` — read or change fault settings (any subset
//!   of `latencyMs`, `timeoutRate`, `dropRate`, `duplicateCallbackRate`, `lateCallbackMs`,
//!   `timeoutHoldMs`).
//! - `POST /control/pay/{transactionNo}` — the customer pays a pending payment (a QR code, or
//!   an amount ending 52 before its timer); body `{"outcome": "declined"}` plays a refusal.
//! - `POST /control/callback` — sends any callback, even a wrong one: the callback's JSON
//!   fields, plus `"corruptSignature": true` to sign it with the wrong key.
//! - `POST /control/callbacks/{id}/resend` — sends a recorded callback again.
//! - `GET /control/statement`, `POST /control/statement` — the discrepancies injected into the
//!   daily statement (`POST /v1/statement`), or one more: `{"kind": "phantomRefund",
//!   "transactionNo", "refundNo"?, "amountMinor", "currency"}`, `{"kind": "missing" |
//!   "amount" | "currency" | "outcome" | "otherDay", "operation": "pay" | "refund" | "cancel",
//!   "transactionNo", "refundNo"?, "amountMinor"? | "currency"? | "outcome"? | "days"?}`. The
//!   operations themselves stay as they were; only the statement shows them otherwise.

use crate::ledger::{
    CallbackPolicy, CallbackRecord, CallbackStatus, Effects, Ledger, OpKind, Order, Refusal,
    StatementEdit, Timer, LEDGER_VERSION,
};
use crate::protocol::{
    self, Answer, Callback, CancelRequest, ErrorBody, Outcome, PayRequest, ProtocolError,
    QueryRequest, RefundRequest, MAX_BODY_BYTES, MIN_KEY_BYTES, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tillgate_core::Secret;
use tillgate_domain::{Clock, SystemClock};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// The most connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 1024;
/// The most callbacks in flight at once.
const MAX_CALLBACKS_IN_FLIGHT: usize = 16;
/// The longest latency, hold or late-callback delay accepted, so a typo cannot park the
/// simulator for days.
const MAX_DELAY_MS: u64 = 3_600_000;
/// How long a shutdown waits for connections and tasks before it stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `tillgate wallet-sim` is started with.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The key shared with the gateway.
    pub key: Secret<Vec<u8>>,
    /// Where the simulator keeps what it did.
    pub state_file: PathBuf,
    /// The gateway's callback endpoint; without it no callbacks are sent.
    pub callback_url: Option<String>,
    pub latency_ms: u64,
    pub timeout_rate: f64,
    pub drop_rate: f64,
    pub duplicate_callback_rate: f64,
    pub late_callback_ms: u64,
    /// How long the time-out fault holds a connection before closing it.
    pub timeout_hold_ms: u64,
    pub seed: u64,
    /// Attempts per callback before it is kept as failed.
    pub callback_attempts_max: u32,
    /// The pause after the first failed attempt; it doubles after each further one.
    pub callback_retry_base_ms: u64,
    /// How long one callback POST may take.
    pub callback_timeout_ms: u64,
    /// Where the simulator's time comes from (the system clock unless a test sets another).
    pub clock: Arc<dyn Clock>,
}

impl SimulatorConfig {
    /// A simulator without faults: pending results are called back after one second, a
    /// failed callback is tried five times over about eight seconds.
    pub fn new(listen: SocketAddr, key: Secret<Vec<u8>>, state_file: PathBuf) -> SimulatorConfig {
        SimulatorConfig {
            listen,
            key,
            state_file,
            callback_url: None,
            latency_ms: 0,
            timeout_rate: 0.0,
            drop_rate: 0.0,
            duplicate_callback_rate: 0.0,
            late_callback_ms: 1000,
            timeout_hold_ms: 30_000,
            seed: 0,
            callback_attempts_max: 5,
            callback_retry_base_ms: 500,
            callback_timeout_ms: 5000,
            clock: Arc::new(SystemClock),
        }
    }

    fn faults(&self) -> Faults {
        Faults {
            latency_ms: self.latency_ms,
            timeout_rate: self.timeout_rate,
            drop_rate: self.drop_rate,
            duplicate_callback_rate: self.duplicate_callback_rate,
            late_callback_ms: self.late_callback_ms,
            timeout_hold_ms: self.timeout_hold_ms,
        }
    }
}

/// The fault settings in force; `POST /control/faults` changes them while running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    pub latency_ms: u64,
    pub timeout_rate: f64,
    pub drop_rate: f64,
    pub duplicate_callback_rate: f64,
    pub late_callback_ms: u64,
    pub timeout_hold_ms: u64,
}

impl Faults {
    /// Rates are between 0 and 1, delays at most an hour.
    pub fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("timeoutRate", self.timeout_rate),
            ("dropRate", self.drop_rate),
            ("duplicateCallbackRate", self.duplicate_callback_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        for (name, ms) in [
            ("latencyMs", self.latency_ms),
            ("lateCallbackMs", self.late_callback_ms),
            ("timeoutHoldMs", self.timeout_hold_ms),
        ] {
            if ms > MAX_DELAY_MS {
                return Err(format!("{name} must be at most {MAX_DELAY_MS}"));
            }
        }
        Ok(())
    }
}

/// A change of some fault settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsPatch {
    latency_ms: Option<u64>,
    timeout_rate: Option<f64>,
    drop_rate: Option<f64>,
    duplicate_callback_rate: Option<f64>,
    late_callback_ms: Option<u64>,
    timeout_hold_ms: Option<u64>,
}

/// What the simulator shares between its connections and tasks.
struct Shared {
    key: Secret<Vec<u8>>,
    state_file: PathBuf,
    callback_url: Option<String>,
    ledger: Mutex<Ledger>,
    /// The ledger's change count the state file holds; held while writing it.
    persisted: tokio::sync::Mutex<u64>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    http: reqwest::Client,
    shutdown: watch::Receiver<bool>,
    /// Every task holds a clone; shutdown drops this one and waits for the channel to close.
    tracker: Mutex<Option<mpsc::Sender<()>>>,
    sending: Semaphore,
    callback_attempts_max: u32,
    callback_retry_base: Duration,
    clock: Arc<dyn Clock>,
}

/// What a handler knows about its connection.
#[derive(Clone)]
struct Conn {
    peer: SocketAddr,
    /// Notified to close the connection without an answer.
    abort: Arc<Notify>,
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tracker_rx: mpsc::Receiver<()>,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still well formed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A draw of the fault generator; rates outside (0, 1] never strike.
fn chance(rng: &Mutex<StdRng>, rate: f64) -> bool {
    rate > 0.0 && rate <= 1.0 && lock(rng).gen_bool(rate)
}

fn until(clock: &dyn Clock, at: DateTime<Utc>) -> Duration {
    (at - clock.now()).to_std().unwrap_or(Duration::ZERO)
}

impl Simulator {
    /// Loads the state file, binds, restarts owed timers and callbacks, and serves.
    pub async fn start(config: SimulatorConfig) -> anyhow::Result<Simulator> {
        if config.key.expose().len() < MIN_KEY_BYTES {
            anyhow::bail!("the wallet key must be at least {MIN_KEY_BYTES} bytes");
        }
        let faults = config.faults();
        faults.check().map_err(anyhow::Error::msg)?;
        if let Some(url) = &config.callback_url {
            let parsed = reqwest::Url::parse(url).context("callback URL")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("the callback URL must be http or https");
            }
        }
        if config.state_file.as_os_str().is_empty() {
            anyhow::bail!("the state file path is empty");
        }
        let ledger = load(&config.state_file).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.callback_timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (tracker_tx, tracker_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            key: config.key,
            state_file: config.state_file,
            callback_url: config.callback_url,
            ledger: Mutex::new(ledger),
            persisted: tokio::sync::Mutex::new(0),
            faults: Mutex::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            http,
            shutdown: shutdown_rx,
            tracker: Mutex::new(Some(tracker_tx)),
            sending: Semaphore::new(MAX_CALLBACKS_IN_FLIGHT),
            callback_attempts_max: config.callback_attempts_max.max(1),
            callback_retry_base: Duration::from_millis(config.callback_retry_base_ms),
            clock: config.clock.clone(),
        });
        let (timers, callbacks) = lock(&shared.ledger).outstanding();
        if !callbacks.is_empty() && shared.callback_url.is_none() {
            tracing::warn!(
                owed = callbacks.len(),
                "wallet-sim: callbacks are owed but no callback URL is set; they stay owed"
            );
        }
        start_effects(
            &shared,
            Effects {
                changed: false,
                timers,
                callbacks,
            },
        );
        let app = router(shared.clone());
        spawn(&shared, accept_loop(listener, app, shared.clone()));
        Ok(Simulator {
            addr,
            shutdown_tx,
            tracker_rx,
            shared,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends held connections and timers, waits for them (bounded), and
    /// writes the state file a last time.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        lock(&self.shared.tracker).take();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("wallet-sim: tasks still running after the shutdown grace period");
        }
        if let Err(e) = persist(&self.shared).await {
            tracing::error!(error = %e, "wallet-sim: the last write of the state file failed");
        }
    }
}

/// Runs the simulator until `shutdown` completes; prints `wallet-sim listening on
/// http://HOST:PORT` when ready.
pub async fn run_simulator(
    config: SimulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let simulator = Simulator::start(config).await?;
    println!("wallet-sim listening on {}", simulator.base_url());
    std::io::stdout().flush()?;
    shutdown.await;
    simulator.shutdown().await;
    Ok(())
}

async fn load(path: &FsPath) -> anyhow::Result<Ledger> {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let ledger: Ledger = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a wallet-sim state file; move it away to start afresh",
                    path.display()
                )
            })?;
            if ledger.version != LEDGER_VERSION {
                anyhow::bail!(
                    "{} has state version {}, this simulator reads {LEDGER_VERSION}",
                    path.display(),
                    ledger.version
                );
            }
            Ok(ledger)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file whole.
fn write_atomically(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "wallet-sim-state".into());
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is synced. Some platforms cannot open a
    // directory for that; the file itself is already whole then.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(FsPath::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the ledger to the state file, unless a write since the caller's change already did.
async fn persist(shared: &Arc<Shared>) -> Result<(), String> {
    let mut persisted = shared.persisted.lock().await;
    let (bytes, changes) = {
        let ledger = lock(&shared.ledger);
        if ledger.changes <= *persisted {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*ledger).map_err(|e| e.to_string())?;
        (bytes, ledger.changes)
    };
    let path = shared.state_file.clone();
    tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing {}: {e}", shared.state_file.display()))?;
    *persisted = changes;
    Ok(())
}

/// Spawns a task that shutdown waits for; after shutdown began, spawns nothing.
fn spawn<F>(shared: &Arc<Shared>, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(guard) = lock(&shared.tracker).clone() {
        tokio::spawn(async move {
            let _guard = guard;
            task.await;
        });
    }
}

/// Completes when shutdown begins (or the simulator is gone). The guard `wait_for` returns is
/// dropped here, so callers can hold this future across awaits on any thread.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Sleeps for `pause`; false when shutdown came first.
async fn pause(shared: &Shared, pause: Duration) -> bool {
    let mut shutdown = shared.shutdown.clone();
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = stopped(&mut shutdown) => false,
    }
}

fn start_effects(shared: &Arc<Shared>, effects: Effects) {
    for (timer, _) in effects.timers {
        spawn(shared, run_timer(shared.clone(), timer));
    }
    for id in effects.callbacks {
        spawn(shared, deliver(shared.clone(), id));
    }
}

/// Decides a pending operation when its time comes (unless something decided it first).
async fn run_timer(shared: Arc<Shared>, timer: Timer) {
    loop {
        let Some(at) = lock(&shared.ledger).timer_due(&timer) else {
            return;
        };
        if at > shared.clock.now() {
            if !pause(&shared, until(shared.clock.as_ref(), at)).await {
                return;
            }
            // The wall clock may lag the monotonic one; look again.
            continue;
        }
        let effects = {
            let rate = lock(&shared.faults).duplicate_callback_rate;
            let mut duplicate = || chance(&shared.rng, rate);
            let mut calls = CallbackPolicy {
                enabled: shared.callback_url.is_some(),
                duplicate: &mut duplicate,
            };
            lock(&shared.ledger).timer_fired(&timer, shared.clock.now(), &mut calls)
        };
        if let Err(e) = persist(&shared).await {
            tracing::error!(error = %e, "wallet-sim: state file not written");
        }
        start_effects(&shared, effects);
        return;
    }
}

/// Delivers one callback record: attempts with growing pauses until the gateway acknowledges
/// or refuses it, or the attempts run out.
async fn deliver(shared: Arc<Shared>, id: u64) {
    let Some(url) = shared.callback_url.clone() else {
        return;
    };
    loop {
        let (callback, due_at, corrupt) = match lock(&shared.ledger).callback(id) {
            Some(r) if r.status == CallbackStatus::Owed => {
                (r.callback.clone(), r.due_at, r.corrupt_signature)
            }
            _ => return,
        };
        if !pause(&shared, until(shared.clock.as_ref(), due_at)).await {
            return;
        }
        let mut shutdown = shared.shutdown.clone();
        let _permit = tokio::select! {
            permit = shared.sending.acquire() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let body = match serde_json::to_vec(&callback) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "wallet-sim: callback could not be encoded");
                return;
            }
        };
        let timestamp = shared.clock.now().timestamp();
        let signature = if corrupt {
            // Signed with a key the gateway does not have: it must refuse this one.
            protocol::sign(b"not the shared key", timestamp, &body)
        } else {
            protocol::sign(shared.key.expose(), timestamp, &body)
        };
        let send = shared
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send();
        let result = tokio::select! {
            r = send => r,
            _ = stopped(&mut shutdown) => return,
        };
        let (status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let next = lock(&shared.ledger).callback_attempted(
            id,
            status,
            error.clone(),
            shared.clock.now(),
            shared.callback_attempts_max,
            shared.callback_retry_base,
        );
        tracing::info!(
            callback = id,
            transaction_no = %callback.transaction_no,
            kind = ?callback.kind,
            http_status = status,
            error = error.as_deref().unwrap_or(""),
            "wallet-sim: callback attempt"
        );
        if let Err(e) = persist(&shared).await {
            tracing::error!(error = %e, "wallet-sim: state file not written");
        }
        if next.is_none() {
            return;
        }
    }
}

async fn accept_loop(listener: TcpListener, app: Router, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = shared.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "wallet-sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let conn = Conn {
            peer,
            abort: Arc::new(Notify::new()),
        };
        let service = app.clone().layer(Extension(conn.clone()));
        let shutdown = shared.shutdown.clone();
        spawn(&shared, async move {
            serve_connection(stream, service, conn, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    service: Router,
    conn: Conn,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
    tokio::pin!(http);
    tokio::select! {
        served = http.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, peer = %conn.peer, "wallet-sim: connection ended");
            }
        }
        // Dropping the connection closes the socket without writing anything.
        _ = conn.abort.notified() => {}
        _ = stopped(&mut shutdown) => {
            http.as_mut().graceful_shutdown();
            tokio::select! {
                _ = http.as_mut() => {}
                _ = conn.abort.notified() => {}
                _ = tokio::time::sleep(SHUTDOWN_GRACE / 2) => {}
            }
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    type Body = Result<Bytes, BytesRejection>;
    type St = State<Arc<Shared>>;
    type Ext = Extension<Conn>;
    Router::new()
        .route(
            protocol::PAY_PATH,
            post(|s: St, c: Ext, h: HeaderMap, b: Body| operation(s, c, h, b, Endpoint::Pay)),
        )
        .route(
            protocol::CLOSE_PATH,
            post(|s: St, c: Ext, h: HeaderMap, b: Body| operation(s, c, h, b, Endpoint::Close)),
        )
        .route(
            protocol::REVERSE_PATH,
            post(|s: St, c: Ext, h: HeaderMap, b: Body| operation(s, c, h, b, Endpoint::Reverse)),
        )
        .route(
            protocol::REFUND_PATH,
            post(|s: St, c: Ext, h: HeaderMap, b: Body| operation(s, c, h, b, Endpoint::Refund)),
        )
        .route(
            protocol::QUERY_PATH,
            post(|s: St, c: Ext, h: HeaderMap, b: Body| operation(s, c, h, b, Endpoint::Query)),
        )
        .route(protocol::STATEMENT_PATH, post(statement))
        .route(
            "/control/statement",
            get(control_statement).post(control_edit_statement),
        )
        .route("/control/orders", get(control_orders))
        .route("/control/orders/{transaction_no}", get(control_order))
        .route(
            "/control/faults",
            get(control_faults).post(control_set_faults),
        )
        .route("/control/pay/{transaction_no}", post(control_pay))
        .route("/control/callback", post(control_inject_callback))
        .route("/control/callbacks", get(control_callbacks))
        .route(
            "/control/callbacks/{id}/resend",
            post(control_resend_callback),
        )
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no endpoint at this path",
            )
        })
        .method_not_allowed_fallback(|| async {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "wrong method for this path",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Pay,
    Close,
    Reverse,
    Refund,
    Query,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Pay => "pay",
            Endpoint::Close => "close",
            Endpoint::Reverse => "reverse",
            Endpoint::Refund => "refund",
            Endpoint::Query => "query",
        }
    }
}

/// A request parsed and checked, with its amount as `Money`.
enum Request {
    Pay(PayRequest, tillgate_domain::Money),
    Cancel(OpKind, CancelRequest, tillgate_domain::Money),
    Refund(RefundRequest, tillgate_domain::Money),
    Query(QueryRequest),
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError::BadField(format!("bad JSON: {e}")))
}

fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<Request, ProtocolError> {
    Ok(match endpoint {
        Endpoint::Pay => {
            let r: PayRequest = parse(body)?;
            let money = r.check()?;
            Request::Pay(r, money)
        }
        Endpoint::Close | Endpoint::Reverse => {
            let r: CancelRequest = parse(body)?;
            let money = r.check()?;
            let kind = if matches!(endpoint, Endpoint::Close) {
                OpKind::Close
            } else {
                OpKind::Reverse
            };
            Request::Cancel(kind, r, money)
        }
        Endpoint::Refund => {
            let r: RefundRequest = parse(body)?;
            let money = r.check()?;
            Request::Refund(r, money)
        }
        Endpoint::Query => {
            let r: QueryRequest = parse(body)?;
            r.check()?;
            Request::Query(r)
        }
    })
}

fn perform(
    shared: &Shared,
    request: &Request,
    late: Duration,
) -> Result<(Answer, Effects), Refusal> {
    let now = shared.clock.now();
    let rate = lock(&shared.faults).duplicate_callback_rate;
    let mut duplicate = || chance(&shared.rng, rate);
    let mut calls = CallbackPolicy {
        enabled: shared.callback_url.is_some(),
        duplicate: &mut duplicate,
    };
    let mut ledger = lock(&shared.ledger);
    match request {
        Request::Pay(r, money) => ledger.pay(
            &r.transaction_no,
            *money,
            r.barcode.as_deref(),
            r.vendor.as_deref(),
            now,
            late,
        ),
        Request::Cancel(kind, r, money) => ledger.cancel(
            *kind,
            &r.transaction_no,
            *money,
            r.cancel_no.as_deref(),
            now,
            late,
            &mut calls,
        ),
        Request::Refund(r, money) => ledger.refund(&r.transaction_no, &r.refund_no, *money, now),
        Request::Query(r) => ledger.query(&r.transaction_no, &r.operation, now),
    }
}

/// A JSON answer signed with the shared key.
fn signed(shared: &Shared, status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let timestamp = shared.clock.now().timestamp();
    let mut response = (status, body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in protocol::signature_headers(shared.key.expose(), timestamp, &body) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

fn signed_error(shared: &Shared, status: StatusCode, code: &str, message: &str) -> Response {
    signed(
        shared,
        status,
        &ErrorBody {
            error: code.to_owned(),
            message: message.to_owned(),
        },
    )
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_owned(),
            message: message.to_owned(),
        }),
    )
        .into_response()
}

fn body_refused(rejection: &BytesRejection) -> (StatusCode, &'static str) {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    } else {
        (StatusCode::BAD_REQUEST, "bad_request")
    }
}

/// Closes the connection without an answer.
async fn abort(conn: &Conn) -> Response {
    conn.abort.notify_one();
    // The connection task drops this handler with the connection.
    std::future::pending::<Response>().await
}

async fn operation(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let (status, code) = body_refused(&rejection);
            return signed_error(&shared, status, code, &rejection.body_text());
        }
    };
    if let Err(e) = protocol::verify_headers(
        shared.key.expose(),
        &headers,
        &body,
        shared.clock.now().timestamp(),
    ) {
        tracing::warn!(peer = %conn.peer, endpoint = endpoint.name(), error = %e, "wallet-sim: request refused");
        return signed_error(&shared, StatusCode::UNAUTHORIZED, e.code(), &e.to_string());
    }
    let request = match parse_request(endpoint, &body) {
        Ok(r) => r,
        Err(e) => return signed_error(&shared, StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    // The draws happen for every valid request in arrival order, whatever it comes to, so a
    // seed replays the same faults.
    let faults = *lock(&shared.faults);
    let times_out = chance(&shared.rng, faults.timeout_rate);
    let drops = chance(&shared.rng, faults.drop_rate);
    let (answer, effects) = match perform(
        &shared,
        &request,
        Duration::from_millis(faults.late_callback_ms),
    ) {
        Ok(done) => done,
        Err(Refusal::Conflict(message)) => {
            return signed_error(&shared, StatusCode::CONFLICT, "conflict", &message)
        }
        Err(Refusal::NotFound(message)) => {
            return signed_error(&shared, StatusCode::NOT_FOUND, "not_found", &message)
        }
        Err(Refusal::Full) => {
            return signed_error(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the simulator remembers no more orders",
            )
        }
    };
    if effects.changed {
        if let Err(e) = persist(&shared).await {
            tracing::error!(error = %e, "wallet-sim: state file not written");
            return signed_error(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the operation could not be recorded",
            );
        }
    }
    start_effects(&shared, effects);
    let fault = if times_out {
        "timeout"
    } else if drops {
        "drop"
    } else {
        ""
    };
    tracing::info!(
        endpoint = endpoint.name(),
        transaction_no = %answer.transaction_no,
        refund_no = answer.refund_no.as_deref().unwrap_or(""),
        outcome = answer.outcome.as_str(),
        fault,
        "wallet-sim: answered"
    );
    if faults.latency_ms > 0 && !pause(&shared, Duration::from_millis(faults.latency_ms)).await {
        return abort(&conn).await;
    }
    if times_out {
        pause(&shared, Duration::from_millis(faults.timeout_hold_ms)).await;
        return abort(&conn).await;
    }
    if drops {
        return abort(&conn).await;
    }
    signed(&shared, StatusCode::OK, &answer)
}

/// One page of the signed daily statement, from the ledger with the injected discrepancies.
async fn statement(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let (status, code) = body_refused(&rejection);
            return signed_error(&shared, status, code, &rejection.body_text());
        }
    };
    if let Err(e) = protocol::verify_headers(
        shared.key.expose(),
        &headers,
        &body,
        shared.clock.now().timestamp(),
    ) {
        tracing::warn!(peer = %conn.peer, endpoint = "statement", error = %e, "wallet-sim: request refused");
        return signed_error(&shared, StatusCode::UNAUTHORIZED, e.code(), &e.to_string());
    }
    let request: protocol::StatementRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return signed_error(&shared, StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let date = match request.check() {
        Ok(d) => d,
        Err(e) => return signed_error(&shared, StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let all = lock(&shared.ledger).statement(date);
    let after = usize::try_from(request.after.unwrap_or(0)).unwrap_or(usize::MAX);
    let lines: Vec<_> = all
        .iter()
        .skip(after)
        .take(protocol::STATEMENT_PAGE_LINES)
        .cloned()
        .collect();
    let sent = after.saturating_add(lines.len());
    let page = protocol::Statement {
        date: request.date,
        next: (sent < all.len()).then_some(sent as u64),
        lines,
    };
    signed(&shared, StatusCode::OK, &page)
}

/// The discrepancies injected into the statement so far.
async fn control_statement(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let edits = lock(&shared.ledger).statement_edits.clone();
    Json(serde_json::json!({ "edits": edits })).into_response()
}

/// Injects a discrepancy into the statement (see `ledger::StatementEdit`).
async fn control_edit_statement(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let edit: StatementEdit = match body.map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        Err(r) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &r.body_text()),
    };
    let done = lock(&shared.ledger).edit_statement(edit, shared.clock.now());
    match done {
        Ok(()) => {}
        Err(Refusal::NotFound(m)) => return json_error(StatusCode::NOT_FOUND, "not_found", &m),
        Err(Refusal::Conflict(m)) => return json_error(StatusCode::CONFLICT, "conflict", &m),
        Err(Refusal::Full) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "full")
        }
    }
    if let Err(e) = persist(&shared).await {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e);
    }
    let edits = lock(&shared.ledger).statement_edits.clone();
    Json(serde_json::json!({ "edits": edits })).into_response()
}

/// The control endpoint answers only on loopback: it is unsigned and can move simulated money.
fn refuse_remote(conn: &Conn) -> Option<Response> {
    (!conn.peer.ip().is_loopback()).then(|| {
        json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the control endpoint answers only on loopback",
        )
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderView<'a> {
    #[serde(flatten)]
    order: &'a Order,
    callbacks: Vec<&'a CallbackRecord>,
}

async fn control_orders(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let ledger = lock(&shared.ledger);
    let mut by_order: HashMap<&str, Vec<&CallbackRecord>> = HashMap::new();
    for c in &ledger.callbacks {
        by_order
            .entry(c.callback.transaction_no.as_str())
            .or_default()
            .push(c);
    }
    let orders: Vec<OrderView<'_>> = ledger
        .orders
        .values()
        .map(|order| OrderView {
            order,
            callbacks: by_order
                .remove(order.transaction_no.as_str())
                .unwrap_or_default(),
        })
        .collect();
    let others: Vec<&CallbackRecord> = by_order.into_values().flatten().collect();
    Json(serde_json::json!({
        "orders": orders,
        "callbacksForUnknownOrders": others,
    }))
    .into_response()
}

/// Every callback owed, delivered, refused or failed, oldest first (injected ones too, whether
/// or not their order exists).
async fn control_callbacks(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let ledger = lock(&shared.ledger);
    Json(&ledger.callbacks).into_response()
}

async fn control_order(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    Path(transaction_no): Path<String>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let ledger = lock(&shared.ledger);
    match ledger.orders.get(&transaction_no) {
        Some(order) => Json(OrderView {
            order,
            callbacks: ledger
                .callbacks
                .iter()
                .filter(|c| c.callback.transaction_no == transaction_no)
                .collect(),
        })
        .into_response(),
        None => json_error(StatusCode::NOT_FOUND, "not_found", "no such order"),
    }
}

async fn control_faults(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let faults = *lock(&shared.faults);
    Json(faults).into_response()
}

async fn control_set_faults(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let patch: FaultsPatch = match body
        .map_err(|r| r.body_text())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let mut faults = lock(&shared.faults);
    let mut next = *faults;
    next.latency_ms = patch.latency_ms.unwrap_or(next.latency_ms);
    next.timeout_rate = patch.timeout_rate.unwrap_or(next.timeout_rate);
    next.drop_rate = patch.drop_rate.unwrap_or(next.drop_rate);
    next.duplicate_callback_rate = patch
        .duplicate_callback_rate
        .unwrap_or(next.duplicate_callback_rate);
    next.late_callback_ms = patch.late_callback_ms.unwrap_or(next.late_callback_ms);
    next.timeout_hold_ms = patch.timeout_hold_ms.unwrap_or(next.timeout_hold_ms);
    if let Err(e) = next.check() {
        return json_error(StatusCode::BAD_REQUEST, "bad_request", &e);
    }
    *faults = next;
    tracing::info!(faults = ?next, "wallet-sim: faults changed");
    Json(next).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerDecision {
    outcome: Outcome,
}

async fn control_pay(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    Path(transaction_no): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let outcome = match body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Outcome::Approved,
        Ok(b) => match serde_json::from_slice::<CustomerDecision>(&b) {
            Ok(d) => d.outcome,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        },
        Err(r) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &r.body_text()),
    };
    let decided = {
        let rate = lock(&shared.faults).duplicate_callback_rate;
        let mut duplicate = || chance(&shared.rng, rate);
        let mut calls = CallbackPolicy {
            enabled: shared.callback_url.is_some(),
            duplicate: &mut duplicate,
        };
        lock(&shared.ledger).customer_decides(
            &transaction_no,
            outcome,
            shared.clock.now(),
            &mut calls,
        )
    };
    let effects = match decided {
        Ok(e) => e,
        Err(Refusal::NotFound(m)) => return json_error(StatusCode::NOT_FOUND, "not_found", &m),
        Err(Refusal::Conflict(m)) => return json_error(StatusCode::CONFLICT, "conflict", &m),
        Err(Refusal::Full) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "full")
        }
    };
    if let Err(e) = persist(&shared).await {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e);
    }
    start_effects(&shared, effects);
    let ledger = lock(&shared.ledger);
    let payment = ledger
        .orders
        .get(&transaction_no)
        .and_then(|o| o.payment.clone());
    Json(serde_json::json!({ "payment": payment })).into_response()
}

/// A callback to send as given, even a wrong one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InjectedCallback {
    #[serde(flatten)]
    callback: Callback,
    #[serde(default)]
    corrupt_signature: bool,
}

async fn control_inject_callback(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    if shared.callback_url.is_none() {
        return json_error(
            StatusCode::CONFLICT,
            "no_callback_url",
            "the simulator was started without a callback URL",
        );
    }
    let injected: InjectedCallback = match body
        .map_err(|r| r.body_text())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(i) => i,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let mut callback = injected.callback;
    let record = {
        let mut ledger = lock(&shared.ledger);
        if callback.callback_id.is_none() {
            callback.callback_id = Some(format!("inj-{}", ledger.next_callback_id));
        }
        let Some(id) = ledger.record_callback(callback, shared.clock.now(), false) else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many callbacks owed",
            );
        };
        let Some(record) = ledger.callback_mut(id) else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lost record");
        };
        record.injected = true;
        record.corrupt_signature = injected.corrupt_signature;
        record.clone()
    };
    if let Err(e) = persist(&shared).await {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e);
    }
    spawn(&shared, deliver(shared.clone(), record.id));
    (StatusCode::ACCEPTED, Json(record)).into_response()
}

async fn control_resend_callback(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = refuse_remote(&conn) {
        return refused;
    }
    let Ok(id) = id.parse::<u64>() else {
        return json_error(StatusCode::BAD_REQUEST, "bad_request", "id is a number");
    };
    if shared.callback_url.is_none() {
        return json_error(
            StatusCode::CONFLICT,
            "no_callback_url",
            "the simulator was started without a callback URL",
        );
    }
    let record = {
        let mut ledger = lock(&shared.ledger);
        let Some(original) = ledger.callback(id).cloned() else {
            return json_error(StatusCode::NOT_FOUND, "not_found", "no such callback");
        };
        let Some(copy) = ledger.record_callback(original.callback, shared.clock.now(), true) else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many callbacks owed",
            );
        };
        let Some(record) = ledger.callback_mut(copy) else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lost record");
        };
        record.injected = original.injected;
        record.corrupt_signature = original.corrupt_signature;
        record.clone()
    };
    if let Err(e) = persist(&shared).await {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &e);
    }
    spawn(&shared, deliver(shared.clone(), record.id));
    (StatusCode::ACCEPTED, Json(record)).into_response()
}
