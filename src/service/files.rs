//! Files: an upload becomes a `File` document, its content kept in the site's database (so
//! every process serving the site has it); private files are served only to users who may read
//! the document they are attached to; content goes when no File refers to it any more.
//! Must not stream HTTP bodies (`api::files` does, into spool files) nor hold a file whole in
//! memory.

use super::documents;
use super::documents::{name_text, WriteFlags};
use super::permissions::Caller;
use crate::error::{Error, Result};
use crate::meta::PermType;
use crate::service::hooks::Write;
use crate::site::Site;
use crate::store::{self, files, Conn, Doc, Param};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// A file received whole into a spool file, with what the client said about it.
#[derive(Debug)]
pub struct Upload {
    pub file_name: String,
    /// Where the bytes wait on disk (removed by the caller).
    pub spool: PathBuf,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub content_hash: String,
    pub is_private: bool,
    pub folder: Option<String>,
    /// `(doctype, name)` of the document the file is attached to.
    pub attached_to: Option<(String, String)>,
    /// The Attach field of that document that takes the file's URL.
    pub attached_to_field: Option<String>,
}

/// A spool file on disk (an upload or a download on its way), removed when dropped.
#[derive(Debug)]
pub struct Spool(pub PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// True when a File has this URL.
pub async fn file_exists(conn: &mut Conn, url: &str) -> Result<bool> {
    Ok(!files_at(conn, url).await?.is_empty())
}

/// A file's name as given, made safe to be the last part of a URL: no folders, no control
/// characters, not `.` or `..`.
pub fn clean_file_name(given: &str) -> Result<String> {
    let last = given.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if last.is_empty() || last == "." || last == ".." || last.chars().any(char::is_control) {
        return Err(Error::Validation(format!(
            "File name {given:?} is not allowed: give a plain file name"
        )));
    }
    Ok(last.chars().take(140).collect())
}

fn text(v: Option<&Value>) -> String {
    v.map(name_text).unwrap_or_default()
}

/// The File rows whose `file_url` is this.
async fn files_at(conn: &mut Conn, url: &str) -> Result<Vec<Doc>> {
    store::fetch_docs(
        conn,
        r#"SELECT name, file_name, file_url, is_private, attached_to_doctype, attached_to_name, content_hash, file_size, owner FROM "tabFile" WHERE file_url = $1"#,
        &[Param::text(url)],
    )
    .await
}

impl Site {
    /// A new spool file's path in the site's `.uploads` folder (made when missing).
    pub async fn new_spool(&self) -> Result<Spool> {
        let dir = self.dir.join(".uploads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::Internal(format!("cannot make {}: {e}", dir.display())))?;
        Ok(Spool(dir.join(crate::crypto::random_token(24))))
    }

    /// Saves an upload as a File (and, when asked, sets the attached document's Attach field
    /// to its URL), all in one transaction.
    pub async fn save_upload(&self, caller: &Caller, up: &Upload) -> Result<Doc> {
        if caller.is_guest() {
            return Err(Error::Permission("Log in to upload files".into()));
        }
        let reg = self.meta();
        let file_name = clean_file_name(&up.file_name)?;
        if let Some((doctype, name)) = &up.attached_to {
            let dt = reg.get(doctype)?;
            caller.require(&dt, PermType::Write)?;
            let mut conn = self.store.conn().await?;
            if store::load_row(&mut conn, &dt, &super::documents::name_value(&dt, name))
                .await?
                .is_none()
            {
                return Err(Error::DoesNotExist(format!("{doctype} {name} not found")));
            }
            if let Some(field) = &up.attached_to_field {
                let ok = dt.field(field).is_some_and(|f| f.fieldtype.is_attach());
                if !ok {
                    return Err(Error::Validation(format!(
                        "{doctype} has no Attach field {field:?}"
                    )));
                }
            }
        } else if up.attached_to_field.is_some() {
            return Err(Error::Validation(
                "fieldname needs the doctype and docname the file is attached to".into(),
            ));
        }
        let base = if up.is_private {
            "/private/files/"
        } else {
            "/files/"
        };
        let mut tx = self.store.begin().await?;
        // A URL names one content: another file of that name gets a name of its own.
        let mut url = format!("{base}{file_name}");
        let taken = files_at(&mut tx, &url).await?;
        // Someone else's private file at that URL is never shared, whatever the content: the
        // URL answered must not tell whether a guessed content was right.
        let foreign = !caller.is_system_manager()
            && taken
                .iter()
                .any(|f| text(f.get("is_private")) == "1" && text(f.get("owner")) != caller.user);
        let suffix = if foreign {
            let mut h = Sha256::new();
            h.update(format!("{}:{}", up.content_hash, caller.user).as_bytes());
            Some(crate::crypto::hex(&h.finalize())[..8].to_string())
        } else if taken
            .iter()
            .any(|f| text(f.get("content_hash")) != up.content_hash)
        {
            Some(up.content_hash[..8].to_string())
        } else {
            None
        };
        if let Some(suffix) = suffix {
            let (stem, ext) = match file_name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
                _ => (file_name.clone(), String::new()),
            };
            url = format!("{base}{stem}-{suffix}{ext}");
        }
        let (saved, mut pending) = self
            .save_file_in(&mut tx, &reg, caller, &file_name, &url, up)
            .await?;
        if let (Some((doctype, name)), Some(field)) = (&up.attached_to, &up.attached_to_field) {
            let dt = reg.get(doctype)?;
            let mut patch = Doc::new();
            patch.insert(field.clone(), Value::String(url.clone()));
            let (_, p) = documents::update_in(
                &Write {
                    site: self,
                    reg: &reg,
                    caller,
                    dt: &dt,
                },
                &mut tx,
                name,
                patch,
                &WriteFlags::default(),
            )
            .await?;
            pending.logs_written |= p.logs_written;
            pending.after_commit.extend(p.after_commit);
        }
        tx.commit().await?;
        self.after_commit(pending).await?;
        Ok(saved)
    }

    /// Stores a file's content (unless the same content is there) and its File document,
    /// inside the caller's transaction.
    pub async fn save_file_in(
        &self,
        tx: &mut Conn,
        reg: &crate::meta::Registry,
        caller: &Caller,
        file_name: &str,
        url: &str,
        up: &Upload,
    ) -> Result<(Doc, super::documents::Pending)> {
        if !files::content_exists(tx, &up.content_hash).await? {
            use std::io::Read;
            let mut f = std::fs::File::open(&up.spool)
                .map_err(|e| Error::Internal(format!("upload spool lost: {e}")))?;
            let mut buf = vec![0u8; files::CHUNK_BYTES];
            let mut n = 0;
            loop {
                let mut filled = 0;
                while filled < buf.len() {
                    let got = f
                        .read(&mut buf[filled..])
                        .map_err(|e| Error::Internal(format!("upload spool unreadable: {e}")))?;
                    if got == 0 {
                        break;
                    }
                    filled += got;
                }
                if filled == 0 && n > 0 {
                    break;
                }
                files::write_chunk(tx, &up.content_hash, n, &buf[..filled]).await?;
                n += 1;
                if filled < buf.len() {
                    break;
                }
            }
        }
        let (doctype, docname) = up.attached_to.clone().unzip();
        let doc = store::doc_from(json!({
            "file_name": file_name,
            "file_url": url,
            "is_private": up.is_private as i64,
            "folder": up.folder.clone().unwrap_or_else(|| "Home".into()),
            "attached_to_doctype": doctype,
            "attached_to_name": docname,
            "attached_to_field": up.attached_to_field,
            "file_size": up.size,
            "content_hash": up.content_hash,
        }));
        let flags = WriteFlags {
            ignore_permissions: true,
            set_read_only: true,
            ..Default::default()
        };
        let file_dt = reg.get("File")?;
        documents::insert_in(
            &Write {
                site: self,
                reg,
                caller,
                dt: &file_dt,
            },
            tx,
            doc,
            &flags,
        )
        .await
    }

    /// The File at a `/files/...` or `/private/files/...` URL, if `caller` may read it.
    pub async fn file_for(&self, caller: &Caller, url: &str) -> Result<Doc> {
        let mut conn = self.store.conn().await?;
        let found = files_at(&mut conn, url).await?;
        drop(conn);
        let missing = || Error::DoesNotExist(format!("File {url} not found"));
        let private = found.iter().all(|f| text(f.get("is_private")) == "1");
        if found.is_empty() || (private && caller.is_guest()) {
            // Guests are not told whether a private file exists.
            return Err(missing());
        }
        readable(&self.meta(), caller, found)
    }

    /// Chunk `n` of a file's content.
    pub async fn file_chunk(&self, content_hash: &str, n: i64) -> Result<Option<Vec<u8>>> {
        let mut conn = self.store.conn().await?;
        files::read_chunk(&mut conn, content_hash, n).await
    }
}

/// Whether `caller` may read a File: public ones, their owner's, System Managers', and those
/// attached to a type the caller may read.
fn may_read(reg: &crate::meta::Registry, caller: &Caller, file: &Doc) -> Result<()> {
    if text(file.get("is_private")) != "1" || caller.is_system_manager() {
        return Ok(());
    }
    let url = text(file.get("file_url"));
    let doctype = text(file.get("attached_to_doctype"));
    if doctype.is_empty() {
        return if text(file.get("owner")) == caller.user {
            Ok(())
        } else {
            Err(Error::Permission(format!("{url} is private")))
        };
    }
    caller.require(&*reg.get(&doctype)?, PermType::Read)
}

/// The first of the Files of one URL that `caller` may read (one URL is one content).
fn readable(reg: &crate::meta::Registry, caller: &Caller, files: Vec<Doc>) -> Result<Doc> {
    let mut refused = None;
    for f in files {
        match may_read(reg, caller, &f) {
            Ok(()) => return Ok(f),
            Err(e) => refused = refused.or(Some(e)),
        }
    }
    Err(refused.unwrap_or_else(|| Error::DoesNotExist("File not found".into())))
}

/// Refuses a new or changed Attach (or Attach Image) value, of the document or of its child
/// rows, that names a private file the writer may not read: the document's consumers would
/// fetch it with their subscriber's keys and show it to their own readers. A File attached to
/// a streamed document is then proof that its writer could read it.
pub async fn check_attachments(
    conn: &mut Conn,
    reg: &crate::meta::Registry,
    caller: &Caller,
    dt: &crate::meta::DocType,
    doc: &Doc,
    old: Option<&Doc>,
) -> Result<()> {
    if caller.is_system_manager() {
        return Ok(());
    }
    let mut wanted: Vec<String> = Vec::new();
    let mut collect = |dt: &crate::meta::DocType, rows: Vec<&Doc>, old_rows: Vec<&Doc>| {
        for f in dt.fields.iter().filter(|f| f.fieldtype.is_attach()) {
            let before: std::collections::HashSet<String> =
                old_rows.iter().map(|r| text(r.get(&f.fieldname))).collect();
            for r in &rows {
                let v = text(r.get(&f.fieldname));
                if v.starts_with("/private/files/") && !before.contains(&v) {
                    wanted.push(v);
                }
            }
        }
    };
    collect(dt, vec![doc], old.into_iter().collect());
    for tf in dt.table_fields() {
        let Ok(child) = reg.get(&tf.options) else {
            continue;
        };
        let rows_of = |d: Option<&Doc>| -> Vec<Doc> {
            d.and_then(|d| d.get(&tf.fieldname))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_object().cloned())
                .collect()
        };
        let (rows, old_rows) = (rows_of(Some(doc)), rows_of(old));
        collect(&child, rows.iter().collect(), old_rows.iter().collect());
    }
    for url in wanted {
        let files = files_at(conn, &url).await?;
        if files.is_empty() {
            continue;
        }
        readable(reg, caller, files).map_err(|_| {
            Error::Permission(format!(
                "{} may not read the private file {url}, so it cannot be attached here",
                caller.user
            ))
        })?;
    }
    Ok(())
}

/// The Files attached to a document (deleted with it).
pub async fn attached_files(conn: &mut Conn, doctype: &str, name: &str) -> Result<Vec<String>> {
    if doctype == "File" {
        return Ok(vec![]);
    }
    let rows = store::fetch_docs(
        conn,
        r#"SELECT name FROM "tabFile" WHERE attached_to_doctype = $1 AND attached_to_name = $2"#,
        &[Param::text(doctype), Param::text(name)],
    )
    .await?;
    Ok(rows.iter().map(|r| text(r.get("name"))).collect())
}

#[cfg(test)]
mod tests {
    use super::clean_file_name;

    #[test]
    fn file_names_lose_their_folders() {
        assert_eq!(clean_file_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_file_name("C:\\x\\photo.png").unwrap(), "photo.png");
        for bad in ["", "..", "a/..", "x/", "bad\u{7}name", "nul\u{0}"] {
            assert!(clean_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
