//! The knowledge folders a desired state declares (`knowledge: [docs, src]` in a project file), and
//! one incremental pass over all of them — what `serve` runs whenever they change.
//!
//! Each folder is the source named after it (`docs`, `src/api`) of its project, indexed from
//! `<project path>/<folder>`. A folder that does not exist (yet) is reported and skipped; a folder
//! removed from the desired state keeps what was indexed (remove it with `knowledge remove`).

use std::path::PathBuf;
use std::sync::Arc;

use super::embed::Embedder;
use super::index::{IndexError, IndexOptions, IndexReport, Indexer, NoProgress, Target};
use crate::state::Desired;
use crate::store::Store;

/// One declared folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeFolder {
    pub target: Target,
    pub path: PathBuf,
}

/// Every knowledge folder of every project, in project order.
pub fn declared_folders(desired: &Desired) -> Vec<KnowledgeFolder> {
    let mut out = Vec::new();
    for (name, p) in &desired.projects {
        let Some(root) = &p.path else { continue };
        for folder in &p.knowledge {
            // Validation admitted the names; a name the indexer would refuse is skipped, not fatal.
            if let Ok(target) = Target::new(Some(name), folder) {
                out.push(KnowledgeFolder {
                    target,
                    path: root.join(folder),
                });
            }
        }
    }
    out
}

/// The outcome of one folder in a pass.
#[derive(Debug)]
pub struct FolderOutcome {
    pub folder: KnowledgeFolder,
    pub result: Result<IndexReport, IndexError>,
}

/// Indexes declared folders into one store with one (optional) embedder.
pub struct FolderIndexer {
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn Embedder>>,
}

impl FolderIndexer {
    pub fn new(store: Arc<dyn Store>, embedder: Option<Arc<dyn Embedder>>) -> Self {
        FolderIndexer { store, embedder }
    }

    /// One incremental pass over `folders` (unchanged files cost a `stat` each). Folders that do not
    /// exist are left out of the result.
    pub async fn sync(&self, folders: &[KnowledgeFolder]) -> Vec<FolderOutcome> {
        let indexer = Indexer::new(
            self.store.clone(),
            self.embedder.clone(),
            IndexOptions::default(),
        );
        let mut out = Vec::new();
        for f in folders {
            if !f.path.is_dir() {
                tracing::warn!(
                    project = %f.target.project,
                    folder = %f.path.display(),
                    "knowledge folder does not exist; skipped"
                );
                continue;
            }
            let result = indexer
                .index_paths(&f.target, std::slice::from_ref(&f.path), &NoProgress)
                .await;
            out.push(FolderOutcome {
                folder: f.clone(),
                result,
            });
        }
        out
    }
}
