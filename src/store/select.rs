//! List queries: Frappe's `fields`, `filters`, `or_filters`, `order_by` and paging, as SQL.

use super::fields::{parse_column, parse_field, parse_order_term, Agg, ColumnRef, Expr, Field};
use super::{q, Dialect, Param};
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry, Storage};
use serde_json::Value;
use std::sync::Arc;

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
    /// Raw `order_by`; empty means the type's sort field, descending (the grouped columns
    /// when grouping, the selected ones with `distinct`).
    pub order_by: String,
    /// Raw `group_by`: columns, comma-separated.
    pub group_by: String,
    /// `SELECT DISTINCT`.
    pub distinct: bool,
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

/// The child tables a list query joins, each once.
#[derive(Default)]
struct Joins(Vec<Arc<DocType>>);

/// A column of the listed type (`dt`) or of one of its child tables, as qualified SQL.
fn column_sql(
    reg: &Registry,
    dt: &DocType,
    c: &ColumnRef,
    joins: &mut Joins,
) -> Result<(String, Storage)> {
    let column = c.column.as_str();
    match c.doctype.as_deref() {
        None => {}
        Some(d) if d == dt.name => {}
        Some(other) => {
            let child = reg.get(other)?;
            if !child.istable || !dt.table_fields().any(|tf| tf.options == child.name) {
                return Err(Error::Validation(format!(
                    "Field not permitted in query: {other} is not a child table of {}",
                    dt.name
                )));
            }
            if !child.has_column(column) {
                return Err(unknown_field(&child, column));
            }
            let sql = format!("{}.{}", q(&child.table()), q(column));
            let storage = child.column_storage(column);
            if !joins.0.iter().any(|j| j.name == child.name) {
                joins.0.push(child);
            }
            return Ok((sql, storage));
        }
    }
    if !dt.has_column(column) {
        return Err(unknown_field(dt, column));
    }
    Ok((
        format!("{}.{}", q(&dt.table()), q(column)),
        dt.column_storage(column),
    ))
}

/// An expression as SQL; true when it is an aggregate.
fn expr_sql(reg: &Registry, dt: &DocType, e: &Expr, joins: &mut Joins) -> Result<(String, bool)> {
    let (func, distinct, arg) = match e {
        Expr::Column(c) => return Ok((column_sql(reg, dt, c, joins)?.0, false)),
        Expr::Aggregate {
            func,
            distinct,
            arg,
        } => (*func, *distinct, arg),
    };
    let Some(arg) = arg else {
        return Ok(("COUNT(*)".into(), true));
    };
    let (col, storage) = column_sql(reg, dt, arg, joins)?;
    let d = if distinct { "DISTINCT " } else { "" };
    let numeric = matches!(storage, Storage::Int | Storage::Float);
    if matches!(func, Agg::Sum | Agg::Avg) && !numeric {
        return Err(Error::Validation(format!(
            "Field not permitted in query: sum() and avg() take a number field, and {} is not one",
            arg.column
        )));
    }
    // Casts give both backends one result type (PostgreSQL's SUM of a BIGINT is NUMERIC).
    let sql = match func {
        Agg::Count => format!("COUNT({d}{col})"),
        Agg::Sum if storage == Storage::Int => format!("CAST(SUM({d}{col}) AS BIGINT)"),
        Agg::Sum => format!("CAST(SUM({d}{col}) AS DOUBLE PRECISION)"),
        Agg::Avg => format!("CAST(AVG({d}{col}) AS DOUBLE PRECISION)"),
        Agg::Min => format!("MIN({d}{col})"),
        Agg::Max => format!("MAX({d}{col})"),
    };
    Ok((sql, true))
}

/// One selected expression: its SQL, its key and whether it aggregates.
struct Selected {
    sql: String,
    key: String,
    aggregate: bool,
}

impl ListQuery {
    /// Builds the SELECT for this query on `dt`.
    pub fn to_sql(&self, reg: &Registry, dt: &DocType, dialect: Dialect) -> Result<Sql> {
        for (what, n) in [
            ("limit_start", self.start),
            ("limit_page_length", self.page_length),
        ] {
            if i64::try_from(n).is_err() {
                return Err(Error::Validation(format!(
                    "{what} {n} is too large: paging numbers must be below 2^63"
                )));
            }
        }
        let mut joins = Joins::default();
        let selected = self.selected(reg, dt, &mut joins)?;
        let mut group = Vec::new();
        for part in self.group_by.split(',').filter(|p| !p.trim().is_empty()) {
            group.push(column_sql(reg, dt, &parse_column(part)?, &mut joins)?.0);
        }
        let grouped = !group.is_empty() || selected.iter().any(|s| s.aggregate);
        if grouped {
            if let Some(s) = selected
                .iter()
                .find(|s| !s.aggregate && !group.contains(&s.sql))
            {
                return Err(Error::Validation(format!(
                    "Field not permitted in query: {} must be listed in group_by or be inside an aggregate",
                    s.key
                )));
            }
        }
        let mut params = Vec::new();
        let where_sql = self.where_clause(reg, dt, dialect, &mut params)?;
        let order = self.order(reg, dt, &selected, &group, &mut joins)?;
        let table = q(&dt.table());
        let mut from = table.clone();
        for child in &joins.0 {
            let ct = q(&child.table());
            from.push_str(&format!(
                " LEFT JOIN {ct} ON {ct}.parent = {table}.name AND {ct}.parenttype = '{}'",
                dt.name.replace('\'', "''")
            ));
        }
        let cols: Vec<String> = selected
            .iter()
            .map(|s| format!("{} AS {}", s.sql, q(&s.key)))
            .collect();
        let mut text = format!(
            "SELECT {}{} FROM {from}{where_sql}",
            if self.distinct { "DISTINCT " } else { "" },
            cols.join(", ")
        );
        if !group.is_empty() {
            text.push_str(&format!(" GROUP BY {}", group.join(", ")));
        }
        if !order.is_empty() {
            text.push_str(&format!(" ORDER BY {order}"));
        }
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

    fn selected(&self, reg: &Registry, dt: &DocType, joins: &mut Joins) -> Result<Vec<Selected>> {
        let mut out = Vec::new();
        let plain = |c: &str| Field {
            expr: Expr::Column(ColumnRef {
                doctype: None,
                column: c.to_string(),
            }),
            key: c.to_string(),
        };
        let mut fields = Vec::new();
        if self.fields.is_empty() {
            fields.push(plain("name"));
        }
        for f in &self.fields {
            if f.trim() == "*" {
                fields.extend(dt.columns().map(plain));
            } else {
                fields.push(parse_field(f)?);
            }
        }
        for f in fields {
            let (sql, aggregate) = expr_sql(reg, dt, &f.expr, joins)?;
            out.push(Selected {
                sql,
                key: f.key,
                aggregate,
            });
        }
        Ok(out)
    }

    fn order(
        &self,
        reg: &Registry,
        dt: &DocType,
        selected: &[Selected],
        group: &[String],
        joins: &mut Joins,
    ) -> Result<String> {
        let grouped = !group.is_empty() || selected.iter().any(|s| s.aggregate);
        if self.order_by.trim().is_empty() {
            // What the rows can be ordered by: PostgreSQL refuses other columns when grouping
            // or with DISTINCT.
            return Ok(if grouped {
                group.join(", ")
            } else if self.distinct {
                selected
                    .iter()
                    .map(|s| s.sql.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                default_order(dt)
            });
        }
        let mut parts = Vec::new();
        for part in self.order_by.split(',') {
            let part = part.trim();
            let (term, dir) = match part.rsplit_once(char::is_whitespace) {
                Some((t, d)) if d.eq_ignore_ascii_case("asc") => (t.trim(), "ASC"),
                Some((t, d)) if d.eq_ignore_ascii_case("desc") => (t.trim(), "DESC"),
                _ => (part, "ASC"),
            };
            let by_key = selected
                .iter()
                .find(|s| s.key == term.trim_matches(['`', '"']));
            let (sql, aggregate) = match by_key {
                Some(s) => (s.sql.clone(), s.aggregate),
                None => expr_sql(reg, dt, &parse_order_term(term)?, joins)?,
            };
            let allowed = if grouped {
                aggregate || group.contains(&sql)
            } else if self.distinct {
                selected.iter().any(|s| s.sql == sql)
            } else {
                // An aggregate in ORDER BY makes the query one group: refused, as the
                // database would (SQLite and PostgreSQL both fail on it).
                !aggregate
            };
            if !allowed && aggregate && !grouped {
                return Err(Error::Validation(format!(
                    "Field not permitted in query: order_by {term} is an aggregate; add group_by, or select only aggregates"
                )));
            }
            if !allowed {
                return Err(Error::Validation(format!(
                    "Field not permitted in query: order_by {term} must be a grouped or selected column"
                )));
            }
            parts.push(format!("{sql} {dir}"));
        }
        Ok(parts.join(", "))
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
            and_parts.push(balanced(&or_parts, "OR"));
        }
        if params.len() > MAX_QUERY_VALUES {
            return Err(Error::Validation(format!(
                "The filters hold {} values; a list query takes at most {MAX_QUERY_VALUES}: split it into several queries",
                params.len()
            )));
        }
        Ok(if and_parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", balanced(&and_parts, "AND"))
        })
    }
}

/// Most values the filters of one list query may bind (SQLite allows 32,766 per statement,
/// PostgreSQL 65,535).
const MAX_QUERY_VALUES: usize = 30_000;

/// `parts` joined by `op` as a balanced tree of parentheses: a flat chain of thousands of
/// terms is as deep as it is long, past SQLite's expression depth (1,000).
fn balanced(parts: &[String], op: &str) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        _ => {
            let (left, right) = parts.split_at(parts.len() / 2);
            format!("({} {op} {})", balanced(left, op), balanced(right, op))
        }
    }
}

fn unknown_field(dt: &DocType, f: &str) -> Error {
    Error::Validation(format!(
        "Field not permitted in query: {f} (DocType {} has no such field)",
        dt.name
    ))
}

/// The type's sort field, newest first.
fn default_order(dt: &DocType) -> String {
    let f = if dt.sort_field.is_empty() || !dt.has_column(&dt.sort_field) {
        "modified"
    } else {
        &dt.sort_field
    };
    let t = q(&dt.table());
    format!("{t}.{} DESC, {t}.name DESC", q(f))
}

fn condition(
    reg: &Registry,
    dt: &DocType,
    f: &Filter,
    dialect: Dialect,
    params: &mut Vec<Param>,
) -> Result<String> {
    let field = parse_column(&f.field)?;
    let doctype = f.doctype.clone().or(field.doctype);
    let field = field.column;
    match &doctype {
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
                "{}.name IN (SELECT parent FROM {} WHERE parenttype = '{}' AND {inner})",
                q(&dt.table()),
                q(&child.table()),
                dt.name.replace('\'', "''")
            ))
        }
        _ => {
            if !dt.has_column(&field) {
                return Err(unknown_field(dt, &field));
            }
            compare(
                &format!("{}.{}", q(&dt.table()), q(&field)),
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
            let mut pattern = as_text(value);
            // PostgreSQL's LIKE escapes with `\` and refuses a pattern that ends in a lone one;
            // it is taken as the backslash it is on SQLite (which has no escape character).
            let trailing = pattern.chars().rev().take_while(|c| *c == '\\').count();
            if dialect == Dialect::Postgres && trailing % 2 == 1 {
                pattern.push('\\');
            }
            let p = push(&Value::String(pattern), Storage::Text);
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
        assert!(
            sql.text.contains("WHERE \"tabToDo\".\"status\" = $1"),
            "{}",
            sql.text
        );
    }
}
