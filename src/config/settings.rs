//! Everything a program runs with, resolved from the flags, the file and the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use log::LevelFilter;

use crate::archive::retention::Retention;
use crate::buffer::Buffer;
use crate::journal::filter::Filter;
use crate::journal::Source;

use super::args::{CollectorArgs, CommonArgs};
use super::values::{Effective, Given};
use super::{keys, BadConfig, LOG_LEVEL_ENV};

/// Parquet compression, from the config key `compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
    None,
}

impl Compression {
    pub fn parse(text: &str) -> Option<Compression> {
        match text {
            "zstd" => Some(Compression::Zstd),
            "snappy" => Some(Compression::Snappy),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The name the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::None => "none",
        }
    }

    /// DuckDB's name for it in `COPY … (COMPRESSION …)`.
    pub fn sql(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::None => "uncompressed",
        }
    }
}

/// Everything a binary runs with, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    pub source: Source,
    pub commit_interval: Duration,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
    pub duckdb_memory_limit: String,
    /// DuckDB's memory limit while writing Parquet: buffering a row group of a busy
    /// minute needs more than appending.
    pub flush_memory_limit: String,
    pub flush_threads: u32,
    /// How long jp-flush waits for the sealed segments before giving up with exit 75.
    pub handoff_timeout: Duration,
    /// A stream's journal is reopened after this many entries (see `streams::REOPEN_EVERY`).
    pub journal_reopen_entries: u64,
    pub log_level: LevelFilter,
    pub compression: Compression,
    /// The collector flushes completed minutes itself this often (None: jp-flush does it).
    pub flush_every: Option<Duration>,
    /// Retention of the Parquet tree (`max_age`, `max_use`, `keep_free`), applied after each
    /// flush.
    pub retention: Retention,
    /// Which entries the collector keeps, and which fields it drops.
    pub filter: Filter,
    /// Where the Prometheus text files go (default: the state directory).
    pub metrics_dir: PathBuf,
    /// Complete days older than this are compacted into day files (None: off).
    pub compact_after: Option<Duration>,
    /// A day with more rows is compacted into hour files.
    pub compact_day_max_rows: u64,
    /// The web console's token file.
    pub web_token_file: PathBuf,
    /// The socket-activated console exits after this long idle (None: never).
    pub web_idle_exit: Option<Duration>,
    /// DuckDB's memory limit for a query (and each request of the web console).
    pub query_memory_limit: String,
    /// The most minute files one query opens (their metadata's memory is not bounded by DuckDB).
    pub query_max_files: usize,
    /// The config file these settings came from, if any.
    pub config_file: Option<PathBuf>,
    /// Every key's value in effect (`--check-config`, reloads).
    pub effective: Effective,
}

impl Settings {
    /// The buffer: a directory of segments.
    pub fn buffer(&self) -> Buffer {
        Buffer::new(self.state_dir.join("buffer"), &self.duckdb_memory_limit)
    }

    /// Where a buffer of an earlier version (one file) stands, to be adopted.
    pub fn legacy_buffer_path(&self) -> PathBuf {
        self.state_dir.join("buffer.duckdb")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("cursor")
    }

    pub fn handoff_socket(&self) -> PathBuf {
        self.state_dir.join("handoff.sock")
    }

    /// The keys whose new value in `new` only takes effect at a restart (`keys::Change`).
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        self.effective.needing_restart(&new.effective)
    }

    /// `new`, but with the keys that need a restart as they are in `self`. The fields kept here
    /// are those of the keys `keys::Change::Restart` marks (a unit test holds them in step).
    pub fn reloaded(&self, new: Settings) -> Settings {
        Settings {
            state_dir: self.state_dir.clone(),
            data_dir: self.data_dir.clone(),
            source: self.source.clone(),
            duckdb_memory_limit: self.duckdb_memory_limit.clone(),
            effective: self.effective.reloaded(&new.effective),
            ..new
        }
    }

    /// The settings in effect, as a config file that would produce them (`--check-config`).
    pub fn to_toml(&self, config_file: Option<&Path>) -> String {
        let head = match config_file {
            Some(file) => format!("# settings in effect, from {}\n", file.display()),
            None => "# settings in effect (no config file: defaults and flags)\n".to_owned(),
        };
        head + &self.effective.to_toml()
    }

    /// Resolves flags, the config file and the environment into settings (jp-flush's: no
    /// collector flags).
    pub fn resolve(common: &CommonArgs) -> Result<Settings> {
        let mut given = Given::load(common.config.as_deref())?;
        common_flags(&mut given, common)?;
        Settings::from_given(given)
    }

    /// The collector's settings: `resolve`, with its source, filter and `--flush-every` flags.
    pub fn for_collector(args: &CollectorArgs) -> Result<Settings> {
        let mut given = Given::load(args.common.config.as_deref())?;
        common_flags(&mut given, &args.common)?;
        // A source given by a flag replaces the file's (a template unit's --namespace beats a
        // journal_directory set for the main instance); two in one place are an error.
        if args.directory.is_some() || args.namespace.is_some() {
            given.forget(&keys::JOURNAL_DIRECTORY);
            given.forget(&keys::NAMESPACE);
        }
        if let Some(dir) = &args.directory {
            given.set_flag(
                &keys::JOURNAL_DIRECTORY,
                "directory",
                path_value(dir, "directory")?,
            )?;
        }
        if let Some(name) = &args.namespace {
            given.set_flag(&keys::NAMESPACE, "namespace", name.as_str().into())?;
        }
        if let Some(secs) = args.flush_every {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            given.set_flag(&keys::FLUSH_EVERY_SEC, "flush-every", secs.into())?;
        }
        // A list given by flags replaces the file's; an empty one leaves it.
        let lists = [
            ("include-unit", &args.include_units),
            ("exclude-unit", &args.exclude_units),
            ("include-identifier", &args.include_identifiers),
            ("exclude-identifier", &args.exclude_identifiers),
            ("exclude-field", &args.exclude_fields),
        ];
        for (key, (flag, list)) in keys::GLOB_KEY_DEFS.into_iter().zip(lists) {
            if !list.is_empty() {
                given.set_flag(key, flag, list.clone().into())?;
            }
        }
        if let Some(p) = args.max_priority {
            given.set_flag(&keys::MAX_PRIORITY, "max-priority", i64::from(p).into())?;
        }
        Settings::from_given(given)
    }

    /// The settings from the values given, each key's default standing in for a missing one.
    fn from_given(mut given: Given) -> Result<Settings> {
        // systemd may list several directories, colon-separated: the first is ours.
        let systemd_state = std::env::var_os("STATE_DIRECTORY")
            .map(|v| {
                v.to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .filter(|p| !p.is_empty());
        given.fall_back(&keys::STATE_DIR, "STATE_DIRECTORY", systemd_state)?;
        given.fall_back(
            &keys::LOG_LEVEL,
            LOG_LEVEL_ENV,
            std::env::var(LOG_LEVEL_ENV).ok(),
        )?;
        let (state_dir, data_dir) = directories(&mut given)?;
        let source = source(&mut given)?;
        let level_text = given.string(&keys::LOG_LEVEL).unwrap_or_default();
        let log_level: LevelFilter = level_text
            .parse()
            .map_err(|_| given.bad(&keys::LOG_LEVEL, "not a log level"))?;
        let compression_text = given.string(&keys::COMPRESSION).unwrap_or_default();
        let compression = Compression::parse(&compression_text)
            .ok_or_else(|| given.bad(&keys::COMPRESSION, "not a compression"))?;
        let metrics_dir = given
            .path(&keys::METRICS_DIRECTORY)
            .unwrap_or_else(|| state_dir.clone());
        given.record(
            &keys::METRICS_DIRECTORY,
            metrics_dir.to_string_lossy().as_ref().into(),
        );
        let (filter, retention) = filter_and_retention(&mut given)?;
        let web_token_file = given.path(&keys::WEB_TOKEN_FILE).unwrap_or_default();
        // A span passed its key's rule when given.
        let compact_after = given
            .string(&keys::COMPACT_AFTER)
            .and_then(|t| crate::archive::retention::parse_span(&t));
        // Every other key has a default, checked against its rule by a unit test of `keys`.
        let mut number = |key| given.unsigned(key).unwrap_or_default();
        let commit_interval = Duration::from_millis(number(&keys::COMMIT_INTERVAL_MS));
        let max_batch_entries = number(&keys::MAX_BATCH_ENTRIES) as usize;
        let max_batch_bytes = (number(&keys::MAX_BATCH_MIB) as usize) << 20;
        let flush_threads = number(&keys::FLUSH_THREADS) as u32;
        let handoff_timeout = Duration::from_secs(number(&keys::HANDOFF_TIMEOUT_SEC));
        let journal_reopen_entries = number(&keys::JOURNAL_REOPEN_ENTRIES);
        let query_max_files = number(&keys::QUERY_MAX_FILES) as usize;
        let compact_day_max_rows = number(&keys::COMPACT_DAY_MAX_ROWS);
        let web_idle_exit = match number(&keys::WEB_IDLE_EXIT_SEC) {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        let flush_every = match number(&keys::FLUSH_EVERY_SEC) {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        let duckdb_memory_limit = given.string(&keys::DUCKDB_MEMORY_LIMIT).unwrap_or_default();
        let flush_memory_limit = given.string(&keys::FLUSH_MEMORY_LIMIT).unwrap_or_default();
        let query_memory_limit = given.string(&keys::QUERY_MEMORY_LIMIT).unwrap_or_default();
        Ok(Settings {
            state_dir,
            data_dir,
            source,
            commit_interval,
            max_batch_entries,
            max_batch_bytes,
            duckdb_memory_limit,
            flush_memory_limit,
            flush_threads,
            handoff_timeout,
            journal_reopen_entries,
            log_level,
            compression,
            flush_every,
            retention,
            filter,
            metrics_dir,
            query_max_files,
            compact_after,
            compact_day_max_rows,
            query_memory_limit,
            web_token_file,
            web_idle_exit,
            config_file: given.file.clone(),
            effective: given.into_effective(),
        })
    }
}

/// The state and data directories: given, or worked out (see the module's comment).
fn directories(given: &mut Given) -> Result<(PathBuf, PathBuf)> {
    let given_state = given.path(&keys::STATE_DIR);
    let data_dir = given
        .path(&keys::DATA_DIR)
        .or(given_state.as_ref().map(|s| s.join("data")))
        .unwrap_or_else(|| PathBuf::from("data"));
    let state_dir = given_state.unwrap_or_else(|| PathBuf::from("state"));
    for (key, dir) in [(&keys::STATE_DIR, &state_dir), (&keys::DATA_DIR, &data_dir)] {
        check_dir_path(dir).map_err(|why| given.bad(key, &why))?;
        given.record(key, dir.to_string_lossy().as_ref().into());
    }
    Ok((state_dir, data_dir))
}

/// The journal source: a directory, a namespace, or the system's journals.
fn source(given: &mut Given) -> Result<Source> {
    let source = match (
        given.path(&keys::JOURNAL_DIRECTORY),
        given.string(&keys::NAMESPACE),
    ) {
        (Some(_), Some(_)) => {
            return Err(given
                .bad(
                    &keys::NAMESPACE,
                    "journal_directory and namespace name two sources: keep one",
                )
                .into())
        }
        (Some(dir), None) => Source::Directory(dir),
        (None, Some(name)) => Source::Namespace(name),
        (None, None) => Source::System,
    };
    Ok(source)
}

/// The filters and the retention limits.
fn filter_and_retention(given: &mut Given) -> Result<(Filter, Retention)> {
    let lists = keys::GLOB_KEY_DEFS.map(|k| given.globs(k));
    let max_priority = given.unsigned(&keys::MAX_PRIORITY).map(|p| p as u8);
    let filter = Filter::new(lists, max_priority)
        .map_err(|(i, why)| given.bad(keys::GLOB_KEY_DEFS[i], &why))?;
    // Spans and sizes passed their key's rule when given.
    let retention = Retention {
        max_age: given
            .string(&keys::MAX_AGE)
            .and_then(|t| crate::archive::retention::parse_span(&t)),
        max_use: given
            .string(&keys::MAX_USE)
            .and_then(|t| crate::archive::retention::parse_size(&t)),
        keep_free: given
            .string(&keys::KEEP_FREE)
            .and_then(|t| crate::archive::retention::parse_size(&t)),
    };
    Ok((filter, retention))
}

/// The flags both programs share, as values of their keys.
fn common_flags(given: &mut Given, common: &CommonArgs) -> Result<()> {
    if let Some(dir) = &common.state_dir {
        given.set_flag(&keys::STATE_DIR, "state-dir", path_value(dir, "state-dir")?)?;
    }
    if let Some(dir) = &common.data_dir {
        given.set_flag(&keys::DATA_DIR, "data-dir", path_value(dir, "data-dir")?)?;
    }
    if let Some(level) = &common.log_level {
        given.set_flag(&keys::LOG_LEVEL, "log-level", level.as_str().into())?;
    }
    Ok(())
}

/// A path given by a flag, as a key's value: text, which DuckDB needs it to be.
fn path_value(path: &Path, flag: &str) -> Result<toml::Value> {
    match path.to_str() {
        Some(text) => Ok(text.into()),
        None => Err(BadConfig(format!(
            "the flag --{flag}: {} is not valid UTF-8: choose a directory whose name is",
            path.display()
        ))
        .into()),
    }
}

/// A state or data directory must be a path DuckDB takes as it is: it reads every file name
/// given to it as a glob (`[`, `]`, `*`, `?`, `{`, `}` would make every merge and query find
/// nothing, or other files), and names are text to it (a path that is not UTF-8 cannot be
/// named).
pub(super) fn check_dir_path(dir: &Path) -> Result<(), String> {
    let Some(text) = dir.to_str() else {
        return Err(format!(
            "{} is not valid UTF-8: choose a directory whose name is",
            dir.display()
        ));
    };
    match text.chars().find(|c| "[]*?{}".contains(*c)) {
        Some(c) => Err(format!(
            "{text:?} contains {c:?}, which DuckDB reads as a glob pattern: choose a directory \
             without [ ] * ? {{ }}"
        )),
        None => Ok(()),
    }
}

/// `--check-config`: prints the settings in effect on stdout. Returns true when the caller should
/// exit now.
pub fn check_only(common: &CommonArgs, settings: &Settings) -> bool {
    if common.check_config {
        print!("{}", settings.to_toml(settings.config_file.as_deref()));
    }
    common.check_config
}
