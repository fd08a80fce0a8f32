//! Server Script: an API script must parse and define the function its `api_method` names.

use crate::error::{Error, Result};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::Conn;
use crate::store::Doc;
use async_trait::async_trait;
use serde_json::Value;

fn text(doc: &Doc, f: &str) -> String {
    doc.get(f)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub fn validate(doc: &Doc) -> Result<()> {
    let method = text(doc, "api_method");
    let script = text(doc, "script");
    if method.trim().is_empty() {
        return Err(Error::Mandatory(
            "[Server Script]: Value missing for API Method (api_method)".into(),
        ));
    }
    if method.split('.').any(|p| p.trim().is_empty()) {
        return Err(Error::Validation(format!(
            "API Method must be a dotted name such as my_app.module.function, not {method:?}"
        )));
    }
    let function = method.rsplit('.').next().unwrap_or(&method);
    crate::sandbox::check_script(&script, function)
        .map_err(|e| Error::Validation(format!("Server Script {method}: {e}")))
}

/// Server Script's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        doc: &mut Doc,
        _old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        validate(doc)
    }
}
