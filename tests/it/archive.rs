//! Reading the archive: six engines that are not ours and Iceberg, `journal-parquet query`, the
//! catalogue file, and trees that mix Parquet schemas 2 and 3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

/// A tree of three generated hosts plus entries whose `_HOSTNAME` must be escaped (their
/// directories start with `@`), one with a `_UID` beyond INTEGER, that mixes the three kinds of
/// archive file: the generated hosts' day compacted into hour files (`compact_day_max_rows`), the
/// escaped hosts' into day files, and a late minute file beside the hour files. Returns the test
/// dir and the entries as journalctl prints them.
fn archive_with_hostile_hosts() -> (TestDir, BTreeMap<String, serde_json::Value>) {
    let t = TestDir::new();
    let corpus = t.corpus(
        "corpus",
        "-n 4000 --hosts 3 --seed 13 --duration 5m --binary-fraction 0.02",
    );
    let mut expected = journalctl_json(&corpus);
    let compacting = "compact_after = \"1d\"\ncompact_day_max_rows = 1000\n";
    write_file(&t.config(), compacting);
    t.backfill(&corpus);
    run_ok(&mut t.flush(&["--all"]));
    run_ok(&mut t.flush(&["--compact"]));

    let base = 1_709_251_200_000_000u64; // 2024-03-01 00:00 UTC, the generator's start
    let odd: Vec<RawEntry> = ["../evil", "_web", "a b"]
        .iter()
        .enumerate()
        .map(|(i, host)| RawEntry {
            realtime_usec: base + 90_000_000 + i as u64,
            fields: vec![
                ("MESSAGE".into(), format!("odd host GET /{i}").into_bytes()),
                ("_HOSTNAME".into(), host.as_bytes().to_vec()),
                ("_UID".into(), b"4294967294".to_vec()),
                ("SYSLOG_FACILITY".into(), b"3".to_vec()),
            ],
        })
        .collect();
    let odd_dir = t.path().join("odd");
    std::fs::create_dir_all(&odd_dir).unwrap();
    journal_file(&odd_dir.join("odd.journal"), &odd);
    expected.extend(journalctl_json(&odd_dir));
    t.backfill(&odd_dir);
    run_ok(&mut t.flush(&["--all"]));

    // A late entry of a generated host, flushed with compaction off: a minute file beside the
    // hour files.
    write_file(&t.config(), "");
    let host = expected.values().next().unwrap()["_HOSTNAME"]
        .as_str()
        .unwrap()
        .to_owned();
    let late_dir = t.path().join("late");
    std::fs::create_dir_all(&late_dir).unwrap();
    journal_file(
        &late_dir.join("late.journal"),
        &[RawEntry {
            realtime_usec: base + 3_600_000_000,
            fields: vec![
                ("MESSAGE".into(), b"late GET /late".to_vec()),
                ("_HOSTNAME".into(), host.as_bytes().to_vec()),
            ],
        }],
    );
    expected.extend(journalctl_json(&late_dir));
    t.backfill(&late_dir);
    run_ok(&mut t.flush(&["--all"]));

    let names: Vec<String> = parquet_files(&t.data())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (len, kind) in [(16, "day"), (19, "hour"), (21, "minute")] {
        assert!(
            names.iter().any(|n| n.len() == len),
            "no {kind} file: {names:?}"
        );
    }
    (t, expected)
}

/// What every reader must find: rows, rows per `_HOSTNAME`, and rows whose MESSAGE contains
/// `needle_message` / that have a field named `field` outside the typed columns.
fn expected_answers(
    expected: &BTreeMap<String, serde_json::Value>,
    needle_message: &str,
    field: &str,
) -> serde_json::Value {
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let (mut message_hits, mut fields_hits) = (0u64, 0u64);
    for entry in expected.values() {
        let host = entry["_HOSTNAME"].as_str().unwrap_or_default().to_owned();
        *per_host.entry(host).or_default() += 1;
        if entry["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains(needle_message))
        {
            message_hits += 1;
        }
        if entry.get(field).is_some() {
            fields_hits += 1;
        }
    }
    serde_json::json!({
        "rows": expected.len(),
        "per_host": per_host,
        "message_hits": message_hits,
        "fields_hits": fields_hits,
    })
}

/// Guards Parquet schema 3 (no unsigned columns, a `fields` every engine reads as text, escaped
/// hosts Spark does not hide): pyarrow, Polars, DuckDB, DataFusion, chDB and Spark agree on the
/// tree, and pyiceberg's add_files takes the files as they are.
#[test]
fn six_readers_and_iceberg_agree_on_the_archive() {
    let (t, expected) = archive_with_hostile_hosts();
    let want = expected_answers(&expected, "GET /", "SYSLOG_FACILITY");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/readers.py");
    let out = run(Command::new(test_python())
        .arg(script)
        .arg(t.data())
        .args(["GET /", "SYSLOG_FACILITY"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let readers: Vec<&str> = answers
        .iter()
        .map(|a| a["reader"].as_str().unwrap())
        .collect();
    assert_eq!(
        readers,
        [
            "pyarrow",
            "polars",
            "duckdb",
            "datafusion",
            "chdb",
            "spark",
            "iceberg"
        ]
    );
    for answer in &answers {
        let mut got = answer.clone();
        let reader = got
            .as_object_mut()
            .unwrap()
            .remove("reader")
            .unwrap_or_default();
        assert_eq!(got, want, "{reader} disagrees (stderr: {})", stderr(&out));
    }

    // The uint32 _UID is in its column (schema 2 made it NULL).
    let out = run_ok(&mut t.query(&[
        "--format",
        "csv",
        "SELECT count(*) AS n FROM journal WHERE uid = 4294967294",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n3\n");
}

/// Rewrites a schema-3 minute file as schema 2 wrote it (UTINYINT, INTEGER, UBIGINT, JSON),
/// at `to`.
fn as_schema_2(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(&format!(
        "COPY (SELECT * REPLACE (
             CAST(fields AS JSON) AS fields, CAST(priority AS UTINYINT) AS priority,
             CAST(pid AS INTEGER) AS pid, CAST(uid AS INTEGER) AS uid,
             CAST(gid AS INTEGER) AS gid, CAST(monotonic_usec AS UBIGINT) AS monotonic_usec)
           FROM read_parquet('{}')) TO '{}' (FORMAT parquet)",
        from.display(),
        to.display()
    ))
    .unwrap();
}

/// Guards "old files keep working": a tree that mixes schema-2 and schema-3 files reads whole
/// with DuckDB (union_by_name), pyarrow, `journal-parquet query` and the catalogue.
#[test]
fn archives_mixing_schema_2_and_3_files_read_whole() {
    let t = TestDir::new();
    let corpus = t.archive("corpus", "-n 2000 --hosts 2 --seed 21 --duration 4m");
    let data = t.data();
    let files: Vec<String> = parquet_digest(&data).into_keys().collect();
    assert!(files.len() >= 4, "{files:?}");
    // Half of the files become schema 2, the rest stay schema 3; schema-2 files sort first.
    for f in files.iter().step_by(2) {
        let path = data.join(f);
        let old = path.with_extension("old");
        std::fs::rename(&path, &old).unwrap();
        as_schema_2(&old, &path);
        std::fs::remove_file(&old).unwrap();
    }
    let total = journalctl_json(&corpus).len().to_string();
    // One schema-3 file holds a uid beyond INTEGER: read with schema 2's types it would fail.
    let big = data.join(&files[1]);
    let db = duckdb::Connection::open_in_memory().unwrap();
    db.execute_batch(&format!(
        "COPY (SELECT * REPLACE (4294967294::BIGINT AS uid) FROM read_parquet('{0}'))
         TO '{0}.new' (FORMAT parquet, KV_METADATA {{journal_parquet_schema: '3'}})",
        big.display()
    ))
    .unwrap();
    std::fs::rename(big.with_extension("parquet.new"), &big).unwrap();
    let big_rows: u64 = db
        .query_row(
            &format!("SELECT count(*) FROM read_parquet('{}')", big.display()),
            [],
            |r| r.get(0),
        )
        .unwrap();

    // Whichever schema the newest file has (it decides how DuckDB unifies the types).
    let newest = data.join(files.iter().max_by_key(|f| f.rsplit('/').next()).unwrap());
    for round in 0..2 {
        let out = run_ok(&mut t.query(&[
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT cursor) AS d, typeof(any_value(uid)) AS t, \
             count(*) FILTER (uid = 4294967294) AS big FROM journal",
        ]));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("n,d,t,big\n{total},{total},BIGINT,{big_rows}\n"),
            "round {round}"
        );
        // The other schema for the newest file.
        let old = newest.with_extension("old");
        std::fs::rename(&newest, &old).unwrap();
        if round == 0 && files.iter().step_by(2).any(|f| data.join(f) == newest) {
            db.execute_batch(&format!(
                "COPY (SELECT * REPLACE (
                     CAST(fields AS VARCHAR) AS fields, CAST(priority AS INTEGER) AS priority,
                     CAST(pid AS BIGINT) AS pid, CAST(uid AS BIGINT) AS uid,
                     CAST(gid AS BIGINT) AS gid, CAST(monotonic_usec AS BIGINT) AS monotonic_usec)
                   FROM read_parquet('{}')) TO '{}'
                 (FORMAT parquet, KV_METADATA {{journal_parquet_schema: '3'}})",
                old.display(),
                newest.display()
            ))
            .unwrap();
        } else {
            as_schema_2(&old, &newest);
        }
        std::fs::remove_file(&old).unwrap();
    }
    let script = r#"
import sys, glob, duckdb, pyarrow.dataset as ds, pyarrow.parquet as pq
data = sys.argv[1]
files = sorted(glob.glob(data + "/*/*/*/*/*.parquet"))
db = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r}, union_by_name = true)").fetchall()[0][0]
kinds = {str(pq.read_schema(f).field("uid").type) for f in files}
assert kinds == {"int32", "int64"}, kinds
# pyarrow: a dataset read with the schema-3 schema (the newest file's) casts the older files.
newest = max(files, key=lambda f: pq.read_schema(f).field("uid").type == "int64")
arrow = ds.dataset(files, format="parquet", schema=pq.read_schema(newest)).to_table().num_rows
cat = duckdb.connect(data + "/journal.duckdb", read_only=True).sql("SELECT count(*) FROM journal").fetchall()[0][0]
print(db, arrow, cat)
"#;
    let out = run_ok(Command::new(test_python()).arg("-c").arg(script).arg(&data));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{total} {total} {total}")
    );
}

/// Guards the query interface: the views, the four formats, SQL from stdin, and errors that
/// name the SQL position.
#[test]
fn query_answers_in_every_format_from_argument_or_stdin() {
    let (t, expected) = archive_with_hostile_hosts();
    let total = expected.len();

    let table =
        run_ok(&mut t.query(&[
            "SELECT hostname, count(*) AS n FROM journal GROUP BY ALL ORDER BY hostname",
        ]));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("hostname"), "{text}");
    assert!(
        text.contains("../evil") && text.ends_with("(6 rows)\n"),
        "{text}"
    );

    // `entries` gives each entry whole, as journalctl -o json --all prints it.
    let json = run_ok(&mut t.query(&["--format", "json", "SELECT entry FROM entries"]));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), total);
    for line in &lines {
        let entry = &line["entry"];
        let cursor = entry["__CURSOR"].as_str().unwrap();
        assert_eq!(entry, &expected[cursor], "entry {cursor}");
    }

    let mut stdin = t.query(&["--format", "parquet"]);
    let parquet = t.path().join("out.parquet");
    stdin
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&parquet).unwrap());
    let mut child = stdin.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT cursor, uid FROM journal;\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let rows = run_ok(
        Command::new(test_python())
            .arg("-c")
            .arg("import sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1]).num_rows)")
            .arg(&parquet),
    );
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        total.to_string()
    );

    // Appending to a file keeps what it held (DuckDB's COPY truncates its target).
    let log = t.path().join("appended.csv");
    std::fs::write(&log, "kept\n").unwrap();
    let mut csv = t.query(&["--format", "csv", "SELECT 1 AS one"]);
    csv.stdout(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    assert!(run(&mut csv).status.success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept\none\n1\n");

    let bad = run(&mut t.query(&["SELECT count(*) FROM journal WHERE nosuch = 1"]));
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(err.contains("nosuch") && err.contains("LINE 1:"), "{err}");
    assert!(err.contains("the SQL given as argument"), "{err}");
    assert!(!err.contains("Unknown error code"), "{err}");
    let empty = run(t.query(&["--format", "csv"]).stdin(Stdio::null()));
    assert_eq!(empty.status.code(), Some(2), "{}", stderr(&empty));
}

/// Guards pruning by path: `--since`, `--until` and `--host` open only the files of their
/// minutes and hosts. Every other file is made unreadable: opening one would be seen.
#[test]
fn query_opens_only_the_files_of_the_hosts_and_minutes_asked_for() {
    let t = TestDir::new();
    let corpus = t.archive("corpus", "-n 3000 --hosts 2 --seed 3 --duration 10m");
    let expected = journalctl_json(&corpus);
    let data = t.data();
    let host = "web-01";
    let (since, until) = (
        1_709_251_200_000_000i64 + 180_000_000,
        1_709_251_200_000_000i64 + 300_000_000,
    );
    let want = expected
        .values()
        .filter(|e| e["_HOSTNAME"] == host)
        .filter(|e| {
            let t: i64 = e["__REALTIME_TIMESTAMP"].as_str().unwrap().parse().unwrap();
            (since..until).contains(&t)
        })
        .count();
    assert!(want > 0);
    let mut spoiled = 0;
    for f in tree_digest(&data).into_keys() {
        let keep = f.starts_with(&format!("./{host}/"))
            && ["0003.parquet", "0004.parquet"]
                .iter()
                .any(|m| f.ends_with(m));
        if f.ends_with(".parquet") && !keep {
            std::fs::write(data.join(&f), b"not parquet").unwrap();
            spoiled += 1;
        }
    }
    assert!(spoiled > 10);
    let out = run_ok(&mut t.query(&[
        "--since",
        "2024-03-01 00:03:00",
        "--until",
        "2024-03-01T00:05:00Z",
        "--host",
        host,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM journal",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n\n{want}\n"));
    assert_eq!(stderr(&out), "", "no file outside the range was opened");

    // Without the range, the unreadable files are left out with a warning naming each.
    let out = run_ok(&mut t.query(&["--format", "csv", "SELECT count(*) AS n FROM journal"]));
    let err = stderr(&out);
    assert_eq!(err.matches("warning: left out").count(), spoiled, "{err}");
}

/// Guards `--live`: rows the collector committed but jp-flush has not written are in `journal`,
/// read while the collector runs (it is not stopped), once each, also after a flush.
#[test]
fn live_query_reads_the_buffer_without_stopping_the_collector() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 1500 --hosts 1 --seed 4 --duration 3m");
    let total = journalctl_json(&corpus).len() as u64;
    let (mut collector, _notify) = start_collector(
        &t,
        &["--directory", corpus.to_str().unwrap(), "--from-head"],
    );
    let count = |live: bool| -> u64 {
        let mut args = vec!["--format", "csv"];
        if live {
            args.push("--live");
        }
        args.push("SELECT count(*) FROM journal");
        let out = run_ok(&mut t.query(&args));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap()
    };
    eventually(
        std::time::Duration::from_secs(60),
        "every entry buffered",
        || count(true) == total,
    );
    assert!(
        !t.data().exists() || count(false) == 0,
        "nothing flushed yet"
    );
    run_ok(&mut t.flush(&[]));
    assert_eq!(count(true), total, "flushed and buffered rows, once each");
    assert!(count(false) > 0);
    assert!(
        collector.0.try_wait().unwrap().is_none(),
        "the collector still runs"
    );
}

/// Guards the catalogue: jp-flush writes DATA/journal.duckdb, the DuckDB CLI reads the archive
/// through it, an outdated one is replaced, and a reader holding it open never fails a flush.
#[test]
fn catalogue_serves_the_duckdb_cli_and_never_blocks_jp_flush() {
    let t = TestDir::new();
    t.archive("corpus", "-n 500 --hosts 2 --seed 6 --duration 2m");
    let catalogue = t.data().join("journal.duckdb");
    let cli = PathBuf::from(test_python()).with_file_name("duckdb");
    let out = run_ok(Command::new(&cli).arg(&catalogue).args([
        "-csv",
        "-c",
        "FROM journal LIMIT 5",
        "-c",
        "SELECT count(*) AS n FROM entries",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("timestamp,minute_key,hostname,cursor,fields"),
        "{text}"
    );
    assert!(text.ends_with("n\n500\n"), "{text}");

    // Outdated (another version's views): replaced by the next run.
    let db = duckdb::Connection::open(&catalogue).unwrap();
    db.execute_batch("UPDATE journal_parquet_catalogue SET definition = 'old'")
        .unwrap();
    drop(db);
    let out = run_ok(&mut t.flush(&["--log-level", "info"]));
    assert!(
        stderr(&out).contains("wrote the catalogue"),
        "{}",
        stderr(&out)
    );

    // A reader holding it open for writing (the CLI's default): the run succeeds, and the file
    // stays the reader's.
    let mut holder = Command::new(&cli)
        .arg(&catalogue)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = run(&mut t.flush(&["--log-level", "debug"]));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Guards the bound on the files one query opens (`query_max_files`): their metadata's memory is
/// not bounded by DuckDB, so a query that would open more is refused at once, saying how to
/// narrow it, and the same query narrowed answers.
#[test]
fn a_query_over_more_files_than_query_max_files_is_refused_saying_what_to_do() {
    let t = TestDir::new();
    t.archive("corpus", "-n 600 --hosts 2 --seed 7 --duration 2h");
    let mut minutes: Vec<(String, String)> = parquet_files(&t.data())
        .into_iter()
        .map(|p| {
            let host = p.strip_prefix(t.data()).unwrap().iter().next().unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (host.to_string_lossy().into_owned(), name)
        })
        .collect();
    minutes.sort();
    assert!(minutes.len() > 100, "{} minute files", minutes.len());
    write_file(&t.config(), "query_max_files = 50\n");
    let out = run(&mut t.query(&["SELECT count(*) FROM journal"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("would open {} minute files", minutes.len()))
            && err.contains("--since")
            && err.contains("query_max_files")
            && err.contains(&t.config().display().to_string()),
        "{err}"
    );
    // One host's first ten minutes: under the bound.
    let (host, first) = &minutes[0];
    let at = |name: &str, plus: i64| {
        let t = chrono::NaiveDateTime::parse_from_str(name, "%Y%m%d-%H%M").unwrap()
            + chrono::Duration::minutes(plus);
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    };
    let answer = t.query_value(&[
        "--host",
        host,
        "--since",
        &at(first, 0),
        "--until",
        &at(first, 10),
        "SELECT count(*) > 0 FROM journal",
    ]);
    assert_eq!(answer, "true");
}

/// Guards the typed columns of `entries` (filtering there chooses rows before their entries are
/// built): each agrees with the `journal` view's, row for row.
#[test]
fn entries_carry_the_columns_operators_filter_on() {
    let t = TestDir::new();
    t.archive("corpus", "-n 400 --hosts 2 --seed 9 --duration 20m");
    let agreeing = t.query_value(&[
        "SELECT count(*) FROM entries e JOIN journal j USING (cursor) \
         WHERE e.syslog_identifier IS NOT DISTINCT FROM j.syslog_identifier \
         AND e.systemd_unit IS NOT DISTINCT FROM j.systemd_unit \
         AND e.priority IS NOT DISTINCT FROM j.priority \
         AND e.hostname IS NOT DISTINCT FROM j.hostname",
    ]);
    assert_eq!(agreeing, "400");
}

/// Guards jp-flush's memory against the catalogue: making its views reads every footer, so an
/// archive beyond `CATALOGUE_MAX_FILES` minute files gets none (the run succeeds, and
/// `journal-parquet query` still reads it all).
#[test]
fn no_catalogue_is_written_for_an_archive_beyond_its_bound() {
    let t = TestDir::new();
    t.archive("corpus", "-n 40000 --hosts 4 --seed 1 --duration 1d");
    let files = parquet_files(&t.data()).len();
    assert!(
        files > journal_parquet::archive::views::CATALOGUE_MAX_FILES,
        "{files} minute files"
    );
    assert!(!t.data().join("journal.duckdb").exists());
    assert_eq!(t.query_value(&["SELECT count(*) FROM journal"]), "40000");
}
