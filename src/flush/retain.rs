//! Retention after a flush, waiting for the upload where it is configured.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::archive::layout::MINUTE_USEC;
use crate::config::Settings;

/// Applies `retention` after a flush. Files of minutes from `keep_from` on (and of the current
/// minute and later, whose rows may still be in the collector's open segment) are kept. Logged
/// once, at notice, when it deleted something.
pub(super) fn apply_retention(
    settings: &Settings,
    keep_from: Option<i64>,
) -> Result<crate::archive::retention::Deleted> {
    let r = &settings.retention;
    if r.is_off() {
        return Ok(Default::default());
    }
    let now = chrono::Utc::now().timestamp_micros();
    let this_minute = now - now.rem_euclid(MINUTE_USEC);
    let keep_from = keep_from.map_or(this_minute, |k| k.min(this_minute));
    let warned = settings.state_dir.join("retention-foreign");
    let upload = upload_state(&settings.state_dir)?;
    let d =
        crate::archive::retention::apply(&settings.data_dir, r, keep_from, now, &warned, upload)?;
    crate::archive::summary::forget(&settings.state_dir, &d.spans);
    if d.waiting_for_upload > 0 {
        log::warn!(
            "retention keeps {} minute files it would delete, because jp-upload has not copied \
             them yet (see `systemctl status jp-upload.service`)",
            d.waiting_for_upload
        );
    }
    if d.files > 0 {
        log::info!(
            "retention deleted {} minute files, {} bytes, from {} ({} older than max_age, {} over \
             max_use, {} to keep keep_free)",
            d.files,
            d.bytes,
            settings.data_dir.display(),
            d.by_age,
            d.by_use,
            d.by_free
        );
    }
    Ok(d)
}

/// What `jp-upload` left in the state directory: `upload.enabled` once it has run (the upload is
/// configured), and `upload.last-success`, the Unix time at which its last complete copy
/// started. That copy took every minute file then in the tree; the hour of margin covers a file
/// written before the copy started but renamed into place after the copy listed its directory
/// (the same margin as the script's own `--max-age`).
fn upload_state(state_dir: &Path) -> Result<crate::archive::retention::Upload> {
    use crate::archive::retention::Upload;
    if !state_dir.join(UPLOAD_ENABLED).exists() {
        return Ok(Upload::Off);
    }
    let stamp = state_dir.join(UPLOAD_LAST_SUCCESS);
    let started = match fs::read_to_string(&stamp) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", stamp.display())),
    };
    Ok(Upload::CopiedBefore(started.and_then(|secs| {
        std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs.checked_sub(3600)?))
    })))
}

/// Written by `packaging/jp-upload` in the state directory (see `upload_state`).
pub const UPLOAD_ENABLED: &str = "upload.enabled";

pub const UPLOAD_LAST_SUCCESS: &str = "upload.last-success";
