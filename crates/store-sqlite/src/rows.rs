//! Row to record conversions. Every row is checked against the domain's invariants as it loads.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use tillgate_core::service::Lifecycle;
use tillgate_core::*;
use tillgate_domain::{
    CancelKind, CancelState, Currency, MerchantZone, Money, PaymentState, RefundState,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    col: &str,
) -> Result<T, StoreError> {
    row.try_get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp"))
}

fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::from_code(code).ok_or_else(|| corrupt("currency"))
}

pub fn merchant(row: &SqliteRow) -> Result<MerchantRecord, StoreError> {
    Ok(MerchantRecord {
        id: get(row, "id")?,
        merchant_no: get(row, "merchant_no")?,
        zone: MerchantZone::parse(&get::<String>(row, "zone")?).ok_or_else(|| corrupt("zone"))?,
        sandbox: get::<i64>(row, "sandbox")? != 0,
        created_at: time(get(row, "created_at")?)?,
    })
}

pub fn store_row(row: &SqliteRow) -> Result<StoreRow, StoreError> {
    Ok(StoreRow {
        merchant: merchant(row)?,
        store_no: get(row, "store_no")?,
        token_sealed: get(row, "token_sealed")?,
    })
}

pub fn payment(row: &SqliteRow) -> Result<PaymentRecord, StoreError> {
    let cur = currency(&get::<String>(row, "currency")?)?;
    let amount =
        Money::from_minor(get(row, "amount_minor")?, cur).ok_or_else(|| corrupt("amount"))?;
    let state =
        PaymentState::parse(&get::<String>(row, "state")?).ok_or_else(|| corrupt("state"))?;
    let cancel_in_flight = get::<Option<String>>(row, "cancel_in_flight")?
        .map(|k| CancelKind::parse(&k).ok_or_else(|| corrupt("cancel_in_flight")))
        .transpose()?;
    let paid_at = get::<Option<i64>>(row, "paid_at")?.map(time).transpose()?;
    let payment = Lifecycle::restore_payment(
        amount,
        state,
        get(row, "refunded_minor")?,
        get(row, "reserved_minor")?,
        cancel_in_flight,
        paid_at,
    )?;
    Ok(PaymentRecord {
        id: get(row, "id")?,
        transaction_no: get(row, "transaction_no")?,
        merchant_id: get(row, "merchant_id")?,
        merchant_no: get(row, "merchant_no")?,
        store_no: get(row, "store_no")?,
        reference: get(row, "reference")?,
        settle_currency: currency(&get::<String>(row, "settle_currency")?)?,
        description: get(row, "description")?,
        notify_url: get(row, "notify_url")?,
        vendor: get(row, "vendor")?,
        fingerprint: get(row, "fingerprint")?,
        pay_fingerprint: get(row, "pay_fingerprint")?,
        payment,
        created_at: time(get(row, "created_at")?)?,
        updated_at: time(get(row, "updated_at")?)?,
        expires_at: time(get(row, "expires_at")?)?,
    })
}

pub fn refund(row: &SqliteRow) -> Result<RefundRecord, StoreError> {
    let cur = currency(&get::<String>(row, "currency")?)?;
    Ok(RefundRecord {
        id: get(row, "id")?,
        refund_no: get(row, "refund_no")?,
        payment_id: get(row, "payment_id")?,
        merchant_id: get(row, "merchant_id")?,
        refund_reference: get(row, "refund_reference")?,
        amount: Money::from_minor(get(row, "amount_minor")?, cur)
            .ok_or_else(|| corrupt("refund amount"))?,
        state: RefundState::from_code(get(row, "state")?).ok_or_else(|| corrupt("refund state"))?,
        fingerprint: get(row, "fingerprint")?,
        created_at: time(get(row, "created_at")?)?,
        updated_at: time(get(row, "updated_at")?)?,
    })
}

pub fn cancel(row: &SqliteRow) -> Result<CancelRecord, StoreError> {
    Ok(CancelRecord {
        id: get(row, "id")?,
        cancel_no: get(row, "cancel_no")?,
        payment_id: get(row, "payment_id")?,
        merchant_id: get(row, "merchant_id")?,
        kind: CancelKind::parse(&get::<String>(row, "kind")?)
            .ok_or_else(|| corrupt("cancel kind"))?,
        state: CancelState::from_code(get(row, "state")?).ok_or_else(|| corrupt("cancel state"))?,
        created_at: time(get(row, "created_at")?)?,
        updated_at: time(get(row, "updated_at")?)?,
    })
}

pub fn event(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        payment_id: get(row, "payment_id")?,
        at: time(get(row, "at")?)?,
        kind: get(row, "kind")?,
        detail: get(row, "detail")?,
    })
}
