//! Public hostnames in DNS: for every service with a `hostname`, one proxied CNAME
//! `hostname → <tunnel target>` in the Cloudflare zone.
//!
//! Addresses: `dns/<hostname>`.
//!
//! **Ownership** (as external-dns and DNSControl do it): the supervisor changes or deletes only records
//! in its inventory (`provider = dns`, external id = the record id). A record it creates carries the
//! comment marker [`OWNER_COMMENT`]; an adopted record keeps its comment until the supervisor has a
//! real reason to update it, and only then gets the marker (adoption itself never changes a record).
//! An unmanaged record at a desired hostname is a plan error naming it, until it is adopted with
//! `apply --adopt HOST` or `supervisor import cloudflare`. Unmanaged records are never touched.
//!
//! **Normalisation** before comparing: names and CNAME targets lower case without the trailing dot,
//! TTL 1 is automatic and a proxied record's TTL is always automatic, so a second plan after an apply
//! is empty. Tags, settings and unmodelled fields are not compared (and a PUT carries the ones the
//! supervisor writes).
//!
//! **Drift**: the inventory keeps what was last applied; a managed record that differs from it (edited
//! in the dashboard) or is gone (deleted there) is planned back with `drifted = true`.
//!
//! **Apply**: the engine hands this provider groups of up to [`BATCH_LIMIT`] changes; each group is one
//! call to the batch endpoint, which Cloudflare runs as one transaction (deletes → patches → puts →
//! posts) — all of it or nothing. When the batch endpoint is not there (HTTP 404/405 without a record
//! error) the group falls back to single-record calls, which are not atomic (what succeeded is in the
//! inventory; the next plan converges). A batch or record creation whose answer is lost
//! (`OutcomeUnknown`) is never resent blindly: the zone is read again and the call is repeated only
//! when none of it happened. Before records are created their inventory entries are written as
//! *pending* (no record id); a crash between the API call and the inventory write leaves records with
//! the marker that the next plan recognises as its own instead of calling them unmanaged.
//!
//! The diff ([`diff`]) is pure.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::cloudflare::{CloudflareApi, OWNER_COMMENT, api_error, marked_comment, normalize_host};
use crate::clients::cloudflare::{
    BatchDelete, BatchPut, BatchRequest, CloudflareError, Deletion, DnsRecord, DnsRecordFilter,
    DnsRecordSpec, RECORD_NOT_FOUND, RecordType,
};
use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, fingerprint,
    payload,
};
use crate::state::Desired;
use crate::store::{ManagedObject, Store};

pub const NAME: &str = "dns";

/// Record changes per batch call: the Free plan's limit (paid plans allow 3,500).
pub const BATCH_LIMIT: usize = 200;

pub fn address(hostname: &str) -> String {
    format!("{NAME}/{hostname}")
}

fn hostname_of(address: &str) -> Option<&str> {
    address.strip_prefix("dns/")
}

/// The fields of a record that are compared, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFields {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub content: String,
    pub proxied: bool,
    /// 1 = automatic (always, for a proxied record).
    pub ttl: u32,
}

impl RecordFields {
    pub fn new(record_type: &str, name: &str, content: &str, proxied: bool, ttl: u32) -> Self {
        let record_type = record_type.trim().to_ascii_uppercase();
        let content = if matches!(record_type.as_str(), "CNAME" | "NS" | "PTR" | "MX") {
            normalize_host(content)
        } else {
            content.trim().to_string()
        };
        RecordFields {
            name: normalize_host(name),
            content,
            ttl: if proxied || ttl <= 1 { 1 } else { ttl },
            proxied,
            record_type,
        }
    }

    /// The proxied CNAME a public hostname needs.
    pub fn tunnel_cname(hostname: &str, target: &str) -> Self {
        RecordFields::new("CNAME", hostname, target, true, 1)
    }

    pub fn of(r: &DnsRecord) -> Self {
        RecordFields::new(
            r.record_type.as_str(),
            &r.name,
            &r.content,
            r.proxied,
            r.ttl,
        )
    }

    /// `CNAME a.example.com → t.cfargotunnel.com (proxied)`
    pub fn describe(&self) -> String {
        format!(
            "{:<5} {} → {} ({})",
            self.record_type,
            self.name,
            self.content,
            self.mode()
        )
    }

    fn mode(&self) -> String {
        match (self.proxied, self.ttl) {
            (true, _) => "proxied".into(),
            (false, 1) => "DNS only, TTL auto".into(),
            (false, t) => format!("DNS only, TTL {t}"),
        }
    }

    fn spec(&self, comment: Option<&str>) -> DnsRecordSpec {
        let mut spec = DnsRecordSpec {
            record_type: RecordType::parse(&self.record_type),
            name: self.name.clone(),
            content: self.content.clone(),
            ttl: self.ttl,
            proxied: self.proxied,
            comment: None,
            tags: Vec::new(),
            priority: None,
        };
        spec.comment = comment.map(str::to_string);
        spec
    }
}

/// A record as observed, or as the inventory remembers it (without the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSnapshot {
    #[serde(flatten)]
    pub fields: RecordFields,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A record in the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRecord {
    pub id: String,
    #[serde(flatten)]
    pub snapshot: RecordSnapshot,
}

impl ObservedRecord {
    pub fn of(r: &DnsRecord) -> Self {
        ObservedRecord {
            id: r.id.clone(),
            snapshot: RecordSnapshot {
                fields: RecordFields::of(r),
                comment: r.comment.clone().filter(|c| !c.is_empty()),
            },
        }
    }

    fn has_marker(&self) -> bool {
        self.snapshot
            .comment
            .as_deref()
            .is_some_and(|c| c.contains(OWNER_COMMENT))
    }
}

/// What a create or update leaves behind; the `after` of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    #[serde(flatten)]
    pub snapshot: RecordSnapshot,
    /// The change takes over an existing, unmanaged record.
    #[serde(default)]
    pub adopted: bool,
}

/// One record the desired state asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRecord {
    pub project: String,
    pub service: String,
    pub fields: RecordFields,
}

/// The record every service hostname needs, ordered by hostname.
/// The records at a name that the supervisor does not own (in the way of a desired record, or
/// candidates for adoption).
pub(crate) fn unowned<'a>(
    at_name: Option<&Vec<&'a ObservedRecord>>,
    owned_ids: &HashSet<&str>,
) -> Vec<&'a ObservedRecord> {
    at_name
        .map(|rs| {
            rs.iter()
                .filter(|r| !owned_ids.contains(r.id.as_str()))
                .copied()
                .collect()
        })
        .unwrap_or_default()
}

pub fn desired_records(desired: &Desired) -> Vec<DesiredRecord> {
    let Some(cf) = &desired.cloudflare else {
        return Vec::new();
    };
    let mut out: Vec<DesiredRecord> = desired
        .projects
        .values()
        .flat_map(|p| {
            p.services.iter().filter_map(move |s| {
                s.hostname.as_ref().map(|h| DesiredRecord {
                    project: p.name.clone(),
                    service: s.name.clone(),
                    fields: RecordFields::tunnel_cname(h, &cf.tunnel.target),
                })
            })
        })
        .collect();
    out.sort_by(|a, b| a.fields.name.cmp(&b.fields.name));
    out
}

/// An inventory entry of this provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedRecord {
    pub hostname: String,
    /// `None` while pending: written before the create call, filled in after it.
    pub id: Option<String>,
    /// What was last applied (or found, when adopted).
    pub last: Option<RecordSnapshot>,
    pub adopted: bool,
    /// The project it was created for (kept for changes to records no longer desired).
    pub project: Option<String>,
}

impl ManagedRecord {
    pub fn from_object(o: &ManagedObject) -> Option<Self> {
        let hostname = hostname_of(&o.address)?.to_string();
        Some(ManagedRecord {
            hostname,
            id: o.external_id.clone(),
            last: serde_json::from_value(o.attributes.0.clone()).ok(),
            adopted: o.adopted,
            project: o
                .attributes
                .0
                .get("project")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// What the provider observes: the zone's records and the inventory.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub records: Vec<ObservedRecord>,
    pub managed: Vec<ManagedRecord>,
}

/// Desired records against the zone → changes (deletes, then updates, then creates, each by
/// hostname), errors for unmanaged records in the way. Pure.
pub fn diff(
    wanted: &[DesiredRecord],
    observed: &Observed,
    adopt: &BTreeSet<String>,
) -> ProviderPlan {
    let mut out = ProviderPlan::default();
    let by_id: HashMap<&str, &ObservedRecord> = observed
        .records
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let mut by_name: HashMap<&str, Vec<&ObservedRecord>> = HashMap::new();
    for r in &observed.records {
        by_name
            .entry(r.snapshot.fields.name.as_str())
            .or_default()
            .push(r);
    }
    let inventory: HashMap<&str, &ManagedRecord> = observed
        .managed
        .iter()
        .map(|m| (m.hostname.as_str(), m))
        .collect();
    let owned_ids: HashSet<&str> = observed
        .managed
        .iter()
        .filter_map(|m| m.id.as_deref())
        .collect();
    // The record a managed entry stands for: by id, or — pending after a crash — the marked CNAME at
    // its name.
    let resolve = |m: &ManagedRecord| -> Option<&ObservedRecord> {
        match &m.id {
            Some(id) => by_id.get(id.as_str()).copied(),
            None => by_name.get(m.hostname.as_str()).and_then(|rs| {
                rs.iter()
                    .find(|r| r.snapshot.fields.record_type == "CNAME" && r.has_marker())
                    .copied()
            }),
        }
    };
    let desired_names: HashSet<&str> = wanted.iter().map(|d| d.fields.name.as_str()).collect();

    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut creates = Vec::new();
    for d in wanted {
        let name = d.fields.name.as_str();
        let addr = address(name);
        out.resources.push(Resource {
            address: addr.clone(),
            provider: NAME.into(),
            project: Some(d.project.clone()),
        });
        let managed = inventory.get(name).copied();
        let current = managed.and_then(resolve);
        let change =
            |action, before: Option<&ObservedRecord>, after: Planned, summary: String| Change {
                address: addr.clone(),
                provider: NAME.into(),
                action,
                project: Some(d.project.clone()),
                before: before.map(|b| serde_json::to_value(b).unwrap_or_default()),
                after: Some(json!(after)),
                summary,
                drifted: false,
                disruptive: false,
                diff: None,
                requires: Vec::new(),
            };
        match (managed, current) {
            (Some(m), Some(cur)) => {
                out.managed += 1;
                let fields_differ = cur.snapshot.fields != d.fields;
                // A record the supervisor created keeps its marker; an adopted one gets it with the
                // first real update.
                let comment = if fields_differ || !m.adopted {
                    marked_comment(cur.snapshot.comment.as_deref())
                } else {
                    cur.snapshot.comment.clone()
                };
                if fields_differ || comment != cur.snapshot.comment {
                    let after = Planned {
                        snapshot: RecordSnapshot {
                            fields: d.fields.clone(),
                            comment: comment.clone(),
                        },
                        adopted: m.adopted,
                    };
                    let mut c = change(
                        Action::Update,
                        Some(cur),
                        after,
                        format!(
                            "{:<5} {}: {}",
                            d.fields.record_type,
                            name,
                            differences(&cur.snapshot, &d.fields, comment.as_deref())
                        ),
                    );
                    c.drifted = m.last.as_ref().is_some_and(|last| *last != cur.snapshot);
                    updates.push(c);
                } else if m.id.is_none() {
                    // Claimed by its marker after a crash between the create call and the inventory
                    // write: record its id and snapshot (nothing is sent to Cloudflare), so drift is
                    // told from desired changes again and the inventory is what an uninterrupted run
                    // leaves.
                    let after = Planned {
                        snapshot: cur.snapshot.clone(),
                        adopted: m.adopted,
                    };
                    updates.push(change(
                        Action::Update,
                        Some(cur),
                        after,
                        format!(
                            "{}: record id {} (created by an interrupted apply); the record is not changed",
                            d.fields.describe(),
                            cur.id
                        ),
                    ));
                }
            }
            (managed, _) => {
                let in_the_way = unowned(by_name.get(name), &owned_ids);
                if in_the_way.is_empty() {
                    let after = Planned {
                        snapshot: RecordSnapshot {
                            fields: d.fields.clone(),
                            comment: Some(OWNER_COMMENT.into()),
                        },
                        adopted: false,
                    };
                    let gone = managed.is_some_and(|m| m.id.is_some());
                    let mut c = change(
                        Action::Create,
                        None,
                        after,
                        if gone {
                            format!("{} (deleted outside supervisor)", d.fields.describe())
                        } else {
                            d.fields.describe()
                        },
                    );
                    c.drifted = gone;
                    creates.push(c);
                } else if adopt.contains(name) {
                    match adoptable(&in_the_way) {
                        Ok(found) => {
                            let fields_differ = found.snapshot.fields != d.fields;
                            let comment = if fields_differ {
                                marked_comment(found.snapshot.comment.as_deref())
                            } else {
                                found.snapshot.comment.clone()
                            };
                            let summary = if fields_differ {
                                format!(
                                    "adopt {} (id {}), then {}",
                                    found.snapshot.fields.describe(),
                                    found.id,
                                    differences(&found.snapshot, &d.fields, comment.as_deref())
                                )
                            } else {
                                format!(
                                    "adopt {} (id {}); the record is not changed",
                                    found.snapshot.fields.describe(),
                                    found.id
                                )
                            };
                            let after = Planned {
                                snapshot: RecordSnapshot {
                                    fields: d.fields.clone(),
                                    comment,
                                },
                                adopted: true,
                            };
                            updates.push(change(Action::Update, Some(found), after, summary));
                        }
                        Err(why) => out.errors.push(Notice {
                            provider: NAME.into(),
                            address: Some(addr.clone()),
                            project: Some(d.project.clone()),
                            message: format!("{addr}: cannot adopt {name}: {why}"),
                        }),
                    }
                } else {
                    out.errors.push(Notice {
                        provider: NAME.into(),
                        address: Some(addr.clone()),
                        project: Some(d.project.clone()),
                        message: format!(
                            "{addr}: {name} already has {} not managed by supervisor: {}; adopt it with `supervisor apply --adopt {name}` (or `supervisor import cloudflare`), or delete it",
                            if in_the_way.len() == 1 { "a record" } else { "records" },
                            in_the_way
                                .iter()
                                .map(|r| format!("{} (id {})", r.snapshot.fields.describe(), r.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
    }
    for m in &observed.managed {
        if desired_names.contains(m.hostname.as_str()) {
            continue;
        }
        // Gone already (deleted by hand, or by an apply interrupted before it forgot the record):
        // only the inventory entry is left to remove.
        let Some(cur) = resolve(m) else {
            deletes.push(Change {
                address: address(&m.hostname),
                provider: NAME.into(),
                action: Action::Delete,
                project: m.project.clone(),
                before: None,
                after: None,
                summary: format!("{}: the record is gone already; forget it", m.hostname),
                drifted: false,
                disruptive: false,
                diff: None,
                requires: Vec::new(),
            });
            continue;
        };
        out.managed += 1;
        deletes.push(Change {
            address: address(&m.hostname),
            provider: NAME.into(),
            action: Action::Delete,
            project: m.project.clone(),
            before: Some(serde_json::to_value(cur).unwrap_or_default()),
            after: None,
            summary: cur.snapshot.fields.describe(),
            drifted: false,
            disruptive: false,
            diff: None,
            requires: Vec::new(),
        });
    }
    for name in adopt {
        if !desired_names.contains(name.as_str()) {
            out.warnings.push(Notice {
                provider: NAME.into(),
                address: Some(address(name)),
                project: None,
                message: format!(
                    "--adopt {name}: no service has this hostname, so nothing is adopted"
                ),
            });
        }
    }
    for list in [&mut deletes, &mut updates, &mut creates] {
        list.sort_by(|a, b| a.address.cmp(&b.address));
    }
    out.changes.extend(deletes);
    out.changes.extend(updates);
    out.changes.extend(creates);
    out
}

/// The one record adoption may take over: a single A, AAAA or CNAME at the name.
fn adoptable<'a>(records: &[&'a ObservedRecord]) -> Result<&'a ObservedRecord, String> {
    match records {
        [one]
            if matches!(
                one.snapshot.fields.record_type.as_str(),
                "CNAME" | "A" | "AAAA"
            ) =>
        {
            Ok(one)
        }
        [one] => Err(format!(
            "it holds a {} record (id {}); only an A, AAAA or CNAME record can become the hostname's CNAME",
            one.snapshot.fields.record_type, one.id
        )),
        many => Err(format!(
            "it holds {} records ({}); adoption takes over exactly one A, AAAA or CNAME record — remove the others first",
            many.len(),
            many.iter()
                .map(|r| format!("{} id {}", r.snapshot.fields.record_type, r.id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `proxied false → true, content a → b`
fn differences(cur: &RecordSnapshot, want: &RecordFields, comment: Option<&str>) -> String {
    let have = &cur.fields;
    let mut parts = Vec::new();
    if have.record_type != want.record_type {
        parts.push(format!("type {} → {}", have.record_type, want.record_type));
    }
    if have.name != want.name {
        parts.push(format!("name {} → {}", have.name, want.name));
    }
    if have.content != want.content {
        parts.push(format!("content {} → {}", have.content, want.content));
    }
    if have.proxied != want.proxied {
        parts.push(format!("proxied {} → {}", have.proxied, want.proxied));
    }
    if have.ttl != want.ttl {
        let t = |t: u32| {
            if t == 1 {
                "auto".to_string()
            } else {
                t.to_string()
            }
        };
        parts.push(format!("ttl {} → {}", t(have.ttl), t(want.ttl)));
    }
    if cur.comment.as_deref() != comment {
        let c = |c: Option<&str>| format!("{:?}", c.unwrap_or(""));
        parts.push(format!(
            "comment {} → {}",
            c(cur.comment.as_deref()),
            c(comment)
        ));
    }
    parts.join(", ")
}

/// A stable digest of what matters to a plan: the records at names of interest and the inventory.
fn observation_fingerprint(wanted: &[DesiredRecord], observed: &Observed) -> String {
    let names: HashSet<&str> = wanted
        .iter()
        .map(|d| d.fields.name.as_str())
        .chain(observed.managed.iter().map(|m| m.hostname.as_str()))
        .collect();
    let ids: HashSet<&str> = observed
        .managed
        .iter()
        .filter_map(|m| m.id.as_deref())
        .collect();
    let mut relevant: Vec<&ObservedRecord> = observed
        .records
        .iter()
        .filter(|r| names.contains(r.snapshot.fields.name.as_str()) || ids.contains(r.id.as_str()))
        .collect();
    relevant.sort_by(|a, b| a.id.cmp(&b.id));
    let mut managed: Vec<(&str, Option<&str>, bool)> = observed
        .managed
        .iter()
        .map(|m| (m.hostname.as_str(), m.id.as_deref(), m.adopted))
        .collect();
    managed.sort();
    fingerprint(&(relevant, managed))
}

/// One change, as apply carries it out.
#[derive(Debug, Clone)]
enum Op {
    Create {
        address: String,
        project: Option<String>,
        planned: Planned,
    },
    Update {
        address: String,
        project: Option<String>,
        id: String,
        before: RecordSnapshot,
        planned: Planned,
    },
    Delete {
        address: String,
        id: String,
    },
    /// Only the inventory entry: its record is gone already.
    Forget {
        address: String,
    },
}

impl Op {
    fn of(change: &Change) -> Result<Op, ProviderError> {
        let planned = || payload::<Planned>(change, change.after.as_ref());
        let before = || payload::<ObservedRecord>(change, change.before.as_ref());
        Ok(match change.action {
            Action::Create => Op::Create {
                address: change.address.clone(),
                project: change.project.clone(),
                planned: planned()?,
            },
            Action::Update | Action::Replace => {
                let b = before()?;
                Op::Update {
                    address: change.address.clone(),
                    project: change.project.clone(),
                    id: b.id,
                    before: b.snapshot,
                    planned: planned()?,
                }
            }
            Action::Delete if change.before.is_none() => Op::Forget {
                address: change.address.clone(),
            },
            Action::Delete => Op::Delete {
                address: change.address.clone(),
                id: before()?.id,
            },
        })
    }

    /// Whether carrying it out calls the API (an adoption without differences only records).
    fn touches_api(&self) -> bool {
        match self {
            Op::Update {
                before, planned, ..
            } => *before != planned.snapshot,
            Op::Forget { .. } => false,
            _ => true,
        }
    }
}

pub struct DnsProvider {
    store: Arc<dyn Store>,
    api: Arc<CloudflareApi>,
    adopt: BTreeSet<String>,
}

impl DnsProvider {
    pub fn new(store: Arc<dyn Store>, api: Arc<CloudflareApi>, adopt: &[String]) -> Self {
        DnsProvider {
            store,
            api,
            adopt: adopt.iter().map(|h| normalize_host(h)).collect(),
        }
    }

    pub async fn observe(&self) -> Result<Observed, ProviderError> {
        let zone_id = self.api.zone_id().await?;
        let records = self
            .api
            .client
            .list_dns_records(&zone_id, &DnsRecordFilter::default())
            .await
            .map_err(api_error)?;
        Ok(Observed {
            records: records.iter().map(ObservedRecord::of).collect(),
            managed: self.inventory().await?,
        })
    }

    async fn inventory(&self) -> Result<Vec<ManagedRecord>, ProviderError> {
        Ok(self
            .store
            .list_managed(NAME)
            .await?
            .iter()
            .filter_map(ManagedRecord::from_object)
            .collect())
    }

    async fn remember(
        &self,
        address: &str,
        project: Option<&str>,
        id: Option<&str>,
        snapshot: &RecordSnapshot,
        adopted: bool,
    ) -> Result<(), ProviderError> {
        let mut attributes = serde_json::to_value(snapshot).unwrap_or_default();
        if let (Some(p), Some(obj)) = (project, attributes.as_object_mut()) {
            obj.insert("project".into(), json!(p));
        }
        self.store
            .upsert_managed(&ManagedObject {
                provider: NAME.into(),
                address: address.to_string(),
                external_id: id.map(str::to_string),
                attributes: sqlx::types::Json(attributes),
                adopted,
            })
            .await?;
        Ok(())
    }

    /// Records the outcome of applied operations; `created` maps a create's address to its new id.
    async fn record_outcome(
        &self,
        ops: &[Op],
        created: &HashMap<String, String>,
    ) -> Result<(), ProviderError> {
        let adopted_now: HashMap<String, bool> = self
            .store
            .list_managed(NAME)
            .await?
            .into_iter()
            .map(|o| (o.address, o.adopted))
            .collect();
        for op in ops {
            match op {
                Op::Create {
                    address,
                    project,
                    planned,
                } => {
                    let id = created.get(address).ok_or_else(|| {
                        ProviderError::Failed(format!(
                            "{address}: the API did not return the created record"
                        ))
                    })?;
                    self.remember(
                        address,
                        project.as_deref(),
                        Some(id),
                        &planned.snapshot,
                        false,
                    )
                    .await?;
                }
                Op::Update {
                    address,
                    project,
                    id,
                    planned,
                    ..
                } => {
                    let adopted =
                        planned.adopted || adopted_now.get(address).copied().unwrap_or(false);
                    self.remember(
                        address,
                        project.as_deref(),
                        Some(id),
                        &planned.snapshot,
                        adopted,
                    )
                    .await?;
                }
                Op::Delete { address, .. } | Op::Forget { address } => {
                    self.store.delete_managed(NAME, address).await?;
                }
            }
        }
        Ok(())
    }

    fn batch_for(ops: &[Op]) -> BatchRequest {
        let mut batch = BatchRequest::default();
        for op in ops.iter().filter(|o| o.touches_api()) {
            match op {
                Op::Delete { id, .. } => batch.deletes.push(BatchDelete { id: id.clone() }),
                Op::Forget { .. } => {}
                Op::Update { id, planned, .. } => batch.puts.push(BatchPut {
                    id: id.clone(),
                    record: planned
                        .snapshot
                        .fields
                        .spec(planned.snapshot.comment.as_deref()),
                }),
                Op::Create { planned, .. } => batch.posts.push(
                    planned
                        .snapshot
                        .fields
                        .spec(planned.snapshot.comment.as_deref()),
                ),
            }
        }
        batch
    }

    /// Whether the zone shows every effect of `ops`; returns the ids of created records when it does.
    fn effects_present(ops: &[Op], records: &[ObservedRecord]) -> Option<HashMap<String, String>> {
        let by_id: HashMap<&str, &ObservedRecord> =
            records.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut created = HashMap::new();
        for op in ops.iter().filter(|o| o.touches_api()) {
            match op {
                Op::Delete { id, .. } => {
                    if by_id.contains_key(id.as_str()) {
                        return None;
                    }
                }
                Op::Forget { .. } => {}
                Op::Update { id, planned, .. } => {
                    if by_id.get(id.as_str()).map(|r| &r.snapshot) != Some(&planned.snapshot) {
                        return None;
                    }
                }
                Op::Create {
                    address, planned, ..
                } => {
                    let found = records.iter().find(|r| r.snapshot == planned.snapshot)?;
                    created.insert(address.clone(), found.id.clone());
                }
            }
        }
        Some(created)
    }

    /// Sends one batch; on a lost answer re-reads the zone and resends only when nothing happened.
    async fn send_batch(
        &self,
        zone_id: &str,
        ops: &[Op],
    ) -> Result<HashMap<String, String>, BatchFailure> {
        let batch = Self::batch_for(ops);
        let creates: Vec<&String> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Create { address, .. } => Some(address),
                _ => None,
            })
            .collect();
        let mut resent = false;
        loop {
            match self.api.client.batch_dns_records(zone_id, &batch).await {
                Ok(result) => {
                    let mut created = HashMap::new();
                    for (address, record) in creates.iter().zip(&result.posts) {
                        created.insert((*address).clone(), record.id.clone());
                    }
                    return Ok(created);
                }
                Err(e) if e.is_outcome_unknown() => {
                    let records = self
                        .observe()
                        .await
                        .map_err(|re| {
                            BatchFailure::Unknown(ProviderError::Failed(format!(
                                "{e}; reading the zone again to find out failed too: {re}"
                            )))
                        })?
                        .records;
                    if let Some(created) = Self::effects_present(ops, &records) {
                        tracing::info!("the batch whose answer was lost had been applied");
                        return Ok(created);
                    }
                    if resent {
                        return Err(BatchFailure::Unknown(api_error(e)));
                    }
                    // One transaction: none of it happened, so sending it again is safe.
                    tracing::warn!(
                        "the batch whose answer was lost was not applied; sending it again"
                    );
                    resent = true;
                }
                Err(e) if batch_unavailable(&e) => return Err(BatchFailure::Unavailable(e)),
                Err(e) => return Err(BatchFailure::Rejected(api_error(e))),
            }
        }
    }

    /// Single-record calls, in the batch's order; stops at the first failure, having recorded what
    /// succeeded.
    async fn apply_singly(&self, zone_id: &str, ops: &[Op]) -> Result<(), ProviderError> {
        let mut ordered: Vec<&Op> = ops.iter().collect();
        ordered.sort_by_key(|o| match o {
            Op::Delete { .. } | Op::Forget { .. } => 0,
            Op::Update { .. } => 1,
            Op::Create { .. } => 2,
        });
        let client = &self.api.client;
        for op in ordered {
            let mut created = HashMap::new();
            if op.touches_api() {
                match op {
                    Op::Delete { id, .. } => {
                        let _: Deletion = client
                            .delete_dns_record(zone_id, id)
                            .await
                            .map_err(api_error)?;
                    }
                    Op::Forget { .. } => {}
                    Op::Update { id, planned, .. } => {
                        let spec = planned
                            .snapshot
                            .fields
                            .spec(planned.snapshot.comment.as_deref());
                        client
                            .overwrite_dns_record(zone_id, id, &spec)
                            .await
                            .map_err(api_error)?;
                    }
                    Op::Create {
                        address, planned, ..
                    } => {
                        let id = self.create_one(zone_id, address, planned).await?;
                        created.insert(address.clone(), id);
                    }
                }
            }
            self.record_outcome(std::slice::from_ref(op), &created)
                .await?;
        }
        Ok(())
    }

    /// `POST` one record; on a lost answer looks for it before trying once more.
    async fn create_one(
        &self,
        zone_id: &str,
        address: &str,
        planned: &Planned,
    ) -> Result<String, ProviderError> {
        let spec = planned
            .snapshot
            .fields
            .spec(planned.snapshot.comment.as_deref());
        let client = &self.api.client;
        let mut resent = false;
        loop {
            match client.create_dns_record(zone_id, &spec).await {
                Ok(r) => return Ok(r.id),
                Err(e) if e.is_outcome_unknown() => {
                    let filter = DnsRecordFilter {
                        name: Some(planned.snapshot.fields.name.clone()),
                        ..Default::default()
                    };
                    let found = client
                        .list_dns_records(zone_id, &filter)
                        .await
                        .map_err(api_error)?
                        .iter()
                        .map(ObservedRecord::of)
                        .find(|r| r.snapshot == planned.snapshot);
                    if let Some(r) = found {
                        return Ok(r.id);
                    }
                    if resent {
                        return Err(api_error(e).context(address.to_string()));
                    }
                    resent = true;
                }
                Err(e) => return Err(api_error(e).context(address.to_string())),
            }
        }
    }
}

enum BatchFailure {
    /// The endpoint is not there; nothing was applied.
    Unavailable(CloudflareError),
    /// Rejected: one transaction, so nothing was applied.
    Rejected(ProviderError),
    /// Whether it was applied could not be found out.
    Unknown(ProviderError),
}

/// The batch endpoint is missing (an older API, a proxy): 404/405 that is not about a record.
fn batch_unavailable(e: &CloudflareError) -> bool {
    let CloudflareError::Api(api) = e else {
        return false;
    };
    matches!(api.status(), Some(404 | 405)) && !api.has_code(RECORD_NOT_FOUND)
}

#[async_trait]
impl Provider for DnsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        Some(format!("zone {}", self.api.zone))
    }

    async fn plan(
        &self,
        desired: &Desired,
        _earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let wanted = desired_records(desired);
        let observed = self.observe().await?;
        let mut plan = diff(&wanted, &observed, &self.adopt);
        plan.fingerprint = observation_fingerprint(&wanted, &observed);
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        self.apply_batch(std::slice::from_ref(change)).await
    }

    fn batch_size(&self) -> usize {
        BATCH_LIMIT
    }

    async fn apply_batch(&self, changes: &[Change]) -> Result<(), ProviderError> {
        let ops = changes.iter().map(Op::of).collect::<Result<Vec<_>, _>>()?;
        let zone_id = self.api.zone_id().await?;
        // Intent first: a crash after the API call leaves marked records the next plan claims.
        let mut pending = Vec::new();
        for op in &ops {
            if let Op::Create {
                address,
                project,
                planned,
            } = op
            {
                self.remember(address, project.as_deref(), None, &planned.snapshot, false)
                    .await?;
                pending.push(address.clone());
            }
        }
        if !ops.iter().any(Op::touches_api) {
            return self.record_outcome(&ops, &HashMap::new()).await;
        }
        match self.send_batch(&zone_id, &ops).await {
            Ok(created) => self.record_outcome(&ops, &created).await,
            Err(BatchFailure::Unavailable(e)) => {
                tracing::warn!(
                    "the DNS batch endpoint is not available ({e}); applying record by record"
                );
                self.apply_singly(&zone_id, &ops).await
            }
            Err(BatchFailure::Rejected(e)) => {
                // One transaction: nothing was created, so the pending entries go too.
                for address in &pending {
                    self.store.delete_managed(NAME, address).await?;
                }
                Err(e)
            }
            // Pending entries stay: the next plan claims whatever was created (it carries the marker).
            Err(BatchFailure::Unknown(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "0b5a9bd6-4c3a-4b87-9c79-3b3f5f0c6a11.cfargotunnel.com";

    fn want(hosts: &[&str]) -> Vec<DesiredRecord> {
        hosts
            .iter()
            .map(|h| DesiredRecord {
                project: "shop".into(),
                service: h.split('.').next().unwrap().into(),
                fields: RecordFields::tunnel_cname(h, TARGET),
            })
            .collect()
    }

    fn record(
        id: &str,
        t: &str,
        name: &str,
        content: &str,
        proxied: bool,
        ttl: u32,
        comment: Option<&str>,
    ) -> ObservedRecord {
        ObservedRecord {
            id: id.into(),
            snapshot: RecordSnapshot {
                fields: RecordFields::new(t, name, content, proxied, ttl),
                comment: comment.map(str::to_string),
            },
        }
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

    /// Applies a plan to the observation the way Cloudflare and the inventory would.
    fn apply_to(obs: &mut Observed, plan: &ProviderPlan, next_id: &mut u32) {
        for c in &plan.changes {
            let host = hostname_of(&c.address).unwrap().to_string();
            match Op::of(c).unwrap() {
                Op::Create {
                    planned, project, ..
                } => {
                    *next_id += 1;
                    let id = format!("r{next_id}");
                    obs.records.push(ObservedRecord {
                        id: id.clone(),
                        snapshot: planned.snapshot.clone(),
                    });
                    obs.managed.retain(|m| m.hostname != host);
                    obs.managed.push(ManagedRecord {
                        hostname: host,
                        id: Some(id),
                        last: Some(planned.snapshot),
                        adopted: false,
                        project,
                    });
                }
                Op::Update {
                    id,
                    planned,
                    project,
                    ..
                } => {
                    let r = obs.records.iter_mut().find(|r| r.id == id).unwrap();
                    r.snapshot = planned.snapshot.clone();
                    let adopted = planned.adopted
                        || obs.managed.iter().any(|m| m.hostname == host && m.adopted);
                    obs.managed.retain(|m| m.hostname != host);
                    obs.managed.push(ManagedRecord {
                        hostname: host,
                        id: Some(id),
                        last: Some(planned.snapshot),
                        adopted,
                        project,
                    });
                }
                Op::Delete { id, .. } => {
                    obs.records.retain(|r| r.id != id);
                    obs.managed.retain(|m| m.hostname != host);
                }
                Op::Forget { .. } => {
                    obs.managed.retain(|m| m.hostname != host);
                }
            }
        }
    }

    #[test]
    fn new_hostnames_become_proxied_cnames_and_a_second_plan_is_empty() {
        let mut obs = Observed {
            records: vec![record(
                "u1",
                "A",
                "example.com",
                "192.0.2.1",
                false,
                300,
                None,
            )],
            managed: vec![],
        };
        let wanted = want(&["web.example.com", "API.example.com."]);
        let plan = diff(&wanted, &obs, &BTreeSet::new());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(
            summaries(&plan),
            [
                format!("+ dns/api.example.com CNAME api.example.com → {TARGET} (proxied)"),
                format!("+ dns/web.example.com CNAME web.example.com → {TARGET} (proxied)"),
            ]
        );
        assert_eq!(
            plan.changes[0].after.as_ref().unwrap()["comment"],
            OWNER_COMMENT
        );
        assert_eq!(plan.managed, 0);
        let mut n = 0;
        apply_to(&mut obs, &plan, &mut n);
        let again = diff(&wanted, &obs, &BTreeSet::new());
        assert!(again.changes.is_empty(), "{:?}", summaries(&again));
        assert_eq!(again.managed, 2);
        assert_eq!(obs.records.len(), 3, "the unmanaged A record is untouched");
    }

    #[test]
    fn normalisation_ignores_case_trailing_dots_and_ttl_of_proxied_records() {
        let wanted = want(&["web.example.com"]);
        let obs = Observed {
            // As the dashboard may show it: upper case target with a dot, a TTL on a proxied record.
            records: vec![record(
                "r1",
                "cname",
                "Web.Example.com.",
                &format!("{}.", TARGET.to_uppercase()),
                true,
                300,
                Some(OWNER_COMMENT),
            )],
            managed: vec![ManagedRecord {
                hostname: "web.example.com".into(),
                id: Some("r1".into()),
                last: None,
                adopted: false,
                project: None,
            }],
        };
        assert!(diff(&wanted, &obs, &BTreeSet::new()).changes.is_empty());
        assert_eq!(
            RecordFields::new("A", "x.example.com", "192.0.2.1", false, 0).ttl,
            1,
            "0 and 1 are automatic"
        );
    }

    #[test]
    fn removed_hostnames_delete_only_managed_records() {
        let wanted = want(&["a.example.com", "b.example.com"]);
        let mut obs = Observed {
            records: vec![record(
                "u1",
                "CNAME",
                "blog.example.com",
                "elsewhere.net",
                false,
                1,
                None,
            )],
            managed: vec![],
        };
        let mut n = 0;
        let first = diff(&wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &first, &mut n);
        let plan = diff(&want(&["a.example.com"]), &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [format!(
                "- dns/b.example.com CNAME b.example.com → {TARGET} (proxied)"
            )]
        );
        assert_eq!(plan.managed, 2, "for the mass-delete rule");
        apply_to(&mut obs, &plan, &mut n);
        let names: Vec<&str> = obs
            .records
            .iter()
            .map(|r| r.snapshot.fields.name.as_str())
            .collect();
        assert_eq!(names, ["blog.example.com", "a.example.com"]);
        // Removing every hostname never touches the unmanaged record.
        let all = diff(&[], &obs, &BTreeSet::new());
        assert_eq!(all.changes.len(), 1);
        assert_eq!(all.changes[0].address, "dns/a.example.com");
    }

    #[test]
    fn an_unmanaged_record_in_the_way_is_an_error_until_adopted() {
        let wanted = want(&["api.example.com"]);
        let mut obs = Observed {
            records: vec![record(
                "u1",
                "CNAME",
                "api.example.com",
                "old-host.example.net",
                false,
                300,
                Some("hand-made"),
            )],
            managed: vec![],
        };
        let plan = diff(&wanted, &obs, &BTreeSet::new());
        assert!(plan.changes.is_empty());
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(
            plan.errors[0].message,
            "dns/api.example.com: api.example.com already has a record not managed by supervisor: CNAME api.example.com → old-host.example.net (DNS only, TTL 300) (id u1); adopt it with `supervisor apply --adopt api.example.com` (or `supervisor import cloudflare`), or delete it"
        );
        let adopt: BTreeSet<String> = ["api.example.com".to_string()].into();
        let plan = diff(&wanted, &obs, &adopt);
        assert!(plan.errors.is_empty());
        assert_eq!(
            summaries(&plan),
            [format!(
                "~ dns/api.example.com adopt CNAME api.example.com → old-host.example.net (DNS only, TTL 300) (id u1), then content old-host.example.net → {TARGET}, proxied false → true, ttl 300 → auto, comment \"hand-made\" → \"hand-made; managed-by: supervisor\""
            )]
        );
        let mut n = 0;
        apply_to(&mut obs, &plan, &mut n);
        assert_eq!(obs.records.len(), 1, "adopted in place, not duplicated");
        assert!(obs.managed[0].adopted);
        assert!(diff(&wanted, &obs, &BTreeSet::new()).changes.is_empty());
    }

    #[test]
    fn adopting_a_matching_record_changes_nothing_but_the_inventory() {
        let wanted = want(&["api.example.com"]);
        let mut obs = Observed {
            records: vec![record(
                "u1",
                "CNAME",
                "api.example.com",
                TARGET,
                true,
                1,
                Some("ops"),
            )],
            managed: vec![],
        };
        let adopt: BTreeSet<String> = ["api.example.com".to_string()].into();
        let plan = diff(&wanted, &obs, &adopt);
        assert_eq!(
            summaries(&plan),
            [format!(
                "~ dns/api.example.com adopt CNAME api.example.com → {TARGET} (proxied) (id u1); the record is not changed"
            )]
        );
        let op = Op::of(&plan.changes[0]).unwrap();
        assert!(!op.touches_api());
        let mut n = 0;
        apply_to(&mut obs, &plan, &mut n);
        assert_eq!(
            obs.records[0].snapshot.comment.as_deref(),
            Some("ops"),
            "comment untouched"
        );
        assert!(
            diff(&wanted, &obs, &BTreeSet::new()).changes.is_empty(),
            "an adopted record's comment is its owner's"
        );
    }

    #[test]
    fn adoption_refuses_ambiguous_names() {
        let wanted = want(&["api.example.com"]);
        let obs = Observed {
            records: vec![
                record("a", "A", "api.example.com", "192.0.2.1", false, 1, None),
                record(
                    "b",
                    "AAAA",
                    "api.example.com",
                    "2001:db8::1",
                    false,
                    1,
                    None,
                ),
            ],
            managed: vec![],
        };
        let adopt: BTreeSet<String> = ["api.example.com".to_string()].into();
        let plan = diff(&wanted, &obs, &adopt);
        assert!(plan.changes.is_empty());
        assert!(
            plan.errors[0]
                .message
                .contains("it holds 2 records (A id a, AAAA id b)"),
            "{}",
            plan.errors[0].message
        );
        let txt = Observed {
            records: vec![record(
                "t",
                "TXT",
                "api.example.com",
                "v=spf1",
                false,
                1,
                None,
            )],
            managed: vec![],
        };
        assert!(
            diff(&wanted, &txt, &adopt).errors[0]
                .message
                .contains("it holds a TXT record")
        );
        let unknown: BTreeSet<String> = ["nope.example.com".to_string()].into();
        assert!(
            diff(&wanted, &Observed::default(), &unknown).warnings[0]
                .message
                .contains("no service has this hostname")
        );
    }

    #[test]
    fn dashboard_edits_and_deletions_are_drift() {
        let wanted = want(&["a.example.com", "b.example.com"]);
        let mut obs = Observed::default();
        let mut n = 0;
        let first = diff(&wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &first, &mut n);
        // Someone turns the proxy off on a and deletes b.
        obs.records[0].snapshot.fields.proxied = false;
        obs.records
            .retain(|r| r.snapshot.fields.name != "b.example.com");
        let plan = diff(&wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ dns/a.example.com CNAME a.example.com: proxied false → true [drifted]"
                    .to_string(),
                format!(
                    "+ dns/b.example.com CNAME b.example.com → {TARGET} (proxied) (deleted outside supervisor) [drifted]"
                ),
            ]
        );
        apply_to(&mut obs, &plan, &mut n);
        assert!(diff(&wanted, &obs, &BTreeSet::new()).changes.is_empty());
        // A desired-state change is not drift.
        let moved: Vec<DesiredRecord> = wanted
            .iter()
            .map(|d| DesiredRecord {
                fields: RecordFields::tunnel_cname(&d.fields.name, "other.example.net"),
                ..d.clone()
            })
            .collect();
        let plan = diff(&moved, &obs, &BTreeSet::new());
        assert_eq!(plan.changes.len(), 2);
        assert!(
            plan.changes
                .iter()
                .all(|c| !c.drifted && c.action == Action::Update)
        );
    }

    #[test]
    fn a_removed_marker_on_our_record_is_put_back() {
        let wanted = want(&["a.example.com"]);
        let mut obs = Observed::default();
        let mut n = 0;
        let first = diff(&wanted, &obs, &BTreeSet::new());
        apply_to(&mut obs, &first, &mut n);
        obs.records[0].snapshot.comment = None;
        let plan = diff(&wanted, &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [
                "~ dns/a.example.com CNAME a.example.com: comment \"\" → \"managed-by: supervisor\" [drifted]"
            ]
        );
    }

    #[test]
    fn a_pending_entry_claims_its_marked_record_after_a_crash() {
        let wanted = want(&["a.example.com"]);
        let obs = Observed {
            records: vec![record(
                "r9",
                "CNAME",
                "a.example.com",
                TARGET,
                true,
                1,
                Some(OWNER_COMMENT),
            )],
            managed: vec![ManagedRecord {
                hostname: "a.example.com".into(),
                id: None,
                last: None,
                adopted: false,
                project: Some("shop".into()),
            }],
        };
        let plan = diff(&wanted, &obs, &BTreeSet::new());
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        // The claim is recorded (inventory only: the record is not sent again).
        assert_eq!(
            summaries(&plan),
            [format!(
                "~ dns/a.example.com CNAME a.example.com → {TARGET} (proxied): record id r9 (created by an interrupted apply); the record is not changed"
            )]
        );
        let op = Op::of(&plan.changes[0]).unwrap();
        assert!(!op.touches_api());
        // Once recorded, nothing is left to do.
        let mut recorded = obs.clone();
        recorded.managed[0].id = Some("r9".into());
        recorded.managed[0].last = Some(obs.records[0].snapshot.clone());
        assert!(
            diff(&wanted, &recorded, &BTreeSet::new())
                .changes
                .is_empty()
        );
        // Without the marker the record is someone else's.
        let mut foreign = obs.clone();
        foreign.records[0].snapshot.comment = None;
        assert_eq!(diff(&wanted, &foreign, &BTreeSet::new()).errors.len(), 1);
        // Removed from state while pending: the claimed record is deleted.
        let plan = diff(&[], &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            [format!(
                "- dns/a.example.com CNAME a.example.com → {TARGET} (proxied)"
            )]
        );
    }

    #[test]
    fn an_entry_whose_record_is_gone_is_forgotten_without_calling_the_api() {
        // The record was deleted (by hand, or by an apply killed before it forgot the record).
        let obs = Observed {
            records: Vec::new(),
            managed: vec![ManagedRecord {
                hostname: "old.example.com".into(),
                id: Some("r1".into()),
                last: None,
                adopted: false,
                project: Some("shop".into()),
            }],
        };
        let plan = diff(&[], &obs, &BTreeSet::new());
        assert_eq!(
            summaries(&plan),
            ["- dns/old.example.com old.example.com: the record is gone already; forget it"]
        );
        let op = Op::of(&plan.changes[0]).unwrap();
        assert!(!op.touches_api());
        assert_eq!(DnsProvider::batch_for(&[op]), BatchRequest::default());
    }

    #[test]
    fn lost_batch_answers_are_checked_against_the_zone() {
        let planned = Planned {
            snapshot: RecordSnapshot {
                fields: RecordFields::tunnel_cname("a.example.com", TARGET),
                comment: Some(OWNER_COMMENT.into()),
            },
            adopted: false,
        };
        let ops = vec![
            Op::Create {
                address: "dns/a.example.com".into(),
                project: None,
                planned: planned.clone(),
            },
            Op::Delete {
                address: "dns/b.example.com".into(),
                id: "old".into(),
            },
        ];
        let before = vec![record(
            "old",
            "CNAME",
            "b.example.com",
            TARGET,
            true,
            1,
            Some(OWNER_COMMENT),
        )];
        assert_eq!(DnsProvider::effects_present(&ops, &before), None);
        let after = vec![ObservedRecord {
            id: "new".into(),
            snapshot: planned.snapshot,
        }];
        assert_eq!(
            DnsProvider::effects_present(&ops, &after),
            Some(HashMap::from([(
                "dns/a.example.com".to_string(),
                "new".to_string()
            )]))
        );
    }

    #[test]
    fn batches_carry_creates_puts_and_deletes_but_not_pure_adoptions() {
        let fields = RecordFields::tunnel_cname("a.example.com", TARGET);
        let snap = RecordSnapshot {
            fields: fields.clone(),
            comment: Some("x".into()),
        };
        let ops = vec![
            Op::Update {
                address: "dns/a.example.com".into(),
                project: None,
                id: "1".into(),
                before: snap.clone(),
                planned: Planned {
                    snapshot: snap,
                    adopted: true,
                },
            },
            Op::Delete {
                address: "dns/b.example.com".into(),
                id: "2".into(),
            },
            Op::Create {
                address: "dns/c.example.com".into(),
                project: None,
                planned: Planned {
                    snapshot: RecordSnapshot {
                        fields: RecordFields::tunnel_cname("c.example.com", TARGET),
                        comment: Some(OWNER_COMMENT.into()),
                    },
                    adopted: false,
                },
            },
        ];
        let b = DnsProvider::batch_for(&ops);
        assert_eq!((b.deletes.len(), b.puts.len(), b.posts.len()), (1, 0, 1));
        assert_eq!(b.posts[0].comment.as_deref(), Some(OWNER_COMMENT));
        assert!(b.posts[0].proxied);
    }
}
