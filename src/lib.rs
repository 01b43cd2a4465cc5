//! journal-parquet: archives the systemd journal as Parquet, exactly once, every field intact.
//!
//! The rooms, in the order the data flows:
//! - `journal`: libsystemd's sd-journal, the streams of one source, positions, filters;
//! - `collector`: reads the journal into the buffer, with its position, and seals segments;
//! - `buffer`: the segments (DuckDB files), and their hand-off to jp-flush under a lease;
//! - `flush`: jp-flush, the completed minutes of the sealed segments into Parquet files;
//! - `archive`: where each minute goes, retention, and the archive as SQL views;
//! - `query`: `journal-parquet query` over the archive (and the buffer, with `--live`);
//! - `schema`: the columns, in the buffer, in Parquet and as journalctl's JSON;
//! - `web`: `journal-parquet web`, the read-only console over the archive and the summary;
//! - `config`: the settings from flags, the config file and the environment; the man pages;
//! - `sys`: files, users, DuckDB's errors, systemd, metrics files, fault points.
//!
//! `sys` and `schema` import no other room. One import still runs back up, until it moves:
//! `config::Settings` builds the `Buffer`, `Source`, `Filter` and `Retention` it configures.

pub mod archive;
pub mod buffer;
pub mod collector;
pub mod config;
pub mod flush;
pub mod journal;
pub mod query;
pub mod schema;
pub mod sys;
pub mod web;

// The paths these modules had before they moved into their rooms, for code outside the crate.
pub use buffer::{handoff, segment};
pub use journal::{filter, position, streams};
pub use schema::columns as row;

use std::process::ExitCode;

/// `journal-parquet`: the collector, or the subcommand given.
pub fn journal_parquet_main(args: config::CollectorArgs) -> ExitCode {
    match &args.command {
        Some(config::Command::Query(query)) => {
            exit_with("journal-parquet query", || query::run(query))
        }
        Some(config::Command::Web(web)) => exit_with("journal-parquet web", || web::run(web)),
        None => exit_with("journal-parquet", || collector::run(&args)),
    }
}

/// Runs `body` and turns its error into the documented exit code, logging the whole error chain
/// once: 1 failure, 75 the buffer could not be had in time, 77 started as root where only the
/// owner of the state may run (and it could not become that user), 78 bad configuration. (Usage
/// errors exit 2 from argument parsing, before this runs.)
pub fn exit_with(identifier: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    // The journal can hold secrets: nothing this tool creates (buffer, cursor, Parquet files,
    // directories) is readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.downcast_ref::<handoff::Unavailable>().is_some() {
                75
            } else if err.downcast_ref::<sys::user::WrongUser>().is_some() {
                77
            } else {
                config::exit_code_for(&err)
            };
            if log::max_level() == log::LevelFilter::Off {
                // Logging was never set up (the config was rejected): plain stderr.
                eprintln!("{identifier}: error: {}", sys::duckdb::chain_text(&err));
            } else {
                log::error!("{}", sys::duckdb::chain_text(&err));
            }
            ExitCode::from(code)
        }
    }
}
