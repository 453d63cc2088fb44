//! Every answer about money in flight (`service/settle.rs`), on a real SQLite store with a
//! wallet whose answers each test chooses: late callbacks, the janitor's questions, and
//! duplicate or contradicting answers, which settle an operation once and never twice.

use std::sync::Arc;
use tillgate_core::service::{CancelOptions, LifecycleError};
use tillgate_core::{
    ChannelOp, MerchantRecord, PaymentRecord, QueryTarget, Rejection, Unresolved, UnresolvedKind,
};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelState, ChannelOutcome, MerchantZone, PaymentState,
    RefundState,
};
use tillgate_testkit::{key, refund_request, usd, Kit, OpKind, ScriptedWallet};

/// A kit whose wallet answers every operation with "unknown" unless told otherwise, and a
/// merchant in UTC.
async fn kit(name: &str) -> (Kit, MerchantRecord, Arc<ScriptedWallet>) {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Unknown));
    let kit = Kit::builder(name).channel(wallet.clone()).build().await;
    let merchant = kit.merchant("300100", MerchantZone::utc()).await;
    (kit, merchant, wallet)
}

/// The janitor's question about an operation of `p`, asked now.
fn waiting(kit: &Kit, p: &PaymentRecord, kind: UnresolvedKind) -> Unresolved {
    Unresolved {
        payment_id: p.id,
        transaction_no: p.transaction_no.clone(),
        merchant_no: p.merchant_no.clone(),
        kind,
        since: kit.app.now(),
        unanswered_queries: 0,
    }
}

fn queries(wallet: &ScriptedWallet) -> Vec<(String, QueryTarget)> {
    wallet
        .asked()
        .into_iter()
        .filter_map(|op| match op {
            ChannelOp::Query {
                transaction_no,
                operation,
                ..
            } => Some((transaction_no, operation)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_janitor_settles_a_pending_payment_with_what_the_wallet_knows() {
    let (kit, m, wallet) = kit("settle-janitor-payment").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_234)).await;
    assert_eq!(p.payment.state(), PaymentState::Pending);
    kit.clock.advance(chrono::Duration::minutes(5));
    let ops = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    assert_eq!(ops.len(), 1);
    wallet.answer_to(OpKind::Query, ChannelOutcome::Approved);
    assert!(kit.app.resolve(&ops[0]).await.unwrap());
    assert_eq!(
        queries(&wallet),
        [(p.transaction_no.clone(), QueryTarget::Payment)]
    );
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Paid);
    assert_eq!(now.payment.paid_at(), Some(kit.app.now()));
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 1);
    assert!(kit
        .app
        .unresolved(kit.app.now(), 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn while_the_wallet_still_does_not_know_the_janitor_changes_nothing() {
    let (kit, m, _) = kit("settle-janitor-unknown").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_234)).await;
    let events = kit.events(p.id).await.len();
    kit.clock.advance(chrono::Duration::minutes(5));
    let ops = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    assert!(!kit.app.resolve(&ops[0]).await.unwrap());
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Pending);
    assert_eq!(now.version, p.version);
    assert_eq!(kit.events(p.id).await.len(), events);
    assert_eq!(kit.app.unresolved(kit.app.now(), 100).await.unwrap(), ops);
}

#[tokio::test]
async fn only_operations_waiting_since_before_the_cut_off_are_listed_for_the_janitor() {
    let (kit, m, _) = kit("settle-janitor-cut-off").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_234)).await;
    let since = p.updated_at;
    let early = since - chrono::Duration::seconds(1);
    assert!(kit.app.unresolved(early, 100).await.unwrap().is_empty());
    let late = since + chrono::Duration::seconds(1);
    let listed = kit.app.unresolved(late, 100).await.unwrap();
    assert_eq!(listed, [waiting(&kit, &p, UnresolvedKind::Payment)]);
}

#[tokio::test]
async fn the_janitor_settles_a_refund_the_wallet_declined_and_its_reservation_goes_back() {
    let (kit, m, wallet) = kit("settle-janitor-refund").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(10_000)).await;
    let r = kit.refunded(&m, &p, usd(4_000), None).await;
    assert_eq!(r.state, RefundState::InProgress);
    kit.clock.advance(chrono::Duration::minutes(5));
    let ops = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    let refund_no = r.refund_no.clone();
    assert_eq!(
        ops,
        [Unresolved {
            since: ops[0].since,
            ..waiting(&kit, &p, UnresolvedKind::Refund { refund_no })
        }]
    );
    wallet.answer_to(OpKind::Query, ChannelOutcome::Declined);
    assert!(kit.app.resolve(&ops[0]).await.unwrap());
    let refund_no = r.refund_no.clone();
    assert_eq!(
        queries(&wallet),
        [(p.transaction_no.clone(), QueryTarget::Refund { refund_no })]
    );
    assert_eq!(
        kit.refund(&p, &r.refund_no).await.state,
        RefundState::Failed
    );
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.reserved(), usd(0));
    assert_eq!(now.payment.refundable(), usd(10_000));
    assert_eq!(kit.notifications_of(p.id, "refund.failed").await, 1);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn the_janitor_settles_a_cancel_the_wallet_carried_out() {
    let (kit, m, wallet) = kit("settle-janitor-cancel").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(10_000)).await;
    let rule = BusinessDayRule::calendar_day(m.zone);
    let options = CancelOptions {
        notify_url: Some("http://127.0.0.1:9/cancels".into()),
        ..CancelOptions::default()
    };
    let intent = CancelIntent::Cancel;
    let cancelled = kit.app.cancel(&m, &key(&p), rule, intent, options).await;
    let c = cancelled.unwrap().value.1;
    assert_eq!(c.state, CancelState::InProgress);
    kit.clock.advance(chrono::Duration::minutes(5));
    let ops = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    assert_eq!(ops.len(), 1);
    let cancel_no = c.cancel_no.clone();
    assert_eq!(ops[0].kind, UnresolvedKind::Cancel { cancel_no });
    wallet.answer_to(OpKind::Query, ChannelOutcome::Approved);
    assert!(kit.app.resolve(&ops[0]).await.unwrap());
    let (now, c) = kit.app.cancel_by_no(&m, &c.cancel_no).await.unwrap();
    assert_eq!(c.state, CancelState::Succeeded);
    assert_eq!(now.payment.state(), PaymentState::Cancelled);
    assert_eq!(kit.notifications_of(p.id, "cancel.succeeded").await, 1);
    // The wallet's own callback, late, is a replay.
    let late = kit
        .app
        .wallet_settles_cancel(&c.cancel_no, ChannelOutcome::Declined)
        .await;
    assert!(matches!(
        late,
        Err(LifecycleError::Rejected(Rejection::Replay))
    ));
    assert_eq!(kit.events_of_kind(p.id, "cancel.succeeded").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "cancel.failed").await, 0);
}

#[tokio::test]
async fn the_janitor_asks_the_wallet_of_the_payment_s_merchant() {
    let default = Arc::new(ScriptedWallet::new(ChannelOutcome::Unknown));
    let own = Arc::new(ScriptedWallet::new(ChannelOutcome::Unknown));
    let kit = Kit::builder("settle-janitor-own-wallet")
        .channel(default.clone())
        .merchant_channel("300300", own.clone())
        .build()
        .await;
    let m = kit.merchant("300300", MerchantZone::utc()).await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    own.answer_to(OpKind::Query, ChannelOutcome::Approved);
    default.answer_to(OpKind::Query, ChannelOutcome::Declined);
    kit.clock.advance(chrono::Duration::minutes(5));
    let ops = kit.app.unresolved(kit.app.now(), 100).await.unwrap();
    assert!(kit.app.resolve(&ops[0]).await.unwrap());
    assert_eq!(kit.payment(p.id).await.payment.state(), PaymentState::Paid);
    assert_eq!(queries(&own).len(), 1);
    assert!(default.asked().is_empty(), "{:?}", default.asked());
}

#[tokio::test]
async fn an_unknown_late_answer_leaves_the_refund_in_progress_and_its_amount_reserved() {
    let (kit, m, wallet) = kit("settle-late-unknown").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(10_000)).await;
    let r = kit.refunded(&m, &p, usd(4_000), None).await;
    let (after, still) = kit
        .app
        .wallet_settles_refund(&p.transaction_no, &r.refund_no, ChannelOutcome::Unknown)
        .await
        .unwrap();
    assert_eq!(still.state, RefundState::InProgress);
    assert_eq!(after.payment.reserved(), usd(4_000));
    assert_eq!(kit.payment(p.id).await.version, after.version);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test]
async fn a_callback_names_its_operation_by_numbers_the_gateway_gave_or_is_not_found() {
    let (kit, m, wallet) = kit("settle-callback-not-found").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    let a = kit.added_and_paid(&m, "order-1", usd(10_000)).await;
    let b = kit.added_and_paid(&m, "order-2", usd(10_000)).await;
    let r = kit.refunded(&m, &b, usd(1_000), None).await;
    // A refund of B under A's transaction number.
    let crossed = kit
        .app
        .wallet_settles_refund(&a.transaction_no, &r.refund_no, ChannelOutcome::Approved)
        .await;
    assert!(
        matches!(crossed, Err(LifecycleError::NotFound)),
        "{crossed:?}"
    );
    assert_eq!(
        kit.refund(&b, &r.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(kit.payment(a.id).await.payment.refunded(), usd(0));
    let unknown = kit
        .app
        .wallet_settles_payment("999999999999999999", ChannelOutcome::Approved)
        .await;
    assert!(matches!(unknown, Err(LifecycleError::NotFound)));
    let unknown = kit
        .app
        .wallet_settles_cancel("999999999999999999", ChannelOutcome::Approved)
        .await;
    assert!(matches!(unknown, Err(LifecycleError::NotFound)));
}

/// A kit whose wallet approves payments, leaves refunds unknown and answers the janitor's
/// questions with an approval, and a payment of `minor` paid.
async fn paid_with_refunds_unknown(
    name: &str,
    minor: i64,
) -> (Kit, MerchantRecord, Arc<ScriptedWallet>, PaymentRecord) {
    let (kit, m, wallet) = kit(name).await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    wallet.answer_to(OpKind::Refund, ChannelOutcome::Unknown);
    wallet.answer_to(OpKind::Query, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(minor)).await;
    (kit, m, wallet, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_answered_by_callbacks_and_the_janitor_at_once_settles_exactly_once() {
    let (kit, m, _, p) = paid_with_refunds_unknown("settle-refund-race", 10_000).await;
    // Two refunds of the same size wait for the wallet: the second one's reservation would
    // cover a second settlement of the first, so only the guard can refuse it.
    let a = kit.refunded(&m, &p, usd(3_000), Some("ra")).await;
    let b = kit.refunded(&m, &p, usd(3_000), Some("rb")).await;
    assert_eq!(a.state, RefundState::InProgress);
    assert_eq!(b.state, RefundState::InProgress);

    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = kit.app.clone();
        let (tx, no) = (p.transaction_no.clone(), a.refund_no.clone());
        let refund_no = a.refund_no.clone();
        let op = waiting(&kit, &p, UnresolvedKind::Refund { refund_no });
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                app.wallet_settles_refund(&tx, &no, ChannelOutcome::Approved)
                    .await
                    .map(drop)
            } else {
                app.resolve(&op).await.map(drop)
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    let now = kit.payment(p.id).await;
    assert_eq!(
        kit.refund(&p, &a.refund_no).await.state,
        RefundState::Succeeded
    );
    assert_eq!(
        kit.refund(&p, &b.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(now.payment.refunded(), usd(3_000), "settled once");
    assert_eq!(
        now.payment.reserved(),
        usd(3_000),
        "the other refund keeps its reservation"
    );
    assert_eq!(kit.events_of_kind(p.id, "refund.succeeded").await, 1);
    assert_eq!(kit.notifications_of(p.id, "refund.succeeded").await, 1);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_s_answer_arriving_after_a_callback_settled_the_refund_changes_nothing() {
    let (kit, m, wallet, p) = paid_with_refunds_unknown("settle-refund-held-query", 10_000).await;
    wallet.hold(OpKind::Query);
    let a = kit.refunded(&m, &p, usd(2_500), None).await;
    let b = kit.refunded(&m, &p, usd(2_500), None).await;

    // The janitor asks about refund A; its question is inside the wallet...
    let janitor = {
        let refund_no = a.refund_no.clone();
        let op = waiting(&kit, &p, UnresolvedKind::Refund { refund_no });
        let app = kit.app.clone();
        tokio::spawn(async move { app.resolve(&op).await })
    };
    wallet.reached().await;
    // ...while the wallet's callback settles A.
    kit.app
        .wallet_settles_refund(&p.transaction_no, &a.refund_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    // Now the janitor's answer comes back and is applied to a payment that still has 25.00
    // reserved (refund B's): only the guard tells it that A is settled already.
    wallet.let_one_answer();
    assert!(janitor.await.unwrap().unwrap());

    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.refunded(), usd(2_500));
    assert_eq!(now.payment.reserved(), usd(2_500));
    assert_eq!(
        kit.refund(&p, &b.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(kit.events_of_kind(p.id, "refund.succeeded").await, 1);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_approval_then_a_contradicting_decline_leave_the_refund_succeeded() {
    let (kit, m, _, p) = paid_with_refunds_unknown("settle-refund-late", 5_000).await;
    let (_, r) = kit
        .app
        .refund(&m, &key(&p), refund_request(usd(5_000), Some("late-r")))
        .await
        .unwrap()
        .value;
    assert_eq!(r.state, RefundState::InProgress);
    // The merchant's retry while the wallet has not answered is refused as retryable.
    assert!(matches!(
        kit.app
            .refund(&m, &key(&p), refund_request(usd(5_000), Some("late-r")))
            .await,
        Err(LifecycleError::InProgress)
    ));

    let (_, settled) = kit
        .app
        .wallet_settles_refund(&p.transaction_no, &r.refund_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    assert_eq!(settled.state, RefundState::Succeeded);
    let (after, again) = kit
        .app
        .wallet_settles_refund(&p.transaction_no, &r.refund_no, ChannelOutcome::Declined)
        .await
        .unwrap();
    assert_eq!(again.state, RefundState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::Refunded);
    assert_eq!(after.payment.refunded(), usd(5_000));
    assert_eq!(after.payment.reserved(), usd(0));
    assert_eq!(kit.events_of_kind(p.id, "refund.succeeded").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "refund.failed").await, 0);
    assert_eq!(kit.notifications_of(p.id, "refund.succeeded").await, 1);
    assert_eq!(kit.notifications_of(p.id, "refund.failed").await, 0);
    // The retry now replays the succeeded refund.
    let replay = kit
        .app
        .refund(&m, &key(&p), refund_request(usd(5_000), Some("late-r")))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.value.1.state, RefundState::Succeeded);
    kit.assert_totals_agree_with_refund_rows(p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_answers_for_a_pending_payment_settle_it_once() {
    let (kit, m, wallet) = kit("settle-payment-duplicates").await;
    wallet.answer_to(OpKind::Query, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(1_234)).await;
    assert_eq!(p.payment.state(), PaymentState::Pending);
    let op = waiting(&kit, &p, UnresolvedKind::Payment);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (app, tx, op) = (kit.app.clone(), p.transaction_no.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            if i % 4 == 3 {
                app.resolve(&op).await.map(drop)
            } else {
                match app
                    .wallet_settles_payment(&tx, ChannelOutcome::Approved)
                    .await
                {
                    Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // A late decline after the approval changes nothing.
    assert!(matches!(
        kit.app
            .wallet_settles_payment(&p.transaction_no, ChannelOutcome::Declined)
            .await,
        Err(LifecycleError::Rejected(Rejection::Replay))
    ));
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Paid);
    assert_eq!(kit.events_of_kind(p.id, "payment.paid").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "payment.declined").await, 0);
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_for_an_earlier_cancel_does_not_settle_the_cancel_now_in_flight() {
    let (kit, m, wallet) = kit("settle-cancel-late").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Approved);
    // The first reversal is declined, the second one's answer is lost.
    wallet.answers_to(
        OpKind::Cancel,
        &[ChannelOutcome::Declined, ChannelOutcome::Unknown],
    );
    wallet.answer_to(OpKind::Query, ChannelOutcome::Approved);
    let p = kit.added_and_paid(&m, "order-1", usd(4_200)).await;
    let first = kit.cancelled(&m, &p).await;
    assert_eq!(first.state, CancelState::Failed);
    let second = kit.cancelled(&m, &p).await;
    assert_eq!(second.state, CancelState::InProgress);

    // A duplicate, contradicting answer for the first cancel arrives: it must not reverse the
    // payment on the strength of the second cancel being in flight.
    match kit
        .app
        .wallet_settles_cancel(&first.cancel_no, ChannelOutcome::Approved)
        .await
    {
        Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => {}
        Err(e) => panic!("unexpected answer: {e:?}"),
    }
    let now = kit.payment(p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Paid);
    assert!(now.payment.cancel_in_flight().is_some());

    // The janitor and the wallet's callback answer the second one at once: settled once.
    let cancel_no = second.cancel_no.clone();
    let op = waiting(&kit, &p, UnresolvedKind::Cancel { cancel_no });
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (app, op, no) = (kit.app.clone(), op.clone(), second.cancel_no.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                app.resolve(&op).await.map(drop)
            } else {
                match app
                    .wallet_settles_cancel(&no, ChannelOutcome::Approved)
                    .await
                {
                    Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let end = kit.payment(p.id).await;
    assert_eq!(end.payment.state(), PaymentState::Cancelled);
    assert!(end.payment.cancel_in_flight().is_none());
    assert_eq!(kit.events_of_kind(p.id, "cancel.succeeded").await, 1);
    let cancels = kit.cancels(p.id).await;
    assert_eq!(cancels[0].state, CancelState::Failed);
    assert_eq!(cancels[1].state, CancelState::Succeeded);
}
