//! Knowledge for the faces: the runtime's embedder (configured in `[knowledge]`, loaded once on first
//! use), and search and learnings confined to what a caller may see.
//!
//! Scoping: a project endpoint searches its own project's chunks plus the shared sources, and records
//! learnings in its own project only; the meta endpoint (and the CLI) searches everything, or one
//! project plus the shared sources, and may record shared learnings. Search results carry path (or URL)
//! and line range so an agent can open the file; credentials were masked when indexed.

use std::sync::Arc;

use super::{OpsError, Runtime, Visibility};
use crate::knowledge::embed::{Embedder, EmbedderChoice};
use crate::knowledge::index::IndexError;
use crate::knowledge::search::{SearchError, SearchQuery, SearchResults, Searcher, Strategy};
use crate::knowledge::{self, Learning, LearningRecord};
use crate::store::ChunkFilter;
use crate::store::knowledge::SHARED;

impl Runtime {
    /// The configured embedder, loaded on first use; `None` when none is configured or the
    /// configuration is broken (logged once: knowledge then works full-text only).
    pub async fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.embedder
            .get_or_init(|| async {
                let secrets = self
                    .vault
                    .as_deref()
                    .map(|v| v as &dyn crate::secrets::SecretSource);
                match self
                    .settings
                    .file
                    .knowledge
                    .open(secrets, "supervisor:knowledge")
                    .await
                {
                    Ok(EmbedderChoice::Ready(e)) => {
                        tracing::info!(model = e.model(), "knowledge: embedding model loaded");
                        Some(e)
                    }
                    Ok(EmbedderChoice::Unavailable(why)) => {
                        tracing::info!("knowledge: {why}");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "knowledge: the embedding model cannot be used; search and indexing are full-text only");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

/// A search as a face asks it.
#[derive(Debug, Clone)]
pub struct KnowledgeSearch {
    pub query: String,
    pub project: Option<String>,
    pub sources: Vec<String>,
    pub tags: Vec<String>,
    pub limit: usize,
}

fn search_error(e: SearchError) -> OpsError {
    match e {
        SearchError::Invalid(m) => OpsError::InvalidArgument(m),
        SearchError::Store(e) => OpsError::Store(e),
        SearchError::Embed(e) => OpsError::Internal(e.to_string()),
    }
}

fn index_error(e: IndexError) -> OpsError {
    match e {
        IndexError::Store(e) => OpsError::Store(e),
        IndexError::Invalid { what, detail } => {
            OpsError::InvalidArgument(format!("invalid {what}: {detail}"))
        }
        other => OpsError::Internal(other.to_string()),
    }
}

/// Hybrid search over what `visibility` may see: one project's knowledge plus the shared sources, or
/// (meta, no project) everything.
pub async fn search(
    rt: &Runtime,
    visibility: &Visibility,
    req: KnowledgeSearch,
) -> Result<SearchResults, OpsError> {
    let desired = rt.desired().await;
    let project = visibility.known_filter(&desired, req.project)?;
    let filter = ChunkFilter {
        projects: project.map(|p| vec![p, SHARED.to_string()]),
        sources: req.sources,
        tags: req.tags,
    };
    Searcher::new(rt.store.clone(), rt.embedder().await)
        .search(&SearchQuery {
            text: req.query,
            filter,
            limit: req.limit,
            strategy: Strategy::Hybrid,
        })
        .await
        .map_err(search_error)
}

/// Records a learning: in the endpoint's project (a project endpoint), or in the named project or the
/// shared ones (meta).
pub async fn add_learning(
    rt: &Runtime,
    visibility: &Visibility,
    project: Option<String>,
    title: String,
    text: String,
    tags: Vec<String>,
) -> Result<LearningRecord, OpsError> {
    let desired = rt.desired().await;
    let project = visibility.known_filter(&desired, project)?;
    knowledge::learn(
        rt.store.clone(),
        rt.embedder().await,
        Learning {
            project,
            title,
            text,
            tags,
        },
    )
    .await
    .map_err(index_error)
}
