//! Inserts: one document or several in one transaction, the type's hooks around the row,
//! its name (naming rules, amendments), and the change log last.
//! Must not call other sites inside the transaction: a type's work with another site is its
//! `prepare_insert`, before it.

use super::children::{assemble, duplicate, write_children};
use super::defaults::{apply_defaults, fetch_linked, resolve_dynamic_defaults};
use super::fields::{check_mandatory, merge_fields};
use super::links::LinkCheck;
use super::secrets::store_secrets;
use super::{is_empty, load_doc, name_text, name_value, requested_docstatus, Pending, WriteFlags};
use crate::error::{Error, Result};
use crate::meta::{DocType, PermType, Registry};
use crate::service::hooks::{self, Change, Write};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use serde_json::Value;

impl Site {
    /// Inserts a document and returns it as stored.
    pub async fn insert_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        input: Doc,
        flags: &WriteFlags,
    ) -> Result<Doc> {
        let dt = self.meta().get(doctype)?;
        if dt.issingle {
            return self.update_single(caller, &dt, input).await;
        }
        let mut saved = self
            .insert_docs(caller, vec![(doctype.to_string(), input)], flags)
            .await?;
        saved
            .pop()
            .ok_or_else(|| Error::Internal("insert returned no document".into()))
    }

    /// Inserts documents `(doctype, document)` in one transaction: all of them or none.
    pub async fn insert_docs(
        &self,
        caller: &Caller,
        inputs: Vec<(String, Doc)>,
        flags: &WriteFlags,
    ) -> Result<Vec<Doc>> {
        let reg = self.meta();
        let hooks = hooks::of(self)?;
        // Types that must talk to another site first (Event Producer) do it before the
        // transaction, and undo it if the transaction fails.
        let mut work = Vec::with_capacity(inputs.len());
        let mut failed = None;
        'inputs: for (doctype, mut input) in inputs {
            let dt = match reg.get(&doctype) {
                Ok(dt) if dt.issingle => Err(Error::Validation(format!(
                    "{doctype} is a single: save it with frappe.client.save, not insert"
                ))),
                other => other,
            };
            let dt = match dt {
                Ok(dt) => dt,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let mut flags = flags.clone();
            let w = Write {
                site: self,
                reg: &reg,
                caller,
                dt: &dt,
            };
            let mut prepared = Vec::new();
            for h in hooks.of(&dt.name) {
                match h.prepare_insert(&w, &mut input, &mut flags).await {
                    Ok(p) => prepared.extend(p),
                    Err(e) => {
                        failed = Some(e);
                        work.push((dt, input, flags, prepared));
                        break 'inputs;
                    }
                }
            }
            work.push((dt, input, flags, prepared));
        }
        // Preparing may have made types (an Event Producer's rows): check links against them.
        let reg = self.meta();
        let result = match failed {
            Some(e) => Err(e),
            None => {
                async {
                    let mut tx = self.store.begin().await?;
                    let mut done = Vec::with_capacity(work.len());
                    for (dt, input, flags, prepared) in &work {
                        let w = Write {
                            site: self,
                            reg: &reg,
                            caller,
                            dt,
                        };
                        let (doc, mut pending) =
                            insert_in(&w, &mut tx, input.clone(), flags).await?;
                        for p in prepared {
                            p.finish(&w, &mut tx, &doc, &mut pending).await?;
                        }
                        done.push((doc, pending));
                    }
                    tx.commit().await?;
                    Ok::<_, Error>(done)
                }
                .await
            }
        };
        match result {
            Ok(done) => {
                let mut saved = Vec::with_capacity(done.len());
                for (doc, pending) in done {
                    self.after_commit(pending).await?;
                    saved.push(doc);
                }
                Ok(saved)
            }
            Err(e) => {
                for (.., prepared) in work {
                    for p in prepared {
                        p.undo(self).await;
                    }
                }
                Err(e)
            }
        }
    }
}

/// Inserts inside the caller's transaction.
pub async fn insert_in(
    w: &Write<'_>,
    conn: &mut Conn,
    mut input: Doc,
    flags: &WriteFlags,
) -> Result<(Doc, Pending)> {
    let Write {
        site,
        reg,
        caller,
        dt,
    } = *w;
    let hooks = hooks::of(site)?;
    // Permission first: a caller who may not write a child type is told so (403), not
    // how to write it.
    if !flags.ignore_permissions {
        caller.require(dt, PermType::Create)?;
    }
    if dt.istable {
        return Err(Error::Validation(format!(
            "{} is a child table type: insert its rows through their parent document",
            dt.name
        )));
    }
    let mut pending = Pending {
        applied: flags.origin.is_some() && !flags.mapped,
        ..Default::default()
    };
    if !pending.applied {
        resolve_dynamic_defaults(site, caller, dt, &mut input);
    }
    let mut doc = Doc::new();
    merge_fields(reg, dt, &mut doc, &input, flags, &mut pending)?;
    if !flags.ignore_permissions {
        crate::service::files::check_attachments(conn, reg, caller, dt, &doc, None).await?;
    }
    if !pending.applied {
        apply_defaults(dt, &mut doc);
        fetch_linked(conn, reg, dt, &mut doc, None).await?;
    }
    let docstatus = requested_docstatus(&input)?.unwrap_or(0);
    match docstatus {
        0 => {}
        1 if dt.is_submittable => {
            if !flags.ignore_permissions {
                caller.require(dt, PermType::Submit)?;
            }
        }
        _ => {
            return Err(Error::Validation(format!(
                "A new {} cannot have docstatus {docstatus}",
                dt.name
            )))
        }
    }
    let now = site.clock.now();
    let user = caller.user.clone();
    let given = input.get("name").map(name_text).filter(|n| !n.is_empty());
    if let Some(g) = &given {
        if flags.keep_name || dt.is_prompt_named() {
            doc.insert("name".into(), Value::String(g.clone()));
        }
    }
    if !pending.applied {
        if let Some(from) = input
            .get("amended_from")
            .map(name_text)
            .filter(|n| !n.is_empty())
        {
            let name = amended_name(conn, reg, dt, &from).await?;
            if doc.get("name").map(name_text).is_none_or(|n| n.is_empty()) {
                doc.insert("name".into(), Value::String(name));
            }
            doc.insert("amended_from".into(), Value::String(from));
        }
    }
    // Type rules see the docstatus the document is saved with (a submit on insert).
    doc.insert("docstatus".into(), Value::from(docstatus));
    w.validate(&hooks, conn, &mut doc, None, &mut pending)
        .await?;
    let name = match doc.get("name").map(name_text).filter(|n| !n.is_empty()) {
        Some(n) => name_value(dt, &n),
        None => crate::service::naming::new_name(conn, dt, &doc, None, &site.clock.today()).await?,
    };
    let name_str = name_text(&name);
    check_name(&name_str)?;
    if flags.keep_name && given.is_some() {
        crate::service::naming::note_given_name(conn, dt, &doc, &name_str, &site.clock.today())
            .await?;
    }
    doc.insert("name".into(), name);
    for (k, v) in [
        ("owner", &user),
        ("modified_by", &user),
        ("creation", &now),
        ("modified", &now),
    ] {
        let keep = flags.keep_timestamps && !is_empty(input.get(k));
        doc.insert(
            k.into(),
            if keep {
                input[k].clone()
            } else {
                Value::String(v.clone())
            },
        );
    }
    doc.insert("docstatus".into(), Value::from(docstatus));
    doc.insert("idx".into(), Value::from(0));
    check_mandatory(reg, dt, &doc, &flags.unenforced)?;
    // The link look-up and the insert go as one statement where the store can.
    let mut check = (!flags.ignore_links)
        .then(|| LinkCheck::new(reg, dt, &doc, hooks.change_log()))
        .transpose()?;
    let streamed = match check.as_mut().and_then(LinkCheck::take_guard) {
        Some(guard) => {
            let rows = store::insert_row_guarded(conn, dt, &doc, guard)
                .await
                .map_err(|e| duplicate(dt, &doc, e))?;
            check.map(|c| c.verdict(&rows)).transpose()?.flatten()
        }
        None => {
            let streamed = match check {
                Some(c) => c.run(conn).await?,
                None => None,
            };
            store::insert_row(conn, dt, &doc)
                .await
                .map_err(|e| duplicate(dt, &doc, e))?;
            streamed
        }
    };
    let children = write_children(conn, reg, dt, &doc, &now, &user, None).await?;
    store_secrets(site, conn, caller, dt, &name_str, &pending).await?;
    w.after_write(&hooks, conn, &doc, None, &mut pending)
        .await?;
    let saved = assemble(dt, &doc, children);
    pending.logs_written |= w
        .record(&hooks, conn, Change::Insert(&saved), flags, streamed)
        .await?;
    Ok((saved, pending))
}

/// The name of an amendment of `from`, as Frappe names it: `from-1`, and `root-(n+1)` when
/// `from` is itself the amendment `root-n`. Only a cancelled document may be amended.
async fn amended_name(conn: &mut Conn, reg: &Registry, dt: &DocType, from: &str) -> Result<String> {
    if !dt.is_submittable || dt.field("amended_from").is_none() {
        return Err(Error::Validation(format!(
            "{} cannot be amended: only a submittable type with an amended_from field can",
            dt.name
        )));
    }
    let source = load_doc(conn, reg, dt, from).await?.ok_or_else(|| {
        Error::Validation(format!(
            "Cannot amend {} {from}: it does not exist",
            dt.name
        ))
    })?;
    if source.get("docstatus").and_then(Value::as_i64) != Some(2) {
        return Err(Error::Validation(format!(
            "Cannot amend {} {from}: only a cancelled document can be amended",
            dt.name
        )));
    }
    let amended = source
        .get("amended_from")
        .map(name_text)
        .is_some_and(|a| !a.is_empty());
    Ok(match from.rsplit_once('-') {
        Some((root, n)) if amended => match n.parse::<u64>() {
            Ok(n) => format!("{root}-{}", n + 1),
            Err(_) => format!("{from}-1"),
        },
        _ => format!("{from}-1"),
    })
}

/// Refuses names that cannot be used in a URL path or that look like an attack.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Validation("Name cannot be empty".into()));
    }
    if name.len() > 140 {
        return Err(Error::Validation(format!(
            "Name is too long ({} characters; at most 140)",
            name.len()
        )));
    }
    if name.ends_with('/')
        || name.contains('\0')
        || name.chars().any(|c| c.is_control())
        || name.split('/').any(|p| p == ".." || p == ".")
    {
        return Err(Error::Validation(format!("Name {name:?} is not allowed: no control characters, no trailing \"/\" and no \".\" or \"..\" path parts")));
    }
    Ok(())
}
