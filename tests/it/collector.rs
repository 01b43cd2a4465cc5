//! The collector against a real journald and real journal files.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use journal_parquet::row::WHOLE_ENTRY_SQL;

/// Guards the tail start and the exactly-once restart: entries from before the first start are
/// not read, entries after it are, and a restart neither loses nor repeats one.
#[test]
fn tail_start_then_restart_loses_and_repeats_nothing() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    for i in 0..20 {
        journald.send_message(&format!("before-{i}"));
    }
    journald.wait_written("before-19");

    let (mut child, _n) = start_collector(&t, &["--directory", &dir]);
    for i in 0..200 {
        journald.send_message(&format!("first-{i}"));
    }
    journald.logger("first-logger");
    eventually(
        Duration::from_secs(30),
        "first entries in the buffer",
        || {
            let m = t.messages();
            m.iter().any(|m| m == "first-199") && m.iter().any(|m| m == "first-logger")
        },
    );
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());

    // Written while no collector runs: the journal is the buffer.
    for i in 0..200 {
        journald.send_message(&format!("between-{i}"));
    }
    let (mut child, _n) = start_collector(&t, &["--directory", &dir]);
    for i in 0..200 {
        journald.send_message(&format!("second-{i}"));
    }
    eventually(
        Duration::from_secs(30),
        "second entries in the buffer",
        || t.messages().iter().any(|m| m == "second-199"),
    );
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());

    let messages = t.messages();
    let ours: Vec<&String> = messages
        .iter()
        .filter(|m| {
            m.starts_with("first-") || m.starts_with("between-") || m.starts_with("second-")
        })
        .collect();
    let distinct: BTreeSet<&String> = ours.iter().copied().collect();
    assert_eq!(ours.len(), 601, "every entry once: {} rows", ours.len());
    assert_eq!(distinct.len(), 601);
    assert!(
        !messages.iter().any(|m| m.starts_with("before-")),
        "entries from before the first start must not be read"
    );
    let counts = t.cursor_counts();
    assert!(counts.values().all(|&n| n == 1), "a cursor appears twice");
}

/// Guards reading the system journal when no --directory is given.
#[test]
fn reads_the_system_journal_by_default() {
    assert!(
        std::path::Path::new("/run/systemd/journal/socket").exists(),
        "no system journald runs here: the README's test command starts one"
    );
    let t = TestDir::new();
    let (mut child, _n) = start_collector(&t, &[]);
    let marker = format!("jp-default-source-{}", std::process::id());
    // logger --journald reads fields from stdin.
    let mut logger = std::process::Command::new("logger")
        .arg("--journald")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    logger
        .stdin
        .take()
        .unwrap()
        .write_all(format!("MESSAGE={marker}\nSYSLOG_IDENTIFIER=jp-test\n").as_bytes())
        .unwrap();
    assert!(logger.wait().unwrap().success());
    eventually(
        Duration::from_secs(30),
        "the marker from the system journal",
        || t.messages().contains(&marker),
    );
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
}

/// Guards lossless reading: every entry of a generated corpus (binary values, repeated fields,
/// 64 KiB messages, two hosts) arrives once, the whole entry (`fields` and the columns, by
/// `WHOLE_ENTRY_SQL`) equal to journalctl's JSON.
#[test]
fn corpus_arrives_once_with_every_field_equal_to_journalctl() {
    let t = TestDir::new();
    let corpus = t.corpus(
        "corpus",
        "-n 6000 --hosts 2 --seed 7 --duration 10m \
         --large-every 2000 --binary-fraction 0.03 --dup-field-fraction 0.03",
    );
    let expected = journalctl_json(&corpus);
    assert_eq!(expected.len(), 6000);

    t.backfill(&corpus);

    let rows: Vec<(String, String, Option<String>, Option<String>)> = t.with_buffer(|c| {
        let mut st = c
            .prepare(&format!(
                "SELECT cursor, ({WHOLE_ENTRY_SQL})::VARCHAR, message, hostname FROM journal_logs"
            ))
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    });
    assert_eq!(rows.len(), expected.len(), "every entry exactly once");
    let mut binary = 0;
    let mut repeated = 0;
    let mut large = 0;
    for (cursor, fields, message, hostname) in &rows {
        let got: serde_json::Value = serde_json::from_str(fields).unwrap();
        let want = expected
            .get(cursor)
            .unwrap_or_else(|| panic!("{cursor} is not in the corpus"));
        assert_eq!(&got, want, "entry {cursor} differs from journalctl's");
        match &want["MESSAGE"] {
            serde_json::Value::String(s) => {
                assert_eq!(message.as_deref(), Some(s.as_str()));
                if s.len() >= 65536 {
                    large += 1;
                }
            }
            serde_json::Value::Array(a) if a.iter().all(|v| v.is_number()) => binary += 1,
            serde_json::Value::Array(_) => repeated += 1,
            _ => {}
        }
        assert_eq!(hostname.as_deref(), want["_HOSTNAME"].as_str());
    }
    assert!(
        binary > 0 && repeated > 0 && large > 0,
        "{binary} {repeated} {large}"
    );
}

/// Guards exactly-once under crashes: kill -9 at random points, many times, then --once.
#[test]
fn kill_9_at_random_points_then_once_keeps_every_entry_exactly_once() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 60000 --hosts 3 --seed 11 --duration 20m");
    let expected = journalctl_json(&corpus);
    let dir = corpus.to_str().unwrap();

    let mut rng = 0x9e3779b97f4a7c15u64;
    for round in 0..12 {
        let mut child = t
            .collector(&["--directory", dir, "--from-head"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ms = 30 + rng % 900;
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {ms} ms ({status})");
    }
    run_ok(&mut t.collector(&["--directory", dir, "--once"]));

    let counts = t.cursor_counts();
    let dupes: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        dupes.is_empty(),
        "duplicated: {:?}",
        &dupes[..dupes.len().min(5)]
    );
    let got: BTreeSet<&String> = counts.keys().collect();
    let want: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(got.len(), want.len(), "lost or extra entries");
    assert!(
        got == want,
        "the buffer holds other entries than the corpus"
    );
}

/// Guards the systemd protocol: READY=1 after start, STATUS= readable, STOPPING=1 on SIGTERM,
/// exit 0.
#[test]
fn notify_socket_gets_ready_status_and_stopping() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 500 --hosts 1");
    let (mut child, mut notify) = start_collector(
        &t,
        &["--directory", corpus.to_str().unwrap(), "--from-head"],
    );
    assert!(
        notify
            .seen()
            .iter()
            .any(|m| m.contains("STATUS=") && m.contains("entries read since start")),
        "{:?}",
        notify.seen()
    );
    sigterm(&child);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(wait_with_limit(&mut child, Duration::from_secs(5)).success());
}

/// Guards exit 78 for a bad config, naming the file and the key.
#[test]
fn bad_config_exits_78_naming_the_file_and_key() {
    let t = TestDir::new();
    write_file(
        &t.config(),
        "commit_interval_ms = 5000\nstate_dri = \"/tmp\"\n",
    );
    let out = run(&mut t.collector(&["--once"]));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(t.config().to_str().unwrap()), "{err}");
    assert!(err.contains("state_dri"), "{err}");

    write_file(&t.config(), "log_level = \"loud\"\n");
    let out = run(&mut t.collector(&["--once"]));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("log_level"), "{}", stderr(&out));

    for (bad, key) in [
        ("include_units = [\"\"]\n", "include_units"),
        ("max_priority = 9\n", "max_priority"),
        ("max_use = \"5X\"\n", "max_use"),
        ("max_age = \"400\"\n", "max_age"),
    ] {
        write_file(&t.config(), bad);
        let out = run(&mut t.collector(&["--once"]));
        assert_eq!(out.status.code(), Some(78), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{}", stderr(&out));
    }

    let out = run(&mut t.collector(&["--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");

    // A bad level from the flag or the environment is not the config file's fault, even when
    // there is one.
    write_file(&t.config(), "commit_interval_ms = 5000\n");
    let out = run(&mut t.collector(&["--once", "--log-level", "loud"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--log-level"), "{err}");
    assert!(!err.contains(t.config().to_str().unwrap()), "{err}");
    let out = run(t
        .collector(&["--once"])
        .env("JOURNAL_PARQUET_LOG_LEVEL", "loud"));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("$JOURNAL_PARQUET_LOG_LEVEL"), "{err}");
    assert!(!err.contains(t.config().to_str().unwrap()), "{err}");
}

/// Guards exit 1 with the path named when the state directory cannot be written.
#[test]
fn unwritable_state_dir_exits_1_naming_the_path() {
    let t = TestDir::new();
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // Root ignores permission bits: a read-only mount is what stops it.
    let mounted = nix::unistd::geteuid().is_root()
        && run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "jp-test"])
            .arg(&ro))
        .status
        .success();
    if !mounted {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let state = ro.join("state");
    let out = run(std::process::Command::new(COLLECTOR)
        .arg("--state-dir")
        .arg(&state)
        .arg("--config")
        .arg(t.config())
        .arg("--once"));
    if mounted {
        run(std::process::Command::new("umount").arg(&ro));
    }
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(state.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

/// Guards the hand-off: jp-flush gets the buffer again and again while the collector follows a
/// journal being written, and nothing is lost or repeated.
#[test]
fn jp_flush_gets_the_buffer_while_the_collector_runs() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, _n) = start_collector(&t, &["--directory", &dir]);
    let writer = {
        let runtime = journald.runtime_dir();
        std::thread::spawn(move || {
            let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
            for i in 0..20_000 {
                let msg = format!("MESSAGE=handoff-{i}\nSYSLOG_IDENTIFIER=jp-test\n");
                while sock
                    .send_to(msg.as_bytes(), runtime.join("socket"))
                    .is_err()
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if i % 1000 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let mut waits = Vec::new();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        run_ok(&mut t.flush(&[]));
        waits.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.join().unwrap();
    eventually(Duration::from_secs(60), "all hand-off entries", || {
        t.messages()
            .iter()
            .filter(|m| m.starts_with("handoff-"))
            .count()
            >= 20_000
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    let n = t
        .messages()
        .into_iter()
        .filter(|m| m.starts_with("handoff-"))
        .collect::<BTreeSet<_>>()
        .len();
    assert_eq!(n, 20_000);
    assert!(t.cursor_counts().values().all(|&n| n == 1));
    eprintln!("jp-flush runs took {waits:?}");
}

fn collector_state_gaps(t: &TestDir) -> u64 {
    t.query_u64("SELECT gaps_total FROM collector_state")
}

/// Guards gap detection: when the saved entry was vacuumed away, the collector says so with the
/// size of the jump, counts the gap, and reads everything that is still there.
#[test]
fn vacuumed_position_is_logged_counted_and_skipped_over() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, _n) = start_collector(&t, &["--directory", &dir]);
    for i in 0..50 {
        journald.send_message(&format!("read-{i}"));
    }
    eventually(Duration::from_secs(30), "read-49", || {
        t.messages().iter().any(|m| m == "read-49")
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());

    for i in 0..30 {
        journald.send_message(&format!("vacuumed-{i}"));
    }
    journald.wait_written("vacuumed-29");
    // Rotate (SIGUSR2 to the journald this test started), then delete the archived file.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(journald.pid()),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    journald.send_message("after-rotation-0");
    journald.wait_written("after-rotation-0");
    let mut removed = 0;
    for e in std::fs::read_dir(&journald.dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains('@') {
            std::fs::remove_file(&p).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "journald did not rotate");
    journald.send_message("after-rotation-1");
    journald.wait_written("after-rotation-1");

    let out = run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    let err = stderr(&out);
    assert!(err.contains("no longer in"), "{err}");
    assert!(err.contains("journal time"), "the jump is described: {err}");
    assert_eq!(collector_state_gaps(&t), 1);
    // The metrics count the entries lost, as many as the log line says were skipped.
    let skipped: u64 = err
        .split(" entries skipped")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of skipped entries: {err}"));
    assert!(skipped >= 30, "{err}");
    let metrics =
        std::fs::read_to_string(t.state().join("journal_parquet_collector.prom")).unwrap();
    assert!(
        metrics.contains(&format!("journal_parquet_gap_entries_total {skipped}\n")),
        "{metrics}"
    );
    let m = t.messages();
    assert!(m.iter().any(|m| m == "after-rotation-0") && m.iter().any(|m| m == "after-rotation-1"));
    assert!(!m.iter().any(|m| m.starts_with("vacuumed-")));
    assert!(t.cursor_counts().values().all(|&n| n == 1));
}

/// Guards the position rules: the buffer wins over a damaged state file (with a warning naming
/// it), the state file gives the position when the buffer is gone, and an unusable state file
/// with no buffer is an error, never a silent restart.
#[test]
fn buffer_position_wins_and_state_file_stands_in_for_a_lost_buffer() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, _n) = start_collector(&t, &["--directory", &dir]);
    for i in 0..20 {
        journald.send_message(&format!("one-{i}"));
    }
    eventually(Duration::from_secs(30), "one-19", || {
        t.messages().iter().any(|m| m == "one-19")
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    let state_file = t.state().join("cursor");
    let good_cursor = std::fs::read_to_string(&state_file).unwrap();

    // Garbage in the state file: the buffer's position wins, nothing is read twice.
    std::fs::write(&state_file, b"\x00garbage").unwrap();
    journald.send_message("two-0");
    journald.wait_written("two-0");
    let out = run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    assert!(
        stderr(&out).contains(state_file.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(t.cursor_counts().values().all(|&n| n == 1));
    assert!(t.messages().iter().any(|m| m == "two-0"));
    assert_ne!(
        std::fs::read_to_string(&state_file).unwrap(),
        "\u{0}garbage",
        "rewritten"
    );

    // The buffer deleted: the state file's restart point stands in. The entries the lost buffer
    // had not written to Parquet (all of them here) are read again, once; then the new one.
    let after_two = std::fs::read_to_string(&state_file).unwrap();
    assert_ne!(after_two, good_cursor);
    assert!(after_two.contains("\nrestart-from "), "{after_two}");
    std::fs::remove_dir_all(t.state().join("buffer")).unwrap();
    journald.send_message("three-0");
    journald.wait_written("three-0");
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    let m = t.messages();
    assert!(m.iter().any(|m| m == "three-0"));
    for i in 0..20 {
        assert!(
            m.contains(&format!("one-{i}")),
            "one-{i} lost with the buffer: {m:?}"
        );
    }
    assert!(m.iter().any(|m| m == "two-0"));
    assert!(t.cursor_counts().values().all(|&n| n == 1));

    // No buffer and an unusable state file: exit 1 naming the file, no guessing.
    let _ = std::fs::remove_dir_all(t.state().join("buffer"));
    std::fs::write(&state_file, b"not a cursor").unwrap();
    let out = run(&mut t.collector(&["--directory", &dir, "--once"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(state_file.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

/// Guards a seal that meets a large batch in hand: the batch stays in hand (a seal never waits
/// for a big commit), goes into the next segment, and every entry still lands once.
#[test]
fn seal_keeps_a_large_batch_in_hand_and_repeats_nothing() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 20000 --hosts 2 --seed 21 --duration 10m");
    let expected = journalctl_json(&corpus);
    // Batches are only committed when full (50,000 entries, whatever their size) or after a
    // minute: the seal meets one.
    write_file(
        &t.config(),
        "commit_interval_ms = 60000\nmax_batch_entries = 50000\nmax_batch_mib = 1024\n",
    );
    let dir = corpus.to_str().unwrap();
    let (mut child, _notify) = start_collector(&t, &["--directory", dir, "--from-head"]);
    // Time to read well over the batch size a seal commits, even on a loaded machine.
    std::thread::sleep(Duration::from_millis(1500));
    let counted = t.cursor_counts();
    assert!(
        counted.len() < expected.len(),
        "the batch was not meant to be committed yet"
    );
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());

    run_ok(&mut t.collector(&["--directory", dir, "--once"]));
    let counts = t.cursor_counts();
    assert!(
        counts.values().all(|&n| n == 1),
        "an entry was committed twice"
    );
    assert_eq!(counts.len(), expected.len(), "an entry was lost");
}

/// Guards the warning for a source with nothing readable (an empty directory, or a user without
/// the systemd-journal group), instead of a silent, empty run.
#[test]
fn empty_journal_source_is_called_out() {
    let t = TestDir::new();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run_ok(&mut t.collector(&["--directory", empty.to_str().unwrap(), "--once"]));
    let err = stderr(&out);
    assert!(
        err.contains("nothing readable in") && err.contains(empty.to_str().unwrap()),
        "{err}"
    );
}

/// Guards the tool's own logging: when stderr is the journal (`$JOURNAL_STREAM` names it), log
/// lines go to journald as entries of their own, with the syslog identifier and a priority per
/// level, and nothing is printed on stderr.
#[test]
fn own_logs_go_to_journald_with_priorities() {
    assert!(
        std::path::Path::new("/run/systemd/journal/socket").exists(),
        "no system journald runs here: the README's test command starts one"
    );
    let t = TestDir::new();
    let empty = t.path().join("empty-for-a-warning");
    std::fs::create_dir(&empty).unwrap();
    // stderr is a pipe that $JOURNAL_STREAM names, as systemd does for StandardError=journal.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&writer)).unwrap();
    let out = t
        .collector(&["--directory", empty.to_str().unwrap(), "--once"])
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stderr(writer)
        .status()
        .unwrap();
    assert!(out.success());
    let mut printed = String::new();
    use std::io::Read;
    reader.read_to_string(&mut printed).unwrap();
    assert_eq!(printed, "", "nothing on stderr when it is the journal");

    let marker = empty.to_str().unwrap().to_owned();
    let mut priorities = BTreeSet::new();
    eventually(
        Duration::from_secs(20),
        "the collector's lines in the journal",
        || {
            let out = run_ok(std::process::Command::new("journalctl").args([
                "-t",
                "journal-parquet",
                "-o",
                "json",
                "--no-pager",
                "--since",
                "-10min",
            ]));
            priorities = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["MESSAGE"].as_str().is_some_and(|m| m.contains(&marker)))
                .filter_map(|v| v["PRIORITY"].as_str().map(str::to_owned))
                .collect();
            priorities.len() >= 2
        },
    );
    // systemd-journal-logger's mapping: warn = 4 (warning: nothing readable), info = 5 (notice:
    // reading … from the tail).
    assert_eq!(priorities, BTreeSet::from(["4".to_owned(), "5".to_owned()]));
}

/// Guards STATUS= catching up with the last commit: refreshes are rate-limited, and one skipped
/// after the last entry of a burst must still be sent (it stayed stale until the next entry,
/// seen in `systemctl status` under systemd).
#[test]
fn status_reports_the_last_commit_of_a_burst() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, notify) = start_collector(&t, &["--directory", &dir]);
    for i in 0..5 {
        journald.send_message(&format!("burst-{i}"));
    }
    // No hand-off (it refreshes STATUS= itself) and nothing else written: only the loop can.
    eventually(Duration::from_secs(10), "STATUS= with 5 read", || {
        notify
            .seen()
            .iter()
            .any(|m| m.contains("STATUS=5 entries read since start"))
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
}

/// Guards reopening a stream's journal to let go of its mapped files (`REOPEN_EVERY`): with a
/// reopen every 7 entries of each stream, every entry of a three-host corpus is read once, in
/// each stream's order.
#[test]
fn reopening_the_journal_often_reads_every_entry_once() {
    use journal_parquet::journal::Source;
    use journal_parquet::streams::Streams;
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 3000 --hosts 3 --seed 11 --duration 5m");
    let expected = journalctl_json(&corpus);
    let mut streams = Streams::open(&Source::Directory(corpus.clone())).unwrap();
    streams.set_reopen_every(7);
    let mut gaps = 0;
    streams
        .position_at(None, journal_parquet::position::FirstStart::Head, &mut gaps)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut last_seqnum: BTreeMap<String, u64> = BTreeMap::new();
    while streams.step_forward().unwrap() {
        let cursor = streams.current().cursor().unwrap();
        let part = |key: &str| {
            cursor
                .split(';')
                .find_map(|p| p.strip_prefix(key))
                .unwrap()
                .to_owned()
        };
        let seqnum = u64::from_str_radix(&part("i="), 16).unwrap();
        if let Some(prev) = last_seqnum.insert(part("s="), seqnum) {
            assert!(seqnum > prev, "{cursor} read after seqnum {prev}");
        }
        assert!(seen.insert(cursor.clone()), "{cursor} read twice");
        streams.mark_read(cursor).unwrap();
    }
    assert_eq!(gaps + streams.take_gaps(), 0);
    assert_eq!(seen.len(), expected.len());
    assert!(seen.iter().all(|c| expected.contains_key(c)));
}

/// Guards `--namespace` when the namespace's journald starts after the collector (systemd starts
/// `systemd-journald@NAME` when a unit first logs there): libsystemd does not see the namespace's
/// directory appear, the collector does, and reads every entry once.
#[test]
fn namespace_whose_journald_starts_later_is_read_once_it_does() {
    let t = TestDir::new();
    let ns = Journald::new_namespace();
    let (mut child, _notify) = start_collector(&t, &["--namespace", &ns]);
    let journald = Journald::start_as(&ns);
    for i in 0..20 {
        journald.send_message(&format!("late-ns-{i}"));
    }
    eventually(Duration::from_secs(30), "late-ns-19", || {
        t.messages().iter().any(|m| m == "late-ns-19")
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    let n = t
        .messages()
        .iter()
        .filter(|m| m.starts_with("late-ns-"))
        .count();
    assert_eq!(n, 20);
    assert!(t.cursor_counts().values().all(|&n| n == 1));
}

/// Guards `--namespace`: the collector reads a journald namespace (the one this test's journald
/// serves) through `sd_journal_open_namespace`, every entry once.
#[test]
fn namespace_source_reads_that_namespace_once() {
    let journald = Journald::start();
    let t = TestDir::new();
    for i in 0..50 {
        journald.send_message(&format!("ns-{i}"));
    }
    journald.wait_written("ns-49");
    let ns = journald.namespace.clone();
    run_ok(&mut t.collector(&["--namespace", &ns, "--from-head", "--once"]));
    let messages: BTreeSet<String> = t
        .messages()
        .into_iter()
        .filter(|m| m.starts_with("ns-"))
        .collect();
    assert_eq!(messages.len(), 50);
    assert!(t.cursor_counts().values().all(|&n| n == 1));
    // --check-config names the source; a namespace and a directory at once is refused.
    let out = run_ok(&mut t.collector(&["--namespace", &ns, "--check-config"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("namespace = \"{ns}\"")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    write_file(
        &t.config(),
        &format!("namespace = \"{ns}\"\njournal_directory = \"/tmp\"\n"),
    );
    let out = run(&mut t.collector(&["--check-config"]));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("namespace"), "{}", stderr(&out));
}

/// Follows a journald while it is written to, its files rotated and every archived file deleted
/// at once, ten times, with a reopen every 300 entries; `wait_each_round`: the next round begins
/// only once this one has arrived. Asserts that the collector never exits, that no entry is read
/// twice, and that every entry of the journal's sequence either arrived or is counted in a gap the
/// log reports with its size. Returns the entries lost (all of them reported) and the log.
fn rotate_and_delete_under_the_reader(wait_each_round: bool) -> (u64, String) {
    let journald = Journald::start();
    let t = TestDir::new();
    write_file(&t.config(), "journal_reopen_entries = 300\n");
    let dir = journald.dir.to_str().unwrap().to_owned();
    let log = t.path().join("collector.log");
    let (mut child, _notify) =
        start_collector_logging(&t, &["--directory", &dir, "--from-head"], &log);
    let mut deleted = 0;
    for round in 0..10 {
        for i in 0..2000 {
            journald.send_message(&format!("vanish-{round}-{i}"));
        }
        journald.rotate();
        for e in std::fs::read_dir(&journald.dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().contains('@') {
                std::fs::remove_file(&p).unwrap();
                deleted += 1;
            }
        }
        if wait_each_round {
            // The next round begins once this one is read: its system.journal is the collector's.
            let last = format!("vanish-{round}-1999");
            eventually(Duration::from_secs(60), &last, || {
                t.messages().contains(&last)
            });
        }
    }
    journald.send_message("vanish-last");
    journald.wait_written("vanish-last");
    eventually(Duration::from_secs(60), "vanish-last", || {
        t.messages().iter().any(|m| m == "vanish-last")
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the collector exited: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(&log).unwrap();

    let counts = t.cursor_counts();
    assert!(counts.values().all(|&n| n == 1), "an entry read twice");
    // Every sequence number from the first read to the last either arrived or was reported.
    let seqnums: BTreeSet<u64> = counts
        .keys()
        .map(|c| {
            let i = c.split(';').find_map(|p| p.strip_prefix("i=")).unwrap();
            u64::from_str_radix(i, 16).unwrap()
        })
        .collect();
    let (first, last) = (*seqnums.first().unwrap(), *seqnums.last().unwrap());
    let missing = (last - first + 1) - seqnums.len() as u64;
    let reported: u64 = text
        .lines()
        .filter_map(|l| {
            l.split(" entries skipped")
                .next()
                .filter(|_| l.contains(" entries skipped"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        missing, reported,
        "entries lost without a gap reported: {text}"
    );
    eprintln!(
        "{deleted} files deleted under the reader: {} entries read, {missing} lost",
        seqnums.len()
    );
    (missing, text)
}

/// Guards files that vanish under the reader (journald and journal-remote rotate and delete files
/// at any moment): the collector never exits (it did: `sd_journal_open_files` fails on a file gone
/// since the listing), no entry is read twice, and every loss is reported as a gap with its size.
#[test]
fn rotated_and_deleted_files_under_the_reader_never_stop_it() {
    rotate_and_delete_under_the_reader(false);
}

/// Guards, with each round waited for, that none is lost: every file deleted here was one the
/// collector had open (it was `system.journal` when the round began), which it reads to its end
/// before it reopens. (Reopening by path alone took up the new `system.journal` of a rotation and
/// skipped the rest of the renamed one, as the gaps of a 5-minute benchmark showed.)
#[test]
fn rotated_files_the_collector_had_open_lose_nothing() {
    let (missing, text) = rotate_and_delete_under_the_reader(true);
    assert_eq!(
        missing, 0,
        "entries lost from files the collector had open: {text}"
    );
}

/// Guards the upgrade from the one-file buffer of the previous version (`STATE/buffer.duckdb`,
/// schema 2, built here table by table as that version made it): the first start adopts it as a
/// sealed segment, and every entry it held arrives in Parquet once, none read twice.
#[test]
fn buffer_of_the_previous_version_is_adopted_and_nothing_is_lost() {
    use crate::reliability::{assert_exactly_once, final_flush, journal_cursors, parquet_cursors};
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 3000 --hosts 2 --seed 51 --duration 10m");
    t.backfill(&corpus);
    let segments = t.segments();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let legacy = t.state().join("buffer.duckdb");
    {
        let conn = duckdb::Connection::open(&legacy).unwrap();
        conn.execute_batch(&format!(
            "ATTACH '{}' AS seg (READ_ONLY);
             CREATE TABLE buffer_meta (schema_version INTEGER NOT NULL);
             INSERT INTO buffer_meta VALUES (2);
             CREATE TABLE journal_logs AS
                 SELECT *, 1::UBIGINT AS commit_no FROM seg.journal_logs;
             CREATE TABLE collector_state AS
                 SELECT cursor, at_head, watermark, gaps_total, updated_at,
                        1::UBIGINT AS last_commit FROM seg.collector_state;
             CREATE TABLE restart_points (commit_no UBIGINT NOT NULL, cursor VARCHAR,
                                          at_head BOOLEAN NOT NULL);
             INSERT INTO restart_points VALUES (1, NULL, true);
             DETACH seg;",
            segments[0].display()
        ))
        .unwrap();
    }
    std::fs::remove_dir_all(t.state().join("buffer")).unwrap();

    let dir = corpus.to_str().unwrap();
    let out = run_ok(&mut t.collector(&["--directory", dir, "--once"]));
    assert!(
        stderr(&out).contains("adopted the buffer of an earlier version (3000 entries)"),
        "{}",
        stderr(&out)
    );
    assert!(!legacy.exists(), "the old file is now a segment");
    assert_eq!(t.query_u64("SELECT count(*) FROM journal_logs"), 3000);
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));
    assert_eq!(n, 3000);
}

/// Guards a journal file that appears before its header is written (journal-remote and journald
/// create the file, then write it): no further event comes for it, so the directory is looked at
/// again until the file can be told, and every entry of it is read.
#[test]
fn journal_file_whose_header_comes_later_is_read() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 500 --hosts 1 --seed 61 --duration 5m");
    let source = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "journal"))
        .unwrap();
    let followed = t.path().join("followed");
    std::fs::create_dir_all(&followed).unwrap();
    let dir = followed.to_str().unwrap().to_owned();
    let (mut child, _notify) = start_collector(&t, &["--directory", &dir, "--from-head"]);
    // Made empty, then filled in place: the fill is no event the collector watches for.
    let file = followed.join("remote-late.journal");
    std::fs::write(&file, b"").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&file, std::fs::read(&source).unwrap()).unwrap();
    eventually(Duration::from_secs(30), "the 500 entries", || {
        t.cursor_counts().len() >= 500
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    let counts = t.cursor_counts();
    assert_eq!(counts.len(), 500);
    assert!(counts.values().all(|&n| n == 1));
}

/// The first value of a field of a `journalctl -o json` entry, as text.
fn field_text(e: &serde_json::Value, name: &str) -> Option<String> {
    match &e[name] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(values) => {
            values.first().and_then(|v| v.as_str()).map(str::to_owned)
        }
        _ => None,
    }
}

/// Guards the filters: each keeps exactly the entries it says (checked against the corpus with
/// rules written out here), the entries left out are counted in the stop line, and excluded
/// fields are gone from the entries kept.
#[test]
fn filters_keep_what_they_say_and_count_what_they_leave_out() {
    let shared = TestDir::new();
    let corpus = shared.corpus("corpus", "-n 3000 --hosts 2 --seed 71 --duration 10m");
    let expected = journalctl_json(&corpus);
    type Rule = fn(&serde_json::Value) -> bool;
    let cases: [(&str, Rule); 3] = [
        ("include_units = [\"nginx.*\", \"ssh*\"]\n", |e| {
            field_text(e, "_SYSTEMD_UNIT")
                .is_some_and(|u| u.starts_with("nginx.") || u.starts_with("ssh"))
        }),
        (
            "exclude_identifiers = [\"kernel\", \"CRON\"]\nmax_priority = 5\n",
            |e| {
                let ident = field_text(e, "SYSLOG_IDENTIFIER");
                let priority = field_text(e, "PRIORITY").and_then(|p| p.parse::<u8>().ok());
                !matches!(ident.as_deref(), Some("kernel" | "CRON"))
                    && priority.is_none_or(|p| p <= 5)
            },
        ),
        (
            "exclude_units = [\"*.scope\"]\ninclude_identifiers = [\"s?s*\"]\n",
            |e| {
                let unit = field_text(e, "_SYSTEMD_UNIT");
                let ident = field_text(e, "SYSLOG_IDENTIFIER").unwrap_or_default();
                !unit.is_some_and(|u| u.ends_with(".scope"))
                    && ident.len() >= 3
                    && ident.starts_with('s')
                    && ident[2..].starts_with('s')
            },
        ),
    ];
    for (config, keep) in cases {
        let t = TestDir::new();
        write_file(&t.config(), config);
        let out = run_ok(&mut t.collector(&[
            "--directory",
            corpus.to_str().unwrap(),
            "--from-head",
            "--once",
        ]));
        run_ok(&mut t.flush(&["--all"]));
        let want: BTreeSet<&String> = expected
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(c, _)| c)
            .collect();
        let got: BTreeSet<String> = parquet_rows(&t.data())
            .iter()
            .map(|r| r["cursor"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got.len(), want.len(), "{config}");
        assert!(want.iter().all(|c| got.contains(*c)), "{config}");
        assert!(
            !want.is_empty() && want.len() < expected.len(),
            "{config} tests nothing"
        );
        let left_out = expected.len() - want.len();
        assert!(
            stderr(&out).contains(&format!("({left_out} left out by the filters")),
            "{config}: {}",
            stderr(&out)
        );
    }

    // The flags of a one-off run replace the config file's lists (here its exclude list).
    let t = TestDir::new();
    write_file(&t.config(), "exclude_identifiers = [\"nginx\"]\n");
    run_ok(&mut t.collector(&[
        "--directory",
        corpus.to_str().unwrap(),
        "--from-head",
        "--once",
        "--exclude-identifier",
        "kernel",
        "--exclude-identifier",
        "CRON",
        "--max-priority",
        "5",
    ]));
    let keep = cases[1].1;
    let want = expected.values().filter(|e| keep(e)).count();
    assert_eq!(t.cursor_counts().len(), want, "flags beat the file");
    let out = run(&mut t.collector(&["--once", "--max-priority", "9"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // exclude_fields: every entry kept, without the fields named.
    let t = TestDir::new();
    write_file(
        &t.config(),
        "exclude_fields = [\"_CMDLINE\", \"_SOURCE_*\"]\n",
    );
    t.backfill(&corpus);
    run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), expected.len());
    let had = expected
        .values()
        .filter(|e| !e["_CMDLINE"].is_null())
        .count();
    assert!(had > 0, "the corpus has _CMDLINE fields");
    for row in rows {
        let entry = row["_entry"].as_object().unwrap();
        assert!(
            entry
                .keys()
                .all(|k| k != "_CMDLINE" && !k.starts_with("_SOURCE_")),
            "{entry:?}"
        );
    }
}

/// Guards a filter that keeps nothing (Vector's journald source never checkpointed then, and
/// read everything again at each restart): the position is still committed past every entry read,
/// so after a kill -9 the next run reads none of them again.
#[test]
fn sparse_filter_still_moves_the_position_past_what_it_left_out() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 2000 --hosts 2 --seed 72 --duration 10m");
    let total = journalctl_json(&corpus).len();
    write_file(&t.config(), "include_identifiers = [\"no-such-program\"]\n");
    let dir = corpus.to_str().unwrap();
    let (mut child, notify) = start_collector(&t, &["--directory", dir, "--from-head"]);
    let all_read = format!("({total} more left out by the filters)");
    eventually(Duration::from_secs(30), "every entry read", || {
        notify.seen().iter().any(|m| m.contains(&all_read))
    });
    // A commit interval (1 s) for the position to be committed, then a crash: no final commit.
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run_ok(&mut t.collector(&["--directory", dir, "--once"]));
    assert!(
        stderr(&out).contains("(0 left out by the filters"),
        "entries read again after the crash: {}",
        stderr(&out)
    );
    assert_eq!(t.query_u64("SELECT count(*) FROM journal_logs"), 0);
}

/// Guards `--from-head --since TIME`: a first start reads from the first entry stamped at or
/// after TIME in each stream, commits that start at once (a second run goes on from it, reading
/// nothing twice), and the flag is refused without `--from-head` or with a bad time.
#[test]
fn since_starts_a_backfill_at_the_first_entry_at_or_after_the_time() {
    let t = TestDir::new();
    // Entries from 2024-03-01 00:00 to 01:00 UTC.
    let corpus = t.corpus("corpus", "-n 3000 --hosts 2 --seed 73 --duration 60m");
    let dir = corpus.to_str().unwrap();
    let since = "2024-03-01T00:30:00Z";
    let since_usec: u64 = 1_709_253_000_000_000;
    let expected: BTreeSet<String> = journalctl_json(&corpus)
        .into_iter()
        .filter(|(_, e)| {
            e["__REALTIME_TIMESTAMP"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= since_usec
        })
        .map(|(c, _)| c)
        .collect();
    let out = run_ok(&mut t.collector(&[
        "--directory",
        dir,
        "--from-head",
        "--since",
        since,
        "--once",
    ]));
    assert!(
        stderr(&out).contains("at or after 2024-03-01 00:30:00"),
        "{}",
        stderr(&out)
    );
    let counts = t.cursor_counts();
    let got: BTreeSet<String> = counts.keys().cloned().collect();
    assert!(!expected.is_empty() && expected.len() < 3000);
    assert_eq!(got, expected);
    // Resumes where it stood, not from the head.
    run_ok(&mut t.collector(&["--directory", dir, "--once"]));
    assert!(t.cursor_counts().values().all(|&n| n == 1));
    assert_eq!(t.cursor_counts().len(), expected.len());

    for args in [
        vec!["--since", since, "--once"],
        vec!["--from-head", "--since", "yesterday-ish", "--once"],
    ] {
        let out = run(&mut t.collector(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--since") || stderr(&out).contains("--from-head"));
    }
}

/// Guards the progress line of a backfill: drawn on a terminal (a pseudo-terminal made by
/// `script`), never when stderr is a pipe or under systemd (`INVOCATION_ID`).
#[test]
fn progress_line_only_on_a_terminal_outside_systemd() {
    let corpus_dir = TestDir::new();
    let corpus = corpus_dir.corpus("corpus", "-n 20000 --hosts 1 --seed 74 --duration 20m");
    let backfill = |invocation: Option<&str>, tty: bool| -> String {
        let t = TestDir::new();
        let cmd = t.collector(&[
            "--directory",
            corpus.to_str().unwrap(),
            "--from-head",
            "--once",
        ]);
        let line = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| format!("'{}'", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut run_it = match tty {
            true => {
                let mut c = Command::new("script");
                c.args(["-qec", &line, "/dev/null"]);
                c
            }
            false => same_command(&cmd),
        };
        if let Some(id) = invocation {
            run_it.env("INVOCATION_ID", id);
        }
        let out = run_ok(&mut run_it);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let on_terminal = backfill(None, true);
    assert!(
        on_terminal.contains("entries, ") && on_terminal.contains("/20000 entries"),
        "{on_terminal}"
    );
    for (invocation, tty) in [(None, false), (Some("0123"), true)] {
        let out = backfill(invocation, tty);
        assert!(!out.contains("\r["), "{invocation:?} {tty}: {out}");
    }
}

/// Guards SIGHUP (`systemctl reload`): a new config's filters apply to what is read from then
/// on, with RELOADING=1 then READY=1 sent; a key that needs a restart is named in a warning; a
/// bad config keeps the one in effect and the collector running.
#[test]
fn sighup_reloads_filters_warns_about_restart_keys_and_survives_a_bad_config() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    write_file(&t.config(), "exclude_identifiers = [\"a-*\"]\n");
    let log = t.path().join("collector.log");
    let (mut child, notify) =
        start_collector_logging(&t, &["--directory", &dir, "--from-head"], &log);
    let send = |ident: &str, message: &str| {
        journald.send(&[
            ("MESSAGE", message.as_bytes()),
            ("SYSLOG_IDENTIFIER", ident.as_bytes()),
        ]);
        journald.wait_written(message);
    };
    let hup = |child: &KillOnDrop| {
        let before = notify.seen().len();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        eventually(Duration::from_secs(20), "RELOADING=1 then READY=1", || {
            let seen = notify.seen();
            let new = seen[before.min(seen.len())..].join("\n");
            let reloading = new.find("RELOADING=1");
            reloading.is_some_and(|r| new[r..].contains("READY=1"))
        });
    };
    let committed = |message: &str| t.messages().iter().any(|m| m == message);

    send("a-x", "before a");
    send("b-x", "before b");
    eventually(Duration::from_secs(30), "before b", || {
        committed("before b")
    });

    write_file(
        &t.config(),
        "exclude_identifiers = [\"b-*\"]\nduckdb_memory_limit = \"100MB\"\n",
    );
    hup(&child);
    send("a-x", "after a");
    send("b-x", "after b");
    eventually(Duration::from_secs(30), "after a", || committed("after a"));

    write_file(&t.config(), "exclude_identifiers = [\"c-*\"\n");
    hup(&child);
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad config stopped the collector"
    );
    // The test reads the buffer with the config file too: an empty one (no more SIGHUP follows,
    // so the collector keeps what it has).
    write_file(&t.config(), "");
    send("b-x", "bad b");
    send("c-x", "bad c");
    eventually(Duration::from_secs(30), "bad c", || committed("bad c"));

    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(30)).success());
    let m = t.messages();
    for (message, kept) in [
        ("before a", false),
        ("before b", true),
        ("after a", true),
        ("after b", false),
        ("bad b", false),
        ("bad c", true),
    ] {
        assert_eq!(m.iter().any(|x| x == message), kept, "{message}: {m:?}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("duckdb_memory_limit only take(s) effect at a restart"),
        "{text}"
    );
    assert!(
        text.contains("the configuration was not reloaded"),
        "{text}"
    );
    assert!(text.contains(t.config().to_str().unwrap()), "{text}");
}

/// Guards the counting of a gap found by a periodic reopen (issue: the `--once` path returned
/// before the rescan that counted it): reading a namespace's journal (one merged stream, reopened
/// every 10 entries), the archived file the reader stands in is deleted; the next periodic reopen
/// finds the position gone, and the gap and the entries it lost are handed to the next commit
/// (`take_gaps`), which every commit takes, `--once`'s last one included.
#[test]
fn gap_found_by_a_periodic_reopen_is_counted() {
    use journal_parquet::journal::Source;
    use journal_parquet::streams::Streams;
    let journald = Journald::start();
    for i in 0..100 {
        journald.send_message(&format!("old-{i}"));
    }
    journald.wait_written("old-99");
    journald.rotate();
    for i in 0..20 {
        journald.send_message(&format!("new-{i}"));
    }
    journald.wait_written("new-19");

    let mut streams = Streams::open(&Source::Namespace(journald.namespace.clone())).unwrap();
    streams.set_reopen_every(10);
    let mut gaps = 0;
    streams
        .position_at(None, journal_parquet::position::FirstStart::Head, &mut gaps)
        .unwrap();
    fn read_one(streams: &mut Streams) -> Option<String> {
        if !streams.step_forward().unwrap() {
            return None;
        }
        let j = streams.current();
        let cursor = j.cursor().unwrap();
        let mut message = String::new();
        j.for_each_field(|d| {
            if let Some(m) = d.strip_prefix(b"MESSAGE=") {
                message = String::from_utf8_lossy(m).into_owned();
            }
        })
        .unwrap();
        streams.mark_read(cursor).unwrap();
        Some(message)
    }
    let read = |n: usize, streams: &mut Streams| -> Vec<String> {
        (0..n)
            .map(|_| read_one(streams).expect("an entry"))
            .collect()
    };
    let first = read(5, &mut streams);
    assert!(first.iter().all(|m| !m.starts_with("new-")), "{first:?}");
    // Vacuumed: every archived file goes while the reader stands in one of them.
    for e in std::fs::read_dir(&journald.dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains('@') {
            std::fs::remove_file(&p).unwrap();
        }
    }
    // The 10th entry read triggers the reopen; the next ones come from what is left.
    let _ = read(5, &mut streams);
    let mut rest = Vec::new();
    while let Some(m) = read_one(&mut streams) {
        rest.push(m);
    }
    let news = rest.iter().filter(|m| m.starts_with("new-")).count();
    assert_eq!(news, 20, "read on after the gap: {rest:?}");
    assert!(!rest.iter().any(|m| m.starts_with("old-")), "{rest:?}");
    assert_eq!(gaps, 0, "no gap at the start");
    assert_eq!(streams.take_gaps(), 1, "the gap of the periodic reopen");
    assert!(
        streams.gap_entries() >= 85,
        "{} entries lost",
        streams.gap_entries()
    );
}
