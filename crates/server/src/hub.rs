//! The terminal hub: POS terminals hold a WebSocket to one node; commands reach them from any
//! node, and their results are applied by the node that hears them.
//!
//! Protocol (`GET /terminal/v1/ws`, JSON text frames):
//! - terminal → gateway, first, within 10 s: `{"type":"hello","tid","timestamp","nonce","signature"}`
//!   with `signature = hex(HMAC-SHA256(terminal secret, "<tid>\n<timestamp>\n<nonce>"))`,
//!   `timestamp` in unix seconds within 60 s of the gateway's clock, and a nonce never used
//!   before (a replayed or stale handshake is refused with `{"type":"error"}` and closed);
//! - gateway → terminal: `{"type":"welcome","tid","heartbeatSeconds"}`, then every open command
//!   of the terminal (again after a reconnect), and new ones as they come:
//!   `{"type":"command","command":{"id","kind":"sale"|"reversal"|"cancel","transactionNo","amountMinor","currency","description"?}}`;
//! - terminal → gateway: `{"type":"ack","id"}`, `{"type":"progress","id","stage"}` (free text,
//!   e.g. received, shown, processing), and finally `{"type":"result","id","outcome":"approved"|"declined","message"?}`,
//!   answered by `{"type":"done","id"}` once applied.
//!
//! The gateway pings every 15 s; a terminal silent for 45 s is dropped. One connection per
//! terminal: a new one replaces the old.

use async_trait::async_trait;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tillgate_core::terminal::{
    CommandOutcome, CommandRecord, CommandState, HubError, TerminalCommand, TerminalEvent,
    TerminalHub, TerminalReport, TerminalResult,
};
use tillgate_core::{Credentials, LifecycleError, StoreError, TerminalStore};
use tillgate_domain::{ChannelOutcome, Clock};
use tokio::sync::{mpsc, oneshot};

/// How often the gateway pings and records that a terminal is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// A terminal silent for this long is dropped, and counts as offline.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long a terminal has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// How far a handshake's timestamp may be from the gateway's clock.
const HANDSHAKE_SKEW_S: i64 = 60;
/// Commands queued for one connection (a bound, DESIGN.md rule 9).
const SESSION_QUEUE: usize = 64;

/// One WebSocket frame, whatever the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Ping,
    Pong,
    Close,
}

/// What a terminal sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Up {
    Hello {
        tid: String,
        timestamp: i64,
        nonce: String,
        signature: String,
    },
    Ack {
        id: String,
    },
    Progress {
        id: String,
        stage: String,
    },
    Result {
        id: String,
        outcome: String,
        #[serde(default)]
        message: Option<String>,
    },
}

/// What the gateway sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Down {
    Welcome {
        tid: String,
        #[serde(rename = "heartbeatSeconds")]
        heartbeat_seconds: u64,
    },
    Command {
        command: TerminalCommand,
    },
    Done {
        id: String,
    },
    Error {
        message: String,
    },
}

/// The handshake signature of a terminal.
pub fn handshake_signature(secret: &str, tid: &str, timestamp: i64, nonce: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{tid}\n{timestamp}\n{nonce}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

struct Session {
    generation: u64,
    down: mpsc::Sender<Down>,
}

/// Reports of terminals queued for the lifecycle to apply (a bound).
pub const EVENT_QUEUE: usize = 1024;

/// The hub of this node. It authenticates terminals, carries commands to them and reports what
/// they answer as [`TerminalEvent`]s; the lifecycle applies those (`apply_terminal_events`).
pub struct Hub {
    node: String,
    store: Arc<dyn TerminalStore>,
    credentials: Arc<Credentials>,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<TerminalEvent>,
    sessions: Mutex<HashMap<String, Session>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<TerminalResult>>>>,
    /// What each command waited for here is, and since when (for the shutdown's account).
    awaited: Mutex<HashMap<String, (String, std::time::Instant)>>,
    generation: std::sync::atomic::AtomicU64,
}

/// Removes a command's waiters however the wait ends (result, time-out, error).
struct Waiting<'a> {
    hub: &'a Hub,
    command_id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.hub
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.command_id);
        self.hub
            .awaited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.command_id);
    }
}

impl Hub {
    /// A hub for node `node`; what terminals report goes to `events`.
    pub fn new(
        store: Arc<dyn TerminalStore>,
        credentials: Arc<Credentials>,
        clock: Arc<dyn Clock>,
        node: String,
        events: mpsc::Sender<TerminalEvent>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            node,
            store,
            credentials,
            clock,
            events,
            sessions: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            awaited: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Hands a report to the lifecycle and waits until it is applied.
    async fn report(&self, report: TerminalReport) -> Result<(), LifecycleError> {
        let (applied, done) = oneshot::channel();
        let unavailable =
            || LifecycleError::Store(StoreError::Unavailable("the gateway is stopping".into()));
        self.events
            .send(TerminalEvent { report, applied })
            .await
            .map_err(|_| unavailable())?;
        done.await.map_err(|_| unavailable())?
    }

    /// Commands waiting for a result on this node (for tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The terminal commands requests on this node are waiting for, one line each ("sale of
    /// transaction 2174… on terminal T1, waiting 12 s"), oldest first.
    pub fn awaited_commands(&self) -> Vec<String> {
        let awaited = self.awaited.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<_> = awaited.values().collect();
        lines.sort_by_key(|(_, since)| *since);
        lines
            .into_iter()
            .map(|(what, since)| format!("{what}, waiting {} s", since.elapsed().as_secs()))
            .collect()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// How many terminals hold a connection to this node.
    pub fn online(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Listens for commands other nodes wrote for terminals connected here.
    pub async fn listen(self: Arc<Self>) {
        let mut rx = match self.store.command_announcements().await {
            Ok(Some(rx)) => rx,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for terminal commands");
                return;
            }
        };
        while let Some(command_id) = rx.recv().await {
            match self.store.command(&command_id).await {
                Ok(Some(c)) if c.state == CommandState::Open => {
                    self.deliver_local(&c.tid, &c.command).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read an announced command"),
            }
        }
    }

    /// Sends a command down a connection held by this node; false if there is none.
    async fn deliver_local(&self, tid: &str, command: &TerminalCommand) -> bool {
        let down = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tid)
            .map(|s| s.down.clone());
        match down {
            Some(down) => down
                .send(Down::Command {
                    command: command.clone(),
                })
                .await
                .is_ok(),
            None => false,
        }
    }

    fn wake(&self, command_id: &str, result: &TerminalResult) {
        let waiting = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(command_id)
            .unwrap_or_default();
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }

    /// Authenticates a hello; the terminal id on success, the reason on failure.
    async fn authenticate(&self, hello: Up) -> Result<String, String> {
        let Up::Hello {
            tid,
            timestamp,
            nonce,
            signature,
        } = hello
        else {
            return Err("the first message must be a hello".into());
        };
        // Text no terminal id or nonce can hold never reaches the store.
        if tillgate_wire::has_control(&tid) || tillgate_wire::has_control(&nonce) {
            return Err("unknown terminal or bad signature".into());
        }
        let credential = self
            .credentials
            .terminal_credential(&tid)
            .await
            .map_err(|_| "unknown terminal or bad signature".to_owned())?;
        // The secret in force, or the one before a rotation while it is still accepted.
        let given = signature.to_ascii_lowercase();
        let verified = |secret: &tillgate_core::Secret<String>| {
            let expected = handshake_signature(secret.expose(), &tid, timestamp, &nonce);
            bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
        };
        let previous =
            tillgate_core::credentials::previous_at(&credential.previous, self.credentials.now());
        if !verified(&credential.secret) && !previous.is_some_and(verified) {
            return Err("unknown terminal or bad signature".into());
        }
        let now = self.clock.now();
        if (now.timestamp() - timestamp).abs() > HANDSHAKE_SKEW_S {
            return Err("stale handshake: timestamp too far from the gateway's clock".into());
        }
        if nonce.is_empty() || nonce.len() > 128 {
            return Err("nonce must be 1 to 128 characters".into());
        }
        let forget = now - chrono::Duration::seconds(HANDSHAKE_SKEW_S * 4);
        match self.store.use_nonce(&tid, &nonce, now, forget).await {
            Ok(true) => Ok(tid),
            Ok(false) => Err("replayed handshake: nonce already used".into()),
            Err(e) => Err(format!("system error: {e}")),
        }
    }

    /// Runs one terminal connection to its end. Generic over the transport so that tests can
    /// drive it with channels.
    pub async fn run_session<Si, St>(self: Arc<Self>, mut sink: Si, mut stream: St)
    where
        Si: Sink<Frame> + Unpin + Send,
        St: Stream<Item = Frame> + Unpin + Send,
    {
        let hello = match tokio::time::timeout(HELLO_WITHIN, stream.next()).await {
            Ok(Some(Frame::Text(t))) => serde_json::from_str::<Up>(&t).ok(),
            _ => None,
        };
        let tid = match hello {
            None => Err("the first message must be a hello within 10 s".to_owned()),
            Some(h) => self.authenticate(h).await,
        };
        let tid = match tid {
            Ok(tid) => tid,
            Err(message) => {
                tracing::info!(%message, "terminal handshake refused");
                let _ = send(&mut sink, &Down::Error { message }).await;
                let _ = sink.send(Frame::Close).await;
                return;
            }
        };
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (down_tx, mut down_rx) = mpsc::channel(SESSION_QUEUE);
        let replaced = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                tid.clone(),
                Session {
                    generation,
                    down: down_tx,
                },
            );
        drop(replaced);
        let _ = self
            .store
            .terminal_presence(&tid, Some(&self.node), self.clock.now())
            .await;
        tracing::info!(%tid, node = %self.node, "terminal connected");
        let welcome = Down::Welcome {
            tid: tid.clone(),
            heartbeat_seconds: HEARTBEAT.as_secs(),
        };
        if send(&mut sink, &welcome).await.is_ok() {
            // Commands written while the terminal was away, or whose result never came.
            if let Ok(open) = self.store.open_commands(&tid).await {
                for c in open {
                    if send(&mut sink, &Down::Command { command: c.command })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            self.session_loop(&tid, &mut sink, &mut stream, &mut down_rx)
                .await;
        }
        let mine = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let mine = sessions
                .get(&tid)
                .is_some_and(|s| s.generation == generation);
            if mine {
                sessions.remove(&tid);
            }
            mine
        };
        if mine {
            let _ = self
                .store
                .terminal_presence(&tid, None, self.clock.now())
                .await;
        }
        tracing::info!(%tid, "terminal disconnected");
    }

    async fn session_loop<Si, St>(
        &self,
        tid: &str,
        sink: &mut Si,
        stream: &mut St,
        down_rx: &mut mpsc::Receiver<Down>,
    ) where
        Si: Sink<Frame> + Unpin + Send,
        St: Stream<Item = Frame> + Unpin + Send,
    {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                down = down_rx.recv() => {
                    // A closed queue means a newer connection of the terminal replaced this one.
                    let Some(down) = down else { return };
                    if send(sink, &down).await.is_err() {
                        return;
                    }
                }
                frame = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        None | Some(Frame::Close) => return,
                        Some(Frame::Ping) => {
                            if sink.send(Frame::Pong).await.is_err() {
                                return;
                            }
                        }
                        Some(Frame::Pong) => {}
                        Some(Frame::Text(text)) => {
                            if self.on_message(tid, sink, &text).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        tracing::info!(%tid, "terminal silent too long; dropping it");
                        return;
                    }
                    if sink.send(Frame::Ping).await.is_err() {
                        return;
                    }
                    let _ = self.store.terminal_presence(tid, Some(&self.node), self.clock.now()).await;
                }
            }
        }
    }

    async fn on_message<Si>(&self, tid: &str, sink: &mut Si, text: &str) -> Result<(), ()>
    where
        Si: Sink<Frame> + Unpin + Send,
    {
        let message = match serde_json::from_str::<Up>(text) {
            Ok(m) => m,
            Err(e) => {
                let message = format!("unreadable message: {e}");
                return send(sink, &Down::Error { message }).await;
            }
        };
        match message {
            Up::Hello { .. } => {
                let message = "already connected".to_owned();
                send(sink, &Down::Error { message }).await
            }
            Up::Ack { id } => {
                self.progress(tid, &id, "acknowledged").await;
                Ok(())
            }
            Up::Progress { id, stage } => {
                let stage: String = stage.chars().take(64).collect();
                self.progress(tid, &id, &stage).await;
                Ok(())
            }
            Up::Result {
                id,
                outcome,
                message,
            } => {
                let outcome = match outcome.as_str() {
                    "approved" => ChannelOutcome::Approved,
                    "declined" => ChannelOutcome::Declined,
                    _ => {
                        let message = "outcome must be approved or declined".to_owned();
                        return send(sink, &Down::Error { message }).await;
                    }
                };
                if self.command_of(tid, &id).await.is_none() {
                    let message = format!("no open command {id} for this terminal");
                    return send(sink, &Down::Error { message }).await;
                }
                let result = TerminalResult {
                    outcome,
                    message: message.map(|m| m.chars().take(256).collect()),
                };
                let applied = self
                    .report(TerminalReport::Result {
                        command_id: id.clone(),
                        result: result.clone(),
                    })
                    .await;
                match applied {
                    Ok(()) => {
                        self.wake(&id, &result);
                        send(sink, &Down::Done { id }).await
                    }
                    Err(e) => {
                        // Not answered with done: the terminal sends the result again.
                        tracing::warn!(error = %e, %tid, "cannot apply a terminal result yet");
                        Ok(())
                    }
                }
            }
        }
    }

    /// The command `command_id`, if it is one of this terminal's.
    async fn command_of(&self, tid: &str, command_id: &str) -> Option<CommandRecord> {
        match self.store.command(command_id).await {
            Ok(Some(c)) if c.tid == tid => Some(c),
            _ => None,
        }
    }

    async fn progress(&self, tid: &str, command_id: &str, stage: &str) {
        let Some(command) = self.command_of(tid, command_id).await else {
            return;
        };
        let stage = stage.to_owned();
        if let Err(e) = self
            .report(TerminalReport::Progress { command, stage })
            .await
        {
            tracing::warn!(error = %e, "cannot record terminal progress");
        }
    }

    /// Waits for a command's result: here, or (when another node applied it) in the database.
    async fn wait_for(
        &self,
        command_id: &str,
        rx: oneshot::Receiver<TerminalResult>,
        wait: Duration,
    ) -> Result<TerminalResult, StoreError> {
        let poll = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(c) = self.store.command(command_id).await? {
                    if c.state == CommandState::Done {
                        let outcome = if c.outcome == Some(CommandOutcome::Approved) {
                            ChannelOutcome::Approved
                        } else {
                            ChannelOutcome::Declined
                        };
                        return Ok::<_, StoreError>(TerminalResult {
                            outcome,
                            message: c.message,
                        });
                    }
                }
            }
        };
        let result = tokio::time::timeout(wait, async {
            tokio::select! {
                Ok(r) = rx => Ok(r),
                r = poll => r,
            }
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => Ok(TerminalResult {
                outcome: ChannelOutcome::Unknown,
                message: Some("no result from the terminal yet".into()),
            }),
        }
    }
}

async fn send<Si>(sink: &mut Si, down: &Down) -> Result<(), ()>
where
    Si: Sink<Frame> + Unpin + Send,
{
    let text = serde_json::to_string(down).map_err(drop)?;
    sink.send(Frame::Text(text)).await.map_err(drop)
}

/// `GET /terminal/v1/ws`: the WebSocket of POS terminals.
pub fn routes(hub: Arc<Hub>) -> axum::Router {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    axum::Router::new().route(
        "/terminal/v1/ws",
        axum::routing::get(move |ws: WebSocketUpgrade| {
            let hub = hub.clone();
            async move {
                ws.max_message_size(16 * 1024)
                    .max_frame_size(16 * 1024)
                    .on_upgrade(move |socket| async move {
                        let (sink, stream) = socket.split();
                        let sink = Box::pin(sink.with(|f: Frame| async move {
                            Ok::<_, axum::Error>(match f {
                                Frame::Text(t) => Message::Text(t.into()),
                                Frame::Ping => Message::Ping(Default::default()),
                                Frame::Pong => Message::Pong(Default::default()),
                                Frame::Close => Message::Close(None),
                            })
                        }));
                        let stream = Box::pin(stream.map(|m| match m {
                            Ok(Message::Text(t)) => Frame::Text(t.to_string()),
                            Ok(Message::Binary(b)) => {
                                Frame::Text(String::from_utf8_lossy(&b).into_owned())
                            }
                            Ok(Message::Ping(_)) => Frame::Ping,
                            Ok(Message::Pong(_)) => Frame::Pong,
                            Ok(Message::Close(_)) | Err(_) => Frame::Close,
                        }));
                        hub.run_session(sink, stream).await;
                    })
            }
        }),
    )
}

#[async_trait]
impl TerminalHub for Hub {
    async fn is_online(&self, tid: &str) -> Result<bool, StoreError> {
        if self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(tid)
        {
            return Ok(true);
        }
        let Some(presence) = self.store.presence(tid).await? else {
            return Ok(false);
        };
        let fresh = self.clock.now()
            - chrono::Duration::from_std(SILENCE_LIMIT).unwrap_or(chrono::Duration::seconds(45));
        Ok(presence.node.is_some() && presence.last_seen_at.is_some_and(|t| t > fresh))
    }

    async fn execute(
        &self,
        tid: &str,
        command: &TerminalCommand,
        wait: Duration,
    ) -> Result<TerminalResult, HubError> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(command.id.clone())
            .or_default()
            .push(tx);
        self.awaited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                command.id.clone(),
                (
                    format!(
                        "{} of transaction {} on terminal {tid}",
                        command.kind.as_str(),
                        command.transaction_no
                    ),
                    std::time::Instant::now(),
                ),
            );
        // However this ends — result, time-out, offline or a store error — the waiter goes.
        let _waiting = Waiting {
            hub: self,
            command_id: &command.id,
        };
        if !self.deliver_local(tid, command).await {
            if !self.is_online(tid).await? {
                return Err(HubError::Offline);
            }
            // Another node holds the connection: tell it through the database.
            self.store.announce_command(&command.id).await?;
        }
        Ok(self.wait_for(&command.id, rx, wait).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_core::service::AddRequest;
    use tillgate_core::Dialect;
    use tillgate_domain::{Currency, Key, MerchantZone, Money};
    use tillgate_testkit::Kit;

    const SECRET: &str = "terminal-secret-0123456789";

    /// The lifecycle on a fresh store with one terminal, and the hub it is carried out through.
    async fn setup(name: &str) -> (Kit, Arc<Hub>) {
        let (kit, hub) = Kit::builder(&format!("hub-{name}"))
            .build_with_hub(|parts| {
                Hub::new(
                    parts.store,
                    parts.credentials,
                    parts.clock,
                    "node-test".into(),
                    parts.events,
                )
            })
            .await;
        let m = kit.merchant("900001", MerchantZone::utc()).await;
        kit.terminal_of(&m, "T1", SECRET).await;
        (kit, hub)
    }

    /// A terminal end of a session made of channels: what it sends, what it receives.
    fn channels() -> (
        mpsc::Sender<Frame>,
        mpsc::Receiver<Frame>,
        impl Sink<Frame> + Unpin + Send,
        impl Stream<Item = Frame> + Unpin + Send,
    ) {
        let (up_tx, up_rx) = mpsc::channel::<Frame>(16);
        let (down_tx, down_rx) = mpsc::channel::<Frame>(16);
        let sink = Box::pin(futures_util::sink::unfold(
            down_tx,
            |tx, f: Frame| async move {
                tx.send(f).await.map_err(|_| ())?;
                Ok::<_, ()>(tx)
            },
        ));
        let stream = Box::pin(futures_util::stream::unfold(up_rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        }));
        (up_tx, down_rx, sink, stream)
    }

    fn hello(secret: &str, timestamp: i64, nonce: &str) -> Frame {
        let up = Up::Hello {
            tid: "T1".into(),
            timestamp,
            nonce: nonce.into(),
            signature: handshake_signature(secret, "T1", timestamp, nonce),
        };
        Frame::Text(serde_json::to_string(&up).unwrap())
    }

    async fn next_down(rx: &mut mpsc::Receiver<Frame>) -> Down {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Frame::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Ok(Some(_)) => continue,
                other => panic!("no message from the gateway: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bad_stale_and_replayed_handshakes_are_refused() {
        let (kit, hub) = setup("refused").await;
        let now = kit.app.now().timestamp();
        let cases = [
            (hello("wrong-secret-000000", now, "n1"), "bad signature"),
            (hello(SECRET, now - 3600, "n2"), "stale"),
            // Signed, but a nonce no terminal may send: it never reaches the store.
            (hello(SECRET, now, "n\u{0}4"), "bad signature"),
            (hello(SECRET, now, "n3"), ""),
            (hello(SECRET, now, "n3"), "replayed"),
        ];
        for (frame, refusal) in cases {
            let (up, mut down, sink, stream) = channels();
            let session = tokio::spawn(hub.clone().run_session(sink, stream));
            up.send(frame).await.unwrap();
            let first = next_down(&mut down).await;
            if refusal.is_empty() {
                assert!(matches!(first, Down::Welcome { .. }), "{first:?}");
                drop(up);
            } else {
                match first {
                    Down::Error { message } => assert!(message.contains(refusal), "{message}"),
                    other => panic!("expected a refusal, got {other:?}"),
                }
            }
            session.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_sale_goes_down_progress_and_result_come_up_and_the_payment_is_paid() {
        let (kit, hub) = setup("sale").await;
        let app = kit.app.clone();
        let (up, mut down, sink, stream) = channels();
        let session = tokio::spawn(hub.clone().run_session(sink, stream));
        up.send(hello(SECRET, kit.app.now().timestamp(), "sale-nonce"))
            .await
            .unwrap();
        assert!(matches!(next_down(&mut down).await, Down::Welcome { .. }));
        let merchant = app.store().merchant("900001").await.unwrap().unwrap();
        let eur = Currency::from_code("EUR").unwrap();
        let sale = tokio::spawn({
            let app = app.clone();
            async move {
                app.terminal_sale(
                    &merchant,
                    "T1",
                    AddRequest {
                        store_no: "T1".into(),
                        reference: Key::parse("pos-1").unwrap(),
                        amount: Money::from_minor(1250, eur).unwrap(),
                        settle_currency: eur,
                        description: None,
                        notify_url: None,
                        timeout_minutes: None,
                        dialect: Dialect::YabandPay,
                        extra: None,
                    },
                    Duration::from_secs(10),
                )
                .await
            }
        });
        let Down::Command { command } = next_down(&mut down).await else {
            panic!("expected a command")
        };
        assert_eq!(command.amount_minor, 1250);
        for stage in ["received", "shown", "processing"] {
            let p = Up::Progress {
                id: command.id.clone(),
                stage: stage.into(),
            };
            up.send(Frame::Text(serde_json::to_string(&p).unwrap()))
                .await
                .unwrap();
        }
        let r = Up::Result {
            id: command.id.clone(),
            outcome: "approved".into(),
            message: None,
        };
        up.send(Frame::Text(serde_json::to_string(&r).unwrap()))
            .await
            .unwrap();
        assert_eq!(
            next_down(&mut down).await,
            Down::Done {
                id: command.id.clone()
            }
        );
        let paid = sale.await.unwrap().unwrap();
        assert_eq!(
            paid.value.payment.state(),
            tillgate_domain::PaymentState::Paid
        );
        let events = app.store().events_of(paid.value.id).await.unwrap();
        let progress: Vec<_> = events
            .iter()
            .filter(|e| e.kind == "terminal.progress")
            .map(|e| e.detail.clone())
            .collect();
        assert_eq!(progress, ["sale received", "sale shown", "sale processing"]);
        // The same result again changes nothing.
        up.send(Frame::Text(serde_json::to_string(&r).unwrap()))
            .await
            .unwrap();
        assert_eq!(next_down(&mut down).await, Down::Done { id: command.id });
        drop(up);
        session.await.unwrap();
    }

    #[tokio::test]
    async fn a_store_error_while_sending_a_command_leaves_no_waiter_behind() {
        let (kit, hub) = setup("waiter").await;
        let command = TerminalCommand {
            id: "C1".into(),
            kind: tillgate_core::terminal::CommandKind::Sale,
            transaction_no: "X".into(),
            amount_minor: 100,
            currency: "EUR".into(),
            description: None,
        };
        // T1 is not connected here, so the hub asks the database whether another node holds
        // it; with the store closed that read fails.
        kit.store.close().await;
        let sent = hub.execute("T1", &command, Duration::from_secs(1)).await;
        assert!(matches!(sent, Err(HubError::Store(_))), "{sent:?}");
        assert_eq!(hub.waiting(), 0, "the failed send left its waiter behind");
        let offline = hub
            .execute("nobody", &command, Duration::from_secs(1))
            .await;
        assert!(offline.is_err());
        assert_eq!(hub.waiting(), 0);
    }
}
