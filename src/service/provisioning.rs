//! Creating and dropping sites: folders, config, schema, built-in roles and users.
//! Must not choose a site's hooks: its caller gives the `Install`.

use super::documents;
use super::documents::WriteFlags;
use super::permissions::Caller;
use crate::config::SiteConfig;
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::service::hooks::Write;
use crate::site::{Install, Site};
use serde_json::json;
use std::path::Path;

/// Creates site `name` under `data_dir`, with `install`'s hooks (its built-in users are written
/// through them); nothing is left behind when it fails.
pub async fn new_site(
    data_dir: &Path,
    name: &str,
    admin_password: &str,
    url: Option<&str>,
    db: Option<&str>,
    install: Install,
) -> Result<Site> {
    crate::meta::check_identifier("Site name", name, false).or_else(|_| {
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !name.starts_with('.')
        {
            Ok(())
        } else {
            Err(Error::Validation(format!(
                "site name {name:?} may use only letters, digits, '-', '_' and '.'"
            )))
        }
    })?;
    if admin_password.is_empty() {
        return Err(Error::Validation("--admin-password cannot be empty".into()));
    }
    let dir = data_dir.join(name);
    if dir.exists() {
        return Err(Error::Validation(format!(
            "site {name} already exists in {}",
            dir.display()
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Validation(format!("cannot create {}: {e}", data_dir.display())))?;
    // Paths stored in the config are absolute: `serve` may start from any folder.
    let dir = std::fs::canonicalize(data_dir)
        .map_err(Error::file("read", data_dir))?
        .join(name);
    std::fs::create_dir(&dir)
        .map_err(|e| Error::Validation(format!("cannot create {}: {e}", dir.display())))?;
    let result = create_in(&dir, name, (url, db), admin_password, install).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn create_in(
    dir: &Path,
    name: &str,
    (url, db): (Option<&str>, Option<&str>),
    admin_password: &str,
    install: Install,
) -> Result<Site> {
    let db_url = match db {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u.to_string(),
        Some(u) => {
            return Err(Error::Validation(format!(
                "--db must be a postgres:// URL, not {:?}",
                crate::store::redact(u)
            )))
        }
        None => format!("sqlite://{}", dir.join("site.sqlite3").display()),
    };
    let config = SiteConfig {
        db_url,
        url: url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{name}:8000")),
        encryption_key: Cipher::generate_key(),
        ..SiteConfig::default()
    };
    let site = Site::create(dir, config.clone(), install).await?;
    let seeded = seed(&site, admin_password).await;
    if let Err(e) = seeded {
        drop_tables(&site).await.ok();
        return Err(e);
    }
    config.save(&dir.join("site_config.json"))?;
    Ok(site)
}

async fn seed(site: &Site, admin_password: &str) -> Result<()> {
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: true,
        ..Default::default()
    };
    let reg = site.meta();
    let mut tx = site.store.begin().await?;
    for role in ["Administrator", "System Manager", "All", "Guest"] {
        let doc = json!({"role_name": role, "desk_access": 1});
        documents::insert_in(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &*reg.get("Role")?,
            },
            &mut tx,
            crate::store::doc_from(doc),
            &flags,
        )
        .await?;
    }
    let users = [
        json!({"email": "Administrator", "first_name": "Administrator", "roles": [{"role": "Administrator"}, {"role": "System Manager"}], "new_password": admin_password}),
        json!({"email": "Guest", "first_name": "Guest", "roles": [{"role": "Guest"}], "user_type": "Website User"}),
    ];
    for u in users {
        documents::insert_in(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &*reg.get("User")?,
            },
            &mut tx,
            crate::store::doc_from(u),
            &flags,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Drops every table of the site's database (for PostgreSQL sites; SQLite goes with its folder).
pub async fn drop_tables(site: &Site) -> Result<()> {
    if site.store.dialect() != crate::store::Dialect::Postgres {
        return Ok(());
    }
    let mut conn = site.store.conn().await?;
    let tables: Vec<String> = crate::store::fetch_values(
        &mut conn,
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        &[],
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next()?.as_str().map(str::to_string))
    .filter(|t| t.starts_with("tab") || t.starts_with("__"))
    .collect();
    for t in tables {
        let sql = format!("DROP TABLE IF EXISTS {} CASCADE", crate::store::q(&t));
        crate::store::execute_batch(&mut conn, &sql).await?;
    }
    Ok(())
}

/// Deletes a site: its tables (PostgreSQL) and its folder.
pub async fn drop_site(dir: &Path) -> Result<()> {
    // Nothing is written through the write path: no hooks needed.
    let site = Site::open(dir, |_| {}).await?;
    drop_tables(&site).await?;
    site.store.close().await;
    std::fs::remove_dir_all(dir)
        .map_err(|e| Error::Validation(format!("cannot remove {}: {e}", dir.display())))
}

/// User names, Administrator included.
pub async fn list_users(site: &Site) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = crate::store::fetch_docs(
        &mut conn,
        r#"SELECT name FROM "tabUser" WHERE name != 'Guest' ORDER BY name"#,
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("name").and_then(|v| v.as_str()).map(str::to_string))
        .collect())
}
