//! Configuration: defaults, then a TOML file, then environment and command line.
//!
//! The TOML file deserializes straight into [`Config`]: every key is optional, a missing one
//! keeps its default (`#[serde(default)]` takes the `Default` of each table), and an unknown
//! one is refused by name. Environment variables and flags are applied afterwards, by the
//! `tillgate` command.

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use tillgate_core::notify::{Schedule, UrlPolicy};
use tillgate_core::Secret;
use tillgate_domain::MerchantZone;

/// Whether the gateway runs for development (public sample credentials) or for real money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sandbox,
    Production,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "sandbox" => Ok(Mode::Sandbox),
            "production" => Ok(Mode::Production),
            other => Err(format!("mode must be sandbox or production, not {other:?}")),
        }
    }
}

/// Everything `tillgate serve` needs to know; also the shape of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// The address customers' browsers reach the gateway at (`https://pay.example.com`): the
    /// hosted payment pages handed out in answers are under it. Unset: `http://` and the
    /// address the gateway listens on.
    #[serde(deserialize_with = "file::public_url")]
    pub public_url: Option<String>,
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    pub mode: Mode,
    /// 64 hex characters; sealing key of credentials at rest.
    #[serde(deserialize_with = "file::secret")]
    pub master_key: Option<Secret<String>>,
    /// A file holding the master key (64 hex characters); it takes the place of `master_key`.
    pub master_key_file: Option<PathBuf>,
    /// Time zone of merchants created without one.
    #[serde(deserialize_with = "file::zone")]
    pub default_timezone: MerchantZone,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Size of the PostgreSQL connection pool of this node.
    pub database_max_connections: u32,
    /// PostgreSQL group commit: writers of this node (each holds one of the pool's
    /// connections while it commits a batch).
    pub database_writers: NonZeroUsize,
    /// Writes waiting for the writers at most; a request beyond waits for room.
    pub database_write_queue: NonZeroUsize,
    /// The most writes one PostgreSQL transaction carries.
    pub database_write_batch: NonZeroUsize,
    /// Bearer token of the admin API; without one the admin API is open in sandbox mode and
    /// off in production.
    #[serde(deserialize_with = "file::secret")]
    pub admin_token: Option<Secret<String>>,
    pub notify: NotifyConfig,
    pub channel: ChannelConfig,
    /// Merchants whose money moves through a wallet of their own (`[merchant_channels."N"]`).
    pub merchant_channels: std::collections::BTreeMap<String, ChannelConfig>,
    /// How often the janitor looks for operations the wallet has not answered.
    pub janitor_interval_ms: u64,
    /// How long a request that runs on a POS terminal waits for the terminal's result before
    /// it answers "processing" (the result is applied when it comes).
    pub terminal_wait_ms: u64,
    /// Time-outs and connection caps of the HTTP listener (`[http]`).
    pub http: HttpConfig,
    /// Requests per merchant and per client address (`[rate_limit]`).
    pub rate_limit: RateLimitConfig,
    /// Replays of signed requests (`[replay]`).
    pub replay: ReplayConfig,
    /// Which other origins' pages may read the merchant APIs' answers (`[cors]`).
    pub cors: CorsConfig,
    /// Where health and metrics are served (`[observability]`).
    pub observability: ObservabilityConfig,
    /// The books: the daily reconciliation's schedule (`[books]`).
    pub books: BooksConfig,
}

/// The daily reconciliation inside `serve` (`[books]` in the TOML file): off unless
/// `reconcile_at` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BooksConfig {
    /// When each node tries to reconcile the previous UTC day with every HTTP wallet's
    /// statement, as "HH:MM" UTC (one node of many gets each day's run; the others skip it).
    #[serde(deserialize_with = "file::time_of_day")]
    pub reconcile_at: Option<chrono::NaiveTime>,
}

/// Browser pages of other origins (`[cors]` in the TOML file): none unless listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`https://shop.example`) whose pages may call the merchant APIs.
    #[serde(deserialize_with = "file::origins")]
    pub allowed_origins: Vec<String>,
}

/// Where `/healthz`, `/readyz` and `/metrics` are served (`[observability]` in the TOML file).
///
/// On a listener of their own when `listen` is set, open there (bind it to an address only the
/// operator's network reaches). On the gateway's own listener: open in sandbox mode; in
/// production only when no listener of their own is set, and then behind the admin token
/// (`Authorization: Bearer …`), or not at all without one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Address of the listener of their own, e.g. "127.0.0.1:9100"; port 0 picks one.
    pub listen: Option<String>,
}

/// What stops a captured request from acting twice (`[replay]` in the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayConfig {
    /// How long a signed request without a key of the merchant's (a Pockyt refund without
    /// `refundReference`, a YabandPay refund without `m_refund_id`) is remembered: an exact
    /// copy within this window gets the first answer instead of acting again.
    pub window_s: u64,
    /// Whether refunds must carry the merchant's own refund reference, for merchants without a
    /// policy of their own (`tillgate merchant update --require-refund-reference`). Unset: on
    /// in production, off in sandbox.
    pub require_refund_reference: Option<bool>,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            window_s: 600,
            require_refund_reference: None,
        }
    }
}

impl ReplayConfig {
    /// Whether refunds need the merchant's reference in `mode`, unless a merchant says.
    pub fn refund_reference_required(&self, mode: Mode) -> bool {
        self.require_refund_reference
            .unwrap_or(mode == Mode::Production)
    }
}

/// What the HTTP listener allows one connection (`[http]` in the TOML file). Every phase of a
/// request has a time-out, so a client that sends nothing, half a head or part of a body holds
/// its connection only that long.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// How long the request line and headers may take to arrive, counted from when the
    /// connection is ready for a request (accepted, or done with its previous answer).
    pub header_read_timeout_ms: u64,
    /// How long a request's whole body may take to arrive after its headers.
    pub body_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request. The head time-out also
    /// runs while it waits, so the shorter of the two closes an idle connection.
    pub idle_timeout_ms: u64,
    /// Connections held at once; one more is closed as soon as it is accepted. Lowered at
    /// start to what the process's descriptor limit leaves room for.
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 client: its /64); 0 for no
    /// cap of its own (behind a reverse proxy every client has the proxy's address). Unset:
    /// 64 in production, none in sandbox mode (a load generator on one machine is one address).
    pub max_connections_per_address: Option<usize>,
}

impl HttpConfig {
    /// The per-address cap when none is configured in production.
    pub const PRODUCTION_PER_ADDRESS: usize = 64;

    /// The per-address connection cap in force in `mode`; 0 is none.
    pub fn per_address(&self, mode: Mode) -> usize {
        match (self.max_connections_per_address, mode) {
            (Some(n), _) => n,
            (None, Mode::Sandbox) => 0,
            (None, Mode::Production) => Self::PRODUCTION_PER_ADDRESS,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            idle_timeout_ms: 5_000,
            max_connections: 1024,
            max_connections_per_address: None,
        }
    }
}

/// Requests answered per second, per merchant and per client address (`[rate_limit]`); a
/// request over the limit gets its dialect's busy answer with HTTP 429 and changes nothing.
/// A limit left out takes its mode's default: off in sandbox mode, on in production; 0 is off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second of one merchant, counted once its signature is verified (so no
    /// one else can spend a merchant's allowance).
    pub per_merchant: Option<u32>,
    /// How many of them may come at once (default: twice the rate).
    pub per_merchant_burst: Option<u32>,
    /// Requests per second to the merchant APIs from one client address (an IPv6 client: its
    /// /64), counted before anything else is read.
    pub per_address: Option<u32>,
    /// How many of them may come at once (default: twice the rate).
    pub per_address_burst: Option<u32>,
}

/// A rate in force: so many requests per second, so many at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimitConfig {
    /// Production's rates when none is configured.
    pub const PRODUCTION_PER_MERCHANT: u32 = 100;
    pub const PRODUCTION_PER_ADDRESS: u32 = 100;

    /// The per-merchant rate in force in `mode`; `None` when off.
    pub fn merchant(&self, mode: Mode) -> Option<Rate> {
        Self::rate(
            self.per_merchant,
            self.per_merchant_burst,
            mode,
            Self::PRODUCTION_PER_MERCHANT,
        )
    }

    /// The per-address rate in force in `mode`; `None` when off.
    pub fn address(&self, mode: Mode) -> Option<Rate> {
        Self::rate(
            self.per_address,
            self.per_address_burst,
            mode,
            Self::PRODUCTION_PER_ADDRESS,
        )
    }

    fn rate(rate: Option<u32>, burst: Option<u32>, mode: Mode, production: u32) -> Option<Rate> {
        let per_second = match (rate, mode) {
            (Some(r), _) => r,
            (None, Mode::Sandbox) => 0,
            (None, Mode::Production) => production,
        };
        if per_second == 0 {
            return None;
        }
        Some(Rate {
            per_second,
            burst: burst
                .filter(|b| *b > 0)
                .unwrap_or(per_second.saturating_mul(2)),
        })
    }
}

/// Which wallet moves the money (`[channel]`, and each `[merchant_channels."N"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// `sandbox` (in-process, the default) or the base URL of an HTTP wallet.
    pub wallet: String,
    /// The shared HMAC key of the HTTP wallet protocol (hex, at least 16 bytes).
    #[serde(deserialize_with = "file::secret")]
    pub key: Option<Secret<String>>,
    /// How long one wallet call may take before its outcome counts as unknown.
    pub timeout_ms: u64,
}

impl Default for ChannelConfig {
    fn default() -> ChannelConfig {
        ChannelConfig {
            wallet: "sandbox".into(),
            key: None,
            timeout_ms: 10_000,
        }
    }
}

/// Notification settings (`[notify]` in the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Delays before each attempt, counted from the previous one (`schedule_s = "0,30,60"`).
    #[serde(rename = "schedule_s", deserialize_with = "file::schedule")]
    pub schedule: Schedule,
    /// How long one POST to a merchant may take.
    pub timeout_ms: u64,
    /// Private networks notifications may reach anyway ("10.1.0.0/16").
    #[serde(deserialize_with = "file::networks")]
    pub allowed_networks: Vec<(std::net::IpAddr, u8)>,
    /// The most notifications this node sends at once.
    pub max_in_flight: NonZeroUsize,
    /// The most notifications of one merchant this node sends at once: a merchant whose
    /// receiver is slow or never answers holds at most this many slots.
    pub max_in_flight_per_merchant: NonZeroUsize,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            schedule: Schedule::default(),
            timeout_ms: 10_000,
            allowed_networks: Vec::new(),
            max_in_flight: NonZeroUsize::new(tillgate_notify::DEFAULT_MAX_IN_FLIGHT)
                .unwrap_or(NonZeroUsize::MIN),
            max_in_flight_per_merchant: NonZeroUsize::new(
                tillgate_notify::DEFAULT_MAX_IN_FLIGHT_PER_MERCHANT,
            )
            .unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Parses a schedule such as "0,30,60".
pub fn parse_schedule(text: &str) -> anyhow::Result<Schedule> {
    Schedule::parse(text).map_err(|e| anyhow::anyhow!(e))
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: "sqlite://tillgate.db".into(),
            mode: Mode::Sandbox,
            master_key: None,
            master_key_file: None,
            default_timezone: MerchantZone::utc(),
            max_body_bytes: 64 * 1024,
            database_max_connections: 16,
            database_writers: NonZeroUsize::new(tillgate_store_postgres::DEFAULT_WRITERS)
                .unwrap_or(NonZeroUsize::MIN),
            database_write_queue: NonZeroUsize::new(tillgate_store_postgres::DEFAULT_QUEUE)
                .unwrap_or(NonZeroUsize::MIN),
            database_write_batch: NonZeroUsize::new(tillgate_store_postgres::DEFAULT_BATCH)
                .unwrap_or(NonZeroUsize::MIN),
            admin_token: None,
            notify: NotifyConfig::default(),
            channel: ChannelConfig::default(),
            merchant_channels: std::collections::BTreeMap::new(),
            janitor_interval_ms: 5_000,
            terminal_wait_ms: 60_000,
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            replay: ReplayConfig::default(),
            cors: CorsConfig::default(),
            observability: ObservabilityConfig::default(),
            books: BooksConfig::default(),
        }
    }
}

impl Config {
    /// Defaults overridden by the TOML file at `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        if config.master_key.is_some() && config.master_key_file.is_some() {
            bail!(
                "config file {} gives both master_key and master_key_file; keep one",
                path.display()
            );
        }
        Ok(config)
    }

    /// Where sandbox mode keeps its generated master key: beside the SQLite file.
    pub fn sandbox_key_path(&self) -> PathBuf {
        match sqlite_path(&self.database_url) {
            Some(db) => PathBuf::from(format!("{db}.key")),
            None => PathBuf::from("tillgate-sandbox.key"),
        }
    }
}

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> anyhow::Result<MerchantZone> {
    match MerchantZone::parse(name) {
        Some(z) => Ok(z),
        None => bail!("unknown time zone {name:?}; use an IANA name such as Europe/Amsterdam"),
    }
}

/// Reads the gateway's public address: http or https, a host, an optional path prefix, no
/// query, fragment or user. Kept without a trailing slash.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("public_url {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "public_url {text:?} must be http(s)://host[:port][/path], without query, fragment \
             or user"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Readers of the TOML values that are not plain strings and numbers in [`Config`].
mod file {
    use super::*;
    use serde::de::Error;

    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
        Ok(Some(Secret::new(String::deserialize(d)?)))
    }

    pub fn time_of_day<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<chrono::NaiveTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            chrono::NaiveTime::parse_from_str(&t, "%H:%M").map_err(|_| {
                serde::de::Error::custom(format!("{t:?} is not a time of day as HH:MM (UTC)"))
            })
        })
        .transpose()
    }

    pub fn zone<'de, D: Deserializer<'de>>(d: D) -> Result<MerchantZone, D::Error> {
        parse_zone(&String::deserialize(d)?).map_err(|e| D::Error::custom(format!("{e:#}")))
    }

    pub fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Schedule, D::Error> {
        parse_schedule(&String::deserialize(d)?).map_err(|e| D::Error::custom(format!("{e:#}")))
    }

    pub fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        super::parse_public_url(&String::deserialize(d)?)
            .map(Some)
            .map_err(D::Error::custom)
    }

    pub fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|o| crate::cors::parse_origin(o).map_err(D::Error::custom))
            .collect()
    }

    pub fn networks<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(std::net::IpAddr, u8)>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|net| UrlPolicy::parse_network(net).map_err(D::Error::custom))
            .collect()
    }
}

/// The file path of a SQLite URL, if it is one.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_overrides_the_defaults_and_refuses_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("tillgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tillgate.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndatabase_max_connections = 4\ndefault_timezone = \"Europe/Amsterdam\"\n\
             [notify]\nschedule_s = \"0,5\"\nallowed_networks = [\"10.1.0.0/16\"]\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.database_max_connections, 4);
        assert_eq!(c.default_timezone.name(), "Europe/Amsterdam");
        assert_eq!(c.notify.schedule.to_text(), "0,5");
        assert_eq!(c.notify.allowed_networks.len(), 1);
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        assert!(Config::from_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Reads `text` as the config file `name` of a directory of this test process.
    fn read(name: &str, text: &str) -> anyhow::Result<Config> {
        // Tests run at once: each read has a directory of its own, whatever its name.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tillgate-config-{}-{name}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tillgate.toml");
        std::fs::write(&path, text).unwrap();
        let read = Config::from_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        read
    }

    fn error(name: &str, text: &str) -> String {
        format!("{:#}", read(name, text).expect_err("must be refused"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = read("empty", "").unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.channel.wallet, "sandbox");
        assert_eq!(c.notify.timeout_ms, 10_000);
        assert_eq!(c.notify.max_in_flight.get(), 64);
        assert_eq!(c.notify.max_in_flight_per_merchant.get(), 4);
        // A table given with none of its keys keeps its defaults too.
        let c = read("empty-tables", "[notify]\n[channel]\n").unwrap();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn every_key_of_the_file_lands_in_the_configuration() {
        let c = read(
            "every-key",
            r#"
listen = "0.0.0.0:9000"
database_url = "postgres://db/tillgate"
mode = "production"
master_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
default_timezone = "Asia/Shanghai"
max_body_bytes = 1024
database_max_connections = 3
admin_token = "file-admin-token"
janitor_interval_ms = 250
terminal_wait_ms = 1500

[notify]
schedule_s = "0,10,20"
timeout_ms = 700
allowed_networks = ["10.20.0.0/16", "fd00::/8"]
max_in_flight = 16
max_in_flight_per_merchant = 2

[channel]
wallet = "http://127.0.0.1:9090"
key = "aabbccddeeff00112233445566778899"
timeout_ms = 900

[merchant_channels."700001"]
wallet = "http://127.0.0.1:9191"
key = "99887766554433221100ffeeddccbbaa"

[merchant_channels."700002"]
timeout_ms = 42

[http]
header_read_timeout_ms = 1001
body_read_timeout_ms = 1002
idle_timeout_ms = 1003
max_connections = 77
max_connections_per_address = 7

[rate_limit]
per_merchant = 5
per_merchant_burst = 6
per_address = 0
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.database_url, "postgres://db/tillgate");
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.master_key.as_ref().map(|k| k.expose().len()), Some(64));
        assert_eq!(c.default_timezone.name(), "Asia/Shanghai");
        assert_eq!(c.max_body_bytes, 1024);
        assert_eq!(c.database_max_connections, 3);
        assert_eq!(
            c.admin_token.as_ref().map(|t| t.expose().as_str()),
            Some("file-admin-token")
        );
        assert_eq!(c.janitor_interval_ms, 250);
        assert_eq!(c.terminal_wait_ms, 1500);
        assert_eq!(c.notify.schedule.to_text(), "0,10,20");
        assert_eq!(c.notify.timeout_ms, 700);
        assert_eq!(c.notify.max_in_flight.get(), 16);
        assert_eq!(c.notify.max_in_flight_per_merchant.get(), 2);
        assert_eq!(
            c.notify.allowed_networks,
            vec![
                ("10.20.0.0".parse().unwrap(), 16),
                ("fd00::".parse().unwrap(), 8)
            ]
        );
        assert_eq!(c.channel.wallet, "http://127.0.0.1:9090");
        assert_eq!(
            c.channel.key.as_ref().map(|k| k.expose().as_str()),
            Some("aabbccddeeff00112233445566778899")
        );
        assert_eq!(c.channel.timeout_ms, 900);
        let own = &c.merchant_channels["700001"];
        assert_eq!(own.wallet, "http://127.0.0.1:9191");
        assert_eq!(
            own.timeout_ms, 10_000,
            "a merchant's wallet has its own default"
        );
        // Keys a merchant's table leaves out take the defaults, not the [channel] table's.
        let other = &c.merchant_channels["700002"];
        assert_eq!(other.wallet, "sandbox");
        assert!(other.key.is_none());
        assert_eq!(other.timeout_ms, 42);
        assert_eq!(
            (
                c.http.header_read_timeout_ms,
                c.http.body_read_timeout_ms,
                c.http.idle_timeout_ms,
                c.http.max_connections,
                c.http.per_address(Mode::Sandbox)
            ),
            (1001, 1002, 1003, 77, 7)
        );
        assert_eq!(
            c.rate_limit.merchant(Mode::Production),
            Some(Rate {
                per_second: 5,
                burst: 6
            })
        );
        assert_eq!(c.rate_limit.address(Mode::Production), None, "0 is off");
        // Secrets stay hidden when the configuration is printed.
        let printed = format!("{c:?}");
        assert!(!printed.contains("file-admin-token") && !printed.contains("aabbcc"));
    }

    #[test]
    fn an_unknown_key_is_refused_by_name_in_every_table() {
        for (name, text, key) in [
            ("top", "lisen = \"x\"\n", "lisen"),
            ("notify", "[notify]\nschedule = \"0,5\"\n", "schedule"),
            ("channel", "[channel]\nwalet = \"sandbox\"\n", "walet"),
            (
                "merchant",
                "[merchant_channels.\"700001\"]\ntimeout = 5\n",
                "timeout",
            ),
            ("table", "[notfy]\ntimeout_ms = 5\n", "notfy"),
            (
                "http",
                "[http]\nheader_timeout_ms = 5\n",
                "header_timeout_ms",
            ),
            ("rate", "[rate_limit]\nper_client = 5\n", "per_client"),
            (
                "observability",
                "[observability]\nlisten_on = \"127.0.0.1:9100\"\n",
                "listen_on",
            ),
        ] {
            let err = error(name, text);
            assert!(err.contains("is not valid"), "{err}");
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
    }

    #[test]
    fn values_the_gateway_cannot_use_are_refused_with_their_reason() {
        let err = error("zone", "default_timezone = \"Mars/Olympus\"\n");
        assert!(err.contains("unknown time zone \"Mars/Olympus\""), "{err}");
        let err = error("schedule", "[notify]\nschedule_s = \"0,x\"\n");
        assert!(err.contains("schedule_s"), "{err}");
        let err = error(
            "network",
            "[notify]\nallowed_networks = [\"10.0.0.0/99\"]\n",
        );
        assert!(err.contains("10.0.0.0/99"), "{err}");
        let err = error("per-merchant", "[notify]\nmax_in_flight_per_merchant = 0\n");
        assert!(err.contains("max_in_flight_per_merchant"), "{err}");
        let err = error("mode", "mode = \"live\"\n");
        assert!(err.contains("live") && err.contains("production"), "{err}");
        let err = error("type", "janitor_interval_ms = \"soon\"\n");
        assert!(err.contains("janitor_interval_ms"), "{err}");
    }

    #[test]
    fn the_per_address_connection_cap_is_off_in_sandbox_and_on_in_production_unless_configured() {
        let none = HttpConfig::default();
        assert_eq!(none.per_address(Mode::Sandbox), 0);
        assert_eq!(none.per_address(Mode::Production), 64);
        let off = read("per-address", "[http]\nmax_connections_per_address = 0\n")
            .unwrap()
            .http;
        assert_eq!(off.per_address(Mode::Production), 0);
    }

    #[test]
    fn rate_limits_are_off_in_sandbox_and_on_in_production_unless_configured() {
        let none = RateLimitConfig::default();
        assert_eq!(none.merchant(Mode::Sandbox), None);
        assert_eq!(none.address(Mode::Sandbox), None);
        let on = Rate {
            per_second: 100,
            burst: 200,
        };
        assert_eq!(none.merchant(Mode::Production), Some(on));
        assert_eq!(none.address(Mode::Production), Some(on));
        let set = read("rates", "[rate_limit]\nper_address = 3\n")
            .unwrap()
            .rate_limit;
        assert_eq!(
            set.address(Mode::Sandbox),
            Some(Rate {
                per_second: 3,
                burst: 6
            }),
            "a configured rate holds in sandbox mode too"
        );
        assert_eq!(set.merchant(Mode::Sandbox), None);
    }

    /// Every setting of the configuration file, as `table.key` (`merchant_channels.N.key` for
    /// a merchant's wallet). A new setting goes here and into `tillgate.example.toml`.
    const EVERY_SETTING: &[&str] = &[
        "listen",
        "public_url",
        "database_url",
        "mode",
        "master_key",
        "master_key_file",
        "default_timezone",
        "max_body_bytes",
        "database_max_connections",
        "database_writers",
        "database_write_queue",
        "database_write_batch",
        "admin_token",
        "janitor_interval_ms",
        "terminal_wait_ms",
        "notify.schedule_s",
        "notify.timeout_ms",
        "notify.allowed_networks",
        "notify.max_in_flight",
        "notify.max_in_flight_per_merchant",
        "channel.wallet",
        "channel.key",
        "channel.timeout_ms",
        "merchant_channels.N.wallet",
        "merchant_channels.N.key",
        "merchant_channels.N.timeout_ms",
        "http.header_read_timeout_ms",
        "http.body_read_timeout_ms",
        "http.idle_timeout_ms",
        "http.max_connections",
        "http.max_connections_per_address",
        "rate_limit.per_merchant",
        "rate_limit.per_merchant_burst",
        "rate_limit.per_address",
        "rate_limit.per_address_burst",
        "replay.window_s",
        "replay.require_refund_reference",
        "cors.allowed_origins",
        "observability.listen",
        "books.reconcile_at",
    ];

    /// The `table.key` paths of a TOML document (a merchant's number reads as N).
    fn settings_of(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let key = if prefix == "merchant_channels." {
                "N"
            } else {
                key
            };
            match value {
                toml::Value::Table(inner) => settings_of(inner, &format!("{prefix}{key}."), out),
                _ => out.push(format!("{prefix}{key}")),
            }
        }
    }

    #[test]
    fn the_sample_configuration_names_every_setting_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tillgate.example.toml");
        // As shipped, it loads, and every value in it is the default.
        let shipped = Config::from_file(&path).unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
        // With the settings it shows commented out switched on, it still loads, and it names
        // every setting there is.
        let text = std::fs::read_to_string(&path).unwrap();
        let on: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let everything: Config = toml::from_str(&on).unwrap();
        assert!(everything.master_key.is_some() && everything.merchant_channels.len() == 1);
        let mut named = Vec::new();
        settings_of(&toml::from_str(&on).unwrap(), "", &mut named);
        named.sort();
        let mut every: Vec<String> = EVERY_SETTING.iter().map(|s| s.to_string()).collect();
        every.sort();
        assert_eq!(named, every);
    }

    #[test]
    fn every_toml_snippet_of_the_readme_is_a_configuration_the_gateway_accepts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let snippets: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap_or(""))
            .collect();
        assert!(
            snippets.len() >= 3,
            "too few TOML snippets: {}",
            snippets.len()
        );
        for snippet in snippets {
            let c: Config = toml::from_str(snippet)
                .unwrap_or_else(|e| panic!("README snippet refused: {e}\n{snippet}"));
            for wallet in std::iter::once(&c.channel).chain(c.merchant_channels.values()) {
                if let Some(key) = &wallet.key {
                    tillgate_wallet::protocol::parse_key_hex(key.expose())
                        .unwrap_or_else(|e| panic!("README wallet key refused: {e}\n{snippet}"));
                }
            }
        }
    }

    #[test]
    fn health_and_metrics_get_a_listener_of_their_own_only_when_configured() {
        assert_eq!(Config::default().observability.listen, None);
        let c = read(
            "observability",
            "[observability]\nlisten = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        assert_eq!(c.observability.listen.as_deref(), Some("127.0.0.1:9100"));
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite://tillgate.db"), Some("tillgate.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db?mode=rwc"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("postgres://localhost/db"), None);
    }
}
