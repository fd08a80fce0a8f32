//! Linked documents missing on the consumer, fetched from the producer before the document
//! that needs them: prefetched in parallel before a page's transaction, else on demand.
//! Must not overwrite a local document: a dependency that is here is linked as it is.

use super::*;

/// Inserts, before `doc`, every document it links to that is missing here, fetched from the
/// producer with the same name, depth-first; each dependency writes a Synced sync log so it
/// counts as synced from that producer. A link back to a document still being fetched (a
/// cycle) is left empty at insert and set once that document exists.
pub(super) async fn sync_dependencies(
    a: &Applying<'_>,
    conn: &mut Conn,
    known: &mut Known,
    dt: &DocType,
    doc: &Doc,
) -> Result<()> {
    let mut visiting = vec![(dt.name.clone(), text(doc.get("name")))];
    let mut deferred = Vec::new();
    fetch_missing(a, conn, known, dt, doc, &mut visiting, &mut deferred).await?;
    for (doctype, name, field, value) in deferred {
        let tdt = a.reg.get(&doctype)?;
        let mut p = Doc::new();
        p.insert(field, Value::String(value));
        store::update_columns(conn, &tdt, &Value::String(name), &p).await?;
    }
    Ok(())
}

pub(super) type Deferred = Vec<(String, String, String, String)>;

/// The missing links of `doc`, fetched and inserted depth-first (see [`sync_dependencies`]).
pub(super) fn fetch_missing<'a>(
    a: &'a Applying<'a>,
    conn: &'a mut Conn,
    known: &'a mut Known,
    dt: &'a DocType,
    doc: &'a Doc,
    visiting: &'a mut Vec<(String, String)>,
    deferred: &'a mut Deferred,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    let Applying {
        reg, info, remote, ..
    } = *a;
    Box::pin(async move {
        // Links with an empty Dynamic Link type are the document's own problem, found at save.
        let Ok(mut links) = crate::service::documents::links_of(reg, dt, doc) else {
            return Ok(());
        };
        if known.gives_definitions {
            links.extend(text_links_of(a, dt, doc).await);
        }
        for (_, target, value) in links {
            let Ok(tdt) = reg.get(&target) else { continue };
            if target == "DocType" || tdt.issingle || tdt.istable {
                continue;
            }
            let key = (target.clone(), value.clone());
            if visiting.contains(&key) || known.present.contains(&key) {
                continue;
            }
            // A type kept under local names is found by the producer's name it came with.
            let renamed = info.renamed(&target);
            let here = match renamed {
                Some(sub) => find_local(conn, &tdt, info, sub, &value).await?.is_some(),
                None => store::row_exists(conn, &tdt, &Value::String(value.clone())).await?,
            };
            if here {
                known.present.insert(key);
                continue;
            }
            // Kept for another attempt, should this one be rolled back.
            let fetched = match known.fetched.get(&key).cloned() {
                Some(doc) => doc,
                None => remote.get_doc(&target, &value).await.map_err(|e| {
                    Error::LinkValidation(format!(
                        "dependency {target} {value} could not be fetched from {}: {}",
                        info.url,
                        e.message()
                    ))
                })?,
            };
            let mut dep = strip_dunder(&fetched);
            visiting.push((target.clone(), value.clone()));
            fetch_missing(a, conn, known, &tdt, &dep, visiting, deferred).await?;
            // Fields pointing at documents still being fetched wait until those exist.
            for f in tdt
                .fields
                .iter()
                .filter(|f| f.fieldtype == crate::meta::FieldType::Link)
            {
                let v = text(dep.get(&f.fieldname));
                if !v.is_empty()
                    && visiting.iter().any(|(t, n)| *t == f.options && *n == v)
                    && !(f.options == target && v == value)
                {
                    deferred.push((target.clone(), value.clone(), f.fieldname.clone(), v));
                    dep.insert(f.fieldname.clone(), Value::Null);
                }
            }
            let names = local_names(conn, reg, info, &tdt, &dep).await?;
            rename_links(reg, &tdt, &mut dep, &names);
            if renamed.is_some() {
                dep.remove("name");
                dep.insert("remote_docname".into(), json!(value));
                dep.insert("remote_site_name".into(), json!(info.url));
            }
            let flags = WriteFlags {
                ignore_permissions: true,
                set_read_only: true,
                keep_name: renamed.is_none(),
                keep_timestamps: false,
                ignore_links: false,
                origin: Some(info.url.clone()),
                mapped: false,
                // Left empty until the document they point at is in, before the commit.
                unenforced: deferred
                    .iter()
                    .filter(|(t, n, _, _)| *t == target && *n == value)
                    .map(|(_, _, f, _)| f.clone())
                    .collect(),
            };
            insert_as_on_producer(a, conn, &tdt, dep, &flags, known)
                .await
                .map_err(|e| {
                    Error::LinkValidation(format!(
                        "dependency {target} {value} from {} could not be saved: {}",
                        info.url,
                        e.message()
                    ))
                })?;
            visiting.pop();
            known.absent.remove(&(target.clone(), value.clone()));
            let sub = SubscribedType {
                local_type: target.clone(),
                remote_type: target.clone(),
                use_same_name: true,
                unsubscribed: false,
                producer_wins: false,
                mapping: None,
            };
            let inc = Incoming {
                update_type: "Create".into(),
                remote_type: target.clone(),
                docname: value.clone(),
                raw_data: Value::String(fetched.to_string()),
                // The version fetched is the one last modified then (what verification by
                // lists compares with the producer's `modified`).
                creation: text(fetched.get("modified")),
                data: fetched,
                seq: None,
                origin: info.url.clone(),
            };
            known.note_first(format!(
                "{FETCHED_AS_DEPENDENCY} of {} {}",
                dt.name,
                text(doc.get("name"))
            ));
            write_sync_log(
                a,
                conn,
                &sub,
                &inc,
                Outcome::Applied(value.clone()),
                None,
                known,
            )
            .await?;
        }
        Ok(())
    })
}

/// The links of `doc` held here as text (a Data field) that the producer's definition makes
/// Links, as `(field, linked type, name)`: followed like the type's own, so that a hub holds
/// the documents its Frappe consumers, whose field is a Link, will ask it for (ERPNext's
/// `Customer.customer_group`, Data on the built-in Customer). Only where the linked type is
/// here, and only while types follow the producer's (the setting that reads its definitions).
async fn text_links_of(a: &Applying<'_>, dt: &DocType, doc: &Doc) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if !a.site.config.follow_producer_types {
        return out;
    }
    let mut cache = a.info.text_links.lock().await;
    let children: Vec<_> = dt
        .fields
        .iter()
        .filter(|f| f.fieldtype.is_table())
        .filter_map(|f| {
            Some((
                a.reg.get(&f.options).ok()?,
                doc.get(&f.fieldname)?.as_array()?,
            ))
        })
        .collect();
    let mut parts: Vec<(&DocType, &Doc)> = vec![(dt, doc)];
    for (child, rows) in &children {
        parts.extend(
            rows.iter()
                .filter_map(Value::as_object)
                .map(|r| (&**child, r)),
        );
    }
    for (t, part) in parts {
        let fields = producer_links(a, &mut cache, t).await;
        for (field, target) in fields.iter() {
            let value = part.get(field).map(name_text).unwrap_or_default();
            if !value.is_empty() {
                out.push((field.clone(), target.clone(), value));
            }
        }
    }
    out
}

/// The fields of `dt` held here as text that the producer makes Links (see [`text_links_of`]):
/// its definition is read once per type (with its child tables) and kept with the producer's
/// settings; one that cannot be read counts as none.
async fn producer_links(
    a: &Applying<'_>,
    cache: &mut TextLinks,
    dt: &DocType,
) -> std::sync::Arc<Vec<(String, String)>> {
    if let Some(found) = cache.get(&dt.name) {
        return found.clone();
    }
    // A mapped type's documents are in this site's shape, not the producer's.
    let mapped = a
        .info
        .types
        .iter()
        .any(|t| t.local_type == dt.name && t.mapping.is_some());
    let docs = if mapped || dt.istable {
        vec![]
    } else {
        a.remote.definition(&dt.name).await.unwrap_or_else(|e| {
            tracing::warn!(producer = %a.info.url, doctype = %dt.name, "the producer's definition could not be read (its links held here as text are not followed): {e}");
            vec![]
        })
    };
    for def in &docs {
        let Some(local) = a.reg.get(&text(def.get("name"))).ok() else {
            continue;
        };
        let pairs = crate::streaming::definitions::links_held_as_text(a.reg, &local, def);
        cache.insert(local.name.clone(), std::sync::Arc::new(pairs));
    }
    cache.entry(dt.name.clone()).or_default().clone()
}

/// Fetches, in parallel and each once, the linked documents of a page that are missing here,
/// following their own links a few levels deep. Best effort: what is not fetched here is fetched
/// (or reported) when the document is applied. Also returns the documents the page links to
/// directly that are here already.
pub(super) async fn prefetch_dependencies(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
) -> (
    std::collections::HashMap<(String, String), Value>,
    Vec<(String, String)>,
) {
    use std::borrow::Cow;
    let mut fetched = std::collections::HashMap::new();
    // Dunder keys are not fields, so links are read from the data as it came.
    let mut docs: Vec<(String, Cow<Doc>)> = logs
        .iter()
        .filter_map(|inc| {
            let sub = info.for_remote(&inc.remote_type)?;
            if sub.mapping.is_some() {
                // Mapped documents are in the producer's shape; their links are resolved as
                // they are mapped.
                return None;
            }
            let doc = match inc.update_type.as_str() {
                "Create" => inc.data.as_object()?,
                "Update" => inc.data.get("changed").and_then(Value::as_object)?,
                _ => return None,
            };
            Some((sub.local_type.clone(), Cow::Borrowed(doc)))
        })
        .collect();
    let mut here = Vec::new();
    for depth in 0..4 {
        // A set: a page of invoices links thousands of documents, and a list searched for each
        // one took a fifth of the consumer's time.
        let mut wanted: std::collections::HashSet<(String, String)> = Default::default();
        for (doctype, doc) in &docs {
            let Ok(dt) = reg.get(doctype) else { continue };
            let Ok(links) = crate::service::documents::links_of(reg, &dt, doc) else {
                continue;
            };
            for (_, target, value) in links {
                let key = (target, value);
                if !fetched.contains_key(&key) {
                    wanted.insert(key);
                }
            }
        }
        let missing = missing_locally(site, reg, wanted.clone()).await;
        if depth == 0 {
            let absent: std::collections::HashSet<&(String, String)> = missing.iter().collect();
            here = wanted
                .iter()
                .filter(|k| !absent.contains(k))
                .cloned()
                .collect();
        }
        if missing.is_empty() {
            break;
        }
        let results = fetch_each(remote, missing).await;
        docs.clear();
        for (key, doc) in results {
            if let Some(doc) = doc.filter(|d| d.is_object()) {
                docs.push((key.0.clone(), Cow::Owned(strip_dunder(&doc))));
                fetched.insert(key, doc);
            }
        }
    }
    (fetched, here)
}

/// Fetches documents from the producer, 8 at a time; `None` for one that could not be read.
pub(super) async fn fetch_each(
    remote: &RemoteSite,
    keys: Vec<(String, String)>,
) -> Vec<((String, String), Option<Value>)> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(keys)
        .map(|(t, n)| async move {
            let doc = remote.get_doc(&t, &n).await.ok();
            ((t, n), doc)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Same-name Creates of a page whose documents are not here yet (one query per type).
pub(super) async fn absent_at_start(
    conn: &mut Conn,
    reg: &Registry,
    info: &ProducerInfo,
    logs: &[Incoming],
) -> Result<std::collections::HashSet<(String, String)>> {
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for inc in logs {
        if inc.update_type != "Create" {
            continue;
        }
        if let Some(sub) = info.for_remote(&inc.remote_type) {
            if sub.use_same_name {
                by_type
                    .entry(sub.local_type.clone())
                    .or_default()
                    .push(inc.docname.clone());
            }
        }
    }
    let mut absent = std::collections::HashSet::new();
    for (t, names) in by_type {
        let dt = reg.get(&t)?;
        for chunk in names.chunks(500) {
            let found = names_found(conn, &dt, chunk).await?;
            absent.extend(
                chunk
                    .iter()
                    .filter(|n| !found.contains(*n))
                    .map(|n| (t.clone(), n.clone())),
            );
        }
    }
    Ok(absent)
}

/// The (type, name) pairs that do not exist here (one query per type and 500 names).
pub(super) async fn missing_locally(
    site: &Site,
    reg: &Registry,
    wanted: std::collections::HashSet<(String, String)>,
) -> Vec<(String, String)> {
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (t, n) in wanted {
        let Ok(dt) = reg.get(&t) else { continue };
        if t == "DocType" || dt.issingle || dt.istable {
            continue;
        }
        by_type.entry(t).or_default().push(n);
    }
    let mut missing = Vec::new();
    let Ok(mut conn) = site.store.conn().await else {
        return missing;
    };
    for (t, names) in by_type {
        let Ok(dt) = reg.get(&t) else { continue };
        for chunk in names.chunks(500) {
            let Ok(found) = names_found(&mut conn, &dt, chunk).await else {
                continue;
            };
            missing.extend(
                chunk
                    .iter()
                    .filter(|n| !found.contains(*n))
                    .map(|n| (t.clone(), n.clone())),
            );
        }
    }
    missing
}

/// Which of `names` (at most a few hundred: one statement) exist in `dt`'s table.
async fn names_found(
    conn: &mut Conn,
    dt: &DocType,
    names: &[String],
) -> Result<std::collections::HashSet<String>> {
    let ph: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT name FROM {} WHERE name IN ({})",
        store::q(&dt.table()),
        ph.join(", ")
    );
    let params: Vec<Param> = names.iter().map(|n| Param::Text(Some(n.clone()))).collect();
    Ok(store::fetch_docs(conn, &sql, &params)
        .await?
        .iter()
        .map(|r| text(r.get("name")))
        .collect())
}
