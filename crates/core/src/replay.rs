//! The exact-replay guard (rule 14): a signed request that carries no key of the merchant's
//! (a Pockyt refund without `refundReference`, a YabandPay refund without `m_refund_id`) could
//! be captured and sent again, and each copy would act. The guard remembers each such
//! request's signature, per merchant, in the database (so it holds across nodes) for a window:
//! a copy within the window gets the first answer, byte for byte, instead of acting again; a
//! copy while the first is still being answered gets the dialect's retryable error.

use crate::store::{ReplayStore, StoreError};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tillgate_domain::Clock;

/// An answer as it was sent: what a replay gets again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What the guard found for a request.
#[derive(Debug)]
pub enum ReplayCheck {
    /// Not seen within the window: act, then [`ReplayTicket::finish`] with the answer.
    Fresh(ReplayTicket),
    /// Seen and answered: send this again.
    Answered(StoredAnswer),
    /// Seen and still being answered (or its answer was lost in a crash): retry later.
    InFlight,
}

/// The right to act on a fresh request, and to record its answer.
#[derive(Debug)]
pub struct ReplayTicket {
    merchant_id: i64,
    digest: String,
    claimed_at: DateTime<Utc>,
}

/// Remembers signed requests for a window.
pub struct ReplayGuard {
    store: Arc<dyn ReplayStore>,
    clock: Arc<dyn Clock>,
    window: chrono::Duration,
}

/// The key a request is remembered by: a digest of what identifies it exactly. Hex signatures
/// verify in either case, so the signature is folded to lower case first: a copy with its
/// signature in capitals is the same request.
pub fn digest(dialect: &str, method: &str, signature: &str) -> String {
    let signature = signature.trim().to_ascii_lowercase();
    let mut h = Sha256::new();
    for part in [dialect, method, signature.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

impl ReplayGuard {
    pub fn new(
        store: Arc<dyn ReplayStore>,
        clock: Arc<dyn Clock>,
        window: std::time::Duration,
    ) -> ReplayGuard {
        ReplayGuard {
            store,
            clock,
            window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(10)),
        }
    }

    /// How long a request is remembered.
    pub fn window(&self) -> chrono::Duration {
        self.window
    }

    /// Looks the request up, claiming it when it is fresh. `digest` comes from [`digest`].
    pub async fn check(&self, merchant_id: i64, digest: String) -> Result<ReplayCheck, StoreError> {
        // Twice at most: a remembered request whose window ends between the claim and the read
        // is claimed on the second turn.
        for _ in 0..2 {
            let now = self.clock.now();
            let window_start = now - self.window;
            if self
                .store
                .claim_replay(merchant_id, &digest, now, window_start)
                .await?
            {
                return Ok(ReplayCheck::Fresh(ReplayTicket {
                    merchant_id,
                    digest,
                    claimed_at: now,
                }));
            }
            match self.store.replay_answer(merchant_id, &digest).await? {
                Some(Some(answer)) => return Ok(ReplayCheck::Answered(answer)),
                Some(None) => return Ok(ReplayCheck::InFlight),
                None => continue,
            }
        }
        Ok(ReplayCheck::InFlight)
    }

    /// Records the answer of a fresh request, for its replays.
    pub async fn finish(
        &self,
        ticket: ReplayTicket,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        self.store
            .answer_replay(
                ticket.merchant_id,
                &ticket.digest,
                ticket.claimed_at,
                answer,
            )
            .await
    }

    /// Acts on a request once per window: a fresh request runs `act` and its answer is
    /// remembered (an answer of status 500 or more is not: the request may be tried again);
    /// a copy within the window gets the first answer without acting; `None` while the first
    /// is still being answered. A store failure is an error before anything acted.
    pub async fn run<F, Fut>(
        &self,
        merchant_id: i64,
        digest: String,
        act: F,
    ) -> Result<Option<StoredAnswer>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = StoredAnswer>,
    {
        let ticket = match self.check(merchant_id, digest).await? {
            ReplayCheck::Fresh(ticket) => ticket,
            ReplayCheck::Answered(answer) => {
                crate::note::replayed();
                return Ok(Some(answer));
            }
            ReplayCheck::InFlight => return Ok(None),
        };
        let answer = act().await;
        let recorded = if answer.status >= 500 {
            self.release(ticket).await
        } else {
            self.finish(ticket, &answer).await
        };
        if let Err(e) = recorded {
            // The request acted and is answered; its copies meet an unanswered claim (in
            // flight) until the window passes.
            tracing::warn!(error = %e, "the answer of a guarded request was not remembered");
        }
        Ok(Some(answer))
    }

    /// Gives a fresh request's claim up without an answer (it failed in a way worth retrying:
    /// the retry acts again).
    pub async fn release(&self, ticket: ReplayTicket) -> Result<(), StoreError> {
        self.store
            .release_replay(ticket.merchant_id, &ticket.digest, ticket.claimed_at)
            .await
    }

    /// Forgets requests whose window has passed; returns how many.
    pub async fn forget_expired(&self) -> Result<u64, StoreError> {
        let before = self.clock.now() - self.window;
        self.store.forget_replays(before).await
    }
}
