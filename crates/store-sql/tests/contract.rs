//! What every store backend promises beyond the use cases' own tests, run on SQLite and on
//! PostgreSQL: what one change writes, and what it leaves alone.

use chrono::Duration;
use tillgate_core::replay::{self, ReplayCheck, StoredAnswer};
use tillgate_core::store::{Backlog, FinishCommand, Mutated, Writes};
use tillgate_core::terminal::{
    CommandKind, CommandOutcome, CommandState, NewCommand, TerminalCommand,
};
use tillgate_core::{NotificationFilter, OutboxStatus};
use tillgate_domain::{MerchantZone, PaymentState};
use tillgate_testkit::{add_request, on_both_backends, usd, Backend, Kit};

/// An ordinary change never writes `created_at`, whatever the record its decision ran on says;
/// only a change that asks to move it (the sandbox's ageing) does.
async fn an_ordinary_change_never_rewrites_the_creation_time(backend: Backend) {
    let kit = Kit::builder("contract-created").on(backend).build().await;
    let merchant = kit.merchant("100201", MerchantZone::utc()).await;
    let added = kit
        .app
        .add(&merchant, add_request("created-1", usd(500)))
        .await
        .unwrap();
    let created = added.value.created_at;
    let now = kit.app.now();
    let changed = kit
        .store
        .mutate(
            added.value.id,
            Box::new(move |p| {
                p.created_at -= Duration::days(3);
                Ok(Writes::at(now).event("test.touch", String::new()))
            }),
        )
        .await
        .unwrap();
    assert!(matches!(changed, Mutated::Done { .. }));
    let stored = kit
        .store
        .payment_by_id(added.value.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.created_at, created);

    let moved = created - Duration::days(1);
    change(&kit, added.value.id, move |w| w.created_at = Some(moved)).await;
    let stored = kit
        .store
        .payment_by_id(added.value.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.created_at, moved);
}

/// Writes one change of payment `id` at the kit's time, with what `fill` adds to its writes.
async fn change(kit: &Kit, id: i64, fill: impl Fn(&mut Writes) + Send + 'static) -> Mutated {
    let now = kit.app.now();
    let decide = move |_: &mut tillgate_core::PaymentRecord| {
        let mut w = Writes::at(now);
        fill(&mut w);
        Ok(w)
    };
    kit.store.mutate(id, Box::new(decide)).await.unwrap()
}

fn sale(id: &str, transaction_no: &str) -> NewCommand {
    NewCommand {
        command: TerminalCommand {
            id: id.to_owned(),
            kind: CommandKind::Sale,
            transaction_no: transaction_no.to_owned(),
            amount_minor: 500,
            currency: "USD".into(),
            description: None,
        },
        tid: "T-CONTRACT".into(),
    }
}

/// The change that applies a terminal's result finishes its command with it; a command done
/// already keeps its first outcome.
async fn a_change_finishes_the_command_whose_result_it_applies(backend: Backend) {
    let kit = Kit::builder("contract-command").on(backend).build().await;
    let merchant = kit.merchant("100202", MerchantZone::utc()).await;
    let added = kit
        .app
        .add(&merchant, add_request("command-1", usd(500)))
        .await
        .unwrap();
    let (id, tx) = (added.value.id, added.value.transaction_no.clone());
    let command = sale("cmd-contract-1", &tx);
    change(&kit, id, move |w| w.command = Some(command.clone())).await;
    let open = kit.store.command("cmd-contract-1").await.unwrap().unwrap();
    assert_eq!(open.state, CommandState::Open);
    assert_eq!(
        kit.store.open_commands("T-CONTRACT").await.unwrap().len(),
        1
    );

    let finish = |outcome| FinishCommand {
        command_id: "cmd-contract-1".into(),
        outcome,
        message: Some(format!("{outcome:?}")),
    };
    let first = finish(CommandOutcome::Approved);
    change(&kit, id, move |w| {
        w.events.push(("test.result".into(), String::new()));
        w.finish_command = Some(first.clone());
    })
    .await;
    let done = kit.store.command("cmd-contract-1").await.unwrap().unwrap();
    assert_eq!(done.state, CommandState::Done);
    assert_eq!(done.outcome, Some(CommandOutcome::Approved));
    assert!(kit
        .store
        .open_commands("T-CONTRACT")
        .await
        .unwrap()
        .is_empty());

    let second = finish(CommandOutcome::Declined);
    change(&kit, id, move |w| w.finish_command = Some(second.clone())).await;
    let still = kit.store.command("cmd-contract-1").await.unwrap().unwrap();
    assert_eq!(still.outcome, Some(CommandOutcome::Approved));
    assert_eq!(still.message.as_deref(), Some("Approved"));
}

/// A rejected decision writes nothing: not its events, and not the command it would finish.
async fn a_rejected_change_finishes_nothing(backend: Backend) {
    let kit = Kit::builder("contract-rejected").on(backend).build().await;
    let merchant = kit.merchant("100203", MerchantZone::utc()).await;
    let added = kit
        .app
        .add(&merchant, add_request("rejected-1", usd(500)))
        .await
        .unwrap();
    let (id, tx) = (added.value.id, added.value.transaction_no.clone());
    let command = sale("cmd-contract-2", &tx);
    change(&kit, id, move |w| w.command = Some(command.clone())).await;
    let events_before = kit.store.events_of(id).await.unwrap().len();
    let rejected = kit
        .store
        .mutate(id, Box::new(|_| Err(tillgate_core::Rejection::Replay)))
        .await
        .unwrap();
    assert!(matches!(rejected, Mutated::Rejected(..)));
    assert_eq!(kit.store.events_of(id).await.unwrap().len(), events_before);
    let open = kit.store.command("cmd-contract-2").await.unwrap().unwrap();
    assert_eq!(open.state, CommandState::Open);
}

fn answer(body: &str) -> StoredAnswer {
    StoredAnswer {
        status: 200,
        content_type: "application/json".into(),
        body: body.as_bytes().to_vec(),
    }
}

/// The exact-replay guard: a request acts once per window; its copies get its answer, or
/// "in flight" while it is being answered; a released claim or an ended window acts again.
async fn a_signed_request_acts_once_per_window(backend: Backend) {
    let kit = Kit::builder("contract-replay").on(backend).build().await;
    let merchant = kit.merchant("100204", MerchantZone::utc()).await;
    let other = kit.merchant("100205", MerchantZone::utc()).await;
    let guard = kit.app.replays();
    let key = || replay::digest("pockyt", "refund", "abc123");

    let acted = std::sync::atomic::AtomicU32::new(0);
    let act = |body: &'static str| {
        let acted = &acted;
        move || async move {
            acted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer(body)
        }
    };
    let first = guard.run(merchant.id, key(), act("first")).await.unwrap();
    assert_eq!(first, Some(answer("first")));
    // A copy, even with its hex signature in capitals, gets the first answer without acting.
    let copy = guard
        .run(
            merchant.id,
            replay::digest("pockyt", "refund", "ABC123"),
            act("second"),
        )
        .await
        .unwrap();
    assert_eq!(copy, Some(answer("first")));
    assert_eq!(acted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Another merchant's identical signature is its own request.
    let theirs = guard.run(other.id, key(), act("theirs")).await.unwrap();
    assert_eq!(theirs, Some(answer("theirs")));

    // While a request is being answered its copy is told so.
    let ReplayCheck::Fresh(ticket) = guard
        .check(merchant.id, replay::digest("pockyt", "refund", "in-flight"))
        .await
        .unwrap()
    else {
        panic!("a new request is fresh")
    };
    assert!(matches!(
        guard
            .check(merchant.id, replay::digest("pockyt", "refund", "in-flight"))
            .await
            .unwrap(),
        ReplayCheck::InFlight
    ));
    // A released claim (the request failed in a way worth retrying) acts again.
    guard.release(ticket).await.unwrap();
    assert!(matches!(
        guard
            .check(merchant.id, replay::digest("pockyt", "refund", "in-flight"))
            .await
            .unwrap(),
        ReplayCheck::Fresh(_)
    ));
    // An answer of 500 or more is not remembered.
    let failed = StoredAnswer {
        status: 503,
        ..answer("down")
    };
    let f = failed.clone();
    guard
        .run(
            merchant.id,
            replay::digest("pockyt", "refund", "failing"),
            || async { f },
        )
        .await
        .unwrap();
    let retried = guard
        .run(
            merchant.id,
            replay::digest("pockyt", "refund", "failing"),
            act("retried"),
        )
        .await
        .unwrap();
    assert_eq!(retried, Some(answer("retried")));

    // Once the window has passed, the same request acts again, and the old ones are forgotten.
    kit.clock.advance(guard.window() + Duration::seconds(1));
    let later = guard.run(merchant.id, key(), act("later")).await.unwrap();
    assert_eq!(later, Some(answer("later")));
    assert!(guard.forget_expired().await.unwrap() >= 2);
    let again = guard.run(merchant.id, key(), act("again")).await.unwrap();
    assert_eq!(
        again,
        Some(answer("later")),
        "the new sighting is remembered"
    );
}

/// The health check passes on a working store and says why not once it is closed; the backlog
/// counts what the listings list: pending notifications (and those due), and operations the
/// wallet has not answered.
async fn health_and_backlog_tell_what_the_store_holds(backend: Backend) {
    let kit = Kit::builder("contract-health").on(backend).build().await;
    let within = std::time::Duration::from_secs(5);
    kit.store
        .health(within)
        .await
        .expect("a fresh store is healthy");
    let empty = kit.store.backlog(kit.app.now()).await.unwrap();
    assert_eq!(empty, Backlog::default());

    let merchant = kit.merchant("100206", MerchantZone::utc()).await;
    // The sandbox wallet approves 5.00 (a notification follows) and leaves 10.52 unknown.
    kit.added_and_paid(&merchant, "health-paid", usd(500)).await;
    let unknown = kit
        .added_and_paid(&merchant, "health-unknown", usd(1052))
        .await;
    assert_eq!(unknown.payment.state(), PaymentState::Pending);

    let pending = NotificationFilter {
        status: Some(OutboxStatus::Pending),
        since: None,
        payment_id: None,
        limit: 1000,
    };
    let listed = kit.store.notifications(&pending).await.unwrap().len() as i64;
    assert!(listed > 0, "the paid payment has a notification waiting");
    // The listing takes what waits since before its time; the kit's clock has not moved.
    let unresolved = kit
        .store
        .unresolved(kit.app.now() + Duration::seconds(1), 1000)
        .await
        .unwrap();
    assert_eq!(unresolved.len(), 1);

    let later = kit.app.now() + Duration::hours(1);
    let before = kit
        .store
        .backlog(kit.app.now() - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        (
            before.notifications_pending,
            before.notifications_due,
            before.unresolved
        ),
        (listed, 0, 1),
        "nothing is due before it was written"
    );
    let after = kit.store.backlog(later).await.unwrap();
    assert_eq!(
        (
            after.notifications_pending,
            after.notifications_due,
            after.unresolved
        ),
        (listed, listed, 1)
    );

    kit.store.close().await;
    let closed = kit.store.health(within).await.unwrap_err();
    assert!(closed.to_string().contains("closed"), "{closed}");
}

/// The row a master key is checked against in a database with credentials and no check
/// value yet (a node starting while another sets the database up): it reads like every store
/// row, with all its columns.
async fn the_first_store_row_reads_whole(backend: Backend) {
    let kit = Kit::builder("contract-first-store")
        .on(backend)
        .build()
        .await;
    assert!(kit.store.first_store_row().await.unwrap().is_none());
    let merchant = kit.merchant("100207", MerchantZone::utc()).await;
    kit.store_of(&merchant, "9", "a-token-of-sixteen-chars")
        .await;
    let row = kit
        .store
        .first_store_row()
        .await
        .expect("a store row with every column")
        .expect("the store");
    assert_eq!(
        (row.merchant.merchant_no.as_str(), row.store_no.as_str()),
        ("100207", "9")
    );
}

/// A query's read of a payment with its refunds says what the two reads of them say, by either
/// key, and nothing for a key of another merchant.
async fn a_payment_reads_with_its_refunds(backend: Backend) {
    let kit = Kit::builder("contract-with-refunds")
        .on(backend)
        .build()
        .await;
    let merchant = kit.merchant("100202", MerchantZone::utc()).await;
    let other = kit.merchant("100203", MerchantZone::utc()).await;
    let bare = kit.added_and_paid(&merchant, "with-none", usd(900)).await;
    let paid = kit.added_and_paid(&merchant, "with-two", usd(900)).await;
    kit.refunded(&merchant, &paid, usd(100), Some("first"))
        .await;
    kit.refunded(&merchant, &paid, usd(200), None).await;
    for p in [&bare, &paid] {
        let expected_payment = kit.store.payment_by_id(p.id).await.unwrap().unwrap();
        let expected_refunds = kit.store.refunds_of(p.id).await.unwrap();
        let keys = [
            tillgate_core::PaymentKey::TransactionNo(p.transaction_no.clone()),
            tillgate_core::PaymentKey::Reference(p.reference.clone()),
        ];
        for key in keys {
            let (payment, refunds) = kit
                .store
                .payment_with_refunds(merchant.id, &key)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(format!("{payment:?}"), format!("{expected_payment:?}"));
            assert_eq!(format!("{refunds:?}"), format!("{expected_refunds:?}"));
            let elsewhere = kit.store.payment_with_refunds(other.id, &key).await;
            assert!(elsewhere.unwrap().is_none());
        }
    }
    assert_eq!(kit.store.refunds_of(paid.id).await.unwrap().len(), 2);
}

on_both_backends!(
    a_payment_reads_with_its_refunds,
    the_first_store_row_reads_whole,
    health_and_backlog_tell_what_the_store_holds,
    a_signed_request_acts_once_per_window,
    an_ordinary_change_never_rewrites_the_creation_time,
    a_change_finishes_the_command_whose_result_it_applies,
    a_rejected_change_finishes_nothing,
);
