//! The behaviour of streaming's own types (Event Producer, Event Consumer, Event Update Log,
//! Event Subscriber, Document Type Mapping), registered at the write path's hook points with
//! the update log as its change log; and the work they leave for after the commit.

mod deferred;
mod document_type_mapping;
mod event_consumer;
mod event_producer;
mod event_subscriber;
mod event_update_log;

use crate::service::hooks::Hooks;
use std::sync::Arc;

/// Registers streaming's types and the update log.
pub fn register(hooks: &mut Hooks) {
    hooks.on(&["Event Producer"], Arc::new(event_producer::Events));
    hooks.on(&["Event Consumer"], Arc::new(event_consumer::Events));
    hooks.on(&["Event Update Log"], Arc::new(event_update_log::Events));
    hooks.on(&["Event Subscriber"], Arc::new(event_subscriber::Events));
    hooks.on(
        &["Document Type Mapping"],
        Arc::new(document_type_mapping::Events),
    );
    hooks.log_changes(Arc::new(super::update_log::UpdateLog));
}
