//! The books on PostgreSQL: fee plans, pages of booked operations (by the `*_booked`
//! indexes), and reconciliation runs and cases (a run's cases and its counts in one
//! transaction; the claim is one upsert, so one node of many gets a day's run).

use crate::{db_error, dollar_placeholders, PgStore};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use tillgate_core::books::*;
use tillgate_core::store::BooksStore;
use tillgate_core::{MerchantRecord, StoreError};
use tillgate_store_sql::books as sql;

#[async_trait]
impl BooksStore for PgStore {
    async fn set_fee_plan(
        &self,
        merchant_id: i64,
        plan: Option<FeePlan>,
    ) -> Result<(), StoreError> {
        let text = dollar_placeholders(sql::SET_FEE_PLAN);
        let q = sqlx::query(&text)
            .bind(plan.map(|p| p.bps))
            .bind(plan.map(|p| p.fixed_minor))
            .bind(merchant_id);
        if self.exec(q).await? == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn fee_plan(&self, merchant_id: i64) -> Result<Option<FeePlan>, StoreError> {
        let text = dollar_placeholders(sql::FEE_PLAN);
        let q = sqlx::query(&text).bind(merchant_id);
        Ok(self.one(q, sql::fee_plan).await?.flatten())
    }

    async fn merchants(&self) -> Result<Vec<MerchantRecord>, StoreError> {
        self.all(sqlx::query(sql::MERCHANTS), tillgate_store_sql::merchant)
            .await
    }

    async fn book_entries(&self, query: &BookQuery) -> Result<Vec<BookEntry>, StoreError> {
        let (from, to, merchant, store, after_at, after_id, limit) = sql::entries_params(query);
        let text = dollar_placeholders(&sql::entries_sql(query.kind));
        let q = sqlx::query(&text)
            .bind(from)
            .bind(to)
            .bind(merchant)
            .bind(store)
            .bind(after_at)
            .bind(after_id)
            .bind(limit);
        let kind = query.kind;
        self.all(q, |r| sql::book_entry(kind, r)).await
    }

    async fn count_book_entries(&self, query: &BookQuery) -> Result<i64, StoreError> {
        let (from, to, merchant, store, ..) = sql::entries_params(query);
        let text = dollar_placeholders(&sql::count_sql(query.kind));
        sqlx::query_scalar::<_, i64>(&text)
            .bind(from)
            .bind(to)
            .bind(merchant)
            .bind(store)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn book_entry_of(&self, key: &LineKey) -> Result<Option<BookEntry>, StoreError> {
        let kind = match key.class {
            OperationClass::Pay => BookKind::Payment,
            OperationClass::Refund => BookKind::Refund,
            OperationClass::Cancel => BookKind::Cancel,
        };
        let text = dollar_placeholders(&sql::entry_of_sql(key.class));
        let q = sqlx::query(&text).bind(&key.number);
        self.one(q, |r| sql::book_entry(kind, r)).await
    }

    async fn claim_reconciliation(
        &self,
        day: NaiveDate,
        scope: &str,
        node: &str,
        at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        again: bool,
    ) -> Result<Option<i64>, StoreError> {
        let text = dollar_placeholders(sql::CLAIM_RUN);
        sqlx::query_scalar::<_, i64>(&text)
            .bind(day.to_string())
            .bind(scope)
            .bind(node)
            .bind(at.timestamp_millis())
            .bind(stale_before.timestamp_millis())
            .bind(i64::from(again))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn finish_reconciliation(
        &self,
        run: &RunRecord,
        cases: Vec<NewCase>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let insert = dollar_placeholders(sql::INSERT_CASE);
        let mut opened = 0;
        for c in &cases {
            opened += sqlx::query(&insert)
                .bind(c.day.to_string())
                .bind(&c.scope)
                .bind(c.finding.as_str())
                .bind(c.class.as_str())
                .bind(&c.number)
                .bind(&c.transaction_no)
                .bind(&c.merchant_no)
                .bind(&c.gateway)
                .bind(&c.wallet)
                .bind(c.opened_at.timestamp_millis())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        sqlx::query(&dollar_placeholders(sql::FINISH_RUN))
            .bind(run.id)
            .bind(&run.status)
            .bind(run.finished_at.map(|t| t.timestamp_millis()))
            .bind(run.gateway_lines)
            .bind(run.wallet_lines)
            .bind(run.matched)
            .bind(run.mismatched)
            .bind(&run.error)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(opened)
    }

    async fn reconciliation(
        &self,
        day: NaiveDate,
        scope: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let text = dollar_placeholders(sql::RUN);
        let q = sqlx::query(&text).bind(day.to_string()).bind(scope);
        self.one(q, sql::run_record).await
    }

    async fn cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
        let text = dollar_placeholders(sql::CASES);
        let q = sqlx::query(&text)
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.day.map(|d| d.to_string()))
            .bind(filter.limit.clamp(1, 10_000));
        self.all(q, sql::case_record).await
    }

    async fn case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
        let text = dollar_placeholders(sql::CASE);
        self.one(sqlx::query(&text).bind(id), sql::case_record)
            .await
    }

    async fn close_case(&self, id: i64, note: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let text = dollar_placeholders(sql::CLOSE_CASE);
        let q = sqlx::query(&text)
            .bind(id)
            .bind(at.timestamp_millis())
            .bind(note);
        Ok(self.exec(q).await? > 0)
    }

    async fn open_cases(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, i64>(sql::OPEN_CASES)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}
