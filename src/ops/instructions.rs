//! Instructions as the CLI (and the page) ask for them: a CLAUDE.md section rendered from the current
//! desired state and plan, and a drafted project layer written into a project's state file.

use std::path::Path;

use super::{OpsError, Runtime};
use crate::engine::Scope;
use crate::instructions::{self, adapt, facts, layers, render};
use crate::providers::ports::PlannedPorts;
use crate::state::edit;

/// Whose CLAUDE.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Project(String),
    Meta,
}

/// A rendered section and, when the target has a folder on this host, the whole file as apply writes it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub section: String,
    pub file: Option<String>,
    pub path: Option<std::path::PathBuf>,
    pub sizes: Vec<(String, usize)>,
    /// Over the budget: what the plan will say.
    pub budget_error: Option<String>,
}

/// Renders `target` from the runtime's desired state and the ports a fresh plan hands out.
pub async fn render(rt: &Runtime, target: &Target, actor: &str) -> Result<Rendered, OpsError> {
    let desired = rt.desired().await;
    let plan = rt.plan(&Scope::default(), actor).await?;
    let ports = plan
        .outputs
        .get::<PlannedPorts>()
        .cloned()
        .unwrap_or_default();
    let endpoint = facts::Endpoint {
        base_url: rt.mcp_base_url(),
    };
    let target = target.clone();
    tokio::task::spawn_blocking(move || -> Result<Rendered, OpsError> {
        let layers = layers::load(&desired.dir).map_err(|e| OpsError::Internal(e.to_string()))?;
        let port_of = |p: &str, s: &str| ports.get(p, s);
        let (list, dir) = match &target {
            Target::Project(name) => {
                let p = desired
                    .projects
                    .get(name)
                    .ok_or_else(|| OpsError::NotFound(format!("there is no project `{name}`")))?;
                (
                    instructions::for_project(&layers, &desired, p, port_of, &endpoint)
                        .map_err(|e| OpsError::Internal(e.to_string()))?,
                    p.path.clone(),
                )
            }
            Target::Meta => (
                instructions::for_meta(&layers, &desired, port_of, &endpoint),
                desired.instructions.meta_path.clone(),
            ),
        };
        let assembled = render::assemble(&list);
        let path = dir
            .filter(|d| d.is_dir())
            .map(|d| instructions::claude_md(&d));
        let file = path.as_ref().map(|p| {
            let existing = std::fs::read_to_string(p).ok();
            render::merge(existing.as_deref(), &assembled.text)
        });
        Ok(Rendered {
            section: render::section(&assembled.text),
            budget_error: render::check_budget(&assembled, desired.instructions.budget).err(),
            sizes: assembled.sizes,
            file,
            path,
        })
    })
    .await
    .map_err(|e| OpsError::Internal(format!("rendering panicked: {e}")))?
}

/// What `adapt` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Adapted {
    pub draft: String,
    /// The state file written, when a project was named.
    pub written: Option<String>,
    pub languages: Vec<String>,
}

/// Drafts a project layer from the folder `dir`; with `project`, writes it as that project's
/// `instructions:` — refused when the project has hand-written instructions, unless `force`.
pub async fn adapt(
    rt: &Runtime,
    dir: &Path,
    project: Option<&str>,
    force: bool,
) -> Result<Adapted, OpsError> {
    let d = dir.to_path_buf();
    if !tokio::task::spawn_blocking({
        let d = d.clone();
        move || d.is_dir()
    })
    .await
    .unwrap_or(false)
    {
        return Err(OpsError::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let name = project
        .map(str::to_string)
        .or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "project".into());
    let findings = tokio::task::spawn_blocking(move || adapt::inspect(&d))
        .await
        .map_err(|e| OpsError::Internal(format!("inspecting panicked: {e}")))?;
    let draft = adapt::draft(&name, &findings);
    let mut written = None;
    if let Some(project) = project {
        let desired = rt.desired().await;
        let p = desired
            .projects
            .get(project)
            .ok_or_else(|| OpsError::NotFound(format!("there is no project `{project}`")))?;
        if let Some(current) = p.instructions.as_deref()
            && !adapt::is_draft(current)
            && !current.trim().is_empty()
            && !force
        {
            return Err(OpsError::InvalidArgument(format!(
                "project `{project}` has hand-written instructions in {}; re-run with --force to replace them with the draft",
                desired.project_file(project).display()
            )));
        }
        let (p, text) = (project.to_string(), draft.clone());
        let edited = rt
            .edit_state(move |dir| edit::set_instructions(dir, &p, &text))
            .await?;
        written = Some(edited.path.display().to_string());
    }
    Ok(Adapted {
        draft,
        written,
        languages: findings.languages.into_iter().collect(),
    })
}
