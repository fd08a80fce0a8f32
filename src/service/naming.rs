//! Naming rules (`autoname`): hash, field:, naming_series:, patterns, format:, autoincrement, prompt.
//! Must not write a document: it only mints names, under the series row's lock.

use crate::crypto::random_token;
use crate::error::{Error, Result};
use crate::meta::DocType;
use crate::store::{execute, next_counter, row_exists, Conn, Doc, Param};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// Microseconds from the Unix epoch to 2020-01-01, where `hash_name` stamps start.
const STAMP_EPOCH_US: u64 = 1_577_836_800_000_000;

/// The last stamp `hash_name` gave in this process.
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// A `hash` name: 16 lowercase letters and digits, ten of a time stamp in microseconds since
/// 2020 (growing, and never the same twice in this process) and six random ones.
///
/// Names that grow with time put each new row at the end of the table's name index, one page
/// for a whole transaction; Frappe's ten random characters put every row on a page anywhere in
/// it, one more page written per row. The random tail keeps two processes that write at the
/// same microsecond apart.
pub fn hash_name() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
        .saturating_sub(STAMP_EPOCH_US);
    let previous = LAST_STAMP
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or_default();
    let mut stamp = now.max(previous + 1);
    let mut out = [b'0'; 10];
    for d in out.iter_mut().rev() {
        *d = DIGITS[(stamp % 36) as usize];
        stamp /= 36;
    }
    let mut name: String = out.iter().map(|&b| b as char).collect();
    name.push_str(&random_token(6));
    name
}

/// Picks the name of a new document; `given` is the client's name when it may choose one.
pub async fn new_name(
    conn: &mut Conn,
    dt: &DocType,
    doc: &Doc,
    given: Option<&str>,
    today: &str,
) -> Result<Value> {
    if let Some(g) = given.filter(|g| !g.trim().is_empty()) {
        return Ok(Value::String(g.trim().to_string()));
    }
    let autoname = dt.autoname.trim();
    let lower = autoname.to_lowercase();
    if lower.is_empty() || lower == "hash" {
        return Ok(Value::String(hash_name()));
    }
    if lower == "prompt" {
        return Err(Error::Mandatory(format!(
            "{}: a name is required (send \"name\")",
            dt.name
        )));
    }
    if lower == "autoincrement" {
        let key = format!("autoincrement:{}", dt.name);
        for _ in 0..MAX_TAKEN {
            let n = Value::from(next_counter(conn, &key).await?);
            if !row_exists(conn, dt, &n).await? {
                return Ok(n);
            }
        }
        return Err(all_taken(dt, &key));
    }
    if let Some(field) = autoname.strip_prefix("field:") {
        let v = text(doc, field.trim());
        if v.is_empty() {
            let label = dt
                .field(field.trim())
                .map(|f| f.label().to_string())
                .unwrap_or_else(|| field.to_string());
            return Err(Error::Mandatory(format!(
                "{}: {label} is required, it names the document",
                dt.name
            )));
        }
        return Ok(Value::String(v));
    }
    if lower.starts_with("naming_series:") {
        let series = series_of(dt, doc);
        if series.is_empty() {
            return Err(Error::Mandatory(format!(
                "{}: Naming Series is required",
                dt.name
            )));
        }
        return series_name(conn, dt, &series, doc, today)
            .await
            .map(Value::String);
    }
    if let Some(fmt) = autoname.strip_prefix("format:") {
        return format_name(conn, dt, fmt, doc, today)
            .await
            .map(Value::String);
    }
    if autoname.contains('#') || autoname.contains('.') {
        return series_name(conn, dt, autoname, doc, today)
            .await
            .map(Value::String);
    }
    Err(Error::Validation(format!(
        "{}: unsupported autoname {autoname:?}",
        dt.name
    )))
}

/// Counter values tried past names that exist before minting gives up.
const MAX_TAKEN: usize = 10_000;

fn all_taken(dt: &DocType, key: &str) -> Error {
    Error::DuplicateEntry(format!(
        "{}: the next {MAX_TAKEN} names of series {key} are all taken; raise its counter in tabSeries",
        dt.name
    ))
}

/// The document's naming series: its `naming_series`, else the field's default.
fn series_of(dt: &DocType, doc: &Doc) -> String {
    let series = text(doc, "naming_series");
    if !series.is_empty() {
        return series;
    }
    dt.field("naming_series")
        .and_then(|f| f.default.clone())
        .unwrap_or_default()
}

/// A document kept under the name another site gave it (a streamed one): when that name is
/// of the local series of its type, today, the series' counter moves past its number, so
/// minting never reaches it. (Minting also skips names that exist; this spares the probes.)
pub async fn note_given_name(
    conn: &mut Conn,
    dt: &DocType,
    doc: &Doc,
    name: &str,
    today: &str,
) -> Result<()> {
    let autoname = dt.autoname.trim();
    let pattern = if autoname.to_lowercase().starts_with("naming_series:") {
        series_of(dt, doc)
    } else if !autoname.contains(':') && (autoname.contains('#') || autoname.contains('.')) {
        autoname.to_string()
    } else {
        return Ok(());
    };
    let (prefix, _) = series_prefix(&pattern, doc, today);
    let Some(n) = name
        .strip_prefix(&prefix)
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|rest| rest.parse::<i64>().ok())
    else {
        return Ok(());
    };
    execute(
        conn,
        r#"INSERT INTO "tabSeries" (name, current) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET current = CASE
             WHEN "tabSeries".current < excluded.current THEN excluded.current
             ELSE "tabSeries".current END"#,
        &[Param::text(&prefix), Param::Int(Some(n))],
    )
    .await?;
    Ok(())
}

fn text(doc: &Doc, field: &str) -> String {
    match doc.get(field) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn date_part(part: &str, today: &str) -> Option<String> {
    Some(match part {
        "YYYY" => today[..4].to_string(),
        "YY" => today[2..4].to_string(),
        "MM" => today[5..7].to_string(),
        "DD" => today[8..10].to_string(),
        _ => return None,
    })
}

/// `SINV-.YYYY.-` or `NOTE-.#####`: dot-separated parts; `#` runs are the counter (width 5
/// when the pattern has none), date parts are today, `{field}` or a bare fieldname is its value.
async fn series_name(
    conn: &mut Conn,
    dt: &DocType,
    pattern: &str,
    doc: &Doc,
    today: &str,
) -> Result<String> {
    let (prefix, width) = series_prefix(pattern, doc, today);
    for _ in 0..MAX_TAKEN {
        let n = next_counter(conn, &prefix).await?;
        let name = format!("{prefix}{:0w$}", n, w = width);
        if !row_exists(conn, dt, &Value::String(name.clone())).await? {
            return Ok(name);
        }
    }
    Err(all_taken(dt, &prefix))
}

/// A series pattern's prefix for this document today, and its counter's width.
fn series_prefix(pattern: &str, doc: &Doc, today: &str) -> (String, usize) {
    let mut prefix = String::new();
    let mut width = None;
    for part in pattern.split('.') {
        if !part.is_empty() && part.chars().all(|c| c == '#') {
            width = Some(part.len());
            break;
        }
        if let Some(d) = date_part(part, today) {
            prefix.push_str(&d);
        } else if let Some(f) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            prefix.push_str(&text(doc, f));
        } else {
            prefix.push_str(part);
        }
    }
    (prefix, width.unwrap_or(5))
}

/// `format:INV-{customer}-{####}`.
async fn format_name(
    conn: &mut Conn,
    dt: &DocType,
    fmt: &str,
    doc: &Doc,
    today: &str,
) -> Result<String> {
    let mut out = String::new();
    let mut rest = fmt;
    let mut counter_at = None;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
            Error::Validation(format!("autoname format {fmt:?} has an unclosed {{"))
        })?;
        let key = &rest[open + 1..close];
        if !key.is_empty() && key.chars().all(|c| c == '#') {
            counter_at = Some((out.len(), key.len()));
        } else if let Some(d) = date_part(key, today) {
            out.push_str(&d);
        } else {
            out.push_str(&text(doc, key));
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    let Some((at, width)) = counter_at else {
        return Ok(out);
    };
    for _ in 0..MAX_TAKEN {
        let n = next_counter(conn, &out[..at]).await?;
        let mut name = out.clone();
        name.insert_str(at, &format!("{:0w$}", n, w = width));
        if !row_exists(conn, dt, &Value::String(name.clone())).await? {
            return Ok(name);
        }
    }
    Err(all_taken(dt, &out[..at]))
}

#[cfg(test)]
mod tests {
    use super::hash_name;

    #[test]
    fn hash_names_are_unique_and_sort_in_the_order_they_were_given() {
        let names: Vec<String> = (0..10_000).map(|_| hash_name()).collect();
        for n in &names {
            assert_eq!(n.len(), 16, "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                "{n}"
            );
        }
        // Byte order is what SQLite's name index uses: each new name goes after the last.
        for w in names.windows(2) {
            assert!(w[0] < w[1], "{} then {}", w[0], w[1]);
        }
    }
}
