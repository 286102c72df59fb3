//! The status page: server-rendered HTML at `GET /` and a few sub-pages — everything a person wants to
//! see at a glance, read from the same library calls the CLI and the MCP tools make (no second copy of
//! any logic: `ops::status`, `ops::ports`, `ops::gcloud`, `timing::Timing`, the engine's plan text).
//! This module gathers; [`view`] renders (maud, escaped by construction); [`chart`] draws the inline
//! SVG.
//!
//! | path | what |
//! |---|---|
//! | `/` | every project (services, ports, hostnames, sync state, CLAUDE.md, last applied revision), the reconciler and its last runs, secrets needing attention, running timers, the estimator's calibration, the VMs declared |
//! | `/projects/{name}` | one project: services, hostnames, its port block as a grid, every resource's state, its plan, its checks, its tasks |
//! | `/plan` | the pending plan, as `supervisor plan` prints it |
//! | `/tasks` | recent tasks with actual against estimated duration, running timers, statistics per type |
//! | `/vms` | each VM as Compute Engine describes it, with CPU and memory sparklines of the last hour |
//! | `/login`, `/logout` | the session for a browser |
//!
//! Guarantees:
//! * **Read only.** No route changes anything but a login session: applying stays in the CLI and MCP.
//!   `POST /login` and `POST /logout` must come from the page itself (`Origin` = `Host`,
//!   [`super::origin::OriginPolicy::check_same_origin`]); every route passes the same Host/Origin check
//!   as MCP.
//! * **Meta tokens only.** A request is admitted with `Authorization: Bearer <meta token>` or a session
//!   cookie opened with one; a project token is refused (403): the page shows every project. Without
//!   credentials a browser (`Accept: text/html`) is sent to `/login` (303), anything else gets 401.
//!   `serve --no-auth` (loopback only) serves the page without login.
//! * **Sessions keep no token.** `POST /login` verifies the token, draws a 256-bit session id and keeps
//!   only the id's SHA-256 → the token's SHA-256 (so revoking the token ends its sessions within the
//!   token cache's two seconds), bounded in number ([`SESSION_CAPACITY`], oldest dropped) and ended
//!   after [`SESSION_IDLE`] without use. The cookie is `HttpOnly; SameSite=Strict; Path=/`, and
//!   `Secure` unless the request came to a loopback name (plain HTTP on this machine or through an SSH
//!   tunnel). Failed logins count in the same throttle as failed bearer tokens (429 after a burst).
//! * **No script, no external asset.** CSS is inline; pictures are inline SVG; auto-refresh is a
//!   `<meta http-equiv="refresh">` the reader switches on (`?refresh=30`). The Content-Security-Policy
//!   forbids scripts, frames and every remote source; responses are `no-store`.
//! * **Secrets by path only**; nothing on the page is ever a secret value.
//! * A section whose call fails shows the error in its place; the rest of the page still renders.

pub mod chart;
mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use rand::RngCore;

use super::http::{AppState, Credential, Refused, bearer, client_ip};
use super::origin::OriginPolicy;
use crate::engine::Scope;
use crate::mcp::auth::{self, Principal};
use crate::ops::ports::{self, PortListing};
use crate::ops::status::Status;
use crate::ops::{DesiredError, ReconcileStatus, Runtime, Visibility};
use crate::providers::ports_audit::AuditReport;
use crate::providers::vm_info::{VmHealth, VmInfo};
use crate::state::{Desired, Project, Vm};
use crate::store::ApplyRun;
use crate::store::checks::CheckRun;
use crate::timing::Scope as TimingScope;
use crate::timing::service::{COVERAGE_WINDOW, IntervalCoverage, ListTimers, StatsLine, TimerLine};

/// A login session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most login sessions kept at once (the oldest goes first).
pub const SESSION_CAPACITY: usize = 1024;
const COOKIE: &str = "supervisor_session";
/// Largest login form body.
const MAX_FORM: usize = 4096;
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);
const RECENT_RUNS: i64 = 10;
const RECENT_TASKS: i64 = 30;
/// The window of the VM sparklines.
const VM_HEALTH_MINUTES: i64 = 60;
/// VMs described at once on `/vms`.
const VM_CONCURRENCY: usize = 4;

/// No script may run; styles are inline; pictures are inline SVG (or `data:`); forms post to the page.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes (the Host/Origin check is added by the caller, in front of MCP too).
pub(super) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/projects/{name}", get(project))
        .route("/plan", get(plan))
        .route("/tasks", get(tasks))
        .route("/vms", get(vms))
        .route_layer(middleware::from_fn_with_state(state, require_viewer));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .merge(pages)
        .route_layer(middleware::from_fn(security_headers))
}

/// Who is looking, once admitted.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    /// For the journal and the secret access log (a plan reads provider credentials).
    pub actor: String,
    /// Logged in with a session (the page offers to log out).
    pub session: bool,
}

/// Page options in the query string.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct PageQuery {
    /// Reload the page every this many seconds (5 to 3600).
    refresh: Option<u32>,
}

impl PageQuery {
    fn refresh(&self) -> Option<u32> {
        self.refresh.map(|s| s.clamp(5, 3600))
    }
}

/// The page's headers on every answer (refusals and redirects included), and `Server-Timing`: how long
/// the server took (browsers' developer tools and `benches/status_page.rs` read it).
async fn security_headers(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut r = next.run(req).await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("page;dur={took:.2}")) {
        h.insert("server-timing", v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The session id a cookie carries, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The hash of the token behind a session cookie, when the session is live (its idle time restarts).
fn session_token(st: &AppState, headers: &HeaderMap) -> Option<String> {
    let id = session_cookie(headers)?;
    st.logins.get_refreshed(&auth::hash_token(&id))
}

fn cookie(headers: &HeaderMap, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if !OriginPolicy::is_loopback_request(headers) {
        c.push_str("; Secure");
    }
    // Only base64url characters and fixed text: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn actor_of(p: &Principal) -> String {
    match p {
        Principal::Local { who } => who.clone(),
        other => format!("page:{}", other.token_id().unwrap_or("?")),
    }
}

/// What the page answers a request it does not admit.
fn refused_page(st: &AppState, why: Refused, headers: &HeaderMap) -> Response {
    let message = match why {
        Refused::Missing | Refused::Invalid if wants_html(headers) => return see_other("/login"),
        Refused::Missing => {
            "authentication required: send `Authorization: Bearer <meta token>` or log in at /login"
        }
        other => other.message(),
    };
    let status = why.status();
    why.annotate(html(
        status,
        view::message_page(status, message, st.cfg.no_auth),
    ))
}

fn project_token_refused(st: &AppState, project: &str) -> Response {
    st.rt.metrics.rejected("forbidden");
    let message = format!(
        "this token is for project `{project}`; the status page shows every project and needs a meta token (supervisor token create --meta)"
    );
    html(
        StatusCode::FORBIDDEN,
        view::message_page(StatusCode::FORBIDDEN, &message, st.cfg.no_auth),
    )
}

/// Admits a page request: `--no-auth`, a bearer meta token, or a live session.
async fn require_viewer(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if st.cfg.no_auth {
        req.extensions_mut().insert(Viewer {
            actor: "page:no-auth".into(),
            session: false,
        });
        return next.run(req).await;
    }
    // The session behind a cookie, as (hash of its id, hash of its token).
    let session = session_cookie(req.headers()).and_then(|id| {
        let key = auth::hash_token(&id);
        st.logins.get_refreshed(&key).map(|token| (key, token))
    });
    let credential = match (bearer(req.headers()), &session) {
        (Some(token), _) => Credential::Bearer(token),
        (None, Some((_, token))) => Credential::TokenHash(token.clone()),
        // No credential (or a session that ended): a browser goes to the login form. Not counted as
        // a failure: an expired session is not an attack.
        (None, None) => return refused_page(&st, Refused::Missing, req.headers()),
    };
    let by_session = matches!(credential, Credential::TokenHash(_));
    match st.admit(Some(credential), client_ip(&req)).await {
        Ok(Principal::Project { project, .. }) => project_token_refused(&st, &project),
        Ok(principal) => {
            req.extensions_mut().insert(Viewer {
                actor: actor_of(&principal),
                session: by_session,
            });
            next.run(req).await
        }
        Err(why) => {
            // The session's token was revoked: the session ends with it.
            if by_session
                && why == Refused::Invalid
                && let Some((key, _)) = &session
            {
                st.logins.remove(key);
            }
            refused_page(&st, why, req.headers())
        }
    }
}

async fn login_form(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if st.cfg.no_auth || session_token(&st, &headers).is_some() {
        return see_other("/");
    }
    html(StatusCode::OK, view::login(None))
}

/// The `token` field of a form-urlencoded body, read whole (bounded in size and time).
async fn form_token(req: Request) -> Result<String, (StatusCode, &'static str)> {
    let bytes = match tokio::time::timeout(
        FORM_READ_TIMEOUT,
        axum::body::to_bytes(req.into_body(), MAX_FORM),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is larger than 4 KiB",
            ));
        }
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                "the form did not arrive in time",
            ));
        }
    };
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if token.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "paste a meta token into the field"));
    }
    Ok(token)
}

async fn login(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if let Err(why) = st.origin.check_same_origin(req.headers()) {
        st.rt.metrics.rejected("forbidden");
        return html(
            why.status(),
            view::message_page(why.status(), &why.to_string(), st.cfg.no_auth),
        );
    }
    if st.cfg.no_auth {
        return see_other("/");
    }
    let headers = req.headers().clone();
    let client = client_ip(&req);
    let token = match form_token(req).await {
        Ok(t) => t,
        Err((status, message)) => return html(status, view::login(Some(message))),
    };
    // The session keeps this hash, never the token.
    let token_hash = auth::hash_token(&token);
    let principal = match st.admit(Some(Credential::Bearer(token)), client).await {
        Ok(p) => p,
        Err(why) => {
            let message = match why {
                Refused::Missing | Refused::Invalid => {
                    "that token is unknown or revoked (create one with `supervisor token create --meta`)"
                }
                Refused::Throttled(_) => {
                    "too many failed logins from this address; wait a moment before trying again"
                }
                other => other.message(),
            };
            return why.with_retry(html(why.status(), view::login(Some(message))));
        }
    };
    if let Principal::Project { project, .. } = &principal {
        st.rt.metrics.rejected("forbidden");
        let message = format!(
            "that token is for project `{project}`; the status page needs a meta token (supervisor token create --meta)"
        );
        return html(StatusCode::FORBIDDEN, view::login(Some(&message)));
    }
    open_session(&st, &headers, token_hash)
}

/// Draws a session id, remembers its hash → the token's hash, and answers 303 to `/` with the cookie.
fn open_session(st: &AppState, headers: &HeaderMap, token_hash: String) -> Response {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let id = auth::base64url(&bytes);
    st.logins.insert(auth::hash_token(&id), token_hash);
    let mut r = see_other("/");
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(headers, &id, None));
    r
}

async fn logout(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(why) = st.origin.check_same_origin(&headers) {
        st.rt.metrics.rejected("forbidden");
        return html(
            why.status(),
            view::message_page(why.status(), &why.to_string(), st.cfg.no_auth),
        );
    }
    if let Some(id) = session_cookie(&headers) {
        st.logins.remove(&auth::hash_token(&id));
    }
    let mut r = see_other("/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(&headers, "", Some(0)));
    r
}

// ---------------------------------------------------------------------------------------------------
// What each page shows, gathered from the library calls the CLI and MCP make.

/// A section's data, or why it could not be read (shown in its place).
pub(super) type Part<T> = Result<T, String>;

fn part<T, E: std::fmt::Display>(r: Result<T, E>) -> Part<T> {
    r.map_err(|e| e.to_string())
}

/// The frame every page shares.
pub(super) struct Frame {
    pub viewer: Viewer,
    pub refresh: Option<u32>,
    /// The path of this page (for the refresh links).
    pub path: String,
    pub desired_error: Option<DesiredError>,
}

async fn frame(rt: &Runtime, viewer: Viewer, q: &PageQuery, path: String) -> Frame {
    Frame {
        viewer,
        refresh: q.refresh(),
        path,
        desired_error: rt.desired_error().await,
    }
}

pub(super) struct Overview {
    pub desired: Arc<Desired>,
    pub status: Part<Status>,
    pub listing: Part<PortListing>,
    pub reconcile: ReconcileStatus,
    pub runs: Part<Vec<ApplyRun>>,
    /// Runs by id: each project's last applied revision.
    pub applied: HashMap<String, ApplyRun>,
    pub running: Part<Vec<TimerLine>>,
    pub coverage: Part<IntervalCoverage>,
    /// Why the vault cannot be used, when it cannot.
    pub vault_problem: Option<String>,
}

/// The runs that last applied each project's resources (by id), for "last applied revision".
async fn applied_runs(
    rt: &Runtime,
    status: &Part<Status>,
    known: &[ApplyRun],
) -> HashMap<String, ApplyRun> {
    let mut runs: HashMap<String, ApplyRun> =
        known.iter().map(|r| (r.id.clone(), r.clone())).collect();
    let Ok(status) = status else { return runs };
    let mut wanted: Vec<&str> = status
        .report
        .resources
        .iter()
        .filter_map(|l| l.last_applied_run.as_deref())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    for id in wanted {
        if runs.contains_key(id) {
            continue;
        }
        if let Ok(Some(run)) = rt.store.apply_run(id).await {
            runs.insert(id.to_string(), run);
        }
    }
    runs
}

async fn overview(
    State(st): State<Arc<AppState>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Response {
    let rt = &st.rt;
    let timing = rt.timing();
    let running = ListTimers {
        running: Some(true),
        limit: Some(1000),
        ..ListTimers::default()
    };
    let everything = Scope::default();
    let (status, listing, runs, running, coverage) = tokio::join!(
        crate::ops::status::status(rt, &everything, &viewer.actor),
        ports::list_ports(rt, &Visibility::All, None),
        rt.store.recent_runs(RECENT_RUNS),
        timing.list(&TimingScope::All, running),
        timing.interval_coverage(&TimingScope::All, None, COVERAGE_WINDOW),
    );
    let status = part(status);
    let runs = part(runs);
    let applied = applied_runs(rt, &status, runs.as_deref().unwrap_or_default()).await;
    let data = Overview {
        desired: rt.desired().await,
        status,
        listing: part(listing),
        reconcile: rt.status.read().await.clone(),
        runs,
        applied,
        running: part(running),
        coverage: part(coverage),
        vault_problem: rt.vault().err().map(|e| e.to_string()),
    };
    let frame = frame(rt, viewer, &q, "/".into()).await;
    html(StatusCode::OK, view::overview(&frame, &data))
}

pub(super) struct ProjectPage {
    pub project: Project,
    pub status: Part<Status>,
    pub listing: Part<PortListing>,
    pub audit: Part<AuditReport>,
    pub tasks: Part<Vec<TimerLine>>,
    pub coverage: Part<IntervalCoverage>,
    pub checks: Part<Vec<CheckRun>>,
    pub applied: HashMap<String, ApplyRun>,
    pub reconcile: ReconcileStatus,
}

async fn project(
    State(st): State<Arc<AppState>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let rt = &st.rt;
    let desired = rt.desired().await;
    let frame = frame(rt, viewer, &q, format!("/projects/{name}")).await;
    let Some(project) = desired.projects.get(&name).cloned() else {
        return html(
            StatusCode::NOT_FOUND,
            view::not_found(&frame, &format!("there is no project `{name}`")),
        );
    };
    let scope = Scope {
        project: Some(name.clone()),
        only: None,
    };
    let timing = rt.timing();
    let recent = ListTimers {
        project: Some(name.clone()),
        limit: Some(RECENT_TASKS),
        ..ListTimers::default()
    };
    let (status, listing, audit, tasks, coverage, checks) = tokio::join!(
        crate::ops::status::status(rt, &scope, &frame.viewer.actor),
        ports::list_ports(rt, &Visibility::All, Some(name.clone())),
        ports::audit(rt),
        timing.list(&TimingScope::All, recent),
        timing.interval_coverage(&TimingScope::All, Some(&name), COVERAGE_WINDOW),
        rt.store.latest_check_runs(&name),
    );
    let status = part(status);
    let applied = applied_runs(rt, &status, &[]).await;
    let data = ProjectPage {
        project,
        status,
        listing: part(listing),
        audit: part(audit),
        tasks: part(tasks),
        coverage: part(coverage),
        checks: part(checks),
        applied,
        reconcile: rt.status.read().await.clone(),
    };
    html(StatusCode::OK, view::project(&frame, &data))
}

async fn plan(
    State(st): State<Arc<AppState>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Response {
    let rt = &st.rt;
    let plan = part(rt.plan(&Scope::default(), &viewer.actor).await);
    let frame = frame(rt, viewer, &q, "/plan".into()).await;
    html(StatusCode::OK, view::plan(&frame, &plan))
}

pub(super) struct TasksPage {
    pub recent: Part<Vec<TimerLine>>,
    pub running: Part<Vec<TimerLine>>,
    pub stats: Part<Vec<StatsLine>>,
    pub coverage: Part<IntervalCoverage>,
}

async fn tasks(
    State(st): State<Arc<AppState>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Response {
    let rt = &st.rt;
    let timing = rt.timing();
    let (recent, running, stats, coverage) = tokio::join!(
        timing.list(
            &TimingScope::All,
            ListTimers {
                limit: Some(RECENT_TASKS * 2),
                ..ListTimers::default()
            }
        ),
        timing.list(
            &TimingScope::All,
            ListTimers {
                running: Some(true),
                limit: Some(1000),
                ..ListTimers::default()
            }
        ),
        timing.stats(&TimingScope::All, None, None),
        timing.interval_coverage(&TimingScope::All, None, COVERAGE_WINDOW),
    );
    let data = TasksPage {
        recent: part(recent),
        running: part(running),
        stats: part(stats),
        coverage: part(coverage),
    };
    let frame = frame(rt, viewer, &q, "/tasks".into()).await;
    html(StatusCode::OK, view::tasks(&frame, &data))
}

/// One declared VM as Compute Engine describes it and its last hour.
pub(super) struct VmRow {
    pub declared: Vm,
    pub info: Part<VmInfo>,
    pub health: Part<VmHealth>,
}

async fn vms(
    State(st): State<Arc<AppState>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Response {
    let rt = st.rt.clone();
    let desired = rt.desired().await;
    let limit = Arc::new(tokio::sync::Semaphore::new(VM_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for (i, vm) in desired.vms.iter().enumerate() {
        let (rt, vm, limit, actor) = (rt.clone(), vm.clone(), limit.clone(), viewer.actor.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let (info, health) = tokio::join!(
                crate::ops::gcloud::get_vm(&rt, &vm.name, &actor),
                crate::ops::gcloud::vm_health(&rt, &vm.name, VM_HEALTH_MINUTES, &actor),
            );
            (
                i,
                VmRow {
                    declared: vm,
                    info: part(info),
                    health: part(health),
                },
            )
        });
    }
    let mut rows: Vec<(usize, VmRow)> = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(row) => rows.push(row),
            Err(e) => tracing::error!(error = %e, "describing a VM panicked"),
        }
    }
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<VmRow> = rows.into_iter().map(|(_, r)| r).collect();
    let frame = frame(&rt, viewer, &q, "/vms".into()).await;
    html(
        StatusCode::OK,
        view::vms(&frame, &rows, desired.gcloud.is_some(), VM_HEALTH_MINUTES),
    )
}
