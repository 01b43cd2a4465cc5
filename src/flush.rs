//! jp-flush: completed minutes → one Parquet file per host and minute, atomically, exactly once.
//!
//! For each (host, minute) that ends before the collector's watermark, the rows are written to a
//! temporary file beside the final one (a name that does not end in `.parquet`), fsynced, renamed
//! into place, the directory fsynced, and only then deleted from the buffer. A crash between the
//! rename and the delete leaves rows that are already in the file: the next run merges them into
//! the file again, dropping duplicates by `cursor`, so every entry ends up in exactly one file once.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use duckdb::params;

use crate::buffer::Buffer;
use crate::config::{FlushArgs, Settings};
use crate::layout::{make_private_dir, minute_file, sync_dir};
use crate::row::{BUFFER_ONLY_COLUMNS, COLUMNS};
use crate::{handoff, service};

const MINUTE_USEC: i64 = 60_000_000;

/// What one flush did.
#[derive(Debug, Default)]
pub struct Report {
    pub files_written: usize,
    pub files_merged: usize,
    pub rows_exported: u64,
}

/// Parquet compression, from the config key `compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
    None,
}

impl Compression {
    pub fn parse(text: &str) -> Option<Compression> {
        match text {
            "zstd" => Some(Compression::Zstd),
            "snappy" => Some(Compression::Snappy),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The name the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::None => "none",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::None => "uncompressed",
        }
    }
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The exported columns, each cast to its buffer type, so that every file has the same schema
/// whatever it was merged from. DuckDB marks a Parquet column REQUIRED when the statistics of the
/// data show no NULL; a nullable column is wrapped in a CASE on a volatile condition (never false,
/// never folded away) so that it is OPTIONAL in every file, with or without NULLs in that minute.
fn select_list() -> String {
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

/// Writes every completed minute (all minutes with `all`) and deletes those rows.
/// Runs with DuckDB tuned for exporting (its own memory limit: sorting and buffering a row group
/// of a busy minute needs more than appending), and puts the buffer's settings back
/// afterwards, so that a collector flushing by itself appends as before.
pub fn export(buffer: &Buffer, settings: &Settings, all: bool) -> Result<Report> {
    buffer.tune(&settings.flush_memory_limit)?;
    let report = export_minutes(buffer, settings, all);
    buffer.tune(&settings.duckdb_memory_limit)?;
    report
}

fn export_minutes(buffer: &Buffer, settings: &Settings, all: bool) -> Result<Report> {
    let conn = buffer.connection();
    let cutoff = if all {
        i64::MAX
    } else {
        match buffer.collector_state()?.and_then(|s| s.watermark_usec) {
            // Minutes that end at or before the watermark are complete.
            Some(w) => w - w.rem_euclid(MINUTE_USEC),
            None => return Ok(Report::default()),
        }
    };
    let groups: Vec<(String, i64)> = {
        let mut st = conn.prepare(
            "SELECT host_dir, epoch_us(minute_key) AS m FROM journal_logs
             WHERE epoch_us(minute_key) < ? GROUP BY ALL ORDER BY m, host_dir",
        )?;
        let rows = st.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<duckdb::Result<_>>()
            .with_context(|| format!("failed to list minutes in {}", buffer.path().display()))?
    };
    // Minute files are independent (each written, renamed and its rows deleted on its own), so
    // `flush_threads` of them are written at once, each on a connection of its own (DuckDB runs
    // a query on one thread here): one core a file, with the memory of one row group each.
    let buffer_path = buffer.path();
    let workers = (settings.flush_threads as usize).clamp(1, groups.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = |conn: &duckdb::Connection| -> Result<Report> {
        let mut report = Report::default();
        loop {
            if failed.load(Ordering::Relaxed) {
                return Ok(report);
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((host_dir, minute)) = groups.get(i) else {
                return Ok(report);
            };
            let started = Instant::now();
            let exported = export_minute(conn, buffer_path, settings, host_dir, *minute);
            let Ok((rows, merged)) = exported else {
                failed.store(true, Ordering::Relaxed);
                return exported.map(|_| report);
            };
            report.files_written += 1;
            report.files_merged += merged as usize;
            report.rows_exported += rows;
            log::debug!(
                "{}: {rows} entries in {:?}{}",
                minute_file(&settings.data_dir, host_dir, *minute).display(),
                started.elapsed(),
                if merged {
                    " (merged into the existing file)"
                } else {
                    ""
                }
            );
        }
    };
    let results: Vec<Result<Report>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 1..workers {
            let conn = conn
                .try_clone()
                .with_context(|| format!("failed to connect to {}", buffer_path.display()))?;
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
        let r = r?;
        report.files_written += r.files_written;
        report.files_merged += r.files_merged;
        report.rows_exported += r.rows_exported;
    }
    Ok(report)
}

/// Writes one host's minute; returns the rows taken from the buffer and whether an existing
/// file was merged.
fn export_minute(
    conn: &duckdb::Connection,
    buffer_path: &Path,
    settings: &Settings,
    host_dir: &str,
    minute: i64,
) -> Result<(u64, bool)> {
    // host_dir comes from layout::host_dir: one segment of [A-Za-z0-9.%_~-], never . or ..
    if host_dir.is_empty()
        || host_dir == "."
        || host_dir == ".."
        || !host_dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%~-".contains(&b))
    {
        bail!("refusing to write under the host directory {host_dir:?}: not a safe path segment");
    }
    let final_path = minute_file(&settings.data_dir, host_dir, minute);
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

    let columns = select_list();
    let from_buffer = format!(
        "SELECT {columns} FROM journal_logs WHERE host_dir = {} AND epoch_us(minute_key) = {minute}",
        quote(host_dir)
    );
    let existing = final_path.exists() && readable_parquet(conn, &final_path)?;
    let query = if existing {
        // Old rows first, so that a row both in the file and in the buffer keeps the file's copy.
        format!(
            "SELECT * EXCLUDE (src) FROM (
                 SELECT *, 0 AS src FROM (SELECT {columns} FROM read_parquet({}))
                 UNION ALL
                 SELECT *, 1 AS src FROM ({from_buffer}))
             QUALIFY row_number() OVER (PARTITION BY cursor ORDER BY src) = 1
             ORDER BY timestamp, cursor",
            quote(&final_path.to_string_lossy())
        )
    } else {
        format!("{from_buffer} ORDER BY timestamp, cursor")
    };
    let copy = format!(
        "COPY ({query}) TO {} (FORMAT parquet, COMPRESSION {}, ROW_GROUP_SIZE 100000, ROW_GROUP_SIZE_BYTES '64MB')",
        quote(&tmp.to_string_lossy()),
        settings.compression.sql()
    );
    let written = conn.execute(&copy, []).map_err(anyhow::Error::from);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("failed to write {}", tmp.display())));
    }
    let durable = (|| -> std::io::Result<()> {
        let f = File::open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        f.sync_all()?;
        fs::rename(&tmp, &final_path)
    })();
    if let Err(e) = durable {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to put {} in place", final_path.display()));
    }
    sync_dir(dir)?;
    let rows = conn
        .execute(
            "DELETE FROM journal_logs WHERE host_dir = ? AND epoch_us(minute_key) = ?",
            params![host_dir, minute],
        )
        .with_context(|| {
            format!(
                "wrote {} but failed to delete its rows from {} (the next run merges them \
                 without duplicates)",
                final_path.display(),
                buffer_path.display()
            )
        })?;
    Ok((rows as u64, existing))
}

/// Whether an existing minute file can be read back; a damaged one is set aside under a name that
/// says so (`….parquet.damaged-UNIXTIME`), and the minute is rewritten from the buffer.
fn readable_parquet(conn: &duckdb::Connection, path: &Path) -> Result<bool> {
    let probe = format!(
        "SELECT count(*) FROM read_parquet({})",
        quote(&path.to_string_lossy())
    );
    match conn.query_row(&probe, [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(true),
        Err(e) => {
            let aside = crate::layout::set_aside(path)?;
            log::warn!(
                "{} could not be read ({e}); kept it as {} and rewrote the minute from the \
                 buffer's rows",
                path.display(),
                aside.display()
            );
            Ok(false)
        }
    }
}

pub fn run(args: &FlushArgs) -> Result<()> {
    let settings = Settings::resolve(&args.common, None)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    service::init_logging(settings.log_level, "jp-flush");
    let path = settings.buffer_path();
    if !path.exists() {
        log::debug!("nothing to flush: there is no buffer at {}", path.display());
        return Ok(());
    }
    let started = Instant::now();
    let mut lease = handoff::acquire(&settings)?;
    let waited = lease.waited;
    let result = export(lease.buffer(), &settings, args.all);
    // Hand the buffer back whatever happened: the rows of a failed minute stay for the next run.
    let finished = lease.finish();
    let report = result?;
    finished?;
    log::debug!(
        "got the buffer in {:.1} ms; wrote {} files ({} merged), {} entries, in {:.1} ms",
        waited.as_secs_f64() * 1e3,
        report.files_written,
        report.files_merged,
        report.rows_exported,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
