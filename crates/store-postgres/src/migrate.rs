//! Embedded migrations, applied at start under a PostgreSQL advisory lock so that nodes
//! starting together apply each migration exactly once.

use crate::db_error;
use sqlx::{Acquire, PgPool};
use tillgate_core::StoreError;
use tillgate_domain::Clock;

/// (version, name, SQL): the same versions and names as the SQLite backend (a test checks it).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "notifications_and_apps",
        include_str!("../migrations/0002_notifications_and_apps.sql"),
    ),
    (
        3,
        "terminals",
        include_str!("../migrations/0003_terminals.sql"),
    ),
    (
        4,
        "query_schedule",
        include_str!("../migrations/0004_query_schedule.sql"),
    ),
    (5, "replays", include_str!("../migrations/0005_replays.sql")),
    (
        6,
        "store_currency",
        include_str!("../migrations/0006_store_currency.sql"),
    ),
    (
        7,
        "cors_origins",
        include_str!("../migrations/0007_cors_origins.sql"),
    ),
    (
        8,
        "key_check",
        include_str!("../migrations/0008_key_check.sql"),
    ),
    (9, "books", include_str!("../migrations/0009_books.sql")),
    (
        10,
        "merchant_name",
        include_str!("../migrations/0010_merchant_name.sql"),
    ),
    (
        11,
        "console",
        include_str!("../migrations/0011_console.sql"),
    ),
    (
        12,
        "refund_approvals",
        include_str!("../migrations/0012_refund_approvals.sql"),
    ),
    (
        13,
        "credential_previous",
        include_str!("../migrations/0013_credential_previous.sql"),
    ),
    (
        14,
        "outbox_pending",
        include_str!("../migrations/0014_outbox_pending.sql"),
    ),
    (
        15,
        "held_api_refunds",
        include_str!("../migrations/0015_held_api_refunds.sql"),
    ),
];

/// The advisory lock key: "tillgate" in ASCII.
const LOCK_KEY: i64 = 0x7469_6c6c_6761_7465;

/// Applies pending migrations; without `create`, a database that holds no tillgate schema yet
/// is refused ([`StoreError::Missing`]) and left as it is.
pub async fn apply(pool: &PgPool, create: bool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    if !create {
        let ours: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if !ours {
            return Err(StoreError::Missing(
                "the database holds no tillgate data".into(),
            ));
        }
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    let result = apply_locked(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(db_error);
    result.and(unlocked.map(drop))
}

async fn apply_locked(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    for (version, name, sql) in MIGRATIONS {
        let mut tx = conn.begin().await.map_err(db_error)?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration {version} {name}: {e}")))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(tillgate_domain::SystemClock.now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(version, name, "applied migration");
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest.unwrap_or(0) > known {
        return Err(StoreError::Unavailable(format!(
            "the database is at schema version {} but this tillgate knows only up to {known}; \
             run a newer tillgate",
            newest.unwrap_or(0)
        )));
    }
    Ok(())
}

/// Whether a database at schema `version` is the one this build migrates to.
pub fn check_version(version: Option<i64>) -> Result<(), StoreError> {
    tillgate_store_sql::schema_current(version, MIGRATIONS.last().map_or(0, |m| m.0))
}
