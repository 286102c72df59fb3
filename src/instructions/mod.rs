//! Agent instructions (CLAUDE.md), assembled from layers: the core layer every supervisor shares
//! (`.supervisor-core/`), the meta layer of the meta supervisor (`.supervisor-meta/`), a project's own
//! layer (`instructions:` in its state file and the `*.md` files of its `instructions_dir`), and the
//! generated facts. The `instructions` provider reconciles the files; `supervisor instructions render`
//! prints a section; `instructions adapt` drafts a project layer from a project's folder.
//!
//! Guarantees: layers are assembled in a fixed order, each introduced by a comment naming its source; the
//! supervisor owns only the text between its markers (`render::BEGIN`/`END`), everything else in a
//! CLAUDE.md is kept byte for byte; a section over the budget is refused naming the largest layers.
//! Secret values never appear (only paths).

pub mod adapt;
pub mod facts;
pub mod layers;
pub mod render;

use std::path::{Path, PathBuf};

use layers::{Layer, LayerError, Layers};

use crate::state::{Desired, Project};

/// The project layer: `instructions:` of the state file, then the `*.md` files of `instructions_dir`.
pub fn project_layer(desired: &Desired, p: &Project) -> Result<Vec<Layer>, LayerError> {
    let mut out = Vec::new();
    if let Some(text) = p.instructions.as_deref().filter(|t| !t.trim().is_empty()) {
        out.push(Layer {
            source: format!("{} (instructions)", desired.project_file(&p.name).display()),
            text: text.to_string(),
        });
    }
    if let Some(dir) = instructions_dir(p) {
        for (_, path) in layers::markdown_files(&dir)? {
            let text = std::fs::read_to_string(&path).map_err(|source| LayerError {
                path: path.clone(),
                source,
            })?;
            if !text.trim().is_empty() {
                out.push(Layer {
                    source: path.display().to_string(),
                    text,
                });
            }
        }
    }
    Ok(out)
}

/// The project's `instructions_dir`, resolved against its `path`.
pub fn instructions_dir(p: &Project) -> Option<PathBuf> {
    let dir = p.instructions_dir.as_ref()?;
    Some(match &p.path {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir.clone(),
    })
}

/// Every layer of a project's CLAUDE.md, in order: core, project, facts.
pub fn for_project(
    layers: &Layers,
    desired: &Desired,
    p: &Project,
    port_of: impl Fn(&str, &str) -> Option<u16>,
    endpoint: &facts::Endpoint,
) -> Result<Vec<Layer>, LayerError> {
    let mut out = layers.core.clone();
    out.extend(project_layer(desired, p)?);
    out.push(facts::project(desired, p, port_of, endpoint));
    Ok(out)
}

/// Every layer of the meta supervisor's CLAUDE.md, in order: core, meta, the fleet's facts.
pub fn for_meta(
    layers: &Layers,
    desired: &Desired,
    port_of: impl Fn(&str, &str) -> Option<u16>,
    endpoint: &facts::Endpoint,
) -> Vec<Layer> {
    let mut out = layers.core.clone();
    out.extend(layers.meta.iter().cloned());
    out.push(facts::meta(desired, port_of, endpoint));
    out
}

/// Where a project's CLAUDE.md lives.
pub fn claude_md(dir: &Path) -> PathBuf {
    dir.join("CLAUDE.md")
}
