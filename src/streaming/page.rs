//! The self-checking page of a docstream pull (`after_seq`): what the producer sends and the
//! checks the consumer runs before it applies anything.
//!
//! A damaged byte inside a JSON string still parses, and a cut body may end where a list could,
//! so parsing alone cannot tell a page from a damaged one. The body therefore carries, next to
//! `message` (the logs), the page's `last_seq`, its `count` and `sha256`: the hex SHA-256 of
//! `"<last_seq>\n<count>\n"` followed by the exact bytes of the `message` value as sent. The
//! checkpoint moves only to a `last_seq` the digest covers.
//!
//! A page is also bound to the request it answers when the consumer asks (`bound=1`): the
//! producer then echoes `after_seq`, the consumer and the `doctypes` text exactly as it received
//! them, with `bound_sha256` over the page's `sha256` and the three, and the consumer checks
//! them against what it sent. A request changed on the way (another `after_seq`) then cannot
//! have its answer taken for the page that was asked for. Only a consumer that asks gets the
//! echo, so consumers of earlier versions get today's page byte for byte: the rule for every
//! addition to the wire.

use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A page of update logs as the consumer accepts it.
#[derive(Debug)]
pub struct LogPage {
    pub logs: Vec<Value>,
    /// The seq the consumer's checkpoint may move to; `None` from a Frappe producer.
    pub last_seq: Option<i64>,
    pub has_more: bool,
    /// The page was bound to its request (see the module comment).
    pub bound: bool,
    /// The identity at `last_seq`, when the consumer asked (`streaming::history`).
    pub history: Option<String>,
    /// The producer's history does not hold the consumer's checkpoint (the page is empty).
    pub history_changed: Option<HistoryChanged>,
}

/// Why the producer's history does not hold the consumer's checkpoint (`streaming::history`).
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryChanged {
    pub reason: String,
    /// The producer's newest seq when it answered.
    pub newest_seq: i64,
}

fn digest(last_seq: i64, count: usize, message: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{last_seq}\n{count}\n").as_bytes());
    h.update(message.as_bytes());
    crate::crypto::hex(&h.finalize())
}

/// The body of a docstream pull answer.
pub fn encode(logs: &[Value], last_seq: i64, has_more: bool) -> String {
    let message = serde_json::to_string(logs).unwrap_or_else(|_| "[]".into());
    wrap(&message, logs.len(), last_seq, has_more)
}

fn wrap(message: &str, count: usize, last_seq: i64, has_more: bool) -> String {
    let sha = digest(last_seq, count, message);
    format!(
        r#"{{"message":{message},"last_seq":{last_seq},"count":{count},"has_more":{has_more},"sha256":"{sha}"}}"#
    )
}

/// A page body encoded under a byte bound, with what it came to.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub body: std::sync::Arc<str>,
    pub count: usize,
    /// Where the page ends: the range's end, or the last log kept when the bound cut it.
    pub last_seq: i64,
    pub has_more: bool,
}

/// Encodes the logs of `(.., last_seq]` in order, keeping as many as fit in `max_bytes` (always
/// at least one); a cut page ends at its last log and says there is more. With `stub`, a first
/// log larger than the bound goes as a stub (its data replaced by `{"__too_large": <bytes>}`),
/// which the consumer records as a Failed sync naming it: a page never outgrows the body bound
/// of the route that carries it. Without `stub` (consumers that did not ask for bound pages) it
/// goes whole, as it always did.
pub fn encode_bounded(
    logs: impl IntoIterator<Item = Value>,
    last_seq: i64,
    has_more: bool,
    max_bytes: usize,
    stub: bool,
) -> Encoded {
    let mut parts: Vec<String> = Vec::new();
    let (mut total, mut end, mut more) = (2usize, last_seq, has_more);
    for log in logs {
        let mut text = serde_json::to_string(&log).unwrap_or_else(|_| "null".into());
        let seq = log.get("seq").and_then(seq_of).unwrap_or(last_seq);
        if !parts.is_empty() && total + text.len() + 1 > max_bytes {
            more = true;
            break;
        }
        if parts.is_empty() && text.len() > max_bytes && stub {
            let mut short = log.clone();
            short["data"] = Value::String(format!(r#"{{"__too_large":{}}}"#, text.len()));
            text = serde_json::to_string(&short).unwrap_or_else(|_| "null".into());
        }
        total += text.len() + 1;
        end = seq;
        parts.push(text);
    }
    if !more {
        end = last_seq;
    }
    let message = format!("[{}]", parts.join(","));
    Encoded {
        body: wrap(&message, parts.len(), end, more).into(),
        count: parts.len(),
        last_seq: end,
        has_more: more,
    }
}

/// What a bound page echoes: the pull request's arguments as the producer received them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    pub after_seq: &'a str,
    pub consumer: &'a str,
    pub doctypes: &'a str,
}

fn bound_digest(sha: &str, echo: &Echo) -> String {
    let mut h = Sha256::new();
    for part in [sha, echo.after_seq, echo.consumer, echo.doctypes] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    crate::crypto::hex(&h.finalize())
}

/// A page body made by [`encode`] or [`encode_bounded`], bound to the request it answers.
pub fn bind(body: &str, echo: &Echo) -> String {
    const KEY: &str = r#","sha256":""#;
    let sha = body
        .rfind(KEY)
        .map(|at| &body[at + KEY.len()..])
        .and_then(|rest| rest.get(..64))
        .unwrap_or_default();
    let bound = bound_digest(sha, echo);
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{},"after_seq":{},"consumer":{},"doctypes":{},"bound_sha256":"{bound}"}}"#,
        body.strip_suffix('}').unwrap_or(body),
        json(echo.after_seq),
        json(echo.consumer),
        json(echo.doctypes),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
    last_seq: i64,
    count: usize,
    has_more: bool,
    sha256: String,
    after_seq: Option<String>,
    consumer: Option<String>,
    doctypes: Option<String>,
    bound_sha256: Option<String>,
    history: Option<String>,
    history_changed: Option<HistoryChanged>,
}

fn damaged(producer: &str, why: String) -> Error {
    Error::Validation(format!(
        "{producer} sent a damaged pull page ({why}); nothing applied, the pull will be retried"
    ))
}

/// What the consumer asked, to check a page against.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub after_seq: i64,
    /// The request's echo, when the consumer asked for a bound page.
    pub echo: Option<Echo<'a>>,
    /// This producer has sent bound pages before: an unbound one is refused.
    pub must_bind: bool,
}

/// Checks a docstream page asked for with `after_seq` and returns its logs.
pub fn decode(producer: &str, body: &str, asked: &Asked) -> Result<LogPage> {
    let after_seq = asked.after_seq;
    let wire: Wire = serde_json::from_str(body).map_err(|e| damaged(producer, e.to_string()))?;
    let message = wire.message.get();
    if digest(wire.last_seq, wire.count, message) != wire.sha256 {
        return Err(damaged(producer, "its SHA-256 does not match".into()));
    }
    let bound = check_binding(producer, &wire, asked)?;
    let logs: Vec<Value> =
        serde_json::from_str(message).map_err(|e| damaged(producer, e.to_string()))?;
    if logs.len() != wire.count {
        return Err(damaged(
            producer,
            format!("{} logs where it announces {}", logs.len(), wire.count),
        ));
    }
    if wire.last_seq < after_seq {
        return Err(damaged(
            producer,
            format!("last_seq {} is before {after_seq}", wire.last_seq),
        ));
    }
    let mut previous = after_seq;
    for log in &logs {
        let seq = log
            .get("seq")
            .and_then(seq_of)
            .ok_or_else(|| damaged(producer, "a log without a seq".into()))?;
        if seq <= previous || seq > wire.last_seq {
            return Err(damaged(
                producer,
                format!(
                    "seq {seq} out of order after {previous} (page ends at {})",
                    wire.last_seq
                ),
            ));
        }
        previous = seq;
    }
    Ok(LogPage {
        logs,
        last_seq: Some(wire.last_seq),
        has_more: wire.has_more,
        bound,
        history: wire.history,
        history_changed: wire.history_changed,
    })
}

/// True when the page is bound to the request asked; an error when it is bound to another,
/// or unbound from a producer that binds.
fn check_binding(producer: &str, wire: &Wire, asked: &Asked) -> Result<bool> {
    let echoed = match (
        &wire.after_seq,
        &wire.consumer,
        &wire.doctypes,
        &wire.bound_sha256,
    ) {
        (None, None, None, None) => None,
        (Some(a), Some(c), Some(d), Some(b)) => Some((
            Echo {
                after_seq: a,
                consumer: c,
                doctypes: d,
            },
            b,
        )),
        _ => return Err(damaged(producer, "its request echo is incomplete".into())),
    };
    let Some((echo, bound_sha)) = echoed else {
        if asked.must_bind {
            return Err(Error::Validation(format!(
                "{producer} answered a pull with a page not bound to its request, although it has sent bound pages before: refused, nothing applied (a proxy or an older server between the sites?)"
            )));
        }
        return Ok(false);
    };
    if bound_digest(&wire.sha256, &echo) != *bound_sha {
        return Err(damaged(producer, "its bound SHA-256 does not match".into()));
    }
    let Some(sent) = asked.echo else {
        return Err(damaged(
            producer,
            "it echoes a request that did not ask for it".into(),
        ));
    };
    if echo != sent {
        return Err(Error::Validation(format!(
            "{producer} answered a pull with a page for another request (asked after_seq {:?}, consumer {:?}, doctypes {}; the page answers after_seq {:?}, consumer {:?}, doctypes {}): the request was changed on the way; nothing applied",
            sent.after_seq, sent.consumer, sent.doctypes, echo.after_seq, echo.consumer, echo.doctypes
        )));
    }
    Ok(true)
}

fn seq_of(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// Reads a Frappe-style answer (`{"message": [logs]}`); anything else is refused.
pub fn decode_frappe(producer: &str, body: &str) -> Result<LogPage> {
    let v: Value = serde_json::from_str(body).map_err(|e| damaged(producer, e.to_string()))?;
    match v.get("message") {
        Some(Value::Array(logs)) => Ok(LogPage {
            logs: logs.clone(),
            last_seq: None,
            has_more: false,
            bound: false,
            history: None,
            history_changed: None,
        }),
        _ => Err(damaged(
            producer,
            "its message is not a list of logs".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page() -> String {
        encode(
            &[
                json!({"seq": 4, "data": "a"}),
                json!({"seq": 6, "data": "b"}),
            ],
            7,
            true,
        )
    }

    fn after(after_seq: i64) -> Asked<'static> {
        Asked {
            after_seq,
            echo: None,
            must_bind: false,
        }
    }

    #[test]
    fn a_page_round_trips() {
        let p = decode("p", &page(), &after(3)).unwrap();
        assert_eq!(p.logs.len(), 2);
        assert_eq!(p.last_seq, Some(7));
        assert!(p.has_more);
        assert!(!p.bound);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let echo = Echo {
            after_seq: "3",
            consumer: "http://c",
            doctypes: r#"["ToDo"]"#,
        };
        let bound = Asked {
            after_seq: 3,
            echo: Some(echo),
            must_bind: true,
        };
        for (body, asked) in [(page(), after(3)), (bind(&page(), &echo), bound)] {
            assert!(decode("p", &body, &asked).is_ok());
            for i in 0..body.len() {
                let mut bytes = body.clone().into_bytes();
                bytes[i] ^= 0x01;
                if let Ok(text) = String::from_utf8(bytes) {
                    assert!(
                        decode("p", &text, &asked).is_err(),
                        "flip at {i} passed: {text}"
                    );
                }
                assert!(
                    decode("p", &body[..i], &asked).is_err(),
                    "cut at {i} passed"
                );
            }
        }
    }

    #[test]
    fn seqs_must_follow_the_checkpoint() {
        assert!(decode("p", &page(), &after(4)).is_err());
        let empty = encode(&[], 2, false);
        assert!(decode("p", &empty, &after(3)).is_err());
        assert_eq!(decode("p", &empty, &after(2)).unwrap().last_seq, Some(2));
    }

    #[test]
    fn a_bound_page_answers_only_its_request() {
        let sent = Echo {
            after_seq: "3",
            consumer: "http://c",
            doctypes: r#"["ToDo"]"#,
        };
        let asked = Asked {
            after_seq: 3,
            echo: Some(sent),
            must_bind: false,
        };
        let p = decode("p", &bind(&page(), &sent), &asked).unwrap();
        assert!(p.bound);
        // The request was changed on the way: the producer answered after_seq 6, and the
        // digest holds, but it is not the page asked for.
        let moved = Echo {
            after_seq: "6",
            ..sent
        };
        let e = decode("p", &bind(&encode(&[], 7, false), &moved), &asked).unwrap_err();
        assert!(e.message().contains("another request"), "{e}");
        for other in [
            Echo {
                consumer: "http://x",
                ..sent
            },
            Echo {
                doctypes: r#"["Note"]"#,
                ..sent
            },
        ] {
            assert!(decode("p", &bind(&page(), &other), &asked).is_err());
        }
        // An unbound answer from a producer that has bound its pages before.
        let must = Asked {
            must_bind: true,
            ..asked
        };
        let e = decode("p", &page(), &must).unwrap_err();
        assert!(e.message().contains("not bound"), "{e}");
        assert!(!decode("p", &page(), &asked).unwrap().bound);
    }

    #[test]
    fn a_page_holds_what_fits_in_its_bound() {
        let logs: Vec<Value> = (1..=10)
            .map(|i| json!({"seq": i, "data": "x".repeat(100)}))
            .collect();
        let whole = encode_bounded(logs.clone(), 12, false, 1 << 20, true);
        assert_eq!(
            (whole.count, whole.last_seq, whole.has_more),
            (10, 12, false)
        );
        assert_eq!(&*whole.body, encode(&logs, 12, false));
        let cut = encode_bounded(logs.clone(), 12, false, 500, true);
        assert!(cut.body.len() < 700, "{}", cut.body.len());
        assert!(cut.count >= 1 && cut.count < 10);
        assert_eq!(cut.last_seq, cut.count as i64);
        assert!(cut.has_more);
        let p = decode("p", &cut.body, &after(0)).unwrap();
        assert_eq!(p.logs.len(), cut.count);
        // One log over the bound: a stub for consumers that asked, whole for the others.
        let big = vec![json!({"seq": 1, "data": "y".repeat(5000)})];
        let stub = encode_bounded(big.clone(), 1, false, 500, true);
        assert_eq!(stub.count, 1);
        assert!(stub.body.contains("__too_large"), "{}", stub.body);
        assert!(stub.body.len() < 500);
        let whole = encode_bounded(big, 1, false, 500, false);
        assert!(whole.body.len() > 5000);
    }

    #[test]
    fn a_frappe_answer_must_be_a_list() {
        assert!(decode_frappe("p", r#"{"message": "docstream"}"#).is_err());
        assert!(decode_frappe("p", r#"{"message": [{"name": "x"}"#).is_err());
        assert_eq!(
            decode_frappe("p", r#"{"message": []}"#).unwrap().logs.len(),
            0
        );
    }
}
