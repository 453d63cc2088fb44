//! The `tillgate` command: `serve`, `merchant`, `notify`, `unresolved`, `report`, `reconcile`,
//! `cases`, `export`, `sandbox`, `terminal`, `wallet-sim` and `completions`.
//!
//! `main` only parses the command line and wires things up; the gateway itself is built by
//! `tillgate_server::run`, which the tests call through this binary.

mod books;
mod logging;
mod merchant;
mod output;
mod terminal_sim;
mod user;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use output::{emit, emit_json, Format};
use std::path::PathBuf;
use tillgate_core::Secret;
use tillgate_domain::{Clock, SystemClock};
use tillgate_server::config::{Config, Mode};

#[derive(Parser)]
#[command(
    name = "tillgate",
    version,
    about = "A self-hosted wallet payment gateway"
)]
struct Cli {
    /// How log lines are written to standard error: text or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "TILLGATE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: every merchant API, the sandbox wallet and its control endpoint.
    Serve(ServeArgs),
    /// Manage merchants and their credentials.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Manage the console's users: create, list, disable, enable, reset a password.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Play the wallet side of a running sandbox gateway.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// List notifications with their attempts, and send failed ones again.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// A POS terminal simulator: connects to a gateway, shows each command like a POS screen
    /// would, and completes it (sales by the sandbox amount rules; reversals succeed).
    Terminal(terminal_sim::Args),
    /// A standalone wallet server speaking the HTTP wallet protocol, with fault injection.
    WalletSim(WalletSimArgs),
    /// Operations the wallet has not answered yet (money possibly in flight), with their
    /// timelines.
    Unresolved {
        #[command(flatten)]
        common: Common,
        /// The most operations listed, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// json (every event of each timeline) or table (one line each).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Reports of the books: a business day's settlement.
    #[command(subcommand)]
    Report(books::ReportCommand),
    /// Reconcile a day (UTC) with every HTTP wallet's signed statement: each difference opens
    /// a case. Running a day again opens no case twice.
    Reconcile(books::ReconcileArgs),
    /// Cases opened by reconciliations: list, show (both sides and the timeline), close.
    #[command(subcommand)]
    Cases(books::CasesCommand),
    /// Export transactions, refunds or cancels of a date range as CSV or JSON lines, streamed
    /// (a progress bar on standard error when it is a terminal).
    Export(books::ExportArgs),
    /// Prints a completion script for SHELL, e.g. `tillgate completions bash >
    /// /etc/bash_completion.d/tillgate`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct WalletSimArgs {
    /// Address to listen on; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// Where it keeps what it did to each order, across restarts.
    #[arg(long)]
    state: PathBuf,
    /// The HMAC key shared with the gateway, hex (at least 16 bytes).
    #[arg(long, env = "TILLGATE_CHANNEL_KEY", hide_env_values = true)]
    key: String,
    /// The gateway's callback URL (…/wallet/v1/callbacks) for answers that come later.
    #[arg(long)]
    callback_url: Option<String>,
    /// Added to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of requests performed but answered only after the client gave up (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// Share of requests performed but whose connection is closed unanswered (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Share of callbacks sent twice (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicate_callback_rate: f64,
    /// How long a pending operation waits before its callback.
    #[arg(long, default_value_t = 1000)]
    late_callback_ms: u64,
    /// How long a timed-out request holds its connection.
    #[arg(long, default_value_t = 30_000)]
    timeout_hold_ms: u64,
    /// Seed of the fault draws, for reproducible runs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Print notifications with every attempt.
    List {
        #[command(flatten)]
        common: Common,
        /// pending, delivered or failed
        #[arg(long)]
        status: Option<String>,
        /// Only those created since this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only those of this transaction.
        #[arg(long)]
        transaction_no: Option<String>,
        /// The most notifications listed, newest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// json (every attempt of each) or table (one line each).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Make notifications pending again, due now: one by id, or all failed since a time. A
    /// running gateway sends them within a second.
    Resend {
        #[command(flatten)]
        common: Common,
        /// The notification to send again (its `id` in `notify list`).
        #[arg(
            long,
            conflicts_with = "failed_since",
            required_unless_present = "failed_since"
        )]
        id: Option<i64>,
        /// RFC 3339 time or YYYY-MM-DD.
        #[arg(long)]
        failed_since: Option<String>,
    },
}

#[derive(Args, Clone)]
pub struct Common {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "TILLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// sqlite://PATH (default sqlite://tillgate.db) or postgres://…
    #[arg(long, env = "TILLGATE_DATABASE_URL")]
    database_url: Option<String>,
    /// sandbox (default) or production.
    #[arg(long, env = "TILLGATE_MODE")]
    mode: Option<Mode>,
    /// Size of this node's PostgreSQL connection pool (default 16).
    #[arg(long, env = "TILLGATE_DATABASE_MAX_CONNECTIONS")]
    database_max_connections: Option<u32>,
    /// A file holding the master key that seals credentials at rest (64 hex characters); or
    /// set TILLGATE_MASTER_KEY to the key itself.
    #[arg(long, env = "TILLGATE_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Refused: a key on the command line shows to every user of the machine (ps).
    #[arg(long, hide = true)]
    master_key: Option<String>,
}

impl Common {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.database_url {
            c.database_url = v.clone();
        }
        if let Some(v) = self.database_max_connections {
            c.database_max_connections = v;
        }
        if let Some(v) = self.mode {
            c.mode = v;
        }
        if self.master_key.is_some() {
            anyhow::bail!(
                "--master-key is not accepted: a key on the command line shows to every user of \
                 this machine (ps). Give it with --master-key-file or TILLGATE_MASTER_KEY_FILE (a \
                 file holding the key), or TILLGATE_MASTER_KEY"
            );
        }
        let from_env = std::env::var("TILLGATE_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        match (&self.master_key_file, from_env) {
            (Some(_), Some(_)) => anyhow::bail!(
                "TILLGATE_MASTER_KEY and a master key file (--master-key-file or \
                 TILLGATE_MASTER_KEY_FILE) are both given; give the master key one way"
            ),
            (Some(file), None) => {
                c.master_key_file = Some(file.clone());
                c.master_key = None;
            }
            (None, Some(key)) => {
                c.master_key = Some(Secret::new(key));
                c.master_key_file = None;
            }
            (None, None) => {}
        }
        Ok(c)
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on (default 127.0.0.1:8080); port 0 picks a free port.
    #[arg(long, env = "TILLGATE_LISTEN")]
    listen: Option<String>,
    /// The address customers' browsers reach the gateway at (hosted payment pages).
    #[arg(long, env = "TILLGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Notification schedule: seconds before each attempt, e.g. "0,30,60,90,120,150".
    #[arg(long, env = "TILLGATE_NOTIFY_SCHEDULE_S")]
    notify_schedule_s: Option<String>,
    /// How long one notification POST may take, in milliseconds (default 10000).
    #[arg(long, env = "TILLGATE_NOTIFY_TIMEOUT_MS")]
    notify_timeout_ms: Option<u64>,
    /// Bearer token of the admin API.
    #[arg(long, env = "TILLGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The wallet: "sandbox" (default) or the base URL of an HTTP wallet.
    #[arg(long, env = "TILLGATE_CHANNEL")]
    channel: Option<String>,
    /// The HTTP wallet's HMAC key, hex.
    #[arg(long, env = "TILLGATE_CHANNEL_KEY", hide_env_values = true)]
    channel_key: Option<String>,
    /// How long one wallet call may take, in milliseconds (default 10000).
    #[arg(long, env = "TILLGATE_CHANNEL_TIMEOUT_MS")]
    channel_timeout_ms: Option<u64>,
    /// How often the janitor asks the wallet about unanswered operations (default 5000 ms).
    #[arg(long, env = "TILLGATE_JANITOR_INTERVAL_MS")]
    janitor_interval_ms: Option<u64>,
    /// How long a POS terminal request waits for the terminal (default 60000 ms).
    #[arg(long, env = "TILLGATE_TERMINAL_WAIT_MS")]
    terminal_wait_ms: Option<u64>,
    /// A listener of its own for /healthz, /readyz and /metrics, e.g. 127.0.0.1:9100 (open
    /// there; in production they then leave the gateway's own listener).
    #[arg(long, env = "TILLGATE_OBSERVABILITY_LISTEN")]
    observability_listen: Option<String>,
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant with a store, an app and a terminal (or add a store to an existing
    /// merchant) and print the credentials as JSON. Running it again with the same arguments
    /// prints the same credentials and adds nothing.
    Create(merchant::CreateArgs),
    /// Change an existing merchant's time zone, notification schedule or refund policy, and
    /// print its settings as JSON.
    Update(merchant::UpdateArgs),
    /// Rotate a store's token, an app's or a terminal's secret: the new one is printed once
    /// and in force at once; the old one is still accepted for --grace-minutes.
    Rotate(merchant::RotateArgs),
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Answer for the wallet on a pending payment: the customer paid, or the wallet declined.
    Settle {
        /// The running gateway, e.g. http://127.0.0.1:8080
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The pending payment's transactionNo.
        #[arg(long)]
        transaction_no: String,
        /// paid or declined
        #[arg(long)]
        outcome: String,
    },
    /// Answer for the wallet on a transaction's cancel in progress (amounts ending in 53).
    SettleCancel {
        /// The running gateway, e.g. http://127.0.0.1:8080
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The transactionNo of the payment whose cancel is in progress.
        #[arg(long)]
        transaction_no: String,
        /// succeeded or failed
        #[arg(long)]
        outcome: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Merchant(MerchantCommand::Create(args)) => merchant::create(args).await,
            Command::Merchant(MerchantCommand::Update(args)) => merchant::update(args).await,
            Command::Merchant(MerchantCommand::Rotate(args)) => merchant::rotate(args).await,
            Command::User(command) => user::run(command).await,
            Command::Notify(NotifyCommand::List {
                common,
                status,
                since,
                transaction_no,
                limit,
                format,
            }) => notify_list(common, status, since, transaction_no, limit, format).await,
            Command::Notify(NotifyCommand::Resend {
                common,
                id,
                failed_since,
            }) => notify_resend(common, id, failed_since).await,
            Command::Terminal(args) => terminal_sim::run(args).await,
            Command::WalletSim(args) => wallet_sim(args).await,
            Command::Unresolved {
                common,
                limit,
                format,
            } => unresolved(common, limit, format).await,
            Command::Completions { shell } => completions(shell),
            Command::Report(command) => books::report(command).await,
            Command::Reconcile(args) => books::reconcile(args).await,
            Command::Cases(command) => books::cases(command).await,
            Command::Export(args) => books::export(args).await,
            Command::Sandbox(SandboxCommand::Settle {
                server,
                transaction_no,
                outcome,
            }) => sandbox_settle(&server, &transaction_no, "settle", &outcome).await,
            Command::Sandbox(SandboxCommand::SettleCancel {
                server,
                transaction_no,
                outcome,
            }) => sandbox_settle(&server, &transaction_no, "cancel/settle", &outcome).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tillgate_server::run(args.config()?, shutdown_signal()).await
}

impl ServeArgs {
    /// The defaults, then the file, then each environment variable or flag that is set (clap
    /// takes a flag over its variable).
    fn config(self) -> anyhow::Result<Config> {
        let args = self;
        let mut config = args.common.config()?;
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        if let Some(url) = args.public_url {
            config.public_url =
                Some(tillgate_server::config::parse_public_url(&url).map_err(anyhow::Error::msg)?);
        }
        if let Some(s) = args.notify_schedule_s {
            config.notify.schedule = tillgate_server::config::parse_schedule(&s)?;
        }
        if let Some(ms) = args.notify_timeout_ms {
            config.notify.timeout_ms = ms;
        }
        if let Some(token) = args.admin_token {
            config.admin_token = Some(Secret::new(token));
        }
        if let Some(v) = args.channel {
            config.channel.wallet = v;
        }
        if let Some(v) = args.channel_key {
            config.channel.key = Some(Secret::new(v));
        }
        if let Some(v) = args.channel_timeout_ms {
            config.channel.timeout_ms = v;
        }
        if let Some(v) = args.janitor_interval_ms {
            config.janitor_interval_ms = v;
        }
        if let Some(v) = args.terminal_wait_ms {
            config.terminal_wait_ms = v;
        }
        if let Some(v) = args.observability_listen {
            config.observability.listen = Some(v);
        }
        Ok(config)
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives right after the server says it listens
/// still shuts it down gracefully. A second signal during the graceful shutdown ends the
/// process at once (exit status 130): every answered write is durable already, and what was
/// still in flight stays as the store has it (a terminal sale's command stays open).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            next_signal(&mut signals).await;
            tracing::info!(
                "shutting down: finishing requests in flight (a second Ctrl-C stops at once)"
            );
            tokio::spawn(async move {
                next_signal(&mut signals).await;
                tracing::warn!(
                    "second signal: stopping at once; answered writes are durable, requests \
                     still in flight get no answer"
                );
                std::process::exit(130);
            });
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: finishing requests in flight");
        }
    }
}

/// The next SIGTERM or SIGINT (never, for a handler that could not be installed).
#[cfg(unix)]
async fn next_signal(
    signals: &mut (
        Option<tokio::signal::unix::Signal>,
        Option<tokio::signal::unix::Signal>,
    ),
) {
    async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
        match s.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let (term, int) = signals;
    tokio::select! {
        () = one(term) => {},
        () = one(int) => {},
    }
}

async fn notify_list(
    common: Common,
    status: Option<String>,
    since: Option<String>,
    transaction_no: Option<String>,
    limit: i64,
    format: Format,
) -> anyhow::Result<()> {
    let config = common.config()?;
    let store = open_for_command(&config).await?;
    let filter = tillgate_server::admin::filter(
        store.as_ref(),
        status.as_deref(),
        since.as_deref(),
        transaction_no.as_deref(),
        Some(limit),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let listing = match filter {
        Some(f) => tillgate_server::admin::listing(store.as_ref(), &f).await?,
        None => serde_json::json!({ "notifications": [] }),
    };
    store.close().await;
    match format {
        Format::Json => emit_json(&listing),
        Format::Table => emit(&output::table(
            listing["notifications"]
                .as_array()
                .map_or(&[][..], Vec::as_slice),
            &NOTIFICATION_COLUMNS,
            "no notifications",
        )),
    }
}

/// The columns of `notify list --format table`.
const NOTIFICATION_COLUMNS: [output::Column; 7] = [
    output::Column {
        heading: "ID",
        cell: |n| output::text(&n["id"]),
    },
    output::Column {
        heading: "TRANSACTION",
        cell: |n| output::text(&n["transactionNo"]),
    },
    output::Column {
        heading: "TOPIC",
        cell: |n| output::text(&n["topic"]),
    },
    output::Column {
        heading: "STATUS",
        cell: |n| output::text(&n["status"]),
    },
    output::Column {
        heading: "ATTEMPTS",
        cell: |n| output::text(&n["attempts"]),
    },
    output::Column {
        heading: "LAST HTTP",
        cell: |n| {
            let last = n["attemptLog"].as_array().and_then(|a| a.last());
            last.map_or("-".into(), |a| match &a["httpStatus"] {
                serde_json::Value::Null => output::text(&a["error"]),
                status => output::text(status),
            })
        },
    },
    output::Column {
        heading: "URL",
        cell: |n| output::text(&n["targetUrl"]),
    },
];

/// The columns of `unresolved --format table`.
const UNRESOLVED_COLUMNS: [output::Column; 6] = [
    output::Column {
        heading: "KIND",
        cell: |o| output::text(&o["kind"]),
    },
    output::Column {
        heading: "TRANSACTION",
        cell: |o| output::text(&o["transactionNo"]),
    },
    output::Column {
        heading: "OPERATION",
        cell: |o| output::text(&o["operationNo"]),
    },
    output::Column {
        heading: "MERCHANT",
        cell: |o| output::text(&o["merchantNo"]),
    },
    output::Column {
        heading: "SINCE",
        cell: |o| output::text(&o["since"]),
    },
    output::Column {
        heading: "LAST EVENT",
        cell: |o| {
            let last = o["events"].as_array().and_then(|e| e.last());
            last.map_or("-".into(), |e| {
                format!(
                    "{} {}",
                    output::text(&e["kind"]),
                    output::text(&e["detail"])
                )
            })
        },
    },
];

/// Opens the database an operator command was pointed at — it must exist — and checks the
/// master key when one is given (production mode needs it).
async fn open_for_command(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<dyn tillgate_core::Store>> {
    let store =
        tillgate_server::open_existing_store(&config.database_url, config.database_max_connections)
            .await?;
    if let Err(e) = tillgate_server::keys::check_given_key(config, store.clone()).await {
        store.close().await;
        return Err(e);
    }
    Ok(store)
}

/// Prints the completion script of `shell`.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tillgate", &mut script);
    emit(String::from_utf8_lossy(&script).trim_end())
}

async fn notify_resend(
    common: Common,
    id: Option<i64>,
    failed_since: Option<String>,
) -> anyhow::Result<()> {
    let config = common.config()?;
    let what = match (id, failed_since) {
        (Some(id), _) => tillgate_core::Resend::One(id),
        (None, Some(t)) => tillgate_core::Resend::FailedSince(
            tillgate_server::admin::parse_time(&t)
                .context("--failed-since must be an RFC 3339 time or YYYY-MM-DD")?,
        ),
        (None, None) => anyhow::bail!("give --id or --failed-since"),
    };
    let store = open_for_command(&config).await?;
    let n = store.resend(what, SystemClock.now()).await;
    store.close().await;
    emit(&serde_json::json!({ "resent": n? }).to_string())
}

async fn wallet_sim(args: WalletSimArgs) -> anyhow::Result<()> {
    let key = tillgate_wallet::protocol::parse_key_hex(&args.key)
        .map_err(|e| anyhow::anyhow!("--key {e}"))?;
    let mut config = tillgate_wallet::SimulatorConfig::new(args.listen, key, args.state);
    config.callback_url = args.callback_url;
    config.latency_ms = args.latency_ms;
    config.timeout_rate = args.timeout_rate;
    config.drop_rate = args.drop_rate;
    config.duplicate_callback_rate = args.duplicate_callback_rate;
    config.late_callback_ms = args.late_callback_ms;
    config.timeout_hold_ms = args.timeout_hold_ms;
    config.seed = args.seed;
    tillgate_wallet::run_simulator(config, shutdown_signal()).await
}

async fn unresolved(common: Common, limit: i64, format: Format) -> anyhow::Result<()> {
    let config = common.config()?;
    let store = open_for_command(&config).await?;
    let listing =
        tillgate_server::admin::unresolved_listing(store.as_ref(), SystemClock.now(), limit).await;
    store.close().await;
    let listing = listing?;
    match format {
        Format::Json => emit_json(&listing),
        Format::Table => emit(&output::table(
            listing["unresolved"]
                .as_array()
                .map_or(&[][..], Vec::as_slice),
            &UNRESOLVED_COLUMNS,
            "no unresolved operations",
        )),
    }
}

/// Plays the wallet's answer through the sandbox control endpoint
/// `/sandbox/v1/payments/{transactionNo}/{what}`.
async fn sandbox_settle(
    server: &str,
    transaction_no: &str,
    what: &str,
    outcome: &str,
) -> anyhow::Result<()> {
    if !server.starts_with("http://") {
        anyhow::bail!("--server must be an http:// URL, not {server:?}");
    }
    let url = format!(
        "{}/sandbox/v1/payments/{transaction_no}/{what}",
        server.trim_end_matches('/')
    );
    let answer = post_json(&url, &serde_json::json!({ "outcome": outcome })).await?;
    emit(&answer)
}

/// POSTs `body` as JSON and returns the answer's body; an answer other than 2xx is an error
/// that carries the status and the body.
async fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("the gateway's answer from {url} broke off"))?;
    if !status.is_success() {
        anyhow::bail!("the gateway answered {status}: {text}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The environment is the process's: tests that set it take turns.
    static ENVIRONMENT: Mutex<()> = Mutex::new(());

    /// One setting of `tillgate serve`, with a different value in each layer.
    struct Setting {
        flag: &'static str,
        env: &'static str,
        /// The TOML table ("" for the top level) and key.
        table: &'static str,
        key: &'static str,
        /// Whether the TOML value is a string.
        quoted: bool,
        default: &'static str,
        file: &'static str,
        environment: &'static str,
        command_line: &'static str,
        read: fn(&Config) -> String,
    }

    fn secret(s: &Option<Secret<String>>) -> String {
        s.as_ref().map(|s| s.expose().clone()).unwrap_or_default()
    }

    fn settings() -> Vec<Setting> {
        vec![
            Setting {
                flag: "--listen",
                env: "TILLGATE_LISTEN",
                table: "",
                key: "listen",
                quoted: true,
                default: "127.0.0.1:8080",
                file: "127.0.0.1:1001",
                environment: "127.0.0.1:1002",
                command_line: "127.0.0.1:1003",
                read: |c| c.listen.clone(),
            },
            Setting {
                flag: "--database-url",
                env: "TILLGATE_DATABASE_URL",
                table: "",
                key: "database_url",
                quoted: true,
                default: "sqlite://tillgate.db",
                file: "sqlite://file.db",
                environment: "sqlite://env.db",
                command_line: "sqlite://flag.db",
                read: |c| c.database_url.clone(),
            },
            Setting {
                flag: "--mode",
                env: "TILLGATE_MODE",
                table: "",
                key: "mode",
                quoted: true,
                default: "sandbox",
                file: "production",
                environment: "sandbox",
                command_line: "production",
                read: |c| format!("{:?}", c.mode).to_lowercase(),
            },
            Setting {
                flag: "--database-max-connections",
                env: "TILLGATE_DATABASE_MAX_CONNECTIONS",
                table: "",
                key: "database_max_connections",
                quoted: false,
                default: "16",
                file: "1",
                environment: "2",
                command_line: "3",
                read: |c| c.database_max_connections.to_string(),
            },
            Setting {
                flag: "--master-key-file",
                env: "TILLGATE_MASTER_KEY_FILE",
                table: "",
                key: "master_key_file",
                quoted: true,
                default: "",
                file: "/etc/tillgate/file.key",
                environment: "/etc/tillgate/env.key",
                command_line: "/etc/tillgate/flag.key",
                read: |c| {
                    c.master_key_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                },
            },
            Setting {
                flag: "--notify-schedule-s",
                env: "TILLGATE_NOTIFY_SCHEDULE_S",
                table: "notify",
                key: "schedule_s",
                quoted: true,
                default: "0,30,60,90,120,150",
                file: "0,1",
                environment: "0,2",
                command_line: "0,3",
                read: |c| c.notify.schedule.to_text(),
            },
            Setting {
                flag: "--notify-timeout-ms",
                env: "TILLGATE_NOTIFY_TIMEOUT_MS",
                table: "notify",
                key: "timeout_ms",
                quoted: false,
                default: "10000",
                file: "11",
                environment: "12",
                command_line: "13",
                read: |c| c.notify.timeout_ms.to_string(),
            },
            Setting {
                flag: "--admin-token",
                env: "TILLGATE_ADMIN_TOKEN",
                table: "",
                key: "admin_token",
                quoted: true,
                default: "",
                file: "file-admin-token",
                environment: "env-admin-token",
                command_line: "flag-admin-token",
                read: |c| secret(&c.admin_token),
            },
            Setting {
                flag: "--channel",
                env: "TILLGATE_CHANNEL",
                table: "channel",
                key: "wallet",
                quoted: true,
                default: "sandbox",
                file: "http://127.0.0.1:9001",
                environment: "http://127.0.0.1:9002",
                command_line: "http://127.0.0.1:9003",
                read: |c| c.channel.wallet.clone(),
            },
            Setting {
                flag: "--channel-key",
                env: "TILLGATE_CHANNEL_KEY",
                table: "channel",
                key: "key",
                quoted: true,
                default: "",
                file: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                environment: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                command_line: "cccccccccccccccccccccccccccccccc",
                read: |c| secret(&c.channel.key),
            },
            Setting {
                flag: "--channel-timeout-ms",
                env: "TILLGATE_CHANNEL_TIMEOUT_MS",
                table: "channel",
                key: "timeout_ms",
                quoted: false,
                default: "10000",
                file: "21",
                environment: "22",
                command_line: "23",
                read: |c| c.channel.timeout_ms.to_string(),
            },
            Setting {
                flag: "--janitor-interval-ms",
                env: "TILLGATE_JANITOR_INTERVAL_MS",
                table: "",
                key: "janitor_interval_ms",
                quoted: false,
                default: "5000",
                file: "31",
                environment: "32",
                command_line: "33",
                read: |c| c.janitor_interval_ms.to_string(),
            },
            Setting {
                flag: "--terminal-wait-ms",
                env: "TILLGATE_TERMINAL_WAIT_MS",
                table: "",
                key: "terminal_wait_ms",
                quoted: false,
                default: "60000",
                file: "41",
                environment: "42",
                command_line: "43",
                read: |c| c.terminal_wait_ms.to_string(),
            },
        ]
    }

    /// A directory of its own for one test, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("tillgate-cli-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `tillgate serve ARGS` parsed with exactly the environment `env` of tillgate's own
    /// variables, and the configuration it would run with.
    fn serve_config(args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let _turn = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        let ours: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("TILLGATE_") && !k.starts_with("TILLGATE_TEST_"))
            .collect();
        for k in ours {
            std::env::remove_var(k);
        }
        for (k, v) in env {
            std::env::set_var(k, v);
        }
        let parsed = Cli::try_parse_from(
            ["tillgate".to_owned(), "serve".to_owned()]
                .into_iter()
                .chain(args.iter().cloned()),
        );
        // The configuration reads TILLGATE_MASTER_KEY itself: built while the variables are set.
        let config = match parsed.map_err(|e| anyhow::anyhow!("{e}")) {
            Ok(cli) => match cli.command {
                Command::Serve(serve) => serve.config(),
                _ => unreachable!("parsed as serve"),
            },
            Err(e) => Err(e),
        };
        for (k, _) in env {
            std::env::remove_var(k);
        }
        config
    }

    /// A TOML file with the file value of each setting that `with` selects.
    fn file_text(settings: &[Setting], with: impl Fn(usize) -> bool) -> String {
        let mut text = String::new();
        for table in ["", "notify", "channel"] {
            if !table.is_empty() {
                text.push_str(&format!("[{table}]\n"));
            }
            for (i, s) in settings.iter().enumerate() {
                if s.table == table && with(i) {
                    let value = if s.quoted {
                        format!("\"{}\"", s.file)
                    } else {
                        s.file.to_owned()
                    };
                    text.push_str(&format!("{} = {value}\n", s.key));
                }
            }
        }
        text
    }

    const FILE: u8 = 1;
    const ENV: u8 = 2;
    const FLAG: u8 = 4;

    /// Gives each setting the layers `layers(i)` and checks that the highest one present wins.
    fn check(dir: &Dir, name: &str, layers: impl Fn(usize) -> u8) {
        let settings = settings();
        let path = dir.write(name, &file_text(&settings, |i| layers(i) & FILE != 0));
        let mut args = vec!["--config".to_owned(), path];
        let mut env = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            if layers(i) & ENV != 0 {
                env.push((s.env, s.environment));
            }
            if layers(i) & FLAG != 0 {
                args.push(s.flag.to_owned());
                args.push(s.command_line.to_owned());
            }
        }
        let config = serve_config(&args, &env).unwrap();
        for (i, s) in settings.iter().enumerate() {
            let layers = layers(i);
            let expected = if layers & FLAG != 0 {
                s.command_line
            } else if layers & ENV != 0 {
                s.environment
            } else if layers & FILE != 0 {
                s.file
            } else {
                s.default
            };
            assert_eq!(
                (s.read)(&config),
                expected,
                "{} with layers {layers:03b}",
                s.flag
            );
        }
    }

    #[test]
    fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
        let dir = Dir::new("precedence");
        for layers in 0..8 {
            check(&dir, &format!("all-{layers}.toml"), |_| layers);
        }
        // Each setting on its own: the layers of one do not leak into another.
        for shift in 0..8 {
            check(&dir, &format!("mixed-{shift}.toml"), |i| {
                ((i + shift) % 8) as u8
            });
        }
    }

    #[test]
    fn the_master_key_comes_from_a_file_or_the_environment_never_the_command_line() {
        let dir = Dir::new("master-key");
        let key = "11".repeat(32);
        let file = dir.write("key.toml", &format!("master_key = \"{key}\"\n"));
        let config = ["--config".to_owned(), file.clone()];
        // The file's key, unless the environment gives one (key or key file).
        let c = serve_config(&config, &[]).unwrap();
        assert_eq!(secret(&c.master_key), key);
        let env_key = "22".repeat(32);
        let c = serve_config(&config, &[("TILLGATE_MASTER_KEY", &env_key)]).unwrap();
        assert_eq!(secret(&c.master_key), env_key);
        let c = serve_config(&config, &[("TILLGATE_MASTER_KEY_FILE", "/run/k")]).unwrap();
        assert_eq!(
            c.master_key, None,
            "the key file takes the file's key's place"
        );
        assert_eq!(c.master_key_file, Some(PathBuf::from("/run/k")));
        // Two ways at once are refused, in the environment and in the file.
        let err = serve_config(
            &["--master-key-file".to_owned(), "/run/k".to_owned()],
            &[("TILLGATE_MASTER_KEY", &env_key)],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("one way"), "{err:#}");
        let both = dir.write(
            "both.toml",
            &format!("master_key = \"{key}\"\nmaster_key_file = \"/run/k\"\n"),
        );
        let err = serve_config(&["--config".to_owned(), both], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("keep one"), "{err:#}");
        // On the command line it would show in `ps`: refused, naming the ways that are safe.
        let err = serve_config(&["--master-key".to_owned(), key], &[]).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("--master-key-file")
                && err.contains("TILLGATE_MASTER_KEY")
                && err.contains("ps"),
            "{err}"
        );
        assert!(!Cli::command()
            .render_long_help()
            .to_string()
            .contains("--master-key "));
    }

    /// Every argument of every command, with the path of commands it belongs to.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_says_what_it_is_for() {
        let mut all = Vec::new();
        arguments(&Cli::command(), "tillgate", &mut all);
        assert!(all.len() > 50, "too few arguments found: {}", all.len());
        let silent: Vec<String> = all
            .iter()
            .filter(|(_, a)| {
                !a.is_hide_set() && !["help", "version"].contains(&a.get_id().as_str())
            })
            .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|(path, a)| format!("{path} --{}", a.get_id()))
            .collect();
        assert!(silent.is_empty(), "arguments without help: {silent:?}");
    }

    #[test]
    fn the_config_flag_beats_its_variable() {
        let dir = Dir::new("config-flag");
        let from_env = dir.write("env.toml", "listen = \"127.0.0.1:1\"\n");
        let from_flag = dir.write("flag.toml", "listen = \"127.0.0.1:2\"\n");
        let c = serve_config(&[], &[("TILLGATE_CONFIG", &from_env)]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        let c = serve_config(
            &["--config".to_owned(), from_flag],
            &[("TILLGATE_CONFIG", &from_env)],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
    }

    #[test]
    fn bad_settings_are_refused_with_a_message_naming_them() {
        let dir = Dir::new("refused");
        let file = dir.write(
            "typo.toml",
            "[channel]\nwallet = \"sandbox\"\ntimeout = 5\n",
        );
        let err = format!(
            "{:#}",
            serve_config(&["--config".to_owned(), file.clone()], &[]).unwrap_err()
        );
        assert!(
            err.contains(&file) && err.contains("unknown field `timeout`"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            serve_config(&[], &[("TILLGATE_NOTIFY_SCHEDULE_S", "0,soon")]).unwrap_err()
        );
        assert!(err.contains("\"0,soon\""), "{err}");
        let err = format!(
            "{:#}",
            serve_config(&[], &[("TILLGATE_MODE", "live")]).unwrap_err()
        );
        assert!(err.contains("mode must be sandbox or production"), "{err}");
        let err = format!(
            "{:#}",
            serve_config(&["--terminal-wait-ms".to_owned(), "soon".to_owned()], &[]).unwrap_err()
        );
        assert!(err.contains("--terminal-wait-ms"), "{err}");
    }
}
