//! Strict parsing at the boundary, in every dialect: a key given twice, bytes that are not
//! UTF-8 (JSON and form bodies) and control characters or null bytes in any parameter are
//! refused with the dialect's malformed-input code, never a system error, and change nothing.
//! On PostgreSQL a null byte used to reach SQL and answer `000000` (HTTP 503).

use crate::helpers::*;
use crate::unified::jeepay_sign;
use crate::yabandpay::yaband_sign;
use reqwest::Method;
use serde_json::{json, Value};

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// A JSON object written member by member, in order, so that a key may repeat.
fn json_members(members: &[(&str, &str)]) -> Vec<u8> {
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
        .collect();
    format!("{{{}}}", inner.join(",")).into_bytes()
}

/// A form body with every byte of keys and values percent-encoded except letters and digits.
fn form(members: &[(&str, &str)]) -> Vec<u8> {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    members
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// `body` with the first `@` replaced by `bytes` (to put raw invalid UTF-8 inside a value).
fn with_bytes(body: Vec<u8>, bytes: &[u8]) -> Vec<u8> {
    let at = body.iter().position(|b| *b == b'@').expect("a placeholder");
    let mut out = body[..at].to_vec();
    out.extend_from_slice(bytes);
    out.extend_from_slice(&body[at + 1..]);
    out
}

/// Pockyt parameters with merchantNo, storeNo and a verifySign over exactly these values.
fn pockyt_signed(params: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(&str, &str)> = vec![("merchantNo", MERCHANT_NO), ("storeNo", STORE_NO)];
    all.extend_from_slice(params);
    let sign = verify_sign(&all, TOKEN);
    let mut out: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.push(("verifySign".into(), sign));
    out
}

fn members(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `body` with its first `X` replaced by `text`.
fn replace_x(body: Vec<u8>, text: &str) -> Vec<u8> {
    let at = body.iter().position(|b| *b == b'X').expect("an X");
    let mut out = body[..at].to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&body[at + 1..]);
    out
}

async fn pockyt_refuses_what_two_readers_could_read_differently(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("strict"), "10.00").await;
    let signed_refund = |amount: &str| {
        pockyt_signed(&[
            ("transactionNo", &no),
            ("refundAmount", amount),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
        ])
    };
    let refund_path = "/app-data-search/v3/refund";

    let mut cases: Vec<(String, &str, Option<&str>, Vec<u8>)> = Vec::new();
    // transactionNo bogus, then the real one the signature covers.
    let mut real = signed_refund("1.00");
    real.insert(0, ("transactionNo".into(), "1".into()));
    cases.push((
        "transactionNo twice".into(),
        refund_path,
        JSON,
        json_members(&members(&real)),
    ));
    // refundAmount 1.00 then 2.00, signed over either value.
    for signed_amount in ["1.00", "2.00"] {
        let mut twice = signed_refund(signed_amount);
        let at = twice.iter().position(|(k, _)| k == "refundAmount").unwrap();
        let other = if signed_amount == "1.00" {
            "2.00"
        } else {
            "1.00"
        };
        twice.insert(at + 1, ("refundAmount".into(), other.into()));
        cases.push((
            format!("refundAmount twice, signed over {signed_amount}"),
            refund_path,
            JSON,
            json_members(&members(&twice)),
        ));
        cases.push((
            format!("refundAmount twice in a form, signed over {signed_amount}"),
            refund_path,
            FORM,
            form(&members(&twice)),
        ));
    }

    // Adds whose reference is not UTF-8 or carries a control character; none may exist after.
    let add = |reference: &str| {
        pockyt_signed(&[
            ("amount", "1.00"),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("reference", reference),
        ])
    };
    let add_path = "/app-instore/v3/add";
    let base_ref = reference("strict-add");
    let placeholder = format!("{base_ref}@");
    cases.push((
        "raw invalid UTF-8 in a JSON value".into(),
        add_path,
        JSON,
        with_bytes(json_members(&members(&add(&placeholder))), b"\xff"),
    ));
    cases.push((
        "raw invalid UTF-8 in a form value".into(),
        add_path,
        FORM,
        with_bytes(
            replace_x(form(&members(&add("X"))), &placeholder),
            b"\xc3\x28",
        ),
    ));
    cases.push((
        "percent-encoded invalid UTF-8 in a form value".into(),
        add_path,
        FORM,
        with_bytes(replace_x(form(&members(&add("X"))), &placeholder), b"%FF"),
    ));
    let controls = ["\u{0}", "\n", "\t", "\u{1b}", "\u{7f}", "\u{85}"];
    for c in controls {
        let r = format!("{base_ref}{c}");
        cases.push((
            format!("{:?} in reference (JSON)", c),
            add_path,
            JSON,
            json_members(&members(&add(&r))),
        ));
        cases.push((
            format!("{:?} in reference (form)", c),
            add_path,
            FORM,
            form(&members(&add(&r))),
        ));
    }
    // A null byte in the fields looked up before the signature is checked, and in transactionNo.
    for (field, value) in [
        ("merchantNo", format!("{MERCHANT_NO}\u{0}")),
        ("storeNo", format!("{STORE_NO}\u{0}")),
        ("transactionNo", format!("{no}\u{0}")),
        ("merchantNo", format!("\u{1}{MERCHANT_NO}")),
        ("transactionNo", format!("{no}\r\n")),
    ] {
        let mut p = pockyt_signed(&[("transactionNo", &no)]);
        for (k, v) in p.iter_mut() {
            if k == field {
                *v = value.clone();
            }
        }
        let sign = verify_sign(
            &members(&p)
                .into_iter()
                .filter(|(k, _)| *k != "verifySign")
                .collect::<Vec<_>>(),
            TOKEN,
        );
        p.last_mut().unwrap().1 = sign;
        for (ct, body) in [
            (JSON, json_members(&members(&p))),
            (FORM, form(&members(&p))),
        ] {
            cases.push((
                format!("{value:?} in {field} ({})", ct.unwrap()),
                "/app-data-search/v3/tran-query",
                ct,
                body,
            ));
        }
    }
    // A control character in a key.
    let mut odd_key = pockyt_signed(&[("transactionNo", &no)]);
    odd_key.insert(0, ("note\u{0}".into(), "x".into()));
    cases.push((
        "a null byte in a key".into(),
        "/app-data-search/v3/tran-query",
        JSON,
        json_members(&members(&odd_key)),
    ));

    for (what, path, ct, body) in cases {
        let (status, answer) = app.raw(Method::POST, path, ct, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(answer["ret_code"], "000023", "{what}: {answer}");
        assert!(answer.get("result").is_none(), "{what}: {answer}");
        assert!(
            !answer["ret_msg"].as_str().unwrap().contains('\u{0}'),
            "{what}: the answer does not echo the null byte"
        );
    }

    // Nothing changed: no refund of the paid transaction, and none of the adds exists.
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "0.00", "{q}");
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), 0, "{q}");
    for r in [
        base_ref.clone(),
        format!("{base_ref}\u{fffd}"),
        format!("{base_ref}\u{fffd}("),
    ] {
        let none = pos
            .call("/app-data-search/v3/tran-query", &[("reference", &r)])
            .await;
        assert_eq!(none["ret_code"], "000021", "{r:?}: {none}");
    }
}

const MCH_NO: &str = "M1621873433953";
const APP_ID: &str = "60cc09bce4b0f1c0b83761c9";
const APP_SECRET: &str = "offline-test-key";

/// Unified members with the common fields and a sign over exactly these values (the last of a
/// repeated key, as a lenient reader would take it).
fn unified_signed(params: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        ("mchNo", MCH_NO),
        ("appId", APP_ID),
        ("reqTime", "1700000000123"),
        ("version", "1.0"),
        ("signType", "MD5"),
    ]
    .iter()
    .chain(params)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    for (k, v) in &all {
        last.insert(k.clone(), v.clone());
    }
    let sign = jeepay_sign(&last.into_iter().collect::<Vec<_>>(), APP_SECRET);
    all.push(("sign".into(), sign));
    all
}

async fn unified_refuses_what_two_readers_could_read_differently(app: TestApp) {
    let order_no = reference("u-strict");
    let order = |mch_order_no: &str, amount: &str| -> Vec<(String, String)> {
        unified_signed(&[
            ("mchOrderNo", mch_order_no),
            ("wayCode", "AUTO_BAR"),
            ("amount", amount),
            ("currency", "cny"),
            ("subject", "coffee"),
            ("body", "two coffees"),
            ("channelExtra", "{\"authCode\":\"134567890123456789\"}"),
        ])
    };
    let path = "/api/pay/unifiedOrder";
    let mut cases: Vec<(String, &str, Option<&str>, Vec<u8>)> = Vec::new();
    // amount 100 then 200 (the sign covers 200, the last one).
    let mut twice = order(&order_no, "200");
    let at = twice.iter().position(|(k, _)| k == "amount").unwrap();
    twice.insert(at, ("amount".into(), "100".into()));
    cases.push((
        "amount twice".into(),
        path,
        JSON,
        json_members(&members(&twice)),
    ));
    cases.push((
        "amount twice in a form".into(),
        path,
        FORM,
        form(&members(&twice)),
    ));
    let placeholder = format!("{order_no}@");
    cases.push((
        "raw invalid UTF-8 in JSON".into(),
        path,
        JSON,
        with_bytes(json_members(&members(&order(&placeholder, "100"))), b"\xff"),
    ));
    cases.push((
        "percent-encoded invalid UTF-8 in a form".into(),
        path,
        FORM,
        with_bytes(
            replace_x(form(&members(&order("X", "100"))), &placeholder),
            b"%C3%28",
        ),
    ));
    for c in ["\u{0}", "\n", "\u{1b}", "\u{7f}"] {
        let no = format!("{order_no}{c}");
        cases.push((
            format!("{c:?} in mchOrderNo (JSON)"),
            path,
            JSON,
            json_members(&members(&order(&no, "100"))),
        ));
        cases.push((
            format!("{c:?} in mchOrderNo (form)"),
            path,
            FORM,
            form(&members(&order(&no, "100"))),
        ));
    }
    // A null byte in the fields looked up before the sign is checked.
    for (field, value) in [
        ("mchNo", format!("{MCH_NO}\u{0}")),
        ("appId", format!("{APP_ID}\u{0}")),
    ] {
        let mut p = order(&order_no, "100");
        for (k, v) in p.iter_mut() {
            if k == field {
                *v = value.clone();
            }
        }
        cases.push((
            format!("a null byte in {field}"),
            path,
            JSON,
            json_members(&members(&p)),
        ));
    }
    for (what, path, ct, body) in cases {
        let (status, answer) = app.raw(Method::POST, path, ct, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(answer["code"], 11, "{what}: {answer}");
        assert!(answer.get("data").is_none(), "{what}: {answer}");
    }
    // Nothing was created under any of those order numbers.
    for no in [
        order_no.clone(),
        format!("{order_no}\u{fffd}"),
        format!("{order_no}\u{fffd}("),
    ] {
        let (_, answer) = app
            .raw(
                Method::POST,
                "/api/pay/query",
                JSON,
                json_members(&members(&unified_signed(&[("mchOrderNo", &no)]))),
            )
            .await;
        assert_eq!(answer["code"], 9999, "{no:?}: {answer}");
        assert!(
            answer["msg"].as_str().unwrap().contains("订单不存在"),
            "{no:?}: {answer}"
        );
    }
}

const TID: &str = "T125119061";
const YABAND_SECRET: &str = "62184c09df1aeb63239e07079875be81";

/// A YabandPay body written member by member; `data` members likewise.
fn yaband_body(top: &[(&str, Value)], data: &[(&str, &str)]) -> Vec<u8> {
    let data_text = String::from_utf8(json_members(data)).unwrap();
    let mut inner: Vec<String> = top
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), v))
        .collect();
    inner.push(format!("\"data\":{data_text}"));
    format!("{{{}}}", inner.join(",")).into_bytes()
}

/// The top-level members of a request by `user`, signed over `data` (the last of a repeated
/// data key).
fn yaband_top(user: &str, method: &str, data: &[(&str, &str)]) -> Vec<(&'static str, Value)> {
    let time = chrono::Utc::now().timestamp();
    let mut last = serde_json::Map::new();
    for (k, v) in data {
        last.insert(k.to_string(), json!(v));
    }
    let sign = yaband_sign(user, method, time, &Value::Object(last), YABAND_SECRET);
    vec![
        ("user", json!(user)),
        ("method", json!(method)),
        ("time", json!(time)),
        ("sign", json!(sign)),
    ]
}

async fn yabandpay_refuses_what_two_readers_could_read_differently(app: TestApp) {
    let order_id = format!(
        "{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64 % 10_000_000_000_000_000
    );
    let pay = |order_id: &str, amount: &str| -> Vec<(String, String)> {
        vec![
            ("pay_method".into(), "offline".into()),
            ("order_id".into(), order_id.into()),
            ("auth_code".into(), "281234567890123456".into()),
            ("amount".into(), amount.into()),
            ("currency".into(), "EUR".into()),
            ("description".into(), "tea".into()),
        ]
    };
    let method = "v3.BarcodePayment";
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // amount 1.00 then 2.00 in data, signed over the last.
    let mut twice = pay(&order_id, "2.00");
    let at = twice.iter().position(|(k, _)| k == "amount").unwrap();
    twice.insert(at, ("amount".into(), "1.00".into()));
    let data = members(&twice);
    cases.push((
        "data.amount twice".into(),
        yaband_body(&yaband_top(TID, method, &data), &data),
    ));
    // user twice at the top level: another terminal's id first.
    let once = pay(&order_id, "1.00");
    let data = members(&once);
    let mut top = yaband_top(TID, method, &data);
    top.insert(0, ("user", json!("016683")));
    cases.push(("user twice".into(), yaband_body(&top, &data)));
    cases.push((
        "raw invalid UTF-8".into(),
        with_bytes(
            yaband_body(
                &yaband_top(TID, method, &data),
                &members(&pay(&format!("{order_id}@"), "1.00")),
            ),
            b"\xff",
        ),
    ));
    for c in ["\u{0}", "\n", "\u{7f}"] {
        let odd = pay(&format!("{order_id}{c}"), "1.00");
        let data = members(&odd);
        cases.push((
            format!("{c:?} in data.order_id"),
            yaband_body(&yaband_top(TID, method, &data), &data),
        ));
    }
    let mut top = yaband_top(TID, method, &data);
    top[0].1 = json!(format!("{TID}\u{0}"));
    cases.push(("a null byte in user".into(), yaband_body(&top, &data)));
    for (what, body) in cases {
        let (status, answer) = app.raw(Method::POST, "/Payments", JSON, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        assert_eq!(answer["status"], false, "{what}: {answer}");
        assert_eq!(answer["code"], "-3007", "{what}: {answer}");
    }
    // Nothing was created: the order id is still free for a payment of another amount (a kept
    // order id with other parameters would answer -3009).
    let fresh = pay(&order_id, "3.00");
    let data = members(&fresh);
    let (_, paid) = app
        .raw(
            Method::POST,
            "/Payments",
            JSON,
            yaband_body(&yaband_top(TID, method, &data), &data),
        )
        .await;
    assert_eq!(paid["status"], true, "{paid}");
    assert_eq!(paid["data"]["state"], "paid", "{paid}");
}

/// Path and query parameters of the operator surfaces are held to the same rule: on
/// PostgreSQL a null byte there used to reach SQL (HTTP 503, or the database's own error text).
async fn operator_paths_and_queries_refuse_control_characters(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("strict-admin"), "1.00").await;
    for (method, path) in [
        (
            Method::GET,
            "/admin/v1/notifications?transactionNo=1%00".to_owned(),
        ),
        (Method::GET, format!("/admin/v1/transactions/{no}%00")),
        (
            Method::GET,
            "/admin/v1/notifications?status=%0Afailed".to_owned(),
        ),
        (Method::GET, "/admin/v1/transactions/%FF".to_owned()),
        (Method::POST, format!("/sandbox/v1/payments/{no}%00/settle")),
    ] {
        let body = if method == Method::POST {
            br#"{"outcome":"declined"}"#.to_vec()
        } else {
            Vec::new()
        };
        let (status, answer) = app.raw(method, &path, JSON, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("control character")),
            "{path}: {answer}"
        );
    }
    // The paid transaction was not settled again.
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "success"
    );
    // A Pockyt path with a null byte answers in Pockyt's envelope.
    let (status, answer) = app
        .raw(Method::POST, "/app-instore/v3/add%00", JSON, b"{}".to_vec())
        .await;
    assert_eq!(
        (status, &answer["ret_code"]),
        (400, &json!("000023")),
        "{answer}"
    );
}

on_both_backends!(
    operator_paths_and_queries_refuse_control_characters,
    pockyt_refuses_what_two_readers_could_read_differently,
    unified_refuses_what_two_readers_could_read_differently,
    yabandpay_refuses_what_two_readers_could_read_differently,
);
