//! Files that travel with their documents: an Attach field holding one of the producer's
//! `/files/...` or `/private/files/...` URLs brings that file along. Files are downloaded (and
//! checked against the producer's content hash) before the page's transaction, like missing
//! dependencies, and stored as Files of the local document inside it, with the same URL.
//! Must not download inside the page's transaction, which must not wait on the network.

use super::{Incoming, Known, ProducerInfo, SubscribedType};
use crate::error::{Error, Result};
use crate::meta::Registry;
use crate::service::files::{file_exists, Spool, Upload};
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
        .filter(|f| f.fieldtype.is_attach())
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

/// The files a page's documents attach, as fetched before its transaction.
#[derive(Debug, Default)]
pub struct Attached {
    /// Downloaded files (or why they could not be), by URL.
    fetched: HashMap<String, Result<Fetched>>,
    /// Private files not fetched for one document, by (URL, producer's document name): why.
    refused: HashMap<(String, String), String>,
}

/// Downloads the files a page's documents attach that this site lacks. A file that cannot be
/// had is left out: the update that needs it then fails with the reason (see [`store_files`]).
///
/// A Frappe producer attaches any private URL saved in an Attach field, whoever saved it, so
/// a private file from one is fetched only when every File there with that URL is owned by
/// the document's owner or its last modifier. A docstream producer refuses to save a URL its
/// writer may not read, so its attached files are fetched as they are.
pub async fn prefetch_files(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
) -> Attached {
    let mut wanted: HashMap<String, Vec<&Incoming>> = HashMap::new();
    for inc in logs {
        if let Some(sub) = info.for_remote(&inc.remote_type) {
            for url in urls(reg, sub, inc) {
                wanted.entry(url.to_string()).or_default().push(inc);
            }
        }
    }
    let mut out = Attached::default();
    if wanted.is_empty() {
        return out;
    }
    let all: HashSet<String> = wanted.keys().cloned().collect();
    let here = present_here(site, &all).await.unwrap_or_default();
    for (url, incs) in wanted {
        if here.contains(&url) {
            continue;
        }
        let mut allowed = 0;
        for inc in &incs {
            let checked = if url.starts_with("/private/") && inc.seq().is_none() {
                owned_by_writer(remote, &url, inc).await
            } else {
                Ok(())
            };
            match checked {
                Ok(()) => allowed += 1,
                Err(why) => {
                    out.refused.insert((url.clone(), inc.docname.clone()), why);
                }
            }
        }
        if allowed > 0 {
            let got = fetch_one(site, remote, &url).await;
            out.fetched.insert(url, got);
        }
    }
    out
}

/// For a private file named by a Frappe producer's document: every File there with that URL
/// must be owned by the document's owner or its last modifier; else the reason it is not.
async fn owned_by_writer(
    remote: &RemoteSite,
    url: &str,
    inc: &Incoming,
) -> std::result::Result<(), String> {
    let owners = async {
        let rows = remote
            .call(
                "frappe.client.get_list",
                &[
                    ("doctype", "File".to_string()),
                    ("filters", json!([["file_url", "=", url]]).to_string()),
                    ("fields", r#"["owner"]"#.to_string()),
                    ("limit_page_length", "0".to_string()),
                ],
            )
            .await?;
        let doc = remote.get_doc(&inc.remote_type, &inc.docname).await?;
        Ok::<_, Error>((rows, doc))
    };
    let (rows, doc) = owners.await.map_err(|e| {
        format!(
            "the private file {url} was not fetched: who owns it on {} could not be read ({})",
            remote.url,
            e.message()
        )
    })?;
    let writers: HashSet<String> = ["owner", "modified_by"]
        .iter()
        .filter_map(|k| doc.get(*k).and_then(Value::as_str).map(str::to_string))
        .collect();
    let foreign: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("owner").and_then(Value::as_str))
        .filter(|o| !writers.contains(*o))
        .map(str::to_string)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the private file {url} was not fetched: on {} it belongs to {} as well, not only to the document's owner or last modifier, so the document may name a file its writer could not read",
        remote.url,
        foreign.join(", ")
    ))
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
    let file_name = match text("file_name") {
        n if n.is_empty() => url.rsplit('/').next().unwrap_or("file").to_string(),
        n => n,
    };
    Ok(Fetched {
        upload: Upload {
            file_name,
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
pub(super) async fn store_files(
    a: &super::Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    local: &str,
    known: &mut Known,
) -> Result<()> {
    for url in urls(a.reg, sub, inc) {
        if file_exists(conn, url).await? {
            continue;
        }
        if let Some(why) = known
            .files
            .refused
            .get(&(url.to_string(), inc.docname.clone()))
        {
            return Err(Error::Permission(why.clone()));
        }
        let fetched = match known.files.fetched.get_mut(url) {
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
        a.site
            .save_file_in(conn, a.reg, a.caller, &name, url, &fetched.upload)
            .await?;
    }
    Ok(())
}
