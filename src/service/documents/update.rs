//! Updates: a partial update merged over the stored document (child tables sent are replaced
//! as given), the type's hooks around the row, only changed child tables rewritten, and the
//! change log last with the diff. Nothing is written when nothing changed.
//! Must not take a seq for an empty change (the change log is not called then).

use super::children::{assemble, duplicate, write_children};
use super::defaults::fetch_linked;
use super::docstatus::check_docstatus_change;
use super::fields::{check_mandatory, check_set_only_once, merge_fields};
use super::links::check_links;
use super::secrets::store_secrets;
use super::{
    docstatus_of, is_empty, load_doc_for_update, name_text, not_found, requested_docstatus,
    Pending, WriteFlags,
};
use crate::error::{Error, Result};
use crate::meta::PermType;
use crate::service::hooks::{self, Change, Write};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use serde_json::Value;

impl Site {
    /// Applies a partial update; child tables sent are replaced as given.
    pub async fn update_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        mut patch: Doc,
        flags: &WriteFlags,
    ) -> Result<Doc> {
        let mut reg = self.meta();
        let dt = reg.get(doctype)?;
        if dt.issingle {
            return self.update_single(caller, &dt, patch).await;
        }
        let hooks = hooks::of(self)?;
        if !hooks.of(&dt.name).is_empty() {
            let w = Write {
                site: self,
                reg: &reg,
                caller,
                dt: &dt,
            };
            for h in hooks.of(&dt.name) {
                h.prepare_update(&w, name, &mut patch).await?;
            }
            // Preparing may have made types: the update sees them.
            reg = self.meta();
        }
        let mut tx = self.store.begin().await?;
        let w = Write {
            site: self,
            reg: &reg,
            caller,
            dt: &dt,
        };
        let (doc, pending) = update_in(&w, &mut tx, name, patch, flags).await?;
        tx.commit().await?;
        self.after_commit(pending).await?;
        Ok(doc)
    }
}

/// Updates inside the caller's transaction.
pub async fn update_in(
    w: &Write<'_>,
    conn: &mut Conn,
    name: &str,
    patch: Doc,
    flags: &WriteFlags,
) -> Result<(Doc, Pending)> {
    let Write {
        reg, caller, dt, ..
    } = *w;
    if !flags.ignore_permissions {
        caller.require(dt, PermType::Write)?;
    }
    if dt.istable {
        return Err(Error::Validation(format!(
            "{} is a child table type: update its rows through their parent document",
            dt.name
        )));
    }
    let old = load_doc_for_update(conn, reg, dt, name)
        .await?
        .ok_or_else(|| not_found(dt, name))?;
    update_loaded(w, conn, old, patch, flags).await
}

/// Updates a document the caller has just read in this transaction (`old`, as
/// [`super::load_doc`] returns it), sparing a second read.
pub async fn update_loaded(
    w: &Write<'_>,
    conn: &mut Conn,
    old: Doc,
    patch: Doc,
    flags: &WriteFlags,
) -> Result<(Doc, Pending)> {
    let Write {
        site,
        reg,
        caller,
        dt,
    } = *w;
    let hooks = hooks::of(site)?;
    if !flags.ignore_permissions {
        caller.require(dt, PermType::Write)?;
    }
    let name = &name_text(old.get("name").unwrap_or(&Value::Null));
    if let Some(m) = patch
        .get("modified")
        .map(name_text)
        .filter(|m| !m.is_empty())
    {
        let stored = old.get("modified").map(name_text).unwrap_or_default();
        let sent = crate::time::normalize_datetime(&m).unwrap_or(m);
        if !flags.keep_timestamps && sent < stored {
            return Err(Error::TimestampMismatch(format!(
                "Document has been modified after you have opened it ({sent} < {stored}). Please reload and try again."
            )));
        }
    }
    let mut adjusted = flags.clone();
    for h in hooks.of(&dt.name) {
        h.flags_for_update(&patch, &mut adjusted);
    }
    let flags = &adjusted;
    let mut pending = Pending {
        applied: flags.origin.is_some() && !flags.mapped,
        ..Default::default()
    };
    let mut doc = old.clone();
    merge_fields(reg, dt, &mut doc, &patch, flags, &mut pending)?;
    if !flags.ignore_permissions {
        crate::service::files::check_attachments(conn, reg, caller, dt, &doc, Some(&old)).await?;
    }
    if !pending.applied {
        check_set_only_once(dt, &old, &doc)?;
        fetch_linked(conn, reg, dt, &mut doc, Some(&old)).await?;
    }
    let old_status = docstatus_of(&old);
    let new_status = requested_docstatus(&patch)?.unwrap_or(old_status);
    check_docstatus_change(w, &old, &doc, (old_status, new_status), flags)?;
    doc.insert("docstatus".into(), Value::from(new_status));
    w.validate(&hooks, conn, &mut doc, Some(&old), &mut pending)
        .await?;
    let changed = crate::service::diff::diff(reg, dt, &old, &doc)?;
    if changed.is_empty() && pending.secrets.is_empty() && pending.login_password.is_none() {
        return Ok((old, pending));
    }
    let now = site.clock.now();
    let modified = if flags.keep_timestamps && !is_empty(patch.get("modified")) {
        patch["modified"].clone()
    } else {
        Value::String(now.clone())
    };
    doc.insert("modified".into(), modified);
    doc.insert("modified_by".into(), Value::String(caller.user.clone()));
    check_mandatory(reg, dt, &doc, &flags.unenforced)?;
    let streamed = match flags.ignore_links {
        false => check_links(conn, reg, dt, &doc, hooks.change_log()).await?,
        true => None,
    };
    let mut cols = Doc::new();
    for (k, v) in &doc {
        if k != "name" && dt.has_column(k) {
            cols.insert(k.clone(), v.clone());
        }
    }
    store::update_columns(conn, dt, &old["name"], &cols)
        .await
        .map_err(|e| duplicate(dt, &doc, e))?;
    // Only tables whose rows changed are rewritten (all of them when docstatus changes,
    // since rows carry it).
    let all = changed.changed.contains_key("docstatus");
    let touched: Vec<String> = dt
        .table_fields()
        .filter(|tf| {
            all || changed.added.contains_key(&tf.fieldname)
                || changed.removed.contains_key(&tf.fieldname)
                || changed.row_changed.contains_key(&tf.fieldname)
        })
        .map(|tf| tf.fieldname.clone())
        .collect();
    let children = write_children(conn, reg, dt, &doc, &now, &caller.user, Some(&touched)).await?;
    store_secrets(site, conn, caller, dt, name, &pending).await?;
    w.after_write(&hooks, conn, &doc, Some(&old), &mut pending)
        .await?;
    let mut saved = assemble(dt, &doc, children);
    for tf in dt.table_fields() {
        if !touched.contains(&tf.fieldname) {
            saved.insert(
                tf.fieldname.clone(),
                old.get(&tf.fieldname)
                    .cloned()
                    .unwrap_or(Value::Array(vec![])),
            );
        }
    }
    pending.logs_written |= w
        .record(
            &hooks,
            conn,
            Change::Update(name, &changed),
            flags,
            streamed,
        )
        .await?;
    Ok((saved, pending))
}
