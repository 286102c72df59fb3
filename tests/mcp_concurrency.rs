//! Agents arrive together: MCP tools called by many clients at once, through `serve` over streamable
//! HTTP, on SQLite and PostgreSQL.

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::Workspace;
use support::mcp::{McpClient, Server};

cli_conformance!(a_hundred_concurrent_get_port_calls_for_new_services_all_succeed,);

/// Issue 10, defect 2: each `get_port` for an undeclared service declares it in desired state. The
/// agent never saw a revision, so concurrent declarations must not refuse each other as stale: 100
/// concurrent calls for 100 new services of one project all succeed, with distinct ports in its block.
async fn a_hundred_concurrent_get_port_calls_for_new_services_all_succeed(ws: Workspace) {
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3000\n",
    );
    let server = Server::start(&ws, &["--no-auth"]).await;
    let url = server.url("/mcp/notes");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let url = url.clone();
        calls.spawn(async move {
            let client = McpClient::connect(&url, None).await;
            let service = format!("svc{i:03}");
            (
                service.clone(),
                client.call("get_port", json!({"service": service})).await,
            )
        });
    }
    let mut ports = BTreeSet::new();
    let mut failures = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (service, outcome) = joined.unwrap();
        match outcome {
            Ok(out) => {
                assert_eq!(out["service"], service.as_str());
                let port = out["port"].as_i64().unwrap();
                assert!((3000..3100).contains(&port), "{out}");
                ports.insert(port);
            }
            Err(e) => failures.push(format!("{service}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(ports.len(), 100, "distinct ports");
    let state = std::fs::read_to_string(ws.state().join("projects/notes.yaml")).unwrap();
    assert_eq!(state.matches("- name: svc").count(), 100, "{state}");
}
