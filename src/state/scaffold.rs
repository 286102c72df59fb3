//! `supervisor init`: a commented example state directory.

use std::path::{Path, PathBuf};

use super::edit::write_atomic;

pub const SUPERVISOR_TEMPLATE: &str = include_str!("templates/supervisor.yaml");
pub const PROJECT_TEMPLATE: &str = include_str!("templates/example.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0} already exists; init never overwrites state (remove it or choose another directory)"
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Keeps the machine-edit lock file (`edit.rs`) out of the user's git history.
const GITIGNORE: &str =
    "# written by supervisor while it edits state files (MCP tools)\n/.edit.lock\n";

/// Creates `dir/supervisor.yaml`, `dir/projects/example.yaml` and `dir/.gitignore`; refuses to
/// overwrite anything. Returns the files written.
pub fn scaffold(dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let files = [
        (dir.join(super::SUPERVISOR_FILE), SUPERVISOR_TEMPLATE),
        (
            dir.join(super::PROJECTS_DIR).join("example.yaml"),
            PROJECT_TEMPLATE,
        ),
        (dir.join(".gitignore"), GITIGNORE),
    ];
    if let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
        return Err(ScaffoldError::Exists(p.clone()));
    }
    for (path, text) in &files {
        write_atomic(path, text).map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}
