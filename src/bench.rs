//! `docstream bench`: measured on temporary sites (filled in below).

use crate::error::Result;
use std::path::Path;

/// Runs the benchmark.
pub async fn run(docs: usize, json: Option<&Path>) -> Result<()> {
    let _ = (docs, json);
    Err(crate::Error::Validation("bench is not built yet".into()))
}
