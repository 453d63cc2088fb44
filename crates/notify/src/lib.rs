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
//! Notifications reach only the addresses the gateway's `UrlPolicy` allows: the URL is checked
//! again before each attempt (with the parser the client uses, so a URL stored before a policy
//! change is held to the current one), and host names are checked on the addresses they
//! resolve to, at connect time ([`client`]). Redirects are not followed.
//!
//! [`Dispatcher::try_dispatch`] does one round and says what it did; [`Dispatcher::run`] loops
//! it until shutdown, sleeping until the next notification is due.

pub mod client;

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tillgate_core::notify::{RenderError, Renderer, Schedule, Snapshot, UrlPolicy};
use tillgate_core::Dialect;
use tillgate_core::{AttemptNext, AttemptRecord, OutboxRecord, Store, StoreError};
use tillgate_domain::Clock;

/// The most bytes of a merchant's answer that are read and kept.
const ANSWER_HEAD_BYTES: usize = 256;

/// Tunables of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// The gateway's schedule; a merchant's own overrides it from the second attempt on.
    pub schedule: Schedule,
    /// How long one POST may take.
    pub timeout: Duration,
    /// How long a leased row stays with this node; longer than `timeout`, so a crashed node's
    /// rows return to the pool after it.
    pub lease: Duration,
    /// Rows leased per round, and so the most POSTs in flight at once.
    pub batch: i64,
    /// The longest sleep between rounds (other nodes' rows, clock steps).
    pub idle_poll: Duration,
    /// Where notifications may go; the default allows public addresses only.
    pub urls: UrlPolicy,
}

impl Default for DispatcherConfig {
    fn default() -> DispatcherConfig {
        DispatcherConfig {
            schedule: Schedule::default(),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            batch: 32,
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

    /// Leases the due notifications and attempts each once, concurrently.
    pub async fn try_dispatch(&self) -> Result<Round, StoreError> {
        let now = self.clock.now();
        // A read first: leasing is a write, and an idle gateway should not commit (and fsync)
        // once a second for nothing.
        match self.store.next_notification_due().await? {
            Some(due) if due <= now => {}
            _ => return Ok(Round::default()),
        }
        let lease_until = now
            + chrono::Duration::from_std(self.config.lease)
                .unwrap_or(chrono::Duration::seconds(60));
        let rows = self
            .store
            .claim_notifications(now, lease_until, self.config.batch)
            .await?;
        let mut round = Round::default();
        // The batch is bounded, so its POSTs may all be in flight at once.
        let outcomes =
            futures_util::future::join_all(rows.into_iter().map(|row| self.attempt(row))).await;
        for outcome in outcomes {
            match outcome? {
                Delivery::Delivered => round.delivered += 1,
                Delivery::WillRetry => round.will_retry += 1,
                Delivery::Failed => round.failed += 1,
            }
        }
        Ok(round)
    }

    /// Runs rounds until `shutdown` is signalled.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let busy = match self.try_dispatch().await {
                Ok(round) => round.attempts() > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "notification round failed; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            let sleep = self.until_next_due().await;
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
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

    /// One attempt of one leased notification, recorded whatever happens.
    async fn attempt(&self, row: OutboxRecord) -> Result<Delivery, StoreError> {
        let started = Instant::now();
        let at = self.clock.now();
        let (http_status, head, error, delivered) = self.post(&row).await;
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
