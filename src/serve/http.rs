//! The HTTP face: `/health`, `/metrics`, MCP over streamable HTTP at `/mcp/meta` and `/mcp/{project}`
//! (one rmcp service per endpoint, created on first use, so a project added to `state/` gets its
//! endpoint without a restart), and the status page ([`super::page`]: `/`, `/projects/{name}`, `/plan`,
//! `/tasks`, `/vms`, `/login`, `/logout`).
//!
//! In front of MCP and the page: the Host/Origin check ([`super::origin::OriginPolicy`], DNS-rebinding
//! protection with configurable allowed hosts; rmcp gets the same lists and checks them again), then
//! authentication ([`AppState::admit`], shared by both): bearer tokens (401 without a valid token, 403
//! on another project's endpoint or, for the page, with any project token; the scheme is
//! case-insensitive; the page also takes its login session), a throttle on clients that keep failing
//! authentication (429 with `Retry-After` instead of 401; a valid token is always accepted; see
//! [`super::guard`]) and a per-token rate limit (429 with `Retry-After`). `/health` and `/metrics` are
//! for monitors and take neither.
//!
//! A POST body is read whole (at most [`MAX_BODY`], within [`BODY_READ_TIMEOUT`]) before rmcp sees it:
//! a body that is not JSON is answered here with HTTP 400 and the JSON-RPC parse error (-32700). Each
//! principal holds at most `sessions_per_token` MCP sessions (the least recently used is closed), and
//! sessions idle for `session_idle` are closed by rmcp.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::guard::{FailedAuth, SessionLimits, TtlCache};
use super::origin::OriginPolicy;
use crate::mcp::auth::{self, Principal};
use crate::mcp::{Endpoint, McpServer};
use crate::ops::Runtime;

type McpService = StreamableHttpService<McpServer, LocalSessionManager>;
/// An endpoint's rmcp service and its session manager (to close sessions beyond the limit).
type EndpointService = (Arc<McpService>, Arc<LocalSessionManager>);

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub no_auth: bool,
    /// Extra host names accepted in `Host` (loopback names always are).
    pub allowed_hosts: Vec<String>,
    /// Requests per second per token (burst: twice that); 0 = unlimited.
    pub rate_limit_per_second: u32,
    /// Open MCP sessions per principal.
    pub sessions_per_token: u32,
    /// An MCP session unused this long is closed.
    pub session_idle: Duration,
    /// Failed authentications a client address may have at once before 429.
    pub auth_failures_burst: u32,
}

/// How long a verified token is trusted before the database is asked again: revocation takes effect
/// within this time. Refused tokens are not cached.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most verified tokens cached at once.
const AUTH_CACHE_CAPACITY: usize = 1024;
/// After the burst of failures a client may have at once, one more per second.
const AUTH_FAILURES_PER_SECOND: f64 = 1.0;
/// Most clients whose failures are counted.
const AUTH_FAILURE_CLIENTS: usize = 10_000;
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Largest MCP request body (a secret is at most 1 MiB, escaped in JSON).
pub const MAX_BODY: usize = 8 << 20;
/// A request body must arrive within this time.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_HEADER: &str = "mcp-session-id";

/// What every route shares: the runtime, the configuration, the Host/Origin policy, authentication and
/// its bounded caches, the MCP services and the status page's login sessions.
pub(super) struct AppState {
    pub(super) rt: Arc<Runtime>,
    pub(super) cfg: HttpConfig,
    pub(super) origin: OriginPolicy,
    mcp_config: StreamableHttpServerConfig,
    endpoints: Mutex<HashMap<Endpoint, EndpointService>>,
    auth_cache: TtlCache<String, Principal>,
    pub(super) failed_auth: FailedAuth,
    sessions: SessionLimits,
    /// The status page's logins: hash of a session id → hash of the meta token that opened it.
    pub(super) logins: TtlCache<String, String>,
    touched: Mutex<HashMap<String, Instant>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// What a request presented to authenticate.
pub(super) enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// The hash of the token a login session was opened with.
    TokenHash(String),
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// No credential at all.
    Missing,
    /// An unknown, malformed or revoked token.
    Invalid,
    /// This address failed too often: retry after that many seconds.
    Throttled(u64),
    /// This token's rate limit is exhausted: retry after that many seconds.
    RateLimited(u64),
    /// The token store could not be asked.
    StoreDown,
}

impl Refused {
    /// The HTTP status of this refusal.
    pub(super) fn status(self) -> StatusCode {
        match self {
            Refused::Missing | Refused::Invalid => StatusCode::UNAUTHORIZED,
            Refused::Throttled(_) | Refused::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Refused::StoreDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What went wrong, for a client that presents a bearer token.
    pub(super) fn message(self) -> &'static str {
        match self {
            Refused::Missing => {
                "missing bearer token: send `Authorization: Bearer <token>` (create one with `supervisor token create`)"
            }
            Refused::Invalid => "invalid or revoked token",
            Refused::Throttled(_) => {
                "too many failed authentications from this address; wait before retrying"
            }
            Refused::RateLimited(_) => "rate limit exceeded for this token; slow down",
            Refused::StoreDown => "the token store is unreachable; retry shortly",
        }
    }

    /// Adds `Retry-After` when the refusal says when to retry.
    pub(super) fn with_retry(self, r: Response) -> Response {
        match self {
            Refused::Throttled(retry) | Refused::RateLimited(retry) => with_retry_after(r, retry),
            _ => r,
        }
    }

    /// Adds what the refusal tells a client besides its body: `Retry-After` when it says when to
    /// retry, `WWW-Authenticate` on 401.
    pub(super) fn annotate(self, r: Response) -> Response {
        let mut r = self.with_retry(r);
        if self.status() == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"supervisor\""),
            );
        }
        r
    }
}

/// The bearer token of `Authorization` (RFC 7235: the scheme is case-insensitive).
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once([' ', '\t']))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
}

/// The client's address (for the failure throttle).
pub(super) fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn with_retry_after(mut r: Response, seconds: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// The JSON-RPC answer to a body that is not JSON: HTTP 400 with error -32700.
fn parse_error(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32700, "message": format!("Parse error: the request body is not valid JSON ({detail})")}
        })),
    )
        .into_response()
}

/// Who holds a session, for [`SessionLimits`].
fn principal_key(p: Option<&Principal>) -> String {
    match p {
        Some(p) => p.token_id().map_or_else(|| p.actor(), str::to_string),
        None => "anonymous".into(),
    }
}

fn session_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl AppState {
    fn service(&self, endpoint: &Endpoint) -> EndpointService {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(endpoint.clone())
            .or_insert_with(|| {
                let rt = self.rt.clone();
                let ep = endpoint.clone();
                let fallback = Principal::Local {
                    who: "serve".into(),
                };
                let mut sessions = LocalSessionManager::default();
                let mut config = SessionConfig::default();
                config.keep_alive = Some(self.cfg.session_idle);
                sessions.session_config = config;
                let sessions = Arc::new(sessions);
                let service = Arc::new(StreamableHttpService::new(
                    move || Ok(McpServer::new(rt.clone(), ep.clone(), fallback.clone())),
                    sessions.clone(),
                    self.mcp_config.clone(),
                ));
                (service, sessions)
            })
            .clone()
    }

    /// The principal of the token whose hash is `key` (cached briefly; revocation takes effect within
    /// [`AUTH_CACHE_TTL`]).
    async fn verify_hash(&self, key: &str) -> Result<Option<Principal>, crate::store::StoreError> {
        if let Some(p) = self.auth_cache.get(&key.to_string()) {
            return Ok(Some(p));
        }
        let principal = auth::verify_hash(self.rt.store.as_ref(), key).await?;
        if let Some(p) = &principal {
            self.auth_cache.insert(key.to_string(), p.clone());
        }
        if let Some(id) = principal.as_ref().and_then(|p| p.token_id()) {
            let due = {
                let mut t = self.touched.lock().unwrap_or_else(|e| e.into_inner());
                let due = t.get(id).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
                if due {
                    t.insert(id.to_string(), Instant::now());
                }
                due
            };
            if due {
                let (store, id) = (self.rt.store.clone(), id.to_string());
                tokio::spawn(async move {
                    let _ = store.touch_token(&id, chrono::Utc::now()).await;
                });
            }
        }
        Ok(principal)
    }

    /// Token bucket per token; `Err(seconds until the next request is allowed)` when empty.
    fn take(&self, key: &str) -> Result<(), u64> {
        let rate = f64::from(self.cfg.rate_limit_per_second);
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets
            .entry(key.to_string())
            .or_insert((burst, Instant::now()));
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Admits a request that presented `credential` from `client`: its principal, or why not. A failure
    /// counts against the client's address ([`FailedAuth`]): an address that keeps failing is answered
    /// [`Refused::Throttled`] — but a valid credential is accepted whatever its address did (behind a
    /// reverse proxy or cloudflared every client shares one address, and one client's failures must
    /// not lock the others out). Then the token's rate limit.
    pub(super) async fn admit(
        &self,
        credential: Option<Credential>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Principal, Refused> {
        let throttled = client.and_then(|ip| self.failed_auth.check(ip).err());
        let refuse = |why: Refused| {
            if let Some(ip) = client {
                self.failed_auth.failed(ip);
            }
            match throttled {
                Some(retry) => {
                    self.rt.metrics.rejected("auth_throttled");
                    Refused::Throttled(retry)
                }
                None => {
                    self.rt.metrics.rejected("unauthorized");
                    why
                }
            }
        };
        let key = match credential {
            None => return Err(refuse(Refused::Missing)),
            Some(Credential::Bearer(token)) => {
                if !token.starts_with(auth::TOKEN_PREFIX) || token.len() > 128 {
                    return Err(refuse(Refused::Invalid));
                }
                auth::hash_token(&token)
            }
            Some(Credential::TokenHash(hash)) => hash,
        };
        let principal = match self.verify_hash(&key).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(refuse(Refused::Invalid)),
            Err(e) => {
                tracing::error!(error = %e, "token lookup failed");
                return Err(Refused::StoreDown);
            }
        };
        if let Err(retry) = self.take(principal.token_id().unwrap_or("local")) {
            self.rt.metrics.rejected("rate_limited");
            return Err(Refused::RateLimited(retry));
        }
        Ok(principal)
    }
}

/// MCP's answer to a refused request: JSON, 401 with `WWW-Authenticate`, 429 with `Retry-After`, 503.
fn refused_json(why: Refused) -> Response {
    why.annotate(json_error(why.status(), why.message()))
}

async fn authenticate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if st.cfg.no_auth {
        req.extensions_mut().insert(Principal::Local {
            who: "serve:no-auth".into(),
        });
        return next.run(req).await;
    }
    let credential = bearer(req.headers()).map(Credential::Bearer);
    match st.admit(credential, client_ip(&req)).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(why) => refused_json(why),
    }
}

/// The Host/Origin check ([`OriginPolicy::check`]) in front of every route a browser can reach.
async fn allowed_origin(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Err(why) = st.origin.check(req.headers()) {
        st.rt.metrics.rejected("host_not_allowed");
        tracing::warn!(reason = %why, "refused a request's Host or Origin (possible DNS rebinding)");
        return json_error(why.status(), &why.to_string());
    }
    next.run(req).await
}

async fn dispatch(st: &AppState, endpoint: Endpoint, req: Request) -> Response {
    let principal = req.extensions().get::<Principal>().cloned();
    if let Some(p) = &principal
        && !p.may_use(endpoint.project())
    {
        st.rt.metrics.rejected("forbidden");
        let msg = match p {
            Principal::Project { project, .. } => {
                format!("this token is for project `{project}`; it may only use /mcp/{project}")
            }
            _ => "this token may not use this endpoint".into(),
        };
        return json_error(StatusCode::FORBIDDEN, &msg);
    }
    if let Some(project) = endpoint.project()
        && !st.rt.desired().await.projects.contains_key(project)
    {
        st.rt.metrics.rejected("not_found");
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("there is no project `{project}`"),
        );
    }
    let req = match read_body(req).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let holder = principal_key(principal.as_ref());
    let session = session_of(req.headers());
    if let Some(id) = &session {
        st.sessions.touch(&holder, id);
    }
    let closing = req.method() == axum::http::Method::DELETE;
    let (svc, sessions) = st.service(&endpoint);
    let response = svc.handle(req).await.map(Body::new);
    match (&session, session_of(response.headers())) {
        (Some(id), _) if closing => st.sessions.closed(&holder, id),
        (None, Some(created)) => {
            for (ep, old) in st.sessions.opened(&holder, &endpoint, &created) {
                let manager = if ep == endpoint {
                    sessions.clone()
                } else {
                    st.service(&ep).1
                };
                let _ = manager.close_session(&Arc::from(old.as_str())).await;
            }
        }
        _ => {}
    }
    response
}

/// Reads a POST body whole (bounded in size and time) and refuses one that claims to be JSON but is not;
/// other requests pass untouched.
async fn read_body(req: Request) -> Result<Request, Response> {
    if req.method() != axum::http::Method::POST {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return Err(json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body is larger than {MAX_BODY} bytes, or was cut off"),
                ));
            }
            Err(_) => {
                return Err(json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                ));
            }
        };
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if is_json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        // serde_json's message names a position, never the input.
        return Err(parse_error(&e.to_string()));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn mcp_meta(State(st): State<Arc<AppState>>, req: Request) -> Response {
    dispatch(&st, Endpoint::Meta, req).await
}

async fn mcp_project(
    State(st): State<Arc<AppState>>,
    Path(project): Path<String>,
    req: Request,
) -> Response {
    dispatch(&st, Endpoint::Project(project), req).await
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// How long `/health` waits for the database before calling it unreachable.
const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let rt = &st.rt;
    let db = tokio::time::timeout(HEALTH_DB_TIMEOUT, async {
        rt.store.ping().await?;
        Ok::<_, crate::store::StoreError>(rt.store.writable().await.err().map(|e| e.to_string()))
    })
    .await;
    let (reachable, writable, db_error) = match db {
        Ok(Ok(None)) => (true, true, None),
        Ok(Ok(Some(why))) => (true, false, Some(why)),
        Ok(Err(e)) => (false, false, Some(e.to_string())),
        Err(_) => (
            false,
            false,
            Some(format!(
                "the database did not answer within {} s",
                HEALTH_DB_TIMEOUT.as_secs()
            )),
        ),
    };
    let timers = if reachable {
        rt.timing().timer_counts().await.ok()
    } else {
        None
    };
    let desired = rt.desired().await;
    let desired_error = rt.desired_error().await;
    let reconcile = rt.status.read().await.clone();
    let degraded = !reachable
        || !writable
        || desired_error.is_some()
        || reconcile.last_result.as_deref() == Some("error");
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": rt.started.elapsed().as_secs(),
        "database": {
            "backend": rt.store.backend(),
            "reachable": reachable,
            "writable": writable,
            "error": db_error,
        },
        "memory_rss_bytes": rss_bytes(),
        "desired": { "revision": desired.revision, "projects": desired.projects.len(), "error": desired_error },
        "reconcile": reconcile,
        "active_task_timers": timers.map(|t| t.running),
        "abandoned_task_timers": timers.map(|t| t.abandoned),
    });
    let code = if reachable && writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let leader = st.rt.status.read().await.leader;
    let body = st.rt.metrics.render(st.rt.started.elapsed(), leader);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The application: routes, auth, limits.
pub fn router(rt: Arc<Runtime>, cfg: HttpConfig, shutdown: &CancellationToken) -> Router {
    let origin = OriginPolicy::new(&cfg.allowed_hosts);
    tracing::debug!(port = cfg.listen.port(), hosts = ?origin.rmcp_hosts(), "allowed hosts");
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(origin.rmcp_hosts())
        .with_allowed_origins(origin.rmcp_origins())
        .with_json_response(true)
        .with_max_request_body_bytes(MAX_BODY)
        .with_cancellation_token(shutdown.child_token());
    let sessions = SessionLimits::new(cfg.sessions_per_token as usize, cfg.session_idle);
    let auth_failures_burst = cfg.auth_failures_burst;
    let state = Arc::new(AppState {
        rt,
        cfg,
        origin,
        mcp_config,
        auth_cache: TtlCache::new(AUTH_CACHE_TTL, AUTH_CACHE_CAPACITY),
        failed_auth: FailedAuth::new(
            auth_failures_burst,
            AUTH_FAILURES_PER_SECOND,
            AUTH_FAILURE_CLIENTS,
        ),
        sessions,
        logins: TtlCache::new(super::page::SESSION_IDLE, super::page::SESSION_CAPACITY),
        endpoints: Mutex::new(HashMap::new()),
        touched: Mutex::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
    });
    let mcp = Router::new()
        .route("/mcp/meta", any(mcp_meta))
        .route("/mcp/{project}", any(mcp_project))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Browsers reach MCP and the page: both get the same Host/Origin check, before authentication.
    let browser_facing =
        mcp.merge(super::page::routes(state.clone()))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                allowed_origin,
            ));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(browser_facing)
        .with_state(state)
}
