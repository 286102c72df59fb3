//! `supervisor instructions adapt PATH`: inspects a project folder (Cargo.toml, package.json,
//! pyproject.toml, go.mod, Makefile, Dockerfile and compose files, CI workflows) and drafts its project
//! layer — languages, the commands that build, test and lint it, the services it starts. Reads only;
//! the CLI decides where the draft goes and never overwrites a hand-written layer without `--force`.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// The first line of every draft: how a drafted layer is told from a hand-written one.
pub const DRAFT_MARKER: &str = "<!-- drafted by `supervisor instructions adapt`; edit freely -->";

/// What the folder says about the project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub languages: BTreeSet<String>,
    pub build: Vec<String>,
    pub test: Vec<String>,
    pub lint: Vec<String>,
    /// What the project runs (binaries, start scripts, container services) and ports it exposes.
    pub services: Vec<String>,
    /// Steps its CI runs.
    pub ci: Vec<String>,
    /// Files the findings came from.
    pub sources: Vec<String>,
}

/// Whether a project layer text was drafted by `adapt` (and may be replaced without `--force`).
pub fn is_draft(text: &str) -> bool {
    text.trim_start().starts_with(DRAFT_MARKER)
}

fn read(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join(name);
    let meta = std::fs::metadata(&path).ok()?;
    // Manifests are small; anything huge is not one.
    (meta.is_file() && meta.len() < 1_000_000)
        .then(|| std::fs::read_to_string(path).ok())
        .flatten()
}

fn push_unique(v: &mut Vec<String>, s: impl Into<String>) {
    let s = s.into();
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Inspects `dir`.
pub fn inspect(dir: &Path) -> Findings {
    let mut f = Findings::default();
    rust(dir, &mut f);
    node(dir, &mut f);
    python(dir, &mut f);
    go(dir, &mut f);
    make(dir, &mut f);
    containers(dir, &mut f);
    ci(dir, &mut f);
    f
}

fn rust(dir: &Path, f: &mut Findings) {
    let Some(text) = read(dir, "Cargo.toml") else {
        return;
    };
    f.sources.push("Cargo.toml".into());
    f.languages.insert("Rust".into());
    let doc: toml::Table = text.parse().unwrap_or_default();
    push_unique(&mut f.build, "cargo build");
    push_unique(&mut f.test, "cargo test");
    push_unique(&mut f.lint, "cargo clippy --all-targets -- -D warnings");
    push_unique(&mut f.lint, "cargo fmt --check");
    let mut bins: Vec<String> = doc
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if bins.is_empty()
        && dir.join("src/main.rs").is_file()
        && let Some(name) = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
    {
        bins.push(name.to_string());
    }
    for b in bins {
        push_unique(
            &mut f.services,
            format!("binary `{b}` (`cargo run --bin {b}`)"),
        );
    }
    if doc.get("workspace").is_some() {
        push_unique(&mut f.test, "cargo test --workspace");
    }
}

fn node(dir: &Path, f: &mut Findings) {
    let Some(text) = read(dir, "package.json") else {
        return;
    };
    f.sources.push("package.json".into());
    let pkg: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let ts = dir.join("tsconfig.json").is_file()
        || pkg["devDependencies"].get("typescript").is_some()
        || pkg["dependencies"].get("typescript").is_some();
    f.languages
        .insert(if ts { "TypeScript" } else { "JavaScript" }.into());
    let runner = if dir.join("pnpm-lock.yaml").is_file() {
        "pnpm"
    } else if dir.join("yarn.lock").is_file() {
        "yarn"
    } else if dir.join("bun.lockb").is_file() || dir.join("bun.lock").is_file() {
        "bun"
    } else {
        "npm"
    };
    let Some(scripts) = pkg["scripts"].as_object() else {
        return;
    };
    let run = |name: &str| match (runner, name) {
        ("npm", "test") => "npm test".to_string(),
        ("npm", n) => format!("npm run {n}"),
        (r, n) => format!("{r} {n}"),
    };
    for (name, _) in scripts {
        match name.as_str() {
            "build" | "compile" => push_unique(&mut f.build, run(name)),
            "test" | "test:unit" | "test:e2e" => push_unique(&mut f.test, run(name)),
            "lint" | "typecheck" | "check" | "format:check" => push_unique(&mut f.lint, run(name)),
            "start" | "dev" | "serve" | "preview" => {
                push_unique(&mut f.services, format!("`{}`", run(name)))
            }
            _ => {}
        }
    }
}

fn python(dir: &Path, f: &mut Findings) {
    let text = read(dir, "pyproject.toml");
    let requirements = read(dir, "requirements.txt");
    if text.is_none() && requirements.is_none() {
        return;
    }
    f.languages.insert("Python".into());
    let prefix = if dir.join("uv.lock").is_file() {
        "uv run "
    } else if dir.join("poetry.lock").is_file() {
        "poetry run "
    } else {
        ""
    };
    let all = format!(
        "{}\n{}",
        text.as_deref().unwrap_or(""),
        requirements.as_deref().unwrap_or("")
    );
    if text.is_some() {
        f.sources.push("pyproject.toml".into());
    }
    if requirements.is_some() {
        f.sources.push("requirements.txt".into());
    }
    if all.contains("pytest") || dir.join("tests").is_dir() {
        push_unique(&mut f.test, format!("{prefix}pytest"));
    }
    if all.contains("ruff") {
        push_unique(&mut f.lint, format!("{prefix}ruff check ."));
    }
    if all.contains("mypy") {
        push_unique(&mut f.lint, format!("{prefix}mypy ."));
    }
    for (marker, what) in [
        ("fastapi", "a FastAPI app (uvicorn)"),
        ("flask", "a Flask app"),
        ("django", "a Django site (`manage.py runserver`)"),
    ] {
        if all.to_ascii_lowercase().contains(marker) {
            push_unique(&mut f.services, what);
        }
    }
}

fn go(dir: &Path, f: &mut Findings) {
    let Some(text) = read(dir, "go.mod") else {
        return;
    };
    f.sources.push("go.mod".into());
    f.languages.insert("Go".into());
    push_unique(&mut f.build, "go build ./...");
    push_unique(&mut f.test, "go test ./...");
    push_unique(&mut f.lint, "go vet ./...");
    if let Some(module) = text.lines().find_map(|l| l.trim().strip_prefix("module "))
        && dir.join("main.go").is_file()
    {
        push_unique(&mut f.services, format!("`go run .` ({})", module.trim()));
    }
}

fn make(dir: &Path, f: &mut Findings) {
    let Some(text) = read(dir, "Makefile").or_else(|| read(dir, "makefile")) else {
        return;
    };
    f.sources.push("Makefile".into());
    let targets: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(['\t', ' ', '#', '.']))
        .filter_map(|l| l.split_once(':').map(|(t, _)| t.trim()))
        .filter(|t| !t.is_empty() && !t.contains(['$', '%', ' ', '=']))
        .collect();
    for t in targets {
        match t {
            "build" | "all" => push_unique(&mut f.build, format!("make {t}")),
            "test" | "check" | "tests" => push_unique(&mut f.test, format!("make {t}")),
            "lint" | "fmt-check" | "format-check" => push_unique(&mut f.lint, format!("make {t}")),
            "run" | "serve" | "dev" => push_unique(&mut f.services, format!("`make {t}`")),
            _ => {}
        }
    }
}

fn containers(dir: &Path, f: &mut Findings) {
    if let Some(text) = read(dir, "Dockerfile") {
        f.sources.push("Dockerfile".into());
        let ports: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
            .flat_map(|p| p.split_whitespace())
            .collect();
        if !ports.is_empty() {
            push_unique(
                &mut f.services,
                format!(
                    "a container exposing {} (ask `get_port` for the host port instead of reusing these)",
                    ports.join(", ")
                ),
            );
        }
    }
    for name in [
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
    ] {
        let Some(text) = read(dir, name) else {
            continue;
        };
        f.sources.push(name.into());
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        if let Some(services) = doc.get("services").and_then(|s| s.as_object()) {
            for (svc, _) in services {
                push_unique(&mut f.services, format!("compose service `{svc}`"));
            }
        }
    }
}

fn ci(dir: &Path, f: &mut Findings) {
    let workflows = dir.join(".github/workflows");
    let Ok(entries) = std::fs::read_dir(&workflows) else {
        return;
    };
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    names.sort();
    for path in names.into_iter().take(5) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let rel = format!(
            ".github/workflows/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        f.sources.push(rel);
        for line in text.lines() {
            let step = line.trim();
            let step = step.strip_prefix("- ").unwrap_or(step);
            if let Some(cmd) = step.strip_prefix("run:") {
                let cmd = cmd.trim();
                if !cmd.is_empty() && cmd != "|" && cmd != ">" && f.ci.len() < 12 {
                    push_unique(&mut f.ci, cmd.to_string());
                }
            }
        }
    }
}

/// The drafted project layer.
pub fn draft(project: &str, f: &Findings) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{DRAFT_MARKER}");
    let _ = writeln!(t, "# Project `{project}`\n");
    if f.languages.is_empty() {
        let _ = writeln!(
            t,
            "Nothing recognisable was found (no Cargo.toml, package.json, pyproject.toml, go.mod, Makefile or Dockerfile): describe the project here.\n"
        );
        return t;
    }
    let langs: Vec<&str> = f.languages.iter().map(String::as_str).collect();
    let _ = writeln!(t, "Written in {}.\n", langs.join(", "));
    let section = |t: &mut String, title: &str, items: &[String]| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(t, "## {title}\n");
        for i in items {
            let _ = writeln!(t, "- `{}`", i.trim_matches('`'));
        }
        t.push('\n');
    };
    section(&mut t, "Build", &f.build);
    section(&mut t, "Test", &f.test);
    section(&mut t, "Lint", &f.lint);
    if !f.services.is_empty() {
        let _ = writeln!(t, "## What it runs\n");
        for s in &f.services {
            let _ = writeln!(t, "- {s}");
        }
        let _ = writeln!(
            t,
            "\nEvery server binds the port `get_port` gives for its service name.\n"
        );
    }
    section(&mut t, "What CI runs", &f.ci);
    let _ = writeln!(
        t,
        "Found in: {}. Declare the test and lint commands as the project's `checks:` so `run_checks` can verify work.",
        f.sources.join(", ")
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_and_node_project_is_described_with_its_commands() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("Cargo.toml"),
            "[package]\nname = \"shop\"\n\n[[bin]]\nname = \"shop-api\"\npath = \"src/main.rs\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("web")).unwrap();
        std::fs::write(
            d.join("package.json"),
            r#"{"scripts": {"build": "vite build", "test": "vitest", "lint": "eslint .", "dev": "vite"}, "devDependencies": {"typescript": "5"}}"#,
        )
        .unwrap();
        std::fs::write(d.join("pnpm-lock.yaml"), "").unwrap();
        std::fs::write(d.join("Dockerfile"), "FROM x\nEXPOSE 8080\n").unwrap();
        std::fs::write(d.join("Makefile"), "test:\n\tcargo test\nrelease: build\n").unwrap();
        std::fs::create_dir_all(d.join(".github/workflows")).unwrap();
        std::fs::write(
            d.join(".github/workflows/ci.yml"),
            "jobs:\n  t:\n    steps:\n      - run: cargo test --locked\n",
        )
        .unwrap();
        let f = inspect(d);
        assert_eq!(
            f.languages.iter().cloned().collect::<Vec<_>>(),
            ["Rust", "TypeScript"]
        );
        assert_eq!(f.build, ["cargo build", "pnpm build"]);
        assert_eq!(f.test, ["cargo test", "pnpm test", "make test"]);
        assert_eq!(
            f.lint,
            [
                "cargo clippy --all-targets -- -D warnings",
                "cargo fmt --check",
                "pnpm lint"
            ]
        );
        assert!(f.services.iter().any(|s| s.contains("shop-api")), "{f:?}");
        assert!(f.services.iter().any(|s| s.contains("pnpm dev")), "{f:?}");
        assert!(f.services.iter().any(|s| s.contains("8080")), "{f:?}");
        assert_eq!(f.ci, ["cargo test --locked"]);
        let text = draft("shop", &f);
        assert!(is_draft(&text));
        assert!(text.contains("- `cargo test`"), "{text}");
        assert!(!is_draft("# Hand-written\n"));
    }

    #[test]
    fn an_empty_folder_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let text = draft("x", &inspect(dir.path()));
        assert!(text.contains("Nothing recognisable was found"), "{text}");
    }
}
