//! The simulated world outside the gateway: the wallet and the POS terminals, one ledger of
//! the money they really moved, and the faults they inject — all decided by one seeded PRNG,
//! in the order the simulation calls them, so a seed replays exactly.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tillgate_core::terminal::{
    CommandKind, HubError, TerminalCommand, TerminalEvent, TerminalHub, TerminalReport,
    TerminalResult,
};
use tillgate_core::{Channel, ChannelOp, ChannelReply, LifecycleError, QueryTarget, StoreError};
use tillgate_domain::ChannelOutcome;
use tokio::sync::{mpsc, oneshot, Notify};

/// A small seeded PRNG (SplitMix64): the only source of choices in a simulation.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into a table of weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut roll = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }
}

/// What the world really did with one transaction's money.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// Minor units taken from the customer.
    pub taken: i64,
    /// Minor units given back (refunds, reversals, closes after payment).
    pub returned: i64,
    /// What became of the payment, once the wallet or terminal decided.
    pub pay: Option<ChannelOutcome>,
    /// The transaction was abandoned or reversed: later payments of it are declined.
    pub closed: bool,
    /// What became of the transaction's last cancel (close or reverse).
    pub cancel: Option<ChannelOutcome>,
    /// How many cancels of the transaction reached the wallet or a terminal.
    pub cancels: u32,
}

/// A late answer the wallet still owes the gateway (a callback).
#[derive(Debug, Clone)]
pub enum Callback {
    Payment {
        transaction_no: String,
        outcome: ChannelOutcome,
    },
    Refund {
        transaction_no: String,
        refund_no: String,
        outcome: ChannelOutcome,
    },
    Cancel {
        transaction_no: String,
        outcome: ChannelOutcome,
        /// The gateway's number of the cancel, as the wallet was told it.
        cancel_no: String,
        /// Which of the transaction's cancels it reports on (the wallet's own count).
        attempt: u32,
    },
}

/// How the wallet treats one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Does it and answers.
    Answer,
    /// Does it, answers, and calls back with the same answer later.
    Twice,
    /// Does it; the answer is lost (a time-out), a callback comes later.
    Late,
    /// Does it; the answer is lost and no callback comes: only a query finds out.
    Timeout,
    /// Crashes before doing it: the gateway hears nothing.
    Lost,
    /// The gateway crashes while waiting (the operation done or not).
    GatewayCrash,
}

/// The wallet and terminals' shared truth.
pub struct World {
    rng: Prng,
    pub accounts: HashMap<String, Account>,
    pub refunds: HashMap<String, (String, i64, ChannelOutcome)>,
    pub callbacks: Vec<Callback>,
    /// While true, the wallet injects faults; the simulation's last phase turns them off.
    pub faults: bool,
    pub stats: WorldStats,
}

/// What the world did, for the simulation's summary.
#[derive(Debug, Clone, Default)]
pub struct WorldStats {
    pub operations: u64,
    pub lost: u64,
    pub late: u64,
    pub twice: u64,
    pub timeouts: u64,
    pub gateway_crashes: u64,
    pub queries_unanswered: u64,
    pub terminal_commands: u64,
    /// Late cancel callbacks that arrived while a later cancel of the same transaction was in
    /// progress (they name their own cancel, which must be the one they settle).
    pub stale_cancel_callbacks: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            rng: Prng::new(seed.wrapping_mul(31).wrapping_add(7)),
            accounts: HashMap::new(),
            refunds: HashMap::new(),
            callbacks: Vec::new(),
            faults: true,
            stats: WorldStats::default(),
        }
    }

    fn fate(&mut self) -> Fate {
        if !self.faults {
            return Fate::Answer;
        }
        match self.rng.weighted(&[60, 8, 10, 8, 8, 6]) {
            0 => Fate::Answer,
            1 => Fate::Twice,
            2 => Fate::Late,
            3 => Fate::Timeout,
            4 => Fate::Lost,
            _ => Fate::GatewayCrash,
        }
    }

    /// A payment of `amount` asked of the wallet or a terminal.
    fn take(&mut self, transaction_no: &str, amount: i64) -> ChannelOutcome {
        let approve = self.rng.chance(85);
        let acct = self.accounts.entry(transaction_no.to_owned()).or_default();
        if acct.closed || acct.pay.is_some() {
            return acct.pay.unwrap_or(ChannelOutcome::Declined);
        }
        let outcome = if approve {
            acct.taken += amount;
            ChannelOutcome::Approved
        } else {
            ChannelOutcome::Declined
        };
        acct.pay = Some(outcome);
        outcome
    }

    /// A close or reversal: everything taken goes back and the transaction is closed.
    fn close(&mut self, transaction_no: &str) -> ChannelOutcome {
        let approve = self.rng.chance(88);
        let acct = self.accounts.entry(transaction_no.to_owned()).or_default();
        let outcome = if approve {
            acct.returned = acct.taken;
            acct.closed = true;
            ChannelOutcome::Approved
        } else {
            ChannelOutcome::Declined
        };
        acct.cancel = Some(outcome);
        acct.cancels += 1;
        outcome
    }

    /// A refund; a trusting wallet returns what the gateway asks.
    fn refund(&mut self, transaction_no: &str, refund_no: &str, amount: i64) -> ChannelOutcome {
        if let Some((_, _, outcome)) = self.refunds.get(refund_no) {
            return *outcome;
        }
        let outcome = if self.rng.chance(90) {
            let acct = self.accounts.entry(transaction_no.to_owned()).or_default();
            acct.returned += amount;
            ChannelOutcome::Approved
        } else {
            ChannelOutcome::Declined
        };
        self.refunds.insert(
            refund_no.to_owned(),
            (transaction_no.to_owned(), amount, outcome),
        );
        outcome
    }

    /// The truth about an earlier operation; what the wallet never received is declined (and
    /// would be refused should it still arrive).
    fn query(&mut self, transaction_no: &str, target: &QueryTarget) -> ChannelOutcome {
        if self.faults && self.rng.chance(20) {
            self.stats.queries_unanswered += 1;
            return ChannelOutcome::Unknown;
        }
        let acct = self.accounts.entry(transaction_no.to_owned()).or_default();
        match target {
            QueryTarget::Payment => *acct.pay.get_or_insert(ChannelOutcome::Declined),
            QueryTarget::Cancel { .. } => acct.cancel.unwrap_or(ChannelOutcome::Declined),
            QueryTarget::Refund { refund_no } => {
                let entry = self.refunds.entry(refund_no.clone()).or_insert((
                    transaction_no.to_owned(),
                    0,
                    ChannelOutcome::Declined,
                ));
                entry.2
            }
        }
    }

    /// Does `op`; the outcome.
    fn apply(&mut self, op: &ChannelOp) -> ChannelOutcome {
        match op {
            ChannelOp::Pay {
                transaction_no,
                amount,
                ..
            } => self.take(transaction_no, amount.minor()),
            ChannelOp::Close { transaction_no, .. } | ChannelOp::Reverse { transaction_no, .. } => {
                self.close(transaction_no)
            }
            ChannelOp::Refund {
                transaction_no,
                refund_no,
                amount,
            } => self.refund(transaction_no, refund_no, amount.minor()),
            ChannelOp::Query {
                transaction_no,
                operation,
                ..
            } => self.query(transaction_no, operation),
        }
    }

    /// A terminal's result for `command`, decided now (the terminal takes or returns money).
    pub fn terminal_result(&mut self, command: &TerminalCommand) -> ChannelOutcome {
        self.stats.terminal_commands += 1;
        match command.kind {
            CommandKind::Sale => self.take(&command.transaction_no, command.amount_minor),
            CommandKind::Reversal | CommandKind::Cancel => self.close(&command.transaction_no),
        }
    }

    /// Chooses which pending callback comes next, and takes it.
    pub fn next_callback(&mut self) -> Option<Callback> {
        if self.callbacks.is_empty() {
            return None;
        }
        let i = self.rng.below(self.callbacks.len() as u64) as usize;
        Some(self.callbacks.swap_remove(i))
    }

    /// A choice of the world's own (a terminal's plan, say).
    pub fn roll(&mut self, weights: &[u64]) -> usize {
        self.rng.weighted(weights)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The simulated wallet: a [`Channel`] that does what the [`World`] decides.
pub struct SimWallet {
    pub world: Arc<Mutex<World>>,
    /// Notified when the gateway "crashes" inside a wallet call.
    pub crashed: Arc<Notify>,
    /// Set while the simulation watches for a crash (only around its own requests).
    pub crash_armed: AtomicBool,
}

impl SimWallet {
    pub fn new(world: Arc<Mutex<World>>) -> SimWallet {
        SimWallet {
            world,
            crashed: Arc::new(Notify::new()),
            crash_armed: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Channel for SimWallet {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        let crash = {
            let mut w = lock(&self.world);
            if let ChannelOp::Query { .. } = op {
                return ChannelReply::new(w.apply(&op));
            }
            w.stats.operations += 1;
            let mut fate = w.fate();
            if fate == Fate::GatewayCrash && !self.crash_armed.load(Ordering::SeqCst) {
                fate = Fate::Timeout;
            }
            let done = match fate {
                Fate::Lost => false,
                Fate::GatewayCrash => w.rng.chance(50),
                _ => true,
            };
            let outcome = done.then(|| w.apply(&op));
            if let (Some(outcome), Fate::Twice | Fate::Late) = (outcome, fate) {
                let callback = match &op {
                    ChannelOp::Pay { transaction_no, .. } => Callback::Payment {
                        transaction_no: transaction_no.clone(),
                        outcome,
                    },
                    ChannelOp::Refund {
                        transaction_no,
                        refund_no,
                        ..
                    } => Callback::Refund {
                        transaction_no: transaction_no.clone(),
                        refund_no: refund_no.clone(),
                        outcome,
                    },
                    ChannelOp::Close {
                        transaction_no,
                        cancel_no,
                        ..
                    }
                    | ChannelOp::Reverse {
                        transaction_no,
                        cancel_no,
                        ..
                    } => Callback::Cancel {
                        transaction_no: transaction_no.clone(),
                        cancel_no: cancel_no.clone(),
                        outcome,
                        attempt: w.accounts.get(transaction_no).map_or(0, |a| a.cancels),
                    },
                    ChannelOp::Query { transaction_no, .. } => Callback::Payment {
                        transaction_no: transaction_no.clone(),
                        outcome,
                    },
                };
                w.callbacks.push(callback);
            }
            match fate {
                Fate::Answer => {
                    return ChannelReply::new(outcome.unwrap_or(ChannelOutcome::Unknown))
                }
                Fate::Twice => {
                    w.stats.twice += 1;
                    return ChannelReply::new(outcome.unwrap_or(ChannelOutcome::Unknown));
                }
                Fate::Late => w.stats.late += 1,
                Fate::Timeout => w.stats.timeouts += 1,
                Fate::Lost => w.stats.lost += 1,
                Fate::GatewayCrash => w.stats.gateway_crashes += 1,
            }
            fate == Fate::GatewayCrash
        };
        if crash {
            // The gateway dies while it waits: the simulation drops this call's future.
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        ChannelReply::new(ChannelOutcome::Unknown)
    }
}

/// What the terminal does with the next command sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalPlan {
    /// Connected; answers at once with what the world decides.
    Answer,
    /// Connected; no result within the wait (the command stays open until it reports).
    Silent,
    /// Connected when asked, gone when the command is sent.
    Vanish,
    Offline,
}

/// Terminals that do what the world decides, reporting results as the real hub does.
pub struct SimHub {
    events: mpsc::Sender<TerminalEvent>,
    world: Arc<Mutex<World>>,
    plan: Mutex<TerminalPlan>,
}

impl SimHub {
    pub fn new(events: mpsc::Sender<TerminalEvent>, world: Arc<Mutex<World>>) -> SimHub {
        SimHub {
            events,
            world,
            plan: Mutex::new(TerminalPlan::Answer),
        }
    }

    /// What the terminals do with the next command.
    pub fn plan(&self, plan: TerminalPlan) {
        *lock(&self.plan) = plan;
    }

    /// Reports a terminal's result as the real hub does, and waits until it is applied.
    pub async fn report(
        &self,
        command_id: &str,
        result: TerminalResult,
    ) -> Result<(), LifecycleError> {
        let (applied, done) = oneshot::channel();
        let report = TerminalReport::Result {
            command_id: command_id.to_owned(),
            result,
        };
        let gone = || LifecycleError::Store(StoreError::Unavailable("lifecycle gone".into()));
        self.events
            .send(TerminalEvent { report, applied })
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl TerminalHub for SimHub {
    async fn is_online(&self, _tid: &str) -> Result<bool, StoreError> {
        Ok(*lock(&self.plan) != TerminalPlan::Offline)
    }

    async fn execute(
        &self,
        _tid: &str,
        command: &TerminalCommand,
        _wait: std::time::Duration,
    ) -> Result<TerminalResult, HubError> {
        let plan = *lock(&self.plan);
        match plan {
            TerminalPlan::Offline | TerminalPlan::Vanish => return Err(HubError::Offline),
            TerminalPlan::Silent => {
                return Ok(TerminalResult {
                    outcome: ChannelOutcome::Unknown,
                    message: None,
                })
            }
            TerminalPlan::Answer => {}
        }
        let outcome = lock(&self.world).terminal_result(command);
        let result = TerminalResult {
            outcome,
            message: Some("simulated terminal".into()),
        };
        self.report(&command.id, result.clone())
            .await
            .map_err(|e| match e {
                LifecycleError::Store(e) => HubError::Store(e),
                other => HubError::Store(StoreError::Corrupt(other.to_string())),
            })?;
        Ok(result)
    }
}
