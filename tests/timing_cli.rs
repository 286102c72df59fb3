//! `supervisor timing …` through the built binary, on both backends, in a workspace with no state
//! directory and no encryption key (timing needs only the database).

mod support;

use serde_json::Value;
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    timers_start_complete_list_and_stats_without_a_state_directory,
    import_is_idempotent_and_a_bad_line_imports_nothing,
    estimates_single_and_batch_with_versioned_json,
    parallel_groups_from_the_command_line,
    bad_input_is_refused_with_exit_1_and_changes_nothing,
);

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

const HISTORY: &str = r#"{"task_id": "H-1", "description": "Fix the login page crash", "task_type": "bug", "project": "shop", "duration_seconds": 1800, "estimated_seconds": 900}
{"task_id": "H-2", "description": "Login page shows a blank screen", "task_type": "bug", "project": "shop", "duration_seconds": 2400, "estimated_seconds": 1200}
{"task_id": "H-3", "description": "Add a wishlist to the shop", "task_type": "feature", "project": "shop", "duration_seconds": 14400, "estimated_seconds": 7200}

{"task_id": "H-4", "description": "Typo on the about page", "task_type": "bug", "project": "shop", "duration_seconds": 300, "estimated_seconds": 150}
{"task_id": "H-5", "description": "Login fails for long passwords", "task_type": "bug", "project": "shop", "duration_seconds": 3000, "estimated_seconds": 1500, "started_at": "2026-10-01T10:00:00Z"}
{"task_id": "H-6", "description": "Checkout crashes on an empty cart", "task_type": "bug", "project": "shop", "duration_seconds": 1200, "estimated_seconds": 600, "success": false}
"#;

async fn timers_start_complete_list_and_stats_without_a_state_directory(ws: Workspace) {
    assert!(!ws.state().exists());
    let started = json(&ws.ok(
        &[
            "timing",
            "start",
            "--json",
            "--description",
            "Write the README",
            "--type",
            "Docs",
            "--project",
            "shop",
            "--task-id",
            "T-1",
            "--agent",
            "claude-code",
            "--model",
            "opus",
            "--complexity",
            "simple",
            "--estimate",
            "30m",
        ],
        0,
    ));
    assert_eq!(started["format_version"], "1");
    assert_eq!(started["task_id"], "T-1");
    assert_eq!(started["task_type"], "docs");
    assert_eq!(started["estimate"], Value::Null);
    let text = ws.ok(
        &[
            "timing",
            "start",
            "-d",
            "Fix the footer",
            "--type",
            "bug",
            "--project",
            "shop",
        ],
        0,
    );
    assert!(text.starts_with("Started task-"), "{text}");
    assert!(text.contains("No estimate yet"), "{text}");

    let running = json(&ws.ok(&["timing", "list", "--running", "--json"], 0));
    assert_eq!(running["timers"].as_array().unwrap().len(), 2);
    assert_eq!(running["abandoned_after_seconds"], 86_400);
    // With an abandoned age of zero seconds, both are abandoned (and still listed, never dropped).
    let abandoned = json(&ws.ok(
        &[
            "timing",
            "list",
            "--abandoned",
            "--abandoned-after",
            "0s",
            "--json",
        ],
        0,
    ));
    assert_eq!(abandoned["timers"].as_array().unwrap().len(), 2);
    assert!(
        abandoned["timers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["abandoned"] == true)
    );
    let text = ws.ok(&["timing", "list", "--abandoned-after", "0s"], 0);
    assert!(text.contains("abandoned") && text.contains("T-1"), "{text}");

    let done = json(&ws.ok(
        &[
            "timing",
            "complete",
            "T-1",
            "--json",
            "--duration",
            "45m",
            "--lines",
            "120",
            "--files",
            "3",
            "--tests",
            "2",
            "--tokens",
            "50000",
            "--retries",
            "1",
            "--summary",
            "README written",
        ],
        0,
    ));
    assert_eq!(done["format_version"], "1");
    assert_eq!(done["duration_seconds"], 2700.0);
    assert_eq!(done["estimated_seconds"], 1800.0);
    assert_eq!(done["estimate_source"], "caller");
    assert_eq!(done["estimation_error"], 0.5);
    let out = ws.run(&["timing", "complete", "T-1"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("task `T-1` is already completed"),
        "{}",
        stderr(&out)
    );

    let listed = json(&ws.ok(&["timing", "list", "--json"], 0));
    let t1 = listed["timers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == "T-1")
        .unwrap()
        .clone();
    assert_eq!(t1["status"], "completed");
    assert_eq!(
        (t1["lines_changed"].as_i64(), t1["tokens_used"].as_i64()),
        (Some(120), Some(50_000))
    );
    assert_eq!(
        (
            t1["agent_type"].as_str(),
            t1["agent_model"].as_str(),
            t1["complexity"].as_str()
        ),
        (Some("claude-code"), Some("opus"), Some("simple"))
    );

    let stats = json(&ws.ok(&["timing", "stats", "--json"], 0));
    assert_eq!(stats["format_version"], "1");
    let rows = stats["stats"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stats:#}");
    assert_eq!(rows[0]["project"], Value::Null);
    assert_eq!(rows[1]["project"], "shop");
    assert_eq!(rows[1]["count"], 1);
    assert_eq!(rows[1]["mean_seconds"], 2700.0);
    assert_eq!(rows[1]["own_estimate_bias"], 1.5);
    // No timer started with history to estimate from: nothing to calibrate yet.
    assert_eq!(
        stats["interval_coverage"],
        serde_json::json!({"tasks": 0, "inside": 0, "share": null, "window": 100})
    );
    let text = ws.ok(&["timing", "stats", "--project", "shop"], 0);
    assert!(
        text.contains("docs") && text.contains("45 min") && text.contains("100 %"),
        "{text}"
    );
    assert!(
        text.contains("Calibration: no completed task has an estimated interval yet"),
        "{text}"
    );
    // No state directory was needed or created.
    assert!(!ws.state().exists());
}

async fn import_is_idempotent_and_a_bad_line_imports_nothing(ws: Workspace) {
    ws.write("history.jsonl", HISTORY);
    let bad = format!(
        "{HISTORY}{{\"task_id\": \"H-7\", \"description\": \"x\", \"task_type\": \"bug\", \"project\": \"shop\", \"duration_seconds\": -1}}\n"
    );
    ws.write("bad.jsonl", &bad);
    let out = ws.run(&["timing", "import", "bad.jsonl"]);
    expect_code(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "error: bad.jsonl:8: invalid duration_seconds: -1 is not a positive number of seconds; nothing was imported"
    );
    assert!(
        json(&ws.ok(&["timing", "stats", "--json"], 0))["stats"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let first = json(&ws.ok(&["timing", "import", "history.jsonl", "--json"], 0));
    assert_eq!(
        (
            first["read"].as_i64(),
            first["imported"].as_i64(),
            first["skipped"].as_i64()
        ),
        (Some(6), Some(6), Some(0))
    );
    let again = ws.ok(&["timing", "import", "history.jsonl"], 0);
    assert_eq!(
        again,
        "Imported 0 task(s) from history.jsonl (6 already present, left as they were).\n"
    );
    let stats = json(&ws.ok(
        &[
            "timing",
            "stats",
            "--type",
            "bug",
            "--project",
            "shop",
            "--json",
        ],
        0,
    ));
    let row = &stats["stats"][0];
    assert_eq!(
        (
            row["count"].as_i64(),
            row["succeeded"].as_i64(),
            row["failed"].as_i64()
        ),
        (Some(5), Some(4), Some(1))
    );
    assert_eq!(row["min_seconds"], 300.0);
    assert_eq!(row["max_seconds"], 3000.0);
    assert_eq!(row["own_estimate_bias"], 2.0);
    // From stdin too.
    let mut child = ws
        .cmd()
        .args(["timing", "import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"task_id\": \"S-1\", \"description\": \"From stdin\", \"task_type\": \"bug\", \"project\": \"blog\", \"duration_seconds\": 60}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 0);
    assert!(stdout(&out).contains("Imported 1 task(s) from <stdin>"));
}

async fn estimates_single_and_batch_with_versioned_json(ws: Workspace) {
    let out = ws.run(&[
        "timing",
        "estimate",
        "-d",
        "Login crash",
        "--type",
        "bug",
        "--project",
        "shop",
    ]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("no completed tasks to estimate from yet"),
        "{}",
        stderr(&out)
    );
    ws.write("history.jsonl", HISTORY);
    ws.ok(&["timing", "import", "history.jsonl"], 0);

    let e = json(&ws.ok(
        &[
            "timing",
            "estimate",
            "-d",
            "The login page crashes",
            "--type",
            "bug",
            "--project",
            "shop",
            "--json",
        ],
        0,
    ));
    assert_eq!(e["format_version"], "1");
    assert_eq!(e["sample_size"], 4);
    assert_eq!(e["method"], "similar+type_project");
    let similar: Vec<&str> = e["similar_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(similar[0], "H-1", "{e:#}");
    assert!(
        !similar.contains(&"H-6"),
        "a failed task is not a similar completed task"
    );
    let (lo, est, hi) = (
        e["interval_low_seconds"].as_f64().unwrap(),
        e["estimated_seconds"].as_f64().unwrap(),
        e["interval_high_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < lo && lo < est && est < hi, "{e:#}");
    let text = ws.ok(
        &[
            "timing",
            "estimate",
            "-d",
            "The login page crashes",
            "--type",
            "bug",
            "--project",
            "shop",
            "--own-estimate",
            "20m",
        ],
        0,
    );
    assert!(
        text.contains("calibrated ×2.00")
            && text.contains("Similar completed tasks:")
            && text.contains("H-1"),
        "{text}"
    );

    ws.write(
        "batch.jsonl",
        "{\"task_id\": \"a\", \"description\": \"login crash\", \"task_type\": \"bug\", \"project\": \"shop\"}\n{\"task_id\": \"b\", \"description\": \"wishlist sharing\", \"task_type\": \"feature\", \"project\": \"shop\", \"agent_estimate_seconds\": 3600}\n",
    );
    let out = ws.ok(
        &["timing", "estimate", "--batch", "batch.jsonl", "--json"],
        0,
    );
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(lines.len(), 2, "one JSON line per task: {out}");
    for (l, id) in lines.iter().zip(["a", "b"]) {
        assert_eq!(l["format_version"], "1");
        assert_eq!(l["task_id"], id);
        for key in [
            "estimated_seconds",
            "interval_low_seconds",
            "interval_high_seconds",
            "sample_size",
            "method",
            "similar_tasks",
        ] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
        for s in l["similar_tasks"].as_array().unwrap() {
            assert!(
                s["task_id"].is_string()
                    && s["description"].is_string()
                    && s["duration_seconds"].is_number(),
                "{s}"
            );
        }
    }
    assert!(
        lines[1]["method"]
            .as_str()
            .unwrap()
            .ends_with("+calibrated_own_estimate")
    );
    let text = ws.ok(&["timing", "estimate", "--batch", "batch.jsonl"], 0);
    assert!(text.contains("TASK") && text.lines().count() == 3, "{text}");
    ws.write("bad-batch.jsonl", "{\"task_id\": \"a\", \"description\": \"x\", \"task_type\": \"bug\", \"project\": \"shop\"}\n{\"task\": \"b\"}\n");
    let out = ws.run(&["timing", "estimate", "--batch", "bad-batch.jsonl", "--json"]);
    expect_code(&out, 1);
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("bad-batch.jsonl:2: unknown field `task`"),
        "{}",
        stderr(&out)
    );
}

async fn parallel_groups_from_the_command_line(ws: Workspace) {
    let g = json(&ws.ok(
        &[
            "timing",
            "group",
            "start",
            "-d",
            "Two refactors",
            "--project",
            "shop",
            "--group-id",
            "G-1",
            "--task",
            "A,B",
            "--json",
        ],
        0,
    ));
    assert_eq!(g["agent_count"], 2);
    assert_eq!(g["child_task_ids"], serde_json::json!(["A", "B"]));
    for id in ["A", "B"] {
        ws.ok(
            &[
                "timing",
                "start",
                "-d",
                &format!("refactor {id}"),
                "--type",
                "refactor",
                "--project",
                "shop",
                "--task-id",
                id,
                "--group",
                "G-1",
            ],
            0,
        );
    }
    let out = ws.run(&["timing", "group", "complete", "G-1"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("child tasks still running: A, B"),
        "{}",
        stderr(&out)
    );
    ws.ok(&["timing", "complete", "B", "--duration", "600"], 0);
    ws.ok(&["timing", "complete", "A", "--duration", "1200"], 0);
    let done = json(&ws.ok(&["timing", "group", "complete", "G-1", "--json"], 0));
    assert_eq!(done["format_version"], "1");
    assert_eq!(done["sequential_estimate_seconds"], 1800.0);
    assert_eq!(done["sequential_source"], "sum_of_child_durations");
    let order: Vec<&str> = done["completion_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["B", "A"]);
    let parallel = done["parallel_seconds"].as_f64().unwrap();
    assert!(
        (done["efficiency"].as_f64().unwrap() - 900.0 / parallel).abs() < 1e-6 * (900.0 / parallel)
    );
    let out = ws.run(&["timing", "group", "complete", "G-1"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("parallel group `G-1` is already completed"));
}

async fn bad_input_is_refused_with_exit_1_and_changes_nothing(ws: Workspace) {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "timing",
                "start",
                "-d",
                "x",
                "--type",
                "bug",
                "--project",
                "Shop",
            ],
            "invalid project: `Shop` is not a project name",
        ),
        (
            vec![
                "timing",
                "start",
                "-d",
                "x",
                "--type",
                "bug",
                "--project",
                "shop",
                "--estimate",
                "5 parsecs",
            ],
            "invalid duration",
        ),
        (
            vec![
                "timing",
                "start",
                "-d",
                "x",
                "--type",
                "bug",
                "--project",
                "shop",
                "--complexity",
                "hard",
            ],
            "`hard` is not one of simple, medium, complex",
        ),
        (
            vec![
                "timing",
                "start",
                "-d",
                " ",
                "--type",
                "bug",
                "--project",
                "shop",
            ],
            "invalid description: it is empty",
        ),
        (
            vec!["timing", "complete", "nope"],
            "there is no task `nope`",
        ),
        (
            vec!["timing", "import", "missing.jsonl"],
            "cannot read missing.jsonl",
        ),
        (
            vec!["timing", "list", "--limit", "0"],
            "invalid limit: 0 is not between 1 and 10,000",
        ),
        (
            vec!["timing", "group", "complete", "G-x"],
            "there is no parallel group `G-x`",
        ),
    ];
    for (args, want) in cases {
        let out = ws.run(&args);
        expect_code(&out, 1);
        assert!(
            stderr(&out).contains(want),
            "{args:?}: {}\n  wanted: {want}",
            stderr(&out)
        );
    }
    ws.ok(
        &[
            "timing",
            "start",
            "-d",
            "x",
            "--type",
            "bug",
            "--project",
            "shop",
            "--task-id",
            "T",
        ],
        0,
    );
    for (args, want) in [
        (
            vec!["timing", "complete", "T", "--duration=-5"],
            "invalid duration_seconds: -5 is not a positive number of seconds",
        ),
        (
            vec!["timing", "complete", "T", "--duration", "100d"],
            "more than 90 days",
        ),
        (
            vec!["timing", "complete", "T", "--lines=-3"],
            "invalid lines_changed: -3 is negative",
        ),
    ] {
        let out = ws.run(&args);
        expect_code(&out, 1);
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    let list = json(&ws.ok(&["timing", "list", "--json"], 0));
    assert_eq!(list["timers"].as_array().unwrap().len(), 1);
    assert_eq!(list["timers"][0]["status"], "running");
    assert!(
        json(&ws.ok(&["timing", "stats", "--json"], 0))["stats"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
