//! A stateful fake of the Google Cloud APIs the supervisor uses, for tests: the OAuth token endpoint,
//! Compute Engine v1 (instances with their status machine, zonal operations, machine types), Cloud
//! Monitoring v3 (`timeSeries.list`) and API Keys v2 (keys, long-running operations, key strings), on
//! a real HTTP server bound to 127.0.0.1 on a free port.
//!
//! It follows the reference contracts (`compute.v1`, `monitoring.v3`, `apikeys.v2` discovery
//! documents): field names, full resource URLs in instances, operations PENDING/RUNNING/DONE with
//! `error.errors[{code, message}]`, `zoneOperations.wait` held open until DONE (bounded, below two
//! minutes), `setMachineType` refused with HTTP 400 unless the instance is TERMINATED, `requestId`
//! de-duplication (a repeated request returns the first one's operation), API key names with the
//! project *number*, deleted keys kept 30 days (listed with `showDeleted`), `keyId` conflicts answered
//! 409, and Google's error envelope `{"error": {code, message, status, errors[{reason}]}}`.
//!
//! The token endpoint verifies the RS256 assertion with the public key of a service account the test
//! registered ([`FakeGoogle::service_account`] generates one), checks `iss`, `aud`, `scope`, `iat` and
//! `exp`, and issues bearer tokens that every API call must carry (expired or unknown: 401).
//!
//! Time: operations take configurable durations ([`FakeConfig`]); state advances lazily on every
//! request. Faults: generic [`Fault`]s (5xx before or after processing, 429 with `Retry-After`,
//! latency) on any route, plus [`FakeGoogle::fail_starts`] (capacity: `ZONE_RESOURCE_POOL_EXHAUSTED`
//! for starts with a given machine type), [`FakeGoogle::fail_next_operation`] (an operation that ends
//! DONE with an error) and [`FakeGoogle::fail_next_key_operation`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where the real API's resource URLs point (the fake writes them the same way).
pub const COMPUTE_SELF: &str = "https://www.googleapis.com/compute/v1";

/// Durations and limits of a fake instance.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub stop_duration: Duration,
    pub start_duration: Duration,
    pub set_machine_type_duration: Duration,
    pub key_operation_duration: Duration,
    /// The longest a `zoneOperations.wait` call is held open (the real API: about 2 minutes).
    pub wait_max: Duration,
    /// `expires_in` of issued access tokens, in seconds.
    pub token_lifetime_secs: u64,
    /// Time series per `timeSeries.list` page.
    pub series_page_size: usize,
    /// Added to every request before it is handled (a network round trip, for benchmarks).
    pub latency: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            stop_duration: Duration::from_millis(300),
            start_duration: Duration::from_millis(300),
            set_machine_type_duration: Duration::from_millis(100),
            key_operation_duration: Duration::from_millis(100),
            wait_max: Duration::from_secs(10),
            token_lifetime_secs: 3599,
            series_page_size: 1000,
            latency: Duration::ZERO,
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status; the request is not processed.
    Status(u16),
    /// Process the request, then answer with this status: applied, but the client cannot know.
    StatusAfterApply(u16),
    /// Wait, then process and answer normally.
    Latency(Duration),
    /// Answer 429 with `Retry-After`; not processed.
    RateLimited { retry_after_secs: u64 },
    /// Answer 503 with `Retry-After`; not processed.
    Unavailable { retry_after_secs: u64 },
    /// Reset the connection without answering; not processed.
    Reset,
    /// Process, then reset the connection: applied, but the client got no answer.
    ResetAfterApply,
}

/// A fault for the next `times` requests matching `method` and `path` (a pattern where `*` matches
/// one segment, e.g. `/compute/v1/projects/*/zones/*/instances/*/stop`).
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub method: Option<Method>,
    pub path: Option<String>,
    pub times: usize,
}

impl Fault {
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            method: None,
            path: None,
            times: 1,
        }
    }
    pub fn status(code: u16) -> Self {
        Fault::new(FaultKind::Status(code))
    }
    pub fn status_after_apply(code: u16) -> Self {
        Fault::new(FaultKind::StatusAfterApply(code))
    }
    pub fn latency(d: Duration) -> Self {
        Fault::new(FaultKind::Latency(d))
    }
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::new(FaultKind::RateLimited { retry_after_secs })
    }
    pub fn unavailable(retry_after_secs: u64) -> Self {
        Fault::new(FaultKind::Unavailable { retry_after_secs })
    }
    pub fn reset() -> Self {
        Fault::new(FaultKind::Reset)
    }
    pub fn reset_after_apply() -> Self {
        Fault::new(FaultKind::ResetAfterApply)
    }
    pub fn on(mut self, method: Method, path_pattern: &str) -> Self {
        self.method = Some(method);
        self.path = Some(path_pattern.to_string());
        self
    }
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| path_matches(p, path))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// 0 while in flight, or when the connection was reset ([`super::faults::RESET`]).
    pub status: u16,
    pub at: Instant,
    /// The `Retry-After` of the answer, when it had one.
    pub retry_after: Option<Duration>,
}

/// A test service account: the key file JSON the supervisor reads, and its address.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub json: String,
}

/// An instance as the fake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeInstance {
    pub project: String,
    pub zone: String,
    pub name: String,
    pub id: String,
    pub status: String,
    pub machine_type: String,
    pub internal_ip: String,
    pub external_ip: Option<String>,
    /// (device name, size GB, boot)
    pub disks: Vec<(String, u64, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Stop,
    Start,
    SetMachineType,
}

impl OpKind {
    fn as_str(self) -> &'static str {
        match self {
            OpKind::Stop => "stop",
            OpKind::Start => "start",
            OpKind::SetMachineType => "setMachineType",
        }
    }
}

#[derive(Debug, Clone)]
struct FakeOperation {
    name: String,
    id: String,
    project: String,
    zone: String,
    instance: String,
    kind: OpKind,
    target_type: Option<String>,
    request_id: Option<String>,
    done_at: Instant,
    done: bool,
    /// Set when the operation ends with errors (and does nothing).
    errors: Option<Vec<(String, String)>>,
    insert_time: String,
    end_time: Option<String>,
}

/// An API key as the fake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeKey {
    pub project: String,
    pub key_id: String,
    pub uid: String,
    pub display_name: Option<String>,
    pub services: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub key_string: String,
    pub create_time: String,
    pub delete_time: Option<String>,
    /// Becomes visible (get/list) once its create operation is done.
    pub ready: bool,
}

#[derive(Debug, Clone)]
struct FakeKeyOperation {
    id: String,
    project: String,
    key_id: String,
    done_at: Instant,
    error: Option<(i64, String)>,
    delete: bool,
}

struct Series {
    project: String,
    instance_id: String,
    metric: String,
    labels: BTreeMap<String, String>,
    points: Vec<(DateTime<Utc>, f64)>,
}

struct StartFailure {
    instance: String,
    machine_type: Option<String>,
    code: String,
    times: usize,
}

struct State {
    config: FakeConfig,
    token_url: String,
    accounts: Vec<(String, Vec<u8>)>,
    tokens: HashMap<String, Instant>,
    token_counter: u64,
    instances: Vec<FakeInstance>,
    operations: Vec<FakeOperation>,
    start_failures: Vec<StartFailure>,
    operation_failures: Vec<(OpKind, String, String)>,
    series: Vec<Series>,
    keys: Vec<FakeKey>,
    key_operations: Vec<FakeKeyOperation>,
    key_operation_failures: Vec<(i64, String)>,
    faults: Vec<Fault>,
    log: Vec<LoggedRequest>,
    counter: u64,
}

type Shared = Arc<Mutex<State>>;

/// A running fake. Dropping it stops the server.
pub struct FakeGoogle {
    base: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One RSA key per test process: generating it is the slow part.
fn test_rsa_key() -> &'static (String, Vec<u8>) {
    static KEY: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
            .expect("generate the test service account's RSA key");
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode the test key as PKCS#8 PEM")
            .to_string();
        let public = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("encode the public key")
            .as_bytes()
            .to_vec();
        (pem, public)
    })
}

impl FakeGoogle {
    pub async fn start() -> Self {
        Self::start_with(FakeConfig::default()).await
    }

    pub async fn start_with(config: FakeConfig) -> Self {
        let (addr, listener) = super::faults::listener().await;
        let base = format!("http://{addr}");
        let state: Shared = Arc::new(Mutex::new(State {
            config,
            token_url: format!("{base}/token"),
            accounts: Vec::new(),
            tokens: HashMap::new(),
            token_counter: 0,
            instances: Vec::new(),
            operations: Vec::new(),
            start_failures: Vec::new(),
            operation_failures: Vec::new(),
            series: Vec::new(),
            keys: Vec::new(),
            key_operations: Vec::new(),
            key_operation_failures: Vec::new(),
            faults: Vec::new(),
            log: Vec::new(),
            counter: 0,
        }));
        let app = Router::new().fallback(entry).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGoogle {
            base,
            state,
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake Google state lock")
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }
    pub fn compute_url(&self) -> String {
        format!("{}/compute/v1", self.base)
    }
    pub fn monitoring_url(&self) -> String {
        format!("{}/v3", self.base)
    }
    pub fn apikeys_url(&self) -> String {
        format!("{}/v2", self.base)
    }

    /// Registers a service account whose key file (JSON, `token_uri` = this fake) is returned.
    pub fn service_account(&self, client_email: &str) -> ServiceAccount {
        let (pem, public) = test_rsa_key();
        self.lock()
            .accounts
            .push((client_email.to_string(), public.clone()));
        let json = json!({
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
        })
        .to_string();
        ServiceAccount {
            client_email: client_email.to_string(),
            json,
        }
    }

    /// A key file for an account the fake does not know (same key, unregistered address).
    pub fn unknown_service_account(&self, client_email: &str) -> ServiceAccount {
        let (pem, _) = test_rsa_key();
        let json = json!({
            "type": "service_account",
            "private_key": pem,
            "client_email": client_email,
            "token_uri": self.token_url(),
        })
        .to_string();
        ServiceAccount {
            client_email: client_email.to_string(),
            json,
        }
    }

    /// Adds an instance (RUNNING or TERMINATED) with one boot disk of 50 GB; returns its id.
    pub fn add_instance(
        &self,
        project: &str,
        zone: &str,
        name: &str,
        machine_type: &str,
        status: &str,
    ) -> String {
        let mut st = self.lock();
        st.counter += 1;
        let id = format!("{}", 4_000_000_000_000_000_000u64 + st.counter);
        let n = st.counter;
        st.instances.push(FakeInstance {
            project: project.into(),
            zone: zone.into(),
            name: name.into(),
            id: id.clone(),
            status: status.into(),
            machine_type: machine_type.into(),
            internal_ip: format!("10.128.0.{}", 1 + n % 250),
            external_ip: Some(format!("34.118.{}.{}", n % 250, 10 + n % 200)),
            disks: vec![(name.to_string(), 50, true)],
        });
        id
    }

    /// Adds a data disk to an instance.
    pub fn add_disk(&self, instance: &str, device: &str, size_gb: u64) {
        let mut st = self.lock();
        if let Some(i) = st.instances.iter_mut().find(|i| i.name == instance) {
            i.disks.push((device.into(), size_gb, false));
        }
    }

    pub fn instance(&self, name: &str) -> FakeInstance {
        let mut st = self.lock();
        advance(&mut st);
        st.instances
            .iter()
            .find(|i| i.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no instance {name} in the fake"))
    }

    /// Changes an instance as someone in the console would.
    pub fn set_instance(&self, name: &str, machine_type: Option<&str>, status: Option<&str>) {
        let mut st = self.lock();
        let i = st
            .instances
            .iter_mut()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no instance {name} in the fake"));
        if let Some(t) = machine_type {
            i.machine_type = t.into();
        }
        if let Some(s) = status {
            i.status = s.into();
        }
    }

    /// Starts of `instance` fail with `code` (e.g. `ZONE_RESOURCE_POOL_EXHAUSTED`) while it has
    /// `machine_type` (any type when `None`), `times` times.
    pub fn fail_starts(
        &self,
        instance: &str,
        machine_type: Option<&str>,
        code: &str,
        times: usize,
    ) {
        self.lock().start_failures.push(StartFailure {
            instance: instance.into(),
            machine_type: machine_type.map(str::to_string),
            code: code.into(),
            times,
        });
    }

    /// The next operation of this kind (`stop`, `start`, `setMachineType`) ends DONE with this
    /// error and changes nothing.
    pub fn fail_next_operation(&self, kind: &str, code: &str, message: &str) {
        let kind = match kind {
            "stop" => OpKind::Stop,
            "start" => OpKind::Start,
            _ => OpKind::SetMachineType,
        };
        self.lock()
            .operation_failures
            .push((kind, code.into(), message.into()));
    }

    /// Sets operation durations (slow operations).
    pub fn set_durations(&self, stop: Duration, start: Duration, set_type: Duration) {
        let mut st = self.lock();
        st.config.stop_duration = stop;
        st.config.start_duration = start;
        st.config.set_machine_type_duration = set_type;
    }

    pub fn set_wait_max(&self, d: Duration) {
        self.lock().config.wait_max = d;
    }

    pub fn set_token_lifetime(&self, secs: u64) {
        self.lock().config.token_lifetime_secs = secs;
    }

    pub fn set_series_page_size(&self, n: usize) {
        self.lock().config.series_page_size = n.max(1);
    }

    /// Makes every issued token invalid (as a revocation would).
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Adds points of a metric for an instance (`labels` such as `state=used`, `device=sda1`).
    pub fn add_points(
        &self,
        project: &str,
        instance_id: &str,
        metric: &str,
        labels: &[(&str, &str)],
        points: &[(DateTime<Utc>, f64)],
    ) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut st = self.lock();
        if let Some(s) = st.series.iter_mut().find(|s| {
            s.project == project
                && s.instance_id == instance_id
                && s.metric == metric
                && s.labels == labels
        }) {
            s.points.extend_from_slice(points);
            return;
        }
        st.series.push(Series {
            project: project.into(),
            instance_id: instance_id.into(),
            metric: metric.into(),
            labels,
            points: points.to_vec(),
        });
    }

    /// The project's keys (deleted ones too).
    pub fn keys(&self, project: &str) -> Vec<FakeKey> {
        let mut st = self.lock();
        advance(&mut st);
        st.keys
            .iter()
            .filter(|k| k.project == project)
            .cloned()
            .collect()
    }

    /// Adds a ready key as someone else would have made it.
    pub fn add_key(&self, project: &str, key_id: &str, display_name: &str) -> FakeKey {
        let mut st = self.lock();
        let key = FakeKey {
            project: project.into(),
            key_id: key_id.into(),
            uid: uuid::Uuid::new_v4().to_string(),
            display_name: Some(display_name.into()),
            services: vec![],
            annotations: BTreeMap::new(),
            key_string: new_key_string(),
            create_time: now(),
            delete_time: None,
            ready: true,
        };
        st.keys.push(key.clone());
        key
    }

    /// The next API Keys operation ends done with this `google.rpc` error.
    pub fn fail_next_key_operation(&self, code: i64, message: &str) {
        self.lock()
            .key_operation_failures
            .push((code, message.into()));
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    pub fn count(&self, method: Method, pattern: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == method && path_matches(pattern, &r.path))
            .count()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// The request log for timing checks ([`super::faults::retry_after_violations`]).
    pub fn attempts(&self) -> Vec<super::faults::Attempt> {
        self.lock()
            .log
            .iter()
            .map(|r| super::faults::Attempt {
                method: r.method.clone(),
                target: if r.query.is_empty() {
                    r.path.clone()
                } else {
                    format!("{}?{}", r.path, r.query)
                },
                at: r.at,
                status: r.status,
                retry_after: r.retry_after,
            })
            .collect()
    }

    /// Faults injected and not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.iter().map(|f| f.times).sum()
    }

    /// The faults not yet consumed, for a failure message.
    pub fn pending_fault_list(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Every operation still running finishes now (one that "never finishes" is let go).
    pub fn finish_operations(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        for o in st.operations.iter_mut().filter(|o| !o.done) {
            o.done_at = now;
        }
        for o in st.key_operations.iter_mut() {
            o.done_at = o.done_at.min(now);
        }
        advance(&mut st);
    }

    /// Compute Engine operations by kind (`stop`, `start`, `setMachineType`) and instance.
    pub fn operation_count(&self, kind: &str, instance: &str) -> usize {
        self.lock()
            .operations
            .iter()
            .filter(|o| o.kind.as_str() == kind && o.instance == instance)
            .count()
    }

    /// How long API Keys operations take (a very long one never finishes within a test).
    pub fn set_key_operation_duration(&self, d: Duration) {
        self.lock().config.key_operation_duration = d;
    }
}

/// The number the fake gives a project id (key names use it, as the real API does).
pub fn project_number(project: &str) -> String {
    let h = project.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
    });
    format!("{}", 100_000_000_000 + h % 899_999_999_999)
}

fn new_key_string() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    let tail: String = bytes
        .iter()
        .chain(more.iter())
        .take(35)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("AIza{tail}")
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_matches('/').split('/').collect();
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
}

// ---------------------------------------------------------------------------------------------------
// Requests

fn gerr(code: u16, status: &str, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = json!({"error": {
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": status,
    }});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    gerr(
        404,
        "NOT_FOUND",
        "notFound",
        format!("The resource '{what}' was not found"),
    )
}

async fn entry(
    AxumState(state): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let task = tokio::spawn(process(state, method, uri, headers, body));
    match task.await {
        Ok(r) => r,
        Err(_) => gerr(500, "INTERNAL", "backendError", "the fake panicked"),
    }
}

async fn process(
    state: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let (index, fault, latency) = {
        let mut st = state.lock().expect("fake state lock");
        st.log.push(LoggedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status: 0,
            at: Instant::now(),
            retry_after: None,
        });
        let index = st.log.len() - 1;
        let fault = st
            .faults
            .iter()
            .position(|f| f.times > 0 && f.matches(&method, &path))
            .map(|i| {
                let f = &mut st.faults[i];
                f.times -= 1;
                let kind = f.kind.clone();
                if f.times == 0 {
                    st.faults.remove(i);
                }
                kind
            });
        (index, fault, st.config.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reset = matches!(fault, Some(FaultKind::Reset | FaultKind::ResetAfterApply));
    let response = match fault {
        Some(FaultKind::Status(code)) => injected(code),
        Some(FaultKind::RateLimited { retry_after_secs }) => {
            let mut r = gerr(
                429,
                "RESOURCE_EXHAUSTED",
                "rateLimitExceeded",
                "Quota exceeded for quota metric 'Queries' (injected)",
            );
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&retry_after_secs.to_string())
                    .unwrap_or(HeaderValue::from_static("1")),
            );
            r
        }
        Some(FaultKind::Latency(d)) => {
            tokio::time::sleep(d).await;
            handle(&state, &method, &path, &query, &headers, &body).await
        }
        Some(FaultKind::StatusAfterApply(code)) => {
            let _ = handle(&state, &method, &path, &query, &headers, &body).await;
            injected(code)
        }
        Some(FaultKind::Unavailable { retry_after_secs }) => {
            let mut r = injected(503);
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&retry_after_secs.to_string())
                    .unwrap_or(HeaderValue::from_static("1")),
            );
            r
        }
        Some(FaultKind::Reset) => super::faults::reset_response(),
        Some(FaultKind::ResetAfterApply) => {
            let _ = handle(&state, &method, &path, &query, &headers, &body).await;
            super::faults::reset_response()
        }
        None => handle(&state, &method, &path, &query, &headers, &body).await,
    };
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    if let Ok(mut st) = state.lock()
        && let Some(entry) = st.log.get_mut(index)
    {
        entry.status = if reset {
            super::faults::RESET
        } else {
            response.status().as_u16()
        };
        entry.retry_after = retry_after;
    }
    response
}

fn injected(code: u16) -> Response {
    gerr(
        code,
        if code == 503 {
            "UNAVAILABLE"
        } else {
            "INTERNAL"
        },
        "backendError",
        format!("Internal error (injected HTTP {code})"),
    )
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn q_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn handle(
    state: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let q = query_pairs(query);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs == ["token"] {
        return token(state, method, headers, body);
    }
    {
        let mut st = state.lock().expect("fake state lock");
        if let Err(r) = authenticate(&mut st, headers) {
            return *r;
        }
    }
    match (segs.as_slice(), method.as_str()) {
        (
            [
                "compute",
                "v1",
                "projects",
                project,
                "zones",
                zone,
                "operations",
                op,
                "wait",
            ],
            "POST",
        ) => wait_operation(state, project, zone, op).await,
        (["compute", "v1", rest @ ..], m) => {
            let mut st = state.lock().expect("fake state lock");
            advance(&mut st);
            compute(&mut st, m, rest, &q, body)
        }
        (["v3", "projects", project, "timeSeries"], "GET") => {
            let mut st = state.lock().expect("fake state lock");
            time_series(&mut st, project, &q)
        }
        (["v2", rest @ ..], m) => {
            let mut st = state.lock().expect("fake state lock");
            advance(&mut st);
            apikeys(&mut st, m, rest, &q, body)
        }
        _ => gerr(404, "NOT_FOUND", "notFound", format!("no route for {path}")),
    }
}

fn authenticate(st: &mut State, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let unauthenticated = || {
        gerr(
            401,
            "UNAUTHENTICATED",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Box::new(unauthenticated()))?;
    match st.tokens.get(token) {
        Some(expiry) if Instant::now() < *expiry => Ok(()),
        _ => Err(Box::new(unauthenticated())),
    }
}

// --- OAuth ----------------------------------------------------------------------------------------------

fn oauth_error(kind: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json; charset=utf-8")],
        json!({"error": kind, "error_description": description}).to_string(),
    )
        .into_response()
}

fn token(state: &Shared, method: &Method, headers: &HeaderMap, body: &Bytes) -> Response {
    if method != Method::POST {
        return oauth_error("invalid_request", "POST required");
    }
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error("invalid_request", "Invalid content type");
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if q_get(&form, "grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error("unsupported_grant_type", "Invalid grant_type");
    }
    let Some(assertion) = q_get(&form, "assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let mut st = state.lock().expect("fake state lock");
    match verify_assertion(&st, assertion) {
        Ok(()) => {
            st.token_counter += 1;
            let token = format!(
                "ya29.fake{}{}",
                st.token_counter,
                uuid::Uuid::new_v4().simple()
            );
            let lifetime = st.config.token_lifetime_secs;
            st.tokens.insert(
                token.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            );
            ok(json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}))
        }
        Err((kind, description)) => oauth_error(kind, &description),
    }
}

fn verify_assertion(st: &State, assertion: &str) -> Result<(), (&'static str, String)> {
    let bad = |d: &str| ("invalid_grant", d.to_string());
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(bad(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        ));
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
    let header: Value = decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("Invalid JWT header"))?;
    if header["alg"] != "RS256" {
        return Err(bad("Invalid JWT: alg must be RS256"));
    }
    let claims: Value = decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("Invalid JWT claims"))?;
    let iss = claims["iss"].as_str().unwrap_or_default();
    let Some((_, public)) = st.accounts.iter().find(|(e, _)| e == iss) else {
        return Err(("invalid_grant", "Invalid grant: account not found".into()));
    };
    let signature = decode(s).ok_or_else(|| bad("Invalid JWT Signature."))?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public,
    );
    key.verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| bad("Invalid JWT Signature."))?;
    if claims["aud"].as_str() != Some(st.token_url.as_str()) {
        return Err(bad("Invalid JWT: audience"));
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == CLOUD_PLATFORM) {
        return Err((
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".into(),
        ));
    }
    let now = Utc::now().timestamp();
    let iat = claims["iat"].as_i64().unwrap_or(0);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp <= now || iat > now + 300 || exp - iat > 3600 {
        return Err(bad(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    Ok(())
}

// --- Compute ----------------------------------------------------------------------------------------------

fn machine_type_spec(name: &str) -> Option<(i64, i64, bool)> {
    let shared = match name {
        "e2-micro" => Some((2, 1024)),
        "e2-small" => Some((2, 2048)),
        "e2-medium" => Some((2, 4096)),
        "f1-micro" => Some((1, 614)),
        "g1-small" => Some((1, 1740)),
        _ => None,
    };
    if let Some((c, m)) = shared {
        return Some((c, m, true));
    }
    let parts: Vec<&str> = name.split('-').collect();
    match parts.as_slice() {
        ["custom", c, m] | [_, "custom", c, m] => {
            let (c, m): (i64, i64) = (c.parse().ok()?, m.parse().ok()?);
            Some((c, m, false))
        }
        [family, class, n] => {
            let n: i64 = n.parse().ok()?;
            let per_cpu = match (*family, *class) {
                ("n1", "standard") => 3840,
                (_, "standard") => 4096,
                (_, "highmem") => 8192,
                (_, "highcpu") => 1024,
                _ => return None,
            };
            matches!(*family, "e2" | "n1" | "n2" | "n2d" | "c2" | "c3" | "t2d").then_some((
                n,
                n * per_cpu,
                false,
            ))
        }
        _ => None,
    }
}

fn instance_json(i: &FakeInstance) -> Value {
    let zone_url = format!("{COMPUTE_SELF}/projects/{}/zones/{}", i.project, i.zone);
    let mut access = json!({"kind": "compute#accessConfig", "name": "External NAT", "type": "ONE_TO_ONE_NAT", "networkTier": "PREMIUM"});
    // An ephemeral external address exists only while the instance runs.
    if i.status == "RUNNING"
        && let Some(ip) = &i.external_ip
    {
        access["natIP"] = json!(ip);
    }
    json!({
        "kind": "compute#instance",
        "id": i.id,
        "creationTimestamp": "2026-01-05T10:00:00.000-08:00",
        "name": i.name,
        "machineType": format!("{zone_url}/machineTypes/{}", i.machine_type),
        "status": i.status,
        "zone": zone_url,
        "canIpForward": false,
        "cpuPlatform": "Intel Broadwell",
        "networkInterfaces": [{
            "kind": "compute#networkInterface",
            "name": "nic0",
            "network": format!("{COMPUTE_SELF}/projects/{}/global/networks/default", i.project),
            "networkIP": i.internal_ip,
            "accessConfigs": [access],
            "fingerprint": "abc=",
        }],
        "disks": i.disks.iter().enumerate().map(|(n, (device, size, boot))| json!({
            "kind": "compute#attachedDisk",
            "type": "PERSISTENT",
            "mode": "READ_WRITE",
            "source": format!("{zone_url}/disks/{device}"),
            "deviceName": device,
            "index": n,
            "boot": boot,
            "autoDelete": boot,
            "interface": "SCSI",
            "diskSizeGb": size.to_string(),
        })).collect::<Vec<_>>(),
        "selfLink": format!("{zone_url}/instances/{}", i.name),
        "labelFingerprint": "42WmSpB8rSM=",
        "fingerprint": "Ccf5mmd6KGI=",
        "startRestricted": false,
        "deletionProtection": false,
    })
}

fn operation_json(op: &FakeOperation) -> Value {
    let zone_url = format!("{COMPUTE_SELF}/projects/{}/zones/{}", op.project, op.zone);
    let mut v = json!({
        "kind": "compute#operation",
        "id": op.id,
        "name": op.name,
        "zone": zone_url,
        "operationType": op.kind.as_str(),
        "targetLink": format!("{zone_url}/instances/{}", op.instance),
        "targetId": "1",
        "status": if op.done { "DONE" } else { "RUNNING" },
        "user": "supervisor@fake-project.iam.gserviceaccount.com",
        "progress": if op.done { 100 } else { 0 },
        "insertTime": op.insert_time,
        "startTime": op.insert_time,
        "selfLink": format!("{zone_url}/operations/{}", op.name),
    });
    if let Some(r) = &op.request_id {
        v["clientOperationId"] = json!(r);
    }
    if let Some(t) = &op.end_time {
        v["endTime"] = json!(t);
    }
    if op.done
        && let Some(errors) = &op.errors
    {
        v["error"] = json!({"errors": errors.iter().map(|(code, message)| json!({"code": code, "message": message})).collect::<Vec<_>>()});
        v["httpErrorStatusCode"] = json!(503);
        v["httpErrorMessage"] = json!("SERVICE UNAVAILABLE");
    }
    v
}

/// Completes every operation whose time has come, applying its effect.
fn advance(st: &mut State) {
    let now = Instant::now();
    for i in 0..st.operations.len() {
        let op = st.operations[i].clone();
        if op.done || now < op.done_at {
            continue;
        }
        let failed = op.errors.is_some();
        if let Some(inst) = st
            .instances
            .iter_mut()
            .find(|x| x.project == op.project && x.zone == op.zone && x.name == op.instance)
        {
            match (op.kind, failed) {
                (OpKind::Stop, false) => inst.status = "TERMINATED".into(),
                (OpKind::Start, false) => inst.status = "RUNNING".into(),
                (OpKind::Start, true) => inst.status = "TERMINATED".into(),
                (OpKind::SetMachineType, false) => {
                    if let Some(t) = &op.target_type {
                        inst.machine_type = t.clone();
                    }
                }
                _ => {}
            }
        }
        let o = &mut st.operations[i];
        o.done = true;
        o.end_time = Some(now_string());
    }
    let ops: Vec<FakeKeyOperation> = st
        .key_operations
        .iter()
        .filter(|o| now >= o.done_at)
        .cloned()
        .collect();
    for o in ops {
        if o.error.is_none()
            && let Some(k) = st
                .keys
                .iter_mut()
                .find(|k| k.project == o.project && k.key_id == o.key_id)
        {
            if o.delete {
                if k.delete_time.is_none() {
                    k.delete_time = Some(now_string());
                }
            } else {
                k.ready = true;
            }
        }
    }
}

fn now_string() -> String {
    now()
}

fn compute(
    st: &mut State,
    method: &str,
    rest: &[&str],
    q: &[(String, String)],
    body: &Bytes,
) -> Response {
    match (rest, method) {
        (["projects", project, "zones", zone, "instances", name], "GET") => st
            .instances
            .iter()
            .find(|i| i.project == *project && i.zone == *zone && i.name == *name)
            .map(|i| ok(instance_json(i)))
            .unwrap_or_else(|| {
                not_found(&format!("projects/{project}/zones/{zone}/instances/{name}"))
            }),
        (
            [
                "projects",
                project,
                "zones",
                zone,
                "instances",
                name,
                action,
            ],
            "POST",
        ) => {
            let kind = match *action {
                "stop" => OpKind::Stop,
                "start" => OpKind::Start,
                "setMachineType" => OpKind::SetMachineType,
                _ => {
                    return gerr(
                        400,
                        "INVALID_ARGUMENT",
                        "invalid",
                        format!("unknown method {action}"),
                    );
                }
            };
            instance_action(st, project, zone, name, kind, q, body)
        }
        (["projects", project, "zones", zone, "operations", op], "GET") => st
            .operations
            .iter()
            .find(|o| o.project == *project && o.zone == *zone && o.name == *op)
            .map(|o| ok(operation_json(o)))
            .unwrap_or_else(|| {
                not_found(&format!("projects/{project}/zones/{zone}/operations/{op}"))
            }),
        (["projects", project, "zones", zone, "machineTypes", t], "GET") => {
            match machine_type_spec(t) {
                Some((cpus, mem, shared)) => ok(json!({
                    "kind": "compute#machineType",
                    "id": "801016",
                    "name": t,
                    "description": format!("{cpus} vCPUs, {} GB RAM", mem as f64 / 1024.0),
                    "guestCpus": cpus,
                    "memoryMb": mem,
                    "isSharedCpu": shared,
                    "maximumPersistentDisks": 128,
                    "maximumPersistentDisksSizeGb": "263168",
                    "zone": zone,
                    "selfLink": format!("{COMPUTE_SELF}/projects/{project}/zones/{zone}/machineTypes/{t}"),
                })),
                None => not_found(&format!("projects/{project}/zones/{zone}/machineTypes/{t}")),
            }
        }
        _ => gerr(404, "NOT_FOUND", "notFound", "no such Compute route"),
    }
}

fn valid_request_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| !u.is_nil())
}

fn instance_action(
    st: &mut State,
    project: &str,
    zone: &str,
    name: &str,
    kind: OpKind,
    q: &[(String, String)],
    body: &Bytes,
) -> Response {
    let request_id = q_get(q, "requestId").map(str::to_string);
    if let Some(r) = &request_id {
        if !valid_request_id(r) {
            return gerr(
                400,
                "INVALID_ARGUMENT",
                "invalid",
                format!(
                    "Invalid value for field 'requestId': '{r}'. The request ID must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000)."
                ),
            );
        }
        // A request id seen before: the first request's operation, nothing done again.
        if let Some(op) = st
            .operations
            .iter()
            .find(|o| o.request_id.as_deref() == Some(r.as_str()))
        {
            return ok(operation_json(op));
        }
    }
    let Some(idx) = st
        .instances
        .iter()
        .position(|i| i.project == project && i.zone == zone && i.name == name)
    else {
        return not_found(&format!("projects/{project}/zones/{zone}/instances/{name}"));
    };
    let status = st.instances[idx].status.clone();
    let mut target_type = None;
    let now = Instant::now();
    let cfg = st.config.clone();
    let mut errors = None;
    let done_at = match kind {
        OpKind::Stop => match status.as_str() {
            "RUNNING" | "STAGING" | "PROVISIONING" | "REPAIRING" => {
                st.instances[idx].status = "STOPPING".into();
                now + cfg.stop_duration
            }
            "STOPPING" => st
                .operations
                .iter()
                .filter(|o| o.instance == name && o.kind == OpKind::Stop && !o.done)
                .map(|o| o.done_at)
                .max()
                .unwrap_or(now),
            _ => now,
        },
        OpKind::Start => match status.as_str() {
            "TERMINATED" => {
                st.instances[idx].status = "STAGING".into();
                let t = st.instances[idx].machine_type.clone();
                if let Some(f) = st.start_failures.iter_mut().find(|f| {
                    f.times > 0
                        && f.instance == name
                        && f.machine_type.as_deref().is_none_or(|m| m == t)
                }) {
                    f.times -= 1;
                    errors = Some(vec![(
                        f.code.clone(),
                        format!(
                            "The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later."
                        ),
                    )]);
                }
                now + cfg.start_duration
            }
            "RUNNING" | "STAGING" | "PROVISIONING" => now,
            other => {
                return gerr(
                    400,
                    "FAILED_PRECONDITION",
                    "resourceNotReady",
                    format!(
                        "The resource 'projects/{project}/zones/{zone}/instances/{name}' is not ready (status {other})"
                    ),
                );
            }
        },
        OpKind::SetMachineType => {
            let requested: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    return gerr(
                        400,
                        "INVALID_ARGUMENT",
                        "parseError",
                        "This API does not support parsing form-encoded input.",
                    );
                }
            };
            let Some(url) = requested["machineType"].as_str() else {
                return gerr(
                    400,
                    "INVALID_ARGUMENT",
                    "required",
                    "Required field 'machineType' not specified",
                );
            };
            let short = url.rsplit('/').next().unwrap_or(url).to_string();
            let zone_ok = !url.contains("/zones/") || url.contains(&format!("zones/{zone}/"));
            if machine_type_spec(&short).is_none() || !zone_ok {
                return gerr(
                    400,
                    "INVALID_ARGUMENT",
                    "invalid",
                    format!(
                        "Invalid value for field 'resource.machineType': '{url}'. Machine type with name '{short}' does not exist in zone '{zone}'."
                    ),
                );
            }
            if status != "TERMINATED" {
                return gerr(
                    400,
                    "FAILED_PRECONDITION",
                    "invalidResourceUsage",
                    "Invalid resource usage: 'Instance should be in the STOPPED state.'",
                );
            }
            target_type = Some(short);
            now + cfg.set_machine_type_duration
        }
    };
    if let Some(i) = st
        .operation_failures
        .iter()
        .position(|(k, _, _)| *k == kind)
    {
        let (_, code, message) = st.operation_failures.remove(i);
        errors = Some(vec![(code, message)]);
    }
    st.counter += 1;
    let n = st.counter;
    let op = FakeOperation {
        name: format!(
            "operation-{n}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        id: format!("{}", 7_000_000_000_000_000_000u64 + n),
        project: project.into(),
        zone: zone.into(),
        instance: name.into(),
        kind,
        target_type,
        request_id,
        done_at,
        done: false,
        errors,
        insert_time: now_string(),
        end_time: None,
    };
    st.operations.push(op);
    advance(st);
    let op = st.operations.last().cloned();
    ok(op.map(|o| operation_json(&o)).unwrap_or(Value::Null))
}

async fn wait_operation(state: &Shared, project: &str, zone: &str, op: &str) -> Response {
    let started = Instant::now();
    loop {
        {
            let mut st = state.lock().expect("fake state lock");
            advance(&mut st);
            let Some(o) = st
                .operations
                .iter()
                .find(|o| o.project == project && o.zone == zone && o.name == op)
            else {
                return not_found(&format!("projects/{project}/zones/{zone}/operations/{op}"));
            };
            if o.done || started.elapsed() >= st.config.wait_max {
                return ok(operation_json(o));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- Monitoring -------------------------------------------------------------------------------------------

fn filter_value(filter: &str, key: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"{}\s*=\s*"([^"]*)""#, regex::escape(key))).ok()?;
    re.captures(filter).map(|c| c[1].to_string())
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn time_series(st: &mut State, project: &str, q: &[(String, String)]) -> Response {
    let invalid = |m: &str| gerr(400, "INVALID_ARGUMENT", "badRequest", m.to_string());
    let Some(filter) = q_get(q, "filter") else {
        return invalid("Field filter had an invalid value: a filter is required");
    };
    let Some(metric) = filter_value(filter, "metric.type") else {
        return invalid(
            "Field filter had an invalid value: the filter must name a single metric type",
        );
    };
    let Some(end) = parse_time(q_get(q, "interval.endTime")) else {
        return invalid("Field interval.endTime had an invalid value");
    };
    let start = match q_get(q, "interval.startTime") {
        Some(s) => match parse_time(Some(s)) {
            Some(t) => t,
            None => return invalid("Field interval.startTime had an invalid value"),
        },
        None => end,
    };
    if start > end {
        return invalid("The start time must be before the end time");
    }
    match q_get(q, "view") {
        Some("FULL") | Some("HEADERS") => {}
        _ => return invalid("Field view had an invalid value"),
    }
    let period = match q_get(q, "aggregation.alignmentPeriod") {
        Some(p) => match p.strip_suffix('s').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if n >= 60 => Some(n),
            _ => return invalid("The alignment period must be at least 60 seconds"),
        },
        None => None,
    };
    let aligner = q_get(q, "aggregation.perSeriesAligner").map(str::to_string);
    if aligner.is_some() != period.is_some() {
        return invalid("An alignment period and a per-series aligner go together");
    }
    let instance = filter_value(filter, "resource.labels.instance_id");
    let state_label = filter_value(filter, "metric.labels.state");
    let headers_only = q_get(q, "view") == Some("HEADERS");
    let mut series: Vec<Value> = Vec::new();
    for s in st.series.iter().filter(|s| {
        s.project == project
            && s.metric == metric
            && instance.as_deref().is_none_or(|i| i == s.instance_id)
            && state_label
                .as_deref()
                .is_none_or(|v| s.labels.get("state").map(String::as_str) == Some(v))
    }) {
        let mut raw: Vec<(DateTime<Utc>, f64)> = s
            .points
            .iter()
            .filter(|(t, _)| *t > start && *t <= end)
            .copied()
            .collect();
        raw.sort_by_key(|p| std::cmp::Reverse(p.0));
        let points: Vec<(DateTime<Utc>, f64)> = match (period, aligner.as_deref()) {
            (Some(p), Some(a)) => {
                let mut buckets: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
                for (t, v) in &raw {
                    let k = (end - *t).num_seconds() / p;
                    buckets.entry(k).or_default().push(*v);
                }
                buckets
                    .into_iter()
                    .map(|(k, vs)| {
                        let v = match a {
                            "ALIGN_MAX" => vs.iter().copied().fold(f64::MIN, f64::max),
                            "ALIGN_MIN" => vs.iter().copied().fold(f64::MAX, f64::min),
                            _ => vs.iter().sum::<f64>() / vs.len() as f64,
                        };
                        (end - chrono::Duration::seconds(k * p), v)
                    })
                    .collect()
            }
            _ => raw,
        };
        if points.is_empty() {
            continue;
        }
        let mut v = json!({
            "metric": {"type": s.metric, "labels": s.labels},
            "resource": {"type": "gce_instance", "labels": {"project_id": s.project, "instance_id": s.instance_id, "zone": "us-central1-a"}},
            "metricKind": "GAUGE",
            "valueType": "DOUBLE",
        });
        if !headers_only {
            v["points"] = json!(points.iter().map(|(t, x)| json!({
                "interval": {"startTime": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "endTime": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
                "value": {"doubleValue": x},
            })).collect::<Vec<_>>());
        }
        series.push(v);
    }
    let from: usize = q_get(q, "pageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let size = st.config.series_page_size;
    let page: Vec<Value> = series.iter().skip(from).take(size).cloned().collect();
    let mut body = json!({});
    if !page.is_empty() {
        body["timeSeries"] = json!(page);
    }
    if from + size < series.len() {
        body["nextPageToken"] = json!((from + size).to_string());
    }
    if metric.starts_with("compute.googleapis.com/") {
        body["unit"] = json!("10^2.%");
    }
    ok(body)
}

// --- API Keys -------------------------------------------------------------------------------------------

fn key_name(k: &FakeKey) -> String {
    format!(
        "projects/{}/locations/global/keys/{}",
        project_number(&k.project),
        k.key_id
    )
}

fn key_json(k: &FakeKey) -> Value {
    let mut v = json!({
        "name": key_name(k),
        "uid": k.uid,
        "createTime": k.create_time,
        "updateTime": k.create_time,
        "etag": format!("W/\"{}\"", &k.uid[..8]),
    });
    if let Some(d) = &k.display_name {
        v["displayName"] = json!(d);
    }
    if !k.services.is_empty() {
        v["restrictions"] = json!({"apiTargets": k.services.iter().map(|s| json!({"service": s})).collect::<Vec<_>>()});
    }
    if !k.annotations.is_empty() {
        v["annotations"] = json!(k.annotations);
    }
    if let Some(t) = &k.delete_time {
        v["deleteTime"] = json!(t);
    }
    v
}

/// `projects/<id or number>` → the project id the fake knows it by.
fn resolve_project(st: &State, p: &str) -> String {
    st.keys
        .iter()
        .map(|k| k.project.clone())
        .find(|id| project_number(id) == p)
        .unwrap_or_else(|| p.to_string())
}

fn key_operation_json(st: &State, o: &FakeKeyOperation) -> Value {
    let done = Instant::now() >= o.done_at;
    let mut v = json!({
        "name": format!("operations/{}", o.id),
        "metadata": {"@type": "type.googleapis.com/google.api.apikeys.v2.OperationMetadata"},
        "done": done,
    });
    if done {
        match &o.error {
            Some((code, message)) => v["error"] = json!({"code": code, "message": message}),
            None => {
                if let Some(k) = st
                    .keys
                    .iter()
                    .find(|k| k.project == o.project && k.key_id == o.key_id)
                {
                    let mut r = key_json(k);
                    r["@type"] = json!("type.googleapis.com/google.api.apikeys.v2.Key");
                    // The create operation's answer carries the key string, as the real one does:
                    // clients must not let it escape.
                    if !o.delete {
                        r["keyString"] = json!(k.key_string);
                    }
                    v["response"] = r;
                }
            }
        }
    }
    v
}

fn key_id_ok(id: &str) -> bool {
    let re = regex::Regex::new(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$").expect("key id regex");
    re.is_match(id) && uuid::Uuid::parse_str(id).is_err()
}

fn apikeys(
    st: &mut State,
    method: &str,
    rest: &[&str],
    q: &[(String, String)],
    body: &Bytes,
) -> Response {
    let key_op_duration = st.config.key_operation_duration;
    match (rest, method) {
        (["operations", id], "GET") => st
            .key_operations
            .iter()
            .find(|o| o.id == *id)
            .map(|o| ok(key_operation_json(st, o)))
            .unwrap_or_else(|| not_found(&format!("operations/{id}"))),
        (["projects", p, "locations", loc, "keys"], "POST") => {
            if *loc != "global" {
                return gerr(
                    400,
                    "INVALID_ARGUMENT",
                    "badRequest",
                    "Location must be global",
                );
            }
            let project = resolve_project(st, p);
            let key_id = match q_get(q, "keyId") {
                Some(id) if key_id_ok(id) => id.to_string(),
                Some(id) => {
                    return gerr(
                        400,
                        "INVALID_ARGUMENT",
                        "badRequest",
                        format!("Invalid key id {id}"),
                    );
                }
                None => uuid::Uuid::new_v4().to_string(),
            };
            let req: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    return gerr(
                        400,
                        "INVALID_ARGUMENT",
                        "badRequest",
                        "Invalid JSON payload received.",
                    );
                }
            };
            let display_name = req["displayName"].as_str().map(str::to_string);
            if display_name
                .as_deref()
                .is_some_and(|d| d.chars().count() > 63)
            {
                return gerr(
                    400,
                    "INVALID_ARGUMENT",
                    "badRequest",
                    "displayName is longer than 63 characters",
                );
            }
            if st
                .keys
                .iter()
                .any(|k| k.project == project && k.key_id == key_id)
            {
                return gerr(
                    409,
                    "ALREADY_EXISTS",
                    "alreadyExists",
                    format!("Key with id {key_id} already exists"),
                );
            }
            let services = req["restrictions"]["apiTargets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t["service"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let annotations = req["annotations"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            st.keys.push(FakeKey {
                project: project.clone(),
                key_id: key_id.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                display_name,
                services,
                annotations,
                key_string: new_key_string(),
                create_time: now(),
                delete_time: None,
                ready: false,
            });
            let error = (!st.key_operation_failures.is_empty())
                .then(|| st.key_operation_failures.remove(0));
            if error.is_some() {
                // A failed creation leaves no key behind.
                st.keys
                    .retain(|k| !(k.project == project && k.key_id == key_id));
            }
            let op = FakeKeyOperation {
                id: format!("akmf.p7-{}", uuid::Uuid::new_v4().simple()),
                project,
                key_id,
                done_at: Instant::now() + key_op_duration,
                error,
                delete: false,
            };
            let v = key_operation_json(st, &op);
            st.key_operations.push(op);
            ok(v)
        }
        (["projects", p, "locations", "global", "keys"], "GET") => {
            let project = resolve_project(st, p);
            let show_deleted = q_get(q, "showDeleted") == Some("true");
            let size: usize = q_get(q, "pageSize")
                .and_then(|s| s.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(300)
                .min(300);
            let from: usize = q_get(q, "pageToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let all: Vec<Value> = st
                .keys
                .iter()
                .filter(|k| {
                    k.project == project && k.ready && (show_deleted || k.delete_time.is_none())
                })
                .map(key_json)
                .collect();
            let mut body =
                json!({"keys": all.iter().skip(from).take(size).cloned().collect::<Vec<_>>()});
            if from + size < all.len() {
                body["nextPageToken"] = json!((from + size).to_string());
            }
            ok(body)
        }
        (["projects", p, "locations", "global", "keys", id], m)
        | (["projects", p, "locations", "global", "keys", id, _], m) => {
            let project = resolve_project(st, p);
            let Some(idx) = st
                .keys
                .iter()
                .position(|k| k.project == project && k.key_id == *id && k.ready)
            else {
                return not_found(&format!("projects/{p}/locations/global/keys/{id}"));
            };
            let key_string = rest.len() == 7 && rest[6] == "keyString";
            match (m, key_string) {
                ("GET", false) => ok(key_json(&st.keys[idx])),
                ("GET", true) => {
                    if st.keys[idx].delete_time.is_some() {
                        return gerr(
                            400,
                            "FAILED_PRECONDITION",
                            "failedPrecondition",
                            "The key is deleted",
                        );
                    }
                    ok(json!({"keyString": st.keys[idx].key_string}))
                }
                ("DELETE", false) => {
                    if st.keys[idx].delete_time.is_some() {
                        return not_found(&format!("projects/{p}/locations/global/keys/{id}"));
                    }
                    let error = (!st.key_operation_failures.is_empty())
                        .then(|| st.key_operation_failures.remove(0));
                    let op = FakeKeyOperation {
                        id: format!("akmf.p7-{}", uuid::Uuid::new_v4().simple()),
                        project,
                        key_id: id.to_string(),
                        done_at: Instant::now() + key_op_duration,
                        error,
                        delete: true,
                    };
                    let v = key_operation_json(st, &op);
                    st.key_operations.push(op);
                    ok(v)
                }
                _ => gerr(405, "INVALID_ARGUMENT", "badRequest", "method not allowed"),
            }
        }
        _ => gerr(404, "NOT_FOUND", "notFound", "no such API Keys route"),
    }
}
