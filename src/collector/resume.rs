//! Where the collector starts: the lock on the state directory, a buffer of an earlier version
//! adopted, a damaged last segment replaced, the position reconciled between the last segment
//! (authoritative) and the state file (a mirror), and re-reads asked for by jp-flush.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::fcntl::Flock;

use super::writer::{self, Writer};
use crate::buffer::segment::{CollectorState, Segment};
use crate::buffer::Buffer;
use crate::config::Settings;
use crate::journal::position::{parse_cursor, read_state_file, Position, SavedState};
use crate::sys::duckdb::says_database_damaged;
use crate::sys::files::try_lock;

/// One collector per state directory. jp-flush holds the same lock for a moment when it seals
/// the last segment of a stopped collector: wait that long.
pub fn lock_state_dir(dir: &Path) -> Result<Flock<fs::File>> {
    let path = dir.join("collector.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(lock) = try_lock(&path)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "another journal-parquet collector is running with {} ({} is locked)",
                dir.display(),
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The open segment the collector will append to, as found at start.
pub enum Found {
    /// The last segment, whole, with the state it committed.
    Last {
        no: u64,
        segment: Segment,
        state: Option<CollectorState>,
    },
    /// No segment to append to: a new one is made with this number. `read_again_from` is where
    /// reading must go back to, if a segment was lost.
    Nothing {
        next: u64,
        read_again_from: Option<Position>,
    },
}

/// Looks at the buffer under the collector's lock: removes what a crash left half made, adopts
/// a buffer of an earlier version, and opens the last segment, setting it aside if damaged.
pub fn find_open_segment(settings: &Settings, buffer: &Buffer) -> Result<Found> {
    buffer.clean_leftovers()?;
    let state_file = settings.state_file();
    let restart = read_state_file(&state_file)
        .ok()
        .flatten()
        .and_then(|s| s.restart);
    buffer.adopt_legacy(&settings.legacy_buffer_path(), restart.clone())?;
    let Some(&(mut last)) = buffer.segments()?.last() else {
        return Ok(Found::Nothing {
            next: 1,
            read_again_from: None,
        });
    };
    let open = |no: u64| {
        Segment::open_waiting(
            &buffer.segment_path(no),
            buffer.memory_limit(),
            Instant::now() + Duration::from_secs(60),
        )
    };
    let mut opened = open(last);
    // A segment of an earlier version (before an upgrade) holds rows of the old column types:
    // it is sealed as it is, for jp-flush, and the collector goes on in a new one.
    if opened.as_ref().is_ok_and(|s| !s.is_current()) {
        drop(opened);
        if let Some(next) = buffer.seal_without_collector()? {
            log::info!(
                "sealed {} (written by an earlier version) and went on in a new segment",
                buffer.segment_path(last).display()
            );
            last = next;
        }
        opened = open(last);
    }
    let opened = opened.and_then(Segment::for_collector);
    match opened {
        Ok(segment) => {
            let state = segment.collector_state()?;
            Ok(Found::Last {
                no: last,
                segment,
                state,
            })
        }
        Err(e) if says_database_damaged(&e) => {
            // Its rows are read again from the journal, from where it started; rows already in
            // Parquet or in other segments are dropped as repeats when written.
            let start = buffer.start_of(last)?.or(restart);
            let aside = buffer.set_aside(last)?;
            log::error!(
                "{}: the segment is damaged; kept it as {} and reading again from its \
                 restart point",
                crate::sys::duckdb::chain_text(&e),
                aside.display()
            );
            Ok(Found::Nothing {
                next: last + 1,
                read_again_from: start,
            })
        }
        Err(e) => Err(e),
    }
}

/// Decides where to resume from the buffer (authoritative) and the state file (a mirror).
pub fn reconcile(stored: Option<&CollectorState>, state_file: &Path) -> Result<Option<Position>> {
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
                            "{} is behind the last segment (stopped between a commit and its mirror); \
                             resuming from the segment's position",
                            state_file.display()
                        );
                    } else {
                        log::warn!(
                            "{} holds {f} but the last segment's committed position is {c}; the buffer \
                             wins, the state file is rewritten",
                            state_file.display()
                        );
                    }
                }
            }
            Ok(Some(pos.clone()))
        }
        (Some(pos), Err(e)) => {
            log::warn!(
                "{}; the last segment's committed position wins, the state file is rewritten",
                crate::sys::duckdb::chain_text(&e)
            );
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

/// Where reading starts, as worked out from what was found.
pub struct StartPoint {
    /// The state the last segment committed, if any.
    pub stored: Option<CollectorState>,
    /// The position to read after (None: a first start).
    pub position: Option<Position>,
    /// The entries from `position` may be in Parquet or other segments already (a re-read):
    /// the new segment says so, and jp-flush drops the repeats.
    pub reread: bool,
    /// The re-read requests jp-flush left while no collector ran, removed once taken up.
    pub rereads: Vec<(PathBuf, Position)>,
}

/// Decides where reading starts: a re-read jp-flush asked for while no collector ran, else the
/// last segment's position, else the state file's (which may repeat entries already written).
pub fn start_point(found: &Found, buffer: &Buffer, state_file: &Path) -> Result<StartPoint> {
    let (stored, read_again_from) = match found {
        Found::Last { state, .. } => (state.clone(), None),
        Found::Nothing {
            read_again_from, ..
        } => (None, read_again_from.clone()),
    };
    let position = match read_again_from {
        Some(p) => Some(p),
        None => reconcile(stored.as_ref(), state_file)?,
    };
    let rereads = buffer.reread_requests()?;
    let (position, reread) = match (rereads.first(), found, stored.is_some()) {
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
    Ok(StartPoint {
        stored,
        position,
        reread,
        rereads,
    })
}

/// The writer the collector appends with: on the last segment when it goes on from its own
/// state, else on a new segment after it.
pub fn open_writer(
    found: Found,
    reread: bool,
    buffer: &Buffer,
    state_file: &Path,
    state: CollectorState,
) -> Result<Writer> {
    let (buffer, state_file) = (buffer.clone(), state_file.to_path_buf());
    let start = state.position.clone();
    match found {
        Found::Last {
            no,
            segment,
            state: Some(_),
        } if !reread => Writer::new(buffer, state_file, no, segment, state),
        Found::Last { no, segment, .. } => {
            segment.close()?;
            Writer::create(buffer, state_file, no + 1, &start, state, reread)
        }
        Found::Nothing { next, .. } => {
            Writer::create(buffer, state_file, next, &start, state, reread)
        }
    }
}
