//! A site: its config, database, document types and key, opened or created from `DIR/NAME`.

use crate::config::SiteConfig;
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::meta::{DocField, DocType, Registry};
use crate::store::{self, Store};
use crate::time::Clock;
use serde_json::Value;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A running site.
#[derive(Debug)]
pub struct Site {
    /// The folder name of the site.
    pub name: String,
    /// `DIR/NAME`.
    pub dir: PathBuf,
    /// Settings read at start.
    pub config: SiteConfig,
    /// The database.
    pub store: Store,
    /// Encrypts Password fields.
    pub cipher: Cipher,
    /// The site's clock in its time zone.
    pub clock: Clock,
    meta: RwLock<Arc<Registry>>,
    /// HTTP client for calls to other sites.
    pub http: reqwest::Client,
    /// What the layers above keep per site (the write path's hooks, streaming's state).
    pub extensions: Extensions,
    /// The `meta_version` counter the registry was built from, and when it was last compared.
    meta_seen: std::sync::Mutex<(i64, std::time::Instant)>,
    me: std::sync::OnceLock<std::sync::Weak<Site>>,
}

/// Values of any type that the layers above the site keep per site, one per type: the site
/// holds them without knowing what they are (the write path's hooks, streaming's runtime
/// state, the verified-key cache).
#[derive(Default)]
pub struct Extensions(RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "Extensions({n})")
    }
}

impl Extensions {
    /// Keeps `value`, in place of any other of its type.
    pub fn insert<T: Any + Send + Sync>(&self, value: T) {
        self.0
            .write()
            .expect("extensions lock")
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was inserted.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let found = self
            .0
            .read()
            .expect("extensions lock")
            .get(&TypeId::of::<T>())
            .cloned()?;
        found.downcast::<T>().ok()
    }

    /// The value of type `T`, made with its default the first time it is asked for.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        if let Some(v) = self.get::<T>() {
            return v;
        }
        let mut map = self.0.write().expect("extensions lock");
        let v = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        v.downcast::<T>()
            .expect("an extension is stored under its own type")
    }
}

/// Bumped when the internal (non-DocType) tables change.
const INTERNAL_SCHEMA_VERSION: u32 = 5;

/// Version stamp of the built-in types; a change makes `open` sync their tables.
fn builtin_version() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (f, t) in crate::meta::BUILTIN_DOCTYPES {
        h.update(f.as_bytes());
        h.update(t.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the layers above install in a site's extensions when it opens (`crate::hooks`).
pub type Install = fn(&Extensions);

impl Site {
    /// Opens an existing site folder, with `install`'s extensions.
    pub async fn open(dir: &Path, install: Install) -> Result<Site> {
        let config = SiteConfig::load(&dir.join("site_config.json"))?;
        let store = Store::open(&config.db_url, false).await?;
        let site = Site::assemble(dir, config, store)?;
        install(&site.extensions);
        site.migrate().await?;
        site.reload_meta().await?;
        Ok(site)
    }

    fn assemble(dir: &Path, config: SiteConfig, store: Store) -> Result<Site> {
        let cipher = Cipher::from_key(&config.encryption_key)?;
        let clock = Clock::new(&config.time_zone).ok_or_else(|| {
            Error::Validation(format!("unknown time_zone {:?}", config.time_zone))
        })?;
        let http = http_client(&config.ca_file)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        Ok(Site {
            name,
            dir: dir.to_path_buf(),
            config,
            store,
            cipher,
            clock,
            meta: RwLock::new(Arc::new(Registry::builtin())),
            http,
            extensions: Extensions::default(),
            meta_seen: std::sync::Mutex::new((0, std::time::Instant::now())),
            me: std::sync::OnceLock::new(),
        })
    }

    /// Creates the site's schema in an empty database and returns the opened site, with
    /// `install`'s extensions.
    pub async fn create(dir: &Path, config: SiteConfig, install: Install) -> Result<Site> {
        let store = Store::open(&config.db_url, true).await?;
        {
            let mut conn = store.conn().await?;
            if store::table_exists(&mut conn, store.dialect(), "tabDocType").await? {
                return Err(Error::Validation(format!(
                    "database {} already holds a site; use an empty database",
                    store::redact(&config.db_url)
                )));
            }
        }
        let site = Site::assemble(dir, config, store)?;
        install(&site.extensions);
        site.migrate().await?;
        site.reload_meta().await?;
        Ok(site)
    }

    /// Creates or updates the tables of the built-in types and their DocType records.
    async fn migrate(&self) -> Result<()> {
        let version = format!("{}-{}", builtin_version(), INTERNAL_SCHEMA_VERSION);
        let mut tx = self.store.begin().await?;
        store::create_internal_tables(&mut tx).await?;
        if store::get_setting(&mut tx, "builtin_version")
            .await?
            .as_deref()
            == Some(version.as_str())
        {
            tx.commit().await?;
            return Ok(());
        }
        let reg = Registry::builtin();
        for dt in reg.all() {
            store::sync_table(&mut tx, self.store.dialect(), &dt).await?;
        }
        let dt_meta = reg.get("DocType")?;
        let field_meta = reg.get("DocField")?;
        let perm_meta = reg.get("DocPerm")?;
        let now = self.clock.now();
        for dt in reg.all() {
            let name = Value::String(dt.name.clone());
            store::delete_row(&mut tx, &dt_meta, &name).await?;
            store::delete_child_rows(&mut tx, &field_meta, "DocType", &dt.name, "fields").await?;
            store::delete_child_rows(&mut tx, &perm_meta, "DocType", &dt.name, "permissions")
                .await?;
            let (row, fields, perms) = doctype_rows(&dt, &now);
            store::insert_row(&mut tx, &dt_meta, &row).await?;
            for r in fields {
                store::insert_row(&mut tx, &field_meta, &r).await?;
            }
            for r in perms {
                store::insert_row(&mut tx, &perm_meta, &r).await?;
            }
        }
        store::create_streaming_indexes(&mut tx).await?;
        store::set_setting(&mut tx, "builtin_version", &version).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Wraps the site in an `Arc` that background tasks can reach through [`Site::arc`].
    pub fn into_arc(self) -> Arc<Site> {
        let arc = Arc::new(self);
        let _ = arc.me.set(Arc::downgrade(&arc));
        arc
    }

    /// The shared handle of this site, when it was made with [`Site::into_arc`].
    pub fn arc(&self) -> Option<Arc<Site>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    /// The current document types.
    pub fn meta(&self) -> Arc<Registry> {
        self.meta.read().expect("meta lock").clone()
    }

    /// Reloads the registry when another process changed a DocType or Custom Field (checked at
    /// most once a second).
    pub async fn refresh_meta(&self) -> Result<()> {
        {
            let seen = self.meta_seen.lock().expect("meta lock");
            if seen.1.elapsed() < std::time::Duration::from_secs(1) {
                return Ok(());
            }
        }
        let mut conn = self.store.conn().await?;
        let version = meta_version(&mut conn).await?;
        drop(conn);
        let known = {
            let mut seen = self.meta_seen.lock().expect("meta lock");
            seen.1 = std::time::Instant::now();
            seen.0
        };
        if version != known {
            self.reload_meta().await?;
        }
        Ok(())
    }

    /// Rebuilds the registry from the built-ins plus custom types and Custom Fields in the database.
    pub async fn reload_meta(&self) -> Result<()> {
        let mut reg = Registry::builtin();
        let mut conn = self.store.conn().await?;
        let version = meta_version(&mut conn).await?;
        let customs = store::fetch_docs(
            &mut conn,
            r#"SELECT * FROM "tabDocType" WHERE custom = 1"#,
            &[],
        )
        .await?;
        for mut row in customs {
            let name = row
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for (field, child) in [("fields", "DocField"), ("permissions", "DocPerm")] {
                let child_dt = reg.get(child)?;
                let rows =
                    store::load_children(&mut conn, &child_dt, "DocType", &name, field).await?;
                row.insert(
                    field.into(),
                    Value::Array(rows.into_iter().map(Value::Object).collect()),
                );
            }
            match serde_json::from_value::<DocType>(Value::Object(row)) {
                Ok(dt) => reg.insert(dt),
                Err(e) => {
                    tracing::error!(doctype = %name, "skipping unreadable custom DocType: {e}")
                }
            }
        }
        let cfs = store::fetch_docs(
            &mut conn,
            r#"SELECT * FROM "tabCustom Field" ORDER BY creation"#,
            &[],
        )
        .await?;
        for cf in cfs {
            let dt = cf
                .get("dt")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let after = cf
                .get("insert_after")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match serde_json::from_value::<DocField>(Value::Object(cf)) {
                Ok(f) => reg.add_custom_field(&dt, f, &after),
                Err(e) => tracing::error!(doctype = %dt, "skipping unreadable Custom Field: {e}"),
            }
        }
        for (doctype, series) in &self.config.naming_series {
            reg.set_naming_series(doctype, series);
        }
        *self.meta.write().expect("meta lock") = Arc::new(reg);
        *self.meta_seen.lock().expect("meta lock") = (version, std::time::Instant::now());
        Ok(())
    }
}

/// The shared HTTP client settings for calls between sites.
/// Resolves names as the system does, except that `localhost` and every `*.localhost` name
/// is the loopback address (RFC 6761), as browsers have it: sites on one machine may then go
/// by names such as `ho.localhost` without an entry in `/etc/hosts`.
struct LoopbackNames;

impl reqwest::dns::Resolve for LoopbackNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "localhost" || host.ends_with(".localhost") {
                let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                return Ok(Box::new(std::iter::once(loopback)) as reqwest::dns::Addrs);
            }
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client this site calls other sites with; `ca_file` adds certificate authorities.
fn http_client(ca_file: &str) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .dns_resolver(Arc::new(LoopbackNames))
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(4);
    if !ca_file.is_empty() {
        let bad = |e: String| Error::Validation(format!("ca_file {ca_file}: {e}"));
        let pem = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))
}

/// The counter bumped by every change of a DocType or Custom Field.
pub const META_VERSION: &str = "meta_version";

async fn meta_version(conn: &mut crate::store::Conn) -> Result<i64> {
    store::counter_value(conn, META_VERSION).await
}

/// The DocType record of a type as rows of `tabDocType`, `tabDocField` and `tabDocPerm`.
fn doctype_rows(dt: &DocType, now: &str) -> (store::Doc, Vec<store::Doc>, Vec<store::Doc>) {
    let std_cols = |name: String, idx: usize, parentfield: Option<&str>| {
        let mut m = store::Doc::new();
        m.insert("name".into(), Value::String(name));
        m.insert("owner".into(), "Administrator".into());
        m.insert("creation".into(), now.into());
        m.insert("modified".into(), now.into());
        m.insert("modified_by".into(), "Administrator".into());
        m.insert("docstatus".into(), 0.into());
        m.insert("idx".into(), idx.into());
        if let Some(pf) = parentfield {
            m.insert("parent".into(), dt.name.clone().into());
            m.insert("parentfield".into(), pf.into());
            m.insert("parenttype".into(), "DocType".into());
        }
        m
    };
    let mut row = std_cols(dt.name.clone(), 0, None);
    if let Value::Object(m) = serde_json::to_value(dt).unwrap_or_default() {
        for (k, v) in m {
            if k != "fields" && k != "permissions" && k != "name" {
                row.insert(k, flag_to_int(v));
            }
        }
    }
    let fields = dt
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut r = std_cols(
                format!("{}-{}", dt.name, f.fieldname),
                i + 1,
                Some("fields"),
            );
            if let Value::Object(m) = serde_json::to_value(f).unwrap_or_default() {
                r.extend(m.into_iter().map(|(k, v)| (k, flag_to_int(v))));
            }
            r
        })
        .collect();
    let perms = dt
        .permissions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = std_cols(
                format!("{}-perm-{}", dt.name, i + 1),
                i + 1,
                Some("permissions"),
            );
            if let Value::Object(m) = serde_json::to_value(p).unwrap_or_default() {
                r.extend(m.into_iter().map(|(k, v)| (k, flag_to_int(v))));
            }
            r
        })
        .collect();
    (row, fields, perms)
}

fn flag_to_int(v: Value) -> Value {
    match v {
        Value::Bool(b) => Value::from(b as i64),
        other => other,
    }
}
