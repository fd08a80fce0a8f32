//! Renames: the row, its child rows, every Link and Dynamic Link to it and its secrets move to
//! the new name in one transaction; the change log records the rename.
//! Must not rename child rows, singles, users or types: refused.

use super::insert::check_name;
use super::{load_doc, load_doc_for_update, not_found, Pending, WriteFlags};
use crate::error::{Error, Result};
use crate::meta::PermType;
use crate::meta::Storage;
use crate::service::hooks::{self, Change, Write};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use serde_json::Value;

impl Site {
    /// Renames a document and rewrites every Link and Dynamic Link to it.
    pub async fn rename_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        old: &str,
        new: &str,
        flags: &WriteFlags,
    ) -> Result<String> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        let mut tx = self.store.begin().await?;
        let w = Write {
            site: self,
            reg: &reg,
            caller,
            dt: &dt,
        };
        let logged = rename_in(&w, &mut tx, old, new, flags).await?;
        tx.commit().await?;
        self.after_commit(Pending {
            logs_written: logged,
            ..Default::default()
        })
        .await?;
        Ok(new.to_string())
    }
}

/// Renames inside the caller's transaction; true when the change log wrote a log.
pub async fn rename_in(
    w: &Write<'_>,
    conn: &mut Conn,
    old: &str,
    new: &str,
    flags: &WriteFlags,
) -> Result<bool> {
    let Write {
        site,
        reg,
        caller,
        dt,
    } = *w;
    if !flags.ignore_permissions {
        caller.require(dt, PermType::Write)?;
    }
    let new = new.trim();
    check_name(new)?;
    if dt.istable
        || dt.issingle
        || dt.column_storage("name") == Storage::Int
        || matches!(dt.name.as_str(), "DocType" | "User")
    {
        return Err(Error::Validation(format!(
            "{} documents cannot be renamed",
            dt.name
        )));
    }
    let before = load_doc_for_update(conn, reg, dt, old)
        .await?
        .ok_or_else(|| not_found(dt, old))?;
    if old == new {
        return Ok(false);
    }
    if store::row_exists(conn, dt, &Value::String(new.into())).await? {
        return Err(Error::DuplicateEntry(format!(
            "{} {new} already exists",
            dt.name
        )));
    }
    let q = store::q;
    let p = |s: &str| store::Param::Text(Some(s.to_string()));
    let mut set_name = Doc::new();
    set_name.insert("name".into(), Value::String(new.into()));
    if let Some(field) = dt.autoname.strip_prefix("field:") {
        if dt.field(field).is_some() {
            set_name.insert(field.to_string(), Value::String(new.into()));
        }
    }
    set_name.insert("modified".into(), Value::String(site.clock.now()));
    set_name.insert("modified_by".into(), Value::String(caller.user.clone()));
    store::update_columns(conn, dt, &Value::String(old.into()), &set_name).await?;
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        store::execute(
            conn,
            &format!(
                "UPDATE {} SET parent = $1 WHERE parent = $2 AND parenttype = $3",
                q(&child.table())
            ),
            &[p(new), p(old), p(&dt.name)],
        )
        .await?;
    }
    for l in reg.links_to(&dt.name) {
        let holder = reg.get(&l.doctype)?;
        if holder.issingle {
            continue;
        }
        let mut sql = format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2",
            q(&holder.table()),
            q(&l.fieldname),
            q(&l.fieldname)
        );
        let mut params = vec![p(new), p(old)];
        if let Some(tf) = &l.dynamic_type_field {
            sql.push_str(&format!(" AND {} = $3", q(tf)));
            params.push(p(&dt.name));
        }
        store::execute(conn, &sql, &params).await?;
    }
    store::execute(
        conn,
        r#"UPDATE "__Auth" SET name = $1 WHERE doctype = $2 AND name = $3"#,
        &[p(new), p(&dt.name), p(old)],
    )
    .await?;
    let after = load_doc(conn, reg, dt, new)
        .await?
        .ok_or_else(|| not_found(dt, new))?;
    w.record(
        &*hooks::of(site)?,
        conn,
        Change::Rename(&before, &after),
        flags,
        None,
    )
    .await
}
