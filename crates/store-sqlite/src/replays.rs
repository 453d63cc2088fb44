//! The exact-replay guard's memory of signed requests on SQLite.

use crate::writer::{self, native, Bind};
use crate::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use tillgate_core::replay::StoredAnswer;
use tillgate_core::store::ReplayStore;
use tillgate_core::StoreError;

#[async_trait]
impl ReplayStore for SqliteStore {
    async fn claim_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        at: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Int(Some(merchant_id)),
            Bind::Text(Some(digest.to_owned())),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Int(Some(window_start.timestamp_millis())),
        ];
        self.write(move |conn| writer::execute(conn, tillgate_store_sql::CLAIM_REPLAY, binds))
            .await
            .map(|n| n == 1)
    }

    async fn replay_answer(
        &self,
        merchant_id: i64,
        digest: &str,
    ) -> Result<Option<Option<StoredAnswer>>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT status, content_type, body FROM replays \
                     WHERE merchant_id = ? AND digest = ?",
                )
                .map_err(native)?;
            let mut rows = stmt.query(params![merchant_id, digest]).map_err(native)?;
            let Some(row) = rows.next().map_err(native)? else {
                return Ok(None);
            };
            let status: Option<i64> = row.get(0).map_err(native)?;
            let content_type: Option<String> = row.get(1).map_err(native)?;
            let body: Option<Vec<u8>> = row.get(2).map_err(native)?;
            Ok(Some(tillgate_store_sql::stored_answer(
                status,
                content_type,
                body,
            )?))
        })
    }

    async fn answer_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let (digest, answer) = (digest.to_owned(), answer.clone());
        let at_ms = claimed_at.timestamp_millis();
        self.write(move |conn| {
            conn.prepare_cached(tillgate_store_sql::ANSWER_REPLAY)
                .and_then(|mut s| {
                    s.execute(params![
                        i64::from(answer.status),
                        answer.content_type,
                        answer.body,
                        merchant_id,
                        digest,
                        at_ms
                    ])
                })
                .map(drop)
                .map_err(native)
        })
        .await
    }

    async fn release_replay(
        &self,
        merchant_id: i64,
        digest: &str,
        claimed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(Some(merchant_id)),
            Bind::Text(Some(digest.to_owned())),
            Bind::Int(Some(claimed_at.timestamp_millis())),
        ];
        self.write(move |conn| {
            writer::execute(conn, tillgate_store_sql::RELEASE_REPLAY, binds).map(drop)
        })
        .await
    }

    async fn forget_replays(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let binds = vec![Bind::Int(Some(before.timestamp_millis()))];
        self.write(move |conn| {
            writer::execute(conn, "DELETE FROM replays WHERE first_at < ?", binds)
        })
        .await
    }
}
