//! The vault: encrypted secrets in the store, every access audited. This is the one place a secret
//! value is decrypted; the CLI and the MCP tools call the same methods with their own [`Actor`].
//!
//! Guarantees:
//!
//! * **Audit before release.** A read returns its value only after the access-log row and the
//!   `access_count`/`last_accessed_at` update are committed. Failed reads (not found, denied, cannot
//!   decrypt) are logged too. Concurrent readers share commits: each enqueues its event to one writer
//!   task, which commits whatever has queued up in one transaction (group commit) and then wakes every
//!   reader of that batch. A reader whose caller goes away still gets its access logged.
//! * **A wrong key changes nothing, and is recognised with certainty.** Each key version has a *check
//!   value* in the store (`secret_key_checks`): a known plaintext sealed with that version's key. Before
//!   any write, delete, rotation or import the key must open it (AES-GCM authentication: a wrong key
//!   cannot), or the operation is refused with [`VaultError::KeyMismatch`], naming the key's fingerprint
//!   (never the key). Secrets play no part in it, so altered or corrupt secrets never block the vault,
//!   and a secret that does not decrypt is diagnosed as altered (key verified) or as read with the wrong
//!   key (key refused). Rotation replaces the check value in the same transaction as the ciphertexts.
//!   A vault written before check values existed gets one on the first successful verification, which
//!   is then done as before: against the secrets (every one, until one decrypts). A vault that holds no
//!   secret accepts any key, and records its check value.
//! * **Rotation is all or nothing.** [`Vault::rotate_key`] decrypts every secret with the current key
//!   before it writes anything, then replaces every ciphertext in one transaction; an interruption
//!   leaves every secret readable with exactly one of the two keys (the old one until the commit).
//! * **No value in errors or logs.** Errors name paths, key fingerprints and causes; values live in
//!   [`SecretValue`] (zeroized on drop, redacted `Debug`, no `Display`).
//!
//! Caveat: do not run `rotate-key` while other processes write secrets; a write that read the old key
//! generation before the rotation committed stores a value the new key cannot open (it stays readable
//! with the old key, and a later `rotate-key` refuses to run until it is rewritten).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::crypto::{self, CryptoError};
use super::key::EncryptionKey;
use super::path::SecretPath;
use crate::store::{
    AccessEvent, KeyCheck, SecretFilter, SecretMeta, SecretRow, SecretScope, Store, StoreError,
};

/// Largest value the vault stores (a service-account JSON or a PEM chain is a few KiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest description of a secret, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// How many recently written secrets a read's diagnosis tries the key on when there is no check value.
const KEY_CHECK_SAMPLE: i64 = 5;
/// The associated data under which check values are sealed: not a valid secret path, so no secret's
/// ciphertext can pass for a check value or the other way round.
const KEY_CHECK_PATH: &str = "\0supervisor key check";
const KEY_CHECK_PLAINTEXT: &str = "supervisor key check v1";
/// Most jobs (reads and events) one ledger batch carries.
const MAX_AUDIT_BATCH: usize = 1024;
const AUDIT_QUEUE: usize = 8192;

/// Access-log vocabulary.
pub mod action {
    pub const READ: &str = "read";
    pub const WRITE: &str = "write";
    pub const DELETE: &str = "delete";
    pub const ROTATE: &str = "rotate";
    pub const IMPORT: &str = "import";
}
pub mod outcome {
    pub const OK: &str = "ok";
    pub const NOT_FOUND: &str = "not_found";
    pub const DENIED: &str = "denied";
    pub const UNDECRYPTABLE: &str = "undecryptable";
    pub const KEY_MISMATCH: &str = "key_mismatch";
}

/// A secret value in memory: zeroized when dropped, never shown by `Debug`, no `Display`.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: Zeroizing<String>) -> Self {
        SecretValue(value)
    }
    /// The one way to see the value.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue(Zeroizing::new(s))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

/// Who is asking, and how far they may reach. The name is what the access log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    name: String,
    reach: Reach,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every secret (the CLI user on this host, the meta MCP endpoint).
    All,
    /// Only the secrets of one project (`project/<p>/…`, `service/<p>/…`).
    Project(String),
}

impl Actor {
    /// `cli:<user>`: the person running the command line, with full reach.
    pub fn cli(user: &str) -> Actor {
        Actor {
            name: format!("cli:{}", sanitize(user)),
            reach: Reach::All,
        }
    }

    /// The CLI user of this process: `USER`, else `LOGNAME`, else the numeric uid.
    pub fn cli_current_user() -> Actor {
        let user = ["USER", "LOGNAME"]
            .into_iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.trim().is_empty());
        match user {
            Some(u) => Actor::cli(&u),
            None => Actor::cli(&current_uid().map_or("unknown".into(), |u| format!("uid{u}"))),
        }
    }

    /// `mcp:<endpoint>[:<token id>]`, e.g. `mcp:/mcp/consilio:tok_1`; `project` limits the reach.
    pub fn mcp(endpoint: &str, token_id: Option<&str>, project: Option<&str>) -> Actor {
        let mut name = format!("mcp:{}", sanitize(endpoint));
        if let Some(t) = token_id {
            name.push(':');
            name.push_str(&sanitize(t));
        }
        Actor {
            name,
            reach: match project {
                Some(p) => Reach::Project(p.to_string()),
                None => Reach::All,
            },
        }
    }

    /// A part of the supervisor itself reading a credential it needs (`serve`, a provider run by
    /// `cli:<user>`), with full reach; the name is recorded as given.
    pub fn internal(name: &str) -> Actor {
        Actor {
            name: sanitize(name),
            reach: Reach::All,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    pub fn may_access(&self, path: &SecretPath) -> bool {
        match &self.reach {
            Reach::All => true,
            Reach::Project(p) => path.visible_to(p),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Actor names come from the environment or a token table: keep them printable and short.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect::<String>()
}

fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no secret at {path}")]
    NotFound { path: String },
    #[error("{actor} may not access {path} (outside its project)")]
    Denied { path: String, actor: String },
    #[error(
        "cannot decrypt the secret at {path} (key version {key_version}) with the key from {key_source} \
         (fingerprint {fingerprint}): {cause}; {diagnosis}"
    )]
    Undecryptable {
        path: String,
        key_version: i32,
        key_source: String,
        fingerprint: String,
        cause: CryptoError,
        diagnosis: Diagnosis,
    },
    #[error(
        "the encryption key from {key_source} (fingerprint {fingerprint}) does not match this vault: it \
         cannot decrypt {checked}. Nothing was changed. Use the key the secrets were written with \
         (SECRETS_ENCRYPTION_KEY or --key-file)"
    )]
    KeyMismatch {
        key_source: String,
        fingerprint: String,
        checked: String,
    },
    #[error(
        "cannot rotate: {count} secret(s) cannot be decrypted with the current key ({paths}). Nothing was \
         changed; rewrite or delete them first"
    )]
    RotationBlocked { count: usize, paths: String },
    #[error("the new key is the key already in use (fingerprint {fingerprint}); nothing to rotate")]
    SameKey { fingerprint: String },
    #[error("key versions are exhausted (255 rotations); nothing was changed")]
    VersionsExhausted,
    #[error("refusing to store an empty value at {path}")]
    EmptyValue { path: String },
    #[error("the value for {path} is {len} bytes; the limit is {max} bytes")]
    TooLarge {
        path: String,
        len: usize,
        max: usize,
    },
    #[error("the description of {path}: {why}")]
    BadDescription { path: String, why: String },
    #[error("cannot encrypt the value for {path}: {cause}")]
    Encrypt { path: String, cause: CryptoError },
    #[error("cannot import: {problems}. Nothing was imported")]
    ImportRefused { problems: String },
    #[error(
        "the access could not be recorded in the audit log, so the operation was not completed: {0}"
    )]
    Audit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a secret could not be decrypted: the key's check value says whether the key is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    /// The key is the vault's (it opens the check value, or other secrets): this ciphertext was
    /// altered, or moved from another path.
    AlteredOrMoved,
    /// The key does not open the vault's check value: it is the wrong key.
    WrongKey,
    /// No check value yet (a vault written before they existed) and no recently written secret
    /// decrypts either: most likely the wrong key.
    ProbablyWrongKey,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Diagnosis::AlteredOrMoved => {
                "the key is this vault's key, so this ciphertext was altered or moved from another path"
            }
            Diagnosis::WrongKey => {
                "the key does not open the vault's key check value either: it is the wrong key (use the key \
                 the secrets were written with)"
            }
            Diagnosis::ProbablyWrongKey => {
                "no recently written secret decrypts with this key either, so the key is most likely wrong \
                 (use the key the secrets were written with), unless all of them were altered or moved"
            }
        })
    }
}

/// Whether `key` opens `check`.
fn opens(key: &EncryptionKey, check: &KeyCheck) -> bool {
    crypto::open(key, KEY_CHECK_PATH, &check.check_value)
        .is_ok_and(|plain| plain.as_str() == KEY_CHECK_PLAINTEXT)
}

/// A check value for `key` as key version `version`.
fn key_check(key: &EncryptionKey, version: u8) -> Result<KeyCheck, VaultError> {
    let check_value = crypto::seal(key, version, KEY_CHECK_PATH, KEY_CHECK_PLAINTEXT.as_bytes())
        .map_err(|cause| VaultError::Encrypt {
            path: "the key check value".into(),
            cause,
        })?;
    Ok(KeyCheck {
        key_version: i32::from(version),
        check_value,
        created_at: Utc::now(),
    })
}

/// A stored key version as the one-byte version of the sealed format.
fn version_byte(v: i32) -> Option<u8> {
    u8::try_from(v).ok().filter(|v| *v >= 1)
}

/// A value read from the vault, with what the reader should be warned about.
#[derive(Debug)]
pub struct Revealed {
    pub value: SecretValue,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotation_required: bool,
}

impl Revealed {
    pub fn expired(&self) -> bool {
        is_expired(self.expires_at, Utc::now())
    }
}

fn is_expired(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires_at.is_some_and(|t| t <= now)
}

/// What `set` does with the expiry of an existing secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expiry {
    /// Keep the current expiry (none for a new secret).
    #[default]
    Keep,
    Never,
    At(DateTime<Utc>),
}

impl Expiry {
    /// Parses an expiry as people and agents write it: an RFC 3339 time (`2027-01-31T00:00:00Z`), a date
    /// (`2027-01-31`, midnight UTC), a number of days from `now` (`90d`) or `never`.
    pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Expiry, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("never") {
            return Ok(Expiry::Never);
        }
        if let Some(days) = t.strip_suffix('d')
            && let Ok(days) = days.parse::<u32>()
        {
            return Ok(Expiry::At(now + chrono::Duration::days(i64::from(days))));
        }
        if let Ok(at) = DateTime::parse_from_rfc3339(t) {
            return Ok(Expiry::At(at.with_timezone(&Utc)));
        }
        if let Ok(day) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
            && let Some(midnight) = day.and_hms_opt(0, 0, 0)
        {
            return Ok(Expiry::At(midnight.and_utc()));
        }
        Err(format!(
            "`{}` is not an expiry: use an RFC 3339 time (2027-01-31T00:00:00Z), a date (2027-01-31), a number of days (90d) or `never`",
            t.chars().take(64).collect::<String>()
        ))
    }
}

#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// `None` keeps the existing description.
    pub description: Option<String>,
    pub expiry: Expiry,
    /// A new value clears the flag unless this is set.
    pub rotation_required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Written {
    Created,
    Updated,
}

/// A secret's metadata as `list` reports it (never the value).
#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub path: String,
    pub description: Option<String>,
    pub scope: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired: bool,
    pub rotation_required: bool,
    pub key_version: i32,
}

impl SecretInfo {
    fn from_meta(m: SecretMeta, now: DateTime<Utc>) -> Self {
        SecretInfo {
            expired: is_expired(m.expires_at, now),
            path: m.path,
            description: m.description,
            scope: m.scope,
            project: m.project,
            service: m.service,
            created_at: m.created_at,
            updated_at: m.updated_at,
            last_accessed_at: m.last_accessed_at,
            access_count: m.access_count,
            expires_at: m.expires_at,
            rotation_required: m.rotation_required,
            key_version: m.key_version,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub scope: Option<SecretScope>,
    pub project: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    pub rotated: usize,
    pub from_version: Option<i32>,
    pub to_version: i32,
    pub new_fingerprint: String,
}

/// Counts for `doctor` and `status`; needs no key.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct VaultHealth {
    pub total: usize,
    pub expired: Vec<String>,
    pub rotation_required: Vec<String>,
}

/// Counts expired and rotation-required secrets (paths only).
pub async fn health(store: &dyn Store) -> Result<VaultHealth, StoreError> {
    health_of(store, None).await
}

/// Like [`health`], for the secrets of one project (`project/<p>/…`, `service/<p>/…`) when given.
pub async fn health_of(
    store: &dyn Store,
    project: Option<&str>,
) -> Result<VaultHealth, StoreError> {
    let filter = SecretFilter {
        project: project.map(str::to_string),
        ..Default::default()
    };
    let all = store.list_secrets(&filter).await?;
    Ok(VaultHealth::of(&all, project, Utc::now()))
}

impl VaultHealth {
    /// The health of the secrets among `listed` that belong to `project` (all of them when `None`), at
    /// `now`. Pure.
    pub fn of(listed: &[SecretMeta], project: Option<&str>, now: DateTime<Utc>) -> VaultHealth {
        let mine: Vec<&SecretMeta> = listed
            .iter()
            .filter(|m| project.is_none_or(|p| m.project.as_deref() == Some(p)))
            .collect();
        VaultHealth {
            total: mine.len(),
            expired: mine
                .iter()
                .filter(|m| is_expired(m.expires_at, now))
                .map(|m| m.path.clone())
                .collect(),
            rotation_required: mine
                .iter()
                .filter(|m| m.rotation_required)
                .map(|m| m.path.clone())
                .collect(),
        }
    }
}

/// A secret as the original service stored it (see `legacy.rs`).
pub struct LegacySecret {
    pub key_path: String,
    pub encrypted_value: Vec<u8>,
    pub description: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotation_required: bool,
}

impl fmt::Debug for LegacySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacySecret")
            .field("key_path", &self.key_path)
            .field(
                "encrypted_value",
                &format_args!("<{} bytes>", self.encrypted_value.len()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub imported: usize,
    pub key_version: i32,
}

/// Work for the ledger task: an access to record, or a read to carry out and record.
enum Job {
    Record {
        event: AccessEvent,
        done: oneshot::Sender<Result<(), String>>,
    },
    Read {
        path: String,
        actor: String,
        done: oneshot::Sender<Result<Fetched, String>>,
    },
}

/// What a read found, released to the reader only after its audit record is committed.
enum Fetched {
    Value {
        plain: Zeroizing<String>,
        expires_at: Option<DateTime<Utc>>,
        rotation_required: bool,
    },
    NotFound,
    Undecryptable {
        row: Box<SecretRow>,
        cause: CryptoError,
    },
}

/// The one task that reads secrets and writes the access log, in batches (group commit): it takes
/// every job queued up (up to [`MAX_AUDIT_BATCH`]), fetches all requested rows with one query,
/// decrypts them, records every access with one `record_access` call (one transaction), and only
/// then answers each caller. While a batch commits, the next one gathers. Started on first use,
/// inside the caller's Tokio runtime; it ends when the vault is dropped and the queue drains.
struct Ledger {
    store: Arc<dyn Store>,
    key: EncryptionKey,
    queue: OnceLock<mpsc::Sender<Job>>,
}

fn stopped() -> VaultError {
    VaultError::Audit("the audit writer has stopped".into())
}

impl Ledger {
    fn sender(&self) -> &mpsc::Sender<Job> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(AUDIT_QUEUE);
            tokio::spawn(run_ledger(self.store.clone(), self.key.clone(), rx));
            tx
        })
    }

    /// Enqueues the event and waits until its batch is committed.
    async fn record(&self, event: AccessEvent) -> Result<(), VaultError> {
        let (done, committed) = oneshot::channel();
        self.sender()
            .send(Job::Record { event, done })
            .await
            .map_err(|_| stopped())?;
        committed
            .await
            .map_err(|_| stopped())?
            .map_err(VaultError::Audit)
    }

    /// Reads and decrypts `path`; returns once the access (whatever its outcome) is committed.
    async fn read(&self, path: &SecretPath, actor: &Actor) -> Result<Fetched, VaultError> {
        let (done, answered) = oneshot::channel();
        self.sender()
            .send(Job::Read {
                path: path.to_string(),
                actor: actor.name().to_string(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(VaultError::Audit)
    }

    /// Several events committed together (rotation, import), bypassing the queue.
    async fn record_all(&self, events: &[AccessEvent]) -> Result<(), VaultError> {
        self.store
            .record_access(events)
            .await
            .map_err(|e| VaultError::Audit(e.to_string()))
    }
}

async fn run_ledger(store: Arc<dyn Store>, key: EncryptionKey, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
        let paths: BTreeSet<&str> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Read { path, .. } => Some(path.as_str()),
                Job::Record { .. } => None,
            })
            .collect();
        let paths: Vec<&str> = paths.into_iter().collect();
        let fetched = if paths.is_empty() {
            Ok(Vec::new())
        } else {
            store.get_secrets(&paths).await.map_err(|e| e.to_string())
        };
        let (rows, fetch_error) = match fetched {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut rows: BTreeMap<String, SecretRow> =
            rows.into_iter().map(|r| (r.path.clone(), r)).collect();
        let now = Utc::now();
        let mut events = Vec::with_capacity(batch.len());
        let mut answers: Vec<Option<Fetched>> = Vec::with_capacity(batch.len());
        for job in &batch {
            match job {
                Job::Record { event, .. } => {
                    events.push(event.clone());
                    answers.push(None);
                }
                Job::Read { .. } if fetch_error.is_some() => answers.push(None),
                Job::Read { path, actor, .. } => {
                    let (outcome, answer) = match rows.get(path) {
                        None => (outcome::NOT_FOUND, Fetched::NotFound),
                        Some(row) => match crypto::open(&key, path, &row.ciphertext) {
                            Ok(plain) => (
                                outcome::OK,
                                Fetched::Value {
                                    plain,
                                    expires_at: row.expires_at,
                                    rotation_required: row.rotation_required,
                                },
                            ),
                            Err(cause) => (
                                outcome::UNDECRYPTABLE,
                                Fetched::Undecryptable {
                                    row: Box::new(row.clone()),
                                    cause,
                                },
                            ),
                        },
                    };
                    events.push(AccessEvent {
                        path: path.clone(),
                        action: action::READ.to_string(),
                        actor: actor.clone(),
                        outcome: outcome.to_string(),
                        at: now,
                    });
                    answers.push(Some(answer));
                }
            }
        }
        rows.clear();
        let committed = store
            .record_access(&events)
            .await
            .map_err(|e| e.to_string());
        tracing::trace!(
            jobs = batch.len(),
            ok = committed.is_ok(),
            "secret access batch committed"
        );
        for (job, answer) in batch.drain(..).zip(answers) {
            match job {
                Job::Record { done, .. } => {
                    let _ = done.send(committed.clone());
                }
                Job::Read { done, .. } => {
                    let result = match (&fetch_error, &committed, answer) {
                        (Some(e), _, _) => Err(e.clone()),
                        (None, Err(e), _) => Err(e.clone()),
                        (None, Ok(()), Some(answer)) => Ok(answer),
                        (None, Ok(()), None) => Err("internal: read without an answer".into()),
                    };
                    // A reader that went away drops the value here (zeroized); its access is logged.
                    let _ = done.send(result);
                }
            }
        }
    }
}

/// Encrypted secrets with an audit trail. Cheap to share (`Arc<Vault>`); all methods take `&self`.
pub struct Vault {
    store: Arc<dyn Store>,
    key: EncryptionKey,
    audit: Ledger,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.store.backend())
            .field("key", &self.key)
            .finish()
    }
}

impl Vault {
    pub fn new(store: Arc<dyn Store>, key: EncryptionKey) -> Self {
        Vault {
            audit: Ledger {
                store: store.clone(),
                key: key.clone(),
                queue: OnceLock::new(),
            },
            store,
            key,
        }
    }

    pub fn key_fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    fn event(&self, path: &str, action: &str, outcome: &str, actor: &Actor) -> AccessEvent {
        AccessEvent {
            path: path.to_string(),
            action: action.to_string(),
            actor: actor.name().to_string(),
            outcome: outcome.to_string(),
            at: Utc::now(),
        }
    }

    async fn audit(
        &self,
        path: &SecretPath,
        action: &str,
        outcome: &str,
        actor: &Actor,
    ) -> Result<(), VaultError> {
        self.audit
            .record(self.event(path.as_str(), action, outcome, actor))
            .await
    }

    async fn check_reach(
        &self,
        path: &SecretPath,
        action: &str,
        actor: &Actor,
    ) -> Result<(), VaultError> {
        if actor.may_access(path) {
            return Ok(());
        }
        self.audit(path, action, outcome::DENIED, actor).await?;
        Err(VaultError::Denied {
            path: path.to_string(),
            actor: actor.to_string(),
        })
    }

    async fn undecryptable(&self, row: &SecretRow, cause: CryptoError) -> VaultError {
        let checks = self.store.key_checks().await.unwrap_or_default();
        let diagnosis = if !checks.is_empty() {
            if checks.iter().any(|c| opens(&self.key, c)) {
                Diagnosis::AlteredOrMoved
            } else {
                Diagnosis::WrongKey
            }
        } else {
            let sample = self
                .store
                .sample_secrets(KEY_CHECK_SAMPLE)
                .await
                .unwrap_or_default();
            let key_works_elsewhere = sample.iter().any(|r| {
                r.path != row.path && crypto::open(&self.key, &r.path, &r.ciphertext).is_ok()
            });
            if key_works_elsewhere {
                Diagnosis::AlteredOrMoved
            } else {
                Diagnosis::ProbablyWrongKey
            }
        };
        VaultError::Undecryptable {
            path: row.path.clone(),
            key_version: row.key_version,
            key_source: self.key.source().to_string(),
            fingerprint: self.key.fingerprint(),
            cause,
            diagnosis,
        }
    }

    /// The secret's value. Audited (also when refused or failing) before the value is returned.
    pub async fn get(&self, path: &SecretPath, actor: &Actor) -> Result<Revealed, VaultError> {
        self.check_reach(path, action::READ, actor).await?;
        match self.audit.read(path, actor).await? {
            Fetched::Value {
                plain,
                expires_at,
                rotation_required,
            } => Ok(Revealed {
                value: SecretValue::new(plain),
                expires_at,
                rotation_required,
            }),
            Fetched::NotFound => Err(VaultError::NotFound {
                path: path.to_string(),
            }),
            Fetched::Undecryptable { row, cause } => Err(self.undecryptable(&row, cause).await),
        }
    }

    /// Whether a secret exists at `path`, without decrypting it (for "required secret missing").
    pub async fn exists(&self, path: &SecretPath, actor: &Actor) -> Result<bool, VaultError> {
        if !actor.may_access(path) {
            return Err(VaultError::Denied {
                path: path.to_string(),
                actor: actor.to_string(),
            });
        }
        let found = self
            .store
            .list_secrets(&SecretFilter {
                path_prefix: Some(path.to_string()),
                ..SecretFilter::default()
            })
            .await?;
        Ok(found.iter().any(|m| m.path == path.as_str()))
    }

    /// Verifies this key against the vault and returns the key version it writes (see the module
    /// docs): the version of the check value it opens; for a vault without one, the version of a secret
    /// it decrypts (recording the check value), or 1 for a vault without secrets.
    pub async fn verify_key(&self) -> Result<u8, VaultError> {
        let checks = self.store.key_checks().await?;
        if !checks.is_empty() {
            if let Some(v) = checks
                .iter()
                .filter(|c| opens(&self.key, c))
                .filter_map(|c| version_byte(c.key_version))
                .max()
            {
                return Ok(v);
            }
            if self.store.sample_secrets(1).await?.is_empty() {
                // Nothing is protected by the recorded key any more: this key takes over.
                let version = 1;
                self.store
                    .reset_key_checks(&key_check(&self.key, version)?)
                    .await
                    .map_err(|_| self.key_mismatch_check())?;
                return Ok(version);
            }
            return Err(self.key_mismatch_check());
        }
        let all = self.store.all_secrets().await?;
        let version = if all.is_empty() {
            1
        } else {
            all.iter()
                .filter(|r| crypto::open(&self.key, &r.path, &r.ciphertext).is_ok())
                .find_map(|r| crypto::sealed_version(&r.ciphertext))
                .ok_or_else(|| {
                    self.key_mismatch(
                        "any of the vault's secrets",
                        all.iter().map(|r| r.path.as_str()),
                    )
                })?
        };
        // First successful verification: record the check value. When another process recorded one
        // for this version first, this key must open that one.
        if !self
            .store
            .insert_key_check(&key_check(&self.key, version)?)
            .await?
        {
            let recorded = self.store.key_checks().await?;
            if !recorded
                .iter()
                .any(|c| version_byte(c.key_version) == Some(version) && opens(&self.key, c))
            {
                return Err(self.key_mismatch_check());
            }
        }
        Ok(version)
    }

    fn key_mismatch_check(&self) -> VaultError {
        VaultError::KeyMismatch {
            key_source: self.key.source().to_string(),
            fingerprint: self.key.fingerprint(),
            checked: "the vault's key check value".into(),
        }
    }

    fn key_mismatch<'a>(&self, what: &str, paths: impl Iterator<Item = &'a str>) -> VaultError {
        VaultError::KeyMismatch {
            key_source: self.key.source().to_string(),
            fingerprint: self.key.fingerprint(),
            checked: format!("{what} ({})", list_paths(paths)),
        }
    }

    /// Stores `value` at `path` (creating or replacing it).
    pub async fn set(
        &self,
        path: &SecretPath,
        value: &SecretValue,
        options: &SetOptions,
        actor: &Actor,
    ) -> Result<Written, VaultError> {
        self.check_reach(path, action::WRITE, actor).await?;
        if value.is_empty() {
            return Err(VaultError::EmptyValue {
                path: path.to_string(),
            });
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(VaultError::TooLarge {
                path: path.to_string(),
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        if let Some(d) = &options.description {
            let why = if d.contains('\0') {
                Some(crate::store::NUL_IN_TEXT.to_string())
            } else if d.chars().count() > MAX_DESCRIPTION_CHARS {
                Some(format!(
                    "it is longer than {MAX_DESCRIPTION_CHARS} characters"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(VaultError::BadDescription {
                    path: path.to_string(),
                    why,
                });
            }
        }
        let version = match self.verify_key().await {
            Ok(v) => v,
            Err(e @ VaultError::KeyMismatch { .. }) => {
                self.audit(path, action::WRITE, outcome::KEY_MISMATCH, actor)
                    .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let existing = self.store.get_secret(path.as_str()).await?;
        let sealed = crypto::seal(&self.key, version, path.as_str(), value.expose().as_bytes())
            .map_err(|cause| VaultError::Encrypt {
                path: path.to_string(),
                cause,
            })?;
        let now = Utc::now();
        let row = SecretRow {
            path: path.to_string(),
            scope: path.scope().as_str().to_string(),
            project: path.project().map(str::to_string),
            service: path.service().map(str::to_string),
            description: options
                .description
                .clone()
                .or_else(|| existing.as_ref().and_then(|e| e.description.clone())),
            ciphertext: sealed,
            key_version: i32::from(version),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
            last_accessed_at: None,
            access_count: 0,
            expires_at: match options.expiry {
                Expiry::Keep => existing.as_ref().and_then(|e| e.expires_at),
                Expiry::Never => None,
                Expiry::At(t) => Some(t),
            },
            rotation_required: options.rotation_required,
        };
        self.store.put_secret(&row).await?;
        self.audit(path, action::WRITE, outcome::OK, actor).await?;
        Ok(if existing.is_some() {
            Written::Updated
        } else {
            Written::Created
        })
    }

    /// Deletes the secret at `path` after verifying the key (a wrong key deletes nothing);
    /// [`VaultError::NotFound`] when there is none. [`delete`] deletes without a key.
    pub async fn delete(&self, path: &SecretPath, actor: &Actor) -> Result<(), VaultError> {
        self.check_reach(path, action::DELETE, actor).await?;
        if let Err(e) = self.verify_key().await {
            if matches!(e, VaultError::KeyMismatch { .. }) {
                self.audit(path, action::DELETE, outcome::KEY_MISMATCH, actor)
                    .await?;
            }
            return Err(e);
        }
        delete(self.store.as_ref(), path, actor).await
    }

    /// Metadata of the secrets the actor may see (never values; not audited).
    pub async fn list(
        &self,
        filter: &ListFilter,
        actor: &Actor,
    ) -> Result<Vec<SecretInfo>, VaultError> {
        list(self.store.as_ref(), filter, actor).await
    }

    /// The access log, newest first, limited to what the actor may see.
    pub async fn audit_log(
        &self,
        path: Option<&SecretPath>,
        limit: i64,
        actor: &Actor,
    ) -> Result<Vec<AccessEvent>, VaultError> {
        audit_log(self.store.as_ref(), path, limit, actor).await
    }

    /// Re-encrypts every secret with `new_key` (key version + 1) in one transaction.
    pub async fn rotate_key(
        &self,
        new_key: &EncryptionKey,
        actor: &Actor,
    ) -> Result<RotationReport, VaultError> {
        if new_key.fingerprint() == self.key.fingerprint() && new_key.bytes() == self.key.bytes() {
            return Err(VaultError::SameKey {
                fingerprint: self.key.fingerprint(),
            });
        }
        let current = self.verify_key().await?;
        let rows = self.store.all_secrets().await?;
        let mut plaintexts: Vec<Zeroizing<String>> = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        for row in &rows {
            match crypto::open(&self.key, &row.path, &row.ciphertext) {
                Ok(p) => plaintexts.push(p),
                Err(_) => failed.push(row.path.as_str()),
            }
        }
        if !failed.is_empty() {
            // The key is verified: these secrets are altered (or from another key generation).
            return Err(VaultError::RotationBlocked {
                count: failed.len(),
                paths: list_paths(failed.into_iter()),
            });
        }
        let highest = rows
            .iter()
            .filter_map(|r| crypto::sealed_version(&r.ciphertext))
            .fold(current, u8::max);
        let from_version = (!rows.is_empty()).then_some(highest);
        let to_version = highest
            .checked_add(1)
            .ok_or(VaultError::VersionsExhausted)?;
        let check = key_check(new_key, to_version)?;
        let mut replaced = Vec::with_capacity(rows.len());
        for (row, plain) in rows.iter().zip(&plaintexts) {
            let sealed = crypto::seal(new_key, to_version, &row.path, plain.as_bytes()).map_err(
                |cause| VaultError::Encrypt {
                    path: row.path.clone(),
                    cause,
                },
            )?;
            replaced.push((row.path.clone(), sealed, i32::from(to_version)));
        }
        drop(plaintexts);
        self.store.replace_ciphertexts(&replaced, &check).await?;
        let events: Vec<AccessEvent> = rows
            .iter()
            .map(|r| self.event(&r.path, action::ROTATE, outcome::OK, actor))
            .collect();
        self.audit.record_all(&events).await?;
        Ok(RotationReport {
            rotated: rows.len(),
            from_version: from_version.map(i32::from),
            to_version: i32::from(to_version),
            new_fingerprint: new_key.fingerprint(),
        })
    }

    /// Brings secrets of the original service into the vault, re-encrypted with this vault's key, in
    /// one transaction. Refuses (importing nothing) when any path is invalid or already present, or any
    /// value cannot be decrypted with `legacy_key`.
    pub async fn import_legacy(
        &self,
        secrets: &[LegacySecret],
        legacy_key: &EncryptionKey,
        actor: &Actor,
    ) -> Result<ImportReport, VaultError> {
        let existing: BTreeSet<String> = self
            .store
            .list_secrets(&SecretFilter::default())
            .await?
            .into_iter()
            .map(|m| m.path)
            .collect();
        let mut problems: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut accepted = Vec::with_capacity(secrets.len());
        for s in secrets {
            let path = match SecretPath::parse(&s.key_path) {
                Ok(p) => p,
                Err(e) => {
                    problems
                        .entry("invalid paths")
                        .or_default()
                        .push(format!("`{}` ({})", e.path, e.problem));
                    continue;
                }
            };
            if existing.contains(path.as_str()) {
                problems
                    .entry("already in the vault")
                    .or_default()
                    .push(path.to_string());
                continue;
            }
            match crypto::open_legacy(legacy_key, &s.encrypted_value) {
                Ok(plain) => accepted.push((path, s, plain)),
                Err(cause) => problems
                    .entry("cannot be decrypted with the legacy key")
                    .or_default()
                    .push(format!("{path} ({cause})")),
            }
        }
        if !problems.is_empty() {
            let text = problems
                .into_iter()
                .map(|(what, items)| {
                    let count = items.len();
                    format!(
                        "{count} {what}: {}",
                        list_paths(items.iter().map(String::as_str))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(VaultError::ImportRefused { problems: text });
        }
        let version = self.verify_key().await?;
        let now = Utc::now();
        let mut rows = Vec::with_capacity(accepted.len());
        for (path, s, plain) in &accepted {
            let sealed = crypto::seal(&self.key, version, path.as_str(), plain.as_bytes())
                .map_err(|cause| VaultError::Encrypt {
                    path: path.to_string(),
                    cause,
                })?;
            let created_at = s.created_at.unwrap_or(now);
            rows.push(SecretRow {
                path: path.to_string(),
                scope: path.scope().as_str().to_string(),
                project: path.project().map(str::to_string),
                service: path.service().map(str::to_string),
                description: s.description.clone(),
                ciphertext: sealed,
                key_version: i32::from(version),
                created_at,
                updated_at: s.updated_at.unwrap_or(created_at),
                last_accessed_at: s.last_accessed_at,
                access_count: s.access_count.max(0),
                expires_at: s.expires_at,
                rotation_required: s.rotation_required,
            });
        }
        drop(accepted);
        self.store.import_secrets(&rows).await?;
        let events: Vec<AccessEvent> = rows
            .iter()
            .map(|r| self.event(&r.path, action::IMPORT, outcome::OK, actor))
            .collect();
        self.audit.record_all(&events).await?;
        Ok(ImportReport {
            imported: rows.len(),
            key_version: i32::from(version),
        })
    }
}

/// Deletes the secret at `path` (audited); needs no key. [`VaultError::NotFound`] when there is none.
pub async fn delete(store: &dyn Store, path: &SecretPath, actor: &Actor) -> Result<(), VaultError> {
    let event = |outcome: &str| AccessEvent {
        path: path.to_string(),
        action: action::DELETE.to_string(),
        actor: actor.name().to_string(),
        outcome: outcome.to_string(),
        at: Utc::now(),
    };
    let audit = |e: StoreError| VaultError::Audit(e.to_string());
    if !actor.may_access(path) {
        store
            .record_access(&[event(outcome::DENIED)])
            .await
            .map_err(audit)?;
        return Err(VaultError::Denied {
            path: path.to_string(),
            actor: actor.to_string(),
        });
    }
    let deleted = store.delete_secret(path.as_str()).await?;
    let result = if deleted {
        outcome::OK
    } else {
        outcome::NOT_FOUND
    };
    store.record_access(&[event(result)]).await.map_err(audit)?;
    if deleted {
        Ok(())
    } else {
        Err(VaultError::NotFound {
            path: path.to_string(),
        })
    }
}

/// Metadata of the secrets `actor` may see; needs no key (used by `list` without a vault).
pub async fn list(
    store: &dyn Store,
    filter: &ListFilter,
    actor: &Actor,
) -> Result<Vec<SecretInfo>, VaultError> {
    let project = match (actor.reach(), &filter.project) {
        (Reach::All, p) => p.clone(),
        (Reach::Project(own), None) => Some(own.clone()),
        (Reach::Project(own), Some(p)) if p == own => Some(own.clone()),
        (Reach::Project(_), Some(_)) => return Ok(Vec::new()),
    };
    let now = Utc::now();
    let metas = store
        .list_secrets(&SecretFilter {
            scope: filter.scope,
            project,
            path_prefix: None,
        })
        .await?;
    Ok(metas
        .into_iter()
        .map(|m| SecretInfo::from_meta(m, now))
        .collect())
}

/// The access log `actor` may see, newest first; needs no key.
pub async fn audit_log(
    store: &dyn Store,
    path: Option<&SecretPath>,
    limit: i64,
    actor: &Actor,
) -> Result<Vec<AccessEvent>, VaultError> {
    if let Some(p) = path
        && !actor.may_access(p)
    {
        return Err(VaultError::Denied {
            path: p.to_string(),
            actor: actor.to_string(),
        });
    }
    let events = store
        .access_log(path.map(SecretPath::as_str), limit.clamp(1, 100_000))
        .await?;
    Ok(match actor.reach() {
        Reach::All => events,
        Reach::Project(_) => events
            .into_iter()
            .filter(|e| SecretPath::parse(&e.path).is_ok_and(|p| actor.may_access(&p)))
            .collect(),
    })
}

/// `a, b, c and 4 more`: messages stay short when thousands of paths are involved.
fn list_paths<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = paths.collect();
    let shown = all.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 10 {
        format!("{shown} and {} more", all.len() - 10)
    } else {
        shown
    }
}

#[async_trait::async_trait]
impl super::SecretSource for Vault {
    async fn read_secret(
        &self,
        path: &str,
        actor: &str,
    ) -> Result<secrecy::SecretString, super::SecretSourceError> {
        let err = |reason: String| super::SecretSourceError {
            path: path.to_string(),
            reason,
        };
        let parsed = SecretPath::parse(path).map_err(|e| err(e.to_string()))?;
        let revealed = self
            .get(&parsed, &Actor::internal(actor))
            .await
            .map_err(|e| match e {
                VaultError::NotFound { .. } => {
                    err(format!("it is not set (supervisor secrets set {path})"))
                }
                other => err(other.to_string()),
            })?;
        Ok(secrecy::SecretString::from(
            revealed.value.expose().to_string(),
        ))
    }
}

#[async_trait::async_trait]
impl super::SecretSink for Vault {
    async fn write_secret(
        &self,
        path: &str,
        value: &secrecy::SecretString,
        description: &str,
        actor: &str,
    ) -> Result<(), super::SecretSinkError> {
        use secrecy::ExposeSecret;
        let err = |reason: String| super::SecretSinkError {
            path: path.to_string(),
            action: "store",
            reason,
        };
        let parsed = SecretPath::parse(path).map_err(|e| err(e.to_string()))?;
        let value = SecretValue::new(Zeroizing::new(value.expose_secret().to_string()));
        let options = SetOptions {
            description: Some(description.to_string()),
            ..SetOptions::default()
        };
        self.set(&parsed, &value, &options, &Actor::internal(actor))
            .await
            .map(|_| ())
            .map_err(|e| err(e.to_string()))
    }

    async fn delete_secret(&self, path: &str, actor: &str) -> Result<bool, super::SecretSinkError> {
        let err = |reason: String| super::SecretSinkError {
            path: path.to_string(),
            action: "delete",
            reason,
        };
        let parsed = SecretPath::parse(path).map_err(|e| err(e.to_string()))?;
        match self.delete(&parsed, &Actor::internal(actor)).await {
            Ok(()) => Ok(true),
            Err(VaultError::NotFound { .. }) => Ok(false),
            Err(e) => Err(err(e.to_string())),
        }
    }

    async fn secret_exists(&self, path: &str, actor: &str) -> Result<bool, super::SecretSinkError> {
        let err = |reason: String| super::SecretSinkError {
            path: path.to_string(),
            action: "look up",
            reason,
        };
        let parsed = SecretPath::parse(path).map_err(|e| err(e.to_string()))?;
        self.exists(&parsed, &Actor::internal(actor))
            .await
            .map_err(|e| err(e.to_string()))
    }
}
