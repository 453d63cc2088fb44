//! The lifecycle service: add, pay, cancel, refund, query, and the wallet's late answers.
//!
//! Each use case that moves money follows the same shape, so that no money is ever in flight
//! without a durable record of it:
//! 1. one atomic mutation records the intent (payment submitted, refund reserved, cancel begun);
//! 2. the channel is asked;
//! 3. one atomic mutation records the answer. An unknown answer leaves the intent in place.

use crate::channel::{Channel, ChannelOp, ChannelReply};
use crate::ids::new_number;
use crate::model::*;
use crate::notify::Facts;
use crate::secret::{Secret, SecretBox, SecretError};
use crate::store::*;
use crate::terminal::{
    CommandKind, CommandRecord, NewCommand, TerminalCommand, TerminalHub, TerminalResult,
};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tillgate_domain::{
    BusinessDayRule, CancelIntent, CancelKind, CancelRejected, CancelState, ChannelOutcome, Clock,
    Currency, Key, MerchantZone, Money, Payment, PaymentState, RefundState,
};

/// Why a use case did not happen. Every variant leaves the stored state unchanged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such transaction for this merchant")]
    NotFound,
    #[error("this key was already used with other parameters")]
    KeyReused,
    #[error("a request with this key is still in progress; retry later")]
    InProgress,
    #[error("refused by the payment rules: {0:?}")]
    Rejected(Rejection),
    #[error("the terminal is not connected")]
    TerminalOffline,
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
    pub token: Secret<String>,
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// How long an opened credential is kept in memory before it is read again.
    pub credential_ttl: std::time::Duration,
    /// How long an added transaction waits for payment when the request does not say.
    pub default_timeout_minutes: i64,
    /// The delay of a notification's first attempt after its change.
    pub notify_first_delay: chrono::Duration,
    /// Which notification URLs merchants may give.
    pub notify_urls: crate::notify::UrlPolicy,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            credential_ttl: std::time::Duration::from_secs(60),
            default_timeout_minutes: 120,
            notify_first_delay: chrono::Duration::zero(),
            notify_urls: crate::notify::UrlPolicy::default(),
        }
    }
}

/// A request to add a transaction.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub store_no: String,
    pub reference: Key,
    pub amount: Money,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub notify_url: Option<String>,
    pub timeout_minutes: Option<i64>,
    /// The dialect the request came in ("pockyt", "unified", "yabandpay").
    pub dialect: &'static str,
    /// Dialect-owned facts to keep with the payment (JSON).
    pub extra: Option<String>,
}

/// A request to pay an added transaction.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub barcode: Option<String>,
    pub vendor: Option<String>,
}

/// A request to refund part or all of a payment.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub amount: Money,
    /// The settlement currency the merchant expects, when its dialect sends one.
    pub settle_currency: Option<Currency>,
    pub refund_reference: Option<Key>,
    /// Where the refund's notifications go.
    pub notify: NotifyTo,
    pub extra: Option<String>,
}

/// Where a refund's notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTo {
    Nowhere,
    Url(String),
    /// Wherever the payment's notifications go (Pockyt's single ipnUrl).
    PaymentUrl,
}

/// The result of a use case that may be an idempotent replay.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub value: T,
    /// True when this answer repeats an earlier request with the same key.
    pub replayed: bool,
}

/// A payment with its refunds, for queries and refund answers.
#[derive(Debug, Clone)]
pub struct PaymentWithRefunds {
    pub payment: PaymentRecord,
    pub refunds: Vec<RefundRecord>,
}

/// Opened credentials kept for a short while, so a signature check costs no database read and
/// no decryption; bounded in size.
struct Cache<K, V> {
    entries: RwLock<HashMap<K, (Instant, Arc<V>)>>,
}

impl<K: std::hash::Hash + Eq, V> Cache<K, V> {
    fn new() -> Cache<K, V> {
        Cache {
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, ttl: std::time::Duration) -> Option<Arc<V>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((at, v)) if at.elapsed() < ttl => Some(v.clone()),
            _ => None,
        }
    }

    fn put(&self, key: K, value: Arc<V>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 10_000 {
            // A bound on memory: credentials are cheap to read again.
            entries.clear();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// The use cases of a transaction's life.
pub struct Lifecycle {
    store: Arc<dyn Store>,
    channel: Arc<dyn Channel>,
    /// Merchants whose money moves through a wallet of their own.
    merchant_channels: HashMap<String, Arc<dyn Channel>>,
    clock: Arc<dyn Clock>,
    secrets: SecretBox,
    config: LifecycleConfig,
    credentials: Cache<(String, String), StoreCredential>,
    apps: Cache<String, AppCredential>,
    /// Signalled after a change enqueued a notification, so the dispatcher sends it at once.
    outbox_wake: Arc<tokio::sync::Notify>,
    terminals: Cache<String, TerminalCredential>,
    /// The terminal hub, set once at start (it needs the service to apply results, so it is
    /// built after it).
    hub: std::sync::OnceLock<Arc<dyn TerminalHub>>,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn store_context(merchant_no: &str, store_no: &str) -> String {
    format!("store:{merchant_no}/{store_no}")
}

fn app_context(app_id: &str) -> String {
    format!("app:{app_id}")
}

/// An answer for something already settled is not an error when resolving.
fn ignore_replay(e: LifecycleError) -> Result<(), LifecycleError> {
    match e {
        LifecycleError::Rejected(Rejection::Replay) => Ok(()),
        other => Err(other),
    }
}

fn terminal_context(tid: &str) -> String {
    format!("terminal:{tid}")
}

/// Enqueues a notification of `facts` to `url` in the dialect of the payment.
fn enqueue(
    writes: &mut Writes,
    p: &PaymentRecord,
    url: Option<&str>,
    facts: Facts,
    first_delay: chrono::Duration,
) {
    if let (Some(url), Some(at)) = (url, writes.at) {
        writes.outbox.push(OutboxWrite {
            dialect: p.dialect.clone(),
            topic: facts.topic.clone(),
            target_url: url.to_owned(),
            snapshot: facts.to_json(),
            first_attempt_at: at + first_delay,
        });
    }
}

/// An opened unified-API app credential.
#[derive(Debug)]
pub struct AppCredential {
    pub merchant: MerchantRecord,
    pub app_id: String,
    pub secret: Secret<String>,
}

/// Options of a cancel beyond the payment it names.
#[derive(Debug, Clone, Default)]
pub struct CancelOptions {
    /// Where the cancel's notification goes.
    pub notify_url: Option<String>,
    pub extra: Option<String>,
    /// Carry the cancel out on this POS terminal (shown live there) instead of silently through
    /// the channel, waiting at most `terminal_wait` for its result.
    pub terminal: Option<String>,
    pub terminal_wait: std::time::Duration,
}

/// An opened terminal credential (also the YabandPay user of its POS methods).
#[derive(Debug)]
pub struct TerminalCredential {
    pub merchant: MerchantRecord,
    pub tid: String,
    pub secret: Secret<String>,
}

/// How a merchant names one of its refunds.
#[derive(Debug, Clone)]
pub enum RefundKey {
    RefundNo(String),
    Reference(String),
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        channel: Arc<dyn Channel>,
        clock: Arc<dyn Clock>,
        secrets: SecretBox,
        config: LifecycleConfig,
    ) -> Lifecycle {
        Lifecycle {
            store,
            channel,
            merchant_channels: HashMap::new(),
            clock,
            secrets,
            config,
            credentials: Cache::new(),
            apps: Cache::new(),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            terminals: Cache::new(),
            hub: std::sync::OnceLock::new(),
        }
    }

    /// Routes the money of `merchant_no` through its own wallet instead of the default one.
    pub fn with_merchant_channel(mut self, merchant_no: &str, channel: Arc<dyn Channel>) -> Self {
        self.merchant_channels
            .insert(merchant_no.to_owned(), channel);
        self
    }

    /// The wallet that moves a merchant's money.
    fn channel_for(&self, merchant_no: &str) -> &Arc<dyn Channel> {
        self.merchant_channels
            .get(merchant_no)
            .unwrap_or(&self.channel)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Signalled whenever a change may have enqueued a notification.
    pub fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_wake.clone()
    }

    /// Checks a notification URL a merchant gave against the gateway's policy.
    pub fn check_notify_url(&self, url: &str) -> Result<(), String> {
        self.config.notify_urls.check(url)
    }

    // ----- merchants and credentials -------------------------------------------------------

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
                created_at: self.now(),
            })
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
        Fut: std::future::Future<Output = Result<StoreAdded, StoreError>>,
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
        if let Some(cred) = self.credentials.get(&key, self.config.credential_ttl) {
            return Ok(cred);
        }
        let row = self
            .store
            .store_row(merchant_no, store_no)
            .await?
            .ok_or(CredentialError::Unknown)?;
        let token = self
            .secrets
            .open(&row.token_sealed, &store_context(merchant_no, store_no))?;
        let cred = Arc::new(StoreCredential {
            merchant: row.merchant,
            store_no: row.store_no,
            token,
        });
        self.credentials.put(key, cred.clone());
        Ok(cred)
    }

    /// Adds a unified-API app to a merchant; returns the secret in force and whether the app is
    /// new. An existing app keeps its secret.
    pub async fn add_app(
        &self,
        merchant: &MerchantRecord,
        app_id: &str,
        secret: &Secret<String>,
    ) -> Result<(Secret<String>, bool), CredentialError> {
        let now = self.now();
        self.add_sealed(&app_context(app_id), secret, |sealed| async move {
            self.store.add_app(merchant.id, app_id, &sealed, now).await
        })
        .await
    }

    /// The opened credential of a unified-API app, cached for a short while.
    pub async fn app_credential(
        &self,
        app_id: &str,
    ) -> Result<Arc<AppCredential>, CredentialError> {
        if let Some(cred) = self
            .apps
            .get(&app_id.to_owned(), self.config.credential_ttl)
        {
            return Ok(cred);
        }
        let row = self
            .store
            .app_row(app_id)
            .await?
            .ok_or(CredentialError::Unknown)?;
        let secret = self
            .secrets
            .open(&row.secret_sealed, &app_context(app_id))?;
        let cred = Arc::new(AppCredential {
            merchant: row.merchant,
            app_id: row.app_id,
            secret,
        });
        self.apps.put(app_id.to_owned(), cred.clone());
        Ok(cred)
    }

    /// Adds a POS terminal to a merchant; returns the secret in force and whether it is new.
    pub async fn add_terminal(
        &self,
        merchant: &MerchantRecord,
        tid: &str,
        secret: &Secret<String>,
    ) -> Result<(Secret<String>, bool), CredentialError> {
        let now = self.now();
        self.add_sealed(&terminal_context(tid), secret, |sealed| async move {
            self.store
                .add_terminal(merchant.id, tid, &sealed, now)
                .await
        })
        .await
    }

    /// The opened credential of a terminal, cached for a short while.
    pub async fn terminal_credential(
        &self,
        tid: &str,
    ) -> Result<Arc<TerminalCredential>, CredentialError> {
        if let Some(cred) = self
            .terminals
            .get(&tid.to_owned(), self.config.credential_ttl)
        {
            return Ok(cred);
        }
        let row = self
            .store
            .terminal_row(tid)
            .await?
            .ok_or(CredentialError::Unknown)?;
        let secret = self
            .secrets
            .open(&row.secret_sealed, &terminal_context(tid))?;
        let cred = Arc::new(TerminalCredential {
            merchant: row.merchant,
            tid: row.tid,
            secret,
        });
        self.terminals.put(tid.to_owned(), cred.clone());
        Ok(cred)
    }

    /// Claims a merchant key that must stay unique forever within `scope` (YabandPay's
    /// request_id per terminal); false when it was used before.
    pub async fn claim_request_key(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        self.store.claim_request_key(scope, key, self.now()).await
    }

    /// Sets the terminal hub; once, at start.
    pub fn set_hub(&self, hub: Arc<dyn TerminalHub>) {
        let _ = self.hub.set(hub);
    }

    fn hub(&self) -> Result<&Arc<dyn TerminalHub>, LifecycleError> {
        self.hub.get().ok_or(LifecycleError::TerminalOffline)
    }

    /// A sale on a POS terminal: the transaction is added (the merchant's reference replays),
    /// the terminal takes the customer's payment, and its result is applied. Answers once the
    /// terminal finished, or after `wait` with the payment still pending (its result is
    /// applied when it comes).
    pub async fn terminal_sale(
        &self,
        merchant: &MerchantRecord,
        tid: &str,
        req: AddRequest,
        wait: std::time::Duration,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let hub = self.hub()?.clone();
        let added = self.add(merchant, req).await?;
        if added.replayed && added.value.payment.state() != PaymentState::Created {
            return Ok(added);
        }
        if !hub.is_online(tid).await? {
            return Err(LifecycleError::TerminalOffline);
        }
        let now = self.now();
        let p = &added.value;
        let command = TerminalCommand {
            id: new_number(now),
            kind: CommandKind::Sale,
            transaction_no: p.transaction_no.clone(),
            amount_minor: p.payment.amount().minor(),
            currency: p.payment.amount().currency().code().to_owned(),
            description: p.description.clone(),
        };
        let tid_owned = tid.to_owned();
        let sent = command.clone();
        let submitted = self
            .store
            .mutate_from(
                p,
                Box::new(move |p| {
                    p.payment.submit().map_err(Rejection::Pay)?;
                    p.pay_fingerprint = Some(format!("terminal:{tid_owned}"));
                    p.vendor = Some("terminal".into());
                    let mut w = Writes::at(now).event("terminal.sale.sent", tid_owned.clone());
                    w.command = Some(NewCommand {
                        command: sent.clone(),
                        tid: tid_owned.clone(),
                    });
                    Ok(w)
                }),
            )
            .await?;
        let payment = match submitted {
            Mutated::Done { payment, .. } => payment,
            Mutated::Rejected(
                Rejection::Pay(tillgate_domain::PayRejected::AlreadySubmitted),
                p,
            ) => {
                return Err(
                    if p.pay_fingerprint.as_deref() == Some(&format!("terminal:{tid}")) {
                        LifecycleError::InProgress
                    } else {
                        LifecycleError::Rejected(Rejection::Pay(
                            tillgate_domain::PayRejected::AlreadySubmitted,
                        ))
                    },
                )
            }
            Mutated::Rejected(r, _) => return Err(LifecycleError::Rejected(r)),
        };
        self.run_on_terminal(&hub, tid, &command, wait).await?;
        let value = self
            .store
            .payment_by_id(payment.id)
            .await?
            .unwrap_or(payment);
        Ok(Outcome {
            value,
            replayed: false,
        })
    }

    /// Delivers a written command and waits for it; a terminal found offline at this point
    /// never saw the command, so the command is declined.
    async fn run_on_terminal(
        &self,
        hub: &Arc<dyn TerminalHub>,
        tid: &str,
        command: &TerminalCommand,
        wait: std::time::Duration,
    ) -> Result<TerminalResult, LifecycleError> {
        match hub.execute(tid, command, wait).await {
            Ok(result) => Ok(result),
            Err(crate::terminal::HubError::Offline) => {
                let declined = TerminalResult {
                    outcome: ChannelOutcome::Declined,
                    message: Some("the terminal went offline before the command reached it".into()),
                };
                self.apply_terminal_result(&command.id, declined.clone())
                    .await?;
                Ok(declined)
            }
            Err(crate::terminal::HubError::Store(e)) => Err(e.into()),
        }
    }

    /// Applies a terminal's final result to the payment its command belongs to. Idempotent: a
    /// result for a command already done changes nothing.
    pub async fn apply_terminal_result(
        &self,
        command_id: &str,
        result: TerminalResult,
    ) -> Result<(), LifecycleError> {
        let Some(record): Option<CommandRecord> = self.store.command(command_id).await? else {
            return Err(LifecycleError::NotFound);
        };
        if record.state == crate::terminal::CommandState::Done
            || result.outcome == ChannelOutcome::Unknown
        {
            return Ok(());
        }
        let reply = ChannelReply {
            outcome: result.outcome,
            channel_ref: None,
            message: result.message.clone(),
        };
        let payment = self
            .store
            .payment_by_id(record.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("command without its payment".into()))?;
        match record.command.kind {
            CommandKind::Sale => {
                self.settle_payment(payment, reply).await?;
            }
            CommandKind::Reversal | CommandKind::Cancel => {
                let cancel_id = record.cancel_id.ok_or_else(|| {
                    StoreError::Corrupt("cancel command without its cancel".into())
                })?;
                let cancel = self
                    .store
                    .cancels_of(payment.id)
                    .await?
                    .into_iter()
                    .find(|c| c.id == cancel_id)
                    .ok_or_else(|| {
                        StoreError::Corrupt("cancel command without its cancel".into())
                    })?;
                self.settle_cancel(payment, cancel, reply).await?;
            }
        }
        let outcome = if result.outcome == ChannelOutcome::Approved {
            "approved"
        } else {
            "declined"
        };
        self.store
            .finish_command(command_id, outcome, result.message.as_deref(), self.now())
            .await?;
        Ok(())
    }

    /// Records a terminal's progress on a command in its payment's timeline.
    pub async fn terminal_progress(
        &self,
        record: &CommandRecord,
        stage: &str,
    ) -> Result<(), StoreError> {
        self.store
            .append_event(
                record.payment_id,
                self.now(),
                "terminal.progress",
                &format!("{} {stage}", record.command.kind.as_str()),
            )
            .await
    }

    /// Sets (or clears) a merchant's own notification schedule.
    pub async fn set_notify_schedule(
        &self,
        merchant: &MerchantRecord,
        schedule: Option<&crate::notify::Schedule>,
    ) -> Result<(), StoreError> {
        let text = schedule.map(crate::notify::Schedule::to_text);
        self.store
            .set_notify_schedule(merchant.id, text.as_deref())
            .await
    }

    // ----- the transaction's life --------------------------------------------------------

    async fn find(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
    ) -> Result<PaymentRecord, LifecycleError> {
        self.store
            .payment(merchant.id, key)
            .await?
            .ok_or(LifecycleError::NotFound)
    }

    /// Adds a transaction. The merchant's reference is the idempotency key: the same reference
    /// with the same parameters replays the first answer, with other parameters it is refused.
    pub async fn add(
        &self,
        merchant: &MerchantRecord,
        req: AddRequest,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let timeout = req
            .timeout_minutes
            .unwrap_or(self.config.default_timeout_minutes);
        let fingerprint = digest(&[
            &req.store_no,
            &req.amount.minor().to_string(),
            req.amount.currency().code(),
            req.settle_currency.code(),
            req.description.as_deref().unwrap_or(""),
            req.notify_url.as_deref().unwrap_or(""),
            &timeout.to_string(),
            req.dialect,
            req.extra.as_deref().unwrap_or(""),
        ]);
        let now = self.now();
        for _ in 0..3 {
            let new = NewPayment {
                transaction_no: new_number(now),
                merchant_id: merchant.id,
                merchant_no: merchant.merchant_no.clone(),
                store_no: req.store_no.clone(),
                reference: req.reference.as_str().to_owned(),
                amount: req.amount,
                settle_currency: req.settle_currency,
                description: req.description.clone(),
                notify_url: req.notify_url.clone(),
                dialect: req.dialect.to_owned(),
                extra: req.extra.clone(),
                fingerprint: fingerprint.clone(),
                created_at: now,
                expires_at: now + Duration::minutes(timeout),
            };
            match self.store.insert_payment(new).await {
                Ok(Inserted::Inserted(p)) => {
                    return Ok(Outcome {
                        value: p,
                        replayed: false,
                    })
                }
                Ok(Inserted::Existing(p)) if p.fingerprint == fingerprint => {
                    return Ok(Outcome {
                        value: p,
                        replayed: true,
                    })
                }
                Ok(Inserted::Existing(_)) => return Err(LifecycleError::KeyReused),
                // A generated number clashed: draw another.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict("transaction_no").into())
    }

    /// Submits a transaction to the wallet and records its answer. Paying again with the same
    /// barcode replays the current state; another barcode on a submitted payment is refused.
    pub async fn pay(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: PayRequest,
    ) -> Result<Outcome<PaymentRecord>, LifecycleError> {
        let found = self.find(merchant, key).await?;
        let fingerprint = digest(&[
            req.barcode.as_deref().unwrap_or(""),
            req.vendor.as_deref().unwrap_or(""),
        ]);
        let now = self.now();
        let fp = fingerprint.clone();
        let vendor = req.vendor.clone();
        let submitted = self
            .store
            .mutate_from(
                &found,
                Box::new(move |p| {
                    if p.payment.state() != PaymentState::Created
                        && p.pay_fingerprint.as_deref() == Some(fp.as_str())
                    {
                        return Err(Rejection::Replay);
                    }
                    if p.payment.state() == PaymentState::Created && now > p.expires_at {
                        p.payment.expire();
                        return Ok(Writes::at(now).event("payment.expired", String::new()));
                    }
                    p.payment.submit().map_err(Rejection::Pay)?;
                    p.pay_fingerprint = Some(fp.clone());
                    p.vendor = vendor.clone();
                    Ok(Writes::at(now).event("payment.submitted", String::new()))
                }),
            )
            .await?;
        let payment = match submitted {
            Mutated::Done { payment, .. } => payment,
            Mutated::Rejected(Rejection::Replay, p) => {
                return Ok(Outcome {
                    value: p,
                    replayed: true,
                })
            }
            Mutated::Rejected(r, _) => return Err(LifecycleError::Rejected(r)),
        };
        if payment.payment.state() == PaymentState::Closed {
            return Err(LifecycleError::Rejected(Rejection::Pay(
                tillgate_domain::PayRejected::Closed,
            )));
        }
        let reply = self
            .channel_for(&payment.merchant_no)
            .execute(ChannelOp::Pay {
                transaction_no: payment.transaction_no.clone(),
                amount: payment.payment.amount(),
                barcode: req.barcode,
                vendor: req.vendor,
            })
            .await;
        let value = self.settle_payment(payment, reply).await?;
        Ok(Outcome {
            value,
            replayed: false,
        })
    }

    /// Records the wallet's answer to a submitted payment; an unknown answer changes nothing.
    async fn settle_payment(
        &self,
        payment: PaymentRecord,
        reply: ChannelReply,
    ) -> Result<PaymentRecord, LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok(payment);
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new(move |p| {
                    if !p.payment.settle_submission(reply.outcome, now) {
                        return Err(Rejection::Replay);
                    }
                    let kind = match reply.outcome {
                        ChannelOutcome::Approved => "payment.paid",
                        _ => "payment.declined",
                    };
                    let mut w =
                        Writes::at(now).event(kind, reply.message.clone().unwrap_or_default());
                    // Merchants are told of payments that succeeded (the others they learn
                    // from the answer to their own request).
                    if reply.outcome == ChannelOutcome::Approved {
                        let url = p.notify_url.clone();
                        enqueue(
                            &mut w,
                            p,
                            url.as_deref(),
                            Facts::of("payment.paid", p, now),
                            first_delay,
                        );
                    }
                    Ok(w)
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        Ok(match settled {
            Mutated::Done { payment, .. } => payment,
            Mutated::Rejected(_, p) => p,
        })
    }

    /// The wallet's late answer to a pending payment (the sandbox control endpoint plays it).
    pub async fn wallet_settles_payment(
        &self,
        transaction_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<PaymentRecord, LifecycleError> {
        let payment = self
            .store
            .payment_by_transaction_no(transaction_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        if payment.payment.state() != PaymentState::Pending {
            return Err(LifecycleError::Rejected(Rejection::Replay));
        }
        self.settle_payment(payment, ChannelReply::new(outcome))
            .await
    }

    /// Moves a payment's times `by` into the past, as if it had been created and paid earlier
    /// (sandbox only: lets a developer try next-day rules such as the same-day cancel).
    pub async fn sandbox_age_payment(
        &self,
        transaction_no: &str,
        by: Duration,
    ) -> Result<PaymentRecord, LifecycleError> {
        let found = self
            .store
            .payment_by_transaction_no(transaction_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let now = self.now();
        let aged = self
            .store
            .mutate_from(
                &found,
                Box::new(move |p| {
                    let q = &p.payment;
                    let paid_at = q.paid_at().map(|t| t - by);
                    p.payment = Payment::restore(
                        q.amount(),
                        q.state(),
                        q.refunded().minor(),
                        q.reserved().minor(),
                        q.cancel_in_flight(),
                        paid_at,
                    )
                    .ok_or(Rejection::Replay)?;
                    p.created_at -= by;
                    Ok(Writes::at(now).event("sandbox.aged", format!("{}s", by.num_seconds())))
                }),
            )
            .await?;
        match aged {
            Mutated::Done { payment, .. } => Ok(payment),
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// Cancels a transaction: voids it when unpaid (or closes it, for `CancelIntent::Close`),
    /// reverses it in full when paid within `rule`'s business day. Asking again for a cancel
    /// that succeeded, or that is still in progress, answers with that cancel order.
    pub async fn cancel(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        rule: BusinessDayRule,
        intent: CancelIntent,
        options: CancelOptions,
    ) -> Result<Outcome<(PaymentRecord, CancelRecord)>, LifecycleError> {
        let found = self.find(merchant, key).await?;
        let options_wait = options.terminal_wait;
        let hub = match &options.terminal {
            Some(tid) => {
                let hub = self.hub()?.clone();
                if !hub.is_online(tid).await? {
                    return Err(LifecycleError::TerminalOffline);
                }
                Some((hub, tid.clone()))
            }
            None => None,
        };
        let now = self.now();
        let cancel_no = new_number(now);
        let command_id = new_number(now);
        let begun = self
            .store
            .mutate_from(
                &found,
                Box::new({
                    let command_id = command_id.clone();
                    move |p| {
                        let kind = p
                            .payment
                            .begin_cancel(now, &rule, intent)
                            .map_err(Rejection::Cancel)?;
                        let mut w =
                            Writes::at(now).event("cancel.requested", kind.as_str().to_owned());
                        w.cancel = Some(CancelWrite::Insert(NewCancel {
                            cancel_no: cancel_no.clone(),
                            kind,
                            notify_url: options.notify_url.clone(),
                            extra: options.extra.clone(),
                        }));
                        if let Some(tid) = &options.terminal {
                            w.command = Some(NewCommand {
                                command: TerminalCommand {
                                    id: command_id.clone(),
                                    kind: if kind == CancelKind::Reverse {
                                        CommandKind::Reversal
                                    } else {
                                        CommandKind::Cancel
                                    },
                                    transaction_no: p.transaction_no.clone(),
                                    amount_minor: p.payment.amount().minor(),
                                    currency: p.payment.amount().currency().code().to_owned(),
                                    description: p.description.clone(),
                                },
                                tid: tid.clone(),
                            });
                        }
                        Ok(w)
                    }
                }),
            )
            .await?;
        let (payment, cancel) = match begun {
            Mutated::Done {
                payment,
                cancel: Some(cancel),
                ..
            } => (payment, cancel),
            Mutated::Done { .. } => {
                return Err(StoreError::Corrupt("cancel row not returned".into()).into())
            }
            Mutated::Rejected(Rejection::Cancel(rejected), p) => {
                // A retry of a cancel that succeeded, or one still waiting for the wallet,
                // answers with that cancel order.
                let wanted = match rejected {
                    CancelRejected::AlreadyCancelled | CancelRejected::Closed => {
                        Some(CancelState::Succeeded)
                    }
                    CancelRejected::InProgress => Some(CancelState::InProgress),
                    _ => None,
                };
                let earlier = match wanted {
                    Some(state) => self
                        .store
                        .cancels_of(p.id)
                        .await?
                        .into_iter()
                        .rev()
                        .find(|c| c.state == state),
                    None => None,
                };
                return match earlier {
                    Some(c) => Ok(Outcome {
                        value: (p, c),
                        replayed: true,
                    }),
                    None => Err(LifecycleError::Rejected(Rejection::Cancel(rejected))),
                };
            }
            Mutated::Rejected(r, _) => return Err(LifecycleError::Rejected(r)),
        };
        if let Some((hub, tid)) = hub {
            let command = self
                .store
                .command(&command_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the cancel's command was not written".into()))?
                .command;
            self.run_on_terminal(&hub, &tid, &command, options_wait)
                .await?;
            let cancel = self
                .store
                .cancel_by_no(Some(payment.merchant_id), &cancel.cancel_no)
                .await?
                .unwrap_or(cancel);
            let payment = self
                .store
                .payment_by_id(payment.id)
                .await?
                .unwrap_or(payment);
            return Ok(Outcome {
                value: (payment, cancel),
                replayed: false,
            });
        }
        let op = match cancel.kind {
            CancelKind::Void | CancelKind::Close => ChannelOp::Close {
                transaction_no: payment.transaction_no.clone(),
                amount: payment.payment.amount(),
            },
            CancelKind::Reverse => ChannelOp::Reverse {
                transaction_no: payment.transaction_no.clone(),
                amount: payment.payment.amount(),
            },
        };
        let reply = self.channel_for(&payment.merchant_no).execute(op).await;
        let value = self.settle_cancel(payment, cancel, reply).await?;
        Ok(Outcome {
            value,
            replayed: false,
        })
    }

    /// Records the wallet's answer to a cancel; an unknown answer leaves it in progress.
    async fn settle_cancel(
        &self,
        payment: PaymentRecord,
        cancel: CancelRecord,
        reply: ChannelReply,
    ) -> Result<(PaymentRecord, CancelRecord), LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok((payment, cancel));
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new({
                    let cancel = cancel.clone();
                    move |p| {
                        if !p.payment.settle_cancel(reply.outcome) {
                            return Err(Rejection::Replay);
                        }
                        let state = CancelState::after(reply.outcome);
                        let kind = if state == CancelState::Succeeded {
                            "cancel.succeeded"
                        } else {
                            "cancel.failed"
                        };
                        let mut w =
                            Writes::at(now).event(kind, reply.message.clone().unwrap_or_default());
                        w.cancel = Some(CancelWrite::SetState {
                            cancel_id: cancel.id,
                            state,
                        });
                        w.guard = Some(Guard::CancelInProgress(cancel.id));
                        // Seed 004: the merchant is told when the cancel succeeded.
                        if state == CancelState::Succeeded {
                            let mut done = cancel.clone();
                            done.state = state;
                            done.updated_at = now;
                            let facts = Facts::of("cancel.succeeded", p, now).with_cancel(&done);
                            enqueue(&mut w, p, cancel.notify_url.as_deref(), facts, first_delay);
                        }
                        Ok(w)
                    }
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        match settled {
            Mutated::Done {
                payment,
                cancel: Some(cancel),
                ..
            } => Ok((payment, cancel)),
            Mutated::Done { .. } => {
                Err(StoreError::Corrupt("cancel row not returned".into()).into())
            }
            Mutated::Rejected(Rejection::Replay, p) => {
                // Another answer for this cancel came first: report the cancel as it stands.
                let now_cancel = self
                    .store
                    .cancel_by_no(Some(p.merchant_id), &cancel.cancel_no)
                    .await?
                    .unwrap_or(cancel);
                Ok((p, now_cancel))
            }
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// The wallet's late answer to a cancel in progress (the sandbox control endpoint plays it).
    pub async fn wallet_settles_cancel(
        &self,
        cancel_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<(PaymentRecord, CancelRecord), LifecycleError> {
        let cancel = self
            .store
            .cancel_by_no(None, cancel_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        if cancel.state.is_final() {
            return Err(LifecycleError::Rejected(Rejection::Replay));
        }
        let payment = self
            .store
            .payment_by_id(cancel.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("cancel without its payment".into()))?;
        self.settle_cancel(payment, cancel, ChannelReply::new(outcome))
            .await
    }

    /// The wallet's late answer to a refund in progress (a callback of the HTTP channel).
    pub async fn wallet_settles_refund(
        &self,
        transaction_no: &str,
        refund_no: &str,
        outcome: ChannelOutcome,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let payment = self
            .store
            .payment_by_transaction_no(transaction_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let refund = self
            .store
            .refund_by_no(payment.merchant_id, refund_no)
            .await?
            .filter(|r| r.payment_id == payment.id)
            .ok_or(LifecycleError::NotFound)?;
        self.settle_refund(payment, refund, ChannelReply::new(outcome))
            .await
    }

    /// Operations still waiting for the wallet since before `before`.
    pub async fn unresolved(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Unresolved>, StoreError> {
        self.store.unresolved(before, limit).await
    }

    /// Asks the wallet what became of an operation whose answer was unknown, and records the
    /// answer. True when it is resolved now; false when the wallet still does not know.
    pub async fn resolve(&self, op: &Unresolved) -> Result<bool, LifecycleError> {
        let operation = match &op.kind {
            UnresolvedKind::Payment => crate::channel::QueryTarget::Payment,
            UnresolvedKind::Refund { refund_no } => crate::channel::QueryTarget::Refund {
                refund_no: refund_no.clone(),
            },
            UnresolvedKind::Cancel { cancel_no } => crate::channel::QueryTarget::Cancel {
                cancel_no: cancel_no.clone(),
            },
        };
        let reply = self
            .channel_for(&op.merchant_no)
            .execute(ChannelOp::Query {
                transaction_no: op.transaction_no.clone(),
                operation,
            })
            .await;
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok(false);
        }
        match &op.kind {
            UnresolvedKind::Payment => {
                self.wallet_settles_payment(&op.transaction_no, reply.outcome)
                    .await
                    .map(drop)
                    .or_else(ignore_replay)?;
            }
            UnresolvedKind::Refund { refund_no } => {
                self.wallet_settles_refund(&op.transaction_no, refund_no, reply.outcome)
                    .await?;
            }
            UnresolvedKind::Cancel { cancel_no } => {
                self.wallet_settles_cancel(cancel_no, reply.outcome)
                    .await
                    .map(drop)
                    .or_else(ignore_replay)?;
            }
        }
        Ok(true)
    }

    /// A cancel order of the merchant, with its payment.
    pub async fn cancel_by_no(
        &self,
        merchant: &MerchantRecord,
        cancel_no: &str,
    ) -> Result<(PaymentRecord, CancelRecord), LifecycleError> {
        let cancel = self
            .store
            .cancel_by_no(Some(merchant.id), cancel_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        let payment = self
            .store
            .payment_by_id(cancel.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("cancel without its payment".into()))?;
        Ok((payment, cancel))
    }

    /// A refund of the merchant, with its payment.
    pub async fn refund_by(
        &self,
        merchant: &MerchantRecord,
        key: &RefundKey,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        let refund = match key {
            RefundKey::RefundNo(n) => self.store.refund_by_no(merchant.id, n).await?,
            RefundKey::Reference(r) => self.store.refund_by_reference(merchant.id, r).await?,
        }
        .ok_or(LifecycleError::NotFound)?;
        let payment = self
            .store
            .payment_by_id(refund.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("refund without its payment".into()))?;
        Ok((payment, refund))
    }

    /// Refunds part or all of a paid transaction. The refundable amount is checked and
    /// reserved in one atomic step, so concurrent refunds never exceed what was paid. The
    /// merchant's refund reference, when given, is the idempotency key.
    pub async fn refund(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
        req: RefundRequest,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let found = self.find(merchant, key).await?;
        let mismatch = req.amount.currency() != found.payment.amount().currency()
            || req
                .settle_currency
                .is_some_and(|c| c != found.settle_currency);
        if mismatch {
            return Err(LifecycleError::Rejected(Rejection::Refund(
                tillgate_domain::RefundRejected::CurrencyMismatch,
            )));
        }
        let fingerprint = digest(&[
            &found.transaction_no,
            &req.amount.minor().to_string(),
            req.amount.currency().code(),
        ]);
        for _ in 0..2 {
            if let Some(reference) = &req.refund_reference {
                if let Some(existing) = self
                    .store
                    .refund_by_reference(merchant.id, reference.as_str())
                    .await?
                {
                    return self.replay_refund(existing, &fingerprint).await;
                }
            }
            let now = self.now();
            let new = NewRefund {
                refund_no: new_number(now),
                refund_reference: req.refund_reference.as_ref().map(|k| k.as_str().to_owned()),
                amount: req.amount,
                fingerprint: fingerprint.clone(),
                notify_url: match &req.notify {
                    NotifyTo::Nowhere => None,
                    NotifyTo::Url(url) => Some(url.clone()),
                    NotifyTo::PaymentUrl => found.notify_url.clone(),
                },
                extra: req.extra.clone(),
            };
            let reserved = self
                .store
                .mutate_from(
                    &found,
                    Box::new(move |p| {
                        p.payment
                            .reserve_refund(new.amount)
                            .map_err(Rejection::Refund)?;
                        let mut w = Writes::at(now)
                            .event("refund.requested", new.amount.minor().to_string());
                        w.refund = Some(RefundWrite::Insert(new.clone()));
                        Ok(w)
                    }),
                )
                .await;
            match reserved {
                Ok(Mutated::Done {
                    payment,
                    refund: Some(refund),
                    ..
                }) => return self.execute_refund(payment, refund).await,
                Ok(Mutated::Done { .. }) => {
                    return Err(StoreError::Corrupt("refund row not returned".into()).into())
                }
                Ok(Mutated::Rejected(r, _)) => return Err(LifecycleError::Rejected(r)),
                // A concurrent request with the same reference won the insert: answer as its
                // replay. A clash of generated numbers simply tries again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LifecycleError::InProgress)
    }

    async fn replay_refund(
        &self,
        existing: RefundRecord,
        fingerprint: &str,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        if existing.fingerprint != fingerprint {
            return Err(LifecycleError::KeyReused);
        }
        if !existing.state.is_final() {
            return Err(LifecycleError::InProgress);
        }
        let payment = self
            .store
            .payment_by_id(existing.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("refund without its payment".into()))?;
        Ok(Outcome {
            value: (payment, existing),
            replayed: true,
        })
    }

    async fn execute_refund(
        &self,
        payment: PaymentRecord,
        refund: RefundRecord,
    ) -> Result<Outcome<(PaymentRecord, RefundRecord)>, LifecycleError> {
        let reply = self
            .channel_for(&payment.merchant_no)
            .execute(ChannelOp::Refund {
                transaction_no: payment.transaction_no.clone(),
                refund_no: refund.refund_no.clone(),
                amount: refund.amount,
            })
            .await;
        let value = self.settle_refund(payment, refund, reply).await?;
        Ok(Outcome {
            value,
            replayed: false,
        })
    }

    /// Records the wallet's answer to a refund; an unknown answer leaves it in progress.
    async fn settle_refund(
        &self,
        payment: PaymentRecord,
        refund: RefundRecord,
        reply: ChannelReply,
    ) -> Result<(PaymentRecord, RefundRecord), LifecycleError> {
        if reply.outcome == ChannelOutcome::Unknown {
            return Ok((payment, refund));
        }
        let now = self.now();
        let first_delay = self.config.notify_first_delay;
        let settled = self
            .store
            .mutate_from(
                &payment,
                Box::new({
                    let refund = refund.clone();
                    move |p| {
                        if !p.payment.settle_refund(refund.amount, reply.outcome) {
                            return Err(Rejection::Replay);
                        }
                        let state = RefundState::after(reply.outcome);
                        let kind = if state == RefundState::Succeeded {
                            "refund.succeeded"
                        } else {
                            "refund.failed"
                        };
                        let mut w = Writes::at(now).event(kind, refund.amount.minor().to_string());
                        w.refund = Some(RefundWrite::SetState {
                            refund_id: refund.id,
                            state,
                        });
                        // A second answer for the same refund (a duplicate callback, the janitor
                        // and a callback at once) must not settle it twice.
                        w.guard = Some(Guard::RefundInProgress(refund.id));
                        let mut done = refund.clone();
                        done.state = state;
                        done.updated_at = now;
                        let facts = Facts::of(kind, p, now).with_refund(&done);
                        enqueue(&mut w, p, refund.notify_url.as_deref(), facts, first_delay);
                        Ok(w)
                    }
                }),
            )
            .await?;
        self.outbox_wake.notify_one();
        match settled {
            Mutated::Done {
                payment,
                refund: Some(refund),
                ..
            } => Ok((payment, refund)),
            Mutated::Done { .. } => {
                Err(StoreError::Corrupt("refund row not returned".into()).into())
            }
            // Another answer for this refund came first: report the refund as it stands.
            Mutated::Rejected(Rejection::Replay, p) => {
                let now_refund = self
                    .store
                    .refund_by_no(p.merchant_id, &refund.refund_no)
                    .await?
                    .unwrap_or(refund);
                Ok((p, now_refund))
            }
            Mutated::Rejected(r, _) => Err(LifecycleError::Rejected(r)),
        }
    }

    /// A payment with its refunds.
    pub async fn query(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
    ) -> Result<PaymentWithRefunds, LifecycleError> {
        let payment = self.find(merchant, key).await?;
        let refunds = self.store.refunds_of(payment.id).await?;
        Ok(PaymentWithRefunds { payment, refunds })
    }

    /// Restores a stored payment; used by store backends to check rows as they load them.
    pub fn restore_payment(
        amount: Money,
        state: PaymentState,
        refunded_minor: i64,
        reserved_minor: i64,
        cancel_in_flight: Option<CancelKind>,
        paid_at: Option<DateTime<Utc>>,
    ) -> Result<Payment, StoreError> {
        Payment::restore(
            amount,
            state,
            refunded_minor,
            reserved_minor,
            cancel_in_flight,
            paid_at,
        )
        .ok_or_else(|| StoreError::Corrupt("payment totals break an invariant".into()))
    }
}
