//! The dispatcher on a real store (SQLite, through the lifecycle) against real HTTP receivers:
//! deliveries are independent, a merchant holds at most its share of slots, and addresses in
//! a stored URL are checked again when it is sent.

mod receiver;

use async_trait::async_trait;
use receiver::{Behaviour, Receiver};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tillgate_core::model::NotificationFilter;
use tillgate_core::notify::{Ack, RenderError, Rendered, Renderer, Snapshot, UrlPolicy};
use tillgate_core::service::{AddRequest, PayRequest};
use tillgate_core::{Dialect, MerchantRecord, OutboxRecord, PaymentKey};
use tillgate_domain::{Currency, Key, MerchantZone, Money};
use tillgate_notify::{Dispatcher, DispatcherConfig};
use tillgate_testkit::Kit;

/// Renders a notification as the transaction number: what is sent is not the point here.
struct Plain;

#[async_trait]
impl Renderer for Plain {
    async fn render(&self, snapshot: &Snapshot) -> Result<Rendered, RenderError> {
        Ok(Rendered {
            content_type: "text/plain",
            body: snapshot.payment.transaction_no.clone().into_bytes(),
            ack: Ack {
                expected: "success",
                ignore_case: false,
                trim: true,
            },
        })
    }
}

fn sandbox() -> UrlPolicy {
    UrlPolicy {
        allow_loopback: true,
        allowed_networks: Vec::new(),
    }
}

fn dispatcher(kit: &Kit, config: DispatcherConfig) -> Arc<Dispatcher> {
    let renderers: HashMap<Dialect, Arc<dyn Renderer>> = Dialect::ALL
        .into_iter()
        .map(|d| (d, Arc::new(Plain) as Arc<dyn Renderer>))
        .collect();
    Arc::new(
        Dispatcher::new(
            kit.store.clone(),
            kit.clock.clone(),
            renderers,
            config,
            kit.app.outbox_wake(),
        )
        .unwrap(),
    )
}

/// Adds and pays a transaction whose notification goes to `url`; returns its number.
async fn paid(kit: &Kit, merchant: &MerchantRecord, url: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let usd = Currency::from_code("USD").unwrap();
    let added = kit
        .app
        .add(
            merchant,
            AddRequest {
                store_no: "1".into(),
                reference: Key::parse(&format!("r{n}")).unwrap(),
                amount: Money::parse("10.00", usd).unwrap(),
                settle_currency: usd,
                description: None,
                notify_url: Some(url.to_owned()),
                timeout_minutes: None,
                dialect: Dialect::Pockyt,
                extra: None,
            },
        )
        .await
        .unwrap()
        .value;
    let key = PaymentKey::TransactionNo(added.transaction_no.clone());
    kit.app
        .pay(
            merchant,
            &key,
            PayRequest {
                barcode: Some("281234567890123456".into()),
                vendor: Some("alipay".into()),
            },
        )
        .await
        .unwrap();
    added.transaction_no
}

async fn merchant(kit: &Kit, no: &str) -> MerchantRecord {
    let m = kit.merchant(no, MerchantZone::utc()).await;
    kit.store_of(&m, "1", &format!("token-of-{no}-0123456789"))
        .await;
    m
}

async fn outbox(kit: &Kit) -> Vec<OutboxRecord> {
    kit.store
        .notifications(&NotificationFilter {
            status: None,
            since: None,
            payment_id: None,
            limit: 1000,
        })
        .await
        .unwrap()
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the outbox satisfies `done`.
async fn wait_for_outbox(
    kit: &Kit,
    what: &str,
    within: Duration,
    done: impl Fn(&[OutboxRecord]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(&outbox(kit).await) {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_only_its_merchants_slots() {
    let kit = Kit::builder("notify-isolation").build().await;
    let a = merchant(&kit, "700001").await;
    let b = merchant(&kit, "700002").await;
    let blackhole = Receiver::start(Behaviour::Blackhole).await;
    let normal = Receiver::start(Behaviour::success()).await;
    let timeout = Duration::from_secs(3);
    for _ in 0..5 {
        paid(&kit, &a, &blackhole.url("127.0.0.1")).await;
    }
    let run = dispatcher(
        &kit,
        DispatcherConfig {
            timeout,
            max_in_flight: 8,
            max_in_flight_per_merchant: 2,
            urls: sandbox(),
            ..DispatcherConfig::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(run.run(stopped));
    wait_until(
        "merchant A's deliveries start",
        Duration::from_secs(2),
        || blackhole.open() == 2,
    )
    .await;

    // A's receiver holds two connections and answers none; B's notifications go out now.
    let sent = Instant::now();
    let mut b_numbers = Vec::new();
    for _ in 0..3 {
        b_numbers.push(paid(&kit, &b, &normal.url("127.0.0.1")).await);
    }
    let got = normal.wait_for(3, timeout).await;
    assert_eq!(got.len(), 3, "B's notifications all arrived");
    let slowest = got.iter().map(|g| g.at - sent).max().unwrap();
    assert!(
        slowest < Duration::from_millis(1000),
        "B waited {slowest:?} behind A's receiver (time-out {timeout:?})"
    );
    let mut bodies: Vec<String> = got.into_iter().map(|g| g.body).collect();
    bodies.sort();
    b_numbers.sort();
    assert_eq!(bodies, b_numbers);
    // ...and are recorded as delivered while A's are still in flight.
    wait_for_outbox(
        &kit,
        "B's deliveries are recorded",
        Duration::from_secs(1),
        |o| {
            o.iter()
                .filter(|n| n.merchant_id == b.id && n.delivered_at.is_some())
                .count()
                == 3
        },
    )
    .await;
    assert_eq!(
        blackhole.most_open(),
        2,
        "A never had more than its two slots"
    );
    assert_eq!(blackhole.connections(), 2, "A's others wait for A's slots");

    // A's deliveries time out one by one, each recorded; the rest of A's follow in its slots.
    wait_for_outbox(
        &kit,
        "every notification of A is attempted",
        4 * timeout,
        |o| {
            o.iter()
                .filter(|n| n.merchant_id == a.id && n.attempts == 1)
                .count()
                == 5
        },
    )
    .await;
    assert_eq!(blackhole.connections(), 5);
    assert!(blackhole.most_open() <= 2);
    for n in outbox(&kit).await.iter().filter(|n| n.merchant_id == a.id) {
        let attempts = kit.store.attempts_of(n.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error.as_deref(), Some("timed out"));
    }
    stop.send(true).unwrap();
    running.await.unwrap();
}

#[tokio::test]
async fn the_node_never_runs_more_than_its_limit_at_once() {
    let kit = Kit::builder("notify-limit").build().await;
    let blackhole = Receiver::start(Behaviour::Blackhole).await;
    for no in ["700011", "700012", "700013"] {
        let m = merchant(&kit, no).await;
        for _ in 0..3 {
            paid(&kit, &m, &blackhole.url("127.0.0.1")).await;
        }
    }
    let run = dispatcher(
        &kit,
        DispatcherConfig {
            timeout: Duration::from_millis(600),
            max_in_flight: 4,
            max_in_flight_per_merchant: 2,
            urls: sandbox(),
            ..DispatcherConfig::default()
        },
    );
    let round = run.try_dispatch().await.unwrap();
    assert_eq!(round.attempts(), 4, "one round fills the node's four slots");
    assert_eq!(blackhole.most_open(), 4);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(run.run(stopped));
    wait_for_outbox(
        &kit,
        "all nine are attempted",
        Duration::from_secs(10),
        |o| o.iter().filter(|n| n.attempts == 1).count() == 9,
    )
    .await;
    assert!(blackhole.most_open() <= 4, "{}", blackhole.most_open());
    stop.send(true).unwrap();
    running.await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_deliveries_in_flight_finish_and_records_them() {
    let kit = Kit::builder("notify-shutdown").build().await;
    let a = merchant(&kit, "700021").await;
    let blackhole = Receiver::start(Behaviour::Blackhole).await;
    paid(&kit, &a, &blackhole.url("127.0.0.1")).await;
    let run = dispatcher(
        &kit,
        DispatcherConfig {
            timeout: Duration::from_millis(800),
            urls: sandbox(),
            ..DispatcherConfig::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(run.run(stopped));
    wait_until("the delivery starts", Duration::from_secs(2), || {
        blackhole.open() == 1
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), running)
        .await
        .expect("shutdown waits at most one time-out")
        .unwrap();
    let n = &outbox(&kit).await[0];
    assert_eq!(n.attempts, 1, "the attempt in flight was recorded");
    let attempts = kit.store.attempts_of(n.id).await.unwrap();
    assert_eq!(attempts[0].error.as_deref(), Some("timed out"));
}

#[tokio::test]
async fn an_address_in_a_stored_url_is_checked_again_when_sent() {
    let kit = Kit::builder("notify-policy").build().await;
    let a = merchant(&kit, "700031").await;
    let receiver = Receiver::start(Behaviour::success()).await;
    // The rows were written under a policy that allowed loopback (or by an older version);
    // the dispatcher runs under production's.
    paid(&kit, &a, &receiver.url("127.0.0.1")).await;
    paid(&kit, &a, &format!("http://0x7f.1:{}/ipn", receiver.port)).await;
    paid(&kit, &a, &receiver.url("localhost")).await;
    let run = dispatcher(
        &kit,
        DispatcherConfig {
            timeout: Duration::from_secs(2),
            ..DispatcherConfig::default()
        },
    );
    let round = run.try_dispatch().await.unwrap();
    assert_eq!(round.attempts(), 3);
    assert_eq!(round.delivered, 0);
    assert_eq!(receiver.connections(), 0, "nothing reached the receiver");
    for n in outbox(&kit).await {
        let attempts = kit.store.attempts_of(n.id).await.unwrap();
        let error = attempts[0].error.clone().unwrap_or_default();
        assert!(error.starts_with("refused"), "{}: {error}", n.target_url);
    }
}
