//! A terminal hub whose terminals do what a test says, reporting results to the lifecycle as
//! the real hub does (an event, applied before `execute` returns).

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tillgate_core::terminal::{
    HubError, TerminalCommand, TerminalEvent, TerminalHub, TerminalReport, TerminalResult,
};
use tillgate_core::{LifecycleError, StoreError};
use tillgate_domain::ChannelOutcome;
use tokio::sync::{mpsc, oneshot};

/// What a scripted terminal does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Approve,
    Decline,
    /// Not connected.
    Offline,
    /// Connected, but no result within the wait (the command stays open).
    Silent,
    /// Connected when asked, gone when the command is sent.
    Vanish,
}

/// The scripted hub; terminals approve unless told otherwise.
pub struct ScriptedHub {
    events: mpsc::Sender<TerminalEvent>,
    modes: Mutex<HashMap<String, Mode>>,
    sent: Mutex<Vec<(String, TerminalCommand)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScriptedHub {
    pub fn new(events: mpsc::Sender<TerminalEvent>) -> ScriptedHub {
        ScriptedHub {
            events,
            modes: Mutex::new(HashMap::new()),
            sent: Mutex::new(Vec::new()),
        }
    }

    pub fn mode(&self, tid: &str) -> Mode {
        lock(&self.modes).get(tid).copied().unwrap_or(Mode::Approve)
    }

    pub fn set(&self, tid: &str, mode: Mode) {
        lock(&self.modes).insert(tid.to_owned(), mode);
    }

    /// The last command delivered, with its terminal.
    pub fn last(&self) -> Option<(String, TerminalCommand)> {
        lock(&self.sent).last().cloned()
    }

    /// How many commands were delivered.
    pub fn count(&self) -> usize {
        lock(&self.sent).len()
    }

    /// Reports a terminal's result as the real hub does, and waits until it is applied.
    pub async fn report(
        &self,
        command_id: &str,
        result: TerminalResult,
    ) -> Result<(), LifecycleError> {
        let (applied, done) = oneshot::channel();
        let report = TerminalReport::Result {
            command_id: command_id.to_owned(),
            result,
        };
        let gone = || LifecycleError::Store(StoreError::Unavailable("lifecycle gone".into()));
        self.events
            .send(TerminalEvent { report, applied })
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl TerminalHub for ScriptedHub {
    async fn is_online(&self, tid: &str) -> Result<bool, StoreError> {
        Ok(self.mode(tid) != Mode::Offline)
    }

    async fn execute(
        &self,
        tid: &str,
        command: &TerminalCommand,
        _wait: std::time::Duration,
    ) -> Result<TerminalResult, HubError> {
        let outcome = match self.mode(tid) {
            Mode::Offline | Mode::Vanish => return Err(HubError::Offline),
            Mode::Silent => ChannelOutcome::Unknown,
            Mode::Approve => ChannelOutcome::Approved,
            Mode::Decline => ChannelOutcome::Declined,
        };
        lock(&self.sent).push((tid.to_owned(), command.clone()));
        if outcome == ChannelOutcome::Unknown {
            return Ok(TerminalResult {
                outcome,
                message: None,
            });
        }
        let result = TerminalResult {
            outcome,
            message: Some("scripted terminal".into()),
        };
        self.report(&command.id, result.clone())
            .await
            .map_err(|e| match e {
                LifecycleError::Store(e) => HubError::Store(e),
                other => HubError::Store(StoreError::Corrupt(other.to_string())),
            })?;
        Ok(result)
    }
}
