//! The notification client against real HTTP receivers: names are checked on the addresses
//! they resolve to, at connect time; redirects are not followed.

mod receiver;

use receiver::{Behaviour, Receiver};
use reqwest::dns::Resolve;
use std::time::Duration;
use tillgate_core::notify::UrlPolicy;
use tillgate_notify::client::{forbidden_in, notification_client, PolicyResolver};

fn production() -> UrlPolicy {
    UrlPolicy::default()
}

fn sandbox() -> UrlPolicy {
    UrlPolicy {
        allow_loopback: true,
        allowed_networks: Vec::new(),
    }
}

async fn post(policy: UrlPolicy, url: &str) -> Result<reqwest::Response, reqwest::Error> {
    notification_client(policy, Duration::from_secs(5))
        .unwrap()
        .post(url)
        .body("transactionNo=1")
        .send()
        .await
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_in_production_and_reached_in_sandbox() {
    let receiver = Receiver::start(Behaviour::success()).await;
    // The URL check alone would let a name through; here the name is sent to the client as
    // it is, so only the resolver stands between it and the receiver.
    let url = receiver.url("localhost");
    let refused = post(production(), &url).await.expect_err("must be refused");
    let why = forbidden_in(&refused).expect("refused by the policy, not by the network");
    assert_eq!(why.host, "localhost");
    assert!(why.why.contains("own machine"), "{why}");
    assert_eq!(receiver.connections(), 0, "nothing reached the receiver");

    let reached = post(sandbox(), &url)
        .await
        .expect("sandbox reaches loopback");
    assert_eq!(reached.status(), 200);
    assert_eq!(receiver.arrivals().len(), 1);
}

#[tokio::test]
async fn a_network_the_operator_allowed_is_reached_through_a_name() {
    let receiver = Receiver::start(Behaviour::success()).await;
    let allowed = UrlPolicy {
        allow_loopback: false,
        allowed_networks: vec![
            UrlPolicy::parse_network("127.0.0.0/8").unwrap(),
            UrlPolicy::parse_network("::1/128").unwrap(),
        ],
    };
    let reached = post(allowed, &receiver.url("localhost")).await.unwrap();
    assert_eq!(reached.status(), 200);
}

#[tokio::test]
async fn the_resolver_keeps_only_allowed_addresses() {
    let name = || "localhost".parse().unwrap();
    let refused = match PolicyResolver::new(production()).resolve(name()).await {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(e) => e,
    };
    assert!(forbidden_in(refused.as_ref()).is_some(), "{refused}");
    let found: Vec<_> = PolicyResolver::new(sandbox())
        .resolve(name())
        .await
        .unwrap()
        .collect();
    assert!(!found.is_empty());
    assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = Receiver::start(Behaviour::success()).await;
    let redirecting = Receiver::start(Behaviour::Answer {
        status: 307,
        headers: format!("location: {}\r\n", elsewhere.url("127.0.0.1")),
        body: String::new(),
    })
    .await;
    let answer = post(sandbox(), &redirecting.url("127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 307, "the redirect is the answer");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(elsewhere.connections(), 0, "the redirect was not followed");
}
