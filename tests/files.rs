//! Files: multipart uploads, public and private URLs, limits, names, deletion, and a second
//! process serving what the first stored.

mod common;
use common::*;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

async fn upload(
    site: &TestSite,
    auth: &str,
    name: &str,
    bytes: Vec<u8>,
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()));
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = site
        .client
        .post(format!("{}/api/method/upload_file", site.url))
        .header("authorization", auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

async fn fetch(site: &TestSite, auth: &str, url: &str) -> (u16, Vec<u8>, String) {
    let mut rb = site.client.get(format!("{}{url}", site.url));
    if !auth.is_empty() {
        rb = rb.header("authorization", auth);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let disposition = r
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (s, r.bytes().await.unwrap().to_vec(), disposition)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

both_backends!(
    upload_serve_protect_and_delete,
    |site: TestSite| async move {
        let auth = site.admin_auth.clone();
        seed_invoice_masters(&site).await;
        // A public image attached to an Item's Attach field, larger than one stored chunk.
        let image = payload(500_000);
        let (s, b) = upload(
            &site,
            &auth,
            "../../etc/photo.png",
            image.clone(),
            &[
                ("doctype", "Item"),
                ("docname", "I1"),
                ("fieldname", "image"),
                ("is_private", "0"),
            ],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let f = &b["message"];
        assert_eq!(
            f["file_name"], "photo.png",
            "folders are dropped from names"
        );
        assert_eq!(f["file_url"], "/files/photo.png");
        assert_eq!(f["file_size"], 500_000);
        assert_eq!(
            (
                f["attached_to_doctype"].clone(),
                f["attached_to_name"].clone()
            ),
            (json!("Item"), json!("I1"))
        );
        assert_eq!(f["content_hash"].as_str().unwrap().len(), 64);
        let item = get_opt(&site, "/api/resource/Item/I1").await.unwrap();
        assert_eq!(item["image"], "/files/photo.png");
        let (s, got, disp) = fetch(&site, "", "/files/photo.png").await;
        assert_eq!((s, got == image), (200, true));
        assert!(disp.starts_with("inline"));
        // Same name, other bytes: a URL of its own.
        let (s, b) = upload(&site, &auth, "photo.png", payload(10), &[]).await;
        assert_eq!(s, 200, "{b}");
        let other = b["message"]["file_url"].as_str().unwrap().to_string();
        assert_ne!(other, "/files/photo.png");
        assert_eq!(fetch(&site, "", &other).await.1, payload(10));
        // HTML is downloaded, never shown in the site's origin.
        let (_, b) = upload(
            &site,
            &auth,
            "page.html",
            b"<script>alert(1)</script>".to_vec(),
            &[],
        )
        .await;
        let (_, _, disp) = fetch(&site, "", b["message"]["file_url"].as_str().unwrap()).await;
        assert!(disp.starts_with("attachment"), "{disp}");
        // A private file on an Item: not for visitors, nor for a user who may not read Items.
        let (s, b) = upload(
            &site,
            &auth,
            "secret.txt",
            b"top secret".to_vec(),
            &[("doctype", "Item"), ("docname", "I1"), ("is_private", "1")],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let private = b["message"]["file_url"].as_str().unwrap().to_string();
        assert_eq!(private, "/private/files/secret.txt");
        assert_eq!(fetch(&site, "", &private).await.0, 404);
        assert_eq!(fetch(&site, "", "/files/secret.txt").await.0, 404);
        let (s, got, _) = fetch(&site, &auth, &private).await;
        assert_eq!((s, got), (200, b"top secret".to_vec()));
        site.insert(
            "User",
            json!({"email": "plain@example.com", "first_name": "Plain"}),
        )
        .await;
        let (_, k) = site
            .post(
                "/api/method/frappe.core.doctype.user.user.generate_keys",
                json!({"user": "plain@example.com"}),
            )
            .await;
        let (_, u) = site.get("/api/resource/User/plain@example.com").await;
        let plain = format!(
            "token {}:{}",
            u["data"]["api_key"].as_str().unwrap(),
            k["message"]["api_secret"].as_str().unwrap()
        );
        assert_eq!(fetch(&site, &plain, &private).await.0, 403);
        // Uploading onto a document one may not write is refused, and writes nothing.
        let before = count_of(&site, "File", json!({})).await;
        let (s, b) = upload(
            &site,
            &plain,
            "x.txt",
            b"x".to_vec(),
            &[("doctype", "Item"), ("docname", "I1")],
        )
        .await;
        assert_eq!(s, 403, "{b}");
        let (s, b) = upload(
            &site,
            &auth,
            "x.txt",
            b"x".to_vec(),
            &[("doctype", "ToDo"), ("docname", "no-such-todo")],
        )
        .await;
        assert_eq!(s, 404, "{b}");
        let (s, b) = upload(&site, &auth, "..", b"x".to_vec(), &[]).await;
        assert_eq!(s, 417, "{b}");
        assert_eq!(count_of(&site, "File", json!({})).await, before);
        // Deleting a File removes its content; deleting the document deletes its files.
        let (_, l) = site
            .get(r#"/api/resource/File?filters=[["file_url","=","/files/photo.png"]]"#)
            .await;
        let fname = l["data"][0]["name"].as_str().unwrap().to_string();
        assert_eq!(
            site.delete(&format!("/api/resource/File/{fname}")).await.0,
            202
        );
        assert_eq!(fetch(&site, "", "/files/photo.png").await.0, 404);
        assert_eq!(site.delete("/api/resource/Item/I1").await.0, 202);
        assert_eq!(fetch(&site, &auth, &private).await.0, 404);
        let (_, l) = site
            .get(r#"/api/resource/File?filters=[["attached_to_name","=","I1"]]"#)
            .await;
        assert_eq!(l["data"], json!([]));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_limit_is_413_and_writes_nothing() {
    let site = TestSite::start_with(Backend::Sqlite, &[("max_file_bytes", json!(1000))])
        .await
        .unwrap();
    let (s, b) = upload(
        &site,
        &site.admin_auth.clone(),
        "big.bin",
        payload(5000),
        &[],
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(count_of(&site, "File", json!({})).await, 0);
    let spool = site.site_dir().join(".uploads");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no spool file left behind");
    let (s, b) = upload(
        &site,
        &site.admin_auth.clone(),
        "small.bin",
        payload(900),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_serves_what_the_first_stored() {
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while site
        .client
        .get(format!("{other}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, b) = upload(
        &site,
        &site.admin_auth.clone(),
        "shared.pdf",
        payload(300_000),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let r = site
        .client
        .get(format!("{other}/files/shared.pdf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), payload(300_000));
    let _ = second.kill();
    let _ = second.wait();
}

async fn streamed_items_bring_their_images(backend: Backend) {
    let Some((p, c)) = start_pair_on(backend).await else {
        return;
    };
    for site in [&p, &c] {
        site.insert("UOM", json!({"uom_name": "Nos"})).await;
        site.insert("Item Group", json!({"item_group_name": "All"}))
            .await;
    }
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Item", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    p.insert("Item", json!({"item_code": "PIC-1", "item_group": "All"}))
        .await;
    let image = payload(400_000);
    let (s, b) = upload(
        &p,
        &p.admin_auth.clone(),
        "pic-1.png",
        image.clone(),
        &[
            ("doctype", "Item"),
            ("docname", "PIC-1"),
            ("fieldname", "image"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The Update that set the image brings the file: same URL, same bytes, on the consumer.
    let item = eventually(15, "the image on the consumer's Item", || async {
        get_opt(&c, "/api/resource/Item/PIC-1")
            .await
            .filter(|d| d["image"] == "/files/pic-1.png")
    })
    .await;
    assert_eq!(item["image"], "/files/pic-1.png");
    let (s, got, _) = fetch(&c, "", "/files/pic-1.png").await;
    assert_eq!((s, got == image), (200, true));
    let (_, files) = c.get(r#"/api/resource/File?fields=["attached_to_doctype","attached_to_name","content_hash"]"#).await;
    assert_eq!(files["data"][0]["attached_to_name"], "PIC-1", "{files}");
    // An Item created with an image it already has brings it as well (a Create).
    let (s, b) = upload(&p, &p.admin_auth.clone(), "loose.png", payload(1234), &[]).await;
    assert_eq!(s, 200, "{b}");
    p.insert(
        "Item",
        json!({"item_code": "PIC-2", "item_group": "All", "image": "/files/loose.png"}),
    )
    .await;
    eventually(15, "the second image on the consumer", || async {
        let (s, got, _) = fetch(&c, "", "/files/loose.png").await;
        (s == 200 && got == payload(1234)).then_some(())
    })
    .await;
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_items_bring_their_images_sqlite() {
    streamed_items_bring_their_images(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_items_bring_their_images_postgres() {
    streamed_items_bring_their_images(Backend::Postgres).await;
}
