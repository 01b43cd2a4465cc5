//! The collector: journal → buffer, exactly once.
//!
//! Each commit appends a batch of rows and records the cursor of the last one in the same DuckDB
//! transaction, then mirrors the cursor to the state file. A crash at any instant therefore leaves
//! the buffer holding exactly the entries up to its recorded cursor, and the next start resumes
//! right after it.
//!
//! A commit runs on a thread of its own while the reader fills the next batch: reading the
//! journal and appending to DuckDB take about half the time each, and the machine has two cores.
//! At most one commit is in flight; the state file is written only once it is durable
//! (`settle`), and everything else that touches the buffer settles first.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::buffer::{Buffer, CollectorState, Position};
use crate::config::{CollectorArgs, Settings};
use crate::handoff::{Listener, Peer};
use crate::journal::Source;
use crate::position::{parse_cursor, read_state_file, write_state_file, SavedState};
use crate::row::{Batch, EntryMeta, Fields};
use crate::service;
use crate::streams::Streams;

/// Entries stamped this long before the moment the journal was last found caught up may be
/// considered complete: journald stamps an entry and writes it in one step.
const WATERMARK_GRACE: Duration = Duration::from_secs(5);
/// A hand-off drops the uncommitted batch (to be read again) only from this size on...
const DISCARD_FROM_ROWS: usize = 2000;
/// ...and at most this often.
const DISCARD_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How often STATUS= is refreshed at most.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Reads entries from the journal, remembering where it is.
struct Reader {
    journal: Streams,
    fields: Fields,
    newest_usec: Option<u64>,
    corrupt_entries: u64,
}

enum Fill {
    /// Reached the end of what the journal holds now.
    CaughtUp,
    /// Stopped because the batch is full or time is up; more is waiting.
    More,
}

impl Reader {
    /// Reads entries into `batch` until the journal is exhausted, the batch is full or `until`.
    fn fill(&mut self, batch: &mut Batch, settings: &Settings, until: Instant) -> Result<Fill> {
        let mut n = 0u32;
        loop {
            if batch.len() >= settings.max_batch_entries
                || batch.byte_size() >= settings.max_batch_bytes
            {
                return Ok(Fill::More);
            }
            // Checking the clock every entry costs more than reading one; every 256 is enough.
            n = n.wrapping_add(1);
            if n.is_multiple_of(256) && Instant::now() >= until {
                return Ok(Fill::More);
            }
            if !self.journal.step_forward()? {
                return Ok(Fill::CaughtUp);
            }
            self.read_current(batch)?;
        }
    }

    fn read_current(&mut self, batch: &mut Batch) -> Result<()> {
        let journal = self.journal.current();
        let cursor = journal.cursor()?;
        let realtime_usec = journal.realtime_usec()?;
        let (monotonic_usec, boot_id) = journal.monotonic_usec()?;
        self.fields.clear();
        let fields = &mut self.fields;
        let unreadable = journal.for_each_field(|data| fields.push(data))?;
        if unreadable > 0 {
            self.corrupt_entries += 1;
            log::warn!(
                "entry {cursor} in {} has a corrupt data object: kept the {} fields before it",
                self.journal.source(),
                self.fields.len()
            );
        }
        batch.push(
            &EntryMeta {
                cursor: &cursor,
                realtime_usec,
                monotonic_usec,
                boot_id,
            },
            &self.fields,
        );
        self.newest_usec = Some(realtime_usec);
        self.journal.mark_read(cursor)
    }
}

fn now_usec() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn format_usec(usec: u64) -> String {
    chrono::DateTime::from_timestamp_micros(usec as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{usec} µs"))
}

/// One collector per state directory: the DuckDB lock alone does not say so while jp-flush holds
/// the buffer.
fn lock_state_dir(dir: &Path) -> Result<Flock<fs::File>> {
    let path = dir.join("collector.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "another journal-parquet collector is running with {} ({}: {e})",
            dir.display(),
            path.display()
        )
    })
}

/// Decides where to resume from the buffer (authoritative) and the state file (a mirror).
fn reconcile(stored: Option<&CollectorState>, state_file: &Path) -> Result<Option<Position>> {
    let file = read_state_file(state_file);
    match (stored.map(|s| &s.position), file) {
        (Some(pos), Ok(saved)) => {
            let file_cursor = saved.map(|s| s.cursor);
            if let (Position::After(c), Some(f)) = (pos, &file_cursor) {
                if c != f {
                    let behind = match (parse_cursor(c), parse_cursor(f)) {
                        (Some(a), Some(b)) => a.seqnum_id == b.seqnum_id && b.seqnum < a.seqnum,
                        _ => false,
                    };
                    if behind {
                        log::info!(
                            "{} is behind the buffer (stopped between a commit and its mirror); \
                             resuming from the buffer's position",
                            state_file.display()
                        );
                    } else {
                        log::warn!(
                            "{} holds {f} but the buffer's committed position is {c}; the buffer \
                             wins, the state file is rewritten",
                            state_file.display()
                        );
                    }
                }
            }
            Ok(Some(pos.clone()))
        }
        (Some(pos), Err(e)) => {
            log::warn!("{e:#}; the buffer's committed position wins, the state file is rewritten");
            Ok(Some(pos.clone()))
        }
        (
            None,
            Ok(Some(SavedState {
                restart: Some(r), ..
            })),
        ) => {
            log::warn!(
                "the buffer has no position (new, deleted or set aside); reading again from the \
                 restart point in {}, before the entries it had not written to Parquet (those \
                 written already are merged without duplicates)",
                state_file.display()
            );
            Ok(Some(r))
        }
        (None, Ok(Some(SavedState { cursor, .. }))) => {
            log::warn!(
                "the buffer has no position (new, deleted or set aside); resuming after the \
                 cursor in {} (the buffer had written everything to Parquet)",
                state_file.display()
            );
            Ok(Some(Position::After(cursor)))
        }
        (None, Ok(None)) => Ok(None),
        (None, Err(e)) => Err(e.context(format!(
            "no position in the buffer and the state file is unusable: refusing to guess where \
             to start. Remove {} to start from the tail (entries since the last run are then \
             skipped), or write a cursor into it",
            state_file.display()
        ))),
    }
}

struct Collector {
    settings: Settings,
    buffer: Option<Buffer>,
    reader: Reader,
    state: CollectorState,
    batch: Batch,
    pending_since: Option<Instant>,
    caught_up_at: Option<i64>,
    buffered_rows: u64,
    committed_total: u64,
    last_status: Option<Instant>,
    /// Where to read again if the buffer is lost: the position before the oldest commit with
    /// rows still in the buffer (None: no rows, the committed position will do).
    restart: Option<Position>,
    /// A refresh was skipped (rate limit): the main loop sends it when due, so that STATUS=
    /// never stays behind after the last commit of a burst.
    status_stale: bool,
    longest_pause: Duration,
    last_discard: Option<Instant>,
    /// The commit running in the background, holding the buffer meanwhile.
    in_flight: Option<InFlight>,
}

/// A commit on its own thread: it owns the buffer until it is joined.
struct InFlight {
    thread: std::thread::JoinHandle<(Buffer, Result<()>)>,
    rows: u64,
    before: Position,
    started: Instant,
}

impl Collector {
    /// The buffer, once any commit in flight is done.
    fn buffer(&mut self) -> Result<&mut Buffer> {
        self.settle()?;
        Ok(self
            .buffer
            .as_mut()
            .expect("the collector holds the buffer outside hand-offs"))
    }

    /// Whether the buffer is open (held here or by the commit in flight).
    fn holds_buffer(&self) -> bool {
        self.buffer.is_some() || self.in_flight.is_some()
    }

    /// Starts committing the batch in hand (possibly empty) with the position and watermark, in
    /// the background; `settle` finishes it. One commit at a time: this settles the previous one.
    fn commit(&mut self) -> Result<()> {
        self.settle()?;
        let before = self.state.position.clone();
        if let Some(c) = self.reader.journal.position() {
            self.state.position = Position::After(c);
        }
        self.state.watermark_usec = self
            .caught_up_at
            .map(|t| t - WATERMARK_GRACE.as_micros() as i64)
            .or(self.state.watermark_usec);
        let rows = (!self.batch.is_empty()).then(|| {
            self.state.last_commit += 1;
            self.batch.take(self.state.last_commit)
        });
        let n = rows.as_ref().map_or(0, |r| r.num_rows() as u64);
        let state = self.state.clone();
        let mut buffer = self
            .buffer
            .take()
            .expect("the collector holds the buffer outside hand-offs");
        let since = before.clone();
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let result = buffer.commit(rows, &state, &since);
                (buffer, result)
            })
            .context("failed to start a commit thread")?;
        self.in_flight = Some(InFlight {
            thread,
            rows: n,
            before,
            started: Instant::now(),
        });
        self.pending_since = None;
        Ok(())
    }

    /// Commits the batch in hand and waits until it is durable.
    fn commit_now(&mut self) -> Result<()> {
        self.commit()?;
        self.settle()
    }

    /// Waits for the commit in flight, if any, takes the buffer back and mirrors the committed
    /// position to the state file. A failed commit is fatal: the caller exits, and the next
    /// start resumes from the buffer's committed position (the journal still holds the rows).
    fn settle(&mut self) -> Result<()> {
        let Some(done) = self.in_flight.take() else {
            return Ok(());
        };
        let (buffer, result) = match done.thread.join() {
            Ok(r) => r,
            Err(_) => bail!("the commit thread panicked"),
        };
        self.buffer = Some(buffer);
        result?;
        let n = done.rows;
        // The restart point only moves when the buffer was empty: older rows keep theirs.
        if self.buffered_rows == 0 {
            self.restart = (n > 0).then_some(done.before);
        }
        self.buffered_rows += n;
        self.committed_total += n;
        self.save_state_file()?;
        log::debug!("committed {n} entries in {:?}", done.started.elapsed());
        Ok(())
    }

    /// Mirrors the committed position, and the restart point, into the state file.
    fn save_state_file(&self) -> Result<()> {
        if let Position::After(c) = &self.state.position {
            let saved = SavedState {
                cursor: c.clone(),
                restart: self.restart.clone().filter(|r| r != &self.state.position),
            };
            write_state_file(&self.settings.state_file(), &saved)?;
        }
        Ok(())
    }

    fn status_text(&self) -> String {
        let newest = self
            .reader
            .newest_usec
            .map(format_usec)
            .unwrap_or_else(|| "none yet".into());
        let lag = match (self.caught_up_at, self.reader.newest_usec) {
            (Some(_), _) => "caught up".into(),
            (None, Some(n)) => format!("lag {:.1} s", (now_usec() - n as i64).max(0) as f64 / 1e6),
            _ => "waiting for entries".into(),
        };
        format!(
            "{} entries buffered, {} read since start; newest entry {newest}; {lag}",
            self.buffered_rows, self.committed_total
        )
    }

    fn refresh_status(&mut self, force: bool) {
        if force || self.last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            service::notify_status(&self.status_text());
            self.last_status = Some(Instant::now());
            self.status_stale = false;
        } else {
            self.status_stale = true;
        }
    }

    /// Gives the buffer to a jp-flush and takes it back when it is done.
    fn hand_off(&mut self, mut peer: Peer, signals: &mut service::Signals) -> Result<HandOff> {
        let asked = Instant::now();
        self.settle()?;
        // jp-flush is waiting, and committing a second's worth of rows can take a while: rows
        // read but not committed are dropped instead, and the journal rewound to the committed
        // position, so they are read again after the hand-off (the journal is the buffer).
        // Only the position and watermark are committed, a transaction of one row.
        // Small batches are committed (cheap), and at most one batch is dropped per
        // DISCARD_AT_MOST_EVERY, so that frequent hand-offs can never starve the buffer.
        let discard = self.batch.len() >= DISCARD_FROM_ROWS
            && self
                .last_discard
                .is_none_or(|t| t.elapsed() >= DISCARD_AT_MOST_EVERY);
        if let (true, Some(oldest)) = (discard, self.batch.oldest_usec()) {
            self.last_discard = Some(asked);
            log::debug!(
                "dropped {} uncommitted entries to be read again",
                self.batch.len()
            );
            drop(self.batch.take(0));
            self.rewind()?;
            // The watermark must not cover rows that are no longer in the buffer.
            let cap = oldest + WATERMARK_GRACE.as_micros() as i64;
            self.caught_up_at = self.caught_up_at.map(|t| t.min(cap));
        }
        let rewound = asked.elapsed();
        // A commit that pushes the WAL past DuckDB's threshold checkpoints (seconds under load):
        // not this one. jp-flush checkpoints when it closes the file.
        self.buffer()?.defer_checkpoints()?;
        self.commit_now()?;
        let committed = asked.elapsed();
        let buffer = self
            .buffer
            .take()
            .expect("buffer is open outside hand-offs");
        buffer.close()?;
        log::debug!(
            "released the buffer after {:.1} ms (rewind {:.1} ms, commit {:.1} ms, close {:.1} ms)",
            asked.elapsed().as_secs_f64() * 1e3,
            rewound.as_secs_f64() * 1e3,
            (committed - rewound).as_secs_f64() * 1e3,
            (asked.elapsed() - committed).as_secs_f64() * 1e3
        );
        if peer.grant().is_err() {
            log::debug!("jp-flush went away before the buffer was handed over");
        } else {
            let pid = peer.pid.unwrap_or(0);
            let watchdog = service::watchdog_interval();
            let mut last_warning = Instant::now();
            loop {
                let mut fds = [
                    PollFd::new(peer.fd(), PollFlags::POLLIN),
                    PollFd::new(signals.fd(), PollFlags::POLLIN),
                ];
                let wait = watchdog
                    .unwrap_or(Duration::from_secs(10))
                    .min(Duration::from_secs(10));
                poll(
                    &mut fds,
                    PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
                )
                .context("failed to wait for jp-flush")?;
                service::notify_watchdog();
                if signals.pending().is_some() {
                    return Ok(HandOff::Stop);
                }
                if peer.finished() {
                    break;
                }
                if last_warning.elapsed() >= Duration::from_secs(60) {
                    log::warn!(
                        "jp-flush (PID {pid}) has held the buffer for {} s; the collector \
                         resumes when it is done (nothing is lost meanwhile)",
                        asked.elapsed().as_secs()
                    );
                    last_warning = Instant::now();
                }
            }
        }
        if !self.reopen(signals)? {
            return Ok(HandOff::Stop);
        }
        let pause = asked.elapsed();
        self.longest_pause = self.longest_pause.max(pause);
        log::debug!(
            "handed the buffer to jp-flush and back in {:.1} ms (longest {:.1} ms)",
            pause.as_secs_f64() * 1e3,
            self.longest_pause.as_secs_f64() * 1e3
        );
        Ok(HandOff::Resumed)
    }

    /// Moves the reader back to the committed position, forgetting what was read since.
    fn rewind(&mut self) -> Result<()> {
        self.reader.journal.position_at(
            Some(&self.state.position),
            false,
            &mut self.state.gaps_total,
        )?;
        Ok(())
    }

    /// `--flush-every`: the collector holds the buffer, so it exports completed minutes itself,
    /// exactly as jp-flush would. A failure is logged and the rows stay for the next attempt.
    fn flush_here(&mut self) -> Result<()> {
        let until = Instant::now() + Duration::from_millis(200);
        if let Fill::CaughtUp = self.reader.fill(&mut self.batch, &self.settings, until)? {
            self.caught_up_at = Some(now_usec());
        }
        // A failed commit is fatal (the batch in hand would be lost): the caller exits and the
        // next start resumes from the committed cursor. A failed export only costs a retry.
        self.commit_now()?;
        let buffer = self.buffer.as_ref().expect("the buffer is open");
        match crate::flush::export(buffer, &self.settings, false) {
            Ok(r) => log::debug!(
                "flushed {} entries into {} files ({} merged)",
                r.rows_exported,
                r.files_written,
                r.files_merged
            ),
            Err(e) => log::error!("{e:#}"),
        }
        self.buffered_rows = self.buffer()?.row_count()?;
        self.restart = self.buffer()?.restart_point()?;
        self.save_state_file()
    }

    /// Reopens the buffer after a hand-off, waiting as long as someone else holds it.
    /// Returns false when a termination signal came first (everything read was committed before
    /// the hand-off, so stopping here is a clean stop).
    fn reopen(&mut self, signals: &mut service::Signals) -> Result<bool> {
        let path = self.settings.buffer_path();
        let mut last_warning = Instant::now();
        loop {
            let deadline = Instant::now() + Duration::from_secs(5);
            match Buffer::open_waiting(&path, &self.settings, deadline)
                .and_then(Buffer::without_checkpoint_on_close)
            {
                Ok(b) => {
                    // jp-flush deleted rows: the restart point may have moved on.
                    self.buffered_rows = b.row_count()?;
                    self.restart = b.restart_point()?;
                    self.buffer = Some(b);
                    self.save_state_file()?;
                    return Ok(true);
                }
                Err(e) if crate::buffer::is_lock_conflict(&e) => {
                    log::debug!("reopening after a hand-off: {e:#}");
                    service::notify_watchdog();
                    if signals.pending().is_some() {
                        return Ok(false);
                    }
                    if last_warning.elapsed() >= Duration::from_secs(60) {
                        log::warn!("{e:#}; still waiting to reopen it");
                        last_warning = Instant::now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum HandOff {
    Resumed,
    Stop,
}

/// Runs the collector until SIGTERM/SIGINT (or, with `--once`, until caught up).
pub fn run(args: &CollectorArgs) -> Result<()> {
    let settings =
        Settings::resolve_with(&args.common, args.directory.as_deref(), args.flush_every)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    service::init_logging(settings.log_level, "journal-parquet");
    let mut signals = service::Signals::block()?;

    crate::layout::make_private_dir(&settings.state_dir)
        .context("cannot use the state directory")?;
    let _lock = lock_state_dir(&settings.state_dir)?;
    let buffer_path = settings.buffer_path();
    let open = || {
        Buffer::open_waiting(
            &buffer_path,
            &settings,
            Instant::now() + Duration::from_secs(60),
        )
        .and_then(Buffer::without_checkpoint_on_close)
    };
    let buffer = match open() {
        Err(e) if crate::buffer::is_damaged(&e) => {
            // Its rows not yet in Parquet are read again from the journal, from the restart
            // point in the state file; rows already written are merged without duplicates.
            let aside = crate::buffer::set_aside(&buffer_path)?;
            log::error!(
                "{e:#}: the buffer is damaged; kept it as {} and started a new one from the \
                 restart point in {}",
                aside.display(),
                settings.state_file().display()
            );
            open()?
        }
        other => other?,
    };
    let stored = buffer.collector_state()?;
    let position = reconcile(stored.as_ref(), &settings.state_file())?;
    let mut state = stored.unwrap_or(CollectorState {
        position: Position::Head,
        watermark_usec: None,
        gaps_total: 0,
        last_commit: 0,
    });

    if let Source::Directory(dir) = &settings.source {
        if !dir.is_dir() {
            bail!(
                "failed to read journal directory {}: not a directory",
                dir.display()
            );
        }
    }
    let mut journal = Streams::open(&settings.source)?;
    if !journal.has_files() {
        log::warn!(
            "nothing readable in {} (yet): check that the directory holds .journal files, or \
             that this user may read the journal (group systemd-journal)",
            settings.source
        );
    }
    let fresh = journal.position_at(position.as_ref(), args.from_head, &mut state.gaps_total)?;
    let reader = Reader {
        journal,
        fields: Fields::default(),
        newest_usec: None,
        corrupt_entries: 0,
    };
    let buffered_rows = buffer.row_count()?;
    let restart = buffer.restart_point()?;
    let mut collector = Collector {
        settings,
        buffer: Some(buffer),
        reader,
        state,
        batch: Batch::new(crate::layout::local_host_dir()),
        pending_since: None,
        caught_up_at: None,
        buffered_rows,
        committed_total: 0,
        last_status: None,
        restart,
        status_stale: false,
        longest_pause: Duration::ZERO,
        last_discard: None,
        in_flight: None,
    };
    if let Some(p) = fresh {
        collector.state.position = p;
        collector.commit_now()?;
    }
    let listener = Listener::bind(&collector.settings.handoff_socket())?;
    log::info!(
        "reading {} into {} from {}",
        collector.reader.journal.source(),
        buffer_path.display(),
        match (&position, args.from_head) {
            (Some(_), _) => "the saved position",
            (None, true) => "the head (first start)",
            (None, false) => "the tail (first start)",
        }
    );
    service::notify_ready(&collector.status_text());
    collector.last_status = Some(Instant::now());

    let result = main_loop(&mut collector, &listener, &mut signals, args.once);
    let stop_status = format!("stopping: {}", collector.status_text());
    service::notify_stopping(&stop_status);
    // A commit in flight finishes whatever happened; then what was read is committed.
    let settled = collector.settle();
    let result = result.and(settled).and_then(|()| {
        if collector.holds_buffer() {
            collector.commit_now()?;
        }
        Ok(())
    });
    if let Some(b) = collector.buffer.take() {
        b.close()?;
    }
    result?;
    log::info!(
        "stopped after committing {} entries ({} gaps found so far, {} entries with a corrupt \
         data object this run)",
        collector.committed_total,
        collector.state.gaps_total,
        collector.reader.corrupt_entries
    );
    Ok(())
}

fn main_loop(
    c: &mut Collector,
    listener: &Listener,
    signals: &mut service::Signals,
    once: bool,
) -> Result<()> {
    let watchdog = service::watchdog_interval();
    let mut last_ping = Instant::now();
    let mut last_flush = Instant::now();
    loop {
        if c.in_flight.as_ref().is_some_and(|f| f.thread.is_finished()) {
            c.settle()?;
            c.refresh_status(false);
        }
        if c.status_stale {
            c.refresh_status(false);
        }
        if let Some(every) = c.settings.flush_every {
            if last_flush.elapsed() >= every {
                c.flush_here()?;
                last_flush = Instant::now();
            }
        }
        // Return to poll() at least every 50 ms, so that a hand-off request or a signal is seen
        // quickly even while reading a backlog; commits still happen once per commit interval.
        let until = (c.pending_since.unwrap_or_else(Instant::now) + c.settings.commit_interval)
            .min(Instant::now() + Duration::from_millis(50));
        let fill = c.reader.fill(&mut c.batch, &c.settings, until)?;
        let caught_up = matches!(fill, Fill::CaughtUp);
        if caught_up {
            c.caught_up_at = Some(now_usec());
        } else {
            c.caught_up_at = None;
        }
        if !c.batch.is_empty() && c.pending_since.is_none() {
            c.pending_since = Some(Instant::now());
        }
        let due = c
            .pending_since
            .is_some_and(|t| t.elapsed() >= c.settings.commit_interval);
        let full = c.batch.len() >= c.settings.max_batch_entries
            || c.batch.byte_size() >= c.settings.max_batch_bytes;
        if once && caught_up {
            // The caller's final commit records the rows and the watermark.
            return Ok(());
        }
        if (due || full) && !c.batch.is_empty() {
            c.commit()?;
            c.refresh_status(false);
        }

        // Sleep only when caught up (with the last commit settled, so that the state file and
        // STATUS= are current); otherwise just look at signals and hand-off requests.
        let timeout = if caught_up {
            if c.in_flight.is_some() {
                c.settle()?;
                c.refresh_status(false);
            }
            let mut t = Duration::from_secs(3600);
            if let Some(since) = c.pending_since {
                t = t.min(c.settings.commit_interval.saturating_sub(since.elapsed()));
            }
            if let Some(w) = watchdog {
                t = t.min(w.saturating_sub(last_ping.elapsed()));
            }
            if let (true, Some(last)) = (c.status_stale, c.last_status) {
                t = t.min(STATUS_EVERY.saturating_sub(last.elapsed()));
            }
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
            if let Some(sig) = signals.pending() {
                log::info!("received {sig}, committing what was read and stopping");
                return Ok(());
            }
        }
        if asked {
            if let Some(peer) = listener.accept() {
                match c.hand_off(peer, signals)? {
                    HandOff::Resumed => c.refresh_status(true),
                    HandOff::Stop => {
                        log::info!("stopping during a hand-off; everything read was committed");
                        return Ok(());
                    }
                }
                last_ping = Instant::now();
            }
        }
        if journal_woke || caught_up {
            c.reader.journal.process()?;
        }
        if caught_up {
            c.reader.journal.rescan(&mut c.state.gaps_total)?;
        }
    }
}
