//! What a run did, and jp-flush's metrics file: the counters beside what they count.

use std::time::Duration;

use anyhow::Result;

use crate::buffer::handoff;
use crate::config::Settings;
use crate::sys::duckdb::chain_text;

/// What one flush did.
#[derive(Debug, Default)]
pub struct Report {
    pub files_written: usize,
    pub files_merged: usize,
    pub rows_exported: u64,
    pub segments_removed: usize,
    /// Bytes of the minute files written.
    pub bytes_written: u64,
    /// Rows left in the sealed segments after the export (minutes not complete yet).
    pub rows_left: u64,
    /// What compaction did after the export.
    pub compacted: super::Compacted,
    /// What retention deleted after the export.
    pub retention: crate::archive::retention::Deleted,
    /// The oldest minute (µs) that still has rows in the sealed segments after the export, or
    /// that was held back as not complete: retention keeps its file and every later one.
    pub keep_from: Option<i64>,
}

impl Report {
    pub(super) fn add(&mut self, other: Report) {
        self.files_written += other.files_written;
        self.files_merged += other.files_merged;
        self.rows_exported += other.rows_exported;
        self.segments_removed += other.segments_removed;
        self.bytes_written += other.bytes_written;
        self.rows_left += other.rows_left;
        self.keep_from = match (self.keep_from, other.keep_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What kind of failure a run met, for `journal_parquet_flush_errors_total{kind}`.
fn error_kind(e: &anyhow::Error) -> &'static str {
    use crate::sys::duckdb::{failure, Kind};
    if e.downcast_ref::<handoff::Unavailable>().is_some() {
        return "buffer_unavailable";
    }
    let io = e
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some());
    match failure(e).map(|f| f.kind) {
        Some(Kind::OutOfMemory) => "memory",
        Some(Kind::Io | Kind::Permission) => "io",
        _ if io => "io",
        _ => "other",
    }
}

/// Writes jp-flush's metrics file: its counters carried on from the previous file plus this
/// run's. Never fails the run: a file that cannot be written is logged.
pub(super) fn write_metrics(settings: &Settings, result: &Result<Report>, took: Duration) {
    use crate::sys::metrics::{read_samples, Kind, Metrics, FLUSH_FILE};
    let before = read_samples(&settings.metrics_dir.join(FLUSH_FILE));
    let was = |key: &str| {
        before
            .get(&format!("journal_parquet_{key}"))
            .copied()
            .unwrap_or(0.0)
    };
    let empty = Report::default();
    let r = result.as_ref().unwrap_or(&empty);
    let mut m = Metrics::default();
    for (name, help, add) in counters(r, took) {
        m.one(Kind::Counter, name, help, was(name) + add);
    }
    let kinds = ["buffer_unavailable", "memory", "io", "other"];
    let failed = result.as_ref().err().map(error_kind);
    let errors: Vec<(String, f64)> = kinds
        .iter()
        .map(|k| {
            let key = format!("flush_errors_total{{kind=\"{k}\"}}");
            (
                format!("kind=\"{k}\""),
                was(&key) + f64::from(u8::from(failed == Some(*k))),
            )
        })
        .collect();
    m.add(
        Kind::Counter,
        "flush_errors_total",
        "jp-flush runs that failed, by kind of error.",
        &errors,
    );
    let last_ok = match result {
        Ok(_) => chrono::Utc::now().timestamp_micros() as f64 / 1e6,
        Err(_) => was("last_flush_success_timestamp_seconds"),
    };
    m.one(
        Kind::Gauge,
        "last_flush_success_timestamp_seconds",
        "When a jp-flush run last succeeded (Unix time).",
        last_ok,
    );
    m.one(
        Kind::Gauge,
        "last_flush_duration_seconds",
        "How long the last jp-flush run took.",
        took.as_secs_f64(),
    );
    if let Ok(r) = result {
        m.one(
            Kind::Gauge,
            "buffer_sealed_rows",
            "Rows left in the buffer's sealed segments after the last run (minutes not complete yet).",
            r.rows_left as f64,
        );
        m.one(
            Kind::Gauge,
            "compaction_pending_days",
            "Host days due for compaction that the last run left for the next (its time ran out).",
            r.compacted.pending as f64,
        );
    }
    if let Err(e) = m.write(&settings.metrics_dir, FLUSH_FILE) {
        log::warn!("{}: the metrics are not up to date", chain_text(&e));
    }
}

/// jp-flush's counters, each with its help and what this run adds to it.
fn counters(r: &Report, took: Duration) -> [(&'static str, &'static str, f64); 10] {
    [
        ("flush_runs_total", "jp-flush runs.", 1.0),
        (
            "entries_exported_total",
            "Entries written to Parquet.",
            r.rows_exported as f64,
        ),
        (
            "parquet_files_written_total",
            "Minute files written (new or merged).",
            r.files_written as f64,
        ),
        (
            "parquet_files_merged_total",
            "Minute files written by merging into an existing one.",
            r.files_merged as f64,
        ),
        (
            "parquet_bytes_written_total",
            "Bytes of the minute files written.",
            r.bytes_written as f64,
        ),
        (
            "flush_duration_seconds_total",
            "Time jp-flush runs took.",
            took.as_secs_f64(),
        ),
        (
            "compacted_days_total",
            "Host days compacted into a day file (or hour files).",
            r.compacted.days as f64,
        ),
        (
            "compacted_files_replaced_total",
            "Minute (and earlier day or hour) files that compaction replaced.",
            r.compacted.files_replaced as f64,
        ),
        (
            "retention_deleted_files_total",
            "Minute files deleted by retention.",
            r.retention.files as f64,
        ),
        (
            "retention_deleted_bytes_total",
            "Bytes deleted by retention.",
            r.retention.bytes as f64,
        ),
    ]
}
