//! The YabandPay merchant dialect: one endpoint, `POST /Payments`, whose JSON body names a
//! `method` (`v3.POS`, `v3.POSReversal`, `v3.POSCancel`, `v3.CancelPayment`,
//! `v3.BarcodePayment`, `v3.QRcodePayment`, `v3.QueryOrder`, `v3.CreateRefund`,
//! `v3.QueryRefundOrder`).
//!
//! Only this crate knows YabandPay's field names. Every YabandPay `user` is a POS terminal of
//! a merchant, with its own secret: the request is authenticated (HMAC-SHA256 `sign`, fresh
//! `time`) before anything else is read, its fields are parsed into domain values, the
//! lifecycle service is called, and the answer is `{"status","code","data","message"}` with
//! seed 003's codes. The terminal methods reach the terminal through the lifecycle's terminal
//! hub. Notifications of the payments made here are rendered by [`YabandRenderer`].

mod api;
pub mod envelope;
pub mod extra;
mod fields;
pub mod notify;
pub mod render;
mod request;
pub mod sign;

#[cfg(test)]
mod tests;

pub use api::{router, router_with, Method, YabandConfig, DIALECT};
pub use envelope::{Code, YabandError};
pub use notify::YabandRenderer;
