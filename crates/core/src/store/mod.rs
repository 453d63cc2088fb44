//! The store port: what the gateway needs from a database, split by concern.
//!
//! - [`PaymentStore`]: payments, their refunds, cancels and timeline, and every state change as
//!   one [`PaymentStore::mutate`]: the backend loads the payment, runs the decision closure
//!   against it, and writes the payment, the refund or cancel row, the audit events, the outbox
//!   rows and the terminal command in one durable transaction, or nothing at all. It also keeps
//!   the janitor's schedule of questions to the wallet.
//! - [`OutboxStore`]: notifications and their delivery attempts.
//! - [`CredentialStore`]: merchants, stores, apps, terminals and once-only request keys.
//! - [`TerminalStore`]: terminal presence, handshake nonces and terminal commands.
//! - [`ReplayStore`]: the exact-replay guard's memory of signed requests.
//! - [`BooksStore`]: the books: fee plans, the booked operations page by page, reconciliation
//!   runs and their cases.
//!
//! [`Store`] is all four, with the store's life (commit counters, health, backlog, close).
//! Each backend is one struct implementing every part, so a part can be handed to a component
//! on its own (`Arc<dyn Store>` coerces to `Arc<dyn OutboxStore>` and the others).

mod writes;

pub use writes::*;

use crate::books::{
    BookEntry, BookQuery, CaseFilter, CaseRecord, FeePlan, LineKey, NewCase, RunRecord,
};
use crate::model::*;
use crate::replay::StoredAnswer;
use crate::terminal::{CommandOutcome, CommandRecord, Presence, TerminalRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Why a unique key could not be taken. Named, so callers match a kind, never a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A unique key is taken: a generated number clashed, or a concurrent insert won.
    #[error("a unique key is taken")]
    UniqueKey,
    /// The database could not serialize concurrent changes (or found a deadlock); the change
    /// did not happen and may be tried again.
    #[error("concurrent changes could not be serialized")]
    Serialization,
    /// Freshly generated transaction numbers kept clashing.
    #[error("no free transaction number")]
    TransactionNo,
    /// The unified-API app id belongs to another merchant.
    #[error("app_id belongs to another merchant")]
    AppOfAnotherMerchant,
    /// The terminal id belongs to another merchant.
    #[error("tid belongs to another merchant")]
    TerminalOfAnotherMerchant,
}

/// Why the store could not do what was asked. None of these is the caller's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed; the operation did not happen.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(Conflict),
    /// A stored row breaks an invariant; this is a bug or tampering, never input.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database does not exist, or holds no tillgate data, and was opened not to create
    /// it (operator commands never create a database they were pointed at).
    #[error("{0}")]
    Missing(String),
}

impl From<Conflict> for StoreError {
    fn from(c: Conflict) -> StoreError {
        StoreError::Conflict(c)
    }
}

/// How many write operations shared how many durable commits (group commit's effect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub operations: u64,
    pub commits: u64,
}

/// What waits to be done, counted for the metrics: notifications not yet delivered, and
/// operations whose outcome only the wallet can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Notifications pending, due now or later.
    pub notifications_pending: i64,
    /// Of those, the ones already due (waiting for a free slot, or for an earlier notification
    /// of their payment).
    pub notifications_due: i64,
    /// Operations waiting for the wallet's answer: what `tillgate unresolved` lists.
    pub unresolved: i64,
}

/// Payments, their refunds, cancels and timelines, and the changes that move their money.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
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
    /// The merchant's payment named by `key` with its refunds, oldest first (a query's answer).
    /// A backend may read both with one statement.
    async fn payment_with_refunds(
        &self,
        merchant_id: i64,
        key: &PaymentKey,
    ) -> Result<Option<(PaymentRecord, Vec<RefundRecord>)>, StoreError> {
        let Some(payment) = self.payment(merchant_id, key).await? else {
            return Ok(None);
        };
        let refunds = self.refunds_of(payment.id).await?;
        Ok(Some((payment, refunds)))
    }
    async fn refund_by_reference(
        &self,
        merchant_id: i64,
        refund_reference: &str,
    ) -> Result<Option<RefundRecord>, StoreError>;
    async fn refund_by_no(
        &self,
        merchant_id: i64,
        refund_no: &str,
    ) -> Result<Option<RefundRecord>, StoreError>;
    async fn cancels_of(&self, payment_id: i64) -> Result<Vec<CancelRecord>, StoreError>;
    /// A cancel by its number; `merchant_id` `None` looks across merchants (wallet side only).
    async fn cancel_by_no(
        &self,
        merchant_id: Option<i64>,
        cancel_no: &str,
    ) -> Result<Option<CancelRecord>, StoreError>;
    async fn events_of(&self, payment_id: i64) -> Result<Vec<EventRecord>, StoreError>;
    /// Appends a line to a payment's timeline without changing the payment (terminal progress).
    async fn append_event(
        &self,
        payment_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError>;

    /// Runs `decide` against the payment and writes its result atomically.
    async fn mutate(&self, payment_id: i64, decide: MutateFn) -> Result<Mutated, StoreError>;

    /// Like [`PaymentStore::mutate`], given the payment as the caller last read it. A backend
    /// may try the decision on that copy first to save a read (its version guards the write);
    /// it must not answer a rejection decided on that copy without deciding again on a fresh
    /// read.
    async fn mutate_from(
        &self,
        payment: &PaymentRecord,
        decide: MutateFn,
    ) -> Result<Mutated, StoreError> {
        self.mutate(payment.id, decide).await
    }

    /// Operations waiting for the wallet's answer since before `before`, oldest first.
    async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError>;

    /// Operations waiting since before `before` whose next question to the wallet is due at
    /// `now`, the longest due first. An operation the wallet could not answer is put back with
    /// [`PaymentStore::defer_query`], so it never keeps newer ones from being asked.
    async fn due_queries(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError>;

    /// Records that the wallet could not answer about `op`: it is asked again at `next_at`.
    async fn defer_query(&self, op: &Unresolved, next_at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Notifications (the outbox) and their delivery attempts.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
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
}

/// Merchants and their credentials (sealed), notification schedules and request keys.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Creates a merchant, or returns the existing one with that number.
    async fn upsert_merchant(&self, m: NewMerchant) -> Result<MerchantRecord, StoreError>;
    /// Sets (or clears, back to the gateway's default) whether the merchant's refunds must
    /// carry the merchant's own refund reference.
    async fn set_refund_reference_required(
        &self,
        merchant_id: i64,
        required: Option<bool>,
    ) -> Result<(), StoreError>;
    async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError>;
    async fn merchant_by_id(&self, merchant_id: i64) -> Result<Option<MerchantRecord>, StoreError>;
    /// The number of merchants created by sandbox mode.
    async fn sandbox_merchant_count(&self) -> Result<i64, StoreError>;
    /// Sets (or clears) a merchant's own notification schedule.
    async fn set_notify_schedule(
        &self,
        merchant_id: i64,
        schedule: Option<&str>,
    ) -> Result<(), StoreError>;
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
    /// Sets (or clears) a merchant's CORS origins (separated by spaces).
    async fn set_cors_origins(
        &self,
        merchant_id: i64,
        origins: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Sets (or clears) a merchant's name as customers know it.
    async fn set_display_name(
        &self,
        merchant_id: i64,
        name: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Whether some merchant lists `origin` among its CORS origins.
    async fn origin_of_a_merchant(&self, origin: &str) -> Result<bool, StoreError>;
    /// Sets (or clears) a store's default currency (an ISO 4217 code).
    async fn set_store_currency(
        &self,
        merchant_id: i64,
        store_no: &str,
        currency: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Adds a unified-API app to a merchant (or returns the existing app's sealed secret).
    async fn add_app(
        &self,
        merchant_id: i64,
        app_id: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError>;
    async fn app_row(&self, app_id: &str) -> Result<Option<AppRow>, StoreError>;
    async fn add_terminal(
        &self,
        merchant_id: i64,
        tid: &str,
        secret_sealed: &str,
        at: DateTime<Utc>,
    ) -> Result<StoreAdded, StoreError>;
    async fn terminal_row(&self, tid: &str) -> Result<Option<TerminalRow>, StoreError>;
    /// Claims a merchant key that must be unique forever within `scope`; false when taken.
    async fn claim_request_key(
        &self,
        scope: &str,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Replaces a credential's secret, keeping the one it had (sealed) until the rotation's
    /// time, as one change; false when there is no such credential of that merchant.
    async fn rotate_secret(&self, rotation: Rotation) -> Result<bool, StoreError>;
    /// A credential's previous secret (sealed) and until when it is accepted.
    async fn previous_secret(
        &self,
        kind: CredentialKind,
        key: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError>;
    /// Sets a merchant's time zone, which decides its business day.
    async fn set_zone(
        &self,
        merchant_id: i64,
        zone: &tillgate_domain::MerchantZone,
    ) -> Result<(), StoreError>;
    /// Sets up a merchant with a store, an app and a terminal in one transaction: on any
    /// error (an app id or tid of another merchant) nothing of it is written.
    async fn set_up_merchant(&self, setup: MerchantSetup) -> Result<MerchantSetUp, StoreError>;
    /// The master key's check value, when the database holds one.
    async fn key_check(&self) -> Result<Option<String>, StoreError>;
    /// Keeps `sealed` as the master key's check value unless the database holds one already;
    /// answers the one in force (another node's, when it came first).
    async fn record_key_check(&self, sealed: &str, at: DateTime<Utc>)
        -> Result<String, StoreError>;
    /// The oldest store's row: what a master key is checked against in a database that has
    /// credentials but no check value yet (one older than the check).
    async fn first_store_row(&self) -> Result<Option<StoreRow>, StoreError>;
}

/// Where terminals are connected, their handshake nonces, and their commands.
#[async_trait]
pub trait TerminalStore: Send + Sync + 'static {
    /// Records that `node` holds the terminal's connection (or none), heard from at `at`.
    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Where the terminal's connection is; `None` for an unknown terminal.
    async fn presence(&self, tid: &str) -> Result<Option<Presence>, StoreError>;
    /// Spends a handshake nonce; false when it was spent before. Forgets nonces older than
    /// `forget_before`.
    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;
    async fn open_commands(&self, tid: &str) -> Result<Vec<CommandRecord>, StoreError>;
    /// Marks an open command done with its outcome, on its own; false when it was done
    /// already. A result that changes the payment finishes its command in the same
    /// transaction instead ([`Writes::finish_command`]).
    async fn finish_command(
        &self,
        command_id: &str,
        outcome: CommandOutcome,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Tells the other nodes that a command waits for delivery (PostgreSQL NOTIFY).
    async fn announce_command(&self, command_id: &str) -> Result<(), StoreError>;
    /// Announcements of other nodes' commands, when the backend has several nodes.
    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError>;
}

/// The exact-replay guard's memory of signed requests (see `crate::replay`).
#[async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// Claims a request for acting on it: true when it was not seen since `window_start` (an
    /// older sighting is forgotten by the claim); false when it was.
    async fn claim_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        at: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// A remembered request: `Some(None)` while its answer is not recorded; `None` when it is
    /// not remembered.
    async fn replay_answer(
        &self,
        merchant_id: i64,
        digest: &str,
    ) -> Result<Option<Option<StoredAnswer>>, StoreError>;
    /// Records the answer of the request claimed at `claimed_at`.
    async fn answer_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError>;
    /// Forgets the request claimed at `claimed_at`, unanswered (its claim is given up).
    async fn release_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forgets requests first seen before `before`; returns how many.
    async fn forget_replays(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The books: fee plans, the operations the gateway booked, and reconciliations with the
/// wallet's statement and the cases they open (see `crate::books`).
#[async_trait]
pub trait BooksStore: Send + Sync + 'static {
    /// Sets (or clears, back to no fees) a merchant's fee plan.
    async fn set_fee_plan(&self, merchant_id: i64, plan: Option<FeePlan>)
        -> Result<(), StoreError>;
    /// A merchant's fee plan; `None` when it has none (no fees).
    async fn fee_plan(&self, merchant_id: i64) -> Result<Option<FeePlan>, StoreError>;
    /// Every merchant, by number.
    async fn merchants(&self) -> Result<Vec<MerchantRecord>, StoreError>;
    /// One page of booked operations, ordered by (time, id), after `query.after`.
    async fn book_entries(&self, query: &BookQuery) -> Result<Vec<BookEntry>, StoreError>;
    /// How many entries `query` lists over all its pages.
    async fn count_book_entries(&self, query: &BookQuery) -> Result<i64, StoreError>;
    /// What the gateway booked for an operation the wallet knows by `key`, on any day (the
    /// latest, for a cancel tried twice).
    async fn book_entry_of(&self, key: &LineKey) -> Result<Option<BookEntry>, StoreError>;
    /// Claims the reconciliation of `day` and `scope` for `node`: answers the run to do, or
    /// `None` when another node has it (claimed since `stale_before`) or it is done. `again`
    /// (an operator's explicit run) takes a finished run again.
    async fn claim_reconciliation(
        &self,
        day: chrono::NaiveDate,
        scope: &str,
        node: &str,
        at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        again: bool,
    ) -> Result<Option<i64>, StoreError>;
    /// Records what a claimed run found, in one transaction: opens a case per finding that has
    /// none yet (running a day again opens nothing twice) and marks the run done with its
    /// counts (or failed, with `error`). Answers how many cases are new.
    async fn finish_reconciliation(
        &self,
        run: &RunRecord,
        cases: Vec<NewCase>,
    ) -> Result<u64, StoreError>;
    async fn reconciliation(
        &self,
        day: chrono::NaiveDate,
        scope: &str,
    ) -> Result<Option<RunRecord>, StoreError>;
    async fn cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError>;
    async fn case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError>;
    /// Closes an open case with the operator's note; false when it is not open.
    async fn close_case(&self, id: i64, note: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// How many cases are open (a metric).
    async fn open_cases(&self) -> Result<i64, StoreError>;
}

/// The whole store: every part, and its life.
/// The console's users, sessions and audit log, and the search of payments it lists.
#[async_trait]
pub trait ConsoleStore: Send + Sync + 'static {
    /// Creates a user; a login already taken is `Conflict::UniqueKey`.
    async fn insert_user(&self, user: crate::console::NewUser) -> Result<i64, StoreError>;
    async fn user_by_login(
        &self,
        login: &str,
    ) -> Result<Option<crate::console::UserRecord>, StoreError>;
    async fn user_by_id(&self, id: i64) -> Result<Option<crate::console::UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<crate::console::UserRecord>, StoreError>;
    /// Sets a new password hash and clears the wrong-password count and lock.
    async fn set_password(&self, user_id: i64, hash: &str) -> Result<(), StoreError>;
    async fn set_disabled(&self, user_id: i64, disabled: bool) -> Result<(), StoreError>;
    /// Counts a wrong password; the `lock_after`-th in a row locks sign-in until `until`.
    async fn login_failed(
        &self,
        user_id: i64,
        lock_after: i64,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// A sign-in: clears the wrong-password count and lock.
    async fn login_succeeded(&self, user_id: i64) -> Result<(), StoreError>;
    async fn insert_session(
        &self,
        session: crate::console::SessionRecord,
    ) -> Result<(), StoreError>;
    async fn session(
        &self,
        id_hash: &str,
    ) -> Result<Option<crate::console::SessionRecord>, StoreError>;
    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Ends every session of a user (disabled, or given a new password).
    async fn delete_sessions_of(&self, user_id: i64) -> Result<(), StoreError>;
    async fn audit(&self, entry: crate::console::NewAudit) -> Result<(), StoreError>;
    async fn audit_of_transaction(
        &self,
        transaction_no: &str,
    ) -> Result<Vec<crate::console::AuditRecord>, StoreError>;
    /// A user's latest audit lines, newest first.
    async fn audit_of_user(
        &self,
        user_id: i64,
        limit: u32,
    ) -> Result<Vec<crate::console::AuditRecord>, StoreError>;
    /// Sets a merchant's refund authority and approval threshold (minor units).
    async fn set_refund_authority(
        &self,
        merchant_id: i64,
        authority: crate::console::RefundAuthority,
        threshold_minor: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Records a refund waiting for approval; a form key already used answers the approval
    /// it made (`Conflict::UniqueKey` never reaches the caller).
    async fn insert_approval(
        &self,
        approval: crate::console::NewApproval,
    ) -> Result<crate::console::ApprovalRecord, StoreError>;
    async fn approval(&self, id: i64)
        -> Result<Option<crate::console::ApprovalRecord>, StoreError>;
    /// Approvals, newest first: of one merchant or all, pending ones only or all.
    async fn approvals(
        &self,
        merchant_id: Option<i64>,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<crate::console::ApprovalRecord>, StoreError>;
    async fn approvals_of_payment(
        &self,
        payment_id: i64,
    ) -> Result<Vec<crate::console::ApprovalRecord>, StoreError>;
    /// Decides a pending approval; false when it was no longer pending (decided meanwhile).
    async fn decide_approval(&self, decision: crate::console::Decision)
        -> Result<bool, StoreError>;
    /// Keeps what carrying out an approved refund gave.
    async fn approval_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError>;
    /// Payments created in `[from, to)` (of one merchant, or all) totalled by hour since
    /// `from`, state and currency.
    async fn hourly_totals(
        &self,
        merchant_id: Option<i64>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<crate::console::HourTotal>, StoreError>;
    /// The POS terminals (of one merchant, or all) with their connection and open commands.
    async fn terminal_listing(
        &self,
        merchant_id: Option<i64>,
    ) -> Result<Vec<crate::console::TerminalListing>, StoreError>;
    /// Payments matching `search`, newest first.
    async fn search_payments(
        &self,
        search: &crate::console::PaymentSearch,
    ) -> Result<Vec<PaymentRecord>, StoreError>;
}

#[async_trait]
pub trait Store:
    PaymentStore
    + OutboxStore
    + CredentialStore
    + TerminalStore
    + ReplayStore
    + ConsoleStore
    + BooksStore
{
    /// Write operations committed and durable commits made since start.
    fn commit_stats(&self) -> CommitStats;

    /// Whether the store can serve requests now: the database answers, its schema is the one
    /// this build migrates to, and writes go through (SQLite: the writer commits). Answers
    /// within about `within`; `StoreError::Unavailable` says what is wrong.
    async fn health(&self, within: std::time::Duration) -> Result<(), StoreError>;

    /// What waits (see [`Backlog`]), as of `now`.
    async fn backlog(&self, now: DateTime<Utc>) -> Result<Backlog, StoreError>;

    /// Flushes and closes; acknowledged writes are already durable before this.
    async fn close(&self);
}
