//! The Pockyt/Yuansfer v3 merchant dialect.
//!
//! Only this crate knows Pockyt's wire field names. It turns a request (JSON or form) into
//! parameters, verifies `verifySign`, parses the fields into domain values, calls the lifecycle
//! service and renders the answer in Pockyt's envelope `{"result", "ret_code", "ret_msg"}`.

mod api;
pub mod envelope;
pub mod notify;
/// The request parameters, shared with the other dialects.
pub use tillgate_wire::params;
mod render;
pub mod sign;

pub use api::{router, router_with};
pub use envelope::{PockytError, RetCode};
pub use notify::PockytRenderer;
