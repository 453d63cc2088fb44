//! The notification dispatcher.
//!
//! Notifications are rows of the outbox, written in the same transaction as the change they
//! report. The dispatcher of every node leases due rows (`Store::claim_notifications`: a lease
//! column, so nodes never send one row twice at once, and never a later notification of a
//! payment before an earlier one), renders and signs each in its dialect, POSTs it with a
//! time-out, records the attempt (time, HTTP status, first bytes of the answer, latency), and
//! either marks it delivered or schedules the next attempt. After the last attempt of the
//! schedule it is marked failed — kept, never dropped — for an operator to resend.
//!
//! Deliveries are independent: each runs as its own task, bounded by its own time-out, and is
//! recorded the moment it ends; a freed slot is filled at once. At most `max_in_flight`
//! deliveries run on a node, and at most `max_in_flight_per_merchant` POSTs to one merchant's
//! receivers are open at once (the claim skips a merchant at its limit, at the cost of one
//! index probe however long its backlog), so a receiver that never answers holds only its
//! merchant's slots, and other merchants' notifications go out on time. A slot is given back
//! when the receiver has answered, before the attempt is recorded.
//!
//! Notifications reach only the addresses the gateway's `UrlPolicy` allows: the URL is checked
//! again before each attempt (with the parser the client uses, so a URL stored before a policy
//! change is held to the current one), and host names are checked on the addresses they
//! resolve to, at connect time ([`client`]). Redirects are not followed.
//!
//! [`Dispatcher::run`] delivers until shutdown, sleeping until the next notification is due;
//! [`Dispatcher::try_dispatch`] does one round (lease what is due, deliver it, wait for all).

pub mod client;

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tillgate_core::notify::{RenderError, Renderer, Schedule, Snapshot, UrlPolicy};
use tillgate_core::Dialect;
use tillgate_core::{
    AttemptNext, AttemptRecord, NotificationClaim, OutboxRecord, Store, StoreError,
};
use tillgate_domain::Clock;
use tokio::task::{JoinError, JoinSet};

/// Notification attempts, by `dialect` and `outcome` (delivered, retry, failed).
pub const ATTEMPTS_METRIC: &str = "tillgate_notification_attempts_total";
/// Time of one attempt, rendering and POST, by `dialect`.
pub const ATTEMPT_SECONDS_METRIC: &str = "tillgate_notification_attempt_duration_seconds";
/// Deliveries this node has running.
pub const IN_FLIGHT_METRIC: &str = "tillgate_notifications_in_flight";

/// The most bytes of a merchant's answer that are read and kept.
const ANSWER_HEAD_BYTES: usize = 256;

/// Tunables of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// The gateway's schedule; a merchant's own overrides it from the second attempt on.
    pub schedule: Schedule,
    /// How long one delivery (rendering and POST) may take.
    pub timeout: Duration,
    /// How long a leased row stays with this node; longer than `timeout`, so a crashed node's
    /// rows return to the pool after it.
    pub lease: Duration,
    /// The most deliveries in flight at once on this node.
    pub max_in_flight: usize,
    /// The most POSTs to one merchant's receivers open at once on this node.
    pub max_in_flight_per_merchant: usize,
    /// The longest sleep between rounds (other nodes' rows, clock steps).
    pub idle_poll: Duration,
    /// Where notifications may go; the default allows public addresses only.
    pub urls: UrlPolicy,
}

/// Default of [`DispatcherConfig::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default of [`DispatcherConfig::max_in_flight_per_merchant`].
pub const DEFAULT_MAX_IN_FLIGHT_PER_MERCHANT: usize = 4;

impl Default for DispatcherConfig {
    fn default() -> DispatcherConfig {
        DispatcherConfig {
            schedule: Schedule::default(),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_merchant: DEFAULT_MAX_IN_FLIGHT_PER_MERCHANT,
            idle_poll: Duration::from_secs(1),
            urls: UrlPolicy::default(),
        }
    }
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    WillRetry,
    Failed,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub will_retry: usize,
    pub failed: usize,
}

impl Round {
    pub fn attempts(&self) -> usize {
        self.delivered + self.will_retry + self.failed
    }

    fn count(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Delivered => self.delivered += 1,
            Delivery::WillRetry => self.will_retry += 1,
            Delivery::Failed => self.failed += 1,
        }
    }
}

/// The deliveries this node has running: one task each, and how many of each merchant are
/// talking to its receiver.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<Result<Delivery, StoreError>>,
    posting: Posting,
}

type Landed = Result<(tokio::task::Id, Result<Delivery, StoreError>), JoinError>;

/// How many POSTs of each merchant are open. A merchant's slot is held from the lease until its
/// receiver has answered (or the time-out); recording the attempt happens outside it, so a
/// busy database does not throttle one merchant's deliveries to its slots per commit.
#[derive(Default, Clone)]
struct Posting(Arc<Mutex<HashMap<i64, i64>>>);

impl Posting {
    fn take(&self, merchant: i64) -> Slot {
        *self.lock().entry(merchant).or_insert(0) += 1;
        Slot {
            posting: self.clone(),
            merchant,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One merchant's slot, given back when dropped: after the POST, or when its task ends in any
/// way.
struct Slot {
    posting: Posting,
    merchant: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.posting.lock();
        if let Some(n) = map.get_mut(&self.merchant) {
            *n -= 1;
            if *n <= 0 {
                map.remove(&self.merchant);
            }
        }
    }
}

impl InFlight {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// What the claim must know: how many rows of each merchant this node is posting.
    fn held(&self) -> Vec<(i64, i64)> {
        self.posting.lock().iter().map(|(m, n)| (*m, *n)).collect()
    }

    /// Books a finished task out; returns its outcome.
    fn land(&mut self, landed: Landed) -> Result<Delivery, StoreError> {
        let outcome = match landed {
            Ok((_, outcome)) => outcome,
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "a notification delivery ended abnormally: {e}"
                )));
            }
        };
        self.report();
        outcome
    }

    /// Tells the metrics how many deliveries run.
    fn report(&self) {
        metrics::gauge!(IN_FLIGHT_METRIC).set(self.tasks.len() as f64);
    }
}

type ScheduleCache = HashMap<i64, (Instant, Option<Schedule>)>;

/// Sends the outbox's notifications.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    renderers: HashMap<Dialect, Arc<dyn Renderer>>,
    http: reqwest::Client,
    config: DispatcherConfig,
    wake: Arc<tokio::sync::Notify>,
    schedules: Mutex<ScheduleCache>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        renderers: HashMap<Dialect, Arc<dyn Renderer>>,
        config: DispatcherConfig,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Dispatcher, reqwest::Error> {
        let http = client::notification_client(config.urls.clone(), config.timeout)?;
        Ok(Dispatcher {
            store,
            clock,
            renderers,
            http,
            config,
            wake,
            schedules: Mutex::new(HashMap::new()),
        })
    }

    /// Leases what is due (as much as there are free slots) and attempts each once,
    /// concurrently; returns when all of them were recorded.
    pub async fn try_dispatch(self: &Arc<Self>) -> Result<Round, StoreError> {
        let mut flight = InFlight::default();
        // Every delivery started is waited for, whatever else fails: dropping the set would
        // abort them between their POST and its record.
        let mut failure = self.fill(&mut flight).await.err();
        let mut round = Round::default();
        while let Some(landed) = flight.tasks.join_next_with_id().await {
            match flight.land(landed) {
                Ok(delivery) => round.count(delivery),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(round),
        }
    }

    /// Runs deliveries until `shutdown` is signalled, then lets those in flight finish (each
    /// within its time-out) so that every attempt made is recorded.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut flight = InFlight::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.fill(&mut flight).await {
                tracing::warn!(error = %e, "leasing notifications failed; retrying");
            }
            let sleep = self.until_next_due().await;
            tokio::select! {
                Some(landed) = flight.tasks.join_next_with_id(), if flight.len() > 0 => {
                    if let Err(e) = flight.land(landed) {
                        tracing::warn!(error = %e, "a notification attempt was not recorded");
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        while let Some(landed) = flight.tasks.join_next_with_id().await {
            if let Err(e) = flight.land(landed) {
                tracing::warn!(error = %e, "a notification attempt was not recorded");
            }
        }
    }

    /// Leases due notifications into the free slots and starts a delivery for each; returns
    /// how many it started.
    async fn fill(self: &Arc<Self>, flight: &mut InFlight) -> Result<usize, StoreError> {
        let mut started = 0;
        loop {
            let free = self
                .config
                .max_in_flight
                .max(1)
                .saturating_sub(flight.len());
            if free == 0 {
                return Ok(started);
            }
            let now = self.clock.now();
            // A read first: leasing is a write, and an idle gateway should not commit (and
            // fsync) once a second for nothing.
            match self.store.next_notification_due().await? {
                Some(due) if due <= now => {}
                _ => return Ok(started),
            }
            let claim = NotificationClaim {
                now,
                lease_until: now
                    + chrono::Duration::from_std(self.config.lease)
                        .unwrap_or(chrono::Duration::seconds(60)),
                limit: i64::try_from(free).unwrap_or(i64::MAX),
                per_merchant: i64::try_from(self.config.max_in_flight_per_merchant.max(1))
                    .unwrap_or(i64::MAX),
                held: flight.held(),
            };
            let rows = self.store.claim_notifications(&claim).await?;
            if rows.is_empty() {
                return Ok(started);
            }
            for row in rows {
                let slot = flight.posting.take(row.merchant_id);
                let this = self.clone();
                flight
                    .tasks
                    .spawn(async move { this.attempt(row, slot).await });
                started += 1;
            }
            flight.report();
        }
    }

    /// How long to sleep: until the next notification is due, at most `idle_poll`.
    async fn until_next_due(&self) -> Duration {
        let due = match self.store.next_notification_due().await {
            Ok(Some(due)) => due,
            _ => return self.config.idle_poll,
        };
        // A row due already but not claimable (leased by another node, or waiting behind an
        // earlier notification of its payment) must not make this loop spin.
        (due - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(
                Duration::from_millis(250),
                self.config.idle_poll.max(Duration::from_millis(250)),
            )
    }

    /// The schedule of a merchant: its own, or the gateway's. Cached for a minute.
    async fn schedule_of(&self, merchant_id: i64) -> Schedule {
        if let Some((at, s)) = self
            .schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&merchant_id)
        {
            if at.elapsed() < Duration::from_secs(60) {
                return s.clone().unwrap_or_else(|| self.config.schedule.clone());
            }
        }
        let own = match self.store.merchant_by_id(merchant_id).await {
            Ok(Some(m)) => m.notify_schedule.and_then(|t| Schedule::parse(&t).ok()),
            _ => None,
        };
        let mut cache = self.schedules.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(merchant_id, (Instant::now(), own.clone()));
        own.unwrap_or_else(|| self.config.schedule.clone())
    }

    /// One attempt of one leased notification, recorded whatever happens. The merchant's
    /// `slot` is given back once the receiver has answered, and the loop woken to fill it.
    async fn attempt(&self, row: OutboxRecord, slot: Slot) -> Result<Delivery, StoreError> {
        let started = Instant::now();
        let at = self.clock.now();
        // The client bounds the POST; this bounds the whole delivery, rendering included.
        let (http_status, head, error, delivered) =
            match tokio::time::timeout(self.config.timeout, self.post(&row)).await {
                Ok(posted) => posted,
                Err(_) => (None, String::new(), Some("timed out".to_owned()), false),
            };
        drop(slot);
        self.wake.notify_one();
        let attempt = AttemptRecord {
            outbox_id: row.id,
            attempt: row.attempts + 1,
            at,
            http_status,
            response_head: head,
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            error,
        };
        let schedule = self.schedule_of(row.merchant_id).await;
        let made = usize::try_from(attempt.attempt).unwrap_or(usize::MAX);
        let (next, delivery) = if delivered {
            (AttemptNext::Delivered, Delivery::Delivered)
        } else {
            match schedule.next_after(made, at) {
                Some(when) => (AttemptNext::RetryAt(when), Delivery::WillRetry),
                None => (AttemptNext::Failed, Delivery::Failed),
            }
        };
        tracing::debug!(
            id = row.id,
            topic = %row.topic,
            attempt = attempt.attempt,
            status = ?attempt.http_status,
            ?delivery,
            "notification attempt"
        );
        let outcome = match delivery {
            Delivery::Delivered => "delivered",
            Delivery::WillRetry => "retry",
            Delivery::Failed => "failed",
        };
        let dialect = row.dialect.as_str();
        metrics::counter!(ATTEMPTS_METRIC, "dialect" => dialect, "outcome" => outcome).increment(1);
        metrics::histogram!(ATTEMPT_SECONDS_METRIC, "dialect" => dialect).record(started.elapsed());
        if delivery == Delivery::Failed {
            tracing::warn!(id = row.id, topic = %row.topic, "notification failed after its last attempt");
        }
        self.store.finish_attempt(attempt, next).await?;
        Ok(delivery)
    }

    /// Renders and POSTs; returns (HTTP status, first bytes of the answer, error, delivered).
    async fn post(&self, row: &OutboxRecord) -> (Option<i64>, String, Option<String>, bool) {
        // IP addresses in the URL never reach the resolver: they are checked here, on the
        // client's own reading of the URL, which is then what is sent.
        let url = match self.config.urls.parse(&row.target_url) {
            Ok(url) => url,
            Err(why) => {
                tracing::warn!(id = row.id, %why, "notification URL refused");
                return (
                    None,
                    String::new(),
                    Some(format!("refused: notifyUrl {why}")),
                    false,
                );
            }
        };
        let rendered = match self.render(row).await {
            Ok(r) => r,
            Err(e) => return (None, String::new(), Some(e.to_string()), false),
        };
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, rendered.content_type)
            .body(rendered.body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return (None, String::new(), Some(describe(&e)), false),
        };
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > ANSWER_HEAD_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let head = head_of(&body);
                    return (
                        Some(i64::from(status.as_u16())),
                        head,
                        Some(describe(&e)),
                        false,
                    );
                }
            }
        }
        let delivered =
            status.is_success() && body.len() <= ANSWER_HEAD_BYTES && rendered.ack.accepts(&body);
        (
            Some(i64::from(status.as_u16())),
            head_of(&body),
            None,
            delivered,
        )
    }

    async fn render(
        &self,
        row: &OutboxRecord,
    ) -> Result<tillgate_core::notify::Rendered, RenderError> {
        let snapshot = Snapshot::from_json(&row.snapshot, row.dialect)
            .map_err(|e| RenderError::Invalid(e.to_string()))?;
        let renderer = self.renderers.get(&row.dialect).ok_or_else(|| {
            RenderError::Invalid(format!("no renderer for dialect {}", row.dialect))
        })?;
        renderer.render(&snapshot).await
    }

    /// When the dispatcher's clock says it is.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

fn head_of(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(ANSWER_HEAD_BYTES)]).into_owned()
}

fn describe(e: &reqwest::Error) -> String {
    if let Some(forbidden) = client::forbidden_in(e) {
        format!("refused: {forbidden}")
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        // The error's own text, without the URL (it may carry a merchant's query secrets).
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(url.as_str(), "<notifyUrl>"),
            None => text,
        }
    }
}
