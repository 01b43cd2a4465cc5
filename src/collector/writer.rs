//! Committing: batches into the open segment, the position beside them, the state file after
//! them, and sealing the segment for jp-flush.
//!
//! A commit runs on a thread of its own while the reader fills the next batch: reading the
//! journal and appending to DuckDB take about half the time each, and the machine has two cores.
//! At most one commit is in flight; the state file is written only once it is durable
//! (`settle`), and everything else that touches the segment settles first.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use duckdb::arrow::record_batch::RecordBatch;

use crate::buffer::Buffer;
use crate::position::{write_state_file, Position, SavedState};
use crate::segment::{CollectorState, Segment};

/// Who holds the open segment.
enum Slot {
    /// The writer: nothing in flight.
    Idle(Segment),
    /// A commit on its own thread, which owns the segment until it is joined.
    Committing(InFlight),
    /// Nobody: the segment was closed (stop), or a commit thread panicked.
    Closed,
}

struct InFlight {
    thread: JoinHandle<(Segment, Result<()>)>,
    rows: u64,
    started: Instant,
}

/// What a seal did.
pub struct Sealed {
    /// The new open segment: every segment below it is jp-flush's.
    pub open: u64,
    /// jp-flush asked for the journal to be read again from here (a sealed segment was lost):
    /// the reader must go back to it.
    pub rewind_to: Option<Position>,
}

pub struct Writer {
    buffer: Buffer,
    state_file: PathBuf,
    open_no: u64,
    slot: Slot,
    /// What the last commit recorded (or will, once settled).
    state: CollectorState,
    /// Rows committed to the open segment.
    pub segment_rows: u64,
    /// Rows committed since the collector started.
    pub committed_total: u64,
}

impl Writer {
    /// Takes over the open segment `no` of `buffer`, whose committed state is `state`.
    pub fn new(
        buffer: Buffer,
        state_file: PathBuf,
        no: u64,
        segment: Segment,
        state: CollectorState,
    ) -> Result<Writer> {
        let segment_rows = segment.row_count()?;
        Ok(Writer {
            buffer,
            state_file,
            open_no: no,
            slot: Slot::Idle(segment),
            state,
            segment_rows,
            committed_total: 0,
        })
    }

    /// Makes segment `no` starting at `start` with `state`, opens it and takes it over.
    pub fn create(
        buffer: Buffer,
        state_file: PathBuf,
        no: u64,
        start: &Position,
        state: CollectorState,
        reread: bool,
    ) -> Result<Writer> {
        let segment = open_new(&buffer, no, start, &state, reread)?;
        Writer::new(buffer, state_file, no, segment, state)
    }

    pub fn state(&self) -> &CollectorState {
        &self.state
    }

    pub fn gaps_total_mut(&mut self) -> &mut u64 {
        &mut self.state.gaps_total
    }

    /// Whether a commit is in flight and done (ready to settle without waiting).
    pub fn finished_in_flight(&self) -> bool {
        matches!(&self.slot, Slot::Committing(f) if f.thread.is_finished())
    }

    pub fn in_flight(&self) -> bool {
        matches!(self.slot, Slot::Committing(_))
    }

    /// Starts committing `rows` (if any) with the position and watermark (each None: unchanged),
    /// in the background; `settle` finishes it. One commit at a time: this settles the previous
    /// one.
    pub fn commit(
        &mut self,
        rows: Option<RecordBatch>,
        position: Option<Position>,
        watermark_usec: Option<i64>,
    ) -> Result<()> {
        self.settle()?;
        if let Some(p) = position {
            self.state.position = p;
        }
        if watermark_usec.is_some() {
            self.state.watermark_usec = watermark_usec;
        }
        let n = rows.as_ref().map_or(0, |r| r.num_rows() as u64);
        let state = self.state.clone();
        let Slot::Idle(mut segment) = std::mem::replace(&mut self.slot, Slot::Closed) else {
            // Settled above: only a closed segment is left here.
            bail!("the open segment is closed: nothing can be committed");
        };
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let result = segment.commit(rows, &state);
                (segment, result)
            })
            .context("failed to start a commit thread")?;
        self.slot = Slot::Committing(InFlight {
            thread,
            rows: n,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Waits for the commit in flight, if any, takes the segment back and mirrors the committed
    /// position to the state file. A failed commit is fatal: the caller exits, and the next
    /// start resumes from the segment's committed position (the journal still holds the rows).
    pub fn settle(&mut self) -> Result<()> {
        let done = match std::mem::replace(&mut self.slot, Slot::Closed) {
            Slot::Committing(done) => done,
            other => {
                self.slot = other;
                return Ok(());
            }
        };
        let (segment, result) = match done.thread.join() {
            Ok(r) => r,
            Err(_) => bail!("the commit thread panicked"),
        };
        self.slot = Slot::Idle(segment);
        result?;
        self.segment_rows += done.rows;
        self.committed_total += done.rows;
        self.save_state_file()?;
        log::debug!(
            "committed {} entries in {:?}",
            done.rows,
            done.started.elapsed()
        );
        Ok(())
    }

    /// Mirrors the committed position, and the restart point (the start of the oldest segment
    /// still present), into the state file.
    fn save_state_file(&self) -> Result<()> {
        if let Position::After(c) = &self.state.position {
            let restart = self.buffer.oldest_start()?;
            let saved = SavedState {
                cursor: c.clone(),
                restart: restart.filter(|r| r != &self.state.position),
            };
            write_state_file(&self.state_file, &saved)?;
        }
        Ok(())
    }

    /// Seals the open segment for jp-flush: closes it (without a checkpoint: instant) and opens
    /// the next one with the committed state. Commits nothing itself: the caller commits first
    /// what must be in the sealed segment. When jp-flush asked for a lost segment to be read
    /// again, the new segment starts there instead (see `Sealed::rewind_to`).
    pub fn seal(&mut self) -> Result<Sealed> {
        self.settle()?;
        let requests = self.buffer.reread_requests()?;
        let rewind_to = requests.first().map(|(_, p)| p.clone());
        if let Some(p) = &rewind_to {
            log_reread(p);
            self.state.position = p.clone();
        }
        let start = self.state.position.clone();
        let next = self.open_no + 1;
        // The new segment first: until it exists, the old one stays the collector's.
        let segment = open_new(&self.buffer, next, &start, &self.state, rewind_to.is_some())?;
        match std::mem::replace(&mut self.slot, Slot::Idle(segment)) {
            Slot::Idle(old) => old.close()?,
            Slot::Committing(_) | Slot::Closed => {}
        }
        for (path, _) in &requests {
            std::fs::remove_file(path)
                .with_context(|| format!("failed to remove {}", path.display()))?;
        }
        self.open_no = next;
        self.segment_rows = 0;
        self.save_state_file()?;
        Ok(Sealed {
            open: next,
            rewind_to,
        })
    }

    /// Settles and closes the open segment (stop).
    pub fn close(mut self) -> Result<()> {
        self.settle()?;
        match std::mem::replace(&mut self.slot, Slot::Closed) {
            Slot::Idle(segment) => segment.close(),
            Slot::Committing(_) | Slot::Closed => Ok(()),
        }
    }
}

/// Says that the journal is read again from `p` because jp-flush lost a sealed segment.
pub fn log_reread(p: &Position) {
    log::warn!(
        "reading the journal again from {} (a sealed segment was damaged; the entries that \
         repeat are dropped when they are written to Parquet)",
        p.to_line()
    );
}

/// Makes segment `no` and opens it for appending.
fn open_new(
    buffer: &Buffer,
    no: u64,
    start: &Position,
    state: &CollectorState,
    reread: bool,
) -> Result<Segment> {
    let path = buffer.create(no, start, state, reread)?;
    Segment::open(&path, buffer.memory_limit())?.without_checkpoint_on_close()
}
