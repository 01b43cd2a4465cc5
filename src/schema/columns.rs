//! The columns of an entry: in the buffer's `journal_logs`, in every Parquet file (the same
//! columns, in the same order), and the SQL that turns a row back into the whole entry as
//! journalctl prints it.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// Writes the column list once and derives from it `COLUMNS` (name, DuckDB type, nullable: from
/// which every DDL, cast and select list is made), `Builders` (one Arrow builder a column, in the
/// same order, for the collector's batches) and `WHOLE_ENTRY_SQL` (from each column's
/// `json` part: the journal field it holds, as journalctl prints it, or "" for none).
macro_rules! columns {
    ($($name:ident: $sql:literal, $builder:ident, $nullable:literal, json $json:literal;)*) => {
        /// A DuckDB expression of a `journal_logs` or Parquet row that gives the whole entry as
        /// `journalctl -o json --all` prints it: the columns that hold a field exactly, overlaid
        /// with `fields` (which holds every other field, and a promoted field whenever its
        /// column does not hold it exactly). The inner `json_merge_patch` drops the NULL
        /// columns. docs/design.md shows it. The cursor closes the list: every entry has one.
        pub const WHOLE_ENTRY_SQL: &str = concat!(
            "json_merge_patch(json_merge_patch('{}', json_object(",
            $($json,)*
            "'__CURSOR', cursor)), fields)"
        );

        /// The columns of `journal_logs` and of the Parquet files, in order: name, DuckDB type,
        /// and whether the column can be NULL (see the list's comment).
        pub const COLUMNS: &[(&str, &str, bool)] = &[$((stringify!($name), $sql, $nullable)),*];

        /// An Arrow builder for each column, named after it.
        pub struct Builders {
            $(pub $name: $builder,)*
        }

        impl Builders {
            pub fn new() -> Builders {
                Builders { $($name: $builder::new(),)* }
            }

            /// The columns built so far, in `COLUMNS` order; the builders start empty again.
            pub fn finish(&mut self) -> Vec<ArrayRef> {
                vec![$(Arc::new(self.$name.finish()) as ArrayRef,)*]
            }
        }
    };
}

// Parquet files mark every column OPTIONAL in every file, whatever the data and whether
// nullable here or not (see `flush::export::select_list`).
//
// These are the types of file schema 3 (`PARQUET_SCHEMA`), chosen so that every engine takes
// the files as they are: no unsigned integers (Iceberg, Delta, Athena and Trino have none),
// `pid`/`uid`/`gid` as BIGINT (a `_UID` is any uint32, 4294967294 included), and `fields` as
// plain UTF-8 text rather than DuckDB's JSON type, whose Parquet JSON annotation pyiceberg's
// `add_files` refuses, Polars reads as binary and chDB turns into a type where LIKE fails. JSON
// functions take the text as it is (`fields->>'$.NAME'` in DuckDB); the guide has the measured
// table of both choices.
columns! {
    timestamp: "TIMESTAMP", TimestampMicrosecondBuilder, false,
        json "'__REALTIME_TIMESTAMP', epoch_us(timestamp)::VARCHAR, ";
    minute_key: "TIMESTAMP", TimestampMicrosecondBuilder, false, json "";
    hostname: "VARCHAR", StringBuilder, true, json "'_HOSTNAME', hostname, ";
    cursor: "VARCHAR", StringBuilder, false, json "";
    fields: "VARCHAR", StringBuilder, false, json "";
    message: "VARCHAR", StringBuilder, true, json "'MESSAGE', message, ";
    priority: "INTEGER", Int32Builder, true, json "'PRIORITY', priority::VARCHAR, ";
    syslog_identifier: "VARCHAR", StringBuilder, true,
        json "'SYSLOG_IDENTIFIER', syslog_identifier, ";
    systemd_unit: "VARCHAR", StringBuilder, true, json "'_SYSTEMD_UNIT', systemd_unit, ";
    pid: "BIGINT", Int64Builder, true, json "'_PID', pid::VARCHAR, ";
    uid: "BIGINT", Int64Builder, true, json "'_UID', uid::VARCHAR, ";
    gid: "BIGINT", Int64Builder, true, json "'_GID', gid::VARCHAR, ";
    comm: "VARCHAR", StringBuilder, true, json "'_COMM', comm, ";
    exe: "VARCHAR", StringBuilder, true, json "'_EXE', exe, ";
    boot_id: "VARCHAR", StringBuilder, false, json "'_BOOT_ID', boot_id, ";
    machine_id: "VARCHAR", StringBuilder, true, json "'_MACHINE_ID', machine_id, ";
    transport: "VARCHAR", StringBuilder, true, json "'_TRANSPORT', transport, ";
    monotonic_usec: "BIGINT", Int64Builder, false,
        json "'__MONOTONIC_TIMESTAMP', monotonic_usec::VARCHAR, ";
    source_timestamp: "TIMESTAMP", TimestampMicrosecondBuilder, true,
        json "'_SOURCE_REALTIME_TIMESTAMP', epoch_us(source_timestamp)::VARCHAR, ";
    // Buffer only, not exported: the entry's directory under DATA (see `layout`), computed once
    // at ingest so that jp-flush can group rows by it.
    host_dir: "VARCHAR", StringBuilder, false, json "";
}

impl Default for Builders {
    fn default() -> Builders {
        Builders::new()
    }
}

/// The Arrow schema of `COLUMNS`.
pub fn arrow_schema() -> Schema {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, ty, nullable)| {
            let dt = match *ty {
                "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
                "INTEGER" => DataType::Int32,
                "BIGINT" => DataType::Int64,
                _ => DataType::Utf8,
            };
            Field::new(*name, dt, *nullable)
        })
        .collect();
    Schema::new(fields)
}

/// The version of the Parquet files' schema, written into each file's key-value metadata as
/// `journal_parquet_schema`. 2: `priority` UTINYINT, `pid`/`uid`/`gid` INTEGER, `monotonic_usec`
/// UBIGINT, `fields` JSON; 3: the types above. Readers take both (`views::journal_select`).
pub const PARQUET_SCHEMA: u32 = 3;

/// The buffer columns that are not written to Parquet.
pub const BUFFER_ONLY_COLUMNS: &[&str] = &["host_dir"];

/// The columns as a select list, each cast to its type above, so that rows of an earlier schema
/// (a segment or a file of schema 2) come out in the current types. With `buffer_only`, the
/// columns that are not exported too.
pub fn cast_columns(buffer_only: bool) -> String {
    COLUMNS
        .iter()
        .filter(|(name, _, _)| buffer_only || !BUFFER_ONLY_COLUMNS.contains(name))
        .map(|(name, ty, _)| format!("CAST(\"{name}\" AS {ty}) AS \"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_doc_shows_the_whole_entry_sql() {
        let readme = include_str!("../../docs/design.md");
        assert!(
            readme.contains(WHOLE_ENTRY_SQL),
            "docs/design.md must show WHOLE_ENTRY_SQL as it is"
        );
    }
}
