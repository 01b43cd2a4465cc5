//! The collector: journal → open segment of the buffer, exactly once.
//!
//! Each commit appends a batch of rows and records the position after the last one in the same
//! DuckDB transaction, then mirrors it to the state file. A crash at any instant therefore
//! leaves the segment holding exactly the entries up to its recorded position, and the next start
//! resumes right after it. When jp-flush asks, the open segment is sealed and a new one opened
//! (`writer::Writer::seal`), in milliseconds: the collector never waits for an export.
//!
//! Rooms: `reader` reads the journal, `writer` commits and seals, `status` speaks to systemd,
//! `resume` decides where to start; this module runs the event loop between them.

mod batch;
mod progress;
mod reader;
mod resume;
mod seals;
mod status;
mod writer;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::buffer::handoff::Listener;
use crate::buffer::segment::CollectorState;
use crate::config::{CollectorArgs, Settings};
use crate::flush::Report;
use crate::journal::position::{FirstStart, Position};
use crate::journal::streams::Streams;
use crate::journal::Source;
use crate::sys::service;
use batch::Batch;

use reader::{Fill, Limits, Reader};
use resume::Found;
use seals::Seals;
use status::{now_usec, Figures, Status};
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

    /// Writes the collector's metrics file (every `metrics::WRITE_EVERY`, and at stop). A file
    /// that cannot be written is logged, never a reason to stop reading.
    fn write_metrics(&mut self) {
        use crate::sys::metrics::{label, Kind, Metrics};
        self.metrics_written = Instant::now();
        let mut m = Metrics::default();
        let (r, w) = (&self.reader, &self.writer);
        m.one(
            Kind::Counter,
            "entries_read_total",
            "Journal entries read, kept or not.",
            r.read_total as f64,
        );
        m.one(
            Kind::Counter,
            "entries_committed_total",
            "Entries committed to the buffer.",
            w.committed_total as f64,
        );
        m.one(
            Kind::Counter,
            "entries_filtered_total",
            "Entries the filters left out.",
            r.filtered as f64,
        );
        m.one(
            Kind::Counter,
            "corrupt_entries_total",
            "Entries with a corrupt data object (the fields before it are kept).",
            r.corrupt_entries as f64,
        );
        m.one(Kind::Counter, "gaps_total", "Gaps found in the journal (entries deleted before they were read), since the buffer began.", w.state().gaps_total as f64);
        m.one(Kind::Counter, "gap_entries_total", "Entries lost to the gaps found since the collector started, where sequence numbers tell.", r.journal.gap_entries() as f64);
        m.one(
            Kind::Counter,
            "commits_total",
            "Commits to the buffer.",
            w.commits as f64,
        );
        m.one(
            Kind::Counter,
            "commit_duration_seconds_total",
            "Time spent committing to the buffer.",
            w.commit_seconds,
        );
        let lag = match (self.caught_up_at, r.newest_usec) {
            (Some(_), _) | (None, None) => 0.0,
            (None, Some(n)) => ((status::now_usec() - n as i64).max(0) as f64) / 1e6,
        };
        m.one(
            Kind::Gauge,
            "lag_seconds",
            "How far behind the newest entry read is (0 when caught up).",
            lag,
        );
        m.one(
            Kind::Gauge,
            "buffer_open_segment_rows",
            "Rows in the buffer's open segment.",
            w.segment_rows as f64,
        );
        let bytes: u64 = std::fs::read_dir(w.buffer_dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        m.one(
            Kind::Gauge,
            "buffer_bytes",
            "Bytes of the buffer's files on disk.",
            bytes as f64,
        );
        let suppressed: Vec<(String, f64)> = r
            .suppressed
            .iter()
            .map(|(unit, n)| (format!("unit=\"{}\"", label(unit)), *n as f64))
            .collect();
        m.add(Kind::Counter, "journald_suppressed_total", "Messages journald's rate limit threw away, by unit (its \"Suppressed N messages\" lines).", &suppressed);
        if let Err(e) = m.write(
            &self.settings.metrics_dir,
            crate::sys::metrics::COLLECTOR_FILE,
        ) {
            log::warn!(
                "{}: the metrics are not up to date",
                crate::sys::duckdb::chain_text(&e)
            );
        }
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
    let buffer = settings.buffer();
    let found = resume::find_open_segment(&settings, &buffer)?;

    if let Source::Directory(dir) = &settings.source {
        if !dir.is_dir() {
            bail!(
                "failed to read journal directory {}: not a directory",
                dir.display()
            );
        }
    }
    let mut journal = Streams::open(&settings.source)?;
    journal.set_reopen_every(settings.journal_reopen_entries);
    if !journal.has_files() {
        log::warn!(
            "nothing readable in {} (yet): check that the directory holds .journal files, or \
             that this user may read the journal (group systemd-journal)",
            settings.source
        );
    }
    let state_file = settings.state_file();
    let (stored, read_again_from) = match &found {
        Found::Last { state, .. } => (state.clone(), None),
        Found::Nothing {
            read_again_from, ..
        } => (None, read_again_from.clone()),
    };
    let position = match read_again_from {
        Some(p) => Some(p),
        None => resume::reconcile(stored.as_ref(), &state_file)?,
    };
    // jp-flush found a sealed segment damaged while no collector ran: read again from there.
    let rereads = buffer.reread_requests()?;
    let (position, reread) = match (rereads.first(), &found, stored.is_some()) {
        (Some((_, p)), _, _) => {
            writer::log_reread(p);
            (Some(p.clone()), true)
        }
        // No segment's state to resume from: the state file's position may repeat entries
        // that are in Parquet already.
        (None, Found::Nothing { .. }, _) | (None, _, false) => {
            let repeats = position.is_some();
            (position, repeats)
        }
        (None, Found::Last { .. }, true) => (position, false),
    };
    let mut gaps = stored.as_ref().map_or(0, |s| s.gaps_total);
    let fresh = journal.position_at(position.as_ref(), args.first_start(), &mut gaps)?;
    let state = CollectorState {
        position: fresh.clone().or(position.clone()).unwrap_or(Position::Head),
        watermark_usec: stored.as_ref().and_then(|s| s.watermark_usec),
        gaps_total: gaps,
    };
    let writer = match found {
        Found::Last {
            no,
            segment,
            state: Some(_),
        } if !reread => Writer::new(buffer.clone(), state_file.clone(), no, segment, state)?,
        Found::Last { no, segment, .. } => {
            segment.close()?;
            Writer::create(
                buffer.clone(),
                state_file.clone(),
                no + 1,
                &state.position.clone(),
                state,
                reread,
            )?
        }
        Found::Nothing { next, .. } => Writer::create(
            buffer.clone(),
            state_file.clone(),
            next,
            &state.position.clone(),
            state,
            reread,
        )?,
    };
    for (path, _) in &rereads {
        std::fs::remove_file(path)
            .with_context(|| format!("failed to remove {}", path.display()))?;
    }
    let filter = settings.filter.clone();
    let mut collector = Collector {
        limits: Limits {
            entries: settings.max_batch_entries,
            bytes: settings.max_batch_bytes,
        },
        settings,
        reader: Reader::new(journal, filter),
        writer,
        batch: Batch::new(crate::archive::layout::local_host_dir()),
        pending_since: None,
        caught_up_at: None,
        status: Status::default(),
        seals: Seals::Idle,
        longest_stall: Duration::ZERO,
        background_flush: None,
        progress: None,
        metrics_written: Instant::now(),
    };
    if fresh.is_some() || reread {
        collector.commit_now()?;
    }
    let listener = Listener::bind(&collector.settings.handoff_socket())?;
    log::info!(
        "reading {} into {} from {}",
        collector.reader.journal.source(),
        buffer.dir().display(),
        match (&position, args.first_start()) {
            (Some(_), _) => "the saved position".to_owned(),
            (None, FirstStart::Head) => "the head (first start)".to_owned(),
            (None, FirstStart::Since(usec)) => format!(
                "the first entry at or after {} (first start)",
                chrono::DateTime::from_timestamp_micros(usec as i64).unwrap_or_default()
            ),
            (None, FirstStart::Tail) => "the tail (first start)".to_owned(),
        }
    );
    collector.progress = progress::Progress::on_terminal(collector.reader.journal.backlog(), 0);
    collector.write_metrics();
    service::notify_ready(&collector.figures().text());
    collector.status.sent();

    let result = main_loop(&mut collector, &listener, &mut signals, args);
    let stop_status = format!("stopping: {}", collector.figures().text());
    service::notify_stopping(&stop_status);
    // A commit in flight finishes whatever happened; then what was read is committed.
    let result = result.and_then(|()| collector.commit_now());
    collector.write_metrics();
    if let Some(flush) = collector.background_flush.take() {
        log_flush(flush);
    }
    let Collector { writer, reader, .. } = collector;
    let committed_total = writer.committed_total;
    let gaps_total = writer.state().gaps_total;
    let closed = writer.close();
    result?;
    closed?;
    log::info!(
        "stopped after committing {committed_total} entries ({} left out by the filters, \
         {gaps_total} gaps found so far, {} entries with a corrupt data object this run)",
        reader.filtered,
        reader.corrupt_entries
    );
    Ok(())
}

fn main_loop(
    c: &mut Collector,
    listener: &Listener,
    signals: &mut service::Signals,
    args: &CollectorArgs,
) -> Result<()> {
    let once = args.once;
    let watchdog = service::watchdog_interval();
    let mut last_ping = Instant::now();
    let mut last_flush = Instant::now();
    loop {
        if c.writer.finished_in_flight() {
            c.writer.settle()?;
            c.refresh_status(false);
        }
        c.serve_seals()?;
        if c.status.is_stale() {
            c.refresh_status(false);
        }
        if c.metrics_written.elapsed() >= crate::sys::metrics::WRITE_EVERY {
            c.write_metrics();
        }
        if let Some(every) = c.settings.flush_every {
            if last_flush.elapsed() >= every {
                c.flush_here()?;
                last_flush = Instant::now();
            }
        }
        // Return to poll() at least every 50 ms, so that a seal request or a signal is seen
        // quickly even while reading a backlog; commits still happen once per commit interval.
        let until = (c.pending_since.unwrap_or_else(Instant::now) + c.settings.commit_interval)
            .min(Instant::now() + Duration::from_millis(50));
        let limits = Limits {
            entries: c.limits.entries.min(c.writer.room_in_row_group()),
            ..c.limits
        };
        let fill = c.reader.fill(&mut c.batch, limits, until)?;
        let caught_up = matches!(fill, Fill::CaughtUp);
        match (c.progress.take(), caught_up) {
            (Some(p), true) => p.finish(c.reader.read_total),
            (Some(mut p), false) => {
                p.update(c.reader.read_total);
                c.progress = Some(p);
            }
            (None, _) => {}
        }
        c.caught_up_at = caught_up.then(now_usec);
        if caught_up && c.batch.is_empty() {
            c.writer.caught_up();
        }
        let unsaved = !c.batch.is_empty() || c.reader.unsaved;
        if unsaved && c.pending_since.is_none() {
            c.pending_since = Some(Instant::now());
        }
        let due = c
            .pending_since
            .is_some_and(|t| t.elapsed() >= c.settings.commit_interval);
        if once && caught_up {
            // The caller's final commit records the rows and the watermark.
            return Ok(());
        }
        if (due || limits.full(&c.batch)) && unsaved {
            c.commit()?;
            c.note_stall();
            c.refresh_status(false);
        }

        // Sleep only when caught up (with the last commit settled, so that the state file and
        // STATUS= are current); otherwise just look at signals and seal requests.
        let timeout = if caught_up {
            // Nothing to read: a seal asked for is done now, and answered, before sleeping.
            if c.writer.in_flight() {
                c.writer.settle()?;
                c.refresh_status(false);
            }
            c.serve_seals()?;
            if c.writer.in_flight() {
                c.writer.settle()?;
                c.serve_seals()?;
            }
            let mut t = Duration::from_secs(3600);
            if let Some(since) = c.pending_since {
                t = t.min(c.settings.commit_interval.saturating_sub(since.elapsed()));
            }
            if let Some(w) = watchdog {
                t = t.min(w.saturating_sub(last_ping.elapsed()));
            }
            if let Some(due) = c.status.due_in() {
                t = t.min(due);
            }
            t = t.min(crate::sys::metrics::WRITE_EVERY.saturating_sub(c.metrics_written.elapsed()));
            if let Some(every) = c.settings.flush_every {
                t = t.min(every.saturating_sub(last_flush.elapsed()));
            }
            if let Some(abs) = c.reader.journal.timeout_usec()? {
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                    .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000)
                    .unwrap_or(0);
                t = t.min(Duration::from_micros(abs.saturating_sub(now)));
            }
            if let Some(scan) = c.reader.journal.rescan_in() {
                t = t.min(scan);
            }
            t
        } else {
            Duration::ZERO
        };
        let journal_fds = c.reader.journal.poll_fds()?;
        let mut fds = vec![
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(listener.fd(), PollFlags::POLLIN),
        ];
        for (fd, events) in &journal_fds {
            // The fds stay open as long as their journals do, which outlive this iteration.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            fds.push(PollFd::new(fd, PollFlags::from_bits_truncate(*events)));
        }
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("failed to wait for the journal"),
        }
        let signalled = fds[0].any().unwrap_or(false);
        let asked = fds[1].any().unwrap_or(false);
        let journal_woke = fds[2..].iter().any(|f| f.any().unwrap_or(false));
        drop(fds);

        if let Some(w) = watchdog {
            if last_ping.elapsed() >= w {
                service::notify_watchdog();
                last_ping = Instant::now();
            }
        }
        if signalled {
            match signals.pending() {
                Some(nix::sys::signal::Signal::SIGHUP) => c.reload(args),
                Some(sig) => {
                    log::info!("received {sig}, committing what was read and stopping");
                    return Ok(());
                }
                None => {}
            }
        }
        if asked {
            if let Some(peer) = listener.accept() {
                c.seals.ask(peer);
            }
        }
        if journal_woke || caught_up {
            c.reader.journal.process()?;
        }
        if caught_up {
            c.reader.journal.rescan()?;
            c.reader.journal.check_tails()?;
        }
    }
}
