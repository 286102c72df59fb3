//! How long the status page takes at 100 projects × 10 services: `GET /` and one project's page
//! (`/projects/p042`), served by the release binary's `supervisor serve` with authentication on, on
//! SQLite (and PostgreSQL when TEST_DATABASE_URL is set).
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://… cargo bench --bench status_page
//! ```
//!
//! Knob: `PAGE_BENCH_REQUESTS` (per page, default 100, after 10 warm-up requests).
//!
//! The state: 100 projects, each with a folder (so each has a CLAUDE.md the plan reads and renders),
//! 10 services, a required secret (missing for every tenth project), all applied; 300 finished tasks
//! and 10 running timers. No remote provider (Cloudflare, Compute Engine) is configured: a page view
//! plans like `supervisor status`, and with those configured it also waits for their APIs. Requests are
//! sequential, one connection, a meta token in `Authorization`. Reported: the server's own time (its
//! `Server-Timing` header: from the request reaching the page's routes to the answer) and the round
//! trip seen by the client on the same machine, p50 and p95, and the page's size.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

const PROJECTS: usize = 100;
const SERVICES: usize = 10;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

fn cmd(dir: &Path, database_url: Option<&str>, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("SECRETS_ENCRYPTION_KEY")
        .env_remove("SUPERVISOR_CONFIG")
        .env_remove("LOG_LEVEL")
        .args(args);
    if let Some(url) = database_url {
        c.env("DATABASE_URL", url);
    }
    c
}

fn run(dir: &Path, database_url: Option<&str>, args: &[&str]) -> String {
    let out = cmd(dir, database_url, args).output().unwrap();
    assert!(
        out.status.success(),
        "supervisor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes and applies the state; returns a meta token.
fn seed(dir: &Path, database_url: Option<&str>) -> String {
    std::fs::create_dir_all(dir.join("state/projects")).unwrap();
    std::fs::write(
        dir.join("state/supervisor.yaml"),
        "ports:\n  projects: { start: 30000, end: 39999, block: 100 }\n",
    )
    .unwrap();
    for p in 0..PROJECTS {
        let folder = dir.join(format!("srv/p{p:03}"));
        std::fs::create_dir_all(&folder).unwrap();
        let mut text = format!(
            "name: p{p:03}\npath: {}\nsecrets:\n  required:\n    - project/p{p:03}/db_password\nservices:\n",
            folder.display()
        );
        for s in 0..SERVICES {
            text.push_str(&format!("  - name: svc{s}\n"));
        }
        std::fs::write(dir.join(format!("state/projects/p{p:03}.yaml")), text).unwrap();
    }
    std::fs::write(dir.join("vault.key"), "ab".repeat(32)).unwrap();
    std::fs::write(
        dir.join("supervisor.toml"),
        format!(
            "secrets_key_file = \"{}\"\n[serve]\nrate_limit_per_second = 0\n",
            dir.join("vault.key").display()
        ),
    )
    .unwrap();
    let value = dir.join("value");
    std::fs::write(&value, "not-a-real-password").unwrap();
    for p in (0..PROJECTS).filter(|p| p % 10 != 0) {
        run(
            dir,
            database_url,
            &[
                "secrets",
                "set",
                &format!("project/p{p:03}/db_password"),
                "--value-file",
                value.to_str().unwrap(),
            ],
        );
    }
    run(dir, database_url, &["apply", "--auto-approve"]);
    let history: String = (0..300)
        .map(|i| {
            format!(
                "{{\"task_id\": \"h{i}\", \"description\": \"Change number {i} of the service\", \"task_type\": \"{}\", \"project\": \"p{:03}\", \"duration_seconds\": {}}}\n",
                ["feature", "bug", "refactor"][i % 3],
                i % PROJECTS,
                300 + (i * 37) % 3000
            )
        })
        .collect();
    std::fs::write(dir.join("history.jsonl"), history).unwrap();
    run(dir, database_url, &["timing", "import", "history.jsonl"]);
    for i in 0..10 {
        run(
            dir,
            database_url,
            &[
                "timing",
                "start",
                "--type",
                "feature",
                "--project",
                &format!("p{:03}", i * 7),
                "-d",
                "A change in progress",
            ],
        );
    }
    let token: Value = serde_json::from_str(&run(
        dir,
        database_url,
        &["token", "create", "--meta", "--json"],
    ))
    .unwrap();
    token["token"].as_str().unwrap().to_string()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, database_url: Option<&str>) -> Server {
    let mut child = cmd(dir, database_url, &["serve", "--listen", "127.0.0.1:0"])
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
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Row {
    backend: &'static str,
    page: String,
    requests: usize,
    server: (f64, f64),
    round_trip: (f64, f64),
    bytes: usize,
}

async fn measure(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    backend: &'static str,
    page: &str,
    requests: usize,
) -> Row {
    let mut server_ms = Vec::new();
    let mut round_trip_ms = Vec::new();
    let mut bytes = 0;
    for i in 0..requests + 10 {
        let started = Instant::now();
        let r = client
            .get(format!("{}{page}", server.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}");
        let timing = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("page;dur="))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("Server-Timing");
        let body = r.text().await.unwrap();
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert!(body.contains("p042"), "{page} shows the projects");
        if i >= 10 {
            server_ms.push(timing);
            round_trip_ms.push(took);
            bytes = body.len();
        }
    }
    server_ms.sort_by(f64::total_cmp);
    round_trip_ms.sort_by(f64::total_cmp);
    Row {
        backend,
        page: page.to_string(),
        requests,
        server: (percentile(&server_ms, 0.5), percentile(&server_ms, 0.95)),
        round_trip: (
            percentile(&round_trip_ms, 0.5),
            percentile(&round_trip_ms, 0.95),
        ),
        bytes,
    }
}

async fn bench_backend(
    backend: &'static str,
    database_url: Option<String>,
    requests: usize,
    rows: &mut Vec<Row>,
) {
    let dir = tempfile::tempdir().unwrap();
    let seeding = Instant::now();
    let token = seed(dir.path(), database_url.as_deref());
    eprintln!(
        "{backend}: seeded {PROJECTS} projects × {SERVICES} services in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let server = serve(dir.path(), database_url.as_deref());
    let client = reqwest::Client::new();
    for page in ["/", "/projects/p042"] {
        rows.push(measure(&client, &server, &token, backend, page, requests).await);
    }
    drop(server);
    if let Some(url) = &database_url {
        db::drop_test_database(url);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` and nextest (which lists tests with
    // --list) run this binary as a test harness: it has no tests, so it reports none and exits.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        if !args.iter().any(|a| a == "--list") {
            eprintln!("the status page benchmark runs with `cargo bench --bench status_page`");
        }
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let requests: usize = std::env::var("PAGE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        bench_backend("SQLite", None, requests, &mut rows).await;
        if std::env::var("TEST_DATABASE_URL").is_ok() {
            let url = db::fresh_postgres_url().await;
            bench_backend("PostgreSQL", Some(url), requests, &mut rows).await;
        } else {
            eprintln!("TEST_DATABASE_URL is not set: PostgreSQL not measured");
        }
    });
    println!(
        "\n| backend | page | requests | server p50 ms | server p95 ms | round trip p50 ms | round trip p95 ms | HTML bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | `{}` | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.backend,
            r.page,
            r.requests,
            r.server.0,
            r.server.1,
            r.round_trip.0,
            r.round_trip.1,
            r.bytes
        );
    }
}
