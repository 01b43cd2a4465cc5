//! `--live`: the rows the collector has committed and jp-flush has not written yet.

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::archive::files::Scope;
use crate::archive::layout::minute_file;
use crate::buffer::handoff::{self, Lease};
use crate::config::Settings;
use crate::schema::columns::cast_columns;
use crate::sys::duckdb::quote;

/// `--live`: has the collector seal its segment, as jp-flush does (it goes on reading at once),
/// attaches the sealed segments read-only, and gives the SELECT of their rows that `journal`
/// adds. The lease keeps
/// jp-flush from taking those segments while the query reads them; a jp-flush that starts
/// meanwhile waits, and exits 75 for the timer to retry if the query outlasts
/// `handoff_timeout_sec`.
pub(super) fn attach_buffer(
    conn: &Connection,
    settings: &Settings,
    scope: &Scope,
) -> Result<Option<(Lease, String)>> {
    let buffer = settings.buffer();
    if !buffer.dir().exists() {
        return Ok(None);
    }
    let lease = handoff::acquire(&settings.state_dir, &buffer, settings.handoff_timeout)?;
    let mut parts = Vec::new();
    for no in lease.sealed(&buffer)? {
        let alias = format!("s{no}");
        let path = buffer.segment_path(no);
        conn.execute_batch(&format!(
            "ATTACH {} AS {alias} (READ_ONLY)",
            quote(&path.to_string_lossy())
        ))
        .with_context(|| format!("failed to read the buffer's segment {}", path.display()))?;
        parts.push(format!(
            "SELECT {} FROM {alias}.journal_logs",
            cast_columns(true)
        ));
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let mut filter: Vec<String> = scope.row_filter().into_iter().collect();
    if !scope.hosts.is_empty() {
        let hosts: Vec<String> = scope.hosts.iter().map(|h| quote(h)).collect();
        filter.push(format!("host_dir IN ({})", hosts.join(", ")));
    }
    let filter = match filter.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", filter.join(" AND ")),
    };
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW buffered AS SELECT * FROM ({}){filter}",
        parts.join(" UNION ALL ")
    ))
    .context("failed to read the buffer")?;
    // A row can be in the buffer and in its minute file (jp-flush stopped between writing the
    // file and deleting the rows): the file's copy counts, as jp-flush's next merge decides.
    let minutes: Vec<(String, i64)> = conn
        .prepare("SELECT DISTINCT host_dir, epoch_us(minute_key) FROM buffered")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<duckdb::Result<_>>()
        .context("failed to read the buffer")?;
    let written: Vec<String> = minutes
        .iter()
        .map(|(host, minute)| minute_file(&settings.data_dir, host, *minute))
        .filter(|p| p.exists())
        .map(|p| quote(&p.to_string_lossy()))
        .collect();
    let new_rows = match written.is_empty() {
        true => "SELECT * EXCLUDE (host_dir) FROM buffered".to_owned(),
        false => format!(
            "SELECT * EXCLUDE (host_dir) FROM buffered WHERE cursor NOT IN \
             (SELECT cursor FROM read_parquet([{}]))",
            written.join(", ")
        ),
    };
    Ok(Some((lease, new_rows)))
}
