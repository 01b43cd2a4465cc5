//! The collector's event loop: read into the batch, commit when due, serve seals, then wait for
//! the journal, a seal request, a signal or the next thing due.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::reader::{Fill, Limits};
use super::status::now_usec;
use super::Collector;
use crate::buffer::handoff::Listener;
use crate::config::CollectorArgs;
use crate::sys::metrics::WRITE_EVERY;
use crate::sys::service;

/// What one poll() woke up for.
struct Woke {
    signalled: bool,
    asked: bool,
    journal: bool,
}

/// The loop's own clocks: the watchdog's and `--flush-every`'s.
struct Clocks {
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_flush: Instant,
}

pub(super) fn main_loop(
    c: &mut Collector,
    listener: &Listener,
    signals: &mut service::Signals,
    args: &CollectorArgs,
) -> Result<()> {
    let mut clocks = Clocks {
        watchdog: service::watchdog_interval(),
        last_ping: Instant::now(),
        last_flush: Instant::now(),
    };
    loop {
        c.housekeeping(&mut clocks)?;
        let caught_up = c.read_and_commit(args.once)?;
        let Some(caught_up) = caught_up else {
            // --once, caught up: the caller's final commit records the rows and the watermark.
            return Ok(());
        };
        // Sleep only when caught up (with the last commit settled, so that the state file and
        // STATUS= are current); otherwise just look at signals and seal requests.
        let timeout = match caught_up {
            true => c.idle_timeout(&clocks)?,
            false => Duration::ZERO,
        };
        let Some(woke) = wait(c, listener, signals, timeout)? else {
            continue;
        };
        if let Some(w) = clocks.watchdog {
            if clocks.last_ping.elapsed() >= w {
                service::notify_watchdog();
                clocks.last_ping = Instant::now();
            }
        }
        if woke.signalled {
            match signals.pending() {
                Some(nix::sys::signal::Signal::SIGHUP) => c.reload(args),
                Some(sig) => {
                    log::info!("received {sig}, committing what was read and stopping");
                    return Ok(());
                }
                None => {}
            }
        }
        if woke.asked {
            if let Some(peer) = listener.accept() {
                c.seals.ask(peer);
            }
        }
        if woke.journal || caught_up {
            c.reader.journal.process()?;
        }
        if caught_up {
            c.reader.journal.rescan()?;
            c.reader.journal.check_tails()?;
        }
    }
}

impl Collector {
    /// What is due whatever the journal does: a finished commit, seals, STATUS=, the metrics
    /// file, `--flush-every`.
    fn housekeeping(&mut self, clocks: &mut Clocks) -> Result<()> {
        if self.writer.finished_in_flight() {
            self.writer.settle()?;
            self.refresh_status(false);
        }
        self.serve_seals()?;
        if self.status.is_stale() {
            self.refresh_status(false);
        }
        if self.metrics_written.elapsed() >= WRITE_EVERY {
            self.write_metrics();
        }
        if let Some(every) = self.settings.flush_every {
            if clocks.last_flush.elapsed() >= every {
                self.flush_here()?;
                clocks.last_flush = Instant::now();
            }
        }
        Ok(())
    }

    /// Reads into the batch for a while and commits when the commit interval or the batch
    /// limits say so. Returns whether reading found the journal caught up; None: `--once` and
    /// caught up, time to stop.
    fn read_and_commit(&mut self, once: bool) -> Result<Option<bool>> {
        // Return to poll() at least every 50 ms, so that a seal request or a signal is seen
        // quickly even while reading a backlog; commits still happen once per commit interval.
        let until = (self.pending_since.unwrap_or_else(Instant::now)
            + self.settings.commit_interval)
            .min(Instant::now() + Duration::from_millis(50));
        let limits = Limits {
            entries: self.limits.entries.min(self.writer.room_in_row_group()),
            ..self.limits
        };
        let fill = self.reader.fill(&mut self.batch, limits, until)?;
        let caught_up = matches!(fill, Fill::CaughtUp);
        match (self.progress.take(), caught_up) {
            (Some(p), true) => p.finish(self.reader.read_total),
            (Some(mut p), false) => {
                p.update(self.reader.read_total);
                self.progress = Some(p);
            }
            (None, _) => {}
        }
        self.caught_up_at = caught_up.then(now_usec);
        if caught_up && self.batch.is_empty() {
            self.writer.caught_up();
        }
        let unsaved = !self.batch.is_empty() || self.reader.unsaved;
        if unsaved && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        let due = self
            .pending_since
            .is_some_and(|t| t.elapsed() >= self.settings.commit_interval);
        if once && caught_up {
            return Ok(None);
        }
        if (due || limits.full(&self.batch)) && unsaved {
            self.commit()?;
            self.note_stall();
            self.refresh_status(false);
        }
        Ok(Some(caught_up))
    }

    /// Caught up: serves a seal asked for (and answers it) before sleeping, then says how long
    /// to sleep: until the next thing due.
    fn idle_timeout(&mut self, clocks: &Clocks) -> Result<Duration> {
        if self.writer.in_flight() {
            self.writer.settle()?;
            self.refresh_status(false);
        }
        self.serve_seals()?;
        if self.writer.in_flight() {
            self.writer.settle()?;
            self.serve_seals()?;
        }
        let since = |t: Instant, every: Duration| every.saturating_sub(t.elapsed());
        let journal_due = match self.reader.journal.timeout_usec()? {
            Some(abs) => {
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                    .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000)
                    .unwrap_or(0);
                Some(Duration::from_micros(abs.saturating_sub(now)))
            }
            None => None,
        };
        let waits = [
            Some(Duration::from_secs(3600)),
            self.pending_since
                .map(|t| since(t, self.settings.commit_interval)),
            clocks.watchdog.map(|w| since(clocks.last_ping, w)),
            self.status.due_in(),
            Some(since(self.metrics_written, WRITE_EVERY)),
            self.settings
                .flush_every
                .map(|every| since(clocks.last_flush, every)),
            journal_due,
            self.reader.journal.rescan_in(),
        ];
        Ok(waits.into_iter().flatten().min().unwrap_or_default())
    }
}

/// Waits up to `timeout` for a signal, a seal request or the journal. None: interrupted.
fn wait(
    c: &Collector,
    listener: &Listener,
    signals: &service::Signals,
    timeout: Duration,
) -> Result<Option<Woke>> {
    let journal_fds = c.reader.journal.poll_fds()?;
    let mut fds = vec![
        PollFd::new(signals.fd(), PollFlags::POLLIN),
        PollFd::new(listener.fd(), PollFlags::POLLIN),
    ];
    for (fd, events) in &journal_fds {
        // The fds stay open as long as their journals do, which outlive this wait.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        fds.push(PollFd::new(fd, PollFlags::from_bits_truncate(*events)));
    }
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e).context("failed to wait for the journal"),
    }
    Ok(Some(Woke {
        signalled: fds[0].any().unwrap_or(false),
        asked: fds[1].any().unwrap_or(false),
        journal: fds[2..].iter().any(|f| f.any().unwrap_or(false)),
    }))
}
