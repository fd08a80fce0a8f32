//! `/api/resource/{doctype}[/{name}]`: list, insert, get, update, delete.

use super::envelope::{data, json_response, ApiError};
use super::{decode, Args, Ctx};
use crate::error::Error;
use crate::service::documents::WriteFlags;
use crate::store::{Filter, ListQuery};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// Builds a list query from Frappe's list arguments.
pub fn list_query(args: &Args) -> Result<ListQuery, Error> {
    let fields = match args
        .json("fields")
        .or_else(|_| Ok::<_, Error>(args.str("fields").map(Value::String)))?
    {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::BadRequest("fields must be a list of field names".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s.split(',').map(|f| f.trim().to_string()).collect(),
        Some(_) => {
            return Err(Error::BadRequest(
                "fields must be a JSON list of field names".into(),
            ))
        }
    };
    let filters = Filter::parse_many(&args.json("filters")?.unwrap_or(Value::Null))?;
    let or_filters = Filter::parse_many(&args.json("or_filters")?.unwrap_or(Value::Null))?;
    let page_length = match args.uint("limit_page_length")? {
        Some(n) => n,
        None => args
            .uint("limit")?
            .or(args.uint("page_length")?)
            .unwrap_or(20),
    };
    Ok(ListQuery {
        fields,
        filters,
        or_filters,
        order_by: args.str("order_by").unwrap_or_default(),
        group_by: args.str("group_by").unwrap_or_default(),
        distinct: matches!(
            args.str("distinct")
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("1" | "true")
        ),
        start: args
            .uint("limit_start")?
            .or(args.uint("start")?)
            .unwrap_or(0),
        page_length,
    })
}

pub async fn handle(ctx: &Ctx, rest: &str) -> Result<Response, ApiError> {
    let (doctype, name) = match rest.split_once('/') {
        Some((d, n)) => (decode(d), Some(decode(n))),
        None => (decode(rest), None),
    };
    let site = &ctx.site;
    let caller = &ctx.auth.caller;
    let flags = WriteFlags::default();
    match (&ctx.method, name) {
        (&Method::GET, None) => {
            let rows = site
                .list_docs(caller, &doctype, &list_query(&ctx.args)?)
                .await?;
            Ok(data(Value::Array(
                rows.into_iter().map(Value::Object).collect(),
            )))
        }
        (&Method::POST, None) => {
            let doc = site
                .insert_doc(caller, &doctype, ctx.args.document()?, &flags)
                .await?;
            Ok(data(Value::Object(doc)))
        }
        (&Method::GET, Some(name)) => Ok(data(Value::Object(
            site.get_doc(caller, &doctype, &name).await?,
        ))),
        (&Method::PUT, Some(name)) => {
            let doc = site
                .update_doc(caller, &doctype, &name, ctx.args.document()?, &flags)
                .await?;
            Ok(data(Value::Object(doc)))
        }
        (&Method::DELETE, Some(name)) => {
            site.delete_doc(caller, &doctype, &name, &flags).await?;
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"message": "ok"}),
            ))
        }
        (m, _) => {
            Err(Error::NoSuchMethod(format!("{m} is not supported on /api/resource/{rest}")).into())
        }
    }
}
