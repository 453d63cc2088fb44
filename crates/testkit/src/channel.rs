//! A wallet whose answers a test chooses, transaction by transaction.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tillgate_core::{Channel, ChannelOp, ChannelReply};
use tillgate_domain::ChannelOutcome;

/// Answers every operation with `default`, except on transactions given their own outcome;
/// records every operation asked.
pub struct ScriptedWallet {
    default: Mutex<ChannelOutcome>,
    by_transaction: Mutex<HashMap<String, ChannelOutcome>>,
    asked: Mutex<Vec<ChannelOp>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn transaction_of(op: &ChannelOp) -> &str {
    match op {
        ChannelOp::Pay { transaction_no, .. }
        | ChannelOp::Close { transaction_no, .. }
        | ChannelOp::Reverse { transaction_no, .. }
        | ChannelOp::Refund { transaction_no, .. }
        | ChannelOp::Query { transaction_no, .. } => transaction_no,
    }
}

impl ScriptedWallet {
    pub fn new(default: ChannelOutcome) -> ScriptedWallet {
        ScriptedWallet {
            default: Mutex::new(default),
            by_transaction: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// From now on, answer operations without their own outcome with `outcome`.
    pub fn answer(&self, outcome: ChannelOutcome) {
        *lock(&self.default) = outcome;
    }

    /// From now on, answer every operation on `transaction_no` with `outcome`.
    pub fn answer_for(&self, transaction_no: &str, outcome: ChannelOutcome) {
        lock(&self.by_transaction).insert(transaction_no.to_owned(), outcome);
    }

    /// Every operation asked so far, oldest first.
    pub fn asked(&self) -> Vec<ChannelOp> {
        lock(&self.asked).clone()
    }
}

#[async_trait]
impl Channel for ScriptedWallet {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        let outcome = lock(&self.by_transaction)
            .get(transaction_of(&op))
            .copied()
            .unwrap_or(*lock(&self.default));
        lock(&self.asked).push(op);
        ChannelReply::new(outcome)
    }
}
