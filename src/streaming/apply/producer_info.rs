//! What the consumer knows of one producer while applying: its subscribed types (with their
//! mappings) and client, cached while the Event Producer's stamp holds; and the checkpoint.
//! Must not call the producer: it reads this site's Event Producer.

use super::*;

/// One subscribed type of an Event Producer.
#[derive(Debug, Clone)]
pub struct SubscribedType {
    pub local_type: String,
    pub remote_type: String,
    pub use_same_name: bool,
    pub unsubscribed: bool,
    /// The producer's version always wins over this site's edits (still recorded).
    pub producer_wins: bool,
    /// The Document Type Mapping that turns remote documents into local ones.
    pub mapping: Option<crate::streaming::mapping::Mapping>,
}

/// What the consumer knows of one producer while applying.
#[derive(Debug, Clone)]
pub struct ProducerInfo {
    pub url: String,
    pub user: String,
    pub types: Vec<SubscribedType>,
    /// The client with the stored keys, made at the first pull that needs it: the keys and
    /// the connection mode are the Event Producer's fields, so its stamp covers them.
    remote: tokio::sync::OnceCell<RemoteSite>,
    /// The stamp it was read at (see [`PRODUCER_STAMP`]; empty when read without one): a page
    /// applied under it checks, in its transaction, that the producer has not changed since.
    pub(super) stamp: Vec<Value>,
    /// The producer has sent pages bound to their request: an unbound one is refused.
    pub binds: bool,
    /// Per local type, the fields held here as text that the producer's definition makes
    /// Links, with their targets: read once per type (see `dependencies::producer_links`).
    pub(super) text_links: std::sync::Arc<tokio::sync::Mutex<TextLinks>>,
}

/// Local type -> `(field, linked type)` pairs (see [`ProducerInfo::text_links`]).
pub(super) type TextLinks =
    std::collections::HashMap<String, std::sync::Arc<Vec<(String, String)>>>;

/// What [`ProducerInfo::current`] compares to know that a producer it read is unchanged (the
/// first four columns): its Event Producer's `modified`, the newest `modified` and number of
/// Document Type Mappings (every save, of the rows too, moves its parent's `modified`) and
/// whether it binds its pages; then the checkpoint, which every pull needs too (one read where
/// it was two).
const PRODUCER_STAMP: &str = r#"SELECT (SELECT modified FROM "tabEvent Producer" WHERE name = $1),
    (SELECT MAX(modified) FROM "tabDocument Type Mapping"),
    (SELECT COUNT(*) FROM "tabDocument Type Mapping"),
    (SELECT value FROM "__settings" WHERE key = $2),
    (SELECT COUNT(*) FROM "tabEvent Producer Last Update" WHERE name = $1),
    (SELECT last_seq FROM "tabEvent Producer Last Update" WHERE name = $1),
    (SELECT last_update FROM "tabEvent Producer Last Update" WHERE name = $1)"#;
/// The columns of [`PRODUCER_STAMP`] that are the stamp.
const STAMP_COLUMNS: usize = 4;

/// The internal setting that says a producer binds its pages (see `streaming::page`).
pub(super) fn binds_key(url: &str) -> String {
    format!("bound_pages:{url}")
}

/// A consumer's checkpoint with a producer: `last_seq` (docstream producers) and `last_update`.
pub type Checkpoint = (Option<i64>, String);

/// The checkpoint, or the error of a producer that has none.
pub fn stored_checkpoint(checkpoint: Option<Checkpoint>, url: &str) -> Result<Checkpoint> {
    checkpoint.ok_or_else(|| Error::DoesNotExist(format!("no checkpoint for producer {url}")))
}

/// Producers as pulls last read them (with the stamp they were read at), by URL.
#[derive(Debug, Default)]
pub struct ProducerInfos(
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<ProducerInfo>>>,
);

/// A producer's stamp and checkpoint, read in one statement on `conn`.
pub(super) async fn read_stamp(
    conn: &mut Conn,
    url: &str,
) -> Result<(Vec<Value>, Option<Checkpoint>)> {
    let params = [Param::text(url), Param::text(&binds_key(url))];
    let mut stamp = store::fetch_values(conn, PRODUCER_STAMP, &params)
        .await?
        .pop()
        .unwrap_or_default();
    let found = stamp
        .get(STAMP_COLUMNS)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0;
    let last_update = stamp.pop().map(|v| text(Some(&v))).unwrap_or_default();
    let last_seq = stamp.pop().and_then(|v| v.as_i64());
    stamp.truncate(STAMP_COLUMNS);
    Ok((stamp, found.then_some((last_seq, last_update))))
}

impl ProducerInfo {
    /// The Event Producer as [`ProducerInfo::load`] reads it, read again only when its stamp
    /// moved (one statement where reading it is one per row and mapping, on every pull: a
    /// sixth of a one-update pull's CPU), and the checkpoint, read by the same statement (None
    /// when the producer has none).
    pub async fn current(
        site: &Site,
        url: &str,
    ) -> Result<(std::sync::Arc<ProducerInfo>, Option<Checkpoint>)> {
        let (stamp, checkpoint) = read_stamp(&mut site.store.conn().await?, url).await?;
        let infos = &site.streaming().producer_infos.0;
        if let Some(info) = infos.lock().expect("producer infos").get(url) {
            if info.stamp == stamp {
                return Ok((info.clone(), checkpoint));
            }
        }
        // Read after the stamp: what it reads is at least as new, so a change between the two
        // only costs one more read next time.
        let info = std::sync::Arc::new(ProducerInfo {
            binds: stamp.get(STAMP_COLUMNS - 1).is_some_and(|v| !v.is_null()),
            stamp,
            ..ProducerInfo::load(site, url).await?
        });
        infos
            .lock()
            .expect("producer infos")
            .insert(url.to_string(), info.clone());
        Ok((info, checkpoint))
    }

    /// Reads the Event Producer.
    pub async fn load(site: &Site, url: &str) -> Result<ProducerInfo> {
        let reg = site.meta();
        let mut conn = site.store.conn().await?;
        let doc = load_doc(&mut conn, &reg, &*reg.get("Event Producer")?, url)
            .await?
            .ok_or_else(|| Error::DoesNotExist(format!("Event Producer {url} not found")))?;
        let mut types = Vec::new();
        for r in doc
            .get("producer_doctypes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mapping = match crate::streaming::consumer::mapping_of(&mut conn, r).await? {
                Some((name, _)) => Some(crate::streaming::mapping::load(&mut conn, &name).await?),
                None => None,
            };
            types.push(SubscribedType {
                local_type: text(r.get("ref_doctype")),
                remote_type: mapping
                    .as_ref()
                    .map(|m| m.remote_doctype.clone())
                    .unwrap_or_else(|| text(r.get("ref_doctype"))),
                use_same_name: r.get("use_same_name").and_then(Value::as_i64) == Some(1),
                unsubscribed: r.get("unsubscribe").and_then(Value::as_i64) == Some(1),
                producer_wins: r.get("producer_wins").and_then(Value::as_i64) == Some(1),
                mapping,
            });
        }
        Ok(ProducerInfo {
            url: url.into(),
            user: text(doc.get("user")),
            types,
            remote: Default::default(),
            stamp: Vec::new(),
            binds: false,
            text_links: Default::default(),
        })
    }

    /// The client for this producer (decrypting its keys costs a twentieth of a pull).
    pub async fn remote(&self, site: &Site) -> Result<RemoteSite> {
        self.remote
            .get_or_try_init(|| crate::streaming::consumer::remote_for(site, &self.url))
            .await
            .cloned()
    }

    /// The remote types to ask for.
    pub fn remote_types(&self) -> Vec<String> {
        self.types
            .iter()
            .filter(|t| !t.unsubscribed)
            .map(|t| t.remote_type.clone())
            .collect()
    }

    pub(super) fn for_remote(&self, remote_type: &str) -> Option<&SubscribedType> {
        self.types
            .iter()
            .find(|t| t.remote_type == remote_type && !t.unsubscribed)
    }

    /// The subscription of a type kept here under local names, if it is one.
    pub(super) fn renamed(&self, local_type: &str) -> Option<&SubscribedType> {
        self.types
            .iter()
            .find(|t| t.local_type == local_type && !t.use_same_name && !t.unsubscribed)
    }

    /// The subscription a sync log entry came through: two rows may make the same local type,
    /// told apart by the mapping the entry recorded (entries written before docstream recorded
    /// it name none, and take the type's first row).
    pub(super) fn for_entry(&self, local_type: &str, mapping: &str) -> Option<&SubscribedType> {
        let live = || {
            self.types
                .iter()
                .filter(move |t| t.local_type == local_type && !t.unsubscribed)
        };
        let exact = live().find(|t| t.mapping.as_ref().map_or("", |m| m.name.as_str()) == mapping);
        match exact {
            None if mapping.is_empty() => live().next(),
            found => found,
        }
    }
}
