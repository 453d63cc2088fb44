//! Fuzzing the wallet protocol's readers (issue 15, part 4): the signature check of every
//! message (`verify`) on arbitrary headers and bodies and on mutations of real signed ones,
//! and the messages (requests, answers, callbacks) parsed and checked from arbitrary and
//! mutated JSON. Nothing panics; only the exact signed bytes verify; whatever `check` accepts
//! is a well-formed message with a positive amount.

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use tillgate_testkit::fuzz;
use tillgate_wallet::protocol::{
    self, Answer, Callback, CancelRequest, PayRequest, ProtocolError, QueryRequest, RefundRequest,
};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_795_000_000;

/// Real messages of every kind, as the gateway and the wallet send them.
const MESSAGES: &[&[u8]] = &[
    br#"{"transactionNo":"217476000000000001","amountMinor":1352,"currency":"USD","barcode":"281234567890123456","vendor":"alipay"}"#,
    br#"{"transactionNo":"217476000000000001","amountMinor":1352,"currency":"USD","cancelNo":"217476000000000009"}"#,
    br#"{"transactionNo":"217476000000000001","refundNo":"217476000000000002","amountMinor":100,"currency":"JPY"}"#,
    br#"{"transactionNo":"217476000000000001","operation":"payment"}"#,
    br#"{"transactionNo":"217476000000000001","operation":{"refund":"217476000000000002"}}"#,
    br#"{"transactionNo":"217476000000000001","operation":{"cancel":"c1"}}"#,
    br#"{"transactionNo":"217476000000000001","refundNo":"217476000000000002","outcome":"approved","walletRef":"W1","message":"ok","amountMinor":1300,"currency":"USD"}"#,
    br#"{"callbackId":"cb-7","kind":"payment","transactionNo":"217476000000000001","amountMinor":1352,"currency":"USD","outcome":"approved","walletRef":"W000000000003"}"#,
    br#"{"callbackId":"cb-8","kind":"refund","transactionNo":"217476000000000001","refundNo":"217476000000000002","amountMinor":5,"currency":"EUR","outcome":"declined","message":"no funds"}"#,
    br#"{"kind":"cancel","transactionNo":"217476000000000001","cancelNo":"217476000000000009","amountMinor":1352,"currency":"USD","outcome":"approved"}"#,
];

/// Parses `body` as a `T` and checks it; an accepted message serializes and reads back.
fn read<T>(
    body: &[u8],
    check: impl Fn(&T) -> Result<(), ProtocolError>,
) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(message) = serde_json::from_slice::<T>(body) {
        if check(&message).is_ok() {
            let again: T = serde_json::from_slice(&serde_json::to_vec(&message).unwrap()).unwrap();
            prop_assert_eq!(again, message);
        }
    }
    Ok(())
}

fn read_all(body: &[u8]) -> Result<(), TestCaseError> {
    let money = |m: Result<tillgate_domain::Money, ProtocolError>| {
        m.map(|m| assert!(m.minor() > 0, "a zero amount passed the check"))
    };
    read::<PayRequest>(body, |m| money(m.check()))?;
    read::<CancelRequest>(body, |m| money(m.check()))?;
    read::<RefundRequest>(body, |m| money(m.check()))?;
    read::<QueryRequest>(body, |m| m.check())?;
    read::<Callback>(body, |m| money(m.check()))?;
    read::<Answer>(body, |_| Ok(()))?;
    Ok(())
}

#[test]
fn messages_parse_and_check_without_panicking() {
    fuzz::run(
        "wallet messages bytes",
        proptest::collection::vec(any::<u8>(), 0..300),
        |body| read_all(&body),
    );
    fuzz::run(
        "wallet messages mutated",
        (0..MESSAGES.len(), fuzz::mutations()),
        |(i, m)| read_all(&fuzz::apply(MESSAGES[i], &m)),
    );
}

#[test]
fn message_fields_at_their_limits_are_checked_without_panicking() {
    let strategy = (
        0..MESSAGES.len(),
        proptest::collection::vec(
            fuzz::field_op(&[
                "transactionNo",
                "refundNo",
                "cancelNo",
                "amountMinor",
                "currency",
                "outcome",
                "kind",
                "operation",
            ]),
            1..4,
        ),
    );
    fuzz::run("wallet message fields", strategy, |(i, ops)| {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(MESSAGES[i]).unwrap();
        let fields = fuzz::apply_ops(object.into_iter().collect(), &ops);
        let body =
            serde_json::to_vec(&fields.into_iter().collect::<serde_json::Map<_, _>>()).unwrap();
        read_all(&body)
    });
}

#[test]
fn only_the_exact_signed_bytes_verify() {
    let strategy = (0..MESSAGES.len(), fuzz::mutations(), NOW - 400..NOW + 400);
    fuzz::run("wallet verify mutated", strategy, |(i, m, at)| {
        let body = fuzz::apply(MESSAGES[i], &m);
        let signature = protocol::sign(KEY, at, MESSAGES[i]);
        let answer = protocol::verify(KEY, Some(&at.to_string()), Some(&signature), &body, NOW);
        if body == MESSAGES[i] {
            if (NOW - at).abs() <= protocol::MAX_SKEW_S as i64 {
                prop_assert_eq!(answer, Ok(at));
            } else {
                let is_stale = matches!(answer, Err(ProtocolError::StaleTimestamp { .. }));
                prop_assert!(is_stale, "{:?}", answer);
            }
        } else {
            prop_assert_eq!(answer, Err(ProtocolError::BadSignature));
        }
        Ok(())
    });
    let headers = (
        proptest::option::of(fuzz::weird_value()),
        proptest::option::of(prop_oneof!["[0-9a-fA-F]{60,68}", fuzz::weird_value()]),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 0..40),
    );
    fuzz::run("wallet verify headers", headers, |(ts, sig, body, key)| {
        let answer = protocol::verify(&key, ts.as_deref(), sig.as_deref(), &body, NOW);
        if let Ok(at) = answer {
            let expected = protocol::sign(&key, at, &body);
            prop_assert_eq!(sig.map(|s| s.to_ascii_lowercase()), Some(expected));
        }
        let _ = protocol::parse_key_hex(ts.as_deref().unwrap_or(""));
        Ok(())
    });
}
