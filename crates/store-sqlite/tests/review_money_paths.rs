//! Money paths of the lifecycle service on a real SQLite store, driven by a wallet the test
//! controls: duplicate and late answers, the janitor and a callback at once, concurrent refunds
//! whose answers are unknown. Each test states a rule that must hold whatever the interleaving.

// Runs the lifecycle on the wall clock.
#![allow(clippy::disallowed_methods)]

use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tillgate_core::service::{AddRequest, NotifyTo, PayRequest, RefundRequest};
use tillgate_core::service::{CancelOptions, LifecycleError};
use tillgate_core::store::{Rejection, Store};
use tillgate_core::terminal::{HubError, TerminalCommand, TerminalHub, TerminalResult};
use tillgate_core::{
    Channel, ChannelOp, ChannelReply, Lifecycle, LifecycleConfig, MerchantRecord,
    NotificationFilter, PaymentKey, PaymentRecord, RefundRecord, SecretBox, StoreError, Unresolved,
    UnresolvedKind,
};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelState, ChannelOutcome, Currency, Key, MerchantZone, Money,
    PaymentState, RefundRejected, RefundState, SystemClock,
};
use tokio::sync::Semaphore;

/// Which operation a scripted answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Pay,
    Refund,
    Cancel,
    Query,
}

fn op_of(op: &ChannelOp) -> Op {
    match op {
        ChannelOp::Pay { .. } => Op::Pay,
        ChannelOp::Refund { .. } => Op::Refund,
        ChannelOp::Close { .. } | ChannelOp::Reverse { .. } => Op::Cancel,
        ChannelOp::Query { .. } => Op::Query,
    }
}

/// A wallet that answers what the test tells it: per kind of operation, a queue of answers
/// (the last one repeats). Queries can be held inside the wallet until the test lets them go.
struct TestWallet {
    answers: Mutex<Vec<(Op, VecDeque<ChannelOutcome>)>>,
    hold_queries: bool,
    /// A permit per query that reached the wallet.
    entered: Semaphore,
    /// A permit per query allowed to answer.
    release: Semaphore,
}

impl TestWallet {
    fn new(script: &[(Op, &[ChannelOutcome])]) -> TestWallet {
        TestWallet {
            answers: Mutex::new(
                script
                    .iter()
                    .map(|(op, a)| (*op, a.iter().copied().collect()))
                    .collect(),
            ),
            hold_queries: false,
            entered: Semaphore::new(0),
            release: Semaphore::new(0),
        }
    }

    fn holding_queries(mut self) -> TestWallet {
        self.hold_queries = true;
        self
    }

    fn set(&self, op: Op, answers: &[ChannelOutcome]) {
        let mut all = self.answers.lock().unwrap();
        all.retain(|(o, _)| *o != op);
        all.push((op, answers.iter().copied().collect()));
    }

    fn answer(&self, op: Op) -> ChannelOutcome {
        let mut all = self.answers.lock().unwrap();
        let Some((_, queue)) = all.iter_mut().find(|(o, _)| *o == op) else {
            return ChannelOutcome::Unknown;
        };
        if queue.len() > 1 {
            queue.pop_front().unwrap()
        } else {
            queue.front().copied().unwrap_or(ChannelOutcome::Unknown)
        }
    }
}

#[async_trait]
impl Channel for TestWallet {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        let kind = op_of(&op);
        if kind == Op::Query && self.hold_queries {
            self.entered.add_permits(1);
            self.release.acquire().await.unwrap().forget();
        }
        ChannelReply::new(self.answer(kind))
    }
}

struct World {
    app: Arc<Lifecycle>,
    store: Arc<dyn Store>,
    wallet: Arc<TestWallet>,
    merchant: MerchantRecord,
}

async fn world(name: &str, wallet: TestWallet) -> World {
    world_on(name, wallet, None).await
}

async fn world_on(name: &str, wallet: TestWallet, hub: Option<Arc<dyn TerminalHub>>) -> World {
    let dir = std::env::temp_dir().join(format!(
        "tillgate-review-money-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let store: Arc<dyn Store> = Arc::new(
        tillgate_store_sqlite::SqliteStore::open(&url)
            .await
            .unwrap(),
    );
    let wallet = Arc::new(wallet);
    let mut app = Lifecycle::new(
        store.clone(),
        wallet.clone(),
        Arc::new(SystemClock),
        Arc::new(tillgate_core::Credentials::new(
            store.clone(),
            SecretBox::from_hex(SecretBox::generate_key_hex().expose()).unwrap(),
            Arc::new(SystemClock),
            Duration::from_secs(60),
        )),
        LifecycleConfig::default(),
    );
    if let Some(hub) = hub {
        app = app.with_hub(hub);
    }
    let app = Arc::new(app);
    let merchant = app
        .credentials()
        .create_merchant("910001", MerchantZone::utc(), false)
        .await
        .unwrap();
    World {
        app,
        store,
        wallet,
        merchant,
    }
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::from_code("USD").unwrap()).unwrap()
}

fn add_request(reference: &str, amount: Money) -> AddRequest {
    AddRequest {
        store_no: "300001".into(),
        reference: Key::parse(reference).unwrap(),
        amount,
        settle_currency: amount.currency(),
        description: None,
        notify_url: Some("http://127.0.0.1:9/notify".into()),
        timeout_minutes: None,
        dialect: tillgate_core::Dialect::Pockyt,
        extra: None,
    }
}

fn refund_request(amount: Money, reference: Option<&str>) -> RefundRequest {
    RefundRequest {
        amount,
        settle_currency: None,
        refund_reference: reference.map(|r| Key::parse(r).unwrap()),
        notify: NotifyTo::PaymentUrl,
        extra: None,
    }
}

fn key(p: &PaymentRecord) -> PaymentKey {
    PaymentKey::TransactionNo(p.transaction_no.clone())
}

/// Adds and pays a transaction; the wallet's answer to the pay is whatever it is told.
async fn added_and_paid(w: &World, reference: &str, amount: Money) -> PaymentRecord {
    let added = w
        .app
        .add(&w.merchant, add_request(reference, amount))
        .await
        .unwrap();
    w.app
        .pay(
            &w.merchant,
            &key(&added.value),
            PayRequest {
                barcode: Some("281234567890123456".into()),
                vendor: Some("alipay".into()),
            },
        )
        .await
        .unwrap()
        .value
}

async fn payment(w: &World, id: i64) -> PaymentRecord {
    w.store.payment_by_id(id).await.unwrap().unwrap()
}

async fn refund_of(w: &World, refund_no: &str) -> RefundRecord {
    w.store
        .refund_by_no(w.merchant.id, refund_no)
        .await
        .unwrap()
        .unwrap()
}

async fn events(w: &World, payment_id: i64, kind: &str) -> usize {
    w.store
        .events_of(payment_id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

async fn notifications(w: &World, payment_id: i64, topic: &str) -> usize {
    w.store
        .notifications(&NotificationFilter {
            payment_id: Some(payment_id),
            limit: 1000,
            ..NotificationFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|n| n.topic.as_str() == topic)
        .count()
}

fn refund_op(p: &PaymentRecord, refund_no: &str) -> Unresolved {
    Unresolved {
        payment_id: p.id,
        transaction_no: p.transaction_no.clone(),
        merchant_no: p.merchant_no.clone(),
        kind: UnresolvedKind::Refund {
            refund_no: refund_no.to_owned(),
        },
        since: chrono::Utc::now(),
        unanswered_queries: 0,
    }
}

/// Every stored total must respect the paid amount, and match the refunds' own states.
async fn assert_totals_agree_with_refund_rows(w: &World, payment_id: i64) {
    let p = payment(w, payment_id).await;
    let refunds = w.store.refunds_of(payment_id).await.unwrap();
    let sum = |state: RefundState| {
        refunds
            .iter()
            .filter(|r| r.state == state)
            .map(|r| r.amount.minor())
            .sum::<i64>()
    };
    assert!(
        p.payment.refunded().minor() + p.payment.reserved().minor() <= p.payment.amount().minor()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_answered_by_callbacks_and_the_janitor_at_once_settles_exactly_once() {
    let w = world(
        "refund-race",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            (Op::Refund, &[ChannelOutcome::Unknown]),
            (Op::Query, &[ChannelOutcome::Approved]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "race-1", usd(10_000)).await;
    // Two refunds of the same size wait for the wallet: the second one's reservation would
    // cover a second settlement of the first, so only the guard can refuse it.
    let a = w
        .app
        .refund(
            &w.merchant,
            &key(&p),
            refund_request(usd(3_000), Some("ra")),
        )
        .await
        .unwrap()
        .value
        .1;
    let b = w
        .app
        .refund(
            &w.merchant,
            &key(&p),
            refund_request(usd(3_000), Some("rb")),
        )
        .await
        .unwrap()
        .value
        .1;
    assert_eq!(a.state, RefundState::InProgress);
    assert_eq!(b.state, RefundState::InProgress);

    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = w.app.clone();
        let (tx, no) = (p.transaction_no.clone(), a.refund_no.clone());
        let op = refund_op(&p, &a.refund_no);
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

    let now = payment(&w, p.id).await;
    assert_eq!(
        refund_of(&w, &a.refund_no).await.state,
        RefundState::Succeeded
    );
    assert_eq!(
        refund_of(&w, &b.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(now.payment.refunded(), usd(3_000), "settled once");
    assert_eq!(
        now.payment.reserved(),
        usd(3_000),
        "the other refund keeps its reservation"
    );
    assert_eq!(events(&w, p.id, "refund.succeeded").await, 1);
    assert_eq!(notifications(&w, p.id, "refund.succeeded").await, 1);
    assert_totals_agree_with_refund_rows(&w, p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_answer_that_arrives_after_a_callback_settled_the_refund_changes_nothing() {
    let w = world(
        "refund-held-query",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            (Op::Refund, &[ChannelOutcome::Unknown]),
            (Op::Query, &[ChannelOutcome::Approved]),
        ])
        .holding_queries(),
    )
    .await;
    let p = added_and_paid(&w, "held-1", usd(10_000)).await;
    let a = w
        .app
        .refund(&w.merchant, &key(&p), refund_request(usd(2_500), None))
        .await
        .unwrap()
        .value
        .1;
    let b = w
        .app
        .refund(&w.merchant, &key(&p), refund_request(usd(2_500), None))
        .await
        .unwrap()
        .value
        .1;

    // The janitor asks about refund A; its question is inside the wallet...
    let janitor = {
        let (app, op) = (w.app.clone(), refund_op(&p, &a.refund_no));
        tokio::spawn(async move { app.resolve(&op).await })
    };
    w.wallet.entered.acquire().await.unwrap().forget();
    // ...while the wallet's callback settles A.
    w.app
        .wallet_settles_refund(&p.transaction_no, &a.refund_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    // Now the janitor's answer comes back and is applied to a payment that still has 25.00
    // reserved (refund B's): only the guard tells it that A is settled already.
    w.wallet.release.add_permits(1);
    assert!(janitor.await.unwrap().unwrap());

    let now = payment(&w, p.id).await;
    assert_eq!(now.payment.refunded(), usd(2_500));
    assert_eq!(now.payment.reserved(), usd(2_500));
    assert_eq!(
        refund_of(&w, &b.refund_no).await.state,
        RefundState::InProgress
    );
    assert_eq!(events(&w, p.id, "refund.succeeded").await, 1);
    assert_totals_agree_with_refund_rows(&w, p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_approval_then_a_contradicting_decline_leave_the_refund_succeeded() {
    let w = world(
        "refund-late",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            (Op::Refund, &[ChannelOutcome::Unknown]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "late-1", usd(5_000)).await;
    let (_, r) = w
        .app
        .refund(
            &w.merchant,
            &key(&p),
            refund_request(usd(5_000), Some("late-r")),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(r.state, RefundState::InProgress);
    // The merchant's retry while the wallet has not answered is refused as retryable.
    assert!(matches!(
        w.app
            .refund(
                &w.merchant,
                &key(&p),
                refund_request(usd(5_000), Some("late-r"))
            )
            .await,
        Err(LifecycleError::InProgress)
    ));

    let (_, settled) = w
        .app
        .wallet_settles_refund(&p.transaction_no, &r.refund_no, ChannelOutcome::Approved)
        .await
        .unwrap();
    assert_eq!(settled.state, RefundState::Succeeded);
    let (after, again) = w
        .app
        .wallet_settles_refund(&p.transaction_no, &r.refund_no, ChannelOutcome::Declined)
        .await
        .unwrap();
    assert_eq!(again.state, RefundState::Succeeded);
    assert_eq!(after.payment.state(), PaymentState::Refunded);
    assert_eq!(after.payment.refunded(), usd(5_000));
    assert_eq!(after.payment.reserved(), usd(0));
    assert_eq!(events(&w, p.id, "refund.succeeded").await, 1);
    assert_eq!(events(&w, p.id, "refund.failed").await, 0);
    assert_eq!(notifications(&w, p.id, "refund.succeeded").await, 1);
    assert_eq!(notifications(&w, p.id, "refund.failed").await, 0);
    // The retry now replays the succeeded refund.
    let replay = w
        .app
        .refund(
            &w.merchant,
            &key(&p),
            refund_request(usd(5_000), Some("late-r")),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.value.1.state, RefundState::Succeeded);
    assert_totals_agree_with_refund_rows(&w, p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_whose_answers_are_unknown_hold_back_the_refundable_amount() {
    let w = world(
        "refund-concurrent",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            (Op::Refund, &[ChannelOutcome::Unknown]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "conc-1", usd(10_000)).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (app, m, k) = (w.app.clone(), w.merchant.clone(), key(&p));
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
    assert_eq!(payment(&w, p.id).await.payment.reserved(), usd(9_000));
    assert_totals_agree_with_refund_rows(&w, p.id).await;

    // One comes back declined, one approved, one stays unknown.
    w.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[0].refund_no,
            ChannelOutcome::Declined,
        )
        .await
        .unwrap();
    w.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[1].refund_no,
            ChannelOutcome::Approved,
        )
        .await
        .unwrap();
    let now = payment(&w, p.id).await;
    assert_eq!(now.payment.refunded(), usd(3_000));
    assert_eq!(now.payment.reserved(), usd(3_000));
    assert_eq!(now.payment.refundable(), usd(4_000));
    assert_totals_agree_with_refund_rows(&w, p.id).await;

    // What is left is exactly what may be refunded, even with the wallet answering now.
    w.wallet.set(Op::Refund, &[ChannelOutcome::Approved]);
    let over = w
        .app
        .refund(&w.merchant, &key(&p), refund_request(usd(4_001), None))
        .await;
    assert!(matches!(
        over,
        Err(LifecycleError::Rejected(Rejection::Refund(
            RefundRejected::ExceedsRefundable { .. }
        )))
    ));
    w.app
        .refund(&w.merchant, &key(&p), refund_request(usd(4_000), None))
        .await
        .unwrap();
    // The last unknown one is approved late: the payment is refunded in full, never more.
    w.app
        .wallet_settles_refund(
            &p.transaction_no,
            &admitted[2].refund_no,
            ChannelOutcome::Approved,
        )
        .await
        .unwrap();
    let end = payment(&w, p.id).await;
    assert_eq!(end.payment.state(), PaymentState::Refunded);
    assert_eq!(end.payment.refunded(), usd(10_000));
    assert_eq!(end.payment.reserved(), usd(0));
    assert_totals_agree_with_refund_rows(&w, p.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_answers_for_a_pending_payment_settle_it_once() {
    let w = world(
        "pay-dup",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Unknown]),
            (Op::Query, &[ChannelOutcome::Approved]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "dup-1", usd(1_234)).await;
    assert_eq!(p.payment.state(), PaymentState::Pending);
    let op = Unresolved {
        payment_id: p.id,
        transaction_no: p.transaction_no.clone(),
        merchant_no: p.merchant_no.clone(),
        kind: UnresolvedKind::Payment,
        since: chrono::Utc::now(),
        unanswered_queries: 0,
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (app, tx, op) = (w.app.clone(), p.transaction_no.clone(), op.clone());
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
        w.app
            .wallet_settles_payment(&p.transaction_no, ChannelOutcome::Declined)
            .await,
        Err(LifecycleError::Rejected(Rejection::Replay))
    ));
    let now = payment(&w, p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Paid);
    assert_eq!(events(&w, p.id, "payment.paid").await, 1);
    assert_eq!(events(&w, p.id, "payment.declined").await, 0);
    assert_eq!(notifications(&w, p.id, "payment.paid").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_for_an_earlier_cancel_does_not_settle_the_cancel_now_in_flight() {
    let w = world(
        "cancel-late",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            // The first reversal is declined, the second one's answer is lost.
            (
                Op::Cancel,
                &[ChannelOutcome::Declined, ChannelOutcome::Unknown],
            ),
            (Op::Query, &[ChannelOutcome::Approved]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "cancel-1", usd(4_200)).await;
    let rule = BusinessDayRule::calendar_day(MerchantZone::utc());
    let (_, first) = w
        .app
        .cancel(
            &w.merchant,
            &key(&p),
            rule,
            CancelIntent::Cancel,
            CancelOptions::default(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(first.state, CancelState::Failed);
    let (_, second) = w
        .app
        .cancel(
            &w.merchant,
            &key(&p),
            rule,
            CancelIntent::Cancel,
            CancelOptions::default(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(second.state, CancelState::InProgress);

    // A duplicate, contradicting answer for the first cancel arrives: it must not reverse the
    // payment on the strength of the second cancel being in flight.
    match w
        .app
        .wallet_settles_cancel(&first.cancel_no, ChannelOutcome::Approved)
        .await
    {
        Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => {}
        Err(e) => panic!("unexpected answer: {e:?}"),
    }
    let now = payment(&w, p.id).await;
    assert_eq!(now.payment.state(), PaymentState::Paid);
    assert!(now.payment.cancel_in_flight().is_some());

    // The janitor and the wallet's callback answer the second one at once: settled once.
    let op = Unresolved {
        payment_id: p.id,
        transaction_no: p.transaction_no.clone(),
        merchant_no: p.merchant_no.clone(),
        kind: UnresolvedKind::Cancel {
            cancel_no: second.cancel_no.clone(),
        },
        since: chrono::Utc::now(),
        unanswered_queries: 0,
    };
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (app, op, no) = (w.app.clone(), op.clone(), second.cancel_no.clone());
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
    let end = payment(&w, p.id).await;
    assert_eq!(end.payment.state(), PaymentState::Cancelled);
    assert!(end.payment.cancel_in_flight().is_none());
    assert_eq!(events(&w, p.id, "cancel.succeeded").await, 1);
    let cancels = w.store.cancels_of(p.id).await.unwrap();
    assert_eq!(cancels[0].state, CancelState::Failed);
    assert_eq!(cancels[1].state, CancelState::Succeeded);
}

/// A terminal that has the command but has not given its result yet.
struct SilentTerminal;

#[async_trait]
impl TerminalHub for SilentTerminal {
    async fn is_online(&self, _tid: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn execute(
        &self,
        _tid: &str,
        _command: &TerminalCommand,
        _wait: Duration,
    ) -> Result<TerminalResult, HubError> {
        Ok(TerminalResult {
            outcome: ChannelOutcome::Unknown,
            message: None,
        })
    }
}

/// A sale still on the POS terminal is the terminal's to answer. Were the janitor to ask the
/// wallet, which never saw it, a "declined" would fail a payment the customer is making and the
/// terminal's approval would then be dropped as a replay. The janitor leaves operations with an
/// open terminal command alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_still_on_the_terminal_is_not_closed_by_asking_the_wallet() {
    let w = world_on(
        "terminal-janitor",
        TestWallet::new(&[(Op::Query, &[ChannelOutcome::Declined])]),
        Some(Arc::new(SilentTerminal)),
    )
    .await;
    w.app
        .credentials()
        .add_terminal(
            &w.merchant,
            "T-REVIEW",
            &tillgate_core::Secret::new("s".repeat(24)),
        )
        .await
        .unwrap();
    let sale = w
        .app
        .terminal_sale(
            &w.merchant,
            "T-REVIEW",
            add_request("pos-1", usd(2_000)),
            Duration::from_millis(1),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(sale.payment.state(), PaymentState::Pending);
    let command = w.store.open_commands("T-REVIEW").await.unwrap().remove(0);

    // The janitor's round.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    for op in w.app.unresolved(later, 100).await.unwrap() {
        let _ = w.app.resolve(&op).await;
    }
    // The customer pays on the terminal; its result arrives.
    w.app
        .apply_terminal_result(
            &command.command.id,
            TerminalResult {
                outcome: ChannelOutcome::Approved,
                message: None,
            },
        )
        .await
        .unwrap();
    let now = payment(&w, sale.id).await;
    assert_eq!(
        now.payment.state(),
        PaymentState::Paid,
        "the terminal took the money; the gateway recorded {:?}",
        now.payment.state()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_with_one_reference_reserve_once() {
    let w = world(
        "refund-same-key",
        TestWallet::new(&[
            (Op::Pay, &[ChannelOutcome::Approved]),
            (Op::Refund, &[ChannelOutcome::Unknown]),
        ]),
    )
    .await;
    let p = added_and_paid(&w, "same-1", usd(10_000)).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (app, m, k) = (w.app.clone(), w.merchant.clone(), key(&p));
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
    assert_eq!(w.store.refunds_of(p.id).await.unwrap().len(), 1);
    assert_eq!(payment(&w, p.id).await.payment.reserved(), usd(2_000));
    assert_totals_agree_with_refund_rows(&w, p.id).await;
}
