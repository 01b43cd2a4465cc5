//! Living as a systemd service: logging to journald, termination signals, and `sd_notify`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sd_notify::NotifyState;

/// Sends log records to journald when stderr is connected to it (`$JOURNAL_STREAM`), with their
/// priority as a field; to stderr otherwise. No timestamps: journald adds them.
pub fn init_logging(level: LevelFilter, identifier: &str) {
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten();
    let installed = match journal {
        Some(j) => j.with_syslog_identifier(identifier.to_owned()).install(),
        None => log::set_boxed_logger(Box::new(StderrLog {
            identifier: identifier.to_owned(),
        })),
    };
    // A second call (tests calling `run` twice in one process) keeps the first logger.
    let _ = installed;
    log::set_max_level(level);
}

struct StderrLog {
    identifier: String,
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {level}: {}",
            self.identifier,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// SIGTERM, SIGINT and SIGHUP, blocked and read from a signalfd so the main loop can poll for
/// them: it finishes the batch in hand before stopping, and reloads between batches. Call before
/// any thread starts (DuckDB's threads inherit the mask).
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    pub fn block() -> Result<Signals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.add(Signal::SIGHUP);
        set.thread_block()
            .context("failed to block SIGTERM, SIGINT and SIGHUP")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("failed to create a signalfd")?;
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The signal received, if any.
    pub fn pending(&mut self) -> Option<Signal> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }
}

/// Sends `states` to `$NOTIFY_SOCKET`, never blocking: a service manager (or a test) that does
/// not drain its socket must not freeze the collector. (sd-notify's `notify` blocks when the
/// receiver's queue is full; the message format is its `Display`.)
fn notify(states: &[NotifyState]) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    let bytes = path.as_encoded_bytes();
    let sent = (|| -> std::io::Result<()> {
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&path))?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        socket.send_to_addr(message.as_bytes(), &addr).map(drop)
    })();
    if let Err(e) = sent {
        log::debug!("sd_notify failed: {e}");
    }
}

pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_reloading() {
    notify(&[NotifyState::Reloading]);
}

pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn notify_stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

pub fn notify_watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WatchdogSec=`, or never without it.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}
