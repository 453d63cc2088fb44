//! What operators see of a running gateway: whether it is alive (`/healthz`) and ready
//! (`/readyz`), its Prometheus metrics (`/metrics`), and one log line per request.
//!
//! - `exporter`: the recorder, the metric names, and what is read when `/metrics` is asked.
//! - `requests`: the layer around every request: its id, its log line and its counters.
//! - `wallet`: every wallet call counted and timed, whichever wallet answers.
//!
//! Where the endpoints are served is [`Exposure`]: open in sandbox mode; in production on a
//! listener of their own (`[observability] listen`), or else behind the admin token.

pub mod exporter;
pub mod requests;
pub mod wallet;

use crate::config::{Config, Mode};
use crate::hub::Hub;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::{Secret, Store};
use tillgate_domain::Clock;

/// How long the readiness check waits for the store: a probe's own time-out is typically a
/// second or more, and a store slower than this is not ready to take payments.
pub const READY_WITHIN: Duration = Duration::from_millis(1000);

/// How long `/metrics` waits for the store's backlog counts before it answers without them.
const BACKLOG_WITHIN: Duration = Duration::from_millis(2000);

/// What the health and metrics endpoints read.
pub struct Observability {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hub: Arc<Hub>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Whether the last readiness check passed: a change is logged once, not every probe.
    ready: AtomicBool,
}

impl Observability {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, hub: Arc<Hub>) -> Observability {
        Observability {
            store,
            clock,
            hub,
            metrics: exporter::recorder(),
            ready: AtomicBool::new(true),
        }
    }

    /// Whether the store can take requests; `Err` says why not.
    pub async fn readiness(&self) -> Result<(), String> {
        let checked = self
            .store
            .health(READY_WITHIN)
            .await
            .map_err(|e| e.to_string());
        let was = self.ready.swap(checked.is_ok(), Ordering::Relaxed);
        match (&checked, was) {
            (Err(reason), true) => tracing::warn!(%reason, "not ready"),
            (Ok(()), false) => tracing::info!("ready again"),
            _ => {}
        }
        checked
    }

    /// The metrics text, with what is read at scrape time brought up to date first.
    pub async fn render(&self) -> String {
        exporter::scrape(
            self.store.as_ref(),
            self.clock.now(),
            self.hub.online(),
            BACKLOG_WITHIN,
        )
        .await;
        self.metrics.render()
    }

    /// Keeps the recorder's memory bounded between scrapes, until `stopped`.
    pub async fn upkeep(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => self.metrics.run_upkeep(),
                _ = stopped.changed() => return,
            }
        }
    }
}

/// Where and how the health and metrics endpoints are served on one listener.
#[derive(Debug, Clone)]
pub enum Exposure {
    /// To anyone who reaches the listener.
    Open,
    /// To requests carrying the admin token.
    Token(Secret<String>),
    /// Not at all.
    Off,
}

impl Exposure {
    /// On the gateway's own listener: open in sandbox mode; in production only without a
    /// listener of their own, behind the admin token, and not at all without one.
    pub fn on_main_listener(config: &Config) -> Exposure {
        match (
            config.mode,
            &config.observability.listen,
            &config.admin_token,
        ) {
            (Mode::Sandbox, _, _) => Exposure::Open,
            (Mode::Production, Some(_), _) => Exposure::Off,
            (Mode::Production, None, Some(token)) => Exposure::Token(token.clone()),
            (Mode::Production, None, None) => Exposure::Off,
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self, Exposure::Off)
    }
}

/// The listener of health and metrics when they have one of their own: open, and stopped with
/// the gateway's.
pub struct OwnListener {
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
}

impl OwnListener {
    /// Binds `[observability] listen`, when set, and prints `observability listening on
    /// http://HOST:PORT`.
    pub async fn bind(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
        use anyhow::Context;
        let Some(at) = &config.observability.listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen on {at} ([observability] listen)"))?;
        println!(
            "observability listening on http://{}",
            listener.local_addr()?
        );
        Ok(Some(listener))
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until [`OwnListener::stop`].
    pub fn serve(
        listener: tokio::net::TcpListener,
        observability: &Arc<Observability>,
        limits: crate::listener::Limits,
    ) -> OwnListener {
        let router = routes(observability.clone(), Exposure::Open)
            .layer(middleware::from_fn(requests::observe));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(crate::listener::serve(
            listener,
            router,
            limits,
            async move {
                let _ = stopped.changed().await;
            },
            Vec::new,
        ));
        OwnListener { stop, serving }
    }

    /// Stops accepting, and returns once its connections are done.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.serving.await;
    }
}

/// `/healthz`, `/readyz` and `/metrics`, as `exposure` says.
pub fn routes(observability: Arc<Observability>, exposure: Exposure) -> Router {
    let token = match exposure {
        Exposure::Off => return Router::new(),
        Exposure::Open => None,
        Exposure::Token(token) => Some(token),
    };
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .with_state(observability)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { crate::admin::authorize(token.as_ref(), req, next).await }
        }))
}

/// Alive: the process answers. Nothing else is asked, so a slow database never gets a live
/// gateway restarted.
async fn alive() -> &'static str {
    "ok"
}

/// Ready: the store answers, is at this build's schema, and takes writes.
async fn ready(State(observability): State<Arc<Observability>>) -> Response {
    match observability.readiness().await {
        Ok(()) => Json(json!({ "ready": true })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// Prometheus text format.
async fn scrape(State(observability): State<Arc<Observability>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        observability.render().await,
    )
        .into_response()
}
