//! The tail check: noticing a stream whose journal says "at the end" while its files hold more
//! (see `Streams::check_tails`), as a small state machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::stream::Origin;
use super::{Streams, RESCAN_EVERY};
use crate::journal::file_header;
use crate::journal::position::parse_cursor;

/// A stream whose journal stops short of what its files hold is reopened at most this often
/// once reopening does not help; a warning names it once, when the wait has grown to
/// `TAIL_CHECK_WARN_AFTER`.
const TAIL_CHECK_AT_MOST: Duration = Duration::from_secs(60);
const TAIL_CHECK_WARN_AFTER: Duration = Duration::from_secs(6);

/// Whether the streams' files are to be compared with what was read, and when.
#[derive(Debug)]
pub(super) struct TailCheck {
    /// When the last comparison was made.
    last: Instant,
    state: Tails,
}

#[derive(Debug)]
enum Tails {
    /// Nothing to compare: the last comparison found every stream at its files' end, and the
    /// reader has not been at its end since.
    Quiet,
    /// Caught up since the last comparison: compare once `RESCAN_EVERY` has passed.
    Wanted,
    /// The last comparison reopened these streams (with the entry each had read then): compare
    /// again once `every` has passed.
    Stalled {
        every: Duration,
        streams: BTreeMap<String, u64>,
    },
}

impl TailCheck {
    pub(super) fn new() -> TailCheck {
        TailCheck {
            last: Instant::now(),
            state: Tails::Quiet,
        }
    }

    /// The wait between comparisons in this state.
    fn every(&self) -> Option<Duration> {
        match &self.state {
            Tails::Quiet => None,
            Tails::Wanted => Some(RESCAN_EVERY),
            Tails::Stalled { every, .. } => Some(*every),
        }
    }

    /// How long until a comparison is due (None: none is wanted).
    pub(super) fn due_in(&self) -> Option<Duration> {
        self.every()
            .map(|every| every.saturating_sub(self.last.elapsed()))
    }

    /// The reader is at its end: a comparison is wanted. Returns, when one is due now, the wait
    /// that led to it and the streams the last one reopened; the comparison is then under way
    /// (`finish` ends it).
    fn begin(&mut self) -> Option<(Duration, BTreeMap<String, u64>)> {
        if let Tails::Quiet = self.state {
            self.state = Tails::Wanted;
        }
        let every = self.every()?;
        if self.last.elapsed() < every {
            return None;
        }
        self.last = Instant::now();
        match std::mem::replace(&mut self.state, Tails::Quiet) {
            Tails::Stalled { streams, .. } => Some((every, streams)),
            Tails::Quiet | Tails::Wanted => Some((every, BTreeMap::new())),
        }
    }

    /// Ends a comparison that waited `every`, which reopened `stalled` after `before` had been:
    /// look again soon (an entry counted but not written yet stays unreadable until it is), and
    /// less and less often while the same entries stay out of reach.
    fn finish(
        &mut self,
        every: Duration,
        before: &BTreeMap<String, u64>,
        stalled: BTreeMap<String, u64>,
    ) {
        let progress = stalled
            .iter()
            .all(|(id, read)| before.get(id) != Some(read));
        self.state = match (stalled.is_empty(), progress) {
            (true, _) => Tails::Quiet,
            (false, true) => Tails::Stalled {
                every: RESCAN_EVERY,
                streams: stalled,
            },
            (false, false) => Tails::Stalled {
                every: (every * 2).min(TAIL_CHECK_AT_MOST),
                streams: stalled,
            },
        };
    }
}

impl Streams {
    /// Called when every stream is at its end: reopens any stream whose files hold entries after
    /// the last one it read, at most once per `RESCAN_EVERY`.
    ///
    /// Why: a journal opened with `sd_journal_open_files` drops a file for good when stepping
    /// through it fails, which a file being written can make it do (an entry linked but not yet
    /// readable); its journal then says "at the end" while the file grows on, and no later event
    /// brings the file back (libsystemd 252, `real_journal_next`; seen following 16
    /// journal-remote files: 1,277 of 200,000 entries read, then nothing). libsystemd also skips
    /// a file whose entry count has not changed since it last found nothing readable in it, so
    /// an entry that became readable only after being counted waits for the next one. The file
    /// headers, which the writer updates with each entry, say whether anything is left.
    pub fn check_tails(&mut self) -> Result<()> {
        let Some((every, before)) = self.tails.begin() else {
            return Ok(());
        };
        let mut stalled = BTreeMap::new();
        let mut i = 0;
        while i < self.streams.len() {
            let stream = &self.streams[i];
            let (Origin::Directory(id), false) = (stream.origin.clone(), stream.reopen_pending)
            else {
                i += 1;
                continue;
            };
            let read = stream
                .read
                .as_deref()
                .and_then(parse_cursor)
                .map_or(0, |c| c.seqnum);
            let tail = stream
                .files
                .iter()
                .filter_map(|f| file_header(f))
                .map(|h| h.tail_entry_seqnum)
                .max()
                .unwrap_or(0);
            if tail <= read {
                i += 1;
                continue;
            }
            let stuck = before.get(&id) == Some(&read);
            let warn_now = (TAIL_CHECK_WARN_AFTER..TAIL_CHECK_WARN_AFTER * 2).contains(&every);
            if stuck && warn_now {
                // The same entry again after several reopens: not a race with the writer any
                // more, but an entry libsystemd cannot read (a file damaged at that point).
                log::warn!(
                    "journal stream {id} in {}: its files say they hold entries up to {tail}, \
                     but reading stops after {read} (a damaged entry?); trying again in {}s",
                    self.source,
                    (every * 2).min(TAIL_CHECK_AT_MOST).as_secs()
                );
            } else {
                log::debug!(
                    "journal stream {id} in {}: its files end at entry {tail}, {read} read, and \
                     its journal has nothing more to read; reopening it",
                    self.source
                );
            }
            stalled.insert(id, read);
            if self.refresh(i)? {
                i += 1;
            }
        }
        self.tails.finish(every, &before, stalled);
        self.current = self.current.min(self.streams.len().saturating_sub(1));
        Ok(())
    }
}
