//! The lifecycle service: the use cases of a transaction's life, one file a flow.
//!
//! Each use case that moves money follows the same shape, so that no money is ever in flight
//! without a durable record of it:
//! 1. one atomic mutation records the intent (payment submitted, refund reserved, cancel begun);
//! 2. the channel (or the POS terminal) is asked;
//! 3. one atomic mutation records the answer. An unknown answer leaves the intent in place.
//!
//! The flows: [`pay`] (add, pay, query), [`refund`], [`cancel`], [`terminal`] (sales and
//! cancels carried out on a POS terminal, and the events its hub reports) and [`settle`], where
//! every answer of the wallet is recorded — the immediate one, a late callback, or what the
//! janitor learnt by asking. Cancel and terminal depend on settle, never on each other.

mod cancel;
mod pay;
mod refund;
mod settle;
mod terminal;

pub use crate::credentials::{
    AppCredential, CredentialError, Credentials, StoreCredential, TerminalCredential,
};
pub use crate::error::LifecycleError;

use crate::channel::Channel;
use crate::model::*;
use crate::replay::ReplayGuard;
use crate::snapshot::Snapshot;
use crate::store::*;
use crate::terminal::{HubError, TerminalCommand, TerminalHub, TerminalResult};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tillgate_domain::{
    CancelKind, ChannelOutcome, Clock, Currency, Key, Money, Payment, PaymentState,
};

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
    /// Whether refunds must carry the merchant's own refund reference, for merchants without a
    /// policy of their own (on in production).
    pub refund_reference_required: bool,
    /// How long the exact-replay guard remembers a signed request without a merchant key.
    pub replay_window: std::time::Duration,
    /// The address customers' browsers reach the gateway at: hosted payment pages are under it.
    pub public_url: String,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            credential_ttl: std::time::Duration::from_secs(60),
            default_timeout_minutes: 120,
            notify_first_delay: chrono::Duration::zero(),
            notify_urls: crate::notify::UrlPolicy::default(),
            refund_reference_required: false,
            replay_window: std::time::Duration::from_secs(600),
            public_url: "http://127.0.0.1:8080".to_owned(),
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
    /// The dialect the request came in.
    pub dialect: Dialect,
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

/// How a merchant names one of its refunds.
#[derive(Debug, Clone)]
pub enum RefundKey {
    RefundNo(String),
    Reference(String),
}

/// The result of a use case that may be an idempotent replay.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub value: T,
    /// True when this answer repeats an earlier request with the same key.
    pub replayed: bool,
}

impl<T> Outcome<T> {
    fn new(value: T) -> Outcome<T> {
        Outcome {
            value,
            replayed: false,
        }
    }

    fn replay(value: T) -> Outcome<T> {
        Outcome {
            value,
            replayed: true,
        }
    }
}

/// A payment with its refunds, for queries and refund answers.
#[derive(Debug, Clone)]
pub struct PaymentWithRefunds {
    pub payment: PaymentRecord,
    pub refunds: Vec<RefundRecord>,
}

/// The use cases of a transaction's life.
pub struct Lifecycle {
    store: Arc<dyn Store>,
    channel: Arc<dyn Channel>,
    /// Merchants whose money moves through a wallet of their own.
    merchant_channels: HashMap<String, Arc<dyn Channel>>,
    clock: Arc<dyn Clock>,
    credentials: Arc<Credentials>,
    config: LifecycleConfig,
    /// Signalled after a change enqueued a notification, so the dispatcher sends it at once.
    outbox_wake: Arc<tokio::sync::Notify>,
    /// The POS terminals, when the gateway has a hub.
    hub: Option<Arc<dyn TerminalHub>>,
    /// Remembers signed requests that carry no key of the merchant's.
    replays: ReplayGuard,
}

/// A digest of a request's parameters, for idempotent replays.
fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        channel: Arc<dyn Channel>,
        clock: Arc<dyn Clock>,
        credentials: Arc<Credentials>,
        config: LifecycleConfig,
    ) -> Lifecycle {
        let replays = ReplayGuard::new(store.clone(), clock.clone(), config.replay_window);
        Lifecycle {
            replays,
            store,
            channel,
            merchant_channels: HashMap::new(),
            clock,
            credentials,
            config,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            hub: None,
        }
    }

    /// Routes the money of `merchant_no` through its own wallet instead of the default one.
    pub fn with_merchant_channel(mut self, merchant_no: &str, channel: Arc<dyn Channel>) -> Self {
        self.merchant_channels
            .insert(merchant_no.to_owned(), channel);
        self
    }

    /// Carries terminal sales and cancels through `hub`. Without one, they answer
    /// [`LifecycleError::TerminalOffline`].
    pub fn with_hub(mut self, hub: Arc<dyn TerminalHub>) -> Self {
        self.hub = Some(hub);
        self
    }

    /// The wallet that moves a merchant's money.
    fn channel_for(&self, merchant_no: &str) -> &Arc<dyn Channel> {
        self.merchant_channels
            .get(merchant_no)
            .unwrap_or(&self.channel)
    }

    /// The address of the hosted page where the customer pays `transaction_no`.
    pub fn payment_page_url(&self, transaction_no: &str) -> String {
        crate::page::page_url(
            &self.config.public_url,
            &self.credentials.page_tokens(),
            transaction_no,
        )
    }

    /// The payment a hosted page's token names, whoever its merchant is; `None` for a token
    /// this gateway did not make (or a payment that does not exist).
    pub async fn payment_of_page(
        &self,
        token: &str,
    ) -> Result<Option<PaymentRecord>, LifecycleError> {
        let Some(transaction_no) = self.credentials.page_tokens().open(token) else {
            return Ok(None);
        };
        match self.payment_by_transaction_no(transaction_no).await {
            Ok(p) => Ok(Some(p)),
            Err(LifecycleError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The exact-replay guard the dialects put requests without a merchant key through.
    pub fn replays(&self) -> &ReplayGuard {
        &self.replays
    }

    /// Whether `merchant`'s refunds must carry its own refund reference.
    pub fn refund_reference_required(&self, merchant: &MerchantRecord) -> bool {
        merchant
            .refund_reference_required
            .unwrap_or(self.config.refund_reference_required)
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

    /// The hub, when terminal `tid` is connected to it (through any node).
    pub(crate) async fn online_hub(
        &self,
        tid: &str,
    ) -> Result<Arc<dyn TerminalHub>, LifecycleError> {
        let hub = self.hub.clone().ok_or(LifecycleError::TerminalOffline)?;
        if !hub.is_online(tid).await? {
            return Err(LifecycleError::TerminalOffline);
        }
        Ok(hub)
    }

    /// Delivers a written command and waits for it; a terminal found offline at this point
    /// never saw the command, so the command is declined.
    pub(crate) async fn run_on_terminal(
        &self,
        hub: &Arc<dyn TerminalHub>,
        tid: &str,
        command: &TerminalCommand,
        wait: std::time::Duration,
    ) -> Result<TerminalResult, LifecycleError> {
        match hub.execute(tid, command, wait).await {
            Ok(result) => Ok(result),
            Err(HubError::Offline) => {
                let declined = TerminalResult {
                    outcome: ChannelOutcome::Declined,
                    message: Some("the terminal went offline before the command reached it".into()),
                };
                self.apply_terminal_result(&command.id, declined.clone())
                    .await?;
                Ok(declined)
            }
            Err(HubError::Store(e)) => Err(e.into()),
        }
    }

    /// The merchant's payment named by `key`.
    async fn find(
        &self,
        merchant: &MerchantRecord,
        key: &PaymentKey,
    ) -> Result<PaymentRecord, LifecycleError> {
        let found = self
            .store
            .payment(merchant.id, key)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        crate::note::transaction(&found.transaction_no);
        Ok(found)
    }

    /// A payment by its row id, which a refund, cancel or command row names.
    async fn payment_of(&self, payment_id: i64) -> Result<PaymentRecord, LifecycleError> {
        self.store
            .payment_by_id(payment_id)
            .await?
            .ok_or_else(|| LifecycleError::corrupt("a row without its payment"))
    }

    /// A payment by transaction number, whoever its merchant is (wallet side and sandbox only).
    async fn payment_by_transaction_no(
        &self,
        transaction_no: &str,
    ) -> Result<PaymentRecord, LifecycleError> {
        let found = self
            .store
            .payment_by_transaction_no(transaction_no)
            .await?
            .ok_or(LifecycleError::NotFound)?;
        crate::note::transaction(&found.transaction_no);
        Ok(found)
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

/// Enqueues a notification of `snapshot` to `url` in the dialect of the payment.
fn enqueue(
    writes: &mut Writes,
    p: &PaymentRecord,
    url: Option<&str>,
    snapshot: Snapshot,
    first_delay: chrono::Duration,
) {
    if let (Some(url), Some(at)) = (url, writes.at) {
        writes.outbox.push(OutboxWrite {
            dialect: p.dialect,
            topic: snapshot.topic,
            target_url: url.to_owned(),
            snapshot: snapshot.to_json(),
            first_attempt_at: at + first_delay,
        });
    }
}
