//! journal-parquet: archives the systemd journal as Parquet, exactly once, every field intact.
//!
//! The collector (`journal-parquet`, `collector`) reads the journal through libsystemd into a
//! buffer of DuckDB segments (`buffer`, `segment`), committing its journal position with the
//! rows; `jp-flush` has it seal its segment (`handoff`) and writes the completed minutes of the
//! sealed segments as Parquet files (`flush`).

pub mod buffer;
pub mod collector;
pub mod config;
pub mod docs;
pub mod filter;
pub mod flush;
pub mod handoff;
pub mod journal;
pub mod layout;
pub mod metrics;
pub mod position;
pub mod query;
pub mod retention;
pub mod row;
pub mod segment;
pub mod service;
pub mod streams;
pub mod sys;
pub mod views;

use std::process::ExitCode;

/// `journal-parquet`: the collector, or the subcommand given.
pub fn journal_parquet_main(args: config::CollectorArgs) -> ExitCode {
    match &args.command {
        Some(config::Command::Query(query)) => {
            exit_with("journal-parquet query", || query::run(query))
        }
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
