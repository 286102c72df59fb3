//! Writing state files: atomically (temporary file in the same directory, fsync, rename), so a reader
//! — a human's editor, the file watcher, a concurrent plan — never sees a half-written file.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `contents` atomically (a temporary file in the same directory, synced, then
/// renamed over it). An existing file keeps its permission bits and its owner and group: the temporary
/// file gets them before the rename, and when the owner cannot be kept (not permitted) nothing is
/// replaced and the error says so. A new file gets the process's defaults (umask).
///
/// The temporary file is `.<name>.<pid>.tmp`; one left behind by a process that was killed while
/// writing (its pid no longer running) is removed by the next write of the same file.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    remove_abandoned_temporaries(dir, &name);
    let existing = std::fs::metadata(path).ok();
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Some(was) = &existing {
            keep_mode_and_owner(&f, was, path)?;
        }
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `.<name>.<pid>.tmp` files in `dir` whose writer is gone (killed mid-write). A pid that is
/// running — maybe another writer of the same file — keeps its file. Best effort: what cannot be read
/// or removed stays.
fn remove_abandoned_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 || writer_is_running(pid) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Whether a process with this pid exists (`kill(pid, 0)`: allowed or not permitted both mean yes).
fn writer_is_running(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

/// Gives the new file `f` the mode, owner and group of the file `was` (at `path`) it replaces.
fn keep_mode_and_owner(
    f: &std::fs::File,
    was: &std::fs::Metadata,
    path: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let now = f.metadata()?;
    if (now.uid(), now.gid()) != (was.uid(), was.gid()) {
        std::os::unix::fs::fchown(f, Some(was.uid()), Some(was.gid())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot keep the owner {}:{} of {} ({e}); nothing was written",
                    was.uid(),
                    was.gid(),
                    path.display()
                ),
            )
        })?;
    }
    // After the owner: changing the owner may clear set-id bits.
    f.set_permissions(std::fs::Permissions::from_mode(was.mode() & 0o7777))
}

// ---------------------------------------------------------------------------------------------------
// Machine edits (MCP tools): validated, written atomically in canonical form, revision-checked.

use std::sync::Mutex;

use super::{Desired, Diagnostics, Project, Service, Sources, canonical, project_file_path};

/// Why an edit was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(
        "the desired state changed since revision {expected} was read (it is now {actual}); read it again and redo the edit"
    )]
    Stale { expected: String, actual: String },
    #[error("the edit would make the desired state invalid:\n{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an edit produced.
#[derive(Debug, Clone)]
pub struct Edited {
    pub path: std::path::PathBuf,
    pub revision: String,
    pub desired: Desired,
    /// `false` when the file already said exactly this (nothing was written).
    pub changed: bool,
    /// How to take the edit back (when it wrote something): see [`undo`].
    pub undo: Option<Undo>,
}

/// What an edit wrote over what, so it can be taken back while nobody has edited the file since.
#[derive(Debug, Clone)]
pub struct Undo {
    path: std::path::PathBuf,
    /// The file's text before the edit; `None`: the edit created the file.
    before: Option<String>,
    written: String,
}

/// Edits within one process are serialized by this mutex, and across processes (several `serve`s on one
/// state directory) by an exclusive lock on `<state>/.edit.lock`: each edit reads, checks and writes with
/// nobody else in between. The revision check guards against edits based on an older reading.
static EDIT: Mutex<()> = Mutex::new(());

/// The name of the cross-process edit lock file in the state directory.
pub const EDIT_LOCK_FILE: &str = ".edit.lock";

fn lock_edits(dir: &Path) -> Result<std::fs::File, EditError> {
    let path = dir.join(EDIT_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| EditError::Write {
            path: path.clone(),
            source,
        })?;
    file.lock()
        .map_err(|source| EditError::Write { path, source })?;
    Ok(file)
}

fn edit_project(
    dir: &Path,
    name: &str,
    expected_revision: Option<&str>,
    change: impl FnOnce(Option<Project>) -> Result<Project, EditError>,
) -> Result<Edited, EditError> {
    let _serial = EDIT.lock().unwrap_or_else(|e| e.into_inner());
    let _across = lock_edits(dir)?;
    let sources = Sources::read(dir).map_err(EditError::Invalid)?;
    let actual = sources.revision();
    if let Some(expected) = expected_revision
        && actual != expected
    {
        return Err(EditError::Stale {
            expected: expected.to_string(),
            actual,
        });
    }
    let path = project_file_path(dir, name);
    let original = sources
        .projects
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, t)| t.clone());
    let current = match &original {
        Some(text) => {
            let file = super::validate::parse_file::<super::model::ProjectFile>(&path, text)
                .map_err(EditError::Invalid)?;
            Some(super::validate::project_from_file(&file))
        }
        None => None,
    };
    let updated = change(current)?;
    let text = canonical::project_yaml(&updated, original.as_deref());
    let mut next = sources.clone();
    match next.projects.iter_mut().find(|(p, _)| *p == path) {
        Some(slot) => slot.1 = text.clone(),
        None => {
            next.projects.push((path.clone(), text.clone()));
            next.projects.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
    let desired = super::validate::desired_from_sources(&next).map_err(EditError::Invalid)?;
    let changed = original.as_deref() != Some(text.as_str());
    if changed {
        write_atomic(&path, &text).map_err(|source| EditError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(Edited {
        undo: changed.then(|| Undo {
            path: path.clone(),
            before: original,
            written: text,
        }),
        path,
        revision: desired.revision.clone(),
        desired,
        changed,
    })
}

/// Takes an edit back — the file gets its text from before the edit again (or is removed, if the edit
/// created it) — if it still holds exactly what the edit wrote. When somebody edited it since, nothing
/// changes (`changed: false`). The state that results is validated first, like every edit.
pub fn undo(dir: &Path, undo: &Undo) -> Result<Edited, EditError> {
    let _serial = EDIT.lock().unwrap_or_else(|e| e.into_inner());
    let _across = lock_edits(dir)?;
    let sources = Sources::read(dir).map_err(EditError::Invalid)?;
    let current = sources
        .supervisor
        .iter()
        .chain(&sources.projects)
        .find(|(p, _)| *p == undo.path)
        .map(|(_, t)| t.as_str());
    let mut next = sources.clone();
    let changed = current == Some(undo.written.as_str());
    if changed {
        if next
            .supervisor
            .as_ref()
            .is_some_and(|(p, _)| *p == undo.path)
        {
            next.supervisor = undo.before.clone().map(|t| (undo.path.clone(), t));
        } else {
            next.projects.retain(|(p, _)| *p != undo.path);
            if let Some(before) = &undo.before {
                next.projects.push((undo.path.clone(), before.clone()));
                next.projects.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
    }
    let desired = super::validate::desired_from_sources(&next).map_err(EditError::Invalid)?;
    if changed {
        let written = match &undo.before {
            Some(before) => write_atomic(&undo.path, before),
            None => std::fs::remove_file(&undo.path),
        };
        written.map_err(|source| EditError::Write {
            path: undo.path.clone(),
            source,
        })?;
    }
    Ok(Edited {
        path: undo.path.clone(),
        revision: desired.revision.clone(),
        desired,
        changed,
        undo: None,
    })
}

/// Creates or replaces a whole project (its file is rewritten; comments on kept keys survive).
pub fn upsert_project(
    dir: &Path,
    project: &Project,
    expected_revision: &str,
) -> Result<Edited, EditError> {
    edit_project(dir, &project.name, Some(expected_revision), |_| {
        Ok(project.clone())
    })
}

/// Adds a service to a project or replaces the one with the same name.
pub fn upsert_service(
    dir: &Path,
    project: &str,
    service: &Service,
    expected_revision: &str,
) -> Result<Edited, EditError> {
    edit_project(dir, project, Some(expected_revision), |current| {
        let mut p = current
            .ok_or_else(|| EditError::NotFound(format!("there is no project `{project}`")))?;
        match p.services.iter_mut().find(|s| s.name == service.name) {
            Some(s) => *s = service.clone(),
            None => p.services.push(service.clone()),
        }
        Ok(p)
    })
}

/// Declares service `name` in `project` (no port pin, no hostname) unless it is declared already. The
/// caller never saw a revision (an agent asking for a port): the edit applies to the state as it is
/// when the edit lock is taken, so concurrent declarations never refuse each other.
pub fn declare_service(dir: &Path, project: &str, name: &str) -> Result<Edited, EditError> {
    edit_project(dir, project, None, |current| {
        let mut p = current
            .ok_or_else(|| EditError::NotFound(format!("there is no project `{project}`")))?;
        if !p.services.iter().any(|s| s.name == name) {
            p.services.push(Service {
                name: name.to_string(),
                port: None,
                hostname: None,
                prevent_destroy: false,
            });
        }
        Ok(p)
    })
}

/// Replaces a project's `instructions:` text (the CLI user's edit: applied to the state as it is).
pub fn set_instructions(dir: &Path, project: &str, text: &str) -> Result<Edited, EditError> {
    edit_project(dir, project, None, |current| {
        let mut p = current
            .ok_or_else(|| EditError::NotFound(format!("there is no project `{project}`")))?;
        p.instructions = Some(text.to_string());
        Ok(p)
    })
}

/// Removes a service from a project (its port is freed by the next apply).
pub fn remove_service(
    dir: &Path,
    project: &str,
    service: &str,
    expected_revision: &str,
) -> Result<Edited, EditError> {
    edit_project(dir, project, Some(expected_revision), |current| {
        let mut p = current
            .ok_or_else(|| EditError::NotFound(format!("there is no project `{project}`")))?;
        let before = p.services.len();
        p.services.retain(|s| s.name != service);
        if p.services.len() == before {
            return Err(EditError::NotFound(format!(
                "project `{project}` has no service `{service}`"
            )));
        }
        Ok(p)
    })
}

/// Adds an API key declaration to a project or replaces the one with the same name.
pub fn upsert_api_key(
    dir: &Path,
    project: &str,
    key: &super::ApiKey,
    expected_revision: &str,
) -> Result<Edited, EditError> {
    edit_project(dir, project, Some(expected_revision), |current| {
        let mut p = current
            .ok_or_else(|| EditError::NotFound(format!("there is no project `{project}`")))?;
        match p.api_keys.iter_mut().find(|k| k.name == key.name) {
            Some(k) => *k = key.clone(),
            None => p.api_keys.push(key.clone()),
        }
        Ok(p)
    })
}

/// Sets the machine type of VM `vm` in `supervisor.yaml` (comments kept, canonical form, validated).
pub fn set_vm_machine_type(
    dir: &Path,
    vm: &str,
    machine_type: &str,
    expected_revision: &str,
) -> Result<Edited, EditError> {
    let _serial = EDIT.lock().unwrap_or_else(|e| e.into_inner());
    let _across = lock_edits(dir)?;
    let sources = Sources::read(dir).map_err(EditError::Invalid)?;
    let actual = sources.revision();
    if actual != expected_revision {
        return Err(EditError::Stale {
            expected: expected_revision.to_string(),
            actual,
        });
    }
    let Some((path, original)) = sources.supervisor.clone() else {
        return Err(EditError::NotFound(format!(
            "there is no {} (and so no VM `{vm}`)",
            super::SUPERVISOR_FILE
        )));
    };
    let mut file = super::validate::parse_file::<super::model::SupervisorFile>(&path, &original)
        .map_err(EditError::Invalid)?;
    let decl = file
        .vms
        .iter_mut()
        .find(|v| v.name.value == vm)
        .ok_or_else(|| {
            EditError::NotFound(format!("there is no VM `{vm}` in {}", path.display()))
        })?;
    decl.machine_type.value = machine_type.to_string();
    let text = canonical::supervisor_yaml(&file, Some(&original));
    let mut next = sources.clone();
    next.supervisor = Some((path.clone(), text.clone()));
    let desired = super::validate::desired_from_sources(&next).map_err(EditError::Invalid)?;
    let changed = original != text;
    if changed {
        write_atomic(&path, &text).map_err(|source| EditError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(Edited {
        undo: changed.then(|| Undo {
            path: path.clone(),
            before: Some(original),
            written: text,
        }),
        path,
        revision: desired.revision.clone(),
        desired,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RequiredSecrets;

    #[test]
    fn a_temporary_file_left_by_a_killed_writer_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("CLAUDE.md");
        // A process that has exited: its pid is free (until reused, which the test cannot rule out,
        // so it checks first).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id() as i32;
        child.wait().unwrap();
        assert!(!writer_is_running(dead));
        let abandoned = dir.path().join(format!(".CLAUDE.md.{dead}.tmp"));
        std::fs::write(&abandoned, "half a fi").unwrap();
        // A running writer's temporary file (pid 1 always runs).
        let alive = dir.path().join(".CLAUDE.md.1.tmp");
        std::fs::write(&alive, "in progress").unwrap();
        let other = dir.path().join(format!(".other.md.{dead}.tmp"));
        std::fs::write(&other, "not ours").unwrap();
        write_atomic(&file, "whole\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "whole\n");
        assert!(
            !abandoned.exists(),
            "the abandoned temporary file is removed"
        );
        assert!(alive.exists(), "a running writer's file is kept");
        assert!(other.exists(), "another file's temporaries are not touched");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".CLAUDE.md.1.tmp".to_string(),
                format!(".other.md.{dead}.tmp"),
                "CLAUDE.md".to_string()
            ]
        );
    }

    #[test]
    fn an_edit_is_undone_byte_for_byte_unless_the_file_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("projects")).unwrap();
        let original = "# hand-written\nname: shop\nchecks: [\"true\"]\n";
        let file = state.join("projects/shop.yaml");
        std::fs::write(&file, original).unwrap();
        let declared = declare_service(&state, "shop", "api").unwrap();
        assert!(declared.changed);
        let back = undo(&state, declared.undo.as_ref().unwrap()).unwrap();
        assert!(back.changed);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
        assert!(back.desired.projects["shop"].services.is_empty());
        // Edited by someone else in between: the undo leaves it alone.
        let declared = declare_service(&state, "shop", "api").unwrap();
        declare_service(&state, "shop", "web").unwrap();
        let later = std::fs::read_to_string(&file).unwrap();
        assert!(
            !undo(&state, declared.undo.as_ref().unwrap())
                .unwrap()
                .changed
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), later);
    }

    #[test]
    fn a_vm_resize_edit_keeps_comments_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            state.join("supervisor.yaml"),
            "gcloud:\n  credentials: secret:meta/gcloud/service_account\nvms:\n  # the web host\n  - name: host-1\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4  # billing says so\n",
        )
        .unwrap();
        let rev = crate::state::load(&state).unwrap().revision;
        let e = set_vm_machine_type(&state, "host-1", "e2-standard-8", &rev).unwrap();
        assert!(e.changed);
        assert_eq!(e.desired.vms[0].machine_type, "e2-standard-8");
        let text = std::fs::read_to_string(state.join("supervisor.yaml")).unwrap();
        assert!(
            text.contains("  # the web host\n  - name: host-1\n"),
            "{text}"
        );
        assert!(
            text.contains("machine_type: e2-standard-8  # billing says so\n"),
            "{text}"
        );
        // Stale, unknown VM and invalid type: refused, nothing written.
        assert!(matches!(
            set_vm_machine_type(&state, "host-1", "e2-standard-2", &rev),
            Err(EditError::Stale { .. })
        ));
        let now = e.revision;
        assert!(matches!(
            set_vm_machine_type(&state, "host-9", "e2-standard-2", &now),
            Err(EditError::NotFound(_))
        ));
        let bad = set_vm_machine_type(&state, "host-1", "enormous", &now).unwrap_err();
        assert!(
            bad.to_string()
                .contains("`enormous` is not a valid machine type"),
            "{bad}"
        );
        assert_eq!(
            std::fs::read_to_string(state.join("supervisor.yaml")).unwrap(),
            text
        );
    }

    fn setup() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("projects")).unwrap();
        std::fs::write(
            state.join("projects/shop.yaml"),
            "# my shop\nname: shop\nservices:\n  # public API\n  - name: api\n",
        )
        .unwrap();
        let rev = crate::state::load(&state).unwrap().revision;
        (dir, rev)
    }

    fn svc(name: &str, port: Option<u16>) -> Service {
        Service {
            name: name.into(),
            port,
            hostname: None,
            prevent_destroy: false,
        }
    }

    #[test]
    fn an_atomic_write_keeps_mode_and_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kept.yaml");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        if root {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
        let before = std::fs::metadata(&p).unwrap();
        write_atomic(&p, "new\n").unwrap();
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(after.ino(), before.ino(), "replaced by rename");
        // A new file gets the defaults.
        let fresh = dir.path().join("fresh.yaml");
        write_atomic(&fresh, "x").unwrap();
        assert!(fresh.exists());
    }

    #[test]
    fn upsert_service_keeps_comments_and_bumps_the_revision() {
        let (dir, rev) = setup();
        let state = dir.path().join("state");
        let out = upsert_service(&state, "shop", &svc("web", None), &rev).unwrap();
        assert!(out.changed);
        assert_ne!(out.revision, rev);
        let text = std::fs::read_to_string(state.join("projects/shop.yaml")).unwrap();
        assert_eq!(
            text,
            "# my shop\nname: shop\nservices:\n  # public API\n  - name: api\n  - name: web\n"
        );
        assert_eq!(crate::state::load(&state).unwrap().revision, out.revision);
        // The same edit again is a no-op that writes nothing.
        let again = upsert_service(&state, "shop", &svc("web", None), &out.revision).unwrap();
        assert!(!again.changed);
    }

    #[test]
    fn stale_and_invalid_edits_write_nothing() {
        let (dir, rev) = setup();
        let state = dir.path().join("state");
        let before = std::fs::read_to_string(state.join("projects/shop.yaml")).unwrap();
        let err = upsert_service(&state, "shop", &svc("web", None), "sha256:old").unwrap_err();
        assert!(matches!(err, EditError::Stale { .. }), "{err}");
        let err = upsert_service(&state, "shop", &svc("web", Some(3101)), &rev).unwrap_err();
        assert!(err.to_string().contains("no port_range"), "{err}");
        let err = remove_service(&state, "shop", "nope", &rev).unwrap_err();
        assert!(matches!(err, EditError::NotFound(_)));
        let err = upsert_service(&state, "nope", &svc("web", None), &rev).unwrap_err();
        assert!(matches!(err, EditError::NotFound(_)));
        assert_eq!(
            std::fs::read_to_string(state.join("projects/shop.yaml")).unwrap(),
            before
        );
    }

    #[test]
    fn upsert_project_creates_a_file() {
        let (dir, rev) = setup();
        let state = dir.path().join("state");
        let p = Project {
            name: "blog".into(),
            host: "default".into(),
            path: None,
            port_range: Some(3200),
            services: vec![svc("web", Some(3201))],
            secrets: RequiredSecrets::default(),
            checks: vec![],
            knowledge: vec![],
            instructions: None,
            instructions_dir: None,
            api_keys: vec![],
        };
        let out = upsert_project(&state, &p, &rev).unwrap();
        assert_eq!(out.desired.projects["blog"].services[0].port, Some(3201));
        assert_eq!(
            std::fs::read_to_string(state.join("projects/blog.yaml")).unwrap(),
            "name: blog\nport_range: 3200\nservices:\n  - name: web\n    port: 3201\n"
        );
        let err = remove_service(&state, "shop", "api", &rev).unwrap_err();
        assert!(
            matches!(err, EditError::Stale { .. }),
            "the revision moved with the new file"
        );
    }
}
