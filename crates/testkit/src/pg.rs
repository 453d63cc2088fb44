//! Fresh PostgreSQL databases for tests, on the server named by `TILLGATE_TEST_POSTGRES_URL`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The PostgreSQL server for tests: `TILLGATE_TEST_POSTGRES_URL` (an admin URL such as
/// postgres://postgres@127.0.0.1:5432/postgres). Without it PostgreSQL stories do not run (they
/// are listed as ignored, see the crates' build scripts), except in CI, where a missing URL is
/// a failure.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TILLGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must set TILLGATE_TEST_POSTGRES_URL: PostgreSQL stories may not be skipped")
        }
        _ => None,
    }
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url)
        .unwrap_or_else(|e| panic!("TILLGATE_TEST_POSTGRES_URL is not a URL: {e}"));
    parsed.set_path(&format!("/{name}"));
    parsed.into()
}

/// A fresh PostgreSQL database, dropped (with its connections) when the guard goes.
pub struct PgDatabase {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tillgate_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        admin(admin_url, &format!("CREATE DATABASE \"{name}\"")).await;
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

/// Runs one statement on the admin connection.
pub async fn admin(admin_url: &str, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to TILLGATE_TEST_POSTGRES_URL: {e}"));
    sqlx::Executor::execute(&mut conn, statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    let _ = conn.close().await;
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(admin(&admin_url, &statement)))
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
