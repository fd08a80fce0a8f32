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
    for key in [
        "doctype",
        "name",
        "parent",
        "parentfield",
        "parenttype",
        "idx",
    ] {
        assert!(!row[key].is_null(), "{key} missing from {row}");
    }
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
    assert_eq!(b["message"], json!({}));
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
