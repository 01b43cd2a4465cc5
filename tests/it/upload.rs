//! Object storage: the upload script that jp-upload.service runs, with the real rclone against a
//! real S3 server (s3s-fs) on loopback.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const BUCKET: &str = "archive";

/// An S3 server on a free loopback port storing its objects as files under `root`
/// (`root/BUCKET/KEY`), and an rclone config naming it `s3:`.
struct S3 {
    _server: KillOnDrop,
    root: PathBuf,
    config: PathBuf,
}

impl S3 {
    fn start(t: &TestDir) -> S3 {
        let tools = std::env::var("JP_TOOLS").expect("JP_TOOLS (scripts/env.sh sets it)");
        let root = t.path().join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let port = free_port();
        let server = start_listening(
            Command::new(Path::new(&tools).join("bin/s3s-fs"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "jp-test", "--secret-key", "jp-test-secret"])
                .arg(&root),
            port,
            "s3s-fs (scripts/setup.sh --for-tests builds it)",
        );
        let config = t.path().join("rclone.conf");
        write_file(
            &config,
            &format!(
                "[s3]\ntype = s3\nprovider = Other\naccess_key_id = jp-test\n\
                 secret_access_key = jp-test-secret\nendpoint = http://127.0.0.1:{port}\n\
                 force_path_style = true\n"
            ),
        );
        S3 {
            _server: server,
            root,
            config,
        }
    }

    /// sha256 of every object in the bucket, by key.
    fn objects(&self) -> BTreeMap<String, String> {
        let dir = self.root.join(BUCKET);
        if !dir.exists() {
            return BTreeMap::new();
        }
        parquet_digest(&dir)
    }
}

/// The upload script as jp-upload.service runs it (its environment file's settings).
fn upload(t: &TestDir, s3: &S3, flags: &str) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/jp-upload");
    let mut cmd = Command::new(script);
    // The bucket's root: s3s-fs answers rclone's first HEAD of a prefix that holds objects (a
    // directory on its disk) with a 500, after 40 s (measured), where S3 answers 404 at once.
    cmd.env("JP_UPLOAD_REMOTE", format!("s3:{BUCKET}"))
        .env("JP_UPLOAD_DATA", t.data())
        .env("JP_UPLOAD_STATE", t.state())
        .env("RCLONE_CONFIG", &s3.config)
        .env("JP_UPLOAD_FLAGS", flags)
        .env_remove("STATE_DIRECTORY");
    cmd
}

/// Guards the upload: a run killed mid-way and run again leaves the bucket equal to the local
/// tree byte for byte; a later run copies new and rewritten files, and a file deleted locally
/// (retention) stays in the bucket.
#[test]
fn upload_killed_mid_run_then_run_again_leaves_the_bucket_equal_to_the_tree() {
    let t = TestDir::new();
    t.archive("corpus", "-n 3000 --hosts 2 --seed 17 --duration 150m");
    std::fs::create_dir_all(t.state()).unwrap();
    let local = parquet_digest(&t.data());
    assert!(local.len() > 250, "{} files", local.len());
    let s3 = S3::start(&t);

    // Slowly, one file at a time, killed (the script and rclone: its process group) once a
    // few files are in the bucket.
    let mut slow = upload(&t, &s3, "--transfers 1 --checkers 1 --bwlimit 40k");
    slow.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = slow.spawn().unwrap();
    let group = child.id() as i32;
    let mut child = KillOnDrop(child);
    eventually(Duration::from_secs(60), "a few files uploaded", || {
        s3.objects().len() >= 5
    });
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.0.wait();
    let partial = s3.objects().len();
    assert!(
        partial < local.len(),
        "killed mid-run: {partial} of {}",
        local.len()
    );
    assert!(
        !t.state().join("upload.last-success").exists(),
        "a killed run records nothing"
    );

    let out = run(&mut upload(&t, &s3, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s3.objects(),
        local,
        "the bucket equals the local minute files"
    );
    assert!(
        !s3.root.join(BUCKET).join("journal.duckdb").exists(),
        "the catalogue (local paths) stays local"
    );

    // Later: a minute rewritten (as a merge does), one deleted by retention, one new.
    std::thread::sleep(Duration::from_millis(1100));
    let names: Vec<&String> = local.keys().collect();
    let (rewritten, deleted, source) = (names[3].clone(), names[4].clone(), names[5].clone());
    std::fs::copy(t.data().join(&source), t.data().join(&rewritten)).unwrap();
    std::fs::remove_file(t.data().join(&deleted)).unwrap();
    let new = "web-01/2030/01/01/20300101-0000.parquet";
    std::fs::create_dir_all(t.data().join(new).parent().unwrap()).unwrap();
    std::fs::copy(t.data().join(&source), t.data().join(new)).unwrap();
    let out = run(&mut upload(&t, &s3, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want = parquet_digest(&t.data());
    want.insert(deleted.clone(), local[&deleted].clone());
    assert_eq!(s3.objects(), want, "new and rewritten copied; deleted kept");
}

/// Guards the script's quoting: a CA bundle whose path holds spaces and a glob character reaches
/// rclone as one word (it was split on spaces), flags are split but never globbed, and a run
/// leaves `upload.enabled`, which makes retention wait for the copies.
#[test]
fn upload_passes_paths_with_spaces_as_one_word() {
    let t = TestDir::new();
    t.archive("corpus", "-n 300 --hosts 1 --seed 19 --duration 10m");
    std::fs::create_dir_all(t.state()).unwrap();
    let s3 = S3::start(&t);
    let ca_dir = t.path().join("my certs [x]");
    std::fs::create_dir(&ca_dir).unwrap();
    let ca = ca_dir.join("ca bundle.pem");
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", &ca).unwrap();
    // A file a glob in the flags would expand to, in the script's working directory.
    write_file(&t.path().join("x.tmp"), "");
    let out = run(upload(&t, &s3, "--transfers 2 --exclude *.tmp")
        .env("AWS_CA_BUNDLE", &ca)
        .current_dir(t.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s3.objects(), parquet_digest(&t.data()));
    assert!(t.state().join("upload.enabled").exists());
    assert!(t.state().join("upload.last-success").exists());
}

/// Guards the bucket after compaction (`compact_after`): for each day jp-flush compacted, the
/// bucket ends up holding exactly the local files (the minute files the day file replaced are
/// removed there); every other object stays, and a compacted day that retention removed locally
/// before the upload ran is never touched in the bucket.
#[test]
fn compacted_days_leave_the_bucket_equal_to_the_tree_and_days_retention_removed_untouched() {
    let t = TestDir::new();
    t.archive("corpus", "-n 12000 --hosts 2 --seed 24 --duration 26h");
    let s3 = S3::start(&t);
    let out = run(&mut upload(&t, &s3, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let minutes = s3.objects();
    assert_eq!(minutes, parquet_digest(&t.data()));

    // A minute the bucket holds but the tree no longer does (retention, before compaction).
    let (kept_remote, _) = minutes.iter().next().unwrap();
    std::fs::remove_file(t.data().join(kept_remote)).unwrap();
    write_file(&t.config(), "compact_after = \"1d\"\n");
    run_ok(&mut t.flush(&["--compact"]));
    let records = t.state().join("upload-compacted");
    assert_eq!(
        std::fs::read_dir(&records).unwrap().count(),
        4,
        "2 hosts, 2 days"
    );

    // Retention removes one compacted day locally before the upload runs.
    // Keys are `./HOST/YYYY/MM/DD/NAME`.
    let host = kept_remote.split('/').nth(1).unwrap();
    let gone = format!("./{host}/2024/03/02/");
    std::fs::remove_dir_all(t.data().join(&gone)).unwrap();

    let out = run(&mut upload(&t, &s3, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want = parquet_digest(&t.data());
    for (key, digest) in &minutes {
        if key.starts_with(&gone) {
            want.insert(key.clone(), digest.clone());
        }
    }
    assert!(want.keys().any(|k| k.ends_with("/20240301.parquet")));
    // The minute retention removed before compaction was in the day the day file replaced: the
    // day file holds the rest of that day, and the bucket holds the day as the tree does.
    assert!(!want.contains_key(kept_remote.as_str()));
    assert_eq!(s3.objects(), want);
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
}
