//! What the merchant dialects share on the wire: request bodies (JSON or form) parsed into
//! parameters that keep the exact text that was sent, so signatures are computed over what the
//! merchant signed.

pub mod params;

pub use params::{Params, ParamsError, Value};
