//! `site_config.json`: a site's settings, read at start.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A site's settings. Unknown keys are kept out; missing keys take their defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteConfig {
    /// Database URL (`sqlite://...` or `postgres://...`).
    pub db_url: String,
    /// The site's own public URL: its identity towards other sites.
    pub url: String,
    /// Base64 AES-256 key for Password fields.
    pub encryption_key: String,
    pub pull_interval: f64,
    /// As a consumer of docstream producers: seconds a pull may wait at the producer for new
    /// logs (long poll; 0 turns it off and relies on notifications and the interval).
    pub pull_wait_seconds: f64,
    /// As a producer: the longest wait a consumer's pull is granted.
    pub max_pull_wait_seconds: f64,
    pub retry_base_seconds: f64,
    pub retry_max_seconds: f64,
    pub retry_max_tries: i64,
    /// Days to keep update logs (0 keeps all); fractions allowed.
    pub update_log_retention_days: f64,
    pub time_zone: String,
    pub max_body_bytes: usize,
    /// Largest file `upload_file` takes.
    pub max_file_bytes: u64,
    pub login_max_failures: i64,
    pub login_window_seconds: i64,
    pub session_expiry_hours: i64,
    /// Per type, the site's own naming series: the first names new documents here; the others
    /// are accepted too (those of the sites this one receives documents from).
    pub naming_series: std::collections::BTreeMap<String, Vec<String>>,
    /// As a consumer: make or extend subscribed types from the producer's definitions, so
    /// documents arrive whole (see `streaming::definitions`).
    pub follow_producer_types: bool,
    /// How many levels of linked types the consumer makes from the producer's definitions.
    pub follow_link_depth: u32,
    /// Minutes between automatic verifications of each docstream producer (0: only on demand
    /// and after a history change).
    pub verify_interval_minutes: f64,
    /// A bearer token that may read `/metrics`' per-peer figures (empty: a System Manager's
    /// session or API key only). Never logged.
    pub metrics_token: String,
    /// Addresses or CIDR ranges of proxies in front of this site whose `X-Forwarded-Proto`
    /// and `X-Forwarded-For` are believed (from anyone else they are ignored).
    pub trusted_proxies: Vec<String>,
    /// This site's own certificate and key (PEM files) when `serve` terminates TLS: chosen
    /// by SNI for the host of `url`, read again when they change.
    pub tls_cert: String,
    pub tls_key: String,
    /// A PEM file of certificate authorities trusted, besides the system's, when this site
    /// calls `https://` sites (a private CA, a self-signed peer).
    pub ca_file: String,
    /// Hours between scheduled backups made by `serve` (0: none; the smallest is one second).
    pub backup_interval_hours: f64,
    /// How many scheduled backups to keep (the oldest go once a new one is written).
    pub backup_keep: u32,
    /// Where scheduled backups go (empty: the `backups` folder in the site's own).
    pub backup_dir: String,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            db_url: String::new(),
            url: String::new(),
            encryption_key: String::new(),
            pull_interval: 60.0,
            pull_wait_seconds: 25.0,
            max_pull_wait_seconds: 30.0,
            retry_base_seconds: 60.0,
            retry_max_seconds: 3600.0,
            retry_max_tries: 10,
            update_log_retention_days: 0.0,
            time_zone: "UTC".into(),
            max_body_bytes: 10 * 1024 * 1024,
            max_file_bytes: 10 * 1024 * 1024,
            login_max_failures: 10,
            login_window_seconds: 300,
            session_expiry_hours: 168,
            naming_series: Default::default(),
            follow_producer_types: true,
            follow_link_depth: 1,
            verify_interval_minutes: 60.0,
            metrics_token: String::new(),
            trusted_proxies: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            ca_file: String::new(),
            backup_interval_hours: 0.0,
            backup_keep: 7,
            backup_dir: String::new(),
        }
    }
}

impl SiteConfig {
    /// The largest body `docstream.tunnel.reply` takes: a shop's answer may carry a whole
    /// attached file, base64 in a form field.
    pub fn tunnel_reply_bytes(&self) -> usize {
        let file = usize::try_from(self.max_file_bytes).unwrap_or(usize::MAX);
        self.max_body_bytes
            .max(file.saturating_mul(3) / 2 + (1 << 20))
    }

    /// The most bytes of logs one pull page carries (always at least one log): half the
    /// tunnel-reply bound, so that a page, base64 in a tunnel reply, fits in it.
    pub fn page_bytes(&self) -> usize {
        self.tunnel_reply_bytes() / 2
    }

    /// The largest answer read from another site: a page or a tunnel reply.
    pub fn max_answer_bytes(&self) -> usize {
        self.tunnel_reply_bytes()
    }

    /// Reads a site's config file.
    pub fn load(path: &Path) -> Result<SiteConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Validation(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Validation(format!("{} is not valid: {e}", path.display())))
    }

    /// Writes the config file readable by its owner only (it holds the site key).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_json::to_string_pretty(self)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Validation(format!("cannot write {}: {e}", path.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::Validation(format!("cannot write {}: {e}", path.display())))
    }
}
