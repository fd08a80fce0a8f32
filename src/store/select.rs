//! List queries: Frappe's `fields`, `filters`, `or_filters`, `order_by` and paging, as SQL.

use super::{q, Dialect, Param};
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry, Storage};
use serde_json::Value;

/// A comparison operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
    NotLike,
    In,
    NotIn,
    Is,
    Between,
}

impl Op {
    fn parse(s: &str) -> Result<Op> {
        Ok(match s.trim().to_lowercase().as_str() {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            "<" => Op::Lt,
            ">" => Op::Gt,
            "<=" | "=<" => Op::Le,
            ">=" | "=>" => Op::Ge,
            "like" => Op::Like,
            "not like" => Op::NotLike,
            "in" => Op::In,
            "not in" => Op::NotIn,
            "is" => Op::Is,
            "between" => Op::Between,
            other => {
                return Err(Error::Validation(format!(
                    "Unsupported filter operator \"{other}\""
                )))
            }
        })
    }
}

/// One condition: `[doctype, field, op, value]`; `doctype` may be a child type of the listed one.
#[derive(Debug, Clone)]
pub struct Filter {
    pub doctype: Option<String>,
    pub field: String,
    pub op: Op,
    pub value: Value,
}

impl Filter {
    /// Parses Frappe's three filter forms: a list of lists (3 or 4 items), one list, or an object.
    pub fn parse_many(v: &Value) -> Result<Vec<Filter>> {
        let bad = || {
            Error::BadRequest(format!(
                "filters must be a list of [field, operator, value] or an object, not {v}"
            ))
        };
        match v {
            Value::Null => Ok(vec![]),
            Value::String(s) if s.trim().is_empty() => Ok(vec![]),
            Value::String(s) => {
                let parsed: Value = serde_json::from_str(s)
                    .map_err(|e| Error::BadRequest(format!("filters is not valid JSON: {e}")))?;
                Filter::parse_many(&parsed)
            }
            Value::Object(m) => m
                .iter()
                .map(|(k, val)| {
                    Ok(match val {
                        Value::Array(a) if a.len() == 2 && a[0].is_string() => Filter {
                            doctype: None,
                            field: k.clone(),
                            op: Op::parse(a[0].as_str().unwrap_or_default())?,
                            value: a[1].clone(),
                        },
                        other => Filter {
                            doctype: None,
                            field: k.clone(),
                            op: Op::Eq,
                            value: other.clone(),
                        },
                    })
                })
                .collect(),
            Value::Array(items) if items.is_empty() => Ok(vec![]),
            Value::Array(items) if items.iter().all(|i| i.is_array()) => items
                .iter()
                .map(|i| Filter::parse_one(i.as_array().unwrap_or(&vec![])).ok_or_else(bad)?)
                .collect(),
            Value::Array(items) => Ok(vec![Filter::parse_one(items).ok_or_else(bad)??]),
            _ => Err(bad()),
        }
    }

    fn parse_one(a: &[Value]) -> Option<Result<Filter>> {
        let s = |v: &Value| v.as_str().map(str::to_string);
        let (doctype, field, op, value) = match a.len() {
            3 => (None, s(&a[0])?, s(&a[1])?, a[2].clone()),
            4 | 5 => (s(&a[0]), s(&a[1])?, s(&a[2])?, a[3].clone()),
            2 => (None, s(&a[0])?, "=".to_string(), a[1].clone()),
            _ => return None,
        };
        Some(Op::parse(&op).map(|op| Filter {
            doctype,
            field,
            op,
            value,
        }))
    }
}

/// A list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Columns; empty means `name`; `*` means every column.
    pub fields: Vec<String>,
    pub filters: Vec<Filter>,
    pub or_filters: Vec<Filter>,
    /// Raw `order_by`; empty means the type's sort field, descending.
    pub order_by: String,
    pub start: u64,
    /// 0 means no limit.
    pub page_length: u64,
}

/// SQL plus its parameters.
#[derive(Debug)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

impl ListQuery {
    /// Builds the SELECT for this query on `dt`.
    pub fn to_sql(&self, reg: &Registry, dt: &DocType, dialect: Dialect) -> Result<Sql> {
        let cols = self.columns(dt)?;
        let mut params = Vec::new();
        let where_sql = self.where_clause(reg, dt, dialect, &mut params)?;
        let order = order_clause(dt, &self.order_by)?;
        let mut text = format!(
            "SELECT {} FROM {}{where_sql} ORDER BY {order}",
            cols.join(", "),
            q(&dt.table())
        );
        if self.page_length > 0 {
            text.push_str(&format!(
                " LIMIT {} OFFSET {}",
                self.page_length, self.start
            ));
        } else if self.start > 0 {
            text.push_str(&format!(" LIMIT -1 OFFSET {}", self.start));
            if dialect == Dialect::Postgres {
                text = text.replace(" LIMIT -1", " LIMIT ALL");
            }
        }
        Ok(Sql { text, params })
    }

    /// Builds `SELECT COUNT(*)` with the same conditions.
    pub fn to_count_sql(&self, reg: &Registry, dt: &DocType, dialect: Dialect) -> Result<Sql> {
        let mut params = Vec::new();
        let where_sql = self.where_clause(reg, dt, dialect, &mut params)?;
        Ok(Sql {
            text: format!(
                "SELECT COUNT(*) AS count FROM {}{where_sql}",
                q(&dt.table())
            ),
            params,
        })
    }

    fn columns(&self, dt: &DocType) -> Result<Vec<String>> {
        if self.fields.is_empty() {
            return Ok(vec!["name".into()]);
        }
        if self.fields.iter().any(|f| f.trim() == "*") {
            return Ok(vec!["*".into()]);
        }
        self.fields
            .iter()
            .map(|f| {
                let c = clean_column(f);
                if dt.has_column(&c) {
                    Ok(q(&c))
                } else {
                    Err(unknown_field(dt, &c))
                }
            })
            .collect()
    }

    fn where_clause(
        &self,
        reg: &Registry,
        dt: &DocType,
        dialect: Dialect,
        params: &mut Vec<Param>,
    ) -> Result<String> {
        let mut and_parts = Vec::new();
        for f in &self.filters {
            and_parts.push(condition(reg, dt, f, dialect, params)?);
        }
        if !self.or_filters.is_empty() {
            let mut or_parts = Vec::new();
            for f in &self.or_filters {
                or_parts.push(condition(reg, dt, f, dialect, params)?);
            }
            and_parts.push(format!("({})", or_parts.join(" OR ")));
        }
        Ok(if and_parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", and_parts.join(" AND "))
        })
    }
}

fn unknown_field(dt: &DocType, f: &str) -> Error {
    Error::Validation(format!(
        "Field not permitted in query: {f} (DocType {} has no such field)",
        dt.name
    ))
}

/// Strips Frappe's `` `tabX`.`field` `` and quotes down to the bare column.
fn clean_column(f: &str) -> String {
    let f = f.trim();
    let f = f.rsplit('.').next().unwrap_or(f);
    f.trim_matches(|c| c == '`' || c == '"').to_string()
}

fn order_clause(dt: &DocType, order_by: &str) -> Result<String> {
    if order_by.trim().is_empty() {
        let f = if dt.sort_field.is_empty() || !dt.has_column(&dt.sort_field) {
            "modified"
        } else {
            &dt.sort_field
        };
        return Ok(format!("{} DESC, name DESC", q(f)));
    }
    let mut parts = Vec::new();
    for part in order_by.split(',') {
        let mut words = part.split_whitespace();
        let col = clean_column(words.next().unwrap_or(""));
        let dir = match words.next().map(|d| d.to_lowercase()) {
            None => "ASC",
            Some(d) if d == "asc" => "ASC",
            Some(d) if d == "desc" => "DESC",
            Some(d) => {
                return Err(Error::Validation(format!(
                    "order_by direction must be asc or desc, not {d}"
                )))
            }
        };
        if words.next().is_some() || !dt.has_column(&col) {
            return Err(unknown_field(dt, part.trim()));
        }
        parts.push(format!("{} {dir}", q(&col)));
    }
    Ok(parts.join(", "))
}

fn condition(
    reg: &Registry,
    dt: &DocType,
    f: &Filter,
    dialect: Dialect,
    params: &mut Vec<Param>,
) -> Result<String> {
    let field = clean_column(&f.field);
    match &f.doctype {
        Some(other) if other != &dt.name => {
            let child = reg.get(other)?;
            let holds = dt.table_fields().any(|tf| tf.options == child.name);
            if !child.istable || !holds {
                return Err(Error::Validation(format!(
                    "Filter on {other} is not allowed on a {} list",
                    dt.name
                )));
            }
            let inner = condition(
                reg,
                &child,
                &Filter {
                    doctype: None,
                    ..f.clone()
                },
                dialect,
                params,
            )?;
            Ok(format!(
                "name IN (SELECT parent FROM {} WHERE parenttype = '{}' AND {inner})",
                q(&child.table()),
                dt.name.replace('\'', "''")
            ))
        }
        _ => {
            if !dt.has_column(&field) {
                return Err(unknown_field(dt, &field));
            }
            compare(
                &q(&field),
                dt.column_storage(&field),
                f.op,
                &f.value,
                dialect,
                params,
            )
        }
    }
}

fn compare(
    col: &str,
    storage: Storage,
    op: Op,
    value: &Value,
    dialect: Dialect,
    params: &mut Vec<Param>,
) -> Result<String> {
    let mut push = |v: &Value, st: Storage| {
        params.push(Param::from_value(v, st));
        format!("${}", params.len())
    };
    Ok(match op {
        Op::Eq | Op::Ne | Op::Lt | Op::Gt | Op::Le | Op::Ge => {
            let sym = match op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Gt => ">",
                Op::Le => "<=",
                _ => ">=",
            };
            if value.is_null() {
                return Ok(if op == Op::Ne {
                    format!("{col} IS NOT NULL")
                } else {
                    format!("{col} IS NULL")
                });
            }
            let p = push(value, storage);
            if op == Op::Ne {
                format!("({col} != {p} OR {col} IS NULL)")
            } else {
                format!("{col} {sym} {p}")
            }
        }
        Op::Like | Op::NotLike => {
            let p = push(&Value::String(as_text(value)), Storage::Text);
            let target = if storage == Storage::Text {
                col.to_string()
            } else {
                format!("CAST({col} AS TEXT)")
            };
            let not = if op == Op::NotLike { "NOT " } else { "" };
            format!("{target} {not}{} {p}", dialect.like())
        }
        Op::In | Op::NotIn => {
            let items: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                Value::String(s) => s
                    .split(',')
                    .map(|x| Value::String(x.trim().to_string()))
                    .collect(),
                Value::Null => vec![],
                other => vec![other.clone()],
            };
            if items.is_empty() {
                return Ok(if op == Op::In {
                    "1 = 0".into()
                } else {
                    "1 = 1".into()
                });
            }
            let ps: Vec<String> = items.iter().map(|v| push(v, storage)).collect();
            if op == Op::In {
                format!("{col} IN ({})", ps.join(", "))
            } else {
                format!("({col} NOT IN ({}) OR {col} IS NULL)", ps.join(", "))
            }
        }
        Op::Is => match as_text(value).to_lowercase().as_str() {
            "set" => {
                if storage == Storage::Text {
                    format!("({col} IS NOT NULL AND {col} != '')")
                } else {
                    format!("{col} IS NOT NULL")
                }
            }
            "not set" => {
                if storage == Storage::Text {
                    format!("({col} IS NULL OR {col} = '')")
                } else {
                    format!("{col} IS NULL")
                }
            }
            other => {
                return Err(Error::Validation(format!(
                    "Operator \"is\" takes \"set\" or \"not set\", not \"{other}\""
                )))
            }
        },
        Op::Between => {
            let (a, b) = match value {
                Value::Array(a) if a.len() == 2 => (a[0].clone(), a[1].clone()),
                _ => {
                    return Err(Error::Validation(
                        "Operator \"between\" takes a list of two values".into(),
                    ))
                }
            };
            let pa = push(&a, storage);
            let pb = push(&b, storage);
            format!("{col} BETWEEN {pa} AND {pb}")
        }
    })
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_all_filter_forms() {
        let a = Filter::parse_many(&json!([["status", "=", "Open"]])).unwrap();
        let b = Filter::parse_many(&json!([["ToDo", "status", "=", "Open"]])).unwrap();
        let c = Filter::parse_many(&json!({"status": "Open"})).unwrap();
        let d = Filter::parse_many(&json!({"status": ["!=", "Open"]})).unwrap();
        assert_eq!(a[0].field, "status");
        assert_eq!(b[0].doctype.as_deref(), Some("ToDo"));
        assert_eq!(c[0].op, Op::Eq);
        assert_eq!(d[0].op, Op::Ne);
        assert!(Filter::parse_many(&json!("not json")).is_err());
        assert!(Filter::parse_many(&json!([["a", "~", 1]])).is_err());
    }

    #[test]
    fn refuses_unknown_columns_and_injection() {
        let reg = Registry::builtin();
        let dt = reg.get("ToDo").unwrap();
        let bad = ListQuery {
            fields: vec!["name; DROP TABLE x".into()],
            ..Default::default()
        };
        assert!(bad.to_sql(&reg, &dt, Dialect::Sqlite).is_err());
        let bad = ListQuery {
            order_by: "modified desc; DELETE".into(),
            ..Default::default()
        };
        assert!(bad.to_sql(&reg, &dt, Dialect::Sqlite).is_err());
        let ok = ListQuery {
            fields: vec!["name".into(), "status".into()],
            filters: Filter::parse_many(&json!({"status": "Open"})).unwrap(),
            page_length: 20,
            ..Default::default()
        };
        let sql = ok.to_sql(&reg, &dt, Dialect::Sqlite).unwrap();
        assert!(sql.text.contains("WHERE \"status\" = $1"), "{}", sql.text);
    }
}
