//! Per-consumer rules of a producer: fields and child tables of a type that are not sent to
//! one consumer (an Event Consumer row's **Leave Out**). A head office's Items name its own
//! company in `item_defaults` and `reorder_levels`, its Customers in `credit_limits` and
//! `accounts`: a branch of another company fills its own, and a Frappe consumer would
//! otherwise fetch the head office's Company, warehouses and accounts as dependencies.
//! Applied to the update logs a consumer pulls and to what verification compares with it.
//! Must not change what is stored: only what one consumer is sent.

use serde_json::Value;

/// The field names of a Leave Out text (one per line; commas and spaces also separate).
pub fn fields(text: &str) -> Vec<String> {
    text.split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// A log's `data` (the document of a Create, the diff of an Update, as JSON text or a value)
/// without the fields left out; other kinds and unreadable data are returned as they are.
pub fn strip(update_type: &str, data: &Value, left_out: &[String]) -> Value {
    let parsed;
    let value = match data {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                parsed = v;
                &parsed
            }
            Err(_) => return data.clone(),
        },
        other => other,
    };
    let mut out = value.clone();
    match update_type {
        "Create" => remove_keys(&mut out, left_out),
        "Update" => {
            for part in ["changed", "added", "removed", "row_changed"] {
                if let Some(p) = out.get_mut(part) {
                    remove_keys(p, left_out);
                }
            }
        }
        _ => return data.clone(),
    }
    match data {
        Value::String(_) => Value::String(out.to_string()),
        _ => out,
    }
}

fn remove_keys(v: &mut Value, keys: &[String]) {
    if let Some(map) = v.as_object_mut() {
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_left_out_of_creates_and_updates() {
        let out = fields("item_defaults\nreorder_levels, accounts");
        assert_eq!(out, ["item_defaults", "reorder_levels", "accounts"]);
        let doc = json!({"item_code": "A", "item_defaults": [{"company": "HO"}]}).to_string();
        let stripped = strip("Create", &Value::String(doc), &out);
        let back: Value = serde_json::from_str(stripped.as_str().unwrap()).unwrap();
        assert_eq!(back, json!({"item_code": "A"}));
        let diff = json!({"changed": {"description": "x"}, "added": {"item_defaults": [{}]},
                          "removed": {}, "row_changed": {"reorder_levels": [{}], "uoms": [{}]}});
        let back = strip("Update", &diff, &out);
        assert_eq!(
            back,
            json!({"changed": {"description": "x"}, "added": {}, "removed": {},
                   "row_changed": {"uoms": [{}]}})
        );
        assert_eq!(strip("Delete", &Value::Null, &out), Value::Null);
    }
}
