//! A real browser for the status page's tests: Debian's headless Chromium (`SUPERVISOR_TEST_CHROMIUM`,
//! installed by `scripts/lib/browser.sh`) driven over the DevTools protocol by `tests/browser/drive.mjs`
//! on the Node 22 that `scripts/lib/clients.sh` installs. A missing browser or Node is a loud failure
//! naming what installs it, never a skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::mcp::{node, tool_from_env};

/// Headless Chromium (`SUPERVISOR_TEST_CHROMIUM`); without it the test fails, naming
/// `scripts/lib/browser.sh` (which installs it as root) and `scripts/test-deps`.
pub fn chromium() -> PathBuf {
    tool_from_env(
        "SUPERVISOR_TEST_CHROMIUM",
        "headless Chromium (Debian package chromium; scripts/lib/browser.sh installs it as root)",
    )
}

/// Where screenshots go: `target/status-page/` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("status-page")
}

/// Runs `tests/browser/drive.mjs` with `job` (see its header); returns its JSON report.
pub async fn drive(job: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/drive.mjs");
    let mut cmd = tokio::process::Command::new(node());
    cmd.arg(&script)
        .arg(job.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the browser session took over 180 s")
        .expect("run node tests/browser/drive.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser session failed ({}):\n--- stderr\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the browser session printed no JSON ({e}):\n{stdout}\n{stderr}")
    })
}
