//! The command lines of both programs and of `journal-parquet query`, as clap parses them.

use std::path::PathBuf;

use anyhow::Result;
use clap::builder::NonEmptyStringValueParser;
use clap::Parser;

use crate::journal::position::FirstStart;

use super::LOG_LEVELS;

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
    /// Serve the web console (read-only): health, activity, search and SQL over the archive.
    /// jp-web.socket starts it on the first connection; it exits after web_idle_exit_sec idle
    Web(WebArgs),
}

/// `journal-parquet web`.
#[derive(Debug, clap::Args)]
pub struct WebArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Listen on ADDR (e.g. 127.0.0.1:9417) instead of on the socket systemd passes
    /// (jp-web.socket); it then never exits for being idle
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
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
pub fn parse_time(text: &str) -> Result<u64, String> {
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
    /// Compact every day that compact_after makes due, however long it takes (a run of the
    /// timer compacts for about 20 seconds at most)
    #[arg(long)]
    pub compact: bool,
    /// Count the whole archive again into the summary the web console's charts read
    /// (STATE/summary.duckdb), after the run
    #[arg(long)]
    pub rebuild_summary: bool,
}
