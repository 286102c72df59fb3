//! Disk faults: a full disk (a small tmpfs, filled up) under the state directory, under a project's
//! CLAUDE.md and under the SQLite database, and a read-only state directory (a read-only bind
//! mount). Each fails with an error that names the file and the cause, writes nothing by half (no
//! truncated file, no temporary file left, no half-recorded change), loses nothing, and works again
//! once there is room (or the mount is writable).
//!
//! Mounting needs root (CI runs the suite as root). Without root the tests print why and return —
//! unless `CI` is set, where a missing prerequisite is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::mcp::{McpClient, Server};
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    a_full_disk_under_the_state_directory_refuses_edits_and_loses_nothing,
    a_full_disk_under_a_claude_md_fails_the_change_and_keeps_the_file,
    a_read_only_state_directory_refuses_edits_and_loses_nothing,
);

/// True when the test may mount; otherwise prints why it does not run (and fails under CI).
fn may_mount(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root to mount a tmpfs or a read-only bind mount, and CI must run it: run the suite as root"
    );
    eprintln!(
        "{test}: not run — mounting a tmpfs or a read-only bind mount needs root (CI runs it as root)"
    );
    false
}

/// A mount at `at`, unmounted when dropped.
struct Mount {
    at: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. `512k`) at `at`.
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path(at),
            ],
        );
        Mount { at: at.into() }
    }

    /// `at` bind-mounted onto itself, read-only.
    fn read_only(at: &Path) -> Mount {
        sh("mount", &["--bind", path(at), path(at)]);
        let m = Mount { at: at.into() };
        sh("mount", &["-o", "remount,ro,bind", path(at)]);
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills the filesystem of `dir` until it has no room left; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// Every file under `dir` (relative path → content), to compare before and after; the filler and the
/// (empty) edit lock file aside.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != "filler" && n != ".edit.lock")
            {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn temporaries(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".tmp"))
        .collect()
}

async fn ports(ws: &Workspace) -> Vec<(String, String, i32)> {
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let mut v: Vec<_> = store
        .port_registry("default")
        .await
        .unwrap()
        .allocations
        .into_iter()
        .map(|a| (a.project, a.service, a.port))
        .collect();
    v.sort();
    v
}

const NOTES: &str = "name: notes\nservices:\n  - name: app\n";

async fn a_full_disk_under_the_state_directory_refuses_edits_and_loses_nothing(ws: Workspace) {
    if !may_mount("a_full_disk_under_the_state_directory_refuses_edits_and_loses_nothing") {
        return;
    }
    let _mount = Mount::tmpfs(&ws.state(), "256k");
    ws.write("state/projects/notes.yaml", NOTES);
    let server = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    let client = McpClient::connect(&server.url("/mcp/notes"), None).await;
    let app = client
        .call("get_port", json!({"service": "app"}))
        .await
        .expect("get_port app");
    let filler = fill(&ws.state());
    let before = snapshot(&ws.state());
    let ports_before = ports(&ws).await;

    // Declaring a service edits the state file: refused, saying why, and nothing is written.
    let e = client
        .call("get_port", json!({"service": "worker"}))
        .await
        .expect_err("no room for the edit");
    assert!(e.contains("No space left on device"), "{e}");
    assert!(e.contains("notes.yaml"), "{e}");
    assert_eq!(
        snapshot(&ws.state()),
        before,
        "the state files are untouched"
    );
    assert!(temporaries(&ws.state()).is_empty());
    assert_eq!(
        ports(&ws).await,
        ports_before,
        "no port for a service not declared"
    );
    // `fmt` the same.
    std::fs::remove_file(&filler).unwrap();
    ws.write(
        "state/projects/notes.yaml",
        "name:   notes\nservices:\n  - name:   app\n",
    );
    let filler = fill(&ws.state());
    let before = snapshot(&ws.state());
    let out = ws.run(&["fmt"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("notes.yaml: No space left on device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&ws.state()), before);
    assert!(temporaries(&ws.state()).is_empty());

    // Room again: it works, and what was there is still there.
    std::fs::remove_file(&filler).unwrap();
    let worker = client
        .call("get_port", json!({"service": "worker"}))
        .await
        .expect("get_port worker once there is room");
    assert_ne!(worker["port"], app["port"]);
    let again = client
        .call("get_port", json!({"service": "app"}))
        .await
        .unwrap();
    assert_eq!(again["port"], app["port"], "the allocation was kept");
}

async fn a_full_disk_under_a_claude_md_fails_the_change_and_keeps_the_file(ws: Workspace) {
    if !may_mount("a_full_disk_under_a_claude_md_fails_the_change_and_keeps_the_file") {
        return;
    }
    let dir = ws.path().join("work/notes");
    let _mount = Mount::tmpfs(&dir, "256k");
    let project = |text: &str| {
        ws.write(
            "state/projects/notes.yaml",
            &format!(
                "name: notes\npath: {}\ninstructions: {text}\nservices:\n  - name: app\n",
                dir.display()
            ),
        )
    };
    project("Run the tests first.");
    ws.ok(&["apply", "--auto-approve"], 0);
    let claude = dir.join("CLAUDE.md");
    let written = std::fs::read_to_string(&claude).unwrap();
    assert!(written.contains("Run the tests first."));

    let filler = fill(&dir);
    project("Prefer small commits.");
    let out = ws.run(&["apply", "--auto-approve"]);
    expect_code(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains(&format!(
            "cannot write {}: No space left on device",
            claude.display()
        )),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&claude).unwrap(),
        written,
        "the file is the old one, whole"
    );
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    // The plan still shows the change; with room again it is applied.
    ws.ok(&["plan", "--detailed-exitcode"], 2);
    std::fs::remove_file(&filler).unwrap();
    ws.ok(&["apply", "--auto-approve"], 0);
    assert!(
        std::fs::read_to_string(&claude)
            .unwrap()
            .contains("Prefer small commits.")
    );
    ws.ok(&["plan", "--detailed-exitcode"], 0);
}

async fn a_read_only_state_directory_refuses_edits_and_loses_nothing(ws: Workspace) {
    if !may_mount("a_read_only_state_directory_refuses_edits_and_loses_nothing") {
        return;
    }
    ws.write("state/projects/notes.yaml", NOTES);
    let server = Server::start(&ws, &["--no-auth", "--auto-apply"]).await;
    let client = McpClient::connect(&server.url("/mcp/notes"), None).await;
    let app = client
        .call("get_port", json!({"service": "app"}))
        .await
        .expect("get_port app");
    let before = snapshot(&ws.state());
    let ports_before = ports(&ws).await;
    let mount = Mount::read_only(&ws.state());

    let e = client
        .call("get_port", json!({"service": "worker"}))
        .await
        .expect_err("a read-only state directory takes no edit");
    assert!(e.contains("Read-only file system"), "{e}");
    let out = ws.run(&["fmt"]);
    // Already canonical: nothing to write, so nothing fails.
    expect_code(&out, 0);
    std::fs::write(ws.state().join("probe"), "x").expect_err("the mount is read-only");
    // Reading still works: plans, and ports that exist.
    ws.ok(&["plan", "--detailed-exitcode"], 0);
    let again = client
        .call("get_port", json!({"service": "app"}))
        .await
        .expect("an existing allocation is read");
    assert_eq!(again["port"], app["port"]);
    assert_eq!(snapshot(&ws.state()), before);
    assert_eq!(ports(&ws).await, ports_before);

    drop(mount);
    let worker = client
        .call("get_port", json!({"service": "worker"}))
        .await
        .expect("writable again");
    assert_ne!(worker["port"], app["port"]);
}

/// The SQLite database on a full disk: applies fail saying so and leave the registry whole (every
/// allocation in its block, none twice); secrets already stored stay readable; with room again the
/// next apply finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_sqlite_database_fails_clearly_and_loses_nothing() {
    if !may_mount("a_full_disk_under_the_sqlite_database_fails_clearly_and_loses_nothing") {
        return;
    }
    let db_dir = tempfile::tempdir().unwrap();
    let _mount = Mount::tmpfs(db_dir.path(), "8m");
    let db = db_dir.path().join("supervisor.db");
    let ws = Workspace::new(Some(format!("sqlite://{}", db.display())));
    let key = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
    let run = |args: &[&str], stdin: Option<&str>| -> Output {
        use std::io::Write;
        let mut child = ws
            .cmd()
            .env("SECRETS_ENCRYPTION_KEY", key)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    ws.write("state/projects/notes.yaml", NOTES);
    expect_code(&run(&["apply", "--auto-approve"], None), 0);
    expect_code(
        &run(
            &["secrets", "set", "project/notes/token"],
            Some("kept-value-1"),
        ),
        0,
    );

    // Much more to allocate than there is room for.
    for p in 0..40 {
        let mut text = format!("name: p{p:03}\nservices:\n");
        for s in 0..50 {
            text.push_str(&format!("  - name: s{s:02}\n"));
        }
        ws.write(&format!("state/projects/p{p:03}.yaml"), &text);
    }
    let filler = fill(db_dir.path());
    // Leave a little room, so the failure comes in the middle of the run.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(std::fs::metadata(&filler).unwrap().len() - 768 * 1024)
        .unwrap();
    let out = run(&["apply", "--auto-approve"], None);
    expect_code(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("database or disk is full"), "{text}");
    let partial = ports(&ws).await;
    let distinct: std::collections::HashSet<i32> = partial.iter().map(|p| p.2).collect();
    assert_eq!(distinct.len(), partial.len(), "no port twice");
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let blocks = store.port_registry("default").await.unwrap().ranges.len();
    drop(store);
    let applied = blocks - 1 + partial.len() - 1;
    assert!(
        applied > 0 && applied < 2040,
        "the disk filled up during the run: {applied} of 2040 changes applied\n{text}"
    );
    eprintln!(
        "the disk filled up after {applied} of 2040 changes ({blocks} blocks, {} ports)",
        partial.len()
    );
    // Secrets: a read cannot be audited, so it is refused (never released unrecorded); a write is
    // refused; both say why.
    let got = run(&["secrets", "get", "project/notes/token"], None);
    expect_code(&got, 1);
    assert!(
        stderr(&got).contains("could not be recorded in the audit log")
            && stderr(&got).contains("database or disk is full"),
        "{}",
        stderr(&got)
    );
    assert!(!stdout(&got).contains("kept-value-1"));
    let out = run(&["secrets", "set", "project/notes/other"], Some("v2"));
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("database or disk is full"),
        "{}",
        stderr(&out)
    );

    // Room again: the next apply finishes (the interrupted run is recorded), nothing lost.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    expect_code(&run(&["apply", "--auto-approve"], None), 0);
    expect_code(&run(&["plan", "--detailed-exitcode"], None), 0);
    let all = ports(&ws).await;
    assert_eq!(all.len(), 2000 + 1);
    for p in &partial {
        assert!(all.contains(p), "{p:?} kept its port");
    }
    let got = run(&["secrets", "get", "project/notes/token"], None);
    assert_eq!(stdout(&got).trim_end(), "kept-value-1");
    expect_code(&run(&["secrets", "get", "project/notes/other"], None), 1);
}
