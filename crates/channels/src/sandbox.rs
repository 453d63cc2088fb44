//! The sandbox wallet: deterministic answers chosen by the amount, so a developer can play
//! every outcome from a POS without a real wallet.
//!
//! | operation | last two digits of the amount in minor units | answer |
//! |---|---|---|
//! | pay | 51 | declined |
//! | pay | 52 | unknown: stays pending until the wallet's answer is played through the sandbox control endpoint |
//! | pay | anything else | approved |
//! | refund | 61 | declined |
//! | refund | anything else | approved |
//! | pay without a barcode (QR code shown to the customer) | any | unknown: pending until the customer's payment is played |
//! | close, void, reverse | 53 | unknown: in progress until the wallet's answer is played |
//! | close, void, reverse | anything else | approved |

use async_trait::async_trait;
use tillgate_core::{Channel, ChannelOp, ChannelReply};
use tillgate_domain::ChannelOutcome;

/// The in-process sandbox wallet.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxWallet;

/// The last two digits of an amount in minor units.
fn last_two_digits(minor: i64) -> i64 {
    minor % 100
}

impl SandboxWallet {
    /// The answer the sandbox gives to `op`, without side effects.
    pub fn decide(op: &ChannelOp) -> ChannelReply {
        match op {
            // A QR code waits for the customer to scan and pay it.
            ChannelOp::Pay { barcode: None, .. } => ChannelReply::new(ChannelOutcome::Unknown),
            ChannelOp::Pay { amount, .. } => match last_two_digits(amount.minor()) {
                51 => ChannelReply {
                    outcome: ChannelOutcome::Declined,
                    channel_ref: None,
                    message: Some("sandbox: amounts ending in 51 are declined".into()),
                },
                52 => ChannelReply::new(ChannelOutcome::Unknown),
                _ => ChannelReply {
                    outcome: ChannelOutcome::Approved,
                    channel_ref: None,
                    message: None,
                },
            },
            ChannelOp::Refund { amount, .. } if last_two_digits(amount.minor()) == 61 => {
                ChannelReply {
                    outcome: ChannelOutcome::Declined,
                    channel_ref: None,
                    message: Some("sandbox: refunds ending in 61 are declined".into()),
                }
            }
            ChannelOp::Close { amount, .. } | ChannelOp::Reverse { amount, .. }
                if last_two_digits(amount.minor()) == 53 =>
            {
                ChannelReply::new(ChannelOutcome::Unknown)
            }
            ChannelOp::Refund { .. } | ChannelOp::Close { .. } | ChannelOp::Reverse { .. } => {
                ChannelReply::new(ChannelOutcome::Approved)
            }
            // The sandbox keeps no record: what it left unknown stays unknown until played
            // through the control endpoint.
            ChannelOp::Query { .. } => ChannelReply::new(ChannelOutcome::Unknown),
        }
    }
}

#[async_trait]
impl Channel for SandboxWallet {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        SandboxWallet::decide(&op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillgate_domain::{Currency, Money};

    fn pay(minor: i64) -> ChannelOp {
        ChannelOp::Pay {
            transaction_no: "1".into(),
            amount: Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap(),
            barcode: Some("281234".into()),
            vendor: None,
        }
    }

    fn refund(minor: i64) -> ChannelOp {
        ChannelOp::Refund {
            transaction_no: "1".into(),
            refund_no: "2".into(),
            amount: Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap(),
        }
    }

    #[test]
    fn the_amount_chooses_the_answer() {
        assert_eq!(
            SandboxWallet::decide(&pay(1300)).outcome,
            ChannelOutcome::Approved
        );
        assert_eq!(
            SandboxWallet::decide(&pay(1351)).outcome,
            ChannelOutcome::Declined
        );
        assert_eq!(
            SandboxWallet::decide(&pay(52)).outcome,
            ChannelOutcome::Unknown
        );
        assert_eq!(
            SandboxWallet::decide(&pay(5100)).outcome,
            ChannelOutcome::Approved
        );
        assert_eq!(
            SandboxWallet::decide(&refund(161)).outcome,
            ChannelOutcome::Declined
        );
        assert_eq!(
            SandboxWallet::decide(&refund(151)).outcome,
            ChannelOutcome::Approved
        );
    }
}
