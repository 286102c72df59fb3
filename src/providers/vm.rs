//! Compute Engine VMs: the machine type of every VM listed in `supervisor.yaml` (and, with
//! `running:`, whether it runs).
//!
//! Addresses: `vm/<name>`. Only listed VMs are read or touched; a listed VM that does not exist is a
//! plan error naming it. Machine types are compared by short name (the API answers with a URL).
//!
//! **A resize is disruptive**: stop → wait → confirm TERMINATED → setMachineType → wait → start →
//! wait → confirm RUNNING. The change is marked `disruptive` when the VM is running, so `apply` needs
//! `--allow-disruptive` (or an interactive yes) and `serve --auto-apply` leaves it for a human. A VM
//! that is already stopped is resized and left stopped, unless `running: true`. `running: false`
//! stops a running VM (disruptive too); `running: true` starts a stopped one.
//!
//! **Convergent apply.** The apply does not replay a script: before each step it re-reads the
//! instance and takes the next step from where it is (`STOPPING` is waited out, a type already set
//! is not set again), so a resize resumed after a crash, or one a person half-finished in the
//! console, ends in the same place. Every mutation carries a `requestId` derived from the apply run,
//! the address and the step, so a call whose answer was lost is resent safely.
//!
//! **Crash safety.** Before the first step the provider writes a *resize record* into the VM's
//! inventory entry (`from`, `to`, whether the VM ran and must be started again) and updates it with
//! each step reached. A crash leaves the record behind; the next plan reads it, sees the VM stopped
//! with the old or the new type, and plans the rest — including starting it again, which a stopped VM
//! without a record would not get. The record is removed when the resize ends (or is rolled back),
//! or by the next plan that finds the VM already where the record was going.
//!
//! **Capacity.** A start that fails after the resize because the zone has no capacity or a quota is
//! exceeded (`ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`, …) restores the previous machine type
//! and starts the VM again; the change fails with both outcomes in its message.
//!
//! Steps are reported through [`RunContext::step`] (and logged at info) as they happen. The diff
//! ([`diff`]) is pure.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::gcloud::{GoogleCloud, google_error};
use crate::clients::google::GoogleError;
use crate::clients::google::compute::{Instance, status};
use crate::clients::google::operations::wait_zone_operation;
use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, RunContext,
    fingerprint, payload,
};
use crate::state::{Desired, Vm};
use crate::store::{ManagedObject, Store};

pub const NAME: &str = "vm";

/// How many steps one apply may take before giving up (a resize needs at most five).
const MAX_STEPS: usize = 12;

/// `instances.get` calls in flight at once while observing.
pub const OBSERVE_CONCURRENCY: usize = 8;

pub fn address(name: &str) -> String {
    format!("{NAME}/{name}")
}

/// Which instance a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub gcp_project: String,
    pub zone: String,
    pub name: String,
}

/// What a change does: the payload in `Change.after`, parsed back by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VmChange {
    /// Set the machine type (stopping the VM first when it runs), then start it when `start_after`.
    Resize {
        instance: InstanceRef,
        from: String,
        to: String,
        start_after: bool,
        /// The step an interrupted resize had reached, when this change resumes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resuming: Option<String>,
    },
    /// Start a stopped VM (`running: true`, or the end of an interrupted resize).
    Start {
        instance: InstanceRef,
        machine_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resuming: Option<String>,
    },
    /// Stop a running VM (`running: false`).
    Stop {
        instance: InstanceRef,
        machine_type: String,
    },
}

impl VmChange {
    fn instance(&self) -> &InstanceRef {
        match self {
            VmChange::Resize { instance, .. }
            | VmChange::Start { instance, .. }
            | VmChange::Stop { instance, .. } => instance,
        }
    }

    /// (machine type, running) the change ends in.
    fn target(&self) -> (&str, bool) {
        match self {
            VmChange::Resize {
                to, start_after, ..
            } => (to, *start_after),
            VmChange::Start { machine_type, .. } => (machine_type, true),
            VmChange::Stop { machine_type, .. } => (machine_type, false),
        }
    }
}

/// The instance as observed: the `before` of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    pub id: String,
    pub status: String,
    pub machine_type: String,
}

impl InstanceState {
    pub fn of(i: &Instance) -> Self {
        InstanceState {
            id: i.id.clone(),
            status: i.status.clone(),
            machine_type: i.machine_type_name().to_string(),
        }
    }
}

/// A resize in progress, kept in the VM's inventory entry until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeRecord {
    pub run_id: String,
    pub from: String,
    pub to: String,
    /// The VM ran before the resize (or must run after it): start it at the end.
    pub start_after: bool,
    /// The last step reached (`begin`, `stop`, `wait`, `set_machine_type`, `start`, `rollback`…).
    pub step: String,
    pub at: DateTime<Utc>,
}

/// The VM's inventory entry (`provider = vm`, external id = the instance id).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmRecord {
    #[serde(default)]
    pub gcp_project: String,
    #[serde(default)]
    pub zone: String,
    /// The machine type the supervisor last left the VM with (for drift).
    #[serde(default)]
    pub machine_type: Option<String>,
    #[serde(default)]
    pub resize: Option<ResizeRecord>,
}

fn is_up(s: &str) -> bool {
    matches!(
        s,
        status::RUNNING | status::STAGING | status::PROVISIONING | status::REPAIRING
    )
}

fn is_down(s: &str) -> bool {
    matches!(s, status::TERMINATED | status::STOPPED | status::STOPPING)
}

/// One declared VM with what was observed for it.
#[derive(Debug, Clone)]
pub struct ObservedVm {
    pub vm: Vm,
    /// `None`: the instance does not exist.
    pub state: Option<InstanceState>,
    pub record: Option<VmRecord>,
}

/// Whether a resize record has nothing left to do: the VM is where it was going.
pub fn record_is_finished(vm: &Vm, state: &InstanceState, record: &ResizeRecord) -> bool {
    state.machine_type == record.to
        && state.machine_type == vm.machine_type
        && if record.start_after {
            state.status == status::RUNNING
        } else {
            is_down(&state.status)
        }
}

/// Declared VMs against what was observed → changes and errors. Pure.
pub fn diff(observed: &[ObservedVm]) -> ProviderPlan {
    let mut out = ProviderPlan::default();
    for o in observed {
        let vm = &o.vm;
        let addr = address(&vm.name);
        out.resources.push(Resource {
            address: addr.clone(),
            provider: NAME.into(),
            project: None,
        });
        let error = |message: String| Notice {
            provider: NAME.into(),
            address: Some(addr.clone()),
            project: None,
            message,
        };
        let Some(state) = &o.state else {
            out.errors.push(error(format!(
                "{addr}: there is no instance `{}` in project {} zone {} (only existing VMs are managed: create it, or fix the name, gcp_project or zone)",
                vm.name, vm.gcp_project, vm.zone
            )));
            continue;
        };
        out.managed += 1;
        let resize = o
            .record
            .as_ref()
            .and_then(|r| r.resize.as_ref())
            .filter(|r| !record_is_finished(vm, state, r));
        let up = is_up(&state.status);
        let down = is_down(&state.status);
        let want_up = match vm.running {
            Some(b) => b,
            None => up || (down && resize.is_some_and(|r| r.start_after)),
        };
        let needs_type = state.machine_type != vm.machine_type;
        let instance = InstanceRef {
            gcp_project: vm.gcp_project.clone(),
            zone: vm.zone.clone(),
            name: vm.name.clone(),
        };
        if !up && !down {
            // SUSPENDED, SUSPENDING, DEPROVISIONING: nothing the supervisor should push through.
            if needs_type || vm.running.is_some() {
                out.errors.push(error(format!(
                    "{addr}: the instance is {}; resume it (or wait for it) before its machine type or running state can be managed",
                    state.status
                )));
            }
            continue;
        }
        let resuming = resize.map(|r| r.step.clone());
        let resume_note = resuming
            .as_deref()
            .map(|s| format!(" (resuming a resize interrupted at step `{s}`)"))
            .unwrap_or_default();
        let (payload, summary, disruptive) = if needs_type {
            let summary = if up {
                format!(
                    "machine type {} → {} (stops the VM, resizes it, starts it again){resume_note}",
                    state.machine_type, vm.machine_type
                )
            } else if want_up {
                format!(
                    "machine type {} → {}, then start (the VM is {}){resume_note}",
                    state.machine_type, vm.machine_type, state.status
                )
            } else {
                format!(
                    "machine type {} → {} (the VM is {} and stays stopped){resume_note}",
                    state.machine_type, vm.machine_type, state.status
                )
            };
            (
                VmChange::Resize {
                    instance,
                    from: state.machine_type.clone(),
                    to: vm.machine_type.clone(),
                    start_after: want_up,
                    resuming,
                },
                summary,
                up,
            )
        } else if want_up && down {
            let why = if resuming.is_some() {
                resume_note.trim().to_string()
            } else {
                "(running: true)".to_string()
            };
            (
                VmChange::Start {
                    instance,
                    machine_type: state.machine_type.clone(),
                    resuming,
                },
                format!("start: {} → RUNNING {why}", state.status),
                false,
            )
        } else if !want_up && up {
            (
                VmChange::Stop {
                    instance,
                    machine_type: state.machine_type.clone(),
                },
                format!("stop: {} → TERMINATED (running: false)", state.status),
                true,
            )
        } else {
            continue;
        };
        let drifted = resize.is_none()
            && o.record
                .as_ref()
                .and_then(|r| r.machine_type.as_deref())
                .is_some_and(|last| last != state.machine_type);
        out.changes.push(Change {
            address: addr.clone(),
            provider: NAME.into(),
            action: Action::Update,
            project: None,
            before: Some(serde_json::to_value(state).unwrap_or_default()),
            after: Some(serde_json::to_value(&payload).unwrap_or_default()),
            summary,
            drifted,
            disruptive,
            diff: None,
            requires: Vec::new(),
        });
    }
    out.changes.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// A Compute Engine `requestId` for one step of one change in one run: a UUID (version 8) derived
/// from the three, so a resent call is recognised and a new run never collides with an old one.
pub fn request_id(run_id: &str, address: &str, step: &str) -> String {
    let digest = Sha256::digest(format!("{run_id}\0{address}\0{step}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// How a change ended badly.
enum Failure {
    /// The start (after a resize) failed for capacity or quota: the caller may roll back.
    Capacity(GoogleError),
    Other(ProviderError),
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Other(e)
    }
}

pub struct VmProvider {
    store: Arc<dyn Store>,
    cloud: Arc<GoogleCloud>,
}

/// One apply: what it needs to carry out steps and record them.
struct Steps<'a> {
    provider: &'a VmProvider,
    run: &'a RunContext,
    address: String,
    instance: InstanceRef,
    record: VmRecord,
    instance_id: Option<String>,
    /// Calls of each kind so far in this run (part of each `requestId`).
    counts: HashMap<String, usize>,
    /// `rollback-` while undoing a resize.
    prefix: &'static str,
}

impl VmProvider {
    pub fn new(store: Arc<dyn Store>, cloud: Arc<GoogleCloud>) -> Self {
        VmProvider { store, cloud }
    }

    async fn records(&self) -> Result<HashMap<String, (Option<String>, VmRecord)>, ProviderError> {
        Ok(self
            .store
            .list_managed(NAME)
            .await?
            .into_iter()
            .filter_map(|o| {
                let record: VmRecord = serde_json::from_value(o.attributes.0.clone()).ok()?;
                Some((o.address, (o.external_id, record)))
            })
            .collect())
    }

    async fn save(
        &self,
        address: &str,
        instance_id: Option<&str>,
        record: &VmRecord,
    ) -> Result<(), ProviderError> {
        self.store
            .upsert_managed(&ManagedObject {
                provider: NAME.into(),
                address: address.into(),
                external_id: instance_id.map(str::to_string),
                attributes: sqlx::types::Json(serde_json::to_value(record).unwrap_or_default()),
                adopted: false,
            })
            .await?;
        Ok(())
    }

    /// Observes the declared VMs (one `instances.get` each, [`OBSERVE_CONCURRENCY`] at a time) and
    /// the inventory.
    pub async fn observe(&self, desired: &Desired) -> Result<Vec<ObservedVm>, ProviderError> {
        let mut records = self.records().await?;
        let states = self.read_instances(&desired.vms).await?;
        let mut out = Vec::new();
        for (vm, state) in desired.vms.iter().zip(states) {
            let addr = address(&vm.name);
            let mut record = records.remove(&addr);
            // A resize record with nothing left to do (finished by hand, or a crash right after the
            // last step) is bookkeeping only: drop it so it never restarts a VM later.
            if let (Some(s), Some((id, r))) = (&state, &mut record)
                && r.resize
                    .as_ref()
                    .is_some_and(|rz| record_is_finished(vm, s, rz))
            {
                r.resize = None;
                r.machine_type = Some(s.machine_type.clone());
                let (id, r) = (id.clone(), r.clone());
                self.save(&addr, id.as_deref(), &r).await?;
            }
            out.push(ObservedVm {
                vm: vm.clone(),
                state,
                record: record.map(|(_, r)| r),
            });
        }
        Ok(out)
    }

    /// `instances.get` for each VM, in the order given; `None` for a VM that does not exist.
    async fn read_instances(
        &self,
        vms: &[Vm],
    ) -> Result<Vec<Option<InstanceState>>, ProviderError> {
        let mut results: Vec<Option<Option<InstanceState>>> = vec![None; vms.len()];
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < vms.len() || !tasks.is_empty() {
            while next < vms.len() && tasks.len() < OBSERVE_CONCURRENCY {
                let (cloud, vm, i) = (self.cloud.clone(), vms[next].clone(), next);
                tasks.spawn(async move {
                    let r = cloud
                        .compute
                        .get_instance(&vm.gcp_project, &vm.zone, &vm.name)
                        .await;
                    (i, vm.name, r)
                });
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (i, name, r) = joined.map_err(|e| {
                ProviderError::Failed(format!("{NAME}: reading an instance failed: {e}"))
            })?;
            results[i] = Some(match r {
                Ok(inst) => Some(InstanceState::of(&inst)),
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    return Err(google_error(
                        format!("{}: reading the instance", address(&name)),
                        e,
                    ));
                }
            });
        }
        Ok(results.into_iter().map(Option::flatten).collect())
    }

    async fn carry_out(&self, change: &Change, run: &RunContext) -> Result<(), ProviderError> {
        let addr = change.address.clone();
        let payload: VmChange = payload(change, change.after.as_ref())?;
        let instance = payload.instance().clone();
        let existing = self.records().await?.remove(&addr);
        let (instance_id, mut record) = existing.unwrap_or_default();
        record.gcp_project = instance.gcp_project.clone();
        record.zone = instance.zone.clone();
        match &payload {
            VmChange::Resize {
                from,
                to,
                start_after,
                ..
            } => {
                // A resumed resize keeps the type the first attempt started from (for a rollback).
                let from = record
                    .resize
                    .as_ref()
                    .filter(|r| r.to == *to)
                    .map_or_else(|| from.clone(), |r| r.from.clone());
                record.resize = Some(ResizeRecord {
                    run_id: run.run_id().to_string(),
                    from,
                    to: to.clone(),
                    start_after: *start_after,
                    step: "begin".into(),
                    at: Utc::now(),
                });
            }
            // The end of an interrupted resize keeps its record (and so the type to roll back to).
            VmChange::Start { .. } => {
                if let Some(r) = &mut record.resize {
                    r.run_id = run.run_id().to_string();
                    r.start_after = true;
                }
            }
            VmChange::Stop { .. } => record.resize = None,
        }
        self.save(&addr, instance_id.as_deref(), &record).await?;
        let mut steps = Steps {
            provider: self,
            run,
            address: addr.clone(),
            instance,
            record,
            instance_id,
            counts: HashMap::new(),
            prefix: "",
        };
        let (target_type, target_up) = payload.target();
        let target_type = target_type.to_string();
        match steps.converge(&target_type, target_up).await {
            Ok(()) => {
                steps.record.resize = None;
                steps.record.machine_type = Some(target_type.clone());
                steps.save().await?;
                Ok(())
            }
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Capacity(e)) => {
                let from = steps
                    .record
                    .resize
                    .as_ref()
                    .map(|r| r.from.clone())
                    .unwrap_or_else(|| target_type.clone());
                if from == target_type {
                    return Err(google_error(format!("{addr}: start"), e));
                }
                steps
                    .step(
                        "rollback",
                        format!(
                            "the VM did not start with {target_type} ({e}); restoring {from} and starting it again"
                        ),
                    )
                    .await?;
                steps.prefix = "rollback-";
                match steps.converge(&from, true).await {
                    Ok(()) => {
                        steps.record.resize = None;
                        steps.record.machine_type = Some(from.clone());
                        steps.save().await?;
                        Err(ProviderError::Failed(format!(
                            "{addr}: the VM did not start with machine type {target_type}: {e}. Rolled back: machine type {from} is restored and the VM is RUNNING again. The desired state still asks for {target_type}: try again later, or choose another type or zone"
                        )))
                    }
                    Err(f) => {
                        let second = match f {
                            Failure::Capacity(e2) => e2.to_string(),
                            Failure::Other(e2) => e2.to_string(),
                        };
                        Err(ProviderError::Failed(format!(
                            "{addr}: the VM did not start with machine type {target_type}: {e}. The rollback to {from} failed too: {second}. The VM is stopped; the next apply continues from where it is"
                        )))
                    }
                }
            }
        }
    }
}

impl Steps<'_> {
    async fn save(&self) -> Result<(), ProviderError> {
        self.provider
            .save(&self.address, self.instance_id.as_deref(), &self.record)
            .await
    }

    /// Reports a step and records it in the resize record (so a crash knows how far it got).
    async fn step(&mut self, name: &str, detail: String) -> Result<(), ProviderError> {
        self.run.step(&self.address, name, detail);
        if let Some(r) = &mut self.record.resize {
            r.step = name.to_string();
            r.at = Utc::now();
            self.save().await?;
        }
        Ok(())
    }

    fn request_id(&mut self, call: &str) -> String {
        let key = format!("{}{call}", self.prefix);
        let n = self.counts.entry(key.clone()).or_insert(0);
        *n += 1;
        request_id(self.run.run_id(), &self.address, &format!("{key}#{n}"))
    }

    fn cloud(&self) -> &GoogleCloud {
        &self.provider.cloud
    }

    async fn get(&mut self) -> Result<Instance, ProviderError> {
        let i = &self.instance;
        let inst = self
            .cloud()
            .compute
            .get_instance(&i.gcp_project, &i.zone, &i.name)
            .await
            .map_err(|e| google_error(format!("{}: reading the instance", self.address), e))?;
        self.instance_id = Some(inst.id.clone());
        Ok(inst)
    }

    /// Re-reads the instance until its status is one of `wanted` (bounded).
    async fn settle(&mut self, wanted: &[&str], what: &str) -> Result<Instance, ProviderError> {
        let policy = self.cloud().settle;
        let started = Instant::now();
        loop {
            let inst = self.get().await?;
            if wanted.contains(&inst.status.as_str()) {
                return Ok(inst);
            }
            if started.elapsed() >= policy.timeout {
                return Err(ProviderError::Failed(format!(
                    "{}: the instance is still {} {:.0} s after its operation finished (waiting for {what})",
                    self.address,
                    inst.status,
                    started.elapsed().as_secs_f64()
                )));
            }
            tokio::time::sleep(policy.poll_interval).await;
        }
    }

    /// Records the `wait` step, then waits for a zonal operation: the outer `Err` is a failure to
    /// record, the inner one the operation's (typed) error.
    async fn wait(
        &mut self,
        op: crate::clients::google::compute::Operation,
        doing: &str,
    ) -> Result<Result<(), GoogleError>, ProviderError> {
        self.step(
            "wait",
            format!("waiting for {doing} (operation {})", op.name),
        )
        .await?;
        let i = self.instance.clone();
        let policy = self.cloud().compute_wait;
        Ok(
            wait_zone_operation(&self.cloud().compute, &i.gcp_project, &i.zone, op, policy)
                .await
                .map(|_| ()),
        )
    }

    /// Takes steps until the instance has `target_type` and is running (or stopped) as asked.
    async fn converge(&mut self, target_type: &str, target_up: bool) -> Result<(), Failure> {
        let i = self.instance.clone();
        let addr = self.address.clone();
        for _ in 0..MAX_STEPS {
            let inst = self.get().await?;
            let st = inst.status.as_str();
            let type_ok = inst.machine_type_name() == target_type;
            match st {
                status::RUNNING if type_ok && target_up => {
                    self.step(
                        "confirm",
                        format!("RUNNING with machine type {target_type}"),
                    )
                    .await?;
                    return Ok(());
                }
                status::TERMINATED | status::STOPPED if type_ok && !target_up => {
                    self.step("confirm", format!("{st} with machine type {target_type}"))
                        .await?;
                    return Ok(());
                }
                status::STOPPING => {
                    self.step("wait", "waiting for the VM to stop (STOPPING)".into())
                        .await?;
                    self.settle(&[status::TERMINATED, status::STOPPED], "TERMINATED")
                        .await?;
                }
                status::STAGING | status::PROVISIONING => {
                    self.step("wait", format!("waiting for the VM to start ({st})"))
                        .await?;
                    self.settle(&[status::RUNNING, status::TERMINATED], "RUNNING")
                        .await?;
                }
                status::RUNNING | status::REPAIRING => {
                    let why = if type_ok {
                        "running: false".to_string()
                    } else {
                        format!(
                            "to change its machine type {} → {target_type}",
                            inst.machine_type_name()
                        )
                    };
                    self.step("stop", format!("stopping the VM ({why})"))
                        .await?;
                    let rid = self.request_id("stop");
                    let op = self
                        .cloud()
                        .compute
                        .stop(&i.gcp_project, &i.zone, &i.name, &rid)
                        .await
                        .map_err(|e| google_error(format!("{addr}: stop"), e))?;
                    self.wait(op, "the stop")
                        .await?
                        .map_err(|e| google_error(format!("{addr}: stop"), e))?;
                    self.settle(&[status::TERMINATED, status::STOPPED], "TERMINATED")
                        .await?;
                }
                status::TERMINATED | status::STOPPED if !type_ok => {
                    self.step(
                        "set_machine_type",
                        format!(
                            "setting the machine type {} → {target_type}",
                            inst.machine_type_name()
                        ),
                    )
                    .await?;
                    let rid = self.request_id(&format!("set:{target_type}"));
                    let op = self
                        .cloud()
                        .compute
                        .set_machine_type(&i.gcp_project, &i.zone, &i.name, target_type, &rid)
                        .await
                        .map_err(|e| google_error(format!("{addr}: setMachineType"), e))?;
                    self.wait(op, "the machine type change")
                        .await?
                        .map_err(|e| google_error(format!("{addr}: setMachineType"), e))?;
                }
                status::TERMINATED | status::STOPPED => {
                    self.step("start", format!("starting the VM with {target_type}"))
                        .await?;
                    let rid = self.request_id("start");
                    let op = self
                        .cloud()
                        .compute
                        .start(&i.gcp_project, &i.zone, &i.name, &rid)
                        .await
                        .map_err(|e| google_error(format!("{addr}: start"), e))?;
                    match self.wait(op, "the start").await? {
                        Ok(()) => {}
                        Err(GoogleError::Operation(oe)) if oe.is_capacity_or_quota() => {
                            return Err(Failure::Capacity(GoogleError::Operation(oe)));
                        }
                        Err(e) => return Err(google_error(format!("{addr}: start"), e).into()),
                    }
                    self.settle(&[status::RUNNING, status::TERMINATED], "RUNNING")
                        .await?;
                }
                other => {
                    return Err(ProviderError::Failed(format!(
                        "{addr}: the instance is {other}; the supervisor does not change a VM in that state"
                    ))
                    .into());
                }
            }
        }
        Err(ProviderError::Failed(format!(
            "{addr}: the VM did not reach machine type {target_type} ({}) within {MAX_STEPS} steps; someone else may be changing it",
            if target_up { "RUNNING" } else { "stopped" }
        ))
        .into())
    }
}

#[async_trait]
impl Provider for VmProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "Compute Engine at {}",
            self.cloud.endpoints.compute
        ))
    }

    async fn plan(
        &self,
        desired: &Desired,
        _earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let observed = self.observe(desired).await?;
        let mut plan = diff(&observed);
        let seen: BTreeMap<&str, (&Option<InstanceState>, Option<&ResizeRecord>)> = observed
            .iter()
            .map(|o| {
                (
                    o.vm.name.as_str(),
                    (&o.state, o.record.as_ref().and_then(|r| r.resize.as_ref())),
                )
            })
            .collect();
        plan.fingerprint = fingerprint(&seen);
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        // Outside an apply run (no run id to derive request ids from): a run of its own.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let run = RunContext::new(&uuid::Uuid::new_v4().to_string(), "supervisor", tx);
        self.carry_out(change, &run).await
    }

    async fn apply_in_run(&self, change: &Change, run: &RunContext) -> Result<(), ProviderError> {
        self.carry_out(change, run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(machine_type: &str, running: Option<bool>) -> Vm {
        Vm {
            name: "host-1".into(),
            gcp_project: "my-gcp-project".into(),
            zone: "us-central1-a".into(),
            machine_type: machine_type.into(),
            running,
        }
    }

    fn state(status: &str, machine_type: &str) -> Option<InstanceState> {
        Some(InstanceState {
            id: "1".into(),
            status: status.into(),
            machine_type: machine_type.into(),
        })
    }

    fn resize(step: &str, start_after: bool) -> Option<VmRecord> {
        Some(VmRecord {
            gcp_project: "my-gcp-project".into(),
            zone: "us-central1-a".into(),
            machine_type: Some("e2-standard-4".into()),
            resize: Some(ResizeRecord {
                run_id: "r1".into(),
                from: "e2-standard-4".into(),
                to: "e2-standard-8".into(),
                start_after,
                step: step.into(),
                at: Utc::now(),
            }),
        })
    }

    fn one(vm: Vm, state: Option<InstanceState>, record: Option<VmRecord>) -> ProviderPlan {
        diff(&[ObservedVm { vm, state, record }])
    }

    fn summary(p: &ProviderPlan) -> Vec<(String, bool, bool)> {
        p.changes
            .iter()
            .map(|c| (c.summary.clone(), c.disruptive, c.drifted))
            .collect()
    }

    #[test]
    fn a_running_vm_is_resized_disruptively_by_short_name() {
        let p = one(
            vm("e2-standard-8", None),
            state("RUNNING", "e2-standard-4"),
            None,
        );
        assert_eq!(
            summary(&p),
            vec![(
                "machine type e2-standard-4 → e2-standard-8 (stops the VM, resizes it, starts it again)".to_string(),
                true,
                false
            )]
        );
        let after: VmChange = serde_json::from_value(p.changes[0].after.clone().unwrap()).unwrap();
        assert_eq!(after.target(), ("e2-standard-8", true));
        assert!(
            one(
                vm("e2-standard-4", None),
                state("RUNNING", "e2-standard-4"),
                None
            )
            .changes
            .is_empty()
        );
    }

    #[test]
    fn a_stopped_vm_stays_stopped_unless_running_true() {
        let p = one(
            vm("e2-standard-8", None),
            state("TERMINATED", "e2-standard-4"),
            None,
        );
        assert_eq!(
            summary(&p),
            vec![(
                "machine type e2-standard-4 → e2-standard-8 (the VM is TERMINATED and stays stopped)".to_string(),
                false,
                false
            )]
        );
        let p = one(
            vm("e2-standard-8", Some(true)),
            state("TERMINATED", "e2-standard-4"),
            None,
        );
        assert_eq!(
            summary(&p)[0].0,
            "machine type e2-standard-4 → e2-standard-8, then start (the VM is TERMINATED)"
        );
        let p = one(
            vm("e2-standard-4", Some(true)),
            state("TERMINATED", "e2-standard-4"),
            None,
        );
        assert_eq!(
            summary(&p),
            vec![(
                "start: TERMINATED → RUNNING (running: true)".to_string(),
                false,
                false
            )]
        );
        let p = one(
            vm("e2-standard-4", Some(false)),
            state("RUNNING", "e2-standard-4"),
            None,
        );
        assert_eq!(
            summary(&p),
            vec![(
                "stop: RUNNING → TERMINATED (running: false)".to_string(),
                true,
                false
            )]
        );
    }

    #[test]
    fn an_interrupted_resize_is_resumed_and_restarts_the_vm() {
        // Crashed after the stop: old type, stopped; the record says it ran before.
        let p = one(
            vm("e2-standard-8", None),
            state("TERMINATED", "e2-standard-4"),
            resize("wait", true),
        );
        assert_eq!(
            summary(&p),
            vec![(
                "machine type e2-standard-4 → e2-standard-8, then start (the VM is TERMINATED) (resuming a resize interrupted at step `wait`)".to_string(),
                false,
                false
            )]
        );
        // Crashed after setMachineType: new type, stopped.
        let p = one(
            vm("e2-standard-8", None),
            state("TERMINATED", "e2-standard-8"),
            resize("set_machine_type", true),
        );
        assert_eq!(
            summary(&p),
            vec![(
                "start: TERMINATED → RUNNING (resuming a resize interrupted at step `set_machine_type`)".to_string(),
                false,
                false
            )]
        );
        // Finished by someone else: nothing to do.
        assert!(
            one(
                vm("e2-standard-8", None),
                state("RUNNING", "e2-standard-8"),
                resize("start", true)
            )
            .changes
            .is_empty()
        );
        // Without the record the stopped VM would have been left stopped.
        assert!(
            one(
                vm("e2-standard-8", None),
                state("TERMINATED", "e2-standard-8"),
                None
            )
            .changes
            .is_empty()
        );
    }

    #[test]
    fn missing_and_suspended_vms_are_errors_and_console_edits_are_drift() {
        let p = one(vm("e2-standard-8", None), None, None);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(
            p.errors[0].message,
            "vm/host-1: there is no instance `host-1` in project my-gcp-project zone us-central1-a (only existing VMs are managed: create it, or fix the name, gcp_project or zone)"
        );
        let p = one(
            vm("e2-standard-8", None),
            state("SUSPENDED", "e2-standard-4"),
            None,
        );
        assert!(
            p.errors[0].message.contains("the instance is SUSPENDED"),
            "{:?}",
            p.errors
        );
        let mut record = resize("x", true).unwrap();
        record.resize = None;
        let p = one(
            vm("e2-standard-4", None),
            state("RUNNING", "e2-standard-2"),
            Some(record),
        );
        assert_eq!(p.changes.len(), 1);
        assert!(p.changes[0].drifted);
    }

    #[test]
    fn request_ids_are_uuids_stable_per_run_address_and_step() {
        let a = request_id("run-1", "vm/host-1", "stop#1");
        assert_eq!(a, request_id("run-1", "vm/host-1", "stop#1"));
        assert_ne!(a, request_id("run-2", "vm/host-1", "stop#1"));
        assert_ne!(a, request_id("run-1", "vm/host-1", "start#1"));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert!(!u.is_nil());
        assert_eq!(u.get_version_num(), 8);
    }
}
