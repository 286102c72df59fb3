//! MCP tool calls per second and latency percentiles under concurrent clients, through the real server:
//! the release binary `supervisor serve` as a child process with authentication on (one project token
//! per client), a real store (SQLite; PostgreSQL too when TEST_DATABASE_URL is set) and the vault.
//!
//! Each client is one MCP connection over streamable HTTP with its own HTTP connection, speaking
//! JSON-RPC through reqwest: `initialize` + `notifications/initialized` (a session, protocol
//! 2025-11-25), then `tools/call` round trips one after the other; or, in the stateless 2026-07-28
//! revision, self-contained `tools/call` requests (no session). Only `tools/call` round trips are timed,
//! after a warm-up; every answer is parsed and checked (the port, the secret's value), so an error or an
//! empty answer cannot count as a call.
//!
//! ```sh
//! cargo bench --bench mcp                                    # SQLite
//! TEST_DATABASE_URL=postgres://… cargo bench --bench mcp     # SQLite and PostgreSQL
//! ```
//!
//! Knobs: `MCP_BENCH_SECONDS` (per measurement, default 5), `MCP_BENCH_CLIENTS` (default `1,10,100`),
//! `MCP_BENCH_TOOLS` (default `get_port,get_secret`), `MCP_BENCH_MODES` (default `session,stateless`).
//! The server runs with `rate_limit_per_second = 0` (no per-token limit), as a benchmark of the
//! server, not of the limiter. Client and server share the machine's cores; the table also gives the
//! CPU time per call of the server process and of this load generator (from /proc), so the server's
//! own capacity can be told apart from the machine's.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PROJECT: &str = "bench";
const SECRET_PATH: &str = "project/bench/api_key";
const SECRET_VALUE: &str = "bench-secret-value-0123456789abcdef";
const PORT: i64 = 20001;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// A workspace: state, key, config, database, and one token per client.
struct Workspace {
    dir: tempfile::TempDir,
    database_url: Option<String>,
    tokens: Vec<String>,
}

impl Workspace {
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("SECRETS_ENCRYPTION_KEY")
            .env_remove("SUPERVISOR_CONFIG")
            .env_remove("SUPERVISOR_STATE_DIR")
            .env_remove("LOG_LEVEL");
        if let Some(u) = &self.database_url {
            c.env("DATABASE_URL", u);
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
        for _ in 0..clients {
            let out = ws.run(&["token", "create", "--project", PROJECT, "--json"]);
            let v: Value = serde_json::from_str(&out).unwrap();
            ws.tokens.push(v["token"].as_str().unwrap().to_string());
        }
        ws
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(ws: &Workspace) -> Server {
        let mut child = ws
            .cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn supervisor serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("supervisor serving on http://") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// The server's user + system CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_of(&self.child.id().to_string())
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
    token: String,
    mode: Mode,
    session: Option<String>,
    next_id: u64,
}

impl Client {
    async fn connect(url: &str, token: &str, mode: Mode) -> Client {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut c = Client {
            http,
            url: url.to_string(),
            token: token.to_string(),
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
            assert_eq!(resp.status(), 200, "initialize");
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
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
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

    /// One `tools/call` round trip; the answer is parsed and checked.
    async fn call(&mut self, tool: &str, args: &Value, check: &(dyn Fn(&Value) -> bool + Sync)) {
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
        let v = response_message(&body).unwrap_or_else(|| {
            panic!(
                "{tool}: HTTP {status}, no JSON-RPC response in: {}",
                String::from_utf8_lossy(&body)
            )
        });
        let result = &v["result"];
        assert!(
            status == 200
                && v["id"] == id
                && result["isError"] == false
                && check(&result["structuredContent"]),
            "{tool}: unexpected answer (HTTP {status}): {v}"
        );
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

struct Measured {
    calls: usize,
    per_second: f64,
    sorted: Vec<Duration>,
    server_cpu_per_call: Duration,
    client_cpu_per_call: Duration,
}

struct Row {
    backend: &'static str,
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
    ws: &Workspace,
    mode: Mode,
    tool: &str,
    clients: usize,
    seconds: f64,
) -> Measured {
    let url = format!("http://{}/mcp/{PROJECT}", server.addr);
    let (args, check): (Value, Arc<Check>) = match tool {
        "get_port" => (
            json!({"service": "api"}),
            Arc::new(|s: &Value| s["port"] == PORT),
        ),
        "get_secret" => (
            json!({"path": SECRET_PATH}),
            Arc::new(|s: &Value| s["value"] == SECRET_VALUE),
        ),
        other => panic!("unknown tool {other}"),
    };
    let mut connected = Vec::new();
    for i in 0..clients {
        connected.push(Client::connect(&url, &ws.tokens[i], mode).await);
    }
    let warmup = Duration::from_millis(500);
    let window = Duration::from_secs_f64(seconds);
    let start = Instant::now() + Duration::from_millis(100);
    let (measure_from, measure_to) = (start + warmup, start + warmup + window);
    let mut tasks = Vec::new();
    for mut c in connected {
        let (args, check, tool) = (args.clone(), check.clone(), tool.to_string());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut samples = Vec::with_capacity(16_384);
            loop {
                let t0 = Instant::now();
                if t0 >= measure_to {
                    break;
                }
                c.call(&tool, &args, check.as_ref()).await;
                if t0 >= measure_from {
                    samples.push(t0.elapsed());
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

async fn bench_backend(backend: &'static str, database_url: Option<String>, rows: &mut Vec<Row>) {
    let clients: Vec<usize> = env_or("MCP_BENCH_CLIENTS", "1,10,100")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let tools: Vec<String> = env_or("MCP_BENCH_TOOLS", "get_port,get_secret")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let modes: Vec<String> = env_or("MCP_BENCH_MODES", "session,stateless")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let seconds: f64 = env_or("MCP_BENCH_SECONDS", "5").parse().unwrap();
    let max_clients = *clients.iter().max().unwrap();
    eprintln!("[{backend}] preparing state, secret and {max_clients} tokens…");
    let ws = Workspace::new(database_url, max_clients);
    let server = Server::start(&ws);
    for mode_name in &modes {
        let (mode, mode_label) = match mode_name.as_str() {
            "session" => (Mode::Session, "session (2025-11-25)"),
            "stateless" => (Mode::Stateless, "stateless (2026-07-28)"),
            other => panic!("unknown mode {other}"),
        };
        for tool in &tools {
            for &n in &clients {
                let m = measure(&server, &ws, mode, tool, n, seconds).await;
                let row = Row {
                    backend,
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
    drop(server);
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn render(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} |",
        r.backend,
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

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the MCP benchmark runs with `cargo bench --bench mcp`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        bench_backend("SQLite", None, &mut rows).await;
        if std::env::var("TEST_DATABASE_URL").is_ok() {
            let url = db::fresh_postgres_url().await;
            bench_backend("PostgreSQL", Some(url), &mut rows).await;
        } else {
            eprintln!("TEST_DATABASE_URL is not set: PostgreSQL not measured");
        }
    });
    println!(
        "\n| backend | protocol | tool | clients | calls | calls/s | p50 ms | p95 ms | p99 ms | max ms | server CPU µs/call | client CPU µs/call |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", render(r));
    }
}
