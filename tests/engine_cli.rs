//! The plan/apply engine through the real binary, on SQLite and on PostgreSQL.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    init_plan_apply_converges_and_an_edit_shows_exactly_that_change,
    removing_a_service_frees_its_port_and_prevent_destroy_refuses,
    mass_deletes_need_force_only_from_ten_objects,
    saved_plans_apply_and_stale_ones_are_refused,
    apply_refuses_without_a_terminal_or_auto_approve,
    invalid_state_changes_nothing,
    plan_json_has_the_documented_shape,
    a_held_lock_makes_apply_wait_then_fail_clearly,
    status_reports_in_sync_and_pending,
    project_and_only_filters,
    a_pin_onto_another_projects_block_is_refused_and_changes_no_row,
    a_scoped_plan_that_needs_an_out_of_scope_move_is_refused,
    moving_a_port_is_disruptive,
);

const NOTES: &str = "name: notes\nservices:\n  - name: app\n  - name: search\n";

async fn init_plan_apply_converges_and_an_edit_shows_exactly_that_change(ws: Workspace) {
    let out = ws.ok(&["init"], 0);
    assert!(out.contains("state/projects/example.yaml"), "{out}");
    let plan = ws.ok(&["plan", "--detailed-exitcode"], 2);
    for line in [
        "+   ports/example          block 3100–3199 (pinned)",
        "+   ports/_shared/postgres  port 9432 (shared service)",
        "+   ports/example/api      port 3101 (pinned)",
        "+   ports/example/web      port 3100 (first free in 3100–3199)",
        "Plan: 4 to add, 0 to change, 0 to destroy.",
    ] {
        let squeezed: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            plan.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == squeezed),
            "missing `{line}` in:\n{plan}"
        );
    }
    assert!(
        plan.contains("project/example/stripe_key is required"),
        "{plan}"
    );
    let applied = ws.ok(&["apply", "--auto-approve"], 0);
    assert!(
        applied.contains("Apply complete! Resources: 4 added, 0 changed, 0 destroyed."),
        "{applied}"
    );
    let again = ws.ok(&["plan", "--detailed-exitcode"], 0);
    assert!(again.contains("No changes."), "{again}");

    let file = "state/projects/example.yaml";
    let text = ws
        .read(file)
        .replace("  - name: web\n", "  - name: web\n  - name: worker\n");
    ws.write(file, &text);
    let edited = ws.ok(&["plan", "--detailed-exitcode", "--json"], 2);
    let plan: Value = serde_json::from_str(&edited).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{edited}");
    assert_eq!(changes[0]["address"], "ports/example/worker");
    assert_eq!(changes[0]["action"], "create");
    assert_eq!(changes[0]["after"]["port"], 3102);
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

async fn removing_a_service_frees_its_port_and_prevent_destroy_refuses(ws: Workspace) {
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: db\n    prevent_destroy: true\n",
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: db\n    prevent_destroy: true\n",
    );
    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("-   ports/notes/search  port 3001 (freed)"),
        "{plan}"
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    let list: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    let ports: Vec<i64> = list["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [3000, 3002]);

    // Removing the protected service is refused, even though the flag left the file with it.
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n",
    );
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    assert!(
        stdout(&out).contains("ports/notes/db has prevent_destroy"),
        "{}",
        stdout(&out)
    );
    let list: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    assert_eq!(
        list["ports"].as_array().unwrap().len(),
        2,
        "nothing changed"
    );
    // Lifting the flag first, then removing, works.
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: db\n",
    );
    let plan = ws.ok(&["apply", "--auto-approve"], 0);
    assert!(plan.contains("prevent_destroy true → false"), "{plan}");
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n",
    );
    ws.ok(&["apply", "--auto-approve"], 0);
}

/// octoDNS's rule: the mass-delete guard applies only to kinds with at least 10 managed objects.
async fn mass_deletes_need_force_only_from_ten_objects(ws: Workspace) {
    // A small setup: removing everything is an ordinary edit.
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.remove("state/projects/notes.yaml");
    let applied = ws.ok(&["apply", "--auto-approve"], 0);
    assert!(
        applied.contains("Apply complete! Resources: 0 added, 0 changed, 3 destroyed."),
        "{applied}"
    );

    // Ten managed ports objects (a block and nine services): deleting four of them needs --force.
    let services: String = (1..=9).map(|i| format!("  - name: s{i}\n")).collect();
    ws.write(
        "state/projects/big.yaml",
        &format!("name: big\nservices:\n{services}"),
    );
    ws.ok(&["apply", "--auto-approve"], 0);
    let kept: String = (1..=5).map(|i| format!("  - name: s{i}\n")).collect();
    ws.write(
        "state/projects/big.yaml",
        &format!("name: big\nservices:\n{kept}"),
    );
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("deletes 4 of 10 managed ports objects (40 % > 30 %)")
            && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ws.ok(&["ports", "list", "--json"], 0)
            .matches("\"service\"")
            .count(),
        9,
        "nothing deleted"
    );
    ws.ok(&["apply", "--auto-approve", "--force"], 0);
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

async fn saved_plans_apply_and_stale_ones_are_refused(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["plan", "--out", "first.plan"], 0);
    let applied = ws.ok(&["apply", "first.plan"], 0);
    assert!(
        applied.contains("Apply complete! Resources: 3 added"),
        "{applied}"
    );

    // Desired state changed after the plan was saved.
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: q\n",
    );
    ws.ok(&["plan", "--out", "second.plan"], 0);
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: r\n",
    );
    let out = ws.run(&["apply", "second.plan"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("stale") && stderr(&out).contains("desired state changed"),
        "{}",
        stderr(&out)
    );

    // Reality changed after the plan was saved (another apply ran).
    ws.ok(&["plan", "--out", "third.plan"], 0);
    ws.ok(&["apply", "--auto-approve"], 0);
    let out = ws.run(&["apply", "third.plan"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("reality changed") && stderr(&out).contains("ports"),
        "{}",
        stderr(&out)
    );

    let out = ws.run(&["apply", "missing.plan"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("missing.plan"), "{}", stderr(&out));
}

async fn apply_refuses_without_a_terminal_or_auto_approve(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let out = ws.run(&["apply"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("--auto-approve"), "{}", stderr(&out));
    assert!(
        ws.ok(&["plan", "--detailed-exitcode"], 2)
            .contains("3 to add")
    );
}

async fn invalid_state_changes_nothing(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.write(
        "state/projects/broken.yaml",
        "name: broken\nservices:\n  - name: api\n    port: [oops\n",
    );
    for cmd in [
        &["plan"][..],
        &["apply", "--auto-approve"],
        &["validate"],
        &["status"],
    ] {
        let out = ws.run(cmd);
        expect_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("state/projects/broken.yaml:4:"),
            "{cmd:?}: {err}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
    }
    let list = ws.ok(&["ports", "list", "--json"], 1);
    assert!(list.contains("\"valid\": false"), "{list}");
    // Nothing reached the database.
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    assert!(
        store
            .port_registry("default")
            .await
            .unwrap()
            .allocations
            .is_empty()
    );
}

async fn plan_json_has_the_documented_shape(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let plan: Value = serde_json::from_str(&ws.ok(&["plan", "--json"], 0)).unwrap();
    assert_eq!(plan["format_version"], "1");
    assert!(
        plan["desired_revision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        plan["observed_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 3, "change": 0, "destroy": 0})
    );
    let c = &plan["changes"][1];
    for key in [
        "address", "provider", "action", "before", "after", "summary",
    ] {
        assert!(c.get(key).is_some(), "change lacks {key}: {c}");
    }
    assert_eq!(c["provider"], "ports");
    assert_eq!(c["before"], Value::Null);
    let actions: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(actions.iter().all(|a| *a == "create"));
}

async fn a_held_lock_makes_apply_wait_then_fail_clearly(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let lock = store.lock_apply(Duration::from_secs(1)).await.unwrap();
    let started = std::time::Instant::now();
    let out = ws.run(&["apply", "--auto-approve", "--lock-timeout", "1"]);
    expect_code(&out, 1);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        stderr(&out).contains("another apply holds the lock"),
        "{}",
        stderr(&out)
    );
    lock.release().await;
    ws.ok(&["apply", "--auto-approve", "--lock-timeout", "5"], 0);
}

async fn status_reports_in_sync_and_pending(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nservices:\n  - name: app\n  - name: search\n  - name: q\n",
    );
    let status: Value = serde_json::from_str(&ws.ok(&["status", "--json"], 0)).unwrap();
    let by_addr = |a: &str| {
        status["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == a)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_addr("ports/notes/app")["status"], "in_sync");
    assert!(by_addr("ports/notes/app")["last_applied_at"].is_string());
    assert_eq!(by_addr("ports/notes/q")["status"], "pending");
    assert_eq!(by_addr("ports/notes/q")["pending"], "create");
    assert_eq!(status["last_apply"]["status"], "succeeded");
    let text = ws.ok(&["status"], 0);
    assert!(text.contains("3 of 4 resources in sync."), "{text}");
}

async fn project_and_only_filters(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.write(
        "state/projects/shop.yaml",
        "name: shop\nservices:\n  - name: api\n",
    );
    let plan: Value =
        serde_json::from_str(&ws.ok(&["plan", "--json", "--project", "shop"], 0)).unwrap();
    let addrs: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["ports/shop", "ports/shop/api"]);
    let plan: Value =
        serde_json::from_str(&ws.ok(&["plan", "--json", "--only", "ports/notes/app"], 0)).unwrap();
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1);
    ws.ok(&["apply", "--auto-approve", "--project", "shop"], 0);
    let plan: Value = serde_json::from_str(&ws.ok(&["plan", "--json"], 0)).unwrap();
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["address"].as_str().unwrap().contains("shop"))
    );
    let out = ws.run(&["plan", "--project", "nope"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("no project `nope`"));
}

fn blocks(ws: &Workspace) -> Vec<(String, i64)> {
    let list: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    list["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["project"].as_str().unwrap().to_string(),
                b["start_port"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// (project/service, port), sorted by name.
fn service_ports(ws: &Workspace) -> Vec<(String, i64)> {
    let list: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    let mut ports: Vec<(String, i64)> = list["ports"]
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
        .collect();
    ports.sort();
    ports
}

/// Issue 10, defects 4 and 5: a project pinning the block another project holds is a plan error naming
/// the holder (the holder's ports never move), and a scoped apply of it fails before changing anything:
/// no registry row is lost.
async fn a_pin_onto_another_projects_block_is_refused_and_changes_no_row(ws: Workspace) {
    ws.write(
        "state/projects/consilio.yaml",
        "name: consilio\nservices:\n  - name: api\n",
    );
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    let before = (blocks(&ws), service_ports(&ws));
    assert_eq!(
        before.0,
        [("consilio".to_string(), 3000), ("notes".to_string(), 3100)]
    );
    ws.write(
        "state/projects/consilio.yaml",
        "name: consilio\nport_range: 3100\nservices:\n  - name: api\n",
    );
    for args in [
        &["apply", "--auto-approve"][..],
        &["apply", "--auto-approve", "--project", "consilio"][..],
        &["apply", "--auto-approve", "--allow-disruptive", "--force"][..],
    ] {
        let out = ws.run(args);
        expect_code(&out, 1);
        assert!(
            stdout(&out).contains(
                "project `consilio` pins port_range 3100, but project `notes` holds the block 3100–3199"
            ),
            "{args:?}: {}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains("No changes"), "{}", stdout(&out));
        assert_eq!(
            (blocks(&ws), service_ports(&ws)),
            before,
            "{args:?} changed the registry"
        );
    }
    // Once notes moves away, the pin applies (and moves consilio's port: disruptive).
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3200\nservices:\n  - name: app\n  - name: search\n",
    );
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("--allow-disruptive"),
        "{}",
        stderr(&out)
    );
    ws.ok(&["apply", "--auto-approve", "--allow-disruptive"], 0);
    ws.ok(&["apply", "--auto-approve", "--allow-disruptive"], 0);
    assert_eq!(
        blocks(&ws),
        [("consilio".to_string(), 3100), ("notes".to_string(), 3200)]
    );
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

/// A pin onto a port another service of the project holds moves that service first; applying only the
/// pinned service (`--only`) would collide, so the plan says so and nothing is applied.
async fn a_scoped_plan_that_needs_an_out_of_scope_move_is_refused(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    let before = service_ports(&ws);
    assert_eq!(
        before,
        [
            ("notes/app".to_string(), 3000),
            ("notes/search".to_string(), 3001)
        ]
    );
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3000\nservices:\n  - name: app\n  - name: search\n    port: 3000\n",
    );
    let out = ws.run(&[
        "apply",
        "--auto-approve",
        "--allow-disruptive",
        "--only",
        "ports/notes/search",
    ]);
    expect_code(&out, 1);
    assert!(
        stdout(&out).contains(
            "ports/notes/search needs ports/notes/app to be applied first, which is outside the plan's scope"
        ),
        "{}",
        stdout(&out)
    );
    assert_eq!(service_ports(&ws), before);
    ws.ok(&["apply", "--auto-approve", "--allow-disruptive"], 0);
    assert_eq!(
        service_ports(&ws),
        [
            ("notes/app".to_string(), 3002),
            ("notes/search".to_string(), 3000)
        ]
    );
}

/// Moving a service's port breaks whatever listens there: the plan marks it disruptive and apply needs
/// `--allow-disruptive` (or an interactive yes).
async fn moving_a_port_is_disruptive(ws: Workspace) {
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.write(
        "state/projects/notes.yaml",
        "name: notes\nport_range: 3000\nservices:\n  - name: app\n    port: 3050\n  - name: search\n",
    );
    let plan = ws.ok(&["plan"], 0);
    assert!(
        plan.contains("ports/notes/app")
            && plan.contains("port 3000 → 3050 (pinned)   (disruptive)"),
        "{plan}"
    );
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("the plan has disruptive changes (ports/notes/app)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(service_ports(&ws)[0], ("notes/app".to_string(), 3000));
    ws.ok(&["apply", "--auto-approve", "--allow-disruptive"], 0);
    assert_eq!(service_ports(&ws)[0], ("notes/app".to_string(), 3050));
}
