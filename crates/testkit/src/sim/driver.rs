//! The simulation's driver: boots the gateway on a SQLite file, draws each step from the seed,
//! runs it to its end (or to a crash), and keeps the model the checks compare against.

use super::check::Seen;
use super::world::{Callback, Prng, SimHub, SimWallet, TerminalPlan, World};
use super::SimReport;
use crate::TempDb;
use chrono::Duration;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tillgate_core::service::{
    AddRequest, CancelOptions, LifecycleError, NotifyTo, PayRequest, RefundKey, RefundRequest,
};
use tillgate_core::terminal::TerminalResult;
use tillgate_core::{
    Credentials, Dialect, Lifecycle, LifecycleConfig, MerchantRecord, PaymentKey, Rejection,
    SecretBox, Store, StoreError,
};
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelState, ChannelOutcome, Clock, Currency, Key, ManualClock,
    MerchantZone, Money, PaymentState, RefundState,
};
use tillgate_store_sqlite::SqliteStore;
use tokio::sync::mpsc;

/// The gateway as one process: dropped whole when it crashes.
pub(super) struct Gateway {
    pub app: Arc<Lifecycle>,
    pub store: Arc<dyn Store>,
    pub hub: Arc<SimHub>,
    events: tokio::task::JoinHandle<()>,
}

pub(super) struct Merchant {
    pub rec: MerchantRecord,
    pub dialect: Dialect,
    pub currency: Currency,
    pub store_no: String,
    pub tid: String,
    pub url: String,
}

/// A payment the simulation added, and what it saw of it.
pub(super) struct Pay {
    pub m: usize,
    pub add: AddRequest,
    pub transaction_no: String,
    pub id: i64,
    /// The last pay request sent, for its idempotent replay.
    pub pay: Option<PayRequest>,
    pub seen: Seen,
}

/// A merchant refund reference in use.
struct RefundUse {
    p: usize,
    amount: Money,
    refund_no: Option<String>,
}

pub(super) struct Sim {
    seed: u64,
    rng: Prng,
    pub world: Arc<Mutex<World>>,
    wallet: Arc<SimWallet>,
    clock: Arc<ManualClock>,
    db: TempDb,
    key_hex: String,
    gw: Option<Gateway>,
    pub merchants: Vec<Merchant>,
    pub pays: Vec<Pay>,
    refund_keys: HashMap<(usize, String), RefundUse>,
    trace: Arc<Mutex<Vec<String>>>,
    hasher: std::collections::hash_map::DefaultHasher,
    /// Payments the current step touched (checked after it).
    pub touched: Vec<usize>,
    pub report: SimReport,
    next_ref: u64,
    step_no: usize,
    mix: super::Mix,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error a request may answer; anything else (a store failure, a corrupt row) is a bug.
fn expected(e: &LifecycleError, what: &str) {
    match e {
        LifecycleError::Store(_) => panic!("{what}: the store failed: {e}"),
        LifecycleError::NotFound => panic!("{what}: the merchant's own payment was not found"),
        _ => {}
    }
}

async fn boot(
    db: &TempDb,
    key_hex: &str,
    clock: Arc<ManualClock>,
    wallet: Arc<SimWallet>,
    world: Arc<Mutex<World>>,
) -> Gateway {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db.url())
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.url())),
    );
    let secrets = SecretBox::from_hex(key_hex).unwrap_or_else(|e| panic!("master key: {e}"));
    let credentials = Arc::new(Credentials::new(
        store.clone(),
        secrets,
        clock.clone(),
        std::time::Duration::from_secs(60),
    ));
    let (events, reports) = mpsc::channel(64);
    let hub = Arc::new(SimHub::new(events, world));
    let app = Lifecycle::new(
        store.clone(),
        wallet,
        clock,
        credentials,
        LifecycleConfig::default(),
    )
    .with_hub(hub.clone());
    let app = Arc::new(app);
    let events = tokio::spawn(app.clone().apply_terminal_events(reports));
    Gateway {
        app,
        store,
        hub,
        events,
    }
}

const DIALECTS: [Dialect; 3] = [Dialect::Pockyt, Dialect::Unified, Dialect::YabandPay];
const ZONES: [&str; 4] = [
    "UTC",
    "Europe/Amsterdam",
    "Asia/Shanghai",
    "America/New_York",
];
const CURRENCIES: [&str; 4] = ["USD", "EUR", "CNY", "JPY"];

/// The steps and their weights.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Add,
    AddReplay,
    AddKeyReused,
    Pay,
    PayReplay,
    TerminalSale,
    Refund,
    RefundReplay,
    RefundKeyReused,
    Cancel,
    Query,
    QueryOtherMerchant,
    Callback,
    TerminalReport,
    Janitor,
    Crash,
    ClockJump,
}

pub(super) const STEPS: [(Step, u64); 17] = [
    (Step::Add, 14),
    (Step::AddReplay, 3),
    (Step::AddKeyReused, 2),
    (Step::Pay, 14),
    (Step::PayReplay, 3),
    (Step::TerminalSale, 6),
    (Step::Refund, 16),
    (Step::RefundReplay, 4),
    (Step::RefundKeyReused, 2),
    (Step::Cancel, 8),
    (Step::Query, 4),
    (Step::QueryOtherMerchant, 2),
    (Step::Callback, 8),
    (Step::TerminalReport, 4),
    (Step::Janitor, 5),
    (Step::Crash, 2),
    (Step::ClockJump, 1),
];

impl Sim {
    pub async fn new(seed: u64, mix: super::Mix, trace: Arc<Mutex<Vec<String>>>) -> Sim {
        let world = Arc::new(Mutex::new(World::new(seed)));
        let wallet = Arc::new(SimWallet::new(world.clone()));
        let clock = Arc::new(ManualClock::new(crate::start()));
        let db = TempDb::new(&format!("sim-{seed}"));
        let key_hex = SecretBox::generate_key_hex().expose().clone();
        let gw = boot(&db, &key_hex, clock.clone(), wallet.clone(), world.clone()).await;
        let mut rng = Prng::new(seed);
        let mut merchants = Vec::new();
        let n = 3 + rng.below(3) as usize;
        for i in 0..n {
            let merchant_no = format!("7{:05}", i + 1);
            let zone =
                MerchantZone::parse(ZONES[rng.below(4) as usize]).unwrap_or(MerchantZone::utc());
            let rec = gw
                .app
                .credentials()
                .create_merchant(&merchant_no, zone, true)
                .await
                .unwrap_or_else(|e| panic!("merchant {merchant_no}: {e}"));
            let dialect = DIALECTS[i % 3];
            let code = if dialect == Dialect::YabandPay {
                "EUR"
            } else {
                CURRENCIES[rng.below(4) as usize]
            };
            merchants.push(Merchant {
                rec,
                dialect,
                currency: Currency::from_code(code).expect("a known currency"),
                store_no: format!("30{i:04}"),
                tid: format!("T{merchant_no}"),
                url: format!("http://127.0.0.1:9/notify/{merchant_no}"),
            });
        }
        Sim {
            seed,
            rng,
            world,
            wallet,
            clock,
            db,
            key_hex,
            gw: Some(gw),
            merchants,
            pays: Vec::new(),
            refund_keys: HashMap::new(),
            trace,
            hasher: Default::default(),
            touched: Vec::new(),
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            next_ref: 0,
            step_no: 0,
            mix,
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("the gateway runs")
    }

    pub fn app(&self) -> Arc<Lifecycle> {
        self.gw().app.clone()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.gw().store.clone()
    }

    /// Records a step and its outcome in the trace (and its digest).
    pub fn note(&mut self, line: String) {
        let line = format!("step {}: {line}", self.step_no);
        line.hash(&mut self.hasher);
        lock(&self.trace).push(line);
    }

    pub async fn run(mut self, steps: usize) -> SimReport {
        let weights: Vec<u64> = STEPS.iter().map(|(s, w)| self.mix.weight(*s, *w)).collect();
        let merchants = self.merchants.len();
        self.note(format!("seed {}: {merchants} merchants", self.seed));
        for step in 0..steps {
            let secs = self.rng.below(90) as i64;
            self.clock.advance(Duration::seconds(secs));
            self.touched.clear();
            self.step_no = step;
            let kind = STEPS[self.rng.weighted(&weights)].0;
            let all = self.step(kind).await;
            self.check(all || step % 16 == 15).await;
        }
        self.quiesce().await;
        self.check(true).await;
        self.books_end().await;
        self.report.steps = steps;
        self.report.payments = self.pays.len();
        self.report.world = lock(&self.world).stats.clone();
        self.report.trace_digest = self.hasher.finish();
        if let Some(gw) = self.gw.take() {
            gw.store.close().await;
            gw.events.abort();
        }
        drop(self.db);
        self.report
    }

    /// Runs one step; true when it may have touched any payment.
    async fn step(&mut self, kind: Step) -> bool {
        match kind {
            Step::Add => self.add().await,
            Step::AddReplay => self.add_replay(false).await,
            Step::AddKeyReused => self.add_replay(true).await,
            Step::Pay => self.pay(false).await,
            Step::PayReplay => self.pay(true).await,
            Step::TerminalSale => self.terminal_sale().await,
            Step::Refund => self.refund().await,
            Step::RefundReplay => self.refund_replay(false).await,
            Step::RefundKeyReused => self.refund_replay(true).await,
            Step::Cancel => self.cancel().await,
            Step::Query => self.query(false).await,
            Step::QueryOtherMerchant => self.query(true).await,
            Step::Callback => self.callback().await,
            Step::TerminalReport => self.terminal_report().await,
            Step::Janitor => {
                self.janitor().await;
                return true;
            }
            Step::Crash => {
                self.note("gateway crash between requests".to_owned());
                self.reboot().await;
                return true;
            }
            Step::ClockJump => {
                let hours = 1 + self.rng.below(5) as i64;
                self.clock.advance(Duration::hours(hours));
                self.note(format!("{hours} h pass"));
            }
        }
        false
    }

    /// Drops the gateway without closing anything, as `kill -9` would, and starts it again
    /// on the same database file.
    pub async fn reboot(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.events.abort();
            let _ = gw.events.await;
            drop(gw.app);
            drop(gw.hub);
            drop(gw.store);
        }
        self.report.reboots += 1;
        let gw = boot(
            &self.db,
            &self.key_hex,
            self.clock.clone(),
            self.wallet.clone(),
            self.world.clone(),
        )
        .await;
        self.gw = Some(gw);
    }

    /// Runs a request that may call the wallet: `None` when the gateway crashed inside it
    /// (the request's future is dropped, the gateway rebooted).
    async fn guarded<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        self.wallet.crash_armed.store(true, Ordering::SeqCst);
        let crashed = self.wallet.crashed.clone();
        let out = tokio::select! {
            biased;
            r = fut => Some(r),
            _ = crashed.notified() => None,
        };
        self.wallet.crash_armed.store(false, Ordering::SeqCst);
        if out.is_none() {
            self.note("gateway crashed inside the wallet call".into());
            self.reboot().await;
        }
        out
    }

    fn pick_merchant(&mut self) -> usize {
        self.rng.below(self.merchants.len() as u64) as usize
    }

    /// A payment, preferring those in `states` most of the time.
    fn pick_pay(&mut self, states: &[PaymentState]) -> Option<usize> {
        if self.pays.is_empty() {
            return None;
        }
        let fitting: Vec<usize> = (0..self.pays.len())
            .filter(|&i| states.contains(&self.pays[i].seen.state))
            .collect();
        let i = if !fitting.is_empty() && self.rng.chance(85) {
            fitting[self.rng.below(fitting.len() as u64) as usize]
        } else {
            self.rng.below(self.pays.len() as u64) as usize
        };
        self.touched.push(i);
        Some(i)
    }

    /// An add request in the shape merchant `m`'s dialect produces.
    fn add_request(&mut self, m: usize, terminal: bool) -> AddRequest {
        self.next_ref += 1;
        let merchant = &self.merchants[m];
        let currency = merchant.currency;
        let scale = if currency.exponent() == 0 {
            500
        } else {
            50_000
        };
        let minor = 1 + self.rng.below(scale) as i64;
        let reference = format!("{}-{}", merchant.rec.merchant_no, self.next_ref);
        let (description, notify_url, timeout, extra) = match merchant.dialect {
            // Pockyt v3 add: ipnUrl, an optional timeout, a description only sometimes.
            Dialect::Pockyt => (
                self.rng.chance(50).then(|| "coffee".to_owned()),
                Some(merchant.url.clone()),
                self.rng.chance(50).then(|| 5 + self.rng.below(120) as i64),
                None,
            ),
            // Unified: subject, notifyUrl and the dialect's own facts kept with the payment.
            Dialect::Unified => (
                Some("subject".to_owned()),
                Some(merchant.url.clone()),
                Some(30),
                Some(format!(
                    r#"{{"mchOrderNo":"{reference}","wayCode":"ALI_BAR"}}"#
                )),
            ),
            // YabandPay: POS sales carry no notify URL, web shops (CreatePayments) do.
            Dialect::YabandPay => (
                Some("order".to_owned()),
                (!terminal).then(|| merchant.url.clone()),
                None,
                Some(format!(r#"{{"order_id":"{reference}"}}"#)),
            ),
        };
        AddRequest {
            store_no: merchant.store_no.clone(),
            reference: Key::parse(&reference).expect("a valid reference"),
            amount: Money::from_minor(minor, currency).expect("a valid amount"),
            settle_currency: currency,
            description,
            notify_url,
            timeout_minutes: timeout,
            dialect: merchant.dialect,
            extra,
        }
    }

    fn track(&mut self, m: usize, add: AddRequest, rec: &tillgate_core::PaymentRecord) -> usize {
        self.pays.push(Pay {
            m,
            add,
            transaction_no: rec.transaction_no.clone(),
            id: rec.id,
            pay: None,
            seen: Seen::new(rec),
        });
        let i = self.pays.len() - 1;
        self.touched.push(i);
        i
    }

    async fn add(&mut self) {
        let m = self.pick_merchant();
        let req = self.add_request(m, false);
        let merchant = self.merchants[m].rec.clone();
        let added = self.app().add(&merchant, req.clone()).await;
        match added {
            Ok(o) => {
                assert!(!o.replayed, "a new reference was answered as a replay");
                let i = self.track(m, req, &o.value);
                self.note(format!(
                    "add p{i} {} of m{m}",
                    o.value.payment.amount().minor()
                ));
            }
            Err(e) => panic!("add refused: {e}"),
        }
    }

    async fn add_replay(&mut self, other_params: bool) {
        let Some(i) = self.pick_pay(&[]) else { return };
        let p = &self.pays[i];
        let merchant = self.merchants[p.m].rec.clone();
        let mut req = p.add.clone();
        if other_params {
            let bumped = req.amount.minor() + 1;
            req.amount = Money::from_minor(bumped, req.amount.currency()).expect("an amount");
        }
        let answer = self.app().add(&merchant, req).await;
        let tx = self.pays[i].transaction_no.clone();
        match (other_params, answer) {
            (false, Ok(o)) => {
                assert!(
                    o.replayed,
                    "the same add again was not answered as a replay"
                );
                assert_eq!(
                    o.value.transaction_no, tx,
                    "an add's replay named another transaction"
                );
                self.report.idempotent_replays += 1;
            }
            (true, Err(LifecycleError::KeyReused)) => {}
            (_, other) => panic!("add again (other parameters: {other_params}): {other:?}"),
        }
        self.note(format!("add again p{i} other={other_params}: ok"));
    }

    async fn pay(&mut self, replay: bool) {
        let Some(i) = self.pick_pay(&[PaymentState::Created]) else {
            return;
        };
        let req = match (&self.pays[i].pay, replay) {
            (Some(earlier), true) => earlier.clone(),
            _ => PayRequest {
                barcode: self
                    .rng
                    .chance(70)
                    .then(|| format!("28{:016}", self.rng.below(10u64.pow(16)))),
                vendor: Some(["alipay", "wechatpay"][self.rng.below(2) as usize].to_owned()),
            },
        };
        let app = self.app();
        let merchant = self.merchants[self.pays[i].m].rec.clone();
        let key = PaymentKey::TransactionNo(self.pays[i].transaction_no.clone());
        let sent = req.clone();
        let answer = self
            .guarded(async move { app.pay(&merchant, &key, sent).await })
            .await;
        let line = match answer {
            None => {
                self.pays[i].pay = Some(req);
                "crashed".to_owned()
            }
            Some(Ok(o)) => {
                if !o.replayed {
                    self.pays[i].pay = Some(req);
                }
                self.report.idempotent_replays += u64::from(o.replayed);
                let state = o.value.payment.state();
                let world = lock(&self.world)
                    .accounts
                    .get(&o.value.transaction_no)
                    .and_then(|a| a.pay);
                match state {
                    PaymentState::Paid => assert_eq!(
                        world,
                        Some(ChannelOutcome::Approved),
                        "pay answered paid, the wallet did not take the money"
                    ),
                    PaymentState::Failed => assert_ne!(
                        world,
                        Some(ChannelOutcome::Approved),
                        "pay answered failed, the wallet took the money"
                    ),
                    _ => {}
                }
                format!("{state:?} replayed={}", o.replayed)
            }
            Some(Err(e)) => {
                expected(&e, "pay");
                format!("refused {e}")
            }
        };
        self.note(format!("pay p{i} (replay {replay}): {line}"));
    }

    async fn terminal_sale(&mut self) {
        let m = self.pick_merchant();
        let req = self.add_request(m, true);
        let plan = match lock(&self.world).roll(&[70, 15, 8, 7]) {
            0 => TerminalPlan::Answer,
            1 => TerminalPlan::Silent,
            2 => TerminalPlan::Vanish,
            _ => TerminalPlan::Offline,
        };
        self.gw().hub.plan(plan);
        let merchant = self.merchants[m].rec.clone();
        let tid = self.merchants[m].tid.clone();
        let wait = std::time::Duration::from_secs(1);
        let answer = self
            .app()
            .terminal_sale(&merchant, &tid, req.clone(), wait)
            .await;
        let key = PaymentKey::Reference(req.reference.as_str().to_owned());
        let stored = self
            .store()
            .payment(merchant.id, &key)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
            .expect("a terminal sale adds its payment first");
        let i = self.track(m, req, &stored);
        let line = match answer {
            Ok(o) => format!("{:?}", o.value.payment.state()),
            Err(LifecycleError::TerminalOffline) if plan == TerminalPlan::Offline => {
                "offline".to_owned()
            }
            Err(e) => panic!("terminal sale ({plan:?}): {e}"),
        };
        self.note(format!("terminal sale p{i} {plan:?}: {line}"));
    }

    async fn refund(&mut self) {
        let Some(i) = self.pick_pay(&[PaymentState::Paid, PaymentState::PartiallyRefunded]) else {
            return;
        };
        let stored = self.read(i).await;
        let amount = stored.payment.amount();
        let left =
            amount.minor() - stored.payment.refunded().minor() - stored.payment.reserved().minor();
        let minor = match self.rng.below(4) {
            0 => left.max(1),
            1 => left + 1 + self.rng.below(3) as i64,
            _ => 1 + self.rng.below(left.max(1) as u64) as i64,
        };
        let money = Money::from_minor(minor, amount.currency()).expect("an amount");
        let m = self.pays[i].m;
        let dialect = self.merchants[m].dialect;
        let keyed = match dialect {
            Dialect::Unified => true,
            Dialect::Pockyt => self.rng.chance(60),
            Dialect::YabandPay => self.rng.chance(50),
        };
        self.next_ref += 1;
        let reference = keyed.then(|| format!("r{}", self.next_ref));
        let url = self.merchants[m].url.clone();
        let req = RefundRequest {
            amount: money,
            settle_currency: (dialect == Dialect::Pockyt).then_some(amount.currency()),
            refund_reference: reference.as_deref().map(|r| Key::parse(r).expect("a key")),
            notify: match dialect {
                Dialect::Pockyt => NotifyTo::PaymentUrl,
                Dialect::Unified => NotifyTo::Url(url),
                Dialect::YabandPay if self.rng.chance(50) => NotifyTo::Nowhere,
                Dialect::YabandPay => NotifyTo::Url(url),
            },
            extra: (dialect == Dialect::Unified).then(|| r#"{"refundReason":"sim"}"#.to_owned()),
        };
        self.send_refund(i, req).await;
    }

    async fn send_refund(&mut self, i: usize, req: RefundRequest) {
        let m = self.pays[i].m;
        if let Some(r) = &req.refund_reference {
            self.refund_keys
                .entry((m, r.as_str().to_owned()))
                .or_insert(RefundUse {
                    p: i,
                    amount: req.amount,
                    refund_no: None,
                });
        }
        let app = self.app();
        let merchant = self.merchants[m].rec.clone();
        let key = PaymentKey::TransactionNo(self.pays[i].transaction_no.clone());
        let minor = req.amount.minor();
        let reference = req.refund_reference.clone();
        let answer = self
            .guarded(async move { app.refund(&merchant, &key, req).await })
            .await;
        let line = match answer {
            None => "crashed".to_owned(),
            Some(Ok(o)) => {
                let (_, r) = &o.value;
                if let Some(reference) = &reference {
                    if let Some(used) = self
                        .refund_keys
                        .get_mut(&(m, reference.as_str().to_owned()))
                    {
                        used.refund_no = Some(r.refund_no.clone());
                    }
                }
                let world = lock(&self.world).refunds.get(&r.refund_no).map(|x| x.2);
                match r.state {
                    RefundState::Succeeded => assert_eq!(
                        world,
                        Some(ChannelOutcome::Approved),
                        "a refund answered succeeded that the wallet did not make"
                    ),
                    RefundState::Failed => assert_ne!(
                        world,
                        Some(ChannelOutcome::Approved),
                        "a refund answered failed that the wallet made"
                    ),
                    _ => {}
                }
                format!("{:?}", r.state)
            }
            Some(Err(e)) => {
                expected(&e, "refund");
                format!("refused {e}")
            }
        };
        self.note(format!(
            "  refund p{i} {minor} keyed={}: {line}",
            reference.is_some()
        ));
    }

    async fn refund_replay(&mut self, other_amount: bool) {
        if self.refund_keys.is_empty() {
            return;
        }
        let mut keys: Vec<&(usize, String)> = self.refund_keys.keys().collect();
        keys.sort();
        let (m, reference) = keys[self.rng.below(keys.len() as u64) as usize].clone();
        let used = &self.refund_keys[&(m, reference.clone())];
        let (i, amount, known_no) = (used.p, used.amount, used.refund_no.clone());
        self.touched.push(i);
        let merchant = self.merchants[m].rec.clone();
        let row = self
            .store()
            .refund_by_reference(merchant.id, &reference)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        let Some(row) = row else {
            // The first request was refused before it reserved anything: the key is free.
            return;
        };
        if let Some(no) = &known_no {
            assert_eq!(
                &row.refund_no, no,
                "a refund reference names another refund"
            );
        }
        let bumped = Money::from_minor(amount.minor() + 1, amount.currency()).expect("an amount");
        let req = RefundRequest {
            amount: if other_amount { bumped } else { amount },
            settle_currency: None,
            refund_reference: Some(Key::parse(&reference).expect("a key")),
            notify: NotifyTo::Nowhere,
            extra: None,
        };
        let key = PaymentKey::TransactionNo(self.pays[i].transaction_no.clone());
        let answer = self.app().refund(&merchant, &key, req).await;
        match (other_amount, answer) {
            (true, Err(LifecycleError::KeyReused)) => {}
            (false, Err(LifecycleError::InProgress)) => {
                assert_eq!(
                    row.state,
                    RefundState::InProgress,
                    "in progress, the row is final"
                );
            }
            (false, Ok(o)) => {
                assert!(o.replayed, "a refund's replay acted again");
                assert_eq!(
                    o.value.1.refund_no, row.refund_no,
                    "a replay named another refund"
                );
                assert_eq!(
                    o.value.1.state, row.state,
                    "a replay answered another state"
                );
                self.report.idempotent_replays += 1;
            }
            (_, other) => panic!("refund again (other amount: {other_amount}): {other:?}"),
        }
        let by = self
            .app()
            .refund_by(&merchant, &RefundKey::Reference(reference.clone()))
            .await
            .unwrap_or_else(|e| panic!("refund query by reference: {e}"));
        assert_eq!(by.1.refund_no, row.refund_no);
        self.note(format!(
            "  refund again p{i} {reference} other={other_amount}: ok"
        ));
    }

    async fn cancel(&mut self) {
        let Some(i) = self.pick_pay(&[
            PaymentState::Created,
            PaymentState::Pending,
            PaymentState::Paid,
        ]) else {
            return;
        };
        let m = self.pays[i].m;
        let merchant = self.merchants[m].rec.clone();
        let dialect = self.merchants[m].dialect;
        let zone = merchant.zone;
        let rule = if dialect == Dialect::YabandPay {
            BusinessDayRule::with_grace(zone, Duration::minutes(30))
        } else {
            BusinessDayRule::calendar_day(zone)
        };
        let intent = if dialect == Dialect::Pockyt && self.rng.chance(25) {
            CancelIntent::Close
        } else {
            CancelIntent::Cancel
        };
        let on_terminal = match dialect {
            Dialect::YabandPay => self.rng.chance(50),
            _ => self.rng.chance(10),
        };
        let mut options = CancelOptions {
            notify_url: (dialect == Dialect::Unified).then(|| self.merchants[m].url.clone()),
            extra: None,
            terminal: None,
            terminal_wait: std::time::Duration::from_secs(1),
        };
        let mut plan = TerminalPlan::Answer;
        if on_terminal {
            options.terminal = Some(self.merchants[m].tid.clone());
            plan = match lock(&self.world).roll(&[70, 15, 8, 7]) {
                0 => TerminalPlan::Answer,
                1 => TerminalPlan::Silent,
                2 => TerminalPlan::Vanish,
                _ => TerminalPlan::Offline,
            };
            self.gw().hub.plan(plan);
        }
        let app = self.app();
        let key = PaymentKey::TransactionNo(self.pays[i].transaction_no.clone());
        let answer = self
            .guarded(async move { app.cancel(&merchant, &key, rule, intent, options).await })
            .await;
        let line = match answer {
            None => "crashed".to_owned(),
            Some(Ok(o)) => {
                let (_, c) = &o.value;
                let closed = lock(&self.world)
                    .accounts
                    .get(&self.pays[i].transaction_no)
                    .is_some_and(|a| a.closed);
                if c.state == CancelState::Succeeded {
                    assert!(
                        closed,
                        "a cancel answered succeeded that the wallet did not make"
                    );
                }
                self.report.idempotent_replays += u64::from(o.replayed);
                format!("{:?} replayed={}", c.state, o.replayed)
            }
            Some(Err(e)) => {
                expected(&e, "cancel");
                format!("refused {e}")
            }
        };
        self.note(format!(
            "  cancel p{i} {intent:?} terminal={on_terminal} {plan:?}: {line}"
        ));
    }

    async fn query(&mut self, other_merchant: bool) {
        let Some(i) = self.pick_pay(&[]) else { return };
        let mut m = self.pays[i].m;
        if other_merchant {
            m = (m + 1 + self.rng.below(self.merchants.len() as u64 - 1) as usize)
                % self.merchants.len();
        }
        let merchant = self.merchants[m].rec.clone();
        let key = if self.rng.chance(50) {
            PaymentKey::TransactionNo(self.pays[i].transaction_no.clone())
        } else {
            PaymentKey::Reference(self.pays[i].add.reference.as_str().to_owned())
        };
        let answer = self.app().query(&merchant, &key).await;
        match (other_merchant, answer) {
            (true, Err(LifecycleError::NotFound)) => {}
            (false, Ok(found)) => {
                assert_eq!(
                    found.payment.id, self.pays[i].id,
                    "a query found another payment"
                );
            }
            (_, other) => panic!("query (other merchant: {other_merchant}): {other:?}"),
        }
        self.note(format!("query p{i} other={other_merchant}: ok"));
    }

    /// Delivers one of the wallet's late answers, as its callback would.
    pub async fn callback(&mut self) {
        let next = lock(&self.world).next_callback();
        let Some(cb) = next else { return };
        self.report.callbacks += 1;
        let app = self.app();
        let store = self.store();
        let (tx, line) = match cb {
            Callback::Payment {
                transaction_no,
                outcome,
            } => {
                match app.wallet_settles_payment(&transaction_no, outcome).await {
                    Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => {}
                    Err(e) => panic!("payment callback: {e}"),
                }
                (transaction_no, format!("payment {outcome:?}"))
            }
            Callback::Refund {
                transaction_no,
                refund_no,
                outcome,
            } => {
                app.wallet_settles_refund(&transaction_no, &refund_no, outcome)
                    .await
                    .unwrap_or_else(|e| panic!("refund callback: {e}"));
                (transaction_no, format!("refund {outcome:?}"))
            }
            Callback::Cancel {
                transaction_no,
                cancel_no,
                outcome,
                attempt,
            } => {
                // As the gateway's callback endpoint does: the cancel the callback names, else
                // the transaction's cancel in progress.
                let p = store
                    .payment_by_transaction_no(&transaction_no)
                    .await
                    .unwrap_or_else(|e| panic!("read: {e}"))
                    .expect("a callback of a known transaction");
                let cancels = store
                    .cancels_of(p.id)
                    .await
                    .unwrap_or_else(|e| panic!("read: {e}"));
                let named = cancels.iter().find(|c| c.cancel_no == cancel_no);
                let open = cancels
                    .iter()
                    .rev()
                    .find(|c| c.state == CancelState::InProgress);
                let target = named.or(open);
                let later = lock(&self.world)
                    .accounts
                    .get(&transaction_no)
                    .map_or(0, |a| a.cancels)
                    > attempt;
                if later && open.is_some() {
                    lock(&self.world).stats.stale_cancel_callbacks += 1;
                }
                if let Some(c) = target {
                    // A wallet's answer settles only the operation it reports on.
                    assert_eq!(
                        c.cancel_no, cancel_no,
                        "a late answer of cancel {cancel_no} would settle cancel {}",
                        c.cancel_no
                    );
                    match app.wallet_settles_cancel(&c.cancel_no, outcome).await {
                        Ok(_) | Err(LifecycleError::Rejected(Rejection::Replay)) => {}
                        Err(e) => panic!("cancel callback: {e}"),
                    }
                }
                (transaction_no, format!("cancel {outcome:?}"))
            }
        };
        if let Some(i) = self.pays.iter().position(|p| p.transaction_no == tx) {
            self.touched.push(i);
            self.note(format!("callback p{i} {line}"));
        }
    }

    /// A terminal that went silent reconnects and reports one of its open commands (or
    /// reports a finished one again).
    pub async fn terminal_report(&mut self) {
        let m = self.pick_merchant();
        let tid = self.merchants[m].tid.clone();
        let open = self
            .store()
            .open_commands(&tid)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        if open.is_empty() {
            return;
        }
        let cmd = &open[self.rng.below(open.len() as u64) as usize];
        let outcome = lock(&self.world).terminal_result(&cmd.command);
        let result = TerminalResult {
            outcome,
            message: Some("reconnected".into()),
        };
        self.gw()
            .hub
            .report(&cmd.command.id, result.clone())
            .await
            .unwrap_or_else(|e| panic!("terminal report: {e}"));
        self.report.terminal_reports += 1;
        if let Some(i) = self.pays.iter().position(|p| p.id == cmd.payment_id) {
            self.touched.push(i);
            self.note(format!(
                "  terminal reports p{i} {:?} {outcome:?}",
                cmd.command.kind
            ));
            // A terminal may say it again (a lost confirmation): nothing changes.
            if self.rng.chance(30) {
                self.gw()
                    .hub
                    .report(&cmd.command.id, result)
                    .await
                    .unwrap_or_else(|e| panic!("terminal report again: {e}"));
            }
        }
    }

    /// One round of the janitor, as the server runs it.
    pub async fn janitor(&mut self) {
        let now = Clock::now(&*self.clock);
        let store = self.store();
        let app = self.app();
        let due = store
            .due_queries(now - Duration::seconds(10), now, 100)
            .await
            .unwrap_or_else(|e| panic!("due queries: {e}"));
        let mut resolved = 0;
        for op in &due {
            match app.resolve(op).await {
                Ok(true) => resolved += 1,
                Ok(false) => store
                    .defer_query(op, now + Duration::seconds(60))
                    .await
                    .unwrap_or_else(|e| panic!("defer: {e}")),
                Err(e) => panic!("the janitor could not resolve {op:?}: {e}"),
            }
        }
        self.report.janitor_resolved += resolved;
        self.note(format!("janitor: {} due, {resolved} resolved", due.len()));
    }

    /// The end: the wallet stops failing, its late answers arrive, silent terminals report,
    /// and the janitor runs until nothing is in flight.
    async fn quiesce(&mut self) {
        lock(&self.world).faults = false;
        while !lock(&self.world).callbacks.is_empty() {
            self.callback().await;
        }
        for m in 0..self.merchants.len() {
            let tid = self.merchants[m].tid.clone();
            let open = self
                .store()
                .open_commands(&tid)
                .await
                .unwrap_or_else(|e| panic!("read: {e}"));
            for cmd in open {
                let outcome = lock(&self.world).terminal_result(&cmd.command);
                let result = TerminalResult {
                    outcome,
                    message: None,
                };
                self.gw()
                    .hub
                    .report(&cmd.command.id, result)
                    .await
                    .unwrap_or_else(|e| panic!("terminal report: {e}"));
            }
        }
        for _ in 0..10 {
            self.clock.advance(Duration::minutes(10));
            self.janitor().await;
            let left = self
                .store()
                .unresolved(Clock::now(&*self.clock), 1000)
                .await
                .unwrap_or_else(|e| panic!("unresolved: {e}"));
            if left.is_empty() {
                return;
            }
        }
        panic!("money still in flight after the janitor asked about everything");
    }

    /// The payment as stored now.
    pub async fn read(&self, i: usize) -> tillgate_core::PaymentRecord {
        self.store()
            .payment_by_id(self.pays[i].id)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
            .unwrap_or_else(|| panic!("payment p{i} is gone"))
    }

    pub fn store_error(e: StoreError) -> ! {
        panic!("the store failed: {e}")
    }
}
