//! The integration suite: one binary, each test with its own real server and database.
//! Stories run on SQLite always and on PostgreSQL when `TILLGATE_TEST_POSTGRES_URL` is set
//! (in CI it must be: a missing URL fails there instead of skipping).

// These tests talk to real processes that run on the wall clock (signed timestamps,
// handshakes), so they read it too.
#![allow(clippy::disallowed_methods)]

/// Runs each story (an `async fn(TestApp)`) once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Sqlite).await;
                    super::$story(app.expect("SQLite always runs")).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
                async fn $story() {
                    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Postgres).await;
                    super::$story(app.expect("TILLGATE_TEST_POSTGRES_URL is set")).await
                }
            )*
        }
    };
}

mod bad_input;
mod books;
mod browser;
mod connections;
mod console;
mod crash;
mod failover;
mod held_refunds;
mod helpers;
mod notifications;
mod observability;
mod operator;
mod operator_safety;
mod pages;
mod pockyt_story;
mod postgres_nodes;
mod rate_limits;
mod replays;
mod strict_input;
mod terminal_client;
mod tidy;
mod unified;
mod wallet;
mod web_shops;
mod webdriver;
mod yabandpay;
