//! Operator traps, each closed: a wrong master key is refused by the server and every command,
//! commands never create a database they were pointed at, `merchant create` is idempotent and
//! atomic, `merchant update` changes what `create` leaves alone, shutdown says what it waits
//! for and a second signal ends it, broken pipes end quietly, a busy port is reported before
//! the database is touched, and listings print as tables.

use crate::helpers::*;
use crate::terminal_client::TestTerminal;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// A database of a backend that no gateway has touched: a SQLite path that does not exist
/// yet, or a new, empty PostgreSQL database.
struct Fresh {
    dir: Arc<TempDir>,
    url: String,
    _database: Option<Arc<PgDatabase>>,
    backend: Backend,
}

impl Fresh {
    async fn on(backend: Backend) -> Fresh {
        let dir = Arc::new(TempDir::new());
        match backend {
            Backend::Sqlite => Fresh {
                url: format!("sqlite://{}", dir.0.join("tillgate.db").display()),
                dir,
                _database: None,
                backend,
            },
            Backend::Postgres => {
                let admin_url = postgres_admin_url().expect("TILLGATE_TEST_POSTGRES_URL is set");
                let db = Arc::new(PgDatabase::create(&admin_url).await);
                Fresh {
                    url: db.url.clone(),
                    dir,
                    _database: Some(db),
                    backend,
                }
            }
        }
    }

    /// Whether the database exists and holds tillgate's schema.
    async fn has_schema(&self) -> bool {
        match self.backend {
            Backend::Sqlite => self.dir.0.join("tillgate.db").exists(),
            Backend::Postgres => {
                let mut conn: sqlx::PgConnection =
                    sqlx::Connection::connect(&self.url).await.unwrap();
                sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// `tillgate ARGS --database-url URL` in the database's directory.
    fn run(&self, args: &[&str]) -> Output {
        tillgate(&self.dir, &self.url, args)
    }
}

/// Runs a command of `tillgate` on `url` from `dir`, with no master key in its environment.
fn tillgate(dir: &TempDir, url: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .args(["--database-url", url])
        .current_dir(&dir.0)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env_remove("TILLGATE_MASTER_KEY")
        .env_remove("TILLGATE_MASTER_KEY_FILE")
        .env_remove("TILLGATE_MODE")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON a successful command printed.
fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs each story (`async fn(Fresh)`) on a fresh SQLite file and a fresh PostgreSQL database.
macro_rules! on_both_databases {
    ($($story:ident),* $(,)?) => {
        mod fresh_sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(super::Fresh::on(crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
        mod fresh_postgres {
            $(
                #[tokio::test]
                #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
                async fn $story() {
                    super::$story(super::Fresh::on(crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
    };
}

async fn a_wrong_master_key_is_refused_by_the_server_and_every_command(db: Fresh) {
    let right = key_file(&db.dir, "11");
    let wrong = key_file(&db.dir, "22");
    let production = ["--mode", "production"];
    let create = [
        "merchant",
        "create",
        "--merchant-no",
        "800001",
        "--store-no",
        "1",
        "--token",
        "prod-token-0123456789",
    ];
    let with_key = |args: &[&str], key: &str| -> Vec<String> {
        args.iter()
            .chain(&production)
            .chain(&["--master-key-file", key])
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| db.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut first = with_key(&create, &right);
    first.push("--create".into());
    json_of(&run(first));

    // A server given another key says so and does not start.
    let serve = [
        &["--mode", "production", "--master-key-file", &wrong][..],
        &PRODUCTION_WALLET,
    ]
    .concat();
    let err = start(&db.dir, &db.url, &serve).expect_err("a wrong key must be refused");
    assert!(
        err.contains("is not the master key of the database") && err.contains(&wrong),
        "{err}"
    );
    // So does every command.
    for args in [
        with_key(&create, &wrong),
        with_key(&["notify", "list"], &wrong),
        with_key(&["notify", "resend", "--id", "1"], &wrong),
        with_key(&["unresolved"], &wrong),
        with_key(
            &[
                "merchant",
                "update",
                "--merchant-no",
                "800001",
                "--timezone",
                "UTC",
            ],
            &wrong,
        ),
    ] {
        let out = run(args.clone());
        assert!(!out.status.success(), "{args:?} went on with a wrong key");
        assert!(
            stderr(&out).contains("is not the master key"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Production mode without a key names the settings that give it.
    let out = db.run(&["notify", "list", "--mode", "production"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("needs a master key") && err.contains("TILLGATE_MASTER_KEY_FILE"),
        "{err}"
    );
    // Sandbox mode (the default) finds no key file beside a database that has credentials:
    // it neither writes one nor seals anything with it.
    let out = db.run(&create);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was first used with a master key"),
        "{}",
        stderr(&out)
    );
    let key_files: Vec<_> = std::fs::read_dir(&db.dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".key") && !n.starts_with("master-"))
        .collect();
    assert!(
        key_files.is_empty(),
        "a sandbox key was written: {key_files:?}"
    );

    // The right key still works, end to end.
    let serve = [
        &["--mode", "production", "--master-key-file", &right][..],
        &PRODUCTION_WALLET,
    ]
    .concat();
    let app = spawn_on(db.dir.clone(), &db.url, &serve).await;
    let pos = app.pos_for("800001", "1", "prod-token-0123456789");
    let added = pos.add(&reference("right-key"), "1.00").await;
    assert_eq!(added["ret_code"], "000100", "{added}");
}

async fn operator_commands_never_create_a_database(db: Fresh) {
    for args in [
        &["notify", "list"][..],
        &["notify", "resend", "--id", "1"],
        &["unresolved"],
        &[
            "merchant",
            "create",
            "--merchant-no",
            "1",
            "--store-no",
            "1",
        ],
        &[
            "merchant",
            "update",
            "--merchant-no",
            "1",
            "--timezone",
            "UTC",
        ],
    ] {
        let out = db.run(args);
        assert!(
            !out.status.success(),
            "{args:?} answered on a database that is not there"
        );
        let err = stderr(&out);
        assert!(err.contains("never create a database"), "{args:?}: {err}");
        assert!(!db.has_schema().await, "{args:?} created the database");
    }
    // Asked for, it is created.
    let created = json_of(&db.run(&[
        "merchant",
        "create",
        "--create",
        "--merchant-no",
        "1",
        "--store-no",
        "1",
    ]));
    assert_eq!(created["created"], true, "{created}");
    assert!(db.has_schema().await);
    let listed = json_of(&db.run(&["notify", "list"]));
    assert_eq!(listed["notifications"], json!([]));
}

async fn a_busy_port_is_reported_before_the_database_is_touched(db: Fresh) {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let err = start(&db.dir, &db.url, &["--listen", &listen]).expect_err("the port is taken");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(
        !db.has_schema().await,
        "the database was migrated before the port was bound"
    );
}

on_both_databases!(
    a_wrong_master_key_is_refused_by_the_server_and_every_command,
    operator_commands_never_create_a_database,
    a_busy_port_is_reported_before_the_database_is_touched,
);

/// `tillgate merchant ARGS` on a running gateway's database.
fn merchant(app: &TestApp, args: &[&str]) -> Output {
    tillgate(
        &app.dir,
        &app.database_url,
        &[&["merchant"][..], args].concat(),
    )
}

async fn merchant_create_is_idempotent_and_atomic(app: TestApp) {
    let args = ["create", "--merchant-no", "700001", "--store-no", "1"];
    let first = json_of(&merchant(&app, &args));
    assert_eq!(first["created"], true);
    for part in ["pockyt", "unified", "terminal"] {
        assert_eq!(first[part]["created"], true, "{first}");
    }
    // The same arguments: the same credentials, nothing added.
    let again = json_of(&merchant(&app, &args));
    assert_eq!(again["created"], false);
    for (part, key, secret) in [
        ("pockyt", "storeNo", "token"),
        ("unified", "appId", "appSecret"),
        ("terminal", "tid", "secret"),
    ] {
        assert_eq!(again[part]["created"], false, "{again}");
        assert_eq!(again[part][key], first[part][key], "{part}: {again}");
        assert_eq!(again[part][secret], first[part][secret], "{part}: {again}");
    }
    // More only when asked for.
    let more = json_of(&merchant(
        &app,
        &[&args[..], &["--add-app", "--add-terminal"]].concat(),
    ));
    assert_eq!(more["unified"]["created"], true, "{more}");
    assert_ne!(more["unified"]["appId"], first["unified"]["appId"]);
    assert_eq!(more["terminal"]["created"], true, "{more}");
    assert_ne!(more["terminal"]["tid"], first["terminal"]["tid"]);
    let still = json_of(&merchant(&app, &args));
    assert_eq!(
        still["unified"]["appId"], first["unified"]["appId"],
        "the first app stays the one shown"
    );
    // The store's token works at once.
    let pos = app.pos_for("700001", "1", first["pockyt"]["token"].as_str().unwrap());
    assert_eq!(pos.add(&reference("m"), "2.00").await["ret_code"], "000100");

    // A setting given for an existing merchant is never ignored.
    let out = merchant(
        &app,
        &[&args[..], &["--timezone", "Europe/Amsterdam"]].concat(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("merchant update --merchant-no 700001 --timezone Europe/Amsterdam"),
        "{}",
        stderr(&out)
    );
    let out = merchant(
        &app,
        &[&args[..], &["--token", "another-token-0123456"]].concat(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another token"), "{}", stderr(&out));

    // A failure half-way leaves nothing: another merchant's app id (or tid) makes the whole
    // create fail, and merchant 700002 does not exist afterwards.
    let app_id = first["unified"]["appId"].as_str().unwrap();
    let tid = first["terminal"]["tid"].as_str().unwrap();
    for taken in [["--app-id", app_id], ["--tid", tid]] {
        let out = merchant(
            &app,
            &[
                &["create", "--merchant-no", "700002", "--store-no", "1"][..],
                &taken,
            ]
            .concat(),
        );
        assert!(!out.status.success(), "{taken:?}");
        let err = stderr(&out);
        assert!(
            err.contains("belongs to another merchant") && err.contains("nothing was written"),
            "{err}"
        );
        let out = merchant(
            &app,
            &["update", "--merchant-no", "700002", "--timezone", "UTC"],
        );
        assert!(
            stderr(&out).contains("there is no merchant 700002"),
            "half a merchant: {}",
            stderr(&out)
        );
    }
}

async fn merchant_update_changes_what_create_leaves_alone(app: TestApp) {
    // Before any request, so the gateway has not cached the merchant's policy yet.
    let set = json_of(&merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            MERCHANT_NO,
            "--require-refund-reference",
            "true",
        ],
    ));
    assert_eq!(set["requireRefundReference"], true, "{set}");
    let pos = app.pos();
    let no = pos.paid(&reference("policy"), "10.00").await;
    let refused = pos.refund(&no, "1.00", None).await;
    assert_eq!(
        refused["ret_code"], "000020",
        "sandbox's default lets it through: {refused}"
    );
    let with = pos.refund(&no, "1.00", Some(&reference("rr"))).await;
    assert_eq!(with["ret_code"], "000100", "{with}");

    // The time zone and schedule of an existing merchant.
    json_of(&merchant(
        &app,
        &["create", "--merchant-no", "700003", "--store-no", "1"],
    ));
    let changed = json_of(&merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            "700003",
            "--timezone",
            "Asia/Shanghai",
            "--notify-schedule-s",
            "0,10",
        ],
    ));
    assert_eq!(changed["timezone"], "Asia/Shanghai", "{changed}");
    assert_eq!(changed["notifySchedule"], "0,10", "{changed}");
    let shown = json_of(&merchant(
        &app,
        &[
            "create",
            "--merchant-no",
            "700003",
            "--store-no",
            "1",
            "--timezone",
            "Asia/Shanghai",
        ],
    ));
    assert_eq!(shown["timezone"], "Asia/Shanghai", "{shown}");
    let back = json_of(&merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            "700003",
            "--notify-schedule-s",
            "default",
            "--require-refund-reference",
            "default",
        ],
    ));
    assert_eq!(back["notifySchedule"], Value::Null, "{back}");
    assert_eq!(back["requireRefundReference"], Value::Null, "{back}");
    // Bad input is refused by name; an update needs something to change.
    for (args, says) in [
        (
            &[
                "update",
                "--merchant-no",
                "700003",
                "--timezone",
                "Mars/Olympus",
            ][..],
            "Mars/Olympus",
        ),
        (
            &[
                "update",
                "--merchant-no",
                "700003",
                "--require-refund-reference",
                "maybe",
            ],
            "maybe",
        ),
        (&["update", "--merchant-no", "700003"], "required"),
    ] {
        let out = merchant(&app, args);
        assert!(
            !out.status.success() && stderr(&out).contains(says),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

async fn a_merchant_may_be_let_off_a_refund_reference_the_default_requires(backend: Backend) {
    let dir = TempDir::new();
    let config = dir.0.join("tillgate.toml");
    std::fs::write(&config, "[replay]\nrequire_refund_reference = true\n").unwrap();
    let config = config.display().to_string();
    let Some(app) = spawn_app_with(backend, &["--config", &config]).await else {
        return;
    };
    let created = json_of(&merchant(
        &app,
        &["create", "--merchant-no", "700004", "--store-no", "1"],
    ));
    let set = json_of(&merchant(
        &app,
        &[
            "update",
            "--merchant-no",
            MERCHANT_NO,
            "--require-refund-reference",
            "false",
        ],
    ));
    assert_eq!(set["requireRefundReference"], false, "{set}");
    let pos = app.pos();
    let no = pos.paid(&reference("off"), "10.00").await;
    let refund = pos.refund(&no, "1.00", None).await;
    assert_eq!(refund["ret_code"], "000100", "{refund}");
    // The merchant without a policy of its own has the default's.
    let other = app.pos_for("700004", "1", created["pockyt"]["token"].as_str().unwrap());
    let no = other.paid(&reference("def"), "10.00").await;
    let refund = other.refund(&no, "1.00", None).await;
    assert_eq!(refund["ret_code"], "000020", "{refund}");
}

#[tokio::test]
async fn sqlite_a_merchant_may_be_let_off_a_refund_reference_the_default_requires() {
    a_merchant_may_be_let_off_a_refund_reference_the_default_requires(Backend::Sqlite).await
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn postgres_a_merchant_may_be_let_off_a_refund_reference_the_default_requires() {
    a_merchant_may_be_let_off_a_refund_reference_the_default_requires(Backend::Postgres).await
}

async fn listings_print_as_tables(app: TestApp) {
    let pos = app.pos();
    let added = pos.add(&reference("table"), "3.52").await;
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "pending");
    let out = tillgate(
        &app.dir,
        &app.database_url,
        &["unresolved", "--format", "table"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("KIND") && lines[0].contains("TRANSACTION"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("payment") && l.contains(&no)),
        "{text}"
    );
    let out = tillgate(
        &app.dir,
        &app.database_url,
        &["notify", "list", "--format", "table"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no notifications",
        "{}",
        stderr(&out)
    );
    let json = json_of(&tillgate(
        &app.dir,
        &app.database_url,
        &["unresolved", "--format", "json"],
    ));
    assert_eq!(json["unresolved"][0]["transactionNo"], no.as_str());
    let out = tillgate(
        &app.dir,
        &app.database_url,
        &["unresolved", "--format", "xml"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("xml"),
        "{}",
        stderr(&out)
    );
}

on_both_backends!(
    merchant_create_is_idempotent_and_atomic,
    merchant_update_changes_what_create_leaves_alone,
    listings_print_as_tables,
    the_sandbox_cli_settles_a_cancel_found_by_its_transaction,
);

/// Runs `tillgate ARGS` with its standard output closed before it writes.
fn with_closed_stdout(dir: &TempDir, args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(&dir.0)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_a_listing_quietly() {
    let app = spawn_app().await;
    let url = app.database_url.clone();
    for args in [
        &["notify", "list", "--database-url", &url][..],
        &["unresolved", "--database-url", &url],
        &["completions", "bash"],
    ] {
        let out = with_closed_stdout(&app.dir, args);
        let err = stderr(&out);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = TempDir::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::new(binary())
            .args(["completions", shell])
            .current_dir(&dir.0)
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && script.contains("merchant")
                && script.contains("master-key-file"),
            "{shell}"
        );
    }
    let out = Command::new(binary())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("tcsh"));
}

#[tokio::test]
async fn shutdown_says_what_it_waits_for_and_a_second_signal_ends_it() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("tillgate.db").display());
    // The terminal request would wait ten minutes for its terminal.
    let (mut child, base) = start(&dir, &url, &["--terminal-wait-ms", "600000"]).unwrap();
    let errors = child.stderr.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(errors).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    let mut terminal =
        TestTerminal::connect(&base, crate::yabandpay::TID, crate::yabandpay::SECRET).await;
    let sale = tokio::spawn({
        let base = base.clone();
        async move {
            let tid = crate::yabandpay::TID;
            let data = json!({"tid": tid, "order_id": crate::yabandpay::order_id(), "amount": "4.00", "currency": "EUR", "request_id": reference("sd"), "operation": "1"});
            // The answer never comes: the process ends first.
            let _ = crate::yabandpay::call(&base, tid, "v3.POS", data).await;
        }
    });
    // The terminal has the command and never answers it: the sale is in flight.
    let command = terminal.command().await;
    let pid = child.id().to_string();
    let interrupt = || Command::new("kill").args(["-INT", &pid]).status().unwrap();
    interrupt();
    let waiting = loop {
        let line = said
            .recv()
            .expect("the gateway ended without saying what it waits for");
        if line.contains("waiting for") {
            break line;
        }
    };
    assert!(
        waiting.contains("POST /Payments")
            && waiting.contains(&format!(
                "sale of transaction {}",
                command["transactionNo"].as_str().unwrap()
            ))
            && waiting.contains(crate::yabandpay::TID),
        "{waiting}"
    );
    interrupt();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "a second Ctrl-C ends it at once");
    sale.abort();
}

async fn the_sandbox_cli_settles_a_cancel_found_by_its_transaction(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("cancel-53"), "5.53").await;
    let cancel = pos.cancel(&no).await;
    assert_eq!(cancel["ret_code"], "000100", "{cancel}");
    let settle = |outcome: &str| {
        Command::new(binary())
            .args(["sandbox", "settle-cancel", "--server", &app.base])
            .args(["--transaction-no", &no, "--outcome", outcome])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = settle("succeeded");
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["transactionNo"], no.as_str(), "{answer}");
    assert_eq!(answer["cancelState"], 2, "{answer}");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "5.53", "reversed in full: {q}");
    // Nothing is in progress any more: the gateway says so, and the command fails with it.
    let out = settle("succeeded");
    assert!(
        !out.status.success() && stderr(&out).contains("no cancel in progress"),
        "{}",
        stderr(&out)
    );
}
