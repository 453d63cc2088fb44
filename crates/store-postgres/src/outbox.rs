//! Notifications (the outbox) and their delivery attempts on PostgreSQL.

use crate::{db_error, dollar_placeholders, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tillgate_core::store::OutboxStore;
use tillgate_core::*;

#[async_trait]
impl OutboxStore for PgStore {
    async fn claim_notifications(
        &self,
        claim: &NotificationClaim,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let text = dollar_placeholders(&tillgate_store_sql::claim_sql(true));
        let q = sqlx::query(&text)
            .bind(claim.now.timestamp_millis())
            .bind(claim.lease_until.timestamp_millis())
            .bind(claim.limit)
            .bind(claim.per_merchant)
            .bind(tillgate_store_sql::held_json(&claim.held));
        self.all(q, tillgate_store_sql::outbox).await
    }

    async fn finish_attempt(&self, a: AttemptRecord, next: AttemptNext) -> Result<(), StoreError> {
        let (status, next_at, delivered_at) = match next {
            AttemptNext::Delivered => {
                (OutboxStatus::Delivered, None, Some(a.at.timestamp_millis()))
            }
            AttemptNext::RetryAt(t) => (OutboxStatus::Pending, Some(t.timestamp_millis()), None),
            AttemptNext::Failed => (OutboxStatus::Failed, None, None),
        };
        // One statement: the attempt and the notification's new state land together.
        let q = sqlx::query(
            "WITH a AS (INSERT INTO notification_attempts (outbox_id, attempt, at, http_status, \
               response_head, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7)) \
             UPDATE outbox SET status = $8, attempts = $2, \
               next_attempt_at = COALESCE($9, next_attempt_at), last_attempt_at = $3, \
               delivered_at = $10, leased_until = NULL WHERE id = $1",
        )
        .bind(a.outbox_id)
        .bind(a.attempt)
        .bind(a.at.timestamp_millis())
        .bind(a.http_status)
        .bind(&a.response_head)
        .bind(a.latency_ms)
        .bind(&a.error)
        .bind(status.as_str())
        .bind(next_at)
        .bind(delivered_at);
        self.exec(q).await.map(drop)
    }

    async fn next_notification_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = $1")
                .bind(OutboxStatus::Pending.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        due.map(tillgate_store_sql::time).transpose()
    }

    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let q = sqlx::query(
            "SELECT * FROM outbox WHERE ($1::text IS NULL OR status = $1) AND created_at >= $2 \
             AND ($3::bigint IS NULL OR payment_id = $3) ORDER BY id LIMIT $4",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.since.map_or(0, |t| t.timestamp_millis()))
        .bind(filter.payment_id)
        .bind(filter.limit.clamp(1, 10_000));
        self.all(q, tillgate_store_sql::outbox).await
    }

    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM outbox WHERE id = $1").bind(id);
        self.one(q, tillgate_store_sql::outbox).await
    }

    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let q = sqlx::query("SELECT * FROM notification_attempts WHERE outbox_id = $1 ORDER BY id")
            .bind(outbox_id);
        self.all(q, tillgate_store_sql::attempt).await
    }

    async fn resend(&self, what: Resend, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let pending = OutboxStatus::Pending.as_str();
        let q = match what {
            Resend::One(id) => sqlx::query(
                "UPDATE outbox SET status = $1, attempts = 0, next_attempt_at = $2, \
                 leased_until = NULL, delivered_at = NULL WHERE id = $3",
            )
            .bind(pending)
            .bind(now.timestamp_millis())
            .bind(id),
            Resend::FailedSince(t) => sqlx::query(
                "UPDATE outbox SET status = $1, attempts = 0, next_attempt_at = $2, \
                 leased_until = NULL WHERE status = $3 AND created_at >= $4",
            )
            .bind(pending)
            .bind(now.timestamp_millis())
            .bind(OutboxStatus::Failed.as_str())
            .bind(t.timestamp_millis()),
        };
        self.exec(q).await
    }
}
