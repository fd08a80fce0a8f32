//! `backup` and `restore`: a site's database and `site_config.json` in one file of docstream's
//! own (a zstd-compressed tar: a manifest, the config, the store's snapshot files), written
//! readable by its owner only, since the config holds the site's encryption key.
//!
//! A restore replaces the site's database in one transaction, refused while any process serves
//! it, rewrites the config's paths for the folder it lands in, and leaves a "restored" mark in
//! the database: the history the producer side tells its consumers starts again from it.
//! Must not know about HTTP or streaming (streaming reads the mark through the store).

use crate::config::SiteConfig;
use crate::error::{Error, Result};
use crate::store::{self, Snapshot, Store};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's name in a backup file.
const MANIFEST: &str = "docstream-backup.json";
const CONFIG: &str = "site_config.json";
/// The backup file format this binary writes and reads.
const FORMAT: u32 = 1;

/// What a backup file says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The docstream version that made it.
    pub docstream: String,
    /// The site's folder name.
    pub site: String,
    /// When the snapshot was taken (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub made_at: String,
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// A folder of this process's own beside `near`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// Hidden (`serve` passes over folders whose name starts with a dot).
    fn beside(near: &Path) -> Result<Scratch> {
        let name = near
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let dir = near.with_file_name(format!(".{name}.parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(Error::file("create", &dir))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn utc_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Writes a backup of the site in `site_dir` to `file`, while it may be serving.
pub async fn backup(site_dir: &Path, file: &Path) -> Result<Manifest> {
    let config = SiteConfig::load(&site_dir.join(CONFIG))?;
    let store = Store::open(&config.db_url, false).await?;
    let made = backup_from(&store, site_dir, file).await;
    store.close().await;
    made
}

/// Writes a backup of the site in `site_dir`, whose database `store` has open, to `file`.
pub async fn backup_from(store: &Store, site_dir: &Path, file: &Path) -> Result<Manifest> {
    let config = SiteConfig::load(&site_dir.join(CONFIG))?;
    let scratch = Scratch::beside(file)?;
    let snapshot = store.snapshot_into(&scratch.0).await;
    let manifest = Manifest {
        format: FORMAT,
        docstream: env!("CARGO_PKG_VERSION").to_string(),
        site: site_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        made_at: utc_now(),
        snapshot: snapshot?,
    };
    let path = scratch.0.join(MANIFEST);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
        .map_err(Error::file("write", &path))?;
    let path = scratch.0.join(CONFIG);
    config.save(&path)?;
    let (parts, file) = (scratch.0.clone(), file.to_path_buf());
    tokio::task::spawn_blocking(move || pack(&parts, &file))
        .await
        .map_err(|e| Error::Internal(format!("the backup thread failed: {e}")))??;
    Ok(manifest)
}

/// Packs every file of `parts` (manifest first) into `file`, through a partial file renamed
/// into place once whole.
fn pack(parts: &Path, file: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(Error::file("write", &partial))?;
    let written = (|| -> std::io::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(parts)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
            .collect::<std::io::Result<_>>()?;
        names.sort_by_key(|n| (n != MANIFEST, n != CONFIG, n.clone()));
        let mut tar = tar::Builder::new(zstd::Encoder::new(out, 3)?);
        for n in names {
            tar.append_path_with_name(parts.join(&n), &n)?;
        }
        let out = tar.into_inner()?.finish()?;
        out.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::file("write", &partial)(e));
    }
    std::fs::rename(&partial, file).map_err(Error::file("write", file))
}

/// Unpacks a backup file into `into`; its manifest.
fn unpack(file: &Path, into: &Path) -> Result<Manifest> {
    let f = std::fs::File::open(file).map_err(Error::file("read", file))?;
    let not_backup = |e: std::io::Error| {
        Error::Validation(format!(
            "{} is not a docstream backup (or is damaged): {e}",
            file.display()
        ))
    };
    let mut tar = tar::Archive::new(zstd::Decoder::new(f).map_err(not_backup)?);
    for entry in tar.entries().map_err(not_backup)? {
        let mut entry = entry.map_err(not_backup)?;
        let name = entry.path().map_err(not_backup)?.to_path_buf();
        // Plain names only: nothing may land outside the scratch folder.
        let plain = name.components().count() == 1
            && matches!(
                name.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            return Err(Error::Validation(format!(
                "{} holds an unexpected entry {}: not a docstream backup",
                file.display(),
                name.display()
            )));
        }
        entry.unpack(into.join(&name)).map_err(not_backup)?;
    }
    let path = into.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|_| {
        Error::Validation(format!(
            "{} is not a docstream backup (it has no {MANIFEST})",
            file.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)?;
    if manifest.format != FORMAT {
        return Err(Error::Validation(format!(
            "{} is a backup of format {} (docstream {}); this docstream reads format {FORMAT}",
            file.display(),
            manifest.format,
            manifest.docstream
        )));
    }
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// The database it went into (password hidden).
    pub db: String,
}

/// Restores the backup `file` as the site `name` under `data_dir` (made if missing), into
/// `db` when given, else the site's database (a SQLite site's file in its folder; on
/// PostgreSQL the database the site there, or else the backup, names).
pub async fn restore(
    data_dir: &Path,
    name: &str,
    file: &Path,
    db: Option<&str>,
) -> Result<Restored> {
    std::fs::create_dir_all(data_dir).map_err(Error::file("create", data_dir))?;
    let data_dir = std::fs::canonicalize(data_dir).map_err(Error::file("read", data_dir))?;
    let site_dir = data_dir.join(name);
    let scratch = Scratch::beside(&site_dir)?;
    let (from, parts) = (file.to_path_buf(), scratch.0.clone());
    let manifest = tokio::task::spawn_blocking(move || unpack(&from, &parts))
        .await
        .map_err(|e| Error::Internal(format!("the restore thread failed: {e}")))??;
    let mut config = SiteConfig::load(&scratch.0.join(CONFIG))?;
    let here = SiteConfig::load(&site_dir.join(CONFIG)).ok();
    config.db_url = match (db, manifest.snapshot.backend.as_str()) {
        (Some(url), _) => url.to_string(),
        (None, "sqlite") => format!("sqlite://{}", site_dir.join(store::SQLITE_FILE).display()),
        (None, _) => here
            .map(|h| h.db_url)
            .filter(|u| u.starts_with("postgres"))
            .unwrap_or(config.db_url),
    };
    std::fs::create_dir_all(&site_dir).map_err(Error::file("create", &site_dir))?;
    // The config goes in beside the database once that is in: never one without the other.
    let staged = scratch.0.join("site_config.json.restored");
    config.save(&staged)?;
    let marker = serde_json::json!({
        "id": crate::crypto::random_token(16),
        "made_at": manifest.made_at,
        "restored_at": utc_now(),
        "newest_seq": manifest.snapshot.newest_seq,
        "file": file.file_name().map(|n| n.to_string_lossy().to_string()),
    })
    .to_string();
    store::restore_snapshot(
        &config.db_url,
        &scratch.0,
        &manifest.snapshot.backend,
        &marker,
    )
    .await?;
    let target = site_dir.join(CONFIG);
    std::fs::rename(&staged, &target).map_err(Error::file("write", &target))?;
    Ok(Restored {
        manifest,
        db: store::redact(&config.db_url),
    })
}
