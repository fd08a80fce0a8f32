//! Docstatus: which changes between draft (0), submitted (1) and cancelled (2) a type and a
//! caller may make, and what may still change on a submitted document.
//! Must not write: it only refuses.

use super::WriteFlags;
use crate::error::{Error, Result};
use crate::meta::PermType;
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::Doc;
use serde_json::Value;

/// Refuses a docstatus change the type or the caller does not allow, and, on a submitted
/// document, a change of a field that does not allow it.
pub(super) fn check_docstatus_change(
    w: &Write<'_>,
    old: &Doc,
    new: &Doc,
    (from, to): (i64, i64),
    flags: &WriteFlags,
) -> Result<()> {
    let (caller, dt) = (w.caller, w.dt);
    let need = |p: PermType| {
        if flags.ignore_permissions {
            Ok(())
        } else {
            caller.require(dt, p)
        }
    };
    match (from, to) {
        (0, 0) => Ok(()),
        (0, 1) if dt.is_submittable => need(PermType::Submit),
        (1, 1) | (1, 2) => {
            if to == 2 {
                need(PermType::Cancel)?;
            }
            // A cancel made on another site comes with what that site changed with it
            // (ERPNext sets `status`, as Frappe allows on a cancel): held as sent.
            if to == 2 && flags.origin.is_some() {
                return Ok(());
            }
            for f in dt.data_fields() {
                if !f.allow_on_submit && old.get(&f.fieldname) != new.get(&f.fieldname) {
                    return Err(Error::Validation(format!(
                        "Not allowed to change {} after submission",
                        f.label()
                    )));
                }
            }
            for tf in dt.table_fields() {
                if old.get(&tf.fieldname) != new.get(&tf.fieldname) && !tf.allow_on_submit {
                    return Err(Error::Validation(format!(
                        "Not allowed to change {} after submission",
                        tf.label()
                    )));
                }
            }
            Ok(())
        }
        (2, _) => Err(Error::Validation(format!(
            "Cannot edit a cancelled {}: amend it instead",
            dt.name
        ))),
        (a, b) => Err(Error::Validation(format!(
            "Cannot change docstatus of {} from {a} to {b}",
            dt.name
        ))),
    }
}

impl Site {
    /// Submits (1) or cancels (2) a document.
    pub async fn set_docstatus(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        status: i64,
    ) -> Result<Doc> {
        let mut patch = Doc::new();
        patch.insert("docstatus".into(), Value::from(status));
        let dt = self.meta().get(doctype)?;
        if !dt.is_submittable {
            return Err(Error::Validation(format!("{doctype} is not submittable")));
        }
        self.update_doc(caller, doctype, name, patch, &WriteFlags::default())
            .await
    }
}
