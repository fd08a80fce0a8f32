//! What a producer's document holds that this site's rules would refuse, kept as sent and said
//! on the sync log. Frappe sites save some documents past their own rules (ERPNext makes its
//! root Accounts, which have no parent, with `ignore_mandatory`, though Account's definition
//! requires a parent): a field mandatory here and in the producer's definition, empty in the
//! producer's document, stays empty here. A field only this site requires is this site's rule:
//! the document fails until it is filled. A Select value that is not one of this site's
//! choices (ERPNext's naming series `ACC-SINV-.YYYY.-`) is kept verbatim.
//! Must not relax a mapped document (it is made here, under this site's rules) nor a child row.

use super::*;
use crate::meta::FieldType;
use std::collections::HashSet;

/// The flags a producer's document is written with: `flags`, plus the fields kept as sent (a
/// mandatory field it leaves empty that the producer's definition of `dt` requires too, a
/// choice this site lacks among those `written`). None when there are none. `value` reads the
/// document's fields as they will be.
pub(super) async fn as_sent<'v>(
    a: &Applying<'_>,
    known: &mut Known,
    dt: &DocType,
    flags: &WriteFlags,
    written: &Doc,
    value: impl Fn(&str) -> Option<&'v Value>,
) -> Result<Option<WriteFlags>> {
    if flags.mapped {
        return Ok(None);
    }
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    // A field left empty for a link cycle is set before the commit: not missing.
    let missing: Vec<_> = documents::missing_mandatory(dt, |f| documents::is_empty(value(f)))
        .into_iter()
        .filter(|f| !flags.unenforced.contains(&f.fieldname))
        .collect();
    if !missing.is_empty() {
        if !known.producer_required.contains_key(&dt.name) {
            let required = required_there(a, &dt.name).await;
            known.producer_required.insert(dt.name.clone(), required);
        }
        let there = &known.producer_required[&dt.name];
        let empty: Vec<_> = missing
            .into_iter()
            .filter(|f| there.contains(&f.fieldname))
            .collect();
        if !empty.is_empty() {
            notes.push(format!(
                "held without {}: mandatory here and on the producer, empty in the producer's document",
                labels(&empty)
            ));
            kept.extend(empty.iter().map(|f| f.fieldname.clone()));
        }
    }
    let unfit: Vec<_> = dt
        .fields
        .iter()
        .filter(|f| f.fieldtype == FieldType::Select && !f.options.trim().is_empty())
        .filter_map(|f| match written.get(&f.fieldname) {
            Some(Value::String(s)) if !s.is_empty() && !f.options.split('\n').any(|o| o == s) => {
                Some((f, s))
            }
            _ => None,
        })
        .collect();
    if !unfit.is_empty() {
        let what: Vec<String> = unfit
            .iter()
            .map(|(f, s)| format!("{} ({}) {s:?}", f.label(), f.fieldname))
            .collect();
        notes.push(format!(
            "kept as sent, not one of this site's choices: {}",
            what.join(", ")
        ));
        kept.extend(unfit.iter().map(|(f, _)| f.fieldname.clone()));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    known.add_note(notes.join("; "));
    let mut f = flags.clone();
    f.unenforced.extend(kept);
    Ok(Some(f))
}

fn labels(fields: &[&crate::meta::DocField]) -> String {
    fields
        .iter()
        .map(|f| format!("{} ({})", f.label(), f.fieldname))
        .collect::<Vec<_>>()
        .join(", ")
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
        .map(crate::streaming::definitions::required_fields)
        .unwrap_or_default()
}
