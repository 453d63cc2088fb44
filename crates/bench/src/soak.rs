//! `tillgate-bench soak`: minutes of steady mixed load on one gateway process, sampled every few
//! seconds, to see what a short run cannot: whether throughput and p99 hold, whether resident
//! memory and open file descriptors stay flat, and whether the outbox keeps up and drains.
//!
//! Every added transaction and every refund names the bench's own notification receiver as its
//! `ipnUrl` (loopback is allowed in sandbox mode), so the gateway's outbox sends real
//! notifications throughout. After the load the sampling goes on, without load, until the
//! outbox is empty or the drain limit is reached.

use crate::client::Conn;
use crate::metrics::counter;
use crate::pockyt::Signer;
use crate::procfs;
use crate::seed;
use crate::server::{self, Server};
use crate::stats::{fmt_ns, per_second, Latency};
use crate::suite::{Bench, Db};
use crate::svg::{self, Panel, Unit};
use crate::workload::{OpResult, Shared, Worker, Workload};
use anyhow::Context;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Notifications waiting in the outbox (sent or not yet), and those due now.
pub const PENDING: &str = "tillgate_notifications_pending";
pub const DUE: &str = "tillgate_notifications_due";

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    pub load: Duration,
    pub interval: Duration,
    pub concurrency: u32,
    pub existing: u64,
    pub seed: u64,
    /// The longest the sampling goes on after the load, waiting for the outbox to drain.
    pub drain_limit: Duration,
}

/// Whether a sample was taken under load or while the outbox drained after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Load,
    Drain,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Drain => "drain",
        }
    }
}

/// The operations finished in one interval.
#[derive(Debug, Default)]
pub struct Window {
    pub ok: u64,
    pub failed: u64,
    pub latencies_ns: Vec<u64>,
    pub first_error: Option<String>,
}

impl Window {
    fn record(&mut self, r: &OpResult, latency_ns: u64) {
        match r {
            OpResult::Ok { .. } => self.ok += 1,
            OpResult::Failed { why, .. } => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(why.clone());
                }
            }
            OpResult::Exhausted => return,
        }
        // A failed operation's latency counts too, as in the other runs.
        self.latencies_ns.push(latency_ns);
    }
}

/// The gateway's state read at the end of an interval; `None` where a reading failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probes {
    pub rss_bytes: Option<u64>,
    pub fds: Option<u64>,
    pub pending: Option<u64>,
    pub due: Option<u64>,
    /// Notifications the bench's receiver got in the interval.
    pub notified: u64,
}

/// One row of the soak: an interval's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Seconds from the start of the load to the end of the interval.
    pub t_s: u64,
    pub phase: Phase,
    pub ok: u64,
    pub failed: u64,
    /// Successful operations per second in the interval.
    pub ops_per_s: u64,
    /// p99 of every operation finished in the interval (0 when none was).
    pub p99_ns: u64,
    pub probes: Probes,
}

impl Sample {
    /// The figures of `window`, which lasted `elapsed`, taken `t_s` seconds into the soak.
    pub fn of(
        t_s: u64,
        phase: Phase,
        mut window: Window,
        elapsed: Duration,
        probes: Probes,
    ) -> Sample {
        let latency = Latency::of(&mut window.latencies_ns);
        let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        Sample {
            t_s,
            phase,
            ok: window.ok,
            failed: window.failed,
            ops_per_s: per_second(window.ok, elapsed_ns),
            p99_ns: latency.p99_ns,
            probes,
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn mib(bytes: u64) -> String {
    let tenths = bytes * 10 / (1024 * 1024);
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// The heading of the terminal table.
pub fn table_heading() -> String {
    format!(
        "{:>6} {:<5} {:>8} {:>6} {:>9} {:>9} {:>5} {:>8} {:>5} {:>8}",
        "t", "phase", "ops/s", "failed", "p99", "RSS MiB", "fds", "backlog", "due", "notified"
    )
}

/// One line of the terminal table.
pub fn table_row(s: &Sample) -> String {
    format!(
        "{:>5}s {:<5} {:>8} {:>6} {:>9} {:>9} {:>5} {:>8} {:>5} {:>8}",
        s.t_s,
        s.phase.name(),
        s.ops_per_s,
        s.failed,
        if s.ok + s.failed == 0 {
            "-".to_owned()
        } else {
            fmt_ns(s.p99_ns)
        },
        s.probes.rss_bytes.map_or_else(|| "-".to_owned(), mib),
        opt(s.probes.fds),
        opt(s.probes.pending),
        opt(s.probes.due),
        s.probes.notified
    )
}

/// The samples as CSV, one line per interval, an empty field where a reading failed.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,phase,ops_ok,ops_failed,ops_per_s,p99_ns,rss_bytes,fds,\
         notifications_pending,notifications_due,notifications_received\n",
    );
    let field = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.phase.name(),
            s.ok,
            s.failed,
            s.ops_per_s,
            s.p99_ns,
            field(s.probes.rss_bytes),
            field(s.probes.fds),
            field(s.probes.pending),
            field(s.probes.due),
            s.probes.notified
        );
    }
    out
}

/// First, last, least and most of a series' readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
    pub min: u64,
    pub max: u64,
}

impl Span {
    pub fn of(values: impl Iterator<Item = u64>) -> Option<Span> {
        values.fold(None, |acc, v| {
            Some(match acc {
                None => Span {
                    first: v,
                    last: v,
                    min: v,
                    max: v,
                },
                Some(s) => Span {
                    first: s.first,
                    last: v,
                    min: s.min.min(v),
                    max: s.max.max(v),
                },
            })
        })
    }
}

/// A line of the summary: its name, its span and how its values print.
type SummaryRow<'a> = (&'a str, Option<Span>, fn(u64) -> String);

/// Start, end, least and most of each series: throughput and p99 under load, the gateway's
/// memory, descriptors and backlog over the whole soak.
pub fn summary(samples: &[Sample]) -> String {
    let load = || samples.iter().filter(|s| s.phase == Phase::Load);
    let all = || samples.iter();
    let rows: [SummaryRow<'_>; 5] = [
        ("ops/s (load)", Span::of(load().map(|s| s.ops_per_s)), |v| {
            v.to_string()
        }),
        ("p99 (load)", Span::of(load().map(|s| s.p99_ns)), fmt_ns),
        (
            "RSS MiB",
            Span::of(all().filter_map(|s| s.probes.rss_bytes)),
            mib,
        ),
        ("fds", Span::of(all().filter_map(|s| s.probes.fds)), |v| {
            v.to_string()
        }),
        (
            "backlog",
            Span::of(all().filter_map(|s| s.probes.pending)),
            |v| v.to_string(),
        ),
    ];
    let mut out = format!(
        "{:<13} {:>9} {:>9} {:>9} {:>9}\n",
        "series", "start", "end", "min", "max"
    );
    for (name, span, f) in rows {
        match span {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "{name:<13} {:>9} {:>9} {:>9} {:>9}",
                    f(s.first),
                    f(s.last),
                    f(s.min),
                    f(s.max)
                );
            }
            None => {
                let _ = writeln!(out, "{name:<13} {:>9}", "no data");
            }
        }
    }
    let ok: u64 = samples.iter().map(|s| s.ok).sum();
    let failed: u64 = samples.iter().map(|s| s.failed).sum();
    let notified: u64 = samples.iter().map(|s| s.probes.notified).sum();
    let _ = writeln!(
        out,
        "{ok} operations ok, {failed} failed; {notified} notifications received"
    );
    out
}

/// The SVG of the soak: one chart per series over time.
pub fn plot(title: &str, samples: &[Sample]) -> String {
    let series = |f: &dyn Fn(&Sample) -> Option<u64>| -> Vec<(u64, u64)> {
        samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t_s, v)))
            .collect()
    };
    let under_load = |s: &Sample| s.phase == Phase::Load || s.ok + s.failed > 0;
    let panels = vec![
        Panel {
            title: "throughput, operations/s".into(),
            points: series(&|s| under_load(s).then_some(s.ops_per_s)),
            unit: Unit::Count,
        },
        Panel {
            title: "p99 latency of the interval".into(),
            points: series(&|s| (s.ok + s.failed > 0).then_some(s.p99_ns)),
            unit: Unit::Nanoseconds,
        },
        Panel {
            title: "gateway resident memory (VmRSS)".into(),
            points: series(&|s| s.probes.rss_bytes),
            unit: Unit::Bytes,
        },
        Panel {
            title: "gateway open file descriptors".into(),
            points: series(&|s| s.probes.fds),
            unit: Unit::Count,
        },
        Panel {
            title: "outbox backlog (tillgate_notifications_pending)".into(),
            points: series(&|s| s.probes.pending),
            unit: Unit::Count,
        },
    ];
    let load_end = samples
        .iter()
        .filter(|s| s.phase == Phase::Load)
        .map(|s| s.t_s)
        .max();
    svg::timeline(title, &panels, load_end)
}

/// The bench's notification receiver: answers every POST with `success` (Pockyt's
/// acknowledgement) and counts them.
struct Receiver {
    url: String,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the notification receiver")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let app = axum::Router::new().fallback(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                "success"
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url: format!("http://{addr}/ipn"),
            received,
            task,
        })
    }
}

async fn probe(pid: u32, conn: &mut Conn) -> Probes {
    let (pending, due) = match conn.get("/metrics").await {
        Ok(a) if a.status == 200 => (counter(a.body_text(), PENDING), counter(a.body_text(), DUE)),
        _ => (None, None),
    };
    Probes {
        rss_bytes: procfs::rss_bytes(pid).ok(),
        fds: procfs::open_fds(pid).ok(),
        pending,
        due,
        notified: 0,
    }
}

/// Seeds `db`, starts the gateway on it and soaks it; returns the samples, printing each as it
/// is taken.
pub async fn run(bench: &mut Bench, db: &Db, spec: &SoakSpec) -> anyhow::Result<Vec<Sample>> {
    let prepared = bench.prepare(db, spec.existing).await?;
    eprintln!("{prepared}");
    let receiver = Receiver::start().await?;
    let settings = &bench.settings;
    let cmd = server::tillgate_command(&settings.tillgate, &db.url(), &settings.work_dir);
    let gateway = Server::start(cmd, "tillgate").await?;
    let result = soak(&gateway, &receiver, spec).await;
    let tail = gateway.stderr_tail();
    let stopped = gateway.stop().await;
    receiver.task.abort();
    let samples = result.map_err(|e| anyhow::anyhow!("{e:#}\n[server: {tail}]"))?;
    stopped?;
    Ok(samples)
}

async fn soak(
    gateway: &Server,
    receiver: &Receiver,
    spec: &SoakSpec,
) -> anyhow::Result<Vec<Sample>> {
    let shared = Arc::new(Shared {
        signer: Signer::default(),
        existing: spec.existing,
        tag: format!("s{}", seed::now_ms()),
        cancel_pool: None,
        ipn_url: Some(receiver.url.clone()),
        paid: None,
        // Minutes of refunds: their references would only grow the bench's memory.
        track_refunds: false,
    });
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in 0..spec.concurrency.max(1) {
        let mut conn = Conn::new(gateway.addr)?;
        let mut worker = Worker::new(u64::from(id), spec.seed, shared.clone());
        let (window, stop) = (window.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = worker.op(Workload::Mix, &mut conn).await;
                let latency = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if let OpResult::Failed { .. } = r {
                    // Do not spin on a gateway that refuses everything.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                window
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(&r, latency);
            }
        }));
    }

    let mut metrics_conn = Conn::new(gateway.addr)?;
    let mut samples = Vec::new();
    let mut notified_before = 0u64;
    let start = Instant::now();
    let end = start + spec.load;
    let drain_end = end + spec.drain_limit;
    let (mut deadline, mut last) = (start, start);
    let mut first_error: Option<String> = None;
    println!("{}", table_heading());
    loop {
        let phase = if deadline < end {
            Phase::Load
        } else {
            Phase::Drain
        };
        let limit = match phase {
            Phase::Load => end,
            Phase::Drain => drain_end,
        };
        deadline = (deadline + spec.interval).min(limit);
        tokio::time::sleep_until(deadline).await;
        let load_over = phase == Phase::Load && deadline >= end;
        if load_over {
            stop.store(true, Ordering::Relaxed);
        }
        let taken_at = Instant::now();
        let taken = std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()));
        if first_error.is_none() {
            first_error.clone_from(&taken.first_error);
        }
        let mut probes = probe(gateway.pid, &mut metrics_conn).await;
        let notified = receiver.received.load(Ordering::Relaxed);
        probes.notified = notified.saturating_sub(notified_before);
        notified_before = notified;
        let t_s = (deadline - start).as_secs();
        let sample = Sample::of(t_s, phase, taken, taken_at - last, probes);
        last = taken_at;
        println!("{}", table_row(&sample));
        let drained = sample.probes.pending == Some(0);
        samples.push(sample);
        if load_over {
            // The operations in flight finish (and count in the first drain interval).
            for w in workers.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(40), w).await;
            }
            if drained {
                break;
            }
        }
        if phase == Phase::Drain && (drained || deadline >= drain_end) {
            break;
        }
    }
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        t_s: u64,
        phase: Phase,
        ops: u64,
        p99_ns: u64,
        rss: u64,
        fds: u64,
        pending: u64,
    ) -> Sample {
        Sample {
            t_s,
            phase,
            ok: ops * 5,
            failed: 0,
            ops_per_s: ops,
            p99_ns,
            probes: Probes {
                rss_bytes: Some(rss),
                fds: Some(fds),
                pending: Some(pending),
                due: Some(0),
                notified: 3,
            },
        }
    }

    #[test]
    fn an_interval_counts_successes_per_second_and_the_p99_of_every_operation() {
        let mut w = Window::default();
        for i in 1..=99u64 {
            w.record(&OpResult::Ok { requests: 1 }, i * 1_000);
        }
        w.record(
            &OpResult::Failed {
                requests: 2,
                why: "HTTP 500".into(),
            },
            5_000_000,
        );
        w.record(&OpResult::Exhausted, 9_999_999_999);
        assert_eq!(w.first_error.as_deref(), Some("HTTP 500"));
        let s = Sample::of(
            10,
            Phase::Load,
            w,
            Duration::from_millis(500),
            Probes::default(),
        );
        assert_eq!((s.ok, s.failed), (99, 1));
        assert_eq!(s.ops_per_s, 198, "99 successes in half a second");
        // 100 latencies: the 99th is 99 µs; the failure's 5 ms is the 100th.
        assert_eq!(s.p99_ns, 99_000);
        let empty = Sample::of(
            15,
            Phase::Drain,
            Window::default(),
            Duration::ZERO,
            Probes::default(),
        );
        assert_eq!((empty.ops_per_s, empty.p99_ns), (0, 0));
    }

    #[test]
    fn the_csv_has_a_heading_a_line_per_sample_and_empty_fields_for_failed_readings() {
        let mut b = sample(10, Phase::Drain, 0, 0, 0, 0, 0);
        b.probes = Probes {
            rss_bytes: None,
            fds: Some(12),
            pending: None,
            due: None,
            notified: 7,
        };
        let text = csv(&[sample(5, Phase::Load, 900, 2_500_000, 40 << 20, 30, 12), b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("t_s,phase,ops_ok,"));
        assert_eq!(lines[1], "5,load,4500,0,900,2500000,41943040,30,12,0,3");
        assert_eq!(lines[2], "10,drain,0,0,0,0,,12,,,7");
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
    }

    #[test]
    fn the_summary_gives_start_end_min_and_max_of_each_series() {
        let samples = [
            sample(5, Phase::Load, 900, 3_000_000, 40 << 20, 30, 12),
            sample(10, Phase::Load, 1_100, 2_000_000, 42 << 20, 31, 40),
            sample(15, Phase::Load, 1_000, 4_000_000, 41 << 20, 30, 20),
            sample(20, Phase::Drain, 0, 0, 41 << 20, 29, 0),
        ];
        let s = summary(&samples);
        let line = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_ascii_whitespace().collect::<Vec<_>>())
                .unwrap()
        };
        // The drain's idle interval is not counted in the throughput under load.
        assert_eq!(line("ops/s")[2..], ["900", "1000", "900", "1100"]);
        assert_eq!(line("p99")[2..], ["3.00ms", "4.00ms", "2.00ms", "4.00ms"]);
        assert_eq!(line("RSS")[2..], ["40.0", "41.0", "40.0", "42.0"]);
        assert_eq!(line("fds")[1..], ["30", "29", "29", "31"]);
        assert_eq!(line("backlog")[1..], ["12", "0", "0", "40"]);
        assert!(s.contains("15000 operations ok, 0 failed; 12 notifications received"));
        assert!(summary(&[]).contains("no data"));
    }

    #[test]
    fn spans_follow_the_order_of_the_readings() {
        assert_eq!(Span::of(std::iter::empty()), None);
        assert_eq!(
            Span::of([5u64, 2, 9, 4].into_iter()),
            Some(Span {
                first: 5,
                last: 4,
                min: 2,
                max: 9
            })
        );
    }

    #[test]
    fn table_rows_line_up_with_the_heading() {
        let row = table_row(&sample(5, Phase::Load, 900, 2_500_000, 40 << 20, 30, 12));
        assert_eq!(row.chars().count(), table_heading().chars().count());
        assert!(row.contains("2.50ms") && row.contains("40.0"));
        let mut none = sample(10, Phase::Drain, 0, 0, 0, 0, 0);
        none.ok = 0;
        none.probes = Probes::default();
        let row = table_row(&none);
        assert!(row.contains(" - "), "{row}");
    }

    #[test]
    fn the_plot_has_five_charts_and_marks_the_end_of_the_load() {
        let samples = [
            sample(5, Phase::Load, 900, 3_000_000, 40 << 20, 30, 12),
            sample(10, Phase::Load, 1_100, 2_000_000, 42 << 20, 31, 40),
            sample(15, Phase::Drain, 0, 0, 41 << 20, 29, 0),
        ];
        let mut idle = samples[2].clone();
        idle.ok = 0;
        let s = plot("soak", &[samples[0].clone(), samples[1].clone(), idle]);
        assert_eq!(s.matches("<polyline").count(), 5);
        assert!(s.contains("tillgate_notifications_pending"));
        assert_eq!(s.matches("stroke-dasharray").count(), 5);
    }

    #[test]
    fn the_backlog_gauges_are_read_from_the_metrics_text() {
        let text = "# TYPE tillgate_notifications_pending gauge\n\
                    tillgate_notifications_pending 17\n\
                    tillgate_notifications_due 3\n";
        assert_eq!(counter(text, PENDING), Some(17));
        assert_eq!(counter(text, DUE), Some(3));
    }
}
