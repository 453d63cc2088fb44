//! Seeded simulation of the lifecycle (issue 15, part 3): many merchants' operations in the
//! shapes of all three dialects, against a wallet that times out, answers twice, answers late
//! and crashes, terminals that go silent or drop mid-command, gateway crashes (the SQLite
//! store dropped and reopened from its file) and a manual clock — every choice drawn from one
//! seed, every task driven on one thread, so a seed replays exactly.
//!
//! After every step the payments it touched (all of them every few steps) are checked
//! against ARCHITECTURE.md's invariants; at the end every operation is resolved and the
//! gateway's books must equal the world's ledger. [`run_shard`] is what the test runs;
//! `TILLGATE_SIM_SEEDS=N` runs N seeds, `TILLGATE_SIM_SEED=S` replays one,
//! `TILLGATE_SIM_STEPS=K` sets the steps per seed.

mod check;
mod driver;
mod world;

pub use world::{Account, Callback, Prng, SimHub, SimWallet, TerminalPlan, World, WorldStats};

use std::sync::{Arc, Mutex};

/// Seeds the test suite runs by default, and steps per seed.
pub const DEFAULT_SEEDS: u64 = 64;
pub const DEFAULT_STEPS: usize = 250;

/// How often each kind of step comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every kind of step (the default).
    All,
    /// Cancels and the wallet's late answers five times as often: retries of failed cancels
    /// with answers still on their way (where a late answer once settled the wrong cancel).
    Cancels,
}

impl Mix {
    /// The mix of `TILLGATE_SIM_MIX` (`cancels`), else [`Mix::All`].
    pub fn from_env() -> Mix {
        match std::env::var("TILLGATE_SIM_MIX").as_deref() {
            Ok("cancels") => Mix::Cancels,
            _ => Mix::All,
        }
    }

    fn weight(self, step: driver::Step, weight: u64) -> u64 {
        match (self, step) {
            (Mix::Cancels, driver::Step::Cancel) => weight * 5,
            (Mix::Cancels, driver::Step::Callback) => weight * 2,
            _ => weight,
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub steps: usize,
    pub payments: usize,
    pub refunds: usize,
    pub cancels: usize,
    pub reboots: u64,
    pub callbacks: u64,
    pub janitor_resolved: u64,
    pub terminal_reports: u64,
    pub idempotent_replays: u64,
    pub world: WorldStats,
    /// A digest of every step and its outcome: the same seed gives the same trace.
    pub trace_digest: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The steps per seed: `TILLGATE_SIM_STEPS`, else [`DEFAULT_STEPS`].
pub fn steps() -> usize {
    env_u64("TILLGATE_SIM_STEPS")
        .map(|s| s as usize)
        .unwrap_or(DEFAULT_STEPS)
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64, steps: usize, mix: Mix) -> String {
    let mix = match mix {
        Mix::All => "",
        Mix::Cancels => "TILLGATE_SIM_MIX=cancels ",
    };
    format!(
        "{mix}TILLGATE_SIM_SEED={seed} TILLGATE_SIM_STEPS={steps} cargo test -p tillgate-core --test sim -- --nocapture"
    )
}

/// Runs one seed to the end on a current-thread runtime; panics (with the trace's last steps
/// and the command that replays it) when an invariant breaks.
pub fn run_seed(seed: u64, steps: usize, mix: Mix) -> SimReport {
    let trace = Arc::new(Mutex::new(Vec::new()));
    let shared = trace.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move { driver::Sim::new(seed, mix, shared).await.run(steps).await })
    }));
    match outcome {
        Ok(report) => report,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".into());
            let lines = trace.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n  ");
            panic!(
                "simulation seed {seed} failed: {message}\nlast steps:\n  {tail}\nreplay: {}",
                replay_command(seed, steps, mix)
            );
        }
    }
}

/// Runs shard `shard` of `shards` of the seeds of `mix` (`0..n`, where `n` is
/// `TILLGATE_SIM_SEEDS` divided by `divisor`, or the one of `TILLGATE_SIM_SEED` on shard 0 of
/// the mix of `TILLGATE_SIM_MIX` only) and answers their reports.
pub fn run_shard(shard: u64, shards: u64, mix: Mix, divisor: u64) -> Vec<SimReport> {
    let steps = steps();
    let seeds: Vec<u64> = match env_u64("TILLGATE_SIM_SEED") {
        Some(seed) if shard == 0 && mix == Mix::from_env() => vec![seed],
        Some(_) => Vec::new(),
        None => {
            let n = env_u64("TILLGATE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS) / divisor.max(1);
            (0..n).filter(|s| s % shards == shard).collect()
        }
    };
    seeds.into_iter().map(|s| run_seed(s, steps, mix)).collect()
}
