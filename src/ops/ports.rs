//! Ports as agents and people ask for them: one service's port (declaring and allocating it when
//! needed), the listing `ports list` and the MCP `list_ports` tool both show, and the audit against the
//! sockets listening on this host (`ports audit`, the status page's port grid).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::apply::{ApplyOutcome, ApplyRequest, Unattended, apply};
use super::{OpsError, Runtime, Visibility};
use crate::engine::Scope;
use crate::providers::ports::{PortLine, port_lines};
use crate::providers::ports_audit::{self, AuditReport};
use crate::providers::sockets;
use crate::state::edit;
use crate::store::{DEFAULT_HOST, PortRange, SharedPort};

/// One service's port.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PortInfo {
    pub project: String,
    pub service: String,
    pub port: i32,
    /// The service's public hostname, if it has one.
    pub hostname: Option<String>,
    /// True when this call allocated the port (and declared the service if it was new).
    pub allocated_now: bool,
}

/// What to do when the service has no port yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenMissing {
    /// Declare the service in desired state if needed, and allocate its port now.
    Allocate,
    /// Report that it has none.
    Fail,
}

/// The port of `service` in `project`. An allocated port comes from the in-memory snapshot (see
/// [`super::port_snapshot`]), else from one indexed read. Otherwise, with
/// [`WhenMissing::Allocate`], an undeclared service is added to the project's desired state first
/// (serialized with other declarations, applied to the state as it is then — the caller never saw a
/// revision), and the project's ports are applied unattended under the apply lock, which several `serve`
/// processes share: whichever takes it first allocates, the others find the port allocated.
pub async fn get_port(
    rt: &Runtime,
    visibility: &Visibility,
    project: Option<String>,
    service: &str,
    when_missing: WhenMissing,
    actor: &str,
) -> Result<PortInfo, OpsError> {
    let mut desired = rt.desired().await;
    let project = match visibility.known(&desired, project.clone()) {
        Ok(p) => p,
        // A project added a moment ago may not have reached this process yet.
        Err(_) => {
            desired = rt.reload().await;
            visibility.known(&desired, project)?
        }
    };
    if !crate::state::is_valid_name(service) {
        return Err(OpsError::InvalidArgument(format!(
            "`{service}` is not a service name ({})",
            crate::state::NAME_HINT
        )));
    }
    let hostname = |d: &crate::state::Desired| {
        d.service(&project, service)
            .and_then(|s| s.hostname.as_ref().map(|h| h.to_string()))
    };
    let known = match rt.ports.port(rt.store.as_ref(), &project, service).await? {
        Some(port) => Some(port),
        None => rt
            .store
            .port_allocation(DEFAULT_HOST, &project, service)
            .await?
            .map(|a| a.port),
    };
    if let Some(port) = known {
        return Ok(PortInfo {
            hostname: hostname(&desired),
            project,
            service: service.to_string(),
            port,
            allocated_now: false,
        });
    }
    let mut declared = None;
    if desired.service(&project, service).is_none() {
        if when_missing == WhenMissing::Fail {
            return Err(OpsError::NotFound(format!(
                "project `{project}` has no service `{service}` (call get_port with allocate: true to add it)"
            )));
        }
        let _serial = rt.declare_serial.lock().await;
        let (p, s) = (project.clone(), service.to_string());
        declared = rt
            .edit_state(move |dir| edit::declare_service(dir, &p, &s))
            .await?
            .undo;
    }
    let scope = Scope {
        project: Some(project.clone()),
        only: Some(crate::providers::ports::block_address(&project)),
    };
    let applied = apply(rt, ApplyRequest::unattended(scope, actor), &mut Unattended).await;
    // Nothing was applied: a service this call declared is taken back out, so a refusal changes
    // nothing (unless someone edited the file since).
    let undeclared = match (&applied, declared) {
        (Ok(ApplyOutcome::Refused { .. }) | Err(_), Some(undo)) => {
            let _serial = rt.declare_serial.lock().await;
            rt.edit_state(move |dir| edit::undo(dir, &undo))
                .await
                .is_ok_and(|e| e.changed)
        }
        _ => false,
    };
    match applied? {
        ApplyOutcome::Refused { refusal, .. } => {
            return Err(OpsError::Internal(format!(
                "the port could not be allocated automatically: {refusal}{}",
                if undeclared {
                    format!(" (service `{service}` was not added to `{project}`)")
                } else {
                    String::new()
                }
            )));
        }
        ApplyOutcome::Applied { report, .. } => {
            if let Some(failed) = report.failed {
                return Err(OpsError::ApplyFailed {
                    message: failed,
                    retry: report.retry,
                });
            }
        }
        ApplyOutcome::NothingToDo { .. } => {}
    }
    let a = rt
        .store
        .port_allocation(DEFAULT_HOST, &project, service)
        .await?
        .ok_or_else(|| {
            OpsError::NotFound(format!(
                "service `{service}` of `{project}` has no port after applying; see get_plan"
            ))
        })?;
    let desired = rt.desired().await;
    Ok(PortInfo {
        hostname: hostname(&desired),
        project,
        service: service.to_string(),
        port: a.port,
        allocated_now: true,
    })
}

/// The port registry as shown to a caller: services' ports, shared services and project blocks.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PortListing {
    pub host: String,
    pub ports: Vec<PortLine>,
    /// Shared services (databases, caches) every project may use.
    #[schemars(with = "Vec<SharedPortView>")]
    pub shared: Vec<SharedPort>,
    /// The project blocks.
    #[schemars(with = "Vec<BlockView>")]
    pub blocks: Vec<PortRange>,
}

/// A shared service's port (schema of [`SharedPort`]).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct SharedPortView {
    host: String,
    name: String,
    port: i32,
}

/// A project's block (schema of [`PortRange`]).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct BlockView {
    host: String,
    project: String,
    start_port: i32,
    end_port: i32,
}

/// The registry, limited to one project when `project` is given (or when only one is visible); the
/// shared services are listed with every project.
pub async fn list_ports(
    rt: &Runtime,
    visibility: &Visibility,
    project: Option<String>,
) -> Result<PortListing, OpsError> {
    let only = visibility.filter(project)?;
    let desired = rt.desired().await;
    let reg = rt.store.port_registry(DEFAULT_HOST).await?;
    let keep = |p: &str| only.as_deref().is_none_or(|o| o == p);
    Ok(PortListing {
        host: DEFAULT_HOST.to_string(),
        ports: port_lines(&desired, &reg, only.as_deref()),
        blocks: reg
            .ranges
            .iter()
            .filter(|r| keep(&r.project))
            .cloned()
            .collect(),
        shared: reg.shared,
    })
}

/// `ports audit` and the status page's port grid: the registry against the TCP sockets listening on
/// this host (`/proc`, read on the blocking pool), with the conflicts between them.
pub async fn audit(rt: &Runtime) -> Result<AuditReport, OpsError> {
    let desired = rt.desired().await;
    let registry = rt.store.port_registry(DEFAULT_HOST).await?;
    let listeners = tokio::task::spawn_blocking(sockets::listening)
        .await
        .map_err(|e| OpsError::Internal(format!("reading /proc/net/tcp panicked: {e}")))?
        .map_err(|e| OpsError::Internal(format!("cannot read /proc/net/tcp: {e}")))?;
    let paths: HashMap<String, PathBuf> = desired
        .projects
        .values()
        .filter_map(|p| p.path.clone().map(|path| (p.name.clone(), path)))
        .collect();
    Ok(ports_audit::audit(&registry, &paths, &listeners))
}
