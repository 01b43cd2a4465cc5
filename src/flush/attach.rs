//! The sealed segments, attached to one DuckDB of jp-flush's own, a window of them at a time.

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::buffer::segment::{read_collector_state, CollectorState};
use crate::buffer::Buffer;
use crate::config::Settings;
use crate::schema::columns::cast_columns;
use crate::sys::duckdb::{chain_text, config as duckdb_config, quote, says_database_damaged};
use crate::sys::fault;

/// How many sealed segments are attached at once. Each attached DuckDB file keeps some blocks of
/// its own in memory: hundreds of them (a backlog of failed flushes, a storm of killed ones) did
/// not fit in `flush_memory_limit` (measured: out of memory at 183 MiB). A minute whose rows lie
/// in two windows is written from the first and merged from the second.
pub(super) const ATTACH_AT_ONCE: usize = 16;

/// The sealed segments, attached to one in-memory DuckDB of jp-flush's own (tuned for exporting:
/// its own memory limit, and a spill directory in the state directory), with two views for
/// anyone who wants to look at the buffer as one table: `journal_logs` (every segment's rows)
/// and `collector_state` (the newest segment's).
pub struct Attached {
    pub(super) conn: Connection,
    pub(super) buffer: Buffer,
    pub(super) segments: Vec<AttachedSegment>,
}

pub(super) struct AttachedSegment {
    pub(super) no: u64,
    /// The schema it is attached as.
    pub(super) alias: String,
    /// Its rows may repeat rows of other segments (it read the journal again after a loss).
    pub(super) reread: bool,
}

/// jp-flush's own in-memory DuckDB (the export's, compaction's): its memory limit, and a spill
/// directory in the state directory (a merge's anti join and a day's sort spill beyond it).
pub(super) fn flush_duckdb(settings: &Settings) -> Result<Connection> {
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
    Ok(conn)
}

impl Attached {
    /// Attaches the segments `sealed`. One that DuckDB finds damaged is set aside, and the
    /// collector is asked to read its entries again (`Buffer::request_reread`).
    pub fn open(settings: &Settings, buffer: &Buffer, sealed: &[u64]) -> Result<Attached> {
        let conn = flush_duckdb(settings)?;
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
                Err(e) if says_database_damaged(&e) => {
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
                "{}; {};",
                crate::buffer::segment::journal_logs_ddl("temp.journal_logs"),
                crate::buffer::segment::collector_state_ddl("temp.collector_state")
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
