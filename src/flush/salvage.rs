//! What stands at a minute's path before it is written: nothing, a file to merge with, or a
//! damaged one whose readable row groups are copied out before it is set aside.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::sys::duckdb::{chain_text, quote};
use crate::sys::files::sync_dir;

use super::export::select_list;

/// What stands at a minute file's path before it is written.
pub(super) enum Existing {
    Nothing,
    /// A Parquet file we can read whole: merged with the new rows.
    Readable,
    /// A file whose content is damaged: the rows of the row groups that could still be read
    /// are copied into the temp table named here (merged like a readable file), and the file is
    /// set aside only once the minute that replaces it is durable.
    Damaged {
        salvaged: String,
        kept: u64,
        why: String,
    },
}

/// Looks at what stands at `path`. A file whose content DuckDB finds invalid has the rows of
/// its readable row groups copied out (it is set aside once its replacement is durable); any
/// other failure to read it (the disk, memory, permissions, open files) is an error, and the
/// file and the rows stay for the next run.
pub(super) fn existing_file(conn: &Connection, path: &Path, template: &str) -> Result<Existing> {
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(e).with_context(|| format!("failed to look at {}", path.display())),
    }
    let left = "left as it is, with the buffer's rows, for the next run";
    // Every byte read by us first: an error of the disk or the file system shows as what it is
    // (EIO, ESTALE, EACCES, EISDIR), never as DuckDB's words about the content.
    crate::sys::files::read_through(path)
        .with_context(|| format!("failed to read {} ({left})", path.display()))?;
    let file = quote(&path.to_string_lossy());
    // Every value of every row: a count alone would read only the footer, and a damaged page
    // would then fail the merge below as if the cause were outside the file.
    let probe = conn
        .execute_batch(&format!(
            "SELECT bit_xor(hash(t)) FROM read_parquet({file}) t"
        ))
        .map_err(anyhow::Error::from);
    let Err(e) = probe else {
        return Ok(Existing::Readable);
    };
    if !crate::sys::duckdb::says_parquet_invalid(&e) {
        return Err(e.context(format!("failed to read {} ({left})", path.display())));
    }
    let salvaged = salvage(conn, path, template)?;
    let kept: u64 = conn.query_row(&format!("SELECT count(*) FROM {salvaged}"), [], |r| {
        r.get(0)
    })?;
    Ok(Existing::Damaged {
        salvaged,
        kept,
        why: chain_text(&e),
    })
}

/// A second name for the damaged file at `path`, `NAME.damaged-UNIXTIME`, made durable: the
/// rename of its replacement then takes only the first name away.
pub(super) fn keep_aside(path: &Path) -> Result<std::path::PathBuf> {
    let aside = crate::sys::files::aside_name(path);
    match fs::hard_link(path, &aside) {
        Ok(()) => {}
        // A run killed after this step, in the same second: the same file, linked already.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to set the damaged {} aside", path.display()))
        }
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(aside)
}

/// Copies the rows of every row group of a damaged file that can still be read into a temp
/// table (with the columns of `template`, a segment's table); returns its name. A file whose
/// footer is gone has none.
fn salvage(conn: &Connection, path: &Path, template: &str) -> Result<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let table = format!("salvaged_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let file = quote(&path.to_string_lossy());
    let columns = select_list();
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE {table} AS SELECT {columns} FROM {template} LIMIT 0"
    ))?;
    let groups = conn
        .prepare(&format!(
            "SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata({file})
             ORDER BY row_group_id"
        ))
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<duckdb::Result<Vec<(i64, i64)>>>()
        })
        .map_err(anyhow::Error::from);
    let groups = match groups {
        Ok(groups) => groups,
        // A footer that does not decode: no row group can be found, and none is kept.
        Err(e) if crate::sys::duckdb::says_parquet_invalid(&e) => Vec::new(),
        // Memory, the disk, open files: not "no row groups". The file stays, and so do the rows.
        Err(e) => {
            return Err(e.context(format!(
                "failed to read the row groups of the damaged {} (left as it is, with the \
                 buffer's rows, for the next run)",
                path.display()
            )))
        }
    };
    let mut first_row = 0;
    for (group, n) in groups {
        let copied = conn.execute_batch(&format!(
            "INSERT INTO {table} SELECT {columns} FROM read_parquet({file}, file_row_number = true)
             WHERE file_row_number >= {first_row} AND file_row_number < {}",
            first_row + n
        ));
        match copied.map_err(anyhow::Error::from) {
            Ok(()) => {}
            Err(e) if crate::sys::duckdb::says_parquet_invalid(&e) => {
                log::warn!(
                    "{}: row group {group} cannot be read: {}",
                    path.display(),
                    chain_text(&e)
                );
            }
            Err(e) => {
                return Err(e.context(format!(
                    "failed to copy row group {group} out of the damaged {} (left as it is, \
                     with the buffer's rows, for the next run)",
                    path.display()
                )))
            }
        }
        first_row += n;
    }
    Ok(table)
}
