//! The janitor: asks the wallet about operations whose outcome it never told (a time-out, a
//! dropped answer, a crash), and records the answer. Nothing is ever closed by the passing of
//! time alone: money in flight stays in flight until the wallet says what happened.
//!
//! Each node runs one; they may ask about the same operation, which is harmless (queries read,
//! and settling is idempotent). When the wallet cannot answer about an operation yet, the next
//! question is scheduled in the operation's own row (`defer_query`), with a delay that doubles
//! up to five minutes; each round takes the operations whose question is due, longest due
//! first, so operations the wallet cannot answer never keep newer ones from being asked. Time
//! is the lifecycle's injected clock. Each round also forgets the signed requests whose replay
//! window has passed.

use chrono::Duration as Span;
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::service::Lifecycle;
use tillgate_core::Unresolved;

/// The janitor's questions to the wallet, by `outcome` (resolved, unanswered, error).
pub const QUERIES_METRIC: &str = "tillgate_janitor_queries_total";

/// Operations looked at per round (a bound).
pub const BATCH: i64 = 100;
/// The longest pause between two questions about one operation.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Resolves operations whose outcome is unknown.
pub struct Janitor {
    app: Arc<Lifecycle>,
    interval: Duration,
    /// Operations younger than this may still get their own answer.
    min_age: Duration,
}

/// How long to wait before asking again about an operation the wallet could not answer
/// `unanswered` times so far (one at least): the interval, doubled each time, at most
/// [`BACKOFF_MAX`].
pub fn backoff(interval: Duration, unanswered: i64) -> Duration {
    let doublings = u32::try_from(unanswered.clamp(1, 16)).unwrap_or(16);
    interval
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(BACKOFF_MAX)
}

impl Janitor {
    pub fn new(app: Arc<Lifecycle>, interval: Duration, min_age: Duration) -> Janitor {
        Janitor {
            app,
            interval,
            min_age,
        }
    }

    /// One round: asks about every operation whose question is due; returns how many got
    /// resolved.
    pub async fn round(&self) -> usize {
        if let Err(e) = self.app.replays().forget_expired().await {
            tracing::warn!(error = %e, "janitor cannot forget expired replays");
        }
        let now = self.app.now();
        let before = now - Span::from_std(self.min_age).unwrap_or(Span::seconds(10));
        let store = self.app.store();
        let due = match store.due_queries(before, now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "janitor cannot list unresolved operations");
                return 0;
            }
        };
        let mut resolved = 0;
        for op in due {
            let answer = self.app.resolve(&op).await;
            let outcome = match &answer {
                Ok(true) => "resolved",
                Ok(false) => "unanswered",
                Err(_) => "error",
            };
            metrics::counter!(QUERIES_METRIC, "outcome" => outcome).increment(1);
            match answer {
                Ok(true) => {
                    tracing::info!(transaction_no = %op.transaction_no, kind = ?op.kind, "resolved by asking the wallet");
                    resolved += 1;
                }
                Ok(false) => self.defer(&op).await,
                Err(e) => {
                    tracing::warn!(transaction_no = %op.transaction_no, error = %e, "janitor could not resolve an operation");
                    self.defer(&op).await;
                }
            }
        }
        resolved
    }

    /// Schedules the next question about an operation the wallet could not answer.
    async fn defer(&self, op: &Unresolved) {
        let delay = backoff(self.interval, op.unanswered_queries + 1);
        let next = self.app.now() + Span::from_std(delay).unwrap_or(Span::seconds(300));
        if let Err(e) = self.app.store().defer_query(op, next).await {
            tracing::warn!(transaction_no = %op.transaction_no, error = %e, "janitor cannot schedule its next question");
        }
    }

    /// Rounds until shutdown.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_from_the_interval_up_to_five_minutes() {
        let i = Duration::from_secs(5);
        assert_eq!(backoff(i, 1), Duration::from_secs(10));
        assert_eq!(backoff(i, 2), Duration::from_secs(20));
        assert_eq!(backoff(i, 5), Duration::from_secs(160));
        assert_eq!(backoff(i, 6), BACKOFF_MAX);
        assert_eq!(backoff(i, i64::MAX), BACKOFF_MAX);
        assert_eq!(backoff(i, 0), Duration::from_secs(10));
    }
}
