//! Retention: deleting the oldest minute files of the Parquet tree by age, by the space the tree
//! uses, and by the free space left on its file system, as journald's `MaxRetentionSec=`,
//! `SystemMaxUse=` and `SystemKeepFree=` do for the journal.
//!
//! Only files this program writes are ever deleted: `HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet`, the
//! hour and day files compaction writes in their place (`YYYYMMDD-HH.parquet`,
//! `YYYYMMDD.parquet`; each goes whole, once all of it is past the limit) and those set aside
//! beside them (`….parquet.damaged-UNIXTIME`). Anything else in the tree is left
//! where it is, and named in a warning the first time it is seen.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

#[cfg(test)]
use crate::archive::layout::MINUTE_USEC;
use crate::archive::layout::{self, Span};

/// The three limits; each None: off (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Minute files whose minute ended longer ago than this are deleted.
    pub max_age: Option<Duration>,
    /// The oldest minutes are deleted until the files this program wrote use at most this.
    pub max_use: Option<u64>,
    /// The oldest minutes are deleted until the data file system has this much free.
    pub keep_free: Option<u64>,
}

impl Retention {
    pub fn is_off(&self) -> bool {
        self == &Retention::default()
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub files: u64,
    pub bytes: u64,
    /// Why, for the log line: the limits that made files go.
    pub by_age: u64,
    pub by_use: u64,
    pub by_free: u64,
    /// Files the limits would have deleted, kept because the upload has not copied them yet.
    pub waiting_for_upload: u64,
    /// What the files deleted held: (host directory, first µs, end µs), for the summary.
    pub spans: Vec<(String, i64, i64)>,
}

/// A file of ours: a minute, or an hour or day compaction wrote.
struct ArchiveFile {
    span: Span,
    path: PathBuf,
    bytes: u64,
    /// When it was last written (a merge rewrites it, and the upload copies it again).
    modified: Option<std::time::SystemTime>,
    /// Set aside as damaged: never uploaded, so never waited for.
    aside: bool,
}

/// What retention knows of the upload to object storage (`jp-upload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Not configured: retention deletes what its limits say.
    Off,
    /// Configured: only a minute file written before this time is known to be in the bucket
    /// (None: nothing is yet), and only such a file may be deleted.
    CopiedBefore(Option<std::time::SystemTime>),
}

/// Applies `retention` to the tree under `data_dir`. Files of minutes at or after `keep_from`
/// (µs, a minute boundary: the oldest minute that still has rows in the buffer, or the current
/// one) are never deleted, whatever the limits: their rows would come back as a partial file.
/// `warned` is the file that remembers which foreign files were already named in a warning.
pub fn apply(
    data_dir: &Path,
    retention: &Retention,
    keep_from: i64,
    now_usec: i64,
    warned: &Path,
    upload: Upload,
) -> Result<Deleted> {
    let mut deleted = Deleted::default();
    if retention.is_off() || !data_dir.exists() {
        return Ok(deleted);
    }
    let (mut files, foreign) = list(data_dir)?;
    warn_foreign(&foreign, warned);
    files.sort_by(|a, b| (a.span, &a.path).cmp(&(b.span, &b.path)));
    let mut used: u64 = files.iter().map(|f| f.bytes).sum();
    let mut free = match retention.keep_free {
        Some(_) => Some(free_bytes(data_dir)?),
        None => None,
    };
    let too_old = retention
        .max_age
        .map(|age| now_usec - i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
    let mut emptied = BTreeSet::new();
    for f in files {
        // A file that reaches keep_from could lose rows still to come from the buffer.
        if f.span.end_usec() > keep_from {
            break;
        }
        // Older than max_age once its last minute (or hour, or day) ended that long ago.
        let old = too_old.is_some_and(|t| f.span.end_usec() <= t);
        let over = retention.max_use.is_some_and(|m| used > m);
        let short = matches!((retention.keep_free, free), (Some(k), Some(fr)) if fr < k);
        if !(old || over || short) {
            break;
        }
        let copied = match upload {
            Upload::Off => true,
            Upload::CopiedBefore(before) => {
                f.aside || matches!((f.modified, before), (Some(m), Some(b)) if m < b)
            }
        };
        if !copied {
            deleted.waiting_for_upload += 1;
            continue;
        }
        match fs::remove_file(&f.path) {
            Ok(()) => {}
            // Gone already (an admin, another pass): nothing to count.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to delete {} (retention)", f.path.display()))
            }
        }
        deleted.files += 1;
        deleted.bytes += f.bytes;
        // A file set aside is not the minute's file: the summary counts the one in place.
        let host = f
            .path
            .strip_prefix(data_dir)
            .ok()
            .and_then(|r| r.components().next());
        if let (false, Some(host)) = (f.aside, host) {
            let host = host.as_os_str().to_string_lossy().into_owned();
            deleted
                .spans
                .push((host, f.span.start_usec, f.span.end_usec()));
        }
        deleted.by_age += u64::from(old);
        deleted.by_use += u64::from(!old && over);
        deleted.by_free += u64::from(!old && !over && short);
        used -= f.bytes;
        free = free.map(|fr| fr + f.bytes);
        if let Some(dir) = f.path.parent() {
            emptied.insert(dir.to_path_buf());
        }
    }
    remove_empty_dirs(data_dir, emptied);
    Ok(deleted)
}

/// The minute files of ours under `data_dir`, and every other file (foreign).
fn list(data_dir: &Path) -> Result<(Vec<ArchiveFile>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut foreign = Vec::new();
    let mut stack = vec![(data_dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // A directory removed meanwhile (by the admin, or emptied by a pass).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to list {} (retention)", dir.display()))
            }
        };
        for entry in entries {
            let entry =
                entry.with_context(|| format!("failed to list {} (retention)", dir.display()))?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue; // gone meanwhile
            };
            if meta.is_dir() {
                let name = entry.file_name();
                if depth == 0
                    && [layout::FRESH_WORK_DIR, layout::COMPACT_WORK_DIR]
                        .iter()
                        .any(|w| name == *w)
                {
                    continue; // jp-flush's own work, never the archive's
                }
                // HOST/YYYY/MM/DD: deeper directories are not ours.
                match depth < 4 {
                    true => stack.push((path, depth + 1)),
                    false => foreign.push(path),
                }
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match (depth, span_of(&name)) {
                (4, Some(span)) => files.push(ArchiveFile {
                    span,
                    aside: !name.ends_with(".parquet"),
                    path,
                    bytes: meta.len(),
                    modified: meta.modified().ok(),
                }),
                // A file being written (`.NAME.tmp`), or our catalogue at the top: not foreign.
                (4, None) if name.starts_with('.') && name.ends_with(".parquet.tmp") => {}
                (0, None) if name.starts_with("journal.duckdb") => {}
                _ => foreign.push(path),
            }
        }
    }
    Ok((files, foreign))
}

/// The span of a file name of ours: a minute, hour or day file (`layout::span_of`), or such a
/// name set aside as `NAME.parquet.damaged-UNIXTIME`.
fn span_of(name: &str) -> Option<Span> {
    match name.split_once(".parquet") {
        Some((_, "")) => layout::span_of(name),
        Some((stem, rest)) => {
            let stamp = rest.strip_prefix(".damaged-")?;
            if stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            layout::span_of(&format!("{stem}.parquet"))
        }
        None => None,
    }
}

/// Free space for an unprivileged writer on the file system of `dir`, as `df` shows it.
fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).with_context(|| {
        format!(
            "failed to read the free space of {} (retention)",
            dir.display()
        )
    })?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Removes the directories emptied (day, then month, year and host), never `data_dir` itself.
fn remove_empty_dirs(data_dir: &Path, emptied: BTreeSet<PathBuf>) {
    for dir in emptied {
        let mut d = dir.as_path();
        while d != data_dir && d.starts_with(data_dir) {
            // Fails when not empty: that is the answer.
            if fs::remove_dir(d).is_err() {
                break;
            }
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
}

/// Warns once about each file in the tree this program did not write (it is never deleted, and
/// retention cannot make room with it): the names warned about are kept in `warned`.
fn warn_foreign(foreign: &[PathBuf], warned: &Path) {
    if foreign.is_empty() {
        let _ = fs::remove_file(warned);
        return;
    }
    let known: BTreeSet<String> = fs::read_to_string(warned)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let now: BTreeSet<String> = foreign
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let new: Vec<&String> = now.difference(&known).collect();
    if new.is_empty() {
        return;
    }
    log::warn!(
        "retention leaves {} file(s) in the data directory that journal-parquet did not write, \
         and does not count them: {}",
        new.len(),
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let text: String = now.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = crate::sys::files::write_atomically(warned, text.as_bytes(), 0o640) {
        log::debug!(
            "{}: the foreign files will be named again next time",
            crate::sys::duckdb::chain_text(&e)
        );
    }
}

/// Parses a time span as journald's `MaxRetentionSec=` takes it: a number and a unit (s, min, h,
/// d, w, month, y; e.g. `400d`, `12h`).
pub fn parse_span(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs: u64 = match unit.trim() {
        "s" | "sec" => 1,
        "min" | "m" => 60,
        "h" | "hour" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        // systemd's: 30.44 and 365.25 days.
        "month" | "months" => 2_629_800,
        "y" | "year" | "years" => 31_557_600,
        _ => return None,
    };
    (n > 0).then_some(())?;
    Some(Duration::from_secs(n.checked_mul(secs)?))
}

/// Parses a size as journald's `SystemMaxUse=` takes it: bytes, or a number with K, M, G or T
/// (powers of 1024; e.g. `50G`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (n, mult) = match t.as_bytes().last()? {
        b'K' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        b'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = n.parse().ok()?;
    (n > 0).then_some(())?;
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_ours_give_their_span_and_others_none() {
        let m = span_of("20261203-1209.parquet").unwrap();
        assert_eq!(m.start_usec % MINUTE_USEC, 0);
        assert_eq!(span_of("20261203-1209.parquet.damaged-1764756000"), Some(m));
        assert_eq!(
            span_of("20261203.parquet.damaged-1").unwrap().len_usec,
            1440 * MINUTE_USEC
        );
        for other in [
            "20261203-1209.parquet.tmp",
            ".20261203-1209.parquet.tmp",
            "20261203-1260.parquet",
            "2026120-31209.parquet",
            "notes.txt",
            "20261203-1209.parquet.damaged-",
        ] {
            assert_eq!(span_of(other), None, "{other}");
        }
    }

    /// `keep_from` wins over every limit: a minute with rows still in the buffer keeps its file.
    #[test]
    fn minutes_from_keep_from_on_survive_every_limit() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("host/2024/03/01");
        fs::create_dir_all(&dir).unwrap();
        let names = [
            "20240301-0000.parquet",
            "20240301-0001.parquet",
            "20240301-0002.parquet",
        ];
        for n in names {
            fs::write(dir.join(n), b"PAR1").unwrap();
        }
        let keep_from = span_of(names[1]).unwrap().start_usec;
        let everything = Retention {
            max_age: Some(Duration::from_secs(1)),
            max_use: Some(1),
            keep_free: Some(u64::MAX),
        };
        let now = keep_from + 365 * 86_400 * 1_000_000;
        let warned = data.path().join("warned");
        let d = apply(
            data.path(),
            &everything,
            keep_from,
            now,
            &warned,
            Upload::Off,
        )
        .unwrap();
        assert_eq!((d.files, d.bytes, d.by_age), (1, 4, 1));
        assert!(!dir.join(names[0]).exists());
        assert!(dir.join(names[1]).exists() && dir.join(names[2]).exists());
    }

    /// With the upload configured, a minute file the last complete upload did not copy stays,
    /// whatever the limits say (a bucket outage longer than `max_age` must not lose it); one
    /// set aside as damaged is never uploaded, so never waited for.
    #[test]
    fn files_not_uploaded_yet_survive_every_limit() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("host/2024/03/01");
        fs::create_dir_all(&dir).unwrap();
        let copied_before = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = [
            (
                "20240301-0000.parquet",
                copied_before - Duration::from_secs(60),
            ),
            (
                "20240301-0001.parquet",
                copied_before + Duration::from_secs(60),
            ),
            (
                "20240301-0002.parquet.damaged-1",
                copied_before + Duration::from_secs(60),
            ),
        ];
        for (n, modified) in names {
            let f = fs::File::create(dir.join(n)).unwrap();
            f.set_modified(modified).unwrap();
        }
        let everything = Retention {
            max_age: Some(Duration::from_secs(1)),
            max_use: Some(1),
            keep_free: Some(u64::MAX),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let warned = data.path().join("warned");
        let upload = Upload::CopiedBefore(Some(copied_before));
        let d = apply(data.path(), &everything, now, now, &warned, upload).unwrap();
        assert_eq!((d.files, d.waiting_for_upload), (2, 1));
        assert!(dir.join(names[1].0).exists(), "not uploaded yet: kept");
        assert!(!dir.join(names[0].0).exists() && !dir.join(names[2].0).exists());
        // Configured, but no complete copy yet: nothing is known to be in the bucket.
        let d = apply(
            data.path(),
            &everything,
            now,
            now,
            &warned,
            Upload::CopiedBefore(None),
        );
        assert_eq!(d.unwrap().waiting_for_upload, 1);
        assert!(dir.join(names[1].0).exists());
    }

    /// A day (or hour) file goes whole, and only once all of its span is past the limit and
    /// before keep_from; a late minute file beside it goes by its own minute.
    #[test]
    fn day_and_hour_files_go_once_their_whole_span_is_past_the_limit() {
        let data = tempfile::tempdir().unwrap();
        let names = [
            "host/2024/03/01/20240301.parquet",
            "host/2024/03/01/20240301-0507.parquet",
            "host/2024/03/02/20240302-05.parquet",
            "host/2024/03/02/20240302-06.parquet",
            "host/2024/03/03/20240303.parquet",
        ];
        for n in names {
            let path = data.path().join(n);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"PAR1").unwrap();
        }
        let at = |name: &str| span_of(name).unwrap().start_usec;
        // max_age reaches 2024-03-02 06:30: the hour 06 and the day of 03-03 are not all past.
        let now = at("20240302-06.parquet") + 30 * MINUTE_USEC + 86_400_000_000;
        let by_age = Retention {
            max_age: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        };
        let warned = data.path().join("warned");
        let d = apply(data.path(), &by_age, i64::MAX, now, &warned, Upload::Off).unwrap();
        assert_eq!((d.files, d.by_age), (3, 3));
        let left: Vec<bool> = names.iter().map(|n| data.path().join(n).exists()).collect();
        assert_eq!(left, [false, false, false, true, true]);
        assert!(!warned.exists(), "nothing foreign");

        // keep_from inside the day of 03-03 keeps it whatever the limits.
        let everything = Retention {
            max_age: Some(Duration::from_secs(1)),
            max_use: Some(1),
            keep_free: None,
        };
        let keep_from = at("20240303-1200.parquet");
        let d = apply(
            data.path(),
            &everything,
            keep_from,
            now,
            &warned,
            Upload::Off,
        )
        .unwrap();
        assert_eq!(d.files, 1);
        assert!(data.path().join(names[4]).exists());
    }

    #[test]
    fn spans_and_sizes_read_as_journald_reads_them() {
        assert_eq!(parse_span("400d"), Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(parse_span("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_span("2w"), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_span("1year"), Some(Duration::from_secs(31_557_600)));
        for bad in ["", "400", "d", "0d", "4x", "-1d"] {
            assert_eq!(parse_span(bad), None, "{bad}");
        }
        assert_eq!(parse_size("50G"), Some(50 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "G", "0", "5X", "-5G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
