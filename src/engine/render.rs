//! Plans as text, in Terraform's grammar: one section per provider, `+` create, `~` update, `-` delete,
//! `-/+` replace, file diffs indented under their change, and the summary line. Plain text: the caller
//! decides about colour (lines start with their action symbol, so colouring is a per-line decision).

use std::fmt::Write;

use super::plan::{Action, Plan};

/// The whole plan as text (without a trailing header about timing).
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let mut providers: Vec<&str> = Vec::new();
    for c in &plan.changes {
        if !providers.contains(&c.provider.as_str()) {
            providers.push(&c.provider);
        }
    }
    for w in plan.warnings.iter().filter(|w| w.provider != "safety") {
        if !providers.contains(&w.provider.as_str()) {
            providers.push(&w.provider);
        }
    }
    let width = plan
        .changes
        .iter()
        .map(|c| c.address.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for provider in providers {
        match plan.providers.get(provider) {
            Some(what) => {
                let _ = writeln!(out, "{provider} ({what})");
            }
            None => {
                let _ = writeln!(out, "{provider}");
            }
        }
        for c in plan.changes.iter().filter(|c| c.provider == provider) {
            let mut line = format!(
                "  {:<3} {:<width$}  {}",
                c.action.symbol(),
                c.address,
                c.summary
            );
            if c.drifted {
                line.push_str("   (drifted: changed outside supervisor)");
            }
            if c.disruptive {
                line.push_str("   (disruptive)");
            }
            let _ = writeln!(out, "{}", line.trim_end());
            if let Some(diff) = &c.diff {
                for l in diff.lines() {
                    let _ = writeln!(out, "        {l}");
                }
            }
        }
        for w in plan.warnings.iter().filter(|w| w.provider == provider) {
            let _ = writeln!(out, "  !   {}", w.message);
        }
        out.push('\n');
    }
    let safety: Vec<_> = plan
        .warnings
        .iter()
        .filter(|w| w.provider == "safety")
        .collect();
    if !safety.is_empty() {
        let _ = writeln!(out, "safety");
        for w in safety {
            let _ = writeln!(out, "  !   {} — apply needs --force", w.message);
        }
        out.push('\n');
    }
    if !plan.errors.is_empty() {
        let _ = writeln!(out, "errors (the plan cannot be applied)");
        for e in &plan.errors {
            let _ = writeln!(out, "  ✗   {}", e.message);
        }
        out.push('\n');
    }
    let n = plan.errors.len();
    if !plan.errors.is_empty() {
        let _ = writeln!(
            out,
            "Plan failed: {n} error{} (nothing can be applied until {} fixed); {} change{} planned.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it is" } else { "they are" },
            plan.changes.len(),
            if plan.changes.len() == 1 { "" } else { "s" },
        );
    } else if plan.changes.is_empty() {
        out.push_str("No changes. Reality matches the desired state.\n");
    } else {
        let s = plan.summary;
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to change, {} to destroy.",
            s.add, s.change, s.destroy
        );
    }
    out
}

/// What a line of [`plan_text`] is, by its first characters: how a face (terminal colours, the status
/// page's classes) marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// `-` delete or `-/+` replace.
    Destroy,
    /// `+` create.
    Create,
    /// `~` update.
    Update,
    /// `!` a warning.
    Warning,
    /// `✗` an error.
    Error,
    /// A provider's section header or the summary line.
    Heading,
    /// A diff line or an empty line.
    Plain,
}

pub fn line_kind(line: &str) -> LineKind {
    let t = line.trim_start();
    if t.starts_with("-/+") || t.starts_with("- ") {
        LineKind::Destroy
    } else if t.starts_with("+ ") {
        LineKind::Create
    } else if t.starts_with("~ ") {
        LineKind::Update
    } else if t.starts_with('!') {
        LineKind::Warning
    } else if t.starts_with('✗') {
        LineKind::Error
    } else if !line.starts_with(' ') && !line.is_empty() {
        LineKind::Heading
    } else {
        LineKind::Plain
    }
}

/// The line an apply prints when a change starts or ends.
pub fn action_verb(action: Action, done: bool) -> &'static str {
    match (action, done) {
        (Action::Create, false) => "Creating…",
        (Action::Create, true) => "Creation complete",
        (Action::Update, false) => "Modifying…",
        (Action::Update, true) => "Modifications complete",
        (Action::Delete, false) => "Destroying…",
        (Action::Delete, true) => "Destruction complete",
        (Action::Replace, false) => "Replacing…",
        (Action::Replace, true) => "Replacement complete",
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::*;
    use super::*;

    fn change(address: &str, action: Action, summary: &str) -> Change {
        Change {
            address: address.into(),
            provider: "ports".into(),
            action,
            project: None,
            before: None,
            after: None,
            summary: summary.into(),
            drifted: false,
            disruptive: false,
            diff: None,
            requires: Vec::new(),
        }
    }

    fn plan(changes: Vec<Change>, warnings: Vec<Notice>) -> Plan {
        Plan {
            format_version: PLAN_FORMAT_VERSION.into(),
            desired_revision: "r".into(),
            observed_fingerprint: "f".into(),
            observed: Default::default(),
            scope: Scope::default(),
            summary: Plan::summarize(&changes),
            changes,
            errors: vec![],
            warnings,
            resources: vec![],
            providers: Default::default(),
            outputs: Default::default(),
        }
    }

    #[test]
    fn a_plan_with_errors_never_says_no_changes() {
        let mut p = plan(vec![], vec![]);
        p.errors.push(Notice {
            provider: "ports".into(),
            address: Some("ports/a".into()),
            project: Some("a".into()),
            message: "no free block".into(),
        });
        let text = plan_text(&p);
        assert!(!text.contains("No changes"), "{text}");
        assert!(
            text.ends_with(
                "Plan failed: 1 error (nothing can be applied until it is fixed); 0 changes planned.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn terraform_grammar() {
        let p = plan(
            vec![
                change(
                    "ports/a/x",
                    Action::Create,
                    "port 3000 (first free in 3000–3099)",
                ),
                change("ports/a/y", Action::Update, "port 3001 → 3005 (pinned)"),
                change("ports/b/z", Action::Delete, "port 3100 (freed)"),
            ],
            vec![Notice {
                provider: "secrets".into(),
                address: None,
                project: None,
                message: "project/a/k is required by project `a` but not set".into(),
            }],
        );
        let text = plan_text(&p);
        assert_eq!(
            text,
            "ports\n  +   ports/a/x  port 3000 (first free in 3000–3099)\n  ~   ports/a/y  port 3001 → 3005 (pinned)\n  -   ports/b/z  port 3100 (freed)\n\nsecrets\n  !   project/a/k is required by project `a` but not set\n\nPlan: 1 to add, 1 to change, 1 to destroy.\n"
        );
        assert_eq!(
            plan_text(&plan(vec![], vec![])),
            "No changes. Reality matches the desired state.\n"
        );
    }

    #[test]
    fn every_line_of_a_plan_has_a_kind_for_the_faces() {
        let mut p = plan(
            vec![
                change("ports/a/x", Action::Create, "port 3000"),
                change("ports/a/y", Action::Update, "port 3001 → 3005"),
                change("ports/b/z", Action::Delete, "port 3100"),
                change("ports/b/w", Action::Replace, "port 3101"),
            ],
            vec![Notice {
                provider: "secrets".into(),
                address: None,
                project: None,
                message: "project/a/k is required".into(),
            }],
        );
        p.changes[0].diff = Some("+added line".into());
        p.errors.push(Notice {
            provider: "ports".into(),
            address: None,
            project: None,
            message: "no free block".into(),
        });
        let text = plan_text(&p);
        let kinds: Vec<LineKind> = text.lines().map(line_kind).collect();
        let expected = [
            LineKind::Heading, // ports
            LineKind::Create,
            LineKind::Plain, // the diff, indented
            LineKind::Update,
            LineKind::Destroy,
            LineKind::Destroy, // -/+
            LineKind::Plain,   // blank
            LineKind::Heading, // secrets
            LineKind::Warning,
            LineKind::Plain,
            LineKind::Heading, // errors (…)
            LineKind::Error,
            LineKind::Plain,
            LineKind::Heading, // Plan failed: …
        ];
        assert_eq!(kinds, expected, "{text}");
    }
}
