//! Compaction (`compact_after`): old days become day files (or hour files), swapped in atomically,
//! with every entry once for every reader at every instant, a kill at any step included.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::harness::*;

/// The archive's files, by path relative to DATA (the catalogue and work directories aside).
fn archive_names(t: &TestDir) -> Vec<String> {
    let mut names: Vec<String> = parquet_files(&t.data())
        .iter()
        .map(|p| {
            p.strip_prefix(t.data())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// How many times each cursor appears in the tree, read by pyarrow (not our code).
fn cursor_counts_in_tree(t: &TestDir) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in parquet_rows(&t.data()) {
        *counts
            .entry(row["cursor"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

/// `count(*)` and `count(DISTINCT cursor)` of a plain DuckDB glob over the archive's depth, as an
/// operator's own script reads it.
fn glob_counts(conn: &duckdb::Connection, data: &Path) -> duckdb::Result<(u64, u64)> {
    conn.query_row(
        &format!(
            "SELECT count(*), count(DISTINCT cursor) FROM read_parquet('{}/*/*/*/*/*.parquet')",
            data.display()
        ),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

fn set_config(t: &TestDir, text: &str) {
    write_file(&t.config(), text);
}

/// A metric's value in jp-flush's metrics file.
fn flush_metric(t: &TestDir, name: &str) -> f64 {
    let text = std::fs::read_to_string(t.state().join("journal_parquet_flush.prom")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("journal_parquet_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Guards compaction end to end: every old day of every host becomes one day file, sorted by
/// time, in row groups of at most 122,880 rows, naming its minutes in its metadata; every entry
/// is in it once; queries (whole and by `--since`/`--until`) and the catalogue answer as they did
/// over the minute files; a second run has nothing to do; `--compact` without `compact_after` is a config error.
#[test]
fn compaction_swaps_old_days_for_sorted_day_files_holding_every_entry_once() {
    let t = TestDir::new();
    let corpus = t.archive("corpus", "-n 20000 --hosts 2 --seed 21 --duration 3d");
    let expected = journalctl_json(&corpus);
    let hour = [
        "--since",
        "2024-03-02 05:00:00",
        "--until",
        "2024-03-02 06:30:00",
    ];
    let in_hour = |t: &TestDir| {
        let mut args = hour.to_vec();
        args.push("SELECT count(*), count(DISTINCT cursor), min(timestamp) FROM journal");
        let out = run_ok(&mut t.query(&[&["--format", "csv"], &args[..]].concat()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let hour_before = in_hour(&t);
    let minutes_before = archive_names(&t).len();

    let out = run(&mut t.flush(&["--compact"]));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("compact_after"), "{}", stderr(&out));

    set_config(&t, "compact_after = \"1d\"\n");
    run_ok(&mut t.flush(&["--compact"]));
    let names = archive_names(&t);
    assert!(
        names.len() >= 6 && minutes_before > 100 * names.len(),
        "{names:?}"
    );
    for name in &names {
        let parts: Vec<&str> = name.split('/').collect();
        let day = format!("{}{}{}.parquet", parts[1], parts[2], parts[3]);
        assert_eq!(parts[4], day, "one day file a day directory: {names:?}");
    }
    assert!(
        !t.data().join(".jp-compact").exists(),
        "nothing left of the work"
    );

    // Every entry once, read by pyarrow.
    let counts = cursor_counts_in_tree(&t);
    assert_eq!(counts.len(), expected.len());
    assert!(counts
        .iter()
        .all(|(c, n)| *n == 1 && expected.contains_key(c)));

    // Each file: sorted, row groups bounded, its minutes and schema in its metadata.
    let conn = duckdb::Connection::open_in_memory().unwrap();
    for name in &names {
        let f = t.data().join(name);
        let f = f.display();
        let (backwards, minutes): (u64, String) = conn
            .query_row(
                &format!(
                    "SELECT count(*) FILTER (WHERE back), \
                            (SELECT string_agg(m, ',' ORDER BY m) FROM (SELECT DISTINCT \
                             strftime(timestamp, '%H%M') AS m FROM read_parquet('{f}'))) \
                     FROM (SELECT timestamp < lag(timestamp) OVER (ORDER BY file_row_number) \
                           AS back FROM read_parquet('{f}', file_row_number = true))"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(backwards, 0, "{name} is sorted by timestamp");
        let kv: BTreeMap<String, String> = {
            let mut st = conn
                .prepare(&format!(
                    "SELECT decode(key), decode(value) FROM parquet_kv_metadata('{f}')"
                ))
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(kv["journal_parquet_schema"], "3");
        assert_eq!(kv["journal_parquet_minutes"], minutes, "{name}");
        let biggest: u64 = conn
            .query_row(
                &format!("SELECT max(row_group_num_rows) FROM parquet_metadata('{f}')"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(biggest <= 122_880);
    }

    // Queries answer as before: pruned by name and row groups, and whole.
    assert_eq!(in_hour(&t), hour_before);
    assert_eq!(
        t.query_value(&["SELECT count(DISTINCT cursor) FROM journal"]),
        expected.len().to_string()
    );
    // The catalogue reads the day files too.
    let catalogue = duckdb::Connection::open_with_flags(
        t.data().join("journal.duckdb"),
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let in_catalogue: u64 = catalogue
        .query_row("SELECT count(DISTINCT cursor) FROM journal", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(in_catalogue, expected.len() as u64);
    assert_eq!(flush_metric(&t, "compacted_days_total"), names.len() as f64);
    assert_eq!(
        flush_metric(&t, "compacted_files_replaced_total"),
        minutes_before as f64
    );

    // Nothing left to do: the tree stays byte for byte.
    let before = parquet_digest(&t.data());
    run_ok(&mut t.flush(&["--compact"]));
    assert_eq!(parquet_digest(&t.data()), before);
}

/// Guards hour files and late entries: a day over `compact_day_max_rows` becomes hour files; an
/// entry that arrives later for a compacted day becomes a minute file beside them, read once by
/// every query, and the next (timer) run folds it in; a file of the admin's in the day directory
/// stays where it was.
#[test]
fn a_late_entry_becomes_a_minute_file_beside_the_compacted_day_and_is_folded_in_next() {
    let t = TestDir::new();
    let corpus = t.archive("corpus", "-n 12000 --hosts 2 --seed 22 --duration 26h");
    let mut expected = journalctl_json(&corpus);
    set_config(&t, "compact_after = \"1d\"\ncompact_day_max_rows = 1000\n");
    run_ok(&mut t.flush(&["--compact"]));
    let names = archive_names(&t);
    let host = names[0].split('/').next().unwrap().to_owned();
    let day_dir = t.data().join(&host).join("2024/03/01");
    let hours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{host}/2024/03/01/")))
        .collect();
    assert!(hours.len() > 12, "hour files: {names:?}");
    assert!(
        hours.iter().all(|n| n.len() == host.len() + 31),
        "{hours:?}"
    );
    write_file(&day_dir.join("NOTES.txt"), "the admin's\n");

    // A late entry for 2024-03-01 05:07, from the same host.
    let late = t.path().join("late");
    std::fs::create_dir_all(&late).unwrap();
    journal_file(
        &late.join("late.journal"),
        &[RawEntry {
            realtime_usec: 1_709_269_620_000_000,
            fields: vec![
                ("MESSAGE".into(), b"a late entry".to_vec()),
                ("_HOSTNAME".into(), host.as_bytes().to_vec()),
            ],
        }],
    );
    expected.extend(journalctl_json(&late));
    t.backfill(&late);
    // Flushed with compaction off, as between two compactions.
    set_config(&t, "");
    run_ok(&mut t.flush(&["--all"]));
    assert!(day_dir.join("20240301-0507.parquet").exists());
    assert_eq!(
        t.query_value(&["SELECT count(*) || ' ' || count(DISTINCT cursor) FROM journal"]),
        format!("{0} {0}", expected.len())
    );

    // The timer's run (no --compact) folds it in.
    set_config(&t, "compact_after = \"1d\"\ncompact_day_max_rows = 1000\n");
    run_ok(&mut t.flush(&[]));
    assert!(!day_dir.join("20240301-0507.parquet").exists());
    assert!(day_dir.join("20240301-05.parquet").exists());
    assert_eq!(
        std::fs::read_to_string(day_dir.join("NOTES.txt")).unwrap(),
        "the admin's\n"
    );
    let counts = cursor_counts_in_tree(&t);
    assert_eq!(counts.len(), expected.len());
    assert!(counts.values().all(|n| *n == 1));
}

/// Guards "exactly once for every reader, at every instant": readers count the archive in a loop
/// (`journal-parquet query`, and a plain DuckDB glob) while jp-flush compacts and is killed at
/// each step of several days (after writing a file, before the swap, after it); every count any
/// reader gets is exact, the tree is exact after each kill, and the next run finishes the work.
#[test]
fn compaction_killed_at_every_step_never_shows_an_entry_twice_or_misses_one() {
    let t = Arc::new(TestDir::new());
    let corpus = t.archive("corpus", "-n 20000 --hosts 2 --seed 23 --duration 3d");
    let n = journalctl_json(&corpus).len() as u64;
    set_config(&t, "compact_after = \"1d\"\n");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((Vec::<(u64, u64)>::new(), 0u64)));
    let readers: Vec<_> = (0..2)
        .map(|which| {
            let (t, stop, seen) = (t.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let conn = duckdb::Connection::open_in_memory().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let got = match which {
                        0 => glob_counts(&conn, &t.data()).ok(),
                        _ => {
                            let out = run(&mut t.query(&[
                                "--format",
                                "csv",
                                "SELECT count(*) || ',' || count(DISTINCT cursor) FROM journal",
                            ]));
                            let text = String::from_utf8_lossy(&out.stdout).into_owned();
                            text.lines().nth(1).and_then(|l| {
                                let (a, b) = l.trim_matches('"').split_once(',')?;
                                Some((a.parse().ok()?, b.parse().ok()?))
                            })
                        }
                    };
                    let mut seen = seen.lock().unwrap();
                    match got {
                        Some(counts) => seen.0.push(counts),
                        None => seen.1 += 1,
                    }
                }
            })
        })
        .collect();

    let conn = duckdb::Connection::open_in_memory().unwrap();
    let mut killed = 0;
    for at in 1..=3 {
        for point in [
            "compact-file-written",
            "compact-before-exchange",
            "compact-after-exchange",
        ] {
            let out = run(t
                .flush(&["--compact"])
                .env("JP_FAULT", format!("{point}@{at}")));
            if out.status.success() {
                continue; // fewer days left than `at`
            }
            killed += 1;
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&out.status),
                Some(9),
                "{point}@{at}: {}",
                stderr(&out)
            );
            assert_eq!(
                glob_counts(&conn, &t.data()).unwrap(),
                (n, n),
                "{point}@{at}"
            );
            assert_eq!(
                t.query_value(&["SELECT count(*) || ' ' || count(DISTINCT cursor) FROM journal"]),
                format!("{n} {n}"),
                "{point}@{at}"
            );
        }
    }
    assert!(killed >= 6, "killed {killed} times");
    run_ok(&mut t.flush(&["--compact"]));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let names = archive_names(&t);
    assert!(
        names
            .iter()
            .all(|n| n.rsplit('/').next().unwrap().len() == 16),
        "day files only: {names:?}"
    );
    assert!(!t.data().join(".jp-compact").exists());
    let counts = cursor_counts_in_tree(&t);
    assert_eq!(counts.len() as u64, n);
    assert!(counts.values().all(|c| *c == 1));
    let (counts, failed) = &*seen.lock().unwrap();
    eprintln!(
        "readers: {} exact counts, {failed} reads failed (a file gone between listing and reading)",
        counts.len()
    );
    assert!(counts.len() >= 10, "{} reads", counts.len());
    assert!(
        counts.iter().all(|c| *c == (n, n)),
        "a reader saw {:?}, not ({n}, {n})",
        counts.iter().find(|c| **c != (n, n))
    );
}
