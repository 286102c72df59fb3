//! The instruction layers: `.supervisor-core/*.md` (every supervisor), `.supervisor-meta/*.md` (the meta
//! supervisor only), a project's own layer, and the generated facts.
//!
//! The core and meta layers ship inside the binary (the repository's `.supervisor-core/` and
//! `.supervisor-meta/`), so `supervisor init` users have them without copying anything. A folder of the
//! same name next to the state directory overrides them file by file: a file with a built-in name
//! replaces it, a new name adds a file, and an empty file removes the built-in one. Files are taken in
//! name order; each layer keeps the source it came from, which the rendered CLAUDE.md names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One piece of instructions and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Shown in the rendered file: `.supervisor-core/20-tool-usage.md (built in)`, a path, `generated`.
    pub source: String,
    pub text: String,
}

pub const CORE_DIR: &str = ".supervisor-core";
pub const META_DIR: &str = ".supervisor-meta";

const BUILT_IN_CORE: &[(&str, &str)] = &[
    (
        "10-core-behaviours.md",
        include_str!("../../.supervisor-core/10-core-behaviours.md"),
    ),
    (
        "20-tool-usage.md",
        include_str!("../../.supervisor-core/20-tool-usage.md"),
    ),
    (
        "30-planning.md",
        include_str!("../../.supervisor-core/30-planning.md"),
    ),
    (
        "40-communication.md",
        include_str!("../../.supervisor-core/40-communication.md"),
    ),
    (
        "50-errors.md",
        include_str!("../../.supervisor-core/50-errors.md"),
    ),
    (
        "60-context.md",
        include_str!("../../.supervisor-core/60-context.md"),
    ),
];

const BUILT_IN_META: &[(&str, &str)] = &[
    (
        "10-meta-supervisor.md",
        include_str!("../../.supervisor-meta/10-meta-supervisor.md"),
    ),
    (
        "20-project-management.md",
        include_str!("../../.supervisor-meta/20-project-management.md"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("cannot read instruction layer {path}: {source}")]
pub struct LayerError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The core and meta layers in force for a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    pub core: Vec<Layer>,
    pub meta: Vec<Layer>,
}

/// Where override folders live: next to the state directory.
pub fn override_root(state_dir: &Path) -> PathBuf {
    match state_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The built-in layers overridden by `<state_dir>/../.supervisor-core/` and `…/.supervisor-meta/`.
pub fn load(state_dir: &Path) -> Result<Layers, LayerError> {
    let root = override_root(state_dir);
    Ok(Layers {
        core: merged(BUILT_IN_CORE, CORE_DIR, &root.join(CORE_DIR))?,
        meta: merged(BUILT_IN_META, META_DIR, &root.join(META_DIR))?,
    })
}

/// Built-ins only (what a fresh install has).
pub fn built_in() -> Layers {
    let list = |files: &[(&str, &str)], dir: &str| {
        files
            .iter()
            .map(|(name, text)| Layer {
                source: format!("{dir}/{name} (built in)"),
                text: (*text).to_string(),
            })
            .collect()
    };
    Layers {
        core: list(BUILT_IN_CORE, CORE_DIR),
        meta: list(BUILT_IN_META, META_DIR),
    }
}

fn merged(built_in: &[(&str, &str)], label: &str, dir: &Path) -> Result<Vec<Layer>, LayerError> {
    let mut files: BTreeMap<String, Layer> = built_in
        .iter()
        .map(|(name, text)| {
            (
                (*name).to_string(),
                Layer {
                    source: format!("{label}/{name} (built in)"),
                    text: (*text).to_string(),
                },
            )
        })
        .collect();
    for (name, path) in markdown_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LayerError {
            path: path.clone(),
            source,
        })?;
        if text.trim().is_empty() {
            files.remove(&name);
        } else {
            files.insert(
                name,
                Layer {
                    source: path.display().to_string(),
                    text,
                },
            );
        }
    }
    Ok(files.into_values().collect())
}

/// `*.md` files of `dir` (none when it does not exist), by name.
pub fn markdown_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LayerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LayerError {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LayerError {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && !name.starts_with('.') && path.is_file() {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_next_to_state_override_built_ins_file_by_file() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let core = root.path().join(CORE_DIR);
        std::fs::create_dir_all(&core).unwrap();
        std::fs::write(core.join("20-tool-usage.md"), "# Our tools\n").unwrap();
        std::fs::write(core.join("40-communication.md"), "  \n").unwrap();
        std::fs::write(core.join("70-house-rules.md"), "# House rules\n").unwrap();
        std::fs::write(core.join("notes.txt"), "ignored").unwrap();
        let layers = load(&state).unwrap();
        let names: Vec<&str> = layers.core.iter().map(|l| l.source.as_str()).collect();
        assert_eq!(names.len(), BUILT_IN_CORE.len(), "{names:#?}"); // -1 removed, +1 added
        assert!(names[0].ends_with("10-core-behaviours.md (built in)"));
        assert!(
            names[1].ends_with(".supervisor-core/20-tool-usage.md")
                && !names[1].contains("built in")
        );
        assert_eq!(layers.core[1].text, "# Our tools\n");
        assert!(!names.iter().any(|n| n.contains("40-communication")));
        assert!(names.last().unwrap().ends_with("70-house-rules.md"));
        assert_eq!(layers.meta, built_in().meta);
    }
}
