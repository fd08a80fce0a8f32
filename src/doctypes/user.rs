//! User: full name, email check, login password, protected built-in users.

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
        .trim()
        .to_string()
}

pub fn validate(doc: &mut Doc, old: Option<&Doc>) -> Result<()> {
    let email = text(doc, "email");
    let special = matches!(email.as_str(), "Administrator" | "Guest");
    if old.is_none() && !special {
        let ok = email.contains('@')
            && !email.contains(char::is_whitespace)
            && !email.starts_with('@')
            && !email.ends_with('@');
        if !ok {
            return Err(Error::Validation(format!(
                "{email:?} is not a valid email address"
            )));
        }
    }
    if let Some(o) = old {
        if text(o, "email") != email {
            return Err(Error::Validation(
                "The email of a user is its name and cannot be changed; rename is not supported"
                    .into(),
            ));
        }
    }
    let full = [text(doc, "first_name"), text(doc, "last_name")]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    doc.insert("full_name".into(), Value::String(full));
    doc.insert("new_password".into(), Value::Null);
    Ok(())
}

pub fn before_delete(doc: &Doc) -> Result<()> {
    let name = text(doc, "name");
    if name == "Administrator" || name == "Guest" {
        return Err(Error::Validation(format!("User {name} cannot be deleted")));
    }
    Ok(())
}

/// User's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        crate::service::auth::forget_verified_keys(w.site);
        validate(doc, old)
    }

    async fn before_delete(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        doc: &Doc,
        _pending: &mut Pending,
    ) -> Result<()> {
        crate::service::auth::forget_verified_keys(w.site);
        before_delete(doc)
    }
}
