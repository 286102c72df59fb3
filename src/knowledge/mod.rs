//! Knowledge search (RAG): project docs, code and learnings, cut into chunks, embedded, and searched
//! by full text and vectors together.
//!
//! - [`chunk`] cuts markdown by heading, code by definition (or overlapping windows), text by paragraph.
//! - [`lexical`] splits code identifiers (`getUserName`, `get_user_name`) for the full-text side.
//! - [`embed`] is the [`Embedder`](embed::Embedder) abstraction: the built-in offline model
//!   ([`local`], candle, feature `local-embeddings`) or an OpenAI-compatible endpoint
//!   (`clients::embeddings`). Embedding runs on a bounded worker, never on the async threads.
//! - [`walk`] finds files, honouring `.gitignore`.
//! - [`index`] is the incremental indexer (content hashes, vector reuse, one transaction per document,
//!   credentials masked and reported, binary/huge/ignored files skipped and counted); learnings are
//!   single documents of the `learnings` source.
//! - [`search`] is hybrid search with weighted z-score fusion tuned on development data.
//!
//! Storage is `store::knowledge` (SQLite FTS5 + sqlite-vec, PostgreSQL tsvector + pgvector HNSW).
//! Nothing here knows about the terminal, MCP or HTTP serving: the CLI, `serve` and the MCP tools call
//! [`learn`], [`index::Indexer`] and [`search::Searcher`].

pub mod chunk;
pub mod embed;
pub mod folders;
pub mod index;
pub mod lexical;
#[cfg(feature = "local-embeddings")]
pub mod local;
pub mod search;
pub mod walk;

use std::sync::Arc;

use serde::Serialize;

use crate::store::{DocumentKind, Store};
use embed::Embedder;
use index::{IndexError, IndexOptions, Indexer, InputRecord, LEARNINGS_SOURCE, Target};

/// What an agent (or a person) learned, for every later agent of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct Learning {
    /// `None`: a shared learning, visible to every project.
    pub project: Option<String>,
    pub title: String,
    pub text: String,
    pub tags: Vec<String>,
}

/// A stored learning.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct LearningRecord {
    pub id: String,
    pub project: Option<String>,
    pub source: String,
    pub title: String,
    pub chunks: usize,
    /// The model its chunks are embedded with (`None`: full-text only for now).
    pub model: Option<String>,
    /// Credentials found in the text and masked before it was stored.
    pub secrets_masked: usize,
}

/// The longest learning accepted, in bytes.
pub const MAX_LEARNING_BYTES: usize = 64 * 1024;

/// Stores a learning as one document of the `learnings` source (chunked, embedded, searchable).
pub async fn learn(
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn Embedder>>,
    learning: Learning,
) -> Result<LearningRecord, IndexError> {
    let invalid = |detail: &str| IndexError::Invalid {
        what: "learning",
        detail: detail.to_string(),
    };
    let title = learning.title.trim().to_string();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(invalid("the title must be 1 to 200 characters"));
    }
    if learning.text.trim().is_empty() {
        return Err(invalid("the text is empty"));
    }
    if learning.text.len() > MAX_LEARNING_BYTES {
        return Err(invalid(&format!(
            "the text is longer than {MAX_LEARNING_BYTES} bytes"
        )));
    }
    for (field, value) in [("title", &title), ("text", &learning.text)] {
        if value.contains('\0') {
            return Err(invalid(&format!(
                "the {field}: {}",
                crate::store::NUL_IN_TEXT
            )));
        }
    }
    let mut tags: Vec<String> = Vec::new();
    for t in &learning.tags {
        let t = t.trim().to_lowercase();
        if t.is_empty()
            || t.len() > 50
            || !t
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            return Err(invalid(&format!(
                "tag {t:?}: use 1 to 50 letters, digits and - _ . /"
            )));
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let target = Target::new(learning.project.as_deref(), LEARNINGS_SOURCE)?;
    let id = format!("learning-{}", uuid::Uuid::new_v4().simple());
    let indexer = Indexer::new(store, embedder, IndexOptions::default());
    let report = indexer
        .index_one(
            &target,
            InputRecord {
                id: id.clone(),
                text: learning.text,
                title: Some(title.clone()),
                url: None,
                tags,
                kind: Some(DocumentKind::Markdown),
            },
        )
        .await?;
    Ok(LearningRecord {
        id,
        project: report.project.clone(),
        source: LEARNINGS_SOURCE.to_string(),
        title,
        chunks: report.chunks_written,
        model: report.model.clone(),
        secrets_masked: report.secrets_masked.len(),
    })
}
