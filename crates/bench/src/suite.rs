//! The plan of an invocation (which databases, which runs, in which order) and its execution:
//! prepare and seed each database, start a fresh server for every run, measure, stop it.
//!
//! A plan is a list of steps made before anything runs, so the progress line can say "run 7 of
//! 31" and a failed step can be reported and skipped without losing the rest of the figures.

use crate::ceiling::{self, CeilingSpec};
use crate::driver::{self, Load, Node, Spec, Target};
use crate::report::{short_count, Ceiling, Report, Run, StoredCheck};
use crate::seed;
use crate::server::{self, Server};
use crate::stats::permille;
use crate::workload::{CancelPool, Shared, Wallet, Workload};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Settings shared by every step.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tillgate: PathBuf,
    pub work_dir: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_ops: u64,
    pub cancel_pool: usize,
    pub seed: u64,
    /// Repeat a step up to this many times when other processes used more than
    /// `busy_limit_pct` percent of a core during it.
    pub busy_retries: u32,
    pub busy_limit_pct: u64,
}

/// A database the gateway runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Sqlite { path: PathBuf },
    Postgres { url: String },
}

impl Db {
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite { path } => format!("sqlite://{}", path.display()),
            Db::Postgres { url } => url.clone(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    /// Where the PostgreSQL ceiling makes its own scratch database: beside the gateway's.
    fn ceiling_url(url: &str) -> anyhow::Result<String> {
        let options = seed::pg_options(url)?;
        let name = options.get_database().unwrap_or("tillgate_bench");
        // Keep any query string (sslmode=…, options) after the database name.
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (url, String::new()),
        };
        let (base, _) = path
            .rsplit_once('/')
            .context("postgres URL without a database")?;
        Ok(format!("{base}/{name}_ceiling{query}"))
    }
}

/// How the gateway under test is set up for a run: which wallet it calls, and how many nodes
/// (processes on one database, each on its port) share the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub wallet: Wallet,
    pub nodes: u32,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            wallet: Wallet::Sandbox,
            nodes: 1,
        }
    }
}

impl Setup {
    /// " via wallet-sim", " on 3 nodes": what sets a run apart from the default one.
    pub fn suffix(self) -> String {
        let mut s = String::new();
        if self.wallet == Wallet::Http {
            s.push_str(" via wallet-sim");
        }
        if self.nodes > 1 {
            s.push_str(&format!(" on {} nodes", self.nodes));
        }
        s
    }
}

/// The parts of the suite (`--parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Every workload on SQLite at the base size, the sweeps and the open loop.
    Sqlite,
    /// The growth runs at the larger data sizes.
    Growth,
    /// PostgreSQL: refund, query and add+pay at 16 connections, refund and add+pay at 64.
    Postgres,
    /// Refunds through the HTTP wallet simulator, on SQLite and on PostgreSQL.
    Wallet,
    /// Several gateway nodes on one PostgreSQL: refund and add+pay at 64 connections.
    Nodes,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Sqlite,
        Part::Growth,
        Part::Postgres,
        Part::Wallet,
        Part::Nodes,
    ];
}

/// The concurrency of the runs on several nodes: the connections spread over the nodes.
pub const NODES_CONNECTIONS: u32 = 64;
/// How many transactions are paid through the HTTP wallet before a run that refunds through
/// it (the simulator refunds only payments it approved, at most 100 refunds each).
pub const WALLET_PAID_POOL: usize = 2_000;
/// The key the benchmark's gateways share with its wallet simulator (loopback only).
const WALLET_KEY_HEX: &str = "62656e63682d6f6e6c792d77616c6c65742d6b65792d6c6f6f706261636b2121";

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// A fresh database with `existing` seeded transactions, checked through the API.
    Prepare { db: Db, existing: u64 },
    /// Baseline (a) at `load`.
    Http { load: Load },
    /// The gateway under `workload` at `load`, set up as `setup` says.
    Gateway {
        db: Db,
        existing: u64,
        workload: Workload,
        load: Load,
        setup: Setup,
    },
    /// An open loop at `percent`% of the throughput the closed loop reached at `connections`.
    OpenFromClosed {
        db: Db,
        existing: u64,
        workload: Workload,
        connections: u32,
        percent: u64,
    },
    /// Baseline (b) on the gateway's SQLite database (after the gateway's runs on it).
    SqliteCeiling { db: Db, existing: u64 },
    /// Baseline (b) on PostgreSQL, in its own scratch database beside `url`'s.
    PgCeiling { url: String, existing: u64 },
}

impl Step {
    fn label(&self) -> String {
        match self {
            Step::Prepare { db, existing } => {
                format!(
                    "seed {} with {} transactions",
                    db.backend(),
                    short_count(*existing)
                )
            }
            Step::Http { load } => format!("baseline (a) http+sign {}", load.label()),
            Step::Gateway {
                db,
                existing,
                workload,
                load,
                setup,
            } => format!(
                "{} {} {} {}{}",
                workload.name(),
                db.backend(),
                short_count(*existing),
                load.label(),
                setup.suffix()
            ),
            Step::OpenFromClosed {
                db,
                existing,
                workload,
                connections,
                percent,
            } => format!(
                "{} {} {} open loop at {percent}% of c={connections}",
                workload.name(),
                db.backend(),
                short_count(*existing)
            ),
            Step::SqliteCeiling { existing, .. } => {
                format!("baseline (b) sqlite, {} existing", short_count(*existing))
            }
            Step::PgCeiling { existing, .. } => {
                format!("baseline (b) postgres, {} existing", short_count(*existing))
            }
        }
    }

    fn db(&self) -> Option<&Db> {
        match self {
            Step::Prepare { db, .. }
            | Step::Gateway { db, .. }
            | Step::OpenFromClosed { db, .. }
            | Step::SqliteCeiling { db, .. } => Some(db),
            Step::Http { .. } | Step::PgCeiling { .. } => None,
        }
    }
}

/// The default suite: every workload on SQLite at the base size with a concurrency sweep for
/// query and refund, the open loop, growth runs, PostgreSQL at 16 and 64 connections, refunds
/// through the HTTP wallet simulator on both backends, and several nodes on one PostgreSQL;
/// `parts` picks which of these run (baseline (a) always does, and each backend's ceiling (b)
/// with any part that runs on it).
pub fn suite_plan(
    work_dir: &Path,
    concurrency: &[u32],
    growth: &[u64],
    postgres_url: Option<&str>,
    parts: &[Part],
    nodes: &[u32],
) -> Vec<Step> {
    let mut plan = Vec::new();
    let c = crate::report::SQLITE_CONNECTIONS;
    let closed = |concurrency| Load::Closed { concurrency };
    let Some(&base) = growth.first() else {
        return plan;
    };
    let has = |p: Part| parts.contains(&p);
    for &n in concurrency {
        plan.push(Step::Http { load: closed(n) });
    }
    let http = Setup {
        wallet: Wallet::Http,
        nodes: 1,
    };
    for (k, &existing) in growth.iter().enumerate() {
        let db = Db::Sqlite {
            path: work_dir.join(format!("bench-{}.db", short_count(existing))),
        };
        let gw = |workload, load, setup| Step::Gateway {
            db: db.clone(),
            existing,
            workload,
            load,
            setup,
        };
        let mut steps = Vec::new();
        if k == 0 && has(Part::Sqlite) {
            steps.push(gw(Workload::BadSignature, closed(c), Setup::default()));
            for &n in concurrency {
                steps.push(gw(Workload::Query, closed(n), Setup::default()));
            }
            for &n in concurrency {
                steps.push(gw(Workload::Refund, closed(n), Setup::default()));
            }
            for percent in [50, 90] {
                steps.push(Step::OpenFromClosed {
                    db: db.clone(),
                    existing,
                    workload: Workload::Refund,
                    connections: c,
                    percent,
                });
            }
            steps.push(gw(Workload::AddPay, closed(c), Setup::default()));
            steps.push(gw(Workload::Cancel, closed(c), Setup::default()));
            steps.push(gw(Workload::Mix, closed(c), Setup::default()));
        } else if (k == 0 && has(Part::Growth) && growth.len() > 1) || (k > 0 && has(Part::Growth))
        {
            // The growth runs, and at the base size the same runs to compare them with.
            for w in [
                Workload::Query,
                Workload::Refund,
                Workload::AddPay,
                Workload::Mix,
            ] {
                steps.push(gw(w, closed(c), Setup::default()));
            }
        }
        if k == 0 && has(Part::Wallet) {
            // The sandbox refund it is compared with, unless the SQLite part ran it.
            let sandbox = gw(Workload::Refund, closed(c), Setup::default());
            if !steps.iter().any(|s| same_run(s, &sandbox)) {
                steps.push(sandbox);
            }
            steps.push(gw(Workload::Refund, closed(c), http));
        }
        if steps.is_empty() {
            continue;
        }
        plan.push(Step::Prepare {
            db: db.clone(),
            existing,
        });
        plan.extend(steps);
        plan.push(Step::SqliteCeiling { db, existing });
    }
    let pg_parts = [Part::Postgres, Part::Wallet, Part::Nodes];
    if let Some(url) = postgres_url.filter(|_| pg_parts.iter().any(|&p| has(p))) {
        let pc = crate::report::PG_CONNECTIONS;
        let db = Db::Postgres {
            url: url.to_owned(),
        };
        let gw = |workload, concurrency, setup| Step::Gateway {
            db: db.clone(),
            existing: base,
            workload,
            load: closed(concurrency),
            setup,
        };
        plan.push(Step::PgCeiling {
            url: url.to_owned(),
            existing: base,
        });
        plan.push(Step::Prepare {
            db: db.clone(),
            existing: base,
        });
        let mut steps = Vec::new();
        if has(Part::Postgres) {
            for w in [Workload::Refund, Workload::Query, Workload::AddPay] {
                steps.push(gw(w, pc, Setup::default()));
            }
            for w in [Workload::Refund, Workload::AddPay] {
                steps.push(gw(w, NODES_CONNECTIONS, Setup::default()));
            }
        }
        if has(Part::Wallet) {
            let sandbox = gw(Workload::Refund, pc, Setup::default());
            if !steps.iter().any(|s| same_run(s, &sandbox)) {
                steps.push(sandbox);
            }
            steps.push(gw(Workload::Refund, pc, http));
        }
        if has(Part::Nodes) {
            for &n in nodes {
                for w in [Workload::Refund, Workload::AddPay] {
                    let step = gw(
                        w,
                        NODES_CONNECTIONS,
                        Setup {
                            wallet: Wallet::Sandbox,
                            nodes: n.max(1),
                        },
                    );
                    if !steps.iter().any(|s| same_run(s, &step)) {
                        steps.push(step);
                    }
                }
            }
        }
        plan.extend(steps);
    }
    plan
}

/// Whether two steps are the same gateway run.
fn same_run(a: &Step, b: &Step) -> bool {
    match (a, b) {
        (
            Step::Gateway {
                db,
                existing,
                workload,
                load,
                setup,
            },
            Step::Gateway {
                db: db2,
                existing: e2,
                workload: w2,
                load: l2,
                setup: s2,
            },
        ) => db == db2 && existing == e2 && workload == w2 && load == l2 && setup == s2,
        _ => false,
    }
}

/// A one-workload plan: the workload at each load, with baseline (a) at the same connection
/// counts and, for a writing workload, baseline (b) on the same backend.
pub fn single_plan(
    db: Db,
    existing: u64,
    workload: Workload,
    loads: &[Load],
    ceilings: bool,
    wallet: Wallet,
    nodes: &[u32],
) -> anyhow::Result<Vec<Step>> {
    let mut plan = Vec::new();
    anyhow::ensure!(!nodes.is_empty(), "--nodes needs at least one count");
    anyhow::ensure!(
        nodes.iter().all(|&n| (1..=16).contains(&n)),
        "--nodes: from 1 to 16 nodes"
    );
    if nodes.iter().any(|&n| n > 1) {
        anyhow::ensure!(
            matches!(db, Db::Postgres { .. }),
            "several nodes share one PostgreSQL database: give --database-url postgres://…"
        );
        anyhow::ensure!(
            workload != Workload::Cancel,
            "the cancel workload runs on one node"
        );
    }
    if ceilings || workload == Workload::BaselineHttp {
        let mut conns: Vec<u32> = loads.iter().map(|l| l.connections()).collect();
        conns.dedup();
        for concurrency in conns {
            plan.push(Step::Http {
                load: Load::Closed { concurrency },
            });
        }
    }
    if workload == Workload::BaselineHttp {
        return Ok(plan);
    }
    plan.push(Step::Prepare {
        db: db.clone(),
        existing,
    });
    if wallet == Wallet::Http {
        // The same runs with the sandbox wallet on one node first, to compare with.
        for &load in loads {
            plan.push(Step::Gateway {
                db: db.clone(),
                existing,
                workload,
                load,
                setup: Setup::default(),
            });
        }
    }
    for &n in nodes {
        for &load in loads {
            plan.push(Step::Gateway {
                db: db.clone(),
                existing,
                workload,
                load,
                setup: Setup { wallet, nodes: n },
            });
        }
    }
    if ceilings && workload.writes() {
        match &db {
            Db::Sqlite { .. } => plan.push(Step::SqliteCeiling { db, existing }),
            Db::Postgres { url } => plan.push(Step::PgCeiling {
                url: url.clone(),
                existing,
            }),
        }
    }
    Ok(plan)
}

/// Shows which step runs and how far along it is: a line rewritten in place on a terminal, one
/// line per step otherwise.
struct ProgressLine {
    ticker: Option<tokio::task::JoinHandle<()>>,
    tty: bool,
}

impl ProgressLine {
    fn start(label: String, warmup: Duration, duration: Duration) -> ProgressLine {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            eprintln!("{label}");
            return ProgressLine { ticker: None, tty };
        }
        let ticker = tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            // Bounded: a step that runs far past its plan stops updating the line.
            for _ in 0..36_000 {
                let e = t0.elapsed();
                let phase = if e < warmup {
                    format!("warm-up {}/{}s", e.as_secs(), warmup.as_secs())
                } else if e < warmup + duration {
                    format!(
                        "measuring {}/{}s",
                        (e - warmup).as_secs(),
                        duration.as_secs()
                    )
                } else {
                    format!("{}s", e.as_secs())
                };
                eprint!("\r\x1b[2K{label}  {phase}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        ProgressLine {
            ticker: Some(ticker),
            tty,
        }
    }

    fn finish(self, summary: &str) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        if !summary.is_empty() {
            eprintln!("  {summary}");
        }
    }
}

/// Runs a plan and collects its figures into a report.
pub struct Bench {
    pub settings: Settings,
    pub report: Report,
    run_no: u64,
}

impl Bench {
    pub fn new(settings: Settings, report: Report) -> Bench {
        Bench {
            settings,
            report,
            run_no: 0,
        }
    }

    fn tag(&mut self) -> String {
        self.run_no += 1;
        // Unique across invocations on one database too: the keys a run creates start with it.
        format!("b{}x{}", seed::now_ms(), self.run_no)
    }

    fn spec(&mut self, workload: Workload, load: Load) -> Spec {
        Spec {
            workload,
            load,
            warmup: self.settings.warmup,
            duration: self.settings.duration,
            max_ops: self.settings.max_ops,
            seed: self.settings.seed.wrapping_add(self.run_no),
        }
    }

    pub async fn execute(&mut self, plan: Vec<Step>) {
        let total = plan.len();
        let mut broken: Vec<Db> = Vec::new();
        for (i, step) in plan.into_iter().enumerate() {
            let label = format!("[{}/{total}] {}", i + 1, step.label());
            if let Some(db) = step.db() {
                if broken.contains(db) && !matches!(step, Step::Prepare { .. }) {
                    self.report.skipped.push(format!(
                        "{}: its database could not be prepared",
                        step.label()
                    ));
                    continue;
                }
            }
            let timed = !matches!(step, Step::Prepare { .. });
            let (warmup, duration) = if timed {
                (self.settings.warmup, self.settings.duration)
            } else {
                (Duration::ZERO, Duration::ZERO)
            };
            let mut attempt = 0;
            // The quietest busy attempt so far: (busy %, its runs, its ceilings, summary).
            let mut quietest: Option<(u64, Vec<Run>, Vec<Ceiling>, String)> = None;
            let outcome = loop {
                let progress = ProgressLine::start(label.clone(), warmup, duration);
                let (runs, ceilings) = (self.report.runs.len(), self.report.ceilings.len());
                let outcome = self.step(&step).await;
                let busy = self.busiest_since(runs, ceilings);
                let Ok(summary) = outcome else {
                    break (outcome, progress);
                };
                if busy <= self.settings.busy_limit_pct {
                    break (Ok(summary), progress);
                }
                // Another process took CPU the server and client needed: the figures would
                // measure the neighbour too. Keep the quietest attempt and try again.
                let new_runs = self.report.runs.split_off(runs);
                let new_ceilings = self.report.ceilings.split_off(ceilings);
                if quietest.as_ref().is_none_or(|q| busy < q.0) {
                    quietest = Some((busy, new_runs, new_ceilings, summary));
                }
                if attempt == self.settings.busy_retries {
                    let Some((busy, r, c, summary)) = quietest.take() else {
                        break (Err(anyhow::anyhow!("no attempt was kept")), progress);
                    };
                    self.report.runs.extend(r);
                    self.report.ceilings.extend(c);
                    let note = format!("{summary} (other processes used {busy}% of a core)");
                    break (Ok(note), progress);
                }
                attempt += 1;
                progress.finish(&format!(
                    "other processes used {busy}% of a core meanwhile; repeating ({attempt}/{})",
                    self.settings.busy_retries
                ));
            };
            match outcome {
                (Ok(summary), progress) => progress.finish(&summary),
                (Err(e), progress) => {
                    progress.finish(&format!("FAILED: {e:#}"));
                    self.report.skipped.push(format!("{}: {e:#}", step.label()));
                    if let (Step::Prepare { .. }, Some(db)) = (&step, step.db()) {
                        broken.push(db.clone());
                    }
                }
            }
        }
    }

    /// The most CPU other processes used, in percent of one core, during any run or ceiling
    /// recorded after the first `runs` runs and `ceilings` ceilings.
    fn busiest_since(&self, runs: usize, ceilings: usize) -> u64 {
        let pct = |cpu: u64, elapsed: u64| permille(cpu, elapsed).map_or(0, |p| p / 10);
        let r = self.report.runs[runs..]
            .iter()
            .map(|r| pct(r.measured.other_cpu_ns, r.measured.elapsed_ns));
        let c = self.report.ceilings[ceilings..]
            .iter()
            .map(|c| pct(c.measured.other_cpu_ns, c.measured.elapsed_ns));
        r.chain(c).max().unwrap_or(0)
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<String> {
        match step.clone() {
            Step::Prepare { db, existing } => self.prepare(&db, existing).await,
            Step::Http { load } => {
                let run = self.http_run(load).await?;
                Ok(summary(&run))
            }
            Step::Gateway {
                db,
                existing,
                workload,
                load,
                setup,
            } => {
                let run = self
                    .gateway_run(&db, existing, workload, load, setup)
                    .await?;
                Ok(summary(&run))
            }
            Step::OpenFromClosed {
                db,
                existing,
                workload,
                connections,
                percent,
            } => {
                // The closed loop at the same connections; failing that, the fastest closed
                // loop of the workload on this data.
                let closed_runs = self.report.runs.iter().filter(|r| {
                    r.workload == workload
                        && r.setup() == Setup::default()
                        && r.backend == db.backend()
                        && r.existing == existing
                        && matches!(r.load, Load::Closed { .. })
                });
                let closed = closed_runs
                    .clone()
                    .find(|r| r.load.connections() == connections)
                    .or_else(|| closed_runs.max_by_key(|r| r.ops_per_s))
                    .map(|r| r.ops_per_s)
                    .context("no closed-loop run of this workload to derive a rate from")?;
                let rate = (closed * percent / 100).max(1);
                let load = Load::Open { rate, connections };
                let run = self
                    .gateway_run(&db, existing, workload, load, Setup::default())
                    .await?;
                Ok(summary(&run))
            }
            Step::SqliteCeiling { db, existing } => {
                let Db::Sqlite { path } = &db else {
                    anyhow::bail!("the SQLite ceiling needs a SQLite database");
                };
                let spec = self.ceiling_spec(existing);
                let tag = self.tag();
                let native =
                    Ceiling::new(existing, ceiling::sqlite_native(path, spec, &tag).await?);
                let tag = self.tag();
                let sqlx = Ceiling::new(existing, ceiling::sqlite(&db.url(), spec, &tag).await?);
                let s = format!(
                    "{} ops/s natively, {} ops/s through sqlx, 64 per commit",
                    native.ops_per_s, sqlx.ops_per_s
                );
                self.report.ceilings.push(native);
                self.report.ceilings.push(sqlx);
                Ok(s)
            }
            Step::PgCeiling { url, existing } => {
                let scratch = Db::ceiling_url(&url)?;
                ceiling::prepare_pg(&scratch, existing, &|_| {}).await?;
                let tag = self.tag();
                let spec = self.ceiling_spec(existing);
                let m = ceiling::postgres(&scratch, ceiling::PG_CLIENTS, spec, &tag).await?;
                let c = Ceiling::new(existing, m);
                let s = format!("{} ops/s from {} clients", c.ops_per_s, ceiling::PG_CLIENTS);
                self.report.ceilings.push(c);
                Ok(s)
            }
        }
    }

    fn ceiling_spec(&self, existing: u64) -> CeilingSpec {
        CeilingSpec {
            existing,
            warmup: self.settings.warmup,
            duration: self.settings.duration,
            max_ops: self.settings.max_ops,
            seed: self.settings.seed,
        }
    }

    async fn start_gateway(&self, db: &Db) -> anyhow::Result<Server> {
        self.start_node(db, None).await
    }

    /// A gateway on `db`, calling the HTTP wallet at `wallet` when given.
    async fn start_node(&self, db: &Db, wallet: Option<&str>) -> anyhow::Result<Server> {
        let mut cmd =
            server::tillgate_command(&self.settings.tillgate, &db.url(), &self.settings.work_dir);
        if let Some(url) = wallet {
            cmd.args(["--channel", url])
                .env("TILLGATE_CHANNEL_KEY", WALLET_KEY_HEX);
        }
        Server::start(cmd, "tillgate").await
    }

    /// `nodes` gateways on `db`, started one after the other (the first one to start on a
    /// fresh database sets it up); all stopped again if one fails to start.
    async fn start_nodes(
        &self,
        db: &Db,
        nodes: u32,
        wallet: Option<&str>,
    ) -> anyhow::Result<Vec<Server>> {
        let mut started: Vec<Server> = Vec::new();
        for _ in 0..nodes.max(1) {
            match self.start_node(db, wallet).await {
                Ok(s) => started.push(s),
                Err(e) => {
                    for s in started {
                        let _ = s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// The wallet simulator with no added latency and no faults, its state file in
    /// `/dev/shm` where there is one: the wallet is another party, and its fsyncs on the
    /// gateway's disk would be measured as the gateway's.
    async fn start_wallet(&self, tag: &str) -> anyhow::Result<(Server, PathBuf)> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            self.settings.work_dir.as_path()
        };
        let state = dir.join(format!("tillgate-bench-wallet-{tag}.json"));
        let mut cmd = tokio::process::Command::new(&self.settings.tillgate);
        cmd.arg("wallet-sim")
            .args(["--listen", "127.0.0.1:0", "--latency-ms", "0", "--state"])
            .arg(&state)
            .current_dir(&self.settings.work_dir)
            .env("TILLGATE_CHANNEL_KEY", WALLET_KEY_HEX)
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0");
        let sim = Server::start(cmd, "wallet-sim").await?;
        Ok((sim, state))
    }

    /// A fresh database: the gateway creates the schema and the sandbox merchant, stops, the
    /// seed goes in, and the gateway, started again, answers for seeded transactions.
    pub async fn prepare(&mut self, db: &Db, existing: u64) -> anyhow::Result<String> {
        let t0 = std::time::Instant::now();
        match db {
            Db::Sqlite { path } => remove_sqlite_files(path)?,
            Db::Postgres { url } => {
                seed::recreate_pg_database(url).await?;
                // The sandbox key of a PostgreSQL database lives in the working directory.
                let _ = std::fs::remove_file(self.settings.work_dir.join("tillgate-sandbox.key"));
            }
        }
        self.start_gateway(db).await?.stop().await?;
        let tty = std::io::stderr().is_terminal();
        let progress = move |done: u64| {
            if tty {
                eprint!("\r\x1b[2K  seeded {done} of {existing}");
            }
        };
        match db {
            Db::Sqlite { .. } => seed::seed_sqlite(&db.url(), existing, &progress).await?,
            Db::Postgres { url } => seed::seed_postgres(url, existing, &progress).await?,
        }
        let tag = self.tag();
        let gateway = self.start_gateway(db).await?;
        let verified = seed::verify(gateway.addr, existing, &tag).await;
        gateway.stop().await?;
        verified?;
        Ok(format!(
            "{existing} transactions seeded and verified in {}s",
            t0.elapsed().as_secs()
        ))
    }

    async fn http_run(&mut self, load: Load) -> anyhow::Result<Run> {
        let server = Server::start(server::baseline_command()?, "baseline server").await?;
        let shared = Arc::new(Shared::new(1_000_000, self.tag()));
        let spec = self.spec(Workload::BaselineHttp, load);
        let target = Target::one(
            Node {
                addr: server.addr,
                pid: server.pid,
            },
            false,
            None,
        );
        let measured = driver::run(spec, shared, target).await;
        server.stop().await?;
        let run = Run::new(
            Workload::BaselineHttp,
            "none",
            0,
            load,
            measured?,
            Setup::default(),
        );
        self.report.runs.push(run.clone());
        Ok(run)
    }

    async fn gateway_run(
        &mut self,
        db: &Db,
        existing: u64,
        workload: Workload,
        load: Load,
        setup: Setup,
    ) -> anyhow::Result<Run> {
        let tag = self.tag();
        let wallet = match setup.wallet {
            Wallet::Sandbox => None,
            Wallet::Http => Some(self.start_wallet(&tag).await?),
        };
        let wallet_url = wallet
            .as_ref()
            .map(|(sim, _)| format!("http://{}", sim.addr));
        let nodes = match self
            .start_nodes(db, setup.nodes, wallet_url.as_deref())
            .await
        {
            Ok(n) => n,
            Err(e) => {
                if let Some((sim, state)) = wallet {
                    let _ = sim.stop().await;
                    let _ = std::fs::remove_file(state);
                }
                return Err(e);
            }
        };
        let target = Target {
            nodes: nodes
                .iter()
                .map(|s| Node {
                    addr: s.addr,
                    pid: s.pid,
                })
                .collect(),
            metrics: true,
            db_comm: match db {
                Db::Sqlite { .. } => None,
                Db::Postgres { .. } => Some("postgres"),
            },
            wallet_pid: wallet.as_ref().map(|(sim, _)| sim.pid),
        };
        let measured = self
            .measure_gateway(&target, existing, workload, load, setup, tag.clone())
            .await;
        let tails: Vec<String> = nodes.iter().map(Server::stderr_tail).collect();
        let mut stopped = Ok(());
        for node in nodes {
            if let Err(e) = node.stop().await {
                stopped = Err(e);
            }
        }
        if let Some((sim, state)) = wallet {
            let _ = sim.stop().await;
            let _ = std::fs::remove_file(state);
        }
        stopped?;
        let mut measured = measured?;
        if measured.first_error.is_some() {
            // The server's own last words usually say why.
            if let (Some(e), Some(last)) = (
                measured.first_error.as_mut(),
                tails.iter().filter_map(|t| t.lines().last()).next(),
            ) {
                e.push_str(&format!(" [server: {last}]"));
            }
        }
        // Every refund the gateway acknowledged must be in the database once it has stopped.
        let stored = if workload.refunds() {
            let acknowledged = std::mem::take(&mut measured.acknowledged_refunds);
            Some(
                match seed::stored_refunds(&db.url(), &format!("{tag}r")).await {
                    Ok(found) => StoredCheck::of(&acknowledged, &found),
                    Err(e) => StoredCheck::failed(acknowledged.len(), format!("{e:#}")),
                },
            )
        } else {
            None
        };
        let mut run = Run::new(workload, db.backend(), existing, load, measured, setup);
        run.stored = stored;
        self.report.runs.push(run.clone());
        Ok(run)
    }

    /// The measured part of a gateway run, on gateways already started.
    async fn measure_gateway(
        &mut self,
        target: &Target,
        existing: u64,
        workload: Workload,
        load: Load,
        setup: Setup,
        tag: String,
    ) -> anyhow::Result<driver::Measured> {
        let spec = self.spec(workload, load);
        let mut shared = Shared::new(existing, tag);
        if workload == Workload::Cancel {
            let prep = Arc::new(Shared::new(existing, format!("{}p", shared.tag)));
            let pool = driver::prepare_cancel_pool(
                prep,
                target.nodes[0].addr,
                self.settings.cancel_pool,
                self.settings.warmup + self.settings.duration,
                load.connections(),
                spec.seed,
            )
            .await?;
            shared.cancel_pool = Some(CancelPool::new(pool));
        }
        if setup.wallet == Wallet::Http && workload.picks_paid_transactions() {
            let prep = Arc::new(Shared::new(existing, format!("{}w", shared.tag)));
            let paid =
                driver::prepare_paid_pool(prep, target, WALLET_PAID_POOL, 16, spec.seed).await?;
            shared.paid = Some(paid);
        }
        driver::run(spec, Arc::new(shared), target.clone()).await
    }
}

fn summary(r: &Run) -> String {
    let m = &r.measured;
    let mut s = format!(
        "{} ops/s, p99 {}, {} ok, {} failed",
        r.ops_per_s,
        crate::stats::fmt_ns(m.latency.p99_ns),
        m.ops_ok,
        m.ops_failed
    );
    if m.stopped_early {
        s.push_str(", stopped early (nothing left to do)");
    }
    if let Some(e) = &m.first_error {
        s.push_str(&format!("; first error: {e}"));
    }
    s
}

/// Removes a SQLite database the benchmark made before, with its WAL, shared memory and sandbox
/// key files.
pub fn remove_sqlite_files(path: &Path) -> anyhow::Result<()> {
    let name = path.display().to_string();
    for suffix in ["", "-wal", "-shm", ".key"] {
        let p = PathBuf::from(format!("{name}{suffix}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "postgres://postgres@127.0.0.1:5432/tillgate_bench";

    fn gateway_steps(plan: &[Step]) -> Vec<(Workload, &'static str, u32, Setup)> {
        plan.iter()
            .filter_map(|s| match s {
                Step::Gateway {
                    db,
                    workload,
                    load,
                    setup,
                    ..
                } => Some((*workload, db.backend(), load.connections(), *setup)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_suite_sweeps_seeds_grows_and_ends_with_postgres() {
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[1, 64, 256],
            &[10_000, 1_000_000],
            Some(PG),
            &Part::ALL,
            &[1, 2, 3],
        );
        let count = |f: &dyn Fn(&Step) -> bool| plan.iter().filter(|s| f(s)).count();
        assert_eq!(count(&|s| matches!(s, Step::Http { .. })), 3);
        assert_eq!(count(&|s| matches!(s, Step::Prepare { .. })), 3);
        assert_eq!(count(&|s| matches!(s, Step::SqliteCeiling { .. })), 2);
        assert_eq!(count(&|s| matches!(s, Step::PgCeiling { .. })), 1);
        assert_eq!(count(&|s| matches!(s, Step::OpenFromClosed { .. })), 2);
        // Every gateway step comes after the preparation of its database.
        for (i, s) in plan.iter().enumerate() {
            if let Step::Gateway { db, .. } = s {
                assert!(plan[..i]
                    .iter()
                    .any(|p| matches!(p, Step::Prepare { db: d, .. } if d == db)));
            }
        }
        assert!(matches!(
            plan.last(),
            Some(Step::Gateway {
                db: Db::Postgres { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_single_run_of_a_reading_workload_has_no_store_ceiling() {
        let db = Db::Sqlite {
            path: PathBuf::from("/tmp/x.db"),
        };
        let loads = [Load::Closed { concurrency: 8 }];
        let one = [1];
        let plan = single_plan(
            db.clone(),
            100,
            Workload::Query,
            &loads,
            true,
            Wallet::Sandbox,
            &one,
        )
        .unwrap();
        assert_eq!(plan.len(), 3);
        let plan = single_plan(
            db.clone(),
            100,
            Workload::Refund,
            &loads,
            true,
            Wallet::Http,
            &one,
        )
        .unwrap();
        assert!(matches!(plan.last(), Some(Step::SqliteCeiling { .. })));
        assert_eq!(
            gateway_steps(&plan),
            [
                (Workload::Refund, "sqlite", 8, Setup::default()),
                (
                    Workload::Refund,
                    "sqlite",
                    8,
                    Setup {
                        wallet: Wallet::Http,
                        nodes: 1
                    }
                )
            ],
            "through the HTTP wallet, beside the same run with the sandbox wallet"
        );
        // Several nodes need one database they can all open: PostgreSQL.
        let err = single_plan(
            db,
            100,
            Workload::Refund,
            &loads,
            true,
            Wallet::Sandbox,
            &[2],
        );
        assert!(err.is_err());
        let pg = Db::Postgres { url: PG.into() };
        let plan = single_plan(
            pg,
            100,
            Workload::AddPay,
            &loads,
            true,
            Wallet::Sandbox,
            &[1, 3],
        )
        .unwrap();
        let nodes: Vec<u32> = gateway_steps(&plan).iter().map(|g| g.3.nodes).collect();
        assert_eq!(nodes, [1, 3]);
        assert!(matches!(plan.last(), Some(Step::PgCeiling { .. })));
    }

    #[test]
    fn the_wallet_and_nodes_parts_run_beside_their_sandbox_one_node_runs() {
        let http = Setup {
            wallet: Wallet::Http,
            nodes: 1,
        };
        let on = |n| Setup {
            wallet: Wallet::Sandbox,
            nodes: n,
        };
        // Everything: each sandbox run once, the HTTP wallet refunds on both backends, and the
        // nodes part reuses the PostgreSQL runs at 64 as its one-node runs.
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[1, 64],
            &[10_000],
            Some(PG),
            &Part::ALL,
            &[1, 2, 3],
        );
        let g = gateway_steps(&plan);
        assert!(g.contains(&(Workload::Refund, "sqlite", 64, http)));
        assert!(g.contains(&(Workload::Refund, "postgres", 16, http)));
        for w in [Workload::Refund, Workload::AddPay] {
            for n in [1, 2, 3] {
                let count = g
                    .iter()
                    .filter(|s| **s == (w, "postgres", 64, on(n)))
                    .count();
                assert_eq!(count, 1, "{} on {n} nodes", w.name());
            }
            assert!(g.contains(&(w, "postgres", 16, Setup::default())));
        }
        let sandbox_refunds = |g: &[(Workload, &str, u32, Setup)], backend, c| {
            g.iter()
                .filter(|s| **s == (Workload::Refund, backend, c, Setup::default()))
                .count()
        };
        assert_eq!(sandbox_refunds(&g, "sqlite", 64), 1);
        assert_eq!(sandbox_refunds(&g, "postgres", 16), 1);

        // The wallet part alone still measures the sandbox refunds and both ceilings.
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[64],
            &[10_000, 1_000_000],
            Some(PG),
            &[Part::Wallet],
            &[1],
        );
        let g = gateway_steps(&plan);
        assert_eq!(g.len(), 4);
        assert_eq!(sandbox_refunds(&g, "sqlite", 64), 1);
        assert_eq!(sandbox_refunds(&g, "postgres", 16), 1);
        assert!(plan.iter().any(|s| matches!(s, Step::SqliteCeiling { .. })));
        assert!(plan.iter().any(|s| matches!(s, Step::PgCeiling { .. })));
        assert_eq!(
            plan.iter()
                .filter(|s| matches!(s, Step::Prepare { .. }))
                .count(),
            2,
            "no growth database without the growth part"
        );

        // The nodes part alone, without PostgreSQL, has nothing to run on.
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[64],
            &[10_000],
            None,
            &[Part::Nodes],
            &[1, 2],
        );
        assert!(gateway_steps(&plan).is_empty());
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[64],
            &[10_000],
            Some(PG),
            &[Part::Nodes],
            &[1, 2],
        );
        assert_eq!(gateway_steps(&plan).len(), 4);
    }

    #[test]
    fn a_setup_names_what_sets_it_apart() {
        assert_eq!(Setup::default().suffix(), "");
        let s = Setup {
            wallet: Wallet::Http,
            nodes: 3,
        };
        assert_eq!(s.suffix(), " via wallet-sim on 3 nodes");
    }

    #[test]
    fn the_postgres_ceiling_uses_a_database_beside_the_gateways() {
        assert_eq!(
            Db::ceiling_url("postgres://postgres@127.0.0.1:5432/tillgate_bench").unwrap(),
            "postgres://postgres@127.0.0.1:5432/tillgate_bench_ceiling"
        );
        assert_eq!(
            Db::ceiling_url("postgres://postgres@127.0.0.1/tillgate_bench?sslmode=disable")
                .unwrap(),
            "postgres://postgres@127.0.0.1/tillgate_bench_ceiling?sslmode=disable"
        );
        assert!(Db::ceiling_url("postgres://postgres@db.example.com/tillgate_bench").is_err());
    }
}
