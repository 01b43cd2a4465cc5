//! A small harness: a temp dir per test, the project's binaries, a private journald, a fake
//! `NOTIFY_SOCKET`, and helpers to read the buffer.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use journal_parquet::config::{CommonArgs, Settings};

pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_journal-parquet");
pub const FLUSH: &str = env!("CARGO_BIN_EXE_jp-flush");

/// A scratch directory with `state/`, `data/` and an empty config file (so that a config
/// installed on the machine never leaks into a test).
pub struct TestDir {
    pub dir: tempfile::TempDir,
    data: Option<PathBuf>,
}

impl TestDir {
    /// A test dir whose Parquet tree is `data` (another test dir's), for runs that share a tree.
    pub fn sharing_data(data: &Path) -> TestDir {
        TestDir {
            data: Some(data.to_path_buf()),
            ..TestDir::new()
        }
    }

    pub fn data(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.path().join("data"))
    }

    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("jp-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        TestDir { dir, data: None }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    /// One of our binaries with this dir's state, data and config, plus `args`, and none of the
    /// systemd environment of whoever runs the tests.
    fn command(&self, binary: &str, args: &[&str]) -> Command {
        self.command_with(binary, &[], args)
    }

    /// `command`, with the subcommand words `sub` before the directory flags.
    fn command_with(&self, binary: &str, sub: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(binary);
        cmd.args(sub)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--data-dir")
            .arg(self.data())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("STATE_DIRECTORY")
            .env_remove("WATCHDOG_USEC");
        cmd
    }

    pub fn collector(&self, args: &[&str]) -> Command {
        self.command(COLLECTOR, args)
    }

    pub fn flush(&self, args: &[&str]) -> Command {
        self.command(FLUSH, args)
    }

    /// `journal-parquet query` over this dir's archive.
    pub fn query(&self, args: &[&str]) -> Command {
        self.command_with(COLLECTOR, &["query"], args)
    }

    /// `journal-parquet web` over this dir's archive.
    pub fn web(&self, args: &[&str]) -> Command {
        self.command_with(COLLECTOR, &["web"], args)
    }

    /// The one value `journal-parquet query --format csv ARGS… SQL` answers (the line under the
    /// header); the query must succeed.
    pub fn query_value(&self, args: &[&str]) -> String {
        let mut all = vec!["--format", "csv"];
        all.extend_from_slice(args);
        let out = run_ok(&mut self.query(&all));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .unwrap_or_else(|| panic!("no value in {text:?}"))
            .to_owned()
    }

    /// Journal files made by the project's generator in `NAME` under this dir; `args` are the
    /// generator's options, space-separated (e.g. "-n 5000 --hosts 3 --seed 5").
    pub fn corpus(&self, name: &str, args: &str) -> PathBuf {
        let dir = self.path().join(name);
        generate_corpus(&dir, &args.split_whitespace().collect::<Vec<_>>());
        dir
    }

    /// A generated corpus (`corpus`) read into the buffer and flushed whole (`jp-flush --all`):
    /// an archive to read. Returns the corpus.
    pub fn archive(&self, name: &str, args: &str) -> PathBuf {
        let corpus = self.corpus(name, args);
        self.backfill(&corpus);
        run_ok(&mut self.flush(&["--all"]));
        corpus
    }

    /// Reads every entry of the journal files in `dir` into the buffer (`--from-head --once`).
    pub fn backfill(&self, dir: &Path) {
        run_ok(&mut self.collector(&[
            "--directory",
            dir.to_str().unwrap(),
            "--from-head",
            "--once",
        ]));
    }

    /// A single number from the buffer, e.g. `SELECT count(*) FROM journal_logs`.
    pub fn query_u64(&self, sql: &str) -> u64 {
        self.with_buffer(|c| c.query_row(sql, [], |r| r.get(0)).unwrap())
    }

    pub fn settings(&self) -> Settings {
        let common = CommonArgs {
            state_dir: Some(self.state()),
            data_dir: Some(self.data()),
            config: Some(self.config()),
            log_level: None,
            check_config: false,
        };
        Settings::resolve(&common).unwrap()
    }

    /// Runs `f` on the buffer as one table (`journal_logs`, and the newest `collector_state`),
    /// through a seal (so it works while a collector runs): every row committed so far.
    pub fn with_buffer<T>(&self, f: impl FnOnce(&duckdb::Connection) -> T) -> T {
        let settings = self.settings();
        let buffer = settings.buffer();
        let lease = journal_parquet::handoff::acquire(
            &settings.state_dir,
            &buffer,
            settings.handoff_timeout,
        )
        .expect("seal the buffer");
        let sealed = lease.sealed(&buffer).unwrap();
        let attached = journal_parquet::flush::Attached::open(&settings, &buffer, &sealed)
            .expect("attach the sealed segments");
        f(attached.connection())
    }

    /// The buffer's segment files (`STATE/buffer/NNNNNNNN.duckdb`), oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        let buffer = self.settings().buffer();
        buffer
            .segments()
            .unwrap()
            .into_iter()
            .map(|n| buffer.segment_path(n))
            .collect()
    }

    /// cursor → number of rows with it.
    pub fn cursor_counts(&self) -> BTreeMap<String, u64> {
        self.with_buffer(|c| {
            let mut st = c
                .prepare("SELECT cursor, count(*) FROM journal_logs GROUP BY cursor")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
    }

    /// The `message` column of every buffered row.
    pub fn messages(&self) -> Vec<String> {
        self.with_buffer(|c| {
            let mut st = c
                .prepare("SELECT message FROM journal_logs WHERE message IS NOT NULL")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
    }
}

/// The Python that has the readers that are not ours (scripts/setup.sh --for-tests installs
/// them into a virtualenv, `$JP_TEST_PYTHON`).
pub fn test_python() -> String {
    std::env::var("JP_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Overwrites the first 16 KiB of a DuckDB file: its header is gone, and DuckDB says the file is
/// not a database.
pub fn overwrite_header(path: &Path) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(&[0x5a; 16384]).unwrap();
}

/// Runs a command to completion, with its output captured.
/// Every path under `dir` (directories after their contents); nothing when `dir` is missing.
/// The `*.parquet` files under `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// A new `Command` like `cmd` (program, arguments, environment changes), for starting the same
/// run again and again.
pub fn same_command(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => c.env(key, v),
            None => c.env_remove(key),
        };
    }
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"))
}

/// Runs a command to completion like `run`, watching its peak RSS (VmHWM, KiB) as it goes.
pub fn run_measuring_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    // Its stderr is read beside it, so that a chatty run never blocks on a full pipe.
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut text).unwrap();
        text
    });
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    (
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        },
        peak,
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and shows stderr otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        stderr(&out)
    );
    out
}

pub fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Waits for a child with a time limit; kills it (by its PID) if it overruns.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("PID {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fake `NOTIFY_SOCKET`: a thread drains it (as systemd does) and keeps what the service said.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    pub fn new(dir: &Path) -> NotifySocket {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = dir.join(format!(
            "notify-{}.sock",
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            // Runs until the test process exits.
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket { path, messages }
    }

    pub fn seen(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message line equal to `line` (e.g. READY=1).
    pub fn wait_for(&mut self, line: &str, limit: Duration) {
        eventually(limit, line, || {
            self.seen().iter().any(|m| m.lines().any(|l| l == line))
        });
    }
}

/// A child process of the test, killed (by its PID) if the test ends without waiting for it.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free loopback port: bound, read, released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd`, a server on loopback `port` (`what` names it), with its output discarded, and
/// waits until it accepts connections.
pub fn start_listening(cmd: &mut Command, port: u16, what: &str) -> KillOnDrop {
    let server = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}")),
    );
    eventually(
        Duration::from_secs(20),
        &format!("{what} to listen"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    server
}

/// Starts a collector with its stderr in `log` and waits until it says READY=1.
pub fn start_collector_logging(
    t: &TestDir,
    args: &[&str],
    log: &Path,
) -> (KillOnDrop, NotifySocket) {
    let mut notify = NotifySocket::new(t.path());
    let child = KillOnDrop(
        t.collector(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    notify.wait_for("READY=1", Duration::from_secs(60));
    (child, notify)
}

/// Starts `systemd-journal-upload` sending journal `file` to `http://127.0.0.1:PORT` once (its
/// saved cursor is `t`'s `upload-I.state`).
pub fn start_upload(t: &TestDir, port: u16, i: usize, file: &Path) -> Child {
    Command::new("/lib/systemd/systemd-journal-upload")
        .arg(format!("--url=http://127.0.0.1:{port}"))
        .arg(format!("--file={}", file.display()))
        .arg("--follow=no")
        .arg(format!(
            "--save-state={}",
            t.path().join(format!("upload-{i}.state")).display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-upload")
}

/// Starts a collector and waits until it says READY=1.
pub fn start_collector(t: &TestDir, args: &[&str]) -> (KillOnDrop, NotifySocket) {
    let mut notify = NotifySocket::new(t.path());
    let child = t
        .collector(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    notify.wait_for("READY=1", Duration::from_secs(120));
    (child, notify)
}

static JOURNALD_SEQ: AtomicU32 = AtomicU32::new(0);

/// A private journald (a journal namespace of its own) started by the test and stopped, with its
/// files removed, when dropped. Entries go to its native socket or its syslog socket; its files
/// are read with `--directory`.
pub struct Journald {
    child: Child,
    pub namespace: String,
    pub dir: PathBuf,
}

impl Journald {
    pub fn start() -> Journald {
        Journald::start_as(&Journald::new_namespace())
    }

    /// A namespace name no journald of this test run has used.
    pub fn new_namespace() -> String {
        format!(
            "jptest{}x{}",
            std::process::id(),
            JOURNALD_SEQ.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A private journald serving `namespace` (from `new_namespace`).
    pub fn start_as(namespace: &str) -> Journald {
        let namespace = namespace.to_owned();
        let child = Command::new("/lib/systemd/systemd-journald")
            .arg(&namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /lib/systemd/systemd-journald (Debian package systemd)");
        let machine_id = std::fs::read_to_string("/etc/machine-id")
            .expect("read /etc/machine-id")
            .trim()
            .to_owned();
        let candidates = [
            PathBuf::from(format!("/var/log/journal/{machine_id}.{namespace}")),
            PathBuf::from(format!("/run/log/journal/{machine_id}.{namespace}")),
        ];
        let socket = PathBuf::from(format!("/run/systemd/journal.{namespace}/socket"));
        let mut j = Journald {
            child,
            namespace,
            dir: PathBuf::new(),
        };
        eventually(Duration::from_secs(20), "journald to start", || {
            socket.exists() && candidates.iter().any(|c| c.join("system.journal").exists())
        });
        j.dir = candidates
            .into_iter()
            .find(|c| c.exists())
            .expect("journal dir");
        j
    }

    /// Stops this journald (SIGTERM) and starts it again on the same namespace and files.
    pub fn restart(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let socket = self.runtime_dir().join("socket");
        let _ = std::fs::remove_file(&socket);
        self.child = Command::new("/lib/systemd/systemd-journald")
            .arg(&self.namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart systemd-journald");
        eventually(Duration::from_secs(20), "journald to start again", || {
            socket.exists()
        });
    }

    /// Asks journald to rotate its files (what `journalctl --rotate` does), and waits for it.
    pub fn rotate(&self) {
        let archived = |dir: &Path| {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains('@'))
                        .count()
                })
                .unwrap_or(0)
        };
        let before = archived(&self.dir);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .unwrap();
        eventually(Duration::from_secs(20), "journald to rotate", || {
            archived(&self.dir) > before
        });
    }

    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/systemd/journal.{}", self.namespace))
    }

    /// Sends one entry over the native protocol: values may hold any bytes.
    pub fn send(&self, fields: &[(&str, &[u8])]) {
        let mut payload = Vec::new();
        for (name, value) in fields {
            if value.contains(&b'\n') {
                payload.extend_from_slice(name.as_bytes());
                payload.push(b'\n');
                payload.extend_from_slice(&(value.len() as u64).to_le_bytes());
                payload.extend_from_slice(value);
                payload.push(b'\n');
            } else {
                payload.extend_from_slice(name.as_bytes());
                payload.push(b'=');
                payload.extend_from_slice(value);
                payload.push(b'\n');
            }
        }
        let sock = UnixDatagram::unbound().unwrap();
        sock.send_to(&payload, self.runtime_dir().join("socket"))
            .expect("send to journald");
    }

    /// Sends `PREFIX-0` … `PREFIX-{n-1}` and waits until journald has written the last.
    pub fn send_messages(&self, prefix: &str, n: usize) {
        for i in 0..n {
            self.send_message(&format!("{prefix}-{i}"));
        }
        self.wait_written(&format!("{prefix}-{}", n - 1));
    }

    pub fn send_message(&self, message: &str) {
        self.send(&[
            ("MESSAGE", message.as_bytes()),
            ("SYSLOG_IDENTIFIER", b"jp-test"),
        ]);
    }

    /// Writes a line the way a syslog client does, with `logger`.
    pub fn logger(&self, message: &str) {
        run_ok(
            Command::new("logger")
                .arg("--socket")
                .arg(self.runtime_dir().join("dev-log"))
                .args(["-t", "jp-test-logger", message]),
        );
    }

    /// Waits until journald has written `message` to its files.
    pub fn wait_written(&self, message: &str) {
        eventually(Duration::from_secs(20), "journald to write", || {
            let out = run(Command::new("journalctl").arg("-D").arg(&self.dir).args([
                "-o",
                "cat",
                "--no-pager",
            ]));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == message)
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.runtime_dir());
    }
}

/// Journal files made by the project's generator through systemd-journal-remote.
fn generate_corpus(dir: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/gen_journal.py");
    run_ok(
        Command::new("python3")
            .arg(script)
            .args(args)
            .arg("--quiet")
            .arg("--journal")
            .arg(dir),
    );
}

/// `journalctl --file F -o json ARGS` for every journal file in `dir`, active or archived, file by
/// file: the merged view of a directory can skip entries whose timestamps are out of order across
/// files, and the tests compare against every entry the files hold.
pub fn journalctl_each_file(dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".journal") || name.ends_with(".journal~")) {
            continue;
        }
        let out = run_ok(
            Command::new("journalctl")
                .arg("--file")
                .arg(&path)
                .args(["-o", "json", "--no-pager"])
                .args(args),
        );
        for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            all.push(serde_json::from_slice(line).unwrap());
        }
    }
    all
}

/// Every entry of the journal files in `dir` as `journalctl -o json --all` prints it, by cursor.
pub fn journalctl_json(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    journalctl_each_file(dir, &["--all"])
        .into_iter()
        .map(|v| (v["__CURSOR"].as_str().unwrap().to_owned(), v))
        .collect()
}

pub fn write_file(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Every row of every Parquet file under `dir`, read with pyarrow (not our code): the columns
/// plus `_file` (relative path) and `_schema`.
pub fn parquet_rows(dir: &Path) -> Vec<serde_json::Value> {
    let python = test_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/read_parquet_tree.py");
    let out = run(Command::new(&python).arg(script).arg(dir));
    assert!(
        out.status.success(),
        "reading Parquet with pyarrow ({python}) failed: {} (scripts/setup.sh installs it)",
        stderr(&out)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// One entry for `journal_file`: its realtime (µs) and its fields (any bytes).
pub struct RawEntry {
    pub realtime_usec: u64,
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Writes entries into a real journal file with systemd-journal-remote (export format on stdin).
pub fn journal_file(path: &Path, entries: &[RawEntry]) {
    let mut stream = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let head = format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n",
            e.realtime_usec,
            1_000_000 + i as u64
        );
        stream.extend_from_slice(head.as_bytes());
        for (name, value) in &e.fields {
            let plain = value.iter().all(|&b| b >= b' ' || b == b'\t') && !value.contains(&0x7f);
            if plain {
                stream.extend_from_slice(name.as_bytes());
                stream.push(b'=');
                stream.extend_from_slice(value);
            } else {
                stream.extend_from_slice(name.as_bytes());
                stream.push(b'\n');
                stream.extend_from_slice(&(value.len() as u64).to_le_bytes());
                stream.extend_from_slice(value);
            }
            stream.push(b'\n');
        }
        stream.push(b'\n');
    }
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .arg("-o")
        .arg(path)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run systemd-journal-remote");
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "systemd-journal-remote failed"
    );
}

/// `tree_digest` of the Parquet files only (not the catalogue, nor files set aside).
pub fn parquet_digest(dir: &Path) -> BTreeMap<String, String> {
    tree_digest(dir)
        .into_iter()
        .filter(|(path, _)| path.ends_with(".parquet"))
        .collect()
}

/// sha256 of every file under `dir`, by relative path: to compare trees byte for byte.
pub fn tree_digest(dir: &Path) -> BTreeMap<String, String> {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
            .arg("sh")
            .arg(dir),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, p)| (p.to_owned(), h.to_owned()))
        })
        .collect()
}
