//! The config keys: one table, from which the parsing and checking of the file (`values`),
//! `--check-config`, the reload rules, journal-parquet.conf(5), the shipped `packaging/config.toml`
//! and the guide's key table (`reference`) are derived. Adding a key is one entry here plus its
//! use in `Settings::from_given` (CONTRIBUTING.md has the checklist). The module is long because
//! the table is: one entry a key.

/// What a key's value is, and the rule it must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A directory, as a string.
    Path,
    /// A journald namespace name (journald's own rule, see `Settings::resolve`).
    Namespace,
    /// An integer in `min..=max`.
    Integer { min: i64, max: i64 },
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// DuckDB's `memory_limit`, e.g. "256MB".
    MemoryLimit,
    /// A time span such as "400d".
    Span,
    /// A size such as "50G".
    Size,
    /// A list of globs.
    Globs,
}

impl Type {
    /// The TOML type a value must have, as an error names it.
    pub fn toml_kind(self) -> &'static str {
        match self {
            Type::Integer { .. } => "an integer",
            Type::Globs => "a list of strings",
            _ => "a string",
        }
    }
}

/// The value a key has when the file does not set it.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// This value, as TOML (the example line shows it).
    Value(&'static str),
    /// No value; the text says what that means. The example line shows a value to set.
    Unset(&'static str),
}

/// When a new value takes effect in a running collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// At `systemctl reload` (jp-flush reads the file at every run anyway).
    Reload,
    /// Only at a restart: the buffer and the tree stay where they are open, and the journal
    /// source stays the one being read.
    Restart,
}

/// One config key.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub ty: Type,
    pub default: Default,
    /// The value on the example line when there is no default.
    pub example: &'static str,
    pub change: Change,
    /// One line: the guide's table, and the first line of the reference.
    pub summary: &'static str,
    /// More lines for the reference (the shipped file and conf(5)), or "".
    pub more: &'static str,
    /// A paragraph that opens a group of keys (retention, filters), or "".
    pub group: &'static str,
}

impl Key {
    /// The line the reference shows (commented out in the shipped file): the default, or an
    /// example.
    pub fn example_line(&self) -> String {
        match self.default {
            Default::Value(v) => format!("{} = {v}", self.name),
            Default::Unset(_) => format!("{} = {}", self.name, self.example),
        }
    }
}

macro_rules! keys {
    ($($id:ident = $key:expr;)*) => {
        $(pub const $id: Key = $key;)*
        /// Every key, in the order the reference documents them.
        pub const KEYS: &[&Key] = &[$(&$id),*];
    };
}

keys! {
    STATE_DIR = Key {
        name: "state_dir",
        ty: Type::Path,
        default: Default::Unset("$STATE_DIRECTORY, which the units set to /var/lib/journal-parquet; else ./state"),
        example: "\"/var/lib/journal-parquet\"",
        change: Change::Restart,
        summary: "Where the buffer (buffer/, DuckDB segments), the journal cursor and the seal socket live.",
        more: "The units make only /var/lib/journal-parquet writable: another place needs\n\
               `ReadWritePaths=` in a drop-in for both journal-parquet.service and jp-flush.service\n\
               (`systemctl edit ...`).",
        group: "",
    };
    DATA_DIR = Key {
        name: "data_dir",
        ty: Type::Path,
        default: Default::Unset("STATE/data whenever the state directory is given (key, flag or $STATE_DIRECTORY), else ./data"),
        example: "\"/var/lib/journal-parquet/data\"",
        change: Change::Restart,
        summary: "Where the Parquet tree is written: DATA/HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet (UTC minutes).",
        more: "Same `ReadWritePaths=` note as state_dir.",
        group: "",
    };
    JOURNAL_DIRECTORY = Key {
        name: "journal_directory",
        ty: Type::Path,
        default: Default::Unset("the system journal and every user's"),
        example: "\"/var/log/journal/remote\"",
        change: Change::Restart,
        summary: "Read the journal files in this directory (like `journalctl -D DIR`) instead.",
        more: "",
        group: "",
    };
    NAMESPACE = Key {
        name: "namespace",
        ty: Type::Namespace,
        default: Default::Unset("none (one source: this or journal_directory)"),
        example: "\"NAME\"",
        change: Change::Restart,
        summary: "Read this journald namespace (like `journalctl --namespace NAME`) instead.",
        more: "What units with LogNamespace=NAME log. One namespace per collector: the template units\n\
               journal-parquet@NAME.service and jp-flush@NAME.timer archive namespace NAME on their own\n\
               (state and data in /var/lib/journal-parquet/namespace/NAME), with the other keys of\n\
               this file.",
        group: "",
    };
    COMMIT_INTERVAL_MS = Key {
        name: "commit_interval_ms",
        ty: Type::Integer { min: 10, max: 60_000 },
        default: Default::Value("1000"),
        example: "",
        change: Change::Reload,
        summary: "The longest an entry waits in memory before it is committed to the buffer, in milliseconds.",
        more: "Lower means fresher data in the buffer, higher means fewer, larger commits.",
        group: "",
    };
    MAX_BATCH_ENTRIES = Key {
        name: "max_batch_entries",
        ty: Type::Integer { min: 1, max: 10_000_000 },
        default: Default::Value("100000"),
        example: "",
        change: Change::Reload,
        summary: "Commit earlier when the batch in memory holds this many entries.",
        more: "",
        group: "",
    };
    MAX_BATCH_MIB = Key {
        name: "max_batch_mib",
        // A batch becomes Arrow string columns with 32-bit offsets: the `fields` column of one
        // batch holds every field of its entries and must stay below 2 GiB, with room for the
        // JSON quoting that makes it larger than the fields read.
        ty: Type::Integer { min: 1, max: 1024 },
        default: Default::Value("24"),
        example: "",
        change: Change::Reload,
        summary: "... or when it holds this many MiB of field data (two batches are in memory at once: one being read, one being committed).",
        more: "",
        group: "",
    };
    DUCKDB_MEMORY_LIMIT = Key {
        name: "duckdb_memory_limit",
        ty: Type::MemoryLimit,
        // Measured on a 1M-entry backfill: 256MB → 464 MiB peak RSS, 128MB → 367 MiB for 7% more
        // time; the rest is the batches in hand (two: one filling, one committing).
        default: Default::Value("\"128MB\""),
        example: "",
        change: Change::Restart,
        summary: "DuckDB's memory_limit for the collector (e.g. \"256MB\", \"1GB\").",
        more: "",
        group: "",
    };
    FLUSH_MEMORY_LIMIT = Key {
        name: "flush_memory_limit",
        ty: Type::MemoryLimit,
        // Enough for a 2M-entry minute (a merge's anti join spills to STATE/flush.tmp beyond it);
        // keeps jp-flush under 256 MiB of RSS on the benchmark.
        default: Default::Value("\"192MB\""),
        example: "",
        change: Change::Reload,
        summary: "DuckDB's memory_limit while jp-flush writes Parquet.",
        more: "A minute is written as it streams, in the memory of one row group; merging one into its\n\
               file spills to STATE/flush.tmp beyond it.",
        group: "",
    };
    FLUSH_THREADS = Key {
        name: "flush_threads",
        ty: Type::Integer { min: 1, max: 256 },
        // Two: this machine class has two cores, and each file written at once holds a row group.
        default: Default::Value("2"),
        example: "",
        change: Change::Reload,
        summary: "How many minute files jp-flush writes at once, each on one core and with the memory of one row group.",
        more: "The collector always uses two threads: one reads, one commits.",
        group: "",
    };
    HANDOFF_TIMEOUT_SEC = Key {
        name: "handoff_timeout_sec",
        ty: Type::Integer { min: 1, max: 3600 },
        default: Default::Value("50"),
        example: "",
        change: Change::Reload,
        summary: "How long jp-flush waits for the seal (or for another jp-flush), in seconds, before it exits 75.",
        more: "The next timer tick then does the work.",
        group: "",
    };
    JOURNAL_REOPEN_ENTRIES = Key {
        name: "journal_reopen_entries",
        ty: Type::Integer { min: 1, max: 100_000_000 },
        default: Default::Value("50000"),
        example: "",
        change: Change::Reload,
        summary: "A stream's journal is closed and opened again after this many entries read from it.",
        more: "To let go of the file windows libsystemd maps (hundreds of MiB of RSS on a long backfill\n\
               otherwise). Reopening costs about a millisecond.",
        group: "",
    };
    LOG_LEVEL = Key {
        name: "log_level",
        ty: Type::Choice(&super::LOG_LEVELS),
        default: Default::Value("\"info\""),
        example: "",
        change: Change::Reload,
        summary: "How much the programs log; $JOURNAL_PARQUET_LOG_LEVEL is used when this key is unset.",
        more: "At info the collector logs its start, stop and anything that needs attention, nothing\n\
               per batch.",
        group: "",
    };
    COMPRESSION = Key {
        name: "compression",
        ty: Type::Choice(&["zstd", "snappy", "none"]),
        default: Default::Value("\"zstd\""),
        example: "",
        change: Change::Reload,
        summary: "Parquet compression.",
        more: "",
        group: "",
    };
    FLUSH_EVERY_SEC = Key {
        name: "flush_every_sec",
        ty: Type::Integer { min: 0, max: 86_400 },
        default: Default::Value("0"),
        example: "",
        change: Change::Reload,
        summary: "Seconds between flushes done by the collector itself, as jp-flush would (0: off, the timer does it).",
        more: "For running without jp-flush.timer only (like --flush-every).",
        group: "",
    };
    MAX_AGE = Key {
        name: "max_age",
        ty: Type::Span,
        default: Default::Unset("no limit"),
        example: "\"400d\"",
        change: Change::Reload,
        summary: "Retention: delete minute files whose minute ended longer ago than this.",
        more: "A number and s, min, h, d, w, month or y.",
        group: "Retention of the Parquet tree, applied after each flush. The keys mean what journald's\n\
                MaxRetentionSec=, SystemMaxUse= and SystemKeepFree= mean. The oldest minutes go first,\n\
                across hosts; a minute that still has rows in the buffer, and every later one, is never\n\
                deleted; files journal-parquet did not write are never deleted nor counted.",
    };
    MAX_USE = Key {
        name: "max_use",
        ty: Type::Size,
        default: Default::Unset("no limit"),
        example: "\"50G\"",
        change: Change::Reload,
        summary: "Retention: delete the oldest minutes until the tree uses at most this.",
        more: "Bytes, or a number and K, M, G or T (powers of 1024).",
        group: "",
    };
    KEEP_FREE = Key {
        name: "keep_free",
        ty: Type::Size,
        default: Default::Unset("no limit"),
        example: "\"10G\"",
        change: Change::Reload,
        summary: "Retention: delete the oldest minutes until the data file system has this much free.",
        more: "Same units as max_use.",
        group: "",
    };
    COMPACT_AFTER = Key {
        name: "compact_after",
        ty: Type::Span,
        default: Default::Unset("off: every minute stays in its own file"),
        example: "\"7d\"",
        change: Change::Reload,
        summary: "Compaction: merge each host's complete days older than this into one day file.",
        more: "A day's minute files become DATA/HOST/YYYY/MM/DD/YYYYMMDD.parquet (or hour files,\n\
               see compact_day_max_rows), in one atomic swap of the day's directory: every reader\n\
               sees either the minute files or the day file. A year of minute files is twice the\n\
               bytes of its day files and 700 times slower to count; set it for an archive kept\n\
               longer than a week. Each jp-flush run compacts for at most about 20 seconds;\n\
               `jp-flush --compact` does all that is due at once. A late entry for a compacted\n\
               day becomes a minute file beside the day file, folded in by the next compaction.",
        group: "Compaction of old days (off by default: minute files are what the archive promises).",
    };
    COMPACT_DAY_MAX_ROWS = Key {
        name: "compact_day_max_rows",
        ty: Type::Integer { min: 1_000, max: 10_000_000_000 },
        default: Default::Value("8000000"),
        example: "",
        change: Change::Reload,
        summary: "Compaction: a day with more entries than this is written as hour files (YYYYMMDD-HH.parquet).",
        more: "8 million entries make a day file of about 500 MB (the file size Iceberg and DuckLake\n\
               aim for), from a host logging 90 entries a second all day. Beyond that, a late\n\
               entry would make the next compaction rewrite more than it gains.",
        group: "",
    };
    INCLUDE_UNITS = Key {
        name: "include_units",
        ty: Type::Globs,
        default: Default::Unset("every entry is kept"),
        example: "[\"nginx.service\", \"ssh*\"]",
        change: Change::Reload,
        summary: "Filter: keep only entries whose _SYSTEMD_UNIT or _SYSTEMD_USER_UNIT matches a glob.",
        more: "",
        group: "Filters: which entries the collector keeps. Globs as systemctl takes them (*, ?, [...]).\n\
                Each include list that is set must match, and no exclude list may; an entry without the\n\
                field an include list looks at is left out. Entries left out are counted (STATUS=, the\n\
                stop line), and the position moves past them.",
    };
    EXCLUDE_UNITS = Key {
        name: "exclude_units",
        ty: Type::Globs,
        default: Default::Unset("no entry is left out for its unit"),
        example: "[\"session-*.scope\"]",
        change: Change::Reload,
        summary: "Filter: leave out entries whose _SYSTEMD_UNIT or _SYSTEMD_USER_UNIT matches a glob.",
        more: "",
        group: "",
    };
    INCLUDE_IDENTIFIERS = Key {
        name: "include_identifiers",
        ty: Type::Globs,
        default: Default::Unset("every entry is kept"),
        example: "[\"sshd\"]",
        change: Change::Reload,
        summary: "Filter: keep only entries whose SYSLOG_IDENTIFIER matches a glob.",
        more: "",
        group: "",
    };
    EXCLUDE_IDENTIFIERS = Key {
        name: "exclude_identifiers",
        ty: Type::Globs,
        default: Default::Unset("no entry is left out for its identifier"),
        example: "[\"CRON\"]",
        change: Change::Reload,
        summary: "Filter: leave out entries whose SYSLOG_IDENTIFIER matches a glob.",
        more: "",
        group: "",
    };
    MAX_PRIORITY = Key {
        name: "max_priority",
        ty: Type::Integer { min: 0, max: 7 },
        default: Default::Unset("every priority"),
        example: "6",
        change: Change::Reload,
        summary: "Filter: keep priorities 0 (emerg) to this (7: debug).",
        more: "An entry without PRIORITY is kept: journald gives one to every entry it receives, so\n\
               such an entry comes from elsewhere.",
        group: "",
    };
    EXCLUDE_FIELDS = Key {
        name: "exclude_fields",
        ty: Type::Globs,
        default: Default::Unset("every field is kept"),
        example: "[\"_CMDLINE\"]",
        change: Change::Reload,
        summary: "Field names to drop from every entry kept: the one deliberate exception to \"every field\".",
        more: "",
        group: "",
    };
    QUERY_MEMORY_LIMIT = Key {
        name: "query_memory_limit",
        ty: Type::MemoryLimit,
        default: Default::Value("\"512MB\""),
        example: "",
        change: Change::Reload,
        summary: "DuckDB's memory_limit for `journal-parquet query` and each request of the web console.",
        more: "Whole entries (`entries`) built from a day file's row groups in two threads need about\n\
               230 MB (measured: an hour of a day of four hosts failed at 192MB and 220MB, and ran at\n\
               256MB); beyond the limit DuckDB spills what it can to a private temporary directory.",
        group: "",
    };
    QUERY_MAX_FILES = Key {
        name: "query_max_files",
        ty: Type::Integer { min: 1, max: 100_000_000 },
        default: Default::Value("100000"),
        example: "",
        change: Change::Reload,
        summary: "The most minute files one `journal-parquet query` opens; a query that would open more is refused, saying how to narrow it.",
        more: "Each file opened holds about 8 KiB of memory for its metadata, which DuckDB's memory\n\
               limit does not bound (measured: 7.6 KiB a file; 3.6 GB for a year of one host's 524,140\n\
               minute files). The default allows about 800 MB. Narrow a query with --since/--until or\n\
               --host rather than raising it.",
        group: "",
    };
    WEB_TOKEN_FILE = Key {
        name: "web_token_file",
        ty: Type::Path,
        default: Default::Value("\"/etc/journal-parquet/web.token\""),
        example: "",
        change: Change::Reload,
        summary: "The web console's token: every request needs it (given once on the login page, then kept in a cookie).",
        more: "The packages make it at install (32 random bytes as hex, mode 0640, group journal-parquet).\n\
               A loopback port is open to every local user, and the journal holds secrets.",
        group: "The web console (`journal-parquet web`, started by jp-web.socket).",
    };
    WEB_IDLE_EXIT_SEC = Key {
        name: "web_idle_exit_sec",
        ty: Type::Integer { min: 0, max: 86_400 },
        default: Default::Value("300"),
        example: "",
        change: Change::Reload,
        summary: "The socket-activated console exits after this many seconds without a request (0: never); systemd starts it again at the next.",
        more: "",
        group: "",
    };
    METRICS_DIRECTORY = Key {
        name: "metrics_directory",
        ty: Type::Path,
        default: Default::Unset("the state directory, which node_exporter cannot read"),
        example: "\"/var/lib/prometheus/node-exporter\"",
        change: Change::Reload,
        summary: "Where the Prometheus text files go, for node_exporter's textfile collector.",
        more: "journal_parquet_collector.prom (every 15 s and at stop) and journal_parquet_flush.prom (at\n\
               the end of each jp-flush run). The guide (\"Metrics\") shows how to point node_exporter at\n\
               them.",
        group: "",
    };
}

/// The filter keys whose values are globs, in the order `Filter::new` takes them.
pub const GLOB_KEY_DEFS: [&Key; 5] = [
    &INCLUDE_UNITS,
    &EXCLUDE_UNITS,
    &INCLUDE_IDENTIFIERS,
    &EXCLUDE_IDENTIFIERS,
    &EXCLUDE_FIELDS,
];

/// Their names.
pub const GLOB_KEYS: [&str; 5] = [
    GLOB_KEY_DEFS[0].name,
    GLOB_KEY_DEFS[1].name,
    GLOB_KEY_DEFS[2].name,
    GLOB_KEY_DEFS[3].name,
    GLOB_KEY_DEFS[4].name,
];

/// The key called `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the table itself: names unique, defaults valid for their type.
    #[test]
    fn every_key_is_named_once_and_its_default_is_valid() {
        let mut names: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        for key in KEYS {
            let text = match key.default {
                Default::Value(v) => v,
                Default::Unset(_) => key.example,
            };
            let value: toml::Table = toml::from_str(&format!("{} = {text}", key.name)).unwrap();
            super::super::values::check(key, &value[key.name])
                .unwrap_or_else(|why| panic!("{}: {why}", key.name));
        }
    }

    /// Guards the one default the journal room also holds (it opens streams before settings
    /// exist): the key's default is `streams::REOPEN_EVERY`.
    #[test]
    fn the_reopen_default_is_the_streams_own() {
        let Default::Value(text) = JOURNAL_REOPEN_ENTRIES.default else {
            panic!("journal_reopen_entries has a default");
        };
        assert_eq!(text, crate::journal::streams::REOPEN_EVERY.to_string());
    }
}
