//! `estimate_task` latency with 100,000 completed tasks in the store, on SQLite and on PostgreSQL, and
//! library-level timer throughput (start + complete) with 10 concurrent callers.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://… cargo bench --bench timing
//! ```
//!
//! Knobs: `TIMING_BENCH_TASKS` (completed tasks in the store, default 100,000), `TIMING_BENCH_ESTIMATES`
//! (timed estimates per backend, default 1,000), `TIMING_BENCH_TIMERS` (start + complete pairs in the
//! throughput phase, default 2,000), `TIMING_BENCH_BACKENDS=sqlite` (skip PostgreSQL),
//! `TIMING_BENCH_MCP_CLIENTS` (default 10) and `TIMING_BENCH_MCP_COMPLETIONS` (timers each MCP client
//! completes, default 300; `0` skips the MCP phase).
//!
//! **MCP phase** (SQLite): the release binary `supervisor serve` as a child process with authentication
//! on (one project token per client, `rate_limit_per_second = 0`), its store seeded with the same
//! synthetic history through `supervisor timing import`. Each client is one MCP session over
//! streamable HTTP (protocol 2025-11-25) with its own HTTP connection; it starts its timers with
//! `start_task_timer` (untimed), then all clients complete theirs with `complete_task_timer` at once,
//! one call after the other; completions/s = all completions / wall time from the first to the last.
//! Every answer is parsed and checked (the task id, a positive duration), so an error cannot count.
//!
//! The history is synthetic and seeded: 20 projects × 8 task types, descriptions of 8–120 words drawn
//! from a Zipf-distributed vocabulary of 20,000 words (as in natural text, a few words occur in most
//! descriptions and most words are rare), durations log-normal per (type, project). It is written
//! through `Timing::import_tasks` (one transaction, as `timing import`). Each timed estimate is a new
//! description from the same generator, through `Timing::estimate` — the call behind `timing estimate`
//! and the `estimate_task` tool: statistics read, full-text search of the 20 most similar completed
//! tasks, the estimator.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use supervisor::store::timing::ImportedTask;
use supervisor::store::{self, Location, Store};
use supervisor::timing::service::{CompleteTimer, EstimateRequest, StartTimer};
use supervisor::timing::{Scope, Timing};

const PROJECTS: usize = 20;
const TYPES: [&str; 8] = [
    "feature", "bugfix", "refactor", "docs", "test", "chore", "research", "review",
];
const VOCABULARY: usize = 20_000;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeded text generator: pseudo-words with Zipf(1) frequencies.
struct Text {
    words: Vec<String>,
    /// Cumulative Zipf weights.
    cumulative: Vec<f64>,
}

impl Text {
    fn new(rng: &mut StdRng) -> Text {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zen", "pri", "sto", "gra", "del", "fin",
            "bar", "qui", "sel", "mon", "tor", "ex", "ul", "cap", "dro", "ith", "yas",
        ];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            let n = rng.random_range(1..=4);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect();
        Text { words, cumulative }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative[self.cumulative.len() - 1];
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(self.words.len() - 1)]
    }

    fn description(&self, rng: &mut StdRng) -> String {
        let n = (8.0 * (rng.random::<f64>() * 2.7).exp()) as usize; // 8 … ~120 words
        (0..n)
            .map(|_| self.word(rng).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn history(text: &Text, rng: &mut StdRng, n: usize) -> Vec<ImportedTask> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let p = rng.random_range(0..PROJECTS);
            let t = rng.random_range(0..TYPES.len());
            let mu = 6.0 + (p % 5) as f64 * 0.3 + t as f64 * 0.2; // ~7 min … ~1 h medians
            let seconds = (mu + 0.8 * normal(rng)).exp().clamp(1.0, 30.0 * 86_400.0);
            let completed_at = now - chrono::Duration::seconds((n - i) as i64 * 60);
            ImportedTask {
                id: format!("bench-{i}"),
                project: format!("project-{p}"),
                task_type: TYPES[t].to_string(),
                description: text.description(rng),
                actual_seconds: seconds,
                started_at: completed_at
                    - chrono::Duration::milliseconds((seconds * 1000.0) as i64),
                completed_at,
                estimated_seconds: (i % 3 == 0).then(|| seconds * (-0.3 + 0.6 * normal(rng)).exp()),
                success: i % 20 != 0,
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn bench_backend(name: &str, location: Location, rows: &mut Vec<String>) {
    let tasks = env_number("TIMING_BENCH_TASKS", 100_000) as usize;
    let estimates = env_number("TIMING_BENCH_ESTIMATES", 1_000) as usize;
    let timers = env_number("TIMING_BENCH_TIMERS", 2_000) as usize;
    let store: Arc<dyn Store> = store::open(&location).await.expect("open store");
    let timing = Timing::new(store.clone());
    let mut rng = StdRng::seed_from_u64(7);
    let text = Text::new(&mut rng);
    let items = history(&text, &mut rng, tasks);
    let started = Instant::now();
    let report = timing.import_tasks(items).await.expect("import");
    let import_s = started.elapsed().as_secs_f64();
    assert_eq!(report.imported, tasks);
    eprintln!("{name}: imported {tasks} tasks in {import_s:.1} s");

    // Warm-up, then timed estimates (one caller at a time: the latency a caller sees).
    let request = |rng: &mut StdRng, own: bool| EstimateRequest {
        task_id: None,
        description: text.description(rng),
        task_type: TYPES[rng.random_range(0..TYPES.len())].to_string(),
        project: Some(format!("project-{}", rng.random_range(0..PROJECTS))),
        agent_estimate_seconds: own.then(|| rng.random_range(60.0..7200.0)),
    };
    for _ in 0..50 {
        let r = request(&mut rng, false);
        timing.estimate(&Scope::All, &r).await.expect("estimate");
    }
    let mut latencies = Vec::with_capacity(estimates);
    let mut similar = 0usize;
    for i in 0..estimates {
        let r = request(&mut rng, i % 2 == 1);
        let t = Instant::now();
        let e = timing.estimate(&Scope::All, &r).await.expect("estimate");
        latencies.push(t.elapsed());
        similar += e.similar_tasks.len();
    }
    latencies.sort();
    rows.push(format!(
        "| {name} | estimate_task, {tasks} completed tasks | {estimates} | {:.2} | {:.2} | {:.2} | {:.2} |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    ));
    assert!(similar > estimates, "estimates found similar tasks");

    // Timers: 10 concurrent callers, each start + complete (a completion merges the statistics in
    // its transaction). Library level: no HTTP, no MCP.
    let callers = 10;
    let per_caller = timers / callers;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..callers {
        let timing = timing.clone();
        let mut rng = StdRng::seed_from_u64(100 + c as u64);
        let descriptions: Vec<String> = (0..per_caller)
            .map(|_| text.description(&mut rng))
            .collect();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_caller);
            for (i, d) in descriptions.into_iter().enumerate() {
                let s = timing
                    .start(
                        &Scope::All,
                        StartTimer {
                            task_id: Some(format!("timer-{c}-{i}")),
                            description: d,
                            task_type: TYPES[i % TYPES.len()].to_string(),
                            project: Some(format!("project-{}", (c + i) % PROJECTS)),
                            ..StartTimer::default()
                        },
                    )
                    .await
                    .expect("start");
                let t = Instant::now();
                timing
                    .complete(
                        &Scope::All,
                        CompleteTimer {
                            task_id: s.task_id,
                            duration_seconds: Some(60.0 + i as f64),
                            ..CompleteTimer::default()
                        },
                    )
                    .await
                    .expect("complete");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut completes = Vec::new();
    for h in handles {
        completes.extend(h.await.expect("caller"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    completes.sort();
    rows.push(format!(
        "| {name} | start + complete, {callers} callers (rate = pairs/s) | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        completes.len(),
        percentile(&completes, 0.5),
        percentile(&completes, 0.95),
        percentile(&completes, 0.99),
        completes[completes.len() - 1].as_secs_f64() * 1000.0
    ));
    rows.push(format!(
        "| {name} | (throughput) | {:.0} start+complete pairs/s | | | | |",
        completes.len() as f64 / elapsed
    ));
    let counts = timing.timer_counts().await.expect("counts");
    assert_eq!(counts.running, 0);
}

// ---------------------------------------------------------------------------------------------------
// MCP phase: complete_task_timer through the real server.

const MCP_PROJECT: &str = "bench";

fn supervisor_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supervisor"));
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("SECRETS_ENCRYPTION_KEY")
        .env_remove("SUPERVISOR_CONFIG")
        .env_remove("SUPERVISOR_STATE_DIR")
        .env_remove("LOG_LEVEL");
    c
}

fn supervisor(dir: &Path, args: &[&str]) -> String {
    let out = supervisor_cmd(dir)
        .args(args)
        .output()
        .expect("run supervisor");
    assert!(
        out.status.success(),
        "supervisor {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A workspace with one project, a key, serve without rate limit, the synthetic history imported and
/// one project token per client.
fn mcp_workspace(text: &Text, tasks: usize, clients: usize) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let p = dir.path();
    std::fs::create_dir_all(p.join("state/projects")).expect("state dir");
    std::fs::write(
        p.join("state/supervisor.yaml"),
        "ports:\n  projects: { start: 20000, end: 29999, block: 100 }\n  shared: { start: 9000, end: 9099 }\n",
    )
    .expect("supervisor.yaml");
    std::fs::write(
        p.join(format!("state/projects/{MCP_PROJECT}.yaml")),
        format!("name: {MCP_PROJECT}\nservices:\n  - name: web\n"),
    )
    .expect("project");
    let key = p.join("secrets.key");
    std::fs::write(&key, format!("{}\n", "3c".repeat(32))).expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    std::fs::write(
        p.join("supervisor.toml"),
        format!(
            "secrets_key_file = \"{}\"\n\n[serve]\nrate_limit_per_second = 0\n",
            key.display()
        ),
    )
    .expect("supervisor.toml");
    supervisor(p, &["apply", "--auto-approve"]);
    // The same synthetic history, in the bench project and others.
    let mut rng = StdRng::seed_from_u64(11);
    let mut jsonl = String::new();
    for (i, t) in history(text, &mut rng, tasks).into_iter().enumerate() {
        let project = if i % PROJECTS == 0 {
            MCP_PROJECT.to_string()
        } else {
            t.project
        };
        jsonl.push_str(
            &serde_json::json!({
                "task_id": t.id, "description": t.description, "task_type": t.task_type,
                "project": project, "duration_seconds": t.actual_seconds,
                "estimated_seconds": t.estimated_seconds, "success": t.success,
            })
            .to_string(),
        );
        jsonl.push('\n');
    }
    let file = p.join("history.jsonl");
    std::fs::write(&file, jsonl).expect("history file");
    supervisor(p, &["timing", "import", file.to_str().expect("path")]);
    let tokens = (0..clients)
        .map(|_| {
            let out = supervisor(p, &["token", "create", "--project", MCP_PROJECT, "--json"]);
            let v: Value = serde_json::from_str(&out).expect("token JSON");
            v["token"].as_str().expect("token").to_string()
        })
        .collect();
    (dir, tokens)
}

struct Server(Child, String);

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = supervisor_cmd(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn supervisor serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("stderr line");
            if let Some(rest) = line.strip_prefix("supervisor serving on http://") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server(child, addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One MCP session (2025-11-25) over its own HTTP connection.
struct McpClient {
    http: reqwest::Client,
    url: String,
    token: String,
    session: String,
    next_id: u64,
}

impl McpClient {
    fn post(&self, body: Value) -> reqwest::RequestBuilder {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if self.session.is_empty() {
            r
        } else {
            r.header("mcp-session-id", &self.session)
        }
    }

    async fn connect(url: String, token: String) -> McpClient {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut c = McpClient {
            http,
            url,
            token,
            session: String::new(),
            next_id: 1,
        };
        let resp = c
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "timing-bench", "version": "1"}}}),
            )
            .send()
            .await
            .expect("initialize");
        assert_eq!(resp.status(), 200, "initialize");
        c.session = resp.headers()["mcp-session-id"]
            .to_str()
            .expect("session id")
            .to_string();
        let _ = resp.bytes().await;
        let resp = c
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .expect("initialized");
        assert!(resp.status().is_success(), "initialized");
        c
    }

    /// One `tools/call`: its structured content (an error answer fails the benchmark).
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": args}}))
            .send()
            .await
            .expect("tools/call");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&body);
        let v = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .chain(std::iter::once(text.trim()))
            .filter(|d| d.starts_with('{'))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v.get("result").is_some() || v.get("error").is_some())
            .unwrap_or_else(|| panic!("{tool}: HTTP {status}, no JSON-RPC response in: {text}"));
        assert!(
            status == 200 && v["id"] == id && v["result"]["isError"] == false,
            "{tool}: unexpected answer (HTTP {status}): {v}"
        );
        v["result"]["structuredContent"].clone()
    }
}

async fn bench_mcp(text: &Text, rows: &mut Vec<String>) {
    let clients = env_number("TIMING_BENCH_MCP_CLIENTS", 10) as usize;
    let per_client = env_number("TIMING_BENCH_MCP_COMPLETIONS", 300) as usize;
    if clients == 0 || per_client == 0 {
        return;
    }
    let tasks = env_number("TIMING_BENCH_TASKS", 100_000) as usize;
    let started = Instant::now();
    let (dir, tokens) = mcp_workspace(text, tasks, clients);
    eprintln!(
        "MCP: workspace with {tasks} imported tasks and {clients} tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let server = Server::start(dir.path());
    let url = format!("http://{}/mcp/{MCP_PROJECT}", server.1);
    // Each client starts its timers (untimed; each start also estimates).
    let mut prepared = Vec::new();
    for (c, token) in tokens.into_iter().enumerate() {
        let url = url.clone();
        let mut rng = StdRng::seed_from_u64(1000 + c as u64);
        let descriptions: Vec<String> = (0..per_client)
            .map(|_| text.description(&mut rng))
            .collect();
        prepared.push(tokio::spawn(async move {
            let mut client = McpClient::connect(url, token).await;
            let mut ids = Vec::with_capacity(per_client);
            for (i, d) in descriptions.into_iter().enumerate() {
                let id = format!("mcp-{c}-{i}");
                let s = client
                    .call(
                        "start_task_timer",
                        json!({"task_id": id, "description": d, "task_type": TYPES[i % TYPES.len()]}),
                    )
                    .await;
                assert_eq!(s["task_id"], id.as_str());
                ids.push(id);
            }
            (client, ids)
        }));
    }
    let mut ready = Vec::new();
    for p in prepared {
        ready.push(p.await.expect("client"));
    }
    let start = Instant::now() + Duration::from_millis(200);
    let mut running = Vec::new();
    for (mut client, ids) in ready {
        running.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::with_capacity(ids.len());
            for id in ids {
                let t = Instant::now();
                let done = client
                    .call(
                        "complete_task_timer",
                        json!({"task_id": id, "success": true}),
                    )
                    .await;
                latencies.push(t.elapsed());
                assert!(
                    done["task_id"] == id.as_str()
                        && done["duration_seconds"].as_f64().is_some_and(|d| d > 0.0)
                );
            }
            (latencies, Instant::now())
        }));
    }
    let mut latencies = Vec::new();
    let mut last = start;
    for r in running {
        let (l, finished) = r.await.expect("client");
        latencies.extend(l);
        last = last.max(finished);
    }
    let elapsed = (last - start).as_secs_f64();
    latencies.sort();
    rows.push(format!(
        "| SQLite | complete_task_timer through MCP, {clients} clients, {tasks} tasks in store | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    ));
    rows.push(format!(
        "| SQLite | (throughput) | {:.0} completions/s through MCP | | | | |",
        latencies.len() as f64 / elapsed
    ));
    drop(server);
}

fn main() {
    // `cargo bench` passes --bench; test harnesses list this binary's (no) tests and exit.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the timing benchmark runs with `cargo bench --bench timing`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().expect("temporary directory");
        bench_backend(
            "SQLite",
            Location::Sqlite(dir.path().join("bench.db")),
            &mut rows,
        )
        .await;
        if std::env::var("TIMING_BENCH_BACKENDS").map_or(true, |b| b.contains("postgres")) {
            let url = db::fresh_postgres_url().await;
            bench_backend("PostgreSQL", Location::Postgres(url.clone()), &mut rows).await;
            db::drop_test_database(&url);
        }
        let mut rng = StdRng::seed_from_u64(7);
        bench_mcp(&Text::new(&mut rng), &mut rows).await;
        println!("| backend | operation | calls | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for r in rows {
            println!("{r}");
        }
    });
}
