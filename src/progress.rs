//! Progress of long work (a bench phase, a catch-up of many updates): a bar on a terminal, and
//! plain lines (each quarter, and the end) when stderr is not one.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// The bar on screen, with its label and the last quarter printed in plain mode.
struct Shown {
    label: String,
    bar: Option<ProgressBar>,
    quarter: u64,
}

static SHOWN: Mutex<Option<Shown>> = Mutex::new(None);

fn bar(label: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::new(t),
            "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {prefix}: {pos} ({per_sec})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// `done` of `total` (None when the end is not known) of the work called `label`.
pub fn report(label: &str, done: u64, total: Option<u64>) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    if shown.as_ref().is_none_or(|s| s.label != label) {
        if let Some(old) = shown.take().and_then(|s| s.bar) {
            old.finish_and_clear();
        }
        *shown = Some(Shown {
            label: label.to_string(),
            bar: terminal.then(|| bar(label, total)),
            quarter: 0,
        });
    }
    let Some(s) = shown.as_mut() else { return };
    match &s.bar {
        Some(b) => {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(done);
        }
        None => {
            if let Some(t) = total.filter(|t| *t > 0) {
                let quarter = done * 4 / t;
                if quarter > s.quarter && quarter < 4 {
                    s.quarter = quarter;
                    eprintln!("{label}: {done}/{t}");
                }
            }
        }
    }
}

/// The work called `label` is over: its bar goes and one line says so.
pub fn finish(label: &str, summary: &str) {
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = shown.take().and_then(|s| s.bar) {
        old.finish_and_clear();
    }
    eprintln!("{label}: {summary}");
}
