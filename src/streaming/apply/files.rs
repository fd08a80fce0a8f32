//! Files that travel with their documents: an Attach field holding one of the producer's
//! `/files/...` or `/private/files/...` URLs brings that file along. Files are downloaded (and
//! checked against the producer's content hash) before the page's transaction, like missing
//! dependencies, and stored as Files of the local document inside it, with the same URL.

use super::{Incoming, Known, ProducerInfo, SubscribedType};
use crate::error::{Error, Result};
use crate::meta::{FieldType, Registry};
use crate::service::files::{file_exists, Spool, Upload};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::Conn;
use crate::streaming::remote::RemoteSite;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// A file downloaded from the producer, waiting in its spool file (removed with it).
#[derive(Debug)]
pub struct Fetched {
    pub upload: Upload,
    _spool: Spool,
}

fn is_file_url(v: &str) -> bool {
    v.starts_with("/files/") || v.starts_with("/private/files/")
}

/// The file URLs in Attach fields of an update of a type subscribed as it is.
fn urls<'a>(reg: &Registry, sub: &SubscribedType, inc: &'a Incoming) -> Vec<&'a str> {
    if sub.mapping.is_some() {
        return vec![];
    }
    let Ok(dt) = reg.get(&sub.local_type) else {
        return vec![];
    };
    let doc = match inc.update_type.as_str() {
        "Create" => inc.data.as_object(),
        "Update" => inc.data.get("changed").and_then(Value::as_object),
        _ => None,
    };
    let Some(doc) = doc else { return vec![] };
    dt.fields
        .iter()
        .filter(|f| f.fieldtype == FieldType::Attach)
        .filter_map(|f| doc.get(&f.fieldname)?.as_str())
        .filter(|v| is_file_url(v))
        .collect()
}

async fn present_here(site: &Site, urls: &HashSet<String>) -> Result<HashSet<String>> {
    let mut conn = site.store.conn().await?;
    let mut here = HashSet::new();
    for u in urls {
        if file_exists(&mut conn, u).await? {
            here.insert(u.clone());
        }
    }
    Ok(here)
}

/// Downloads the files a page's documents attach that this site lacks. A file that cannot be
/// had is left out: the update that needs it then fails with the reason (see [`store_files`]).
pub async fn prefetch_files(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
) -> HashMap<String, Result<Fetched>> {
    let mut wanted = HashSet::new();
    for inc in logs {
        if let Some(sub) = info.for_remote(&inc.remote_type) {
            wanted.extend(urls(reg, sub, inc).into_iter().map(str::to_string));
        }
    }
    if wanted.is_empty() {
        return HashMap::new();
    }
    let here = present_here(site, &wanted).await.unwrap_or_default();
    let mut out = HashMap::new();
    for url in wanted.difference(&here) {
        out.insert(url.clone(), fetch_one(site, remote, url).await);
    }
    out
}

async fn fetch_one(site: &Site, remote: &RemoteSite, url: &str) -> Result<Fetched> {
    let rows = remote
        .call(
            "frappe.client.get_list",
            &[
                ("doctype", "File".to_string()),
                ("filters", json!([["file_url", "=", url]]).to_string()),
                (
                    "fields",
                    r#"["file_name", "is_private", "content_hash"]"#.to_string(),
                ),
                ("limit_page_length", "1".to_string()),
            ],
        )
        .await?;
    let meta = rows
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .ok_or_else(|| Error::DoesNotExist(format!("{} has no File at {url}", remote.url)))?;
    let text = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let spool = site.new_spool().await?;
    let (size, hash) = remote
        .download(url, &spool.0, site.config.max_file_bytes)
        .await?;
    let claimed = text("content_hash");
    if !claimed.is_empty() && claimed != hash {
        return Err(Error::Validation(format!(
            "the file {url} from {} does not match its content hash",
            remote.url
        )));
    }
    Ok(Fetched {
        upload: Upload {
            file_name: text("file_name"),
            spool: spool.0.clone(),
            size,
            content_hash: hash,
            is_private: url.starts_with("/private/"),
            folder: None,
            attached_to: None,
            attached_to_field: None,
        },
        _spool: spool,
    })
}

/// Stores, inside the update's transaction, the files the applied document `local` attaches
/// and this site lacks.
#[allow(clippy::too_many_arguments)]
pub async fn store_files(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    sub: &SubscribedType,
    caller: &Caller,
    inc: &Incoming,
    local: &str,
    known: &mut Known,
) -> Result<()> {
    for url in urls(reg, sub, inc) {
        if file_exists(conn, url).await? {
            continue;
        }
        let fetched = match known.files.get_mut(url) {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                return Err(Error::Validation(format!(
                    "the attached file {url} could not be fetched: {}",
                    e.message()
                )))
            }
            None => {
                return Err(Error::Validation(format!(
                    "the attached file {url} was not fetched"
                )))
            }
        };
        fetched.upload.attached_to = Some((sub.local_type.clone(), local.to_string()));
        let name = fetched.upload.file_name.clone();
        site.save_file_in(conn, reg, caller, &name, url, &fetched.upload)
            .await?;
    }
    Ok(())
}
