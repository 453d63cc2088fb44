//! Every wallet call counted by operation and outcome, and timed: a wrapper around whichever
//! channel answers (the sandbox, an HTTP wallet, a merchant's own), so no channel counts for
//! itself.

use super::exporter::{WALLET_CALLS, WALLET_SECONDS};
use async_trait::async_trait;
use std::sync::Arc;
use tillgate_core::channel::{Channel, ChannelOp, ChannelReply};
use tillgate_domain::ChannelOutcome;

/// A channel whose calls are measured.
pub struct Measured {
    inner: Arc<dyn Channel>,
}

impl Measured {
    pub fn new(inner: Arc<dyn Channel>) -> Measured {
        Measured { inner }
    }
}

/// The operation's name as a label.
fn operation(op: &ChannelOp) -> &'static str {
    match op {
        ChannelOp::Pay { .. } => "pay",
        ChannelOp::Close { .. } => "close",
        ChannelOp::Reverse { .. } => "reverse",
        ChannelOp::Refund { .. } => "refund",
        ChannelOp::Query { .. } => "query",
    }
}

fn outcome(outcome: ChannelOutcome) -> &'static str {
    match outcome {
        ChannelOutcome::Approved => "approved",
        ChannelOutcome::Declined => "declined",
        ChannelOutcome::Unknown => "unknown",
    }
}

#[async_trait]
impl Channel for Measured {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        let operation = operation(&op);
        let started = std::time::Instant::now();
        let reply = self.inner.execute(op).await;
        metrics::counter!(WALLET_CALLS, "operation" => operation, "outcome" => outcome(reply.outcome))
            .increment(1);
        metrics::histogram!(WALLET_SECONDS, "operation" => operation).record(started.elapsed());
        reply
    }
}
