//! Which minute files a query reads: whole years, months, days and minutes outside `--since`,
//! `--until` and `--host` are skipped by their names, before any file is opened.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::archive::layout::MINUTE_USEC;

/// Which minute files a query reads: the hosts (directory names; empty for all) and the minutes
/// that overlap `[since, until)` (µs).
#[derive(Debug, Default, Clone)]
pub struct Scope {
    pub hosts: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Scope {
    /// The rows' own filter, for the minutes at the edges of the range.
    pub(super) fn row_filter(&self) -> Option<String> {
        let mut terms = Vec::new();
        if let Some(s) = self.since {
            terms.push(format!("timestamp >= make_timestamp({s})"));
        }
        if let Some(u) = self.until {
            terms.push(format!("timestamp < make_timestamp({u})"));
        }
        (!terms.is_empty()).then(|| terms.join(" AND "))
    }

    /// Whether `[first_usec, end_usec)` (a year, month, day or minute) overlaps the range.
    fn overlaps(&self, first_usec: i64, end_usec: i64) -> bool {
        self.since.is_none_or(|s| end_usec > s) && self.until.is_none_or(|u| first_usec < u)
    }
}

/// The µs of 00:00 UTC on y-m-d, None for no such day.
pub(super) fn day_usec(y: i32, m: u32, d: u32) -> Option<i64> {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// The entries of `dir` whose names parse as a number of `width` digits, sorted.
pub(super) fn numbered(dir: &Path, width: usize) -> Result<Vec<(u32, PathBuf)>> {
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

/// The minute files under `data_dir` in `scope`, oldest first within each host. Whole years,
/// months and days outside the range are skipped by their directory names, unopened.
pub fn minute_files(data_dir: &Path, scope: &Scope) -> Result<Vec<PathBuf>> {
    let mut hosts: Vec<PathBuf> = Vec::new();
    let listing = std::fs::read_dir(data_dir)
        .with_context(|| format!("failed to list the archive {}", data_dir.display()))?;
    for e in listing {
        let e = e.with_context(|| format!("failed to list {}", data_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = scope.hosts.is_empty() || scope.hosts.contains(&name);
        if wanted && !name.starts_with('.') && e.path().is_dir() {
            hosts.push(e.path());
        }
    }
    hosts.sort();
    let mut files = Vec::new();
    for host in hosts {
        for (y, ydir) in numbered(&host, 4)? {
            let y = y as i32;
            let (Some(a), Some(b)) = (day_usec(y, 1, 1), day_usec(y + 1, 1, 1)) else {
                continue;
            };
            if !scope.overlaps(a, b) {
                continue;
            }
            for (m, mdir) in numbered(&ydir, 2)? {
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let (Some(a), Some(b)) = (day_usec(y, m, 1), day_usec(next.0, next.1, 1)) else {
                    continue;
                };
                if !scope.overlaps(a, b) {
                    continue;
                }
                for (d, ddir) in numbered(&mdir, 2)? {
                    let Some(a) = day_usec(y, m, d) else { continue };
                    if !scope.overlaps(a, a + 1440 * MINUTE_USEC) {
                        continue;
                    }
                    let prefix = format!("{y:04}{m:02}{d:02}-");
                    let mut day: Vec<(i64, PathBuf)> = Vec::new();
                    for e in std::fs::read_dir(&ddir)
                        .with_context(|| format!("failed to list {}", ddir.display()))?
                    {
                        let e = e.with_context(|| format!("failed to list {}", ddir.display()))?;
                        let name = e.file_name();
                        let Some(hhmm) = name
                            .to_str()
                            .and_then(|n| n.strip_prefix(&prefix))
                            .and_then(|n| n.strip_suffix(".parquet"))
                            .filter(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
                        else {
                            continue;
                        };
                        let (h, min): (i64, i64) = (hhmm[..2].parse()?, hhmm[2..].parse()?);
                        let start = a + (h * 60 + min) * MINUTE_USEC;
                        if scope.overlaps(start, start + MINUTE_USEC) {
                            day.push((start, e.path()));
                        }
                    }
                    day.sort();
                    files.extend(day.into_iter().map(|(_, p)| p));
                }
            }
        }
    }
    Ok(files)
}
