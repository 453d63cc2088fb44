//! The PostgreSQL writers (group commit) under concurrency and faults: every change lands
//! exactly once, a failing change in a batch leaves the others alone, and a batch whose
//! transaction breaks tells every caller so, never a false success.

use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::store::{Mutated, Rejection, Writes};
use tillgate_core::{LifecycleError, PaymentRecord, PaymentStore, Store, StoreError};
use tillgate_domain::{MerchantZone, RefundRejected};
use tillgate_store_postgres::{PgStore, WriterOptions};
use tillgate_testkit::{key, refund_request, usd, Backend, Kit};

async fn kit(name: &str) -> Kit {
    Kit::builder(name).on(Backend::Postgres).build().await
}

/// Many concurrent refunds, on a few payments and on one with room for only some of them:
/// every admitted refund is stored once, none beyond the refundable amount, and the totals on
/// the payments are the sums of their refund rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn concurrent_refunds_land_exactly_once_and_never_exceed_the_payment() {
    let kit = Arc::new(kit("writer-refunds").await);
    let merchant = kit.merchant("100301", MerchantZone::utc()).await;
    let mut wide = Vec::new();
    for i in 0..4 {
        wide.push(
            kit.added_and_paid(&merchant, &format!("wide-{i}"), usd(100_000))
                .await,
        );
    }
    let narrow = kit.added_and_paid(&merchant, "narrow", usd(1_000)).await;

    let mut tasks = Vec::new();
    for n in 0..48 {
        let (kit, merchant) = (kit.clone(), merchant.clone());
        let target = if n % 3 == 0 {
            narrow.clone()
        } else {
            wide[n % 4].clone()
        };
        tasks.push(tokio::spawn(async move {
            let reference = format!("ref-{n}");
            let answer = kit
                .app
                .refund(
                    &merchant,
                    &key(&target),
                    refund_request(usd(100), Some(&reference)),
                )
                .await;
            (target.id, answer)
        }));
    }
    let mut admitted = std::collections::HashMap::<i64, i64>::new();
    for task in tasks {
        let (payment_id, answer) = task.await.unwrap();
        match answer {
            Ok(done) => *admitted.entry(payment_id).or_default() += done.value.1.amount.minor(),
            Err(LifecycleError::Rejected(Rejection::Refund(
                RefundRejected::ExceedsRefundable { .. },
            ))) => assert_eq!(payment_id, narrow.id, "only the narrow payment runs out"),
            Err(e) => panic!("refund of payment {payment_id}: {e}"),
        }
    }
    assert_eq!(
        admitted[&narrow.id], 1_000,
        "the narrow payment is refunded in full"
    );
    for p in wide.iter().chain([&narrow]) {
        let stored = kit.store.payment_by_id(p.id).await.unwrap().unwrap();
        let rows = kit.store.refunds_of(p.id).await.unwrap();
        let sum: i64 = rows.iter().map(|r| r.amount.minor()).sum();
        assert_eq!(stored.payment.refunded().minor(), sum, "payment {}", p.id);
        assert_eq!(stored.payment.reserved().minor(), 0, "payment {}", p.id);
        assert_eq!(sum, admitted.get(&p.id).copied().unwrap_or(0));
        let mut references: Vec<_> = rows.iter().map(|r| r.refund_reference.clone()).collect();
        references.sort();
        references.dedup();
        assert_eq!(references.len(), rows.len(), "one row per reference");
    }
    let stats = kit.store.commit_stats();
    assert!(stats.operations >= stats.commits);
}

/// Concurrent requests with one reference, mixed into batches with other refunds: the taken
/// key refuses only its own write, the other writes of the batch commit, and the reference
/// yields one refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_taken_key_in_a_batch_refuses_only_its_own_write() {
    let kit = Arc::new(kit("writer-keys").await);
    let merchant = kit.merchant("100302", MerchantZone::utc()).await;
    let shared = kit.added_and_paid(&merchant, "shared", usd(100_000)).await;
    let other = kit.added_and_paid(&merchant, "other", usd(100_000)).await;
    let mut tasks = Vec::new();
    for n in 0..32 {
        let (kit, merchant) = (kit.clone(), merchant.clone());
        let (target, reference) = if n % 2 == 0 {
            (shared.clone(), "the-same".to_owned())
        } else {
            (other.clone(), format!("own-{n}"))
        };
        tasks.push(tokio::spawn(async move {
            let answer = kit
                .app
                .refund(
                    &merchant,
                    &key(&target),
                    refund_request(usd(250), Some(&reference)),
                )
                .await;
            (reference, answer)
        }));
    }
    for task in tasks {
        let (reference, answer) = task.await.unwrap();
        match answer {
            Ok(_) => {}
            // The first request with the key is still between its two commits.
            Err(LifecycleError::InProgress) if reference == "the-same" => {}
            Err(e) => panic!("{reference}: {e}"),
        }
    }
    let shared_rows = kit.store.refunds_of(shared.id).await.unwrap();
    assert_eq!(shared_rows.len(), 1, "one refund for the shared reference");
    let other_rows = kit.store.refunds_of(other.id).await.unwrap();
    assert_eq!(other_rows.len(), 16, "every refund with a key of its own");
    let stored = kit.store.payment_by_id(other.id).await.unwrap().unwrap();
    assert_eq!(stored.payment.refunded().minor(), 16 * 250);
}

/// A second store on the kit's database with one writer, so that the test knows which
/// connection commits.
async fn one_writer(kit: &Kit) -> Arc<PgStore> {
    let options = WriterOptions {
        writers: 1,
        queue: 64,
        batch: 64,
    };
    Arc::new(
        PgStore::open_with_writers(&kit.database_url(), 4, options)
            .await
            .unwrap(),
    )
}

/// A change that only appends an event named `kind`, counting its decision in `decided`.
fn touch(
    store: &Arc<PgStore>,
    payment: &PaymentRecord,
    kind: &'static str,
    decided: &Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Result<Mutated, StoreError>> {
    let (store, payment, decided) = (store.clone(), payment.clone(), decided.clone());
    let at = payment.updated_at;
    tokio::spawn(async move {
        store
            .mutate_from(
                &payment,
                Box::new(move |_| {
                    decided.fetch_add(1, Ordering::SeqCst);
                    Ok(Writes::at(at).event(kind, String::new()))
                }),
            )
            .await
    })
}

/// Waits until a backend of `database` waits for a row lock, and answers its pid.
async fn lock_waiter(admin: &mut PgConnection, database: &str) -> i32 {
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(database)
        .fetch_optional(&mut *admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` decisions were made (each change is queued right after its decision).
async fn decided(counter: &AtomicUsize, n: usize) {
    while counter.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The decision and the queueing are one step of the same task; let it take it.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn events(store: &PgStore, payment_id: i64, kind: &str) -> usize {
    store
        .events_of(payment_id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// A batch whose connection is terminated before its COMMIT: every change in it is answered
/// with an error and none is stored; the writer then goes on with a new connection, and what
/// it acknowledges afterwards is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_broken_batch_fails_every_change_in_it_and_loses_nothing_acknowledged() {
    let kit = kit("writer-broken").await;
    let merchant = kit.merchant("100303", MerchantZone::utc()).await;
    let mut p = Vec::new();
    for name in ["gate", "first", "held", "last", "after"] {
        p.push(kit.added_and_paid(&merchant, name, usd(1_000)).await);
    }
    let (gate, first, held, last, after) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let store = one_writer(&kit).await;
    let url = kit.database_url();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    // Two connections of the test hold the rows of `gate` and `held`.
    let mut gate_lock = PgConnection::connect(&url).await.unwrap();
    gate_lock.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .bind(gate.id)
        .execute(&mut gate_lock)
        .await
        .unwrap();
    let mut held_lock = PgConnection::connect(&url).await.unwrap();
    held_lock.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .bind(held.id)
        .execute(&mut held_lock)
        .await
        .unwrap();

    // The writer blocks on `gate` while three changes queue behind it: the next batch.
    let counter = Arc::new(AtomicUsize::new(0));
    let gated = touch(&store, gate, "test.gate", &counter);
    lock_waiter(&mut admin, &database).await;
    let queued = [
        touch(&store, first, "test.batch", &counter),
        touch(&store, held, "test.batch", &counter),
        touch(&store, last, "test.batch", &counter),
    ];
    decided(&counter, 4).await;
    gate_lock.execute("COMMIT").await.unwrap();
    assert!(matches!(gated.await.unwrap(), Ok(Mutated::Done { .. })));
    // The batch ran `first` and now waits for `held`: its connection goes.
    let pid = lock_waiter(&mut admin, &database).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
    for task in queued {
        let answer = task.await.unwrap();
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "every change of the broken batch fails: {answer:?}"
        );
    }
    held_lock.execute("COMMIT").await.unwrap();
    for payment in [first, held, last] {
        assert_eq!(events(&store, payment.id, "test.batch").await, 0);
    }
    assert_eq!(events(&store, gate.id, "test.gate").await, 1);

    // The writer goes on: what it acknowledges now is stored.
    let fresh = store.payment_by_id(after.id).await.unwrap().unwrap();
    let again = touch(&store, &fresh, "test.after", &counter).await.unwrap();
    assert!(matches!(again, Ok(Mutated::Done { .. })), "{again:?}");
    assert_eq!(events(&store, after.id, "test.after").await, 1);
    store.close().await;
}

/// A change whose statement fails inside a batch (here: a refund whose key another refund of
/// the same batch takes first) is refused alone; the other changes of the batch commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_failing_change_leaves_the_rest_of_its_batch_committed() {
    let kit = kit("writer-failing").await;
    let merchant = kit.merchant("100304", MerchantZone::utc()).await;
    let mut p = Vec::new();
    for name in ["gate", "a", "b", "c"] {
        p.push(kit.added_and_paid(&merchant, name, usd(1_000)).await);
    }
    let store = one_writer(&kit).await;
    let url = kit.database_url();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    let mut gate_lock = PgConnection::connect(&url).await.unwrap();
    gate_lock.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .bind(p[0].id)
        .execute(&mut gate_lock)
        .await
        .unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let gated = touch(&store, &p[0], "test.gate", &counter);
    lock_waiter(&mut admin, &database).await;

    // Behind the gate: a refund of `a` keyed "k", a change of `b`, a refund of `c` with the
    // same key "k" (refused by the unique index), and another change of `b`'s neighbour.
    let refund = |payment: &PaymentRecord, number: &'static str| {
        let (store, payment, counter) = (store.clone(), payment.clone(), counter.clone());
        let at = payment.updated_at;
        tokio::spawn(async move {
            store
                .mutate_from(
                    &payment,
                    Box::new(move |rec| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        rec.payment
                            .reserve_refund(usd(100))
                            .map_err(Rejection::Refund)?;
                        let mut w = Writes::at(at).event("refund.requested", "100".into());
                        w.refund = Some(tillgate_core::store::RefundWrite::Insert(
                            tillgate_core::NewRefund {
                                refund_no: number.to_owned(),
                                refund_reference: Some("k".into()),
                                amount: usd(100),
                                fingerprint: "f".into(),
                                notify_url: None,
                                extra: None,
                            },
                        ));
                        Ok(w)
                    }),
                )
                .await
        })
    };
    let keyed = refund(&p[1], "900000000000000001");
    decided(&counter, 2).await;
    let plain = touch(&store, &p[2], "test.batch", &counter);
    decided(&counter, 3).await;
    let clash = refund(&p[3], "900000000000000002");
    decided(&counter, 4).await;
    gate_lock.execute("COMMIT").await.unwrap();
    assert!(matches!(gated.await.unwrap(), Ok(Mutated::Done { .. })));

    let keyed = keyed.await.unwrap();
    assert!(
        matches!(
            &keyed,
            Ok(Mutated::Done {
                refund: Some(_),
                ..
            })
        ),
        "{keyed:?}"
    );
    let plain = plain.await.unwrap();
    assert!(matches!(plain, Ok(Mutated::Done { .. })), "{plain:?}");
    let clash = clash.await.unwrap();
    assert!(
        matches!(
            clash,
            Err(StoreError::Conflict(
                tillgate_core::store::Conflict::UniqueKey
            ))
        ),
        "{clash:?}"
    );
    assert_eq!(store.refunds_of(p[1].id).await.unwrap().len(), 1);
    assert_eq!(events(&store, p[2].id, "test.batch").await, 1);
    assert!(store.refunds_of(p[3].id).await.unwrap().is_empty());
    let untouched = store.payment_by_id(p[3].id).await.unwrap().unwrap();
    assert_eq!(untouched.payment.reserved().minor(), 0);
    assert_eq!(untouched.version, p[3].version);
    store.close().await;
}
