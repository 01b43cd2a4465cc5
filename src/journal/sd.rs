//! Reading the journal in-process through libsystemd's `sd_journal_*` API.
//!
//! The `systemd` crate's `next_entry()` collapses repeated fields and decodes bytes lossily, so this
//! module talks to libsystemd-sys directly: every data object of an entry comes out as raw bytes,
//! in journal order, repeats included, with no size threshold.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libsystemd_sys::journal as ffi;

/// Which journal files to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Every journal this process may read: the system journal and every user's
    /// (`sd_journal_open` with no flags, like `journalctl` without `-D`).
    System,
    /// The journal files in one directory (like `journalctl -D DIR`).
    Directory(PathBuf),
    /// One journald namespace (`sd_journal_open_namespace`, like `journalctl --namespace NAME`):
    /// what units with `LogNamespace=NAME` log.
    Namespace(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::System => write!(f, "the system and user journals"),
            Source::Directory(dir) => write!(f, "the journal files in {}", dir.display()),
            Source::Namespace(name) => write!(f, "the journal namespace {name:?}"),
        }
    }
}

/// What `sd_journal_process` says changed since the last wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    Appended,
    /// Files were added or removed (rotation, vacuum): positions stay valid.
    Invalidated,
}

/// An open journal. Not `Send`: libsystemd's handle belongs to the thread that opened it.
pub struct Journal {
    handle: *mut ffi::sd_journal,
    source: Source,
}

fn errno_text(r: i32) -> String {
    std::io::Error::from_raw_os_error(-r).to_string()
}

impl Journal {
    pub fn open(source: &Source) -> Result<Journal> {
        let mut handle = std::ptr::null_mut();
        let r = match source {
            // No flags: system and user journals, local and (where linked) other machines'.
            Source::System => unsafe { ffi::sd_journal_open(&mut handle, 0) },
            Source::Directory(dir) => {
                let c = path_cstring(dir)?;
                unsafe { ffi::sd_journal_open_directory(&mut handle, c.as_ptr(), 0) }
            }
            // Flags 0: that namespace alone, not the default one beside it.
            Source::Namespace(name) => {
                let c = CString::new(name.as_str())
                    .context("a namespace name cannot contain a NUL byte")?;
                unsafe { ffi::sd_journal_open_namespace(&mut handle, c.as_ptr(), 0) }
            }
        };
        if r < 0 {
            bail!("failed to open {source}: {}", errno_text(r));
        }
        Journal::set_up(handle, source)?.watched()
    }

    /// Takes over an opened handle and sets it up for reading.
    fn set_up(handle: *mut ffi::sd_journal, source: &Source) -> Result<Journal> {
        let journal = Journal {
            handle,
            source: source.clone(),
        };
        // 0 = no threshold: values over the 64 KiB default come back whole.
        journal.check(
            unsafe { ffi::sd_journal_set_data_threshold(handle, 0) },
            "set the data threshold of",
        )?;
        Ok(journal)
    }

    /// Sets up libsystemd's inotify watches (the first `sd_journal_get_fd` does): done before the
    /// first read, no change between that read and the first poll can go unnoticed.
    fn watched(self) -> Result<Journal> {
        self.poll_fd()?;
        Ok(self)
    }

    /// Opens exactly these journal files (one sequence-number stream of a directory, see
    /// `streams`). `source` names them in messages.
    ///
    /// Without libsystemd's inotify watches: on an event for a file renamed or deleted (a
    /// rotation, a vacuum) `sd_journal_process` drops that file from the journal, with whatever
    /// it had not read yet, and a journal opened on a list of files never takes a file back.
    /// The caller watches the directory itself, and reopens the journal once it is read to its
    /// end (see `streams`).
    pub fn open_files(source: &Source, files: &[PathBuf]) -> Result<Journal> {
        let paths = files
            .iter()
            .map(|f| path_cstring(f))
            .collect::<Result<Vec<CString>>>()?;
        let mut pointers: Vec<*const libc::c_char> = paths.iter().map(|p| p.as_ptr()).collect();
        pointers.push(std::ptr::null());
        let mut handle = std::ptr::null_mut();
        let r = unsafe { ffi::sd_journal_open_files(&mut handle, pointers.as_ptr(), 0) };
        if r < 0 {
            bail!("failed to open {source}: {}", errno_text(r));
        }
        Journal::set_up(handle, source)
    }

    fn check(&self, r: i32, action: &str) -> Result<i32> {
        if r < 0 {
            bail!("failed to {action} {}: {}", self.source, errno_text(r));
        }
        Ok(r)
    }

    pub fn seek_head(&mut self) -> Result<()> {
        let r = unsafe { ffi::sd_journal_seek_head(self.handle) };
        self.check(r, "seek to the head of").map(drop)
    }

    pub fn seek_tail(&mut self) -> Result<()> {
        let r = unsafe { ffi::sd_journal_seek_tail(self.handle) };
        self.check(r, "seek to the tail of").map(drop)
    }

    /// Seeks to the time `usec` (µs since the epoch): the next entry is the first stamped at or
    /// after it, the previous one the last stamped before it.
    pub fn seek_realtime_usec(&mut self, usec: u64) -> Result<()> {
        let r = unsafe { ffi::sd_journal_seek_realtime_usec(self.handle, usec) };
        self.check(r, "seek to a time in").map(drop)
    }

    pub fn seek_cursor(&mut self, cursor: &str) -> Result<()> {
        let c = CString::new(cursor).context("a cursor cannot contain a NUL byte")?;
        let r = unsafe { ffi::sd_journal_seek_cursor(self.handle, c.as_ptr()) };
        self.check(r, "seek to a cursor in").map(drop)
    }

    /// Whether the current entry is the one `cursor` names.
    pub fn test_cursor(&mut self, cursor: &str) -> Result<bool> {
        let c = CString::new(cursor).context("a cursor cannot contain a NUL byte")?;
        let r = unsafe { ffi::sd_journal_test_cursor(self.handle, c.as_ptr()) };
        Ok(self.check(r, "test a cursor in")? > 0)
    }

    /// Moves to the next entry; false at the end of the journal.
    pub fn step_forward(&mut self) -> Result<bool> {
        let r = unsafe { ffi::sd_journal_next(self.handle) };
        Ok(self.check(r, "read the next entry of")? > 0)
    }

    pub fn step_back(&mut self) -> Result<bool> {
        let r = unsafe { ffi::sd_journal_previous(self.handle) };
        Ok(self.check(r, "read the previous entry of")? > 0)
    }

    pub fn cursor(&self) -> Result<String> {
        let mut ptr: *const libc::c_char = std::ptr::null();
        let r = unsafe { ffi::sd_journal_get_cursor(self.handle, &mut ptr) };
        self.check(r, "get the cursor of an entry in")?;
        // sd_journal_get_cursor hands over a malloc()ed string.
        let cursor = unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned();
        unsafe { libc::free(ptr as *mut libc::c_void) };
        Ok(cursor)
    }

    pub fn realtime_usec(&self) -> Result<u64> {
        let mut usec = 0u64;
        let r = unsafe { ffi::sd_journal_get_realtime_usec(self.handle, &mut usec) };
        self.check(r, "get the timestamp of an entry in")?;
        Ok(usec)
    }

    /// The monotonic timestamp and the boot ID it counts from.
    pub fn monotonic_usec(&self) -> Result<(u64, [u8; 16])> {
        let mut usec = 0u64;
        let mut boot = libsystemd_sys::id128::sd_id128_t { bytes: [0; 16] };
        let r = unsafe { ffi::sd_journal_get_monotonic_usec(self.handle, &mut usec, &mut boot) };
        self.check(r, "get the monotonic timestamp of an entry in")?;
        Ok((usec, boot.bytes))
    }

    /// Calls `each` with every data object (`NAME=value`, raw bytes) of the current entry, in
    /// journal order, repeated names included. Returns how many objects could not be read
    /// (corrupt data objects stop the enumeration: libsystemd 252 does not step over them).
    pub fn for_each_field(&mut self, mut each: impl FnMut(&[u8])) -> Result<usize> {
        unsafe { ffi::sd_journal_restart_data(self.handle) };
        loop {
            let mut data: *const u8 = std::ptr::null();
            let mut len: libc::size_t = 0;
            let r = unsafe { ffi::sd_journal_enumerate_data(self.handle, &mut data, &mut len) };
            if r == 0 {
                return Ok(0);
            }
            if r < 0 {
                return Ok(1);
            }
            // The pointer is only valid until the next enumerate call: `each` copies what it keeps.
            each(unsafe { std::slice::from_raw_parts(data, len) });
        }
    }

    /// The file descriptor to poll for new entries, and the events to poll it for.
    pub fn poll_fd(&self) -> Result<(RawFd, i16)> {
        let fd = unsafe { ffi::sd_journal_get_fd(self.handle) };
        self.check(fd, "get a file descriptor to watch")?;
        let events = unsafe { ffi::sd_journal_get_events(self.handle) };
        self.check(events, "get the events to watch for")?;
        Ok((fd, events as i16))
    }

    /// How long libsystemd may sleep before it must be woken (it polls files it cannot watch).
    pub fn timeout_usec(&self) -> Result<Option<u64>> {
        let mut usec = u64::MAX;
        let r = unsafe { ffi::sd_journal_get_timeout(self.handle, &mut usec) };
        self.check(r, "get the wake-up timeout of")?;
        Ok((usec != u64::MAX).then_some(usec))
    }

    /// Lets libsystemd handle what woke the poll: new files, rotation, appended entries.
    pub fn process(&mut self) -> Result<Change> {
        let r = unsafe { ffi::sd_journal_process(self.handle) };
        Ok(match self.check(r, "process changes to")? {
            ffi::SD_JOURNAL_APPEND => Change::Appended,
            ffi::SD_JOURNAL_INVALIDATE => Change::Invalidated,
            _ => Change::Nothing,
        })
    }

    /// Whether any journal file could be opened at all (false, for instance, for a user who is
    /// not in the systemd-journal group).
    pub fn has_files(&self) -> bool {
        // The usage is the sum of the sizes of the files opened (has_persistent_files and
        // has_runtime_files only look under /var and /run, not at --directory paths).
        let mut bytes = 0u64;
        unsafe { ffi::sd_journal_get_usage(self.handle, &mut bytes) >= 0 && bytes > 0 }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        unsafe { ffi::sd_journal_close(self.handle) };
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// Lower-case hex of a 128-bit ID, as journalctl prints `_BOOT_ID`.
pub fn id128_hex(id: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in id {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// What a journal file's header says of its stream: its sequence-number ID, and the sequence
/// number of its last entry (0: none yet).
pub struct FileHeader {
    pub seqnum_id: String,
    pub tail_entry_seqnum: u64,
    pub head_entry_seqnum: u64,
}

/// Reads a journal file's header; None when it is not a journal file or its header is not
/// written yet. The writer updates the header in place with each entry, so this is current.
pub fn file_header(path: &Path) -> Option<FileHeader> {
    use std::io::Read;
    // Header: signature[8] "LPKSHHRH", flags 2×4, state 1, reserved 7, file_id, machine_id,
    // tail_entry_boot_id (16 each), seqnum_id at offset 72; ...; n_entries at 152,
    // tail_entry_seqnum at 160, head_entry_seqnum at 168.
    let mut header = [0u8; 176];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    if &header[..8] != b"LPKSHHRH" {
        return None;
    }
    let id: [u8; 16] = header[72..88].try_into().ok()?;
    // All zeros: the header is not written yet.
    if id == [0; 16] {
        return None;
    }
    Some(FileHeader {
        seqnum_id: id128_hex(&id),
        tail_entry_seqnum: u64::from_le_bytes(header[160..168].try_into().ok()?),
        head_entry_seqnum: u64::from_le_bytes(header[168..176].try_into().ok()?),
    })
}

/// Gives back the pages of journal files that libsystemd has mapped into this process, keeping
/// the mappings: the next access maps a page again from the page cache (a minor fault).
///
/// Why: sd-journal keeps up to 64 windows of 8 MiB mapped per open journal, and every page an
/// entry touched stays in the process's RSS until the journal is closed. Following 16
/// journal-remote files, that was 150 MiB of the collector's RSS however often each stream was
/// reopened. The windows are shared, read-only mappings of files that are only ever appended to,
/// so dropping their pages (`MADV_DONTNEED`) changes nothing that is read through them.
/// Returns the bytes of mappings advised (for the debug log).
pub fn release_mapped_pages() -> u64 {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut released = 0;
    for line in maps.lines() {
        // "start-end perms offset dev inode path", the path " (deleted)" once unlinked.
        let mut parts = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3).unwrap_or("").trim_start();
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let is_journal = path.ends_with(".journal") || path.ends_with(".journal~");
        // Only libsystemd's read-only shared mappings: nothing of ours is dropped by mistake.
        if !is_journal || !perms.starts_with("r--s") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // Safe: the range is a whole mapping of this process, and MADV_DONTNEED on a shared
        // file mapping only drops page table entries.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r == 0 {
            released += (end - start) as u64;
        }
    }
    released
}
