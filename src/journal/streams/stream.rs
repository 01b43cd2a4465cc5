//! One stream of a source: its origin, its files, its open journal and what was read from it.

use std::path::PathBuf;

use anyhow::Result;

use crate::journal::position::{describe_jump, entries_between};
use crate::journal::{Journal, Source};

/// Gaps found while positioning or reopening: how many, and how many entries they lost where
/// the sequence numbers tell (same stream on both sides).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Gaps {
    pub(super) found: u64,
    pub(super) entries: u64,
}

/// Where a stream's entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// The local journal (the system's, or a namespace's): one stream, merged by libsystemd.
    Local,
    /// One stream of a `--directory` source, by its sequence-number ID: its files, read apart
    /// from the other streams' (sd-journal's merged view skips entries across streams).
    Directory(String),
}

impl Origin {
    /// The sequence-number ID of a directory's stream.
    pub(super) fn seqnum_id(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::Directory(id) => Some(id),
        }
    }
}

pub(super) struct Stream {
    pub(super) origin: Origin,
    pub(super) files: Vec<PathBuf>,
    pub(super) journal: Journal,
    /// The cursor of the last entry read from this stream; None: nothing yet (it starts at its
    /// head).
    pub(super) read: Option<String>,
    /// The journal stands on an entry not read yet (after a gap was found on resume).
    pub(super) unread_current: bool,
    /// Entries read since `journal` was opened (see `REOPEN_EVERY`).
    pub(super) read_since_open: u64,
    /// The device and inode of each of `files` when the journal was opened.
    pub(super) inodes: Vec<(u64, u64)>,
    /// Its files changed on disk (rotated, vacuumed, a new one): reopen once the journal in hand
    /// is read to its end. The open journal keeps reading files that were renamed or deleted
    /// meanwhile (it holds them open), so nothing it could still read is lost to a reopen.
    pub(super) reopen_pending: bool,
}

impl Stream {
    /// A stream with nothing read yet.
    pub(super) fn new(origin: Origin, files: Vec<PathBuf>, journal: Journal) -> Stream {
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
    pub(super) fn files_present(&self) -> bool {
        self.files.len() == self.inodes.len()
            && self
                .files
                .iter()
                .zip(&self.inodes)
                .all(|(f, id)| file_id(f).as_ref() == Some(id))
    }

    /// Opens the stream's journal again (its files as they are now) and positions it right
    /// after what was read, or at its head when nothing was.
    pub(super) fn reopen(&mut self, source: &Source, gaps: &mut Gaps) -> Result<()> {
        let journal = match &self.origin {
            Origin::Local => Journal::open(source)?,
            Origin::Directory(_) => Journal::open_files(source, &self.files)?,
        };
        self.take_up(journal, source, gaps)
    }

    /// Reads on from `journal` (its files as they are now), right after what was read.
    pub(super) fn take_up(
        &mut self,
        journal: Journal,
        source: &Source,
        gaps: &mut Gaps,
    ) -> Result<()> {
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

/// The device and inode of a file, which a rename keeps and a new file of the same name does not.
pub(super) fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Positions `journal` right after the entry `cursor` names. Returns true when that entry is gone
/// (a gap, logged and counted) and the journal now stands on the first entry not yet read.
pub(super) fn seek_after(
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
