//! The listener bounds time as well as size: sockets that send nothing, half a head or part of
//! a body are closed after their time-outs, a kept-alive connection after its idle time-out,
//! and many idle sockets from one client (or more than the cap) never keep another client out,
//! even when the server may hold few descriptors. Time-outs are short by configuration; the
//! tests wait for the server to close sockets, never for a fixed time.

use crate::helpers::*;
use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for something the server must do at once or after a short time-out
/// before it calls it a failure (it never waits this long when the server does its part).
const PATIENCE: Duration = Duration::from_secs(20);

/// A server with `http` as the `[http]` table of its configuration file.
struct Server {
    child: Child,
    addr: SocketAddr,
    base: String,
    _dir: Arc<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(http: &str, nofile: Option<u32>) -> Server {
    let dir = Arc::new(TempDir::new());
    let config = dir.0.join("tillgate.toml");
    std::fs::write(&config, format!("[http]\n{http}")).unwrap();
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    let config = config.display().to_string();
    let (child, base) = start_limited(&dir, &url, &["--config", &config], nofile)
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    Server {
        child,
        addr: base.trim_start_matches("http://").parse().unwrap(),
        base,
        _dir: dir,
    }
}

/// Reads until the server closes the connection; returns what it sent. Panics when the server
/// keeps it open.
async fn until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open"));
    got
}

/// An HTTP client whose connections come from `source` (any 127.0.0.0/8 address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// A signed Pockyt query of an unknown transaction: a full request through the dialect and
/// the store, answered `000021`.
async fn query_from(client: &reqwest::Client, base: &str) -> serde_json::Value {
    let mut params = vec![
        ("merchantNo", MERCHANT_NO),
        ("storeNo", STORE_NO),
        ("transactionNo", "1"),
    ];
    let sign = verify_sign(&params, TOKEN);
    params.push(("verifySign", &sign));
    let body: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    client
        .post(format!("{base}/app-data-search/v3/tran-query"))
        .json(&body)
        .send()
        .await
        .expect("the request got through")
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn silent_half_sent_and_slow_requests_are_closed_after_their_time_outs() {
    let s = server(
        "header_read_timeout_ms = 300\nbody_read_timeout_ms = 300\nidle_timeout_ms = 60000\n",
        None,
    );
    // Sends nothing.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // Half a head.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"POST /app-data-search/v3/tran-query HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
        .await
        .unwrap();
    // A whole head, then 20 of the 200 bytes it announced.
    let mut slow_body = TcpStream::connect(s.addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /app-data-search/v3/tran-query HTTP/1.1\r\nHost: gateway\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"merchantNo\":\"2000",
        )
        .await
        .unwrap();

    let got = until_closed(&mut silent, "a socket that sends nothing").await;
    assert!(
        got.is_empty() || !got.starts_with(b"HTTP/1.1 200"),
        "{got:?}"
    );
    let got = until_closed(&mut half, "a socket that sent half a head").await;
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{got:?}");
    // The slow body gets an answer in Pockyt's envelope, then the connection is closed.
    let got =
        String::from_utf8_lossy(&until_closed(&mut slow_body, "a slow body").await).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""ret_code":"000023""#), "{got}");

    // The server still answers everyone else.
    let answer = query_from(&client_from("127.0.0.1"), &s.base).await;
    assert_eq!(answer["ret_code"], "000021", "{answer}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_its_idle_time_out() {
    let s = server(
        "header_read_timeout_ms = 60000\nbody_read_timeout_ms = 60000\nidle_timeout_ms = 300\n",
        None,
    );
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, the connection stays open for another request, and then, with no
    // request coming, the server closes it (the head time-out alone would wait a minute).
    let got =
        String::from_utf8_lossy(&until_closed(&mut kept, "an idle kept-alive connection").await)
            .into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("ok"), "{got}");
}

/// Opens `n` silent connections from 127.0.0.1 and waits until the server has closed
/// `closed` of them. The others stay open until the test ends.
async fn flood(addr: SocketAddr, n: usize, closed: usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (mut reader, writer) = stream.into_split();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // Ends when the server closes the connection.
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(i);
            drop(writer);
        });
    }
    let wait = async {
        for _ in 0..closed {
            rx.recv().await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!("the server did not refuse the connections over its cap ({closed} of {n})")
        });
}

#[tokio::test]
async fn idle_sockets_from_one_client_never_keep_another_client_out() {
    // 128 descriptors: without a cap, 200 idle sockets would leave none for anyone else.
    let s = server(
        "header_read_timeout_ms = 60000\nidle_timeout_ms = 60000\nmax_connections_per_address = 16\n",
        Some(128),
    );
    flood(s.addr, 200, 200 - 16).await;
    // Another client (another address) is served at once, while the 16 idle sockets stay.
    let answer = query_from(&client_from("127.0.0.2"), &s.base).await;
    assert_eq!(answer["ret_code"], "000021", "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once_and_slots_come_back() {
    let s = server(
        "header_read_timeout_ms = 60000\nmax_connections = 8\nmax_connections_per_address = 0\n",
        None,
    );
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    // The ninth is closed as soon as it is accepted, without waiting for any time-out.
    let mut ninth = TcpStream::connect(s.addr).await.unwrap();
    let got = until_closed(&mut ninth, "a connection over the cap").await;
    assert!(got.is_empty(), "{got:?}");
    // When the idle clients go, their slots come back.
    drop(idle);
    let client = client_from("127.0.0.1");
    let answer = tokio::time::timeout(PATIENCE, async {
        loop {
            let attempt = client
                .post(format!("{}/app-data-search/v3/tran-query", s.base))
                .body("{}")
                .send()
                .await;
            if let Ok(response) = attempt {
                return response.json::<serde_json::Value>().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slots of closed connections came back");
    assert_eq!(answer["ret_code"], "000020", "{answer}");
}
