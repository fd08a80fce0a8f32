//! Embeds the project's data into the binary: every built-in DocType JSON file of `doctypes/`
//! and every mapping template of `templates/mappings/`.

use std::{env, fs, path::Path};

fn main() {
    embed(
        "doctypes",
        "BUILTIN_DOCTYPES",
        "Built-in DocType definitions",
        "builtin_doctypes.rs",
    );
    embed(
        "templates/mappings",
        "MAPPING_TEMPLATES",
        "Shipped Document Type Mapping templates",
        "mapping_templates.rs",
    );
}

/// Writes `OUT_DIR/out` with a static `name` of (file name, JSON text) for the JSON files of
/// `dir`, sorted by name.
fn embed(dir: &str, name: &str, about: &str, out: &str) {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join(dir);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut text = format!(
        "/// {about} as (file name, JSON text).\npub static {name}: &[(&str, &str)] = &[\n"
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        text.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            f.file_name().unwrap().to_string_lossy(),
            f.display().to_string()
        ));
    }
    text.push_str("];\n");
    fs::write(Path::new(&env::var("OUT_DIR").unwrap()).join(out), text).unwrap();
}
