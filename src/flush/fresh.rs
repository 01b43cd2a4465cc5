//! Minutes that have no file yet and whose rows cannot repeat (every segment holding them read
//! the journal once) are written in one pass: one `COPY … PARTITION_BY` over the buffer writes
//! each into a file of its own, which is then made durable and renamed into place. Written one
//! query a minute, each minute paid a query plan and a scan of its segments: a fleet's
//! thousands of quiet minutes went at about 290 files/s.
//!
//! The files are written under `DATA/.jp-flush-parts/` with the extension `.tmp`, so that no
//! reader globbing `*.parquet` sees them; a crash leaves them there and the next run removes
//! them (the rows are still in the buffer). A minute whose rows DuckDB split over two files (it
//! closes and reopens a partition's file when too many are open at once) is left for the
//! one-minute path.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::Connection;

use super::export::{copy_options, finish_file, select_list, Minute, Placed};
use crate::archive::layout::minute_file;
use crate::config::Settings;
use crate::sys::duckdb::quote;
use crate::sys::fault;
use crate::sys::files::make_private_dir;

/// The directory of the one-pass output, under DATA (a rename must not cross file systems).
pub(super) fn parts_dir(settings: &Settings) -> PathBuf {
    settings
        .data_dir
        .join(crate::archive::layout::FRESH_WORK_DIR)
}

/// A minute goes in the one pass only up to this many rows: DuckDB holds a partition's rows in
/// memory until it writes them (a 3-million-row minute ran out of memory at 192MB), where the
/// one-minute path streams.
pub(super) const MINUTE_ROWS_AT_MOST: u64 = 5_000;

/// The rows one pass takes at most; more minutes take more passes.
const PASS_ROWS_AT_MOST: u64 = 50_000;

/// Writes the minutes `chosen` (indexes into `minutes`) a pass at a time and puts each in
/// place. Returns those put in place; the others (a failed pass, a minute DuckDB split) are left
/// for the one-minute path, and a failure is logged, not returned: that path meets it again if
/// it is real (a full disk), and gets past it if it was this pass's (memory).
pub(super) fn export_fresh(
    conn: &Connection,
    settings: &Settings,
    minutes: &[Minute],
    chosen: &[usize],
) -> Vec<Placed> {
    let mut placed = Vec::new();
    // A crash in a pass leaves its files: gone now, whether or not a pass follows.
    if let Err(e) = remove_parts(&parts_dir(settings)) {
        log::warn!("{}", crate::sys::duckdb::chain_text(&e));
    }
    let mut pass: Vec<usize> = Vec::new();
    let mut rows = 0;
    for (n, &k) in chosen.iter().enumerate() {
        pass.push(k);
        rows += minutes[k].rows;
        if rows < PASS_ROWS_AT_MOST && n + 1 < chosen.len() {
            continue;
        }
        let result = one_pass(conn, settings, minutes, &pass, &mut placed);
        if let Err(e) = result {
            log::debug!(
                "{}: leaving these minutes to be written one at a time",
                crate::sys::duckdb::chain_text(&e)
            );
            return placed;
        }
        pass.clear();
        rows = 0;
    }
    placed
}

/// One pass: one COPY, then the files put in place (appended to `placed` as they are).
fn one_pass(
    conn: &Connection,
    settings: &Settings,
    minutes: &[Minute],
    chosen: &[usize],
    placed: &mut Vec<Placed>,
) -> Result<()> {
    let parts = parts_dir(settings);
    make_private_dir(&settings.data_dir)?;
    remove_parts(&parts)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&parts)
        .with_context(|| format!("failed to create {}", parts.display()))?;
    let result = write_and_place(conn, settings, minutes, chosen, &parts, placed);
    // What was not put in place goes; its rows stay in the buffer.
    let removed = remove_parts(&parts);
    result?;
    removed
}

fn remove_parts(parts: &Path) -> Result<()> {
    match fs::remove_dir_all(parts) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove {}", parts.display()))
        }
        _ => Ok(()),
    }
}

fn write_and_place(
    conn: &Connection,
    settings: &Settings,
    minutes: &[Minute],
    chosen: &[usize],
    parts: &Path,
    placed: &mut Vec<Placed>,
) -> Result<()> {
    // The minutes to write, each with its partition number (its index in `minutes`).
    conn.execute_batch(
        "CREATE OR REPLACE TEMP TABLE jp_fresh (fh VARCHAR, fm TIMESTAMP, fk BIGINT)",
    )?;
    for chunk in chosen.chunks(2000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&k| {
                let m = &minutes[k];
                format!(
                    "({}, make_timestamp({}), {k})",
                    quote(&m.host_dir),
                    m.minute
                )
            })
            .collect();
        conn.execute_batch(&format!(
            "INSERT INTO jp_fresh VALUES {}",
            values.join(", ")
        ))?;
    }
    let copy = format!(
        "COPY (SELECT {}, fk FROM journal_logs JOIN jp_fresh \
         ON host_dir = fh AND minute_key = fm) TO {} ({}, PARTITION_BY (fk), \
         FILE_EXTENSION 'tmp', OVERWRITE_OR_IGNORE)",
        select_list(),
        quote(&parts.to_string_lossy()),
        copy_options(settings)
    );
    let written = fault::point("flush-minute-before-copy")
        .map_err(anyhow::Error::from)
        .and_then(|()| conn.execute(&copy, []).map_err(anyhow::Error::from))
        .with_context(|| format!("failed to write the minute files under {}", parts.display()));
    let _ = conn.execute_batch("DROP TABLE IF EXISTS jp_fresh");
    written?;
    // One file a minute; a minute DuckDB split over two files is left for the one-minute path.
    let files: Vec<(usize, PathBuf)> = partition_files(parts)?
        .into_iter()
        .filter(|(k, _)| *k < minutes.len())
        .filter_map(|(k, files)| match <[PathBuf; 1]>::try_from(files) {
            Ok([file]) => Some((k, file)),
            Err(_) => None,
        })
        .collect();
    make_durable(parts, &files)?;
    for (k, file) in files {
        let m = &minutes[k];
        let final_path = minute_file(&settings.data_dir, &m.host_dir, m.minute);
        let dir = final_path.parent().expect("a minute file has a directory");
        make_private_dir(dir)?;
        fault::point("flush-minute-before-rename")?;
        fs::rename(&file, &final_path)
            .with_context(|| format!("failed to put {} in place", final_path.display()))?;
        placed.push(Placed {
            minute: k,
            path: final_path,
            merged: false,
            rows: 0,
        });
    }
    Ok(())
}

/// Gives the files the archive's mode and makes their content durable before any is renamed
/// into place. Many files take one `syncfs` of the data's file system instead of an fsync each
/// (measured: 5,784 fsyncs were most of a 7.6 s run); a few take an fsync each, so as not to
/// wait for what other programs wrote to the file system.
fn make_durable(parts: &Path, files: &[(usize, PathBuf)]) -> Result<()> {
    const SYNCFS_FROM: usize = 64;
    for (_, file) in files {
        finish_file(file, files.len() < SYNCFS_FROM)?;
    }
    if files.len() >= SYNCFS_FROM {
        let dir =
            File::open(parts).with_context(|| format!("failed to open {}", parts.display()))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .with_context(|| format!("failed to sync the file system of {}", parts.display()))?;
    }
    Ok(())
}

/// The files DuckDB wrote, by partition number (`fk=N/…`).
fn partition_files(parts: &Path) -> Result<BTreeMap<usize, Vec<PathBuf>>> {
    let mut out: BTreeMap<usize, Vec<PathBuf>> = BTreeMap::new();
    let context = || format!("failed to list {}", parts.display());
    for entry in fs::read_dir(parts).with_context(context)? {
        let entry = entry.with_context(context)?;
        let name = entry.file_name();
        let Some(k) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fk="))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let files = fs::read_dir(entry.path())
            .with_context(context)?
            .map(|f| f.map(|f| f.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(context)?;
        out.insert(k, files);
    }
    Ok(out)
}
