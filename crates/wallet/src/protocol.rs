//! The tillgate wallet protocol: how the gateway and a wallet server talk over HTTP.
//!
//! ## Transport
//!
//! Every message is a JSON object sent as the body of an HTTP `POST` with
//! `Content-Type: application/json`, at most 64 KiB. Field names are camelCase. Amounts are
//! integers in the currency's minor units (`amountMinor: 1300` with `currency: "USD"` is 13.00
//! USD; JPY has no minor unit, KWD has three): never floats, never decimal strings. Currencies
//! are upper-case ISO 4217 codes.
//!
//! ## Signatures, both ways
//!
//! The sender of every request, every answer and every callback adds two headers:
//!
//! ```text
//! X-Tillgate-Timestamp: <unix time in seconds, decimal>
//! X-Tillgate-Signature: <lower-case hex of HMAC-SHA256(key, "<timestamp>.<body>")>
//! ```
//!
//! where `<body>` is the exact bytes of the HTTP body as sent (never a re-encoding of the
//! parsed JSON) and the key is the secret shared by the gateway and the wallet. The receiver
//! recomputes the HMAC over the bytes it received, compares in constant time, and refuses the
//! message when a header is missing or malformed, the signature differs, or the timestamp is
//! more than 300 seconds away from its own clock. A refused request is answered with HTTP 401
//! and a JSON error; a refused answer or callback is treated as no answer at all.
//!
//! Test vector: key `tillgate-wallet-test-key-0001` (the ASCII bytes; hex
//! `74696c6c676174652d77616c6c65742d746573742d6b65792d30303031`), timestamp `1767225600`,
//! body `{"transactionNo":"217476000000000001","amountMinor":1300,"currency":"USD","barcode":"281234567890123456","vendor":"alipay"}`:
//! the signed text is `1767225600.` followed by the body, and the signature is
//! `c8447229d4714d6b5d73477569d08ceac1d36ef28b6c830a11b4eaf03075f1dd`.
//!
//! ## Requests from the gateway to the wallet
//!
//! | endpoint | body | what the wallet does |
//! |---|---|---|
//! | `POST /v1/pay` | `{transactionNo, amountMinor, currency, barcode?, vendor?}` | charges the customer whose wallet showed `barcode`; without a barcode the customer scans a QR code and the answer is `pending` until they pay |
//! | `POST /v1/close` | `{transactionNo, amountMinor, currency, cancelNo?}` | abandons a transaction that was not paid; if the wallet did take the money, it gives it back |
//! | `POST /v1/reverse` | `{transactionNo, amountMinor, currency, cancelNo?}` | returns the full amount of a transaction paid today |
//! | `POST /v1/refund` | `{transactionNo, refundNo, amountMinor, currency}` | returns part or all of a paid transaction |
//! | `POST /v1/query` | `{transactionNo, operation}` | says what became of an earlier operation; moves no money |
//!
//! `operation` of a query is `"payment"`, `{"refund": "<refundNo>"}` or
//! `{"cancel": "<cancelNo>"}`. A wallet keeps at most one cancel (close or reverse) per
//! transaction, so a cancel query is answered from the transaction's cancel; the `cancelNo`
//! only names it for the gateway's logs.
//!
//! Idempotency: the wallet keys a payment and a cancel by `transactionNo`, a refund by
//! `refundNo`. Asking again with the same key and the same amount and currency performs
//! nothing and answers what the first request came to — this is what makes retries and
//! queries after a lost answer safe. The same key with another amount or currency is answered
//! `409` with a JSON error. One exception: a close or reverse of a transaction whose cancel
//! was declined is tried again (the gateway asks anew only after it recorded the decline).
//!
//! A query about a payment or refund the wallet never received answers `declined` with a
//! message, and from then on the wallet refuses that payment or refund should it still arrive:
//! "never received" becomes a final truth rather than a guess.
//!
//! ## Answers
//!
//! A `200` answer, signed like a request, is
//!
//! ```json
//! {"transactionNo": "…", "refundNo": "…", "outcome": "approved", "walletRef": "…", "message": "…",
//!  "amountMinor": 1300, "currency": "USD"}
//! ```
//!
//! - `outcome`: `approved` (the money moved), `declined` (it did not and will not), or
//!   `pending` (not decided yet: the result comes later by callback, or by a later query).
//! - `transactionNo` (always) and `refundNo` (for refunds and refund queries) repeat the
//!   request's, so an answer cannot be taken for another order's; an answer naming another
//!   order is treated as no answer.
//! - `walletRef` (the wallet's own reference), `message` (a reason, for declines), and
//!   `amountMinor` with `currency` (the amount the wallet recorded for the operation) are
//!   optional.
//!
//! Anything else — a status other than 2xx, a missing or wrong signature, a body that is not
//! such an object, a time-out or a broken connection — means the gateway does not know what
//! happened: the operation stays in progress until a query or a callback says.
//!
//! Errors are `{"error": "<code>", "message": "…"}` with the status: `400 bad_request`
//! (malformed JSON, a missing field, an amount that is not a positive integer of at most 10^15, an
//! unknown currency), `401 bad_signature` / `401 stale_timestamp`, `409 conflict` (a key
//! reused with another amount or currency), `413 too_large`, `503 unavailable` (the wallet
//! cannot record anything now).
//!
//! ## The daily statement
//!
//! `POST /v1/statement` with `{"date": "YYYY-MM-DD", "after": N?}` asks for every operation the
//! wallet performed on that UTC calendar day (the wallet's day; a gateway reconciles each day
//! with the statements of the days around it, so an operation near midnight is not lost). The
//! signed `200` answer is one page:
//!
//! ```json
//! {"date": "2026-12-05", "lines": [{"operation": "pay", "transactionNo": "217476000000000001",
//!   "amountMinor": 1300, "currency": "USD", "outcome": "approved",
//!   "at": "2026-12-05T10:00:00.000Z", "walletRef": "W000000000003"}], "next": 200}
//! ```
//!
//! `operation` is `pay`, `close`, `reverse` or `refund` (with `refundNo`; a close or reverse
//! carries `cancelNo` when the wallet knows it); `outcome` is `approved`, `declined` or
//! `pending`; `at` is when the operation was decided (when it was asked, while pending). Lines
//! are in the order of `at`, at most 200 a page; `next`, when present, is the `after` of the
//! next page (the number of lines already sent). A date that is not a calendar day is `400`.
//!
//! ## Callbacks from the wallet to the gateway
//!
//! When an operation answered `pending` is decided, the wallet POSTs to the gateway's callback
//! URL, signed the same way with the same key:
//!
//! ```json
//! {"callbackId": "cb-7", "kind": "payment", "transactionNo": "217476000000000001",
//!  "amountMinor": 1352, "currency": "USD", "outcome": "approved", "walletRef": "W000000000003"}
//! ```
//!
//! Fields: `callbackId` (the wallet's id of the report; a duplicate carries the same id),
//! `kind`, `transactionNo`, `refundNo` (refunds), `cancelNo` (cancels, when the wallet knows
//! it), `amountMinor` and `currency` (the amount of the operation reported on), `outcome`,
//! `walletRef` and `message` (optional). Absent optional fields are left out.
//!
//! `kind` is `payment`, `refund` (with `refundNo`) or `cancel` (the transaction's close or
//! reverse; `cancelNo` when the wallet knows it); `outcome` is `approved` or `declined`.
//! The gateway acknowledges with any 2xx status once it has recorded the result or found it
//! already recorded; a callback may arrive more than once, late, after the synchronous answer
//! or after a query already told the result, so handling it must be idempotent. A 4xx answer
//! (other than 408 and 429) refuses it for good; anything else is retried a few times with
//! growing pauses and then kept as failed on the wallet's side.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tillgate_core::Secret;
use tillgate_domain::{ChannelOutcome, Currency, Money};

/// The header carrying the sender's unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-tillgate-timestamp";
/// The header carrying the hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub const SIGNATURE_HEADER: &str = "x-tillgate-signature";
/// How far a message's timestamp may be from the receiver's clock, in seconds.
pub const MAX_SKEW_S: u64 = 300;
/// The largest body either side sends or accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The shortest shared key accepted: shorter keys are guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// The wallet's endpoints.
pub const PAY_PATH: &str = "/v1/pay";
pub const CLOSE_PATH: &str = "/v1/close";
pub const REVERSE_PATH: &str = "/v1/reverse";
pub const REFUND_PATH: &str = "/v1/refund";
pub const QUERY_PATH: &str = "/v1/query";
pub const STATEMENT_PATH: &str = "/v1/statement";
/// The most lines of one statement page (each well under 320 bytes, so a page stays under the
/// body limit).
pub const STATEMENT_PAGE_LINES: usize = 200;

/// The longest transaction, refund or cancel number accepted.
pub const MAX_NUMBER_LEN: usize = 64;
/// The longest barcode or vendor name accepted.
pub const MAX_TEXT_LEN: usize = 128;

/// Why a message or a field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the {TIMESTAMP_HEADER} header is missing")]
    MissingTimestamp,
    #[error("the {TIMESTAMP_HEADER} header is not a unix time in seconds")]
    MalformedTimestamp,
    #[error("the timestamp is {skew_s} s away from this clock (at most {MAX_SKEW_S} s allowed)")]
    StaleTimestamp { skew_s: u64 },
    #[error("the {SIGNATURE_HEADER} header is missing")]
    MissingSignature,
    #[error("the {SIGNATURE_HEADER} header is not 64 hex characters")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the key must be hex of at least {MIN_KEY_BYTES} bytes")]
    BadKey,
    #[error("{0}")]
    BadField(String),
}

impl ProtocolError {
    /// The `error` code of the JSON error answer for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::StaleTimestamp { .. } => "stale_timestamp",
            ProtocolError::MissingTimestamp
            | ProtocolError::MalformedTimestamp
            | ProtocolError::MissingSignature
            | ProtocolError::MalformedSignature
            | ProtocolError::BadSignature
            | ProtocolError::BadKey => "bad_signature",
            ProtocolError::BadField(_) => "bad_request",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The MAC over `"<timestamp>.<body>"`, or `None` for a key HMAC refuses (it accepts every
/// length, so this does not happen; the caller treats it as a signature that never matches).
fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The signature of `body` sent at `timestamp` (unix seconds): lower-case hex of
/// HMAC-SHA256(key, `"<timestamp>.<body>"`).
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    mac(key, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks a message's signature headers against its exact body bytes, in constant time, and
/// its timestamp against `now_unix`. Returns the message's timestamp.
pub fn verify(
    key: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<i64, ProtocolError> {
    let timestamp_text = timestamp_header.ok_or(ProtocolError::MissingTimestamp)?;
    // Digits only: no sign, no white space, no exponent, so one timestamp has one spelling.
    if timestamp_text.is_empty()
        || timestamp_text.len() > 18
        || !timestamp_text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ProtocolError::MalformedTimestamp);
    }
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| ProtocolError::MalformedTimestamp)?;
    // A leading zero would sign a different text than the one the sender signed.
    if timestamp.to_string() != timestamp_text {
        return Err(ProtocolError::MalformedTimestamp);
    }
    let signature_text = signature_header.ok_or(ProtocolError::MissingSignature)?;
    if signature_text.len() != 64 {
        return Err(ProtocolError::MalformedSignature);
    }
    let signature = hex::decode(signature_text).map_err(|_| ProtocolError::MalformedSignature)?;
    let expected = mac(key, timestamp, body).ok_or(ProtocolError::BadSignature)?;
    expected
        .verify_slice(&signature)
        .map_err(|_| ProtocolError::BadSignature)?;
    // Checked after the signature, so a skew is reported only for an authentic message (an
    // operator then knows to fix a clock, not a key).
    let skew_s = now_unix.abs_diff(timestamp);
    if skew_s > MAX_SKEW_S {
        return Err(ProtocolError::StaleTimestamp { skew_s });
    }
    Ok(timestamp)
}

/// [`verify`] with the headers taken from an HTTP header map (the gateway's callback endpoint
/// and the simulator use it).
pub fn verify_headers(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<i64, ProtocolError> {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    verify(
        key,
        get(TIMESTAMP_HEADER),
        get(SIGNATURE_HEADER),
        body,
        now_unix,
    )
}

/// The two signature headers for `body` sent at `timestamp`.
pub fn signature_headers(key: &[u8], timestamp: i64, body: &[u8]) -> [(&'static str, String); 2] {
    [
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, sign(key, timestamp, body)),
    ]
}

/// Parses a shared key written as hex (the command line and config files carry it so).
pub fn parse_key_hex(text: &str) -> Result<Secret<Vec<u8>>, ProtocolError> {
    let bytes = hex::decode(text.trim()).map_err(|_| ProtocolError::BadKey)?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(ProtocolError::BadKey);
    }
    Ok(Secret::new(bytes))
}

/// The amount of a message as `Money`: a known currency and a positive number of minor units
/// no larger than the domain's maximum.
pub fn money_of(amount_minor: i64, currency: &str) -> Result<Money, ProtocolError> {
    let currency = Currency::from_code(currency)
        .ok_or_else(|| ProtocolError::BadField(format!("unknown currency {currency:?}")))?;
    match Money::from_minor(amount_minor, currency) {
        Some(m) if !m.is_zero() => Ok(m),
        _ => Err(ProtocolError::BadField(format!(
            "amountMinor must be a positive integer of minor units, got {amount_minor}"
        ))),
    }
}

/// Checks a transaction, refund or cancel number: 1 to 64 printable ASCII characters.
pub fn check_number(field: &str, value: &str) -> Result<(), ProtocolError> {
    if value.is_empty()
        || value.len() > MAX_NUMBER_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ProtocolError::BadField(format!(
            "{field} must be 1 to {MAX_NUMBER_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), ProtocolError> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_TEXT_LEN => Err(ProtocolError::BadField(format!(
            "{field} must be 1 to {MAX_TEXT_LEN} bytes when present"
        ))),
        _ => Ok(()),
    }
}

/// `POST /v1/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    pub transaction_no: String,
    pub amount_minor: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

impl PayRequest {
    /// Checks every field; the amount comes back as `Money`.
    pub fn check(&self) -> Result<Money, ProtocolError> {
        check_number("transactionNo", &self.transaction_no)?;
        check_text("barcode", self.barcode.as_deref())?;
        check_text("vendor", self.vendor.as_deref())?;
        money_of(self.amount_minor, &self.currency)
    }
}

/// `POST /v1/close` and `POST /v1/reverse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub transaction_no: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The gateway's cancel number, when it sends one; the wallet only records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_no: Option<String>,
}

impl CancelRequest {
    pub fn check(&self) -> Result<Money, ProtocolError> {
        check_number("transactionNo", &self.transaction_no)?;
        if let Some(no) = &self.cancel_no {
            check_number("cancelNo", no)?;
        }
        money_of(self.amount_minor, &self.currency)
    }
}

/// `POST /v1/refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    pub transaction_no: String,
    pub refund_no: String,
    pub amount_minor: i64,
    pub currency: String,
}

impl RefundRequest {
    pub fn check(&self) -> Result<Money, ProtocolError> {
        check_number("transactionNo", &self.transaction_no)?;
        check_number("refundNo", &self.refund_no)?;
        money_of(self.amount_minor, &self.currency)
    }
}

/// Which earlier operation a query asks about: `"payment"`, `{"refund": "<refundNo>"}` or
/// `{"cancel": "<cancelNo>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QueryOperation {
    Payment,
    Refund(String),
    Cancel(String),
}

/// `POST /v1/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    pub transaction_no: String,
    pub operation: QueryOperation,
}

impl QueryRequest {
    pub fn check(&self) -> Result<(), ProtocolError> {
        check_number("transactionNo", &self.transaction_no)?;
        match &self.operation {
            QueryOperation::Payment => Ok(()),
            QueryOperation::Refund(no) => check_number("refundNo", no),
            QueryOperation::Cancel(no) => check_number("cancelNo", no),
        }
    }
}

/// A request for one page of the wallet's statement of a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatementRequest {
    /// The UTC calendar day, `YYYY-MM-DD`.
    pub date: String,
    /// How many lines of the day were already read (absent: from the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

impl StatementRequest {
    /// The day asked for.
    pub fn check(&self) -> Result<chrono::NaiveDate, ProtocolError> {
        chrono::NaiveDate::parse_from_str(&self.date, "%Y-%m-%d")
            .map_err(|_| ProtocolError::BadField("date must be YYYY-MM-DD".into()))
    }
}

/// One operation on the wallet's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementLine {
    /// `pay`, `close`, `reverse` or `refund`.
    pub operation: String,
    pub transaction_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_no: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub outcome: Outcome,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_ref: Option<String>,
}

/// One page of the wallet's statement of a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub date: String,
    pub lines: Vec<StatementLine>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// What the wallet says became of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The money moved.
    Approved,
    /// The money did not move and will not.
    Declined,
    /// Not decided yet; a callback or a later query tells.
    Pending,
}

impl Outcome {
    /// The channel port's outcome: pending is unknown to the gateway.
    pub fn to_channel(self) -> ChannelOutcome {
        match self {
            Outcome::Approved => ChannelOutcome::Approved,
            Outcome::Declined => ChannelOutcome::Declined,
            Outcome::Pending => ChannelOutcome::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::Pending => "pending",
        }
    }
}

/// The wallet's `200` answer to every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The request's, repeated so an answer cannot be taken for another order's.
    pub transaction_no: String,
    /// The request's, for refunds and refund queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The amount the wallet recorded for the operation, when it knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A JSON error answer: `{"error": "<code>", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// What a callback reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallbackKind {
    Payment,
    Refund,
    Cancel,
}

/// The wallet's asynchronous report of a result that came later, POSTed to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// The wallet's id of this report; a duplicate carries the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_id: Option<String>,
    pub kind: CallbackKind,
    pub transaction_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_no: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Callback {
    /// Checks the fields a gateway relies on and returns the amount as `Money`. A `pending`
    /// outcome is refused: a callback reports a decision.
    pub fn check(&self) -> Result<Money, ProtocolError> {
        check_number("transactionNo", &self.transaction_no)?;
        match (self.kind, &self.refund_no) {
            (CallbackKind::Refund, Some(no)) => check_number("refundNo", no)?,
            (CallbackKind::Refund, None) => {
                return Err(ProtocolError::BadField(
                    "a refund callback needs refundNo".into(),
                ))
            }
            _ => {}
        }
        if let Some(no) = &self.cancel_no {
            check_number("cancelNo", no)?;
        }
        if self.outcome == Outcome::Pending {
            return Err(ProtocolError::BadField(
                "a callback's outcome is approved or declined".into(),
            ));
        }
        money_of(self.amount_minor, &self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"tillgate-wallet-test-key-0001";
    const TS: i64 = 1_767_225_600;
    const BODY: &str = r#"{"transactionNo":"217476000000000001","amountMinor":1300,"currency":"USD","barcode":"281234567890123456","vendor":"alipay"}"#;
    const SIGNATURE: &str = "c8447229d4714d6b5d73477569d08ceac1d36ef28b6c830a11b4eaf03075f1dd";

    #[test]
    fn the_signature_matches_the_written_down_vector() {
        // Computed independently with
        // `printf '%s' "1767225600.$BODY" | openssl dgst -sha256 -hmac tillgate-wallet-test-key-0001`.
        assert_eq!(sign(KEY, TS, BODY.as_bytes()), SIGNATURE);
        assert_eq!(
            verify(
                KEY,
                Some("1767225600"),
                Some(SIGNATURE),
                BODY.as_bytes(),
                TS
            ),
            Ok(TS)
        );
        // Upper-case hex is the same signature.
        assert_eq!(
            verify(
                KEY,
                Some("1767225600"),
                Some(&SIGNATURE.to_uppercase()),
                BODY.as_bytes(),
                TS + 10
            ),
            Ok(TS)
        );
        // The vector parses as a pay request.
        let pay: PayRequest = serde_json::from_str(BODY).unwrap();
        assert_eq!(pay.check().unwrap().minor(), 1300);
    }

    #[test]
    fn a_changed_byte_key_or_timestamp_is_refused() {
        let mut body = BODY.as_bytes().to_vec();
        body[40] ^= 1;
        assert_eq!(
            verify(KEY, Some("1767225600"), Some(SIGNATURE), &body, TS),
            Err(ProtocolError::BadSignature)
        );
        assert_eq!(
            verify(
                b"another-key-of-enough-bytes",
                Some("1767225600"),
                Some(SIGNATURE),
                BODY.as_bytes(),
                TS
            ),
            Err(ProtocolError::BadSignature)
        );
        assert_eq!(
            verify(
                KEY,
                Some("1767225601"),
                Some(SIGNATURE),
                BODY.as_bytes(),
                TS
            ),
            Err(ProtocolError::BadSignature)
        );
        // Re-encoding the JSON (here: a space after a colon) is a different body.
        let spaced = BODY.replacen("\":1300", "\": 1300", 1);
        assert_eq!(
            verify(
                KEY,
                Some("1767225600"),
                Some(SIGNATURE),
                spaced.as_bytes(),
                TS
            ),
            Err(ProtocolError::BadSignature)
        );
    }

    #[test]
    fn timestamps_more_than_five_minutes_away_are_refused() {
        let ok = |now| {
            verify(
                KEY,
                Some("1767225600"),
                Some(SIGNATURE),
                BODY.as_bytes(),
                now,
            )
        };
        assert!(ok(TS + 300).is_ok());
        assert!(ok(TS - 300).is_ok());
        assert_eq!(
            ok(TS + 301),
            Err(ProtocolError::StaleTimestamp { skew_s: 301 })
        );
        assert_eq!(
            ok(TS - 301),
            Err(ProtocolError::StaleTimestamp { skew_s: 301 })
        );
    }

    #[test]
    fn malformed_headers_have_their_own_errors() {
        let v = |ts: Option<&str>, sig: Option<&str>| verify(KEY, ts, sig, BODY.as_bytes(), TS);
        assert_eq!(
            v(None, Some(SIGNATURE)),
            Err(ProtocolError::MissingTimestamp)
        );
        assert_eq!(
            v(Some("1767225600"), None),
            Err(ProtocolError::MissingSignature)
        );
        for bad in [
            "",
            "-1767225600",
            "+1767225600",
            " 1767225600",
            "1.7e9",
            "01767225600",
            "99999999999999999999",
        ] {
            assert_eq!(
                v(Some(bad), Some(SIGNATURE)),
                Err(ProtocolError::MalformedTimestamp),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "zz",
            &SIGNATURE[..63],
            &format!("{SIGNATURE}00"),
            &SIGNATURE.replace('c', "g"),
        ] {
            assert_eq!(
                v(Some("1767225600"), Some(bad)),
                Err(ProtocolError::MalformedSignature),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn headers_are_read_from_a_header_map() {
        let mut headers = HeaderMap::new();
        for (name, value) in signature_headers(KEY, TS, BODY.as_bytes()) {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(verify_headers(KEY, &headers, BODY.as_bytes(), TS), Ok(TS));
        assert_eq!(headers.get("X-Tillgate-Signature").unwrap(), SIGNATURE);
    }

    #[test]
    fn keys_are_hex_of_at_least_sixteen_bytes() {
        assert_eq!(
            parse_key_hex("74696c6c676174652d77616c6c65742d746573742d6b65792d30303031")
                .unwrap()
                .expose(),
            &KEY.to_vec()
        );
        assert_eq!(parse_key_hex("00ff").unwrap_err(), ProtocolError::BadKey);
        assert_eq!(parse_key_hex("not hex").unwrap_err(), ProtocolError::BadKey);
    }

    #[test]
    fn query_operations_have_the_documented_shapes() {
        let q = |op| {
            serde_json::to_string(&QueryRequest {
                transaction_no: "1".into(),
                operation: op,
            })
            .unwrap()
        };
        assert_eq!(
            q(QueryOperation::Payment),
            r#"{"transactionNo":"1","operation":"payment"}"#
        );
        assert_eq!(
            q(QueryOperation::Refund("r1".into())),
            r#"{"transactionNo":"1","operation":{"refund":"r1"}}"#
        );
        assert_eq!(
            q(QueryOperation::Cancel("c1".into())),
            r#"{"transactionNo":"1","operation":{"cancel":"c1"}}"#
        );
    }

    #[test]
    fn amounts_are_positive_integers_of_a_known_currency() {
        assert_eq!(money_of(1, "USD").unwrap().minor(), 1);
        assert!(money_of(0, "USD").is_err());
        assert!(money_of(-5, "USD").is_err());
        assert!(money_of(i64::MAX, "USD").is_err());
        assert!(money_of(100, "usd").is_err());
        assert!(money_of(100, "XYZ").is_err());
        // A float is not an integer of minor units.
        assert!(serde_json::from_str::<PayRequest>(
            r#"{"transactionNo":"1","amountMinor":13.5,"currency":"USD"}"#
        )
        .is_err());
    }

    #[test]
    fn a_callback_reports_a_decision_about_a_named_order() {
        let mut cb: Callback = serde_json::from_str(
            r#"{"kind":"refund","transactionNo":"1","refundNo":"2","amountMinor":500,"currency":"USD","outcome":"approved"}"#,
        )
        .unwrap();
        assert_eq!(cb.check().unwrap().minor(), 500);
        cb.outcome = Outcome::Pending;
        assert!(cb.check().is_err());
        cb.outcome = Outcome::Declined;
        cb.refund_no = None;
        assert!(cb.check().is_err());
    }
}
