//! Bad input gets Pockyt's envelope with a precise ret_code, never a 500, and changes nothing.

use crate::helpers::*;
use reqwest::Method;

const JSON: Option<&str> = Some("application/json");

/// (what, path, signed parameters, expected ret_code)
type SignedCase<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, &'a str);
/// (what, method, path, content type, body, expected HTTP status, expected ret_code)
type RawCase<'a> = (
    &'a str,
    Method,
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

async fn every_malformed_request_gets_a_precise_code_and_changes_nothing(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("victim"), "100.00").await;
    let bad_ref = reference("never-added");
    let refund = |amount: &'static str, currency: &'static str, settle: &'static str| {
        vec![
            ("transactionNo", no.clone()),
            ("refundAmount", amount.to_string()),
            ("currency", currency.to_string()),
            ("settleCurrency", settle.to_string()),
        ]
    };
    let add = |amount: &'static str, currency: &'static str| {
        vec![
            ("amount", amount.to_string()),
            ("currency", currency.to_string()),
            ("settleCurrency", "USD".to_string()),
            ("reference", bad_ref.clone()),
        ]
    };
    let signed_cases: Vec<SignedCase> = vec![
        (
            "too many decimals",
            "/app-instore/v3/add",
            add("1.001", "USD"),
            "000023",
        ),
        (
            "negative amount",
            "/app-instore/v3/add",
            add("-1", "USD"),
            "000023",
        ),
        (
            "zero amount",
            "/app-instore/v3/add",
            add("0", "USD"),
            "000023",
        ),
        (
            "overflowing amount",
            "/app-instore/v3/add",
            add("99999999999999999999", "USD"),
            "000023",
        ),
        (
            "garbage amount",
            "/app-instore/v3/add",
            add("12abc", "USD"),
            "000023",
        ),
        (
            "unknown currency",
            "/app-instore/v3/add",
            add("1", "XYZ"),
            "000023",
        ),
        (
            "missing reference",
            "/app-instore/v3/add",
            vec![
                ("amount", "1".into()),
                ("currency", "USD".into()),
                ("settleCurrency", "USD".into()),
            ],
            "000020",
        ),
        (
            "missing transactionNo and reference",
            "/app-data-search/v3/tran-query",
            vec![],
            "000020",
        ),
        (
            "both transactionNo and reference",
            "/app-data-search/v3/tran-query",
            vec![("transactionNo", no.clone()), ("reference", "x".into())],
            "000023",
        ),
        (
            "unknown transaction",
            "/app-data-search/v3/refund",
            vec![
                ("transactionNo", "1".into()),
                ("refundAmount", "1".into()),
                ("currency", "USD".into()),
                ("settleCurrency", "USD".into()),
            ],
            "000021",
        ),
        (
            "refund currency mismatch",
            "/app-data-search/v3/refund",
            refund("1", "EUR", "USD"),
            "000022",
        ),
        (
            "refund settle currency mismatch",
            "/app-data-search/v3/refund",
            refund("1", "USD", "EUR"),
            "000022",
        ),
        (
            "refund with too many decimals",
            "/app-data-search/v3/refund",
            refund("0.001", "USD", "USD"),
            "000023",
        ),
        (
            "negative refund",
            "/app-data-search/v3/refund",
            refund("-5", "USD", "USD"),
            "000023",
        ),
        (
            "zero refund",
            "/app-data-search/v3/refund",
            refund("0.00", "USD", "USD"),
            "000023",
        ),
        (
            "over-refund",
            "/app-data-search/v3/refund",
            refund("100.01", "USD", "USD"),
            "000040",
        ),
        (
            "pay without a barcode",
            "/app-instore/v3/pay",
            vec![("transactionNo", no.clone())],
            "000020",
        ),
        (
            "pay of a paid transaction with another barcode",
            "/app-instore/v3/pay",
            vec![
                ("transactionNo", no.clone()),
                ("paymentBarcode", "999".into()),
            ],
            "000040",
        ),
        (
            "timeout out of range",
            "/app-instore/v3/add",
            {
                let mut a = add("1", "USD");
                a.push(("timeout", "0".into()));
                a
            },
            "000023",
        ),
        (
            "ipnUrl that is not http",
            "/app-instore/v3/add",
            {
                let mut a = add("1", "USD");
                a.push(("ipnUrl", "ftp://example.com/x".into()));
                a
            },
            "000023",
        ),
    ];
    for (what, path, params, code) in &signed_cases {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = pos.call(path, &params).await;
        assert_eq!(answer["ret_code"], *code, "{what}: {answer}");
        assert!(
            answer["ret_msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(
            answer.get("result").is_none(),
            "{what}: an error carries no result"
        );
    }

    let sign = verify_sign(
        &[
            ("merchantNo", MERCHANT_NO),
            ("storeNo", STORE_NO),
            ("transactionNo", &no),
        ],
        TOKEN,
    );
    let raw_cases: Vec<RawCase> = vec![
        ("bad JSON", Method::POST, "/app-data-search/v3/tran-query", JSON, b"{\"merchantNo\":".to_vec(), 200, "000023"),
        ("JSON that is not an object", Method::POST, "/app-data-search/v3/tran-query", JSON, b"[1,2]".to_vec(), 200, "000023"),
        ("a nested value", Method::POST, "/app-data-search/v3/tran-query", JSON, br#"{"merchantNo":{"a":1}}"#.to_vec(), 200, "000023"),
        ("empty body", Method::POST, "/app-data-search/v3/tran-query", JSON, Vec::new(), 200, "000020"),
        ("missing verifySign", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":"{MERCHANT_NO}","storeNo":"{STORE_NO}","transactionNo":"{no}"}}"#).into_bytes(), 200, "000020"),
        ("bad signature", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":"{MERCHANT_NO}","storeNo":"{STORE_NO}","transactionNo":"{no}","verifySign":"0123456789abcdef0123456789abcdef"}}"#).into_bytes(), 200, "000030"),
        ("signature of other parameters", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":"{MERCHANT_NO}","storeNo":"{STORE_NO}","transactionNo":"{no}1","verifySign":"{sign}"}}"#).into_bytes(), 200, "000030"),
        ("unknown merchant", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":"999999","storeNo":"{STORE_NO}","transactionNo":"{no}","verifySign":"{sign}"}}"#).into_bytes(), 200, "000030"),
        ("unknown store", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":"{MERCHANT_NO}","storeNo":"1","transactionNo":"{no}","verifySign":"{sign}"}}"#).into_bytes(), 200, "000030"),
        ("a number where a string is expected", Method::POST, "/app-data-search/v3/tran-query", JSON,
            format!(r#"{{"merchantNo":{MERCHANT_NO},"storeNo":"{STORE_NO}","transactionNo":"{no}","verifySign":"{sign}"}}"#).into_bytes(), 200, "000100"),
        ("a boolean amount", Method::POST, "/app-instore/v3/add", JSON,
            { let p = [("merchantNo", MERCHANT_NO), ("storeNo", STORE_NO), ("amount", "true"), ("currency", "USD"), ("settleCurrency", "USD"), ("reference", bad_ref.as_str())];
              let s = verify_sign(&p, TOKEN);
              format!(r#"{{"merchantNo":"{MERCHANT_NO}","storeNo":"{STORE_NO}","amount":true,"currency":"USD","settleCurrency":"USD","reference":"{bad_ref}","verifySign":"{s}"}}"#).into_bytes() }, 200, "000023"),
        ("body over 64 KiB", Method::POST, "/app-instore/v3/add", JSON, vec![b' '; 70 * 1024], 413, "000023"),
        ("unknown path", Method::POST, "/app-instore/v3/nothing", JSON, b"{}".to_vec(), 404, "000010"),
        ("wrong method", Method::GET, "/app-instore/v3/add", None, Vec::new(), 405, "000010"),
    ];
    for (what, method, path, ct, body, status, code) in raw_cases {
        let (got_status, answer) = app.raw(method, path, ct, body).await;
        assert_eq!(got_status, status, "{what}: {answer}");
        assert_eq!(answer["ret_code"], code, "{what}: {answer}");
    }

    // Nothing changed: the paid transaction has no refund, and no bad add created anything.
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["transactionStatus"], "success");
    assert_eq!(q["result"]["refundAmount"], "0.00");
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), 0);
    let none = pos
        .call("/app-data-search/v3/tran-query", &[("reference", &bad_ref)])
        .await;
    assert_eq!(none["ret_code"], "000021", "{none}");
}

on_both_backends!(every_malformed_request_gets_a_precise_code_and_changes_nothing,);
