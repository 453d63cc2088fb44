//! The janitor: asks the wallet about operations whose outcome it never told (a time-out, a
//! dropped answer, a crash), and records the answer. Nothing is ever closed by the passing of
//! time alone: money in flight stays in flight until the wallet says what happened.
//!
//! Each node runs one; they may ask about the same operation, which is harmless (queries read,
//! and settling is idempotent). An operation the wallet cannot answer yet is asked again later,
//! with a delay that doubles up to five minutes.

use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::service::Lifecycle;
use tillgate_core::{Unresolved, UnresolvedKind};
use tokio::time::Instant;

/// Operations looked at per round (a bound).
const BATCH: i64 = 100;
/// The longest pause between two questions about one operation.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Resolves operations whose outcome is unknown.
pub struct Janitor {
    app: Arc<Lifecycle>,
    interval: Duration,
    /// Operations younger than this may still get their own answer.
    min_age: Duration,
    backoff: HashMap<String, (u32, Instant)>,
}

fn key(op: &Unresolved) -> String {
    match &op.kind {
        UnresolvedKind::Payment => format!("p:{}", op.transaction_no),
        UnresolvedKind::Refund { refund_no } => format!("r:{refund_no}"),
        UnresolvedKind::Cancel { cancel_no } => format!("c:{cancel_no}"),
    }
}

impl Janitor {
    pub fn new(app: Arc<Lifecycle>, interval: Duration, min_age: Duration) -> Janitor {
        Janitor {
            app,
            interval,
            min_age,
            backoff: HashMap::new(),
        }
    }

    /// One round: asks about every due operation; returns how many got resolved.
    pub async fn round(&mut self) -> usize {
        let before = Utc::now()
            - chrono::Duration::from_std(self.min_age).unwrap_or(chrono::Duration::seconds(10));
        let waiting = match self.app.unresolved(before, BATCH).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "janitor cannot list unresolved operations");
                return 0;
            }
        };
        let now = Instant::now();
        let mut resolved = 0;
        let live: std::collections::HashSet<String> = waiting.iter().map(key).collect();
        self.backoff.retain(|k, _| live.contains(k));
        for op in waiting {
            let k = key(&op);
            if self.backoff.get(&k).is_some_and(|(_, next)| *next > now) {
                continue;
            }
            match self.app.resolve(&op).await {
                Ok(true) => {
                    tracing::info!(transaction_no = %op.transaction_no, kind = ?op.kind, "resolved by asking the wallet");
                    self.backoff.remove(&k);
                    resolved += 1;
                }
                Ok(false) | Err(_) => {
                    let tries = self.backoff.get(&k).map_or(0, |(n, _)| *n) + 1;
                    let delay =
                        (self.interval * 2u32.saturating_pow(tries.min(16))).min(BACKOFF_MAX);
                    self.backoff.insert(k, (tries, now + delay));
                }
            }
        }
        resolved
    }

    /// Rounds until shutdown.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.round().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
