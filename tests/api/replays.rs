//! Captured requests sent again: a refund without the merchant's own key acts once however
//! often its signed body is replayed, and a merchant whose policy requires the key gets a
//! precise error without it.

use crate::helpers::*;
use serde_json::Value;

/// The signed JSON body of a Pockyt refund of `amount` without `refundReference`.
fn refund_body(transaction_no: &str, amount: &str) -> serde_json::Map<String, Value> {
    let params = [
        ("merchantNo", MERCHANT_NO),
        ("storeNo", STORE_NO),
        ("transactionNo", transaction_no),
        ("refundAmount", amount),
        ("currency", "USD"),
        ("settleCurrency", "USD"),
    ];
    let sign = verify_sign(&params, TOKEN);
    let mut body: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    body.insert("verifySign".into(), Value::String(sign));
    body
}

async fn post_bytes(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = app
        .client
        .post(format!("{}/app-data-search/v3/refund", app.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn a_captured_refund_without_a_reference_refunds_once_however_often_it_is_replayed(
    app: TestApp,
) {
    let pos = app.pos();
    let no = pos.paid(&reference("replay"), "10.00").await;
    let body = refund_body(&no, "1.00");
    let bytes = serde_json::to_vec(&body).unwrap();
    let (status, first) = post_bytes(&app, "application/json", bytes.clone()).await;
    let first_json: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        (status, &first_json["ret_code"]),
        (200, &Value::from("000100")),
        "{first_json}"
    );
    // The same bytes five more times: the first answer, byte for byte.
    for _ in 0..5 {
        let (status, again) = post_bytes(&app, "application/json", bytes.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(again, first);
    }
    // The same signed request dressed differently: the signature in capitals, or as a form.
    let mut loud = body.clone();
    let sign = loud["verifySign"].as_str().unwrap().to_ascii_uppercase();
    loud.insert("verifySign".into(), Value::String(sign));
    let (_, shouted) =
        post_bytes(&app, "application/json", serde_json::to_vec(&loud).unwrap()).await;
    assert_eq!(shouted, first);
    let form: Vec<(String, String)> = body
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let form = serde_urlencoded_pairs(&form);
    let (_, as_form) =
        post_bytes(&app, "application/x-www-form-urlencoded", form.into_bytes()).await;
    assert_eq!(as_form, first);

    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "1.00", "one refund: {q}");
    // A refund of another amount is another request, and acts.
    let other = pos.refund(&no, "2.00", None).await;
    assert_eq!(other["ret_code"], "000100", "{other}");
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "3.00");
    // With a key of its own, the same amount again is a new refund.
    let keyed = pos.refund(&no, "1.00", Some(&reference("rr"))).await;
    assert_eq!(keyed["ret_code"], "000100", "{keyed}");
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "4.00");
}

/// With `[replay] require_refund_reference = true`, a refund without its reference is refused
/// precisely and changes nothing; with one it goes through.
async fn a_merchant_whose_policy_requires_the_refund_reference_gets_a_precise_error_without_it(
    backend: Backend,
) {
    let dir = TempDir::new();
    let config = dir.0.join("tillgate.toml");
    std::fs::write(&config, "[replay]\nrequire_refund_reference = true\n").unwrap();
    let config = config.display().to_string();
    let Some(app) = spawn_app_with(backend, &["--config", &config]).await else {
        return;
    };
    let pos = app.pos();
    let no = pos.paid(&reference("policy"), "10.00").await;
    let refused = pos.refund(&no, "1.00", None).await;
    assert_eq!(refused["ret_code"], "000020", "{refused}");
    assert!(
        refused["ret_msg"]
            .as_str()
            .unwrap()
            .contains("refundReference"),
        "{refused}"
    );
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "0.00");
    let keyed = pos.refund(&no, "1.00", Some(&reference("pr"))).await;
    assert_eq!(keyed["ret_code"], "000100", "{keyed}");
}

on_both_backends!(a_captured_refund_without_a_reference_refunds_once_however_often_it_is_replayed);

#[tokio::test]
async fn a_merchant_whose_policy_requires_the_refund_reference_gets_a_precise_error_without_it_on_sqlite(
) {
    a_merchant_whose_policy_requires_the_refund_reference_gets_a_precise_error_without_it(
        Backend::Sqlite,
    )
    .await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_merchant_whose_policy_requires_the_refund_reference_gets_a_precise_error_without_it_on_postgres(
) {
    a_merchant_whose_policy_requires_the_refund_reference_gets_a_precise_error_without_it(
        Backend::Postgres,
    )
    .await
}
