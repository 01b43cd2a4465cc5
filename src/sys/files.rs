//! The file system, done so that a crash or another user cannot hurt the archive.
//!
//! - A file is replaced by writing a new one under a random temporary name, created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` relative to its directory, then renamed over the old one: a
//!   symlink another user planted in a directory they can write (node_exporter's textfile
//!   directory is writable by `prometheus`) is never followed, and the final rename replaces a
//!   planted link itself, not what it points to.
//! - A new directory, a rename and a new file are made durable by an fsync of the directory that
//!   holds them, before anything that depends on them (the rows of a published minute are
//!   deleted only after that).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// How many random names are tried before giving up: each one taken means someone planted a
/// file under a name we could not have told them.
const TRIES: usize = 16;

/// 16 random hex digits.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Not random, still unique in this process: O_EXCL refuses a name already taken.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `dir` to create files in it (the directory itself may be a link an admin configured).
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new file in `dir` under `.NAME.RANDOM.tmp` (never a name that ends like a file readers
/// look for), created exclusively and never through a link; returns it and its name.
fn create_temp(dir: &OwnedFd, name: &OsStr, mode: u32) -> std::io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..TRIES {
        let tmp = PathBuf::from(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            random_suffix()
        ));
        match openat(
            Some(dir.as_raw_fd()),
            &tmp,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => {
                // SAFETY: `openat` returned a new descriptor that nothing else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                // The umask (0027) would take away what `mode` gives others (0644 metrics).
                fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))?;
                return Ok((file, tmp));
            }
            Err(e) => last = Some(std::io::Error::from(e)),
        }
    }
    Err(last.unwrap_or_else(|| ErrorKind::AlreadyExists.into()))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content, with
/// `mode`, and never writes through a link planted in its directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path.file_name().context("a file name is needed")?;
    let context = || format!("failed to write {}", path.display());
    let dirfd = open_dir(dir).with_context(context)?;
    let (mut file, tmp) = create_temp(&dirfd, name, mode).with_context(context)?;
    let written = (|| -> std::io::Result<()> {
        file.write_all(bytes)?;
        file.sync_all()?;
        renameat(Some(dirfd.as_raw_fd()), &tmp, Some(dirfd.as_raw_fd()), name)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = unlinkat(Some(dirfd.as_raw_fd()), &tmp, UnlinkatFlags::NoRemoveDir);
        return Err(e).with_context(context);
    }
    File::from(dirfd)
        .sync_all()
        .with_context(|| format!("failed to fsync the directory {}", dir.display()))
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to fsync the directory {}", dir.display()))
}

/// Creates `dir` and its missing parents with mode 0750 (the journal can hold secrets), and
/// makes each new one durable in its parent: a minute published into a new day directory must
/// survive a power loss before its rows leave the buffer.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    let context = || format!("failed to create {}", dir.display());
    let not_a_dir = || Err(std::io::Error::from(ErrorKind::NotADirectory)).with_context(context);
    // The directories missing, up to the first that exists: none on every minute written but the
    // first of a day, which then costs one stat.
    let mut missing = Vec::new();
    let mut d = dir;
    loop {
        match std::fs::metadata(d) {
            Ok(m) if missing.is_empty() => return if m.is_dir() { Ok(()) } else { not_a_dir() },
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(d),
            Err(e) => return Err(e).with_context(context),
        }
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o750).create(d) {
            Ok(()) => {}
            // Made meanwhile by another run: still synced below, which is harmless.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(context),
        }
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
    }
    // Made meanwhile as something else than a directory.
    if !dir.is_dir() {
        return not_a_dir();
    }
    Ok(())
}

/// Swaps the directory entries `a` and `b` in one atomic step (`renameat2(RENAME_EXCHANGE)`, on
/// one file system): a reader resolving either path sees the old or the new entry, never
/// neither. Not durable by itself: fsync both parents after.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE)
        .map_err(std::io::Error::from)
        .with_context(|| format!("failed to swap {} with {}", a.display(), b.display()))
}

/// Renames `from` to `to` in the same directory and makes the rename durable.
pub fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("failed to rename {} to {}", from.display(), to.display()))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Reads every byte of `path` (and throws them away): an error of the disk or the file system
/// (EIO, ESTALE, EACCES, EISDIR, EMFILE) shows here as what it is, before DuckDB reads the
/// same bytes and reports it in words.
pub fn read_through(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    std::io::copy(&mut file, &mut std::io::sink())
}

/// The name a file gets when it is set aside: `NAME.damaged-UNIXTIME` beside it.
pub fn aside_name(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(format!(".damaged-{stamp}").as_bytes());
    PathBuf::from(OsStr::from_bytes(&name))
}

/// Renames a damaged file to `NAME.damaged-UNIXTIME` beside it, durably: kept for inspection,
/// out of the way of a new file of the same name. Returns the new name.
pub fn set_aside(path: &Path) -> Result<PathBuf> {
    let aside = aside_name(path);
    rename_durably(path, &aside)
        .with_context(|| format!("failed to set the damaged {} aside", path.display()))?;
    Ok(aside)
}

/// Takes the exclusive lock on `path` (created if missing) without waiting: None while another
/// process holds it. The lock goes with the returned file.
pub fn try_lock(path: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .or_else(|e| match e.kind() {
            // A lock needs no write: the web console reads a read-only state directory, and
            // takes the flush lease of `--live` on the lock file jp-flush made.
            ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
            }
            _ => Err(e),
        })
        .with_context(|| format!("failed to open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("failed to lock {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // Links under the final name and under the temporary name an older version used.
        std::os::unix::fs::symlink(&victim, dir.path().join("m.prom")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".m.prom.tmp")).unwrap();
        write_atomically(&dir.path().join("m.prom"), b"metrics", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(dir.path().join("m.prom")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::read(dir.path().join("m.prom")).unwrap(),
            b"metrics"
        );
    }

    #[test]
    fn new_directories_are_made_with_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        make_private_dir(&deep).unwrap();
        make_private_dir(&deep).unwrap();
        let mode = std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{mode:o}");
    }
}
