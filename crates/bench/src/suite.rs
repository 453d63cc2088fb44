//! The plan of an invocation (which databases, which runs, in which order) and its execution:
//! prepare and seed each database, start a fresh server for every run, measure, stop it.
//!
//! A plan is a list of steps made before anything runs, so the progress line can say "run 7 of
//! 31" and a failed step can be reported and skipped without losing the rest of the figures.

use crate::ceiling::{self, CeilingSpec};
use crate::driver::{self, Load, Spec, Target};
use crate::pockyt::Signer;
use crate::report::{short_count, Ceiling, Report, Run};
use crate::seed;
use crate::server::{self, Server};
use crate::stats::permille;
use crate::workload::{CancelPool, Shared, Workload};
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

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// A fresh database with `existing` seeded transactions, checked through the API.
    Prepare { db: Db, existing: u64 },
    /// Baseline (a) at `load`.
    Http { load: Load },
    /// The gateway under `workload` at `load`.
    Gateway {
        db: Db,
        existing: u64,
        workload: Workload,
        load: Load,
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
            } => format!(
                "{} {} {} {}",
                workload.name(),
                db.backend(),
                short_count(*existing),
                load.label()
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
/// query and refund, the open loop, growth runs, and PostgreSQL at 16 connections.
pub fn suite_plan(
    work_dir: &Path,
    concurrency: &[u32],
    growth: &[u64],
    postgres_url: Option<&str>,
) -> Vec<Step> {
    let mut plan = Vec::new();
    let c = crate::report::SQLITE_CONNECTIONS;
    let closed = |concurrency| Load::Closed { concurrency };
    let Some(&base) = growth.first() else {
        return plan;
    };
    for &n in concurrency {
        plan.push(Step::Http { load: closed(n) });
    }
    for (k, &existing) in growth.iter().enumerate() {
        let db = Db::Sqlite {
            path: work_dir.join(format!("bench-{}.db", short_count(existing))),
        };
        plan.push(Step::Prepare {
            db: db.clone(),
            existing,
        });
        let gw = |workload, load| Step::Gateway {
            db: db.clone(),
            existing,
            workload,
            load,
        };
        if k == 0 {
            plan.push(gw(Workload::BadSignature, closed(c)));
            for &n in concurrency {
                plan.push(gw(Workload::Query, closed(n)));
            }
            for &n in concurrency {
                plan.push(gw(Workload::Refund, closed(n)));
            }
            for percent in [50, 90] {
                plan.push(Step::OpenFromClosed {
                    db: db.clone(),
                    existing,
                    workload: Workload::Refund,
                    connections: c,
                    percent,
                });
            }
            plan.push(gw(Workload::AddPay, closed(c)));
            plan.push(gw(Workload::Cancel, closed(c)));
            plan.push(gw(Workload::Mix, closed(c)));
        } else {
            for w in [
                Workload::Query,
                Workload::Refund,
                Workload::AddPay,
                Workload::Mix,
            ] {
                plan.push(gw(w, closed(c)));
            }
        }
        plan.push(Step::SqliteCeiling { db, existing });
    }
    if let Some(url) = postgres_url {
        let pc = crate::report::PG_CONNECTIONS;
        plan.push(Step::PgCeiling {
            url: url.to_owned(),
            existing: base,
        });
        let db = Db::Postgres {
            url: url.to_owned(),
        };
        plan.push(Step::Prepare {
            db: db.clone(),
            existing: base,
        });
        for w in [Workload::Refund, Workload::Query, Workload::AddPay] {
            plan.push(Step::Gateway {
                db: db.clone(),
                existing: base,
                workload: w,
                load: closed(pc),
            });
        }
    }
    plan
}

/// A one-workload plan: the workload at each load, with baseline (a) at the same connection
/// counts and, for a writing workload, baseline (b) on the same backend.
pub fn single_plan(
    db: Db,
    existing: u64,
    workload: Workload,
    loads: &[Load],
    ceilings: bool,
) -> anyhow::Result<Vec<Step>> {
    let mut plan = Vec::new();
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
    for &load in loads {
        plan.push(Step::Gateway {
            db: db.clone(),
            existing,
            workload,
            load,
        });
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
            } => {
                let run = self.gateway_run(&db, existing, workload, load).await?;
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
                let run = self.gateway_run(&db, existing, workload, load).await?;
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
        let cmd =
            server::tillgate_command(&self.settings.tillgate, &db.url(), &self.settings.work_dir);
        Server::start(cmd, "tillgate").await
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
        let shared = Arc::new(Shared {
            signer: Signer::default(),
            existing: 1_000_000,
            tag: self.tag(),
            cancel_pool: None,
            ipn_url: None,
        });
        let spec = self.spec(Workload::BaselineHttp, load);
        let target = Target {
            addr: server.addr,
            pid: server.pid,
            metrics: false,
            db_comm: None,
        };
        let measured = driver::run(spec, shared, target).await;
        server.stop().await?;
        let run = Run::new(Workload::BaselineHttp, "none", 0, load, measured?);
        self.report.runs.push(run.clone());
        Ok(run)
    }

    async fn gateway_run(
        &mut self,
        db: &Db,
        existing: u64,
        workload: Workload,
        load: Load,
    ) -> anyhow::Result<Run> {
        let server = self.start_gateway(db).await?;
        let tag = self.tag();
        let spec = self.spec(workload, load);
        let mut shared = Shared {
            signer: Signer::default(),
            existing,
            tag,
            cancel_pool: None,
            ipn_url: None,
        };
        if workload == Workload::Cancel {
            let prep = Arc::new(Shared {
                signer: Signer::default(),
                existing,
                tag: format!("{}p", shared.tag),
                cancel_pool: None,
                ipn_url: None,
            });
            let pool = driver::prepare_cancel_pool(
                prep,
                server.addr,
                self.settings.cancel_pool,
                self.settings.warmup + self.settings.duration,
                load.connections(),
                spec.seed,
            )
            .await;
            match pool {
                Ok(p) => shared.cancel_pool = Some(CancelPool::new(p)),
                Err(e) => {
                    server.stop().await?;
                    return Err(e);
                }
            }
        }
        let target = Target {
            addr: server.addr,
            pid: server.pid,
            metrics: true,
            db_comm: match db {
                Db::Sqlite { .. } => None,
                Db::Postgres { .. } => Some("postgres"),
            },
        };
        let measured = driver::run(spec, Arc::new(shared), target).await;
        let tail = server.stderr_tail();
        server.stop().await?;
        let mut measured = measured?;
        if measured.first_error.is_some() && !tail.is_empty() {
            if let Some(e) = measured.first_error.as_mut() {
                // The server's own last words usually say why.
                let last = tail.lines().last().unwrap_or_default();
                e.push_str(&format!(" [server: {last}]"));
            }
        }
        let run = Run::new(workload, db.backend(), existing, load, measured);
        self.report.runs.push(run.clone());
        Ok(run)
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

    #[test]
    fn the_suite_sweeps_seeds_grows_and_ends_with_postgres() {
        let plan = suite_plan(
            Path::new("/tmp/x"),
            &[1, 64, 256],
            &[10_000, 1_000_000],
            Some("postgres://postgres@127.0.0.1:5432/tillgate_bench"),
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
        let plan = single_plan(db.clone(), 100, Workload::Query, &loads, true).unwrap();
        assert_eq!(plan.len(), 3);
        let plan = single_plan(db, 100, Workload::Refund, &loads, true).unwrap();
        assert!(matches!(plan.last(), Some(Step::SqliteCeiling { .. })));
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
