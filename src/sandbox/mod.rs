//! Conditions, `eval:` expressions and Server Scripts: a Python dialect (Starlark) evaluated in
//! a sandbox with no file, network or write access, and step, heap and time limits.
//!
//! The database is reached only through [`SandboxDb`], which the caller implements (read-only).
//! This module knows nothing of sites, HTTP or SQL dialects.

mod convert;
mod frappe_api;

use serde_json::Value;
use starlark::any::ProvidesStaticType;
use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use std::time::{Duration, Instant};

/// Read-only database access offered to scripts as `frappe.db`.
pub trait SandboxDb {
    /// `frappe.db.get_value(doctype, filters, fieldname)`: one value, a list for several
    /// fields, or null when nothing matches. `filters` null reads a single type.
    fn get_value(&self, doctype: &str, filters: &Value, fields: &[String])
        -> Result<Value, String>;
    /// `frappe.db.get_all(doctype, filters, fields, order_by, limit)`: rows as objects.
    fn get_all(
        &self,
        doctype: &str,
        filters: &Value,
        fields: &[String],
        order_by: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<Value>, String>;
    /// `frappe.db.count(doctype, filters)`.
    fn count(&self, doctype: &str, filters: &Value) -> Result<i64, String>;
    /// `frappe.db.sql(query, values)`: one SELECT in a read-only transaction, rows as lists.
    fn sql(&self, query: &str, values: &Value) -> Result<Vec<Vec<Value>>, String>;
}

/// A database for checks at save time: every call is refused.
pub struct NoDb;

impl SandboxDb for NoDb {
    fn get_value(&self, _: &str, _: &Value, _: &[String]) -> Result<Value, String> {
        Err("the database is not available here".into())
    }
    fn get_all(
        &self,
        _: &str,
        _: &Value,
        _: &[String],
        _: Option<&str>,
        _: Option<u64>,
    ) -> Result<Vec<Value>, String> {
        Err("the database is not available here".into())
    }
    fn count(&self, _: &str, _: &Value) -> Result<i64, String> {
        Err("the database is not available here".into())
    }
    fn sql(&self, _: &str, _: &Value) -> Result<Vec<Vec<Value>>, String> {
        Err("the database is not available here".into())
    }
}

/// Why an expression or script did not give a value.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The source does not parse; the message carries the line and column.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Evaluation raised, hit a limit or returned something unusable.
    #[error("{0}")]
    Runtime(String),
}

/// What one evaluation may spend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Starlark instruction ticks.
    pub ticks: u64,
    /// Bytes of Starlark heap.
    pub heap_bytes: usize,
    /// Wall-clock time.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ticks: 2_000_000,
            heap_bytes: 64 << 20,
            time: Duration::from_secs(2),
        }
    }
}

/// A value handed to the script under a name.
pub struct Var<'a> {
    /// The name the script sees.
    pub name: &'a str,
    /// The value; objects become structs read by attribute (`doc.public`) when `by_attribute`.
    pub value: &'a Value,
    /// Objects as structs (attribute access) rather than dicts.
    pub by_attribute: bool,
}

/// What native functions see of the evaluation (through `Evaluator::extra`).
#[derive(ProvidesStaticType)]
struct Context<'a> {
    db: &'a dyn SandboxDb,
    now: String,
}

fn dialect() -> Dialect {
    Dialect {
        enable_load: false,
        enable_top_level_stmt: true,
        ..Dialect::Extended
    }
}

fn globals() -> &'static Globals {
    static GLOBALS: std::sync::OnceLock<Globals> = std::sync::OnceLock::new();
    GLOBALS.get_or_init(|| {
        GlobalsBuilder::extended_by(&[
            LibraryExtension::StructType,
            LibraryExtension::Map,
            LibraryExtension::Filter,
            LibraryExtension::Json,
        ])
        .with(frappe_api::register)
        .build()
    })
}

fn parse(name: &str, src: &str) -> Result<AstModule, SandboxError> {
    AstModule::parse(name, src.to_string(), &dialect())
        .map_err(|e| SandboxError::Syntax(first_line_with_location(&e.to_string())))
}

/// Starlark's diagnostics span several lines; keep the message and its `file:line:col`.
fn first_line_with_location(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("error:")
        .trim();
    match msg.lines().find_map(|l| l.trim().strip_prefix("--> ")) {
        Some(loc) => format!("{head} (at {})", readable_location(loc)),
        None => head.to_string(),
    }
}

/// Starlark's `condition:1:14` (or `condition:1:14-20`) as a person reads it: `line 1, column
/// 14 of the condition`.
fn readable_location(loc: &str) -> String {
    let mut parts = loc.splitn(3, ':');
    let (what, line, rest) = (parts.next(), parts.next(), parts.next());
    let column = rest.map(|r| r.split(['-', ':']).next().unwrap_or(r));
    match (what, line, column) {
        (Some(what), Some(line), Some(column))
            if line.parse::<u32>().is_ok() && column.parse::<u32>().is_ok() =>
        {
            format!("line {line}, column {column} of the {what}")
        }
        _ => loc.to_string(),
    }
}

/// Checks that an expression parses; the error names line and column.
pub fn check_expression(src: &str) -> Result<(), SandboxError> {
    parse("condition", src).map(|_| ())
}

/// Checks that a script parses and defines `function` (its top level runs without database).
pub fn check_script(src: &str, function: &str) -> Result<(), SandboxError> {
    let ast = parse("script", src)?;
    Module::with_temp_heap(|module| {
        let ctx = Context {
            db: &NoDb,
            now: String::new(),
        };
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&ctx);
        eval.eval_module(ast, globals())
            .map_err(|e| SandboxError::Runtime(first_line_with_location(&e.to_string())))?;
        match module.get(function) {
            Some(f) if f.get_type() == "function" => Ok(()),
            _ => Err(SandboxError::Runtime(format!(
                "the script does not define a function named {function}"
            ))),
        }
    })
}

fn limit_evaluator(eval: &mut Evaluator, limits: &Limits) -> Result<(), SandboxError> {
    let internal = |e: anyhow::Error| SandboxError::Runtime(e.to_string());
    eval.set_max_tick_count(limits.ticks).map_err(internal)?;
    eval.set_max_heap_size(limits.heap_bytes)
        .map_err(internal)?;
    let deadline = Instant::now() + limits.time;
    eval.set_check_cancelled(Box::new(move || Instant::now() > deadline));
    Ok(())
}

fn runtime(e: starlark::Error, limits: &Limits) -> SandboxError {
    let msg = first_line_with_location(&e.to_string());
    if msg.contains("cancelled") || msg.contains("Cancelled") {
        return SandboxError::Runtime(format!(
            "took longer than {} ms and was stopped",
            limits.time.as_millis()
        ));
    }
    SandboxError::Runtime(msg)
}

/// Evaluates an expression (or statements ending in one) with `vars` in scope.
pub fn eval_expression(
    src: &str,
    vars: &[Var],
    db: &dyn SandboxDb,
    now: &str,
    limits: &Limits,
) -> Result<Value, SandboxError> {
    let ast = parse("expression", src)?;
    Module::with_temp_heap(|module| {
        for v in vars {
            let value = convert::to_starlark(module.heap(), v.value, v.by_attribute);
            module.set(v.name, value);
        }
        let ctx = Context {
            db,
            now: now.to_string(),
        };
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&ctx);
        limit_evaluator(&mut eval, limits)?;
        let out = eval
            .eval_module(ast, globals())
            .map_err(|e| runtime(e, limits))?;
        convert::to_json(out)
    })
}

/// Runs a script and calls its `function` with `args` (objects by attribute).
pub fn call_function(
    src: &str,
    function: &str,
    args: &[&Value],
    db: &dyn SandboxDb,
    now: &str,
    limits: &Limits,
) -> Result<Value, SandboxError> {
    let ast = parse("script", src)?;
    Module::with_temp_heap(|module| {
        let ctx = Context {
            db,
            now: now.to_string(),
        };
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&ctx);
        limit_evaluator(&mut eval, limits)?;
        eval.eval_module(ast, globals())
            .map_err(|e| runtime(e, limits))?;
        let f = module.get(function).ok_or_else(|| {
            SandboxError::Runtime(format!(
                "the script does not define a function named {function}"
            ))
        })?;
        let heap = module.heap();
        let args: Vec<_> = args
            .iter()
            .map(|a| convert::to_starlark(heap, a, true))
            .collect();
        let out = eval
            .eval_function(f, &args, &[])
            .map_err(|e| runtime(e, limits))?;
        convert::to_json(out)
    })
}

/// Python truthiness of a JSON result.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests;
