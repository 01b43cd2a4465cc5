//! Exactly once in an admin's hands: the commands operators type by habit (`sudo`, only
//! `--state-dir`), links planted by other users, DuckDB confined to the archive, errors told
//! apart by their kind, and the crash windows between two steps, each hit at its exact step by a
//! fault point (`JP_FAULT`, see `sys::fault`).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::reliability::{assert_exactly_once, final_flush, journal_cursors, parquet_cursors};

/// A system user made for one test, removed (with nothing of the machine's touched) when
/// dropped.
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl SystemUser {
    fn create(tag: &str) -> SystemUser {
        let name = format!("jpt{}{tag}", std::process::id());
        let _ = run(Command::new("userdel").arg(&name));
        run_ok(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            &name,
        ]));
        let id = |flag: &str| -> u32 {
            let out = run_ok(Command::new("id").args([flag, &name]));
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        SystemUser { name, uid, gid }
    }

    /// Makes `path` and everything under it this user's.
    fn own(&self, path: &Path) {
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path),
        );
    }

    /// `cmd`, run as this user (as `sudo -u` would), from a copy of its program in `bin`: the
    /// build's own directory is root's alone.
    fn runs(&self, cmd: Command, bin: &Path) -> Command {
        let program = Path::new(cmd.get_program());
        let mut as_user = Command::new(bin.join(program.file_name().unwrap()));
        as_user.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => as_user.env(key, v),
                None => as_user.env_remove(key),
            };
        }
        // As root, std drops the supplementary groups when it sets the user.
        as_user.uid(self.uid).gid(self.gid);
        as_user
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = run(Command::new("userdel").arg(&self.name));
    }
}

/// Every path under `dir` owned by `uid`'s opposite: root.
fn owned_by_root(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == 0))
        .collect()
}

/// Guards the README's manual flush: with only `--state-dir`, the archive goes to STATE/data,
/// as under the unit, whatever the working directory (it went to ./data, and the rows left the
/// buffer: a hole in the archive).
#[test]
fn flush_given_only_the_state_dir_writes_under_it_from_any_directory() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 500 --hosts 2 --seed 31 --duration 3m");
    let only_state_dir = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.arg("--state-dir")
            .arg(t.state())
            .arg("--config")
            .arg(t.config())
            .args(args)
            .env_remove("STATE_DIRECTORY");
        cmd
    };
    // Read with the collector's own defaults too.
    let dir = corpus.to_str().unwrap();
    run_ok(&mut only_state_dir(
        COLLECTOR,
        &["--directory", dir, "--from-head", "--once"],
    ));
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    run_ok(only_state_dir(FLUSH, &["--all"]).current_dir(&elsewhere));
    assert!(
        !elsewhere.join("data").exists(),
        "nothing in the working directory"
    );
    assert_exactly_once(
        &journal_cursors(&corpus),
        &parquet_cursors(&t.state().join("data")),
    );
}

/// Guards the service's state against `sudo`: jp-flush, a live query and the collector started
/// as root on a state directory the service user owns become that user (nothing under STATE or
/// DATA is ever root's), the service user's programs go on working afterwards, and every entry
/// lands once. Where the owner cannot be told (state and data of two users), root is refused
/// with exit 77 and the command to use.
#[test]
fn root_runs_on_the_service_users_state_become_that_user() {
    let t = TestDir::new();
    let corpus = t.corpus("corpus", "-n 800 --hosts 2 --seed 33 --duration 3m");
    std::fs::create_dir_all(t.state()).unwrap();
    std::fs::create_dir_all(t.data()).unwrap();
    // The build's directory is root's alone: the user runs copies.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for program in [COLLECTOR, FLUSH] {
        let program = Path::new(program);
        std::fs::copy(program, bin.join(program.file_name().unwrap())).unwrap();
    }
    let user = SystemUser::create("a");
    user.own(t.path());
    let dir = corpus.to_str().unwrap();
    let read = ["--directory", dir, "--from-head", "--once"];

    // The service reads it as its user, then root steps in three ways.
    run_ok(&mut user.runs(t.collector(&read), &bin));
    run_ok(&mut t.flush(&[]));
    run_ok(&mut t.query(&["--live", "SELECT count(*) FROM journal"]));
    run_ok(&mut t.collector(&read));
    let rooted = owned_by_root(t.path());
    assert!(rooted.is_empty(), "owned by root: {rooted:?}");

    // The service user's programs still work on everything root's runs left.
    run_ok(&mut user.runs(t.collector(&read), &bin));
    run_ok(&mut user.runs(t.flush(&["--all"]), &bin));
    assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&t.data()));

    // State and data of two users: root cannot tell whom to become.
    let other = SystemUser::create("b");
    other.own(&t.data());
    let out = run(&mut t.flush(&[]));
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stderr(&out).contains("sudo -u"), "{}", stderr(&out));
}

/// Guards node_exporter's textfile directory, which another user can write: links planted
/// there under the names jp-flush and the collector write (the final names, and the temporary
/// names of earlier versions) redirect nothing, and the metrics files are readable by others.
#[test]
fn links_planted_in_the_metrics_directory_redirect_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let corpus = t.archive("corpus", "-n 200 --hosts 1 --seed 35 --duration 2m");
    let metrics = t.path().join("textfile");
    std::fs::create_dir(&metrics).unwrap();
    std::fs::set_permissions(&metrics, std::fs::Permissions::from_mode(0o1777)).unwrap();
    write_file(
        &t.config(),
        &format!("metrics_directory = \"{}\"\n", metrics.display()),
    );
    let victims: Vec<String> = parquet_digest(&t.data()).into_keys().collect();
    let victim = t.data().join(victims[0].trim_start_matches("./"));
    let outside = t.path().join("outside");
    write_file(&outside, "precious");
    let before = tree_digest(&t.data());
    for (name, target) in [
        (".journal_parquet_flush.prom.tmp", &victim),
        ("journal_parquet_flush.prom", &victim),
        (".journal_parquet_collector.prom.tmp", &outside),
        ("journal_parquet_collector.prom", &outside),
    ] {
        std::os::unix::fs::symlink(target, metrics.join(name)).unwrap();
    }
    run_ok(&mut t.flush(&[]));
    run_ok(&mut t.collector(&["--directory", corpus.to_str().unwrap(), "--once"]));
    assert_eq!(tree_digest(&t.data()), before, "the archive is untouched");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    for name in [
        "journal_parquet_flush.prom",
        "journal_parquet_collector.prom",
    ] {
        let meta = std::fs::symlink_metadata(metrics.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a file of its own");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{name}");
    }
}

/// Guards `query` as root: the SQL reads the archive and nothing else (no other file, no
/// writes, no setting undone), and every documented query still works.
#[test]
fn query_reads_the_archive_and_nothing_else() {
    let t = TestDir::new();
    t.archive("corpus", "-n 300 --hosts 2 --seed 37 --duration 2m");
    let planted = PathBuf::from(format!("/etc/jp-test-{}", std::process::id()));
    let refused = [
        format!("COPY (SELECT 1) TO '{}'", planted.display()),
        "SELECT * FROM read_text('/etc/shadow')".to_owned(),
        "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
        "SET enable_external_access = true".to_owned(),
        "INSTALL httpfs".to_owned(),
    ];
    for sql in &refused {
        let out = run(&mut t.query(&[sql]));
        assert_eq!(out.status.code(), Some(1), "{sql}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("Unknown error code"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!planted.exists(), "nothing written outside the archive");
    for (args, sql) in [
        (
            vec![],
            "SELECT hostname, count(*) FROM journal GROUP BY ALL",
        ),
        (
            vec!["--format", "json"],
            "SELECT entry FROM entries LIMIT 3",
        ),
        (vec!["--format", "csv"], "SELECT count(*) FROM journal"),
        (
            vec!["--format", "parquet"],
            "FROM journal WHERE priority <= 3",
        ),
        (vec!["--live"], "SELECT count(*) FROM journal"),
        (
            vec![],
            "SELECT current_setting('autoinstall_known_extensions') = false \
             AND current_setting('autoload_known_extensions') = false",
        ),
    ] {
        let mut all = args.clone();
        all.push(sql);
        let out = run_ok(&mut t.query(&all));
        if sql.starts_with("SELECT current_setting") {
            assert!(String::from_utf8_lossy(&out.stdout).contains("true"));
        }
    }
}

/// Guards the classification of read errors by their kind: in a data directory whose path holds
/// words DuckDB uses for damage (`checksum`, `thrift`), a minute path that cannot be read for a
/// reason outside the file (here a directory stands there: EISDIR) fails the flush naming it,
/// sets nothing aside and keeps the rows; a query fails on it instead of leaving it out.
#[test]
fn a_minute_that_cannot_be_read_is_never_taken_for_damage() {
    let t = TestDir::new();
    let data = t.path().join("checksum-archive").join("thrift-01");
    let first = TestDir::sharing_data(&data);
    let corpus = first.archive("corpus", "-n 300 --hosts 1 --seed 39 --duration 50s");
    let files: Vec<String> = parquet_digest(&data).into_keys().collect();
    let file = data.join(files[0].trim_start_matches("./"));
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();

    let out = run(&mut first.query(&["SELECT count(*) FROM journal"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&file.display().to_string()),
        "{}",
        stderr(&out)
    );

    let again = TestDir::sharing_data(&data);
    again.backfill(&corpus);
    let out = run(&mut again.flush(&["--all"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(!err.contains("Unknown error code"), "{err}");
    let aside = walk(&data)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .count();
    assert_eq!(aside, 0, "nothing set aside");
    assert!(
        again.query_u64("SELECT count(*) FROM journal_logs") > 0,
        "rows kept"
    );

    std::fs::remove_dir(&file).unwrap();
    run_ok(&mut again.flush(&["--all"]));
    assert_exactly_once(&journal_cursors(&corpus), &parquet_cursors(&data));
}

/// Guards a new installation: jp-flush on an empty archive is quiet (no catalogue warning).
#[test]
fn an_empty_archive_is_no_warning() {
    let t = TestDir::new();
    std::fs::create_dir_all(t.data()).unwrap();
    let out = run_ok(&mut t.flush(&[]));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// Guards the order of a damaged sealed segment's two steps: the re-read is asked for before the
/// segment is set aside, so a jp-flush killed in between leaves the segment where the next run
/// finds it (before: an orphan `.start` that was cleaned away, and the rows only in the set-aside
/// file).
#[test]
fn a_flush_killed_between_asking_the_reread_and_setting_aside_loses_nothing() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    journald.send_messages("buffered", 300);
    run_ok(&mut t.collector(&["--directory", &dir, "--from-head", "--once"]));
    // Sealed (the minute is not complete: nothing is written), with journald's own lines.
    assert!(t.query_u64("SELECT count(*) FROM journal_logs") >= 300);
    let segments = t.segments();
    overwrite_header(&segments[segments.len() - 2]);
    let out = run(t
        .flush(&[])
        .env("JP_FAULT", "flush-damaged-segment-before-set-aside"));
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    // The collector's clean-up of leftovers comes first, then a jp-flush finishes the set-aside.
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    run_ok(&mut t.flush(&[]));
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    assert_exactly_once(&journal_cursors(&journald.dir), &parquet_cursors(&t.data()));
}

/// Guards a seal that fails after the new segment was renamed into place: the new segment is
/// removed again, so the collector, which goes on in the old one, does not restart later from the
/// older position the new one holds (and read entries twice).
#[test]
fn a_seal_failing_after_its_rename_leaves_no_segment_behind() {
    let journald = Journald::start();
    let t = TestDir::new();
    let dir = journald.dir.to_str().unwrap().to_owned();
    journald.send_messages("a", 200);
    run_ok(&mut t.collector(&["--directory", &dir, "--from-head", "--once"]));
    let log = t.path().join("collector.log");
    let (mut collector, _notify) = {
        let mut notify = NotifySocket::new(t.path());
        let child = KillOnDrop(
            t.collector(&["--directory", &dir])
                .env("NOTIFY_SOCKET", &notify.path)
                .env("JP_FAULT", "seal-after-rename:error")
                .stdin(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        notify.wait_for("READY=1", std::time::Duration::from_secs(60));
        (child, notify)
    };
    let before = t.segments();
    run_ok(&mut t.flush(&[]));
    assert_eq!(t.segments(), before, "the failed seal left no segment");
    // The collector goes on in its old segment: b is committed there.
    let cursor = || std::fs::read_to_string(t.state().join("cursor")).unwrap_or_default();
    let after_a = cursor();
    journald.send_messages("b", 200);
    eventually(std::time::Duration::from_secs(20), "b committed", || {
        cursor() != after_a
    });
    sigterm(&collector);
    wait_with_limit(&mut collector, std::time::Duration::from_secs(60));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("injected failure"), "{err}");
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    assert_exactly_once(&journal_cursors(&journald.dir), &parquet_cursors(&t.data()));
}

/// A link made in the checkout for one test, removed when dropped.
struct LinkInCheckout(PathBuf);

impl Drop for LinkInCheckout {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Guards the README's first queries (Two commands): run as written, from the checkout, over
/// the archive `scripts/run.sh` writes (`./data`; made for the test from a corpus when the
/// checkout has none, and a developer's own is only read).
#[test]
fn readme_first_queries_run_as_written_from_the_checkout() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(checkout.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("scripts/query.sh "))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let t = TestDir::new();
    let _link = match checkout.join("data").exists() {
        true => None,
        false => {
            t.archive("corpus", "-n 300 --hosts 2 --seed 41 --duration 2m");
            std::os::unix::fs::symlink(t.data(), checkout.join("data")).unwrap();
            Some(LinkInCheckout(checkout.join("data")))
        }
    };
    for command in commands {
        let out = run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(command)
                .current_dir(checkout),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(" row"), "{command}: {text}");
    }
}

/// Guards a re-read longer than one seal: after a sealed segment is lost, every segment made
/// until the collector is back at the tail may repeat rows of others, including the one jp-flush
/// makes when the collector was killed in the middle of the catch-up. Only the first was flagged,
/// and the rows of minutes that lay wholly in a later one were written twice.
#[test]
fn a_reread_spanning_several_segments_writes_each_entry_once() {
    use std::os::unix::process::ExitStatusExt;
    let t = TestDir::new();
    write_file(&t.config(), "max_batch_entries = 500\n");
    // Entries of a year to come: no minute is complete before the final flush, so every row
    // stays in the buffer until then.
    let a = t.corpus(
        "a",
        "-n 1500 --hosts 1 --seed 43 --duration 5m --start 2099-01-01T00:00:00Z",
    );
    let b = t.corpus(
        "b",
        "-n 1500 --hosts 1 --seed 44 --duration 5m --start 2099-01-01T00:05:00Z",
    );
    let followed = t.path().join("followed");
    std::fs::create_dir(&followed).unwrap();
    let dir = followed.to_str().unwrap().to_owned();
    let copy_in = |from: &Path, name: &str| {
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "journal") {
                std::fs::copy(&p, followed.join(name)).unwrap();
            }
        }
    };
    copy_in(&a, "a.journal");
    run_ok(&mut t.collector(&["--directory", &dir, "--from-head", "--once"]));
    run_ok(&mut t.flush(&[]));
    copy_in(&b, "b.journal");
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    run_ok(&mut t.flush(&[]));
    // a's rows are in a sealed segment, b's in the next one: a's is lost.
    let segments = t.segments();
    assert!(segments.len() >= 3, "{segments:?}");
    overwrite_header(&segments[0]);
    let out = run_ok(&mut t.flush(&[]));
    assert!(
        stderr(&out).contains("read its entries from the journal again"),
        "{}",
        stderr(&out)
    );
    // The catch-up: killed after 1,000 of its 3,000 entries are committed (the first commit
    // settles at start), then jp-flush seals for the absent collector, then it goes on. Whichever
    // file it reads first, the last minutes of b are then read again only after the kill.
    let out = run(t
        .collector(&["--directory", &dir, "--once"])
        .env("JP_FAULT", "collector-commit-settled@3"));
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    run_ok(&mut t.flush(&[]));
    run_ok(&mut t.collector(&["--directory", &dir, "--once"]));
    final_flush(&t);
    let mut journal = journal_cursors(&a);
    journal.extend(journal_cursors(&b));
    assert_exactly_once(&journal, &parquet_cursors(&t.data()));
}
