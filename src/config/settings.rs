//! Everything a program runs with, resolved from the flags, the file and the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use log::LevelFilter;

use crate::archive::retention::Retention;
use crate::buffer::Buffer;
use crate::journal::filter::{Filter, GLOB_KEYS};
use crate::journal::Source;

use super::args::{CollectorArgs, CommonArgs};
use super::file::load_file;
use super::{BadConfig, LOG_LEVELS, LOG_LEVEL_ENV};

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
    /// The config file these settings came from, if any.
    pub config_file: Option<PathBuf>,
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

    /// The keys whose new value in `new` only takes effect at a restart: the buffer and the tree
    /// stay where they are open, and the journal source stays the one being read.
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.state_dir != new.state_dir {
            keys.push("state_dir");
        }
        if self.data_dir != new.data_dir {
            keys.push("data_dir");
        }
        if self.source != new.source {
            keys.push("journal_directory/namespace");
        }
        if self.duckdb_memory_limit != new.duckdb_memory_limit {
            keys.push("duckdb_memory_limit");
        }
        keys
    }

    /// `new`, but with the keys that need a restart as they are in `self`.
    pub fn reloaded(&self, new: Settings) -> Settings {
        Settings {
            state_dir: self.state_dir.clone(),
            data_dir: self.data_dir.clone(),
            source: self.source.clone(),
            duckdb_memory_limit: self.duckdb_memory_limit.clone(),
            ..new
        }
    }

    /// The settings in effect, as a config file that would produce them (`--check-config`).
    pub fn to_toml(&self, config_file: Option<&Path>) -> String {
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        let mut out = String::new();
        match config_file {
            Some(file) => out += &format!("# settings in effect, from {}\n", file.display()),
            None => out += "# settings in effect (no config file: defaults and flags)\n",
        }
        out += &format!("state_dir = {}\n", path(&self.state_dir));
        out += &format!("data_dir = {}\n", path(&self.data_dir));
        match &self.source {
            Source::Directory(dir) => out += &format!("journal_directory = {}\n", path(dir)),
            Source::Namespace(name) => out += &format!("namespace = {}\n", toml_string(name)),
            Source::System => {
                out += "# journal_directory and namespace unset: the system and user journals\n"
            }
        }
        out += &format!(
            "commit_interval_ms = {}\n",
            self.commit_interval.as_millis()
        );
        out += &format!("max_batch_entries = {}\n", self.max_batch_entries);
        out += &format!("max_batch_mib = {}\n", self.max_batch_bytes >> 20);
        out += &format!(
            "duckdb_memory_limit = {}\n",
            toml_string(&self.duckdb_memory_limit)
        );
        out += &format!(
            "flush_memory_limit = {}\n",
            toml_string(&self.flush_memory_limit)
        );
        out += &format!("flush_threads = {}\n", self.flush_threads);
        out += &format!("handoff_timeout_sec = {}\n", self.handoff_timeout.as_secs());
        out += &format!("journal_reopen_entries = {}\n", self.journal_reopen_entries);
        out += &format!(
            "log_level = {}\n",
            toml_string(&self.log_level.to_string().to_lowercase())
        );
        out += &format!("compression = {}\n", toml_string(self.compression.name()));
        out += &format!(
            "flush_every_sec = {}\n",
            self.flush_every.map_or(0, |d| d.as_secs())
        );
        out += &format!("metrics_directory = {}\n", path(&self.metrics_dir));
        for (i, key) in GLOB_KEYS.iter().enumerate() {
            let globs: Vec<String> = self.filter.globs(i).map(toml_string).collect();
            match globs.is_empty() {
                true => out += &format!("# {key} unset: no filter\n"),
                false => out += &format!("{key} = [{}]\n", globs.join(", ")),
            }
        }
        match self.filter.max_priority {
            Some(p) => out += &format!("max_priority = {p}\n"),
            None => out += "# max_priority unset: every priority\n",
        }
        let r = &self.retention;
        match r.max_age {
            Some(age) => out += &format!("max_age = \"{}s\"\n", age.as_secs()),
            None => out += "# max_age unset: no limit\n",
        }
        for (key, value) in [("max_use", r.max_use), ("keep_free", r.keep_free)] {
            match value {
                Some(bytes) => out += &format!("{key} = \"{bytes}\"\n"),
                None => out += &format!("# {key} unset: no limit\n"),
            }
        }
        out
    }

    /// Resolves flags, the config file and the environment into settings (jp-flush's: no
    /// collector flags).
    pub fn resolve(common: &CommonArgs) -> Result<Settings> {
        Settings::resolve_with(common, None, None, None)
    }

    /// The collector's settings: `resolve`, with its `--directory`, `--namespace` and
    /// `--flush-every`.
    pub fn for_collector(args: &CollectorArgs) -> Result<Settings> {
        let mut settings = Settings::resolve_with(
            &args.common,
            args.directory.as_deref(),
            args.namespace.as_deref(),
            args.flush_every,
        )?;
        // In GLOB_KEYS order.
        let flags = [
            args.include_units.clone(),
            args.exclude_units.clone(),
            args.include_identifiers.clone(),
            args.exclude_identifiers.clone(),
            args.exclude_fields.clone(),
        ];
        settings.filter = settings
            .filter
            .overridden(flags, args.max_priority)
            .map_err(|(i, why)| BadConfig(format!("the flag for {}: {why}", GLOB_KEYS[i])))?;
        Ok(settings)
    }

    fn resolve_with(
        common: &CommonArgs,
        directory: Option<&Path>,
        namespace: Option<&str>,
        flush_every: Option<u64>,
    ) -> Result<Settings> {
        let (file, path) = load_file(common.config.as_deref())?;
        let config_file = path.clone();
        let bad = |key: &str, why: &str| {
            let where_ = path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the command line".into());
            BadConfig(format!("{where_}: key `{key}`: {why}"))
        };

        // systemd may list several directories, colon-separated: the first is ours.
        let systemd_state = std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next().map(PathBuf::from))
            })
            .filter(|p| !p.as_os_str().is_empty());
        let given_state = common
            .state_dir
            .clone()
            .or(file.state_dir)
            .or(systemd_state);
        let data_dir = common
            .data_dir
            .clone()
            .or(file.data_dir)
            .or(given_state.as_ref().map(|s| s.join("data")))
            .unwrap_or_else(|| PathBuf::from("data"));
        let state_dir = given_state.unwrap_or_else(|| PathBuf::from("state"));
        for (key, dir) in [("state_dir", &state_dir), ("data_dir", &data_dir)] {
            check_dir_path(dir).map_err(|why| bad(key, &why))?;
        }
        // A source given by a flag replaces the file's (a template unit's --namespace beats a
        // journal_directory set for the main instance); two in one place are an error.
        let (dir_given, ns_given) = match (directory, namespace) {
            (None, None) => (file.journal_directory, file.namespace),
            (d, n) => (d.map(Path::to_path_buf), n.map(str::to_owned)),
        };
        let source = match (dir_given, ns_given) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "namespace",
                    "journal_directory and namespace name two sources: keep one",
                )
                .into())
            }
            (Some(dir), None) => Source::Directory(dir),
            (None, Some(name)) => {
                // journald's own rule for namespace names (systemd's log_namespace_name_valid).
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && !name.starts_with(['.', '-'])
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !valid {
                    return Err(bad(
                        "namespace",
                        &format!(
                            "{name:?} is not a journal namespace name (letters, digits, _ - .)"
                        ),
                    )
                    .into());
                }
                Source::Namespace(name)
            }
            (None, None) => Source::System,
        };

        let commit_ms = file.commit_interval_ms.unwrap_or(1000);
        if !(10..=60_000).contains(&commit_ms) {
            return Err(bad("commit_interval_ms", "must be between 10 and 60000").into());
        }
        let max_batch_entries = file.max_batch_entries.unwrap_or(100_000);
        if !(1..=10_000_000).contains(&max_batch_entries) {
            return Err(bad("max_batch_entries", "must be between 1 and 10000000").into());
        }
        // A batch becomes Arrow string columns with 32-bit offsets: the `fields` column of one
        // batch holds every field of its entries and must stay below 2 GiB, with room for the
        // JSON quoting that makes it larger than the fields read.
        let max_batch_mib = file.max_batch_mib.unwrap_or(24);
        if !(1..=MAX_BATCH_MIB).contains(&max_batch_mib) {
            return Err(bad(
                "max_batch_mib",
                &format!("must be between 1 and {MAX_BATCH_MIB}"),
            )
            .into());
        }
        // Measured on a 1M-entry backfill: 256MB → 464 MiB peak RSS, 128MB → 367 MiB for 7% more
        // time; the rest is the batches in hand (two: one filling, one committing).
        let duckdb_memory_limit = file.duckdb_memory_limit.unwrap_or_else(|| "128MB".into());
        if !valid_memory_limit(&duckdb_memory_limit) {
            return Err(bad("duckdb_memory_limit", "must look like 256MB or 1GB").into());
        }
        // Enough for a 2M-entry minute (a merge's anti join spills to STATE/flush.tmp beyond it); keeps
        // jp-flush under 256 MiB of RSS on the benchmark.
        let flush_memory_limit = file.flush_memory_limit.unwrap_or_else(|| "192MB".into());
        if !valid_memory_limit(&flush_memory_limit) {
            return Err(bad("flush_memory_limit", "must look like 1GB or 512MB").into());
        }
        // Two: this machine class has two cores, and each file written at once holds a row group.
        let flush_threads = file.flush_threads.unwrap_or(2);
        if !(1..=256).contains(&flush_threads) {
            return Err(bad("flush_threads", "must be between 1 and 256").into());
        }
        let handoff_timeout = file.handoff_timeout_sec.unwrap_or(50);
        if !(1..=3600).contains(&handoff_timeout) {
            return Err(bad("handoff_timeout_sec", "must be between 1 and 3600").into());
        }
        let journal_reopen_entries = file
            .journal_reopen_entries
            .unwrap_or(crate::journal::streams::REOPEN_EVERY);
        if !(1..=100_000_000).contains(&journal_reopen_entries) {
            return Err(bad("journal_reopen_entries", "must be between 1 and 100000000").into());
        }
        // Each source of the level is named by what it is: the flag, the file's key, or the
        // environment variable.
        let env_level = std::env::var(LOG_LEVEL_ENV).ok();
        let (level_text, level_from) = match (common.log_level.clone(), file.log_level, env_level) {
            (Some(l), _, _) => (l, None),
            (None, Some(l), _) => (l, None),
            (None, None, Some(l)) => (l, Some(LOG_LEVEL_ENV)),
            (None, None, None) => ("info".into(), None),
        };
        let log_level: LevelFilter = level_text.parse().map_err(|_| {
            let why = format!("{level_text:?} is not one of {}", LOG_LEVELS.join(", "));
            match level_from {
                Some(var) => BadConfig(format!("environment variable ${var}: {why}")),
                None => bad("log_level", &why),
            }
        })?;

        let compression_text = file.compression.unwrap_or_else(|| "zstd".into());
        let compression = Compression::parse(&compression_text).ok_or_else(|| {
            bad(
                "compression",
                &format!("{compression_text:?} is not one of zstd, snappy, none"),
            )
        })?;
        let flush_every = match flush_every.or(file.flush_every_sec) {
            Some(0) | None => None,
            Some(s) if s <= 86_400 => Some(Duration::from_secs(s)),
            Some(_) => return Err(bad("flush_every_sec", "must be at most 86400").into()),
        };

        // A retention key: None when unset, else its parsed value or an error with an example.
        fn parsed<T>(
            text: Option<String>,
            parse: fn(&str) -> Option<T>,
            fail: impl Fn(&str) -> BadConfig,
        ) -> Result<Option<T>, BadConfig> {
            text.map(|t| parse(&t).ok_or_else(|| fail(&t))).transpose()
        }
        let span = |key: &str, text| {
            parsed(text, crate::archive::retention::parse_span, |t| {
                bad(
                    key,
                    &format!("{t:?} is not a time span such as \"400d\" or \"12h\""),
                )
            })
        };
        let size = |key: &str, text| {
            parsed(text, crate::archive::retention::parse_size, |t| {
                bad(
                    key,
                    &format!("{t:?} is not a size such as \"50G\" or \"512M\""),
                )
            })
        };
        if file.max_priority.is_some_and(|p| p > 7) {
            return Err(bad("max_priority", "must be between 0 (emerg) and 7 (debug)").into());
        }
        let lists = [
            file.include_units,
            file.exclude_units,
            file.include_identifiers,
            file.exclude_identifiers,
            file.exclude_fields,
        ];
        let metrics_dir = file
            .metrics_directory
            .clone()
            .unwrap_or_else(|| state_dir.clone());
        let filter = Filter::new(lists.map(Option::unwrap_or_default), file.max_priority)
            .map_err(|(i, why)| bad(GLOB_KEYS[i], &why))?;
        let retention = Retention {
            max_age: span("max_age", file.max_age)?,
            max_use: size("max_use", file.max_use)?,
            keep_free: size("keep_free", file.keep_free)?,
        };

        Ok(Settings {
            state_dir,
            data_dir,
            source,
            commit_interval: Duration::from_millis(commit_ms),
            max_batch_entries,
            max_batch_bytes: max_batch_mib << 20,
            duckdb_memory_limit,
            flush_memory_limit,
            flush_threads,
            handoff_timeout: Duration::from_secs(handoff_timeout),
            journal_reopen_entries,
            log_level,
            compression,
            flush_every,
            retention,
            filter,
            metrics_dir,
            config_file,
        })
    }
}

/// The largest `max_batch_mib`: see where it is checked.
pub(super) const MAX_BATCH_MIB: usize = 1024;

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

/// A TOML basic string.
pub(super) fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `--check-config`: prints the settings in effect on stdout. Returns true when the caller should
/// exit now.
pub fn check_only(common: &CommonArgs, settings: &Settings) -> bool {
    if common.check_config {
        print!("{}", settings.to_toml(settings.config_file.as_deref()));
    }
    common.check_config
}

pub(super) fn valid_memory_limit(text: &str) -> bool {
    let t = text.trim().to_ascii_uppercase();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["B", "KB", "MB", "GB", "KIB", "MIB", "GIB"].contains(&unit)
}
