//! Several gateway nodes on one PostgreSQL database, and PostgreSQL faults.

use crate::helpers::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Starts `n` nodes on one fresh database at the same moment (they race to migrate and to
/// create the sandbox merchant), sharing one directory and so one sandbox key file.
pub async fn nodes(n: usize) -> Option<(Vec<TestApp>, Arc<PgDatabase>)> {
    let admin_url = postgres_admin_url()?;
    let db = Arc::new(PgDatabase::create(&admin_url).await);
    let dir = Arc::new(TempDir::new());
    let starts: Vec<_> = (0..n)
        .map(|_| {
            let dir = dir.clone();
            let url = db.url.clone();
            std::thread::spawn(move || start(&dir, &url, &[]))
        })
        .collect();
    let mut apps = Vec::new();
    for s in starts {
        let (child, base) = s.join().unwrap().expect("every node starts");
        apps.push(TestApp {
            base,
            child,
            dir: dir.clone(),
            database_url: db.url.clone(),
            client: reqwest::Client::new(),
            database: None,
        });
    }
    Some((apps, db))
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn three_nodes_never_refund_more_than_was_paid_and_each_key_refunds_once() {
    let Some((apps, _db)) = nodes(3).await else {
        return;
    };
    let pos: Vec<Pos> = apps.iter().map(TestApp::pos).collect();
    let no = pos[0].paid(&reference("nodes"), "100.00").await;

    // 40 keys of 3.00 (120.00 asked, 100.00 paid), each sent to all three nodes at once.
    let mut tasks = Vec::new();
    for k in 0..40 {
        for p in &pos {
            let p = p.clone();
            let no = no.clone();
            let key = format!("node-key-{k}");
            tasks.push(tokio::spawn(async move {
                let answer = p.refund(&no, "3.00", Some(&key)).await;
                (key, answer)
            }));
        }
    }
    let mut successes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (key, answer): (String, Value) = t.await.unwrap();
        match answer["ret_code"].as_str().unwrap() {
            "000100" => {
                assert_eq!(answer["result"]["refundAmount"], "3.00");
                assert_eq!(answer["result"]["status"], "success");
                let refund_no = answer["result"]["refundTransactionNo"].as_str().unwrap();
                successes
                    .entry(key)
                    .or_default()
                    .insert(refund_no.to_owned());
            }
            // Refused: nothing left to refund, or the same key is in flight on another node.
            "000040" => {}
            other => panic!("unexpected answer {other}: {answer}"),
        }
    }
    for (key, refund_nos) in &successes {
        assert_eq!(
            refund_nos.len(),
            1,
            "key {key} produced several refunds: {refund_nos:?}"
        );
    }
    assert_eq!(
        successes.len(),
        33,
        "exactly 33 refunds of 3.00 fit into 100.00"
    );

    // Every node agrees with what is stored, and what is stored agrees with the answers.
    for p in &pos {
        let q = p.query(&no).await;
        assert_eq!(q["result"]["refundAmount"], "99.00", "{q}");
        let stored: BTreeMap<String, String> = q["result"]["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["refundReference"].as_str().unwrap().to_owned(),
                    r["refundTransactionNo"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(stored.len(), 33);
        for (key, refund_nos) in &successes {
            assert_eq!(
                Some(refund_nos.iter().next().unwrap()),
                stored.get(key),
                "{key}"
            );
        }
    }
    // A retry of a key that got its refund replays it on any node.
    let (key, refund_nos) = successes.iter().next().unwrap();
    let again = pos[2].refund(&no, "3.00", Some(key)).await;
    assert_eq!(
        again["result"]["refundTransactionNo"].as_str().unwrap(),
        refund_nos.iter().next().unwrap()
    );
}

#[tokio::test]
#[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
async fn a_lost_database_connection_answers_system_error_then_recovers() {
    let Some(app) = spawn_app_on(Backend::Postgres).await else {
        return;
    };
    let pos = app.pos();
    let no = pos.paid(&reference("lost"), "50.00").await;
    let db = app.database.as_ref().unwrap();
    admin(
        &db.admin_url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ),
    )
    .await;
    let mut refunded = 0;
    for i in 0..20 {
        let answer = pos.refund(&no, "1.00", Some(&format!("lost-{i}"))).await;
        match answer["ret_code"].as_str().unwrap() {
            "000100" => refunded += 1,
            "000000" => {}
            other => panic!("unexpected answer {other}: {answer}"),
        }
    }
    assert!(refunded > 0, "the node never recovered its connections");
    let q = pos.query(&no).await;
    assert_eq!(q["result"]["refunds"].as_array().unwrap().len(), refunded);
    assert_eq!(q["result"]["refundAmount"], format!("{refunded}.00"));
}

#[test]
fn an_unreachable_postgres_at_start_is_a_clear_error() {
    let dir = TempDir::new();
    let err = start(&dir, "postgres://postgres@127.0.0.1:1/tillgate", &[]).expect_err("must fail");
    assert!(err.contains("cannot open database"), "{err}");
}
