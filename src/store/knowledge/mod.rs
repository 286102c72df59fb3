//! Knowledge storage: indexed documents and their chunks, full-text and vector search over them.
//!
//! A *document* is one indexed file, JSONL record or learning, identified by (project, source, document);
//! its *chunks* are what search returns. [`KnowledgeRepo::replace_document`] writes a document row and
//! all its chunks in one transaction, so a reader never sees half a document and an interrupted index
//! run loses nothing it already committed.
//!
//! Guarantees:
//! - Vectors carry their model name and dimension; [`KnowledgeRepo::vector_search`] compares a query
//!   only with vectors of the same model and dimension, so vectors of two models never mix.
//! - PostgreSQL: one partial HNSW index per (model, dimension), created when that model's first vectors
//!   are written; the search query names the model literally so the planner can use that index, and
//!   asks pgvector (≥ 0.8) for an iterative scan so filters do not starve the result. SQLite: an exact
//!   scan with sqlite-vec's cosine distance.
//! - Full text: FTS5 bm25 (SQLite) or `ts_rank_cd` (PostgreSQL) over title, content and the chunk's
//!   *lexemes* (code identifiers split into words by the caller). Query terms are sanitised to letters
//!   and digits here, whatever the caller passes, so a query can never inject search syntax.
//! - `project` is `""` ([`SHARED`]) for shared sources; filters name projects explicitly.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub(crate) use postgres::PgKnowledgeState;

use super::Result;

/// The project of shared sources: visible to every project's searches.
pub const SHARED: &str = "";

/// How a document was cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    Markdown,
    Code,
    Text,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Markdown => "markdown",
            DocumentKind::Code => "code",
            DocumentKind::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "markdown" => Some(DocumentKind::Markdown),
            "code" => Some(DocumentKind::Code),
            "text" => Some(DocumentKind::Text),
            _ => None,
        }
    }
}

/// What the indexer recorded about one document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentRecord {
    /// [`SHARED`] for shared sources.
    pub project: String,
    pub source: String,
    /// An absolute path, a JSONL record id or a learning id.
    pub document: String,
    pub kind: DocumentKind,
    pub url: Option<String>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    /// Hash of the document's bytes and of the chunker's version: equal means nothing to do.
    pub content_hash: String,
    pub size_bytes: i64,
    /// The file's modification time when it was read (a cheap first check before hashing).
    pub modified_at: Option<DateTime<Utc>>,
    /// The model every chunk of the document is embedded with; `None` when not embedded.
    pub model: Option<String>,
    pub chunk_count: i32,
    /// Credentials found by the detector and masked before indexing.
    pub masked_secrets: i32,
    pub indexed_at: DateTime<Utc>,
}

/// One chunk of a document, as written by [`KnowledgeRepo::replace_document`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub chunk_index: i32,
    /// Heading path, definition or record title.
    pub title: Option<String>,
    pub content: String,
    /// Extra words for full-text search (identifiers split into words).
    pub lexemes: String,
    /// Hash of the text that was embedded (title and content): equal hashes share a vector.
    pub content_hash: String,
    pub url: Option<String>,
    /// 1-based, inclusive.
    pub line_start: Option<i32>,
    pub line_end: Option<i32>,
    pub tags: Vec<String>,
    /// (model name, unit-length vector)
    pub embedding: Option<(String, Vec<f32>)>,
}

/// Which chunks a search or listing sees. Empty lists mean "no restriction".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    /// `None`: every project. `Some(list)`: only these ([`SHARED`] for shared sources).
    pub projects: Option<Vec<String>>,
    /// Any of these sources.
    pub sources: Vec<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
}

/// A search hit before fusion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkHit {
    pub id: i64,
    pub document: String,
    pub chunk_index: i32,
    /// Higher is better: bm25 (negated) / ts_rank_cd for text search, cosine similarity for vectors.
    pub score: f64,
}

/// A stored chunk, for showing a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRow {
    pub id: i64,
    pub project: String,
    pub source: String,
    pub document: String,
    pub chunk_index: i32,
    pub title: Option<String>,
    pub content: String,
    pub url: Option<String>,
    pub line_start: Option<i32>,
    pub line_end: Option<i32>,
    pub tags: Vec<String>,
    pub model: Option<String>,
}

/// One source of one project, as `knowledge list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceSummary {
    /// [`SHARED`] for shared sources.
    pub project: String,
    pub source: String,
    pub documents: i64,
    pub chunks: i64,
    /// Chunks per embedding model; chunks without a vector are counted in `unembedded`.
    pub models: BTreeMap<String, i64>,
    pub unembedded: i64,
    pub masked_secrets: i64,
    pub last_indexed_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait KnowledgeRepo {
    /// Every document recorded for (project, source).
    async fn knowledge_documents(&self, project: &str, source: &str)
    -> Result<Vec<DocumentRecord>>;
    /// Vectors of `model` already stored for chunks with these content hashes (any project: a vector
    /// depends only on the model and the text). One entry per hash found.
    async fn embeddings_by_hash(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, Vec<f32>)>>;
    /// Replaces the document's row and all its chunks in one transaction.
    async fn replace_document(&self, doc: &DocumentRecord, chunks: &[NewChunk]) -> Result<()>;
    /// Deletes documents and their chunks; returns how many chunks went.
    async fn delete_documents(
        &self,
        project: &str,
        source: &str,
        documents: &[String],
    ) -> Result<u64>;
    /// Deletes a whole source of a project; returns (documents, chunks) deleted.
    async fn delete_source(&self, project: &str, source: &str) -> Result<(u64, u64)>;
    /// Full-text search: chunks matching any of `terms`, best first.
    async fn text_search(
        &self,
        filter: &ChunkFilter,
        terms: &[String],
        limit: i64,
    ) -> Result<Vec<ChunkHit>>;
    /// Cosine similarity with vectors of `model` (and the query's dimension) only, best first.
    async fn vector_search(
        &self,
        filter: &ChunkFilter,
        model: &str,
        query: &[f32],
        limit: i64,
    ) -> Result<Vec<ChunkHit>>;
    /// The chunks with these ids (any order; missing ids are left out).
    async fn chunks_by_id(&self, ids: &[i64]) -> Result<Vec<ChunkRow>>;
    /// Sources with their counts, filtered by project like a search.
    async fn knowledge_sources(&self, projects: Option<&[String]>) -> Result<Vec<SourceSummary>>;
}

/// Search terms safe to put in FTS5 or tsquery syntax: letters and digits only, lower case, no empties,
/// no duplicates, at most 64.
pub(crate) fn sanitized_terms(terms: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in terms {
        let clean: String = t
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !clean.is_empty() && !out.contains(&clean) {
            out.push(clean);
        }
        if out.len() == 64 {
            break;
        }
    }
    out
}

/// Model names go into SQL text on PostgreSQL (partial-index predicates cannot use parameters), so they
/// are restricted to a safe alphabet everywhere.
pub fn valid_model_name(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= 100
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
}

fn invalid_model(model: &str) -> super::StoreError {
    super::StoreError::Conflict(format!(
        "invalid embedding model name {model:?}: use letters, digits and - _ . : / @ (at most 100)"
    ))
}

/// Merges per-(project, source, model) chunk counts and per-(project, source) document counts.
#[allow(clippy::type_complexity)]
fn summarize(
    chunk_counts: Vec<(String, String, Option<String>, i64)>,
    doc_counts: Vec<(String, String, i64, i64, Option<DateTime<Utc>>)>,
) -> Vec<SourceSummary> {
    let mut by_source: BTreeMap<(String, String), SourceSummary> = BTreeMap::new();
    fn entry(
        map: &mut BTreeMap<(String, String), SourceSummary>,
        project: String,
        source: String,
    ) -> &mut SourceSummary {
        map.entry((project.clone(), source.clone()))
            .or_insert_with(|| SourceSummary {
                project,
                source,
                documents: 0,
                chunks: 0,
                models: BTreeMap::new(),
                unembedded: 0,
                masked_secrets: 0,
                last_indexed_at: None,
            })
    }
    for (project, source, model, n) in chunk_counts {
        let s = entry(&mut by_source, project, source);
        s.chunks += n;
        match model {
            Some(m) => *s.models.entry(m).or_insert(0) += n,
            None => s.unembedded += n,
        }
    }
    for (project, source, documents, masked, last) in doc_counts {
        let s = entry(&mut by_source, project, source);
        s.documents = documents;
        s.masked_secrets = masked;
        s.last_indexed_at = last;
    }
    by_source.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_sanitised() {
        let terms = [
            "Deploy\"".to_string(),
            "AND".into(),
            "(x*".into(),
            "".into(),
            "deploy".into(),
        ];
        assert_eq!(sanitized_terms(&terms), ["deploy", "and", "x"]);
    }

    #[test]
    fn model_names_are_restricted() {
        assert!(valid_model_name("all-MiniLM-L6-v2"));
        assert!(valid_model_name("openai:text-embedding-3-small"));
        assert!(!valid_model_name("x'; DROP TABLE y; --"));
        assert!(!valid_model_name(""));
    }
}
