//! Which archive files a time range and a set of hosts take in: whole years, months, days, and
//! the minute, hour and day files outside them are skipped by their names, before any file is
//! opened (`journal-parquet query`'s `--since`, `--until` and `--host`, the console, the summary's
//! rebuild). Within the files read, DuckDB skips the row groups whose `timestamp` statistics fall
//! outside the range (a day file's row groups are in time order).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::layout::{day_usec, numbered, span_of, DAY_USEC};

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
    pub fn row_filter(&self) -> Option<String> {
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

/// The archive files under `data_dir` in `scope`, oldest first within each host. Whole years,
/// months and days outside the range are skipped by their directory names, unopened.
pub fn archive_files(data_dir: &Path, scope: &Scope) -> Result<Vec<PathBuf>> {
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
                    if !scope.overlaps(a, a + DAY_USEC) {
                        continue;
                    }
                    // Minute files, and the hour and day files compaction writes: by their
                    // names, of this day only.
                    let mut day: Vec<(i64, PathBuf)> = Vec::new();
                    for e in std::fs::read_dir(&ddir)
                        .with_context(|| format!("failed to list {}", ddir.display()))?
                    {
                        let e = e.with_context(|| format!("failed to list {}", ddir.display()))?;
                        let Some(span) = e.file_name().to_str().and_then(span_of) else {
                            continue;
                        };
                        let of_this_day = (a..a + DAY_USEC).contains(&span.start_usec);
                        if of_this_day && scope.overlaps(span.start_usec, span.end_usec()) {
                            day.push((span.start_usec, e.path()));
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
