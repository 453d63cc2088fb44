//! A wallet whose answers a test chooses: per transaction, per kind of operation, or in turn;
//! operations of a kind can be held inside the wallet until the test lets them answer.

use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use tillgate_core::{Channel, ChannelOp, ChannelReply};
use tillgate_domain::ChannelOutcome;
use tokio::sync::Semaphore;

/// Which kind of operation the wallet is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Pay,
    Refund,
    /// A void, close or reversal.
    Cancel,
    /// The janitor's question about an operation whose answer was unknown.
    Query,
}

impl OpKind {
    pub fn of(op: &ChannelOp) -> OpKind {
        match op {
            ChannelOp::Pay { .. } => OpKind::Pay,
            ChannelOp::Refund { .. } => OpKind::Refund,
            ChannelOp::Close { .. } | ChannelOp::Reverse { .. } => OpKind::Cancel,
            ChannelOp::Query { .. } => OpKind::Query,
        }
    }
}

/// Answers an operation with the outcome given for its transaction, else the next one given
/// for its kind (the last of those repeats), else `default`; records every operation asked.
pub struct ScriptedWallet {
    default: Mutex<ChannelOutcome>,
    by_transaction: Mutex<HashMap<String, ChannelOutcome>>,
    by_kind: Mutex<HashMap<OpKind, VecDeque<ChannelOutcome>>>,
    held: Mutex<HashSet<OpKind>>,
    /// A permit per held operation that reached the wallet.
    reached: Semaphore,
    /// A permit per held operation allowed to answer.
    released: Semaphore,
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
            by_kind: Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
            reached: Semaphore::new(0),
            released: Semaphore::new(0),
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

    /// From now on, answer operations of `kind` with `outcome`.
    pub fn answer_to(&self, kind: OpKind, outcome: ChannelOutcome) {
        self.answers_to(kind, &[outcome]);
    }

    /// From now on, answer operations of `kind` with `outcomes` in turn; the last one repeats.
    pub fn answers_to(&self, kind: OpKind, outcomes: &[ChannelOutcome]) {
        lock(&self.by_kind).insert(kind, outcomes.iter().copied().collect());
    }

    /// From now on, operations of `kind` wait inside the wallet, each until the test lets one
    /// go ([`ScriptedWallet::let_one_answer`]).
    pub fn hold(&self, kind: OpKind) {
        lock(&self.held).insert(kind);
    }

    /// Waits until a held operation has reached the wallet.
    pub async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets one held operation answer.
    pub fn let_one_answer(&self) {
        self.released.add_permits(1);
    }

    /// Every operation asked so far, oldest first.
    pub fn asked(&self) -> Vec<ChannelOp> {
        lock(&self.asked).clone()
    }

    /// How many operations of `kind` were asked so far.
    pub fn asked_to(&self, kind: OpKind) -> usize {
        lock(&self.asked)
            .iter()
            .filter(|op| OpKind::of(op) == kind)
            .count()
    }

    fn outcome(&self, op: &ChannelOp) -> ChannelOutcome {
        if let Some(outcome) = lock(&self.by_transaction).get(transaction_of(op)) {
            return *outcome;
        }
        let mut by_kind = lock(&self.by_kind);
        match by_kind.get_mut(&OpKind::of(op)) {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap_or(ChannelOutcome::Unknown),
            Some(queue) => queue.front().copied().unwrap_or(ChannelOutcome::Unknown),
            None => *lock(&self.default),
        }
    }
}

#[async_trait]
impl Channel for ScriptedWallet {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        lock(&self.asked).push(op.clone());
        if lock(&self.held).contains(&OpKind::of(&op)) {
            self.reached.add_permits(1);
            if let Ok(permit) = self.released.acquire().await {
                permit.forget();
            }
        }
        ChannelReply::new(self.outcome(&op))
    }
}
