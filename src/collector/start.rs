//! Starting and stopping the collector: the journal opened and positioned, the writer on its
//! segment, systemd told; at the end, what was read committed and the figures logged.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::batch::Batch;
use super::reader::{Limits, Reader};
use super::resume;
use super::seals::Seals;
use super::status::Status;
use super::{log_flush, progress, Collector};
use crate::buffer::handoff::Listener;
use crate::buffer::segment::CollectorState;
use crate::config::{CollectorArgs, Settings};
use crate::journal::position::{FirstStart, Position};
use crate::journal::streams::Streams;
use crate::journal::Source;
use crate::sys::service;

/// Opens the journal source (which must exist; an empty one is only warned about).
fn open_journal(settings: &Settings) -> Result<Streams> {
    if let Source::Directory(dir) = &settings.source {
        if !dir.is_dir() {
            bail!(
                "failed to read journal directory {}: not a directory",
                dir.display()
            );
        }
    }
    let mut journal = Streams::open(&settings.source)?;
    journal.set_reopen_every(settings.journal_reopen_entries);
    if !journal.has_files() {
        log::warn!(
            "nothing readable in {} (yet): check that the directory holds .journal files, or \
             that this user may read the journal (group systemd-journal)",
            settings.source
        );
    }
    Ok(journal)
}

/// Sets the collector up under the state directory's lock, ready to read; READY=1 is sent.
pub(super) fn start(args: &CollectorArgs, settings: Settings) -> Result<(Collector, Listener)> {
    let buffer = settings.buffer();
    let state_file = settings.state_file();
    let found = resume::find_open_segment(&settings, &buffer)?;
    let mut journal = open_journal(&settings)?;
    let start = resume::start_point(&found, &buffer, &state_file)?;
    let stored = start.stored.as_ref();
    let mut gaps = stored.map_or(0, |s| s.gaps_total);
    let fresh = journal.position_at(start.position.as_ref(), args.first_start(), &mut gaps)?;
    let state = CollectorState {
        position: (fresh.clone().or(start.position.clone())).unwrap_or(Position::Head),
        watermark_usec: stored.and_then(|s| s.watermark_usec),
        gaps_total: gaps,
    };
    let writer = resume::open_writer(found, start.reread, &buffer, &state_file, state)?;
    for (path, _) in &start.rereads {
        std::fs::remove_file(path)
            .with_context(|| format!("failed to remove {}", path.display()))?;
    }
    let filter = settings.filter.clone();
    let mut collector = Collector {
        limits: Limits {
            entries: settings.max_batch_entries,
            bytes: settings.max_batch_bytes,
        },
        settings,
        reader: Reader::new(journal, filter),
        writer,
        batch: Batch::new(crate::archive::layout::local_host_dir()),
        pending_since: None,
        caught_up_at: None,
        status: Status::default(),
        seals: Seals::Idle,
        longest_stall: Duration::ZERO,
        background_flush: None,
        progress: None,
        metrics_written: Instant::now(),
    };
    if fresh.is_some() || start.reread {
        collector.commit_now()?;
    }
    let listener = Listener::bind(&collector.settings.handoff_socket())?;
    log::info!(
        "reading {} into {} from {}",
        collector.reader.journal.source(),
        buffer.dir().display(),
        describe_start(start.position.as_ref(), args.first_start())
    );
    collector.progress = progress::Progress::on_terminal(collector.reader.journal.backlog(), 0);
    collector.write_metrics();
    service::notify_ready(&collector.figures().text());
    collector.status.sent();
    Ok((collector, listener))
}

/// Where reading starts, for the start line of the log.
fn describe_start(position: Option<&Position>, first: FirstStart) -> String {
    match (position, first) {
        (Some(_), _) => "the saved position".to_owned(),
        (None, FirstStart::Head) => "the head (first start)".to_owned(),
        (None, FirstStart::Since(usec)) => format!(
            "the first entry at or after {} (first start)",
            chrono::DateTime::from_timestamp_micros(usec as i64).unwrap_or_default()
        ),
        (None, FirstStart::Tail) => "the tail (first start)".to_owned(),
    }
}

impl Collector {
    /// After the event loop: tells systemd, commits what was read (a commit in flight finishes
    /// whatever happened), writes the metrics a last time and logs the figures.
    pub(super) fn stop(mut self, result: Result<()>) -> Result<()> {
        let stop_status = format!("stopping: {}", self.figures().text());
        service::notify_stopping(&stop_status);
        let result = result.and_then(|()| self.commit_now());
        self.write_metrics();
        if let Some(flush) = self.background_flush.take() {
            log_flush(flush);
        }
        let Collector { writer, reader, .. } = self;
        let committed_total = writer.committed_total;
        let gaps_total = writer.state().gaps_total;
        let closed = writer.close();
        result?;
        closed?;
        log::info!(
            "stopped after committing {committed_total} entries ({} left out by the filters, \
             {gaps_total} gaps found so far, {} entries with a corrupt data object this run)",
            reader.filtered,
            reader.corrupt_entries
        );
        Ok(())
    }
}
