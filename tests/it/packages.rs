//! The units and the packages: `systemd-analyze verify` and `security`, the files in the .deb and
//! the .rpm (built by scripts/package.sh before the tests run), and both packages installed,
//! run and removed in a real systemd (a booted Debian 12 guest, see nspawn.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::nspawn::{self, Guest};

const UNITS: [&str; 7] = [
    "journal-parquet.service",
    "jp-flush.service",
    "jp-flush.timer",
    "jp-upload.service",
    "jp-upload.timer",
    "jp-web.socket",
    "jp-web.service",
];

/// The template units (a journald namespace each), and the plain unit each one follows.
const TEMPLATES: [(&str, &str); 3] = [
    ("journal-parquet@.service", "journal-parquet.service"),
    ("jp-flush@.service", "jp-flush.service"),
    ("jp-flush@.timer", "jp-flush.timer"),
];

/// A unit file name, or a template's with an instance name filled in.
fn instance(unit: &str) -> String {
    unit.replace("@.", "@jpdemo.")
}

/// Every file both packages install, with its mode: the one list, as the tests expect it.
const PACKAGE_FILES: [(&str, &str); 29] = [
    ("/etc/journal-parquet/config.toml", "644"),
    ("/usr/bin/journal-parquet", "755"),
    ("/usr/bin/jp-flush", "755"),
    (
        "/usr/lib/systemd/system-preset/50-journal-parquet.preset",
        "644",
    ),
    ("/usr/lib/systemd/system/journal-parquet.service", "644"),
    ("/usr/lib/systemd/system/jp-flush.service", "644"),
    ("/usr/lib/systemd/system/jp-flush.timer", "644"),
    ("/usr/lib/systemd/system/journal-parquet@.service", "644"),
    ("/usr/lib/systemd/system/jp-flush@.service", "644"),
    ("/usr/lib/systemd/system/jp-flush@.timer", "644"),
    ("/usr/lib/systemd/system/jp-upload.service", "644"),
    ("/usr/lib/systemd/system/jp-upload.timer", "644"),
    ("/usr/lib/systemd/system/jp-web.socket", "644"),
    ("/usr/lib/systemd/system/jp-web.service", "644"),
    ("/usr/libexec/journal-parquet/jp-upload", "755"),
    ("/usr/lib/sysusers.d/journal-parquet.conf", "644"),
    ("/usr/share/doc/journal-parquet/LICENSE", "644"),
    ("/usr/share/doc/journal-parquet/README.md", "644"),
    ("/usr/share/doc/journal-parquet/guide.md", "644"),
    ("/usr/share/doc/journal-parquet/upload.env.example", "644"),
    ("/usr/share/man/man8/journal-parquet.8.gz", "644"),
    ("/usr/share/man/man8/journal-parquet-query.8.gz", "644"),
    ("/usr/share/man/man8/journal-parquet-web.8.gz", "644"),
    ("/usr/share/man/man8/jp-flush.8.gz", "644"),
    ("/usr/share/man/man5/journal-parquet.conf.5.gz", "644"),
    (
        "/usr/share/bash-completion/completions/journal-parquet",
        "644",
    ),
    ("/usr/share/bash-completion/completions/jp-flush", "644"),
    (
        "/usr/share/fish/vendor_completions.d/journal-parquet.fish",
        "644",
    ),
    ("/usr/share/fish/vendor_completions.d/jp-flush.fish", "644"),
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A package built by scripts/package.sh, next to the test binaries.
fn package(kind: &str) -> PathBuf {
    let version = env!("CARGO_PKG_VERSION");
    let path = match kind {
        "deb" => nspawn::target_dir().join(format!("debian/journal-parquet_{version}-1_amd64.deb")),
        _ => nspawn::target_dir().join(format!(
            "generate-rpm/journal-parquet-{version}-1.x86_64.rpm"
        )),
    };
    assert!(
        path.exists(),
        "{} is missing: run scripts/package.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Lines only in `expected` or only in `actual`, for a readable failure.
fn assert_same_lines(what: &str, expected: &[String], actual: &[String]) {
    let missing: Vec<_> = expected.iter().filter(|l| !actual.contains(l)).collect();
    let extra: Vec<_> = actual.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what} differs from the expected list:\n  missing: {missing:#?}\n  unexpected: {extra:#?}"
    );
}

fn expected_files(extra: &[&str]) -> Vec<String> {
    let mut files: Vec<String> = PACKAGE_FILES
        .iter()
        .map(|(path, mode)| format!("{mode} {path}"))
        .collect();
    files.extend(extra.iter().map(|s| s.to_string()));
    files.sort();
    files
}

/// Every unit file we ship, templates included.
fn all_units() -> impl Iterator<Item = &'static str> {
    UNITS.into_iter().chain(TEMPLATES.iter().map(|(t, _)| *t))
}

/// Guards the units against typos and directives systemd does not know: `systemd-analyze verify`
/// with ExecStart= pointed at the binaries just built (a template as an instance of it).
#[test]
fn units_pass_systemd_analyze_verify() {
    let t = TestDir::new();
    for unit in all_units() {
        let text = std::fs::read_to_string(manifest_dir().join("units").join(unit)).unwrap();
        let text = text
            .replace("/usr/bin/journal-parquet", COLLECTOR)
            .replace("/usr/bin/jp-flush", FLUSH)
            .replace(
                "/usr/libexec/journal-parquet/jp-upload",
                &manifest_dir()
                    .join("packaging/jp-upload")
                    .display()
                    .to_string(),
            );
        write_file(&t.path().join(instance(unit)), &text);
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(all_units().map(|u| t.path().join(instance(u)))));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        stderr(&out)
    );
}

/// Guards the template units: each says what its plain unit says, but for the lines that name
/// the instance (comments, Description=, After=, Wants=, ExecStart=, StateDirectory=, Also=), so that a
/// hardening or a fix made to one is made to both.
#[test]
fn template_units_follow_their_plain_units() {
    let directives = |unit: &str| -> Vec<String> {
        std::fs::read_to_string(manifest_dir().join("units").join(unit))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter(|l| {
                ![
                    "Description=",
                    "After=",
                    "Wants=",
                    "ExecStart=",
                    "StateDirectory=",
                    "Also=",
                ]
                .iter()
                .any(|d| l.starts_with(d))
            })
            .map(str::to_owned)
            .collect()
    };
    for (template, plain) in TEMPLATES {
        assert_eq!(
            directives(template),
            directives(plain),
            "{template} against {plain}"
        );
        let text = std::fs::read_to_string(manifest_dir().join("units").join(template)).unwrap();
        if template.ends_with(".service") {
            assert!(
                text.contains("--state-dir %S/journal-parquet/namespace/%i --data-dir %S/journal-parquet/namespace/%i/data"),
                "{template} keeps each namespace in directories of its own"
            );
        }
    }
}

/// Guards the sandbox: `systemd-analyze security --offline=yes` rates every service (template
/// instances too) at most 2.0.
#[test]
fn services_expose_at_most_2_0() {
    let t = TestDir::new();
    for unit in all_units().filter(|u| u.ends_with(".service")) {
        let text = std::fs::read_to_string(manifest_dir().join("units").join(unit)).unwrap();
        let path = t.path().join(instance(unit));
        write_file(&path, &text);
        let out = run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path));
        let text = stdout(&out);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}{}", stderr(&out)));
        eprintln!("{unit}: exposure {score}");
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0\n{text}");
    }
}

/// Guards "one file list": cargo-deb and cargo-generate-rpm each read their own table in
/// Cargo.toml, so the two must say the same, and say what the packages are expected to hold.
#[test]
fn cargo_toml_lists_the_same_files_for_deb_and_rpm() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap())
            .unwrap();
    let metadata = &manifest["package"]["metadata"];
    let mut deb: Vec<String> = metadata["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            format!(
                "{} {} {}",
                a[2].as_str().unwrap(),
                a[1].as_str().unwrap(),
                a[0].as_str().unwrap()
            )
        })
        .collect();
    let mut rpm: Vec<String> = metadata["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["mode"].as_str().unwrap(),
                a["dest"].as_str().unwrap(),
                a["source"].as_str().unwrap()
            )
        })
        .collect();
    deb.sort();
    rpm.sort();
    assert_same_lines("the rpm asset list", &deb, &rpm);
    let dests: Vec<String> = deb
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect();
    assert_same_lines("the asset list", &expected_files(&[]), &dests);
    // The config is the one conffile / %config(noreplace).
    assert_eq!(
        metadata["deb"]["conf-files"].as_array().unwrap(),
        &vec![toml::Value::from("/etc/journal-parquet/config.toml")]
    );
    let configs: Vec<&str> = metadata["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.get("config").is_some())
        .map(|a| a["dest"].as_str().unwrap())
        .collect();
    assert_eq!(configs, ["/etc/journal-parquet/config.toml"]);
}

/// Guards the shipped config: it is valid as shipped, and documents every key the programs know.
#[test]
fn shipped_config_is_valid_and_documents_every_key() {
    let shipped = manifest_dir().join("packaging/config.toml");
    let out = run_ok(
        Command::new(COLLECTOR)
            .arg("--config")
            .arg(&shipped)
            .arg("--check-config"),
    );
    let text = std::fs::read_to_string(&shipped).unwrap();
    // Every key `--check-config` prints (all of them) appears, commented out with its default.
    for line in stdout(&out).lines() {
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if ["state_dir", "data_dir", "metrics_directory"].contains(&key) {
            // Their defaults come from systemd's $STATE_DIRECTORY, unset here.
            assert!(
                text.contains(&format!("\n#{key} = ")),
                "{key} is not documented"
            );
            continue;
        }
        let documented = format!("\n#{key} = {value}\n");
        assert!(
            text.contains(&documented),
            "{} lacks `{}`",
            shipped.display(),
            documented.trim()
        );
    }
    // Keys that are off by default (`--check-config` prints them as comments).
    let off = [
        "journal_directory",
        "max_age",
        "max_use",
        "keep_free",
        "max_priority",
    ];
    for key in off.iter().chain(journal_parquet::config::GLOB_KEYS.iter()) {
        assert!(
            text.contains(&format!("\n#{key} = ")),
            "{key} is not documented"
        );
    }
    // Each binary accepts --check-config with a bad file: exit 78, naming file and key.
    let t = TestDir::new();
    write_file(&t.config(), "compression = \"lz4\"\n");
    for binary in [COLLECTOR, FLUSH] {
        let out = run(Command::new(binary)
            .arg("--config")
            .arg(t.config())
            .arg("--check-config"));
        assert_eq!(out.status.code(), Some(78), "{binary}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&t.config().display().to_string()) && err.contains("compression"),
            "{err}"
        );
    }
}

/// Guards the .deb: its files and modes, the conffile, the maintainer scripts and dependencies
/// that a minimal Debian 12 has.
#[test]
fn deb_holds_the_expected_files_and_scripts() {
    let deb = package("deb");
    let listing = stdout(&run_ok(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
    ));
    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let mode = mode_from_ls(&l[..10]);
            let path = l.split_whitespace().last().unwrap().trim_start_matches('.');
            format!("{mode} {path}")
        })
        .collect();
    files.sort();
    // cargo-deb adds the Debian copyright file made from LICENSE.
    let expected = expected_files(&[
        "644 /usr/share/doc/journal-parquet/copyright",
        "644 /usr/share/doc/journal-parquet/changelog.Debian.gz",
    ]);
    assert_same_lines(&format!("{}", deb.display()), &expected, &files);

    let field = |name: &str| {
        stdout(&run_ok(
            Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name),
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(field("Package"), "journal-parquet");
    // Only what debootstrap's minbase has; systemd is recommended.
    assert_eq!(
        field("Depends"),
        "libc6 (>= 2.34), libgcc-s1, libstdc++6 (>= 12), libsystemd0"
    );
    assert_eq!(field("Recommends"), "systemd");
    assert_eq!(field("Suggests"), "rclone");
    let t = TestDir::new();
    run_ok(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(t.path().join("control")),
    );
    let control =
        |name: &str| std::fs::read_to_string(t.path().join("control").join(name)).unwrap();
    assert_eq!(
        control("conffiles").trim(),
        "/etc/journal-parquet/config.toml"
    );
    let postinst = control("postinst");
    // cargo-deb's generated snippets (dh_installsystemd's and dh_installsysusers'), after ours.
    for needle in [
        "--check-config",
        "systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} journal-parquet.conf",
        "deb-systemd-helper enable journal-parquet.service",
        "deb-systemd-helper enable jp-flush.timer",
        "deb-systemd-invoke $_dh_action journal-parquet.service jp-flush.timer",
    ] {
        assert!(postinst.contains(needle), "postinst lacks {needle}");
    }
    // The service user is defined once, in the sysusers file; jp-upload.timer is never enabled
    // by the package (it needs /etc/journal-parquet/upload.env).
    assert!(
        !postinst.contains("useradd"),
        "a second definition of the user"
    );
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed jp-upload.timer"),
        "jp-upload.timer is enabled only if the admin had enabled it: {postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"));
    assert!(control("prerm").contains("deb-systemd-invoke stop"));
    assert!(control("postrm").contains("deb-systemd-helper purge"));
}

/// `-rwxr-xr-x` → `755`.
fn mode_from_ls(text: &str) -> String {
    let bits: u32 = text[1..]
        .chars()
        .map(|c| u32::from(c != '-'))
        .fold(0, |acc, b| acc * 2 + b);
    format!("{bits:o}")
}

/// Guards the .rpm as rpm itself reads it: name, license, files, %config(noreplace), scriptlets.
#[test]
fn rpm_holds_the_expected_files_and_scripts() {
    let Some(rpm_tool) = ["rpm"].into_iter().find(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("rpm is not installed (scripts/setup.sh --for-tests installs it)");
    };
    let rpm = package("rpm");
    let query = |args: &[&str]| stdout(&run_ok(Command::new(rpm_tool).args(args).arg(&rpm)));
    let info = query(&["-qip"]);
    for needle in [
        "Name        : journal-parquet",
        "License     : MIT",
        "Version     : 0.1.0",
    ] {
        assert!(info.contains(needle), "rpm -qip lacks {needle:?}:\n{info}");
    }
    let mut files: Vec<String> = query(&["-qlvp"])
        .lines()
        .map(|l| {
            format!(
                "{} {}",
                mode_from_ls(&l[..10]),
                l.split_whitespace().last().unwrap()
            )
        })
        .collect();
    files.sort();
    assert_same_lines(&format!("{}", rpm.display()), &expected_files(&[]), &files);
    assert_eq!(
        query(&["-qp", "--configfiles"]).trim(),
        "/etc/journal-parquet/config.toml"
    );
    let scripts = query(&["-qp", "--scripts"]);
    for needle in [
        "postinstall scriptlet",
        "systemd-sysusers journal-parquet.conf",
        "preset journal-parquet.service jp-flush.timer",
        "preuninstall scriptlet",
        "disable --now jp-flush.timer journal-parquet.service",
        "postuninstall scriptlet",
        "try-restart journal-parquet.service",
    ] {
        assert!(
            scripts.contains(needle),
            "rpm scriptlets lack {needle:?}:\n{scripts}"
        );
    }
    let requires = query(&["-qp", "--requires"]);
    assert!(requires.lines().any(|l| l == "systemd"), "{requires}");
    run_ok(
        Command::new(rpm_tool)
            .args(["-K", "--nosignature"])
            .arg(&rpm),
    );
}

/// One row of the guest's Parquet tree, as pyarrow reads it.
struct Marker {
    file: String,
    hostname: String,
    timestamp_usec: i64,
}

/// The whole path an operator takes, in a booted Debian 12: `dpkg -i`, `systemctl enable --now`,
/// log lines written across a restart of the collector, the timer's flushes, then `dpkg --purge`.
/// Guards: every marker in the right host/minute file exactly once (read with pyarrow), STATUS=
/// in `systemctl status`, the collector's own lines with their priority in `journalctl -u`, not
/// root, files 0640 and directories 0750, the timer active and its runs successful, and nothing
/// left enabled after the purge.
#[test]
fn deb_installs_runs_across_a_restart_and_purges_in_a_real_systemd() {
    if let Some(why) = nspawn::unavailable() {
        nspawn::record_skip(
            "deb_installs_runs_across_a_restart_and_purges_in_a_real_systemd",
            &why,
        );
        return;
    }
    let started = Instant::now();
    let deb = package("deb");
    let guest = Guest::boot(&nspawn::image("bookworm"));
    guest.put(&deb, "/root/journal-parquet.deb");
    guest.ok("dpkg -i /root/journal-parquet.deb");
    guest.ok("systemctl enable --now journal-parquet.service");
    assert_enabled_and_active(&guest);
    // The upload is installed but off: it needs /etc/journal-parquet/upload.env first.
    assert_eq!(
        stdout(&guest.sh("systemctl is-enabled jp-upload.timer")).trim(),
        "disabled"
    );
    web_console_starts_from_its_socket_and_exits_when_idle(&guest);

    // Markers written every 10 ms by a background loop while the collector is restarted: some
    // land while it is stopped, some while it starts.
    let run_id = format!("jp-e2e-marker-{}", std::process::id());
    let markers = 300;
    guest.ok(&format!(
        "(for i in $(seq 1 {markers}); do logger -t jp-e2e {run_id}-$i; sleep 0.01; done) & \
         sleep 1; systemctl restart journal-parquet.service; wait"
    ));
    let logged = Instant::now();

    // A journald namespace, archived by the template units: enabling one is the whole set-up.
    // Its entries go to its own tree, and only there (the main collector reads the default
    // namespace). Waited for together with the markers above.
    guest.ok("systemctl enable --now journal-parquet@jpdemo.service");
    assert_eq!(
        guest.ok("systemctl is-enabled journal-parquet@jpdemo.service jp-flush@jpdemo.timer"),
        "enabled\nenabled\n"
    );
    let ns_id = format!("{run_id}-ns");
    // The unit lives on a few seconds after its lines: the namespace's sockets go with the last
    // unit that uses them, and a unit gone within milliseconds took them (and its lines, still
    // unread by systemd-journald@jpdemo) along (seen once: 0 of 20 lines in the namespace).
    let ns_markers = 20;
    guest.ok(&format!(
        "systemd-run --wait --quiet -p LogNamespace=jpdemo \
         sh -c 'for i in $(seq 1 {ns_markers}); do echo {ns_id}-$i; done; sleep 3'"
    ));
    let ns_data = guest
        .root()
        .join("var/lib/journal-parquet/namespace/jpdemo/data");

    // Only the timer writes Parquet here; the minute of the last marker is complete 5 s after it
    // ends, and written at the next tick: at most about two minutes.
    let data = guest.root().join("var/lib/journal-parquet/data");
    let mut found: Vec<Marker> = Vec::new();
    let end = Instant::now() + Duration::from_secs(200);
    while Instant::now() < end {
        found = parquet_rows(&data)
            .into_iter()
            .filter(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&run_id) && !m.starts_with(&ns_id))
            })
            .map(|r| Marker {
                file: r["_file"].as_str().unwrap().to_owned(),
                hostname: r["hostname"].as_str().unwrap_or("").to_owned(),
                timestamp_usec: r["timestamp"].as_i64().unwrap(),
            })
            .collect();
        let ns_found = parquet_rows(&ns_data)
            .iter()
            .filter(|r| r["message"].as_str().is_some_and(|m| m.starts_with(&ns_id)))
            .count();
        if found.len() >= markers && ns_found >= ns_markers {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let waited = logged.elapsed();
    let mut ns_count: BTreeMap<String, usize> = BTreeMap::new();
    for r in parquet_rows(&ns_data) {
        if let Some(m) = r["message"].as_str().filter(|m| m.starts_with(&ns_id)) {
            *ns_count.entry(m.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        ns_count.len(),
        ns_markers,
        "namespace markers in {}: {ns_count:?}",
        ns_data.display()
    );
    assert!(ns_count.values().all(|&n| n == 1), "{ns_count:?}");
    assert_eq!(
        guest.ok("systemctl is-active journal-parquet@jpdemo.service jp-flush@jpdemo.timer"),
        "active\nactive\n"
    );
    let rows = parquet_rows(&data);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        if let Some(m) = r["message"].as_str().filter(|m| m.starts_with(&run_id)) {
            assert!(
                !m.starts_with(&ns_id),
                "{m}: a namespace entry in the main archive"
            );
            *count.entry(m).or_default() += 1;
        }
    }
    let missing: Vec<String> = (1..=markers)
        .map(|i| format!("{run_id}-{i}"))
        .filter(|m| !count.contains_key(m.as_str()))
        .collect();
    let twice: Vec<_> = count.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "after {waited:?}: {} markers missing (first: {:?}), {} more than once: {twice:?}",
        missing.len(),
        missing.first(),
        twice.len()
    );
    let hostname = guest.ok("cat /proc/sys/kernel/hostname").trim().to_owned();
    assert_eq!(hostname, guest.name);
    for m in &found {
        let minute = chrono::DateTime::from_timestamp_micros(m.timestamp_usec).unwrap();
        let expected = format!(
            "{hostname}/{}",
            minute.format("%Y/%m/%d/%Y%m%d-%H%M.parquet")
        );
        assert_eq!(m.file, expected, "a marker in the wrong file");
        assert_eq!(m.hostname, hostname);
    }

    // `systemctl reload` reads the config file again without stopping the collector (its
    // ExecReload= runs under the unit's sandbox).
    let main_pid = || guest.ok("systemctl show -p MainPID --value journal-parquet.service");
    let before = main_pid();
    guest.ok("systemctl reload journal-parquet.service");
    assert_eq!(main_pid(), before, "the reload restarted the collector");

    // systemctl status shows the collector's STATUS= text.
    let status = guest.sh("systemctl status --no-pager journal-parquet.service");
    let status = stdout(&status);
    assert!(
        status.contains("Status: \"") && status.contains("entries read since start"),
        "{status}"
    );

    // Its own lines, with their priorities: notice (5) for start and stop.
    let json = guest.ok("journalctl -u journal-parquet.service -o json --no-pager");
    let own: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["SYSLOG_IDENTIFIER"] == "journal-parquet")
        .collect();
    let priority_of = |start: &str| {
        own.iter()
            .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with(start)))
            .map(|e| e["PRIORITY"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(
        priority_of("reading the system and user journals").as_deref(),
        Some("5")
    );
    assert_eq!(priority_of("received SIGTERM").as_deref(), Some("5"));
    assert_eq!(
        priority_of("reloaded the configuration").as_deref(),
        Some("5")
    );
    assert_eq!(
        priority_of("stopped after committing").as_deref(),
        Some("5")
    );
    assert!(
        !own.iter()
            .any(|e| e["PRIORITY"].as_str().is_some_and(|p| p < "5")),
        "warnings or errors from the collector: {own:#?}"
    );

    // Not root, and in group systemd-journal.
    let ids = guest.ok(
        "pid=$(systemctl show -p MainPID --value journal-parquet.service); \
         awk '/^Uid:/{print $2} /^Groups:/{$1=\"\"; print}' /proc/$pid/status; \
         id -u journal-parquet; getent group systemd-journal | cut -d: -f3",
    );
    let ids: Vec<&str> = ids.lines().map(str::trim).collect();
    assert_eq!(
        ids[0], ids[2],
        "the collector runs as journal-parquet: {ids:?}"
    );
    assert_ne!(ids[0], "0");
    assert!(
        ids[1].split_whitespace().any(|g| g == ids[3]),
        "not in systemd-journal: {ids:?}"
    );

    // jp-flush wrote the catalogue under its sandbox, and an admin's `journal-parquet query`
    // finds the packaged archive without being told where it is.
    guest.ok("test -s /var/lib/journal-parquet/data/journal.duckdb");
    let counted = guest.ok(&format!(
        "journal-parquet query --format csv \
         \"SELECT count(*) AS n FROM journal WHERE message LIKE '{run_id}-%'\""
    ));
    assert_eq!(counted, format!("n\n{markers}\n"), "{counted}");
    // The README's manual flush, as root would type it without `sudo -u`, and a live query as
    // root: both become the service user, and leave nothing of root's in its state (checked
    // below).
    guest.ok(
        "systemctl stop journal-parquet.service && jp-flush --state-dir /var/lib/journal-parquet \
         --all && systemctl start journal-parquet.service",
    );
    guest.ok("journal-parquet query --live 'SELECT count(*) FROM journal'");

    // Files 0640 (metrics 0644: node_exporter reads them), directories 0750, all the service
    // user's.
    let uid: u32 = ids[2].parse().unwrap();
    for entry in walk(&guest.root().join("var/lib/journal-parquet")) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        assert_eq!(
            meta.uid(),
            uid,
            "{} is not the service user's",
            entry.display()
        );
        let allowed = if meta.is_dir() {
            mode == 0o750
        } else if meta.file_type().is_socket() {
            mode == 0o600
        } else if entry.extension().is_some_and(|e| e == "prom") {
            mode == 0o644
        } else {
            mode == 0o640
        };
        assert!(allowed, "{} has mode {mode:o}", entry.display());
    }

    // Nothing of the service user's anywhere but its state directory (the sandbox makes the rest
    // read-only; this checks that it holds).
    let outside = guest.ok(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /var/lib/journal-parquet \\) \
         -prune -o -uid $(id -u journal-parquet) -print",
    );
    assert_eq!(
        outside, "",
        "files of journal-parquet outside its state directory"
    );

    // The timer is active and its runs succeeded.
    assert_eq!(
        guest.ok("systemctl is-active jp-flush.timer").trim(),
        "active"
    );
    let flush = guest.ok("systemctl show -p Result,ExecMainStatus jp-flush.service");
    assert!(
        flush.contains("Result=success") && flush.contains("ExecMainStatus=0"),
        "{flush}"
    );
    let failed = guest.ok("systemctl list-units --failed --plain --no-legend");
    assert!(
        !failed.contains("journal-parquet") && !failed.contains("jp-flush"),
        "{failed}"
    );

    // Purge: nothing of ours left enabled or running; the archive stays.
    guest.ok("dpkg --purge journal-parquet");
    // (list-unit-files exits 1 when it lists nothing.)
    let left = guest.sh(
        "find /etc/systemd/system -name 'journal-parquet*' -o -name 'jp-flush*'; \
         systemctl list-unit-files --no-legend 'journal-parquet*' 'jp-flush*'",
    );
    assert_eq!(stdout(&left), "", "left after the purge");
    let active = stdout(&guest.sh("systemctl is-active journal-parquet.service jp-flush.timer"));
    assert_eq!(active, "inactive\ninactive\n");
    assert!(data.is_dir(), "the archive must survive a purge");
    eprintln!(
        "deb end-to-end: {:.0} s in all, markers in Parquet {:.0} s after the last was logged",
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );
}

/// Guards the packages against the distributions' rules: lintian finds no error and no warning
/// in the .deb, rpmlint none in the .rpm, but for the tags that do not apply, each named with its
/// reason in `packaging/debian/lintian.suppress` and `packaging/rpm/rpmlint.toml`.
#[test]
fn packages_pass_lintian_and_rpmlint() {
    let suppress = manifest_dir().join("packaging/debian/lintian.suppress");
    let out = run(Command::new("lintian")
        .arg("--suppress-tags-from-file")
        .arg(&suppress)
        .arg(package("deb")));
    let tags: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success() && tags.is_empty(),
        "lintian: {tags:#?}\n{}",
        stderr(&out)
    );
    let config = manifest_dir().join("packaging/rpm/rpmlint.toml");
    let out = run(Command::new("rpmlint")
        .arg("-c")
        .arg(&config)
        .arg(package("rpm")));
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains("0 errors, 0 warnings"),
        "rpmlint: {text}\n{}",
        stderr(&out)
    );
}

/// The .rpm in a booted Debian 12 that has rpm (there is no RPM distribution to be had here):
/// `rpm -i --nodeps` runs %post (user, preset, start), the collector runs and reads the journal,
/// `rpm -e` runs %preun (disable, stop).
#[test]
fn rpm_installs_starts_and_erases_in_a_real_systemd() {
    if let Some(why) = nspawn::unavailable() {
        nspawn::record_skip("rpm_installs_starts_and_erases_in_a_real_systemd", &why);
        return;
    }
    let rpm = package("rpm");
    let guest = Guest::boot(&nspawn::image("bookworm-rpm"));
    guest.put(&rpm, "/root/journal-parquet.rpm");
    // The rpm database of a Debian system is empty: --nodeps, or even /bin/sh is "missing".
    guest.ok("rpm -i --nodeps /root/journal-parquet.rpm");
    assert_enabled_and_active(&guest);
    guest.ok("logger -t jp-e2e rpm-marker");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let status = guest.ok("systemctl show -p StatusText --value journal-parquet.service");
        if !status.starts_with("0 entries read") && status.contains("entries read since start") {
            break;
        }
        assert!(Instant::now() < end, "the collector read nothing: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    guest.ok("rpm -e journal-parquet");
    let active = stdout(&guest.sh("systemctl is-active journal-parquet.service jp-flush.timer"));
    assert_eq!(active, "inactive\ninactive\n");
    assert_eq!(
        guest.ok("find /etc/systemd/system -name 'journal-parquet*' -o -name 'jp-flush*'"),
        ""
    );
}

/// The collector and its timer are enabled and running.
/// The web console in the guest: installed disabled with its token made (0640, root, group
/// journal-parquet); once `systemctl enable --now jp-web.socket`, a request through the socket
/// starts jp-web.service, which answers, exits after web_idle_exit_sec idle, and is started again
/// by the next request.
fn web_console_starts_from_its_socket_and_exits_when_idle(guest: &Guest) {
    assert_eq!(
        stdout(&guest.sh("systemctl is-enabled jp-web.socket")).trim(),
        "disabled"
    );
    assert_eq!(
        guest.ok("stat -c '%a %U %G' /etc/journal-parquet/web.token"),
        "640 root journal-parquet\n"
    );
    guest.ok("echo 'web_idle_exit_sec = 3' >> /etc/journal-parquet/config.toml");
    guest.ok("systemctl enable --now jp-web.socket");
    let t = TestDir::new();
    let script = t.path().join("ask-web.sh");
    write_file(
        &script,
        "#!/bin/bash\n\
         exec 3<>/dev/tcp/127.0.0.1/9417\n\
         printf 'GET /api/health HTTP/1.1\\r\\nHost: localhost\\r\\nAuthorization: Bearer %s\\r\\n\
         Connection: close\\r\\n\\r\\n' \"$(cat /etc/journal-parquet/web.token)\" >&3\n\
         head -1 <&3\n",
    );
    guest.put(&script, "/root/ask-web.sh");
    for round in 0..2 {
        let status = guest.ok("bash /root/ask-web.sh");
        assert!(status.contains(" 200 "), "round {round}: {status}");
        assert_eq!(guest.ok("systemctl is-active jp-web.service"), "active\n");
        let end = Instant::now() + Duration::from_secs(30);
        while stdout(&guest.sh("systemctl is-active jp-web.service")).trim() == "active" {
            assert!(
                Instant::now() < end,
                "jp-web.service did not exit when idle"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(guest.ok("systemctl is-active jp-web.socket"), "active\n");
    }
    guest.ok("systemctl disable --now jp-web.socket");
}

fn assert_enabled_and_active(guest: &Guest) {
    assert_eq!(
        guest.ok("systemctl is-enabled journal-parquet.service jp-flush.timer"),
        "enabled\nenabled\n"
    );
    assert_eq!(
        guest.ok("systemctl is-active journal-parquet.service jp-flush.timer"),
        "active\nactive\n"
    );
}
