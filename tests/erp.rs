//! Documents as ERP users meet them across sites: series names that never clash with what
//! streamed in, fields added at run time read at once, child rows sent whole.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_office_creates_invoices_after_receiving_a_branchs_sqlite() {
    head_office_and_branch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_office_creates_invoices_after_receiving_a_branchs_postgres() {
    head_office_and_branch(Backend::Postgres).await;
}

async fn head_office_and_branch(backend: Backend) {
    let Some((branch, ho)) = start_pair_on(backend).await else {
        return;
    };
    for site in [&branch, &ho] {
        seed_invoice_masters(site).await;
    }
    subscribe(
        &branch,
        &ho,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let invoice = json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 1, "rate": 5}]});
    let mut branch_names = Vec::new();
    for _ in 0..3 {
        let d = branch.insert("Sales Invoice", invoice.clone()).await;
        branch_names.push(d["name"].as_str().unwrap().to_string());
    }
    for n in &branch_names {
        eventually(15, "the branch's invoice at the head office", || {
            get_opt(&ho, format!("/api/resource/Sales Invoice/{n}"))
        })
        .await;
    }
    // The head office's own invoices take names past the ones that arrived, on every save.
    // (Both sites share the default series here; names the branch mints later can still meet
    // the head office's: per-site series keep them apart.)
    let mut own = Vec::new();
    for i in 0..4 {
        let (s, b) = ho
            .post("/api/resource/Sales Invoice", invoice.clone())
            .await;
        assert_eq!(s, 200, "head office invoice {i}: {b}");
        own.push(b["data"]["name"].as_str().unwrap().to_string());
    }
    for n in &own {
        assert!(!branch_names.contains(n), "{n} is also a branch invoice");
    }
    assert_eq!(count_of(&ho, "Sales Invoice", json!({})).await, 7);
    // Nothing of the branch's was overwritten by the head office's own.
    for n in &branch_names {
        let d = get_opt(&ho, format!("/api/resource/Sales Invoice/{n}"))
            .await
            .unwrap();
        assert_eq!(d["owner"], "sync@example.com", "{n} came from the branch");
    }
    let failed = count_of(&ho, "Event Sync Log", json!({"status": "Failed"})).await;
    assert_eq!(failed, 0);
}

/// A head office and two branches with series of their own (`naming_series` per site), all
/// writing invoices at once: every invoice reaches the head office under its own name.
async fn three_sites_with_their_own_series(backend: Backend) {
    let series = |own: &[&str]| json!({ "Sales Invoice": own });
    let base = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    let with = |s: Value| {
        let mut v: Vec<(&str, Value)> = base.to_vec();
        v.push(("naming_series", s));
        v
    };
    let Some(ho) = TestSite::start_with(
        backend,
        &with(series(&[
            "HO-SINV-.YYYY.-",
            "BR1-SINV-.YYYY.-",
            "BR2-SINV-.YYYY.-",
        ])),
    )
    .await
    else {
        return;
    };
    let b1 = TestSite::start_with(backend, &with(series(&["BR1-SINV-.YYYY.-"])))
        .await
        .unwrap();
    let b2 = TestSite::start_with(backend, &with(series(&["BR2-SINV-.YYYY.-"])))
        .await
        .unwrap();
    for site in [&ho, &b1, &b2] {
        seed_invoice_masters(site).await;
    }
    let rows = json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]);
    subscribe(&b1, &ho, rows.clone()).await;
    // The head office's Event Subscriber exists now; the second subscription reuses it.
    let (key, secret) = subscriber(&b2).await;
    subscribe_with_keys(&b2, &ho, rows, &key, &secret).await;
    let invoice = json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 1, "rate": 5}]});
    let mut names = Vec::new();
    for _ in 0..5 {
        for site in [&b1, &b2, &ho] {
            let d = site.insert("Sales Invoice", invoice.clone()).await;
            names.push(d["name"].as_str().unwrap().to_string());
        }
    }
    for prefix in ["BR1-SINV-", "BR2-SINV-", "HO-SINV-"] {
        assert_eq!(
            names.iter().filter(|n| n.starts_with(prefix)).count(),
            5,
            "{names:?}"
        );
    }
    eventually(20, "all 15 invoices at the head office", || async {
        (count_of(&ho, "Sales Invoice", json!({})).await == 15).then_some(())
    })
    .await;
    for n in &names {
        assert!(
            get_opt(&ho, format!("/api/resource/Sales Invoice/{n}"))
                .await
                .is_some(),
            "{n}"
        );
    }
    assert_eq!(
        count_of(&ho, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
    // The series is fixed once saved; the desk's form offers the site's own first.
    let mine = names.iter().find(|n| n.starts_with("HO-")).unwrap();
    let r = ho
        .put(
            &format!("/api/resource/Sales Invoice/{mine}"),
            json!({"naming_series": "BR1-SINV-.YYYY.-"}),
        )
        .await;
    assert_error(&r, 417, "ValidationError");
    assert!(
        r.1["exception"].as_str().unwrap().contains("naming_series"),
        "{}",
        r.1
    );
    let (_, dt) = ho
        .get("/api/method/frappe.desk.form.load.getdoctype?doctype=Sales%20Invoice")
        .await;
    let field = dt["docs"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldname"] == "naming_series")
        .unwrap()
        .clone();
    assert_eq!(field["default"], "HO-SINV-.YYYY.-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_branches_and_a_head_office_sqlite() {
    three_sites_with_their_own_series(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_branches_and_a_head_office_postgres() {
    three_sites_with_their_own_series(Backend::Postgres).await;
}

both_backends!(
    a_series_counter_behind_existing_names,
    |site: TestSite| async move {
        let year = chrono_year();
        let first = site.insert("Lead", json!({"lead_name": "first"})).await;
        assert_eq!(first["name"], format!("CRM-LEAD-{year}-00001"));
        // A name ahead of the counter (as names that arrive from another site are).
        let (s, b) = site
        .post("/api/method/frappe.client.rename_doc", json!({"doctype": "Lead", "old_name": format!("CRM-LEAD-{year}-00001"), "new_name": format!("CRM-LEAD-{year}-00002")}))
        .await;
        assert_eq!(s, 200, "{b}");
        // Minting skips the taken name instead of failing on it.
        let next = site.insert("Lead", json!({"lead_name": "next"})).await;
        assert_eq!(next["name"], format!("CRM-LEAD-{year}-00003"));
        assert_eq!(count_of(&site, "Lead", json!({})).await, 2);
    }
);

fn chrono_year() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days since 1970 to a year: close enough away from New Year's Eve.
    (1970 + secs / 31_556_952).to_string()
}

both_backends!(
    a_custom_field_is_read_at_once,
    |site: TestSite| async move {
        let todo = site
            .insert("ToDo", json!({"description": "before the field"}))
            .await;
        let name = todo["name"].as_str().unwrap().to_string();
        // Read it (and list it) first, so statements for the old columns exist.
        for _ in 0..3 {
            assert!(get_opt(&site, format!("/api/resource/ToDo/{name}"))
                .await
                .is_some());
            let (s, _) = site.get(r#"/api/resource/ToDo?fields=["*"]"#).await;
            assert_eq!(s, 200);
        }
        let (s, b) = site
        .post("/api/resource/Custom Field", json!({"dt": "ToDo", "fieldname": "shop_code", "fieldtype": "Data", "label": "Shop Code"}))
        .await;
        assert_eq!(s, 200, "{b}");
        let field_doc = b["data"]["name"].as_str().unwrap().to_string();
        let (s, b) = site
            .put(
                &format!("/api/resource/ToDo/{name}"),
                json!({"shop_code": "S-17"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["data"]["shop_code"], "S-17");
        let got = get_opt(&site, format!("/api/resource/ToDo/{name}"))
            .await
            .unwrap();
        assert_eq!(got["shop_code"], "S-17", "{got}");
        let (_, l) = site
            .get(r#"/api/resource/ToDo?fields=["*"]&limit_page_length=0"#)
            .await;
        assert!(
            l["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["shop_code"] == "S-17"),
            "{l}"
        );
        // And gone from reads once the field is deleted.
        let (s, _) = site
            .delete(&format!("/api/resource/Custom Field/{field_doc}"))
            .await;
        assert_eq!(s.as_u16(), 202);
        let got = get_opt(&site, format!("/api/resource/ToDo/{name}"))
            .await
            .unwrap();
        assert!(got.get("shop_code").is_none(), "{got}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_child_rows_are_sent_whole_as_frappe_reads_them() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let (p, c) = (&site, TestSite::start(Backend::Sqlite).await.unwrap());
    subscribe(
        p,
        &c,
        json!([{"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    site.insert(
        "User",
        json!({"email": "seen@example.com", "first_name": "S"}),
    )
    .await;
    let note = p.insert("Note", json!({"title": "rows"})).await;
    let name = note["name"].as_str().unwrap().to_string();
    let (s, b) = p
        .put(
            &format!("/api/resource/Note/{name}"),
            json!({"seen_by": [{"user": "seen@example.com"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, logs) = p
        .get(r#"/api/resource/Event Update Log?fields=["name","update_type","data"]&filters=[["update_type","=","Update"]]&limit_page_length=0"#)
        .await;
    let log = logs["data"].as_array().unwrap().last().cloned().unwrap();
    let data: Value = serde_json::from_str(log["data"].as_str().unwrap()).unwrap();
    let row = &data["added"]["seen_by"][0];
    assert_whole_child_row(row);
    assert_eq!(row["doctype"], "Note Seen By");
    assert_eq!(row["parent"], name.as_str());
    assert_eq!(row["parentfield"], "seen_by");
    assert_eq!(row["parenttype"], "Note");
    assert_eq!(row["user"], "seen@example.com");
    // And a docstream consumer applies it as before (the User comes as a dependency).
    eventually(10, "the row on the consumer", || async {
        get_opt(&c, format!("/api/resource/Note/{name}"))
            .await
            .filter(|d| d["seen_by"][0]["user"] == "seen@example.com")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frappe_shaped_answers_for_streaming_calls() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let (s, b) = site
        .request(&site.admin_auth, Method::POST, "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer", Some(json!({"data": json!({"event_consumer": "http://127.0.0.1:1", "user": "nobody@example.com", "api_key": "k", "api_secret": "s", "consumer_doctypes": "[]"}).to_string()})))
        .await;
    assert_eq!(s.as_u16(), 417, "{b}");
    assert!(
        b["exception"]
            .as_str()
            .unwrap()
            .contains("User nobody@example.com not found on the producer site"),
        "{b}"
    );
    let (s, b) = site
        .request(&site.admin_auth, Method::POST, "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.new_event_notification", Some(json!({"producer_url": "http://127.0.0.1:1"})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({}),
        "Frappe's answer to a method that returns None"
    );
    let (_, dt) = site.get("/api/resource/DocType/ToDo").await;
    let priority = dt["data"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fieldname"] == "priority")
        .unwrap()
        .clone();
    assert_eq!(priority["options"], "High\nMedium\nLow");
}

fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

both_backends!(
    sales_invoices_compute_fetch_and_guard,
    |site: TestSite| async move {
        seed_invoice_masters(&site).await;
        let (s, _) = site
            .put(
                "/api/resource/Item/I1",
                json!({"item_name": "Hammer", "standard_rate": 12.5}),
            )
            .await;
        assert_eq!(s, 200);
        // No date, no rate, a client's own total: the server fills and computes.
        let (s, b) = site
        .post("/api/resource/Sales Invoice", json!({"customer": "Both", "total": 999, "items": [{"item_code": "I1", "qty": 2}, {"item_code": "I1", "qty": 1, "rate": 4}]}))
        .await;
        assert_eq!(s, 200, "{b}");
        let inv = &b["data"];
        assert_eq!(inv["posting_date"], today());
        assert_eq!(inv["items"][0]["rate"], 12.5);
        assert_eq!(inv["items"][0]["amount"], 25.0);
        assert_eq!(inv["items"][0]["item_name"], "Hammer");
        assert_eq!(inv["items"][0]["uom"], Value::Null, "I1 has no stock UOM");
        assert_eq!(inv["items"][1]["amount"], 4.0);
        assert_eq!(
            (inv["total"].clone(), inv["grand_total"].clone()),
            (json!(29.0), json!(29.0))
        );
        let name = inv["name"].as_str().unwrap().to_string();
        // A changed quantity recomputes; the naming series is fixed once saved.
        let mut rows = inv["items"].as_array().unwrap().clone();
        rows[1]["qty"] = json!(3);
        let (s, b) = site
            .put(
                &format!("/api/resource/Sales Invoice/{name}"),
                json!({"items": rows}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["data"]["total"], 37.0);
        // (A series that is not an option is refused as any bad Select value is.)
        let r = site
            .put(
                &format!("/api/resource/Sales Invoice/{name}"),
                json!({"naming_series": "SINV-.YYYY.-X"}),
            )
            .await;
        assert_error(&r, 417, "ValidationError");
        // No posting date: no submit.
        let r = site
            .put(
                &format!("/api/resource/Sales Invoice/{name}"),
                json!({"posting_date": "", "docstatus": 1}),
            )
            .await;
        assert_error(&r, 417, "MandatoryError");
        let (_, d) = site
            .get(&format!("/api/resource/Sales Invoice/{name}"))
            .await;
        assert_eq!(
            (
                d["data"]["docstatus"].clone(),
                d["data"]["posting_date"].clone()
            ),
            (json!(0), json!(today())),
            "nothing written"
        );
        // Item Code is set once.
        let r = site
            .put("/api/resource/Item/I1", json!({"item_code": "I9"}))
            .await;
        assert_error(&r, 417, "ValidationError");
        assert!(
            r.1["exception"].as_str().unwrap().contains("item_code"),
            "{}",
            r.1
        );
    }
);

both_backends!(
    fetch_from_and_defaults_are_checked_when_a_type_is_made,
    |site: TestSite| async move {
        let bad_fetch = json!({"dt": "ToDo", "fieldname": "who_name", "fieldtype": "Data", "fetch_from": "allocated_to.no_such_field"});
        let r = site.post("/api/resource/Custom Field", bad_fetch).await;
        assert_error(&r, 417, "ValidationError");
        assert!(
            r.1["exception"].as_str().unwrap().contains("who_name")
                && r.1["exception"].as_str().unwrap().contains("no_such_field"),
            "{}",
            r.1
        );
        let bad_default = json!({"name": "Shop Visit", "module": "Custom", "fields": [{"fieldname": "visits", "fieldtype": "Int", "default": "many"}], "permissions": [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]});
        let r = site.post("/api/resource/DocType", bad_default).await;
        assert_error(&r, 417, "ValidationError");
        assert!(
            r.1["exception"].as_str().unwrap().contains("visits"),
            "{}",
            r.1
        );
        let (s, _) = site.get("/api/resource/DocType/Shop Visit").await;
        assert_eq!(s.as_u16(), 404, "nothing written");
        // A run-time type gets the same behaviour as the built-in ones.
        site.insert(
            "User",
            json!({"email": "clerk@example.com", "first_name": "Clerk", "last_name": "One"}),
        )
        .await;
        let good = json!({"name": "Shop Visit", "module": "Custom", "fields": [
        {"fieldname": "visitor", "fieldtype": "Link", "options": "User", "default": "__user"},
        {"fieldname": "visitor_name", "fieldtype": "Data", "fetch_from": "visitor.full_name", "read_only": 1},
        {"fieldname": "day", "fieldtype": "Date", "default": "Today"},
        {"fieldname": "code", "fieldtype": "Data", "set_only_once": 1}
    ], "permissions": [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]});
        let (s, b) = site.post("/api/resource/DocType", good).await;
        assert_eq!(s, 200, "{b}");
        let v = site.insert("Shop Visit", json!({"code": "A"})).await;
        assert_eq!(v["visitor"], "Administrator");
        assert_eq!(v["day"], today());
        let name = v["name"].as_str().unwrap().to_string();
        let (s, b) = site
            .put(
                &format!("/api/resource/Shop Visit/{name}"),
                json!({"visitor": "clerk@example.com"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["data"]["visitor_name"], "Clerk One");
        let r = site
            .put(
                &format!("/api/resource/Shop Visit/{name}"),
                json!({"code": "B"}),
            )
            .await;
        assert_error(&r, 417, "ValidationError");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_invoices_are_stored_as_the_producer_sent_them() {
    let (p, c) = start_pair().await;
    for site in [&p, &c] {
        seed_invoice_masters(site).await;
    }
    p.put(
        "/api/resource/Item/I1",
        json!({"item_name": "Producer name", "standard_rate": 7}),
    )
    .await;
    c.put(
        "/api/resource/Item/I1",
        json!({"item_name": "Consumer name", "standard_rate": 100}),
    )
    .await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let inv = p
        .insert("Sales Invoice", json!({"customer": "Both", "posting_date": "2026-01-02", "items": [{"item_code": "I1", "qty": 3}]}))
        .await;
    let name = inv["name"].as_str().unwrap().to_string();
    let got = eventually(10, "the invoice on the consumer", || {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
    })
    .await;
    for k in ["posting_date", "total", "grand_total", "customer"] {
        assert_eq!(got[k], inv[k], "{k}");
    }
    for k in ["item_name", "rate", "amount", "qty"] {
        assert_eq!(got["items"][0][k], inv["items"][0][k], "row {k}");
    }
    assert_eq!(got["items"][0]["item_name"], "Producer name");
    assert_eq!(got["total"], 21.0);
}

/// What an ERPNext branch's invoices bring to a hub: a naming series the hub does not list
/// (kept as sent, said on the sync log), and a cancel that changes `status` with `docstatus`
/// (as ERPNext's does, and Frappe allows): both arrive. A Custom Field deleted and added again
/// takes its kept column back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branchs_series_and_its_cancel_with_a_status_arrive() {
    let settings = |series: &[&str]| {
        vec![
            ("pull_interval", json!(1)),
            ("retry_base_seconds", json!(3600)),
            ("naming_series", json!({ "Sales Invoice": series })),
        ]
    };
    let branch = TestSite::start_with(
        Backend::Sqlite,
        &settings(&["SINV-.YYYY.-", "ACC-SINV-.YYYY.-"]),
    )
    .await
    .unwrap();
    let hub = TestSite::start_with(Backend::Sqlite, &settings(&["SINV-.YYYY.-"]))
        .await
        .unwrap();
    for site in [&branch, &hub] {
        seed_invoice_masters(site).await;
    }
    let status = json!({"dt": "Sales Invoice", "fieldname": "status", "label": "Status",
                        "fieldtype": "Data", "allow_on_submit": 1});
    let (s, b) = branch
        .post("/api/resource/Custom Field", status.clone())
        .await;
    assert_eq!(s, 200, "{b}");
    // The hub had such a field once: its column stays when it is deleted, and is taken back.
    let (s, b) = hub.post("/api/resource/Custom Field", status.clone()).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = hub
        .request(
            &hub.admin_auth,
            Method::DELETE,
            "/api/resource/Custom Field/Sales Invoice-status",
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = hub.post("/api/resource/Custom Field", status).await;
    assert_eq!(s, 200, "added again: {b}");
    subscribe(
        &branch,
        &hub,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let inv = branch
        .insert(
            "Sales Invoice",
            json!({"naming_series": "ACC-SINV-.YYYY.-", "customer": "Both", "status": "Draft",
                   "items": [{"item_code": "I1", "qty": 1, "rate": 10}]}),
        )
        .await;
    let name = inv["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("ACC-SINV-"), "{name}");
    let path = format!("/api/resource/Sales Invoice/{name}");
    let (s, b) = branch
        .put(&path, json!({"docstatus": 1, "status": "Unpaid"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = branch
        .put(&path, json!({"docstatus": 2, "status": "Cancelled"}))
        .await;
    assert_eq!(s, 200, "a cancel may change a field that allows it: {b}");
    let (s, b) = branch.put(&path, json!({"customer": "Other"})).await;
    assert_eq!(s, 417, "a cancelled invoice stays as it is: {b}");
    let got = eventually(15, "the cancel on the hub", || async {
        let d = get_opt(&hub, path.clone()).await?;
        (d["docstatus"] == 2).then_some(d)
    })
    .await;
    assert_eq!(got["status"], "Cancelled", "{got}");
    assert_eq!(got["naming_series"], "ACC-SINV-.YYYY.-", "{got}");
    let (_, logs) = hub
        .get(r#"/api/resource/Event Sync Log?fields=["status","update_type","note"]&limit_page_length=0"#)
        .await;
    let logs = logs["data"].as_array().unwrap().clone();
    assert!(logs.iter().all(|l| l["status"] == "Synced"), "{logs:?}");
    let create = logs.iter().find(|l| l["update_type"] == "Create").unwrap();
    assert!(
        create["note"].as_str().unwrap_or("").contains(
            "kept as sent, not one of this site's choices: Naming Series (naming_series) \"ACC-SINV-.YYYY.-\""
        ),
        "{create}"
    );
}
