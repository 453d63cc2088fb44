//! Terminal presence, handshake nonces and terminal commands on SQLite.

use crate::writer::{self, Bind};
use crate::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use tillgate_core::store::{FinishCommand, TerminalStore};
use tillgate_core::terminal::{CommandOutcome, CommandRecord, CommandState, Presence};
use tillgate_core::StoreError;

#[async_trait]
impl TerminalStore for SqliteStore {
    async fn terminal_presence(
        &self,
        tid: &str,
        node: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(node.map(str::to_owned)),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Text(Some(tid.to_owned())),
        ];
        self.write(move |conn| {
            writer::execute(
                conn,
                "UPDATE terminals SET online_node = ?, last_seen_at = ? WHERE tid = ?",
                binds,
            )
        })
        .await
        .map(drop)
    }

    async fn presence(&self, tid: &str) -> Result<Option<Presence>, StoreError> {
        self.read_one(
            "SELECT online_node, last_seen_at FROM terminals WHERE tid = ?",
            params![tid],
            |r| tillgate_store_sql::presence(r),
        )
    }

    async fn use_nonce(
        &self,
        tid: &str,
        nonce: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let forget = vec![Bind::Int(Some(forget_before.timestamp_millis()))];
        let binds = vec![
            Bind::Text(Some(tid.to_owned())),
            Bind::Text(Some(nonce.to_owned())),
            Bind::Int(Some(at.timestamp_millis())),
        ];
        self.write(move |conn| {
            writer::execute(conn, "DELETE FROM terminal_nonces WHERE at < ?", forget)?;
            writer::execute(
                conn,
                "INSERT INTO terminal_nonces (tid, nonce, at) VALUES (?, ?, ?) \
                 ON CONFLICT (tid, nonce) DO NOTHING",
                binds,
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.read_one(
            "SELECT * FROM terminal_commands WHERE command_id = ?",
            params![command_id],
            |r| tillgate_store_sql::command(r),
        )
    }

    async fn open_commands(&self, tid: &str) -> Result<Vec<CommandRecord>, StoreError> {
        self.read_all(
            "SELECT * FROM terminal_commands WHERE tid = ? AND state = ? ORDER BY id LIMIT 100",
            params![tid, CommandState::Open.as_str()],
            |r| tillgate_store_sql::command(r),
        )
    }

    async fn finish_command(
        &self,
        command_id: &str,
        outcome: CommandOutcome,
        message: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finish = FinishCommand {
            command_id: command_id.to_owned(),
            outcome,
            message: message.map(str::to_owned),
        };
        let at_ms = at.timestamp_millis();
        self.write(move |conn| crate::payments::finish_command(conn, &finish, at_ms))
            .await
    }

    async fn announce_command(&self, _command_id: &str) -> Result<(), StoreError> {
        // One node: the hub that wrote the command delivers it itself.
        Ok(())
    }

    async fn command_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        Ok(None)
    }
}
