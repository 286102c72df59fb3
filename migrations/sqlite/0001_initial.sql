-- supervisor: initial schema (SQLite). Timestamps are RFC 3339 text in UTC; booleans are 0/1.
-- Keep in step with migrations/postgres/0001_initial.sql: the conformance suite runs the same tests on both.

-- Secrets: values are encrypted by the application (AES-256-GCM, key path bound as associated data).
CREATE TABLE secrets (
    path              TEXT PRIMARY KEY,
    scope             TEXT NOT NULL CHECK (scope IN ('meta', 'project', 'service')),
    project           TEXT,
    service           TEXT,
    description       TEXT,
    ciphertext        BLOB NOT NULL,
    key_version       INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    last_accessed_at  TEXT,
    access_count      INTEGER NOT NULL DEFAULT 0,
    expires_at        TEXT,
    rotation_required INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX secrets_by_project ON secrets (project, scope);

-- Every read and write of a secret, successful or not. Values never appear here.
CREATE TABLE secret_access_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    path    TEXT NOT NULL,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX secret_access_log_by_path ON secret_access_log (path, id);

-- Port registry. `host` keeps room for several VMs (each has its own port space); today it is 'default'.
-- Blocks are aligned to the block size, so UNIQUE (host, start_port) also rules out overlapping blocks.
CREATE TABLE project_port_ranges (
    host       TEXT NOT NULL,
    project    TEXT NOT NULL,
    start_port INTEGER NOT NULL,
    end_port   INTEGER NOT NULL CHECK (end_port >= start_port),
    created_at TEXT NOT NULL,
    PRIMARY KEY (host, project),
    UNIQUE (host, start_port)
);

CREATE TABLE port_allocations (
    host       TEXT NOT NULL,
    project    TEXT NOT NULL,
    service    TEXT NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at TEXT NOT NULL,
    PRIMARY KEY (host, project, service),
    UNIQUE (host, port)
);

CREATE TABLE shared_service_ports (
    host       TEXT NOT NULL,
    name       TEXT NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at TEXT NOT NULL,
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
    estimated_seconds REAL,
    actual_seconds    REAL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'abandoned')),
    started_at        TEXT NOT NULL,
    completed_at      TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX task_executions_by_type ON task_executions (task_type, project, status);

-- Running statistics over log-durations (durations are log-normal), per task type and project
-- ('' = all projects).
CREATE TABLE task_type_stats (
    task_type    TEXT NOT NULL,
    project      TEXT NOT NULL,
    sample_count INTEGER NOT NULL,
    mean_log     REAL NOT NULL,
    m2_log       REAL NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (task_type, project)
);

CREATE TABLE parallel_executions (
    id                    TEXT PRIMARY KEY,
    project               TEXT,
    description           TEXT NOT NULL,
    agent_count           INTEGER NOT NULL CHECK (agent_count > 0),
    sequential_estimate_s REAL,
    actual_seconds        REAL,
    efficiency            REAL,
    started_at            TEXT NOT NULL,
    completed_at          TEXT
);

-- Knowledge: chunks with their embedding. The model and dimension are stored per row, so vectors of
-- different models never mix; SQLite searches them by exact scan with sqlite-vec's distance functions.
CREATE TABLE knowledge_chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project      TEXT NOT NULL,
    source       TEXT NOT NULL,
    document     TEXT NOT NULL,
    chunk_index  INTEGER NOT NULL,
    heading      TEXT,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    model        TEXT,
    dimension    INTEGER,
    embedding    BLOB,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (project, source, document, chunk_index),
    CHECK ((embedding IS NULL) = (model IS NULL)),
    CHECK (embedding IS NULL OR length(embedding) = 4 * dimension)
);
CREATE INDEX knowledge_chunks_by_model ON knowledge_chunks (model, project);

CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5 (
    heading, content, content = 'knowledge_chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER knowledge_chunks_ai AFTER INSERT ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (rowid, heading, content) VALUES (new.id, new.heading, new.content);
END;
CREATE TRIGGER knowledge_chunks_ad AFTER DELETE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, heading, content)
        VALUES ('delete', old.id, old.heading, old.content);
END;
CREATE TRIGGER knowledge_chunks_au AFTER UPDATE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, heading, content)
        VALUES ('delete', old.id, old.heading, old.content);
    INSERT INTO knowledge_chunks_fts (rowid, heading, content) VALUES (new.id, new.heading, new.content);
END;

-- Engine: what the supervisor created or adopted (it never touches anything else), per provider.
CREATE TABLE managed_objects (
    provider    TEXT NOT NULL,
    address     TEXT NOT NULL,
    external_id TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}',
    adopted     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (provider, address)
);

-- Engine: one row per apply, one journal row per change (intent first, then the outcome).
CREATE TABLE apply_runs (
    id               TEXT PRIMARY KEY,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    desired_revision TEXT NOT NULL,
    git_revision     TEXT,
    actor            TEXT NOT NULL,
    summary          TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE apply_journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES apply_runs (id),
    seq         INTEGER NOT NULL,
    address     TEXT NOT NULL,
    provider    TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'replace')),
    intent      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    UNIQUE (run_id, seq)
);
CREATE INDEX apply_journal_by_address ON apply_journal (address, id);

-- MCP bearer tokens: only a SHA-256 of the token is stored; project NULL = a meta token.
CREATE TABLE mcp_tokens (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    project      TEXT,
    description  TEXT,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
