//! What clients trying to wear `supervisor serve` down cost it: memory after tens of thousands of wrong
//! tokens and thousands of MCP sessions, how fast wrong tokens are answered, and `/health` latency while
//! thousands of idle sockets are open. The release binary runs as a child process on SQLite.
//!
//! ```sh
//! cargo bench --bench serve_limits
//! ```
//!
//! Knobs: `LIMITS_BENCH_BAD_TOKENS` (default 40000), `LIMITS_BENCH_SESSIONS` (default 5000),
//! `LIMITS_BENCH_IDLE` (default 2000 idle sockets). Load generator and server share the machine.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(serve_config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("state/projects")).unwrap();
        std::fs::write(
            p.join("state/projects/bench.yaml"),
            "name: bench\nservices:\n  - name: api\n",
        )
        .unwrap();
        std::fs::write(
            p.join("supervisor.toml"),
            format!("[serve]\nrate_limit_per_second = 0\n{serve_config}"),
        )
        .unwrap();
        let cmd = |args: &[&str]| {
            let mut c = Command::new(bin());
            c.current_dir(p)
                .env_remove("DATABASE_URL")
                .env_remove("SECRETS_ENCRYPTION_KEY")
                .env_remove("SUPERVISOR_CONFIG")
                .env_remove("LOG_LEVEL")
                .args(args);
            c
        };
        let out = cmd(&["token", "create", "--meta", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut child = cmd(&["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("supervisor serving on http://") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
            token,
        }
    }

    fn rss_mb(&self) -> f64 {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.child.id())).unwrap();
        let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096.0 / 1_048_576.0
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;

/// Sends `n` initialize requests, each with a different wrong token, from `concurrency` connections;
/// returns (seconds, answers by status).
async fn wrong_tokens(server: &Server, n: usize, concurrency: usize) -> (f64, Vec<(u16, usize)>) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let counts: Arc<std::sync::Mutex<std::collections::BTreeMap<u16, usize>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, counts, url) = (
            client.clone(),
            next.clone(),
            counts.clone(),
            format!("{}/mcp/meta", server.url),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .bearer_auth(format!("svt_{i:043}"))
                    .body(INITIALIZE)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                *counts.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let counts = counts.lock().unwrap().clone().into_iter().collect();
    (secs, counts)
}

/// Opens `n` MCP sessions with the server's token (initialize only, then left idle).
async fn sessions(server: &Server, n: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let url = format!("{}/mcp/meta", server.url);
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    for chunk in 0..n.div_ceil(50) {
        let mut batch = Vec::new();
        for _ in 0..50.min(n - chunk * 50) {
            batch.push(
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .bearer_auth(&server.token)
                    .body(INITIALIZE)
                    .send(),
            );
        }
        for r in futures_join(batch).await {
            let key = match r {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            *statuses.entry(key).or_default() += 1;
        }
    }
    assert_eq!(
        statuses.get("200").copied().unwrap_or(0),
        n,
        "every initialize answered: {statuses:?}"
    );
    started.elapsed().as_secs_f64()
}

async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// `GET /health` on a new connection each time: latencies in ms, sorted.
async fn health_latencies(server: &Server, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let started = Instant::now();
        let ok = client
            .get(format!("{}/health", server.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        assert!(ok, "/health failed");
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = env_or("LIMITS_BENCH_BAD_TOKENS", 40_000);
    let n_sessions = env_or("LIMITS_BENCH_SESSIONS", 5_000);
    let idle = env_or("LIMITS_BENCH_IDLE", 2_000);
    println!("| measurement | result |");
    println!("|---|---|");

    // Wrong tokens with the throttle lifted: every one is looked up; memory must not follow.
    let server = Server::start("auth_failures_burst = 1000000\n");
    std::thread::sleep(Duration::from_millis(500));
    let before = server.rss_mb();
    let (secs, counts) = wrong_tokens(&server, bad, 10).await;
    let after = server.rss_mb();
    println!(
        "| {bad} distinct wrong tokens, throttle lifted (each looked up) | {:.0} answers/s {counts:?}; RSS {before:.1} → {after:.1} MB (+{:.1}) |",
        bad as f64 / secs,
        after - before
    );
    drop(server);

    // The same with the default throttle: ten lookups, then 429 before any lookup.
    let server = Server::start("");
    std::thread::sleep(Duration::from_millis(500));
    let before = server.rss_mb();
    let (secs, counts) = wrong_tokens(&server, bad, 10).await;
    let after = server.rss_mb();
    println!(
        "| {bad} distinct wrong tokens, default throttle | {:.0} answers/s {counts:?}; RSS {before:.1} → {after:.1} MB (+{:.1}) |",
        bad as f64 / secs,
        after - before
    );

    // Sessions of one token: at most sessions_per_token (128) are kept.
    let before = server.rss_mb();
    let secs = sessions(&server, n_sessions).await;
    let after = server.rss_mb();
    println!(
        "| {n_sessions} MCP sessions opened with one token and left idle | {:.0} sessions/s; RSS {before:.1} → {after:.1} MB (+{:.1}) |",
        n_sessions as f64 / secs,
        after - before
    );

    // /health while idle sockets are open (beyond the connection cap when LIMITS_BENCH_IDLE > 1024).
    let quiet = health_latencies(&server, 200).await;
    let addr = server.addr();
    let sockets: Vec<TcpStream> = (0..idle)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = health_latencies(&server, 200).await;
    println!(
        "| GET /health (new connection), idle server | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        quiet[quiet.len() - 1]
    );
    println!(
        "| GET /health (new connection), {} idle sockets open | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
        sockets.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        busy[busy.len() - 1]
    );
}
