//! PostgreSQL 14+ with pgvector: production and several hosts on one database.

use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::portable::portable_repos;
use super::{AccessEvent, ApplyLock, Backend, DatabaseInfo, Result, Store, StoreError, redact_url};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory-lock key space of the supervisor: the two-integer form, so it can never collide with
/// sqlx's migration lock (one 64-bit key). The second integer says what is locked.
const LOCK_CLASS: i32 = 0x5355_5056; // "SUPV"
const LOCK_APPLY: i32 = 1;
const LOCK_LEADER: i32 = 2;

pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// Per-model vector indexes already ensured, pgvector's version (knowledge search).
    pub(crate) knowledge: super::knowledge::PgKnowledgeState,
    options: PgConnectOptions,
    url_for_messages: String,
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<Self> {
        let url_for_messages = redact_url(url);
        let open_err = |source| StoreError::Open {
            backend: Backend::Postgres,
            location: url_for_messages.clone(),
            source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name("supervisor");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: Backend::Postgres,
                source,
            })?;
        Ok(PostgresStore {
            pool,
            knowledge: Default::default(),
            options,
            url_for_messages,
        })
    }

    /// Nothing to check before a round trip: the server is the database.
    async fn check_location(&self) -> Result<()> {
        Ok(())
    }

    /// A PostgreSQL server that refuses writes (a read-only replica, a full disk) says so in the
    /// writes themselves.
    async fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    /// Tries the advisory lock `what` on a dedicated connection (never a pooled one: the lock belongs to
    /// the session and must outlive any single query).
    async fn try_advisory(&self, what: i32) -> Result<Option<ApplyLock>> {
        let op = "take an advisory lock";
        let mut conn = sqlx::PgConnection::connect_with(&self.options)
            .await
            .map_err(StoreError::query(op))?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(what)
            .fetch_one(&mut conn)
            .await
            .map_err(StoreError::query(op))?;
        if got {
            Ok(Some(ApplyLock::postgres(conn)))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

impl PostgresStore {
    async fn fetch_secrets(&self, paths: &[&str]) -> Result<Vec<super::SecretRow>> {
        sqlx::query_as("SELECT * FROM secrets WHERE path = ANY($1)")
            .bind(paths)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("read secrets"))
    }

    /// One statement (one round trip, atomic) per batch, whatever its size: the events travel as
    /// arrays, inserted in order, and the counters of successful reads are bumped per path.
    async fn write_access_events(&self, events: &[AccessEvent]) -> Result<()> {
        let column = |f: fn(&AccessEvent) -> &str| -> Vec<&str> { events.iter().map(f).collect() };
        let at: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.at).collect();
        let counts = super::read_counts(events);
        let count_paths: Vec<&str> = counts.iter().map(|c| c.0).collect();
        let count_n: Vec<i64> = counts.iter().map(|c| c.1).collect();
        let count_at: Vec<chrono::DateTime<chrono::Utc>> = counts.iter().map(|c| c.2).collect();
        sqlx::query(
            "WITH logged AS (
                 INSERT INTO secret_access_log (path, action, actor, outcome, at)
                 SELECT p, a, w, o, t FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                                                  $5::timestamptz[]) WITH ORDINALITY AS e(p, a, w, o, t, i)
                 ORDER BY i
             )
             UPDATE secrets SET access_count = secrets.access_count + c.n, last_accessed_at = c.t
             FROM UNNEST($6::text[], $7::bigint[], $8::timestamptz[]) AS c(p, n, t)
             WHERE secrets.path = c.p",
        )
        .bind(column(|e| &e.path))
        .bind(column(|e| &e.action))
        .bind(column(|e| &e.actor))
        .bind(column(|e| &e.outcome))
        .bind(at)
        .bind(count_paths)
        .bind(count_n)
        .bind(count_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("record secret access"))?;
        Ok(())
    }
}

portable_repos!(PostgresStore);
super::checks::check_repo!(PostgresStore);

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn info(&self) -> Result<DatabaseInfo> {
        let op = "read database information";
        let server_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        let vector_extension: Option<String> =
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query(op))?;
        let migrations_applied = sqlx::query_as(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        Ok(DatabaseInfo {
            backend: Backend::Postgres,
            location: self.url_for_messages.clone(),
            server_version,
            vector_extension,
            full_text_search: "tsvector (ts_rank_cd)".into(),
            migrations_applied,
            migrations_known: MIGRATOR.iter().count(),
        })
    }

    async fn lock_apply(&self, timeout: Duration) -> Result<ApplyLock> {
        let started = Instant::now();
        loop {
            if let Some(lock) = self.try_advisory(LOCK_APPLY).await? {
                return Ok(lock);
            }
            if started.elapsed() >= timeout {
                return Err(StoreError::LockTimeout {
                    what: format!("the database {}", self.url_for_messages),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_lead(&self) -> Result<Option<ApplyLock>> {
        self.try_advisory(LOCK_LEADER).await
    }
}
