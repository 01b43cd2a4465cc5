//! Compaction: each host's complete days older than `compact_after` become one day file
//! (`YYYYMMDD.parquet`, or hour files `YYYYMMDD-HH.parquet` for a day of more than
//! `compact_day_max_rows` rows), swapped in for the day's minute files in one atomic step.
//!
//! jp-flush holds the flush lease throughout, so no minute file is written meanwhile. For the day
//! `DATA/HOST/YYYY/MM/DD` it writes the day's rows, sorted by `timestamp`, into a new directory
//! `DATA/.jp-compact/YYYYMMDD-HOST`, fsyncs it, and exchanges the two directories with
//! `renameat2(RENAME_EXCHANGE)`: up to that instant a reader listing the day finds its minute
//! files, from then on the day file; never both, never neither. The replaced directory, now under
//! `.jp-compact/`, is deleted. A kill at any step leaves the old day in place (the new one
//! half-built under `.jp-compact/`) or the new one (the old one under `.jp-compact/`): whatever
//! stands under `.jp-compact/` is never the archive, and the next run deletes it first.
//! `.jp-compact/` is hidden and off the archive's depth, so a reader of `DATA/*/*/*/*/*.parquet`,
//! Spark, pyarrow and `journal-parquet query` never see it.
//!
//! Nothing is lost on the way: the rows written must number the rows read, or the new directory
//! is dropped and the day stays as it was. Files set aside as damaged, and any file that is not
//! the archive's, are hard-linked into the new day, so they stay where the admin left them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use duckdb::Connection;

use crate::archive::layout::{
    compacted_name, day_usec, numbered, span_of, Span, COMPACT_WORK_DIR, DAY_USEC, HOUR_USEC,
    MINUTE_USEC,
};
use crate::config::Settings;
use crate::sys::duckdb::quote;
use crate::sys::fault;
use crate::sys::files::{exchange, make_private_dir, sync_dir, write_atomically};

use super::export::{copy_options_with, finish_file, select_list};

/// How long a timer run compacts: it starts no new day after this, so that the run ends well
/// within its minute (a day of a ~3 entries/s host takes about a second).
pub const RUN_BUDGET: Duration = Duration::from_secs(20);

/// Row groups of a day or hour file: DuckDB's own row group size, which its guidance and the
/// engines' (100k-1M rows a group) agree with.
const GROUP_ROWS: usize = 122_880;

/// The state directory's record of compacted days the upload must make equal in the bucket
/// (`packaging/jp-upload`): one file a compaction, holding `HOST/YYYY/MM/DD`.
pub const UPLOAD_COMPACTED_DIR: &str = "upload-compacted";

/// How much compaction a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Every day due (`jp-flush --compact`).
    All,
    /// Days started within `RUN_BUDGET` (each timer run).
    Bounded,
}

/// What a run's compaction did.
#[derive(Debug, Default)]
pub struct Compacted {
    pub days: usize,
    /// The minute (and earlier day or hour) files the new files replaced.
    pub files_replaced: usize,
    pub rows: u64,
    /// Days due but left for the next run (the budget ran out).
    pub pending: usize,
}

/// A host's day to compact.
struct Day {
    host_dir: String,
    start_usec: i64,
    dir: PathBuf,
}

/// Deletes what a killed compaction left under `DATA/.jp-compact/`: a new day not swapped in yet,
/// or an old one swapped out (see the module's comment). Run under the lease, before any other
/// work, whether compaction is on or not.
pub fn clear_work_dir(data_dir: &Path) -> Result<()> {
    let work = data_dir.join(COMPACT_WORK_DIR);
    let entries = match fs::read_dir(&work) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", work.display())),
    };
    for e in entries {
        let path = e
            .with_context(|| format!("failed to list {}", work.display()))?
            .path();
        fs::remove_dir_all(&path).with_context(|| {
            format!(
                "failed to delete {}, left by an interrupted compaction",
                path.display()
            )
        })?;
        log::info!(
            "deleted {}, left by an interrupted compaction",
            path.display()
        );
    }
    Ok(())
}

/// Compacts the days due: every host's days that ended `compact_after` ago, and before
/// `keep_from` (the oldest minute with rows still in the buffer; None: none), oldest first.
pub fn compact(settings: &Settings, budget: Budget, keep_from: Option<i64>) -> Result<Compacted> {
    let mut done = Compacted::default();
    let Some(after) = settings.compact_after else {
        return Ok(done);
    };
    let now = chrono::Utc::now().timestamp_micros();
    let due_before = (now - i64::try_from(after.as_micros()).unwrap_or(i64::MAX))
        .min(keep_from.unwrap_or(i64::MAX));
    let days = days_due(&settings.data_dir, due_before)?;
    if days.is_empty() {
        return Ok(done);
    }
    let conn = super::attach::flush_duckdb(settings)?;
    let started = Instant::now();
    for (i, day) in days.iter().enumerate() {
        if budget == Budget::Bounded && started.elapsed() > RUN_BUDGET {
            done.pending = days.len() - i;
            log::info!(
                "compacted {} days in {:.0} s; {} more are due, left for the next runs",
                done.days,
                started.elapsed().as_secs_f64(),
                done.pending
            );
            break;
        }
        let (replaced, rows) = compact_day(&conn, settings, day)?;
        done.days += 1;
        done.files_replaced += replaced;
        done.rows += rows;
    }
    // Empty now: gone, so that the tree shows nothing of the work done.
    let _ = fs::remove_dir(settings.data_dir.join(COMPACT_WORK_DIR));
    Ok(done)
}

/// The days under `data_dir` that end at or before `due_before` and still hold a minute file,
/// oldest first. Names are read, no file is opened.
fn days_due(data_dir: &Path, due_before: i64) -> Result<Vec<Day>> {
    let mut days = Vec::new();
    let listing = match fs::read_dir(data_dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(days),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", data_dir.display())),
    };
    for e in listing {
        let e = e.with_context(|| format!("failed to list {}", data_dir.display()))?;
        let host_dir = e.file_name().to_string_lossy().into_owned();
        if host_dir.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        for (y, ydir) in numbered(&e.path(), 4)? {
            for (m, mdir) in numbered(&ydir, 2)? {
                for (d, ddir) in numbered(&mdir, 2)? {
                    let Some(start_usec) = day_usec(y as i32, m, d) else {
                        continue;
                    };
                    if start_usec + DAY_USEC <= due_before && holds_minutes(&ddir)? {
                        days.push(Day {
                            host_dir: host_dir.clone(),
                            start_usec,
                            dir: ddir,
                        });
                    }
                }
            }
        }
    }
    days.sort_by(|a, b| (a.start_usec, &a.host_dir).cmp(&(b.start_usec, &b.host_dir)));
    Ok(days)
}

fn holds_minutes(dir: &Path) -> Result<bool> {
    for e in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let e = e.with_context(|| format!("failed to list {}", dir.display()))?;
        let span = e.file_name().to_str().and_then(span_of);
        if span.is_some_and(|s| s.len_usec == MINUTE_USEC) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What a day directory holds: its archive files (minute, hour, day) and the others.
struct Contents {
    archive: Vec<(Span, PathBuf)>,
    /// Set aside as damaged, or not ours: carried into the new day. A `.NAME.tmp` a killed
    /// flush left is not.
    others: Vec<PathBuf>,
}

fn contents(day: &Day) -> Result<Contents> {
    let mut c = Contents {
        archive: Vec::new(),
        others: Vec::new(),
    };
    let dir = &day.dir;
    for e in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let e = e.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = e.file_name();
        let text = name.to_string_lossy();
        let span = span_of(&text);
        match span {
            Some(span)
                if (day.start_usec..day.start_usec + DAY_USEC).contains(&span.start_usec) =>
            {
                c.archive.push((span, e.path()))
            }
            _ if text.starts_with('.') && text.ends_with(".tmp") => {}
            _ => c.others.push(e.path()),
        }
    }
    c.archive.sort();
    Ok(c)
}

/// Compacts one day; returns the files replaced and the rows written.
fn compact_day(conn: &Connection, settings: &Settings, day: &Day) -> Result<(usize, u64)> {
    let started = Instant::now();
    let contents = contents(day)?;
    let date = chrono::DateTime::from_timestamp_micros(day.start_usec)
        .unwrap_or_default()
        .format("%Y%m%d");
    let work = settings
        .data_dir
        .join(COMPACT_WORK_DIR)
        .join(format!("{date}-{}", day.host_dir));
    if work.exists() {
        fs::remove_dir_all(&work)
            .with_context(|| format!("failed to delete {}", work.display()))?;
    }
    make_private_dir(&work)?;
    let built = build(conn, settings, day, &contents, &work);
    let rows = match built {
        Ok(rows) => rows,
        Err(e) => {
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    record_for_upload(settings, day)?;
    fault::point("compact-before-exchange")?;
    exchange(&day.dir, &work)?;
    fault::point("compact-after-exchange")?;
    sync_dir(day.dir.parent().unwrap_or(&settings.data_dir))?;
    sync_dir(work.parent().unwrap_or(&settings.data_dir))?;
    fs::remove_dir_all(&work).with_context(|| {
        format!(
            "failed to delete {}, the minute files a day file replaced",
            work.display()
        )
    })?;
    log::debug!(
        "compacted {} ({} files, {rows} entries) in {:.1} s",
        day.dir.display(),
        contents.archive.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((contents.archive.len(), rows))
}

/// Writes the new day into `work`: its files, durable, and the others linked. Returns the rows.
fn build(
    conn: &Connection,
    settings: &Settings,
    day: &Day,
    contents: &Contents,
    work: &Path,
) -> Result<u64> {
    let mut files: Vec<PathBuf> = contents.archive.iter().map(|(_, p)| p.clone()).collect();
    // A schema-3 file first (the newest, as `journal-parquet query` does): DuckDB then takes its
    // types and casts the other files' as it reads each, one footer at a time; otherwise it
    // unifies them by name, reading every footer first (some 55 MB for 1,440 files). The select
    // list casts every column to schema 3 either way.
    let unify = crate::archive::views::arrange(conn, &mut files)?;
    let list: Vec<String> = files.iter().map(|p| quote(&p.to_string_lossy())).collect();
    let by_name = match unify {
        crate::archive::views::Unify::ByName => ", union_by_name = true",
        crate::archive::views::Unify::FirstFileTypes => "",
    };
    let source = format!("read_parquet([{}]{by_name})", list.join(", "));
    let rows_in: u64 = conn
        .query_row(&format!("SELECT count(*) FROM {source}"), [], |r| r.get(0))
        .with_context(|| format!("failed to read the files of {}", day.dir.display()))?;
    let minutes = minutes_held(conn, &source, day)?;
    let spans: Vec<Span> = match rows_in > settings.compact_day_max_rows {
        false => vec![Span {
            start_usec: day.start_usec,
            len_usec: DAY_USEC,
        }],
        true => {
            let mut hours: Vec<i64> = minutes
                .iter()
                .map(|m| m - m.rem_euclid(HOUR_USEC))
                .collect();
            hours.dedup();
            hours
                .into_iter()
                .map(|h| Span {
                    start_usec: h,
                    len_usec: HOUR_USEC,
                })
                .collect()
        }
    };
    let columns = select_list();
    let mut rows_out = 0u64;
    for span in spans {
        let held: Vec<String> = minutes
            .iter()
            .filter(|m| (span.start_usec..span.end_usec()).contains(m))
            .map(|m| {
                chrono::DateTime::from_timestamp_micros(*m)
                    .unwrap_or_default()
                    .format("%H%M")
                    .to_string()
            })
            .collect();
        let file = work.join(compacted_name(span));
        // Every row whose minute is in the span; the day file takes them all, whatever their
        // timestamp says, and the count below holds it to that.
        let filter = match span.len_usec {
            DAY_USEC => String::new(),
            _ => format!(
                "WHERE timestamp >= make_timestamp({}) AND timestamp < make_timestamp({})",
                span.start_usec,
                span.end_usec()
            ),
        };
        let options = copy_options_with(
            settings,
            GROUP_ROWS,
            &[("journal_parquet_minutes", held.join(","))],
        );
        let written = conn
            .execute(
                &format!(
                    "COPY (SELECT {columns} FROM {source} {filter} ORDER BY timestamp) \
                     TO {} ({options})",
                    quote(&file.to_string_lossy())
                ),
                [],
            )
            .with_context(|| format!("failed to write {}", file.display()))?;
        finish_file(&file, true)?;
        fault::point("compact-file-written")?;
        rows_out += written as u64;
    }
    if rows_out != rows_in {
        bail!(
            "compacting {} wrote {rows_out} entries of its {rows_in}: left as it is",
            day.dir.display()
        );
    }
    for other in &contents.others {
        let to = work.join(other.file_name().unwrap_or_default());
        fs::hard_link(other, &to).with_context(|| {
            format!(
                "failed to keep {} in the compacted day ({})",
                other.display(),
                to.display()
            )
        })?;
    }
    sync_dir(work)?;
    Ok(rows_in)
}

/// The minutes (µs) that hold rows, in order.
fn minutes_held(conn: &Connection, source: &str, day: &Day) -> Result<Vec<i64>> {
    let mut st = conn.prepare(&format!(
        "SELECT DISTINCT epoch_us(time_bucket(INTERVAL 1 MINUTE, timestamp)) AS m \
         FROM {source} ORDER BY m"
    ))?;
    let minutes = st
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<duckdb::Result<Vec<i64>>>()
        .with_context(|| format!("failed to read the minutes of {}", day.dir.display()))?;
    Ok(minutes)
}

/// With the upload configured (it left `upload.enabled`), records the day for `jp-upload`, which
/// then makes the bucket's copy of the day equal to the local one (removing the minute files the
/// day file replaced there). Recorded before the swap: a day recorded and not swapped is merely
/// copied again.
fn record_for_upload(settings: &Settings, day: &Day) -> Result<()> {
    if !settings.state_dir.join(super::UPLOAD_ENABLED).exists() {
        return Ok(());
    }
    let dir = settings.state_dir.join(UPLOAD_COMPACTED_DIR);
    make_private_dir(&dir)?;
    let relative = day
        .dir
        .strip_prefix(&settings.data_dir)
        .unwrap_or(&day.dir)
        .to_string_lossy()
        .into_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{stamp}-{}", relative.replace('/', "_"));
    write_atomically(&dir.join(name), format!("{relative}\n").as_bytes(), 0o640)
}
