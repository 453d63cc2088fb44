//! POS terminals: the commands the gateway sends them and the hub that carries them.
//!
//! A terminal holds a connection to one gateway node. A command (sale, reversal, cancel of an
//! unpaid order) is written to the database in the same transaction as the payment change it
//! belongs to, then delivered by whichever node holds the terminal's connection. The terminal
//! acknowledges it, reports progress, and sends a final result, which that node applies to the
//! payment. A command is never lost: until its result arrives it stays open, and a terminal
//! that reconnects gets its open commands again.

use crate::error::LifecycleError;
use crate::store::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tillgate_domain::ChannelOutcome;

/// What a terminal is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    /// Take a payment from the customer.
    Sale,
    /// Reverse a paid transaction of the day in full, shown on the terminal.
    Reversal,
    /// Cancel an unpaid order.
    Cancel,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Sale => "sale",
            CommandKind::Reversal => "reversal",
            CommandKind::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<CommandKind> {
        match s {
            "sale" => Some(CommandKind::Sale),
            "reversal" => Some(CommandKind::Reversal),
            "cancel" => Some(CommandKind::Cancel),
            _ => None,
        }
    }
}

/// A command as it travels to the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalCommand {
    pub id: String,
    pub kind: CommandKind,
    pub transaction_no: String,
    pub amount_minor: i64,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A command to write with the payment change it belongs to.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub command: TerminalCommand,
    pub tid: String,
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    /// Written; not finished (it may or may not have reached the terminal).
    Open,
    /// The terminal's final result is applied.
    Done,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Approved,
    Declined,
}

impl CommandOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandOutcome::Approved => "approved",
            CommandOutcome::Declined => "declined",
        }
    }

    pub fn parse(s: &str) -> Option<CommandOutcome> {
        match s {
            "approved" => Some(CommandOutcome::Approved),
            "declined" => Some(CommandOutcome::Declined),
            _ => None,
        }
    }

    /// The outcome of a terminal's final answer; `None` for an unknown one (no result yet).
    pub fn of(outcome: ChannelOutcome) -> Option<CommandOutcome> {
        match outcome {
            ChannelOutcome::Approved => Some(CommandOutcome::Approved),
            ChannelOutcome::Declined => Some(CommandOutcome::Declined),
            ChannelOutcome::Unknown => None,
        }
    }
}

impl CommandState {
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandState::Open => "open",
            CommandState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<CommandState> {
        match s {
            "open" => Some(CommandState::Open),
            "done" => Some(CommandState::Done),
            _ => None,
        }
    }
}

/// A stored command.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    pub command: TerminalCommand,
    pub tid: String,
    pub payment_id: i64,
    pub cancel_id: Option<i64>,
    pub state: CommandState,
    /// How it ended, once done.
    pub outcome: Option<CommandOutcome>,
    pub message: Option<String>,
}

/// The terminal's final word on a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalResult {
    /// Approved or declined; Unknown when no result came in time (the command stays open).
    pub outcome: ChannelOutcome,
    pub message: Option<String>,
}

/// What a terminal reported, sent by the hub for the lifecycle to apply
/// (`Lifecycle::apply_terminal_events`); the hub never changes a payment itself. `applied`
/// answers once the report is durably recorded, or why it could not be (a result not applied
/// is not confirmed to the terminal, which then sends it again).
#[derive(Debug)]
pub struct TerminalEvent {
    pub report: TerminalReport,
    pub applied: tokio::sync::oneshot::Sender<Result<(), LifecycleError>>,
}

/// The content of a [`TerminalEvent`].
#[derive(Debug, Clone)]
pub enum TerminalReport {
    /// A stage of a command (acknowledged, shown, processing…), for the payment's timeline.
    Progress {
        command: CommandRecord,
        stage: String,
    },
    /// A command's final result, to apply with its payment change.
    Result {
        command_id: String,
        result: TerminalResult,
    },
}

/// Why a command could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("the terminal is not connected")]
    Offline,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Carries commands to terminals, wherever their connection is.
#[async_trait]
pub trait TerminalHub: Send + Sync + 'static {
    /// True when the terminal holds a live connection to some node.
    async fn is_online(&self, tid: &str) -> Result<bool, StoreError>;

    /// Delivers a command already written to the database and waits up to `wait` for its
    /// result. `Err(Offline)` at once when the terminal is not connected; an `Unknown` outcome
    /// when no result came in time (the command stays open and is applied when it comes).
    async fn execute(
        &self,
        tid: &str,
        command: &TerminalCommand,
        wait: Duration,
    ) -> Result<TerminalResult, HubError>;
}

/// Where a terminal's connection is: the node holding it (none when it closed), and when that
/// node last heard from the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub node: Option<String>,
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A stored terminal credential: the secret is sealed.
#[derive(Debug, Clone)]
pub struct TerminalRow {
    pub merchant: crate::model::MerchantRecord,
    pub tid: String,
    pub secret_sealed: String,
    /// The node holding its connection, and when it last heard from it.
    pub online_node: Option<String>,
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
}
