//! The collector: journal → open segment of the buffer, exactly once.
//!
//! Each commit appends a batch of rows and records the position after the last one in the same
//! DuckDB transaction, then mirrors it to the state file. A crash at any instant therefore
//! leaves the segment holding exactly the entries up to its recorded position, and the next start
//! resumes right after it. When jp-flush asks, the open segment is sealed and a new one opened
//! (`writer::Writer::seal`), in milliseconds: the collector never waits for an export.
//!
//! Rooms: `resume` decides where to start and `start` sets up (and stops) the collector;
//! `reader` reads the journal into a `batch`; `writer` commits and seals, `seals` holds the seal
//! protocol; `event_loop` runs between them; `status` speaks to systemd, `metrics` writes the
//! metrics file, `progress` draws the backlog's progress line.

mod batch;
mod event_loop;
mod metrics;
mod progress;
mod reader;
mod resume;
mod seals;
mod start;
mod status;
mod writer;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{CollectorArgs, Settings};
use crate::flush::Report;
use crate::journal::position::{FirstStart, Position};
use crate::sys::service;
use batch::Batch;

use reader::{Limits, Reader};
use seals::Seals;
use status::{Figures, Status};
use writer::Writer;

/// Entries stamped this long before the moment the journal was last found caught up may be
/// considered complete: journald stamps an entry and writes it in one step.
const WATERMARK_GRACE: Duration = Duration::from_secs(5);
/// At a seal, a batch in hand up to this size is committed into the sealed segment (cheap); a
/// larger one stays in hand for the next segment, so that a seal never waits for a big commit.
const SEAL_COMMITS_UP_TO: usize = 5000;

struct Collector {
    settings: Settings,
    limits: Limits,
    reader: Reader,
    writer: Writer,
    batch: Batch,
    /// When the oldest uncommitted entry of the batch in hand was read.
    pending_since: Option<Instant>,
    /// When reading last found the journal caught up (µs since the epoch); None while behind.
    caught_up_at: Option<i64>,
    status: Status,
    /// Who asked for a seal, and whether it runs.
    seals: Seals,
    /// The longest the reader waited for a seal (on the commit thread) to finish.
    longest_stall: Duration,
    /// `--flush-every`: the export running beside the collector, if any.
    background_flush: Option<JoinHandle<Result<Report>>>,
    /// The progress line of a backlog read at a terminal, until caught up.
    progress: Option<progress::Progress>,
    /// When the metrics file was last written.
    metrics_written: Instant,
}

impl Collector {
    fn figures(&self) -> Figures {
        Figures {
            segment_rows: self.writer.segment_rows,
            committed_total: self.writer.committed_total,
            newest_usec: self.reader.newest_usec,
            caught_up: self.caught_up_at.is_some(),
            filtered: self.reader.filtered,
        }
    }

    /// SIGHUP (`systemctl reload`): reads the config file again. Filters, log level, batch
    /// limits, retention and the flush settings apply at once; keys that need a restart are named
    /// in a warning and keep their value; a bad file keeps the configuration in effect. Never
    /// fails: a reload must not stop the collector.
    fn reload(&mut self, args: &CollectorArgs) {
        service::notify_reloading();
        match Settings::for_collector(args) {
            Err(e) => {
                log::error!(
                    "{}: the configuration was not reloaded; the one in effect stays",
                    crate::sys::duckdb::chain_text(&e)
                )
            }
            Ok(new) => {
                let restart = self.settings.needs_restart(&new);
                if !restart.is_empty() {
                    log::warn!(
                        "reloaded the configuration, but {} only take(s) effect at a restart \
                         (systemctl restart journal-parquet)",
                        restart.join(", ")
                    );
                }
                log::set_max_level(new.log_level);
                self.reader.set_filter(new.filter.clone());
                self.reader
                    .journal
                    .set_reopen_every(new.journal_reopen_entries);
                self.limits = Limits {
                    entries: new.max_batch_entries,
                    bytes: new.max_batch_bytes,
                };
                self.settings = self.settings.reloaded(new);
                log::info!(
                    "reloaded the configuration{}",
                    self.settings
                        .config_file
                        .as_ref()
                        .map(|f| format!(" from {}", f.display()))
                        .unwrap_or_default()
                );
            }
        }
        service::notify_ready(&self.figures().text());
    }

    fn refresh_status(&mut self, force: bool) {
        let figures = self.figures();
        self.status.refresh(&figures, force);
    }

    /// The watermark that may be committed now: every entry stamped before it has been read,
    /// and none of the batch in hand when that batch is not part of the commit.
    fn watermark(&self, with_batch: bool) -> Option<i64> {
        let w = self
            .caught_up_at
            .map(|t| t - WATERMARK_GRACE.as_micros() as i64)?;
        match (with_batch, self.batch.oldest_usec()) {
            (false, Some(oldest)) => Some(w.min(oldest)),
            _ => Some(w),
        }
    }

    /// Starts committing the batch in hand (possibly empty) with the position and watermark.
    fn commit(&mut self) -> Result<()> {
        let rows = (!self.batch.is_empty()).then(|| self.batch.take());
        let position = self.reader.journal.position().map(Position::After);
        let watermark = self.watermark(true);
        *self.writer.gaps_total_mut() += self.reader.journal.take_gaps();
        self.writer.commit(rows, position, watermark)?;
        self.pending_since = None;
        self.reader.unsaved = false;
        Ok(())
    }

    /// Commits the batch in hand and waits until it is durable.
    fn commit_now(&mut self) -> Result<()> {
        self.commit()?;
        self.writer.settle()
    }

    /// Seals the open segment and waits until it is done (the collector's own `--flush-every`,
    /// or a re-read jp-flush asked for); returns the new segment's number. A small batch in hand
    /// goes into the sealed segment; a large one stays in hand, and only the watermark moves.
    fn seal(&mut self) -> Result<u64> {
        self.commit_before_seal(false)?;
        let sealed = self.writer.seal()?;
        if let Some(p) = sealed.rewind_to {
            // Everything from there is read again; the batch in hand is part of it.
            drop(self.batch.take());
            self.pending_since = None;
            self.reader.journal.position_at(
                Some(&p),
                FirstStart::Tail,
                self.writer.gaps_total_mut(),
            )?;
        }
        Ok(sealed.open)
    }

    /// Commits what must go into a segment about to be sealed: the batch in hand when it is
    /// small, else only the watermark (never past the batch's oldest entry), so that a seal
    /// never waits for a big commit. With `and_seal`, the seal follows on the commit thread.
    fn commit_before_seal(&mut self, and_seal: bool) -> Result<()> {
        let small = self.batch.len() <= SEAL_COMMITS_UP_TO;
        let watermark = self.watermark(small);
        let (rows, position) = match small {
            true => (
                (!self.batch.is_empty()).then(|| self.batch.take()),
                self.reader.journal.position().map(Position::After),
            ),
            false => (None, None),
        };
        if small {
            *self.writer.gaps_total_mut() += self.reader.journal.take_gaps();
            self.pending_since = None;
            self.reader.unsaved = false;
        }
        match and_seal {
            true => self.writer.seal_in_background(rows, position, watermark),
            false => self.writer.commit(rows, position, watermark),
        }
    }

    /// Takes up the seal requests: starts a seal when none is running and no commit is in
    /// flight (a re-read jp-flush asked for is done at once), and answers those waiting once
    /// their seal is done.
    fn serve_seals(&mut self) -> Result<()> {
        if let Some(open) = self.writer.take_sealed() {
            if let Some(asked) = self.seals.finished(open) {
                log::debug!(
                    "sealed the segment below {open}: jp-flush answered {:.1} ms after it asked \
                     (reading went on; longest stall {:.1} ms)",
                    asked.elapsed().as_secs_f64() * 1e3,
                    self.longest_stall.as_secs_f64() * 1e3
                );
            }
            self.refresh_status(true);
        }
        if !self.seals.asked() || self.writer.in_flight() {
            return Ok(());
        }
        if self.writer.reread_asked()? {
            let open = self.seal()?;
            self.seals.done_at_once(open);
            return Ok(());
        }
        self.commit_before_seal(true)?;
        self.seals.started();
        Ok(())
    }

    /// Notes how long the reader just waited for a seal to finish.
    fn note_stall(&mut self) {
        self.longest_stall = self.longest_stall.max(self.writer.last_seal_wait());
    }

    /// `--flush-every`: seals, then exports the sealed segments on a thread of its own while
    /// reading goes on. A failed export is logged; its rows stay for the next one.
    fn flush_here(&mut self) -> Result<()> {
        if let Some(previous) = self.background_flush.take() {
            if !previous.is_finished() {
                self.background_flush = Some(previous);
                return Ok(());
            }
            log_flush(previous);
        }
        let open = self.seal()?;
        let settings = self.settings.clone();
        let thread = std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || crate::flush::flush_below(&settings, open, false))
            .context("failed to start a flush thread")?;
        self.background_flush = Some(thread);
        Ok(())
    }
}

fn log_flush(thread: JoinHandle<Result<Report>>) {
    match thread.join() {
        Ok(Ok(r)) => log::debug!(
            "flushed {} entries into {} files ({} merged)",
            r.rows_exported,
            r.files_written,
            r.files_merged
        ),
        Ok(Err(e)) => log::error!("{}", crate::sys::duckdb::chain_text(&e)),
        Err(_) => log::error!("the flush thread panicked"),
    }
}

/// Runs the collector until SIGTERM/SIGINT (or, with `--once`, until caught up).
pub fn run(args: &CollectorArgs) -> Result<()> {
    // First of all: a SIGTERM that comes while the configuration is read must wait for the main
    // loop (and a clean exit 0), not kill the process.
    let mut signals = service::Signals::block()?;
    let settings = Settings::for_collector(args)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    service::init_logging(settings.log_level, "journal-parquet");
    crate::sys::user::become_owner(
        &[&settings.state_dir, &settings.data_dir],
        "journal-parquet",
    )?;
    crate::sys::files::make_private_dir(&settings.state_dir)
        .context("cannot use the state directory")?;
    let _lock = resume::lock_state_dir(&settings.state_dir)?;
    let (mut collector, listener) = start::start(args, settings)?;
    let result = event_loop::main_loop(&mut collector, &listener, &mut signals, args);
    collector.stop(result)
}
