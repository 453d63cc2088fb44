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

/// A row of the writer's synchronous connection, seen through the shared column view.
pub struct Native<'a, 'r>(pub &'a rusqlite::Row<'r>);

fn native_column<T: rusqlite::types::FromSql>(
    row: &rusqlite::Row<'_>,
    col: &str,
) -> Result<T, StoreError> {
    row.get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

impl Columns for Native<'_, '_> {
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        native_column(self.0, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        native_column(self.0, col)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        native_column(self.0, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        native_column(self.0, col)
    }
}
