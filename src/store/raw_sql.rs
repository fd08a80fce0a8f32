//! Frappe-style raw SQL from scripts (`frappe.db.sql`): MySQL backquotes and `%(name)s` or
//! `%s` parameters, turned into this store's quoting and `$N` parameters. Only one SELECT.

use super::Param;
use crate::error::{Error, Result};
use serde_json::Value;

/// Translates a script's query and its values; refuses anything but a single SELECT.
pub fn translate_frappe_sql(query: &str, values: &Value) -> Result<(String, Vec<Param>)> {
    let query = query.trim().trim_end_matches(';').trim_end();
    let first = query
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if first != "SELECT" && first != "WITH" {
        return Err(Error::Permission(format!(
            "frappe.db.sql runs SELECT queries only, not {first}"
        )));
    }
    let mut out = String::with_capacity(query.len() + 16);
    let mut params: Vec<Param> = Vec::new();
    let mut named: Vec<(String, usize)> = Vec::new();
    let mut positional = 0usize;
    let mut chars = query.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\'' {
                in_string = false;
            }
            continue;
        }
        match c {
            '\'' => {
                in_string = true;
                out.push(c);
            }
            '`' => out.push('"'),
            ';' => {
                return Err(Error::Permission(
                    "frappe.db.sql runs one statement only".into(),
                ))
            }
            '%' if chars.peek() == Some(&'(') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|c| *c != ')').collect();
                if chars.next() != Some('s') {
                    return Err(Error::Validation(format!(
                        "parameter %({name}) must be written %({name})s"
                    )));
                }
                let n = match named.iter().find(|(k, _)| *k == name) {
                    Some((_, n)) => *n,
                    None => {
                        let v = values.get(&name).ok_or_else(|| {
                            Error::Validation(format!(
                                "the query uses %({name})s but no value named {name} was given"
                            ))
                        })?;
                        params.push(param(v));
                        named.push((name, params.len()));
                        params.len()
                    }
                };
                out.push_str(&format!("${n}"));
            }
            '%' if chars.peek() == Some(&'s') => {
                chars.next();
                let v = values
                    .as_array()
                    .and_then(|a| a.get(positional))
                    .ok_or_else(|| {
                        Error::Validation(format!(
                            "the query has more %s placeholders than values (only {positional} given)"
                        ))
                    })?;
                positional += 1;
                params.push(param(v));
                out.push_str(&format!("${}", params.len()));
            }
            '%' if chars.peek() == Some(&'%') => {
                chars.next();
                out.push('%');
            }
            _ => out.push(c),
        }
    }
    Ok((out, params))
}

fn param(v: &Value) -> Param {
    match v {
        Value::Null => Param::Text(None),
        Value::Bool(b) => Param::Int(Some(*b as i64)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Param::Int(Some(i)),
            None => Param::Float(n.as_f64()),
        },
        Value::String(s) => Param::Text(Some(s.clone())),
        other => Param::Text(Some(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frappe_queries_become_portable() {
        let (sql, params) = translate_frappe_sql(
            "SELECT COUNT(*) FROM `tabNote` WHERE creation <= %(creation)s AND title != 'a;`b' AND creation >= %(creation)s",
            &json!({"creation": "2026-01-01"}),
        )
        .unwrap();
        assert_eq!(
            sql,
            r#"SELECT COUNT(*) FROM "tabNote" WHERE creation <= $1 AND title != 'a;`b' AND creation >= $1"#
        );
        assert_eq!(params.len(), 1);
        let (sql, params) =
            translate_frappe_sql("select name from tabNote where idx > %s;", &json!([3])).unwrap();
        assert_eq!(sql, "select name from tabNote where idx > $1");
        assert!(matches!(params[0], Param::Int(Some(3))));
    }

    #[test]
    fn only_one_select_passes() {
        for q in [
            "DELETE FROM tabNote",
            "SELECT 1; DELETE FROM tabNote",
            "UPDATE tabNote SET title = 'x'",
        ] {
            assert!(translate_frappe_sql(q, &Value::Null).is_err(), "{q}");
        }
        assert!(translate_frappe_sql("SELECT %(missing)s", &json!({})).is_err());
    }
}
