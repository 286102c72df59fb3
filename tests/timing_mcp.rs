//! The timing tools through a real MCP client (the official Python SDK) against `supervisor serve` and
//! `supervisor mcp`, on SQLite and on PostgreSQL: project scoping on the meta and project endpoints,
//! 30 concurrent clients completing tasks (each exactly once), and timers that survive a restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{PyClient, Server, create_token, run_all, run_parallel, tool_err, tool_ok};

cli_conformance!(
    timing_tools_on_meta_and_project_endpoints_are_scoped,
    thirty_concurrent_clients_complete_each_task_exactly_once,
    timers_survive_a_restart_and_show_in_health,
);

const TIMING_TOOLS: [&str; 7] = [
    "complete_parallel_group",
    "complete_task_timer",
    "estimate_task",
    "list_task_timers",
    "start_parallel_group",
    "start_task_timer",
    "task_stats",
];

fn fixture(ws: &Workspace) {
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n",
    );
    ws.write("state/projects/alpha.yaml", "name: alpha\n");
    ws.write("state/projects/beta.yaml", "name: beta\n");
    let mut history = String::new();
    for i in 0..8 {
        for (project, secs) in [("alpha", 600 + i * 60), ("beta", 6000 + i * 60)] {
            history.push_str(
                &json!({
                    "task_id": format!("{project}-h{i}"),
                    "description": format!("{project} payment form bug number {i}"),
                    "task_type": "bugfix",
                    "project": project,
                    "duration_seconds": secs,
                })
                .to_string(),
            );
            history.push('\n');
        }
    }
    ws.write("history.jsonl", &history);
    ws.ok(&["timing", "import", "history.jsonl"], 0);
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"op": "call", "name": name, "arguments": arguments})
}

fn ids(list: &Value, key: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {list:#}"))
        .iter()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn timing_tools_on_meta_and_project_endpoints_are_scoped(ws: Workspace) {
    fixture(&ws);
    // A beta task running, started from the command line.
    ws.ok(
        &[
            "timing",
            "start",
            "-d",
            "beta refund",
            "--type",
            "bugfix",
            "--project",
            "beta",
            "--task-id",
            "b-1",
        ],
        0,
    );
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;

    let alpha_ops = json!([
        {"op": "list_tools"},
        call("start_task_timer", json!({"task_id": "a-1", "description": "Fix the payment form", "task_type": "bugfix", "estimated_seconds": 600, "agent_type": "claude-code", "agent_model": "opus", "complexity": "medium"})),
        call("estimate_task", json!({"description": "the payment form crashes", "task_type": "bugfix"})),
        call("task_stats", json!({})),
        call("start_task_timer", json!({"description": "x", "task_type": "bugfix", "project": "beta"})),
        call("complete_task_timer", json!({"task_id": "b-1"})),
        call("list_task_timers", json!({"running": true})),
        call("complete_task_timer", json!({"task_id": "a-1", "duration_seconds": 900, "lines_changed": 10, "tests_written": 2})),
        call("complete_task_timer", json!({"task_id": "a-1"})),
        call("start_parallel_group", json!({"group_id": "g", "description": "two fixes at once", "child_task_ids": ["p1", "p2"]})),
        call("start_task_timer", json!({"task_id": "p1", "description": "fix one", "task_type": "bugfix", "parallel_group": "g"})),
        call("start_task_timer", json!({"task_id": "p2", "description": "fix two", "task_type": "bugfix", "parallel_group": "g"})),
        call("complete_task_timer", json!({"task_id": "p2", "duration_seconds": 100})),
        call("complete_task_timer", json!({"task_id": "p1", "duration_seconds": 200})),
        call("complete_parallel_group", json!({"group_id": "g"})),
        call("task_stats", json!({"project": "beta"})),
        call("complete_task_timer", json!({"task_id": "a-2", "duration_seconds": -3})),
    ]);
    let meta_ops = json!([
        {"op": "list_tools"},
        call("estimate_task", json!({"description": "payment", "task_type": "bugfix"})),
        call("task_stats", json!({})),
        call("complete_task_timer", json!({"task_id": "b-1", "success": false, "error_message": "gave up"})),
        call("estimate_task", json!({"description": "payment form", "task_type": "bugfix", "project": "beta", "agent_estimate_seconds": 3000})),
        call("list_task_timers", json!({})),
    ]);
    let reports = run_all(vec![
        (PyClient::http(&server.url("/mcp/alpha")).token(&alpha).mode("legacy"), alpha_ops),
        (PyClient::http(&server.url("/mcp/meta")).token(&meta).mode("auto"), meta_ops),
        (
            PyClient::stdio(&ws, &["mcp", "--project", "alpha"]),
            json!([{"op": "list_tools"}, call("estimate_task", json!({"description": "payment form", "task_type": "bugfix"}))]),
        ),
    ])
    .await;

    // The project endpoint.
    let r = PyClient::expect_connected(&reports[0]);
    let tools = r[0]["tools"].as_array().unwrap();
    for name in TIMING_TOOLS {
        let t = tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t["output_schema"]["type"], "object", "{t:#}");
        assert!(!t.to_string().contains("\"format\":\"int64\""), "{t:#}");
    }
    let started = tool_ok(&r[1]);
    assert_eq!(
        (started["task_id"].as_str(), started["project"].as_str()),
        (Some("a-1"), Some("alpha"))
    );
    let estimate = tool_ok(&r[2]);
    assert_eq!(estimate["method"], "similar+type_project");
    assert_eq!(estimate["sample_size"], 8);
    let similar = ids(estimate, "similar_tasks", "task_id");
    assert!(
        !similar.is_empty() && similar.iter().all(|t| t.starts_with("alpha-")),
        "{similar:?}"
    );
    let e = estimate["estimated_seconds"].as_f64().unwrap();
    assert!((600.0..1100.0).contains(&e), "{estimate:#}");
    let stats = tool_ok(&r[3])["stats"].as_array().unwrap().clone();
    assert_eq!(stats.len(), 1, "only alpha's row: {stats:#?}");
    assert_eq!(
        (stats[0]["project"].as_str(), stats[0]["count"].as_i64()),
        (Some("alpha"), Some(8))
    );
    assert!(
        tool_err(&r[4]).contains("serves project `alpha` only"),
        "{:#}",
        r[4]
    );
    assert_eq!(tool_err(&r[5]), "there is no task `b-1` in project `alpha`");
    assert_eq!(ids(tool_ok(&r[6]), "timers", "task_id"), ["a-1"]);
    let done = tool_ok(&r[7]);
    assert_eq!(done["duration_seconds"], 900.0);
    assert_eq!(
        (
            done["estimate_source"].as_str(),
            done["estimation_error"].as_f64()
        ),
        (Some("caller"), Some(0.5))
    );
    assert!(
        tool_err(&r[8]).starts_with("task `a-1` is already completed"),
        "{:#}",
        r[8]
    );
    assert_eq!(tool_ok(&r[9])["agent_count"], 2);
    for completed in &r[10..14] {
        tool_ok(completed);
    }
    let group = tool_ok(&r[14]);
    let order: Vec<&str> = group["completion_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["p2", "p1"]);
    assert_eq!(group["sequential_estimate_seconds"], 300.0);
    let parallel = group["parallel_seconds"].as_f64().unwrap();
    assert!(
        (group["efficiency"].as_f64().unwrap() - 150.0 / parallel).abs()
            < 1e-6 * (150.0 / parallel)
    );
    assert!(tool_err(&r[15]).contains("serves project `alpha` only"));
    assert!(
        tool_err(&r[16]).contains("invalid duration_seconds: -3"),
        "{:#}",
        r[16]
    );

    // The meta endpoint.
    let r = PyClient::expect_connected(&reports[1]);
    assert_eq!(reports[1]["protocol_version"], "2026-07-28");
    let listed: Vec<&str> = r[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        TIMING_TOOLS.iter().all(|t| listed.contains(t)),
        "{listed:?}"
    );
    assert!(
        tool_err(&r[1]).contains("invalid project: name the project"),
        "{:#}",
        r[1]
    );
    let rows: Vec<(String, String)> = tool_ok(&r[2])["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["task_type"].as_str().unwrap().to_string(),
                s["project"].as_str().unwrap_or("(all)").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("bugfix".into(), "(all)".into()),
            ("bugfix".into(), "alpha".into()),
            ("bugfix".into(), "beta".into())
        ]
    );
    let failed = tool_ok(&r[3]);
    assert_eq!(failed["status"], "failed");
    let beta = tool_ok(&r[4]);
    assert!(
        ids(beta, "similar_tasks", "task_id")
            .iter()
            .all(|t| t.starts_with("beta-"))
    );
    // beta has no history of own estimates; bugfix tasks across projects have one (a-1: 900 s against
    // 600 s estimated), so the calibration falls back to the type level.
    let c = &beta["calibration"];
    assert_eq!(
        (c["level"].as_str(), c["sample_size"].as_i64()),
        (Some("type"), Some(1)),
        "{beta:#}"
    );
    assert!((c["bias_factor"].as_f64().unwrap() - 1.5).abs() < 1e-9);
    assert!(
        beta["estimated_seconds"].as_f64().unwrap() > 5000.0,
        "{beta:#}"
    );
    let all = ids(tool_ok(&r[5]), "timers", "task_id");
    assert!(
        all.contains(&"a-1".to_string()) && all.contains(&"b-1".to_string()),
        "{all:?}"
    );

    // stdio, confined to its project.
    let r = PyClient::expect_connected(&reports[2]);
    let listed: Vec<&str> = r[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        TIMING_TOOLS.iter().all(|t| listed.contains(t)),
        "{listed:?}"
    );
    let similar = ids(tool_ok(&r[1]), "similar_tasks", "task_id");
    assert!(
        !similar.is_empty()
            && similar
                .iter()
                .all(|t| t.starts_with("alpha-") || t.starts_with("a-")),
        "{similar:?}"
    );
}

async fn thirty_concurrent_clients_complete_each_task_exactly_once(ws: Workspace) {
    fixture(&ws);
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let n = 30;
    let starts: Vec<Value> = (0..n)
        .map(|i| call("start_task_timer", json!({"task_id": format!("c-{i}"), "description": format!("concurrent task {i}"), "task_type": "feature", "estimated_seconds": 60})))
        .collect();
    let r = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(Value::Array(starts))
        .await;
    for x in PyClient::expect_connected(&r) {
        tool_ok(x);
    }
    // 30 clients at once, each completing its own task and its neighbour's: every task is completed
    // twice concurrently, and exactly one of the two wins.
    let jobs: Vec<(PyClient, Value)> = (0..n)
        .map(|i| {
            let client = if i % 2 == 0 {
                PyClient::http(&server.url("/mcp/alpha"))
                    .token(&alpha)
                    .mode("legacy")
            } else {
                PyClient::http(&server.url("/mcp/meta"))
                    .token(&meta)
                    .mode("auto")
            };
            let ops = json!([
                call(
                    "complete_task_timer",
                    json!({"task_id": format!("c-{i}"), "duration_seconds": 100 + i})
                ),
                call(
                    "complete_task_timer",
                    json!({"task_id": format!("c-{}", (i + 1) % n), "duration_seconds": 100 + i})
                ),
            ]);
            (client, ops)
        })
        .collect();
    let started = Instant::now();
    let reports = run_parallel(jobs).await;
    let elapsed = started.elapsed();
    let (mut ok, mut already) = (0, 0);
    for report in &reports {
        for result in PyClient::expect_connected(report) {
            if result["is_error"] == false {
                ok += 1;
            } else {
                let e = tool_err(result);
                assert!(e.contains("is already completed"), "{e}");
                already += 1;
            }
        }
    }
    assert_eq!((ok, already), (n, n), "in {elapsed:?}");
    let stats: Value = serde_json::from_str(&ws.ok(
        &[
            "timing",
            "stats",
            "--type",
            "feature",
            "--project",
            "alpha",
            "--json",
        ],
        0,
    ))
    .unwrap();
    assert_eq!(stats["stats"][0]["count"], n);
    assert_eq!(stats["stats"][0]["own_estimates"], n);
    let list: Value =
        serde_json::from_str(&ws.ok(&["timing", "list", "--running", "--json"], 0)).unwrap();
    assert_eq!(list["timers"], json!([]));
}

async fn timers_survive_a_restart_and_show_in_health(ws: Workspace) {
    fixture(&ws);
    ws.write("supervisor.toml", "[timing]\nabandoned_after_secs = 3600\n");
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let mut server = Server::start(&ws, &[]).await;
    let started = Instant::now();
    let r = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([call(
            "start_task_timer",
            json!({"task_id": "long", "description": "a long task", "task_type": "feature"})
        )]))
        .await;
    tool_ok(&PyClient::expect_connected(&r)[0]);
    let health = server.health().await;
    assert_eq!(
        (
            health["active_task_timers"].as_i64(),
            health["abandoned_task_timers"].as_i64()
        ),
        (Some(1), Some(0)),
        "{health:#}"
    );

    // kill -9, and start again with a one-second abandoned age: the timer is a row, nothing is lost,
    // and it is now reported as abandoned (not dropped).
    server.kill();
    ws.write("supervisor.toml", "[timing]\nabandoned_after_secs = 1\n");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let server = Server::start(&ws, &[]).await;
    let health = server.health().await;
    assert_eq!(
        (
            health["active_task_timers"].as_i64(),
            health["abandoned_task_timers"].as_i64()
        ),
        (Some(1), Some(1)),
        "{health:#}"
    );
    let r = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([
            call("list_task_timers", json!({"abandoned": true})),
            call("complete_task_timer", json!({"task_id": "long"})),
        ]))
        .await;
    let r = PyClient::expect_connected(&r);
    let listed = tool_ok(&r[0]);
    assert_eq!(listed["abandoned_after_seconds"], 1);
    assert_eq!(listed["timers"][0]["task_id"], "long");
    assert_eq!(listed["timers"][0]["abandoned"], true);
    let done = tool_ok(&r[1]);
    let d = done["duration_seconds"].as_f64().unwrap();
    assert!(
        d >= 1.1 && d <= started.elapsed().as_secs_f64() + 1.0,
        "{done:#}"
    );
    let health = server.health().await;
    assert_eq!(
        (
            health["active_task_timers"].as_i64(),
            health["abandoned_task_timers"].as_i64()
        ),
        (Some(0), Some(0)),
        "{health:#}"
    );
}
