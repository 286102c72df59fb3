//! The embedded default: bundled SQLite in WAL mode, with sqlite-vec for vectors and FTS5 for text.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::portable::portable_repos;
use super::{AccessEvent, ApplyLock, Backend, DatabaseInfo, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Registers sqlite-vec with every SQLite connection opened from now on. Must run before the pool opens.
fn register_sqlite_vec() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_vec_init` is the extension entry point with the signature SQLite expects for
        // auto extensions (db, error message out-pointer, API routines); the transmute only erases it
        // to the generic `unsafe extern "C" fn()` the registration function takes.
        unsafe {
            type EntryPoint = unsafe extern "C" fn(
                *mut libsqlite3_sys::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const libsqlite3_sys::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let init: EntryPoint = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
            libsqlite3_sys::sqlite3_auto_extension(Some(init));
        }
    });
}

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it (and its directory) on first use, and applies
    /// migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        register_sqlite_vec();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Two processes opening a new database at once would both run the migrations (SQLite has no
        // migration lock of its own): serialize opening with an exclusive lock file.
        let guard_path = lock_path(path, "migrate");
        let guard = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&guard_path)
            .map_err(|source| StoreError::LockFile {
                path: guard_path.clone(),
                source,
            })?;
        let guard = tokio::task::spawn_blocking(move || guard.lock().map(|()| guard))
            .await
            .map_err(|e| StoreError::LockFile {
                path: guard_path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| StoreError::LockFile {
                path: guard_path.clone(),
                source,
            })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                backend: Backend::Sqlite,
                location: path.display().to_string(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: Backend::Sqlite,
                source,
            })?;
        drop(guard);
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self, purpose: &str) -> PathBuf {
        lock_path(&self.path, purpose)
    }

    fn try_lock_file(&self, purpose: &str) -> Result<Option<std::fs::File>> {
        let path = self.lock_path(purpose);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::LockFile {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::LockFile { path, source }),
        }
    }
}

/// `<db file>.<purpose>.lock`, next to the database.
fn lock_path(db: &Path, purpose: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{purpose}.lock"));
    db.with_file_name(name)
}

impl SqliteStore {
    async fn fetch_secrets(&self, paths: &[&str]) -> Result<Vec<super::SecretRow>> {
        sqlx::query_as("SELECT * FROM secrets WHERE path IN (SELECT value FROM json_each($1))")
            .bind(serde_json::to_string(paths).unwrap_or_default())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read secrets"))
    }

    /// One transaction of four statements per batch: the events and the per-path counters travel as
    /// JSON arrays (fixed SQL, so the prepared statements are reused), the log keeps the batch order.
    async fn write_access_events(&self, events: &[AccessEvent]) -> Result<()> {
        let op = "record secret access";
        let stamp = |t: &chrono::DateTime<chrono::Utc>| {
            // Exactly how sqlx encodes a DateTime<Utc> for SQLite, so the columns decode as usual.
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        };
        let log: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::json!([e.path, e.action, e.actor, e.outcome, stamp(&e.at)]))
            .collect();
        let counts: Vec<serde_json::Value> = super::read_counts(events)
            .into_iter()
            .map(|(path, n, at)| serde_json::json!([path, n, stamp(&at)]))
            .collect();
        let mut tx = self.pool.begin().await.map_err(StoreError::query(op))?;
        sqlx::query(
            "INSERT INTO secret_access_log (path, action, actor, outcome, at)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::Value::Array(log).to_string())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(op))?;
        if !counts.is_empty() {
            sqlx::query(
                "UPDATE secrets SET access_count = access_count + c.n, last_accessed_at = c.at
                 FROM (SELECT value->>0 AS path, value->>1 AS n, value->>2 AS at FROM json_each($1)) AS c
                 WHERE secrets.path = c.path",
            )
            .bind(serde_json::Value::Array(counts).to_string())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(op))?;
        }
        tx.commit().await.map_err(StoreError::query(op))
    }
}

portable_repos!(SqliteStore);
super::checks::check_repo!(SqliteStore);

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn info(&self) -> Result<DatabaseInfo> {
        let op = "read database information";
        let server_version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        let vector_extension: Option<String> = sqlx::query_scalar("SELECT vec_version()")
            .fetch_one(&self.pool)
            .await
            .ok();
        let fts5: bool = sqlx::query_scalar("SELECT sqlite_compileoption_used('ENABLE_FTS5')")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        let migrations_applied = sqlx::query_as(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        Ok(DatabaseInfo {
            backend: Backend::Sqlite,
            location: self.path.display().to_string(),
            server_version,
            vector_extension,
            full_text_search: if fts5 {
                "FTS5 (bm25)".into()
            } else {
                "missing".into()
            },
            migrations_applied,
            migrations_known: MIGRATOR.iter().count(),
        })
    }

    async fn lock_apply(&self, timeout: Duration) -> Result<ApplyLock> {
        let started = Instant::now();
        loop {
            if let Some(file) = self.try_lock_file("apply")? {
                return Ok(ApplyLock::file(file));
            }
            if started.elapsed() >= timeout {
                return Err(StoreError::LockTimeout {
                    what: self.lock_path("apply").display().to_string(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_lead(&self) -> Result<Option<ApplyLock>> {
        Ok(self.try_lock_file("leader")?.map(ApplyLock::file))
    }
}
