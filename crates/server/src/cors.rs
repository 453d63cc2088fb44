//! CORS for the merchant APIs, opt-in: a page on another origin (a web shop using a browser
//! SDK) may read the gateway's answers only when the operator allowed that origin in
//! `[cors] allowed_origins`, or the merchant the request names (Pockyt's `merchantNo`, the
//! unified `mchNo`) lists it. Nothing is allowed by default. A preflight names no merchant: it
//! is answered for the gateway's origins and any merchant's; the answer itself is marked only
//! for the gateway's origins and the named merchant's. Every request passes through unchanged.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tillgate_core::Store;

/// The paths of the merchant APIs (Pockyt, unified, YabandPay); the operator's and the
/// wallet's surfaces never answer another origin.
fn merchant_api(path: &str) -> bool {
    path.starts_with("/app-instore/")
        || path.starts_with("/app-data-search/")
        || path.starts_with("/api/pay/")
        || path.starts_with("/api/refund/")
        || path.starts_with("/api/cancel/")
        || path == "/Payments"
}

/// The origins allowed to read the merchant APIs' answers: the gateway's, and the merchants'
/// (read from the store).
#[derive(Clone)]
pub struct Cors {
    origins: Arc<Vec<String>>,
    store: Arc<dyn Store>,
}

/// An origin as browsers send it: `scheme://host[:port]`, http or https, nothing after it.
/// Answers it in the form compared (lower case, no trailing slash).
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim_end_matches('/').to_ascii_lowercase();
    let url = url::Url::parse(&origin).map_err(|e| format!("origin {text:?}: {e}"))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain || origin.ends_with(':') {
        return Err(format!(
            "origin {text:?} is not scheme://host[:port] with http or https"
        ));
    }
    Ok(origin)
}

impl Cors {
    pub fn new(origins: &[String], store: Arc<dyn Store>) -> Cors {
        Cors {
            origins: Arc::new(origins.to_vec()),
            store,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }

    /// Whether any merchant lists the origin (a store failure allows nothing).
    async fn some_merchant_allows(&self, origin: &str) -> bool {
        self.store
            .origin_of_a_merchant(origin)
            .await
            .unwrap_or(false)
    }

    /// Whether the merchant numbered `merchant_no` lists the origin.
    async fn merchant_allows(&self, merchant_no: &str, origin: &str) -> bool {
        match self.store.merchant(merchant_no).await {
            Ok(Some(m)) => m.cors_origins.iter().any(|o| o == origin),
            _ => false,
        }
    }
}

/// The merchant a merchant-API body names: Pockyt's `merchantNo` or the unified `mchNo`, in a
/// JSON object or a form. The dialect still checks the signature; this only picks the list of
/// origins allowed to read the answer.
fn named_merchant(body: &[u8]) -> Option<String> {
    const FIELDS: [&str; 2] = ["merchantNo", "mchNo"];
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body).ok()?;
        return FIELDS.iter().find_map(|f| match object.get(*f)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| FIELDS.contains(&k.as_ref()))
        .map(|(_, v)| v.into_owned())
}

/// The request's `Origin`, when it is text.
fn origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// The middleware: answers allowed preflights and marks allowed answers.
pub async fn cors(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    if !merchant_api(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(origin) = origin(request.headers()) else {
        return next.run(request).await;
    };
    let origin = origin.to_ascii_lowercase();
    let Ok(allowed) = HeaderValue::from_str(&origin) else {
        return next.run(request).await;
    };
    let requested = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .cloned();
    if request.method() == Method::OPTIONS {
        if let Some(method) = requested {
            if cors.allows(&origin) || cors.some_merchant_allows(&origin).await {
                return preflight(Some(allowed), &method, request.headers());
            }
            return next.run(request).await;
        }
    }
    let (request, permitted) = if cors.allows(&origin) {
        (request, true)
    } else {
        // The body was read whole (and bounded) by the layer before this one.
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let permitted = match named_merchant(&bytes) {
            Some(no) => cors.merchant_allows(&no, &origin).await,
            None => false,
        };
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            permitted,
        )
    };
    if !permitted {
        return next.run(request).await;
    }
    let allowed = Some(allowed);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Some(v) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// The answer to an allowed origin's preflight: the merchant APIs take POST only, with the
/// headers the page asks for (none of them is a credential of the gateway's: signatures are
/// in the body).
fn preflight(allowed: Option<HeaderValue>, method: &HeaderValue, asked: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    if method.as_bytes() != b"POST" {
        // No CORS headers: the browser refuses the request it meant to send.
        return response;
    }
    if let Some(v) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    if let Some(h) = asked.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://Shop.example/").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8081").unwrap(),
            "http://127.0.0.1:8081"
        );
        for bad in [
            "*",
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/cart",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
