//! Adding a transaction, paying it and querying it (`service/pay.rs`), on a real SQLite store
//! with a wallet whose answers each test chooses.

use std::sync::Arc;
use tillgate_core::service::{AddRequest, LifecycleError, PayRequest};
use tillgate_core::{MerchantRecord, PaymentKey, Rejection, Unresolved, UnresolvedKind};
use tillgate_domain::{ChannelOutcome, MerchantZone, PayRejected, PaymentState};
use tillgate_testkit::{
    add_request, key, pay_request, refund_request, usd, Kit, OpKind, ScriptedWallet,
};

async fn kit(name: &str, answer: ChannelOutcome) -> (Kit, MerchantRecord, Arc<ScriptedWallet>) {
    let wallet = Arc::new(ScriptedWallet::new(answer));
    let kit = Kit::builder(name).channel(wallet.clone()).build().await;
    let merchant = kit.merchant("300100", MerchantZone::utc()).await;
    (kit, merchant, wallet)
}

fn rejected_pay(r: Result<impl std::fmt::Debug, LifecycleError>) -> PayRejected {
    match r {
        Err(LifecycleError::Rejected(Rejection::Pay(why))) => why,
        other => panic!("expected a refused pay, got {other:?}"),
    }
}

fn barcode(code: &str) -> PayRequest {
    PayRequest {
        barcode: Some(code.into()),
        vendor: Some("alipay".into()),
    }
}

#[tokio::test]
async fn adding_again_with_the_same_reference_and_parameters_replays_the_first_payment() {
    let (kit, m, _) = kit("pay-add-replay", ChannelOutcome::Approved).await;
    let first = kit.app.add(&m, add_request("order-1", usd(1_000))).await;
    let first = first.unwrap();
    assert!(!first.replayed);
    kit.clock.advance(chrono::Duration::minutes(3));
    let again = kit
        .app
        .add(&m, add_request("order-1", usd(1_000)))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.id, first.value.id);
    assert_eq!(again.value.transaction_no, first.value.transaction_no);
    assert_eq!(again.value.created_at, first.value.created_at);
    assert_eq!(
        kit.events_of_kind(first.value.id, "payment.created").await,
        1
    );
}

#[tokio::test]
async fn adding_again_with_the_same_reference_and_other_parameters_is_refused_as_key_reused() {
    let (kit, m, _) = kit("pay-add-reused", ChannelOutcome::Approved).await;
    let first = kit.app.add(&m, add_request("order-1", usd(1_000))).await;
    let first = first.unwrap().value;
    let other_amount = kit.app.add(&m, add_request("order-1", usd(1_001))).await;
    assert!(matches!(other_amount, Err(LifecycleError::KeyReused)));
    let other_url = AddRequest {
        notify_url: Some("http://127.0.0.1:9/elsewhere".into()),
        ..add_request("order-1", usd(1_000))
    };
    let other_url = kit.app.add(&m, other_url).await;
    assert!(matches!(other_url, Err(LifecycleError::KeyReused)));
    let other_timeout = AddRequest {
        timeout_minutes: Some(5),
        ..add_request("order-1", usd(1_000))
    };
    let other_timeout = kit.app.add(&m, other_timeout).await;
    assert!(matches!(other_timeout, Err(LifecycleError::KeyReused)));
    // The first payment stands as it was.
    let stored = kit.payment(first.id).await;
    assert_eq!(stored.payment.amount(), usd(1_000));
    assert_eq!(stored.notify_url, first.notify_url);
}

#[tokio::test]
async fn the_same_reference_at_another_merchant_is_another_payment() {
    let (kit, m, _) = kit("pay-add-merchants", ChannelOutcome::Approved).await;
    let other = kit.merchant("300200", MerchantZone::utc()).await;
    let mine = kit.app.add(&m, add_request("order-1", usd(1_000))).await;
    let theirs = kit
        .app
        .add(&other, add_request("order-1", usd(2_000)))
        .await;
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    assert!(!theirs.replayed);
    assert_ne!(mine.value.transaction_no, theirs.value.transaction_no);
    assert_eq!(theirs.value.payment.amount(), usd(2_000));
}

#[tokio::test]
async fn an_approved_payment_is_paid_at_the_clock_s_time_and_its_merchant_is_notified_once() {
    let (kit, m, wallet) = kit("pay-approved", ChannelOutcome::Approved).await;
    let added = kit.app.add(&m, add_request("order-1", usd(1_250))).await;
    let added = added.unwrap().value;
    kit.clock.advance(chrono::Duration::seconds(42));
    let paid = kit.app.pay(&m, &key(&added), pay_request()).await.unwrap();
    assert!(!paid.replayed);
    assert_eq!(paid.value.payment.state(), PaymentState::Paid);
    assert_eq!(paid.value.payment.paid_at(), Some(kit.app.now()));
    assert_eq!(paid.value.vendor.as_deref(), Some("alipay"));
    assert_eq!(wallet.asked_to(OpKind::Pay), 1);
    let notified = kit.notifications(added.id).await;
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0].topic.as_str(), "payment.paid");
    assert_eq!(notified[0].target_url, "http://127.0.0.1:9/notify");
}

#[tokio::test]
async fn a_declined_payment_fails_and_is_not_notified() {
    let (kit, m, _) = kit("pay-declined", ChannelOutcome::Declined).await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_250)).await;
    assert_eq!(p.payment.state(), PaymentState::Failed);
    assert_eq!(p.payment.paid_at(), None);
    assert_eq!(kit.events_of_kind(p.id, "payment.declined").await, 1);
    assert!(kit.notifications(p.id).await.is_empty());
    // A failed payment is not paid again, with any barcode.
    let again = kit
        .app
        .pay(&m, &key(&p), barcode("289999999999999999"))
        .await;
    assert_eq!(rejected_pay(again), PayRejected::Failed);
}

#[tokio::test]
async fn a_payment_whose_answer_is_unknown_stays_pending_for_the_janitor() {
    let (kit, m, _) = kit("pay-unknown", ChannelOutcome::Unknown).await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_250)).await;
    assert_eq!(p.payment.state(), PaymentState::Pending);
    assert!(kit.notifications(p.id).await.is_empty());
    kit.clock.advance(chrono::Duration::minutes(1));
    let waiting = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    assert_eq!(
        waiting,
        [Unresolved {
            payment_id: p.id,
            transaction_no: p.transaction_no.clone(),
            merchant_no: m.merchant_no.clone(),
            kind: UnresolvedKind::Payment,
            since: p.updated_at,
            unanswered_queries: 0,
        }]
    );
    // However long it waits, nothing closes it: only an answer does.
    kit.clock.advance(chrono::Duration::days(3));
    let again = kit.app.pay(&m, &key(&p), pay_request()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.payment.state(), PaymentState::Pending);
}

#[tokio::test]
async fn paying_again_with_the_same_barcode_replays_without_asking_the_wallet_again() {
    let (kit, m, wallet) = kit("pay-replay", ChannelOutcome::Approved).await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_250)).await;
    assert_eq!(p.payment.state(), PaymentState::Paid);
    let again = kit.app.pay(&m, &key(&p), pay_request()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.payment.state(), PaymentState::Paid);
    assert_eq!(again.value.payment.paid_at(), p.payment.paid_at());
    // By its reference too.
    let by_reference = PaymentKey::Reference("order-1".into());
    let again = kit.app.pay(&m, &by_reference, pay_request()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(wallet.asked_to(OpKind::Pay), 1);
    assert_eq!(kit.events_of_kind(p.id, "payment.paid").await, 1);
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 1);
}

#[tokio::test]
async fn paying_a_submitted_payment_with_another_barcode_is_refused() {
    let (kit, m, wallet) = kit("pay-other-barcode", ChannelOutcome::Unknown).await;
    let pending = kit.added_and_paid(&m, "order-1", usd(1_250)).await;
    let other = kit
        .app
        .pay(&m, &key(&pending), barcode("289999999999999999"))
        .await;
    assert_eq!(rejected_pay(other), PayRejected::AlreadySubmitted);
    wallet.answer(ChannelOutcome::Approved);
    let paid = kit.added_and_paid(&m, "order-2", usd(1_250)).await;
    let other = kit
        .app
        .pay(&m, &key(&paid), barcode("289999999999999999"))
        .await;
    assert_eq!(rejected_pay(other), PayRejected::AlreadyPaid);
    // Another vendor with the same barcode is another request too.
    let other_vendor = PayRequest {
        vendor: Some("wechatpay".into()),
        ..pay_request()
    };
    let other = kit.app.pay(&m, &key(&paid), other_vendor).await;
    assert_eq!(rejected_pay(other), PayRejected::AlreadyPaid);
    assert_eq!(wallet.asked_to(OpKind::Pay), 2);
}

#[tokio::test]
async fn an_added_payment_paid_after_it_expired_is_closed_without_asking_the_wallet() {
    let (kit, m, wallet) = kit("pay-expired", ChannelOutcome::Approved).await;
    let req = AddRequest {
        timeout_minutes: Some(10),
        ..add_request("order-1", usd(1_250))
    };
    let added = kit.app.add(&m, req).await.unwrap().value;
    assert_eq!(
        added.expires_at,
        kit.app.now() + chrono::Duration::minutes(10)
    );
    kit.clock
        .advance(chrono::Duration::minutes(10) + chrono::Duration::seconds(1));
    let late = kit.app.pay(&m, &key(&added), pay_request()).await;
    assert_eq!(rejected_pay(late), PayRejected::Closed);
    let stored = kit.payment(added.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Closed);
    assert_eq!(kit.events_of_kind(added.id, "payment.expired").await, 1);
    assert!(wallet.asked().is_empty());
    // Asking again is refused the same way, and writes nothing more.
    let again = kit.app.pay(&m, &key(&added), pay_request()).await;
    assert_eq!(rejected_pay(again), PayRejected::Closed);
    assert_eq!(kit.events_of_kind(added.id, "payment.expired").await, 1);
}

#[tokio::test]
async fn an_added_payment_paid_at_the_moment_it_expires_is_still_paid() {
    let (kit, m, _) = kit("pay-at-expiry", ChannelOutcome::Approved).await;
    let req = AddRequest {
        timeout_minutes: Some(10),
        ..add_request("order-1", usd(1_250))
    };
    let added = kit.app.add(&m, req).await.unwrap().value;
    kit.clock.advance(chrono::Duration::minutes(10));
    let paid = kit.app.pay(&m, &key(&added), pay_request()).await.unwrap();
    assert_eq!(paid.value.payment.state(), PaymentState::Paid);
}

/// A void whose answer is unknown may still succeed at the wallet: the payment must not be
/// handed to the wallet meanwhile, expired or not.
#[tokio::test]
async fn paying_an_expired_payment_whose_cancel_is_in_flight_is_refused_without_asking_the_wallet()
{
    let (kit, m, wallet) = kit("pay-expired-cancel", ChannelOutcome::Approved).await;
    wallet.answer_to(OpKind::Cancel, ChannelOutcome::Unknown);
    let req = AddRequest {
        timeout_minutes: Some(10),
        ..add_request("order-1", usd(1_250))
    };
    let added = kit.app.add(&m, req).await.unwrap().value;
    let rule = tillgate_domain::BusinessDayRule::calendar_day(MerchantZone::utc());
    let (_, cancel) = kit
        .app
        .cancel(
            &m,
            &key(&added),
            rule,
            tillgate_domain::CancelIntent::Cancel,
            Default::default(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(cancel.state, tillgate_domain::CancelState::InProgress);
    kit.clock.advance(chrono::Duration::minutes(11));
    let late = kit.app.pay(&m, &key(&added), pay_request()).await;
    assert_eq!(rejected_pay(late), PayRejected::CancelInProgress);
    assert_eq!(wallet.asked_to(OpKind::Pay), 0, "{:?}", wallet.asked());
    assert_eq!(kit.events_of_kind(added.id, "payment.expired").await, 0);
    let stored = kit.payment(added.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Created);
    assert!(stored.payment.cancel_in_flight().is_some());
}

#[tokio::test]
async fn a_payment_of_another_merchant_is_not_found() {
    let (kit, m, wallet) = kit("pay-not-found", ChannelOutcome::Approved).await;
    let other = kit.merchant("300200", MerchantZone::utc()).await;
    let added = kit.app.add(&m, add_request("order-1", usd(1_250))).await;
    let added = added.unwrap().value;
    let paid = kit.app.pay(&other, &key(&added), pay_request()).await;
    assert!(matches!(paid, Err(LifecycleError::NotFound)));
    let queried = kit.app.query(&other, &key(&added)).await;
    assert!(matches!(queried, Err(LifecycleError::NotFound)));
    let by_reference = PaymentKey::Reference("order-1".into());
    let queried = kit.app.query(&other, &by_reference).await;
    assert!(matches!(queried, Err(LifecycleError::NotFound)));
    assert!(wallet.asked().is_empty());
    assert_eq!(
        kit.payment(added.id).await.payment.state(),
        PaymentState::Created
    );
}

#[tokio::test]
async fn a_query_shows_the_payment_as_stored_with_its_refunds_oldest_first() {
    let (kit, m, _) = kit("pay-query", ChannelOutcome::Approved).await;
    let p = kit.added_and_paid(&m, "order-1", usd(10_000)).await;
    let k = key(&p);
    let refund = |minor| kit.app.refund(&m, &k, refund_request(usd(minor), None));
    let first = refund(1_000).await.unwrap().value.1;
    let second = refund(2_000).await.unwrap().value.1;
    let by_reference = PaymentKey::Reference("order-1".into());
    let q = kit.app.query(&m, &by_reference).await.unwrap();
    assert_eq!(q.payment.transaction_no, p.transaction_no);
    assert_eq!(q.payment.payment.state(), PaymentState::PartiallyRefunded);
    assert_eq!(q.payment.payment.refunded(), usd(3_000));
    let refunds: Vec<_> = q.refunds.iter().map(|r| r.refund_no.as_str()).collect();
    assert_eq!(
        refunds,
        [first.refund_no.as_str(), second.refund_no.as_str()]
    );
}

#[tokio::test]
async fn a_merchant_with_a_wallet_of_its_own_pays_through_it() {
    let default = Arc::new(ScriptedWallet::new(ChannelOutcome::Approved));
    let own = Arc::new(ScriptedWallet::new(ChannelOutcome::Declined));
    let kit = Kit::builder("pay-own-wallet")
        .channel(default.clone())
        .merchant_channel("300300", own.clone())
        .build()
        .await;
    let m = kit.merchant("300300", MerchantZone::utc()).await;
    let others = kit.merchant("300100", MerchantZone::utc()).await;
    let mine = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let theirs = kit.added_and_paid(&others, "order-1", usd(1_000)).await;
    assert_eq!(mine.payment.state(), PaymentState::Failed);
    assert_eq!(theirs.payment.state(), PaymentState::Paid);
    assert_eq!((own.asked().len(), default.asked().len()), (1, 1));
}
