//! Per-peer figures for `/metrics`, in Prometheus' text format: for each producer this site
//! receives from and each consumer it sends to, what the streaming dashboard shows (lag,
//! failed syncs, open conflicts, differences at the last verification, the last sync and the
//! last verification in step, a changed history). Served only to those who may see the
//! dashboard (the API layer decides); the site-wide figures stay open.
//! Must not change anything.

use crate::error::Result;
use crate::site::Site;
use crate::store::{self, Param};
use serde_json::Value;
use std::fmt::Write;

/// A label value as Prometheus reads it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds since the epoch of one of this site's timestamps.
fn epoch(site: &Site, v: Option<&Value>) -> Option<f64> {
    let s = v?.as_str()?;
    site.clock.epoch_seconds(s)
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, peer: (&str, &str), v: Option<f64>) {
        if let Some(v) = v {
            let _ = writeln!(self.out, "{name}{{{}=\"{}\"}} {v}", peer.0, label(peer.1));
        }
    }
}

/// The per-peer figures (reads the dashboard, which asks each peer with a short timeout).
pub async fn render(site: &Site) -> Result<String> {
    let dash = super::dashboard::build(site).await?;
    let empty = vec![];
    let producers = dash["producers"].as_array().unwrap_or(&empty);
    let consumers = dash["consumers"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let num = |v: &Value| v.as_f64();
    type Pick<'a> = &'a dyn Fn(&Value) -> Option<f64>;
    let producer_figures: [(&str, &str, &str, Pick); 7] = [
        ("docstream_producer_lag_logs", "gauge", "Update logs of subscribed types the producer holds after this site's checkpoint (absent while unknown: unreachable, history changed, differences found).", &|c| num(&c["lag"])),
        ("docstream_producer_failed_syncs", "gauge", "Failed Event Sync Logs from the producer (conflicts included).", &|c| num(&c["failed"])),
        ("docstream_producer_open_conflicts", "gauge", "Conflicts from the producer waiting for a person.", &|c| num(&c["conflicts"])),
        ("docstream_producer_verify_differences", "gauge", "Differences left at the last verification.", &|c| num(&c["verified"]["differences"]).filter(|_| !c["verified"]["documents"].is_null())),
        ("docstream_producer_last_sync_timestamp_seconds", "gauge", "Time of the last Event Sync Log from the producer.", &|c| epoch(site, c.get("last_sync"))),
        ("docstream_producer_last_in_step_timestamp_seconds", "gauge", "Time of the last verification that found this site in step with the producer.", &|c| epoch(site, c["verified"].get("in_step_at"))),
        ("docstream_producer_history_changed", "gauge", "1 while the producer's history changed (restored, replaced) and no person has cleared it.", &|c| Some((c["status"] == "History changed") as i64 as f64)),
    ];
    for (name, kind, help, pick) in producer_figures {
        f.head(name, kind, help);
        for c in producers {
            f.line(
                name,
                ("producer", c["url"].as_str().unwrap_or_default()),
                pick(c),
            );
        }
    }
    let mut conn = site.store.conn().await?;
    f.head(
        "docstream_consumer_lag_logs",
        "gauge",
        "Update logs of the consumer's approved types after what it acknowledged.",
    );
    for c in consumers {
        let url = c["url"].as_str().unwrap_or_default();
        f.line(
            "docstream_consumer_lag_logs",
            ("consumer", url),
            num(&c["lag"]),
        );
    }
    f.head(
        "docstream_consumer_lag_seconds",
        "gauge",
        "Age of the oldest update log the consumer has not acknowledged (0 when none).",
    );
    for c in consumers {
        let url = c["url"].as_str().unwrap_or_default();
        let acked = c["acknowledged"].as_i64().unwrap_or(0);
        let oldest = store::fetch_scalar(
            &mut conn,
            r#"SELECT creation FROM "tabEvent Update Log" WHERE name > $1 AND (origin IS NULL OR origin <> $2) ORDER BY name LIMIT 1"#,
            &[Param::Int(Some(acked)), Param::text(url)],
        )
        .await?;
        let now = site.clock.epoch_seconds(&site.clock.now()).unwrap_or(0.0);
        let age = match num(&c["lag"]) {
            Some(n) if n > 0.0 => epoch(site, oldest.as_ref()).map(|t| (now - t).max(0.0)),
            Some(_) => Some(0.0),
            None => None,
        };
        f.line("docstream_consumer_lag_seconds", ("consumer", url), age);
    }
    f.head(
        "docstream_consumer_failed_syncs",
        "gauge",
        "Failed Event Sync Logs from this site on the consumer (asked of it; absent when it does not answer).",
    );
    for c in consumers {
        let url = c["url"].as_str().unwrap_or_default();
        f.line(
            "docstream_consumer_failed_syncs",
            ("consumer", url),
            num(&c["failed"]),
        );
    }
    let consumer_checks: [(&str, &str, Pick); 2] = [
        ("docstream_consumer_verify_differences", "Documents missing or different on the consumer at this site's last check of it (consumers that pull by time).", &|c| num(&c["verified"]["differences"]).filter(|_| !c["verified"]["documents"].is_null())),
        ("docstream_consumer_last_in_step_timestamp_seconds", "Time of this site's last check that found the consumer holding what it was sent.", &|c| epoch(site, c["verified"].get("in_step_at"))),
    ];
    for (name, help, pick) in consumer_checks {
        f.head(name, "gauge", help);
        for c in consumers {
            f.line(
                name,
                ("consumer", c["url"].as_str().unwrap_or_default()),
                pick(c),
            );
        }
    }
    Ok(out)
}
