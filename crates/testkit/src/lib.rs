//! Test harnesses shared by the crates' tests (dev-only): a fresh SQLite (or PostgreSQL) store
//! with the lifecycle service on a manual clock, merchants with their credentials, a wallet
//! whose answers a test chooses, and a terminal hub whose terminals approve, decline, stay
//! silent or are offline, and readers of what the store holds. Everything is real but the
//! wallet and the terminals: no store is mocked.

mod channel;
pub mod fuzz;
mod hub;
pub mod pg;
mod requests;
pub mod sim;
mod stored;

pub use channel::{OpKind, ScriptedWallet};
pub use hub::{Mode, ScriptedHub};
pub use requests::{add_request, key, pay_request, refund_request, usd};

use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tillgate_core::service::{Lifecycle, LifecycleConfig};
use tillgate_core::terminal::{TerminalEvent, TerminalHub};
use tillgate_core::{Channel, Credentials, MerchantRecord, Secret, SecretBox, Store};
use tillgate_domain::{Clock, ManualClock, MerchantZone};
use tillgate_store_postgres::PgStore;
use tillgate_store_sqlite::SqliteStore;
use tokio::sync::mpsc;

/// 10:00 UTC on a November day (11:00 in Amsterdam), so the same business day lasts a while
/// in the zones the tests use.
pub fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000 - 1_795_000_000 % 86_400 + 36_000, 0).unwrap_or_default()
}

/// A fresh SQLite database file under the temporary directory, removed when dropped.
pub struct TempDb {
    pub path: PathBuf,
}

impl TempDb {
    pub fn new(name: &str) -> TempDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tillgate-{name}-{}-{}.db",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        TempDb { path }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Runs each story, an `async fn(Backend)`, on SQLite and on PostgreSQL, as tests named
/// `sqlite::story` and `postgres::story`. A crate using it has a build script that sets the
/// `tillgate_no_postgres` cfg when `TILLGATE_TEST_POSTGRES_URL` is unset outside CI, so that
/// its PostgreSQL stories are listed as ignored instead of passing without running.
#[macro_export]
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[cfg_attr(tillgate_no_postgres, ignore = "TILLGATE_TEST_POSTGRES_URL is not set")]
                async fn $story() {
                    super::$story($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Which store backend a kit runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// A fresh database on the server of `TILLGATE_TEST_POSTGRES_URL`.
    Postgres,
}

/// The database under a kit, removed when the kit goes.
pub enum KitDb {
    Sqlite(TempDb),
    Postgres(pg::PgDatabase),
}

/// The lifecycle on a fresh store.
pub struct Kit {
    pub app: Arc<Lifecycle>,
    pub store: Arc<dyn Store>,
    pub credentials: Arc<Credentials>,
    pub clock: Arc<ManualClock>,
    /// The hub, when the kit was built with one.
    pub hub: Option<Arc<ScriptedHub>>,
    pub db: KitDb,
}

/// How a [`Kit`] is built.
pub struct KitBuilder {
    name: String,
    channel: Arc<dyn Channel>,
    merchant_channels: Vec<(String, Arc<dyn Channel>)>,
    config: LifecycleConfig,
    start: DateTime<Utc>,
    hub: bool,
    backend: Backend,
}

/// What a terminal hub of a test is made of: the kit's store, credentials and clock, and the
/// sender of the events the kit's lifecycle applies.
pub struct HubParts {
    pub store: Arc<dyn Store>,
    pub credentials: Arc<Credentials>,
    pub clock: Arc<dyn Clock>,
    pub events: mpsc::Sender<TerminalEvent>,
}

impl Kit {
    /// A kit named `name` (the database file's name) with the sandbox wallet, no hub.
    pub fn builder(name: &str) -> KitBuilder {
        KitBuilder {
            name: name.to_owned(),
            channel: Arc::new(tillgate_channels::SandboxWallet),
            merchant_channels: Vec::new(),
            config: LifecycleConfig::default(),
            start: start(),
            hub: false,
            backend: Backend::Sqlite,
        }
    }

    /// Creates a sandbox merchant (or finds it) in `zone`.
    pub async fn merchant(&self, merchant_no: &str, zone: MerchantZone) -> MerchantRecord {
        self.credentials
            .create_merchant(merchant_no, zone, true)
            .await
            .unwrap_or_else(|e| panic!("cannot create merchant {merchant_no}: {e}"))
    }

    /// Adds a Pockyt store with its token.
    pub async fn store_of(&self, merchant: &MerchantRecord, store_no: &str, token: &str) {
        self.credentials
            .add_store(merchant, store_no, &Secret::new(token.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("cannot add store {store_no}: {e}"));
    }

    /// Adds a unified-API app with its secret.
    pub async fn app_of(&self, merchant: &MerchantRecord, app_id: &str, secret: &str) {
        self.credentials
            .add_app(merchant, app_id, &Secret::new(secret.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("cannot add app {app_id}: {e}"));
    }

    /// Adds a POS terminal with its secret.
    pub async fn terminal_of(&self, merchant: &MerchantRecord, tid: &str, secret: &str) {
        self.credentials
            .add_terminal(merchant, tid, &Secret::new(secret.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("cannot add terminal {tid}: {e}"));
    }

    /// The kit's scripted hub (it must have been built `with_hub`).
    pub fn hub(&self) -> &Arc<ScriptedHub> {
        self.hub.as_ref().expect("the kit was built without a hub")
    }

    /// The URL of the kit's database, for tests that open a connection of their own to it.
    pub fn database_url(&self) -> String {
        match &self.db {
            KitDb::Sqlite(db) => db.url(),
            KitDb::Postgres(db) => db.url.clone(),
        }
    }
}

/// A fresh database of `backend` and its store.
async fn open(name: &str, backend: Backend) -> (KitDb, Arc<dyn Store>) {
    match backend {
        Backend::Sqlite => {
            let db = TempDb::new(name);
            let store = SqliteStore::open(&db.url())
                .await
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.url()));
            (KitDb::Sqlite(db), Arc::new(store))
        }
        Backend::Postgres => {
            let admin =
                pg::postgres_admin_url().expect("PostgreSQL kits need TILLGATE_TEST_POSTGRES_URL");
            let db = pg::PgDatabase::create(&admin).await;
            let store = PgStore::open(&db.url, 8)
                .await
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.name));
            (KitDb::Postgres(db), Arc::new(store))
        }
    }
}

impl KitBuilder {
    /// Moves money through `channel` instead of the sandbox wallet.
    pub fn channel(mut self, channel: Arc<dyn Channel>) -> KitBuilder {
        self.channel = channel;
        self
    }

    /// Moves the money of `merchant_no` through `channel`, the others' through the default.
    pub fn merchant_channel(mut self, merchant_no: &str, channel: Arc<dyn Channel>) -> KitBuilder {
        self.merchant_channels
            .push((merchant_no.to_owned(), channel));
        self
    }

    pub fn config(mut self, config: LifecycleConfig) -> KitBuilder {
        self.config = config;
        self
    }

    /// Starts the manual clock at `at` instead of [`start`].
    pub fn start_at(mut self, at: DateTime<Utc>) -> KitBuilder {
        self.start = at;
        self
    }

    /// Runs on `backend` instead of SQLite. PostgreSQL needs `TILLGATE_TEST_POSTGRES_URL`.
    pub fn on(mut self, backend: Backend) -> KitBuilder {
        self.backend = backend;
        self
    }

    /// Carries terminal sales and cancels through a [`ScriptedHub`].
    pub fn with_hub(mut self) -> KitBuilder {
        self.hub = true;
        self
    }

    pub async fn build(self) -> Kit {
        let scripted = self.hub;
        let (kit, hub) = self
            .build_on(|parts| scripted.then(|| Arc::new(ScriptedHub::new(parts.events))))
            .await;
        Kit { hub, ..kit }
    }

    /// Builds the kit with the hub `make` returns, made of the kit's parts (the real hub, say),
    /// and answers the hub too. The kit's lifecycle applies the events the hub sends.
    pub async fn build_with_hub<H: TerminalHub>(
        self,
        make: impl FnOnce(HubParts) -> Arc<H>,
    ) -> (Kit, Arc<H>) {
        let (kit, hub) = self.build_on(|parts| Some(make(parts))).await;
        (kit, hub.expect("the hub was made"))
    }

    async fn build_on<H: TerminalHub>(
        self,
        make: impl FnOnce(HubParts) -> Option<Arc<H>>,
    ) -> (Kit, Option<Arc<H>>) {
        let (db, store) = open(&self.name, self.backend).await;
        let clock = Arc::new(ManualClock::new(self.start));
        let secrets = SecretBox::from_hex(SecretBox::generate_key_hex().expose())
            .unwrap_or_else(|e| panic!("a generated key does not open: {e}"));
        let credentials = Arc::new(Credentials::new(
            store.clone(),
            secrets,
            clock.clone(),
            self.config.credential_ttl,
        ));
        let mut lifecycle = Lifecycle::new(
            store.clone(),
            self.channel,
            clock.clone(),
            credentials.clone(),
            self.config,
        );
        for (merchant_no, channel) in self.merchant_channels {
            lifecycle = lifecycle.with_merchant_channel(&merchant_no, channel);
        }
        let (events, reports) = mpsc::channel(64);
        let hub = make(HubParts {
            store: store.clone(),
            credentials: credentials.clone(),
            clock: clock.clone(),
            events,
        });
        if let Some(hub) = &hub {
            lifecycle = lifecycle.with_hub(hub.clone() as Arc<dyn TerminalHub>);
        }
        let app = Arc::new(lifecycle);
        tokio::spawn(app.clone().apply_terminal_events(reports));
        let kit = Kit {
            app,
            store,
            credentials,
            clock,
            hub: None,
            db,
        };
        (kit, hub)
    }
}
