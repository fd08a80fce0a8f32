//! The site's hooks, in the manner of Frappe's `hooks.py`: which behaviour runs at each hook
//! point of the write path (the built-in types' from `doctypes`, streaming's types' and the
//! update log from `streaming`), installed by the one way sites are opened and created, so that
//! no path (serve, the CLI, the bench, the tests) writes without them. Nothing below imports
//! this module.

use crate::config::SiteConfig;
use crate::error::Result;
use crate::service::hooks::Hooks;
use crate::site::{Extensions, Site};
use std::path::Path;

/// Installs the hooks in a site's extensions (a `site::Install`).
pub fn install(extensions: &Extensions) {
    let mut hooks = Hooks::default();
    crate::doctypes::register(&mut hooks);
    crate::streaming::register(&mut hooks);
    extensions.insert(hooks);
}

/// Opens an existing site folder with its hooks.
pub async fn open(dir: &Path) -> Result<Site> {
    Site::open(dir, install).await
}

/// Creates a site's schema in an empty database and opens it with its hooks.
pub async fn create(dir: &Path, config: SiteConfig) -> Result<Site> {
    Site::create(dir, config, install).await
}
