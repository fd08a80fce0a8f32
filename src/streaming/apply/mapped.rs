//! Document Type Mapping while applying: the local form of a producer document, and the
//! documents its Document rows make.
//! Must not map fields itself: `streaming::mapping` does, without I/O.

use super::*;

/// The local form of a whole producer document: mapped when the row has a mapping.
pub(super) async fn to_local(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    known: &mut Known,
    remote_doc: Doc,
) -> Result<Doc> {
    let Some(m) = &sub.mapping else {
        return Ok(remote_doc);
    };
    let fields = remote_fields(a.remote, known, &m.remote_doctype).await;
    let mut local = m.map_doc(a.reg, &remote_doc, fields.as_ref())?;
    resolve_document_rows(a, conn, known, m, &remote_doc, &mut local).await?;
    Ok(local)
}

pub(super) async fn remote_fields(
    remote: &RemoteSite,
    known: &mut Known,
    doctype: &str,
) -> Option<std::collections::HashSet<String>> {
    if let Some(f) = known.remote_fields.get(doctype) {
        return f.clone();
    }
    let f = remote.field_names(doctype).await;
    known.remote_fields.insert(doctype.to_string(), f.clone());
    f
}

/// Fills the Document rows of a mapping: each finds exactly one producer document with its
/// filters, maps it with the row's mapping, inserts it here if it is not here yet and links it.
pub(super) fn resolve_document_rows<'a>(
    a: &'a Applying<'a>,
    conn: &'a mut Conn,
    known: &'a mut Known,
    m: &'a crate::streaming::mapping::Mapping,
    remote_doc: &'a Doc,
    local: &'a mut Doc,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    use crate::streaming::mapping::RowKind;
    let Applying {
        site,
        reg,
        info,
        remote,
        ..
    } = *a;
    Box::pin(async move {
        let dt = reg.get(&m.local_doctype)?;
        for row in m.document_rows() {
            let RowKind::Document {
                mapping: inner,
                filters,
            } = &row.kind
            else {
                continue;
            };
            let at = row.label(m);
            let fields = remote_fields(remote, known, &m.remote_doctype).await;
            let mut wanted = serde_json::Map::new();
            for (k, v) in filters {
                let value = match v.as_str() {
                    Some(s) if s.starts_with("eval:") => {
                        let expr = &s["eval:".len()..];
                        let now = site.clock.now();
                        crate::service::sandbox_db::run_script(|| {
                            crate::sandbox::eval_expression(
                                expr,
                                &[],
                                &crate::service::sandbox_db::SiteDb::new(site),
                                &now,
                                &crate::sandbox::Limits::default(),
                            )
                        })
                        .map_err(|e| Error::Validation(format!("{at}: filter {k} ({s}): {e}")))?
                    }
                    Some(s)
                        if remote_doc.contains_key(s)
                            || fields.as_ref().is_some_and(|f| f.contains(s)) =>
                    {
                        remote_doc.get(s).cloned().unwrap_or(Value::Null)
                    }
                    _ => v.clone(),
                };
                wanted.insert(k.clone(), value);
            }
            let wanted = Value::Object(wanted);
            let names = remote
                .find_names(&inner.remote_doctype, &wanted, 2)
                .await
                .map_err(|e| Error::Validation(format!("{at}: {}", e.message())))?;
            if names.len() != 1 {
                return Err(Error::Validation(format!(
                    "{at}: {} {} documents on {} match the filters {wanted}; exactly one must",
                    if names.is_empty() { "no" } else { "several" },
                    inner.remote_doctype,
                    info.url
                )));
            }
            let source_name = names[0].clone();
            let source = strip_dunder(&remote.get_doc(&inner.remote_doctype, &source_name).await?);
            let inner_fields = remote_fields(remote, known, &inner.remote_doctype).await;
            let mut made = inner.map_doc(reg, &source, inner_fields.as_ref())?;
            resolve_document_rows(a, conn, known, inner, &source, &mut made).await?;
            let local_name = made_locally(a, conn, known, inner, &source_name, made).await?;
            local.insert(row.local.clone(), Value::String(local_name));
            if let Some(df) = dt.field(&row.local) {
                if df.fieldtype == crate::meta::FieldType::DynamicLink {
                    local.insert(
                        df.options.clone(),
                        Value::String(inner.local_doctype.clone()),
                    );
                }
            }
        }
        Ok(())
    })
}

/// The local copy of a document made by a Document row: found by its producer name, or
/// inserted (with `remote_docname` when the type has it, else under the producer's name).
pub(super) async fn made_locally(
    a: &Applying<'_>,
    conn: &mut Conn,
    known: &mut Known,
    m: &crate::streaming::mapping::Mapping,
    source_name: &str,
    mut doc: Doc,
) -> Result<String> {
    let info = a.info;
    let dt = a.reg.get(&m.local_doctype)?;
    let by_remote_name = dt.field("remote_docname").is_some();
    let sub = SubscribedType {
        local_type: m.local_doctype.clone(),
        remote_type: m.remote_doctype.clone(),
        use_same_name: !by_remote_name,
        unsubscribed: false,
        producer_wins: false,
        mapping: None,
    };
    if let Some(found) = find_local(conn, &dt, info, &sub, source_name).await? {
        return Ok(found);
    }
    doc.remove("name");
    if by_remote_name {
        doc.insert("remote_docname".into(), json!(source_name));
        doc.insert("remote_site_name".into(), json!(info.url));
    } else {
        doc.insert("name".into(), json!(source_name));
    }
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: !by_remote_name,
        keep_timestamps: false,
        ignore_links: false,
        origin: Some(info.url.clone()),
        mapped: true,
        unenforced: Vec::new(),
    };
    insert_as_on_producer(a, conn, &dt, doc, &flags, known).await
}
