//! Refunds in parts (`service/refund.rs`), on a real SQLite store with a wallet whose answers
//! each test chooses: admitted and reserved atomically, never more than was paid, idempotent
//! on the merchant's refund reference.

use std::sync::Arc;
use tillgate_core::service::{CancelOptions, LifecycleError, NotifyTo, RefundKey, RefundRequest};
use tillgate_core::{MerchantRecord, PaymentRecord, Rejection};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, ChannelOutcome, Currency, MerchantZone, Money, PaymentState,
    RefundRejected, RefundState,
};
use tillgate_testkit::{key, refund_request, usd, Kit, OpKind, ScriptedWallet};

/// A kit whose wallet approves payments and answers refunds with `refunds`, a merchant, and a
/// payment of 100.00 paid.
async fn paid(
    name: &str,
    refunds: ChannelOutcome,
) -> (Kit, MerchantRecord, Arc<ScriptedWallet>, PaymentRecord) {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Approved));
    wallet.answer_to(OpKind::Refund, refunds);
    let kit = Kit::builder(name).channel(wallet.clone()).build().await;
    let merchant = kit.merchant("300100", MerchantZone::utc()).await;
    let p = kit.added_and_paid(&merchant, "order-1", usd(10_000)).await;
    assert_eq!(p.payment.state(), PaymentState::Paid);
    (kit, merchant, wallet, p)
}

fn refused(r: Result<impl std::fmt::Debug, LifecycleError>) -> RefundRejected {
    match r {
        Err(LifecycleError::Rejected(Rejection::Refund(why))) => why,
        other => panic!("expected a refused refund, got {other:?}"),
    }
}

#[tokio::test]
async fn partial_refunds_are_admitted_until_the_paid_amount_is_refunded() {
    let (kit, m, wallet, p) = paid("refund-parts", ChannelOutcome::Approved).await;
    let k = key(&p);
    let refund = |minor| kit.app.refund(&m, &k, refund_request(usd(minor), None));
    let (after, first) = refund(3_000).await.unwrap().value;
    assert_eq!(first.state, RefundState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::PartiallyRefunded);
    assert_eq!(after.payment.refundable(), usd(7_000));
    refund(3_000).await.unwrap();
    let (after, last) = refund(4_000).await.unwrap().value;
    assert_eq!(last.state, RefundState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::Refunded);
    assert_eq!(after.payment.refunded(), usd(10_000));
    assert_eq!(refused(refund(1).await), RefundRejected::FullyRefunded);
    assert_eq!(wallet.asked_to(OpKind::Refund), 3);
    assert_eq!(kit.notifications_of(p.id, "refund.succeeded").await, 3);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn a_refund_beyond_what_is_left_is_refused_with_the_refundable_amount_and_changes_nothing() {
    let (kit, m, wallet, p) = paid("refund-exceeds", ChannelOutcome::Approved).await;
    let k = key(&p);
    let refund = |minor| kit.app.refund(&m, &k, refund_request(usd(minor), None));
    refund(7_000).await.unwrap();
    let before = kit.payment(p.id).await;
    assert_eq!(
        refused(refund(3_001).await),
        RefundRejected::ExceedsRefundable {
            refundable: usd(3_000)
        }
    );
    let after = kit.payment(p.id).await;
    assert_eq!(after.payment, before.payment);
    assert_eq!(after.version, before.version);
    assert_eq!(kit.refunds(p.id).await.len(), 1);
    assert_eq!(kit.events_of_kind(p.id, "refund.requested").await, 1);
    assert_eq!(wallet.asked_to(OpKind::Refund), 1);
    // Exactly what is left is still admitted.
    let (after, _) = refund(3_000).await.unwrap().value;
    assert_eq!(after.payment.state(), PaymentState::Refunded);
}

#[tokio::test]
async fn the_refund_reference_replays_its_refund_and_refuses_other_parameters() {
    let (kit, m, wallet, p) = paid("refund-reference", ChannelOutcome::Approved).await;
    let k = key(&p);
    let first = kit
        .app
        .refund(&m, &k, refund_request(usd(2_500), Some("r-1")))
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = kit
        .app
        .refund(&m, &k, refund_request(usd(2_500), Some("r-1")))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.1.refund_no, first.value.1.refund_no);
    assert_eq!(again.value.1.state, RefundState::Succeeded);
    assert_eq!(
        again.value.0.payment.refunded(),
        usd(2_500),
        "refunded once"
    );
    let other_amount = kit
        .app
        .refund(&m, &k, refund_request(usd(2_000), Some("r-1")))
        .await;
    assert!(matches!(other_amount, Err(LifecycleError::KeyReused)));
    // The same reference on another payment of the merchant is another request too.
    let other = kit.added_and_paid(&m, "order-2", usd(10_000)).await;
    let other_payment = kit
        .app
        .refund(&m, &key(&other), refund_request(usd(2_500), Some("r-1")))
        .await;
    assert!(matches!(other_payment, Err(LifecycleError::KeyReused)));
    assert_eq!(wallet.asked_to(OpKind::Refund), 1);
    assert_eq!(kit.refunds(other.id).await.len(), 0);
    // Another merchant's reference of the same name is its own.
    let theirs = kit.merchant("300200", MerchantZone::utc()).await;
    let their_payment = kit.added_and_paid(&theirs, "order-1", usd(10_000)).await;
    let their_refund = kit
        .app
        .refund(
            &theirs,
            &key(&their_payment),
            refund_request(usd(2_500), Some("r-1")),
        )
        .await
        .unwrap();
    assert!(!their_refund.replayed);
}

#[tokio::test]
async fn a_refund_whose_answer_is_unknown_keeps_its_amount_reserved() {
    let (kit, m, _, p) = paid("refund-unknown", ChannelOutcome::Unknown).await;
    let k = key(&p);
    let (after, r) = kit
        .app
        .refund(&m, &k, refund_request(usd(6_000), Some("r-1")))
        .await
        .unwrap()
        .value;
    assert_eq!(r.state, RefundState::InProgress);
    assert_eq!(after.payment.state(), PaymentState::Paid);
    assert_eq!(after.payment.reserved(), usd(6_000));
    assert_eq!(after.payment.refundable(), usd(4_000));
    // The reservation holds back what is refundable, however long the wallet takes.
    kit.clock.advance(chrono::Duration::days(2));
    let more = kit
        .app
        .refund(&m, &k, refund_request(usd(4_001), None))
        .await;
    assert_eq!(
        refused(more),
        RefundRejected::ExceedsRefundable {
            refundable: usd(4_000)
        }
    );
    // A retry while the wallet has not answered is refused as retryable.
    let retry = kit
        .app
        .refund(&m, &k, refund_request(usd(6_000), Some("r-1")))
        .await;
    assert!(matches!(retry, Err(LifecycleError::InProgress)));
    assert_eq!(
        kit.refund(&p, &r.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(kit.notifications_of(p.id, "refund.succeeded").await, 0);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn a_declined_refund_gives_its_reservation_back_and_is_notified_as_failed() {
    let (kit, m, wallet, p) = paid("refund-declined", ChannelOutcome::Declined).await;
    let k = key(&p);
    let (after, r) = kit
        .app
        .refund(&m, &k, refund_request(usd(6_000), Some("r-1")))
        .await
        .unwrap()
        .value;
    assert_eq!(r.state, RefundState::Failed);
    assert_eq!(after.payment.state(), PaymentState::Paid);
    assert_eq!(after.payment.reserved(), usd(0));
    assert_eq!(after.payment.refundable(), usd(10_000));
    assert_eq!(kit.notifications_of(p.id, "refund.failed").await, 1);
    // Its reference now replays the failed refund; the money is refunded under another one.
    let retry = kit
        .app
        .refund(&m, &k, refund_request(usd(6_000), Some("r-1")))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.value.1.state, RefundState::Failed);
    wallet.answer_to(OpKind::Refund, ChannelOutcome::Approved);
    let (after, _) = kit
        .app
        .refund(&m, &k, refund_request(usd(10_000), Some("r-2")))
        .await
        .unwrap()
        .value;
    assert_eq!(after.payment.state(), PaymentState::Refunded);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn a_refund_in_another_currency_is_refused() {
    let (kit, m, wallet, p) = paid("refund-currency", ChannelOutcome::Approved).await;
    let eur = Currency::from_code("EUR").unwrap();
    let in_euros = refund_request(Money::from_minor(1_000, eur).unwrap(), None);
    let refund = kit.app.refund(&m, &key(&p), in_euros).await;
    assert_eq!(refused(refund), RefundRejected::CurrencyMismatch);
    let settled_in_euros = RefundRequest {
        settle_currency: Some(eur),
        ..refund_request(usd(1_000), None)
    };
    let refund = kit.app.refund(&m, &key(&p), settled_in_euros).await;
    assert_eq!(refused(refund), RefundRejected::CurrencyMismatch);
    assert!(kit.refunds(p.id).await.is_empty());
    assert_eq!(wallet.asked_to(OpKind::Refund), 0);
}

#[tokio::test]
async fn only_money_that_was_paid_and_not_reversed_is_refunded() {
    let (kit, m, wallet, paid) = paid("refund-unpaid", ChannelOutcome::Approved).await;
    let added = kit
        .app
        .add(&m, tillgate_testkit::add_request("order-2", usd(10_000)))
        .await
        .unwrap()
        .value;
    let refund = kit
        .app
        .refund(&m, &key(&added), refund_request(usd(1_000), None))
        .await;
    assert_eq!(
        refused(refund),
        RefundRejected::NotPaid {
            state: PaymentState::Created
        }
    );
    // A reversal in flight, then done, keeps refunds out.
    wallet.answer_to(OpKind::Cancel, ChannelOutcome::Unknown);
    let rule = BusinessDayRule::calendar_day(MerchantZone::utc());
    let cancel = kit
        .app
        .cancel(
            &m,
            &key(&paid),
            rule,
            CancelIntent::Cancel,
            CancelOptions::default(),
        )
        .await
        .unwrap()
        .value
        .1;
    let refund = kit
        .app
        .refund(&m, &key(&paid), refund_request(usd(1_000), None))
        .await;
    assert_eq!(refused(refund), RefundRejected::CancelInProgress);
    kit.app
        .wallet_settles_cancel(&cancel.cancel_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    let refund = kit
        .app
        .refund(&m, &key(&paid), refund_request(usd(1_000), None))
        .await;
    assert_eq!(refused(refund), RefundRejected::Cancelled);
    assert_eq!(wallet.asked_to(OpKind::Refund), 0);
}

#[tokio::test]
async fn a_refund_is_notified_where_the_request_says() {
    let (kit, m, _, p) = paid("refund-notify", ChannelOutcome::Approved).await;
    let k = key(&p);
    let to = |notify| RefundRequest {
        notify,
        ..refund_request(usd(1_000), None)
    };
    kit.app
        .refund(&m, &k, to(NotifyTo::PaymentUrl))
        .await
        .unwrap();
    let own_url = NotifyTo::Url("http://127.0.0.1:9/refunds".into());
    kit.app.refund(&m, &k, to(own_url)).await.unwrap();
    kit.app.refund(&m, &k, to(NotifyTo::Nowhere)).await.unwrap();
    let targets: Vec<_> = kit
        .notifications(p.id)
        .await
        .into_iter()
        .filter(|n| n.topic.as_str() == "refund.succeeded")
        .map(|n| n.target_url)
        .collect();
    assert_eq!(
        targets,
        ["http://127.0.0.1:9/notify", "http://127.0.0.1:9/refunds"]
    );
    assert_eq!(kit.refunds(p.id).await.len(), 3);
}

#[tokio::test]
async fn a_refund_is_found_by_its_number_or_reference_for_its_own_merchant_only() {
    let (kit, m, _, p) = paid("refund-by", ChannelOutcome::Approved).await;
    let (_, r) = kit
        .app
        .refund(&m, &key(&p), refund_request(usd(1_000), Some("r-1")))
        .await
        .unwrap()
        .value;
    let by_no = RefundKey::RefundNo(r.refund_no.clone());
    let by_reference = RefundKey::Reference("r-1".into());
    for k in [&by_no, &by_reference] {
        let (payment, found) = kit.app.refund_by(&m, k).await.unwrap();
        assert_eq!(found.refund_no, r.refund_no);
        assert_eq!(payment.id, p.id);
    }
    let other = kit.merchant("300200", MerchantZone::utc()).await;
    for k in [&by_no, &by_reference] {
        let theirs = kit.app.refund_by(&other, k).await;
        assert!(matches!(theirs, Err(LifecycleError::NotFound)));
    }
    let unknown = kit
        .app
        .refund_by(&m, &RefundKey::Reference("r-2".into()))
        .await;
    assert!(matches!(unknown, Err(LifecycleError::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_whose_answers_are_unknown_hold_back_the_refundable_amount() {
    let (kit, m, wallet, p) = paid("refund-concurrent", ChannelOutcome::Unknown).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (app, m, k) = (kit.app.clone(), m.clone(), key(&p));
        tasks.push(tokio::spawn(async move {
            app.refund(&m, &k, refund_request(usd(3_000), Some(&format!("c-{i}"))))
                .await
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => admitted.push(o.value.1),
            Err(LifecycleError::Rejected(Rejection::Refund(
                RefundRejected::ExceedsRefundable { refundable },
            ))) => {
                assert_eq!(refundable, usd(1_000));
                refused += 1;
            }
            Err(e) => panic!("unexpected answer: {e:?}"),
        }
    }
    assert_eq!(
        admitted.len(),
        3,
        "three reservations of 30.00 fit in 100.00"
    );
    assert_eq!(refused, 5);
    assert!(admitted.iter().all(|r| r.state == RefundState::InProgress));
    assert_eq!(kit.payment(p.id).await.payment.reserved(), usd(9_000));
    kit.assert_totals_agree_with_refund_rows(p.id).await;

    // One comes back declined, one approved, one stays unknown.
    kit.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[0].refund_no,
            ChannelOutcome::Declined,
        )
        .await
        .unwrap();
    kit.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[1].refund_no,
            ChannelOutcome::Approved,
        )
        .await
        .unwrap();
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.refunded(), usd(3_000));
    assert_eq!(now.payment.reserved(), usd(3_000));
    assert_eq!(now.payment.refundable(), usd(4_000));
    kit.assert_totals_agree_with_refund_rows(p.id).await;

    // What is left is exactly what may be refunded, even with the wallet answering now.
    wallet.answer_to(OpKind::Refund, ChannelOutcome::Approved);
    let over = kit
        .app
        .refund(&m, &key(&p), refund_request(usd(4_001), None))
        .await;
    assert!(matches!(
        over,
        Err(LifecycleError::Rejected(Rejection::Refund(
            RefundRejected::ExceedsRefundable { .. }
        )))
    ));
    kit.app
        .refund(&m, &key(&p), refund_request(usd(4_000), None))
        .await
        .unwrap();
    // The last unknown one is approved late: the payment is refunded in full, never more.
    kit.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[2].refund_no,
            ChannelOutcome::Approved,
        )
        .await
        .unwrap();
    let end = kit.payment(p.id).await;
    assert_eq!(end.payment.state(), PaymentState::Refunded);
    assert_eq!(end.payment.refunded(), usd(10_000));
    assert_eq!(end.payment.reserved(), usd(0));
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_with_one_reference_reserve_once() {
    let (kit, m, _, p) = paid("refund-same-key", ChannelOutcome::Unknown).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (app, m, k) = (kit.app.clone(), m.clone(), key(&p));
        tasks.push(tokio::spawn(async move {
            app.refund(&m, &k, refund_request(usd(2_000), Some("one-key")))
                .await
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                assert!(!o.replayed);
                admitted += 1;
            }
            Err(LifecycleError::InProgress) => {}
            Err(e) => panic!("unexpected answer: {e:?}"),
        }
    }
    assert_eq!(admitted, 1);
    assert_eq!(kit.refunds(p.id).await.len(), 1);
    assert_eq!(kit.payment(p.id).await.payment.reserved(), usd(2_000));
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

/// A merchant whose API refunds above 20.00 are held for approval.
async fn holding(kit: &Kit, m: &MerchantRecord) {
    kit.store
        .set_refund_authority(
            m.id,
            tillgate_core::console::RefundAuthority::Approval,
            Some(2_000),
            true,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_held_refund_is_reserved_never_sent_and_ends_as_a_person_decides() {
    let (kit, m, wallet, p) = paid("refund-held", ChannelOutcome::Approved).await;
    holding(&kit, &m).await;
    let k = key(&p);
    // Up to the threshold: at once.
    let (_, small) = kit
        .app
        .refund(&m, &k, refund_request(usd(2_000), None))
        .await
        .unwrap()
        .value;
    assert_eq!(small.state, RefundState::Succeeded);
    // Above it: reserved and in progress, the wallet not asked.
    let (after, held) = kit
        .app
        .refund(&m, &k, refund_request(usd(5_000), Some("held-1")))
        .await
        .unwrap()
        .value;
    assert_eq!(held.state, RefundState::InProgress);
    assert_eq!(after.payment.reserved(), usd(5_000));
    assert_eq!(wallet.asked_to(OpKind::Refund), 1);
    // Its retry answers it as it stands; what is left is 30.00.
    let again = kit
        .app
        .refund(&m, &k, refund_request(usd(5_000), Some("held-1")))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.1.refund_no, held.refund_no);
    assert_eq!(
        refused(
            kit.app
                .refund(&m, &k, refund_request(usd(3_001), None))
                .await
        ),
        RefundRejected::ExceedsRefundable {
            refundable: usd(3_000)
        }
    );
    // A wallet answer naming it changes nothing: the wallet never saw it.
    kit.app
        .wallet_settles_refund(&p.transaction_no, &held.refund_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    assert_eq!(kit.payment(p.id).await.payment.reserved(), usd(5_000));
    // A console refund is never held.
    let (_, console) = kit
        .app
        .refund_at_once(&m, &k, refund_request(usd(2_500), None))
        .await
        .unwrap()
        .value;
    assert_eq!(console.state, RefundState::Succeeded);
    // Rejected: failed, released, the failure notified; the wallet still not asked.
    let (after, failed) = kit
        .app
        .reject_held_refund(p.id, held.id, "no receipt")
        .await
        .unwrap()
        .value;
    assert_eq!(failed.state, RefundState::Failed);
    assert_eq!(after.payment.reserved(), usd(0));
    assert_eq!(after.payment.refundable(), usd(5_500));
    assert_eq!(wallet.asked_to(OpKind::Refund), 2);
    assert_eq!(kit.notifications_of(p.id, "refund.failed").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "refund.rejected").await, 1);
    // Deciding again changes nothing.
    let replay = kit
        .app
        .reject_held_refund(p.id, held.id, "again")
        .await
        .unwrap();
    assert!(replay.replayed);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn an_approved_held_refund_goes_to_the_wallet_through_the_normal_path() {
    let (kit, m, wallet, p) = paid("refund-held-approved", ChannelOutcome::Approved).await;
    holding(&kit, &m).await;
    let k = key(&p);
    let (_, held) = kit
        .app
        .refund(&m, &k, refund_request(usd(10_000), Some("all")))
        .await
        .unwrap()
        .value;
    assert_eq!(held.state, RefundState::InProgress);
    assert_eq!(wallet.asked_to(OpKind::Refund), 0);
    let (after, done) = kit
        .app
        .approve_held_refund(p.id, held.id)
        .await
        .unwrap()
        .value;
    assert_eq!(done.state, RefundState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::Refunded);
    assert_eq!(wallet.asked_to(OpKind::Refund), 1);
    assert_eq!(kit.notifications_of(p.id, "refund.succeeded").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "refund.approved").await, 1);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}
