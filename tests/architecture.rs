//! The module graph: dependencies between top-level modules point one way (ARCHITECTURE.md): the faces
//! (`cli`, `serve`, `mcp`) over `ops`, over the engine and providers, over clients and the store. This
//! reads `src/` and fails on a cycle between top-level modules or on an edge pointing up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that must never exist (from, to): the layering of ARCHITECTURE.md.
const FORBIDDEN: &[(&str, &str)] = &[
    ("mcp", "serve"),
    ("mcp", "cli"),
    ("ops", "mcp"),
    ("ops", "serve"),
    ("ops", "cli"),
    ("engine", "ops"),
    ("engine", "mcp"),
    ("engine", "serve"),
    ("engine", "cli"),
    ("engine", "providers"),
    ("providers", "ops"),
    ("providers", "mcp"),
    ("providers", "serve"),
    ("providers", "cli"),
    ("clients", "engine"),
    ("clients", "providers"),
    ("clients", "state"),
    ("store", "engine"),
    ("store", "providers"),
    ("store", "ops"),
    ("serve", "cli"),
];

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

/// Top-level module → the top-level modules its code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        // Code only: comments may name any module.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // `crate::FORMAT_VERSION` and other items of lib.rs are not modules.
            if !name.is_empty() && name.chars().next().unwrap().is_lowercase() && name != module {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_form_no_cycle_and_no_edge_points_up() {
    let graph = graph();
    for (from, to) in FORBIDDEN {
        assert!(
            !graph.get(*from).is_some_and(|d| d.contains(*to)),
            "{from} must not depend on {to}"
        );
    }
    // Kahn's algorithm: every module is placed, or a cycle remains.
    let mut remaining = graph.clone();
    let mut order = Vec::new();
    loop {
        let ready: Vec<String> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for m in ready {
            remaining.remove(&m);
            order.push(m);
        }
    }
    assert!(
        remaining.is_empty(),
        "a cycle between top-level modules: {:#?}",
        remaining
            .iter()
            .map(|(m, d)| format!(
                "{m} -> {}",
                d.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("bottom-up: {}", order.join(" < "));
}
