//! `serve`'s reconcile loop with real processes: file edits are applied by auto-apply and seen through
//! MCP within 2 s; broken YAML is reported and changes nothing; killing the leader of two servers hands
//! reconciliation to the other within 10 s.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{McpClient, Server};

cli_conformance!(
    auto_apply_allocates_an_edited_service_within_two_seconds,
    broken_yaml_is_reported_and_the_last_good_state_stays_applied,
    killing_the_leader_hands_reconciliation_to_the_other_server,
);

const NOTES: &str = "name: notes\nservices:\n  - name: app\n  - name: search\n";

async fn ports(client: &McpClient) -> Vec<(String, i64)> {
    let out = client
        .call("list_ports", json!({}))
        .await
        .expect("list_ports");
    out["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["project"].as_str().unwrap(),
                    p["service"].as_str().unwrap()
                ),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Polls `check` every 50 ms until it returns Some or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(v) = check().await {
            return Some((v, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

const SERVE: &[&str] = &["--no-auth", "--auto-apply"];

async fn auto_apply_allocates_an_edited_service_within_two_seconds(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let server = Server::start(&ws, SERVE).await;
    let client = McpClient::connect(&server.url("/mcp/meta"), None).await;
    eventually(Duration::from_secs(10), || async {
        (server.health().await["reconcile"]["runs"].as_u64() >= Some(1)).then_some(())
    })
    .await
    .expect("first reconcile");
    assert_eq!(
        ports(&client).await,
        [
            ("notes/app".to_string(), 3000),
            ("notes/search".to_string(), 3001)
        ]
    );

    // A human edits the file (atomically, as editors do).
    let tmp = ws.state().join("projects/.notes.yaml.swp");
    std::fs::write(
        &tmp,
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: queue\n",
    )
    .unwrap();
    std::fs::rename(&tmp, ws.state().join("projects/notes.yaml")).unwrap();
    let found = eventually(Duration::from_secs(2), || async {
        ports(&client)
            .await
            .into_iter()
            .find(|(s, _)| s == "notes/queue")
    })
    .await;
    let ((_, port), took) = found.expect("the new service's port was not allocated within 2 s");
    assert_eq!(port, 3002);
    eprintln!("allocated after {took:?}");
    // get_port sees the same allocation (and did not have to allocate it).
    let got = client
        .call(
            "get_port",
            json!({"project": "notes", "service": "queue", "allocate": false}),
        )
        .await
        .unwrap();
    assert_eq!(got["port"], 3002);
    assert_eq!(got["allocated_now"], false);
}

async fn broken_yaml_is_reported_and_the_last_good_state_stays_applied(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let server = Server::start(&ws, SERVE).await;
    let client = McpClient::connect(&server.url("/mcp/meta"), None).await;
    eventually(Duration::from_secs(10), || async {
        (server.health().await["reconcile"]["runs"].as_u64() >= Some(1)).then_some(())
    })
    .await
    .expect("first reconcile");
    let before = ports(&client).await;

    // Half-written file: a removed service and a syntax error. Nothing may be applied from it.
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - {name: [oops\n",
    );
    let health = eventually(Duration::from_secs(3), || async {
        let h = server.health().await;
        h["desired"]["error"].is_object().then_some(h)
    })
    .await
    .expect("the broken file was not reported")
    .0;
    assert_eq!(health["status"], "degraded");
    let message = health["desired"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("state/projects/notes.yaml:4:"),
        "{message}"
    );
    let status: Value = client
        .call("project_status", json!({"project": "notes"}))
        .await
        .unwrap();
    assert!(
        status["desired_error"]
            .as_str()
            .unwrap()
            .contains("notes.yaml"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ports(&client).await, before, "nothing changed");

    // Fixed: the error clears.
    ws.write("state/projects/notes.yaml", NOTES);
    eventually(Duration::from_secs(3), || async {
        server.health().await["desired"]["error"]
            .is_null()
            .then_some(())
    })
    .await
    .expect("the error did not clear");
}

async fn killing_the_leader_hands_reconciliation_to_the_other_server(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let a = Server::start(&ws, SERVE).await;
    let b = Server::start(&ws, SERVE).await;
    let (leader_is_a, _) = eventually(Duration::from_secs(10), || async {
        let (ha, hb) = (a.health().await, b.health().await);
        match (
            ha["reconcile"]["leader"].as_bool(),
            hb["reconcile"]["leader"].as_bool(),
        ) {
            (Some(true), Some(false)) => Some(true),
            (Some(false), Some(true)) => Some(false),
            _ => None,
        }
    })
    .await
    .expect("exactly one server leads");
    let (mut leader, survivor) = if leader_is_a { (a, b) } else { (b, a) };
    // kill -9: no chance to release anything; the lock must be freed by the database / the OS.
    leader.kill();
    drop(leader);

    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: late\n",
    );
    let client = McpClient::connect(&survivor.url("/mcp/meta"), None).await;
    let found = eventually(Duration::from_secs(10), || async {
        ports(&client)
            .await
            .into_iter()
            .find(|(s, _)| s == "notes/late")
    })
    .await;
    let (_, took) = found.expect("the surviving server did not reconcile within 10 s");
    eprintln!("took over and applied after {took:?}");
    assert_eq!(survivor.health().await["reconcile"]["leader"], true);
}
