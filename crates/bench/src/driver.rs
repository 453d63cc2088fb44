//! The load generator: a closed loop at a fixed concurrency, or an open loop at a fixed rate,
//! each with a warm-up and a measured window, bounded in operations and in time.
//!
//! Around the measured window it reads the server's CPU time, its store counters and the
//! client's own CPU time, so that every figure of a run covers exactly the same interval.

use crate::client::{Conn, REQUEST_TIMEOUT};
use crate::metrics::Commits;
use crate::procfs;
use crate::schedule::{due_before, intended_offset_ns};
use crate::stats::Latency;
use crate::workload::{OpResult, Shared, Worker, Workload};
use anyhow::Context;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Load {
    /// `concurrency` connections, each sending its next request as soon as the last answered.
    Closed { concurrency: u32 },
    /// Requests intended at `rate` per second, sent over up to `connections` connections;
    /// latency counts from the intended time.
    Open { rate: u64, connections: u32 },
}

impl Load {
    pub fn connections(self) -> u32 {
        match self {
            Load::Closed { concurrency } => concurrency,
            Load::Open { connections, .. } => connections,
        }
    }

    pub fn label(self) -> String {
        match self {
            Load::Closed { concurrency } => format!("c={concurrency}"),
            Load::Open { rate, connections } => format!("{rate}/s c≤{connections}"),
        }
    }
}

/// One run's plan.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub workload: Workload,
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    /// An upper bound on operations started, warm-up included.
    pub max_ops: u64,
    pub seed: u64,
}

/// One server process under test: where it listens and its process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub addr: SocketAddr,
    pub pid: u32,
}

/// The processes being measured: one server, or several gateway nodes on one database, whose
/// connections the workers spread over (worker `i` talks to node `i mod N`).
#[derive(Debug, Clone)]
pub struct Target {
    pub nodes: Vec<Node>,
    /// Whether they serve tillgate's `/metrics`.
    pub metrics: bool,
    /// The command name of a database server's processes whose CPU the run also reads
    /// (`postgres`); SQLite runs inside the gateway.
    pub db_comm: Option<&'static str>,
    /// The HTTP wallet (simulator) the gateways call, when they call one: its CPU is read
    /// apart, so it counts neither as the gateway's nor as the rest of the machine's.
    pub wallet_pid: Option<u32>,
}

impl Target {
    /// One server process.
    pub fn one(node: Node, metrics: bool, db_comm: Option<&'static str>) -> Target {
        Target {
            nodes: vec![node],
            metrics,
            db_comm,
            wallet_pid: None,
        }
    }

    /// The node worker `id` talks to.
    pub fn node_of(&self, id: u32) -> Node {
        self.nodes[id as usize % self.nodes.len()]
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub requests: u64,
    pub elapsed_ns: u64,
    pub latency: Latency,
    /// Open loop: how late requests left after their intended time (client-side lag).
    pub send_lag: Option<Latency>,
    /// Open loop: operations intended in the window that were never sent before the drain
    /// deadline; each is counted in the latency with the lower bound it had reached.
    pub unsent: u64,
    /// CPU of the gateway processes (all nodes together).
    pub server_cpu_ns: u64,
    pub client_cpu_ns: u64,
    /// CPU of the database server's processes (PostgreSQL), when there is one.
    pub db_cpu_ns: Option<u64>,
    /// CPU of the HTTP wallet simulator, when the gateways call one.
    pub wallet_cpu_ns: Option<u64>,
    /// CPU the rest of the machine used in the window (other processes: a compiler, a
    /// database server). A busy machine makes every figure of the run lower.
    pub other_cpu_ns: u64,
    pub store_operations: Option<u64>,
    pub store_commits: Option<u64>,
    /// The largest peak resident memory of one gateway node.
    pub server_peak_rss_bytes: Option<u64>,
    /// Refund references the gateway acknowledged as succeeded during the whole run (warm-up
    /// and drain included), to check afterwards that each one is stored; not serialized.
    #[serde(skip)]
    pub acknowledged_refunds: Vec<String>,
    /// The cancel pool ran out (or every worker stopped) before the window ended.
    pub stopped_early: bool,
    pub first_error: Option<String>,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// A worker gives up after this many failures in a row: the server is down or refuses
/// everything, and spinning on it would only burn the CPU the server needs.
const MAX_CONSECUTIVE_FAILURES: u32 = 1000;

#[derive(Default)]
struct WorkerOut {
    ok: u64,
    failed: u64,
    requests: u64,
    samples: Vec<u64>,
    lags: Vec<u64>,
    unsent: u64,
    first_error: Option<String>,
    acknowledged_refunds: Vec<String>,
}

impl WorkerOut {
    fn merge(&mut self, o: WorkerOut) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.requests += o.requests;
        self.samples.extend(o.samples);
        self.lags.extend(o.lags);
        self.unsent += o.unsent;
        self.acknowledged_refunds.extend(o.acknowledged_refunds);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn record(&mut self, r: &OpResult, latency_ns: u64) {
        match r {
            OpResult::Ok { requests } => {
                self.ok += 1;
                self.requests += u64::from(*requests);
                self.samples.push(latency_ns);
            }
            OpResult::Failed { requests, why } => {
                self.failed += 1;
                self.requests += u64::from(*requests);
                // A failed operation's latency counts too: a fast error is not a free pass.
                self.samples.push(latency_ns);
                if self.first_error.is_none() {
                    self.first_error = Some(why.clone());
                }
            }
            OpResult::Exhausted => {}
        }
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Counters read at the edges of the measured window.
struct Snapshot {
    server_cpu_ns: u64,
    client_cpu_ns: u64,
    db_cpu_ns: Option<u64>,
    wallet_cpu_ns: Option<u64>,
    machine_busy_ns: u64,
    commits: Option<Commits>,
}

/// Reads every node's counters (summed) and CPU; `probes` has one connection per node.
async fn snapshot(target: &Target, probes: &mut [Conn], ticks: u64) -> anyhow::Result<Snapshot> {
    let mut commits = None;
    if target.metrics {
        let mut sum = Commits::default();
        for probe in probes.iter_mut() {
            let answer = probe
                .get("/metrics")
                .await
                .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
            let c =
                Commits::parse(answer.body_text()).context("/metrics lacks the store counters")?;
            sum.operations += c.operations;
            sum.commits += c.commits;
        }
        commits = Some(sum);
    }
    let mut server_cpu_ns = 0;
    for node in &target.nodes {
        server_cpu_ns += procfs::cpu_ns(node.pid, ticks)?;
    }
    Ok(Snapshot {
        server_cpu_ns,
        client_cpu_ns: procfs::cpu_ns(std::process::id(), ticks)?,
        db_cpu_ns: target.db_comm.map(|c| procfs::processes_cpu_ns(c, ticks)),
        wallet_cpu_ns: match target.wallet_pid {
            Some(pid) => Some(procfs::cpu_ns(pid, ticks)?),
            None => None,
        },
        machine_busy_ns: procfs::machine_busy_ns(ticks)?,
        commits,
    })
}

/// Runs `spec` against `target`.
pub async fn run(spec: Spec, shared: Arc<Shared>, target: Target) -> anyhow::Result<Measured> {
    let ticks = procfs::clock_ticks_per_s();
    anyhow::ensure!(!target.nodes.is_empty(), "no server to measure");
    let mut probes = target
        .nodes
        .iter()
        .map(|n| Conn::new(n.addr))
        .collect::<anyhow::Result<Vec<Conn>>>()?;
    let connections = spec.load.connections().max(1);
    let (done_tx, mut done_rx) = watch::channel(false);
    let done_tx = Arc::new(done_tx);
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    // The schedule starts a little after the workers are spawned, so the first intended
    // requests do not count the spawning as latency.
    let t_start = Instant::now() + Duration::from_millis(20);
    let m0 = t_start + spec.warmup;
    let m1 = m0 + spec.duration;
    // An open loop that fell behind gets this long after the window to send what was due.
    let drain_deadline = m1 + spec.duration.max(Duration::from_secs(5));

    let mut handles = Vec::with_capacity(connections as usize);
    for id in 0..connections {
        let mut conn = Conn::new(target.node_of(id).addr)?;
        let mut worker = Worker::new(u64::from(id), spec.seed, shared.clone());
        let (done_tx, finished, started, phase) = (
            done_tx.clone(),
            finished.clone(),
            started.clone(),
            phase.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            let mut failures_in_a_row = 0u32;
            match spec.load {
                Load::Closed { .. } => {
                    tokio::time::sleep_until(t_start).await;
                    while phase.load(Ordering::Relaxed) != STOP
                        && started.fetch_add(1, Ordering::Relaxed) < spec.max_ops
                        && failures_in_a_row < MAX_CONSECUTIVE_FAILURES
                    {
                        let t0 = Instant::now();
                        let r = worker.op(spec.workload, &mut conn).await;
                        let latency = ns(t0.elapsed());
                        if r == OpResult::Exhausted {
                            break;
                        }
                        failures_in_a_row = match r {
                            OpResult::Failed { .. } => failures_in_a_row + 1,
                            _ => 0,
                        };
                        if phase.load(Ordering::Relaxed) == MEASURE {
                            out.record(&r, latency);
                        }
                    }
                }
                Load::Open { rate, .. } => loop {
                    let i = started.fetch_add(1, Ordering::Relaxed);
                    let intended = t_start + Duration::from_nanos(intended_offset_ns(i, rate));
                    if i >= spec.max_ops || intended >= m1 {
                        break;
                    }
                    if Instant::now() > drain_deadline
                        || failures_in_a_row >= MAX_CONSECUTIVE_FAILURES
                    {
                        // Claimed but never sent: it still counts, with the latency it had
                        // reached when the run gave up on it.
                        if intended >= m0 {
                            out.unsent += 1;
                            out.samples.push(ns(Instant::now() - intended));
                        }
                        continue;
                    }
                    tokio::time::sleep_until(intended).await;
                    let sent = Instant::now();
                    let r = worker.op(spec.workload, &mut conn).await;
                    let end = Instant::now();
                    if r == OpResult::Exhausted {
                        break;
                    }
                    failures_in_a_row = match r {
                        OpResult::Failed { .. } => failures_in_a_row + 1,
                        _ => 0,
                    };
                    if intended >= m0 {
                        out.record(&r, ns(end - intended));
                        out.lags.push(ns(sent - intended));
                    }
                },
            }
            out.acknowledged_refunds = worker.take_acknowledged_refunds();
            if finished.fetch_add(1, Ordering::Relaxed) + 1 == connections as usize {
                let _ = done_tx.send(true);
            }
            out
        }));
    }

    // Warm-up, then the measured window, each cut short if every worker has stopped.
    let all_done = |rx: &mut watch::Receiver<bool>, until: Instant| {
        let mut rx = rx.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => false,
                _ = rx.wait_for(|d| *d) => true,
            }
        }
    };
    all_done(&mut done_rx, m0).await;
    let before = snapshot(&target, &mut probes, ticks).await?;
    phase.store(MEASURE, Ordering::Relaxed);
    let measure_start = Instant::now();
    let stopped_early = all_done(&mut done_rx, m1).await;
    let elapsed = if matches!(spec.load, Load::Open { .. }) && !stopped_early {
        // The open loop's window is its schedule's, whatever the timer jitter.
        spec.duration
    } else {
        measure_start.elapsed()
    };
    phase.store(STOP, Ordering::Relaxed);
    let after = snapshot(&target, &mut probes, ticks).await?;

    let mut out = WorkerOut::default();
    let join_deadline = drain_deadline + REQUEST_TIMEOUT + Duration::from_secs(5);
    for h in handles {
        match tokio::time::timeout_at(join_deadline, h).await {
            Ok(Ok(o)) => out.merge(o),
            Ok(Err(e)) => anyhow::bail!("a worker failed: {e}"),
            Err(_) => anyhow::bail!("a worker did not stop in time"),
        }
    }
    if let Load::Open { rate, .. } = spec.load {
        // Requests due in the window that no worker ever claimed (every worker gave up):
        // counted as unsent, each with the latency it had reached at the drain deadline.
        let first = due_before(ns(m0 - t_start), rate);
        let end = due_before(ns(m1 - t_start), rate).min(spec.max_ops);
        let claimed = started.load(Ordering::Relaxed);
        let now = Instant::now();
        for i in claimed.max(first)..end {
            let intended = t_start + Duration::from_nanos(intended_offset_ns(i, rate));
            out.unsent += 1;
            out.samples
                .push(ns(now.saturating_duration_since(intended)));
        }
    }

    let commits = match (before.commits, after.commits) {
        (Some(b), Some(a)) => Some(b.delta(a)),
        _ => None,
    };
    let send_lag = match spec.load {
        Load::Open { .. } => Some(Latency::of(&mut out.lags)),
        Load::Closed { .. } => None,
    };
    let server_cpu_ns = after.server_cpu_ns.saturating_sub(before.server_cpu_ns);
    let client_cpu_ns = after.client_cpu_ns.saturating_sub(before.client_cpu_ns);
    let db_cpu_ns = match (before.db_cpu_ns, after.db_cpu_ns) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let wallet_cpu_ns = match (before.wallet_cpu_ns, after.wallet_cpu_ns) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let other_cpu_ns = after
        .machine_busy_ns
        .saturating_sub(before.machine_busy_ns)
        .saturating_sub(
            server_cpu_ns + client_cpu_ns + db_cpu_ns.unwrap_or(0) + wallet_cpu_ns.unwrap_or(0),
        );
    let server_peak_rss_bytes = target
        .nodes
        .iter()
        .filter_map(|n| procfs::peak_rss_bytes(n.pid).ok())
        .max();
    Ok(Measured {
        ops_ok: out.ok,
        ops_failed: out.failed,
        requests: out.requests,
        elapsed_ns: ns(elapsed),
        latency: Latency::of(&mut out.samples),
        send_lag,
        unsent: out.unsent,
        server_cpu_ns,
        client_cpu_ns,
        db_cpu_ns,
        wallet_cpu_ns,
        other_cpu_ns,
        store_operations: commits.map(|c| c.operations),
        store_commits: commits.map(|c| c.commits),
        server_peak_rss_bytes,
        acknowledged_refunds: out.acknowledged_refunds,
        stopped_early,
        first_error: out.first_error,
    })
}

/// Adds transactions through the API, unmeasured, for a cancel run, for `time` or until there
/// are `count` of them; returns their references. Adding is cheaper than cancelling (one
/// durable write against two), so adding for as long as the run lasts leaves enough to cancel
/// however fast the gateway is.
pub async fn prepare_cancel_pool(
    shared: Arc<Shared>,
    addr: SocketAddr,
    count: usize,
    time: Duration,
    connections: u32,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + time;
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for id in 0..connections.max(1) {
        let mut conn = Conn::new(addr)?;
        // Worker ids far above any run's, so the keys never meet a measured run's keys.
        let mut worker = Worker::new(1_000_000 + u64::from(id), seed, shared.clone());
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut refs = Vec::new();
            while Instant::now() < until && next.fetch_add(1, Ordering::Relaxed) < count {
                refs.push(worker.add(&mut conn).await?);
            }
            Ok::<_, String>(refs)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let refs = h
            .await?
            .map_err(|e| anyhow::anyhow!("adding the transactions to cancel failed: {e}"))?;
        all.extend(refs);
    }
    Ok(all)
}

/// Adds and pays `count` transactions through the gateway nodes of `target` (unmeasured, over
/// `connections` connections spread over the nodes), for a run whose wallet must know the
/// payments it refunds; returns their `transactionNo`s.
pub async fn prepare_paid_pool(
    shared: Arc<Shared>,
    target: &Target,
    count: usize,
    connections: u32,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for id in 0..connections.max(1) {
        let mut conn = Conn::new(target.node_of(id).addr)?;
        // Worker ids far above any run's, so the keys never meet a measured run's keys.
        let mut worker = Worker::new(2_000_000 + u64::from(id), seed, shared.clone());
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut paid = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                paid.push(worker.paid_transaction(&mut conn).await?);
            }
            Ok::<_, String>(paid)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for h in handles {
        let paid = h
            .await?
            .map_err(|e| anyhow::anyhow!("paying the transactions to refund failed: {e}"))?;
        all.extend(paid);
    }
    Ok(all)
}
