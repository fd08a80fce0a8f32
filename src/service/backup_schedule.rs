//! Scheduled backups: every `serve` of a site wakes now and then; the one that takes the site's
//! backup lock (a `flock` beside a SQLite file, an advisory lock on PostgreSQL) and finds the
//! last attempt older than `backup_interval_hours` writes a backup into `backup_dir`, keeps the
//! newest `backup_keep`, and records how it went in the site's database, where the dashboard
//! and `/metrics` read it: a failed backup is never only a log line.

use super::backup::backup_from;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `__settings` key of the schedule's record.
const STATUS_SETTING: &str = "backup_schedule";
/// How scheduled backup files end (what pruning may remove).
const SUFFIX: &str = ".docstream-backup";

/// How the scheduled backups went, kept in the site's database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupStatus {
    /// When the last attempt started (Unix milliseconds), whatever came of it.
    pub last_attempt_ms: i64,
    /// The last backup written: when (Unix seconds), its file and size.
    pub last_ok: i64,
    pub last_file: String,
    pub last_bytes: u64,
    /// The last failure (Unix seconds) and why; failures since the last success.
    pub last_error_at: i64,
    pub last_error: String,
    pub failures_in_a_row: u32,
}

/// The interval, None when scheduled backups are off.
fn interval(site: &Site) -> Option<Duration> {
    let hours = site.config.backup_interval_hours;
    (hours > 0.0 && hours.is_finite()).then(|| Duration::from_secs_f64((hours * 3600.0).max(1.0)))
}

/// The folder scheduled backups go to.
pub fn folder(site: &Site) -> PathBuf {
    match site.config.backup_dir.as_str() {
        "" => site.dir.join("backups"),
        d => site.dir.join(d),
    }
}

/// The schedule's record (the default before any attempt).
pub async fn status(site: &Site) -> Result<BackupStatus> {
    let mut conn = site.store.conn().await?;
    Ok(store::get_setting(&mut conn, STATUS_SETTING)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

async fn save(site: &Site, status: &BackupStatus) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::set_setting(&mut tx, STATUS_SETTING, &serde_json::to_string(status)?).await?;
    tx.commit().await
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether the schedule is on, or has run before (its record is then worth showing).
pub fn shown(site: &Site, s: &BackupStatus) -> bool {
    interval(site).is_some() || s.last_attempt_ms > 0
}

/// No backup written for two intervals (every process down, or each attempt failing).
pub fn overdue(site: &Site, s: &BackupStatus) -> bool {
    let since = if s.last_ok > 0 {
        s.last_ok
    } else {
        s.last_attempt_ms / 1000
    };
    interval(site).is_some_and(|e| since > 0 && unix_now() - since > 2 * e.as_secs() as i64)
}

/// An interval as a person reads it ("30 s", "15 min", "6 h", "1.5 d").
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    let (n, unit) = match s {
        s if s < 60.0 => (s, "s"),
        s if s < 3600.0 => (s / 60.0, "min"),
        s if s < 86400.0 => (s / 3600.0, "h"),
        s => (s / 86400.0, "d"),
    };
    let n = (n * 10.0).round() / 10.0;
    format!("{n} {unit}")
}

/// What the dashboard shows of the schedule: None when it is off and never ran.
pub async fn view(site: &Site) -> Result<Option<serde_json::Value>> {
    let s = status(site).await?;
    if !shown(site, &s) {
        return Ok(None);
    }
    let at = |t: i64| {
        (t > 0).then(|| {
            chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        })
    };
    let overdue = overdue(site, &s);
    Ok(Some(serde_json::json!({
        "enabled": interval(site).is_some(),
        "interval_hours": site.config.backup_interval_hours,
        "every": interval(site).map(human),
        "keep": site.config.backup_keep,
        "folder": folder(site).display().to_string(),
        "last_ok": at(s.last_ok),
        "last_file": (s.last_ok > 0).then_some(s.last_file),
        "last_bytes": s.last_bytes,
        "last_error": (s.failures_in_a_row > 0).then_some(s.last_error),
        "last_error_at": at(s.last_error_at),
        "failures_in_a_row": s.failures_in_a_row,
        "overdue": overdue,
    })))
}

/// Makes a scheduled backup if one is due and no other process is making it; the record
/// written, or None when nothing was due (or another holds the lock).
pub async fn run_due(site: &Site) -> Result<Option<BackupStatus>> {
    let Some(every) = interval(site) else {
        return Ok(None);
    };
    let Some(_lock) = site.store.try_backup_lock().await? else {
        return Ok(None);
    };
    // Read under the lock: a process that made one a moment ago is seen.
    let mut s = status(site).await?;
    let now = chrono::Utc::now().timestamp_millis();
    if now - s.last_attempt_ms < every.as_millis() as i64 {
        return Ok(None);
    }
    s.last_attempt_ms = now;
    save(site, &s).await?;
    match write_one(site).await {
        Ok((file, bytes)) => {
            s.last_ok = unix_now();
            s.last_file = file.display().to_string();
            s.last_bytes = bytes;
            s.failures_in_a_row = 0;
            if let Err(e) = prune(&folder(site), &site.name, site.config.backup_keep) {
                tracing::warn!(site = %site.name, "cannot remove an old backup: {e}");
            }
            tracing::info!(site = %site.name, file = %file.display(), bytes, "scheduled backup written");
        }
        Err(e) => {
            s.last_error_at = unix_now();
            s.last_error = e.to_string();
            s.failures_in_a_row += 1;
            tracing::error!(site = %site.name, "scheduled backup failed: {e}");
        }
    }
    save(site, &s).await?;
    Ok(Some(s))
}

/// Writes one backup into the schedule's folder; its path and size.
async fn write_one(site: &Site) -> Result<(PathBuf, u64)> {
    let dir = folder(site);
    std::fs::create_dir_all(&dir).map_err(Error::file("create", &dir))?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let file = dir.join(format!("{}-{stamp}{SUFFIX}", site.name));
    backup_from(&site.store, &site.dir, &file).await?;
    let bytes = std::fs::metadata(&file)
        .map_err(Error::file("read", &file))?
        .len();
    Ok((file, bytes))
}

/// Removes all but the newest `keep` scheduled backups of `site` in `dir` (names sort by
/// time); other files are left alone.
fn prune(dir: &Path, site: &str, keep: u32) -> Result<()> {
    let prefix = format!("{site}-");
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::file("read", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix)
                    && n.ends_with(SUFFIX)
                    && n[prefix.len()..n.len() - SUFFIX.len()]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-')
            })
        })
        .collect();
    ours.sort();
    let keep = (keep as usize).max(1);
    let extra = ours.len().saturating_sub(keep);
    for old in &ours[..extra] {
        std::fs::remove_file(old).map_err(Error::file("remove", old))?;
    }
    Ok(())
}

/// Runs the schedule for one site until the task is dropped (nothing when it is off).
pub async fn run(site: Arc<Site>) {
    let Some(every) = interval(&site) else {
        return;
    };
    let tick = (every / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(e) = run_due(&site).await {
            tracing::error!(site = %site.name, "scheduled backup: {e}");
        }
        tokio::time::sleep(tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_a_person_says_them() {
        let h = |s: f64| human(Duration::from_secs_f64(s));
        assert_eq!(h(1.0), "1 s");
        assert_eq!(h(900.0), "15 min");
        assert_eq!(h(6.0 * 3600.0), "6 h");
        assert_eq!(h(1.5 * 86400.0), "1.5 d");
    }

    #[test]
    fn prune_keeps_the_newest_of_this_sites_backups_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "shop-20261207-100000.docstream-backup",
            "shop-20261207-110000.docstream-backup",
            "shop-20261207-120000.docstream-backup",
            "shop-before-upgrade.docstream-backup",
            "shop-x-20261201-000000.docstream-backup",
            "shop-20261207-130000.docstream-backup.partial",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        prune(dir.path(), "shop", 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "shop-20261207-110000.docstream-backup",
                "shop-20261207-120000.docstream-backup",
                "shop-20261207-130000.docstream-backup.partial",
                "shop-before-upgrade.docstream-backup",
                "shop-x-20261201-000000.docstream-backup",
            ]
        );
    }
}
