//! Finding the files to index: directory trees walked in name order, honouring `.gitignore`.
//!
//! Rules: hidden files and directories (`.git`, `.supervisor`, `.env`, …) are skipped, as ripgrep does;
//! symbolic links are not followed; a `.gitignore` applies
//! to its directory and everything below it, the deepest matching rule wins (`!pattern` re-includes);
//! inside a git work tree, the `.gitignore` files of the directories above the walked root and
//! `.git/info/exclude` apply too. What an ignore rule excludes is counted (a directory counts once,
//! its contents are not visited). A path named explicitly that is a file is always taken. Blocking I/O:
//! call from `spawn_blocking`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SubsecRound, Utc};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// A file found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Absolute, with symbolic links of the root resolved.
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct WalkOutcome {
    pub files: Vec<FoundFile>,
    /// Files and directories excluded by ignore rules.
    pub ignored: usize,
    /// Paths that could not be read, with the reason.
    pub errors: Vec<String>,
    /// The roots, absolute (documents under them that were not found are gone).
    pub roots: Vec<PathBuf>,
}

/// Walks `roots` (directories or files). A root that does not exist is an error in the outcome.
pub fn walk(roots: &[PathBuf]) -> WalkOutcome {
    let mut out = WalkOutcome::default();
    for root in roots {
        let abs = match std::fs::canonicalize(root) {
            Ok(p) => p,
            Err(e) => {
                out.errors.push(format!("{}: {e}", root.display()));
                continue;
            }
        };
        out.roots.push(abs.clone());
        match std::fs::metadata(&abs) {
            Ok(m) if m.is_dir() => {
                let stack = ancestor_ignores(&abs);
                walk_dir(&abs, stack, &mut out);
            }
            Ok(m) => out.files.push(FoundFile {
                path: abs,
                size: m.len(),
                modified: modified(&m),
            }),
            Err(e) => out.errors.push(format!("{}: {e}", root.display())),
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out.files.dedup_by(|a, b| a.path == b.path);
    out
}

/// The ignore files that apply to `dir` from above: inside a git work tree, `.git/info/exclude` and the
/// `.gitignore` of every directory from the work tree's root down to `dir`'s parent.
fn ancestor_ignores(dir: &Path) -> Vec<Gitignore> {
    let Some(repo) = dir.ancestors().find(|a| a.join(".git").exists()) else {
        return Vec::new();
    };
    let mut stack = Vec::new();
    let mut exclude = GitignoreBuilder::new(repo);
    if exclude
        .add(repo.join(".git").join("info").join("exclude"))
        .is_none()
        && let Ok(g) = exclude.build()
    {
        stack.push(g);
    }
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(repo))
        .collect();
    chain.reverse();
    for a in chain {
        if let Some(g) = gitignore_of(a) {
            stack.push(g);
        }
    }
    stack
}

fn gitignore_of(dir: &Path) -> Option<Gitignore> {
    let file = dir.join(".gitignore");
    if !file.is_file() {
        return None;
    }
    let mut b = GitignoreBuilder::new(dir);
    // A malformed line is skipped (as git does); the rest of the file still applies.
    let _ = b.add(&file);
    b.build().ok()
}

/// Modification time to the microsecond (what PostgreSQL keeps), so a stored time compares equal.
fn modified(m: &std::fs::Metadata) -> Option<DateTime<Utc>> {
    m.modified()
        .ok()
        .map(|t| DateTime::<Utc>::from(t).trunc_subsecs(6))
}

fn ignored(stack: &[Gitignore], path: &Path, is_dir: bool) -> bool {
    for g in stack.iter().rev() {
        match g.matched(path, is_dir) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
    }
    false
}

fn walk_dir(dir: &Path, mut stack: Vec<Gitignore>, out: &mut WalkOutcome) {
    if let Some(g) = gitignore_of(dir) {
        stack.push(g);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.errors.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if kind.is_dir() {
            if ignored(&stack, &path, true) {
                out.ignored += 1;
                continue;
            }
            walk_dir(&path, stack.clone(), out);
        } else if kind.is_file() {
            if ignored(&stack, &path, false) {
                out.ignored += 1;
                continue;
            }
            match entry.metadata() {
                Ok(m) => out.files.push(FoundFile {
                    path,
                    size: m.len(),
                    modified: modified(&m),
                }),
                Err(e) => out.errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(out: &WalkOutcome, root: &Path) -> Vec<String> {
        out.files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn gitignore_rules_apply_at_every_level_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        w(".git/info/exclude", "secret-notes.md\n");
        w(".git/config", "[core]\n");
        w(".gitignore", "target/\n*.log\n");
        w("README.md", "# r\n");
        w("app.log", "x");
        w("secret-notes.md", "x");
        w("target/debug/out.txt", "x");
        w("docs/guide.md", "# g\n");
        w("docs/.gitignore", "drafts/\n!keep.log\n");
        w("docs/keep.log", "kept\n");
        w("docs/drafts/wip.md", "x");

        w(".env", "KEY=x\n");
        w(".github/workflows/ci.yml", "on: push\n");
        let out = walk(std::slice::from_ref(&root));
        assert_eq!(
            names(&out, &root),
            ["README.md", "docs/guide.md", "docs/keep.log"]
        );
        // app.log, secret-notes.md, target/, docs/drafts/
        assert_eq!(out.ignored, 4);
        assert!(out.errors.is_empty());

        // Walking a subdirectory still honours the ignore files above it.
        let out = walk(&[root.join("docs")]);
        assert_eq!(names(&out, &root), ["docs/guide.md", "docs/keep.log"]);
        assert_eq!(out.ignored, 1);

        // A file named explicitly is taken even when ignored; a missing root is an error.
        let out = walk(&[root.join("app.log"), root.join("missing")]);
        assert_eq!(names(&out, &root), ["app.log"]);
        assert_eq!(out.errors.len(), 1);
    }
}
