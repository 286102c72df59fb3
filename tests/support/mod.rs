//! Shared test harness: real databases (a fresh SQLite file or a fresh PostgreSQL database per test),
//! the built binary, temporary state directories, and fake cloud APIs (`fake_cloudflare`,
//! `fake_google`).
#![allow(dead_code)]

pub mod browser;
pub mod db;
pub mod fake_cloudflare;
pub mod fake_embeddings;
pub mod fake_google;
pub mod faults;
pub mod hostile;
pub mod mcp;
pub mod model;
pub mod test_secrets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `supervisor` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// A command running the binary with a clean environment: no inherited DATABASE_URL, key or config.
pub fn supervisor(cwd: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("SECRETS_ENCRYPTION_KEY")
        .env_remove("SUPERVISOR_CONFIG")
        .env_remove("SUPERVISOR_STATE_DIR")
        .env_remove("LOG_LEVEL")
        .env_remove("LOG_FORMAT")
        .env_remove("SUPERVISOR_MODEL_DIR")
        .env("NO_COLOR", "1");
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
pub fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// A temporary working directory with a state directory and a database (SQLite by default, or the
/// PostgreSQL database given), in which tests run the binary.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub database_url: Option<String>,
}

impl Workspace {
    pub fn new(database_url: Option<String>) -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temporary directory"),
            database_url,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a file relative to the workspace.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = supervisor(self.path());
        if let Some(url) = &self.database_url {
            c.env("DATABASE_URL", url);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run supervisor")
    }

    /// Runs and asserts the exit code; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        expect_code(&o, code);
        stdout(&o)
    }

    /// The database location as a store `Location`.
    pub fn location(&self) -> supervisor::store::Location {
        supervisor::store::Location::resolve(self.database_url.as_deref(), &self.state()).unwrap()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(url) = &self.database_url {
            db::drop_test_database(url);
        }
    }
}

/// Defines each named test twice, `sqlite::name` and `postgres::name`, calling `name(Workspace)`.
#[macro_export]
macro_rules! cli_conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Workspace::new(None)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let url = $crate::support::db::fresh_postgres_url().await;
                    super::$name($crate::support::Workspace::new(Some(url))).await;
                }
            )*
        }
    };
}
