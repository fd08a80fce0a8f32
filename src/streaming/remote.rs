//! A client for another site's Frappe API (what Frappe's `FrappeClient` does), over HTTP.

use crate::error::{Error, Result};
use serde_json::Value;
use std::time::Duration;

/// Another site, reached with an API key pair.
#[derive(Clone)]
pub struct RemoteSite {
    http: reqwest::Client,
    /// The site's URL without a trailing slash.
    pub url: String,
    auth: String,
    /// Set for a producer that connects: requests wait for its poll instead of going out.
    tunnel: Option<std::sync::Arc<super::tunnel::TunnelHub>>,
    /// The largest answer read (`SiteConfig::max_answer_bytes`): a body is bounded before it
    /// is read, the other site's too.
    max_answer: usize,
    /// Abandon a request whose answer sends no byte for this long (a long poll to a producer
    /// that sends heartbeats: a half-open line is given up quickly).
    idle: Option<Duration>,
}

/// How long a long poll to a producer that sends heartbeats may go without a byte (three
/// heartbeats).
pub const ABANDON_AFTER: Duration = Duration::from_secs(15);

/// What other sites were found to do, for this process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trait {
    /// Serves event streaming as Frappe v15's app.
    FrappeV15,
    /// Sends heartbeats while a long poll waits.
    Heartbeat,
    /// Takes request bodies compressed with zstd (its answers say `Accept-Encoding: zstd`).
    TakesZstd,
}

fn learned() -> &'static std::sync::Mutex<std::collections::HashSet<(Trait, String)>> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<(Trait, String)>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn knows(t: Trait, url: &str) -> bool {
    learned()
        .lock()
        .expect("learned lock")
        .contains(&(t, url.to_string()))
}

fn learn(t: Trait, url: &str) {
    learned()
        .lock()
        .expect("learned lock")
        .insert((t, url.to_string()));
}

impl std::fmt::Debug for RemoteSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteSite({})", self.url)
    }
}

pub use super::page::LogPage;

/// What one pull asks of a producer.
#[derive(Debug, Clone)]
pub struct PullAsk<'a> {
    pub consumer_url: &'a str,
    pub doctypes: &'a [String],
    /// docstream's checkpoint; `None` for a Frappe producer (then `last_update`).
    pub after_seq: Option<i64>,
    pub last_update: &'a str,
    pub limit: usize,
    /// What this consumer has committed, when it pipelines pulls.
    pub acked_seq: Option<i64>,
    /// Long poll: how long the producer may hold the pull for a new log.
    pub wait: Option<Duration>,
    /// The producer has bound its pages before: an unbound page is refused.
    pub must_bind: bool,
    /// The identity of the checkpoint (`streaming::history`; empty when not known yet).
    pub history: Option<&'a str>,
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl RemoteSite {
    /// A client for `url` with `key:secret`, reading answers of at most `max_answer` bytes.
    pub fn new(
        http: reqwest::Client,
        url: &str,
        key: &str,
        secret: &str,
        max_answer: usize,
    ) -> RemoteSite {
        RemoteSite {
            http,
            url: url.trim_end_matches('/').to_string(),
            auth: format!("token {key}:{secret}"),
            tunnel: None,
            max_answer,
            idle: None,
        }
    }

    /// An answer's body as text, refused once it passes `max_answer` bytes.
    async fn body_text(&self, mut r: reqwest::Response) -> Result<String> {
        let too_large = || {
            Error::TooLarge(format!(
                "{} sent an answer larger than this site reads ({} bytes, max_body_bytes and max_file_bytes)",
                self.url, self.max_answer
            ))
        };
        if r.content_length()
            .is_some_and(|n| n > self.max_answer as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = self
            .idle_bound(r.chunk())
            .await?
            .map_err(|e| self.unreachable(e))?
        {
            if bytes.len() + chunk.len() > self.max_answer {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes).map_err(|_| {
            Error::Validation(format!("{} sent an answer that is not UTF-8", self.url))
        })
    }

    /// The same site, reached through the connection it opens to us (see `tunnel`).
    pub fn through(mut self, hub: std::sync::Arc<super::tunnel::TunnelHub>) -> RemoteSite {
        self.tunnel = Some(hub);
        self
    }

    /// Sends a request, over the network or through the producer's own connection; the error
    /// is a short reason.
    async fn transmit(
        &self,
        req: reqwest::RequestBuilder,
    ) -> std::result::Result<reqwest::Response, String> {
        let Some(hub) = &self.tunnel else {
            return req.send().await.map_err(|e| short_reqwest(&e));
        };
        let req = req.build().map_err(|e| e.to_string())?;
        hub.forward(&self.url, req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        self.idle_bound(self.transmit(req))
            .await?
            .map_err(|e| Error::Validation(format!("{} did not answer: {e}", self.url)))
    }

    /// `f`, given up after `idle` without a result when an idle bound is set.
    async fn idle_bound<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T> {
        match self.idle {
            None => Ok(f.await),
            Some(d) => tokio::time::timeout(d, f).await.map_err(|_| {
                Error::Validation(format!(
                    "{} did not answer: no byte for {} s (the line is down or half-open)",
                    self.url,
                    d.as_secs()
                ))
            }),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Validation(format!(
            "{} did not answer: {}",
            self.url,
            short_reqwest(&e)
        ))
    }

    /// The body of a successful answer as text; an error for any other status.
    async fn read_text(&self, what: &str, r: reqwest::Response) -> Result<String> {
        let status = r.status();
        let text = self.body_text(r).await?;
        self.answer(what, status, text)
    }

    /// An answer's text when its status is a success; the error it says otherwise.
    fn answer(&self, what: &str, status: reqwest::StatusCode, text: String) -> Result<String> {
        if status.is_success() {
            return Ok(text);
        }
        let body: Value =
            serde_json::from_str(&text).unwrap_or(Value::String(text.chars().take(200).collect()));
        let msg = body
            .get("exception")
            .and_then(Value::as_str)
            .map(|e| e.trim_start_matches("frappe.exceptions.").to_string())
            .unwrap_or_else(|| body.to_string());
        Err(match status.as_u16() {
            401 | 403 => Error::Validation(format!("{} refused {what}: {msg}", self.url)),
            404 => Error::DoesNotExist(format!("{} has no {what}: {msg}", self.url)),
            _ => Error::Validation(format!("{} failed {what} (HTTP {status}): {msg}", self.url)),
        })
    }

    /// The JSON body of a successful answer: one that does not parse (cut or damaged on the
    /// way) is an error, never taken for an empty answer.
    async fn read(&self, what: &str, r: reqwest::Response) -> Result<Value> {
        let text = self.read_text(what, r).await?;
        self.parse(what, &text)
    }

    fn parse(&self, what: &str, text: &str) -> Result<Value> {
        serde_json::from_str(text).map_err(|e| {
            Error::Validation(format!(
                "{} answered {what} with a body that is not JSON ({e}): damaged or cut on the way",
                self.url
            ))
        })
    }

    /// `frappe.ping`, tried `tries` times.
    pub async fn ping(&self, tries: usize) -> Result<()> {
        let mut last = None;
        for i in 0..tries.max(1) {
            match self
                .transmit(
                    self.http
                        .get(format!("{}/api/method/frappe.ping", self.url)),
                )
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = Some(format!("HTTP {}", r.status())),
                Err(e) => last = Some(e),
            }
            if i + 1 < tries {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Err(Error::Validation(format!(
            "producer {} did not answer: {}",
            self.url,
            last.unwrap_or_default()
        )))
    }

    /// Calls a whitelisted method with form arguments; returns `message`. The form goes
    /// compressed to a site that said it takes zstd (a shop's answers up a weak line).
    pub async fn call(&self, method: &str, args: &[(&str, String)]) -> Result<Value> {
        let form = serde_urlencoded::to_string(args)
            .map_err(|e| Error::Internal(format!("cannot encode the arguments: {e}")))?;
        let packed = (form.len() >= 1024 && knows(Trait::TakesZstd, &self.url))
            .then(|| zstd::bulk::compress(form.as_bytes(), 3).ok())
            .flatten();
        let text = self
            .send_method(method, method, |r| {
                let r = r.header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
                match &packed {
                    Some(p) => r
                        .header(reqwest::header::CONTENT_ENCODING, "zstd")
                        .body(p.clone()),
                    None => r.body(form.clone()),
                }
            })
            .await?;
        let body = self.parse(method, &text)?;
        Ok(body.get("message").cloned().unwrap_or(Value::Null))
    }

    fn method_request(&self, method: &str) -> reqwest::RequestBuilder {
        let method = match method.strip_prefix(FRAPPE_14_MODULE) {
            Some(rest) if knows(Trait::FrappeV15, &self.url) => format!("{FRAPPE_15_APP}{rest}"),
            _ => method.to_string(),
        };
        self.http
            .post(format!("{}/api/method/{method}", self.url))
            .header("authorization", &self.auth)
            .header("accept", "application/json")
    }

    /// Sends a method and reads its answer's text (see [`RemoteSite::answer`]). A site that
    /// lacks Frappe 14's event-streaming module (Frappe v15, where event streaming is the
    /// `event_streaming` app) is asked again under the app's name, and remembered.
    async fn send_method(
        &self,
        method: &str,
        what: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<String> {
        let r = self.send(build(self.method_request(method))).await?;
        if r.headers().contains_key(HEARTBEAT_HEADER) {
            learn(Trait::Heartbeat, &self.url);
        }
        let takes_zstd = r
            .headers()
            .get(reqwest::header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|c| c.trim() == "zstd"));
        if takes_zstd {
            learn(Trait::TakesZstd, &self.url);
        }
        let status = r.status();
        let text = self.body_text(r).await?;
        let missing = status == reqwest::StatusCode::EXPECTATION_FAILED
            && method.starts_with(FRAPPE_14_MODULE)
            && !knows(Trait::FrappeV15, &self.url)
            && text.contains("Failed to get method for command");
        if !missing {
            return self.answer(what, status, text);
        }
        tracing::info!(site = %self.url, "no frappe.event_streaming module there: calling the event_streaming app (Frappe v15)");
        learn(Trait::FrappeV15, &self.url);
        let r = self.send(build(self.method_request(method))).await?;
        self.read_text(what, r).await
    }

    /// Sends one request to `/api/resource/{doctype}/{name}` and returns the answer's `data`.
    async fn resource(
        &self,
        method: reqwest::Method,
        doctype: &str,
        name: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value> {
        let mut url = format!("{}/api/resource/{}", self.url, percent(doctype));
        if !name.is_empty() {
            url = format!("{url}/{}", percent(name));
        }
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = self.send(req).await?;
        Ok(self
            .read(what, r)
            .await?
            .get("data")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Reads a document.
    pub async fn get_doc(&self, doctype: &str, name: &str) -> Result<Value> {
        self.resource(
            reqwest::Method::GET,
            doctype,
            name,
            None,
            &format!("{doctype} {name}"),
        )
        .await
    }

    /// Names of the documents matching `filters`, at most `limit`.
    pub async fn find_names(
        &self,
        doctype: &str,
        filters: &Value,
        limit: u32,
    ) -> Result<Vec<String>> {
        let rows = self
            .call(
                "frappe.client.get_list",
                &[
                    ("doctype", doctype.to_string()),
                    ("filters", filters.to_string()),
                    ("fields", r#"["name"]"#.to_string()),
                    ("limit_page_length", limit.to_string()),
                ],
            )
            .await?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("name"))
            .map(|n| match n {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect())
    }

    /// One page of a type's documents as (name, modified), in name order, through Frappe's
    /// `get_list` (what any Frappe site or docstream answers).
    pub async fn list_modified(
        &self,
        doctype: &str,
        start: usize,
        page: usize,
    ) -> Result<Vec<(String, String)>> {
        let rows = self
            .list_page(doctype, &["name", "modified"], &Value::Null, start, page)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (list_text(r.get("name")), list_text(r.get("modified"))))
            .collect())
    }

    /// One page of a type's documents, `fields` of each, in name order, through `get_list`.
    pub async fn list_page(
        &self,
        doctype: &str,
        fields: &[&str],
        filters: &Value,
        start: usize,
        page: usize,
    ) -> Result<Vec<Value>> {
        let mut args = vec![
            ("doctype", doctype.to_string()),
            ("fields", serde_json::json!(fields).to_string()),
            ("order_by", "name asc".to_string()),
            ("limit_start", start.to_string()),
            ("limit_page_length", page.to_string()),
        ];
        if !filters.is_null() {
            args.push(("filters", filters.to_string()));
        }
        let rows = self.call("frappe.client.get_list", &args).await?;
        Ok(rows.as_array().cloned().unwrap_or_default())
    }

    /// Downloads a file of the site (`/files/...` or `/private/files/...`) into `to`, at most
    /// `limit` bytes; returns its size and hex SHA-256.
    pub async fn download(
        &self,
        path: &str,
        to: &std::path::Path,
        limit: u64,
    ) -> Result<(u64, String)> {
        use sha2::{Digest, Sha256};
        use tokio::io::AsyncWriteExt;
        let mut r = self
            .send(
                self.http
                    .get(format!("{}{path}", self.url))
                    .header("authorization", &self.auth),
            )
            .await?;
        if !r.status().is_success() {
            return Err(Error::Validation(format!(
                "{} answered HTTP {} for the file {path}",
                self.url,
                r.status()
            )));
        }
        let mut out = tokio::fs::File::create(to)
            .await
            .map_err(|e| Error::Internal(format!("cannot spool {path}: {e}")))?;
        let (mut size, mut hash) = (0u64, Sha256::new());
        while let Some(chunk) = r.chunk().await.map_err(|e| self.unreachable(e))? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge(format!(
                    "the file {path} is larger than this site's max_file_bytes ({limit})"
                )));
            }
            hash.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::Internal(format!("cannot spool {path}: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::Internal(format!("cannot spool {path}: {e}")))?;
        Ok((size, crate::crypto::hex(&hash.finalize())))
    }

    /// A type's definition and its child types', as `getdoctype` answers: Frappe puts `docs`
    /// at the top of the answer, docstream before 0.2 under `message`; both are read.
    pub async fn definition(&self, doctype: &str) -> Result<Vec<Value>> {
        const METHOD: &str = "frappe.desk.form.load.getdoctype";
        let what = format!("definition of {doctype}");
        let text = self
            .send_method(METHOD, &what, |r| r.form(&[("doctype", doctype)]))
            .await?;
        let body = self.parse(&what, &text)?;
        let docs = body
            .get("docs")
            .or_else(|| body.get("message").and_then(|m| m.get("docs")))
            .and_then(Value::as_array)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Error::Validation(format!("{} answered {what} without its docs", self.url))
            })?;
        Ok(docs.clone())
    }

    /// The field names of a remote type (from its DocType), or None if it cannot be read.
    pub async fn field_names(&self, doctype: &str) -> Option<std::collections::HashSet<String>> {
        let dt = self.get_doc("DocType", doctype).await.ok()?;
        Some(
            dt.get("fields")?
                .as_array()?
                .iter()
                .filter_map(|f| f.get("fieldname")?.as_str().map(str::to_string))
                .collect(),
        )
    }

    /// Inserts a document; returns it as saved there.
    pub async fn insert_doc(&self, doctype: &str, doc: &Value) -> Result<Value> {
        self.resource(
            reqwest::Method::POST,
            doctype,
            "",
            Some(doc),
            &format!("insert of a {doctype}"),
        )
        .await
    }

    /// Updates a document (partial PUT).
    pub async fn update_doc(&self, doctype: &str, name: &str, doc: &Value) -> Result<Value> {
        self.resource(
            reqwest::Method::PUT,
            doctype,
            name,
            Some(doc),
            &format!("update of {doctype} {name}"),
        )
        .await
    }

    /// Deletes a document.
    pub async fn delete_doc(&self, doctype: &str, name: &str) -> Result<()> {
        self.resource(
            reqwest::Method::DELETE,
            doctype,
            name,
            None,
            &format!("delete of {doctype} {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Pulls a page of update logs after `after_seq` (docstream) or `last_update` (Frappe);
    /// with `wait`, a docstream producer holds the pull until a log comes or the time is up.
    pub async fn pull(&self, ask: &PullAsk<'_>) -> Result<LogPage> {
        let mut args = vec![
            ("event_consumer", ask.consumer_url.to_string()),
            ("doctypes", serde_json::to_string(ask.doctypes)?),
            ("limit", ask.limit.to_string()),
        ];
        if let Some(a) = ask.acked_seq {
            args.push(("acked_seq", a.to_string()));
        }
        match ask.after_seq {
            Some(s) => {
                args.push(("after_seq", s.to_string()));
                // Asked for: producers of earlier versions answer as they always did.
                args.push(("bound", "1".to_string()));
                if let Some(h) = ask.history {
                    args.push(("history", h.to_string()));
                }
            }
            None => args.push(("last_update", ask.last_update.to_string())),
        }
        const METHOD: &str = "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer";
        let mut this = std::borrow::Cow::Borrowed(self);
        if let Some(w) = ask.wait {
            args.push(("wait", format!("{:.3}", w.as_secs_f64())));
            // Asked for; an answer that says it sends them lets later polls give up a silent
            // line after ABANDON_AFTER instead of their whole wait.
            if ask.after_seq.is_some() && self.tunnel.is_none() {
                args.push(("heartbeat", "1".to_string()));
                if knows(Trait::Heartbeat, &self.url) {
                    this.to_mut().idle = Some(ABANDON_AFTER);
                }
            }
        }
        let body = this
            .send_method(METHOD, "a pull", |req| {
                let req = match ask.wait {
                    // The usual timeout would cut a long poll: it gets its wait and as long again.
                    Some(w) => req.timeout(w * 2 + Duration::from_secs(10)),
                    None => req,
                };
                req.form(&args)
            })
            .await?;
        // A docstream page is checked whole before anything of it is used.
        match ask.after_seq {
            Some(after) => {
                let after_text = after.to_string();
                let asked = super::page::Asked {
                    after_seq: after,
                    echo: Some(super::page::Echo {
                        after_seq: &after_text,
                        consumer: ask.consumer_url,
                        doctypes: &args[1].1,
                    }),
                    must_bind: ask.must_bind,
                };
                super::page::decode(&self.url, &body, &asked)
            }
            None => super::page::decode_frappe(&self.url, &body),
        }
    }
}

/// The header a producer's pull answer carries when it sends heartbeats while it waits.
pub const HEARTBEAT_HEADER: &str = "x-docstream-heartbeat";

/// Where Frappe 14 keeps event streaming's methods, and where Frappe v15's app does.
const FRAPPE_14_MODULE: &str = "frappe.event_streaming.";
const FRAPPE_15_APP: &str = "event_streaming.event_streaming.";

fn short_reqwest(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

/// A listed value as text (names may be numbers; empty for null).
pub fn list_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
