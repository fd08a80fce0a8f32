//! Event streaming: the producer's update log and (later) the consumer's pull and apply.

pub mod diff;
pub mod update_log;
