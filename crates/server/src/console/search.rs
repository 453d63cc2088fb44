//! The transaction search of the console's transactions page and of the admin API
//! (`GET /admin/v1/transactions`): filters read from a query string into a [`PaymentSearch`].

use chrono::NaiveDate;
use serde::Deserialize;
use tillgate_core::console::PaymentSearch;
use tillgate_core::{Dialect, Store, StoreError};
use tillgate_domain::{Currency, MerchantZone, Money, PaymentState};

/// The states a search can ask for, as stored.
pub const STATES: &[&str] = &[
    "created",
    "pending",
    "paid",
    "partially_refunded",
    "refunded",
    "failed",
    "cancelled",
    "closed",
];

/// The filters as given (each optional; empty means absent). Days are calendar days in the
/// chosen merchant's time zone (the user's merchant's, or the gateway's default zone); `to` is
/// inclusive.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub merchant: Option<String>,
    pub store: Option<String>,
    pub status: Option<String>,
    pub dialect: Option<String>,
    /// ISO 4217 code; the amount bounds are read in it.
    pub currency: Option<String>,
    /// Amount bounds as decimal text (`10.00`), inclusive; they need a currency.
    pub min: Option<String>,
    pub max: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The gateway's transaction number.
    pub no: Option<String>,
    /// The merchant's own reference.
    pub reference: Option<String>,
    /// A refund's number or the merchant's refund reference.
    pub refund: Option<String>,
    pub cancel: Option<String>,
    /// A terminal's tid: the payments made on it.
    pub terminal: Option<String>,
    /// The id of the last transaction of the previous page.
    pub before: Option<String>,
    /// Transactions per page (the admin API; 1 to 500, default 50).
    pub limit: Option<String>,
}

#[derive(Debug)]
pub enum FilterError {
    /// A filter that means nothing: said to the user, nothing searched.
    Invalid(String),
    Store(StoreError),
}

impl From<StoreError> for FilterError {
    fn from(e: StoreError) -> Self {
        FilterError::Store(e)
    }
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn bounded(v: &Option<String>, name: &str) -> Result<Option<String>, FilterError> {
    match given(v) {
        Some(t) if t.len() > 128 || t.chars().any(char::is_control) => Err(FilterError::Invalid(
            format!("{name} is at most 128 characters, without control characters"),
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

fn day(v: &Option<String>, name: &str) -> Result<Option<NaiveDate>, FilterError> {
    given(v)
        .map(|t| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map_err(|_| FilterError::Invalid(format!("{name} must be a day as YYYY-MM-DD")))
        })
        .transpose()
}

impl Filter {
    /// The search these filters ask for, confined to `scope` (a merchant's id) and `stores`
    /// (some of its stores) when given, and
    /// the time zone its days were read in. A merchant outside the scope finds nothing.
    pub async fn search(
        &self,
        store: &dyn Store,
        scope: Option<i64>,
        stores: &[String],
        default_zone: MerchantZone,
        limit: u32,
    ) -> Result<(PaymentSearch, MerchantZone), FilterError> {
        let mut search = PaymentSearch {
            limit,
            merchant_id: scope,
            store_nos: stores.to_vec(),
            ..PaymentSearch::default()
        };
        let mut zone = default_zone;
        if let Some(id) = scope {
            if let Some(m) = store.merchant_by_id(id).await? {
                zone = m.zone;
            }
        }
        if let Some(no) = bounded(&self.merchant, "merchant")? {
            match store.merchant(&no).await? {
                Some(m) if scope.is_none_or(|id| id == m.id) => {
                    search.merchant_id = Some(m.id);
                    zone = m.zone;
                }
                // Unknown, or not the user's: nothing matches.
                _ => search.merchant_id = Some(-1),
            }
        }
        search.store_no = bounded(&self.store, "store")?;
        if let Some(s) = given(&self.status) {
            let state = PaymentState::parse(s).ok_or_else(|| {
                FilterError::Invalid(format!("status must be one of {}", STATES.join(", ")))
            })?;
            search.states = vec![state];
        }
        if let Some(d) = given(&self.dialect) {
            search.dialect = Some(Dialect::parse(d).ok_or_else(|| {
                FilterError::Invalid("dialect must be pockyt, unified or yabandpay".into())
            })?);
        }
        if let Some(code) = given(&self.currency) {
            let currency = Currency::from_code(&code.to_ascii_uppercase()).ok_or_else(|| {
                FilterError::Invalid("currency must be an ISO 4217 code such as USD".into())
            })?;
            search.currency = Some(currency.code().to_owned());
            let bound = |v: &Option<String>, name: &str| {
                given(v)
                    .map(|t| {
                        Money::parse(t, currency).map(|m| m.minor()).map_err(|_| {
                            FilterError::Invalid(format!(
                                "{name} must be an amount of {} such as 10.00",
                                currency.code()
                            ))
                        })
                    })
                    .transpose()
            };
            search.amount_min = bound(&self.min, "min")?;
            search.amount_max = bound(&self.max, "max")?;
        } else if given(&self.min).is_some() || given(&self.max).is_some() {
            return Err(FilterError::Invalid(
                "an amount range needs a currency".into(),
            ));
        }
        let from = day(&self.from, "from")?;
        let to = day(&self.to, "to")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(FilterError::Invalid("from is after to".into()));
            }
        }
        search.created_from = from.map(|d| zone.day_start(d));
        search.created_to = to.and_then(|d| d.succ_opt()).map(|d| zone.day_start(d));
        search.transaction_no = bounded(&self.no, "transaction no")?
            .map(|n| n.trim_start_matches(['P', 'p']).to_owned());
        search.reference = bounded(&self.reference, "reference")?;
        search.refund_no = bounded(&self.refund, "refund")?
            .map(|n| n.strip_prefix('R').map(str::to_owned).unwrap_or(n));
        search.cancel_no = bounded(&self.cancel, "cancel")?
            .map(|n| n.strip_prefix('C').map(str::to_owned).unwrap_or(n));
        search.terminal = bounded(&self.terminal, "terminal")?;
        if let Some(b) = given(&self.before) {
            search.before_id = Some(b.parse::<i64>().map_err(|_| {
                FilterError::Invalid("before must be the id the previous page gave".into())
            })?);
        }
        Ok((search, zone))
    }

    /// The page size asked for: 1 to 500, `default` when not given.
    pub fn limit(&self, default: u32) -> Result<u32, FilterError> {
        match given(&self.limit) {
            None => Ok(default),
            Some(t) => t
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| FilterError::Invalid("limit must be from 1 to 500".into())),
        }
    }

    /// The query string of the next page: the same filters, before `id`.
    pub fn with_before(&self, id: i64) -> String {
        format!("/console/transactions?{}", self.query(Some(id)))
    }

    /// The filters as a query string (and `before`, when given).
    pub fn query(&self, before: Option<i64>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("merchant", &self.merchant),
            ("store", &self.store),
            ("status", &self.status),
            ("dialect", &self.dialect),
            ("currency", &self.currency),
            ("min", &self.min),
            ("max", &self.max),
            ("from", &self.from),
            ("to", &self.to),
            ("no", &self.no),
            ("reference", &self.reference),
            ("refund", &self.refund),
            ("cancel", &self.cancel),
            ("terminal", &self.terminal),
        ] {
            if let Some(v) = given(v) {
                q.append_pair(k, v);
            }
        }
        if let Some(id) = before {
            q.append_pair("before", &id.to_string());
        }
        q.finish()
    }
}
