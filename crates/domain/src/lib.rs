//! The payment domain of tillgate: money, ids, the payment, refund and cancel state machines,
//! business-day rules and the injected clock.
//!
//! Nothing in this crate does I/O, knows a wire format or talks SQL. Every rule it enforces
//! answers with a named, typed outcome that the dialects render in their own envelopes.

pub mod business_day;
pub mod clock;
pub mod ids;
pub mod money;
pub mod payment;

pub use business_day::{BusinessDayRule, MerchantZone};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{IdError, Key, MerchantNo, StoreNo};
pub use money::{AmountError, Currency, Money};
pub use payment::{
    CancelIntent, CancelKind, CancelRejected, CancelState, ChannelOutcome, PayRejected, Payment,
    PaymentState, RefundRejected, RefundState,
};
