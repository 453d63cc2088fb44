//! The Prometheus recorder behind the `metrics` facade, every metric's name and help, and what
//! is read from the store and the hub when `/metrics` is asked.
//!
//! The crates count where things happen through the facade (`metrics::counter!`), with label
//! values from static strings; without a recorder installed (operator commands, the crates'
//! own tests) that costs nothing. The server installs this one recorder per process.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tillgate_core::Store;

/// Requests answered, by `dialect`, `endpoint` and `code`.
pub const REQUESTS: &str = "tillgate_http_requests_total";
/// Time from a request's head to its answer, by `dialect` and `endpoint`.
pub const REQUEST_SECONDS: &str = "tillgate_http_request_duration_seconds";
/// Write operations committed (the benchmark reads it).
pub const STORE_OPERATIONS: &str = "tillgate_store_operations_total";
/// Durable commits (the benchmark reads it).
pub const STORE_COMMITS: &str = "tillgate_store_commits_total";
/// Operations per durable commit (group commit's batches, on both stores).
pub const STORE_BATCH: &str = tillgate_store_sqlite::BATCH_METRIC;
/// Notifications pending, and those of them due.
pub const NOTIFICATIONS_PENDING: &str = "tillgate_notifications_pending";
pub const NOTIFICATIONS_DUE: &str = "tillgate_notifications_due";
/// Notification attempts, by `dialect` and `outcome` (delivered, retry, failed).
pub const NOTIFICATION_ATTEMPTS: &str = tillgate_notify::ATTEMPTS_METRIC;
pub const NOTIFICATION_SECONDS: &str = tillgate_notify::ATTEMPT_SECONDS_METRIC;
/// Deliveries this node has running.
pub const NOTIFICATIONS_IN_FLIGHT: &str = tillgate_notify::IN_FLIGHT_METRIC;
/// Operations waiting for the wallet's answer.
pub const UNRESOLVED: &str = "tillgate_unresolved_operations";
/// The janitor's questions to the wallet, by `outcome` (resolved, unanswered, error).
pub const JANITOR_QUERIES: &str = crate::janitor::QUERIES_METRIC;
/// POS terminals connected to this node.
pub const TERMINALS_ONLINE: &str = "tillgate_terminals_online";
/// Wallet calls, by `operation` and `outcome` (approved, declined, unknown).
pub const WALLET_CALLS: &str = "tillgate_wallet_calls_total";
pub const WALLET_SECONDS: &str = "tillgate_wallet_call_duration_seconds";
/// Reconciliation cases open (differences between the gateway's books and a wallet's
/// statement that no operator has closed).
pub const CASES_OPEN: &str = "tillgate_reconciliation_cases_open";
/// Reconciliation runs, by `outcome` (clean, mismatched, failed).
pub const RECONCILIATIONS: &str = "tillgate_reconciliations_total";

/// Buckets of the durations, in seconds: a signed request answers in milliseconds, a wallet
/// or a notification may take its whole time-out.
const SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of the operations per commit, up to the writer's largest batch.
const BATCH: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process's recorder, installed on first use; later calls answer the same handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORE_BATCH.into()), &BATCH));
    let recorder = match builder {
        Ok(builder) => builder.build_recorder(),
        // The buckets are constants that are not empty; the builder refuses only empty ones.
        Err(e) => {
            tracing::warn!(error = %e, "metric buckets refused; histograms become summaries");
            PrometheusBuilder::new().build_recorder()
        }
    };
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows only what is read at scrape time");
    }
    describe();
    handle.run_upkeep();
    handle
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests answered, by dialect, endpoint and the dialect's answer code (the HTTP status \
         on the operator surfaces; \"replay\" for a remembered answer sent again)."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from a request's head to its answer, by dialect and endpoint."
    );
    describe_counter!(STORE_OPERATIONS, "Write operations committed.");
    describe_counter!(
        STORE_COMMITS,
        "Durable commits (one flush each, shared by a batch: group commit on both stores)."
    );
    describe_histogram!(
        STORE_BATCH,
        "Write operations per durable commit (group commit's batches, on both stores)."
    );
    describe_gauge!(
        NOTIFICATIONS_PENDING,
        "Notifications not yet delivered and not failed for good."
    );
    describe_gauge!(
        NOTIFICATIONS_DUE,
        "Pending notifications whose attempt is due now."
    );
    describe_counter!(
        NOTIFICATION_ATTEMPTS,
        "Notification attempts, by dialect and outcome (delivered, retry, failed)."
    );
    describe_histogram!(
        NOTIFICATION_SECONDS,
        Unit::Seconds,
        "Time of one notification attempt, rendering and POST, by dialect."
    );
    describe_gauge!(
        NOTIFICATIONS_IN_FLIGHT,
        "Notification deliveries this node has running."
    );
    describe_gauge!(
        UNRESOLVED,
        "Operations waiting for the wallet's answer (what `tillgate unresolved` lists)."
    );
    describe_counter!(
        JANITOR_QUERIES,
        "The janitor's questions to the wallet, by outcome (resolved, unanswered, error)."
    );
    describe_gauge!(TERMINALS_ONLINE, "POS terminals connected to this node.");
    describe_counter!(
        WALLET_CALLS,
        "Wallet calls, by operation and outcome (approved, declined, unknown)."
    );
    describe_histogram!(
        WALLET_SECONDS,
        Unit::Seconds,
        "Time of one wallet call, by operation."
    );
    describe_gauge!(
        CASES_OPEN,
        "Reconciliation cases open: differences between the books and a wallet's statement."
    );
    describe_counter!(
        RECONCILIATIONS,
        "Reconciliation runs of this node, by outcome (clean, mismatched, failed)."
    );
}

/// Brings what is read rather than counted up to date: the store's commit counters, the
/// terminals connected here, and the store's backlog (skipped, with a warning, when the store
/// does not answer within `within`).
pub async fn scrape(
    store: &dyn Store,
    now: chrono::DateTime<chrono::Utc>,
    terminals_online: usize,
    within: Duration,
) {
    let stats = store.commit_stats();
    metrics::counter!(STORE_OPERATIONS).absolute(stats.operations);
    metrics::counter!(STORE_COMMITS).absolute(stats.commits);
    metrics::gauge!(TERMINALS_ONLINE).set(terminals_online as f64);
    match tokio::time::timeout(within, store.backlog(now)).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!(NOTIFICATIONS_PENDING).set(backlog.notifications_pending as f64);
            metrics::gauge!(NOTIFICATIONS_DUE).set(backlog.notifications_due as f64);
            metrics::gauge!(UNRESOLVED).set(backlog.unresolved as f64);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: the store's backlog could not be read"),
        Err(_) => tracing::warn!("metrics: the store's backlog did not come in time"),
    }
    match tokio::time::timeout(within, store.open_cases()).await {
        Ok(Ok(n)) => metrics::gauge!(CASES_OPEN).set(n as f64),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: open cases could not be counted"),
        Err(_) => tracing::warn!("metrics: the count of open cases did not come in time"),
    }
}
