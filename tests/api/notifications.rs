//! Notifications that are never lost: schedules, attempts, ordering, restarts, resends — with a
//! real HTTP receiver on a loopback port.

use crate::helpers::*;
use std::time::Duration;

/// A short schedule so that retries happen within seconds: at once, then 1 s apart.
const FAST: &[&str] = &[
    "--notify-schedule-s",
    "0,1,1,1,1",
    "--notify-timeout-ms",
    "400",
];

async fn paid_with_ipn(app: &TestApp, ipn: &str, amount: &str) -> String {
    let pos = app.pos();
    let r = reference("ipn");
    let added = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", amount),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &r),
                ("ipnUrl", ipn),
            ],
        )
        .await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    let no = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pos.pay(&no).await["result"]["transactionStatus"], "success");
    no
}

fn verifies(r: &Received) -> bool {
    let pairs: Vec<(&str, &str)> = r
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    r.field("verifySign") == Some(verify_sign(&pairs, TOKEN).as_str())
}

async fn a_pockyt_ipn_is_retried_on_schedule_with_every_attempt_recorded(backend: Backend) {
    let Some(app) = spawn_app_with(backend, FAST).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![
        Answer {
            status: 500,
            body: "error",
            delay_ms: 0,
        },
        Answer::ok("fail"),
        Answer {
            status: 200,
            body: "success",
            delay_ms: 1500,
        },
    ]);
    let no = paid_with_ipn(&app, &receiver.url, "12.34").await;
    let got = receiver.wait_for(4, 20).await;
    assert_eq!(got.len(), 4, "four attempts reach the receiver");
    for r in &got {
        assert_eq!(r.content_type, "application/x-www-form-urlencoded");
        assert_eq!(r.path, "/notify");
        assert!(
            verifies(r),
            "the IPN verifies with the store's token: {:?}",
            r.form
        );
        assert_eq!(r.field("transactionNo"), Some(no.as_str()));
        assert_eq!(r.field("status"), Some("success"));
        assert_eq!(r.field("amount"), Some("12.34"));
        assert!(r.form.iter().all(|(_, v)| !v.is_empty()), "no empty field");
    }
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "attempts {gap:?} apart, the schedule says 1 s"
        );
    }
    let n = app.wait_for_notification(&no, 0, "delivered", 10).await;
    assert_eq!(n["attempts"], 4, "{n}");
    let log = n["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0]["httpStatus"], 500);
    assert_eq!(log[0]["response"], "error");
    assert_eq!(log[1]["httpStatus"], 200);
    assert_eq!(log[1]["response"], "fail");
    assert_eq!(log[2]["error"], "timed out");
    assert_eq!(log[3]["httpStatus"], 200);
    assert!(n["deliveredAt"].is_string());
}

async fn a_notification_nobody_acknowledges_is_kept_as_failed_and_can_be_resent(backend: Backend) {
    let Some(app) = spawn_app_with(
        backend,
        &["--notify-schedule-s", "0,1", "--notify-timeout-ms", "400"],
    )
    .await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![Answer::ok("fail"), Answer::ok("FAIL")]);
    let no = paid_with_ipn(&app, &receiver.url, "5.00").await;
    let n = app.wait_for_notification(&no, 0, "failed", 15).await;
    assert_eq!(n["status"], "failed", "{n}");
    assert_eq!(n["attempts"], 2);
    let id = n["id"].as_i64().unwrap();

    // Listed among the failed ones, then sent again by the operator.
    let (_, failed) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/notifications?status=failed",
            None,
            Vec::new(),
        )
        .await;
    assert!(failed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == id));
    let (status, resent) = app
        .raw(
            reqwest::Method::POST,
            &format!("/admin/v1/notifications/{id}/resend"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    let n = app.wait_for_notification(&no, 0, "delivered", 10).await;
    assert_eq!(n["status"], "delivered", "{n}");
    assert_eq!(
        n["attemptLog"].as_array().unwrap().len(),
        3,
        "every attempt is kept"
    );
    assert_eq!(receiver.received().len(), 3);
}

async fn a_later_notification_never_overtakes_an_earlier_one(backend: Backend) {
    let Some(app) = spawn_app_with(backend, FAST).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![Answer::ok("fail"), Answer::ok("fail")]);
    let no = paid_with_ipn(&app, &receiver.url, "30.00").await;
    // Refund while the paid notification is still being retried; its IPN inherits the ipnUrl.
    let refund = app.pos().refund(&no, "10.00", None).await;
    assert_eq!(refund["result"]["status"], "success");
    let got = receiver.wait_for(4, 20).await;
    assert_eq!(got.len(), 4, "{got:?}");
    let last_paid = got
        .iter()
        .rposition(|r| r.field("refundTransactionNo").is_none())
        .unwrap();
    let first_refund = got
        .iter()
        .position(|r| r.field("refundTransactionNo").is_some())
        .unwrap();
    assert!(
        last_paid < first_refund,
        "the refund IPN arrived before the payment's: {got:?}"
    );
    assert_eq!(got[3].field("refundAmount"), Some("10.00"));
    assert!(verifies(&got[3]));
}

async fn a_restart_in_the_middle_of_a_schedule_loses_nothing(backend: Backend) {
    let schedule = &["--notify-schedule-s", "0,2,2", "--notify-timeout-ms", "400"];
    let Some(mut app) = spawn_app_with(backend, schedule).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.script(vec![Answer::ok("fail")]);
    let no = paid_with_ipn(&app, &receiver.url, "7.00").await;
    receiver.wait_for(1, 10).await;
    // Wait until the first attempt is recorded, then kill the gateway outright.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.notifications_of(&no).await[0]["attempts"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "first attempt never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.child.kill().unwrap();
    app.child.wait().unwrap();

    let database = app.database.take();
    let restarted = spawn_on(app.dir.clone(), &app.database_url.clone(), schedule).await;
    let got = receiver.wait_for(2, 15).await;
    assert_eq!(got.len(), 2, "the second attempt comes after the restart");
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(1900),
        "the schedule was not reset"
    );
    let n = restarted
        .wait_for_notification(&no, 0, "delivered", 10)
        .await;
    assert_eq!(n["attempts"], 2, "{n}");
    assert_eq!(n["attemptLog"].as_array().unwrap().len(), 2);
    drop(restarted);
    drop(database);
}

async fn a_receiver_that_is_down_gets_retried_and_recorded(backend: Backend) {
    let Some(app) = spawn_app_with(
        backend,
        &["--notify-schedule-s", "0,1", "--notify-timeout-ms", "400"],
    )
    .await
    else {
        return;
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ipn", closed.local_addr().unwrap());
    drop(closed);
    let no = paid_with_ipn(&app, &url, "3.00").await;
    let n = app.wait_for_notification(&no, 0, "failed", 15).await;
    assert_eq!(n["status"], "failed", "{n}");
    let log = n["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|a| a["httpStatus"].is_null() && a["error"].is_string()),
        "{n}"
    );
}

/// A receiver that accepts connections, reads what is sent and never answers.
struct Blackhole {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ipn", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        Blackhole {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn a_receiver_that_never_answers_delays_no_other_merchants_notifications(backend: Backend) {
    let timeout = Duration::from_secs(6);
    let Some(app) = spawn_app_with(backend, &["--notify-timeout-ms", "6000"]).await else {
        return;
    };
    let out = std::process::Command::new(binary())
        .args(["merchant", "create", "--database-url", &app.database_url])
        .args(["--merchant-no", "700101", "--store-no", "1"])
        .args(["--token", "merchant-b-token-0123"])
        .current_dir(&app.dir.0)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = app.pos_for("700101", "1", "merchant-b-token-0123");

    // Merchant A's receiver takes the connections and never answers.
    let blackhole = Blackhole::start().await;
    let a_first = paid_with_ipn(&app, &blackhole.url, "1.00").await;
    paid_with_ipn(&app, &blackhole.url, "2.00").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while blackhole.accepted() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "A's notifications never left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Merchant B's notifications go out while A's wait for their answer.
    let receiver = Receiver::start().await;
    let started = std::time::Instant::now();
    let mut b_numbers = Vec::new();
    for amount in ["3.00", "4.00"] {
        let r = reference("b");
        let added = b
            .call(
                "/app-instore/v3/add",
                &[
                    ("amount", amount),
                    ("currency", "USD"),
                    ("settleCurrency", "USD"),
                    ("reference", &r),
                    ("ipnUrl", &receiver.url),
                ],
            )
            .await;
        assert_eq!(added["ret_code"], "000100", "{added}");
        let no = added["result"]["transactionNo"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(b.pay(&no).await["result"]["transactionStatus"], "success");
        b_numbers.push(no);
    }
    let got = receiver.wait_for(2, 6).await;
    assert_eq!(got.len(), 2, "B's notifications arrived");
    let slowest = got.iter().map(|r| r.at - started).max().unwrap();
    assert!(
        slowest < Duration::from_millis(2000),
        "B's notifications took {slowest:?}, held behind A's receiver (time-out {timeout:?})"
    );
    for no in &b_numbers {
        let n = app.wait_for_notification(no, 0, "delivered", 2).await;
        assert_eq!(n["status"], "delivered", "{n}");
    }
    // A's are still waiting for their answer; then time out, each attempt recorded.
    let a = app.notifications_of(&a_first).await;
    assert_eq!(a[0]["status"], "pending", "{a:?}");
    assert_eq!(a[0]["attempts"], 0, "{a:?}");
    let deadline = std::time::Instant::now() + timeout + Duration::from_secs(5);
    loop {
        let a = app.notifications_of(&a_first).await;
        if a[0]["attempts"] == 1 {
            assert_eq!(a[0]["attemptLog"][0]["error"], "timed out", "{a:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

macro_rules! notification_stories {
    ($($story:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[tokio::test] async fn $story() { super::$story(crate::helpers::Backend::Sqlite).await } )*
        }
        mod on_postgres {
            $( #[tokio::test]
            #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
            async fn $story() { super::$story(crate::helpers::Backend::Postgres).await } )*
        }
    };
}

notification_stories!(
    a_pockyt_ipn_is_retried_on_schedule_with_every_attempt_recorded,
    a_notification_nobody_acknowledges_is_kept_as_failed_and_can_be_resent,
    a_later_notification_never_overtakes_an_earlier_one,
    a_restart_in_the_middle_of_a_schedule_loses_nothing,
    a_receiver_that_is_down_gets_retried_and_recorded,
    a_receiver_that_never_answers_delays_no_other_merchants_notifications,
);

#[tokio::test]
async fn production_refuses_notification_urls_into_private_networks() {
    let dir = std::sync::Arc::new(TempDir::new());
    let url = format!("sqlite://{}", dir.0.join("prod.db").display());
    let key = key_file(&dir, "11");
    let out = std::process::Command::new(binary())
        .args([
            "merchant",
            "create",
            "--create",
            "--database-url",
            &url,
            "--master-key-file",
            &key,
            "--mode",
            "production",
        ])
        .args([
            "--merchant-no",
            "800001",
            "--store-no",
            "1",
            "--token",
            "prodtoken0123456789",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let production = [
        &["--mode", "production", "--master-key-file", &key][..],
        &PRODUCTION_WALLET,
    ]
    .concat();
    let app = spawn_on(dir, &url, &production).await;
    let pos = app.pos_for("800001", "1", "prodtoken0123456789");
    for forbidden in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.8/ipn",
        "http://169.254.169.254/x",
        "gopher://example.com/",
        // The same addresses as the HTTP client's URL parser reads them.
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://0/",
        "http://127。0。0。1/",
        "http://localhost./ipn",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::8]/",
        "http://[fe80::1]/",
        // Backslashes and userinfo, which parsers split differently.
        "http://evil.example\\@127.0.0.1/",
        "http://127.0.0.1\\@evil.example/",
        "http://evil.example@127.0.0.1/",
        "http://127.0.0.1:80@evil.example/",
    ] {
        let r = reference("prod");
        let answer = pos
            .call(
                "/app-instore/v3/add",
                &[
                    ("amount", "1"),
                    ("currency", "USD"),
                    ("settleCurrency", "USD"),
                    ("reference", &r),
                    ("ipnUrl", forbidden),
                ],
            )
            .await;
        assert_eq!(answer["ret_code"], "000023", "{forbidden}: {answer}");
        assert!(
            answer["ret_msg"].as_str().unwrap().starts_with("ipnUrl"),
            "{answer}"
        );
    }
    let ok = pos
        .call(
            "/app-instore/v3/add",
            &[
                ("amount", "1"),
                ("currency", "USD"),
                ("settleCurrency", "USD"),
                ("reference", &reference("prod")),
                ("ipnUrl", "https://shop.example.com/ipn"),
            ],
        )
        .await;
    assert_eq!(ok["ret_code"], "000100", "{ok}");
    // Production without an admin token serves no admin API.
    let (status, _) = app
        .raw(
            reqwest::Method::GET,
            "/admin/v1/notifications",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 404);
}
