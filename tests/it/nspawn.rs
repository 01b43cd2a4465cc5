//! A real systemd for the package tests: a cached Debian 12 rootfs (`tests/e2e/build-rootfs.sh`,
//! made by `scripts/setup.sh --for-tests`) booted with `systemd-nspawn --boot` on a private tmpfs
//! and driven from here with `nsenter`. Works where this machine's PID 1 is not systemd.
//!
//! Each guest gets its own name, cgroup, network namespace (loopback only) and journal; dropping
//! it powers the guest off and removes everything it made: the cgroups, the tmpfs, nspawn's
//! propagation directory. When a test fails, the guest's console and journal are kept under
//! `$CARGO_TARGET_DIR/e2e-failures/NAME/`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the rootfs tarballs are cached (`JP_E2E_CACHE` overrides; scripts/env.sh sets it).
pub fn image(name: &str) -> PathBuf {
    let dir = std::env::var_os("JP_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/journal-parquet/e2e")
        });
    dir.join(format!("{name}.tar.zst"))
}

/// The target directory the test binaries were built in (packages are built next to them).
pub fn target_dir() -> PathBuf {
    Path::new(crate::harness::COLLECTOR)
        .ancestors()
        .nth(2)
        .expect("binary under TARGET/release")
        .to_path_buf()
}

/// Why this machine cannot boot a guest, if it cannot; tests then record a skip and return.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("systemd-nspawn needs root".into());
    }
    for tool in ["systemd-nspawn", "nsenter", "systemd-id128"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (scripts/setup.sh --for-tests installs it)"
            ));
        }
    }
    if cgroup_roots().is_empty() {
        return Some("no writable cgroup hierarchy under /sys/fs/cgroup".into());
    }
    None
}

/// Records that `test` was skipped and why, where scripts/test.sh prints it after the run (a
/// skipped test must not look like a passed one), and on stderr.
pub fn record_skip(test: &str, why: &str) {
    use std::io::Write;
    eprintln!("SKIPPED {test}: {why}");
    let path = target_dir().join("skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{test}: {why}");
    }
}

/// The cgroup hierarchies a guest needs a directory of its own in: the unified one on a pure
/// cgroup2 host; the named systemd one and the unified one on a hybrid host.
fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

pub struct Guest {
    pub name: String,
    work: PathBuf,
    mounted: bool,
    nspawn: Option<Child>,
    leader: i32,
    cgroups: Vec<PathBuf>,
}

impl Guest {
    /// Restores `image` on a fresh tmpfs and boots it; returns once systemd reports the system
    /// running (or degraded).
    pub fn boot(image: &Path) -> Guest {
        assert!(
            image.exists(),
            "{} is missing: scripts/setup.sh --for-tests builds it (tests/e2e/build-rootfs.sh)",
            image.display()
        );
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // The machine name is also the guest's host name and the hostname of its entries.
        let name = format!(
            "jp-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let work = PathBuf::from("/var/tmp").join(&name);
        std::fs::create_dir_all(&work).unwrap();
        let mut guest = Guest {
            name: name.clone(),
            work: work.clone(),
            mounted: false,
            nspawn: None,
            leader: 0,
            cgroups: Vec::new(),
        };
        // A tmpfs: restoring and removing a rootfs on a disk mounted with `discard` takes seconds.
        guest.mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3g,mode=0755", "jp-e2e"])
            .arg(&work)
            .status()
            .is_ok_and(|s| s.success());
        let root = guest.root();
        std::fs::create_dir_all(&root).unwrap();
        crate::harness::run_ok(
            Command::new("tar")
                .args([
                    "--numeric-owner",
                    "--xattrs",
                    "--acls",
                    "-I",
                    "zstd",
                    "-x",
                    "-f",
                ])
                .arg(image)
                .arg("-C")
                .arg(&root),
        );
        let id = crate::harness::run_ok(Command::new("systemd-id128").arg("new")).stdout;
        std::fs::write(root.join("etc/machine-id"), id).unwrap();
        std::fs::write(root.join("etc/hostname"), format!("{name}\n")).unwrap();

        for cg in cgroup_roots() {
            let dir = cg.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            guest.cgroups.push(dir);
        }
        // nspawn joins the guest's cgroups before it execs (with --keep-unit it makes its
        // payload/ and supervisor/ below its own cgroup: without one of its own, two guests would
        // share them). --register=no and --keep-unit: no machined and no systemd on the host.
        let console = File::create(work.join("console.log")).unwrap();
        let script = r#"for d in "$@"; do echo $$ > "$d/cgroup.procs"; done
exec systemd-nspawn -q -D "$JP_ROOT" -M "$JP_NAME" --boot --register=no --keep-unit \
  --private-network --link-journal=no --console=read-only"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&guest.cgroups)
            .env("JP_ROOT", &root)
            .env("JP_NAME", &name)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("start systemd-nspawn");
        let nspid = child.id();
        guest.nspawn = Some(child);

        // The guest's PID 1 is nspawn's child.
        let end = Instant::now() + Duration::from_secs(60);
        while guest.leader == 0 {
            assert!(
                Instant::now() < end,
                "the guest did not start: {}",
                guest.console()
            );
            let children = std::fs::read_to_string(format!("/proc/{nspid}/task/{nspid}/children"))
                .unwrap_or_default();
            for pid in children.split_whitespace() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    guest.leader = pid.parse().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            // Fails until the guest's systemd has its private socket; then waits for the boot.
            let out = guest.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < end,
                "the guest did not finish booting ({state}): {}",
                guest.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        guest
    }

    /// The guest's `/`, seen from here.
    pub fn root(&self) -> PathBuf {
        self.work.join("root")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.work.join("console.log")).unwrap_or_default()
    }

    /// Runs `script` with sh in the guest, in all its namespaces, with a clean environment.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .args([
                "LANG=C.UTF-8",
                "TERM=dumb",
                "SYSTEMD_PAGER=",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// `sh`, asserting success; returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in guest {}: `{script}` failed with {}\nstdout: {}\nstderr: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies a file from here into the guest at `dest` (an absolute path in the guest).
    pub fn put(&self, file: &Path, dest: &str) {
        std::fs::copy(file, self.root().join(dest.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("failed to copy {} into the guest: {e}", file.display()));
    }

    /// Keeps the console and the guest's journal for a failed test.
    fn keep_evidence(&self) {
        let dir = target_dir().join("e2e-failures").join(&self.name);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let _ = std::fs::copy(self.work.join("console.log"), dir.join("console.log"));
        if let Ok(out) = Command::new("journalctl")
            .arg("-D")
            .arg(self.root().join("var/log/journal"))
            .args(["--no-pager", "-o", "short-precise"])
            .output()
        {
            let _ = std::fs::write(dir.join("guest.journal"), out.stdout);
        }
        eprintln!(
            "guest {}: console and journal kept in {}",
            self.name,
            dir.display()
        );
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_evidence();
        }
        if let Some(mut child) = self.nspawn.take() {
            // SIGTERM to nspawn halts the guest cleanly (SIGRTMIN+3 to its systemd).
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for cg in self.cgroups.iter().rev() {
            // Depth first: the guest's own sub-cgroups go before ours.
            let _ = Command::new("find")
                .arg(cg)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .stderr(Stdio::null())
                .status();
        }
        // nspawn cannot remove this itself where /run is not a tmpfs.
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.work).status();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
