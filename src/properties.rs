//! Property tests of the parsers that take outside input: list query `fields`, `filters`,
//! `group_by` and `order_by`; request arguments; update-log diffs; pull pages; Starlark
//! conditions. `cargo test` runs each with proptest's default case count;
//! `scripts/fuzz.sh` runs them for longer (`PROPTEST_CASES`).
//!
//! (Property tests rather than `cargo fuzz`: cargo-fuzz needs a nightly toolchain, and the
//! machines this builds on have one stable toolchain.)

use crate::api::Args;
use crate::meta::Registry;
use crate::store::{Dialect, Filter, ListQuery};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Text made of what SQL injection and Frappe's expressions are made of.
fn hostile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("name".to_string()),
            Just("status".to_string()),
            Just("`tabToDo`".to_string()),
            Just("`tabNote Seen By`".to_string()),
            Just("count(".to_string()),
            Just("sum(".to_string()),
            Just(" as ".to_string()),
            Just(" distinct ".to_string()),
            Just("select".to_string()),
            "[ -~]{0,3}",
            Just("\u{0}".to_string()),
            Just("é".to_string()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(hostile_text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Cases for the slow properties (an evaluation may run to its limits): few in `cargo test`,
/// `PROPTEST_CASES` when it is set (`scripts/fuzz.sh`).
fn slow_cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    ProptestConfig::with_cases(cases)
}

proptest! {
    /// A list query either is refused or is SQL made only of what the builder writes: no
    /// statement separators or comments, and one bound parameter per placeholder.
    #[test]
    fn list_queries_never_carry_input_into_sql(
        fields in prop::collection::vec(hostile_text(), 0..4),
        group_by in hostile_text(),
        order_by in hostile_text(),
        filters in json_value(),
    ) {
        let reg = Registry::builtin();
        for doctype in ["ToDo", "Note", "Sales Invoice"] {
            let dt = reg.get(doctype).unwrap();
            let q = ListQuery {
                fields: fields.clone(),
                filters: Filter::parse_many(&filters).unwrap_or_default(),
                group_by: group_by.clone(),
                order_by: order_by.clone(),
                page_length: 20,
                ..Default::default()
            };
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                if let Ok(sql) = q.to_sql(&reg, &dt, dialect) {
                    prop_assert!(!sql.text.contains(';'), "{}", sql.text);
                    prop_assert!(!sql.text.contains("--"), "{}", sql.text);
                    prop_assert!(!sql.text.contains("/*"), "{}", sql.text);
                    let placeholders = (1..=sql.params.len() + 1)
                        .filter(|n| sql.text.contains(&format!("${n}")))
                        .count();
                    prop_assert_eq!(placeholders, sql.params.len(), "{}", sql.text);
                }
            }
        }
    }

    /// Any query string, content type and body: parsed or refused, never a panic, and never
    /// an argument holding a NUL.
    #[test]
    fn request_arguments_parse_or_refuse(
        query in hostile_text(),
        content_type in prop_oneof![Just("application/json"), Just("application/x-www-form-urlencoded"), Just("multipart/form-data"), Just("")],
        body in prop_oneof![hostile_text(), json_value().prop_map(|v| v.to_string())],
    ) {
        if let Ok(args) = Args::parse(Some(&query), content_type, body.as_bytes()) {
            let all = Value::Object(args.map.clone());
            prop_assert!(!has_nul(&all), "{}", all);
            for k in ["filters", "fields", "doc"] {
                let _ = args.json(k);
                let _ = args.object(k);
            }
            let _ = args.document();
            let _ = args.uint("limit");
        }
    }

    /// A diff is empty exactly when the data fields and rows are the same; its added rows
    /// carry their parent fields.
    #[test]
    fn diffs_see_every_change(
        a in prop::collection::vec((hostile_text(), any::<bool>()), 0..4),
        b in prop::collection::vec((hostile_text(), any::<bool>()), 0..4),
        title_a in hostile_text(),
        title_b in hostile_text(),
    ) {
        let reg = Registry::builtin();
        let dt = reg.get("Note").unwrap();
        let rows = |v: &[(String, bool)]| -> Vec<Value> {
            v.iter().enumerate().map(|(i, (user, keep_name))| {
                let name = if *keep_name { format!("row{i}") } else { format!("new{i}") };
                json!({"name": name, "user": user, "idx": i + 1})
            }).collect()
        };
        let doc = |title: &str, r: Vec<Value>| {
            let mut d = crate::store::Doc::new();
            d.insert("name".into(), json!("N1"));
            d.insert("title".into(), json!(title));
            d.insert("docstatus".into(), json!(0));
            d.insert("seen_by".into(), Value::Array(r));
            d
        };
        let (old, new) = (doc(&title_a, rows(&a)), doc(&title_b, rows(&b)));
        let same = crate::service::diff::diff(&reg, &dt, &old, &old).unwrap();
        prop_assert!(same.is_empty());
        let d = crate::service::diff::diff(&reg, &dt, &old, &new).unwrap();
        let title_changed = !(title_a.is_empty() && title_b.is_empty()) && title_a != title_b;
        if title_changed {
            prop_assert!(d.changed.contains_key("title"));
        }
        if let Some(Value::Array(added)) = d.added.get("seen_by") {
            for r in added {
                for k in ["doctype", "name", "parent", "parentfield", "parenttype", "idx"] {
                    prop_assert!(!r[k].is_null(), "{} missing in {}", k, r);
                }
            }
        }
        if rows(&a) == rows(&b) && !title_changed {
            prop_assert!(d.is_empty());
        }
    }

    /// A pull page survives its round trip, bound to its request or not, and any byte flipped
    /// or cut off is refused.
    #[test]
    fn pull_pages_refuse_any_damage(
        seqs in prop::collection::btree_set(1i64..10_000, 0..6),
        data in hostile_text(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..7,
        bound in any::<bool>(),
    ) {
        use crate::streaming::page::{bind, decode, encode, Asked, Echo};
        let logs: Vec<Value> = seqs.iter().map(|s| json!({"seq": s, "data": data})).collect();
        let last = seqs.iter().max().copied().unwrap_or(0) + 1;
        let echo = Echo { after_seq: "0", consumer: &data, doctypes: r#"["ToDo"]"# };
        let asked = Asked { after_seq: 0, echo: Some(echo), must_bind: bound };
        let mut body = encode(&logs, last, false);
        if bound {
            body = bind(&body, &echo);
        }
        let page = decode("p", &body, &asked).unwrap();
        prop_assert_eq!(page.bound, bound);
        prop_assert_eq!(page.logs, logs);
        let mut bytes = body.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(text) = String::from_utf8(bytes) {
            prop_assert!(decode("p", &text, &asked).is_err(), "{}", text);
        }
        if body.is_char_boundary(i) {
            prop_assert!(decode("p", &body[..i], &asked).is_err());
        }
    }

}

proptest! {
    #![proptest_config(slow_cases())]

    /// Conditions end within their limits, whatever they say.
    #[test]
    fn conditions_end_within_their_limits(src in prop_oneof![
        hostile_text(),
        "[a-z_. =<>!()\\[\\]0-9+*\"']{0,40}",
        Just("[x for x in range(100000000)]".to_string()),
        Just("'a' * 100000000".to_string()),
    ]) {
        let doc = json!({"public": 1, "title": "t", "items": [{"qty": 2}]});
        let vars = [crate::sandbox::Var { name: "doc", value: &doc, by_attribute: true }];
        let started = std::time::Instant::now();
        let _ = crate::sandbox::eval_expression(
            &src,
            &vars,
            &crate::sandbox::NoDb,
            "2026-01-01 00:00:00.000000",
            &crate::sandbox::Limits::default(),
        );
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
