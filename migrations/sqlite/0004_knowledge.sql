-- Knowledge search: documents (what the indexer saw, for incremental runs), richer chunks (title, url or
-- path, line range, tags) and a full-text index that also sees code identifiers split into words.
-- Keep in step with migrations/postgres/0004_knowledge.sql.

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
    tags           TEXT NOT NULL DEFAULT '[]',
    content_hash   TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    modified_at    TEXT,
    model          TEXT,
    chunk_count    INTEGER NOT NULL,
    masked_secrets INTEGER NOT NULL DEFAULT 0,
    indexed_at     TEXT NOT NULL,
    PRIMARY KEY (project, source, document)
);

DROP TRIGGER knowledge_chunks_ai;
DROP TRIGGER knowledge_chunks_ad;
DROP TRIGGER knowledge_chunks_au;
DROP TABLE knowledge_chunks_fts;

ALTER TABLE knowledge_chunks RENAME COLUMN heading TO title;
ALTER TABLE knowledge_chunks ADD COLUMN url TEXT;
ALTER TABLE knowledge_chunks ADD COLUMN line_start INTEGER;
ALTER TABLE knowledge_chunks ADD COLUMN line_end INTEGER;
-- A JSON array of strings.
ALTER TABLE knowledge_chunks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
-- Extra words for full-text search: code identifiers split at camelCase and snake_case boundaries.
ALTER TABLE knowledge_chunks ADD COLUMN lexemes TEXT NOT NULL DEFAULT '';
CREATE INDEX knowledge_chunks_by_source ON knowledge_chunks (project, source, document);
CREATE INDEX knowledge_chunks_by_hash ON knowledge_chunks (content_hash);

CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5 (
    title, content, lexemes, content = 'knowledge_chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts) VALUES ('rebuild');
CREATE TRIGGER knowledge_chunks_ai AFTER INSERT ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (rowid, title, content, lexemes)
        VALUES (new.id, new.title, new.content, new.lexemes);
END;
CREATE TRIGGER knowledge_chunks_ad AFTER DELETE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, title, content, lexemes)
        VALUES ('delete', old.id, old.title, old.content, old.lexemes);
END;
CREATE TRIGGER knowledge_chunks_au AFTER UPDATE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, title, content, lexemes)
        VALUES ('delete', old.id, old.title, old.content, old.lexemes);
    INSERT INTO knowledge_chunks_fts (rowid, title, content, lexemes)
        VALUES (new.id, new.title, new.content, new.lexemes);
END;
