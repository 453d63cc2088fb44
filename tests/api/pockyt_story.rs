//! The life of a transaction through the Pockyt v3 dialect, as a POS drives it.

use crate::helpers::*;
use serde_json::Value;

async fn add_pay_two_partial_refunds_then_over_refund_is_rejected_and_query_shows_the_refunds(
    app: TestApp,
) {
    let pos = app.pos();
    let r = reference("story");
    let added = pos.add(&r, "100").await;
    assert_eq!(added["ret_code"], "000100");
    assert_eq!(added["ret_msg"], "add success");
    assert_eq!(added["result"]["transactionStatus"], "init");
    assert_eq!(added["result"]["amount"], "100.00");
    assert_eq!(added["result"]["reference"], r.as_str());
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();

    let paid = pos.pay(&no).await;
    assert_eq!(paid["ret_code"], "000100", "{paid}");
    assert_eq!(paid["result"]["transactionStatus"], "success");
    assert!(paid["result"]["paymentTime"].is_string());

    let first = pos.refund(&no, "30.00", Some(&reference("rf"))).await;
    assert_eq!(first["ret_code"], "000100", "{first}");
    assert_eq!(first["ret_msg"], "refund success ");
    assert_eq!(first["result"]["refundAmount"], "30.00");
    assert_eq!(first["result"]["status"], "success");
    let second = pos.refund(&no, "60", None).await;
    assert_eq!(second["result"]["status"], "success", "{second}");

    let over = pos.refund(&no, "10.01", None).await;
    assert_eq!(over["ret_code"], "000040", "{over}");
    assert!(
        over["ret_msg"].as_str().unwrap().contains("10.00"),
        "{over}"
    );

    let q = pos.query(&no).await;
    assert_eq!(q["ret_code"], "000100");
    assert_eq!(q["ret_msg"], "query success ");
    assert_eq!(q["result"]["refundAmount"], "90.00");
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(q["result"]["transactionStatus"], "success");

    // The rest can still be refunded, exactly.
    let last = pos.refund(&no, "10.00", None).await;
    assert_eq!(last["result"]["status"], "success", "{last}");
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "100.00");
}

async fn a_cancelled_transaction_cannot_be_paid(app: TestApp) {
    let pos = app.pos();
    let added = pos.add(&reference("cancel"), "13").await;
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = pos.cancel(&no).await;
    assert_eq!(cancelled["ret_code"], "000100", "{cancelled}");
    assert_eq!(cancelled["result"]["status"], "success");
    assert_eq!(cancelled["result"]["transactionStatus"], "closed");
    let pay = pos.pay(&no).await;
    assert_eq!(pay["ret_code"], "000040", "{pay}");
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "closed"
    );
    // Cancelling again replays the first answer.
    assert_eq!(pos.cancel(&no).await["result"]["status"], "success");
}

async fn cancel_of_a_paid_transaction_reverses_it_in_full_and_blocks_refunds(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("rev"), "25.00").await;
    let c = pos.cancel(&no).await;
    assert_eq!(c["ret_code"], "000100", "{c}");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["voidAmount"], "25.00");
    assert_eq!(q["result"]["refundAmount"], "25.00");
    let r = pos.refund(&no, "1", None).await;
    assert_eq!(r["ret_code"], "000040", "{r}");
}

async fn a_refunded_transaction_cannot_be_cancelled(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("rf-cancel"), "25.00").await;
    assert_eq!(
        pos.refund(&no, "5", None).await["result"]["status"],
        "success"
    );
    let c = pos.cancel(&no).await;
    assert_eq!(c["ret_code"], "000040", "{c}");
    assert!(c["ret_msg"].as_str().unwrap().contains("refund"), "{c}");
}

async fn an_idempotent_refund_retry_returns_the_same_refund(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("idem"), "50").await;
    let key = reference("refund-key");
    let first = pos.refund(&no, "20", Some(&key)).await;
    let again = pos.refund(&no, "20", Some(&key)).await;
    assert_eq!(first["ret_code"], "000100");
    assert_eq!(again, first, "a retry replays the first answer");
    let other = pos.refund(&no, "21", Some(&key)).await;
    assert_eq!(other["ret_code"], "000022", "{other}");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "20.00");
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), 1);
}

async fn adding_with_a_used_reference_replays_or_is_refused(app: TestApp) {
    let pos = app.pos();
    let r = reference("add-idem");
    let first = pos.add(&r, "10").await;
    let again = pos.add(&r, "10").await;
    assert_eq!(
        first["result"]["transactionNo"],
        again["result"]["transactionNo"]
    );
    let other = pos.add(&r, "11").await;
    assert_eq!(other["ret_code"], "000022", "{other}");
}

async fn paying_twice_with_the_same_barcode_replays_and_another_is_refused(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("pay-idem"), "10").await;
    let again = pos.pay(&no).await;
    assert_eq!(again["ret_code"], "000100");
    assert_eq!(again["result"]["transactionStatus"], "success");
    let other = pos
        .call(
            "/app-instore/v3/pay",
            &[
                ("transactionNo", &no),
                ("paymentBarcode", "289999999999999999"),
                ("vendor", "alipay"),
            ],
        )
        .await;
    assert_eq!(other["ret_code"], "000040", "{other}");
}

async fn concurrent_partial_refunds_never_exceed_the_paid_amount(app: TestApp) {
    let pos = app.pos();
    // 100.00 paid; 64 concurrent refunds of 3.00: exactly 33 fit (99.00), 31 are refused.
    let no = pos.paid(&reference("race"), "100.00").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let pos = pos.clone();
        let no = no.clone();
        tasks.push(tokio::spawn(async move {
            pos.refund(&no, "3.00", Some(&format!("race-{i}-{no}")))
                .await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let answer: Value = t.await.unwrap();
        match answer["ret_code"].as_str().unwrap() {
            "000100" => {
                assert_eq!(answer["result"]["status"], "success");
                ok += 1
            }
            "000040" => refused += 1,
            other => panic!("unexpected answer {other}: {answer}"),
        }
    }
    assert_eq!(ok, 33);
    assert_eq!(refused, 31);
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "99.00");
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), 33);
}

async fn form_urlencoded_requests_work_like_json(app: TestApp) {
    let pos = app.pos();
    let r = reference("form");
    let added = pos
        .call_form(
            "/app-instore/v3/add",
            &[
                ("amount", "7.5"),
                ("currency", "usd"),
                ("settleCurrency", "USD"),
                ("reference", &r),
                ("description", "two coffees & a tea"),
            ],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    assert_eq!(added["result"]["amount"], "7.50");
    assert_eq!(added["result"]["currency"], "USD");
    let q = pos
        .call_form("/app-data-search/v3/tran-query", &[("reference", &r)])
        .await;
    assert_eq!(q["result"]["transactionStatus"], "init");
}

async fn the_sdk_path_aliases_reach_the_same_operations(app: TestApp) {
    let pos = app.pos();
    let r = reference("alias");
    let no = pos.add(&r, "5").await["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = pos
        .call(
            "/app-instore/v3/prepay",
            &[
                ("reference", &r),
                ("paymentBarcode", "28123"),
                ("vendor", "wechatpay"),
            ],
        )
        .await;
    assert_eq!(paid["result"]["transactionStatus"], "success", "{paid}");
    let reversed = pos
        .call("/app-instore/v3/reverse", &[("transactionNo", &no)])
        .await;
    assert_eq!(reversed["ret_code"], "000100", "{reversed}");
    let no2 = pos.add(&reference("alias2"), "5").await["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    let closed = pos
        .call("/app-data-search/v3/reverse", &[("transactionNo", &no2)])
        .await;
    assert_eq!(closed["result"]["transactionStatus"], "closed", "{closed}");
}

async fn the_sandbox_wallet_declines_51_leaves_52_pending_and_declines_refunds_of_61(app: TestApp) {
    let pos = app.pos();
    let declined = pos.add(&reference("d"), "10.51").await;
    let no = declined["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "failed");

    let pending = pos.add(&reference("p"), "10.52").await;
    let no = pending["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "pending");
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "pending"
    );
    let (status, settled) = app.settle(&no, "paid").await;
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["state"], "paid");
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "success"
    );
    let (status, _) = app.settle(&no, "paid").await;
    assert_eq!(status, 409, "a settled payment is not pending any more");

    let r = pos.refund(&no, "0.61", None).await;
    assert_eq!(r["ret_code"], "000100", "{r}");
    assert_eq!(r["result"]["status"], "failed");
    assert_eq!(pos.query(&no).await["result"]["refundAmount"], "0.00");
}

async fn the_seed_refund_curl_and_javascript_sample_run_unchanged(app: TestApp) {
    // Seed 002's curl, byte for byte, against the sandbox's sample transaction.
    let body = br#"{
"merchantNo": "200043",
"storeNo": "300014",
"verifySign": "dd81f7781603bec48ae2c6a9ac758bf2",
"refundAmount": "0.01",
"currency": "USD",
"settleCurrency": "USD",
"transactionNo": "297553638301777927",
"refundReference": "refund2020101305"
}"#;
    let (status, answer) = app
        .raw(
            reqwest::Method::POST,
            "/app-data-search/v3/refund",
            Some("application/json"),
            body.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["ret_code"], "000100", "{answer}");
    assert_eq!(answer["result"]["refundReference"], "refund2020101305");
    assert_eq!(answer["result"]["reference"], "test20200101306");
    assert_eq!(answer["result"]["refundAmount"], "0.01");

    // Seed 000's JavaScript sample: signed with store 303660's token, posted as JSON.
    let js = br#"{"merchantNo":"200043","storeNo":"303660","verifySign":"a1ae09cbff2a749f66736e0438d84857","refundAmount":"10","currency":"USD","settleCurrency":"USD","transactionNo":"316129873376769782"}"#;
    let (_, answer) = app
        .raw(
            reqwest::Method::POST,
            "/app-data-search/v3/refund",
            Some("application/json"),
            js.to_vec(),
        )
        .await;
    assert_eq!(answer["ret_code"], "000100", "{answer}");
    assert_eq!(answer["result"]["refundAmount"], "10.00");
}

on_both_backends!(
    add_pay_two_partial_refunds_then_over_refund_is_rejected_and_query_shows_the_refunds,
    a_cancelled_transaction_cannot_be_paid,
    cancel_of_a_paid_transaction_reverses_it_in_full_and_blocks_refunds,
    a_refunded_transaction_cannot_be_cancelled,
    an_idempotent_refund_retry_returns_the_same_refund,
    adding_with_a_used_reference_replays_or_is_refused,
    paying_twice_with_the_same_barcode_replays_and_another_is_refused,
    concurrent_partial_refunds_never_exceed_the_paid_amount,
    form_urlencoded_requests_work_like_json,
    the_sdk_path_aliases_reach_the_same_operations,
    the_sandbox_wallet_declines_51_leaves_52_pending_and_declines_refunds_of_61,
    the_seed_refund_curl_and_javascript_sample_run_unchanged,
);
