//! Reading a journal source as one or more sequence-number streams, each with its own position.
//!
//! sd-journal's merged view of several files orders the entries of *different* streams (files with
//! different sequence-number IDs: other machines, journal-remote sources) by their timestamps. A
//! file that appears, or grows, with entries older than where the reader stands (a remote host
//! catching up, a skewed clock) has those entries skipped: measured, 31 of 600 entries of a file
//! moved into a followed directory. Within one stream, the order is the sequence number's,
//! whatever the timestamps. So a `--directory` source is read as one journal per stream, and the
//! position is one cursor per stream, space-separated (`s=A;i=…;… s=B;i=…;…`). The local journal
//! (`Source::System`) stays one merged journal and one cursor: journald numbers the entries of
//! all its files in one stream.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::journal::position::parse_cursor;
use crate::journal::position::{FirstStart, Position};
use crate::journal::{file_header, Journal, Source};

mod directory;
mod stream;
mod tails;

use stream::{seek_after, Gaps, Origin, Stream};

/// At most how often a directory is looked at again after it changed (a burst of renames is one
/// rescan).
pub const RESCAN_EVERY: Duration = Duration::from_millis(200);

/// A stream's journal is closed and opened again after this many entries read from it. sd-journal
/// keeps the windows of the files it mapped (up to 64 of 8 MiB each, per open journal); reading a
/// backlog touches every page of them, so a long backfill would hold hundreds of MiB of page cache
/// in the collector's RSS (measured: 747 MiB file-backed on a 1M-entry backfill). Reopening and
/// seeking back to the cursor costs about a millisecond.
pub const REOPEN_EVERY: u64 = 50_000;

/// After this many entries read (from all streams together), the pages of the journal files
/// mapped meanwhile are given back (`journal::release_mapped_pages`): reopening alone leaves a
/// stream's last windows mapped until its next reopen, 16 streams' worth of them.
const RELEASE_PAGES_EVERY: u64 = 5_000;

pub struct Streams {
    source: Source,
    streams: Vec<Stream>,
    /// The stream being read.
    current: usize,
    last_scan: Instant,
    /// For a directory: a watch for files appearing, renamed, removed or written to in it (the
    /// only wake-up of its streams, see `Journal::open_files`), and whether a file appeared, was
    /// renamed or removed since the last scan. Without it a directory would have to be polled.
    watch: Option<nix::sys::inotify::Inotify>,
    changed: bool,
    /// When the streams' files are next compared with what was read (see `check_tails`).
    tails: tails::TailCheck,
    reopen_every: u64,
    /// Gaps found while reopening a stream, not yet taken by `take_gaps`.
    gaps_found: Gaps,
    /// Entries lost to gaps since the collector started (for the metrics).
    gap_entries: u64,
    /// Entries read since the mapped pages were last given back.
    read_since_release: u64,
}

impl Streams {
    pub fn open(source: &Source) -> Result<Streams> {
        let mut streams = Streams {
            source: source.clone(),
            streams: Vec::new(),
            current: 0,
            last_scan: Instant::now(),
            watch: None,
            changed: false,
            tails: tails::TailCheck::new(),
            reopen_every: REOPEN_EVERY,
            gaps_found: Gaps::default(),
            gap_entries: 0,
            read_since_release: 0,
        };
        match source {
            // journald numbers the entries of all the files of a journal (or a namespace's) in
            // one stream.
            Source::System => {
                let journal = Journal::open(source)?;
                streams
                    .streams
                    .push(Stream::new(Origin::Local, Vec::new(), journal));
            }
            Source::Namespace(_) => {
                // libsystemd 252 watches the journal roots only for directories named by a bare
                // machine ID: the directory of a namespace whose journald starts after this one
                // (`MACHINEID.NAME`) would never be read. Watch the roots here, and reopen the
                // journal when a directory appears.
                use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
                let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                    .context("failed to create an inotify instance")?;
                for root in ["/run/log/journal", "/var/log/journal"] {
                    // A root that does not exist (yet) is journald's to make; libsystemd would
                    // not read it either.
                    let _ = watch.add_watch(
                        root,
                        AddWatchFlags::IN_CREATE
                            | AddWatchFlags::IN_MOVED_TO
                            | AddWatchFlags::IN_ONLYDIR,
                    );
                }
                streams.watch = Some(watch);
                let journal = Journal::open(source)?;
                streams
                    .streams
                    .push(Stream::new(Origin::Local, Vec::new(), journal));
            }
            Source::Directory(dir) => streams.open_directory(dir)?,
        }
        Ok(streams)
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Whether any journal file could be opened at all.
    pub fn has_files(&self) -> bool {
        self.streams.iter().any(|s| s.journal.has_files())
    }

    /// Positions every stream for reading. `position` is the committed one (None: a first
    /// start, positioned by `first`). Returns, for a first start, the position to commit at once.
    /// Gaps (a saved entry gone) are logged and counted in `gaps`.
    pub fn position_at(
        &mut self,
        position: Option<&Position>,
        first: FirstStart,
        gaps: &mut u64,
    ) -> Result<Option<Position>> {
        let source = self.source.clone();
        let mut found = Gaps::default();
        for stream in &mut self.streams {
            stream.unread_current = false;
            match (position, first) {
                (None, FirstStart::Head) => {
                    stream.journal.seek_head()?;
                    stream.read = None;
                }
                (None, FirstStart::Since(usec)) => {
                    // Onto the last entry before TIME: reading goes on after it, and its cursor
                    // is the start, committed at once, so that a restart begins there too.
                    stream.journal.seek_realtime_usec(usec)?;
                    stream.read = match stream.journal.step_back()? {
                        true => Some(stream.journal.cursor()?),
                        false => {
                            // Nothing before TIME in this stream: all of it is read.
                            stream.journal.seek_head()?;
                            None
                        }
                    };
                }
                (None, FirstStart::Tail) => {
                    // Onto the last entry: reading goes on after it, its cursor is the start.
                    stream.journal.seek_tail()?;
                    stream.read = match stream.journal.step_back()? {
                        true => Some(stream.journal.cursor()?),
                        false => {
                            // Nothing yet (a namespace whose journald has not written): the
                            // tail is the head. sd-journal's tail location would skip the
                            // entries of files that appear later.
                            stream.journal.seek_head()?;
                            None
                        }
                    };
                }
                (Some(Position::Head), _) => {
                    stream.journal.seek_head()?;
                    stream.read = None;
                }
                (Some(Position::After(saved)), _) => {
                    let mine = cursors(saved).find(|c| match &stream.origin {
                        Origin::Local => true,
                        Origin::Directory(id) => c.starts_with(&format!("s={id};")),
                    });
                    match mine {
                        Some(c) => {
                            stream.unread_current =
                                seek_after(&mut stream.journal, &source, c, &mut found)?;
                            stream.read = Some(c.to_owned());
                        }
                        None => {
                            // A stream that appeared after the position was saved: all of it is
                            // new.
                            stream.journal.seek_head()?;
                            stream.read = None;
                        }
                    }
                }
            }
        }
        *gaps += found.found;
        self.gap_entries += found.entries;
        self.current = 0;
        Ok(match position {
            Some(_) => None,
            None if first == FirstStart::Head => Some(Position::Head),
            None => Some(self.position().map_or(Position::Head, Position::After)),
        })
    }

    /// Where reading stands: the cursor of the last entry read from each stream that has read
    /// one, space-separated; None when nothing was read anywhere.
    pub fn position(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .streams
            .iter()
            .filter_map(|s| s.read.as_deref())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// Moves to the next entry of the current stream, or of the next one that has one; false when
    /// every stream is at its end.
    pub fn step_forward(&mut self) -> Result<bool> {
        let mut n = self.streams.len();
        let mut tried = 0;
        while tried < n {
            let stream = &mut self.streams[self.current];
            if stream.unread_current {
                stream.unread_current = false;
                return Ok(true);
            }
            if stream.journal.step_forward()? {
                return Ok(true);
            }
            if stream.reopen_pending {
                // Read to the end of what it had open: now take up its files as they are.
                if self.refresh(self.current)? {
                    continue; // the same stream, reopened: step it again
                }
                // Gone: every file of it was removed, and all it held has been read.
                n = self.streams.len();
                if n == 0 {
                    break;
                }
                self.current %= n;
                continue;
            }
            self.current = (self.current + 1) % n;
            tried += 1;
        }
        Ok(false)
    }

    /// Reopens stream `i` with its files as they are now, right after what it has read.
    /// Returns false when it has no file left and was dropped.
    /// A stream whose files cannot be opened now goes on with the journal it has open, and is
    /// tried again at the next look at the directory: never a reason to stop.
    fn refresh(&mut self, i: usize) -> Result<bool> {
        let source = self.source.clone();
        let origin = self.streams[i].origin.clone();
        let opened = match &origin {
            Origin::Local => self.streams[i]
                .reopen(&source, &mut self.gaps_found)
                .map(|()| None),
            Origin::Directory(id) => self.open_stream(id).map(Some),
        };
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                log::warn!(
                    "{}: reading on from the files already open, trying again soon",
                    crate::sys::duckdb::chain_text(&e)
                );
                self.streams[i].reopen_pending = false;
                self.changed = true;
                return Ok(true);
            }
        };
        let Some(opened) = opened else {
            return Ok(true); // the local journal or a namespace: reopened above
        };
        let id = origin.seqnum_id().unwrap_or_default().to_owned();
        match opened {
            Some((files, journal)) => {
                let stream = &mut self.streams[i];
                stream.files = files;
                stream.take_up(journal, &source, &mut self.gaps_found)?;
                Ok(true)
            }
            None => {
                log::info!(
                    "journal stream {id} in {}: its files were removed after it was read to \
                     their end",
                    self.source
                );
                self.streams.remove(i);
                Ok(false)
            }
        }
    }

    /// About how many entries are left to read: for each stream, the sequence numbers between
    /// where it stands and its newest entry. An estimate (entries vacuumed meanwhile, other
    /// sources in the local journal), for the progress line only.
    pub fn backlog(&self) -> u64 {
        let mut total = 0;
        for s in &self.streams {
            let ends = match &s.origin {
                Origin::Directory(_) => {
                    let headers: Vec<_> = s.files.iter().filter_map(|f| file_header(f)).collect();
                    let head = headers
                        .iter()
                        .map(|h| h.head_entry_seqnum)
                        .filter(|&n| n > 0)
                        .min();
                    let tail = headers.iter().map(|h| h.tail_entry_seqnum).max();
                    head.zip(tail)
                }
                Origin::Local => self.merged_ends(),
            };
            let Some((head, tail)) = ends else {
                continue;
            };
            let from = match s.read.as_deref().and_then(parse_cursor) {
                Some(c) => c.seqnum,
                None => head.saturating_sub(1),
            };
            total += tail.saturating_sub(from);
        }
        total
    }

    /// The sequence numbers of the oldest and newest entries of the local journal (read through
    /// a journal of its own, so that the one being read keeps its place).
    fn merged_ends(&self) -> Option<(u64, u64)> {
        let mut j = Journal::open(&self.source).ok()?;
        j.seek_head().ok()?;
        j.step_forward().ok()?.then_some(())?;
        let head = parse_cursor(&j.cursor().ok()?)?.seqnum;
        j.seek_tail().ok()?;
        j.step_back().ok()?.then_some(())?;
        let tail = parse_cursor(&j.cursor().ok()?)?.seqnum;
        Some((head, tail))
    }

    /// The journal standing on the entry `step_forward` found.
    pub fn current(&mut self) -> &mut Journal {
        &mut self.streams[self.current].journal
    }

    /// Records that the current entry, `cursor`, was read; every `REOPEN_EVERY` entries of a
    /// stream, reopens its journal right after that entry, to let go of the mapped files.
    pub fn mark_read(&mut self, cursor: String) -> Result<()> {
        self.read_since_release += 1;
        if self.read_since_release >= RELEASE_PAGES_EVERY {
            self.read_since_release = 0;
            crate::journal::release_mapped_pages();
        }
        let stream = &mut self.streams[self.current];
        stream.read = Some(cursor);
        stream.read_since_open += 1;
        if stream.read_since_open >= self.reopen_every && !stream.reopen_pending {
            if stream.files_present() {
                // Its files as they are now: the same ones, and any new one of the stream.
                if !self.refresh(self.current)? {
                    self.current = 0;
                }
            } else {
                // A file of it was rotated or vacuumed away: reopening now would lose what the
                // open journal can still read. Reopen once it is read to its end.
                stream.reopen_pending = true;
            }
        }
        Ok(())
    }

    /// The gaps found while reading (a stream reopened past entries that were gone) since the
    /// last call: the collector counts them into the position it commits next.
    pub fn take_gaps(&mut self) -> u64 {
        let g = std::mem::take(&mut self.gaps_found);
        self.gap_entries += g.entries;
        g.found
    }

    /// Entries lost to the gaps found since the collector started, where sequence numbers tell.
    pub fn gap_entries(&self) -> u64 {
        self.gap_entries + self.gaps_found.entries
    }

    /// Changes `REOPEN_EVERY` (config key `journal_reopen_entries`).
    pub fn set_reopen_every(&mut self, entries: u64) {
        self.reopen_every = entries.max(1);
    }

    /// The descriptors to poll for changes, with their events.
    pub fn poll_fds(&self) -> Result<Vec<(RawFd, i16)>> {
        use std::os::fd::{AsFd, AsRawFd};
        // A directory's streams have no watches of their own (see `Journal::open_files`): the
        // directory's watch wakes them.
        let mut fds: Vec<(RawFd, i16)> = self
            .streams
            .iter()
            .filter(|s| s.origin == Origin::Local)
            .map(|s| s.journal.poll_fd())
            .collect::<Result<_>>()?;
        if let Some(w) = &self.watch {
            fds.push((w.as_fd().as_raw_fd(), libc::POLLIN));
        }
        Ok(fds)
    }

    /// Lets libsystemd handle what woke the poll, in every stream, and notes changes to the
    /// directory.
    pub fn process(&mut self) -> Result<()> {
        for s in self
            .streams
            .iter_mut()
            .filter(|s| s.origin == Origin::Local)
        {
            s.journal.process()?;
        }
        if let Some(w) = &self.watch {
            use nix::sys::inotify::AddWatchFlags;
            // Non-blocking: EAGAIN once drained. A file written to (IN_MODIFY: journald and
            // journal-remote truncate a file to its size after appending, to wake readers) only
            // wakes the loop, which reads on; anything else changes the directory's files.
            while let Ok(events) = w.read_events() {
                if events.is_empty() {
                    break;
                }
                if events.iter().any(|e| e.mask != AddWatchFlags::IN_MODIFY) {
                    self.changed = true;
                }
            }
        }
        Ok(())
    }

    /// The earliest wake-up libsystemd asks for (µs, CLOCK_MONOTONIC), if any.
    pub fn timeout_usec(&self) -> Result<Option<u64>> {
        let mut earliest: Option<u64> = None;
        for s in self.streams.iter().filter(|s| s.origin == Origin::Local) {
            if let Some(t) = s.journal.timeout_usec()? {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        Ok(earliest)
    }

    /// For a directory that changed: how long until it is looked at again.
    pub fn rescan_in(&self) -> Option<Duration> {
        let scan = self
            .changed
            .then(|| RESCAN_EVERY.saturating_sub(self.last_scan.elapsed()));
        scan.into_iter().chain(self.tails.due_in()).min()
    }
}

/// The cursors of a position (one per stream).
pub fn cursors(position: &str) -> impl Iterator<Item = &str> {
    position.split(' ').filter(|c| !c.is_empty())
}
