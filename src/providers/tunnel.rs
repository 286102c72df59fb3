//! Tunnel ingress: for every service with a `hostname`, one cloudflared ingress rule
//! `hostname → http://localhost:<port>`, the port being the one the ports provider holds (or hands
//! out in this same plan).
//!
//! Addresses: `tunnel/<hostname>` for rules; in local mode also [`CONFIG_ADDRESS`], the rendered file,
//! whose change carries the unified diff of the whole file; in remote mode [`REMOTE_ADDRESS`] when
//! only the order or the catch-all of the remote configuration needs fixing.
//!
//! Two modes, one model: the configuration is read, the rule edits are merged into it, and the result
//! is written back.
//! * `local` — cloudflared's `config.yml` at `tunnel.config_path`: `tunnel`, `credentials-file`, the
//!   ingress rules and whatever else the file holds (kept). It is written atomically, then
//!   `tunnel.reload` runs (`sh -c`, with a timeout); when the reload fails the previous file is put back
//!   (and reloaded) and the error carries the command's output. Comments in the file are not kept.
//! * `remote` — the remote-managed configuration (`GET/PUT
//!   /accounts/{account}/cfd_tunnel/{tunnel}/configurations`), read-modify-write, keeping every rule,
//!   `originRequest` block and key the supervisor does not manage.
//!
//! **Ownership**: the supervisor edits only the rules in its inventory (`provider = tunnel`). A rule
//! for a desired hostname that someone else wrote is a plan error until adopted (`apply --adopt HOST`,
//! `supervisor import cloudflare`); adopting keeps the rule's `originRequest` and other settings.
//! Rules with a `path`, and rules for other hostnames, are never touched.
//!
//! **Order and validation**, as cloudflared applies them: rules are matched top to bottom, so the
//! supervisor places each of its rules before the first rule less specific than it (exact names
//! before wildcards, more labels first; its own rules by name), never moves anyone else's rules
//! relative to each other, and ends the list with exactly one catch-all (`service: http_status:404`
//! unless one is there). A remote configuration in which the supervisor owns nothing is not touched.
//! Before anything is written the result is checked like cloudflared checks it: catch-all last and
//! only last, no port in a hostname, `*` only as the whole leftmost label, HTTP services without a
//! path, no hostname twice.
//!
//! The diff ([`diff`]) and the merge ([`merge`]) are pure.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::files::{sha256, unified_diff};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::cloudflare::{CloudflareApi, api_error, normalize_host, specificity};
use super::ports::{self, PlannedPorts};
use crate::clients::cloudflare::{IngressRule, TunnelConfig};
use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, fingerprint,
    payload,
};
use crate::state::{Desired, Tunnel, TunnelMode};
use crate::store::{ManagedObject, Store};

pub const NAME: &str = "tunnel";
/// The rendered `config.yml` (local mode).
pub const CONFIG_ADDRESS: &str = "tunnel/config.yml";
/// The remote configuration as a whole (remote mode; only for order and catch-all fixes).
pub const REMOTE_ADDRESS: &str = "tunnel/configuration";
/// What requests for no known hostname get.
pub const CATCH_ALL_SERVICE: &str = "http_status:404";
/// How long the reload command may run.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The reload output kept in an error.
const OUTPUT_MAX: usize = 4000;

const FILE_HEADER: &str = "# Written by supervisor (`supervisor apply`): ingress rules for the hostnames in state/ are\n# managed; other rules and settings are kept. Comments in this file are not kept.\n";

pub fn address(hostname: &str) -> String {
    format!("{NAME}/{hostname}")
}

/// The service URL for a port.
pub fn service_url(port: u16) -> String {
    format!("http://localhost:{port}")
}

/// One rule the desired state asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRule {
    pub project: String,
    pub hostname: String,
    pub service: String,
    /// The address of the port allocation the rule points at (applied first when it changes).
    pub port_address: String,
}

/// The rules for every service hostname whose port is known (`ports`: the plan's ports), by hostname.
pub fn desired_rules(desired: &Desired, ports: &PlannedPorts) -> Vec<DesiredRule> {
    let mut out: Vec<DesiredRule> = desired
        .projects
        .values()
        .flat_map(|p| {
            p.services.iter().filter_map(move |s| {
                let hostname = s.hostname.as_ref()?;
                let port = ports.get(&p.name, &s.name)?;
                Some(DesiredRule {
                    project: p.name.clone(),
                    hostname: hostname.to_string(),
                    service: service_url(port),
                    port_address: ports::service_address(&p.name, &s.name),
                })
            })
        })
        .collect();
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    out
}

/// An inventory entry for a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRule {
    pub hostname: String,
    /// The service last applied (or found, when adopted); while pending, the one being written.
    pub service: Option<String>,
    pub adopted: bool,
    pub project: Option<String>,
    /// Written before the configuration, confirmed after it: a pending entry is what a crashed
    /// apply meant to write, whether or not the write happened.
    pub pending: bool,
}

impl ManagedRule {
    fn from_object(o: &ManagedObject) -> Option<Self> {
        let hostname = o.address.strip_prefix("tunnel/")?;
        if o.address == CONFIG_ADDRESS || o.address == REMOTE_ADDRESS {
            return None;
        }
        let text = |k: &str| {
            o.attributes
                .0
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some(ManagedRule {
            hostname: hostname.to_string(),
            service: text("service"),
            adopted: o.adopted,
            project: text("project"),
            pending: o.attributes.0.get("pending") == Some(&Value::Bool(true)),
        })
    }
}

/// The local file as read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalFile {
    /// `None` when the file does not exist.
    pub text: Option<String>,
    /// The sha256 of the text the supervisor last wrote (from the inventory).
    pub last_written: Option<String>,
}

/// What the provider observes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The configuration as it is (local: parsed from the file).
    pub config: TunnelConfig,
    /// Local mode only.
    pub local: Option<LocalFile>,
    /// Why the configuration could not be read (an unparseable file); nothing is planned then.
    pub unreadable: Option<String>,
    pub managed: Vec<ManagedRule>,
}

/// `config.yml` as cloudflared reads it: the supervisor's header keys and the tunnel configuration.
#[derive(Debug, Deserialize)]
struct LocalConfigIn {
    #[serde(default)]
    tunnel: Option<Value>,
    #[serde(default, rename = "credentials-file")]
    credentials_file: Option<Value>,
    #[serde(flatten)]
    config: TunnelConfig,
}

/// Parses a `config.yml`; an empty file is an empty configuration.
pub fn parse_local(text: &str) -> Result<TunnelConfig, String> {
    if text.trim().is_empty() {
        return Ok(TunnelConfig::default());
    }
    serde_saphyr::from_str::<LocalConfigIn>(text)
        .map(|c| {
            let _ = (c.tunnel, c.credentials_file);
            c.config
        })
        .map_err(|e| e.to_string())
}

/// Renders `config.yml` for `settings` with `config`'s rules and other keys, in the key order of
/// `previous` (the file as it is): its top-level keys and each rule's keys keep their places (a rule is
/// the same rule when hostname and path are), nested settings keep theirs; what is new follows in
/// cloudflared's documented order (`tunnel`, `credentials-file`, other keys, `originRequest`,
/// `ingress`; `hostname`, `service`, `path`, `originRequest`).
pub fn render_local(settings: &Tunnel, config: &TunnelConfig, previous: Option<&str>) -> String {
    let previous: Option<Map<String, Value>> = previous
        .filter(|t| !t.trim().is_empty())
        .and_then(|t| serde_saphyr::from_str::<Value>(t).ok())
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        });
    let previous_rules: Vec<&Map<String, Value>> = previous
        .as_ref()
        .and_then(|p| p.get("ingress"))
        .and_then(Value::as_array)
        .map(|rules| rules.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let mut entries: Vec<(String, Value)> = vec![
        ("tunnel".into(), Value::String(settings.id.clone())),
        (
            "credentials-file".into(),
            Value::String(
                settings
                    .credentials_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ),
    ];
    entries.extend(config.other.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(o) = &config.origin_request {
        entries.push(("originRequest".into(), o.clone()));
    }
    let rules = config
        .ingress
        .iter()
        .map(|r| {
            let value = serde_json::to_value(r).unwrap_or(Value::Null);
            match previous_rules.iter().find(|p| same_rule(p, r)) {
                Some(p) => in_order_of(value, p),
                None => value,
            }
        })
        .collect();
    entries.push(("ingress".into(), Value::Array(rules)));
    let mut ordered = Map::new();
    for key in previous.iter().flat_map(|p| p.keys()) {
        if let Some(i) = entries.iter().position(|(k, _)| k == key) {
            let (k, v) = entries.remove(i);
            ordered.insert(k, v);
        }
    }
    ordered.extend(entries);
    format!("{FILE_HEADER}{}", to_yaml(&Value::Object(ordered)))
}

/// Whether a rule of the file as it was (`previous`) is `rule`: same hostname and path.
fn same_rule(previous: &Map<String, Value>, rule: &IngressRule) -> bool {
    let text = |k: &str| {
        previous
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    text("hostname").map(normalize_host) == rule_host(rule)
        && text("path") == rule.path.as_deref().filter(|p| !p.is_empty())
}

/// `value`'s keys in the order of `template`'s, the others after them.
fn in_order_of(value: Value, template: &Map<String, Value>) -> Value {
    let Value::Object(mut fields) = value else {
        return value;
    };
    let mut ordered = Map::new();
    for key in template.keys() {
        if let Some(v) = fields.remove(key) {
            ordered.insert(key.clone(), v);
        }
    }
    ordered.extend(fields);
    Value::Object(ordered)
}

/// YAML the way cloudflared's documentation writes it: list items indented under their key, plain
/// one-line scalars.
fn to_yaml<T: Serialize>(value: &T) -> String {
    let options = serde_saphyr::ser_options! {
        compact_list_indent: false,
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(value, options)
        .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// A change to one rule, as merged into a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEdit {
    Upsert { hostname: String, service: String },
    Remove { hostname: String },
}

fn rule_host(r: &IngressRule) -> Option<String> {
    r.hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(normalize_host)
}

fn is_catch_all(r: &IngressRule) -> bool {
    rule_host(r).is_none_or(|h| h == "*") && r.path.as_deref().is_none_or(str::is_empty)
}

/// The rule a hostname owns: hostname only, no path.
fn is_plain_rule_for(r: &IngressRule, hostname: &str) -> bool {
    r.path.as_deref().is_none_or(str::is_empty) && rule_host(r).as_deref() == Some(hostname)
}

/// Whether a rule for `general` receives requests for `specific` (`*` and `*.suffix` wildcards).
fn covers(general: &str, specific: &str) -> bool {
    general == "*"
        || general == specific
        || general.strip_prefix("*.").is_some_and(|suffix| {
            specific
                .strip_suffix(suffix)
                .is_some_and(|p| p.ends_with('.'))
        })
}

/// Merges rule edits into `current` and places the supervisor's rules (see the module docs).
/// `managed`: the hostnames whose rules the supervisor owns after the edits. Every other rule keeps its
/// content and its order relative to the others; keys and `originRequest` are kept. A rule of ours that
/// already stands where cloudflared matches it as meant (no earlier rule covers its hostname, it covers
/// no later rule) stays where it is — an adopted rule is not moved; new rules, and rules in a wrong
/// place, go before the first rule less specific than them. Pure.
pub fn merge(
    current: &TunnelConfig,
    edits: &[RuleEdit],
    managed: &HashSet<String>,
) -> TunnelConfig {
    let mut rules = current.ingress.clone();
    let catch_all = if rules.last().is_some_and(is_catch_all) {
        rules.pop()
    } else {
        None
    };
    let mut added = HashSet::new();
    for edit in edits {
        match edit {
            RuleEdit::Remove { hostname } => rules.retain(|r| !is_plain_rule_for(r, hostname)),
            RuleEdit::Upsert { hostname, service } => {
                match rules.iter_mut().find(|r| is_plain_rule_for(r, hostname)) {
                    Some(r) => {
                        r.hostname = Some(hostname.clone());
                        r.service = service.clone();
                    }
                    None => {
                        rules.push(IngressRule::new(hostname.clone(), service.clone()));
                        added.insert(hostname.clone());
                    }
                }
            }
        }
    }
    let ours =
        |r: &IngressRule| rule_host(r).is_some_and(|h| managed.contains(&h)) && r.path.is_none();
    let (new, standing): (Vec<IngressRule>, Vec<IngressRule>) = rules
        .into_iter()
        .partition(|r| ours(r) && rule_host(r).is_some_and(|h| added.contains(&h)));
    // Whether each standing rule of ours is matched as meant where it stands: no earlier rule takes
    // its requests (a wildcard or path-only rule covering its hostname), and it takes none of a later
    // rule's (a path rule for its hostname, or, for a wildcard, a hostname under it).
    let well_placed: Vec<bool> = standing
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let host = rule_host(r).unwrap_or_else(|| "*".into());
            let other_host = |x: &IngressRule| rule_host(x).unwrap_or_else(|| "*".into());
            standing[..i].iter().all(|earlier| {
                let e = other_host(earlier);
                e == host || !covers(&e, &host)
            }) && standing[i + 1..].iter().all(|later| {
                let l = other_host(later);
                if l == host {
                    later.path.is_none()
                } else {
                    !covers(&host, &l)
                }
            })
        })
        .collect();
    let mut ingress = Vec::with_capacity(standing.len() + new.len() + 1);
    let mut to_place = new;
    for (r, ok) in standing.into_iter().zip(well_placed) {
        if ours(&r) && !ok {
            to_place.push(r);
        } else {
            ingress.push(r);
        }
    }
    // Each goes before the first rule less specific than it (so after a path rule for the same
    // hostname); ours among themselves by name.
    to_place.sort_by_key(|r| {
        let h = rule_host(r);
        (specificity(h.as_deref()), h)
    });
    for rule in to_place {
        let key = specificity(rule_host(&rule).as_deref());
        let at = ingress
            .iter()
            .position(|r| specificity(rule_host(r).as_deref()) > key)
            .unwrap_or(ingress.len());
        ingress.insert(at, rule);
    }
    ingress.push(catch_all.unwrap_or_else(|| IngressRule::catch_all(CATCH_ALL_SERVICE)));
    TunnelConfig {
        ingress,
        origin_request: current.origin_request.clone(),
        other: current.other.clone(),
    }
}

/// Checks an ingress list the way cloudflared does; every problem, numbered by rule.
pub fn validate(ingress: &[IngressRule]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if ingress.is_empty() {
        problems.push("there are no ingress rules (the last one must be a catch-all)".into());
    }
    let last = ingress.len().saturating_sub(1);
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (i, r) in ingress.iter().enumerate() {
        let n = i + 1;
        let catch_all = is_catch_all(r);
        if i == last && !catch_all {
            problems.push(format!(
                "rule #{n} is the last rule but does not match everything: the last rule must have no hostname and no path (e.g. `service: {CATCH_ALL_SERVICE}`)"
            ));
        }
        if i != last && catch_all {
            problems.push(format!(
                "rule #{n} matches everything but is not the last rule: the rules after it would never be used"
            ));
        }
        if let Some(h) = rule_host(r) {
            if h.contains(':') {
                problems.push(format!(
                    "rule #{n}: hostname `{h}` has a port; ingress hostnames never do"
                ));
            }
            let stars = h.matches('*').count();
            if h != "*" && (stars > 1 || (stars == 1 && !h.starts_with("*."))) {
                problems.push(format!(
                    "rule #{n}: hostname `{h}`: `*` is only allowed as the whole leftmost label (`*.example.com`)"
                ));
            }
            let key = (h.clone(), r.path.clone().unwrap_or_default());
            if let Some(first) = seen.insert(key, n) {
                problems.push(format!(
                    "rule #{n}: hostname `{h}` already has rule #{first} (each hostname and path once)"
                ));
            }
        }
        if let Err(why) = check_service(&r.service) {
            problems.push(format!("rule #{n}: {why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_service(service: &str) -> Result<(), String> {
    if let Some(code) = service.strip_prefix("http_status:") {
        return match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(()),
            _ => Err(format!("service `{service}` is not a valid HTTP status")),
        };
    }
    let Some((scheme, rest)) = service.split_once("://") else {
        return Ok(()); // hello_world, bastion, unix:… — cloudflared's other origins.
    };
    if matches!(scheme, "http" | "https") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("service `{service}` has no host"));
        }
        if !path.is_empty() {
            return Err(format!(
                "service `{service}` has a path; ingress services never do (the request's path is kept)"
            ));
        }
    }
    Ok(())
}

/// The `after` of a rule change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRule {
    pub hostname: String,
    pub service: String,
    #[serde(default)]
    pub adopted: bool,
}

/// Desired rules against the observed configuration → rule changes (deletes, updates, creates),
/// then the file (local) or configuration (remote) change, and errors. Pure.
pub fn diff(
    settings: &Tunnel,
    wanted: &[DesiredRule],
    observed: &Observed,
    adopt: &BTreeSet<String>,
) -> ProviderPlan {
    let mut out = ProviderPlan::default();
    for r in wanted {
        out.resources.push(Resource {
            address: address(&r.hostname),
            provider: NAME.into(),
            project: Some(r.project.clone()),
        });
    }
    if settings.mode == TunnelMode::Local {
        out.resources.push(Resource {
            address: CONFIG_ADDRESS.into(),
            provider: NAME.into(),
            project: None,
        });
    }
    if let Some(why) = &observed.unreadable {
        out.errors.push(Notice {
            provider: NAME.into(),
            address: None,
            project: None,
            message: why.clone(),
        });
        return out;
    }
    let current: HashMap<String, &IngressRule> = observed
        .config
        .ingress
        .iter()
        .filter(|r| r.path.as_deref().is_none_or(str::is_empty))
        .filter_map(|r| rule_host(r).filter(|h| h != "*").map(|h| (h, r)))
        .collect();
    let inventory: HashMap<&str, &ManagedRule> = observed
        .managed
        .iter()
        .map(|m| (m.hostname.as_str(), m))
        .collect();
    let wanted_hosts: HashSet<&str> = wanted.iter().map(|r| r.hostname.as_str()).collect();
    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut creates = Vec::new();
    let mut edits = Vec::new();
    let mut managed_after: HashSet<String> = HashSet::new();
    let rule_change = |action,
                       project: Option<&str>,
                       host: &str,
                       before: Option<&str>,
                       after: Option<PlannedRule>,
                       summary: String| Change {
        address: address(host),
        provider: NAME.into(),
        action,
        project: project.map(str::to_string),
        before: before.map(|s| json!({"hostname": host, "service": s})),
        after: after.map(|a| json!(a)),
        summary,
        drifted: false,
        disruptive: false,
        diff: None,
        requires: Vec::new(),
    };
    for r in wanted {
        let h = r.hostname.as_str();
        let planned = |adopted| PlannedRule {
            hostname: h.to_string(),
            service: r.service.clone(),
            adopted,
        };
        match (inventory.get(h), current.get(h)) {
            (Some(m), Some(rule)) => {
                out.managed += 1;
                managed_after.insert(h.to_string());
                if rule.service != r.service {
                    let mut c = rule_change(
                        Action::Update,
                        Some(&r.project),
                        h,
                        Some(&rule.service),
                        Some(planned(m.adopted)),
                        format!("ingress {h}: {} → {}", rule.service, r.service),
                    );
                    c.drifted =
                        !m.pending && m.service.as_deref().is_some_and(|s| s != rule.service);
                    updates.push(c);
                    edits.push(RuleEdit::Upsert { hostname: h.into(), service: r.service.clone() });
                } else if m.pending {
                    // Written by an apply that was interrupted before confirming it: confirm it
                    // (inventory only; the configuration is not written again).
                    updates.push(rule_change(
                        Action::Update,
                        Some(&r.project),
                        h,
                        Some(&rule.service),
                        Some(planned(m.adopted)),
                        format!(
                            "ingress {h} → {}: written by an interrupted apply, recorded now; the rule is not changed",
                            rule.service
                        ),
                    ));
                }
            }
            (m, None) => {
                managed_after.insert(h.to_string());
                // A pending entry whose rule is missing: the interrupted write never happened.
                let gone = m.is_some_and(|m| !m.pending);
                let mut c = rule_change(
                    Action::Create,
                    Some(&r.project),
                    h,
                    None,
                    Some(planned(false)),
                    if gone {
                        format!("ingress {h} → {} (removed outside supervisor)", r.service)
                    } else {
                        format!("ingress {h} → {}", r.service)
                    },
                );
                c.drifted = gone;
                creates.push(c);
                edits.push(RuleEdit::Upsert { hostname: h.into(), service: r.service.clone() });
            }
            (None, Some(rule)) if adopt.contains(h) => {
                managed_after.insert(h.to_string());
                let summary = if rule.service == r.service {
                    format!("adopt ingress {h} → {}; the rule is not changed", rule.service)
                } else {
                    format!("adopt ingress {h} → {}, then → {}", rule.service, r.service)
                };
                updates.push(rule_change(
                    Action::Update,
                    Some(&r.project),
                    h,
                    Some(&rule.service),
                    Some(planned(true)),
                    summary,
                ));
                edits.push(RuleEdit::Upsert { hostname: h.into(), service: r.service.clone() });
            }
            (None, Some(rule)) => out.errors.push(Notice {
                provider: NAME.into(),
                address: Some(address(h)),
                project: Some(r.project.clone()),
                message: format!(
                    "{}: the tunnel already routes {h} → {}, and that rule is not managed by supervisor; adopt it with `supervisor apply --adopt {h}` (or `supervisor import cloudflare`), or remove the rule",
                    address(h),
                    rule.service
                ),
            }),
        }
    }
    for m in &observed.managed {
        if wanted_hosts.contains(m.hostname.as_str()) {
            continue;
        }
        let Some(rule) = current.get(m.hostname.as_str()) else {
            // The rule is gone already (removed by hand, or by an apply interrupted before it
            // forgot the rule): only the inventory entry is left to remove.
            deletes.push(rule_change(
                Action::Delete,
                m.project.as_deref(),
                &m.hostname,
                None,
                None,
                format!(
                    "ingress {}: the rule is gone already; forget it",
                    m.hostname
                ),
            ));
            continue;
        };
        out.managed += 1;
        deletes.push(rule_change(
            Action::Delete,
            m.project.as_deref(),
            &m.hostname,
            Some(&rule.service),
            None,
            format!("ingress {} → {}", m.hostname, rule.service),
        ));
        edits.push(RuleEdit::Remove {
            hostname: m.hostname.clone(),
        });
    }
    deletes.sort_by(|a, b| a.address.cmp(&b.address));

    let merged = merge(&observed.config, &edits, &managed_after);
    let rules_change = !(deletes.is_empty() && updates.is_empty() && creates.is_empty());
    // Something will be written: rule changes, the local file, or our rules out of place remotely. A
    // configuration the supervisor has no part in is left alone (and not judged).
    let writes = rules_change
        || settings.mode == TunnelMode::Local
        || (!managed_after.is_empty() && merged != observed.config);
    if !writes {
        return out;
    }
    if let Err(problems) = validate(&merged.ingress) {
        out.errors.push(Notice {
            provider: NAME.into(),
            address: None,
            project: None,
            message: format!(
                "the tunnel's ingress rules would be invalid, so nothing is written: {}",
                problems.join("; ")
            ),
        });
    }
    out.changes.extend(deletes);
    out.changes.extend(updates);
    out.changes.extend(creates);
    // A rule pointing at a port this plan allocates or moves needs that change first.
    let needs: HashMap<String, &str> = wanted
        .iter()
        .map(|r| (address(&r.hostname), r.port_address.as_str()))
        .collect();
    for c in &mut out.changes {
        if let Some(port) = needs.get(&c.address) {
            c.requires.push((*port).to_string());
        }
    }

    match (&settings.mode, &observed.local) {
        (TunnelMode::Local, Some(local)) => {
            let path = settings
                .config_path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let rendered = render_local(settings, &merged, local.text.as_deref());
            let old = local.text.as_deref().unwrap_or("");
            if local.text.as_deref() != Some(rendered.as_str()) {
                let reload = settings
                    .reload
                    .as_deref()
                    .map(|r| format!(", then reload: {r}"))
                    .unwrap_or_else(|| ", no reload command".into());
                let action = if local.text.is_some() {
                    Action::Update
                } else {
                    Action::Create
                };
                out.changes.push(Change {
                    address: CONFIG_ADDRESS.into(),
                    provider: NAME.into(),
                    action,
                    project: None,
                    before: local
                        .text
                        .as_ref()
                        .map(|t| json!({"path": path, "sha256": sha256(t)})),
                    after: Some(json!({"path": path, "sha256": sha256(&rendered)})),
                    summary: format!("{path}{reload}"),
                    drifted: match (&local.text, &local.last_written) {
                        (Some(t), Some(h)) => sha256(t) != *h,
                        _ => false,
                    },
                    disruptive: false,
                    diff: unified_diff(old, &rendered, &format!("a{path}"), &format!("b{path}")),
                    requires: Vec::new(),
                });
            }
        }
        _ => {
            if !rules_change && merged != observed.config {
                let as_yaml =
                    |ingress: &[IngressRule]| serde_saphyr::to_string(&ingress).unwrap_or_default();
                out.changes.push(Change {
                    address: REMOTE_ADDRESS.into(),
                    provider: NAME.into(),
                    action: Action::Update,
                    project: None,
                    before: Some(json!({"rules": observed.config.ingress.len()})),
                    after: Some(json!({"rules": merged.ingress.len()})),
                    summary:
                        "order the ingress rules most specific first and end with one catch-all"
                            .into(),
                    drifted: false,
                    disruptive: false,
                    diff: unified_diff(
                        &as_yaml(&observed.config.ingress),
                        &as_yaml(&merged.ingress),
                        "a/ingress",
                        "b/ingress",
                    ),
                    requires: Vec::new(),
                });
            }
        }
    }
    out
}

pub struct TunnelProvider {
    store: Arc<dyn Store>,
    api: Arc<CloudflareApi>,
    settings: Tunnel,
    account_id: Option<String>,
    adopt: BTreeSet<String>,
    reload_timeout: Duration,
}

impl TunnelProvider {
    pub fn new(
        store: Arc<dyn Store>,
        api: Arc<CloudflareApi>,
        cf: &crate::state::Cloudflare,
        adopt: &[String],
    ) -> Self {
        TunnelProvider {
            store,
            api,
            settings: cf.tunnel.clone(),
            account_id: cf.account_id.clone(),
            adopt: adopt.iter().map(|h| normalize_host(h)).collect(),
            reload_timeout: RELOAD_TIMEOUT,
        }
    }

    pub fn with_reload_timeout(mut self, timeout: Duration) -> Self {
        self.reload_timeout = timeout;
        self
    }

    fn config_path(&self) -> Result<&Path, ProviderError> {
        self.settings.config_path.as_deref().ok_or_else(|| {
            ProviderError::Failed("tunnel.mode local needs tunnel.config_path".into())
        })
    }

    fn account_id(&self) -> Result<&str, ProviderError> {
        self.account_id.as_deref().ok_or_else(|| {
            ProviderError::Failed("tunnel.mode remote needs cloudflare.account_id".into())
        })
    }

    async fn read_file(path: &Path) -> Result<Option<String>, ProviderError> {
        match tokio::fs::read_to_string(path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProviderError::Failed(format!(
                "cannot read the cloudflared configuration {}: {e}",
                path.display()
            ))),
        }
    }

    pub async fn observe(&self) -> Result<Observed, ProviderError> {
        let objects = self.store.list_managed(NAME).await?;
        let managed = objects
            .iter()
            .filter_map(ManagedRule::from_object)
            .collect();
        match self.settings.mode {
            TunnelMode::Local => {
                let path = self.config_path()?;
                let text = Self::read_file(path).await?;
                let (config, unreadable) = match text.as_deref().map(parse_local) {
                    None => (TunnelConfig::default(), None),
                    Some(Ok(c)) => (c, None),
                    Some(Err(e)) => (
                        TunnelConfig::default(),
                        Some(format!(
                            "cannot parse the cloudflared configuration {}: {e}; fix or move the file, then plan again",
                            path.display()
                        )),
                    ),
                };
                let last_written = objects
                    .iter()
                    .find(|o| o.address == CONFIG_ADDRESS)
                    .and_then(|o| o.attributes.0.get("sha256"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Ok(Observed {
                    config,
                    local: Some(LocalFile { text, last_written }),
                    unreadable,
                    managed,
                })
            }
            TunnelMode::Remote => {
                let remote = self
                    .api
                    .client
                    .tunnel_configuration(self.account_id()?, &self.settings.id)
                    .await
                    .map_err(api_error)?;
                Ok(Observed {
                    config: remote.config,
                    local: None,
                    unreadable: None,
                    managed,
                })
            }
        }
    }

    /// Writes the file, reloads, and puts the previous file back when the reload fails.
    async fn write_local(&self, previous: Option<&str>, text: &str) -> Result<(), ProviderError> {
        let path = self.config_path()?.to_path_buf();
        write_file(&path, Some(text)).await?;
        let Some(cmd) = self.settings.reload.as_deref() else {
            return Ok(());
        };
        let Err(output) = run_reload(cmd, self.reload_timeout).await else {
            return Ok(());
        };
        let restored = write_file(&path, previous).await;
        let mut msg = format!("reloading cloudflared failed: {output}");
        match restored {
            Ok(()) => {
                msg.push_str(&format!(
                    "; the previous {} was {}",
                    path.display(),
                    if previous.is_some() {
                        "restored"
                    } else {
                        "removed (there was none)"
                    }
                ));
                if let Err(again) = run_reload(cmd, self.reload_timeout).await {
                    msg.push_str(&format!(", but reloading it failed too: {again}"));
                } else {
                    msg.push_str(" and reloaded");
                }
            }
            Err(e) => msg.push_str(&format!("; restoring the previous file failed: {e}")),
        }
        Err(ProviderError::Failed(msg))
    }

    /// Records a rule: `pending` before the configuration is written, confirmed after.
    async fn remember_rule(
        &self,
        planned: &PlannedRule,
        project: Option<&str>,
        adopted: bool,
        pending: bool,
    ) -> Result<(), ProviderError> {
        let mut attributes = json!({
            "hostname": planned.hostname,
            "service": planned.service,
            "project": project,
        });
        if pending {
            attributes["pending"] = Value::Bool(true);
        }
        self.store
            .upsert_managed(&ManagedObject {
                provider: NAME.into(),
                address: address(&planned.hostname),
                external_id: Some(self.settings.id.clone()),
                attributes: sqlx::types::Json(attributes),
                adopted,
            })
            .await?;
        Ok(())
    }
}

/// Writes (atomically) or removes a file, off the async threads.
async fn write_file(path: &Path, text: Option<&str>) -> Result<(), ProviderError> {
    let path: PathBuf = path.to_path_buf();
    let text = text.map(str::to_string);
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || match text {
        Some(t) => crate::state::edit::write_atomic(&path, &t),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    })
    .await
    .map_err(|e| ProviderError::Failed(format!("writing {shown}: {e}")))?
    .map_err(|e| ProviderError::Failed(format!("cannot write {shown}: {e}")))
}

/// Runs `cmd` through `sh -c` with a timeout; `Err` carries its combined output (trimmed) or why it
/// did not run.
pub async fn run_reload(cmd: &str, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{{ {cmd}\n}} 2>&1"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{cmd}` did not finish within {timeout:?} and was stopped"
        )),
        Ok(Err(e)) => Err(format!("`{cmd}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = text.trim();
            let start = text.len().saturating_sub(OUTPUT_MAX);
            let start = (start..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            let status = match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            Err(if text.is_empty() {
                format!("`{cmd}` failed ({status}) without output")
            } else {
                format!("`{cmd}` failed ({status}): {}", &text[start..])
            })
        }
    }
}

#[async_trait]
impl Provider for TunnelProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        let id: String = self.settings.id.chars().take(8).collect();
        let mode = match self.settings.mode {
            crate::state::TunnelMode::Local => "local",
            crate::state::TunnelMode::Remote => "remote",
        };
        Some(format!("{mode}, tunnel {id}…"))
    }

    async fn plan(
        &self,
        desired: &Desired,
        earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let ports = earlier.get::<PlannedPorts>().ok_or_else(|| {
            ProviderError::Failed(
                "tunnel ingress needs the ports provider's plan (it runs first); none was given"
                    .into(),
            )
        })?;
        let wanted = desired_rules(desired, ports);
        let observed = self.observe().await?;
        let mut plan = diff(&self.settings, &wanted, &observed, &self.adopt);
        let managed: Vec<(&str, Option<&str>, bool)> = observed
            .managed
            .iter()
            .map(|m| (m.hostname.as_str(), m.service.as_deref(), m.adopted))
            .collect();
        plan.fingerprint = match &observed.local {
            Some(l) => fingerprint(&(l.text.as_deref().map(sha256), managed)),
            None => fingerprint(&(&observed.config, managed)),
        };
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        self.apply_batch(std::slice::from_ref(change)).await
    }

    /// Every tunnel change of a run goes out as one write (and one reload).
    fn batch_size(&self) -> usize {
        usize::MAX
    }

    async fn apply_batch(&self, changes: &[Change]) -> Result<(), ProviderError> {
        let mut edits = Vec::new();
        let mut upserts: Vec<(PlannedRule, Option<String>)> = Vec::new();
        let mut removes = Vec::new();
        for c in changes {
            if c.address == CONFIG_ADDRESS || c.address == REMOTE_ADDRESS {
                continue;
            }
            match c.action {
                Action::Delete => {
                    let hostname = c
                        .address
                        .strip_prefix("tunnel/")
                        .unwrap_or_default()
                        .to_string();
                    edits.push(RuleEdit::Remove {
                        hostname: hostname.clone(),
                    });
                    removes.push(hostname);
                }
                _ => {
                    let planned: PlannedRule = payload(c, c.after.as_ref())?;
                    edits.push(RuleEdit::Upsert {
                        hostname: planned.hostname.clone(),
                        service: planned.service.clone(),
                    });
                    upserts.push((planned, c.project.clone()));
                }
            }
        }
        // Read-modify-write from what is there now, not from what the plan saw.
        let observed = self.observe().await?;
        if let Some(why) = observed.unreadable {
            return Err(ProviderError::Failed(why));
        }
        let mut managed: HashSet<String> = observed
            .managed
            .iter()
            .map(|m| m.hostname.clone())
            .collect();
        for (p, _) in &upserts {
            managed.insert(p.hostname.clone());
        }
        for h in &removes {
            managed.remove(h);
        }
        let merged = merge(&observed.config, &edits, &managed);
        validate(&merged.ingress).map_err(|problems| {
            ProviderError::Failed(format!(
                "the tunnel's ingress rules would be invalid, so nothing was written: {}",
                problems.join("; ")
            ))
        })?;
        let adopted_now: HashMap<&str, bool> = observed
            .managed
            .iter()
            .map(|m| (m.hostname.as_str(), m.adopted))
            .collect();
        let adopted = |planned: &PlannedRule| {
            planned.adopted
                || adopted_now
                    .get(planned.hostname.as_str())
                    .copied()
                    .unwrap_or(false)
        };
        // Intent first: a crash after the write leaves pending entries that the next plan confirms,
        // instead of rules of ours that look like someone else's.
        let entries_before: HashMap<String, ManagedObject> = self
            .store
            .list_managed(NAME)
            .await?
            .into_iter()
            .map(|o| (o.address.clone(), o))
            .collect();
        for (planned, project) in &upserts {
            self.remember_rule(planned, project.as_deref(), adopted(planned), true)
                .await?;
        }
        // A write that certainly did not happen takes its pending entries back.
        let take_back = || async {
            for (planned, _) in &upserts {
                let addr = address(&planned.hostname);
                match entries_before.get(&addr) {
                    Some(was) => self.store.upsert_managed(was).await?,
                    None => {
                        self.store.delete_managed(NAME, &addr).await?;
                    }
                }
            }
            Ok::<(), ProviderError>(())
        };
        match &observed.local {
            Some(local) => {
                let rendered = render_local(&self.settings, &merged, local.text.as_deref());
                if local.text.as_deref() != Some(rendered.as_str())
                    && let Err(e) = self.write_local(local.text.as_deref(), &rendered).await
                {
                    // Restored (or never replaced): nothing of it applies.
                    let now = super::files::read_optional(self.config_path()?).await.ok();
                    if now.as_ref() == Some(&local.text) {
                        take_back().await?;
                    }
                    return Err(e);
                }
                self.store
                    .upsert_managed(&ManagedObject {
                        provider: NAME.into(),
                        address: CONFIG_ADDRESS.into(),
                        external_id: Some(self.settings.id.clone()),
                        attributes: sqlx::types::Json(json!({
                            "path": self.config_path()?.display().to_string(),
                            "sha256": sha256(&rendered),
                        })),
                        adopted: false,
                    })
                    .await?;
            }
            None => {
                if merged != observed.config
                    && let Err(e) = self
                        .api
                        .client
                        .put_tunnel_configuration(self.account_id()?, &self.settings.id, &merged)
                        .await
                {
                    // Refused (4xx): not applied. Anything else may have been: the entries stay
                    // pending and the next plan finds out.
                    if let crate::clients::cloudflare::CloudflareError::Api(api) = &e
                        && api
                            .status()
                            .is_some_and(|s| (400..500).contains(&s) && s != 429)
                    {
                        take_back().await?;
                    }
                    return Err(api_error(e));
                }
            }
        }
        for (planned, project) in &upserts {
            self.remember_rule(planned, project.as_deref(), adopted(planned), false)
                .await?;
        }
        for h in &removes {
            self.store.delete_managed(NAME, &address(h)).await?;
        }
        Ok(())
    }
}

/// Records an existing rule as adopted (for `import`), without changing the configuration.
pub async fn adopt_rule(
    store: &dyn Store,
    tunnel_id: &str,
    hostname: &str,
    service: &str,
    project: &str,
) -> Result<(), ProviderError> {
    store
        .upsert_managed(&ManagedObject {
            provider: NAME.into(),
            address: address(hostname),
            external_id: Some(tunnel_id.to_string()),
            attributes: sqlx::types::Json(json!({
                "hostname": hostname,
                "service": service,
                "project": project,
            })),
            adopted: true,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b5a9bd6-4c3a-4b87-9c79-3b3f5f0c6a11";

    fn settings(mode: TunnelMode) -> Tunnel {
        Tunnel {
            id: ID.into(),
            mode,
            config_path: Some("/etc/cloudflared/config.yml".into()),
            credentials_file: Some(format!("/etc/cloudflared/{ID}.json").into()),
            reload: Some("systemctl restart cloudflared".into()),
            target: format!("{ID}.cfargotunnel.com"),
        }
    }

    fn want(rules: &[(&str, u16)]) -> Vec<DesiredRule> {
        let mut v: Vec<DesiredRule> = rules
            .iter()
            .map(|(h, p)| DesiredRule {
                project: "shop".into(),
                hostname: (*h).into(),
                service: service_url(*p),
                port_address: format!("ports/shop/{h}"),
            })
            .collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        v
    }

    fn summaries(plan: &ProviderPlan) -> Vec<String> {
        plan.changes
            .iter()
            .map(|c| {
                format!(
                    "{} {} {}{}",
                    c.action.symbol(),
                    c.address,
                    c.summary,
                    if c.drifted { " [drifted]" } else { "" }
                )
            })
            .collect()
    }

    fn rule(h: Option<&str>, service: &str) -> IngressRule {
        IngressRule {
            hostname: h.map(str::to_string),
            service: service.into(),
            path: None,
            origin_request: None,
            other: Map::new(),
        }
    }

    /// Applies a plan the way `apply_batch` does, to an in-memory observation.
    fn apply_to(obs: &mut Observed, settings: &Tunnel, plan: &ProviderPlan) {
        let mut edits = Vec::new();
        for c in &plan.changes {
            if c.address == CONFIG_ADDRESS || c.address == REMOTE_ADDRESS {
                continue;
            }
            let host = c.address.strip_prefix("tunnel/").unwrap().to_string();
            match c.action {
                Action::Delete => {
                    edits.push(RuleEdit::Remove {
                        hostname: host.clone(),
                    });
                    obs.managed.retain(|m| m.hostname != host);
                }
                _ => {
                    let p: PlannedRule = serde_json::from_value(c.after.clone().unwrap()).unwrap();
                    edits.push(RuleEdit::Upsert {
                        hostname: host.clone(),
                        service: p.service.clone(),
                    });
                    obs.managed.retain(|m| m.hostname != host);
                    obs.managed.push(ManagedRule {
                        hostname: host,
                        service: Some(p.service),
                        pending: false,
                        adopted: p.adopted,
                        project: c.project.clone(),
                    });
                }
            }
        }
        let managed: HashSet<String> = obs.managed.iter().map(|m| m.hostname.clone()).collect();
        let merged = merge(&obs.config, &edits, &managed);
        validate(&merged.ingress).unwrap();
        if let Some(local) = &mut obs.local {
            let text = render_local(settings, &merged, local.text.as_deref());
            local.last_written = Some(sha256(&text));
            local.text = Some(text);
            obs.config = parse_local(local.text.as_deref().unwrap()).unwrap();
        } else {
            obs.config = merged;
        }
    }

    #[test]
    fn remote_new_hostnames_are_added_in_order_before_the_catch_all() {
        let s = settings(TunnelMode::Remote);
        let mut obs = Observed::default();
        let wanted = want(&[
            ("web.example.com", 3100),
            ("*.example.com", 3102),
            ("api.example.com", 3101),
        ]);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            summaries(&plan),
            [
                "+ tunnel/*.example.com ingress *.example.com → http://localhost:3102",
                "+ tunnel/api.example.com ingress api.example.com → http://localhost:3101",
                "+ tunnel/web.example.com ingress web.example.com → http://localhost:3100",
            ]
        );
        apply_to(&mut obs, &s, &plan);
        let order: Vec<Option<&str>> = obs
            .config
            .ingress
            .iter()
            .map(|r| r.hostname.as_deref())
            .collect();
        assert_eq!(
            order,
            [
                Some("api.example.com"),
                Some("web.example.com"),
                Some("*.example.com"),
                None
            ]
        );
        assert_eq!(obs.config.ingress[3].service, CATCH_ALL_SERVICE);
        let again = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert!(again.changes.is_empty(), "{:?}", summaries(&again));
        assert_eq!(again.managed, 3);
    }

    #[test]
    fn foreign_rules_settings_and_catch_all_are_kept() {
        let s = settings(TunnelMode::Remote);
        let mut foreign = rule(Some("legacy.example.com"), "http://10.0.0.5:8080");
        foreign.origin_request = Some(json!({"noTLSVerify": true}));
        let mut with_path = rule(Some("api.example.com"), "http://localhost:9000");
        with_path.path = Some("/admin".into());
        let mut obs = Observed {
            config: TunnelConfig {
                ingress: vec![
                    foreign.clone(),
                    with_path.clone(),
                    rule(None, "http_status:503"),
                ],
                origin_request: Some(json!({"connectTimeout": "10s"})),
                other: Map::from_iter([("warp-routing".to_string(), json!({"enabled": true}))]),
            },
            ..Default::default()
        };
        let wanted = want(&[("api.example.com", 3101)]);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            ["+ tunnel/api.example.com ingress api.example.com → http://localhost:3101"]
        );
        apply_to(&mut obs, &s, &plan);
        assert_eq!(
            obs.config.ingress,
            vec![
                foreign,
                with_path,
                rule(Some("api.example.com"), "http://localhost:3101"),
                rule(None, "http_status:503")
            ],
            "the path rule for the same host stays before ours; the user's catch-all stays"
        );
        assert_eq!(
            obs.config.origin_request,
            Some(json!({"connectTimeout": "10s"}))
        );
        assert_eq!(obs.config.other["warp-routing"], json!({"enabled": true}));
        // Removing the hostname removes only our rule.
        let plan = diff(&s, &[], &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            ["- tunnel/api.example.com ingress api.example.com → http://localhost:3101"]
        );
        apply_to(&mut obs, &s, &plan);
        assert_eq!(obs.config.ingress.len(), 3);
        assert!(diff(&s, &[], &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn other_rules_are_never_reordered_and_an_unowned_configuration_is_left_alone() {
        let s = settings(TunnelMode::Remote);
        // Someone's order: a wildcard before an exact name (the exact rule is unreachable, but theirs).
        let theirs = vec![
            rule(Some("*.example.com"), "http://localhost:1"),
            rule(Some("x.example.com"), "http://localhost:2"),
        ];
        let mut obs = Observed {
            config: TunnelConfig {
                ingress: theirs.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        let nothing = diff(&s, &[], &obs, &BTreeSet::new());
        assert!(
            nothing.changes.is_empty() && nothing.errors.is_empty(),
            "no catch-all and odd order, but nothing of ours: {:?} {:?}",
            summaries(&nothing),
            nothing.errors
        );
        let wanted = want(&[("a.example.com", 3100), ("*.api.example.com", 3101)]);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        apply_to(&mut obs, &s, &plan);
        let order: Vec<Option<&str>> = obs
            .config
            .ingress
            .iter()
            .map(|r| r.hostname.as_deref())
            .collect();
        assert_eq!(
            order,
            [
                Some("a.example.com"),
                Some("*.api.example.com"),
                Some("*.example.com"),
                Some("x.example.com"),
                None
            ],
            "ours before the first less specific rule; theirs in their order"
        );
        assert!(diff(&s, &wanted, &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn an_unmanaged_rule_at_a_desired_hostname_is_an_error_until_adopted() {
        let s = settings(TunnelMode::Remote);
        let mut existing = rule(Some("api.example.com"), "http://localhost:8080");
        existing.origin_request = Some(json!({"httpHostHeader": "api"}));
        let mut obs = Observed {
            config: TunnelConfig {
                ingress: vec![existing, rule(None, CATCH_ALL_SERVICE)],
                ..Default::default()
            },
            ..Default::default()
        };
        let wanted = want(&[("api.example.com", 3101)]);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert!(plan.changes.is_empty());
        assert_eq!(
            plan.errors[0].message,
            "tunnel/api.example.com: the tunnel already routes api.example.com → http://localhost:8080, and that rule is not managed by supervisor; adopt it with `supervisor apply --adopt api.example.com` (or `supervisor import cloudflare`), or remove the rule"
        );
        let adopt: BTreeSet<String> = ["api.example.com".to_string()].into();
        let plan = diff(&s, &wanted, &obs, &adopt);
        assert_eq!(
            summaries(&plan),
            [
                "~ tunnel/api.example.com adopt ingress api.example.com → http://localhost:8080, then → http://localhost:3101"
            ]
        );
        apply_to(&mut obs, &s, &plan);
        assert_eq!(
            obs.config.ingress[0].origin_request,
            Some(json!({"httpHostHeader": "api"})),
            "adoption keeps the rule's settings"
        );
        assert!(obs.managed[0].adopted);
        assert!(diff(&s, &wanted, &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn edited_or_removed_rules_are_drift() {
        let s = settings(TunnelMode::Remote);
        let mut obs = Observed::default();
        let wanted = want(&[("a.example.com", 3100), ("b.example.com", 3101)]);
        let first = diff(&s, &wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &s, &first);
        obs.config.ingress[0].service = "http://localhost:9999".into();
        obs.config.ingress.remove(1);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ tunnel/a.example.com ingress a.example.com: http://localhost:9999 → http://localhost:3100 [drifted]",
                "+ tunnel/b.example.com ingress b.example.com → http://localhost:3101 (removed outside supervisor) [drifted]",
            ]
        );
        // A port change in state is not drift.
        apply_to(&mut obs, &s, &plan);
        let moved = want(&[("a.example.com", 3105), ("b.example.com", 3101)]);
        let plan = diff(&s, &moved, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ tunnel/a.example.com ingress a.example.com: http://localhost:3100 → http://localhost:3105"
            ]
        );
    }

    #[test]
    fn pending_entries_left_by_a_crash_are_confirmed_or_written_and_gone_rules_forgotten() {
        let s = settings(TunnelMode::Remote);
        let mut obs = Observed::default();
        let wanted = want(&[("a.example.com", 3100), ("b.example.com", 3101)]);
        // The apply wrote its pending entries; the configuration write landed for a but not for b
        // (as if b's had been a later write).
        let first = diff(&s, &wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &s, &first);
        obs.config
            .ingress
            .retain(|r| r.hostname.as_deref() != Some("b.example.com"));
        for m in &mut obs.managed {
            m.pending = true;
        }
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ tunnel/a.example.com ingress a.example.com → http://localhost:3100: written by an interrupted apply, recorded now; the rule is not changed",
                "+ tunnel/b.example.com ingress b.example.com → http://localhost:3101",
            ],
            "not drift, and nothing someone else owns"
        );
        assert!(plan.errors.is_empty());
        apply_to(&mut obs, &s, &plan);
        for m in &mut obs.managed {
            m.pending = false;
        }
        assert!(diff(&s, &wanted, &obs, &BTreeSet::new()).changes.is_empty());
        // A rule that is gone while its entry stays (removed by hand, or the entry's removal was
        // interrupted after the write): the entry is forgotten, nothing is written.
        obs.config
            .ingress
            .retain(|r| r.hostname.as_deref() != Some("b.example.com"));
        let only_a = want(&[("a.example.com", 3100)]);
        let plan = diff(&s, &only_a, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            ["- tunnel/b.example.com ingress b.example.com: the rule is gone already; forget it"]
        );
        let before = obs.config.clone();
        apply_to(&mut obs, &s, &plan);
        assert_eq!(obs.config, before);
        assert!(diff(&s, &only_a, &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn remote_reordering_is_its_own_change() {
        let s = settings(TunnelMode::Remote);
        let mut obs = Observed::default();
        let wanted = want(&[("a.example.com", 3100), ("*.example.com", 3101)]);
        let first = diff(&s, &wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &s, &first);
        obs.config.ingress.swap(0, 1); // someone dragged the wildcard first
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ tunnel/configuration order the ingress rules most specific first and end with one catch-all"
            ]
        );
        let d = plan.changes[0].diff.as_deref().unwrap();
        assert!(d.starts_with("--- a/ingress\n+++ b/ingress\n"), "{d}");
        assert!(d.contains("hostname: a.example.com"), "{d}");
        apply_to(&mut obs, &s, &plan);
        assert_eq!(
            obs.config.ingress[0].hostname.as_deref(),
            Some("a.example.com")
        );
        assert!(diff(&s, &wanted, &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn local_mode_renders_the_whole_file_with_a_diff() {
        let s = settings(TunnelMode::Local);
        let mut obs = Observed {
            local: Some(LocalFile::default()),
            ..Default::default()
        };
        let wanted = want(&[("api.example.com", 3101)]);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "+ tunnel/api.example.com ingress api.example.com → http://localhost:3101",
                "+ tunnel/config.yml /etc/cloudflared/config.yml, then reload: systemctl restart cloudflared",
            ]
        );
        let d = plan.changes[1].diff.as_deref().unwrap();
        assert!(
            d.starts_with("--- a/etc/cloudflared/config.yml\n+++ b/etc/cloudflared/config.yml\n"),
            "{d}"
        );
        let expected = format!(
            "{FILE_HEADER}tunnel: {ID}\ncredentials-file: /etc/cloudflared/{ID}.json\ningress:\n  - hostname: api.example.com\n    service: http://localhost:3101\n  - service: http_status:404\n"
        );
        let rendered = render_local(
            &s,
            &merge(
                &TunnelConfig::default(),
                &[RuleEdit::Upsert {
                    hostname: "api.example.com".into(),
                    service: "http://localhost:3101".into(),
                }],
                &HashSet::from(["api.example.com".to_string()]),
            ),
            None,
        );
        assert_eq!(rendered, expected);
        for line in expected.lines() {
            assert!(d.contains(&format!("+{line}\n")), "missing +{line} in\n{d}");
        }
        apply_to(&mut obs, &s, &plan);
        assert!(diff(&s, &wanted, &obs, &BTreeSet::new()).changes.is_empty());
        // A hand edit of the file is drift of the file.
        let edited = obs
            .local
            .as_ref()
            .unwrap()
            .text
            .clone()
            .unwrap()
            .replace("3101", "4000");
        obs.config = parse_local(&edited).unwrap();
        obs.local.as_mut().unwrap().text = Some(edited);
        let plan = diff(&s, &wanted, &obs, &BTreeSet::new());
        assert_eq!(plan.changes.len(), 2);
        assert!(plan.changes.iter().all(|c| c.drifted));
        let d = plan.changes[1].diff.as_deref().unwrap();
        assert!(
            d.contains(
                "-    service: http://localhost:4000\n+    service: http://localhost:3101\n"
            ),
            "{d}"
        );
    }

    #[test]
    fn local_files_keep_unknown_keys_and_rules() {
        let text = "tunnel: old\ncredentials-file: /x.json\nloglevel: debug\nwarp-routing:\n  enabled: true\noriginRequest:\n  connectTimeout: 10s\ningress:\n  - hostname: legacy.example.com\n    service: https://10.0.0.1\n    originRequest:\n      noTLSVerify: true\n  - service: http_status:404\n";
        let c = parse_local(text).unwrap();
        assert_eq!(c.ingress.len(), 2);
        assert_eq!(c.other["loglevel"], json!("debug"));
        let s = settings(TunnelMode::Local);
        let out = render_local(&s, &merge(&c, &[], &HashSet::new()), Some(text));
        let back = parse_local(&out).unwrap();
        assert_eq!(back, c, "{out}");
        assert!(out.contains(&format!("tunnel: {ID}\n")), "{out}");
        assert!(parse_local("ingress: [").is_err());
        assert_eq!(parse_local("  \n").unwrap(), TunnelConfig::default());
    }

    #[test]
    fn validation_follows_cloudflared() {
        let ok = vec![
            rule(Some("a.example.com"), "http://localhost:1"),
            rule(None, "http_status:404"),
        ];
        assert!(validate(&ok).is_ok());
        let problems = validate(&[
            rule(None, "http_status:404"),
            rule(Some("a.example.com:8080"), "http://localhost:1"),
            rule(Some("a.*.example.com"), "http://localhost:1/api"),
            rule(Some("b.example.com"), "http://localhost:1"),
            rule(Some("B.example.com"), "http_status:999"),
        ])
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "rule #1 matches everything but is not the last rule: the rules after it would never be used",
                "rule #2: hostname `a.example.com:8080` has a port; ingress hostnames never do",
                "rule #3: hostname `a.*.example.com`: `*` is only allowed as the whole leftmost label (`*.example.com`)",
                "rule #3: service `http://localhost:1/api` has a path; ingress services never do (the request's path is kept)",
                "rule #5 is the last rule but does not match everything: the last rule must have no hostname and no path (e.g. `service: http_status:404`)",
                "rule #5: hostname `b.example.com` already has rule #4 (each hostname and path once)",
                "rule #5: service `http_status:999` is not a valid HTTP status",
            ]
        );
        assert!(
            validate(&[rule(Some("*"), "http_status:404")]).is_ok(),
            "`*` alone matches everything"
        );
        assert!(validate(&[]).is_err());
    }

    #[test]
    fn an_invalid_foreign_configuration_blocks_the_plan() {
        let s = settings(TunnelMode::Remote);
        let obs = Observed {
            config: TunnelConfig {
                ingress: vec![
                    rule(None, "http_status:404"),
                    rule(Some("x.example.com"), "http://localhost:1"),
                ],
                ..Default::default()
            },
            ..Default::default()
        };
        let plan = diff(
            &s,
            &want(&[("a.example.com", 3100)]),
            &obs,
            &BTreeSet::new(),
        );
        assert!(
            plan.errors[0].message.contains("would be invalid"),
            "{:?}",
            plan.errors
        );
    }

    #[tokio::test]
    async fn reload_reports_combined_output_and_status() {
        assert_eq!(run_reload("true", Duration::from_secs(5)).await, Ok(()));
        assert_eq!(
            run_reload("echo out; echo err >&2 && exit 3", Duration::from_secs(5)).await,
            Err("`echo out; echo err >&2 && exit 3` failed (exit status 3): out\nerr".into())
        );
        assert_eq!(
            run_reload("false", Duration::from_secs(5)).await,
            Err("`false` failed (exit status 1) without output".into())
        );
        let slow = run_reload("sleep 5", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(slow.contains("did not finish within"), "{slow}");
    }
}
