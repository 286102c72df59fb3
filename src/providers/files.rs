//! What file-backed providers share (tunnel's local `config.yml`, the instructions' CLAUDE.md files):
//! reading a file that may not exist, content digests, unified diffs for plans, and atomic writes — all
//! file I/O on the blocking pool.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::engine::ProviderError;

/// `sha256:<hex>` of a text.
pub fn sha256(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The unified diff between two texts (`None` when equal).
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let diff = similar::TextDiff::from_lines(old, new);
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(old_name, new_name)
            .to_string(),
    )
}

/// The file's text, `None` when it does not exist.
pub async fn read_optional(path: &Path) -> Result<Option<String>, ProviderError> {
    let p: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProviderError::Failed(format!(
            "cannot read {}: {e}",
            p.display()
        ))),
    })
    .await
    .map_err(|e| ProviderError::Failed(format!("reading {}: {e}", path.display())))?
}

/// Whether `path` is an existing directory (off the async threads).
pub async fn is_dir(path: &Path) -> bool {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || p.is_dir())
        .await
        .unwrap_or(false)
}

/// Replaces the file atomically (temporary file in the same directory, fsync, rename).
pub async fn write_atomic(path: &Path, text: &str) -> Result<(), ProviderError> {
    let (p, t) = (path.to_path_buf(), text.to_string());
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || crate::state::edit::write_atomic(&p, &t))
        .await
        .map_err(|e| ProviderError::Failed(format!("writing {shown}: {e}")))?
        .map_err(|e| ProviderError::Failed(format!("cannot write {shown}: {e}")))
}
