//! Desired state: the YAML files under `state/`, loaded into a validated [`Desired`] or rejected with
//! every problem located at `file:line:col`.
//!
//! ```text
//! state/
//!   supervisor.yaml        global settings (optional: defaults apply when absent)
//!   projects/<name>.yaml   one file per project
//! ```
//!
//! Loading is all-or-nothing: a [`Desired`] exists only when every file parsed and every check passed,
//! so nothing downstream ever acts on a half-written or inconsistent state. The [`Desired::revision`]
//! fingerprints the files' bytes; machine edits name the revision they read (optimistic concurrency).

pub mod canonical;
mod diagnostic;
pub mod edit;
mod hostname;
pub mod model;
pub mod scaffold;
pub mod schema;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use hostname::Hostname;
pub use model::TunnelMode;
pub(crate) use validate::{NAME_HINT, is_valid_name};

pub const SUPERVISOR_FILE: &str = "supervisor.yaml";
pub const PROJECTS_DIR: &str = "projects";

/// The validated desired state of a whole state directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Desired {
    #[serde(skip)]
    pub dir: PathBuf,
    /// `sha256:` of every state file's relative path and bytes.
    pub revision: String,
    pub ports: PortSettings,
    pub shared_services: Vec<SharedService>,
    pub cloudflare: Option<Cloudflare>,
    pub gcloud: Option<Gcloud>,
    pub vms: Vec<Vm>,
    pub instructions: InstructionSettings,
    pub projects: BTreeMap<String, Project>,
    /// Problems that do not stop loading (a deprecated key), located like errors.
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

/// How CLAUDE.md files are generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstructionSettings {
    /// Characters allowed in a generated section.
    pub budget: usize,
    /// The meta supervisor's working directory (absolute).
    pub meta_path: Option<PathBuf>,
}

/// The size budget of a generated CLAUDE.md section when `instructions.budget` is not set.
pub const DEFAULT_INSTRUCTIONS_BUDGET: usize = 40_000;

impl Default for InstructionSettings {
    fn default() -> Self {
        InstructionSettings {
            budget: DEFAULT_INSTRUCTIONS_BUDGET,
            meta_path: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortSettings {
    pub projects_start: u16,
    pub projects_end: u16,
    pub block: u16,
    pub shared_start: u16,
    pub shared_end: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedService {
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cloudflare {
    pub zone: String,
    pub account_id: Option<String>,
    /// A vault path (`meta/cloudflare/api_token`), never the token.
    pub api_token_secret: String,
    pub api_url: Option<String>,
    pub tunnel: Tunnel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    pub id: String,
    pub mode: TunnelMode,
    pub config_path: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    pub reload: Option<String>,
    /// The CNAME target: `<id>.cfargotunnel.com` unless overridden.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gcloud {
    /// A vault path (`meta/gcloud/service_account`), never the key.
    pub credentials_secret: String,
    /// Compute Engine API base URL (`gcloud.api_url`).
    pub api_url: Option<String>,
    pub monitoring_api_url: Option<String>,
    pub apikeys_api_url: Option<String>,
}

/// A Compute Engine VM whose machine type (and optionally running state) is managed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vm {
    pub name: String,
    /// The Google Cloud project id (not a supervisor project).
    pub gcp_project: String,
    pub zone: String,
    /// Short name, e.g. `e2-standard-4`.
    pub machine_type: String,
    /// `Some(true)`: keep running; `Some(false)`: keep stopped; `None`: leave as it is.
    pub running: Option<bool>,
}

/// A Google Cloud API key declared by a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub gcp_project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrict_apis: Vec<String>,
    /// The vault path the key string is written to.
    pub store: String,
}

/// One project, in the shape of its file (this is also what machine edits write back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    /// The host whose port space and tunnel the project uses (one host today).
    #[serde(skip, default = "default_host")]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "RequiredSecrets::is_empty")]
    pub secrets: RequiredSecrets,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Folders under `path` kept indexed for knowledge search (as written, without a trailing `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knowledge: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// A folder of `*.md` files that join the project's instruction layer (relative to `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKey>,
}

fn default_host() -> String {
    crate::store::DEFAULT_HOST.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prevent_destroy: bool,
}

#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RequiredSecrets {
    #[serde(default)]
    pub required: Vec<String>,
}

impl RequiredSecrets {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
    }
}

impl Desired {
    pub fn project_file(&self, name: &str) -> PathBuf {
        project_file_path(&self.dir, name)
    }

    /// The declared service `service` of `project`.
    pub fn service(&self, project: &str, service: &str) -> Option<&Service> {
        self.projects
            .get(project)?
            .services
            .iter()
            .find(|s| s.name == service)
    }

    pub fn service_count(&self) -> usize {
        self.projects.values().map(|p| p.services.len()).sum()
    }

    /// The declared VM `name`.
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.name == name)
    }
}

pub fn project_file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(PROJECTS_DIR).join(format!("{name}.yaml"))
}

/// The raw files of a state directory, read once (the revision is computed over exactly these bytes).
#[derive(Debug, Clone)]
pub struct Sources {
    pub dir: PathBuf,
    /// `None` when there is no supervisor.yaml.
    pub supervisor: Option<(PathBuf, String)>,
    pub projects: Vec<(PathBuf, String)>,
}

impl Sources {
    pub fn read(dir: &Path) -> Result<Sources, Diagnostics> {
        let fail = |msg: String, hint: &str| {
            Diagnostics(vec![Diagnostic::whole_file(dir, msg).hint(hint)])
        };
        let meta = std::fs::metadata(dir).map_err(|e| {
            fail(
                format!("cannot read the state directory: {e}"),
                "run `supervisor init` to scaffold one, or point --state / SUPERVISOR_STATE_DIR at it",
            )
        })?;
        if !meta.is_dir() {
            return Err(fail(
                "the state path is not a directory".into(),
                "point --state at a directory",
            ));
        }
        let mut diags = Vec::new();
        let read = |path: PathBuf, diags: &mut Vec<Diagnostic>| match std::fs::read_to_string(&path)
        {
            Ok(text) => Some((path, text)),
            Err(e) => {
                diags.push(Diagnostic::whole_file(&path, format!("cannot read: {e}")));
                None
            }
        };
        let sup_path = dir.join(SUPERVISOR_FILE);
        let supervisor = if sup_path.exists() {
            read(sup_path, &mut diags)
        } else {
            None
        };
        let mut projects = Vec::new();
        let pdir = dir.join(PROJECTS_DIR);
        if pdir.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(&pdir) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    diags.push(Diagnostic::whole_file(&pdir, format!("cannot list: {e}")));
                    Vec::new()
                }
            };
            entries.sort();
            for path in entries {
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    let shown = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    diags.push(
                        Diagnostic::whole_file(
                            &path,
                            format!("this file name is not valid UTF-8, so it cannot be a project file (shown as {shown})"),
                        )
                        .hint("rename it: a project file is named <project>.yaml, with the project's name in lower-case letters, digits and dashes"),
                    );
                    continue;
                };
                // Editors' and our own temporary files are not state.
                if name.starts_with('.') || name.ends_with('~') {
                    continue;
                }
                if name.ends_with(".yml") {
                    diags.push(
                        Diagnostic::whole_file(&path, "project files must end in .yaml")
                            .hint("rename it to .yaml (one spelling keeps the file name = project name rule simple)"),
                    );
                    continue;
                }
                if !name.ends_with(".yaml") || !path.is_file() {
                    continue;
                }
                if let Some(src) = read(path, &mut diags) {
                    projects.push(src);
                }
            }
        }
        if diags.is_empty() {
            Ok(Sources {
                dir: dir.to_path_buf(),
                supervisor,
                projects,
            })
        } else {
            Err(Diagnostics(diags))
        }
    }

    /// `sha256:<hex>` over each file's path relative to the state directory and its bytes.
    pub fn revision(&self) -> String {
        let mut h = Sha256::new();
        for (path, text) in self.supervisor.iter().chain(&self.projects) {
            let rel = path.strip_prefix(&self.dir).unwrap_or(path);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        format!("sha256:{}", hex::encode(&h.finalize()[..16]))
    }
}

/// Reads, parses and validates a state directory.
pub fn load(dir: &Path) -> Result<Desired, Diagnostics> {
    let sources = Sources::read(dir)?;
    validate::desired_from_sources(&sources)
}

/// A one-line summary for `doctor` (`3 projects, 7 services, revision sha256:…`), or the problems.
pub fn summary(dir: &Path) -> Result<String, String> {
    match load(dir) {
        Ok(d) => Ok(format!(
            "{} project{}, {} service{}, revision {}",
            d.projects.len(),
            if d.projects.len() == 1 { "" } else { "s" },
            d.service_count(),
            if d.service_count() == 1 { "" } else { "s" },
            d.revision
        )),
        Err(diags) => {
            let errors: Vec<&Diagnostic> = diags.0.iter().filter(|d| d.is_error()).collect();
            let first = errors
                .first()
                .map(|d| d.message.clone())
                .unwrap_or_default();
            Err(match errors.len() {
                1 => first,
                n => format!("{first} (and {} more; run `supervisor validate`)", n - 1),
            })
        }
    }
}

/// Which external providers the state configures, for `doctor` (only when the state is valid).
pub fn configured_providers(dir: &Path) -> Vec<(&'static str, String)> {
    let Ok(d) = load(dir) else { return Vec::new() };
    let mut out = vec![(
        "ports",
        format!(
            "project blocks of {} in {}–{}, shared services in {}–{}",
            d.ports.block,
            d.ports.projects_start,
            d.ports.projects_end,
            d.ports.shared_start,
            d.ports.shared_end
        ),
    )];
    out.push(match &d.cloudflare {
        Some(cf) => (
            "cloudflare",
            format!(
                "zone {}, tunnel {} ({} mode), token from secret {}",
                cf.zone,
                cf.tunnel.id,
                match cf.tunnel.mode {
                    TunnelMode::Local => "local",
                    TunnelMode::Remote => "remote",
                },
                cf.api_token_secret
            ),
        ),
        None => (
            "cloudflare",
            "not configured (no public hostnames are managed)".into(),
        ),
    });
    let keys: usize = d.projects.values().map(|p| p.api_keys.len()).sum();
    out.push(match &d.gcloud {
        Some(g) => (
            "gcloud",
            format!(
                "{} VM{}, {} API key{}, credentials from secret {}",
                d.vms.len(),
                if d.vms.len() == 1 { "" } else { "s" },
                keys,
                if keys == 1 { "" } else { "s" },
                g.credentials_secret
            ),
        ),
        None => (
            "gcloud",
            "not configured (no VMs or API keys are managed)".into(),
        ),
    });
    out
}

/// The git revision of the state directory when it is in a git checkout: `abc1234` or
/// `abc1234+dirty` when state files have uncommitted changes. `None` outside git.
pub fn git_revision(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = run(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = run(&["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// A state file and its canonical form.
#[derive(Debug, Clone)]
pub struct Formatted {
    pub path: PathBuf,
    pub original: String,
    pub canonical: String,
}

impl Formatted {
    pub fn changed(&self) -> bool {
        self.original != self.canonical
    }
}

/// Every state file with its canonical form (see [`canonical`]). Needs each file to parse; cross-file
/// problems (an overlapping block) do not stop formatting.
pub fn canonical_files(dir: &Path) -> Result<Vec<Formatted>, Diagnostics> {
    let sources = Sources::read(dir)?;
    let mut out = Vec::new();
    let mut diags = Vec::new();
    if let Some((path, text)) = &sources.supervisor {
        match validate::parse_file::<model::SupervisorFile>(path, text) {
            Ok(f) => out.push(Formatted {
                path: path.clone(),
                original: text.clone(),
                canonical: canonical::supervisor_yaml(&f, Some(text)),
            }),
            Err(d) => diags.extend(d.0),
        }
    }
    for (path, text) in &sources.projects {
        match validate::parse_file::<model::ProjectFile>(path, text) {
            Ok(f) => out.push(Formatted {
                path: path.clone(),
                original: text.clone(),
                canonical: canonical::project_yaml(&validate::project_from_file(&f), Some(text)),
            }),
            Err(d) => diags.extend(d.0),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(diags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_file_whose_name_is_not_utf8_is_reported() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let projects = dir.path().join(PROJECTS_DIR);
        std::fs::create_dir_all(&projects).unwrap();
        std::fs::write(projects.join("shop.yaml"), "name: shop\n").unwrap();
        let odd = projects.join(std::ffi::OsStr::from_bytes(b"caf\xe9.yaml"));
        std::fs::write(&odd, "name: cafe\n").unwrap();
        let diags = load(dir.path()).unwrap_err();
        assert_eq!(diags.0.len(), 1, "{diags}");
        let d = &diags.0[0];
        assert_eq!(d.file, odd);
        assert_eq!(
            d.message,
            "this file name is not valid UTF-8, so it cannot be a project file (shown as caf\u{fffd}.yaml)"
        );
        assert!(d.hint.as_deref().unwrap_or("").contains("rename"), "{d}");
    }
}
