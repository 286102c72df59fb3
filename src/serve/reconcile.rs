//! The reconcile loop. Level-triggered: a file event or an MCP edit only *wakes* the loop, which then
//! re-reads `state/` and re-plans from scratch; a periodic resync catches drift nobody announced.
//! One run at a time; `auto_apply` applies safe plans and leaves unsafe ones for a human (visible in
//! `/health`, `status` and `project_status`).
//!
//! Errors choose the delay (kube-rs's error policy): an API's `Retry-After` is honoured as given;
//! failures that pass by themselves (server errors, timeouts, the database) back off from 1 s doubling
//! to 5 min; failures that need someone to change something (authentication, a rejected request,
//! invalid state) back off from 30 s — a file change wakes the loop at once anyway.
//!
//! Several `serve` processes may share one PostgreSQL: only the leader (the holder of an advisory lock
//! on its own connection) reconciles; the others retry leadership every 2 s, so a dead leader is
//! replaced within seconds. The leader checks its lock's session as often: when the database
//! restarts under it, it steps down and competes again once the database is back. All of them serve MCP, and all of them reload `state/` on every file change
//! (and at each leadership retry), so every process answers from the current desired state within
//! seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use notify_debouncer_full::notify::RecursiveMode;
use tokio_util::sync::CancellationToken;

use crate::engine::{RetryHint, Scope};
use crate::ops::{self, ApplyOutcome, ApplyRequest, Refusal, Runtime, Unattended};
use crate::store::ApplyLock;

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub auto_apply: bool,
    pub resync: Duration,
    pub debounce: Duration,
    pub leader_retry: Duration,
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_NEEDS_CHANGE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The delay before the next run after a failure: chosen by the error when it says, else doubling from
/// where its kind starts. An API's `Retry-After` is never shortened (retrying sooner would only be
/// refused again, and counts against the caller), however long it is.
fn next_delay(previous: Option<Duration>, hint: Option<RetryHint>) -> Duration {
    match hint {
        Some(RetryHint::After(d)) => d.max(BACKOFF_START),
        Some(RetryHint::NeedsChange) => previous
            .map_or(BACKOFF_NEEDS_CHANGE, |b| (b * 2).max(BACKOFF_NEEDS_CHANGE))
            .min(BACKOFF_MAX),
        Some(RetryHint::Soon) | None => previous.map_or(BACKOFF_START, |b| b * 2).min(BACKOFF_MAX),
    }
}

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
                    // Every process reloads (followers answer MCP from it); the leader also
                    // reconciles.
                    let rt = rt.clone();
                    handle.spawn(async move {
                        rt.reload().await;
                        rt.wake.notify_one();
                    });
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
/// and apply when allowed. Returns `Err(hint)` when it failed (the hint chooses the retry delay).
pub async fn run_once(rt: &Runtime, auto_apply: bool) -> Result<(), Option<RetryHint>> {
    let started = Instant::now();
    rt.reload().await;
    let desired_error = rt.desired_error().await;
    let outcome = if auto_apply {
        let request = ApplyRequest::unattended(Scope::default(), "serve:auto-apply");
        ops::apply(rt, request, &mut Unattended)
            .await
            .and_then(|outcome| match outcome {
                ApplyOutcome::NothingToDo { .. } => Ok((None, Vec::new(), "ok")),
                ApplyOutcome::Refused { plan, refusal } => {
                    let state = match refusal {
                        Refusal::PlanHasErrors(_) => "blocked",
                        _ => "waiting",
                    };
                    Ok((Some(plan.summary), vec![refusal.to_string()], state))
                }
                ApplyOutcome::Applied { report, .. } => match report.failed {
                    Some(message) => Err(ops::OpsError::ApplyFailed {
                        message,
                        retry: report.retry,
                    }),
                    None => Ok((None, Vec::new(), "ok")),
                },
            })
    } else {
        rt.plan(&Scope::default(), "serve").await.map(|plan| {
            if !plan.errors.is_empty() {
                let list = plan.errors.iter().map(|e| e.message.clone()).collect();
                (Some(plan.summary), list, "blocked")
            } else if plan.is_empty() {
                (None, Vec::new(), "ok")
            } else {
                (
                    Some(plan.summary),
                    vec![
                        "auto_apply is off: run `supervisor apply` (or the apply_plan tool)"
                            .to_string(),
                    ],
                    "waiting",
                )
            }
        })
    };
    let took = started.elapsed();
    rt.metrics
        .reconcile(took, outcome.is_ok() && desired_error.is_none());
    let mut status = rt.status.write().await;
    status.runs += 1;
    status.last_run_at = Some(Utc::now());
    let result = match outcome {
        Ok((pending, waiting, state)) => {
            status.pending = pending;
            status.last_result = Some(state.into());
            status.waiting_for_human = waiting;
            status.last_error = desired_error.as_ref().map(|e| e.message.clone());
            if desired_error.is_some() {
                status.errors += 1;
                status.last_result = Some("invalid_state".into());
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "reconcile failed");
            status.errors += 1;
            status.last_result = Some("error".into());
            status.last_error = Some(e.to_string());
            Err(e.retry_hint())
        }
    };
    tracing::info!(
        took_ms = took.as_millis() as u64,
        result = status.last_result.as_deref().unwrap_or(""),
        "reconciled"
    );
    result
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
            // A follower keeps its desired state current even when no file event arrives (another
            // host's checkout, a filesystem without notifications).
            Ok(None) => {
                rt.reload().await;
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
        if !first {
            // While waiting, the lock is checked every `leader_retry`: a leader whose session died
            // (a database restart) stops calling itself leader within seconds, not at the next
            // resync, and another process may take over.
            let woke = tokio::select! {
                woke = next_wake(rt, cfg, backoff, shutdown) => woke,
                () = session_lost(&mut lock, cfg.leader_retry) => return true,
            };
            if !woke {
                lock.release().await;
                return false;
            }
        }
        first = false;
        if !lock.is_alive().await {
            return true;
        }
        match run_once(rt, cfg.auto_apply).await {
            Ok(()) => {
                backoff = None;
                rt.status.write().await.retry_in_seconds = None;
            }
            Err(hint) => {
                let next = next_delay(backoff, hint);
                tracing::info!(
                    retry_in_s = next.as_secs(),
                    "backing off after a failed reconcile"
                );
                rt.status.write().await.retry_in_seconds = Some(next.as_secs());
                backoff = Some(next);
            }
        }
    }
}

/// Returns once the leadership lock is no longer held (checked every `every`).
async fn session_lost(lock: &mut ApplyLock, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if !lock.is_alive().await {
            tracing::warn!("the leadership lock's database session is gone");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_choose_the_delay() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(None, Some(RetryHint::After(s(17)))), s(17));
        assert_eq!(
            next_delay(Some(s(4)), Some(RetryHint::After(s(3600)))),
            s(3600),
            "a Retry-After longer than the backoff cap is honoured, not shortened"
        );
        assert_eq!(
            next_delay(None, Some(RetryHint::After(Duration::ZERO))),
            BACKOFF_START
        );
        assert_eq!(next_delay(None, Some(RetryHint::Soon)), s(1));
        assert_eq!(next_delay(Some(s(8)), Some(RetryHint::Soon)), s(16));
        assert_eq!(next_delay(None, None), s(1));
        assert_eq!(next_delay(None, Some(RetryHint::NeedsChange)), s(30));
        assert_eq!(next_delay(Some(s(2)), Some(RetryHint::NeedsChange)), s(30));
        assert_eq!(
            next_delay(Some(s(200)), Some(RetryHint::NeedsChange)),
            BACKOFF_MAX
        );
    }
}
