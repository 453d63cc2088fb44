//! Closing a day: a merchant's settlement, and the reconciliation of a wallet's statement with
//! what the gateway booked (see `crate::books` for the rules; this module reads the store and
//! the wallet and records the result).

use crate::books::*;
use crate::model::MerchantRecord;
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tillgate_domain::MerchantZone;

/// A wallet that keeps a daily statement (the HTTP wallet protocol's `/v1/statement`).
#[async_trait]
pub trait StatementSource: Send + Sync + 'static {
    /// Every line of the UTC calendar day `date`; `Err` says why it could not be read whole.
    async fn statement(&self, date: NaiveDate) -> Result<Vec<StatementLine>, String>;
}

/// Which merchants' operations go through a wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeMerchants {
    /// The merchants that have this wallet of their own.
    Only(BTreeSet<String>),
    /// Every merchant but those with a wallet of their own (the default wallet).
    AllBut(BTreeSet<String>),
}

impl ScopeMerchants {
    pub fn includes(&self, merchant_no: &str) -> bool {
        match self {
            ScopeMerchants::Only(set) => set.contains(merchant_no),
            ScopeMerchants::AllBut(set) => !set.contains(merchant_no),
        }
    }
}

/// One wallet to reconcile: its name in the books (`default`, `merchant:700001`), its statement,
/// and the merchants it serves.
#[derive(Clone)]
pub struct Scope {
    pub name: String,
    pub wallet: Arc<dyn StatementSource>,
    pub merchants: ScopeMerchants,
}

/// Why a reconciliation did not run through.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the wallet's statement could not be read: {0}")]
    Statement(String),
}

/// What one reconciliation of a day and a wallet came to.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub run: RunRecord,
    /// Cases this run opened (a run of a day already reconciled opens none).
    pub opened: u64,
    pub findings: Vec<Finding>,
}

/// How long a run's claim holds: a node that died while reconciling leaves its claim to be
/// taken again after this.
pub const CLAIM_LEASE: Duration = Duration::minutes(15);

/// The UTC instants of a wallet's statement day.
pub fn statement_day(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    MerchantZone::utc().day_bounds(date)
}

/// Every entry of `query` (all its pages), passed to `each` one at a time: memory stays that of
/// one page whatever the size of the range.
pub async fn each_entry(
    store: &dyn Store,
    mut query: BookQuery,
    each: &mut (dyn FnMut(&BookEntry) -> bool + Send),
) -> Result<(), StoreError> {
    loop {
        let page = store.book_entries(&query).await?;
        for e in &page {
            if !each(e) {
                return Ok(());
            }
        }
        if !query.next_after(&page) {
            return Ok(());
        }
    }
}

/// The settlement of `merchant`'s business day `date` (in its time zone), of one store or all.
pub async fn settlement(
    store: &dyn Store,
    merchant: &MerchantRecord,
    store_no: Option<&str>,
    date: NaiveDate,
) -> Result<Settlement, StoreError> {
    let plan = store.fee_plan(merchant.id).await?.unwrap_or_default();
    let mut s = Settlement::new(date, &merchant.merchant_no, store_no, merchant.zone, plan);
    for kind in BookKind::ALL {
        let mut q = BookQuery::new(kind, s.from, s.to);
        q.merchant_id = Some(merchant.id);
        q.store_no = store_no.map(str::to_owned);
        each_entry(store, q, &mut |e| {
            s.add(e);
            true
        })
        .await?;
    }
    Ok(s)
}

/// Reconciles the UTC day `date` of one wallet: claims the run (`None` when another node has
/// it or it is done and `again` is false), reads the wallet's statement of the day and of the
/// days around it, matches them with the gateway's entries, and records the run and a case per
/// finding. Running it again opens no case twice.
pub async fn reconcile(
    store: &dyn Store,
    scope: &Scope,
    date: NaiveDate,
    node: &str,
    now: DateTime<Utc>,
    again: bool,
) -> Result<Option<Reconciled>, ReconcileError> {
    let Some(run_id) = store
        .claim_reconciliation(date, &scope.name, node, now, now - CLAIM_LEASE, again)
        .await?
    else {
        return Ok(None);
    };
    let mut run = RunRecord {
        id: run_id,
        day: date,
        scope: scope.name.clone(),
        node: node.to_owned(),
        status: "failed".into(),
        claimed_at: now,
        finished_at: Some(now),
        gateway_lines: 0,
        wallet_lines: 0,
        matched: 0,
        mismatched: 0,
        error: None,
    };
    match match_day(store, scope, date).await {
        Ok(matched) => {
            run.status = "done".into();
            run.gateway_lines = matched.gateway_lines;
            run.wallet_lines = matched.wallet_lines;
            run.matched = matched.matched;
            run.mismatched = matched.findings.len() as i64;
            let cases = matched
                .findings
                .iter()
                .map(|f| NewCase::of(f, date, &scope.name, now))
                .collect();
            let opened = store.finish_reconciliation(&run, cases).await?;
            Ok(Some(Reconciled {
                run,
                opened,
                findings: matched.findings,
            }))
        }
        Err(e) => {
            run.error = Some(e.to_string());
            store.finish_reconciliation(&run, Vec::new()).await?;
            Err(e)
        }
    }
}

async fn match_day(
    store: &dyn Store,
    scope: &Scope,
    date: NaiveDate,
) -> Result<Matched, ReconcileError> {
    let (from, to) = statement_day(date);
    let mut gateway = Vec::new();
    for kind in BookKind::ALL {
        let q = BookQuery::new(kind, from, to);
        each_entry(store, q, &mut |e| {
            if e.at_wallet && scope.merchants.includes(&e.merchant_no) {
                gateway.push(e.clone());
            }
            true
        })
        .await?;
    }
    let statement = scope
        .wallet
        .statement(date)
        .await
        .map_err(ReconcileError::Statement)?;
    let mut nearby = Vec::new();
    for d in [date.pred_opt(), date.succ_opt()].into_iter().flatten() {
        nearby.extend(
            scope
                .wallet
                .statement(d)
                .await
                .map_err(ReconcileError::Statement)?,
        );
    }
    let ours: BTreeSet<LineKey> = gateway.iter().map(BookEntry::key).collect();
    let mut elsewhere = BTreeMap::new();
    for line in &statement {
        let key = line.key();
        if ours.contains(&key) || elsewhere.contains_key(&key) {
            continue;
        }
        let found = store
            .book_entry_of(&key)
            .await?
            .filter(|e| e.at_wallet && scope.merchants.includes(&e.merchant_no));
        elsewhere.insert(key, found);
    }
    Ok(reconcile_lines(&gateway, &statement, &nearby, &|k| {
        elsewhere.get(k).cloned().flatten()
    }))
}
