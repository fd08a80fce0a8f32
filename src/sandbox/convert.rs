//! JSON values in and out of the Starlark heap.

use super::SandboxError;
use serde_json::Value;
use starlark::values::structs::AllocStruct;
use starlark::values::{Heap, Value as SValue};

/// Allocates a JSON value; objects become structs when `by_attribute` (so `doc.field` works),
/// else dicts.
pub fn to_starlark<'v>(heap: Heap<'v>, v: &Value, by_attribute: bool) -> SValue<'v> {
    match v {
        Value::Object(map) if by_attribute => {
            let fields: Vec<(String, SValue<'v>)> = map
                .iter()
                .filter(|(k, _)| is_identifier(k))
                .map(|(k, v)| (k.clone(), to_starlark(heap, v, true)))
                .collect();
            heap.alloc(AllocStruct(fields))
        }
        Value::Array(items) => {
            let items: Vec<SValue<'v>> = items
                .iter()
                .map(|i| to_starlark(heap, i, by_attribute))
                .collect();
            heap.alloc(items)
        }
        other => heap.alloc(other.clone()),
    }
}

fn is_identifier(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a result back as JSON (structs become objects, tuples lists).
pub fn to_json(v: SValue) -> Result<Value, SandboxError> {
    v.to_json_value().map_err(|e| {
        SandboxError::Runtime(format!(
            "the result ({}) cannot be read as data: {e}",
            v.get_type()
        ))
    })
}
