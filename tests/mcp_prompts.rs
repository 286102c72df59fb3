//! The PIV prompts and `run_checks` through a real MCP client (the official Python SDK) against
//! `supervisor serve`, on SQLite and on PostgreSQL: prompts filled with the project's real data
//! (ports, knowledge, similar tasks, estimate, checks, running timers) and nothing of another project's;
//! the meta `status` prompt; `run_checks` running only declared checks, confined to the endpoint's
//! project, with masked output; tens of concurrent calls.

mod support;

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{
    PyClient, Server, create_token, op_err, run_all, run_parallel, tool_err, tool_ok,
};

cli_conformance!(
    piv_prompts_carry_the_projects_real_data_and_nothing_of_another,
    run_checks_runs_only_declared_checks_of_its_own_project,
);

/// A credential a check prints: its output must come back masked.
const PLANTED: &str = "ghp_1234567890abcdefghijABCDEFGHIJ123456";

fn fixture(ws: &Workspace) {
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n",
    );
    ws.write(
        "alpha-src/docs/payments.md",
        "# Payments\n\n## Payment retries\n\nThe payment gateway retries a declined card three times with exponential backoff; \
         the retry counter lives in the orders table.\n",
    );
    ws.write(
        "beta-src/docs/billing.md",
        "# Billing\n\n## Beta payment retries\n\nBeta's secret payment retry policy: never retry.\n",
    );
    ws.write(
        "alpha-src/print-token.sh",
        &format!("echo token {PLANTED}\n"),
    );
    let alpha_path = ws.path().join("alpha-src");
    let beta_path = ws.path().join("beta-src");
    ws.write(
        "state/projects/alpha.yaml",
        &format!(
            "name: alpha\npath: {}\nservices:\n  - name: api\nchecks:\n  - echo alpha-ok\n  - \"false\"\n  - sh print-token.sh\n",
            alpha_path.display()
        ),
    );
    ws.write(
        "state/projects/beta.yaml",
        &format!(
            "name: beta\npath: {}\nchecks: [echo beta-ok]\n",
            beta_path.display()
        ),
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.ok(
        &[
            "knowledge",
            "index",
            &alpha_path.join("docs").display().to_string(),
            "--project",
            "alpha",
        ],
        0,
    );
    ws.ok(
        &[
            "knowledge",
            "index",
            &beta_path.join("docs").display().to_string(),
            "--project",
            "beta",
        ],
        0,
    );
    let mut history = String::new();
    for i in 0..6 {
        for (project, secs) in [("alpha", 1200 + i * 60), ("beta", 9000 + i * 60)] {
            history.push_str(
                &json!({
                    "task_id": format!("{project}-h{i}"),
                    "description": format!("{project} payment retry bug number {i}"),
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
    for (project, id) in [("alpha", "a-run"), ("beta", "b-run")] {
        ws.ok(
            &[
                "timing",
                "start",
                "-d",
                "payment retries double charge",
                "--type",
                "bugfix",
                "--project",
                project,
                "--task-id",
                id,
            ],
            0,
        );
    }
}

fn prompt(name: &str, arguments: Value) -> Value {
    json!({"op": "get_prompt", "name": name, "arguments": arguments})
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"op": "call", "name": name, "arguments": arguments})
}

fn text(result: &Value) -> &str {
    result["messages"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no prompt text in {result:#}"))
}

fn prompt_list(result: &Value) -> Vec<(String, Vec<String>)> {
    result["prompts"]
        .as_array()
        .unwrap_or_else(|| panic!("no prompts in {result:#}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["arguments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Every one of `wants` is in the prompt `what`.
fn contains_all(what: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{what} lacks {want:?}:\n{text}");
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn piv_prompts_carry_the_projects_real_data_and_nothing_of_another(ws: Workspace) {
    fixture(&ws);
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let task = json!({"task": "payment retries fail for declined cards", "task_type": "bugfix"});
    let alpha_ops = json!([
        {"op": "list_prompts"},
        prompt("prime", task.clone()),
        prompt("plan", task.clone()),
        prompt("execute", task.clone()),
        prompt("prime", json!({"task_type": "bugfix"})),
        prompt("prime", json!({"task": "x", "project": "beta"})),
        prompt("status", json!({})),
    ]);
    let meta_ops = json!([
        {"op": "list_prompts"},
        prompt("status", json!({})),
        prompt("prime", json!({"project": "beta", "task": "payment retries fail", "task_type": "bugfix"})),
        prompt("plan", json!({"task": "payment retries fail"})),
    ]);
    let reports = run_all(vec![
        (
            PyClient::http(&server.url("/mcp/alpha")).token(&alpha),
            alpha_ops,
        ),
        (
            PyClient::http(&server.url("/mcp/meta")).token(&meta),
            meta_ops,
        ),
    ])
    .await;
    let port = {
        let p: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
        p["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["project"] == "alpha" && a["service"] == "api")
            .unwrap_or_else(|| panic!("{p:#}"))["port"]
            .as_i64()
            .unwrap()
    };

    // The project endpoint: three PIV prompts taking the task.
    let r = PyClient::expect_connected(&reports[0]);
    let task_args = strings(&["task", "task_type"]);
    assert_eq!(
        prompt_list(&r[0]),
        [
            ("prime".to_string(), task_args.clone()),
            ("plan".to_string(), task_args.clone()),
            ("execute".to_string(), task_args.clone()),
        ]
    );
    let prime = text(&r[1]);
    contains_all(
        "prime",
        prime,
        &[
            "# Prime: payment retries fail for declined cards",
            "Project `alpha`, task type `bugfix`",
            // The instructions: the core layer and the generated facts with the registered port.
            "How to plan a task",
            &format!("{port}"),
            "`echo alpha-ok`",
            // Knowledge: alpha's document, with its place.
            "Payment retries",
            "payments.md:",
            // Similar past tasks with their durations.
            "`alpha-h",
            " min)",
        ],
    );
    let plan = text(&r[2]);
    contains_all(
        "plan",
        plan,
        &[
            "# Plan: payment retries fail",
            "## Estimate",
            "95 % interval",
            "completed tasks",
            "`alpha-h",
            "- `echo alpha-ok`",
            "- `false`",
            "`execute` prompt",
        ],
    );
    let execute = text(&r[3]);
    contains_all(
        "execute",
        execute,
        &[
            "start_task_timer",
            "run_checks",
            "complete_task_timer",
            "add_learning",
            "- `a-run` (bugfix, running",
            "- `echo alpha-ok`",
        ],
    );
    for (what, t) in [("prime", prime), ("plan", plan), ("execute", execute)] {
        for other in ["beta-h", "Beta's", "b-run", "never retry"] {
            assert!(!t.contains(other), "{what} shows beta's {other:?}:\n{t}");
        }
        assert!(!t.contains(PLANTED), "{what} shows the planted credential");
    }
    assert!(
        op_err(&r[4])
            .to_string()
            .contains("needs the argument `task`"),
        "{:#}",
        r[4]
    );
    assert!(
        op_err(&r[5])
            .to_string()
            .contains("serves project `alpha` only"),
        "{:#}",
        r[5]
    );
    assert!(
        op_err(&r[6])
            .to_string()
            .contains("unknown prompt `status`"),
        "{:#}",
        r[6]
    );

    // The meta endpoint: the same prompts with a project, and status.
    let r = PyClient::expect_connected(&reports[1]);
    let with_project = strings(&["project", "task", "task_type"]);
    assert_eq!(
        prompt_list(&r[0]),
        [
            ("prime".to_string(), with_project.clone()),
            ("plan".to_string(), with_project.clone()),
            ("execute".to_string(), with_project),
            ("status".to_string(), vec![]),
        ]
    );
    let status = text(&r[1]);
    contains_all(
        "status",
        status,
        &[
            "# Status of every project",
            "| alpha |",
            "| beta |",
            "`a-run` in alpha",
            "`b-run` in beta",
        ],
    );
    let beta = text(&r[2]);
    assert!(
        beta.contains("`beta-h")
            && beta.contains("Beta payment retries")
            && !beta.contains("`alpha-h"),
        "{beta}"
    );
    assert!(
        op_err(&r[3]).to_string().contains("name the project"),
        "{:#}",
        r[3]
    );
    drop(server);
}

async fn run_checks_runs_only_declared_checks_of_its_own_project(ws: Workspace) {
    fixture(&ws);
    let (meta, _) = create_token(&ws, None);
    let (alpha, _) = create_token(&ws, Some("alpha"));
    let server = Server::start(&ws, &[]).await;
    let r = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([
            call("run_checks", json!({"task_id": "a-run"})),
            call("run_checks", json!({"check": "echo alpha-ok"})),
            call("run_checks", json!({"check": "echo alpha-ok; touch pwned"})),
            call("run_checks", json!({"check": "echo alpha-ok "})),
            call("run_checks", json!({"check": "echo"})),
            call("run_checks", json!({"check": "echo beta-ok"})),
            call("run_checks", json!({"project": "beta"})),
            call(
                "run_checks",
                json!({"project": "beta", "check": "echo beta-ok"})
            ),
        ]))
        .await;
    let r = PyClient::expect_connected(&r);
    let all = tool_ok(&r[0]);
    assert_eq!(all["project"], "alpha");
    assert_eq!(all["passed"], false, "`false` is declared and fails");
    let runs: Vec<(String, bool)> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("echo alpha-ok".to_string(), true),
            ("false".to_string(), false),
            ("sh print-token.sh".to_string(), true),
        ]
    );
    let shown = all.to_string();
    assert!(shown.contains("alpha-ok"), "{shown}");
    assert!(
        all["runs"][2]["output"]
            .as_str()
            .unwrap()
            .starts_with("token "),
        "{all:#}"
    );
    let one = tool_ok(&r[1]);
    assert_eq!(one["passed"], true);
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    for (i, why) in [
        (2, "is not a declared check"),
        (3, "is not a declared check"),
        (4, "is not a declared check"),
        (5, "is not a declared check"),
    ] {
        let msg = tool_err(&r[i]);
        assert!(msg.contains(why), "op {i}: {msg}");
    }
    for i in [6, 7] {
        let msg = tool_err(&r[i]);
        assert!(msg.contains("serves project `alpha` only"), "op {i}: {msg}");
    }
    assert!(!ws.path().join("alpha-src/pwned").exists(), "a variant ran");
    // The masked credential never reaches the client, the log or the database.
    assert!(!shown.contains(PLANTED), "{shown}");
    assert!(!server.log().contains(PLANTED));

    // Tens of concurrent callers: each run is recorded, every answer is right.
    let jobs = (0..20)
        .map(|i| {
            let (url, token, check) = if i % 2 == 0 {
                (
                    "/mcp/alpha",
                    &alpha,
                    json!({"project": "alpha", "check": "echo alpha-ok"}),
                )
            } else {
                (
                    "/mcp/meta",
                    &meta,
                    json!({"project": "beta", "check": "echo beta-ok"}),
                )
            };
            (
                PyClient::http(&server.url(url)).token(token),
                json!([call("run_checks", check)]),
            )
        })
        .collect();
    for (i, report) in run_parallel(jobs).await.iter().enumerate() {
        let r = PyClient::expect_connected(report);
        let out = tool_ok(&r[0]);
        let project = if i % 2 == 0 { "alpha" } else { "beta" };
        assert_eq!(
            (out["project"].as_str(), out["passed"].as_bool()),
            (Some(project), Some(true))
        );
        assert!(
            out["runs"][0]["output"]
                .as_str()
                .unwrap()
                .contains(&format!("{project}-ok")),
            "{out:#}"
        );
    }
    // project_status shows the last run of each check.
    let r = PyClient::http(&server.url("/mcp/alpha"))
        .token(&alpha)
        .run(json!([call("project_status", json!({}))]))
        .await;
    let status = tool_ok(&PyClient::expect_connected(&r)[0]);
    let last: Vec<(String, bool)> = status["last_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        last.contains(&("echo alpha-ok".to_string(), true)),
        "{last:?}"
    );
    assert!(last.contains(&("false".to_string(), false)), "{last:?}");
    assert!(!status.to_string().contains(PLANTED));
    drop(server);
}
