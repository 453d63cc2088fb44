//! The invariants of ARCHITECTURE.md, checked on what the store holds after a step, and the
//! books at the end: the gateway's against the world's ledger.

use super::driver::Sim;
use std::collections::HashMap;
use tillgate_core::{NotificationFilter, PaymentRecord};
use tillgate_domain::{CancelState, PaymentState, RefundState};

/// What the simulation saw of a payment at its last check.
#[derive(Debug, Clone)]
pub struct Seen {
    pub state: PaymentState,
    pub refunds: HashMap<i64, RefundState>,
    pub cancels: HashMap<i64, CancelState>,
}

impl Seen {
    pub fn new(p: &PaymentRecord) -> Seen {
        Seen {
            state: p.payment.state(),
            refunds: HashMap::new(),
            cancels: HashMap::new(),
        }
    }
}

/// Whether the state machine can go from `from` to `to` (in one or more transitions).
fn reachable(from: PaymentState, to: PaymentState) -> bool {
    use PaymentState::*;
    from == to
        || match from {
            Created => true,
            Pending => to != Created,
            Paid => matches!(to, PartiallyRefunded | Refunded | Cancelled),
            PartiallyRefunded => to == Refunded,
            Refunded | Failed | Cancelled | Closed => false,
        }
}

impl Sim {
    /// Checks the payments the step touched, or all of them.
    pub async fn check(&mut self, all: bool) {
        let mut which: Vec<usize> = if all {
            (0..self.pays.len()).collect()
        } else {
            self.touched.clone()
        };
        which.sort_unstable();
        which.dedup();
        for i in which {
            self.check_payment(i).await;
        }
    }

    async fn check_payment(&mut self, i: usize) {
        let store = self.store();
        let p = self.read(i).await;
        let id = p.id;
        let refunds = store
            .refunds_of(id)
            .await
            .unwrap_or_else(|e| Sim::store_error(e));
        let cancels = store
            .cancels_of(id)
            .await
            .unwrap_or_else(|e| Sim::store_error(e));
        let events = store
            .events_of(id)
            .await
            .unwrap_or_else(|e| Sim::store_error(e));
        let filter = NotificationFilter {
            payment_id: Some(id),
            limit: 10_000,
            ..NotificationFilter::default()
        };
        let outbox = store
            .notifications(&filter)
            .await
            .unwrap_or_else(|e| Sim::store_error(e));
        let q = &p.payment;
        let (amount, refunded, reserved) = (
            q.amount().minor(),
            q.refunded().minor(),
            q.reserved().minor(),
        );
        let at = format!("p{i} ({}, {:?})", p.transaction_no, q.state());

        // Refunds never exceed what was paid; the totals are the refund rows' sums.
        assert!(
            refunded + reserved <= amount,
            "{at}: refunded {refunded} + reserved {reserved} > paid {amount}"
        );
        let sum = |state: RefundState| -> i64 {
            refunds
                .iter()
                .filter(|r| r.state == state)
                .map(|r| r.amount.minor())
                .sum()
        };
        assert_eq!(
            refunded,
            sum(RefundState::Succeeded),
            "{at}: refunded total is not the sum of succeeded refunds"
        );
        assert_eq!(
            reserved,
            sum(RefundState::InProgress),
            "{at}: reserved is not the sum of refunds in flight"
        );
        if refunded > 0 {
            assert!(
                matches!(
                    q.state(),
                    PaymentState::PartiallyRefunded | PaymentState::Refunded
                ),
                "{at}: refunded money in a state that says otherwise"
            );
        }
        assert_eq!(
            q.state() == PaymentState::Refunded,
            refunded == amount,
            "{at}: refunded in full iff state refunded"
        );

        // Cancels: at most one in flight, and the payment knows it.
        let open_cancels = cancels
            .iter()
            .filter(|c| c.state == CancelState::InProgress)
            .count();
        assert!(open_cancels <= 1, "{at}: {open_cancels} cancels in flight");
        assert_eq!(
            q.cancel_in_flight().is_some(),
            open_cancels == 1,
            "{at}: cancel in flight against the cancel rows"
        );

        // Legal transitions only, and settled rows stay settled.
        let seen = &self.pays[i].seen;
        assert!(
            reachable(seen.state, q.state()),
            "{at}: illegal transition {:?} -> {:?}",
            seen.state,
            q.state()
        );
        for r in &refunds {
            if let Some(before) = seen.refunds.get(&r.id) {
                assert!(
                    !before.is_final() || *before == r.state,
                    "{at}: refund {} went {before:?} -> {:?}",
                    r.refund_no,
                    r.state
                );
            }
        }
        for c in &cancels {
            if let Some(before) = seen.cancels.get(&c.id) {
                assert!(
                    !before.is_final() || *before == c.state,
                    "{at}: cancel {} went {before:?} -> {:?}",
                    c.cancel_no,
                    c.state
                );
            }
        }

        // Every change has its event, and every change a merchant is told of its outbox row.
        let events_of = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
        let outbox_of = |topic: &str| outbox.iter().filter(|n| n.topic.as_str() == topic).count();
        let paid = usize::from(q.paid_at().is_some());
        assert_eq!(events_of("payment.paid"), paid, "{at}: payment.paid events");
        let told = usize::from(p.notify_url.is_some());
        assert_eq!(
            outbox_of("payment.paid"),
            paid * told,
            "{at}: payment.paid notifications"
        );
        assert_eq!(
            events_of("refund.requested"),
            refunds.len(),
            "{at}: refund.requested events"
        );
        assert_eq!(
            events_of("cancel.requested"),
            cancels.len(),
            "{at}: cancel.requested events"
        );
        let refunds_told = |state: RefundState| {
            refunds
                .iter()
                .filter(|r| r.state == state && r.notify_url.is_some())
                .count()
        };
        assert_eq!(
            outbox_of("refund.succeeded"),
            refunds_told(RefundState::Succeeded),
            "{at}: refund.succeeded notifications"
        );
        assert_eq!(
            outbox_of("refund.failed"),
            refunds_told(RefundState::Failed),
            "{at}: refund.failed notifications"
        );
        let succeeded = refunds
            .iter()
            .filter(|r| r.state == RefundState::Succeeded)
            .count();
        assert_eq!(
            events_of("refund.succeeded"),
            succeeded,
            "{at}: refund.succeeded events"
        );
        let cancels_told = cancels
            .iter()
            .filter(|c| c.state == CancelState::Succeeded && c.notify_url.is_some())
            .count();
        assert_eq!(
            outbox_of("cancel.succeeded"),
            cancels_told,
            "{at}: cancel.succeeded notifications"
        );
        let cancelled = cancels
            .iter()
            .filter(|c| c.state == CancelState::Succeeded)
            .count();
        assert!(cancelled <= 1, "{at}: {cancelled} cancels succeeded");
        assert_eq!(
            events_of("cancel.succeeded"),
            cancelled,
            "{at}: cancel.succeeded events"
        );

        let seen = &mut self.pays[i].seen;
        seen.state = q.state();
        seen.refunds = refunds.iter().map(|r| (r.id, r.state)).collect();
        seen.cancels = cancels.iter().map(|c| (c.id, c.state)).collect();
    }

    /// At the end: nothing in flight, and every payment's books equal the world's ledger
    /// (money taken minus money returned).
    pub async fn books_end(&mut self) {
        let mut refunds = 0;
        let mut cancels = 0;
        for i in 0..self.pays.len() {
            let p = self.read(i).await;
            let q = &p.payment;
            let at = format!("p{i} ({}, {:?})", p.transaction_no, q.state());
            assert_ne!(
                q.state(),
                PaymentState::Pending,
                "{at}: still pending at the end"
            );
            assert_eq!(
                q.reserved().minor(),
                0,
                "{at}: refunds still reserved at the end"
            );
            assert!(
                q.cancel_in_flight().is_none(),
                "{at}: a cancel still in flight at the end"
            );
            let gateway = match q.state() {
                PaymentState::Paid | PaymentState::PartiallyRefunded | PaymentState::Refunded => {
                    q.amount().minor() - q.refunded().minor()
                }
                _ => 0,
            };
            let account = self
                .world
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .accounts
                .get(&p.transaction_no)
                .cloned()
                .unwrap_or_default();
            assert!(
                account.returned <= account.taken,
                "{at}: the wallet returned {} of {} taken",
                account.returned,
                account.taken
            );
            assert_eq!(gateway, account.taken - account.returned, "{at}: the gateway's books say {gateway}, the wallet holds {} (taken {}, returned {})", account.taken - account.returned, account.taken, account.returned);
            let store = self.store();
            refunds += store
                .refunds_of(p.id)
                .await
                .unwrap_or_else(|e| Sim::store_error(e))
                .len();
            cancels += store
                .cancels_of(p.id)
                .await
                .unwrap_or_else(|e| Sim::store_error(e))
                .len();
        }
        self.report.refunds = refunds;
        self.report.cancels = cancels;
    }
}
