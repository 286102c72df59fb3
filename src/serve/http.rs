//! The HTTP face: `/health`, `/metrics`, and MCP over streamable HTTP at `/mcp/meta` and
//! `/mcp/{project}` (one rmcp service per endpoint, created on first use, so a project added to `state/`
//! gets its endpoint without a restart).
//!
//! In front of MCP: bearer-token authentication (401 without a valid token, 403 on another project's
//! endpoint), a per-token rate limit (429 with `Retry-After`), and rmcp's Host/Origin validation
//! (DNS-rebinding protection) with configurable allowed hosts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::mcp::auth::{self, Principal};
use crate::mcp::{Endpoint, McpServer};
use crate::ops::Runtime;

type McpService = StreamableHttpService<McpServer, LocalSessionManager>;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub no_auth: bool,
    /// Extra host names accepted in `Host` (loopback names always are).
    pub allowed_hosts: Vec<String>,
    /// Requests per second per token (burst: twice that); 0 = unlimited.
    pub rate_limit_per_second: u32,
}

/// How long a verified (or refused) token is trusted before the database is asked again: revocation
/// takes effect within this time.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(2);
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

struct AppState {
    rt: Arc<Runtime>,
    cfg: HttpConfig,
    mcp_config: StreamableHttpServerConfig,
    endpoints: Mutex<HashMap<Endpoint, Arc<McpService>>>,
    auth_cache: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
    touched: Mutex<HashMap<String, Instant>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

impl AppState {
    fn service(&self, endpoint: Endpoint) -> Arc<McpService> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(endpoint.clone())
            .or_insert_with(|| {
                let rt = self.rt.clone();
                let ep = endpoint.clone();
                let fallback = Principal::Local {
                    who: "serve".into(),
                };
                Arc::new(StreamableHttpService::new(
                    move || Ok(McpServer::new(rt.clone(), ep.clone(), fallback.clone())),
                    Arc::new(LocalSessionManager::default()),
                    self.mcp_config.clone(),
                ))
            })
            .clone()
    }

    async fn verify(&self, token: &str) -> Result<Option<Principal>, crate::store::StoreError> {
        let key = auth::hash_token(token);
        let cached = self
            .auth_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(p, _)| p.clone());
        if let Some(p) = cached {
            return Ok(p);
        }
        let principal = auth::verify(self.rt.store.as_ref(), token).await?;
        self.auth_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (principal.clone(), Instant::now()));
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
}

async fn authenticate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if st.cfg.no_auth {
        req.extensions_mut().insert(Principal::Local {
            who: "serve:no-auth".into(),
        });
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_string);
    let unauthorized = |msg: &str| {
        st.rt.metrics.rejected("unauthorized");
        let mut r = json_error(StatusCode::UNAUTHORIZED, msg);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"supervisor\""),
        );
        r
    };
    let Some(token) = presented else {
        return unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` (create one with `supervisor token create`)",
        );
    };
    let principal = match st.verify(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return unauthorized("invalid or revoked token"),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the token store is unreachable; retry shortly",
            );
        }
    };
    if let Err(retry) = st.take(principal.token_id().unwrap_or("local")) {
        st.rt.metrics.rejected("rate_limited");
        let mut r = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded for this token; slow down",
        );
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    req.extensions_mut().insert(principal);
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
    let svc = st.service(endpoint);
    svc.handle(req).await.map(Body::new)
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

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let rt = &st.rt;
    let db = tokio::time::timeout(Duration::from_secs(2), rt.store.ping()).await;
    let reachable = matches!(db, Ok(Ok(())));
    let timers = if reachable {
        rt.store.running_tasks().await.ok()
    } else {
        None
    };
    let desired = rt.desired().await;
    let desired_error = rt.desired_error().await;
    let reconcile = rt.status.read().await.clone();
    let degraded =
        !reachable || desired_error.is_some() || reconcile.last_result.as_deref() == Some("error");
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": rt.started.elapsed().as_secs(),
        "database": { "backend": rt.store.backend(), "reachable": reachable },
        "memory_rss_bytes": rss_bytes(),
        "desired": { "revision": desired.revision, "projects": desired.projects.len(), "error": desired_error },
        "reconcile": reconcile,
        "active_task_timers": timers,
    });
    let code = if reachable {
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
    let port = cfg.listen.port();
    let mut hosts: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "[::1]".into(),
    ];
    hosts.extend(cfg.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .flat_map(|h| [format!("http://{h}:*"), format!("https://{h}:*")])
        .collect();
    origins.extend(
        cfg.allowed_hosts
            .iter()
            .flat_map(|h| [format!("https://{h}:*"), format!("http://{h}:*")]),
    );
    tracing::debug!(port, ?hosts, "MCP allowed hosts");
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_json_response(true)
        .with_cancellation_token(shutdown.child_token());
    let state = Arc::new(AppState {
        rt,
        cfg,
        mcp_config,
        endpoints: Mutex::new(HashMap::new()),
        auth_cache: Mutex::new(HashMap::new()),
        touched: Mutex::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
    });
    let mcp = Router::new()
        .route("/mcp/meta", any(mcp_meta))
        .route("/mcp/{project}", any(mcp_project))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(mcp)
        .with_state(state)
}
