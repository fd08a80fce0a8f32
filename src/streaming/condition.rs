//! Conditions of Event Consumer rows, applied when a consumer pulls (Frappe's rule): each log
//! of a conditioned type is judged on its document as it is now.
//!
//! A document that passes and that this consumer has not received before goes out as one
//! Create of its current state (its other logs in the pull are folded into it); one that no
//! longer passes gets nothing; a Delete reaches only consumers that received the document.
//! What was sent is recorded per consumer with the seq it changed at (`__consumer_sent`), so
//! that judging the same logs again (a page lost on the way, or fetched twice) decides the
//! same; every log delivered under a condition is in `__condition_deliveries`, so update logs
//! can show who received them.

use crate::error::Result;
use crate::meta::DocType;
use crate::sandbox::{self, Limits, Var};
use crate::service::documents::load_doc;
use crate::service::sandbox_db::{run_script, SiteDb};
use crate::site::Site;
use crate::store::{self, Doc, Param};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// The Server Script method named by a `cmd:` condition, if it is one.
pub fn command_of(condition: &str) -> Option<&str> {
    condition
        .trim()
        .strip_prefix("cmd:")
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Checks a condition when it is saved: an expression must parse; a `cmd:` must name a
/// dotted method.
pub fn check(condition: &str) -> std::result::Result<(), String> {
    let c = condition.trim();
    if c.is_empty() {
        return Ok(());
    }
    if c.starts_with("cmd:") {
        return match command_of(c) {
            Some(m) if m.split('.').all(|p| !p.is_empty()) => Ok(()),
            _ => Err(format!(
                "cmd: must name a method, as in cmd: my_app.module.function; got {c:?}"
            )),
        };
    }
    sandbox::check_expression(c).map_err(|e| format!("condition {c:?}: {e}"))
}

/// Checks a condition against the type it filters: [`check`], then an expression is run once
/// on a blank document of `dt`, and a field it reads that the type does not have is refused,
/// naming the nearest field. Other errors on a blank document (a comparison with an empty
/// value, a database call) are left to run time.
pub fn check_for(dt: &DocType, condition: &str) -> std::result::Result<(), String> {
    check(condition)?;
    let c = condition.trim();
    if c.is_empty() || command_of(c).is_some() {
        return Ok(());
    }
    let blank = blank_document(dt);
    let outcome = sandbox::eval_expression(
        c,
        &[Var {
            name: "doc",
            value: &blank,
            by_attribute: true,
        }],
        &sandbox::NoDb,
        "",
        &Limits::default(),
    );
    let Err(e) = outcome else { return Ok(()) };
    let message = e.to_string();
    let Some(field) = unknown_attribute(&message) else {
        return Ok(());
    };
    let names = dt
        .fields
        .iter()
        .map(|f| f.fieldname.as_str())
        .chain(crate::meta::STANDARD_COLUMNS.iter().copied());
    let nearest = names
        .map(|n| (strsim::damerau_levenshtein(n, &field), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3))
        .min();
    Err(match nearest {
        Some((_, n)) => format!(
            "condition {c:?}: {} has no field {field}; did you mean {n}?",
            dt.name
        ),
        None => format!("condition {c:?}: {} has no field {field}", dt.name),
    })
}

/// A document of `dt` with every field empty of its kind (0, "" or no rows).
fn blank_document(dt: &DocType) -> Value {
    let mut doc = serde_json::Map::new();
    for k in crate::meta::STANDARD_COLUMNS {
        doc.insert(k.to_string(), json!(""));
    }
    doc.insert("doctype".into(), json!(dt.name));
    doc.insert("docstatus".into(), json!(0));
    for f in &dt.fields {
        let v = if f.fieldtype.is_table() {
            json!([])
        } else {
            match f.fieldtype.storage() {
                crate::meta::Storage::Int => json!(0),
                crate::meta::Storage::Float => json!(0.0),
                crate::meta::Storage::Text => json!(""),
                crate::meta::Storage::None => continue,
            }
        };
        doc.insert(f.fieldname.clone(), v);
    }
    Value::Object(doc)
}

/// The attribute named in Starlark's "has no attribute `x`" error.
fn unknown_attribute(message: &str) -> Option<String> {
    let rest = &message[message.find("has no attribute")? + "has no attribute".len()..];
    let start = rest.find('`')? + 1;
    let len = rest[start..].find('`')?;
    Some(rest[start..start + len].to_string())
}

/// What a pull knows about one consumer's conditions.
pub struct Judge<'a> {
    site: &'a Site,
    consumer_url: &'a str,
    conditions: &'a HashMap<String, String>,
    consumer: Option<Value>,
    scripts: HashMap<String, std::result::Result<String, String>>,
    verdicts: HashMap<(String, String), Option<(bool, Doc)>>,
    sent: HashMap<(String, String), bool>,
    /// Documents judged in this pull, with the error when the condition raised.
    judged: Vec<(String, String, Option<String>)>,
}

/// Changes to the consumer's records that a pull makes.
#[derive(Default)]
struct Records {
    /// In log order: (type, name, seq, sent from then on (true) or no longer (false)).
    changes: Vec<(String, String, i64, bool)>,
    delivered: Vec<i64>,
}

impl Records {
    fn sent(&mut self, (t, n): (String, String), seq: i64) {
        self.changes.push((t, n, seq, true));
    }

    fn unsent(&mut self, (t, n): (String, String), seq: i64) {
        self.changes.push((t, n, seq, false));
    }
}

impl<'a> Judge<'a> {
    /// A judge for one pull.
    pub fn new(
        site: &'a Site,
        consumer_url: &'a str,
        conditions: &'a HashMap<String, String>,
    ) -> Judge<'a> {
        Judge {
            site,
            consumer_url,
            conditions,
            consumer: None,
            scripts: HashMap::new(),
            verdicts: HashMap::new(),
            sent: HashMap::new(),
            judged: Vec::new(),
        }
    }

    /// Filters and rewrites pulled logs (rows of the update log), in order.
    pub async fn filter(&mut self, logs: Vec<Doc>) -> Result<Vec<Doc>> {
        if !logs
            .iter()
            .any(|l| self.conditions.contains_key(&text(l.get("ref_doctype"))))
        {
            return Ok(logs);
        }
        let mut out = Vec::with_capacity(logs.len());
        let mut rec = Records::default();
        let mut created_now: HashSet<(String, String)> = HashSet::new();
        for log in logs {
            let doctype = text(log.get("ref_doctype"));
            let Some(condition) = self.conditions.get(&doctype).cloned() else {
                out.push(log);
                continue;
            };
            let seq = log.get("seq").and_then(Value::as_i64).unwrap_or(0);
            let name = text(log.get("docname"));
            let key = (doctype.clone(), name.clone());
            if created_now.contains(&key) {
                // Folded into the Create of the document's current state.
                rec.delivered.push(seq);
                continue;
            }
            let data: Value = match log.get("data") {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => Value::Null,
            };
            let old_name = data
                .get("old_name")
                .map(|v| text(Some(v)))
                .filter(|s| !s.is_empty());
            let known_as = old_name.clone().unwrap_or_else(|| name.clone());
            let was_sent = self.was_sent(&doctype, &known_as, seq).await?;
            if text(log.get("update_type")) == "Delete" {
                if was_sent {
                    rec.unsent(key.clone(), seq);
                    self.sent.insert(key, false);
                    rec.delivered.push(seq);
                    out.push(log);
                }
                continue;
            }
            let Some((passes, current)) = self.verdict(&doctype, &name, &condition, &log).await?
            else {
                // Deleted since: its Delete follows and decides.
                continue;
            };
            if !passes {
                continue;
            }
            if was_sent {
                if let Some(old) = old_name {
                    rec.unsent((doctype.clone(), old.clone()), seq);
                    self.sent.insert((doctype.clone(), old), false);
                    rec.sent(key.clone(), seq);
                    self.sent.insert(key, true);
                }
                rec.delivered.push(seq);
                out.push(log);
                continue;
            }
            let mut create = log.clone();
            create.insert("update_type".into(), json!("Create"));
            create.insert(
                "data".into(),
                json!(crate::service::diff::create_payload_json(&current)),
            );
            out.push(create);
            rec.delivered.push(seq);
            rec.sent(key.clone(), seq);
            self.sent.insert(key.clone(), true);
            created_now.insert(key);
        }
        self.record(rec).await?;
        Ok(out)
    }

    /// Whether the consumer had the document before the log `seq` (as first asked in a pull;
    /// later logs of the pull see what earlier ones changed).
    async fn was_sent(&mut self, doctype: &str, name: &str, seq: i64) -> Result<bool> {
        let key = (doctype.to_string(), name.to_string());
        if let Some(s) = self.sent.get(&key) {
            return Ok(*s);
        }
        let mut conn = self.site.store.conn().await?;
        let hit = !store::fetch_docs(
            &mut conn,
            r#"SELECT 1 AS hit FROM "__consumer_sent" WHERE consumer = $1 AND ref_doctype = $2 AND docname = $3
               AND sent_seq < $4 AND (unsent_seq IS NULL OR unsent_seq >= $4)"#,
            &[
                Param::Text(Some(self.consumer_url.into())),
                Param::Text(Some(doctype.into())),
                Param::Text(Some(name.into())),
                Param::Int(Some(seq)),
            ],
        )
        .await?
        .is_empty();
        self.sent.insert(key, hit);
        Ok(hit)
    }

    /// Whether the document passes now, with its current state; None when it is gone.
    /// Judged once per document per pull.
    async fn verdict(
        &mut self,
        doctype: &str,
        name: &str,
        condition: &str,
        log: &Doc,
    ) -> Result<Option<(bool, Doc)>> {
        let key = (doctype.to_string(), name.to_string());
        if let Some(v) = self.verdicts.get(&key) {
            return Ok(v.clone());
        }
        let reg = self.site.meta();
        let current = match reg.get(doctype) {
            Ok(dt) => {
                let mut conn = self.site.store.conn().await?;
                load_doc(&mut conn, &reg, &dt, name).await?
            }
            Err(_) => None,
        };
        let verdict = match current {
            None => None,
            Some(doc) => {
                let passes = self.evaluate(condition, &doc, log).await;
                Some((passes, doc))
            }
        };
        self.verdicts.insert(key, verdict.clone());
        Ok(verdict)
    }

    /// Runs the condition; an error counts as false and is logged.
    async fn evaluate(&mut self, condition: &str, doc: &Doc, log: &Doc) -> bool {
        let doc_value = Value::Object(doc.clone());
        let now = self.site.clock.now();
        let site = self.site;
        let outcome = match command_of(condition) {
            None => run_script(|| {
                sandbox::eval_expression(
                    condition,
                    &[Var {
                        name: "doc",
                        value: &doc_value,
                        by_attribute: true,
                    }],
                    &SiteDb::new(site),
                    &now,
                    &Limits::default(),
                )
                .map_err(|e| e.to_string())
            }),
            Some(method) => match self.script(method).await {
                Err(e) => Err(e),
                Ok(script) => {
                    let consumer = self.consumer().await;
                    let update_log = json!({
                        "name": log.get("name"),
                        "update_type": log.get("update_type"),
                        "ref_doctype": log.get("ref_doctype"),
                        "docname": log.get("docname"),
                        "seq": log.get("seq"),
                        "creation": log.get("creation"),
                    });
                    let function = method.rsplit('.').next().unwrap_or(method);
                    run_script(|| {
                        sandbox::call_function(
                            &script,
                            function,
                            &[&consumer, &doc_value, &update_log],
                            &SiteDb::new(site),
                            &now,
                            &Limits::default(),
                        )
                        .map_err(|e| e.to_string())
                    })
                }
            },
        };
        let key = (text(log.get("ref_doctype")), text(doc.get("name")));
        self.judged
            .push((key.0, key.1, outcome.as_ref().err().cloned()));
        match outcome {
            Ok(v) => sandbox::truthy(&v),
            Err(e) => {
                tracing::warn!(
                    consumer = self.consumer_url,
                    doctype = text(doc.get("doctype")).as_str(),
                    docname = text(doc.get("name")).as_str(),
                    condition,
                    error = e.as_str(),
                    "condition raised; the document is not sent"
                );
                false
            }
        }
    }

    async fn script(&mut self, method: &str) -> std::result::Result<String, String> {
        if let Some(s) = self.scripts.get(method) {
            return s.clone();
        }
        let found = async {
            let mut conn = self.site.store.conn().await.map_err(|e| e.to_string())?;
            let rows = store::fetch_docs(
                &mut conn,
                r#"SELECT script FROM "tabServer Script" WHERE api_method = $1 AND script_type = 'API' AND COALESCE(disabled, 0) = 0"#,
                &[Param::Text(Some(method.into()))],
            )
            .await
            .map_err(|e| e.to_string())?;
            rows.first()
                .map(|r| text(r.get("script")))
                .ok_or_else(|| format!("no enabled API Server Script has api_method {method}"))
        }
        .await;
        self.scripts.insert(method.to_string(), found.clone());
        found
    }

    async fn consumer(&mut self) -> Value {
        if let Some(c) = &self.consumer {
            return c.clone();
        }
        let reg = self.site.meta();
        let doc = match (self.site.store.conn().await, reg.get("Event Consumer")) {
            (Ok(mut conn), Ok(dt)) => load_doc(&mut conn, &reg, &dt, self.consumer_url)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let mut v = Value::Object(doc.unwrap_or_default());
        if let Some(m) = v.as_object_mut() {
            // Keys are the consumer's own; a script has no use for them.
            m.remove("api_secret");
            m.insert("name".into(), json!(self.consumer_url));
        }
        self.consumer = Some(v.clone());
        v
    }

    async fn record(&mut self, rec: Records) -> Result<()> {
        let judged = std::mem::take(&mut self.judged);
        if rec.changes.is_empty() && rec.delivered.is_empty() && judged.is_empty() {
            return Ok(());
        }
        let consumer = || Param::Text(Some(self.consumer_url.to_string()));
        let mut tx = self.site.store.begin().await?;
        record_failures(&mut tx, self.site, self.consumer_url, &judged).await?;
        for (t, n, seq, sent) in &rec.changes {
            let sql = if *sent {
                r#"INSERT INTO "__consumer_sent" (consumer, ref_doctype, docname, sent_seq, unsent_seq) VALUES ($1, $2, $3, $4, NULL)
                   ON CONFLICT (consumer, ref_doctype, docname) DO UPDATE SET sent_seq = excluded.sent_seq, unsent_seq = NULL"#
            } else {
                r#"UPDATE "__consumer_sent" SET unsent_seq = $4 WHERE consumer = $1 AND ref_doctype = $2 AND docname = $3"#
            };
            store::execute(
                &mut tx,
                sql,
                &[
                    consumer(),
                    Param::text(t),
                    Param::text(n),
                    Param::Int(Some(*seq)),
                ],
            )
            .await?;
        }
        for chunk in rec.delivered.chunks(200) {
            let mut params = vec![consumer()];
            let mut values = Vec::with_capacity(chunk.len());
            for seq in chunk {
                params.push(Param::Int(Some(*seq)));
                values.push(format!("($1, ${})", params.len()));
            }
            store::execute(
                &mut tx,
                &format!(
                    r#"INSERT INTO "__condition_deliveries" (consumer, seq) VALUES {} ON CONFLICT DO NOTHING"#,
                    values.join(", ")
                ),
                &params,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Records which judged documents the condition raised on, and forgets those it judged since
/// (one statement each, and none while the consumer has no failure recorded).
async fn record_failures(
    conn: &mut crate::store::Conn,
    site: &Site,
    consumer: &str,
    judged: &[(String, String, Option<String>)],
) -> Result<()> {
    let any_before = store::fetch_scalar(
        conn,
        r#"SELECT 1 FROM "__condition_failures" WHERE consumer = $1 LIMIT 1"#,
        &[Param::text(consumer)],
    )
    .await?
    .is_some();
    let now = site.clock.now();
    for (t, n, error) in judged {
        match error {
            Some(e) => {
                store::execute(
                    conn,
                    r#"INSERT INTO "__condition_failures" (consumer, ref_doctype, docname, error, at) VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (consumer, ref_doctype, docname) DO UPDATE SET error = excluded.error, at = excluded.at"#,
                    &[Param::text(consumer), Param::text(t), Param::text(n), Param::text(e), Param::text(&now)],
                )
                .await?;
            }
            None if any_before => {
                store::execute(
                    conn,
                    r#"DELETE FROM "__condition_failures" WHERE consumer = $1 AND ref_doctype = $2 AND docname = $3"#,
                    &[Param::text(consumer), Param::text(t), Param::text(n)],
                )
                .await?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Per type, how many documents a consumer's condition raised on, and the latest error.
pub async fn failures(conn: &mut crate::store::Conn, consumer: &str) -> Result<Vec<Value>> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT ref_doctype, COUNT(*) AS n, MAX(at) AS at FROM "__condition_failures" WHERE consumer = $1 GROUP BY ref_doctype ORDER BY ref_doctype"#,
        &[Param::text(consumer)],
    )
    .await?;
    let mut out = vec![];
    for r in rows {
        let t = text(r.get("ref_doctype"));
        let error = store::fetch_scalar(
            conn,
            r#"SELECT error FROM "__condition_failures" WHERE consumer = $1 AND ref_doctype = $2 ORDER BY at DESC LIMIT 1"#,
            &[Param::text(consumer), Param::text(&t)],
        )
        .await?;
        out.push(json!({"doctype": t, "documents": r.get("n"), "error": error, "at": r.get("at")}));
    }
    Ok(out)
}

/// The documents a consumer's condition on `doctype` raised on, forgotten: a corrected
/// condition judges them again (their names are returned, to be logged for that consumer).
pub async fn take_failed(
    conn: &mut crate::store::Conn,
    consumer: &str,
    doctype: &str,
) -> Result<Vec<String>> {
    let names: Vec<String> = store::fetch_docs(
        conn,
        r#"SELECT docname FROM "__condition_failures" WHERE consumer = $1 AND ref_doctype = $2 ORDER BY docname"#,
        &[Param::text(consumer), Param::text(doctype)],
    )
    .await?
    .iter()
    .map(|r| text(r.get("docname")))
    .collect();
    store::execute(
        conn,
        r#"DELETE FROM "__condition_failures" WHERE consumer = $1 AND ref_doctype = $2"#,
        &[Param::text(consumer), Param::text(doctype)],
    )
    .await?;
    Ok(names)
}
