//! Crash safety and concurrency of apply: kill -9 in the middle, run again, nothing duplicated or lost;
//! two applies at once on one database.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{Workspace, expect_code, stderr};

cli_conformance!(
    killed_apply_converges_on_the_next_run,
    concurrent_applies_serialize_and_stay_consistent
);

/// `projects` projects of `services` services each.
fn big_state(ws: &Workspace, projects: usize, services: usize) {
    for p in 0..projects {
        let mut text = format!("name: p{p:03}\nservices:\n");
        for s in 0..services {
            text.push_str(&format!("  - name: s{s:02}\n"));
        }
        ws.write(&format!("state/projects/p{p:03}.yaml"), &text);
    }
}

async fn registry_is_complete(ws: &Workspace, projects: usize, services: usize) {
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let reg = store.port_registry("default").await.unwrap();
    assert_eq!(reg.ranges.len(), projects);
    assert_eq!(
        reg.allocations.len(),
        projects * services,
        "every service has exactly one port"
    );
    let ports: HashSet<i32> = reg.allocations.iter().map(|a| a.port).collect();
    assert_eq!(
        ports.len(),
        reg.allocations.len(),
        "no port is allocated twice"
    );
    for a in &reg.allocations {
        let r = reg
            .ranges
            .iter()
            .find(|r| r.project == a.project)
            .expect("block of the allocation");
        assert!(
            a.port >= r.start_port && a.port <= r.end_port,
            "{a:?} outside {r:?}"
        );
    }
}

async fn killed_apply_converges_on_the_next_run(ws: Workspace) {
    let (projects, services) = (60, 40);
    big_state(&ws, projects, services);
    let total = projects * services;
    // Kill at several points of the run; each time the next apply must converge.
    let mut partial = Vec::new();
    for delay_ms in [300u64, 500, 700, 1000, 1500, 2500] {
        let mut child = ws
            .cmd()
            .args(["apply", "--auto-approve"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let store = supervisor::store::open(&ws.location()).await.unwrap();
        let n = store
            .port_registry("default")
            .await
            .unwrap()
            .allocations
            .len();
        partial.push(n);
        if n > 0 && n < total {
            break;
        }
    }
    // At least one kill landed in the middle of the changes (the test is about that case).
    assert!(
        partial.iter().any(|&n| n > 0 && n < total),
        "no kill interrupted an apply mid-way: {partial:?}"
    );
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 0);
    ws.ok(&["plan", "--detailed-exitcode"], 0);
    registry_is_complete(&ws, projects, services).await;
    // The interrupted runs are recorded as such.
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    assert_eq!(store.last_run().await.unwrap().unwrap().status, "succeeded");
}

async fn concurrent_applies_serialize_and_stay_consistent(ws: Workspace) {
    let (projects, services) = (20, 20);
    big_state(&ws, projects, services);
    let spawn = || {
        ws.cmd()
            .args(["apply", "--auto-approve", "--lock-timeout", "120"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    // Both succeed: one applies everything, the other waits for the lock and then finds nothing to do.
    expect_code(&a, 0);
    expect_code(&b, 0);
    let outs = [support::stdout(&a), support::stdout(&b)];
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("Apply complete!"))
            .count(),
        1,
        "{outs:#?}\n{}",
        stderr(&a)
    );
    assert_eq!(outs.iter().filter(|o| o.contains("No changes.")).count(), 1);
    registry_is_complete(&ws, projects, services).await;
}
