//! The store port: what the lifecycle service needs from a database.
//!
//! Every state change is one [`Store::mutate`] call: the backend loads the payment, runs the
//! decision closure against it, and writes the payment, the refund or cancel row, the audit
//! events and the outbox rows in one durable transaction, or nothing at all.

use crate::model::*;
use crate::terminal::{CommandRecord, TerminalRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tillgate_domain::{CancelRejected, CancelState, PayRejected, RefundRejected, RefundState};

/// Why the store could not do what was asked. None of these is the caller's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed; the operation did not happen.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique key is taken (a generated number clashed, or a concurrent insert won).
    #[error("unique key taken: {0}")]
    Conflict(&'static str),
    /// A stored row breaks an invariant; this is a bug or tampering, never input.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
}

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
    Insert(NewRefund),
    SetState { refund_id: i64, state: RefundState },
}

/// A change to a cancel row made with the payment.
#[derive(Debug, Clone)]
pub enum CancelWrite {
    Insert(NewCancel),
    SetState { cancel_id: i64, state: CancelState },
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
    pub command: Option<crate::terminal::NewCommand>,
    /// A condition checked in the same transaction: when it does not hold, nothing is written
    /// and the mutation answers `Rejected(Replay)`.
    pub guard: Option<Guard>,
}

/// A condition on a refund or cancel row that a change requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The refund is still in progress (state 1).
    RefundInProgress(i64),
    /// The cancel is still in progress (state 1).
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

/// How many write operations shared how many durable commits (group commit's effect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub operations: u64,
    pub commits: u64,
}

/// The answer of inserting a payment keyed by the merchant's reference.
#[derive(Debug, Clone)]
pub enum Inserted {
    Inserted(PaymentRecord),
    /// The merchant already has a payment with that reference.
    Existing(PaymentRecord),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a merchant, or returns the existing one with that number.
    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError>;
    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError>;
    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError>;
    /// The number of merchants created by sandbox mode.
    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError>;
    async fn add_store(
        &self,
        merchant_id: i64,
        store_no: &str,
        token_sealed: &str,
    ) -> Result<StoreAdded, StoreError>;
    async fn store_row(
        &self,
        merchant_no: &str,
        store_no: &str,
    ) -> Result<Option<StoreRow>, StoreError>;

    /// Inserts a payment with its "created" event, unless the merchant's reference is taken.
    async fn insert_payment(&self, p: NewPayment) -> Result<Inserted, StoreError>;
    async fn payment(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<PaymentRecord>, StoreError>;
    /// A payment by transaction number, whoever its merchant is (operator and wallet side only).
    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<Option<PaymentRecord>, StoreError>;
    async fn payment_by_id(&self, payment_id: i64) -> Result<Option<PaymentRecord>, StoreError>;
    async fn refunds_of(&self, payment_id: i64) -> Result<Vec<RefundRecord>, StoreError>;
    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError>;
    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError>;
    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError>;

    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError>;
    /// A cancel by its number; `merchant_id` `None` looks across merchants (wallet side only).
    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError>;

    /// Adds a unified-API app to a merchant (or returns the existing app's sealed secret).
    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError>;
    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError>;
    /// Sets (or clears) a merchant's own notification schedule.
    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Leases up to `claim.limit` due notifications until `claim.lease_until`, at most
    /// `claim.per_merchant` of one merchant counting those this node holds already. A
    /// notification is due when pending, its time has come, no other node holds its lease, and
    /// no earlier notification of the same payment is still pending (so a later state never
    /// overtakes an earlier one).
    async fn claim_notifications(
        &self,
        claim: &NotificationClaim,
    ) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Records an attempt and what follows it, releasing the lease.
    async fn finish_attempt(
        &self,
        attempt: AttemptRecord,
        next: AttemptNext,
    ) -> Result<(), StoreError>;
    /// When the next pending notification is due, if any.
    async fn next_notification_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError>;
    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError>;
    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError>;
    /// Makes notifications pending again, due at `now`; returns how many.
    async fn resend(&self, what: Resend, now: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError>;
    async fn terminal_row(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError>;
    /// Records that `node` holds the terminal's connection (or none), heard from at `at`.
    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Spends a handshake nonce; false when it was spent before. Forgets nonces older than
    /// `forget_before`.
    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Claims a merchant key that must be unique forever within `scope`; false when taken.
    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;
    async fn open_commands(&self, tid: &str) -> Result<Vec<CommandRecord>, StoreError>;
    /// Marks an open command done with its outcome; false when it was done already.
    async fn finish_command(
        &self,
        command_id: &str,
        outcome: &str,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Appends a line to a payment's timeline without changing the payment (terminal progress).
    async fn append_event(
        &self,
        payment_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
    /// Tells the other nodes that a command waits for delivery (PostgreSQL NOTIFY).
    async fn announce_command(&self, command_id: &str) -> Result<(), StoreError>;
    /// Announcements of other nodes' commands, when the backend has several nodes.
    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError>;

    /// Operations waiting for the wallet's answer since before `before`, oldest first.
    async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError>;

    /// Runs `decide` against the payment and writes its result atomically.
    async fn mutate(&self, payment_id: i64, decide: MutateFn) -> Result<Mutated, StoreError>;

    /// Like [`Store::mutate`], given the payment as the caller last read it. A backend may try
    /// the decision on that copy first to save a read (its version guards the write); it must
    /// not answer a rejection decided on that copy without deciding again on a fresh read.
    async fn mutate_from(
        &self,
        payment: &PaymentRecord,
        decide: MutateFn,
    ) -> Result<Mutated, StoreError> {
        self.mutate(payment.id, decide).await
    }

    /// Write operations committed and durable commits made since start.
    fn commit_stats(&self) -> CommitStats;

    /// Flushes and closes; acknowledged writes are already durable before this.
    async fn close(&self);
}
