//! The records the store keeps and the service hands to dialects.

pub use crate::snapshot::Topic;
use chrono::{DateTime, Utc};
use tillgate_domain::{
    CancelKind, CancelState, Currency, MerchantZone, Money, Payment, RefundState,
};

/// The merchant API a payment came in through; its notifications are rendered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    /// Pockyt/Yuansfer v3.
    Pockyt,
    /// The Jeepay-style unified API.
    Unified,
    /// YabandPay.
    YabandPay,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::Pockyt, Dialect::Unified, Dialect::YabandPay];

    /// The name kept in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Pockyt => "pockyt",
            Dialect::Unified => "unified",
            Dialect::YabandPay => "yabandpay",
        }
    }

    pub fn parse(name: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A merchant as the gateway knows it.
#[derive(Debug, Clone)]
pub struct MerchantRecord {
    pub id: i64,
    pub merchant_no: String,
    pub zone: MerchantZone,
    /// Created by sandbox mode with public sample credentials; production refuses to start
    /// while one exists.
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
    /// The merchant's own notification schedule ("0,30,60"), overriding the gateway's.
    pub notify_schedule: Option<String>,
    /// Whether its refunds must carry its own refund reference; `None`: the gateway's default.
    pub refund_reference_required: Option<bool>,
    /// Origins whose browser pages may read its answers (CORS), besides the gateway's own.
    pub cors_origins: Vec<String>,
    /// Its name as customers know it (hosted payment pages); `None`: its number is shown.
    pub display_name: Option<String>,
    /// Who may refund from the console, and above which amount (minor units) a refund waits
    /// for a second person under `Approval` (`None`: every refund does).
    pub refund_authority: crate::console::RefundAuthority,
    pub approval_threshold_minor: Option<i64>,
    /// Whether a refund asked through a merchant API that would need approval from the
    /// console (`refund_authority` and the threshold) is held for one too: reserved, answered
    /// "in progress", sent to the wallet only once approved.
    pub api_refunds_need_approval: bool,
}

/// A Pockyt store credential as stored: the token is sealed.
#[derive(Debug, Clone)]
pub struct StoreRow {
    pub merchant: MerchantRecord,
    pub store_no: String,
    pub token_sealed: String,
    /// What an add naming no currency is in (`None`: USD).
    pub default_currency: Option<Currency>,
}

/// A unified-API app as stored: the secret is sealed.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub merchant: MerchantRecord,
    pub app_id: String,
    pub secret_sealed: String,
}

/// A new merchant to create (or find, when the number exists).
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub merchant_no: String,
    pub zone: MerchantZone,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
}

/// The answer of adding a store to a merchant.
#[derive(Debug, Clone)]
pub enum StoreAdded {
    Added,
    /// The store (or app) exists; its sealed secret is returned unchanged.
    Exists {
        sealed: String,
    },
}

/// A credential that a merchant's set-up asks for: its key (app id, tid) and its secret sealed
/// for that key.
#[derive(Debug, Clone)]
pub struct WantedCredential {
    pub key: String,
    pub sealed: String,
    /// `true`: this credential, added unless it exists (then it must be the merchant's). `false`:
    /// the merchant's first of its kind; this one is added only when the set-up creates the
    /// merchant, so running the same set-up again adds nothing.
    pub named: bool,
}

/// A merchant with a store, an app and a terminal, set up as one change: all of it is written,
/// or nothing (`tillgate merchant create`).
#[derive(Debug, Clone)]
pub struct MerchantSetup {
    pub merchant: NewMerchant,
    /// The merchant's own notification schedule, kept when the set-up creates the merchant.
    pub notify_schedule: Option<String>,
    pub store_no: String,
    pub token_sealed: String,
    pub app: WantedCredential,
    pub terminal: WantedCredential,
}

/// What a [`MerchantSetup`] found and wrote.
#[derive(Debug, Clone)]
pub struct MerchantSetUp {
    pub merchant: MerchantRecord,
    /// Whether the merchant is new.
    pub created: bool,
    pub store: StoreAdded,
    /// The app's id and whether it was added; `None` for an existing merchant without apps
    /// that asked for none.
    pub app: Option<(String, StoreAdded)>,
    pub terminal: Option<(String, StoreAdded)>,
}

/// How a merchant names one of its payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentKey {
    /// The gateway's transaction number.
    TransactionNo(String),
    /// The merchant's own reference.
    Reference(String),
}

/// One payment with everything the dialects render.
#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub id: i64,
    pub transaction_no: String,
    pub merchant_id: i64,
    pub merchant_no: String,
    pub store_no: String,
    pub reference: String,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub notify_url: Option<String>,
    pub vendor: Option<String>,
    /// The merchant dialect that created the payment; its notifications are rendered in it.
    pub dialect: Dialect,
    /// Dialect-owned facts kept with the payment (JSON), opaque to the core.
    pub extra: Option<String>,
    /// Digest of the add request's parameters, for idempotent replays.
    pub fingerprint: String,
    /// Digest of the pay request's parameters, once one was accepted.
    pub pay_fingerprint: Option<String>,
    pub payment: Payment,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Bumped by every change; backends use it for compare-and-swap updates.
    pub version: i64,
}

/// A payment to insert.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub transaction_no: String,
    pub merchant_id: i64,
    pub merchant_no: String,
    pub store_no: String,
    pub reference: String,
    pub amount: Money,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub notify_url: Option<String>,
    pub dialect: Dialect,
    pub extra: Option<String>,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One refund order of a payment.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub id: i64,
    pub refund_no: String,
    pub payment_id: i64,
    pub merchant_id: i64,
    pub refund_reference: Option<String>,
    pub amount: Money,
    pub state: RefundState,
    pub fingerprint: String,
    /// Where this refund's notifications go, if anywhere.
    pub notify_url: Option<String>,
    pub extra: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A refund to insert.
#[derive(Debug, Clone)]
pub struct NewRefund {
    pub refund_no: String,
    pub refund_reference: Option<String>,
    pub amount: Money,
    pub fingerprint: String,
    pub notify_url: Option<String>,
    pub extra: Option<String>,
}

/// One cancel order of a payment: a close of an unpaid payment or a same-day reversal.
#[derive(Debug, Clone)]
pub struct CancelRecord {
    pub id: i64,
    pub cancel_no: String,
    pub payment_id: i64,
    pub merchant_id: i64,
    pub kind: CancelKind,
    pub state: CancelState,
    /// Where this cancel's notifications go, if anywhere.
    pub notify_url: Option<String>,
    pub extra: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A cancel to insert.
#[derive(Debug, Clone)]
pub struct NewCancel {
    pub cancel_no: String,
    pub kind: CancelKind,
    pub notify_url: Option<String>,
    pub extra: Option<String>,
}

/// One line of a payment's audit timeline.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub payment_id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The merchant acknowledged it.
    Delivered,
    /// Every attempt of the schedule failed; kept for the operator to resend.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxStatus> {
        match s {
            "pending" => Some(OutboxStatus::Pending),
            "delivered" => Some(OutboxStatus::Delivered),
            "failed" => Some(OutboxStatus::Failed),
            _ => None,
        }
    }
}

/// One notification of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub id: i64,
    pub merchant_id: i64,
    pub payment_id: i64,
    pub dialect: Dialect,
    pub topic: Topic,
    pub target_url: String,
    /// What it reports, frozen at the change (`Snapshot::to_json`).
    pub snapshot: String,
    pub status: OutboxStatus,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One delivery attempt of a notification.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub outbox_id: i64,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at: DateTime<Utc>,
    pub http_status: Option<i64>,
    /// The first bytes of the answer.
    pub response_head: String,
    pub latency_ms: i64,
    /// Why the attempt failed before an answer (time-out, refused connection), if it did.
    pub error: Option<String>,
}

/// What happens to a notification after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Which notifications an operator lists.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub status: Option<OutboxStatus>,
    pub since: Option<DateTime<Utc>>,
    pub payment_id: Option<i64>,
    pub limit: i64,
}

/// What a node asks for when it leases notifications (`Store::claim_notifications`).
#[derive(Debug, Clone)]
pub struct NotificationClaim {
    pub now: DateTime<Utc>,
    /// Until when the leased notifications are this node's.
    pub lease_until: DateTime<Utc>,
    /// The most notifications leased by this call.
    pub limit: i64,
    /// The most notifications of one merchant this node may hold at once, counting those in
    /// `held`; a merchant at its limit gets none, so one merchant's backlog (or its receiver
    /// that never answers) cannot take the slots of the others.
    pub per_merchant: i64,
    /// How many notifications of each merchant (merchant id, count) this node holds already.
    pub held: Vec<(i64, i64)>,
}

/// Which notifications an operator sends again.
#[derive(Debug, Clone, Copy)]
pub enum Resend {
    One(i64),
    FailedSince(DateTime<Utc>),
}

/// An operation whose outcome the wallet has not told yet: money possibly in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub payment_id: i64,
    pub transaction_no: String,
    pub merchant_no: String,
    pub kind: UnresolvedKind,
    /// Since when it waits (its last change).
    pub since: DateTime<Utc>,
    /// How many times the wallet was asked about it and could not answer.
    pub unanswered_queries: i64,
}

/// Which operation waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnresolvedKind {
    /// A payment submitted to the wallet and not answered.
    Payment,
    Refund {
        refund_no: String,
    },
    Cancel {
        cancel_no: String,
    },
}

/// A kind of credential whose secret can be rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A Pockyt store's token.
    Store,
    /// A unified-API app's secret.
    App,
    /// A POS terminal's secret (also the YabandPay user's).
    Terminal,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Store => "store",
            CredentialKind::App => "app",
            CredentialKind::Terminal => "terminal",
        }
    }
}

/// A rotation: the credential's secret replaced, its previous one kept until `until`.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub kind: CredentialKind,
    pub merchant_id: i64,
    /// The store number, app id or tid.
    pub key: String,
    /// The key the previous secret is kept under (`merchant_no/store_no`, app id, tid).
    pub previous_key: String,
    pub new_sealed: String,
    pub until: DateTime<Utc>,
}
