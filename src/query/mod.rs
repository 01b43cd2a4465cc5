//! `journal-parquet query [SQL]`: SQL over the archive in an embedded DuckDB, with the views of
//! `views` over the minute files that `--since`, `--until` and `--host` leave (pruned by path,
//! before any file is opened: `archive::files`), and with `--live` the rows not flushed yet (`live`),
//! printed as the user asked (`output`).

use std::io::{IsTerminal, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use duckdb::{AccessMode, Connection};

use crate::archive::layout::host_dir;
use crate::archive::views::{arrange, create_views, journal_select, Files};
use crate::config::{QueryArgs, QueryFormat, Settings, Usage};
use crate::sys::duckdb::{quote, sql_error};

mod live;
mod output;

pub use crate::archive::files::{archive_files, Scope};
use live::attach_buffer;
use output::{copy_out, print_table};

/// Where the packaged service keeps its state (`StateDirectory=journal-parquet`): an operator's
/// shell has no `$STATE_DIRECTORY`, and `./state` would be the wrong archive.
const PACKAGED_STATE_DIR: &str = "/var/lib/journal-parquet";

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
    let (sql, source) = read_sql(args)?;
    // Without --live or the summary, the state directory is not read: its owner has no say.
    let dirs: &[&Path] = match args.live || asks_for_summary(&sql) {
        true => &[&settings.state_dir, &settings.data_dir],
        false => &[&settings.data_dir],
    };
    crate::sys::user::become_owner(dirs, "journal-parquet query")?;
    let scope = scope_of(args, &settings)?;
    if !settings.data_dir.exists() && !args.live {
        bail!(
            "there is no archive at {} (set --data-dir, or data_dir in the config file)",
            settings.data_dir.display()
        );
    }
    let mut session = Session::open(&settings, scope, args.live, asks_for_summary(&sql))?;
    // The tree as listed: a query that fails while jp-flush swapped a day for its day file, or
    // retention deleted a file, is asked again of the tree as it is now (a few times at most).
    let mut relisted = 0;
    loop {
        let result = session.create_views().and_then(|()| match args.format {
            QueryFormat::Table => print_table(&session.conn, &sql),
            format => copy_out(&session.conn, &sql, format, session.scratch()),
        });
        let Err(e) = result else { return Ok(()) };
        match damaged_file(&e, &session.files) {
            Some(i) => {
                let file = session.files.remove(i);
                eprintln!(
                    "journal-parquet query: warning: left out {}, which cannot be read: {}",
                    file.display(),
                    first_line(&e)
                );
            }
            None => {
                if relisted < 3 && session.relist(&settings)? {
                    relisted += 1;
                    continue;
                }
                return Err(e.context(format!("the query failed ({})", source.describe())));
            }
        }
    }
}

/// Whether the SQL reads the view `journal_minutes` (the summary).
pub fn asks_for_summary(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("journal_minutes")
}

/// An in-memory DuckDB whose views `journal` and `entries` cover the archive files in a scope
/// (and, live, the buffer), confined to them (`lock_down`): what `journal-parquet query` and the
/// web console ask their SQL of.
pub struct Session {
    pub conn: Connection,
    scratch: RemoveOnDrop,
    live: Option<(crate::buffer::handoff::Lease, String)>,
    /// The files the views read, and the tree as it was listed.
    files: Vec<PathBuf>,
    listed: Vec<PathBuf>,
    scope: Scope,
}

impl Session {
    /// Lists the files of `scope` (refusing more than `query_max_files`), attaches the buffer
    /// when `live`, and with `summary` jp-flush's summary (`archive::summary`) as the view
    /// `journal_minutes`, read-only for the session: only when the SQL asks for it, since jp-flush
    /// cannot write the summary while a session holds it. Then confines DuckDB. The views over
    /// the files come with `create_views`.
    pub fn open(settings: &Settings, scope: Scope, live: bool, summary: bool) -> Result<Session> {
        let files = match settings.data_dir.exists() {
            true => archive_files(&settings.data_dir, &scope)?,
            false => Vec::new(),
        };
        check_file_count(files.len(), settings, &scope)?;
        let (conn, scratch) = open_duckdb(settings)?;
        let live = match live {
            true => attach_buffer(&conn, settings, &scope)?,
            false => None,
        };
        if summary {
            crate::archive::summary::attach_view(&conn, &settings.state_dir)?;
        }
        lock_down(&conn, settings, &scratch.0, live.is_some())?;
        Ok(Session {
            conn,
            scratch,
            live,
            listed: files.clone(),
            files,
            scope,
        })
    }

    /// (Re)makes the views over the files, the scope's row filter and the buffer.
    pub fn create_views(&mut self) -> Result<()> {
        let unify = arrange(&self.conn, &mut self.files)
            .context("failed to set up the views journal and entries")?;
        let mut journal = journal_select(&Files::List(&self.files, unify));
        if let Some(filter) = self.scope.row_filter() {
            journal = format!("SELECT * FROM ({journal}) WHERE {filter}");
        }
        if let Some((_lease, buffered)) = &self.live {
            journal = format!("{journal} UNION ALL {buffered}");
        }
        self.conn
            .execute_batch(&create_views(&journal, true))
            .map_err(sql_error)
            .context("failed to set up the views journal and entries")
    }

    /// Lists the scope again; true when the tree changed since (the views must be made again).
    pub fn relist(&mut self, settings: &Settings) -> Result<bool> {
        let now = match settings.data_dir.exists() {
            true => archive_files(&settings.data_dir, &self.scope)?,
            false => Vec::new(),
        };
        if now == self.listed {
            return Ok(false);
        }
        (self.files, self.listed) = (now.clone(), now);
        Ok(true)
    }

    /// A private directory for what the query writes (COPY results, DuckDB's spill).
    pub fn scratch(&self) -> &Path {
        &self.scratch.0
    }
}

/// Refuses a query that would open more minute files than `query_max_files`: each holds about
/// 8 KiB of metadata in memory that DuckDB's memory limit does not bound, so a year of minute
/// files (3.6 GB) would end with the kernel killing the query rather than with an answer.
fn check_file_count(files: usize, settings: &Settings, scope: &Scope) -> Result<()> {
    if files <= settings.query_max_files {
        return Ok(());
    }
    let narrowed = match (
        scope.since.is_some() || scope.until.is_some(),
        scope.hosts.is_empty(),
    ) {
        (false, true) => "give --since/--until (and --host)",
        (false, false) => "give --since/--until",
        (true, true) => "narrow --since/--until, or give --host",
        (true, false) => "narrow --since/--until",
    };
    bail!(
        "this query would open {files} minute files, more than query_max_files ({}): each \
         holds about 8 KiB of memory ({} MiB in all); {narrowed}, or raise query_max_files in \
         {} if this host has the memory",
        settings.query_max_files,
        files * 8 / 1024,
        settings
            .config_file
            .as_ref()
            .map_or(crate::config::DEFAULT_CONFIG.into(), |f| f
                .display()
                .to_string())
    )
}

/// The first line of an error's text: DuckDB names a file in quotes there; later lines quote
/// the SQL.
fn first_line(e: &anyhow::Error) -> String {
    let text = crate::sys::duckdb::chain_text(e);
    text.lines().next().unwrap_or_default().to_owned()
}

/// Which of `files` made the query fail because DuckDB finds its content invalid (damaged after
/// jp-flush wrote it, and not found by a merge yet): it is left out, with a warning, and the
/// rest of the archive still answers. Any other failure (the disk, memory, open files) fails
/// the query: an answer with files silently missing would look whole.
fn damaged_file(e: &anyhow::Error, files: &[PathBuf]) -> Option<usize> {
    let text = first_line(e);
    files
        .iter()
        .position(|f| text.contains(&quote(&f.to_string_lossy())))
        .filter(|&i| {
            crate::sys::duckdb::says_parquet_invalid(e)
                && crate::sys::files::read_through(&files[i]).is_ok()
        })
}

/// The SQL, from the argument or standard input, without its final `;`.
fn read_sql(args: &QueryArgs) -> Result<(String, SqlSource)> {
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
    Ok((sql, source))
}

/// The directories of the hosts named: as the entries give the name, or as the directory is.
pub(crate) fn host_dirs(hosts: &[String], settings: &Settings) -> Vec<String> {
    hosts
        .iter()
        .map(|h| {
            // A host name as the entries give it, or its directory name as it is.
            if settings.data_dir.join(h).is_dir() {
                h.clone()
            } else {
                host_dir(h.as_bytes())
            }
        })
        .collect()
}

/// The hosts and time range the flags ask for.
fn scope_of(args: &QueryArgs, settings: &Settings) -> Result<Scope> {
    let scope = Scope {
        hosts: host_dirs(&args.hosts, settings),
        since: args.since.map(|u| u as i64),
        until: args.until.map(|u| u as i64),
    };
    if let (Some(s), Some(u)) = (scope.since, scope.until) {
        if u <= s {
            return Err(Usage("--until must be later than --since".into()).into());
        }
    }
    Ok(scope)
}

/// An in-memory DuckDB with a private scratch directory: DuckDB spills there beyond the memory
/// limit instead of failing, and COPY writes the result there.
fn open_duckdb(settings: &Settings) -> Result<(Connection, RemoveOnDrop)> {
    let config = crate::sys::duckdb::base_config()?.access_mode(AccessMode::ReadWrite)?;
    let conn = Connection::open_in_memory_with_flags(config).context("failed to start DuckDB")?;
    // One a session: the web console holds several at once.
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch =
        std::env::temp_dir().join(format!("journal-parquet-query-{}-{n}", std::process::id()));
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
        quote(&settings.query_memory_limit)
    ))
    .context("failed to configure DuckDB")?;
    Ok((conn, scratch))
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
    .map_err(sql_error)
    .context("failed to confine DuckDB to the archive")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
