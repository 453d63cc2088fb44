//! The console over HTTP: signing in and out, sessions, what each role sees, the search, the
//! transaction's page, the users' command line, and what a hostile browser or user tries.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::Command;

/// A client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in; answers the session cookie (`name=value`) or the refusal's status.
pub async fn sign_in(app: &TestApp, login: &str, password: &str) -> Result<String, u16> {
    let resp = client()
        .post(format!("{}/console/login", app.base))
        .form(&[("login", login), ("password", password)])
        .send()
        .await
        .unwrap();
    if resp.status().as_u16() != 303 {
        return Err(resp.status().as_u16());
    }
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(cookie.contains("Path=/console"), "{cookie}");
    Ok(cookie.split(';').next().unwrap().to_owned())
}

/// A console page under the session `cookie`: (status, body).
pub async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String) {
    let resp = client()
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The CSRF token of the first form of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

fn user(app: &TestApp, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let args: Vec<&str> = ["user"].iter().chain(args).copied().collect();
    tillgate_command(app, &args, stdin)
}

/// A unified order of the sandbox's second merchant (M1621873433953); answers its number.
async fn unified_order(app: &TestApp, amount: &str) -> String {
    let mut order = json!({
        "mchNo": "M1621873433953",
        "appId": "60cc09bce4b0f1c0b83761c9",
        "reqTime": "1700000000123",
        "version": "1.0",
        "signType": "MD5",
        "mchOrderNo": reference("console"),
        "wayCode": "QR_CASHIER",
        "amount": amount,
        "currency": "cny",
        "subject": "tea",
        "body": "tea",
    });
    let pairs: Vec<(String, String)> = order
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    order["sign"] = json!(crate::unified::jeepay_sign(&pairs, "offline-test-key"));
    let v: Value = app
        .client
        .post(format!("{}/api/pay/unifiedOrder", app.base))
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 0, "{v}");
    v["data"]["payOrderId"]
        .as_str()
        .unwrap()
        .trim_start_matches('P')
        .to_owned()
}

async fn signing_in_finding_and_seeing_a_transaction(app: TestApp) {
    // Without a session every page sends the browser to sign in.
    let resp = client()
        .get(format!("{}/console/transactions", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/console/login");

    let pos = app.pos();
    let order = reference("findme");
    let no = pos.paid(&order, "12.30").await;
    let refund = pos.refund(&no, "2.30", Some("rf-console-1")).await;
    assert_eq!(refund["ret_code"], "000100", "{refund}");

    let cookie = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (status, html) = page(&app, &cookie, "/console/transactions").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&no),
        "the newest transaction is listed: {html}"
    );
    // Each filter finds it, and a filter it fails does not.
    for query in [
        format!("reference={order}"),
        format!("no={no}"),
        "refund=rf-console-1".to_owned(),
        "status=partially_refunded&merchant=200043&dialect=pockyt".to_owned(),
    ] {
        let (status, html) = page(&app, &cookie, &format!("/console/transactions?{query}")).await;
        assert_eq!(status, 200);
        assert!(html.contains(&no), "{query}: {html}");
    }
    let (_, html) = page(&app, &cookie, "/console/transactions?status=refunded").await;
    assert!(!html.contains(&no));
    let (_, html) = page(
        &app,
        &cookie,
        "/console/transactions?from=2020-01-01&to=2020-01-31",
    )
    .await;
    assert!(html.contains("No transaction matches"), "{html}");
    // Nonsense is said, not searched.
    for (query, said) in [
        ("from=yesterday", "from must be a day"),
        ("status=nope", "status must be one of"),
        ("from=2026-02-02&to=2026-02-01", "from is after to"),
        ("before=1e9", "before must be"),
    ] {
        let (status, html) = page(&app, &cookie, &format!("/console/transactions?{query}")).await;
        assert_eq!(status, 200);
        assert!(html.contains(said), "{query}: {html}");
        assert!(!html.contains(&no), "{query}: nothing is listed");
    }

    // An amount range, in a currency; without one it is said, not guessed.
    let (_, html) = page(
        &app,
        &cookie,
        "/console/transactions?currency=usd&min=12.30&max=12.30",
    )
    .await;
    assert!(html.contains(&no), "{html}");
    let (_, html) = page(
        &app,
        &cookie,
        "/console/transactions?currency=USD&min=12.31",
    )
    .await;
    assert!(!html.contains(&no), "{html}");
    let (_, html) = page(&app, &cookie, "/console/transactions?min=1.00").await;
    assert!(html.contains("an amount range needs a currency"), "{html}");
    let (_, html) = page(&app, &cookie, "/console/transactions?currency=XXZ").await;
    assert!(html.contains("currency must be"), "{html}");

    // The export: every match as CSV, with its header, quoted.
    let (status, csv) = page(
        &app,
        &cookie,
        &format!("/console/transactions.csv?reference={order}"),
    )
    .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("transactionNo,merchantNo"), "{csv}");
    assert!(
        lines[1].contains(&format!("\"{no}\"")) && lines[1].contains(",12.30,2.30,"),
        "{csv}"
    );

    // The transaction's page: the payment, its refund, its timeline and its notifications.
    let (status, html) = page(&app, &cookie, &format!("/console/transactions/{no}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("12.30 USD"), "{html}");
    assert!(html.contains("rf-console-1"), "{html}");
    assert!(html.contains("partially_refunded"), "{html}");
    assert!(html.contains("data-test=\"timeline\""), "{html}");
    // The sign-in is on the operator's page of the audit log.
    let (status, html) = page(&app, &cookie, "/console/users/operator").await;
    assert_eq!(status, 200);
    assert!(html.contains("sign-in"), "{html}");

    // Signing out needs the session's CSRF token, and ends the session.
    let resp = client()
        .post(format!("{}/console/logout", app.base))
        .header("cookie", &cookie)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (_, html) = page(&app, &cookie, "/console/transactions").await;
    let resp = client()
        .post(format!("{}/console/logout", app.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = page(&app, &cookie, "/console/transactions").await;
    assert_eq!(status, 303, "the session is over");
}

async fn a_merchants_staff_sees_its_merchant_only(app: TestApp) {
    let other = unified_order(&app, "777").await;
    let own = app.pos().paid(&reference("own"), "3.00").await;
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (status, html) = page(&app, &operator, &format!("/console/transactions/{other}")).await;
    assert_eq!(status, 200, "{html}");

    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    let (status, html) = page(&app, &cashier, "/console/transactions").await;
    assert_eq!(status, 200);
    assert!(html.contains(&own), "{html}");
    assert!(
        !html.contains(&other),
        "another merchant's transaction: {html}"
    );
    // Not by its number, not by naming its merchant, not by its page.
    for path in [
        format!("/console/transactions?no={other}"),
        "/console/transactions?merchant=M1621873433953".to_owned(),
    ] {
        let (_, html) = page(&app, &cashier, &path).await;
        assert!(
            !html.contains(&format!("/console/transactions/{other}")),
            "{path}: {html}"
        );
        assert!(html.contains("No transaction matches"), "{path}: {html}");
    }
    let (status, html) = page(&app, &cashier, &format!("/console/transactions/{other}")).await;
    assert_eq!(status, 404);
    assert!(!html.contains("7.77"), "{html}");
    // Nor another user's audit log.
    let (status, _) = page(&app, &cashier, "/console/users/operator").await;
    assert_eq!(status, 404);
    let (status, _) = page(&app, &cashier, "/console/users/cashier").await;
    assert_eq!(status, 200);
}

async fn wrong_passwords_lock_a_login_and_hostile_forms_are_refused(app: TestApp) {
    assert_eq!(sign_in(&app, "operator", "wrong password!").await, Err(401));
    assert_eq!(sign_in(&app, "nobody", "sandbox-operator").await, Err(401));
    for _ in 0..4 {
        assert_eq!(sign_in(&app, "cashier", "not the password").await, Err(401));
    }
    // The fifth wrong password locks the login: the right one is refused too, for a while.
    assert_eq!(sign_in(&app, "cashier", "not the password").await, Err(401));
    assert_eq!(sign_in(&app, "cashier", "sandbox-cashier").await, Err(401));
    // An operator unlocks it by giving it a new password.
    let out = user(&app, &["reset-password", "--login", "cashier"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fresh = printed["password"].as_str().unwrap().to_owned();
    assert!(sign_in(&app, "cashier", &fresh).await.is_ok());

    // A form posted from another site is refused before anything is checked.
    let resp = client()
        .post(format!("{}/console/login", app.base))
        .header("origin", "http://evil.example")
        .form(&[("login", "operator"), ("password", "sandbox-operator")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.headers().get("set-cookie").is_none());
    // A forged or odd cookie is no session.
    for cookie in [
        format!("tillgate_console={}", "a".repeat(64)),
        "tillgate_console=../../etc".to_owned(),
        format!("tillgate_console={}", "é".repeat(40)),
    ] {
        let resp = client()
            .get(format!("{}/console/transactions", app.base))
            .header("cookie", cookie.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303, "{cookie}");
    }
    // The refusals are in the audit log, with what was tried.
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (_, html) = page(&app, &operator, "/console/users/cashier").await;
    assert!(html.contains("sign-in refused"), "{html}");
    assert!(html.contains("locked after wrong passwords"), "{html}");
    assert!(html.contains("password reset"), "{html}");
}

async fn users_are_made_and_ended_on_the_command_line(app: TestApp) {
    let out = user(
        &app,
        &["create", "--login", "ana", "--role", "merchant-staff"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--merchant-no"));
    let out = user(
        &app,
        &["create", "--login", "bad login!", "--role", "auditor"],
        None,
    );
    assert!(!out.status.success());
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "ana",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "ana",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["role"], "auditor");
    assert!(
        printed.get("password").is_none(),
        "a given password is not printed"
    );
    let again = user(
        &app,
        &["create", "--login", "ana", "--role", "auditor"],
        None,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));

    let session = sign_in(&app, "ana", "a long enough password")
        .await
        .unwrap();
    let (status, _) = page(&app, &session, "/console/transactions").await;
    assert_eq!(status, 200);
    // Disabled: the session ends at once and no sign-in works.
    let out = user(&app, &["disable", "--login", "ana"], None);
    assert!(out.status.success());
    let (status, _) = page(&app, &session, "/console/transactions").await;
    assert_eq!(status, 303);
    assert_eq!(
        sign_in(&app, "ana", "a long enough password").await,
        Err(401)
    );
    let out = user(&app, &["enable", "--login", "ana"], None);
    assert!(out.status.success());
    assert!(sign_in(&app, "ana", "a long enough password").await.is_ok());

    let out = user(&app, &["list", "--format", "table"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("ana") && table.contains("auditor"),
        "{table}"
    );
    assert!(
        table.contains("cashier") && table.contains("200043"),
        "{table}"
    );
    let out = user(&app, &["disable", "--login", "nobody"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no console user"));
}

async fn the_admin_api_searches_a_page_at_a_time(app: TestApp) {
    let pos = app.pos();
    let prefix = reference("page");
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(pos.paid(&format!("{prefix}-{i}"), "1.00").await);
    }
    // The console's export pages through every match the same way (500 to a page).
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (_, csv) = page(
        &app,
        &operator,
        "/console/transactions.csv?status=paid&merchant=200043",
    )
    .await;
    for no in &made {
        assert_eq!(csv.matches(&format!("\"{no}\"")).count(), 1, "{csv}");
    }
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/admin/v1/transactions?merchant=200043&status=paid&limit=3",
            app.base
        );
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let v: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for t in v["transactions"].as_array().unwrap() {
            seen.push(t["transactionNo"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => break,
        }
    }
    // Newest first, each once, across pages (the sandbox's paid samples come after).
    let mine: Vec<&String> = seen.iter().filter(|n| made.contains(n)).collect();
    made.reverse();
    assert_eq!(mine, made.iter().collect::<Vec<_>>());
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no transaction twice: {seen:?}");
    for bad in [
        "limit=0",
        "limit=501",
        "status=lost",
        "from=2026-13-01",
        "before=x",
    ] {
        let resp = app
            .client
            .get(format!("{}/admin/v1/transactions?{bad}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{bad}");
    }
}

fn field_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn post(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let resp = client()
        .post(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap())
}

async fn refunds_cancels_and_resends_go_through_the_lifecycle_once(app: TestApp) {
    let pos = app.pos();
    let no = pos.paid(&reference("act"), "20.00").await;
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let path = format!("/console/transactions/{no}");
    let (_, html) = page(&app, &operator, &path).await;
    let csrf = csrf_of(&html);
    let key = field_of(&html, "key");
    let refund = |amount: &'static str, key: String| {
        let (app, operator, path, csrf) = (&app, &operator, &path, &csrf);
        async move {
            post(
                app,
                operator,
                &format!("{path}/refund"),
                &[
                    ("csrf", csrf),
                    ("key", &key),
                    ("amount", amount),
                    ("reason", "broken cup"),
                ],
            )
            .await
        }
    };
    // The form posted twice (a double click) refunds once.
    let (status, to, _) = refund("2.50", key.clone()).await;
    assert_eq!(
        (status, to.as_str()),
        (303, format!("{path}?done=refund").as_str())
    );
    let (status, _, _) = refund("2.50", key.clone()).await;
    assert_eq!(status, 303);
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "2.50", "{q}");
    // The same form with another amount is refused; so is more than is refundable.
    let (status, _, html) = refund("3.00", key.clone()).await;
    assert_eq!(status, 409, "{html}");
    let (_, html2) = page(&app, &operator, &path).await;
    let (status, _, html) = refund("99.00", field_of(&html2, "key")).await;
    assert_eq!(status, 409);
    assert!(
        html.contains("more than is refundable (17.50 USD)"),
        "{html}"
    );
    for bad in ["-1", "0", "1.001", "abc", ""] {
        let (status, _, _) = refund(bad, field_of(&html2, "key")).await;
        assert_eq!(status, 400, "{bad}");
    }
    let q = pos.query(&no).await;
    assert_eq!(
        q["result"]["refundAmount"], "2.50",
        "nothing else moved: {q}"
    );
    // Without the session's token, or from another site, nothing happens.
    let (status, _, _) = post(
        &app,
        &operator,
        &format!("{path}/refund"),
        &[("csrf", "x"), ("key", &key), ("amount", "1.00")],
    )
    .await;
    assert_eq!(status, 403);
    let resp = client()
        .post(format!("{}{path}/refund", app.base))
        .header("cookie", &operator)
        .header("origin", "http://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("key", "f".repeat(32).as_str()),
            ("amount", "1.00"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // An auditor reads but does not act.
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "audra",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        Some("auditor password 1\n"),
    );
    assert!(out.status.success());
    let auditor = sign_in(&app, "audra", "auditor password 1").await.unwrap();
    let (_, html) = page(&app, &auditor, &path).await;
    assert!(!html.contains("data-test=\"refund\""), "{html}");
    let (status, _, _) = post(
        &app,
        &auditor,
        &format!("{path}/refund"),
        &[
            ("csrf", &csrf_of(&html)),
            ("key", &"e".repeat(32)),
            ("amount", "1.00"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // The refund is on the transaction's page, with who did it.
    let (_, html) = page(&app, &operator, &path).await;
    assert!(html.contains("broken cup"), "{html}");
    assert!(html.contains("refund refused"), "{html}");

    // A reversal on the day it was paid; asked again it answers the first.
    let other = pos.paid(&reference("act"), "5.00").await;
    let other_path = format!("/console/transactions/{other}");
    let (_, html) = page(&app, &operator, &other_path).await;
    let csrf = csrf_of(&html);
    let (status, to, _) = post(
        &app,
        &operator,
        &format!("{other_path}/cancel"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (303, format!("{other_path}?done=cancel").as_str())
    );
    let q = pos.query(&other).await;
    assert_eq!(q["result"]["voidAmount"], "5.00", "reversed in full: {q}");
    let (_, html) = page(&app, &operator, &other_path).await;
    assert!(html.contains(">cancelled<"), "{html}");

    // A notification of another transaction cannot be resent through this one.
    let resp: Value = app
        .client
        .get(format!("{}/admin/v1/notifications?limit=100", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(n) = resp.as_array().and_then(|a| a.first()) {
        let id = n["id"].as_i64().unwrap();
        let (status, _, _) = post(
            &app,
            &operator,
            &format!("{path}/notifications/{id}/resend"),
            &[("csrf", &csrf)],
        )
        .await;
        assert!(status == 404 || status == 303, "{status}");
    }
    let (status, _, _) = post(
        &app,
        &operator,
        &format!("{path}/notifications/999999/resend"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 404);

    // Sandbox: a pending payment (amount ending in 52) is settled from its page.
    let added = pos.add(&reference("act"), "3.52").await;
    let pending = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    pos.pay(&pending).await;
    let pending_path = format!("/console/transactions/{pending}");
    let (_, html) = page(&app, &operator, &pending_path).await;
    assert!(html.contains("data-test=\"settle-paid\""), "{html}");
    let (status, _, _) = post(
        &app,
        &operator,
        &format!("{pending_path}/settle"),
        &[("csrf", &csrf_of(&html)), ("outcome", "paid")],
    )
    .await;
    assert_eq!(status, 303);
    let q = pos.query(&pending).await;
    assert_eq!(q["result"]["transactionStatus"], "success", "{q}");
}

fn merchant_update(app: &TestApp, args: &[&str]) {
    let out = Command::new(binary())
        .args(["merchant", "update", "--merchant-no", "200043"])
        .args(args)
        .args(["--database-url", &app.database_url])
        .current_dir(&app.dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn refunds_above_the_threshold_wait_for_a_second_person(app: TestApp) {
    merchant_update(
        &app,
        &[
            "--refund-authority",
            "approval",
            "--approval-threshold-minor",
            "500",
        ],
    );
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "boss",
            "--role",
            "merchant-admin",
            "--merchant-no",
            "200043",
            "--password-stdin",
        ],
        Some("boss password 123\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pos = app.pos();
    let no = pos.paid(&reference("mc"), "30.00").await;
    let path = format!("/console/transactions/{no}");
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    let (_, html) = page(&app, &cashier, &path).await;
    let csrf = csrf_of(&html);
    // Up to the threshold: at once.
    let (status, to, _) = post(
        &app,
        &cashier,
        &format!("{path}/refund"),
        &[
            ("csrf", &csrf),
            ("key", &field_of(&html, "key")),
            ("amount", "5.00"),
        ],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (303, format!("{path}?done=refund").as_str())
    );
    // Above it: it waits, nothing is refunded yet; the form posted twice asks once.
    let key = field_of(&page(&app, &cashier, &path).await.1, "key");
    for _ in 0..2 {
        let (status, to, _) = post(
            &app,
            &cashier,
            &format!("{path}/refund"),
            &[
                ("csrf", &csrf),
                ("key", &key),
                ("amount", "12.00"),
                ("reason", "wrong size"),
            ],
        )
        .await;
        assert_eq!(
            (status, to.as_str()),
            (303, format!("{path}?done=refund-requested").as_str())
        );
    }
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "5.00", "{q}");
    let (_, html) = page(&app, &cashier, "/console/approvals").await;
    assert_eq!(html.matches("wrong size").count(), 1, "{html}");
    assert!(html.contains("yours: another person decides"), "{html}");
    let id: i64 = html
        .split("data-test=\"pending\"")
        .nth(1)
        .unwrap()
        .split("<td>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The one who asked cannot approve; staff cannot either.
    let (status, to, _) = post(
        &app,
        &cashier,
        &format!("/console/approvals/{id}/approve"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (303, "/console/approvals?error=not-yours")
    );
    // The merchant's admin rejects without a reason: refused; with one: rejected.
    let boss = sign_in(&app, "boss", "boss password 123").await.unwrap();
    let (_, html) = page(&app, &boss, "/console/approvals").await;
    let boss_csrf = csrf_of(&html);
    assert!(
        html.contains(&format!("data-test=\"approve-{id}\"")),
        "{html}"
    );
    let (_, to, _) = post(
        &app,
        &boss,
        &format!("/console/approvals/{id}/reject"),
        &[("csrf", &boss_csrf), ("reason", " ")],
    )
    .await;
    assert_eq!(to, "/console/approvals?error=reason");
    let (_, to, _) = post(
        &app,
        &boss,
        &format!("/console/approvals/{id}/reject"),
        &[("csrf", &boss_csrf), ("reason", "keep the receipt")],
    )
    .await;
    assert_eq!(to, "/console/approvals?done=rejected");
    let (_, to, _) = post(
        &app,
        &boss,
        &format!("/console/approvals/{id}/approve"),
        &[("csrf", &boss_csrf)],
    )
    .await;
    assert_eq!(
        to, "/console/approvals?error=decided",
        "a decision is final"
    );
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "5.00", "{q}");

    // Asked again, approved by an operator: carried out through the lifecycle, once.
    let key = field_of(&page(&app, &cashier, &path).await.1, "key");
    post(
        &app,
        &cashier,
        &format!("{path}/refund"),
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("amount", "12.00"),
            ("reason", "second try"),
        ],
    )
    .await;
    let (_, html) = page(&app, &boss, "/console/approvals").await;
    let id: i64 = html
        .split("data-test=\"pending\"")
        .nth(1)
        .unwrap()
        .split("<td>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let op_csrf = csrf_of(&page(&app, &operator, "/console/approvals").await.1);
    let (_, to, _) = post(
        &app,
        &operator,
        &format!("/console/approvals/{id}/approve"),
        &[("csrf", &op_csrf)],
    )
    .await;
    assert_eq!(to, "/console/approvals?done=approved");
    let (_, to, _) = post(
        &app,
        &operator,
        &format!("/console/approvals/{id}/approve"),
        &[("csrf", &op_csrf)],
    )
    .await;
    assert_eq!(to, "/console/approvals?error=decided");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "17.00", "{q}");
    let (_, html) = page(&app, &operator, &path).await;
    assert!(
        html.contains("refund approved") && html.contains("refund rejected"),
        "{html}"
    );
    assert!(html.contains("keep the receipt"), "{html}");

    // Disabled: the staff cannot refund at all; the admin still can.
    merchant_update(&app, &["--refund-authority", "disabled"]);
    let (_, html) = page(&app, &cashier, &path).await;
    let (status, _, _) = post(
        &app,
        &cashier,
        &format!("{path}/refund"),
        &[
            ("csrf", &csrf),
            ("key", &field_of(&html, "key")),
            ("amount", "1.00"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (_, html) = page(&app, &boss, &path).await;
    let (status, _, _) = post(
        &app,
        &boss,
        &format!("{path}/refund"),
        &[
            ("csrf", &boss_csrf),
            ("key", &field_of(&html, "key")),
            ("amount", "1.00"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refundAmount"], "18.00", "{q}");
}

async fn the_dashboard_and_the_operators_lists(app: TestApp) {
    let pos = app.pos();
    for amount in ["10.00", "20.00", "5.51"] {
        let added = pos.add(&reference("dash"), amount).await;
        pos.pay(added["result"]["transactionNo"].as_str().unwrap())
            .await;
    }
    // Money in flight: the wallet does not answer a pay ending in 52.
    let added = pos.add(&reference("dash"), "3.52").await;
    let pending = added["result"]["transactionNo"]
        .as_str()
        .unwrap()
        .to_owned();
    pos.pay(&pending).await;
    let other = unified_order(&app, "990").await;

    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (status, html) = page(&app, &operator, "/console/dashboard?merchant=200043").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<svg"), "{html}");
    // Three paid today (the sandbox's samples were paid at its first start, today too).
    let paid: i64 = html
        .split("data-test=\"paid-count\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(paid >= 2, "{html}");
    assert!(html.contains("data-test=\"success-rate\">"), "{html}");
    assert!(html.contains("data-test=\"volume\""), "{html}");
    // One of the day's payments was declined (5.51), so the rate is under 100%.
    assert!(!html.contains("data-test=\"success-rate\">100%"), "{html}");
    assert!(!html.contains("data-test=\"success-rate\">—"), "{html}");
    let (_, html) = page(
        &app,
        &operator,
        "/console/dashboard?merchant=200043&day=2001-01-01",
    )
    .await;
    assert!(html.contains("No payment that day."), "{html}");
    let (_, html) = page(&app, &operator, "/console/dashboard?merchant=nobody").await;
    assert!(html.contains("No such merchant."), "{html}");
    let (_, html) = page(&app, &operator, "/console/dashboard?day=someday").await;
    assert!(html.contains("day must be a day"), "{html}");

    // The unresolved operation is listed for the operator, with its transaction.
    let (status, html) = page(&app, &operator, "/console/unresolved").await;
    assert_eq!(status, 200);
    assert!(html.contains(&pending), "{html}");
    let (status, html) = page(&app, &operator, "/console/notifications?status=any").await;
    assert_eq!(status, 200, "{html}");
    let (status, _) = page(&app, &operator, "/console/notifications?status=lost").await;
    assert_eq!(status, 400);
    let csrf = csrf_of(&html);
    let (status, to, _) = post(
        &app,
        &operator,
        "/console/notifications/resend",
        &[("csrf", &csrf), ("since", "2020-01-01")],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (303, "/console/notifications?status=pending&done=resent")
    );
    let (status, _, _) = post(
        &app,
        &operator,
        "/console/notifications/resend",
        &[("csrf", &csrf), ("since", "soon")],
    )
    .await;
    assert_eq!(status, 400);

    // A merchant's staff: its own merchant's day only, and not the operators' lists.
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    let (status, html) = page(&app, &cashier, "/console/dashboard?merchant=M1621873433953").await;
    assert_eq!(status, 200);
    assert!(!html.contains("CNY"), "another merchant's currency: {html}");
    for path in ["/console/unresolved", "/console/notifications"] {
        let (status, _) = page(&app, &cashier, path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = post(
        &app,
        &cashier,
        "/console/notifications/resend",
        &[
            (
                "csrf",
                &csrf_of(&page(&app, &cashier, "/console/dashboard").await.1),
            ),
            ("since", "2020-01-01"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (_, html) = page(
        &app,
        &operator,
        "/console/dashboard?merchant=M1621873433953",
    )
    .await;
    assert!(
        html.contains("CNY") || html.contains(&other),
        "the unified merchant's day: {html}"
    );
}

async fn a_merchants_settings_are_changed_by_its_admin_or_an_operator(app: TestApp) {
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "boss",
            "--role",
            "merchant-admin",
            "--merchant-no",
            "200043",
            "--password-stdin",
        ],
        Some("boss password 123\n"),
    );
    assert!(out.status.success());
    let boss = sign_in(&app, "boss", "boss password 123").await.unwrap();
    let path = "/console/merchants/200043";
    let (status, html) = page(&app, &boss, path).await;
    assert_eq!(status, 200, "{html}");
    let csrf = csrf_of(&html);
    let form = |name: &'static str,
                zone: &'static str,
                authority: &'static str,
                threshold: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_owned()),
            ("zone", zone.to_owned()),
            ("schedule", "0,30,60".to_owned()),
            ("authority", authority.to_owned()),
            ("threshold", threshold.to_owned()),
        ]
    };
    let post_form = |fields: Vec<(&'static str, String)>| {
        let (app, boss) = (&app, &boss);
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(app, boss, path, &pairs).await
        }
    };
    // A bad field changes nothing.
    for bad in [
        form("Tea House", "Mars/Olympus", "approval", "500"),
        form("Tea House", "Asia/Shanghai", "maybe", "500"),
        form("Tea House", "Asia/Shanghai", "approval", "-5"),
    ] {
        let (status, _, html) = post_form(bad).await;
        assert_eq!(status, 400, "{html}");
    }
    let (_, html) = page(&app, &boss, path).await;
    assert!(html.contains("data-test=\"name\">—"), "{html}");
    let (status, to, _) =
        post_form(form("Tea House", "Europe/Amsterdam", "approval", "2500")).await;
    assert_eq!(
        (status, to.as_str()),
        (303, "/console/merchants/200043?done=saved")
    );
    let (_, html) = page(&app, &boss, path).await;
    assert!(html.contains("data-test=\"name\">Tea House"), "{html}");
    assert!(
        html.contains("Europe/Amsterdam") && html.contains("above 2500"),
        "{html}"
    );
    let (_, html) = page(&app, &boss, "/console/users/boss").await;
    assert!(html.contains("merchant settings"), "{html}");

    // Staff read them; they do not change them. Another merchant's are not found.
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    let (status, html) = page(&app, &cashier, path).await;
    assert_eq!(status, 200);
    assert!(!html.contains("data-test=\"settings\""), "{html}");
    let cashier_csrf = csrf_of(&html);
    let (status, _, _) = post(
        &app,
        &cashier,
        path,
        &[
            ("csrf", &cashier_csrf),
            ("name", "x"),
            ("zone", "UTC"),
            ("authority", "immediate"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = page(&app, &cashier, "/console/merchants/M1621873433953").await;
    assert_eq!(status, 404);
    let (status, _) = page(&app, &boss, "/console/merchants/M1621873433953").await;
    assert_eq!(status, 404);
}

fn dd(html: &str, test: &str) -> String {
    let marker = format!("data-test=\"{test}\">");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {test}: {html}"))
        + marker.len();
    html[at..].split('<').next().unwrap().to_owned()
}

async fn an_operator_creates_a_merchant_whose_credentials_work(app: TestApp) {
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (status, html) = page(&app, &operator, "/console/merchants/new").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    let create = |no: &'static str, store: &'static str, zone: &'static str| {
        let (app, operator, csrf) = (&app, &operator, &csrf);
        async move {
            post(
                app,
                operator,
                "/console/merchants/new",
                &[
                    ("csrf", csrf),
                    ("merchant_no", no),
                    ("store_no", store),
                    ("zone", zone),
                    ("name", "Noodle Bar"),
                ],
            )
            .await
        }
    };
    assert_eq!(create("", "1", "UTC").await.0, 400);
    assert_eq!(create("777001", "1", "Nowhere/Land").await.0, 400);
    let (status, _, html) = create("777001", "1", "Asia/Shanghai").await;
    assert_eq!(status, 200, "{html}");
    let token = dd(&html, "token");
    assert_eq!(token.len(), 32, "{html}");
    assert!(!dd(&html, "terminal-secret").is_empty());
    // Its store's token works at once with the Pockyt API.
    let pos = app.pos_for("777001", "1", &token);
    let added = pos.add(&reference("new"), "1.00").await;
    assert_eq!(added["ret_code"], "000100", "{added}");
    // Its secrets are never shown again: a second creation is refused.
    let (status, _, html) = create("777001", "2", "UTC").await;
    assert_eq!(status, 409);
    assert!(!html.contains(&token));
    // Only operators create merchants.
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    assert_eq!(page(&app, &cashier, "/console/merchants/new").await.0, 403);
    let (_, html) = page(&app, &operator, "/console/users/operator").await;
    assert!(html.contains("merchant created"), "{html}");

    // A second store, an app and a terminal added to it: each secret shown once, and works.
    let path = "/console/merchants/777001/add";
    let (status, _, html) = post(
        &app,
        &operator,
        path,
        &[("csrf", &csrf), ("kind", "store"), ("key", "2")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let second = dd(&html, "new-secret");
    let v = app
        .pos_for("777001", "2", &second)
        .add(&reference("new"), "1.00")
        .await;
    assert_eq!(v["ret_code"], "000100", "{v}");
    let (status, _, html) = post(
        &app,
        &operator,
        path,
        &[("csrf", &csrf), ("kind", "store"), ("key", "2")],
    )
    .await;
    assert_eq!(
        status, 409,
        "an existing store's secret is never shown again"
    );
    assert!(!html.contains(&second));
    for kind in ["app", "terminal"] {
        let (status, _, html) = post(
            &app,
            &operator,
            path,
            &[("csrf", &csrf), ("kind", kind), ("key", "")],
        )
        .await;
        assert_eq!(status, 200, "{kind}: {html}");
        assert!(!dd(&html, "new-secret").is_empty());
    }
    let (status, _, _) = post(
        &app,
        &operator,
        path,
        &[("csrf", &csrf), ("kind", "coin"), ("key", "")],
    )
    .await;
    assert_eq!(status, 400);
    let boss_out = user(
        &app,
        &[
            "create",
            "--login",
            "boss7",
            "--role",
            "merchant-admin",
            "--merchant-no",
            "777001",
            "--password-stdin",
        ],
        Some("boss seven password\n"),
    );
    assert!(boss_out.status.success());
    let boss = sign_in(&app, "boss7", "boss seven password").await.unwrap();
    let boss_csrf = csrf_of(&page(&app, &boss, "/console/merchants/777001").await.1);
    let (status, _, _) = post(
        &app,
        &boss,
        path,
        &[("csrf", &boss_csrf), ("kind", "store"), ("key", "3")],
    )
    .await;
    assert_eq!(status, 403, "only operators add credentials");
}

async fn staff_confined_to_a_store_see_that_store_only(app: TestApp) {
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "till2",
            "--role",
            "merchant-staff",
            "--merchant-no",
            "200043",
            "--store",
            "nope",
            "--password-stdin",
        ],
        Some("till two password\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no store nope"));
    let out = user(
        &app,
        &[
            "create",
            "--login",
            "till2",
            "--role",
            "merchant-staff",
            "--merchant-no",
            "200043",
            "--store",
            "300014",
            "--password-stdin",
        ],
        Some("till two password\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["stores"], json!(["300014"]));
    let mine = app
        .pos_for("200043", "300014", "5cbfb079f15b150122261c8537086d77a")
        .paid(&reference("mine"), "2.00")
        .await;
    let theirs = app.pos().paid(&reference("theirs"), "3.00").await;
    let till = sign_in(&app, "till2", "till two password").await.unwrap();
    let (_, html) = page(&app, &till, "/console/transactions").await;
    assert!(html.contains(&mine), "{html}");
    assert!(!html.contains(&theirs), "{html}");
    let (_, html) = page(
        &app,
        &till,
        &format!("/console/transactions?store=303660&no={theirs}"),
    )
    .await;
    assert!(html.contains("No transaction matches"), "{html}");
    assert_eq!(
        page(&app, &till, &format!("/console/transactions/{theirs}"))
            .await
            .0,
        404
    );
    assert_eq!(
        page(&app, &till, &format!("/console/transactions/{theirs}/live"))
            .await
            .0,
        404
    );
    assert_eq!(
        page(&app, &till, &format!("/console/transactions/{mine}"))
            .await
            .0,
        200
    );
    let (_, csv) = page(&app, &till, "/console/transactions.csv").await;
    assert!(csv.contains(&mine) && !csv.contains(&theirs), "{csv}");
    assert_eq!(page(&app, &till, "/console/dashboard").await.0, 404);
}

async fn a_rotated_token_is_in_force_at_once_and_the_old_one_only_for_its_grace(app: TestApp) {
    const OLD: &str = "359c05eb811c7c8576f4a8a277dc6f6b";
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let path = "/console/merchants/200043";
    let csrf = csrf_of(&page(&app, &operator, path).await.1);
    let rotate = |grace: &'static str| {
        let (app, operator, csrf) = (&app, &operator, &csrf);
        async move {
            let (status, _, html) = post(
                app,
                operator,
                &format!("{path}/rotate"),
                &[
                    ("csrf", csrf),
                    ("kind", "store"),
                    ("key", "303660"),
                    ("grace", grace),
                ],
            )
            .await;
            assert_eq!(status, 200, "{html}");
            dd(&html, "new-secret")
        }
    };
    let add = |token: String| {
        let app = &app;
        async move {
            let v = app
                .pos_for("200043", "303660", &token)
                .add(&reference("rot"), "1.00")
                .await;
            v["ret_code"].as_str().unwrap_or("?").to_owned()
        }
    };
    let first = rotate("60").await;
    assert_eq!(first.len(), 32);
    assert_eq!(add(first.clone()).await, "000100", "the new token at once");
    assert_eq!(
        add(OLD.to_owned()).await,
        "000100",
        "the old one during its grace"
    );
    // Rotated again with no grace: only the newest works.
    let second = rotate("0").await;
    assert_eq!(add(second.clone()).await, "000100");
    assert_ne!(
        add(first).await,
        "000100",
        "the previous one is refused after its grace"
    );
    assert_ne!(add(OLD.to_owned()).await, "000100");
    // Bad forms change nothing; staff cannot rotate.
    for (kind, key, grace) in [
        ("store", "nope", "5"),
        ("coin", "303660", "5"),
        ("store", "303660", "-1"),
    ] {
        let (status, _, _) = post(
            &app,
            &operator,
            &format!("{path}/rotate"),
            &[
                ("csrf", &csrf),
                ("kind", kind),
                ("key", key),
                ("grace", grace),
            ],
        )
        .await;
        assert!(
            status == 400 || status == 404,
            "{kind} {key} {grace}: {status}"
        );
    }
    assert_eq!(add(second.clone()).await, "000100");
    let cashier = sign_in(&app, "cashier", "sandbox-cashier").await.unwrap();
    let cashier_csrf = csrf_of(&page(&app, &cashier, path).await.1);
    let (status, _, _) = post(
        &app,
        &cashier,
        &format!("{path}/rotate"),
        &[
            ("csrf", &cashier_csrf),
            ("kind", "store"),
            ("key", "303660"),
            ("grace", "5"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (_, html) = page(&app, &operator, "/console/users/operator").await;
    assert!(html.contains("credential rotated"), "{html}");

    // The unified app's secret: rotated with no grace, the old secret is refused.
    let (status, _, html) = post(
        &app,
        &operator,
        "/console/merchants/M1621873433953/rotate",
        &[
            ("csrf", &csrf),
            ("kind", "app"),
            ("key", "60cc09bce4b0f1c0b83761c9"),
            ("grace", "0"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let fresh = dd(&html, "new-secret");
    assert_eq!(fresh.len(), 64);
    let order = |secret: &str| {
        let mut order = json!({
            "mchNo": "M1621873433953", "appId": "60cc09bce4b0f1c0b83761c9", "reqTime": "1700000000123",
            "version": "1.0", "signType": "MD5", "mchOrderNo": reference("rot"), "wayCode": "QR_CASHIER",
            "amount": "100", "currency": "cny", "subject": "t", "body": "t",
        });
        let pairs: Vec<(String, String)> = order
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        order["sign"] = json!(crate::unified::jeepay_sign(&pairs, secret));
        order
    };
    for (secret, accepted) in [(fresh.as_str(), true), ("offline-test-key", false)] {
        let v: Value = app
            .client
            .post(format!("{}/api/pay/unifiedOrder", app.base))
            .json(&order(secret))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["code"] == 0, accepted, "{v}");
    }
}

async fn merchant_rotate_on_the_command_line(app: TestApp) {
    let out = tillgate_command(
        &app,
        &[
            "merchant",
            "rotate",
            "--merchant-no",
            "200043",
            "--store-no",
            "300014",
            "--grace-minutes",
            "5",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["kind"], "store");
    let fresh = printed["secret"].as_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 32);
    assert!(printed["previousAcceptedUntil"].as_str().is_some());
    let out = tillgate_command(
        &app,
        &[
            "merchant",
            "rotate",
            "--merchant-no",
            "200043",
            "--tid",
            "nope",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no terminal nope"));
    // A gateway that reads the credential again (here: started anew) takes both during the grace.
    let dir = app.dir.clone();
    let url = app.database_url.clone();
    let database = app.database.clone();
    drop(app);
    let mut again = spawn_on(dir, &url, &[]).await;
    again.database = database;
    for token in [fresh.as_str(), "5cbfb079f15b150122261c8537086d77a"] {
        let v = again
            .pos_for("200043", "300014", token)
            .add(&reference("cli"), "1.00")
            .await;
        assert_eq!(v["ret_code"], "000100", "{token}: {v}");
    }
}

/// The transactions made on one terminal, by the admin API and on the console's page: a
/// YabandPay terminal's barcode payments and the sales it took as a POS terminal, and nothing
/// of another terminal or of a Pockyt store; paged by the same keyset.
async fn the_search_finds_a_terminals_payments(app: TestApp) {
    use crate::yabandpay::{call, order_id, OTHER_TID, SECRET, TID};
    let barcode = |tid: &'static str| {
        let base = app.base.clone();
        async move {
            let paid = call(&base, tid, "v3.BarcodePayment", json!({"order_id": order_id(), "auth_code": "2812", "amount": "4.00", "currency": "EUR", "description": "x"})).await;
            assert_eq!(paid["status"], true, "{paid}");
            paid["data"]["trade_id"].as_str().unwrap().to_owned()
        }
    };
    let mut mine = vec![barcode(TID).await, barcode(TID).await];
    let mut terminal = crate::terminal_client::TestTerminal::connect(&app.base, TID, SECRET).await;
    mine.push(crate::yabandpay::sale_on_terminal(&app.base, &mut terminal, "6.00").await);
    let other = barcode(OTHER_TID).await;
    let pockyt = app.pos().paid(&reference("t"), "4.00").await;

    let search = |query: String| {
        let app = &app;
        async move {
            let mut seen = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let mut url = format!("{}/admin/v1/transactions?{query}&limit=1", app.base);
                if let Some(b) = &before {
                    url.push_str(&format!("&before={b}"));
                }
                let v: Value = app
                    .client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for t in v["transactions"].as_array().unwrap() {
                    seen.push(t["transactionNo"].as_str().unwrap().to_owned());
                }
                match v["next"].as_str() {
                    Some(n) => before = Some(n.to_owned()),
                    None => break,
                }
            }
            seen
        }
    };
    mine.reverse();
    assert_eq!(search(format!("terminal={TID}")).await, mine);
    assert_eq!(
        search(format!("terminal={OTHER_TID}")).await,
        vec![other.clone()]
    );
    assert_eq!(
        search(format!("terminal={TID}&status=paid&merchant=200043")).await,
        mine
    );
    // A Pockyt store is not a terminal; an unknown terminal made nothing.
    assert!(search("terminal=303660".into()).await.is_empty());
    assert!(search("terminal=T000".into()).await.is_empty());
    // The console's page and its form.
    let operator = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    let (status, html) = page(
        &app,
        &operator,
        &format!("/console/transactions?terminal={TID}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("data-test=\"terminal\""), "{html}");
    for no in &mine {
        assert!(html.contains(no.as_str()), "{no}: {html}");
    }
    assert!(!html.contains(&other) && !html.contains(&pockyt), "{html}");
}

on_both_backends!(
    the_search_finds_a_terminals_payments,
    a_rotated_token_is_in_force_at_once_and_the_old_one_only_for_its_grace,
    merchant_rotate_on_the_command_line,
    staff_confined_to_a_store_see_that_store_only,
    an_operator_creates_a_merchant_whose_credentials_work,
    a_merchants_settings_are_changed_by_its_admin_or_an_operator,
    a_session_ends_when_idle_and_after_twelve_hours,
    the_search_pages_through_a_hundred_thousand_transactions,
    the_dashboard_and_the_operators_lists,
    refunds_above_the_threshold_wait_for_a_second_person,
    refunds_cancels_and_resends_go_through_the_lifecycle_once,
    signing_in_finding_and_seeing_a_transaction,
    a_merchants_staff_sees_its_merchant_only,
    wrong_passwords_lock_a_login_and_hostile_forms_are_refused,
    users_are_made_and_ended_on_the_command_line,
    the_admin_api_searches_a_page_at_a_time,
);

/// 10⁵ transactions written straight into the database, then read back through the admin
/// API's search 500 at a time: every one exactly once, newest first, on both backends.
async fn the_search_pages_through_a_hundred_thousand_transactions(app: TestApp) {
    const N: i64 = 100_000;
    let now = chrono::Utc::now().timestamp_millis();
    let insert = "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, \
        reference, amount_minor, currency, settle_currency, state, fingerprint, created_at, \
        updated_at, expires_at) \
        SELECT '9' || substr('00000000000000000' || i, -17, 17), m.id, '200043', '303660', \
        'bulk-' || i, 100 + i % 900, 'USD', 'USD', 'created', 'bulk', NOW_MS - (N - i), NOW_MS, \
        NOW_MS + 3600000 FROM SERIES, merchants m WHERE m.merchant_no = '200043'"
        .replace("NOW_MS", &now.to_string())
        .replace("N -", &format!("{N} -"));
    match &app.database {
        Some(db) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let sql = insert
                .replace("SERIES", &format!("generate_series(1, {N}) AS s(i)"))
                .replace(
                    "'9' || substr('00000000000000000' || i, -17, 17)",
                    "'9' || lpad(i::text, 17, '0')",
                );
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
            // What autovacuum does after a bulk load; without statistics the planner takes the
            // new table for a small one.
            sqlx::query("ANALYZE payments")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        None => {
            use sqlx::Connection;
            let path = app.database_url.trim_start_matches("sqlite://");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&mut conn)
                .await
                .unwrap();
            let sql = format!(
                "WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < {N}) {}",
                insert.replace("SERIES", "series")
            );
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
    }
    let mut seen = 0i64;
    let mut last: Option<String> = None;
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!(
            "{}/admin/v1/transactions?merchant=200043&status=created&limit=500",
            app.base
        );
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let v: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for t in v["transactions"].as_array().unwrap() {
            let no = t["transactionNo"].as_str().unwrap().to_owned();
            if let Some(prev) = &last {
                assert!(no < *prev, "newest first, each once: {no} after {prev}");
            }
            last = Some(no);
            seen += 1;
        }
        match v["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, N);
    assert_eq!(
        pages,
        N / 500 + 1,
        "the last page is the empty one after a full page"
    );
    assert_eq!(last.as_deref(), Some("900000000000000001"));
}

/// Moves every session's times back by `by_ms` in the database, as if it were that much older.
async fn age_sessions(app: &TestApp, created_ms: i64, seen_ms: i64) {
    use sqlx::Connection;
    let sql = format!(
        "UPDATE console_sessions SET created_at = created_at - {created_ms}, \
         last_seen_at = last_seen_at - {seen_ms}"
    );
    match &app.database {
        Some(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
        None => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
    }
}

async fn a_session_ends_when_idle_and_after_twelve_hours(app: TestApp) {
    const MINUTE: i64 = 60_000;
    let cookie = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    // 29 minutes unused: still signed in (and its use is noted).
    age_sessions(&app, 29 * MINUTE, 29 * MINUTE).await;
    assert_eq!(page(&app, &cookie, "/console/transactions").await.0, 200);
    // 31 minutes unused: over.
    age_sessions(&app, 31 * MINUTE, 31 * MINUTE).await;
    assert_eq!(page(&app, &cookie, "/console/transactions").await.0, 303);
    // In use all along, but signed in 12 hours ago: over too.
    let cookie = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    age_sessions(&app, 12 * 60 * MINUTE + MINUTE, 0).await;
    assert_eq!(page(&app, &cookie, "/console/transactions").await.0, 303);
    let cookie = sign_in(&app, "operator", "sandbox-operator").await.unwrap();
    assert_eq!(page(&app, &cookie, "/console/transactions").await.0, 200);
}
