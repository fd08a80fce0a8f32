//! A shop behind NAT as the producer of a hosted consumer: only the shop opens connections.
//! The shop's own URL leads nowhere (nothing listens there), so everything the hosted site
//! asks of it must travel over the connection the shop keeps to the hosted site.

mod common;
use common::fault_proxy::{FaultProxy, Faults};
use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_behind_nat_streams_to_the_hosted_site_sqlite() {
    shop_behind_nat(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_behind_nat_streams_to_the_hosted_site_postgres() {
    shop_behind_nat(Backend::Postgres).await;
}

/// A hosted consumer and a shop behind NAT producing ToDos for it, connected through a line
/// the test controls, approved; with the Event Producer's path on the hosted site.
async fn connected_shop(backend: Backend) -> Option<Setup> {
    let settings = [
        ("pull_interval", json!(3600)),
        ("retry_base_seconds", json!(3600)),
    ];
    // Everything the shop sends the hosted site goes through a line the test can cut (the
    // hosted site calls itself by the line's address).
    let line_port = free_port();
    let hosted = TestSite::start_behind(backend, &settings, Some(line_port)).await?;
    let line = FaultProxy::start(line_port, hosted.port).await;
    // The shop calls itself by a URL where nothing listens: the hosted site cannot reach it.
    let nowhere = free_port();
    let shop = TestSite::start_behind(backend, &settings, Some(nowhere))
        .await
        .unwrap();

    let (hkey, hsecret) = subscriber(&hosted).await;
    let (skey, ssecret) = subscriber(&shop).await;

    // Saving does not call the shop: the handshake waits for its first connection.
    let (s, ep) = hosted
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": shop.public_url, "connection": "Producer connects",
                   "producer_doctypes": [{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}],
                   "user": "sync@example.com", "api_key": skey, "api_secret": ssecret}),
        )
        .await;
    assert_eq!(s, 200, "{ep}\n{}", hosted.log());
    assert_eq!(
        ep["data"]["connection_status"],
        "Waiting for the producer to connect"
    );
    assert_eq!(ep["data"]["producer_doctypes"][0]["status"], "Pending");
    let ep_path = format!("/api/resource/Event Producer/{}", shop.public_url);

    // Someone else's keys, or a producer that is not marked as connecting, are refused.
    let poll = "/api/method/docstream.tunnel.poll";
    let (s, b) = hosted
        .post_form(
            &hosted.admin_auth,
            poll,
            &[("producer_url", shop.public_url.as_str()), ("wait", "0")],
        )
        .await;
    assert_error(&(s, b), 403, "PermissionError");
    let (s, _) = hosted
        .post_form(
            "token nobody:wrong",
            poll,
            &[("producer_url", shop.public_url.as_str()), ("wait", "0")],
        )
        .await;
    assert_eq!(s, 401);
    let (s, b) = hosted
        .post_form(
            &format!("token {hkey}:{hsecret}"),
            poll,
            &[("producer_url", "http://127.0.0.1:1"), ("wait", "0")],
        )
        .await;
    assert_error(&(s, b), 403, "PermissionError");
    assert!(
        hosted.log().contains("producer connection refused"),
        "refusals are logged: {}",
        hosted.log()
    );

    // The shop's Event Subscriber: the hosted site's URL (here through the line) and keys.
    let (s, b) = shop
        .post(
            "/api/resource/Event Subscriber",
            json!({"subscriber_url": format!("{}/", hosted.public_url), "api_key": hkey, "api_secret": hsecret}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let hosted_url = hosted.public_url.clone();
    eventually(20, "the handshake over the shop's connection", || async {
        get_opt(&shop, format!("/api/resource/Event Consumer/{hosted_url}")).await
    })
    .await;
    let ep = eventually(10, "the hosted site shows the shop connected", || async {
        let ep = get_opt(&hosted, ep_path.clone()).await?;
        (ep["connection_status"] == "Connected").then_some(ep)
    })
    .await;
    assert!(
        ep["connected_since"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{ep}"
    );
    // The streaming dashboard says it is connected now, and since when.
    let (_, dash) = hosted
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    let card = dash["message"]["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == shop.public_url.as_str())
        .cloned()
        .unwrap();
    assert_eq!(card["connection"]["connected"], true, "{card}");
    assert_eq!(card["connection"]["since"], ep["connected_since"], "{card}");
    let (_, sub) = shop
        .get(&format!("/api/resource/Event Subscriber/{hosted_url}"))
        .await;
    assert_eq!(sub["data"]["status"], "Connected", "{sub}");

    // Approval on the shop reaches the hosted site (the shop opens that connection).
    let (_, ec) = shop
        .get(&format!("/api/resource/Event Consumer/{hosted_url}"))
        .await;
    let mut rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        r["status"] = json!("Approved");
    }
    let (s, b) = shop
        .put(
            &format!("/api/resource/Event Consumer/{hosted_url}"),
            json!({"consumer_doctypes": rows}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(10, "approval mirrored on the hosted site", || async {
        let ep = get_opt(&hosted, ep_path.clone()).await?;
        (ep["producer_doctypes"][0]["status"] == "Approved").then_some(())
    })
    .await;
    Some(Setup {
        hosted,
        shop,
        line,
        hkey,
        hsecret,
    })
}

/// What `connected_shop` sets up.
struct Setup {
    hosted: TestSite,
    shop: TestSite,
    line: FaultProxy,
    /// The hosted-site keys of the Event Subscriber user.
    hkey: String,
    hsecret: String,
}

async fn shop_behind_nat(backend: Backend) {
    let Some(Setup {
        hosted,
        shop,
        line,
        hkey,
        hsecret,
    }) = connected_shop(backend).await
    else {
        return;
    };
    // Live: each change reaches the hosted site within seconds (its interval is an hour).
    let first = shop.insert("ToDo", json!({"description": "sold 1"})).await;
    let name = first["name"].as_str().unwrap().to_string();
    eventually(5, "a live change through the shop's connection", || async {
        get_opt(&hosted, format!("/api/resource/ToDo/{name}")).await
    })
    .await;

    // The shop also consumes the hosted site's Notes (it opens that connection itself; the
    // hosted site's approval reaches it over the shop's connection).
    subscribe_with_keys(
        &hosted,
        &shop,
        json!([{"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}]),
        &hkey,
        &hsecret,
    )
    .await;

    // The line is cut while both keep writing, then flaps; nothing is lost or doubled.
    line.cut();
    for i in 0..20 {
        shop.insert("ToDo", json!({"description": format!("offline sale {i}")}))
            .await;
        if i % 2 == 0 {
            hosted
                .insert("Note", json!({"title": format!("price list {i}")}))
                .await;
        }
    }
    // A backlog of several pages, which goes up in the shop's tunnel replies.
    let up_before = line.injected.bytes_up.load(Ordering::SeqCst);
    let many: Vec<_> = (0..1200)
        .map(|i| json!({"doctype": "ToDo", "description": format!("backlog {i}")}))
        .collect();
    shop.insert_many(many).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    line.restore();
    for i in 0..6 {
        shop.insert("ToDo", json!({"description": format!("flapping sale {i}")}))
            .await;
        hosted
            .insert("Note", json!({"title": format!("flapping note {i}")}))
            .await;
        if i % 2 == 0 {
            line.cut();
        } else {
            line.restore();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    line.restore();
    let want = field_by_name(&shop, "ToDo", "description").await;
    assert_eq!(want.len(), 1227);
    eventually(60, "the hosted site holds the shop's documents", || async {
        (field_by_name(&hosted, "ToDo", "description").await == want).then_some(())
    })
    .await;
    let synced = count_of(&hosted, "Event Sync Log", json!({"status": "Synced"})).await;
    assert_eq!(synced, 1227, "each document applied exactly once");
    // Compressed on the way up: the hosted site said it takes zstd, so the replies carrying
    // those pages are far smaller than the logs' data alone.
    let up = line.injected.bytes_up.load(Ordering::SeqCst) - up_before;
    let (_, logs) = shop
        .get(r#"/api/resource/Event Update Log?fields=["data"]&limit_page_length=0"#)
        .await;
    let plain = logs.to_string().len() as u64;
    assert!(
        up * 3 < plain,
        "{up} bytes went up for logs whose data alone is {plain} bytes"
    );
    let want = field_by_name(&hosted, "Note", "title").await;
    assert_eq!(want.len(), 16);
    eventually(60, "the shop holds the hosted site's Notes", || async {
        (field_by_name(&shop, "Note", "title").await == want).then_some(())
    })
    .await;
    let synced = count_of(&shop, "Event Sync Log", json!({"status": "Synced"})).await;
    assert_eq!(synced, 16, "each Note applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_link_survives_a_damaged_line_and_kills_sqlite() {
    damaged_line_and_kills(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_link_survives_a_damaged_line_and_kills_postgres() {
    damaged_line_and_kills(Backend::Postgres).await;
}

/// Answers cut in the middle on the shop's line (polls lose the requests they carry, which
/// are handed again), then the hosted site and the shop each SIGKILLed while the shop writes.
async fn damaged_line_and_kills(backend: Backend) {
    let Some(Setup {
        mut hosted,
        mut shop,
        line,
        ..
    }) = connected_shop(backend).await
    else {
        return;
    };
    line.set(Faults {
        cut: 0.3,
        drop: 0.1,
        min_chunk: 100,
        ..Default::default()
    });
    let long = "x".repeat(300);
    for i in 0..15 {
        shop.insert(
            "ToDo",
            json!({"description": format!("damaged {i} {long}")}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(line.total() > 0, "the line damaged some answers");
    line.heal();
    for i in 0..10 {
        shop.insert(
            "ToDo",
            json!({"description": format!("before the kill {i}")}),
        )
        .await;
    }
    hosted.kill();
    for i in 0..10 {
        shop.insert(
            "ToDo",
            json!({"description": format!("hosted site down {i}")}),
        )
        .await;
    }
    hosted.serve().await;
    for i in 0..5 {
        shop.insert("ToDo", json!({"description": format!("after {i}")}))
            .await;
    }
    // A cut longer than the hosted site waits before it counts the shop as away (40 s).
    let ep_path = format!("/api/resource/Event Producer/{}", shop.public_url);
    eventually(
        30,
        "the shop connected to the restarted hosted site",
        || async {
            let ep = get_opt(&hosted, ep_path.clone()).await?;
            (ep["connection_status"] == "Connected").then_some(())
        },
    )
    .await;
    let cut_at = std::time::Instant::now();
    line.cut();
    for i in 0..5 {
        shop.insert("ToDo", json!({"description": format!("long cut {i}")}))
            .await;
    }
    eventually(90, "the hosted site shows the shop away", || async {
        let ep = get_opt(&hosted, ep_path.clone()).await?;
        ep["connection_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Away"))
            .then_some(())
    })
    .await;
    assert!(
        cut_at.elapsed() > Duration::from_secs(15),
        "away only after a while without polls ({:?})",
        cut_at.elapsed()
    );
    line.restore();
    eventually(30, "the shop connected again", || async {
        let ep = get_opt(&hosted, ep_path.clone()).await?;
        (ep["connection_status"] == "Connected").then_some(())
    })
    .await;
    shop.kill();
    shop.serve().await;
    for i in 0..5 {
        shop.insert("ToDo", json!({"description": format!("shop back {i}")}))
            .await;
    }
    let want = field_by_name(&shop, "ToDo", "description").await;
    assert_eq!(want.len(), 50);
    eventually(60, "the hosted site holds the shop's documents", || async {
        (field_by_name(&hosted, "ToDo", "description").await == want).then_some(())
    })
    .await;
    let synced = count_of(&hosted, "Event Sync Log", json!({"status": "Synced"})).await;
    assert_eq!(synced, 50, "each document applied exactly once");
    assert_eq!(
        count_of(&hosted, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}
