//! What one state change writes: the decision closure run inside the store's transaction, and
//! the rows it asks the backend to write with the payment.

use crate::model::*;
use crate::terminal::{CommandOutcome, NewCommand};
use chrono::{DateTime, Utc};
use tillgate_domain::{CancelRejected, CancelState, PayRejected, RefundRejected, RefundState};

/// A domain rule said no; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Pay(PayRejected),
    Refund(RefundRejected),
    Cancel(CancelRejected),
    /// Nothing to do: the payment already is where the request would take it (an idempotent
    /// retry, or a late duplicate answer of the wallet).
    Replay,
}

/// A change to a refund row made with the payment.
#[derive(Debug, Clone)]
pub enum RefundWrite {
    /// A new refund, in progress (its amount is reserved on the payment in the same change).
    Insert(NewRefund),
    SetState {
        refund_id: i64,
        state: RefundState,
    },
}

/// A change to a cancel row made with the payment.
#[derive(Debug, Clone)]
pub enum CancelWrite {
    /// A new cancel, in progress.
    Insert(NewCancel),
    SetState {
        cancel_id: i64,
        state: CancelState,
    },
}

/// A notification to enqueue in the outbox with the state change.
#[derive(Debug, Clone)]
pub struct OutboxWrite {
    /// The dialect that renders it.
    pub dialect: Dialect,
    pub topic: Topic,
    pub target_url: String,
    /// What the notification reports, frozen at the time of the change (`Snapshot::to_json`).
    pub snapshot: String,
    /// When its first attempt is due.
    pub first_attempt_at: DateTime<Utc>,
}

/// A terminal command finished by the change that applies its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishCommand {
    pub command_id: String,
    pub outcome: CommandOutcome,
    pub message: Option<String>,
}

/// Everything a decision writes besides the payment itself.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub at: Option<DateTime<Utc>>,
    pub refund: Option<RefundWrite>,
    pub cancel: Option<CancelWrite>,
    /// (kind, detail) lines of the audit timeline.
    pub events: Vec<(String, String)>,
    pub outbox: Vec<OutboxWrite>,
    /// A terminal command to write with the change; it refers to the cancel written with it,
    /// if any.
    pub command: Option<NewCommand>,
    /// A terminal command this change finishes (the one whose result it applies); an already
    /// finished command stays as it is.
    pub finish_command: Option<FinishCommand>,
    /// A condition checked in the same transaction: when it does not hold, nothing is written
    /// and the mutation answers `Rejected(Replay)`.
    pub guard: Option<Guard>,
    /// The refund this change inserts is held for a second person's approval: its approval
    /// row (asked by the merchant API, pending) is written with it, and the refund stays
    /// reserved and in progress, never sent to the wallet, until the approval is decided.
    pub hold: bool,
    /// A new creation time for the payment. Only the sandbox's ageing moves it: an ordinary
    /// change never writes `created_at`, whatever the record it decided on says.
    pub created_at: Option<DateTime<Utc>>,
}

/// A condition on a refund or cancel row that a change requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The refund is still in progress.
    RefundInProgress(i64),
    /// The cancel is still in progress.
    CancelInProgress(i64),
}

impl Writes {
    pub fn at(at: DateTime<Utc>) -> Writes {
        Writes {
            at: Some(at),
            ..Writes::default()
        }
    }

    pub fn event(mut self, kind: &str, detail: String) -> Writes {
        self.events.push((kind.to_owned(), detail));
        self
    }
}

/// The decision run inside the store's transaction against the current payment. A backend may
/// run it more than once (on a fresh copy of the payment each time) when a concurrent change won
/// a compare-and-swap; only the run whose writes commit counts.
pub type MutateFn = Box<dyn FnMut(&mut PaymentRecord) -> Result<Writes, Rejection> + Send>;

/// What a mutation did. Returned once per change and moved, never stored: not worth boxing.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Mutated {
    Done {
        payment: PaymentRecord,
        refund: Option<RefundRecord>,
        cancel: Option<CancelRecord>,
    },
    /// Nothing was written; the payment as it stands is returned.
    Rejected(Rejection, PaymentRecord),
}

/// The answer of inserting a payment keyed by the merchant's reference.
#[derive(Debug, Clone)]
pub enum Inserted {
    Inserted(PaymentRecord),
    /// The merchant already has a payment with that reference.
    Existing(PaymentRecord),
}
