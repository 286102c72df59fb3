//! Shared test harness: real databases (a fresh SQLite file or a fresh PostgreSQL database per test),
//! the built binary, temporary state directories, and fake cloud APIs (`fake_cloudflare`).
#![allow(dead_code)]

pub mod db;
pub mod fake_cloudflare;

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
