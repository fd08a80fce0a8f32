//! Mandatory fields a producer's document leaves empty. Frappe sites save some documents past
//! their own rules (ERPNext makes its root Accounts, which have no parent, with
//! `ignore_mandatory`, though Account's definition requires a parent): a field mandatory here
//! and in the producer's definition, empty in the document the producer holds, stays empty
//! here, and the sync log says so. A field only this site requires is this site's rule: the
//! document fails until it is filled.
//! Must not relax a mapped document (it is made here, under this site's rules) nor a child row.

use super::*;
use std::collections::HashSet;

/// The flags a producer's document is written with: `flags`, plus the mandatory fields it
/// leaves empty (`empty` tells) that the producer's definition of `dt` requires too. None when
/// nothing mandatory is empty, or nothing empty is the producer's rule.
pub(super) async fn as_the_producer_holds(
    a: &Applying<'_>,
    known: &mut Known,
    dt: &DocType,
    flags: &WriteFlags,
    empty: impl Fn(&str) -> bool,
) -> Result<Option<WriteFlags>> {
    if flags.mapped {
        return Ok(None);
    }
    let missing = documents::missing_mandatory(dt, empty);
    if missing.is_empty() {
        return Ok(None);
    }
    if !known.producer_required.contains_key(&dt.name) {
        let required = required_there(a, &dt.name).await;
        known.producer_required.insert(dt.name.clone(), required);
    }
    let there = &known.producer_required[&dt.name];
    let kept: Vec<_> = missing
        .into_iter()
        .filter(|f| there.contains(&f.fieldname))
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let n = format!(
        "held without {}: mandatory here and on the producer, empty in the producer's document",
        kept.iter()
            .map(|f| format!("{} ({})", f.label(), f.fieldname))
            .collect::<Vec<_>>()
            .join(", ")
    );
    known.note = Some(match known.note.take() {
        Some(before) => format!("{before}; {n}"),
        None => n,
    });
    let mut f = flags.clone();
    f.unenforced
        .extend(kept.into_iter().map(|f| f.fieldname.clone()));
    Ok(Some(f))
}

/// The fields the producer's definition of `doctype` makes mandatory; none when it would not
/// say (its rules are then unknown, and this site's apply).
async fn required_there(a: &Applying<'_>, doctype: &str) -> HashSet<String> {
    let docs = match a.remote.definition(doctype).await {
        Ok(docs) => docs,
        Err(e) => {
            tracing::warn!(producer = %a.info.url, %doctype, "the producer's definition could not be read: {e}");
            return HashSet::new();
        }
    };
    docs.first()
        .and_then(|d| d.get("fields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| {
            f.get("reqd")
                .is_some_and(|r| r.as_i64() == Some(1) || r.as_bool() == Some(true))
        })
        .filter_map(|f| {
            f.get("fieldname")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}
