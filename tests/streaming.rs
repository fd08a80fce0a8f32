//! Event streaming between two real `docstream serve` processes over loopback HTTP.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_child_rows_rename_delete_flow() {
    let (p, c) = start_pair().await;
    flow(p, c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_child_rows_rename_delete_flow_postgres() {
    if let Some((p, c)) = start_pair_on(Backend::Postgres).await {
        flow(p, c).await;
    }
}

async fn flow(p: TestSite, c: TestSite) {
    // Written before the subscription exists: never delivered (only changes after approval flow).
    let early = p
        .insert("ToDo", json!({"description": "before subscribing"}))
        .await;
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}, {"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}])).await;
    let todo = p
        .insert(
            "ToDo",
            json!({"description": "streamed", "priority": "High"}),
        )
        .await;
    let name = todo["name"].as_str().unwrap().to_string();
    let got = eventually(10, "ToDo on the consumer", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    assert_eq!(got["description"], "streamed");
    assert_eq!(
        got["owner"], "sync@example.com",
        "the Event Subscriber owns applied documents"
    );
    assert!(get_opt(
        &c,
        format!("/api/resource/ToDo/{}", early["name"].as_str().unwrap())
    )
    .await
    .is_none());
    // Update.
    p.put(
        &format!("/api/resource/ToDo/{name}"),
        json!({"description": "edited", "status": "Closed"}),
    )
    .await;
    eventually(10, "update applied", || async {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
            .await
            .filter(|d| d["description"] == "edited" && d["status"] == "Closed")
    })
    .await;
    // Child rows: added, changed, removed.
    site_user(&p, "a@example.com").await;
    site_user(&p, "b@example.com").await;
    site_user(&c, "a@example.com").await;
    site_user(&c, "b@example.com").await;
    let note = p
        .insert(
            "Note",
            json!({"title": "N1", "seen_by": [{"user": "a@example.com"}]}),
        )
        .await;
    let nname = note["name"].as_str().unwrap().to_string();
    eventually(10, "note", || {
        get_opt(&c, format!("/api/resource/Note/{nname}"))
    })
    .await;
    let mut rows = note["seen_by"].as_array().unwrap().clone();
    rows[0]["user"] = json!("b@example.com");
    rows.push(json!({"user": "a@example.com"}));
    p.put(
        &format!("/api/resource/Note/{nname}"),
        json!({"seen_by": rows}),
    )
    .await;
    eventually(10, "child rows", || async {
        get_opt(&c, format!("/api/resource/Note/{nname}"))
            .await
            .filter(|d| {
                let users: Vec<&str> = d["seen_by"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["user"].as_str().unwrap())
                    .collect();
                users == ["b@example.com", "a@example.com"]
            })
    })
    .await;
    let (_, cur) = p.get(&format!("/api/resource/Note/{nname}")).await;
    let keep = vec![cur["data"]["seen_by"][1].clone()];
    p.put(
        &format!("/api/resource/Note/{nname}"),
        json!({"seen_by": keep}),
    )
    .await;
    eventually(10, "row removed", || async {
        get_opt(&c, format!("/api/resource/Note/{nname}"))
            .await
            .filter(|d| d["seen_by"].as_array().unwrap().len() == 1)
    })
    .await;
    // Rename.
    let (s, r) = p
        .request(
            &p.admin_auth,
            Method::POST,
            "/api/method/frappe.client.rename_doc",
            Some(json!({"doctype": "ToDo", "old_name": name, "new_name": "renamed-todo"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    eventually(10, "rename", || {
        get_opt(&c, "/api/resource/ToDo/renamed-todo")
    })
    .await;
    assert!(get_opt(&c, format!("/api/resource/ToDo/{name}"))
        .await
        .is_none());
    // Delete.
    p.delete("/api/resource/ToDo/renamed-todo").await;
    eventually(10, "delete", || async {
        get_opt(&c, "/api/resource/ToDo/renamed-todo")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // The sync log recorded each update, all Synced.
    let (_, logs) = c.get("/api/resource/Event Sync Log?fields=[\"update_type\",\"status\",\"ref_doctype\"]&limit_page_length=0").await;
    let logs = logs["data"].as_array().unwrap();
    assert!(logs.len() >= 7, "{logs:?}");
    assert!(logs.iter().all(|l| l["status"] == "Synced"), "{logs:?}");
    // No echo: the consumer re-logs applied changes with origin, never sent back to the producer.
    let (_, plogs) = p
        .get("/api/resource/Event Update Log?fields=[\"name\"]&limit_page_length=0")
        .await;
    let n = plogs["data"].as_array().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, plogs2) = p
        .get("/api/resource/Event Update Log?fields=[\"name\"]&limit_page_length=0")
        .await;
    assert_eq!(plogs2["data"].as_array().unwrap().len(), n);
}

async fn site_user(site: &TestSite, email: &str) {
    site.insert("User", json!({"email": email, "first_name": "U"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_cancel_failure_waiting_and_resync() {
    let (p, c) = start_pair().await;
    for site in [&p, &c] {
        seed_invoice_masters(site).await;
    }
    // A local invoice that takes the name the producer's first invoice will have: a name clash.
    let local = c
        .insert(
            "Sales Invoice",
            json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 9}]}),
        )
        .await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let clash = p
        .insert(
            "Sales Invoice",
            json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 1}]}),
        )
        .await;
    let clash_name = clash["name"].as_str().unwrap().to_string();
    assert_eq!(clash_name, local["name"].as_str().unwrap());
    p.put(
        &format!("/api/resource/Sales Invoice/{clash_name}"),
        json!({"due_date": "2030-01-01"}),
    )
    .await;
    // Later documents still flow.
    let inv = p
        .insert(
            "Sales Invoice",
            json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 2, "rate": 3}]}),
        )
        .await;
    let name = inv["name"].as_str().unwrap().to_string();
    eventually(10, "later invoice still flows", || {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
    })
    .await;
    let failed = eventually(10, "failed sync logs", || async {
        let q = format!("/api/resource/Event Sync Log?fields=[\"name\",\"status\",\"error\",\"update_type\"]&filters={}&order_by=seq%20asc", enc(&json!({"producer_doc": clash_name})));
        let (_, l) = c.get(&q).await;
        let l = l["data"].as_array().unwrap().clone();
        (l.len() == 2).then_some(l)
    })
    .await;
    assert!(failed.iter().all(|l| l["status"] == "Failed"));
    assert!(
        failed[0]["error"].as_str().unwrap().contains("name clash"),
        "{failed:?}"
    );
    assert_eq!(
        failed[1]["error"],
        format!("waiting on {}", failed[0]["name"].as_str().unwrap())
    );
    assert_eq!(
        get_opt(&c, format!("/api/resource/Sales Invoice/{clash_name}"))
            .await
            .unwrap()["items"][0]["qty"],
        9.0,
        "the local document is untouched"
    );
    // Remove the clash, then Resync: the failed one and the one waiting on it apply.
    assert_eq!(
        c.delete(&format!("/api/resource/Sales Invoice/{clash_name}"))
            .await
            .0,
        202
    );
    let (s, r) = c
        .request(
            &c.admin_auth,
            Method::POST,
            "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.resync",
            Some(json!({"update": failed[0]["name"]})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), r["message"].clone()),
        (200, json!("Synced")),
        "{r}"
    );
    let doc = get_opt(&c, format!("/api/resource/Sales Invoice/{clash_name}"))
        .await
        .expect("applied after resync");
    assert_eq!(
        doc["due_date"], "2030-01-01",
        "the waiting update applied too"
    );
    assert_eq!(doc["items"][0]["qty"], 1.0);
    let (_, l) = c
        .get(&format!(
            "/api/resource/Event Sync Log?fields=[\"status\"]&filters={}",
            enc(&json!({"producer_doc": clash_name}))
        ))
        .await;
    assert!(
        l["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "Synced"),
        "{l}"
    );
    // Submit and cancel flow as updates of docstatus.
    p.request(
        &p.admin_auth,
        Method::POST,
        "/api/method/frappe.client.submit",
        Some(json!({"doc": {"doctype": "Sales Invoice", "name": name}})),
    )
    .await;
    eventually(10, "submitted invoice", || async {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
            .await
            .filter(|d| d["docstatus"] == 1)
    })
    .await;
    p.request(
        &p.admin_auth,
        Method::POST,
        "/api/method/frappe.client.cancel",
        Some(json!({"doctype": "Sales Invoice", "name": name})),
    )
    .await;
    eventually(10, "cancelled invoice", || async {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
            .await
            .filter(|d| d["docstatus"] == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dependencies_arrive_first() {
    let (p, c) = start_pair().await;
    // Only the producer has the masters; the consumer subscribes to invoices alone.
    p.insert("UOM", json!({"uom_name": "Box"})).await;
    p.insert("Item Group", json!({"item_group_name": "Root"}))
        .await;
    p.insert(
        "Item Group",
        json!({"item_group_name": "Tools", "parent_item_group": "Root"}),
    )
    .await;
    for code in ["HAMMER", "SAW"] {
        p.insert(
            "Item",
            json!({"item_code": code, "item_group": "Tools", "stock_uom": "Box"}),
        )
        .await;
    }
    p.insert("Customer", json!({"customer_name": "Builder"}))
        .await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let inv = p.insert("Sales Invoice", json!({"customer": "Builder", "items": [{"item_code": "HAMMER", "qty": 1, "uom": "Box"}, {"item_code": "SAW", "qty": 2}]})).await;
    let name = inv["name"].as_str().unwrap().to_string();
    let got = eventually(15, "invoice with its dependencies", || {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
    })
    .await;
    assert_eq!(got["items"].as_array().unwrap().len(), 2);
    for path in [
        "/api/resource/Customer/Builder",
        "/api/resource/Item/HAMMER",
        "/api/resource/Item/SAW",
        "/api/resource/Item Group/Tools",
        "/api/resource/Item Group/Root",
        "/api/resource/UOM/Box",
    ] {
        assert!(
            get_opt(&c, path).await.is_some(),
            "{path} missing on the consumer"
        );
    }
    assert_eq!(
        get_opt(&c, "/api/resource/Item Group/Tools").await.unwrap()["parent_item_group"],
        "Root"
    );
    // Each dependency is recorded as synced from the producer.
    assert_eq!(
        count_of(
            &c,
            "Event Sync Log",
            json!({"ref_doctype": "Item", "status": "Synced"})
        )
        .await,
        2
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

fn enc(v: &Value) -> String {
    percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_errors_leave_nothing_behind() {
    let (p, c) = start_pair().await;
    let (pkey, psecret) = subscriber(&p).await;
    subscriber(&c).await;
    let before = c.get("/api/resource/Event Producer").await.1["data"]
        .as_array()
        .unwrap()
        .len();
    // Unreachable producer.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = c.post("/api/resource/Event Producer", json!({"producer_url": dead, "producer_doctypes": [{"ref_doctype": "ToDo"}], "user": "sync@example.com", "api_key": pkey, "api_secret": psecret})).await;
    assert_error(&r, 417, "ValidationError");
    assert!(
        r.1["exception"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{}",
        r.1
    );
    // Wrong keys.
    let r = c.post("/api/resource/Event Producer", json!({"producer_url": p.url, "producer_doctypes": [{"ref_doctype": "ToDo"}], "user": "sync@example.com", "api_key": pkey, "api_secret": "wrong"})).await;
    assert_error(&r, 417, "ValidationError");
    assert!(
        r.1["exception"]
            .as_str()
            .unwrap()
            .contains("refused the API key"),
        "{}",
        r.1
    );
    assert_eq!(
        c.get("/api/resource/Event Producer").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        before
    );
    assert_error(
        &p.get(&format!("/api/resource/Event Consumer/{}", c.url))
            .await,
        404,
        "DoesNotExistError",
    );
    // Success, then a duplicate is 409.
    let ok = c.post("/api/resource/Event Producer", json!({"producer_url": p.url, "producer_doctypes": [{"ref_doctype": "ToDo"}], "user": "sync@example.com", "api_key": pkey, "api_secret": psecret})).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let dup = c.post("/api/resource/Event Producer", json!({"producer_url": p.url, "producer_doctypes": [{"ref_doctype": "ToDo"}], "user": "sync@example.com", "api_key": pkey, "api_secret": psecret})).await;
    assert_error(&dup, 409, "DuplicateEntryError");
    // Pull protocol errors on the producer.
    let m = "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer";
    assert_error(
        &p.post_form(
            &p.admin_auth,
            m,
            &[
                ("event_consumer", "http://nobody:1"),
                ("doctypes", "[\"ToDo\"]"),
                ("after_seq", "0"),
            ],
        )
        .await,
        404,
        "DoesNotExistError",
    );
    assert_error(
        &p.post_form(
            &p.admin_auth,
            m,
            &[
                ("event_consumer", &c.url),
                ("doctypes", "ToDo"),
                ("after_seq", "0"),
            ],
        )
        .await,
        400,
        "ValidationError",
    );
    assert_error(
        &p.post_form(
            &p.admin_auth,
            m,
            &[
                ("event_consumer", &c.url),
                ("doctypes", "[\"ToDo\"]"),
                ("after_seq", "x"),
            ],
        )
        .await,
        400,
        "ValidationError",
    );
    assert_error(
        &p.post_form(
            "",
            m,
            &[
                ("event_consumer", &c.url),
                ("doctypes", "[\"ToDo\"]"),
                ("after_seq", "0"),
            ],
        )
        .await,
        403,
        "PermissionError",
    );
    // A pending (not approved) type yields nothing.
    p.insert("ToDo", json!({"description": "pending type"}))
        .await;
    let (s, page) = p
        .post_form(
            &p.admin_auth,
            m,
            &[
                ("event_consumer", &c.url),
                ("doctypes", "[\"ToDo\"]"),
                ("after_seq", "0"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["message"], json!([]));
    // The consumer's own user may not approve its rows.
    let (_, ec) = p
        .get(&format!("/api/resource/Event Consumer/{}", c.url))
        .await;
    let mut rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    rows[0]["status"] = json!("Approved");
    let sync_auth = format!("token {pkey}:{psecret}");
    let r = p
        .request(
            &sync_auth,
            Method::PUT,
            &format!("/api/resource/Event Consumer/{}", c.url),
            Some(json!({"consumer_doctypes": rows})),
        )
        .await;
    assert_error(&r, 403, "PermissionError");
    // Deleting the Event Producer removes its checkpoint and the registration on the producer.
    let (s, _) = c
        .delete(&format!("/api/resource/Event Producer/{}", p.url))
        .await;
    assert_eq!(s, 202);
    assert_eq!(
        c.get("/api/resource/Event Producer Last Update").await.1["data"],
        json!([])
    );
    eventually(5, "registration removed", || async {
        (p.get(&format!("/api/resource/Event Consumer/{}", c.url))
            .await
            .0
            == 404)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_offline_converge_exactly_once() {
    let (mut p, mut c) = start_pair().await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    // The consumer is down while the producer writes.
    c.kill();
    let total = 600;
    for i in 0..total {
        p.insert("ToDo", json!({"description": format!("offline {i}")}))
            .await;
    }
    // Some updates too, so order matters.
    let (_, first) = p
        .get("/api/resource/ToDo?fields=[\"name\"]&order_by=creation%20asc&limit_page_length=5")
        .await;
    for r in first["data"].as_array().unwrap() {
        p.put(
            &format!("/api/resource/ToDo/{}", r["name"].as_str().unwrap()),
            json!({"status": "Closed"}),
        )
        .await;
    }
    // Restart the consumer and kill it with SIGKILL in the middle of its catch-up.
    c.serve().await;
    eventually(30, "catch-up under way", || async {
        (count_of(&c, "ToDo", json!({})).await > 0).then_some(())
    })
    .await;
    c.kill();
    let mid = {
        c.serve().await;
        count_of(&c, "ToDo", json!({})).await
    };
    // Kill the producer too, then bring it back: the consumer retries on its interval.
    p.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.serve().await;
    eventually(60, "all documents", || async {
        (count_of(&c, "ToDo", json!({})).await == total).then_some(())
    })
    .await;
    eventually(30, "updates applied", || async {
        (count_of(&c, "ToDo", json!({"status": "Closed"})).await == 5).then_some(())
    })
    .await;
    assert!(mid <= total);
    // Exactly once: one Synced Create per document, no Failed entries.
    let creates = count_of(
        &c,
        "Event Sync Log",
        json!({"update_type": "Create", "status": "Synced"}),
    )
    .await;
    assert_eq!(creates, total, "each Create applied once");
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"update_type": "Update"})).await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_same_type_no_ping_pong() {
    let (a, b) = start_pair().await;
    let (akey, asecret) = subscriber(&a).await;
    let (bkey, bsecret) = subscriber(&b).await;
    for (consumer, producer, key, secret) in [(&b, &a, &akey, &asecret), (&a, &b, &bkey, &bsecret)]
    {
        let (s, r) = consumer.post("/api/resource/Event Producer", json!({"producer_url": producer.url, "producer_doctypes": [{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}], "user": "sync@example.com", "api_key": key, "api_secret": secret})).await;
        assert_eq!(s, 200, "{r}");
        let (_, ec) = producer
            .get(&format!("/api/resource/Event Consumer/{}", consumer.url))
            .await;
        let mut rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
        rows[0]["status"] = json!("Approved");
        assert_eq!(
            producer
                .put(
                    &format!("/api/resource/Event Consumer/{}", consumer.url),
                    json!({"consumer_doctypes": rows})
                )
                .await
                .0,
            200
        );
    }
    let t = a.insert("ToDo", json!({"description": "from A"})).await;
    let name = t["name"].as_str().unwrap().to_string();
    eventually(10, "A's ToDo on B", || {
        get_opt(&b, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    b.put(
        &format!("/api/resource/ToDo/{name}"),
        json!({"description": "edited on B"}),
    )
    .await;
    eventually(10, "B's edit on A", || async {
        get_opt(&a, format!("/api/resource/ToDo/{name}"))
            .await
            .filter(|d| d["description"] == "edited on B")
    })
    .await;
    // Quiet now: no more logs appear on either side.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = (
        count_of(&a, "Event Update Log", json!({})).await,
        count_of(&b, "Event Update Log", json!({})).await,
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = (
        count_of(&a, "Event Update Log", json!({})).await,
        count_of(&b, "Event Update Log", json!({})).await,
    );
    assert_eq!(before, after, "no ping-pong");
    assert_eq!(before, (2, 2), "each change logged once per site");
    assert_eq!(count_of(&a, "Event Sync Log", json!({})).await, 1);
    assert_eq!(count_of(&b, "Event Sync Log", json!({})).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_unsubscribe_reject_and_later_edits() {
    let (p, c) = start_pair().await;
    // Existing documents reach the consumer through the snapshot (sync_existing).
    for i in 0..3 {
        p.insert("ToDo", json!({"description": format!("existing {i}")}))
            .await;
    }
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 1}, {"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}])).await;
    eventually(10, "snapshot", || async {
        (count_of(&c, "ToDo", json!({})).await == 3).then_some(())
    })
    .await;
    // Unsubscribe Note on the consumer: it stops at once, and the producer hears of it.
    let (_, ep) = c
        .get(&format!("/api/resource/Event Producer/{}", p.url))
        .await;
    let mut rows = ep["data"]["producer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        if r["ref_doctype"] == "Note" {
            r["unsubscribe"] = json!(1);
        }
    }
    rows.push(json!({"ref_doctype": "Customer", "use_same_name": 0, "sync_existing": 0}));
    let (s, r) = c
        .put(
            &format!("/api/resource/Event Producer/{}", p.url),
            json!({"producer_doctypes": rows}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, ec) = p
        .get(&format!("/api/resource/Event Consumer/{}", c.url))
        .await;
    let erows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    let row = |t: &str| {
        erows
            .iter()
            .find(|r| r["ref_doctype"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("Note")["unsubscribed"], 1);
    assert_eq!(row("ToDo")["status"], "Approved", "status kept");
    assert_eq!(row("Customer")["status"], "Pending", "new rows Pending");
    // Without same name, the consumer got the remote-name fields.
    let (_, cf) = c
        .get("/api/resource/Custom Field?filters=[[\"dt\",\"=\",\"Customer\"]]")
        .await;
    assert_eq!(cf["data"].as_array().unwrap().len(), 2, "{cf}");
    let note = p.insert("Note", json!({"title": "not wanted"})).await;
    // Reject ToDo on the producer: nothing more flows.
    let mut rej = erows.clone();
    for r in rej.iter_mut() {
        if r["ref_doctype"] == "ToDo" {
            r["status"] = json!("Rejected");
        }
        if r["ref_doctype"] == "Customer" {
            r["status"] = json!("Approved");
        }
    }
    assert_eq!(
        p.put(
            &format!("/api/resource/Event Consumer/{}", c.url),
            json!({"consumer_doctypes": rej})
        )
        .await
        .0,
        200
    );
    eventually(10, "rejection mirrored", || async {
        let (_, ep) = c
            .get(&format!("/api/resource/Event Producer/{}", p.url))
            .await;
        ep["data"]["producer_doctypes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ref_doctype"] == "ToDo" && r["status"] == "Rejected")
            .then_some(())
    })
    .await;
    p.insert("ToDo", json!({"description": "after rejection"}))
        .await;
    let cust = p
        .insert("Customer", json!({"customer_name": "Remote Co"}))
        .await;
    // Customer (not same name) arrives named by local rules, carrying its remote name.
    let local = eventually(10, "customer", || async {
        let (_, l) = c
            .get("/api/resource/Customer?fields=[\"name\",\"remote_docname\",\"remote_site_name\"]")
            .await;
        l["data"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(local["remote_docname"], cust["name"]);
    assert_eq!(local["remote_site_name"], p.url);
    // An update finds it through remote_docname.
    p.put(
        "/api/resource/Customer/Remote Co",
        json!({"customer_type": "Individual"}),
    )
    .await;
    eventually(10, "customer update", || async {
        (count_of(&c, "Customer", json!({"customer_type": "Individual"})).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        count_of(&c, "ToDo", json!({})).await,
        3,
        "nothing after the rejection"
    );
    assert!(get_opt(
        &c,
        format!("/api/resource/Note/{}", note["name"].as_str().unwrap())
    )
    .await
    .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frappe_pull_form_v15_names_and_log_consumers() {
    let (p, c) = start_pair().await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let t = p.insert("ToDo", json!({"description": "seen"})).await;
    let name = t["name"].as_str().unwrap().to_string();
    eventually(10, "ToDo on the consumer", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    // The log shows the consumer that received it (computed from its acknowledged progress).
    let (_, logs) = p.get("/api/resource/Event Update Log?fields=[\"name\",\"seq\"]&order_by=seq%20desc&limit_page_length=1").await;
    let log_name = logs["data"][0]["name"].clone();
    let log = eventually(10, "acknowledged", || async {
        // The consumer acknowledges a log with its next pull; push one.
        c.request(&c.admin_auth, Method::POST, "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node", Some(json!({"event_producer": p.url}))).await;
        let (_, l) = p.get(&format!("/api/resource/Event Update Log/{log_name}")).await;
        (l["data"]["consumers"].as_array().map(|a| a.len()) == Some(1)).then_some(l)
    })
    .await;
    assert_eq!(log["data"]["consumers"][0]["consumer"], c.url);
    assert_eq!(log["data"]["update_type"], "Create");
    let data: Value = serde_json::from_str(log["data"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["description"], "seen");
    // Frappe's own consumers pull by timestamp through POST / with cmd, without paging headers.
    let (s, page) = p
        .post_form(&p.admin_auth, "/", &[("cmd", "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer"), ("event_consumer", &c.url), ("doctypes", "[\"ToDo\"]"), ("last_update", "2000-01-01 00:00:00.000000")])
        .await;
    assert_eq!(s, 200, "{page}");
    let msgs = page["message"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["docname"], name);
    assert!(msgs[0]["data"].is_string(), "data travels as a JSON string");
    // A pull from the middle of the log (found by bisecting seqs) returns only what came later.
    let later = p.insert("ToDo", json!({"description": "later"})).await;
    let (_, first) = p
        .get(&format!("/api/resource/Event Update Log/{log_name}"))
        .await;
    let since = first["data"]["creation"].as_str().unwrap().to_string();
    let (s, page) = p
        .post_form(&p.admin_auth, "/", &[("cmd", "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer"), ("event_consumer", &c.url), ("doctypes", "[\"ToDo\"]"), ("last_update", &since)])
        .await;
    assert_eq!(s, 200, "{page}");
    let docnames: Vec<&Value> = page["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["docname"])
        .collect();
    assert_eq!(
        docnames,
        vec![&later["name"]],
        "only the log created after last_update"
    );
    // Deleting the newest log does not free its seq: the next log takes the one after it.
    let (_, newest) = p.get("/api/resource/Event Update Log?fields=[\"name\"]&order_by=name%20desc&limit_page_length=1").await;
    let newest = newest["data"][0]["name"].as_i64().unwrap();
    let (s, body) = p
        .delete(&format!("/api/resource/Event Update Log/{newest}"))
        .await;
    assert_eq!(s, 202, "{body}");
    p.insert("ToDo", json!({"description": "after a deleted log"}))
        .await;
    let (_, next) = p.get("/api/resource/Event Update Log?fields=[\"name\",\"seq\"]&order_by=name%20desc&limit_page_length=1").await;
    assert_eq!(next["data"][0]["name"].as_i64(), Some(newest + 1));
    assert_eq!(next["data"][0]["seq"].as_i64(), Some(newest + 1));
    // Frappe v15's app prefix answers the same.
    let (s, page) = p
        .post_form(&p.admin_auth, "/api/method/event_streaming.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer", &[("event_consumer", &c.url), ("doctypes", "[\"ToDo\"]"), ("after_seq", "0")])
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        page["message"].as_array().unwrap().len(),
        2,
        "the first log and the one after the deleted one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_consumer_apply_once() {
    let Some((p, c)) = start_pair_on(Backend::Postgres).await else {
        return;
    };
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    // A second process serving the same PostgreSQL site: both workers pull the same producer.
    let port2 = free_port();
    let mut second = std::process::Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(c.dir.path())
        .args(["--bind", &format!("127.0.0.1:{port2}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let total = 150;
    for i in 0..total {
        p.insert("ToDo", json!({"description": format!("scale-out {i}")}))
            .await;
        if i % 50 == 0 {
            // Ask the second process to pull too, while the first is notified.
            let client = reqwest::Client::new();
            let _ = client
                .post(format!("http://127.0.0.1:{port2}/api/method/frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node"))
                .header("authorization", &c.admin_auth)
                .form(&[("event_producer", p.url.as_str())])
                .send()
                .await;
        }
    }
    eventually(60, "all documents", || async {
        (count_of(&c, "ToDo", json!({})).await == total).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"update_type": "Create"})).await,
        total,
        "each applied once"
    );
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_logs_are_pruned_only_once_received() {
    // Keep logs about one second.
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
        ("update_log_retention_days", json!(1.0 / 86_400.0)),
    ];
    let p = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    let mut c = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    // While the consumer is down, its logs are kept however old they get.
    c.kill();
    for i in 0..5 {
        p.insert("ToDo", json!({"description": format!("kept {i}")}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        count_of(&p, "Event Update Log", json!({})).await,
        5,
        "unreceived logs are never pruned"
    );
    c.serve().await;
    eventually(20, "delivered", || async {
        (count_of(&c, "ToDo", json!({})).await == 5).then_some(())
    })
    .await;
    // Once received (acknowledged by the next pull) and old enough, they go.
    eventually(20, "pruned", || async {
        (count_of(&p, "Event Update Log", json!({})).await == 0).then_some(())
    })
    .await;
    // Streaming goes on after pruning, with the seqs that follow the pruned ones.
    let t = p
        .insert("ToDo", json!({"description": "after pruning"}))
        .await;
    let (_, logs) = p
        .get("/api/resource/Event Update Log?fields=[\"name\",\"seq\"]")
        .await;
    assert_eq!(logs["data"][0]["seq"], 6, "{logs}");
    eventually(10, "new change", || {
        get_opt(
            &c,
            format!("/api/resource/ToDo/{}", t["name"].as_str().unwrap()),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_document_arrives_cancelled() {
    let (p, c) = start_pair().await;
    p.insert("Customer", json!({"customer_name": "Gone"})).await;
    p.insert("Item Group", json!({"item_group_name": "All"}))
        .await;
    p.insert("Item", json!({"item_code": "X", "item_group": "All"}))
        .await;
    let inv = p
        .insert(
            "Sales Invoice",
            json!({"customer": "Gone", "items": [{"item_code": "X", "qty": 1}]}),
        )
        .await;
    let name = inv["name"].as_str().unwrap().to_string();
    p.request(
        &p.admin_auth,
        Method::POST,
        "/api/method/frappe.client.submit",
        Some(json!({"doc": {"doctype": "Sales Invoice", "name": name}})),
    )
    .await;
    p.request(
        &p.admin_auth,
        Method::POST,
        "/api/method/frappe.client.cancel",
        Some(json!({"doctype": "Sales Invoice", "name": name})),
    )
    .await;
    // The snapshot carries it as a Create of a cancelled document, dependencies missing.
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 1}]),
    )
    .await;
    let got = eventually(15, "cancelled invoice", || {
        get_opt(&c, format!("/api/resource/Sales Invoice/{name}"))
    })
    .await;
    assert_eq!(got["docstatus"], 2);
    assert_eq!(
        got["items"][0]["docstatus"], 2,
        "rows carry the docstatus too"
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

/// A dependency inserted by an update whose save then fails is rolled back with it: its Synced
/// sync log goes too, and the next update of the page that needs it inserts it again instead
/// of taking it for present (it was, until the rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_rolled_back_with_its_update_is_not_counted() {
    let (p, c) = start_pair().await;
    seed_invoice_masters(&p).await;
    p.insert("Item", json!({"item_code": "I2", "item_group": "All"}))
        .await;
    // The consumer's Items need a shelf code the producer's lack: I1 cannot be saved here.
    let (s, b) = c
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "Item", "fieldname": "shelf_code", "fieldtype": "Data", "label": "Shelf Code", "reqd": 1}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    seed_invoice_masters_but_customer(&c).await;
    c.insert(
        "Item",
        json!({"item_code": "I2", "item_group": "All", "shelf_code": "A1"}),
    )
    .await;
    let line = |item: &str| json!({"customer": "Both", "items": [{"item_code": item, "qty": 1, "rate": 3}]});
    let first = p.insert("Sales Invoice", line("I1")).await;
    let second = p.insert("Sales Invoice", line("I2")).await;
    // Both existing invoices come in one page: the first fails after inserting Customer Both.
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 1}]),
    )
    .await;
    let second = second["name"].as_str().unwrap().to_string();
    eventually(15, "the second invoice", || {
        get_opt(&c, format!("/api/resource/Sales Invoice/{second}"))
    })
    .await;
    assert!(
        get_opt(&c, "/api/resource/Customer/Both").await.is_some(),
        "the customer the second invoice links to is here"
    );
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?fields=["status","ref_doctype","docname","producer_doc","error"]&limit_page_length=0"#)
        .await;
    let logs = logs["data"].as_array().unwrap();
    let customer_logs: Vec<&Value> = logs
        .iter()
        .filter(|l| l["ref_doctype"] == "Customer")
        .collect();
    assert_eq!(
        customer_logs.len(),
        1,
        "one Synced Create of the customer: {logs:?}"
    );
    assert_eq!(customer_logs[0]["status"], "Synced");
    let first = first["name"].as_str().unwrap();
    let failed = logs
        .iter()
        .find(|l| l["producer_doc"] == first)
        .expect("the first invoice's sync log");
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("I1"), "{failed}");
}

/// The invoice masters of [`seed_invoice_masters`] without its Customer.
async fn seed_invoice_masters_but_customer(site: &TestSite) {
    site.insert("UOM", json!({"uom_name": "Nos"})).await;
    site.insert("Item Group", json!({"item_group_name": "All"}))
        .await;
}
