//! A database URL with several hosts, as libpq writes it
//! (`postgres://user@h1:5432,h2:5433/db?target_session_attrs=read-write`), and finding the one
//! that takes writes — before and after a failover.
//!
//! sqlx reads a URL with one host only, so the host list is split here into one set of connect
//! options per host, in the order given. With several hosts (or `target_session_attrs` of
//! `read-write` or `primary`), the store only ever keeps connections to a server that is not
//! in recovery: every new connection checks `pg_is_in_recovery()` and is refused if it is a
//! standby, and a watcher moves the pool to whichever host takes writes when the current one
//! stops answering or turns out to be a standby (a promoted standby is found within about a
//! second). Connections opened before the move are closed instead of being used again.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tillgate_core::store::StoreError;

/// How often the watcher checks that the pool's host still takes writes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long one check of a host, on a connection of its own, may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the check through the pool may take (it may have to connect first).
const POOL_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The hosts of a database URL, each with its own connect options.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// `host:port` as written, for messages.
    pub names: Vec<String>,
    pub options: Vec<PgConnectOptions>,
    /// Only a server that takes writes will do (several hosts, or `target_session_attrs`
    /// `read-write`/`primary`).
    pub read_write: bool,
}

impl Hosts {
    /// Reads a PostgreSQL URL with one host or a comma-separated list of `host[:port]`.
    pub fn parse(url: &str) -> Result<Hosts, StoreError> {
        let bad = |why: &str| StoreError::Unavailable(format!("bad postgres url: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme://"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (user_info, host_list) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let mut attrs = None;
        let kept: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| match pair.split_once('=') {
                Some(("target_session_attrs", v)) => {
                    attrs = Some(v.to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        let read_write = match attrs.as_deref() {
            None => false,
            Some("read-write") | Some("primary") => true,
            Some("any") => false,
            Some(other) => {
                return Err(bad(&format!(
                    "target_session_attrs={other} is not supported (read-write, primary or any)"
                )))
            }
        };
        if host_list.is_empty() {
            // No host in the URL (a socket named by `?host=`, or the defaults): sqlx reads it.
            let options = PgConnectOptions::from_str(url).map_err(|e| bad(&e.to_string()))?;
            return Ok(Hosts {
                names: vec![options.get_host().to_owned()],
                options: vec![options],
                read_write,
            });
        }
        let names: Vec<String> = host_list.split(',').map(str::to_owned).collect();
        if names.iter().any(String::is_empty) {
            return Err(bad("an empty host in the host list"));
        }
        let mut options = Vec::with_capacity(names.len());
        for host in &names {
            let mut one = format!("{scheme}://");
            if let Some(user_info) = user_info {
                one.push_str(user_info);
                one.push('@');
            }
            one.push_str(host);
            one.push_str(path);
            if !kept.is_empty() {
                one.push('?');
                one.push_str(&kept.join("&"));
            }
            options.push(PgConnectOptions::from_str(&one).map_err(|e| bad(&e.to_string()))?);
        }
        Ok(Hosts {
            read_write: read_write || names.len() > 1,
            names,
            options,
        })
    }

    /// The first host, in the order given, that answers and (when asked for) takes writes;
    /// with it, its position.
    pub async fn find(&self) -> Result<(usize, PgConnectOptions), StoreError> {
        let mut why = Vec::new();
        for (i, options) in self.options.iter().enumerate() {
            match probe(options).await {
                Ok(false) => return Ok((i, options.clone())),
                Ok(true) if !self.read_write => return Ok((i, options.clone())),
                Ok(true) => why.push(format!("{}: a standby (in recovery)", self.names[i])),
                Err(e) => why.push(format!("{}: {e}", self.names[i])),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no host takes writes: {}",
            why.join("; ")
        )))
    }
}

/// Connects to one host and asks whether it is in recovery.
async fn probe(options: &PgConnectOptions) -> Result<bool, String> {
    let asked = async {
        let mut conn = options.connect().await.map_err(|e| e.to_string())?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(standby)
    };
    tokio::time::timeout(PROBE_TIMEOUT, asked)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

/// When the pool last moved to another host, so connections older than that are closed.
#[derive(Debug)]
pub struct Moves {
    started: Instant,
    /// Milliseconds after `started` of the last move (0: never moved).
    last_ms: AtomicU64,
}

impl Default for Moves {
    fn default() -> Moves {
        Moves::new()
    }
}

impl Moves {
    pub fn new() -> Moves {
        Moves {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// True when a connection of this age was opened before the last move (it may be on the
    /// old host).
    pub fn predates_last_move(&self, age: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let since = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(last));
        age > since
    }
}

/// Keeps the pool on a host that takes writes, until the pool closes. While the pool's host
/// answers as a primary, one query through the pool per round; once it does not, every round
/// asks the hosts directly until one takes writes (so a promotion is seen within a round).
pub async fn watch(pool: PgPool, hosts: Arc<Hosts>, moves: Arc<Moves>, mut current: usize) {
    let mut failing = false;
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if pool.is_closed() {
            return;
        }
        if !failing {
            let asked =
                sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&pool);
            let host = &hosts.names[current];
            match tokio::time::timeout(POOL_CHECK_TIMEOUT, asked).await {
                Ok(Ok(false)) => continue,
                Ok(Ok(true)) => tracing::warn!(%host, "the database host is a standby now"),
                Ok(Err(e)) => {
                    tracing::warn!(%host, error = %e, "the database host does not answer")
                }
                Err(_) => tracing::warn!(%host, "the database host does not answer in time"),
            }
            failing = true;
        }
        match hosts.find().await {
            Ok((found, options)) => {
                if found != current {
                    tracing::warn!(from = %hosts.names[current], to = %hosts.names[found], "database failover: moving to the host that takes writes");
                    pool.set_connect_options(options);
                    moves.moved();
                    current = found;
                }
                failing = false;
            }
            Err(e) => tracing::warn!(error = %e, "no database host takes writes yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_read_as_sqlx_reads_it() {
        let h = Hosts::parse("postgres://u:pw@db:5433/tillgate?sslmode=disable").unwrap();
        assert_eq!(h.names, ["db:5433"]);
        assert!(!h.read_write);
        assert_eq!(h.options[0].get_host(), "db");
        assert_eq!(h.options[0].get_port(), 5433);
        assert_eq!(h.options[0].get_database(), Some("tillgate"));
        assert_eq!(h.options[0].get_username(), "u");
    }

    #[test]
    fn several_hosts_each_get_the_user_database_and_parameters() {
        let h = Hosts::parse(
            "postgresql://app:s3cret@10.0.0.1:5432,10.0.0.2:5433,db3/pay?target_session_attrs=read-write&application_name=tg",
        )
        .unwrap();
        assert_eq!(h.names, ["10.0.0.1:5432", "10.0.0.2:5433", "db3"]);
        assert!(h.read_write);
        let hosts: Vec<(&str, u16)> = h
            .options
            .iter()
            .map(|o| (o.get_host(), o.get_port()))
            .collect();
        assert_eq!(
            hosts,
            [("10.0.0.1", 5432), ("10.0.0.2", 5433), ("db3", 5432)]
        );
        for o in &h.options {
            assert_eq!(o.get_database(), Some("pay"));
            assert_eq!(o.get_username(), "app");
            assert_eq!(o.get_application_name(), Some("tg"));
        }
    }

    #[test]
    fn several_hosts_want_a_writable_one_even_unasked_and_bad_lists_are_refused() {
        assert!(Hosts::parse("postgres://a,b/db").unwrap().read_write);
        assert!(
            Hosts::parse("postgres://a/db?target_session_attrs=primary")
                .unwrap()
                .read_write
        );
        assert!(Hosts::parse("postgres://a,,b/db").is_err());
        assert!(Hosts::parse("postgres://a/db?target_session_attrs=standby").is_err());
        assert!(Hosts::parse("a:5432/db").is_err());
    }

    #[test]
    fn only_connections_opened_before_the_last_move_are_closed() {
        let moves = Moves::new();
        assert!(
            !moves.predates_last_move(Duration::from_secs(3600)),
            "never moved"
        );
        std::thread::sleep(Duration::from_millis(30));
        moves.moved();
        assert!(moves.predates_last_move(Duration::from_secs(3600)));
        assert!(!moves.predates_last_move(Duration::ZERO));
    }

    #[test]
    fn a_url_without_a_host_is_left_to_sqlx() {
        let h = Hosts::parse("postgres:///tillgate?host=/var/run/postgresql").unwrap();
        assert_eq!(h.options.len(), 1);
        assert_eq!(h.options[0].get_database(), Some("tillgate"));
        assert!(!h.read_write);
    }
}
