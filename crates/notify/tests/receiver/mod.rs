//! A real HTTP/1.1 receiver on a loopback port, written on plain TCP so that it can also
//! misbehave: answer late, redirect, or accept connections and never answer at all.

// Shared by test binaries that each use a part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers `status` with `body` (and the extra header lines) at once.
    Answer {
        status: u16,
        headers: String,
        body: String,
    },
    /// Accepts the connection, reads the request and never answers.
    Blackhole,
}

impl Behaviour {
    pub fn success() -> Behaviour {
        Behaviour::Answer {
            status: 200,
            headers: String::new(),
            body: "success".into(),
        }
    }
}

/// One request that arrived: when, and its body.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub body: String,
}

pub struct Receiver {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (c, o, m, a) = (
            connections.clone(),
            open.clone(),
            most_open.clone(),
            arrivals.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let now_open = o.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now_open, Ordering::SeqCst);
                let (o, a, behaviour) = (o.clone(), a.clone(), behaviour.clone());
                tokio::spawn(async move {
                    serve(stream, &behaviour, &a).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Receiver {
            port,
            connections,
            open,
            most_open,
            arrivals,
            task,
        }
    }

    pub fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/ipn", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn most_open(&self) -> usize {
        self.most_open.load(Ordering::SeqCst)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived, at most `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.arrivals();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads one request (head and a Content-Length body), records it, and behaves.
async fn serve(mut stream: TcpStream, behaviour: &Behaviour, arrivals: &Mutex<Vec<Arrival>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < body_start + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    arrivals.lock().unwrap().push(Arrival {
        at: Instant::now(),
        body: String::from_utf8_lossy(&buf[body_start..]).into_owned(),
    });
    match behaviour {
        Behaviour::Blackhole => {
            // Hold the connection open and say nothing, until the sender gives up.
            let _ = stream.read(&mut chunk).await;
        }
        Behaviour::Answer {
            status,
            headers,
            body,
        } => {
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}
