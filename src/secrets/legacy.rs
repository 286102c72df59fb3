//! Reading the original service's secrets for `supervisor secrets import-legacy`.
//!
//! The original (TypeScript) service kept its secrets in PostgreSQL, in a table of this shape
//! (its migration `secrets_management`); a SQLite copy with the same column names is read as well:
//!
//! ```sql
//! CREATE TABLE secrets (
//!   id                SERIAL PRIMARY KEY,
//!   key_path          TEXT NOT NULL UNIQUE,     -- meta/…, project/<p>/…, service/…
//!   encrypted_value   BYTEA NOT NULL,           -- IV (16) ‖ GCM tag (16) ‖ ciphertext, no AAD
//!   description       TEXT,
//!   scope             TEXT NOT NULL,            -- ignored: derived again from key_path
//!   project_name      TEXT,                     -- ignored: derived again from key_path
//!   service_name      TEXT,                     -- ignored: derived again from key_path
//!   created_at        TIMESTAMPTZ DEFAULT NOW(),
//!   updated_at        TIMESTAMPTZ DEFAULT NOW(),
//!   created_by        TEXT,                     -- ignored
//!   last_accessed_at  TIMESTAMPTZ,
//!   access_count      INTEGER DEFAULT 0,
//!   expires_at        TIMESTAMPTZ,
//!   rotation_required BOOLEAN DEFAULT FALSE
//! );
//! ```
//!
//! Only the columns `key_path`, `encrypted_value`, `description`, `created_at`, `updated_at`,
//! `last_accessed_at`, `access_count`, `expires_at` and `rotation_required` are read. The old service's
//! `secret_access_log` is not imported (its actors were all `supervisor`). This module only reads; the
//! vault decrypts, validates and re-encrypts ([`super::vault::Vault::import_legacy`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::vault::LegacySecret;
use crate::store::{Location, redact_url};

/// The columns read, for messages.
pub const LEGACY_COLUMNS: &str = "secrets(key_path, encrypted_value, description, created_at, updated_at, \
     last_accessed_at, access_count, expires_at, rotation_required)";

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error(
        "unsupported legacy database URL {url}: use postgres://… (or postgresql://…) or sqlite://PATH"
    )]
    UnsupportedUrl { url: String },
    #[error("the legacy SQLite database {path} does not exist")]
    Missing { path: String },
    #[error("cannot open the legacy database {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot read the legacy database {location}: expected a table {LEGACY_COLUMNS} ({source})"
    )]
    Shape {
        location: String,
        #[source]
        source: sqlx::Error,
    },
}

#[derive(sqlx::FromRow)]
struct Row {
    key_path: String,
    encrypted_value: Vec<u8>,
    description: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    last_accessed_at: Option<DateTime<Utc>>,
    access_count: i64,
    expires_at: Option<DateTime<Utc>>,
    rotation_required: bool,
}

impl From<Row> for LegacySecret {
    fn from(r: Row) -> Self {
        LegacySecret {
            key_path: r.key_path,
            encrypted_value: r.encrypted_value,
            description: r.description,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_accessed_at: r.last_accessed_at,
            access_count: r.access_count,
            expires_at: r.expires_at,
            rotation_required: r.rotation_required,
        }
    }
}

const POSTGRES_QUERY: &str = "SELECT key_path, encrypted_value, description,
        created_at::timestamptz AS created_at, updated_at::timestamptz AS updated_at,
        last_accessed_at::timestamptz AS last_accessed_at,
        COALESCE(access_count, 0)::bigint AS access_count, expires_at::timestamptz AS expires_at,
        COALESCE(rotation_required, FALSE) AS rotation_required
     FROM secrets ORDER BY key_path";

const SQLITE_QUERY: &str = "SELECT key_path, encrypted_value, description, created_at, updated_at,
        last_accessed_at, COALESCE(access_count, 0) AS access_count, expires_at,
        COALESCE(rotation_required, 0) AS rotation_required
     FROM secrets ORDER BY key_path";

/// Every secret in the legacy database at `url` (read only; nothing is written there).
pub async fn read(url: &str) -> Result<Vec<LegacySecret>, LegacyError> {
    let location = Location::resolve(Some(url), std::path::Path::new("."))
        .ok()
        .filter(|_| !url.trim().is_empty())
        .ok_or_else(|| LegacyError::UnsupportedUrl {
            url: redact_url(url),
        })?;
    let shown = location.to_string();
    let rows: Vec<Row> = match &location {
        Location::Sqlite(path) => {
            if !path.is_file() {
                return Err(LegacyError::Missing { path: shown });
            }
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(|source| LegacyError::Open {
                    location: shown.clone(),
                    source,
                })?;
            let rows = sqlx::query_as(SQLITE_QUERY)
                .fetch_all(&mut conn)
                .await
                .map_err(|source| LegacyError::Shape {
                    location: shown.clone(),
                    source,
                });
            let _ = conn.close().await;
            rows?
        }
        Location::Postgres(url) => {
            let connect = sqlx::PgConnection::connect(url);
            let mut conn = tokio::time::timeout(Duration::from_secs(30), connect)
                .await
                .map_err(|_| LegacyError::Open {
                    location: shown.clone(),
                    source: sqlx::Error::PoolTimedOut,
                })?
                .map_err(|source| LegacyError::Open {
                    location: shown.clone(),
                    source,
                })?;
            let rows = sqlx::query_as(POSTGRES_QUERY)
                .fetch_all(&mut conn)
                .await
                .map_err(|source| LegacyError::Shape {
                    location: shown.clone(),
                    source,
                });
            let _ = conn.close().await;
            rows?
        }
    };
    Ok(rows.into_iter().map(LegacySecret::from).collect())
}
