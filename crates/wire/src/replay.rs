//! An HTTP answer as the exact-replay guard remembers it, and back: what a copy of a request
//! gets is the first answer's status, content type and bytes.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// The most bytes of an answer kept; dialect answers are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// An answer's parts: status, content type, body. An answer too large to keep is reported as
/// a system error with its status (it is then not remembered, and its copy acts again).
pub async fn capture(response: Response) -> (u16, String, Vec<u8>) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(body) => (status, content_type, body.to_vec()),
        Err(_) => (500, content_type, Vec::new()),
    }
}

/// An answer from its parts.
pub fn restore(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}
