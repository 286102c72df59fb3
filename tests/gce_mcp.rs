//! The Google Cloud MCP tools through real clients — the official Python SDK on `/mcp/meta` and on a
//! project endpoint, and many concurrent calls — against `serve` with the fake Google APIs and the
//! vault, on SQLite and on PostgreSQL.

mod support;

use axum::http::Method;
use serde_json::{Value, json};
use support::fake_google::FakeGoogle;
use support::mcp::{McpClient, PyClient, Server, create_token, op_err, tool_err, tool_ok};
use support::{Workspace, expect_code};

cli_conformance!(
    gcloud_tools_read_vms_edit_desired_state_and_leave_resizes_to_a_human,
    gcloud_tools_answer_tens_of_concurrent_calls,
);

const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
const CREDS: &str = "meta/gcloud/service_account";
const GCLOUD_TOOLS: [&str; 4] = [
    "create_api_key",
    "gcloud_get_vm",
    "gcloud_resize_vm",
    "gcloud_vm_health",
];

/// A workspace with a fake Google, a VM `host-1` (e2-standard-4, RUNNING) declared, a project
/// `alpha`, and the service-account key in the vault; returns the fake and the vault key file.
async fn setup(ws: &Workspace) -> (FakeGoogle, std::path::PathBuf) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeGoogle::start().await;
    let account = fake.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
    fake.add_instance(
        "my-gcp-project",
        "us-central1-a",
        "host-1",
        "e2-standard-4",
        "RUNNING",
    );
    ws.write("sa.json", &account.json);
    ws.write("vault.key", KEY);
    ws.write(
        "state/supervisor.yaml",
        &format!(
            "gcloud:\n  credentials: secret:{CREDS}\n  api_url: {}\n  monitoring_api_url: {}\n  apikeys_api_url: {}\nvms:\n  - name: host-1\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4\n",
            fake.compute_url(),
            fake.monitoring_url(),
            fake.apikeys_url()
        ),
    );
    ws.write("state/projects/alpha.yaml", "name: alpha\n");
    let key_file = ws.path().join("vault.key");
    let sa = ws.path().join("sa.json");
    let out = ws
        .cmd()
        .args([
            "secrets",
            "set",
            CREDS,
            "--value-file",
            sa.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    expect_code(&out, 0);
    (fake, key_file)
}

fn tool_names(listed: &Value) -> Vec<String> {
    listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

async fn gcloud_tools_read_vms_edit_desired_state_and_leave_resizes_to_a_human(ws: Workspace) {
    let (fake, key_file) = setup(&ws).await;
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &["--key-file", key_file.to_str().unwrap()]).await;
    let r0 = server.revision().await;
    let sup_before = ws.read("state/supervisor.yaml");

    let report = PyClient::http(&server.url("/mcp/meta"))
        .token(&meta)
        .run(json!([
            {"op": "list_tools"},
            {"op": "call", "name": "gcloud_get_vm", "arguments": {"name": "host-1"}},
            {"op": "call", "name": "gcloud_vm_health", "arguments": {"name": "host-1", "minutes": 30}},
            {"op": "call", "name": "gcloud_get_vm", "arguments": {"name": "host-9"}},
            {"op": "call", "name": "gcloud_resize_vm",
             "arguments": {"name": "host-1", "machine_type": "e2-standard-8", "revision": "sha256:stale"}},
            {"op": "call", "name": "gcloud_resize_vm",
             "arguments": {"name": "host-1", "machine_type": "e2-enormous", "revision": r0}},
            {"op": "call", "name": "gcloud_resize_vm",
             "arguments": {"name": "host-1", "machine_type": "e2-standard-8", "revision": r0}},
            {"op": "call", "name": "apply_plan"},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    let listed = tool_names(&r[0]);
    for t in GCLOUD_TOOLS {
        assert!(listed.contains(&t.to_string()), "{t} missing: {listed:?}");
    }
    for t in r[0]["tools"].as_array().unwrap() {
        if GCLOUD_TOOLS.contains(&t["name"].as_str().unwrap()) {
            assert_eq!(t["output_schema"]["type"], "object", "{t:#}");
            assert!(!t.to_string().contains("\"format\":\"int64\""), "{t:#}");
        }
    }
    let vm = &tool_ok(&r[1])["vm"];
    assert_eq!(vm["status"], "RUNNING");
    assert_eq!(vm["machine_type"], "e2-standard-4");
    assert_eq!(
        (vm["cpus"].as_i64(), vm["memory_mb"].as_i64()),
        (Some(4), Some(16384))
    );
    let health = &tool_ok(&r[2])["health"];
    assert_eq!(health["window_minutes"], 30);
    assert_eq!(
        health["cpu"]["reported"], false,
        "no samples seeded: {health}"
    );
    assert_eq!(health["cpu"]["average_percent"], Value::Null);
    assert_eq!(health["memory"]["reported"], false);
    assert!(
        tool_err(&r[3]).contains("no VM `host-9`"),
        "{}",
        tool_err(&r[3])
    );
    assert!(tool_err(&r[4]).contains("the desired state changed since revision sha256:stale"));
    assert!(
        tool_err(&r[5]).contains("`e2-enormous` is not a valid machine type"),
        "{}",
        tool_err(&r[5])
    );
    let resized = tool_ok(&r[6]);
    assert_eq!(resized["changed"], true);
    let changes = resized["plan"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "only the VM: {changes:#?}");
    assert_eq!(changes[0]["address"], "vm/host-1");
    assert_eq!(changes[0]["disruptive"], true);
    // apply_plan never applies a disruptive change: the VM runs on with its old type.
    let applied = tool_ok(&r[7]);
    assert_eq!(applied["applied"], false);
    assert!(
        applied["refused"]
            .as_str()
            .unwrap()
            .contains("disruptive changes (vm/host-1)"),
        "{applied}"
    );
    let i = fake.instance("host-1");
    assert_eq!(
        (i.status.as_str(), i.machine_type.as_str()),
        ("RUNNING", "e2-standard-4")
    );
    assert_eq!(
        fake.count(
            Method::POST,
            "/compute/v1/projects/*/zones/*/instances/*/stop"
        ),
        0
    );
    let sup_after = ws.read("state/supervisor.yaml");
    assert_ne!(sup_after, sup_before);
    assert!(
        sup_after.contains("machine_type: e2-standard-8"),
        "{sup_after}"
    );

    // An API key for alpha: declared through the tool, then applied (it interrupts nothing).
    let r1 = resized["revision"].as_str().unwrap().to_string();
    let report = PyClient::http(&server.url("/mcp/meta"))
        .token(&meta)
        .run(json!([
            {"op": "call", "name": "create_api_key", "arguments": {
                "project": "alpha", "name": "maps", "gcp_project": "my-gcp-project",
                "restrict_apis": ["maps-backend.googleapis.com"], "revision": r1}},
            {"op": "call", "name": "apply_plan", "arguments": {"project": "alpha"}},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    let declared = tool_ok(&r[0]);
    let plan = declared["plan"]["changes"].as_array().unwrap();
    assert!(
        plan.iter()
            .any(|c| c["address"] == "api_key/alpha/maps" && c["action"] == "create"),
        "{plan:#?}"
    );
    assert!(
        ws.read("state/projects/alpha.yaml")
            .contains("store: project/alpha/maps_api_key"),
        "{}",
        ws.read("state/projects/alpha.yaml")
    );
    let applied = tool_ok(&r[1]);
    assert_eq!(applied["applied"], true, "{applied}");
    let keys = fake.keys("my-gcp-project");
    assert_eq!(keys.len(), 1);
    assert!(
        !report.to_string().contains(&keys[0].key_string),
        "the key string is in a tool result"
    );
    let got = ws
        .cmd()
        .args([
            "secrets",
            "get",
            "project/alpha/maps_api_key",
            "--key-file",
            key_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    expect_code(&got, 0);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim_end(),
        keys[0].key_string
    );
    assert!(!server.log().contains(&keys[0].key_string));

    // A project endpoint has none of these tools, and cannot call them.
    let report = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([
            {"op": "list_tools"},
            {"op": "call", "name": "gcloud_get_vm", "arguments": {"name": "host-1"}},
            {"op": "call", "name": "create_api_key", "arguments": {
                "project": "alpha", "name": "geo", "gcp_project": "my-gcp-project", "revision": r1}},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    let listed = tool_names(&r[0]);
    for t in GCLOUD_TOOLS {
        assert!(!listed.contains(&t.to_string()), "{t} listed on /mcp/alpha");
    }
    for i in [1, 2] {
        let refused = match r[i].get("error") {
            Some(_) => op_err(&r[i]).to_string(),
            None => tool_err(&r[i]),
        };
        assert!(!refused.is_empty(), "op {i}: {}", r[i]);
    }
    assert!(!ws.read("state/projects/alpha.yaml").contains("geo"));
}

async fn gcloud_tools_answer_tens_of_concurrent_calls(ws: Workspace) {
    let (fake, key_file) = setup(&ws).await;
    let server = Server::start(
        &ws,
        &["--no-auth", "--key-file", key_file.to_str().unwrap()],
    )
    .await;
    let url = server.url("/mcp/meta");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let url = url.clone();
        calls.spawn(async move {
            let client = McpClient::connect(&url, None).await;
            let (tool, args) = if i % 2 == 0 {
                ("gcloud_get_vm", json!({"name": "host-1"}))
            } else {
                ("gcloud_vm_health", json!({"name": "host-1", "minutes": 60}))
            };
            (tool, client.call(tool, args).await)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (tool, outcome) = joined.unwrap();
        match outcome {
            Ok(out) if tool == "gcloud_get_vm" => {
                assert_eq!(out["vm"]["machine_type"], "e2-standard-4")
            }
            Ok(out) => assert_eq!(out["health"]["status"], "RUNNING"),
            Err(e) => failures.push(format!("{tool}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Reads change nothing; and the forty calls (plus the reconciler's plan) share one token.
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.method == Method::POST && r.path.contains("/instances/"))
            .count(),
        0
    );
    assert!(fake.count(Method::GET, "/compute/v1/projects/*/zones/*/instances/*") >= 40);
    assert_eq!(
        fake.count(Method::POST, "/token"),
        1,
        "one token for the process"
    );
}
