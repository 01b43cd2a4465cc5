//! The archive as SQL: the views `journal` (the typed columns of every minute file) and `entries`
//! (each entry whole, as `journalctl -o json --all` prints it), and the catalogue file
//! `DATA/journal.duckdb` that holds them for anyone with the DuckDB CLI.
//!
//! Both `journal-parquet query` and the catalogue build their views here, so the two never
//! differ. The views read files of schema 2 and 3 alike (`schema::columns::PARQUET_SCHEMA`): DuckDB unifies
//! their columns by name, and every column is cast to its schema-3 type.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::{AccessMode, Connection, OptionalExt};

use crate::schema::columns::{
    cast_columns, BUFFER_ONLY_COLUMNS, COLUMNS, PARQUET_SCHEMA, WHOLE_ENTRY_SQL,
};

/// The catalogue's name under DATA.
pub const CATALOGUE_FILE: &str = "journal.duckdb";
/// The oldest storage format that holds views: DuckDB CLIs of 1.0 and later open it (measured:
/// the 1.5.6 CLI refuses this build's default format, "version number 69").
const CATALOGUE_STORAGE: &str = "v1.0.0";

use crate::sys::duckdb::{quote, sql_error};

/// The glob of every archive file under `data_dir`: `HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet`, and
/// the hour and day files of compaction (`YYYYMMDD-HH.parquet`, `YYYYMMDD.parquet`). A file being
/// written (`.NAME.tmp`) or set aside as damaged (`NAME.damaged-UNIXTIME`) does not end in
/// `.parquet`, the catalogue sits beside the host directories, not under them, and jp-flush's
/// working directories (`layout::COMPACT_WORK_DIR`) are off this depth.
pub fn archive_glob(data_dir: &Path) -> String {
    format!(
        "{}/*/[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9]*.parquet",
        data_dir.display()
    )
}

/// Where the rows of the `journal` view come from.
pub enum Files<'a> {
    /// Every minute file under DATA, found when the view is queried (the catalogue). Its files
    /// can be of any schema, in any order: DuckDB reads every footer first (`union_by_name`).
    Glob(&'a Path),
    /// These files (a query pruned by time and host); none gives an empty view.
    List(&'a [PathBuf], Unify),
}

/// How DuckDB makes one set of columns of files whose types differ (schema 2 and 3 files have
/// the same names with other types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unify {
    /// The first file is of schema 3: DuckDB takes its column types and casts every other
    /// file's to them as it reads it, one file open at a time. Schema 2's types all cast to
    /// schema 3's.
    FirstFileTypes,
    /// DuckDB reads every file's footer before the query and unifies the types. Memory grows
    /// with the number of files (measured: 2.1 GiB for 43,200 files, against 315 MiB the other
    /// way), so only when no schema-3 file leads.
    ByName,
}

/// The `SELECT` of the `journal` view over `files`; the casts give every column its schema-3
/// type whatever the files' own.
pub fn journal_select(files: &Files) -> String {
    let (source, unify) = match files {
        Files::Glob(data_dir) => (quote(&archive_glob(data_dir)), Unify::ByName),
        Files::List([], _) => {
            // No file: the same columns, no rows (read_parquet refuses an empty list).
            let nulls: Vec<String> = COLUMNS
                .iter()
                .filter(|(name, _, _)| !BUFFER_ONLY_COLUMNS.contains(name))
                .map(|(name, ty, _)| format!("CAST(NULL AS {ty}) AS \"{name}\""))
                .collect();
            return format!("SELECT {} WHERE false", nulls.join(", "));
        }
        Files::List(list, unify) => {
            let quoted: Vec<String> = list.iter().map(|p| quote(&p.to_string_lossy())).collect();
            (format!("[{}]", quoted.join(", ")), *unify)
        }
    };
    let by_name = match unify {
        Unify::ByName => ", union_by_name = true",
        Unify::FirstFileTypes => "",
    };
    format!(
        "SELECT {} FROM read_parquet({source}{by_name})",
        cast_columns(false)
    )
}

/// Puts a file of the current schema first when there is one to find cheaply: the newest minute
/// file is written by this version, unless nothing was flushed since an upgrade. Looks at that
/// one file's key-value metadata only.
pub fn arrange(conn: &Connection, files: &mut [PathBuf]) -> Result<Unify> {
    let newest = files
        .iter()
        .enumerate()
        .max_by_key(|(_, p)| p.file_name().map(|n| n.to_owned()))
        .map(|(i, _)| i);
    let Some(newest) = newest else {
        return Ok(Unify::ByName);
    };
    let path = files[newest].clone();
    let schema: Option<String> = conn
        .query_row(
            &format!(
                "SELECT decode(value) FROM parquet_kv_metadata({})
                 WHERE decode(key) = 'journal_parquet_schema'",
                quote(&path.to_string_lossy())
            ),
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    if schema.as_deref() == Some(&PARQUET_SCHEMA.to_string()) {
        files.swap(0, newest);
        Ok(Unify::FirstFileTypes)
    } else {
        Ok(Unify::ByName)
    }
}

/// The `SELECT` of the `entries` view, over the `journal` view. Beside each whole entry, the
/// typed columns operators filter on most, so that `WHERE syslog_identifier = …` selects rows
/// before their entries are built (one identifier's hour of a day's archive: 0.35 s → 0.23 s).
pub fn entries_select() -> String {
    format!(
        "SELECT timestamp, hostname, syslog_identifier, systemd_unit, priority, cursor, \
         {WHOLE_ENTRY_SQL} AS entry FROM journal"
    )
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
    /// The archive has no minute file yet (a new installation): there is nothing for the views
    /// to read, and DuckDB refuses a view over a glob that matches nothing.
    NothingYet,
    /// The archive holds more than `CATALOGUE_MAX_FILES` minute files: the catalogue is left
    /// as it is (outdated or absent).
    TooLarge,
}

/// The most minute files the catalogue is written for. Making its views reads every file's
/// footer (`union_by_name`), about 38 KiB of memory a file (measured: 259 MiB of jp-flush's RSS
/// for 5,784 files, 41 MiB without the catalogue), which nothing bounds: a year of one host's
/// minute files would need some 20 GB, at every run until it succeeded. 5,000 keeps jp-flush
/// within its 256 MiB; a DuckDB CLI reading the views of a larger archive would need as much,
/// and `journal-parquet query` reads it without reading every footer.
pub const CATALOGUE_MAX_FILES: usize = 5_000;

/// How many minute files (`HOST/YYYY/MM/DD/*.parquet`) `data_dir` holds, counting no further
/// than `up_to`.
fn count_minute_files(data_dir: &Path, up_to: usize) -> usize {
    fn walk(dir: &Path, depth: usize, found: &mut usize, up_to: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if *found >= up_to {
                return;
            }
            match depth {
                4 => *found += e.file_name().to_string_lossy().ends_with(".parquet") as usize,
                _ if e.path().is_dir() => walk(&e.path(), depth + 1, found, up_to),
                _ => {}
            }
        }
    }
    let mut found = 0;
    walk(data_dir, 0, &mut found, up_to);
    found
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
    if count_minute_files(&data_dir, 1) == 0 {
        return Ok(Catalogue::NothingYet);
    }
    let want = catalogue_definition(&data_dir);
    if path.exists() {
        match stored_definition(&path) {
            Ok(Some(have)) if have == want => return Ok(Catalogue::UpToDate),
            Err(e) if crate::sys::duckdb::says_locked(&e) => return Ok(Catalogue::Busy),
            // Outdated, not ours, or damaged: replaced.
            _ => {}
        }
    }
    if count_minute_files(&data_dir, CATALOGUE_MAX_FILES + 1) > CATALOGUE_MAX_FILES {
        return Ok(Catalogue::TooLarge);
    }
    let tmp = data_dir.join(format!(".{CATALOGUE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(data_dir.join(format!(".{CATALOGUE_FILE}.tmp.wal")));
    let written = (|| -> Result<()> {
        let conn = Connection::open_in_memory_with_flags(crate::sys::duckdb::base_config()?)?;
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
    crate::sys::files::sync_dir(&data_dir)?;
    Ok(Catalogue::Written)
}

/// The definition stored in a catalogue file; None when it has none (not ours).
fn stored_definition(path: &Path) -> Result<Option<String>> {
    let config = crate::sys::duckdb::base_config()?.access_mode(AccessMode::ReadOnly)?;
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
