//! The HTTP channel: the gateway's side of the wallet protocol, as a `tillgate_core::Channel`.
//!
//! Every `ChannelOp` becomes one signed POST. Only a signed 2xx answer about the same order
//! decides anything; a time-out, a broken or refused connection, another status, a missing or
//! wrong signature, an unparsable body or an answer about another order is
//! `ChannelOutcome::Unknown`, so the operation stays in flight until a query or a callback
//! resolves it (money in flight is never forgotten). Failures are logged with the operation
//! and the transaction, never with the key.

use crate::protocol::{
    self, Answer, CancelRequest, Outcome, PayRequest, QueryOperation, QueryRequest, RefundRequest,
    MAX_BODY_BYTES, MIN_KEY_BYTES, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tillgate_core::{Channel, ChannelOp, ChannelReply, QueryTarget, Secret};
use tillgate_domain::{ChannelOutcome, Clock, Money, SystemClock};

/// Why an `HttpChannel` cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpChannelError {
    #[error("wallet base URL must be an http or https URL: {0}")]
    BadUrl(String),
    #[error("wallet key must be at least {MIN_KEY_BYTES} bytes")]
    ShortKey,
    #[error("time-out must be above zero")]
    ZeroTimeout,
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The wallet behind the tillgate wallet protocol, reached over HTTP.
pub struct HttpChannel {
    base_url: String,
    key: Secret<Vec<u8>>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HttpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpChannel")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// One request: where it goes, what it says, and what the answer must repeat.
struct Call {
    operation: &'static str,
    path: &'static str,
    body: Vec<u8>,
    transaction_no: String,
    refund_no: Option<String>,
    /// The amount the request moves; an answer recording another amount is not believed.
    amount: Option<Money>,
}

impl HttpChannel {
    /// A channel to the wallet at `base_url` (e.g. `http://127.0.0.1:9090`), signing with
    /// `key`; each call gives up after `timeout` and reports the outcome as unknown.
    pub fn new(
        base_url: &str,
        key: Secret<Vec<u8>>,
        timeout: Duration,
    ) -> Result<HttpChannel, HttpChannelError> {
        let parsed =
            reqwest::Url::parse(base_url).map_err(|e| HttpChannelError::BadUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(HttpChannelError::BadUrl(base_url.to_owned()));
        }
        if key.expose().len() < MIN_KEY_BYTES {
            return Err(HttpChannelError::ShortKey);
        }
        if timeout.is_zero() {
            return Err(HttpChannelError::ZeroTimeout);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would re-send a signed money request somewhere the config did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpChannel {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            client,
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the timestamps it signs and checks (tests move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> HttpChannel {
        self.clock = clock;
        self
    }

    fn call_of(op: &ChannelOp) -> Result<Call, serde_json::Error> {
        // The cancel's number goes along, so that the wallet's callback names the cancel it
        // answers (not whichever of the transaction's cancels is in progress then).
        fn cancel(transaction_no: &str, amount: &Money, cancel_no: &str) -> CancelRequest {
            CancelRequest {
                transaction_no: transaction_no.to_owned(),
                amount_minor: amount.minor(),
                currency: amount.currency().code().to_owned(),
                cancel_no: Some(cancel_no.to_owned()),
            }
        }
        Ok(match op {
            ChannelOp::Pay {
                transaction_no,
                amount,
                barcode,
                vendor,
            } => Call {
                operation: "pay",
                path: protocol::PAY_PATH,
                body: serde_json::to_vec(&PayRequest {
                    transaction_no: transaction_no.clone(),
                    amount_minor: amount.minor(),
                    currency: amount.currency().code().to_owned(),
                    barcode: barcode.clone(),
                    vendor: vendor.clone(),
                })?,
                transaction_no: transaction_no.clone(),
                refund_no: None,
                amount: Some(*amount),
            },
            ChannelOp::Close {
                transaction_no,
                amount,
                cancel_no,
            } => Call {
                operation: "close",
                path: protocol::CLOSE_PATH,
                body: serde_json::to_vec(&cancel(transaction_no, amount, cancel_no))?,
                transaction_no: transaction_no.clone(),
                refund_no: None,
                amount: Some(*amount),
            },
            ChannelOp::Reverse {
                transaction_no,
                amount,
                cancel_no,
            } => Call {
                operation: "reverse",
                path: protocol::REVERSE_PATH,
                body: serde_json::to_vec(&cancel(transaction_no, amount, cancel_no))?,
                transaction_no: transaction_no.clone(),
                refund_no: None,
                amount: Some(*amount),
            },
            ChannelOp::Refund {
                transaction_no,
                refund_no,
                amount,
            } => Call {
                operation: "refund",
                path: protocol::REFUND_PATH,
                body: serde_json::to_vec(&RefundRequest {
                    transaction_no: transaction_no.clone(),
                    refund_no: refund_no.clone(),
                    amount_minor: amount.minor(),
                    currency: amount.currency().code().to_owned(),
                })?,
                transaction_no: transaction_no.clone(),
                refund_no: Some(refund_no.clone()),
                amount: Some(*amount),
            },
            ChannelOp::Query {
                transaction_no,
                operation,
                ..
            } => {
                let (operation, refund_no) = match operation {
                    QueryTarget::Payment => (QueryOperation::Payment, None),
                    QueryTarget::Refund { refund_no } => (
                        QueryOperation::Refund(refund_no.clone()),
                        Some(refund_no.clone()),
                    ),
                    QueryTarget::Cancel { cancel_no } => {
                        (QueryOperation::Cancel(cancel_no.clone()), None)
                    }
                };
                Call {
                    operation: "query",
                    path: protocol::QUERY_PATH,
                    body: serde_json::to_vec(&QueryRequest {
                        transaction_no: transaction_no.clone(),
                        operation,
                    })?,
                    transaction_no: transaction_no.clone(),
                    refund_no,
                    amount: None,
                }
            }
        })
    }

    /// POSTs a signed body to `path`; answers the body of a signed 2xx answer.
    async fn post(&self, path: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let timestamp = self.clock.now().timestamp();
        let signature = protocol::sign(self.key.expose(), timestamp, request);
        let mut response = self
            .client
            .post(format!("{}{}", self.base_url, path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(request.to_vec())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        // Read at most the protocol's body limit: a wallet that streams more is broken.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("answer longer than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let head = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
            return Err(format!("HTTP {status}: {head}"));
        }
        protocol::verify_headers(
            self.key.expose(),
            &headers,
            &body,
            self.clock.now().timestamp(),
        )
        .map_err(|e| format!("answer refused: {e}"))?;
        Ok(body)
    }

    /// The wallet's statement of the UTC calendar day `date`, every page of it, each page's
    /// signature checked. `Err` says why it could not be read whole.
    pub async fn statement(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Vec<tillgate_core::books::StatementLine>, String> {
        use tillgate_core::books::{BookOutcome, OperationClass, StatementLine};
        let mut lines = Vec::new();
        let mut after = None;
        // A bound: a million lines a day is 5000 pages.
        for _ in 0..100_000 {
            let request = serde_json::to_vec(&protocol::StatementRequest {
                date: date.to_string(),
                after,
            })
            .map_err(|e| e.to_string())?;
            let body = self.post(protocol::STATEMENT_PATH, &request).await?;
            let page: protocol::Statement =
                serde_json::from_slice(&body).map_err(|e| format!("statement is not JSON: {e}"))?;
            if page.date != date.to_string() {
                return Err(format!("the statement is of {:?}, not {date}", page.date));
            }
            for l in page.lines {
                let class = OperationClass::parse(&l.operation).ok_or_else(|| {
                    format!("unknown operation {:?} on the statement", l.operation)
                })?;
                let at = chrono::DateTime::parse_from_rfc3339(&l.at)
                    .map_err(|_| format!("a statement line's time {:?} is not RFC 3339", l.at))?
                    .with_timezone(&chrono::Utc);
                lines.push(StatementLine {
                    class,
                    operation: l.operation,
                    transaction_no: l.transaction_no,
                    refund_no: l.refund_no,
                    amount_minor: l.amount_minor,
                    currency: l.currency,
                    outcome: match l.outcome {
                        Outcome::Approved => BookOutcome::Approved,
                        Outcome::Declined => BookOutcome::Declined,
                        Outcome::Pending => BookOutcome::Pending,
                    },
                    at,
                    wallet_ref: l.wallet_ref,
                });
            }
            match page.next {
                Some(n) if Some(n) != after => after = Some(n),
                _ => return Ok(lines),
            }
        }
        Err("the statement did not end".into())
    }

    /// Sends one call; `Err` says why its outcome is unknown.
    async fn send(&self, call: &Call) -> Result<Answer, String> {
        let body = self.post(call.path, &call.body).await?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
        if answer.transaction_no != call.transaction_no {
            return Err(format!(
                "answer names transaction {:?}",
                answer.transaction_no
            ));
        }
        if call.refund_no.is_some() && answer.refund_no != call.refund_no {
            return Err(format!("answer names refund {:?}", answer.refund_no));
        }
        if let (Some(amount), Some(minor)) = (call.amount, answer.amount_minor) {
            let asked = amount.currency();
            let currency = answer.currency.as_deref().unwrap_or(asked.code());
            if minor != amount.minor() || currency != asked.code() {
                return Err(format!(
                    "answer records {minor} {currency}, the request was {amount}"
                ));
            }
        }
        Ok(answer)
    }
}

/// A transport error in words, with its cause chain (reqwest's top line alone says little).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "time-out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Channel for HttpChannel {
    async fn execute(&self, op: ChannelOp) -> ChannelReply {
        let call = match HttpChannel::call_of(&op) {
            Ok(call) => call,
            Err(e) => {
                // Serialising these plain structs cannot fail; if it ever did, nothing was sent.
                tracing::error!(error = %e, "wallet request could not be encoded");
                return ChannelReply::new(ChannelOutcome::Unknown);
            }
        };
        match self.send(&call).await {
            Ok(answer) => {
                tracing::debug!(
                    operation = call.operation,
                    transaction_no = %call.transaction_no,
                    outcome = answer.outcome.as_str(),
                    "wallet answered"
                );
                ChannelReply {
                    outcome: answer.outcome.to_channel(),
                    channel_ref: answer.wallet_ref,
                    message: answer.message,
                }
            }
            Err(reason) => {
                tracing::warn!(
                    operation = call.operation,
                    transaction_no = %call.transaction_no,
                    refund_no = call.refund_no.as_deref().unwrap_or(""),
                    reason = %reason,
                    "wallet outcome unknown"
                );
                ChannelReply::new(ChannelOutcome::Unknown)
            }
        }
    }
}

#[async_trait]
impl tillgate_core::closing::StatementSource for HttpChannel {
    async fn statement(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Vec<tillgate_core::books::StatementLine>, String> {
        HttpChannel::statement(self, date).await
    }
}
