//! Compute Engine API v1: instances (get, stop, start, setMachineType), zonal operations (get, wait)
//! and machine types (get), with the field names of the published discovery document.
//!
//! Mutations carry a `requestId` (a UUID the caller derives from the apply run and the step): Google
//! ignores a repeated request with an id it has already received, so they are sent as idempotent and
//! retried under the HTTP policy without risk of stopping a VM twice. `zoneOperations.wait` is held
//! open by the server for up to about two minutes, so it gets its own, longer timeout.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::auth::TokenSource;
use super::{GoogleApi, GoogleError, short_name};
use crate::clients::HttpPolicy;
use crate::clients::http::{ApiError, ApiRequest};

const API: &str = "Compute Engine API";

/// The server holds `operations.wait` for up to ~2 minutes; the call's own timeout is a bit longer.
pub const WAIT_CALL_TIMEOUT: Duration = Duration::from_secs(150);

/// Instance statuses of the contract.
pub mod status {
    pub const PROVISIONING: &str = "PROVISIONING";
    pub const STAGING: &str = "STAGING";
    pub const RUNNING: &str = "RUNNING";
    pub const STOPPING: &str = "STOPPING";
    pub const STOPPED: &str = "STOPPED";
    pub const SUSPENDING: &str = "SUSPENDING";
    pub const SUSPENDED: &str = "SUSPENDED";
    pub const REPAIRING: &str = "REPAIRING";
    pub const TERMINATED: &str = "TERMINATED";
}

/// An instance, as `instances.get` returns it (the fields the supervisor uses).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Instance {
    /// uint64 as a string.
    pub id: String,
    pub name: String,
    pub status: String,
    pub status_message: Option<String>,
    /// A full URL: `…/zones/<zone>/machineTypes/<type>`.
    pub machine_type: String,
    pub zone: String,
    pub cpu_platform: Option<String>,
    pub creation_timestamp: Option<String>,
    pub last_start_timestamp: Option<String>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub disks: Vec<AttachedDisk>,
    pub self_link: Option<String>,
}

impl Instance {
    /// The machine type's short name (`e2-standard-4`).
    pub fn machine_type_name(&self) -> &str {
        short_name(&self.machine_type)
    }

    /// The zone's short name.
    pub fn zone_name(&self) -> &str {
        short_name(&self.zone)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkInterface {
    pub name: Option<String>,
    /// The internal IPv4 address.
    #[serde(rename = "networkIP")]
    pub network_ip: Option<String>,
    pub network: Option<String>,
    pub access_configs: Vec<AccessConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessConfig {
    pub name: Option<String>,
    /// The external IPv4 address.
    #[serde(rename = "natIP")]
    pub nat_ip: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AttachedDisk {
    pub device_name: Option<String>,
    /// The disk resource URL.
    pub source: Option<String>,
    pub boot: bool,
    /// int64 as a string.
    pub disk_size_gb: Option<String>,
    /// PERSISTENT or SCRATCH.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub mode: Option<String>,
    pub interface: Option<String>,
}

/// A machine type (`machineTypes.get`): CPUs and memory of a type name.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineType {
    pub name: String,
    pub guest_cpus: i64,
    pub memory_mb: i64,
    pub is_shared_cpu: bool,
    pub description: Option<String>,
}

/// A zonal operation, as stop/start/setMachineType and `zoneOperations.get|wait` return it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    pub id: Option<String>,
    pub name: String,
    pub zone: Option<String>,
    pub operation_type: Option<String>,
    pub target_link: Option<String>,
    /// PENDING, RUNNING or DONE.
    pub status: String,
    pub status_message: Option<String>,
    pub progress: Option<i64>,
    pub client_operation_id: Option<String>,
    pub insert_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub error: Option<OperationErrors>,
    pub http_error_status_code: Option<i64>,
    pub http_error_message: Option<String>,
}

impl Operation {
    pub fn is_done(&self) -> bool {
        self.status == "DONE"
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct OperationErrors {
    pub errors: Vec<OperationErrorItem>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct OperationErrorItem {
    /// e.g. `ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`.
    pub code: String,
    pub location: Option<String>,
    pub message: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SetMachineTypeRequest {
    machine_type: String,
}

/// The Compute Engine client.
pub struct ComputeClient {
    api: GoogleApi,
}

impl ComputeClient {
    /// `base_url` like `https://compute.googleapis.com/compute/v1`.
    pub fn new(
        base_url: &str,
        auth: Arc<TokenSource>,
        policy: HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(ComputeClient {
            api: GoogleApi::new(API, base_url, auth, policy)?,
        })
    }

    fn instance_path(project: &str, zone: &str, instance: &str) -> Vec<String> {
        ["projects", project, "zones", zone, "instances", instance]
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub async fn get_instance(
        &self,
        project: &str,
        zone: &str,
        instance: &str,
    ) -> Result<Instance, GoogleError> {
        let req = ApiRequest::new(Method::GET, Self::instance_path(project, zone, instance));
        self.api.json(&req).await
    }

    async fn instance_action(
        &self,
        project: &str,
        zone: &str,
        instance: &str,
        action: &str,
        request_id: &str,
        body: Option<&SetMachineTypeRequest>,
    ) -> Result<Operation, GoogleError> {
        let mut segments = Self::instance_path(project, zone, instance);
        segments.push(action.to_string());
        let mut req = ApiRequest::new(Method::POST, segments).query("requestId", request_id);
        if let Some(b) = body {
            req = req.json(b);
        }
        // Safe to repeat: Google deduplicates by requestId.
        self.api.json(&req.idempotent()).await
    }

    /// `instances.stop`.
    pub async fn stop(
        &self,
        project: &str,
        zone: &str,
        instance: &str,
        request_id: &str,
    ) -> Result<Operation, GoogleError> {
        self.instance_action(project, zone, instance, "stop", request_id, None)
            .await
    }

    /// `instances.start`.
    pub async fn start(
        &self,
        project: &str,
        zone: &str,
        instance: &str,
        request_id: &str,
    ) -> Result<Operation, GoogleError> {
        self.instance_action(project, zone, instance, "start", request_id, None)
            .await
    }

    /// `instances.setMachineType` to the short type name (sent as `zones/<zone>/machineTypes/<t>`).
    /// Refused with HTTP 400 unless the instance is stopped.
    pub async fn set_machine_type(
        &self,
        project: &str,
        zone: &str,
        instance: &str,
        machine_type: &str,
        request_id: &str,
    ) -> Result<Operation, GoogleError> {
        let body = SetMachineTypeRequest {
            machine_type: format!("zones/{zone}/machineTypes/{machine_type}"),
        };
        self.instance_action(
            project,
            zone,
            instance,
            "setMachineType",
            request_id,
            Some(&body),
        )
        .await
    }

    /// `zoneOperations.get`.
    pub async fn get_operation(
        &self,
        project: &str,
        zone: &str,
        operation: &str,
    ) -> Result<Operation, GoogleError> {
        let req = ApiRequest::new(
            Method::GET,
            ["projects", project, "zones", zone, "operations", operation],
        );
        self.api.json(&req).await
    }

    /// `zoneOperations.wait`: returns when the operation is DONE or after about two minutes
    /// (possibly earlier), with its current state. Only reads: safe to repeat.
    pub async fn wait_operation(
        &self,
        project: &str,
        zone: &str,
        operation: &str,
        timeout: Duration,
    ) -> Result<Operation, GoogleError> {
        let req = ApiRequest::new(
            Method::POST,
            [
                "projects",
                project,
                "zones",
                zone,
                "operations",
                operation,
                "wait",
            ],
        )
        .timeout(timeout)
        .idempotent();
        self.api.json(&req).await
    }

    /// `machineTypes.get`.
    pub async fn get_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> Result<MachineType, GoogleError> {
        let req = ApiRequest::new(
            Method::GET,
            [
                "projects",
                project,
                "zones",
                zone,
                "machineTypes",
                machine_type,
            ],
        );
        self.api.json(&req).await
    }
}
