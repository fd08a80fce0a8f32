//! Shipped mapping templates, installed as a person would (`docstream mappings install`) on a
//! head office whose types are shaped as ERPNext's (a Company with its receivable account,
//! Selling Settings with a default customer group and territory): a shop's invoices and new
//! customers then arrive booked to the head office's company, with nothing typed by hand.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Output};

/// The head office's ERPNext-shaped types and settings; `territory` is left unset.
async fn head_office_settings(ho: &TestSite) {
    ho.insert(
        "DocType",
        json!({"name": "Company", "autoname": "field:company_name", "fields": [
            {"fieldname": "company_name", "label": "Company", "fieldtype": "Data", "reqd": 1, "unique": 1},
            {"fieldname": "default_receivable_account", "label": "Default Receivable Account", "fieldtype": "Data"}]}),
    )
    .await;
    ho.insert(
        "DocType",
        json!({"name": "Selling Settings", "issingle": 1, "fields": [
            {"fieldname": "customer_group", "label": "Default Customer Group", "fieldtype": "Data"},
            {"fieldname": "territory", "label": "Default Territory", "fieldtype": "Data"}]}),
    )
    .await;
    for f in [
        json!({"dt": "Sales Invoice", "fieldname": "company", "label": "Company", "fieldtype": "Link", "options": "Company"}),
        json!({"dt": "Sales Invoice", "fieldname": "debit_to", "label": "Debit To", "fieldtype": "Data"}),
        json!({"dt": "Sales Invoice", "fieldname": "set_posting_time", "label": "Edit Posting Date and Time", "fieldtype": "Check"}),
        json!({"dt": "Customer", "fieldname": "territory", "label": "Territory", "fieldtype": "Data"}),
    ] {
        let (s, b) = ho.post("/api/resource/Custom Field", f).await;
        assert_eq!(s, 200, "{b}");
    }
    ho.insert(
        "Company",
        json!({"company_name": "Head Office Ltd", "default_receivable_account": "Debtors - HO"}),
    )
    .await;
    let (s, b) = ho
        .put(
            "/api/resource/Global Defaults/Global Defaults",
            json!({"default_company": "Head Office Ltd"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = ho
        .put(
            "/api/resource/Selling Settings/Selling Settings",
            json!({"customer_group": "Commercial"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// `docstream mappings install erpnext-shop-invoices` against `ho` for `shop`.
fn install(ho: &TestSite, shop: &TestSite, extra: &[&str]) -> Output {
    let (key, secret) = ho
        .admin_auth
        .trim_start_matches("token ")
        .split_once(':')
        .unwrap();
    Command::new(bin())
        .args([
            "mappings",
            "install",
            "erpnext-shop-invoices",
            "--site",
            &ho.url,
        ])
        .args([
            "--api-key",
            key,
            "--producer",
            &shop.public_url,
            "--name",
            "SHOP",
        ])
        .args(extra)
        .env("DOCSTREAM_API_SECRET", secret)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipped_template_books_a_shops_invoices_to_the_head_offices_company() {
    let (shop, ho) = start_pair().await;
    seed_invoice_masters(&shop).await;
    seed_invoice_masters(&ho).await;
    head_office_settings(&ho).await;
    subscribe(
        &shop,
        &ho,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let mappings = || async {
        let (_, l) = ho.get("/api/resource/Document Type Mapping").await;
        l["data"].as_array().unwrap().len()
    };
    // A value the head office does not have is named, with where to set it; nothing is written.
    let out = install(&ho, &shop, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "the template needs territory (Selling Settings > Default Territory), not set on"
        ) && text(&out).contains("give --set territory=VALUE"),
        "{}",
        text(&out)
    );
    assert_eq!(mappings().await, 0);
    let out = install(&ho, &shop, &["--set", "territory=India", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would be created"), "{}", text(&out));
    assert_eq!(mappings().await, 0, "a dry run writes nothing");
    let out = install(&ho, &shop, &["--set", "territory=India"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for line in [
        "company = Head Office Ltd  (Global Defaults > Default Company on",
        "debit_to = Debtors - HO  (the Company's Default Receivable Account on",
        "customer_group = Commercial",
        "territory = India  (given)",
        "Document Type Mapping SHOP Customer: created",
        "Document Type Mapping SHOP Sales Invoice: created",
        "Sales Invoice: mapping SHOP Sales Invoice",
        "Item: row added",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    // The new Item row waits for the shop's approval, as any new row does.
    let (_, ec) = shop
        .get(&format!("/api/resource/Event Consumer/{}", ho.public_url))
        .await;
    let rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    let item = rows.iter().find(|r| r["ref_doctype"] == "Item").unwrap();
    assert_eq!(item["status"], "Pending", "{rows:?}");
    // A new customer of the shop and her invoice.
    shop.insert(
        "Customer",
        json!({"customer_name": "Ann", "customer_group": "Walk-in"}),
    )
    .await;
    let inv = shop
        .insert(
            "Sales Invoice",
            json!({"customer": "Ann", "items": [{"item_code": "I1", "qty": 2, "rate": 5}]}),
        )
        .await;
    let name = inv["name"].as_str().unwrap().to_string();
    let got = eventually(15, "the shop's invoice on the head office", || {
        get_opt(&ho, format!("/api/resource/Sales Invoice/{name}"))
    })
    .await;
    assert_eq!(got["company"], "Head Office Ltd", "{got}");
    assert_eq!(got["debit_to"], "Debtors - HO", "{got}");
    assert_eq!(got["set_posting_time"], 1, "{got}");
    assert_eq!(got["customer"], "Ann", "{got}");
    let ann = get_opt(&ho, "/api/resource/Customer/Ann")
        .await
        .expect("the shop's new customer");
    assert_eq!(ann["customer_group"], "Commercial", "{ann}");
    assert_eq!(ann["territory"], "India", "{ann}");
    // Again: what it wrote is updated in place, the rows are already set.
    let out = install(&ho, &shop, &["--set", "territory=India"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("SHOP Sales Invoice: updated"), "{said}");
    assert!(!said.contains("row added"), "{said}");
    assert_eq!(mappings().await, 2);
    let list: Value = {
        let out = Command::new(bin())
            .args(["mappings", "list"])
            .output()
            .unwrap();
        assert!(out.status.success());
        json!(String::from_utf8_lossy(&out.stdout))
    };
    assert!(
        list.as_str().unwrap().contains("erpnext-shop-invoices"),
        "{list}"
    );
}
