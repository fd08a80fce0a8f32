//! Response bodies: Frappe's `{"data": ...}` / `{"message": ...}` and its error envelope.

use crate::error::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An HTTP error in Frappe's envelope.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// Frappe's error body for an error. A missing document or type has no `exc`, as in Frappe
/// (whose clients then read it as nothing found: `FrappeClient.get_doc` returns None).
pub fn error_body(e: &Error) -> Value {
    let t = e.exc_type();
    let line = format!("frappe.exceptions.{t}: {}", e.message());
    let mut body = json!({
        "exc_type": t,
        "exception": line,
        "exc": serde_json::to_string(&[&line]).unwrap_or_default(),
        "_server_messages": serde_json::to_string(&[json!({"message": e.message()}).to_string()]).unwrap_or_default(),
    });
    if matches!(e, Error::DoesNotExist(_)) {
        body.as_object_mut().map(|m| m.remove("exc"));
    }
    body
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &error_body(&self.0))
    }
}

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    with_status(status, body.to_string())
}

fn with_status(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A 200 response whose JSON body is already written.
pub fn raw_json(body: String) -> Response {
    with_status(StatusCode::OK, body)
}

/// `{"data": value}` with 200.
pub fn data(v: Value) -> Response {
    json_response(StatusCode::OK, &json!({ "data": v }))
}

/// `{"message": value}` with 200; a method that returns nothing answers `{}`, as Frappe's
/// response builder leaves `message` out when it is None.
pub fn message(v: Value) -> Response {
    if v.is_null() {
        return json_response(StatusCode::OK, &json!({}));
    }
    json_response(StatusCode::OK, &json!({ "message": v }))
}
