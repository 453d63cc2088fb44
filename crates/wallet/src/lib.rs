//! The wallet over the network: the signed HTTP wallet protocol ([`protocol`]), the HTTP
//! channel the gateway uses to speak it ([`HttpChannel`]), and a standalone wallet simulator
//! with fault injection and a crash-safe state file ([`Simulator`], [`run_simulator`]).
//!
//! The protocol module's documentation is the protocol's reference.

pub mod channel;
pub mod ledger;
pub mod protocol;
pub mod simulator;

pub use channel::{HttpChannel, HttpChannelError};
pub use protocol::{
    parse_key_hex, sign, verify, verify_headers, Answer, Callback, CallbackKind, Outcome,
    ProtocolError,
};
pub use simulator::{run_simulator, Faults, Simulator, SimulatorConfig};
