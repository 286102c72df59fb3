//! The canonical form of state files: what `fmt` writes and what machine edits (MCP tools) produce.
//!
//! Fixed key order, two-space indentation, block style for mappings and lists of mappings, one-line
//! flow style for lists of scalars, strings quoted only when YAML would misread them. Comments survive:
//! each comment block (and each trailing `# …`) of the original file is attached to the key or list
//! item that follows it (by key path, list items of mappings by their `name`) and re-emitted there. A
//! comment whose key disappeared (a removed service) goes with it.
//!
//! Limits: comments inside multi-line flow collections (`[a,\n b]`) are dropped, and list items
//! without a `name` on their first line are matched by position.

use std::collections::HashMap;

use super::model::{CloudflareSettings, SupervisorFile, TunnelMode, VmDecl};
use super::{ApiKey, Project, Service};

/// A YAML tree to emit. Scalars are already rendered.
enum Node {
    Scalar(String),
    /// Multi-line text, emitted as a block literal.
    Text(String),
    Map(Vec<(String, Node)>),
    /// Items that are mappings; each is identified by its `name` value for comment anchoring.
    Seq(Vec<Node>),
    FlowSeq(Vec<String>),
    FlowMap(Vec<(String, String)>),
}

fn is_plain_safe(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
    ) {
        return false;
    }
    if s.parse::<f64>().is_ok()
        || s.starts_with(['0', '+', '-', '.'])
            && s.chars()
                .all(|c| c.is_ascii_digit() || "+-._xobeE".contains(c))
    {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.contains(['\n', '\t', '"', '\'', '\\'])
        && !s.chars().any(|c| c.is_control())
}

/// A string as a YAML scalar: plain when unambiguous, else double-quoted (JSON escaping is valid YAML).
pub fn scalar(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Inside `[…]`: plain only for single words (`cargo test` reads better quoted in a list).
fn flow_scalar(s: &str) -> String {
    if is_plain_safe(s) && !s.contains([',', '[', ']', '{', '}', ' ']) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn text(s: &str) -> Node {
    if s.contains('\n') && !s.starts_with([' ', '\t']) && !s.contains('\t') {
        Node::Text(s.to_string())
    } else {
        Node::Scalar(scalar(s))
    }
}

fn service_node(s: &Service) -> Node {
    let mut m = vec![("name".to_string(), Node::Scalar(scalar(&s.name)))];
    if let Some(p) = s.port {
        m.push(("port".into(), Node::Scalar(p.to_string())));
    }
    if let Some(h) = &s.hostname {
        m.push(("hostname".into(), Node::Scalar(scalar(h))));
    }
    if s.prevent_destroy {
        m.push(("prevent_destroy".into(), Node::Scalar("true".into())));
    }
    Node::Map(m)
}

fn project_node(p: &Project) -> Node {
    let mut m = vec![("name".to_string(), Node::Scalar(scalar(&p.name)))];
    if let Some(path) = &p.path {
        m.push(("path".into(), Node::Scalar(scalar(&path.to_string_lossy()))));
    }
    if let Some(r) = p.port_range {
        m.push(("port_range".into(), Node::Scalar(r.to_string())));
    }
    if !p.services.is_empty() {
        m.push((
            "services".into(),
            Node::Seq(p.services.iter().map(service_node).collect()),
        ));
    }
    if !p.secrets.required.is_empty() {
        m.push((
            "secrets".into(),
            Node::Map(vec![(
                "required".into(),
                Node::FlowSeq(p.secrets.required.iter().map(|s| flow_scalar(s)).collect()),
            )]),
        ));
    }
    if !p.checks.is_empty() {
        m.push((
            "checks".into(),
            Node::FlowSeq(p.checks.iter().map(|s| flow_scalar(s)).collect()),
        ));
    }
    if !p.knowledge.is_empty() {
        m.push((
            "knowledge".into(),
            Node::FlowSeq(p.knowledge.iter().map(|s| flow_scalar(s)).collect()),
        ));
    }
    if let Some(i) = &p.instructions {
        m.push(("instructions".into(), text(i)));
    }
    if let Some(d) = &p.instructions_dir {
        m.push((
            "instructions_dir".into(),
            Node::Scalar(scalar(&d.to_string_lossy())),
        ));
    }
    if !p.api_keys.is_empty() {
        m.push((
            "api_keys".into(),
            Node::Seq(p.api_keys.iter().map(api_key_node).collect()),
        ));
    }
    Node::Map(m)
}

fn api_key_node(k: &ApiKey) -> Node {
    let mut m = vec![
        ("name".to_string(), Node::Scalar(scalar(&k.name))),
        ("gcp_project".into(), Node::Scalar(scalar(&k.gcp_project))),
    ];
    if let Some(d) = &k.display_name {
        m.push(("display_name".into(), Node::Scalar(scalar(d))));
    }
    if !k.restrict_apis.is_empty() {
        m.push((
            "restrict_apis".into(),
            Node::FlowSeq(k.restrict_apis.iter().map(|a| flow_scalar(a)).collect()),
        ));
    }
    m.push(("store".into(), Node::Scalar(scalar(&k.store))));
    Node::Map(m)
}

fn cloudflare_node(cf: &CloudflareSettings) -> Node {
    let mut m = vec![("zone".to_string(), Node::Scalar(scalar(&cf.zone.value)))];
    if let Some(a) = &cf.account_id {
        m.push(("account_id".into(), Node::Scalar(scalar(&a.value))));
    }
    m.push((
        "api_token".into(),
        Node::Scalar(scalar(&cf.api_token.value)),
    ));
    if let Some(u) = &cf.api_url {
        m.push(("api_url".into(), Node::Scalar(scalar(&u.value))));
    }
    let t = &cf.tunnel;
    let mut tm = vec![
        ("id".to_string(), Node::Scalar(scalar(&t.id.value))),
        (
            "mode".into(),
            Node::Scalar(match t.mode {
                TunnelMode::Local => "local".into(),
                TunnelMode::Remote => "remote".into(),
            }),
        ),
    ];
    if let Some(p) = &t.config_path {
        tm.push((
            "config_path".into(),
            Node::Scalar(scalar(&p.value.to_string_lossy())),
        ));
    }
    if let Some(p) = &t.credentials_file {
        tm.push((
            "credentials_file".into(),
            Node::Scalar(scalar(&p.value.to_string_lossy())),
        ));
    }
    if let Some(r) = &t.reload {
        tm.push(("reload".into(), Node::Scalar(scalar(r))));
    }
    if let Some(x) = &t.target {
        tm.push(("target".into(), Node::Scalar(scalar(&x.value))));
    }
    m.push(("tunnel".into(), Node::Map(tm)));
    Node::Map(m)
}

fn supervisor_node(f: &SupervisorFile) -> Node {
    let p = &f.ports;
    let mut m = vec![(
        "ports".to_string(),
        Node::Map(vec![
            (
                "projects".into(),
                Node::FlowMap(vec![
                    ("start".into(), p.projects.start.value.to_string()),
                    ("end".into(), p.projects.end.value.to_string()),
                    ("block".into(), p.projects.block.value.to_string()),
                ]),
            ),
            (
                "shared".into(),
                Node::FlowMap(vec![
                    ("start".into(), p.shared.start.value.to_string()),
                    ("end".into(), p.shared.end.value.to_string()),
                ]),
            ),
        ]),
    )];
    if !f.shared_services.is_empty() {
        m.push((
            "shared_services".into(),
            Node::Seq(
                f.shared_services
                    .iter()
                    .map(|s| {
                        Node::Map(vec![
                            ("name".into(), Node::Scalar(scalar(&s.name.value))),
                            ("port".into(), Node::Scalar(s.port.value.to_string())),
                        ])
                    })
                    .collect(),
            ),
        ));
    }
    if let Some(cf) = &f.cloudflare {
        m.push(("cloudflare".into(), cloudflare_node(cf)));
    }
    if let Some(g) = &f.gcloud {
        let mut gm = vec![(
            "credentials".to_string(),
            Node::Scalar(scalar(&g.credentials.value)),
        )];
        for (key, url) in [
            ("api_url", &g.api_url),
            ("monitoring_api_url", &g.monitoring_api_url),
            ("apikeys_api_url", &g.apikeys_api_url),
        ] {
            if let Some(u) = url {
                gm.push((key.into(), Node::Scalar(scalar(&u.value))));
            }
        }
        m.push(("gcloud".into(), Node::Map(gm)));
    }
    if !f.vms.is_empty() {
        m.push(("vms".into(), Node::Seq(f.vms.iter().map(vm_node).collect())));
    }
    if let Some(i) = &f.instructions {
        let mut im = Vec::new();
        if let Some(b) = &i.budget {
            im.push(("budget".to_string(), b.value.to_string()));
        }
        if let Some(p) = &i.meta_path {
            im.push(("meta_path".to_string(), scalar(&p.value.to_string_lossy())));
        }
        if !im.is_empty() {
            m.push(("instructions".into(), Node::FlowMap(im)));
        }
    }
    Node::Map(m)
}

/// A VM in canonical form: the deprecated `project` key is written as `gcp_project`.
fn vm_node(v: &VmDecl) -> Node {
    let mut m = vec![("name".to_string(), Node::Scalar(scalar(&v.name.value)))];
    if let Some(p) = v.gcp_project.as_ref().or(v.project.as_ref()) {
        m.push(("gcp_project".into(), Node::Scalar(scalar(&p.value))));
    }
    m.push(("zone".into(), Node::Scalar(scalar(&v.zone.value))));
    m.push((
        "machine_type".into(),
        Node::Scalar(scalar(&v.machine_type.value)),
    ));
    if let Some(r) = &v.running {
        m.push(("running".into(), Node::Scalar(r.value.to_string())));
    }
    Node::Map(m)
}

/// A project file in canonical form, keeping the comments of `original` (when given).
pub fn project_yaml(p: &Project, original: Option<&str>) -> String {
    emit(&project_node(p), original)
}

/// `supervisor.yaml` in canonical form, keeping the comments of `original`.
pub fn supervisor_yaml(f: &SupervisorFile, original: Option<&str>) -> String {
    emit_with(&supervisor_node(f), original, |c| {
        // Comments on a VM's deprecated `project` key follow it to `gcp_project`.
        let renamed = |anchor: &str| {
            anchor
                .strip_prefix("vms[")
                .filter(|rest| rest.ends_with("].project"))
                .map(|rest| format!("vms[{}.gcp_project", &rest[..rest.len() - ".project".len()]))
        };
        let before: Vec<String> = c
            .before
            .keys()
            .filter_map(|k| renamed(k).map(|_| k.clone()))
            .collect();
        for k in before {
            if let (Some(v), Some(n)) = (c.before.remove(&k), renamed(&k)) {
                c.before.insert(n, v);
            }
        }
        let inline: Vec<String> = c
            .inline
            .keys()
            .filter_map(|k| renamed(k).map(|_| k.clone()))
            .collect();
        for k in inline {
            if let (Some(v), Some(n)) = (c.inline.remove(&k), renamed(&k)) {
                c.inline.insert(n, v);
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------------
// Comments

#[derive(Default)]
struct Comments {
    /// Full-line comment blocks before the line with this anchor, with whether a blank line preceded
    /// and followed the block.
    before: HashMap<String, (bool, Vec<String>, bool)>,
    /// A trailing `# …` on the line with this anchor.
    inline: HashMap<String, String>,
    /// Comments after the last content line (and whether a blank line preceded them).
    end: (bool, Vec<String>),
}

/// Byte index of a `#` that starts a comment (outside quotes, preceded by whitespace or at the start).
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return Some(i),
            None => {}
        }
        prev = c;
    }
    None
}

/// The key of a `key: value` line (unquoted), if it is one.
fn line_key(content: &str) -> Option<&str> {
    let i = content.find(':')?;
    let key = content[..i].trim();
    let rest = &content[i + 1..];
    (!key.is_empty() && !key.contains(' ') && (rest.is_empty() || rest.starts_with(' ')))
        .then_some(key)
}

fn item_name(content: &str) -> Option<String> {
    let rest = content.strip_prefix("name:")?.trim();
    let rest = match comment_start(rest) {
        Some(i) => rest[..i].trim(),
        None => rest,
    };
    let unquoted = rest.trim_matches(|c| c == '"' || c == '\'');
    (!unquoted.is_empty()).then(|| unquoted.to_string())
}

fn collect_comments(original: &str) -> Comments {
    let mut c = Comments::default();
    let mut pending: Vec<String> = Vec::new();
    let mut blank_before = false;
    let mut saw_blank = false;
    // (indent of the key or item, anchor path)
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut item_counts: HashMap<String, usize> = HashMap::new();
    let mut block_scalar_indent: Option<usize> = None;
    for raw in original.lines() {
        let indent = raw.len() - raw.trim_start().len();
        let trimmed = raw.trim();
        if let Some(bi) = block_scalar_indent {
            if trimmed.is_empty() || indent > bi {
                continue;
            }
            block_scalar_indent = None;
        }
        if trimmed.is_empty() {
            saw_blank = true;
            // A blank line between two comment blocks separates them in the output too.
            if !pending.is_empty() && pending.last().is_some_and(|l| !l.is_empty()) {
                pending.push(String::new());
            }
            continue;
        }
        if trimmed.starts_with('#') {
            if pending.is_empty() {
                blank_before = saw_blank;
            }
            pending.push(trimmed.to_string());
            saw_blank = false;
            continue;
        }
        if trimmed == "---" {
            continue;
        }
        let (content, inline) = match comment_start(trimmed) {
            Some(i) => (trimmed[..i].trim_end(), Some(trimmed[i..].to_string())),
            None => (trimmed, None),
        };
        let (is_item, key_indent, body) = match content
            .strip_prefix("- ")
            .or_else(|| (content == "-").then_some(""))
        {
            Some(body) => (true, indent + 2, body.trim_start()),
            None => (false, indent, content),
        };
        let pop_to = if is_item { indent } else { key_indent };
        while stack.last().is_some_and(|(i, _)| *i >= pop_to) {
            stack.pop();
        }
        let parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let mut anchor;
        if is_item {
            let id = match item_name(body) {
                Some(n) => n,
                None => {
                    let n = item_counts.entry(parent.clone()).or_insert(0);
                    *n += 1;
                    format!("#{n}")
                }
            };
            anchor = format!("{parent}[{id}]");
            stack.push((indent, anchor.clone()));
            if let Some(k) = line_key(body) {
                stack.push((key_indent, format!("{anchor}.{k}")));
            }
        } else {
            let Some(k) = line_key(body) else {
                saw_blank = false;
                continue;
            };
            anchor = if parent.is_empty() {
                k.to_string()
            } else {
                format!("{parent}.{k}")
            };
            stack.push((key_indent, anchor.clone()));
        }
        let value = body.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_indent = Some(key_indent);
        }
        if anchor.is_empty() {
            anchor = "<root>".into();
        }
        while pending.last().is_some_and(|l| l.is_empty()) {
            pending.pop();
        }
        if !pending.is_empty() {
            c.before.insert(
                anchor.clone(),
                (blank_before, std::mem::take(&mut pending), saw_blank),
            );
        }
        if let Some(i) = inline {
            c.inline.insert(anchor, i);
        }
        saw_blank = false;
    }
    while pending.last().is_some_and(|l| l.is_empty()) {
        pending.pop();
    }
    c.end = (blank_before, pending);
    c
}

// ---------------------------------------------------------------------------------------------------
// Emission

struct Emitter {
    out: String,
    comments: Comments,
    first_line: bool,
}

impl Emitter {
    fn line(&mut self, indent: usize, text: &str, anchor: &str) {
        if let Some((blank_before, block, blank_after)) = self.comments.before.remove(anchor) {
            if blank_before && !self.first_line {
                self.out.push('\n');
            }
            for c in block {
                if !c.is_empty() {
                    self.out.push_str(&" ".repeat(indent));
                    self.out.push_str(&c);
                }
                self.out.push('\n');
            }
            if blank_after {
                self.out.push('\n');
            }
        }
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(text);
        if let Some(c) = self.comments.inline.remove(anchor) {
            self.out.push_str("  ");
            self.out.push_str(&c);
        }
        self.out.push('\n');
        self.first_line = false;
    }

    fn map(
        &mut self,
        entries: &[(String, Node)],
        indent: usize,
        parent: &str,
        first_prefix: Option<(&str, usize)>,
    ) {
        for (i, (k, v)) in entries.iter().enumerate() {
            let anchor = if parent.is_empty() {
                k.clone()
            } else {
                format!("{parent}.{k}")
            };
            // The first key of a list item shares the `- ` line, anchored by the item.
            let (ind, prefix, line_anchor) = match (i, first_prefix) {
                (0, Some((item_anchor, item_indent))) => {
                    (item_indent, "- ", item_anchor.to_string())
                }
                _ => (indent, "", anchor.clone()),
            };
            match v {
                Node::Scalar(s) => self.line(ind, &format!("{prefix}{k}: {s}"), &line_anchor),
                Node::FlowSeq(items) => self.line(
                    ind,
                    &format!("{prefix}{k}: [{}]", items.join(", ")),
                    &line_anchor,
                ),
                Node::FlowMap(items) => {
                    let body: Vec<String> =
                        items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    self.line(
                        ind,
                        &format!("{prefix}{k}: {{ {} }}", body.join(", ")),
                        &line_anchor,
                    )
                }
                Node::Text(t) => {
                    let chomp = if t.ends_with("\n\n") {
                        "+"
                    } else if t.ends_with('\n') {
                        ""
                    } else {
                        "-"
                    };
                    self.line(ind, &format!("{prefix}{k}: |{chomp}"), &line_anchor);
                    for l in t.trim_end_matches('\n').lines() {
                        if l.is_empty() {
                            self.out.push('\n');
                        } else {
                            self.out.push_str(&" ".repeat(indent + 2));
                            self.out.push_str(l);
                            self.out.push('\n');
                        }
                    }
                    if chomp == "+" {
                        for _ in 0..(t.len() - t.trim_end_matches('\n').len() - 1) {
                            self.out.push('\n');
                        }
                    }
                }
                Node::Map(m) => {
                    self.line(ind, &format!("{prefix}{k}:"), &line_anchor);
                    self.map(m, indent + 2, &anchor, None);
                }
                Node::Seq(items) => {
                    self.line(ind, &format!("{prefix}{k}:"), &line_anchor);
                    for (n, item) in items.iter().enumerate() {
                        if let Node::Map(m) = item {
                            let id = m
                                .iter()
                                .find(|(k, _)| k == "name")
                                .and_then(|(_, v)| match v {
                                    Node::Scalar(s) => Some(s.trim_matches('"').to_string()),
                                    _ => None,
                                })
                                .unwrap_or_else(|| format!("#{}", n + 1));
                            let item_anchor = format!("{anchor}[{id}]");
                            self.map(
                                m,
                                indent + 4,
                                &item_anchor,
                                Some((&item_anchor, indent + 2)),
                            );
                        }
                    }
                }
            }
        }
    }
}

fn emit(node: &Node, original: Option<&str>) -> String {
    emit_with(node, original, |_| {})
}

/// Emits `node`; `adjust` may re-anchor the original's comments first (renamed keys).
fn emit_with(node: &Node, original: Option<&str>, adjust: impl FnOnce(&mut Comments)) -> String {
    let mut comments = original.map(collect_comments).unwrap_or_default();
    adjust(&mut comments);
    let mut e = Emitter {
        out: String::new(),
        comments,
        first_line: true,
    };
    if let Node::Map(m) = node {
        e.map(m, 0, "", None);
    }
    let (blank, end) = std::mem::take(&mut e.comments.end);
    if !end.is_empty() {
        if blank {
            e.out.push('\n');
        }
        for c in end {
            e.out.push_str(&c);
            e.out.push('\n');
        }
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RequiredSecrets, Service};

    fn parse_project(text: &str) -> Project {
        let src = super::super::Sources {
            dir: "state".into(),
            supervisor: None,
            projects: vec![("state/projects/shop.yaml".into(), text.to_string())],
        };
        super::super::validate::desired_from_sources(&src)
            .unwrap()
            .projects
            .remove("shop")
            .unwrap()
    }

    const ORIGINAL: &str = "# The shop.\n\nname: shop   # the name\nport_range: 3100\n\nservices:\n  # the API\n  - name: api\n    port: 3101  # pinned for the mobile app\n  # the site\n  - name: web\n    hostname: null\nsecrets: { required: [project/shop/stripe] }\nchecks:\n  - cargo test\ninstructions: |\n  Run # not a comment\n  carefully.\n# trailing\n";

    #[test]
    fn canonical_form_keeps_comments_and_meaning() {
        let p = parse_project(ORIGINAL);
        let out = project_yaml(&p, Some(ORIGINAL));
        assert_eq!(
            out,
            "# The shop.\n\nname: shop  # the name\nport_range: 3100\nservices:\n  # the API\n  - name: api\n    port: 3101  # pinned for the mobile app\n  # the site\n  - name: web\nsecrets:\n  required: [project/shop/stripe]\nchecks: [\"cargo test\"]\ninstructions: |\n  Run # not a comment\n  carefully.\n# trailing\n"
        );
        assert_eq!(parse_project(&out), p, "same meaning");
        assert_eq!(
            project_yaml(&parse_project(&out), Some(&out)),
            out,
            "idempotent"
        );
    }

    #[test]
    fn comments_of_removed_items_go_with_them() {
        let mut p = parse_project(ORIGINAL);
        p.services.retain(|s| s.name != "api");
        p.services.push(Service {
            name: "worker".into(),
            port: None,
            hostname: None,
            prevent_destroy: true,
        });
        let out = project_yaml(&p, Some(ORIGINAL));
        assert!(
            !out.contains("the API") && !out.contains("mobile app"),
            "{out}"
        );
        assert!(
            out.contains(
                "  # the site\n  - name: web\n  - name: worker\n    prevent_destroy: true\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn fmt_rewrites_the_deprecated_vm_key_and_keeps_its_comments() {
        let original = "gcloud:\n  credentials: secret:meta/gcloud/service_account\nvms:\n  # the web host\n  - name: host-1\n    project: my-gcp-project  # billing account B\n    zone: us-central1-a\n    machine_type: e2-standard-4\n    running: true\n";
        let f: SupervisorFile =
            super::super::validate::parse_file(std::path::Path::new("s.yaml"), original).unwrap();
        let out = supervisor_yaml(&f, Some(original));
        assert_eq!(
            out,
            "ports:\n  projects: { start: 3000, end: 8999, block: 100 }\n  shared: { start: 9000, end: 9999 }\ngcloud:\n  credentials: secret:meta/gcloud/service_account\nvms:\n  # the web host\n  - name: host-1\n    gcp_project: my-gcp-project  # billing account B\n    zone: us-central1-a\n    machine_type: e2-standard-4\n    running: true\n"
        );
        let again: SupervisorFile =
            super::super::validate::parse_file(std::path::Path::new("s.yaml"), &out).unwrap();
        assert_eq!(supervisor_yaml(&again, Some(&out)), out, "idempotent");
    }

    #[test]
    fn api_keys_round_trip() {
        let text = "name: shop\napi_keys:\n  - name: maps\n    gcp_project: my-gcp-project\n    display_name: \"Shop: maps\"\n    restrict_apis: [maps-backend.googleapis.com, geocoding-backend.googleapis.com]\n    store: project/shop/maps_key\n";
        let src = super::super::Sources {
            dir: "state".into(),
            supervisor: Some((
                "state/supervisor.yaml".into(),
                "gcloud:\n  credentials: secret:meta/gcloud/service_account\n".into(),
            )),
            projects: vec![("state/projects/shop.yaml".into(), text.to_string())],
        };
        let p = super::super::validate::desired_from_sources(&src)
            .unwrap()
            .projects
            .remove("shop")
            .unwrap();
        assert_eq!(project_yaml(&p, Some(text)), text);
    }

    #[test]
    fn awkward_strings_round_trip() {
        let p = Project {
            name: "shop".into(),
            host: "default".into(),
            path: Some("/srv/my shop: #1".into()),
            port_range: None,
            services: vec![],
            secrets: RequiredSecrets::default(),
            checks: vec![
                "echo \"hi\", there".into(),
                "yes".into(),
                "123".into(),
                "- x".into(),
                "a, b".into(),
            ],
            knowledge: vec!["docs".into(), "src/api".into()],
            instructions: Some("  leading spaces\nsecond".into()),
            instructions_dir: None,
            api_keys: vec![],
        };
        let out = project_yaml(&p, None);
        assert_eq!(parse_project(&out), p, "{out}");
    }
}
