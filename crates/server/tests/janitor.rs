//! The janitor against a real store (SQLite and PostgreSQL) and a wallet whose answers the
//! test chooses.

use std::sync::Arc;
use std::time::Duration;
use tillgate_core::PaymentKey;
use tillgate_domain::{ChannelOutcome, MerchantZone, PaymentState};
use tillgate_server::janitor::{Janitor, BATCH};
use tillgate_testkit::{on_both_backends, usd, Backend, Kit, ScriptedWallet};

/// 150 payments whose answers were lost; the wallet cannot answer about the 100 oldest but
/// knows the 50 newest were paid. A janitor that asked only the oldest 100 again and again
/// would never learn of the newer ones.
async fn newer_operations_are_asked_while_the_wallet_cannot_answer_the_oldest(backend: Backend) {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Unknown));
    let kit = Kit::builder("janitor-starvation")
        .on(backend)
        .channel(wallet.clone())
        .build()
        .await;
    let merchant = kit.merchant("100150", MerchantZone::utc()).await;
    let mut payments = Vec::new();
    for i in 0..150 {
        let p = kit
            .added_and_paid(&merchant, &format!("starve-{i:03}"), usd(1_000 + i))
            .await;
        assert_eq!(p.payment.state(), PaymentState::Pending);
        payments.push(p);
        kit.clock.advance(chrono::Duration::seconds(1));
    }
    assert!(
        payments.len() as i64 > BATCH,
        "more waiting than one round takes"
    );
    let (oldest, newest) = payments.split_at(100);
    for p in newest {
        wallet.answer_for(&p.transaction_no, ChannelOutcome::Approved);
    }
    kit.clock.advance(chrono::Duration::minutes(5));
    let janitor = Janitor::new(
        kit.app.clone(),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );

    // The first round takes the 100 oldest; the wallet cannot answer about any of them.
    assert_eq!(janitor.round().await, 0);
    // The next round, at the same moment, asks about the newer ones instead.
    assert_eq!(janitor.round().await, 50);

    let state = |p: &tillgate_core::PaymentRecord| {
        let key = PaymentKey::TransactionNo(p.transaction_no.clone());
        let store = kit.store.clone();
        let merchant_id = merchant.id;
        async move {
            store
                .payment(merchant_id, &key)
                .await
                .unwrap()
                .unwrap()
                .payment
                .state()
        }
    };
    for p in newest {
        assert_eq!(state(p).await, PaymentState::Paid, "{}", p.transaction_no);
    }
    for p in oldest {
        assert_eq!(
            state(p).await,
            PaymentState::Pending,
            "{}",
            p.transaction_no
        );
    }
    // Nothing more is due until the oldest ones' next question.
    assert_eq!(janitor.round().await, 0);
    let due = kit
        .store
        .due_queries(kit.app.now(), kit.app.now(), BATCH)
        .await
        .unwrap();
    assert!(due.is_empty(), "{} still due", due.len());

    // Once the wallet knows, the oldest are resolved when their time comes again.
    for p in oldest {
        wallet.answer_for(&p.transaction_no, ChannelOutcome::Declined);
    }
    kit.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(janitor.round().await, 100);
    for p in oldest {
        assert_eq!(state(p).await, PaymentState::Failed);
    }
}

/// Each unanswered question pushes the next one further out.
async fn an_operation_the_wallet_cannot_answer_is_asked_less_and_less_often(backend: Backend) {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Unknown));
    let kit = Kit::builder("janitor-backoff")
        .on(backend)
        .channel(wallet.clone())
        .build()
        .await;
    let merchant = kit.merchant("100151", MerchantZone::utc()).await;
    kit.added_and_paid(&merchant, "backoff-1", usd(1_000)).await;
    kit.clock.advance(chrono::Duration::minutes(1));
    let janitor = Janitor::new(
        kit.app.clone(),
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    let queries = || {
        wallet
            .asked()
            .iter()
            .filter(|op| matches!(op, tillgate_core::ChannelOp::Query { .. }))
            .count()
    };
    // Asked at once, then after 10 s, then 20 s later: the pause doubles.
    janitor.round().await;
    assert_eq!(queries(), 1);
    kit.clock.advance(chrono::Duration::seconds(9));
    janitor.round().await;
    assert_eq!(queries(), 1, "asked again before the pause");
    kit.clock.advance(chrono::Duration::seconds(1));
    janitor.round().await;
    assert_eq!(queries(), 2);
    kit.clock.advance(chrono::Duration::seconds(19));
    janitor.round().await;
    assert_eq!(queries(), 2, "the second pause is twice the first");
    kit.clock.advance(chrono::Duration::seconds(1));
    janitor.round().await;
    assert_eq!(queries(), 3);
    let waiting = kit.store.unresolved(kit.app.now(), 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "the operator still sees it");
    assert_eq!(waiting[0].unanswered_queries, 3);
}

on_both_backends!(
    newer_operations_are_asked_while_the_wallet_cannot_answer_the_oldest,
    an_operation_the_wallet_cannot_answer_is_asked_less_and_less_often,
);
