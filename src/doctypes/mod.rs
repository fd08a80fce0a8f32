//! Behaviour of built-in types (validation and hooks), one module per type; the fields
//! themselves are data in `doctypes/*.json`.

mod custom_field;
mod doctype;
mod user;

use crate::error::Result;
use crate::meta::{DocType, Registry};
use crate::service::documents::Pending;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::Doc;
use sqlx::AnyConnection;

/// Runs the type's validation before a save; may change the document.
#[allow(clippy::too_many_arguments)]
pub async fn validate(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    dt: &DocType,
    doc: &mut Doc,
    old: Option<&Doc>,
    caller: &Caller,
    pending: &mut Pending,
) -> Result<()> {
    let _ = (site, caller);
    match dt.name.as_str() {
        "User" => user::validate(doc, old, pending),
        "DocType" => doctype::validate(reg, doc, old),
        "Custom Field" => custom_field::validate(conn, reg, doc, old).await,
        _ => Ok(()),
    }
}

/// Runs the type's side effects after its row is written, in the same transaction.
pub async fn after_write(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    match dt.name.as_str() {
        "DocType" => doctype::after_write(site, conn, doc, old, pending).await,
        "Custom Field" => custom_field::after_write(site, conn, reg, doc, pending).await,
        _ => Ok(()),
    }
}

/// Runs the type's checks before a delete, in the same transaction.
pub async fn before_delete(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    pending: &mut Pending,
) -> Result<()> {
    let _ = reg;
    match dt.name.as_str() {
        "User" => user::before_delete(doc),
        "DocType" => doctype::before_delete(site, conn, doc, pending).await,
        "Custom Field" => {
            pending.meta_changed = true;
            Ok(())
        }
        "Role" => {
            let name = doc.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            if ["Administrator", "System Manager", "All", "Guest"].contains(&name) {
                return Err(crate::Error::Validation(format!(
                    "The built-in role {name} cannot be deleted"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
