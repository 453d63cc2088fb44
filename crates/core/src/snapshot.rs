//! What a notification reports: a typed snapshot of the payment (and of the refund or cancel
//! that changed it) as it stood right after the change.
//!
//! The snapshot is serialized here, once, into the outbox row written in the change's
//! transaction; the dispatcher reads it back and hands it to the payment's dialect, which
//! renders it with the same view constructors it uses for its answers. A notification therefore
//! always tells the state it was written for, never a later one.

use crate::model::{CancelRecord, Dialect, PaymentRecord, RefundRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tillgate_domain::{
    CancelKind, CancelState, Currency, Money, Payment, PaymentState, RefundState,
};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    PaymentPaid,
    RefundSucceeded,
    RefundFailed,
    CancelSucceeded,
}

impl Topic {
    pub const ALL: [Topic; 4] = [
        Topic::PaymentPaid,
        Topic::RefundSucceeded,
        Topic::RefundFailed,
        Topic::CancelSucceeded,
    ];

    /// The name kept in the outbox and shown to operators; also the timeline's event kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::PaymentPaid => "payment.paid",
            Topic::RefundSucceeded => "refund.succeeded",
            Topic::RefundFailed => "refund.failed",
            Topic::CancelSucceeded => "cancel.succeeded",
        }
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment as a dialect renders it: everything but the gateway's bookkeeping (row ids,
/// idempotency digests, versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSnapshot {
    pub transaction_no: String,
    pub merchant_no: String,
    pub store_no: String,
    pub reference: String,
    /// Amount, state, refunded and reserved totals, time paid.
    pub payment: Payment,
    pub settle_currency: Currency,
    pub description: Option<String>,
    pub vendor: Option<String>,
    pub dialect: Dialect,
    /// The dialect-owned facts kept with the payment (JSON, opaque to the core).
    pub extra: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A refund as a dialect renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSnapshot {
    pub refund_no: String,
    pub refund_reference: Option<String>,
    pub amount: Money,
    pub state: RefundState,
    pub extra: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it last changed (when it succeeded, for a succeeded refund).
    pub updated_at: DateTime<Utc>,
}

/// A cancel as a dialect renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelSnapshot {
    pub cancel_no: String,
    pub kind: CancelKind,
    pub state: CancelState,
    pub extra: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it last changed (when the wallet confirmed it, for a succeeded cancel).
    pub updated_at: DateTime<Utc>,
}

impl PaymentRecord {
    pub fn snapshot(&self) -> PaymentSnapshot {
        PaymentSnapshot {
            transaction_no: self.transaction_no.clone(),
            merchant_no: self.merchant_no.clone(),
            store_no: self.store_no.clone(),
            reference: self.reference.clone(),
            payment: self.payment.clone(),
            settle_currency: self.settle_currency,
            description: self.description.clone(),
            vendor: self.vendor.clone(),
            dialect: self.dialect,
            extra: self.extra.clone(),
            created_at: self.created_at,
        }
    }
}

impl RefundRecord {
    pub fn snapshot(&self) -> RefundSnapshot {
        RefundSnapshot {
            refund_no: self.refund_no.clone(),
            refund_reference: self.refund_reference.clone(),
            amount: self.amount,
            state: self.state,
            extra: self.extra.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl CancelRecord {
    pub fn snapshot(&self) -> CancelSnapshot {
        CancelSnapshot {
            cancel_no: self.cancel_no.clone(),
            kind: self.kind,
            state: self.state,
            extra: self.extra.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The frozen content of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub topic: Topic,
    /// When the change happened.
    pub at: DateTime<Utc>,
    pub payment: PaymentSnapshot,
    pub refund: Option<RefundSnapshot>,
    pub cancel: Option<CancelSnapshot>,
}

/// Why a stored snapshot cannot be read back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stored notification snapshot is unreadable: {0}")]
pub struct SnapshotError(String);

impl Snapshot {
    /// The snapshot of a payment as it stands after a change at `at`.
    pub fn of(topic: Topic, p: &PaymentRecord, at: DateTime<Utc>) -> Snapshot {
        Snapshot {
            topic,
            at,
            payment: p.snapshot(),
            refund: None,
            cancel: None,
        }
    }

    pub fn with_refund(mut self, r: &RefundRecord) -> Snapshot {
        self.refund = Some(r.snapshot());
        self
    }

    pub fn with_cancel(mut self, c: &CancelRecord) -> Snapshot {
        self.cancel = Some(c.snapshot());
        self
    }

    /// The JSON kept in the outbox row.
    pub fn to_json(&self) -> String {
        let p = &self.payment;
        let pay = &p.payment;
        let wire = Wire {
            topic: self.topic.as_str().to_owned(),
            merchant_no: p.merchant_no.clone(),
            store_no: p.store_no.clone(),
            transaction_no: p.transaction_no.clone(),
            reference: p.reference.clone(),
            amount_minor: pay.amount().minor(),
            currency: pay.amount().currency().code().to_owned(),
            settle_currency: p.settle_currency.code().to_owned(),
            state: pay.state().as_str().to_owned(),
            refunded_minor: pay.refunded().minor(),
            reserved_minor: pay.reserved().minor(),
            cancel_in_flight: pay.cancel_in_flight().map(|k| k.as_str().to_owned()),
            reversed: pay.was_reversed(),
            created_at_ms: p.created_at.timestamp_millis(),
            paid_at_ms: pay.paid_at().map(|t| t.timestamp_millis()),
            at_ms: self.at.timestamp_millis(),
            dialect: Some(p.dialect.as_str().to_owned()),
            description: p.description.clone(),
            vendor: p.vendor.clone(),
            extra: p.extra.clone(),
            refund: self.refund.as_ref().map(|r| RefundWire {
                refund_no: r.refund_no.clone(),
                refund_reference: r.refund_reference.clone(),
                amount_minor: r.amount.minor(),
                state: r.state.code(),
                created_at_ms: r.created_at.timestamp_millis(),
                updated_at_ms: Some(r.updated_at.timestamp_millis()),
                extra: r.extra.clone(),
            }),
            cancel: self.cancel.as_ref().map(|c| CancelWire {
                cancel_no: c.cancel_no.clone(),
                kind: c.kind.as_str().to_owned(),
                state: c.state.code(),
                created_at_ms: c.created_at.timestamp_millis(),
                updated_at_ms: Some(c.updated_at.timestamp_millis()),
                extra: c.extra.clone(),
            }),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads back a stored snapshot. `dialect` is the outbox row's, for rows written before
    /// snapshots named their dialect.
    pub fn from_json(text: &str, dialect: Dialect) -> Result<Snapshot, SnapshotError> {
        let wire: Wire = serde_json::from_str(text).map_err(|e| SnapshotError(e.to_string()))?;
        wire.into_snapshot(dialect).map_err(SnapshotError)
    }
}

/// The stored form. Its field names are those of the first notifications tillgate wrote, so
/// outbox rows of earlier versions stay readable; fields added since have defaults.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    topic: String,
    merchant_no: String,
    store_no: String,
    transaction_no: String,
    reference: String,
    amount_minor: i64,
    currency: String,
    settle_currency: String,
    state: String,
    refunded_minor: i64,
    #[serde(default)]
    reserved_minor: i64,
    #[serde(default)]
    cancel_in_flight: Option<String>,
    /// Derived (a cancelled payment with a time paid); kept for readers of the raw row.
    reversed: bool,
    created_at_ms: i64,
    paid_at_ms: Option<i64>,
    at_ms: i64,
    #[serde(default)]
    dialect: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vendor: Option<String>,
    extra: Option<String>,
    refund: Option<RefundWire>,
    cancel: Option<CancelWire>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefundWire {
    refund_no: String,
    refund_reference: Option<String>,
    amount_minor: i64,
    state: i64,
    created_at_ms: i64,
    #[serde(default)]
    updated_at_ms: Option<i64>,
    extra: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CancelWire {
    cancel_no: String,
    kind: String,
    state: i64,
    created_at_ms: i64,
    #[serde(default)]
    updated_at_ms: Option<i64>,
    extra: Option<String>,
}

fn time(ms: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("time {ms} out of range"))
}

impl Wire {
    fn into_snapshot(self, row_dialect: Dialect) -> Result<Snapshot, String> {
        let topic = Topic::parse(&self.topic).ok_or_else(|| format!("topic {:?}", self.topic))?;
        let currency = Currency::from_code(&self.currency)
            .ok_or_else(|| format!("currency {:?}", self.currency))?;
        let settle_currency = Currency::from_code(&self.settle_currency)
            .ok_or_else(|| format!("settlement currency {:?}", self.settle_currency))?;
        let money = |minor: i64| {
            Money::from_minor(minor, currency).ok_or_else(|| format!("amount {minor} out of range"))
        };
        let state =
            PaymentState::parse(&self.state).ok_or_else(|| format!("state {:?}", self.state))?;
        let cancel_in_flight = match &self.cancel_in_flight {
            Some(k) => Some(CancelKind::parse(k).ok_or_else(|| format!("cancel kind {k:?}"))?),
            None => None,
        };
        let paid_at = self.paid_at_ms.map(time).transpose()?;
        let payment = Payment::restore(
            money(self.amount_minor)?,
            state,
            self.refunded_minor,
            self.reserved_minor,
            cancel_in_flight,
            paid_at,
        )
        .ok_or("payment totals break an invariant")?;
        let dialect = match &self.dialect {
            Some(d) => Dialect::parse(d).ok_or_else(|| format!("dialect {d:?}"))?,
            None => row_dialect,
        };
        let at = time(self.at_ms)?;
        let refund = match self.refund {
            Some(r) => Some(RefundSnapshot {
                amount: money(r.amount_minor)?,
                state: RefundState::from_code(r.state)
                    .ok_or_else(|| format!("refund state {}", r.state))?,
                created_at: time(r.created_at_ms)?,
                // Rows of earlier versions: the refund last changed with this notification.
                updated_at: time(r.updated_at_ms.unwrap_or(self.at_ms))?,
                refund_no: r.refund_no,
                refund_reference: r.refund_reference,
                extra: r.extra,
            }),
            None => None,
        };
        let cancel = match self.cancel {
            Some(c) => Some(CancelSnapshot {
                kind: CancelKind::parse(&c.kind)
                    .ok_or_else(|| format!("cancel kind {:?}", c.kind))?,
                state: CancelState::from_code(c.state)
                    .ok_or_else(|| format!("cancel state {}", c.state))?,
                created_at: time(c.created_at_ms)?,
                updated_at: time(c.updated_at_ms.unwrap_or(self.at_ms))?,
                cancel_no: c.cancel_no,
                extra: c.extra,
            }),
            None => None,
        };
        Ok(Snapshot {
            topic,
            at,
            payment: PaymentSnapshot {
                transaction_no: self.transaction_no,
                merchant_no: self.merchant_no,
                store_no: self.store_no,
                reference: self.reference,
                payment,
                settle_currency,
                description: self.description,
                vendor: self.vendor,
                dialect,
                extra: self.extra,
                created_at: time(self.created_at_ms)?,
            },
            refund,
            cancel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let usd = Currency::from_code("USD").unwrap();
        let at = DateTime::from_timestamp_millis(1_795_000_000_123).unwrap();
        let mut payment = Payment::new(Money::from_minor(1000, usd).unwrap()).unwrap();
        payment.submit().unwrap();
        assert!(payment.settle_submission(tillgate_domain::ChannelOutcome::Approved, at));
        payment
            .reserve_refund(Money::from_minor(300, usd).unwrap())
            .unwrap();
        Snapshot {
            topic: Topic::RefundSucceeded,
            at,
            payment: PaymentSnapshot {
                transaction_no: "T1".into(),
                merchant_no: "M1".into(),
                store_no: "S1".into(),
                reference: "R1".into(),
                payment,
                settle_currency: usd,
                description: Some("coffee".into()),
                vendor: Some("alipay".into()),
                dialect: Dialect::Unified,
                extra: Some(r#"{"appId":"A"}"#.into()),
                created_at: at - chrono::Duration::minutes(3),
            },
            refund: Some(RefundSnapshot {
                refund_no: "F1".into(),
                refund_reference: Some("RR".into()),
                amount: Money::from_minor(300, usd).unwrap(),
                state: RefundState::Succeeded,
                extra: None,
                created_at: at - chrono::Duration::seconds(2),
                updated_at: at,
            }),
            cancel: None,
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_written() {
        let s = sample();
        let back = Snapshot::from_json(&s.to_json(), Dialect::Pockyt).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn rows_of_earlier_versions_stay_readable() {
        // The form outbox rows had before snapshots were typed.
        let old = r#"{"topic":"cancel.succeeded","merchant_no":"M","store_no":"S",
            "transaction_no":"T","reference":"R","amount_minor":500,"currency":"EUR",
            "settle_currency":"EUR","state":"cancelled","refunded_minor":0,"reversed":true,
            "created_at_ms":1000,"paid_at_ms":2000,"at_ms":3000,"extra":null,"refund":null,
            "cancel":{"cancel_no":"C","kind":"reverse","state":2,"created_at_ms":2500,
            "extra":null}}"#;
        let s = Snapshot::from_json(old, Dialect::YabandPay).unwrap();
        assert_eq!(s.topic, Topic::CancelSucceeded);
        assert_eq!(s.payment.dialect, Dialect::YabandPay);
        assert!(s.payment.payment.was_reversed());
        let c = s.cancel.unwrap();
        assert_eq!(c.state, CancelState::Succeeded);
        assert_eq!(c.updated_at, s.at);
    }

    #[test]
    fn unreadable_snapshots_are_named_errors() {
        for bad in [
            "",
            "{}",
            r#"{"topic":"payment.lost"}"#,
            &sample().to_json().replace("\"USD\"", "\"XXX\""),
            &sample()
                .to_json()
                .replace("\"refunded_minor\":0", "\"refunded_minor\":5000"),
        ] {
            assert!(Snapshot::from_json(bad, Dialect::Pockyt).is_err(), "{bad}");
        }
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.as_str()), Some(t));
        }
        for d in Dialect::ALL {
            assert_eq!(Dialect::parse(d.as_str()), Some(d));
        }
    }
}
