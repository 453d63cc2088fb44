//! The books end to end: a day of traffic through a real `tillgate wallet-sim` over HTTP,
//! reconciled with the wallet's signed statement by `tillgate reconcile` — clean, then with
//! every kind of discrepancy injected, then again — the cases seen through the CLI, the admin
//! API and the metrics; the settlement report and the export of the same day; and bad input.

use crate::helpers::*;
use crate::wallet::{added, Wallet, KEY};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;

/// A gateway of `backend` wired to a wallet simulator; `None` when PostgreSQL is not set up.
async fn gateway_and_wallet_on(backend: Backend) -> Option<(TestApp, Wallet)> {
    let dir = std::sync::Arc::new(TempDir::new());
    let gateway_port = free_port();
    let callback_url = format!("http://127.0.0.1:{gateway_port}/wallet/v1/callbacks");
    let wallet = Wallet::start(&dir, free_port(), &callback_url, &[]);
    let listen = format!("127.0.0.1:{gateway_port}");
    let args = [
        "--listen",
        &listen,
        "--channel",
        &wallet.base,
        "--channel-key",
        KEY,
    ];
    let app = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
            spawn_on(dir, &url, &args).await
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url()?;
            let db = std::sync::Arc::new(PgDatabase::create(&admin_url).await);
            let mut app = spawn_on(dir, &db.url.clone(), &args).await;
            app.database = Some(db);
            app
        }
    };
    Some((app, wallet))
}

/// Runs `tillgate ARGS --database-url …` beside the gateway; answers (success, stdout,
/// stderr).
fn tillgate(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .args(["--database-url", &app.database_url])
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .env_remove("TILLGATE_CHANNEL")
        .env_remove("TILLGATE_CHANNEL_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(app: &TestApp, args: &[&str]) -> Value {
    let (ok, out, err) = tillgate(app, args);
    assert!(ok, "tillgate {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

fn reconcile(app: &TestApp, wallet: &Wallet, date: &str) -> Value {
    json_of(
        app,
        &[
            "reconcile",
            "--date",
            date,
            "--channel",
            &wallet.base,
            "--channel-key",
            KEY,
        ],
    )
}

/// The (finding, operation, number) of every case of `status`.
fn cases(app: &TestApp, status: &str) -> BTreeSet<(String, String, String)> {
    let listing = json_of(
        app,
        &["cases", "list", "--status", status, "--format", "json"],
    );
    listing["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["finding"].as_str().unwrap().to_owned(),
                c["operation"].as_str().unwrap().to_owned(),
                c["number"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

async fn inject(wallet: &Wallet, edit: Value) {
    let answer = wallet
        .control(
            reqwest::Method::POST,
            "/control/statement",
            Some(edit.clone()),
        )
        .await;
    assert!(answer["edits"].is_array(), "{edit} was refused: {answer}");
}

async fn paid(pos: &Pos, amount: &str) -> String {
    let no = added(pos, amount).await;
    let answer = pos.pay(&no).await;
    assert!(answer["ret_code"] == "000100", "{answer}");
    no
}

async fn a_day_through_the_http_wallet_reconciles_and_every_discrepancy_is_found(backend: Backend) {
    let Some((app, wallet)) = gateway_and_wallet_on(backend).await else {
        return;
    };
    let pos = app.pos();
    let refunded = paid(&pos, "10.00").await;
    let r = pos.refund(&refunded, "2.00", None).await;
    assert_eq!(r["result"]["status"], "success", "{r}");
    let refund_no = r["result"]["refundTransactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    let declined_refund = paid(&pos, "20.00").await;
    assert_eq!(
        pos.refund(&declined_refund, "0.61", None).await["result"]["status"],
        "failed"
    );
    let reversed = paid(&pos, "7.00").await;
    assert_eq!(pos.cancel(&reversed).await["result"]["status"], "success");
    let phantom_of = paid(&pos, "5.00").await;
    let missing = paid(&pos, "6.00").await;
    let other_currency = paid(&pos, "8.00").await;
    let declined = paid(&pos, "10.51").await;
    assert_eq!(
        pos.query(&declined).await["result"]["transactionStatus"],
        "failed"
    );
    let voided = added(&pos, "3.00").await;
    assert_eq!(pos.cancel(&voided).await["result"]["status"], "success");
    let date = today();

    // A clean day: every line matched, no case.
    let clean = reconcile(&app, &wallet, &date);
    let run = &clean["reconciliations"][0];
    assert_eq!(run["status"], "clean", "{clean}");
    assert_eq!(run["gatewayLines"], run["walletLines"], "{clean}");
    assert_eq!(run["gatewayLines"], run["matched"], "{clean}");
    // 7 payments, 2 refunds, 2 cancels.
    assert_eq!(run["matched"], 11, "{clean}");
    assert!(cases(&app, "all").is_empty());
    // Run again: the same, nothing opened.
    let again = reconcile(&app, &wallet, &date);
    assert_eq!(again["reconciliations"][0]["status"], "clean", "{again}");
    assert!(cases(&app, "all").is_empty());

    // The wallet's statement now disagrees in every way it can.
    inject(
        &wallet,
        json!({"kind": "phantomRefund", "transactionNo": phantom_of, "refundNo": "PHANTOM-1",
               "amountMinor": 300, "currency": "USD"}),
    )
    .await;
    inject(
        &wallet,
        json!({"kind": "missing", "operation": "pay", "transactionNo": missing}),
    )
    .await;
    inject(
        &wallet,
        json!({"kind": "amount", "operation": "refund", "transactionNo": refunded,
               "refundNo": refund_no, "amountMinor": 250}),
    )
    .await;
    inject(
        &wallet,
        json!({"kind": "currency", "operation": "pay", "transactionNo": other_currency,
               "currency": "EUR"}),
    )
    .await;
    inject(
        &wallet,
        json!({"kind": "otherDay", "operation": "cancel", "transactionNo": reversed, "days": 1}),
    )
    .await;
    inject(
        &wallet,
        json!({"kind": "outcome", "operation": "pay", "transactionNo": declined,
               "outcome": "approved"}),
    )
    .await;
    let found = reconcile(&app, &wallet, &date);
    let run = &found["reconciliations"][0];
    assert_eq!(run["status"], "mismatched", "{found}");
    assert_eq!(run["casesOpened"], 6, "{found}");
    let expected = set(&[
        ("only_at_wallet", "refund", "PHANTOM-1"),
        ("only_at_gateway", "pay", &missing),
        ("amount_mismatch", "refund", &refund_no),
        ("currency_mismatch", "pay", &other_currency),
        ("day_mismatch", "cancel", &reversed),
        ("outcome_mismatch", "pay", &declined),
    ]);
    assert_eq!(
        cases(&app, "open"),
        expected,
        "every discrepancy, nothing else"
    );
    // Everything else still matches.
    assert_eq!(run["matched"], 11 - 5, "{found}");

    // A re-run changes nothing.
    let rerun = reconcile(&app, &wallet, &date);
    assert_eq!(rerun["reconciliations"][0]["casesOpened"], 0, "{rerun}");
    assert_eq!(cases(&app, "all"), expected);

    // A case shows both sides and the transaction's timeline, and closes with a note.
    let listing = json_of(&app, &["cases", "list", "--format", "json"]);
    let amount_case = listing["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["finding"] == "amount_mismatch")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let shown = json_of(&app, &["cases", "show", &amount_case]);
    assert_eq!(shown["gateway"]["amountMinor"], 200, "{shown}");
    assert_eq!(shown["wallet"]["amountMinor"], 250, "{shown}");
    assert!(
        !shown["timeline"]["events"].as_array().unwrap().is_empty(),
        "{shown}"
    );
    let closed = json_of(
        &app,
        &[
            "cases",
            "close",
            &amount_case,
            "--note",
            "wallet corrected its statement",
        ],
    );
    assert_eq!(closed["status"], "closed");
    assert_eq!(cases(&app, "open").len(), 5);
    let (ok, _, err) = tillgate(&app, &["cases", "close", &amount_case, "--note", "again"]);
    assert!(!ok && err.contains("closed already"), "{err}");

    // The admin API and the metrics see the same.
    let (status, open) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/cases?status=open",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(open["cases"].as_array().unwrap().len(), 5, "{open}");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tillgate_reconciliation_cases_open 5"),
        "{metrics}"
    );
    // The admin API reconciles too, and opens nothing twice.
    let (status, by_api) = app
        .raw(
            reqwest::Method::POST,
            &format!("/admin/v1/reconciliations?date={date}"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{by_api}");
    assert_eq!(by_api["reconciliations"][0]["casesOpened"], 0, "{by_api}");
}

async fn settlement_and_export_of_a_day_agree_with_its_rows(app: TestApp) {
    // A merchant of its own: the sandbox merchant's sample transactions are paid today too.
    let created = json_of(
        &app,
        &[
            "merchant",
            "create",
            "--merchant-no",
            "700101",
            "--store-no",
            "1",
        ],
    );
    let token = created["pockyt"]["token"].as_str().unwrap();
    let pos = app.pos_for("700101", "1", token);
    let merchant = json_of(
        &app,
        &[
            "merchant",
            "update",
            "--merchant-no",
            "700101",
            "--fee-bps",
            "150",
            "--fee-fixed",
            "30",
        ],
    );
    assert_eq!(merchant["feePlan"], json!({"bps": 150, "fixedMinor": 30}));
    let first = paid(&pos, "11.00").await;
    paid(&pos, "10.99").await;
    paid(&pos, "10.51").await; // declined by the sandbox wallet
    pos.refund(&first, "1.00", None).await;
    let reversed = paid(&pos, "11.01").await;
    pos.cancel(&reversed).await;
    let date = today();
    let report = json_of(
        &app,
        &[
            "report",
            "settlement",
            "--date",
            &date,
            "--merchant-no",
            "700101",
            "--format",
            "json",
        ],
    );
    let usd = &report["settlements"][0]["currencies"][0];
    assert_eq!(usd["currency"], "USD", "{report}");
    assert_eq!(
        usd["payments"],
        json!({"count": 3, "sum": "33.00", "sumMinor": 3300})
    );
    assert_eq!(usd["refunds"]["sumMinor"], 100);
    assert_eq!(usd["reversals"]["sumMinor"], 1101);
    // 16.5 → 17, 16.485 → 16, 16.515 → 17, plus 0.30 each.
    assert_eq!(usd["feesMinor"], 17 + 16 + 17 + 90);
    assert_eq!(usd["netMinor"], 3300 - 100 - 1101 - 140);
    // The admin API answers the same.
    let (status, by_api) = app
        .raw(
            reqwest::Method::GET,
            &format!("/admin/v1/settlement?date={date}&merchantNo=700101"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_api, report);
    // CSV and table.
    let (ok, csv, _) = tillgate(
        &app,
        &["report", "settlement", "--date", &date, "--format", "csv"],
    );
    assert!(ok);
    assert!(csv.starts_with("date,merchant_no,"), "{csv}");
    assert!(
        csv.contains(",700101,,UTC,USD,3,33.00,1,1.00,0,0.00,1,11.01,1.40,19.59"),
        "{csv}"
    );
    let (ok, table, _) = tillgate(&app, &["report", "settlement", "--date", &date]);
    assert!(ok && table.contains("3 × 33.00"), "{table}");

    // The export lists the same rows: the approved payments add up to the settlement's sum.
    let (ok, export, err) = tillgate(
        &app,
        &[
            "export",
            "--kind",
            "all",
            "--from",
            &date,
            "--merchant-no",
            "700101",
            "--format",
            "csv",
        ],
    );
    assert!(ok, "{err}");
    let mut lines = export.lines();
    assert_eq!(lines.next(), Some(tillgate_core::books::CSV_HEADING));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let sum: i64 = rows
        .iter()
        .filter(|r| r[0] == "payment" && r[10] == "approved")
        .map(|r| r[8].parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, 3300);
    assert_eq!(rows.iter().filter(|r| r[0] == "payment").count(), 4);
    assert_eq!(rows.iter().filter(|r| r[0] == "refund").count(), 1);
    assert_eq!(rows.iter().filter(|r| r[0] == "cancel").count(), 1);
    let (ok, jsonl, _) = tillgate(
        &app,
        &[
            "export",
            "--kind",
            "refunds",
            "--from",
            &date,
            "--merchant-no",
            "700101",
            "--format",
            "jsonl",
        ],
    );
    assert!(ok);
    let refund: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(refund["amount"], "1.00");
    assert_eq!(refund["transactionNo"], first.as_str());
}

async fn bad_input_to_the_books_is_refused_with_a_clear_error(app: TestApp) {
    let (ok, _, err) = tillgate(&app, &["report", "settlement", "--date", "2026-02-30"]);
    assert!(
        !ok && err.contains("--date") && err.contains("YYYY-MM-DD"),
        "{err}"
    );
    let (ok, _, err) = tillgate(
        &app,
        &[
            "report",
            "settlement",
            "--date",
            "2026-12-01",
            "--merchant-no",
            "999999",
        ],
    );
    assert!(!ok && err.contains("there is no merchant 999999"), "{err}");
    let (ok, _, err) = tillgate(&app, &["reconcile", "--date", "yesterday"]);
    assert!(!ok && err.contains("--date"), "{err}");
    let (ok, _, err) = tillgate(&app, &["reconcile", "--date", "2026-12-01"]);
    assert!(
        !ok && err.contains("sandbox wallet, which keeps no statement"),
        "{err}"
    );
    let (ok, _, err) = tillgate(
        &app,
        &["export", "--from", "2026-12-02", "--to", "2026-12-01"],
    );
    assert!(!ok && err.contains("before"), "{err}");
    let (ok, _, err) = tillgate(&app, &["cases", "show", "42"]);
    assert!(!ok && err.contains("there is no case 42"), "{err}");
    let (ok, _, err) = tillgate(
        &app,
        &[
            "merchant",
            "update",
            "--merchant-no",
            "200043",
            "--fee-bps",
            "10001",
        ],
    );
    assert!(!ok && err.contains("basis points"), "{err}");
    for (path, status) in [
        ("/admin/v1/settlement?date=12-01-2026", 400),
        ("/admin/v1/settlement", 400),
        (
            "/admin/v1/settlement?date=2026-12-01&merchantNo=999999",
            404,
        ),
        ("/admin/v1/cases?status=maybe", 400),
        ("/admin/v1/cases/42", 404),
    ] {
        let (got, body) = app.raw(reqwest::Method::GET, path, None, Vec::new()).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (got, body) = app
        .raw(
            reqwest::Method::POST,
            "/admin/v1/reconciliations?date=2026-12-01",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(got, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("keeps no statement"),
        "{body}"
    );
}

mod wallet_sqlite {
    #[tokio::test]
    async fn a_day_through_the_http_wallet_reconciles_and_every_discrepancy_is_found() {
        super::a_day_through_the_http_wallet_reconciles_and_every_discrepancy_is_found(
            crate::helpers::Backend::Sqlite,
        )
        .await
    }
}

mod wallet_postgres {
    #[tokio::test]
    #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
    async fn a_day_through_the_http_wallet_reconciles_and_every_discrepancy_is_found() {
        super::a_day_through_the_http_wallet_reconciles_and_every_discrepancy_is_found(
            crate::helpers::Backend::Postgres,
        )
        .await
    }
}

on_both_backends!(
    settlement_and_export_of_a_day_agree_with_its_rows,
    bad_input_to_the_books_is_refused_with_a_clear_error,
);

/// Three nodes on one PostgreSQL database, each with the daily schedule due at once: the
/// previous day is reconciled by exactly one of them.
#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn the_daily_schedule_reconciles_a_day_once_whatever_the_number_of_nodes() {
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let db = std::sync::Arc::new(PgDatabase::create(&admin_url).await);
    let dir = std::sync::Arc::new(TempDir::new());
    let wallet = Wallet::start(&dir, free_port(), "http://127.0.0.1:9/none", &[]);
    let config = dir.0.join("books.toml");
    std::fs::write(&config, "[books]\nreconcile_at = \"00:00\"\n").unwrap();
    let config = config.display().to_string();
    let base = wallet.base.clone();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let (dir, url, config, base) =
                (dir.clone(), db.url.clone(), config.clone(), base.clone());
            std::thread::spawn(move || {
                start(
                    &dir,
                    &url,
                    &[
                        "--config",
                        &config,
                        "--channel",
                        &base,
                        "--channel-key",
                        KEY,
                    ],
                )
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        let (child, base) = s.join().unwrap().expect("every node starts");
        nodes.push(TestApp {
            base,
            child,
            dir: dir.clone(),
            database_url: db.url.clone(),
            client: reqwest::Client::new(),
            database: None,
        });
    }
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .date_naive()
        .to_string();
    let path = format!("/admin/v1/reconciliations?date={yesterday}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let (status, runs) = nodes[0]
            .raw(reqwest::Method::GET, &path, None, Vec::new())
            .await;
        assert_eq!(status, 200, "{runs}");
        let run = runs["reconciliations"][0].clone();
        if run["status"] == "done" {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reconciled: {runs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(run["scope"], "default");
    assert_eq!(run["mismatched"], 0, "{run}");
    // Every node tried; one ran it, the others found it claimed.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut runs = 0;
    for node in &nodes {
        let metrics = node
            .client
            .get(format!("{}/metrics", node.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        runs += metrics
            .lines()
            .filter(|l| l.starts_with("tillgate_reconciliations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert_eq!(runs, 1, "one node reconciled the day");
    drop(nodes);
    drop(db);
}
