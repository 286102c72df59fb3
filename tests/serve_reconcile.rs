//! `serve`'s reconcile loop with real processes: file edits are applied by auto-apply and seen through
//! MCP within 2 s; broken YAML is reported and changes nothing; killing the leader of two servers hands
//! reconciliation to the other within 10 s.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{McpClient, Server, eventually};

cli_conformance!(
    auto_apply_allocates_an_edited_service_within_two_seconds,
    broken_yaml_is_reported_and_the_last_good_state_stays_applied,
    killing_the_leader_hands_reconciliation_to_the_other_server,
    a_follower_reflects_new_state_and_allocates_new_services,
    a_project_endpoint_never_moves_another_projects_ports,
    a_port_moved_or_released_by_another_process_is_served_within_a_second,
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

/// Issue 10, defect 3: a non-leader `serve` reloads `state/` too: its `/health` shows the new revision
/// and a newly added project's endpoint answers within 2 s, and a new service asked for on the follower
/// gets its port (the apply lock is shared, so whichever process takes it allocates).
async fn a_follower_reflects_new_state_and_allocates_new_services(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let a = Server::start(&ws, &["--no-auth"]).await;
    let b = Server::start(&ws, &["--no-auth"]).await;
    let (a_leads, _) = eventually(Duration::from_secs(10), || async {
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
    let follower = if a_leads { &b } else { &a };
    let before = follower.revision().await;

    ws.write(
        "state/projects/fresh.yaml",
        "name: fresh\nservices:\n  - name: web\n",
    );
    let (_, took) = eventually(Duration::from_secs(2), || async {
        let h = follower.health().await;
        (h["desired"]["revision"].as_str() != Some(before.as_str())
            && h["desired"]["projects"] == 2)
            .then_some(())
    })
    .await
    .expect("the follower did not pick up the new project within 2 s");
    eprintln!("the follower reloaded after {took:?}");

    let client = McpClient::connect(&follower.url("/mcp/fresh"), None).await;
    let got = client
        .call("get_port", json!({"service": "worker"}))
        .await
        .expect("get_port on the follower");
    assert_eq!(got["project"], "fresh");
    assert_eq!(got["allocated_now"], true);
    let port = got["port"].as_i64().unwrap();
    assert!((3000..3300).contains(&port), "{got}");
    // The service was declared in state/ and both servers answer with the same port.
    let leader = if a_leads { &a } else { &b };
    let on_leader = McpClient::connect(&leader.url("/mcp/fresh"), None).await;
    let again = on_leader
        .call("get_port", json!({"service": "worker", "allocate": false}))
        .await
        .expect("the leader sees the follower's allocation");
    assert_eq!(again["port"], port);
    let text = std::fs::read_to_string(ws.state().join("projects/fresh.yaml")).unwrap();
    assert!(text.contains("name: worker"), "{text}");
}

/// Issue 10, defect 4: on `/mcp/consilio`, pinning the block `notes` holds is accepted as an edit but
/// is a plan error naming the holder, so auto-apply moves nothing of `notes`; moving one of consilio's
/// own ports is disruptive and waits for a human.
async fn a_project_endpoint_never_moves_another_projects_ports(ws: Workspace) {
    ws.write(
        "state/projects/consilio.yaml",
        "name: consilio\nservices:\n  - name: api\n",
    );
    ws.write("state/projects/notes.yaml", NOTES);
    let server = Server::start(&ws, SERVE).await;
    let meta = McpClient::connect(&server.url("/mcp/meta"), None).await;
    eventually(Duration::from_secs(10), || async {
        (ports(&meta).await.len() == 3).then_some(())
    })
    .await
    .expect("first reconcile");
    let before = ports(&meta).await;
    assert!(
        before.contains(&("notes/app".to_string(), 3100)),
        "{before:?}"
    );

    let consilio = McpClient::connect(&server.url("/mcp/consilio"), None).await;
    let revision = server.revision().await;
    let edited = consilio
        .call(
            "upsert_project",
            json!({
                "project": {"name": "consilio", "port_range": 3100, "services": [{"name": "api"}]},
                "revision": revision,
            }),
        )
        .await
        .expect("the edit itself is valid");
    let errors = edited["plan"]["errors"].to_string();
    assert!(
        errors.contains(
            "project `consilio` pins port_range 3100, but project `notes` holds the block 3100–3199"
        ),
        "{edited:#}"
    );
    let status = eventually(Duration::from_secs(3), || async {
        let h = server.health().await;
        (h["reconcile"]["last_result"] == "blocked").then_some(h)
    })
    .await
    .expect("the reconciler reports the plan as blocked")
    .0;
    assert!(
        status["reconcile"]["waiting_for_human"]
            .to_string()
            .contains("holds the block"),
        "{status:#}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ports(&meta).await, before, "nothing moved");
    let project_status = consilio
        .call("project_status", json!({}))
        .await
        .expect("project_status");
    let line = project_status["status"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "ports/consilio")
        .cloned()
        .unwrap();
    assert_eq!(line["status"], "blocked", "{project_status:#}");

    // A move of consilio's own port waits for a human under auto-apply.
    let revision = server.revision().await;
    consilio
        .call(
            "upsert_project",
            json!({
                "project": {"name": "consilio", "port_range": 3000, "services": [{"name": "api", "port": 3042}]},
                "revision": revision,
            }),
        )
        .await
        .expect("edit");
    eventually(Duration::from_secs(3), || async {
        let h = server.health().await;
        (h["reconcile"]["last_result"] == "waiting"
            && h["reconcile"]["waiting_for_human"]
                .to_string()
                .contains("disruptive"))
        .then_some(())
    })
    .await
    .expect("the disruptive move waits for a human");
    assert_eq!(ports(&meta).await, before, "nothing moved");
}

/// `get_port` answers allocated ports from memory (ops::port_snapshot); a port moved or released by
/// another process — here the CLI, as a second `serve` would — is what `get_port` answers within a second
/// (the snapshot's version check), and a service allocated elsewhere is found at once.
async fn a_port_moved_or_released_by_another_process_is_served_within_a_second(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    let server = Server::start(&ws, &["--no-auth"]).await;
    let client = McpClient::connect(&server.url("/mcp/notes"), None).await;
    let port_of = |service: &'static str| {
        let client = &client;
        async move {
            client
                .call("get_port", json!({"service": service, "allocate": false}))
                .await
                .map(|v| v["port"].as_i64().unwrap())
        }
    };
    assert_eq!(port_of("app").await, Ok(3000));
    assert_eq!(port_of("search").await, Ok(3001));

    // Another process pins `app` elsewhere in the block (a disruptive move, so a human applies it).
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3000\nservices:\n  - name: app\n    port: 3050\n  - name: search\n",
    );
    ws.ok(&["apply", "--auto-approve", "--allow-disruptive"], 0);
    let (_, took) = eventually(Duration::from_secs(1), || async {
        (port_of("app").await == Ok(3050)).then_some(())
    })
    .await
    .expect("get_port still answers the old port a second after another process moved it");
    eprintln!("the moved port was served after {took:?}");

    // Another process removes `search`: its port is released, and get_port no longer answers it.
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3000\nservices:\n  - name: app\n    port: 3050\n  - name: worker\n",
    );
    ws.ok(
        &["apply", "--auto-approve", "--allow-disruptive", "--force"],
        0,
    );
    eventually(Duration::from_secs(1), || async {
        port_of("search").await.is_err().then_some(())
    })
    .await
    .expect("get_port still answers a released port a second after another process released it");
    // A service allocated by another process is found at once (never answered \"unknown\" from memory).
    let worker = port_of("worker").await.expect("the new service's port");
    assert!((3000..3100).contains(&worker), "{worker}");
}
