//! Where a minute of one host goes: `DATA/HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet`, and how a
//! `_HOSTNAME` becomes one safe path segment.
//!
//! A plain host name (letters, digits, '-' and '.', dot-separated labels that start and end with a
//! letter or digit, at most 64 bytes) is used as it is. Anything else — empty, `..`, `a/b`,
//! control characters, non-UTF-8, over 64 bytes — is escaped: `@` followed by the bytes, with every
//! byte outside `[A-Za-z0-9.-]` written as `%XX`. A plain name never starts with `@`, so an escaped
//! name never equals a plain one, and the escaping is reversible (`unescape_host`).
//!
//! Why `@`: Hadoop and Spark skip paths that start with `_` or `.` as hidden (measured: Spark 4.3
//! with `recursiveFileLookup` leaves out a `_%FF` directory and reads an `@%FF` one), and `~`,
//! `=`, `+` mean something to a shell, to Spark's partition discovery or to S3 URLs. Schema-2
//! archives escaped with `_`; `unescape_host` still reads those names. An escaped name
//! longer than 160 bytes keeps its first 120 bytes and ends with `~` and 32 hex digits of the
//! SHA-256 of the whole raw value: still one segment, still distinct, and the full value is in
//! every row's `hostname` and `fields`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use sha2::{Digest, Sha256};

const MAX_PLAIN: usize = 64;
const MAX_ESCAPED: usize = 160;
const KEEP_WHEN_LONG: usize = 120;
/// What starts an escaped name; `_` in archives of file schema 2.
const ESCAPED_PREFIX: char = '@';
const LEGACY_ESCAPED_PREFIX: char = '_';

/// True for a name used as its own directory.
pub fn is_plain_host(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_PLAIN {
        return false;
    }
    name.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && label[0] != b'-'
            && label[label.len() - 1] != b'-'
    })
}

/// The directory name for a raw `_HOSTNAME` value.
pub fn host_dir(raw: &[u8]) -> String {
    if is_plain_host(raw) {
        // Plain names are ASCII.
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = String::from(ESCAPED_PREFIX);
    for &b in raw {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ESCAPED {
        let mut cut = KEEP_WHEN_LONG;
        // Do not cut a %XX in two.
        while out.as_bytes()[cut - 1] == b'%' || out.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        out.truncate(cut);
        let digest = Sha256::digest(raw);
        out.push('~');
        for b in &digest[..16] {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// The raw name behind a directory made by `host_dir`; `None` for a shortened (hashed) one or a
/// name `host_dir` cannot have made.
pub fn unescape_host(dir: &str) -> Option<Vec<u8>> {
    let Some(rest) = dir
        .strip_prefix(ESCAPED_PREFIX)
        .or_else(|| dir.strip_prefix(LEGACY_ESCAPED_PREFIX))
    else {
        return is_plain_host(dir.as_bytes()).then(|| dir.as_bytes().to_vec());
    };
    if rest.contains('~') {
        return None;
    }
    let mut out = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// jp-flush's working directories at the top of DATA, hidden (Spark, Hadoop and pyarrow skip
/// names starting with `.`) and off the archive's depth (`HOST/YYYY/MM/DD/FILE`), so that no
/// reader of `DATA/*/*/*/*/*.parquet` ever sees what they hold: the one-pass minute writes
/// (`flush::fresh`) and the days being compacted (`flush::compact`).
pub const FRESH_WORK_DIR: &str = ".jp-flush-parts";
pub const COMPACT_WORK_DIR: &str = ".jp-compact";

/// A minute in µs: files are per UTC minute, and so are the buffer's `minute_key`s.
pub const MINUTE_USEC: i64 = 60_000_000;

/// `DATA/HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet` for the minute starting at `minute_usec` (UTC).
pub fn minute_file(data_dir: &Path, host_dir: &str, minute_usec: i64) -> PathBuf {
    let t = chrono::DateTime::from_timestamp_micros(minute_usec).unwrap_or_default();
    data_dir
        .join(host_dir)
        .join(t.format("%Y").to_string())
        .join(t.format("%m").to_string())
        .join(t.format("%d").to_string())
        .join(t.format("%Y%m%d-%H%M.parquet").to_string())
}

/// A day in µs: compaction merges a host's day into one file (`YYYYMMDD.parquet`).
pub const DAY_USEC: i64 = 1440 * MINUTE_USEC;
pub const HOUR_USEC: i64 = 60 * MINUTE_USEC;

/// The time an archive file holds, read from its name alone: `YYYYMMDD-HHmm.parquet` a minute,
/// `YYYYMMDD-HH.parquet` an hour and `YYYYMMDD.parquet` a day (both written by compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start_usec: i64,
    pub len_usec: i64,
}

impl Span {
    pub fn end_usec(&self) -> i64 {
        self.start_usec + self.len_usec
    }
}

/// The span of an archive file named `name` (`….parquet`), None for any other name.
pub fn span_of(name: &str) -> Option<Span> {
    let stem = name.strip_suffix(".parquet")?;
    let b = stem.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = std::str::from_utf8(b.get(r)?).ok()?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let date = chrono::NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(4..6)?, digits(6..8)?)?;
    let (h, m, len_usec) = match (b.len(), b.get(8)) {
        (8, None) => (0, 0, DAY_USEC),
        (11, Some(b'-')) => (digits(9..11)?, 0, HOUR_USEC),
        (13, Some(b'-')) => (digits(9..11)?, digits(11..13)?, MINUTE_USEC),
        _ => return None,
    };
    let start = date.and_hms_opt(h, m, 0)?.and_utc().timestamp_micros();
    Some(Span {
        start_usec: start,
        len_usec,
    })
}

/// The name of the file compaction writes for `span` (a day or an hour).
pub fn compacted_name(span: Span) -> String {
    let t = chrono::DateTime::from_timestamp_micros(span.start_usec).unwrap_or_default();
    match span.len_usec {
        DAY_USEC => t.format("%Y%m%d.parquet").to_string(),
        HOUR_USEC => t.format("%Y%m%d-%H.parquet").to_string(),
        _ => t.format("%Y%m%d-%H%M.parquet").to_string(),
    }
}

/// The µs of 00:00 UTC on y-m-d, None for no such day.
pub fn day_usec(y: i32, m: u32, d: u32) -> Option<i64> {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// The entries of `dir` whose names parse as a number of `width` digits, sorted.
pub fn numbered(dir: &Path, width: usize) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == width && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = name.parse() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The machine's own host name, used for entries without `_HOSTNAME`.
pub fn local_host_dir() -> String {
    host_dir(gethostname::gethostname().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_as_they_are() {
        for name in ["web-01", "db01.example.org", "A", "x-y.z"] {
            assert_eq!(host_dir(name.as_bytes()), name);
        }
    }

    #[test]
    fn hostile_names_become_one_safe_distinct_segment() {
        let hostile: Vec<Vec<u8>> = vec![
            b"../../etc".to_vec(),
            b"a/b".to_vec(),
            b"".to_vec(),
            b"..".to_vec(),
            b".".to_vec(),
            b"a\nb".to_vec(),
            b"\xff\xfe".to_vec(),
            b"_web-01".to_vec(),
            b"%2F".to_vec(),
            vec![b'a'; 300],
            vec![b'/'; 300],
            [vec![b'a'; 300], vec![b'b']].concat(),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for raw in &hostile {
            let dir = host_dir(raw);
            assert!(dir.starts_with('@'), "{dir}");
            assert!(!dir.contains('/') && dir != "." && dir != "..", "{dir}");
            assert!(dir.len() <= MAX_ESCAPED + 33, "{} bytes", dir.len());
            assert!(dir.bytes().all(|b| b.is_ascii_graphic()), "{dir}");
            assert!(seen.insert(dir.clone()), "{dir} shared by two names");
            if let Some(back) = unescape_host(&dir) {
                assert_eq!(&back, raw);
            } else {
                assert!(raw.len() > 50, "only long names are shortened");
            }
        }
    }

    #[test]
    fn names_escaped_by_schema_2_still_unescape() {
        assert_eq!(unescape_host("_%FF").as_deref(), Some(&b"\xff"[..]));
        assert_eq!(unescape_host("@%FF").as_deref(), Some(&b"\xff"[..]));
    }

    #[test]
    fn names_give_their_span_and_back() {
        let day = span_of("20240301.parquet").unwrap();
        assert_eq!(
            (day.start_usec, day.len_usec),
            (1_709_251_200_000_000, DAY_USEC)
        );
        let hour = span_of("20240301-05.parquet").unwrap();
        assert_eq!(hour.start_usec, day.start_usec + 5 * HOUR_USEC);
        assert_eq!(hour.len_usec, HOUR_USEC);
        let minute = span_of("20240301-0005.parquet").unwrap();
        assert_eq!(minute.start_usec, day.start_usec + 5 * MINUTE_USEC);
        for s in [day, hour, minute] {
            assert_eq!(span_of(&compacted_name(s)), Some(s));
        }
        for other in [
            "20240301-0005.parquet.tmp",
            ".20240301.parquet.tmp",
            "20240301-0060.parquet",
            "20240301-24.parquet",
            "20240301-5.parquet",
            "2024030-10005.parquet",
            "20240301x0005.parquet",
            "20240231.parquet",
            "journal.duckdb",
        ] {
            assert_eq!(span_of(other), None, "{other}");
        }
    }

    #[test]
    fn minute_file_is_utc_by_minute() {
        // 2024-03-01 00:05:00 UTC
        let p = minute_file(Path::new("/d"), "web-01", 1_709_251_500_000_000);
        assert_eq!(
            p,
            PathBuf::from("/d/web-01/2024/03/01/20240301-0005.parquet")
        );
    }
}
