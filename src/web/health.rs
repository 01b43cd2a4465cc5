//! The health page's figures: the collector's and jp-flush's metrics files as they are, the
//! archive's extent per host (its files' names, walked at most once a minute), the retention
//! limits and how close the archive is to them, the upload, and what needs attention.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::archive::layout::{numbered, span_of};
use crate::config::Settings;
use crate::sys::metrics::{read_samples, COLLECTOR_FILE, FLUSH_FILE};

/// The collector writes its file every 15 s: older than this, it is not running.
const COLLECTOR_STALE: Duration = Duration::from_secs(45);
/// The timer runs jp-flush every minute: no success for this long needs attention.
const FLUSH_STALE: Duration = Duration::from_secs(300);
/// A lag beyond this needs attention.
const LAG_ATTENTION_SECONDS: f64 = 300.0;
/// How long a walk of the archive is reused.
const WALK_EVERY: Duration = Duration::from_secs(60);

/// One host's files.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct HostExtent {
    pub host: String,
    pub files: u64,
    pub bytes: u64,
    /// µs of the start of its oldest file, and of the end of its newest.
    pub oldest_usec: i64,
    pub newest_usec: i64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct ArchiveExtent {
    pub files: u64,
    pub bytes: u64,
    /// Files set aside as damaged (`….damaged-UNIXTIME`).
    pub set_aside: u64,
    pub hosts: Vec<HostExtent>,
    pub walk_ms: u64,
}

#[derive(Default)]
pub(crate) struct ArchiveCache(Mutex<Option<(Instant, ArchiveExtent)>>);

impl ArchiveCache {
    pub(crate) fn get(&self, data_dir: &Path) -> ArchiveExtent {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, extent)) = cached.as_ref() {
            if at.elapsed() < WALK_EVERY {
                return extent.clone();
            }
        }
        let extent = walk(data_dir);
        *cached = Some((Instant::now(), extent.clone()));
        extent
    }
}

/// The archive's files by their names: `HOST/YYYY/MM/DD/NAME`.
fn walk(data_dir: &Path) -> ArchiveExtent {
    let started = Instant::now();
    let mut out = ArchiveExtent::default();
    let Ok(hosts) = std::fs::read_dir(data_dir) else {
        return out;
    };
    let mut hosts: Vec<_> = hosts
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_dir())
        .collect();
    hosts.sort_by_key(|e| e.file_name());
    for host in hosts {
        let mut h = HostExtent {
            host: host.file_name().to_string_lossy().into_owned(),
            oldest_usec: i64::MAX,
            newest_usec: i64::MIN,
            ..HostExtent::default()
        };
        let days = numbered(&host.path(), 4)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, y)| numbered(&y, 2).unwrap_or_default())
            .flat_map(|(_, m)| numbered(&m, 2).unwrap_or_default());
        for (_, day) in days {
            for e in std::fs::read_dir(&day).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".parquet.damaged-") {
                    out.set_aside += 1;
                    continue;
                }
                let Some(span) = span_of(&name) else { continue };
                let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                h.files += 1;
                h.bytes += bytes;
                h.oldest_usec = h.oldest_usec.min(span.start_usec);
                h.newest_usec = h.newest_usec.max(span.end_usec());
            }
        }
        if h.files > 0 {
            out.files += h.files;
            out.bytes += h.bytes;
            out.hosts.push(h);
        }
    }
    out.walk_ms = started.elapsed().as_millis() as u64;
    out
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The samples of a metrics file without the `journal_parquet_` prefix, and its age in seconds
/// (None: no file).
fn metrics(dir: &Path, file: &str) -> (BTreeMap<String, f64>, Option<f64>) {
    let path = dir.join(file);
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64()
        });
    let samples = read_samples(&path)
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("journal_parquet_").to_owned(), v))
        .collect();
    (samples, age)
}

/// Samples of one labelled metric, by label value: `name{label="value"}`.
fn labelled(samples: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(name)?.strip_prefix('{')?.strip_suffix('}')?;
            let (_, value) = rest.split_once('=')?;
            Some((value.trim_matches('"').to_owned(), *v))
        })
        .collect()
}

/// Everything the health page shows, and what needs attention.
pub(crate) fn health(settings: &Settings, archive: &ArchiveCache) -> Value {
    let now = unix_now();
    let (c, c_age) = metrics(&settings.metrics_dir, COLLECTOR_FILE);
    let (f, f_age) = metrics(&settings.metrics_dir, FLUSH_FILE);
    let extent = archive.get(&settings.data_dir);
    let mut problems: Vec<Value> = Vec::new();
    let mut problem = |what: String, look_for: &str| {
        problems.push(json!({"what": what, "look_for": look_for}));
    };

    let running = c_age.is_some_and(|a| a < COLLECTOR_STALE.as_secs_f64());
    match c_age {
        None => problem(
            format!(
                "no collector metrics in {}: the collector has not run, or metrics_directory differs",
                settings.metrics_dir.display()
            ),
            "systemctl status journal-parquet.service",
        ),
        Some(a) if !running => problem(
            format!("the collector's metrics are {a:.0} s old: it is not running"),
            "journalctl -u journal-parquet.service -p warning",
        ),
        _ => {}
    }
    let lag = c.get("lag_seconds").copied().unwrap_or(0.0);
    if running && lag > LAG_ATTENTION_SECONDS {
        problem(
            format!("the collector is {lag:.0} s behind the journal"),
            "journalctl -u journal-parquet.service -g 'behind|commit'",
        );
    }
    let gaps = c.get("gaps_total").copied().unwrap_or(0.0);
    if gaps > 0.0 {
        problem(
            format!(
                "{gaps:.0} gap(s) in the journal: entries deleted before they were read ({:.0} entries known lost)",
                c.get("gap_entries_total").copied().unwrap_or(0.0)
            ),
            "journalctl -u journal-parquet.service -g 'gap'",
        );
    }
    let last_ok = f.get("last_flush_success_timestamp_seconds").copied();
    let errors = labelled(&f, "flush_errors_total");
    match last_ok {
        None => problem(
            "jp-flush has not succeeded yet (no metrics file)".into(),
            "systemctl list-timers jp-flush.timer",
        ),
        Some(t) if now - t > FLUSH_STALE.as_secs_f64() => problem(
            format!("jp-flush last succeeded {:.0} s ago", now - t),
            "journalctl -u jp-flush.service -p warning",
        ),
        _ => {}
    }
    if settings
        .state_dir
        .join(crate::archive::summary::STALE_FILE)
        .exists()
    {
        problem(
            "the summary behind the activity chart misses some minutes".into(),
            "sudo jp-flush --rebuild-summary",
        );
    }
    if extent.set_aside > 0 {
        problem(
            format!("{} Parquet file(s) set aside as damaged", extent.set_aside),
            "journalctl -u jp-flush.service -g 'damaged'",
        );
    }

    let r = &settings.retention;
    let oldest = extent.hosts.iter().map(|h| h.oldest_usec).min();
    let upload_enabled = settings
        .state_dir
        .join(crate::flush::UPLOAD_ENABLED)
        .exists();
    let upload_last =
        std::fs::read_to_string(settings.state_dir.join(crate::flush::UPLOAD_LAST_SUCCESS))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
    json!({
        "now": now,
        "collector": {
            "running": running,
            "metrics_age_seconds": c_age,
            "entries_read_total": c.get("entries_read_total"),
            "entries_committed_total": c.get("entries_committed_total"),
            "entries_filtered_total": c.get("entries_filtered_total"),
            "lag_seconds": c.get("lag_seconds"),
            "gaps_total": c.get("gaps_total"),
            "gap_entries_total": c.get("gap_entries_total"),
            "corrupt_entries_total": c.get("corrupt_entries_total"),
            "buffer_bytes": c.get("buffer_bytes"),
            "buffer_open_segment_rows": c.get("buffer_open_segment_rows"),
            "journald_suppressed": labelled(&c, "journald_suppressed_total"),
        },
        "flush": {
            "metrics_age_seconds": f_age,
            "last_success_unix": last_ok,
            "last_duration_seconds": f.get("last_flush_duration_seconds"),
            "runs_total": f.get("flush_runs_total"),
            "files_written_total": f.get("parquet_files_written_total"),
            "entries_exported_total": f.get("entries_exported_total"),
            "buffer_sealed_rows": f.get("buffer_sealed_rows"),
            "errors_total": errors,
            "compaction_pending_days": f.get("compaction_pending_days"),
        },
        "archive": extent,
        "retention": {
            "max_age_seconds": r.max_age.map(|d| d.as_secs()),
            "max_use_bytes": r.max_use,
            "keep_free_bytes": r.keep_free,
            "use_fraction": r.max_use.map(|m| extent.bytes as f64 / m as f64),
            "oldest_age_seconds": oldest.map(|o| now - o as f64 / 1e6),
            "oldest_age_days": oldest.map(|o| ((now - o as f64 / 1e6) / 86_400.0 * 10.0).round() / 10.0),
            "max_age_days": r.max_age.map(|d| (d.as_secs_f64() / 86_400.0 * 10.0).round() / 10.0),
        },
        "upload": {"enabled": upload_enabled, "last_success_unix": upload_last},
        "entries_per_second_last_hour": crate::archive::summary::last_hour(settings)
            .map(|n| (n as f64 / 3600.0 * 100.0).round() / 100.0),
        "summary_stale": settings.state_dir.join(crate::archive::summary::STALE_FILE).exists(),
        "problems": problems,
    })
}
