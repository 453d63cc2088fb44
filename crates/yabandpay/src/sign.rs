//! The YabandPay sign: `hex(HMAC_SHA256(secret, k=v&k=v…))` over the top-level `user`,
//! `method` and `time` merged with every `data` key, sorted by key bytes, values raw.
//!
//! The official `Yabandpay/Api` library signs empty values (`demo=`), a third-party PHP client
//! (tig-shop) drops every value PHP calls `empty()` (`""`, `"0"`, `false`, null), others drop
//! only empty strings. The gateway accepts a signature in any of those forms, comparing each
//! candidate in constant time, and signs what it sends in the one form they all agree on:
//! no empty value, no `"0"`, nothing nested.
//!
//! The request's `time` must be fresh: seconds or milliseconds since the epoch (the docs send
//! seconds, the Java and JavaScript samples milliseconds), within a window around now.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use tillgate_wire::Value;

/// How a signer treats empty values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empties {
    /// Every key is signed; empty strings and nulls as `k=` (the official PHP library).
    Keep,
    /// Empty strings and nulls are left out.
    Skip,
    /// Everything PHP's `empty()` is true for is left out: `""`, `"0"`, `false`, null
    /// (tig-shop's `getSign`).
    SkipPhpEmpty,
}

impl Empties {
    pub const ALL: [Empties; 3] = [Empties::Keep, Empties::Skip, Empties::SkipPhpEmpty];

    fn keeps(self, value: &Value) -> bool {
        match (self, value) {
            (Empties::Keep, _) => true,
            (_, Value::Null) => false,
            (Empties::Skip, v) => !v.is_empty_text(),
            (Empties::SkipPhpEmpty, Value::Bool(b)) => *b,
            (Empties::SkipPhpEmpty, Value::Text(s) | Value::Number(s)) => !s.is_empty() && s != "0",
        }
    }
}

/// The text a value is signed as: the literal text that was sent (a JSON number keeps its
/// digits, "0.10" stays "0.10"); booleans as JSON writes them; null as nothing.
pub fn value_text(value: &Value) -> &str {
    match value {
        Value::Text(s) | Value::Number(s) => s,
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Null => "",
    }
}

/// The signed string: the kept entries sorted by key bytes, `k=v` joined with `&`, no
/// encoding. `sign` itself is never part of it.
pub fn canonical(entries: &[(&str, &Value)], empties: Empties) -> String {
    let mut kept: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(k, v)| *k != "sign" && empties.keeps(v))
        .map(|(k, v)| (*k, value_text(v)))
        .collect();
    kept.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(kept.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Lower-case hex of HMAC-SHA256 of `text` keyed with `secret`.
pub fn hmac_hex(secret: &str, text: &str) -> String {
    // HMAC takes a key of any length, so this never fails; the fallback keeps it panic-free.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(text.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The sign of text fields the gateway sends (a notification's `data`): all of them, sorted.
/// Callers leave out empty values themselves, so every verifier's variant agrees.
pub fn sign_fields(fields: &[(String, String)], secret: &str) -> String {
    let values: Vec<Value> = fields.iter().map(|(_, v)| Value::Text(v.clone())).collect();
    let entries: Vec<(&str, &Value)> = fields
        .iter()
        .zip(&values)
        .map(|((k, _), v)| (k.as_str(), v))
        .collect();
    hmac_hex(secret, &canonical(&entries, Empties::Keep))
}

/// True when `signature` (any case) is the sign of `entries` in any of the empty-value forms.
/// Every distinct candidate is computed and compared in constant time, so how far a forged
/// signature matched is not visible in the answer's timing.
pub fn verify(entries: &[(&str, &Value)], secret: &str, signature: &str) -> bool {
    let given = signature.to_ascii_lowercase();
    let mut matched = Choice::from(0);
    let mut tried: Vec<String> = Vec::with_capacity(Empties::ALL.len());
    for empties in Empties::ALL {
        let text = canonical(entries, empties);
        if tried.contains(&text) {
            continue;
        }
        let candidate = hmac_hex(secret, &text);
        matched |= candidate.as_bytes().ct_eq(given.as_bytes());
        tried.push(text);
    }
    matched.into()
}

/// A `time` above this is in milliseconds (10^11 seconds is the year 5138).
pub const MILLIS_ABOVE: i64 = 100_000_000_000;

/// Why a request's `time` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("time must be a whole number of seconds or milliseconds since 1970")]
    Malformed,
    #[error("time is {off_s} s away from the gateway's clock; at most {window_s} s is allowed")]
    Stale { off_s: i64, window_s: u64 },
}

/// The instant a `time` value names, seconds or milliseconds.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, TimeError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimeError::Malformed);
    }
    let n: i64 = text.parse().map_err(|_| TimeError::Malformed)?;
    let at = if n > MILLIS_ABOVE {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    };
    at.ok_or(TimeError::Malformed)
}

/// Checks that `time` is within `window` of `now`, either side (a client clock may run ahead).
pub fn check_time(
    text: &str,
    now: DateTime<Utc>,
    window: std::time::Duration,
) -> Result<(), TimeError> {
    let at = parse_time(text)?;
    let off_ms = (now - at).num_milliseconds();
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if off_ms.checked_abs().is_none_or(|off| off > window_ms) {
        return Err(TimeError::Stale {
            off_s: off_ms / 1000,
            window_s: window.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The docs' secret (a public mini-program sample); it reproduces the user-016683 vectors.
    const DOCS_SECRET: &str = "62184c09df1aeb63239e07079875be81";

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn the_docs_query_order_vector_verifies() {
        let (user, method, time, trade) = (
            text("016683"),
            text("v3.QueryOrder"),
            Value::Number("1546588959".into()),
            text("a8d9be05-8b39-a766-dad0-553b0640d06a"),
        );
        let entries = [
            ("user", &user),
            ("method", &method),
            ("time", &time),
            ("trade_id", &trade),
        ];
        let expected = "method=v3.QueryOrder&time=1546588959&trade_id=a8d9be05-8b39-a766-dad0-553b0640d06a&user=016683";
        assert_eq!(canonical(&entries, Empties::Keep), expected);
        let sign = "5c8dada0e7369f2b0e42887bda855a278f064b5d34c5aa4bfd03b74310c50102";
        assert_eq!(hmac_hex(DOCS_SECRET, expected), sign);
        assert!(verify(&entries, DOCS_SECRET, sign));
        assert!(verify(&entries, DOCS_SECRET, &sign.to_ascii_uppercase()));
        assert!(!verify(&entries, "another-secret", sign));
        assert!(!verify(&entries, DOCS_SECRET, &sign[..63]));
    }

    #[test]
    fn seed_003s_string_is_the_canonical_form_of_its_request() {
        // Seed 003's sign does not verify with the docs' secret (protocols.md: the POS TID
        // vectors use another key), so only its string is checked.
        let (user, method, time) = (
            text("T125119061"),
            text("v3.POSReversal"),
            Value::Number("1555498137".into()),
        );
        let (tid, trade, request) = (
            text("T125119061"),
            text("4a49ffb3-a30f-ba92-9422-1969afb6f121"),
            text("a7z1lox4l6z6mdx1udgn5gtezasze1x0"),
        );
        let entries = [
            ("user", &user),
            ("sign", &text("ignored")),
            ("method", &method),
            ("time", &time),
            ("tid", &tid),
            ("trade_id", &trade),
            ("request_id", &request),
        ];
        assert_eq!(
            canonical(&entries, Empties::Keep),
            "method=v3.POSReversal&request_id=a7z1lox4l6z6mdx1udgn5gtezasze1x0&tid=T125119061&time=1555498137&trade_id=4a49ffb3-a30f-ba92-9422-1969afb6f121&user=T125119061"
        );
        assert_ne!(
            hmac_hex(DOCS_SECRET, &canonical(&entries, Empties::Keep)),
            "81617629b3f26a88ec7cdf8f4b989fa0368d40be34969af3958cbcb94289c544"
        );
    }

    #[test]
    fn every_empty_value_form_verifies_and_no_other() {
        let (a, empty, zero, null, no) = (
            text("x y"),
            text(""),
            text("0"),
            Value::Null,
            Value::Bool(false),
        );
        let entries = [
            ("b", &a),
            ("demo", &empty),
            ("tip_amount", &zero),
            ("cancel_url", &null),
            ("flag", &no),
        ];
        assert_eq!(
            canonical(&entries, Empties::Keep),
            "b=x y&cancel_url=&demo=&flag=false&tip_amount=0"
        );
        assert_eq!(
            canonical(&entries, Empties::Skip),
            "b=x y&flag=false&tip_amount=0"
        );
        assert_eq!(canonical(&entries, Empties::SkipPhpEmpty), "b=x y");
        for form in Empties::ALL {
            let sign = hmac_hex("k", &canonical(&entries, form));
            assert!(verify(&entries, "k", &sign), "{form:?}");
        }
        // Keys sort by bytes: upper case before lower case, `_` between them.
        let (one, two, three) = (text("1"), text("2"), text("3"));
        let sorted = [("a_b", &one), ("aB", &two), ("ab", &three)];
        assert_eq!(canonical(&sorted, Empties::Keep), "aB=2&a_b=1&ab=3");
    }

    #[test]
    fn outbound_fields_sign_as_the_docs_do() {
        let fields = vec![
            ("user".to_owned(), "016683".to_owned()),
            (
                "trade_id".to_owned(),
                "a8d9be05-8b39-a766-dad0-553b0640d06a".to_owned(),
            ),
            ("time".to_owned(), "1546588959".to_owned()),
            ("method".to_owned(), "v3.QueryOrder".to_owned()),
        ];
        assert_eq!(
            sign_fields(&fields, DOCS_SECRET),
            "5c8dada0e7369f2b0e42887bda855a278f064b5d34c5aa4bfd03b74310c50102"
        );
    }

    #[test]
    fn time_is_seconds_or_milliseconds_within_the_window() {
        let now = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let window = Duration::from_secs(300);
        assert!(check_time("1795000000", now, window).is_ok());
        assert!(check_time("1795000000000", now, window).is_ok());
        assert!(check_time("1795000299", now, window).is_ok());
        assert!(check_time("1794999700", now, window).is_ok());
        assert_eq!(
            check_time("1794999699", now, window),
            Err(TimeError::Stale {
                off_s: 301,
                window_s: 300
            })
        );
        assert!(matches!(
            check_time("1795000301000", now, window),
            Err(TimeError::Stale { .. })
        ));
        for bad in [
            "",
            "-1",
            "1.5",
            "17950000e3",
            "99999999999999999999999",
            " 1",
        ] {
            assert_eq!(
                check_time(bad, now, window),
                Err(TimeError::Malformed),
                "{bad}"
            );
        }
        // A window wider than any clock never overflows.
        assert!(check_time("1", now, Duration::MAX).is_ok());
        assert_eq!(
            parse_time("100000000000").unwrap().timestamp(),
            100_000_000_000
        );
        assert_eq!(
            parse_time("100000000001").unwrap().timestamp_millis(),
            100_000_000_001
        );
    }
}
