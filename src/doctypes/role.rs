//! Role: the built-in roles cannot be deleted; a change of roles forgets verified keys.

use crate::error::{Error, Result};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::{Conn, Doc};
use async_trait::async_trait;
use serde_json::Value;

/// Role's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        _doc: &mut Doc,
        _old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        crate::service::auth::forget_verified_keys(w.site);
        Ok(())
    }

    async fn before_delete(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        doc: &Doc,
        _pending: &mut Pending,
    ) -> Result<()> {
        crate::service::auth::forget_verified_keys(w.site);
        let name = doc.get("name").and_then(Value::as_str).unwrap_or_default();
        if ["Administrator", "System Manager", "All", "Guest"].contains(&name) {
            return Err(Error::Validation(format!(
                "The built-in role {name} cannot be deleted"
            )));
        }
        Ok(())
    }
}
