//! Knowledge on PostgreSQL: `tsvector` + `ts_rank_cd` for text, pgvector with one partial HNSW index per
//! (model, dimension) for vectors. Lists travel as arrays, so every statement's text is fixed except the
//! model name and dimension of vector queries, which must be literals for the planner to match the
//! partial index (model names are restricted to a safe alphabet, see [`valid_model_name`]).

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use super::{
    ChunkFilter, ChunkHit, ChunkRow, DocumentKind, DocumentRecord, KnowledgeRepo, NewChunk,
    SourceSummary, invalid_model, sanitized_terms, valid_model_name,
};
use crate::store::{PostgresStore, Result, StoreError};

/// The model whose HNSW index the first migration creates.
const BUILTIN_MODEL: (&str, usize) = ("all-MiniLM-L6-v2", 384);
const BUILTIN_INDEX: &str = "knowledge_chunks_hnsw_all_minilm_l6_v2";

/// What the PostgreSQL store remembers about knowledge between calls.
#[derive(Default)]
pub(crate) struct PgKnowledgeState {
    /// (major, minor) of pgvector, read once.
    pgvector: OnceCell<Option<(u32, u32)>>,
    /// (model, dimension) pairs whose HNSW index is known to exist.
    indexed: Mutex<HashSet<(String, usize)>>,
}

/// The name of the HNSW index of (model, dimension): readable, unique (a hash of the model name), at
/// most 63 bytes.
fn index_name(model: &str, dimension: usize) -> String {
    if (model, dimension) == BUILTIN_MODEL {
        return BUILTIN_INDEX.to_string();
    }
    let slug: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let hash = hex::encode(&Sha256::digest(model.as_bytes())[..4]);
    format!("knowledge_chunks_hnsw_{slug}_{dimension}_{hash}")
}

/// The filter as SQL over chunk alias `c`, parameters `$2`, `$3`, `$4`.
const FILTER_SQL: &str = "($2::text[] IS NULL OR c.project = ANY($2))
     AND ($3::text[] IS NULL OR c.source = ANY($3))
     AND ($4::text[] IS NULL OR c.tags @> $4)";

struct FilterParams {
    projects: Option<Vec<String>>,
    sources: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

impl FilterParams {
    fn of(f: &ChunkFilter) -> Self {
        FilterParams {
            projects: f.projects.clone(),
            sources: (!f.sources.is_empty()).then(|| f.sources.clone()),
            tags: (!f.tags.is_empty()).then(|| f.tags.clone()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct DocumentRow {
    project: String,
    source: String,
    document: String,
    kind: String,
    url: Option<String>,
    title: Option<String>,
    tags: Vec<String>,
    content_hash: String,
    size_bytes: i64,
    modified_at: Option<DateTime<Utc>>,
    model: Option<String>,
    chunk_count: i32,
    masked_secrets: i32,
    indexed_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StoredChunk {
    id: i64,
    project: String,
    source: String,
    document: String,
    chunk_index: i32,
    title: Option<String>,
    content: String,
    url: Option<String>,
    line_start: Option<i32>,
    line_end: Option<i32>,
    tags: Vec<String>,
    model: Option<String>,
}

impl PostgresStore {
    async fn pgvector_version(&self) -> Option<(u32, u32)> {
        *self
            .knowledge
            .pgvector
            .get_or_init(|| async {
                let v: Option<String> = sqlx::query_scalar(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
                )
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
                let v = v?;
                let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
                Some((parts.next()??, parts.next()??))
            })
            .await
    }

    /// Creates the partial HNSW index of (model, dimension) unless it is known to exist.
    async fn ensure_vector_index(&self, model: &str, dimension: usize) -> Result<()> {
        let key = (model.to_string(), dimension);
        let mut known = self.knowledge.indexed.lock().await;
        if known.contains(&key) {
            return Ok(());
        }
        if !valid_model_name(model) {
            return Err(invalid_model(model));
        }
        let name = index_name(model, dimension);
        let predicate = if (model, dimension) == BUILTIN_MODEL {
            format!("model = '{model}'")
        } else {
            format!("model = '{model}' AND dimension = {dimension}")
        };
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON knowledge_chunks
                 USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) WHERE {predicate}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("create the vector index of a model"))?;
        known.insert(key);
        Ok(())
    }
}

#[async_trait]
impl KnowledgeRepo for PostgresStore {
    async fn knowledge_documents(
        &self,
        project: &str,
        source: &str,
    ) -> Result<Vec<DocumentRecord>> {
        let rows: Vec<DocumentRow> = sqlx::query_as(
            "SELECT * FROM knowledge_documents WHERE project = $1 AND source = $2 ORDER BY document",
        )
        .bind(project)
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read knowledge documents"))?;
        Ok(rows
            .into_iter()
            .map(|r| DocumentRecord {
                project: r.project,
                source: r.source,
                document: r.document,
                // The CHECK constraint admits only the three kinds.
                kind: DocumentKind::parse(&r.kind).unwrap_or(DocumentKind::Text),
                url: r.url,
                title: r.title,
                tags: r.tags,
                content_hash: r.content_hash,
                size_bytes: r.size_bytes,
                modified_at: r.modified_at,
                model: r.model,
                chunk_count: r.chunk_count,
                masked_secrets: r.masked_secrets,
                indexed_at: r.indexed_at,
            })
            .collect())
    }

    async fn embeddings_by_hash(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for batch in hashes.chunks(1000) {
            let rows: Vec<(String, pgvector::Vector)> = sqlx::query_as(
                "SELECT DISTINCT ON (content_hash) content_hash, embedding FROM knowledge_chunks
                 WHERE model = $1 AND embedding IS NOT NULL AND content_hash = ANY($2)",
            )
            .bind(model)
            .bind(batch)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read stored embeddings"))?;
            for (hash, v) in rows {
                out.entry(hash).or_insert_with(|| v.to_vec());
            }
        }
        Ok(out.into_iter().collect())
    }

    async fn replace_document(&self, doc: &DocumentRecord, chunks: &[NewChunk]) -> Result<()> {
        let op = "store a knowledge document";
        let mut models: Vec<(&str, usize)> = Vec::new();
        for c in chunks {
            if let Some((model, v)) = &c.embedding {
                if !valid_model_name(model) {
                    return Err(invalid_model(model));
                }
                if !models.contains(&(model.as_str(), v.len())) {
                    models.push((model, v.len()));
                }
            }
        }
        for (model, dimension) in models {
            self.ensure_vector_index(model, dimension).await?;
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        sqlx::query(
            "DELETE FROM knowledge_chunks WHERE project = $1 AND source = $2 AND document = $3",
        )
        .bind(&doc.project)
        .bind(&doc.source)
        .bind(&doc.document)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(op))?;
        for c in chunks {
            let (model, dimension, embedding) = match &c.embedding {
                Some((model, v)) => (
                    Some(model.as_str()),
                    Some(v.len() as i32),
                    Some(pgvector::Vector::from(v.clone())),
                ),
                None => (None, None, None),
            };
            sqlx::query(
                "INSERT INTO knowledge_chunks (project, source, document, chunk_index, title, content,
                     content_hash, model, dimension, embedding, created_at, updated_at, url, line_start,
                     line_end, tags, lexemes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&doc.project)
            .bind(&doc.source)
            .bind(&doc.document)
            .bind(c.chunk_index)
            .bind(&c.title)
            .bind(&c.content)
            .bind(&c.content_hash)
            .bind(model)
            .bind(dimension)
            .bind(embedding)
            .bind(now)
            .bind(&c.url)
            .bind(c.line_start)
            .bind(c.line_end)
            .bind(&c.tags)
            .bind(&c.lexemes)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        }
        sqlx::query(
            "INSERT INTO knowledge_documents (project, source, document, kind, url, title, tags,
                 content_hash, size_bytes, modified_at, model, chunk_count, masked_secrets, indexed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (project, source, document) DO UPDATE SET
                 kind = excluded.kind, url = excluded.url, title = excluded.title, tags = excluded.tags,
                 content_hash = excluded.content_hash, size_bytes = excluded.size_bytes,
                 modified_at = excluded.modified_at, model = excluded.model,
                 chunk_count = excluded.chunk_count, masked_secrets = excluded.masked_secrets,
                 indexed_at = excluded.indexed_at",
        )
        .bind(&doc.project)
        .bind(&doc.source)
        .bind(&doc.document)
        .bind(doc.kind.as_str())
        .bind(&doc.url)
        .bind(&doc.title)
        .bind(&doc.tags)
        .bind(&doc.content_hash)
        .bind(doc.size_bytes)
        .bind(doc.modified_at)
        .bind(&doc.model)
        .bind(doc.chunk_count)
        .bind(doc.masked_secrets)
        .bind(doc.indexed_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(op))?;
        tx.commit().await.map_err(StoreError::query(op))
    }

    async fn delete_documents(
        &self,
        project: &str,
        source: &str,
        documents: &[String],
    ) -> Result<u64> {
        let op = "delete knowledge documents";
        let mut deleted = 0;
        for batch in documents.chunks(1000) {
            let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
            deleted += sqlx::query(
                "DELETE FROM knowledge_chunks WHERE project = $1 AND source = $2 AND document = ANY($3)",
            )
            .bind(project)
            .bind(source)
            .bind(batch)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?
            .rows_affected();
            sqlx::query(
                "DELETE FROM knowledge_documents WHERE project = $1 AND source = $2 AND document = ANY($3)",
            )
            .bind(project)
            .bind(source)
            .bind(batch)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
            tx.commit().await.map_err(StoreError::query(op))?;
        }
        Ok(deleted)
    }

    async fn delete_source(&self, project: &str, source: &str) -> Result<(u64, u64)> {
        let op = "delete a knowledge source";
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        let chunks = sqlx::query("DELETE FROM knowledge_chunks WHERE project = $1 AND source = $2")
            .bind(project)
            .bind(source)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?
            .rows_affected();
        let documents =
            sqlx::query("DELETE FROM knowledge_documents WHERE project = $1 AND source = $2")
                .bind(project)
                .bind(source)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query(op))?
                .rows_affected();
        tx.commit().await.map_err(StoreError::query(op))?;
        Ok((documents, chunks))
    }

    async fn text_search(
        &self,
        filter: &ChunkFilter,
        terms: &[String],
        limit: i64,
    ) -> Result<Vec<ChunkHit>> {
        let terms = sanitized_terms(terms);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT c.id, c.document, c.chunk_index, ts_rank_cd(c.search_text, q)::float8 AS score
             FROM knowledge_chunks AS c, to_tsquery('english', $1) AS q
             WHERE c.search_text @@ q AND {FILTER_SQL}
             ORDER BY score DESC, c.id LIMIT $5"
        );
        let rows: Vec<(i64, String, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(terms.join(" | "))
            .bind(p.projects)
            .bind(p.sources)
            .bind(p.tags)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("search knowledge (full text)"))?;
        Ok(rows.into_iter().map(hit).collect())
    }

    async fn vector_search(
        &self,
        filter: &ChunkFilter,
        model: &str,
        query: &[f32],
        limit: i64,
    ) -> Result<Vec<ChunkHit>> {
        let op = "search knowledge (vectors)";
        if !valid_model_name(model) {
            return Err(invalid_model(model));
        }
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let dimension = query.len();
        // Literal model and dimension: the planner matches them against the partial HNSW index.
        let sql = format!(
            "SELECT c.id, c.document, c.chunk_index,
                    (1 - (c.embedding::vector({dimension}) <=> $1))::float8 AS score
             FROM knowledge_chunks AS c
             WHERE c.model = '{model}' AND c.dimension = {dimension} AND {FILTER_SQL}
             ORDER BY c.embedding::vector({dimension}) <=> $1 LIMIT $5"
        );
        let p = FilterParams::of(filter);
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        // HNSW examines `ef_search` candidates; filters applied after the index scan would starve the
        // result, so pgvector ≥ 0.8 is asked to keep scanning until `limit` rows pass them.
        let ef_search = limit.clamp(40, 1000).to_string();
        sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
            .bind(&ef_search)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        if self.pgvector_version().await >= Some((0, 8)) {
            sqlx::query("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query(op))?;
        }
        let rows: Vec<(i64, String, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(pgvector::Vector::from(query.to_vec()))
            .bind(p.projects)
            .bind(p.sources)
            .bind(p.tags)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        tx.commit().await.map_err(StoreError::query(op))?;
        let mut hits: Vec<ChunkHit> = rows.into_iter().map(hit).collect();
        // relaxed_order may return neighbours slightly out of order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(hits)
    }

    async fn chunks_by_id(&self, ids: &[i64]) -> Result<Vec<ChunkRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<StoredChunk> = sqlx::query_as(
            "SELECT id, project, source, document, chunk_index, title, content, url, line_start,
                    line_end, tags, model
             FROM knowledge_chunks WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("read knowledge chunks"))?;
        Ok(rows
            .into_iter()
            .map(|r| ChunkRow {
                id: r.id,
                project: r.project,
                source: r.source,
                document: r.document,
                chunk_index: r.chunk_index,
                title: r.title,
                content: r.content,
                url: r.url,
                line_start: r.line_start,
                line_end: r.line_end,
                tags: r.tags,
                model: r.model,
            })
            .collect())
    }

    async fn knowledge_sources(&self, projects: Option<&[String]>) -> Result<Vec<SourceSummary>> {
        let op = "list knowledge sources";
        let projects: Option<Vec<String>> = projects.map(<[String]>::to_vec);
        let chunk_counts: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT project, source, model, count(*) FROM knowledge_chunks
             WHERE $1::text[] IS NULL OR project = ANY($1)
             GROUP BY project, source, model",
        )
        .bind(&projects)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        let doc_counts: Vec<(String, String, i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT project, source, count(*), coalesce(sum(masked_secrets), 0)::bigint, max(indexed_at)
             FROM knowledge_documents
             WHERE $1::text[] IS NULL OR project = ANY($1)
             GROUP BY project, source",
        )
        .bind(&projects)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        Ok(super::summarize(chunk_counts, doc_counts))
    }
}

fn hit((id, document, chunk_index, score): (i64, String, i32, f64)) -> ChunkHit {
    ChunkHit {
        id,
        document,
        chunk_index,
        score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_unique_and_short() {
        assert_eq!(index_name("all-MiniLM-L6-v2", 384), BUILTIN_INDEX);
        let a = index_name("all-MiniLM-L6-v2", 768);
        let b = index_name("openai:text-embedding-3-small-with-a-very-long-name", 1536);
        let c = index_name("openai:text-embedding-3-small-with-a-very-long-nameX", 1536);
        assert_ne!(a, BUILTIN_INDEX);
        assert_ne!(b, c);
        assert!(b.len() <= 63 && c.len() <= 63, "{b}");
    }
}
