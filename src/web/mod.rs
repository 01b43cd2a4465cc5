//! `journal-parquet web`: the web console, read-only. Health (the metrics files, the archive, the
//! retention limits, the upload), activity (the summary jp-flush keeps), search and SQL (the
//! archive's views, as `journal-parquet query` has them).
//!
//! systemd listens (jp-web.socket, 127.0.0.1:9417) and starts the service at the first
//! connection, passing the socket (`LISTEN_FDS`); the service exits after `web_idle_exit_sec`
//! without a request, and systemd starts it again at the next. `--listen ADDR` serves outside
//! systemd (development, tests) and never exits for being idle.
//!
//! Every request needs the token (`auth`): the journal holds secrets and a loopback port is open
//! to every local user. Nothing here writes: not the archive, not the state directory.
//!
//! One stage a file: `auth` (the token, the cookie, the login page), `api` (the JSON endpoints),
//! `health`, `search` (search, one entry, downloads, SQL), `page` (the HTML, CSS and JS embedded
//! in the binary, and the vendored uPlot).

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{Settings, Usage, WebArgs};

mod api;
mod auth;
mod health;
mod page;
mod search;

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) token: auth::Token,
    /// Seconds since `started` of the last request, for the idle exit.
    last_request: AtomicU64,
    started: Instant,
    /// The archive's size and extent, walked at most once a minute (`health`).
    pub(crate) archive: health::ArchiveCache,
    /// Requests that open a DuckDB, at most `SESSIONS_AT_ONCE` at a time.
    pub(crate) sessions: tokio::sync::Semaphore,
}

/// Each request that reads the archive holds a DuckDB of up to `query_memory_limit`: two at once
/// bound the console's memory (and there are two cores).
const SESSIONS_AT_ONCE: usize = 2;

impl Shared {
    fn touch(&self) {
        self.last_request
            .store(self.started.elapsed().as_secs(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_request.load(Ordering::Relaxed);
        Duration::from_secs(self.started.elapsed().as_secs().saturating_sub(last))
    }
}

/// The default address, in the docs and in jp-web.socket.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9417";

pub fn run(args: &WebArgs) -> Result<()> {
    let settings = Settings::resolve(&args.common)?;
    if crate::config::check_only(&args.common, &settings) {
        return Ok(());
    }
    crate::sys::service::init_logging(settings.log_level, "journal-parquet-web");
    // The token first: as root (an admin trying it), the file is root's.
    let token = auth::Token::read(&settings.web_token_file)?;
    crate::sys::user::become_owner(
        &[&settings.data_dir, &settings.state_dir],
        "journal-parquet web",
    )?;
    let (listener, activated) = listener(args.listen)?;
    let idle_exit = match activated {
        true => settings.web_idle_exit,
        false => None,
    };
    let shared = Arc::new(Shared {
        archive: health::ArchiveCache::default(),
        settings,
        token,
        last_request: AtomicU64::new(0),
        started: Instant::now(),
        sessions: tokio::sync::Semaphore::new(SESSIONS_AT_ONCE),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the web console's runtime")?;
    runtime.block_on(serve(listener, shared, idle_exit))
}

/// The socket systemd passed (socket activation), or one bound to `--listen`.
fn listener(listen: Option<SocketAddr>) -> Result<(std::net::TcpListener, bool)> {
    if let Some(addr) = listen {
        let l = std::net::TcpListener::bind(addr)
            .with_context(|| format!("failed to listen on {addr}"))?;
        return Ok((l, false));
    }
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    let fds: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ours || fds == 0 {
        return Err(Usage(format!(
            "no socket from systemd (LISTEN_FDS): start jp-web.socket, or give --listen ADDR \
             (e.g. --listen {DEFAULT_LISTEN})"
        ))
        .into());
    }
    // sd_listen_fds(3): the first passed descriptor is 3. Not for the children we never start.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    // SAFETY: systemd passed descriptor 3 to this process (LISTEN_PID is ours), a listening
    // stream socket (jp-web.socket), and nothing else owns it.
    let l = unsafe { std::net::TcpListener::from_raw_fd(3) };
    Ok((l, true))
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    idle_exit: Option<Duration>,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .context("failed to use the listening socket")?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("failed to use the listening socket")?;
    let addr = listener.local_addr().ok();
    let app = api::router(shared.clone());
    crate::sys::service::notify_ready(&format!(
        "serving the web console on {}",
        addr.map_or("the socket systemd passed".into(), |a| a.to_string())
    ));
    log::info!(
        "serving the web console on {}",
        addr.map_or("the socket systemd passed".into(), |a| a.to_string())
    );
    let idle = async move {
        match idle_exit {
            None => std::future::pending::<()>().await,
            Some(limit) => loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if shared.idle_for() >= limit {
                    log::info!(
                        "no request for {} s: exiting (systemd starts it again at the next)",
                        limit.as_secs()
                    );
                    break;
                }
            },
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(idle)
        .await
        .context("the web console failed")
}
