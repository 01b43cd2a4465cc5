//! jp-flush: the completed minutes of the sealed segments → one Parquet file per host and minute,
//! atomically, exactly once.
//!
//! jp-flush asks the collector to seal its segment (`handoff`), attaches every sealed segment to
//! one DuckDB of its own, and for each (host, minute) that ends before the collector's watermark
//! writes the rows of every segment holding that minute to a temporary file beside the final one
//! (a name that does not end in `.parquet`), fsyncs it, renames it into place, fsyncs the
//! directory, and only then deletes those rows from the segments. A segment left empty is
//! removed. A crash between the rename and the deletes leaves rows that are already in the file:
//! the next run merges them into the file again, dropping duplicates by `cursor`, so every entry
//! ends up in exactly one file once.
//!
//! One stage a file, in the order a run goes through them: `attach` (the sealed segments, a
//! window at a time), `export` (each minute to its file), `salvage` (what stands at a minute's
//! path: a file to merge, or a damaged one), `retain` (retention after the export), `report`
//! (what the run did, and its metrics file).

use std::time::Instant;

use anyhow::Result;

use crate::archive::layout::MINUTE_USEC;
use crate::buffer::handoff::{self, Lease};
use crate::buffer::Buffer;
use crate::config::{FlushArgs, Settings};
use crate::sys::duckdb::chain_text;
use crate::sys::service;

mod attach;
mod compact;
mod export;
mod fresh;
mod report;
mod retain;
mod salvage;

pub use attach::Attached;
use attach::ATTACH_AT_ONCE;
pub use compact::{Budget, Compacted, UPLOAD_COMPACTED_DIR};
pub use export::export;
use report::write_metrics;
pub use report::Report;
use retain::apply_retention;
pub use retain::{UPLOAD_ENABLED, UPLOAD_LAST_SUCCESS};

/// Exports the segments `lease` holds (see `export_lease`), compacts the days due (jp-flush
/// only: `compaction` None for the collector's own flushes), then applies retention to the tree.
fn flush_lease(
    settings: &Settings,
    buffer: &Buffer,
    lease: &Lease,
    all: bool,
    compaction: Option<Budget>,
) -> Result<Report> {
    let mut report = export_lease(settings, buffer, lease, all)?;
    if let Some(budget) = compaction {
        compact::clear_work_dir(&settings.data_dir)?;
        report.compacted = compact::compact(settings, budget, report.keep_from)?;
    }
    report.retention = apply_retention(settings, report.keep_from)?;
    Ok(report)
}

/// Exports the segments `lease` holds: every completed minute (all minutes with `all`), by the
/// watermark of the newest sealed segment, `ATTACH_AT_ONCE` segments at a time, oldest first.
fn export_lease(settings: &Settings, buffer: &Buffer, lease: &Lease, all: bool) -> Result<Report> {
    let sealed = lease.sealed(buffer)?;
    let Some(&newest) = sealed.last() else {
        return Ok(Report::default());
    };
    let cutoff = if all {
        None
    } else {
        let state = Attached::open(settings, buffer, &[newest])?.collector_state()?;
        match state.and_then(|s| s.watermark_usec) {
            // Minutes that end at or before the watermark are complete.
            Some(w) => Some(w - w.rem_euclid(MINUTE_USEC)),
            // Nothing is known to be complete: retention keeps every file.
            None => {
                return Ok(Report {
                    keep_from: Some(i64::MIN),
                    ..Report::default()
                })
            }
        }
    };
    let mut report = Report {
        keep_from: cutoff,
        ..Report::default()
    };
    for window in sealed.chunks(ATTACH_AT_ONCE) {
        let mut attached = Attached::open(settings, buffer, window)?;
        report.add(export(&mut attached, settings, cutoff)?);
    }
    Ok(report)
}

/// The collector's `--flush-every`: exports the segments below `open`, which it has just
/// sealed, unless a jp-flush is at work (it does the same).
pub fn flush_below(settings: &Settings, open: u64, all: bool) -> Result<Report> {
    let buffer = settings.buffer();
    match Lease::below(&settings.state_dir, open)? {
        Some(lease) => flush_lease(settings, &buffer, &lease, all, None),
        None => Ok(Report::default()),
    }
}

pub fn run(args: &FlushArgs) -> Result<()> {
    let settings = Settings::resolve(&args.common)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    service::init_logging(settings.log_level, "jp-flush");
    crate::sys::user::become_owner(&[&settings.state_dir, &settings.data_dir], "jp-flush")?;
    let started = Instant::now();
    if args.compact && settings.compact_after.is_none() {
        return Err(crate::config::BadConfig(format!(
            "jp-flush --compact: compact_after is not set ({}); set it, e.g. compact_after = \"7d\"",
            settings
                .config_file
                .as_ref()
                .map_or("no config file".into(), |f| f.display().to_string())
        ))
        .into());
    }
    let budget = match args.compact {
        true => Budget::All,
        false => Budget::Bounded,
    };
    let result = flush_once(&settings, args.all, budget, args.rebuild_summary);
    write_metrics(&settings, &result, started.elapsed());
    update_catalogue(&settings);
    result.map(drop)
}

/// Writes `DATA/journal.duckdb` when it is missing or outdated (`views::ensure_catalogue`). A
/// convenience beside the archive: a failure is logged, never the run's.
fn update_catalogue(settings: &Settings) {
    if !settings.data_dir.exists() {
        return;
    }
    match crate::archive::views::ensure_catalogue(&settings.data_dir) {
        Ok(crate::archive::views::Catalogue::Written) => {
            log::info!(
                "wrote the catalogue {}",
                settings
                    .data_dir
                    .join(crate::archive::views::CATALOGUE_FILE)
                    .display()
            )
        }
        Ok(crate::archive::views::Catalogue::Busy) => log::debug!(
            "the catalogue is held open for writing by another process; checked again next run"
        ),
        Ok(crate::archive::views::Catalogue::UpToDate) => {}
        Ok(crate::archive::views::Catalogue::TooLarge) => log::debug!(
            "the catalogue is left as it is: the archive holds more than {} minute files, and \
             its views would read every footer (about 38 KiB of memory each); \
             journal-parquet query reads the archive without",
            crate::archive::views::CATALOGUE_MAX_FILES
        ),
        Ok(crate::archive::views::Catalogue::NothingYet) => {
            log::debug!(
                "no minute file in the archive yet: the catalogue is written after the first"
            )
        }
        Err(e) => log::warn!("{}", chain_text(&e)),
    }
}

/// One jp-flush run: seal, export, compact, apply retention.
fn flush_once(settings: &Settings, all: bool, budget: Budget, rebuild: bool) -> Result<Report> {
    let buffer = settings.buffer();
    if !buffer.dir().exists() {
        log::debug!(
            "nothing to flush: there is no buffer at {}",
            buffer.dir().display()
        );
        return Ok(Report {
            retention: apply_retention(settings, None)?,
            ..Report::default()
        });
    }
    let started = Instant::now();
    let lease = handoff::acquire(&settings.state_dir, &buffer, settings.handoff_timeout)?;
    let report = flush_lease(settings, &buffer, &lease, all, Some(budget))?;
    if rebuild {
        // Under the lease: no run writes the old summary meanwhile.
        let minutes = crate::archive::summary::rebuild(settings)?;
        log::info!("counted {minutes} host-minute groups of the archive into the summary");
    }
    log::debug!(
        "sealed in {:.1} ms; wrote {} files ({} merged), {} entries, removed {} segments, in \
         {:.1} ms",
        lease.waited.as_secs_f64() * 1e3,
        report.files_written,
        report.files_merged,
        report.rows_exported,
        report.segments_removed,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(report)
}
