//! Verification and repair: sites in step say so; a row deleted from the consumer's database
//! and one changed in the producer's database behind the servers' backs (`sqlite3`, `psql`),
//! a document deleted from the producer's database, and a received document edited on the
//! consumer are each found, listed with their fields, and repaired or left for a person as
//! the rules say; the dashboard never says "Up to date" meanwhile; the CLI's exit code says
//! which (0 in step, 1 differences, 2 could not compare).

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::Command;

/// Runs SQL on a site's database behind its server's back.
fn behind_the_back(site: &TestSite, sql: &str) {
    let out = match site.backend {
        Backend::Sqlite => Command::new("sqlite3")
            .arg(site.site_dir().join("site.sqlite3"))
            .arg(sql)
            .output(),
        Backend::Postgres => Command::new("psql")
            .arg(format!(
                "postgres://postgres@127.0.0.1:5432/{}",
                site.pg_db.as_deref().unwrap()
            ))
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output(),
    }
    .expect("sqlite3 or psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn rest_verify(c: &TestSite, p: &TestSite, repair: bool) -> Value {
    let (s, r) = c
        .post(
            "/api/method/docstream.streaming.verify",
            json!({"event_producer": p.public_url, "repair": if repair { 1 } else { 0 }}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    r["message"].clone()
}

fn kinds(report: &Value) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    k.sort();
    k
}

async fn verified_and_repaired(backend: Backend) {
    let Some((mut p, c)) = start_pair_on(backend).await else {
        return;
    };
    let mut names = vec![];
    for i in 0..12 {
        let t = p
            .insert(
                "ToDo",
                json!({"description": format!("Task {i}"), "priority": "Medium"}),
            )
            .await;
        names.push(t["name"].as_str().unwrap().to_string());
    }
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    let after = p
        .insert("ToDo", json!({"description": "After approval"}))
        .await;
    names.push(after["name"].as_str().unwrap().to_string());
    for n in &names {
        eventually(15, "the ToDo arrives", || {
            get_opt(&c, format!("/api/resource/ToDo/{n}"))
        })
        .await;
    }
    // In step: digests only, nothing to list.
    let report = rest_verify(&c, &p, false).await;
    assert_eq!(report["documents"], 13, "{report}");
    assert_eq!(kinds(&report), vec![], "{report}");
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("13 documents") && out.contains("0 differences"),
        "{out}"
    );

    // Behind the servers' backs, and one ordinary local edit.
    let (deleted, changed, gone, edited) = (&names[0], &names[1], &names[2], &names[3]);
    behind_the_back(
        &c,
        &format!(r#"DELETE FROM "tabToDo" WHERE name = '{deleted}'"#),
    );
    behind_the_back(
        &p,
        &format!(
            r#"UPDATE "tabToDo" SET description = 'Changed in the database' WHERE name = '{changed}'"#
        ),
    );
    behind_the_back(
        &p,
        &format!(r#"DELETE FROM "tabToDo" WHERE name = '{gone}'"#),
    );
    let (s, b) = c
        .put(
            &format!("/api/resource/ToDo/{edited}"),
            json!({"priority": "High"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let report = rest_verify(&c, &p, false).await;
    let mut want = vec![
        ("different".to_string(), changed.clone()),
        ("edited here".to_string(), edited.clone()),
        ("missing here".to_string(), deleted.clone()),
        ("only here".to_string(), gone.clone()),
    ];
    want.sort();
    assert_eq!(kinds(&report), want, "{report}");
    let different = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "different")
        .unwrap();
    assert_eq!(
        different["fields"],
        json!([{"field": "description", "here": "Task 1", "there": "Changed in the database"}])
    );
    // Never "Up to date" while differences are known.
    let dash = c
        .call_session("docstream.desk.streaming_dashboard", json!({}))
        .await;
    let card = &dash["message"]["producers"][0];
    assert_eq!(card["status"], "Differences found", "{dash}");
    assert_eq!(card["lag"], Value::Null, "{dash}");
    assert_eq!(card["verified"]["differences"], 4, "{dash}");
    // The same per peer in /metrics, for a System Manager's key only.
    let line = format!(
        "docstream_producer_verify_differences{{producer=\"{}\"}} 4",
        p.public_url
    );
    let (s, m) = c
        .request(&c.admin_auth, reqwest::Method::GET, "/metrics", None)
        .await;
    assert_eq!(s, 200);
    assert!(m.as_str().unwrap().contains(&line), "{m}");
    let (_, open) = c.request("", reqwest::Method::GET, "/metrics", None).await;
    let open = open.as_str().unwrap();
    assert!(
        open.contains("docstream_http_requests_total") && !open.contains("producer=\""),
        "{open}"
    );

    // The CLI repairs what it may: missing and different; the rest is left for a person.
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("2 differences left (2 repaired)"), "{out}");
    assert!(out.contains(&format!("only here ToDo {gone}")), "{out}");
    let restored = get_opt(&c, format!("/api/resource/ToDo/{deleted}"))
        .await
        .expect("the deleted row is back");
    assert_eq!(restored["description"], "Task 0");
    let fixed = get_opt(&c, format!("/api/resource/ToDo/{changed}"))
        .await
        .unwrap();
    assert_eq!(fixed["description"], "Changed in the database");
    assert!(
        get_opt(&c, format!("/api/resource/ToDo/{gone}"))
            .await
            .is_some(),
        "never deleted"
    );
    let kept = get_opt(&c, format!("/api/resource/ToDo/{edited}"))
        .await
        .unwrap();
    assert_eq!(kept["priority"], "High", "never overwritten");
    let (_, logs) = c
        .get(&format!(
            "/api/resource/Event Sync Log?fields=[\"note\",\"status\"]&filters={}",
            percent_encoding::utf8_percent_encode(
                &json!({"producer_doc": deleted, "update_type": "Create"}).to_string(),
                percent_encoding::NON_ALPHANUMERIC
            )
        ))
        .await;
    assert!(
        logs["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["status"] == "Synced"
                && l["note"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("repair: verification found it missing here")),
        "{logs}"
    );
    let report = rest_verify(&c, &p, false).await;
    let mut left = vec![
        ("edited here".to_string(), edited.clone()),
        ("only here".to_string(), gone.clone()),
    ];
    left.sort();
    assert_eq!(kinds(&report), left, "{report}");

    // A producer that does not answer: could not compare.
    p.kill();
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("could not compare"), "{err}");
}

/// On a schedule (`verify_interval_minutes`), a consumer verifies and repairs by itself.
async fn verified_on_a_schedule(backend: Backend) {
    let settings = [
        ("pull_interval", json!(0.5)),
        ("retry_base_seconds", json!(3600)),
        ("verify_interval_minutes", json!(0.02)),
        ("metrics_token", json!("scrape-me")),
    ];
    let Some(p) = TestSite::start_with(backend, &settings).await else {
        return;
    };
    let c = TestSite::start_with(backend, &settings).await.unwrap();
    let t = p.insert("ToDo", json!({"description": "Kept"})).await;
    let name = t["name"].as_str().unwrap().to_string();
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    eventually(15, "the ToDo arrives", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    behind_the_back(
        &c,
        &format!(r#"DELETE FROM "tabToDo" WHERE name = '{name}'"#),
    );
    let back = eventually(20, "repaired by the scheduled verification", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    assert_eq!(back["description"], "Kept");
    let card = eventually(20, "in step on the dashboard", || async {
        let dash = c
            .call_session("docstream.desk.streaming_dashboard", json!({}))
            .await;
        let card = dash["message"]["producers"][0].clone();
        (card["verified"]["differences"] == 0 && card["verified"]["documents"] == 1).then_some(card)
    })
    .await;
    assert_eq!(card["status"], "Active", "{card}");
    // A scraper with the site's metrics token sees the peers; a wrong token does not.
    let (_, m) = c
        .request("Bearer scrape-me", reqwest::Method::GET, "/metrics", None)
        .await;
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains(&format!(
            "docstream_producer_last_in_step_timestamp_seconds{{producer=\"{}\"}}",
            p.public_url
        )),
        "{m}"
    );
    let (_, wrong) = c
        .request("Bearer nope", reqwest::Method::GET, "/metrics", None)
        .await;
    assert!(!wrong.as_str().unwrap().contains("producer=\""));
    // The producer's side: its consumer's lag, and long polls kept out of the latency figures.
    p.insert("ToDo", json!({"description": "Wakes a long poll"}))
        .await;
    let pm = eventually(20, "a long poll that waited is counted", || async {
        let (_, m) = p
            .request("Bearer scrape-me", reqwest::Method::GET, "/metrics", None)
            .await;
        let m = m.as_str().unwrap().to_string();
        let n: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("docstream_long_poll_requests_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        (n >= 1.0).then_some(m)
    })
    .await;
    assert!(
        pm.contains(&format!(
            "docstream_consumer_lag_logs{{consumer=\"{}\"}}",
            c.public_url
        )),
        "{pm}"
    );
}

/// A producer unreachable for longer than `pull_interval`: once it answers again, the consumer
/// verifies (and repairs) at once, even with scheduled verification off.
async fn verified_after_an_outage(backend: Backend) {
    let settings = [
        ("pull_interval", json!(0.5)),
        ("retry_base_seconds", json!(3600)),
        ("verify_interval_minutes", json!(0)),
    ];
    let Some(mut p) = TestSite::start_with(backend, &settings).await else {
        return;
    };
    let c = TestSite::start_with(backend, &settings).await.unwrap();
    let t = p.insert("ToDo", json!({"description": "Kept"})).await;
    let name = t["name"].as_str().unwrap().to_string();
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    eventually(15, "the ToDo arrives", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    p.kill();
    behind_the_back(
        &c,
        &format!(r#"DELETE FROM "tabToDo" WHERE name = '{name}'"#),
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    p.serve().await;
    let back = eventually(20, "repaired by the verification after the outage", || {
        get_opt(&c, format!("/api/resource/ToDo/{name}"))
    })
    .await;
    assert_eq!(back["description"], "Kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_after_an_outage_sqlite() {
    verified_after_an_outage(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_after_an_outage_postgres() {
    verified_after_an_outage(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_on_a_schedule_sqlite() {
    verified_on_a_schedule(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_on_a_schedule_postgres() {
    verified_on_a_schedule(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_and_repaired_sqlite() {
    verified_and_repaired(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_and_repaired_postgres() {
    verified_and_repaired(Backend::Postgres).await;
}

/// A row without Use Same Name: the consumer keeps the producer's ToDos under names of its
/// own and rewrites links between them (a ToDo referring to another); verification compares
/// them under the producer's names (links turned back), so a consumer in step is in step, and
/// a change behind its back is found under the producer's name and repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_under_local_names_are_verified() {
    let (p, c) = start_pair().await;
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 0}])).await;
    let first = p.insert("ToDo", json!({"description": "first"})).await;
    let first = first["name"].as_str().unwrap().to_string();
    let second = p
        .insert(
            "ToDo",
            json!({"description": "second", "reference_type": "ToDo", "reference_name": first}),
        )
        .await;
    let second = second["name"].as_str().unwrap().to_string();
    let local_of = |remote: String| {
        let c = &c;
        async move {
            let (_, b) = c
                .get(&format!(
                    r#"/api/resource/ToDo?fields=["name","reference_name"]&filters=[["remote_docname","=","{remote}"]]"#
                ))
                .await;
            b["data"].as_array().and_then(|r| r.first()).cloned()
        }
    };
    let local_second = eventually(15, "the second ToDo", || local_of(second.clone())).await;
    let local_first = local_of(first.clone()).await.unwrap();
    let local_first = local_first["name"].as_str().unwrap().to_string();
    assert_ne!(local_first, first, "kept under a local name");
    assert_eq!(
        local_second["reference_name"],
        local_first.as_str(),
        "the link follows the local name"
    );

    let report = rest_verify(&c, &p, false).await;
    assert_eq!(kinds(&report), vec![], "{report}");
    assert_eq!(report["skipped"], json!([]), "{report}");
    assert_eq!(report["documents"], 2, "{report}");

    // Behind the consumer's back, its copy of the first ToDo changes: found under the
    // producer's name, with the field, and repaired in place.
    behind_the_back(
        &c,
        &format!(r#"UPDATE "tabToDo" SET description = 'changed' WHERE name = '{local_first}'"#),
    );
    let report = rest_verify(&c, &p, true).await;
    assert_eq!(
        kinds(&report),
        vec![("different".to_string(), first.clone())],
        "{report}"
    );
    assert_eq!(
        report["differences"][0]["fields"][0]["field"],
        "description"
    );
    assert_eq!(report["repaired"], 1, "{report}");
    let (_, fixed) = c.get(&format!("/api/resource/ToDo/{local_first}")).await;
    assert_eq!(fixed["data"]["description"], "first", "{fixed}");
    assert_eq!(kinds(&rest_verify(&c, &p, false).await), vec![]);
}

/// A row with a mapping (ToDos of the producer made Notes here) is verified by which
/// documents are held: a Note deleted behind the consumer's back is missing here and
/// repaired through the mapping, a ToDo deleted from the producer's database is only here
/// (listed, never deleted); what the mapping made is not compared with the producer's
/// content, and the report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_row_is_verified_by_what_it_holds() {
    let (p, c) = start_pair().await;
    let mut names = vec![];
    for i in 0..3 {
        let t = p
            .insert("ToDo", json!({"description": format!("Task {i}")}))
            .await;
        names.push(t["name"].as_str().unwrap().to_string());
    }
    let (s, b) = c
        .post(
            "/api/resource/Document Type Mapping",
            json!({"mapping_name": "Note from ToDo", "local_doctype": "Note", "remote_doctype": "ToDo",
                   "field_mapping": [{"local_fieldname": "title", "remote_fieldname": "description"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Note", "has_mapping": 1, "mapping": "Note from ToDo",
                "use_same_name": 1, "sync_existing": 1}]),
    )
    .await;
    for n in &names {
        eventually(15, "the mapped Note", || {
            get_opt(&c, format!("/api/resource/Note/{n}"))
        })
        .await;
    }
    let report = rest_verify(&c, &p, false).await;
    assert_eq!(report["documents"], 3, "{report}");
    assert_eq!(kinds(&report), vec![], "{report}");
    assert!(
        report["skipped"]
            .to_string()
            .contains("the content of Note (its row has a mapping"),
        "{report}"
    );
    let (missing, gone) = (&names[0], &names[1]);
    behind_the_back(
        &c,
        &format!(r#"DELETE FROM "tabNote" WHERE name = '{missing}'"#),
    );
    behind_the_back(
        &p,
        &format!(r#"DELETE FROM "tabToDo" WHERE name = '{gone}'"#),
    );
    let report = rest_verify(&c, &p, true).await;
    let mut want = vec![
        ("missing here".to_string(), missing.clone()),
        ("only here".to_string(), gone.clone()),
    ];
    want.sort();
    assert_eq!(kinds(&report), want, "{report}");
    let back = get_opt(&c, format!("/api/resource/Note/{missing}"))
        .await
        .expect("repaired through the mapping");
    assert_eq!(back["title"], "Task 0");
    assert!(
        get_opt(&c, format!("/api/resource/Note/{gone}"))
            .await
            .is_some(),
        "only here: never deleted"
    );
    let report = rest_verify(&c, &p, false).await;
    assert_eq!(
        kinds(&report),
        vec![("only here".to_string(), gone.clone())],
        "{report}"
    );
}
