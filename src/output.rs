//! What the commands print: to standard output, ending quietly when the reader went away
//! (`tillgate notify list | head`), as JSON or as a table for people.

use serde_json::Value;
use std::io::Write;

/// How a listing command prints its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty-printed JSON, with every field and every attempt or event.
    Json,
    /// One aligned line per row, the fields people look at first.
    Table,
}

/// How a report prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// One aligned line per merchant and currency.
    Table,
    /// A heading and one line per merchant and currency, amounts as decimal strings.
    Csv,
    /// Pretty-printed JSON, amounts as decimal strings and as integer minor units.
    Json,
}

/// Writes `text` and a new line to standard output. When the reader has gone away (a closed
/// pipe), the command ends at once and quietly, with success: what it had to say was not
/// wanted any more.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Prints a JSON value, pretty.
pub fn emit_json(value: &Value) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(value)?)
}

/// A column of a table: its heading and how a row's cell is read.
pub struct Column {
    pub heading: &'static str,
    pub cell: fn(&Value) -> String,
}

/// The rows as a table: a heading line and one line per row, each column as wide as its
/// widest cell; an empty listing says so.
pub fn table(rows: &[Value], columns: &[Column], nothing: &str) -> String {
    if rows.is_empty() {
        return nothing.to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| one_line((c.cell)(row))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.heading.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut text = String::new();
        for (i, v) in values.iter().enumerate() {
            if i + 1 == values.len() {
                text.push_str(v);
            } else {
                text.push_str(&format!("{v:<width$}  ", width = widths[i]));
            }
        }
        text.trim_end().to_owned()
    };
    let mut lines = vec![line(columns.iter().map(|c| c.heading).collect())];
    for row in &cells {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines.join("\n")
}

/// A field as text: strings as they are, null as "-", anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A cell on one line: line breaks and tabs of free texts become spaces.
fn one_line(cell: String) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns_and_keeps_each_row_on_one_line() {
        let columns = [
            Column {
                heading: "ID",
                cell: |r| text(&r["id"]),
            },
            Column {
                heading: "NOTE",
                cell: |r| text(&r["note"]),
            },
        ];
        let rows = [
            json!({"id": 7, "note": "two\nlines"}),
            json!({"id": 1234, "note": null}),
        ];
        assert_eq!(
            table(&rows, &columns, "none"),
            "ID    NOTE\n7     two lines\n1234  -"
        );
        assert_eq!(table(&[], &columns, "none"), "none");
    }
}
