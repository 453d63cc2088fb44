//! The channel port: the wallet server that actually moves the money.

use async_trait::async_trait;
use tillgate_domain::{ChannelOutcome, Money};

/// What the gateway asks the wallet to do.
#[derive(Debug, Clone)]
pub enum ChannelOp {
    /// Charge the customer whose wallet showed `barcode` (or who scans a QR code).
    Pay {
        transaction_no: String,
        amount: Money,
        barcode: Option<String>,
        vendor: Option<String>,
    },
    /// Abandon a transaction that was never paid.
    Close {
        transaction_no: String,
        amount: Money,
        /// The gateway's cancel this is, so that the wallet's late answer can name it (a
        /// transaction may see a cancel fail and another one asked).
        cancel_no: String,
    },
    /// Return the full amount of a transaction paid today.
    Reverse {
        transaction_no: String,
        amount: Money,
        cancel_no: String,
    },
    /// Return part or all of a paid transaction.
    Refund {
        transaction_no: String,
        refund_no: String,
        amount: Money,
    },
    /// Ask what became of an earlier operation whose answer was unknown (the janitor does).
    Query {
        transaction_no: String,
        operation: QueryTarget,
        /// The amount of the operation asked about (the payment's, the refund's, the
        /// cancel's), and whether the payment was submitted without a barcode (a QR code
        /// the customer scans). A wallet that keeps records answers from them and needs
        /// neither; one that keeps none (the sandbox) answers by its rules from these.
        amount: Money,
        qr_code: bool,
    },
}

/// Which earlier operation a query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    Payment,
    Refund { refund_no: String },
    Cancel { cancel_no: String },
}

/// The wallet's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReply {
    pub outcome: ChannelOutcome,
    /// The wallet's own reference, when it gave one.
    pub channel_ref: Option<String>,
    /// The wallet's reason for a decline, when it gave one.
    pub message: Option<String>,
}

impl ChannelReply {
    pub fn new(outcome: ChannelOutcome) -> ChannelReply {
        ChannelReply {
            outcome,
            channel_ref: None,
            message: None,
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Asks the wallet; a time-out or a broken connection is `ChannelOutcome::Unknown`, never an
    /// error that would let the caller forget the money in flight.
    async fn execute(&self, op: ChannelOp) -> ChannelReply;
}
