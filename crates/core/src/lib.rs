//! The lifecycle service of tillgate and the ports it drives.
//!
//! Dialects turn wire requests into calls of [`service::Lifecycle`]; the service applies the
//! domain rules through a [`store::Store`] (one atomic unit of work per state change) and asks a
//! [`channel::Channel`] (the wallet side) or a [`terminal::TerminalHub`] (POS terminals) to move
//! the money. [`credentials::Credentials`] opens merchants' secrets for the dialects'
//! authenticators, the notification renderers and the hub.

pub mod books;
pub mod channel;
pub mod closing;
pub mod console;
pub mod credentials;
pub mod error;
pub mod ids;
pub mod model;
pub mod note;
pub mod notify;
pub mod page;
pub mod replay;
pub mod secret;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod terminal;

pub use channel::{Channel, ChannelOp, ChannelReply, QueryTarget};
pub use credentials::Credentials;
pub use error::LifecycleError;
pub use model::*;
pub use secret::{Secret, SecretBox, SecretError};
pub use service::{Lifecycle, LifecycleConfig};
pub use snapshot::Snapshot;
pub use store::{
    BooksStore, Conflict, ConsoleStore, CredentialStore, MutateFn, Mutated, OutboxStore,
    PaymentStore, Rejection, ReplayStore, Store, StoreError, TerminalStore, Writes,
};
