//! Server processes under test: `tillgate serve`, and this binary's own baseline server, each
//! started on a free loopback port and stopped with SIGTERM like an operator would.

use anyhow::{bail, Context};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of standard error kept to explain a failure.
const STDERR_LINES: usize = 40;

/// A running server process.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// The `tillgate` next to this executable (where `cargo build` puts both).
pub fn default_tillgate() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tillgate")))
        .unwrap_or_else(|| PathBuf::from("tillgate"))
}

/// `tillgate serve` on a free loopback port with `database_url`, logs at `warn`.
pub fn tillgate_command(tillgate: &Path, database_url: &str, work_dir: &Path) -> Command {
    let mut c = Command::new(tillgate);
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ])
    .current_dir(work_dir)
    .env("RUST_LOG", "warn")
    // A start-up error then reads as one line instead of a backtrace.
    .env("RUST_BACKTRACE", "0")
    .env("RUST_LIB_BACKTRACE", "0")
    .env_remove("TILLGATE_CONFIG")
    .env_remove("TILLGATE_MASTER_KEY")
    .env_remove("TILLGATE_MASTER_KEY_FILE")
    .env_remove("TILLGATE_MODE")
    .env_remove("TILLGATE_LISTEN")
    .env_remove("TILLGATE_DATABASE_URL");
    c
}

/// This binary's baseline (a) server on a free loopback port.
pub fn baseline_command() -> anyhow::Result<Command> {
    let me = std::env::current_exe().context("cannot find the benchmark's own executable")?;
    let mut c = Command::new(me);
    c.args(["baseline-server", "--listen", "127.0.0.1:0"]);
    Ok(c)
}

/// The `HOST:PORT` of a `… listening on http://HOST:PORT` line.
fn listening_address(line: &str) -> Option<&str> {
    let (before, url) = line.split_once("listening on http://")?;
    (before.is_empty() || before == "wallet-sim ").then_some(url)
}

impl Server {
    /// Starts `command` and waits for its `listening on http://HOST:PORT` line.
    pub async fn start(mut command: Command, what: &str) -> anyhow::Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut q = keep.lock().unwrap_or_else(|e| e.into_inner());
                    if q.len() == STDERR_LINES {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            });
        }
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Keep draining stdout after the address line so the server never blocks on a full
        // pipe.
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // `listening on http://…` (the gateway), `wallet-sim listening on http://…`.
                if let Some(url) = listening_address(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });
        let mut server = Server {
            child,
            pid,
            addr: "127.0.0.1:0".parse()?,
            stderr,
        };
        let addr = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(a)) => a,
            _ => {
                let _ = server.child.kill().await;
                // Give the stderr reader a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("{what} did not start:\n{}", server.stderr_tail());
            }
        };
        server.addr = addr
            .parse()
            .with_context(|| format!("{what} printed an address that does not parse: {addr}"))?;
        anyhow::ensure!(
            server.addr.ip().is_loopback(),
            "{what} listens on {}, not on loopback",
            server.addr
        );
        server.wait_until_answering(what).await?;
        Ok(server)
    }

    /// Waits for one HTTP answer (of any status). The gateway prints its address before it
    /// first polls its shutdown future, which is when it installs its SIGTERM handler; a SIGTERM
    /// in between kills it outright instead of stopping it gracefully. Once it has answered a
    /// request it is serving, and a stop is a graceful one.
    async fn wait_until_answering(&self, what: &str) -> anyhow::Result<()> {
        let mut conn = crate::client::Conn::new(self.addr)?;
        let mut last = String::new();
        for _ in 0..100 {
            match conn.get("/healthz").await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{what} printed its address but does not answer: {last}")
    }

    /// The last lines the server wrote to standard error.
    pub fn stderr_tail(&self) -> String {
        let q = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then wait for the graceful stop (the gateway drains and closes its store); kill
    /// if it does not come.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // `kill` the command: sending a signal from Rust directly needs `unsafe` or another
        // dependency, and this happens once per run.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if !matches!(sent, Ok(s) if s.success()) {
            let _ = self.child.kill().await;
            bail!("could not send SIGTERM to {}", self.pid);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("server exited with {status}:\n{}", self.stderr_tail()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("server did not stop within {STOP_TIMEOUT:?}; killed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_and_the_wallet_simulator_say_where_they_listen() {
        assert_eq!(
            listening_address("listening on http://127.0.0.1:4100"),
            Some("127.0.0.1:4100")
        );
        assert_eq!(
            listening_address("wallet-sim listening on http://127.0.0.1:9090"),
            Some("127.0.0.1:9090")
        );
        assert_eq!(
            listening_address("a merchant said listening on http://x"),
            None
        );
        assert_eq!(listening_address("ready"), None);
    }
}
