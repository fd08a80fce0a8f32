//! `/api/openapi.json`: an OpenAPI 3 description of the REST API and the site's document types.

use super::envelope::json_response;
use crate::site::Site;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

const METHODS: [&str; 17] = [
    "login",
    "logout",
    "frappe.ping",
    "frappe.auth.get_logged_user",
    "frappe.client.get_list",
    "frappe.client.get_count",
    "frappe.client.get",
    "frappe.client.get_value",
    "frappe.client.set_value",
    "frappe.client.insert",
    "frappe.client.insert_many",
    "frappe.client.save",
    "frappe.client.delete",
    "frappe.client.submit",
    "frappe.client.cancel",
    "frappe.client.rename_doc",
    "frappe.core.doctype.user.user.generate_keys",
];

/// The OpenAPI document.
pub fn document(site: &Site) -> Response {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err_responses = json!({
        "400": {"description": "ValidationError: unparseable input", "content": {"application/json": {"schema": error}}},
        "401": {"description": "AuthenticationError", "content": {"application/json": {"schema": error}}},
        "403": {"description": "PermissionError", "content": {"application/json": {"schema": error}}},
        "404": {"description": "DoesNotExistError", "content": {"application/json": {"schema": error}}},
        "409": {"description": "DuplicateEntryError", "content": {"application/json": {"schema": error}}},
        "417": {"description": "ValidationError, MandatoryError, LinkValidationError, LinkExistsError, TimestampMismatchError", "content": {"application/json": {"schema": error}}}
    });
    let mut paths = Map::new();
    let with_errors = |ok: Value| {
        let mut r = err_responses.as_object().cloned().unwrap_or_default();
        r.insert("200".into(), ok);
        Value::Object(r)
    };
    let list_params = json!([
        {"name": "doctype", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "JSON list of fields, or [\"*\"]"},
        {"name": "filters", "in": "query", "schema": {"type": "string"}, "description": "JSON filters: [[field, op, value]], [[doctype, field, op, value]] or {field: value}"},
        {"name": "or_filters", "in": "query", "schema": {"type": "string"}},
        {"name": "order_by", "in": "query", "schema": {"type": "string"}},
        {"name": "limit_start", "in": "query", "schema": {"type": "integer"}},
        {"name": "limit_page_length", "in": "query", "schema": {"type": "integer"}}
    ]);
    let doc_ok = json!({"description": "The document", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"type": "object"}}}}}});
    paths.insert("/api/resource/{doctype}".into(), json!({
        "get": {"summary": "List documents", "parameters": list_params, "responses": with_errors(json!({"description": "Rows", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}}}}}))},
        "post": {"summary": "Insert a document (JSON body, or form data=<json>)", "parameters": [{"name": "doctype", "in": "path", "required": true, "schema": {"type": "string"}}], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}, "responses": with_errors(doc_ok.clone())}
    }));
    let name_params = json!([
        {"name": "doctype", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}
    ]);
    paths.insert("/api/resource/{doctype}/{name}".into(), json!({
        "get": {"summary": "Get a document with its child rows", "parameters": name_params, "responses": with_errors(doc_ok.clone())},
        "put": {"summary": "Update a document (partial; child tables replaced as sent)", "parameters": name_params, "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}, "responses": with_errors(doc_ok)},
        "delete": {"summary": "Delete a document", "parameters": name_params, "responses": {"202": {"description": "Deleted"}}}
    }));
    for m in METHODS {
        // Methods that change state are POST: a cookie session calling them with GET is
        // refused (403); token and Basic clients may still use GET, as in Frappe.
        let mut item = json!({
            "post": {"summary": m, "responses": with_errors(json!({"description": "{\"message\": result}"}))}
        });
        if super::method::reads_only(m) {
            item["get"] = json!({"summary": m, "responses": with_errors(json!({"description": "{\"message\": result}"}))});
        }
        paths.insert(format!("/api/method/{m}"), item);
    }
    paths.insert("/api/method/upload_file".into(), json!({
        "post": {"summary": "Upload a file (multipart/form-data: file, is_private, folder, doctype, docname, fieldname)",
                 "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}},
                 "responses": with_errors(json!({"description": "{\"message\": <File>}"}))}
    }));
    for p in ["/health", "/metrics"] {
        paths.insert(p.into(), json!({"get": {"summary": p, "security": [], "responses": {"200": {"description": "OK"}}}}));
    }
    let doctypes: Vec<Value> = site.meta().all().iter().map(|d| json!(d.name)).collect();
    let body = json!({
        "openapi": "3.0.3",
        "info": {"title": "docstream", "version": env!("CARGO_PKG_VERSION"), "description": "Frappe-compatible REST API of a docstream site"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "token <api_key>:<api_secret>"},
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sid"}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"exc_type": {"type": "string"}, "exception": {"type": "string"}, "exc": {"type": "string"}, "_server_messages": {"type": "string"}}},
                "DocTypeName": {"type": "string", "enum": doctypes}
            }
        },
        "security": [{"token": []}, {"basic": []}, {"session": []}]
    });
    json_response(StatusCode::OK, &body)
}
