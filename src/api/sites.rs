//! The sites a server answers for, each found by the request's Host.

use crate::error::{Error, Result};
use crate::site::Site;
use axum::http::{header, HeaderMap};
use std::path::Path;
use std::sync::Arc;

/// The sites a server answers for, found by the request's Host.
#[derive(Debug, Default)]
pub struct Sites {
    sites: Vec<Arc<Site>>,
    /// Held while these sites are served: a restore of one of them is refused meanwhile.
    _serving: Vec<crate::store::ServingMark>,
}

fn host_of_url(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

impl Sites {
    /// Opens every site folder (one with `site_config.json`) under `dir`.
    pub async fn open_all(dir: &Path) -> Result<Sites> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::Validation(format!("cannot read data dir {}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            // Hidden folders are a backup's or restore's work in progress.
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter(|p| p.join("site_config.json").is_file())
            .collect();
        entries.sort();
        if entries.is_empty() {
            return Err(Error::Validation(format!(
                "no site in {}: create one with `docstream new-site`",
                dir.display()
            )));
        }
        let mut sites = Vec::new();
        let mut marks = Vec::new();
        for p in entries {
            let site = crate::hooks::open(&p).await?;
            marks.push(site.store.mark_serving().await?);
            sites.push(site.into_arc());
        }
        Ok(Sites {
            sites,
            _serving: marks,
        })
    }

    /// Wraps already opened sites.
    pub fn from_sites(sites: Vec<Arc<Site>>) -> Sites {
        Sites {
            sites,
            _serving: Vec::new(),
        }
    }

    /// All sites.
    pub fn all(&self) -> &[Arc<Site>] {
        &self.sites
    }

    /// The site for a request's Host header.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<Arc<Site>> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some(s) = self
            .sites
            .iter()
            .find(|s| host_of_url(&s.config.url) == host)
        {
            return Ok(s.clone());
        }
        let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&host);
        if let Some(s) = self
            .sites
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(bare))
        {
            return Ok(s.clone());
        }
        if self.sites.len() == 1 {
            return Ok(self.sites[0].clone());
        }
        Err(Error::DoesNotExist(format!(
            "No site is served for host {host:?}"
        )))
    }
}
