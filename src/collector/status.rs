//! STATUS=: what `systemctl status` shows, refreshed at most every `STATUS_EVERY`, and never left
//! stale after the last commit of a burst.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::sys::service;

/// How often STATUS= is refreshed at most.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// What STATUS= says.
pub struct Figures {
    pub segment_rows: u64,
    pub committed_total: u64,
    pub newest_usec: Option<u64>,
    pub caught_up: bool,
    /// Entries the filters left out since the start.
    pub filtered: u64,
}

impl Figures {
    pub fn text(&self) -> String {
        let newest = self
            .newest_usec
            .map(format_usec)
            .unwrap_or_else(|| "none yet".into());
        let lag = match (self.caught_up, self.newest_usec) {
            (true, _) => "caught up".into(),
            (false, Some(n)) => {
                format!("lag {:.1} s", (now_usec() - n as i64).max(0) as f64 / 1e6)
            }
            _ => "waiting for entries".into(),
        };
        let filtered = match self.filtered {
            0 => String::new(),
            n => format!(" ({n} more left out by the filters)"),
        };
        format!(
            "{} entries read since start{filtered}, {} in the open segment; newest entry \
             {newest}; {lag}",
            self.committed_total, self.segment_rows
        )
    }
}

#[derive(Default)]
pub struct Status {
    last: Option<Instant>,
    /// A refresh was skipped (rate limit): the main loop sends it when due.
    stale: bool,
}

impl Status {
    /// Sends STATUS= now if `force` or due, else remembers that it is owed.
    pub fn refresh(&mut self, figures: &Figures, force: bool) {
        if force || self.last.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            service::notify_status(&figures.text());
            self.sent();
        } else {
            self.stale = true;
        }
    }

    /// Records that STATUS= went out (with READY=1, say).
    pub fn sent(&mut self) {
        self.last = Some(Instant::now());
        self.stale = false;
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// How long until an owed refresh is due (None: none owed).
    pub fn due_in(&self) -> Option<Duration> {
        match (self.stale, self.last) {
            (true, Some(last)) => Some(STATUS_EVERY.saturating_sub(last.elapsed())),
            _ => None,
        }
    }
}

pub fn now_usec() -> i64 {
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
