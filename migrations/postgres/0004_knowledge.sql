-- Knowledge search: documents (what the indexer saw, for incremental runs), richer chunks (title, url or
-- path, line range, tags) and a full-text index that also sees code identifiers split into words.
-- Keep in step with migrations/sqlite/0004_knowledge.sql.

-- One row per indexed file, JSONL record or learning. A document and its chunks are written in one
-- transaction, so an interrupted run loses nothing already committed and the next run continues.
-- `project` is '' for shared sources (visible to every project).
CREATE TABLE knowledge_documents (
    project        TEXT NOT NULL,
    source         TEXT NOT NULL,
    document       TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('markdown', 'code', 'text')),
    url            TEXT,
    title          TEXT,
    tags           TEXT[] NOT NULL DEFAULT '{}',
    content_hash   TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL,
    modified_at    TIMESTAMPTZ,
    model          TEXT,
    chunk_count    INTEGER NOT NULL,
    masked_secrets INTEGER NOT NULL DEFAULT 0,
    indexed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project, source, document)
);

ALTER TABLE knowledge_chunks DROP COLUMN search_text;
ALTER TABLE knowledge_chunks RENAME COLUMN heading TO title;
ALTER TABLE knowledge_chunks
    ADD COLUMN url TEXT,
    ADD COLUMN line_start INTEGER,
    ADD COLUMN line_end INTEGER,
    ADD COLUMN tags TEXT[] NOT NULL DEFAULT '{}',
    -- Extra words for full-text search: code identifiers split at camelCase and snake_case boundaries.
    ADD COLUMN lexemes TEXT NOT NULL DEFAULT '';
ALTER TABLE knowledge_chunks ADD COLUMN search_text tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', coalesce(title, '')), 'A')
        || to_tsvector('english', content)
        || to_tsvector('english', lexemes)
) STORED;
CREATE INDEX knowledge_chunks_search_text ON knowledge_chunks USING gin (search_text);
CREATE INDEX knowledge_chunks_tags ON knowledge_chunks USING gin (tags);
CREATE INDEX knowledge_chunks_by_source ON knowledge_chunks (project, source, document);
CREATE INDEX knowledge_chunks_by_hash ON knowledge_chunks (content_hash);
-- Vectors: the HNSW index of all-MiniLM-L6-v2 comes from 0001; the store creates one partial HNSW index
-- per further model (and dimension) when that model's first vectors are written.
