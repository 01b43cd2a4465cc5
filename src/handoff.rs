//! How the collector and jp-flush take turns with the buffer.
//!
//! DuckDB lets one process open a file at a time, and not even read-only beside a writer. The
//! collector keeps the buffer open and listens on a unix socket, `STATE/handoff.sock`. jp-flush
//! connects and sends `release`; the collector commits what it has read (rows, position and
//! watermark), closes the file and answers `released`; jp-flush opens the file, does its work,
//! closes it and sends `done` (or simply exits). The collector reopens the file and goes on.
//!
//! Why this route and not open–append–commit–close per batch: closing a DuckDB file checkpoints
//! it (measured ≈35–40 ms per cycle, worst cases of seconds on a large file), which a collector
//! would pay every second; here the collector pays it once per flush, and jp-flush waits only for
//! one commit and one close. Measured figures are in the README ("Hand-off").
//!
//! Nothing is lost while jp-flush holds the file: the collector stops reading, and the journal
//! itself keeps the entries until it resumes. Neither side can block the other forever: a crashed
//! jp-flush closes its socket (the kernel does it), which the collector takes as `done`; a crashed
//! or absent collector leaves no listener, and jp-flush opens the file directly.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::buffer::{is_lock_conflict, Buffer};
use crate::config::Settings;

const RELEASE: &str = "release";
const RELEASED: &str = "released";
const DONE: &str = "done";

/// The buffer could not be had in time: jp-flush exits 75 (EX_TEMPFAIL) for it.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The collector's end: a listening socket polled by its main loop.
pub struct Listener {
    socket: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path`, replacing a socket left by a collector that died (the collector's lock file
    /// guarantees that no live collector owns it).
    pub fn bind(path: &Path) -> Result<Listener> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("failed to remove the old {}", path.display()))
            }
            _ => {}
        }
        let socket = UnixListener::bind(path)
            .with_context(|| format!("failed to listen on {}", path.display()))?;
        socket
            .set_nonblocking(true)
            .with_context(|| format!("failed to set up {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
        Ok(Listener {
            socket,
            path: path.to_path_buf(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Takes a pending release request, if one is waiting. A peer that connects and says
    /// something else (or nothing within a second) is dropped.
    pub fn accept(&self) -> Option<Peer> {
        let (stream, _) = self.socket.accept().ok()?;
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.pid())
            .ok();
        let mut line = String::new();
        if let Err(e) = BufReader::new(&stream).read_line(&mut line) {
            log::debug!(
                "hand-off request from PID {} not read: {e}",
                pid.unwrap_or(0)
            );
            return None;
        }
        log::debug!(
            "hand-off request {:?} from PID {}",
            line.trim(),
            pid.unwrap_or(0)
        );
        if line.trim() != RELEASE {
            log::warn!(
                "{}: ignored a request {:?} from PID {}",
                self.path.display(),
                line.trim(),
                pid.unwrap_or(0)
            );
            return None;
        }
        Some(Peer { stream, pid })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A jp-flush that asked for the buffer.
pub struct Peer {
    stream: UnixStream,
    pub pid: Option<i32>,
}

impl Peer {
    /// Tells the peer that the file is closed and theirs.
    pub fn grant(&mut self) -> Result<()> {
        self.stream
            .write_all(format!("{RELEASED}\n").as_bytes())
            .context("failed to answer jp-flush")
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// After the peer's socket polled readable: true when it said `done` or went away.
    pub fn finished(&mut self) -> bool {
        self.stream.set_nonblocking(true).ok();
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => String::from_utf8_lossy(&buf[..n]).contains(DONE),
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(_) => true,
        }
    }
}

/// jp-flush's hold on the buffer. Dropping it closes the file and hands it back.
pub struct Lease {
    buffer: Option<Buffer>,
    collector: Option<UnixStream>,
    /// How long it took to get the file.
    pub waited: Duration,
}

impl Lease {
    pub fn buffer(&mut self) -> &mut Buffer {
        self.buffer
            .as_mut()
            .expect("the lease holds the buffer until dropped")
    }

    /// Whether a running collector handed the file over (false: none was listening).
    pub fn from_collector(&self) -> bool {
        self.collector.is_some()
    }

    /// Closes the file, then tells the collector it may reopen it.
    pub fn finish(mut self) -> Result<()> {
        let closed = match self.buffer.take() {
            Some(b) => b.close(),
            None => Ok(()),
        };
        if let Some(mut s) = self.collector.take() {
            let _ = s.write_all(format!("{DONE}\n").as_bytes());
        }
        closed
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Close before the socket goes: the collector reopens as soon as it sees EOF.
        drop(self.buffer.take());
        drop(self.collector.take());
    }
}

/// Gets the buffer for jp-flush: from the running collector through the socket, or directly when
/// no collector listens. Gives up with `Unavailable` after `settings.handoff_timeout`.
pub fn acquire(settings: &Settings) -> Result<Lease> {
    let started = Instant::now();
    let deadline = started + settings.handoff_timeout;
    let socket = settings.handoff_socket();
    let path = settings.buffer_path();
    let mut pause = Duration::from_millis(5);
    let mut waiting_for = String::from("the collector did not answer");
    loop {
        if Instant::now() >= deadline {
            bail!(Unavailable(format!(
                "could not get {} within {} s: {waiting_for}",
                path.display(),
                settings.handoff_timeout.as_secs()
            )));
        }
        match UnixStream::connect(&socket) {
            Ok(mut stream) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                stream
                    .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
                    .ok();
                if stream.write_all(format!("{RELEASE}\n").as_bytes()).is_err() {
                    sleep(pause);
                    continue;
                }
                let mut answer = String::new();
                match BufReader::new(&stream).read_line(&mut answer) {
                    Ok(_) if answer.trim() == RELEASED => {
                        log::debug!(
                            "the collector released {} after {:.1} ms",
                            path.display(),
                            started.elapsed().as_secs_f64() * 1e3
                        );
                        let buffer = Buffer::open_waiting(&path, settings, deadline)
                            .map_err(|e| unavailable_if_locked(e, &path))?;
                        return Ok(Lease {
                            buffer: Some(buffer),
                            collector: Some(stream),
                            waited: started.elapsed(),
                        });
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue; // the deadline check above reports it
                    }
                    // EOF: the collector died or stopped mid-request; try again.
                    _ => sleep(pause),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                // No collector listens: open the file directly, waiting while someone holds it
                // (a collector starting up, another flush).
                match Buffer::open(&path, settings) {
                    Ok(buffer) => {
                        log::debug!(
                            "no collector listens on {}: opened the buffer directly",
                            socket.display()
                        );
                        return Ok(Lease {
                            buffer: Some(buffer),
                            collector: None,
                            waited: started.elapsed(),
                        });
                    }
                    Err(e) if is_lock_conflict(&e) => {
                        waiting_for = format!("{e:#}");
                        sleep(pause);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to connect to {}", socket.display()))
            }
        }
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn unavailable_if_locked(err: anyhow::Error, path: &Path) -> anyhow::Error {
    if is_lock_conflict(&err) {
        Unavailable(format!(
            "{} is still held by another process: {err:#}",
            path.display()
        ))
        .into()
    } else {
        err
    }
}
