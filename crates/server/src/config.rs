//! Configuration: defaults, then a TOML file, then environment and command line.

use anyhow::{bail, Context};
use serde::Deserialize;
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

/// Everything `tillgate serve` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    pub mode: Mode,
    /// 64 hex characters; sealing key of credentials at rest.
    pub master_key: Option<Secret<String>>,
    /// Time zone of merchants created without one.
    pub default_timezone: MerchantZone,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Size of the PostgreSQL connection pool of this node.
    pub database_max_connections: u32,
    /// Bearer token of the admin API; without one the admin API is open in sandbox mode and
    /// off in production.
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
}

/// Which wallet moves the money.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// `sandbox` (in-process, the default) or the base URL of an HTTP wallet.
    pub wallet: String,
    /// The shared HMAC key of the HTTP wallet protocol (hex, at least 16 bytes).
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

/// The `[channel]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    wallet: Option<String>,
    key: Option<String>,
    timeout_ms: Option<u64>,
}

/// Notification settings (`[notify]` in the TOML file).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Delays before each attempt, counted from the previous one.
    pub schedule: Schedule,
    /// How long one POST to a merchant may take.
    pub timeout_ms: u64,
    /// Private networks notifications may reach anyway ("10.1.0.0/16").
    pub allowed_networks: Vec<(std::net::IpAddr, u8)>,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            schedule: Schedule::default(),
            timeout_ms: 10_000,
            allowed_networks: Vec::new(),
        }
    }
}

/// The `[notify]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    schedule_s: Option<String>,
    timeout_ms: Option<u64>,
    allowed_networks: Option<Vec<String>>,
}

impl ChannelFile {
    fn apply(self, to: &mut ChannelConfig) {
        if let Some(v) = self.wallet {
            to.wallet = v;
        }
        if let Some(v) = self.key {
            to.key = Some(Secret::new(v));
        }
        if let Some(v) = self.timeout_ms {
            to.timeout_ms = v;
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
            database_url: "sqlite://tillgate.db".into(),
            mode: Mode::Sandbox,
            master_key: None,
            default_timezone: MerchantZone::utc(),
            max_body_bytes: 64 * 1024,
            database_max_connections: 16,
            admin_token: None,
            notify: NotifyConfig::default(),
            channel: ChannelConfig::default(),
            merchant_channels: std::collections::BTreeMap::new(),
            janitor_interval_ms: 5_000,
            terminal_wait_ms: 60_000,
        }
    }
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    database_url: Option<String>,
    mode: Option<Mode>,
    master_key: Option<String>,
    default_timezone: Option<String>,
    max_body_bytes: Option<usize>,
    database_max_connections: Option<u32>,
    admin_token: Option<String>,
    notify: Option<NotifyFile>,
    channel: Option<ChannelFile>,
    merchant_channels: Option<std::collections::BTreeMap<String, ChannelFile>>,
    janitor_interval_ms: Option<u64>,
    terminal_wait_ms: Option<u64>,
}

impl Config {
    /// Defaults overridden by the TOML file at `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file: File = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        let mut c = Config::default();
        if let Some(v) = file.listen {
            c.listen = v;
        }
        if let Some(v) = file.database_url {
            c.database_url = v;
        }
        if let Some(v) = file.mode {
            c.mode = v;
        }
        if let Some(v) = file.master_key {
            c.master_key = Some(Secret::new(v));
        }
        if let Some(v) = file.default_timezone {
            c.default_timezone = parse_zone(&v)?;
        }
        if let Some(v) = file.max_body_bytes {
            c.max_body_bytes = v;
        }
        if let Some(v) = file.database_max_connections {
            c.database_max_connections = v;
        }
        if let Some(v) = file.admin_token {
            c.admin_token = Some(Secret::new(v));
        }
        if let Some(ch) = file.channel {
            ch.apply(&mut c.channel);
        }
        for (merchant_no, ch) in file.merchant_channels.unwrap_or_default() {
            let mut own = ChannelConfig::default();
            ch.apply(&mut own);
            c.merchant_channels.insert(merchant_no, own);
        }
        if let Some(v) = file.janitor_interval_ms {
            c.janitor_interval_ms = v;
        }
        if let Some(v) = file.terminal_wait_ms {
            c.terminal_wait_ms = v;
        }
        if let Some(n) = file.notify {
            if let Some(v) = n.schedule_s {
                c.notify.schedule = parse_schedule(&v)?;
            }
            if let Some(v) = n.timeout_ms {
                c.notify.timeout_ms = v;
            }
            for net in n.allowed_networks.unwrap_or_default() {
                c.notify
                    .allowed_networks
                    .push(UrlPolicy::parse_network(&net).map_err(|e| anyhow::anyhow!(e))?);
            }
        }
        Ok(c)
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

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite://tillgate.db"), Some("tillgate.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db?mode=rwc"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("postgres://localhost/db"), None);
    }
}
