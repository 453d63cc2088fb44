//! The payment state machine, with its refunds and cancels.
//!
//! A [`Payment`] holds the money facts of one transaction: its amount, how much has been
//! refunded, how much is reserved by refunds still in flight, and whether a cancel is in flight.
//! Every transition either happens or answers a named rejection; none panics on bad input.
//!
//! ```text
//!  Created --submit--> Pending --approved--> Paid --refund--> PartiallyRefunded --refund--> Refunded
//!     |                   |  \--declined--> Failed        \--cancel (same day, full)--> Cancelled
//!     +------cancel-------+--------------------------------> Cancelled
//!     +------close or expire-------------------------------> Closed
//! ```
//! Refunded, Cancelled, Closed and Failed are terminal: no transition leaves them.

use crate::business_day::BusinessDayRule;
use crate::money::Money;
use chrono::{DateTime, Utc};

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// Added by the merchant, not yet submitted to the wallet.
    Created,
    /// Submitted to the wallet; the outcome is not known yet.
    Pending,
    /// Paid in full, nothing refunded.
    Paid,
    /// Paid, part of it refunded.
    PartiallyRefunded,
    /// Paid and refunded in full.
    Refunded,
    /// Declined by the wallet.
    Failed,
    /// Cancelled before payment, or reversed in full on the day it was paid.
    Cancelled,
    /// Expired without ever being paid.
    Closed,
}

impl PaymentState {
    pub const ALL: [PaymentState; 8] = [
        PaymentState::Created,
        PaymentState::Pending,
        PaymentState::Paid,
        PaymentState::PartiallyRefunded,
        PaymentState::Refunded,
        PaymentState::Failed,
        PaymentState::Cancelled,
        PaymentState::Closed,
    ];

    /// True for states that no transition leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PaymentState::Refunded
                | PaymentState::Failed
                | PaymentState::Cancelled
                | PaymentState::Closed
        )
    }

    /// The stable name used in storage and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentState::Created => "created",
            PaymentState::Pending => "pending",
            PaymentState::Paid => "paid",
            PaymentState::PartiallyRefunded => "partially_refunded",
            PaymentState::Refunded => "refunded",
            PaymentState::Failed => "failed",
            PaymentState::Cancelled => "cancelled",
            PaymentState::Closed => "closed",
        }
    }

    pub fn parse(name: &str) -> Option<PaymentState> {
        PaymentState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What the wallet said about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOutcome {
    Approved,
    Declined,
    /// No answer, a time-out, or "pending": the money may or may not have moved.
    Unknown,
}

/// Why a payment cannot be submitted to the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayRejected {
    AlreadySubmitted,
    AlreadyPaid,
    Cancelled,
    Closed,
    Failed,
    CancelInProgress,
}

/// Why a refund cannot be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundRejected {
    CurrencyMismatch,
    NotPaid { state: PaymentState },
    FullyRefunded,
    Cancelled,
    CancelInProgress,
    ExceedsRefundable { refundable: Money },
}

/// Why a payment cannot be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRejected {
    AlreadyCancelled,
    Closed,
    /// A close was asked of a payment that is already paid (closing is for unpaid payments).
    AlreadyPaid,
    Failed,
    AfterRefund,
    RefundInProgress,
    OutsideSameDayWindow,
    InProgress,
}

/// What the merchant asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelIntent {
    /// Cancel: an unpaid payment is voided, a paid one reversed in full on its business day.
    Cancel,
    /// Close: only an unpaid payment, which ends Closed (the unified API's close).
    Close,
    /// Void: only an unpaid payment, which ends Cancelled (a customer who gives up on a
    /// hosted payment page; a payment paid meanwhile is left alone).
    Void,
}

/// What a cancel does to the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelKind {
    /// Never paid, cancelled: the wallet is asked to abandon the transaction; ends Cancelled.
    Void,
    /// Never paid, closed: the wallet is asked to abandon the transaction; ends Closed.
    Close,
    /// Paid today: the full amount goes back (a reversal); ends Cancelled.
    Reverse,
}

impl CancelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelKind::Void => "void",
            CancelKind::Close => "close",
            CancelKind::Reverse => "reverse",
        }
    }

    pub fn parse(name: &str) -> Option<CancelKind> {
        match name {
            "void" => Some(CancelKind::Void),
            "close" => Some(CancelKind::Close),
            "reverse" => Some(CancelKind::Reverse),
            _ => None,
        }
    }
}

macro_rules! order_state {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            Generated = 0,
            InProgress = 1,
            Succeeded = 2,
            Failed = 3,
            Closed = 4,
        }

        impl $name {
            /// The number the unified dialect and the store use (0..=4).
            pub fn code(self) -> i64 {
                self as i64
            }

            pub fn from_code(code: i64) -> Option<$name> {
                match code {
                    0 => Some($name::Generated),
                    1 => Some($name::InProgress),
                    2 => Some($name::Succeeded),
                    3 => Some($name::Failed),
                    4 => Some($name::Closed),
                    _ => None,
                }
            }

            /// The state after the wallet's answer.
            pub fn after(outcome: ChannelOutcome) -> $name {
                match outcome {
                    ChannelOutcome::Approved => $name::Succeeded,
                    ChannelOutcome::Declined => $name::Failed,
                    ChannelOutcome::Unknown => $name::InProgress,
                }
            }

            pub fn is_final(self) -> bool {
                matches!(self, $name::Succeeded | $name::Failed | $name::Closed)
            }
        }
    };
}

order_state!(
    /// A refund order's state: 0 generated, 1 refunding, 2 success, 3 fail, 4 closed.
    RefundState
);
order_state!(
    /// A cancel order's state: 0 generated, 1 in progress, 2 success, 3 failure, 4 closed.
    CancelState
);

/// The money facts of one transaction and the rules that move them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    amount: Money,
    state: PaymentState,
    refunded: Money,
    reserved: Money,
    cancel_in_flight: Option<CancelKind>,
    paid_at: Option<DateTime<Utc>>,
}

impl Payment {
    /// A new payment of a positive amount; `None` for zero.
    pub fn new(amount: Money) -> Option<Payment> {
        if amount.is_zero() {
            return None;
        }
        Some(Payment {
            amount,
            state: PaymentState::Created,
            refunded: Money::zero(amount.currency()),
            reserved: Money::zero(amount.currency()),
            cancel_in_flight: None,
            paid_at: None,
        })
    }

    /// Rebuilds a payment from stored facts; `None` when they break an invariant
    /// (refunded plus reserved above the amount, a state that contradicts the totals, or a
    /// paid state without the time it was paid, which the same-day rules need).
    pub fn restore(
        amount: Money,
        state: PaymentState,
        refunded_minor: i64,
        reserved_minor: i64,
        cancel_in_flight: Option<CancelKind>,
        paid_at: Option<DateTime<Utc>>,
    ) -> Option<Payment> {
        let currency = amount.currency();
        let refunded = Money::from_minor(refunded_minor, currency)?;
        let reserved = Money::from_minor(reserved_minor, currency)?;
        let committed = refunded.checked_add(reserved)?;
        if amount.is_zero() || committed.minor() > amount.minor() {
            return None;
        }
        let was_paid = matches!(
            state,
            PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded
        );
        if was_paid && paid_at.is_none() {
            return None;
        }
        let consistent = match state {
            PaymentState::Created | PaymentState::Pending | PaymentState::Failed => {
                committed.is_zero()
            }
            PaymentState::Paid => refunded.is_zero(),
            PaymentState::PartiallyRefunded => {
                !refunded.is_zero() && refunded.minor() < amount.minor()
            }
            PaymentState::Refunded => refunded == amount,
            PaymentState::Cancelled | PaymentState::Closed => reserved.is_zero(),
        };
        consistent.then_some(Payment {
            amount,
            state,
            refunded,
            reserved,
            cancel_in_flight,
            paid_at,
        })
    }

    pub fn amount(&self) -> Money {
        self.amount
    }

    pub fn state(&self) -> PaymentState {
        self.state
    }

    /// The sum of refunds that succeeded.
    pub fn refunded(&self) -> Money {
        self.refunded
    }

    /// The sum of refunds admitted but not yet answered by the wallet.
    pub fn reserved(&self) -> Money {
        self.reserved
    }

    pub fn cancel_in_flight(&self) -> Option<CancelKind> {
        self.cancel_in_flight
    }

    pub fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.paid_at
    }

    /// True when the payment was paid and then reversed in full by a cancel.
    pub fn was_reversed(&self) -> bool {
        self.state == PaymentState::Cancelled && self.paid_at.is_some()
    }

    /// What can still be refunded: the amount less refunds done and refunds in flight.
    pub fn refundable(&self) -> Money {
        match self.state {
            PaymentState::Paid | PaymentState::PartiallyRefunded => self
                .amount
                .checked_sub(self.refunded)
                .and_then(|m| m.checked_sub(self.reserved))
                .unwrap_or(Money::zero(self.amount.currency())),
            _ => Money::zero(self.amount.currency()),
        }
    }

    /// Hands the payment to the wallet: Created to Pending.
    pub fn submit(&mut self) -> Result<(), PayRejected> {
        if self.cancel_in_flight.is_some() {
            return Err(PayRejected::CancelInProgress);
        }
        match self.state {
            PaymentState::Created => {
                self.state = PaymentState::Pending;
                Ok(())
            }
            PaymentState::Pending => Err(PayRejected::AlreadySubmitted),
            PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded => {
                Err(PayRejected::AlreadyPaid)
            }
            PaymentState::Failed => Err(PayRejected::Failed),
            PaymentState::Cancelled => Err(PayRejected::Cancelled),
            PaymentState::Closed => Err(PayRejected::Closed),
        }
    }

    /// Applies the wallet's answer to a submission. Answers for a payment that is no longer
    /// pending (late or duplicate callbacks) change nothing and return false.
    pub fn settle_submission(&mut self, outcome: ChannelOutcome, at: DateTime<Utc>) -> bool {
        if self.state != PaymentState::Pending {
            return false;
        }
        match outcome {
            ChannelOutcome::Approved => {
                self.state = PaymentState::Paid;
                self.paid_at = Some(at);
                true
            }
            ChannelOutcome::Declined => {
                self.state = PaymentState::Failed;
                true
            }
            ChannelOutcome::Unknown => false,
        }
    }

    /// Starts a cancel. An unpaid payment is voided (or closed, when that is the intent); a paid
    /// one is reversed in full, only on its business day and only while nothing was refunded.
    pub fn begin_cancel(
        &mut self,
        now: DateTime<Utc>,
        rule: &BusinessDayRule,
        intent: CancelIntent,
    ) -> Result<CancelKind, CancelRejected> {
        if self.cancel_in_flight.is_some() {
            return Err(CancelRejected::InProgress);
        }
        let kind = match self.state {
            PaymentState::Created | PaymentState::Pending => match intent {
                CancelIntent::Cancel | CancelIntent::Void => CancelKind::Void,
                CancelIntent::Close => CancelKind::Close,
            },
            PaymentState::Paid if intent != CancelIntent::Cancel => {
                return Err(CancelRejected::AlreadyPaid)
            }
            PaymentState::Paid => {
                if !self.reserved.is_zero() {
                    return Err(CancelRejected::RefundInProgress);
                }
                // A paid payment always knows when it was paid (`settle_submission` sets it,
                // `restore` requires it); without that time the same day cannot be shown.
                match self.paid_at {
                    Some(paid_at) if rule.same_day(paid_at, now) => {}
                    _ => return Err(CancelRejected::OutsideSameDayWindow),
                }
                CancelKind::Reverse
            }
            PaymentState::PartiallyRefunded | PaymentState::Refunded => {
                return Err(CancelRejected::AfterRefund)
            }
            PaymentState::Failed => return Err(CancelRejected::Failed),
            PaymentState::Cancelled => return Err(CancelRejected::AlreadyCancelled),
            PaymentState::Closed => return Err(CancelRejected::Closed),
        };
        self.cancel_in_flight = Some(kind);
        Ok(kind)
    }

    /// Applies the wallet's answer to the cancel in flight. Returns false when nothing changed.
    pub fn settle_cancel(&mut self, outcome: ChannelOutcome) -> bool {
        let Some(kind) = self.cancel_in_flight else {
            return false;
        };
        match outcome {
            ChannelOutcome::Approved => {
                self.cancel_in_flight = None;
                // The submission may have settled while the cancel was in flight; a payment
                // that already reached a terminal state (declined, say) stays there.
                if matches!(
                    self.state,
                    PaymentState::Created | PaymentState::Pending | PaymentState::Paid
                ) {
                    self.state = match kind {
                        CancelKind::Close if self.state != PaymentState::Paid => {
                            PaymentState::Closed
                        }
                        _ => PaymentState::Cancelled,
                    };
                }
                true
            }
            ChannelOutcome::Declined => {
                self.cancel_in_flight = None;
                true
            }
            ChannelOutcome::Unknown => false,
        }
    }

    /// Admits a refund: checks what is left to refund and reserves `amount` in one step.
    pub fn reserve_refund(&mut self, amount: Money) -> Result<(), RefundRejected> {
        if amount.currency() != self.amount.currency() {
            return Err(RefundRejected::CurrencyMismatch);
        }
        match self.state {
            PaymentState::Paid | PaymentState::PartiallyRefunded => {}
            PaymentState::Refunded => return Err(RefundRejected::FullyRefunded),
            PaymentState::Cancelled => return Err(RefundRejected::Cancelled),
            state => return Err(RefundRejected::NotPaid { state }),
        }
        if self.cancel_in_flight.is_some() {
            return Err(RefundRejected::CancelInProgress);
        }
        let refundable = self.refundable();
        if amount.is_zero() || amount.minor() > refundable.minor() {
            return Err(RefundRejected::ExceedsRefundable { refundable });
        }
        self.reserved = self
            .reserved
            .checked_add(amount)
            .ok_or(RefundRejected::ExceedsRefundable { refundable })?;
        Ok(())
    }

    /// Applies the wallet's answer to a refund of `amount` reserved earlier. Returns false when
    /// nothing changed (the outcome is still unknown, or nothing of that size is reserved).
    /// A refund held for a person's approval stays reserved the same way; its rejection is
    /// applied as a decline (the reservation is released, nothing is refunded).
    pub fn settle_refund(&mut self, amount: Money, outcome: ChannelOutcome) -> bool {
        if outcome == ChannelOutcome::Unknown {
            return false;
        }
        let Some(reserved) = self.reserved.checked_sub(amount) else {
            return false;
        };
        self.reserved = reserved;
        if outcome == ChannelOutcome::Approved {
            // reserve_refund guaranteed refunded + reserved <= amount.
            self.refunded = self.refunded.checked_add(amount).unwrap_or(self.amount);
            self.state = if self.refunded == self.amount {
                PaymentState::Refunded
            } else {
                PaymentState::PartiallyRefunded
            };
        }
        true
    }

    /// Closes a payment that was added but never submitted. Money that may be in flight
    /// (a pending submission) is never closed this way.
    pub fn expire(&mut self) -> bool {
        if self.state == PaymentState::Created && self.cancel_in_flight.is_none() {
            self.state = PaymentState::Closed;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::business_day::MerchantZone;
    use crate::money::Currency;
    use proptest::prelude::*;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).unwrap()
    }

    fn rule() -> BusinessDayRule {
        BusinessDayRule::calendar_day(MerchantZone::utc())
    }

    fn paid(minor: i64) -> Payment {
        let mut p = Payment::new(usd(minor)).unwrap();
        p.submit().unwrap();
        assert!(p.settle_submission(ChannelOutcome::Approved, now()));
        p
    }

    #[test]
    fn two_partial_refunds_then_an_over_refund_is_rejected() {
        let mut p = paid(10_000);
        p.reserve_refund(usd(6_000)).unwrap();
        assert_eq!(
            p.reserve_refund(usd(6_000)),
            Err(RefundRejected::ExceedsRefundable {
                refundable: usd(4_000)
            })
        );
        assert!(p.settle_refund(usd(6_000), ChannelOutcome::Approved));
        assert_eq!(p.state(), PaymentState::PartiallyRefunded);
        p.reserve_refund(usd(4_000)).unwrap();
        assert!(p.settle_refund(usd(4_000), ChannelOutcome::Approved));
        assert_eq!(p.state(), PaymentState::Refunded);
        assert_eq!(p.reserve_refund(usd(1)), Err(RefundRejected::FullyRefunded));
    }

    #[test]
    fn a_declined_refund_releases_its_reservation() {
        let mut p = paid(100);
        p.reserve_refund(usd(100)).unwrap();
        assert!(p.settle_refund(usd(100), ChannelOutcome::Declined));
        assert_eq!(p.refundable(), usd(100));
        assert_eq!(p.state(), PaymentState::Paid);
    }

    #[test]
    fn cancel_closes_an_unpaid_payment_and_pay_is_then_rejected() {
        let mut p = Payment::new(usd(1300)).unwrap();
        assert_eq!(
            p.begin_cancel(now(), &rule(), CancelIntent::Cancel),
            Ok(CancelKind::Void)
        );
        assert_eq!(p.submit(), Err(PayRejected::CancelInProgress));
        assert!(p.settle_cancel(ChannelOutcome::Approved));
        assert_eq!(p.state(), PaymentState::Cancelled);
        assert_eq!(p.submit(), Err(PayRejected::Cancelled));
        assert!(!p.was_reversed());
    }

    #[test]
    fn a_paid_payment_is_reversed_only_on_its_day_and_before_any_refund() {
        let mut p = paid(500);
        let next_day = now() + chrono::Duration::days(1);
        assert_eq!(
            p.begin_cancel(next_day, &rule(), CancelIntent::Cancel),
            Err(CancelRejected::OutsideSameDayWindow)
        );
        assert_eq!(
            p.begin_cancel(now(), &rule(), CancelIntent::Cancel),
            Ok(CancelKind::Reverse)
        );
        assert_eq!(
            p.reserve_refund(usd(1)),
            Err(RefundRejected::CancelInProgress)
        );
        assert!(p.settle_cancel(ChannelOutcome::Approved));
        assert!(p.was_reversed());

        let mut q = paid(500);
        q.reserve_refund(usd(100)).unwrap();
        assert_eq!(
            q.begin_cancel(now(), &rule(), CancelIntent::Cancel),
            Err(CancelRejected::RefundInProgress)
        );
        q.settle_refund(usd(100), ChannelOutcome::Approved);
        assert_eq!(
            q.begin_cancel(now(), &rule(), CancelIntent::Cancel),
            Err(CancelRejected::AfterRefund)
        );
    }

    #[test]
    fn void_ends_an_unpaid_payment_cancelled_and_never_reverses_a_paid_one() {
        let mut p = Payment::new(usd(100)).unwrap();
        assert_eq!(
            p.begin_cancel(now(), &rule(), CancelIntent::Void),
            Ok(CancelKind::Void)
        );
        assert!(p.settle_cancel(ChannelOutcome::Approved));
        assert_eq!(p.state(), PaymentState::Cancelled);
        let mut q = paid(100);
        assert_eq!(
            q.begin_cancel(now(), &rule(), CancelIntent::Void),
            Err(CancelRejected::AlreadyPaid)
        );
        assert_eq!(q.state(), PaymentState::Paid);
    }

    #[test]
    fn close_ends_an_unpaid_payment_closed_and_refuses_a_paid_one() {
        let mut p = Payment::new(usd(100)).unwrap();
        assert_eq!(
            p.begin_cancel(now(), &rule(), CancelIntent::Close),
            Ok(CancelKind::Close)
        );
        assert!(p.settle_cancel(ChannelOutcome::Approved));
        assert_eq!(p.state(), PaymentState::Closed);
        let mut q = paid(100);
        assert_eq!(
            q.begin_cancel(now(), &rule(), CancelIntent::Close),
            Err(CancelRejected::AlreadyPaid)
        );
    }

    #[test]
    fn unknown_outcomes_leave_money_in_flight() {
        let mut p = Payment::new(usd(152)).unwrap();
        p.submit().unwrap();
        assert!(!p.settle_submission(ChannelOutcome::Unknown, now()));
        assert_eq!(p.state(), PaymentState::Pending);
        assert!(!p.expire(), "a pending payment is never auto-closed");
    }

    #[test]
    fn restore_refuses_facts_that_break_an_invariant() {
        let at = Some(now());
        assert!(Payment::restore(usd(100), PaymentState::Paid, 0, 100, None, at).is_some());
        assert!(Payment::restore(usd(100), PaymentState::Paid, 60, 50, None, at).is_none());
        assert!(Payment::restore(usd(100), PaymentState::Refunded, 90, 0, None, at).is_none());
        assert!(Payment::restore(usd(100), PaymentState::Created, 0, 1, None, None).is_none());
    }

    #[test]
    fn restore_refuses_a_paid_state_without_its_payment_time() {
        let cases = [
            (PaymentState::Paid, 0, 0),
            (PaymentState::Paid, 0, 40),
            (PaymentState::PartiallyRefunded, 30, 0),
            (PaymentState::Refunded, 100, 0),
        ];
        for (state, refunded, reserved) in cases {
            assert!(
                Payment::restore(usd(100), state, refunded, reserved, None, Some(now())).is_some(),
                "{state:?} with its payment time"
            );
            assert_eq!(
                Payment::restore(usd(100), state, refunded, reserved, None, None),
                None,
                "{state:?} without a payment time"
            );
        }
        // Never paid, or voided before payment: no payment time is expected.
        for state in [
            PaymentState::Created,
            PaymentState::Pending,
            PaymentState::Failed,
            PaymentState::Cancelled,
            PaymentState::Closed,
        ] {
            assert!(Payment::restore(usd(100), state, 0, 0, None, None).is_some());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Submit,
        SettleSubmission(ChannelOutcome),
        Reserve(i64),
        SettleRefund(usize, ChannelOutcome),
        BeginCancel { days_later: i64, close: bool },
        SettleCancel(ChannelOutcome),
        Expire,
    }

    fn outcome() -> impl Strategy<Value = ChannelOutcome> {
        prop_oneof![
            Just(ChannelOutcome::Approved),
            Just(ChannelOutcome::Declined),
            Just(ChannelOutcome::Unknown)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Submit),
            outcome().prop_map(Op::SettleSubmission),
            (0i64..12_000).prop_map(Op::Reserve),
            (0usize..8, outcome()).prop_map(|(i, o)| Op::SettleRefund(i, o)),
            (0i64..2, proptest::bool::ANY).prop_map(|(d, close)| Op::BeginCancel {
                days_later: d,
                close
            }),
            outcome().prop_map(Op::SettleCancel),
            Just(Op::Expire),
        ]
    }

    fn cancel_kind() -> impl Strategy<Value = Option<CancelKind>> {
        prop_oneof![
            Just(None),
            Just(Some(CancelKind::Void)),
            Just(Some(CancelKind::Close)),
            Just(Some(CancelKind::Reverse)),
        ]
    }

    proptest! {
        #[test]
        fn whatever_restores_in_a_paid_state_knows_when_it_was_paid(
            state in proptest::sample::select(PaymentState::ALL.to_vec()),
            amount in 1i64..1_000,
            refunded in 0i64..1_000,
            reserved in 0i64..1_000,
            cancel in cancel_kind(),
            paid_at in proptest::option::of(Just(now())),
        ) {
            if let Some(p) = Payment::restore(usd(amount), state, refunded, reserved, cancel, paid_at) {
                if matches!(p.state(), PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded) {
                    prop_assert!(p.paid_at().is_some(), "{:?} restored without a payment time", p);
                }
            }
        }

        #[test]
        fn no_sequence_refunds_more_than_was_paid_or_leaves_a_terminal_state(
            amount in 1i64..10_000,
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut p = Payment::new(usd(amount)).unwrap();
            let mut in_flight: Vec<Money> = Vec::new();
            let mut refunds_succeeded = 0i64;
            for op in ops {
                let before = p.state();
                match op {
                    Op::Submit => { let _ = p.submit(); }
                    Op::SettleSubmission(o) => { p.settle_submission(o, now()); }
                    Op::Reserve(minor) => {
                        if let Some(m) = Money::from_minor(minor, usd(1).currency()) {
                            if p.reserve_refund(m).is_ok() { in_flight.push(m); }
                        }
                    }
                    Op::SettleRefund(i, o) => {
                        if !in_flight.is_empty() {
                            let m = in_flight[i % in_flight.len()];
                            if p.settle_refund(m, o) {
                                in_flight.retain({ let mut gone = false; move |x| if !gone && *x == m { gone = true; false } else { true } });
                                if o == ChannelOutcome::Approved { refunds_succeeded += m.minor(); }
                            }
                        }
                    }
                    Op::BeginCancel { days_later, close } => {
                        let intent = if close { CancelIntent::Close } else { CancelIntent::Cancel };
                        let _ = p.begin_cancel(now() + chrono::Duration::days(days_later), &rule(), intent);
                    }
                    Op::SettleCancel(o) => { p.settle_cancel(o); }
                    Op::Expire => { p.expire(); }
                }
                prop_assert!(p.refunded().minor() + p.reserved().minor() <= amount);
                prop_assert_eq!(p.refunded().minor(), refunds_succeeded);
                prop_assert_eq!(p.reserved().minor(), in_flight.iter().map(Money::minor).sum::<i64>());
                if before.is_terminal() {
                    prop_assert_eq!(p.state(), before, "left terminal state {:?}", before);
                }
                // What the store would write back must restore to the same payment.
                let restored = Payment::restore(p.amount(), p.state(), p.refunded().minor(), p.reserved().minor(), p.cancel_in_flight(), p.paid_at());
                prop_assert_eq!(restored.as_ref(), Some(&p));
            }
        }
    }
}
