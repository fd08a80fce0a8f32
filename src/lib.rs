//! docstream: sites with a Frappe-compatible REST API, and event streaming between them.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod desk;
pub mod doctypes;
pub mod error;
pub mod hooks;
pub mod meta;
pub mod progress;
#[cfg(test)]
mod properties;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod shop_link;
pub mod site;
pub mod store;
pub mod streaming;
pub mod time;
pub mod tls;

pub use error::{Error, Result};
