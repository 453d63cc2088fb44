//! What web shops and the vendors' own client libraries send, unchanged: a Pockyt add that
//! names no currency, the cashier number, ISV fields tillgate does not use.

use crate::helpers::*;
use std::process::Command;

fn merchant_create(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["merchant", "create", "--database-url", &app.database_url])
        .args(args)
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

async fn an_add_without_currency_is_in_the_stores_default_currency_usd_when_unset(app: TestApp) {
    // The official SDK's add: no currency, no settleCurrency, an ISV group number and a cashier.
    let pos = app.pos();
    let added = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "12.50"),
                ("reference", &reference("sdk")),
                ("merGroupNo", "100001"),
                ("storeAdminNo", "cashier-7"),
            ],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    let tx = &added["result"];
    assert_eq!(tx["currency"], "USD");
    assert_eq!(tx["settleCurrency"], "USD");
    assert_eq!(tx["amount"], "12.50");
    assert_eq!(tx["storeAdminNo"], "cashier-7");
    // Paying answers the same transaction, the cashier still on it.
    let paid = pos.pay(tx["transactionNo"].as_str().unwrap()).await;
    assert_eq!(paid["result"]["storeAdminNo"], "cashier-7", "{paid}");

    // A store created with a default currency of EUR: the same add is in euros.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700501",
            "--store-no",
            "1",
            "--currency",
            "eur",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["pockyt"]["currency"], "EUR");
    let token = created["pockyt"]["token"].as_str().unwrap();
    let shop = app.pos_for("700501", "1", token);
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[("amount", "3.10"), ("reference", &reference("eur"))],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    assert_eq!(added["result"]["currency"], "EUR");
    assert_eq!(added["result"]["settleCurrency"], "EUR");
    assert_eq!(added["result"]["storeAdminNo"], serde_json::Value::Null);
    // A currency that is sent wins over the store's default.
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "1000"),
                ("currency", "JPY"),
                ("reference", &reference("jpy")),
            ],
        )
        .await;
    assert_eq!(added["result"]["currency"], "JPY", "{added}");
    assert_eq!(added["result"]["settleCurrency"], "EUR");
    // A currency that is sent but not a code is still refused.
    let added = shop
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "1"),
                ("currency", "EURO"),
                ("reference", &reference("bad")),
            ],
        )
        .await;
    assert_ne!(added["ret_code"], "000100", "{added}");

    // The operator's command refuses a default that is no currency.
    let out = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700502",
            "--store-no",
            "1",
            "--currency",
            "XYZ1",
        ],
    );
    assert!(!out.status.success());
}

on_both_backends!(an_add_without_currency_is_in_the_stores_default_currency_usd_when_unset,);
