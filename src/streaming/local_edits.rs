//! Local edits: which fields of a document of a subscribed type were changed on this site
//! (by its users, not by a producer) since a producer's version was last received. An
//! incoming change to such a field is a conflict, never a silent overwrite (`apply/conflict.rs`).
//! Must not decide a conflict: it only remembers what was edited here.

use crate::error::Result;
use crate::meta::DocType;
use crate::service::diff::Diff;
use crate::store::{self, Conn, Param};
use serde_json::Value;

/// The fields a change touches: its changed fields and the child tables it adds to, removes
/// from or changes.
pub fn touched(diff: &Diff) -> Vec<String> {
    let mut fields: Vec<String> = diff
        .changed
        .keys()
        .chain(diff.added.keys())
        .chain(diff.removed.keys())
        .chain(diff.row_changed.keys())
        .filter(|f| f.as_str() != "name")
        .cloned()
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Remembers that this site changed `fields` of a document, when some producer sends its type.
/// One statement (deferred on PostgreSQL: it travels with the next one), which asks itself
/// whether the type is subscribed: most local writes are of types no producer sends.
pub async fn record(
    conn: &mut Conn,
    dt: &DocType,
    docname: &str,
    fields: &[String],
    now: &str,
) -> Result<()> {
    if fields.is_empty() {
        return Ok(());
    }
    let mut params = vec![
        Param::text(&dt.name),
        Param::text(docname),
        Param::text(now),
    ];
    let rows: Vec<String> = fields
        .iter()
        .map(|f| {
            params.push(Param::text(f));
            format!("SELECT CAST(${} AS TEXT) AS f", params.len())
        })
        .collect();
    let sql = format!(
        r#"INSERT INTO "__local_edits" (ref_doctype, docname, fieldname, since)
           SELECT $1, $2, v.f, $3 FROM ({}) v
           WHERE EXISTS (SELECT 1 FROM "tabEvent Producer Document Type" WHERE ref_doctype = $1)
           ON CONFLICT DO NOTHING"#,
        rows.join(" UNION ALL ")
    );
    store::execute_deferred(conn, &sql, params).await
}

/// Marks `fields` as changed here whatever the type's subscriptions (a person kept this
/// site's version of them).
pub async fn keep(
    conn: &mut Conn,
    doctype: &str,
    docname: &str,
    fields: &[String],
    now: &str,
) -> Result<()> {
    for f in fields {
        store::execute(
            conn,
            r#"INSERT INTO "__local_edits" (ref_doctype, docname, fieldname, since) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"#,
            &[Param::text(doctype), Param::text(docname), Param::text(f), Param::text(now)],
        )
        .await?;
    }
    Ok(())
}

/// The fields of a document changed here since it was last received, with when.
pub async fn of(conn: &mut Conn, doctype: &str, docname: &str) -> Result<Vec<(String, String)>> {
    let rows = store::fetch_values(
        conn,
        r#"SELECT fieldname, since FROM "__local_edits" WHERE ref_doctype = $1 AND docname = $2 ORDER BY fieldname"#,
        &[Param::text(doctype), Param::text(docname)],
    )
    .await?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(rows
        .iter()
        .map(|r| (text(r.first()), text(r.get(1))))
        .collect())
}

/// Forgets edits of `fields` (the producer's version of them is held again); all of them when
/// `fields` is None (the document is gone).
pub async fn clear(
    conn: &mut Conn,
    doctype: &str,
    docname: &str,
    fields: Option<&[String]>,
) -> Result<()> {
    let base = [Param::text(doctype), Param::text(docname)];
    match fields {
        None => {
            store::execute_deferred(
                conn,
                r#"DELETE FROM "__local_edits" WHERE ref_doctype = $1 AND docname = $2"#,
                base.to_vec(),
            )
            .await
        }
        Some(fields) => {
            for f in fields {
                let mut p = base.to_vec();
                p.push(Param::text(f));
                store::execute(
                    conn,
                    r#"DELETE FROM "__local_edits" WHERE ref_doctype = $1 AND docname = $2 AND fieldname = $3"#,
                    &p,
                )
                .await?;
            }
            Ok(())
        }
    }
}
