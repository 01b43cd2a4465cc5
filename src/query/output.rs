//! Printing the result: an aligned table, or CSV, JSON lines or Parquet through a scratch file.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use duckdb::arrow::array::Array;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use duckdb::Connection;

use crate::config::{QueryFormat, Usage};
use crate::sys::duckdb::{quote, sql_error};

/// CSV, JSON lines or Parquet on standard output, written by DuckDB's COPY into a private
/// scratch file first: DuckDB opens a COPY target with O_TRUNC, which would wipe the file that
/// `>>` appends standard output to.
pub(super) fn copy_out(
    conn: &Connection,
    sql: &str,
    format: QueryFormat,
    scratch: &Path,
) -> Result<()> {
    let options = match format {
        QueryFormat::Csv => "FORMAT csv, HEADER true",
        QueryFormat::Json => "FORMAT json",
        QueryFormat::Parquet => "FORMAT parquet, COMPRESSION zstd",
        QueryFormat::Table => unreachable!("printed by print_table"),
    };
    if format == QueryFormat::Parquet && std::io::stdout().is_terminal() {
        return Err(Usage("--format parquet writes binary: redirect it to a file".into()).into());
    }
    let result = scratch.join("result");
    conn.execute_batch(&format!(
        "COPY ({sql}) TO {} ({options})",
        quote(&result.to_string_lossy())
    ))
    .map_err(sql_error)?;
    let mut file = std::fs::File::open(&result)
        .with_context(|| format!("failed to read the result {}", result.display()))?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())
        .context("failed to write the result to standard output")?;
    Ok(())
}

/// A plain text table: a header, a rule, one line a row, columns padded to their widest value.
pub(super) fn print_table(conn: &Connection, sql: &str) -> Result<()> {
    let mut statement = conn.prepare(sql).map_err(sql_error)?;
    let batches: Vec<RecordBatch> = statement.query_arrow([]).map_err(sql_error)?.collect();
    let names: Vec<String> = match batches.first() {
        Some(b) => b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        None => statement.column_names(),
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in &batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref() as &dyn Array, &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_owned()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "{}", line(&names))?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    writeln!(out, "{}", rule.join("-+-"))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    writeln!(
        out,
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )?;
    out.flush()?;
    Ok(())
}
