//! The layer around every request: it gives the request an id (the client's `X-Request-Id`
//! when it is a plain token, else a new one) and sends it back in `X-Request-Id`, counts the
//! request by dialect, endpoint and answer code, times it, and writes its log line.
//!
//! What the request concerned is noted by the parts that learn it (`tillgate_core::note`): the
//! dialect's envelope its code, the credentials loader the merchant, the lifecycle the
//! transaction. The path is logged without its query; no body, header or secret ever is.
//! Health checks and scrapes are logged at debug, every other request at info.

use super::exporter::{REQUESTS, REQUEST_SECONDS};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};
use tillgate_core::note;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-given request id kept; a longer one is replaced by a new one.
const MAX_ID: usize = 64;

/// The layer itself (`axum::middleware::from_fn`).
pub async fn observe(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = request_id(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| intern(m.as_str()));
    let (mut response, noted) = note::noted(next.run(request)).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let dialect = noted.dialect.map_or("operator", |d| d.as_str());
    let endpoint = noted.endpoint.or(route).unwrap_or("unmatched");
    let code = match noted.code {
        Some(code) => code,
        None if noted.replayed => "replay",
        None => status_code(status),
    };
    metrics::counter!(REQUESTS, "dialect" => dialect, "endpoint" => endpoint, "code" => code)
        .increment(1);
    metrics::histogram!(REQUEST_SECONDS, "dialect" => dialect, "endpoint" => endpoint)
        .record(elapsed);
    response.headers_mut().insert(REQUEST_ID, id.clone());
    let id = id.to_str().unwrap_or_default();
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                request_id = id,
                %method,
                path = path.as_str(),
                dialect,
                endpoint,
                status = status.as_u16(),
                code,
                merchant = noted.merchant_no.as_deref(),
                transaction_no = noted.transaction_no.as_deref(),
                replayed = noted.replayed.then_some(true),
                latency_us,
                "request"
            )
        };
    }
    if quiet(&path) {
        line!(debug);
    } else {
        line!(info);
    }
    response
}

/// Probes and scrapes come every few seconds: their lines would bury the requests'.
fn quiet(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The client's request id when it is a plain token (letters, digits, `-`, `_`, `.`, `:`, at
/// most 64), so a proxy's id ties its log to ours; else a new random one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers.get(REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    match given {
        Some(v) => v.clone(),
        None => HeaderValue::from_str(&format!("{:016x}", rand::random::<u64>()))
            .unwrap_or(HeaderValue::from_static("-")),
    }
}

/// The most route templates kept as labels (the gateway has a few dozen routes).
const MAX_ROUTES: usize = 256;

/// A route template as a label that lives as long as the process: the router's templates are
/// few and fixed, so each is leaked once and reused; `None` past [`MAX_ROUTES`].
fn intern(route: &str) -> Option<&'static str> {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| RwLock::new(HashSet::new()));
    if let Some(known) = routes.read().unwrap_or_else(|e| e.into_inner()).get(route) {
        return Some(known);
    }
    let mut routes = routes.write().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = routes.get(route) {
        return Some(known);
    }
    if routes.len() >= MAX_ROUTES {
        return None;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(leaked);
    Some(leaked)
}

/// The HTTP status as the code of an answer that is not in a dialect's envelope.
fn status_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        101 => "101",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_client_id_is_kept_and_anything_else_gets_a_new_one() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("proxy-7f.3:a_b"));
        assert_eq!(request_id(&headers), "proxy-7f.3:a_b");
        for odd in ["a b", "x\"y", &"a".repeat(65), ""] {
            headers.insert(REQUEST_ID, HeaderValue::from_str(odd).unwrap());
            let made = request_id(&headers);
            assert_ne!(made, odd);
            assert_eq!(made.len(), 16, "{made:?}");
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn route_templates_become_labels_once() {
        let a = intern("/admin/v1/notifications/{id}").unwrap();
        let b = intern(&String::from("/admin/v1/notifications/{id}")).unwrap();
        assert!(std::ptr::eq(a, b));
    }
}
