//! The summary: entries and message bytes per minute × host × unit × identifier × priority, kept
//! by jp-flush in `STATE/summary.duckdb` (table `journal_minutes`) as it writes each minute, so
//! that charts never scan the archive's rows.
//!
//! Each minute's rows are counted again from the minute file just put in place (a merge makes the
//! file hold more than the rows the buffer gave), and replace whatever the summary held for that
//! host and minute: a minute written twice (a crash between the file and the buffer's delete) is
//! never counted twice. Compaction moves rows, not minutes: the summary stays. Retention forgets
//! the minutes of the files it deletes. The summary is a convenience beside the archive: a
//! failure to write it is logged and marked (`summary.stale`, which the web console shows), never
//! a failed flush; `jp-flush --rebuild-summary` counts the whole archive again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use duckdb::{AccessMode, Config, Connection};
use serde_json::{json, Value};

use crate::archive::files::{archive_files, Scope};
use crate::archive::layout::MINUTE_USEC;
use crate::config::Settings;
use crate::sys::duckdb::quote;

pub const SUMMARY_FILE: &str = "summary.duckdb";
/// Left in the state directory when the summary could not be brought up to date.
pub const STALE_FILE: &str = "summary.stale";

const DDL: &str = "CREATE TABLE IF NOT EXISTS summary.journal_minutes (
    minute TIMESTAMP NOT NULL, host VARCHAR NOT NULL, unit VARCHAR, identifier VARCHAR,
    priority INTEGER, entries BIGINT NOT NULL, bytes BIGINT NOT NULL)";

/// Runs `open` until it succeeds, 100 ms apart, `tries` times at most: the summary is one
/// writer's or several readers' at a time (DuckDB's lock on the file), each for a moment.
fn retried<T>(tries: u32, mut open: impl FnMut() -> duckdb::Result<T>) -> duckdb::Result<T> {
    let mut left = tries;
    loop {
        match open() {
            Err(_) if left > 1 => {
                left -= 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// One minute file to count: its host directory, minute (µs) and path.
pub struct Counted<'a> {
    pub host_dir: &'a str,
    pub minute: i64,
    pub path: &'a Path,
}

/// Attaches the summary to `conn` as `summary`, waiting a little for a reader (the web console
/// opens it for a moment at a time).
fn attach(conn: &Connection, state_dir: &Path) -> Result<()> {
    let path = state_dir.join(SUMMARY_FILE);
    retried(20, || {
        conn.execute_batch(&format!(
            "ATTACH {} AS summary",
            quote(&path.to_string_lossy())
        ))
    })
    .with_context(|| format!("failed to open the summary {}", path.display()))?;
    conn.execute_batch(DDL)
        .with_context(|| format!("failed to create the summary in {}", path.display()))
}

/// Counts the minutes of `files` again and puts them in the summary. Never fails its caller:
/// see the module's comment.
pub fn record(conn: &Connection, state_dir: &Path, files: &[Counted]) {
    if files.is_empty() {
        return;
    }
    let done = attach(conn, state_dir).and_then(|()| {
        let r = replace(conn, files);
        let _ = conn.execute_batch("DETACH summary");
        r
    });
    settle(state_dir, done);
}

/// Logs a failure and marks the summary stale, or clears the mark.
fn settle(state_dir: &Path, done: Result<()>) {
    let stale = state_dir.join(STALE_FILE);
    match done {
        Ok(()) => {}
        Err(e) => {
            log::warn!(
                "{}: the summary (the web console's charts) misses some minutes until \
                 `jp-flush --rebuild-summary`",
                crate::sys::duckdb::chain_text(&e)
            );
            let _ = crate::sys::files::write_atomically(&stale, b"1\n", 0o640);
        }
    }
}

fn replace(conn: &Connection, files: &[Counted]) -> Result<()> {
    conn.execute_batch(
        "BEGIN; CREATE OR REPLACE TEMP TABLE jp_counted (file VARCHAR, host VARCHAR, minute TIMESTAMP)",
    )?;
    let work = (|| -> Result<()> {
        for chunk in files.chunks(2000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|f| {
                    format!(
                        "({}, {}, make_timestamp({}))",
                        quote(&f.path.to_string_lossy()),
                        quote(f.host_dir),
                        f.minute
                    )
                })
                .collect();
            conn.execute_batch(&format!(
                "INSERT INTO jp_counted VALUES {}",
                values.join(", ")
            ))?;
            let list: Vec<String> = chunk
                .iter()
                .map(|f| quote(&f.path.to_string_lossy()))
                .collect();
            conn.execute_batch(&format!(
                "DELETE FROM summary.journal_minutes WHERE (host, minute) IN \
                   (SELECT host, minute FROM jp_counted);
                 INSERT INTO summary.journal_minutes
                   SELECT c.minute, c.host, r.systemd_unit, r.syslog_identifier, r.priority,
                          count(*), coalesce(sum(strlen(r.message)), 0)
                   FROM read_parquet([{}], filename = true) r JOIN jp_counted c ON r.filename = c.file
                   GROUP BY ALL;
                 DELETE FROM jp_counted;",
                list.join(", ")
            ))?;
        }
        Ok(())
    })();
    match work {
        Ok(()) => conn
            .execute_batch("COMMIT; DROP TABLE jp_counted")
            .context("failed to commit the summary"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e.context("failed to count the minutes written into the summary"))
        }
    }
}

/// Forgets the minutes of the files retention deleted: (host directory, first µs, end µs).
pub fn forget(state_dir: &Path, spans: &[(String, i64, i64)]) {
    if spans.is_empty() || !state_dir.join(SUMMARY_FILE).exists() {
        return;
    }
    let done = (|| -> Result<()> {
        let conn = Connection::open_in_memory()?;
        attach(&conn, state_dir)?;
        conn.execute_batch("BEGIN")?;
        for (host, start, end) in spans {
            conn.execute(
                "DELETE FROM summary.journal_minutes WHERE host = ? \
                 AND minute >= make_timestamp(?) AND minute < make_timestamp(?)",
                duckdb::params![host, start, end],
            )?;
        }
        conn.execute_batch("COMMIT; DETACH summary")?;
        Ok(())
    })();
    settle(
        state_dir,
        done.context("failed to forget the minutes retention deleted"),
    );
}

/// Counts the whole archive again into a new summary, which then replaces the old one
/// (`jp-flush --rebuild-summary`). Returns the minutes counted.
pub fn rebuild(settings: &Settings) -> Result<u64> {
    let new = settings.state_dir.join(format!("{SUMMARY_FILE}.new"));
    let _ = std::fs::remove_file(&new);
    let built = build_anew(settings, &new);
    if built.is_err() {
        let _ = std::fs::remove_file(&new);
    }
    built.context("failed to count the archive into a new summary")
}

fn build_anew(settings: &Settings, new: &Path) -> Result<u64> {
    let state = &settings.state_dir;
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(&format!(
        "ATTACH {} AS summary",
        quote(&new.to_string_lossy())
    ))?;
    conn.execute_batch(DDL)?;
    let mut minutes = 0u64;
    for (host, files) in archive_by_host(&settings.data_dir)? {
        for chunk in files.chunks(2000) {
            let list: Vec<String> = chunk.iter().map(|f| quote(&f.to_string_lossy())).collect();
            let n = conn.execute(
                &format!(
                    "INSERT INTO summary.journal_minutes
                       SELECT time_bucket(INTERVAL 1 MINUTE, timestamp), {}, systemd_unit,
                              syslog_identifier, priority, count(*),
                              coalesce(sum(strlen(message)), 0)
                       FROM read_parquet([{}], union_by_name = true) GROUP BY ALL",
                    quote(&host),
                    list.join(", ")
                ),
                [],
            )?;
            minutes += n as u64;
        }
    }
    conn.execute_batch("DETACH summary")?;
    std::fs::rename(new, state.join(SUMMARY_FILE))
        .with_context(|| format!("failed to put {} in place", new.display()))?;
    let _ = std::fs::remove_file(state.join(STALE_FILE));
    Ok(minutes)
}

/// Every archive file, by host directory.
fn archive_by_host(data_dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    let Ok(hosts) = std::fs::read_dir(data_dir) else {
        return Ok(out);
    };
    for h in hosts.flatten() {
        let name = h.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !h.path().is_dir() {
            continue;
        }
        let scope = Scope {
            hosts: vec![name.clone()],
            ..Scope::default()
        };
        let files = archive_files(data_dir, &scope)?;
        if !files.is_empty() {
            out.push((name, files));
        }
    }
    Ok(out)
}

/// The columns of `journal_minutes`, for the empty view when there is no summary yet.
const EMPTY: &str =
    "SELECT NULL::TIMESTAMP AS minute, NULL::VARCHAR AS host, NULL::VARCHAR AS unit, \
    NULL::VARCHAR AS identifier, NULL::INTEGER AS priority, NULL::BIGINT AS entries, \
    NULL::BIGINT AS bytes WHERE false";

/// Attaches the summary read-only to `conn` and makes the view `journal_minutes` over it (empty
/// when jp-flush has not written one yet).
pub fn attach_view(conn: &Connection, state_dir: &Path) -> Result<()> {
    let path = state_dir.join(SUMMARY_FILE);
    let source = match path.exists() {
        false => EMPTY.to_owned(),
        true => {
            // jp-flush writes it for a moment at the end of its run.
            retried(30, || {
                conn.execute_batch(&format!(
                    "ATTACH {} AS jp_summary (READ_ONLY)",
                    quote(&path.to_string_lossy())
                ))
            })
            .with_context(|| format!("failed to read the summary {}", path.display()))?;
            "SELECT * FROM jp_summary.journal_minutes".to_owned()
        }
    };
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP VIEW journal_minutes AS {source}"
    ))
    .context("failed to make the view journal_minutes")
}

/// What an activity request gets wrong, or what fails it.
pub enum Asked {
    Bad(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Asked {
    fn from(e: anyhow::Error) -> Asked {
        Asked::Failed(e)
    }
}

/// Opens the summary read-only, waiting a little while jp-flush writes it.
pub fn open_read_only(state_dir: &Path) -> Result<Option<Connection>> {
    let path = state_dir.join(SUMMARY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let conn = retried(30, || {
        let config = Config::default().access_mode(AccessMode::ReadOnly)?;
        Connection::open_with_flags(&path, config)
    })
    .with_context(|| format!("failed to read the summary {}", path.display()))?;
    Ok(Some(conn))
}

/// Entries per bucket over the last `range` (1h, 24h, 7d, 30d), stacked by `by` (priority,
/// host or unit): the activity chart, from the summary alone.
pub fn activity(settings: &Settings, range: &str, by: &str) -> Result<Value, Asked> {
    let (minutes, bucket) = match range {
        "1h" => (60, 1),
        "24h" => (1440, 5),
        "7d" => (7 * 1440, 30),
        "30d" => (30 * 1440, 120),
        other => return Err(Asked::Bad(format!("range {other:?}: 1h, 24h, 7d or 30d"))),
    };
    let key = match by {
        "priority" => "coalesce(CAST(priority AS VARCHAR), 'none')",
        "host" => "host",
        "unit" => "coalesce(unit, 'none')",
        other => return Err(Asked::Bad(format!("by {other:?}: priority, host or unit"))),
    };
    let now = chrono::Utc::now().timestamp_micros();
    let end = now - now.rem_euclid(MINUTE_USEC) + MINUTE_USEC;
    let start = end - minutes * MINUTE_USEC;
    let bucket_usec = bucket * MINUTE_USEC;
    let mut series: serde_json::Map<String, Value> = serde_json::Map::new();
    let n = (minutes / bucket) as usize;
    let buckets: Vec<i64> = (0..n as i64)
        .map(|i| (start + i * bucket_usec) / 1_000_000)
        .collect();
    if let Some(conn) = open_read_only(&settings.state_dir)? {
        let mut st = conn
            .prepare(&format!(
                "SELECT (epoch_us(minute) - ?) // ? AS b, {key} AS k, sum(entries)::BIGINT
                 FROM journal_minutes WHERE minute >= make_timestamp(?) AND minute < make_timestamp(?)
                 GROUP BY ALL ORDER BY k"
            ))
            .context("failed to read the summary")?;
        let rows = st
            .query_map(duckdb::params![start, bucket_usec, start, end], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .context("failed to read the summary")?;
        for row in rows {
            let (b, k, count) = row.context("failed to read the summary")?;
            let entry = series
                .entry(k)
                .or_insert_with(|| Value::Array(vec![json!(0); n]));
            if let (Some(arr), Ok(i)) = (entry.as_array_mut(), usize::try_from(b)) {
                if i < n {
                    arr[i] = json!(count);
                }
            }
        }
    }
    Ok(json!({
        "range": range,
        "by": by,
        "bucket_minutes": bucket,
        "buckets": buckets,
        "series": series,
        "stale": settings.state_dir.join(STALE_FILE).exists(),
    }))
}

/// Entries in the last hour, from the summary (None without one).
pub fn last_hour(settings: &Settings) -> Option<i64> {
    let conn = open_read_only(&settings.state_dir).ok()??;
    let now = chrono::Utc::now().timestamp_micros();
    conn.query_row(
        "SELECT coalesce(sum(entries), 0)::BIGINT FROM journal_minutes WHERE minute >= make_timestamp(?)",
        [now - 60 * MINUTE_USEC],
        |r| r.get(0),
    )
    .ok()
}
