//! The seeded simulation (`tillgate_testkit::sim`) of the lifecycle under wallet faults,
//! silent terminals, gateway crashes and a manual clock, in four shards that run side by side.
//! `TILLGATE_SIM_SEEDS=N` runs more seeds, `TILLGATE_SIM_SEED=S` replays one (with
//! `TILLGATE_SIM_MIX=cancels` for a seed of the cancel-heavy mix).

use tillgate_testkit::sim::{run_seed, run_shard, Mix, SimReport};

fn shard(i: u64) {
    report(&format!("shard {i}"), || run_shard(i, 4, Mix::All, 1));
}

fn report(name: &str, run: impl FnOnce() -> Vec<SimReport>) {
    let started = std::time::Instant::now();
    let reports = run();
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    eprintln!(
        "sim {name}: {} seeds, {} steps, {} payments, {} refunds, {} cancels, {} gateway crashes \
         ({} inside a wallet call), {} callbacks, {} janitor resolutions, {} terminal reports, \
         {} idempotent replays checked, {} late cancel callbacks during a later cancel, in {:?}",
        reports.len(),
        sum(|r| r.steps as u64),
        sum(|r| r.payments as u64),
        sum(|r| r.refunds as u64),
        sum(|r| r.cancels as u64),
        sum(|r| r.reboots),
        sum(|r| r.world.gateway_crashes),
        sum(|r| r.callbacks),
        sum(|r| r.janitor_resolved),
        sum(|r| r.terminal_reports),
        sum(|r| r.idempotent_replays),
        sum(|r| r.world.stale_cancel_callbacks),
        started.elapsed()
    );
}

#[test]
fn seeds_shard_0_keep_every_invariant_and_the_books_agree_with_the_wallet() {
    shard(0);
}

#[test]
fn seeds_shard_1_keep_every_invariant_and_the_books_agree_with_the_wallet() {
    shard(1);
}

#[test]
fn seeds_shard_2_keep_every_invariant_and_the_books_agree_with_the_wallet() {
    shard(2);
}

#[test]
fn seeds_shard_3_keep_every_invariant_and_the_books_agree_with_the_wallet() {
    shard(3);
}

/// Cancels retried while the wallet's answers to earlier ones are still on their way, a
/// quarter as many seeds as the main mix.
#[test]
fn cancel_heavy_seeds_settle_each_cancel_with_its_own_answer() {
    report("cancels", || run_shard(0, 1, Mix::Cancels, 4));
}

#[test]
fn a_seed_replays_exactly() {
    let first = run_seed(1_000_003, 120, Mix::All);
    let again = run_seed(1_000_003, 120, Mix::All);
    assert_eq!(
        first.trace_digest, again.trace_digest,
        "the same seed took another path"
    );
    assert_eq!(first.payments, again.payments);
}
