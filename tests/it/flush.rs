//! jp-flush: completed minutes to Parquet, checked with pyarrow.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use journal_parquet::row::WHOLE_ENTRY_SQL;

fn buffered_rows(t: &TestDir) -> u64 {
    t.query_u64("SELECT count(*) FROM journal_logs")
}

/// Guards the whole path: every entry of a corpus in exactly one file, the file of its host and
/// UTC minute, every field equal to journalctl's JSON, one schema for all files.
#[test]
fn corpus_lands_once_in_its_host_minute_file_with_every_field() {
    let t = TestDir::new();
    let corpus = t.corpus(
        "corpus",
        "-n 5000 --hosts 3 --seed 5 --duration 7m \
         --large-every 2000 --binary-fraction 0.03 --dup-field-fraction 0.03",
    );
    let expected = journalctl_json(&corpus);
    t.backfill(&corpus);
    run_ok(&mut t.flush(&[]));

    let data = t.path().join("data");
    let rows = parquet_rows(&data);
    assert_eq!(rows.len(), expected.len(), "every entry once in the tree");
    let schemas: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["_schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas.len(), 1, "one schema in every file: {schemas:?}");
    let mut seen = BTreeSet::new();
    for row in &rows {
        let cursor = row["cursor"].as_str().unwrap();
        assert!(seen.insert(cursor.to_owned()), "{cursor} twice");
        let want = &expected[cursor];
        assert_eq!(&row["_entry"], want, "entry {cursor}");
        // DATA/HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet of the entry's own UTC minute.
        let usec: i64 = want["__REALTIME_TIMESTAMP"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let t = chrono::DateTime::from_timestamp_micros(usec).unwrap();
        let file = format!(
            "{}/{}",
            want["_HOSTNAME"].as_str().unwrap(),
            t.format("%Y/%m/%d/%Y%m%d-%H%M.parquet")
        );
        assert_eq!(row["_file"].as_str().unwrap(), file);
        assert_eq!(row["timestamp"].as_i64().unwrap(), usec);
    }
    assert_eq!(buffered_rows(&t), 0, "exported rows are deleted");

    // The README's SQL gives the same whole entries, with DuckDB reading the files.
    let db = duckdb::Connection::open_in_memory().unwrap();
    let mut st = db
        .prepare(&format!(
            "SELECT cursor, ({WHOLE_ENTRY_SQL})::VARCHAR FROM read_parquet('{}/**/*.parquet')",
            data.display()
        ))
        .unwrap();
    let entries: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(entries.len(), expected.len());
    for (cursor, entry) in &entries {
        let got: serde_json::Value = serde_json::from_str(entry).unwrap();
        assert_eq!(&got, &expected[cursor], "WHOLE_ENTRY_SQL of {cursor}");
    }

    // Modes: directories 0750, files 0640.
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(&data) {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        let want = if entry.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{}", entry.display());
    }
}

/// Guards idempotence and the merge of late rows: a second run changes nothing; rows that were
/// already exported (a run that died between rename and delete) merge without duplicates; new
/// rows for an exported minute end up in its file.
#[test]
fn second_run_changes_nothing_and_late_rows_merge_into_their_file() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 3000 --hosts 2 --seed 9 --duration 5m");
    t.backfill(&corpus);
    run_ok(&mut t.flush(&[]));
    let data = t.path().join("data");
    let first = tree_digest(&data);
    run_ok(&mut t.flush(&[]));
    assert_eq!(tree_digest(&data), first, "a second run changed the tree");

    // The same entries again (as after a crash between rename and delete): no duplicates.
    let again = TestDir::sharing_data(&data);
    again.backfill(&corpus);
    run_ok(&mut again.flush(&[]));
    let rows = parquet_rows(&data);
    assert_eq!(rows.len(), 3000);
    let first_cursors: BTreeSet<String> = rows
        .iter()
        .map(|r| r["cursor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| r["cursor"].as_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len(),
        3000
    );

    // Late entries (another source, same hosts and minutes): merged into the existing files.
    let late = TestDir::sharing_data(&data);
    let late_corpus = late.corpus("corpus", "-n 300 --hosts 2 --seed 10 --duration 5m");
    late.backfill(&late_corpus);
    run_ok(&mut late.flush(&[]));
    let rows = parquet_rows(&data);
    assert_eq!(rows.len(), 3300);
    let files_before: BTreeSet<&String> = first.keys().collect();
    let files_after = tree_digest(&data);
    assert!(
        files_after.keys().all(|f| files_before.contains(f)),
        "late entries belong to existing minute files"
    );
    // A merged file keeps its rows first, in their order, and adds the new ones after them
    // (sorting a minute needs memory in proportion to it).
    for row in rows.windows(2) {
        if row[0]["_file"] == row[1]["_file"] {
            let late =
                |r: &serde_json::Value| !first_cursors.contains(r["cursor"].as_str().unwrap());
            assert!(
                late(&row[1]) || !late(&row[0]),
                "a row of the file after a late one in {}",
                row[0]["_file"]
            );
        }
    }
}

/// Guards exactly-once under jp-flush crashes while the collector runs.
#[test]
fn kill_9_of_jp_flush_at_random_points_loses_and_repeats_nothing() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 30000 --hosts 3 --seed 12 --duration 30m");
    let expected = journalctl_json(&corpus);
    let (mut collector, _n) = start_collector(
        &t,
        &["--directory", corpus.to_str().unwrap(), "--from-head"],
    );
    // Let the collector read everything so that jp-flush has work each time.
    eventually(Duration::from_secs(60), "the corpus in the buffer", || {
        t.cursor_counts().len() == expected.len()
    });
    let mut rng = 0x2545f4914f6cdd1du64;
    for round in 0..15 {
        let mut child = t
            .flush(&[])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ms = 20 + rng % 700;
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        eprintln!("round {round}: jp-flush killed after {ms} ms ({status})");
    }
    run_ok(&mut t.flush(&[]));
    sigterm(&collector);
    assert!(wait_with_limit(&mut collector, Duration::from_secs(10)).success());

    let rows = parquet_rows(&t.path().join("data"));
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r["cursor"].as_str().unwrap()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dupes.is_empty(), "duplicated in the tree: {dupes:?}");
    let got: BTreeSet<&str> = counts.keys().copied().collect();
    let want: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert!(
        got == want,
        "{} in the tree, {} in the corpus",
        got.len(),
        want.len()
    );
    assert_eq!(
        buffered_rows(&t),
        0,
        "every exported minute left the buffer"
    );
}

/// Guards the host directory escaping: hostile `_HOSTNAME`s stay inside DATA, one directory per
/// distinct name, and the raw value is kept in the row.
#[test]
fn hostile_hostnames_stay_inside_data_one_directory_each() {
    let t = TestDir::new();
    let journal_dir = t.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let hostile: Vec<Vec<u8>> = vec![
        b"../../etc".to_vec(),
        b"a/b".to_vec(),
        b"..".to_vec(),
        b"".to_vec(),
        vec![b'h'; 300],
        b"bad\xffutf8".to_vec(),
        b"web-01".to_vec(),
    ];
    let base = 1_709_251_200_000_000u64; // 2024-03-01 00:00 UTC
    let entries: Vec<RawEntry> = hostile
        .iter()
        .enumerate()
        .map(|(i, h)| RawEntry {
            realtime_usec: base + i as u64 * 1000,
            fields: vec![
                ("MESSAGE".into(), format!("host {i}").into_bytes()),
                ("_HOSTNAME".into(), h.clone()),
            ],
        })
        .collect();
    journal_file(&journal_dir.join("hostile.journal"), &entries);
    t.backfill(&journal_dir);
    run_ok(&mut t.flush(&[]));

    let data = t.path().join("data");
    // Directories only: DATA also holds the catalogue, journal.duckdb.
    let hosts: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        hosts.len(),
        hostile.len(),
        "one directory per name: {hosts:?}"
    );
    let rows = parquet_rows(&data);
    assert_eq!(rows.len(), hostile.len());
    for r in &rows {
        let file = r["_file"].as_str().unwrap();
        assert!(
            file.split('/')
                .all(|seg| seg != ".." && seg != "." && !seg.is_empty()),
            "{file}"
        );
        assert_eq!(file.matches('/').count(), 4, "HOST/YYYY/MM/DD/file: {file}");
    }
    // Nothing was written outside DATA.
    assert!(!t.path().join("etc").exists() && !t.path().join("a").exists());
}

/// Guards a read-only DATA: exit 1 naming the path, every row kept, and a full export once DATA
/// is writable again.
#[test]
fn read_only_data_dir_keeps_rows_until_it_is_writable() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test mounts a read-only tmpfs: run it as root");
    }
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 500 --hosts 1 --seed 3 --duration 3m");
    t.backfill(&corpus);
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "jp-test-ro"])
            .arg(&data),
    );
    let out = run(&mut t.flush(&[]));
    run_ok(std::process::Command::new("umount").arg(&data));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(data.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert_eq!(buffered_rows(&t), 500, "the buffer keeps every row");

    run_ok(&mut t.flush(&[]));
    assert_eq!(parquet_rows(&data).len(), 500);
    assert_eq!(buffered_rows(&t), 0);
}

/// Guards exit 75: when the sealed segments cannot be had within `handoff_timeout_sec` (another
/// jp-flush holds them), jp-flush gives up with EX_TEMPFAIL and leaves everything as it was.
#[test]
fn jp_flush_exits_75_when_the_buffer_stays_taken() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 200 --hosts 1 --seed 4 --duration 3m");
    t.backfill(&corpus);
    write_file(&t.config(), "handoff_timeout_sec = 1\n");
    // Another jp-flush holds the sealed segments (here: this test, through the hand-off).
    let rows = t.with_buffer(|c| {
        let started = std::time::Instant::now();
        let out = run(&mut t.flush(&[]));
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        assert!(stderr(&out).contains("flush.lock"), "{}", stderr(&out));
        assert!(took < Duration::from_secs(10), "gave up after {took:?}");
        c.query_row("SELECT count(*) FROM journal_logs", [], |r| {
            r.get::<_, u64>(0)
        })
        .unwrap()
    });
    assert_eq!(rows, 200);
    assert!(!t.data().exists(), "nothing was written");
}

/// Guards the foreground mode: `--flush-every` makes the collector write completed minutes
/// itself, with no jp-flush and no timer.
#[test]
fn collector_flushes_by_itself_with_flush_every() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 2000 --hosts 2 --seed 6 --duration 4m");
    let dir = corpus.to_str().unwrap();
    let (mut child, _n) = start_collector(
        &t,
        &["--directory", dir, "--from-head", "--flush-every", "1"],
    );
    eventually(Duration::from_secs(60), "every entry in Parquet", || {
        t.data().exists() && parquet_rows(&t.data()).len() == 2000
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    assert_eq!(t.cursor_counts().len(), 0, "exported rows left the buffer");
}

/// Guards the completed-minute rule and `--all`: entries of a minute that has not ended before
/// the watermark (here: an hour in the future) stay in the buffer, and `--all` writes them.
#[test]
fn minute_in_progress_waits_for_the_watermark_unless_all() {
    let t = TestDir::new();
    let journal_dir = t.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let entries: Vec<RawEntry> = [now - 600_000_000, now + 3_600_000_000]
        .iter()
        .map(|&usec| RawEntry {
            realtime_usec: usec,
            fields: vec![
                ("MESSAGE".into(), format!("at {usec}").into_bytes()),
                ("_HOSTNAME".into(), b"clock-host".to_vec()),
            ],
        })
        .collect();
    journal_file(&journal_dir.join("clock.journal"), &entries);
    t.backfill(&journal_dir);

    run_ok(&mut t.flush(&[]));
    assert_eq!(
        parquet_rows(&t.data()).len(),
        1,
        "only the completed minute is written"
    );
    assert_eq!(
        buffered_rows(&t),
        1,
        "the future minute waits in the buffer"
    );

    run_ok(&mut t.flush(&["--all"]));
    assert_eq!(parquet_rows(&t.data()).len(), 2);
    assert_eq!(buffered_rows(&t), 0);
}

/// Guards a damaged minute file: when rows must be merged into a file whose content is invalid,
/// the file is kept aside under a name that says so, the minute is rewritten from the buffer, and
/// the log says what happened.
#[test]
fn damaged_minute_file_is_set_aside_and_rewritten() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 300 --hosts 1 --seed 8 --duration 50s");
    t.backfill(&corpus);
    run_ok(&mut t.flush(&[]));
    let data = t.data();
    let files: Vec<String> = parquet_digest(&data).into_keys().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = data.join(&files[0]);
    std::fs::write(&file, b"PAR1 this is not a parquet file").unwrap();

    // The same entries again (a fresh buffer): they must be merged into the damaged minute.
    let again = TestDir::sharing_data(&data);
    again.backfill(&corpus);
    let out = run_ok(&mut again.flush(&[]));
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
    let aside: Vec<String> = tree_digest(&data)
        .into_keys()
        .filter(|f| f.contains(".parquet.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside");
    let rows = parquet_rows(&data);
    assert_eq!(rows.len(), 300, "the minute is whole again");
}

/// A segment of its own holding `rows` synthetic entries of host `busy` in `minute`, cursors
/// numbered from `first`, complete by the watermark: what a collector would have committed.
fn synthetic_segment(t: &TestDir, no: u64, minute: i64, first: u64, rows: u64) {
    use journal_parquet::position::Position;
    use journal_parquet::segment::CollectorState;
    let state = CollectorState {
        position: Position::Head,
        watermark_usec: Some(minute + 3_600_000_000),
        gaps_total: 0,
    };
    let path = t
        .settings()
        .buffer()
        .create(no, &Position::Head, &state, false)
        .unwrap();
    let conn = duckdb::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO journal_logs SELECT
             make_timestamp({minute} + i * 19), make_timestamp({minute}), 'busy',
             's=0123456789abcdef0123456789abcdef;i=' || printf('%x', i) || ';x=' || md5(i::VARCHAR),
             '{{}}'::JSON,
             md5(random()::VARCHAR) || ' ' || md5(random()::VARCHAR) || ' ' || md5(i::VARCHAR),
             6, 'busy-app', 'busy-app.service', (1000 + i % 50)::INTEGER, 0, 0, 'busy-app',
             '/usr/bin/busy-app', 'f00dfeedf00dfeedf00dfeedf00dfeed',
             '0123456789abcdef0123456789abcdef', 'stdout', i::UBIGINT, NULL, 'busy'
         FROM range({first}, {first} + {rows}) r(i)"
    ))
    .unwrap();
}

const BUSY_MINUTE: i64 = 1_709_251_200_000_000;

/// The number of the buffer's last segment (0 when there is none).
fn last_segment_no(t: &TestDir) -> u64 {
    t.settings()
        .buffer()
        .segments()
        .unwrap()
        .last()
        .copied()
        .unwrap_or(0)
}

fn busy_minute_file(t: &TestDir) -> std::path::PathBuf {
    t.data().join("busy/2024/03/01/20240301-0000.parquet")
}

/// Rewrites `file` (300 rows) in row groups of 50 and fills the third with garbage; returns the
/// rows of the row groups still readable.
fn damage_row_group(file: &std::path::Path) -> usize {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/damage_row_group.py");
    let out = run_ok(
        std::process::Command::new(test_python())
            .arg(script)
            .arg(file)
            .args(["50", "2"]),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A busy minute of 300 rows written, then one of its six row groups made garbage (250 rows stay
/// readable), then one more entry of that minute in the buffer: the minute must be merged with
/// the damaged file. Returns the file.
fn damaged_minute_and_one_more_entry(t: &TestDir) -> std::path::PathBuf {
    synthetic_segment(t, 1, BUSY_MINUTE, 0, 300);
    run_ok(&mut t.flush(&[]));
    let file = busy_minute_file(t);
    assert_eq!(damage_row_group(&file), 250);
    let open = last_segment_no(t);
    synthetic_segment(t, open + 1, BUSY_MINUTE, 1000, 1);
    file
}

/// Guards the rows of a damaged minute file that can still be read: one row group of six is
/// garbage, and the rewritten minute keeps the other five's rows beside the buffer's.
#[test]
fn readable_row_groups_of_a_damaged_file_stay_in_the_archive() {
    let t = TestDir::new();
    damaged_minute_and_one_more_entry(&t);
    let out = run_ok(&mut t.flush(&[]));
    let err = stderr(&out);
    assert!(
        err.contains("is damaged") && err.contains("250 rows"),
        "{err}"
    );
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), 251, "the readable row groups and the new entry");
    let aside = tree_digest(&t.data())
        .into_keys()
        .filter(|f| f.contains(".parquet.damaged-"))
        .count();
    assert_eq!(aside, 1, "the damaged file is kept aside, whole");
}

/// Guards a minute file that cannot be read for a reason outside it (here: permission, for a
/// jp-flush without CAP_DAC_OVERRIDE): that minute fails, and both the file and the rows stay as
/// they are for the next run, which merges them once the file is readable again.
#[test]
fn unreadable_minute_file_fails_the_minute_and_keeps_file_and_rows() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    synthetic_segment(&t, 1, BUSY_MINUTE, 0, 100);
    run_ok(&mut t.flush(&[]));
    let file = busy_minute_file(&t);
    let before = tree_digest(&t.data());
    let open = last_segment_no(&t);
    synthetic_segment(&t, open + 1, BUSY_MINUTE, 100, 20);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: take that away from this one run.
    let flush = t.flush(&[]);
    let mut unprivileged = std::process::Command::new("setpriv");
    unprivileged
        .arg("--bounding-set=-dac_override,-dac_read_search")
        .arg(flush.get_program())
        .args(flush.get_args());
    for (key, value) in flush.get_envs() {
        match value {
            Some(v) => unprivileged.env(key, v),
            None => unprivileged.env_remove(key),
        };
    }
    let out = run(&mut unprivileged);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("Permission denied"),
        "{err}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(tree_digest(&t.data()), before, "the file is untouched");
    assert_eq!(buffered_rows(&t), 20, "the rows stay");

    run_ok(&mut t.flush(&[]));
    assert_eq!(parquet_rows(&t.data()).len(), 120);
    assert_eq!(buffered_rows(&t), 0);
}

/// Guards the memory limit on a busy minute: 3,000,000 entries of high-entropy messages in one
/// host's minute (written straight into a segment: a journal would take minutes to fill) export
/// with the default `flush_memory_limit`, DuckDB spilling where it must, every row once.
#[test]
fn busy_minute_of_3m_entries_exports_within_the_memory_limit() {
    let t = TestDir::new();
    let n: u64 = 3_000_000;
    synthetic_segment(&t, 1, BUSY_MINUTE, 0, n);
    let started = std::time::Instant::now();
    let (out, peak_kib) = run_measuring_peak_rss(&mut t.flush(&[]));
    assert!(out.status.success(), "{}", stderr(&out));
    let took = started.elapsed();
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let (rows, distinct): (u64, u64) = conn
        .query_row(
            &format!(
                "SELECT count(*), count(DISTINCT cursor) FROM read_parquet('{}')",
                busy_minute_file(&t).display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct), (n, n));
    assert_eq!(buffered_rows(&t), 0);
    eprintln!(
        "a {n}-entry minute: exported in {:.1} s, jp-flush peak RSS {} MiB (flush_memory_limit {})",
        took.as_secs_f64(),
        peak_kib / 1024,
        t.settings().flush_memory_limit
    );
}

/// Our minute files under `data`: (minute start in µs, path, bytes), oldest first.
fn minute_files(data: &std::path::Path) -> Vec<(i64, std::path::PathBuf, u64)> {
    let mut files: Vec<_> = walk(data)
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let t = chrono::NaiveDateTime::parse_from_str(&name, "%Y%m%d-%H%M.parquet").ok()?;
            Some((
                t.and_utc().timestamp_micros(),
                p.clone(),
                p.metadata().ok()?.len(),
            ))
        })
        .collect();
    files.sort();
    files
}

fn now_usec() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// No directory under `data` is left empty (retention removes the day, month, year and host
/// directories it empties).
fn assert_no_empty_dir(data: &std::path::Path) {
    for p in walk(data) {
        if p.is_dir() && p != data {
            assert!(
                std::fs::read_dir(&p).unwrap().next().is_some(),
                "{} left empty",
                p.display()
            );
        }
    }
}

/// Guards `max_age`: after a flush, minute files whose minute ended longer ago than the limit are
/// deleted, newer ones kept, and the directories emptied removed; the run says so once.
#[test]
fn retention_by_age_deletes_minutes_older_than_max_age() {
    let t = TestDir::new();
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let corpus = t.corpus(
        "corpus",
        &format!(
            "-n 3000 --hosts 2 --seed 61 --duration 60m --start {}",
            start.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    );
    write_file(&t.config(), "max_age = \"90min\"\n");
    t.backfill(&corpus);
    let before = now_usec();
    let out = run_ok(&mut t.flush(&["--all"]));
    let after = now_usec();
    let limit = 90 * 60_000_000;
    let kept = minute_files(&t.data());
    assert!(!kept.is_empty(), "the newer half was kept");
    for (minute, path, _) in &kept {
        assert!(
            minute + 60_000_000 > before - limit,
            "{} is older than max_age",
            path.display()
        );
    }
    // Every minute of the corpus that ended before the limit (as of the run's end) is gone.
    let all_minutes: BTreeSet<i64> = journalctl_json(&corpus)
        .values()
        .map(|e| {
            let t: i64 = e["__REALTIME_TIMESTAMP"].as_str().unwrap().parse().unwrap();
            t - t.rem_euclid(60_000_000)
        })
        .collect();
    let kept_minutes: BTreeSet<i64> = kept.iter().map(|(m, _, _)| *m).collect();
    for m in &all_minutes {
        if m + 60_000_000 > after - limit {
            assert!(
                kept_minutes.contains(m),
                "minute {m} is within max_age but gone"
            );
        }
    }
    assert!(
        kept_minutes.len() < all_minutes.len(),
        "nothing was deleted"
    );
    assert_no_empty_dir(&t.data());
    let err = stderr(&out);
    assert_eq!(err.matches("retention deleted").count(), 1, "{err}");
}

/// Guards `max_use`: the oldest minutes go first (across hosts) until the files we wrote use at
/// most the limit; files we did not write are never deleted nor counted, and are named in a
/// warning the first time only.
#[test]
fn retention_by_size_deletes_the_oldest_minutes_and_leaves_foreign_files() {
    let t = TestDir::new();
    t.archive("corpus", "-n 6000 --hosts 2 --seed 62 --duration 30m");
    let full = minute_files(&t.data());
    let total: u64 = full.iter().map(|f| f.2).sum();
    let foreign = [
        t.data().join("notes.txt"),
        full[0].1.parent().unwrap().join("keep-me.txt"),
    ];
    for f in &foreign {
        std::fs::write(f, vec![b'x'; 100_000]).unwrap();
    }

    write_file(&t.config(), &format!("max_use = \"{}\"\n", total / 2));
    let out = run_ok(&mut t.flush(&[]));
    let err = stderr(&out);
    let kept = minute_files(&t.data());
    let used: u64 = kept.iter().map(|f| f.2).sum();
    assert!(
        used <= total / 2,
        "{used} bytes kept of a limit of {}",
        total / 2
    );
    assert!(used > (total / 2).saturating_sub(full.iter().map(|f| f.2).max().unwrap() * 2));
    let oldest_kept = kept.first().unwrap().0;
    for (minute, path, _) in &full {
        if !kept.iter().any(|k| &k.1 == path) {
            assert!(
                *minute <= oldest_kept,
                "{} went before an older file",
                path.display()
            );
        }
    }
    for f in &foreign {
        assert!(f.exists(), "{} was deleted", f.display());
        assert!(err.contains(&f.display().to_string()), "not named: {err}");
    }
    assert!(err.contains("retention deleted"), "{err}");
    // Named once: the next run is quiet about them.
    let again = stderr(&run_ok(&mut t.flush(&[])));
    assert!(!again.contains("keep-me.txt"), "{again}");
    assert_eq!(
        minute_files(&t.data()).len(),
        kept.len(),
        "a second run deleted more"
    );
}

/// Guards `keep_free` on a nearly full file system: the oldest minutes go until the data file
/// system has the free space asked for; a file we did not write (here what filled the disk)
/// stays.
#[test]
fn retention_keep_free_makes_room_on_a_nearly_full_tmpfs() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 40000 --hosts 1 --seed 63 --duration 40m");
    let _disk = crate::reliability::Tmpfs::mount(&t.data(), "16m");
    t.backfill(&corpus);
    run_ok(&mut t.flush(&["--all"]));
    let full = minute_files(&t.data());
    let free = || {
        let st = nix::sys::statvfs::statvfs(&t.data()).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    };
    // Fill the disk up to 512 KiB free.
    let filler = t.data().join("filler");
    std::fs::write(&filler, vec![0u8; (free() - 512 * 1024) as usize]).unwrap();
    assert!(free() < 1 << 20);

    write_file(&t.config(), "keep_free = \"2M\"\n");
    let out = run_ok(&mut t.flush(&[]));
    assert!(free() >= 2 << 20, "{} bytes free: {}", free(), stderr(&out));
    assert!(filler.exists());
    let kept = minute_files(&t.data());
    assert!(
        !kept.is_empty() && kept.len() < full.len(),
        "{} of {}",
        kept.len(),
        full.len()
    );
    let oldest_kept = kept.first().unwrap().0;
    assert!(full
        .iter()
        .filter(|f| !kept.contains(f))
        .all(|f| f.0 < oldest_kept));
}

/// Guards that retention never deletes the file of a minute that still has rows in the buffer
/// (they would come back as a partial file), even with a limit every file is over.
#[test]
fn retention_keeps_minutes_that_still_have_rows_in_the_buffer() {
    let t = TestDir::new();
    // Entries up to now: the newest minute is not complete yet for a collector that reads them
    // (its watermark is the time it caught up, less a grace).
    let start = (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ");
    let args = |seed: u32, n: u32| {
        format!("-n {n} --hosts 1 --seed {seed} --duration 10m --start {start}")
    };
    t.archive("first", &args(64, 2000));
    let files = minute_files(&t.data());
    // Late entries of another source for the same minutes: the last of them is not complete
    // (the watermark stands in it), so its rows stay in the buffer after the next flush.
    let late = t.corpus("late", &args(65, 500));
    t.backfill(&late);
    write_file(&t.config(), "max_use = \"1\"\n");
    run_ok(&mut t.flush(&[]));
    let left = t
        .with_buffer(|c| {
            c.query_row(
                "SELECT epoch_us(min(minute_key)) FROM journal_logs",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
        })
        .unwrap()
        .expect("rows of the newest minute are still in the buffer");
    let kept = minute_files(&t.data());
    for f in files.iter().filter(|f| f.0 >= left) {
        assert!(
            kept.iter().any(|k| k.1 == f.1),
            "{} was deleted with rows of its minute in the buffer",
            f.1.display()
        );
    }
    assert!(kept.iter().all(|k| k.0 >= left), "an older file was kept");
    assert!(kept.len() < files.len(), "nothing was deleted");
}

/// Guards the metrics: both programs' `*.prom` files pass `promtool check metrics`, say what
/// happened (entries read, exported, journald's own losses by unit), keep jp-flush's counters
/// growing across runs, and are served by a real node_exporter's textfile collector on loopback.
#[test]
fn metrics_pass_promtool_count_journald_losses_and_are_scraped_by_node_exporter() {
    let t = TestDir::new();
    let metrics = t.path().join("metrics");
    write_file(
        &t.config(),
        &format!("metrics_directory = \"{}\"\n", metrics.display()),
    );
    let journal = t.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let entry = |i: u64, fields: &[(&str, &str)]| RawEntry {
        realtime_usec: 1_709_251_200_000_000 + i * 1_000_000,
        fields: fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
    };
    let dropped = |i: u64, n: &str, unit: &str, transport: &str| {
        entry(
            i,
            &[
                ("MESSAGE_ID", "a596d6fe7bfa4994828e72309e95d61e"),
                ("MESSAGE", &format!("Suppressed {n} messages from {unit}")),
                ("N_DROPPED", n),
                ("_TRANSPORT", transport),
                ("SYSLOG_IDENTIFIER", "systemd-journald"),
            ],
        )
    };
    let mut entries: Vec<RawEntry> = (0..50)
        .map(|i| entry(i, &[("MESSAGE", "hello"), ("PRIORITY", "6")]))
        .collect();
    entries.push(dropped(50, "42", "noisy.service", "driver"));
    entries.push(dropped(51, "8", "noisy.service", "driver"));
    entries.push(dropped(52, "5", "other.service", "driver"));
    // Anyone can log this MESSAGE_ID; only journald's own driver messages count.
    entries.push(dropped(53, "1000", "forged.service", "journal"));
    journal_file(&journal.join("system.journal"), &entries);
    t.backfill(&journal);
    run_ok(&mut t.flush(&["--all"]));

    let collector = metrics.join("journal_parquet_collector.prom");
    let flush = metrics.join("journal_parquet_flush.prom");
    for file in [&collector, &flush] {
        let out = run(Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(file).unwrap()));
        assert!(
            out.status.success(),
            "promtool on {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    // The guide's metrics table names exactly the metrics the programs write (the names are
    // written once, beside their counters; the table is held to them here).
    let written: BTreeSet<String> = [&collector, &flush]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|l| l.split(' ').next())
                .map(str::to_owned)
        })
        .collect();
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md")).unwrap();
    let documented: BTreeSet<String> = guide
        .lines()
        .filter(|l| l.trim_start().starts_with("| `journal_parquet_"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or("")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|n| {
            let bare = n.split('{').next().unwrap().to_owned();
            match bare.strip_prefix('_') {
                Some(rest) => format!("journal_parquet_{rest}"),
                None => bare,
            }
        })
        .collect();
    assert_eq!(written, documented, "docs/guide.md's metrics table");
    let sample = |file: &std::path::Path, key: &str| -> f64 {
        let text = std::fs::read_to_string(file).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("journal_parquet_{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sample(&collector, "entries_read_total"), 54.0);
    assert_eq!(sample(&collector, "entries_committed_total"), 54.0);
    assert_eq!(
        sample(
            &collector,
            "journald_suppressed_total{unit=\"noisy.service\"}"
        ),
        50.0
    );
    assert_eq!(
        sample(
            &collector,
            "journald_suppressed_total{unit=\"other.service\"}"
        ),
        5.0
    );
    assert!(!std::fs::read_to_string(&collector)
        .unwrap()
        .contains("forged"));
    assert_eq!(sample(&flush, "entries_exported_total"), 54.0);
    assert!(sample(&flush, "parquet_bytes_written_total") > 0.0);
    assert!(sample(&flush, "last_flush_success_timestamp_seconds") > 1.7e9);
    // A second run adds to the counters of the first.
    run_ok(&mut t.flush(&["--all"]));
    assert_eq!(sample(&flush, "flush_runs_total"), 2.0);
    assert_eq!(sample(&flush, "entries_exported_total"), 54.0);

    // node_exporter's textfile collector, on loopback only.
    let port = free_port();
    let _exporter = KillOnDrop(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                metrics.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter (Debian package prometheus-node-exporter)"),
    );
    let scrape = || -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    let mut body = String::new();
    eventually(Duration::from_secs(20), "node_exporter to answer", || {
        body = scrape();
        body.contains("journal_parquet_")
    });
    assert!(
        body.contains("journal_parquet_entries_read_total 54"),
        "{body}"
    );
    assert!(
        body.contains("journal_parquet_entries_exported_total 54"),
        "{body}"
    );
    assert!(body.contains("node_textfile_scrape_error 0"), "{body}");
}

/// Guards upgrades from buffer schema 3 (the column types of Parquet schema 2): a segment left
/// by the earlier version is sealed by the collector, which goes on in a new one, and jp-flush
/// exports its rows with the new types, with the rows read after the upgrade, once each.
#[test]
fn segments_of_the_previous_version_are_sealed_and_flushed_after_an_upgrade() {
    let t = TestDir::new();
    synthetic_segment(&t, 1, BUSY_MINUTE, 0, 200);
    let old = t.segments()[0].clone();
    let conn = duckdb::Connection::open(&old).unwrap();
    conn.execute_batch(
        "ALTER TABLE journal_logs ALTER priority TYPE UTINYINT;
         ALTER TABLE journal_logs ALTER pid TYPE INTEGER;
         ALTER TABLE journal_logs ALTER uid TYPE INTEGER;
         ALTER TABLE journal_logs ALTER gid TYPE INTEGER;
         ALTER TABLE journal_logs ALTER monotonic_usec TYPE UBIGINT;
         ALTER TABLE journal_logs ALTER fields TYPE JSON;
         UPDATE segment_meta SET schema_version = 3;
         CHECKPOINT;",
    )
    .unwrap();
    drop(conn);

    let corpus = t.corpus("corpus", "-n 300 --hosts 1 --seed 31 --duration 1m");
    t.backfill(&corpus);
    assert!(
        t.segments().len() >= 2,
        "the old segment was sealed, not written to"
    );
    run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), 500);
    let schemas: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["_schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas.len(), 1, "{schemas:?}");
    let schema = schemas.first().unwrap();
    assert!(
        schema.contains("uid:int64") && schema.contains("fields:string"),
        "{schema}"
    );
    assert!(!schema.contains("uint"), "{schema}");
}

/// Guards the order of a salvage: the damaged minute file is set aside only once the file that
/// replaces it (its readable rows and the buffer's) is durable. A run killed before the copy,
/// one failing there (a full disk), and one killed between the set-aside and the rename each
/// leave the damaged file in the tree for the next run to salvage again: its readable rows are
/// never only in the set-aside file.
#[test]
fn salvaged_rows_survive_a_crash_at_every_step_of_the_rewrite() {
    use std::os::unix::process::ExitStatusExt;
    let t = TestDir::new();
    let file = damaged_minute_and_one_more_entry(&t);
    for fault in [
        "flush-minute-before-copy",
        "flush-minute-before-copy:error",
        "flush-minute-before-rename",
    ] {
        let out = run(t.flush(&[]).env("JP_FAULT", fault));
        match fault.ends_with(":error") {
            true => assert_eq!(out.status.code(), Some(1), "{fault}: {}", stderr(&out)),
            false => assert_eq!(out.status.signal(), Some(9), "{fault}: {}", stderr(&out)),
        }
        assert!(
            file.exists(),
            "{fault}: the damaged file is still in the tree"
        );
        assert_eq!(buffered_rows(&t), 1, "{fault}: the buffer's row stays");
    }
    let out = run_ok(&mut t.flush(&[]));
    let err = stderr(&out);
    assert!(
        err.contains("is damaged") && err.contains("250 rows"),
        "{err}"
    );
    assert!(!err.contains("Unknown error code"), "{err}");
    let rows = parquet_rows(&t.data());
    let in_tree = rows
        .iter()
        .filter(|r| r["_file"].as_str().is_some_and(|f| f.ends_with(".parquet")))
        .count();
    assert_eq!(in_tree, 251, "the readable row groups and the new entry");
    assert_eq!(buffered_rows(&t), 0);
}

/// Guards the one-pass write of many small minutes (`flush::fresh`): a run killed while it
/// puts them in place leaves its unplaced files where no `*.parquet` reader sees them, no
/// minute twice, and the rows of every minute in the buffer until its file is in place; the
/// next run writes every entry once and removes what the killed one left.
#[test]
fn many_small_minutes_go_in_one_pass_and_a_kill_in_it_shows_nothing_twice() {
    use std::os::unix::process::ExitStatusExt;
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 2000 --hosts 2 --seed 41 --duration 6h");
    t.backfill(&corpus);
    let parts = t.data().join(".jp-flush-parts");
    let out = run(t
        .flush(&["--all"])
        .env("JP_FAULT", "flush-minute-before-rename@200"));
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert!(parts.is_dir(), "the killed pass left its files");
    let rows = parquet_rows(&t.data());
    let files: BTreeSet<&str> = rows.iter().map(|r| r["_file"].as_str().unwrap()).collect();
    assert_eq!(files.len(), 199, "the minutes put in place before the kill");
    let cursors: BTreeSet<&str> = rows.iter().map(|r| r["cursor"].as_str().unwrap()).collect();
    assert_eq!(cursors.len(), rows.len(), "no entry twice");
    assert_eq!(buffered_rows(&t), 2000, "every row stays until the delete");
    // Our own reader sees the same: the unplaced files are not minute files.
    let counts = t.query_value(&["SELECT count(*), count(DISTINCT cursor) FROM journal"]);
    assert_eq!(counts, format!("{0},{0}", rows.len()));
    let out = run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    let cursors: BTreeSet<&str> = rows.iter().map(|r| r["cursor"].as_str().unwrap()).collect();
    assert_eq!(
        (rows.len(), cursors.len()),
        (2000, 2000),
        "{}",
        stderr(&out)
    );
    assert_eq!(buffered_rows(&t), 0);
    assert!(!parts.exists(), "the killed pass's files are gone");
    let files = rows
        .iter()
        .map(|r| r["_file"].as_str().unwrap())
        .collect::<BTreeSet<_>>();
    assert!(files.len() > 500, "{} minute files", files.len());
}
