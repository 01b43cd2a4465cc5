//! Search, one entry, downloads and SQL: each a `query::Session` over the archive files its time
//! range and hosts leave (the same views and lock-down as `journal-parquet query`), run on a
//! blocking thread. Bad parameters answer 400 with what is wrong; only a failure of the machine
//! (the disk, memory) answers 500.

use anyhow::Context;
use duckdb::types::Value as Db;
use serde_json::{json, Value};

use crate::config::{parse_time, Settings};
use crate::query::{host_dirs, Scope, Session};

/// A page of results.
pub(crate) const PAGE: u64 = 100;
/// The most rows the SQL box shows.
const SQL_ROWS: usize = 1000;

/// What a request gets when it fails.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 400: the request is wrong; the text says how.
    Bad(String),
    /// 500: the request is right, the machine failed it.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        // A query refused for its size, or asked of a missing archive, is the request's.
        let text = crate::sys::duckdb::chain_text(&e);
        if e.downcast_ref::<crate::config::Usage>().is_some() {
            return Failure::Bad(text);
        }
        Failure::Failed(e)
    }
}

fn bad<T>(text: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Bad(text.into()))
}

/// The search form.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct Search {
    pub since: Option<String>,
    pub until: Option<String>,
    /// Host names, comma-separated.
    pub host: Option<String>,
    pub unit: Option<String>,
    pub identifier: Option<String>,
    /// The highest priority kept (0 emerg … 7 debug). Strings, as every field here: a form
    /// sends them so, and a download's parameters are read flattened, as strings.
    pub priority: Option<String>,
    pub text: Option<String>,
    /// `substring` (case-sensitive), `icase` (the default) or `regex`.
    pub mode: Option<String>,
    pub page: Option<String>,
    pub live: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Search {
    fn scope(&self, settings: &Settings) -> Result<Scope, Failure> {
        let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, Failure> {
            match non_empty(v) {
                None => Ok(None),
                Some(t) => parse_time(t)
                    .map(|u| Some(u as i64))
                    .map_err(|why| Failure::Bad(format!("{name}: {why}"))),
            }
        };
        let (since, until) = (time(&self.since, "since")?, time(&self.until, "until")?);
        if let (Some(s), Some(u)) = (since, until) {
            if u <= s {
                return bad("the range ends before it starts: until must be later than since");
            }
        }
        let hosts: Vec<String> = non_empty(&self.host)
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Scope {
            hosts: host_dirs(&hosts, settings),
            since,
            until,
        })
    }

    /// The WHERE clause over `journal`, and its parameters.
    fn filter(&self, session: &Session) -> Result<(String, Vec<String>), Failure> {
        let mut terms = vec!["true".to_owned()];
        let mut params = Vec::new();
        for (column, value) in [
            ("systemd_unit", &self.unit),
            ("syslog_identifier", &self.identifier),
        ] {
            if let Some(v) = non_empty(value) {
                let list: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                terms.push(format!(
                    "{column} IN ({})",
                    vec!["?"; list.len()].join(", ")
                ));
                params.extend(list.into_iter().map(str::to_owned));
            }
        }
        if let Some(p) = non_empty(&self.priority) {
            match p.parse::<u8>() {
                Ok(n) if n <= 7 => terms.push(format!("(priority IS NULL OR priority <= {n})")),
                _ => return bad(format!("priority {p:?}: 0 (emerg) to 7 (debug)")),
            }
        }
        if let Some(text) = non_empty(&self.text) {
            match self.mode.as_deref().unwrap_or("icase") {
                "substring" => terms.push("contains(message, ?)".into()),
                "icase" => terms.push("contains(lower(message), lower(?))".into()),
                "regex" => {
                    // A pattern that does not compile is the request's fault, told before a scan.
                    if let Err(e) =
                        session
                            .conn
                            .query_row("SELECT regexp_matches('', ?)", [text], |r| {
                                r.get::<_, bool>(0)
                            })
                    {
                        return bad(format!("the regular expression does not compile: {e}"));
                    }
                    terms.push("regexp_matches(message, ?)".into());
                }
                other => return bad(format!("mode {other:?}: substring, icase or regex")),
            }
            params.push(text.to_owned());
        }
        Ok((terms.join(" AND "), params))
    }
}

/// Whether the search reads the buffer too.
fn live(search: &Search) -> Result<bool, Failure> {
    match non_empty(&search.live) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => bad(format!("live {other:?}: true or false")),
    }
}

/// A session over `scope` with its views made (`live`: and the buffer; `summary`: and the view
/// `journal_minutes`).
fn open(settings: &Settings, scope: Scope, live: bool, summary: bool) -> Result<Session, Failure> {
    let mut session = Session::open(settings, scope, live, summary)?;
    session.create_views()?;
    Ok(session)
}

/// A DuckDB value as JSON.
fn to_json(v: Db) -> Value {
    match v {
        Db::Null => Value::Null,
        Db::Boolean(b) => json!(b),
        Db::TinyInt(n) => json!(n),
        Db::SmallInt(n) => json!(n),
        Db::Int(n) => json!(n),
        Db::BigInt(n) => json!(n),
        Db::UTinyInt(n) => json!(n),
        Db::USmallInt(n) => json!(n),
        Db::UInt(n) => json!(n),
        Db::UBigInt(n) => json!(n),
        Db::Float(n) => json!(n),
        Db::Double(n) => json!(n),
        Db::Text(s) => json!(s),
        Db::Timestamp(_, n) => json!(chrono::DateTime::from_timestamp_micros(n)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())),
        other => json!(format!("{other:?}")),
    }
}

/// Runs `sql` with `params`: column names and rows as JSON, at most `limit` rows.
fn rows(
    session: &Session,
    sql: &str,
    params: &[String],
    limit: usize,
) -> Result<(Vec<String>, Vec<Vec<Value>>), duckdb::Error> {
    let mut st = session.conn.prepare(sql)?;
    let mut result = st.query(duckdb::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    let mut names = Vec::new();
    while let Some(row) = result.next()? {
        if names.is_empty() {
            names = row.as_ref().column_names();
        }
        if out.len() == limit {
            break;
        }
        let n = names.len();
        out.push(
            (0..n)
                .map(|i| to_json(row.get::<_, Db>(i).unwrap_or(Db::Null)))
                .collect(),
        );
    }
    Ok((names, out))
}

/// One page of the entries that match, newest first. The range is searched backwards in windows
/// that double from an hour (the files of each listed and read once), stopping as soon as the
/// page is full: a search that matches in the last hour reads the last hour only, and no more
/// than the page's rows are ever held (DuckDB keeps the top rows of each window). `live` reads
/// the buffer too, in one window over the whole range.
pub(crate) fn search(settings: &Settings, search: &Search) -> Result<Value, Failure> {
    let page = match non_empty(&search.page) {
        None => 0,
        Some(p) => match p.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return bad(format!("page {p:?}: a number from 0")),
        },
    };
    let scope = search.scope(settings)?;
    // Rows wanted from the newest: the pages before, this one, and one to tell if more follow.
    let wanted = (page + 1) * PAGE + 1;
    let windows = windows(settings, &scope, search)?;
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut columns = Vec::new();
    for (since, until) in windows {
        let left = wanted - rows.len() as u64;
        let window = Scope {
            hosts: scope.hosts.clone(),
            since,
            until,
        };
        let (c, found) = page_of(settings, search, window, left)?;
        columns = c;
        rows.extend(found);
        if rows.len() as u64 >= wanted {
            break;
        }
    }
    let start = (page * PAGE) as usize;
    if page > 0 && rows.len() <= start {
        return bad(format!("page {page} is past the end of the results"));
    }
    let mut rows: Vec<Vec<Value>> = rows.into_iter().skip(start).collect();
    let more = rows.len() as u64 > PAGE;
    rows.truncate(PAGE as usize);
    Ok(json!({"columns": columns, "rows": rows, "page": page, "more": more}))
}

/// A part of a search's range: since, until (µs; None: open).
type Window = (Option<i64>, Option<i64>);

/// The windows a search reads, newest first: back from the range's end (or the newest file's),
/// an hour, then two, four…, down to its start (or the oldest file's). With `live`, one window.
fn windows(settings: &Settings, scope: &Scope, search: &Search) -> Result<Vec<Window>, Failure> {
    use crate::archive::layout::span_of;
    if live(search)? {
        return Ok(vec![(scope.since, scope.until)]);
    }
    let files = match settings.data_dir.exists() {
        true => crate::query::archive_files(&settings.data_dir, scope)?,
        false => Vec::new(),
    };
    let spans: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().and_then(span_of))
        .collect();
    let (Some(first), Some(last)) = (
        spans.iter().map(|s| s.start_usec).min(),
        spans.iter().map(|s| s.end_usec()).max(),
    ) else {
        return Ok(vec![(scope.since, scope.until)]);
    };
    let start = scope.since.unwrap_or(first).max(first);
    let mut end = scope.until.unwrap_or(last).min(last);
    let mut width = 3_600_000_000i64;
    let mut out = Vec::new();
    while end > start {
        let from = (end - width).max(start);
        out.push((Some(from), Some(end)));
        end = from;
        width = width.saturating_mul(2);
    }
    if out.is_empty() {
        out.push((scope.since, scope.until));
    }
    Ok(out)
}

/// At most `limit` matching rows of one window, newest first.
fn page_of(
    settings: &Settings,
    search: &Search,
    window: Scope,
    limit: u64,
) -> Result<(Vec<String>, Vec<Vec<Value>>), Failure> {
    let session = open(settings, window, live(search)?, false)?;
    let (filter, params) = search.filter(&session)?;
    let sql = format!(
        "SELECT epoch_us(timestamp) AS ts, timestamp, hostname, syslog_identifier, systemd_unit, \
         priority, message, cursor FROM journal WHERE {filter} \
         ORDER BY timestamp DESC, cursor DESC LIMIT {limit}"
    );
    let found =
        rows(&session, &sql, &params, limit as usize).context("failed to search the archive")?;
    Ok(found)
}

/// Every field of one entry, as `journalctl -o json --all` prints it; `ts` (µs) narrows the
/// files read to its minute.
pub(crate) fn entry(settings: &Settings, cursor: &str, ts: i64) -> Result<Value, Failure> {
    let minute = ts - ts.rem_euclid(crate::archive::layout::MINUTE_USEC);
    let scope = Scope {
        hosts: Vec::new(),
        since: Some(minute),
        until: Some(minute + crate::archive::layout::MINUTE_USEC),
    };
    let session = open(settings, scope, false, false)?;
    let found: Option<String> = session
        .conn
        .query_row(
            "SELECT CAST(entry AS VARCHAR) FROM entries WHERE cursor = ?",
            [cursor],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            duckdb::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .context("failed to read the entry")?;
    match found {
        Some(text) => Ok(serde_json::from_str(&text).context("the entry is not JSON")?),
        None => bad(format!(
            "no entry with the cursor {cursor:?} in the minute of {ts}"
        )),
    }
}

/// The SQL box: one statement over `journal` and `entries`, at most `SQL_ROWS` rows.
pub(crate) fn sql(settings: &Settings, text: &str) -> Result<Value, Failure> {
    let text = text.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return bad("no SQL");
    }
    let session = open(
        settings,
        Scope::default(),
        false,
        crate::query::asks_for_summary(text),
    )?;
    match rows(&session, text, &[], SQL_ROWS) {
        Ok((columns, rows)) => Ok(json!({
            "columns": columns,
            "truncated": rows.len() == SQL_ROWS,
            "rows": rows,
        })),
        // The statement's own error (a typo, a file outside the archive): the request's.
        Err(e) => bad(crate::sys::duckdb::chain_text(&anyhow::Error::from(e))),
    }
}

/// Every entry that matches, whole, as CSV, JSON lines or Parquet: written by DuckDB into the
/// session's private directory, then sent.
pub(crate) fn download(
    settings: &Settings,
    search: &Search,
    format: &str,
) -> Result<(Vec<u8>, &'static str), Failure> {
    let (options, mime) = match format {
        "csv" => ("FORMAT csv, HEADER true", "text/csv"),
        "json" => ("FORMAT json", "application/x-ndjson"),
        "parquet" => (
            "FORMAT parquet, COMPRESSION zstd",
            "application/vnd.apache.parquet",
        ),
        other => return bad(format!("format {other:?}: csv, json or parquet")),
    };
    let session = open(settings, search.scope(settings)?, live(search)?, false)?;
    let (filter, params) = search.filter(&session)?;
    let out = session.scratch().join(format!("download.{format}"));
    let sql = format!(
        "COPY (SELECT timestamp, hostname, syslog_identifier, systemd_unit, priority, cursor, \
         entry FROM entries WHERE cursor IN (SELECT cursor FROM journal WHERE {filter}) \
         ORDER BY timestamp DESC) TO {} ({options})",
        crate::sys::duckdb::quote(&out.to_string_lossy())
    );
    session
        .conn
        .execute(&sql, duckdb::params_from_iter(params.iter()))
        .context("failed to write the download")?;
    let bytes = std::fs::read(&out).with_context(|| format!("failed to read {}", out.display()))?;
    Ok((bytes, mime))
}
