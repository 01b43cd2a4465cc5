//! Where the collector is in the journal: cursors, and the state file that mirrors the buffer's
//! committed position.
//!
//! The state file (`STATE/cursor`) holds the cursor alone, the same format `journalctl
//! --cursor-file` reads, so an operator can run `journalctl --after-cursor "$(cat …/cursor)"`.
//! It is a mirror: the buffer's own copy, committed in the same transaction as the rows, wins.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Where reading stands, or starts: the collector's committed position, a segment's starting
/// position, a restart point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Before the first entry: read from the head.
    Head,
    /// Right after the entry with this cursor (one cursor per stream, space-separated, for a
    /// `--directory` source: see `streams`).
    After(String),
}

/// Where a first start (no saved position) begins reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstStart {
    /// After the newest entry: only what is logged from now on (the default).
    Tail,
    /// At the oldest entry (`--from-head`).
    Head,
    /// At the first entry stamped at or after this time, µs since the epoch (`--from-head
    /// --since TIME`).
    Since(u64),
}

impl Position {
    /// As stored in a table: a cursor, or NULL and at_head.
    pub fn columns(&self) -> (Option<&str>, bool) {
        match self {
            Position::Head => (None, true),
            Position::After(c) => (Some(c.as_str()), false),
        }
    }

    /// Back from `columns`.
    pub fn from_columns(cursor: Option<String>, at_head: bool) -> Position {
        match cursor {
            Some(c) if !at_head => Position::After(c),
            _ => Position::Head,
        }
    }

    /// One line of text (`head`, or the cursor), as in the state file and a segment's `.start`.
    pub fn to_line(&self) -> &str {
        match self {
            Position::Head => "head",
            Position::After(c) => c,
        }
    }

    /// Back from `to_line`; None for anything that is not a position.
    pub fn from_line(line: &str) -> Option<Position> {
        let line = line.trim();
        if line == "head" {
            return Some(Position::Head);
        }
        let valid = !line.is_empty() && line.split(' ').all(|c| parse_cursor(c).is_some());
        valid.then(|| Position::After(line.to_owned()))
    }
}

/// The parts of a journal cursor (`s=…;i=…;b=…;m=…;t=…;x=…`) that say where an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorParts {
    pub seqnum_id: String,
    pub seqnum: u64,
    pub boot_id: String,
    pub realtime_usec: u64,
}

/// Parses a cursor as libsystemd writes it; `None` for anything else.
pub fn parse_cursor(cursor: &str) -> Option<CursorParts> {
    let (mut s, mut i, mut b, mut t) = (None, None, None, None);
    for part in cursor.split(';') {
        let (key, value) = part.split_once('=')?;
        match key {
            "s" => s = Some(value),
            "i" => i = Some(u64::from_str_radix(value, 16).ok()?),
            "b" => b = Some(value),
            "t" => t = Some(u64::from_str_radix(value, 16).ok()?),
            "m" | "x" => {
                u64::from_str_radix(value, 16).ok()?;
            }
            _ => return None,
        }
    }
    let is_id = |v: &str| v.len() == 32 && v.bytes().all(|c| c.is_ascii_hexdigit());
    let (s, b) = (s?, b?);
    if !is_id(s) || !is_id(b) {
        return None;
    }
    Some(CursorParts {
        seqnum_id: s.to_owned(),
        seqnum: i?,
        boot_id: b.to_owned(),
        realtime_usec: t?,
    })
}

/// Describes how far the journal moved between two cursors, for the log line about a gap.
pub fn describe_jump(from: &str, to: &str) -> String {
    match (parse_cursor(from), parse_cursor(to)) {
        (Some(a), Some(b)) => {
            let seconds = (b.realtime_usec as i128 - a.realtime_usec as i128) as f64 / 1e6;
            match entries_between(from, to) {
                Some(n) => format!("{n} entries skipped, {seconds:.1} s of journal time"),
                None => {
                    format!("{seconds:.1} s of journal time (sequence numbers not comparable)")
                }
            }
        }
        _ => "distance unknown".to_owned(),
    }
}

/// How many entries lie strictly between two cursors of one stream; None when their sequence
/// numbers cannot be compared (other streams, or `to` not after `from`).
pub fn entries_between(from: &str, to: &str) -> Option<u64> {
    let (a, b) = (parse_cursor(from)?, parse_cursor(to)?);
    (a.seqnum_id == b.seqnum_id && b.seqnum > a.seqnum).then(|| b.seqnum - a.seqnum - 1)
}

/// What the state file says: the committed position (a mirror of the buffer's), and where to read
/// again should the buffer be lost (the position before its oldest rows not yet in Parquet;
/// absent when that is the committed position itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub cursor: String,
    pub restart: Option<Position>,
}

const RESTART_PREFIX: &str = "restart-from ";

/// Reads the state file. `Ok(None)` when it does not exist; an error (naming the file) when it
/// cannot be read or does not hold a cursor.
pub fn read_state_file(path: &Path) -> Result<Option<SavedState>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let size = bytes.len();
    let text = String::from_utf8(bytes).unwrap_or_default();
    let mut lines = text.lines().map(str::trim);
    let cursor = lines.next().unwrap_or("").to_owned();
    let restart = lines
        .next()
        .and_then(|l| l.strip_prefix(RESTART_PREFIX))
        .map(Position::from_line);
    let valid_cursor = matches!(Position::from_line(&cursor), Some(Position::After(_)));
    if !valid_cursor || restart == Some(None) {
        let what = if size == 0 {
            "it is empty"
        } else {
            "bytes of something else"
        };
        bail!(
            "{} does not hold a journal cursor ({}{what})",
            path.display(),
            if size == 0 {
                String::new()
            } else {
                format!("{size} ")
            }
        );
    }
    Ok(Some(SavedState {
        cursor,
        restart: restart.flatten(),
    }))
}

/// Replaces the state file atomically and durably: temp file, fsync, rename, fsync of the dir.
pub fn write_state_file(path: &Path, state: &SavedState) -> Result<()> {
    let mut text = format!("{}\n", state.cursor);
    if let Some(r) = &state.restart {
        text += &format!("{RESTART_PREFIX}{}\n", r.to_line());
    }
    write_atomically(path, text.as_bytes(), 0o640)
}

pub use crate::sys::files::write_atomically;

#[cfg(test)]
mod tests {
    use super::*;

    const CURSOR: &str = "s=c5c86ce63ace4a4390b69b17d70f6b47;i=1f;b=795b929e9a9a80fdea7b5bf55eb561a4;m=2db8584a56f;t=6128e0e9baf30;x=72c0fbb3667d785";

    #[test]
    fn parses_a_libsystemd_cursor() {
        let p = parse_cursor(CURSOR).unwrap();
        assert_eq!(p.seqnum, 0x1f);
        assert_eq!(p.realtime_usec, 0x6128e0e9baf30);
        assert_eq!(p.seqnum_id, "c5c86ce63ace4a4390b69b17d70f6b47");
    }

    #[test]
    fn rejects_garbage_as_a_cursor() {
        for bad in [
            "",
            "head",
            "s=1;i=2",
            &CURSOR.replace("i=1f", "i=zz"),
            "\u{0}\u{1}",
        ] {
            assert!(parse_cursor(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn jump_counts_skipped_entries_within_one_sequence() {
        let later = CURSOR
            .replace("i=1f", "i=2f")
            .replace("t=6128e0e9baf30", "t=6128e0eaaf170");
        assert_eq!(
            describe_jump(CURSOR, &later),
            "15 entries skipped, 1.0 s of journal time"
        );
    }

    #[test]
    fn state_file_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert_eq!(read_state_file(&path).unwrap(), None);
        for restart in [
            None,
            Some(Position::Head),
            Some(Position::After(CURSOR.into())),
        ] {
            let state = SavedState {
                cursor: CURSOR.into(),
                restart,
            };
            write_state_file(&path, &state).unwrap();
            assert_eq!(read_state_file(&path).unwrap(), Some(state));
        }
        fs::write(&path, format!("{CURSOR}\nrestart-from nonsense\n")).unwrap();
        assert!(read_state_file(&path).is_err());
        fs::write(&path, b"\xff\x00garbage").unwrap();
        let err = format!("{:#}", read_state_file(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
