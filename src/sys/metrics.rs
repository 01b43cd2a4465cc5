//! Metrics: Prometheus text files (`*.prom`) for node_exporter's textfile collector, one per
//! program so that no file has two writers: `journal_parquet_collector.prom`, written every
//! `WRITE_EVERY` and at stop, and `journal_parquet_flush.prom`, written when jp-flush exits.
//! Each is written whole under a temporary name (not `*.prom`) and renamed into place.
//!
//! jp-flush lives for one run, but its counters must only grow: it reads the counters of its
//! previous file and adds this run's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

/// How often the collector writes its file.
pub const WRITE_EVERY: Duration = Duration::from_secs(15);

pub const COLLECTOR_FILE: &str = "journal_parquet_collector.prom";
pub const FLUSH_FILE: &str = "journal_parquet_flush.prom";

/// `MESSAGE_ID` of journald's "Suppressed N messages from UNIT" (SD_MESSAGE_JOURNAL_DROPPED).
pub const JOURNALD_DROPPED: &[u8] = b"a596d6fe7bfa4994828e72309e95d61e";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One file's metrics, in the order they are added.
#[derive(Default)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// Adds metric `name` (without the `journal_parquet_` prefix) with its samples: (labels as
    /// `key="value",…` or empty, value).
    pub fn add(&mut self, kind: Kind, name: &str, help: &str, samples: &[(String, f64)]) {
        let name = format!("journal_parquet_{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            match labels.is_empty() {
                true => {
                    let _ = writeln!(self.text, "{name} {value}");
                }
                false => {
                    let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
                }
            }
        }
    }

    /// A metric with one unlabelled sample.
    pub fn one(&mut self, kind: Kind, name: &str, help: &str, value: f64) {
        self.add(kind, name, help, &[(String::new(), value)]);
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Writes the file `name` in `dir` atomically (0644: node_exporter runs as its own user).
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        super::files::make_private_dir(dir)?;
        super::files::write_atomically(&dir.join(name), self.text.as_bytes(), 0o644)
    }
}

/// The samples of a file written earlier, by `name{labels}` (the counters jp-flush carries on).
pub fn read_samples(path: &Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A label value, escaped as the text format wants it.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_back_what_was_written() {
        let mut m = Metrics::default();
        m.one(Kind::Counter, "x_total", "X.", 3.0);
        m.add(
            Kind::Counter,
            "y_total",
            "Y.",
            &[(format!("unit=\"{}\"", label("a\"b")), 2.0)],
        );
        let dir = tempfile::tempdir().unwrap();
        m.write(dir.path(), "t.prom").unwrap();
        let s = read_samples(&dir.path().join("t.prom"));
        assert_eq!(s["journal_parquet_x_total"], 3.0);
        assert_eq!(s["journal_parquet_y_total{unit=\"a\\\"b\"}"], 2.0);
    }
}
