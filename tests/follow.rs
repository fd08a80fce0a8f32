//! Types follow the data: a consumer subscribed to a type it lacks makes it from the
//! producer's definition (child tables and linked types included), a type it has gains the
//! producer's fields, and documents arrive whole, then travel on whole from this site.

mod common;
use common::*;
use serde_json::{json, Value};

/// The producer's own types: a Gadget with parts (a child table) and a maker (a Link), with
/// fields of types a plain site rarely has.
async fn gadget_types(p: &TestSite) {
    p.insert("Role", json!({"role_name": "Gadgeteer"})).await;
    let perms = json!([{"role": "Gadgeteer", "read": 1, "write": 1, "create": 1},
                       {"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]);
    p.insert(
        "DocType",
        json!({"name": "Gadget Part", "istable": 1, "fields": [
            {"fieldname": "part_no", "label": "Part No", "fieldtype": "Data", "reqd": 1},
            {"fieldname": "qty", "label": "Qty", "fieldtype": "Int"}]}),
    )
    .await;
    p.insert(
        "DocType",
        json!({"name": "Gadget Maker", "autoname": "field:maker_name", "fields": [
            {"fieldname": "maker_name", "label": "Maker Name", "fieldtype": "Data", "reqd": 1, "unique": 1},
            {"fieldname": "country", "label": "Country", "fieldtype": "Data"}],
            "permissions": perms}),
    )
    .await;
    p.insert(
        "DocType",
        json!({"name": "Gadget", "autoname": "field:title", "title_field": "title", "fields": [
            {"fieldname": "title", "label": "Title", "fieldtype": "Data", "reqd": 1},
            {"fieldname": "maker", "label": "Maker", "fieldtype": "Link", "options": "Gadget Maker"},
            {"fieldname": "details", "label": "Details", "fieldtype": "Section Break"},
            {"fieldname": "weight", "label": "Weight", "fieldtype": "Float"},
            {"fieldname": "color", "label": "Color", "fieldtype": "Color"},
            {"fieldname": "notes", "label": "Notes", "fieldtype": "Markdown Editor"},
            {"fieldname": "spot", "label": "Spot", "fieldtype": "Geolocation"},
            {"fieldname": "parts", "label": "Parts", "fieldtype": "Table", "options": "Gadget Part"}],
            "permissions": perms}),
    )
    .await;
}

fn gadget(title: &str) -> Value {
    json!({"title": title, "maker": "Acme", "weight": 1.5, "color": "#ff0000",
           "notes": "**bold**", "spot": "{\"type\": \"FeatureCollection\", \"features\": []}",
           "parts": [{"part_no": "P-1", "qty": 2}, {"part_no": "P-2", "qty": 3}]})
}

/// The fields of a document that carry data, without the site's own stamps.
fn content(doc: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "title", "maker", "weight", "color", "notes", "spot", "batch",
    ] {
        out.insert(k.into(), doc[k].clone());
    }
    let parts: Vec<Value> = doc["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"part_no": r["part_no"], "qty": r["qty"]}))
        .collect();
    out.insert("parts".into(), Value::Array(parts));
    Value::Object(out)
}

async fn types_follow_the_data(backend: Backend) {
    let Some((p, c)) = start_pair_on(backend).await else {
        return;
    };
    gadget_types(&p).await;
    p.insert(
        "Gadget Maker",
        json!({"maker_name": "Acme", "country": "BR"}),
    )
    .await;
    let (s, b) = p
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "ToDo", "fieldname": "shelf", "fieldtype": "Data", "label": "Shelf"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    p.insert("Gadget", gadget("G1")).await;
    // The consumer has no Gadget at all, and a ToDo without `shelf`.
    assert!(get_opt(&c, "/api/resource/DocType/Gadget").await.is_none());
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Gadget", "use_same_name": 1, "sync_existing": 1},
               {"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    for t in ["Gadget", "Gadget Part", "Gadget Maker"] {
        let dt = get_opt(&c, format!("/api/resource/DocType/{t}"))
            .await
            .unwrap_or_else(|| panic!("{t} made on the consumer"));
        assert_eq!(dt["custom"], 1, "{dt}");
    }
    // Its permission rows: the producer's for roles that exist here (Gadgeteer does not).
    let dt = get_opt(&c, "/api/resource/DocType/Gadget").await.unwrap();
    let roles: Vec<&str> = dt["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["System Manager"], "{dt}");
    let g1 = eventually(15, "G1 whole on the consumer", || async {
        get_opt(&c, "/api/resource/Gadget/G1").await
    })
    .await;
    let (_, source) = p.get("/api/resource/Gadget/G1").await;
    assert_eq!(content(&g1), content(&source["data"]));
    // Its maker came as a dependency, into the type made from the producer's definition.
    let acme = get_opt(&c, "/api/resource/Gadget Maker/Acme")
        .await
        .unwrap();
    assert_eq!(acme["country"], "BR");
    // A type it had gains the producer's fields: a ToDo's `shelf` arrives.
    let todo = p
        .insert("ToDo", json!({"description": "shelved", "shelf": "B-12"}))
        .await;
    let name = todo["name"].as_str().unwrap().to_string();
    let t = eventually(15, "the ToDo with its shelf", || async {
        get_opt(&c, format!("/api/resource/ToDo/{name}")).await
    })
    .await;
    assert_eq!(t["shelf"], "B-12", "{t}");
    // A field the producer adds later follows when a document brings it.
    let (s, b) = p
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "Gadget", "fieldname": "batch", "fieldtype": "Int", "label": "Batch"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p
        .put(
            "/api/resource/Gadget/G1",
            json!({"batch": 7, "weight": 2.5}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let g1 = eventually(15, "G1's batch on the consumer", || async {
        get_opt(&c, "/api/resource/Gadget/G1")
            .await
            .filter(|d| d["batch"] == 7)
    })
    .await;
    assert_eq!(g1["weight"], 2.5);
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );

    // The consumer as a hub: a third site that has none of it gets it whole from the consumer.
    let d = TestSite::start_with(
        backend,
        &[
            ("pull_interval", json!(1)),
            ("retry_base_seconds", json!(3600)),
        ],
    )
    .await
    .unwrap();
    let (ckey, csecret) = {
        let (_, k) = c
            .post(
                "/api/method/frappe.core.doctype.user.user.generate_keys",
                json!({"user": "sync@example.com"}),
            )
            .await;
        let (_, u) = c.get("/api/resource/User/sync@example.com").await;
        (
            u["data"]["api_key"].as_str().unwrap().to_string(),
            k["message"]["api_secret"].as_str().unwrap().to_string(),
        )
    };
    subscriber(&d).await;
    subscribe_with_keys(
        &c,
        &d,
        json!([{"ref_doctype": "Gadget", "use_same_name": 1, "sync_existing": 1}]),
        &ckey,
        &csecret,
    )
    .await;
    let g1d = eventually(20, "G1 whole on the third site", || async {
        get_opt(&d, "/api/resource/Gadget/G1")
            .await
            .filter(|g| g["batch"] == 7)
    })
    .await;
    let (_, source) = p.get("/api/resource/Gadget/G1").await;
    assert_eq!(content(&g1d), content(&source["data"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_follow_the_data_sqlite() {
    types_follow_the_data(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_follow_the_data_postgres() {
    types_follow_the_data(Backend::Postgres).await;
}

/// A Frappe 14 producer of Widgets, a type the consumer lacks, whose definition carries what
/// Frappe's `getdoctype` sends besides fields: the type's scripts and styles.
async fn frappe_widgets(req: axum::http::Request<axum::body::Body>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (path, args) = fake_request(req).await;
    let widget = json!({"name": "W1", "doctype": "Widget", "label": "First", "size": 3, "color": "#00ff00",
                        "owner": "es@example.com", "modified_by": "es@example.com", "docstatus": 0, "idx": 0,
                        "__unsaved": 1, "creation": "2026-12-01 10:00:00.000000", "modified": "2026-12-01 10:00:00.000000"});
    let message = match path.as_str() {
        "/api/method/frappe.ping" => json!("pong"),
        "/api/method/frappe.auth.get_logged_user" => json!("es@example.com"),
        "/api/method/frappe.desk.form.load.getdoctype" if arg(&args, "doctype").as_deref() == Some("Widget") => {
            // Frappe puts the bundle at the top of the answer.
            return axum::Json(json!({"docs": [{
                "name": "Widget", "doctype": "DocType", "module": "Stock", "custom": 0, "istable": 0,
                "autoname": "Prompt", "__js": "frappe.ui.form.on('Widget', {refresh() { alert(1) }})",
                "__css": "body { display: none }", "__list_js": "alert(2)",
                "fields": [
                    {"fieldname": "label", "label": "Label", "fieldtype": "Data", "reqd": 1},
                    {"fieldname": "size", "label": "Size", "fieldtype": "Int"},
                    {"fieldname": "color", "label": "Color", "fieldtype": "Color"},
                    {"fieldname": "warehouse", "label": "Warehouse", "fieldtype": "Link", "options": "Warehouse"},
                    {"fieldname": "help_html", "label": "Help", "fieldtype": "HTML", "options": "<script>alert(3)</script>"}],
                "permissions": [{"role": "Stock User", "read": 1, "permlevel": 0}]}],
                "user_settings": "{}"}))
            .into_response();
        }
        "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer" => {
            json!("{\"last_update\": \"2026-12-01 09:00:00.000000\"}")
        }
        "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer" => {
            let since = arg(&args, "last_update").unwrap_or_default();
            let log = json!({"update_type": "Create", "ref_doctype": "Widget", "docname": "W1", "name": 1,
                             "creation": "2026-12-01 10:00:01.000000", "data": widget.to_string()});
            Value::Array(
                [log]
                    .into_iter()
                    .filter(|l| l["creation"].as_str().unwrap_or("") > since.as_str())
                    .collect(),
            )
        }
        other => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"exc_type": "DoesNotExistError", "exception": other})),
            )
                .into_response()
        }
    };
    axum::Json(json!({ "message": message })).into_response()
}

/// From a Frappe producer: the type is made from its definition (read in Frappe's shape),
/// nothing executable is kept, a Link to a type this site lacks holds the name as text, and
/// the document arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_producers_type_is_made_without_its_scripts() {
    let producer = serve_fake(axum::Router::new().fallback(frappe_widgets)).await;
    let c = TestSite::start_with(Backend::Sqlite, &[("pull_interval", json!(1))])
        .await
        .unwrap();
    c.insert("User", json!({"email": "es@example.com", "first_name": "ES", "roles": [{"role": "System Manager"}]}))
        .await;
    c.post(
        "/api/method/frappe.core.doctype.user.user.generate_keys",
        json!({"user": "es@example.com"}),
    )
    .await;
    let (s, b) = c
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": producer, "user": "es@example.com", "api_key": "k", "api_secret": "s",
                   "producer_doctypes": [{"ref_doctype": "Widget", "use_same_name": 1}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", c.log());
    let w = eventually(15, "W1 on the consumer", || async {
        get_opt(&c, "/api/resource/Widget/W1").await
    })
    .await;
    assert_eq!(
        (&w["label"], &w["size"], &w["color"]),
        (&json!("First"), &json!(3), &json!("#00ff00"))
    );
    let (_, dt) = c
        .get("/api/method/frappe.desk.form.load.getdoctype?doctype=Widget")
        .await;
    let text = dt.to_string();
    for gone in ["__js", "__css", "__list_js", "alert("] {
        assert!(!text.contains(gone), "{gone} kept: {text}");
    }
    let warehouse = dt["docs"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldname"] == "warehouse")
        .unwrap()
        .clone();
    assert_eq!(warehouse["fieldtype"], "Data", "{warehouse}");
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

/// A producer may hold a document without a field its own definition requires (ERPNext's root
/// Accounts have no parent account): it arrives, into the type made from that definition, and
/// its sync log says what it is held without. A field only the consumer requires stays its
/// rule: a document without it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_held_without_the_producers_mandatory_parent_arrives() {
    let (p, c) = start_pair().await;
    p.insert(
        "DocType",
        json!({"name": "Ledger", "autoname": "field:ledger_name", "fields": [
            {"fieldname": "ledger_name", "label": "Ledger Name", "fieldtype": "Data", "reqd": 1, "unique": 1}]}),
    )
    .await;
    p.insert("Ledger", json!({"ledger_name": "Root"})).await;
    // The parent becomes mandatory once the root is in, as ERPNext's roots predate theirs.
    let parent = json!({"dt": "Ledger", "fieldname": "parent_ledger", "label": "Parent Ledger",
                        "fieldtype": "Link", "options": "Ledger", "reqd": 1});
    let (s, b) = p.post("/api/resource/Custom Field", parent).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p
        .post("/api/resource/Ledger", json!({"ledger_name": "Orphan"}))
        .await;
    assert_eq!(s, 417, "the producer itself requires a parent now: {b}");
    p.insert(
        "Ledger",
        json!({"ledger_name": "Sales", "parent_ledger": "Root"}),
    )
    .await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Ledger", "use_same_name": 1, "sync_existing": 1}]),
    )
    .await;
    eventually(15, "Sales on the consumer", || {
        get_opt(&c, "/api/resource/Ledger/Sales")
    })
    .await;
    let root = get_opt(&c, "/api/resource/Ledger/Root")
        .await
        .expect("the root is held here");
    assert!(root["parent_ledger"].is_null(), "{root}");
    let dt = get_opt(&c, "/api/resource/DocType/Ledger").await.unwrap();
    let field = dt["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldname"] == "parent_ledger")
        .expect("parent_ledger made from the producer's definition");
    assert_eq!(field["reqd"], 1, "still mandatory here: {field}");
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?fields=["status","docname","error","note"]&filters=[["ref_doctype","=","Ledger"]]&limit_page_length=0"#)
        .await;
    let logs = logs["data"].as_array().unwrap().clone();
    let root_log = logs
        .iter()
        .find(|l| l["docname"] == "Root")
        .expect("Root's sync log");
    assert_eq!(root_log["status"], "Synced", "{logs:?}");
    assert!(
        root_log["note"]
            .as_str()
            .is_some_and(|n| n.contains("held without Parent Ledger (parent_ledger)")),
        "{root_log}"
    );
    let sales_log = logs.iter().find(|l| l["docname"] == "Sales").unwrap();
    assert!(
        sales_log["note"].as_str().unwrap_or("").is_empty(),
        "{sales_log}"
    );
    // A mandatory field of the consumer's own: the producer's documents lack it, and fail.
    let own = json!({"dt": "Ledger", "fieldname": "cost_code", "label": "Cost Code",
                     "fieldtype": "Data", "reqd": 1});
    let (s, b) = c.post("/api/resource/Custom Field", own).await;
    assert_eq!(s, 200, "{b}");
    p.insert(
        "Ledger",
        json!({"ledger_name": "Income", "parent_ledger": "Root"}),
    )
    .await;
    let failed = eventually(15, "Income's failed sync log", || async {
        let (_, l) = c
            .get(r#"/api/resource/Event Sync Log?fields=["status","error"]&filters=[["producer_doc","=","Income"]]"#)
            .await;
        l["data"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("Cost Code (cost_code)"),
        "{failed}"
    );
    assert!(get_opt(&c, "/api/resource/Ledger/Income").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_held_here_as_text_is_followed() {
    let (p, c) = start_pair().await;
    // As ERPNext's Customer.customer_group meets docstream's built-in Customer (a Data field):
    // the field keeps this site's definition, the documents it names arrive all the same, so
    // that a Frappe consumer of this site (whose field is a Link) finds them here.
    let region =
        json!({"fieldname": "region", "label": "Region", "fieldtype": "Link", "options": "Region"});
    let as_text = json!({"fieldname": "region", "label": "Region", "fieldtype": "Data"});
    p.insert(
        "DocType",
        json!({"name": "Region", "autoname": "field:region_name", "fields": [
            {"fieldname": "region_name", "label": "Region Name", "fieldtype": "Data", "reqd": 1, "unique": 1},
            {"fieldname": "manager", "label": "Manager", "fieldtype": "Data"}]}),
    )
    .await;
    for (site, region) in [(&p, &region), (&c, &as_text)] {
        site.insert(
            "DocType",
            json!({"name": "Depot Bin", "istable": 1, "fields": [
                {"fieldname": "bin_no", "label": "Bin No", "fieldtype": "Data"}, region]}),
        )
        .await;
        site.insert(
            "DocType",
            json!({"name": "Depot", "autoname": "field:depot_name", "fields": [
                {"fieldname": "depot_name", "label": "Depot Name", "fieldtype": "Data", "reqd": 1, "unique": 1},
                region,
                {"fieldname": "bins", "label": "Bins", "fieldtype": "Table", "options": "Depot Bin"}]}),
        )
        .await;
    }
    for (name, manager) in [("North", "Ann"), ("East", "Bo"), ("South", "Cy")] {
        p.insert("Region", json!({"region_name": name, "manager": manager}))
            .await;
    }
    p.insert(
        "Depot",
        json!({"depot_name": "D1", "region": "North", "bins": [{"bin_no": "B1", "region": "East"}]}),
    )
    .await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Depot", "use_same_name": 1, "sync_existing": 1}]),
    )
    .await;
    eventually(15, "D1 on the consumer", || {
        get_opt(&c, "/api/resource/Depot/D1")
    })
    .await;
    for (name, manager) in [("North", "Ann"), ("East", "Bo")] {
        let r = get_opt(&c, format!("/api/resource/Region/{name}"))
            .await
            .unwrap_or_else(|| panic!("Region {name}, named by a field held here as text"));
        assert_eq!(r["manager"], manager, "{r}");
    }
    let dt = get_opt(&c, "/api/resource/DocType/Depot").await.unwrap();
    let field = dt["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldname"] == "region")
        .cloned()
        .unwrap();
    assert_eq!(
        field["fieldtype"], "Data",
        "the local definition is kept: {field}"
    );
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?fields=["status","docname","note"]&filters=[["ref_doctype","=","Region"]]&limit_page_length=0"#)
        .await;
    let north = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["docname"] == "North")
        .cloned()
        .unwrap_or_else(|| panic!("North's sync log: {logs}"));
    assert_eq!(north["status"], "Synced", "{north}");
    assert!(
        north["note"]
            .as_str()
            .is_some_and(|n| n.contains("dependency of Depot D1")),
        "{north}"
    );
    // Live, through an Update that names another.
    let (s, b) = p
        .put("/api/resource/Depot/D1", json!({"region": "South"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let south = eventually(15, "South on the consumer", || {
        get_opt(&c, "/api/resource/Region/South")
    })
    .await;
    assert_eq!(south["manager"], "Cy", "{south}");
    let d1 = get_opt(&c, "/api/resource/Depot/D1").await.unwrap();
    assert_eq!(d1["region"], "South", "{d1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cycle_among_dependencies_arrives_without_a_false_note() {
    let (p, c) = start_pair().await;
    // As ERPNext's Company names its default Accounts, each of which names the Company.
    for site in [&p, &c] {
        site.insert(
            "DocType",
            json!({"name": "Firm", "autoname": "field:firm_name", "fields": [
                {"fieldname": "firm_name", "label": "Firm Name", "fieldtype": "Data", "reqd": 1, "unique": 1}]}),
        )
        .await;
        site.insert(
            "DocType",
            json!({"name": "Book", "autoname": "field:book_name", "fields": [
                {"fieldname": "book_name", "label": "Book Name", "fieldtype": "Data", "reqd": 1, "unique": 1},
                {"fieldname": "firm", "label": "Firm", "fieldtype": "Link", "options": "Firm", "reqd": 1}]}),
        )
        .await;
        let cf = json!({"dt": "Firm", "fieldname": "default_book", "label": "Default Book",
                        "fieldtype": "Link", "options": "Book"});
        let (s, b) = site.post("/api/resource/Custom Field", cf).await;
        assert_eq!(s, 200, "{b}");
        site.insert(
            "DocType",
            json!({"name": "Deal", "autoname": "field:deal_name", "fields": [
                {"fieldname": "deal_name", "label": "Deal Name", "fieldtype": "Data", "reqd": 1, "unique": 1},
                {"fieldname": "firm", "label": "Firm", "fieldtype": "Link", "options": "Firm"}]}),
        )
        .await;
    }
    p.insert("Firm", json!({"firm_name": "F1"})).await;
    p.insert("Book", json!({"book_name": "B1", "firm": "F1"}))
        .await;
    let (s, b) = p
        .put("/api/resource/Firm/F1", json!({"default_book": "B1"}))
        .await;
    assert_eq!(s, 200, "{b}");
    subscribe(&p, &c, json!([{"ref_doctype": "Deal", "use_same_name": 1}])).await;
    p.insert("Deal", json!({"deal_name": "D1", "firm": "F1"}))
        .await;
    eventually(15, "D1 on the consumer", || {
        get_opt(&c, "/api/resource/Deal/D1")
    })
    .await;
    let firm = get_opt(&c, "/api/resource/Firm/F1").await.unwrap();
    assert_eq!(firm["default_book"], "B1", "{firm}");
    let book = get_opt(&c, "/api/resource/Book/B1").await.unwrap();
    assert_eq!(book["firm"], "F1", "set once its firm was in: {book}");
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?fields=["docname","note"]&filters=[["ref_doctype","in",["Firm","Book"]]]"#)
        .await;
    let logs = logs["data"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for l in logs {
        assert!(
            !l["note"].as_str().unwrap_or("").contains("held without"),
            "a field filled before the commit is not missing: {l}"
        );
    }
}
