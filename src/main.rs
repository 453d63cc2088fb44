//! The `tillgate` command: `serve`, `merchant create`, `sandbox settle`.
//!
//! `main` only parses the command line and wires things up; the gateway itself is built by
//! `tillgate_server::run`, which the tests call through this binary.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tillgate_core::Secret;
use tillgate_server::config::{parse_zone, Config, Mode};

#[derive(Parser)]
#[command(
    name = "tillgate",
    version,
    about = "A self-hosted wallet payment gateway"
)]
struct Cli {
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
    /// Play the wallet side of a running sandbox gateway.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Args, Clone)]
struct Common {
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
    /// Master key sealing credentials at rest (64 hex characters).
    #[arg(long, env = "TILLGATE_MASTER_KEY", hide_env_values = true)]
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
        if let Some(v) = &self.master_key {
            c.master_key = Some(Secret::new(v.clone()));
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
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant with a store (or add a store to an existing merchant) and print the
    /// credentials as JSON.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        merchant_no: String,
        #[arg(long)]
        store_no: String,
        /// The store's API token; random when absent.
        #[arg(long)]
        token: Option<String>,
        /// IANA time zone of the merchant's business day (default: the configured default).
        #[arg(long)]
        timezone: Option<String>,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Answer for the wallet on a pending payment: the customer paid, or the wallet declined.
    Settle {
        /// The running gateway, e.g. http://127.0.0.1:8080
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long)]
        transaction_no: String,
        /// paid or declined
        #[arg(long)]
        outcome: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Merchant(MerchantCommand::Create {
                common,
                merchant_no,
                store_no,
                token,
                timezone,
            }) => merchant_create(common, merchant_no, store_no, token, timezone).await,
            Command::Sandbox(SandboxCommand::Settle {
                server,
                transaction_no,
                outcome,
            }) => sandbox_settle(&server, &transaction_no, &outcome).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    tillgate_server::run(config, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn merchant_create(
    common: Common,
    merchant_no: String,
    store_no: String,
    token: Option<String>,
    timezone: Option<String>,
) -> anyhow::Result<()> {
    let config = common.config()?;
    let merchant_no_checked = tillgate_domain::MerchantNo::parse(&merchant_no)
        .map_err(|e| anyhow::anyhow!("--merchant-no {e}"))?;
    let store_no_checked = tillgate_domain::StoreNo::parse(&store_no)
        .map_err(|e| anyhow::anyhow!("--store-no {e}"))?;
    let zone = match timezone {
        Some(z) => parse_zone(&z)?,
        None => config.default_timezone,
    };
    let token = match token {
        Some(t) if t.len() < 16 => anyhow::bail!("--token must be at least 16 characters"),
        Some(t) => Secret::new(t),
        None => random_token(),
    };
    let secrets = tillgate_server::master_key(&config)?;
    let store =
        tillgate_server::open_store(&config.database_url, config.database_max_connections).await?;
    let service = tillgate_server::lifecycle(store.clone(), secrets);
    let merchant = service
        .create_merchant(merchant_no_checked.as_str(), zone, false)
        .await
        .context("cannot create the merchant")?;
    let (token, created) = service
        .add_store(&merchant, store_no_checked.as_str(), &token)
        .await
        .context("cannot add the store")?;
    store.close().await;
    let out = serde_json::json!({
        "merchantNo": merchant.merchant_no,
        "timezone": merchant.zone.name(),
        "pockyt": {
            "merchantNo": merchant.merchant_no,
            "storeNo": store_no_checked.as_str(),
            "token": token.expose(),
            "created": created,
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn random_token() -> Secret<String> {
    // 128 random bits as 32 lower-case hex digits, the shape of Pockyt's tokens.
    let key = tillgate_core::SecretBox::generate_key_hex();
    Secret::new(key.expose()[..32].to_owned())
}

async fn sandbox_settle(server: &str, transaction_no: &str, outcome: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/sandbox/v1/payments/{transaction_no}/settle",
        server.trim_end_matches('/')
    );
    let body = serde_json::json!({ "outcome": outcome }).to_string();
    let answer = http_post_json(&url, &body).await?;
    println!("{answer}");
    Ok(())
}

/// A minimal HTTP/1.1 POST over a plain TCP connection, enough for the sandbox control API on
/// the local machine without pulling an HTTP client into the binary.
async fn http_post_json(url: &str, body: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .context("--server must be an http:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("cannot connect to {host}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the server sent no HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        anyhow::bail!("{status}: {body}");
    }
    Ok(body.to_owned())
}
