//! What an attacker or a hostile page tries: state changes through GET with a session cookie,
//! `cmd` on `/`, logouts, password changes, parallel logins, racing writes, NUL bytes, half-done
//! batches. Each case asserts that nothing was written that should not have been.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn with_cookie(
    site: &TestSite,
    method: Method,
    path: &str,
    sid: &str,
) -> (StatusCode, Value) {
    let r = site
        .client
        .request(method, format!("{}{path}", site.url))
        .header("cookie", sid)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Who the session `sid` is, as `frappe.auth.get_logged_user` answers.
async fn logged_user(site: &TestSite, sid: &str) -> (StatusCode, Value) {
    with_cookie(
        site,
        Method::GET,
        "/api/method/frappe.auth.get_logged_user",
        sid,
    )
    .await
}

async fn todo_count(site: &TestSite) -> i64 {
    count_of(site, "ToDo", json!({})).await
}

both_backends!(
    get_never_changes_state_for_a_cookie_session,
    |site: TestSite| async move {
        let todo = site.insert("ToDo", json!({"description": "keep me"})).await;
        let name = todo["name"].as_str().unwrap().to_string();
        let (_, before) = site.get("/api/resource/User/Administrator").await;
        for desk in [true, false] {
            let (sid, _) = site.login_session(desk).await;
            for path in [
            format!("/api/method/frappe.client.delete?doctype=ToDo&name={name}"),
            r#"/api/method/frappe.client.insert?doc={"doctype":"ToDo","description":"by GET"}"#.to_string(),
            "/api/method/frappe.core.doctype.user.user.generate_keys?user=Administrator".to_string(),
            format!("/api/method/frappe.client.set_value?doctype=ToDo&name={name}&fieldname=description&value=x"),
            format!("/?cmd=frappe.client.delete&doctype=ToDo&name={name}"),
        ] {
            let r = with_cookie(&site, Method::GET, &path, &sid).await;
            assert_error(&r, 403, "PermissionError");
        }
            // Reading by GET stays allowed.
            let (s, b) = with_cookie(&site, Method::GET, &format!("/api/method/frappe.client.get_value?doctype=ToDo&fieldname=description&filters={name}"), &sid).await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["message"]["description"], "keep me");
        }
        assert_eq!(todo_count(&site).await, 1);
        let (_, t) = site.get(&format!("/api/resource/ToDo/{name}")).await;
        assert_eq!(t["data"]["description"], "keep me");
        let (_, after) = site.get("/api/resource/User/Administrator").await;
        assert_eq!(before["data"]["api_key"], after["data"]["api_key"]);
        assert_eq!(
            before["data"]["modified"], after["data"]["modified"],
            "keys were not regenerated"
        );
        // Token clients keep Frappe's verbs: a GET delete with a token still works.
        let (s, b) = site
            .request(
                &site.admin_auth,
                Method::GET,
                &format!("/api/method/frappe.client.delete?doctype=ToDo&name={name}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(todo_count(&site).await, 0);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmd_on_root_and_logout_by_get_end_the_session() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let (sid, _) = site.login_session(false).await;
    // FrappeClient's get_value: GET /?cmd=...
    let (s, b) = with_cookie(
        &site,
        Method::GET,
        "/?cmd=frappe.client.get_value&doctype=User&fieldname=name&filters=Administrator",
        &sid,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["message"]["name"], "Administrator");
    let (_, who) = with_cookie(
        &site,
        Method::GET,
        "/?cmd=frappe.auth.get_logged_user",
        &sid,
    )
    .await;
    assert_eq!(who["message"], "Administrator");
    // FrappeClient's logout: GET /?cmd=logout. The session is gone at once.
    let (s, b) = with_cookie(&site, Method::GET, "/?cmd=logout", &sid).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = with_cookie(
        &site,
        Method::GET,
        "/api/method/frappe.auth.get_logged_user",
        &sid,
    )
    .await;
    assert_eq!(s, 403, "the session must not survive logout");
    // The OpenAPI document offers GET only for methods that read.
    let (_, api) = site
        .request("", Method::GET, "/api/openapi.json", None)
        .await;
    let paths = &api["paths"];
    assert!(paths["/api/method/frappe.client.delete"]["get"].is_null());
    assert!(paths["/api/method/frappe.client.delete"]["post"].is_object());
    assert!(paths["/api/method/frappe.client.get_list"]["get"].is_object());
    assert!(paths["/api/method/upload_file"]["post"].is_object());
    // POST / with cmd in the query, and an unknown cmd is 404.
    let (sid, _) = site.login_session(false).await;
    let (s, b) = with_cookie(
        &site,
        Method::POST,
        "/?cmd=frappe.auth.get_logged_user",
        &sid,
    )
    .await;
    assert_eq!(
        (s.as_u16(), b["message"].clone()),
        (200, json!("Administrator"))
    );
    let r = with_cookie(&site, Method::POST, "/?cmd=frappe.no.such.method", &sid).await;
    assert_no_method(&r);
    // A browser at / goes to the desk or its login page; API clients get JSON.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for (cookie, to) in [("", "/login"), (sid.as_str(), "/app")] {
        let r = no_redirect
            .get(format!("{}/", site.url))
            .header("accept", html)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], to);
    }
    let r = no_redirect
        .get(format!("{}/", site.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "docstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_other_sessions() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    site.insert("User", json!({"email": "u@example.com", "first_name": "U", "new_password": "first-Pass-1", "roles": [{"role": "System Manager"}]})).await;
    let login = |pwd| site.login_as("u@example.com", pwd);
    let (a, b) = (login("first-Pass-1").await, login("first-Pass-1").await);
    // The user changes its own password in session a: b ends, a stays.
    let r = site
        .client
        .put(format!("{}/api/resource/User/u@example.com", site.url))
        .header("cookie", &a)
        .json(&json!({"new_password": "second-Pass-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let site = &site;
    let who = |sid: String| async move { logged_user(site, &sid).await.0 };
    assert_eq!(who(a.clone()).await, 200);
    assert_eq!(who(b).await, 403);
    // An administrator's change ends them all.
    let (s, _) = site
        .put(
            "/api/resource/User/u@example.com",
            json!({"new_password": "third-Pass-3"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(who(a).await, 403);
    // The failed-login answer carries Frappe's message.
    let (s, b) = site
        .post_form(
            "",
            "/api/method/login",
            &[("usr", "u@example.com"), ("pwd", "wrong")],
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(b["message"], "Invalid login credentials");
    let (s, b) = site
        .post_form(
            "",
            "/api/method/login",
            &[("usr", "nobody@example.com"), ("pwd", "wrong")],
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        b["message"], "Invalid login credentials",
        "an unknown user gets the same answer"
    );
}

both_backends!(
    parallel_logins_cannot_pass_the_limit,
    |site: TestSite| async move {
        // The default limit is 10 failures per user and address.
        let tries = (0..16).map(|_| {
            let (client, url) = (site.client.clone(), site.url.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{url}/api/method/login"))
                    .form(&[("usr", "Administrator"), ("pwd", "wrong")])
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        });
        let mut statuses = Vec::new();
        for t in tries {
            statuses.push(t.await.unwrap());
        }
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((checked, limited), (10, 6), "{statuses:?}");
    }
);

both_backends!(racing_writes_to_one_document, |site: TestSite| async move {
    // 16 PUTs carrying the same `modified`: one wins, 15 are refused.
    let todo = site.insert("ToDo", json!({"description": "race"})).await;
    let name = todo["name"].as_str().unwrap().to_string();
    let modified = todo["modified"].as_str().unwrap().to_string();
    let puts = (0..16).map(|i| {
        let (client, url, auth, name, modified) = (
            site.client.clone(),
            site.url.clone(),
            site.admin_auth.clone(),
            name.clone(),
            modified.clone(),
        );
        tokio::spawn(async move {
            let r = client
                .put(format!("{url}/api/resource/ToDo/{name}"))
                .header("authorization", auth)
                .json(&json!({"description": format!("writer {i}"), "modified": modified}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        })
    });
    let mut wins = 0;
    for p in puts {
        let (s, b) = p.await.unwrap();
        match s {
            200 => wins += 1,
            417 => assert_eq!(b["exc_type"], "TimestampMismatchError", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(wins, 1);
    // Two writers of different fields of one document, without `modified`: both changes stay.
    for round in 0..10 {
        let t = site
            .insert("ToDo", json!({"description": format!("round {round}")}))
            .await;
        let name = t["name"].as_str().unwrap().to_string();
        let path = format!("/api/resource/ToDo/{name}");
        let a = site.put(&path, json!({"status": "Closed"}));
        let b = site.put(&path, json!({"priority": "High"}));
        let (ra, rb) = tokio::join!(a, b);
        assert_eq!((ra.0.as_u16(), rb.0.as_u16()), (200, 200));
        let (_, d) = site.get(&format!("/api/resource/ToDo/{name}")).await;
        assert_eq!(
            (d["data"]["status"].clone(), d["data"]["priority"].clone()),
            (json!("Closed"), json!("High")),
            "round {round}"
        );
    }
});

both_backends!(insert_many_is_all_or_nothing, |site: TestSite| async move {
    let before = todo_count(&site).await;
    let docs = json!([
        {"doctype": "ToDo", "description": "one"},
        {"doctype": "ToDo", "description": "two"},
        {"doctype": "ToDo", "description": "three", "allocated_to": "nobody@example.com"},
    ]);
    let r = site
        .post(
            "/api/method/frappe.client.insert_many",
            json!({"docs": docs}),
        )
        .await;
    assert_error(&r, 417, "LinkValidationError");
    assert_eq!(
        todo_count(&site).await,
        before,
        "no document of a failed batch stays"
    );
    let (s, b) = site
        .post("/api/method/frappe.client.insert_many", json!({"docs": [{"doctype": "ToDo", "description": "a"}, {"doctype": "ToDo", "description": "b"}]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["message"].as_array().unwrap().len(), 2);
    assert_eq!(todo_count(&site).await, before + 2);
});

both_backends!(
    bad_values_are_refused_and_nothing_written,
    |site: TestSite| async move {
        let before = todo_count(&site).await;
        for body in [
            json!({"description": "nul \u{0} inside"}),
            json!({"description": "ok", "docstatus": "x"}),
            json!({"description": true}),
        ] {
            let r = site.post("/api/resource/ToDo", body.clone()).await;
            assert_error(&r, 417, "ValidationError");
        }
        let r = site
            .post(
                "/api/resource/Item",
                json!({"item_code": true, "item_group": "x"}),
            )
            .await;
        assert_eq!(r.0.as_u16(), 417, "{}", r.1);
        let r = site.get("/api/resource/ToDo/a%00b").await;
        assert_error(&r, 417, "ValidationError");
        let r = site
            .get(r#"/api/resource/ToDo?filters=[["description","=","a\u0000b"]]"#)
            .await;
        assert_error(&r, 417, "ValidationError");
        let r = site
            .post_form(
                &site.admin_auth,
                "/api/method/frappe.client.insert",
                &[("doc", r#"{"doctype":"ToDo","description":"x\u0000"}"#)],
            )
            .await;
        assert_error(&r, 417, "ValidationError");
        assert_eq!(todo_count(&site).await, before);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_costs_a_login_as_much_as_a_wrong_password() {
    // A security property, not a speed goal: the answer must not tell which users exist.
    let site = TestSite::start_with(Backend::Sqlite, &[("login_max_failures", json!(100))])
        .await
        .unwrap();
    let time = |usr: &'static str| {
        let site = &site;
        async move {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..6 {
                let started = std::time::Instant::now();
                let (s, _) = site
                    .post_form("", "/api/method/login", &[("usr", usr), ("pwd", "wrong")])
                    .await;
                total += started.elapsed();
                assert_eq!(s, 401);
            }
            total
        }
    };
    let (known, unknown) = (
        time("Administrator").await,
        time("nobody@example.com").await,
    );
    assert!(
        unknown * 2 > known && known * 2 > unknown,
        "wrong password {known:?} against unknown user {unknown:?} (6 tries each)"
    );
}

both_backends!(
    a_session_sees_roles_and_disabling_at_its_next_request,
    |site: TestSite| async move {
        site.insert("User", json!({"email": "r@example.com", "first_name": "R", "new_password": "first-Pass-1", "roles": [{"role": "System Manager"}]})).await;
        let sid = site.login_as("r@example.com", "first-Pass-1").await;
        let users = "/api/resource/User?fields=[\"name\"]&limit_page_length=0";
        let (s, b) = with_cookie(&site, Method::GET, users, &sid).await;
        assert_eq!(s, 200, "a System Manager lists users: {b}");
        assert!(b["data"].as_array().unwrap().len() >= 2, "{b}");
        // The role goes: the same session is refused at once.
        let (s, b) = site
            .put("/api/resource/User/r@example.com", json!({"roles": []}))
            .await;
        assert_eq!(s, 200, "{b}");
        let r = with_cookie(&site, Method::GET, users, &sid).await;
        assert_error(&r, 403, "PermissionError");
        let (s, b) = logged_user(&site, &sid).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["message"], "r@example.com",
            "the session stays, with fewer roles"
        );
        // Disabled: the session no longer acts as the user.
        let (s, b) = site
            .put("/api/resource/User/r@example.com", json!({"enabled": 0}))
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = logged_user(&site, &sid).await;
        assert!(s == 401 || s == 403, "{s} {b}");
        assert_ne!(b["message"], "r@example.com", "{b}");
    }
);
