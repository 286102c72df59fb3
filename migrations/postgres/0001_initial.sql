-- supervisor: initial schema (PostgreSQL 14+ with pgvector).
-- Keep in step with migrations/sqlite/0001_initial.sql: the conformance suite runs the same tests on both.

CREATE EXTENSION IF NOT EXISTS vector;

-- Secrets: values are encrypted by the application (AES-256-GCM, key path bound as associated data).
CREATE TABLE secrets (
    path              TEXT PRIMARY KEY,
    scope             TEXT NOT NULL CHECK (scope IN ('meta', 'project', 'service')),
    project           TEXT,
    service           TEXT,
    description       TEXT,
    ciphertext        BYTEA NOT NULL,
    key_version       INTEGER NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    last_accessed_at  TIMESTAMPTZ,
    access_count      BIGINT NOT NULL DEFAULT 0,
    expires_at        TIMESTAMPTZ,
    rotation_required BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX secrets_by_project ON secrets (project, scope);

-- Every read and write of a secret, successful or not. Values never appear here.
CREATE TABLE secret_access_log (
    id      BIGSERIAL PRIMARY KEY,
    path    TEXT NOT NULL,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX secret_access_log_by_path ON secret_access_log (path, id);

-- Port registry. `host` keeps room for several VMs (each has its own port space); today it is 'default'.
-- Blocks are aligned to the block size, so UNIQUE (host, start_port) also rules out overlapping blocks.
CREATE TABLE project_port_ranges (
    host       TEXT NOT NULL,
    project    TEXT NOT NULL,
    start_port INTEGER NOT NULL,
    end_port   INTEGER NOT NULL CHECK (end_port >= start_port),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, project),
    UNIQUE (host, start_port)
);

CREATE TABLE port_allocations (
    host       TEXT NOT NULL,
    project    TEXT NOT NULL,
    service    TEXT NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, project, service),
    UNIQUE (host, port)
);

CREATE TABLE shared_service_ports (
    host       TEXT NOT NULL,
    name       TEXT NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, name),
    UNIQUE (host, port)
);

-- Timing and estimation.
CREATE TABLE task_executions (
    id                TEXT PRIMARY KEY,
    project           TEXT,
    task_type         TEXT NOT NULL,
    description       TEXT NOT NULL,
    agent             TEXT,
    parallel_group    TEXT,
    estimated_seconds DOUBLE PRECISION,
    actual_seconds    DOUBLE PRECISION,
    status            TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'abandoned')),
    started_at        TIMESTAMPTZ NOT NULL,
    completed_at      TIMESTAMPTZ,
    metadata          JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX task_executions_by_type ON task_executions (task_type, project, status);

-- Running statistics over log-durations (durations are log-normal), per task type and project
-- ('' = all projects).
CREATE TABLE task_type_stats (
    task_type    TEXT NOT NULL,
    project      TEXT NOT NULL,
    sample_count BIGINT NOT NULL,
    mean_log     DOUBLE PRECISION NOT NULL,
    m2_log       DOUBLE PRECISION NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_type, project)
);

CREATE TABLE parallel_executions (
    id                    TEXT PRIMARY KEY,
    project               TEXT,
    description           TEXT NOT NULL,
    agent_count           INTEGER NOT NULL CHECK (agent_count > 0),
    sequential_estimate_s DOUBLE PRECISION,
    actual_seconds        DOUBLE PRECISION,
    efficiency            DOUBLE PRECISION,
    started_at            TIMESTAMPTZ NOT NULL,
    completed_at          TIMESTAMPTZ
);

-- Knowledge: chunks with their embedding. `vector` without a fixed dimension: the model and dimension are
-- stored per row, and each model gets its own partial HNSW index on a cast to its dimension (an ivfflat
-- index built on an empty table has no useful centroids; HNSW needs no training).
CREATE TABLE knowledge_chunks (
    id           BIGSERIAL PRIMARY KEY,
    project      TEXT NOT NULL,
    source       TEXT NOT NULL,
    document     TEXT NOT NULL,
    chunk_index  INTEGER NOT NULL,
    heading      TEXT,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    model        TEXT,
    dimension    INTEGER,
    embedding    vector,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    search_text  tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(heading, '')), 'A') || to_tsvector('english', content)
    ) STORED,
    UNIQUE (project, source, document, chunk_index),
    CHECK ((embedding IS NULL) = (model IS NULL)),
    CHECK (embedding IS NULL OR vector_dims(embedding) = dimension)
);
CREATE INDEX knowledge_chunks_by_model ON knowledge_chunks (model, project);
CREATE INDEX knowledge_chunks_search_text ON knowledge_chunks USING gin (search_text);
-- The built-in offline model (all-MiniLM-L6-v2, 384 dimensions); other models get theirs when first used.
CREATE INDEX knowledge_chunks_hnsw_all_minilm_l6_v2 ON knowledge_chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model = 'all-MiniLM-L6-v2';

-- Engine: what the supervisor created or adopted (it never touches anything else), per provider.
CREATE TABLE managed_objects (
    provider    TEXT NOT NULL,
    address     TEXT NOT NULL,
    external_id TEXT,
    attributes  JSONB NOT NULL DEFAULT '{}',
    adopted     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, address)
);

-- Engine: one row per apply, one journal row per change (intent first, then the outcome).
CREATE TABLE apply_runs (
    id               TEXT PRIMARY KEY,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    status           TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    desired_revision TEXT NOT NULL,
    git_revision     TEXT,
    actor            TEXT NOT NULL,
    summary          JSONB NOT NULL DEFAULT '{}'
);

CREATE TABLE apply_journal (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES apply_runs (id),
    seq         INTEGER NOT NULL,
    address     TEXT NOT NULL,
    provider    TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'replace')),
    intent      JSONB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    UNIQUE (run_id, seq)
);
CREATE INDEX apply_journal_by_address ON apply_journal (address, id);

-- MCP bearer tokens: only a SHA-256 of the token is stored; project NULL = a meta token.
CREATE TABLE mcp_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    project      TEXT,
    description  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
