//! Writing each (host, minute) of the attached segments to its Parquet file: a temporary file,
//! fsync, rename, fsync of the directory, and only then the delete of its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use duckdb::Connection;

use crate::archive::layout::minute_file;
use crate::archive::summary::{self, Counted};
use crate::config::Settings;
use crate::schema::columns::{BUFFER_ONLY_COLUMNS, COLUMNS, PARQUET_SCHEMA};
use crate::sys::duckdb::quote;
use crate::sys::fault;
use crate::sys::files::{make_private_dir, sync_dir};

use super::attach::{Attached, AttachedSegment};
use super::report::Report;
use super::salvage::{existing_file, keep_aside, Existing};

/// The exported columns, each cast to its buffer type, so that every file has the same schema
/// whatever it was merged from. Every column is OPTIONAL in every file, NOT NULL ones included:
/// DuckDB's partitioned COPY (the one-pass write of small minutes, `fresh`) can only write
/// OPTIONAL columns, and Iceberg's `add_files` refuses an OPTIONAL file column for a REQUIRED
/// table column (measured: a table made from a day file refused the one-pass minute files). DuckDB
/// marks a column REQUIRED when the statistics of the data show no NULL, so each is wrapped in a
/// CASE on a volatile condition (never false, never folded away).
pub(super) fn select_list() -> String {
    COLUMNS
        .iter()
        .filter(|(name, _, _)| !BUFFER_ONLY_COLUMNS.contains(name))
        .map(|(name, ty, _)| {
            format!(
                "CASE WHEN random() < 2 THEN CAST(\"{name}\" AS {ty}) ELSE NULL END AS \"{name}\""
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One (host, minute) to write, and the segments holding its rows.
pub(super) struct Minute {
    pub(super) host_dir: String,
    pub(super) minute: i64,
    pub(super) sources: Vec<usize>,
    /// Its rows in the buffer.
    pub(super) rows: u64,
}

/// Writes every minute of the attached segments that starts before `cutoff` (None: all), deletes
/// those rows and removes the segments left empty.
pub fn export(attached: &mut Attached, settings: &Settings, cutoff: Option<i64>) -> Result<Report> {
    let mut report = export_minutes(attached, settings, cutoff)?;
    (report.keep_from, report.rows_left) = attached
        .conn
        .query_row(
            "SELECT epoch_us(min(minute_key)), count(*) FROM journal_logs",
            [],
            |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, u64>(1)?)),
        )
        .context("failed to find the oldest minute left in the buffer")?;
    report.segments_removed = attached.remove_empty()?;
    Ok(report)
}

/// The minutes of every segment that start before `cutoff` (None: all), in time order.
fn list_minutes(attached: &Attached, cutoff: Option<i64>) -> Result<Vec<Minute>> {
    let mut minutes: BTreeMap<(i64, String), (Vec<usize>, u64)> = BTreeMap::new();
    let before = cutoff.map_or(String::new(), |c| {
        format!("WHERE minute_key < make_timestamp({c})")
    });
    for (i, s) in attached.segments.iter().enumerate() {
        let mut st = attached.conn.prepare(&format!(
            "SELECT host_dir, epoch_us(minute_key), count(*) FROM {}.journal_logs {before} \
             GROUP BY ALL",
            s.alias
        ))?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (host_dir, minute, n) = row.with_context(|| {
                format!(
                    "failed to list minutes in {}",
                    attached.buffer.segment_path(s.no).display()
                )
            })?;
            let entry = minutes.entry((minute, host_dir)).or_default();
            entry.0.push(i);
            entry.1 += n;
        }
    }
    Ok(minutes
        .into_iter()
        .map(|((minute, host_dir), (sources, rows))| Minute {
            host_dir,
            minute,
            sources,
            rows,
        })
        .collect())
}

fn export_minutes(attached: &Attached, settings: &Settings, cutoff: Option<i64>) -> Result<Report> {
    let minutes = list_minutes(attached, cutoff)?;
    // Small minutes with no file yet and no row that can repeat go in one pass (`fresh`); a
    // pass that fails leaves what it did not place to the one-minute path, which streams.
    let reread: Vec<bool> = attached.segments.iter().map(|s| s.reread).collect();
    let chosen: Vec<usize> = (0..minutes.len())
        .filter(|&k| {
            let m = &minutes[k];
            m.rows <= super::fresh::MINUTE_ROWS_AT_MOST
                && !m.sources.iter().any(|&i| reread[i])
                && fs::symlink_metadata(minute_file(&settings.data_dir, &m.host_dir, m.minute))
                    .is_err()
        })
        .collect();
    let fresh = super::fresh::export_fresh(&attached.conn, settings, &minutes, &chosen);
    let done: BTreeSet<usize> = fresh.iter().map(|p| p.minute).collect();
    let rest: Vec<usize> = (0..minutes.len()).filter(|k| !done.contains(k)).collect();
    let workers = (settings.flush_threads as usize).clamp(1, rest.len().max(1));
    // The workers share these (a DuckDB connection is not shared: each has its own).
    let segments = &attached.segments[..];
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // What each worker put in place, and its first failure.
    let work = |conn: &Connection| -> (Vec<Placed>, Result<()>) {
        let mut placed = Vec::new();
        loop {
            if failed.load(Ordering::Relaxed) {
                return (placed, Ok(()));
            }
            let Some(&i) = rest.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return (placed, Ok(()));
            };
            let m = &minutes[i];
            let started = Instant::now();
            match export_minute(conn, segments, settings, (i, m)) {
                Ok(p) => {
                    log::debug!(
                        "{}: {} rows in {:?}{}",
                        p.path.display(),
                        p.rows,
                        started.elapsed(),
                        if p.merged {
                            " (merged into the existing file)"
                        } else {
                            ""
                        }
                    );
                    placed.push(p);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return (placed, Err(e));
                }
            }
        }
    };
    let conn = &attached.conn;
    let results = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 1..workers {
            let conn = conn
                .try_clone()
                .context("failed to open another DuckDB connection")?;
            let work = &work;
            handles.push(scope.spawn(move || work(&conn)));
        }
        let mut results = vec![work(conn)];
        for h in handles {
            results.push(
                h.join()
                    .unwrap_or_else(|_| (Vec::new(), Err(anyhow!("an export thread panicked")))),
            );
        }
        Ok::<_, anyhow::Error>(results)
    })?;
    let (placed, outcomes): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    let placed: Vec<Placed> = fresh
        .into_iter()
        .chain(placed.into_iter().flatten())
        .collect();
    // The minutes in place leave the buffer even when another failed: the next run would only
    // merge them again.
    let report = take_from_buffer(attached, settings, &minutes, &placed)?;
    for outcome in outcomes {
        outcome?;
    }
    Ok(report)
}

/// A minute file put in place (renamed, its directory not yet made durable), whose rows are
/// still in the buffer.
pub(super) struct Placed {
    /// Its index in the list of minutes.
    pub(super) minute: usize,
    pub(super) path: PathBuf,
    pub(super) merged: bool,
    /// Rows in the file (a merged file's old ones too; 0: not counted).
    pub(super) rows: usize,
}

/// Makes the minute files put in place durable (one fsync a directory, not one a file), then
/// deletes their rows from the buffer: one DELETE a segment for all of them, since each DELETE
/// is a transaction that waits for the segment's log on disk (a fleet's thousands of quiet
/// minutes paid that once a file). A crash before the DELETE leaves the rows, and the next run
/// merges them into their files without duplicates.
fn take_from_buffer(
    attached: &Attached,
    settings: &Settings,
    minutes: &[Minute],
    placed: &[Placed],
) -> Result<Report> {
    let mut report = Report::default();
    let dirs: BTreeSet<&Path> = placed.iter().filter_map(|p| p.path.parent()).collect();
    for dir in dirs {
        sync_dir(dir)?;
    }
    // Counted from the files, before the rows leave the buffer: a crash in between writes the
    // minutes, and counts them, again.
    let counted: Vec<Counted> = placed
        .iter()
        .map(|p| Counted {
            host_dir: &minutes[p.minute].host_dir,
            minute: minutes[p.minute].minute,
            path: &p.path,
        })
        .collect();
    summary::record(&attached.conn, &settings.state_dir, &counted);
    for (i, segment) in attached.segments.iter().enumerate() {
        let which: Vec<String> = placed
            .iter()
            .map(|p| &minutes[p.minute])
            .filter(|m| m.sources.contains(&i))
            .map(|m| format!("({}, {})", quote(&m.host_dir), m.minute))
            .collect();
        // In chunks, so that one statement stays a reasonable size.
        for chunk in which.chunks(2000) {
            let deleted = attached
                .conn
                .execute(
                    &format!(
                        "DELETE FROM {}.journal_logs WHERE (host_dir, epoch_us(minute_key)) IN \
                         (SELECT * FROM (VALUES {}))",
                        segment.alias,
                        chunk.join(", ")
                    ),
                    [],
                )
                .with_context(|| {
                    format!(
                        "wrote {} minute files but failed to delete their rows from {} (the next \
                         run merges them without duplicates)",
                        placed.len(),
                        attached.buffer.segment_path(segment.no).display()
                    )
                })?;
            report.rows_exported += deleted as u64;
        }
    }
    for p in placed {
        report.files_written += 1;
        report.files_merged += p.merged as usize;
        report.bytes_written += fs::metadata(&p.path).map_or(0, |f| f.len());
    }
    Ok(report)
}

/// Writes one host's minute and puts it in place; its rows stay in the buffer until
/// `take_from_buffer`.
fn export_minute(
    conn: &Connection,
    segments: &[AttachedSegment],
    settings: &Settings,
    (index, m): (usize, &Minute),
) -> Result<Placed> {
    let host_dir = m.host_dir.as_str();
    check_host_dir(host_dir)?;
    let final_path = minute_file(&settings.data_dir, host_dir, m.minute);
    let dir = final_path.parent().expect("a minute file has a directory");
    make_private_dir(dir)?;
    let name = final_path
        .file_name()
        .expect("a minute file has a name")
        .to_string_lossy()
        .into_owned();
    // Not *.parquet, so that readers globbing the tree never see a half-written file.
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);

    let sources: Vec<&AttachedSegment> = m.sources.iter().map(|&i| &segments[i]).collect();
    let which = format!(
        "host_dir = {} AND minute_key = make_timestamp({})",
        quote(host_dir),
        m.minute
    );
    let template = format!("{}.journal_logs", sources[0].alias);
    let existing = existing_file(conn, &final_path, &template)?;
    let query = minute_query(&sources, &which, &final_path, &existing);
    let written = write_file(conn, &query, &tmp, settings);
    if let Existing::Damaged { salvaged, .. } = &existing {
        let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {salvaged}"));
    }
    let written = written?;
    // A damaged file is kept under another name (a second link to it) only now that its
    // replacement is durable: until the rename below, the tree still holds it, and a crash
    // leaves it for the next run to salvage again.
    let aside = match &existing {
        Existing::Damaged { .. } => Some(keep_aside(&final_path)?),
        _ => None,
    };
    fault::point("flush-minute-before-rename")?;
    if let Err(e) = fs::rename(&tmp, &final_path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to put {} in place", final_path.display()));
    }
    if let (Existing::Damaged { kept, why, .. }, Some(aside)) = (&existing, aside) {
        log::warn!(
            "{} is damaged ({why}); kept it as {} and rewrote the minute from the buffer's rows \
             and the {kept} rows of its readable row groups",
            final_path.display(),
            aside.display()
        );
    }
    Ok(Placed {
        minute: index,
        path: final_path,
        merged: !matches!(existing, Existing::Nothing),
        rows: written,
    })
}

/// host_dir comes from layout::host_dir: one segment of [A-Za-z0-9.%@_~-], never . or ..; any
/// other is refused rather than written outside its place.
fn check_host_dir(host_dir: &str) -> Result<()> {
    let safe = !host_dir.is_empty()
        && host_dir != "."
        && host_dir != ".."
        && host_dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%@~-".contains(&b));
    match safe {
        true => Ok(()),
        false => bail!(
            "refusing to write under the host directory {host_dir:?}: not a safe path segment"
        ),
    }
}

/// The rows of one minute file: the buffer's rows of the minute (`which`) from `sources`, and,
/// when the file exists, its rows first.
fn minute_query(
    sources: &[&AttachedSegment],
    which: &str,
    final_path: &Path,
    existing: &Existing,
) -> String {
    let columns = select_list();
    let from_segments: Vec<String> = sources
        .iter()
        .map(|s| {
            format!(
                "SELECT {columns} FROM {}.journal_logs WHERE {which}",
                s.alias
            )
        })
        .collect();
    let from_segments = from_segments.join(" UNION ALL ");
    let old_rows = match existing {
        Existing::Nothing => None,
        Existing::Readable => Some(format!(
            "SELECT {columns} FROM read_parquet({})",
            quote(&final_path.to_string_lossy())
        )),
        Existing::Damaged { salvaged, .. } => Some(format!("SELECT {columns} FROM {salvaged}")),
    };
    // Rows can repeat only where a file is merged again or a segment read the journal again:
    // only then does the minute pay for finding them.
    let reread = sources.iter().any(|s| s.reread);
    // Nothing is sorted: the rows are written as they stream, in the memory of one row group,
    // however many there are. Sorting a minute needed memory in proportion to it (measured: out
    // of memory at 192MB for two 4-million-entry minutes written at once, and for a minute merged
    // into its file for the eighth time after a crash storm).
    // A segment that read the journal again repeats rows of others: one row a cursor.
    let new = match reread {
        true => format!("SELECT DISTINCT ON (cursor) * FROM ({from_segments})"),
        false => from_segments,
    };
    match old_rows {
        // The rows as the collector read them (each source in its journal's order; a minute file
        // holds one host).
        None => new,
        // The file's rows, then the buffer's that it does not hold yet: a row in both (jp-flush
        // stopped between writing the file and deleting the rows) keeps the file's copy. An anti
        // join holds only the file's cursors, and spills beyond the limit.
        Some(old) => format!(
            "SELECT * FROM ({old}) UNION ALL
             SELECT n.* FROM ({new}) n ANTI JOIN (SELECT cursor FROM ({old})) USING (cursor)"
        ),
    }
}

/// The options of every minute file's COPY. No bloom filters: a minute's few hundred rows are
/// read whole anyway, and its filters were 4% of a 226-row file (636 of 16,710 bytes, measured).
pub(super) fn copy_options(settings: &Settings) -> String {
    format!(
        "{}, WRITE_BLOOM_FILTER false",
        copy_options_with(settings, 100_000, &[])
    )
}

/// The COPY options of an archive file: row groups of at most `group_rows` rows (and 32 MB, so
/// that a row group of huge entries stays within the memory limit), the configured compression,
/// and key-value metadata: the schema, and `more`.
pub(super) fn copy_options_with(
    settings: &Settings,
    group_rows: usize,
    more: &[(&str, String)],
) -> String {
    let mut kv = format!("journal_parquet_schema: '{PARQUET_SCHEMA}'");
    for (key, value) in more {
        kv.push_str(&format!(", {key}: {}", quote(value)));
    }
    format!(
        "FORMAT parquet, COMPRESSION {}, ROW_GROUP_SIZE {group_rows}, \
         ROW_GROUP_SIZE_BYTES '32MB', KV_METADATA {{{kv}}}",
        settings.compression.sql()
    )
}

/// Writes the rows of `query` to the temporary file `tmp`, durably and with the archive's
/// mode; on failure, `tmp` is removed.
fn write_file(conn: &Connection, query: &str, tmp: &Path, settings: &Settings) -> Result<usize> {
    let copy = format!(
        "COPY ({query}) TO {} ({})",
        quote(&tmp.to_string_lossy()),
        copy_options(settings)
    );
    let written = fault::point("flush-minute-before-copy")
        .map_err(anyhow::Error::from)
        .and_then(|()| conn.execute(&copy, []).map_err(anyhow::Error::from));
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(e.context(format!("failed to write {}", tmp.display())));
        }
    };
    if let Err(e) = finish_file(tmp, true) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    Ok(rows)
}

/// Gives a file DuckDB wrote the archive's mode (0640: the journal holds secrets) and, with
/// `sync`, puts its content on disk, before it is renamed into place.
pub(super) fn finish_file(file: &Path, sync: bool) -> Result<()> {
    let finished = (|| -> std::io::Result<()> {
        let f = File::open(file)?;
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        match sync {
            true => f.sync_all(),
            false => Ok(()),
        }
    })();
    finished.with_context(|| format!("failed to write {}", file.display()))
}
