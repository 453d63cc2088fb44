//! Why a use case did not happen.

use crate::store::{Rejection, StoreError};

/// Why a use case did not happen. Every variant leaves the stored state unchanged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such transaction for this merchant")]
    NotFound,
    #[error("this key was already used with other parameters")]
    KeyReused,
    #[error("a request with this key is still in progress; retry later")]
    InProgress,
    #[error("refused by the payment rules: {0:?}")]
    Rejected(Rejection),
    #[error("the terminal is not connected")]
    TerminalOffline,
    /// The merchant's policy says a refund must carry the merchant's own refund reference.
    #[error("this merchant's refunds must carry a refund reference")]
    RefundReferenceRequired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LifecycleError {
    /// A stored row that should exist is missing: a bug or tampering, never input.
    pub(crate) fn corrupt(what: &str) -> LifecycleError {
        LifecycleError::Store(StoreError::Corrupt(what.to_owned()))
    }
}
