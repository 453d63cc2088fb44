//! SQLite rows seen through the shared [`Columns`] view; the mapping itself lives in
//! `tillgate-store-sql` so that both backends read rows the same way.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use tillgate_core::StoreError;
use tillgate_store_sql::Columns;
pub use tillgate_store_sql::{cancel, event, merchant, payment, refund, store_row, time};

fn column<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// A loaded row; wraps `SqliteRow` so the shared mapping can read it.
pub struct Loaded(pub SqliteRow);

impl Columns for Loaded {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        column(&self.0, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        column(&self.0, col)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        column(&self.0, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        column(&self.0, col)
    }
}
