//! A real WebSocket POS terminal for tests, speaking the hub's protocol.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct TestTerminal {
    socket: Socket,
}

/// The handshake signature, written here independently of the gateway.
pub fn handshake(secret: &str, tid: &str, timestamp: i64, nonce: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{tid}\n{timestamp}\n{nonce}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl TestTerminal {
    /// Connects and says hello; returns the gateway's first answer too.
    pub async fn connect_raw(
        base: &str,
        tid: &str,
        secret: &str,
        timestamp: i64,
        nonce: &str,
    ) -> (TestTerminal, Value) {
        let url = format!("{}/terminal/v1/ws", base.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let mut t = TestTerminal { socket };
        let hello = json!({
            "type": "hello",
            "tid": tid,
            "timestamp": timestamp,
            "nonce": nonce,
            "signature": handshake(secret, tid, timestamp, nonce),
        });
        t.send(hello).await;
        let first = t.next().await.expect("an answer to hello");
        (t, first)
    }

    pub async fn connect(base: &str, tid: &str, secret: &str) -> TestTerminal {
        let nonce = crate::helpers::reference("nonce");
        let (t, first) =
            TestTerminal::connect_raw(base, tid, secret, chrono::Utc::now().timestamp(), &nonce)
                .await;
        assert_eq!(first["type"], "welcome", "{first}");
        t
    }

    pub async fn send(&mut self, v: Value) {
        self.socket
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON message (pings are answered by the library); None when closed or after 30 s.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for the next command.
    pub async fn command(&mut self) -> Value {
        loop {
            let m = self.next().await.expect("a command");
            if m["type"] == "command" {
                return m["command"].clone();
            }
        }
    }

    /// Acknowledges, reports the usual progress and sends the result; waits for "done".
    pub async fn complete(&mut self, command: &Value, outcome: &str) {
        let id = command["id"].clone();
        self.send(json!({"type": "ack", "id": id})).await;
        for stage in ["received", "shown to customer", "processing"] {
            self.send(json!({"type": "progress", "id": id, "stage": stage}))
                .await;
        }
        self.send(json!({"type": "result", "id": id, "outcome": outcome}))
            .await;
        loop {
            let m = self.next().await.expect("done");
            if m["type"] == "done" {
                assert_eq!(m["id"], id);
                return;
            }
        }
    }

    /// Drops the connection without a word, like a terminal losing power.
    pub async fn drop_connection(self) {
        let mut socket = self.socket;
        let _ = socket.get_mut();
        drop(socket);
    }
}
