//! The TOML configuration file: its keys, and reading it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use super::BadConfig;

/// The config file read when `--config` is not given; a missing default file means defaults.
pub const DEFAULT_CONFIG: &str = "/etc/journal-parquet/config.toml";

/// The keys of the config file. Every key is optional; packaging/config.toml (installed as
/// /etc/journal-parquet/config.toml) documents each with its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) journal_directory: Option<PathBuf>,
    pub(super) namespace: Option<String>,
    pub(super) commit_interval_ms: Option<u64>,
    pub(super) max_batch_entries: Option<usize>,
    pub(super) max_batch_mib: Option<usize>,
    pub(super) duckdb_memory_limit: Option<String>,
    pub(super) flush_memory_limit: Option<String>,
    pub(super) flush_threads: Option<u32>,
    pub(super) handoff_timeout_sec: Option<u64>,
    pub(super) journal_reopen_entries: Option<u64>,
    pub(super) log_level: Option<String>,
    pub(super) compression: Option<String>,
    pub(super) flush_every_sec: Option<u64>,
    pub(super) max_age: Option<String>,
    pub(super) max_use: Option<String>,
    pub(super) keep_free: Option<String>,
    pub(super) include_units: Option<Vec<String>>,
    pub(super) exclude_units: Option<Vec<String>>,
    pub(super) include_identifiers: Option<Vec<String>>,
    pub(super) exclude_identifiers: Option<Vec<String>>,
    pub(super) exclude_fields: Option<Vec<String>>,
    pub(super) max_priority: Option<u8>,
    pub(super) metrics_directory: Option<PathBuf>,
}

/// Reads the config file: the given one (which must exist), else the default one if present.
pub(super) fn load_file(given: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok((FileConfig::default(), None)),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BadConfig(format!("failed to read {}: {e}", path.display())))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        BadConfig(format!(
            "{}: {}",
            path.display(),
            e.to_string().trim_end().replace('\n', " ")
        ))
    })?;
    Ok((file, Some(path)))
}
