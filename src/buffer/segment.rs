//! One segment of the buffer: a DuckDB file `STATE/buffer/NNNNNNNN.duckdb` (see `buffer` for the
//! directory and who owns which segment).
//!
//! Table `journal_logs` holds entries read but not yet exported; `collector_state` holds, in the
//! same transaction as the rows, the collector's position in the journal and its watermark;
//! `segment_meta` holds the schema version, the position the collector stood at when the segment
//! was made (where to read again should this file be lost), and whether its rows may repeat rows
//! of other segments (a segment that reads again after a lost one).

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{params, Connection, OptionalExt};

use crate::journal::position::Position;
use crate::schema::columns::COLUMNS;
use crate::sys::duckdb::{config as duckdb_config, says_locked};

/// Bumped when the tables change shape; an older file is upgraded or refused, never misread.
/// 3: one file per segment, `segment_meta`; no commit numbers or restart points (a segment's
/// start is its restart point).
/// 4: the column types of Parquet file schema 3 (`schema::columns::COLUMNS`). A version-3 segment is still
/// read (jp-flush casts every column it exports); the collector seals one instead of writing
/// rows of the new types into it.
pub const SCHEMA_VERSION: i32 = 4;
/// The oldest segment version this build reads.
const OLDEST_READABLE_VERSION: i32 = 3;

/// What the collector commits beside each batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorState {
    pub position: Position,
    /// Every entry with a timestamp before this (µs since the epoch) has been read.
    pub watermark_usec: Option<i64>,
    /// Gaps found so far (saved position gone from the journal).
    pub gaps_total: u64,
}

pub struct Segment {
    conn: Connection,
    path: PathBuf,
    version: i32,
}

/// DuckDB's row group: a checkpoint compresses and writes each row group changed since the last
/// one, whole. So the collector commits batches that end on row group boundaries when they can,
/// and checkpoints only when a row group is full: each is then compressed once. Checkpointing at
/// DuckDB's WAL threshold instead, which falls mid-group, rewrote the last group at nearly every
/// commit of a backfill (measured on the 1M corpus: 16.7 s with 32 MiB batches, 7.9 s with 64 MiB
/// ones, 7.1 s with no checkpoint at all).
pub const ROW_GROUP_ROWS: u64 = 122_880;

/// The `CREATE TABLE` of `journal_logs`, derived from `schema::columns::COLUMNS`.
pub fn journal_logs_ddl(table: &str) -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t, nullable)| format!("{n} {t}{}", if *nullable { "" } else { " NOT NULL" }))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ({})",
        columns.join(", ")
    )
}

/// The `CREATE TABLE` of `collector_state` (jp-flush makes an empty one, `table`, when no
/// segment is sealed).
pub fn collector_state_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    cursor VARCHAR,            -- NULL with at_head: read from the first entry
    at_head BOOLEAN NOT NULL,
    watermark TIMESTAMP,       -- everything before it has been read
    gaps_total UBIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL)"
    )
}

/// The `CREATE TABLE` of `segment_meta` (also used to adopt a buffer of an earlier version).
pub const META_DDL: &str = "CREATE TABLE IF NOT EXISTS segment_meta (
    schema_version INTEGER NOT NULL,
    start_cursor VARCHAR,      -- where the collector stood when the segment was made
    start_at_head BOOLEAN NOT NULL,
    reread BOOLEAN NOT NULL    -- its rows may repeat rows of other segments
    )";

impl Segment {
    /// Creates a new segment file at `path` (which must not exist) holding `state`, `start` and
    /// `reread`, and closes it: checkpointed, no WAL, ready to be renamed into place.
    pub fn create(
        path: &Path,
        memory_limit: &str,
        start: &Position,
        state: &CollectorState,
        reread: bool,
    ) -> Result<()> {
        let config = duckdb_config(memory_limit)
            .with_context(|| format!("failed to configure DuckDB for {}", path.display()))?;
        let conn = Connection::open_with_flags(path, config)
            .with_context(|| format!("failed to create the segment {}", path.display()))?;
        let segment = Segment {
            conn,
            path: path.to_path_buf(),
            version: SCHEMA_VERSION,
        };
        let (cursor, at_head) = start.columns();
        segment
            .conn
            .execute_batch(&format!(
                "BEGIN TRANSACTION; {META_DDL}; {}; {};",
                journal_logs_ddl("journal_logs"),
                collector_state_ddl("collector_state")
            ))
            .and_then(|()| {
                segment.conn.execute(
                    "INSERT INTO segment_meta VALUES (?, ?, ?, ?)",
                    params![SCHEMA_VERSION, cursor, at_head, reread],
                )
            })
            .map_err(anyhow::Error::from)
            .and_then(|_| segment.write_state(state))
            .and_then(|()| Ok(segment.conn.execute_batch("COMMIT")?))
            .with_context(|| format!("failed to set up the segment {}", path.display()))?;
        segment.close_checkpointed()
    }

    /// Opens an existing segment. A lock conflict is an error that `sys::duckdb::says_locked`
    /// recognises; a damaged file one that `says_database_damaged` does.
    pub fn open(path: &Path, memory_limit: &str) -> Result<Segment> {
        let config = duckdb_config(memory_limit)
            .with_context(|| format!("failed to configure DuckDB for {}", path.display()))?;
        let conn = Connection::open_with_flags(path, config)
            .with_context(|| format!("failed to open the segment {}", path.display()))?;
        let version: Option<i32> = conn
            .query_row("SELECT max(schema_version) FROM segment_meta", [], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
            .with_context(|| format!("failed to read the schema of {}", path.display()))?;
        match version {
            Some(v) if (OLDEST_READABLE_VERSION..=SCHEMA_VERSION).contains(&v) => Ok(Segment {
                conn,
                path: path.to_path_buf(),
                version: v,
            }),
            other => bail!(
                "{}: schema version {other:?} is not the {SCHEMA_VERSION} this build knows; \
                 flush it with the version that wrote it",
                path.display()
            ),
        }
    }

    /// Opens an existing segment, waiting while another process holds it; gives up at
    /// `deadline`.
    pub fn open_waiting(path: &Path, memory_limit: &str, deadline: Instant) -> Result<Segment> {
        let mut pause = Duration::from_millis(2);
        loop {
            match Segment::open(path, memory_limit) {
                Err(e) if says_locked(&e) && Instant::now() + pause < deadline => {
                    sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Sets the segment up for the collector, which checkpoints it itself (see `ROW_GROUP_ROWS`).
    ///
    /// It closes its segment when it seals it: without a checkpoint that close is instant, and
    /// jp-flush (which needs the rows anyway) replays the short WAL when it attaches the file.
    /// DuckDB's own checkpoint at 16 MB of WAL would rewrite the partly filled last row group at
    /// every commit of a backfill; its threshold stays only as a bound for huge entries.
    pub fn for_collector(self) -> Result<Segment> {
        self.conn
            .execute_batch(
                "PRAGMA disable_checkpoint_on_shutdown; SET checkpoint_threshold = '256MB'",
            )
            .with_context(|| format!("failed to configure {}", self.path.display()))?;
        Ok(self)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its tables have this build's column types (rows can be appended to it).
    pub fn is_current(&self) -> bool {
        self.version == SCHEMA_VERSION
    }

    /// The collector's committed state.
    pub fn collector_state(&self) -> Result<Option<CollectorState>> {
        read_collector_state(&self.conn, "collector_state")
            .with_context(|| format!("failed to read the position from {}", self.path.display()))
    }

    /// Whether this segment's rows may repeat rows of others (it was made while the collector
    /// read the journal again after a lost segment).
    pub fn reread(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT bool_or(reread) FROM segment_meta", [], |r| {
                r.get::<_, Option<bool>>(0)
            })
            .map(|r| r.unwrap_or(false))
            .with_context(|| format!("failed to read the segment_meta of {}", self.path.display()))
    }

    /// Where the collector stood when this segment was made.
    pub fn start(&self) -> Result<Position> {
        self.conn
            .query_row(
                "SELECT start_cursor, start_at_head FROM segment_meta LIMIT 1",
                [],
                |r| Ok(Position::from_columns(r.get(0)?, r.get(1)?)),
            )
            .with_context(|| format!("failed to read the start of {}", self.path.display()))
    }

    /// Appends `rows` and records `state` in one transaction: the rows and the position can
    /// never disagree, whatever instant the process dies at. With `checkpoint` (the rows filled
    /// the last row group), checkpoints after the commit.
    pub fn commit(
        &mut self,
        rows: Option<RecordBatch>,
        state: &CollectorState,
        checkpoint: bool,
    ) -> Result<()> {
        let result = (|| -> Result<()> {
            self.conn.execute_batch("BEGIN TRANSACTION")?;
            if let Some(rows) = rows {
                let mut appender = self.conn.appender("journal_logs")?;
                appender.append_record_batch(rows)?;
                appender.flush()?;
            }
            self.write_state(state)?;
            self.conn.execute_batch("COMMIT")?;
            if checkpoint {
                self.conn.execute_batch("CHECKPOINT")?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result.with_context(|| format!("failed to commit to the segment {}", self.path.display()))
    }

    fn write_state(&self, state: &CollectorState) -> Result<()> {
        let (cursor, at_head) = state.position.columns();
        self.conn.execute("DELETE FROM collector_state", [])?;
        self.conn.execute(
            "INSERT INTO collector_state VALUES (?, ?, make_timestamp(?), ?, now()::TIMESTAMP)",
            params![cursor, at_head, state.watermark_usec, state.gaps_total],
        )?;
        Ok(())
    }

    pub fn row_count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM journal_logs", [], |r| r.get(0))
            .with_context(|| format!("failed to count rows in {}", self.path.display()))
    }

    /// Closes the file so that another process can open it (without a checkpoint when
    /// `for_collector` was called).
    pub fn close(self) -> Result<()> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| e)
            .with_context(|| format!("failed to close the segment {}", path.display()))
    }

    /// Checkpoints and closes: the file stands alone, with no WAL beside it.
    fn close_checkpointed(self) -> Result<()> {
        self.conn
            .execute_batch("CHECKPOINT")
            .with_context(|| format!("failed to checkpoint {}", self.path.display()))?;
        self.close()
    }
}

/// Reads a `collector_state` table (`table` may name an attached database's).
pub fn read_collector_state(conn: &Connection, table: &str) -> Result<Option<CollectorState>> {
    let row = conn
        .query_row(
            &format!(
                "SELECT cursor, at_head, epoch_us(watermark), gaps_total FROM {table} LIMIT 1"
            ),
            [],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, u64>(3)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(
        |(cursor, at_head, watermark_usec, gaps_total)| CollectorState {
            position: Position::from_columns(cursor, at_head),
            watermark_usec,
            gaps_total,
        },
    ))
}
