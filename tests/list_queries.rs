//! List queries with Frappe's semantics over HTTP: group_by, distinct, aggregates and aliases,
//! child-table columns and filters; every other form of `fields` refused by name.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn list(site: &TestSite, doctype: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let (s, b) = site
        .get(&format!("/api/resource/{doctype}?{}", q.join("&")))
        .await;
    (s.as_u16(), b)
}

async fn seed(site: &TestSite) {
    site.insert("UOM", json!({"uom_name": "Nos"})).await;
    for g in ["Tools", "Food"] {
        site.insert("Item Group", json!({"item_group_name": g}))
            .await;
    }
    for (code, group, rate) in [
        ("T1", "Tools", 10.0),
        ("T2", "Tools", 20.0),
        ("T3", "Tools", 30.0),
        ("F1", "Food", 1.5),
        ("F2", "Food", 2.5),
    ] {
        site.insert(
            "Item",
            json!({"item_code": code, "item_name": format!("Item {code}"), "item_group": group, "standard_rate": rate, "stock_uom": "Nos"}),
        )
        .await;
    }
    site.insert("Customer", json!({"customer_name": "Both"}))
        .await;
    for rows in [
        vec![("T1", 1.0), ("F1", 2.0)],
        vec![("T1", 3.0)],
        vec![("F2", 4.0)],
    ] {
        let items: Vec<Value> = rows
            .iter()
            .map(|(c, q)| json!({"item_code": c, "qty": q, "rate": 1}))
            .collect();
        site.insert("Sales Invoice", json!({"customer": "Both", "items": items}))
            .await;
    }
}

both_backends!(
    group_by_distinct_aggregates_aliases,
    |site: TestSite| async move {
        seed(&site).await;
        let (s, b) = list(&site, "Item", &[("fields", r#"["item_group", "count(name) as n", "sum(standard_rate) as total", "avg(standard_rate) as mean", "min(item_code) as first", "max(standard_rate)"]"#), ("group_by", "item_group"), ("order_by", "n desc")]).await;
        assert_eq!(s, 200, "{b}");
        let rows = b["data"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{b}");
        assert_eq!(rows[0]["item_group"], "Tools");
        assert_eq!(rows[0]["n"], 3);
        assert_eq!(rows[0]["total"], 60.0);
        assert_eq!(rows[0]["mean"], 20.0);
        assert_eq!(rows[0]["first"], "T1");
        assert_eq!(rows[0]["max(standard_rate)"], 30.0);
        assert_eq!(
            (rows[1]["item_group"].clone(), rows[1]["n"].clone()),
            (json!("Food"), json!(2))
        );
        // The same through frappe.client.get_list (Frappe 15 takes group_by there).
        let (s, b) = site
        .request(&site.admin_auth, Method::POST, "/api/method/frappe.client.get_list", Some(json!({"doctype": "Item", "fields": ["item_group", "count(name) as n"], "group_by": "item_group", "order_by": "item_group asc"})))
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["message"],
            json!([{"item_group": "Food", "n": 2}, {"item_group": "Tools", "n": 3}])
        );
        // distinct, aliases, count(*) over filters.
        let (_, b) = list(
            &site,
            "Item",
            &[
                ("fields", r#"["item_group"]"#),
                ("distinct", "1"),
                ("order_by", "item_group asc"),
            ],
        )
        .await;
        assert_eq!(
            b["data"],
            json!([{"item_group": "Food"}, {"item_group": "Tools"}])
        );
        let (_, b) = list(
            &site,
            "Item",
            &[
                (
                    "fields",
                    r#"["item_name as title", "`tabItem`.`item_code` as code"]"#,
                ),
                ("filters", r#"[["item_code", "=", "F1"]]"#),
            ],
        )
        .await;
        assert_eq!(b["data"], json!([{"title": "Item F1", "code": "F1"}]));
        let (_, b) = list(
            &site,
            "Item",
            &[
                (
                    "fields",
                    r#"["count(*) as n", "count(distinct item_group) as groups"]"#,
                ),
                ("filters", r#"{"standard_rate": [">", 2]}"#),
            ],
        )
        .await;
        assert_eq!(b["data"], json!([{"n": 4, "groups": 2}]));
        // Counts with reportview's distinct flag.
        let (s, b) = site
        .request(&site.admin_auth, Method::POST, "/api/method/frappe.desk.reportview.get_count", Some(json!({"doctype": "Sales Invoice", "filters": [["Sales Invoice Item", "item_code", "=", "T1"]], "distinct": true})))
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["message"], 2);
    }
);

both_backends!(
    child_table_columns_and_filters,
    |site: TestSite| async move {
        seed(&site).await;
        let (s, b) = list(&site, "Sales Invoice", &[("fields", r#"["name", "`tabSales Invoice Item`.item_code", "`tabSales Invoice Item`.qty as qty"]"#), ("limit_page_length", "0"), ("order_by", "qty asc")]).await;
        assert_eq!(s, 200, "{b}");
        let rows = b["data"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "one row per item row: {b}");
        let qtys: Vec<f64> = rows.iter().map(|r| r["qty"].as_f64().unwrap()).collect();
        assert_eq!(qtys, vec![1.0, 2.0, 3.0, 4.0]);
        assert!(rows
            .iter()
            .all(|r| r["item_code"].is_string() && r["name"].is_string()));
        // Sum of quantities per item, over the child table.
        let (s, b) = list(&site, "Sales Invoice", &[("fields", r#"["`tabSales Invoice Item`.item_code as item", "sum(`tabSales Invoice Item`.qty) as qty"]"#), ("group_by", "`tabSales Invoice Item`.item_code"), ("order_by", "item asc")]).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["data"],
            json!([{"item": "F1", "qty": 2.0}, {"item": "F2", "qty": 4.0}, {"item": "T1", "qty": 4.0}])
        );
        // A child filter selects parents.
        let (_, b) = list(
            &site,
            "Sales Invoice",
            &[(
                "filters",
                r#"[["Sales Invoice Item", "item_code", "=", "F2"]]"#,
            )],
        )
        .await;
        assert_eq!(b["data"].as_array().unwrap().len(), 1);
    }
);

both_backends!(
    other_fields_are_refused_by_name,
    |site: TestSite| async move {
        seed(&site).await;
        for (fields, names) in [
            (r#"["(select name from tabUser)"]"#, "(select"),
            (r#"["sleep(1)"]"#, "sleep"),
            (r#"["name -- x"]"#, "-"),
            (r#"["concat(name, item_code)"]"#, "concat"),
            (r#"["`tabUser`.name"]"#, "User"),
            (r#"["`tabNote Seen By`.user"]"#, "Note Seen By"),
            (r#"["sum(item_name)"]"#, "item_name"),
            (r#"["no_such_field"]"#, "no_such_field"),
            (r#"["item_group", "count(name)"]"#, "item_group"),
        ] {
            let (s, b) = list(&site, "Item", &[("fields", fields)]).await;
            assert_eq!(s, 417, "{fields}: {b}");
            assert_eq!(b["exc_type"], "ValidationError", "{fields}: {b}");
            let msg = b["exception"].as_str().unwrap();
            assert!(
                msg.contains("Field not permitted in query") && msg.contains(names),
                "{fields}: {msg}"
            );
        }
        let (s, b) = list(
            &site,
            "Item",
            &[
                ("fields", r#"["item_group"]"#),
                ("group_by", "item_group; drop table x"),
            ],
        )
        .await;
        assert_eq!(s, 417, "{b}");
        let (s, b) = list(
            &site,
            "Item",
            &[
                ("fields", r#"["item_group"]"#),
                ("group_by", "item_group"),
                ("order_by", "modified desc"),
            ],
        )
        .await;
        assert_eq!(s, 417, "{b}");
        assert_eq!(
            count_of(&site, "Item", json!({})).await,
            5,
            "nothing changed"
        );
    }
);
