//! Google Cloud tools, served on the meta endpoint only: VMs are the host's, not a project's (the
//! supervisor does not model which project runs on which VM), and API keys are created with the
//! host's service account. Reads ask Compute Engine and Cloud Monitoring; edits change desired state
//! (validated, atomic, revision-checked) and return the plan — applying a resize stays a human
//! decision (it is disruptive: `apply_plan` and `serve --auto-apply` leave it waiting).

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::state::EditOut;
use crate::mcp::McpServer;
use crate::ops::{self, OpsError};
use crate::providers::vm_info::{VmHealth, VmInfo};
use crate::state::ApiKey;

/// The tools of this module (all meta-only).
pub const TOOLS: &[&str] = &[
    "gcloud_get_vm",
    "gcloud_vm_health",
    "gcloud_resize_vm",
    "create_api_key",
];

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VmArgs {
    /// The VM's name, as listed under `vms:` in supervisor.yaml.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VmHealthArgs {
    /// The VM's name, as listed under `vms:` in supervisor.yaml.
    pub name: String,
    /// How far back to look, in minutes (1 to 10080; default 60).
    #[serde(default)]
    pub minutes: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ResizeVmArgs {
    /// The VM's name, as listed under `vms:` in supervisor.yaml.
    pub name: String,
    /// The new machine type, e.g. e2-standard-8, n2-highmem-4 or custom-4-16384.
    pub machine_type: String,
    /// The desired-state revision you last read (get_plan, list_projects). A stale one is refused.
    pub revision: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateApiKeyArgs {
    /// The supervisor project that uses the key (its state file gets the declaration).
    pub project: String,
    /// The key's name in the project: lower-case letters, digits and dashes.
    pub name: String,
    /// The Google Cloud project the key is created in.
    pub gcp_project: String,
    /// Shown in the Cloud console (at most 63 characters; default `<project>/<name>`).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Services the key may call, e.g. ["maps-backend.googleapis.com"] (empty: unrestricted).
    #[serde(default)]
    pub restrict_apis: Vec<String>,
    /// The vault path for the key string (default `project/<project>/<name>_api_key`).
    #[serde(default)]
    pub store: Option<String>,
    /// The desired-state revision you last read. A stale one is refused.
    pub revision: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmOut {
    pub vm: VmInfo,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmHealthOut {
    pub health: VmHealth,
}

fn edit_out(o: ops::gcloud::EditOutcome) -> EditOut {
    EditOut {
        revision: o.edited.revision,
        file: o.edited.path.display().to_string(),
        changed: o.edited.changed,
        plan: o.plan,
    }
}

#[tool_router(router = gcloud_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "A Compute Engine VM listed in supervisor.yaml, as Google reports it now: status, machine type (and the one desired state asks for), vCPUs, memory in MB, internal and external IP, disks with their sizes."
    )]
    async fn gcloud_get_vm(
        &self,
        Parameters(args): Parameters<VmArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("gcloud_get_vm", async {
            self.meta_only()?;
            let vm = ops::gcloud::get_vm(&self.runtime, &args.name, &actor).await?;
            Ok(Json(VmOut { vm }))
        })
        .await
    }

    #[tool(
        description = "Recent use of a VM listed in supervisor.yaml, from Cloud Monitoring: CPU average, max and current percent over the window (default 60 minutes); memory and disk use only when the Ops Agent reports them — otherwise `reported: false` with a note, never an invented number."
    )]
    async fn gcloud_vm_health(
        &self,
        Parameters(args): Parameters<VmHealthArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<VmHealthOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("gcloud_vm_health", async {
            self.meta_only()?;
            let minutes = args.minutes.unwrap_or(60);
            let health = ops::gcloud::vm_health(&self.runtime, &args.name, minutes, &actor).await?;
            Ok(Json(VmHealthOut { health }))
        })
        .await
    }

    #[tool(
        description = "Change a VM's machine type in desired state (supervisor.yaml; validated, revision-checked) and return the plan for that VM. Nothing is resized by this tool: a resize stops the VM, so it is disruptive and only a human applies it (`supervisor apply --allow-disruptive`); apply_plan refuses it."
    )]
    async fn gcloud_resize_vm(
        &self,
        Parameters(args): Parameters<ResizeVmArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EditOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("gcloud_resize_vm", async {
            self.meta_only()?;
            let outcome = ops::gcloud::resize_vm(
                &self.runtime,
                &args.name,
                &args.machine_type,
                &args.revision,
                &actor,
            )
            .await?;
            Ok(Json(edit_out(outcome)))
        })
        .await
    }

    #[tool(
        description = "Declare a Google Cloud API key for a project (its state file; validated, revision-checked) and return the project's plan. When the plan is applied, the key is created with the API Keys API and its key string goes straight into the vault at `store` — it never appears in a plan, a tool result or a log."
    )]
    async fn create_api_key(
        &self,
        Parameters(args): Parameters<CreateApiKeyArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EditOut>, String> {
        let actor = self.principal(&ctx).actor();
        self.track("create_api_key", async {
            self.meta_only()?;
            let desired = self.runtime.desired().await;
            let project = self.visibility().known(&desired, Some(args.project))?;
            let store = args.store.unwrap_or_else(|| {
                format!("project/{project}/{}_api_key", args.name.replace('-', "_"))
            });
            let key = ApiKey {
                name: args.name,
                gcp_project: args.gcp_project,
                display_name: args.display_name,
                restrict_apis: args.restrict_apis,
                store,
            };
            let outcome =
                ops::gcloud::declare_api_key(&self.runtime, &project, key, &args.revision, &actor)
                    .await?;
            Ok(Json(edit_out(outcome)))
        })
        .await
    }
}

impl McpServer {
    /// These tools act with the host's Google credentials: the meta endpoint only (their routes are
    /// not on project endpoints; this guards a direct call too).
    fn meta_only(&self) -> Result<(), OpsError> {
        match self.endpoint.project() {
            None => Ok(()),
            Some(p) => Err(OpsError::InvalidArgument(format!(
                "this endpoint serves project `{p}` only; Google Cloud tools are on /mcp/meta"
            ))),
        }
    }
}
