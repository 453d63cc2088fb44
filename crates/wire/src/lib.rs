//! What the merchant dialects share on the wire: request bodies (JSON or form) parsed into
//! parameters that keep the exact text that was sent, so signatures are computed over what the
//! merchant signed. Parsing is strict: duplicate keys, bytes that are not UTF-8 and control
//! characters are refused before anything acts on a request. And the rate limits every
//! dialect applies to a merchant once its signature is verified, and the answers the
//! exact-replay guard keeps (`replay`).

pub mod limits;
pub mod params;
pub mod replay;

pub use limits::{Busy, RateLimit};
pub use params::{has_control, json_object, Params, ParamsError, Value};
