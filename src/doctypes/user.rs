//! User: full name, email check, login password, protected built-in users.

use crate::error::{Error, Result};
use crate::store::Doc;
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
