//! Terminal presence, handshake nonces and terminal commands on PostgreSQL; commands waiting
//! for another node are announced with NOTIFY.

use crate::{db_error, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tillgate_core::store::TerminalStore;
use tillgate_core::terminal::{CommandOutcome, CommandRecord, CommandState, Presence};
use tillgate_core::StoreError;

#[async_trait]
impl TerminalStore for PgStore {
    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let q =
            sqlx::query("UPDATE terminals SET online_node = $1, last_seen_at = $2 WHERE tid = $3")
                .bind(node)
                .bind(at.timestamp_millis())
                .bind(tid);
        self.exec(q).await.map(drop)
    }

    async fn presence(&self, tid: &str) -> Result<Option<Presence>, StoreError> {
        let q =
            sqlx::query("SELECT online_node, last_seen_at FROM terminals WHERE tid = $1").bind(tid);
        self.one(q, tillgate_store_sql::presence).await
    }

    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let forget = sqlx::query("DELETE FROM terminal_nonces WHERE at < $1")
            .bind(forget_before.timestamp_millis());
        self.exec(forget).await?;
        let q = sqlx::query(
            "INSERT INTO terminal_nonces (tid, nonce, at) VALUES ($1, $2, $3) \
             ON CONFLICT (tid, nonce) DO NOTHING",
        )
        .bind(tid)
        .bind(nonce)
        .bind(at.timestamp_millis());
        Ok(self.exec(q).await? == 1)
    }

    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let q =
            sqlx::query("SELECT * FROM terminal_commands WHERE command_id = $1").bind(command_id);
        self.one(q, tillgate_store_sql::command).await
    }

    async fn open_commands(&self, tid: &str) -> Result<Vec<CommandRecord>, StoreError> {
        let q = sqlx::query(
            "SELECT * FROM terminal_commands WHERE tid = $1 AND state = $2 ORDER BY id LIMIT 100",
        )
        .bind(tid)
        .bind(CommandState::Open.as_str());
        self.all(q, tillgate_store_sql::command).await
    }

    async fn finish_command(
        &self,
        command_id: &str,
        outcome: CommandOutcome,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE terminal_commands SET state = $1, outcome = $2, message = $3, \
             updated_at = $4 WHERE command_id = $5 AND state = $6",
        )
        .bind(CommandState::Done.as_str())
        .bind(outcome.as_str())
        .bind(message)
        .bind(at.timestamp_millis())
        .bind(command_id)
        .bind(CommandState::Open.as_str());
        Ok(self.exec(q).await? == 1)
    }

    async fn announce_command(&self, command_id: &str) -> Result<(), StoreError> {
        let q = sqlx::query("SELECT pg_notify('tillgate_commands', $1)").bind(command_id);
        self.exec(q).await.map(drop)
    }

    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(db_error)?;
        listener
            .listen("tillgate_commands")
            .await
            .map_err(db_error)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // recv reconnects by itself after a lost connection; the hub also re-reads
                // open commands whenever a terminal connects, so a missed announcement only
                // delays a command, never loses it.
                match listener.recv().await {
                    Ok(n) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "command listener failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}
