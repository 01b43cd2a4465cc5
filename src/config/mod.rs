//! Command lines, the TOML configuration file, and the settings both binaries run with.
//!
//! Precedence: command-line flag, then the config file, then the systemd environment
//! (`$STATE_DIRECTORY`), then a default relative to the working directory. The data directory
//! defaults to `STATE/data` whenever the state directory is given (flag, key or environment), as
//! under the unit: `jp-flush --state-dir /var/lib/journal-parquet` run from /tmp must write the
//! archive where the service does, not into /tmp/data. An unknown key or a bad
//! value in the config file is an error naming the file and the key (exit 78, EX_CONFIG).

pub mod docs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::builder::NonEmptyStringValueParser;
use clap::Parser;
use log::LevelFilter;
use serde::Deserialize;

use crate::archive::retention::Retention;
use crate::buffer::Buffer;
use crate::journal::filter::{Filter, GLOB_KEYS};
use crate::journal::position::FirstStart;
use crate::journal::Source;

/// The config file read when `--config` is not given; a missing default file means defaults.
pub const DEFAULT_CONFIG: &str = "/etc/journal-parquet/config.toml";

/// The log levels, for the flag, the config key and the environment variable alike.
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const LOG_LEVEL_ENV: &str = "JOURNAL_PARQUET_LOG_LEVEL";

crate::sys::message_error! {
    /// A configuration problem: the binaries exit with 78 (EX_CONFIG) for it.
    BadConfig
}

crate::sys::message_error! {
    /// A command line that cannot be run as given (beyond what argument parsing checks): exit 2,
    /// as for argument errors.
    Usage
}

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

/// Options both binaries share.
#[derive(Debug, Clone, Parser)]
pub struct CommonArgs {
    /// Where the buffer (buffer/), the cursor file and the seal socket live
    /// [default: $STATE_DIRECTORY, else ./state]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the Parquet tree is written [default: STATE/data when the state directory is given
    /// or $STATE_DIRECTORY is set, else ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file [default: /etc/journal-parquet/config.toml if it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info, or $JOURNAL_PARQUET_LOG_LEVEL]
    // Checked here, so that a bad flag is a usage error (exit 2) naming the flag, not a bad key
    // of the config file.
    #[arg(long, value_name = "LEVEL", value_parser = LOG_LEVELS)]
    pub log_level: Option<String>,
    /// Check the configuration, print the settings in effect as TOML, and exit: 0 valid, 78 not
    #[arg(long)]
    pub check_config: bool,
}

/// journal-parquet: reads the journal into the DuckDB buffer; `journal-parquet query` asks the
/// archive.
#[derive(Debug, Parser)]
#[command(name = "journal-parquet", version, about, long_about = None)]
// The collector's flags belong to the collector alone: `journal-parquet --once query` is a usage
// error, not a collector that also queries.
#[command(args_conflicts_with_subcommands = true)]
pub struct CollectorArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Read the journal files in DIR instead of the system and user journals (like journalctl -D)
    /// [config: journal_directory]
    #[arg(long, value_name = "DIR", conflicts_with = "namespace")]
    pub directory: Option<PathBuf>,
    /// Read the journald namespace NAME (what units with LogNamespace=NAME log) instead of the
    /// system and user journals (like journalctl --namespace) [config: namespace]
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// With no saved position, start at the oldest entry instead of the tail
    #[arg(long)]
    pub from_head: bool,
    /// With --from-head: start at the first entry stamped at or after TIME, UTC (e.g.
    /// 2026-11-01, "2026-11-01 12:00:00", 2026-11-01T12:00:00Z or @UNIX_SECONDS)
    #[arg(long, value_name = "TIME", requires = "from_head", value_parser = parse_time)]
    pub since: Option<u64>,
    /// Exit 0 once every entry readable so far is committed to the buffer
    #[arg(long)]
    pub once: bool,
    /// Keep only entries whose unit matches GLOB; repeatable; replaces the config file's list
    /// [config: include_units]
    #[arg(long = "include-unit", value_name = "GLOB", value_parser = NonEmptyStringValueParser::new())]
    pub include_units: Vec<String>,
    /// Leave out entries whose unit matches GLOB; repeatable [config: exclude_units]
    #[arg(long = "exclude-unit", value_name = "GLOB", value_parser = NonEmptyStringValueParser::new())]
    pub exclude_units: Vec<String>,
    /// Keep only entries whose SYSLOG_IDENTIFIER matches GLOB; repeatable
    /// [config: include_identifiers]
    #[arg(long = "include-identifier", value_name = "GLOB", value_parser = NonEmptyStringValueParser::new())]
    pub include_identifiers: Vec<String>,
    /// Leave out entries whose SYSLOG_IDENTIFIER matches GLOB; repeatable
    /// [config: exclude_identifiers]
    #[arg(long = "exclude-identifier", value_name = "GLOB", value_parser = NonEmptyStringValueParser::new())]
    pub exclude_identifiers: Vec<String>,
    /// Drop the fields whose name matches GLOB; repeatable [config: exclude_fields]
    #[arg(long = "exclude-field", value_name = "GLOB", value_parser = NonEmptyStringValueParser::new())]
    pub exclude_fields: Vec<String>,
    /// Keep priorities 0 (emerg) to N (7: debug) [config: max_priority]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=7))]
    pub max_priority: Option<u8>,
    /// Also write completed minutes to Parquet every SECONDS, as jp-flush does (for running
    /// without the timer, e.g. in the foreground) [config: flush_every_sec]
    #[arg(long, value_name = "SECONDS")]
    pub flush_every: Option<u64>,
}

/// What `journal-parquet` runs besides the collector.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run SQL over the archive in an embedded DuckDB, with the views `journal` (the typed
    /// columns of every minute file) and `entries` (each entry whole, as `journalctl -o json
    /// --all` prints it)
    Query(QueryArgs),
}

/// `journal-parquet query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The SQL: one statement; none or "-" reads it from standard input
    #[arg(value_name = "SQL")]
    pub sql: Option<String>,
    /// How the result is printed: an aligned table, CSV with a header, JSON (one object a line)
    /// or Parquet (redirect it to a file)
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
    /// Only entries stamped at or after TIME, UTC (e.g. 2026-11-01, "2026-11-01 12:00:00",
    /// 2026-11-01T12:00:00Z or @UNIX_SECONDS); files of earlier minutes are not opened
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<u64>,
    /// Only entries stamped before TIME, UTC (as --since); files of later minutes are not
    /// opened
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<u64>,
    /// Only the host NAME (its `_HOSTNAME`, or its directory under the data directory);
    /// repeatable; other hosts' files are not opened
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Also the entries not flushed to Parquet yet, read from the buffer without stopping the
    /// collector (needs access to the state directory)
    #[arg(long)]
    pub live: bool,
}

/// `journal-parquet query --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

impl CollectorArgs {
    /// Where a first start begins reading.
    pub fn first_start(&self) -> FirstStart {
        match (self.from_head, self.since) {
            (true, Some(usec)) => FirstStart::Since(usec),
            (true, None) => FirstStart::Head,
            (false, _) => FirstStart::Tail,
        }
    }
}

/// `--since`, `--until`: a UTC time as µs since the epoch.
fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = if let Some(secs) = t.strip_prefix('@') {
        secs.parse::<i64>()
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
    } else if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        Some(d.to_utc())
    } else if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        Some(d.and_utc())
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).map(|d| d.and_utc())
    } else {
        None
    };
    parsed
        .and_then(|d| u64::try_from(d.timestamp_micros()).ok())
        .ok_or_else(|| {
            format!(
                "{text:?} is not a time such as 2026-11-01, \"2026-11-01 12:00:00\", \
                 2026-11-01T12:00:00Z or @1764547200 (UTC)"
            )
        })
}

/// jp-flush: writes completed minutes from the buffer to Parquet files.
#[derive(Debug, Parser)]
#[command(name = "jp-flush", version, about, long_about = None)]
pub struct FlushArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also write the minute still in progress (a final flush)
    #[arg(long)]
    pub all: bool,
}

/// The keys of the config file. Every key is optional; packaging/config.toml (installed as
/// /etc/journal-parquet/config.toml) documents each with its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    journal_directory: Option<PathBuf>,
    namespace: Option<String>,
    commit_interval_ms: Option<u64>,
    max_batch_entries: Option<usize>,
    max_batch_mib: Option<usize>,
    duckdb_memory_limit: Option<String>,
    flush_memory_limit: Option<String>,
    flush_threads: Option<u32>,
    handoff_timeout_sec: Option<u64>,
    journal_reopen_entries: Option<u64>,
    log_level: Option<String>,
    compression: Option<String>,
    flush_every_sec: Option<u64>,
    max_age: Option<String>,
    max_use: Option<String>,
    keep_free: Option<String>,
    include_units: Option<Vec<String>>,
    exclude_units: Option<Vec<String>>,
    include_identifiers: Option<Vec<String>>,
    exclude_identifiers: Option<Vec<String>>,
    exclude_fields: Option<Vec<String>>,
    max_priority: Option<u8>,
    metrics_directory: Option<PathBuf>,
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
const MAX_BATCH_MIB: usize = 1024;

/// A state or data directory must be a path DuckDB takes as it is: it reads every file name
/// given to it as a glob (`[`, `]`, `*`, `?`, `{`, `}` would make every merge and query find
/// nothing, or other files), and names are text to it (a path that is not UTF-8 cannot be
/// named).
fn check_dir_path(dir: &Path) -> Result<(), String> {
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
fn toml_string(text: &str) -> String {
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

fn valid_memory_limit(text: &str) -> bool {
    let t = text.trim().to_ascii_uppercase();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["B", "KB", "MB", "GB", "KIB", "MIB", "GIB"].contains(&unit)
}

/// Reads the config file: the given one (which must exist), else the default one if present.
fn load_file(given: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
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

/// Used by the binaries' `main` to turn an error into the documented exit code.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<BadConfig>().is_some() {
        78
    } else if err.downcast_ref::<Usage>().is_some() {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common_with(config: &Path) -> CommonArgs {
        CommonArgs {
            state_dir: None,
            data_dir: None,
            config: Some(config.to_path_buf()),
            log_level: None,
            check_config: false,
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "commit_intervall_ms = 5\n").unwrap();
        let err = Settings::resolve(&common_with(&path)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("commit_intervall_ms"), "{text}");
        assert_eq!(exit_code_for(&err), 78);
    }

    #[test]
    fn bad_value_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "duckdb_memory_limit = \"lots\"\n").unwrap();
        let err = Settings::resolve(&common_with(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("duckdb_memory_limit"));
        assert_eq!(exit_code_for(&err), 78);
    }

    /// Guards the data directory's default: STATE/data whenever the state directory is given,
    /// by the flag or by the key, as under the unit.
    #[test]
    fn the_data_dir_follows_a_given_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some("/srv/jp".into());
        let s = Settings::resolve(&common).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/jp/data"));
        std::fs::write(&path, "state_dir = \"/srv/key\"\n").unwrap();
        let s = Settings::resolve(&common_with(&path)).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/key/data"));
    }

    /// Guards paths DuckDB would read as globs, or could not name, and a batch size whose string
    /// columns would pass 2 GiB: refused at configuration time, naming the key (exit 78).
    #[test]
    fn directories_duckdb_cannot_take_and_huge_batches_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (key, value) in [
            ("data_dir", "/srv/archive[1]"),
            ("state_dir", "/srv/*"),
            ("data_dir", "/srv/a?b"),
            ("data_dir", "/srv/{a,b}"),
        ] {
            std::fs::write(&path, format!("{key} = {value:?}\n")).unwrap();
            let err = Settings::resolve(&common_with(&path)).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
            assert_eq!(exit_code_for(&err), 78, "{key} = {value}");
        }
        std::fs::write(&path, "").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff")));
        let err = Settings::resolve(&common).unwrap_err();
        assert!(format!("{err:#}").contains("UTF-8"), "{err:#}");
        assert_eq!(exit_code_for(&err), 78);
        for (mib, ok) in [(1024, true), (1025, false), (4096, false)] {
            std::fs::write(&path, format!("max_batch_mib = {mib}\n")).unwrap();
            let resolved = Settings::resolve(&common_with(&path));
            assert_eq!(resolved.is_ok(), ok, "max_batch_mib = {mib}");
        }
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "state_dir = \"/from/file\"\ndata_dir = \"/d\"\n").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some("/from/flag".into());
        let s = Settings::resolve(&common).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from/flag"));
        assert_eq!(s.data_dir, PathBuf::from("/d"));
        assert_eq!(s.buffer().dir(), Path::new("/from/flag/buffer"));
    }
}
