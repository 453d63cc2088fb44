//! Merchants and their credentials: stores (Pockyt tokens), unified-API apps and POS terminals,
//! sealed at rest with the master key, opened and cached for the dialects' authenticators, the
//! notification renderers and the terminal hub. Also the merchant's notification schedule and
//! the keys a merchant may use only once (YabandPay's request_id).

use crate::model::{AppRow, MerchantRecord, NewMerchant, StoreAdded, StoreRow};
use crate::notify::Schedule;
use crate::secret::{Secret, SecretBox, SecretError};
use crate::store::{CredentialStore, StoreError};
use crate::terminal::TerminalRow;
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

/// A store's API credential, opened.
#[derive(Debug)]
pub struct StoreCredential {
    pub merchant: MerchantRecord,
    pub store_no: String,
    /// What an add naming no currency is in (`None`: USD).
    pub default_currency: Option<Currency>,
    pub token: Secret<String>,
}

/// An opened unified-API app credential.
#[derive(Debug)]
pub struct AppCredential {
    pub merchant: MerchantRecord,
    pub app_id: String,
    pub secret: Secret<String>,
}

/// An opened terminal credential (also the YabandPay user of its POS methods).
#[derive(Debug)]
pub struct TerminalCredential {
    pub merchant: MerchantRecord,
    pub tid: String,
    pub secret: Secret<String>,
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

impl Credentials {
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
        let cred = Arc::new(row.opened(secret));
        cache.put(key, cred.clone());
        Ok(cred)
    }
}

/// A stored credential row: its sealed secret, and what it is once opened.
trait SealedRow {
    type Opened;
    fn sealed(&self) -> &str;
    fn opened(self, secret: Secret<String>) -> Self::Opened;
}

impl SealedRow for StoreRow {
    type Opened = StoreCredential;
    fn sealed(&self) -> &str {
        &self.token_sealed
    }
    fn opened(self, token: Secret<String>) -> StoreCredential {
        StoreCredential {
            merchant: self.merchant,
            store_no: self.store_no,
            default_currency: self.default_currency,
            token,
        }
    }
}

impl SealedRow for AppRow {
    type Opened = AppCredential;
    fn sealed(&self) -> &str {
        &self.secret_sealed
    }
    fn opened(self, secret: Secret<String>) -> AppCredential {
        AppCredential {
            merchant: self.merchant,
            app_id: self.app_id,
            secret,
        }
    }
}

impl SealedRow for TerminalRow {
    type Opened = TerminalCredential;
    fn sealed(&self) -> &str {
        &self.secret_sealed
    }
    fn opened(self, secret: Secret<String>) -> TerminalCredential {
        TerminalCredential {
            merchant: self.merchant,
            tid: self.tid,
            secret,
        }
    }
}
