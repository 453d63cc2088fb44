//! The unified (Jeepay-style) merchant dialect.
//!
//! Only this crate knows the unified wire field names. It parses a request (JSON or form),
//! authenticates the app (`mchNo`, `appId`, `sign`) before anything is read, parses the fields
//! into domain values, calls the lifecycle service and answers
//! `{"code","msg","data","sign"}`; it also renders the signed notifications of the payments it
//! created. Endpoints: `/api/pay/unifiedOrder`, `/api/pay/query`, `/api/pay/close`,
//! `/api/pay/cancel`, `/api/cancel/query` (seed 004), `/api/refund/refundOrder`,
//! `/api/refund/query`.

mod api;
pub mod envelope;
pub mod extra;
mod fields;
pub mod notify;
pub mod render;
pub mod sign;

#[cfg(test)]
mod tests;

pub use api::{router, router_with, Endpoint, DIALECT};
pub use envelope::{Code, UnifiedError};
pub use notify::UnifiedRenderer;
