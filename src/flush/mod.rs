//! jp-flush: the completed minutes of the sealed segments → one Parquet file per host and minute,
//! atomically, exactly once.
//!
//! jp-flush asks the collector to seal its segment (`handoff`), attaches every sealed segment to
//! one DuckDB of its own, and for each (host, minute) that ends before the collector's watermark
//! writes the rows of every segment holding that minute to a temporary file beside the final one
//! (a name that does not end in `.parquet`), fsyncs it, renames it into place, fsyncs the
//! directory, and only then deletes those rows from the segments. A segment left empty is
//! removed. A crash between the rename and the deletes leaves rows that are already in the file:
//! the next run merges them into the file again, dropping duplicates by `cursor`, so every entry
//! ends up in exactly one file once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use duckdb::Connection;

use crate::archive::layout::{minute_file, MINUTE_USEC};
use crate::buffer::handoff::{self, Lease};
use crate::buffer::segment::{duckdb_config, is_damaged, read_collector_state, CollectorState};
use crate::buffer::Buffer;
use crate::config::{FlushArgs, Settings};
use crate::schema::row::{cast_columns, BUFFER_ONLY_COLUMNS, COLUMNS, PARQUET_SCHEMA};
use crate::sys::duckdb::{chain_text, quote};
use crate::sys::fault;
use crate::sys::files::{make_private_dir, sync_dir};
use crate::sys::service;

/// How many sealed segments are attached at once. Each attached DuckDB file keeps some blocks of
/// its own in memory: hundreds of them (a backlog of failed flushes, a storm of killed ones) did
/// not fit in `flush_memory_limit` (measured: out of memory at 183 MiB). A minute whose rows lie
/// in two windows is written from the first and merged from the second.
const ATTACH_AT_ONCE: usize = 16;

/// What one flush did.
#[derive(Debug, Default)]
pub struct Report {
    pub files_written: usize,
    pub files_merged: usize,
    pub rows_exported: u64,
    pub segments_removed: usize,
    /// Bytes of the minute files written.
    pub bytes_written: u64,
    /// Rows left in the sealed segments after the export (minutes not complete yet).
    pub rows_left: u64,
    /// What retention deleted after the export.
    pub retention: crate::archive::retention::Deleted,
    /// The oldest minute (µs) that still has rows in the sealed segments after the export, or
    /// that was held back as not complete: retention keeps its file and every later one.
    pub keep_from: Option<i64>,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.files_written += other.files_written;
        self.files_merged += other.files_merged;
        self.rows_exported += other.rows_exported;
        self.segments_removed += other.segments_removed;
        self.bytes_written += other.bytes_written;
        self.rows_left += other.rows_left;
        self.keep_from = match (self.keep_from, other.keep_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
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

/// The sealed segments, attached to one in-memory DuckDB of jp-flush's own (tuned for exporting:
/// its own memory limit, and a spill directory in the state directory), with two views for
/// anyone who wants to look at the buffer as one table: `journal_logs` (every segment's rows)
/// and `collector_state` (the newest segment's).
pub struct Attached {
    conn: Connection,
    buffer: Buffer,
    segments: Vec<AttachedSegment>,
}

struct AttachedSegment {
    no: u64,
    /// The schema it is attached as.
    alias: String,
    /// Its rows may repeat rows of other segments (it read the journal again after a loss).
    reread: bool,
}

impl Attached {
    /// Attaches the segments `sealed`. One that DuckDB finds damaged is set aside, and the
    /// collector is asked to read its entries again (`Buffer::request_reread`).
    pub fn open(settings: &Settings, buffer: &Buffer, sealed: &[u64]) -> Result<Attached> {
        let config = duckdb_config(&settings.flush_memory_limit)
            .context("failed to configure DuckDB for jp-flush")?;
        let conn = Connection::open_in_memory_with_flags(config)
            .context("failed to start DuckDB for jp-flush")?;
        let spill = settings.state_dir.join("flush.tmp");
        conn.execute_batch(&format!(
            "SET temp_directory = {};",
            quote(&spill.to_string_lossy())
        ))
        .context("failed to configure DuckDB for jp-flush")?;
        let mut segments = Vec::new();
        for &no in sealed {
            let alias = format!("s{no}");
            let path = buffer.segment_path(no);
            let attached = conn
                .execute_batch(&format!(
                    "ATTACH {} AS {alias}",
                    quote(&path.to_string_lossy())
                ))
                // Replays the WAL the collector left, and writes it into the file at once, so
                // that its rows need no memory of their own while attached.
                .and_then(|()| conn.execute_batch(&format!("CHECKPOINT {alias}")))
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    Ok(conn.query_row(
                        &format!("SELECT bool_or(reread) FROM {alias}.segment_meta"),
                        [],
                        |r| r.get::<_, Option<bool>>(0),
                    )?)
                })
                .with_context(|| format!("failed to attach the segment {}", path.display()));
            match attached {
                Ok(reread) => segments.push(AttachedSegment {
                    no,
                    alias,
                    reread: reread.unwrap_or(false),
                }),
                Err(e) if is_damaged(&e) => {
                    let _ = conn.execute_batch(&format!("DETACH {alias}"));
                    // The request first: until the segment is out of the way, its rows are still
                    // where the next run finds them, and a crash in between leaves a request
                    // that a later run's (harmless) set-aside completes.
                    buffer.request_reread(no)?;
                    fault::point("flush-damaged-segment-before-set-aside")?;
                    let aside = buffer.set_aside(no)?;
                    log::error!(
                        "{}: the segment is damaged; kept it as {} and asked the collector to \
                         read its entries from the journal again",
                        chain_text(&e),
                        aside.display()
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let attached = Attached {
            conn,
            buffer: buffer.clone(),
            segments,
        };
        attached.create_views()?;
        Ok(attached)
    }

    fn create_views(&self) -> Result<()> {
        // Cast, because segments of two versions can be attached at once (see `segment`).
        let columns = cast_columns(true);
        let sql = match (self.segments.first(), self.segments.last()) {
            (Some(_), Some(newest)) => {
                let union: Vec<String> = self
                    .segments
                    .iter()
                    .map(|s| format!("SELECT {columns} FROM {}.journal_logs", s.alias))
                    .collect();
                format!(
                    "CREATE TEMP VIEW journal_logs AS {};
                     CREATE TEMP VIEW collector_state AS SELECT * FROM {}.collector_state;",
                    union.join(" UNION ALL "),
                    newest.alias
                )
            }
            _ => format!(
                "{}; CREATE TEMP TABLE collector_state (cursor VARCHAR, at_head BOOLEAN,
                 watermark TIMESTAMP, gaps_total UBIGINT, updated_at TIMESTAMP);",
                crate::buffer::segment::journal_logs_ddl("temp.journal_logs")
            ),
        };
        self.conn
            .execute_batch(&sql)
            .context("failed to set up the views of the sealed segments")
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The collector's state as of the seal (the newest segment's).
    pub fn collector_state(&self) -> Result<Option<CollectorState>> {
        match self.segments.last() {
            Some(s) => read_collector_state(&self.conn, &format!("{}.collector_state", s.alias))
                .with_context(|| {
                    format!(
                        "failed to read the position from {}",
                        self.buffer.segment_path(s.no).display()
                    )
                }),
            None => Ok(None),
        }
    }

    /// Detaches and removes every segment whose rows are all exported; returns how many.
    pub fn remove_empty(&mut self) -> Result<usize> {
        let mut removed = 0;
        let mut kept = Vec::new();
        for s in std::mem::take(&mut self.segments) {
            let rows: u64 = self
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM {}.journal_logs", s.alias),
                    [],
                    |r| r.get(0),
                )
                .with_context(|| {
                    format!(
                        "failed to count the rows of {}",
                        self.buffer.segment_path(s.no).display()
                    )
                })?;
            if rows > 0 {
                kept.push(s);
                continue;
            }
            self.conn
                .execute_batch(&format!("DETACH {}", s.alias))
                .with_context(|| {
                    format!(
                        "failed to detach {}",
                        self.buffer.segment_path(s.no).display()
                    )
                })?;
            self.buffer.remove(s.no)?;
            removed += 1;
        }
        self.segments = kept;
        Ok(removed)
    }
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

/// What stands at a minute file's path before it is written.
enum Existing {
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
    // host_dir comes from layout::host_dir: one segment of [A-Za-z0-9.%@_~-], never . or ..
    if host_dir.is_empty()
        || host_dir == "."
        || host_dir == ".."
        || !host_dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%@~-".contains(&b))
    {
        bail!("refusing to write under the host directory {host_dir:?}: not a safe path segment");
    }
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

    let columns = select_list();
    let sources: Vec<&AttachedSegment> = m.sources.iter().map(|&i| &segments[i]).collect();
    let which = format!(
        "host_dir = {} AND minute_key = make_timestamp({})",
        quote(host_dir),
        m.minute
    );
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
    let template = format!("{}.journal_logs", sources[0].alias);
    let existing = existing_file(conn, &final_path, &template)?;
    let old_rows = match &existing {
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
    let query = match old_rows {
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
    };
    let copy = format!(
        "COPY ({query}) TO {} (FORMAT parquet, COMPRESSION {}, ROW_GROUP_SIZE 100000, ROW_GROUP_SIZE_BYTES '32MB', \
         KV_METADATA {{journal_parquet_schema: '{PARQUET_SCHEMA}'}})",
        quote(&tmp.to_string_lossy()),
        settings.compression.sql()
    );
    let written = fault::point("flush-minute-before-copy")
        .map_err(anyhow::Error::from)
        .and_then(|()| conn.execute(&copy, []).map_err(anyhow::Error::from));
    if let Existing::Damaged { salvaged, .. } = &existing {
        let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS {salvaged}"));
    }
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("failed to write {}", tmp.display())));
    }
    let durable = (|| -> std::io::Result<()> {
        let f = File::open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o640))?;
        f.sync_all()
    })();
    if let Err(e) = durable {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write {}", tmp.display()));
    }
    // A damaged file is kept under another name (a second link to it) only now that its
    // replacement is durable: until the rename below, the tree still holds it, and a crash
    // leaves it for the next run to salvage again.
    let aside = match &existing {
        Existing::Damaged { .. } => Some(keep_aside(&final_path)?),
        _ => None,
    };
    fault::point("flush-minute-before-rename")?;
    fs::rename(&tmp, &final_path).with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("failed to put {} in place", final_path.display())
    })?;
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

/// Looks at what stands at `path`. A file whose content DuckDB finds invalid has the rows of
/// its readable row groups copied out (it is set aside once its replacement is durable); any
/// other failure to read it (the disk, memory, permissions, open files) is an error, and the
/// file and the rows stay for the next run.
fn existing_file(conn: &Connection, path: &Path, template: &str) -> Result<Existing> {
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
fn keep_aside(path: &Path) -> Result<std::path::PathBuf> {
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

/// Exports the segments `lease` holds (see `export_lease`), then applies retention to the tree.
fn flush_lease(settings: &Settings, buffer: &Buffer, lease: &Lease, all: bool) -> Result<Report> {
    let mut report = export_lease(settings, buffer, lease, all)?;
    report.retention = apply_retention(settings, report.keep_from)?;
    Ok(report)
}

/// Exports the segments `lease` holds: every completed minute (all minutes with `all`), by the
/// watermark of the newest sealed segment, `ATTACH_AT_ONCE` segments at a time, oldest first.
fn export_lease(settings: &Settings, buffer: &Buffer, lease: &Lease, all: bool) -> Result<Report> {
    let sealed = lease.sealed(buffer)?;
    let Some(&newest) = sealed.last() else {
        return Ok(Report::default());
    };
    let cutoff = if all {
        None
    } else {
        let state = Attached::open(settings, buffer, &[newest])?.collector_state()?;
        match state.and_then(|s| s.watermark_usec) {
            // Minutes that end at or before the watermark are complete.
            Some(w) => Some(w - w.rem_euclid(MINUTE_USEC)),
            // Nothing is known to be complete: retention keeps every file.
            None => {
                return Ok(Report {
                    keep_from: Some(i64::MIN),
                    ..Report::default()
                })
            }
        }
    };
    let mut report = Report {
        keep_from: cutoff,
        ..Report::default()
    };
    for window in sealed.chunks(ATTACH_AT_ONCE) {
        let mut attached = Attached::open(settings, buffer, window)?;
        report.add(export(&mut attached, settings, cutoff)?);
    }
    Ok(report)
}

/// Applies `retention` after a flush. Files of minutes from `keep_from` on (and of the current
/// minute and later, whose rows may still be in the collector's open segment) are kept. Logged
/// once, at notice, when it deleted something.
fn apply_retention(
    settings: &Settings,
    keep_from: Option<i64>,
) -> Result<crate::archive::retention::Deleted> {
    let r = &settings.retention;
    if r.is_off() {
        return Ok(Default::default());
    }
    let now = chrono::Utc::now().timestamp_micros();
    let this_minute = now - now.rem_euclid(MINUTE_USEC);
    let keep_from = keep_from.map_or(this_minute, |k| k.min(this_minute));
    let warned = settings.state_dir.join("retention-foreign");
    let upload = upload_state(&settings.state_dir)?;
    let d =
        crate::archive::retention::apply(&settings.data_dir, r, keep_from, now, &warned, upload)?;
    if d.waiting_for_upload > 0 {
        log::warn!(
            "retention keeps {} minute files it would delete, because jp-upload has not copied \
             them yet (see `systemctl status jp-upload.service`)",
            d.waiting_for_upload
        );
    }
    if d.files > 0 {
        log::info!(
            "retention deleted {} minute files, {} bytes, from {} ({} older than max_age, {} over \
             max_use, {} to keep keep_free)",
            d.files,
            d.bytes,
            settings.data_dir.display(),
            d.by_age,
            d.by_use,
            d.by_free
        );
    }
    Ok(d)
}

/// What `jp-upload` left in the state directory: `upload.enabled` once it has run (the upload is
/// configured), and `upload.last-success`, the Unix time at which its last complete copy
/// started. That copy took every minute file then in the tree; the hour of margin covers a file
/// written before the copy started but renamed into place after the copy listed its directory
/// (the same margin as the script's own `--max-age`).
fn upload_state(state_dir: &Path) -> Result<crate::archive::retention::Upload> {
    use crate::archive::retention::Upload;
    if !state_dir.join(UPLOAD_ENABLED).exists() {
        return Ok(Upload::Off);
    }
    let stamp = state_dir.join(UPLOAD_LAST_SUCCESS);
    let started = match fs::read_to_string(&stamp) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", stamp.display())),
    };
    Ok(Upload::CopiedBefore(started.and_then(|secs| {
        std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs.checked_sub(3600)?))
    })))
}

/// Written by `packaging/jp-upload` in the state directory (see `upload_state`).
pub const UPLOAD_ENABLED: &str = "upload.enabled";
pub const UPLOAD_LAST_SUCCESS: &str = "upload.last-success";

/// The collector's `--flush-every`: exports the segments below `open`, which it has just
/// sealed, unless a jp-flush is at work (it does the same).
pub fn flush_below(settings: &Settings, open: u64, all: bool) -> Result<Report> {
    let buffer = settings.buffer();
    match Lease::below(&settings.state_dir, open)? {
        Some(lease) => flush_lease(settings, &buffer, &lease, all),
        None => Ok(Report::default()),
    }
}

pub fn run(args: &FlushArgs) -> Result<()> {
    let settings = Settings::resolve(&args.common)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    service::init_logging(settings.log_level, "jp-flush");
    crate::sys::user::become_owner(&[&settings.state_dir, &settings.data_dir], "jp-flush")?;
    let started = Instant::now();
    let result = flush_once(&settings, args.all);
    write_metrics(&settings, &result, started.elapsed());
    update_catalogue(&settings);
    result.map(drop)
}

/// Writes `DATA/journal.duckdb` when it is missing or outdated (`views::ensure_catalogue`). A
/// convenience beside the archive: a failure is logged, never the run's.
fn update_catalogue(settings: &Settings) {
    if !settings.data_dir.exists() {
        return;
    }
    match crate::archive::views::ensure_catalogue(&settings.data_dir) {
        Ok(crate::archive::views::Catalogue::Written) => {
            log::info!(
                "wrote the catalogue {}",
                settings
                    .data_dir
                    .join(crate::archive::views::CATALOGUE_FILE)
                    .display()
            )
        }
        Ok(crate::archive::views::Catalogue::Busy) => log::debug!(
            "the catalogue is held open for writing by another process; checked again next run"
        ),
        Ok(crate::archive::views::Catalogue::UpToDate) => {}
        Ok(crate::archive::views::Catalogue::NothingYet) => {
            log::debug!(
                "no minute file in the archive yet: the catalogue is written after the first"
            )
        }
        Err(e) => log::warn!("{}", chain_text(&e)),
    }
}

/// One jp-flush run: seal, export, apply retention.
fn flush_once(settings: &Settings, all: bool) -> Result<Report> {
    let buffer = settings.buffer();
    if !buffer.dir().exists() {
        log::debug!(
            "nothing to flush: there is no buffer at {}",
            buffer.dir().display()
        );
        return Ok(Report {
            retention: apply_retention(settings, None)?,
            ..Report::default()
        });
    }
    let started = Instant::now();
    let lease = handoff::acquire(&settings.state_dir, &buffer, settings.handoff_timeout)?;
    let report = flush_lease(settings, &buffer, &lease, all)?;
    log::debug!(
        "sealed in {:.1} ms; wrote {} files ({} merged), {} entries, removed {} segments, in \
         {:.1} ms",
        lease.waited.as_secs_f64() * 1e3,
        report.files_written,
        report.files_merged,
        report.rows_exported,
        report.segments_removed,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(report)
}

/// What kind of failure a run met, for `journal_parquet_flush_errors_total{kind}`.
fn error_kind(e: &anyhow::Error) -> &'static str {
    use crate::sys::duckdb::{failure, Kind};
    if e.downcast_ref::<handoff::Unavailable>().is_some() {
        return "buffer_unavailable";
    }
    let io = e
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some());
    match failure(e).map(|f| f.kind) {
        Some(Kind::OutOfMemory) => "memory",
        Some(Kind::Io | Kind::Permission) => "io",
        _ if io => "io",
        _ => "other",
    }
}

/// Writes jp-flush's metrics file: its counters carried on from the previous file plus this
/// run's. Never fails the run: a file that cannot be written is logged.
fn write_metrics(settings: &Settings, result: &Result<Report>, took: Duration) {
    use crate::sys::metrics::{read_samples, Kind, Metrics, FLUSH_FILE};
    let before = read_samples(&settings.metrics_dir.join(FLUSH_FILE));
    let was = |key: &str| {
        before
            .get(&format!("journal_parquet_{key}"))
            .copied()
            .unwrap_or(0.0)
    };
    let empty = Report::default();
    let r = result.as_ref().unwrap_or(&empty);
    let mut m = Metrics::default();
    let counters = [
        ("flush_runs_total", "jp-flush runs.", 1.0),
        (
            "entries_exported_total",
            "Entries written to Parquet.",
            r.rows_exported as f64,
        ),
        (
            "parquet_files_written_total",
            "Minute files written (new or merged).",
            r.files_written as f64,
        ),
        (
            "parquet_files_merged_total",
            "Minute files written by merging into an existing one.",
            r.files_merged as f64,
        ),
        (
            "parquet_bytes_written_total",
            "Bytes of the minute files written.",
            r.bytes_written as f64,
        ),
        (
            "flush_duration_seconds_total",
            "Time jp-flush runs took.",
            took.as_secs_f64(),
        ),
        (
            "retention_deleted_files_total",
            "Minute files deleted by retention.",
            r.retention.files as f64,
        ),
        (
            "retention_deleted_bytes_total",
            "Bytes deleted by retention.",
            r.retention.bytes as f64,
        ),
    ];
    for (name, help, add) in counters {
        m.one(Kind::Counter, name, help, was(name) + add);
    }
    let kinds = ["buffer_unavailable", "memory", "io", "other"];
    let failed = result.as_ref().err().map(error_kind);
    let errors: Vec<(String, f64)> = kinds
        .iter()
        .map(|k| {
            let key = format!("flush_errors_total{{kind=\"{k}\"}}");
            (
                format!("kind=\"{k}\""),
                was(&key) + f64::from(u8::from(failed == Some(*k))),
            )
        })
        .collect();
    m.add(
        Kind::Counter,
        "flush_errors_total",
        "jp-flush runs that failed, by kind of error.",
        &errors,
    );
    let last_ok = match result {
        Ok(_) => chrono::Utc::now().timestamp_micros() as f64 / 1e6,
        Err(_) => was("last_flush_success_timestamp_seconds"),
    };
    m.one(
        Kind::Gauge,
        "last_flush_success_timestamp_seconds",
        "When a jp-flush run last succeeded (Unix time).",
        last_ok,
    );
    m.one(
        Kind::Gauge,
        "last_flush_duration_seconds",
        "How long the last jp-flush run took.",
        took.as_secs_f64(),
    );
    if let Ok(r) = result {
        m.one(
            Kind::Gauge,
            "buffer_sealed_rows",
            "Rows left in the buffer's sealed segments after the last run (minutes not complete yet).",
            r.rows_left as f64,
        );
    }
    if let Err(e) = m.write(&settings.metrics_dir, FLUSH_FILE) {
        log::warn!("{}: the metrics are not up to date", chain_text(&e));
    }
}
