//! MCP tool calls per second and latency percentiles under concurrent clients, through the real server,
//! compared in the same run and on the same cores with the limit and a peer:
//!
//! * **supervisor** — the release binary `supervisor serve` as a child process with authentication on
//!   (one project token per client), a real store (SQLite; PostgreSQL too when TEST_DATABASE_URL is set),
//!   the vault, a timing history of 2,000 tasks and a knowledge source of 500 documents (embedded when
//!   an embedding model is configured: SUPERVISOR_MODEL_DIR or SUPERVISOR_TEST_MODEL_DIR; full text only
//!   otherwise, and the table says which).
//! * **bare rmcp** (the limit) — this benchmark binary re-executed as a minimal rmcp server (same rmcp
//!   version, streamable HTTP with JSON answers, router built once) answering the same tools from an
//!   in-memory map: no authentication, no storage — what the protocol stack alone costs.
//! * **Python SDK** (the peer) — the official MCP Python SDK's `MCPServer` under uvicorn
//!   (benches/peers/python_sdk_server.py), answering the same tools from the same in-memory data; run
//!   with the Python in SUPERVISOR_TEST_PYTHON (`scripts/test-deps` installs it) or MCP_BENCH_PYTHON.
//!
//! On a machine with two or more cores every server runs on core 0 and this load generator on core 1
//! (`taskset`; `MCP_BENCH_PIN=0` turns it off), so a server's calls/s is what one core gives it.
//!
//! Each client is one MCP connection over streamable HTTP with its own HTTP connection, speaking
//! JSON-RPC through reqwest: `initialize` + `notifications/initialized` (a session, protocol
//! 2025-11-25), then `tools/call` round trips one after the other; or, in the stateless 2026-07-28
//! revision, self-contained `tools/call` requests (no session). Only `tools/call` round trips are timed,
//! after a warm-up; every answer is parsed and checked (the port, the secret's value, an estimate, a
//! hit, a completed task), so an error or an empty answer cannot count as a call. `complete_task_timer`
//! needs a running timer: each client starts one with `start_task_timer` (not timed, but inside the
//! window, so its calls/s counts completions per second of start + complete pairs).
//!
//! ```sh
//! cargo bench --bench mcp                                    # SQLite
//! TEST_DATABASE_URL=postgres://… cargo bench --bench mcp     # SQLite and PostgreSQL
//! ```
//!
//! Knobs: `MCP_BENCH_SECONDS` (per measurement, default 5), `MCP_BENCH_CLIENTS` (default `1,10,100`),
//! `MCP_BENCH_TOOLS` (default `get_port,get_secret,estimate_task,search_knowledge,complete_task_timer`),
//! `MCP_BENCH_MODES` (default `session,stateless`), `MCP_BENCH_TARGETS` (default
//! `supervisor,bare,python`). The server runs with `rate_limit_per_second = 0` (no per-token limit), as a
//! benchmark of the server, not of the limiter. The table also gives the CPU time per call of the server
//! process and of this load generator (from /proc), so the server's own capacity can be told apart from
//! the machine's.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PROJECT: &str = "bench";
const SECRET_PATH: &str = "project/bench/api_key";
const SECRET_VALUE: &str = "bench-secret-value-0123456789abcdef";
const PORT: i64 = 20001;
const ALL_TOOLS: &str = "get_port,get_secret,estimate_task,search_knowledge,complete_task_timer";
/// Completed tasks in the timing history, and documents in the knowledge source.
const HISTORY_TASKS: usize = 2_000;
const KNOWLEDGE_DOCS: usize = 500;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// Whether servers and the load generator are pinned to separate cores.
fn pinned() -> bool {
    // Decided once: after this process is pinned, it sees one core.
    static PINNED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PINNED.get_or_init(|| {
        env_or("MCP_BENCH_PIN", "1") != "0"
            && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
    })
}

/// A server command, on core 0 when pinned.
fn server_command(program: &str) -> Command {
    if pinned() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", program]);
        c
    } else {
        Command::new(program)
    }
}

/// The embedding model directory the supervisor server gets, if any.
fn model_dir() -> Option<String> {
    std::env::var("SUPERVISOR_MODEL_DIR")
        .or_else(|_| std::env::var("SUPERVISOR_TEST_MODEL_DIR"))
        .ok()
        .filter(|d| !d.is_empty())
}

/// A word list for the synthetic history and documents (deterministic).
const WORDS: [&str; 48] = [
    "deploy",
    "rollback",
    "cache",
    "database",
    "migration",
    "index",
    "query",
    "latency",
    "token",
    "session",
    "retry",
    "timeout",
    "queue",
    "worker",
    "schema",
    "endpoint",
    "handler",
    "config",
    "secret",
    "rotation",
    "port",
    "tunnel",
    "hostname",
    "record",
    "backup",
    "restore",
    "metrics",
    "alert",
    "dashboard",
    "test",
    "fixture",
    "benchmark",
    "parser",
    "lexer",
    "router",
    "middleware",
    "upload",
    "download",
    "payment",
    "invoice",
    "email",
    "webhook",
    "search",
    "ranking",
    "embedding",
    "vector",
    "refactor",
    "cleanup",
];

fn words(seed: usize, n: usize) -> String {
    (0..n)
        .map(|i| {
            WORDS[(seed.wrapping_mul(2_654_435_761) >> (i % 7)).wrapping_add(i * 31) % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A workspace: state, key, config, database, timing history, knowledge, and one token per client.
struct Workspace {
    dir: tempfile::TempDir,
    database_url: Option<String>,
    tokens: Vec<String>,
}

impl Workspace {
    fn cmd(&self) -> Command {
        self.cmd_of(Command::new(bin()))
    }

    fn cmd_of(&self, mut c: Command) -> Command {
        c.current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("SECRETS_ENCRYPTION_KEY")
            .env_remove("SUPERVISOR_CONFIG")
            .env_remove("SUPERVISOR_STATE_DIR")
            .env_remove("SUPERVISOR_MODEL_DIR")
            .env_remove("LOG_LEVEL");
        if let Some(u) = &self.database_url {
            c.env("DATABASE_URL", u);
        }
        if let Some(m) = model_dir() {
            c.env("SUPERVISOR_MODEL_DIR", m);
        }
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run supervisor");
        assert!(
            out.status.success(),
            "supervisor {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn new(database_url: Option<String>, clients: usize) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("state/projects")).unwrap();
        std::fs::write(
            p.join("state/supervisor.yaml"),
            "ports:\n  projects: { start: 20000, end: 29999, block: 100 }\n  shared: { start: 9000, end: 9099 }\n",
        )
        .unwrap();
        std::fs::write(
            p.join("state/projects/bench.yaml"),
            format!(
                "name: {PROJECT}\nport_range: 20000\nservices:\n  - name: web\n  - name: api\n    port: {PORT}\n"
            ),
        )
        .unwrap();
        // Ten more projects so the registry is not trivially small.
        for i in 0..10 {
            std::fs::write(
                p.join(format!("state/projects/other{i}.yaml")),
                format!("name: other{i}\nservices:\n  - name: a\n  - name: b\n  - name: c\n"),
            )
            .unwrap();
        }
        let key = p.join("secrets.key");
        std::fs::write(&key, format!("{}\n", "3c".repeat(32))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            p.join("supervisor.toml"),
            format!(
                "secrets_key_file = \"{}\"\n\n[serve]\nrate_limit_per_second = 0\n",
                key.display()
            ),
        )
        .unwrap();
        let mut ws = Workspace {
            dir,
            database_url,
            tokens: Vec::new(),
        };
        ws.run(&["apply", "--auto-approve"]);
        let value = ws.dir.path().join("value.txt");
        std::fs::write(&value, SECRET_VALUE).unwrap();
        ws.run(&[
            "secrets",
            "set",
            SECRET_PATH,
            "--value-file",
            value.to_str().unwrap(),
        ]);
        std::fs::remove_file(&value).unwrap();
        ws.seed_timing_and_knowledge();
        for _ in 0..clients {
            let out = ws.run(&["token", "create", "--project", PROJECT, "--json"]);
            let v: Value = serde_json::from_str(&out).unwrap();
            ws.tokens.push(v["token"].as_str().unwrap().to_string());
        }
        ws
    }

    /// A timing history and a knowledge source for `estimate_task` and `search_knowledge`.
    fn seed_timing_and_knowledge(&self) {
        let types = ["feature", "bugfix", "refactor", "test", "docs"];
        let history = self.dir.path().join("history.jsonl");
        let mut f = std::fs::File::create(&history).unwrap();
        for i in 0..HISTORY_TASKS {
            let line = json!({
                "task_id": format!("h{i}"),
                "description": words(i, 6 + i % 12),
                "task_type": types[i % types.len()],
                "project": if i % 3 == 0 { PROJECT.to_string() } else { format!("other{}", i % 10) },
                "duration_seconds": 60.0 + ((i * 7919) % 3_600) as f64,
            });
            writeln!(f, "{line}").unwrap();
        }
        drop(f);
        self.run(&["timing", "import", history.to_str().unwrap()]);
        let kb = self.dir.path().join("kb.jsonl");
        let mut f = std::fs::File::create(&kb).unwrap();
        for i in 0..KNOWLEDGE_DOCS {
            let line = json!({
                "id": format!("doc{i}"),
                "title": format!("Note {i}: {}", words(i + 7, 4)),
                "text": format!("{}. {}.", words(i, 40), words(i * 3 + 1, 30)),
            });
            writeln!(f, "{line}").unwrap();
        }
        drop(f);
        self.run(&[
            "knowledge",
            "index",
            "--jsonl",
            kb.to_str().unwrap(),
            "--source",
            "kb",
            "--project",
            PROJECT,
        ]);
    }
}

/// A server under measurement: a child process listening on `addr`, its MCP endpoint at `path`.
struct Server {
    child: Child,
    addr: String,
    path: String,
}

impl Server {
    /// Spawns `cmd` and waits for the stderr line `<prefix>http://ADDR…`.
    fn spawn(mut cmd: Command, prefix: &str, path: &str) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the server exited before printing `{prefix}`"))
                .unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                let rest = rest.strip_prefix("http://").unwrap_or(rest);
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            path: path.to_string(),
        }
    }

    fn supervisor(ws: &Workspace) -> Server {
        let mut cmd = ws.cmd_of(server_command(bin().to_str().unwrap()));
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let server = Server::spawn(cmd, "supervisor serving on ", &format!("/mcp/{PROJECT}"));
        wait_until_up(&server.addr);
        server
    }

    fn bare() -> Server {
        let me = std::env::current_exe().unwrap();
        let mut cmd = server_command(me.to_str().unwrap());
        cmd.arg("--bare-server");
        Server::spawn(cmd, "bare rmcp serving on ", &format!("/mcp/{PROJECT}"))
    }

    fn python(stateless: bool) -> Option<Server> {
        let python = std::env::var("MCP_BENCH_PYTHON")
            .or_else(|_| std::env::var("SUPERVISOR_TEST_PYTHON"))
            .ok()?;
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/python_sdk_server.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = server_command(&python);
        cmd.arg(&script).arg(port.to_string());
        if stateless {
            cmd.arg("stateless");
        }
        let server = Server::spawn(cmd, "python-sdk serving on ", &format!("/mcp/{PROJECT}"));
        wait_until_up(&server.addr);
        Some(server)
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// The server's user + system CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_of(&self.child.id().to_string())
    }
}

/// Waits until something accepts connections at `addr`.
fn wait_until_up(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of a process (`self` for this one), from /proc.
fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // /proc reports clock ticks of USER_HZ, which is 100 on Linux whatever the kernel's HZ.
    Duration::from_millis(ticks * 10)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// initialize → Mcp-Session-Id (2025-11-25)
    Session,
    /// self-contained requests (2026-07-28)
    Stateless,
}

/// One MCP client: its own HTTP connection, its session if any.
struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    mode: Mode,
    session: Option<String>,
    next_id: u64,
}

impl Client {
    async fn connect(url: &str, token: Option<&str>, mode: Mode) -> Client {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut c = Client {
            http,
            url: url.to_string(),
            token: token.map(str::to_string),
            mode,
            session: None,
            next_id: 1,
        };
        if mode == Mode::Session {
            let resp = c
                .post(
                    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                        "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": "mcp-bench", "version": "1"}}}),
                    "initialize",
                    None,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "initialize at {url}");
            c.session = Some(
                resp.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
            let _ = resp.bytes().await;
            let resp = c
                .post(
                    json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                    "notifications/initialized",
                    None,
                )
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "initialized");
        }
        c
    }

    fn post(&self, body: Value, method: &str, name: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        match self.mode {
            Mode::Session => {
                r = r.header("mcp-protocol-version", "2025-11-25");
                if let Some(s) = &self.session {
                    r = r.header("mcp-session-id", s);
                }
            }
            Mode::Stateless => {
                r = r
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", method);
                if let Some(n) = name {
                    r = r.header("mcp-name", n);
                }
            }
        }
        r
    }

    /// One `tools/call` round trip; the answer is parsed and checked, its structured content returned.
    async fn call(&mut self, tool: &str, args: &Value, check: &Check) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut params = json!({"name": tool, "arguments": args});
        if self.mode == Mode::Stateless {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        let resp = self
            .post(
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}),
                "tools/call",
                Some(tool),
            )
            .send()
            .await
            .expect("tools/call");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        let mut v = response_message(&body).unwrap_or_else(|| {
            panic!(
                "{tool}: HTTP {status}, no JSON-RPC response in: {}",
                String::from_utf8_lossy(&body)
            )
        });
        let result = &mut v["result"];
        let ok = status == 200 && result["isError"] != true && check(&result["structuredContent"]);
        assert!(ok, "{tool}: unexpected answer (HTTP {status}): {v}");
        v["result"]["structuredContent"].take()
    }
}

/// The JSON-RPC response in a body: plain JSON (stateless answers), or the `data:` event that carries it
/// in a server-sent event stream (session answers, after rmcp's priming event).
fn response_message(body: &[u8]) -> Option<Value> {
    if body.first() == Some(&b'{') {
        return serde_json::from_slice(body).ok();
    }
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| d.starts_with('{'))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
}

/// Whether a tool call's structured content is the expected answer.
type Check = dyn Fn(&Value) -> bool + Send + Sync;

/// What one timed call is: the tool, its arguments and the check of its answer; `complete_task_timer`
/// first starts a timer (untimed) and completes that one.
struct Workload {
    tool: String,
    args: Value,
    check: Arc<Check>,
}

fn workload(tool: &str) -> Workload {
    let (args, check): (Value, Arc<Check>) = match tool {
        "get_port" => (
            json!({"service": "api"}),
            Arc::new(|s: &Value| s["port"] == PORT),
        ),
        "get_secret" => (
            json!({"path": SECRET_PATH}),
            Arc::new(|s: &Value| s["value"] == SECRET_VALUE),
        ),
        "estimate_task" => (
            json!({"description": "add a retry with backoff to the webhook worker queue", "task_type": "feature"}),
            Arc::new(|s: &Value| s["estimated_seconds"].as_f64().is_some_and(|e| e > 0.0)),
        ),
        "search_knowledge" => (
            json!({"query": "how do we roll back a deploy after a failed migration", "limit": 5}),
            Arc::new(|s: &Value| s["hits"].as_array().is_some_and(|h| !h.is_empty())),
        ),
        "complete_task_timer" => (
            json!({"success": true}),
            Arc::new(|s: &Value| s["duration_seconds"].as_f64().is_some()),
        ),
        other => panic!("unknown tool {other}"),
    };
    Workload {
        tool: tool.to_string(),
        args,
        check,
    }
}

impl Workload {
    /// One timed call (and the untimed preparation it needs); the time of the timed call.
    async fn once(&self, c: &mut Client) -> Duration {
        let mut args = self.args.clone();
        if self.tool == "complete_task_timer" {
            let started = c
                .call(
                    "start_task_timer",
                    &json!({"description": "benchmark task", "task_type": "feature"}),
                    &|s: &Value| s["task_id"].is_string(),
                )
                .await;
            args["task_id"] = started["task_id"].clone();
        }
        let t0 = Instant::now();
        c.call(&self.tool, &args, self.check.as_ref()).await;
        t0.elapsed()
    }
}

struct Measured {
    calls: usize,
    per_second: f64,
    sorted: Vec<Duration>,
    server_cpu_per_call: Duration,
    client_cpu_per_call: Duration,
}

struct Row {
    target: String,
    mode: &'static str,
    tool: String,
    clients: usize,
    calls: usize,
    per_second: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
    server_cpu_per_call: Duration,
    client_cpu_per_call: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn measure(
    server: &Server,
    tokens: Option<&[String]>,
    mode: Mode,
    tool: &str,
    clients: usize,
    seconds: f64,
) -> Measured {
    let url = server.url();
    let work = Arc::new(workload(tool));
    let mut connected = Vec::new();
    for i in 0..clients {
        let token = tokens.map(|t| t[i].as_str());
        connected.push(Client::connect(&url, token, mode).await);
    }
    let warmup = Duration::from_millis(500);
    let window = Duration::from_secs_f64(seconds);
    let start = Instant::now() + Duration::from_millis(100);
    let (measure_from, measure_to) = (start + warmup, start + warmup + window);
    let mut tasks = Vec::new();
    for mut c in connected {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut samples = Vec::with_capacity(16_384);
            loop {
                let t0 = Instant::now();
                if t0 >= measure_to {
                    break;
                }
                let took = work.once(&mut c).await;
                if t0 >= measure_from {
                    samples.push(took);
                }
            }
            samples
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (cpu_before, client_before) = (server.cpu(), cpu_of("self"));
    tokio::time::sleep_until(measure_to.into()).await;
    let (cpu_used, client_used) = (server.cpu() - cpu_before, cpu_of("self") - client_before);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let calls = all.len();
    Measured {
        calls,
        per_second: calls as f64 / window.as_secs_f64(),
        sorted: all,
        server_cpu_per_call: cpu_used / calls.max(1) as u32,
        client_cpu_per_call: client_used / calls.max(1) as u32,
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    env_or(name, default)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A server the load is run against, with the tokens its clients present (none for the peers).
struct Target {
    label: String,
    server: Server,
    tokens: Option<Vec<String>>,
    /// Kept alive as long as the server uses it.
    _ws: Option<Workspace>,
}

async fn run(rows: &mut Vec<Row>) {
    let clients: Vec<usize> = list("MCP_BENCH_CLIENTS", "1,10,100")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let tools = list("MCP_BENCH_TOOLS", ALL_TOOLS);
    let modes = list("MCP_BENCH_MODES", "session,stateless");
    let wanted = list("MCP_BENCH_TARGETS", "supervisor,bare,python");
    let seconds: f64 = env_or("MCP_BENCH_SECONDS", "5").parse().unwrap();
    let max_clients = *clients.iter().max().unwrap();
    eprintln!(
        "pinning: {}; embedding model: {}",
        if pinned() {
            "servers on core 0, load generator on core 1"
        } else {
            "none"
        },
        model_dir().unwrap_or_else(|| "none (knowledge search is full text only)".into())
    );
    for mode_name in &modes {
        let (mode, mode_label) = match mode_name.as_str() {
            "session" => (Mode::Session, "session (2025-11-25)"),
            "stateless" => (Mode::Stateless, "stateless (2026-07-28)"),
            other => panic!("unknown mode {other}"),
        };
        let mut targets: Vec<Target> = Vec::new();
        if wanted.iter().any(|t| t == "supervisor") {
            let mut backends = vec![("supervisor SQLite", None)];
            if std::env::var("TEST_DATABASE_URL").is_ok() {
                backends.push((
                    "supervisor PostgreSQL",
                    Some(db::fresh_postgres_url().await),
                ));
            } else {
                eprintln!("TEST_DATABASE_URL is not set: PostgreSQL not measured");
            }
            for (label, url) in backends {
                eprintln!(
                    "[{label}] preparing state, secret, history, knowledge and {max_clients} tokens…"
                );
                let ws = Workspace::new(url, max_clients);
                targets.push(Target {
                    label: label.into(),
                    server: Server::supervisor(&ws),
                    tokens: Some(ws.tokens.clone()),
                    _ws: Some(ws),
                });
            }
        }
        if wanted.iter().any(|t| t == "bare") {
            targets.push(Target {
                label: "bare rmcp".into(),
                server: Server::bare(),
                tokens: None,
                _ws: None,
            });
        }
        if wanted.iter().any(|t| t == "python") {
            match Server::python(mode == Mode::Stateless) {
                Some(server) => targets.push(Target {
                    label: "Python SDK".into(),
                    server,
                    tokens: None,
                    _ws: None,
                }),
                None => eprintln!(
                    "neither MCP_BENCH_PYTHON nor SUPERVISOR_TEST_PYTHON is set: the Python SDK peer is not measured (scripts/test-deps installs it)"
                ),
            }
        }
        for tool in &tools {
            for &n in &clients {
                for t in &targets {
                    let m = measure(&t.server, t.tokens.as_deref(), mode, tool, n, seconds).await;
                    let row = Row {
                        target: t.label.clone(),
                        mode: mode_label,
                        tool: tool.clone(),
                        clients: n,
                        calls: m.calls,
                        per_second: m.per_second,
                        p50: percentile(&m.sorted, 0.50),
                        p95: percentile(&m.sorted, 0.95),
                        p99: percentile(&m.sorted, 0.99),
                        max: *m.sorted.last().unwrap(),
                        server_cpu_per_call: m.server_cpu_per_call,
                        client_cpu_per_call: m.client_cpu_per_call,
                    };
                    eprintln!("{}", render(&row));
                    rows.push(row);
                }
            }
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn render(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} |",
        r.target,
        r.mode,
        r.tool,
        r.clients,
        r.calls,
        r.per_second,
        ms(r.p50),
        ms(r.p95),
        ms(r.p99),
        ms(r.max),
        r.server_cpu_per_call.as_secs_f64() * 1e6,
        r.client_cpu_per_call.as_secs_f64() * 1e6
    )
}

/// Each target's calls/s as a share of the bare rmcp server's, per protocol, tool and clients.
fn ratios(rows: &[Row]) {
    let mut bare: BTreeMap<(&str, &str, usize), f64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.target == "bare rmcp") {
        bare.insert((r.mode, r.tool.as_str(), r.clients), r.per_second);
    }
    if bare.is_empty() {
        return;
    }
    println!("\n| target | protocol | tool | clients | calls/s ÷ bare rmcp | p99 ms |");
    println!("|---|---|---|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.target != "bare rmcp") {
        if let Some(b) = bare.get(&(r.mode, r.tool.as_str(), r.clients)) {
            println!(
                "| {} | {} | {} | {} | {:.2} | {} |",
                r.target,
                r.mode,
                r.tool,
                r.clients,
                r.per_second / b,
                ms(r.p99)
            );
        }
    }
}

fn pin_self_to_core_1() {
    if !pinned() {
        return;
    }
    let pid = std::process::id().to_string();
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &pid])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("could not pin the load generator to core 1 (taskset)");
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bare-server") {
        bare::serve();
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the MCP benchmark runs with `cargo bench --bench mcp`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    pin_self_to_core_1();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned() { 1 } else { 2 })
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(run(&mut rows));
    println!(
        "\n| target | protocol | tool | clients | calls | calls/s | p50 ms | p95 ms | p99 ms | max ms | server CPU µs/call | client CPU µs/call |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", render(r));
    }
    ratios(&rows);
}

/// The limit: a minimal rmcp server (the same rmcp as `serve`, streamable HTTP with JSON answers,
/// sessions kept by rmcp's local session manager, the tool router built once) answering the benchmark's
/// tools from memory, with no authentication and no storage.
mod bare {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::serve::ListenerExt;
    use rmcp::handler::server::router::tool::ToolRouter;
    use rmcp::handler::server::wrapper::{Json, Parameters};
    use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use rmcp::{ServerHandler, tool, tool_handler, tool_router};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Clone)]
    pub struct Bare {
        tools: Arc<ToolRouter<Bare>>,
        ports: Arc<HashMap<String, i64>>,
        secrets: Arc<HashMap<String, String>>,
        next_task: Arc<AtomicU64>,
    }

    #[derive(Deserialize, JsonSchema)]
    pub struct PortArgs {
        service: String,
        #[serde(default)]
        project: Option<String>,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct PortOut {
        project: String,
        service: String,
        port: i64,
        allocated_now: bool,
    }

    #[derive(Deserialize, JsonSchema)]
    pub struct SecretArgs {
        path: String,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct SecretOut {
        path: String,
        value: String,
    }

    #[derive(Deserialize, JsonSchema)]
    pub struct TaskArgs {
        description: String,
        task_type: String,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct EstimateOut {
        estimated_seconds: f64,
        interval_low_seconds: f64,
        interval_high_seconds: f64,
        sample_size: i64,
    }

    #[derive(Deserialize, JsonSchema)]
    pub struct SearchArgs {
        query: String,
        #[serde(default)]
        limit: Option<i64>,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct Hit {
        id: i64,
        score: f64,
        snippet: String,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct SearchOut {
        hits: Vec<Hit>,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct StartedOut {
        task_id: String,
        task_type: String,
    }

    #[derive(Deserialize, JsonSchema)]
    pub struct CompleteArgs {
        task_id: String,
        #[serde(default)]
        success: Option<bool>,
    }

    #[derive(Serialize, JsonSchema)]
    pub struct CompletedOut {
        task_id: String,
        status: String,
        duration_seconds: f64,
    }

    #[tool_router(router = router)]
    impl Bare {
        #[tool(description = "The port of a service.")]
        async fn get_port(
            &self,
            Parameters(a): Parameters<PortArgs>,
        ) -> Result<Json<PortOut>, String> {
            let port = *self.ports.get(&a.service).ok_or("no such service")?;
            Ok(Json(PortOut {
                project: a.project.unwrap_or_else(|| super::PROJECT.into()),
                service: a.service,
                port,
                allocated_now: false,
            }))
        }

        #[tool(description = "A secret's value.")]
        async fn get_secret(
            &self,
            Parameters(a): Parameters<SecretArgs>,
        ) -> Result<Json<SecretOut>, String> {
            let value = self.secrets.get(&a.path).ok_or("no such secret")?.clone();
            Ok(Json(SecretOut {
                path: a.path,
                value,
            }))
        }

        #[tool(description = "An estimate for a task.")]
        async fn estimate_task(
            &self,
            Parameters(a): Parameters<TaskArgs>,
        ) -> Result<Json<EstimateOut>, String> {
            let _ = (a.description, a.task_type);
            Ok(Json(EstimateOut {
                estimated_seconds: 600.0,
                interval_low_seconds: 120.0,
                interval_high_seconds: 3000.0,
                sample_size: 10,
            }))
        }

        #[tool(description = "Knowledge search.")]
        async fn search_knowledge(
            &self,
            Parameters(a): Parameters<SearchArgs>,
        ) -> Result<Json<SearchOut>, String> {
            let n = a.limit.unwrap_or(5).clamp(1, 10);
            Ok(Json(SearchOut {
                hits: (0..n)
                    .map(|id| Hit {
                        id,
                        score: 1.0,
                        snippet: a.query.chars().take(80).collect(),
                    })
                    .collect(),
            }))
        }

        #[tool(description = "Start a task timer.")]
        async fn start_task_timer(
            &self,
            Parameters(a): Parameters<TaskArgs>,
        ) -> Result<Json<StartedOut>, String> {
            let id = self.next_task.fetch_add(1, Ordering::Relaxed);
            Ok(Json(StartedOut {
                task_id: format!("t{id}"),
                task_type: a.task_type,
            }))
        }

        #[tool(description = "Complete a task timer.")]
        async fn complete_task_timer(
            &self,
            Parameters(a): Parameters<CompleteArgs>,
        ) -> Result<Json<CompletedOut>, String> {
            Ok(Json(CompletedOut {
                task_id: a.task_id,
                status: if a.success.unwrap_or(true) {
                    "completed"
                } else {
                    "failed"
                }
                .into(),
                duration_seconds: 1.0,
            }))
        }
    }

    #[tool_handler(router = self.tools)]
    impl ServerHandler for Bare {
        fn get_info(&self) -> ServerConfig {
            let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
            info.server_info = Implementation::new("bare-rmcp", "1");
            info
        }
    }

    pub fn serve() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let template = Bare {
                tools: Arc::new(Bare::router()),
                ports: Arc::new(HashMap::from([
                    ("api".into(), super::PORT),
                    ("web".into(), 20000),
                ])),
                secrets: Arc::new(HashMap::from([(
                    super::SECRET_PATH.to_string(),
                    super::SECRET_VALUE.to_string(),
                )])),
                next_task: Arc::new(AtomicU64::new(1)),
            };
            let config = StreamableHttpServerConfig::default()
                .with_allowed_hosts(["127.0.0.1", "localhost"].map(String::from))
                .with_json_response(true);
            let service = StreamableHttpService::new(
                move || Ok(template.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            );
            let app =
                axum::Router::new().route_service(&format!("/mcp/{}", super::PROJECT), service);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            eprintln!(
                "bare rmcp serving on http://{}",
                listener.local_addr().unwrap()
            );
            // No Nagle delay on small answers (as `serve` and uvicorn do).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
    }
}
