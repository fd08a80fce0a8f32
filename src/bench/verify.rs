//! `verify`: a consumer and a producer in step on N documents (N/2 Items, N/2 Sales Invoices of
//! 5 rows) verify: time, bytes each way and the producer's CPU; then 10 documents are made
//! different behind the consumer's back (5 rows deleted, 5 changed) and one verification with
//! repairs finds and repairs them.

use super::*;
use crate::store::Param;

pub(super) async fn run(
    tmp: &Path,
    docs: usize,
    client: &reqwest::Client,
    report: &mut Report,
) -> Result<()> {
    let (pport, cport) = (free_port()?, free_port()?);
    let producer = make_site(&tmp.join("vp"), "vp", pport).await?.into_arc();
    let consumer = make_site(&tmp.join("vc"), "vc", cport).await?.into_arc();
    seed_masters(&producer).await?;
    seed_masters(&consumer).await?;
    set_setting(&consumer, "pull_wait_seconds", json!(0))?;
    let p = start_served(&producer, pport, client).await?;
    let c = start_served(&consumer, cport, client).await?;
    subscribe(&consumer, &p, &["Item", "Sales Invoice"]).await?;
    approve_all(&producer, &c.url).await?;
    write_backlog(&producer, "V-", docs).await?;
    let target = current_seq(&producer).await?;
    wait_caught_up(&consumer, &p.url, target, "verify: catch up").await?;
    // The consumer's own process stops: verification runs here, as the CLI would.
    drop(c);

    let cpu0 = cpu_seconds(p.child.id());
    let started = Instant::now();
    let in_step = crate::streaming::verify::verify(&consumer, &p.url, Default::default()).await?;
    let took = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(p.child.id()) - cpu0;
    if in_step.remaining() != 0 || in_step.documents != docs {
        return Err(Error::Internal(format!(
            "verify: expected {docs} documents in step, found {} with {} differences",
            in_step.documents,
            in_step.remaining()
        )));
    }

    // Ten differences behind the consumer's back (as many as there are Items, if fewer),
    // spread over the Items: every other one deleted, the rest changed.
    let items = docs / 2;
    let made = items.min(10);
    let mut tx = consumer.store.begin().await?;
    for k in 0..made {
        let name = Param::Text(Some(format!("V-ITEM-{:07}", k * items / made)));
        let sql = if k % 2 == 0 {
            r#"DELETE FROM "tabItem" WHERE name = $1"#
        } else {
            r#"UPDATE "tabItem" SET item_name = 'changed behind its back' WHERE name = $1"#
        };
        store::execute(&mut tx, sql, &[name]).await?;
    }
    tx.commit().await?;
    let started = Instant::now();
    let repaired = crate::streaming::verify::verify(
        &consumer,
        &p.url,
        crate::streaming::verify::How {
            repair: true,
            deep: false,
        },
    )
    .await?;
    let repair_took = started.elapsed().as_secs_f64();
    if repaired.repaired != made || repaired.remaining() != 0 {
        return Err(Error::Internal(format!(
            "verify: {made} differences made, {} found, {} repaired",
            repaired.differences.len(),
            repaired.repaired
        )));
    }
    report.extra.insert(
        "verify".into(),
        json!({
            "documents": in_step.documents,
            "in_step_seconds": took,
            "in_step_bytes_sent": in_step.bytes_sent,
            "in_step_bytes_received": in_step.bytes_received,
            "in_step_producer_cpu_seconds": cpu,
            "differences_made": made,
            "ten_differences_found_and_repaired_seconds": repair_took,
        }),
    );
    drop(p);
    Ok(())
}
