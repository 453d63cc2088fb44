//! `tillgate-bench`: measures tillgate against its ceilings in the same run.
//!
//! `main` parses the command line, builds the plan and hands it to [`suite::Bench`]; the
//! modules hold the parts: the load generator (`driver`, `schedule`, `client`, `workload`), the
//! baselines (`baseline_http`, `ceiling`), the data (`seed`), the probes (`procfs`, `metrics`)
//! and the output (`stats`, `report`, `svg`); `soak` is the minutes-long run sampled over time.

mod baseline_http;
mod ceiling;
mod client;
mod driver;
mod export;
mod metrics;
mod pockyt;
mod procfs;
mod report;
mod schedule;
mod seed;
mod server;
mod soak;
mod stats;
mod suite;
mod svg;
mod workload;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use driver::Load;
use std::path::PathBuf;
use std::time::Duration;
use suite::{Bench, Db, Part, Settings};
use workload::{Wallet, Workload};

#[derive(Parser)]
#[command(
    name = "tillgate-bench",
    about = "Benchmark tillgate against its HTTP+signature and durable-store ceilings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The default suite (a few minutes): every workload on SQLite with a concurrency sweep,
    /// an open loop, growth to 1e6 existing transactions, and PostgreSQL at 16 connections.
    Suite(SuiteArgs),
    /// One workload at one or more loads, with the ceilings beside it.
    Run(RunArgs),
    /// `tillgate export` of seeded transactions as CSV: wall time and peak memory at each size.
    Export(ExportArgs),
    /// Minutes of steady mixed load on one gateway, sampled every few seconds: throughput, p99,
    /// resident memory, open file descriptors and outbox backlog over time (table, CSV, SVG).
    Soak(SoakArgs),
    /// Baseline (a)'s server; the benchmark starts it itself.
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[derive(Args)]
struct Common {
    /// The tillgate binary (default: the `tillgate` next to this executable).
    #[arg(long)]
    tillgate: Option<PathBuf>,
    /// Where databases and key files go (default: the system temp dir's tillgate-bench).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Unmeasured seconds at the start of each run.
    #[arg(long, default_value_t = 1)]
    warmup_s: u64,
    /// Measured seconds of each run.
    #[arg(long, default_value_t = 4)]
    duration_s: u64,
    /// An upper bound on the operations of one run.
    #[arg(long, default_value_t = 5_000_000)]
    max_ops: u64,
    /// The most transactions added (unmeasured, for as long as a run lasts) before a cancel
    /// run: the most it can cancel.
    #[arg(long, default_value_t = 1_000_000)]
    cancel_pool: usize,
    /// Seed of the workers' random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Repeat a run up to this many times while other processes keep the machine busy.
    #[arg(long, default_value_t = 2)]
    busy_retries: u32,
    /// What counts as busy: other processes using more than this percent of one core.
    #[arg(long, default_value_t = 25)]
    busy_limit_pct: u64,
    /// Write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the throughput and p99 against concurrency plot to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Keep the SQLite databases after the run.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct SuiteArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrency levels of the sweeps.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64, 256])]
    concurrency: Vec<u32>,
    /// Existing transactions: the first is the base size, the rest are the growth runs
    /// (add 10000000 for 1e7).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    growth: Vec<u64>,
    /// The gateway's PostgreSQL database; dropped and re-created (its name must start with
    /// tillgate_bench). The ceiling uses NAME_ceiling beside it.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/tillgate_bench"
    )]
    postgres_url: String,
    /// Skip PostgreSQL (and so the PostgreSQL runs of the wallet and nodes parts).
    #[arg(long)]
    no_postgres: bool,
    /// The parts to run (default: all): sqlite (every workload, sweeps, open loop), growth,
    /// postgres (16 and 64 connections), wallet (refunds through the HTTP wallet simulator on
    /// both backends), nodes (several gateways on one PostgreSQL).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Part::ALL)]
    parts: Vec<Part>,
    /// Node counts of the nodes part (one node is the PostgreSQL run at 64 connections).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    nodes: Vec<u32>,
}

#[derive(Args)]
struct ExportArgs {
    /// The tillgate binary (default: the `tillgate` next to this executable).
    #[arg(long)]
    tillgate: Option<PathBuf>,
    /// Where the databases go (default: the system temp dir's tillgate-bench).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Seeded transactions of each run.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 1_000_000])]
    rows: Vec<u64>,
}

#[derive(Args)]
struct SoakArgs {
    /// The tillgate binary (default: the `tillgate` next to this executable).
    #[arg(long)]
    tillgate: Option<PathBuf>,
    /// Where the database, the CSV and the SVG go (default: the system temp dir's
    /// tillgate-bench).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Minutes of load.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    interval_s: u64,
    /// Connections of the closed loop (the `mix` workload, every add and refund notified).
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Existing (seeded) transactions that queries and refunds pick from.
    #[arg(long, default_value_t = 10_000)]
    existing: u64,
    /// After the load, the longest the sampling waits for the outbox to drain.
    #[arg(long, default_value_t = 120)]
    drain_limit_s: u64,
    /// Soak on PostgreSQL instead of SQLite: this database is dropped and re-created (its name
    /// must start with tillgate_bench).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Seed of the workers' random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The CSV of the samples (default: soak.csv in the work dir).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// The plot of the samples (default: soak.svg in the work dir).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Keep the SQLite database after the run.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Closed loop at each of these concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = [64])]
    concurrency: Vec<u32>,
    /// Open loop at this many operations per second instead (over --connections).
    #[arg(long)]
    rate: Option<u64>,
    /// Connections of the open loop.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Existing (seeded) transactions.
    #[arg(long, default_value_t = 10_000)]
    existing: u64,
    /// sqlite:///PATH (a fresh file, refused if it exists) or postgres://…/tillgate_bench…
    /// (dropped and re-created). Default: a SQLite file in the work dir.
    #[arg(long)]
    database_url: Option<String>,
    /// Skip the baselines (no ratios).
    #[arg(long)]
    no_ceilings: bool,
    /// The wallet the gateway calls: its in-process sandbox, or the HTTP wallet simulator
    /// (`tillgate wallet-sim`, started by the bench, latency 0), the production path.
    #[arg(long, value_enum, default_value_t = Wallet::Sandbox)]
    wallet: Wallet,
    /// Run on this many gateway nodes, each its own process and port on the one PostgreSQL
    /// database, the connections spread over them; a list runs each count in turn.
    #[arg(long, value_delimiter = ',', default_values_t = [1])]
    nodes: Vec<u32>,
}

/// Builds the gateway next to this executable when the bench was started by `cargo run`, so
/// that one command runs the benchmark from a fresh clone. The profile is the bench's own.
fn build_tillgate() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let release = std::env::current_exe()
        .map(|p| p.components().any(|c| c.as_os_str() == "release"))
        .unwrap_or(false);
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    eprintln!(
        "building tillgate first (cargo build --bin tillgate{})",
        if release { " --release" } else { "" }
    );
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "--bin", "tillgate", "--manifest-path"])
        .arg(&manifest);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("cannot run cargo to build tillgate")?;
    anyhow::ensure!(status.success(), "building tillgate failed");
    Ok(())
}

impl Common {
    fn settings(&self) -> anyhow::Result<Settings> {
        let tillgate = self
            .tillgate
            .clone()
            .unwrap_or_else(server::default_tillgate);
        if !tillgate.is_file() && self.tillgate.is_none() {
            build_tillgate()?;
        }
        if !tillgate.is_file() {
            bail!(
                "no tillgate binary at {}: build it first (cargo build --release --bin tillgate) \
                 or pass --tillgate PATH",
                tillgate.display()
            );
        }
        let work_dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("tillgate-bench"));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        anyhow::ensure!(self.duration_s > 0, "--duration-s must be at least 1");
        anyhow::ensure!(
            self.duration_s <= 3600 && self.warmup_s <= 600,
            "runs are bounded: at most an hour measured and ten minutes of warm-up"
        );
        Ok(Settings {
            tillgate: tillgate.canonicalize().unwrap_or(tillgate),
            work_dir,
            warmup: Duration::from_secs(self.warmup_s),
            duration: Duration::from_secs(self.duration_s),
            max_ops: self.max_ops,
            cancel_pool: self.cancel_pool,
            seed: self.seed,
            busy_retries: self.busy_retries,
            busy_limit_pct: self.busy_limit_pct,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::BaselineServer { listen } => baseline_http::serve(&listen).await,
            Command::Suite(args) => suite(args).await,
            Command::Run(args) => run(args).await,
            Command::Export(args) => export_bench(args).await,
            Command::Soak(args) => soak_bench(args).await,
        }
    })
}

async fn export_bench(args: ExportArgs) -> anyhow::Result<()> {
    let tillgate = args
        .tillgate
        .clone()
        .unwrap_or_else(server::default_tillgate);
    if !tillgate.is_file() && args.tillgate.is_none() {
        build_tillgate()?;
    }
    anyhow::ensure!(
        tillgate.is_file(),
        "no tillgate binary at {}: pass --tillgate PATH",
        tillgate.display()
    );
    // The export runs in its database's directory.
    let tillgate = tillgate.canonicalize().unwrap_or(tillgate);
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join("tillgate-bench"));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    if tillgate.display().to_string().contains("/debug/") {
        eprintln!("warning: {} looks like a debug build", tillgate.display());
    }
    println!("{}", command_line());
    export::run(&tillgate, &work_dir, &args.rows).await
}

async fn soak_bench(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=60).contains(&args.minutes),
        "a soak is bounded: --minutes from 1 to 60"
    );
    anyhow::ensure!(
        (1..=600).contains(&args.interval_s),
        "--interval-s from 1 to 600"
    );
    anyhow::ensure!(args.drain_limit_s <= 3600, "--drain-limit-s at most 3600");
    let common = Common {
        tillgate: args.tillgate.clone(),
        work_dir: args.work_dir.clone(),
        warmup_s: 0,
        duration_s: 1,
        max_ops: u64::MAX,
        cancel_pool: 0,
        seed: args.seed,
        busy_retries: 0,
        busy_limit_pct: 100,
        json: None,
        svg: None,
        keep: args.keep,
    };
    let settings = common.settings()?;
    warn_about_builds(&settings);
    let db = match &args.postgres {
        Some(url) => Db::Postgres { url: url.clone() },
        None => Db::Sqlite {
            path: settings.work_dir.join("soak.db"),
        },
    };
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| settings.work_dir.join("soak.csv"));
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| settings.work_dir.join("soak.svg"));
    let spec = soak::SoakSpec {
        load: Duration::from_secs(args.minutes * 60),
        interval: Duration::from_secs(args.interval_s),
        concurrency: args.concurrency.max(1),
        existing: args.existing,
        seed: args.seed,
        drain_limit: Duration::from_secs(args.drain_limit_s),
    };
    println!("{}", command_line());
    warn_if_busy().await;
    let report = report::Report::new(
        procfs::Machine::read(),
        settings.tillgate.display().to_string(),
        command_line(),
    );
    let mut bench = Bench::new(settings, report);
    let samples = soak::run(&mut bench, &db, &spec).await;
    if let (Db::Sqlite { path }, false) = (&db, args.keep) {
        let _ = suite::remove_sqlite_files(path);
    }
    let samples = samples?;
    println!();
    print!("{}", soak::summary(&samples));
    let title = format!(
        "tillgate soak: mix at c={} on {}, {} min, sampled every {} s",
        spec.concurrency,
        db.backend(),
        args.minutes,
        args.interval_s
    );
    std::fs::write(&csv_path, soak::csv(&samples))
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    println!("wrote {}", csv_path.display());
    std::fs::write(&svg_path, soak::plot(&title, &samples))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    println!("wrote {}", svg_path.display());
    Ok(())
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn warn_about_builds(settings: &Settings) {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of the benchmark; use --release for figures");
    }
    let path = settings.tillgate.display().to_string();
    if path.contains("/debug/") {
        eprintln!("warning: {path} looks like a debug build; its figures mean little");
    }
    eprintln!("tillgate: {path}");
}

/// Says so when other processes keep the machine busy: the figures would be theirs too.
async fn warn_if_busy() {
    let ticks = procfs::clock_ticks_per_s();
    let me = std::process::id();
    let (Ok(b0), Ok(c0)) = (procfs::machine_busy_ns(ticks), procfs::cpu_ns(me, ticks)) else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (Ok(b1), Ok(c1)) = (procfs::machine_busy_ns(ticks), procfs::cpu_ns(me, ticks)) else {
        return;
    };
    let others_ns = b1.saturating_sub(b0).saturating_sub(c1.saturating_sub(c0));
    if others_ns > 250_000_000 {
        eprintln!(
            "warning: other processes are using {}.{:02} cores; the figures will be lower than \
             this machine can do (see the 'other cores' column)",
            others_ns / 1_000_000_000,
            (others_ns % 1_000_000_000) / 10_000_000
        );
    }
}

async fn suite(args: SuiteArgs) -> anyhow::Result<()> {
    let settings = args.common.settings()?;
    warn_about_builds(&settings);
    anyhow::ensure!(!args.growth.is_empty(), "--growth needs at least one size");
    anyhow::ensure!(
        !args.concurrency.is_empty(),
        "--concurrency needs at least one level"
    );
    anyhow::ensure!(
        args.nodes.iter().all(|&n| (1..=16).contains(&n)),
        "--nodes: from 1 to 16 nodes"
    );
    let postgres = (!args.no_postgres).then_some(args.postgres_url.as_str());
    let plan = suite::suite_plan(
        &settings.work_dir,
        &args.concurrency,
        &args.growth,
        postgres,
        &args.parts,
        &args.nodes,
    );
    let base = args.growth[0];
    let top = (args.growth.len() > 1).then(|| args.growth.iter().copied().max().unwrap_or(base));
    finish(settings, plan, base, top, &args.common).await
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = args.common.settings()?;
    warn_about_builds(&settings);
    let db = match args.database_url.as_deref() {
        None => Db::Sqlite {
            path: settings
                .work_dir
                .join(format!("run-{}.db", report::short_count(args.existing))),
        },
        Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            Db::Postgres {
                url: url.to_owned(),
            }
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            let path = PathBuf::from(path.split('?').next().unwrap_or(path));
            if path.exists() {
                bail!(
                    "{} exists; the benchmark seeds a fresh database, so name a new file",
                    path.display()
                );
            }
            Db::Sqlite { path }
        }
        Some(url) => bail!("--database-url must be sqlite://… or postgres://…, not {url}"),
    };
    let loads: Vec<Load> = match args.rate {
        Some(rate) => vec![Load::Open {
            rate,
            connections: args.connections,
        }],
        None => args
            .concurrency
            .iter()
            .map(|&concurrency| Load::Closed { concurrency })
            .collect(),
    };
    let plan = suite::single_plan(
        db,
        args.existing,
        args.workload,
        &loads,
        !args.no_ceilings,
        args.wallet,
        &args.nodes,
    )?;
    finish(settings, plan, args.existing, None, &args.common).await
}

async fn finish(
    settings: Settings,
    plan: Vec<suite::Step>,
    base: u64,
    growth_top: Option<u64>,
    common: &Common,
) -> anyhow::Result<()> {
    let report = report::Report::new(
        procfs::Machine::read(),
        settings.tillgate.display().to_string(),
        command_line(),
    );
    let work_dir = settings.work_dir.clone();
    warn_if_busy().await;
    let mut bench = Bench::new(settings, report);
    bench.execute(plan).await;
    let mut report = bench.report;
    report.compute_ratios();
    report.judge_targets(base, growth_top);
    println!();
    print!("{}", report.table());
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &common.svg {
        std::fs::write(path, report.svg(base))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !common.keep {
        // Only the files this tool names itself in its work dir.
        for entry in std::fs::read_dir(&work_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // The sandbox key of a PostgreSQL run belongs to a database the next run re-creates.
            let ours = ((name.starts_with("bench-") || name.starts_with("run-"))
                && name.contains(".db"))
                || name == "tillgate-sandbox.key";
            if ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}
