//! The group-commit writer under faults: a job that fails half-way, a failure that makes SQLite
//! roll back the whole transaction, and a COMMIT that fails. The rule: a caller's answer and
//! the database always agree (Ok means committed, an error means nothing of it stays).
//!
//! Faults are injected with triggers created on a second connection. To put several jobs in one
//! batch deterministically, a first job holds the writer inside its decision until the others
//! are queued (the batch is taken from the queue before BEGIN, so they form the next batch).

use sqlx::ConnectOptions;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tillgate_core::service::AddRequest;
use tillgate_core::store::{Mutated, Store, Writes};
use tillgate_core::{PaymentRecord, StoreError};
use tillgate_domain::{ChannelOutcome, MerchantZone};
use tillgate_testkit::{add_request, key, pay_request, start, usd, Kit, ScriptedWallet};

struct World {
    /// The store, on a database the kit removes when the world goes.
    kit: Kit,
    /// A second connection, for injecting faults and for reading behind the store's back.
    side: sqlx::SqliteConnection,
    payments: Vec<PaymentRecord>,
}

/// A store with three paid payments of 100.00.
async fn world(name: &str) -> World {
    let wallet = Arc::new(ScriptedWallet::new(ChannelOutcome::Approved));
    let kit = Kit::builder(name).channel(wallet).build().await;
    let merchant = kit.merchant("920001", MerchantZone::utc()).await;
    let mut payments = Vec::new();
    for i in 0..3 {
        let req = AddRequest {
            store_no: "1".into(),
            notify_url: None,
            ..add_request(&format!("w-{i}"), usd(10_000))
        };
        let added = kit.app.add(&merchant, req).await.unwrap();
        let paid = kit
            .app
            .pay(&merchant, &key(&added.value), pay_request())
            .await
            .unwrap();
        payments.push(paid.value);
    }
    let side = sqlx::sqlite::SqliteConnectOptions::from_str(&kit.database_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    World {
        kit,
        side,
        payments,
    }
}

async fn side_exec(w: &mut World, sql: &str) {
    sqlx::Executor::execute(&mut w.side, sql).await.unwrap();
}

/// What the database holds, read behind the store's back: the payment's reserved total and how
/// many events of `kind` it has.
async fn stored(w: &mut World, payment_id: i64, kind: &str) -> (i64, i64) {
    let reserved: i64 = sqlx::query_scalar("SELECT reserved_minor FROM payments WHERE id = ?")
        .bind(payment_id)
        .fetch_one(&mut w.side)
        .await
        .unwrap();
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE payment_id = ? AND kind = ?")
            .bind(payment_id)
            .bind(kind)
            .fetch_one(&mut w.side)
            .await
            .unwrap();
    (reserved, events)
}

/// A mutation that reserves 10.00 (the payment row is written first) and then writes an event
/// of `kind`.
fn reserve_with_event(kind: &'static str) -> tillgate_core::MutateFn {
    Box::new(move |p| {
        p.payment
            .reserve_refund(usd(1_000))
            .map_err(tillgate_core::Rejection::Refund)?;
        Ok(Writes::at(start()).event(kind, String::new()))
    })
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<Mutated, StoreError>> + Send + 'a>>;

/// Polls a store call once: far enough to put its job in the writer's queue.
fn enqueue(f: &mut Answer<'_>) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(f.as_mut().poll(&mut cx), Poll::Pending));
}

/// Runs `jobs` as one batch of the writer: a first job holds the writer until they are all
/// queued. Returns the first job's answer and theirs. The store is leaked by the tests so that
/// the holder's call can be spawned.
async fn one_batch(
    store: &'static Arc<dyn Store>,
    holder: i64,
    jobs: Vec<Answer<'static>>,
) -> (
    Result<Mutated, StoreError>,
    Vec<Result<Mutated, StoreError>>,
) {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let mut entered_tx = Some(entered_tx);
    let hold = store.mutate(
        holder,
        Box::new(move |_p| {
            if let Some(tx) = entered_tx.take() {
                let _ = tx.send(());
                let _ = release_rx.recv();
            }
            Ok(Writes::at(start()).event("test.hold", String::new()))
        }),
    );
    let hold = tokio::spawn(hold);
    entered_rx.await.unwrap();
    let mut jobs = jobs;
    for j in &mut jobs {
        enqueue(j);
    }
    release_tx.send(()).unwrap();
    let held = hold.await.unwrap();
    let mut answers = Vec::new();
    for j in jobs {
        answers.push(j.await);
    }
    (held, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_half_way_undoes_only_its_own_writes_and_its_batch_commits() {
    let mut w = world("abort").await;
    side_exec(
        &mut w,
        "CREATE TRIGGER fault_abort BEFORE INSERT ON events WHEN NEW.kind = 'test.abort' \
         BEGIN SELECT RAISE(ABORT, 'injected statement failure'); END",
    )
    .await;
    let (a, b, c) = (w.payments[0].id, w.payments[1].id, w.payments[2].id);
    let store: &'static Arc<dyn Store> = Box::leak(Box::new(w.kit.store.clone()));
    let before = store.commit_stats();
    let (held, answers) = one_batch(
        store,
        a,
        vec![
            store.mutate(b, reserve_with_event("test.abort")),
            store.mutate(c, reserve_with_event("test.ok")),
        ],
    )
    .await;
    assert!(held.is_ok());
    assert!(
        answers[0].is_err(),
        "the failed job is answered with an error"
    );
    assert!(matches!(answers[1], Ok(Mutated::Done { .. })));
    let after = store.commit_stats();
    assert_eq!(
        after.commits - before.commits,
        2,
        "the holder's batch, then one batch of both"
    );
    assert_eq!(after.operations - before.operations, 3);
    assert_eq!(
        stored(&mut w, b, "test.abort").await,
        (0, 0),
        "its payment update is undone"
    );
    assert_eq!(stored(&mut w, c, "test.ok").await, (1_000, 1));
}

/// SQLite rolls back the whole transaction on some errors inside it (SQLITE_FULL, SQLITE_IOERR,
/// SQLITE_NOMEM, SQLITE_BUSY, or RAISE(ROLLBACK) as here), after which `ROLLBACK TO op` fails.
/// Were the writer to go on, later jobs would run outside any transaction and commit on their
/// own while their callers are told the batch failed. It stops the batch instead: every caller
/// learns nothing was committed, and nothing was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_rolls_back_the_whole_transaction_is_never_answered_against_the_database() {
    let mut w = world("rollback").await;
    side_exec(
        &mut w,
        "CREATE TRIGGER fault_rollback BEFORE INSERT ON events WHEN NEW.kind = 'test.rollback' \
         BEGIN SELECT RAISE(ROLLBACK, 'injected transaction rollback'); END",
    )
    .await;
    let (a, b, c) = (w.payments[0].id, w.payments[1].id, w.payments[2].id);
    let store: &'static Arc<dyn Store> = Box::leak(Box::new(w.kit.store.clone()));
    let (held, answers) = one_batch(
        store,
        a,
        vec![
            store.mutate(b, reserve_with_event("test.rollback")),
            store.mutate(c, reserve_with_event("test.after")),
        ],
    )
    .await;
    assert!(held.is_ok());
    assert!(answers[0].is_err());
    let (reserved_b, _) = stored(&mut w, b, "test.rollback").await;
    assert_eq!(reserved_b, 0);
    let (reserved_c, events_c) = stored(&mut w, c, "test.after").await;
    let answered_ok = matches!(answers[1], Ok(Mutated::Done { .. }));
    assert_eq!(
        (reserved_c, events_c),
        if answered_ok { (1_000, 1) } else { (0, 0) },
        "the job after the failure was answered {:?} but the database holds reserved={reserved_c} events={events_c}",
        answers[1].as_ref().map(drop)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_commit_fails_every_job_of_the_batch_is_refused_and_none_of_its_writes_stays() {
    let mut w = world("commit").await;
    // A deferred foreign key is checked at COMMIT: the commit fails, the jobs had succeeded.
    side_exec(
        &mut w,
        "CREATE TABLE fault_deferred (id INTEGER PRIMARY KEY, payment_id INTEGER \
         REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    side_exec(
        &mut w,
        "CREATE TRIGGER fault_defer AFTER INSERT ON events WHEN NEW.kind = 'test.defer' \
         BEGIN INSERT INTO fault_deferred (payment_id) VALUES (-1); END",
    )
    .await;
    let (a, b, c) = (w.payments[0].id, w.payments[1].id, w.payments[2].id);
    let store: &'static Arc<dyn Store> = Box::leak(Box::new(w.kit.store.clone()));
    let before = store.commit_stats();
    let (held, answers) = one_batch(
        store,
        a,
        vec![
            store.mutate(b, reserve_with_event("test.defer")),
            store.mutate(c, reserve_with_event("test.plain")),
        ],
    )
    .await;
    assert!(held.is_ok());
    assert!(
        answers.iter().all(|a| a.is_err()),
        "no answer before the commit returned"
    );
    assert_eq!(stored(&mut w, b, "test.defer").await, (0, 0));
    assert_eq!(stored(&mut w, c, "test.plain").await, (0, 0));
    assert_eq!(store.commit_stats().commits - before.commits, 1);
    // The writer goes on: the next write commits.
    assert!(matches!(
        store.mutate(c, reserve_with_event("test.plain")).await,
        Ok(Mutated::Done { .. })
    ));
    assert_eq!(stored(&mut w, c, "test.plain").await, (1_000, 1));
}

/// The health check goes through the writer: while another connection holds the database's
/// write lock the writer cannot begin, and the check says so; once the lock is let go, the
/// probe that waited commits and the check passes again.
#[tokio::test]
async fn the_health_check_fails_while_the_writer_cannot_take_the_write_lock() {
    let mut w = world("health-lock").await;
    let store = w.kit.store.clone();
    store
        .health(std::time::Duration::from_secs(10))
        .await
        .expect("healthy at first");
    side_exec(&mut w, "BEGIN EXCLUSIVE").await;
    let locked = store
        .health(std::time::Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        locked.to_string().contains("writer has not committed"),
        "{locked}"
    );
    side_exec(&mut w, "ROLLBACK").await;
    // However long the waiting probe took, this one is answered after it: the writer is free.
    store
        .health(std::time::Duration::from_secs(60))
        .await
        .expect("healthy once the lock is gone");
}

/// A database file moved away while the gateway runs still takes writes through the open
/// connections (and loses them at the next start): the health check compares the file at the
/// path with the one opened, and passes again once it is back.
#[tokio::test]
async fn the_health_check_fails_while_the_database_file_is_not_at_its_path() {
    let w = world("health-moved").await;
    let store = w.kit.store.clone();
    let within = std::time::Duration::from_secs(10);
    store.health(within).await.expect("healthy at first");
    let path = match &w.kit.db {
        tillgate_testkit::KitDb::Sqlite(db) => db.path.clone(),
        tillgate_testkit::KitDb::Postgres(_) => unreachable!("the world is on SQLite"),
    };
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();
    let moved = store.health(within).await.unwrap_err();
    assert!(moved.to_string().contains("removed or replaced"), "{moved}");
    std::fs::rename(&aside, &path).unwrap();
    store.health(within).await.expect("healthy once it is back");
}
