//! Reading: journal entries into the batch in hand, remembering where reading stands.

use std::time::Instant;

use anyhow::Result;

use crate::collector::batch::Batch;
use crate::journal::filter::Filter;
use crate::journal::streams::Streams;
use crate::schema::entry::{EntryMeta, Fields};
use crate::sys::metrics::JOURNALD_DROPPED;

/// How large the batch in hand may grow before it must be committed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: usize,
    pub bytes: usize,
}

impl Limits {
    pub fn full(&self, batch: &Batch) -> bool {
        batch.len() >= self.entries || batch.byte_size() >= self.bytes
    }
}

/// Reads entries from the journal, remembering where it is.
pub struct Reader {
    pub journal: Streams,
    fields: Fields,
    /// The timestamp of the newest entry read (µs), for STATUS=.
    pub newest_usec: Option<u64>,
    pub corrupt_entries: u64,
    filter: Filter,
    /// Entries the filter dropped since the collector started.
    pub filtered: u64,
    /// Entries read since the collector started, kept or not.
    pub read_total: u64,
    /// What journald said it threw away ("Suppressed N messages from UNIT"), by unit.
    pub suppressed: std::collections::BTreeMap<String, u64>,
    /// Entries were read (kept or filtered) since the position was last committed: even when
    /// the filter kept none of them, the position must move past them (a sparse filter must not
    /// make a restart read everything again).
    pub unsaved: bool,
}

pub enum Fill {
    /// Reached the end of what the journal holds now.
    CaughtUp,
    /// Stopped because the batch is full or time is up; more is waiting.
    More,
}

impl Reader {
    pub fn new(journal: Streams, filter: Filter) -> Reader {
        Reader {
            journal,
            fields: Fields::default(),
            newest_usec: None,
            corrupt_entries: 0,
            filter,
            filtered: 0,
            read_total: 0,
            suppressed: Default::default(),
            unsaved: false,
        }
    }

    /// Applies a reloaded configuration's filters to the entries read from now on.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    /// Reads entries into `batch` until the journal is exhausted, the batch is full or `until`.
    pub fn fill(&mut self, batch: &mut Batch, limits: Limits, until: Instant) -> Result<Fill> {
        let mut n = 0u32;
        loop {
            if limits.full(batch) {
                return Ok(Fill::More);
            }
            // Checking the clock every entry costs more than reading one; every 256 is enough.
            n = n.wrapping_add(1);
            if n.is_multiple_of(256) && Instant::now() >= until {
                return Ok(Fill::More);
            }
            if !self.journal.step_forward()? {
                return Ok(Fill::CaughtUp);
            }
            self.read_current(batch)?;
        }
    }

    /// Counts journald's own rate-limit losses: a driver message (`_TRANSPORT=driver`, which no
    /// client can forge) with journald's "dropped" MESSAGE_ID, N_DROPPED, and the unit at the end
    /// of "Suppressed N messages from UNIT".
    fn note_suppressed(&mut self) {
        let (mut id, mut driver, mut dropped, mut message) = (false, false, None, None);
        for (name, value) in self.fields.iter() {
            match name {
                b"MESSAGE_ID" => id |= value == JOURNALD_DROPPED,
                b"_TRANSPORT" => driver |= value == b"driver",
                b"N_DROPPED" => {
                    dropped = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                }
                b"MESSAGE" => message = Some(value),
                _ => {}
            }
        }
        let (true, true, Some(n), Some(message)) = (id, driver, dropped, message) else {
            return;
        };
        let text = String::from_utf8_lossy(message);
        let unit = text
            .rsplit_once(" from ")
            .map_or("unknown", |(_, u)| u.trim());
        *self.suppressed.entry(unit.to_owned()).or_default() += n;
    }

    fn read_current(&mut self, batch: &mut Batch) -> Result<()> {
        let journal = self.journal.current();
        let cursor = journal.cursor()?;
        let realtime_usec = journal.realtime_usec()?;
        let (monotonic_usec, boot_id) = journal.monotonic_usec()?;
        self.fields.clear();
        let fields = &mut self.fields;
        // journald's "dropped" message is rare: looked for in full only when its MESSAGE_ID is
        // there, seen as the fields go by (most fail at the first byte).
        let mut dropped = false;
        let unreadable = journal.for_each_field(|data| {
            dropped |= data.strip_prefix(b"MESSAGE_ID=") == Some(JOURNALD_DROPPED);
            fields.push(data)
        })?;
        if unreadable > 0 {
            self.corrupt_entries += 1;
            log::warn!(
                "entry {cursor} in {} has a corrupt data object: kept the {} fields before it",
                self.journal.source(),
                self.fields.len()
            );
        }
        self.unsaved = true;
        self.read_total += 1;
        if dropped {
            self.note_suppressed();
        }
        if !self.filter.keeps(&self.fields) {
            self.filtered += 1;
            return self.journal.mark_read(cursor);
        }
        self.filter.strip(&mut self.fields);
        batch.push(
            &EntryMeta {
                cursor: &cursor,
                realtime_usec,
                monotonic_usec,
                boot_id,
            },
            &self.fields,
        );
        self.newest_usec = Some(realtime_usec);
        self.journal.mark_read(cursor)
    }
}
