//! Files over HTTP: `upload_file` (multipart, streamed to a spool file on disk, never held
//! whole in memory) and the `/files/...` and `/private/files/...` URLs that serve them.

use super::envelope::{message, ApiError};
use crate::error::Error;
use crate::service::files::{Spool, Upload};
use crate::service::permissions::Caller;
use crate::site::Site;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// All form fields of an upload but the file, together.
const FIELD_BYTES: usize = 64 * 1024;
/// Form fields of an upload but the file.
const MAX_FIELDS: usize = 32;

fn bad(e: multer::Error) -> Error {
    match e {
        multer::Error::StreamSizeExceeded { limit } => Error::TooLarge(format!(
            "The upload is larger than the limit of {limit} bytes (max_file_bytes and its form fields)"
        )),
        e => Error::BadRequest(format!("The multipart body cannot be read: {e}")),
    }
}

/// `POST /api/method/upload_file` with Frappe's form fields: `file`, `is_private`, `folder`,
/// `doctype`, `docname`, `fieldname`.
pub async fn upload(
    site: &Site,
    headers: &HeaderMap,
    body: Body,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Error::BadRequest(
            "upload_file takes a multipart/form-data body with a \"file\" part".into(),
        )
    })?;
    let limit = site.config.max_file_bytes;
    // The whole body: one file and a few small fields, whatever the parts say of themselves.
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new().whole_stream(limit.saturating_add(FIELD_BYTES as u64 + 64 * 1024)),
    );
    let mut parts =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut field_bytes = 0usize;
    let mut file: Option<(Spool, String, u64, String)> = None;
    while let Some(mut part) = parts.next_field().await.map_err(bad)? {
        let name = part.name().unwrap_or("").to_string();
        if name != "file" {
            // Form fields are small: all of them together are held to FIELD_BYTES, so many
            // small fields cannot add up to a large body held in memory.
            if fields.len() >= MAX_FIELDS {
                return Err(Error::TooLarge(format!(
                    "upload_file takes at most {MAX_FIELDS} form fields besides the file"
                ))
                .into());
            }
            let mut text = Vec::new();
            while let Some(chunk) = part.chunk().await.map_err(bad)? {
                text.extend_from_slice(&chunk);
                field_bytes += chunk.len() + name.len();
                if field_bytes > FIELD_BYTES {
                    return Err(Error::TooLarge(format!(
                        "the form fields of upload_file are larger than {FIELD_BYTES} bytes (form field {name})"
                    ))
                    .into());
                }
            }
            let text = String::from_utf8(text)
                .map_err(|_| Error::BadRequest(format!("form field {name} is not UTF-8")))?;
            super::args::refuse_nul(&text)?;
            fields.insert(name, text);
            continue;
        }
        let file_name = part.file_name().unwrap_or("").to_string();
        let spool = site.new_spool().await?;
        let mut out = tokio::fs::File::create(&spool.0)
            .await
            .map_err(|e| Error::Internal(format!("cannot spool the upload: {e}")))?;
        let (mut size, mut hash) = (0u64, Sha256::new());
        while let Some(chunk) = part.chunk().await.map_err(bad)? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge(format!(
                    "The file is larger than the limit of {limit} bytes (max_file_bytes)"
                ))
                .into());
            }
            hash.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::Internal(format!("cannot spool the upload: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::Internal(format!("cannot spool the upload: {e}")))?;
        let hex = crate::crypto::hex(&hash.finalize());
        file = Some((spool, file_name, size, hex));
    }
    let Some((spool, given_name, size, content_hash)) = file else {
        return Err(Error::Validation(
            "upload_file needs a \"file\" part (uploads by file_url are not supported)".into(),
        )
        .into());
    };
    let field = |k: &str| {
        fields
            .get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let attached_to = match (field("doctype"), field("docname")) {
        (Some(d), Some(n)) => Some((d, n)),
        (None, None) => None,
        _ => {
            return Err(Error::Validation("doctype and docname go together".into()).into());
        }
    };
    let up = Upload {
        file_name: field("file_name").unwrap_or(given_name),
        spool: spool.0.clone(),
        size,
        content_hash,
        is_private: matches!(field("is_private").as_deref(), Some("1" | "true")),
        folder: field("folder"),
        attached_to,
        attached_to_field: field("fieldname"),
    };
    let saved = site.save_upload(caller, &up).await?;
    drop(spool);
    Ok(message(Value::Object(saved)))
}

/// What a file is served as: images, PDF and plain text are shown; anything else (HTML and
/// SVG above all, which would run in the site's origin) is downloaded.
fn served_as(name: &str) -> (&'static str, bool) {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "pdf" => ("application/pdf", true),
        "txt" | "csv" => ("text/plain; charset=utf-8", true),
        "json" => ("application/json", false),
        _ => ("application/octet-stream", false),
    }
}

/// `GET /files/...` and `GET /private/files/...`: the file's bytes, streamed chunk by chunk.
pub async fn serve(site: Arc<Site>, url: &str, caller: &Caller) -> Result<Response, ApiError> {
    let file = site.file_for(caller, url).await?;
    let text = |k: &str| {
        file.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let hash = text("content_hash");
    let size = file.get("file_size").and_then(Value::as_i64).unwrap_or(0);
    let (mime, inline) = served_as(&text("file_name"));
    let body = futures_util::stream::unfold((site, hash, 0i64), |(site, hash, n)| async move {
        match site.file_chunk(&hash, n).await {
            Ok(Some(bytes)) if !bytes.is_empty() => {
                Some((Ok::<_, std::io::Error>(bytes), (site, hash, n + 1)))
            }
            Ok(_) => None,
            Err(e) => Some((
                Err(std::io::Error::other(e.to_string())),
                (site, hash, i64::MAX),
            )),
        }
    });
    let disposition = if inline { "inline" } else { "attachment" };
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(disposition),
    );
    if file.get("is_private").and_then(Value::as_i64) == Some(1) {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}
