//! The console's statements, the same on both backends (`?N` placeholders; PostgreSQL reads
//! them as `$N`), its row mapping, and the payment search built from a [`PaymentSearch`].

use crate::{corrupt, time, Columns};
use tillgate_core::console::{
    ApprovalRecord, ApprovalState, AuditRecord, PaymentSearch, Role, SessionRecord, UserRecord,
};
use tillgate_core::StoreError;

const USER_COLUMNS: &str = "SELECT u.*, m.merchant_no AS user_merchant_no FROM console_users u \
                            LEFT JOIN merchants m ON m.id = u.merchant_id";

pub const INSERT_USER: &str = "INSERT INTO console_users \
    (login, password_hash, role, merchant_id, disabled, failed_logins, created_at, stores) \
    VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6) RETURNING id";

pub fn user_by(column: &str) -> String {
    format!("{USER_COLUMNS} WHERE u.{column} = ?1")
}

pub fn users_sql() -> String {
    format!("{USER_COLUMNS} ORDER BY u.login")
}

pub const SET_PASSWORD: &str = "UPDATE console_users SET password_hash = ?1, failed_logins = 0, \
                                locked_until = NULL WHERE id = ?2";
pub const SET_DISABLED: &str = "UPDATE console_users SET disabled = ?1 WHERE id = ?2";
pub const LOGIN_FAILED: &str = "UPDATE console_users SET failed_logins = failed_logins + 1, \
    locked_until = CASE WHEN failed_logins + 1 >= ?1 THEN ?2 ELSE locked_until END WHERE id = ?3";
pub const LOGIN_SUCCEEDED: &str =
    "UPDATE console_users SET failed_logins = 0, locked_until = NULL WHERE id = ?1";
pub const INSERT_SESSION: &str = "INSERT INTO console_sessions \
    (id_hash, user_id, csrf, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5)";
pub const SESSION: &str = "SELECT * FROM console_sessions WHERE id_hash = ?1";
pub const TOUCH_SESSION: &str = "UPDATE console_sessions SET last_seen_at = ?1 WHERE id_hash = ?2";
pub const DELETE_SESSION: &str = "DELETE FROM console_sessions WHERE id_hash = ?1";
pub const DELETE_SESSIONS_OF: &str = "DELETE FROM console_sessions WHERE user_id = ?1";
pub const INSERT_AUDIT: &str = "INSERT INTO audit_log \
    (at, user_id, login, action, transaction_no, detail, address) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
pub const AUDIT_OF_TRANSACTION: &str =
    "SELECT * FROM audit_log WHERE transaction_no = ?1 ORDER BY id";
pub const AUDIT_OF_USER: &str =
    "SELECT * FROM audit_log WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2";

pub const SET_REFUND_AUTHORITY: &str = "UPDATE merchants SET refund_authority = ?1, \
    approval_threshold_minor = ?2, api_refund_approval = ?3 WHERE id = ?4";
pub const INSERT_APPROVAL: &str = "INSERT INTO refund_approvals \
    (payment_id, merchant_id, transaction_no, amount_minor, currency, reason, form_key, \
     requested_by, requested_login, requested_at, state) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
pub const APPROVAL: &str = "SELECT * FROM refund_approvals WHERE id = ?1";
pub const APPROVAL_BY_KEY: &str = "SELECT * FROM refund_approvals WHERE form_key = ?1";
pub const APPROVAL_OF_REFUND: &str = "SELECT * FROM refund_approvals WHERE refund_id = ?1";
pub const APPROVALS_OF_PAYMENT: &str =
    "SELECT * FROM refund_approvals WHERE payment_id = ?1 ORDER BY id DESC";
pub const DECIDE_APPROVAL: &str = "UPDATE refund_approvals SET state = ?1, decided_by = ?2, \
    decided_login = ?3, decided_at = ?4, decision_reason = ?5 WHERE id = ?6 AND state = ?7";
pub const APPROVAL_OUTCOME: &str = "UPDATE refund_approvals SET outcome = ?1 WHERE id = ?2";

/// The approvals listing: of one merchant (`?1`, or NULL for all), pending ones only when `?2`
/// is the pending state (NULL: all), newest first, at most `?3`.
pub const APPROVALS: &str = "SELECT * FROM refund_approvals \
    WHERE (?1 IS NULL OR merchant_id = ?1) AND (?2 IS NULL OR state = ?2) \
    ORDER BY id DESC LIMIT ?3";

pub fn approval(row: &impl Columns) -> Result<ApprovalRecord, StoreError> {
    Ok(ApprovalRecord {
        id: row.int("id")?,
        payment_id: row.int("payment_id")?,
        merchant_id: row.int("merchant_id")?,
        transaction_no: row.text("transaction_no")?,
        amount_minor: row.int("amount_minor")?,
        currency: row.text("currency")?,
        reason: row.text("reason")?,
        form_key: row.text("form_key")?,
        requested_by: row.int("requested_by")?,
        requested_login: row.text("requested_login")?,
        requested_at: time(row.int("requested_at")?)?,
        state: ApprovalState::parse(&row.text("state")?)
            .ok_or_else(|| corrupt("approval state"))?,
        decided_login: row.opt_text("decided_login")?,
        decided_at: row.opt_int("decided_at")?.map(time).transpose()?,
        decision_reason: row.opt_text("decision_reason")?,
        outcome: row.opt_text("outcome")?,
        refund_id: row.opt_int("refund_id")?,
    })
}

/// The dashboard's totals: `?1` start and `?2` end of the range (ms), `?3` a merchant or NULL.
pub const HOURLY_TOTALS: &str = "SELECT (created_at - ?1) / 3600000 AS hour, state, currency, \
    COUNT(*) AS n, SUM(amount_minor) AS amount, SUM(refunded_minor) AS refunded \
    FROM payments WHERE created_at >= ?1 AND created_at < ?2 \
    AND (?3 IS NULL OR merchant_id = ?3) GROUP BY 1, 2, 3 ORDER BY 1";

pub fn hour_total(row: &impl Columns) -> Result<tillgate_core::console::HourTotal, StoreError> {
    Ok(tillgate_core::console::HourTotal {
        hour: row.int("hour")?,
        state: tillgate_domain::PaymentState::parse(&row.text("state")?)
            .ok_or_else(|| corrupt("payment state"))?,
        currency: row.text("currency")?,
        count: row.int("n")?,
        amount_minor: row.int("amount")?,
        refunded_minor: row.int("refunded")?,
    })
}

/// The terminals of a merchant (`?1`, or NULL for all) with their open commands (state `?2`).
pub const TERMINALS: &str = "SELECT t.tid, t.online_node, t.last_seen_at, m.merchant_no, \
    (SELECT COUNT(*) FROM terminal_commands c WHERE c.tid = t.tid AND c.state = ?2) AS open_commands \
    FROM terminals t JOIN merchants m ON m.id = t.merchant_id \
    WHERE (?1 IS NULL OR t.merchant_id = ?1) ORDER BY m.merchant_no, t.tid LIMIT 1000";

pub fn terminal(row: &impl Columns) -> Result<tillgate_core::console::TerminalListing, StoreError> {
    Ok(tillgate_core::console::TerminalListing {
        tid: row.text("tid")?,
        merchant_no: row.text("merchant_no")?,
        online_node: row.opt_text("online_node")?,
        last_seen_at: row.opt_int("last_seen_at")?.map(time).transpose()?,
        open_commands: row.int("open_commands")?,
    })
}

pub fn user(row: &impl Columns) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: row.int("id")?,
        login: row.text("login")?,
        password_hash: row.text("password_hash")?,
        role: Role::parse(&row.text("role")?).ok_or_else(|| corrupt("console user role"))?,
        merchant_id: row.opt_int("merchant_id")?,
        merchant_no: row.opt_text("user_merchant_no")?,
        stores: row
            .opt_text("stores")?
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        disabled: row.int("disabled")? != 0,
        failed_logins: row.int("failed_logins")?,
        locked_until: row.opt_int("locked_until")?.map(time).transpose()?,
        created_at: time(row.int("created_at")?)?,
    })
}

pub fn session(row: &impl Columns) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id_hash: row.text("id_hash")?,
        user_id: row.int("user_id")?,
        csrf: row.text("csrf")?,
        created_at: time(row.int("created_at")?)?,
        last_seen_at: time(row.int("last_seen_at")?)?,
    })
}

pub fn audit(row: &impl Columns) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.int("id")?,
        at: time(row.int("at")?)?,
        user_id: row.opt_int("user_id")?,
        login: row.text("login")?,
        action: row.text("action")?,
        transaction_no: row.opt_text("transaction_no")?,
        detail: row.text("detail")?,
        address: row.opt_text("address")?,
    })
}

/// A value bound to the search's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
}

/// The search's statement (`?N` placeholders) and its values, in order. Newest first by id,
/// the keyset of its pages; a merchant's listing walks the `(merchant_id, id)` index.
pub fn search_sql(q: &PaymentSearch) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT p.* FROM payments p WHERE 1 = 1");
    let mut values = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, v: Value| {
        values.push(v);
        sql.push_str(&clause.replace('#', &format!("?{}", values.len())));
    };
    if let Some(m) = q.merchant_id {
        bind(&mut sql, " AND p.merchant_id = #", Value::Int(m));
    }
    if let Some(s) = &q.store_no {
        bind(&mut sql, " AND p.store_no = #", Value::Text(s.clone()));
    }
    if !q.store_nos.is_empty() {
        sql.push_str(" AND p.store_no IN (");
        for (i, s) in q.store_nos.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            bind(&mut sql, "#", Value::Text(s.clone()));
        }
        sql.push(')');
    }
    if let Some(d) = q.dialect {
        bind(
            &mut sql,
            " AND p.dialect = #",
            Value::Text(d.as_str().into()),
        );
    }
    if !q.states.is_empty() {
        sql.push_str(" AND p.state IN (");
        for (i, s) in q.states.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            bind(&mut sql, "#", Value::Text(s.as_str().into()));
        }
        sql.push(')');
    }
    if let Some(t) = q.created_from {
        bind(
            &mut sql,
            " AND p.created_at >= #",
            Value::Int(t.timestamp_millis()),
        );
    }
    if let Some(t) = q.created_to {
        bind(
            &mut sql,
            " AND p.created_at < #",
            Value::Int(t.timestamp_millis()),
        );
    }
    if let Some(c) = &q.currency {
        bind(&mut sql, " AND p.currency = #", Value::Text(c.clone()));
    }
    if let Some(a) = q.amount_min {
        bind(&mut sql, " AND p.amount_minor >= #", Value::Int(a));
    }
    if let Some(a) = q.amount_max {
        bind(&mut sql, " AND p.amount_minor <= #", Value::Int(a));
    }
    if let Some(t) = &q.transaction_no {
        bind(
            &mut sql,
            " AND p.transaction_no = #",
            Value::Text(t.clone()),
        );
    }
    if let Some(r) = &q.reference {
        bind(&mut sql, " AND p.reference = #", Value::Text(r.clone()));
    }
    if let Some(r) = &q.refund_no {
        bind(
            &mut sql,
            " AND p.id IN (SELECT payment_id FROM refunds WHERE refund_no = # \
             OR refund_reference = #)",
            Value::Text(r.clone()),
        );
    }
    if let Some(c) = &q.cancel_no {
        bind(
            &mut sql,
            " AND p.id IN (SELECT payment_id FROM cancels WHERE cancel_no = #)",
            Value::Text(c.clone()),
        );
    }
    if let Some(t) = &q.terminal {
        // A YabandPay payment's store is the terminal that made it; a sale sent to a POS
        // terminal has its command, whatever store it names.
        bind(
            &mut sql,
            &format!(
                " AND ((p.store_no = # AND p.dialect = '{yabandpay}') OR p.id IN \
                 (SELECT payment_id FROM terminal_commands WHERE tid = # AND kind = '{sale}'))",
                yabandpay = tillgate_core::Dialect::YabandPay.as_str(),
                sale = tillgate_core::terminal::CommandKind::Sale.as_str(),
            ),
            Value::Text(t.clone()),
        );
    }
    if let Some(b) = q.before_id {
        bind(&mut sql, " AND p.id < #", Value::Int(b));
    }
    let limit = i64::from(q.limit.clamp(1, 500));
    bind(&mut sql, " ORDER BY p.id DESC LIMIT #", Value::Int(limit));
    (sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_domain::PaymentState;

    #[test]
    fn the_terminal_filter_binds_its_tid_once() {
        let (sql, values) = search_sql(&PaymentSearch {
            terminal: Some("T1".into()),
            limit: 50,
            ..PaymentSearch::default()
        });
        assert_eq!(
            sql,
            "SELECT p.* FROM payments p WHERE 1 = 1 AND ((p.store_no = ?1 AND p.dialect = \
             'yabandpay') OR p.id IN (SELECT payment_id FROM terminal_commands WHERE tid = ?1 \
             AND kind = 'sale')) ORDER BY p.id DESC LIMIT ?2"
        );
        assert_eq!(values, vec![Value::Text("T1".into()), Value::Int(50)]);
    }

    #[test]
    fn the_search_binds_every_filter_in_order() {
        let (sql, values) = search_sql(&PaymentSearch {
            merchant_id: Some(7),
            states: vec![PaymentState::Paid, PaymentState::Refunded],
            refund_no: Some("R1".into()),
            before_id: Some(99),
            limit: 10_000,
            ..PaymentSearch::default()
        });
        assert_eq!(
            sql,
            "SELECT p.* FROM payments p WHERE 1 = 1 AND p.merchant_id = ?1 AND p.state IN \
             (?2, ?3) AND p.id IN (SELECT payment_id FROM refunds WHERE refund_no = ?4 OR \
             refund_reference = ?4) AND p.id < ?5 ORDER BY p.id DESC LIMIT ?6"
        );
        assert_eq!(values.last(), Some(&Value::Int(500)), "the limit is capped");
        assert_eq!(values.len(), 6);
    }
}
