//! `/api/method/{dotted.path}` and `POST /` with `cmd`: Frappe's whitelisted methods.

use super::args::Args;
use super::envelope::{message, ApiError};
use super::resource::list_query;
use super::Ctx;
use crate::error::Error;
use crate::service::documents::{name_text, WriteFlags};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{Doc, Filter, ListQuery};
use crate::streaming::Streaming;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

fn doc_arg(ctx: &Ctx, key: &str) -> Result<Doc, Error> {
    ctx.args
        .object(key)?
        .ok_or_else(|| Error::Validation(format!("Argument \"{key}\" is required (a JSON object)")))
}

fn doctype_of(doc: &Doc) -> Result<String, Error> {
    doc.get("doctype")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Validation("The document needs a \"doctype\"".into()))
}

/// True for methods that only read: a cookie session may call these with GET. Every other
/// method changes something and needs POST from a browser session.
pub fn reads_only(method: &str) -> bool {
    matches!(
        method,
        "login"
            | "logout"
            | "frappe.ping"
            | "ping"
            | "frappe.auth.get_logged_user"
            | "frappe.client.get_list"
            | "frappe.client.get_count"
            | "frappe.client.get"
            | "frappe.client.get_value"
            | "frappe.client.get_single_value"
            | "frappe.desk.reportview.get_count"
            | "frappe.desk.form.load.getdoctype"
            | "frappe.desk.search.search_link"
            | "docstream.desk.streaming_dashboard"
    )
}

/// Runs a method by its dotted name.
pub async fn call(ctx: &Ctx, method: &str) -> Result<Response, ApiError> {
    let site = &ctx.site;
    let caller = &ctx.auth.caller;
    let args = &ctx.args;
    let flags = WriteFlags::default();
    // Frappe v15 moved event streaming to its own app; both names answer.
    let method = match method.strip_prefix("event_streaming.event_streaming.") {
        Some(rest) => format!("frappe.event_streaming.{rest}"),
        None => method.to_string(),
    };
    let result: Value = match method.as_str() {
        "login" => return login(ctx).await,
        "logout" => {
            if let Some(sid) = super::cookie(&ctx.headers, "sid") {
                site.logout(&sid).await?;
            }
            let mut r = message(json!("Logged Out"));
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static("sid=Guest; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
            );
            // The cookies login set for the desk go too, as in Frappe.
            for c in ["user_id", "full_name", "system_user", "user_image"] {
                if let Ok(v) = HeaderValue::from_str(&format!("{c}=; Path=/; SameSite=Lax; Max-Age=0")) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            return Ok(r);
        }
        // Frappe answers `ping` (frappe.handler's) as it answers `frappe.ping`.
        "frappe.ping" | "ping" => json!("pong"),
        _ if caller.is_guest() => {
            return Err(Error::Permission(
                "Not permitted: log in, or send an Authorization header".into(),
            )
            .into());
        }
        "frappe.auth.get_logged_user" => json!(caller.user),
        "frappe.client.get_list" => {
            let q = list_query(args)?;
            let rows = site
                .list_docs(caller, &args.required("doctype")?, &q)
                .await?;
            Value::Array(rows.into_iter().map(Value::Object).collect())
        }
        // Counts are of documents: child-table filters select parents without repeating
        // them, so `distinct` (reportview's flag) counts the same.
        "frappe.client.get_count" | "frappe.desk.reportview.get_count" => {
            let q = ListQuery {
                filters: Filter::parse_many(&args.json("filters")?.unwrap_or(Value::Null))?,
                or_filters: Filter::parse_many(&args.json("or_filters")?.unwrap_or(Value::Null))?,
                ..Default::default()
            };
            json!(
                site.count_docs(caller, &args.required("doctype")?, &q)
                    .await?
            )
        }
        "frappe.client.get" => {
            let doctype = args.required("doctype")?;
            let single = site.meta().get(&doctype)?.issingle;
            let name = match args.str("name").filter(|n| !n.is_empty()) {
                Some(n) => n,
                None if single => doctype.clone(),
                None => first_name(ctx, &doctype).await?,
            };
            Value::Object(site.get_doc(caller, &doctype, &name).await?)
        }
        "frappe.client.get_value" => {
            let doctype = args.required("doctype")?;
            let fields: Vec<String> = match args
                .json("fieldname")
                .or_else(|_| Ok::<_, Error>(args.str("fieldname").map(Value::String)))?
            {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Some(Value::String(s)) => vec![s],
                _ => vec!["name".into()],
            };
            let filters = match args
                .json("filters")
                .or_else(|_| Ok::<_, Error>(args.str("filters").map(Value::String)))?
            {
                Some(Value::String(name)) => vec![Filter {
                    doctype: None,
                    field: "name".into(),
                    op: crate::store::Op::Eq,
                    value: Value::String(name),
                }],
                Some(v) => Filter::parse_many(&v)?,
                None => vec![],
            };
            if site.meta().get(&doctype)?.issingle {
                // A single's values, as Frappe reads them from Singles.
                let doc = site.get_doc(caller, &doctype, &doctype).await?;
                let picked: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|f| (f.clone(), doc.get(f).cloned().unwrap_or(Value::Null)))
                    .collect();
                return Ok(message(Value::Object(picked)));
            }
            let q = ListQuery {
                fields: fields.clone(),
                filters,
                page_length: 1,
                ..Default::default()
            };
            let rows = site.list_docs(caller, &doctype, &q).await?;
            match rows.into_iter().next() {
                Some(r) => Value::Object(r),
                None => json!({}),
            }
        }
        "frappe.client.get_single_value" => {
            let doctype = args.required("doctype")?;
            let field = args.required("field")?;
            let doc = site.get_doc(caller, &doctype, &doctype).await?;
            let fieldtype = site
                .meta()
                .get(&doctype)?
                .field(&field)
                .map(|f| f.fieldtype);
            match doc.get(&field) {
                Some(v) => single_value_as_frappe(fieldtype, v.clone()),
                None => {
                    return Err(Error::Validation(format!(
                        "{doctype} has no field {field:?}"
                    ))
                    .into())
                }
            }
        }
        "frappe.client.set_value" => {
            let doctype = args.required("doctype")?;
            let name = args.required("name")?;
            let patch = match args
                .json("fieldname")
                .or_else(|_| Ok::<_, Error>(args.str("fieldname").map(Value::String)))?
            {
                Some(Value::Object(m)) => m,
                Some(Value::String(f)) => {
                    if f.trim_start().starts_with('{') {
                        return Err(Error::Validation(format!(
                            "Argument \"fieldname\" is neither a field name nor a valid JSON object: {}",
                            f.chars().take(80).collect::<String>()
                        ))
                        .into());
                    }
                    super::args::refuse_nul(&f)?;
                    let dt = site.meta().get(&doctype)?;
                    if dt.field(&f).is_none() && !dt.has_column(&f) {
                        return Err(Error::Validation(format!(
                            "{doctype} has no field {f:?}: set_value takes a field name of the type, or a JSON object of them"
                        ))
                        .into());
                    }
                    let mut m = Doc::new();
                    m.insert(f, args.map.get("value").cloned().unwrap_or(Value::Null));
                    m
                }
                _ => {
                    return Err(
                        Error::Validation("Argument \"fieldname\" is required".into()).into(),
                    )
                }
            };
            Value::Object(
                site.update_doc(caller, &doctype, &name, patch, &flags)
                    .await?,
            )
        }
        "frappe.client.insert" => {
            let doc = doc_arg(ctx, "doc")?;
            let doctype = doctype_of(&doc)?;
            Value::Object(site.insert_doc(caller, &doctype, doc, &flags).await?)
        }
        "frappe.client.insert_many" => {
            let docs = match args.json("docs")? {
                Some(Value::Array(a)) => a,
                _ => {
                    return Err(Error::Validation(
                        "Argument \"docs\" must be a JSON list of documents".into(),
                    )
                    .into())
                }
            };
            let mut inputs = Vec::with_capacity(docs.len());
            for d in docs {
                let Value::Object(doc) = d else {
                    return Err(Error::Validation("Each document must be an object".into()).into());
                };
                inputs.push((doctype_of(&doc)?, doc));
            }
            let names: Vec<Value> = site
                .insert_docs(caller, inputs, &flags)
                .await?
                .into_iter()
                .map(|d| d.get("name").cloned().unwrap_or(Value::Null))
                .collect();
            Value::Array(names)
        }
        "frappe.client.save" => {
            let doc = doc_arg(ctx, "doc")?;
            let doctype = doctype_of(&doc)?;
            let name = doc
                .get("name")
                .map(name_text)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    Error::Validation("The document needs a \"name\" to be saved".into())
                })?;
            Value::Object(
                site.update_doc(caller, &doctype, &name, doc, &flags)
                    .await?,
            )
        }
        "frappe.client.delete" => {
            site.delete_doc(
                caller,
                &args.required("doctype")?,
                &args.required("name")?,
                &flags,
            )
            .await?;
            Value::Null
        }
        "frappe.client.submit" => {
            let doc = doc_arg(ctx, "doc")?;
            let doctype = doctype_of(&doc)?;
            let name = doc.get("name").map(name_text).unwrap_or_default();
            let mut patch = doc.clone();
            patch.insert("docstatus".into(), json!(1));
            Value::Object(
                site.update_doc(caller, &doctype, &name, patch, &flags)
                    .await?,
            )
        }
        "frappe.client.cancel" => Value::Object(
            site.set_docstatus(
                caller,
                &args.required("doctype")?,
                &args.required("name")?,
                2,
            )
            .await?,
        ),
        "frappe.client.rename_doc" => {
            let doctype = args.required("doctype")?;
            let old = args
                .str("old_name")
                .or(args.str("old"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::Validation("Argument \"old_name\" is required".into()))?;
            let new = args
                .str("new_name")
                .or(args.str("new"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::Validation("Argument \"new_name\" is required".into()))?;
            json!(
                site.rename_doc(caller, &doctype, &old, &new, &flags)
                    .await?
            )
        }
        "frappe.client.get_password" => {
            json!(
                site.get_password(
                    caller,
                    &args.required("doctype")?,
                    &args.required("name")?,
                    &args.str("fieldname").unwrap_or_else(|| "password".into())
                )
                .await?
            )
        }
        "frappe.core.doctype.user.user.generate_keys" => {
            let user = args
                .str("user")
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| caller.user.clone());
            let (_key, secret) = site.generate_keys(caller, &user).await?;
            json!({ "api_secret": secret })
        }
        "frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer" => {
            let data = args.map.get("data").cloned().ok_or_else(|| Error::Validation("Argument \"data\" is required".into()))?;
            json!(crate::streaming::producer::register_consumer(site, caller, &data).await?)
        }
        "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer" => {
            // A long poll may wait past a heartbeat: it then runs in a task of its own.
            let asked = args.str("heartbeat").as_deref().map(str::trim) == Some("1");
            let (site, caller, args) = (site.clone(), caller.clone(), args.clone());
            let answer = async move {
                pull(&site, &caller, &args)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            };
            // Heartbeats are asked for: a consumer of an earlier version gets what it got.
            if !asked {
                return Ok(answer.await);
            }
            let coding = super::encoding::Coding::preferred(&ctx.headers);
            let mut r = super::encoding::with_heartbeat(answer, coding).await;
            let secs = super::encoding::HEARTBEAT.as_secs();
            r.headers_mut().insert(
                crate::streaming::remote::HEARTBEAT_HEADER,
                HeaderValue::from(secs),
            );
            return Ok(r);
        }
        "docstream.tunnel.poll" => {
            let wait = match args.str("wait").map(|w| w.trim().to_string()) {
                None => None,
                Some(w) if w.is_empty() => None,
                Some(w) => Some(w.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).ok_or_else(|| {
                    Error::BadRequest(format!("wait must be a number of seconds (0 or more), not {w:?}"))
                })?),
            };
            let received = args.uint("received")?;
            crate::streaming::tunnel::poll(
                site,
                caller,
                &args.required("producer_url")?,
                wait,
                received,
            )
            .await?
        }
        "docstream.tunnel.reply" => {
            let replies = args.json("replies")?.unwrap_or(Value::Null);
            crate::streaming::tunnel::reply(site, caller, &args.required("producer_url")?, replies)
                .await?;
            json!({})
        }
        "frappe.event_streaming.doctype.event_producer.event_producer.new_event_notification" => {
            site.streaming().pull_wakeup.notify_one();
            Value::Null
        }
        "frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node" => {
            json!(crate::streaming::consumer::pull_from_node(site, caller, &args.required("event_producer")?).await?)
        }
        "frappe.event_streaming.doctype.event_producer.event_producer.resync" => {
            if !caller.is_system_manager() {
                return Err(Error::Permission("Only a System Manager may resync".into()).into());
            }
            let name = match args.json("update").unwrap_or(None) {
                Some(Value::Object(m)) => m.get("name").map(name_text).unwrap_or_default(),
                _ => args.required("update")?,
            };
            json!(crate::streaming::apply::resync(site, &name).await?)
        }
        "docstream.streaming.verify_digests" => {
            let fields = args.json("fields")?.unwrap_or(Value::Null);
            let fields = serde_json::from_value(fields).map_err(|e| {
                Error::BadRequest(format!("fields must map field names to null or to a list of child fields: {e}"))
            })?;
            let buckets = match args.json("buckets")? {
                None | Some(Value::Null) => None,
                Some(b) => Some(serde_json::from_value(b).map_err(|e| {
                    Error::BadRequest(format!("buckets must be a list of bucket ids: {e}"))
                })?),
            };
            let as_of = args.uint("as_of")?.ok_or_else(|| {
                Error::BadRequest("as_of (the consumer's checkpoint) is required".into())
            })?;
            let ask = crate::streaming::verify::Ask {
                consumer: args.required("event_consumer")?,
                doctype: args.required("doctype")?,
                fields,
                as_of: as_of as i64,
                buckets,
            };
            crate::streaming::verify::answer(site, caller, &ask).await?
        }
        "docstream.streaming.condition_failures" => {
            json!(crate::streaming::producer::condition_failures(site, caller, &args.required("event_consumer")?).await?)
        }
        "docstream.streaming.verify" => {
            if !caller.is_system_manager() {
                return Err(Error::Permission("Only a System Manager may verify".into()).into());
            }
            let yes = |k: &str| matches!(args.str(k).as_deref(), Some("1" | "true" | "True"));
            let how = crate::streaming::verify::How {
                repair: yes("repair"),
                deep: yes("deep"),
            };
            let producer = args.required("event_producer")?;
            json!(crate::streaming::verify::verify(site, &producer, how).await?)
        }
        "docstream.streaming.verify_consumer" => {
            if !caller.is_system_manager() {
                return Err(Error::Permission("Only a System Manager may verify".into()).into());
            }
            let deep = matches!(args.str("deep").as_deref(), Some("1" | "true" | "True"));
            let consumer = args.required("event_consumer")?;
            json!(crate::streaming::verify_consumer::verify_consumer(site, &consumer, deep).await?)
        }
        "docstream.streaming.resolve_conflict" => {
            if !caller.is_system_manager() {
                return Err(
                    Error::Permission("Only a System Manager may resolve a conflict".into()).into(),
                );
            }
            let keep = crate::streaming::apply::Keep::parse(&args.required("keep")?)?;
            let name = args.required("sync_log")?;
            json!(crate::streaming::apply::resolve_conflict(site, &caller.user, &name, keep).await?)
        }
        "frappe.desk.form.load.getdoctype" => {
            // Frappe puts the bundle at the top of the answer (`frappe.response.docs`), not
            // under `message`.
            let bundle = super::desk_methods::getdoctype(site, caller, &args.required("doctype")?)?;
            return Ok(super::envelope::json_response(
                axum::http::StatusCode::OK,
                &bundle,
            ));
        }
        "frappe.desk.search.search_link" => {
            super::desk_methods::search_link(
                site,
                caller,
                &args.required("doctype")?,
                &args.str("txt").unwrap_or_default(),
                args.uint("page_length")?.unwrap_or(10),
            )
            .await?
        }
        "docstream.desk.streaming_dashboard" => {
            super::desk_methods::streaming_dashboard(site, caller).await?
        }
        other => return Err(Error::NoSuchMethod(format!("Method {other} not found")).into()),
    };
    Ok(message(result))
}

/// A single's value as Frappe's `get_single_value` casts it: unset numbers are 0, unset text
/// (Data, Link, Select and the text types) is "" (Frappe answers `{"message": ""}`, never `{}`).
fn single_value_as_frappe(fieldtype: Option<crate::meta::FieldType>, v: Value) -> Value {
    use crate::meta::{FieldType, Storage};
    let Some(ft) = fieldtype else { return v };
    if !v.is_null() {
        return v;
    }
    match ft.storage() {
        Storage::Int => json!(0),
        Storage::Float => json!(0.0),
        Storage::Text
            if !matches!(
                ft,
                FieldType::Date | FieldType::Datetime | FieldType::Time | FieldType::Json
            ) =>
        {
            json!("")
        }
        _ => v,
    }
}

async fn first_name(ctx: &Ctx, doctype: &str) -> Result<String, Error> {
    let q = ListQuery {
        filters: Filter::parse_many(&ctx.args.json("filters")?.unwrap_or(Value::Null))?,
        page_length: 1,
        ..Default::default()
    };
    let rows = ctx.site.list_docs(&ctx.auth.caller, doctype, &q).await?;
    rows.first()
        .and_then(|r| r.get("name"))
        .map(name_text)
        .ok_or_else(|| Error::DoesNotExist(format!("No {doctype} matches the filters")))
}

async fn login(ctx: &Ctx) -> Result<Response, ApiError> {
    let usr = ctx.args.required("usr")?;
    let pwd = ctx.args.str("pwd").unwrap_or_default();
    let desk = ctx.args.str("device").as_deref() == Some("desk");
    let (sid, full_name, csrf) = match ctx.site.login(&usr, &pwd, &ctx.peer, desk).await {
        Ok(s) => s,
        // Frappe's clients show `message` of a failed login.
        Err(e @ Error::Authentication(_)) => {
            let mut body = super::envelope::error_body(&e);
            body["message"] = json!(e.message());
            return Ok(super::envelope::json_response(
                axum::http::StatusCode::UNAUTHORIZED,
                &body,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = json!({"message": "Logged In", "home_page": "/app", "full_name": full_name});
    if let Some(t) = csrf {
        body["csrf_token"] = json!(t);
    }
    let mut r = super::envelope::json_response(axum::http::StatusCode::OK, &body);
    let cookie = format!(
        "sid={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        ctx.site.config.session_expiry_hours * 3600
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| Error::Internal("bad cookie".into()))?,
    );
    for (k, v) in [
        ("user_id", usr.as_str()),
        ("full_name", full_name.as_str()),
        ("system_user", "yes"),
    ] {
        let enc = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        if let Ok(h) = HeaderValue::from_str(&format!("{k}={enc}; Path=/; SameSite=Lax")) {
            r.headers_mut().append(header::SET_COOKIE, h);
        }
    }
    Ok(r)
}

/// A pull of update logs (`get_update_logs_for_consumer`), docstream's page or Frappe's list.
async fn pull(site: &Site, caller: &Caller, args: &Args) -> Result<Response, ApiError> {
    let pulled = crate::streaming::producer::get_update_logs(
        site,
        caller,
        args.required("event_consumer")?.trim_end_matches('/'),
        crate::streaming::producer::PullArgs {
            doctypes: args.map.get("doctypes").unwrap_or(&Value::Null),
            after_seq: args.map.get("after_seq"),
            last_update: args.str("last_update").as_deref(),
            limit: args.uint("limit")?,
            acked_seq: args.uint("acked_seq")?,
            wait: args.str("wait").as_deref(),
            bound: matches!(
                args.str("bound").as_deref().map(str::trim),
                Some("1" | "true")
            ),
            consumer_text: &args.str("event_consumer").unwrap_or_default(),
            history: args.str("history").as_deref(),
        },
    )
    .await?;
    let mut r = match pulled.page {
        Some(body) => super::envelope::raw_json(body.to_string()),
        None => message(Value::Array(pulled.logs)),
    };
    let h = r.headers_mut();
    h.insert("x-docstream-last-seq", HeaderValue::from(pulled.last_seq));
    if pulled.has_more {
        h.insert("x-docstream-has-more", HeaderValue::from_static("1"));
    }
    Ok(r)
}
