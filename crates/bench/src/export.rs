//! The export benchmark: `tillgate export` of 10⁶ (or any number of) seeded transactions as
//! CSV, its wall time and its peak resident memory. Memory that stays flat from 10⁴ to 10⁶
//! rows is what keyset pagination promises (one page at a time, never the whole range).
//!
//! Each size gets a fresh SQLite database: the gateway creates it (and its sandbox merchant),
//! the rows are seeded directly (`seed`), then the export runs with its standard output read
//! and counted by this process. Peak memory is the export process's `VmHWM`, read every 10 ms
//! while it runs (the high-water mark only grows, so the last reading is within 10 ms of the
//! end).

use crate::procfs;
use crate::seed;
use crate::server::{tillgate_command, Server};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// What one export came to.
pub struct Exported {
    pub rows: u64,
    pub lines: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub peak_rss_bytes: u64,
}

/// Seeds `rows` transactions in a fresh database under `work_dir` and exports them.
pub async fn measure(tillgate: &Path, work_dir: &Path, rows: u64) -> anyhow::Result<Exported> {
    let dir = work_dir.join(format!("export-{rows}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let url = format!("sqlite://{}", dir.join("tillgate.db").display());
    // The gateway creates the schema and the sandbox merchant, then stops.
    let gateway = Server::start(tillgate_command(tillgate, &url, &dir), "tillgate serve").await?;
    gateway.stop().await?;
    let t0 = Instant::now();
    seed::seed_sqlite(&url, rows, &|_| {}).await?;
    eprintln!(
        "  {rows} transactions seeded in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let mut child = tokio::process::Command::new(tillgate)
        .args([
            "export",
            "--kind",
            "transactions",
            "--from",
            "2000-01-01",
            "--to",
            "2099-12-31",
            "--format",
            "csv",
            "--database-url",
            &url,
        ])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start tillgate export")?;
    let pid = child.id().context("the export exited at once")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let counting = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        let (mut bytes, mut lines) = (0u64, 0u64);
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => return (bytes, lines),
                Ok(n) => {
                    bytes += n as u64;
                    lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                }
            }
        }
    });
    let mut peak = 0;
    let status = loop {
        if let Ok(bytes) = procfs::peak_rss_bytes(pid) {
            peak = peak.max(bytes);
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    };
    let elapsed = start.elapsed();
    let (bytes, lines) = counting.await?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        bail!("tillgate export failed ({status}): {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Exported {
        rows,
        lines,
        bytes,
        elapsed,
        peak_rss_bytes: peak,
    })
}

/// Measures each size and prints a table (and the figures as JSON lines on request).
pub async fn run(tillgate: &Path, work_dir: &Path, sizes: &[u64]) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &rows in sizes {
        eprintln!("export of {rows} rows");
        results.push(measure(tillgate, work_dir, rows).await?);
    }
    println!("rows       lines      MB      ms       rows/s     peak RSS MiB");
    for r in &results {
        // The seeded rows, the sandbox's two sample transactions and the heading.
        anyhow::ensure!(
            r.lines == r.rows + 3,
            "the export wrote {} lines for {} rows",
            r.lines,
            r.rows
        );
        let ms = r.elapsed.as_millis().max(1);
        println!(
            "{:<10} {:<10} {:<7} {:<8} {:<10} {}",
            r.rows,
            r.lines,
            r.bytes / 1_000_000,
            ms,
            u128::from(r.rows) * 1000 / ms,
            r.peak_rss_bytes / (1024 * 1024)
        );
    }
    Ok(())
}
