//! Services: the business rules between the HTTP handlers and the store.
//! Must not import the layers above (`doctypes`, `streaming`, `api`): it reaches their
//! behaviour only through `hooks`.

pub mod auth;
pub mod backup;
pub mod backup_schedule;
pub mod diff;
pub mod documents;
pub mod files;
pub mod hooks;
pub mod naming;
pub mod permissions;
pub mod provisioning;
pub mod sandbox_db;
