//! The self-checking page of a docstream pull (`after_seq`): what the producer sends and the
//! checks the consumer runs before it applies anything.
//!
//! A damaged byte inside a JSON string still parses, and a cut body may end where a list could,
//! so parsing alone cannot tell a page from a damaged one. The body therefore carries, next to
//! `message` (the logs), the page's `last_seq`, its `count` and `sha256`: the hex SHA-256 of
//! `"<last_seq>\n<count>\n"` followed by the exact bytes of the `message` value as sent. The
//! checkpoint moves only to a `last_seq` the digest covers.

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
    let sha = digest(last_seq, logs.len(), &message);
    format!(
        r#"{{"message":{message},"last_seq":{last_seq},"count":{},"has_more":{has_more},"sha256":"{sha}"}}"#,
        logs.len()
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
}

fn damaged(producer: &str, why: String) -> Error {
    Error::Validation(format!(
        "{producer} sent a damaged pull page ({why}); nothing applied, the pull will be retried"
    ))
}

/// Checks a docstream page asked for with `after_seq` and returns its logs.
pub fn decode(producer: &str, body: &str, after_seq: i64) -> Result<LogPage> {
    let wire: Wire = serde_json::from_str(body).map_err(|e| damaged(producer, e.to_string()))?;
    let message = wire.message.get();
    if digest(wire.last_seq, wire.count, message) != wire.sha256 {
        return Err(damaged(producer, "its SHA-256 does not match".into()));
    }
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
    })
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

    #[test]
    fn a_page_round_trips() {
        let p = decode("p", &page(), 3).unwrap();
        assert_eq!(p.logs.len(), 2);
        assert_eq!(p.last_seq, Some(7));
        assert!(p.has_more);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let body = page();
        for i in 0..body.len() {
            let mut bytes = body.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(text) = String::from_utf8(bytes) {
                assert!(decode("p", &text, 3).is_err(), "flip at {i} passed: {text}");
            }
            assert!(decode("p", &body[..i], 3).is_err(), "cut at {i} passed");
        }
    }

    #[test]
    fn seqs_must_follow_the_checkpoint() {
        assert!(decode("p", &page(), 4).is_err());
        let empty = encode(&[], 2, false);
        assert!(decode("p", &empty, 3).is_err());
        assert_eq!(decode("p", &empty, 2).unwrap().last_seq, Some(2));
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
