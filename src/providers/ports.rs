//! The port registry as a reconciled resource.
//!
//! Each project owns a block of `ports.block` ports (pinned with `port_range`, or the first free block);
//! each service owns one port in its project's block (pinned, or the first free one); shared services
//! own fixed ports in the shared range. Identity is (project, service): an allocation never moves unless
//! its pin changes or it falls outside its block, so ports are stable across runs.
//!
//! Addresses: `ports/<project>` (the block), `ports/<project>/<service>`, `ports/_shared/<name>`.
//!
//! The diff ([`diff`]) is pure. Ports freed by this plan are not handed out again by the same plan (a
//! port that was in use a second ago is not given to someone else in the same breath); they are free
//! from the next plan on. The database's unique constraints make a double allocation impossible even
//! when two applies race.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, fingerprint,
    payload, to_payload,
};
use crate::state::Desired;
use crate::store::{ManagedObject, PortAllocation, PortRange, PortRegistry, SharedPort, Store};

pub const NAME: &str = "ports";
pub const SHARED: &str = "_shared";

/// One allocated port as the CLI (`ports list`) and MCP (`list_ports`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PortLine {
    pub project: String,
    pub service: String,
    pub port: i32,
    /// The service's public hostname, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// The registry's service allocations joined with desired state, optionally for one project.
pub fn port_lines(
    desired: &Desired,
    registry: &PortRegistry,
    project: Option<&str>,
) -> Vec<PortLine> {
    registry
        .allocations
        .iter()
        .filter(|a| project.is_none_or(|p| p == a.project))
        .map(|a| PortLine {
            project: a.project.clone(),
            service: a.service.clone(),
            port: a.port,
            hostname: desired
                .service(&a.project, &a.service)
                .and_then(|s| s.hostname.as_ref().map(|h| h.to_string())),
        })
        .collect()
}

pub fn block_address(project: &str) -> String {
    format!("ports/{project}")
}
pub fn service_address(project: &str, service: &str) -> String {
    format!("ports/{project}/{service}")
}
pub fn shared_address(name: &str) -> String {
    format!("ports/{SHARED}/{name}")
}

/// What the provider observes: the host's registry and which allocations are protected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub registry: PortRegistry,
    /// Addresses of allocations recorded with `prevent_destroy`.
    pub protected: BTreeSet<String>,
}

pub struct PortsProvider {
    store: Arc<dyn Store>,
    host: String,
}

impl PortsProvider {
    pub fn new(store: Arc<dyn Store>, host: impl Into<String>) -> Self {
        PortsProvider {
            store,
            host: host.into(),
        }
    }

    pub async fn observe(&self) -> Result<Observed, ProviderError> {
        let registry = self.store.port_registry(&self.host).await?;
        let protected = self
            .store
            .list_managed(NAME)
            .await?
            .into_iter()
            .filter(|o| o.attributes.0.get("prevent_destroy") == Some(&json!(true)))
            .map(|o| o.address)
            .collect();
        Ok(Observed {
            registry,
            protected,
        })
    }
}

/// What a ports change carries in the plan (`before`/`after`), tagged by `kind` as in
/// `docs/plan-format.md`. Read back with serde when applying: a payload that does not parse is an error
/// naming the address, never a default port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PortChange {
    /// A project's block of ports.
    Block {
        project: String,
        start: u16,
        end: u16,
    },
    /// A service's port.
    Service {
        project: String,
        service: String,
        port: u16,
        prevent_destroy: bool,
    },
    /// A shared service's port.
    Shared { name: String, port: u16 },
}

/// Each service's port as it will be once the plan is applied: allocations kept, moved or created by
/// the plan; services the plan cannot place are absent. Offered to later providers (tunnel ingress).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlannedPorts(pub BTreeMap<(String, String), u16>);

impl PlannedPorts {
    pub fn get(&self, project: &str, service: &str) -> Option<u16> {
        self.0
            .get(&(project.to_string(), service.to_string()))
            .copied()
    }
}

#[async_trait]
impl Provider for PortsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn plan(
        &self,
        desired: &Desired,
        _earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let observed = self.observe().await?;
        let mut plan = diff(desired, &observed);
        plan.fingerprint = fingerprint(&observed);
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        let host = self.host.clone();
        let before = || payload::<PortChange>(change, change.before.as_ref());
        let after = || payload::<PortChange>(change, change.after.as_ref());
        match change.action {
            Action::Create | Action::Update | Action::Replace => {
                let previous = match change.action {
                    Action::Create => None,
                    _ => Some(before()?),
                };
                self.put(change, previous, after()?, host).await
            }
            Action::Delete => match before()? {
                PortChange::Block { project, .. } => {
                    self.store.delete_port_range(&host, &project).await?;
                    Ok(())
                }
                PortChange::Service {
                    project, service, ..
                } => {
                    self.store
                        .delete_port_allocation(&host, &project, &service)
                        .await?;
                    self.store.delete_managed(NAME, &change.address).await?;
                    Ok(())
                }
                PortChange::Shared { name, .. } => {
                    self.store.delete_shared_port(&host, &name).await?;
                    Ok(())
                }
            },
        }
    }
}

impl PortsProvider {
    /// Creates or moves one block, allocation or shared port. Each is one statement (a move is one
    /// UPDATE), so a change that fails — a port taken meanwhile — leaves the registry as it was.
    async fn put(
        &self,
        change: &Change,
        previous: Option<PortChange>,
        next: PortChange,
        host: String,
    ) -> Result<(), ProviderError> {
        match next {
            PortChange::Block {
                project,
                start,
                end,
            } => {
                let range = PortRange {
                    host,
                    project,
                    start_port: i32::from(start),
                    end_port: i32::from(end),
                };
                // An update whose block vanished (removed by hand) re-creates it.
                if previous.is_none() || !self.store.move_port_range(&range).await? {
                    self.store.insert_port_range(&range).await?;
                }
            }
            PortChange::Service {
                project,
                service,
                port,
                prevent_destroy,
            } => {
                let alloc = PortAllocation {
                    host,
                    project,
                    service,
                    port: i32::from(port),
                };
                let moved = match &previous {
                    Some(PortChange::Service { port: old, .. }) => *old != port,
                    _ => true,
                };
                // An update whose allocation vanished (removed by hand) re-creates it.
                let exists = previous.is_some()
                    && (!moved || self.store.update_port_allocation(&alloc).await?);
                if !exists {
                    self.store.insert_port_allocation(&alloc).await?;
                }
                if prevent_destroy {
                    self.store
                        .upsert_managed(&ManagedObject {
                            provider: NAME.into(),
                            address: change.address.clone(),
                            external_id: None,
                            attributes: sqlx::types::Json(json!({"prevent_destroy": true})),
                            adopted: false,
                        })
                        .await?;
                } else {
                    self.store.delete_managed(NAME, &change.address).await?;
                }
            }
            PortChange::Shared { name, port } => {
                let shared = SharedPort {
                    host,
                    name,
                    port: i32::from(port),
                };
                if previous.is_none() || !self.store.update_shared_port(&shared).await? {
                    self.store.insert_shared_port(&shared).await?;
                }
            }
        }
        Ok(())
    }
}

struct Block {
    lo: u16,
    hi: u16,
}

fn range_text(lo: u16, hi: u16) -> String {
    format!("{lo}–{hi}")
}

/// A ports change for the plan.
fn port_change(
    address: String,
    action: Action,
    project: Option<&str>,
    before: Option<&PortChange>,
    after: Option<&PortChange>,
    summary: String,
) -> Change {
    Change {
        address,
        provider: NAME.into(),
        action,
        project: project.map(str::to_string),
        before: before.map(to_payload),
        after: after.map(to_payload),
        summary,
        drifted: false,
        disruptive: false,
        diff: None,
        requires: Vec::new(),
    }
}

/// Desired state against the observed registry → ordered changes (deletes, blocks, shared, moves in
/// dependency order, creates), warnings and errors. Pure.
///
/// Rules: a project keeps its block unless it pins another one; a pin never takes a block that another
/// declared project holds (that is an error naming the holder — one project's edit can never move
/// another's ports); a service keeps its port unless pinned elsewhere or outside its block. Moving a
/// port (or a block) is disruptive: whatever listens on the old port stops being reachable there.
pub fn diff(desired: &Desired, observed: &Observed) -> ProviderPlan {
    let settings = desired.ports;
    let reg = &observed.registry;
    let mut out = ProviderPlan {
        managed: reg.allocations.len() + reg.shared.len() + reg.ranges.len(),
        ..Default::default()
    };
    let mut deletes = Vec::new();
    let mut shared_changes = Vec::new();
    let mut updates: Vec<(Change, u16, Option<u16>)> = Vec::new(); // (change, new port, old port)
    let mut creates = Vec::new();
    let mut planned = BTreeMap::new();

    let observed_blocks: HashMap<&str, &PortRange> =
        reg.ranges.iter().map(|r| (r.project.as_str(), r)).collect();
    let observed_allocs: HashMap<(&str, &str), &PortAllocation> = reg
        .allocations
        .iter()
        .map(|a| ((a.project.as_str(), a.service.as_str()), a))
        .collect();
    // Who holds each block now.
    let holders: HashMap<u16, &str> = reg
        .ranges
        .iter()
        .map(|r| (r.start_port as u16, r.project.as_str()))
        .collect();

    // Blocks that stay taken during this plan: every observed one (a block freed by this plan is not
    // handed out again by it) and every pinned one.
    let mut taken_blocks: BTreeSet<u16> = holders.keys().copied().collect();
    taken_blocks.extend(desired.projects.values().filter_map(|p| p.port_range));

    // 1. Blocks.
    let mut blocks: BTreeMap<&str, Block> = BTreeMap::new();
    let mut block_moves: Vec<(Change, u16, Option<u16>)> = Vec::new();
    for p in desired.projects.values() {
        out.resources.push(Resource {
            address: block_address(&p.name),
            provider: NAME.into(),
            project: Some(p.name.clone()),
        });
        let current = observed_blocks.get(p.name.as_str());
        let mut requires = Vec::new();
        let (lo, reason) = match (p.port_range, current) {
            (Some(pin), _) => match holders.get(&pin) {
                // The holder stays unless it pins another block itself.
                Some(holder)
                    if *holder != p.name
                        && desired
                            .projects
                            .get(*holder)
                            .is_some_and(|h| h.port_range.is_none_or(|r| r == pin)) =>
                {
                    out.errors.push(Notice {
                        provider: NAME.into(),
                        address: Some(block_address(&p.name)),
                        project: Some(p.name.clone()),
                        message: format!(
                            "project `{}` pins port_range {pin}, but project `{holder}` holds the block {}; give `{holder}` another port_range (or remove it) and apply first",
                            p.name,
                            range_text(pin, pin.saturating_add(settings.block - 1))
                        ),
                    });
                    continue;
                }
                Some(holder) if *holder != p.name => {
                    // The holder is being removed or moves to its own pin: its block is freed first.
                    requires.push(block_address(holder));
                    (Some(pin), "pinned".to_string())
                }
                _ => (Some(pin), "pinned".to_string()),
            },
            (None, Some(r)) => (Some(r.start_port as u16), "kept".to_string()),
            (None, None) => {
                let mut candidate = None;
                let mut start = u32::from(settings.projects_start);
                while start + u32::from(settings.block) - 1 <= u32::from(settings.projects_end) {
                    if !taken_blocks.contains(&(start as u16)) {
                        candidate = Some(start as u16);
                        break;
                    }
                    start += u32::from(settings.block);
                }
                (candidate, "next free".to_string())
            }
        };
        let Some(lo) = lo else {
            out.errors.push(Notice {
                provider: NAME.into(),
                address: Some(block_address(&p.name)),
                project: Some(p.name.clone()),
                message: format!(
                    "no free block of {} ports is left in {} for project `{}`",
                    settings.block,
                    range_text(settings.projects_start, settings.projects_end),
                    p.name
                ),
            });
            continue;
        };
        taken_blocks.insert(lo);
        let hi = lo + (settings.block - 1);
        let after = PortChange::Block {
            project: p.name.clone(),
            start: lo,
            end: hi,
        };
        match current {
            None => {
                let mut c = port_change(
                    block_address(&p.name),
                    Action::Create,
                    Some(&p.name),
                    None,
                    Some(&after),
                    format!("block {} ({reason})", range_text(lo, hi)),
                );
                c.requires = requires;
                block_moves.push((c, lo, None));
            }
            Some(r) if r.start_port as u16 != lo || r.end_port as u16 != hi => {
                let before = PortChange::Block {
                    project: p.name.clone(),
                    start: r.start_port as u16,
                    end: r.end_port as u16,
                };
                let mut c = port_change(
                    block_address(&p.name),
                    Action::Update,
                    Some(&p.name),
                    Some(&before),
                    Some(&after),
                    format!(
                        "block {} → {} ({reason})",
                        range_text(r.start_port as u16, r.end_port as u16),
                        range_text(lo, hi)
                    ),
                );
                c.requires = requires;
                // The project's services move with their block.
                c.disruptive = reg.allocations.iter().any(|a| a.project == p.name);
                block_moves.push((c, lo, Some(r.start_port as u16)));
            }
            Some(_) => {}
        }
        blocks.insert(&p.name, Block { lo, hi });
    }
    for r in &reg.ranges {
        if !desired.projects.contains_key(&r.project) {
            let before = PortChange::Block {
                project: r.project.clone(),
                start: r.start_port as u16,
                end: r.end_port as u16,
            };
            deletes.push(port_change(
                block_address(&r.project),
                Action::Delete,
                Some(&r.project),
                Some(&before),
                None,
                format!(
                    "block {} (freed)",
                    range_text(r.start_port as u16, r.end_port as u16)
                ),
            ));
        }
    }

    // 2. Service ports. Ports held now (by anyone) are not handed out to a new service in this plan.
    let held_now: HashSet<u16> = reg.allocations.iter().map(|a| a.port as u16).collect();
    let desired_services: HashSet<(&str, &str)> = desired
        .projects
        .values()
        .flat_map(|p| {
            p.services
                .iter()
                .map(move |s| (p.name.as_str(), s.name.as_str()))
        })
        .collect();
    for p in desired.projects.values() {
        let Some(block) = blocks.get(p.name.as_str()) else {
            continue;
        };
        let pins: HashMap<u16, &str> = p
            .services
            .iter()
            .filter_map(|s| s.port.map(|port| (port, s.name.as_str())))
            .collect();
        // Decide each service's port: pins first, then kept allocations, then first free.
        let mut assigned: HashMap<&str, (u16, String)> = HashMap::new();
        let mut used: HashSet<u16> = pins.keys().copied().collect();
        for s in &p.services {
            if let Some(port) = s.port {
                assigned.insert(&s.name, (port, "pinned".into()));
            }
        }
        for s in p.services.iter().filter(|s| s.port.is_none()) {
            if let Some(a) = observed_allocs.get(&(p.name.as_str(), s.name.as_str())) {
                let port = a.port as u16;
                let inside = port >= block.lo && port <= block.hi;
                if inside && !pins.contains_key(&port) && used.insert(port) {
                    assigned.insert(&s.name, (port, "kept".into()));
                }
            }
        }
        let unassigned: Vec<&crate::state::Service> = p
            .services
            .iter()
            .filter(|s| !assigned.contains_key(s.name.as_str()))
            .collect();
        for s in unassigned {
            let free =
                (block.lo..=block.hi).find(|port| !used.contains(port) && !held_now.contains(port));
            match free {
                Some(port) => {
                    used.insert(port);
                    assigned.insert(
                        &s.name,
                        (
                            port,
                            format!("first free in {}", range_text(block.lo, block.hi)),
                        ),
                    );
                }
                None => out.errors.push(Notice {
                    provider: NAME.into(),
                    address: Some(service_address(&p.name, &s.name)),
                    project: Some(p.name.clone()),
                    message: format!(
                        "block {} of project `{}` has no free port for service `{}`",
                        range_text(block.lo, block.hi),
                        p.name,
                        s.name
                    ),
                }),
            }
        }
        for s in &p.services {
            let Some((port, reason)) = assigned.get(s.name.as_str()) else {
                continue;
            };
            planned.insert((p.name.clone(), s.name.clone()), *port);
            let address = service_address(&p.name, &s.name);
            out.resources.push(Resource {
                address: address.clone(),
                provider: NAME.into(),
                project: Some(p.name.clone()),
            });
            let protected_now = observed.protected.contains(&address);
            let after = PortChange::Service {
                project: p.name.clone(),
                service: s.name.clone(),
                port: *port,
                prevent_destroy: s.prevent_destroy,
            };
            match observed_allocs.get(&(p.name.as_str(), s.name.as_str())) {
                None => creates.push(port_change(
                    address,
                    Action::Create,
                    Some(&p.name),
                    None,
                    Some(&after),
                    format!("port {port} ({reason})"),
                )),
                Some(a) if a.port as u16 != *port || protected_now != s.prevent_destroy => {
                    let old = a.port as u16;
                    let mut parts = Vec::new();
                    if old != *port {
                        let why = if old < block.lo || old > block.hi {
                            format!("outside the block {}", range_text(block.lo, block.hi))
                        } else {
                            reason.clone()
                        };
                        parts.push(format!("port {old} → {port} ({why})"));
                    }
                    if protected_now != s.prevent_destroy {
                        parts.push(format!(
                            "prevent_destroy {protected_now} → {}",
                            s.prevent_destroy
                        ));
                    }
                    let before = PortChange::Service {
                        project: p.name.clone(),
                        service: s.name.clone(),
                        port: old,
                        prevent_destroy: protected_now,
                    };
                    let mut c = port_change(
                        address,
                        Action::Update,
                        Some(&p.name),
                        Some(&before),
                        Some(&after),
                        parts.join(", "),
                    );
                    c.disruptive = old != *port;
                    updates.push((c, *port, (old != *port).then_some(old)));
                }
                Some(_) => {}
            }
        }
    }
    for a in &reg.allocations {
        if desired_services.contains(&(a.project.as_str(), a.service.as_str())) {
            continue;
        }
        let address = service_address(&a.project, &a.service);
        let protected = observed.protected.contains(&address);
        if protected {
            out.errors.push(Notice {
                provider: NAME.into(),
                address: Some(address.clone()),
                project: Some(a.project.clone()),
                message: format!(
                    "{address} has prevent_destroy: removing service `{}` is refused; set prevent_destroy: false and apply first",
                    a.service
                ),
            });
        }
        let before = PortChange::Service {
            project: a.project.clone(),
            service: a.service.clone(),
            port: a.port as u16,
            prevent_destroy: protected,
        };
        deletes.push(port_change(
            address,
            Action::Delete,
            Some(&a.project),
            Some(&before),
            None,
            format!("port {} (freed)", a.port),
        ));
    }

    // 3. Shared services.
    let observed_shared: HashMap<&str, &SharedPort> =
        reg.shared.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &desired.shared_services {
        out.resources.push(Resource {
            address: shared_address(&s.name),
            provider: NAME.into(),
            project: None,
        });
        let after = PortChange::Shared {
            name: s.name.clone(),
            port: s.port,
        };
        match observed_shared.get(s.name.as_str()) {
            None => shared_changes.push((
                port_change(
                    shared_address(&s.name),
                    Action::Create,
                    None,
                    None,
                    Some(&after),
                    format!("port {} (shared service)", s.port),
                ),
                s.port,
                None,
            )),
            Some(o) if o.port as u16 != s.port => {
                let before = PortChange::Shared {
                    name: s.name.clone(),
                    port: o.port as u16,
                };
                let mut c = port_change(
                    shared_address(&s.name),
                    Action::Update,
                    None,
                    Some(&before),
                    Some(&after),
                    format!("port {} → {} (shared service)", o.port, s.port),
                );
                c.disruptive = true;
                shared_changes.push((c, s.port, Some(o.port as u16)));
            }
            Some(_) => {}
        }
    }
    let wanted_shared: HashSet<&str> = desired
        .shared_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for o in &reg.shared {
        if !wanted_shared.contains(o.name.as_str()) {
            let before = PortChange::Shared {
                name: o.name.clone(),
                port: o.port as u16,
            };
            deletes.push(port_change(
                shared_address(&o.name),
                Action::Delete,
                None,
                Some(&before),
                None,
                format!("port {} (shared service, freed)", o.port),
            ));
        }
    }
    // 4. Order: service deletes before block deletes; moves so that a port is vacated before it is taken.
    let is_block = |c: &Change| c.address.matches('/').count() == 1;
    deletes.sort_by(|a, b| (is_block(a), &a.address).cmp(&(is_block(b), &b.address)));
    let ordered_blocks = order_moves(block_moves, &mut out.errors);
    let ordered_updates = order_moves(updates, &mut out.errors);

    out.changes.extend(deletes);
    out.changes.extend(ordered_blocks);
    out.changes
        .extend(order_moves(shared_changes, &mut out.errors));
    out.changes.extend(ordered_updates);
    out.changes.extend(creates);
    out.outputs.insert(PlannedPorts(planned));
    out
}

/// Orders moves (of service ports or of blocks, keyed by port) so each one's target is vacated first;
/// a cycle (two pins swapping) is an error.
fn order_moves(updates: Vec<(Change, u16, Option<u16>)>, errors: &mut Vec<Notice>) -> Vec<Change> {
    // The move that vacates port P.
    let vacates: HashMap<u16, usize> = updates
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, old))| old.map(|o| (o, i)))
        .collect();
    let mut done = vec![false; updates.len()];
    let mut visiting = vec![false; updates.len()];
    let mut order = Vec::new();
    fn visit(
        i: usize,
        updates: &[(Change, u16, Option<u16>)],
        vacates: &HashMap<u16, usize>,
        done: &mut [bool],
        visiting: &mut [bool],
        order: &mut Vec<usize>,
    ) -> Result<(), usize> {
        if done[i] {
            return Ok(());
        }
        if visiting[i] {
            return Err(i);
        }
        visiting[i] = true;
        if let Some(&j) = vacates.get(&updates[i].1)
            && j != i
        {
            visit(j, updates, vacates, done, visiting, order)?;
        }
        visiting[i] = false;
        done[i] = true;
        order.push(i);
        Ok(())
    }
    for i in 0..updates.len() {
        if let Err(k) = visit(i, &updates, &vacates, &mut done, &mut visiting, &mut order) {
            errors.push(Notice {
                provider: NAME.into(),
                address: Some(updates[k].0.address.clone()),
                project: updates[k].0.project.clone(),
                message: format!(
                    "{} and another resource swap ports in one plan; move one of them in a separate apply",
                    updates[k].0.address
                ),
            });
            done[i] = true;
        }
    }
    // Each move needs the move that vacates its target first (a scoped plan that leaves it out is
    // refused by the engine).
    let vacating: Vec<Option<String>> = updates
        .iter()
        .enumerate()
        .map(|(i, (_, target, _))| {
            vacates
                .get(target)
                .filter(|&&j| j != i)
                .map(|&j| updates[j].0.address.clone())
        })
        .collect();
    let mut slots: Vec<Option<Change>> = updates
        .into_iter()
        .zip(vacating)
        .map(|((mut c, _, _), needs)| {
            if let Some(n) = needs
                && !c.requires.contains(&n)
            {
                c.requires.push(n);
            }
            Some(c)
        })
        .collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PortSettings, Project, RequiredSecrets, Service, SharedService};
    use crate::store::DEFAULT_HOST;

    fn desired(projects: Vec<Project>) -> Desired {
        Desired {
            dir: "state".into(),
            revision: "r".into(),
            ports: PortSettings {
                projects_start: 3000,
                projects_end: 3399,
                block: 100,
                shared_start: 9000,
                shared_end: 9999,
            },
            shared_services: vec![SharedService {
                name: "postgres".into(),
                port: 9432,
            }],
            cloudflare: None,
            gcloud: None,
            vms: vec![],
            instructions: Default::default(),
            projects: projects.into_iter().map(|p| (p.name.clone(), p)).collect(),
            warnings: vec![],
        }
    }

    fn project(name: &str, range: Option<u16>, services: &[(&str, Option<u16>)]) -> Project {
        Project {
            name: name.into(),
            host: DEFAULT_HOST.into(),
            path: None,
            port_range: range,
            services: services
                .iter()
                .map(|(n, p)| Service {
                    name: (*n).into(),
                    port: *p,
                    hostname: None,
                    prevent_destroy: false,
                })
                .collect(),
            secrets: RequiredSecrets::default(),
            checks: vec![],
            knowledge: vec![],
            instructions: None,
            instructions_dir: None,
            api_keys: vec![],
        }
    }

    fn summaries(plan: &ProviderPlan) -> Vec<String> {
        plan.changes
            .iter()
            .map(|c| format!("{} {} {}", c.action.symbol(), c.address, c.summary))
            .collect()
    }

    /// Applies a plan to an observation the way the store would (for convergence tests).
    fn apply_to(observed: &mut Observed, plan: &ProviderPlan) {
        let reg = &mut observed.registry;
        for c in &plan.changes {
            let v = c.after.as_ref().or(c.before.as_ref()).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let n = |k: &str| v[k].as_i64().unwrap() as i32;
            match (v["kind"].as_str().unwrap(), c.action) {
                ("block", Action::Delete) => reg.ranges.retain(|r| r.project != s("project")),
                ("block", _) => {
                    reg.ranges.retain(|r| r.project != s("project"));
                    assert!(
                        reg.ranges.iter().all(|r| r.start_port != n("start")),
                        "block collision"
                    );
                    reg.ranges.push(PortRange {
                        host: "default".into(),
                        project: s("project"),
                        start_port: n("start"),
                        end_port: n("end"),
                    });
                }
                ("service", Action::Delete) => {
                    reg.allocations
                        .retain(|a| !(a.project == s("project") && a.service == s("service")));
                    observed.protected.remove(&c.address);
                }
                ("service", _) => {
                    reg.allocations
                        .retain(|a| !(a.project == s("project") && a.service == s("service")));
                    assert!(
                        reg.allocations.iter().all(|a| a.port != n("port")),
                        "port collision at {}",
                        c.address
                    );
                    reg.allocations.push(PortAllocation {
                        host: "default".into(),
                        project: s("project"),
                        service: s("service"),
                        port: n("port"),
                    });
                    if v["prevent_destroy"] == json!(true) {
                        observed.protected.insert(c.address.clone());
                    } else {
                        observed.protected.remove(&c.address);
                    }
                }
                ("shared", Action::Delete) => reg.shared.retain(|x| x.name != s("name")),
                ("shared", _) => {
                    reg.shared.retain(|x| x.name != s("name"));
                    reg.shared.push(SharedPort {
                        host: "default".into(),
                        name: s("name"),
                        port: n("port"),
                    });
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn first_plan_shows_exact_ports() {
        let d = desired(vec![
            project(
                "consilio",
                Some(3100),
                &[("api", Some(3101)), ("web", None), ("worker", None)],
            ),
            project("notes", None, &[("app", None)]),
        ]);
        let plan = diff(&d, &Observed::default());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            summaries(&plan),
            [
                "+ ports/consilio block 3100–3199 (pinned)",
                "+ ports/notes block 3000–3099 (next free)",
                "+ ports/_shared/postgres port 9432 (shared service)",
                "+ ports/consilio/api port 3101 (pinned)",
                "+ ports/consilio/web port 3100 (first free in 3100–3199)",
                "+ ports/consilio/worker port 3102 (first free in 3100–3199)",
                "+ ports/notes/app port 3000 (first free in 3000–3099)",
            ]
        );
    }

    #[test]
    fn apply_then_plan_is_empty_and_removal_frees() {
        let d = desired(vec![project("a", None, &[("x", None), ("y", None)])]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        apply_to(&mut obs, &first);
        assert!(diff(&d, &obs).changes.is_empty());
        let d2 = desired(vec![project("a", None, &[("y", None), ("z", None)])]);
        let plan = diff(&d2, &obs);
        // x is freed; z does not reuse x's port in the same plan.
        assert_eq!(
            summaries(&plan),
            [
                "- ports/a/x port 3000 (freed)",
                "+ ports/a/z port 3002 (first free in 3000–3099)"
            ]
        );
        apply_to(&mut obs, &plan);
        let d3 = desired(vec![project(
            "a",
            None,
            &[("y", None), ("z", None), ("w", None)],
        )]);
        assert_eq!(
            summaries(&diff(&d3, &obs)),
            ["+ ports/a/w port 3000 (first free in 3000–3099)"]
        );
    }

    #[test]
    fn a_new_pin_moves_the_service_holding_that_port_first() {
        let d = desired(vec![project("a", Some(3000), &[("x", None), ("y", None)])]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        apply_to(&mut obs, &first); // x=3000, y=3001
        let d2 = desired(vec![project(
            "a",
            Some(3000),
            &[("x", None), ("y", Some(3000))],
        )]);
        let plan = diff(&d2, &obs);
        assert_eq!(
            summaries(&plan),
            [
                "~ ports/a/x port 3000 → 3002 (first free in 3000–3099)",
                "~ ports/a/y port 3001 → 3000 (pinned)",
            ]
        );
        apply_to(&mut obs, &plan);
        assert!(diff(&d2, &obs).changes.is_empty());
    }

    #[test]
    fn a_pin_never_takes_a_block_another_project_holds() {
        let d = desired(vec![
            project("consilio", None, &[("api", None)]),
            project("notes", None, &[("app", None), ("search", None)]),
        ]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        apply_to(&mut obs, &first); // consilio 3000–3099, notes 3100–3199
        let d2 = desired(vec![
            project("consilio", Some(3100), &[("api", None)]),
            project("notes", None, &[("app", None), ("search", None)]),
        ]);
        let plan = diff(&d2, &obs);
        assert_eq!(
            plan.errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            [
                "project `consilio` pins port_range 3100, but project `notes` holds the block 3100–3199; give `notes` another port_range (or remove it) and apply first"
            ]
        );
        assert!(
            plan.changes
                .iter()
                .all(|c| c.project.as_deref() != Some("notes")),
            "{:?}",
            summaries(&plan)
        );
        // Once notes is gone, its block may be pinned: the pin waits for the delete.
        let d3 = desired(vec![project("consilio", Some(3100), &[("api", None)])]);
        let plan = diff(&d3, &obs);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let block = plan
            .changes
            .iter()
            .find(|c| c.address == "ports/consilio")
            .unwrap();
        assert_eq!(block.requires, ["ports/notes"]);
        assert!(block.disruptive, "consilio's api moves with its block");
        apply_to(&mut obs, &plan);
        assert!(diff(&d3, &obs).changes.is_empty());
    }

    #[test]
    fn moving_a_port_is_disruptive_and_needs_its_target_vacated_first() {
        let d = desired(vec![project("a", Some(3000), &[("x", None), ("y", None)])]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        assert!(first.changes.iter().all(|c| !c.disruptive));
        apply_to(&mut obs, &first); // x=3000, y=3001
        let d2 = desired(vec![project(
            "a",
            Some(3000),
            &[("x", None), ("y", Some(3000))],
        )]);
        let plan = diff(&d2, &obs);
        let by = |a: &str| plan.changes.iter().find(|c| c.address == a).unwrap();
        assert!(by("ports/a/x").disruptive && by("ports/a/y").disruptive);
        assert_eq!(by("ports/a/y").requires, ["ports/a/x"]);
        assert!(by("ports/a/x").requires.is_empty());
    }

    #[test]
    fn a_payload_that_does_not_parse_is_an_error_naming_the_address() {
        let c = port_change(
            "ports/a/x".into(),
            Action::Create,
            Some("a"),
            None,
            None,
            String::new(),
        );
        let mut bad = c.clone();
        bad.after = Some(json!({"kind": "service", "project": "a", "service": "x"}));
        let err = payload::<PortChange>(&bad, bad.after.as_ref())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ports/a/x: the change cannot be read (missing field `port`"),
            "{err}"
        );
        let err = payload::<PortChange>(&c, c.after.as_ref())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ports/a/x") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn prevent_destroy_is_remembered_after_the_service_is_gone() {
        let mut p = project("a", None, &[("db", None)]);
        p.services[0].prevent_destroy = true;
        let mut obs = Observed::default();
        let first = diff(&desired(vec![p]), &obs);
        apply_to(&mut obs, &first);
        let plan = diff(&desired(vec![project("a", None, &[])]), &obs);
        assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
        assert!(plan.errors[0].message.contains("prevent_destroy"));
    }

    #[test]
    fn a_full_range_is_an_error_not_a_panic() {
        let mut d = desired(
            (0..5)
                .map(|i| project(&format!("p{i}"), None, &[]))
                .collect(),
        );
        d.ports.projects_end = 3399; // room for 4 blocks
        let plan = diff(&d, &Observed::default());
        assert_eq!(plan.errors.len(), 1);
        assert!(plan.errors[0].message.contains("no free block"));
    }

    #[test]
    fn planned_ports_are_what_the_plan_leaves_behind() {
        let d = desired(vec![project("a", Some(3000), &[("x", None), ("y", None)])]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        let planned = |d: &Desired, obs: &Observed| {
            diff(d, obs)
                .outputs
                .get::<PlannedPorts>()
                .cloned()
                .unwrap()
                .0
        };
        assert_eq!(
            planned(&d, &obs).into_iter().collect::<Vec<_>>(),
            [
                (("a".into(), "x".into()), 3000),
                (("a".into(), "y".into()), 3001)
            ]
        );
        apply_to(&mut obs, &first);
        let d2 = desired(vec![project("a", Some(3000), &[("y", Some(3005))])]);
        assert_eq!(
            planned(&d2, &obs).into_iter().collect::<Vec<_>>(),
            [(("a".into(), "y".into()), 3005)]
        );
    }

    #[test]
    fn swapping_pins_is_reported() {
        let d = desired(vec![project(
            "a",
            Some(3000),
            &[("x", Some(3001)), ("y", Some(3002))],
        )]);
        let mut obs = Observed::default();
        let first = diff(&d, &obs);
        apply_to(&mut obs, &first);
        let d2 = desired(vec![project(
            "a",
            Some(3000),
            &[("x", Some(3002)), ("y", Some(3001))],
        )]);
        let plan = diff(&d2, &obs);
        assert!(
            plan.errors.iter().any(|e| e.message.contains("swap")),
            "{:?}",
            plan.errors
        );
    }
}
