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

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::journal::position::{describe_jump, entries_between, parse_cursor};
use crate::journal::position::{FirstStart, Position};
use crate::journal::{file_header, Journal, Source};

/// At most how often a directory is looked at again after it changed (a burst of renames is one
/// rescan).
pub const RESCAN_EVERY: Duration = Duration::from_millis(200);

/// A stream's journal is closed and opened again after this many entries read from it. sd-journal
/// keeps the windows of the files it mapped (up to 64 of 8 MiB each, per open journal); reading a
/// backlog touches every page of them, so a long backfill would hold hundreds of MiB of page cache
/// in the collector's RSS (measured: 747 MiB file-backed on a 1M-entry backfill). Reopening and
/// seeking back to the cursor costs about a millisecond.
pub const REOPEN_EVERY: u64 = 50_000;

/// A stream whose journal stops short of what its files hold (see `Streams::check_tails`) is
/// reopened at most this often once reopening does not help; a warning names it once, when the
/// wait has grown to `TAIL_CHECK_WARN_AFTER`.
const TAIL_CHECK_AT_MOST: Duration = Duration::from_secs(60);
const TAIL_CHECK_WARN_AFTER: Duration = Duration::from_secs(6);

/// After this many entries read (from all streams together), the pages of the journal files
/// mapped meanwhile are given back (`journal::release_mapped_pages`): reopening alone leaves a
/// stream's last windows mapped until its next reopen, 16 streams' worth of them.
const RELEASE_PAGES_EVERY: u64 = 5_000;

/// Gaps found while positioning or reopening: how many, and how many entries they lost where
/// the sequence numbers tell (same stream on both sides).
#[derive(Debug, Default, Clone, Copy)]
struct Gaps {
    found: u64,
    entries: u64,
}

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
    /// Caught up since the streams' files were last compared with what was read (see
    /// `check_tails`), when that was, and how long until the next comparison.
    tails_unchecked: bool,
    last_tail_check: Instant,
    tail_check_every: Duration,
    /// The streams reopened by the last comparison, with the entry each had read then.
    stalled: BTreeMap<String, u64>,
    reopen_every: u64,
    /// Gaps found while reopening a stream, not yet taken by `take_gaps`.
    gaps_found: Gaps,
    /// Entries lost to gaps since the collector started (for the metrics).
    gap_entries: u64,
    /// Entries read since the mapped pages were last given back.
    read_since_release: u64,
}

/// Where a stream's entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The local journal (the system's, or a namespace's): one stream, merged by libsystemd.
    Local,
    /// One stream of a `--directory` source, by its sequence-number ID: its files, read apart
    /// from the other streams' (sd-journal's merged view skips entries across streams).
    Directory(String),
}

impl Origin {
    /// The sequence-number ID of a directory's stream.
    fn seqnum_id(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::Directory(id) => Some(id),
        }
    }
}

struct Stream {
    origin: Origin,
    files: Vec<PathBuf>,
    journal: Journal,
    /// The cursor of the last entry read from this stream; None: nothing yet (it starts at its
    /// head).
    read: Option<String>,
    /// The journal stands on an entry not read yet (after a gap was found on resume).
    unread_current: bool,
    /// Entries read since `journal` was opened (see `REOPEN_EVERY`).
    read_since_open: u64,
    /// The device and inode of each of `files` when the journal was opened.
    inodes: Vec<(u64, u64)>,
    /// Its files changed on disk (rotated, vacuumed, a new one): reopen once the journal in hand
    /// is read to its end. The open journal keeps reading files that were renamed or deleted
    /// meanwhile (it holds them open), so nothing it could still read is lost to a reopen.
    reopen_pending: bool,
}

impl Stream {
    /// A stream with nothing read yet.
    fn new(origin: Origin, files: Vec<PathBuf>, journal: Journal) -> Stream {
        Stream {
            origin,
            inodes: files.iter().filter_map(|f| file_id(f)).collect(),
            files,
            journal,
            read: None,
            unread_current: false,
            read_since_open: 0,
            reopen_pending: false,
        }
    }

    /// Whether every file the journal was opened with is still there, as the same file: journald
    /// renames `system.journal` when it rotates and makes a new file of that name.
    fn files_present(&self) -> bool {
        self.files.len() == self.inodes.len()
            && self
                .files
                .iter()
                .zip(&self.inodes)
                .all(|(f, id)| file_id(f).as_ref() == Some(id))
    }

    /// Opens the stream's journal again (its files as they are now) and positions it right
    /// after what was read, or at its head when nothing was.
    fn reopen(&mut self, source: &Source, gaps: &mut Gaps) -> Result<()> {
        let journal = match &self.origin {
            Origin::Local => Journal::open(source)?,
            Origin::Directory(_) => Journal::open_files(source, &self.files)?,
        };
        self.take_up(journal, source, gaps)
    }

    /// Reads on from `journal` (its files as they are now), right after what was read.
    fn take_up(&mut self, journal: Journal, source: &Source, gaps: &mut Gaps) -> Result<()> {
        self.journal = journal;
        self.inodes = self.files.iter().filter_map(|f| file_id(f)).collect();
        self.read_since_open = 0;
        self.reopen_pending = false;
        self.unread_current = match &self.read {
            Some(c) => seek_after(&mut self.journal, source, c, gaps)?,
            None => {
                self.journal.seek_head()?;
                false
            }
        };
        Ok(())
    }
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
            tails_unchecked: false,
            last_tail_check: Instant::now(),
            tail_check_every: RESCAN_EVERY,
            stalled: BTreeMap::new(),
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
            Source::Directory(dir) => {
                use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
                // Set up before the first scan, so that no file appearing after it is missed.
                let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                    .context("failed to create an inotify instance")?;
                watch
                    .add_watch(
                        dir,
                        AddWatchFlags::IN_CREATE
                            | AddWatchFlags::IN_MOVED_TO
                            | AddWatchFlags::IN_MOVED_FROM
                            | AddWatchFlags::IN_DELETE
                            | AddWatchFlags::IN_MODIFY,
                    )
                    .with_context(|| format!("failed to watch {}", dir.display()))?;
                streams.watch = Some(watch);
                let (groups, unready) = streams.scan()?;
                streams.changed = unready;
                for id in groups.into_keys() {
                    if let Some((files, journal)) = streams.open_stream(&id)? {
                        streams
                            .streams
                            .push(Stream::new(Origin::Directory(id), files, journal));
                    }
                }
            }
        }
        Ok(streams)
    }

    /// The journal files of a directory, by sequence-number ID.
    /// Also returns whether a journal file could not be told yet (it was just made: journald
    /// and journal-remote write the header after creating the file). Such a file brings no
    /// further event, so the directory must be looked at again until it can.
    fn scan(&self) -> Result<(BTreeMap<String, Vec<PathBuf>>, bool)> {
        let Source::Directory(dir) = &self.source else {
            return Ok((BTreeMap::new(), false));
        };
        let mut unready = false;
        let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("failed to list the journal directory {}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden names are files still being written elsewhere and renamed when complete.
            if name.starts_with('.') || !(name.ends_with(".journal") || name.ends_with(".journal~"))
            {
                continue;
            }
            let path = entry.path();
            match file_header(&path) {
                Some(h) => groups.entry(h.seqnum_id).or_default().push(path),
                None => unready = true,
            }
        }
        for files in groups.values_mut() {
            files.sort();
        }
        Ok((groups, unready))
    }

    /// Opens the files of stream `id` as they are now. A file can be renamed (rotation) or
    /// deleted (vacuum) between listing and opening, which fails the open: the directory is
    /// listed again and the open tried again. None when the stream has no file left.
    /// A file being made is as much in the way: journald writes a new file's header after
    /// creating it, and libsystemd refuses the file until then (ENODATA, seen under sustained
    /// load): such a failure is tried again a few times, a few milliseconds apart.
    fn open_stream(&self, id: &str) -> Result<Option<(Vec<PathBuf>, Journal)>> {
        let mut attempt = 0;
        loop {
            let Some(files) = self.scan()?.0.remove(id) else {
                return Ok(None);
            };
            match Journal::open_files(&self.source, &files) {
                Ok(journal) => return Ok(Some((files, journal))),
                Err(e) if attempt < 10 => {
                    log::debug!(
                        "{}: a file went away or is being made; listing again",
                        crate::sys::duckdb::chain_text(&e)
                    );
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5 * attempt));
                }
                Err(e) => return Err(e),
            }
        }
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
        let tails = self.tails_unchecked.then(|| {
            self.tail_check_every
                .saturating_sub(self.last_tail_check.elapsed())
        });
        scan.into_iter().chain(tails).min()
    }

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
        self.tails_unchecked = true;
        if self.last_tail_check.elapsed() < self.tail_check_every {
            return Ok(());
        }
        self.last_tail_check = Instant::now();
        self.tails_unchecked = false;
        let before = std::mem::take(&mut self.stalled);
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
            let warn_now =
                (TAIL_CHECK_WARN_AFTER..TAIL_CHECK_WARN_AFTER * 2).contains(&self.tail_check_every);
            if stuck && warn_now {
                // The same entry again after several reopens: not a race with the writer any
                // more, but an entry libsystemd cannot read (a file damaged at that point).
                log::warn!(
                    "journal stream {id} in {}: its files say they hold entries up to {tail}, \
                     but reading stops after {read} (a damaged entry?); trying again in {}s",
                    self.source,
                    (self.tail_check_every * 2)
                        .min(TAIL_CHECK_AT_MOST)
                        .as_secs()
                );
            } else {
                log::debug!(
                    "journal stream {id} in {}: its files end at entry {tail}, {read} read, and \
                     its journal has nothing more to read; reopening it",
                    self.source
                );
            }
            self.stalled.insert(id, read);
            if self.refresh(i)? {
                i += 1;
            }
        }
        // Look again soon (an entry counted but not written yet stays unreadable until it is),
        // and less and less often while the same entries stay out of reach.
        let progress = self
            .stalled
            .iter()
            .all(|(id, read)| before.get(id) != Some(read));
        self.tail_check_every = match (self.stalled.is_empty(), progress) {
            (true, _) | (false, true) => RESCAN_EVERY,
            (false, false) => (self.tail_check_every * 2).min(TAIL_CHECK_AT_MOST),
        };
        self.tails_unchecked = !self.stalled.is_empty();
        self.current = self.current.min(self.streams.len().saturating_sub(1));
        Ok(())
    }

    /// For a directory (or a namespace's journal roots) that changed, at most once per
    /// `RESCAN_EVERY`: opens new streams (read
    /// from their start) and reopens streams whose files changed (rotation, a new file of the same
    /// source), each positioned right after what it has read.
    pub fn rescan(&mut self) -> Result<()> {
        if self.rescan_in() != Some(Duration::ZERO) {
            return Ok(());
        }
        self.last_scan = Instant::now();
        let (groups, unready) = self.scan()?;
        self.changed = unready;
        let source = self.source.clone();
        for stream in &mut self.streams {
            let now = stream.origin.seqnum_id().and_then(|id| groups.get(id));
            if now != Some(&stream.files) && !stream.reopen_pending {
                log::debug!(
                    "journal stream {} in {source}: files changed; reopening it once the open \
                     files are read to their end",
                    stream.origin.seqnum_id().unwrap_or("")
                );
                stream.reopen_pending = true;
            }
        }
        for (id, files) in groups {
            let existing = self
                .streams
                .iter()
                .any(|s| s.origin.seqnum_id() == Some(id.as_str()));
            match existing {
                true => {}
                false => {
                    log::info!(
                        "a new journal stream in {source} ({}): reading it from its first entry",
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if let Some((files, mut journal)) = self.open_stream(&id)? {
                        journal.seek_head()?;
                        self.streams
                            .push(Stream::new(Origin::Directory(id), files, journal));
                    }
                }
            }
        }
        self.current = self.current.min(self.streams.len().saturating_sub(1));
        Ok(())
    }
}

/// The device and inode of a file, which a rename keeps and a new file of the same name does not.
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The cursors of a position (one per stream).
pub fn cursors(position: &str) -> impl Iterator<Item = &str> {
    position.split(' ').filter(|c| !c.is_empty())
}

/// Positions `journal` right after the entry `cursor` names. Returns true when that entry is gone
/// (a gap, logged and counted) and the journal now stands on the first entry not yet read.
fn seek_after(
    journal: &mut Journal,
    source: &Source,
    cursor: &str,
    gaps: &mut Gaps,
) -> Result<bool> {
    journal.seek_cursor(cursor)?;
    if !journal.step_forward()? {
        // The saved entry is not there and nothing follows it. sd-journal's location is then a
        // seek that entries appended later never match: stand on the last entry instead, or at
        // the head of a journal that holds nothing yet (a file journald has just made by
        // rotating, whose entries will all come after the saved one).
        journal.seek_tail()?;
        if journal.step_back()? {
            log::warn!(
                "the saved position is not in {source} and nothing follows it; reading new \
                 entries as they come"
            );
        } else {
            journal.seek_head()?;
        }
        return Ok(false);
    }
    if journal.test_cursor(cursor)? {
        return Ok(false);
    }
    // The saved entry is gone (vacuumed, rotated away, or another journal): the entry we landed
    // on is the first one not read yet.
    let landed = journal.cursor()?;
    gaps.found += 1;
    gaps.entries += entries_between(cursor, &landed).unwrap_or(0);
    log::warn!(
        "the saved position is no longer in {source} (vacuumed?): resuming at the oldest entry \
         after it; {} (saved {cursor}, now at {landed})",
        describe_jump(cursor, &landed)
    );
    Ok(true)
}
