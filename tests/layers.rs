//! The layers of `src/`, written down once, and the check that no module imports one above it
//! (in the manner of rust-analyzer's tidy tests: it reads the source, so a build that breaks
//! the rule fails its tests).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layer may use the layers before it, never one after. Modules of one layer do not use
/// each other either, unless listed in [`SAME_LAYER`].
const LAYERS: &[&[&str]] = &[
    &["error", "time", "progress"],
    &["crypto", "config", "meta", "sandbox"],
    &["store"],
    &["site"],
    &["service"],
    &["doctypes", "streaming"],
    &["hooks"],
    &["api"],
    &["desk", "shop_link", "tls"],
    &["server"],
    &["demo", "bench"],
    &["cli"],
    &["properties"],
];

/// Uses inside one layer, lower module first: the cases where one is built on the other.
const SAME_LAYER: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top module a file of `src/` belongs to (`None` for the crate root files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// The top modules a file names through `crate::` (comments left out).
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::Error` and `crate::Result` are the root's re-exports of `error`.
            let name = match name.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => name,
            };
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

/// Every (module, module it uses) of `src/` that the order does not allow.
fn upward_imports() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let from = layer_of(&module)
            .unwrap_or_else(|| panic!("{module} (src/{module}) is in no layer of tests/layers.rs"));
        let text = std::fs::read_to_string(&file).unwrap();
        for used in used_modules(&text) {
            if used == module {
                continue;
            }
            let Some(to) = layer_of(&used) else {
                panic!(
                    "{} uses crate::{used}, which is in no layer",
                    file.display()
                );
            };
            let allowed =
                to < from || (to == from && SAME_LAYER.contains(&(used.as_str(), module.as_str())));
            if !allowed {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                out.push((module.clone(), used, rel));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let found: Vec<String> = upward_imports()
        .iter()
        .map(|(m, u, f)| {
            format!("src/{f}: {m} uses {u}, a module of a layer above it (or beside it)")
        })
        .collect();
    assert!(
        found.is_empty(),
        "upward imports (the order is in tests/layers.rs and ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_reads_imports_as_written() {
    let text = "use crate::store::Conn;\n// crate::api in a comment\nlet x = crate::streaming::x(crate::Error::X);";
    let used: Vec<String> = used_modules(text).into_iter().collect();
    assert_eq!(used, ["error", "store", "streaming"]);
}
