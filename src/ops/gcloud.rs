//! Google Cloud as people and agents ask for it: a VM as Compute Engine describes it, its recent use,
//! and the two desired-state edits the MCP tools offer (resize a VM, declare an API key). The CLI's
//! `vm get` / `vm health` and the MCP `gcloud_*` / `create_api_key` tools call these.
//!
//! Edits never act: they change `state/` (validated, atomic, revision-checked) and return the plan.
//! A resize is disruptive, so nothing applies it without a human (`apply --allow-disruptive` or an
//! interactive yes; `serve --auto-apply` and the `apply_plan` tool leave it waiting).

use super::{OpsError, Runtime};
use crate::engine::{Plan, Scope};
use crate::providers::vm_info::{self, VmHealth, VmInfo};
use crate::state::{ApiKey, edit};

/// `vm get`: the declared VM `name` as Compute Engine describes it.
pub async fn get_vm(rt: &Runtime, name: &str, actor: &str) -> Result<VmInfo, OpsError> {
    let desired = rt.desired().await;
    let ctx = rt.provider_context(actor, &[]);
    let (cloud, vm) = vm_info::connect_for(&desired, &ctx, name).await?;
    Ok(vm_info::describe_vm(&cloud, &vm).await?)
}

/// `vm health`: the declared VM's CPU, memory and disk use over the last `minutes`.
pub async fn vm_health(
    rt: &Runtime,
    name: &str,
    minutes: i64,
    actor: &str,
) -> Result<VmHealth, OpsError> {
    if !(1..=vm_info::MAX_MINUTES).contains(&minutes) {
        return Err(OpsError::InvalidArgument(format!(
            "minutes must be from 1 to {} (a week), not {minutes}",
            vm_info::MAX_MINUTES
        )));
    }
    let desired = rt.desired().await;
    let ctx = rt.provider_context(actor, &[]);
    let (cloud, vm) = vm_info::connect_for(&desired, &ctx, name).await?;
    Ok(vm_info::vm_health(&cloud, &vm, minutes, chrono::Utc::now()).await?)
}

/// What a desired-state edit did, and the plan it leads to.
#[derive(Debug, Clone)]
pub struct EditOutcome {
    pub edited: edit::Edited,
    pub plan: Plan,
}

/// Sets VM `name`'s machine type in `supervisor.yaml` (revision-checked) and plans that VM.
pub async fn resize_vm(
    rt: &Runtime,
    name: &str,
    machine_type: &str,
    revision: &str,
    actor: &str,
) -> Result<EditOutcome, OpsError> {
    let (vm, mt, rev) = (
        name.to_string(),
        machine_type.to_string(),
        revision.to_string(),
    );
    let edited = rt
        .edit_state(move |dir| edit::set_vm_machine_type(dir, &vm, &mt, &rev))
        .await?;
    let plan = rt
        .plan(
            &Scope {
                project: None,
                only: Some(crate::providers::vm::address(name)),
            },
            actor,
        )
        .await?;
    Ok(EditOutcome { edited, plan })
}

/// Declares (or replaces) API key `key` in `project` (revision-checked) and plans that project.
pub async fn declare_api_key(
    rt: &Runtime,
    project: &str,
    key: ApiKey,
    revision: &str,
    actor: &str,
) -> Result<EditOutcome, OpsError> {
    let (p, rev) = (project.to_string(), revision.to_string());
    let edited = rt
        .edit_state(move |dir| edit::upsert_api_key(dir, &p, &key, &rev))
        .await?;
    let plan = rt
        .plan(
            &Scope {
                project: Some(project.to_string()),
                only: None,
            },
            actor,
        )
        .await?;
    Ok(EditOutcome { edited, plan })
}
