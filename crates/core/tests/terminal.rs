//! Sales on a POS terminal and the events its hub reports (`service/terminal.rs`), on a real
//! SQLite store with a scripted hub whose terminals approve, decline, stay silent, are offline
//! or vanish, and a wallet that must never be asked about a sale.

use chrono::Duration;
use std::sync::Arc;
use tillgate_core::service::{AddRequest, LifecycleError, Outcome};
use tillgate_core::terminal::{CommandKind, CommandOutcome, CommandState, TerminalResult};
use tillgate_core::{MerchantRecord, PaymentKey, PaymentRecord, Rejection};
use tillgate_domain::{ChannelOutcome, MerchantZone, PayRejected, PaymentState};
use tillgate_testkit::{add_request, usd, Kit, Mode, ScriptedWallet};

const TID: &str = "T-SALE-1";

/// A kit with a scripted hub, one terminal of a merchant in UTC, and a wallet that approves
/// (so a sale settled by the wallet would show).
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

type Sold = Result<Outcome<PaymentRecord>, LifecycleError>;

/// A sale of `amount` on the terminal, keyed by `reference`, waiting a moment for its result.
async fn sale(kit: &Kit, m: &MerchantRecord, reference: &str, amount: i64) -> Sold {
    sale_of(kit, m, add_request(reference, usd(amount))).await
}

async fn sale_of(kit: &Kit, m: &MerchantRecord, req: AddRequest) -> Sold {
    let wait = std::time::Duration::from_millis(10);
    kit.app.terminal_sale(m, TID, req, wait).await
}

fn result(outcome: ChannelOutcome) -> TerminalResult {
    TerminalResult {
        outcome,
        message: Some("from the terminal".into()),
    }
}

#[tokio::test]
async fn a_sale_the_terminal_approves_is_paid_and_its_command_done() {
    let (kit, m, wallet) = kit("terminal-approved").await;
    let sold = sale(&kit, &m, "pos-1", 1_250).await.unwrap();
    assert!(!sold.replayed);
    let p = sold.value;
    assert_eq!(p.payment.state(), PaymentState::Paid);
    assert_eq!(p.payment.paid_at(), Some(kit.app.now()));
    assert_eq!(p.vendor.as_deref(), Some("terminal"));
    let (tid, command) = kit.hub().last().unwrap();
    assert_eq!(tid, TID);
    assert_eq!(command.kind, CommandKind::Sale);
    assert_eq!(command.transaction_no, p.transaction_no);
    assert_eq!(
        (command.amount_minor, command.currency.as_str()),
        (1_250, "USD")
    );
    let stored = kit.store.command(&command.id).await.unwrap().unwrap();
    assert_eq!(stored.state, CommandState::Done);
    assert_eq!(stored.outcome, Some(CommandOutcome::Approved));
    assert!(kit.open_commands(TID).await.is_empty());
    assert!(wallet.asked().is_empty(), "{:?}", wallet.asked());
    assert_eq!(kit.events_of_kind(p.id, "terminal.sale.sent").await, 1);
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 1);
}

#[tokio::test]
async fn a_sale_the_terminal_declines_fails_and_its_command_is_done() {
    let (kit, m, wallet) = kit("terminal-declined").await;
    kit.hub().set(TID, Mode::Decline);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    assert_eq!(p.payment.state(), PaymentState::Failed);
    let (_, command) = kit.hub().last().unwrap();
    let stored = kit.store.command(&command.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.outcome),
        (CommandState::Done, Some(CommandOutcome::Declined))
    );
    assert!(wallet.asked().is_empty());
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 0);
}

#[tokio::test]
async fn a_sale_the_terminal_has_not_answered_stays_pending_until_its_result_comes() {
    let (kit, m, wallet) = kit("terminal-silent").await;
    kit.hub().set(TID, Mode::Silent);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    assert_eq!(p.payment.state(), PaymentState::Pending);
    let open = kit.open_commands(TID).await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].payment_id, p.id);
    // The customer takes a while; the result is applied when it comes, at its time.
    kit.clock.advance(Duration::seconds(40));
    let id = open[0].command.id.clone();
    kit.hub()
        .report(&id, result(ChannelOutcome::Approved))
        .await
        .unwrap();
    let paid = kit.payment(p.id).await;
    assert_eq!(paid.payment.state(), PaymentState::Paid);
    assert_eq!(paid.payment.paid_at(), Some(kit.app.now()));
    assert!(kit.open_commands(TID).await.is_empty());
    assert!(wallet.asked().is_empty());
}

#[tokio::test]
async fn a_sale_on_a_terminal_that_is_offline_is_refused_and_taken_when_asked_again_once_it_is_back(
) {
    let (kit, m, _) = kit("terminal-offline").await;
    kit.hub().set(TID, Mode::Offline);
    let offline = sale(&kit, &m, "pos-1", 1_250).await;
    assert!(
        matches!(offline, Err(LifecycleError::TerminalOffline)),
        "{offline:?}"
    );
    assert_eq!(kit.hub().count(), 0);
    // The transaction is added, not submitted: nothing is in flight.
    let by_reference = PaymentKey::Reference("pos-1".into());
    let added = kit
        .store
        .payment(m.id, &by_reference)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(added.payment.state(), PaymentState::Created);
    assert!(kit.open_commands(TID).await.is_empty());

    kit.hub().set(TID, Mode::Approve);
    let retried = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    assert_eq!(retried.id, added.id);
    assert_eq!(retried.payment.state(), PaymentState::Paid);
    assert_eq!(kit.hub().count(), 1);
}

#[tokio::test]
async fn a_terminal_gone_before_the_command_reached_it_declines_the_sale() {
    let (kit, m, _) = kit("terminal-vanished").await;
    kit.hub().set(TID, Mode::Vanish);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    assert_eq!(p.payment.state(), PaymentState::Failed);
    // Its command was written with the submission, and is done: nothing waits for it.
    assert!(kit.open_commands(TID).await.is_empty());
    let events = kit.events(p.id).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.ends_with(&["terminal.sale.sent", "payment.declined"]),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_sale_asked_again_with_its_reference_replays_without_a_second_command() {
    let (kit, m, _) = kit("terminal-replay").await;
    let paid = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    let again = sale(&kit, &m, "pos-1", 1_250).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.id, paid.id);
    assert_eq!(again.value.payment.state(), PaymentState::Paid);
    assert_eq!(kit.hub().count(), 1);
    // So does a sale still running on the terminal.
    kit.hub().set(TID, Mode::Silent);
    let pending = sale(&kit, &m, "pos-2", 500).await.unwrap().value;
    let again = sale(&kit, &m, "pos-2", 500).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.id, pending.id);
    assert_eq!(again.value.payment.state(), PaymentState::Pending);
    assert_eq!(kit.hub().count(), 2);
    assert_eq!(kit.open_commands(TID).await.len(), 1);
    // The reference with another amount is refused.
    let other = sale(&kit, &m, "pos-1", 1_251).await;
    assert!(matches!(other, Err(LifecycleError::KeyReused)), "{other:?}");
}

#[tokio::test]
async fn a_sale_without_a_terminal_hub_is_refused_before_anything_is_added() {
    let kit = Kit::builder("terminal-no-hub").build().await;
    let m = kit.merchant("300100", MerchantZone::utc()).await;
    let refused = sale(&kit, &m, "pos-1", 1_250).await;
    assert!(matches!(refused, Err(LifecycleError::TerminalOffline)));
    let by_reference = PaymentKey::Reference("pos-1".into());
    assert!(kit
        .store
        .payment(m.id, &by_reference)
        .await
        .unwrap()
        .is_none());
}

/// An added transaction that waited past its expiry is closed when it is paid (`pay`); a sale
/// retried on the terminal after that time is the same payment and must be closed the same way,
/// not shown to the customer.
#[tokio::test]
async fn a_sale_asked_again_after_its_transaction_expired_is_closed_and_never_reaches_the_terminal()
{
    let (kit, m, _) = kit("terminal-expired").await;
    kit.hub().set(TID, Mode::Offline);
    let req = AddRequest {
        timeout_minutes: Some(10),
        ..add_request("pos-1", usd(1_250))
    };
    let offline = sale_of(&kit, &m, req.clone()).await;
    assert!(matches!(offline, Err(LifecycleError::TerminalOffline)));
    kit.clock.advance(Duration::minutes(11));
    kit.hub().set(TID, Mode::Approve);
    let late = sale_of(&kit, &m, req).await;
    assert!(
        matches!(
            late,
            Err(LifecycleError::Rejected(Rejection::Pay(
                PayRejected::Closed
            )))
        ),
        "{late:?}"
    );
    assert_eq!(kit.hub().count(), 0);
    assert!(kit.open_commands(TID).await.is_empty());
    let by_reference = PaymentKey::Reference("pos-1".into());
    let stored = kit
        .store
        .payment(m.id, &by_reference)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.payment.state(), PaymentState::Closed);
}

#[tokio::test]
async fn a_result_reported_twice_is_applied_once() {
    let (kit, m, _) = kit("terminal-result-twice").await;
    kit.hub().set(TID, Mode::Silent);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    let id = kit.open_commands(TID).await.remove(0).command.id;
    kit.app
        .apply_terminal_result(&id, result(ChannelOutcome::Approved))
        .await
        .unwrap();
    // The same result again, and a contradicting one, change nothing.
    kit.app
        .apply_terminal_result(&id, result(ChannelOutcome::Approved))
        .await
        .unwrap();
    kit.app
        .apply_terminal_result(&id, result(ChannelOutcome::Declined))
        .await
        .unwrap();
    let stored = kit.payment(p.id).await;
    assert_eq!(stored.payment.state(), PaymentState::Paid);
    assert_eq!(kit.events_of_kind(p.id, "payment.paid").await, 1);
    assert_eq!(kit.events_of_kind(p.id, "payment.declined").await, 0);
    assert_eq!(kit.notifications_of(p.id, "payment.paid").await, 1);
    let command = kit.store.command(&id).await.unwrap().unwrap();
    assert_eq!(command.outcome, Some(CommandOutcome::Approved));
}

#[tokio::test]
async fn a_result_without_an_outcome_leaves_the_command_open() {
    let (kit, m, _) = kit("terminal-result-unknown").await;
    kit.hub().set(TID, Mode::Silent);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    let id = kit.open_commands(TID).await.remove(0).command.id;
    kit.app
        .apply_terminal_result(&id, result(ChannelOutcome::Unknown))
        .await
        .unwrap();
    assert_eq!(kit.open_commands(TID).await.len(), 1);
    assert_eq!(
        kit.payment(p.id).await.payment.state(),
        PaymentState::Pending
    );
}

#[tokio::test]
async fn a_result_for_an_unknown_command_is_not_found() {
    let (kit, _, _) = kit("terminal-result-unknown-command").await;
    let unknown = kit
        .app
        .apply_terminal_result("no-such-command", result(ChannelOutcome::Approved))
        .await;
    assert!(matches!(unknown, Err(LifecycleError::NotFound)));
}

#[tokio::test]
async fn a_result_for_a_sale_settled_meanwhile_only_finishes_its_command() {
    let (kit, m, _) = kit("terminal-result-settled").await;
    kit.hub().set(TID, Mode::Silent);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    let id = kit.open_commands(TID).await.remove(0).command.id;
    kit.app
        .wallet_settles_payment(&p.transaction_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    kit.app
        .apply_terminal_result(&id, result(ChannelOutcome::Declined))
        .await
        .unwrap();
    assert_eq!(kit.payment(p.id).await.payment.state(), PaymentState::Paid);
    assert_eq!(kit.events_of_kind(p.id, "payment.declined").await, 0);
    let command = kit.store.command(&id).await.unwrap().unwrap();
    assert_eq!(
        (command.state, command.outcome),
        (CommandState::Done, Some(CommandOutcome::Declined))
    );
    assert!(kit.open_commands(TID).await.is_empty());
}

#[tokio::test]
async fn the_terminal_s_progress_is_written_to_the_payment_s_timeline_in_order() {
    let (kit, m, _) = kit("terminal-progress").await;
    kit.hub().set(TID, Mode::Silent);
    let p = sale(&kit, &m, "pos-1", 1_250).await.unwrap().value;
    let command = kit.open_commands(TID).await.remove(0);
    for stage in ["received", "shown", "processing"] {
        kit.clock.advance(Duration::seconds(1));
        kit.app.terminal_progress(&command, stage).await.unwrap();
    }
    let progress: Vec<_> = kit
        .events(p.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "terminal.progress")
        .map(|e| (e.detail, e.at))
        .collect();
    let at = |s: i64| kit.app.now() - Duration::seconds(3 - s);
    assert_eq!(
        progress,
        [
            ("sale received".to_owned(), at(1)),
            ("sale shown".to_owned(), at(2)),
            ("sale processing".to_owned(), at(3)),
        ]
    );
    // Progress changes nothing about the payment.
    assert_eq!(
        kit.payment(p.id).await.payment.state(),
        PaymentState::Pending
    );
}

/// A sale still on the POS terminal is the terminal's to answer. Were the janitor to ask the
/// wallet, which never saw it, a "declined" would fail a payment the customer is making and the
/// terminal's approval would then be dropped as a replay. The janitor leaves operations with an
/// open terminal command alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_still_on_the_terminal_is_not_closed_by_asking_the_wallet() {
    let (kit, m, wallet) = kit("terminal-janitor").await;
    wallet.answer(ChannelOutcome::Unknown);
    wallet.answer_to(tillgate_testkit::OpKind::Query, ChannelOutcome::Declined);
    kit.hub().set(TID, Mode::Silent);
    let sale = sale(&kit, &m, "pos-1", 2_000).await.unwrap().value;
    assert_eq!(sale.payment.state(), PaymentState::Pending);
    let command = kit.open_commands(TID).await.remove(0);

    // The janitor's round.
    let later = kit.app.now() + Duration::hours(1);
    for op in kit.app.unresolved(later, 100).await.unwrap() {
        let _ = kit.app.resolve(&op).await;
    }
    // The customer pays on the terminal; its result arrives.
    kit.app
        .apply_terminal_result(
            &command.command.id,
            TerminalResult {
                outcome: ChannelOutcome::Approved,
                message: None,
            },
        )
        .await
        .unwrap();
    let now = kit.payment(sale.id).await;
    assert_eq!(
        now.payment.state(),
        PaymentState::Paid,
        "the terminal took the money; the gateway recorded {:?}",
        now.payment.state()
    );
}

#[tokio::test]
async fn the_payment_search_finds_a_sale_by_the_terminal_that_took_it() {
    let (kit, m, _) = kit("terminal-search").await;
    // The sale names a Pockyt store ("300001"); its command names the terminal.
    let sold = sale(&kit, &m, "pos-search", 1_000).await.unwrap().value;
    let elsewhere = kit.added_and_paid(&m, "not-on-a-terminal", usd(500)).await;
    let found = |terminal: &str| {
        let search = tillgate_core::console::PaymentSearch {
            terminal: Some(terminal.to_owned()),
            limit: 50,
            ..Default::default()
        };
        let store = kit.store.clone();
        async move {
            store
                .search_payments(&search)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found(TID).await, vec![sold.id]);
    assert!(!found(TID).await.contains(&elsewhere.id));
    // A Pockyt store is no terminal.
    assert!(found("300001").await.is_empty());
}
