//! Fuzzing the terminal hub's messages (issue 15, part 4), through `Hub::run_session` driven
//! by channels as a WebSocket would: handshakes (arbitrary text and mutations of a real
//! signed hello) and, after a real handshake, any message a terminal may send (mutations of
//! real acks, progress and results). Nothing panics; a handshake is welcomed only when it is
//! authentic, anything else is refused with an error message; an unreadable message after
//! it gets an error and the session carries on (it still answers a ping).

use futures_util::{Sink, Stream};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tillgate_domain::MerchantZone;
use tillgate_server::hub::{handshake_signature, Down, Frame, Hub, Up};
use tillgate_testkit::{fuzz, Kit};
use tokio::sync::mpsc;

const TID: &str = "T1";
const SECRET: &str = "terminal-secret-0123456789";

async fn setup() -> (Kit, Arc<Hub>) {
    let (kit, hub) = Kit::builder("fuzz-hub")
        .build_with_hub(|parts| {
            Hub::new(
                parts.store,
                parts.credentials,
                parts.clock,
                "node-fuzz".into(),
                parts.events,
            )
        })
        .await;
    let m = kit.merchant("900001", MerchantZone::utc()).await;
    kit.terminal_of(&m, TID, SECRET).await;
    (kit, hub)
}

/// A terminal's end of a session made of channels.
#[allow(clippy::type_complexity)]
fn channels() -> (
    mpsc::Sender<Frame>,
    mpsc::Receiver<Frame>,
    impl Sink<Frame> + Unpin + Send,
    impl Stream<Item = Frame> + Unpin + Send,
) {
    let (up_tx, up_rx) = mpsc::channel::<Frame>(16);
    let (down_tx, down_rx) = mpsc::channel::<Frame>(16);
    let sink = Box::pin(futures_util::sink::unfold(
        down_tx,
        |tx, f: Frame| async move {
            tx.send(f).await.map_err(|_| ())?;
            Ok::<_, ()>(tx)
        },
    ));
    let stream = Box::pin(futures_util::stream::unfold(up_rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    (up_tx, down_rx, sink, stream)
}

fn hello(timestamp: i64, nonce: &str) -> String {
    serde_json::to_string(&Up::Hello {
        tid: TID.into(),
        timestamp,
        nonce: nonce.into(),
        signature: handshake_signature(SECRET, TID, timestamp, nonce),
    })
    .unwrap()
}

/// The next frame from the gateway, if one comes within a second.
async fn next(rx: &mut mpsc::Receiver<Frame>) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .ok()
        .flatten()
}

fn down(frame: Option<Frame>) -> Option<Down> {
    match frame {
        Some(Frame::Text(t)) => Some(serde_json::from_str(&t).expect("the gateway sends JSON")),
        _ => None,
    }
}

/// Whether `text` is an authentic hello of the terminal.
fn authentic(text: &str) -> bool {
    match serde_json::from_str::<Up>(text) {
        Ok(Up::Hello {
            tid,
            timestamp,
            nonce,
            signature,
        }) => {
            tid == TID
                && signature.to_ascii_lowercase()
                    == handshake_signature(SECRET, &tid, timestamp, &nonce)
        }
        _ => false,
    }
}

#[test]
fn handshakes_are_welcomed_only_when_authentic() {
    let rt = fuzz::runtime();
    let (kit, hub) = rt.block_on(setup());
    let now = kit.app.now().timestamp();
    let n = AtomicU64::new(0);
    let strategy = prop_oneof![
        ".{0,200}".prop_map(|t| (t, None)),
        fuzz::mutations().prop_map(|m| (String::new(), Some(m))),
    ];
    fuzz::run("terminal handshake", strategy, |(text, mutations)| {
        let text = match mutations {
            Some(m) => {
                let nonce = format!("h-{}", n.fetch_add(1, Ordering::Relaxed));
                String::from_utf8_lossy(&fuzz::apply(hello(now, &nonce).as_bytes(), &m))
                    .into_owned()
            }
            None => text,
        };
        let first = rt.block_on(async {
            let (up, mut rx, sink, stream) = channels();
            let session = tokio::spawn(hub.clone().run_session(sink, stream));
            up.send(Frame::Text(text.clone())).await.unwrap();
            let first = down(next(&mut rx).await);
            drop(up);
            session.await.expect("the session ends without a panic");
            first
        });
        match first {
            Some(Down::Welcome { .. }) => prop_assert!(authentic(&text), "welcomed {:?}", text),
            Some(Down::Error { .. }) => {}
            other => prop_assert!(false, "answered {:?} to {:?}", other, text),
        }
        Ok(())
    });
}

#[test]
fn messages_after_the_handshake_never_break_the_session() {
    let rt = fuzz::runtime();
    let (kit, hub) = rt.block_on(setup());
    let now = kit.app.now().timestamp();
    let real: Vec<String> = [
        Up::Ack {
            id: "217000000000000001".into(),
        },
        Up::Progress {
            id: "217000000000000001".into(),
            stage: "shown".into(),
        },
        Up::Result {
            id: "217000000000000001".into(),
            outcome: "approved".into(),
            message: Some("ok".into()),
        },
        Up::Result {
            id: "217000000000000001".into(),
            outcome: "declined".into(),
            message: None,
        },
    ]
    .iter()
    .map(|u| serde_json::to_string(u).unwrap())
    .collect();
    let n = AtomicU64::new(0);
    let strategy = prop_oneof![
        ".{0,200}".prop_map(|t| (t, None)),
        (0..4usize, fuzz::mutations()).prop_map(|(i, m)| (String::new(), Some((i, m)))),
    ];
    fuzz::run("terminal messages", strategy, |(text, mutated)| {
        let text = match mutated {
            Some((i, m)) => {
                String::from_utf8_lossy(&fuzz::apply(real[i].as_bytes(), &m)).into_owned()
            }
            None => text,
        };
        let nonce = format!("m-{}", n.fetch_add(1, Ordering::Relaxed));
        let answers = rt.block_on(async {
            let (up, mut rx, sink, stream) = channels();
            let session = tokio::spawn(hub.clone().run_session(sink, stream));
            up.send(Frame::Text(hello(now, &nonce))).await.unwrap();
            let welcome = down(next(&mut rx).await);
            assert!(matches!(welcome, Some(Down::Welcome { .. })), "{welcome:?}");
            up.send(Frame::Text(text.clone())).await.unwrap();
            up.send(Frame::Ping).await.unwrap();
            let mut answers = Vec::new();
            loop {
                match next(&mut rx).await {
                    Some(Frame::Pong) => break,
                    Some(Frame::Text(t)) => answers.push(serde_json::from_str::<Down>(&t).unwrap()),
                    other => panic!("the session stopped answering after {text:?}: {other:?}"),
                }
            }
            drop(up);
            session.await.expect("the session ends without a panic");
            answers
        });
        for a in &answers {
            prop_assert!(
                matches!(a, Down::Error { .. }),
                "answered {:?} to {:?}",
                a,
                text
            );
        }
        Ok(())
    });
}
