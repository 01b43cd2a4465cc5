//! How jp-flush gets sealed segments without stopping the collector.
//!
//! The collector listens on a unix socket, `STATE/handoff.sock`. jp-flush connects and sends
//! `seal`; the collector commits what it has read, closes its segment (no checkpoint: instant),
//! makes the next one and answers `sealed N`, N being its new segment: every segment below N is
//! jp-flush's from then on (see `buffer`). The collector goes on reading at once; measured
//! figures are in docs/design.md ("Hand-off").
//!
//! Neither side can block the other: a crashed jp-flush only closes its socket; a crashed or
//! absent collector leaves no listener, and jp-flush seals the last segment itself, under the
//! collector's lock so that no collector starts meanwhile. One jp-flush at a time
//! (`STATE/flush.lock`): two would attach the same segments.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;

use crate::buffer::Buffer;
use crate::sys::files::try_lock;

const SEAL: &str = "seal";
const SEALED: &str = "sealed";

crate::sys::message_error! {
    /// The sealed segments could not be had in time: jp-flush exits 75 (EX_TEMPFAIL) for it.
    Unavailable
}

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

    /// Takes a pending seal request, if one is waiting. A peer that connects and says something
    /// else (or nothing within a second) is dropped.
    pub fn accept(&self) -> Option<Peer> {
        let (stream, _) = self.socket.accept().ok()?;
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.pid())
            .unwrap_or(0);
        let mut line = String::new();
        if let Err(e) = BufReader::new(&stream).read_line(&mut line) {
            log::debug!("seal request from PID {pid} not read: {e}");
            return None;
        }
        if line.trim() != SEAL {
            log::warn!(
                "{}: ignored a request {:?} from PID {pid}",
                self.path.display(),
                line.trim()
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

/// A jp-flush that asked for a seal.
pub struct Peer {
    stream: UnixStream,
    pub pid: i32,
}

impl Peer {
    /// Tells the peer that every segment below `open` is sealed.
    pub fn answer(mut self, open: u64) {
        if let Err(e) = self
            .stream
            .write_all(format!("{SEALED} {open}\n").as_bytes())
        {
            log::debug!(
                "jp-flush (PID {}) went away before the answer: {e}",
                self.pid
            );
        }
    }
}

/// jp-flush's hold on the sealed segments: every segment below `open`. Dropping it lets the next
/// jp-flush run.
pub struct Lease {
    _flush_lock: Flock<File>,
    /// The first segment not sealed (the collector's); None when the buffer has no segment.
    pub open: Option<u64>,
    /// How long it took to get them.
    pub waited: Duration,
}

impl Lease {
    /// The collector's own lease, for `--flush-every`: every segment below `open`, which it has
    /// just sealed. None while a jp-flush runs (that one flushes them).
    pub fn below(state_dir: &Path, open: u64) -> Result<Option<Lease>> {
        let started = Instant::now();
        Ok(try_lock(&state_dir.join("flush.lock"))?.map(|lock| Lease {
            _flush_lock: lock,
            open: Some(open),
            waited: started.elapsed(),
        }))
    }

    /// The sealed segments, oldest first.
    pub fn sealed(&self, buffer: &Buffer) -> Result<Vec<u64>> {
        let open = self.open.unwrap_or(0);
        Ok(buffer
            .segments()?
            .into_iter()
            .filter(|&n| n < open)
            .collect())
    }
}

/// Waits for a lock until `deadline`; `Unavailable` (naming `what`) after it.
fn lock_until(path: &Path, deadline: Instant, what: &str) -> Result<Flock<File>> {
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(lock) = try_lock(path)? {
            return Ok(lock);
        }
        if Instant::now() + pause >= deadline {
            bail!(Unavailable(format!(
                "{what} ({} stays locked)",
                path.display()
            )));
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Gets the sealed segments for jp-flush: sealed by the running collector through the socket, or
/// by jp-flush itself when no collector listens. Gives up with `Unavailable` after
/// `handoff_timeout`.
pub fn acquire(state_dir: &Path, buffer: &Buffer, handoff_timeout: Duration) -> Result<Lease> {
    let started = Instant::now();
    let deadline = started + handoff_timeout;
    let too_late = |why: &str| {
        Unavailable(format!(
            "could not get the sealed segments of {} within {} s: {why}",
            buffer.dir().display(),
            handoff_timeout.as_secs()
        ))
    };
    let flush_lock = lock_until(
        &state_dir.join("flush.lock"),
        deadline,
        &too_late("another jp-flush is running").to_string(),
    )?;
    let socket = state_dir.join("handoff.sock");
    let mut pause = Duration::from_millis(5);
    loop {
        if Instant::now() >= deadline {
            bail!(too_late("the collector did not answer"));
        }
        let attempt = match UnixStream::connect(&socket) {
            Ok(stream) => ask_to_seal(stream, deadline),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                seal_here(state_dir, buffer)?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to connect to {}", socket.display()))
            }
        };
        match attempt {
            Attempt::Sealed { open, by } => {
                log::debug!(
                    "{by} sealed the segments below {open:?} in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1e3,
                );
                return Ok(Lease {
                    _flush_lock: flush_lock,
                    open,
                    waited: started.elapsed(),
                });
            }
            Attempt::TimedOut => continue, // the deadline check above reports it
            Attempt::Again => {}
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// What one attempt to have the segments sealed gave.
enum Attempt {
    /// Sealed below segment `open` (None: the buffer has none), by whom.
    Sealed { open: Option<u64>, by: &'static str },
    /// The collector did not answer before the deadline.
    TimedOut,
    /// Nothing yet (the collector stopped mid-request, or is starting up): try again.
    Again,
}

/// Asks the collector listening on `stream` to seal its open segment.
fn ask_to_seal(mut stream: UnixStream, deadline: Instant) -> Attempt {
    let remaining = deadline.saturating_duration_since(Instant::now());
    stream
        .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
        .ok();
    if stream.write_all(format!("{SEAL}\n").as_bytes()).is_err() {
        return Attempt::Again;
    }
    let mut answer = String::new();
    match BufReader::new(&stream).read_line(&mut answer) {
        Ok(_) => {
            let open = answer
                .trim()
                .strip_prefix(SEALED)
                .and_then(|n| n.trim().parse::<u64>().ok());
            match open {
                Some(open) => Attempt::Sealed {
                    open: Some(open),
                    by: "the collector",
                },
                // EOF: the collector died or stopped mid-request.
                None => Attempt::Again,
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Attempt::TimedOut
        }
        Err(_) => Attempt::Again,
    }
}

/// No collector listens: seals the last segment here, holding the collector's lock so that
/// none starts meanwhile. A collector that holds it is starting up: its socket comes next.
fn seal_here(state_dir: &Path, buffer: &Buffer) -> Result<Attempt> {
    let Some(_collector_lock) = try_lock(&state_dir.join("collector.lock"))? else {
        return Ok(Attempt::Again);
    };
    buffer.clean_leftovers()?;
    let open = match buffer.seal_without_collector() {
        // The collector sets a damaged last segment aside when it starts; the sealed ones below
        // it can be flushed meanwhile.
        Err(e) if crate::sys::duckdb::says_database_damaged(&e) => {
            log::warn!(
                "{}: left for the collector to replace",
                crate::sys::duckdb::chain_text(&e)
            );
            buffer.segments()?.last().copied()
        }
        other => other?,
    };
    Ok(Attempt::Sealed {
        open,
        by: "jp-flush (no collector listened)",
    })
}
