//! Event streaming: the producer's update log and pull method, the consumer's handshake, pull
//! and apply, and the HTTP client between sites.

pub mod apply;
pub mod consumer;
pub mod diff;
pub mod producer;
pub mod remote;
pub mod update_log;
