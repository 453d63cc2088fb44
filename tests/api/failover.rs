//! PostgreSQL failover without losing an acknowledged payment. The test builds its own
//! primary and streaming standby (initdb, pg_basebackup) on free ports under a scratch
//! directory, with synchronous replication: the primary acknowledges a commit only once the
//! standby has it. Two gateway nodes run under load with a multi-host database URL
//! (`target_session_attrs=read-write`); the primary is killed (an immediate stop: no shutdown
//! checkpoint, connections cut) and the standby promoted. The nodes must carry on by
//! themselves within seconds; every acknowledged operation must be on the new primary;
//! requests in flight at the crash either completed or got the dialect's retryable system
//! error and were sent again with their idempotency keys; and nothing was applied twice.
//!
//! It needs PostgreSQL's server binaries (`/usr/lib/postgresql/*/bin`, or
//! `TILLGATE_TEST_POSTGRES_BIN`), not the machine's running cluster. Run as root, the
//! clusters run as the `postgres` user.

use crate::crash::{replay, settled, verify, Db, Gateway, Load, Rng};
use crate::helpers::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the nodes may take to carry on after the standby is promoted.
const CARRY_ON_WITHIN: Duration = Duration::from_secs(15);

/// PostgreSQL's server binaries: `TILLGATE_TEST_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb`.
fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TILLGATE_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// True when this process runs as root (PostgreSQL refuses to): the clusters then run as the
/// `postgres` user.
fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs one of PostgreSQL's programs (as `postgres` when we are root); panics with its output
/// when it fails.
fn pg(bin: &Path, program: &str, args: &[&str], cwd: &Path) -> Output {
    let exe = bin.join(program);
    let mut command = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = command
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One PostgreSQL cluster of the test.
struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    fn data_arg(&self) -> String {
        self.data.display().to_string()
    }

    fn start(&mut self) {
        let log = self.root.join(format!("postgres-{}.log", self.port));
        pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data_arg(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
            &self.root,
        );
        self.running = true;
    }

    /// An immediate stop: every process quits at once, no shutdown checkpoint — a crash.
    fn crash(&mut self) {
        pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data_arg(), "-m", "immediate", "-w", "stop"],
            &self.root,
        );
        self.running = false;
    }

    fn promote(&self) {
        pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data_arg(), "-w", "-t", "60", "promote"],
            &self.root,
        );
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn append_config(&self, file: &str, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join(file))
            .unwrap();
        f.write_all(lines.as_bytes()).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let exe = self.bin.join("pg_ctl");
            let data = self.data_arg();
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            let _ = if as_root() {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&exe)
                    .args(args)
                    .output()
            } else {
                Command::new(&exe).args(args).output()
            };
        }
    }
}

/// A primary with one synchronous streaming standby, in `root`.
fn primary_and_standby(bin: &Path, root: &Path) -> (Cluster, Cluster) {
    let mut primary = Cluster {
        bin: bin.to_owned(),
        root: root.to_owned(),
        data: root.join("primary"),
        port: free_port(),
        running: false,
    };
    pg(
        bin,
        "initdb",
        &[
            "-D",
            &primary.data_arg(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ],
        root,
    );
    primary.append_config(
        "postgresql.conf",
        &format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nmax_connections = 100\n\
             synchronous_commit = on\nsynchronous_standby_names = 'standby'\n",
            primary.port,
            root.display()
        ),
    );
    primary.start();
    let mut standby = Cluster {
        bin: bin.to_owned(),
        root: root.to_owned(),
        data: root.join("standby"),
        port: free_port(),
        running: false,
    };
    pg(
        bin,
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-D",
            &standby.data_arg(),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ],
        root,
    );
    // The standby's own port; once promoted it waits for no standby of its own.
    standby.append_config(
        "postgresql.conf",
        &format!(
            "\nport = {}\nsynchronous_standby_names = ''\n",
            standby.port
        ),
    );
    standby.append_config(
        "postgresql.auto.conf",
        &format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby'\n",
            primary.port
        ),
    );
    standby.start();
    (primary, standby)
}

/// Waits until the primary streams to the standby synchronously.
async fn synchronous(primary: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Option<String> = async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&primary.url("postgres"))
                .await
                .ok()?;
            sqlx::query_scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
            )
            .fetch_optional(&mut conn)
            .await
            .ok()?
        }
        .await;
        if state.as_deref() == Some("sync") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a fresh Pockyt add to `base` until one succeeds; returns how long it took.
async fn carries_on(base: &str) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    loop {
        let params = [
            ("amount", "1.00"),
            ("currency", "USD"),
            ("settleCurrency", "USD"),
            ("reference", &reference("after-failover")),
        ];
        let mut all = vec![("merchantNo", MERCHANT_NO), ("storeNo", STORE_NO)];
        all.extend_from_slice(&params);
        let sign = verify_sign(&all, TOKEN);
        let mut body: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        body.insert("verifySign".into(), serde_json::json!(sign));
        let answer = client
            .post(format!("{base}/app-instore/v3/add"))
            .json(&body)
            .send()
            .await;
        if let Ok(resp) = answer {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            if v["ret_code"] == "000100" {
                return started.elapsed();
            }
            assert_eq!(
                v["ret_code"], "000000",
                "only the retryable system error: {v}"
            );
        }
        assert!(
            started.elapsed() < CARRY_ON_WITHIN,
            "{base} did not carry on within {CARRY_ON_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_carry_on_after_the_primary_dies_and_lose_no_acknowledged_operation() {
    let Some(bin) = pg_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup)"
        );
        eprintln!("skipped: no PostgreSQL server binaries (set TILLGATE_TEST_POSTGRES_BIN)");
        return;
    };
    let seed = crate::crash::seed();
    let mut rng = Rng::new(seed);
    let dir = Arc::new(TempDir::new());
    let root = dir.0.join("pg");
    std::fs::create_dir_all(&root).unwrap();
    if as_root() {
        let out = Command::new("chown")
            .args(["postgres", &root.display().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let (mut primary, standby) = primary_and_standby(&bin, &root);
    synchronous(&primary).await;
    admin(&primary.url("postgres"), "CREATE DATABASE tillgate").await;

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/tillgate?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let mut nodes: Vec<Gateway> = (0..2)
        .map(|_| Gateway::new(dir.clone(), &url, &["--channel-timeout-ms", "300"]))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let bases: Vec<String> = nodes.iter().map(Gateway::base).collect();
    let receiver = Receiver::start().await;
    let load = Load::start(&bases, 3, &mut rng, seed, &receiver.url);

    tokio::time::sleep(Duration::from_millis(rng.range(1000, 2000))).await;
    let before = load.journal.all().len();
    primary.crash();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(rng.range(200, 800))).await;
    standby.promote();
    let promoted = killed.elapsed();
    let mut recovery = Vec::new();
    for base in &bases {
        recovery.push(carries_on(base).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (retries, unanswered) = (load.retries.clone(), load.unanswered.clone());
    let journal = load.journal.clone();
    let transactions = load.finish().await;

    // Everything acknowledged is on the new primary, as answered, once.
    let db = Db::open(&standby.url("tillgate")).await;
    settled(&db, Duration::from_secs(30)).await;
    let acked = journal.all();
    let found = verify(&db, &acked).await;
    // Sent again with their keys, acknowledged requests answer as before and change nothing.
    let replayed = replay(&bases[1], &receiver.url, &acked, &mut rng, 200, &db).await;
    db.close().await;
    assert_eq!(
        unanswered.load(Ordering::Relaxed),
        0,
        "every request got an answer: done, or the retryable system error"
    );
    eprintln!(
        "failover: primary killed after {before} acknowledged operations, standby promoted \
         {promoted:?} later, nodes carried on {recovery:?} after the promotion; \
         {transactions} transactions, {found} acknowledged operations all on the new primary; \
         {} requests answered retryable and sent again with their keys; {replayed} \
         acknowledged requests sent again at the end answered as the first time",
        retries.load(Ordering::Relaxed)
    );
    assert!(found > before);
    drop(nodes);
}
