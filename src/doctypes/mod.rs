//! Behaviour of built-in types (checks and side effects on save and delete), one module per
//! type, registered at the write path's hook points; the fields themselves are data in
//! `doctypes/*.json`. Adding a type is a JSON file; add a module only for behaviour. The
//! streaming types' behaviour is `streaming`'s, which this module must not import.

mod custom_field;
mod doctype;
mod file;
mod role;
mod sales_invoice;
mod server_script;
mod user;

use crate::service::hooks::Hooks;
use std::sync::Arc;

/// Registers the built-in types' behaviour.
pub fn register(hooks: &mut Hooks) {
    hooks.on(&["User"], Arc::new(user::Events));
    hooks.on(&["Role"], Arc::new(role::Events));
    hooks.on(&["DocType"], Arc::new(doctype::Events));
    hooks.on(&["Custom Field"], Arc::new(custom_field::Events));
    hooks.on(&["Server Script"], Arc::new(server_script::Events));
    hooks.on(&["Sales Invoice"], Arc::new(sales_invoice::Events));
    hooks.on(&["File"], Arc::new(file::Events));
}
