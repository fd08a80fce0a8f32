//! Event Subscriber (on a producer that connects): the hosted consumer's URL, kept in one form.

use crate::error::{Error, Result};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::Conn;
use crate::store::Doc;
use async_trait::async_trait;
use serde_json::Value;

pub fn validate(doc: &mut Doc, old: Option<&Doc>) -> Result<()> {
    let url = doc
        .get("subscriber_url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .trim_end_matches('/')
        .to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Validation(format!(
            "Consumer URL must start with http:// or https://, not {url:?}"
        )));
    }
    if let Some(o) = old {
        if o.get("subscriber_url").and_then(Value::as_str) != Some(url.as_str()) {
            return Err(Error::Validation(
                "The Consumer URL cannot change: delete this Event Subscriber and create a new one"
                    .into(),
            ));
        }
    }
    doc.insert("subscriber_url".into(), Value::String(url));
    Ok(())
}

/// Event Subscriber's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        validate(doc, old)
    }
}
