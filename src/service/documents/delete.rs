//! Deletes: refused for child rows, singles, submitted documents and documents others link
//! to; the type's hooks first, the document's attached Files with it, the change log last.
//! Must not delete anything outside the one transaction it is given.

use super::links::check_not_linked;
use super::{docstatus_of, load_doc_for_update, not_found, Pending, WriteFlags};
use crate::error::{Error, Result};
use crate::meta::PermType;
use crate::service::hooks::{self, Change, Write};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Param};

impl Site {
    /// Deletes a document; refused while another document links to it.
    pub async fn delete_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        flags: &WriteFlags,
    ) -> Result<()> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        let mut tx = self.store.begin().await?;
        let w = Write {
            site: self,
            reg: &reg,
            caller,
            dt: &dt,
        };
        let pending = delete_in(&w, &mut tx, name, flags).await?;
        tx.commit().await?;
        self.after_commit(pending).await?;
        Ok(())
    }
}

/// Deletes inside the caller's transaction.
pub async fn delete_in(
    w: &Write<'_>,
    conn: &mut Conn,
    name: &str,
    flags: &WriteFlags,
) -> Result<Pending> {
    let Write {
        site,
        reg,
        caller,
        dt,
    } = *w;
    let hooks = hooks::of(site)?;
    if !flags.ignore_permissions {
        caller.require(dt, PermType::Delete)?;
    }
    if dt.istable || dt.issingle {
        return Err(Error::Validation(format!(
            "{} documents cannot be deleted on their own",
            dt.name
        )));
    }
    let doc = load_doc_for_update(conn, reg, dt, name)
        .await?
        .ok_or_else(|| not_found(dt, name))?;
    if docstatus_of(&doc) == 1 {
        return Err(Error::Validation(format!(
            "Submitted {} {name} cannot be deleted: cancel it first",
            dt.name
        )));
    }
    let mut pending = Pending::default();
    w.before_delete(&hooks, conn, &doc, &mut pending).await?;
    // Its attachments go with it.
    let attached = crate::service::files::attached_files(conn, &dt.name, name).await?;
    if !attached.is_empty() {
        let file_dt = reg.get("File")?;
        let admin = Caller::administrator();
        let all = WriteFlags {
            ignore_permissions: true,
            ..Default::default()
        };
        for f in attached {
            let files = Write {
                site,
                reg,
                caller: &admin,
                dt: &file_dt,
            };
            let p = Box::pin(delete_in(&files, conn, &f, &all)).await?;
            pending.logs_written |= p.logs_written;
        }
    }
    check_not_linked(conn, reg, dt, name).await?;
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        store::delete_child_rows(conn, &child, &dt.name, name, &tf.fieldname).await?;
    }
    store::delete_row(conn, dt, &doc["name"]).await?;
    store::execute(
        conn,
        r#"DELETE FROM "__Auth" WHERE doctype = $1 AND name = $2"#,
        &[Param::text(&dt.name), Param::text(name)],
    )
    .await?;
    pending.logs_written |= w
        .record(&hooks, conn, Change::Delete(&doc), flags, None)
        .await?;
    Ok(pending)
}
