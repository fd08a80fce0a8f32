//! The REST API driven over HTTP as Frappe clients do, against SQLite and PostgreSQL.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn count(site: &TestSite, doctype: &str) -> i64 {
    let (s, b) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.client.get_count",
            Some(json!({"doctype": doctype})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["message"].as_i64().unwrap()
}

async fn seed_items(site: &TestSite) {
    site.insert("UOM", json!({"uom_name": "Nos"})).await;
    site.insert("Item Group", json!({"item_group_name": "Products"}))
        .await;
    site.insert("Customer", json!({"customer_name": "ACME"}))
        .await;
    for code in ["ITEM-1", "ITEM-2"] {
        site.insert("Item", json!({"item_code": code, "item_name": code, "item_group": "Products", "stock_uom": "Nos", "standard_rate": 10})).await;
    }
}

both_backends!(crud_json_and_form, |site: TestSite| async move {
    // Insert as JSON and as FrappeClient's form data=<json>.
    let a = site
        .insert("ToDo", json!({"description": "first", "priority": "High"}))
        .await;
    assert_eq!(a["status"], "Open", "default applied");
    assert_eq!(a["doctype"], "ToDo");
    let form = site
        .post_form(
            &site.admin_auth,
            "/api/resource/ToDo",
            &[("data", r#"{"description": "second", "priority": "Low"}"#)],
        )
        .await;
    assert_eq!(form.0, 200, "{}", form.1);
    let b = form.1["data"].clone();
    // Get, with every field (nulls included).
    let name = a["name"].as_str().unwrap();
    let (s, got) = site.get(&format!("/api/resource/ToDo/{name}")).await;
    assert_eq!(s, 200);
    assert!(
        got["data"].as_object().unwrap().contains_key("date"),
        "null fields are returned"
    );
    // Trailing slash accepted.
    assert_eq!(
        site.get(&format!("/api/resource/ToDo/{name}/")).await.0,
        200
    );
    // List: three filter forms, or_filters, order_by, paging.
    for filters in [
        json!([["priority", "=", "High"]]),
        json!([["ToDo", "priority", "=", "High"]]),
        json!({"priority": "High"}),
        json!({"priority": ["like", "Hi%"]}),
    ] {
        let q = format!(
            "/api/resource/ToDo?fields={}&filters={}",
            urlenc(&json!(["name", "priority"])),
            urlenc(&filters)
        );
        let (s, l) = site.get(&q).await;
        assert_eq!(s, 200, "{l}");
        assert_eq!(
            l["data"].as_array().unwrap().len(),
            1,
            "filters {filters}: {l}"
        );
        assert_eq!(l["data"][0]["name"], a["name"]);
    }
    let q = format!(
        "/api/resource/ToDo?or_filters={}&order_by=priority%20asc",
        urlenc(&json!([
            ["priority", "=", "High"],
            ["priority", "=", "Low"]
        ]))
    );
    let (_, l) = site.get(&q).await;
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    let (_, l) = site.get("/api/resource/ToDo?fields=[\"*\"]&limit_page_length=1&limit_start=1&order_by=creation%20asc").await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    assert_eq!(l["data"][0]["name"], b["name"]);
    assert!(
        l["data"][0]
            .as_object()
            .unwrap()
            .contains_key("reference_name"),
        "* returns every column"
    );
    // Update, and a stale modified is refused with nothing changed.
    let (s, u) = site
        .put(
            &format!("/api/resource/ToDo/{name}"),
            json!({"description": "first edited"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["data"]["description"], "first edited");
    let stale = site
        .put(
            &format!("/api/resource/ToDo/{name}"),
            json!({"description": "lost", "modified": a["modified"]}),
        )
        .await;
    assert_error(&stale, 417, "TimestampMismatchError");
    assert_eq!(
        site.get(&format!("/api/resource/ToDo/{name}")).await.1["data"]["description"],
        "first edited"
    );
    // Delete answers 202; then 404.
    let (s, d) = site.delete(&format!("/api/resource/ToDo/{name}")).await;
    assert_eq!((s.as_u16(), d["message"].clone()), (202, json!("ok")));
    assert_missing(&site.get(&format!("/api/resource/ToDo/{name}")).await);
});

fn urlenc(v: &Value) -> String {
    percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

both_backends!(bad_input_changes_nothing, |site: TestSite| async move {
    seed_items(&site).await;
    let before = count(&site, "Item").await;
    // Malformed JSON.
    let r = site
        .client
        .post(format!("{}/api/resource/Item", site.url))
        .header("authorization", &site.admin_auth)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["exc_type"],
        "ValidationError"
    );
    // Unknown doctype, unknown field in a query, unparseable filters.
    assert_missing(&site.get("/api/resource/No Such Type").await);
    assert_error(
        &site.get("/api/resource/Item?fields=[\"nope\"]").await,
        417,
        "ValidationError",
    );
    assert_error(
        &site.get("/api/resource/Item?filters=[[\"item_code\"").await,
        400,
        "ValidationError",
    );
    assert_error(
        &site
            .get("/api/resource/Item?order_by=modified%3B%20DROP%20TABLE%20x")
            .await,
        417,
        "ValidationError",
    );
    // Wrong type, missing mandatory, broken link, duplicate.
    assert_error(
        &site
            .post(
                "/api/resource/Item",
                json!({"item_code": "X1", "item_group": "Products", "standard_rate": "cheap"}),
            )
            .await,
        417,
        "ValidationError",
    );
    let m = site
        .post("/api/resource/Item", json!({"item_code": "X2"}))
        .await;
    assert_error(&m, 417, "MandatoryError");
    assert!(
        m.1["exception"].as_str().unwrap().contains("item_group"),
        "names the field: {}",
        m.1
    );
    let l = site
        .post(
            "/api/resource/Item",
            json!({"item_code": "X3", "item_group": "Nowhere"}),
        )
        .await;
    assert_error(&l, 417, "LinkValidationError");
    assert!(l.1["exception"].as_str().unwrap().contains("Nowhere"));
    assert_error(
        &site
            .post(
                "/api/resource/Item",
                json!({"item_code": "ITEM-1", "item_group": "Products"}),
            )
            .await,
        409,
        "DuplicateEntryError",
    );
    // A bad child row fails the whole invoice: no parent, no rows.
    let inv_before = count(&site, "Sales Invoice").await;
    let bad_child = site.post("/api/resource/Sales Invoice", json!({"customer": "ACME", "items": [{"item_code": "ITEM-1", "qty": 1}, {"item_code": "GHOST", "qty": 1}]})).await;
    assert_error(&bad_child, 417, "LinkValidationError");
    assert_eq!(count(&site, "Sales Invoice").await, inv_before);
    // Select out of options, bad date.
    assert_error(
        &site
            .post(
                "/api/resource/ToDo",
                json!({"description": "x", "status": "Maybe"}),
            )
            .await,
        417,
        "ValidationError",
    );
    assert_error(
        &site
            .post(
                "/api/resource/ToDo",
                json!({"description": "x", "date": "2024-02-30"}),
            )
            .await,
        417,
        "ValidationError",
    );
    // Path-like and SQL-like names: refused or stored literally, never executed.
    assert_error(
        &site
            .post(
                "/api/resource/Customer",
                json!({"customer_name": "../../etc/passwd"}),
            )
            .await,
        417,
        "ValidationError",
    );
    let sql = "Robert'); DROP TABLE \"tabCustomer\";--";
    let c = site.insert("Customer", json!({"customer_name": sql})).await;
    assert_eq!(c["name"], sql);
    let (s, got) = site
        .get(&format!(
            "/api/resource/Customer/{}",
            percent_encoding::utf8_percent_encode(sql, percent_encoding::NON_ALPHANUMERIC)
        ))
        .await;
    assert_eq!(
        (s.as_u16(), got["data"]["customer_name"].as_str()),
        (200, Some(sql))
    );
    assert_eq!(
        count(&site, "Item").await,
        before,
        "nothing written by failed requests"
    );
    // Credentials: none -> 403, unknown key / wrong secret -> 401.
    assert_error(
        &site
            .request("", Method::GET, "/api/resource/Item", None)
            .await,
        403,
        "PermissionError",
    );
    assert_error(
        &site
            .request(
                "token nokey:nosecret",
                Method::GET,
                "/api/resource/Item",
                None,
            )
            .await,
        401,
        "AuthenticationError",
    );
    let key = site
        .admin_auth
        .trim_start_matches("token ")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_error(
        &site
            .request(
                &format!("token {key}:wrong"),
                Method::GET,
                "/api/resource/Item",
                None,
            )
            .await,
        401,
        "AuthenticationError",
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(site.admin_auth.trim_start_matches("token "));
    assert_eq!(
        site.request(
            &format!("Basic {basic}"),
            Method::GET,
            "/api/resource/Item",
            None
        )
        .await
        .0,
        200
    );
});

#[tokio::test]
async fn oversized_body_is_413() {
    let site = TestSite::start_with(Backend::Sqlite, &[("max_body_bytes", json!(2000))])
        .await
        .unwrap();
    let big = "x".repeat(5000);
    let r = site
        .post("/api/resource/ToDo", json!({"description": big}))
        .await;
    assert_error(&r, 413, "ValidationError");
    assert_eq!(count(&site, "ToDo").await, 0);
}

both_backends!(naming_submit_links_rename, |site: TestSite| async move {
    seed_items(&site).await;
    let year = chrono_year();
    let inv = |n: i64| json!({"customer": "ACME", "posting_date": "2026-11-23", "items": [{"item_code": "ITEM-1", "qty": n, "rate": 10, "amount": 10 * n}, {"item_code": "ITEM-2", "qty": 1, "rate": 5}]});
    let a = site.insert("Sales Invoice", inv(1)).await;
    let b = site.insert("Sales Invoice", inv(2)).await;
    assert_eq!(a["name"], format!("SINV-{year}-00001"));
    assert_eq!(b["name"], format!("SINV-{year}-00002"));
    assert_eq!(a["items"].as_array().unwrap().len(), 2);
    assert_eq!(a["items"][1]["idx"], 2);
    let row = a["items"][0]["name"].as_str().unwrap();
    let (s, child) = site
        .get(&format!("/api/resource/Sales Invoice Item/{row}"))
        .await;
    assert_eq!(
        (s.as_u16(), child["data"]["parent"].clone()),
        (200, a["name"].clone())
    );
    // Child table replaced as given, rows keep their names.
    let name = a["name"].as_str().unwrap();
    let mut items = a["items"].as_array().unwrap().clone();
    items.truncate(1);
    items[0]["qty"] = json!(7);
    let (s, u) = site
        .put(
            &format!("/api/resource/Sales Invoice/{name}"),
            json!({"items": items}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["data"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(u["data"]["items"][0]["name"], row);
    assert_eq!(u["data"]["items"][0]["qty"], 7.0);
    // Submit, then edits are refused; delete refused while submitted; cancel.
    let (s, sub) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.client.submit",
            Some(json!({"doc": {"doctype": "Sales Invoice", "name": name}})),
        )
        .await;
    assert_eq!(s, 200, "{sub}");
    assert_eq!(sub["message"]["docstatus"], 1);
    assert_error(
        &site
            .put(
                &format!("/api/resource/Sales Invoice/{name}"),
                json!({"customer": "ACME", "due_date": "2027-01-01"}),
            )
            .await,
        417,
        "ValidationError",
    );
    assert_error(
        &site
            .delete(&format!("/api/resource/Sales Invoice/{name}"))
            .await,
        417,
        "ValidationError",
    );
    let (s, c) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.client.cancel",
            Some(json!({"doctype": "Sales Invoice", "name": name})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), c["message"]["docstatus"].clone()),
        (200, json!(2))
    );
    // Amending: a copy naming the cancelled invoice is `name-1`, its amendment `name-2`; only
    // a cancelled invoice may be amended.
    let copy = |from: &str| {
        let mut d = c["message"].clone();
        for k in [
            "name",
            "docstatus",
            "creation",
            "modified",
            "owner",
            "modified_by",
        ] {
            d.as_object_mut().unwrap().remove(k);
        }
        for r in d["items"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("name");
        }
        d["amended_from"] = json!(from);
        d
    };
    let (s, a1) = site.post("/api/resource/Sales Invoice", copy(name)).await;
    assert_eq!(s, 200, "{a1}");
    assert_eq!(a1["data"]["name"], format!("{name}-1"));
    assert_eq!(a1["data"]["amended_from"], *name);
    assert_eq!(a1["data"]["docstatus"], 0);
    let not_cancelled = site
        .post("/api/resource/Sales Invoice", copy(&format!("{name}-1")))
        .await;
    assert_error(&not_cancelled, 417, "ValidationError");
    assert!(
        not_cancelled
            .1
            .to_string()
            .contains("only a cancelled document"),
        "{}",
        not_cancelled.1
    );
    for m in ["frappe.client.submit", "frappe.client.cancel"] {
        let args = if m.ends_with("submit") {
            json!({"doc": {"doctype": "Sales Invoice", "name": format!("{name}-1")}})
        } else {
            json!({"doctype": "Sales Invoice", "name": format!("{name}-1")})
        };
        let (s, b) = site
            .request(
                &site.admin_auth,
                Method::POST,
                &format!("/api/method/{m}"),
                Some(args),
            )
            .await;
        assert_eq!(s, 200, "{m}: {b}");
    }
    let (s, a2) = site
        .post("/api/resource/Sales Invoice", copy(&format!("{name}-1")))
        .await;
    assert_eq!(s, 200, "{a2}");
    assert_eq!(a2["data"]["name"], format!("{name}-2"));
    // Delete refused while linked; rename rewrites links.
    let linked = site.delete("/api/resource/Item Group/Products").await;
    assert_error(&linked, 417, "LinkExistsError");
    let (s, r) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.client.rename_doc",
            Some(json!({"doctype": "Item Group", "old_name": "Products", "new_name": "Goods"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, item) = site.get("/api/resource/Item/ITEM-1").await;
    assert_eq!(item["data"]["item_group"], "Goods");
    assert_error(
        &site.get("/api/resource/Item Group/Products").await,
        404,
        "DoesNotExistError",
    );
});

fn chrono_year() -> String {
    let out = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

both_backends!(
    custom_doctype_and_custom_field,
    |site: TestSite| async move {
        let dt = json!({
            "name": "Delivery Note X", "module": "Custom", "autoname": "format:DN-{customer}-{####}",
            "fields": [
                {"fieldname": "customer", "label": "Customer", "fieldtype": "Link", "options": "Customer", "reqd": 1},
                {"fieldname": "weight", "fieldtype": "Float"},
                {"fieldname": "count", "fieldtype": "Int"},
                {"fieldname": "shipped", "fieldtype": "Check"},
                {"fieldname": "ship_date", "fieldtype": "Date"},
                {"fieldname": "kind", "fieldtype": "Select", "options": "Box\nPallet"}
            ],
            "permissions": [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]
        });
        let (s, b) = site.post("/api/resource/DocType", dt).await;
        assert_eq!(s, 200, "{b}");
        site.insert("Customer", json!({"customer_name": "ACME"}))
            .await;
        let d = site.insert("Delivery Note X", json!({"customer": "ACME", "weight": "2.5", "count": "12", "shipped": true, "kind": "Box"})).await;
        assert_eq!(d["name"], "DN-ACME-0001");
        assert_eq!(
            (
                d["weight"].clone(),
                d["count"].clone(),
                d["shipped"].clone()
            ),
            (json!(2.5), json!(12), json!(1))
        );
        // Bad definitions are refused.
        assert_error(
            &site
                .post(
                    "/api/resource/DocType",
                    json!({"name": "Bad; DROP", "fields": []}),
                )
                .await,
            417,
            "ValidationError",
        );
        assert_error(&site.post("/api/resource/DocType", json!({"name": "Bad Link", "fields": [{"fieldname": "x", "fieldtype": "Link", "options": "Nope"}]})).await, 417, "ValidationError");
        // Custom Field on a built-in type: the column exists at once.
        let (s, cf) = site.post("/api/resource/Custom Field", json!({"dt": "ToDo", "fieldname": "remote_docname", "fieldtype": "Data", "label": "Remote Document Name"})).await;
        assert_eq!(s, 200, "{cf}");
        assert_eq!(cf["data"]["name"], "ToDo-remote_docname");
        let t = site
            .insert("ToDo", json!({"description": "x", "remote_docname": "R-1"}))
            .await;
        assert_eq!(t["remote_docname"], "R-1");
        let (_, l) = site
            .get(&format!(
                "/api/resource/ToDo?filters={}",
                urlenc(&json!({"remote_docname": "R-1"}))
            ))
            .await;
        assert_eq!(l["data"].as_array().unwrap().len(), 1);
        assert_error(
            &site
                .post(
                    "/api/resource/Custom Field",
                    json!({"dt": "ToDo", "fieldname": "remote_docname", "fieldtype": "Data"}),
                )
                .await,
            409,
            "DuplicateEntryError",
        );
    }
);

both_backends!(
    users_roles_passwords_and_methods,
    |site: TestSite| async move {
        // A user without System Manager: ToDo allowed (role All), Item refused.
        let u = site.insert("User", json!({"email": "clerk@example.com", "first_name": "Clerk", "last_name": "One", "new_password": "pw-clerk"})).await;
        assert_eq!(u["full_name"], "Clerk One");
        assert!(u["new_password"].is_null());
        let (_, k) = site
            .request(
                &site.admin_auth,
                Method::POST,
                "/api/method/frappe.core.doctype.user.user.generate_keys",
                Some(json!({"user": "clerk@example.com"})),
            )
            .await;
        let secret = k["message"]["api_secret"].as_str().unwrap().to_string();
        let (_, user) = site.get("/api/resource/User/clerk@example.com").await;
        assert_eq!(user["data"]["api_secret"], "*****", "secrets are masked");
        let clerk = format!(
            "token {}:{secret}",
            user["data"]["api_key"].as_str().unwrap()
        );
        assert_eq!(
            site.request(
                &clerk,
                Method::POST,
                "/api/resource/ToDo",
                Some(json!({"description": "mine"}))
            )
            .await
            .0,
            200
        );
        assert_error(
            &site
                .request(&clerk, Method::GET, "/api/resource/Item", None)
                .await,
            403,
            "PermissionError",
        );
        assert_error(
            &site
                .request(
                    &clerk,
                    Method::POST,
                    "/api/method/frappe.core.doctype.user.user.generate_keys",
                    Some(json!({"user": "Administrator"})),
                )
                .await,
            403,
            "PermissionError",
        );
        let (_, who) = site
            .request(
                &clerk,
                Method::GET,
                "/api/method/frappe.auth.get_logged_user",
                None,
            )
            .await;
        assert_eq!(who["message"], "clerk@example.com");
        // Login with the password; wrong password is 401.
        let ok = site
            .post_form(
                "",
                "/api/method/login",
                &[("usr", "clerk@example.com"), ("pwd", "pw-clerk")],
            )
            .await;
        assert_eq!(
            (
                ok.0.as_u16(),
                ok.1["message"].clone(),
                ok.1["full_name"].clone()
            ),
            (200, json!("Logged In"), json!("Clerk One"))
        );
        assert_error(
            &site
                .post_form(
                    "",
                    "/api/method/login",
                    &[("usr", "clerk@example.com"), ("pwd", "nope")],
                )
                .await,
            401,
            "AuthenticationError",
        );
        // Password field of the streaming types: stored encrypted, masked, never returned by get_password.
        site.insert(
            "User",
            json!({"email": "sync@example.com", "first_name": "Sync"}),
        )
        .await;
        // Methods: ping without auth, arguments in the query string with an empty body, POST / with cmd.
        for method in ["frappe.ping", "ping"] {
            let (s, p) = site
                .request("", Method::GET, &format!("/api/method/{method}"), None)
                .await;
            assert_eq!((s.as_u16(), p["message"].clone()), (200, json!("pong")));
        }
        let (s, v) = site.request(&site.admin_auth, Method::POST, "/api/method/frappe.client.get_value?doctype=User&fieldname=full_name&filters=clerk%40example.com", None).await;
        assert_eq!(
            (s.as_u16(), v["message"]["full_name"].clone()),
            (200, json!("Clerk One"))
        );
        let (s, l) = site
            .post_form(
                &site.admin_auth,
                "/",
                &[
                    ("cmd", "frappe.client.get_list"),
                    ("doctype", "User"),
                    ("fields", "[\"name\"]"),
                    ("filters", "[[\"name\", \"like\", \"%example.com\"]]"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{l}");
        assert_eq!(l["message"].as_array().unwrap().len(), 2);
        let (s, sv) = site.request(&site.admin_auth, Method::POST, "/api/method/frappe.client.set_value", Some(json!({"doctype": "User", "name": "sync@example.com", "fieldname": "last_name", "value": "Bot"}))).await;
        assert_eq!(
            (s.as_u16(), sv["message"]["full_name"].clone()),
            (200, json!("Sync Bot"))
        );
        let (s, ins) = site
            .request(
                &site.admin_auth,
                Method::POST,
                "/api/method/frappe.client.insert",
                Some(json!({"doc": {"doctype": "Note", "title": "Hello", "public": 1}})),
            )
            .await;
        assert_eq!(s, 200, "{ins}");
        let note = ins["message"]["name"].as_str().unwrap().to_string();
        let (s, del) = site
            .request(
                &site.admin_auth,
                Method::POST,
                "/api/method/frappe.client.delete",
                Some(json!({"doctype": "Note", "name": note})),
            )
            .await;
        assert_eq!(s, 200, "{del}");
        assert_no_method(
            &site
                .request(
                    &site.admin_auth,
                    Method::POST,
                    "/api/method/no.such.method",
                    None,
                )
                .await,
        );
        // Single type.
        let (s, g) = site
            .put(
                "/api/resource/Global Defaults/Global Defaults",
                json!({"country": "Brazil", "default_currency": "BRL"}),
            )
            .await;
        assert_eq!(s, 200, "{g}");
        assert_eq!(
            site.get("/api/resource/Global Defaults/Global Defaults")
                .await
                .1["data"]["country"],
            "Brazil"
        );
    }
);

#[tokio::test]
async fn login_is_rate_limited_and_sessions_work() {
    let site = TestSite::start_with(Backend::Sqlite, &[("login_max_failures", json!(3))])
        .await
        .unwrap();
    for _ in 0..3 {
        assert_error(
            &site
                .post_form(
                    "",
                    "/api/method/login",
                    &[("usr", "Administrator"), ("pwd", "bad")],
                )
                .await,
            401,
            "AuthenticationError",
        );
    }
    assert_error(
        &site
            .post_form(
                "",
                "/api/method/login",
                &[("usr", "Administrator"), ("pwd", "admin")],
            )
            .await,
        429,
        "TooManyRequestsError",
    );
    // Session cookie from an API login works without CSRF; logout ends it.
    let site2 = TestSite::start(Backend::Sqlite).await.unwrap();
    let r = site2
        .client
        .post(format!("{}/api/method/login", site2.url))
        .form(&[("usr", "Administrator"), ("pwd", "admin")])
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("sid=")))
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let sid = cookie.split(';').next().unwrap().to_string();
    let r = site2
        .client
        .post(format!("{}/api/resource/ToDo", site2.url))
        .header("cookie", &sid)
        .json(&json!({"description": "via session"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    site2
        .client
        .post(format!("{}/api/method/logout", site2.url))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    let r = site2
        .client
        .get(format!("{}/api/resource/ToDo", site2.url))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A desk session must send its CSRF token on writes.
    let r = site2
        .client
        .post(format!("{}/api/method/login", site2.url))
        .form(&[
            ("usr", "Administrator"),
            ("pwd", "admin"),
            ("device", "desk"),
        ])
        .send()
        .await
        .unwrap();
    let sid = sid_cookie(&r);
    let token = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = site2
        .client
        .post(format!("{}/api/resource/ToDo", site2.url))
        .header("cookie", &sid)
        .json(&json!({"description": "no token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["exc_type"],
        "CSRFTokenError"
    );
    let r = site2
        .client
        .post(format!("{}/api/resource/ToDo", site2.url))
        .header("cookie", &sid)
        .header("x-frappe-csrf-token", token)
        .json(&json!({"description": "with token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn open_endpoints_health_metrics_openapi() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    assert_eq!(site.request("", Method::GET, "/health", None).await.0, 200);
    let (s, m) = site.request("", Method::GET, "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(m
        .as_str()
        .unwrap()
        .contains("docstream_http_requests_total"));
    let (s, o) = site
        .request("", Method::GET, "/api/openapi.json", None)
        .await;
    assert_eq!(s, 200);
    assert!(o["paths"]["/api/resource/{doctype}"]["get"].is_object());
    assert_eq!(site.request("", Method::GET, "/", None).await.0, 200);
}

both_backends!(
    autoincrement_patterns_dynamic_links_and_masked_secrets,
    |site: TestSite| async move {
        // autoincrement names are integers; a dot pattern keeps a counter per prefix.
        let (s, b) = site.post("/api/resource/DocType", json!({"name": "Ticket", "autoname": "autoincrement", "fields": [{"fieldname": "subject", "fieldtype": "Data"}]})).await;
        assert_eq!(s, 200, "{b}");
        let t1 = site.insert("Ticket", json!({"subject": "a"})).await;
        let t2 = site.insert("Ticket", json!({"subject": "b"})).await;
        assert_eq!(
            (t1["name"].clone(), t2["name"].clone()),
            (json!(1), json!(2))
        );
        assert_eq!(
            site.get("/api/resource/Ticket/2").await.1["data"]["subject"],
            "b"
        );
        let (s, b) = site.post("/api/resource/DocType", json!({"name": "Memo", "autoname": "MEMO-.YY.-.###", "fields": [{"fieldname": "body", "fieldtype": "Text"}]})).await;
        assert_eq!(s, 200, "{b}");
        let m = site.insert("Memo", json!({"body": "x"})).await;
        let yy = &chrono_year()[2..];
        assert_eq!(m["name"], format!("MEMO-{yy}-001"));
        // Dynamic Link: the target type comes from another field and must exist.
        site.insert("Customer", json!({"customer_name": "Dyn"}))
            .await;
        let ok = site
            .post(
                "/api/resource/ToDo",
                json!({"description": "x", "reference_type": "Customer", "reference_name": "Dyn"}),
            )
            .await;
        assert_eq!(ok.0, 200, "{}", ok.1);
        let bad = site.post("/api/resource/ToDo", json!({"description": "x", "reference_type": "Customer", "reference_name": "Nobody"})).await;
        assert_error(&bad, 417, "LinkValidationError");
        // Deleting a Customer that a Dynamic Link points at is refused.
        assert_error(
            &site.delete("/api/resource/Customer/Dyn").await,
            417,
            "LinkExistsError",
        );
        // Writing ***** back to a Password field keeps the stored secret.
        site.insert("User", json!({"email": "s@example.com", "first_name": "S"}))
            .await;
        let (_, k) = site
            .request(
                &site.admin_auth,
                Method::POST,
                "/api/method/frappe.core.doctype.user.user.generate_keys",
                Some(json!({"user": "s@example.com"})),
            )
            .await;
        let secret = k["message"]["api_secret"].as_str().unwrap().to_string();
        let (_, u) = site.get("/api/resource/User/s@example.com").await;
        let mut whole = u["data"].clone();
        whole["last_name"] = json!("Saved Back");
        let (s, b) = site.put("/api/resource/User/s@example.com", whole).await;
        assert_eq!(s, 200, "{b}");
        let auth = format!("token {}:{secret}", u["data"]["api_key"].as_str().unwrap());
        let (_, who) = site
            .request(
                &auth,
                Method::GET,
                "/api/method/frappe.auth.get_logged_user",
                None,
            )
            .await;
        assert_eq!(
            who["message"], "s@example.com",
            "the secret survived a save of the masked value"
        );
        let (s, pw) = site
            .request(
                &site.admin_auth,
                Method::POST,
                "/api/method/frappe.client.get_password",
                Some(
                    json!({"doctype": "User", "name": "s@example.com", "fieldname": "api_secret"}),
                ),
            )
            .await;
        assert_eq!(
            (s.as_u16(), pw["message"].as_str()),
            (200, Some(secret.as_str()))
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_sees_new_doctypes_and_fields() {
    let Some(site) = TestSite::start(Backend::Postgres).await else {
        return;
    };
    let port2 = free_port();
    let mut second = std::process::Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(site.dir.path())
        .args(["--bind", &format!("127.0.0.1:{port2}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let other = format!("http://127.0.0.1:{port2}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.get(format!("{other}/health")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The second process has already loaded its registry; now the first changes the schema.
    let (s, b) = site
        .post(
            "/api/resource/DocType",
            json!({"name": "Shared Thing", "fields": [{"fieldname": "size", "fieldtype": "Int"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = site
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "ToDo", "fieldname": "zone", "fieldtype": "Data"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let a = client
            .post(format!("{other}/api/resource/Shared Thing"))
            .header("authorization", &site.admin_auth)
            .json(&json!({"size": 3}))
            .send()
            .await
            .unwrap()
            .status();
        let t = client
            .post(format!("{other}/api/resource/ToDo"))
            .header("authorization", &site.admin_auth)
            .json(&json!({"description": "x", "zone": "north"}))
            .send()
            .await
            .unwrap();
        let ok_t = t.status() == 200 && t.json::<Value>().await.unwrap()["data"]["zone"] == "north";
        if a == 200 && ok_t {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second process never saw the new type and field"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test]
async fn system_managers_follow_the_types_own_rules() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    site.insert("User", json!({"email": "sm@example.com", "first_name": "Sm", "roles": [{"role": "System Manager"}]})).await;
    let (_, k) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.core.doctype.user.user.generate_keys",
            Some(json!({"user": "sm@example.com"})),
        )
        .await;
    let (_, u) = site.get("/api/resource/User/sm@example.com").await;
    let sm = format!(
        "token {}:{}",
        u["data"]["api_key"].as_str().unwrap(),
        k["message"]["api_secret"].as_str().unwrap()
    );
    // Full rights where the type grants them ...
    assert_eq!(
        site.request(
            &sm,
            Method::POST,
            "/api/resource/Item Group",
            Some(json!({"item_group_name": "G"}))
        )
        .await
        .0,
        200
    );
    // ... but update logs are written by the server only.
    let r = site
        .request(
            &sm,
            Method::POST,
            "/api/resource/Event Update Log",
            Some(json!({"update_type": "Create", "ref_doctype": "ToDo", "docname": "forged"})),
        )
        .await;
    assert_error(&r, 403, "PermissionError");
    assert_eq!(
        site.request(&sm, Method::GET, "/api/resource/Event Update Log", None)
            .await
            .0,
        200
    );
}
