//! The exact-replay guard's memory of signed requests on PostgreSQL: its claims and answers
//! are committed by the writers, with the other writes of concurrent requests.

use crate::writer::Statement;
use crate::{db_error, dollar_placeholders, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::sync::OnceLock;
use tillgate_core::replay::StoredAnswer;
use tillgate_core::store::ReplayStore;
use tillgate_core::StoreError;

#[async_trait]
impl ReplayStore for PgStore {
    async fn claim_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        at: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // On the hot path of unkeyed refunds: committed by the writers with the other writes.
        static TEXT: OnceLock<String> = OnceLock::new();
        let text = TEXT.get_or_init(|| dollar_placeholders(tillgate_store_sql::CLAIM_REPLAY));
        let q = sqlx::query(text.as_str())
            .bind(merchant_id)
            .bind(digest.to_owned())
            .bind(at.timestamp_millis())
            .bind(window_start.timestamp_millis());
        let statement = Statement::counted(text, q)?;
        Ok(self.writers.write(None, statement).await?.count() == 1)
    }

    async fn replay_answer(
        &self,
        merchant_id: i64,
        digest: &str,
    ) -> Result<Option<Option<StoredAnswer>>, StoreError> {
        let row = sqlx::query(
            "SELECT status, content_type, body FROM replays WHERE merchant_id = $1 AND digest = $2",
        )
        .bind(merchant_id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: Option<i64> = row.try_get(0).map_err(db_error)?;
        let content_type: Option<String> = row.try_get(1).map_err(db_error)?;
        let body: Option<Vec<u8>> = row.try_get(2).map_err(db_error)?;
        Ok(Some(tillgate_store_sql::stored_answer(
            status,
            content_type,
            body,
        )?))
    }

    async fn answer_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        static TEXT: OnceLock<String> = OnceLock::new();
        let text = TEXT.get_or_init(|| dollar_placeholders(tillgate_store_sql::ANSWER_REPLAY));
        let q = sqlx::query(text.as_str())
            .bind(i64::from(answer.status))
            .bind(answer.content_type.clone())
            .bind(answer.body.clone())
            .bind(merchant_id)
            .bind(digest.to_owned())
            .bind(claimed_at.timestamp_millis());
        let statement = Statement::counted(text, q)?;
        self.writers.write(None, statement).await.map(drop)
    }

    async fn release_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = dollar_placeholders(tillgate_store_sql::RELEASE_REPLAY);
        let q = sqlx::query(&text)
            .bind(merchant_id)
            .bind(digest)
            .bind(claimed_at.timestamp_millis());
        self.exec(q).await.map(drop)
    }

    async fn forget_replays(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let q =
            sqlx::query("DELETE FROM replays WHERE first_at < $1").bind(before.timestamp_millis());
        self.exec(q).await
    }
}
