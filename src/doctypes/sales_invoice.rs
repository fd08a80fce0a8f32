//! Sales Invoice: row amounts and totals computed on the server, a rate taken from the Item
//! when none is given, and a posting date required to submit. Invoices applied from another
//! site are stored as that site made them.

use crate::error::{Error, Result};
use crate::meta::Registry;
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::{self, Conn, Doc};
use async_trait::async_trait;
use serde_json::Value;

fn number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Rounds a money amount to cents, as the Currency fields show it.
fn money(x: f64) -> Value {
    serde_json::Number::from_f64((x * 100.0).round() / 100.0)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Computes rates, amounts and totals; refuses a submit without a posting date.
pub async fn validate(conn: &mut Conn, reg: &Registry, doc: &mut Doc) -> Result<()> {
    let items = reg.get("Item")?;
    let mut total = 0.0;
    if let Some(Value::Array(rows)) = doc.get_mut("items") {
        for row in rows.iter_mut() {
            let Value::Object(row) = row else { continue };
            if number(row.get("rate")) == 0.0 {
                let code = row.get("item_code").and_then(Value::as_str).unwrap_or("");
                if !code.is_empty() {
                    let item = store::load_row(conn, &items, &Value::String(code.into())).await?;
                    if let Some(rate) = item.as_ref().and_then(|i| i.get("standard_rate")) {
                        row.insert("rate".into(), money(number(Some(rate))));
                    }
                }
            }
            let amount = number(row.get("qty")) * number(row.get("rate"));
            row.insert("amount".into(), money(amount));
            total += amount;
        }
    }
    doc.insert("total".into(), money(total));
    doc.insert("grand_total".into(), money(total));
    let submitting = doc.get("docstatus").and_then(Value::as_i64) == Some(1);
    let dated = doc
        .get("posting_date")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.is_empty());
    if submitting && !dated {
        return Err(Error::Mandatory(
            "Posting Date (posting_date) is required to submit a Sales Invoice".into(),
        ));
    }
    Ok(())
}

/// Sales Invoice's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &mut Doc,
        _old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        // An invoice from another site is stored as sent: its totals are the sender's.
        if pending.applied {
            return Ok(());
        }
        validate(conn, w.reg, doc).await
    }
}
