//! The columns of an entry: in the buffer's `journal_logs`, in every Parquet file (the same
//! columns, in the same order), and the SQL that turns a row back into the whole entry as
//! journalctl prints it.

/// The columns of `journal_logs` and of the Parquet files, in order: name, DuckDB type, and
/// whether the column can be NULL. Parquet files mark the same columns OPTIONAL in every file,
/// whatever the data (see `flush::export::select_list`).
///
/// These are the types of file schema 3 (`PARQUET_SCHEMA`), chosen so that every engine takes
/// the files as they are: no unsigned integers (Iceberg, Delta, Athena and Trino have none),
/// `pid`/`uid`/`gid` as BIGINT (a `_UID` is any uint32, 4294967294 included), and `fields` as
/// plain UTF-8 text rather than DuckDB's JSON type, whose Parquet JSON annotation pyiceberg's
/// `add_files` refuses, Polars reads as binary and chDB turns into a type where LIKE fails. JSON
/// functions take the text as it is (`fields->>'$.NAME'` in DuckDB); the README has the measured
/// table of both choices.
pub const COLUMNS: &[(&str, &str, bool)] = &[
    ("timestamp", "TIMESTAMP", false),
    ("minute_key", "TIMESTAMP", false),
    ("hostname", "VARCHAR", true),
    ("cursor", "VARCHAR", false),
    ("fields", "VARCHAR", false),
    ("message", "VARCHAR", true),
    ("priority", "INTEGER", true),
    ("syslog_identifier", "VARCHAR", true),
    ("systemd_unit", "VARCHAR", true),
    ("pid", "BIGINT", true),
    ("uid", "BIGINT", true),
    ("gid", "BIGINT", true),
    ("comm", "VARCHAR", true),
    ("exe", "VARCHAR", true),
    ("boot_id", "VARCHAR", false),
    ("machine_id", "VARCHAR", true),
    ("transport", "VARCHAR", true),
    ("monotonic_usec", "BIGINT", false),
    ("source_timestamp", "TIMESTAMP", true),
    // Buffer only, not exported: the entry's directory under DATA (see `layout`), computed once at
    // ingest so that jp-flush can group rows by it.
    ("host_dir", "VARCHAR", false),
];

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

/// A DuckDB expression of a `journal_logs` or Parquet row that gives the whole entry as
/// `journalctl -o json --all` prints it: the columns that hold a field exactly, overlaid with
/// `fields` (which holds every other field, and a promoted field whenever its column does not
/// hold it exactly). The inner `json_merge_patch` drops the NULL columns. The README shows it.
pub const WHOLE_ENTRY_SQL: &str = "json_merge_patch(json_merge_patch('{}', json_object(
    '__CURSOR', cursor, '__REALTIME_TIMESTAMP', epoch_us(timestamp)::VARCHAR,
    '__MONOTONIC_TIMESTAMP', monotonic_usec::VARCHAR, '_BOOT_ID', boot_id,
    '_HOSTNAME', hostname, 'MESSAGE', message, 'PRIORITY', priority::VARCHAR,
    'SYSLOG_IDENTIFIER', syslog_identifier, '_SYSTEMD_UNIT', systemd_unit,
    '_PID', pid::VARCHAR, '_UID', uid::VARCHAR, '_GID', gid::VARCHAR, '_COMM', comm, '_EXE', exe,
    '_MACHINE_ID', machine_id, '_TRANSPORT', transport,
    '_SOURCE_REALTIME_TIMESTAMP', epoch_us(source_timestamp)::VARCHAR)), fields)";

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
