//! Baseline (a), the HTTP + signature ceiling: a minimal axum server that does what the gateway
//! does before it touches its store — read the body, parse it with the gateway's own
//! `Params`, find the store's token, verify `verifySign` with the gateway's own code — and
//! answers a small JSON envelope. Whatever tillgate does beyond this costs throughput; the ratio
//! of tillgate's figures to this server's says how much.
//!
//! It runs as its own process (`tillgate-bench baseline-server`), so its CPU and memory are
//! measured from `/proc` exactly like the gateway's and it does not share the load generator's
//! runtime.

use crate::pockyt::{MERCHANT_NO, STORE_NO, TOKEN};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tillgate_pockyt::params::Params;
use tillgate_pockyt::sign;

/// The stores this server knows: (merchantNo, storeNo) -> token. Like the gateway's credential
/// cache, a map lookup per request.
type Tokens = HashMap<(String, String), String>;

fn answer(code: &str, message: &str, result: serde_json::Value) -> Response {
    Json(json!({ "result": result, "ret_code": code, "ret_msg": message })).into_response()
}

async fn handle(State(tokens): State<Arc<Tokens>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let params = match Params::parse(content_type, &body) {
        Ok(p) => p,
        Err(e) => return answer("000023", &e.to_string(), json!(null)),
    };
    let (Some(merchant_no), Some(store_no), Some(signature)) = (
        params.text("merchantNo"),
        params.text("storeNo"),
        params.text("verifySign"),
    ) else {
        return answer(
            "000020",
            "merchantNo, storeNo and verifySign are required",
            json!(null),
        );
    };
    let Some(token) = tokens.get(&(merchant_no.to_owned(), store_no.to_owned())) else {
        return answer("000030", "unknown merchantNo or storeNo", json!(null));
    };
    // The gateway hashes the token on every request too; so does this ceiling.
    let token_md5 = sign::md5_hex(token.as_bytes());
    if !sign::verify_with_token_md5(&params, &token_md5, signature) {
        return answer("000030", "verifySign does not match", json!(null));
    }
    answer(
        "000100",
        "query success",
        json!({
            "transactionNo": params.text("transactionNo"),
            "reference": params.text("reference"),
            "transactionStatus": "success",
        }),
    )
}

/// Serves until SIGTERM or SIGINT; prints `listening on http://HOST:PORT` when ready.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let mut tokens = Tokens::new();
    tokens.insert((MERCHANT_NO.into(), STORE_NO.into()), TOKEN.into());
    let app = Router::new()
        .route("/{*path}", post(handle))
        .with_state(Arc::new(tokens))
        .layer(DefaultBodyLimit::max(64 * 1024));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "baseline server must listen on loopback"
    );
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        })
        .await?;
    Ok(())
}
