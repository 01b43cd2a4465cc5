//! The buffer: a directory of segments, `STATE/buffer/NNNNNNNN.duckdb`, each a DuckDB file
//! (`segment`).
//!
//! Who owns what:
//! - The collector appends to the highest-numbered segment, and only to it.
//! - Sealing makes the next segment: it is created under a temporary name with the collector's
//!   state, closed and renamed into place, so that a segment file either exists whole or not at
//!   all. Segments are only ever made under the collector's lock (`collector.lock`): by the
//!   collector when jp-flush asks it to seal, or by jp-flush itself when no collector runs.
//! - Every segment below the highest is sealed: nobody appends to it again, and it belongs to
//!   jp-flush, which exports its completed minutes, deletes their rows and removes the file once
//!   it is empty. Numbers only grow, so a sealed segment never becomes the highest again.
//!
//! Beside each segment, `NNNNNNNN.start` holds the position the collector stood at when the
//! segment was made: where to read again should that segment be lost. It is written before the
//! segment appears and removed after it goes, so the collector can tell the oldest position not
//! yet in Parquet (the state file's restart point) without opening a segment jp-flush holds.
//! A sealed segment that jp-flush finds damaged is set aside and its `.start` renamed to
//! `NNNNNNNN.reread`: the collector reads the journal again from there at its next seal (or
//! start), and jp-flush drops the rows that repeat what is already in Parquet or in other
//! segments.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::OptionalExt;

use crate::buffer::segment::{CollectorState, Segment, META_DDL, SCHEMA_VERSION};
use crate::journal::position::{write_atomically, Position};
use crate::sys::duckdb::config as duckdb_config;
use crate::sys::files::{make_private_dir, sync_dir};

/// The buffer directory, and the memory limit its segments are opened with.
#[derive(Debug, Clone)]
pub struct Buffer {
    dir: PathBuf,
    memory_limit: String,
}

/// The file name of segment `no`, zero-padded so that names sort by number.
fn segment_name(no: u64) -> String {
    format!("{no:08}.duckdb")
}

/// The number of a segment file name, None for any other name.
fn segment_no(name: &OsStr, suffix: &str) -> Option<u64> {
    let name = name.to_str()?;
    let digits = name.strip_suffix(suffix)?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Buffer {
    pub fn new(dir: PathBuf, memory_limit: &str) -> Buffer {
        Buffer {
            dir,
            memory_limit: memory_limit.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn memory_limit(&self) -> &str {
        &self.memory_limit
    }

    pub fn segment_path(&self, no: u64) -> PathBuf {
        self.dir.join(segment_name(no))
    }

    fn sidecar(&self, no: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{no:08}.{ext}"))
    }

    fn wal(path: &Path) -> PathBuf {
        PathBuf::from(format!("{}.wal", path.display()))
    }

    /// Numbers of the files in the directory that end with `suffix`, in order.
    fn numbers(&self, suffix: &str) -> Result<Vec<u64>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to list {}", self.dir.display()))
            }
        };
        let mut out: Vec<u64> = entries
            .flatten()
            .filter_map(|e| segment_no(&e.file_name(), suffix))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The segments present, in order: the last one is the collector's.
    pub fn segments(&self) -> Result<Vec<u64>> {
        self.numbers(".duckdb")
    }

    /// The position segment `no` started at, from its `.start` file (None when it has none).
    pub fn start_of(&self, no: u64) -> Result<Option<Position>> {
        read_position(&self.sidecar(no, "start"))
    }

    /// Where to read again if every segment were lost: the start of the oldest one.
    pub fn oldest_start(&self) -> Result<Option<Position>> {
        for no in self.segments()? {
            if let Some(p) = self.start_of(no)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Makes segment `no` with the collector's `state`, starting at `start`: the `.start` file
    /// first, then the DuckDB file under a temporary name, renamed into place once complete.
    /// Call only with the collector's lock held.
    pub fn create(
        &self,
        no: u64,
        start: &Position,
        state: &CollectorState,
        reread: bool,
    ) -> Result<PathBuf> {
        self.write_start(no, start)?;
        let path = self.segment_path(no);
        let tmp = PathBuf::from(format!("{}.new", path.display()));
        for leftover in [&tmp, &Self::wal(&tmp)] {
            remove_if_present(leftover)?;
        }
        Segment::create(&tmp, &self.memory_limit, start, state, reread)?;
        std::fs::rename(&tmp, &path).with_context(|| {
            format!("failed to put the new segment {} in place", path.display())
        })?;
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Writes segment `no`'s `.start` (before the segment itself appears).
    fn write_start(&self, no: u64, start: &Position) -> Result<()> {
        make_private_dir(&self.dir).context("cannot use the buffer directory")?;
        write_atomically(
            &self.sidecar(no, "start"),
            format!("{}\n", start.to_line()).as_bytes(),
            0o640,
        )
    }

    /// Removes segment `no` (empty, or its rows all exported): the file, its WAL, then its
    /// `.start`, so that a crash in between never leaves a segment without its start.
    pub fn remove(&self, no: u64) -> Result<()> {
        let path = self.segment_path(no);
        remove_if_present(&path)?;
        remove_if_present(&Self::wal(&path))?;
        remove_if_present(&self.sidecar(no, "start"))?;
        sync_dir(&self.dir)
    }

    /// Sets a damaged segment aside (`NNNNNNNN.duckdb.damaged-UNIXTIME`, with its WAL), kept for
    /// inspection; returns its new name.
    pub fn set_aside(&self, no: u64) -> Result<PathBuf> {
        let path = self.segment_path(no);
        let aside = crate::sys::files::set_aside(&path)?;
        let wal = Self::wal(&path);
        if wal.exists() {
            crate::sys::files::rename_durably(&wal, &Self::wal(&aside))
                .with_context(|| format!("failed to set the damaged {} aside", wal.display()))?;
        }
        Ok(aside)
    }

    /// jp-flush found sealed segment `no` damaged and set it aside: asks the collector to read
    /// the journal again from where that segment started.
    /// Asked before the segment is set aside: a run killed in between finds the segment damaged
    /// again, and its `.start` already renamed (or, once the collector has read again and removed
    /// the request, gone): there is nothing more to ask then.
    pub fn request_reread(&self, no: u64) -> Result<()> {
        let start = self.sidecar(no, "start");
        let reread = self.sidecar(no, "reread");
        match std::fs::rename(&start, &reread) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "failed to rename {} to {}",
                    start.display(),
                    reread.display()
                )
            }),
        }
    }

    /// The positions to read again from (see `request_reread`), oldest segment first, with the
    /// files that asked for them.
    pub fn reread_requests(&self) -> Result<Vec<(PathBuf, Position)>> {
        let mut out = Vec::new();
        for no in self.numbers(".reread")? {
            let path = self.sidecar(no, "reread");
            if let Some(p) = read_position(&path)? {
                out.push((path, p));
            }
        }
        Ok(out)
    }

    /// Removes what a crash can leave behind: a segment half made (its temporary name), and
    /// `.start` files of segments already removed. Call only with the collector's lock held.
    pub fn clean_leftovers(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to list {}", self.dir.display()))
            }
        };
        let segments = self.segments()?;
        for e in entries.flatten() {
            let name = e.file_name();
            let half_made = name.to_string_lossy().ends_with(".duckdb.new")
                || name.to_string_lossy().ends_with(".duckdb.new.wal");
            let orphan = segment_no(&name, ".start").is_some_and(|n| !segments.contains(&n));
            if half_made || orphan {
                remove_if_present(&e.path())?;
            }
        }
        Ok(())
    }

    /// Seals the highest segment by making the next one, with the same collector state (read
    /// from it). For jp-flush when no collector runs; call only with the collector's lock held.
    /// Returns the number of the new (open) segment, or None when there is no segment at all.
    pub fn seal_without_collector(&self) -> Result<Option<u64>> {
        let Some(&highest) = self.segments()?.last() else {
            return Ok(None);
        };
        let segment = Segment::open(&self.segment_path(highest), &self.memory_limit)?;
        let state = segment.collector_state()?;
        // A collector stopped in the middle of reading the journal again: the catch-up goes on
        // in the new segment, which may repeat rows as well.
        let reread = segment.reread()?;
        segment.close()?;
        let Some(state) = state else {
            return Ok(Some(highest));
        };
        self.create(highest + 1, &state.position, &state, reread)?;
        Ok(Some(highest + 1))
    }

    /// Turns a buffer left by an earlier version (`STATE/buffer.duckdb`, one file, schema 1 or
    /// 2) into a sealed segment, with a new segment after it holding its collector state. Its
    /// start is the position before its oldest rows (schema 2 keeps it per commit), else
    /// `fallback_start` (the state file's restart point). Call only with the collector's lock
    /// held. Returns whether there was one.
    pub fn adopt_legacy(&self, legacy: &Path, fallback_start: Option<Position>) -> Result<bool> {
        if !legacy.exists() {
            return Ok(false);
        }
        let context = || format!("failed to adopt the earlier buffer {}", legacy.display());
        let config = duckdb_config(&self.memory_limit).with_context(context)?;
        let conn = duckdb::Connection::open_with_flags(legacy, config).with_context(context)?;
        let state = crate::buffer::segment::read_collector_state(&conn, "collector_state")
            .with_context(context)?;
        let rows: u64 = conn
            .query_row("SELECT count(*) FROM journal_logs", [], |r| r.get(0))
            .with_context(context)?;
        let oldest_restart: Option<Position> = if rows == 0 {
            None
        } else {
            conn.query_row(
                "SELECT cursor, at_head FROM restart_points
                 WHERE commit_no = (SELECT min(commit_no) FROM journal_logs)",
                [],
                |r| Ok(Position::from_columns(r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap_or(None) // a schema-1 buffer has no restart points
        };
        let position = state.as_ref().map(|s| s.position.clone());
        let start = match (rows, oldest_restart) {
            (0, _) => position.clone(),
            (_, Some(r)) => Some(r),
            (_, None) => fallback_start.or(Some(Position::Head)),
        }
        .unwrap_or(Position::Head);
        let (cursor, at_head) = start.columns();
        conn.execute_batch(&format!(
            "BEGIN TRANSACTION; {META_DDL}; DELETE FROM segment_meta;"
        ))
        .and_then(|()| {
            conn.execute(
                "INSERT INTO segment_meta VALUES (?, ?, ?, false)",
                duckdb::params![SCHEMA_VERSION, cursor, at_head],
            )
        })
        .and_then(|_| conn.execute_batch("COMMIT; CHECKPOINT;"))
        .with_context(context)?;
        conn.close().map_err(|(_, e)| e).with_context(context)?;

        let no = self.segments()?.last().map_or(1, |n| n + 1);
        self.write_start(no, &start)?;
        let path = self.segment_path(no);
        let legacy_wal = Self::wal(legacy);
        if legacy_wal.exists() {
            std::fs::rename(&legacy_wal, Self::wal(&path)).with_context(context)?;
        }
        std::fs::rename(legacy, &path).with_context(context)?;
        sync_dir(&self.dir)?;
        if let Some(parent) = legacy.parent() {
            sync_dir(parent)?;
            // DuckDB's spill directory of the old file, if a flush left one.
            let _ = std::fs::remove_dir_all(parent.join("buffer.duckdb.tmp"));
        }
        if let Some(state) = state {
            let position = state.position.clone();
            self.create(no + 1, &position, &state, false)?;
        }
        log::info!(
            "adopted the buffer of an earlier version ({rows} entries) as {}",
            path.display()
        );
        Ok(true)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A position written by `Buffer::create` (one line); None when the file does not exist.
fn read_position(path: &Path) -> Result<Option<Position>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Position::from_line(&text)
            .map(Some)
            .with_context(|| format!("{} does not hold a journal position", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbered_names_are_segments() {
        assert_eq!(
            segment_no(OsStr::new("00000012.duckdb"), ".duckdb"),
            Some(12)
        );
        for other in [
            "00000012.duckdb.wal",
            "00000012.duckdb.new",
            "00000012.duckdb.damaged-17",
            ".duckdb",
            "x1.duckdb",
        ] {
            assert_eq!(segment_no(OsStr::new(other), ".duckdb"), None, "{other}");
        }
        assert_eq!(segment_name(7), "00000007.duckdb");
    }
}
