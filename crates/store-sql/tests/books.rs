//! The books on both backends: a business day follows each merchant's time zone, a
//! settlement's sums are the sums of the booked rows (and its fees round half up), the rows
//! page the same whatever the page size, and a reconciliation's claim and cases hold across
//! nodes and re-runs.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tillgate_core::books::*;
use tillgate_core::closing;
use tillgate_core::service::{CancelOptions, PayRequest};
use tillgate_core::MerchantRecord;
use tillgate_domain::{BusinessDayRule, CancelIntent, MerchantZone};
use tillgate_testkit::{add_request, key, on_both_backends, refund_request, usd, Backend, Kit};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn day(text: &str) -> NaiveDate {
    parse_day(text).unwrap()
}

fn barcode() -> PayRequest {
    PayRequest {
        barcode: Some("281234567890123456".into()),
        vendor: Some("alipay".into()),
    }
}

/// Adds and pays a payment of `minor` USD now; answers its transaction number.
async fn paid(kit: &Kit, m: &MerchantRecord, reference: &str, minor: i64) -> String {
    let added = kit
        .app
        .add(m, add_request(reference, usd(minor)))
        .await
        .unwrap()
        .value;
    kit.app.pay(m, &key(&added), barcode()).await.unwrap();
    added.transaction_no
}

fn usd_totals(s: &Settlement) -> CurrencyTotals {
    s.currencies.get("USD").cloned().unwrap_or_default()
}

async fn a_business_day_follows_each_merchants_zone(backend: Backend) {
    // 15:30 UTC on 5 December is 23:30 in Shanghai and 16:30 in Amsterdam.
    let kit = Kit::builder("books-zones")
        .on(backend)
        .start_at(at("2026-12-05T15:30:00Z"))
        .build()
        .await;
    let sh = kit
        .merchant("400001", MerchantZone::parse("Asia/Shanghai").unwrap())
        .await;
    let ams = kit
        .merchant("400002", MerchantZone::parse("Europe/Amsterdam").unwrap())
        .await;
    paid(&kit, &sh, "sh-1", 1_000).await;
    paid(&kit, &ams, "ams-1", 1_000).await;
    // 16:30 UTC: 00:30 on the 6th in Shanghai, still the 5th in Amsterdam.
    kit.clock.advance(Duration::hours(1));
    paid(&kit, &sh, "sh-2", 2_000).await;
    paid(&kit, &ams, "ams-2", 2_000).await;
    // 23:30 UTC: 00:30 on the 6th in Amsterdam.
    kit.clock.advance(Duration::hours(7));
    paid(&kit, &sh, "sh-3", 8_000).await;
    paid(&kit, &ams, "ams-3", 4_000).await;
    let store = kit.store.as_ref();
    let sums = |s: &Settlement| {
        let t = usd_totals(s);
        (t.payments.count, t.payments.sum_minor)
    };
    let s = closing::settlement(store, &sh, None, day("2026-12-05"))
        .await
        .unwrap();
    assert_eq!(sums(&s), (1, 1_000));
    assert_eq!(s.from, at("2026-12-04T16:00:00Z"));
    let s = closing::settlement(store, &sh, None, day("2026-12-06"))
        .await
        .unwrap();
    assert_eq!(sums(&s), (2, 10_000));
    let s = closing::settlement(store, &ams, None, day("2026-12-05"))
        .await
        .unwrap();
    assert_eq!(sums(&s), (2, 3_000));
    assert_eq!(s.to, at("2026-12-05T23:00:00Z"));
    let s = closing::settlement(store, &ams, None, day("2026-12-06"))
        .await
        .unwrap();
    assert_eq!(sums(&s), (1, 4_000));
}

async fn settlement_sums_are_the_sums_of_the_rows_and_fees_round_half_up(backend: Backend) {
    let kit = Kit::builder("books-sums")
        .on(backend)
        .start_at(at("2026-12-05T09:00:00Z"))
        .build()
        .await;
    let m = kit.merchant("400003", MerchantZone::utc()).await;
    kit.store
        .set_fee_plan(m.id, Some(FeePlan::new(150, 30).unwrap()))
        .await
        .unwrap();
    // At 150 bps: 15.0, 16.5 (up to 17), 16.485 (down to 16), 16.515 (up to 17) minor units.
    let first = paid(&kit, &m, "sum-1", 1_000).await;
    paid(&kit, &m, "sum-2", 1_100).await;
    paid(&kit, &m, "sum-3", 1_099).await;
    let reversed = paid(&kit, &m, "sum-4", 1_101).await;
    // The sandbox wallet declines amounts ending in 51: no money, no fee.
    paid(&kit, &m, "sum-5", 1_051).await;
    let first = kit
        .store
        .payment_by_transaction_no(&first)
        .await
        .unwrap()
        .unwrap();
    kit.app
        .refund(&m, &key(&first), refund_request(usd(400), Some("sum-r1")))
        .await
        .unwrap();
    // The sandbox declines refunds ending in 61.
    kit.app
        .refund(&m, &key(&first), refund_request(usd(161), Some("sum-r2")))
        .await
        .unwrap();
    let reversed = kit
        .store
        .payment_by_transaction_no(&reversed)
        .await
        .unwrap()
        .unwrap();
    let rule = BusinessDayRule::calendar_day(m.zone);
    let cancel = |p| {
        let kit = &kit;
        let m = &m;
        async move {
            kit.app
                .cancel(
                    m,
                    &key(&p),
                    rule,
                    CancelIntent::Cancel,
                    CancelOptions::default(),
                )
                .await
                .unwrap()
        }
    };
    cancel(reversed).await;
    let unpaid = kit
        .app
        .add(&m, add_request("sum-6", usd(700)))
        .await
        .unwrap()
        .value;
    cancel(unpaid).await;
    // Another day's payment counts on its own day only.
    kit.clock.advance(Duration::days(1));
    paid(&kit, &m, "sum-7", 9_000).await;

    let date = day("2026-12-05");
    let s = closing::settlement(kit.store.as_ref(), &m, None, date)
        .await
        .unwrap();
    let t = usd_totals(&s);
    assert_eq!((t.payments.count, t.payments.sum_minor), (4, 4_300));
    assert_eq!((t.refunds.count, t.refunds.sum_minor), (1, 400));
    assert_eq!((t.reversals.count, t.reversals.sum_minor), (1, 1_101));
    assert_eq!((t.cancels.count, t.cancels.sum_minor), (1, 700));
    assert_eq!(t.fees_minor, 15 + 17 + 16 + 17 + 4 * 30);
    assert_eq!(t.net_minor, 4_300 - 400 - 1_101 - t.fees_minor);

    // The same sums from the rows themselves, read in pages of two.
    let (from, to) = m.zone.day_bounds(date);
    let mut rows = Vec::new();
    for kind in BookKind::ALL {
        let mut q = BookQuery::new(kind, from, to);
        q.merchant_id = Some(m.id);
        q.limit = 2;
        closing::each_entry(kit.store.as_ref(), q.clone(), &mut |e| {
            rows.push(e.clone());
            true
        })
        .await
        .unwrap();
        q.limit = 1000;
        let whole = kit.store.book_entries(&q).await.unwrap();
        let paged: Vec<_> = rows.iter().filter(|e| e.kind == kind).cloned().collect();
        assert_eq!(
            paged, whole,
            "{kind:?} pages the same in pages of 2 and of 1000"
        );
        assert_eq!(
            kit.store.count_book_entries(&q).await.unwrap(),
            whole.len() as i64
        );
    }
    let approved = |kind| {
        rows.iter()
            .filter(|e| e.kind == kind && e.outcome == BookOutcome::Approved)
            .collect::<Vec<_>>()
    };
    let payments = approved(BookKind::Payment);
    assert_eq!(
        payments.iter().map(|e| e.amount.minor()).sum::<i64>(),
        t.payments.sum_minor
    );
    assert_eq!(
        payments
            .iter()
            .map(|e| s.fee_plan.fee(e.amount.minor()))
            .sum::<i64>(),
        t.fees_minor
    );
    assert_eq!(
        approved(BookKind::Refund)
            .iter()
            .map(|e| e.amount.minor())
            .sum::<i64>(),
        t.refunds.sum_minor
    );
    // Declined operations are booked too (the wallet performed them), outside the sums.
    assert!(rows
        .iter()
        .any(|e| e.kind == BookKind::Payment && e.outcome == BookOutcome::Declined));
    assert!(rows
        .iter()
        .any(|e| e.kind == BookKind::Refund && e.outcome == BookOutcome::Declined));
}

async fn one_node_claims_a_days_run_and_a_rerun_opens_no_case_twice(backend: Backend) {
    let kit = Kit::builder("books-claim").on(backend).build().await;
    let store = kit.store.as_ref();
    let now = kit.app.now();
    let date = day("2026-12-05");
    let stale = now - closing::CLAIM_LEASE;
    let first = store
        .claim_reconciliation(date, "default", "node-a", now, stale, false)
        .await
        .unwrap();
    assert!(first.is_some());
    let second = store
        .claim_reconciliation(date, "default", "node-b", now, stale, false)
        .await
        .unwrap();
    assert_eq!(second, None, "another node is reconciling it");
    let case = NewCase {
        day: date,
        scope: "default".into(),
        finding: FindingKind::AmountMismatch,
        class: OperationClass::Refund,
        number: "R1".into(),
        transaction_no: "T1".into(),
        merchant_no: Some("400004".into()),
        gateway: Some("{\"amountMinor\":500}".into()),
        wallet: Some("{\"amountMinor\":600}".into()),
        opened_at: now,
    };
    let run = RunRecord {
        id: first.unwrap(),
        day: date,
        scope: "default".into(),
        node: "node-a".into(),
        status: "done".into(),
        claimed_at: now,
        finished_at: Some(now),
        gateway_lines: 3,
        wallet_lines: 3,
        matched: 2,
        mismatched: 1,
        error: None,
    };
    assert_eq!(
        store
            .finish_reconciliation(&run, vec![case.clone()])
            .await
            .unwrap(),
        1
    );
    let done = store
        .reconciliation(date, "default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.status.as_str(), done.matched), ("done", 2));
    // Done: the schedule does not take it again; an operator's run does, and opens nothing new.
    assert_eq!(
        store
            .claim_reconciliation(
                date,
                "default",
                "node-b",
                now,
                now + Duration::hours(1),
                false
            )
            .await
            .unwrap(),
        None
    );
    let again = store
        .claim_reconciliation(date, "default", "cli", now, stale, true)
        .await
        .unwrap();
    assert_eq!(again, Some(run.id));
    assert_eq!(
        store.finish_reconciliation(&run, vec![case]).await.unwrap(),
        0
    );
    assert_eq!(store.open_cases().await.unwrap(), 1);
    let cases = store
        .cases(&CaseFilter {
            status: Some(CaseStatus::Open),
            day: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(cases.len(), 1);
    assert!(store
        .close_case(cases[0].id, "refunded by hand", now)
        .await
        .unwrap());
    assert!(!store.close_case(cases[0].id, "twice", now).await.unwrap());
    assert_eq!(store.open_cases().await.unwrap(), 0);
    let closed = store.case(cases[0].id).await.unwrap().unwrap();
    assert_eq!(closed.status, CaseStatus::Closed);
    assert_eq!(closed.note.as_deref(), Some("refunded by hand"));
    // A claim left by a node that died is taken once it is stale.
    let other = day("2026-12-06");
    store
        .claim_reconciliation(other, "default", "node-a", now, stale, false)
        .await
        .unwrap()
        .unwrap();
    let later = now + closing::CLAIM_LEASE + Duration::minutes(1);
    assert!(store
        .claim_reconciliation(
            other,
            "default",
            "node-b",
            later,
            later - closing::CLAIM_LEASE,
            false
        )
        .await
        .unwrap()
        .is_some());
}

on_both_backends!(
    a_business_day_follows_each_merchants_zone,
    settlement_sums_are_the_sums_of_the_rows_and_fees_round_half_up,
    one_node_claims_a_days_run_and_a_rerun_opens_no_case_twice,
);
