//! The console's users, sessions and audit log, and the payment search, on SQLite.

use crate::writer::{self, native, Bind};
use crate::{rows, SqliteStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use tillgate_core::console::{
    ApprovalRecord, ApprovalState, AuditRecord, Decision, NewApproval, NewAudit, NewUser,
    PaymentSearch, RefundAuthority, SessionRecord, UserRecord,
};
use tillgate_core::store::ConsoleStore;
use tillgate_core::Conflict;
use tillgate_core::{PaymentRecord, StoreError};
use tillgate_store_sql::console as sql;

impl SqliteStore {
    async fn console_write(
        &self,
        statement: &'static str,
        binds: Vec<Bind>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| writer::execute(conn, statement, binds).map(drop))
            .await
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[async_trait]
impl ConsoleStore for SqliteStore {
    async fn insert_user(&self, u: NewUser) -> Result<i64, StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(sql::INSERT_USER)
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            u.login,
                            u.password_hash,
                            u.role.as_str(),
                            u.merchant_id,
                            ms(u.created_at),
                            (!u.stores.is_empty()).then(|| u.stores.join(" "))
                        ],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .map_err(native)
        })
        .await
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read_one(&sql::user_by("login"), params![login], |r| sql::user(r))
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        self.read_one(&sql::user_by("id"), params![id], |r| sql::user(r))
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read_all(&sql::users_sql(), [], |r| sql::user(r))
    }

    async fn set_password(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        let binds = vec![Bind::Text(Some(hash.to_owned())), Bind::Int(Some(user_id))];
        self.console_write(sql::SET_PASSWORD, binds).await
    }

    async fn set_disabled(&self, user_id: i64, disabled: bool) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(i64::from(disabled))),
            Bind::Int(Some(user_id)),
        ];
        self.console_write(sql::SET_DISABLED, binds).await
    }

    async fn login_failed(
        &self,
        user_id: i64,
        lock_after: i64,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(lock_after)),
            Bind::Int(Some(ms(until))),
            Bind::Int(Some(user_id)),
        ];
        self.console_write(sql::LOGIN_FAILED, binds).await
    }

    async fn login_succeeded(&self, user_id: i64) -> Result<(), StoreError> {
        self.console_write(sql::LOGIN_SUCCEEDED, vec![Bind::Int(Some(user_id))])
            .await
    }

    async fn insert_session(&self, s: SessionRecord) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(Some(s.id_hash)),
            Bind::Int(Some(s.user_id)),
            Bind::Text(Some(s.csrf)),
            Bind::Int(Some(ms(s.created_at))),
            Bind::Int(Some(ms(s.last_seen_at))),
        ];
        self.console_write(sql::INSERT_SESSION, binds).await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read_one(sql::SESSION, params![id_hash], |r| sql::session(r))
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(ms(at))),
            Bind::Text(Some(id_hash.to_owned())),
        ];
        self.console_write(sql::TOUCH_SESSION, binds).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.console_write(
            sql::DELETE_SESSION,
            vec![Bind::Text(Some(id_hash.to_owned()))],
        )
        .await
    }

    async fn delete_sessions_of(&self, user_id: i64) -> Result<(), StoreError> {
        self.console_write(sql::DELETE_SESSIONS_OF, vec![Bind::Int(Some(user_id))])
            .await
    }

    async fn audit(&self, e: NewAudit) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(ms(e.at))),
            Bind::Int(e.user_id),
            Bind::Text(Some(e.login)),
            Bind::Text(Some(e.action)),
            Bind::Text(e.transaction_no),
            Bind::Text(Some(e.detail)),
            Bind::Text(e.address),
        ];
        self.console_write(sql::INSERT_AUDIT, binds).await
    }

    async fn audit_of_transaction(
        &self,
        transaction_no: &str,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read_all(sql::AUDIT_OF_TRANSACTION, params![transaction_no], |r| {
            sql::audit(r)
        })
    }

    async fn audit_of_user(
        &self,
        user_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read_all(
            sql::AUDIT_OF_USER,
            params![user_id, i64::from(limit)],
            |r| sql::audit(r),
        )
    }

    async fn set_refund_authority(
        &self,
        merchant_id: i64,
        authority: RefundAuthority,
        threshold_minor: Option<i64>,
        api_refunds_need_approval: bool,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(Some(authority.as_str().to_owned())),
            Bind::Int(threshold_minor),
            Bind::Int(Some(i64::from(api_refunds_need_approval))),
            Bind::Int(Some(merchant_id)),
        ];
        self.console_write(sql::SET_REFUND_AUTHORITY, binds).await
    }

    async fn insert_approval(&self, a: NewApproval) -> Result<ApprovalRecord, StoreError> {
        let key = a.form_key.clone();
        let binds = vec![
            Bind::Int(Some(a.payment_id)),
            Bind::Int(Some(a.merchant_id)),
            Bind::Text(Some(a.transaction_no)),
            Bind::Int(Some(a.amount_minor)),
            Bind::Text(Some(a.currency)),
            Bind::Text(Some(a.reason)),
            Bind::Text(Some(a.form_key)),
            Bind::Int(Some(a.requested_by)),
            Bind::Text(Some(a.requested_login)),
            Bind::Int(Some(ms(a.requested_at))),
            Bind::Text(Some(ApprovalState::Pending.as_str().to_owned())),
        ];
        match self.console_write(sql::INSERT_APPROVAL, binds).await {
            Ok(()) | Err(StoreError::Conflict(Conflict::UniqueKey)) => {}
            Err(e) => return Err(e),
        }
        self.read_one(sql::APPROVAL_BY_KEY, params![key], |r| sql::approval(r))?
            .ok_or_else(|| StoreError::Corrupt("an approval vanished after its insert".into()))
    }

    async fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>, StoreError> {
        self.read_one(sql::APPROVAL, params![id], |r| sql::approval(r))
    }

    async fn approvals(
        &self,
        merchant_id: Option<i64>,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let state = pending_only.then_some(ApprovalState::Pending.as_str());
        self.read_all(
            sql::APPROVALS,
            params![merchant_id, state, i64::from(limit)],
            |r| sql::approval(r),
        )
    }

    async fn approvals_of_payment(
        &self,
        payment_id: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.read_all(sql::APPROVALS_OF_PAYMENT, params![payment_id], |r| {
            sql::approval(r)
        })
    }

    async fn approval_of_refund(
        &self,
        refund_id: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        self.read_one(sql::APPROVAL_OF_REFUND, params![refund_id], |r| {
            sql::approval(r)
        })
    }

    async fn decide_approval(&self, d: Decision) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Text(Some(d.state.as_str().to_owned())),
            Bind::Int(Some(d.by)),
            Bind::Text(Some(d.login)),
            Bind::Int(Some(ms(d.at))),
            Bind::Text(Some(d.reason)),
            Bind::Int(Some(d.id)),
            Bind::Text(Some(ApprovalState::Pending.as_str().to_owned())),
        ];
        self.write(move |conn| writer::execute(conn, sql::DECIDE_APPROVAL, binds))
            .await
            .map(|n| n == 1)
    }

    async fn approval_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        let binds = vec![Bind::Text(Some(outcome.to_owned())), Bind::Int(Some(id))];
        self.console_write(sql::APPROVAL_OUTCOME, binds).await
    }

    async fn hourly_totals(
        &self,
        merchant_id: Option<i64>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<tillgate_core::console::HourTotal>, StoreError> {
        self.read_all(
            sql::HOURLY_TOTALS,
            params![ms(from), ms(to), merchant_id],
            |r| sql::hour_total(r),
        )
    }

    async fn terminal_listing(
        &self,
        merchant_id: Option<i64>,
    ) -> Result<Vec<tillgate_core::console::TerminalListing>, StoreError> {
        let open = tillgate_core::terminal::CommandState::Open.as_str();
        self.read_all(sql::TERMINALS, params![merchant_id, open], |r| {
            sql::terminal(r)
        })
    }

    async fn search_payments(&self, q: &PaymentSearch) -> Result<Vec<PaymentRecord>, StoreError> {
        let (text, values) = sql::search_sql(q);
        let binds: Vec<Bind> = values
            .into_iter()
            .map(|v| match v {
                sql::Value::Int(i) => Bind::Int(Some(i)),
                sql::Value::Text(t) => Bind::Text(Some(t)),
            })
            .collect();
        self.read_all(&text, rusqlite::params_from_iter(binds.iter()), |r| {
            rows::payment(r)
        })
    }
}
