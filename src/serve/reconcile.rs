//! The reconcile loop. Level-triggered: a file event or an MCP edit only *wakes* the loop, which then
//! re-reads `state/` and re-plans from scratch; a periodic resync catches drift nobody announced.
//! One run at a time; errors back off exponentially (1 s doubling to 5 min); `auto_apply` applies safe
//! plans and leaves unsafe ones for a human (visible in `/health`, `status` and `project_status`).
//!
//! Several `serve` processes may share one PostgreSQL: only the leader (the holder of an advisory lock
//! on its own connection) reconciles; the others retry leadership every 2 s, so a dead leader is
//! replaced within seconds. All of them serve MCP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use notify_debouncer_full::notify::RecursiveMode;
use tokio_util::sync::CancellationToken;

use super::runtime::Runtime;
use crate::engine::Scope;
use crate::store::ApplyLock;

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub auto_apply: bool,
    pub resync: Duration,
    pub debounce: Duration,
    pub leader_retry: Duration,
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Watches `state/` and wakes the loop on every change (debounced). The returned guard stops watching
/// when dropped.
pub fn watch(runtime: Arc<Runtime>, debounce: Duration) -> Result<impl Drop, String> {
    let rt = runtime.clone();
    let handle = tokio::runtime::Handle::current();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        debounce,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = result {
                // Reading the files (as every reconcile does) produces access events: only changes count.
                if events
                    .iter()
                    .any(|e| !e.kind.is_access() && !e.paths.iter().all(|p| is_noise(p)))
                {
                    let rt = rt.clone();
                    handle.spawn(async move { rt.wake.notify_one() });
                }
            }
        },
    )
    .map_err(|e| format!("cannot watch {}: {e}", runtime.settings.state_dir.display()))?;
    debouncer
        .watch(&runtime.settings.state_dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", runtime.settings.state_dir.display()))?;
    Ok(debouncer)
}

/// Editors' swap files and our own temporary files do not wake the loop.
fn is_noise(path: &std::path::Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".tmp")
}

/// One reconcile: reload desired state (keeping the last good one if the files are invalid), plan,
/// and apply when allowed. Returns whether it succeeded (for backoff).
pub async fn run_once(rt: &Runtime, auto_apply: bool) -> bool {
    let started = Instant::now();
    rt.reload().await;
    let desired_error = rt.desired_error().await;
    let actor = if auto_apply {
        "serve:auto-apply"
    } else {
        "serve"
    };
    let outcome = if auto_apply {
        rt.apply_safe(&Scope::default(), actor)
            .await
            .map(|(plan, refused)| match refused {
                Some(why) => (Some(plan.summary), vec![why]),
                None => (None, Vec::new()),
            })
    } else {
        rt.plan(&Scope::default(), actor).await.map(|plan| {
            if plan.is_empty() {
                (None, Vec::new())
            } else {
                (
                    Some(plan.summary),
                    vec![
                        "auto_apply is off: run `supervisor apply` (or the apply_plan tool)"
                            .to_string(),
                    ],
                )
            }
        })
    };
    let ok = outcome.is_ok();
    let took = started.elapsed();
    rt.metrics.reconcile(took, ok && desired_error.is_none());
    let mut status = rt.status.write().await;
    status.runs += 1;
    status.last_run_at = Some(Utc::now());
    match outcome {
        Ok((pending, waiting)) => {
            status.pending = pending;
            status.last_result = Some(if waiting.is_empty() {
                "ok".into()
            } else {
                "waiting".into()
            });
            status.waiting_for_human = waiting;
            status.last_error = desired_error.as_ref().map(|e| e.message.clone());
            if desired_error.is_some() {
                status.errors += 1;
                status.last_result = Some("invalid_state".into());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reconcile failed");
            status.errors += 1;
            status.last_result = Some("error".into());
            status.last_error = Some(e.to_string());
        }
    }
    tracing::info!(
        took_ms = took.as_millis() as u64,
        result = status.last_result.as_deref().unwrap_or(""),
        "reconciled"
    );
    ok
}

/// Waits for the next reason to reconcile: a wake-up (then lets the burst settle), the resync interval,
/// or shutdown (returns false).
async fn next_wake(
    rt: &Runtime,
    cfg: &LoopConfig,
    delay: Option<Duration>,
    shutdown: &CancellationToken,
) -> bool {
    if let Some(d) = delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => return true,
            _ = shutdown.cancelled() => return false,
        }
    }
    tokio::select! {
        _ = rt.wake.notified() => {}
        _ = tokio::time::sleep(cfg.resync) => return true,
        _ = shutdown.cancelled() => return false,
    }
    // Coalesce a burst of edits into one run.
    tokio::select! {
        _ = tokio::time::sleep(cfg.debounce) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// The loop: take leadership, then reconcile on every wake-up until shutdown or loss of leadership.
pub async fn run(rt: Arc<Runtime>, cfg: LoopConfig, shutdown: CancellationToken) {
    loop {
        let lock = match acquire_leadership(&rt, &cfg, &shutdown).await {
            Some(lock) => lock,
            None => return,
        };
        tracing::info!("leading: this process reconciles");
        let lost = lead(&rt, &cfg, &shutdown, lock).await;
        rt.status.write().await.leader = false;
        if !lost {
            return;
        }
        tracing::warn!("lost leadership; retrying");
    }
}

async fn acquire_leadership(
    rt: &Runtime,
    cfg: &LoopConfig,
    shutdown: &CancellationToken,
) -> Option<ApplyLock> {
    loop {
        match rt.store.try_lead().await {
            Ok(Some(lock)) => {
                rt.status.write().await.leader = true;
                return Some(lock);
            }
            Ok(None) => {
                rt.status
                    .write()
                    .await
                    .last_result
                    .get_or_insert_with(|| "not_leader".into());
            }
            Err(e) => tracing::warn!(error = %e, "cannot try leadership"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.leader_retry) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Reconciles while leading. Returns true when leadership was lost (false on shutdown).
async fn lead(
    rt: &Runtime,
    cfg: &LoopConfig,
    shutdown: &CancellationToken,
    mut lock: ApplyLock,
) -> bool {
    let mut backoff: Option<Duration> = None;
    let mut first = true;
    loop {
        if !first && !next_wake(rt, cfg, backoff, shutdown).await {
            lock.release().await;
            return false;
        }
        first = false;
        if !lock.is_alive().await {
            return true;
        }
        if run_once(rt, cfg.auto_apply).await {
            backoff = None;
        } else {
            let next = backoff.map_or(BACKOFF_START, |b| (b * 2).min(BACKOFF_MAX));
            tracing::info!(
                retry_in_s = next.as_secs(),
                "backing off after a failed reconcile"
            );
            backoff = Some(next);
        }
    }
}
