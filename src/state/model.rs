//! The shapes of the two kinds of state file, as written by people. Every field a semantic check may
//! complain about carries its location ([`Spanned`]); unknown keys are errors.
//!
//! These types are only for reading and for the JSON Schema; the engine works on [`super::Desired`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// `state/supervisor.yaml`: global settings.
#[derive(Debug, Clone, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "supervisor.yaml",
    description = "Global settings of a supervisor state directory."
)]
pub struct SupervisorFile {
    /// Port ranges: per-project blocks and shared services.
    #[serde(default)]
    pub ports: PortsSettings,
    /// Services shared by all projects (databases, caches), on fixed ports in the shared range.
    #[serde(default)]
    pub shared_services: Vec<SharedServiceDecl>,
    /// Cloudflare zone and tunnel for public hostnames.
    #[serde(default)]
    pub cloudflare: Option<CloudflareSettings>,
    /// Google Cloud credentials for the VMs.
    #[serde(default)]
    pub gcloud: Option<GcloudSettings>,
    /// Compute Engine VMs whose machine type is managed.
    #[serde(default)]
    pub vms: Vec<VmDecl>,
    /// Agent instructions (CLAUDE.md): the size budget and the meta supervisor's working directory.
    #[serde(default)]
    pub instructions: Option<InstructionsDecl>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstructionsDecl {
    /// Characters allowed in a generated CLAUDE.md section (default 40000).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub budget: Option<Spanned<u32>>,
    /// The meta supervisor's working directory: its CLAUDE.md gets the core and meta layers and the
    /// facts of every project. Relative paths are relative to the state directory's parent.
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub meta_path: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PortsSettings {
    /// Where project blocks are assigned.
    pub projects: ProjectPortRange,
    /// Where shared services live.
    pub shared: PortSpan,
}

impl Default for PortsSettings {
    fn default() -> Self {
        PortsSettings {
            projects: ProjectPortRange::default(),
            shared: PortSpan {
                start: Spanned::new(9000, loc0(), loc0()),
                end: Spanned::new(9999, loc0(), loc0()),
            },
        }
    }
}

fn loc0() -> serde_saphyr::Location {
    serde_saphyr::Location::UNKNOWN
}

/// At most this much of a wrongly typed value is quoted back in an error.
const QUOTED_MAX: usize = 40;

fn quoted(v: &str) -> String {
    let mut q: String = v.chars().take(QUOTED_MAX).collect();
    if v.chars().count() > QUOTED_MAX {
        q.push('…');
    }
    q
}

/// A port as the schema says: an integer. YAML parsers read a quoted `"3005"` into a number field
/// without complaint; this does not (the value's YAML type is asked for, not its text).
struct StrictPort(u16);

impl<'de> Deserialize<'de> for StrictPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StrictPort;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port (an integer from 0 to 65535)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StrictPort, E> {
                u16::try_from(v)
                    .map(StrictPort)
                    .map_err(|_| E::custom(format!("{v} is not a port (0–65535)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StrictPort, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not a port (0–65535)")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrictPort, E> {
                Err(E::custom(format!(
                    "a port must be an integer, not the string \"{}\" (remove the quotes)",
                    quoted(v)
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean as the schema says: `true` or `false`, not the string `"true"`.
struct StrictBool(bool);

impl<'de> Deserialize<'de> for StrictBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StrictBool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<StrictBool, E> {
                Ok(StrictBool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrictBool, E> {
                Err(E::custom(format!(
                    "expected true or false, not the string \"{}\" (remove the quotes)",
                    quoted(v)
                )))
            }
        }
        d.deserialize_any(V)
    }
}

fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Spanned<u16>, D::Error> {
    let s = Spanned::<StrictPort>::deserialize(d)?;
    Ok(Spanned::new(s.value.0, s.referenced, s.defined))
}

fn optional_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Spanned<u16>>, D::Error> {
    Ok(Option::<Spanned<StrictPort>>::deserialize(d)?
        .map(|s| Spanned::new(s.value.0, s.referenced, s.defined)))
}

fn boolean<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(StrictBool::deserialize(d)?.0)
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPortRange {
    /// First port of the first block.
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub start: Spanned<u16>,
    /// Last port any block may use.
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub end: Spanned<u16>,
    /// Ports per project block.
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub block: Spanned<u16>,
}

impl Default for ProjectPortRange {
    fn default() -> Self {
        ProjectPortRange {
            start: Spanned::new(3000, loc0(), loc0()),
            end: Spanned::new(8999, loc0(), loc0()),
            block: Spanned::new(100, loc0(), loc0()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpan {
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub start: Spanned<u16>,
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub end: Spanned<u16>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedServiceDecl {
    /// Lower-case letters, digits and dashes.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A port in the shared range.
    #[schemars(with = "u16")]
    #[serde(deserialize_with = "port")]
    pub port: Spanned<u16>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSettings {
    /// The DNS zone, e.g. example.com. Every public hostname must be inside it.
    #[schemars(with = "String")]
    pub zone: Spanned<String>,
    /// The Cloudflare account id (needed for the remote tunnel configuration).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub account_id: Option<Spanned<String>>,
    /// A reference to the API token in the vault: `secret:meta/cloudflare/api_token`.
    #[schemars(with = "String")]
    pub api_token: Spanned<String>,
    /// API base URL (default https://api.cloudflare.com/client/v4; env SUPERVISOR_CLOUDFLARE_API_URL wins).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub api_url: Option<Spanned<String>>,
    pub tunnel: TunnelSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelMode {
    /// Render cloudflared's config.yml on this host.
    Local,
    /// Edit the remote-managed tunnel configuration through the API.
    Remote,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelSettings {
    /// The tunnel's UUID.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    pub mode: TunnelMode,
    /// local mode: where cloudflared's config.yml is written.
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub config_path: Option<Spanned<PathBuf>>,
    /// local mode: the tunnel credentials file cloudflared reads.
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub credentials_file: Option<Spanned<PathBuf>>,
    /// local mode: the command that makes cloudflared pick up the new file.
    #[serde(default)]
    pub reload: Option<String>,
    /// CNAME target (default `<id>.cfargotunnel.com`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub target: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcloudSettings {
    /// A reference to the service-account JSON in the vault: `secret:meta/gcloud/service_account`.
    #[schemars(with = "String")]
    pub credentials: Spanned<String>,
    /// Compute Engine API base URL (default https://compute.googleapis.com/compute/v1; env
    /// SUPERVISOR_GCE_API_URL wins).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub api_url: Option<Spanned<String>>,
    /// Cloud Monitoring API base URL (default https://monitoring.googleapis.com/v3; env
    /// SUPERVISOR_MONITORING_API_URL wins).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub monitoring_api_url: Option<Spanned<String>>,
    /// API Keys API base URL (default https://apikeys.googleapis.com/v2; env
    /// SUPERVISOR_APIKEYS_API_URL wins).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub apikeys_api_url: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmDecl {
    /// The instance name in Compute Engine.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The Google Cloud project id the instance lives in (not a supervisor project).
    #[serde(default)]
    #[schemars(with = "String")]
    pub gcp_project: Option<Spanned<String>>,
    /// Deprecated spelling of `gcp_project` (accepted with a warning; `supervisor fmt` rewrites it).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("deprecated" = true))]
    pub project: Option<Spanned<String>>,
    /// e.g. us-central1-a
    #[schemars(with = "String")]
    pub zone: Spanned<String>,
    /// e.g. e2-standard-4 or custom-4-16384
    #[schemars(with = "String")]
    pub machine_type: Spanned<String>,
    /// `true`: keep the VM running (start it when it is stopped, also after a resize); `false`: keep
    /// it stopped (stopping it is disruptive). Absent: leave it as it is (a resize restarts a VM that
    /// was running and leaves a stopped one stopped).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub running: Option<Spanned<bool>>,
}

/// A Google Cloud API key the supervisor creates and stores in the vault.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDecl {
    /// Lower-case letters, digits and dashes; unique in the project.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The Google Cloud project the key is created in.
    #[schemars(with = "String")]
    pub gcp_project: Spanned<String>,
    /// Shown in the Cloud console (at most 63 characters; default `<project>/<name>`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub display_name: Option<Spanned<String>>,
    /// Services the key may call, e.g. maps-backend.googleapis.com (empty: unrestricted).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub restrict_apis: Vec<Spanned<String>>,
    /// The vault path the key string is written to (`project/<name>/…` of this project).
    #[schemars(with = "String")]
    pub store: Spanned<String>,
}

/// `state/projects/<name>.yaml`: one project.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "project",
    description = "One project of a supervisor state directory."
)]
pub struct ProjectFile {
    /// Must equal the file name without `.yaml`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The working copy, where CLAUDE.md is written.
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub path: Option<Spanned<PathBuf>>,
    /// First port of the project's block (aligned to the block size); otherwise the next free block.
    #[serde(default, deserialize_with = "optional_port")]
    #[schemars(with = "Option<u16>")]
    pub port_range: Option<Spanned<u16>>,
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
    #[serde(default)]
    pub secrets: SecretsDecl,
    /// Commands agents may ask the supervisor to run to verify work.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Folders (relative to `path`) that `serve` keeps indexed for knowledge search, e.g. [docs, src].
    /// Each becomes a knowledge source of the project named after the folder.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub knowledge: Vec<Spanned<String>>,
    /// Free-form project instructions for agents (the project's CLAUDE.md layer).
    #[serde(default)]
    pub instructions: Option<String>,
    /// A folder of `*.md` files that are part of the project's CLAUDE.md layer (relative to `path`).
    #[serde(default)]
    #[schemars(with = "Option<PathBuf>")]
    pub instructions_dir: Option<Spanned<PathBuf>>,
    /// Google Cloud API keys created for the project, their key strings stored in the vault.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyDecl>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    /// Lower-case letters, digits and dashes; unique in the project.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Pin a port inside the project's block; otherwise the first free one is allocated.
    #[serde(default, deserialize_with = "optional_port")]
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<u16>>,
    /// Public hostname → tunnel ingress rule + proxied CNAME.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub hostname: Option<Spanned<String>>,
    /// Refuse any plan that removes this service.
    #[serde(default, deserialize_with = "boolean")]
    pub prevent_destroy: bool,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsDecl {
    /// Vault paths that must be set (`project/<name>/…` or `service/<name>/<service>/…`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub required: Vec<Spanned<String>>,
}
