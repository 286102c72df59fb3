//! The MCP server through a real client: the official Python SDK (`mcp` 2.3, tests/mcp_clients/client.py)
//! against `supervisor serve` (streamable HTTP, bearer tokens from `supervisor token create`) and
//! `supervisor mcp` (stdio), on SQLite and on PostgreSQL. Plain HTTP requests check the status codes the
//! SDK only reports as exceptions.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{PyClient, Server, create_token, http, op_err, run_all, tool_err, tool_ok};

cli_conformance!(
    http_tools_resources_and_prompts_on_meta_and_project_endpoints,
    stdio_serves_the_same_tools_confined_to_its_project,
    requests_without_a_valid_token_are_refused_with_401,
    a_revoked_token_stops_working_even_inside_an_open_session,
    a_project_token_is_refused_on_other_endpoints_with_403,
    a_project_endpoint_sees_and_edits_only_its_own_project,
    a_stale_revision_is_refused_and_changes_nothing,
    get_port_declares_and_allocates_a_new_service,
    a_project_endpoint_reaches_no_other_projects_secret_by_any_path,
);

const TOOLS: [&str; 15] = [
    "apply_plan",
    "audit_ports",
    "delete_secret",
    "detect_secrets",
    "get_plan",
    "get_port",
    "get_secret",
    "list_ports",
    "list_projects",
    "list_secrets",
    "project_status",
    "remove_service",
    "set_secret",
    "upsert_project",
    "upsert_service",
];

const ALPHA: &str = "# alpha: the project whose token the tests hold\nname: alpha\nport_range: 20000\nservices:\n  - name: api\n    port: 20001\n  - name: web\nchecks: [\"true\"]\n";
const BETA: &str = "name: beta\nport_range: 20100\nservices:\n  - name: db\n    prevent_destroy: true\n  - name: app\nsecrets:\n  required: [project/beta/db_password]\n";
const ALPHA_FILE: &str = "state/projects/alpha.yaml";
const BETA_FILE: &str = "state/projects/beta.yaml";

/// Two projects, applied: alpha = {web 20000, api 20001}, beta = {db 20100, app 20101}, shared redis 9079.
fn fixture(ws: &Workspace) {
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n  shared: { start: 9000, end: 9099 }\nshared_services:\n  - name: redis\n    port: 9079\n",
    );
    ws.write(ALPHA_FILE, ALPHA);
    ws.write(BETA_FILE, BETA);
    ws.ok(&["apply", "--auto-approve"], 0);
}

fn names(v: &Value, list: &str, key: &str) -> Vec<String> {
    let mut out: Vec<String> = v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no `{list}` in {v:#}"))
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// (project, service, port) triples of a list_ports result.
fn ports_of(list_ports: &Value) -> Vec<(String, String, i64)> {
    let mut out: Vec<_> = list_ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["project"].as_str().unwrap().to_string(),
                p["service"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn triple(p: &str, s: &str, port: i64) -> (String, String, i64) {
    (p.into(), s.into(), port)
}

/// Every HTTP status the SDK saw was `code`.
#[track_caller]
fn refused_with(report: &Value, code: u64) {
    assert_eq!(
        report["connected"], false,
        "the client connected: {report:#}"
    );
    assert!(
        report["connect_error"].is_object(),
        "no connect error: {report:#}"
    );
    let statuses = report["http_statuses"].as_array().unwrap();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == code),
        "expected only HTTP {code}: {report:#}"
    );
}

/// A plain JSON-RPC initialize POST, as any client would send first.
async fn plain_initialize(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "plain", "version": "0"}}
        }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("POST")
}

async fn http_tools_resources_and_prompts_on_meta_and_project_endpoints(ws: Workspace) {
    fixture(&ws);
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let beta_text = ws.read(BETA_FILE);

    let modes = [("legacy", "2025-11-25"), ("auto", "2026-07-28")];
    let meta_ops = json!([
        {"op": "list_tools"},
        {"op": "call", "name": "list_projects"},
        {"op": "call", "name": "get_port", "arguments": {"project": "beta", "service": "app"}},
        {"op": "call", "name": "list_ports"},
        {"op": "list_resources"},
        {"op": "read_resource", "uri": "supervisor://projects/beta/state"},
        {"op": "list_prompts"},
        {"op": "get_prompt", "name": "prime", "arguments": {"project": "alpha", "task": "add a health endpoint"}},
        {"op": "call", "name": "get_plan"},
        {"op": "call", "name": "get_port", "arguments": {"service": "app"}},
    ]);
    let alpha_ops = json!([
        {"op": "list_tools"},
        {"op": "call", "name": "list_projects"},
        {"op": "call", "name": "get_port", "arguments": {"service": "web"}},
        {"op": "list_prompts"},
        {"op": "get_prompt", "name": "prime", "arguments": {"task": "add a health endpoint"}},
        {"op": "read_resource", "uri": "supervisor://projects/alpha/state"},
        {"op": "call", "name": "project_status"},
    ]);
    let mut jobs = Vec::new();
    for (mode, _) in modes {
        jobs.push((
            PyClient::http(&server.url("/mcp/meta"))
                .token(&meta)
                .mode(mode),
            meta_ops.clone(),
        ));
        jobs.push((
            PyClient::http(&server.url("/mcp/alpha"))
                .token(&alpha)
                .mode(mode),
            alpha_ops.clone(),
        ));
    }
    let reports = run_all(jobs).await;
    for ((mode, version), pair) in modes.iter().zip(reports.chunks(2)) {
        let report = &pair[0];
        let r = PyClient::expect_connected(report);
        assert_eq!(report["protocol_version"], *version, "{mode}: {report:#}");
        assert_eq!(report["server_info"]["name"], "supervisor");
        assert!(
            report["http_statuses"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s.as_u64().unwrap() < 300),
            "{report:#}"
        );

        // Every tool: a description, an input schema and an output schema (structured output).
        let tools = r[0]["tools"].as_array().unwrap();
        let listed = names(&r[0], "tools", "name");
        for t in TOOLS {
            assert!(listed.contains(&t.to_string()), "{t} missing: {listed:?}");
        }
        for t in tools {
            assert!(
                t["description"].as_str().is_some_and(|d| d.len() > 20),
                "{t:#}"
            );
            assert_eq!(t["input_schema"]["type"], "object", "{t:#}");
            assert_eq!(t["output_schema"]["type"], "object", "{t:#}");
        }

        let projects = tool_ok(&r[1]);
        assert_eq!(names(projects, "projects", "name"), ["alpha", "beta"]);
        assert!(
            projects["revision"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let port = tool_ok(&r[2]);
        assert_eq!(
            (port["port"].as_i64(), &port["allocated_now"]),
            (Some(20101), &json!(false))
        );
        let ports = tool_ok(&r[3]);
        assert_eq!(
            ports_of(ports),
            [
                triple("alpha", "api", 20001),
                triple("alpha", "web", 20000),
                triple("beta", "app", 20101),
                triple("beta", "db", 20100),
            ]
        );
        assert_eq!(
            ports["shared"],
            json!([{"host": "default", "name": "redis", "port": 9079}])
        );

        let uris = names(&r[4], "resources", "uri");
        assert_eq!(
            uris,
            [
                "supervisor://plan",
                "supervisor://projects/alpha/state",
                "supervisor://projects/beta/state"
            ]
        );
        assert_eq!(r[5]["contents"][0]["text"], beta_text.as_str());
        assert_eq!(r[5]["contents"][0]["mime_type"], "application/yaml");
        let piv = ["project", "task", "task_type"];
        assert_eq!(
            r[6]["prompts"],
            json!([
                {"name": "prime", "arguments": piv},
                {"name": "plan", "arguments": piv},
                {"name": "execute", "arguments": piv},
                {"name": "status", "arguments": []},
            ])
        );
        let prime = r[7]["messages"][0]["text"].as_str().unwrap();
        assert!(
            prime.contains("Project `alpha`")
                && prime.contains("20001")
                && prime.contains("`true`"),
            "{prime}"
        );
        let plan = tool_ok(&r[8]);
        assert_eq!(plan["plan"]["changes"], json!([]), "{plan:#}");
        // The meta endpoint needs a project named.
        assert!(tool_err(&r[9]).contains("name the project"), "{:#}", r[9]);

        // The project endpoint with the project's token: the project is implied.
        let report = &pair[1];
        let r = PyClient::expect_connected(report);
        assert_eq!(report["protocol_version"], *version);
        for t in TOOLS {
            assert!(
                names(&r[0], "tools", "name").contains(&t.to_string()),
                "{t}"
            );
        }
        assert_eq!(names(tool_ok(&r[1]), "projects", "name"), ["alpha"]);
        assert_eq!(tool_ok(&r[2])["port"], 20000);
        let piv = ["task", "task_type"];
        assert_eq!(
            r[3]["prompts"],
            json!([
                {"name": "prime", "arguments": piv},
                {"name": "plan", "arguments": piv},
                {"name": "execute", "arguments": piv},
            ])
        );
        assert!(
            r[4]["messages"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Project `alpha`")
        );
        assert_eq!(r[5]["contents"][0]["text"], ALPHA);
        let status = tool_ok(&r[6]);
        assert!(
            status["revision"].as_str().unwrap().starts_with("sha256:"),
            "{status:#}"
        );
    }
    drop(server);
}

async fn stdio_serves_the_same_tools_confined_to_its_project(ws: Workspace) {
    fixture(&ws);
    let revision = {
        let s: Value = serde_json::from_str(&ws.ok(&["status", "--json"], 0)).unwrap();
        s["desired_revision"].as_str().unwrap().to_string()
    };
    let reads = json!([
        {"op": "list_tools"},
        {"op": "call", "name": "list_projects"},
        {"op": "call", "name": "get_port", "arguments": {"service": "api"}},
        {"op": "call", "name": "get_port", "arguments": {"project": "beta", "service": "app"}},
        {"op": "read_resource", "uri": "supervisor://projects/beta/state"},
        {"op": "call", "name": "list_ports"},
    ]);
    let alpha = PyClient::stdio(&ws, &["mcp", "--project", "alpha"]);
    let reports = run_all(vec![
        (alpha.clone().mode("legacy"), reads.clone()),
        (alpha.clone().mode("auto"), reads),
        // An edit over stdio writes the file as over HTTP.
        (
            alpha,
            json!([{"op": "call", "name": "upsert_service",
                    "arguments": {"service": {"name": "docs"}, "revision": revision}}]),
        ),
        // The meta endpoint over stdio sees every project.
        (
            PyClient::stdio(&ws, &["mcp", "--meta"]),
            json!([{"op": "call", "name": "list_projects"}]),
        ),
    ])
    .await;
    for (mode, report) in ["legacy", "auto"].iter().zip(&reports) {
        let r = PyClient::expect_connected(report);
        assert_eq!(
            report["protocol_version"],
            if *mode == "legacy" {
                "2025-11-25"
            } else {
                "2026-07-28"
            }
        );
        let listed = names(&r[0], "tools", "name");
        for t in TOOLS {
            assert!(listed.contains(&t.to_string()), "{mode}: {t} missing");
        }
        assert_eq!(names(tool_ok(&r[1]), "projects", "name"), ["alpha"]);
        assert_eq!(tool_ok(&r[2])["port"], 20001);
        assert!(
            tool_err(&r[3]).contains("project `alpha` only"),
            "{:#}",
            r[3]
        );
        op_err(&r[4]);
        assert_eq!(
            ports_of(tool_ok(&r[5])),
            [triple("alpha", "api", 20001), triple("alpha", "web", 20000)]
        );
    }
    let edit = tool_ok(&PyClient::expect_connected(&reports[2])[0]);
    assert_eq!(edit["changed"], true);
    assert!(ws.read(ALPHA_FILE).contains("- name: docs"));
    assert!(
        edit["plan"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["address"] == "ports/alpha/docs" && c["action"] == "create"),
        "{edit:#}"
    );
    let r = PyClient::expect_connected(&reports[3]);
    assert_eq!(names(tool_ok(&r[0]), "projects", "name"), ["alpha", "beta"]);

    // An unknown project is refused at start.
    let out = ws.run(&["mcp", "--project", "gamma"]);
    support::expect_code(&out, 1);
    assert!(
        support::stderr(&out).contains("there is no project `gamma`"),
        "{}",
        support::stderr(&out)
    );
}

async fn requests_without_a_valid_token_are_refused_with_401(ws: Workspace) {
    fixture(&ws);
    // This test fails authentication many times on purpose, from one address: lift the throttle that
    // would answer 429 after ten failures (tests/serve_limits.rs tests the throttle itself).
    ws.write("supervisor.toml", "[serve]\nauth_failures_burst = 1000\n");
    let server = Server::start(&ws, &[]).await;

    // The SDK: no token, a made-up token, in both negotiation modes.
    let forged = format!("svt_{}", "A".repeat(43));
    let ops = json!([{"op": "call", "name": "list_projects"}]);
    let mut jobs = Vec::new();
    for mode in ["legacy", "auto"] {
        jobs.push((
            PyClient::http(&server.url("/mcp/meta")).mode(mode),
            ops.clone(),
        ));
        jobs.push((
            PyClient::http(&server.url("/mcp/alpha"))
                .token(&forged)
                .mode(mode),
            ops.clone(),
        ));
    }
    for report in run_all(jobs).await {
        refused_with(&report, 401);
    }

    // Plain requests: the status, the challenge, a message saying what to do.
    for path in ["/mcp/meta", "/mcp/alpha", "/mcp/nonexistent"] {
        let r = plain_initialize(&server.url(path), None).await;
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("supervisor token create"),
            "{body}"
        );
        for bad in ["not-a-token", "svt_", "svt_short"] {
            assert_eq!(
                plain_initialize(&server.url(path), Some(bad))
                    .await
                    .status(),
                401
            );
        }
        let basic = http()
            .post(server.url(path))
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 401);
    }
    // Health and metrics stay open (for probes), and say nothing about tokens.
    assert_eq!(
        http()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("unauthorized"), "{metrics}");
    assert!(!metrics.contains("svt_"), "{metrics}");
}

async fn a_revoked_token_stops_working_even_inside_an_open_session(ws: Workspace) {
    fixture(&ws);
    let (alpha, alpha_id) = create_token(&ws, Some("alpha"));
    let (meta, _) = create_token(&ws, None);
    let (never_used, never_used_id) = create_token(&ws, Some("alpha"));
    ws.ok(&["token", "revoke", &never_used_id], 0);
    let server = Server::start(&ws, &[]).await;
    let url = server.url("/mcp/alpha");

    // Revoked before its first use: refused at once. A live token works.
    let reports = run_all(vec![
        (
            PyClient::http(&url).token(&never_used),
            json!([{"op": "ping"}]),
        ),
        (
            PyClient::http(&url).token(&alpha),
            json!([{"op": "call", "name": "list_projects"}]),
        ),
    ])
    .await;
    refused_with(&reports[0], 401);
    tool_ok(&PyClient::expect_connected(&reports[1])[0]);
    // A session (legacy protocol) opened over plain HTTP before the revocation.
    let init = plain_initialize(&url, Some(&alpha)).await;
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let list = |token: String| {
        let (url, session) = (url.clone(), session.clone());
        async move {
            http()
                .post(&url)
                .bearer_auth(token)
                .header("Accept", "application/json, text/event-stream")
                .header("Mcp-Session-Id", session)
                .header("Mcp-Protocol-Version", "2025-11-25")
                .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(list(alpha.clone()).await, 200);

    ws.ok(&["token", "revoke", &alpha_id], 0);
    // Verified tokens are cached for 2 s: refusal follows within that.
    let revoked_at = Instant::now();
    loop {
        let sent_after = revoked_at.elapsed();
        let status = list(alpha.clone()).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            sent_after < Duration::from_secs(3),
            "a revoked token still worked {sent_after:?} after its revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new connection with it is refused; revocation is per token: the meta token still works.
    let reports = run_all(vec![
        (PyClient::http(&url).token(&alpha), json!([{"op": "ping"}])),
        (
            PyClient::http(&url).token(&meta),
            json!([{"op": "call", "name": "list_projects"}]),
        ),
    ])
    .await;
    refused_with(&reports[0], 401);
    tool_ok(&PyClient::expect_connected(&reports[1])[0]);
}

async fn a_project_token_is_refused_on_other_endpoints_with_403(ws: Workspace) {
    fixture(&ws);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;

    let jobs = ["/mcp/beta", "/mcp/meta"]
        .iter()
        .map(|path| {
            (
                PyClient::http(&server.url(path)).token(&alpha),
                json!([{"op": "call", "name": "list_projects"}]),
            )
        })
        .collect();
    for report in run_all(jobs).await {
        refused_with(&report, 403);
    }
    for path in ["/mcp/beta", "/mcp/meta"] {
        let r = plain_initialize(&server.url(path), Some(&alpha)).await;
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("/mcp/alpha"),
            "{body}"
        );
    }
    // Another project's name in any shape is not alpha's endpoint.
    for path in ["/mcp/nonexistent", "/mcp/ALPHA", "/mcp/alpha%2F..%2Fbeta"] {
        assert_eq!(
            plain_initialize(&server.url(path), Some(&alpha))
                .await
                .status(),
            403,
            "{path}"
        );
    }
    // An unknown project with a token that could use it: 404.
    let r = plain_initialize(&server.url("/mcp/nonexistent"), Some(&meta)).await;
    assert_eq!(r.status(), 404);
    // The meta token works everywhere.
    for path in ["/mcp/alpha", "/mcp/beta", "/mcp/meta"] {
        assert_eq!(
            plain_initialize(&server.url(path), Some(&meta))
                .await
                .status(),
            200,
            "{path}"
        );
    }
}

async fn a_project_endpoint_sees_and_edits_only_its_own_project(ws: Workspace) {
    fixture(&ws);
    // beta gets a pending change, so beta shows up in any plan that is not confined to alpha.
    let beta_pending = BETA.replace("  - name: app\n", "  - name: app\n  - name: worker\n");
    ws.write(BETA_FILE, &beta_pending);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let revision = server.revision().await;
    let beta_before = ws.read(BETA_FILE);
    let alpha_before = ws.read(ALPHA_FILE);

    let project_b = json!({"name": "beta", "port_range": 20100, "services": [{"name": "evil"}]});
    let report = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([
            {"op": "call", "name": "list_projects"},
            {"op": "call", "name": "get_port", "arguments": {"project": "beta", "service": "app"}},
            {"op": "call", "name": "get_port", "arguments": {"project": "alpha/../beta", "service": "app"}},
            {"op": "call", "name": "list_ports"},
            {"op": "call", "name": "list_ports", "arguments": {"project": "beta"}},
            {"op": "call", "name": "upsert_service",
             "arguments": {"project": "beta", "service": {"name": "evil"}, "revision": revision}},
            {"op": "call", "name": "remove_service",
             "arguments": {"project": "beta", "service": "app", "revision": revision}},
            {"op": "call", "name": "upsert_project", "arguments": {"project": project_b, "revision": revision}},
            {"op": "read_resource", "uri": "supervisor://projects/beta/state"},
            {"op": "read_resource", "uri": "supervisor://projects/alpha/../beta/state"},
            {"op": "list_resources"},
            {"op": "call", "name": "get_plan", "arguments": {"project": "beta"}},
            {"op": "call", "name": "project_status", "arguments": {"project": "beta"}},
            {"op": "call", "name": "apply_plan", "arguments": {"project": "beta"}},
            {"op": "get_prompt", "name": "prime", "arguments": {"project": "beta", "task": "x"}},
            {"op": "call", "name": "get_plan"},
            {"op": "read_resource", "uri": "supervisor://plan"},
            {"op": "call", "name": "audit_ports"},
            {"op": "call", "name": "apply_plan"},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    assert_eq!(names(tool_ok(&r[0]), "projects", "name"), ["alpha"]);
    for i in [1, 2, 4, 5, 6, 7, 11, 12, 13] {
        let msg = tool_err(&r[i]);
        assert!(msg.contains("serves project `alpha` only"), "op {i}: {msg}");
    }
    let ports = tool_ok(&r[3]);
    assert_eq!(
        ports_of(ports),
        [triple("alpha", "api", 20001), triple("alpha", "web", 20000)]
    );
    assert_eq!(
        ports["blocks"],
        json!([{"host": "default", "project": "alpha", "start_port": 20000, "end_port": 20099}])
    );
    for i in [8, 9, 14] {
        op_err(&r[i]);
    }
    assert_eq!(
        names(&r[10], "resources", "uri"),
        ["supervisor://plan", "supervisor://projects/alpha/state"]
    );
    // alpha's plan, as a tool and as a resource: nothing of beta's pending change.
    let plan = tool_ok(&r[15]);
    assert_eq!(plan["plan"]["changes"], json!([]), "{plan:#}");
    let plan_resource = r[16]["contents"][0]["text"].as_str().unwrap();
    assert!(!plan_resource.contains("beta"), "{plan_resource}");
    let audit = serde_json::to_string(tool_ok(&r[17])).unwrap();
    assert!(
        !audit.contains("beta") && !audit.contains("20100"),
        "{audit}"
    );
    // apply_plan on alpha's endpoint applies alpha's (empty) plan, never beta's.
    assert_eq!(tool_ok(&r[18])["applied"], false);

    assert_eq!(ws.read(BETA_FILE), beta_before);
    assert_eq!(ws.read(ALPHA_FILE), alpha_before);
    let ports: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    assert!(
        !ports["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["service"] == "worker" || p["service"] == "evil"),
        "{ports:#}"
    );
    // The pending change of beta is still pending: nothing on alpha's endpoint applied it.
    ws.ok(&["plan", "--detailed-exitcode", "--project", "beta"], 2);
}

async fn a_stale_revision_is_refused_and_changes_nothing(ws: Workspace) {
    fixture(&ws);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let url = server.url("/mcp/alpha");
    let r0 = server.revision().await;

    let upsert = |name: &str, revision: &str| {
        json!({"op": "call", "name": "upsert_service",
               "arguments": {"service": {"name": name}, "revision": revision}})
    };
    // One edit with r0 succeeds; a second with the same (now stale) r0 is refused.
    let report = PyClient::http(&url)
        .token(&alpha)
        .run(json!([upsert("cache", &r0), upsert("queue", &r0)]))
        .await;
    let r = PyClient::expect_connected(&report);
    let first = tool_ok(&r[0]);
    let r1 = first["revision"].as_str().unwrap().to_string();
    assert_ne!(r1, r0);
    let after_first = ws.read(ALPHA_FILE);
    assert!(after_first.contains("- name: cache"), "{after_first}");
    assert!(
        after_first.starts_with("# alpha: the project whose token the tests hold"),
        "comments are kept: {after_first}"
    );
    let msg = tool_err(&r[1]);
    assert!(
        msg.contains(&format!("changed since revision {r0}")) && msg.contains(&r1),
        "{msg}"
    );
    assert_eq!(ws.read(ALPHA_FILE), after_first);

    // Someone edits state/ behind the server's back: the revision the agent holds is stale too.
    ws.write(BETA_FILE, &format!("{BETA}checks: [\"make test\"]\n"));
    let report = PyClient::http(&url)
        .token(&alpha)
        .run(json!([
            upsert("queue", &r1),
            {"op": "call", "name": "remove_service", "arguments": {"service": "cache", "revision": r1}},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    for (i, result) in r.iter().enumerate() {
        let msg = tool_err(result);
        assert!(
            msg.contains("read it again and redo the edit"),
            "{i}: {msg}"
        );
    }
    assert_eq!(ws.read(ALPHA_FILE), after_first);
}

async fn get_port_declares_and_allocates_a_new_service(ws: Workspace) {
    fixture(&ws);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let report = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([
            {"op": "call", "name": "get_port", "arguments": {"service": "ghost", "allocate": false}},
            {"op": "call", "name": "get_port", "arguments": {"service": "worker"}},
            {"op": "call", "name": "get_port", "arguments": {"service": "worker"}},
            {"op": "call", "name": "list_ports"},
        ]))
        .await;
    let r = PyClient::expect_connected(&report);
    assert!(
        tool_err(&r[0]).contains("has no service `ghost`"),
        "{:#}",
        r[0]
    );
    let first = tool_ok(&r[1]);
    assert_eq!(
        first,
        &json!({"project": "alpha", "service": "worker", "port": 20002,
                "hostname": null, "allocated_now": true})
    );
    let second = tool_ok(&r[2]);
    assert_eq!(
        (&second["port"], &second["allocated_now"]),
        (&json!(20002), &json!(false))
    );
    assert!(ports_of(tool_ok(&r[3])).contains(&triple("alpha", "worker", 20002)));

    // The state file gained the service (comments kept), the registry holds the port, and a plan from
    // the command line agrees: nothing to do.
    let text = ws.read(ALPHA_FILE);
    assert!(text.contains("- name: worker"), "{text}");
    assert!(!text.contains("ghost"), "{text}");
    assert!(text.starts_with("# alpha:"), "{text}");
    let ports: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    assert!(
        ports["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"project": "alpha", "service": "worker", "port": 20002})),
        "{ports:#}"
    );
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

/// Secrets of every scope, set with the CLI: (path, value). Values are distinct and searchable.
const SECRETS: [(&str, &str); 6] = [
    ("project/alpha/api_key", "alpha-api-key-value-1f3e"),
    ("service/alpha/api/token", "alpha-service-token-9c2d"),
    ("project/beta/db_password", "BETA-DB-PASSWORD-7a1b"),
    ("project/beta/x", "BETA-X-VALUE-55e0"),
    ("service/beta/db/password", "BETA-SERVICE-PASSWORD-0d4c"),
    ("meta/cloudflare/api_token", "META-CLOUDFLARE-TOKEN-e8f1"),
];

/// An encryption key for the workspace (via supervisor.toml, which the CLI and serve both read), and
/// the secrets above.
fn with_secrets(ws: &Workspace) {
    let key = ws.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ws.write(
        "supervisor.toml",
        &format!("secrets_key_file = \"{}\"\n", key.display()),
    );
    for (path, value) in SECRETS {
        let file = ws.path().join("value.txt");
        std::fs::write(&file, value).unwrap();
        ws.ok(
            &[
                "secrets",
                "set",
                path,
                "--value-file",
                file.to_str().unwrap(),
            ],
            0,
        );
    }
    std::fs::remove_file(ws.path().join("value.txt")).unwrap();
}

/// A refusal to reach a secret: the scope check, the path grammar or the project check said no.
#[track_caller]
fn refused_secret(what: &str, result: &Value) {
    let msg = tool_err(result);
    assert!(
        msg.contains("is not visible from this endpoint")
            || msg.starts_with("invalid secret path")
            || msg.contains("serves project `alpha` only"),
        "{what:?}: {msg}"
    );
}

fn secret_value(ws: &Workspace, path: &str) -> Option<String> {
    let out = ws.run(&["secrets", "get", path]);
    out.status
        .success()
        .then(|| support::stdout(&out).trim_end().to_string())
}

async fn a_project_endpoint_reaches_no_other_projects_secret_by_any_path(ws: Workspace) {
    fixture(&ws);
    with_secrets(&ws);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;

    // Every way of spelling a path outside alpha: another project, traversal (plain and
    // percent-encoded), encoded separators, meta and other projects' services, odd case and slashes.
    let tricks = [
        "project/beta/db_password",
        "project/alpha/../beta/db_password",
        "project/alpha/%2e%2e/beta/db_password",
        "project/alpha/%2E%2E/beta/db_password",
        "project%2Fbeta%2Fdb_password",
        "project/alpha%2F..%2Fbeta/db_password",
        "project/alpha/../../meta/cloudflare/api_token",
        "project/alpha/db_password/../../beta/db_password",
        "project/./beta/db_password",
        "project//beta/db_password",
        "/project/beta/db_password",
        "./project/beta/db_password",
        "project/beta/db_password/",
        " project/beta/db_password",
        "project/beta/db_password\u{0}",
        "PROJECT/beta/db_password",
        "project/BETA/db_password",
        "project\\beta\\db_password",
        "project/alpha\\..\\beta/db_password",
        "meta/cloudflare/api_token",
        "meta/../project/beta/db_password",
        "service/beta/db/password",
        "service/alpha/../beta/db/password",
        "service/alpha/api/../../beta/db/password",
        "project/*",
        "project/beta/*",
        "project/%",
        "",
        "project/beta/no_such_secret",
    ];
    let mut reads: Vec<Value> = vec![
        json!({"op": "call", "name": "get_secret", "arguments": {"path": "project/alpha/api_key"}}),
        json!({"op": "call", "name": "get_secret", "arguments": {"path": "service/alpha/api/token"}}),
    ];
    for t in tricks {
        reads.push(json!({"op": "call", "name": "get_secret", "arguments": {"path": t}}));
    }
    let writes = json!([
        {"op": "call", "name": "list_secrets"},
        {"op": "call", "name": "list_secrets", "arguments": {"project": "beta"}},
        {"op": "call", "name": "list_secrets", "arguments": {"scope": "meta"}},
        {"op": "call", "name": "list_secrets", "arguments": {"scope": "service"}},
        {"op": "call", "name": "list_secrets", "arguments": {"scope": "project", "project": "alpha/../beta"}},
        {"op": "call", "name": "set_secret", "arguments": {"path": "project/beta/x", "value": "overwritten"}},
        {"op": "call", "name": "set_secret", "arguments": {"path": "project/alpha/../beta/x", "value": "overwritten"}},
        {"op": "call", "name": "set_secret", "arguments": {"path": "meta/cloudflare/api_token", "value": "overwritten"}},
        {"op": "call", "name": "set_secret", "arguments": {"path": "service/beta/new/secret", "value": "planted"}},
        {"op": "call", "name": "delete_secret", "arguments": {"path": "project/beta/db_password"}},
        {"op": "call", "name": "delete_secret", "arguments": {"path": "project/alpha/%2e%2e/beta/db_password"}},
        {"op": "call", "name": "delete_secret", "arguments": {"path": "service/beta/db/password"}},
        {"op": "call", "name": "detect_secrets",
         "arguments": {"text": "STRIPE_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "project": "beta", "store": true}},
        {"op": "call", "name": "set_secret", "arguments": {"path": "project/alpha/new_key", "value": "alpha-new-value"}},
        {"op": "call", "name": "get_secret", "arguments": {"path": "project/alpha/new_key"}},
    ]);
    let reports = run_all(vec![
        (
            PyClient::http(&server.url("/mcp/alpha")).token(&alpha),
            Value::Array(reads.clone()),
        ),
        (
            PyClient::http(&server.url("/mcp/alpha")).token(&alpha),
            writes,
        ),
        // The endpoint confines, whatever the token: a meta token on alpha's endpoint is alpha too.
        (
            PyClient::http(&server.url("/mcp/alpha")).token(&meta),
            Value::Array(reads.clone()),
        ),
        // The same over stdio.
        (
            PyClient::stdio(&ws, &["mcp", "--project", "alpha"]),
            Value::Array(reads),
        ),
        // On the meta endpoint beta's secret is there: the refusals above are not for want of it.
        (
            PyClient::http(&server.url("/mcp/meta")).token(&meta),
            json!([{"op": "call", "name": "get_secret", "arguments": {"path": "project/beta/db_password"}}]),
        ),
    ])
    .await;

    let alpha_reports = [&reports[0], &reports[1], &reports[2], &reports[3]];
    for report in alpha_reports {
        // Nothing of another scope's values appears anywhere in what alpha's endpoint answered.
        let text = report.to_string();
        for (path, value) in SECRETS {
            if !path.starts_with("project/alpha/") && !path.starts_with("service/alpha/") {
                assert!(!text.contains(value), "{path}'s value leaked: {report:#}");
            }
        }
    }
    for report in [&reports[0], &reports[2], &reports[3]] {
        let r = PyClient::expect_connected(report);
        assert_eq!(tool_ok(&r[0])["value"], "alpha-api-key-value-1f3e");
        assert_eq!(tool_ok(&r[1])["value"], "alpha-service-token-9c2d");
        for (t, result) in tricks.iter().zip(&r[2..]) {
            refused_secret(t, result);
        }
    }

    // No existence oracle: a missing secret of beta is refused exactly like an existing one.
    let r = PyClient::expect_connected(&reports[0]);
    let last = r.len() - 1;
    assert_eq!(
        tool_err(&r[last]).replace("no_such_secret", "db_password"),
        tool_err(&r[2])
    );

    let r = PyClient::expect_connected(&reports[1]);
    let listed: Vec<&str> = tool_ok(&r[0])["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        listed_sorted,
        ["project/alpha/api_key", "service/alpha/api/token"]
    );
    assert!(
        tool_err(&r[1]).contains("serves project `alpha` only"),
        "{:#}",
        r[1]
    );
    // Other scopes filter within alpha: meta secrets are never listed here.
    let meta_scope = tool_ok(&r[2]);
    assert_eq!(meta_scope["secrets"], json!([]), "{meta_scope:#}");
    let service_scope = tool_ok(&r[3]);
    assert_eq!(
        service_scope["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["service/alpha/api/token"]
    );
    tool_err(&r[4]);
    for result in &r[5..13] {
        refused_secret("write", result);
    }
    tool_ok(&r[13]);
    assert_eq!(tool_ok(&r[14])["value"], "alpha-new-value");

    // beta's, meta's and the services' secrets are as they were; nothing was planted or deleted.
    for (path, value) in SECRETS {
        assert_eq!(
            secret_value(&ws, path).as_deref(),
            Some(value),
            "{path} changed"
        );
    }
    for planted in ["service/beta/new/secret", "project/beta/stripe_key"] {
        assert_eq!(secret_value(&ws, planted), None, "{planted} was written");
    }
    let all: Value = serde_json::from_str(&ws.ok(&["secrets", "list", "--json"], 0)).unwrap();
    let paths: Vec<&str> = all["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .filter(|p| p.contains("beta") || p.starts_with("meta/"))
        .collect();
    assert_eq!(
        paths.len(),
        4,
        "only the four secrets set for beta and meta: {all:#}"
    );

    let r = PyClient::expect_connected(&reports[4]);
    assert_eq!(tool_ok(&r[0])["value"], "BETA-DB-PASSWORD-7a1b");
}
