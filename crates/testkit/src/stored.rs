//! What the kit's store holds, read the way a test asserts it.

use crate::Kit;
use tillgate_core::terminal::CommandRecord;
use tillgate_core::{
    CancelRecord, EventRecord, NotificationFilter, OutboxRecord, PaymentRecord, RefundRecord,
};
use tillgate_domain::RefundState;

impl Kit {
    /// The payment as stored now.
    pub async fn payment(&self, payment_id: i64) -> PaymentRecord {
        self.store
            .payment_by_id(payment_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read payment {payment_id}: {e}"))
            .unwrap_or_else(|| panic!("no payment {payment_id}"))
    }

    /// A refund of the payment's merchant, as stored now.
    pub async fn refund(&self, p: &PaymentRecord, refund_no: &str) -> RefundRecord {
        self.store
            .refund_by_no(p.merchant_id, refund_no)
            .await
            .unwrap_or_else(|e| panic!("cannot read refund {refund_no}: {e}"))
            .unwrap_or_else(|| panic!("no refund {refund_no}"))
    }

    /// The payment's refunds, oldest first.
    pub async fn refunds(&self, payment_id: i64) -> Vec<RefundRecord> {
        self.store
            .refunds_of(payment_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read refunds: {e}"))
    }

    /// The payment's cancels, oldest first.
    pub async fn cancels(&self, payment_id: i64) -> Vec<CancelRecord> {
        self.store
            .cancels_of(payment_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read cancels: {e}"))
    }

    /// The payment's timeline.
    pub async fn events(&self, payment_id: i64) -> Vec<EventRecord> {
        self.store
            .events_of(payment_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read events: {e}"))
    }

    /// How many events of `kind` the payment's timeline has.
    pub async fn events_of_kind(&self, payment_id: i64, kind: &str) -> usize {
        let events = self.events(payment_id).await;
        events.iter().filter(|e| e.kind == kind).count()
    }

    /// The payment's notifications, oldest first.
    pub async fn notifications(&self, payment_id: i64) -> Vec<OutboxRecord> {
        let filter = NotificationFilter {
            payment_id: Some(payment_id),
            limit: 1000,
            ..NotificationFilter::default()
        };
        let mut all = self
            .store
            .notifications(&filter)
            .await
            .unwrap_or_else(|e| panic!("cannot read notifications: {e}"));
        all.sort_by_key(|n| n.id);
        all
    }

    /// How many notifications of `topic` the payment has.
    pub async fn notifications_of(&self, payment_id: i64, topic: &str) -> usize {
        let all = self.notifications(payment_id).await;
        all.iter().filter(|n| n.topic.as_str() == topic).count()
    }

    /// The terminal commands of `tid` still waiting for their result.
    pub async fn open_commands(&self, tid: &str) -> Vec<CommandRecord> {
        self.store
            .open_commands(tid)
            .await
            .unwrap_or_else(|e| panic!("cannot read commands: {e}"))
    }

    /// Asserts that the payment's totals respect its amount and match its refunds' states:
    /// refunded is the sum of the refunds that succeeded, reserved of those still in progress.
    pub async fn assert_totals_agree_with_refund_rows(&self, payment_id: i64) {
        let p = self.payment(payment_id).await;
        let refunds = self.refunds(payment_id).await;
        let sum = |state: RefundState| {
            refunds
                .iter()
                .filter(|r| r.state == state)
                .map(|r| r.amount.minor())
                .sum::<i64>()
        };
        assert!(
            p.payment.refunded().minor() + p.payment.reserved().minor()
                <= p.payment.amount().minor()
        );
        assert_eq!(
            p.payment.refunded().minor(),
            sum(RefundState::Succeeded),
            "refunded total against the succeeded refund rows"
        );
        assert_eq!(
            p.payment.reserved().minor(),
            sum(RefundState::InProgress),
            "reserved total against the refund rows still in progress"
        );
    }
}
