//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, run by Node 22) against
//! `supervisor serve --no-auth`: the protocol-level server scenarios, each its own test.
//!
//! Two pinned versions (scripts/lib/clients.sh installs both): the release 0.1.16 (revisions up to
//! 2025-11-25) and the pre-release 0.2.0-alpha.12, the only one with the 2026-07-28 scenarios
//! (server-stateless, http-header-validation, caching). The suite's fixture scenarios (tools-call-*,
//! resources-read-*, prompts-get-*, …) need the suite's own test tools and resources, which a real server
//! does not have; they are not run.
//!
//! A scenario passes when the suite exits 0 and none of its checks is a FAILURE or a WARNING (a SHOULD
//! the suite saw broken). The only tolerated failures are listed in [`FIXTURE_ONLY`]: checks the suite
//! itself marks "untestable" because they need a diagnostic tool of its fixture server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::Workspace;
use support::mcp::{Server, node, tool_from_env};

/// Checks of `server-stateless` that can only run against the suite's fixture server: they call tools
/// named `test_missing_capability`, `test_streaming_elicitation` and `test_logging_tool`, and when the
/// server does not list them the suite records the check as a FAILURE with `details.untestable = true`
/// ("Not testable: server does not list the diagnostic tool …"). The requirements themselves hold
/// trivially here: the supervisor relies on no client capability (no sampling, elicitation or roots),
/// sends no server-to-client requests and no log notifications.
const FIXTURE_ONLY: &[(&str, &str)] = &[
    (
        "sep-2575-server-rejects-undeclared-capability",
        "test_missing_capability",
    ),
    (
        "sep-2575-missing-capability-http-400",
        "test_missing_capability",
    ),
    (
        "sep-2575-http-server-no-independent-requests-on-stream",
        "test_streaming_elicitation",
    ),
    (
        "sep-2575-server-no-log-without-loglevel",
        "test_logging_tool",
    ),
];

#[derive(Clone, Copy, Debug)]
enum Suite {
    /// @modelcontextprotocol/conformance 0.1.16
    Release,
    /// @modelcontextprotocol/conformance 0.2.0-alpha.12
    Next,
}

impl Suite {
    fn cli(self) -> PathBuf {
        match self {
            Suite::Release => tool_from_env(
                "SUPERVISOR_TEST_CONFORMANCE",
                "the MCP conformance suite 0.1.16 (npm @modelcontextprotocol/conformance)",
            ),
            Suite::Next => tool_from_env(
                "SUPERVISOR_TEST_CONFORMANCE_NEXT",
                "the MCP conformance suite 0.2.0-alpha.12 (npm @modelcontextprotocol/conformance)",
            ),
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let re = regex::Regex::new(r"\x1b\[[0-9;]*m").unwrap();
    re.replace_all(s, "").into_owned()
}

/// The checks.json the suite wrote for `scenario` under `dir`.
fn checks(dir: &Path, scenario: &str) -> Vec<Value> {
    let prefix = format!("server-{scenario}-");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one result directory for {scenario} in {}",
        dir.display()
    );
    let text = std::fs::read_to_string(found[0].join("checks.json")).expect("checks.json");
    serde_json::from_str(&text).expect("checks.json is JSON")
}

/// Runs one scenario of `suite` against `path` on a fresh server and asserts it passed.
async fn scenario(suite: Suite, name: &str, path: &str) {
    let (cli, node) = (suite.cli(), node());
    let ws = Workspace::new(None);
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n  shared: { start: 9000, end: 9099 }\n",
    );
    ws.write(
        "state/projects/alpha.yaml",
        "name: alpha\nservices:\n  - name: api\n  - name: web\nchecks: [\"true\"]\n",
    );
    ws.write(
        "state/projects/beta.yaml",
        "name: beta\nservices:\n  - name: db\n",
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    let server = Server::start(&ws, &["--no-auth"]).await;
    let results = tempfile::tempdir().unwrap();
    let url = server.url(path);

    let mut cmd = tokio::process::Command::new(&node);
    cmd.arg(&cli)
        .args(["server", "--url", &url, "--scenario", name, "--output-dir"])
        .arg(results.path())
        .current_dir(results.path())
        .env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{suite:?} {name}: the conformance suite took over 180 s"))
        .expect("run the conformance suite");
    let report = strip_ansi(&format!(
        "--- conformance suite {suite:?} ({}), scenario {name}, {url}: {}\n--- stdout\n{}\n--- stderr\n{}\n--- server log\n{}",
        cli.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    ));

    let checks = checks(results.path(), name);
    let mut bad = Vec::new();
    let mut tolerated = Vec::new();
    for c in &checks {
        let id = c["id"].as_str().unwrap_or("?");
        match c["status"].as_str() {
            Some("SUCCESS" | "SKIPPED" | "INFO") => {}
            Some("FAILURE")
                if c["details"]["untestable"] == true
                    && FIXTURE_ONLY.iter().any(|(fid, tool)| {
                        *fid == id && c["errorMessage"].as_str().is_some_and(|m| m.contains(tool))
                    }) =>
            {
                tolerated.push(id.to_string());
            }
            _ => bad.push(c.clone()),
        }
    }
    assert!(
        bad.is_empty(),
        "{suite:?} {name}: checks failed:\n{}\n{report}",
        serde_json::to_string_pretty(&bad).unwrap()
    );
    assert!(
        checks.iter().any(|c| c["status"] == "SUCCESS"),
        "{suite:?} {name}: no check succeeded\n{report}"
    );
    if tolerated.is_empty() {
        assert!(
            out.status.success(),
            "{suite:?} {name}: the suite failed\n{report}"
        );
    } else {
        // Only server-stateless has fixture-only checks; all four are untestable, none failed for real.
        assert_eq!(name, "server-stateless", "{report}");
        tolerated.sort();
        let mut expected: Vec<String> = FIXTURE_ONLY.iter().map(|(i, _)| i.to_string()).collect();
        expected.sort();
        assert_eq!(tolerated, expected, "{report}");
    }
    eprintln!(
        "{suite:?} {name} on {path}: {} checks, {} passed, {} fixture-only",
        checks.len(),
        checks.iter().filter(|c| c["status"] == "SUCCESS").count(),
        tolerated.len()
    );
}

macro_rules! scenarios {
    ($module:ident, $suite:expr, $path:expr, [$($test:ident => $name:expr),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::scenario($suite, $name, $path).await;
                }
            )*
        }
    };
}

scenarios!(release_meta, super::Suite::Release, "/mcp/meta", [
    server_initialize => "server-initialize",
    ping => "ping",
    tools_list => "tools-list",
    resources_list => "resources-list",
    prompts_list => "prompts-list",
    dns_rebinding_protection => "dns-rebinding-protection",
]);

scenarios!(next_meta, super::Suite::Next, "/mcp/meta", [
    server_initialize => "server-initialize",
    server_session_lifecycle => "server-session-lifecycle",
    ping => "ping",
    tools_list => "tools-list",
    resources_list => "resources-list",
    prompts_list => "prompts-list",
    dns_rebinding_protection => "dns-rebinding-protection",
    server_stateless => "server-stateless",
    http_header_validation => "http-header-validation",
    caching => "caching",
    resource_not_found => "sep-2164-resource-not-found",
]);

// A project endpoint is a separate rmcp service (created on first use) with the same configuration.
scenarios!(next_project, super::Suite::Next, "/mcp/alpha", [
    server_initialize => "server-initialize",
    tools_list => "tools-list",
    dns_rebinding_protection => "dns-rebinding-protection",
    server_stateless => "server-stateless",
]);
