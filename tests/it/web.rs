//! The web console (`journal-parquet web`): the token on every request, nothing written, bad
//! requests answered 400, socket activation with the idle exit, and a real browser (Debian's
//! chromium, driven by Selenium) checking what the pages show against the metrics files, the
//! summary and journalctl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

/// An archive of recent minutes (the activity chart shows the last 30 days), its summary, a
/// token file and a config naming it, and a marker entry. Returns the dir, the token and the
/// marker entry as journalctl prints it.
fn console_archive() -> (TestDir, String, serde_json::Value) {
    let t = TestDir::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let corpus = t.corpus(
        "corpus",
        &format!(
            "-n 3000 --hosts 2 --seed 31 --duration 2h --start @{}",
            now - 3 * 3600
        ),
    );
    let marker_dir = t.path().join("marker");
    std::fs::create_dir_all(&marker_dir).unwrap();
    journal_file(
        &marker_dir.join("marker.journal"),
        &[RawEntry {
            realtime_usec: (now - 1800) * 1_000_000,
            fields: vec![
                (
                    "MESSAGE".into(),
                    b"web-console-marker 7f3a: disk almost full".to_vec(),
                ),
                ("_HOSTNAME".into(), b"marker-host".to_vec()),
                ("PRIORITY".into(), b"3".to_vec()),
                ("SYSLOG_IDENTIFIER".into(), b"marker".to_vec()),
                ("CUSTOM_FIELD".into(), b"kept \xff whole".to_vec()),
            ],
        }],
    );
    let marker = journalctl_json(&marker_dir).into_values().next().unwrap();
    let token = "0123456789abcdef0123456789abcdef".to_owned();
    let token_file = t.path().join("web.token");
    write_file(&token_file, &format!("{token}\n"));
    set_mode(&token_file, 0o640);
    write_file(
        &t.config(),
        &format!(
            "web_token_file = \"{}\"\nweb_idle_exit_sec = 2\n",
            token_file.display()
        ),
    );
    t.backfill(&corpus);
    t.backfill(&marker_dir);
    run_ok(&mut t.flush(&["--all"]));
    (t, token, marker)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `journal-parquet web --listen 127.0.0.1:PORT`, running until dropped.
fn start_web(t: &TestDir) -> (KillOnDrop, String) {
    let port = free_port();
    let server = start_listening(
        &mut t.web(&["--listen", &format!("127.0.0.1:{port}")]),
        port,
        "journal-parquet web",
    );
    (server, format!("http://127.0.0.1:{port}"))
}

/// curl: status code and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out: Output = run(Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

const ENDPOINTS: &[&str] = &[
    "/",
    "/app.js",
    "/uPlot.min.js",
    "/api/health",
    "/api/activity?range=24h&by=host",
    "/api/search?text=marker",
    "/api/entry?cursor=x&ts=0",
    "/api/download?format=csv",
];

/// Guards the console's two promises to the machine: every endpoint refuses a request without the
/// token (or with a wrong one), the login sets an HttpOnly, SameSite=Strict cookie, the summary
/// answers as the view `journal_minutes` (in the console's SQL and in `journal-parquet query`),
/// and no request writes anything in the state or data directory.
#[test]
fn every_endpoint_refuses_without_the_token_and_no_request_writes() {
    let (t, token, _) = console_archive();
    let state_before = tree_digest(&t.state());
    let data_before = tree_digest(&t.data());
    let (_server, base) = start_web(&t);
    for path in ENDPOINTS {
        let url = format!("{base}{path}");
        assert_eq!(curl(&[&url]).0, 401, "{path} without a token");
        assert_eq!(
            curl(&[
                "-H",
                "Cookie: jp_token=0123456789abcdef0123456789abcdeX",
                &url
            ])
            .0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "--data",
            "SELECT 1",
            &format!("{base}/api/sql")
        ])
        .0,
        401
    );

    // The login: a wrong token is refused, the right one gives the cookie.
    let (code, _) = curl(&["--data", "token=wrong", &format!("{base}/login")]);
    assert_eq!(code, 401);
    let out = run(Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--data"])
        .arg(format!("token={token}"))
        .arg(format!("{base}/login")));
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 303"), "{headers}");
    assert!(
        headers.contains(&format!(
            "set-cookie: jp_token={token}; httponly; samesite=strict"
        )),
        "{headers}"
    );

    let cookie = format!("Cookie: jp_token={token}");
    for path in ENDPOINTS.iter().filter(|p| !p.starts_with("/api/entry")) {
        let (code, body) = curl(&["-H", &cookie, &format!("{base}{path}")]);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--data",
        "SELECT count(*) AS n FROM journal",
        &format!("{base}/api/sql"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"n\""), "{body}");
    assert_eq!(
        tree_digest(&t.state()),
        state_before,
        "the state directory changed"
    );
    assert_eq!(
        tree_digest(&t.data()),
        data_before,
        "the data directory changed"
    );
}

/// Guards the answers to wrong requests: 400 and a message saying what is wrong (a range that ends
/// before it starts, a regex that does not compile, a page past the end, SQL reaching outside the
/// archive or writing), never a 500; and a token file every user can read stops the console.
#[test]
fn bad_requests_answer_400_saying_what_is_wrong() {
    let (t, token, _) = console_archive();
    let (server, base) = start_web(&t);
    let cookie = format!("Cookie: jp_token={token}");
    for (path, says) in [
        (
            "/api/search?since=2026-11-02&until=2026-11-01",
            "ends before it starts",
        ),
        ("/api/search?text=a(b&mode=regex", "does not compile"),
        ("/api/search?text=marker&page=50", "past the end"),
        ("/api/search?priority=9", "priority"),
        ("/api/search?since=yesterday", "since"),
        ("/api/search?text=x&mode=glob", "mode"),
        ("/api/activity?range=2y", "range"),
        ("/api/activity?by=colour", "by"),
        ("/api/download?format=xlsx", "format"),
        ("/api/entry?cursor=nothing&ts=0", "no entry"),
    ] {
        let (code, body) = curl(&["-H", &cookie, &format!("{base}{path}")]);
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    for sql in [
        "SELECT * FROM read_text('/etc/passwd')",
        "COPY (SELECT 1) TO '/tmp/jp-web-escape.csv'",
        "SELEC 1",
    ] {
        let (code, body) = curl(&["-H", &cookie, "--data", sql, &format!("{base}/api/sql")]);
        assert_eq!(code, 400, "{sql}: {body}");
    }
    assert!(!Path::new("/tmp/jp-web-escape.csv").exists());
    drop(server);

    let token_file = t.path().join("web.token");
    set_mode(&token_file, 0o644);
    let out = run(&mut t.web(&["--listen", "127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 0640"), "{}", stderr(&out));
}

/// Guards socket activation: started by `systemd-socket-activate` (as systemd starts it from
/// jp-web.socket) on the first connection, the console answers on the socket it was passed and
/// exits after `web_idle_exit_sec` without a request. (systemd starting it again at the next
/// connection is the booted guest's test, `packages.rs`.)
#[test]
fn socket_activated_console_answers_and_exits_when_idle() {
    let (t, token, _) = console_archive();
    let port = free_port();
    let mut activate = Command::new("systemd-socket-activate");
    activate
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_journal-parquet"))
        .arg("web")
        .arg("--state-dir")
        .arg(t.state())
        .arg("--data-dir")
        .arg(t.data())
        .arg("--config")
        .arg(t.config())
        .stderr(Stdio::piped());
    let _activator = start_listening(&mut activate, port, "systemd-socket-activate");
    let url = format!("http://127.0.0.1:{port}/api/health");
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl(&["-H", &bearer, &url]);
    assert_eq!(code, 200, "{body}");
    let pid = || {
        run(Command::new("pgrep").args(["-f", &format!("web --state-dir {}", t.state().display())]))
    };
    assert!(pid().status.success(), "the console runs");
    eventually(
        Duration::from_secs(20),
        "the console to exit when idle",
        || !pid().status.success(),
    );
}

/// Guards the console in a real browser: Debian's chromium (headless) logs in, and what the
/// pages show is checked against sources that are not the page: the health figures against the
/// metrics files, the activity chart's points against the summary, the marker entry found by
/// text search and opened against journalctl's JSON; a query outside the archive is refused.
/// Screenshots of each page go to $CARGO_TARGET_DIR/web-screenshots.
#[test]
fn browser_sees_health_activity_and_a_searched_entry_as_the_sources_say() {
    let (t, token, marker) = console_archive();
    let (_server, base) = start_web(&t);
    let expected = t.path().join("marker.json");
    write_file(&expected, &marker.to_string());
    let shots = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or("target".into()))
        .join("web-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/web_browser.py");
    let out = run(Command::new(test_python())
        .arg(script)
        .arg(&base)
        .arg(&token)
        .arg(t.state())
        .arg(t.state())
        .arg("web-console-marker 7f3a")
        .arg(&expected)
        .arg(&shots));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let found: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(found["sql_count"], 3001, "{found}");
    assert!(
        found["activity_entries"].as_u64().unwrap() >= 3000,
        "{found}"
    );
    assert!(
        found["sql_refused"]
            .as_str()
            .unwrap()
            .contains("disabled by configuration"),
        "{found}"
    );
    for page in ["login", "health", "activity", "search", "sql"] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}.png");
    }
}

/// Guards "live": a search with `live=true` also finds the entries the collector has committed
/// and jp-flush has not written yet (read from the buffer under the flush lease, as `query --live`
/// does); without it, only the archive answers.
#[test]
fn live_search_finds_entries_not_yet_in_a_minute_file() {
    let (t, token, _) = console_archive();
    let late = t.path().join("late");
    std::fs::create_dir_all(&late).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    journal_file(
        &late.join("late.journal"),
        &[RawEntry {
            realtime_usec: (now - 600) * 1_000_000,
            fields: vec![
                ("MESSAGE".into(), b"only-in-the-buffer 91c2".to_vec()),
                ("_HOSTNAME".into(), b"marker-host".to_vec()),
            ],
        }],
    );
    t.backfill(&late);
    let (_server, base) = start_web(&t);
    let cookie = format!("Cookie: jp_token={token}");
    let hits = |live: &str| {
        let (code, body) = curl(&[
            "-H",
            &cookie,
            &format!("{base}/api/search?text=only-in-the-buffer&live={live}"),
        ]);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["rows"].as_array().unwrap().len()
    };
    assert_eq!(hits("false"), 0);
    assert_eq!(hits("true"), 1);
}

/// Guards the summary's two ways of counting: what `jp-flush --rebuild-summary` counts from the
/// archive equals, row for row, what jp-flush counted as it wrote each minute file; and a rebuild
/// clears the mark a failed update left.
#[test]
fn summary_rebuilt_from_the_archive_equals_the_one_kept_while_flushing() {
    let (t, _, _) = console_archive();
    let rows = |t: &TestDir| {
        let out = run_ok(&mut t.query(&[
            "--format",
            "csv",
            "SELECT minute, host, unit, identifier, priority, entries, bytes \
             FROM journal_minutes ORDER BY ALL",
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let kept = rows(&t);
    assert!(kept.lines().count() > 100, "{kept}");
    write_file(&t.state().join("summary.stale"), "1\n");
    std::fs::remove_file(t.state().join("summary.duckdb")).unwrap();
    run_ok(&mut t.flush(&["--rebuild-summary"]));
    assert_eq!(rows(&t), kept);
    assert!(!t.state().join("summary.stale").exists());
}
