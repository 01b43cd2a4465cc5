//! The persistent DuckDB buffer, `STATE/buffer.duckdb`: table `journal_logs` holds entries read
//! but not yet exported; table `collector_state` holds, in the same transaction as the rows, the
//! collector's position in the journal and its watermark; table `restart_points` holds, for each
//! commit that still has rows here, the position the collector stood at before it. The oldest of
//! those is where to read again if this file is lost: it goes into the state file too.
//!
//! DuckDB lets one process at a time open the file (not even read-only beside a writer); how the
//! collector and jp-flush take turns is in `handoff`.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{params, Config, Connection, OptionalExt};

use crate::config::Settings;
use crate::row::COLUMNS;

/// Bumped when the tables change shape; an older file is upgraded or refused, never misread.
/// 2: `journal_logs.commit_no`, `collector_state.last_commit`, `restart_points`.
const SCHEMA_VERSION: i32 = 2;

/// Where the collector resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The journal was empty at first start: read from its first entry.
    Head,
    /// Resume right after the entry with this cursor.
    After(String),
}

/// What the collector commits beside each batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorState {
    pub position: Position,
    /// Every entry with a timestamp before this (µs since the epoch) has been read.
    pub watermark_usec: Option<i64>,
    /// Gaps found so far (saved position gone from the journal).
    pub gaps_total: u64,
    /// The number of the last commit (rows carry the number of theirs).
    pub last_commit: u64,
}

pub struct Buffer {
    conn: Connection,
    path: PathBuf,
}

/// True when DuckDB refused the file because another process holds it.
pub fn is_lock_conflict(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("Could not set lock on file")
}

/// True when DuckDB says the file itself is damaged (not a lock, permission or space problem,
/// which must never make us give a file up).
pub fn is_damaged(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    [
        "not a valid DuckDB database file",
        "Corrupt database file",
        "Corrupt WAL file",
        "checksum",
        "INTERNAL Error",
        "Serialization Error",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn duckdb_config(settings: &Settings) -> duckdb::Result<Config> {
    Config::default()
        // A daemon never downloads code: json and parquet are built in.
        .enable_autoload_extension(false)?
        // One thread a query: the collector overlaps reading with its commit thread, and jp-flush
        // writes `flush_threads` files at once; DuckDB's own workers would only compete with
        // those for the same cores (measured: 8.8 s with 2, 7.2 s with 1, on a 1M backfill).
        .threads(1)?
        .max_memory(&settings.duckdb_memory_limit)
}

impl Buffer {
    /// Opens (creating if needed) the buffer, once. A lock conflict is returned as an error that
    /// `is_lock_conflict` recognises.
    pub fn open(path: &Path, settings: &Settings) -> Result<Buffer> {
        let config = duckdb_config(settings)
            .with_context(|| format!("failed to configure DuckDB for {}", path.display()))?;
        let conn = Connection::open_with_flags(path, config)
            .with_context(|| format!("failed to open the buffer {}", path.display()))?;
        let buffer = Buffer {
            conn,
            path: path.to_path_buf(),
        };
        buffer
            .create_schema()
            .with_context(|| format!("failed to set up the tables in {}", path.display()))?;
        Ok(buffer)
    }

    /// Opens the buffer, waiting while another process holds it; gives up at `deadline`.
    pub fn open_waiting(path: &Path, settings: &Settings, deadline: Instant) -> Result<Buffer> {
        let mut pause = Duration::from_millis(2);
        loop {
            match Buffer::open(path, settings) {
                Err(e) if is_lock_conflict(&e) && Instant::now() + pause < deadline => {
                    sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn create_schema(&self) -> Result<()> {
        let columns: Vec<String> = COLUMNS
            .iter()
            .map(|(n, t, nullable)| format!("{n} {t}{}", if *nullable { "" } else { " NOT NULL" }))
            .collect();
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS buffer_meta (schema_version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS journal_logs ({});
             CREATE TABLE IF NOT EXISTS collector_state (
                 cursor VARCHAR,            -- NULL with at_head: read from the first entry
                 at_head BOOLEAN NOT NULL,
                 watermark TIMESTAMP,       -- everything before it has been read
                 gaps_total UBIGINT NOT NULL,
                 updated_at TIMESTAMP NOT NULL,
                 last_commit UBIGINT);
             CREATE TABLE IF NOT EXISTS restart_points (
                 commit_no UBIGINT NOT NULL,
                 cursor VARCHAR,            -- the position before that commit; NULL with at_head
                 at_head BOOLEAN NOT NULL);",
            columns.join(", ")
        ))?;
        let version: Option<i32> = self
            .conn
            .query_row("SELECT max(schema_version) FROM buffer_meta", [], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        match version {
            None => {
                self.conn.execute(
                    "INSERT INTO buffer_meta VALUES (?)",
                    params![SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(1) => {
                // Rows of a version-1 buffer have no commit number: their restart point is
                // unknown, and the state file keeps only the committed cursor until they are
                // flushed.
                self.conn.execute_batch(&format!(
                    "BEGIN TRANSACTION;
                     ALTER TABLE journal_logs ADD COLUMN commit_no UBIGINT;
                     ALTER TABLE collector_state ADD COLUMN last_commit UBIGINT;
                     UPDATE buffer_meta SET schema_version = {SCHEMA_VERSION};
                     COMMIT;"
                ))?;
            }
            Some(v) => bail!(
                "schema version {v} is not the {SCHEMA_VERSION} this build knows; \
                 flush it with the version that wrote it"
            ),
        }
        Ok(())
    }

    /// The collector closes the file at every hand-off: without a checkpoint that close is
    /// instant, and jp-flush (which needs the rows anyway) replays the short WAL on open and
    /// checkpoints on its own close. DuckDB still checkpoints by itself when the WAL grows past
    /// its threshold.
    pub fn without_checkpoint_on_close(self) -> Result<Buffer> {
        self.conn
            .execute_batch("PRAGMA disable_checkpoint_on_shutdown")
            .with_context(|| format!("failed to configure {}", self.path.display()))?;
        Ok(self)
    }

    /// No automatic checkpoint at the next commits of this connection (until it is closed).
    pub fn defer_checkpoints(&self) -> Result<()> {
        self.conn
            .execute_batch("SET checkpoint_threshold = '1TB'")
            .with_context(|| format!("failed to configure {}", self.path.display()))
    }

    /// DuckDB's memory limit for what follows (exports need more memory than appends).
    pub fn tune(&self, memory_limit: &str) -> Result<()> {
        // `memory_limit` was validated by config (digits and a unit): safe to quote.
        self.conn
            .execute_batch(&format!("SET memory_limit = '{memory_limit}'"))
            .with_context(|| format!("failed to configure {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The collector's committed state, if it ever committed one.
    pub fn collector_state(&self) -> Result<Option<CollectorState>> {
        let row = self
            .conn
            .query_row(
                "SELECT cursor, at_head, epoch_us(watermark), gaps_total, last_commit
                 FROM collector_state LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, u64>(3)?,
                        r.get::<_, Option<u64>>(4)?,
                    ))
                },
            )
            .optional()
            .with_context(|| format!("failed to read the position from {}", self.path.display()))?;
        Ok(row.map(
            |(cursor, at_head, watermark_usec, gaps_total, last_commit)| CollectorState {
                position: position(cursor, at_head),
                watermark_usec,
                gaps_total,
                last_commit: last_commit.unwrap_or(0),
            },
        ))
    }

    /// Where to read again if this buffer were lost: the position before the oldest commit that
    /// still has rows here; `Ok(None)` when no rows are left (the committed position will do) or
    /// when the oldest rows predate commit numbers. Forgets the restart points of commits whose
    /// rows are all gone.
    pub fn restart_point(&self) -> Result<Option<Position>> {
        let context = || {
            format!(
                "failed to read the restart point from {}",
                self.path.display()
            )
        };
        let oldest: Option<Option<u64>> = self
            .conn
            .query_row(
                "SELECT commit_no FROM journal_logs ORDER BY commit_no NULLS FIRST LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .with_context(context)?;
        let oldest = match oldest {
            None => {
                self.conn
                    .execute("DELETE FROM restart_points", [])
                    .with_context(context)?;
                return Ok(None);
            }
            Some(None) => return Ok(None),
            Some(Some(n)) => n,
        };
        self.conn
            .execute(
                "DELETE FROM restart_points WHERE commit_no < ?",
                params![oldest],
            )
            .with_context(context)?;
        let point = self
            .conn
            .query_row(
                "SELECT cursor, at_head FROM restart_points WHERE commit_no = ?",
                params![oldest],
                |r| Ok(position(r.get(0)?, r.get(1)?)),
            )
            .optional()
            .with_context(context)?;
        Ok(point)
    }

    /// Appends `rows` (numbered `state.last_commit`) and records `state` in one transaction, with
    /// `before`, the position before these rows, as their restart point: the rows and the
    /// position can never disagree, whatever instant the process dies at.
    pub fn commit(
        &mut self,
        rows: Option<RecordBatch>,
        state: &CollectorState,
        before: &Position,
    ) -> Result<()> {
        let result = self.commit_inner(rows, state, before);
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result.with_context(|| format!("failed to commit to the buffer {}", self.path.display()))
    }

    fn commit_inner(
        &mut self,
        rows: Option<RecordBatch>,
        state: &CollectorState,
        before: &Position,
    ) -> Result<()> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        if let Some(rows) = rows {
            let mut appender = self.conn.appender("journal_logs")?;
            appender.append_record_batch(rows)?;
            appender.flush()?;
            let (cursor, at_head) = columns_of(before);
            self.conn.execute(
                "INSERT INTO restart_points VALUES (?, ?, ?)",
                params![state.last_commit, cursor, at_head],
            )?;
        }
        let (cursor, at_head) = columns_of(&state.position);
        self.conn.execute("DELETE FROM collector_state", [])?;
        self.conn.execute(
            "INSERT INTO collector_state VALUES (?, ?, make_timestamp(?), ?, now()::TIMESTAMP, ?)",
            params![
                cursor,
                at_head,
                state.watermark_usec,
                state.gaps_total,
                state.last_commit
            ],
        )?;
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    pub fn row_count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM journal_logs", [], |r| r.get(0))
            .with_context(|| format!("failed to count rows in {}", self.path.display()))
    }

    /// Closes the file (DuckDB checkpoints on close) so that another process can open it.
    pub fn close(self) -> Result<()> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| e)
            .with_context(|| format!("failed to close the buffer {}", path.display()))
    }
}

/// Moves a damaged buffer (and its WAL, which DuckDB would replay into a new file of the same
/// name) aside as `buffer.duckdb.damaged-UNIXTIME` (`.wal`): kept for inspection, never deleted.
pub fn set_aside(path: &Path) -> Result<PathBuf> {
    let aside = crate::layout::set_aside(path)?;
    let wal = PathBuf::from(format!("{}.wal", path.display()));
    if wal.exists() {
        let wal_aside = PathBuf::from(format!("{}.wal", aside.display()));
        std::fs::rename(&wal, &wal_aside)
            .with_context(|| format!("failed to set the damaged {} aside", wal.display()))?;
    }
    Ok(aside)
}

/// A position as stored: a cursor, or NULL and at_head.
fn columns_of(position: &Position) -> (Option<&str>, bool) {
    match position {
        Position::Head => (None, true),
        Position::After(c) => (Some(c.as_str()), false),
    }
}

fn position(cursor: Option<String>, at_head: bool) -> Position {
    match cursor {
        Some(c) if !at_head => Position::After(c),
        _ => Position::Head,
    }
}
