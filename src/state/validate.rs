//! Parsing and checking: from raw file texts to a [`Desired`], collecting every problem on the way.
//! Pure (no I/O): it works on [`Sources`] already read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_saphyr::{Location, Spanned};

use super::model::{ProjectFile, SupervisorFile};
use super::*;
use crate::secrets::detector;
use crate::secrets::path::SecretPath;

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
        .unwrap_or_else(|e| panic!("name regex: {e}"))
});
static GCE_ZONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$").unwrap_or_else(|e| panic!("zone regex: {e}"))
});
static MACHINE_TYPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[a-z][a-z0-9]*-(?:standard|highmem|highcpu|micro|small|medium|megamem|ultramem|hypermem|highgpu|megagpu|ultragpu|edgegpu|standardlssd|highlssd|custom)(?:-[0-9]+[a-z]*)?(?:-[a-z0-9]+)?|(?:[a-z][a-z0-9]*-)?custom-[0-9]+-[0-9]+(?:-ext)?)$")
        .unwrap_or_else(|e| panic!("machine type regex: {e}"))
});
static GCP_PROJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
        .unwrap_or_else(|e| panic!("gcp project regex: {e}"))
});
static TUNNEL_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        .unwrap_or_else(|e| panic!("tunnel id regex: {e}"))
});

/// Names a project may not have: `/mcp/meta` is the meta endpoint.
const RESERVED_PROJECT_NAMES: &[&str] = &["meta"];

pub(crate) const NAME_HINT: &str =
    "use lower-case letters, digits and dashes (at most 63, not starting or ending with a dash)";

/// Whether `name` is a valid project (or service) name.
pub(crate) fn is_valid_name(name: &str) -> bool {
    NAME.is_match(name)
}

/// Collects diagnostics for one file, attaching the offending source line.
struct FileDiags<'a> {
    path: &'a Path,
    text: &'a str,
    out: &'a mut Vec<Diagnostic>,
}

impl FileDiags<'_> {
    fn at(&mut self, loc: Location, message: impl Into<String>, hint: Option<&str>) {
        let mut d = Diagnostic::new(self.path, loc, message).with_source(self.text);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.out.push(d);
    }

    /// A problem that does not stop loading.
    fn warn(&mut self, loc: Location, message: impl Into<String>, hint: &str) {
        self.out.push(
            Diagnostic::new(self.path, loc, message)
                .with_source(self.text)
                .hint(hint)
                .warning(),
        );
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    // An empty file (or only comments) is an empty mapping, not an error.
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    });
    let result = serde_saphyr::from_str_with_options::<T>(
        if meaningful { text } else { "{}" },
        yaml_options(),
    );
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let loc = e.location().unwrap_or(Location::UNKNOWN);
            let message = user_message(&e);
            out.push(
                Diagnostic::new(path, loc, message)
                    .with_source(text)
                    .hint(parse_hint(&e.to_string())),
            );
            None
        }
    }
}

/// Parser limits for state files: aliases may not expand a file into more than a state directory
/// ever needs (an alias bomb stops early, with a short error).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
        },
    }
}

/// The parser's error in the user's terms: what is wrong with the file, never advice about the parser's
/// own API ("set DuplicateKeyPolicy in Options", "use from_str_multiple").
fn user_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    match e.without_snippet() {
        E::DuplicateMappingKey { key: Some(k), .. } => {
            format!("the key `{k}` appears twice in the same mapping")
        }
        E::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice in the same mapping".to_string()
        }
        E::MultipleDocuments { .. } => "the file holds more than one YAML document (a second `---`); a state file is one document".to_string(),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => {
            "anchors and aliases (`&name`, `*name`) expand to far more than a state file holds; write the values out".to_string()
        }
        E::Budget { .. } => "the file is larger or more deeply nested than a state file can be".to_string(),
        _ => plain_message(e),
    }
}

/// serde-saphyr's message without its own snippet and location suffix (we print ours), and without
/// any advice addressed to programmers using the parser.
fn plain_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let first = full.lines().next().unwrap_or("").trim();
    let trimmed = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let mut message = trimmed.trim_end_matches(',').to_string();
    for advice in [", set ", "; use ", ", use "] {
        if let Some(i) = message.find(advice)
            && message[i..].contains("Options")
                | message[i..].contains("from_str")
                | message[i..].contains("serde")
        {
            message.truncate(i);
        }
    }
    message
}

fn parse_hint(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "remove the key or fix its spelling; `supervisor schema` lists every accepted key"
    } else if message.contains("duplicate") {
        "each key may appear once per mapping"
    } else if message.contains("missing field") {
        "add the required key; `supervisor schema` describes each one"
    } else {
        "check the YAML syntax and the value's type; `supervisor schema` describes each key"
    }
}

fn credential_diagnostics(path: &Path, text: &str) -> Vec<Diagnostic> {
    detector::scan(text)
        .into_iter()
        .map(|f| {
            let line = text[..f.start].matches('\n').count() as u64 + 1;
            let col = text[..f.start].rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
            Diagnostic::at(path, line, col, format!("a literal credential ({}, {}) is in a state file", f.kind, f.masked()))
                .hint("state/ is committed to git: store the value with `supervisor secrets set PATH` and refer to it as secret:PATH")
        })
        .collect()
}

/// `items.map(f)` on up to 4 threads (state directories can hold a thousand files), order kept.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if items.len() < 64 || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| scope.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

pub(super) fn desired_from_sources(src: &Sources) -> Result<Desired, Diagnostics> {
    let mut diags = Vec::new();

    // Literal credentials anywhere in state/ are refused before anything else looks at the files.
    let files: Vec<&(PathBuf, String)> = src.supervisor.iter().chain(&src.projects).collect();
    for found in par_map(&files, |(path, text)| credential_diagnostics(path, text)) {
        diags.extend(found);
    }

    let sup_path = src.dir.join(SUPERVISOR_FILE);
    let sup: Option<SupervisorFile> = match &src.supervisor {
        Some((path, text)) => parse(path, text, &mut diags),
        None => Some(SupervisorFile::default()),
    };
    let sup_text = src.supervisor.as_ref().map_or("", |(_, t)| t.as_str());
    let parsed = par_map(&src.projects, |(path, text)| {
        let mut d = Vec::new();
        let p: Option<ProjectFile> = parse(path, text, &mut d);
        (p, d)
    });
    let mut projects: Vec<(PathBuf, &str, ProjectFile)> = Vec::with_capacity(parsed.len());
    for ((path, text), (p, d)) in src.projects.iter().zip(parsed) {
        diags.extend(d);
        if let Some(p) = p {
            projects.push((path.clone(), text.as_str(), p));
        }
    }

    let Some(sup) = sup else {
        return Err(Diagnostics(diags));
    };
    let settings = check_settings(
        &sup,
        &mut FileDiags {
            path: &sup_path,
            text: sup_text,
            out: &mut diags,
        },
    );
    let desired_projects = check_projects(&settings, &projects, &mut diags);

    if diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(diags));
    }
    Ok(Desired {
        warnings: diags,
        dir: src.dir.clone(),
        revision: src.revision(),
        ports: settings.ports,
        shared_services: settings.shared,
        cloudflare: settings.cloudflare,
        gcloud: settings.gcloud,
        vms: settings.vms,
        instructions: settings.instructions,
        projects: desired_projects,
    })
}

struct Settings {
    ports: PortSettings,
    shared: Vec<SharedService>,
    cloudflare: Option<Cloudflare>,
    gcloud: Option<Gcloud>,
    vms: Vec<Vm>,
    instructions: super::InstructionSettings,
}

/// `instructions:` of supervisor.yaml: a sane budget; `meta_path` made absolute (relative to the state
/// directory's parent).
fn check_instructions(
    decl: Option<&super::model::InstructionsDecl>,
    state_dir: &Path,
    d: &mut FileDiags<'_>,
) -> super::InstructionSettings {
    let mut out = super::InstructionSettings::default();
    let Some(decl) = decl else { return out };
    if let Some(b) = &decl.budget {
        if !(1_000..=1_000_000).contains(&b.value) {
            d.at(
                b.referenced,
                format!(
                    "instructions.budget {} is outside 1000–1000000 characters",
                    b.value
                ),
                Some("CLAUDE.md is read by the agent on every start: keep it well under 100000"),
            );
        } else {
            out.budget = b.value as usize;
        }
    }
    if let Some(m) = &decl.meta_path {
        out.meta_path = Some(if m.value.is_absolute() {
            m.value.clone()
        } else {
            let base = match state_dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            base.join(&m.value)
        });
    }
    out
}

fn check_settings(sup: &SupervisorFile, d: &mut FileDiags<'_>) -> Settings {
    let p = &sup.ports;
    let ports = PortSettings {
        projects_start: p.projects.start.value,
        projects_end: p.projects.end.value,
        block: p.projects.block.value,
        shared_start: p.shared.start.value,
        shared_end: p.shared.end.value,
    };
    if ports.block == 0 {
        d.at(
            p.projects.block.referenced,
            "the block size must be at least 1",
            None,
        );
    }
    if ports.projects_start == 0 || ports.projects_end < ports.projects_start {
        d.at(
            p.projects.end.referenced,
            "ports.projects must satisfy 1 <= start <= end",
            None,
        );
    } else if ports.block > 0
        && u32::from(ports.projects_end - ports.projects_start) + 1 < u32::from(ports.block)
    {
        d.at(
            p.projects.block.referenced,
            "ports.projects is smaller than one block",
            None,
        );
    }
    if ports.shared_start == 0 || ports.shared_end < ports.shared_start {
        d.at(
            p.shared.end.referenced,
            "ports.shared must satisfy 1 <= start <= end",
            None,
        );
    }
    if ports.shared_start <= ports.projects_end && ports.projects_start <= ports.shared_end {
        d.at(
            p.shared.start.referenced,
            format!(
                "the shared range {}–{} overlaps the project range {}–{}",
                ports.shared_start, ports.shared_end, ports.projects_start, ports.projects_end
            ),
            Some("shared services and project blocks need separate ranges"),
        );
    }

    let mut shared = Vec::new();
    let mut names: HashMap<&str, Location> = HashMap::new();
    let mut used_ports: HashMap<u16, &str> = HashMap::new();
    for s in &sup.shared_services {
        check_name(&s.name, "shared service", d);
        if let Some(first) = names.insert(&s.name.value, s.name.referenced) {
            d.at(
                s.name.referenced,
                format!(
                    "shared service `{}` is declared twice (first at line {})",
                    s.name.value,
                    first.line()
                ),
                None,
            );
        }
        let port = s.port.value;
        if port < ports.shared_start || port > ports.shared_end {
            d.at(
                s.port.referenced,
                format!(
                    "port {port} of shared service `{}` is outside the shared range {}–{}",
                    s.name.value, ports.shared_start, ports.shared_end
                ),
                Some("pick a port inside ports.shared"),
            );
        }
        if let Some(other) = used_ports.insert(port, &s.name.value) {
            d.at(
                s.port.referenced,
                format!("port {port} is already used by shared service `{other}`"),
                None,
            );
        }
        shared.push(SharedService {
            name: s.name.value.clone(),
            port,
        });
    }

    let cloudflare = sup.cloudflare.as_ref().map(|cf| {
        let zone = normalize_host(&cf.zone.value);
        if let Err(problem) = check_hostname(&zone) {
            d.at(cf.zone.referenced, format!("invalid zone `{}`: {problem}", cf.zone.value), None);
        }
        let api_token_secret = secret_ref(&cf.api_token, "cloudflare.api_token", d);
        let t = &cf.tunnel;
        if !TUNNEL_ID.is_match(&t.id.value) {
            d.at(t.id.referenced, format!("tunnel id `{}` is not a UUID", t.id.value), Some("copy it from `cloudflared tunnel list`"));
        }
        if t.mode == TunnelMode::Local {
            if t.config_path.is_none() {
                d.at(t.id.referenced, "tunnel.mode local needs tunnel.config_path (where cloudflared's config.yml is written)", None);
            }
            if t.credentials_file.is_none() {
                d.at(t.id.referenced, "tunnel.mode local needs tunnel.credentials_file (the tunnel's credentials JSON)", None);
            }
        }
        if t.mode == TunnelMode::Remote && cf.account_id.is_none() {
            d.at(cf.zone.referenced, "tunnel.mode remote needs cloudflare.account_id", None);
        }
        let target = match &t.target {
            Some(s) => {
                let n = normalize_host(&s.value);
                if let Err(problem) = check_hostname(&n) {
                    d.at(s.referenced, format!("invalid tunnel target `{}`: {problem}", s.value), None);
                }
                n
            }
            None => format!("{}.cfargotunnel.com", t.id.value),
        };
        if let Some(url) = &cf.api_url {
            check_url(url, "cloudflare.api_url", d);
        }
        Cloudflare {
            zone,
            account_id: cf.account_id.as_ref().map(|a| a.value.clone()),
            api_token_secret,
            api_url: cf.api_url.as_ref().map(|u| u.value.clone()),
            tunnel: Tunnel {
                id: t.id.value.clone(),
                mode: t.mode,
                config_path: t.config_path.as_ref().map(|p| p.value.clone()),
                credentials_file: t.credentials_file.as_ref().map(|p| p.value.clone()),
                reload: t.reload.clone(),
                target,
            },
        }
    });

    let gcloud = sup.gcloud.as_ref().map(|g| {
        let url = |u: &Option<Spanned<String>>, what: &str, d: &mut FileDiags<'_>| {
            u.as_ref().map(|u| {
                check_url(u, what, d);
                u.value.clone()
            })
        };
        Gcloud {
            credentials_secret: secret_ref(&g.credentials, "gcloud.credentials", d),
            api_url: url(&g.api_url, "gcloud.api_url", d),
            monitoring_api_url: url(&g.monitoring_api_url, "gcloud.monitoring_api_url", d),
            apikeys_api_url: url(&g.apikeys_api_url, "gcloud.apikeys_api_url", d),
        }
    });

    let mut vms = Vec::new();
    let mut vm_names: HashMap<&str, Location> = HashMap::new();
    for vm in &sup.vms {
        check_name(&vm.name, "VM", d);
        if let Some(first) = vm_names.insert(&vm.name.value, vm.name.referenced) {
            d.at(
                vm.name.referenced,
                format!(
                    "VM `{}` is declared twice (first at line {})",
                    vm.name.value,
                    first.line()
                ),
                None,
            );
        }
        let gcp_project = match (&vm.gcp_project, &vm.project) {
            (Some(p), None) => Some(p),
            (None, Some(old)) => {
                d.warn(
                    old.referenced,
                    format!(
                        "`project` of VM `{}` is deprecated: it names the Google Cloud project, now spelled `gcp_project`",
                        vm.name.value
                    ),
                    "rename the key to gcp_project (`supervisor fmt` does it for you)",
                );
                Some(old)
            }
            (Some(p), Some(old)) => {
                d.at(
                    old.referenced,
                    format!(
                        "VM `{}` has both `gcp_project` and its deprecated spelling `project`",
                        vm.name.value
                    ),
                    Some("keep only gcp_project"),
                );
                Some(p)
            }
            (None, None) => {
                d.at(
                    vm.name.referenced,
                    format!("VM `{}` has no gcp_project", vm.name.value),
                    Some("add `gcp_project: <Google Cloud project id>`"),
                );
                None
            }
        };
        if let Some(p) = gcp_project {
            check_gcp_project(p, d);
        }
        if !GCE_ZONE.is_match(&vm.zone.value) {
            d.at(
                vm.zone.referenced,
                format!("`{}` is not a Compute Engine zone", vm.zone.value),
                Some("e.g. us-central1-a"),
            );
        }
        if !MACHINE_TYPE.is_match(&vm.machine_type.value) {
            d.at(
                vm.machine_type.referenced,
                format!("`{}` is not a valid machine type", vm.machine_type.value),
                Some("e.g. e2-standard-4, n2-highmem-8 or custom-4-16384"),
            );
        }
        if gcloud.is_none() {
            d.at(
                vm.name.referenced,
                format!(
                    "VM `{}` cannot be managed: no gcloud credentials are configured",
                    vm.name.value
                ),
                Some("add `gcloud: { credentials: secret:meta/gcloud/service_account }` to supervisor.yaml (and store the service-account JSON there), or remove the VM"),
            );
        }
        vms.push(Vm {
            name: vm.name.value.clone(),
            gcp_project: gcp_project.map(|p| p.value.clone()).unwrap_or_default(),
            zone: vm.zone.value.clone(),
            machine_type: vm.machine_type.value.clone(),
            running: vm.running.as_ref().map(|r| r.value),
        });
    }

    let state_dir = d.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let instructions = check_instructions(sup.instructions.as_ref(), &state_dir, d);
    Settings {
        ports,
        shared,
        cloudflare,
        gcloud,
        vms,
        instructions,
    }
}

fn check_gcp_project(p: &Spanned<String>, d: &mut FileDiags<'_>) {
    if !GCP_PROJECT.is_match(&p.value) {
        d.at(
            p.referenced,
            format!("`{}` is not a valid Google Cloud project id", p.value),
            Some("6–30 lower-case letters, digits or dashes, starting with a letter"),
        );
    }
}

fn check_url(url: &Spanned<String>, what: &str, d: &mut FileDiags<'_>) {
    if !(url.value.starts_with("https://") || url.value.starts_with("http://")) {
        d.at(
            url.referenced,
            format!("{what} must be an http(s) URL"),
            None,
        );
    }
}

/// `secret:meta/…` → the vault path. Anything else is refused (a literal token must never be in state/).
fn secret_ref(value: &Spanned<String>, what: &str, d: &mut FileDiags<'_>) -> String {
    match value.value.strip_prefix("secret:") {
        Some(path) => {
            if let Err(e) = SecretPath::parse(path) {
                d.at(value.referenced, format!("{what}: {e}"), None);
            }
            path.to_string()
        }
        None => {
            d.at(
                value.referenced,
                format!("{what} must be a reference to the vault (secret:PATH), not a value"),
                Some(
                    "store the value with `supervisor secrets set meta/…` and write secret:meta/…",
                ),
            );
            String::new()
        }
    }
}

fn check_name(name: &Spanned<String>, what: &str, d: &mut FileDiags<'_>) {
    if !NAME.is_match(&name.value) {
        d.at(
            name.referenced,
            format!("invalid {what} name `{}`", name.value),
            Some(NAME_HINT),
        );
    }
}

fn normalize_host(h: &str) -> String {
    super::Hostname::normalize(h)
}

/// Hostname rules (as cloudflared and DNS apply them): no port, no scheme or path, labels of 1–63
/// letters/digits/dashes not starting or ending with a dash, `*` only as the whole leftmost label.
pub(crate) fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("it is empty".into());
    }
    if h.contains("://") || h.contains('/') {
        return Err("a hostname has no scheme or path".into());
    }
    if h.contains(':') {
        return Err("a hostname has no port (the port comes from the service)".into());
    }
    if h.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    let labels: Vec<&str> = h.split('.').collect();
    if labels.len() < 2 {
        return Err("it needs at least two labels (name.tld)".into());
    }
    for (i, l) in labels.iter().enumerate() {
        if *l == "*" {
            if i != 0 {
                return Err("`*` is only allowed as the leftmost label".into());
            }
            continue;
        }
        if l.is_empty() || l.len() > 63 {
            return Err(format!("label `{l}` must be 1–63 characters"));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(if l.contains('*') {
                "`*` is only allowed as a whole leftmost label".into()
            } else {
                format!("label `{l}` may only contain letters, digits and dashes")
            });
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(format!("label `{l}` must not start or end with a dash"));
        }
    }
    Ok(())
}

/// A knowledge folder as the supervisor uses it: trailing slashes and a leading `./` removed.
pub(crate) fn knowledge_folder(raw: &str) -> String {
    let t = raw.trim();
    let t = t.strip_prefix("./").unwrap_or(t);
    t.trim_end_matches('/').to_string()
}

/// Knowledge folders: relative to the project's path (which must be set), inside it, each once, and
/// usable as a source name.
fn check_knowledge(p: &ProjectFile, d: &mut FileDiags) {
    let mut seen: Vec<String> = Vec::new();
    for k in &p.knowledge {
        let folder = knowledge_folder(&k.value);
        let problem = if folder.is_empty() || folder == "." {
            Some(format!("knowledge folder `{}` names no folder", k.value))
        } else if Path::new(&folder).is_absolute() {
            Some(format!(
                "knowledge folder `{}` must be relative to the project's path",
                k.value
            ))
        } else if Path::new(&folder)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            Some(format!(
                "knowledge folder `{}` must stay inside the project's folder (no `..`)",
                k.value
            ))
        } else if folder.len() > 64
            || !folder
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            Some(format!(
                "knowledge folder `{}` must be at most 64 letters, digits and . _ - / (it names the knowledge source)",
                k.value
            ))
        } else if seen.contains(&folder) {
            Some(format!("knowledge folder `{}` is listed twice", k.value))
        } else {
            None
        };
        match problem {
            Some(message) => d.at(k.referenced, message, None),
            None if p.path.is_none() => d.at(
                k.referenced,
                format!(
                    "knowledge folder `{}` is relative to the project's path, which is not set",
                    k.value
                ),
                Some("add `path:` with the project's working copy"),
            ),
            None => {}
        }
        seen.push(folder);
    }
}

/// The project a file declares, without cross-file checks (hostnames normalised).
pub(crate) fn project_from_file(p: &ProjectFile) -> Project {
    Project {
        name: p.name.value.clone(),
        host: crate::store::DEFAULT_HOST.to_string(),
        path: p.path.as_ref().map(|x| x.value.clone()),
        port_range: p.port_range.as_ref().map(|x| x.value),
        services: p
            .services
            .iter()
            .map(|s| Service {
                name: s.name.value.clone(),
                port: s.port.as_ref().map(|p| p.value),
                hostname: s.hostname.as_ref().map(|h| super::Hostname::new(&h.value)),
                prevent_destroy: s.prevent_destroy,
            })
            .collect(),
        secrets: RequiredSecrets {
            required: p.secrets.required.iter().map(|r| r.value.clone()).collect(),
        },
        checks: p.checks.clone(),
        knowledge: p
            .knowledge
            .iter()
            .map(|k| knowledge_folder(&k.value))
            .collect(),
        instructions: p.instructions.clone(),
        instructions_dir: p.instructions_dir.as_ref().map(|d| d.value.clone()),
        api_keys: p
            .api_keys
            .iter()
            .map(|k| ApiKey {
                name: k.name.value.clone(),
                gcp_project: k.gcp_project.value.clone(),
                display_name: k.display_name.as_ref().map(|x| x.value.clone()),
                restrict_apis: k
                    .restrict_apis
                    .iter()
                    .map(|a| a.value.trim().to_ascii_lowercase())
                    .collect(),
                store: k.store.value.clone(),
            })
            .collect(),
    }
}

/// Parses one file of either kind (syntax and keys only), for `fmt`.
pub(crate) fn parse_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, Diagnostics> {
    let mut diags = Vec::new();
    parse(path, text, &mut diags).ok_or(Diagnostics(diags))
}

fn check_projects(
    settings: &Settings,
    projects: &[(PathBuf, &str, ProjectFile)],
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Project> {
    let ports = settings.ports;
    let mut out = BTreeMap::new();
    // hostname → (file, line, project/service) of its first use, across all projects
    let mut hostnames: HashMap<String, (PathBuf, u64, String)> = HashMap::new();
    let mut blocks: HashMap<u16, (PathBuf, String)> = HashMap::new();

    for (path, text, p) in projects {
        let mut d = FileDiags {
            path,
            text,
            out: diags,
        };
        let name = &p.name.value;
        check_name(&p.name, "project", &mut d);
        if RESERVED_PROJECT_NAMES.contains(&name.as_str()) {
            d.at(
                p.name.referenced,
                format!("`{name}` is reserved (it names the meta MCP endpoint)"),
                Some("choose another project name"),
            );
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != name {
            d.at(
                p.name.referenced,
                format!("the project is named `{name}` but its file is `{stem}.yaml`"),
                Some("the file name must be the project name: rename one of them"),
            );
        }

        // The project's block.
        let block = p.port_range.as_ref().map(|pr| {
            let start = pr.value;
            let aligned = ports.block > 0
                && start >= ports.projects_start
                && (start - ports.projects_start).is_multiple_of(ports.block);
            // A block of 0 (already an error) must not underflow here.
            let end = (u32::from(start) + u32::from(ports.block)).saturating_sub(1);
            if !aligned || end > u32::from(ports.projects_end) {
                let hint = format!(
                    "blocks start at {} + a multiple of {} and end by {}",
                    ports.projects_start, ports.block, ports.projects_end
                );
                d.at(pr.referenced, format!("port_range {start} is not the start of a block in {}–{}", ports.projects_start, ports.projects_end), Some(&hint));
            } else if let Some((other_file, other)) = blocks.insert(start, (path.clone(), name.clone())) {
                d.at(
                    pr.referenced,
                    format!("port_range {start} overlaps project `{other}` ({})", other_file.display()),
                    Some("give each project its own block, or leave port_range out to get the next free one"),
                );
            }
            (start, end as u16)
        });

        let mut service_names: HashMap<&str, Location> = HashMap::new();
        let mut pinned: HashMap<u16, &str> = HashMap::new();
        for s in &p.services {
            check_name(&s.name, "service", &mut d);
            if let Some(first) = service_names.insert(&s.name.value, s.name.referenced) {
                d.at(
                    s.name.referenced,
                    format!(
                        "service `{}` is declared twice in project `{name}` (first at line {})",
                        s.name.value,
                        first.line()
                    ),
                    None,
                );
            }
            if let Some(port) = &s.port {
                match block {
                    Some((lo, hi)) if port.value < lo || port.value > hi => d.at(
                        port.referenced,
                        format!("port {} of service `{}` is outside the project's block {lo}–{hi}", port.value, s.name.value),
                        Some("pin a port inside the block, or leave `port` out to get the first free one"),
                    ),
                    Some(_) => {}
                    None => {
                        let suggestion = if ports.block > 0 && port.value >= ports.projects_start {
                            ports.projects_start + (port.value - ports.projects_start) / ports.block * ports.block
                        } else {
                            ports.projects_start
                        };
                        d.at(
                            port.referenced,
                            format!("service `{}` pins port {} but project `{name}` has no port_range", s.name.value, port.value),
                            Some(&format!("pinning a port needs a pinned block: add `port_range: {suggestion}`")),
                        );
                    }
                }
                if let Some(other) = pinned.insert(port.value, &s.name.value) {
                    d.at(
                        port.referenced,
                        format!(
                            "port {} is pinned by both `{other}` and `{}`",
                            port.value, s.name.value
                        ),
                        None,
                    );
                }
            }
            if let Some(h) = &s.hostname {
                let n = normalize_host(&h.value);
                if let Err(problem) = check_hostname(&n) {
                    d.at(
                        h.referenced,
                        format!("invalid hostname `{}`: {problem}", h.value),
                        None,
                    );
                } else if let Some(cf) = &settings.cloudflare {
                    if n != cf.zone && !n.ends_with(&format!(".{}", cf.zone)) {
                        d.at(
                            h.referenced,
                            format!("hostname `{n}` is outside the zone {}", cf.zone),
                            Some("public hostnames must be in cloudflare.zone"),
                        );
                    }
                } else {
                    d.at(
                        h.referenced,
                        format!(
                            "service `{}` has a hostname but no cloudflare section is configured",
                            s.name.value
                        ),
                        Some("add cloudflare: to supervisor.yaml, or remove the hostname"),
                    );
                }
                let owner = format!("{name}/{}", s.name.value);
                if let Some((f, line, other)) = hostnames.get(&n) {
                    d.at(
                        h.referenced,
                        format!(
                            "hostname `{n}` is already used by {other} ({}:{line})",
                            f.display()
                        ),
                        Some("a hostname routes to exactly one service"),
                    );
                } else {
                    hostnames.insert(n, (path.clone(), h.referenced.line(), owner));
                }
            }
        }

        for r in &p.secrets.required {
            match SecretPath::parse(&r.value) {
                Ok(sp) => {
                    let svc_ok = sp
                        .service()
                        .is_none_or(|svc| p.services.iter().any(|s| s.name.value == svc));
                    if sp.project() != Some(name.as_str()) || !svc_ok {
                        d.at(
                            r.referenced,
                            format!(
                                "required secret `{}` does not belong to project `{name}`",
                                r.value
                            ),
                            Some(&format!(
                                "use project/{name}/… or service/{name}/<service>/…"
                            )),
                        );
                    }
                }
                Err(e) => d.at(r.referenced, e.to_string(), None),
            }
        }
        for c in &p.checks {
            if c.trim().is_empty() {
                d.at(p.name.referenced, "a check command is empty", None);
            }
        }
        if let Some(dir) = &p.instructions_dir
            && dir.value.is_relative()
            && p.path.is_none()
        {
            d.at(
                dir.referenced,
                "instructions_dir is relative to the project's path, but the project has no path",
                Some("set path:, or make instructions_dir absolute"),
            );
        }
        check_knowledge(p, &mut d);
        check_api_keys(settings, p, &mut d);

        if out.contains_key(name) {
            d.at(
                p.name.referenced,
                format!("project `{name}` is declared twice"),
                None,
            );
        }
        out.insert(name.clone(), project_from_file(p));
    }
    out
}

/// The longest display name the API Keys API accepts.
const DISPLAY_NAME_MAX: usize = 63;

fn check_api_keys(settings: &Settings, p: &ProjectFile, d: &mut FileDiags<'_>) {
    let project = &p.name.value;
    let mut names: HashMap<&str, Location> = HashMap::new();
    let mut stores: HashMap<&str, &str> = HashMap::new();
    for k in &p.api_keys {
        check_name(&k.name, "API key", d);
        if let Some(first) = names.insert(&k.name.value, k.name.referenced) {
            d.at(
                k.name.referenced,
                format!(
                    "API key `{}` is declared twice in project `{project}` (first at line {})",
                    k.name.value,
                    first.line()
                ),
                None,
            );
        }
        check_gcp_project(&k.gcp_project, d);
        if let Some(dn) = &k.display_name {
            let n = dn.value.chars().count();
            if dn.value.trim().is_empty() || n > DISPLAY_NAME_MAX {
                d.at(
                    dn.referenced,
                    format!("display_name must be 1–{DISPLAY_NAME_MAX} characters (it has {n})"),
                    None,
                );
            }
        }
        let mut apis: HashMap<String, Location> = HashMap::new();
        for a in &k.restrict_apis {
            let service = a.value.trim().to_ascii_lowercase();
            if check_hostname(&service).is_err() || service.starts_with("*.") {
                d.at(
                    a.referenced,
                    format!("`{}` is not a Google API service name", a.value),
                    Some("e.g. maps-backend.googleapis.com"),
                );
            }
            if let Some(first) = apis.insert(service.clone(), a.referenced) {
                d.at(
                    a.referenced,
                    format!(
                        "`{service}` is listed twice (first at line {})",
                        first.line()
                    ),
                    None,
                );
            }
        }
        match SecretPath::parse(&k.store.value) {
            Ok(sp) if sp.project() == Some(project.as_str()) => {
                if let Some(other) = stores.insert(&k.store.value, &k.name.value) {
                    d.at(
                        k.store.referenced,
                        format!(
                            "`{}` is already where API key `{other}` is stored",
                            k.store.value
                        ),
                        Some("each key needs its own vault path"),
                    );
                }
            }
            Ok(_) => d.at(
                k.store.referenced,
                format!(
                    "API key `{}` would be stored at `{}`, outside project `{project}`",
                    k.name.value, k.store.value
                ),
                Some(&format!("use project/{project}/<name>")),
            ),
            Err(e) => d.at(k.store.referenced, e.to_string(), None),
        }
        if settings.gcloud.is_none() {
            d.at(
                k.name.referenced,
                format!(
                    "API key `{}` cannot be managed: no gcloud credentials are configured",
                    k.name.value
                ),
                Some("add `gcloud: { credentials: secret:meta/gcloud/service_account }` to supervisor.yaml"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(sup: Option<&str>, projects: &[(&str, &str)]) -> Sources {
        let dir = PathBuf::from("state");
        Sources {
            supervisor: sup.map(|t| (dir.join(SUPERVISOR_FILE), t.to_string())),
            projects: projects
                .iter()
                .map(|(n, t)| {
                    (
                        dir.join(PROJECTS_DIR).join(format!("{n}.yaml")),
                        t.to_string(),
                    )
                })
                .collect(),
            dir,
        }
    }

    fn errors(src: &Sources) -> Vec<String> {
        desired_from_sources(src)
            .unwrap_err()
            .0
            .iter()
            .map(|d| {
                format!(
                    "{}:{}:{}: {}",
                    d.file.display(),
                    d.line,
                    d.column,
                    d.message
                )
            })
            .collect()
    }

    #[test]
    fn numbers_and_booleans_written_as_strings_are_refused() {
        let src = sources(
            Some("ports:\n  projects: { start: \"3000\", end: 8999, block: 100 }\n"),
            &[
                ("a", "name: a\nport_range: \"3100\"\n"),
                (
                    "b",
                    "name: b\nport_range: 3200\nservices:\n  - name: api\n    port: '3205'\n",
                ),
                (
                    "c",
                    "name: c\nservices:\n  - name: api\n    prevent_destroy: \"true\"\n",
                ),
                ("d", "name: d\nport_range: 70000\n"),
            ],
        );
        assert_eq!(
            errors(&src),
            [
                "state/supervisor.yaml:2:22: a port must be an integer, not the string \"3000\" (remove the quotes)",
                "state/projects/a.yaml:2:13: a port must be an integer, not the string \"3100\" (remove the quotes)",
                "state/projects/b.yaml:5:11: a port must be an integer, not the string \"3205\" (remove the quotes)",
                "state/projects/c.yaml:4:22: expected true or false, not the string \"true\" (remove the quotes)",
                "state/projects/d.yaml:2:13: 70000 is not a port (0–65535)",
            ]
        );
        // Unquoted, the same values load.
        let ok = sources(
            Some("ports:\n  projects: { start: 3000, end: 8999, block: 100 }\n"),
            &[(
                "b",
                "name: b\nport_range: 3200\nservices:\n  - name: api\n    port: 3205\n    prevent_destroy: true\n",
            )],
        );
        let d = desired_from_sources(&ok).unwrap();
        assert_eq!(d.projects["b"].services[0].port, Some(3205));
        assert!(d.projects["b"].services[0].prevent_destroy);
    }

    #[test]
    fn yaml_errors_speak_the_users_language() {
        let src = sources(
            None,
            &[
                ("a", "name: a\nname: b\n"),
                ("b", "name: b\n---\nname: c\n"),
            ],
        );
        let errs = errors(&src);
        assert_eq!(
            errs,
            [
                "state/projects/a.yaml:2:1: the key `name` appears twice in the same mapping",
                "state/projects/b.yaml:3:1: the file holds more than one YAML document (a second `---`); a state file is one document",
            ]
        );
        let shown = desired_from_sources(&src).unwrap_err().to_string();
        for parser_advice in ["Options", "DuplicateKeyPolicy", "from_str"] {
            assert!(!shown.contains(parser_advice), "{shown}");
        }
    }

    #[test]
    fn an_alias_bomb_and_long_lines_give_short_messages() {
        // Nine levels of nine aliases: a billion strings if expanded.
        let mut bomb = String::from(
            "name: bomb\nchecks: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
        );
        bomb.push_str("instructions: x\nservices:\n");
        for i in 1..10 {
            let p = format!("*a{}", i - 1);
            bomb.push_str(&format!(
                "  - name: &a{i} [{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}]\n"
            ));
        }
        let long_line = format!(
            "name: long\nchecks: [{}1: 2: 3]\n",
            "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", ".repeat(2000)
        );
        let long_value = format!("name: {}\n", "n".repeat(90_000));
        let src = sources(
            None,
            &[
                ("bomb", &bomb),
                ("long", &long_line),
                ("value", &long_value),
            ],
        );
        let diags = desired_from_sources(&src).unwrap_err();
        assert!(diags.0.len() >= 3, "{diags}");
        let shown = diags.to_string();
        let longest = shown.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(longest <= 400, "a line of {longest} characters was printed");
        let json = serde_json::to_string(&diags).unwrap();
        assert!(json.len() < 4000, "{} bytes of JSON", json.len());
    }

    #[test]
    fn knowledge_folders_are_relative_inside_and_unique() {
        let ok = sources(
            None,
            &[(
                "shop",
                "name: shop\npath: /srv/shop\nknowledge: [docs/, ./src, docs/api]\n",
            )],
        );
        let d = desired_from_sources(&ok).unwrap();
        assert_eq!(d.projects["shop"].knowledge, ["docs", "src", "docs/api"]);
        let bad = sources(
            None,
            &[
                (
                    "shop",
                    "name: shop\npath: /srv/shop\nknowledge: [/etc, ../up, docs, docs/, \"a b\", \"\"]\n",
                ),
                ("blog", "name: blog\nknowledge: [docs]\n"),
            ],
        );
        assert_eq!(
            errors(&bad),
            [
                "state/projects/shop.yaml:3:13: knowledge folder `/etc` must be relative to the project's path",
                "state/projects/shop.yaml:3:19: knowledge folder `../up` must stay inside the project's folder (no `..`)",
                "state/projects/shop.yaml:3:32: knowledge folder `docs/` is listed twice",
                "state/projects/shop.yaml:3:39: knowledge folder `a b` must be at most 64 letters, digits and . _ - / (it names the knowledge source)",
                "state/projects/shop.yaml:3:46: knowledge folder `` names no folder",
                "state/projects/blog.yaml:2:13: knowledge folder `docs` is relative to the project's path, which is not set",
            ]
        );
    }

    #[test]
    fn a_valid_project_loads() {
        let src = sources(
            None,
            &[(
                "shop",
                "name: shop\nport_range: 3100\nservices:\n  - name: api\n    port: 3101\n  - name: web\n",
            )],
        );
        let d = desired_from_sources(&src).unwrap();
        let shop = &d.projects["shop"];
        assert_eq!(shop.port_range, Some(3100));
        assert_eq!(shop.services.len(), 2);
        assert_eq!(shop.services[0].port, Some(3101));
        assert!(d.revision.starts_with("sha256:"));
    }

    #[test]
    fn every_error_is_reported_with_its_location() {
        let src = sources(
            Some("shared_services:\n  - name: pg\n    port: 5432\n"),
            &[
                (
                    "a",
                    "name: a\nport_range: 3100\nservices:\n  - name: api\n    port: 3250\n  - name: api\n",
                ),
                (
                    "b",
                    "name: b\nport_range: 3100\nservices:\n  - name: web\n    hostname: \"web.example.com:8080\"\n",
                ),
                ("c", "name: c\nservics: []\n"),
            ],
        );
        let errs = errors(&src);
        assert!(
            errs.iter().any(|e| e.starts_with(
                "state/supervisor.yaml:3:11: port 5432 of shared service `pg` is outside"
            )),
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("state/projects/a.yaml:5:11: port 3250 of service `api` is outside the project's block 3100–3199")), "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("state/projects/a.yaml:6:11: service `api` is declared twice")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e
                .starts_with("state/projects/b.yaml:2:13: port_range 3100 overlaps project `a`")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("b.yaml:5:15: invalid hostname") && e.contains("no port")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("state/projects/c.yaml:2:1") && e.contains("servics")),
            "{errs:#?}"
        );
    }

    #[test]
    fn hostnames_are_unique_across_projects_and_inside_the_zone() {
        let sup = "cloudflare:\n  zone: example.com\n  api_token: secret:meta/cloudflare/api_token\n  account_id: acc\n  tunnel:\n    id: 0b5a9bd6-4c3a-4b87-9c79-3b3f5f0c6a11\n    mode: remote\n";
        let src = sources(
            Some(sup),
            &[
                (
                    "a",
                    "name: a\nservices:\n  - name: web\n    hostname: App.Example.com.\n",
                ),
                (
                    "b",
                    "name: b\nservices:\n  - name: web\n    hostname: app.example.com\n  - name: api\n    hostname: api.other.org\n",
                ),
            ],
        );
        let errs = errors(&src);
        assert!(
            errs.iter()
                .any(|e| e
                    .contains("b.yaml:4:15: hostname `app.example.com` is already used by a/web")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e
                .contains("b.yaml:6:15: hostname `api.other.org` is outside the zone example.com")),
            "{errs:#?}"
        );
    }

    #[test]
    fn literal_credentials_and_bad_references_are_refused() {
        let sup = "cloudflare:\n  zone: example.com\n  api_token: abcdefABCDEF0123456789abcdefABCDEF012345\n  tunnel:\n    id: 0b5a9bd6-4c3a-4b87-9c79-3b3f5f0c6a11\n    mode: remote\n";
        let src = sources(
            Some(sup),
            &[(
                "a",
                "name: a\ninstructions: \"use ghp_1234567890abcdefghijABCDEFGHIJ123456\"\n",
            )],
        );
        let errs = errors(&src);
        assert!(
            errs.iter()
                .any(|e| e
                    .contains("supervisor.yaml:3:14: cloudflare.api_token must be a reference")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("a.yaml:2:20: a literal credential (github_token")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().all(|e| !e.contains("ghp_1234567890abcdefghij")),
            "{errs:#?}"
        );
    }

    #[test]
    fn file_name_must_match_project_name() {
        let errs = errors(&sources(None, &[("shop", "name: store\n")]));
        assert_eq!(
            errs,
            vec![
                "state/projects/shop.yaml:1:7: the project is named `store` but its file is `shop.yaml`"
            ]
        );
    }

    const VALID_SUP: &str = "ports:\n  projects: { start: 3000, end: 8999, block: 100 }\n  shared: { start: 9000, end: 9999 }\nshared_services:\n  - name: pg\n    port: 9432\ncloudflare:\n  zone: example.com\n  api_token: secret:meta/cloudflare/api_token\n  account_id: abc\n  tunnel:\n    id: 0b5a9bd6-4c3a-4b87-9c79-3b3f5f0c6a11\n    mode: remote\n";
    const VALID_PROJECT: &str = "name: shop\npath: /srv/shop\nport_range: 3100\nservices:\n  - name: api\n    port: 3101\n    hostname: api.example.com\n    prevent_destroy: true\n  - name: web\nsecrets:\n  required: [project/shop/key]\nchecks: [\"cargo test\"]\ninstructions: |\n  Be careful.\n";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

        /// Malformed input of any kind gives errors, never a panic.
        #[test]
        fn mutated_files_never_panic(
            which in 0usize..2,
            edits in proptest::collection::vec((0usize..400, 0u8..6, proptest::prelude::any::<char>()), 1..6),
        ) {
            let mut text: Vec<char> = if which == 0 { VALID_SUP } else { VALID_PROJECT }.chars().collect();
            for (at, op, c) in edits {
                let at = at % (text.len() + 1);
                match op {
                    0 => text.insert(at, c),
                    1 if at < text.len() => { text.remove(at); }
                    2 => text.truncate(at),
                    3 => text.insert(at, [':', '-', '[', '{', '"', '\'', '&', '*', '!', '#', '|', '\t', '\n'][at % 13]),
                    4 if at < text.len() => text[at] = c,
                    _ => text.insert(at, '\n'),
                }
            }
            let text: String = text.into_iter().collect();
            let src = if which == 0 { sources(Some(&text), &[("shop", VALID_PROJECT)]) } else { sources(Some(VALID_SUP), &[("shop", &text)]) };
            let _ = desired_from_sources(&src);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = desired_from_sources(&sources(Some(&text), &[("shop", &text)]));
        }
    }

    #[test]
    fn a_block_of_zero_at_port_zero_is_an_error_not_a_panic() {
        // Found by tests/hostile_input.rs: `block: 0` with `port_range: 0` computed the block's end
        // as 0 + 0 - 1 (an overflow panic in debug builds).
        let sup = "ports:\n  projects: { start: 0, end: 10, block: 0 }\n  shared: { start: 9000, end: 9099 }\n";
        let errs = errors(&sources(
            Some(sup),
            &[("shop", "name: shop\nport_range: 0\n")],
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("the block size must be at least 1")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("port_range 0 is not the start of a block")),
            "{errs:#?}"
        );
    }

    const GCLOUD: &str = "gcloud:\n  credentials: secret:meta/gcloud/service_account\n";

    #[test]
    fn vms_without_gcloud_credentials_are_an_error_naming_file_and_line() {
        let sup = "vms:\n  - name: host-1\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4\n";
        assert_eq!(
            errors(&sources(Some(sup), &[])),
            vec![
                "state/supervisor.yaml:2:11: VM `host-1` cannot be managed: no gcloud credentials are configured"
            ]
        );
    }

    #[test]
    fn the_old_project_key_of_a_vm_is_a_warning_and_still_understood() {
        let sup = format!(
            "{GCLOUD}vms:\n  - name: host-1\n    project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4\n    running: true\n"
        );
        let d = desired_from_sources(&sources(Some(&sup), &[])).unwrap();
        assert_eq!(
            d.vms,
            vec![Vm {
                name: "host-1".into(),
                gcp_project: "my-gcp-project".into(),
                zone: "us-central1-a".into(),
                machine_type: "e2-standard-4".into(),
                running: Some(true),
            }]
        );
        let warnings: Vec<String> = d.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with(
                "state/supervisor.yaml:5:14: warning: `project` of VM `host-1` is deprecated"
            ),
            "{warnings:#?}"
        );
        // Both spellings at once is an error; neither is one too.
        let both = format!(
            "{GCLOUD}vms:\n  - name: host-1\n    project: a-gcp-project\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4\n"
        );
        assert_eq!(
            errors(&sources(Some(&both), &[])),
            vec![
                "state/supervisor.yaml:5:14: VM `host-1` has both `gcp_project` and its deprecated spelling `project`"
            ]
        );
        let neither = format!(
            "{GCLOUD}vms:\n  - name: host-1\n    zone: us-central1-a\n    machine_type: e2-standard-4\n"
        );
        assert_eq!(
            errors(&sources(Some(&neither), &[])),
            vec!["state/supervisor.yaml:4:11: VM `host-1` has no gcp_project"]
        );
    }

    #[test]
    fn api_keys_are_checked_with_their_locations() {
        let project = "name: shop\napi_keys:\n  - name: maps\n    gcp_project: my-gcp-project\n    display_name: Shop maps\n    restrict_apis: [maps-backend.googleapis.com]\n    store: project/shop/maps_key\n";
        let d = desired_from_sources(&sources(Some(GCLOUD), &[("shop", project)])).unwrap();
        assert_eq!(
            d.projects["shop"].api_keys,
            vec![ApiKey {
                name: "maps".into(),
                gcp_project: "my-gcp-project".into(),
                display_name: Some("Shop maps".into()),
                restrict_apis: vec!["maps-backend.googleapis.com".into()],
                store: "project/shop/maps_key".into(),
            }]
        );
        let bad = "name: shop\napi_keys:\n  - name: Maps\n    gcp_project: x\n    restrict_apis: [\"https://maps\", a.googleapis.com, a.googleapis.com]\n    store: project/blog/maps_key\n  - name: geo\n    gcp_project: my-gcp-project\n    display_name: \"\"\n    store: not a path\n";
        let errs = errors(&sources(Some(GCLOUD), &[("shop", bad)]));
        let expected = [
            "state/projects/shop.yaml:3:11: invalid API key name `Maps`",
            "state/projects/shop.yaml:4:18: `x` is not a valid Google Cloud project id",
            "state/projects/shop.yaml:5:21: `https://maps` is not a Google API service name",
            "state/projects/shop.yaml:5:55: `a.googleapis.com` is listed twice (first at line 5)",
            "state/projects/shop.yaml:6:12: API key `Maps` would be stored at `project/blog/maps_key`, outside project `shop`",
            "state/projects/shop.yaml:9:19: display_name must be 1–63 characters (it has 0)",
        ];
        for e in expected {
            assert!(errs.iter().any(|x| x == e), "missing {e} in {errs:#?}");
        }
        assert!(
            errs.iter()
                .any(|x| x.starts_with("state/projects/shop.yaml:10:12: ")),
            "{errs:#?}"
        );
        let no_gcloud = errors(&sources(None, &[("shop", project)]));
        assert_eq!(
            no_gcloud,
            vec![
                "state/projects/shop.yaml:3:11: API key `maps` cannot be managed: no gcloud credentials are configured"
            ]
        );
    }

    #[test]
    fn the_valid_fixtures_are_valid() {
        desired_from_sources(&sources(Some(VALID_SUP), &[("shop", VALID_PROJECT)])).unwrap();
    }
}
