//! Storage: the registry database behind ports, secrets, the engine's inventory and journal, timing
//! and knowledge.
//!
//! One set of repository traits ([`SecretRepo`], [`PortRepo`], [`InventoryRepo`], [`JournalRepo`],
//! [`KnowledgeRepo`], [`TokenRepo`], [`HealthRepo`], [`TimingRepo`] in `timing.rs`) gathered into
//! [`Store`], with two real implementations:
//!
//! * [`sqlite::SqliteStore`] — the embedded default (bundled SQLite, WAL, sqlite-vec, FTS5), a file under
//!   `.supervisor/` next to the state directory, created on first use;
//! * [`postgres::PostgresStore`] — PostgreSQL 14+ with pgvector, for production and several hosts.
//!
//! Queries whose SQL is the same on both backends are written once (`portable.rs`) and expanded for each;
//! what differs (locking, vectors, full-text search, error codes) is written per backend. Migrations are
//! embedded and applied when a store is opened.
//!
//! Guarantees the callers rely on, enforced by the schema rather than by callers: a port is allocated to at
//! most one service per host and a service holds at most one port (unique constraints, so even two
//! concurrent applies cannot double-allocate); a project's port block never overlaps another's. This module
//! never sees a secret in clear text: it stores and returns ciphertext only.

pub mod checks;
pub mod knowledge;
mod portable;
pub mod postgres;
pub mod sqlite;
pub mod timing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use knowledge::{
    ChunkFilter, ChunkHit, ChunkRow, DocumentKind, DocumentRecord, KnowledgeRepo, NewChunk,
    SourceSummary,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use timing::TimingRepo;

/// The host every single-VM installation uses; ports and tunnel ingress are per host.
pub const DEFAULT_HOST: &str = "default";

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the {backend} database at {location}: {source}")]
    Open {
        backend: Backend,
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot prepare the database directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("applying database migrations on {backend} failed: {source}")]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("database error while trying to {op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "another apply holds the lock on {what}; gave up after waiting {waited:?} (raise --lock-timeout to wait longer)"
    )]
    LockTimeout { what: String, waited: Duration },
    #[error("cannot take the apply lock file {path}: {source}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unsupported database URL {url}: use postgres://… (or postgresql://…) for PostgreSQL, or sqlite://PATH for SQLite"
    )]
    UnsupportedUrl { url: String },
    /// No connection could be had in time: the server is down, restarting or unreachable.
    #[error(
        "cannot {op}: the database is unreachable (no connection could be opened in time); it is retried on the next call, and /health shows when it is back"
    )]
    Unreachable { op: &'static str },
    /// The SQLite file this process opened is gone, replaced, or no longer writable.
    #[error("the SQLite database {path} {problem}")]
    DatabaseFile { path: PathBuf, problem: String },
}

impl StoreError {
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| {
            if matches!(source, sqlx::Error::PoolTimedOut) {
                StoreError::Unreachable { op }
            } else if is_unique_violation(&source) {
                StoreError::Conflict(format!(
                    "cannot {op}: it conflicts with an existing row ({source})"
                ))
            } else {
                StoreError::Query { op, source }
            }
        }
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Where the database lives, chosen from a URL (or the embedded default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `None` → the embedded default: `<parent of state dir>/.supervisor/supervisor.db`.
    pub fn resolve(url: Option<&str>, state_dir: &Path) -> Result<Location> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Location::Sqlite(default_sqlite_path(state_dir))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Location::Postgres(u.to_string()))
            }
            Some(u) => {
                let path = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .filter(|p| !p.is_empty() && !p.starts_with(":memory:"))
                    .ok_or_else(|| StoreError::UnsupportedUrl { url: redact_url(u) })?;
                Ok(Location::Sqlite(PathBuf::from(path)))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Why text holding a NUL character is refused: PostgreSQL's `text` cannot store one (SQLite can), so
/// every layer that takes text from outside refuses it before it gets here — the same answer on both
/// backends, and never the database's own complaint.
pub const NUL_IN_TEXT: &str = "it contains a NUL character (\\u0000), which text cannot hold";

pub fn default_sqlite_path(state_dir: &Path) -> PathBuf {
    let parent = match state_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parent.join(".supervisor").join("supervisor.db")
}

/// A URL (or libpq `key=value` connection string) fit for messages and logs: every credential it can
/// carry replaced by `***` — the password of the user part, and the value of every query (or fragment,
/// or `key=value`) parameter whose name suggests a credential ([`is_credential_key`]: `password`,
/// `sslpassword`, `passfile`, `token`, `api_key`, `secret`, …). Everything else is kept, so the message
/// still says where.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_key_values(url);
    };
    // The user part ends at the last `@`: a password may hold unencoded `/`, `?`, `#` or `@` (wrong,
    // but typed), and must not leak because of it. When that `@` was in fact in the query, everything
    // before it is masked — less helpful, never a leak.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (location, fragment) = match after.split_once('#') {
        Some((l, f)) => (l, Some(f)),
        None => (after, None),
    };
    let (path, query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (location, None),
    };
    let mut out = format!("{scheme}://");
    if let Some(info) = userinfo {
        if info.contains(['/', '?', '#', '=']) {
            out.push_str("***@");
        } else {
            match info.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{info}@")),
            }
        }
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&redact_pairs(q, '&'));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&redact_pairs(f, '&'));
    }
    out
}

/// Whether a parameter named `key` (percent-decoded, any case) holds a credential.
pub fn is_credential_key(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "auth",
        "key",
        "credential",
        "sig",
    ]
    .iter()
    .any(|w| key.contains(w))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&password=x` → `a=1&password=***`.
fn redact_pairs(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_credential_key(k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

/// libpq's `host=h password=x` form (values may be single-quoted, with spaces).
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(eq) = rest
            .find('=')
            .filter(|&i| !rest[..i].contains(char::is_whitespace))
        else {
            out.push_str(rest);
            break;
        };
        let key = &rest[..eq];
        let value_and_more = &rest[eq + 1..];
        let value_len = if let Some(quoted) = value_and_more.strip_prefix('\'') {
            // Up to the closing quote (a backslash escapes the next character).
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = Some(i + 2);
                        break;
                    }
                    _ => {}
                }
            }
            end.unwrap_or(value_and_more.len())
        } else {
            value_and_more
                .find(char::is_whitespace)
                .unwrap_or(value_and_more.len())
        };
        out.push_str(key);
        out.push('=');
        if is_credential_key(key) {
            out.push_str("***");
        } else {
            out.push_str(&value_and_more[..value_len]);
        }
        rest = &value_and_more[value_len..];
    }
    out
}

/// Opens (creating and migrating as needed) the store at `location`.
pub async fn open(location: &Location) -> Result<Arc<dyn Store>> {
    match location {
        Location::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        Location::Postgres(url) => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}

/// Everything the supervisor keeps in its database.
#[async_trait]
pub trait Store:
    SecretRepo
    + PortRepo
    + InventoryRepo
    + JournalRepo
    + KnowledgeRepo
    + TokenRepo
    + HealthRepo
    + TimingRepo
    + checks::CheckRepo
    + Send
    + Sync
{
    fn backend(&self) -> Backend;

    /// Backend, version, vector support and migrations, for `doctor`.
    async fn info(&self) -> Result<DatabaseInfo>;

    /// Takes the apply lock (one apply at a time per database), waiting up to `timeout`.
    /// PostgreSQL: a session advisory lock on a dedicated connection (never through the pool).
    /// SQLite: an exclusive lock on a file next to the database.
    async fn lock_apply(&self, timeout: Duration) -> Result<ApplyLock>;

    /// Tries to take reconcile leadership (several `serve` processes on one database elect one
    /// reconciler). Returns `None` when another process leads. SQLite: the same lock file mechanism.
    async fn try_lead(&self) -> Result<Option<ApplyLock>>;
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    pub backend: Backend,
    pub location: String,
    pub server_version: String,
    /// pgvector's version (PostgreSQL) or sqlite-vec's (SQLite); `None` when missing.
    pub vector_extension: Option<String>,
    pub full_text_search: String,
    pub migrations_applied: Vec<AppliedMigration>,
    pub migrations_known: usize,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// A held apply or leadership lock; released when dropped (or by [`ApplyLock::release`]).
pub struct ApplyLock {
    inner: LockInner,
}

enum LockInner {
    File(std::fs::File),
    Postgres(Box<sqlx::PgConnection>),
}

impl ApplyLock {
    pub(crate) fn file(file: std::fs::File) -> Self {
        ApplyLock {
            inner: LockInner::File(file),
        }
    }
    pub(crate) fn postgres(conn: sqlx::PgConnection) -> Self {
        ApplyLock {
            inner: LockInner::Postgres(Box::new(conn)),
        }
    }

    /// Checks that the lock is still held (for a leader: that its session is alive).
    pub async fn is_alive(&mut self) -> bool {
        match &mut self.inner {
            LockInner::File(_) => true,
            LockInner::Postgres(conn) => sqlx::Connection::ping(conn.as_mut()).await.is_ok(),
        }
    }

    pub async fn release(self) {
        match self.inner {
            LockInner::File(file) => drop(file),
            LockInner::Postgres(conn) => {
                // Closing the session releases every advisory lock it holds.
                let _ = sqlx::Connection::close(*conn).await;
            }
        }
    }
}

impl fmt::Debug for ApplyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            LockInner::File(_) => f.write_str("ApplyLock(file)"),
            LockInner::Postgres(_) => f.write_str("ApplyLock(postgres advisory)"),
        }
    }
}

/// What `/health` asks the database.
#[async_trait]
pub trait HealthRepo {
    /// A round trip to the database — for SQLite, to the file this process opened: a database file
    /// removed or replaced since is an error ([`StoreError::DatabaseFile`]), never a fresh empty one.
    async fn ping(&self) -> Result<()>;
    /// Whether the database can be written (SQLite: the file and its directory are writable by this
    /// process; PostgreSQL: always, a read-only server shows in the writes themselves).
    async fn writable(&self) -> Result<()>;
    /// Task timers started and not completed.
    async fn running_tasks(&self) -> Result<i64>;
}

// ---------------------------------------------------------------------------------------------------
// Secrets (ciphertext only)

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SecretScope {
    Meta,
    Project,
    Service,
}

impl SecretScope {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretScope::Meta => "meta",
            SecretScope::Project => "project",
            SecretScope::Service => "service",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "meta" => Some(SecretScope::Meta),
            "project" => Some(SecretScope::Project),
            "service" => Some(SecretScope::Service),
            _ => None,
        }
    }
}

/// A secret as stored: metadata plus ciphertext. Never holds the value in clear.
#[derive(Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub path: String,
    pub scope: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub description: Option<String>,
    pub ciphertext: Vec<u8>,
    pub key_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotation_required: bool,
}

impl fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRow")
            .field("path", &self.path)
            .field("key_version", &self.key_version)
            .field(
                "ciphertext",
                &format_args!("<{} bytes>", self.ciphertext.len()),
            )
            .finish_non_exhaustive()
    }
}

/// What `list` shows: everything but the ciphertext.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SecretMeta {
    pub path: String,
    pub scope: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub description: Option<String>,
    pub key_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotation_required: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SecretFilter {
    pub scope: Option<SecretScope>,
    pub project: Option<String>,
    /// Only paths starting with this prefix.
    pub path_prefix: Option<String>,
}

/// One line of the secret access log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AccessEvent {
    pub path: String,
    pub action: String,
    pub actor: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// A key version's check value: a known plaintext sealed with that version's key (the vault verifies a
/// key against it; see `secrets::vault`). Not a secret: it reveals nothing about the key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyCheck {
    pub key_version: i32,
    pub check_value: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait SecretRepo {
    /// Inserts or replaces the ciphertext (and metadata) at `row.path`; creation time and access
    /// statistics of an existing secret are kept.
    async fn put_secret(&self, row: &SecretRow) -> Result<()>;
    async fn get_secret(&self, path: &str) -> Result<Option<SecretRow>>;
    /// The secrets at `paths` that exist (one query, any order).
    async fn get_secrets(&self, paths: &[&str]) -> Result<Vec<SecretRow>>;
    async fn list_secrets(&self, filter: &SecretFilter) -> Result<Vec<SecretMeta>>;
    /// Returns whether a secret was deleted.
    async fn delete_secret(&self, path: &str) -> Result<bool>;
    /// Appends access events and, for successful reads, bumps `access_count`/`last_accessed_at` —
    /// all in one transaction (callers batch concurrent reads into one call).
    async fn record_access(&self, events: &[AccessEvent]) -> Result<()>;
    /// Newest first; `path` filters to one secret.
    async fn access_log(&self, path: Option<&str>, limit: i64) -> Result<Vec<AccessEvent>>;
    /// Every secret's ciphertext, for key rotation.
    async fn all_secrets(&self) -> Result<Vec<SecretRow>>;
    /// Up to `limit` secrets, most recently written first (the vault checks its key against them
    /// before writing).
    async fn sample_secrets(&self, limit: i64) -> Result<Vec<SecretRow>>;
    /// Inserts new secrets with all their metadata in one transaction: all or nothing. A path that
    /// already exists is a [`StoreError::Conflict`] naming it.
    async fn import_secrets(&self, rows: &[SecretRow]) -> Result<()>;
    /// Replaces ciphertexts (path, ciphertext, key_version) and every key check value (by `check`, the
    /// new key's) in one transaction: all or nothing.
    async fn replace_ciphertexts(
        &self,
        rows: &[(String, Vec<u8>, i32)],
        check: &KeyCheck,
    ) -> Result<()>;
    /// The key check values, oldest key version first.
    async fn key_checks(&self) -> Result<Vec<KeyCheck>>;
    /// Records `check` unless its key version has one already; returns whether it was recorded (when
    /// not, another writer's check for that version stands, and the caller must verify against it).
    async fn insert_key_check(&self, check: &KeyCheck) -> Result<bool>;
    /// Replaces every key check value with `check`, only while the vault holds no secret (an emptied
    /// vault may start over with another key); [`StoreError::Conflict`] when it holds any.
    async fn reset_key_checks(&self, check: &KeyCheck) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------------
// Ports

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PortRange {
    pub host: String,
    pub project: String,
    pub start_port: i32,
    pub end_port: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PortAllocation {
    pub host: String,
    pub project: String,
    pub service: String,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SharedPort {
    pub host: String,
    pub name: String,
    pub port: i32,
}

/// The whole port registry of one host, read in one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PortRegistry {
    pub ranges: Vec<PortRange>,
    pub allocations: Vec<PortAllocation>,
    pub shared: Vec<SharedPort>,
}

#[async_trait]
pub trait PortRepo {
    async fn port_registry(&self, host: &str) -> Result<PortRegistry>;
    /// The registry's version: database triggers change it in the same transaction as every change to
    /// blocks, allocations or shared ports, whoever makes it. Equal versions mean an unchanged registry.
    async fn ports_version(&self) -> Result<i64>;
    /// One service's allocation: a single indexed read, for hot paths (the MCP `get_port` tool) that
    /// do not need the whole registry.
    async fn port_allocation(
        &self,
        host: &str,
        project: &str,
        service: &str,
    ) -> Result<Option<PortAllocation>>;
    /// Fails with [`StoreError::Conflict`] when the block or the project already has a range.
    async fn insert_port_range(&self, range: &PortRange) -> Result<()>;
    /// Moves a project's block in one statement (all or nothing: a block taken meanwhile is a
    /// [`StoreError::Conflict`] and the old block stays). `false` when the project has no block.
    async fn move_port_range(&self, range: &PortRange) -> Result<bool>;
    async fn delete_port_range(&self, host: &str, project: &str) -> Result<bool>;
    /// Fails with [`StoreError::Conflict`] when the port or the service is already taken.
    async fn insert_port_allocation(&self, alloc: &PortAllocation) -> Result<()>;
    /// Moves an existing allocation to another port (a pin changed).
    async fn update_port_allocation(&self, alloc: &PortAllocation) -> Result<bool>;
    async fn delete_port_allocation(
        &self,
        host: &str,
        project: &str,
        service: &str,
    ) -> Result<bool>;
    async fn insert_shared_port(&self, shared: &SharedPort) -> Result<()>;
    async fn update_shared_port(&self, shared: &SharedPort) -> Result<bool>;
    async fn delete_shared_port(&self, host: &str, name: &str) -> Result<bool>;
}

// ---------------------------------------------------------------------------------------------------
// Engine inventory and journal

/// Something in the outside world the supervisor created or adopted.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ManagedObject {
    pub provider: String,
    pub address: String,
    pub external_id: Option<String>,
    pub attributes: sqlx::types::Json<serde_json::Value>,
    pub adopted: bool,
}

#[async_trait]
pub trait InventoryRepo {
    async fn list_managed(&self, provider: &str) -> Result<Vec<ManagedObject>>;
    async fn upsert_managed(&self, object: &ManagedObject) -> Result<()>;
    async fn delete_managed(&self, provider: &str, address: &str) -> Result<bool>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApplyRun {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub desired_revision: String,
    pub git_revision: Option<String>,
    pub actor: String,
    pub summary: sqlx::types::Json<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JournalEntry {
    pub id: i64,
    pub run_id: String,
    pub seq: i32,
    pub address: String,
    pub provider: String,
    pub action: String,
    pub intent: sqlx::types::Json<serde_json::Value>,
    pub status: String,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait JournalRepo {
    async fn begin_run(&self, run: &ApplyRun) -> Result<()>;
    async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        summary: &serde_json::Value,
    ) -> Result<()>;
    /// Marks runs still `running` as `interrupted` (call while holding the apply lock: nobody else can
    /// be running). Returns how many were marked.
    async fn mark_interrupted_runs(&self) -> Result<u64>;
    /// Records the intent of a change before it is carried out; returns the journal id.
    async fn journal_start(
        &self,
        run_id: &str,
        seq: i32,
        address: &str,
        provider: &str,
        action: &str,
        intent: &serde_json::Value,
    ) -> Result<i64>;
    async fn journal_finish(&self, id: i64, error: Option<&str>) -> Result<()>;
    /// The newest journal entry of every address.
    async fn latest_journal_entries(&self) -> Result<Vec<JournalEntry>>;
    async fn last_run(&self) -> Result<Option<ApplyRun>>;
    /// The newest `limit` runs, newest first.
    async fn recent_runs(&self, limit: i64) -> Result<Vec<ApplyRun>>;
    async fn apply_run(&self, id: &str) -> Result<Option<ApplyRun>>;
}

// ---------------------------------------------------------------------------------------------------
// MCP bearer tokens (only hashes are stored)

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    /// `None` → a meta token (valid on every endpoint).
    pub project: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait TokenRepo {
    async fn insert_token(&self, row: &TokenRow, hash: &str) -> Result<()>;
    /// The token with this hash, if it exists and is not revoked.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>>;
    async fn list_tokens(&self) -> Result<Vec<TokenRow>>;
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
}

/// Successful reads per path in a batch of access events: (path, count, latest time).
fn read_counts(events: &[AccessEvent]) -> Vec<(&str, i64, DateTime<Utc>)> {
    let mut counts: std::collections::BTreeMap<&str, (i64, DateTime<Utc>)> =
        std::collections::BTreeMap::new();
    for e in events {
        if e.action == "read" && e.outcome == "ok" {
            let entry = counts.entry(e.path.as_str()).or_insert((0, e.at));
            entry.0 += 1;
            entry.1 = entry.1.max(e.at);
        }
    }
    counts.into_iter().map(|(p, (n, at))| (p, n, at)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact_url("postgres://db/app"), "postgres://db/app");
        assert_eq!(
            redact_url("postgres://u:p@ss@db/app"),
            "postgres://u:***@db/app"
        );
    }

    #[test]
    fn every_credential_a_url_can_carry_is_masked() {
        for (url, shown) in [
            (
                "postgres://u@h/db?password=hunter2",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=pw&passfile=/home/u/.pgpass&application_name=x",
                "postgres://u@h/db?sslmode=require&sslpassword=***&passfile=***&application_name=x",
            ),
            (
                "postgres://u:pw@h/db?PASSWORD=x&Token=y&api_key=z&access_token=t&secret=s&sig=q",
                "postgres://u:***@h/db?PASSWORD=***&Token=***&api_key=***&access_token=***&secret=***&sig=***",
            ),
            // Percent-encoded key names are still recognised.
            (
                "postgres://h/db?pass%77ord=x",
                "postgres://h/db?pass%77ord=***",
            ),
            // A password with unencoded `/`, `?` or `#` still ends before the last `@`.
            ("postgres://u:p/a?s#s@h/db", "postgres://***@h/db"),
            ("postgres://u:p@s@h/db", "postgres://u:***@h/db"),
            // An `@` in the query: nothing of what precedes it is shown.
            (
                "postgres://h/db?password=x&app=me@laptop",
                "postgres://***@laptop",
            ),
            (
                "https://api.example.com/v4?token=abc#access_token=def",
                "https://api.example.com/v4?token=***#access_token=***",
            ),
            // libpq's key=value form.
            (
                "host=db user=u password=hunter2 sslpassword='two words'",
                "host=db user=u password=*** sslpassword=***",
            ),
            ("sqlite://data/s.db?mode=rwc", "sqlite://data/s.db?mode=rwc"),
            ("postgres://h/db?password", "postgres://h/db?password"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn locations_from_urls() {
        let state = Path::new("/srv/state");
        assert_eq!(
            Location::resolve(None, state).unwrap(),
            Location::Sqlite("/srv/.supervisor/supervisor.db".into())
        );
        assert_eq!(
            Location::resolve(Some("sqlite:///tmp/x.db"), state).unwrap(),
            Location::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Location::resolve(Some("postgresql://h/db"), state)
                .unwrap()
                .backend(),
            Backend::Postgres
        );
        let err = Location::resolve(Some("mysql://u:pw@h/db"), state)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mysql://u:***@h/db") && !err.contains("pw"),
            "{err}"
        );
        assert!(
            Location::resolve(Some("sqlite::memory:"), state).is_err(),
            "no in-memory stand-in"
        );
        assert_eq!(
            default_sqlite_path(Path::new("state")),
            PathBuf::from("./.supervisor/supervisor.db")
        );
    }
}
