//! What the console keeps: its users and their roles, sessions, the audit log, and the search
//! of payments the transactions page (and the admin API) runs.

use chrono::{DateTime, Utc};
use tillgate_domain::PaymentState;

use crate::model::Dialect;

/// What a console user may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every merchant: sees and acts on all of them, manages users.
    Operator,
    /// One merchant: sees and acts on its transactions.
    MerchantAdmin,
    /// One merchant: sees its transactions and acts as the merchant's policy allows.
    MerchantStaff,
    /// Every merchant, read only.
    Auditor,
}

impl UserRecord {
    /// Whether this user may see a payment of `merchant_id`'s store `store_no`.
    pub fn sees(&self, merchant_id: i64, store_no: &str) -> bool {
        if !self.role.is_merchants() {
            return true;
        }
        self.merchant_id == Some(merchant_id)
            && (self.stores.is_empty() || self.stores.iter().any(|s| s == store_no))
    }
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Operator,
        Role::MerchantAdmin,
        Role::MerchantStaff,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::MerchantAdmin => "merchant-admin",
            Role::MerchantStaff => "merchant-staff",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Whether the role belongs to one merchant (and needs one).
    pub fn is_merchants(self) -> bool {
        matches!(self, Role::MerchantAdmin | Role::MerchantStaff)
    }
}

/// A console user as stored (with its merchant's number, for a merchant role).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub login: String,
    /// The argon2id hash in PHC form; never shown.
    pub password_hash: String,
    pub role: Role,
    pub merchant_id: Option<i64>,
    pub merchant_no: Option<String>,
    /// For a merchant role, the stores it is confined to; empty: all its merchant's stores.
    pub stores: Vec<String>,
    pub disabled: bool,
    /// Wrong passwords since the last sign-in.
    pub failed_logins: i64,
    /// Sign-ins refused until then, after too many wrong passwords.
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login: String,
    pub password_hash: String,
    pub role: Role,
    pub merchant_id: Option<i64>,
    /// The stores a merchant role is confined to; empty: all.
    pub stores: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A signed-in browser: the cookie's value is never stored, only its SHA-256.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user_id: i64,
    /// The token every form of the session carries.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// One line of the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user_id: Option<i64>,
    pub login: String,
    pub action: String,
    pub transaction_no: Option<String>,
    pub detail: String,
    pub address: Option<String>,
}

/// A line to write to the audit log.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    pub user_id: Option<i64>,
    pub login: String,
    pub action: String,
    pub transaction_no: Option<String>,
    pub detail: String,
    pub address: Option<String>,
}

/// Which payments to list, newest first; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct PaymentSearch {
    pub merchant_id: Option<i64>,
    pub store_no: Option<String>,
    /// Only these stores (a user confined to some); empty: any.
    pub store_nos: Vec<String>,
    pub dialect: Option<Dialect>,
    pub states: Vec<PaymentState>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// ISO 4217 code of the payments' currency.
    pub currency: Option<String>,
    /// Amount bounds in minor units (inclusive).
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    pub transaction_no: Option<String>,
    /// The merchant's own reference.
    pub reference: Option<String>,
    /// A refund's gateway number or the merchant's refund reference.
    pub refund_no: Option<String>,
    pub cancel_no: Option<String>,
    /// Made on this terminal: a YabandPay payment of this terminal (its user, the tid), or a
    /// sale the terminal hub sent to this POS terminal.
    pub terminal: Option<String>,
    /// Keyset pagination: only payments with a smaller id (the last one of the previous page).
    pub before_id: Option<i64>,
    /// At most this many (1..=500).
    pub limit: u32,
}

/// Who may refund from the console, per merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefundAuthority {
    /// Whoever may act refunds at once.
    #[default]
    Immediate,
    /// A refund above the merchant's threshold (or any, without one) waits for a second
    /// person: an operator or the merchant's admin, never the one who asked.
    Approval,
    /// The merchant's staff cannot refund (its admins and operators can).
    Disabled,
}

impl RefundAuthority {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundAuthority::Immediate => "immediate",
            RefundAuthority::Approval => "approval",
            RefundAuthority::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<RefundAuthority> {
        [
            RefundAuthority::Immediate,
            RefundAuthority::Approval,
            RefundAuthority::Disabled,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }

    /// Whether a refund of `amount_minor` needs a second person under this policy.
    pub fn needs_approval(self, threshold_minor: Option<i64>, amount_minor: i64) -> bool {
        self == RefundAuthority::Approval && threshold_minor.is_none_or(|t| amount_minor > t)
    }
}

impl crate::model::MerchantRecord {
    /// Whether a refund of `amount_minor` asked through a merchant API is held for approval:
    /// only when the merchant says API refunds need approval too, and the console's rule
    /// (authority and threshold) would ask for one.
    pub fn holds_api_refund(&self, amount_minor: i64) -> bool {
        self.api_refunds_need_approval
            && self
                .refund_authority
                .needs_approval(self.approval_threshold_minor, amount_minor)
    }
}

/// Where a refund that waits for approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    /// Approved: the refund was carried out (its outcome is kept with it).
    Approved,
    Rejected,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalState> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Rejected,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A refund asked for in the console that waits for a second person (or did).
#[derive(Debug, Clone)]
pub struct ApprovalRecord {
    pub id: i64,
    pub payment_id: i64,
    pub merchant_id: i64,
    pub transaction_no: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: String,
    /// The key of the form it was asked with; the refund's reference is `console-KEY`.
    pub form_key: String,
    pub requested_by: i64,
    pub requested_login: String,
    pub requested_at: DateTime<Utc>,
    pub state: ApprovalState,
    pub decided_login: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    /// What carrying it out gave: the refund's number and state, or why it was refused.
    pub outcome: Option<String>,
    /// For a refund asked through a merchant API: the held refund it decides (reserved and in
    /// progress since the request). Such an approval was asked by no console user
    /// (`requested_by` is 0, `requested_login` [`API_REQUESTER`]).
    pub refund_id: Option<i64>,
}

/// Who asked for an approval of a refund that came through a merchant API.
pub const API_REQUESTER: &str = "API";

/// A refund to wait for approval.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub payment_id: i64,
    pub merchant_id: i64,
    pub transaction_no: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: String,
    pub form_key: String,
    pub requested_by: i64,
    pub requested_login: String,
    pub requested_at: DateTime<Utc>,
}

/// A decision on a pending approval.
#[derive(Debug, Clone)]
pub struct Decision {
    pub id: i64,
    pub state: ApprovalState,
    pub by: i64,
    pub login: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// Payments created in one hour of a day, of one state and currency (the dashboard's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourTotal {
    /// Hours since the start of the range (0 for its first hour).
    pub hour: i64,
    pub state: PaymentState,
    pub currency: String,
    pub count: i64,
    pub amount_minor: i64,
    pub refunded_minor: i64,
}

/// A POS terminal as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalListing {
    pub tid: String,
    pub merchant_no: String,
    /// The node holding its connection; `None` while it is not connected.
    pub online_node: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Commands sent to it that it has not finished.
    pub open_commands: i64,
}
