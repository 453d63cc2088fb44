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
    pub dialect: Option<Dialect>,
    pub states: Vec<PaymentState>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Amount bounds in minor units (inclusive).
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    pub transaction_no: Option<String>,
    /// The merchant's own reference.
    pub reference: Option<String>,
    /// A refund's gateway number or the merchant's refund reference.
    pub refund_no: Option<String>,
    pub cancel_no: Option<String>,
    /// Keyset pagination: only payments with a smaller id (the last one of the previous page).
    pub before_id: Option<i64>,
    /// At most this many (1..=500).
    pub limit: u32,
}
