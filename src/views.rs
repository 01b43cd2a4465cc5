//! The archive as SQL: the views `journal` (the typed columns of every minute file) and `entries`
//! (each entry whole, as `journalctl -o json --all` prints it), and the catalogue file
//! `DATA/journal.duckdb` that holds them for anyone with the DuckDB CLI.
//!
//! Both `journal-parquet query` and the catalogue build their views here, so the two never
//! differ. The views read files of schema 2 and 3 alike (`row::PARQUET_SCHEMA`): DuckDB unifies
//! their columns by name, and every column is cast to its schema-3 type.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::{AccessMode, Config, Connection};

use crate::row::{BUFFER_ONLY_COLUMNS, COLUMNS, PARQUET_SCHEMA, WHOLE_ENTRY_SQL};
use crate::segment::is_lock_conflict;

/// The catalogue's name under DATA.
pub const CATALOGUE_FILE: &str = "journal.duckdb";
/// The oldest storage format that holds views: DuckDB CLIs of 1.0 and later open it (measured:
/// the 1.5.6 CLI refuses this build's default format, "version number 69").
const CATALOGUE_STORAGE: &str = "v1.0.0";

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The glob of every minute file under `data_dir`: `HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet`. A file
/// being written (`.NAME.tmp`) or set aside as damaged (`NAME.damaged-UNIXTIME`) does not end in
/// `.parquet`, and the catalogue sits beside the host directories, not under them.
pub fn minute_glob(data_dir: &Path) -> String {
    format!(
        "{}/*/[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9]*-[0-9]*.parquet",
        data_dir.display()
    )
}

/// Where the rows of the `journal` view come from.
pub enum Files<'a> {
    /// Every minute file under DATA, found when the view is queried (the catalogue).
    Glob(&'a Path),
    /// These files (a query pruned by time and host); none gives an empty view.
    List(&'a [PathBuf]),
}

/// The exported columns, each cast to its schema-3 type, as a select list over rows of any
/// schema.
pub fn typed_columns() -> String {
    COLUMNS
        .iter()
        .filter(|(name, _, _)| !BUFFER_ONLY_COLUMNS.contains(name))
        .map(|(name, ty, _)| format!("CAST(\"{name}\" AS {ty}) AS \"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `SELECT` of the `journal` view over `files`. `union_by_name`: files of schema 2 and 3 have
/// the same names with other types; DuckDB reads each file's own and the casts give one type.
pub fn journal_select(files: &Files) -> String {
    let source = match files {
        Files::Glob(data_dir) => quote(&minute_glob(data_dir)),
        Files::List([]) => {
            // No file: the same columns, no rows (read_parquet refuses an empty list).
            let nulls: Vec<String> = COLUMNS
                .iter()
                .filter(|(name, _, _)| !BUFFER_ONLY_COLUMNS.contains(name))
                .map(|(name, ty, _)| format!("CAST(NULL AS {ty}) AS \"{name}\""))
                .collect();
            return format!("SELECT {} WHERE false", nulls.join(", "));
        }
        Files::List(list) => {
            let quoted: Vec<String> = list.iter().map(|p| quote(&p.to_string_lossy())).collect();
            format!("[{}]", quoted.join(", "))
        }
    };
    format!(
        "SELECT {} FROM read_parquet({source}, union_by_name = true)",
        typed_columns()
    )
}

/// The `SELECT` of the `entries` view, over the `journal` view.
pub fn entries_select() -> String {
    format!("SELECT timestamp, hostname, cursor, {WHOLE_ENTRY_SQL} AS entry FROM journal")
}

/// The statements that make both views, over `journal_select` (which may add a filter).
pub fn create_views(journal: &str, temporary: bool) -> String {
    let temp = if temporary { "TEMP " } else { "" };
    format!(
        "CREATE OR REPLACE {temp}VIEW journal AS {journal};\n\
         CREATE OR REPLACE {temp}VIEW entries AS {};",
        entries_select()
    )
}

/// What the catalogue holds, in full: it is rewritten whenever this differs from the text stored
/// in it (another data directory, another version of the views).
fn catalogue_definition(data_dir: &Path) -> String {
    format!(
        "-- journal-parquet catalogue, Parquet schema {PARQUET_SCHEMA}, storage {CATALOGUE_STORAGE}\n{}",
        create_views(&journal_select(&Files::Glob(data_dir)), false)
    )
}

/// What `ensure_catalogue` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Catalogue {
    UpToDate,
    Written,
    /// Another process holds it open for writing (a DuckDB CLI, say): left as it is until a
    /// later run.
    Busy,
}

/// Writes `DATA/journal.duckdb` when it is missing or outdated. The new file is made beside it
/// and renamed over it, so a reader that holds the old one open keeps reading it, undisturbed.
pub fn ensure_catalogue(data_dir: &Path) -> Result<Catalogue> {
    let data_dir = std::fs::canonicalize(data_dir).with_context(|| {
        format!(
            "failed to resolve the data directory {}",
            data_dir.display()
        )
    })?;
    let path = data_dir.join(CATALOGUE_FILE);
    let want = catalogue_definition(&data_dir);
    if path.exists() {
        match stored_definition(&path) {
            Ok(Some(have)) if have == want => return Ok(Catalogue::UpToDate),
            Err(e) if is_lock_conflict(&e) => return Ok(Catalogue::Busy),
            // Outdated, not ours, or damaged: replaced.
            _ => {}
        }
    }
    let tmp = data_dir.join(format!(".{CATALOGUE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(data_dir.join(format!(".{CATALOGUE_FILE}.tmp.wal")));
    let written = (|| -> Result<()> {
        let conn = Connection::open_in_memory_with_flags(
            Config::default().enable_autoload_extension(false)?,
        )?;
        conn.execute_batch(&format!(
            "ATTACH {} AS catalogue (STORAGE_VERSION '{CATALOGUE_STORAGE}'); USE catalogue;
             {want}
             CREATE TABLE journal_parquet_catalogue (definition VARCHAR NOT NULL);",
            quote(&tmp.to_string_lossy())
        ))?;
        conn.execute("INSERT INTO journal_parquet_catalogue VALUES (?)", [&want])?;
        conn.execute_batch("CHECKPOINT catalogue; USE memory; DETACH catalogue;")?;
        conn.close().map_err(|(_, e)| e)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("failed to write the catalogue {}", path.display())));
    }
    crate::layout::sync_dir(&data_dir)?;
    Ok(Catalogue::Written)
}

/// The definition stored in a catalogue file; None when it has none (not ours).
fn stored_definition(path: &Path) -> Result<Option<String>> {
    let config = Config::default()
        .enable_autoload_extension(false)?
        .access_mode(AccessMode::ReadOnly)?;
    let conn = Connection::open_with_flags(path, config)
        .with_context(|| format!("failed to open the catalogue {}", path.display()))?;
    let stored = conn
        .query_row(
            "SELECT max(definition) FROM journal_parquet_catalogue",
            [],
            |r| r.get(0),
        )
        .ok()
        .flatten();
    Ok(stored)
}
