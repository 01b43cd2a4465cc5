//! `journal-parquet query [SQL]`: SQL over the archive in an embedded DuckDB, with the views of
//! `views` over the minute files that `--since`, `--until` and `--host` leave (pruned by path,
//! before any file is opened), and with `--live` the rows not flushed yet.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use duckdb::arrow::array::Array;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use duckdb::{AccessMode, Connection};

use crate::archive::layout::{host_dir, minute_file, MINUTE_USEC};
use crate::archive::views::{arrange, create_views, journal_select, quote, sql_error, Files};
use crate::buffer::handoff::{self, Lease};
use crate::config::{QueryArgs, QueryFormat, Settings, Usage};
use crate::schema::row::cast_columns;

/// Where the packaged service keeps its state (`StateDirectory=journal-parquet`): an operator's
/// shell has no `$STATE_DIRECTORY`, and `./state` would be the wrong archive.
const PACKAGED_STATE_DIR: &str = "/var/lib/journal-parquet";

/// Which minute files a query reads: the hosts (directory names; empty for all) and the minutes
/// that overlap `[since, until)` (µs).
#[derive(Debug, Default, Clone)]
pub struct Scope {
    pub hosts: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Scope {
    /// The rows' own filter, for the minutes at the edges of the range.
    fn row_filter(&self) -> Option<String> {
        let mut terms = Vec::new();
        if let Some(s) = self.since {
            terms.push(format!("timestamp >= make_timestamp({s})"));
        }
        if let Some(u) = self.until {
            terms.push(format!("timestamp < make_timestamp({u})"));
        }
        (!terms.is_empty()).then(|| terms.join(" AND "))
    }

    /// Whether `[first_usec, end_usec)` (a year, month, day or minute) overlaps the range.
    fn overlaps(&self, first_usec: i64, end_usec: i64) -> bool {
        self.since.is_none_or(|s| end_usec > s) && self.until.is_none_or(|u| first_usec < u)
    }
}

/// The µs of 00:00 UTC on y-m-d, None for no such day.
fn day_usec(y: i32, m: u32, d: u32) -> Option<i64> {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// The entries of `dir` whose names parse as a number of `width` digits, sorted.
fn numbered(dir: &Path, width: usize) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == width && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = name.parse() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The minute files under `data_dir` in `scope`, oldest first within each host. Whole years,
/// months and days outside the range are skipped by their directory names, unopened.
pub fn minute_files(data_dir: &Path, scope: &Scope) -> Result<Vec<PathBuf>> {
    let mut hosts: Vec<PathBuf> = Vec::new();
    let listing = std::fs::read_dir(data_dir)
        .with_context(|| format!("failed to list the archive {}", data_dir.display()))?;
    for e in listing {
        let e = e.with_context(|| format!("failed to list {}", data_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = scope.hosts.is_empty() || scope.hosts.contains(&name);
        if wanted && !name.starts_with('.') && e.path().is_dir() {
            hosts.push(e.path());
        }
    }
    hosts.sort();
    let mut files = Vec::new();
    for host in hosts {
        for (y, ydir) in numbered(&host, 4)? {
            let y = y as i32;
            let (Some(a), Some(b)) = (day_usec(y, 1, 1), day_usec(y + 1, 1, 1)) else {
                continue;
            };
            if !scope.overlaps(a, b) {
                continue;
            }
            for (m, mdir) in numbered(&ydir, 2)? {
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let (Some(a), Some(b)) = (day_usec(y, m, 1), day_usec(next.0, next.1, 1)) else {
                    continue;
                };
                if !scope.overlaps(a, b) {
                    continue;
                }
                for (d, ddir) in numbered(&mdir, 2)? {
                    let Some(a) = day_usec(y, m, d) else { continue };
                    if !scope.overlaps(a, a + 1440 * MINUTE_USEC) {
                        continue;
                    }
                    let prefix = format!("{y:04}{m:02}{d:02}-");
                    let mut day: Vec<(i64, PathBuf)> = Vec::new();
                    for e in std::fs::read_dir(&ddir)
                        .with_context(|| format!("failed to list {}", ddir.display()))?
                    {
                        let e = e.with_context(|| format!("failed to list {}", ddir.display()))?;
                        let name = e.file_name();
                        let Some(hhmm) = name
                            .to_str()
                            .and_then(|n| n.strip_prefix(&prefix))
                            .and_then(|n| n.strip_suffix(".parquet"))
                            .filter(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
                        else {
                            continue;
                        };
                        let (h, min): (i64, i64) = (hhmm[..2].parse()?, hhmm[2..].parse()?);
                        let start = a + (h * 60 + min) * MINUTE_USEC;
                        if scope.overlaps(start, start + MINUTE_USEC) {
                            day.push((start, e.path()));
                        }
                    }
                    day.sort();
                    files.extend(day.into_iter().map(|(_, p)| p));
                }
            }
        }
    }
    Ok(files)
}

/// Where the SQL came from, for error messages.
enum SqlSource {
    Argument,
    Stdin,
}

impl SqlSource {
    fn describe(&self) -> &'static str {
        match self {
            SqlSource::Argument => "the SQL given as argument",
            SqlSource::Stdin => "the SQL read from standard input",
        }
    }
}

/// The settings of a query: as the binaries resolve them, except that outside the service the
/// packaged state directory (and its data/) is the default, when it exists.
fn settings(args: &QueryArgs) -> Result<Settings> {
    let mut common = args.common.clone();
    let packaged = Path::new(PACKAGED_STATE_DIR);
    if std::env::var_os("STATE_DIRECTORY").is_none() && packaged.is_dir() {
        // Only what neither the flags nor the config file set: those resolve to the
        // working-directory defaults.
        let resolved = Settings::resolve(&common)?;
        if resolved.state_dir == Path::new("state") {
            common.state_dir = Some(packaged.to_path_buf());
        }
        if resolved.data_dir == Path::new("data") {
            common.data_dir = Some(packaged.join("data"));
        }
    }
    Settings::resolve(&common)
}

pub fn run(args: &QueryArgs) -> Result<()> {
    let settings = settings(args)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    // Without --live, the state directory is not read: its owner has no say.
    let dirs: &[&Path] = match args.live {
        true => &[&settings.state_dir, &settings.data_dir],
        false => &[&settings.data_dir],
    };
    crate::sys::user::become_owner(dirs, "journal-parquet query")?;
    let (sql, source) = match args.sql.as_deref() {
        Some(text) if text != "-" => (text.to_owned(), SqlSource::Argument),
        _ => {
            if std::io::stdin().is_terminal() {
                return Err(
                    Usage("no SQL: give it as the argument, or on standard input".into()).into(),
                );
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("failed to read the SQL from standard input")?;
            (text, SqlSource::Stdin)
        }
    };
    let sql = sql.trim().trim_end_matches(';').trim().to_owned();
    if sql.is_empty() {
        return Err(Usage(format!("{} is empty", source.describe())).into());
    }
    let scope = Scope {
        hosts: args
            .hosts
            .iter()
            .map(|h| {
                // A host name as the entries give it, or its directory name as it is.
                if settings.data_dir.join(h).is_dir() {
                    h.clone()
                } else {
                    host_dir(h.as_bytes())
                }
            })
            .collect(),
        since: args.since.map(|u| u as i64),
        until: args.until.map(|u| u as i64),
    };
    if let (Some(s), Some(u)) = (scope.since, scope.until) {
        if u <= s {
            return Err(Usage("--until must be later than --since".into()).into());
        }
    }
    let mut files = if settings.data_dir.exists() {
        minute_files(&settings.data_dir, &scope)?
    } else if args.live {
        Vec::new()
    } else {
        bail!(
            "there is no archive at {} (set --data-dir, or data_dir in the config file)",
            settings.data_dir.display()
        );
    };

    let config = crate::sys::duckdb::base_config()?.access_mode(AccessMode::ReadWrite)?;
    let conn = Connection::open_in_memory_with_flags(config).context("failed to start DuckDB")?;
    // A private scratch directory: DuckDB spills there beyond the memory limit instead of
    // failing, and COPY writes the result there.
    let scratch =
        std::env::temp_dir().join(format!("journal-parquet-query-{}", std::process::id()));
    // Left by an earlier query of the same process ID that was killed.
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&scratch)
        .with_context(|| format!("failed to create {}", scratch.display()))?;
    let scratch = RemoveOnDrop(scratch);
    conn.execute_batch(&format!(
        "SET temp_directory = {}; SET memory_limit = {};",
        quote(&scratch.0.join("spill").to_string_lossy()),
        quote(&settings.flush_memory_limit)
    ))
    .context("failed to configure DuckDB")?;

    let live = match args.live {
        true => attach_buffer(&conn, &settings, &scope)?,
        false => None,
    };
    lock_down(&conn, &settings, &scratch.0, live.is_some())?;
    loop {
        let result = arrange(&conn, &mut files)
            .and_then(|unify| {
                let mut journal = journal_select(&Files::List(&files, unify));
                if let Some(filter) = scope.row_filter() {
                    journal = format!("SELECT * FROM ({journal}) WHERE {filter}");
                }
                if let Some((_lease, buffered)) = &live {
                    journal = format!("{journal} UNION ALL {buffered}");
                }
                conn.execute_batch(&create_views(&journal, true))
                    .map_err(sql_error)
            })
            .context("failed to set up the views journal and entries")
            .and_then(|()| match args.format {
                QueryFormat::Table => print_table(&conn, &sql),
                format => copy_out(&conn, &sql, format, &scratch.0),
            });
        let Err(e) = result else { return Ok(()) };
        // A minute file whose content DuckDB finds invalid (damaged after jp-flush wrote it, and
        // not found by a merge yet) is left out, with a warning: the rest of the archive still
        // answers. Any other failure (the disk, memory, open files) fails the query: an answer
        // with files silently missing would look whole. DuckDB names the file in quotes on the
        // first line; later lines quote the SQL.
        let text = crate::sys::duckdb::chain_text(&e);
        let text = text.lines().next().unwrap_or_default();
        let damaged = files
            .iter()
            .position(|f| text.contains(&quote(&f.to_string_lossy())))
            .filter(|&i| {
                crate::sys::duckdb::says_parquet_invalid(&e)
                    && crate::sys::files::read_through(&files[i]).is_ok()
            });
        match damaged {
            Some(i) => {
                let file = files.remove(i);
                eprintln!(
                    "journal-parquet query: warning: left out {}, which cannot be read: {}",
                    file.display(),
                    text
                );
            }
            None => return Err(e.context(format!("the query failed ({})", source.describe()))),
        }
    }
}

/// Once the views exist, the user's SQL may read the archive and nothing else: no other file
/// (`read_text('/etc/shadow')` as root), no writes (`COPY … TO '/etc/…'`), no extensions, and no
/// way to undo that (`lock_configuration`). The result goes through the scratch directory, and
/// `--live` reads the sealed segments it attached.
fn lock_down(conn: &Connection, settings: &Settings, scratch: &Path, live: bool) -> Result<()> {
    let buffer = settings.buffer();
    let mut dirs = vec![settings.data_dir.as_path(), scratch];
    if live {
        dirs.push(buffer.dir());
    }
    // Each as given (the views name files under it) and as resolved.
    let mut allowed = Vec::new();
    for d in dirs {
        let resolved = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
        for p in [d.to_path_buf(), resolved] {
            let text = quote(&format!("{}/", p.to_string_lossy().trim_end_matches('/')));
            if !allowed.contains(&text) {
                allowed.push(text);
            }
        }
    }
    conn.execute_batch(&format!(
        "SET allowed_directories = [{}];
         SET enable_external_access = false;
         SET lock_configuration = true;",
        allowed.join(", ")
    ))
    .map_err(crate::sys::duckdb::sql_error)
    .context("failed to confine DuckDB to the archive")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CSV, JSON lines or Parquet on standard output, written by DuckDB's COPY into a private
/// scratch file first: DuckDB opens a COPY target with O_TRUNC, which would wipe the file that
/// `>>` appends standard output to.
fn copy_out(conn: &Connection, sql: &str, format: QueryFormat, scratch: &Path) -> Result<()> {
    let options = match format {
        QueryFormat::Csv => "FORMAT csv, HEADER true",
        QueryFormat::Json => "FORMAT json",
        QueryFormat::Parquet => "FORMAT parquet, COMPRESSION zstd",
        QueryFormat::Table => unreachable!("printed by print_table"),
    };
    if format == QueryFormat::Parquet && std::io::stdout().is_terminal() {
        return Err(Usage("--format parquet writes binary: redirect it to a file".into()).into());
    }
    let result = scratch.join("result");
    conn.execute_batch(&format!(
        "COPY ({sql}) TO {} ({options})",
        quote(&result.to_string_lossy())
    ))
    .map_err(sql_error)?;
    let mut file = std::fs::File::open(&result)
        .with_context(|| format!("failed to read the result {}", result.display()))?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())
        .context("failed to write the result to standard output")?;
    Ok(())
}

/// A plain text table: a header, a rule, one line a row, columns padded to their widest value.
fn print_table(conn: &Connection, sql: &str) -> Result<()> {
    let mut statement = conn.prepare(sql).map_err(sql_error)?;
    let batches: Vec<RecordBatch> = statement.query_arrow([]).map_err(sql_error)?.collect();
    let names: Vec<String> = match batches.first() {
        Some(b) => b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        None => statement.column_names(),
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in &batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref() as &dyn Array, &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_owned()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "{}", line(&names))?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    writeln!(out, "{}", rule.join("-+-"))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    writeln!(
        out,
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )?;
    out.flush()?;
    Ok(())
}

/// `--live`: has the collector seal its segment, as jp-flush does (it goes on reading at once),
/// attaches the sealed segments read-only, and gives the SELECT of their rows that `journal`
/// adds. The lease keeps
/// jp-flush from taking those segments while the query reads them; a jp-flush that starts
/// meanwhile waits, and exits 75 for the timer to retry if the query outlasts
/// `handoff_timeout_sec`.
fn attach_buffer(
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
