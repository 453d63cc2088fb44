//! Baseline (b), the store's durable ceiling: the statements of a partial refund — read the
//! payment, update it, insert the refund row, insert an event row — straight on the database,
//! with no HTTP, no signature and no gateway in between.
//!
//! On SQLite they run 64 to a transaction on one connection (WAL, `synchronous=FULL`), which is
//! what a group-committing single writer can reach at best. That is measured twice: natively
//! (rusqlite on one thread: SQLite's own ceiling, baseline (b)) and through sqlx, the driver the
//! gateway uses, which hands every statement to a worker thread and back. The gap between the
//! two is the driver's share, not SQLite's. On PostgreSQL each operation is its own transaction
//! from one of 16 clients (`synchronous_commit=on`), and concurrent commits share WAL flushes on
//! the server's side. All of them are durable when they return.

use crate::pockyt::{seeded_transaction_no, Rng};
use crate::procfs;
use crate::seed;
use crate::stats::Latency;
use anyhow::Context;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnection, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, Row};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Operations per SQLite transaction.
pub const SQLITE_BATCH: u64 = 64;
/// PostgreSQL clients.
pub const PG_CLIENTS: u32 = 16;

/// What a ceiling run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CeilingMeasured {
    pub backend: &'static str,
    pub clients: u32,
    pub ops_per_commit: u64,
    pub ops: u64,
    pub commits: u64,
    pub elapsed_ns: u64,
    /// Per operation, from its first statement to the commit that made it durable.
    pub latency: Latency,
    /// CPU of this process (the statements' client side and, for SQLite, the database itself).
    pub client_cpu_ns: u64,
    /// CPU of the database server's processes (PostgreSQL), when there is one.
    pub db_cpu_ns: Option<u64>,
    /// CPU of everything else on the machine meanwhile.
    pub other_cpu_ns: u64,
}

/// The bounds of a ceiling run.
#[derive(Debug, Clone, Copy)]
pub struct CeilingSpec {
    pub existing: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_ops: u64,
    pub seed: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The refund's statements against payment `transaction_no` with `conn` already in a
/// transaction. Returns false when the payment has nothing left to refund (not an error: the
/// operation is simply not counted).
async fn sqlite_refund(
    conn: &mut SqliteConnection,
    transaction_no: &str,
    amount: i64,
    key: &str,
    at: i64,
) -> anyhow::Result<bool> {
    let row = sqlx::query("SELECT * FROM payments WHERE transaction_no = ?")
        .bind(transaction_no)
        .fetch_one(&mut *conn)
        .await
        .context("reading the payment")?;
    let (id, merchant_id): (i64, i64) = (row.try_get("id")?, row.try_get("merchant_id")?);
    let total: i64 = row.try_get("amount_minor")?;
    let refunded: i64 = row.try_get("refunded_minor")?;
    let reserved: i64 = row.try_get("reserved_minor")?;
    if total - refunded - reserved < amount {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE payments SET state = 'partially_refunded', refunded_minor = ?, updated_at = ?, \
         version = version + 1 WHERE id = ?",
    )
    .bind(refunded + amount)
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await
    .context("updating the payment")?;
    sqlx::query(
        "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
         amount_minor, currency, state, fingerprint, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, 'USD', 2, 'ceiling', ?, ?)",
    )
    .bind(key)
    .bind(id)
    .bind(merchant_id)
    .bind(key)
    .bind(amount)
    .bind(at)
    .bind(at)
    .execute(&mut *conn)
    .await
    .context("inserting the refund")?;
    sqlx::query("INSERT INTO events (payment_id, at, kind, detail) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(at)
        .bind("refund.succeeded")
        .bind(amount.to_string())
        .execute(&mut *conn)
        .await
        .context("inserting the event")?;
    Ok(true)
}

/// One refund's statements on a native connection already in a transaction; false when the
/// payment has nothing left to refund.
fn native_refund(
    conn: &rusqlite::Connection,
    transaction_no: &str,
    amount: i64,
    key: &str,
    at: i64,
) -> rusqlite::Result<bool> {
    let mut read = conn.prepare_cached("SELECT * FROM payments WHERE transaction_no = ?1")?;
    let (id, merchant_id, total, refunded, reserved) = read.query_row([transaction_no], |r| {
        Ok((
            r.get::<_, i64>("id")?,
            r.get::<_, i64>("merchant_id")?,
            r.get::<_, i64>("amount_minor")?,
            r.get::<_, i64>("refunded_minor")?,
            r.get::<_, i64>("reserved_minor")?,
        ))
    })?;
    if total - refunded - reserved < amount {
        return Ok(false);
    }
    conn.prepare_cached(
        "UPDATE payments SET state = 'partially_refunded', refunded_minor = ?1, updated_at = ?2, \
         version = version + 1 WHERE id = ?3",
    )?
    .execute(rusqlite::params![refunded + amount, at, id])?;
    conn.prepare_cached(
        "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
         amount_minor, currency, state, fingerprint, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?1, ?4, 'USD', 2, 'ceiling', ?5, ?5)",
    )?
    .execute(rusqlite::params![key, id, merchant_id, amount, at])?;
    conn.prepare_cached(
        "INSERT INTO events (payment_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(rusqlite::params![
        id,
        at,
        "refund.succeeded",
        amount.to_string()
    ])?;
    Ok(true)
}

/// Baseline (b) on SQLite, natively: the SQLite file at `path` (seeded, the gateway stopped),
/// one connection on one thread, 64 refunds per durable commit.
pub async fn sqlite_native(
    path: &std::path::Path,
    spec: CeilingSpec,
    tag: &str,
) -> anyhow::Result<CeilingMeasured> {
    let path = path.to_owned();
    let tag = tag.to_owned();
    tokio::task::spawn_blocking(move || sqlite_native_blocking(&path, spec, &tag)).await?
}

fn sqlite_native_blocking(
    path: &std::path::Path,
    spec: CeilingSpec,
    tag: &str,
) -> anyhow::Result<CeilingMeasured> {
    use std::time::Instant;
    let ticks = procfs::clock_ticks_per_s();
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // The gateway's settings: WAL, every commit fsynced, foreign keys checked.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut rng = Rng::new(spec.seed);
    let start = Instant::now();
    let m0 = start + spec.warmup;
    let m1 = m0 + spec.duration;
    let mut samples = Vec::new();
    let (mut ops, mut commits, mut started, mut n) = (0u64, 0u64, 0u64, 0u64);
    let mut cpu0 = None;
    let mut measure_start = m0;
    let mut op_starts = Vec::with_capacity(SQLITE_BATCH as usize);
    while Instant::now() < m1 && started < spec.max_ops {
        let measuring = Instant::now() >= m0;
        if measuring && cpu0.is_none() {
            cpu0 = Some((
                procfs::cpu_ns(std::process::id(), ticks)?,
                procfs::machine_busy_ns(ticks)?,
            ));
            measure_start = Instant::now();
        }
        op_starts.clear();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..SQLITE_BATCH {
            started += 1;
            n += 1;
            let t = seeded_transaction_no(rng.below(spec.existing));
            let amount = 1 + i64::try_from(rng.below(9)).unwrap_or(0);
            let key = format!("{tag}n{n}");
            op_starts.push(Instant::now());
            if !native_refund(&conn, &t, amount, &key, seed::now_ms())? {
                op_starts.pop();
            }
        }
        conn.execute_batch("COMMIT")?;
        let end = Instant::now();
        if measuring {
            commits += 1;
            ops += op_starts.len() as u64;
            samples.extend(op_starts.iter().map(|s| ns(end - *s)));
        }
    }
    let elapsed = measure_start.elapsed();
    let cpu1 = procfs::cpu_ns(std::process::id(), ticks)?;
    let busy1 = procfs::machine_busy_ns(ticks)?;
    drop(conn);
    let (own, other) = match cpu0 {
        Some((c0, b0)) => {
            let own = cpu1.saturating_sub(c0);
            (own, busy1.saturating_sub(b0).saturating_sub(own))
        }
        None => (0, 0),
    };
    Ok(CeilingMeasured {
        backend: "sqlite",
        clients: 1,
        ops_per_commit: SQLITE_BATCH,
        ops,
        commits,
        elapsed_ns: ns(elapsed),
        latency: Latency::of(&mut samples),
        client_cpu_ns: own,
        db_cpu_ns: None,
        other_cpu_ns: other,
    })
}

/// The same statements through sqlx on the SQLite database at `url`: what the gateway's
/// driver allows (a diagnostic beside baseline (b), not the ceiling itself).
pub async fn sqlite(url: &str, spec: CeilingSpec, tag: &str) -> anyhow::Result<CeilingMeasured> {
    let ticks = procfs::clock_ticks_per_s();
    let mut conn = seed::sqlite_options(url)?
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .context("cannot open the database for the SQLite ceiling")?;
    let mut rng = Rng::new(spec.seed);
    let start = Instant::now();
    let m0 = start + spec.warmup;
    let m1 = m0 + spec.duration;
    let mut samples = Vec::new();
    let (mut ops, mut commits, mut started) = (0u64, 0u64, 0u64);
    let mut cpu0 = None;
    let mut measure_start = m0;
    let mut n = 0u64;
    let mut op_starts = Vec::with_capacity(SQLITE_BATCH as usize);
    while Instant::now() < m1 && started < spec.max_ops {
        let measuring = Instant::now() >= m0;
        if measuring && cpu0.is_none() {
            cpu0 = Some((
                procfs::cpu_ns(std::process::id(), ticks)?,
                procfs::machine_busy_ns(ticks)?,
            ));
            measure_start = Instant::now();
        }
        op_starts.clear();
        conn.execute("BEGIN IMMEDIATE").await?;
        for _ in 0..SQLITE_BATCH {
            started += 1;
            n += 1;
            let t = seeded_transaction_no(rng.below(spec.existing));
            let amount = 1 + i64::try_from(rng.below(9)).unwrap_or(0);
            let key = format!("{tag}c{n}");
            op_starts.push(Instant::now());
            if !sqlite_refund(&mut conn, &t, amount, &key, seed::now_ms()).await? {
                op_starts.pop();
            }
        }
        conn.execute("COMMIT").await?;
        let end = Instant::now();
        if measuring {
            commits += 1;
            ops += op_starts.len() as u64;
            samples.extend(op_starts.iter().map(|s| ns(end - *s)));
        }
    }
    let elapsed = Instant::now() - measure_start;
    let cpu1 = procfs::cpu_ns(std::process::id(), ticks)?;
    let busy1 = procfs::machine_busy_ns(ticks)?;
    conn.close().await?;
    let (own, other) = match cpu0 {
        Some((c0, b0)) => {
            let own = cpu1.saturating_sub(c0);
            (own, busy1.saturating_sub(b0).saturating_sub(own))
        }
        None => (0, 0),
    };
    Ok(CeilingMeasured {
        backend: "sqlite-sqlx",
        clients: 1,
        ops_per_commit: SQLITE_BATCH,
        ops,
        commits,
        elapsed_ns: ns(elapsed),
        latency: Latency::of(&mut samples),
        client_cpu_ns: own,
        db_cpu_ns: None,
        other_cpu_ns: other,
    })
}

/// The tables a refund touches, as the PostgreSQL backend's migrations 0001 and 0002 declare
/// them (identity keys, BIGINT times and money, the same indexes), for the ceiling's own scratch
/// database. Kept here rather than borrowed from the backend so the ceiling does not move when
/// the backend's code does; a later migration that changes these tables should be copied here.
const PG_SCHEMA: &str = "
CREATE TABLE merchants (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    merchant_no TEXT   NOT NULL UNIQUE,
    zone        TEXT   NOT NULL,
    sandbox     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE TABLE payments (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    transaction_no   TEXT   NOT NULL UNIQUE,
    merchant_id      BIGINT NOT NULL REFERENCES merchants (id),
    merchant_no      TEXT   NOT NULL,
    store_no         TEXT   NOT NULL,
    reference        TEXT   NOT NULL,
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    currency         TEXT   NOT NULL,
    settle_currency  TEXT   NOT NULL,
    state            TEXT   NOT NULL,
    refunded_minor   BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    reserved_minor   BIGINT NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
    cancel_in_flight TEXT,
    description      TEXT,
    notify_url       TEXT,
    vendor           TEXT,
    fingerprint      TEXT   NOT NULL,
    pay_fingerprint  TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    paid_at          BIGINT,
    version          BIGINT NOT NULL DEFAULT 0,
    dialect          TEXT   NOT NULL DEFAULT 'pockyt',
    extra            TEXT,
    CHECK (refunded_minor + reserved_minor <= amount_minor),
    UNIQUE (merchant_id, reference)
);
CREATE TABLE refunds (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    refund_no        TEXT   NOT NULL UNIQUE,
    payment_id       BIGINT NOT NULL REFERENCES payments (id),
    merchant_id      BIGINT NOT NULL REFERENCES merchants (id),
    refund_reference TEXT,
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    currency         TEXT   NOT NULL,
    state            BIGINT NOT NULL,
    fingerprint      TEXT   NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    notify_url       TEXT,
    extra            TEXT
);
CREATE UNIQUE INDEX refunds_merchant_reference ON refunds (merchant_id, refund_reference)
    WHERE refund_reference IS NOT NULL;
CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX refunds_merchant_no ON refunds (merchant_id, refund_no);
CREATE TABLE events (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    payment_id BIGINT NOT NULL REFERENCES payments (id),
    at         BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    detail     TEXT   NOT NULL
);
CREATE INDEX events_payment ON events (payment_id, id);
";

/// Makes the ceiling's scratch database at `url` (dropped first) with `existing` seeded
/// transactions.
pub async fn prepare_pg(
    url: &str,
    existing: u64,
    progress: seed::Progress<'_>,
) -> anyhow::Result<()> {
    seed::recreate_pg_database(url).await?;
    let mut conn = seed::pg_options(url)?.connect().await?;
    conn.execute(PG_SCHEMA)
        .await
        .context("creating the ceiling's tables")?;
    sqlx::query(
        "INSERT INTO merchants (merchant_no, zone, sandbox, created_at) VALUES ($1, 'UTC', 1, $2)",
    )
    .bind(crate::pockyt::MERCHANT_NO)
    .bind(seed::now_ms())
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    seed::seed_postgres(url, existing, progress).await
}

async fn pg_refund(
    conn: &mut PgConnection,
    transaction_no: &str,
    amount: i64,
    key: &str,
    at: i64,
) -> anyhow::Result<bool> {
    let mut tx = conn.begin().await?;
    // FOR UPDATE: the check-and-reserve of a refund must not interleave with another's.
    let row = sqlx::query("SELECT * FROM payments WHERE transaction_no = $1 FOR UPDATE")
        .bind(transaction_no)
        .fetch_one(&mut *tx)
        .await
        .context("reading the payment")?;
    let (id, merchant_id): (i64, i64) = (row.try_get("id")?, row.try_get("merchant_id")?);
    let total: i64 = row.try_get("amount_minor")?;
    let refunded: i64 = row.try_get("refunded_minor")?;
    let reserved: i64 = row.try_get("reserved_minor")?;
    if total - refunded - reserved < amount {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE payments SET state = 'partially_refunded', refunded_minor = $1, updated_at = $2, \
         version = version + 1 WHERE id = $3",
    )
    .bind(refunded + amount)
    .bind(at)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO refunds (refund_no, payment_id, merchant_id, refund_reference, \
         amount_minor, currency, state, fingerprint, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'USD', 2, 'ceiling', $6, $6)",
    )
    .bind(key)
    .bind(id)
    .bind(merchant_id)
    .bind(key)
    .bind(amount)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO events (payment_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(at)
        .bind("refund.succeeded")
        .bind(amount.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Baseline (b) on PostgreSQL: `clients` connections to the prepared database at `url`, one
/// transaction per refund.
pub async fn postgres(
    url: &str,
    clients: u32,
    spec: CeilingSpec,
    tag: &str,
) -> anyhow::Result<CeilingMeasured> {
    let ticks = procfs::clock_ticks_per_s();
    let start = Instant::now();
    let m0 = start + spec.warmup;
    let m1 = m0 + spec.duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for id in 0..clients {
        let mut conn = seed::pg_options(url)?.connect().await?;
        conn.execute("SET synchronous_commit = on").await?;
        let started = started.clone();
        let tag = tag.to_owned();
        let mut rng = Rng::new(spec.seed ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9));
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while Instant::now() < m1 && started.fetch_add(1, Ordering::Relaxed) < spec.max_ops {
                n += 1;
                let t = seeded_transaction_no(rng.below(spec.existing));
                let amount = 1 + i64::try_from(rng.below(9)).unwrap_or(0);
                let key = format!("{tag}c{id}-{n}");
                let t0 = Instant::now();
                let counted = pg_refund(&mut conn, &t, amount, &key, seed::now_ms()).await?;
                let end = Instant::now();
                if counted && t0 >= m0 && end <= m1 {
                    samples.push(ns(end - t0));
                }
            }
            conn.close().await?;
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    tokio::time::sleep_until(m0).await;
    let cpu0 = procfs::cpu_ns(std::process::id(), ticks)?;
    let db0 = procfs::processes_cpu_ns("postgres", ticks);
    let busy0 = procfs::machine_busy_ns(ticks)?;
    tokio::time::sleep_until(m1).await;
    let cpu1 = procfs::cpu_ns(std::process::id(), ticks)?;
    let db1 = procfs::processes_cpu_ns("postgres", ticks);
    let busy1 = procfs::machine_busy_ns(ticks)?;
    let own = cpu1.saturating_sub(cpu0);
    let db = db1.saturating_sub(db0);
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await??);
    }
    let ops = samples.len() as u64;
    Ok(CeilingMeasured {
        backend: "postgres",
        clients,
        ops_per_commit: 1,
        ops,
        commits: ops,
        elapsed_ns: ns(spec.duration),
        latency: Latency::of(&mut samples),
        client_cpu_ns: own,
        db_cpu_ns: Some(db),
        other_cpu_ns: busy1.saturating_sub(busy0).saturating_sub(own + db),
    })
}
