//! The generated layer: facts from desired state and the plan (ports, public hostnames, the MCP endpoint
//! and the exact command to register it, required secret paths — never values —, declared checks, the
//! VMs), so an agent never guesses them. Pure: the caller passes each service's port.

use std::fmt::Write;

use super::layers::Layer;
use crate::state::{Desired, Project};

/// Where the supervisor's MCP server is reached (`http://127.0.0.1:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub base_url: String,
}

impl Endpoint {
    pub fn url(&self, label: &str) -> String {
        format!("{}/mcp/{label}", self.base_url.trim_end_matches('/'))
    }
}

pub const SOURCE: &str = "generated from state/ and the port registry";

/// The facts of one project.
pub fn project(
    desired: &Desired,
    p: &Project,
    port_of: impl Fn(&str, &str) -> Option<u16>,
    endpoint: &Endpoint,
) -> Layer {
    let mut t = String::new();
    let _ = writeln!(t, "# Facts about project `{}`\n", p.name);
    let _ = writeln!(
        t,
        "Kept current by the supervisor on every apply; `project_status` and `list_ports` are current now.\n"
    );
    services(&mut t, desired, p, &port_of);
    let url = endpoint.url(&p.name);
    let _ = writeln!(t, "## MCP endpoint\n");
    let _ = writeln!(
        t,
        "{url} serves this project only (its ports, secrets, tasks and knowledge). Register it with Claude Code:\n"
    );
    let _ = writeln!(
        t,
        "    claude mcp add --transport http {name} {url} --header \"Authorization: Bearer <token>\"\n",
        name = p.name
    );
    let _ = writeln!(
        t,
        "with a token from `supervisor token create --project {name}`, or without a server over stdio:\n",
        name = p.name
    );
    let _ = writeln!(
        t,
        "    claude mcp add {name} -- supervisor mcp --project {name}\n",
        name = p.name
    );
    if !p.secrets.required.is_empty() {
        let _ = writeln!(t, "## Secrets\n");
        let _ = writeln!(
            t,
            "Required (read each with `get_secret`; values never appear in this file):\n"
        );
        for s in &p.secrets.required {
            let _ = writeln!(t, "- `{s}`");
        }
        t.push('\n');
    }
    let _ = writeln!(t, "## Checks\n");
    if p.checks.is_empty() {
        let _ = writeln!(
            t,
            "None are declared: ask for checks to be added to the project's state file before calling work done.\n"
        );
    } else {
        let _ = writeln!(
            t,
            "Work is done when these pass through `run_checks` (it runs nothing else):\n"
        );
        for c in &p.checks {
            let _ = writeln!(t, "- `{c}`");
        }
        t.push('\n');
    }
    hosts(&mut t, desired, &p.host);
    Layer {
        source: SOURCE.into(),
        text: t,
    }
}

/// The facts of the whole fleet, for the meta supervisor.
pub fn meta(
    desired: &Desired,
    port_of: impl Fn(&str, &str) -> Option<u16>,
    endpoint: &Endpoint,
) -> Layer {
    let mut t = String::new();
    let _ = writeln!(t, "# Facts about the fleet\n");
    let _ = writeln!(
        t,
        "The meta endpoint, {}, serves every project. Register it with Claude Code:\n",
        endpoint.url("meta")
    );
    let _ = writeln!(
        t,
        "    claude mcp add --transport http meta {} --header \"Authorization: Bearer <token from `supervisor token create --meta`>\"\n",
        endpoint.url("meta")
    );
    let _ = writeln!(t, "## Projects\n");
    if desired.projects.is_empty() {
        let _ = writeln!(t, "None yet.\n");
    }
    for p in desired.projects.values() {
        let mut line = format!("- `{}`", p.name);
        if let Some(path) = &p.path {
            let _ = write!(line, " in {}", path.display());
        }
        let ports: Vec<String> = p
            .services
            .iter()
            .map(|s| match port_of(&p.name, &s.name) {
                Some(port) => format!("{} {port}", s.name),
                None => format!("{} (no port yet)", s.name),
            })
            .collect();
        if !ports.is_empty() {
            let _ = write!(line, ": {}", ports.join(", "));
        }
        let hosts: Vec<&str> = p
            .services
            .iter()
            .filter_map(|s| s.hostname.as_ref().map(|h| h.as_str()))
            .collect();
        if !hosts.is_empty() {
            let _ = write!(line, "; public: {}", hosts.join(", "));
        }
        if p.checks.is_empty() {
            line.push_str("; no checks declared");
        }
        let _ = writeln!(t, "{line}");
    }
    t.push('\n');
    shared(&mut t, desired);
    hosts(&mut t, desired, crate::store::DEFAULT_HOST);
    Layer {
        source: SOURCE.into(),
        text: t,
    }
}

fn services(
    t: &mut String,
    desired: &Desired,
    p: &Project,
    port_of: &impl Fn(&str, &str) -> Option<u16>,
) {
    let _ = writeln!(t, "## Services and ports\n");
    if p.services.is_empty() {
        let _ = writeln!(
            t,
            "No services are declared yet: `get_port` with a new service name declares one and gives it a port.\n"
        );
    } else {
        let _ = writeln!(
            t,
            "Bind exactly these ports (`get_port` returns them too; never choose one yourself):\n"
        );
        let _ = writeln!(t, "| service | port | public URL |\n|---|---|---|");
        for s in &p.services {
            let port = port_of(&p.name, &s.name).map_or_else(
                || "not allocated yet (call get_port)".to_string(),
                |p| p.to_string(),
            );
            let public = s
                .hostname
                .as_ref()
                .map_or_else(|| "—".to_string(), |h| format!("https://{h}"));
            let _ = writeln!(t, "| {} | {port} | {public} |", s.name);
        }
        t.push('\n');
    }
    shared(t, desired);
}

fn shared(t: &mut String, desired: &Desired) {
    if desired.shared_services.is_empty() {
        return;
    }
    let list: Vec<String> = desired
        .shared_services
        .iter()
        .map(|s| format!("{} on {}", s.name, s.port))
        .collect();
    let _ = writeln!(
        t,
        "Shared services every project may use: {}.\n",
        list.join(", ")
    );
}

fn hosts(t: &mut String, desired: &Desired, host: &str) {
    let _ = writeln!(t, "## Hosts\n");
    if desired.vms.is_empty() {
        let _ = writeln!(
            t,
            "This runs on host `{host}`; no Compute Engine VMs are managed by this supervisor.\n"
        );
        return;
    }
    let vms: Vec<String> = desired
        .vms
        .iter()
        .map(|v| format!("{} ({} in {})", v.name, v.machine_type, v.zone))
        .collect();
    let _ = writeln!(
        t,
        "This runs on host `{host}`; the VMs this supervisor manages: {}.\n",
        vms.join(", ")
    );
}
