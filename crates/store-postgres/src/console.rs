//! The console's users, sessions and audit log, and the payment search, on PostgreSQL.

use crate::{db_error, dollar_placeholders, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tillgate_core::console::{
    ApprovalRecord, ApprovalState, AuditRecord, Decision, NewApproval, NewAudit, NewUser,
    PaymentSearch, RefundAuthority, SessionRecord, UserRecord,
};
use tillgate_core::store::ConsoleStore;
use tillgate_core::Conflict;
use tillgate_core::{PaymentRecord, StoreError};
use tillgate_store_sql::console as sql;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[async_trait]
impl ConsoleStore for PgStore {
    async fn insert_user(&self, u: NewUser) -> Result<i64, StoreError> {
        let text = dollar_placeholders(sql::INSERT_USER);
        sqlx::query_scalar::<_, i64>(&text)
            .bind(u.login)
            .bind(u.password_hash)
            .bind(u.role.as_str())
            .bind(u.merchant_id)
            .bind(ms(u.created_at))
            .bind((!u.stores.is_empty()).then(|| u.stores.join(" ")))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let text = dollar_placeholders(&sql::user_by("login"));
        self.one(sqlx::query(&text).bind(login), sql::user).await
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let text = dollar_placeholders(&sql::user_by("id"));
        self.one(sqlx::query(&text).bind(id), sql::user).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let text = sql::users_sql();
        self.all(sqlx::query(&text), sql::user).await
    }

    async fn set_password(&self, user_id: i64, hash: &str) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::SET_PASSWORD);
        self.exec(sqlx::query(&text).bind(hash).bind(user_id))
            .await
            .map(drop)
    }

    async fn set_disabled(&self, user_id: i64, disabled: bool) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::SET_DISABLED);
        self.exec(sqlx::query(&text).bind(i64::from(disabled)).bind(user_id))
            .await
            .map(drop)
    }

    async fn login_failed(
        &self,
        user_id: i64,
        lock_after: i64,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::LOGIN_FAILED);
        let q = sqlx::query(&text)
            .bind(lock_after)
            .bind(ms(until))
            .bind(user_id);
        self.exec(q).await.map(drop)
    }

    async fn login_succeeded(&self, user_id: i64) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::LOGIN_SUCCEEDED);
        self.exec(sqlx::query(&text).bind(user_id)).await.map(drop)
    }

    async fn insert_session(&self, s: SessionRecord) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::INSERT_SESSION);
        let q = sqlx::query(&text)
            .bind(s.id_hash)
            .bind(s.user_id)
            .bind(s.csrf)
            .bind(ms(s.created_at))
            .bind(ms(s.last_seen_at));
        self.exec(q).await.map(drop)
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let text = dollar_placeholders(sql::SESSION);
        self.one(sqlx::query(&text).bind(id_hash), sql::session)
            .await
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::TOUCH_SESSION);
        self.exec(sqlx::query(&text).bind(ms(at)).bind(id_hash))
            .await
            .map(drop)
    }

    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::DELETE_SESSION);
        self.exec(sqlx::query(&text).bind(id_hash)).await.map(drop)
    }

    async fn delete_sessions_of(&self, user_id: i64) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::DELETE_SESSIONS_OF);
        self.exec(sqlx::query(&text).bind(user_id)).await.map(drop)
    }

    async fn audit(&self, e: NewAudit) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::INSERT_AUDIT);
        let q = sqlx::query(&text)
            .bind(ms(e.at))
            .bind(e.user_id)
            .bind(e.login)
            .bind(e.action)
            .bind(e.transaction_no)
            .bind(e.detail)
            .bind(e.address);
        self.exec(q).await.map(drop)
    }

    async fn audit_of_transaction(
        &self,
        transaction_no: &str,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let text = dollar_placeholders(sql::AUDIT_OF_TRANSACTION);
        self.all(sqlx::query(&text).bind(transaction_no), sql::audit)
            .await
    }

    async fn audit_of_user(
        &self,
        user_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let text = dollar_placeholders(sql::AUDIT_OF_USER);
        self.all(
            sqlx::query(&text).bind(user_id).bind(i64::from(limit)),
            sql::audit,
        )
        .await
    }

    async fn set_refund_authority(
        &self,
        merchant_id: i64,
        authority: RefundAuthority,
        threshold_minor: Option<i64>,
        api_refunds_need_approval: bool,
    ) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::SET_REFUND_AUTHORITY);
        let q = sqlx::query(&text)
            .bind(authority.as_str())
            .bind(threshold_minor)
            .bind(i64::from(api_refunds_need_approval))
            .bind(merchant_id);
        self.exec(q).await.map(drop)
    }

    async fn insert_approval(&self, a: NewApproval) -> Result<ApprovalRecord, StoreError> {
        let text = dollar_placeholders(sql::INSERT_APPROVAL);
        let key = a.form_key.clone();
        let q = sqlx::query(&text)
            .bind(a.payment_id)
            .bind(a.merchant_id)
            .bind(a.transaction_no)
            .bind(a.amount_minor)
            .bind(a.currency)
            .bind(a.reason)
            .bind(a.form_key)
            .bind(a.requested_by)
            .bind(a.requested_login)
            .bind(ms(a.requested_at))
            .bind(ApprovalState::Pending.as_str());
        match self.exec(q).await {
            Ok(_) | Err(StoreError::Conflict(Conflict::UniqueKey)) => {}
            Err(e) => return Err(e),
        }
        let text = dollar_placeholders(sql::APPROVAL_BY_KEY);
        self.one(sqlx::query(&text).bind(key), sql::approval)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an approval vanished after its insert".into()))
    }

    async fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>, StoreError> {
        let text = dollar_placeholders(sql::APPROVAL);
        self.one(sqlx::query(&text).bind(id), sql::approval).await
    }

    async fn approvals(
        &self,
        merchant_id: Option<i64>,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        // PostgreSQL must know the parameters' types where they are only compared to NULL.
        let text = dollar_placeholders(sql::APPROVALS)
            .replace("$1 IS NULL", "$1::bigint IS NULL")
            .replace("$2 IS NULL", "$2::text IS NULL");
        let state = pending_only.then_some(ApprovalState::Pending.as_str());
        let q = sqlx::query(&text)
            .bind(merchant_id)
            .bind(state)
            .bind(i64::from(limit));
        self.all(q, sql::approval).await
    }

    async fn approvals_of_payment(
        &self,
        payment_id: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let text = dollar_placeholders(sql::APPROVALS_OF_PAYMENT);
        self.all(sqlx::query(&text).bind(payment_id), sql::approval)
            .await
    }

    async fn approval_of_refund(
        &self,
        refund_id: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let text = dollar_placeholders(sql::APPROVAL_OF_REFUND);
        self.one(sqlx::query(&text).bind(refund_id), sql::approval)
            .await
    }

    async fn decide_approval(&self, d: Decision) -> Result<bool, StoreError> {
        let text = dollar_placeholders(sql::DECIDE_APPROVAL);
        let q = sqlx::query(&text)
            .bind(d.state.as_str())
            .bind(d.by)
            .bind(d.login)
            .bind(ms(d.at))
            .bind(d.reason)
            .bind(d.id)
            .bind(ApprovalState::Pending.as_str());
        self.exec(q).await.map(|n| n == 1)
    }

    async fn approval_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::APPROVAL_OUTCOME);
        self.exec(sqlx::query(&text).bind(outcome).bind(id))
            .await
            .map(drop)
    }

    async fn hourly_totals(
        &self,
        merchant_id: Option<i64>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<tillgate_core::console::HourTotal>, StoreError> {
        // PostgreSQL sums bigints as numeric and must know the type of a parameter that is only
        // compared to NULL.
        let text = dollar_placeholders(sql::HOURLY_TOTALS)
            .replace("SUM(amount_minor)", "SUM(amount_minor)::bigint")
            .replace("SUM(refunded_minor)", "SUM(refunded_minor)::bigint")
            .replace("$3 IS NULL", "$3::bigint IS NULL");
        let q = sqlx::query(&text)
            .bind(ms(from))
            .bind(ms(to))
            .bind(merchant_id);
        self.all(q, sql::hour_total).await
    }

    async fn terminal_listing(
        &self,
        merchant_id: Option<i64>,
    ) -> Result<Vec<tillgate_core::console::TerminalListing>, StoreError> {
        let text = dollar_placeholders(sql::TERMINALS).replace("$1 IS NULL", "$1::bigint IS NULL");
        let open = tillgate_core::terminal::CommandState::Open.as_str();
        self.all(
            sqlx::query(&text).bind(merchant_id).bind(open),
            sql::terminal,
        )
        .await
    }

    async fn search_payments(&self, q: &PaymentSearch) -> Result<Vec<PaymentRecord>, StoreError> {
        let (text, values) = sql::search_sql(q);
        let text = dollar_placeholders(&text);
        let mut query = sqlx::query(&text);
        for v in values {
            query = match v {
                sql::Value::Int(i) => query.bind(i),
                sql::Value::Text(t) => query.bind(t),
            };
        }
        self.all(query, tillgate_store_sql::payment).await
    }
}
