//! The one apply flow, for every face: under the apply lock, mark interrupted runs, plan from a fresh
//! observation, check a saved plan's freshness, ask for approval, check safety, apply with a journal.
//!
//! What differs between faces is a [`ApplyHooks`] value: the CLI prints the plan and asks on the
//! terminal; `serve --auto-apply`, the MCP `apply_plan` tool and `get_port` use [`Unattended`], which
//! applies a plan only when it needs nobody's consent (no mass delete, nothing disruptive).
//!
//! Guarantees: the lock is held from the observation to the last change, so nothing can change the
//! registry between what the plan shows and what is done; it is released on every path (an early
//! return, an error, a refusal); a plan with errors is never applied.

use std::time::Duration;

use async_trait::async_trait;

use super::OpsError;
use super::runtime::{Runtime, git_revision};
use crate::engine::{ApplyEvent, ApplyOptions, ApplyReport, Engine, Plan, Scope};

/// What to apply and how.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub scope: Scope,
    /// A plan saved by `plan --out`: refused when a fresh plan differs.
    pub saved: Option<Plan>,
    /// Allow mass deletes (more than 30 % of a kind with at least 10 managed objects).
    pub force: bool,
    /// Allow disruptive changes (port moves, VM resizes) without asking.
    pub allow_disruptive: bool,
    /// Hostnames whose existing, unmanaged DNS records and ingress rules may be adopted.
    pub adopt: Vec<String>,
    /// Who applies: `cli:<user>`, `serve:auto-apply`, `mcp:<token id>`.
    pub actor: String,
    /// How long to wait for another apply holding the lock.
    pub lock_timeout: Duration,
}

impl ApplyRequest {
    /// An unattended apply of `scope`: nothing forced, nothing disruptive.
    pub fn unattended(scope: Scope, actor: impl Into<String>) -> Self {
        ApplyRequest {
            scope,
            saved: None,
            force: false,
            allow_disruptive: false,
            adopt: Vec::new(),
            actor: actor.into(),
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// A face's answer to "apply this plan?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub approved: bool,
    /// The plan's disruptive changes were accepted too.
    pub allow_disruptive: bool,
}

/// Why a plan was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The plan has errors (listed); nothing can be applied until they are fixed.
    PlanHasErrors(String),
    /// The face declined (the user did not answer `yes`).
    Declined,
    /// It needs someone's consent: `--force` for a mass delete, `--allow-disruptive` or an interactive
    /// yes for disruptive changes.
    NeedsConsent(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PlanHasErrors(list) => {
                write!(f, "the plan has errors and cannot be applied:\n{list}")
            }
            Refusal::Declined => f.write_str("apply cancelled"),
            Refusal::NeedsConsent(why) => f.write_str(why),
        }
    }
}

pub enum ApplyOutcome {
    /// The fresh plan was empty.
    NothingToDo {
        plan: Plan,
    },
    Refused {
        plan: Plan,
        refusal: Refusal,
    },
    /// The apply ran; `report.failed` says whether every change went through.
    Applied {
        plan: Plan,
        report: ApplyReport,
    },
}

impl ApplyOutcome {
    pub fn plan(&self) -> &Plan {
        match self {
            ApplyOutcome::NothingToDo { plan }
            | ApplyOutcome::Refused { plan, .. }
            | ApplyOutcome::Applied { plan, .. } => plan,
        }
    }
}

/// What a face does during an apply.
#[async_trait]
pub trait ApplyHooks: Send {
    /// The fresh plan, before anything is decided (the CLI prints it here).
    fn planned(&mut self, _engine: &Engine, _plan: &Plan) {}
    /// Whether to go ahead with a non-empty plan without errors. Default: yes, but nothing disruptive.
    async fn approve(&mut self, _plan: &Plan) -> Result<Approval, OpsError> {
        Ok(Approval {
            approved: true,
            allow_disruptive: false,
        })
    }
    /// Each change as it starts, finishes or fails.
    fn progress(&mut self, _event: ApplyEvent<'_>) {}
}

/// Applies only what needs nobody's consent; says nothing.
pub struct Unattended;

impl ApplyHooks for Unattended {}

/// Plans and applies `request` from the runtime's desired state.
pub async fn apply(
    rt: &Runtime,
    request: ApplyRequest,
    hooks: &mut dyn ApplyHooks,
) -> Result<ApplyOutcome, OpsError> {
    let _serial = rt.apply_serial.lock().await;
    let desired = rt.desired().await;
    // Building providers reads their credentials: before the lock, so a slow vault never holds it.
    let engine = rt.engine(&desired, &request.actor, &request.adopt).await?;
    let lock = rt.store.lock_apply(request.lock_timeout).await?;
    let outcome = locked(rt, &engine, &desired, request, hooks).await;
    // Whatever happened (an apply that failed half-way changed something too), ports are re-read.
    rt.ports.invalidate();
    lock.release().await;
    outcome
}

async fn locked(
    rt: &Runtime,
    engine: &Engine,
    desired: &crate::state::Desired,
    request: ApplyRequest,
    hooks: &mut dyn ApplyHooks,
) -> Result<ApplyOutcome, OpsError> {
    let interrupted = rt.store.mark_interrupted_runs().await?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "a previous apply was interrupted; re-planning from reality"
        );
    }
    let plan = engine.plan(desired, &request.scope).await?;
    if let Some(saved) = &request.saved {
        Engine::check_fresh(saved, &plan)?;
    }
    hooks.planned(engine, &plan);
    if !plan.errors.is_empty() {
        let list = plan
            .errors
            .iter()
            .map(|e| format!("  - {}", e.message))
            .collect::<Vec<_>>()
            .join("\n");
        return Ok(ApplyOutcome::Refused {
            plan,
            refusal: Refusal::PlanHasErrors(list),
        });
    }
    if plan.is_empty() {
        return Ok(ApplyOutcome::NothingToDo { plan });
    }
    let approval = hooks.approve(&plan).await?;
    if !approval.approved {
        return Ok(ApplyOutcome::Refused {
            plan,
            refusal: Refusal::Declined,
        });
    }
    let options = ApplyOptions {
        force: request.force,
        allow_disruptive: request.allow_disruptive || approval.allow_disruptive,
        actor: request.actor.clone(),
        git_revision: git_revision(&desired.dir).await,
        stop: Some(rt.shutdown.clone()),
    };
    if let Err(e) = engine.check_safety(&plan, &options) {
        return Ok(ApplyOutcome::Refused {
            plan,
            refusal: Refusal::NeedsConsent(e.to_string()),
        });
    }
    let report = engine
        .apply(&plan, &options, |event| hooks.progress(event))
        .await?;
    Ok(ApplyOutcome::Applied { plan, report })
}
