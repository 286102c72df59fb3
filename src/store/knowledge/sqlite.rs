//! Knowledge on SQLite: FTS5 (bm25) for text, sqlite-vec's cosine distance by exact scan for vectors.
//! Lists travel as JSON arrays (`json_each`), so every statement's text is fixed.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    ChunkFilter, ChunkHit, ChunkRow, DocumentKind, DocumentRecord, KnowledgeRepo, NewChunk,
    SourceSummary, invalid_model, sanitized_terms, valid_model_name,
};
use crate::store::{Result, SqliteStore, StoreError};

/// bm25 column weights: title, content, lexemes.
const BM25: &str = "bm25(knowledge_chunks_fts, 2.0, 1.0, 1.0)";

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn parse_tags(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Filter parameters: `NULL` where the filter does not restrict.
struct FilterParams {
    projects: Option<String>,
    sources: Option<String>,
    tags: Option<String>,
}

impl FilterParams {
    fn of(f: &ChunkFilter) -> Self {
        FilterParams {
            projects: f.projects.as_deref().map(json_list),
            sources: (!f.sources.is_empty()).then(|| json_list(&f.sources)),
            tags: (!f.tags.is_empty()).then(|| json_list(&f.tags)),
        }
    }
}

/// The filter as SQL over chunk alias `c`, parameters `$2`, `$3`, `$4`.
const FILTER_SQL: &str = "($2 IS NULL OR c.project IN (SELECT value FROM json_each($2)))
     AND ($3 IS NULL OR c.source IN (SELECT value FROM json_each($3)))
     AND ($4 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each($4) AS t
                                    WHERE t.value NOT IN (SELECT value FROM json_each(c.tags))))";

#[derive(sqlx::FromRow)]
struct DocumentRow {
    project: String,
    source: String,
    document: String,
    kind: String,
    url: Option<String>,
    title: Option<String>,
    tags: String,
    content_hash: String,
    size_bytes: i64,
    modified_at: Option<DateTime<Utc>>,
    model: Option<String>,
    chunk_count: i32,
    masked_secrets: i32,
    indexed_at: DateTime<Utc>,
}

impl DocumentRow {
    fn into_record(self) -> DocumentRecord {
        DocumentRecord {
            project: self.project,
            source: self.source,
            document: self.document,
            // The CHECK constraint admits only the three kinds.
            kind: DocumentKind::parse(&self.kind).unwrap_or(DocumentKind::Text),
            url: self.url,
            title: self.title,
            tags: parse_tags(&self.tags),
            content_hash: self.content_hash,
            size_bytes: self.size_bytes,
            modified_at: self.modified_at,
            model: self.model,
            chunk_count: self.chunk_count,
            masked_secrets: self.masked_secrets,
            indexed_at: self.indexed_at,
        }
    }
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
    tags: String,
    model: Option<String>,
}

#[async_trait]
impl KnowledgeRepo for SqliteStore {
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
        Ok(rows.into_iter().map(DocumentRow::into_record).collect())
    }

    async fn embeddings_by_hash(
        &self,
        model: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for batch in hashes.chunks(500) {
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT content_hash, embedding FROM knowledge_chunks
                 WHERE model = $1 AND embedding IS NOT NULL
                   AND content_hash IN (SELECT value FROM json_each($2))",
            )
            .bind(model)
            .bind(json_list(batch))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read stored embeddings"))?;
            for (hash, bytes) in rows {
                out.entry(hash).or_insert_with(|| vector_from_bytes(&bytes));
            }
        }
        Ok(out.into_iter().collect())
    }

    async fn replace_document(&self, doc: &DocumentRecord, chunks: &[NewChunk]) -> Result<()> {
        let op = "store a knowledge document";
        for c in chunks {
            if let Some((model, _)) = &c.embedding
                && !valid_model_name(model)
            {
                return Err(invalid_model(model));
            }
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
                    Some(vector_bytes(v)),
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
            .bind(json_list(&c.tags))
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
        .bind(json_list(&doc.tags))
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
        for batch in documents.chunks(500) {
            let list = json_list(batch);
            let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
            deleted += sqlx::query(
                "DELETE FROM knowledge_chunks WHERE project = $1 AND source = $2
                   AND document IN (SELECT value FROM json_each($3))",
            )
            .bind(project)
            .bind(source)
            .bind(&list)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?
            .rows_affected();
            sqlx::query(
                "DELETE FROM knowledge_documents WHERE project = $1 AND source = $2
                   AND document IN (SELECT value FROM json_each($3))",
            )
            .bind(project)
            .bind(source)
            .bind(&list)
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
        let query = terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT c.id, c.document, c.chunk_index, -{BM25} AS score
             FROM knowledge_chunks_fts JOIN knowledge_chunks c ON c.id = knowledge_chunks_fts.rowid
             WHERE knowledge_chunks_fts MATCH $1 AND {FILTER_SQL}
             ORDER BY {BM25}, c.id LIMIT $5"
        );
        let rows: Vec<(i64, String, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(query)
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
        if !valid_model_name(model) {
            return Err(invalid_model(model));
        }
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT c.id, c.document, c.chunk_index, 1.0 - vec_distance_cosine(c.embedding, $1) AS score
             FROM knowledge_chunks AS c
             WHERE c.model = $6 AND c.dimension = $7 AND {FILTER_SQL}
             ORDER BY score DESC, c.id LIMIT $5"
        );
        let rows: Vec<(i64, String, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(vector_bytes(query))
            .bind(p.projects)
            .bind(p.sources)
            .bind(p.tags)
            .bind(limit)
            .bind(model)
            .bind(query.len() as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("search knowledge (vectors)"))?;
        Ok(rows.into_iter().map(hit).collect())
    }

    async fn chunks_by_id(&self, ids: &[i64]) -> Result<Vec<ChunkRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<StoredChunk> = sqlx::query_as(
            "SELECT id, project, source, document, chunk_index, title, content, url, line_start,
                    line_end, tags, model
             FROM knowledge_chunks WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
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
                tags: parse_tags(&r.tags),
                model: r.model,
            })
            .collect())
    }

    async fn knowledge_sources(&self, projects: Option<&[String]>) -> Result<Vec<SourceSummary>> {
        let op = "list knowledge sources";
        let projects = projects.map(json_list);
        let chunk_counts: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT project, source, model, count(*) FROM knowledge_chunks
             WHERE $1 IS NULL OR project IN (SELECT value FROM json_each($1))
             GROUP BY project, source, model",
        )
        .bind(&projects)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        let doc_counts: Vec<(String, String, i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT project, source, count(*), coalesce(sum(masked_secrets), 0), max(indexed_at)
             FROM knowledge_documents
             WHERE $1 IS NULL OR project IN (SELECT value FROM json_each($1))
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
