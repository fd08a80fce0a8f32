//! What an update means here: a Create inserts the producer's document (or matches the copy
//! synced before), an Update patches the local copy with Frappe's diff (renames included), a
//! Delete deletes it (cancelling a submitted one first); dependencies, mappings and local names
//! are resolved on the way.
//! Must not write sync logs (`batch.rs` does) nor move the checkpoint (`mod.rs` does).

use super::*;

pub(super) fn strip_dunder(v: &Value) -> Doc {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.retain(|k, _| !k.starts_with("__"));
    for (_, val) in m.iter_mut() {
        if let Value::Array(rows) = val {
            for r in rows.iter_mut() {
                if let Value::Object(o) = r {
                    o.retain(|k, _| !k.starts_with("__"));
                }
            }
        }
    }
    m
}

/// Finds the local copy of a producer document: by name, or by remote_docname + remote_site_name.
pub(super) async fn find_local(
    conn: &mut Conn,
    dt: &DocType,
    info: &ProducerInfo,
    sub: &SubscribedType,
    docname: &str,
) -> Result<Option<String>> {
    if sub.use_same_name {
        return Ok(store::row_exists(conn, dt, &Value::String(docname.into()))
            .await?
            .then(|| docname.to_string()));
    }
    if dt.field("remote_docname").is_none() {
        return Ok(None);
    }
    let rows = store::fetch_docs(
        conn,
        &format!(
            r#"SELECT name FROM {} WHERE remote_docname = $1 AND remote_site_name = $2 LIMIT 1"#,
            store::q(&dt.table())
        ),
        &[
            Param::Text(Some(docname.into())),
            Param::Text(Some(info.url.clone())),
        ],
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| name_text(r.get("name").unwrap_or(&Value::Null))))
}

pub(super) async fn synced_from_producer(
    conn: &mut Conn,
    info: &ProducerInfo,
    sub: &SubscribedType,
    docname: &str,
) -> Result<bool> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT 1 AS hit FROM "tabEvent Sync Log" WHERE event_producer = $1 AND ref_doctype = $2 AND producer_doc = $3 AND status = 'Synced' LIMIT 1"#,
        &[Param::Text(Some(info.url.clone())), Param::Text(Some(sub.local_type.clone())), Param::Text(Some(docname.into()))],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// Applies one update; the local name of the document it touched.
pub(super) async fn apply_one(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    known: &mut Known,
) -> Result<String> {
    let Applying {
        reg, info, remote, ..
    } = *a;
    if let Some(bytes) = inc.data.get("__too_large").and_then(Value::as_u64) {
        return Err(Error::TooLarge(format!(
            "update log {} ({} {}, {} {bytes} bytes) is larger than {}'s page bound and was not sent: raise max_body_bytes or max_file_bytes there",
            inc.seq.map(|s| s.to_string()).unwrap_or_default(),
            inc.remote_type,
            inc.docname,
            inc.update_type,
            info.url
        )));
    }
    super::held::check_held(a, sub, inc)?;
    let dt = reg.get(&sub.local_type)?;
    let origin = if inc.origin.is_empty() {
        info.url.clone()
    } else {
        inc.origin.clone()
    };
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: sub.use_same_name,
        keep_timestamps: false,
        ignore_links: false,
        origin: Some(origin),
        mapped: sub.mapping.is_some(),
        unenforced: Vec::new(),
    };
    let target = Target {
        sub,
        dt: &dt,
        flags: &flags,
    };
    if let Some(note) = super::resent::sent_again(a, conn, sub, inc, known).await? {
        known.add_note(note);
        return Ok(find_local(conn, &dt, info, sub, &inc.docname)
            .await?
            .unwrap_or_else(|| inc.docname.clone()));
    }
    match inc.update_type.as_str() {
        "Create" => {
            let mut whole = strip_dunder(&inc.data);
            // A by-time producer's new Create of a document held here from it: its history
            // changed (`resent.rs`).
            if inc.seq.is_none() && known.repair.is_none() && sub.mapping.is_none() {
                if let Some(local) = find_local(conn, &dt, info, sub, &inc.docname).await? {
                    if synced_from_producer(conn, info, sub, &inc.docname).await? {
                        super::resent::with_emptied(a, conn, sub, &inc.docname, &mut whole).await?;
                        let doc = to_local(a, conn, sub, known, whole).await?;
                        super::conflict::create_over(a, conn, &target, &local, &doc, known, true)
                            .await?;
                        return Ok(local);
                    }
                }
            }
            apply_whole(a, conn, &target, known, &inc.docname, whole).await
        }
        "Update" => {
            let old_name = inc
                .data
                .get("old_name")
                .map(|v| text(Some(v)))
                .filter(|s| !s.is_empty());
            let lookup = old_name.clone().unwrap_or_else(|| inc.docname.clone());
            let kept = known
                .kept_both
                .get(&(dt.name.clone(), lookup.clone()))
                .cloned();
            // The usual Update (same name, no rename) reads its document once: the read that
            // locks it also tells that it is here.
            let plain = kept.is_none() && old_name.is_none() && sub.use_same_name;
            let mut loaded = match plain {
                true => load_doc_for_update(conn, reg, &dt, &lookup).await?,
                false => None,
            };
            let found = match (&loaded, plain, kept) {
                (Some(_), _, _) => Some(lookup.clone()),
                (None, true, _) => None,
                (None, false, Some(k)) => Some(k),
                (None, false, None) => find_local(conn, &dt, info, sub, &lookup).await?,
            };
            let Some(local) = found else {
                if old_name.is_some()
                    && find_local(conn, &dt, info, sub, &inc.docname)
                        .await?
                        .is_some()
                {
                    return Ok(inc.docname.clone());
                }
                let whole = strip_dunder(&remote.get_doc(&inc.remote_type, &inc.docname).await?);
                return apply_whole(a, conn, &target, known, &inc.docname, whole).await;
            };
            let mut local = local;
            if let Some(old) = old_name {
                if sub.use_same_name {
                    known.present.remove(&(dt.name.clone(), old.clone()));
                    known.absent.remove(&(dt.name.clone(), inc.docname.clone()));
                    documents::rename_in(&a.write(&dt), conn, &old, &inc.docname, &flags).await?;
                    local = inc.docname.clone();
                } else {
                    let mut p = Doc::new();
                    p.insert("remote_docname".into(), json!(inc.docname));
                    store::update_columns(conn, &dt, &Value::String(local.clone()), &p).await?;
                }
            }
            let current = match loaded.take() {
                Some(doc) => doc,
                None => load_doc_for_update(conn, reg, &dt, &local)
                    .await?
                    .ok_or_else(|| Error::DoesNotExist(format!("{} {local} vanished", dt.name)))?,
            };
            let mut diff = match &sub.mapping {
                None => inc.data.clone(),
                Some(m) => m.map_diff(reg, &inc.data)?,
            };
            // Only what the producer sent carries producer names; the rest is local already.
            let incoming = incoming_part(reg, &dt, &current, &diff);
            sync_dependencies(a, conn, known, &dt, &incoming).await?;
            let names = local_names(conn, reg, info, &dt, &incoming).await?;
            rename_links_in_diff(reg, &dt, &mut diff, &names);
            let mut patch = patch_from_diff(&dt, &current, &diff);
            if let Some(m) = &sub.mapping {
                if m.document_rows().any(|r| m.diff_touches(r, &inc.data)) {
                    // The rows' filters read fields the diff does not carry.
                    let whole =
                        strip_dunder(&remote.get_doc(&inc.remote_type, &inc.docname).await?);
                    let mut links = Doc::new();
                    resolve_document_rows(a, conn, known, m, &whole, &mut links).await?;
                    patch.extend(links);
                }
            }
            super::conflict::settle(a, conn, &target, &local, Some(&current), &mut patch, known)
                .await?;
            if !patch.is_empty() {
                // Every link target exists now (the producer validated the rest).
                let f = WriteFlags {
                    ignore_links: true,
                    ..flags.clone()
                };
                let relaxed = as_sent(a, known, &dt, &f, &patch, |k| {
                    patch.get(k).or_else(|| current.get(k))
                })
                .await?;
                let f = relaxed.unwrap_or(f);
                documents::update_loaded(&a.write(&dt), conn, current, patch, &f).await?;
            }
            Ok(local)
        }
        "Delete" => match match known.kept_both.get(&(dt.name.clone(), inc.docname.clone())) {
            Some(k) => Some(k.clone()),
            None => find_local(conn, &dt, info, sub, &inc.docname).await?,
        } {
            Some(local) => {
                let d = load_doc(conn, reg, &dt, &local).await?.unwrap_or_default();
                if super::conflict::delete_edited(conn, sub, &dt, &local, &d, known).await? {
                    return Ok(local);
                }
                if d.get("docstatus").and_then(Value::as_i64) == Some(1) {
                    let mut p = Doc::new();
                    p.insert("docstatus".into(), json!(2));
                    documents::update_in(&a.write(&dt), conn, &local, p, &flags).await?;
                }
                documents::delete_in(&a.write(&dt), conn, &local, &flags).await?;
                known.present.remove(&(dt.name.clone(), local.clone()));
                Ok(local)
            }
            None => Ok(inc.docname.clone()),
        },
        other => Err(Error::Validation(format!("unknown update_type {other:?}"))),
    }
}

/// Where an update goes: its subscription, the local type and the flags it is written with.
pub(super) struct Target<'a> {
    pub sub: &'a SubscribedType,
    pub dt: &'a DocType,
    pub flags: &'a WriteFlags,
}

/// Applies a whole producer document (a Create, or an Update of a document missing here):
/// mapped if the row has a mapping, then inserted or matched to its local copy.
async fn apply_whole(
    a: &Applying<'_>,
    conn: &mut Conn,
    t: &Target<'_>,
    known: &mut Known,
    docname: &str,
    whole: Doc,
) -> Result<String> {
    let doc = to_local(a, conn, t.sub, known, whole).await?;
    upsert(a, conn, t, known, docname, doc).await
}

/// Inserts a producer document, or updates the local copy to match it when it was synced before.
async fn upsert(
    a: &Applying<'_>,
    conn: &mut Conn,
    t: &Target<'_>,
    known: &mut Known,
    docname: &str,
    mut doc: Doc,
) -> Result<String> {
    let Target { sub, dt, flags } = *t;
    let (reg, info) = (a.reg, a.info);
    sync_dependencies(a, conn, known, dt, &doc).await?;
    let names = local_names(conn, reg, info, dt, &doc).await?;
    rename_links(reg, dt, &mut doc, &names);
    // Every link target exists now (the producer validated the rest).
    let flags = &WriteFlags {
        ignore_links: true,
        ..flags.clone()
    };
    let key = (dt.name.clone(), docname.to_string());
    let kept = known.kept_both.get(&key).cloned();
    let here = if let Some(k) = &kept {
        store::row_exists(conn, dt, &Value::String(k.clone()))
            .await?
            .then(|| k.clone())
    } else if sub.use_same_name && known.absent.contains(&key) {
        None
    } else {
        find_local(conn, dt, info, sub, docname).await?
    };
    if let Some(local) = here {
        if sub.use_same_name
            && !known
                .synced
                .contains_key(&(sub.local_type.clone(), docname.to_string()))
            && !synced_from_producer(conn, info, sub, docname).await?
        {
            if super::echo::is_echo(a, conn, dt, docname, &doc).await? {
                known.note = Some(super::echo::merge_echo(a, conn, dt, &local, &doc, flags).await?);
                return Ok(local);
            }
            super::conflict::create_over(a, conn, t, &local, &doc, known, false).await?;
            return Ok(local);
        }
        if known.replaying {
            super::replay::check_same_document(a, conn, dt, &local, &doc).await?;
        }
        for k in super::conflict::OWN_KEYS {
            doc.remove(k);
        }
        super::conflict::settle(a, conn, t, &local, None, &mut doc, known).await?;
        let mut f = flags.clone();
        f.keep_timestamps = false;
        if let Some(relaxed) = as_sent(a, known, dt, &f, &doc, |k| doc.get(k)).await? {
            f = relaxed;
        }
        documents::update_in(&a.write(dt), conn, &local, doc, &f).await?;
        return Ok(local);
    }
    if let Some(k) = kept {
        // Kept both: the producer's document goes in under the name chosen for it.
        doc.insert("name".into(), json!(k));
    } else if !sub.use_same_name {
        doc.remove("name");
        doc.insert("remote_docname".into(), json!(docname));
        doc.insert("remote_site_name".into(), json!(info.url));
    }
    known.absent.remove(&key);
    insert_as_on_producer(a, conn, dt, doc, flags, known).await
}

/// Inserts a document as the producer has it, owned and stamped by this site. A new document
/// cannot start cancelled, so a cancelled one is inserted submitted and then cancelled.
/// Returns its local name.
pub(super) async fn insert_as_on_producer(
    a: &Applying<'_>,
    conn: &mut Conn,
    dt: &DocType,
    mut doc: Doc,
    flags: &WriteFlags,
    known: &mut Known,
) -> Result<String> {
    for k in ["owner", "creation", "modified", "modified_by", "doctype"] {
        doc.remove(k);
    }
    let cancelled = doc.get("docstatus").and_then(Value::as_i64) == Some(2);
    if cancelled {
        doc.insert("docstatus".into(), json!(1));
    }
    let relaxed = as_sent(a, known, dt, flags, &doc, |f| doc.get(f)).await?;
    let flags = relaxed.as_ref().unwrap_or(flags);
    let (saved, _) = documents::insert_in(&a.write(dt), conn, doc, flags).await?;
    let local = name_text(&saved["name"]);
    if cancelled {
        let mut p = Doc::new();
        p.insert("docstatus".into(), json!(2));
        documents::update_loaded(&a.write(dt), conn, saved, p, flags).await?;
    }
    Ok(local)
}

/// Turns Frappe's diff into a patch of the local document (child tables given whole).
fn patch_from_diff(dt: &DocType, current: &Doc, diff: &Value) -> Doc {
    let mut patch = Doc::new();
    if let Some(changed) = diff.get("changed").and_then(Value::as_object) {
        for (k, v) in changed {
            if k != "name" {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    for tf in dt.table_fields() {
        let f = &tf.fieldname;
        let part = |key: &str| {
            diff.get(key)
                .and_then(|p| p.get(f))
                .and_then(Value::as_array)
                .cloned()
        };
        let (added, removed, changed) = (part("added"), part("removed"), part("row_changed"));
        if added.is_none() && removed.is_none() && changed.is_none() {
            continue;
        }
        let mut rows: Vec<Value> = current
            .get(f)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let name_of = |r: &Value| r.get("name").map(name_text).unwrap_or_default();
        if let Some(removed) = removed {
            let gone: Vec<String> = removed.iter().map(|v| text(Some(v))).collect();
            rows.retain(|r| !gone.contains(&name_of(r)));
        }
        for c in changed
            .into_iter()
            .flatten()
            .chain(added.into_iter().flatten())
        {
            let c = Value::Object(strip_dunder(&c));
            match rows.iter_mut().find(|r| name_of(r) == name_of(&c)) {
                Some(r) => {
                    if let (Some(r), Some(c)) = (r.as_object_mut(), c.as_object()) {
                        for (k, v) in c {
                            r.insert(k.clone(), v.clone());
                        }
                    }
                }
                None => rows.push(c),
            }
        }
        rows.sort_by_key(|r| r.get("idx").and_then(Value::as_i64).unwrap_or(i64::MAX));
        patch.insert(f.clone(), Value::Array(rows));
    }
    patch
}
