//! The results: one record per run with its derived figures and ratios to the ceilings, the
//! terminal table, the JSON document, and the targets judged against the figures.

use crate::ceiling::CeilingMeasured;
use crate::driver::{Load, Measured};
use crate::procfs::Machine;
use crate::stats::{fmt_ns, fmt_permille, per_second, permille};
use crate::suite::Setup;
use crate::svg;
use crate::workload::{Wallet, Workload};
use serde::Serialize;
use std::collections::HashMap;

/// One measured run of the gateway (or of baseline (a)).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub workload: Workload,
    /// "sqlite", "postgres", or "none" for baseline (a).
    pub backend: String,
    pub existing: u64,
    pub load: Load,
    /// The wallet the gateway called.
    pub wallet: Wallet,
    /// Gateway processes on the one database, sharing the connections.
    pub nodes: u32,
    pub measured: Measured,
    pub ops_per_s: u64,
    pub requests_per_s: u64,
    pub server_cpu_ns_per_op: Option<u64>,
    pub client_cpu_ns_per_op: Option<u64>,
    /// CPU of the PostgreSQL server's processes per operation (SQLite is inside the gateway).
    pub db_cpu_ns_per_op: Option<u64>,
    /// Store operations per durable commit, in thousandths (8500 is 8.5).
    pub ops_per_commit_milli: Option<u64>,
    /// Requests per second over baseline (a)'s at the same number of connections, per mille.
    pub vs_http_ceiling_permille: Option<u64>,
    /// Operations per second over baseline (b)'s for the same backend and data, per mille.
    pub vs_store_ceiling_permille: Option<u64>,
    /// CPU of the HTTP wallet simulator per operation.
    pub wallet_cpu_ns_per_op: Option<u64>,
    /// After a run that refunds: whether every refund the gateway acknowledged is stored.
    pub stored: Option<StoredCheck>,
}

/// The check after a refunding run, with the gateway stopped: every refund it acknowledged as
/// succeeded is in the database, as succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoredCheck {
    pub acknowledged: u64,
    /// Acknowledged but not in the database at all.
    pub missing: u64,
    /// Acknowledged as succeeded but stored in another state.
    pub not_succeeded: u64,
    /// The first refund reference found missing or in another state, or why the check could
    /// not read the database.
    pub first_problem: Option<String>,
    /// The database could not be read: nothing is known.
    pub unchecked: bool,
}

impl StoredCheck {
    /// Compares the acknowledged references with what the database holds (reference → state).
    pub fn of(acknowledged: &[String], stored: &HashMap<String, i64>) -> StoredCheck {
        let mut c = StoredCheck {
            acknowledged: acknowledged.len() as u64,
            ..StoredCheck::default()
        };
        for reference in acknowledged {
            match stored.get(reference) {
                None => c.missing += 1,
                Some(&state) if state != crate::seed::REFUND_SUCCEEDED => c.not_succeeded += 1,
                Some(_) => continue,
            }
            if c.first_problem.is_none() {
                c.first_problem = Some(match stored.get(reference) {
                    None => format!("{reference} is not stored"),
                    Some(state) => format!("{reference} is stored in state {state}"),
                });
            }
        }
        c
    }

    /// The database could not be read.
    pub fn failed(acknowledged: usize, why: String) -> StoredCheck {
        StoredCheck {
            acknowledged: acknowledged as u64,
            first_problem: Some(why),
            unchecked: true,
            ..StoredCheck::default()
        }
    }

    pub fn all_stored(&self) -> bool {
        !self.unchecked && self.missing == 0 && self.not_succeeded == 0
    }
}

impl Run {
    pub fn new(
        workload: Workload,
        backend: &str,
        existing: u64,
        load: Load,
        measured: Measured,
        setup: Setup,
    ) -> Run {
        let ops = measured.ops_ok;
        let per_op = |cpu: u64| (ops > 0).then(|| cpu / ops);
        let ops_per_commit_milli = match (measured.store_operations, measured.store_commits) {
            (Some(o), Some(c)) if c > 0 => Some(o * 1000 / c),
            _ => None,
        };
        Run {
            workload,
            backend: backend.to_owned(),
            existing,
            load,
            wallet: setup.wallet,
            nodes: setup.nodes,
            ops_per_s: per_second(ops, measured.elapsed_ns),
            requests_per_s: per_second(measured.requests, measured.elapsed_ns),
            server_cpu_ns_per_op: per_op(measured.server_cpu_ns),
            client_cpu_ns_per_op: per_op(measured.client_cpu_ns),
            db_cpu_ns_per_op: measured.db_cpu_ns.and_then(per_op),
            ops_per_commit_milli,
            vs_http_ceiling_permille: None,
            vs_store_ceiling_permille: None,
            wallet_cpu_ns_per_op: measured.wallet_cpu_ns.and_then(per_op),
            stored: None,
            measured,
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self.load, Load::Closed { .. })
    }

    /// The wallet and nodes of the run.
    pub fn setup(&self) -> Setup {
        Setup {
            wallet: self.wallet,
            nodes: self.nodes,
        }
    }
}

/// One ceiling run (baseline (b)).
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub existing: u64,
    pub measured: CeilingMeasured,
    pub ops_per_s: u64,
}

impl Ceiling {
    pub fn new(existing: u64, measured: CeilingMeasured) -> Ceiling {
        Ceiling {
            existing,
            ops_per_s: per_second(measured.ops, measured.elapsed_ns),
            measured,
        }
    }
}

/// One target of the benchmark issue, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub observed: String,
    /// `None` when the figures it needs were not measured.
    pub met: Option<bool>,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub tillgate: String,
    pub command: String,
    pub runs: Vec<Run>,
    pub ceilings: Vec<Ceiling>,
    pub targets: Vec<Target>,
    /// Parts that could not run, and why.
    pub skipped: Vec<String>,
}

/// The concurrency at which targets are judged on SQLite and PostgreSQL.
pub const SQLITE_CONNECTIONS: u32 = 64;
pub const PG_CONNECTIONS: u32 = 16;
/// The memory bound at 256 connections.
const RSS_LIMIT_BYTES: u64 = 150 * 1024 * 1024;

impl Report {
    pub fn new(machine: Machine, tillgate: String, command: String) -> Report {
        Report {
            machine,
            tillgate,
            command,
            runs: Vec::new(),
            ceilings: Vec::new(),
            targets: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn http_ceiling(&self, connections: u32) -> Option<&Run> {
        self.runs.iter().find(|r| {
            r.workload == Workload::BaselineHttp
                && r.is_closed()
                && r.load.connections() == connections
        })
    }

    fn store_ceiling(&self, backend: &str, existing: u64) -> Option<&Ceiling> {
        self.ceilings
            .iter()
            .find(|c| c.measured.backend == backend && c.existing == existing)
    }

    /// The closed-loop run of `w` with the sandbox wallet on one node.
    fn find(&self, w: Workload, backend: &str, existing: u64, connections: u32) -> Option<&Run> {
        self.find_setup(w, backend, existing, connections, Setup::default())
    }

    fn find_setup(
        &self,
        w: Workload,
        backend: &str,
        existing: u64,
        connections: u32,
        setup: Setup,
    ) -> Option<&Run> {
        self.runs.iter().find(|r| {
            r.workload == w
                && r.backend == backend
                && r.existing == existing
                && r.is_closed()
                && r.load.connections() == connections
                && r.setup() == setup
        })
    }

    /// Fills in every run's ratios to the ceilings measured in this invocation.
    pub fn compute_ratios(&mut self) {
        let ratios: Vec<(Option<u64>, Option<u64>)> = self
            .runs
            .iter()
            .map(|r| {
                if r.workload == Workload::BaselineHttp {
                    return (None, None);
                }
                let a = self
                    .http_ceiling(r.load.connections())
                    .and_then(|b| permille(r.requests_per_s, b.requests_per_s));
                let b = (r.workload.writes())
                    .then(|| self.store_ceiling(&r.backend, r.existing))
                    .flatten()
                    .and_then(|c| permille(r.ops_per_s, c.ops_per_s));
                (a, b)
            })
            .collect();
        for (r, (a, b)) in self.runs.iter_mut().zip(ratios) {
            r.vs_http_ceiling_permille = a;
            r.vs_store_ceiling_permille = b;
        }
    }

    /// Judges the targets against what was measured.
    pub fn judge_targets(&mut self, base: u64, growth_top: Option<u64>) {
        let mut t = Vec::new();
        let c = SQLITE_CONNECTIONS;
        // 1. Rejected bad signature and query: at least 85% of baseline (a).
        for w in [Workload::BadSignature, Workload::Query] {
            let target = format!("{} at {c} connections ≥ 85% of baseline (a)", w.name());
            t.push(
                match (self.find(w, "sqlite", base, c), self.http_ceiling(c)) {
                    (Some(r), Some(a)) => {
                        let p = permille(r.requests_per_s, a.requests_per_s).unwrap_or(0);
                        Target {
                            target,
                            observed: format!(
                                "{} of {} req/s = {}",
                                r.requests_per_s,
                                a.requests_per_s,
                                fmt_permille(p)
                            ),
                            met: Some(p >= 850),
                        }
                    }
                    _ => not_measured(target),
                },
            );
        }
        // 2. Durable partial refunds on SQLite at 64 connections: ≥ 60% of baseline (b).
        let refund = self.find(Workload::Refund, "sqlite", base, c).cloned();
        let b = self.store_ceiling("sqlite", base).map(|x| x.ops_per_s);
        let target = format!("SQLite refunds at {c} connections ≥ 60% of baseline (b)");
        t.push(match (&refund, b) {
            (Some(r), Some(b)) => {
                let p = permille(r.ops_per_s, b).unwrap_or(0);
                let through_sqlx = self
                    .store_ceiling("sqlite-sqlx", base)
                    .map(|c| format!("; the same statements through sqlx: {} ops/s", c.ops_per_s))
                    .unwrap_or_default();
                Target {
                    target,
                    observed: format!(
                        "{} of {b} ops/s = {}{through_sqlx}",
                        r.ops_per_s,
                        fmt_permille(p)
                    ),
                    met: Some(p >= 600),
                }
            }
            _ => not_measured(target),
        });
        let target =
            format!("SQLite refunds at {c} connections: ≥ 8 store operations per durable commit");
        t.push(match refund.as_ref().and_then(|r| r.ops_per_commit_milli) {
            Some(m) => Target {
                target,
                observed: fmt_milli(m),
                met: Some(m >= 8000),
            },
            None => not_measured(target),
        });
        let target = format!("SQLite refunds at {c} connections: p99 ≤ 10 ms");
        t.push(match &refund {
            Some(r) => Target {
                target,
                observed: fmt_ns(r.measured.latency.p99_ns),
                met: Some(r.measured.latency.p99_ns <= 10_000_000),
            },
            None => not_measured(target),
        });
        // 3. PostgreSQL refunds and add+pay at 16 and 64 connections ≥ 100% of baseline (b);
        //    p99 ≤ 20 ms at 16.
        let pc = PG_CONNECTIONS;
        let pg_ceiling = self.store_ceiling("postgres", base);
        for w in [Workload::Refund, Workload::AddPay] {
            for n in [pc, crate::suite::NODES_CONNECTIONS] {
                let target = format!(
                    "PostgreSQL {} at {n} connections ≥ 100% of baseline (b)",
                    w.name()
                );
                t.push(match (self.find(w, "postgres", base, n), pg_ceiling) {
                    (Some(r), Some(b)) => {
                        let p = permille(r.ops_per_s, b.ops_per_s).unwrap_or(0);
                        Target {
                            target,
                            observed: format!(
                                "{} of {} ops/s = {}",
                                r.ops_per_s,
                                b.ops_per_s,
                                fmt_permille(p)
                            ),
                            met: Some(p >= 1000),
                        }
                    }
                    (None, Some(b)) => Target {
                        target,
                        observed: format!(
                            "baseline (b) {} ops/s; the gateway did not run this on PostgreSQL",
                            b.ops_per_s
                        ),
                        met: None,
                    },
                    _ => not_measured(target),
                });
            }
        }
        for w in [Workload::Refund, Workload::AddPay] {
            let target = format!("PostgreSQL {} at {pc} connections: p99 ≤ 20 ms", w.name());
            t.push(match self.find(w, "postgres", base, pc) {
                Some(r) => Target {
                    target,
                    observed: fmt_ns(r.measured.latency.p99_ns),
                    met: Some(r.measured.latency.p99_ns <= 20_000_000),
                },
                None => not_measured(target),
            });
        }
        // 4. Growth: from the base to the largest number of existing transactions.
        if let Some(top) = growth_top {
            for w in [
                Workload::Query,
                Workload::Refund,
                Workload::AddPay,
                Workload::Mix,
            ] {
                let target = format!(
                    "{} from {base} to {top} existing: throughput ≥ 70%, p99 ≤ 2×",
                    w.name()
                );
                t.push(
                    match (
                        self.find(w, "sqlite", base, c),
                        self.find(w, "sqlite", top, c),
                    ) {
                        (Some(lo), Some(hi)) => {
                            let thr = permille(hi.ops_per_s, lo.ops_per_s).unwrap_or(0);
                            let lat =
                                permille(hi.measured.latency.p99_ns, lo.measured.latency.p99_ns)
                                    .unwrap_or(u64::MAX);
                            Target {
                                target,
                                observed: format!(
                                    "throughput {} ({} → {} ops/s), p99 ×{} ({} → {})",
                                    fmt_permille(thr),
                                    lo.ops_per_s,
                                    hi.ops_per_s,
                                    fmt_milli(lat),
                                    fmt_ns(lo.measured.latency.p99_ns),
                                    fmt_ns(hi.measured.latency.p99_ns)
                                ),
                                met: Some(thr >= 700 && lat <= 2000),
                            }
                        }
                        _ => not_measured(target),
                    },
                );
            }
        }
        // 5. At 256 connections: throughput ≥ 90% of the peak; resident memory < 150 MiB.
        for w in [Workload::Query, Workload::Refund] {
            let sweep: Vec<&Run> = self
                .runs
                .iter()
                .filter(|r| {
                    r.workload == w
                        && r.backend == "sqlite"
                        && r.existing == base
                        && r.is_closed()
                        && r.setup() == Setup::default()
                })
                .collect();
            let peak = sweep.iter().map(|r| r.ops_per_s).max();
            let at256 = sweep.iter().find(|r| r.load.connections() == 256);
            let target = format!(
                "{} at 256 connections ≥ 90% of its peak; peak RSS < 150 MiB",
                w.name()
            );
            t.push(match (at256, peak) {
                (Some(r), Some(peak)) if sweep.len() > 1 => {
                    let p = permille(r.ops_per_s, peak).unwrap_or(0);
                    let rss = r.measured.server_peak_rss_bytes.unwrap_or(u64::MAX);
                    Target {
                        target,
                        observed: format!(
                            "{} of peak {} ops/s = {}; VmHWM {} MiB",
                            r.ops_per_s,
                            peak,
                            fmt_permille(p),
                            rss / (1024 * 1024)
                        ),
                        met: Some(p >= 900 && rss < RSS_LIMIT_BYTES),
                    }
                }
                _ => not_measured(target),
            });
        }
        // 6. Durability: after each refunding run, every acknowledged refund is stored.
        t.push(self.stored_target());
        self.targets = t;
    }

    /// Whether every refund acknowledged in any run of this invocation is stored.
    fn stored_target(&self) -> Target {
        let target = "after each refunding run, every acknowledged refund is stored".to_owned();
        let checked: Vec<(&Run, &StoredCheck)> = self
            .runs
            .iter()
            .filter_map(|r| r.stored.as_ref().map(|s| (r, s)))
            .collect();
        if checked.is_empty() {
            return not_measured(target);
        }
        let acknowledged: u64 = checked.iter().map(|(_, s)| s.acknowledged).sum();
        let bad: Vec<String> = checked
            .iter()
            .filter(|(_, s)| !s.all_stored())
            .map(|(r, s)| {
                let what = if s.unchecked {
                    "not checked".to_owned()
                } else {
                    format!(
                        "{} missing, {} in another state of {}",
                        s.missing, s.not_succeeded, s.acknowledged
                    )
                };
                format!(
                    "{} ({what}; {})",
                    run_label(r),
                    s.first_problem.as_deref().unwrap_or("")
                )
            })
            .collect();
        let unchecked = checked.iter().any(|(_, s)| s.unchecked);
        Target {
            target,
            observed: if bad.is_empty() {
                format!(
                    "{}, {acknowledged} refunds acknowledged, all stored as succeeded",
                    runs(checked.len())
                )
            } else {
                format!(
                    "{}, {acknowledged} acknowledged; {}",
                    runs(checked.len()),
                    bad.join("; ")
                )
            },
            met: if bad.is_empty() {
                Some(true)
            } else if unchecked && checked.iter().all(|(_, s)| s.unchecked || s.all_stored()) {
                None
            } else {
                Some(false)
            },
        }
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let header = [
            "workload",
            "db",
            "existing",
            "load",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "srv µs/op",
            "db µs/op",
            "cli µs/op",
            "ops/commit",
            "VmHWM",
            "vs (a)",
            "vs (b)",
            "other cores",
            "errors",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
        for r in &self.runs {
            let m = &r.measured;
            let mut errors = m.ops_failed.to_string();
            if m.unsent > 0 {
                errors.push_str(&format!(" +{} unsent", m.unsent));
            }
            if let Some(st) = r.stored.as_ref().filter(|s| !s.all_stored()) {
                errors.push_str(&if st.unchecked {
                    " (stored: unchecked)".to_owned()
                } else {
                    format!(" +{} not stored", st.missing + st.not_succeeded)
                });
            }
            rows.push(vec![
                r.workload.name().to_owned(),
                r.backend.clone(),
                if r.workload == Workload::BaselineHttp {
                    "-".into()
                } else {
                    short_count(r.existing)
                },
                format!("{}{}", r.load.label(), r.setup().suffix()),
                r.ops_per_s.to_string(),
                fmt_ns(m.latency.p50_ns),
                fmt_ns(m.latency.p99_ns),
                fmt_ns(m.latency.p999_ns),
                fmt_ns(m.latency.max_ns),
                r.server_cpu_ns_per_op.map_or("-".into(), fmt_micros),
                r.db_cpu_ns_per_op.map_or("-".into(), fmt_micros),
                r.client_cpu_ns_per_op.map_or("-".into(), fmt_micros),
                // A reading workload's commits are the server's own background writes.
                r.ops_per_commit_milli
                    .filter(|_| r.workload.writes())
                    .map_or("-".into(), fmt_milli),
                m.server_peak_rss_bytes
                    .map_or("-".into(), |b| format!("{}M", b / (1024 * 1024))),
                r.vs_http_ceiling_permille.map_or("-".into(), fmt_permille),
                r.vs_store_ceiling_permille.map_or("-".into(), fmt_permille),
                fmt_cores(m.other_cpu_ns, m.elapsed_ns),
                errors,
            ]);
        }
        for c in &self.ceilings {
            let m = &c.measured;
            let cpu = (m.ops > 0).then(|| m.client_cpu_ns / m.ops);
            let db = m.db_cpu_ns.filter(|_| m.ops > 0).map(|d| d / m.ops);
            rows.push(vec![
                "ceiling-store".into(),
                m.backend.into(),
                short_count(c.existing),
                format!("c={} ×{}/commit", m.clients, m.ops_per_commit),
                c.ops_per_s.to_string(),
                fmt_ns(m.latency.p50_ns),
                fmt_ns(m.latency.p99_ns),
                fmt_ns(m.latency.p999_ns),
                fmt_ns(m.latency.max_ns),
                "-".into(),
                db.map_or("-".into(), fmt_micros),
                cpu.map_or("-".into(), fmt_micros),
                m.ops_per_commit.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                fmt_cores(m.other_cpu_ns, m.elapsed_ns),
                "0".into(),
            ]);
        }
        debug_assert!(
            rows.iter().all(|r| r.len() == header.len()),
            "every row of the table has one cell per column"
        );
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (k, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, w))| {
                    let pad = w - cell.chars().count();
                    if i < 4 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if k == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
                out.push('\n');
            }
        }
        let errors: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| {
                r.measured.first_error.as_ref().map(|e| {
                    format!(
                        "  {} {} {}: {e}",
                        r.workload.name(),
                        r.backend,
                        r.load.label()
                    )
                })
            })
            .collect();
        if !errors.is_empty() {
            out.push_str("\nfirst error of each run with errors:\n");
            out.push_str(&errors.join("\n"));
            out.push('\n');
        }
        out.push_str(&self.setups());
        if !self.targets.is_empty() {
            out.push_str("\ntargets:\n");
            for t in &self.targets {
                let mark = match t.met {
                    Some(true) => "met    ",
                    Some(false) => "NOT MET",
                    None => "n/a    ",
                };
                out.push_str(&format!("  [{mark}] {}: {}\n", t.target, t.observed));
            }
        }
        for s in &self.skipped {
            out.push_str(&format!("skipped: {s}\n"));
        }
        out
    }

    /// The runs through the HTTP wallet beside the same runs with the sandbox wallet, and the
    /// runs on several nodes beside the one-node run, each as a ratio to ceiling (b) of the
    /// same backend and data size measured in this invocation; empty when there are none.
    pub fn setups(&self) -> String {
        let mut out = String::new();
        let vs_b = |r: &Run| {
            r.vs_store_ceiling_permille
                .map_or("-".to_owned(), fmt_permille)
        };
        let brief = |r: &Run| {
            format!(
                "{} ops/s = {} of (b), p99 {}, srv {} µs/op",
                r.ops_per_s,
                vs_b(r),
                fmt_ns(r.measured.latency.p99_ns),
                r.server_cpu_ns_per_op.map_or("-".into(), fmt_micros)
            )
        };
        let http: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.is_closed() && r.wallet == Wallet::Http && r.nodes == 1)
            .collect();
        if !http.is_empty() {
            out.push_str(
                "\nthe HTTP wallet (tillgate wallet-sim, latency 0) beside the sandbox wallet:\n",
            );
            for r in http {
                let n = r.load.connections();
                let sandbox = self.find(r.workload, &r.backend, r.existing, n);
                let b = self
                    .store_ceiling(&r.backend, r.existing)
                    .map_or("-".into(), |c| c.ops_per_s.to_string());
                out.push_str(&format!(
                    "  {} {} {} c={n}, ceiling (b) {b} ops/s\n    sandbox:    {}\n    wallet-sim: {}; wallet-sim CPU {} µs/op\n",
                    r.workload.name(),
                    r.backend,
                    short_count(r.existing),
                    sandbox.map_or("not measured".into(), brief),
                    brief(r),
                    r.wallet_cpu_ns_per_op.map_or("-".into(), fmt_micros),
                ));
                if let Some(ratio) = sandbox.and_then(|s| permille(r.ops_per_s, s.ops_per_s)) {
                    out.push_str(&format!(
                        "    through the HTTP wallet: {} of the sandbox wallet's throughput\n",
                        fmt_permille(ratio)
                    ));
                }
            }
        }
        let mut groups: Vec<(Workload, String, u64, u32)> = Vec::new();
        for r in self.runs.iter().filter(|r| r.is_closed() && r.nodes > 1) {
            let key = (
                r.workload,
                r.backend.clone(),
                r.existing,
                r.load.connections(),
            );
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        if !groups.is_empty() {
            out.push_str(
                "\nseveral nodes on one database (the connections spread over the nodes):\n",
            );
        }
        for (w, backend, existing, n) in groups {
            let mut runs: Vec<&Run> = self
                .runs
                .iter()
                .filter(|r| {
                    r.is_closed()
                        && r.workload == w
                        && r.backend == backend
                        && r.existing == existing
                        && r.load.connections() == n
                        && r.wallet == Wallet::Sandbox
                })
                .collect();
            runs.sort_by_key(|r| r.nodes);
            runs.dedup_by_key(|r| r.nodes);
            let b = self
                .store_ceiling(&backend, existing)
                .map_or("-".into(), |c| c.ops_per_s.to_string());
            out.push_str(&format!(
                "  {} {backend} {} c={n}, ceiling (b) {b} ops/s\n",
                w.name(),
                short_count(existing)
            ));
            for r in runs {
                out.push_str(&format!(
                    "    {} node{}: {}\n",
                    r.nodes,
                    if r.nodes == 1 { " " } else { "s" },
                    brief(r)
                ));
            }
        }
        out
    }

    /// The SVG of every closed-loop sweep at the base data size (series with two or more
    /// concurrency levels).
    pub fn svg(&self, base: u64) -> String {
        let mut series: Vec<svg::Series> = Vec::new();
        for r in self
            .runs
            .iter()
            .filter(|r| r.is_closed() && r.setup() == Setup::default())
        {
            if r.workload != Workload::BaselineHttp && r.existing != base {
                continue;
            }
            let name = if r.workload == Workload::BaselineHttp {
                "baseline (a) http+sign".to_owned()
            } else {
                format!("{} ({})", r.workload.name(), r.backend)
            };
            let point = svg::Point {
                concurrency: r.load.connections(),
                ops_per_s: r.ops_per_s,
                p99_ns: r.measured.latency.p99_ns,
            };
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => series.push(svg::Series {
                    name,
                    points: vec![point],
                }),
            }
        }
        series.retain(|s| s.points.len() > 1);
        svg::plot(
            &format!(
                "tillgate: throughput and p99 against concurrency ({} existing transactions)",
                short_count(base)
            ),
            &series,
        )
    }
}

/// "1 run", "3 runs".
fn runs(n: usize) -> String {
    if n == 1 {
        "1 run".into()
    } else {
        format!("{n} runs")
    }
}

/// "refund sqlite 1e4 c=64 via wallet-sim".
fn run_label(r: &Run) -> String {
    format!(
        "{} {} {} {}{}",
        r.workload.name(),
        r.backend,
        short_count(r.existing),
        r.load.label(),
        r.setup().suffix()
    )
}

fn not_measured(target: String) -> Target {
    Target {
        target,
        observed: "not measured in this run".into(),
        met: None,
    }
}

/// CPU time over wall time as cores with two decimals: "0.56".
fn fmt_cores(cpu_ns: u64, elapsed_ns: u64) -> String {
    match permille(cpu_ns, elapsed_ns) {
        Some(p) => format!("{}.{:02}", p / 1000, (p % 1000) / 10),
        None => "-".into(),
    }
}

fn fmt_micros(ns: u64) -> String {
    format!("{}.{}", ns / 1000, (ns % 1000) / 100)
}

fn fmt_milli(m: u64) -> String {
    if m == u64::MAX {
        return "∞".into();
    }
    format!("{}.{:02}", m / 1000, (m % 1000) / 10)
}

/// 10000 as "1e4", other numbers as they are.
pub fn short_count(n: u64) -> String {
    if n >= 10
        && n.to_string()
            .trim_start_matches('1')
            .chars()
            .all(|c| c == '0')
    {
        let zeros = n.to_string().len() - 1;
        format!("1e{zeros}")
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten_print_short() {
        assert_eq!(short_count(10_000), "1e4");
        assert_eq!(short_count(1_000_000), "1e6");
        assert_eq!(short_count(12_000), "12000");
        assert_eq!(short_count(1), "1");
        assert_eq!(short_count(0), "0");
    }

    #[test]
    fn fixed_point_figures() {
        assert_eq!(fmt_milli(8_500), "8.50");
        assert_eq!(fmt_milli(u64::MAX), "∞");
        assert_eq!(fmt_micros(12_345), "12.3");
        assert_eq!(fmt_cores(560_000_000, 1_000_000_000), "0.56");
        assert_eq!(fmt_cores(1, 0), "-");
    }

    fn run(w: Workload, conns: u32, ops: u64, requests: u64, p99: u64) -> Run {
        let measured = Measured {
            ops_ok: ops,
            requests,
            elapsed_ns: 1_000_000_000,
            latency: crate::stats::Latency {
                p99_ns: p99,
                ..Default::default()
            },
            store_operations: Some(ops * 2),
            store_commits: Some(ops / 5),
            server_peak_rss_bytes: Some(40 << 20),
            ..Default::default()
        };
        let backend = if w == Workload::BaselineHttp {
            "none"
        } else {
            "sqlite"
        };
        Run::new(
            w,
            backend,
            10_000,
            Load::Closed { concurrency: conns },
            measured,
            Setup::default(),
        )
    }

    fn pg_run(w: Workload, conns: u32, ops: u64, p99: u64, setup: Setup) -> Run {
        let mut r = run(w, conns, ops, ops * 2, p99);
        r.backend = "postgres".into();
        r.wallet = setup.wallet;
        r.nodes = setup.nodes;
        r
    }

    fn ceiling(backend: &'static str, ops: u64) -> Ceiling {
        Ceiling::new(
            10_000,
            CeilingMeasured {
                backend,
                ops,
                elapsed_ns: 1_000_000_000,
                ..Default::default()
            },
        )
    }

    #[test]
    fn acknowledged_refunds_are_checked_against_the_stored_ones() {
        let acked: Vec<String> = ["r1", "r2", "r3"].iter().map(|s| s.to_string()).collect();
        let mut stored = HashMap::new();
        stored.insert("r1".to_owned(), crate::seed::REFUND_SUCCEEDED);
        stored.insert("r2".to_owned(), crate::seed::REFUND_SUCCEEDED);
        stored.insert("r3".to_owned(), crate::seed::REFUND_SUCCEEDED);
        stored.insert("r4".to_owned(), 1);
        let all = StoredCheck::of(&acked, &stored);
        assert!(all.all_stored());
        assert_eq!(all.acknowledged, 3);
        stored.remove("r2");
        stored.insert("r3".to_owned(), 3);
        let some = StoredCheck::of(&acked, &stored);
        assert_eq!((some.missing, some.not_succeeded), (1, 1));
        assert_eq!(some.first_problem.as_deref(), Some("r2 is not stored"));
        assert!(!some.all_stored());
        assert!(!StoredCheck::failed(3, "no database".into()).all_stored());
    }

    #[test]
    fn the_durability_target_covers_every_refunding_run() {
        let mut r = Report::new(Machine::read(), "tillgate".into(), "test".into());
        r.judge_targets(10_000, None);
        let stored = |r: &Report| {
            r.targets
                .iter()
                .find(|t| t.target.contains("acknowledged refund"))
                .cloned()
                .unwrap()
        };
        assert_eq!(stored(&r).met, None, "no refunding run, nothing known");
        let mut a = run(Workload::Refund, 64, 5_000, 5_000, 1);
        a.stored = Some(StoredCheck {
            acknowledged: 20_000,
            ..Default::default()
        });
        let mut b = pg_run(Workload::Refund, 16, 1_000, 1, Setup::default());
        b.stored = Some(StoredCheck {
            acknowledged: 5_000,
            ..Default::default()
        });
        r.runs.push(a);
        r.runs.push(b.clone());
        r.judge_targets(10_000, None);
        assert_eq!(stored(&r).met, Some(true));
        assert!(stored(&r)
            .observed
            .contains("2 runs, 25000 refunds acknowledged, all stored"));
        b.stored = Some(StoredCheck {
            acknowledged: 5_000,
            missing: 2,
            first_problem: Some("bx1r3-4 is not stored".into()),
            ..Default::default()
        });
        r.runs.push(b);
        r.judge_targets(10_000, None);
        assert_eq!(stored(&r).met, Some(false));
        assert!(stored(&r)
            .observed
            .contains("refund postgres 1e4 c=16 (2 missing"));
        assert!(r.table().contains("+2 not stored"));
    }

    #[test]
    fn postgres_targets_at_16_and_64_and_the_wallet_and_nodes_sections() {
        let mut r = Report::new(Machine::read(), "tillgate".into(), "test".into());
        let http = Setup {
            wallet: Wallet::Http,
            nodes: 1,
        };
        let nodes = |n| Setup {
            wallet: Wallet::Sandbox,
            nodes: n,
        };
        r.runs.push(pg_run(
            Workload::Refund,
            16,
            2_000,
            15_000_000,
            Setup::default(),
        ));
        r.runs.push(pg_run(
            Workload::AddPay,
            16,
            1_000,
            25_000_000,
            Setup::default(),
        ));
        r.runs.push(pg_run(
            Workload::Refund,
            64,
            4_100,
            30_000_000,
            Setup::default(),
        ));
        let mut via = pg_run(Workload::Refund, 16, 1_000, 30_000_000, http);
        via.measured.wallet_cpu_ns = Some(40_000_000);
        via.wallet_cpu_ns_per_op = Some(40_000);
        r.runs.push(via);
        r.runs
            .push(pg_run(Workload::Refund, 64, 6_000, 30_000_000, nodes(2)));
        r.runs
            .push(pg_run(Workload::Refund, 64, 8_000, 30_000_000, nodes(3)));
        r.ceilings.push(ceiling("postgres", 4_000));
        r.compute_ratios();
        r.judge_targets(10_000, None);
        let met = |prefix: &str| {
            r.targets
                .iter()
                .find(|t| t.target.starts_with(prefix))
                .map(|t| t.met)
                .unwrap()
        };
        assert_eq!(met("PostgreSQL refund at 16 connections ≥"), Some(false));
        assert_eq!(
            met("PostgreSQL refund at 64 connections ≥"),
            Some(true),
            "the one-node run"
        );
        assert_eq!(met("PostgreSQL add-pay at 16 connections ≥"), Some(false));
        assert_eq!(met("PostgreSQL add-pay at 64 connections ≥"), None);
        assert_eq!(met("PostgreSQL refund at 16 connections: p99"), Some(true));
        assert_eq!(
            met("PostgreSQL add-pay at 16 connections: p99"),
            Some(false)
        );
        let s = r.setups();
        assert!(s.contains("refund postgres 1e4 c=16, ceiling (b) 4000 ops/s"));
        assert!(s.contains("sandbox:    2000 ops/s = 50.0% of (b)"));
        assert!(s.contains("wallet-sim: 1000 ops/s = 25.0% of (b)"));
        assert!(s.contains("wallet-sim CPU 40.0 µs/op"));
        assert!(s.contains("50.0% of the sandbox wallet's throughput"));
        assert!(s.contains("refund postgres 1e4 c=64, ceiling (b) 4000 ops/s"));
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("    ") && l.contains(" node"))
            .collect();
        assert_eq!(lines.len(), 3, "{s}");
        assert!(lines[0].contains("1 node : 4100 ops/s = 102.5% of (b)"));
        assert!(lines[2].contains("3 nodes: 8000 ops/s = 200.0% of (b)"));
        let table = r.table();
        assert!(table.contains("c=64 on 3 nodes"));
        assert!(table.contains("c=16 via wallet-sim"));
    }

    #[test]
    fn ratios_and_targets_come_from_the_same_runs() {
        let mut r = Report::new(Machine::read(), "tillgate".into(), "test".into());
        r.runs
            .push(run(Workload::BaselineHttp, 64, 20_000, 20_000, 1_000_000));
        r.runs
            .push(run(Workload::Query, 64, 18_000, 18_000, 2_000_000));
        r.runs
            .push(run(Workload::BadSignature, 64, 16_000, 16_000, 2_000_000));
        r.runs
            .push(run(Workload::Refund, 64, 5_000, 5_000, 12_000_000));
        r.runs
            .push(run(Workload::Refund, 256, 4_000, 4_000, 40_000_000));
        r.ceilings.push(Ceiling::new(
            10_000,
            CeilingMeasured {
                backend: "sqlite",
                ops: 10_000,
                elapsed_ns: 1_000_000_000,
                ..Default::default()
            },
        ));
        r.compute_ratios();
        assert_eq!(r.runs[1].vs_http_ceiling_permille, Some(900));
        assert_eq!(
            r.runs[1].vs_store_ceiling_permille, None,
            "query writes nothing"
        );
        assert_eq!(r.runs[3].vs_store_ceiling_permille, Some(500));
        assert_eq!(
            r.runs[4].vs_http_ceiling_permille, None,
            "no baseline at 256"
        );
        r.judge_targets(10_000, None);
        let met = |prefix: &str| {
            r.targets
                .iter()
                .find(|t| t.target.starts_with(prefix))
                .map(|t| t.met)
                .unwrap()
        };
        assert_eq!(met("query at 64"), Some(true));
        assert_eq!(met("bad-signature at 64"), Some(false));
        assert_eq!(met("SQLite refunds at 64 connections ≥ 60%"), Some(false));
        assert_eq!(met("SQLite refunds at 64 connections: ≥ 8"), Some(true));
        assert_eq!(met("SQLite refunds at 64 connections: p99"), Some(false));
        assert_eq!(met("PostgreSQL"), None);
        assert_eq!(met("after each refunding run"), None);
        assert_eq!(met("refund at 256"), Some(false));
        let table = r.table();
        assert!(table.contains("NOT MET"));
        assert!(table.lines().count() > 8);
        assert!(r.svg(10_000).contains("refund (sqlite)"));
    }
}
