//! Running as the owner of the state, never as root beside it.
//!
//! An operator types `sudo jp-flush …` or `sudo journal-parquet query --live …` by habit. Run
//! as root, the program would create segments, `.start` files, locks and metrics owned by root
//! in a directory the service user owns; the service could then no longer open them, and would
//! fail, restart and fail until someone noticed, while journald vacuums what was never archived.
//! So a program started as root on a state (or data) directory owned by another user becomes that
//! user, with its groups, before it touches anything; where it cannot, it refuses (exit 77).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use nix::unistd::{Gid, Uid, User};

super::message_error! {
    /// A program that must not run as the user it was started as: exit 77 (EX_NOPERM).
    WrongUser
}

/// The owner of `dir`, when it exists and is not root's.
fn owner(dir: &Path) -> Option<(Uid, Gid)> {
    let meta = std::fs::metadata(dir).ok()?;
    (meta.uid() != 0).then(|| (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid())))
}

/// Started as root: becomes the user who owns `dirs` (the state directory, the data directory:
/// those the program will write or read), with that user's groups, before anything under them
/// is touched. Does nothing when not root, or when root owns them all (or none exists yet).
/// `command` names the program in the message of a refusal.
pub fn become_owner(dirs: &[&Path], command: &str) -> Result<()> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let owned: Vec<(&Path, (Uid, Gid))> = dirs
        .iter()
        .filter_map(|d| owner(d).map(|o| (*d, o)))
        .collect();
    let Some(&(dir, (uid, dir_gid))) = owned.first() else {
        return Ok(());
    };
    if let Some((other, (other_uid, _))) = owned.iter().find(|(_, (u, _))| *u != uid) {
        return Err(WrongUser(format!(
            "{} and {} belong to two different users (uid {uid} and {other_uid}): run {command} \
             as the one the service runs as, e.g. `sudo -u journal-parquet {command} …`",
            dir.display(),
            other.display(),
        ))
        .into());
    }
    let user = User::from_uid(uid).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| uid.to_string(), |u| u.name.clone());
    let refuse = |why: String| {
        WrongUser(format!(
            "{} belongs to {name}, and running as root would leave files there that {name} \
             cannot open; switching to {name} failed ({why}): run `sudo -u {name} {command} …`",
            dir.display()
        ))
    };
    // Groups first, while still root: the service user's own (systemd-journal, to read the
    // journal), else the directory's group alone.
    let gid = user.as_ref().map_or(dir_gid, |u| u.gid);
    let groups = match &user {
        Some(u) => CString::new(u.name.clone())
            .map_err(|e| e.to_string())
            .and_then(|c| nix::unistd::initgroups(&c, gid).map_err(|e| e.to_string())),
        None => nix::unistd::setgroups(&[gid]).map_err(|e| e.to_string()),
    };
    groups.map_err(&refuse)?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| refuse(e.to_string()))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| refuse(e.to_string()))?;
    log::debug!(
        "started as root: running as {name} (uid {uid}, gid {gid}), the owner of {}",
        dir.display()
    );
    Ok(())
}
