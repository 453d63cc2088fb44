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
//!
//! The janitor's queries (after a time-out or a crash left an operation in flight) are answered
//! by the same rules, from the amount and the kind of payment the query carries: the sandbox
//! keeps no record, so it answers what it would have answered to the operation itself. A
//! payment ending in 52, a QR payment and a cancel ending in 53 stay unknown, as they were.

use async_trait::async_trait;
use tillgate_core::{Channel, ChannelOp, ChannelReply, QueryTarget};
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
            // The sandbox keeps no record: it answers a query with what its rules answer to
            // the operation asked about (what it left unknown stays unknown until played
            // through the control endpoint).
            ChannelOp::Query {
                transaction_no,
                operation,
                amount,
                qr_code,
            } => {
                let transaction_no = transaction_no.clone();
                let amount = *amount;
                SandboxWallet::decide(&match operation {
                    QueryTarget::Payment => ChannelOp::Pay {
                        transaction_no,
                        amount,
                        barcode: (!qr_code).then(String::new),
                        vendor: None,
                    },
                    QueryTarget::Refund { refund_no } => ChannelOp::Refund {
                        transaction_no,
                        refund_no: refund_no.clone(),
                        amount,
                    },
                    QueryTarget::Cancel { cancel_no } => ChannelOp::Close {
                        transaction_no,
                        amount,
                        cancel_no: cancel_no.clone(),
                    },
                })
            }
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

    fn query(operation: QueryTarget, minor: i64, qr_code: bool) -> ChannelOutcome {
        SandboxWallet::decide(&ChannelOp::Query {
            transaction_no: "1".into(),
            operation,
            amount: Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap(),
            qr_code,
        })
        .outcome
    }

    #[test]
    fn a_query_is_answered_by_the_rules_of_the_operation_it_asks_about() {
        use ChannelOutcome::*;
        let refund = || QueryTarget::Refund {
            refund_no: "2".into(),
        };
        let cancel = || QueryTarget::Cancel {
            cancel_no: "3".into(),
        };
        assert_eq!(query(QueryTarget::Payment, 1300, false), Approved);
        assert_eq!(query(QueryTarget::Payment, 1351, false), Declined);
        assert_eq!(query(QueryTarget::Payment, 1352, false), Unknown);
        assert_eq!(query(QueryTarget::Payment, 1300, true), Unknown);
        assert_eq!(query(refund(), 200, false), Approved);
        assert_eq!(query(refund(), 161, false), Declined);
        assert_eq!(query(cancel(), 700, false), Approved);
        assert_eq!(query(cancel(), 553, false), Unknown);
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
