//! Committing: batches into the open segment, the position beside them, the state file after
//! them, and sealing the segment for jp-flush.
//!
//! A commit runs on a thread of its own while the reader fills the next batch: reading the
//! journal and appending to DuckDB take about half the time each, and the machine has two cores.
//! At most one commit is in flight; the state file is written only once it is durable
//! (`settle`), and everything else that touches the segment settles first.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use duckdb::arrow::record_batch::RecordBatch;

use crate::buffer::segment::{CollectorState, Segment, ROW_GROUP_ROWS};
use crate::buffer::Buffer;
use crate::journal::position::{write_state_file, Position, SavedState};

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
    thread: JoinHandle<Done>,
    rows: u64,
    started: Instant,
    /// It seals the segment too.
    sealing: bool,
}

/// What a commit thread hands back.
struct Done {
    /// The collector's segment from now on: the new one after a seal.
    segment: Segment,
    /// The commit's result: a failure is fatal.
    committed: Result<()>,
    /// After a seal: the new segment's number, or why there is none (the old one stays open).
    sealed: Option<Result<u64>>,
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
    /// Commits settled since the collector started, and the time they took (for the metrics).
    pub commits: u64,
    pub commit_seconds: f64,
    /// A seal finished since `take_sealed` was last called: the open segment's number then.
    sealed: Option<u64>,
    /// How long the last `settle` waited for its thread, and whether that thread was sealing.
    last_wait: (Duration, bool),
    /// Reading the journal again after a lost segment, and not yet back at the tail: every
    /// segment made meanwhile may repeat rows of others, and is flagged so (`reread`), however
    /// many seals the catch-up spans.
    catching_up: bool,
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
        // A catch-up that a restart interrupted goes on: its open segment says so.
        let catching_up = segment.reread()?;
        Ok(Writer {
            buffer,
            state_file,
            open_no: no,
            slot: Slot::Idle(segment),
            state,
            segment_rows,
            committed_total: 0,
            commits: 0,
            commit_seconds: 0.0,
            sealed: None,
            last_wait: (Duration::ZERO, false),
            catching_up,
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

    /// The buffer's directory (for the metrics of its size).
    pub fn buffer_dir(&self) -> &std::path::Path {
        self.buffer.dir()
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

    /// How many rows the open segment's last row group has room for, counting the commit in
    /// flight: a batch of that size ends on a row group boundary (see `ROW_GROUP_ROWS`).
    pub fn room_in_row_group(&self) -> usize {
        let in_flight = match &self.slot {
            Slot::Committing(f) if f.sealing => return ROW_GROUP_ROWS as usize,
            Slot::Committing(f) => f.rows,
            Slot::Idle(_) | Slot::Closed => 0,
        };
        (ROW_GROUP_ROWS - (self.segment_rows + in_flight) % ROW_GROUP_ROWS) as usize
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
        self.start(rows, position, watermark_usec, None)
    }

    /// `commit`, then, on the same thread, seals the segment: closes it (without a checkpoint)
    /// once the new one exists, with the state just committed. The reader goes on meanwhile;
    /// `take_sealed` tells when it is done.
    pub fn seal_in_background(
        &mut self,
        rows: Option<RecordBatch>,
        position: Option<Position>,
        watermark_usec: Option<i64>,
    ) -> Result<()> {
        self.start(rows, position, watermark_usec, Some(false))
    }

    /// The reader reached the tail with every entry it read handed over: a catch-up after a
    /// lost segment (if any) is over, and the next segment no longer repeats rows.
    pub fn caught_up(&mut self) {
        if self.catching_up {
            log::debug!("caught up after reading the journal again");
        }
        self.catching_up = false;
    }

    /// Starts a commit thread; `seal`: also seal (Some(whether a re-read starts with the new
    /// segment)).
    fn start(
        &mut self,
        rows: Option<RecordBatch>,
        position: Option<Position>,
        watermark_usec: Option<i64>,
        seal: Option<bool>,
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
        let buffer = self.buffer.clone();
        let next = self.open_no + 1;
        if seal == Some(true) {
            self.catching_up = true;
        }
        let seal = seal.map(|rewinds| rewinds || self.catching_up);
        // A sealed segment is checkpointed by jp-flush: a seal never waits for one.
        let checkpoint =
            n > 0 && (self.segment_rows + n).is_multiple_of(ROW_GROUP_ROWS) && seal.is_none();
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let committed = segment.commit(rows, &state, checkpoint);
                let Some(reread) = seal.filter(|_| committed.is_ok()) else {
                    return Done {
                        segment,
                        committed,
                        sealed: None,
                    };
                };
                // The new segment first: until it exists, the old one stays the collector's.
                match open_new(&buffer, next, &state.position, &state, reread) {
                    Ok(new) => Done {
                        committed: segment.close(),
                        segment: new,
                        sealed: Some(Ok(next)),
                    },
                    Err(e) => Done {
                        segment,
                        committed,
                        sealed: Some(Err(e)),
                    },
                }
            })
            .context("failed to start a commit thread")?;
        self.slot = Slot::Committing(InFlight {
            thread,
            rows: n,
            started: Instant::now(),
            sealing: seal.is_some(),
        });
        Ok(())
    }

    /// Waits for the commit in flight, if any, takes the segment back and mirrors the committed
    /// position to the state file. A failed commit is fatal: the caller exits, and the next
    /// start resumes from the segment's committed position (the journal still holds the rows).
    /// A failed seal is not: the segment stays open, and jp-flush gets the ones below it.
    pub fn settle(&mut self) -> Result<()> {
        let done = match std::mem::replace(&mut self.slot, Slot::Closed) {
            Slot::Committing(done) => done,
            other => {
                self.slot = other;
                return Ok(());
            }
        };
        let waiting = Instant::now();
        let finished = done.thread.is_finished();
        let Ok(result) = done.thread.join() else {
            bail!("the commit thread panicked");
        };
        self.last_wait = match finished {
            true => (Duration::ZERO, done.sealing),
            false => (waiting.elapsed(), done.sealing),
        };
        self.slot = Slot::Idle(result.segment);
        result.committed?;
        self.segment_rows += done.rows;
        self.committed_total += done.rows;
        self.commits += 1;
        self.commit_seconds += done.started.elapsed().as_secs_f64();
        match result.sealed {
            Some(Ok(next)) => {
                self.open_no = next;
                self.segment_rows = 0;
                self.sealed = Some(next);
            }
            Some(Err(e)) => {
                log::error!(
                    "{}: the segment {} stays open; jp-flush gets those below it",
                    crate::sys::duckdb::chain_text(&e),
                    self.buffer.segment_path(self.open_no).display()
                );
                self.sealed = Some(self.open_no);
            }
            None => {}
        }
        self.save_state_file()?;
        crate::sys::fault::point("collector-commit-settled")?;
        log::debug!(
            "committed {} entries in {:?}{}",
            done.rows,
            done.started.elapsed(),
            if done.sealing { " and sealed" } else { "" }
        );
        Ok(())
    }

    /// The open segment's number after a seal that finished since the last call, if any.
    pub fn take_sealed(&mut self) -> Option<u64> {
        self.sealed.take()
    }

    /// How long the last `settle` waited for a seal on its thread (zero: it did not).
    pub fn last_seal_wait(&self) -> Duration {
        match self.last_wait {
            (wait, true) => wait,
            _ => Duration::ZERO,
        }
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

    /// Seals the open segment and waits until it is done (`--flush-every`, or when jp-flush asked
    /// for a lost segment to be read again: the new segment starts there instead, see
    /// `Sealed::rewind_to`). Commits nothing itself: the caller commits first what must be in the
    /// sealed segment.
    pub fn seal(&mut self) -> Result<Sealed> {
        self.settle()?;
        let requests = self.buffer.reread_requests()?;
        let rewind_to = requests.first().map(|(_, p)| p.clone());
        if let Some(p) = &rewind_to {
            log_reread(p);
        }
        self.start(None, rewind_to.clone(), None, Some(rewind_to.is_some()))?;
        self.settle()?;
        for (path, _) in &requests {
            std::fs::remove_file(path)
                .with_context(|| format!("failed to remove {}", path.display()))?;
        }
        Ok(Sealed {
            open: self.take_sealed().unwrap_or(self.open_no),
            rewind_to,
        })
    }

    /// Whether jp-flush asked for a lost segment to be read again (then `seal` does it).
    pub fn reread_asked(&self) -> Result<bool> {
        Ok(!self.buffer.reread_requests()?.is_empty())
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

/// Makes segment `no` and opens it for appending. When anything fails once the new segment may
/// be in place (its rename, the fsync after it, opening it), the new segment is removed again:
/// left there, it would hold an older position than the segment the collector goes on writing
/// to, and a restart would read those entries a second time into it.
fn open_new(
    buffer: &Buffer,
    no: u64,
    start: &Position,
    state: &CollectorState,
    reread: bool,
) -> Result<Segment> {
    let made = buffer.create(no, start, state, reread).and_then(|path| {
        crate::sys::fault::point("seal-after-rename")?;
        Segment::open(&path, buffer.memory_limit())?.for_collector()
    });
    made.map_err(|e| match buffer.remove(no) {
        Ok(()) => e,
        Err(undo) => e.context(format!(
            "and failed to remove the half-made segment again ({})",
            crate::sys::duckdb::chain_text(&undo)
        )),
    })
}
