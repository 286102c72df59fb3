//! The embedded default: bundled SQLite in WAL mode, with sqlite-vec for vectors and FTS5 for text.
//!
//! The database is the file this process opened, known by its identity (device and inode). SQLite
//! would happily start a new, empty database at the path when the file is removed under a running
//! process (a new pooled connection creates it), or keep writing into the unlinked inode that nobody
//! will ever read again — a silent fork either way. So after opening, connections are never allowed to
//! create the file, and before a pooled connection is handed out the path is checked (at most once a
//! second; a `stat`): removed or replaced, every database call fails with
//! [`StoreError::DatabaseFile`] and `/health` says which, until the file is back or the process is
//! restarted. A file (or directory) that is no longer writable shows in `/health` too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Once, OnceLock};
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
    /// Set once the file exists and is migrated (the pool's hooks read it).
    file: Arc<OnceLock<DatabaseFile>>,
}

/// How often the pool re-checks that the path is still the file it opened.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The opened database file, by identity, and the last check of its path.
struct DatabaseFile {
    path: PathBuf,
    device: u64,
    inode: u64,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last check (0: never).
    checked_ms: AtomicU64,
    /// The last check's outcome, a [`FileProblem`] code.
    problem: AtomicU8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileProblem {
    None = 0,
    Removed = 1,
    Replaced = 2,
    Unreadable = 3,
}

impl FileProblem {
    fn from_code(code: u8) -> Self {
        match code {
            1 => FileProblem::Removed,
            2 => FileProblem::Replaced,
            3 => FileProblem::Unreadable,
            _ => FileProblem::None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FileProblem::None => "is fine",
            FileProblem::Removed => {
                "was removed while this process had it open: nothing is read from or written to it any more (a new, empty database is not created in its place); put the file back, or restart to start from an empty database"
            }
            FileProblem::Replaced => {
                "was replaced by another file while this process had it open: nothing is read from or written to either; restart to use the new file"
            }
            FileProblem::Unreadable => {
                "cannot be checked (its directory is not readable): nothing is read from or written to it until it can"
            }
        }
    }
}

impl DatabaseFile {
    fn new(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(DatabaseFile {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
            epoch: Instant::now(),
            checked_ms: AtomicU64::new(0),
            problem: AtomicU8::new(FileProblem::None as u8),
        })
    }

    /// Looks at the path now (a `stat`).
    fn check_now(&self) -> FileProblem {
        use std::os::unix::fs::MetadataExt;
        let problem = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.device, self.inode) => FileProblem::None,
            Ok(_) => FileProblem::Replaced,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileProblem::Removed,
            Err(_) => FileProblem::Unreadable,
        };
        let now = self.epoch.elapsed().as_millis() as u64;
        self.checked_ms.store(now.max(1), Ordering::Relaxed);
        let before = FileProblem::from_code(self.problem.swap(problem as u8, Ordering::Relaxed));
        if before != problem {
            if problem == FileProblem::None {
                tracing::warn!(path = %self.path.display(), "the SQLite database file is back");
            } else {
                tracing::error!(path = %self.path.display(), "the SQLite database {}", problem.describe());
            }
        }
        problem
    }

    /// The outcome of a check at most [`RECHECK_EVERY`] old.
    fn check(&self) -> FileProblem {
        let last = self.checked_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        if last == 0 || now.saturating_sub(last) >= RECHECK_EVERY.as_millis() as u64 {
            self.check_now()
        } else {
            FileProblem::from_code(self.problem.load(Ordering::Relaxed))
        }
    }

    fn error(&self, problem: FileProblem) -> StoreError {
        StoreError::DatabaseFile {
            path: self.path.clone(),
            problem: problem.describe().into(),
        }
    }

    fn io_error(&self, problem: FileProblem) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::other(format!(
            "the SQLite database {} {}",
            self.path.display(),
            problem.describe()
        )))
    }
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
        let file: Arc<OnceLock<DatabaseFile>> = Arc::default();
        let (before_acquire, after_connect) = (file.clone(), file.clone());
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .before_acquire(move |_conn, _meta| {
                let file = before_acquire.clone();
                Box::pin(async move {
                    match file.get() {
                        Some(f) => match f.check() {
                            FileProblem::None => Ok(true),
                            problem => Err(f.io_error(problem)),
                        },
                        None => Ok(true),
                    }
                })
            })
            .after_connect(move |_conn, _meta| {
                let file = after_connect.clone();
                Box::pin(async move {
                    match file.get() {
                        Some(f) => match f.check_now() {
                            FileProblem::None => Ok(()),
                            problem => Err(f.io_error(problem)),
                        },
                        None => Ok(()),
                    }
                })
            })
            .connect_with(options.clone())
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
        let opened = DatabaseFile::new(path).map_err(|source| StoreError::Directory {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = file.set(opened);
        // From now on the file must exist: a new connection never creates an empty one in its place.
        pool.set_connect_options(options.create_if_missing(false));
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            file,
        })
    }

    /// The path is still the file this store opened (checked now, off the async threads).
    async fn check_location(&self) -> Result<()> {
        let file = self.file.clone();
        let problem = tokio::task::spawn_blocking(move || file.get().map(DatabaseFile::check_now))
            .await
            .unwrap_or(Some(FileProblem::Unreadable));
        match (problem, self.file.get()) {
            (Some(p), Some(f)) if p != FileProblem::None => Err(f.error(p)),
            _ => Ok(()),
        }
    }

    /// This process may write the file and its directory (where SQLite keeps the WAL and the
    /// shared-memory index): `access(2)`, so a read-only mount counts whoever runs it.
    async fn check_writable(&self) -> Result<()> {
        let path = self.path.clone();
        let problem = tokio::task::spawn_blocking(move || {
            use rustix::fs::{Access, access};
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            for (what, p) in [("file", &path), ("directory", &dir)] {
                if let Err(e) = access(p.as_path(), Access::WRITE_OK) {
                    let e = std::io::Error::from(e);
                    return Some(format!(
                        "is not writable ({what} {}: {e}): writes fail until it is",
                        p.display()
                    ));
                }
            }
            None
        })
        .await
        .unwrap_or_else(|e| Some(format!("cannot be checked for writing: {e}")));
        match problem {
            Some(problem) => Err(StoreError::DatabaseFile {
                path: self.path.clone(),
                problem,
            }),
            None => Ok(()),
        }
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
