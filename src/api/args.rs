//! Request arguments from the query string and a JSON or form body, as Frappe clients send them.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// Every argument of a request by name; form and query values are strings.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub map: Map<String, Value>,
    /// The JSON body when it was an object (a document for `/api/resource`).
    pub json_body: Option<Map<String, Value>>,
}

impl Args {
    /// Parses the query string and the body by content type.
    pub fn parse(query: Option<&str>, content_type: &str, body: &[u8]) -> Result<Args> {
        let mut args = Args::default();
        if let Some(q) = query {
            for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map_err(|e| Error::BadRequest(format!("Invalid query string: {e}")))?
            {
                args.map.insert(k, Value::String(v));
            }
        }
        let body_text = std::str::from_utf8(body)
            .map_err(|_| Error::BadRequest("The request body is not UTF-8".into()))?;
        if !body_text.trim().is_empty() {
            args.parse_body(content_type, body_text)?;
        }
        for (k, v) in &args.map {
            refuse_nul(k)?;
            refuse_nul_in(v)?;
        }
        Ok(args)
    }

    fn parse_body(&mut self, content_type: &str, body_text: &str) -> Result<()> {
        let args = self;
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(body_text)
                .map_err(|e| Error::BadRequest(format!("Invalid form body: {e}")))?
            {
                args.map.insert(k, Value::String(v));
            }
        } else if ct.starts_with("multipart/") {
            return Err(Error::BadRequest(
                "multipart bodies are not supported: send JSON or a form".into(),
            ));
        } else {
            let v: Value = serde_json::from_str(body_text)
                .map_err(|e| Error::BadRequest(format!("Invalid JSON body: {e}")))?;
            match v {
                Value::Object(m) => {
                    for (k, v) in &m {
                        args.map.insert(k.clone(), v.clone());
                    }
                    args.json_body = Some(m);
                }
                _ => return Err(Error::BadRequest("The JSON body must be an object".into())),
            }
        }
        Ok(())
    }

    /// A string argument.
    pub fn str(&self, k: &str) -> Option<String> {
        match self.map.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// A required string argument.
    pub fn required(&self, k: &str) -> Result<String> {
        self.str(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Validation(format!("Argument \"{k}\" is required")))
    }

    /// An argument that is JSON (given as JSON or as a JSON string).
    pub fn json(&self, k: &str) -> Result<Option<Value>> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => {
                let v: Value = serde_json::from_str(s).map_err(|e| {
                    Error::BadRequest(format!("Argument \"{k}\" is not valid JSON: {e}"))
                })?;
                refuse_nul_in(&v)?;
                Ok(Some(v))
            }
            Some(v) => Ok(Some(v.clone())),
        }
    }

    /// A JSON object argument (e.g. `doc`, `data`).
    pub fn object(&self, k: &str) -> Result<Option<Map<String, Value>>> {
        match self.json(k)? {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(Error::BadRequest(format!(
                "Argument \"{k}\" must be a JSON object"
            ))),
        }
    }

    /// A non-negative integer argument.
    pub fn uint(&self, k: &str) -> Result<Option<u64>> {
        match self.map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                Error::BadRequest(format!("Argument \"{k}\" must be a non-negative integer"))
            }),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
                Error::BadRequest(format!(
                    "Argument \"{k}\" must be a non-negative integer, not {s:?}"
                ))
            }),
            Some(_) => Err(Error::BadRequest(format!(
                "Argument \"{k}\" must be a non-negative integer"
            ))),
        }
    }

    /// The document of a resource insert or update: `data` (form or JSON) or the JSON body itself.
    pub fn document(&self) -> Result<Map<String, Value>> {
        // A JSON body is the document itself, unless it only wraps one as {"data": {...}};
        // a form carries it as data=<json>.
        match &self.json_body {
            Some(b) if !(b.len() == 1 && b.get("data").is_some_and(Value::is_object)) => {
                return Ok(b.clone())
            }
            _ => {}
        }
        if let Some(d) = self.object("data")? {
            return Ok(d);
        }
        self.json_body.clone().ok_or_else(|| {
            Error::BadRequest(
                "Send the document as a JSON body or as the form field data=<json>".into(),
            )
        })
    }
}

/// Refuses text with a NUL character: PostgreSQL cannot store it, and no document needs it.
pub fn refuse_nul(s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(Error::Validation(
            "Text may not contain the NUL character (\\u0000)".into(),
        ));
    }
    Ok(())
}

fn refuse_nul_in(v: &Value) -> Result<()> {
    match v {
        Value::String(s) => refuse_nul(s),
        Value::Array(a) => a.iter().try_for_each(refuse_nul_in),
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            refuse_nul(k)?;
            refuse_nul_in(v)
        }),
        _ => Ok(()),
    }
}
