//! Fault points: the crash-window tests make a program die, or fail, at one exact step.
//!
//! `JP_FAULT=NAME` kills the process with SIGKILL (as `kill -9` would) when it reaches the
//! point NAME; `JP_FAULT=NAME:error` makes that point return an injected I/O error instead;
//! `NAME@N` acts at the N-th time the point is reached (the first by default).
//! Unset (always, outside the tests), a point costs one comparison. A point is placed between
//! two steps whose order the exactly-once guarantee depends on; the tests name each one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable the tests set.
pub const ENV: &str = "JP_FAULT";

/// What `JP_FAULT` asks for.
struct Wanted {
    point: String,
    /// Fails (true) or dies (false).
    fails: bool,
    /// At the N-th time the point is reached.
    at: u64,
    reached: AtomicU64,
}

fn wanted() -> Option<&'static Wanted> {
    static WANTED: OnceLock<Option<Wanted>> = OnceLock::new();
    WANTED
        .get_or_init(|| {
            let value = std::env::var(ENV).ok().filter(|v| !v.is_empty())?;
            let (value, fails) = match value.strip_suffix(":error") {
                Some(v) => (v.to_owned(), true),
                None => (value, false),
            };
            let (point, at) = match value.split_once('@') {
                Some((p, n)) => (p.to_owned(), n.parse().unwrap_or(1)),
                None => (value, 1),
            };
            Some(Wanted {
                point,
                fails,
                at,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// The fault point `name`: dies or fails there when `JP_FAULT` names it.
pub fn point(name: &str) -> std::io::Result<()> {
    match wanted() {
        Some(w) if w.point == name && w.reached.fetch_add(1, Ordering::SeqCst) + 1 == w.at => {
            if w.fails {
                return Err(std::io::Error::other(format!(
                    "injected failure at the fault point {name} ({ENV})"
                )));
            }
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught or blocked: never reached.
            std::process::abort()
        }
        _ => Ok(()),
    }
}
