//! `ports audit`: the registry against the sockets actually listening on this host.
//!
//! Reports each allocation as listening or idle, and conflicts: a listener on an unallocated port inside
//! a project's block, and a listener on a port allocated to one project by a process working in another
//! project's directory. Pure: takes the registry, project paths and listeners.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::sockets::Listener;
use crate::store::PortRegistry;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct AllocationAudit {
    pub project: String,
    pub service: String,
    pub port: u16,
    /// `listening` or `idle`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Listener>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Conflict {
    pub port: u16,
    pub kind: &'static str,
    pub message: String,
    pub listener: Listener,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct AuditReport {
    pub format_version: &'static str,
    pub allocations: Vec<AllocationAudit>,
    pub shared: Vec<AllocationAudit>,
    pub conflicts: Vec<Conflict>,
}

pub fn audit(
    registry: &PortRegistry,
    project_paths: &HashMap<String, PathBuf>,
    listeners: &[Listener],
) -> AuditReport {
    let by_port: HashMap<u16, &Listener> = listeners.iter().map(|l| (l.port, l)).collect();
    let state = |l: Option<&&Listener>| if l.is_some() { "listening" } else { "idle" };
    let owner_project = |l: &Listener| -> Option<&str> {
        let cwd = l.cwd.as_ref()?;
        project_paths
            .iter()
            .filter(|(_, p)| cwd.starts_with(p))
            .max_by_key(|(_, p)| p.as_os_str().len())
            .map(|(n, _)| n.as_str())
    };
    let mut conflicts = Vec::new();
    let allocations = registry
        .allocations
        .iter()
        .map(|a| {
            let port = a.port as u16;
            let l = by_port.get(&port);
            if let Some(l) = l
                && let Some(other) = owner_project(l).filter(|o| *o != a.project)
            {
                conflicts.push(Conflict {
                        port,
                        kind: "foreign_listener",
                        message: format!(
                            "port {port} is allocated to {}/{} but {} (pid {}) listening on it works in project `{other}`",
                            a.project,
                            a.service,
                            l.command.as_deref().unwrap_or("a process"),
                            l.pid.map_or("?".into(), |p| p.to_string())
                        ),
                        listener: (*l).clone(),
                    });
            }
            AllocationAudit { project: a.project.clone(), service: a.service.clone(), port, state: state(l), listener: l.map(|l| (*l).clone()) }
        })
        .collect();
    let shared = registry
        .shared
        .iter()
        .map(|s| {
            let port = s.port as u16;
            let l = by_port.get(&port);
            AllocationAudit {
                project: crate::providers::ports::SHARED.into(),
                service: s.name.clone(),
                port,
                state: state(l),
                listener: l.map(|l| (*l).clone()),
            }
        })
        .collect();
    let allocated: std::collections::HashSet<u16> = registry
        .allocations
        .iter()
        .map(|a| a.port as u16)
        .chain(registry.shared.iter().map(|s| s.port as u16))
        .collect();
    for l in listeners {
        if allocated.contains(&l.port) {
            continue;
        }
        if let Some(r) = registry
            .ranges
            .iter()
            .find(|r| i32::from(l.port) >= r.start_port && i32::from(l.port) <= r.end_port)
        {
            conflicts.push(Conflict {
                port: l.port,
                kind: "unallocated_in_block",
                message: format!(
                    "port {} in project `{}`'s block {}–{} is in use by {} (pid {}) but allocated to no service",
                    l.port,
                    r.project,
                    r.start_port,
                    r.end_port,
                    l.command.as_deref().unwrap_or("an unknown process"),
                    l.pid.map_or("?".into(), |p| p.to_string())
                ),
                listener: l.clone(),
            });
        }
    }
    AuditReport {
        format_version: "1",
        allocations,
        shared,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PortAllocation, PortRange};

    fn listener(port: u16, cwd: Option<&str>) -> Listener {
        Listener {
            port,
            address: "127.0.0.1".into(),
            pid: Some(42),
            command: Some("node".into()),
            cwd: cwd.map(PathBuf::from),
        }
    }

    #[test]
    fn reports_idle_listening_and_conflicts() {
        let reg = PortRegistry {
            ranges: vec![PortRange {
                host: "default".into(),
                project: "a".into(),
                start_port: 3000,
                end_port: 3099,
            }],
            allocations: vec![
                PortAllocation {
                    host: "default".into(),
                    project: "a".into(),
                    service: "api".into(),
                    port: 3000,
                },
                PortAllocation {
                    host: "default".into(),
                    project: "a".into(),
                    service: "web".into(),
                    port: 3001,
                },
            ],
            shared: vec![],
        };
        let paths = HashMap::from([
            ("a".to_string(), PathBuf::from("/srv/a")),
            ("b".to_string(), PathBuf::from("/srv/b")),
        ]);
        let report = audit(
            &reg,
            &paths,
            &[
                listener(3000, Some("/srv/b/app")),
                listener(3050, None),
                listener(8080, None),
            ],
        );
        assert_eq!(
            report
                .allocations
                .iter()
                .map(|a| a.state)
                .collect::<Vec<_>>(),
            ["listening", "idle"]
        );
        let kinds: Vec<(&str, u16)> = report.conflicts.iter().map(|c| (c.kind, c.port)).collect();
        assert_eq!(
            kinds,
            [("foreign_listener", 3000), ("unallocated_in_block", 3050)]
        );
        assert!(report.conflicts[0].message.contains("works in project `b`"));
    }
}
