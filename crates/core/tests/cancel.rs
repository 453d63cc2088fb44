//! Cancels (`service/cancel.rs`), on a real SQLite store with a wallet whose answers each test
//! chooses and, for cancels shown on a POS terminal, a scripted hub: the void or close of an
//! unpaid payment, the same-day reversal of a paid one in the merchant's zone, and a retry
//! answered with the earlier cancel.

use chrono::Duration;
use std::sync::Arc;
use tillgate_core::service::{CancelOptions, LifecycleError, Outcome};
use tillgate_core::terminal::CommandKind;
use tillgate_core::{CancelRecord, ChannelOp, MerchantRecord, PaymentRecord, Rejection};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelKind, CancelRejected, CancelState, ChannelOutcome,
    MerchantZone, PaymentState,
};
use tillgate_testkit::{add_request, key, refund_request, usd, Kit, Mode, OpKind, ScriptedWallet};

const TID: &str = "T-CANCEL-1";

/// A kit whose wallet approves everything unless told otherwise (with a scripted hub and one
/// terminal), and a merchant in UTC.
async fn kit(name: &str) -> (Kit, MerchantRecord, Arc<ScriptedWallet>) {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Approved));
    let kit = Kit::builder(name)
        .channel(wallet.clone())
        .with_hub()
        .build()
        .await;
    let merchant = kit.merchant("300100", MerchantZone::utc()).await;
    kit.terminal_of(&merchant, TID, "terminal-secret-0123456789")
        .await;
    (kit, merchant, wallet)
}

type Cancelled = Result<Outcome<(PaymentRecord, CancelRecord)>, LifecycleError>;

/// Cancels `p` silently, within the calendar day of the merchant's zone.
async fn cancel(
    kit: &Kit,
    m: &MerchantRecord,
    p: &PaymentRecord,
    intent: CancelIntent,
) -> Cancelled {
    let rule = BusinessDayRule::calendar_day(m.zone);
    let options = CancelOptions {
        notify_url: Some("http://127.0.0.1:9/cancels".into()),
        ..CancelOptions::default()
    };
    kit.app.cancel(m, &key(p), rule, intent, options).await
}

/// Cancels `p` on the POS terminal, waiting a moment for its result.
async fn cancel_on_terminal(kit: &Kit, m: &MerchantRecord, p: &PaymentRecord) -> Cancelled {
    let rule = BusinessDayRule::calendar_day(m.zone);
    let options = CancelOptions {
        terminal: Some(TID.into()),
        terminal_wait: std::time::Duration::from_millis(10),
        ..CancelOptions::default()
    };
    let intent = CancelIntent::Cancel;
    kit.app.cancel(m, &key(p), rule, intent, options).await
}

fn refused(r: Cancelled) -> CancelRejected {
    match r {
        Err(LifecycleError::Rejected(Rejection::Cancel(why))) => why,
        other => panic!("expected a refused cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn a_paid_payment_is_reversed_in_full_on_its_business_day_and_the_merchant_is_notified() {
    let (kit, m, wallet) = kit("cancel-reverse").await;
    let p = kit.added_and_paid(&m, "order-1", usd(4_200)).await;
    kit.clock.advance(Duration::hours(3));
    let done = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    assert!(!done.replayed);
    let (after, c) = done.value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Reverse, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    assert!(after.payment.was_reversed());
    assert!(after.payment.cancel_in_flight().is_none());
    let reversals: Vec<_> = wallet
        .asked()
        .into_iter()
        .filter_map(|op| match op {
            ChannelOp::Reverse {
                transaction_no,
                amount,
                ..
            } => Some((transaction_no, amount)),
            _ => None,
        })
        .collect();
    assert_eq!(reversals, [(p.transaction_no.clone(), usd(4_200))]);
    let notified = kit.notifications(p.id).await;
    let cancels: Vec<_> = notified
        .iter()
        .filter(|n| n.topic.as_str() == "cancel.succeeded")
        .map(|n| n.target_url.as_str())
        .collect();
    assert_eq!(cancels, ["http://127.0.0.1:9/cancels"]);
}

/// The start is 10:00 UTC, 19:00 in Tokyo: Tokyo's day ends five hours later, UTC's does not.
#[tokio::test]
async fn the_same_day_ends_at_midnight_in_the_merchant_s_zone() {
    let (kit, utc, _) = kit("cancel-midnight").await;
    let tokyo = kit
        .merchant("300900", MerchantZone::parse("Asia/Tokyo").unwrap())
        .await;
    let before_midnight = kit.added_and_paid(&tokyo, "order-1", usd(1_000)).await;
    let after_midnight = kit.added_and_paid(&tokyo, "order-2", usd(1_000)).await;
    let in_utc = kit.added_and_paid(&utc, "order-3", usd(1_000)).await;

    kit.clock.advance(Duration::hours(5) - Duration::seconds(1));
    let (after, _) = cancel(&kit, &tokyo, &before_midnight, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    assert_eq!(after.payment.state(), PaymentState::Cancelled);

    kit.clock.advance(Duration::seconds(1));
    let late = cancel(&kit, &tokyo, &after_midnight, CancelIntent::Cancel).await;
    assert_eq!(refused(late), CancelRejected::OutsideSameDayWindow);
    let stored = kit.payment(after_midnight.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Paid);
    assert!(kit.cancels(after_midnight.id).await.is_empty());
    // At the same moment it is still 15:00 in UTC.
    let (after, _) = cancel(&kit, &utc, &in_utc, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
}

#[tokio::test]
async fn a_cancel_of_an_unpaid_payment_voids_it_and_a_close_closes_it() {
    let (kit, m, wallet) = kit("cancel-unpaid").await;
    let added = |r| kit.app.add(&m, add_request(r, usd(1_000)));
    let voided = added("order-1").await.unwrap().value;
    let closed = added("order-2").await.unwrap().value;
    let (after, c) = cancel(&kit, &m, &voided, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Void, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    assert!(!after.payment.was_reversed());
    let (after, c) = cancel(&kit, &m, &closed, CancelIntent::Close)
        .await
        .unwrap()
        .value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Close, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Closed);
    // The wallet is told to abandon both; a closed payment is never paid.
    let abandoned = wallet
        .asked()
        .iter()
        .filter(|op| matches!(op, ChannelOp::Close { .. }))
        .count();
    assert_eq!(abandoned, 2);
    let pay = kit
        .app
        .pay(&m, &key(&closed), tillgate_testkit::pay_request())
        .await;
    assert!(matches!(pay, Err(LifecycleError::Rejected(_))), "{pay:?}");
    // Closing is only for unpaid payments.
    let paid = kit.added_and_paid(&m, "order-3", usd(1_000)).await;
    let close = cancel(&kit, &m, &paid, CancelIntent::Close).await;
    assert_eq!(refused(close), CancelRejected::AlreadyPaid);
}

#[tokio::test]
async fn a_cancel_of_a_payment_still_waiting_for_the_wallet_voids_it() {
    let (kit, m, wallet) = kit("cancel-pending").await;
    wallet.answer_to(OpKind::Pay, ChannelOutcome::Unknown);
    let pending = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    assert_eq!(pending.payment.state(), PaymentState::Pending);
    let (after, c) = cancel(&kit, &m, &pending, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Void, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    // The wallet's late word on the payment changes nothing now.
    let late = kit
        .app
        .wallet_settles_payment(&pending.transaction_no, ChannelOutcome::Approved)
        .await;
    assert!(matches!(
        late,
        Err(LifecycleError::Rejected(Rejection::Replay))
    ));
    let stored = kit.payment(pending.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Cancelled);
    assert_eq!(kit.notifications_of(pending.id, "payment.paid").await, 0);
}

#[tokio::test]
async fn asking_again_for_a_cancel_that_succeeded_answers_with_that_cancel() {
    let (kit, m, wallet) = kit("cancel-retry-done").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let first = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    kit.clock.advance(Duration::minutes(1));
    let again = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.1.cancel_no, first.value.1.cancel_no);
    assert_eq!(again.value.1.state, CancelState::Succeeded);
    assert_eq!(again.value.0.payment.state(), PaymentState::Cancelled);
    assert_eq!(wallet.asked_to(OpKind::Cancel), 1);
    assert_eq!(kit.cancels(p.id).await.len(), 1);
    assert_eq!(kit.notifications_of(p.id, "cancel.succeeded").await, 1);
}

#[tokio::test]
async fn asking_again_while_the_cancel_waits_for_the_wallet_answers_with_the_cancel_in_progress() {
    let (kit, m, wallet) = kit("cancel-retry-waiting").await;
    wallet.answer_to(OpKind::Cancel, ChannelOutcome::Unknown);
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let first = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    assert_eq!(first.value.1.state, CancelState::InProgress);
    let stored = kit.payment(p.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Paid);
    assert_eq!(stored.payment.cancel_in_flight(), Some(CancelKind::Reverse));
    let again = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.1.cancel_no, first.value.1.cancel_no);
    assert_eq!(again.value.1.state, CancelState::InProgress);
    assert_eq!(wallet.asked_to(OpKind::Cancel), 1);
    assert_eq!(kit.cancels(p.id).await.len(), 1);
}

#[tokio::test]
async fn a_declined_cancel_leaves_the_payment_as_it_was_and_may_be_asked_again() {
    let (kit, m, wallet) = kit("cancel-declined").await;
    wallet.answers_to(
        OpKind::Cancel,
        &[ChannelOutcome::Declined, ChannelOutcome::Approved],
    );
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let (after, first) = cancel(&kit, &m, &p, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    assert_eq!(first.state, CancelState::Failed);
    assert_eq!(after.payment.state(), PaymentState::Paid);
    assert!(after.payment.cancel_in_flight().is_none());
    assert_eq!(kit.notifications_of(p.id, "cancel.succeeded").await, 0);
    let again = cancel(&kit, &m, &p, CancelIntent::Cancel).await.unwrap();
    assert!(!again.replayed);
    assert_ne!(again.value.1.cancel_no, first.cancel_no);
    assert_eq!(again.value.1.state, CancelState::Succeeded);
    let states: Vec<_> = kit.cancels(p.id).await.iter().map(|c| c.state).collect();
    assert_eq!(states, [CancelState::Failed, CancelState::Succeeded]);
}

#[tokio::test]
async fn a_payment_refunded_in_part_or_with_a_refund_in_flight_is_not_reversed() {
    let (kit, m, wallet) = kit("cancel-after-refund").await;
    let refunded = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    kit.app
        .refund(&m, &key(&refunded), refund_request(usd(100), None))
        .await
        .unwrap();
    let after_refund = cancel(&kit, &m, &refunded, CancelIntent::Cancel).await;
    assert_eq!(refused(after_refund), CancelRejected::AfterRefund);
    wallet.answer_to(OpKind::Refund, ChannelOutcome::Unknown);
    let in_flight = kit.added_and_paid(&m, "order-2", usd(1_000)).await;
    kit.app
        .refund(&m, &key(&in_flight), refund_request(usd(100), None))
        .await
        .unwrap();
    let during_refund = cancel(&kit, &m, &in_flight, CancelIntent::Cancel).await;
    assert_eq!(refused(during_refund), CancelRejected::RefundInProgress);
    assert_eq!(wallet.asked_to(OpKind::Cancel), 0);
    assert!(kit.cancels(refunded.id).await.is_empty());
    assert!(kit.cancels(in_flight.id).await.is_empty());
}

#[tokio::test]
async fn a_cancel_is_found_by_its_number_for_its_own_merchant_only() {
    let (kit, m, _) = kit("cancel-by-no").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let (_, c) = cancel(&kit, &m, &p, CancelIntent::Cancel)
        .await
        .unwrap()
        .value;
    let (payment, found) = kit.app.cancel_by_no(&m, &c.cancel_no).await.unwrap();
    assert_eq!((payment.id, found.id), (p.id, c.id));
    let other = kit.merchant("300200", MerchantZone::utc()).await;
    let theirs = kit.app.cancel_by_no(&other, &c.cancel_no).await;
    assert!(matches!(theirs, Err(LifecycleError::NotFound)));
    // Nor can another merchant cancel the payment.
    let rule = BusinessDayRule::calendar_day(other.zone);
    let by_other = kit
        .app
        .cancel(
            &other,
            &key(&p),
            rule,
            CancelIntent::Cancel,
            CancelOptions::default(),
        )
        .await;
    assert!(matches!(by_other, Err(LifecycleError::NotFound)));
}

#[tokio::test]
async fn a_reversal_on_the_terminal_is_carried_out_there_and_not_by_the_wallet() {
    let (kit, m, wallet) = kit("cancel-terminal").await;
    let p = kit.added_and_paid(&m, "order-1", usd(4_200)).await;
    let (after, c) = cancel_on_terminal(&kit, &m, &p).await.unwrap().value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Reverse, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    assert_eq!(wallet.asked_to(OpKind::Cancel), 0);
    let (tid, command) = kit.hub().last().unwrap();
    assert_eq!(tid, TID);
    assert_eq!(command.kind, CommandKind::Reversal);
    assert_eq!(command.transaction_no, p.transaction_no);
    assert_eq!(
        (command.amount_minor, command.currency.as_str()),
        (4_200, "USD")
    );
    assert!(kit.open_commands(TID).await.is_empty());
    // An unpaid payment is cancelled on the terminal with a cancel command.
    let added = kit.app.add(&m, add_request("order-2", usd(100))).await;
    let added = added.unwrap().value;
    let (after, c) = cancel_on_terminal(&kit, &m, &added).await.unwrap().value;
    assert_eq!(
        (c.kind, c.state),
        (CancelKind::Void, CancelState::Succeeded)
    );
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    assert_eq!(kit.hub().last().unwrap().1.kind, CommandKind::Cancel);
}

#[tokio::test]
async fn a_cancel_on_a_terminal_that_is_offline_is_refused_before_anything_is_written() {
    let (kit, m, wallet) = kit("cancel-terminal-offline").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    kit.hub().set(TID, Mode::Offline);
    let offline = cancel_on_terminal(&kit, &m, &p).await;
    assert!(
        matches!(offline, Err(LifecycleError::TerminalOffline)),
        "{offline:?}"
    );
    let stored = kit.payment(p.id).await;
    assert_eq!(stored.payment, p.payment);
    assert!(kit.cancels(p.id).await.is_empty());
    assert_eq!(kit.hub().count(), 0);
    assert_eq!(wallet.asked_to(OpKind::Cancel), 0);
}

#[tokio::test]
async fn a_reversal_the_terminal_has_not_answered_stays_in_progress_and_is_left_to_it_until_its_result_comes(
) {
    let (kit, m, _) = kit("cancel-terminal-silent").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    kit.hub().set(TID, Mode::Silent);
    let (after, c) = cancel_on_terminal(&kit, &m, &p).await.unwrap().value;
    assert_eq!(c.state, CancelState::InProgress);
    assert_eq!(after.payment.state(), PaymentState::Paid);
    let open = kit.open_commands(TID).await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].cancel_id, Some(c.id));
    // It is the terminal's to answer: the janitor does not ask the wallet about it.
    let later = kit.app.now() + Duration::hours(1);
    assert!(kit.app.unresolved(later, 100).await.unwrap().is_empty());
    // The terminal's result, when it comes, settles the cancel and closes its command.
    let result = tillgate_core::terminal::TerminalResult {
        outcome: ChannelOutcome::Approved,
        message: Some("reversed".into()),
    };
    kit.hub().report(&open[0].command.id, result).await.unwrap();
    let (after, c) = kit.app.cancel_by_no(&m, &c.cancel_no).await.unwrap();
    assert_eq!(c.state, CancelState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::Cancelled);
    assert!(kit.open_commands(TID).await.is_empty());
}

#[tokio::test]
async fn a_reversal_declined_on_the_terminal_fails_and_the_payment_stays_paid() {
    let (kit, m, _) = kit("cancel-terminal-declined").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    kit.hub().set(TID, Mode::Decline);
    let (after, c) = cancel_on_terminal(&kit, &m, &p).await.unwrap().value;
    assert_eq!(c.state, CancelState::Failed);
    assert_eq!(after.payment.state(), PaymentState::Paid);
    assert!(after.payment.cancel_in_flight().is_none());
    assert!(kit.open_commands(TID).await.is_empty());
}

/// A retry of a cancel is answered with the earlier cancel (its key is the transaction); that
/// answer needs nothing of the terminal, so it does not depend on the terminal being online.
#[tokio::test]
async fn asking_again_for_a_reversal_done_on_the_terminal_answers_with_it_while_the_terminal_is_offline(
) {
    let (kit, m, _) = kit("cancel-terminal-retry-offline").await;
    let p = kit.added_and_paid(&m, "order-1", usd(1_000)).await;
    let (_, done) = cancel_on_terminal(&kit, &m, &p).await.unwrap().value;
    assert_eq!(done.state, CancelState::Succeeded);
    kit.hub().set(TID, Mode::Offline);
    let again = cancel_on_terminal(&kit, &m, &p).await;
    let again = again.unwrap_or_else(|e| panic!("the retry was answered {e:?}"));
    assert!(again.replayed);
    assert_eq!(again.value.1.cancel_no, done.cancel_no);
    assert_eq!(again.value.1.state, CancelState::Succeeded);
    assert_eq!(kit.hub().count(), 1);
    // A cancel that is not a retry still needs the terminal.
    let other = kit.added_and_paid(&m, "order-2", usd(1_000)).await;
    let offline = cancel_on_terminal(&kit, &m, &other).await;
    assert!(matches!(offline, Err(LifecycleError::TerminalOffline)));
    assert!(kit.cancels(other.id).await.is_empty());
}

/// Found by the simulation: a wallet's late (or repeated) answer to a cancel that failed,
/// arriving while the merchant's next cancel of the same transaction waited for the wallet,
/// was taken for the next one's answer, because the wallet was never told which cancel it was
/// answering. The wallet is now told the cancel's number, so its callback can name it.
#[tokio::test]
async fn the_wallet_is_told_which_cancel_it_carries_out() {
    let (kit, m, wallet) = kit("cancel-number").await;
    let p = kit.added_and_paid(&m, "order-1", usd(4_200)).await;
    wallet.answer_to(OpKind::Cancel, ChannelOutcome::Declined);
    let first = cancel(&kit, &m, &p, CancelIntent::Cancel)
        .await
        .unwrap()
        .value
        .1;
    assert_eq!(first.state, CancelState::Failed);
    wallet.answer_to(OpKind::Cancel, ChannelOutcome::Unknown);
    let second = cancel(&kit, &m, &p, CancelIntent::Cancel)
        .await
        .unwrap()
        .value
        .1;
    assert_eq!(second.state, CancelState::InProgress);
    let told: Vec<String> = wallet
        .asked()
        .into_iter()
        .filter_map(|op| match op {
            ChannelOp::Reverse { cancel_no, .. } => Some(cancel_no),
            _ => None,
        })
        .collect();
    assert_eq!(told, [first.cancel_no, second.cancel_no.clone()]);
    // The first cancel's answer again changes nothing of the second.
    let again = kit
        .app
        .wallet_settles_cancel(&told[0], ChannelOutcome::Declined)
        .await;
    assert!(
        matches!(again, Err(LifecycleError::Rejected(Rejection::Replay))),
        "{again:?}"
    );
    assert_eq!(kit.cancels(p.id).await[1].state, CancelState::InProgress);
}
