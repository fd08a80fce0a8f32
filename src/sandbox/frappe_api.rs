//! The `frappe` namespace scripts see: `frappe.db.*` (read-only, through [`SandboxDb`]) and
//! `frappe.utils.*` (dates as Frappe's strings, numbers coerced as Frappe does).
// Frappe's functions take many keyword arguments; the macro turns each into a parameter.
#![allow(clippy::too_many_arguments)]

use super::convert::{to_json, to_starlark};
use super::Context;
use chrono::{Duration, NaiveDate};
use serde_json::Value;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value as SValue;

/// Adds `frappe` to the globals.
pub fn register(builder: &mut GlobalsBuilder) {
    builder.namespace("frappe", |b| {
        b.namespace("db", db_functions);
        b.namespace("utils", utils_functions);
    });
}

fn context<'a>(eval: &'a Evaluator) -> anyhow::Result<&'a Context<'a>> {
    eval.extra
        .and_then(|e| e.downcast_ref::<Context>())
        .ok_or_else(|| anyhow::anyhow!("frappe is not available in this evaluation"))
}

/// Filters as Frappe takes them: a name, a dict or a list; None for none.
fn filters_of(v: Option<SValue>) -> anyhow::Result<Value> {
    let Some(v) = v else {
        return Ok(Value::Null);
    };
    if v.is_none() {
        return Ok(Value::Null);
    }
    if let Some(s) = v.unpack_str() {
        return Ok(serde_json::json!({ "name": s }));
    }
    Ok(to_json(v)?)
}

/// Field names: one string or a list of strings.
fn fields_of(v: Option<SValue>, default: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok((vec![default.to_string()], false));
    };
    if let Some(s) = v.unpack_str() {
        return Ok((vec![s.to_string()], false));
    }
    match to_json(v)? {
        Value::Array(items) => Ok((
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect(),
            true,
        )),
        other => Err(anyhow::anyhow!(
            "fields must be a string or a list, not {other}"
        )),
    }
}

fn err(e: String) -> anyhow::Error {
    anyhow::anyhow!(e)
}

#[starlark_module]
fn db_functions(builder: &mut GlobalsBuilder) {
    fn get_value<'v>(
        #[starlark(require = pos)] doctype: &str,
        filters: Option<SValue<'v>>,
        fieldname: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<SValue<'v>> {
        let filters = filters_of(filters)?;
        let (fields, many) = fields_of(fieldname, "name")?;
        let v = context(eval)?
            .db
            .get_value(doctype, &filters, &fields)
            .map_err(err)?;
        let v = match v {
            Value::Array(mut a) if !many && a.len() == 1 => a.remove(0),
            other => other,
        };
        Ok(to_starlark(eval.heap(), &v, true))
    }

    fn get_all<'v>(
        #[starlark(require = pos)] doctype: &str,
        filters: Option<SValue<'v>>,
        fields: Option<SValue<'v>>,
        #[starlark(require = named)] order_by: Option<&str>,
        #[starlark(require = named)] limit: Option<i32>,
        #[starlark(require = named)] limit_page_length: Option<i32>,
        #[starlark(require = named)] pluck: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<SValue<'v>> {
        let filters = filters_of(filters)?;
        let (mut fields, _) = fields_of(fields, "name")?;
        if let Some(p) = pluck {
            fields = vec![p.to_string()];
        }
        let limit = limit.or(limit_page_length).map(|l| l.max(0) as u64);
        let rows = context(eval)?
            .db
            .get_all(doctype, &filters, &fields, order_by, limit)
            .map_err(err)?;
        let out = match pluck {
            Some(p) => Value::Array(
                rows.into_iter()
                    .map(|r| r.get(p).cloned().unwrap_or(Value::Null))
                    .collect(),
            ),
            None => Value::Array(rows),
        };
        Ok(to_starlark(eval.heap(), &out, true))
    }

    fn get_list<'v>(
        #[starlark(require = pos)] doctype: &str,
        filters: Option<SValue<'v>>,
        fields: Option<SValue<'v>>,
        #[starlark(require = named)] order_by: Option<&str>,
        #[starlark(require = named)] limit: Option<i32>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<SValue<'v>> {
        let filters = filters_of(filters)?;
        let (fields, _) = fields_of(fields, "name")?;
        let rows = context(eval)?
            .db
            .get_all(
                doctype,
                &filters,
                &fields,
                order_by,
                limit.map(|l| l.max(0) as u64),
            )
            .map_err(err)?;
        Ok(to_starlark(eval.heap(), &Value::Array(rows), true))
    }

    fn count<'v>(
        #[starlark(require = pos)] doctype: &str,
        filters: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<i32> {
        let filters = filters_of(filters)?;
        let n = context(eval)?.db.count(doctype, &filters).map_err(err)?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    fn exists<'v>(
        #[starlark(require = pos)] doctype: &str,
        filters: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<SValue<'v>> {
        let filters = filters_of(filters)?;
        let v = context(eval)?
            .db
            .get_value(doctype, &filters, &["name".to_string()])
            .map_err(err)?;
        let v = match v {
            Value::Array(mut a) if a.len() == 1 => a.remove(0),
            other => other,
        };
        Ok(to_starlark(eval.heap(), &v, false))
    }

    fn sql<'v>(
        #[starlark(require = pos)] query: &str,
        values: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<SValue<'v>> {
        let values = match values.filter(|v| !v.is_none()) {
            None => Value::Null,
            Some(v) => to_json(v)?,
        };
        let rows = context(eval)?.db.sql(query, &values).map_err(err)?;
        let out = Value::Array(rows.into_iter().map(Value::Array).collect());
        Ok(to_starlark(eval.heap(), &out, false))
    }
}

fn date_of(s: &str) -> anyhow::Result<NaiveDate> {
    crate::time::normalize_date(s.get(..10).unwrap_or(s))
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn text_of(v: SValue) -> String {
    match v.unpack_str() {
        Some(s) => s.to_string(),
        None if v.is_none() => String::new(),
        None => v.to_str(),
    }
}

#[starlark_module]
fn utils_functions(builder: &mut GlobalsBuilder) {
    fn now(eval: &mut Evaluator) -> anyhow::Result<String> {
        Ok(context(eval)?.now.clone())
    }

    fn nowdate(eval: &mut Evaluator) -> anyhow::Result<String> {
        Ok(context(eval)?.now.chars().take(10).collect())
    }

    fn today(eval: &mut Evaluator) -> anyhow::Result<String> {
        Ok(context(eval)?.now.chars().take(10).collect())
    }

    fn getdate<'v>(
        value: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let s = value.map(text_of).unwrap_or_default();
        if s.is_empty() {
            return Ok(context(eval)?.now.chars().take(10).collect());
        }
        Ok(date_of(&s)?.format("%Y-%m-%d").to_string())
    }

    fn get_datetime<'v>(
        value: Option<SValue<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let s = value.map(text_of).unwrap_or_default();
        if s.is_empty() {
            return Ok(context(eval)?.now.clone());
        }
        crate::time::normalize_datetime(&s)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not a datetime"))
    }

    fn add_days<'v>(
        #[starlark(require = pos)] date: SValue<'v>,
        #[starlark(require = pos)] days: i32,
    ) -> anyhow::Result<String> {
        let d = date_of(&text_of(date))? + Duration::days(days as i64);
        Ok(d.format("%Y-%m-%d").to_string())
    }

    fn date_diff<'v>(
        #[starlark(require = pos)] a: SValue<'v>,
        #[starlark(require = pos)] b: SValue<'v>,
    ) -> anyhow::Result<i32> {
        let days = (date_of(&text_of(a))? - date_of(&text_of(b))?).num_days();
        Ok(days as i32)
    }

    fn cint<'v>(#[starlark(require = pos)] value: SValue<'v>) -> anyhow::Result<i32> {
        if let Some(i) = value.unpack_i32() {
            return Ok(i);
        }
        if let Some(b) = value.unpack_bool() {
            return Ok(b as i32);
        }
        let s = text_of(value);
        Ok(s.trim()
            .parse::<f64>()
            .map(|f| f.trunc() as i32)
            .unwrap_or(0))
    }

    fn flt<'v>(
        #[starlark(require = pos)] value: SValue<'v>,
        precision: Option<SValue<'v>>,
    ) -> anyhow::Result<f64> {
        let f = if let Some(i) = value.unpack_i32() {
            i as f64
        } else if let Some(b) = value.unpack_bool() {
            b as i32 as f64
        } else {
            match to_json(value) {
                Ok(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
                _ => text_of(value)
                    .trim()
                    .replace(',', "")
                    .parse()
                    .unwrap_or(0.0),
            }
        };
        Ok(match precision.and_then(|p| p.unpack_i32()) {
            Some(p) => {
                let m = 10f64.powi(p.clamp(0, 15));
                (f * m).round() / m
            }
            None => f,
        })
    }

    fn cstr<'v>(#[starlark(require = pos)] value: SValue<'v>) -> anyhow::Result<String> {
        Ok(text_of(value))
    }
}
