//! A progress line for a backlog read at a terminal (a backfill with `--from-head`, `--since`):
//! entries done of the total, rate and time left. Nothing at all under systemd or when stderr
//! is not a terminal, where it would only fill the journal with carriage returns.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is drawn again.
const DRAW_EVERY: Duration = Duration::from_millis(200);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    /// Entries to read when it started (an estimate: see `Streams::backlog`).
    total: u64,
    /// The reader's count of entries read when it started.
    base: u64,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line for `total` entries, or None when there is nothing to show or no
    /// terminal to show it on. `base`: the reader's count of entries read so far.
    pub fn on_terminal(total: u64, base: u64) -> Option<Progress> {
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some()
            || std::env::var_os("JOURNAL_STREAM").is_some();
        (total > 0 && !under_systemd && std::io::stderr().is_terminal()).then(|| Progress {
            total,
            base,
            started: Instant::now(),
            drawn: None,
        })
    }

    /// Draws the line for `read` entries read in all (at most every `DRAW_EVERY`).
    pub fn update(&mut self, read: u64) {
        if self.drawn.is_some_and(|t| t.elapsed() < DRAW_EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        let done = read.saturating_sub(self.base).min(self.total);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = match rate > 0.0 {
            true => format_secs((self.total - done) as f64 / rate),
            false => "?".into(),
        };
        let filled = (done as f64 / self.total as f64 * BAR_WIDTH as f64) as usize;
        let _ = write!(
            std::io::stderr().lock(),
            "\r[{}{}] {done}/{} entries, {:.0}/s, {eta} left   ",
            "#".repeat(filled),
            "-".repeat(BAR_WIDTH - filled),
            self.total,
            rate
        );
    }

    /// Ends the line: the backlog is read.
    pub fn finish(mut self, read: u64) {
        self.drawn = None;
        self.total = read.saturating_sub(self.base).max(1);
        self.update(read);
        let _ = writeln!(std::io::stderr().lock());
    }
}

fn format_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
