//! The master key: where it comes from — a key file, the environment or the config file, and in
//! sandbox mode a generated file beside the database — and the check that it is the key the
//! database's credentials were sealed with.
//!
//! The database keeps a check value (a known text sealed with the master key) from its first
//! use on; a gateway or a command given another key refuses with a message naming where the
//! key came from, before it reads or writes anything sealed. Nothing falls back to a sandbox
//! key for a database that already holds credentials.

use crate::config::{Config, Mode};
use crate::redact_url;
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::Arc;
use tillgate_core::credentials::KeyCheckError;
use tillgate_core::{Credentials, Secret, SecretBox, Store};

/// Where an operator gives the master key, for messages.
pub const SETTINGS: &str = "--master-key-file or TILLGATE_MASTER_KEY_FILE (a file holding the \
     key's 64 hex characters), TILLGATE_MASTER_KEY, or master_key_file / master_key in the \
     config file";

/// A master key and where it came from.
pub struct MasterKey {
    pub secrets: SecretBox,
    /// Where it came from, for messages ("the key file /etc/tillgate/master.key").
    pub source: String,
}

/// The master key the configuration gives — its key file, else the key itself — if any. A
/// key file that cannot be read or does not hold a key is an error naming the file.
pub fn configured(config: &Config) -> anyhow::Result<Option<MasterKey>> {
    if let Some(path) = &config.master_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?;
        let secrets = SecretBox::from_hex(text.trim()).with_context(|| {
            format!(
                "the master key file {} does not hold a master key",
                path.display()
            )
        })?;
        warn_if_others_may_read(path);
        return Ok(Some(MasterKey {
            secrets,
            source: format!("the master key of the key file {}", path.display()),
        }));
    }
    match &config.master_key {
        Some(key) => Ok(Some(MasterKey {
            secrets: SecretBox::from_hex(key.expose()).context(
                "the master key (TILLGATE_MASTER_KEY or master_key in the config file) is not valid",
            )?,
            source: "the master key of TILLGATE_MASTER_KEY or the config file's master_key".into(),
        })),
        None => Ok(None),
    }
}

/// The configured master key; production mode refuses to go on without one. Checked before
/// anything else is touched, the database included.
pub fn required_in_production(config: &Config) -> anyhow::Result<Option<MasterKey>> {
    let key = configured(config)?;
    if key.is_none() && config.mode == Mode::Production {
        bail!("production mode needs a master key: set {SETTINGS}");
    }
    Ok(key)
}

/// Merchants' credentials on `store`, opened with the master key: the configured one, else
/// (sandbox mode) the key file beside the database, generated only for a database that holds
/// no credentials yet. The key must open the database's check value, which is kept at first
/// use; another key is refused.
pub async fn open_credentials(
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Arc<Credentials>> {
    let key = match required_in_production(config)? {
        Some(key) => key,
        None => sandbox_key(config, store.as_ref()).await?,
    };
    let credentials = crate::credentials(store, key.secrets);
    check(&credentials, &key.source, config, true).await?;
    Ok(credentials)
}

/// For commands that open no credentials: production mode needs the master key all the same,
/// and a key that is given must be the database's.
pub async fn check_given_key(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<()> {
    if let Some(key) = required_in_production(config)? {
        let credentials = crate::credentials(store, key.secrets);
        check(&credentials, &key.source, config, false).await?;
    }
    Ok(())
}

async fn check(
    credentials: &Credentials,
    source: &str,
    config: &Config,
    record: bool,
) -> anyhow::Result<()> {
    match credentials.check_master_key(record).await {
        Ok(()) => Ok(()),
        Err(KeyCheckError::WrongKey) => bail!(
            "{source} is not the master key of the database {}: its credentials were sealed \
             with another key. Give the key this database was first used with ({SETTINGS})",
            redact_url(&config.database_url)
        ),
        Err(e) => Err(e).context("cannot check the master key against the database"),
    }
}

/// Sandbox mode's key: read from the key file beside the database, or generated into it for a
/// database that holds no credentials yet.
async fn sandbox_key(config: &Config, store: &dyn Store) -> anyhow::Result<MasterKey> {
    let path = config.sandbox_key_path();
    let source = format!("the sandbox key file {}", path.display());
    let hex = match std::fs::read_to_string(&path) {
        // Another node sharing this directory created it a moment ago and is still writing.
        Ok(text) if text.trim().len() < 64 => wait_for_key(&path)?,
        Ok(text) => Secret::new(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let used =
                store.key_check().await?.is_some() || store.first_store_row().await?.is_some();
            if used && path.exists() {
                // A node sharing this directory wrote the file and used the database with it
                // between our look at the file and our look at the database: its key.
                wait_for_key(&path)?
            } else if used {
                bail!(
                    "the database {} was first used with a master key, and none is given (there \
                     is no sandbox key file {}): set {SETTINGS}",
                    redact_url(&config.database_url),
                    path.display()
                );
            } else {
                let key = SecretBox::generate_key_hex();
                match write_private(&path, key.expose()) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "generated the sandbox master key");
                        key
                    }
                    // Another node sharing this directory wrote it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => wait_for_key(&path)?,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot write key file {}", path.display()))
                    }
                }
            }
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read key file {}", path.display()))
        }
    };
    let secrets = SecretBox::from_hex(hex.expose())
        .with_context(|| format!("key file {} is not valid", path.display()))?;
    Ok(MasterKey { secrets, source })
}

/// Reads a key file another process is writing, waiting briefly for its content.
fn wait_for_key(path: &Path) -> anyhow::Result<Secret<String>> {
    for _ in 0..50 {
        let text = std::fs::read_to_string(path)?;
        if text.trim().len() == 64 {
            return Ok(Secret::new(text.trim().to_owned()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    bail!("key file {} stays incomplete", path.display())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Warns when a key file may be read by other users of the machine.
fn warn_if_others_may_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the master key file may be read by other users; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
