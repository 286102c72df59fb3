//! The plan/apply engine: observe reality through providers, diff it against desired state into an
//! ordered [`Plan`], and carry the plan out change by change with a journal.
//!
//! Guarantees:
//! * **Level-triggered.** A plan is always computed from scratch (desired state + fresh observation); the
//!   engine never acts on *why* it was asked. Running plan/apply any number of times is safe.
//! * **Ordered.** Providers run in a fixed order (ports → tunnel → dns → vm → api_key → instructions →
//!   secrets): ingress points at ports, DNS at the tunnel, instructions mention both.
//! * **Observable.** A long change (a VM resize) reports its steps through [`RunContext::step`]; they
//!   reach the caller's progress callback as [`ApplyEvent::Step`] while the change runs.
//! * **Journaled.** Before a change is carried out its intent is written to the journal, afterwards its
//!   outcome. A crash between the two leaves a `started` entry that the next apply marks interrupted;
//!   since every plan re-observes reality, the next run converges without duplicating anything.
//! * **Safe.** A plan with errors is never applied. Deleting more than 30 % of the managed objects of a
//!   kind (when there are at least [`MASS_DELETE_MIN`]) or all of them needs `force`; disruptive changes
//!   need `allow_disruptive`. Saved plans are refused when desired state or reality changed since.
//!
//! Caveats: changes are applied sequentially and the first failure stops the run (later changes may
//! depend on it); the journal shows what was done.
//!
//! The engine knows nothing of the terminal, MCP or HTTP serving: callers render plans and events.

pub mod plan;
pub mod render;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use sha2::{Digest, Sha256};

pub use plan::{Action, Change, Notice, Plan, Scope, Summary};

use crate::clients::ApiError;
use crate::state::Desired;
use crate::store::{ApplyRun, RunStatus, Store, StoreError};

/// The mass-delete rules (more than 30 %, or all) apply to kinds with at least this many managed objects.
pub const MASS_DELETE_MIN: usize = 10;
pub const MASS_DELETE_FRACTION: f64 = 0.30;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A remote API call failed; the typed error says whether and when to try again.
    #[error("{}{source}", context.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Api {
        /// What was being done (`dns/api.example.com`), when the API error alone does not say.
        context: Option<String>,
        #[source]
        source: Box<ApiError>,
    },
    #[error("{0}")]
    Conflict(String),
    /// A change's payload does not parse as the provider's change type (a corrupt or foreign plan).
    #[error("{address}: the change cannot be read ({detail}); run `supervisor plan` again")]
    Payload { address: String, detail: String },
    #[error("{0}")]
    Failed(String),
    /// A Google Cloud call failed; `context` says what the provider was doing (`vm/host-1: stop`).
    /// The typed error stays available (status, operation error codes, `Retry-After`).
    #[error("{context}: {source}")]
    Google {
        context: String,
        #[source]
        source: Box<crate::clients::google::GoogleError>,
    },
}

/// One step of a long change (a VM resize: stop, wait, set machine type, start, confirm), reported
/// while the change runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// A short machine-readable name: `stop`, `set_machine_type`, `start`, `confirm`, `rollback`.
    pub name: String,
    /// One line for people.
    pub detail: String,
}

/// What a provider knows of the apply run a change is carried out in: the run's id (to derive
/// idempotency keys such as Compute Engine `requestId`s), who applies, and where to report steps.
pub struct RunContext {
    run_id: String,
    actor: String,
    steps: tokio::sync::mpsc::UnboundedSender<Step>,
}

impl RunContext {
    /// A context whose steps go to `steps` (the engine's, or a test's).
    pub fn new(run_id: &str, actor: &str, steps: tokio::sync::mpsc::UnboundedSender<Step>) -> Self {
        RunContext {
            run_id: run_id.to_string(),
            actor: actor.to_string(),
            steps,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Who applies (`cli:<user>`, `serve:auto-apply`).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Reports a step of `address` (logged at info, and passed to the apply's progress callback).
    pub fn step(&self, address: &str, name: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(run = %self.run_id, address, step = name, "{detail}");
        let _ = self.steps.send(Step {
            name: name.to_string(),
            detail,
        });
    }
}

impl From<ApiError> for ProviderError {
    fn from(source: ApiError) -> Self {
        ProviderError::Api {
            context: None,
            source: Box::new(source),
        }
    }
}

impl ProviderError {
    /// The same error, naming what was being done (an address) when it is an API error.
    pub fn context(self, what: impl Into<String>) -> Self {
        match self {
            ProviderError::Api { source, .. } => ProviderError::Api {
                context: Some(what.into()),
                source,
            },
            ProviderError::Failed(m) => ProviderError::Failed(format!("{}: {m}", what.into())),
            other => other,
        }
    }

    /// How to retry: after the API's `Retry-After`; soon for what passes by itself (server errors,
    /// timeouts, a database hiccup); not until something changes for the rest (authentication,
    /// rejected requests, conflicts, corrupt plans).
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            ProviderError::Api { source, .. } => api_retry_hint(source),
            ProviderError::Google { source, .. } => {
                use crate::clients::google::GoogleError;
                use crate::clients::google::operations::OperationError;
                match source.as_ref() {
                    GoogleError::Api(e)
                    | GoogleError::Auth(crate::clients::google::auth::AuthError::Api(e)) => {
                        api_retry_hint(e)
                    }
                    // A long operation may still finish; a zone without capacity may get some back.
                    GoogleError::Operation(OperationError::TimedOut { .. }) => RetryHint::Soon,
                    GoogleError::Operation(e) if e.is_capacity_or_quota() => RetryHint::Soon,
                    _ => RetryHint::NeedsChange,
                }
            }
            ProviderError::Store(_) => RetryHint::Soon,
            ProviderError::Conflict(_)
            | ProviderError::Payload { .. }
            | ProviderError::Failed(_) => RetryHint::NeedsChange,
        }
    }
}

fn api_retry_hint(e: &ApiError) -> RetryHint {
    if let Some(d) = e.retry_after() {
        return RetryHint::After(d);
    }
    match e {
        ApiError::RateLimited { .. }
        | ApiError::Server { .. }
        | ApiError::Transport { .. }
        | ApiError::OutcomeUnknown { .. } => RetryHint::Soon,
        _ => RetryHint::NeedsChange,
    }
}

/// What an error says about trying again, for the reconcile loop (errors choose the delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The remote asked to wait this long (HTTP 429 `Retry-After`).
    After(std::time::Duration),
    /// Likely to pass by itself: retry soon, backing off.
    Soon,
    /// Fails the same way until someone changes something: retry rarely.
    NeedsChange,
}

/// Reads a change's `before`/`after` payload as the provider's own change type. A payload that does
/// not parse is an error naming the address, never a default value.
pub fn payload<T: serde::de::DeserializeOwned>(
    change: &Change,
    value: Option<&serde_json::Value>,
) -> Result<T, ProviderError> {
    let value = value.ok_or_else(|| ProviderError::Payload {
        address: change.address.clone(),
        detail: "the payload is missing".into(),
    })?;
    serde_json::from_value(value.clone()).map_err(|e| ProviderError::Payload {
        address: change.address.clone(),
        detail: e.to_string(),
    })
}

/// Serialises a provider's change payload into a plan.
pub fn to_payload<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// What providers planned earlier in the same plan offer to later ones, keyed by type: the ports
/// provider offers each service's port as it will be once the plan is applied ([`crate::providers::ports::PlannedPorts`]),
/// which tunnel ingress (and instructions, and the status page) point at — so no provider re-runs
/// another's diff.
#[derive(Clone, Default)]
pub struct Outputs(
    std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
);

impl Outputs {
    pub fn insert<T: std::any::Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(std::any::TypeId::of::<T>(), Arc::new(value));
    }

    pub fn get<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.0
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    fn extend(&mut self, other: Outputs) {
        self.0.extend(other.0);
    }
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outputs({} values)", self.0.len())
    }
}

/// Outputs are derived from the plan's own observation: two plans are equal whatever they hold.
impl PartialEq for Outputs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What one provider saw and wants to change.
#[derive(Debug, Clone, Default)]
pub struct ProviderPlan {
    pub changes: Vec<Change>,
    pub warnings: Vec<Notice>,
    pub errors: Vec<Notice>,
    /// A stable digest of the observation (for stale-plan detection).
    pub fingerprint: String,
    /// How many objects of this kind the supervisor manages now (for the mass-delete rule).
    pub managed: usize,
    /// Every resource the desired state declares for this provider, changed or not (for `status`).
    pub resources: Vec<Resource>,
    /// What this provider offers to the providers after it (see [`Outputs`]).
    pub outputs: Outputs,
}

/// A resource the desired state declares.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Resource {
    pub address: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// One kind of reality. Implementations keep their diff a pure function (unit-tested with plain values)
/// and do I/O only in `plan` (observation) and `apply`.
#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Observes reality and diffs `desired` against it. `earlier` holds what the providers before this
    /// one in apply order planned (see [`Outputs`]).
    async fn plan(
        &self,
        desired: &Desired,
        earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError>;
    /// Carries out one change this provider planned.
    async fn apply(&self, change: &Change) -> Result<(), ProviderError>;

    /// Carries out one change within an apply run: providers that need the run's id or report
    /// steps override this; the default is [`Provider::apply`].
    async fn apply_in_run(&self, change: &Change, run: &RunContext) -> Result<(), ProviderError> {
        let _ = run;
        self.apply(change).await
    }

    /// A few words about what this provider manages, for the plan's section header
    /// (`remote, tunnel 4f1c5e2a…`, `zone example.com`).
    fn describe(&self) -> Option<String> {
        None
    }

    /// How many consecutive changes [`Provider::apply_batch`] takes at once (1: no batching).
    fn batch_size(&self) -> usize {
        1
    }

    /// Carries out several consecutive changes as one all-or-nothing unit (e.g. one DNS batch call).
    /// Only called with more than one change when [`Provider::batch_size`] is above 1.
    async fn apply_batch(&self, changes: &[Change]) -> Result<(), ProviderError> {
        for c in changes {
            self.apply(c).await?;
        }
        Ok(())
    }
}

/// A stable digest of anything serializable, for fingerprints.
pub fn fingerprint<T: serde::Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("sha256:{}", hex::encode(&Sha256::digest(&bytes)[..16]))
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{provider}: {source}")]
    Provider {
        provider: String,
        #[source]
        source: ProviderError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plan has errors and cannot be applied:\n{0}")]
    PlanHasErrors(String),
    #[error("{0}")]
    Unsafe(String),
    #[error("the saved plan is stale: {0}\nrun `supervisor plan` again")]
    Stale(String),
    #[error("the saved plan cannot be read: {0}")]
    BadPlanFile(String),
}

impl EngineError {
    /// What the failure says about trying again (only provider and store failures say anything).
    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            EngineError::Provider { source, .. } => Some(source.retry_hint()),
            EngineError::Store(_) => Some(RetryHint::Soon),
            EngineError::PlanHasErrors(_) | EngineError::Stale(_) | EngineError::BadPlanFile(_) => {
                Some(RetryHint::NeedsChange)
            }
            EngineError::Unsafe(_) => None,
        }
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    providers: Vec<Box<dyn Provider>>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub force: bool,
    pub allow_disruptive: bool,
    /// Who applies: `cli:<user>`, `serve:auto-apply`, `mcp:<token id>`.
    pub actor: String,
    pub git_revision: Option<String>,
    /// When cancelled, the apply stops at the next change boundary (graceful shutdown of `serve`).
    pub stop: Option<tokio_util::sync::CancellationToken>,
}

/// Progress of an apply, for renderers.
#[derive(Debug, Clone)]
pub enum ApplyEvent<'a> {
    Started {
        change: &'a Change,
    },
    Finished {
        change: &'a Change,
        elapsed: std::time::Duration,
    },
    Failed {
        change: &'a Change,
        error: String,
    },
    /// A step inside a long change (see [`RunContext::step`]).
    Step {
        change: &'a Change,
        step: &'a Step,
        elapsed: std::time::Duration,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyReport {
    pub run_id: String,
    pub summary: Summary,
    pub applied: usize,
    pub failed: Option<String>,
    /// What the failure says about trying again.
    #[serde(skip)]
    pub retry: Option<RetryHint>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, providers: Vec<Box<dyn Provider>>) -> Self {
        Engine { store, providers }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn provider_names(&self) -> Vec<&'static str> {
        self.providers.iter().map(|p| p.name()).collect()
    }

    /// Observes every provider and diffs; the result is filtered to `scope`.
    pub async fn plan(&self, desired: &Desired, scope: &Scope) -> Result<Plan, EngineError> {
        let mut changes = Vec::new();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut observed = BTreeMap::new();
        let mut mass_delete = Vec::new();
        let mut resources = Vec::new();
        let mut described = BTreeMap::new();
        let mut outputs = Outputs::default();
        let mut all_addresses = std::collections::BTreeSet::new();
        for p in &self.providers {
            let pp = p
                .plan(desired, &outputs)
                .await
                .map_err(|source| EngineError::Provider {
                    provider: p.name().to_string(),
                    source,
                })?;
            observed.insert(p.name().to_string(), pp.fingerprint.clone());
            if let Some(d) = p.describe() {
                described.insert(p.name().to_string(), d);
            }
            let keep = |address: Option<&str>, project: Option<&str>| match address {
                Some(a) => scope.includes(a, project),
                None => {
                    scope.project.is_none()
                        || project.is_none()
                        || scope.project.as_deref() == project
                }
            };
            let deletes = pp
                .changes
                .iter()
                .filter(|c| matches!(c.action, Action::Delete))
                .count();
            if let Some(msg) = mass_delete_rule(p.name(), deletes, pp.managed) {
                mass_delete.push(msg);
            }
            outputs.extend(pp.outputs);
            resources.extend(
                pp.resources
                    .into_iter()
                    .filter(|r| scope.includes(&r.address, r.project.as_deref())),
            );
            all_addresses.extend(pp.changes.iter().map(|c| c.address.clone()));
            changes.extend(
                pp.changes
                    .into_iter()
                    .filter(|c| scope.includes(&c.address, c.project.as_deref())),
            );
            warnings.extend(
                pp.warnings
                    .into_iter()
                    .filter(|n| keep(n.address.as_deref(), n.project.as_deref())),
            );
            errors.extend(
                pp.errors
                    .into_iter()
                    .filter(|n| keep(n.address.as_deref(), n.project.as_deref())),
            );
        }
        errors.extend(unmet_requirements(&changes, &all_addresses));
        for msg in mass_delete {
            warnings.push(Notice {
                provider: "safety".into(),
                address: None,
                project: None,
                message: msg,
            });
        }
        let summary = Plan::summarize(&changes);
        Ok(Plan {
            format_version: plan::PLAN_FORMAT_VERSION.into(),
            desired_revision: desired.revision.clone(),
            observed_fingerprint: fingerprint(&observed),
            observed,
            scope: scope.clone(),
            changes,
            errors,
            warnings,
            summary,
            resources,
            providers: described,
            outputs,
        })
    }

    /// Why `plan` may not be applied with `opts`, if it may not.
    pub fn check_safety(&self, plan: &Plan, opts: &ApplyOptions) -> Result<(), EngineError> {
        if !plan.errors.is_empty() {
            let list: Vec<String> = plan
                .errors
                .iter()
                .map(|e| format!("  - {}", e.message))
                .collect();
            return Err(EngineError::PlanHasErrors(list.join("\n")));
        }
        if !opts.force {
            let mass: Vec<&Notice> = plan
                .warnings
                .iter()
                .filter(|w| w.provider == "safety")
                .collect();
            if let Some(w) = mass.first() {
                return Err(EngineError::Unsafe(format!(
                    "{}; re-run with --force if this is intended",
                    w.message
                )));
            }
        }
        if !opts.allow_disruptive {
            let disruptive: Vec<&str> = plan.disruptive().map(|c| c.address.as_str()).collect();
            if !disruptive.is_empty() {
                return Err(EngineError::Unsafe(format!(
                    "the plan has disruptive changes ({}); re-run with --allow-disruptive or answer yes interactively",
                    disruptive.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Compares a saved plan with a fresh one; `Err(Stale)` says what moved.
    pub fn check_fresh(saved: &Plan, fresh: &Plan) -> Result<(), EngineError> {
        if saved.format_version != plan::PLAN_FORMAT_VERSION {
            return Err(EngineError::BadPlanFile(format!(
                "format_version {} is not supported (expected {})",
                saved.format_version,
                plan::PLAN_FORMAT_VERSION
            )));
        }
        let mut reasons = Vec::new();
        if saved.desired_revision != fresh.desired_revision {
            reasons.push(format!(
                "the desired state changed ({} → {})",
                saved.desired_revision, fresh.desired_revision
            ));
        }
        if saved.observed_fingerprint != fresh.observed_fingerprint {
            let moved: Vec<&str> = fresh
                .observed
                .iter()
                .filter(|(k, v)| saved.observed.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .collect();
            reasons.push(format!(
                "reality changed since the plan was made (provider{}: {})",
                if moved.len() == 1 { "" } else { "s" },
                moved.join(", ")
            ));
        }
        if saved.changes != fresh.changes && reasons.is_empty() {
            reasons.push("the plan's changes differ from what would be planned now".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Stale(reasons.join("; ")))
        }
    }

    /// Carries out `plan` (which must have come from [`Engine::plan`] under the apply lock held by the
    /// caller), journaling each change. Stops at the first failure.
    pub async fn apply(
        &self,
        plan: &Plan,
        opts: &ApplyOptions,
        mut progress: impl FnMut(ApplyEvent<'_>),
    ) -> Result<ApplyReport, EngineError> {
        self.check_safety(plan, opts)?;
        let run_id = uuid::Uuid::new_v4().to_string();
        self.store
            .begin_run(&ApplyRun {
                id: run_id.clone(),
                started_at: Utc::now(),
                finished_at: None,
                status: RunStatus::Running.as_str().into(),
                desired_revision: plan.desired_revision.clone(),
                git_revision: opts.git_revision.clone(),
                actor: opts.actor.clone(),
                summary: sqlx::types::Json(serde_json::to_value(plan.summary).unwrap_or_default()),
            })
            .await?;
        let mut report = ApplyReport {
            run_id: run_id.clone(),
            summary: plan.summary,
            ..Default::default()
        };
        // Consecutive changes of one provider go out in groups of up to its batch size; a group is
        // all-or-nothing (one API transaction for batching providers, one change otherwise).
        let mut seq = 0i32;
        let mut i = 0;
        'groups: while i < plan.changes.len() {
            if opts.stop.as_ref().is_some_and(|t| t.is_cancelled()) {
                report.failed = Some(format!(
                    "stopped before {} (shutting down); the next run continues",
                    plan.changes[i].address
                ));
                break;
            }
            let first = &plan.changes[i];
            let Some(provider) = self.providers.iter().find(|p| p.name() == first.provider) else {
                report.failed = Some(format!(
                    "no provider `{}` for {}",
                    first.provider, first.address
                ));
                break;
            };
            let max = provider.batch_size().max(1);
            let group: Vec<&Change> = plan.changes[i..]
                .iter()
                .take_while(|c| c.provider == first.provider)
                .take(max)
                .collect();
            i += group.len();
            let mut journal_ids = Vec::with_capacity(group.len());
            for change in &group {
                seq += 1;
                let intent = serde_json::to_value(change).unwrap_or_default();
                let jid = self
                    .store
                    .journal_start(
                        &run_id,
                        seq,
                        &change.address,
                        &change.provider,
                        change.action.as_str(),
                        &intent,
                    )
                    .await?;
                journal_ids.push(jid);
                progress(ApplyEvent::Started { change });
            }
            let started = std::time::Instant::now();
            let owned: Vec<Change> = group.iter().map(|c| (*c).clone()).collect();
            let result = if owned.len() == 1 {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let run = RunContext::new(&run_id, &opts.actor, tx);
                let change = group[0];
                let fut = provider.apply_in_run(&owned[0], &run);
                tokio::pin!(fut);
                // Steps are reported as they happen, on this task (the callback need not be Send).
                let result = loop {
                    tokio::select! {
                        biased;
                        Some(step) = rx.recv() => progress(ApplyEvent::Step {
                            change,
                            step: &step,
                            elapsed: started.elapsed(),
                        }),
                        r = &mut fut => break r,
                    }
                };
                while let Ok(step) = rx.try_recv() {
                    progress(ApplyEvent::Step {
                        change,
                        step: &step,
                        elapsed: started.elapsed(),
                    });
                }
                result
            } else {
                provider.apply_batch(&owned).await
            };
            match result {
                Ok(()) => {
                    for (change, jid) in group.iter().zip(&journal_ids) {
                        self.store.journal_finish(*jid, None).await?;
                        report.applied += 1;
                        progress(ApplyEvent::Finished {
                            change,
                            elapsed: started.elapsed(),
                        });
                    }
                }
                Err(e) => {
                    for (change, jid) in group.iter().zip(&journal_ids) {
                        self.store
                            .journal_finish(*jid, Some(&e.to_string()))
                            .await?;
                        progress(ApplyEvent::Failed {
                            change,
                            error: e.to_string(),
                        });
                    }
                    let what = match group.as_slice() {
                        [one] => one.address.clone(),
                        many => format!("{} changes starting at {}", many.len(), many[0].address),
                    };
                    report.failed = Some(format!("{what}: {e}"));
                    report.retry = Some(e.retry_hint());
                    break 'groups;
                }
            }
        }
        let status = if report.failed.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        self.store
            .finish_run(
                &run_id,
                status,
                &serde_json::json!({
                    "planned": plan.summary,
                    "applied": report.applied,
                    "failed": report.failed,
                }),
            )
            .await?;
        Ok(report)
    }
}

/// Errors for changes in a scoped plan whose prerequisites (`Change::requires`) are changes of the full
/// plan left out by the scope: applying them alone would fail halfway (a port taken before it is
/// vacated). `all` holds the address of every change of the unscoped plan.
fn unmet_requirements(
    in_scope: &[Change],
    all: &std::collections::BTreeSet<String>,
) -> Vec<Notice> {
    let included: std::collections::BTreeSet<&str> =
        in_scope.iter().map(|c| c.address.as_str()).collect();
    let mut errors = Vec::new();
    for c in in_scope {
        for r in &c.requires {
            if all.contains(r) && !included.contains(r.as_str()) {
                errors.push(Notice {
                    provider: c.provider.clone(),
                    address: Some(c.address.clone()),
                    project: c.project.clone(),
                    message: format!(
                        "{} needs {r} to be applied first, which is outside the plan's scope (--project/--only); widen the scope",
                        c.address
                    ),
                });
            }
        }
    }
    errors
}

/// `Some(message)` when deleting `deletes` of `managed` objects needs `--force`. Like octoDNS, the
/// rules apply only to kinds with at least [`MASS_DELETE_MIN`] managed objects: below that, deletes are
/// shown in the plan and applied like any change (removing the only hostname of a small setup is an
/// edit, not an accident).
pub fn mass_delete_rule(provider: &str, deletes: usize, managed: usize) -> Option<String> {
    if deletes == 0 || managed < MASS_DELETE_MIN {
        return None;
    }
    if deletes >= managed {
        return Some(format!(
            "the plan deletes all {managed} managed {provider} objects"
        ));
    }
    let fraction = deletes as f64 / managed as f64;
    (managed >= MASS_DELETE_MIN && fraction > MASS_DELETE_FRACTION).then(|| {
        format!(
            "the plan deletes {deletes} of {managed} managed {provider} objects ({:.0} % > {:.0} %)",
            fraction * 100.0,
            MASS_DELETE_FRACTION * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_delete_thresholds() {
        assert_eq!(mass_delete_rule("ports", 0, 5), None);
        assert_eq!(
            mass_delete_rule("tunnel", 1, 1),
            None,
            "small kinds are not guarded: removing the last hostname is an edit"
        );
        assert_eq!(mass_delete_rule("ports", 9, 9), None);
        assert!(
            mass_delete_rule("ports", 10, 10)
                .unwrap()
                .contains("all 10")
        );
        assert_eq!(
            mass_delete_rule("ports", 3, 10),
            None,
            "30 % exactly is allowed"
        );
        assert!(mass_delete_rule("ports", 4, 10).unwrap().contains("40 %"));
    }

    #[test]
    fn a_scoped_plan_refuses_a_change_whose_prerequisite_is_outside_the_scope() {
        let change = |address: &str, requires: &[&str]| Change {
            address: address.into(),
            provider: "ports".into(),
            action: Action::Update,
            project: None,
            before: None,
            after: None,
            summary: String::new(),
            drifted: false,
            disruptive: false,
            diff: None,
            requires: requires.iter().map(|r| r.to_string()).collect(),
        };
        let all: std::collections::BTreeSet<String> =
            ["ports/a/x".to_string(), "ports/a/y".to_string()].into();
        let in_scope = vec![change("ports/a/y", &["ports/a/x"])];
        let errors = unmet_requirements(&in_scope, &all);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "ports/a/y needs ports/a/x to be applied first, which is outside the plan's scope (--project/--only); widen the scope"
        );
        let both = vec![
            change("ports/a/x", &[]),
            change("ports/a/y", &["ports/a/x"]),
        ];
        assert!(unmet_requirements(&both, &all).is_empty());
        // A requirement that is not a change in this plan (already in place) is met.
        let none: std::collections::BTreeSet<String> = ["ports/a/y".to_string()].into();
        assert!(unmet_requirements(&in_scope, &none).is_empty());
    }

    #[test]
    fn scope_filters_by_project_and_address_prefix() {
        let s = Scope {
            project: Some("shop".into()),
            only: None,
        };
        assert!(s.includes("ports/shop/api", Some("shop")));
        assert!(!s.includes("ports/blog/api", Some("blog")));
        let s = Scope {
            project: None,
            only: Some("ports/shop".into()),
        };
        assert!(s.includes("ports/shop", Some("shop")));
        assert!(s.includes("ports/shop/api", Some("shop")));
        assert!(
            !s.includes("ports/shopping/api", Some("shopping")),
            "prefix matches whole segments"
        );
    }
}
