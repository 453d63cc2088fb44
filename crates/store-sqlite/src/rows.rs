//! SQLite rows seen through the shared [`Columns`] view; the mapping itself lives in
//! `tillgate-store-sql` so that both backends read rows the same way.

use tillgate_core::StoreError;
use tillgate_store_sql::Columns;
pub use tillgate_store_sql::{cancel, event, merchant, payment, refund, store_row};

/// A row of a synchronous (rusqlite) connection, seen through the shared column view.
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
