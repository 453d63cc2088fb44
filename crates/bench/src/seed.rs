//! Existing transactions, inserted directly into the database while the gateway is stopped, so
//! that 10^6 of them take seconds rather than the hours the API would need.
//!
//! The rows follow the schema of `crates/store-sqlite/migrations/0001_init.sql` (and the same
//! tables on PostgreSQL): paid USD payments of 1000.00 with the three events a real add+pay
//! writes. Because this bypasses the gateway, [`verify`] then asks the running gateway about
//! seeded transactions through the API — a query and a refund — so a schema change that the
//! seeding did not follow stops the benchmark instead of silently measuring errors.

use crate::client::Conn;
use crate::pockyt::{
    self, seeded_reference, seeded_transaction_no, Signer, MERCHANT_NO, SEEDED_AMOUNT_MINOR,
    STORE_NO,
};
use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Rows per transaction while seeding: large enough to be fast, small enough to show progress.
const CHUNK: u64 = 100_000;

/// The events a paid transaction has after add and pay.
const SEED_EVENTS: [&str; 3] = ["payment.created", "payment.submitted", "payment.paid"];

/// The wall clock in milliseconds: seeded rows look like today's to the gateway under test,
/// which runs on the wall clock too (the load generator is not part of the gateway).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn as_i64(n: u64) -> anyhow::Result<i64> {
    i64::try_from(n).context("count too large")
}

/// Options for a SQLite database the gateway created (WAL), without its durability settings:
/// the seed is rebuilt if lost, and the ceiling sets its own.
pub fn sqlite_options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .with_context(|| format!("bad sqlite URL {url}"))?
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true))
}

/// Options for a PostgreSQL URL, refused unless it points at this machine.
pub fn pg_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let o = PgConnectOptions::from_str(url).with_context(|| format!("bad postgres URL {url}"))?;
    let host = o.get_host();
    anyhow::ensure!(
        host == "127.0.0.1" || host == "localhost" || host == "::1" || host.starts_with('/'),
        "the benchmark only uses a PostgreSQL on this machine, not {host}"
    );
    Ok(o)
}

/// Progress callback: rows done so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Inserts `count` seeded transactions (indices `0..count`) into the SQLite database at `url`,
/// which the gateway has created and is not running on.
pub async fn seed_sqlite(url: &str, count: u64, progress: Progress<'_>) -> anyhow::Result<()> {
    // synchronous=OFF: a seed lost to a crash is simply made again; the measured runs use the
    // gateway's own settings.
    let mut conn = sqlite_options(url)?
        .synchronous(SqliteSynchronous::Off)
        .connect()
        .await
        .context("cannot open the database to seed it")?;
    let merchant_id: i64 = sqlx::query_scalar("SELECT id FROM merchants WHERE merchant_no = ?")
        .bind(MERCHANT_NO)
        .fetch_one(&mut conn)
        .await
        .context("the sandbox merchant is missing: did the gateway create this database?")?;
    let now = now_ms();
    let mut done = 0;
    while done < count {
        let last = (done + CHUNK).min(count) - 1;
        let mut tx = conn.begin().await?;
        // A recursive CTE generates the rows inside SQLite: one statement per chunk.
        sqlx::query(
            "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2) \
             INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
               amount_minor, currency, settle_currency, state, refunded_minor, reserved_minor, \
               cancel_in_flight, description, notify_url, vendor, fingerprint, pay_fingerprint, \
               created_at, updated_at, expires_at, paid_at, version) \
             SELECT printf('1%017d', i), ?3, ?4, ?5, 'seed-' || i, ?6, 'USD', 'USD', 'paid', 0, 0, \
               NULL, NULL, NULL, 'alipay', 'bench-seed', 'bench-seed', ?7, ?7, ?7, ?7, 2 FROM s",
        )
        .bind(as_i64(done)?)
        .bind(as_i64(last)?)
        .bind(merchant_id)
        .bind(MERCHANT_NO)
        .bind(STORE_NO)
        .bind(SEEDED_AMOUNT_MINOR)
        .bind(now)
        .execute(&mut *tx)
        .await
        .context("inserting seeded payments")?;
        for kind in SEED_EVENTS {
            sqlx::query(
                "INSERT INTO events (payment_id, at, kind, detail) \
                 SELECT id, ?1, ?2, '' FROM payments WHERE transaction_no BETWEEN ?3 AND ?4",
            )
            .bind(now)
            .bind(kind)
            .bind(seeded_transaction_no(done))
            .bind(seeded_transaction_no(last))
            .execute(&mut *tx)
            .await
            .context("inserting seeded events")?;
        }
        tx.commit().await?;
        done = last + 1;
        progress(done);
    }
    // Leave the file as the gateway would find it after a clean stop: WAL folded back in.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    conn.close().await?;
    Ok(())
}

/// Inserts `count` seeded transactions into the PostgreSQL database at `url`, whose tables
/// exist (the gateway or [`crate::ceiling`] made them) and which nothing else is writing.
pub async fn seed_postgres(url: &str, count: u64, progress: Progress<'_>) -> anyhow::Result<()> {
    let mut conn = pg_options(url)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    // Seeding need not wait for each commit's flush; the measured runs set their own.
    conn.execute("SET synchronous_commit = off").await?;
    let merchant_id: i64 = sqlx::query_scalar("SELECT id FROM merchants WHERE merchant_no = $1")
        .bind(MERCHANT_NO)
        .fetch_one(&mut conn)
        .await
        .context("the sandbox merchant is missing: did the gateway create this database?")?;
    let now = now_ms();
    let mut done = 0;
    while done < count {
        let last = (done + CHUNK).min(count) - 1;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO payments (transaction_no, merchant_id, merchant_no, store_no, reference, \
               amount_minor, currency, settle_currency, state, refunded_minor, reserved_minor, \
               cancel_in_flight, description, notify_url, vendor, fingerprint, pay_fingerprint, \
               created_at, updated_at, expires_at, paid_at, version) \
             SELECT '1' || lpad(i::text, 17, '0'), $3, $4, $5, 'seed-' || i, $6, 'USD', 'USD', \
               'paid', 0, 0, NULL, NULL, NULL, 'alipay', 'bench-seed', 'bench-seed', \
               $7, $7, $7, $7, 2 \
             FROM generate_series($1::bigint, $2::bigint) AS s(i)",
        )
        .bind(as_i64(done)?)
        .bind(as_i64(last)?)
        .bind(merchant_id)
        .bind(MERCHANT_NO)
        .bind(STORE_NO)
        .bind(SEEDED_AMOUNT_MINOR)
        .bind(now)
        .execute(&mut *tx)
        .await
        .context("inserting seeded payments")?;
        sqlx::query(
            "INSERT INTO events (payment_id, at, kind, detail) \
             SELECT p.id, $1, k.kind, '' FROM payments p CROSS JOIN unnest($2::text[]) AS k(kind) \
             WHERE p.transaction_no BETWEEN $3 AND $4",
        )
        .bind(now)
        .bind(&SEED_EVENTS[..])
        .bind(seeded_transaction_no(done))
        .bind(seeded_transaction_no(last))
        .execute(&mut *tx)
        .await
        .context("inserting seeded events")?;
        tx.commit().await?;
        done = last + 1;
        progress(done);
    }
    // Statistics as a long-running database would have them, so the planner picks the indexes.
    conn.execute("ANALYZE payments").await?;
    conn.execute("ANALYZE events").await?;
    conn.close().await?;
    Ok(())
}

/// The state code of a succeeded refund (`RefundState::Succeeded` of tillgate-domain: 0
/// generated, 1 refunding, 2 success, 3 fail, 4 closed).
pub const REFUND_SUCCEEDED: i64 = 2;

/// Every refund whose merchant reference starts with `prefix`, with its state code, read
/// straight from the database at `url` (SQLite or PostgreSQL) while no gateway runs on it.
pub async fn stored_refunds(
    url: &str,
    prefix: &str,
) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    anyhow::ensure!(
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
        "a refund reference prefix of letters and digits only, not {prefix:?}"
    );
    let pattern = format!("{prefix}%");
    let rows: Vec<(String, i64)> = if url.starts_with("sqlite:") {
        let mut conn = sqlite_options(url)?
            .read_only(true)
            .connect()
            .await
            .context("cannot open the database to read its refunds")?;
        let rows = sqlx::query_as(
            "SELECT refund_reference, state FROM refunds WHERE refund_reference LIKE ?1",
        )
        .bind(&pattern)
        .fetch_all(&mut conn)
        .await
        .context("reading the run's refunds")?;
        conn.close().await?;
        rows
    } else {
        let mut conn = pg_options(url)?
            .connect()
            .await
            .context("cannot connect to read the run's refunds")?;
        let rows = sqlx::query_as(
            "SELECT refund_reference, state FROM refunds WHERE refund_reference LIKE $1",
        )
        .bind(&pattern)
        .fetch_all(&mut conn)
        .await
        .context("reading the run's refunds")?;
        conn.close().await?;
        rows
    };
    Ok(rows.into_iter().collect())
}

/// Drops and creates the PostgreSQL database named by `url`. Refused unless its name starts
/// with `tillgate_bench`, so the benchmark can never drop a database it did not make.
pub async fn recreate_pg_database(url: &str) -> anyhow::Result<()> {
    let options = pg_options(url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        bail!("the postgres URL {url} names no database");
    };
    anyhow::ensure!(
        name.starts_with("tillgate_bench")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "the benchmark drops and re-creates its database, so its name must start with \
         tillgate_bench and hold only letters, digits and _ (got {name:?})"
    );
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("cannot connect to the postgres database beside {name}"))?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    admin.close().await?;
    Ok(())
}

/// Asks the running gateway about seeded transactions: the first, a middle and the last must
/// answer tran-query as paid 1000.00 with their reference, and a refund of the first must be
/// admitted. Anything else means the seeding no longer matches the schema.
pub async fn verify(addr: SocketAddr, count: u64, tag: &str) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let signer = Signer::default();
    let mut conn = Conn::new(addr)?;
    let amount = pockyt::decimal_2(SEEDED_AMOUNT_MINOR);
    for index in [0, count / 2, count - 1] {
        let t = seeded_transaction_no(index);
        let answer = conn
            .post(pockyt::QUERY, &signer.body(&[("transactionNo", &t)]))
            .await
            .map_err(|e| anyhow::anyhow!("querying seeded transaction {t}: {e}"))?;
        let expected = [
            "\"ret_code\":\"000100\"".to_owned(),
            "\"transactionStatus\":\"success\"".to_owned(),
            format!("\"amount\":\"{amount}\""),
            format!("\"reference\":\"{}\"", seeded_reference(index)),
            format!("\"transactionNo\":\"{t}\""),
        ];
        if let Some(missing) = expected.iter().find(|e| !answer.contains(e)) {
            bail!(
                "seeded transaction {t} does not read back as seeded (missing {missing}); the \
                 seeding no longer matches the schema. The gateway answered: {}",
                answer.body_text()
            );
        }
    }
    let t = seeded_transaction_no(0);
    let reference = format!("{tag}-verify");
    let body = signer.body(&[
        ("transactionNo", &t),
        ("refundAmount", "0.01"),
        ("currency", "USD"),
        ("settleCurrency", "USD"),
        ("refundReference", &reference),
    ]);
    let answer = conn
        .post(pockyt::REFUND, &body)
        .await
        .map_err(|e| anyhow::anyhow!("refunding seeded transaction {t}: {e}"))?;
    if !answer.contains("\"ret_code\":\"000100\"") || !answer.contains("\"status\":\"success\"") {
        bail!(
            "a refund of seeded transaction {t} was not admitted; the seeding no longer matches \
             the schema. The gateway answered: {}",
            answer.body_text()
        );
    }
    Ok(())
}
