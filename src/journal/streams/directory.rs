//! The streams of a `--directory` source: listing its files by stream, opening a stream's files,
//! and following the directory as files appear, rotate and go.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::stream::{Origin, Stream};
use super::Streams;
use crate::journal::{file_header, Journal, Source};

impl Streams {
    /// Opens a stream for each sequence-number ID of the files in `dir`, and watches it.
    pub(super) fn open_directory(&mut self, dir: &std::path::Path) -> Result<()> {
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
        self.watch = Some(watch);
        let (groups, unready) = self.scan()?;
        self.changed = unready;
        for id in groups.into_keys() {
            if let Some((files, journal)) = self.open_stream(&id)? {
                self.streams
                    .push(Stream::new(Origin::Directory(id), files, journal));
            }
        }
        Ok(())
    }

    /// The journal files of a directory, by sequence-number ID.
    /// Also returns whether a journal file could not be told yet (it was just made: journald
    /// and journal-remote write the header after creating the file). Such a file brings no
    /// further event, so the directory must be looked at again until it can.
    pub(super) fn scan(&self) -> Result<(BTreeMap<String, Vec<PathBuf>>, bool)> {
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
    pub(super) fn open_stream(&self, id: &str) -> Result<Option<(Vec<PathBuf>, Journal)>> {
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
