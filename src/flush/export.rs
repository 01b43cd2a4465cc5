//! Writing each (host, minute) of the attached segments to its Parquet file: a temporary file,
//! fsync, rename, fsync of the directory, and only then the delete of its rows.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use duckdb::Connection;

use crate::archive::layout::minute_file;
use crate::buffer::Buffer;
use crate::config::Settings;
use crate::schema::columns::{BUFFER_ONLY_COLUMNS, COLUMNS, PARQUET_SCHEMA};
use crate::sys::duckdb::quote;
use crate::sys::fault;
use crate::sys::files::{make_private_dir, sync_dir};

use super::attach::{Attached, AttachedSegment};
use super::report::Report;
use super::salvage::{existing_file, keep_aside, Existing};

/// The exported columns, each cast to its buffer type, so that every file has the same schema
/// whatever it was merged from. DuckDB marks a Parquet column REQUIRED when the statistics of the
/// data show no NULL; a nullable column is wrapped in a CASE on a volatile condition (never false,
/// never folded away) so that it is OPTIONAL in every file, with or without NULLs in that minute.
pub(super) fn select_list() -> String {
    COLUMNS
        .iter()
        .filter(|(name, _, _)| !BUFFER_ONLY_COLUMNS.contains(name))
        .map(|(name, ty, nullable)| {
            let value = format!("CAST(\"{name}\" AS {ty})");
            if *nullable {
                format!("CASE WHEN random() < 2 THEN {value} ELSE NULL END AS \"{name}\"")
            } else {
                format!("{value} AS \"{name}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One (host, minute) to write, and the segments holding its rows.
struct Minute {
    host_dir: String,
    minute: i64,
    sources: Vec<usize>,
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
    let mut minutes: BTreeMap<(i64, String), Vec<usize>> = BTreeMap::new();
    let before = cutoff.map_or(String::new(), |c| {
        format!("WHERE minute_key < make_timestamp({c})")
    });
    for (i, s) in attached.segments.iter().enumerate() {
        let mut st = attached.conn.prepare(&format!(
            "SELECT DISTINCT host_dir, epoch_us(minute_key) FROM {}.journal_logs {before}",
            s.alias
        ))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (host_dir, minute) = row.with_context(|| {
                format!(
                    "failed to list minutes in {}",
                    attached.buffer.segment_path(s.no).display()
                )
            })?;
            minutes.entry((minute, host_dir)).or_default().push(i);
        }
    }
    Ok(minutes
        .into_iter()
        .map(|((minute, host_dir), sources)| Minute {
            host_dir,
            minute,
            sources,
        })
        .collect())
}

fn export_minutes(attached: &Attached, settings: &Settings, cutoff: Option<i64>) -> Result<Report> {
    let minutes = list_minutes(attached, cutoff)?;
    // Minute files are independent (each written, renamed and its rows deleted on its own), so
    // `flush_threads` of them are written at once, each on a connection of its own (DuckDB runs
    // a query on one thread here): one core a file, with the memory of one row group each.
    let workers = (settings.flush_threads as usize).clamp(1, minutes.len().max(1));
    // The workers share these (a DuckDB connection is not shared: each has its own).
    let (segments, buffer) = (&attached.segments[..], &attached.buffer);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = |conn: &Connection| -> Result<Report> {
        let mut report = Report::default();
        loop {
            if failed.load(Ordering::Relaxed) {
                return Ok(report);
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(m) = minutes.get(i) else {
                return Ok(report);
            };
            let started = Instant::now();
            let exported = export_minute(conn, segments, buffer, settings, m);
            let Ok((rows, merged)) = exported else {
                failed.store(true, Ordering::Relaxed);
                return exported.map(|_| report);
            };
            report.files_written += 1;
            report.files_merged += merged as usize;
            report.rows_exported += rows;
            report.bytes_written +=
                std::fs::metadata(minute_file(&settings.data_dir, &m.host_dir, m.minute))
                    .map_or(0, |f| f.len());
            log::debug!(
                "{}: {rows} entries in {:?}{}",
                minute_file(&settings.data_dir, &m.host_dir, m.minute).display(),
                started.elapsed(),
                if merged {
                    " (merged into the existing file)"
                } else {
                    ""
                }
            );
        }
    };
    let conn = &attached.conn;
    let results: Vec<Result<Report>> = std::thread::scope(|scope| {
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
                    .unwrap_or_else(|_| bail!("an export thread panicked")),
            );
        }
        Ok::<_, anyhow::Error>(results)
    })?;
    let mut report = Report::default();
    for r in results {
        report.add(r?);
    }
    Ok(report)
}

/// Writes one host's minute; returns the rows taken from the buffer and whether an existing
/// file was merged.
fn export_minute(
    conn: &Connection,
    segments: &[AttachedSegment],
    buffer: &Buffer,
    settings: &Settings,
    m: &Minute,
) -> Result<(u64, bool)> {
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
    written?;
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
    sync_dir(dir)?;
    if let (Existing::Damaged { kept, why, .. }, Some(aside)) = (&existing, aside) {
        log::warn!(
            "{} is damaged ({why}); kept it as {} and rewrote the minute from the buffer's rows \
             and the {kept} rows of its readable row groups",
            final_path.display(),
            aside.display()
        );
    }
    // One DELETE a segment: a DuckDB transaction writes to one attached database at most.
    let mut rows = 0;
    for s in &sources {
        rows += conn
            .execute(
                &format!("DELETE FROM {}.journal_logs WHERE {which}", s.alias),
                [],
            )
            .with_context(|| {
                format!(
                    "wrote {} but failed to delete its rows from {} (the next run merges them \
                     without duplicates)",
                    final_path.display(),
                    buffer.segment_path(s.no).display()
                )
            })?;
    }
    Ok((rows as u64, !matches!(existing, Existing::Nothing)))
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

/// Writes the rows of `query` to the temporary file `tmp`, durably and with the archive's
/// mode; on failure, `tmp` is removed.
fn write_file(conn: &Connection, query: &str, tmp: &Path, settings: &Settings) -> Result<()> {
    let copy = format!(
        "COPY ({query}) TO {} (FORMAT parquet, COMPRESSION {}, ROW_GROUP_SIZE 100000, ROW_GROUP_SIZE_BYTES '32MB', \
         KV_METADATA {{journal_parquet_schema: '{PARQUET_SCHEMA}'}})",
        quote(&tmp.to_string_lossy()),
        settings.compression.sql()
    );
    let written = fault::point("flush-minute-before-copy")
        .map_err(anyhow::Error::from)
        .and_then(|()| conn.execute(&copy, []).map_err(anyhow::Error::from));
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e.context(format!("failed to write {}", tmp.display())));
    }
    let durable = (|| -> std::io::Result<()> {
        let f = File::open(tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        f.sync_all()
    })();
    if let Err(e) = durable {
        let _ = fs::remove_file(tmp);
        return Err(e).with_context(|| format!("failed to write {}", tmp.display()));
    }
    Ok(())
}
