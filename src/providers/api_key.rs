//! Google Cloud API keys declared by projects (`api_keys:` in a project file), created through the
//! API Keys API with their key strings stored straight into the vault.
//!
//! Addresses: `api_key/<project>/<name>`.
//!
//! **The key string** goes from the API client (a `SecretString`) into the vault ([`SecretSink`],
//! audited under the apply run) and nowhere else: not into a plan, a payload, the journal, the
//! inventory, a log line or an error.
//!
//! **Ownership and crash safety.** Every key the supervisor makes has a key id it chooses,
//! `sv-<name>-<hash of the address>-<generation>`, and carries the annotations
//! `managed-by: supervisor` and `supervisor-address: <address>`. Before the create call, the
//! inventory entry is written with the key id and state `creating`; after the operation, `created`;
//! after the vault write, `stored`. So a crash at any point leaves an entry naming the key:
//! - before or during creation: the next plan finds no key with that id and creates it again (same
//!   id, so never a second key; a creation still running answers 409, and the key is then read);
//! - after creation, before the vault write: the next plan finds the key and plans "store the key
//!   string" (fetched again with `getKeyString`);
//! - after the vault write: nothing is left.
//!
//! No key is ever created without an inventory entry first, so none can be orphaned. A lost answer to
//! the create call is never resent blindly: the key is read by its id first.
//!
//! **Changes.** The API Keys contract the supervisor follows has no update, so a changed display name
//! or service list is a replacement (`-/+`): a new generation is created and stored, then the old key
//! is deleted (the entry remembers it until it is gone). A changed `store` path moves the secret
//! (fetched again from the API). A secret deleted from the vault is stored again (drift).
//! Removing a declaration deletes the key — only keys in the inventory — and its secret. Deleted
//! keys stay recoverable in Google Cloud for 30 days, so their ids are never reused: a new
//! generation is taken.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::gcloud::{GoogleCloud, google_error};
use crate::clients::google::apikeys::{V2ApiTarget, V2Key, V2Restrictions, parent};
use crate::clients::google::operations::wait_key_operation;
use crate::engine::{
    Action, Change, Notice, Outputs, Provider, ProviderError, ProviderPlan, Resource, RunContext,
    fingerprint, payload,
};
use crate::secrets::SecretSink;
use crate::state::Desired;
use crate::store::{ManagedObject, Store};

pub const NAME: &str = "api_key";

/// The annotation marking keys the supervisor created.
pub const MANAGED_BY: (&str, &str) = ("managed-by", "supervisor");
pub const ADDRESS_ANNOTATION: &str = "supervisor-address";

const DISPLAY_NAME_MAX: usize = 63;

pub fn address(project: &str, name: &str) -> String {
    format!("{NAME}/{project}/{name}")
}

/// What a key should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub project: String,
    pub name: String,
    pub gcp_project: String,
    pub display_name: String,
    /// Services the key may call, lower case, sorted (empty: unrestricted).
    pub services: Vec<String>,
    /// The vault path of the key string.
    pub store: String,
}

impl KeySpec {
    pub fn address(&self) -> String {
        address(&self.project, &self.name)
    }

    /// `sv-<name>-<8 hex of the address>-`: the key ids of this declaration, one per generation.
    pub fn key_id_prefix(&self) -> String {
        let name: String = self.name.chars().take(40).collect();
        let digest = Sha256::digest(self.address().as_bytes());
        format!(
            "sv-{}-{}-",
            name.trim_end_matches('-'),
            &hex::encode(digest)[..8]
        )
    }

    fn restrictions(&self) -> Option<V2Restrictions> {
        (!self.services.is_empty()).then(|| V2Restrictions {
            api_targets: self
                .services
                .iter()
                .map(|s| V2ApiTarget {
                    service: s.clone(),
                    methods: Vec::new(),
                })
                .collect(),
            ..V2Restrictions::default()
        })
    }

    fn body(&self) -> V2Key {
        V2Key {
            display_name: Some(self.display_name.clone()),
            restrictions: self.restrictions(),
            annotations: [
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (ADDRESS_ANNOTATION.to_string(), self.address()),
            ]
            .into(),
            ..V2Key::default()
        }
    }

    fn describe(&self) -> String {
        let scope = if self.services.is_empty() {
            "unrestricted".to_string()
        } else {
            format!("restricted to {}", self.services.join(", "))
        };
        format!(
            "key \"{}\" in {} ({scope})",
            self.display_name, self.gcp_project
        )
    }
}

/// The keys the desired state declares, by address.
pub fn desired_keys(desired: &Desired) -> BTreeMap<String, KeySpec> {
    let mut out = BTreeMap::new();
    for p in desired.projects.values() {
        for k in &p.api_keys {
            let mut services: Vec<String> = k.restrict_apis.clone();
            services.sort();
            services.dedup();
            let display_name = k.display_name.clone().unwrap_or_else(|| {
                format!("{}/{}", p.name, k.name)
                    .chars()
                    .take(DISPLAY_NAME_MAX)
                    .collect()
            });
            let spec = KeySpec {
                project: p.name.clone(),
                name: k.name.clone(),
                gcp_project: k.gcp_project.clone(),
                display_name,
                services,
                store: k.store.clone(),
            };
            out.insert(spec.address(), spec);
        }
    }
    out
}

/// How far a key got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// The entry is written; the create call may or may not have happened.
    Creating,
    /// The key exists; its string is not (yet) in the vault.
    Created,
    /// The key string is in the vault.
    Stored,
}

/// The inventory entry of a key (`provider = api_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub spec: KeySpec,
    pub key_id: String,
    pub state: KeyState,
    /// A key this one replaces, deleted once this one is stored (full resource name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// A key as observed (without its string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedKey {
    pub name: String,
    pub key_id: String,
    pub display_name: Option<String>,
    pub services: Vec<String>,
    pub deleted: bool,
}

impl ObservedKey {
    pub fn of(k: &V2Key) -> Self {
        ObservedKey {
            name: k.name.clone(),
            key_id: k.key_id().to_string(),
            display_name: k.display_name.clone(),
            services: k.api_targets(),
            deleted: k.delete_time.is_some(),
        }
    }
}

/// What the provider observes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Per Google Cloud project: its keys, deleted ones included.
    pub keys: BTreeMap<String, Vec<ObservedKey>>,
    /// The inventory, by address.
    pub records: BTreeMap<String, KeyRecord>,
    /// Vault paths that hold a secret.
    pub stored: BTreeSet<String>,
}

impl Observed {
    fn key(&self, gcp_project: &str, key_id: &str) -> Option<&ObservedKey> {
        self.keys
            .get(gcp_project)?
            .iter()
            .find(|k| k.key_id == key_id)
    }

    /// The next generation's key id for `spec` (ids of deleted keys are not reusable).
    fn next_key_id(&self, spec: &KeySpec, avoid: Option<&str>) -> String {
        let prefix = spec.key_id_prefix();
        let used = self
            .keys
            .get(&spec.gcp_project)
            .into_iter()
            .flatten()
            .map(|k| k.key_id.as_str())
            .chain(avoid)
            .filter_map(|id| id.strip_prefix(&prefix)?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        format!("{prefix}{}", used + 1)
    }
}

/// What a change does: the payload in `Change.after`, parsed back by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ApiKeyChange {
    /// Create the key `key_id` (again, after an interrupted attempt), store its string, then delete
    /// `replaces` when set.
    Create {
        spec: KeySpec,
        key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// Fetch the key string again and store it at `spec.store` (removing `old_store`), then delete
    /// `replaces` when set.
    Store {
        spec: KeySpec,
        key_id: String,
        key_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_store: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// Delete the key (when it still exists), the key it replaced (when a replacement was
    /// interrupted before deleting it) and its secret, and forget it.
    Delete {
        spec: KeySpec,
        key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// Only the inventory: the key a replacement deleted is forgotten (the apply that deleted it
    /// was interrupted before recording it).
    ForgetReplaced { spec: KeySpec, key_id: String },
}

/// The key `r` replaced, while it still exists (an interrupted replacement deletes it next).
fn replaced_left(r: &KeyRecord, observed: &Observed) -> Option<String> {
    r.replaces
        .as_deref()
        .filter(|old| {
            observed
                .keys
                .get(&r.spec.gcp_project)
                .into_iter()
                .flatten()
                .any(|x| x.name == *old && !x.deleted)
        })
        .map(str::to_string)
}

fn change(
    addr: &str,
    project: &str,
    action: Action,
    before: Option<&ObservedKey>,
    payload: &ApiKeyChange,
    summary: String,
    drifted: bool,
) -> Change {
    Change {
        address: addr.to_string(),
        provider: NAME.into(),
        action,
        project: Some(project.to_string()),
        before: before.map(|b| serde_json::to_value(b).unwrap_or_default()),
        after: Some(serde_json::to_value(payload).unwrap_or_default()),
        summary,
        drifted,
        disruptive: false,
        diff: None,
        requires: Vec::new(),
    }
}

/// Desired keys against the inventory and what Google and the vault hold → changes. Pure.
pub fn diff(wanted: &BTreeMap<String, KeySpec>, observed: &Observed) -> ProviderPlan {
    let mut out = ProviderPlan::default();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    for (addr, spec) in wanted {
        out.resources.push(Resource {
            address: addr.clone(),
            provider: NAME.into(),
            project: Some(spec.project.clone()),
        });
        let record = observed.records.get(addr);
        if record.is_some() {
            out.managed += 1;
        }
        let current = record.and_then(|r| observed.key(&r.spec.gcp_project, &r.key_id));
        let live = current.filter(|k| !k.deleted);
        match (record, live) {
            (None, _) => {
                let key_id = observed.next_key_id(spec, None);
                creates.push(change(
                    addr,
                    &spec.project,
                    Action::Create,
                    None,
                    &ApiKeyChange::Create {
                        spec: spec.clone(),
                        key_id: key_id.clone(),
                        replaces: None,
                    },
                    format!(
                        "{} as {key_id}; its key string goes to the vault at {}",
                        spec.describe(),
                        spec.store
                    ),
                    false,
                ));
            }
            (Some(r), None) => {
                // Never created (an interrupted creation), or deleted outside the supervisor.
                let interrupted = r.state == KeyState::Creating && current.is_none();
                let key_id = if interrupted {
                    r.key_id.clone()
                } else {
                    observed.next_key_id(spec, Some(&r.key_id))
                };
                let why = if interrupted {
                    "an earlier creation was interrupted".to_string()
                } else {
                    format!("{} was deleted outside supervisor", r.key_id)
                };
                creates.push(change(
                    addr,
                    &spec.project,
                    Action::Create,
                    current,
                    &ApiKeyChange::Create {
                        spec: spec.clone(),
                        key_id: key_id.clone(),
                        replaces: r.replaces.clone(),
                    },
                    format!(
                        "{} as {key_id} ({why}); its key string goes to the vault at {}",
                        spec.describe(),
                        spec.store
                    ),
                    !interrupted,
                ));
            }
            (Some(r), Some(k)) => {
                let same_key = k.display_name.as_deref() == Some(spec.display_name.as_str())
                    && k.services == spec.services
                    && r.spec.gcp_project == spec.gcp_project;
                // A replacement still unfinished (the replaced key exists) is finished first: the
                // inventory names one replaced key at a time, and none may be forgotten alive.
                if !same_key && replaced_left(r, observed).is_none() {
                    let key_id = observed.next_key_id(spec, Some(&r.key_id));
                    let mut what = Vec::new();
                    if r.spec.gcp_project != spec.gcp_project {
                        what.push(format!(
                            "gcp_project {} → {}",
                            r.spec.gcp_project, spec.gcp_project
                        ));
                    }
                    if k.display_name.as_deref() != Some(spec.display_name.as_str()) {
                        what.push(format!(
                            "display name {:?} → {:?}",
                            k.display_name.as_deref().unwrap_or(""),
                            spec.display_name
                        ));
                    }
                    if k.services != spec.services {
                        what.push(format!(
                            "services [{}] → [{}]",
                            k.services.join(", "),
                            spec.services.join(", ")
                        ));
                    }
                    updates.push(change(
                        addr,
                        &spec.project,
                        Action::Replace,
                        Some(k),
                        &ApiKeyChange::Create {
                            spec: spec.clone(),
                            key_id: key_id.clone(),
                            replaces: Some(k.name.clone()),
                        },
                        format!(
                            "{} ({}): new key {key_id} stored at {}, then {} is deleted",
                            r.key_id,
                            what.join(", "),
                            spec.store,
                            r.key_id
                        ),
                        false,
                    ));
                    continue;
                }
                let missing = !observed.stored.contains(&spec.store);
                let moved = r.spec.store != spec.store;
                let replaced_left = replaced_left(r, observed);
                if r.state != KeyState::Stored || missing || moved || replaced_left.is_some() {
                    let mut why = Vec::new();
                    if moved {
                        why.push(format!("moved from {}", r.spec.store));
                    } else if r.state != KeyState::Stored {
                        why.push("storing it was interrupted".to_string());
                    } else if missing {
                        why.push("the secret was deleted from the vault".to_string());
                    }
                    if let Some(old) = &replaced_left {
                        why.push(format!(
                            "then the replaced key {} is deleted",
                            crate::clients::google::short_name(old)
                        ));
                        if !same_key {
                            why.push("the key's new settings follow in the next run".to_string());
                        }
                    }
                    let drifted = r.state == KeyState::Stored && missing && !moved;
                    updates.push(change(
                        addr,
                        &spec.project,
                        Action::Update,
                        Some(k),
                        &ApiKeyChange::Store {
                            // Until the key is replaced, the record describes the key there is.
                            spec: if same_key {
                                spec.clone()
                            } else {
                                KeySpec {
                                    store: spec.store.clone(),
                                    ..r.spec.clone()
                                }
                            },
                            key_id: r.key_id.clone(),
                            key_name: k.name.clone(),
                            old_store: moved.then(|| r.spec.store.clone()),
                            replaces: replaced_left,
                        },
                        format!(
                            "store the key string of {} at {} ({})",
                            r.key_id,
                            spec.store,
                            why.join("; ")
                        ),
                        drifted,
                    ));
                } else if let Some(old) = &r.replaces {
                    updates.push(change(
                        addr,
                        &spec.project,
                        Action::Update,
                        Some(k),
                        &ApiKeyChange::ForgetReplaced {
                            spec: spec.clone(),
                            key_id: r.key_id.clone(),
                        },
                        format!(
                            "forget the replaced key {} (deleted by an interrupted apply)",
                            crate::clients::google::short_name(old)
                        ),
                        false,
                    ));
                }
            }
        }
    }
    for (addr, r) in &observed.records {
        if wanted.contains_key(addr) {
            continue;
        }
        out.managed += 1;
        let current = observed
            .key(&r.spec.gcp_project, &r.key_id)
            .filter(|k| !k.deleted);
        let secret = observed.stored.contains(&r.spec.store);
        let replaced = replaced_left(r, observed);
        let mut what = match (current.is_some(), secret) {
            (true, true) => format!(
                "key {} in {} and its secret {}",
                r.key_id, r.spec.gcp_project, r.spec.store
            ),
            (true, false) => format!("key {} in {}", r.key_id, r.spec.gcp_project),
            (false, true) => format!(
                "the secret {} (key {} is already gone)",
                r.spec.store, r.key_id
            ),
            (false, false) => format!(
                "the inventory entry (key {} and its secret are already gone)",
                r.key_id
            ),
        };
        if let Some(old) = &replaced {
            what.push_str(&format!(
                ", and the key {} it replaced",
                crate::clients::google::short_name(old)
            ));
        }
        deletes.push(change(
            addr,
            &r.spec.project,
            Action::Delete,
            current,
            &ApiKeyChange::Delete {
                spec: r.spec.clone(),
                key_id: r.key_id.clone(),
                key_name: current.map(|k| k.name.clone()),
                replaces: replaced,
            },
            what,
            false,
        ));
    }
    out.changes.extend(deletes);
    out.changes.extend(updates);
    out.changes.extend(creates);
    out
}

pub struct ApiKeyProvider {
    store: Arc<dyn Store>,
    cloud: Option<Arc<GoogleCloud>>,
    sink: Option<Arc<dyn SecretSink>>,
    actor: String,
}

impl ApiKeyProvider {
    /// `cloud` is `None` when `gcloud:` is not configured (then managed keys cannot be deleted and
    /// the plan says so); `sink` is the vault.
    pub fn new(
        store: Arc<dyn Store>,
        cloud: Option<Arc<GoogleCloud>>,
        sink: Option<Arc<dyn SecretSink>>,
        actor: &str,
    ) -> Self {
        ApiKeyProvider {
            store,
            cloud,
            sink,
            actor: actor.to_string(),
        }
    }

    async fn records(&self) -> Result<BTreeMap<String, KeyRecord>, ProviderError> {
        let mut out = BTreeMap::new();
        for o in self.store.list_managed(NAME).await? {
            let record: KeyRecord =
                serde_json::from_value(o.attributes.0.clone()).map_err(|e| {
                    ProviderError::Failed(format!(
                        "{}: the inventory entry cannot be read ({e})",
                        o.address
                    ))
                })?;
            out.insert(o.address, record);
        }
        Ok(out)
    }

    /// Writes the entry; `uid` (the key's) when known, else the one the entry already has.
    async fn save(
        &self,
        addr: &str,
        record: &KeyRecord,
        uid: Option<&str>,
    ) -> Result<(), ProviderError> {
        let external_id = match uid {
            Some(u) => Some(u.to_string()),
            None => self
                .store
                .list_managed(NAME)
                .await?
                .into_iter()
                .find(|o| o.address == addr)
                .and_then(|o| o.external_id),
        };
        self.store
            .upsert_managed(&ManagedObject {
                provider: NAME.into(),
                address: addr.into(),
                external_id,
                attributes: sqlx::types::Json(serde_json::to_value(record).unwrap_or_default()),
                adopted: false,
            })
            .await?;
        Ok(())
    }

    fn cloud(&self, addr: &str) -> Result<&GoogleCloud, ProviderError> {
        self.cloud.as_deref().ok_or_else(|| {
            ProviderError::Failed(format!(
                "{addr}: gcloud is not configured in supervisor.yaml, so the key cannot be reached"
            ))
        })
    }

    fn sink(&self, addr: &str) -> Result<&dyn SecretSink, ProviderError> {
        self.sink.as_deref().ok_or_else(|| {
            ProviderError::Failed(format!(
                "{addr}: API key strings are stored in the vault, but no encryption key is configured: set SECRETS_ENCRYPTION_KEY (or secrets_key_file in supervisor.toml)"
            ))
        })
    }

    pub async fn observe(
        &self,
        wanted: &BTreeMap<String, KeySpec>,
    ) -> Result<Observed, ProviderError> {
        let records = self.records().await?;
        let mut projects: BTreeSet<&str> =
            wanted.values().map(|s| s.gcp_project.as_str()).collect();
        projects.extend(records.values().map(|r| r.spec.gcp_project.as_str()));
        let mut keys = BTreeMap::new();
        if let Some(cloud) = &self.cloud {
            for p in projects {
                let listed = cloud
                    .apikeys
                    .list_keys(p, true)
                    .await
                    .map_err(|e| google_error(format!("{NAME}: listing the keys of {p}"), e))?;
                keys.insert(p.to_string(), listed.iter().map(ObservedKey::of).collect());
            }
        }
        let mut stored = BTreeSet::new();
        let paths: BTreeSet<&str> = wanted
            .values()
            .map(|s| s.store.as_str())
            .chain(records.values().map(|r| r.spec.store.as_str()))
            .collect();
        if !paths.is_empty() {
            let sink = self.sink(NAME)?;
            for path in paths {
                if sink
                    .secret_exists(path, &self.actor)
                    .await
                    .map_err(|e| ProviderError::Failed(format!("{NAME}: {e}")))?
                {
                    stored.insert(path.to_string());
                }
            }
        }
        Ok(Observed {
            keys,
            records,
            stored,
        })
    }

    fn run_actor(&self, run: &RunContext) -> String {
        format!("apply:{} ({})", run.run_id(), run.actor())
    }

    /// Creates `key_id` (or finds it, after an interrupted attempt) and returns the key.
    async fn create(
        &self,
        addr: &str,
        spec: &KeySpec,
        key_id: &str,
        run: &RunContext,
    ) -> Result<V2Key, ProviderError> {
        let cloud = self.cloud(addr)?;
        let name = format!("{}/keys/{key_id}", parent(&spec.gcp_project));
        run.step(
            addr,
            "create",
            format!("creating {} as {key_id}", spec.describe()),
        );
        let created = match cloud
            .apikeys
            .create_key(&spec.gcp_project, key_id, &spec.body())
            .await
        {
            Ok(op) => {
                run.step(addr, "wait", format!("waiting for operation {}", op.name));
                wait_key_operation(
                    &cloud.apikeys,
                    op,
                    &format!("create key {key_id}"),
                    cloud.key_wait,
                )
                .await
                .map_err(|e| google_error(format!("{addr}: create"), e))?
            }
            // 409: it exists already (an earlier attempt, maybe still running). A lost answer: it may.
            Err(e) if e.status() == Some(409) || e.is_outcome_unknown() => {
                run.step(
                    addr,
                    "wait",
                    format!("{key_id} may exist already ({e}); reading it"),
                );
                None
            }
            Err(e) => return Err(google_error(format!("{addr}: create"), e)),
        };
        match created.filter(|k| !k.name.is_empty()) {
            Some(k) => Ok(k),
            None => self.read_until_visible(addr, &name).await,
        }
    }

    async fn read_until_visible(&self, addr: &str, name: &str) -> Result<V2Key, ProviderError> {
        let cloud = self.cloud(addr)?;
        let started = std::time::Instant::now();
        loop {
            match cloud.apikeys.get_key(name).await {
                Ok(k) if k.delete_time.is_none() => return Ok(k),
                Ok(_) => {
                    return Err(ProviderError::Failed(format!(
                        "{addr}: {} exists but is deleted; the next plan takes a new key id",
                        crate::clients::google::short_name(name)
                    )));
                }
                Err(e) if e.is_not_found() && started.elapsed() < cloud.key_wait.timeout => {
                    tokio::time::sleep(cloud.key_wait.poll_interval).await;
                }
                Err(e) if e.is_not_found() => {
                    return Err(ProviderError::Failed(format!(
                        "{addr}: {} did not appear within {:.0} s; the next plan tries again with the same key id",
                        crate::clients::google::short_name(name),
                        cloud.key_wait.timeout.as_secs_f64()
                    )));
                }
                Err(e) => return Err(google_error(format!("{addr}: reading the key"), e)),
            }
        }
    }

    /// Fetches the key string and writes it into the vault; the string never leaves this function
    /// except into the vault.
    async fn store_string(
        &self,
        addr: &str,
        spec: &KeySpec,
        key_name: &str,
        run: &RunContext,
    ) -> Result<(), ProviderError> {
        let cloud = self.cloud(addr)?;
        let sink = self.sink(addr)?;
        run.step(
            addr,
            "store",
            format!("storing the key string at {}", spec.store),
        );
        let value = cloud
            .apikeys
            .key_string(key_name)
            .await
            .map_err(|e| google_error(format!("{addr}: getKeyString"), e))?;
        sink.write_secret(
            &spec.store,
            &value,
            &format!(
                "Google API key {} ({}), managed by supervisor ({addr})",
                crate::clients::google::short_name(key_name),
                spec.gcp_project
            ),
            &self.run_actor(run),
        )
        .await
        .map_err(|e| ProviderError::Failed(format!("{addr}: {e}")))
    }

    async fn delete_key(
        &self,
        addr: &str,
        key_name: &str,
        run: &RunContext,
    ) -> Result<(), ProviderError> {
        let cloud = self.cloud(addr)?;
        run.step(
            addr,
            "delete",
            format!(
                "deleting key {}",
                crate::clients::google::short_name(key_name)
            ),
        );
        match cloud.apikeys.delete_key(key_name).await {
            Ok(op) => {
                wait_key_operation(&cloud.apikeys, op, "delete key", cloud.key_wait)
                    .await
                    .map_err(|e| google_error(format!("{addr}: delete"), e))?;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(google_error(format!("{addr}: delete"), e)),
        }
    }

    async fn carry_out(&self, change: &Change, run: &RunContext) -> Result<(), ProviderError> {
        let addr = change.address.as_str();
        let payload: ApiKeyChange = payload(change, change.after.as_ref())?;
        match payload {
            ApiKeyChange::Create {
                spec,
                key_id,
                replaces,
            } => {
                let mut record = KeyRecord {
                    spec: spec.clone(),
                    key_id: key_id.clone(),
                    state: KeyState::Creating,
                    replaces,
                };
                // The entry exists before the key can: a crash never leaves a key nobody owns.
                self.save(addr, &record, None).await?;
                let key = self.create(addr, &spec, &key_id, run).await?;
                record.state = KeyState::Created;
                self.save(addr, &record, key.uid.as_deref()).await?;
                self.store_string(addr, &spec, &key.name, run).await?;
                record.state = KeyState::Stored;
                self.save(addr, &record, key.uid.as_deref()).await?;
                self.finish_replacement(addr, &mut record, key.uid.as_deref(), run)
                    .await
            }
            ApiKeyChange::Store {
                spec,
                key_id,
                key_name,
                old_store,
                replaces,
            } => {
                let mut record = KeyRecord {
                    spec: spec.clone(),
                    key_id,
                    state: KeyState::Created,
                    replaces,
                };
                self.store_string(addr, &spec, &key_name, run).await?;
                record.state = KeyState::Stored;
                self.save(addr, &record, None).await?;
                if let Some(old) = old_store.filter(|o| *o != spec.store) {
                    run.step(addr, "store", format!("removing the old secret {old}"));
                    self.sink(addr)?
                        .delete_secret(&old, &self.run_actor(run))
                        .await
                        .map_err(|e| ProviderError::Failed(format!("{addr}: {e}")))?;
                }
                self.finish_replacement(addr, &mut record, None, run).await
            }
            ApiKeyChange::Delete {
                spec,
                key_id: _,
                key_name,
                replaces,
            } => {
                for name in key_name.iter().chain(replaces.iter()) {
                    self.delete_key(addr, name, run).await?;
                }
                run.step(
                    addr,
                    "delete",
                    format!("deleting the secret {}", spec.store),
                );
                self.sink(addr)?
                    .delete_secret(&spec.store, &self.run_actor(run))
                    .await
                    .map_err(|e| ProviderError::Failed(format!("{addr}: {e}")))?;
                self.store.delete_managed(NAME, addr).await?;
                Ok(())
            }
            ApiKeyChange::ForgetReplaced { spec, key_id } => {
                let record = KeyRecord {
                    spec,
                    key_id,
                    state: KeyState::Stored,
                    replaces: None,
                };
                self.save(addr, &record, None).await
            }
        }
    }

    async fn finish_replacement(
        &self,
        addr: &str,
        record: &mut KeyRecord,
        uid: Option<&str>,
        run: &RunContext,
    ) -> Result<(), ProviderError> {
        if let Some(old) = record.replaces.clone() {
            self.delete_key(addr, &old, run).await?;
            record.replaces = None;
            self.save(addr, record, uid).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for ApiKeyProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        self.cloud
            .as_ref()
            .map(|c| format!("API Keys at {}", c.endpoints.apikeys))
    }

    async fn plan(
        &self,
        desired: &Desired,
        _earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let wanted = desired_keys(desired);
        let observed = self.observe(&wanted).await?;
        let mut plan = diff(&wanted, &observed);
        if self.cloud.is_none() && !observed.records.is_empty() {
            plan.errors.push(Notice {
                provider: NAME.into(),
                address: None,
                project: None,
                message: format!(
                    "{} managed API key(s) cannot be deleted: gcloud is not configured in supervisor.yaml (put gcloud.credentials back, apply, then remove it)",
                    observed.records.len()
                ),
            });
            plan.changes.clear();
        }
        let relevant: HashMap<&String, (&KeyRecord, Option<&ObservedKey>)> = observed
            .records
            .iter()
            .map(|(a, r)| (a, (r, observed.key(&r.spec.gcp_project, &r.key_id))))
            .collect();
        let relevant: BTreeMap<_, _> = relevant.into_iter().collect();
        plan.fingerprint = fingerprint(&(relevant, &observed.stored));
        Ok(plan)
    }

    async fn apply(&self, change: &Change) -> Result<(), ProviderError> {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let run = RunContext::new(&uuid::Uuid::new_v4().to_string(), &self.actor, tx);
        self.carry_out(change, &run).await
    }

    async fn apply_in_run(&self, change: &Change, run: &RunContext) -> Result<(), ProviderError> {
        self.carry_out(change, run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(services: &[&str]) -> KeySpec {
        KeySpec {
            project: "shop".into(),
            name: "maps".into(),
            gcp_project: "my-gcp-project".into(),
            display_name: "shop/maps".into(),
            services: services.iter().map(|s| s.to_string()).collect(),
            store: "project/shop/maps_key".into(),
        }
    }

    fn key(id: &str, services: &[&str], deleted: bool) -> ObservedKey {
        ObservedKey {
            name: format!("projects/123/locations/global/keys/{id}"),
            key_id: id.into(),
            display_name: Some("shop/maps".into()),
            services: services.iter().map(|s| s.to_string()).collect(),
            deleted,
        }
    }

    fn wanted(s: KeySpec) -> BTreeMap<String, KeySpec> {
        [(s.address(), s)].into()
    }

    fn summaries(p: &ProviderPlan) -> Vec<(Action, String)> {
        p.changes
            .iter()
            .map(|c| (c.action, c.summary.clone()))
            .collect()
    }

    #[test]
    fn a_new_key_takes_the_next_generation_id() {
        let s = spec(&["maps-backend.googleapis.com"]);
        let prefix = s.key_id_prefix();
        assert!(
            prefix.starts_with("sv-maps-") && prefix.len() == "sv-maps-".len() + 9,
            "{prefix}"
        );
        let mut o = Observed::default();
        let p = diff(&wanted(s.clone()), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Create,
                format!(
                    "key \"shop/maps\" in my-gcp-project (restricted to maps-backend.googleapis.com) as {prefix}1; its key string goes to the vault at project/shop/maps_key"
                )
            )]
        );
        // A deleted key of an earlier declaration still holds its id.
        o.keys.insert(
            "my-gcp-project".into(),
            vec![
                key(&format!("{prefix}1"), &[], true),
                key(&format!("{prefix}x"), &[], false),
            ],
        );
        let p = diff(&wanted(s), &o);
        let after: ApiKeyChange =
            serde_json::from_value(p.changes[0].after.clone().unwrap()).unwrap();
        let ApiKeyChange::Create { key_id, .. } = after else {
            panic!()
        };
        assert_eq!(key_id, format!("{prefix}2"));
    }

    #[test]
    fn interrupted_steps_are_resumed_and_nothing_is_left_when_converged() {
        let s = spec(&[]);
        let id = format!("{}1", s.key_id_prefix());
        let record = |state| KeyRecord {
            spec: s.clone(),
            key_id: id.clone(),
            state,
            replaces: None,
        };
        let mut o = Observed::default();
        o.records.insert(s.address(), record(KeyState::Creating));
        let p = diff(&wanted(s.clone()), &o);
        assert_eq!(summaries(&p)[0].0, Action::Create);
        assert!(
            p.changes[0]
                .summary
                .contains(&format!("as {id} (an earlier creation was interrupted)")),
            "{:?}",
            p.changes
        );
        o.keys
            .insert("my-gcp-project".into(), vec![key(&id, &[], false)]);
        let p = diff(&wanted(s.clone()), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Update,
                format!(
                    "store the key string of {id} at project/shop/maps_key (storing it was interrupted)"
                )
            )]
        );
        o.records.insert(s.address(), record(KeyState::Stored));
        o.stored.insert(s.store.clone());
        assert!(diff(&wanted(s.clone()), &o).changes.is_empty());
        // The secret deleted from the vault: stored again, as drift.
        o.stored.clear();
        let p = diff(&wanted(s.clone()), &o);
        assert!(
            p.changes[0].drifted
                && p.changes[0]
                    .summary
                    .ends_with("(the secret was deleted from the vault)")
        );
        // Removed from state: the key and its secret go.
        o.stored.insert(s.store.clone());
        let p = diff(&BTreeMap::new(), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Delete,
                format!("key {id} in my-gcp-project and its secret project/shop/maps_key")
            )]
        );
    }

    #[test]
    fn an_interrupted_replacement_is_finished_and_never_forgets_a_live_key() {
        let old = spec(&["a.googleapis.com"]);
        let prefix = old.key_id_prefix();
        let (gen1, gen2) = (format!("{prefix}1"), format!("{prefix}2"));
        let name = |id: &str| format!("projects/123/locations/global/keys/{id}");
        let mut o = Observed::default();
        // Stored gen2, killed before deleting gen1.
        o.records.insert(
            old.address(),
            KeyRecord {
                spec: old.clone(),
                key_id: gen2.clone(),
                state: KeyState::Stored,
                replaces: Some(name(&gen1)),
            },
        );
        o.keys.insert(
            "my-gcp-project".into(),
            vec![
                key(&gen1, &["a.googleapis.com"], false),
                key(&gen2, &["a.googleapis.com"], false),
            ],
        );
        o.stored.insert(old.store.clone());
        // Removed from state now: both keys go, not only the current one.
        let p = diff(&BTreeMap::new(), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Delete,
                format!(
                    "key {gen2} in my-gcp-project and its secret project/shop/maps_key, and the key {gen1} it replaced"
                )
            )]
        );
        let ApiKeyChange::Delete { replaces, .. } =
            serde_json::from_value(p.changes[0].after.clone().unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(replaces, Some(name(&gen1)));
        // Changed again before it finished: the replacement is finished first (gen1 deleted), the
        // new settings follow in the next run.
        let new = spec(&["b.googleapis.com"]);
        let p = diff(&wanted(new), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Update,
                format!(
                    "store the key string of {gen2} at project/shop/maps_key (then the replaced key {gen1} is deleted; the key's new settings follow in the next run)"
                )
            )]
        );
        let ApiKeyChange::Store { spec: kept, .. } =
            serde_json::from_value(p.changes[0].after.clone().unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            kept.services,
            ["a.googleapis.com"],
            "the record describes gen2"
        );
        // gen1 deleted, the record not yet updated: forgotten, nothing else.
        o.keys.get_mut("my-gcp-project").unwrap()[0].deleted = true;
        let p = diff(&wanted(old.clone()), &o);
        assert_eq!(
            summaries(&p),
            vec![(
                Action::Update,
                format!("forget the replaced key {gen1} (deleted by an interrupted apply)")
            )]
        );
        o.records.get_mut(&old.address()).unwrap().replaces = None;
        assert!(diff(&wanted(old), &o).changes.is_empty());
    }

    #[test]
    fn a_changed_service_list_replaces_the_key() {
        let old = spec(&["a.googleapis.com"]);
        let new = spec(&["b.googleapis.com"]);
        let id = format!("{}1", old.key_id_prefix());
        let mut o = Observed::default();
        o.records.insert(
            old.address(),
            KeyRecord {
                spec: old.clone(),
                key_id: id.clone(),
                state: KeyState::Stored,
                replaces: None,
            },
        );
        o.keys.insert(
            "my-gcp-project".into(),
            vec![key(&id, &["a.googleapis.com"], false)],
        );
        o.stored.insert(old.store.clone());
        let p = diff(&wanted(new), &o);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].action, Action::Replace);
        let prefix = old.key_id_prefix();
        assert_eq!(
            p.changes[0].summary,
            format!(
                "{id} (services [a.googleapis.com] → [b.googleapis.com]): new key {prefix}2 stored at project/shop/maps_key, then {id} is deleted"
            )
        );
    }
}
