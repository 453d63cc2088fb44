//! The books on SQLite: fee plans, pages of booked operations (reads on the caller's thread,
//! by the `*_booked` indexes), and reconciliation runs and cases (written by the writer; a
//! run's cases and its counts in one savepoint).

use crate::writer::{self, native, Bind};
use crate::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::params;
use tillgate_core::books::*;
use tillgate_core::store::BooksStore;
use tillgate_core::{MerchantRecord, StoreError};
use tillgate_store_sql::books as sql;

#[async_trait]
impl BooksStore for SqliteStore {
    async fn set_fee_plan(
        &self,
        merchant_id: i64,
        plan: Option<FeePlan>,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(plan.map(|p| p.bps)),
            Bind::Int(plan.map(|p| p.fixed_minor)),
            Bind::Int(Some(merchant_id)),
        ];
        let changed = self
            .write(move |conn| writer::execute(conn, sql::SET_FEE_PLAN, binds))
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn fee_plan(&self, merchant_id: i64) -> Result<Option<FeePlan>, StoreError> {
        Ok(self
            .read_one(sql::FEE_PLAN, params![merchant_id], |r| sql::fee_plan(r))?
            .flatten())
    }

    async fn merchants(&self) -> Result<Vec<MerchantRecord>, StoreError> {
        self.read_all(sql::MERCHANTS, [], |r| tillgate_store_sql::merchant(r))
    }

    async fn book_entries(&self, query: &BookQuery) -> Result<Vec<BookEntry>, StoreError> {
        let (from, to, merchant, store, after_at, after_id, limit) = sql::entries_params(query);
        let kind = query.kind;
        self.read_all(
            &sql::entries_sql(kind),
            params![from, to, merchant, store, after_at, after_id, limit],
            |r| sql::book_entry(kind, r),
        )
    }

    async fn count_book_entries(&self, query: &BookQuery) -> Result<i64, StoreError> {
        let (from, to, merchant, store, ..) = sql::entries_params(query);
        self.read_long(|conn| {
            conn.prepare_cached(&sql::count_sql(query.kind))
                .and_then(|mut s| {
                    s.query_row(params![from, to, merchant, store], |r| r.get::<_, i64>(0))
                })
                .map_err(native)
        })
    }

    async fn book_entry_of(&self, key: &LineKey) -> Result<Option<BookEntry>, StoreError> {
        let kind = match key.class {
            OperationClass::Pay => BookKind::Payment,
            OperationClass::Refund => BookKind::Refund,
            OperationClass::Cancel => BookKind::Cancel,
        };
        self.read_one(&sql::entry_of_sql(key.class), params![key.number], |r| {
            sql::book_entry(kind, r)
        })
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
        let (day, scope, node) = (day.to_string(), scope.to_owned(), node.to_owned());
        let (at, stale) = (at.timestamp_millis(), stale_before.timestamp_millis());
        self.write(move |conn| {
            writer::one(
                conn,
                sql::CLAIM_RUN,
                params![day, scope, node, at, stale, i64::from(again)],
                |r| {
                    use tillgate_store_sql::Columns;
                    r.int("id")
                },
            )
        })
        .await
    }

    async fn finish_reconciliation(
        &self,
        run: &RunRecord,
        cases: Vec<NewCase>,
    ) -> Result<u64, StoreError> {
        let run = run.clone();
        self.write(move |conn| {
            let mut opened = 0;
            for c in &cases {
                opened += conn
                    .prepare_cached(sql::INSERT_CASE)
                    .and_then(|mut s| {
                        s.execute(params![
                            c.day.to_string(),
                            c.scope,
                            c.finding.as_str(),
                            c.class.as_str(),
                            c.number,
                            c.transaction_no,
                            c.merchant_no,
                            c.gateway,
                            c.wallet,
                            c.opened_at.timestamp_millis(),
                        ])
                    })
                    .map_err(native)? as u64;
            }
            conn.prepare_cached(sql::FINISH_RUN)
                .and_then(|mut s| {
                    s.execute(params![
                        run.id,
                        run.status,
                        run.finished_at.map(|t| t.timestamp_millis()),
                        run.gateway_lines,
                        run.wallet_lines,
                        run.matched,
                        run.mismatched,
                        run.error,
                    ])
                })
                .map_err(native)?;
            Ok(opened)
        })
        .await
    }

    async fn reconciliation(
        &self,
        day: NaiveDate,
        scope: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.read_one(sql::RUN, params![day.to_string(), scope], |r| {
            sql::run_record(r)
        })
    }

    async fn cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
        self.read_all(
            sql::CASES,
            params![
                filter.status.map(|s| s.as_str()),
                filter.day.map(|d| d.to_string()),
                filter.limit.clamp(1, 10_000)
            ],
            |r| sql::case_record(r),
        )
    }

    async fn case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
        self.read_one(sql::CASE, params![id], |r| sql::case_record(r))
    }

    async fn close_case(&self, id: i64, note: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Int(Some(id)),
            Bind::Int(Some(at.timestamp_millis())),
            Bind::Text(Some(note.to_owned())),
        ];
        let changed = self
            .write(move |conn| writer::execute(conn, sql::CLOSE_CASE, binds))
            .await?;
        Ok(changed > 0)
    }

    async fn open_cases(&self) -> Result<i64, StoreError> {
        self.read_long(|conn| {
            conn.query_row(sql::OPEN_CASES, [], |r| r.get::<_, i64>(0))
                .map_err(native)
        })
    }
}
