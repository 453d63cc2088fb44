//! Embedded migrations, applied in order at start, each in its own transaction.

use crate::unavailable;
use sqlx::{Connection, SqliteConnection};
use tillgate_core::StoreError;
use tillgate_domain::Clock;

/// (version, name, SQL). The PostgreSQL backend keeps the same versions and names.
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

/// Applies pending migrations; without `create`, a database that holds no tillgate schema yet
/// is refused ([`StoreError::Missing`]) and left as it is.
pub async fn apply(conn: &mut SqliteConnection, create: bool) -> Result<(), StoreError> {
    if !create {
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
        if tables == 0 {
            return Err(StoreError::Missing(
                "the database holds no tillgate data".into(),
            ));
        }
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    for (version, name, sql) in MIGRATIONS {
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration {version} {name}: {e}")))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(tillgate_domain::SystemClock.now().timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        tracing::info!(version, name, "applied migration");
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
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
