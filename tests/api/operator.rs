//! The operator's side: merchant creation, isolation between merchants, restarts, modes.

use crate::helpers::*;
use std::process::Command;
use std::sync::Arc;

fn merchant_create(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary())
        .args(["merchant", "create", "--database-url", &app.database_url])
        .args(args)
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn a_created_merchant_works_at_once_and_never_sees_another_merchants_transactions(
    app: TestApp,
) {
    let created = merchant_create(&app, &["--merchant-no", "700001", "--store-no", "1"]);
    assert_eq!(created["pockyt"]["created"], true);
    let token = created["pockyt"]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    let b = app.pos_for("700001", "1", &token);

    // Adding a second store to the same merchant, and asking again for the first.
    let second = merchant_create(
        &app,
        &[
            "--merchant-no",
            "700001",
            "--store-no",
            "2",
            "--token",
            "0123456789abcdef0123",
        ],
    );
    assert_eq!(second["pockyt"]["created"], true);
    assert_eq!(second["pockyt"]["token"], "0123456789abcdef0123");
    let again = merchant_create(&app, &["--merchant-no", "700001", "--store-no", "1"]);
    assert_eq!(again["pockyt"]["created"], false);
    assert_eq!(again["pockyt"]["token"], token.as_str());

    let a = app.pos();
    let a_no = a.paid(&reference("a"), "40").await;
    let b_no = b.paid(&reference("b"), "40").await;
    // Merchant B can neither read nor refund nor cancel A's transaction, and vice versa.
    assert_eq!(b.query(&a_no).await["ret_code"], "000021");
    assert_eq!(b.refund(&a_no, "1", None).await["ret_code"], "000021");
    assert_eq!(b.cancel(&a_no).await["ret_code"], "000021");
    assert_eq!(a.query(&b_no).await["ret_code"], "000021");
    assert_eq!(a.query(&a_no).await["result"]["refundAmount"], "0.00");
    // B's second store sees B's transactions: data belongs to the merchant.
    let b2 = app.pos_for("700001", "2", "0123456789abcdef0123");
    assert_eq!(b2.query(&b_no).await["ret_code"], "000100");
}

#[tokio::test]
async fn tokens_are_sealed_at_rest() {
    let app = spawn_app().await;
    let db = std::fs::read(app.dir.0.join("tillgate.db")).unwrap();
    let wal = std::fs::read(app.dir.0.join("tillgate.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "a token is stored in clear"
        );
    }
    let key = app.dir.0.join("tillgate.db.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

async fn sigterm_shuts_down_gracefully_and_a_restart_keeps_everything(mut app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("restart"), "12.00").await;
    assert_eq!(
        pos.refund(&no, "2", None).await["result"]["status"],
        "success"
    );
    assert!(app.terminate(), "tillgate exits cleanly on SIGTERM");

    let restarted = spawn_on(app.dir.clone(), &app.database_url.clone(), &[]).await;
    let q = restarted.pos().query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "2.00", "{q}");
    // The sandbox merchant is not created twice and its tokens still open.
    assert_eq!(q["ret_code"], "000100");
}

#[tokio::test]
async fn production_mode_refuses_sandbox_credentials_and_a_missing_master_key() {
    let app = spawn_app().await;
    let url = app.database_url.clone();
    let _keep = app.dir.clone();
    drop(app);
    let dir = TempDir::new();
    let err = start(&dir, &url, &["--mode", "production"]).expect_err("must refuse");
    assert!(err.contains("master key"), "{err}");
    let key = key_file(&dir, "00");
    let production = [
        &["--mode", "production", "--master-key-file", &key][..],
        &PRODUCTION_WALLET,
    ]
    .concat();
    let err = start(&dir, &url, &production).expect_err("must refuse");
    assert!(err.contains("sandbox merchant"), "{err}");
    // A fresh database in production mode starts, and serves no sandbox control endpoint.
    let fresh = format!("sqlite://{}", dir.0.join("prod.db").display());
    let (mut child, base) = start(&dir, &fresh, &production).unwrap();
    let status = reqwest::Client::new()
        .post(format!("{base}/sandbox/v1/payments/1/settle"))
        .json(&serde_json::json!({"outcome": "paid"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `tillgate serve` in production mode on a fresh database; returns its exit status and
/// what it wrote to stderr, or panics when it is still running after 30 s (it started serving).
async fn serve_exits(dir: &TempDir, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let url = format!("sqlite://{}", dir.0.join("prod.db").display());
    let key = key_file(dir, "00");
    let run = tokio::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--mode", "production", "--master-key-file", &key])
        .args(extra)
        .current_dir(&dir.0)
        .env("RUST_LOG", "warn")
        .env_remove("TILLGATE_CHANNEL")
        .env_remove("TILLGATE_CHANNEL_KEY")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("production mode started serving without a wallet")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn production_refuses_to_start_without_a_wallet_of_its_own() {
    let dir = TempDir::new();
    // No wallet configured: the sandbox wallet is not what production falls back to.
    let (status, err) = serve_exits(&dir, &[]).await;
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("production mode needs a wallet") && err.contains("TILLGATE_CHANNEL"),
        "{err}"
    );
    // Nor when it is asked for by name.
    let (status, err) = serve_exits(&dir, &["--channel", "sandbox"]).await;
    assert!(!status.success() && err.contains("needs a wallet"), "{err}");
    // A merchant's own wallet table that names no wallet would run that merchant on the sandbox.
    let config = dir.0.join("tillgate.toml");
    std::fs::write(
        &config,
        "[merchant_channels.\"700001\"]\ntimeout_ms = 500\n",
    )
    .unwrap();
    let mut extra = PRODUCTION_WALLET.to_vec();
    let config_arg = config.display().to_string();
    extra.extend(["--config", &config_arg]);
    let (status, err) = serve_exits(&dir, &extra).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("[merchant_channels.\"700001\"]"), "{err}");
}

async fn the_sandbox_cli_plays_the_wallet(app: TestApp) {
    let pos = app.pos();
    let added = pos.add(&reference("cli"), "3.52").await;
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "pending");
    let out = Command::new(binary())
        .args([
            "sandbox",
            "settle",
            "--server",
            &app.base,
            "--transaction-no",
            &no,
            "--outcome",
            "declined",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));
    assert_eq!(
        pos.query(&no).await["result"]["transactionStatus"],
        "failed"
    );
    // Settling it again is refused by the gateway: the command fails with its status and body.
    let again = sandbox_settle(&app.base, &no, "paid");
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("409") && err.contains("not pending"), "{err}");
}

fn sandbox_settle(server: &str, transaction_no: &str, outcome: &str) -> std::process::Output {
    Command::new(binary())
        .args(["sandbox", "settle", "--server", server])
        .args(["--transaction-no", transaction_no, "--outcome", outcome])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_sandbox_cli_says_when_it_cannot_reach_the_gateway() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = sandbox_settle(&format!("http://127.0.0.1:{port}"), "1", "paid");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the gateway") && err.contains(&port.to_string()),
        "{err}"
    );
    let out = sandbox_settle("ftp://127.0.0.1:1", "1", "paid");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--server must be an http:// URL"), "{err}");
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = Arc::new(TempDir::new());
    let err = start(&dir, "sqlite:///nonexistent-dir/x/y.db", &[]).expect_err("must fail");
    assert!(
        err.to_lowercase().contains("database") || err.contains("key file"),
        "{err}"
    );
}

on_both_backends!(
    a_created_merchant_works_at_once_and_never_sees_another_merchants_transactions,
    sigterm_shuts_down_gracefully_and_a_restart_keeps_everything,
    the_sandbox_cli_plays_the_wallet,
);
