//! The notification lease on a long backlog: a merchant at its limit is skipped whatever it has
//! waiting, the others get their rows oldest first, a row never overtakes an earlier pending
//! notification of its payment, and the statement reads the outbox through its partial index
//! only (its cost must not grow with one merchant's backlog: the soak showed a lease that walked
//! every pending row holding the single writer for tens of milliseconds at 45 000 rows).

use chrono::{TimeZone, Utc};
use sqlx::{ConnectOptions, Row};
use std::str::FromStr;
use tillgate_core::NotificationClaim;
use tillgate_domain::MerchantZone;
use tillgate_testkit::Kit;

/// A second connection, to write rows behind the store's back; it does not enforce the
/// payments foreign key, so the rows need no payments of their own.
async fn side(kit: &Kit) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::from_str(&kit.database_url())
        .unwrap()
        .foreign_keys(false)
        .connect()
        .await
        .unwrap()
}

/// Rows of `merchant`, one per payment from `first_payment`, due at `due_from` + n ms.
async fn backlog(
    side: &mut sqlx::SqliteConnection,
    merchant: i64,
    first_payment: i64,
    rows: i64,
    due_from: i64,
) {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?4) \
         INSERT INTO outbox (merchant_id, payment_id, topic, target_url, snapshot, status, \
           next_attempt_at, created_at, dialect) \
         SELECT ?1, ?2 + i, 'payment.paid', 'http://127.0.0.1:9/', '{}', 'pending', ?3 + i, ?3, \
           'pockyt' FROM n",
    )
    .bind(merchant)
    .bind(first_payment)
    .bind(due_from)
    .bind(rows)
    .execute(side)
    .await
    .unwrap();
}

fn claim(held: Vec<(i64, i64)>) -> NotificationClaim {
    NotificationClaim {
        now: Utc.timestamp_millis_opt(10_000_000).unwrap(),
        lease_until: Utc.timestamp_millis_opt(10_060_000).unwrap(),
        limit: 64,
        per_merchant: 4,
        held,
    }
}

#[tokio::test]
async fn a_merchant_at_its_limit_is_skipped_however_long_its_backlog() {
    let kit = Kit::builder("outbox-lease").build().await;
    let a = kit.merchant("930001", MerchantZone::utc()).await;
    let b = kit.merchant("930002", MerchantZone::utc()).await;
    let mut side = side(&kit).await;
    backlog(&mut side, a.id, 1_000_000, 20_000, 1_000).await;
    backlog(&mut side, b.id, 2_000_000, 3, 5_000_000).await;
    // A later notification of one of B's payments, due before everything: it waits for the
    // earlier one of its payment all the same.
    backlog(&mut side, b.id, 2_000_000, 1, 0).await;

    // This node posts four of A's already: only B's three (not the fourth, behind its
    // payment's earlier one) are leased.
    let got = kit
        .store
        .claim_notifications(&claim(vec![(a.id, 4)]))
        .await
        .unwrap();
    let ids: Vec<(i64, i64)> = got.iter().map(|r| (r.merchant_id, r.payment_id)).collect();
    assert_eq!(
        ids,
        vec![(b.id, 2_000_000), (b.id, 2_000_001), (b.id, 2_000_002)],
        "only B's rows, oldest due first, none overtaking its payment's earlier one"
    );

    // With one slot of A free, A gets exactly one row: its oldest.
    let got = kit
        .store
        .claim_notifications(&claim(vec![(a.id, 3)]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].merchant_id, got[0].payment_id), (a.id, 1_000_000));

    // Nothing held: A fills its four slots with the next rows; B's are leased already.
    let got = kit.store.claim_notifications(&claim(vec![])).await.unwrap();
    let payments: Vec<i64> = got.iter().map(|r| r.payment_id).collect();
    assert_eq!(payments, vec![1_000_001, 1_000_002, 1_000_003, 1_000_004]);
    assert!(got.iter().all(|r| r.merchant_id == a.id));

    let leased: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE leased_until IS NOT NULL")
        .fetch_one(&mut side)
        .await
        .unwrap()
        .get(0);
    assert_eq!(leased, 8, "exactly the rows answered are leased");
}

#[tokio::test]
async fn the_lease_reads_the_outbox_through_its_partial_index_only() {
    let kit = Kit::builder("outbox-lease-plan").build().await;
    let mut side = side(&kit).await;
    let sql = format!(
        "EXPLAIN QUERY PLAN {}",
        tillgate_store_sql::claim_sql(false)
    );
    let plan: Vec<String> = sqlx::query(&sql)
        .bind(10_000_000_i64)
        .bind(10_060_000_i64)
        .bind(64_i64)
        .bind(4_i64)
        .bind("{}")
        .fetch_all(&mut side)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect();
    let reads: Vec<&String> = plan
        .iter()
        .filter(|d| d.contains("outbox") || d.starts_with("SCAN o") || d.starts_with("SCAN x"))
        .collect();
    assert!(!reads.is_empty(), "plan: {plan:#?}");
    for read in &reads {
        // A SCAN of `outbox_pending` is the listing's first probe (ORDER BY … LIMIT 1).
        let by_index = read.contains("INDEX outbox_pending")
            || read.contains("USING INDEX outbox_payment")
            || read.contains("INTEGER PRIMARY KEY");
        assert!(by_index, "{read} walks the outbox; plan: {plan:#?}");
    }
    assert!(
        reads
            .iter()
            .any(|d| d.contains("outbox_pending (merchant_id=? AND next_attempt_at<?)")),
        "a merchant's rows are read from its range of the index; plan: {plan:#?}"
    );
}

/// A long read (here the backlog's counts over 300 000 pending rows) hands the worker's other
/// tasks over while it runs: on a runtime of one worker, a task spawned just before it has run
/// by the time it returns. Were the read to hold the worker, that task could not have started.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_long_read_does_not_hold_the_runtimes_worker() {
    let kit = Kit::builder("long-read").build().await;
    let a = kit.merchant("930003", MerchantZone::utc()).await;
    let mut side = side(&kit).await;
    backlog(&mut side, a.id, 3_000_000, 300_000, 1_000).await;
    // Both tasks queue on the one worker, the read first.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let store = kit.store.clone();
    let read = tokio::spawn(async move {
        let counts = store
            .backlog(Utc.timestamp_millis_opt(10_000_000).unwrap())
            .await
            .unwrap();
        (counts.notifications_pending, rx.try_recv().is_ok())
    });
    tokio::spawn(async move {
        let _ = tx.send(());
    });
    let (pending, other_ran) = read.await.unwrap();
    assert_eq!(pending, 300_000);
    assert!(
        other_ran,
        "the task queued behind the read waited for it: the read held the worker"
    );
}
