//! Notifications (the outbox) and their delivery attempts on SQLite.

use crate::writer::{self, native};
use crate::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use tillgate_core::store::OutboxStore;
use tillgate_core::*;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim_notifications(
        &self,
        claim: &NotificationClaim,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let claim = claim.clone();
        self.write(move |conn| lease(conn, &claim)).await
    }

    async fn finish_attempt(
        &self,
        attempt: AttemptRecord,
        next: AttemptNext,
    ) -> Result<(), StoreError> {
        self.write(move |conn| finish_attempt(conn, attempt, next))
            .await
    }

    async fn next_notification_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due = self.read_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status = ?",
            OutboxStatus::Pending.as_str(),
        )?;
        due.map(tillgate_store_sql::time).transpose()
    }

    async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let status = filter.status.map(|s| s.as_str());
        self.read_all(
            "SELECT * FROM outbox WHERE (? IS NULL OR status = ?) AND created_at >= ? \
             AND (? IS NULL OR payment_id = ?) ORDER BY id LIMIT ?",
            params![
                status,
                status,
                filter.since.map_or(0, |t| t.timestamp_millis()),
                filter.payment_id,
                filter.payment_id,
                filter.limit.clamp(1, 10_000)
            ],
            |r| tillgate_store_sql::outbox(r),
        )
    }

    async fn notification(&self, id: i64) -> Result<Option<OutboxRecord>, StoreError> {
        self.read_one("SELECT * FROM outbox WHERE id = ?", params![id], |r| {
            tillgate_store_sql::outbox(r)
        })
    }

    async fn attempts_of(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM notification_attempts WHERE outbox_id = ? ORDER BY id",
            params![outbox_id],
            |r| tillgate_store_sql::attempt(r),
        )
    }

    async fn resend(&self, what: Resend, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now_ms = now.timestamp_millis();
        self.write(move |conn| resend(conn, what, now_ms)).await
    }
}

fn lease(conn: &Connection, claim: &NotificationClaim) -> Result<Vec<OutboxRecord>, StoreError> {
    let sql = tillgate_store_sql::claim_sql(false);
    writer::all(
        conn,
        &sql,
        params![
            claim.now.timestamp_millis(),
            claim.lease_until.timestamp_millis(),
            claim.limit,
            claim.per_merchant,
            tillgate_store_sql::held_json(&claim.held),
        ],
        |r| tillgate_store_sql::outbox(r),
    )
}

/// The outbox columns an attempt's outcome sets: status, next attempt time, delivery time.
fn next_columns(a: &AttemptRecord, next: AttemptNext) -> (&'static str, Option<i64>, Option<i64>) {
    match next {
        AttemptNext::Delivered => ("delivered", None, Some(a.at.timestamp_millis())),
        AttemptNext::RetryAt(t) => ("pending", Some(t.timestamp_millis()), None),
        AttemptNext::Failed => ("failed", None, None),
    }
}

fn finish_attempt(
    conn: &Connection,
    a: AttemptRecord,
    next: AttemptNext,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO notification_attempts (outbox_id, attempt, at, http_status, response_head, \
         latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.outbox_id,
            a.attempt,
            a.at.timestamp_millis(),
            a.http_status,
            a.response_head,
            a.latency_ms,
            a.error,
        ])
    })
    .map_err(native)?;
    let (status, next_at, delivered_at) = next_columns(&a, next);
    conn.prepare_cached(
        "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
         last_attempt_at = ?, delivered_at = ?, leased_until = NULL WHERE id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            status,
            a.attempt,
            next_at,
            a.at.timestamp_millis(),
            delivered_at,
            a.outbox_id,
        ])
    })
    .map(drop)
    .map_err(native)
}

fn resend(conn: &Connection, what: Resend, now_ms: i64) -> Result<u64, StoreError> {
    let n = match what {
        Resend::One(id) => conn
            .prepare_cached(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL, delivered_at = NULL WHERE id = ?",
            )
            .and_then(|mut s| s.execute(params![now_ms, id])),
        Resend::FailedSince(t) => conn
            .prepare_cached(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             leased_until = NULL WHERE status = 'failed' AND created_at >= ?",
            )
            .and_then(|mut s| s.execute(params![now_ms, t.timestamp_millis()])),
    }
    .map_err(native)?;
    Ok(n as u64)
}
