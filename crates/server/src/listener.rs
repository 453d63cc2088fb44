//! The HTTP listener: hyper's HTTP/1 server with a time-out on every phase of a request and
//! caps on the connections it holds, so that one slow, silent or greedy client cannot take the
//! service away from the others.
//!
//! - The head: hyper's `header_read_timeout` (with a timer) closes a connection whose request
//!   line and headers have not all arrived in time, counted from when it is ready for a request.
//! - The body: [`read_body_in_time`] reads the whole body under its own deadline before any
//!   handler runs, and answers in the dialect's envelope with HTTP 408 when it is late.
//! - Idle: a kept-alive connection with no request in progress for `idle_timeout` is shut down
//!   with hyper's `graceful_shutdown`.
//! - Caps: a connection over `max_connections`, or over `max_connections_per_address` from one
//!   address, is closed as soon as it is accepted, before it costs anything else. The global
//!   cap is lowered at start to what the descriptor limit leaves room for, so accepting never
//!   fails for want of a descriptor while the gateway holds idle connections.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// What one connection is allowed.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// 0: no cap of its own.
    pub max_connections_per_address: usize,
}

impl Limits {
    pub fn from_config(http: &crate::config::HttpConfig, mode: crate::config::Mode) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms.max(1)),
            max_connections: http.max_connections.max(1),
            max_connections_per_address: http.per_address(mode),
        }
    }

    /// The connection cap lowered to what `descriptors` (the process's soft limit) leaves
    /// after `reserved` descriptors for everything else (database, files, outbound clients).
    pub fn within_descriptors(mut self, descriptors: Option<u64>, reserved: u64) -> Limits {
        if let Some(limit) = descriptors {
            let room = usize::try_from(limit.saturating_sub(reserved))
                .unwrap_or(usize::MAX)
                .max(1);
            if room < self.max_connections {
                tracing::warn!(
                    max_connections = self.max_connections,
                    descriptor_limit = limit,
                    lowered_to = room,
                    "the descriptor limit leaves room for fewer connections than configured; \
                     raise it (ulimit -n) to hold more"
                );
                self.max_connections = room;
            }
        }
        self
    }
}

/// The soft limit on open descriptors of this process, where the platform has one.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The key under which a client address is counted and rate-limited: an IPv4 address as it
/// is, an IPv6 address by its /64 (one subscriber's whole network), a mapped IPv4 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Open connections per client address.
struct PerAddress {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn enter(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        if table.cap > 0 {
            let mut open = table.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(key).or_insert(0);
            if *n >= table.cap {
                return None;
            }
            *n += 1;
        }
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if self.table.cap == 0 {
            return;
        }
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Whether a connection has a request in progress, and since when it has none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
}

/// A request in progress on a connection; dropping it (the answer is ready) starts the idle
/// clock when it was the last one.
struct Busy(Arc<Activity>);

impl Activity {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(activity.clone())
    }

    /// When the connection, idle since its last answer, is due to close; `None` while a
    /// request is in progress or before the first one.
    fn deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        since.map(|s| s + idle)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        *since = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requests in progress on every connection, by method and path, with their start.
#[derive(Clone, Default)]
struct InFlight {
    next: Arc<AtomicUsize>,
    requests: Arc<Mutex<HashMap<usize, (String, Instant)>>>,
}

/// A request's entry in [`InFlight`], removed when the request is answered (or dropped).
struct Entry {
    table: InFlight,
    id: usize,
}

impl InFlight {
    fn enter(&self, what: String) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (what, Instant::now()));
        Entry {
            table: self.clone(),
            id,
        }
    }

    /// One line per request, oldest first: "POST /Payments for 12 s".
    fn describe(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = requests.values().collect();
        all.sort_by_key(|(_, since)| *since);
        all.into_iter()
            .map(|(what, since)| format!("{what} for {} s", since.elapsed().as_secs()))
            .collect()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// How often a shutdown that waits says again what it waits for.
const DRAIN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in progress, and returns when all are closed. Each request
/// carries the client's address as `ConnectInfo<SocketAddr>`. While it waits, it logs what for
/// — the requests in progress, and what `waiting` names (the terminal commands they wait on) —
/// at once and every few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    waiting: impl Fn() -> Vec<String> + Send + 'static,
) {
    let in_flight = InFlight::default();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress {
        cap: limits.max_connections_per_address,
        open: Mutex::new(HashMap::new()),
    });
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, cap = limits.max_connections, "connection refused: the gateway holds as many as it may");
            continue;
        };
        let Some(slot) = PerAddress::enter(&per_address, peer.ip()) else {
            tracing::debug!(%peer, cap = limits.max_connections_per_address, "connection refused: its address holds as many as it may");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            stopping.clone(),
            (permit, slot),
            in_flight.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = permits.acquire_many(all);
    tokio::pin!(drained);
    let mut report = tokio::time::interval(DRAIN_REPORT_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = &mut drained => break,
            _ = report.tick() => report_drain(&in_flight.describe(), &waiting()),
        }
    }
}

/// Logs what a shutdown is waiting for, if anything.
fn report_drain(requests: &[String], commands: &[String]) {
    if requests.is_empty() && commands.is_empty() {
        return;
    }
    let mut text = format!(
        "shutting down: waiting for {} request(s) in flight: {}",
        requests.len(),
        requests.join(", ")
    );
    if !commands.is_empty() {
        text.push_str(&format!(
            "; they wait for the terminal: {}",
            commands.join(", ")
        ));
    }
    tracing::warn!("{text}; a second Ctrl-C (SIGINT or SIGTERM) stops at once");
}

/// An error of `accept`: one refused connection is nothing; anything else (the descriptor
/// limit) waits a moment instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection until the client closes it, a time-out closes it, or the gateway
/// stops. `_held` (its permit and address slot) is given back when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    _held: (OwnedSemaphorePermit, AddressSlot),
    in_flight: InFlight,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: Mutex::new(None),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Activity::begin(&requests);
        let entry = in_flight.enter(format!("{} {}", request.method(), request.uri().path()));
        let router = router.clone();
        async move {
            let answer = router.oneshot(request.map(Body::new)).await;
            drop(entry);
            drop(busy);
            answer
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = *stopping.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_deadline = activity.deadline(limits.idle_timeout);
        // While a request is in progress (or before the first), look again after a while.
        let wake = idle_deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                break;
            }
            () = tokio::time::sleep_until(wake), if !closing => {
                if activity.deadline(limits.idle_timeout).is_some_and(|d| d <= Instant::now()) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_its_slots_back() {
        let table = Arc::new(PerAddress {
            cap: 2,
            open: Mutex::new(HashMap::new()),
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let one = PerAddress::enter(&table, ip).unwrap();
        let _two = PerAddress::enter(&table, ip).unwrap();
        assert!(PerAddress::enter(&table, ip).is_none());
        assert!(PerAddress::enter(&table, other).is_some());
        drop(one);
        assert!(PerAddress::enter(&table, ip).is_some());
    }

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 1024,
            max_connections_per_address: 0,
        };
        assert_eq!(
            limits
                .clone()
                .within_descriptors(Some(256), 96)
                .max_connections,
            160
        );
        assert_eq!(
            limits
                .clone()
                .within_descriptors(Some(10), 96)
                .max_connections,
            1
        );
        assert_eq!(limits.within_descriptors(None, 96).max_connections, 1024);
    }
}
