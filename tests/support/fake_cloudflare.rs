//! A stateful fake of the Cloudflare API v4, for tests: zones, DNS records (single calls and the batch
//! endpoint), Cloudflare Tunnels and their remote configuration, on a real HTTP server bound to
//! 127.0.0.1 on a free port, served below `/client/v4` like the real API.
//!
//! It follows the published contract (`cloudflare-openapi-reduced.json`, `common.yaml`): envelopes
//! `{success, errors, messages, result}` with `result_info` on lists, bearer tokens, pagination bounds,
//! record validation and conflicts, the batch order deletes → patches → puts → posts applied all or
//! nothing, tunnel configuration versions, and rate limiting with `429 Retry-After` and `X-RateLimit-*`.
//!
//! Tests seed and inspect state through [`FakeCloudflare`], inject faults ([`Fault`]: 5xx before or
//! after applying, latency, 429; [`FakeCloudflare::fail_next_batch_at`]) and count calls through the
//! request log ([`FakeCloudflare::count`]).
//!
//! Error codes. Taken from real responses: 10000 authentication, 7000 no route, 7003 bad identifier,
//! 81044 record does not exist, 81053/81054 CNAME conflicts, 81057 record exists, 81058 identical
//! record, 971 rate limited, 1004 DNS validation error, 9000 invalid name, 9005 invalid content, 9021
//! invalid TTL. Chosen by this fake where the real code is not documented: 9207 malformed body,
//! 1001 invalid query parameter, 9004 type not proxiable, 9020 invalid type, 9101 comment too long,
//! 7001 method not allowed, 1056 invalid tunnel configuration, 1000 injected server error.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

/// The path below which the API is served, as on `api.cloudflare.com`.
pub const PREFIX: &str = "/client/v4";

/// The token the fake accepts unless told otherwise.
pub const TOKEN: &str = "fake-cf-token-2b7e151628aed2a6abf7158809cf4f3c";

/// The account new zones and tunnels belong to unless told otherwise.
pub const ACCOUNT_ID: &str = "0123456789abcdef0123456789abcdef";

/// Record types of the contract (`dns-records_type`).
const RECORD_TYPES: &[&str] = &[
    "A",
    "AAAA",
    "CAA",
    "CERT",
    "CNAME",
    "DNSKEY",
    "DS",
    "HTTPS",
    "LOC",
    "MX",
    "NAPTR",
    "NS",
    "OPENPGPKEY",
    "PTR",
    "SMIMEA",
    "SRV",
    "SSHFP",
    "SVCB",
    "TLSA",
    "TXT",
    "URI",
];

/// Types whose value is given as `content` (the others take structured `data`).
const CONTENT_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "NS", "OPENPGPKEY", "PTR", "TXT"];

/// Settings of a fake instance.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Records per batch call (Free plan: 200).
    pub batch_limit: usize,
    /// Requests allowed per window before 429 (Cloudflare: 1200 per 5 minutes).
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Longest record comment (Free plan: 100 characters).
    pub comment_max_len: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            batch_limit: 200,
            rate_limit: 1200,
            rate_window: Duration::from_secs(300),
            comment_max_len: 100,
        }
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and an error envelope; the request is not processed.
    Status(u16),
    /// Process the request, then answer with this status instead: the change is applied but the
    /// client cannot know.
    StatusAfterApply(u16),
    /// Wait this long, then process and answer normally. The request is processed even if the
    /// client has given up by then.
    Latency(Duration),
    /// Answer 429 with `Retry-After: <secs>`; the request is not processed.
    RateLimited { retry_after_secs: u64 },
    /// Answer 503 with `Retry-After: <secs>` (maintenance); the request is not processed.
    Unavailable { retry_after_secs: u64 },
    /// Reset the connection without answering; the request is not processed.
    Reset,
    /// Process the request, then reset the connection: applied, but the client got no answer.
    ResetAfterApply,
}

/// A fault for the next `times` requests that match `method` and `path` (a pattern below `/client/v4`
/// where `*` matches one segment, e.g. `/zones/*/dns_records`). Without a matcher it hits any request.
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

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: Method,
    /// Below `/client/v4`, without the query string.
    pub path: String,
    pub query: String,
    /// The status answered; 0 while the request is still being processed, or when the connection
    /// was reset ([`super::faults::RESET`]).
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
    /// The `Retry-After` of the answer, when it had one.
    pub retry_after: Option<Duration>,
}

/// A DNS record as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRecord {
    pub id: String,
    pub record_type: String,
    pub name: String,
    pub content: String,
    pub proxied: bool,
    pub ttl: u32,
    pub comment: Option<String>,
    pub tags: Vec<String>,
    pub priority: Option<u16>,
    pub data: Option<Value>,
    pub created_on: String,
    pub modified_on: String,
}

impl FakeRecord {
    fn proxiable(&self) -> bool {
        matches!(self.record_type.as_str(), "A" | "AAAA" | "CNAME")
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": self.record_type,
            "content": self.content,
            "proxiable": self.proxiable(),
            "proxied": self.proxied,
            "ttl": self.ttl,
            "settings": {},
            "meta": {},
            "comment": self.comment,
            "tags": self.tags,
            "created_on": self.created_on,
            "modified_on": self.modified_on,
        });
        if let Some(p) = self.priority {
            v["priority"] = json!(p);
        }
        if let Some(d) = &self.data {
            v["data"] = d.clone();
        }
        v
    }
}

/// A tunnel's remote configuration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTunnelConfig {
    pub version: u64,
    pub config: Option<Value>,
}

struct Zone {
    id: String,
    name: String,
    account_id: String,
    created_on: String,
    records: Vec<FakeRecord>,
}

struct Tunnel {
    id: String,
    account_id: String,
    name: String,
    created_at: String,
    config: Option<Value>,
    version: u64,
    config_created_at: String,
}

struct RateWindow {
    started: Option<Instant>,
    used: u32,
}

struct State {
    tokens: Vec<String>,
    config: FakeConfig,
    zones: Vec<Zone>,
    tunnels: Vec<Tunnel>,
    faults: Vec<Fault>,
    batch_failure_at: Option<usize>,
    rate: RateWindow,
    log: Vec<LoggedRequest>,
    /// Entries removed by `clear_requests`, so that a request still in flight finds its entry.
    log_cleared: usize,
}

type Shared = Arc<Mutex<State>>;

type RecordPredicate = Box<dyn Fn(&FakeRecord) -> bool>;

/// A running fake. Dropping it stops the server.
pub struct FakeCloudflare {
    base_url: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloudflare {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCloudflare {
    pub async fn start() -> Self {
        Self::start_with(FakeConfig::default()).await
    }

    pub async fn start_with(config: FakeConfig) -> Self {
        let state: Shared = Arc::new(Mutex::new(State {
            tokens: vec![TOKEN.to_string()],
            config,
            zones: Vec::new(),
            tunnels: Vec::new(),
            faults: Vec::new(),
            batch_failure_at: None,
            rate: RateWindow {
                started: None,
                used: 0,
            },
            log: Vec::new(),
            log_cleared: 0,
        }));
        let app = Router::new().fallback(entry).with_state(state.clone());
        let (addr, listener) = super::faults::listener().await;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeCloudflare {
            base_url: format!("http://{addr}{PREFIX}"),
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/client/v4`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The token the fake accepts.
    pub fn token(&self) -> SecretString {
        SecretString::from(TOKEN)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake Cloudflare state lock")
    }

    /// Adds an active zone in [`ACCOUNT_ID`]; returns its id.
    pub fn add_zone(&self, name: &str) -> String {
        self.add_zone_in_account(name, ACCOUNT_ID)
    }

    pub fn add_zone_in_account(&self, name: &str, account_id: &str) -> String {
        let id = new_id();
        self.lock().zones.push(Zone {
            id: id.clone(),
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            account_id: account_id.to_string(),
            created_on: now(),
            records: Vec::new(),
        });
        id
    }

    /// Adds a record given as an API body (validated and conflict-checked like a `POST`); returns its
    /// id. Panics when the API would reject it.
    pub fn add_record(&self, zone_id: &str, body: Value) -> String {
        let mut st = self.lock();
        let comment_max = st.config.comment_max_len;
        let zone = st
            .zones
            .iter_mut()
            .find(|z| z.id == zone_id)
            .unwrap_or_else(|| panic!("no zone {zone_id} in the fake"));
        let obj = body.as_object().expect("a record body is a JSON object");
        let rec = build_record(&zone.name, None, obj, Mode::Create, comment_max)
            .and_then(|r| check_conflicts(&zone.records, &r).map(|_| r))
            .unwrap_or_else(|e| panic!("the fake rejects the seeded record: {}", e.message));
        let id = rec.id.clone();
        zone.records.push(rec);
        id
    }

    /// Adds a record without any validation (e.g. of a type the client does not know).
    pub fn add_unchecked_record(
        &self,
        zone_id: &str,
        record_type: &str,
        name: &str,
        content: &str,
    ) -> String {
        let mut st = self.lock();
        let zone = st
            .zones
            .iter_mut()
            .find(|z| z.id == zone_id)
            .unwrap_or_else(|| panic!("no zone {zone_id} in the fake"));
        let t = now();
        let id = new_id();
        zone.records.push(FakeRecord {
            id: id.clone(),
            record_type: record_type.to_string(),
            name: name.to_string(),
            content: content.to_string(),
            proxied: false,
            ttl: 1,
            comment: None,
            tags: Vec::new(),
            priority: None,
            data: None,
            created_on: t.clone(),
            modified_on: t,
        });
        id
    }

    /// The zone's records, in the order they were created.
    pub fn records(&self, zone_id: &str) -> Vec<FakeRecord> {
        self.lock()
            .zones
            .iter()
            .find(|z| z.id == zone_id)
            .map(|z| z.records.clone())
            .unwrap_or_default()
    }

    pub fn record(&self, zone_id: &str, record_id: &str) -> Option<FakeRecord> {
        self.records(zone_id)
            .into_iter()
            .find(|r| r.id == record_id)
    }

    /// Adds a remotely managed tunnel without configuration (version 0); returns its id.
    pub fn add_tunnel(&self, account_id: &str, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        self.lock().tunnels.push(Tunnel {
            id: id.clone(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            created_at: t.clone(),
            config: None,
            version: 0,
            config_created_at: t,
        });
        id
    }

    /// Sets a tunnel's configuration as a dashboard edit would (validated; bumps the version).
    pub fn set_tunnel_config(&self, account_id: &str, tunnel_id: &str, config: Value) {
        validate_tunnel_config(&config)
            .unwrap_or_else(|e| panic!("the fake rejects the configuration: {}", e.message));
        let mut st = self.lock();
        let tunnel = st
            .tunnels
            .iter_mut()
            .find(|t| t.id == tunnel_id && t.account_id == account_id)
            .unwrap_or_else(|| panic!("no tunnel {tunnel_id} in account {account_id}"));
        tunnel.config = Some(config);
        tunnel.version += 1;
        tunnel.config_created_at = now();
    }

    pub fn tunnel_config(&self, account_id: &str, tunnel_id: &str) -> Option<FakeTunnelConfig> {
        self.lock()
            .tunnels
            .iter()
            .find(|t| t.id == tunnel_id && t.account_id == account_id)
            .map(|t| FakeTunnelConfig {
                version: t.version,
                config: t.config.clone(),
            })
    }

    /// Queues a fault; faults are consumed in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The next batch fails at its `index`-th action (0-based, in execution order) with a validation
    /// error, and applies nothing.
    pub fn fail_next_batch_at(&self, index: usize) {
        self.lock().batch_failure_at = Some(index);
    }

    /// Allows `limit` requests per `window`; the window starts again from the next request after it
    /// has elapsed.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        let mut st = self.lock();
        st.config.rate_limit = limit;
        st.config.rate_window = window;
        st.rate = RateWindow {
            started: None,
            used: 0,
        };
    }

    pub fn set_batch_limit(&self, limit: usize) {
        self.lock().config.batch_limit = limit;
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Requests received with this method and a path matching `pattern` (see [`Fault::on`]).
    pub fn count(&self, method: Method, pattern: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == method && path_matches(pattern, &r.path))
            .count()
    }

    pub fn clear_requests(&self) {
        let mut st = self.lock();
        st.log_cleared += st.log.len();
        st.log.clear();
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
}

// ---------------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------------

/// An error answer: HTTP status plus one Cloudflare error.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: i64,
    message: String,
    pointer: Option<String>,
}

fn fail(status: u16, code: i64, message: impl Into<String>) -> Failure {
    Failure {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        code,
        message: message.into(),
        pointer: None,
    }
}

impl Failure {
    fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Prefixes the pointer (e.g. `/ttl` inside `/posts/3`).
    fn within(mut self, prefix: &str) -> Self {
        self.pointer = Some(format!("{prefix}{}", self.pointer.unwrap_or_default()));
        self
    }

    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(p) = self.pointer {
            err["source"] = json!({ "pointer": p });
        }
        envelope_response(
            self.status,
            json!({"success": false, "errors": [err], "messages": [], "result": null}),
        )
    }
}

fn envelope_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn ok(result: Value) -> Response {
    envelope_response(
        StatusCode::OK,
        json!({"success": true, "errors": [], "messages": [], "result": result}),
    )
}

fn ok_list(items: Vec<Value>, page: u64, per_page: u64, total: u64) -> Response {
    let total_pages = total.div_ceil(per_page);
    envelope_response(
        StatusCode::OK,
        json!({
            "success": true, "errors": [], "messages": [],
            "result": items.clone(),
            "result_info": {
                "page": page, "per_page": per_page, "count": items.len(),
                "total_count": total, "total_pages": total_pages
            }
        }),
    )
}

type Reply = Result<Response, Failure>;

/// Runs each request on its own task, so that a request whose client gave up (timeout) still
/// completes, as on a real server.
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
        Err(_) => fail(500, 1000, "the fake panicked while handling the request").into_response(),
    }
}

async fn process(
    state: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full_path = uri.path().to_string();
    let path = full_path
        .strip_prefix(PREFIX)
        .map(|p| if p.is_empty() { "/" } else { p })
        .unwrap_or(&full_path)
        .to_string();
    let query = uri.query().unwrap_or("").to_string();

    // Log, count against the rate limit, pick a fault: one critical section.
    let (log_index, rate, fault) = {
        let mut st = state.lock().expect("fake state lock");
        st.log.push(LoggedRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status: 0,
            at: Instant::now(),
            retry_after: None,
        });
        let log_index = st.log_cleared + st.log.len() - 1;
        let rate = take_rate_budget(&mut st);
        let fault = if rate.blocked.is_none() {
            take_fault(&mut st, &method, &path)
        } else {
            None
        };
        (log_index, rate, fault)
    };

    let reset = rate.blocked.is_none()
        && matches!(fault, Some(FaultKind::Reset | FaultKind::ResetAfterApply));
    let mut response = if let Some(retry_after) = rate.blocked {
        rate_limited_response(retry_after)
    } else {
        match fault {
            Some(FaultKind::Status(code)) => injected_error(code),
            Some(FaultKind::RateLimited { retry_after_secs }) => {
                rate_limited_response(retry_after_secs)
            }
            Some(FaultKind::Unavailable { retry_after_secs }) => {
                let mut r = injected_error(503);
                r.headers_mut()
                    .insert("retry-after", header_num(retry_after_secs));
                r
            }
            Some(FaultKind::Latency(d)) => {
                tokio::time::sleep(d).await;
                handle(&state, &method, &path, &query, &headers, &body)
            }
            Some(FaultKind::StatusAfterApply(code)) => {
                let _applied = handle(&state, &method, &path, &query, &headers, &body);
                injected_error(code)
            }
            Some(FaultKind::Reset) => super::faults::reset_response(),
            Some(FaultKind::ResetAfterApply) => {
                let _applied = handle(&state, &method, &path, &query, &headers, &body);
                super::faults::reset_response()
            }
            None => handle(&state, &method, &path, &query, &headers, &body),
        }
    };

    let throttled = response.status() == StatusCode::TOO_MANY_REQUESTS;
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", header_num(u64::from(rate.limit)));
    h.insert(
        "x-ratelimit-remaining",
        header_num(u64::from(rate.remaining)),
    );
    if throttled {
        let wait = h.get("retry-after").cloned();
        if let Some(v) = wait {
            h.insert("x-ratelimit-reset", v);
        }
    }
    let status = if reset {
        super::faults::RESET
    } else {
        response.status().as_u16()
    };
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    if let Ok(mut st) = state.lock()
        && let Some(i) = log_index.checked_sub(st.log_cleared)
        && let Some(entry) = st.log.get_mut(i)
    {
        entry.status = status;
        entry.retry_after = retry_after;
    }
    response
}

fn header_num(n: u64) -> HeaderValue {
    HeaderValue::from_str(&n.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

fn injected_error(code: u16) -> Response {
    fail(
        code,
        1000,
        format!("Internal server error (injected HTTP {code})"),
    )
    .into_response()
}

fn rate_limited_response(retry_after_secs: u64) -> Response {
    let mut r = fail(
        429,
        971,
        "Please wait and consider throttling your request speed",
    )
    .into_response();
    r.headers_mut()
        .insert("retry-after", header_num(retry_after_secs));
    r
}

struct RateDecision {
    limit: u32,
    remaining: u32,
    /// `Some(retry_after_secs)` when the request is over the budget.
    blocked: Option<u64>,
}

fn take_rate_budget(st: &mut State) -> RateDecision {
    let limit = st.config.rate_limit;
    let window = st.config.rate_window;
    let now = Instant::now();
    let started = match st.rate.started {
        Some(s) if now.duration_since(s) < window => s,
        _ => {
            st.rate = RateWindow {
                started: Some(now),
                used: 0,
            };
            now
        }
    };
    if st.rate.used >= limit {
        let left = window.saturating_sub(now.duration_since(started));
        let secs = left.as_secs_f64().ceil().max(1.0) as u64;
        return RateDecision {
            limit,
            remaining: 0,
            blocked: Some(secs),
        };
    }
    st.rate.used += 1;
    RateDecision {
        limit,
        remaining: limit - st.rate.used,
        blocked: None,
    }
}

fn take_fault(st: &mut State, method: &Method, path: &str) -> Option<FaultKind> {
    let i = st
        .faults
        .iter()
        .position(|f| f.times > 0 && f.matches(method, path))?;
    let f = &mut st.faults[i];
    f.times -= 1;
    let kind = f.kind.clone();
    if f.times == 0 {
        st.faults.remove(i);
    }
    Some(kind)
}

fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_matches('/').split('/').collect();
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
}

fn handle(
    state: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    if let Err(f) = authenticate(&st, headers) {
        return f.into_response();
    }
    match route(&mut st, method, path, query, body) {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

fn authenticate(st: &State, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(value) = headers.get("authorization") else {
        return Err(fail(401, 10000, "Authentication error"));
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(fail(401, 10000, "Authentication error"));
    };
    if st.tokens.iter().any(|t| t == token) {
        Ok(())
    } else {
        Err(fail(403, 10000, "Authentication error"))
    }
}

fn route(st: &mut State, method: &Method, path: &str, query: &str, body: &Bytes) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let q = parse_query(query)?;
    match (segs.as_slice(), method.as_str()) {
        (["zones"], "GET") => list_zones(st, &q),
        (["zones", zone_id], "GET") => get_zone(st, path, zone_id),
        (["zones", zone_id, "dns_records"], "GET") => list_records(st, path, zone_id, &q),
        (["zones", zone_id, "dns_records"], "POST") => create_record(st, path, zone_id, body),
        (["zones", zone_id, "dns_records", "batch"], "POST") => batch(st, path, zone_id, body),
        (["zones", zone_id, "dns_records", record_id], m) => {
            record_call(st, path, zone_id, record_id, m, body)
        }
        (["accounts", account_id, "cfd_tunnel", tunnel_id], "GET") => {
            get_tunnel(st, path, account_id, tunnel_id)
        }
        (
            [
                "accounts",
                account_id,
                "cfd_tunnel",
                tunnel_id,
                "configurations",
            ],
            "GET",
        ) => get_tunnel_config(st, path, account_id, tunnel_id),
        (
            [
                "accounts",
                account_id,
                "cfd_tunnel",
                tunnel_id,
                "configurations",
            ],
            "PUT",
        ) => put_tunnel_config(st, path, account_id, tunnel_id, body),
        (
            ["zones"]
            | ["zones", _]
            | ["zones", _, "dns_records"]
            | ["accounts", _, "cfd_tunnel", _]
            | ["accounts", _, "cfd_tunnel", _, "configurations"],
            _,
        ) => Err(fail(405, 7001, "Method not allowed")),
        _ => Err(fail(404, 7000, "No route for that URI")),
    }
}

fn bad_identifier(path: &str) -> Failure {
    fail(
        404,
        7003,
        format!("Could not route to {path}, perhaps your object identifier is invalid?"),
    )
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, Failure> {
    let uri: Uri = format!("/?{query}")
        .parse()
        .map_err(|_| fail(400, 1001, "Invalid query string"))?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|_| fail(400, 1001, "Invalid query string"))
}

fn q_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn q_has(q: &[(String, String)], key: &str) -> bool {
    q.iter().any(|(k, _)| k == key)
}

/// An integer query parameter within bounds, or its default.
fn q_int(
    q: &[(String, String)],
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, Failure> {
    match q_get(q, key) {
        None => Ok(default),
        Some(v) => {
            let n: Option<u64> = v.parse::<u64>().ok().or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            });
            match n {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(fail(
                    400,
                    1001,
                    format!(
                        "Invalid value for parameter `{key}`: must be an integer from {min} to {max}"
                    ),
                )),
            }
        }
    }
}

fn paginate(
    items: Vec<Value>,
    q: &[(String, String)],
    default_per_page: u64,
    min: u64,
    max: u64,
) -> Reply {
    let page = q_int(q, "page", 1, 1, u64::MAX)?;
    let per_page = q_int(q, "per_page", default_per_page, min, max)?;
    let total = items.len() as u64;
    let start = (page - 1).saturating_mul(per_page);
    let slice: Vec<Value> = items
        .into_iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .collect();
    Ok(ok_list(slice, page, per_page, total))
}

// --- zones -------------------------------------------------------------------------------------------

fn zone_json(z: &Zone) -> Value {
    json!({
        "id": z.id,
        "name": z.name,
        "status": "active",
        "paused": false,
        "type": "full",
        "development_mode": 0,
        "account": {"id": z.account_id, "name": "Fake account"},
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        "original_name_servers": null,
        "created_on": z.created_on,
        "modified_on": z.created_on,
        "activated_on": z.created_on,
        "meta": {"step": 2},
        "owner": {"id": null, "name": null, "type": "user"},
        "permissions": ["#zone:read", "#dns_records:edit"],
    })
}

/// `name` accepts an exact name or `operator:value` (equal, not_equal, starts_with, ends_with,
/// contains and their `_case_sensitive` forms).
fn name_filter_matches(filter: &str, name: &str) -> bool {
    let (op, value) = match filter.split_once(':') {
        Some((op, v))
            if matches!(
                op,
                "equal"
                    | "not_equal"
                    | "starts_with"
                    | "ends_with"
                    | "contains"
                    | "starts_with_case_sensitive"
                    | "ends_with_case_sensitive"
                    | "contains_case_sensitive"
            ) =>
        {
            (op, v)
        }
        _ => ("equal", filter),
    };
    let sensitive = op.ends_with("_case_sensitive");
    let (n, v) = if sensitive {
        (name.to_string(), value.to_string())
    } else {
        (name.to_ascii_lowercase(), value.to_ascii_lowercase())
    };
    match op.trim_end_matches("_case_sensitive") {
        "equal" => n == v,
        "not_equal" => n != v,
        "starts_with" => n.starts_with(&v),
        "ends_with" => n.ends_with(&v),
        _ => n.contains(&v),
    }
}

fn list_zones(st: &State, q: &[(String, String)]) -> Reply {
    if let Some(n) = q_get(q, "name")
        && n.len() > 253
    {
        return Err(fail(
            400,
            1001,
            "Invalid value for parameter `name`: longer than 253 characters",
        ));
    }
    let items: Vec<Value> = st
        .zones
        .iter()
        .filter(|z| q_get(q, "name").is_none_or(|f| name_filter_matches(f, &z.name)))
        .filter(|z| q_get(q, "account.id").is_none_or(|a| a == z.account_id))
        .filter(|_| q_get(q, "status").is_none_or(|s| s == "active"))
        .map(zone_json)
        .collect();
    paginate(items, q, 20, 5, 50)
}

fn get_zone(st: &State, path: &str, zone_id: &str) -> Reply {
    st.zones
        .iter()
        .find(|z| z.id == zone_id)
        .map(|z| ok(zone_json(z)))
        .ok_or_else(|| bad_identifier(path))
}

fn zone_mut<'a>(st: &'a mut State, path: &str, zone_id: &str) -> Result<&'a mut Zone, Failure> {
    st.zones
        .iter_mut()
        .find(|z| z.id == zone_id)
        .ok_or_else(|| bad_identifier(path))
}

// --- DNS records -------------------------------------------------------------------------------------

fn list_records(st: &mut State, path: &str, zone_id: &str, q: &[(String, String)]) -> Reply {
    let zone = zone_mut(st, path, zone_id)?;
    if let Some(t) = q_get(q, "type")
        && !RECORD_TYPES.contains(&t)
    {
        return Err(fail(
            400,
            1001,
            format!("Invalid value for parameter `type`: `{t}`"),
        ));
    }
    let any = match q_get(q, "match") {
        None | Some("all") => false,
        Some("any") => true,
        Some(other) => {
            return Err(fail(
                400,
                1001,
                format!("Invalid value for parameter `match`: `{other}`"),
            ));
        }
    };
    let lower = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    let mut preds: Vec<RecordPredicate> = Vec::new();
    for key in ["name", "name.exact"] {
        if let Some(v) = q_get(q, key) {
            let v = lower(v);
            preds.push(Box::new(move |r| r.name == v));
        }
    }
    if let Some(v) = q_get(q, "name.contains") {
        let v = v.to_ascii_lowercase();
        preds.push(Box::new(move |r| r.name.contains(&v)));
    }
    if let Some(v) = q_get(q, "type") {
        let v = v.to_string();
        preds.push(Box::new(move |r| r.record_type == v));
    }
    for key in ["content", "content.exact"] {
        if let Some(v) = q_get(q, key) {
            let v = v.to_ascii_lowercase();
            preds.push(Box::new(move |r| r.content.to_ascii_lowercase() == v));
        }
    }
    for key in ["comment", "comment.exact"] {
        if let Some(v) = q_get(q, key) {
            let v = v.to_ascii_lowercase();
            preds.push(Box::new(move |r| {
                r.comment.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(v.as_str())
            }));
        }
    }
    if let Some(v) = q_get(q, "comment.contains") {
        let v = v.to_ascii_lowercase();
        preds.push(Box::new(move |r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c.to_ascii_lowercase().contains(&v))
        }));
    }
    if q_has(q, "comment.present") {
        preds.push(Box::new(|r| r.comment.is_some()));
    }
    if q_has(q, "comment.absent") {
        preds.push(Box::new(|r| r.comment.is_none()));
    }
    if let Some(v) = q_get(q, "tag") {
        let v = v.to_ascii_lowercase();
        preds.push(Box::new(move |r| {
            r.tags.iter().any(|t| {
                let t = t.to_ascii_lowercase();
                if v.contains(':') {
                    t == v
                } else {
                    t.split(':').next() == Some(v.as_str())
                }
            })
        }));
    }
    if let Some(v) = q_get(q, "proxied") {
        let want = v == "true";
        preds.push(Box::new(move |r| r.proxied == want));
    }
    let mut matching: Vec<&FakeRecord> = zone
        .records
        .iter()
        .filter(|r| {
            if preds.is_empty() {
                true
            } else if any {
                preds.iter().any(|p| p(r))
            } else {
                preds.iter().all(|p| p(r))
            }
        })
        .collect();
    let order = q_get(q, "order").unwrap_or("type");
    if !matches!(order, "type" | "name" | "content" | "ttl" | "proxied") {
        return Err(fail(
            400,
            1001,
            format!("Invalid value for parameter `order`: `{order}`"),
        ));
    }
    let desc = match q_get(q, "direction") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(fail(
                400,
                1001,
                format!("Invalid value for parameter `direction`: `{other}`"),
            ));
        }
    };
    // Stable order (ties broken by name, then creation) so that pages do not overlap.
    matching.sort_by(|a, b| {
        let primary = match order {
            "name" => a.name.cmp(&b.name),
            "content" => a.content.cmp(&b.content),
            "ttl" => a.ttl.cmp(&b.ttl),
            "proxied" => a.proxied.cmp(&b.proxied),
            _ => a.record_type.cmp(&b.record_type),
        };
        primary.then_with(|| a.name.cmp(&b.name))
    });
    if desc {
        matching.reverse();
    }
    let items = matching.into_iter().map(FakeRecord::to_json).collect();
    paginate(items, q, 100, 1, 5_000_000)
}

fn parse_body(body: &Bytes) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        fail(
            400,
            9207,
            format!("Request body is invalid: not JSON ({e})"),
        )
    })
}

fn body_object(v: &Value) -> Result<&Map<String, Value>, Failure> {
    v.as_object()
        .ok_or_else(|| fail(400, 9207, "Request body is invalid: expected a JSON object"))
}

fn create_record(st: &mut State, path: &str, zone_id: &str, body: &Bytes) -> Reply {
    let comment_max = st.config.comment_max_len;
    let zone = zone_mut(st, path, zone_id)?;
    let v = parse_body(body)?;
    let rec = build_record(
        &zone.name,
        None,
        body_object(&v)?,
        Mode::Create,
        comment_max,
    )?;
    check_conflicts(&zone.records, &rec)?;
    let out = rec.to_json();
    zone.records.push(rec);
    Ok(ok(out))
}

fn record_not_found() -> Failure {
    fail(404, 81044, "Record does not exist.")
}

fn record_call(
    st: &mut State,
    path: &str,
    zone_id: &str,
    record_id: &str,
    method: &str,
    body: &Bytes,
) -> Reply {
    let comment_max = st.config.comment_max_len;
    let zone = zone_mut(st, path, zone_id)?;
    let idx = zone.records.iter().position(|r| r.id == record_id);
    match method {
        "GET" => {
            let i = idx.ok_or_else(record_not_found)?;
            Ok(ok(zone.records[i].to_json()))
        }
        "DELETE" => {
            let i = idx.ok_or_else(record_not_found)?;
            let r = zone.records.remove(i);
            Ok(ok(json!({ "id": r.id })))
        }
        "PATCH" | "PUT" => {
            let i = idx.ok_or_else(record_not_found)?;
            let v = parse_body(body)?;
            let mode = if method == "PATCH" {
                Mode::Patch
            } else {
                Mode::Put
            };
            let rec = build_record(
                &zone.name,
                Some(&zone.records[i]),
                body_object(&v)?,
                mode,
                comment_max,
            )?;
            check_conflicts(&zone.records, &rec)?;
            let out = rec.to_json();
            zone.records[i] = rec;
            Ok(ok(out))
        }
        _ => Err(fail(405, 7001, "Method not allowed")),
    }
}

fn batch(st: &mut State, path: &str, zone_id: &str, body: &Bytes) -> Reply {
    let comment_max = st.config.comment_max_len;
    let limit = st.config.batch_limit;
    let inject_at = st.batch_failure_at.take();
    let zone = zone_mut(st, path, zone_id)?;
    let v = parse_body(body)?;
    let obj = body_object(&v)?;
    let mut parts: [Vec<&Map<String, Value>>; 4] = Default::default();
    for (k, key) in ["deletes", "patches", "puts", "posts"].iter().enumerate() {
        match obj.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    parts[k].push(item.as_object().ok_or_else(|| {
                        fail(400, 9207, "Request body is invalid: expected a JSON object")
                            .at(format!("/{key}/{i}"))
                    })?);
                }
            }
            Some(_) => {
                return Err(fail(
                    400,
                    9207,
                    format!("Request body is invalid: `{key}` must be an array"),
                )
                .at(format!("/{key}")));
            }
        }
    }
    let total: usize = parts.iter().map(Vec::len).sum();
    if total > limit {
        return Err(fail(
            400,
            1004,
            format!("Batch contains {total} record changes; the limit per request is {limit}"),
        ));
    }

    // Work on a copy; commit only when every action succeeded.
    let mut records = zone.records.clone();
    let mut results: [Vec<Value>; 4] = Default::default();
    let mut action = 0usize;
    let names = ["deletes", "patches", "puts", "posts"];
    for (k, items) in parts.iter().enumerate() {
        for (i, item) in items.iter().enumerate() {
            let at = format!("/{}/{i}", names[k]);
            if inject_at == Some(action) {
                return Err(fail(400, 1004, "DNS Validation Error (injected failure)").at(at));
            }
            action += 1;
            let id = if k < 3 {
                match item.get("id") {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => {
                        return Err(fail(
                            400,
                            9207,
                            "Request body is invalid: `id` is required and must be a string",
                        )
                        .at(format!("{at}/id")));
                    }
                }
            } else {
                None
            };
            let pos = id
                .as_ref()
                .map(|id| {
                    records
                        .iter()
                        .position(|r| &r.id == id)
                        .ok_or_else(|| record_not_found().at(at.clone()))
                })
                .transpose()?;
            match (k, pos) {
                (0, Some(p)) => {
                    results[0].push(records.remove(p).to_json());
                }
                (1 | 2, Some(p)) => {
                    let mode = if k == 1 { Mode::Patch } else { Mode::Put };
                    let rec = build_record(&zone.name, Some(&records[p]), item, mode, comment_max)
                        .map_err(|e| e.within(&at))?;
                    check_conflicts(&records, &rec).map_err(|e| e.within(&at))?;
                    results[k].push(rec.to_json());
                    records[p] = rec;
                }
                _ => {
                    let rec = build_record(&zone.name, None, item, Mode::Create, comment_max)
                        .map_err(|e| e.within(&at))?;
                    check_conflicts(&records, &rec).map_err(|e| e.within(&at))?;
                    results[3].push(rec.to_json());
                    records.push(rec);
                }
            }
        }
    }
    zone.records = records;
    let [deletes, patches, puts, posts] = results;
    Ok(ok(
        json!({"deletes": deletes, "patches": patches, "puts": puts, "posts": posts}),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Put,
    Patch,
}

fn invalid_body(field: &str, expected: &str) -> Failure {
    fail(
        400,
        9207,
        format!("Request body is invalid: `{field}` must be {expected}"),
    )
    .at(format!("/{field}"))
}

fn get_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Failure> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_body(field, "a string")),
    }
}

fn missing(field: &str) -> Failure {
    fail(
        400,
        9207,
        format!("Request body is invalid: `{field}` is required"),
    )
    .at(format!("/{field}"))
}

/// Validates a record body against the contract and the API's rules, and returns the record it
/// describes. `existing` is the record being changed (PATCH merges into it; PUT keeps its id).
fn build_record(
    zone: &str,
    existing: Option<&FakeRecord>,
    obj: &Map<String, Value>,
    mode: Mode,
    comment_max: usize,
) -> Result<FakeRecord, Failure> {
    // Types first, for every known field present.
    let record_type = get_string(obj, "type")?;
    let name = get_string(obj, "name")?;
    let content = get_string(obj, "content")?;
    let ttl = match obj.get("ttl") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(ttl_error)?,
        ),
        Some(_) => return Err(invalid_body("ttl", "a number")),
    };
    let proxied = match obj.get("proxied") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(invalid_body("proxied", "a boolean")),
    };
    let comment = match obj.get("comment") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err(invalid_body("comment", "a string")),
    };
    let tags = match obj.get("tags") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid_body("tags", "an array of strings"))?,
        ),
        Some(_) => return Err(invalid_body("tags", "an array of strings")),
    };
    let priority = match obj.get("priority") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid_body("priority", "an integer from 0 to 65535"))?,
        ),
        Some(_) => return Err(invalid_body("priority", "an integer from 0 to 65535")),
    };
    let data = match obj.get("data") {
        None => None,
        Some(d @ Value::Object(_)) => Some(d.clone()),
        Some(_) => return Err(invalid_body("data", "an object")),
    };
    if let Some(s) = obj.get("settings")
        && !s.is_object()
    {
        return Err(invalid_body("settings", "an object"));
    }

    // Merge (PATCH) or require (POST/PUT).
    let base = if mode == Mode::Patch { existing } else { None };
    let record_type = match (record_type, base) {
        (Some(t), _) => t,
        (None, Some(b)) => b.record_type.clone(),
        (None, None) => return Err(missing("type")),
    };
    if !RECORD_TYPES.contains(&record_type.as_str()) {
        return Err(fail(
            400,
            9020,
            format!("Invalid DNS record type `{record_type}`."),
        )
        .at("/type"));
    }
    let name = match (name, base) {
        (Some(n), _) => normalize_name(zone, &n)?,
        (None, Some(b)) => b.name.clone(),
        (None, None) => return Err(missing("name")),
    };
    let ttl = match (ttl, base) {
        (Some(t), _) => t,
        (None, Some(b)) => u64::from(b.ttl),
        (None, None) => return Err(missing("ttl")),
    };
    if !(ttl == 1 || (60..=86400).contains(&ttl)) {
        return Err(ttl_error());
    }
    let proxied = proxied.or(base.map(|b| b.proxied)).unwrap_or(false);
    let comment = match comment {
        Some(c) => c,
        None => base.and_then(|b| b.comment.clone()),
    }
    .filter(|c| !c.is_empty());
    if let Some(c) = &comment
        && c.chars().count() > comment_max
    {
        return Err(fail(
            400,
            9101,
            format!(
                "DNS record has {} characters in its comment; the limit is {comment_max}.",
                c.chars().count()
            ),
        )
        .at("/comment"));
    }
    let tags = tags
        .or_else(|| base.map(|b| b.tags.clone()))
        .unwrap_or_default();
    for t in &tags {
        if t.is_empty() || t.starts_with(':') {
            return Err(fail(
                400,
                9207,
                format!("Request body is invalid: tag `{t}` must be `name` or `name:value`"),
            )
            .at("/tags"));
        }
    }
    let priority = priority.or(base.and_then(|b| b.priority));
    let type_changed = base.is_some_and(|b| b.record_type != record_type);
    let data = data.or_else(|| base.filter(|_| !type_changed).and_then(|b| b.data.clone()));
    let content = match content {
        Some(c) => Some(c),
        None => base.filter(|_| !type_changed).map(|b| b.content.clone()),
    };

    let content = if CONTENT_TYPES.contains(&record_type.as_str()) {
        let c = content.ok_or_else(|| missing("content"))?;
        normalize_content(&record_type, &c, &name)?
    } else {
        match (&data, content) {
            (Some(Value::Object(d)), _) => d
                .values()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            (_, Some(c)) if !c.trim().is_empty() => c,
            _ => return Err(missing("data")),
        }
    };
    if record_type == "MX" && priority.is_none() {
        return Err(missing("priority"));
    }
    let proxiable = matches!(record_type.as_str(), "A" | "AAAA" | "CNAME");
    if proxied && !proxiable {
        return Err(fail(
            400,
            9004,
            format!("{record_type} records cannot be proxied."),
        )
        .at("/proxied"));
    }
    // Proxied records are served by Cloudflare: their TTL is always automatic.
    let ttl = if proxied { 1 } else { ttl as u32 };

    let t = now();
    Ok(FakeRecord {
        id: existing.map(|e| e.id.clone()).unwrap_or_else(new_id),
        record_type,
        name,
        content,
        proxied,
        ttl,
        comment,
        tags,
        priority,
        data,
        created_on: existing
            .map(|e| e.created_on.clone())
            .unwrap_or_else(|| t.clone()),
        modified_on: t,
    })
}

fn ttl_error() -> Failure {
    fail(
        400,
        9021,
        "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
    )
    .at("/ttl")
}

fn invalid_name(name: &str, why: &str) -> Failure {
    fail(400, 9000, format!("DNS name is invalid: `{name}` {why}.")).at("/name")
}

/// Lower case, no trailing dot, `@` for the apex, inside the zone.
fn normalize_name(zone: &str, raw: &str) -> Result<String, Failure> {
    let n = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let n = if n == "@" { zone.to_string() } else { n };
    if n.is_empty() {
        return Err(invalid_name(raw, "is empty"));
    }
    if n != zone && !n.ends_with(&format!(".{zone}")) {
        return Err(invalid_name(raw, &format!("is not in zone `{zone}`")));
    }
    if n.len() > 255 {
        return Err(invalid_name(raw, "is longer than 255 characters"));
    }
    for (i, label) in n.split('.').enumerate() {
        let ok = if label == "*" {
            i == 0
        } else {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok {
            return Err(invalid_name(
                raw,
                &format!("has an invalid label `{label}`"),
            ));
        }
    }
    Ok(n)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn normalize_content(record_type: &str, content: &str, name: &str) -> Result<String, Failure> {
    let invalid = |msg: String| fail(400, 9005, msg).at("/content");
    match record_type {
        "A" => content
            .trim()
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| invalid("Content for A record must be a valid IPv4 address.".into())),
        "AAAA" => content
            .trim()
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| invalid("Content for AAAA record must be a valid IPv6 address.".into())),
        "CNAME" | "MX" | "NS" | "PTR" => {
            let h = content.trim().trim_end_matches('.').to_ascii_lowercase();
            if !valid_hostname(&h) {
                return Err(fail(
                    400,
                    if record_type == "CNAME" { 9007 } else { 9005 },
                    format!("Content for {record_type} record is invalid."),
                )
                .at("/content"));
            }
            if record_type == "CNAME" && h == name {
                return Err(fail(
                    400,
                    9007,
                    "Content for CNAME record is invalid: a CNAME cannot point to itself.",
                )
                .at("/content"));
            }
            Ok(h)
        }
        _ => {
            if content.is_empty() || content.len() > 2048 {
                Err(invalid(format!(
                    "Content for {record_type} record must be 1 to 2048 characters."
                )))
            } else {
                Ok(content.to_string())
            }
        }
    }
}

/// CNAMEs exclude every other record at their name; identical records are refused.
fn check_conflicts(records: &[FakeRecord], rec: &FakeRecord) -> Result<(), Failure> {
    let others: Vec<&FakeRecord> = records
        .iter()
        .filter(|r| r.id != rec.id && r.name == rec.name)
        .collect();
    for r in &others {
        if r.record_type == rec.record_type
            && r.content == rec.content
            && r.priority == rec.priority
        {
            return Err(if r.proxied == rec.proxied && r.ttl == rec.ttl {
                fail(400, 81058, "An identical record already exists.")
            } else {
                fail(400, 81057, "The record already exists.")
            });
        }
    }
    if rec.record_type == "CNAME" && !others.is_empty() {
        return Err(fail(
            400,
            81053,
            "An A, AAAA, or CNAME record with that host already exists.",
        ));
    }
    if rec.record_type != "CNAME" && others.iter().any(|r| r.record_type == "CNAME") {
        return Err(fail(
            400,
            81054,
            "A CNAME record with that host already exists.",
        ));
    }
    Ok(())
}

// --- tunnels -----------------------------------------------------------------------------------------

fn tunnel_ref<'a>(
    st: &'a mut State,
    path: &str,
    account_id: &str,
    tunnel_id: &str,
) -> Result<&'a mut Tunnel, Failure> {
    st.tunnels
        .iter_mut()
        .find(|t| t.id == tunnel_id && t.account_id == account_id)
        .ok_or_else(|| bad_identifier(path))
}

fn get_tunnel(st: &mut State, path: &str, account_id: &str, tunnel_id: &str) -> Reply {
    let t = tunnel_ref(st, path, account_id, tunnel_id)?;
    Ok(ok(json!({
        "id": t.id,
        "account_tag": t.account_id,
        "name": t.name,
        "created_at": t.created_at,
        "deleted_at": null,
        "connections": [],
        "conns_active_at": t.created_at,
        "conns_inactive_at": null,
        "config_src": "cloudflare",
        "remote_config": true,
        "status": "healthy",
        "tun_type": "cfd_tunnel",
        "metadata": {},
    })))
}

fn config_json(t: &Tunnel) -> Value {
    json!({
        "account_id": t.account_id,
        "tunnel_id": t.id,
        "version": t.version,
        "config": t.config,
        "source": "cloudflare",
        "created_at": t.config_created_at,
    })
}

fn get_tunnel_config(st: &mut State, path: &str, account_id: &str, tunnel_id: &str) -> Reply {
    let t = tunnel_ref(st, path, account_id, tunnel_id)?;
    Ok(ok(config_json(t)))
}

fn put_tunnel_config(
    st: &mut State,
    path: &str,
    account_id: &str,
    tunnel_id: &str,
    body: &Bytes,
) -> Reply {
    let t = tunnel_ref(st, path, account_id, tunnel_id)?;
    let v = parse_body(body)?;
    let obj = body_object(&v)?;
    let config = obj.get("config").filter(|c| c.is_object()).ok_or_else(|| {
        fail(
            400,
            9207,
            "Request body is invalid: `config` is required and must be an object",
        )
        .at("/config")
    })?;
    validate_tunnel_config(config)?;
    t.config = Some(config.clone());
    t.version += 1;
    t.config_created_at = now();
    Ok(ok(config_json(t)))
}

fn invalid_config(msg: impl Into<String>) -> Failure {
    fail(400, 1056, format!("Validation failed: {}", msg.into()))
}

/// The checks cloudflared applies to ingress rules.
fn validate_tunnel_config(config: &Value) -> Result<(), Failure> {
    let obj = config
        .as_object()
        .ok_or_else(|| invalid_config("the configuration must be an object"))?;
    if let Some(o) = obj.get("originRequest")
        && !o.is_object()
    {
        return Err(invalid_config("`originRequest` must be an object").at("/config/originRequest"));
    }
    let rules = match obj.get("ingress") {
        Some(Value::Array(r)) if !r.is_empty() => r,
        Some(Value::Array(_)) | None => {
            return Err(
                invalid_config("at least one ingress rule is required").at("/config/ingress")
            );
        }
        Some(_) => return Err(invalid_config("`ingress` must be an array").at("/config/ingress")),
    };
    let last = rules.len() - 1;
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("/config/ingress/{i}");
        let r = rule.as_object().ok_or_else(|| {
            invalid_config(format!("ingress rule #{} must be an object", i + 1)).at(&at)
        })?;
        let text = |key: &str| -> Result<Option<&str>, Failure> {
            match r.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(invalid_config(format!(
                    "ingress rule #{}: `{key}` must be a string",
                    i + 1
                ))
                .at(format!("{at}/{key}"))),
            }
        };
        let hostname = text("hostname")?.filter(|h| !h.is_empty());
        let path = text("path")?.filter(|p| !p.is_empty());
        let service = text("service")?.filter(|s| !s.is_empty()).ok_or_else(|| {
            invalid_config(format!("ingress rule #{} has no service", i + 1))
                .at(format!("{at}/service"))
        })?;
        if let Some(o) = r.get("originRequest")
            && !o.is_null()
            && !o.is_object()
        {
            return Err(invalid_config(format!(
                "ingress rule #{}: `originRequest` must be an object",
                i + 1
            ))
            .at(format!("{at}/originRequest")));
        }
        if let Some(h) = hostname {
            if h.contains(':') {
                return Err(
                    invalid_config("Hostname cannot contain a port").at(format!("{at}/hostname"))
                );
            }
            let bad_wildcard = h != "*"
                && (h.matches('*').count() > 1 || (h.contains('*') && !h.starts_with("*.")));
            if bad_wildcard {
                return Err(invalid_config(
                    "Hostname patterns can have at most one wildcard character (\"*\") and it can only be used for subdomains, e.g. \"*.example.com\"",
                )
                .at(format!("{at}/hostname")));
            }
        }
        let catch_all = hostname.is_none_or(|h| h == "*") && path.is_none();
        if i == last && !catch_all {
            return Err(invalid_config(
                "The last ingress rule must match all URLs (i.e. it should not have a hostname or path)",
            )
            .at(&at));
        }
        if i != last && catch_all {
            return Err(invalid_config(format!(
                "Rule #{} is matching all URLs, but it is not the last rule: the rules after it would never be used",
                i + 1
            ))
            .at(&at));
        }
        validate_service(service).map_err(|m| {
            invalid_config(format!("ingress rule #{}: {m}", i + 1)).at(format!("{at}/service"))
        })?;
    }
    Ok(())
}

fn validate_service(service: &str) -> Result<(), String> {
    if let Some(code) = service.strip_prefix("http_status:") {
        return match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(()),
            _ => Err(format!("`{service}` is not a valid HTTP status")),
        };
    }
    if matches!(service, "hello_world" | "bastion" | "socks5") {
        return Ok(());
    }
    if let Some(p) = service
        .strip_prefix("unix:")
        .or_else(|| service.strip_prefix("unix+tls:"))
    {
        return if p.is_empty() {
            Err(format!("`{service}` has no socket path"))
        } else {
            Ok(())
        };
    }
    let Some((scheme, rest)) = service.split_once("://") else {
        return Err(format!("`{service}` is not a supported origin service"));
    };
    if !matches!(scheme, "http" | "https" | "tcp" | "ssh" | "rdp" | "smb") {
        return Err(format!("`{service}` uses an unsupported protocol"));
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(format!("`{service}` has no host"));
    }
    if matches!(scheme, "http" | "https") && !path.is_empty() {
        return Err(format!(
            "{service} is an invalid address, ingress rules don't support proxying to a different path on the origin service. The path will be the same as the eyeball request's path"
        ));
    }
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
