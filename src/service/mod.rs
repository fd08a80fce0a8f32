//! Services: the business rules between the HTTP handlers and the store.

pub mod auth;
pub mod documents;
pub mod files;
pub mod naming;
pub mod permissions;
pub mod provisioning;
pub mod sandbox_db;
