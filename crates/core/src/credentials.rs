//! Merchants and their credentials: stores (Pockyt tokens), unified-API apps and POS terminals,
//! sealed at rest with the master key, opened and cached for the dialects' authenticators, the
//! notification renderers and the terminal hub. Also the merchant's notification schedule and
//! the keys a merchant may use only once (YabandPay's request_id).

use crate::model::{
    AppRow, CredentialKind, MerchantRecord, MerchantSetup, NewMerchant, Rotation, StoreAdded,
    StoreRow, WantedCredential,
};
use crate::notify::Schedule;
use crate::secret::{Secret, SecretBox, SecretError};
use crate::store::{CredentialStore, StoreError};
use crate::terminal::TerminalRow;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tillgate_domain::{Clock, Currency, MerchantZone};

/// Why a merchant's credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("unknown merchant or store")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored credential does not open: {0}")]
    Sealed(#[from] SecretError),
}

/// Why the master key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    /// The database's credentials were sealed with another master key.
    #[error("the master key does not open this database's credentials: they were sealed with another key")]
    WrongKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The text sealed as the master key's check value, and the context it is sealed for.
const KEY_CHECK_TEXT: &str = "tillgate master key check";
const KEY_CHECK_CONTEXT: &str = "key-check";

/// A credential a merchant's set-up asks for, in clear.
#[derive(Debug, Clone)]
pub struct CredentialWanted {
    /// The store number, app id or tid.
    pub key: String,
    pub secret: Secret<String>,
    /// `true`: this one (added unless it exists). `false`: the merchant's first of its kind,
    /// this one added only for a merchant the set-up creates.
    pub named: bool,
}

/// A merchant to set up with a store, an app and a terminal, as one change.
#[derive(Debug, Clone)]
pub struct MerchantWanted {
    pub merchant_no: String,
    /// The zone of a merchant the set-up creates (an existing merchant keeps its own).
    pub zone: MerchantZone,
    /// The notification schedule of a merchant the set-up creates.
    pub notify_schedule: Option<Schedule>,
    pub store: CredentialWanted,
    pub app: CredentialWanted,
    pub terminal: CredentialWanted,
}

/// A credential in force after a set-up, opened.
#[derive(Debug, Clone)]
pub struct CredentialInForce {
    pub key: String,
    pub secret: Secret<String>,
    /// Whether the set-up added it.
    pub created: bool,
}

/// What a merchant's set-up left in force.
#[derive(Debug, Clone)]
pub struct MerchantInForce {
    pub merchant: MerchantRecord,
    /// Whether the set-up created the merchant.
    pub created: bool,
    pub store: CredentialInForce,
    /// `None`: an existing merchant without one, and none was asked for by name.
    pub app: Option<CredentialInForce>,
    pub terminal: Option<CredentialInForce>,
}

/// A store's API credential, opened.
#[derive(Debug)]
pub struct StoreCredential {
    pub merchant: MerchantRecord,
    pub store_no: String,
    /// What an add naming no currency is in (`None`: USD).
    pub default_currency: Option<Currency>,
    pub token: Secret<String>,
    /// The token it had before a rotation, while it is still accepted.
    pub previous: Option<Previous>,
}

/// An opened unified-API app credential.
#[derive(Debug)]
pub struct AppCredential {
    pub merchant: MerchantRecord,
    pub app_id: String,
    pub secret: Secret<String>,
    /// The secret it had before a rotation, while it is still accepted.
    pub previous: Option<Previous>,
}

/// An opened terminal credential (also the YabandPay user of its POS methods).
#[derive(Debug)]
pub struct TerminalCredential {
    pub merchant: MerchantRecord,
    pub tid: String,
    pub secret: Secret<String>,
    /// The secret it had before a rotation, while it is still accepted.
    pub previous: Option<Previous>,
}

/// A credential's secret before its rotation, and until when requests signed with it are
/// still accepted. Answers and notifications are always signed with the new secret.
#[derive(Debug, Clone)]
pub struct Previous {
    pub secret: Secret<String>,
    pub until: DateTime<Utc>,
}

/// The previous secret of a credential, if it is still accepted at `now`.
pub fn previous_at(previous: &Option<Previous>, now: DateTime<Utc>) -> Option<&Secret<String>> {
    previous
        .as_ref()
        .filter(|p| now < p.until)
        .map(|p| &p.secret)
}

/// The most opened credentials of one kind kept in memory (a bound).
const CACHE_ENTRIES: usize = 10_000;

/// Opened credentials kept for a short while, so a signature check costs no database read and
/// no decryption; bounded in size.
struct Cache<K, V> {
    entries: RwLock<HashMap<K, (Instant, Arc<V>)>>,
}

impl<K: Hash + Eq, V> Cache<K, V> {
    fn new() -> Cache<K, V> {
        Cache {
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, ttl: Duration) -> Option<Arc<V>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((at, v)) if at.elapsed() < ttl => Some(v.clone()),
            _ => None,
        }
    }

    fn forget(&self, key: &K) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }

    fn put(&self, key: K, value: Arc<V>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() > CACHE_ENTRIES {
            // Credentials are cheap to read again.
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

fn store_context(merchant_no: &str, store_no: &str) -> String {
    format!("store:{merchant_no}/{store_no}")
}

fn app_context(app_id: &str) -> String {
    format!("app:{app_id}")
}

fn terminal_context(tid: &str) -> String {
    format!("terminal:{tid}")
}

/// Merchants and their credentials.
pub struct Credentials {
    store: Arc<dyn CredentialStore>,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    /// How long an opened credential is kept before it is read again.
    ttl: Duration,
    stores: Cache<(String, String), StoreCredential>,
    apps: Cache<String, AppCredential>,
    terminals: Cache<String, TerminalCredential>,
}

/// Reads a merchant's name as customers see it: trimmed, at most 80 characters, no control
/// characters; an empty one is no name.
pub fn display_name(text: &str) -> Result<Option<&str>, &'static str> {
    let name = text.trim();
    if name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err("a merchant's name is at most 80 characters, without control characters");
    }
    Ok((!name.is_empty()).then_some(name))
}

impl Credentials {
    /// Rotates a credential of `merchant`: a new random secret replaces it at once (answers and
    /// notifications are signed with it), and requests signed with the old one are still
    /// accepted for `grace`. Answers the new secret, shown once. Other nodes see the change
    /// within their credential cache's lifetime.
    pub async fn rotate(
        &self,
        kind: CredentialKind,
        merchant: &MerchantRecord,
        key: &str,
        grace: chrono::Duration,
    ) -> Result<Secret<String>, CredentialError> {
        let len = if kind == CredentialKind::App { 64 } else { 32 };
        let fresh = SecretBox::generate_key_hex().expose()[..len].to_owned();
        let (context, previous_key) = match kind {
            CredentialKind::Store => (
                store_context(&merchant.merchant_no, key),
                format!("{}/{key}", merchant.merchant_no),
            ),
            CredentialKind::App => (app_context(key), key.to_owned()),
            CredentialKind::Terminal => (terminal_context(key), key.to_owned()),
        };
        let rotated = self
            .store
            .rotate_secret(Rotation {
                kind,
                merchant_id: merchant.id,
                key: key.to_owned(),
                previous_key,
                new_sealed: self.secrets.seal(&fresh, &context),
                until: self.clock.now() + grace,
            })
            .await?;
        if !rotated {
            return Err(CredentialError::Unknown);
        }
        match kind {
            CredentialKind::Store => self
                .stores
                .forget(&(merchant.merchant_no.clone(), key.to_owned())),
            CredentialKind::App => self.apps.forget(&key.to_owned()),
            CredentialKind::Terminal => self.terminals.forget(&key.to_owned()),
        }
        Ok(Secret::new(fresh))
    }

    /// The time on the credentials' clock (when a previous secret is still accepted).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The tokens of the hosted payment pages (keyed by the master key).
    pub fn page_tokens(&self) -> crate::page::PageTokens {
        self.secrets.page_tokens()
    }

    pub fn new(
        store: Arc<dyn CredentialStore>,
        secrets: SecretBox,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Credentials {
        Credentials {
            store,
            secrets,
            clock,
            ttl,
            stores: Cache::new(),
            apps: Cache::new(),
            terminals: Cache::new(),
        }
    }

    /// Creates a merchant, or returns the existing one with that number.
    pub async fn create_merchant(
        &self,
        merchant_no: &str,
        zone: MerchantZone,
        sandbox: bool,
    ) -> Result<MerchantRecord, StoreError> {
        self.store
            .upsert_merchant(NewMerchant {
                merchant_no: merchant_no.to_owned(),
                zone,
                sandbox,
                created_at: self.clock.now(),
            })
            .await
    }

    /// Checks the master key against the database's check value: a key that does not open it
    /// is [`KeyCheckError::WrongKey`]. A database without a check value yet is checked against
    /// its oldest store's token, if it has one; then, with `record`, the check value is sealed
    /// with this key and kept (when two nodes race, the first one's stays, and the other's key
    /// is checked against it).
    pub async fn check_master_key(&self, record: bool) -> Result<(), KeyCheckError> {
        let stored = match self.store.key_check().await? {
            Some(stored) => stored,
            None => {
                if let Some(row) = self.store.first_store_row().await? {
                    let context = store_context(&row.merchant.merchant_no, &row.store_no);
                    self.secrets
                        .open(&row.token_sealed, &context)
                        .map_err(|_| KeyCheckError::WrongKey)?;
                }
                if !record {
                    return Ok(());
                }
                let sealed = self.secrets.seal(KEY_CHECK_TEXT, KEY_CHECK_CONTEXT);
                self.store
                    .record_key_check(&sealed, self.clock.now())
                    .await?
            }
        };
        match self.secrets.open(&stored, KEY_CHECK_CONTEXT) {
            Ok(text) if text.expose() == KEY_CHECK_TEXT => Ok(()),
            _ => Err(KeyCheckError::WrongKey),
        }
    }

    /// Sets up a merchant with a store, an app and a terminal as one change (all of it or
    /// nothing), and answers the credentials in force, opened. Running it again with the same
    /// request adds nothing: existing credentials are answered as they are.
    pub async fn set_up_merchant(
        &self,
        wanted: MerchantWanted,
    ) -> Result<MerchantInForce, CredentialError> {
        let merchant_no = wanted.merchant_no.clone();
        let store_context = store_context(&merchant_no, &wanted.store.key);
        let seal = |c: &CredentialWanted, context: &str| WantedCredential {
            key: c.key.clone(),
            sealed: self.secrets.seal(c.secret.expose(), context),
            named: c.named,
        };
        let setup = MerchantSetup {
            merchant: NewMerchant {
                merchant_no: merchant_no.clone(),
                zone: wanted.zone,
                sandbox: false,
                created_at: self.clock.now(),
            },
            notify_schedule: wanted.notify_schedule.as_ref().map(Schedule::to_text),
            store_no: wanted.store.key.clone(),
            token_sealed: self
                .secrets
                .seal(wanted.store.secret.expose(), &store_context),
            app: seal(&wanted.app, &app_context(&wanted.app.key)),
            terminal: seal(&wanted.terminal, &terminal_context(&wanted.terminal.key)),
        };
        let done = self.store.set_up_merchant(setup).await?;
        let in_force = |wanted: &CredentialWanted,
                        key: String,
                        added: StoreAdded,
                        context: String|
         -> Result<CredentialInForce, CredentialError> {
            Ok(match added {
                StoreAdded::Added => CredentialInForce {
                    secret: wanted.secret.clone(),
                    key,
                    created: true,
                },
                StoreAdded::Exists { sealed } => CredentialInForce {
                    secret: self.secrets.open(&sealed, &context)?,
                    key,
                    created: false,
                },
            })
        };
        let store = in_force(
            &wanted.store,
            wanted.store.key.clone(),
            done.store,
            store_context,
        )?;
        let app = done
            .app
            .map(|(key, added)| in_force(&wanted.app, key.clone(), added, app_context(&key)))
            .transpose()?;
        let terminal = done
            .terminal
            .map(|(key, added)| {
                in_force(&wanted.terminal, key.clone(), added, terminal_context(&key))
            })
            .transpose()?;
        Ok(MerchantInForce {
            merchant: done.merchant,
            created: done.created,
            store,
            app,
            terminal,
        })
    }

    /// Sets a merchant's time zone (its business day). A running gateway reads it again
    /// within the credential cache's time to live.
    pub async fn set_zone(
        &self,
        merchant: &MerchantRecord,
        zone: &MerchantZone,
    ) -> Result<(), StoreError> {
        self.store.set_zone(merchant.id, zone).await
    }

    /// Sets (or clears, back to the gateway's default) whether the merchant's refunds must
    /// carry its own refund reference.
    pub async fn set_refund_reference_required(
        &self,
        merchant: &MerchantRecord,
        required: Option<bool>,
    ) -> Result<(), StoreError> {
        self.store
            .set_refund_reference_required(merchant.id, required)
            .await
    }

    /// A merchant by its number.
    pub async fn merchant(&self, merchant_no: &str) -> Result<Option<MerchantRecord>, StoreError> {
        self.store.merchant(merchant_no).await
    }

    /// Sets (or clears) a merchant's own notification schedule.
    pub async fn set_notify_schedule(
        &self,
        merchant: &MerchantRecord,
        schedule: Option<&Schedule>,
    ) -> Result<(), StoreError> {
        let text = schedule.map(Schedule::to_text);
        self.store
            .set_notify_schedule(merchant.id, text.as_deref())
            .await
    }

    /// Claims a merchant key that must stay unique forever within `scope` (YabandPay's
    /// request_id per terminal); false when it was used before.
    pub async fn claim_request_key(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        self.store
            .claim_request_key(scope, key, self.clock.now())
            .await
    }

    /// Adds a store with its API token to a merchant; returns the token in force and whether
    /// the store is new. An existing store keeps its token.
    pub async fn add_store(
        &self,
        merchant: &MerchantRecord,
        store_no: &str,
        token: &Secret<String>,
    ) -> Result<(Secret<String>, bool), CredentialError> {
        let context = store_context(&merchant.merchant_no, store_no);
        self.add_sealed(&context, token, |sealed| async move {
            self.store.add_store(merchant.id, store_no, &sealed).await
        })
        .await
    }

    /// Sets (or, with `None`, clears) the name a merchant's customers see on its hosted
    /// payment pages, as [`display_name`] read it.
    pub async fn set_display_name(
        &self,
        merchant: &MerchantRecord,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        self.store.set_display_name(merchant.id, name).await
    }

    /// Sets a merchant's CORS origins (none: clears them); each already checked to be an
    /// origin (`scheme://host[:port]`, lower case).
    pub async fn set_cors_origins(
        &self,
        merchant: &MerchantRecord,
        origins: &[String],
    ) -> Result<(), StoreError> {
        let text = origins.join(" ");
        self.store
            .set_cors_origins(merchant.id, (!text.is_empty()).then_some(text.as_str()))
            .await
    }

    /// Sets (or clears) the default currency of a merchant's store: what an add naming no
    /// currency is in. A running gateway sees it once its cached credential is read again.
    pub async fn set_store_currency(
        &self,
        merchant: &MerchantRecord,
        store_no: &str,
        currency: Option<Currency>,
    ) -> Result<(), StoreError> {
        self.store
            .set_store_currency(merchant.id, store_no, currency.as_ref().map(Currency::code))
            .await
    }

    /// Adds a unified-API app to a merchant; returns the secret in force and whether the app is
    /// new. An existing app keeps its secret.
    pub async fn add_app(
        &self,
        merchant: &MerchantRecord,
        app_id: &str,
        secret: &Secret<String>,
    ) -> Result<(Secret<String>, bool), CredentialError> {
        let now = self.clock.now();
        self.add_sealed(&app_context(app_id), secret, |sealed| async move {
            self.store.add_app(merchant.id, app_id, &sealed, now).await
        })
        .await
    }

    /// Adds a POS terminal to a merchant; returns the secret in force and whether it is new.
    pub async fn add_terminal(
        &self,
        merchant: &MerchantRecord,
        tid: &str,
        secret: &Secret<String>,
    ) -> Result<(Secret<String>, bool), CredentialError> {
        let now = self.clock.now();
        self.add_sealed(&terminal_context(tid), secret, |sealed| async move {
            self.store
                .add_terminal(merchant.id, tid, &sealed, now)
                .await
        })
        .await
    }

    /// Seals a secret for `context`, stores it with `add`, and answers the secret in force: the
    /// new one, or the one already stored (opened) when the key existed.
    async fn add_sealed<F, Fut>(
        &self,
        context: &str,
        secret: &Secret<String>,
        add: F,
    ) -> Result<(Secret<String>, bool), CredentialError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<StoreAdded, StoreError>>,
    {
        let sealed = self.secrets.seal(secret.expose(), context);
        match add(sealed).await? {
            StoreAdded::Added => Ok((secret.clone(), true)),
            StoreAdded::Exists { sealed } => Ok((self.secrets.open(&sealed, context)?, false)),
        }
    }

    /// The opened credential of a merchant's store, cached for a short while.
    pub async fn store_credential(
        &self,
        merchant_no: &str,
        store_no: &str,
    ) -> Result<Arc<StoreCredential>, CredentialError> {
        let key = (merchant_no.to_owned(), store_no.to_owned());
        let context = store_context(merchant_no, store_no);
        let opened = self
            .open(&self.stores, key, &context, || {
                self.store.store_row(merchant_no, store_no)
            })
            .await?;
        crate::note::merchant(opened.merchant.merchant_no.as_str());
        Ok(opened)
    }

    /// The opened credential of a unified-API app, cached for a short while.
    pub async fn app_credential(
        &self,
        app_id: &str,
    ) -> Result<Arc<AppCredential>, CredentialError> {
        let opened = self
            .open(&self.apps, app_id.to_owned(), &app_context(app_id), || {
                self.store.app_row(app_id)
            })
            .await?;
        crate::note::merchant(opened.merchant.merchant_no.as_str());
        Ok(opened)
    }

    /// The opened credential of a terminal, cached for a short while.
    pub async fn terminal_credential(
        &self,
        tid: &str,
    ) -> Result<Arc<TerminalCredential>, CredentialError> {
        let opened = self
            .open(
                &self.terminals,
                tid.to_owned(),
                &terminal_context(tid),
                || self.store.terminal_row(tid),
            )
            .await?;
        crate::note::merchant(opened.merchant.merchant_no.as_str());
        Ok(opened)
    }

    /// The one way every kind of credential is loaded: from the cache while fresh, else the
    /// stored row is read, its secret opened for `context`, and the result cached.
    async fn open<K, R, Fut>(
        &self,
        cache: &Cache<K, R::Opened>,
        key: K,
        context: &str,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Arc<R::Opened>, CredentialError>
    where
        K: Hash + Eq,
        R: SealedRow,
        Fut: Future<Output = Result<Option<R>, StoreError>>,
    {
        if let Some(cred) = cache.get(&key, self.ttl) {
            return Ok(cred);
        }
        let row = fetch().await?.ok_or(CredentialError::Unknown)?;
        let secret = self.secrets.open(row.sealed(), context)?;
        let (kind, previous_key) = row.previous_key();
        let previous = match self.store.previous_secret(kind, &previous_key).await? {
            Some((sealed, until)) => Some(Previous {
                secret: self.secrets.open(&sealed, context)?,
                until,
            }),
            None => None,
        };
        let cred = Arc::new(row.opened(secret, previous));
        cache.put(key, cred.clone());
        Ok(cred)
    }
}

/// A stored credential row: its sealed secret, and what it is once opened.
trait SealedRow {
    type Opened;
    fn sealed(&self) -> &str;
    /// Where its previous secret is kept after a rotation.
    fn previous_key(&self) -> (CredentialKind, String);
    fn opened(self, secret: Secret<String>, previous: Option<Previous>) -> Self::Opened;
}

impl SealedRow for StoreRow {
    type Opened = StoreCredential;
    fn sealed(&self) -> &str {
        &self.token_sealed
    }
    fn previous_key(&self) -> (CredentialKind, String) {
        (
            CredentialKind::Store,
            format!("{}/{}", self.merchant.merchant_no, self.store_no),
        )
    }
    fn opened(self, token: Secret<String>, previous: Option<Previous>) -> StoreCredential {
        StoreCredential {
            merchant: self.merchant,
            store_no: self.store_no,
            default_currency: self.default_currency,
            token,
            previous,
        }
    }
}

impl SealedRow for AppRow {
    type Opened = AppCredential;
    fn sealed(&self) -> &str {
        &self.secret_sealed
    }
    fn previous_key(&self) -> (CredentialKind, String) {
        (CredentialKind::App, self.app_id.clone())
    }
    fn opened(self, secret: Secret<String>, previous: Option<Previous>) -> AppCredential {
        AppCredential {
            merchant: self.merchant,
            app_id: self.app_id,
            secret,
            previous,
        }
    }
}

impl SealedRow for TerminalRow {
    type Opened = TerminalCredential;
    fn sealed(&self) -> &str {
        &self.secret_sealed
    }
    fn previous_key(&self) -> (CredentialKind, String) {
        (CredentialKind::Terminal, self.tid.clone())
    }
    fn opened(self, secret: Secret<String>, previous: Option<Previous>) -> TerminalCredential {
        TerminalCredential {
            merchant: self.merchant,
            tid: self.tid,
            secret,
            previous,
        }
    }
}
