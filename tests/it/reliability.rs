//! Faults: crashes of either program at random moments, full and vanished directories, damaged
//! state, journal changes under the collector, hostile input. Each test ends with the same
//! check: every entry the journal holds is in the Parquet tree exactly once (read with pyarrow).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A small xorshift generator: random moments that a seed reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// The cursor of every entry in the journal files in `dir`.
pub fn journal_cursors(dir: &Path) -> Vec<String> {
    journalctl_each_file(dir, &["--output-fields=_BOOT_ID"])
        .iter()
        .map(|v| v["__CURSOR"].as_str().unwrap().to_owned())
        .collect()
}

/// The cursor of every row in the Parquet tree under `dir`, read with pyarrow.
pub fn parquet_cursors(dir: &Path) -> Vec<String> {
    let python = test_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/parquet_cursors.py");
    let out = run_ok(Command::new(&python).arg(script).arg(dir));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts that the Parquet tree holds exactly the journal's entries, each once; returns how many.
pub fn assert_exactly_once(journal: &[String], parquet: &[String]) -> usize {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in parquet {
        *seen.entry(c.as_str()).or_default() += 1;
    }
    let want: BTreeSet<&str> = journal.iter().map(String::as_str).collect();
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(c, _)| *c)
        .collect();
    let lost: Vec<_> = want.iter().filter(|c| !seen.contains_key(*c)).collect();
    let extra: Vec<_> = seen.keys().filter(|c| !want.contains(*c)).collect();
    assert!(
        twice.is_empty() && lost.is_empty() && extra.is_empty(),
        "{} duplicated (e.g. {:?}), {} lost (e.g. {:?}), {} not in the journal (e.g. {:?}) of {}",
        twice.len(),
        twice.first(),
        lost.len(),
        lost.first(),
        extra.len(),
        extra.first(),
        want.len()
    );
    want.len()
}

/// Runs jp-flush with `--all` until the buffer is empty (a final flush, as at the end of a
/// test, once the collector has stopped).
pub fn final_flush(t: &TestDir) {
    run_ok(&mut t.flush(&["--all"]));
    assert_eq!(
        t.query_u64("SELECT count(*) FROM journal_logs"),
        0,
        "rows left in the buffer after a final flush"
    );
}

/// One side of a storm: starts `command` again and again and sends each run `signal` after a
/// random time in `lo_ms..hi_ms`, until `times` runs have been killed by a SIGKILL (runs that
/// finished first do not count) or stopped by another signal, or until `stop` is set. Returns
/// that count and the exit statuses seen.
fn storm(
    mut command: impl FnMut() -> Command + Send + 'static,
    signal: nix::sys::signal::Signal,
    times: u32,
    (lo_ms, hi_ms): (u64, u64),
    seed: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, BTreeMap<String, u32>)> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut exits: BTreeMap<String, u32> = BTreeMap::new();
        let mut done = 0;
        while done < times && !stop.load(Ordering::SeqCst) {
            let mut child = KillOnDrop(
                command()
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(rng.between(lo_ms, hi_ms)));
            let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let status = wait_with_limit(&mut child.0, Duration::from_secs(60));
            *exits.entry(format!("{status}")).or_default() += 1;
            use std::os::unix::process::ExitStatusExt;
            if signal != nix::sys::signal::Signal::SIGKILL || status.signal() == Some(9) {
                done += 1;
            }
        }
        (done, exits)
    })
}

/// Guards exactly-once under crashes of both programs: 200 `kill -9` of the collector and 200 of
/// jp-flush, independently and at random moments, while both work through a 200,000-entry
/// corpus; then a clean finish.
#[test]
fn crash_storm_of_both_programs_over_a_corpus_loses_and_repeats_nothing() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 200000 --hosts 3 --seed 21 --duration 2h");
    let dir = corpus.to_str().unwrap().to_owned();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let kill = nix::sys::signal::Signal::SIGKILL;
    let collector = t.collector(&["--directory", &dir, "--from-head"]);
    let collector = storm(
        move || same_command(&collector),
        kill,
        200,
        (20, 400),
        7,
        stop.clone(),
    );
    // --all: every flush writes, and later rows of the same minute are merged into its file, so
    // the kills land in exports, merges and renames, not only in waits.
    let flush = t.flush(&["--all"]);
    let flush = storm(move || same_command(&flush), kill, 200, (10, 300), 11, stop);
    let (collector_kills, collector_exits) = collector.join().unwrap();
    let (flush_kills, flush_exits) = flush.join().unwrap();
    eprintln!(
        "storm: {collector_kills} collector kills {collector_exits:?}, {flush_kills} jp-flush \
         kills {flush_exits:?} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));
    eprintln!(
        "200 kill -9 of each program: 0 lost, 0 duplicated of {n} ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
}

/// Guards exactly-once while the journal grows: the same storm (200 `kill -9` of each program)
/// over a private journald written to as fast as one writer can.
#[test]
fn crash_storm_of_both_programs_over_a_live_journal_loses_and_repeats_nothing() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let socket = journald.runtime_dir().join("socket");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
            let mut n = 0u64;
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let entry = format!("MESSAGE=live storm {n}\nSYSLOG_IDENTIFIER=jp-storm\n");
                if sock.send_to(entry.as_bytes(), &socket).is_ok() {
                    n += 1;
                }
                // 10,000 entries/s: a busy server's rate, and a backlog the final run can take.
                if n.is_multiple_of(100) {
                    let due = Duration::from_micros(n * 100);
                    std::thread::sleep(due.saturating_sub(start.elapsed()));
                }
            }
            n
        })
    };
    let started = Instant::now();
    let kill = nix::sys::signal::Signal::SIGKILL;
    let collector = t.collector(&["--directory", &dir, "--from-head"]);
    let never = Arc::new(AtomicBool::new(false));
    let collector = storm(
        move || same_command(&collector),
        kill,
        200,
        (20, 400),
        13,
        never.clone(),
    );
    let flush = t.flush(&["--all"]);
    let flush = storm(
        move || same_command(&flush),
        kill,
        200,
        (10, 300),
        17,
        never,
    );
    let (collector_kills, _) = collector.join().unwrap();
    let (flush_kills, _) = flush.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    journald.send_message("live storm over");
    journald.wait_written("live storm over");
    let storm_secs = started.elapsed().as_secs_f64();

    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&journald.dir), &parquet_cursors(&t.data()));
    eprintln!(
        "{collector_kills} kill -9 of the collector, {flush_kills} of jp-flush, {written} entries \
         sent in {storm_secs:.0} s ({:.0}/s): 0 lost, 0 duplicated of the {n} journald kept",
        written as f64 / storm_secs
    );
}

/// Guards the clean stop path: SIGTERM at random moments (mid-batch, mid-commit, mid-start)
/// always exits 0, and the entries are still there exactly once.
#[test]
fn sigterm_at_random_moments_stops_cleanly_and_loses_nothing() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 60000 --hosts 2 --seed 23 --duration 30m");
    let dir = corpus.to_str().unwrap().to_owned();
    let collector = t.collector(&["--directory", &dir, "--from-head"]);
    let stop = Arc::new(AtomicBool::new(false));
    let term = nix::sys::signal::Signal::SIGTERM;
    let (stops, exits) = storm(
        move || same_command(&collector),
        term,
        60,
        (5, 600),
        29,
        stop,
    )
    .join()
    .unwrap();
    assert_eq!(
        exits.get("exit status: 0").copied(),
        Some(stops),
        "every SIGTERM is a clean exit: {exits:?}"
    );
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));
    eprintln!("{stops} SIGTERM: all exit 0; 0 lost, 0 duplicated of {n}");
}

/// A tmpfs of `size` mounted on `dir` by the test, unmounted when dropped.
pub struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0750"),
                    "jp-test",
                ])
                .arg(dir),
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system `size` (space coming back).
    pub fn resize(&self, size: &str) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.dir),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.is_dir() && p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Guards a full data disk: jp-flush fails naming the file it could not write, leaves no partial
/// file under a final name (every `.parquet` reads back) and no temporary one, keeps the rows,
/// and the next run writes them once there is space again.
#[test]
fn full_data_disk_fails_naming_the_file_and_resumes_when_space_is_back() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 30000 --hosts 1 --seed 31 --duration 10m");
    let disk = Tmpfs::mount(&t.data(), "600k");
    t.backfill(&corpus);

    let out = run(&mut t.flush(&[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&t.data().display().to_string()) && err.contains("No space left on device"),
        "the error names the path and the cause: {err}"
    );
    assert!(
        files_ending(&t.data(), ".tmp").is_empty(),
        "a temporary file was left"
    );
    eprintln!("{err}");
    let written_before = parquet_cursors(&t.data()).len();
    assert!(
        t.query_u64("SELECT count(*) FROM journal_logs") > 0,
        "rows of the minutes not written must stay in the buffer"
    );

    disk.resize("64m");
    run_ok(&mut t.flush(&[]));
    let n = assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));
    eprintln!("data disk full: {written_before} of {n} written before, 0 lost, 0 duplicated");
}

/// Guards a full state disk: the collector stops with an error naming the buffer (exit 1, which
/// systemd answers with a restart), and once there is space the restarted collector goes on from
/// its committed position: nothing lost, nothing twice.
#[test]
fn full_state_disk_stops_the_collector_naming_the_buffer_and_loses_nothing() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 40000 --hosts 2 --seed 37 --duration 10m");
    let dir = corpus.to_str().unwrap();
    let disk = Tmpfs::mount(&t.state(), "3m");
    let out = run(&mut t.collector(&["--directory", dir, "--from-head", "--once"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&t.state().display().to_string()),
        "the error names the state path: {err}"
    );
    eprintln!("{err}");

    disk.resize("512m");
    run_ok(&mut t.collector(&["--directory", dir, "--from-head", "--once"]));
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));
    eprintln!("state disk full: collector exit 1 naming the buffer; 0 lost, 0 duplicated of {n}");
}

/// Guards the minute of each entry when the sender's clock jumps: backwards by an hour, forwards
/// by a day, back again (one source, so the journal keeps them in sequence order). Each entry
/// lands once, in the file of its own minute.
#[test]
fn clock_jumps_put_each_entry_in_its_own_minute_once() {
    let t = TestDir::new();
    let journal_dir = t.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let base: u64 = 1_709_251_200_000_000; // 2024-03-01 00:00 UTC
    let minute = 60_000_000;
    let times = [
        base,
        base + minute,
        base - 60 * minute,      // back an hour
        base - 60 * minute + 1,  // same minute, a microsecond later
        base + 24 * 60 * minute, // forward a day
        base + 2 * minute,       // back again
        base + 2 * minute - 1,   // earlier than the one before, same minute... almost
        base + 24 * 60 * minute + 59 * 1_000_000,
    ];
    let entries: Vec<RawEntry> = times
        .iter()
        .enumerate()
        .map(|(i, &usec)| RawEntry {
            realtime_usec: usec,
            fields: vec![
                ("MESSAGE".into(), format!("jump {i}").into_bytes()),
                ("_HOSTNAME".into(), b"jumpy".to_vec()),
            ],
        })
        .collect();
    journal_file(&journal_dir.join("jumps.journal"), &entries);
    t.backfill(&journal_dir);
    run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), times.len(), "every entry once");
    for r in &rows {
        let i: usize = r["message"].as_str().unwrap()[5..].parse().unwrap();
        let at = chrono::DateTime::from_timestamp_micros(times[i] as i64).unwrap();
        let want = format!("jumpy/{}", at.format("%Y/%m/%d/%Y%m%d-%H%M.parquet"));
        assert_eq!(r["_file"].as_str().unwrap(), want, "entry {i}");
        assert_eq!(r["timestamp"].as_i64().unwrap(), times[i] as i64);
    }
}

/// Guards extreme values: a 16 MiB field, a binary (non-UTF-8) MESSAGE and field values, an empty
/// MESSAGE, an entry without MESSAGE, an entry sent with 5,000 fields (journal-remote, like
/// journald, keeps 1,024 of them), all byte for byte in `fields` and the typed columns.
#[test]
fn extreme_values_arrive_intact() {
    let t = TestDir::new();
    let journal_dir = t.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let base: u64 = 1_709_251_200_000_000;
    let big: Vec<u8> = (0..16u32 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let binary: Vec<u8> = vec![0xff, 0xfe, b'x', 0x00, b'\n', 0x80];
    let mut many = vec![("MESSAGE".to_string(), b"many fields".to_vec())];
    for i in 0..5000 {
        many.push((format!("F{i}"), format!("v{i}").into_bytes()));
    }
    let entries = vec![
        RawEntry {
            realtime_usec: base,
            fields: vec![
                ("MESSAGE".into(), b"big".to_vec()),
                ("BIG".into(), big.clone()),
            ],
        },
        RawEntry {
            realtime_usec: base + 1,
            fields: vec![
                ("MESSAGE".into(), binary.clone()),
                ("BIN".into(), binary.clone()),
            ],
        },
        RawEntry {
            realtime_usec: base + 2,
            fields: vec![
                ("MESSAGE".into(), Vec::new()),
                ("TAG".into(), b"empty".to_vec()),
            ],
        },
        RawEntry {
            realtime_usec: base + 3,
            fields: vec![("TAG".into(), b"no message".to_vec())],
        },
        RawEntry {
            realtime_usec: base + 4,
            fields: many,
        },
    ];
    journal_file(&journal_dir.join("extreme.journal"), &entries);
    t.backfill(&journal_dir);
    run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), 5);
    let fields = |i: usize| -> &serde_json::Value { &rows[i]["_entry"] };
    // Rows are ordered by timestamp within the file.
    let big_field = fields(0)["BIG"].as_str().unwrap().to_owned();
    assert_eq!(big_field.len(), big.len(), "the 16 MiB field, whole");
    assert!(big_field.as_bytes() == big.as_slice());
    // Non-UTF-8 values are arrays of bytes, as in journalctl's JSON.
    let bytes: Vec<u8> = fields(1)["BIN"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, binary);
    assert!(
        rows[1]["message"].is_null(),
        "a non-UTF-8 MESSAGE is not text"
    );
    assert_eq!(rows[2]["message"].as_str(), Some(""));
    assert_eq!(fields(2)["MESSAGE"].as_str(), Some(""));
    assert!(rows[3]["message"].is_null());
    assert_eq!(fields(3)["TAG"].as_str(), Some("no message"));
    // journal-remote (like journald) keeps at most 1,024 fields of an entry: whatever the journal
    // holds of the 5,000 must arrive, every one.
    let many = fields(4);
    let journal = journalctl_json(&journal_dir);
    let held = journal
        .values()
        .find(|e| e["MESSAGE"] == "many fields")
        .expect("the entry with many fields");
    let user_fields: Vec<&String> = held
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with('F'))
        .collect();
    assert!(user_fields.len() >= 1000, "{}", user_fields.len());
    for key in &user_fields {
        assert_eq!(many[key.as_str()], held[key.as_str()], "{key}");
    }
    let ours = many
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with('F'))
        .count();
    assert_eq!(ours, user_fields.len());
    eprintln!("an entry of 5,000 fields: the journal holds {ours}, all of them arrived");
}

/// Guards following the journal through what journald does to it: a restart of journald itself,
/// a rotation (the active file archived, a new one started), and journal files added to the
/// `--directory` source while the collector runs. Every entry once, nothing skipped.
#[test]
fn journald_restart_rotation_and_new_files_lose_and_repeat_nothing() {
    let mut journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, _n) = start_collector(&t, &["--directory", &dir, "--from-head"]);
    let mut sent = 0;
    let mut send = |journald: &Journald, what: &str| {
        for _ in 0..500 {
            journald.send_message(&format!("{what} {sent}"));
            sent += 1;
        }
        journald.wait_written(&format!("{what} {}", sent - 1));
    };
    send(&journald, "before restart");
    journald.restart();
    send(&journald, "after restart");
    journald.rotate();
    send(&journald, "after rotation");
    // A file from another source (journal-remote style), newer than everything read so far and
    // older than what journald writes next: sd-journal's merged view would skip entries of one
    // source that are older than where it stands in another (see Known limitations).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let added: Vec<RawEntry> = (0..300)
        .map(|i| RawEntry {
            realtime_usec: now + i,
            fields: vec![
                ("MESSAGE".into(), format!("added file {i}").into_bytes()),
                ("_HOSTNAME".into(), b"added-host".to_vec()),
            ],
        })
        .collect();
    let staging = t.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    journal_file(&staging.join("remote-added.journal"), &added);
    // Moved in whole, as a tool that writes elsewhere and renames would.
    std::fs::rename(
        staging.join("remote-added.journal"),
        journald.dir.join("remote-added.journal"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    send(&journald, "after the new file");
    eventually(Duration::from_secs(30), "everything in the buffer", || {
        let m = t.messages();
        m.iter().any(|m| m == "added file 299")
            && m.iter()
                .any(|m| m == &format!("after the new file {}", sent - 1))
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&journald.dir), &parquet_cursors(&t.data()));
    eprintln!("journald restart, rotation, a new file: 0 lost, 0 duplicated of {n}");
}

/// Guards an admin removing a day directory (or the whole tree) while the programs run: the next
/// flush creates the directories again, with their modes, and writes its minutes there.
#[test]
fn removed_day_directory_is_created_again() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let (mut child, _n) = start_collector(&t, &["--directory", &dir, "--from-head"]);
    journald.send_message("first");
    eventually(Duration::from_secs(30), "first", || {
        t.messages().contains(&"first".into())
    });
    run_ok(&mut t.flush(&["--all"]));
    let days = files_ending(&t.data(), ".parquet");
    assert_eq!(days.len(), 1);
    let day = days[0].parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(t.data()).unwrap();

    journald.send_message("second");
    eventually(Duration::from_secs(30), "second", || {
        t.messages().contains(&"second".into())
    });
    run_ok(&mut t.flush(&["--all"]));
    use std::os::unix::fs::PermissionsExt;
    assert!(day.is_dir(), "{} created again", day.display());
    assert_eq!(
        std::fs::metadata(&day).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let rows = parquet_rows(&t.data());
    assert!(rows.iter().any(|r| r["message"] == "second"));
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
}

/// Guards the state file against damage while the buffer is intact: empty, truncated, garbage,
/// another machine's cursor, a directory in its place. Each time the collector says which file
/// and what it does, the buffer's position wins (no restart from head or tail: nothing is read
/// twice, nothing skipped), and the file is written again.
#[test]
fn damaged_state_file_is_named_and_the_buffer_position_wins() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    let state_file = t.state().join("cursor");
    journald.send_message("start");
    journald.wait_written("start");
    run_ok(&mut t.collector(&["--directory", &dir, "--from-head", "--once"]));
    let good = std::fs::read_to_string(&state_file).unwrap();
    let other_machine = good
        .replace(&good[2..34], "0123456789abcdef0123456789abcdef")
        .replace("i=", "i=1");
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: [Damage; 5] = [
        (
            "empty",
            Box::new(|| std::fs::write(&state_file, b"").unwrap()),
        ),
        (
            "truncated",
            Box::new(|| {
                let now = std::fs::read_to_string(&state_file).unwrap();
                std::fs::write(&state_file, &now[..now.len() / 2]).unwrap()
            }),
        ),
        (
            "garbage",
            Box::new(|| std::fs::write(&state_file, b"\x00\xff\x13garbage").unwrap()),
        ),
        (
            "another machine's",
            Box::new(|| std::fs::write(&state_file, &other_machine).unwrap()),
        ),
        (
            "a directory",
            Box::new(|| {
                std::fs::remove_file(&state_file).unwrap();
                std::fs::create_dir(&state_file).unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        let before = t.messages().len();
        damage();
        let marker = format!("after the {what} state file");
        journald.send_message(&marker);
        journald.wait_written(&marker);
        let out = run(&mut t.collector(&["--directory", &dir, "--once"]));
        let err = stderr(&out);
        eprintln!("{what}: {}", err.trim());
        assert!(
            err.contains(state_file.to_str().unwrap()),
            "{what}: the file is named: {err}"
        );
        let m = t.messages();
        assert!(m.contains(&marker), "{what}: the new entry was read");
        assert!(
            t.cursor_counts().values().all(|&n| n == 1),
            "{what}: something read twice"
        );
        assert_eq!(m.len(), before + 1, "{what}: only the new entry: {m:?}");
        if state_file.is_dir() {
            // Not writable: an error naming it (exit 1), after the entries were committed.
            assert_eq!(out.status.code(), Some(1), "{what}: {err}");
            std::fs::remove_dir(&state_file).unwrap();
        } else {
            assert!(out.status.success(), "{what}: {err}");
            let now = std::fs::read_to_string(&state_file).unwrap();
            assert!(now.starts_with("s="), "{what}: rewritten: {now:?}");
        }
    }
}

/// Guards the recovery from a lost segment, with entries in it not yet written to Parquet: the
/// collector's own segment damaged (its header overwritten), a sealed segment damaged (found by
/// jp-flush), or the whole buffer deleted. A damaged file is kept aside under a name that says
/// so, the journal is read again from where the lost segment started (the state file's restart
/// point when everything is gone), and the Parquet tree ends up with every entry the journal
/// holds exactly once.
#[test]
fn damaged_or_deleted_buffer_is_replaced_and_nothing_is_lost() {
    for damage in [
        "open segment damaged",
        "sealed segment damaged",
        "buffer deleted",
    ] {
        let journald = Journald::start();
        let t = TestDir::new();
        let dir = journald.dir.to_str().unwrap().to_owned();
        let batch = |what: &str| {
            for i in 0..300 {
                journald.send_message(&format!("{what}-{i}"));
            }
            journald.wait_written(&format!("{what}-299"));
        };
        batch("flushed");
        run_ok(&mut t.collector(&["--directory", &dir, "--from-head", "--once"]));
        final_flush(&t);
        batch("buffered");
        run_ok(&mut t.collector(&["--directory", &dir, "--once"]));

        let mut log = String::new();
        match damage {
            "open segment damaged" => {
                // The 300 rows are in the collector's own segment, the last one.
                overwrite_header(&t.segments().pop().unwrap());
            }
            "sealed segment damaged" => {
                // Sealing moves them into a segment of jp-flush's: the one before the last.
                assert_eq!(t.query_u64("SELECT count(*) FROM journal_logs"), 300);
                let segments = t.segments();
                overwrite_header(&segments[segments.len() - 2]);
                let out = run_ok(&mut t.flush(&[]));
                log += &stderr(&out);
                assert!(
                    log.contains("read its entries from the journal again"),
                    "{log}"
                );
            }
            _ => std::fs::remove_dir_all(t.state().join("buffer")).unwrap(),
        }
        batch("after");
        let out = run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
        log += &stderr(&out);
        eprintln!("{damage}: {}", log.trim());
        let expected = match damage {
            "sealed segment damaged" => "reading the journal again",
            _ => "restart point",
        };
        assert!(log.contains(expected), "{damage}: {log}");
        let aside = files_ending(&t.state(), "")
            .into_iter()
            .filter(|p| {
                let name = p.to_string_lossy();
                name.contains(".duckdb.damaged-") && !name.ends_with(".wal")
            })
            .count();
        if damage.ends_with("damaged") {
            assert!(log.contains("kept it as"), "{log}");
            assert_eq!(aside, 1, "the damaged segment is kept aside");
        } else {
            assert_eq!(aside, 0);
        }
        final_flush(&t);
        let n = assert_exactly_once(&journal_cursors(&journald.dir), &parquet_cursors(&t.data()));
        eprintln!("{damage} with 300 entries not yet flushed: 0 lost, 0 duplicated of {n}");
    }
}

/// Guards entries out of order across files (journal-remote sources): a file of another source
/// moved into a followed `--directory`, whose entries are older than, and interleaved with,
/// what was read, and out of order among themselves. sd-journal's merged view skipped some of
/// them (31 of 600 here); read stream by stream, each lands once, in the file of its own minute.
#[test]
fn out_of_order_entries_across_files_land_once_in_their_minutes() {
    let t = TestDir::new();
    let followed = t.path().join("remote");
    let staging = t.path().join("staging");
    std::fs::create_dir_all(&followed).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    let base: u64 = 1_709_251_200_000_000;
    let mut rng = Rng::new(3);
    let host = |name: &str, times: Vec<u64>| -> Vec<RawEntry> {
        times
            .into_iter()
            .enumerate()
            .map(|(i, usec)| RawEntry {
                realtime_usec: usec,
                fields: vec![
                    ("MESSAGE".into(), format!("{name} {i}").into_bytes()),
                    ("_HOSTNAME".into(), name.as_bytes().to_vec()),
                ],
            })
            .collect()
    };
    let steady: Vec<u64> = (0..600).map(|i| base + i * 1_000_000).collect();
    let skewed: Vec<u64> = (0..600)
        .map(|_| base + rng.between(0, 1800) * 1_000_000 - 600_000_000)
        .collect();
    journal_file(
        &followed.join("remote-steady.journal"),
        &host("steady", steady),
    );
    journal_file(
        &staging.join("remote-skewed.journal"),
        &host("skewed", skewed.clone()),
    );

    let dir = followed.to_str().unwrap();
    let (mut child, _n) = start_collector(&t, &["--directory", dir, "--from-head"]);
    eventually(Duration::from_secs(30), "the first file read", || {
        t.messages().contains(&"steady 599".to_owned())
    });
    std::fs::rename(
        staging.join("remote-skewed.journal"),
        followed.join("remote-skewed.journal"),
    )
    .unwrap();
    eventually(Duration::from_secs(30), "the moved-in file read", || {
        t.query_u64("SELECT count(*) FROM journal_logs WHERE hostname = 'skewed'") == 600
    });
    sigterm(&child);
    assert!(wait_with_limit(&mut child, Duration::from_secs(10)).success());
    final_flush(&t);
    let n = assert_exactly_once(&journal_cursors(&followed), &parquet_cursors(&t.data()));
    for r in parquet_rows(&t.data()) {
        let at = chrono::DateTime::from_timestamp_micros(r["timestamp"].as_i64().unwrap()).unwrap();
        let host = r["hostname"].as_str().unwrap();
        let want = format!("{host}/{}", at.format("%Y/%m/%d/%Y%m%d-%H%M.parquet"));
        assert_eq!(r["_file"].as_str().unwrap(), want);
    }
    eprintln!("out of order across files: 0 lost, 0 duplicated of {n}, each in its minute");
}

/// Guards field names that are not UTF-8, which only files written by other tools can hold
/// (journald and journal-remote refuse them; here the bytes of a name are changed in the file,
/// and journalctl then refuses the entry with "Invalid field"): the entry arrives, and the name
/// is kept, percent-encoded, never replaced by U+FFFD or merged with another.
#[test]
fn field_names_that_are_not_utf8_arrive_percent_encoded() {
    let t = TestDir::new();
    let journal_dir = t.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let file = journal_dir.join("foreign.journal");
    journal_file(
        &file,
        &[RawEntry {
            realtime_usec: 1_709_251_200_000_000,
            fields: vec![
                ("MESSAGE".into(), b"odd name".to_vec()),
                ("XNAMEX".into(), b"value1".to_vec()),
            ],
        }],
    );
    // The name is stored in its data object ("XNAMEX=value1") and its field object ("XNAMEX").
    let mut bytes = std::fs::read(&file).unwrap();
    let mut patched = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(6).position(|w| w == b"XNAMEX") {
        bytes[i + at + 1] = 0xff;
        i += at + 6;
        patched += 1;
    }
    assert!(patched >= 1, "the name is in the file");
    std::fs::write(&file, &bytes).unwrap();

    t.backfill(&journal_dir);
    run_ok(&mut t.flush(&["--all"]));
    let rows = parquet_rows(&t.data());
    assert_eq!(rows.len(), 1);
    let fields = &rows[0]["_entry"];
    assert_eq!(fields["X%FFAMEX"], "value1", "{fields}");
    assert_eq!(fields["MESSAGE"], "odd name");
}

/// Guards the archive of a fleet, with the real parts: four hosts' journals sent by four
/// `systemd-journal-upload` processes over loopback HTTP to a `systemd-journal-remote`, whose
/// output directory the collector follows while it is killed (-9) at random moments and jp-flush
/// runs beside it. Every entry arrives once, in the directory of its own host.
#[test]
fn fleet_through_journal_upload_and_remote_arrives_once_per_host() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 8000 --hosts 4 --seed 41 --duration 20m");
    let received = t.path().join("remote");
    std::fs::create_dir_all(&received).unwrap();
    let (mut remote, port) = start_remote(
        &format!("--output={}/", received.display()),
        "--split-mode=host",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let dir = received.to_str().unwrap().to_owned();
    let collector = t.collector(&["--directory", &dir, "--from-head"]);
    let storm_thread = storm(
        move || same_command(&collector),
        nix::sys::signal::Signal::SIGKILL,
        30,
        (100, 600),
        43,
        stop.clone(),
    );
    let flush = t.flush(&[]);
    let flusher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = same_command(&flush).stdin(Stdio::null()).output();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let uploads: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .enumerate()
        .map(|(i, file)| start_upload(&t, port, i, &file))
        .collect();
    assert_eq!(uploads.len(), 4, "one journal file per host");
    for u in uploads {
        let out = u.wait_with_output().unwrap();
        assert!(out.status.success(), "journal-upload: {}", stderr(&out));
    }
    // Let the storm go on a little after the last upload, then stop everything.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (kills, exits) = storm_thread.join().unwrap();
    flusher.join().unwrap();
    sigterm(&remote);
    wait_with_limit(&mut remote, Duration::from_secs(10));

    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    // journal-remote gives the entries cursors of its own: an entry is known by its host, boot
    // and timestamps.
    let key = |e: &serde_json::Value| {
        [
            "_HOSTNAME",
            "_BOOT_ID",
            "__REALTIME_TIMESTAMP",
            "__MONOTONIC_TIMESTAMP",
        ]
        .map(|f| e[f].as_str().unwrap_or("").to_owned())
    };
    let sent: BTreeSet<[String; 4]> = journalctl_json(&corpus).values().map(key).collect();
    let mut arrived: BTreeMap<[String; 4], usize> = BTreeMap::new();
    for row in parquet_rows(&t.data()) {
        let entry = &row["_entry"];
        let host = entry["_HOSTNAME"].as_str().unwrap_or("");
        assert!(
            row["_file"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{host}/")),
            "an entry of {host} in {}",
            row["_file"]
        );
        *arrived.entry(key(entry)).or_default() += 1;
    }
    let twice = arrived.values().filter(|&&n| n > 1).count();
    let lost = sent.iter().filter(|k| !arrived.contains_key(*k)).count();
    assert_eq!(
        (lost, twice, arrived.len()),
        (0, 0, sent.len()),
        "lost, duplicated, arrived"
    );
    eprintln!(
        "fleet of 4 through journal-upload and journal-remote, {kills} kill -9 of the collector \
         {exits:?}: 0 lost, 0 duplicated of {}",
        sent.len()
    );
}

/// Guards following many growing files at once: sixteen hosts' journals sent by sixteen
/// `systemd-journal-upload` processes to sixteen `systemd-journal-remote` listeners, which write
/// one file each into the directory the collector follows, all while it runs. Every entry is read
/// without a restart. (libsystemd drops a file from a journal opened on a list of files when
/// stepping through it fails while it is being written, and never takes it back: the collector
/// read 1,277 of 200,000 such entries and then slept, until it compared what the file headers
/// hold with what it had read.)
#[test]
fn sixteen_journal_remote_files_growing_at_once_are_read_to_their_end() {
    const HOSTS: usize = 16;
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 160000 --hosts 16 --seed 47 --duration 20m");
    let received = t.path().join("remote");
    std::fs::create_dir_all(&received).unwrap();
    let dir = received.to_str().unwrap().to_owned();
    let (remotes, ports): (Vec<_>, Vec<_>) = (0..HOSTS)
        .map(|i| {
            start_remote(
                &format!("--output={dir}/remote-host{i}.journal"),
                "--split-mode=none",
            )
        })
        .unzip();
    let (mut collector, _notify) = start_collector(&t, &["--directory", &dir, "--from-head"]);
    let files = files_ending(&corpus, ".journal");
    assert_eq!(files.len(), HOSTS, "one journal file per host");
    let uploads: Vec<_> = files
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (file, port))| start_upload(&t, *port, i, file))
        .collect();
    for u in uploads {
        let out = u.wait_with_output().unwrap();
        assert!(out.status.success(), "journal-upload: {}", stderr(&out));
    }
    // Each journal-remote file numbers its entries from 1, and the state file holds the cursor
    // of the last entry committed from each: their sequence numbers add up to what was read.
    let sent = journalctl_json(&corpus).len() as u64;
    let committed = || -> u64 {
        let text = std::fs::read_to_string(t.state().join("cursor")).unwrap_or_default();
        text.lines()
            .next()
            .unwrap_or("")
            .split(' ')
            .filter_map(|c| c.split(';').find_map(|p| p.strip_prefix("i=")))
            .map(|i| u64::from_str_radix(i, 16).unwrap())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed() < sent {
        assert!(
            Instant::now() < deadline,
            "the collector committed {} of the {sent} entries journal-remote wrote, and no more",
            committed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&collector);
    assert!(wait_with_limit(&mut collector, Duration::from_secs(30)).success());
    drop(remotes);
    final_flush(&t);
    assert_eq!(parquet_rows(&t.data()).len() as u64, sent);
}

/// Starts `systemd-journal-remote` listening on a free loopback port with `output` and `split`,
/// and waits until it accepts connections.
fn start_remote(output: &str, split: &str) -> (KillOnDrop, u16) {
    let port = free_port();
    let remote = start_listening(
        Command::new("/lib/systemd/systemd-journal-remote")
            .arg(format!("--listen-http=127.0.0.1:{port}"))
            .arg(output)
            .arg(split),
        port,
        "systemd-journal-remote (Debian package systemd-journal-remote)",
    );
    (remote, port)
}
