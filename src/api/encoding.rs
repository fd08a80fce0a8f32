//! Content codings on the wire, for shops on weak lines: answers compressed for a client that
//! asks (`Accept-Encoding`: zstd preferred, else gzip), request bodies taken compressed
//! (`Content-Encoding`) and bounded by their size once decompressed, and the long-poll body
//! that sends a heartbeat while its pull waits.
//! Must not decide what is sent (handlers do); only how it travels.

use crate::error::Error;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response};
use std::io::{Read, Write};
use std::time::Duration;

/// The codings this server reads and writes, as it says in every answer's `Accept-Encoding`
/// (RFC 7694: what a client may send it compressed).
pub const ACCEPTED: &str = "zstd, gzip";
/// Answers smaller than this go as they are: compressing them saves nothing.
const MIN_BYTES: usize = 512;
/// How often a waiting long poll sends a byte.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Gzip,
}

impl Coding {
    /// Its name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The coding a client's `Accept-Encoding` asks for (zstd first), if any.
    pub fn preferred(headers: &HeaderMap) -> Option<Coding> {
        let mut found = (false, false);
        for v in headers.get_all(header::ACCEPT_ENCODING) {
            for part in v.to_str().unwrap_or("").split(',') {
                let mut it = part.split(';');
                let name = it.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = it.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                match (name.as_str(), refused) {
                    ("zstd", false) => found.0 = true,
                    ("gzip" | "x-gzip", false) => found.1 = true,
                    _ => {}
                }
            }
        }
        match found {
            (true, _) => Some(Coding::Zstd),
            (false, true) => Some(Coding::Gzip),
            _ => None,
        }
    }

    /// The coding of a request body (None: as it is); any other is refused.
    pub fn of_body(headers: &HeaderMap) -> Result<Option<Coding>, Error> {
        let Some(v) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(None);
        };
        match v.to_str().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "zstd" => Ok(Some(Coding::Zstd)),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            other => Err(Error::BadRequest(format!(
                "Content-Encoding {other:?} is not supported: send the body as it is, or as {ACCEPTED}"
            ))),
        }
    }

    /// Compresses a whole body.
    pub fn compress(self, bytes: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new(self);
        e.write(bytes);
        e.finish()
    }

    /// Decompresses a body, refused once it passes `limit` bytes.
    pub fn decompress(self, bytes: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
        let bad = |e: std::io::Error| {
            Error::BadRequest(format!("the body is not valid {}: {e}", self.name()))
        };
        let reader: Box<dyn Read + '_> = match self {
            Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(bytes).map_err(bad)?),
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(bad)?;
        if out.len() > limit {
            return Err(Error::TooLarge(format!(
                "Request body is larger than the limit of {limit} bytes once decompressed (max_body_bytes)"
            )));
        }
        Ok(out)
    }
}

/// A streaming compressor whose output can be flushed at any point, so that what was written
/// so far reaches the other side whole (a heartbeat, then the page).
pub enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Encoder {
    /// A compressor for `coding` (zstd level 3, gzip level 5: fast enough for every answer).
    pub fn new(coding: Coding) -> Encoder {
        match coding {
            Coding::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd level 3"),
            ),
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
        }
    }

    // Writing into a Vec cannot fail.
    fn write(&mut self, bytes: &[u8]) {
        let _ = match self {
            Encoder::Zstd(e) => e.write_all(bytes),
            Encoder::Gzip(e) => e.write_all(bytes),
        };
    }

    /// Writes `bytes` and returns everything the other side needs to read them now.
    pub fn flushed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.write(bytes);
        let out = match self {
            Encoder::Zstd(e) => {
                let _ = e.flush();
                e.get_mut()
            }
            Encoder::Gzip(e) => {
                let _ = e.flush();
                e.get_mut()
            }
        };
        std::mem::take(out)
    }

    /// Ends the stream: its last bytes.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Encoder::Zstd(e) => e.finish().unwrap_or_default(),
            Encoder::Gzip(e) => e.finish().unwrap_or_default(),
        }
    }
}

fn compressible(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    ct.starts_with("application/json")
        || ct.starts_with("text/")
        || ct.starts_with("application/javascript")
        || ct.starts_with("application/xml")
        || ct.starts_with("image/svg+xml")
}

/// The answer as the client asked for it: compressed with `coding` when it is text worth
/// compressing and not already coded; `Accept-Encoding` and `Vary` said either way.
pub async fn encode_answer(resp: Response<Body>, coding: Option<Coding>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED));
    h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let Some(coding) = coding else {
        return Response::from_parts(parts, body);
    };
    let sized = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if h.contains_key(header::CONTENT_ENCODING)
        || !compressible(h)
        || sized.is_some_and(|n| n < MIN_BYTES)
    {
        return Response::from_parts(parts, body);
    }
    // The server's own answers are in memory already (files are bounded by max_file_bytes).
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("an answer could not be read for compression: {e}");
            return Response::from_parts(parts, Body::empty());
        }
    };
    if bytes.len() < MIN_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let packed = coding.compress(&bytes);
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.name()),
    );
    h.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(packed))
}

/// An answer that may take long (a long poll): given as it is when `answer` is ready within
/// one [`HEARTBEAT`]; else a 200 whose body sends a space every heartbeat (flushed through
/// the coding) and then the answer's body, whatever its status (its error body says what
/// went wrong). Whitespace before JSON is still JSON.
pub async fn with_heartbeat<F>(answer: F, coding: Option<Coding>) -> Response<Body>
where
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let mut answer = Box::pin(answer);
    if let Ok(r) = tokio::time::timeout(HEARTBEAT, &mut answer).await {
        return r;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut encoder = coding.map(Encoder::new);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now(), HEARTBEAT);
        let resp = loop {
            tokio::select! {
                r = &mut answer => break r,
                _ = tick.tick() => {
                    let beat = match &mut encoder {
                        Some(e) => e.flushed(b" "),
                        None => b" ".to_vec(),
                    };
                    // The client went away: the pull ends with it.
                    if tx.send(Ok(beat)).await.is_err() {
                        return;
                    }
                }
            }
        };
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let last = match encoder {
            Some(mut e) => {
                let mut out = e.flushed(&body);
                out.extend(e.finish());
                out
            }
            None => body.to_vec(),
        };
        let _ = tx.send(Ok(last)).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(c) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.name()));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn zstd_is_preferred_and_q0_refuses() {
        assert_eq!(Coding::preferred(&accept("gzip, zstd")), Some(Coding::Zstd));
        assert_eq!(
            Coding::preferred(&accept("gzip, zstd;q=0")),
            Some(Coding::Gzip)
        );
        assert_eq!(Coding::preferred(&accept("br, deflate")), None);
        assert_eq!(Coding::preferred(&HeaderMap::new()), None);
    }

    #[test]
    fn flushed_heartbeats_decode_before_the_end() {
        for coding in [Coding::Zstd, Coding::Gzip] {
            let mut e = Encoder::new(coding);
            let mut wire = e.flushed(b" ");
            wire.extend(e.flushed(b" "));
            // What arrived so far decodes on its own: two spaces, no more.
            let mut so_far = Vec::new();
            {
                let mut reader: Box<dyn Read> = match coding {
                    Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(&wire[..]).unwrap()),
                    Coding::Gzip => Box::new(flate2::read::GzDecoder::new(&wire[..])),
                };
                let mut buf = [0u8; 16];
                while so_far.len() < 2 {
                    let n = reader.read(&mut buf).unwrap_or(0);
                    assert!(n > 0, "{coding:?}: the heartbeats are not readable yet");
                    so_far.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(so_far, b"  ");
            wire.extend(e.flushed(br#"{"message": []}"#));
            wire.extend(e.finish());
            let body = coding.decompress(&wire, 1 << 20).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["message"], serde_json::json!([]));
        }
    }

    #[test]
    fn a_small_bomb_is_refused_by_its_decompressed_size() {
        let bomb = vec![b'a'; 5 << 20];
        for coding in [Coding::Zstd, Coding::Gzip] {
            let packed = coding.compress(&bomb);
            assert!(packed.len() < 64 << 10);
            let e = coding.decompress(&packed, 1 << 20).unwrap_err();
            assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
            assert_eq!(coding.decompress(&packed, 6 << 20).unwrap().len(), 5 << 20);
        }
    }
}
