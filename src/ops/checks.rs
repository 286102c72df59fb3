//! `run_checks`: runs a project's declared checks — and nothing else — in the project's folder, and
//! records each outcome, so "done" is verifiable.
//!
//! Guarantees: only a command that is exactly one of the project's `checks:` runs (an undeclared
//! command, a variant, a suffix or an extra argument is refused before anything starts); it runs through
//! `sh -c` in the project's `path` with a clean environment (no key, no database URL: `PATH`, `HOME`,
//! `LANG` and the project's name only), stdin closed, in its own process group, killed with the whole
//! group at the timeout; its output is capped (the tail is kept) and passed through the credential
//! detector before it is stored or returned. Per project, checks run one at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::{OpsError, Runtime, Visibility};
use crate::secrets::detector;
use crate::store::checks::CheckRun;

/// How long one check may run.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// How much output is kept (the tail).
pub const OUTPUT_CAP: usize = 16 * 1024;

/// Which checks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    All,
    /// One declared check, by its exact text.
    Exactly(String),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ChecksReport {
    pub project: String,
    /// Every check that ran passed.
    pub passed: bool,
    pub runs: Vec<CheckRun>,
}

/// One lock per project: its checks run one at a time (they share a working copy).
fn project_lock(project: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    locks
        .get_or_insert_with(HashMap::new)
        .entry(project.to_string())
        .or_default()
        .clone()
}

/// Runs `which` of `project`'s declared checks.
pub async fn run_checks(
    rt: &Runtime,
    visibility: &Visibility,
    project: Option<String>,
    which: Which,
    task_id: Option<String>,
    actor: &str,
    timeout: Duration,
) -> Result<ChecksReport, OpsError> {
    let desired = rt.desired().await;
    let project = visibility.known(&desired, project)?;
    let p = &desired.projects[&project];
    // The task these checks verify: one of this project's timers (checked before anything runs).
    if let Some(id) = &task_id {
        let id = crate::timing::identifier("task_id", id)
            .map_err(|e| OpsError::InvalidArgument(e.to_string()))?;
        let task = rt.store.get_task(&id).await?;
        if task.is_none_or(|t| t.project.as_deref() != Some(project.as_str())) {
            return Err(OpsError::InvalidArgument(format!(
                "there is no task `{id}` in project `{project}` (pass the task_id start_task_timer returned)"
            )));
        }
    }
    let commands: Vec<String> = match &which {
        Which::All => p.checks.clone(),
        Which::Exactly(c) => {
            if !p.checks.iter().any(|d| d == c) {
                return Err(OpsError::InvalidArgument(format!(
                    "`{}` is not a declared check of project `{project}`; run_checks runs only these, exactly as written: {}",
                    c.chars().take(200).collect::<String>(),
                    if p.checks.is_empty() {
                        "(none declared)".to_string()
                    } else {
                        p.checks
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
            vec![c.clone()]
        }
    };
    if commands.is_empty() {
        return Err(OpsError::InvalidArgument(format!(
            "project `{project}` declares no checks (add `checks:` to its state file)"
        )));
    }
    let dir = p.path.clone().ok_or_else(|| {
        OpsError::InvalidArgument(format!(
            "project `{project}` has no path: there is nowhere to run its checks"
        ))
    })?;
    let exists = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || d.is_dir())
            .await
            .unwrap_or(false)
    };
    if !exists {
        return Err(OpsError::InvalidArgument(format!(
            "{} (the path of project `{project}`) does not exist on this host",
            dir.display()
        )));
    }
    let lock = project_lock(&project);
    let _one_at_a_time = lock.lock().await;
    let mut runs = Vec::with_capacity(commands.len());
    for command in commands {
        let started_at = Utc::now();
        let started = Instant::now();
        let outcome = run_one(&command, &dir, &project, timeout).await;
        let mut run = CheckRun {
            id: 0,
            project: project.clone(),
            command,
            task_id: task_id.clone(),
            passed: outcome.exit_code == Some(0) && !outcome.timed_out,
            exit_code: outcome.exit_code,
            timed_out: outcome.timed_out,
            duration_ms: started.elapsed().as_millis() as i64,
            output: detector::redact(&outcome.output).into_owned(),
            actor: actor.to_string(),
            started_at,
        };
        run.id = rt.store.record_check_run(&run).await?;
        runs.push(run);
    }
    Ok(ChecksReport {
        passed: runs.iter().all(|r| r.passed),
        project,
        runs,
    })
}

struct Outcome {
    exit_code: Option<i32>,
    timed_out: bool,
    output: String,
}

async fn run_one(command: &str, dir: &PathBuf, project: &str, timeout: Duration) -> Outcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1; {command}"))
        .current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("LANG", "C.UTF-8")
        .env("SUPERVISOR_PROJECT", project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                exit_code: None,
                timed_out: false,
                output: format!("the check could not start: {e}"),
            };
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let read = async {
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0usize;
        if let Some(out) = stdout.as_mut() {
            let mut buf = [0u8; 8192];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > OUTPUT_CAP {
                            tail.drain(..tail.len() - OUTPUT_CAP);
                        }
                    }
                }
            }
        }
        (tail, total)
    };
    let result = tokio::time::timeout(timeout, async {
        let (tail, total) = read.await;
        let status = child.wait().await;
        (tail, total, status)
    })
    .await;
    match result {
        Ok((tail, total, status)) => Outcome {
            exit_code: status.ok().and_then(|s| s.code()),
            timed_out: false,
            output: tail_text(&tail, total),
        },
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid).await;
            }
            let _ = child.kill().await;
            Outcome {
                exit_code: None,
                timed_out: true,
                output: format!(
                    "the check did not finish within {} s and was stopped",
                    timeout.as_secs()
                ),
            }
        }
    }
}

/// The kept tail as text: bytes that are not UTF-8, and NUL characters (which no database keeps in
/// text), become U+FFFD.
fn tail_text(tail: &[u8], total: usize) -> String {
    let text = String::from_utf8_lossy(tail).replace('\0', "\u{fffd}");
    if total > tail.len() {
        format!(
            "[… {} earlier bytes of output not kept]\n{text}",
            total - tail.len()
        )
    } else {
        text
    }
}

/// Stops the check and everything it started (its process group).
async fn kill_group(pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_no_nul_and_no_broken_utf8() {
        // Found by tests/mcp_hostile.rs: a check printing a NUL byte could not be recorded on
        // PostgreSQL (its text holds no NUL).
        assert_eq!(tail_text(b"ok\0\xffdone", 8), "ok\u{fffd}\u{fffd}done");
        assert_eq!(
            tail_text(b"end", 10),
            "[… 7 earlier bytes of output not kept]\nend"
        );
    }
}
