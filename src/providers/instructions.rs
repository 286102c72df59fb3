//! CLAUDE.md files as a reconciled resource: `instructions/<project>` (in the project's `path`) and
//! `instructions/meta` (in `instructions.meta_path`, when set).
//!
//! Desired: the file with the supervisor's section assembled from the layers (`crate::instructions`) and
//! the ports this same plan hands out (the ports provider's `PlannedPorts`). Actual: the file on disk.
//! The plan shows a unified diff of the whole file; apply writes it atomically, after checking that the
//! file is still what the plan saw (a human's edit in between is never overwritten). The supervisor owns
//! only the text between its markers: a file without markers is adopted (the section is appended), and
//! an edit inside the markers shows as drifted and is repaired. A project whose `path` does not exist
//! on this host gets a warning and nothing is written. Nothing is ever deleted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::files;
use super::ports::PlannedPorts;
use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, fingerprint,
    payload, to_payload,
};
use crate::instructions::facts::Endpoint;
use crate::instructions::{self, layers, render};
use crate::state::Desired;
use crate::store::{ManagedObject, Store};

pub const NAME: &str = "instructions";
pub const META: &str = "meta";

pub fn address(target: &str) -> String {
    format!("{NAME}/{target}")
}

/// What a change carries: the file and digests of what the plan saw and what it will write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: PathBuf,
    /// The file's digest when the plan observed it (`None`: it did not exist).
    pub observed: Option<String>,
    /// The digest of the file as it will be written.
    pub sha256: String,
    /// The digest of the supervisor's section in it (remembered to tell drift from desired changes).
    pub section_sha256: String,
}

/// One CLAUDE.md to reconcile.
#[derive(Debug, Clone)]
pub struct Target {
    /// `consilio`, or `meta`.
    pub name: String,
    pub project: Option<String>,
    pub dir: PathBuf,
    pub dir_exists: bool,
    /// The file on disk now.
    pub existing: Option<String>,
    /// The section, or why it cannot be assembled (a layer unreadable).
    pub assembled: Result<render::Assembled, String>,
    /// The digest of the section last written (from the inventory).
    pub last_section: Option<String>,
}

/// A rendered file waiting for apply.
#[derive(Debug, Clone)]
struct Rendered {
    content: String,
}

/// Targets against budget → changes, warnings and errors, and the files to write (by address). Pure.
pub fn diff(targets: &[Target], budget: usize) -> (ProviderPlan, BTreeMap<String, String>) {
    let mut out = ProviderPlan::default();
    let mut files_out = BTreeMap::new();
    for t in targets {
        let addr = address(&t.name);
        let path = instructions::claude_md(&t.dir);
        if !t.dir_exists {
            out.warnings.push(Notice {
                provider: NAME.into(),
                address: Some(addr),
                project: t.project.clone(),
                message: format!(
                    "{} does not exist on this host: its CLAUDE.md is not written",
                    t.dir.display()
                ),
            });
            continue;
        }
        out.resources.push(Resource {
            address: addr.clone(),
            provider: NAME.into(),
            project: t.project.clone(),
        });
        if t.last_section.is_some() {
            out.managed += 1;
        }
        let assembled = match &t.assembled {
            Ok(a) => a,
            Err(why) => {
                out.errors.push(Notice {
                    provider: NAME.into(),
                    address: Some(addr),
                    project: t.project.clone(),
                    message: why.clone(),
                });
                continue;
            }
        };
        if let Err(why) = render::check_budget(assembled, budget) {
            out.errors.push(Notice {
                provider: NAME.into(),
                address: Some(addr.clone()),
                project: t.project.clone(),
                message: format!("{}: {why}", path.display()),
            });
            continue;
        }
        let wanted = render::merge(t.existing.as_deref(), &assembled.text);
        let section_sha256 = files::sha256(&assembled.text);
        if t.existing.as_deref() == Some(wanted.as_str()) {
            if t.last_section.as_deref() != Some(section_sha256.as_str()) {
                // The file is right but the inventory does not say so: an apply was interrupted
                // between writing it and recording it. Record it (the file is not written again),
                // so a later edit inside the markers is told apart as drift.
                let digest = files::sha256(&wanted);
                out.changes.push(Change {
                    address: addr.clone(),
                    provider: NAME.into(),
                    action: Action::Update,
                    project: t.project.clone(),
                    before: Some(json!({"path": path, "sha256": digest})),
                    after: Some(to_payload(&FileChange {
                        path: path.clone(),
                        observed: Some(digest.clone()),
                        sha256: digest,
                        section_sha256,
                    })),
                    summary: format!(
                        "{} (written by an interrupted apply, recorded now; the file is not changed)",
                        path.display()
                    ),
                    drifted: false,
                    disruptive: false,
                    diff: None,
                    requires: Vec::new(),
                });
                files_out.insert(addr, wanted);
            }
            continue;
        }
        let current_section = t.existing.as_deref().and_then(|e| match render::split(e) {
            render::Split::Marked { inner, .. } => Some(files::sha256(inner)),
            render::Split::Unmarked(_) => None,
        });
        let drifted = matches!(
            (&current_section, &t.last_section),
            (Some(now), Some(last)) if now != last
        );
        let summary = match (&t.existing, &current_section) {
            (None, _) => format!("{} (new file)", path.display()),
            (Some(_), None) => format!(
                "{} (adopted: the section is appended, the file's text is kept)",
                path.display()
            ),
            (Some(_), Some(_)) => path.display().to_string(),
        };
        let shown = path.display().to_string();
        let change = FileChange {
            path: path.clone(),
            observed: t.existing.as_deref().map(files::sha256),
            sha256: files::sha256(&wanted),
            section_sha256,
        };
        out.changes.push(Change {
            address: addr.clone(),
            provider: NAME.into(),
            action: if t.existing.is_some() {
                Action::Update
            } else {
                Action::Create
            },
            project: t.project.clone(),
            before: t
                .existing
                .as_deref()
                .map(|e| json!({"path": path, "sha256": files::sha256(e)})),
            after: Some(to_payload(&change)),
            summary,
            drifted,
            disruptive: false,
            diff: files::unified_diff(
                t.existing.as_deref().unwrap_or(""),
                &wanted,
                &format!("a{shown}"),
                &format!("b{shown}"),
            ),
            requires: Vec::new(),
        });
        files_out.insert(addr, wanted);
    }
    (out, files_out)
}

pub struct InstructionsProvider {
    store: Arc<dyn Store>,
    endpoint: Endpoint,
    /// What the last plan rendered, by address: apply writes exactly what the plan showed.
    rendered: Mutex<HashMap<String, Rendered>>,
}

impl InstructionsProvider {
    pub fn new(store: Arc<dyn Store>, endpoint: Endpoint) -> Self {
        InstructionsProvider {
            store,
            endpoint,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    async fn targets(
        &self,
        desired: &Desired,
        ports: &PlannedPorts,
    ) -> Result<Vec<Target>, ProviderError> {
        let last: HashMap<String, String> = self
            .store
            .list_managed(NAME)
            .await?
            .into_iter()
            .filter_map(|o| {
                o.attributes
                    .0
                    .get("section_sha256")
                    .and_then(|v| v.as_str())
                    .map(|s| (o.address, s.to_string()))
            })
            .collect();
        let desired = Arc::new(desired.clone());
        let ports = ports.clone();
        let endpoint = self.endpoint.clone();
        // Layers and files are read on the blocking pool.
        let targets = tokio::task::spawn_blocking(move || -> Vec<Target> {
            let layers = layers::load(&desired.dir);
            let port_of = |p: &str, s: &str| ports.get(p, s);
            let mut targets = Vec::new();
            for p in desired.projects.values() {
                let Some(dir) = &p.path else { continue };
                let assembled = match &layers {
                    Ok(l) => instructions::for_project(l, &desired, p, port_of, &endpoint)
                        .map(|layers| render::assemble(&layers))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                targets.push(target(&p.name, Some(&p.name), dir, assembled));
            }
            if let Some(dir) = &desired.instructions.meta_path {
                let assembled = match &layers {
                    Ok(l) => Ok(render::assemble(&instructions::for_meta(
                        l, &desired, port_of, &endpoint,
                    ))),
                    Err(e) => Err(e.to_string()),
                };
                targets.push(target(META, None, dir, assembled));
            }
            targets
        })
        .await
        .map_err(|e| ProviderError::Failed(format!("reading instruction layers: {e}")))?;
        Ok(targets
            .into_iter()
            .map(|mut t| {
                t.last_section = last.get(&address(&t.name)).cloned();
                t
            })
            .collect())
    }
}

fn target(
    name: &str,
    project: Option<&str>,
    dir: &std::path::Path,
    assembled: Result<render::Assembled, String>,
) -> Target {
    let dir_exists = dir.is_dir();
    let existing = dir_exists
        .then(|| std::fs::read_to_string(instructions::claude_md(dir)).ok())
        .flatten();
    Target {
        name: name.to_string(),
        project: project.map(str::to_string),
        dir: dir.to_path_buf(),
        dir_exists,
        existing,
        assembled,
        last_section: None,
    }
}

#[async_trait]
impl Provider for InstructionsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn plan(
        &self,
        desired: &Desired,
        earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let empty = PlannedPorts::default();
        let ports = earlier.get::<PlannedPorts>().unwrap_or(&empty);
        let targets = self.targets(desired, ports).await?;
        let (mut plan, rendered) = diff(&targets, desired.instructions.budget);
        plan.fingerprint = fingerprint(
            &targets
                .iter()
                .map(|t| {
                    (
                        &t.name,
                        t.existing.as_deref().map(files::sha256),
                        &t.last_section,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut cache = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        cache.clear();
        cache.extend(
            rendered
                .into_iter()
                .map(|(addr, content)| (addr, Rendered { content })),
        );
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        let planned: FileChange = payload(change, change.after.as_ref())?;
        let rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&change.address)
            .cloned();
        let Some(rendered) = rendered.filter(|r| files::sha256(&r.content) == planned.sha256)
        else {
            return Err(ProviderError::Failed(format!(
                "{}: the file to write is not the one this plan rendered; run `supervisor plan` again",
                change.address
            )));
        };
        let now = files::read_optional(&planned.path).await?;
        if now.as_deref().map(files::sha256) != planned.observed {
            return Err(ProviderError::Conflict(format!(
                "{}: {} changed since the plan was made; nothing was written (run `supervisor plan` again)",
                change.address,
                planned.path.display()
            )));
        }
        if planned.observed.as_deref() != Some(planned.sha256.as_str()) {
            files::write_atomic(&planned.path, &rendered.content).await?;
        }
        self.store
            .upsert_managed(&ManagedObject {
                provider: NAME.into(),
                address: change.address.clone(),
                external_id: Some(planned.path.display().to_string()),
                attributes: sqlx::types::Json(json!({"section_sha256": planned.section_sha256})),
                adopted: false,
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(existing: Option<&str>, inner: &str, last: Option<&str>) -> Target {
        Target {
            name: "shop".into(),
            project: Some("shop".into()),
            dir: "/srv/shop".into(),
            dir_exists: true,
            existing: existing.map(str::to_string),
            assembled: Ok(render::Assembled {
                text: inner.into(),
                sizes: vec![("core".into(), inner.len())],
            }),
            last_section: last.map(str::to_string),
        }
    }

    #[test]
    fn a_new_file_an_adoption_an_update_and_nothing_to_do() {
        let (plan, files_out) = diff(&[target(None, "x\n", None)], 1000);
        assert_eq!(plan.changes[0].action, Action::Create);
        assert_eq!(files_out["instructions/shop"], render::section("x\n"));

        let (plan, files_out) = diff(&[target(Some("# mine\n"), "x\n", None)], 1000);
        assert_eq!(plan.changes[0].action, Action::Update);
        assert!(plan.changes[0].summary.contains("adopted"));
        assert!(files_out["instructions/shop"].starts_with("# mine\n\n<!-- BEGIN"));

        let current = format!("# mine\n\n{}", render::section("x\n"));
        let (plan, _) = diff(
            &[target(Some(&current), "x\n", Some(&files::sha256("x\n")))],
            1000,
        );
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);

        // Desired changed: an update, not drift.
        let (plan, _) = diff(
            &[target(Some(&current), "y\n", Some(&files::sha256("x\n")))],
            1000,
        );
        assert!(!plan.changes[0].drifted);
        assert!(plan.changes[0].diff.as_ref().unwrap().contains("+y"));
    }

    #[test]
    fn a_file_written_by_an_interrupted_apply_is_recorded_without_writing_it() {
        // Written, but killed before the inventory said so.
        let current = format!("# mine\n\n{}", render::section("x\n"));
        let (plan, files_out) = diff(&[target(Some(&current), "x\n", None)], 1000);
        assert_eq!(plan.changes.len(), 1);
        let c = &plan.changes[0];
        assert_eq!(c.action, Action::Update);
        assert!(!c.drifted && c.diff.is_none());
        assert_eq!(
            c.summary,
            "/srv/shop/CLAUDE.md (written by an interrupted apply, recorded now; the file is not changed)"
        );
        let planned: FileChange = payload(c, c.after.as_ref()).unwrap();
        assert_eq!(planned.observed.as_deref(), Some(planned.sha256.as_str()));
        assert_eq!(planned.section_sha256, files::sha256("x\n"));
        assert_eq!(files_out["instructions/shop"], current);
        // Recorded: nothing left.
        let (plan, _) = diff(
            &[target(Some(&current), "x\n", Some(&files::sha256("x\n")))],
            1000,
        );
        assert!(plan.changes.is_empty());
    }

    #[test]
    fn an_edit_inside_the_markers_is_drift() {
        let edited = format!("# mine\n{}", render::section("edited by hand\n"));
        let (plan, files_out) = diff(
            &[target(Some(&edited), "x\n", Some(&files::sha256("x\n")))],
            1000,
        );
        assert!(plan.changes[0].drifted);
        assert_eq!(
            files_out["instructions/shop"],
            format!("# mine\n{}", render::section("x\n"))
        );
    }

    #[test]
    fn over_budget_and_missing_folders() {
        let (plan, _) = diff(&[target(None, &"z".repeat(50), None)], 10);
        assert!(plan.changes.is_empty());
        assert!(plan.errors[0].message.contains("over the budget of 10"));
        let mut missing = target(None, "x\n", None);
        missing.dir_exists = false;
        let (plan, _) = diff(&[missing], 1000);
        assert!(plan.changes.is_empty() && plan.errors.is_empty());
        assert!(
            plan.warnings[0]
                .message
                .contains("does not exist on this host")
        );
        assert!(plan.resources.is_empty());
    }
}
