//! Real databases for tests. SQLite: a new file in a temporary directory. PostgreSQL: a new database on
//! the server named by TEST_DATABASE_URL (scripts/test starts one); its absence is a loud failure, never
//! a silent skip.

use std::sync::Arc;

use sqlx::Connection;
use supervisor::store::{self, Location, Store};

pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub location: Location,
    /// Keeps the SQLite directory alive for the test's duration.
    pub _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn url(&self) -> String {
        match &self.location {
            Location::Sqlite(p) => format!("sqlite://{}", p.display()),
            Location::Postgres(u) => u.clone(),
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let location = Location::Sqlite(dir.path().join("supervisor.db"));
    let store = store::open(&location).await.expect("open SQLite store");
    TestDb {
        store,
        location,
        _dir: Some(dir),
    }
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PostgreSQL is not available: TEST_DATABASE_URL is not set.\n\
             Run the suite with `scripts/test` (it installs and starts PostgreSQL 18 + pgvector), or set\n\
             TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB pointing at a server with pgvector."
        )
    })
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_postgres_url() -> String {
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to TEST_DATABASE_URL ({e}); is the server up? scripts/test starts one"));
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let _ = conn.close().await;
    with_database(&admin, &name)
}

/// `postgres://u@h:p/old?x` → `postgres://u@h:p/<name>?x`
fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let authority_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &main[..authority_end])
}

pub async fn postgres() -> TestDb {
    let url = fresh_postgres_url().await;
    let location = Location::Postgres(url);
    let store = store::open(&location).await.expect("open PostgreSQL store");
    TestDb {
        store,
        location,
        _dir: None,
    }
}

/// Runs each named test body against both backends: `conformance!(a, b)` defines `sqlite::a`,
/// `postgres::a`, … calling `a(&TestDb)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::db::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::db::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

/// Drops a test database created by [`fresh_postgres_url`] (best effort, at the end of a test), so a
/// long-lived development server does not accumulate thousands of them. Only `t_…` databases.
pub fn drop_test_database(url: &str) {
    let Some(name) = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .map(str::to_string)
    else {
        return;
    };
    if !name.starts_with("t_") || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return;
    }
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        return;
    };
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
                let _ = conn.close().await;
            }
        });
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Location::Postgres(url) = &self.location {
            drop_test_database(url);
        }
    }
}
