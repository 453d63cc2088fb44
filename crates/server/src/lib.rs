//! The tillgate server: opens the store, wires the lifecycle service to the channel and the
//! dialects, and serves HTTP until asked to stop.
//!
//! [`run`] is what `tillgate serve` calls and what tests call too: it binds (port 0 allowed),
//! prints `listening on http://HOST:PORT`, and returns only after a graceful shutdown in which
//! every acknowledged write is already durable.

pub mod admin;
pub mod books;
pub mod config;
pub mod console;
pub mod cors;
mod dburl;
pub mod hub;
pub mod janitor;
pub mod keys;
pub mod listener;
pub mod observe;
pub mod pages;
pub mod sandbox;
pub mod wallet;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tillgate_channels::SandboxWallet;
use tillgate_core::notify::{Renderer, UrlPolicy};
use tillgate_core::service::{Lifecycle, LifecycleConfig};
use tillgate_core::terminal::TerminalHub;
use tillgate_core::{Credentials, Dialect, SecretBox, Store};
use tillgate_domain::{Clock, SystemClock};
use tillgate_notify::{Dispatcher, DispatcherConfig};
use tillgate_pockyt::{PockytError, RetCode};
use tillgate_store_sqlite::SqliteStore;
use tillgate_wire::RateLimit;

pub use config::{Config, Mode};

/// Opens the store named by a database URL; `max_connections` sizes PostgreSQL's pool.
pub async fn open_store(
    database_url: &str,
    max_connections: u32,
) -> anyhow::Result<Arc<dyn Store>> {
    let writers = tillgate_store_postgres::WriterOptions::default();
    open_store_with(database_url, max_connections, writers).await
}

/// Like [`open_store`], with PostgreSQL's writers sized by `writers`.
pub async fn open_store_with(
    database_url: &str,
    max_connections: u32,
    writers: tillgate_store_postgres::WriterOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        let store = SqliteStore::open(database_url)
            .await
            .with_context(|| format!("cannot open database {database_url}"))?;
        return Ok(Arc::new(store));
    }
    if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        let store = tillgate_store_postgres::PgStore::open_with_writers(
            database_url,
            max_connections,
            writers,
        )
        .await
        .with_context(|| format!("cannot open database {}", redact_url(database_url)))?;
        return Ok(Arc::new(store));
    }
    bail!("database URL must start with sqlite:// or postgres://, not {database_url:?}")
}

/// Opens a database that must exist already (operator commands): a missing SQLite file, or a
/// database without tillgate's schema, is an error that says so, and nothing is created.
pub async fn open_existing_store(
    database_url: &str,
    max_connections: u32,
) -> anyhow::Result<Arc<dyn Store>> {
    let shown = redact_url(database_url);
    let missing = |e: tillgate_core::StoreError| match e {
        tillgate_core::StoreError::Missing(why) => anyhow::anyhow!(
            "cannot open database {shown}: {why}. Operator commands never create a database; \
             check --database-url (or TILLGATE_DATABASE_URL), or let `tillgate serve` create it"
        ),
        e => anyhow::Error::new(e).context(format!("cannot open database {shown}")),
    };
    if database_url.starts_with("sqlite:") {
        let store = SqliteStore::open_existing(database_url)
            .await
            .map_err(missing)?;
        return Ok(Arc::new(store));
    }
    if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        let store = tillgate_store_postgres::PgStore::open_existing(database_url, max_connections)
            .await
            .map_err(missing)?;
        return Ok(Arc::new(store));
    }
    bail!("database URL must start with sqlite:// or postgres://, not {database_url:?}")
}

pub use dburl::redact_url;

/// A name for this node, unique among the nodes sharing a database.
pub(crate) fn node_id() -> String {
    let random = SecretBox::generate_key_hex();
    format!("node-{}-{}", std::process::id(), &random.expose()[..8])
}

/// Production moves money only through wallets it was given: the sandbox wallet, which pays
/// every barcode, is never what production falls back to when no wallet is configured.
pub fn check_production_wallets(config: &Config) -> anyhow::Result<()> {
    if config.mode != Mode::Production {
        return Ok(());
    }
    if config.channel.wallet == "sandbox" {
        bail!(
            "production mode needs a wallet: set the wallet's base URL with --channel, \
             TILLGATE_CHANNEL or `wallet` in the config file's [channel] table, and its key with \
             TILLGATE_CHANNEL_KEY; the sandbox wallet (which pays every barcode) is for sandbox \
             mode only"
        );
    }
    for (merchant_no, own) in &config.merchant_channels {
        if own.wallet == "sandbox" {
            bail!(
                "production mode: [merchant_channels.\"{merchant_no}\"] has no wallet of its own \
                 (set its `wallet` to the base URL of the merchant's HTTP wallet); the sandbox \
                 wallet is for sandbox mode only"
            );
        }
    }
    Ok(())
}

/// A wallet side: the in-process sandbox, or an HTTP wallet; its calls are measured.
pub fn channel(config: &config::ChannelConfig) -> anyhow::Result<Arc<dyn tillgate_core::Channel>> {
    if config.wallet == "sandbox" {
        return Ok(Arc::new(observe::wallet::Measured::new(Arc::new(
            SandboxWallet,
        ))));
    }
    let key = config
        .key
        .as_ref()
        .context("an HTTP wallet needs its key: set TILLGATE_CHANNEL_KEY (hex)")?;
    let key = tillgate_wallet::protocol::parse_key_hex(key.expose())
        .map_err(|e| anyhow::anyhow!("channel key: {e}"))?;
    let http = tillgate_wallet::HttpChannel::new(
        &config.wallet,
        key,
        std::time::Duration::from_millis(config.timeout_ms),
    )
    .map_err(|e| anyhow::anyhow!("channel: {e}"))?;
    Ok(Arc::new(observe::wallet::Measured::new(Arc::new(http))))
}

/// Merchants' credentials on a store, opened with the master key.
pub fn credentials(store: Arc<dyn Store>, secrets: SecretBox) -> Arc<Credentials> {
    Arc::new(Credentials::new(
        store,
        secrets,
        Arc::new(SystemClock),
        LifecycleConfig::default().credential_ttl,
    ))
}

/// Builds the lifecycle service on a store, without POS terminals (operator commands).
pub fn lifecycle(
    store: Arc<dyn Store>,
    secrets: SecretBox,
    config: &Config,
) -> anyhow::Result<Arc<Lifecycle>> {
    let credentials = credentials(store.clone(), secrets);
    Ok(Arc::new(lifecycle_with(store, credentials, None, config)?))
}

/// Builds the lifecycle service on a store with its credentials and, for a serving node, the
/// terminal hub.
pub fn lifecycle_with(
    store: Arc<dyn Store>,
    credentials: Arc<Credentials>,
    hub: Option<Arc<dyn TerminalHub>>,
    config: &Config,
) -> anyhow::Result<Lifecycle> {
    let service_config = LifecycleConfig {
        notify_first_delay: config.notify.schedule.first_delay(),
        notify_urls: notify_urls(config),
        refund_reference_required: config.replay.refund_reference_required(config.mode),
        replay_window: std::time::Duration::from_secs(config.replay.window_s.max(1)),
        public_url: public_url(config, None),
        ..LifecycleConfig::default()
    };
    let mut service = Lifecycle::new(
        store,
        channel(&config.channel)?,
        Arc::new(SystemClock),
        credentials,
        service_config,
    );
    for (merchant_no, own) in &config.merchant_channels {
        let own = channel(own).with_context(|| format!("the wallet of merchant {merchant_no}"))?;
        service = service.with_merchant_channel(merchant_no, own);
    }
    if let Some(hub) = hub {
        service = service.with_hub(hub);
    }
    Ok(service)
}

/// The gateway's public address: the configured one, or `http://` and the address it listens
/// on (`bound`, once the listener is bound; an unspecified address reads as loopback).
fn public_url(config: &Config, bound: Option<std::net::SocketAddr>) -> String {
    if let Some(url) = &config.public_url {
        return url.clone();
    }
    let mut addr = match bound {
        Some(addr) => addr,
        None => match config.listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => return format!("http://{}", config.listen),
        },
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Where notifications may go: public addresses, loopback in sandbox mode, and the networks
/// the operator allowed. Checked when a merchant gives a URL and again when it is sent.
fn notify_urls(config: &Config) -> UrlPolicy {
    UrlPolicy {
        allow_loopback: config.mode == Mode::Sandbox,
        allowed_networks: config.notify.allowed_networks.clone(),
    }
}

/// The notification dispatcher with every dialect's renderer.
pub fn dispatcher(service: &Arc<Lifecycle>, config: &Config) -> anyhow::Result<Arc<Dispatcher>> {
    let credentials = service.credentials();
    let mut renderers: HashMap<Dialect, Arc<dyn Renderer>> = HashMap::new();
    for dialect in Dialect::ALL {
        let renderer: Arc<dyn Renderer> = match dialect {
            Dialect::Pockyt => Arc::new(tillgate_pockyt::PockytRenderer::new(credentials.clone())),
            Dialect::Unified => Arc::new(tillgate_unified::UnifiedRenderer::new(
                credentials.clone(),
                service.clock().clone(),
            )),
            Dialect::YabandPay => {
                Arc::new(tillgate_yabandpay::YabandRenderer::new(credentials.clone()))
            }
        };
        renderers.insert(dialect, renderer);
    }
    let dispatcher = Dispatcher::new(
        service.store().clone(),
        service.clock().clone(),
        renderers,
        DispatcherConfig {
            schedule: config.notify.schedule.clone(),
            timeout: std::time::Duration::from_millis(config.notify.timeout_ms),
            lease: std::time::Duration::from_millis(config.notify.timeout_ms.saturating_mul(3))
                .max(std::time::Duration::from_secs(30)),
            max_in_flight: config.notify.max_in_flight.get(),
            max_in_flight_per_merchant: config.notify.max_in_flight_per_merchant.get(),
            urls: notify_urls(config),
            ..DispatcherConfig::default()
        },
        service.outbox_wake(),
    )
    .context("cannot build the notification client")?;
    Ok(Arc::new(dispatcher))
}

/// The rate limits in force: per merchant (counted by each dialect once a signature is
/// verified) and per client address (counted before anything else is read).
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    pub merchant: RateLimit,
    pub address: RateLimit,
}

impl RateLimits {
    /// The configured rates, or the mode's defaults (off in sandbox mode).
    pub fn from_config(config: &Config) -> RateLimits {
        let limit = |rate: Option<config::Rate>| {
            rate.map_or_else(RateLimit::off, |r| {
                RateLimit::per_second(r.per_second, r.burst)
            })
        };
        RateLimits {
            merchant: limit(config.rate_limit.merchant(config.mode)),
            address: limit(config.rate_limit.address(config.mode)),
        }
    }

    /// Forgets, every few seconds until `stopped`, the keys no longer limited, so the tables
    /// hold only recent clients.
    pub async fn forget_idle(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    self.merchant.forget_idle();
                    self.address.forget_idle();
                }
                _ = stopped.changed() => return,
            }
        }
    }
}

/// Every route of the gateway; health and metrics as [`observe::Exposure::on_main_listener`]
/// says.
pub fn app(
    lifecycle: Arc<Lifecycle>,
    hub: Arc<hub::Hub>,
    observability: Arc<observe::Observability>,
    config: &Config,
    limits: &RateLimits,
) -> Router {
    let cors = cors::Cors::new(&config.cors.allowed_origins, lifecycle.store().clone());
    let mut router = Router::new()
        .merge(hub::routes(hub))
        .merge(tillgate_pockyt::router_with(
            lifecycle.clone(),
            limits.merchant.clone(),
        ))
        .merge(tillgate_unified::router_with(
            lifecycle.clone(),
            limits.merchant.clone(),
        ))
        .merge(tillgate_yabandpay::router_with(
            lifecycle.clone(),
            tillgate_yabandpay::YabandConfig {
                terminal_wait: std::time::Duration::from_millis(config.terminal_wait_ms),
                merchant_limit: limits.merchant.clone(),
                ..tillgate_yabandpay::YabandConfig::default()
            },
        ))
        .merge(observe::routes(
            observability,
            observe::Exposure::on_main_listener(config),
        ));
    router = router.merge(admin::routes(lifecycle.clone(), config));
    router = router.merge(books::routes(lifecycle.clone(), config, node_id()));
    if let Some(callbacks) = wallet::routes(lifecycle.clone(), config) {
        router = router.merge(callbacks);
    }
    router = router.merge(console::routes(
        lifecycle.clone(),
        config.mode == Mode::Production,
        config.default_timezone,
    ));
    router = router.merge(pages::routes(
        lifecycle.clone(),
        config.mode == Mode::Sandbox,
    ));
    if config.mode == Mode::Sandbox {
        router = router.merge(sandbox::routes(lifecycle));
    }
    let body_rules = BodyRules {
        timeout: std::time::Duration::from_millis(config.http.body_read_timeout_ms.max(1)),
        max_bytes: config.max_body_bytes,
    };
    router
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(cors, cors::cors))
        .layer(middleware::from_fn_with_state(
            body_rules,
            read_body_in_time,
        ))
        .layer(middleware::from_fn_with_state(
            limits.address.clone(),
            limit_address,
        ))
        .layer(middleware::from_fn(plain_uri))
        .layer(middleware::from_fn(observe::requests::observe))
}

/// Refuses a request whose path or query, percent-decoded, is not UTF-8 or holds a control
/// character (a null byte among them): path and query parameters of the operator surfaces
/// (`/admin/v1/transactions/{transactionNo}`, `?transactionNo=`) are held to the same rule
/// as the merchant APIs' parameters, and such text never reaches a handler or SQL.
async fn plain_uri(request: Request, next: Next) -> Response {
    let odd = |raw: &str| {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        std::str::from_utf8(&bytes).map_or(true, tillgate_wire::has_control)
    };
    let uri = request.uri();
    if odd(uri.path()) || uri.query().is_some_and(odd) {
        let path = uri.path().to_owned();
        return refusal(
            &path,
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            "the path or query holds a control character or bytes that are not UTF-8".into(),
        );
    }
    next.run(request).await
}

/// Counts a request to a merchant API against its client address's rate limit before its body
/// is read; over the limit it gets its dialect's busy answer, HTTP 429 and `Retry-After`.
/// Requests that did not come through the listener (no client address) are not counted.
async fn limit_address(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let path = request.uri().path();
    let merchant_api = matches!(Surface::of(path), Surface::Unified | Surface::YabandPay)
        || path.starts_with("/app-instore/")
        || path.starts_with("/app-data-search/");
    if let (Some(peer), true, true) = (peer, merchant_api, limit.is_on()) {
        let key = listener::address_key(peer.ip()).to_string();
        if let Err(busy) = limit.check(&key) {
            let path = path.to_owned();
            let mut answer = refusal(
                &path,
                StatusCode::TOO_MANY_REQUESTS,
                Refusal::Busy,
                format!(
                    "too many requests from this address; nothing was changed; retry in {} s",
                    busy.retry_after_secs()
                ),
            );
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(busy.retry_after_secs()),
            );
            return answer;
        }
    }
    next.run(request).await
}

/// How long a request's body may take to arrive, and how much of it is read.
#[derive(Debug, Clone, Copy)]
struct BodyRules {
    timeout: std::time::Duration,
    max_bytes: usize,
}

/// Reads the whole body under its deadline before any handler runs, so that a client sending
/// part of a body holds its connection only that long. A body past the size limit is read no
/// further and handed on as it is, for the handler's own limit to refuse in its dialect.
async fn read_body_in_time(
    State(rules): State<BodyRules>,
    request: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    let path = request.uri().path().to_owned();
    let (parts, mut body) = request.into_parts();
    let read = async {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > rules.max_bytes {
                    break;
                }
            }
        }
        Ok::<_, axum::Error>(bytes)
    };
    match tokio::time::timeout(rules.timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => refusal(
            &path,
            StatusCode::BAD_REQUEST,
            Refusal::Malformed,
            "the request body could not be read".into(),
        ),
        Err(_) => {
            let mut answer = refusal(
                &path,
                StatusCode::REQUEST_TIMEOUT,
                Refusal::Malformed,
                format!(
                    "the request body did not arrive within {} ms",
                    rules.timeout.as_millis()
                ),
            );
            // The rest of the body may still come: the connection cannot carry another request.
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            answer
        }
    }
}

/// Whose answers a path gets: a dialect's envelope, or the operator surfaces' `{"error"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Pockyt,
    Unified,
    YabandPay,
    Operator,
}

impl Surface {
    fn of(path: &str) -> Surface {
        if path.starts_with("/api/") {
            Surface::Unified
        } else if path == "/Payments" {
            Surface::YabandPay
        } else if ["/admin/", "/sandbox/", "/wallet/", "/terminal"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            Surface::Operator
        } else {
            Surface::Pockyt
        }
    }
}

/// Why a request is answered before any handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No route, or not with that method.
    NoRoute,
    /// The body is late or unreadable.
    Malformed,
    /// Over a rate limit: retry later.
    Busy,
}

/// An answer in the envelope of the surface whose paths `path` looks like, with the code of
/// `why` there.
fn refusal(path: &str, status: StatusCode, why: Refusal, message: String) -> Response {
    let surface = match (Surface::of(path), why) {
        // Unknown paths keep the answer they always had: unified under /api/, else Pockyt's.
        (Surface::Unified, _) => Surface::Unified,
        (_, Refusal::NoRoute) => Surface::Pockyt,
        (s, _) => s,
    };
    match surface {
        Surface::Unified => {
            let code = match why {
                Refusal::Busy => tillgate_unified::Code::SystemError,
                _ => tillgate_unified::Code::ParamsError,
            };
            tillgate_unified::UnifiedError::new(code, message)
                .with_status(status)
                .into_response()
        }
        Surface::YabandPay => {
            let code = match why {
                Refusal::Busy => tillgate_yabandpay::Code::Busy,
                _ => tillgate_yabandpay::Code::Malformed,
            };
            tillgate_yabandpay::YabandError {
                status,
                ..tillgate_yabandpay::YabandError::new(code, message)
            }
            .into_response()
        }
        Surface::Operator => {
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
        }
        Surface::Pockyt => {
            let code = match why {
                Refusal::NoRoute => RetCode::ApiVersionError,
                Refusal::Malformed => RetCode::ParameterValueError,
                Refusal::Busy => RetCode::SystemError,
            };
            PockytError::new(code, message)
                .with_status(status)
                .into_response()
        }
    }
}

async fn unknown_path(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    refusal(
        &path,
        StatusCode::NOT_FOUND,
        Refusal::NoRoute,
        format!("no API at {path}"),
    )
}

async fn wrong_method(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let message = format!("method {} is not allowed here; use POST", request.method());
    refusal(
        &path,
        StatusCode::METHOD_NOT_ALLOWED,
        Refusal::NoRoute,
        message,
    )
}

/// Runs the gateway until `shutdown` resolves, then drains requests and closes the store.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Counted from the first write on (the sandbox bootstrap's included).
    observe::exporter::recorder();
    keys::required_in_production(&config)?;
    check_production_wallets(&config)?;
    // Bound before the database is opened and migrated: a busy port is reported at once.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut config = config;
    if config.public_url.is_none() {
        let url = public_url(&config, Some(listener.local_addr()?));
        if config.mode == Mode::Production {
            tracing::warn!(%url, "public_url is not set: hosted payment pages link to the listening address");
        }
        config.public_url = Some(url);
    }
    let writers = tillgate_store_postgres::WriterOptions {
        writers: config.database_writers.get(),
        queue: config.database_write_queue.get(),
        batch: config.database_write_batch.get(),
    };
    let store = open_store_with(
        &config.database_url,
        config.database_max_connections,
        writers,
    )
    .await?;
    if config.mode == Mode::Production {
        let n = store.sandbox_merchant_count().await?;
        if n > 0 {
            bail!(
                "production mode refuses to start: the database holds {n} sandbox merchant(s) \
                 whose credentials are public; use a database without them"
            );
        }
    }
    let credentials = keys::open_credentials(&config, store.clone()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (events, reports) = tokio::sync::mpsc::channel(hub::EVENT_QUEUE);
    let terminals = hub::Hub::new(store.clone(), credentials.clone(), clock, node_id(), events);
    let service = Arc::new(lifecycle_with(
        store.clone(),
        credentials,
        Some(terminals.clone()),
        &config,
    )?);
    let applying = tokio::spawn(service.clone().apply_terminal_events(reports));
    if config.mode == Mode::Sandbox {
        sandbox::bootstrap(&service, config.default_timezone).await?;
    }
    let observing = observe::OwnListener::bind(&config).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tracing::info!(%addr, mode = ?config.mode, "tillgate is ready");
    let listening = tokio::spawn(terminals.clone().listen());
    let (stop_dispatch, stopped) = tokio::sync::watch::channel(false);
    let notifications = tokio::spawn(dispatcher(&service, &config)?.run(stopped.clone()));
    let reconciling = match config.books.reconcile_at {
        Some(at) => Some(tokio::spawn(books::schedule(
            store.clone(),
            books::wallets(&config)?,
            at,
            service.clock().clone(),
            node_id(),
            stopped.clone(),
        ))),
        None => None,
    };
    let janitor = tokio::spawn(
        janitor::Janitor::new(
            service.clone(),
            std::time::Duration::from_millis(config.janitor_interval_ms),
            // Twice the call's time-out: a request that timed out here may still be on its way
            // to the wallet, and a query must not overtake it.
            std::time::Duration::from_millis(config.channel.timeout_ms.saturating_mul(2)),
        )
        .run(stopped.clone()),
    );
    // Descriptors kept for the database pool, files and outbound clients.
    let reserved = u64::from(config.database_max_connections) + 64;
    let limits = listener::Limits::from_config(&config.http, config.mode)
        .within_descriptors(listener::descriptor_limit(), reserved);
    let rate_limits = RateLimits::from_config(&config);
    let forgetting = tokio::spawn(rate_limits.clone().forget_idle(stopped.clone()));
    let observability = Arc::new(observe::Observability::new(
        store.clone(),
        service.clock().clone(),
        terminals.clone(),
    ));
    let upkeep = tokio::spawn(observability.clone().upkeep(stopped.clone()));
    let observed = match observing {
        Some(own) => Some(observe::OwnListener::serve(
            own,
            &observability,
            limits.clone(),
        )),
        None => {
            if observe::Exposure::on_main_listener(&config).is_off() {
                tracing::info!("health and metrics are not served: set [observability] listen, or an admin token");
            }
            None
        }
    };
    let router = app(
        service,
        terminals.clone(),
        observability,
        &config,
        &rate_limits,
    );
    listener::serve(listener, router, limits, shutdown, move || {
        terminals.awaited_commands()
    })
    .await;
    if let Some(observed) = observed {
        observed.stop().await;
    }
    // Attempts in flight finish and are recorded; the rest wait in the outbox for next start.
    let _ = stop_dispatch.send(true);
    let _ = notifications.await;
    let _ = janitor.await;
    if let Some(reconciling) = reconciling {
        reconciling.abort();
    }
    let _ = forgetting.await;
    let _ = upkeep.await;
    listening.abort();
    applying.abort();
    tracing::info!("draining the store");
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
