//! The collector's metrics file: each metric's name and help beside the counter it reads.

use std::time::Instant;

use super::{status, Collector};
use crate::sys::metrics::{label, Kind, Metrics, COLLECTOR_FILE};

impl Collector {
    /// Writes the collector's metrics file (every `metrics::WRITE_EVERY`, and at stop). A file
    /// that cannot be written is logged, never a reason to stop reading.
    pub(super) fn write_metrics(&mut self) {
        self.metrics_written = Instant::now();
        let (r, w) = (&self.reader, &self.writer);
        let lag = match (self.caught_up_at, r.newest_usec) {
            (Some(_), _) | (None, None) => 0.0,
            (None, Some(n)) => ((status::now_usec() - n as i64).max(0) as f64) / 1e6,
        };
        let buffer_bytes: u64 = std::fs::read_dir(w.buffer_dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let (counter, gauge) = (Kind::Counter, Kind::Gauge);
        let samples = [
            (counter, "entries_read_total", "Journal entries read, kept or not.", r.read_total as f64),
            (counter, "entries_committed_total", "Entries committed to the buffer.", w.committed_total as f64),
            (counter, "entries_filtered_total", "Entries the filters left out.", r.filtered as f64),
            (counter, "corrupt_entries_total", "Entries with a corrupt data object (the fields before it are kept).", r.corrupt_entries as f64),
            (counter, "gaps_total", "Gaps found in the journal (entries deleted before they were read), since the buffer began.", w.state().gaps_total as f64),
            (counter, "gap_entries_total", "Entries lost to the gaps found since the collector started, where sequence numbers tell.", r.journal.gap_entries() as f64),
            (counter, "commits_total", "Commits to the buffer.", w.commits as f64),
            (counter, "commit_duration_seconds_total", "Time spent committing to the buffer.", w.commit_seconds),
            (gauge, "lag_seconds", "How far behind the newest entry read is (0 when caught up).", lag),
            (gauge, "buffer_open_segment_rows", "Rows in the buffer's open segment.", w.segment_rows as f64),
            (gauge, "buffer_bytes", "Bytes of the buffer's files on disk.", buffer_bytes as f64),
        ];
        let mut m = Metrics::default();
        for (kind, name, help, value) in samples {
            m.one(kind, name, help, value);
        }
        let suppressed: Vec<(String, f64)> = r
            .suppressed
            .iter()
            .map(|(unit, n)| (format!("unit=\"{}\"", label(unit)), *n as f64))
            .collect();
        m.add(
            counter,
            "journald_suppressed_total",
            "Messages journald's rate limit threw away, by unit (its \"Suppressed N messages\" lines).",
            &suppressed,
        );
        if let Err(e) = m.write(&self.settings.metrics_dir, COLLECTOR_FILE) {
            log::warn!(
                "{}: the metrics are not up to date",
                crate::sys::duckdb::chain_text(&e)
            );
        }
    }
}
