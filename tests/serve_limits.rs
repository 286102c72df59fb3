//! `supervisor serve` against clients that try to wear it down: idle and half-sent connections, a low
//! open-file limit, streams of wrong tokens, endless MCP sessions, malformed requests. The server is the
//! real binary; connections are raw TCP sockets and plain HTTP.
//!
//! Tests that involve tokens (stored in the database) run on SQLite and on PostgreSQL; the connection
//! tests involve no storage and run once.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{McpClient, Server, create_token, http};

cli_conformance!(
    clients_that_keep_failing_authentication_get_429,
    the_bearer_scheme_is_case_insensitive_and_malformed_json_is_a_parse_error,
    sessions_per_token_are_capped_and_idle_ones_expire,
);

fn state(ws: &Workspace, serve: &str) {
    ws.write(
        "state/supervisor.yaml",
        "ports:\n  projects: { start: 21000, end: 21999, block: 100 }\n",
    );
    ws.write(
        "state/projects/alpha.yaml",
        "name: alpha\nservices:\n  - name: api\n",
    );
    ws.write("supervisor.toml", &format!("[serve]\n{serve}"));
}

/// `GET /health` on a new connection: its status and how long it took (a failure counts as 0).
async fn health(server: &Server) -> (u16, Duration) {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let status = client
        .get(server.url("/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Connections that send nothing (`partial` = a request line and one header, never finished).
fn idle_sockets(server: &Server, count: usize, partial: bool) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            if partial {
                s.write_all(b"POST /mcp/meta HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    .unwrap();
            }
            s
        })
        .collect()
}

/// Whether the server closed `s` within `within` (EOF, a reset, or a 4xx/5xx answer it then closes).
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // hyper answers a timed-out request with 408 before closing; keep reading to the end.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_and_health_keeps_answering() {
    let ws = Workspace::new(None);
    state(&ws, "max_connections = 20\nheader_read_timeout_secs = 1\n");
    let server = Server::start(&ws, &["--no-auth"]).await;

    // Twice the cap of connections that never finish a request.
    let mut idle = idle_sockets(&server, 25, false);
    let mut partial = idle_sockets(&server, 15, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (status, took) = health(&server).await;
        assert_eq!(status, 200, "/health while the server is full");
        assert!(took < Duration::from_secs(2), "/health took {took:?}");
    }
    // An MCP client gets in too: the longest-idle connection makes room.
    let init = http()
        .post(server.url("/mcp/meta"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    // Every one of them is closed by the server: idle ones when their header time is up (or when
    // evicted), half-sent ones likewise. Before, they were held for as long as the client liked.
    let blocking = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut closed = 0;
        for s in idle.iter_mut().chain(partial.iter_mut()) {
            if closed_by_server(s, Duration::from_secs(4)) {
                closed += 1;
            }
        }
        (closed, started.elapsed())
    });
    let (closed, took) = blocking.await.unwrap();
    assert_eq!(closed, 40, "connections still held after {took:?}");

    // A keep-alive connection that sends no next request is closed after the header timeout too.
    let mut kept = TcpStream::connect(server.addr).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let closed = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let closed = closed_by_server(&mut kept, Duration::from_secs(4));
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(closed.0, "an idle keep-alive connection was kept");
    assert!(
        closed.1 < Duration::from_secs(3),
        "closed after {:?}",
        closed.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_when_idle_sockets_exceed_the_open_file_limit() {
    let ws = Workspace::new(None);
    state(&ws, "");
    // The shipped unit's old situation: an open-file limit below the number of idle clients.
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(ws.path())
        .env_remove("DATABASE_URL")
        .env_remove("SECRETS_ENCRYPTION_KEY")
        .env_remove("SUPERVISOR_CONFIG")
        .env_remove("LOG_LEVEL")
        .env("NO_COLOR", "1")
        .args(["-c", "ulimit -n 200 && exec \"$0\" \"$@\""])
        .arg(support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"]);
    let server = Server::spawn(cmd).await;
    let _idle = idle_sockets(&server, 400, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let (status, took) = health(&server).await;
        assert_eq!(
            status,
            200,
            "/health with 400 idle sockets:\n{}",
            server.log()
        );
        assert!(took < Duration::from_secs(2), "/health took {took:?}");
    }
    assert!(
        server
            .log()
            .contains("max_connections lowered to fit the open-file limit"),
        "{}",
        server.log()
    );
}

async fn post_with(server: &Server, authorization: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = http()
        .post(server.url("/mcp/meta"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(a) = authorization {
        r = r.header("authorization", a);
    }
    r.send().await.unwrap()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

async fn clients_that_keep_failing_authentication_get_429(ws: Workspace) {
    state(&ws, "");
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;

    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for i in 0..40 {
        let forged = format!("Bearer svt_{:043}", i);
        let r = post_with(&server, Some(&forged), INITIALIZE).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after.push(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
    }
    // Ten failures are answered 401; then the address gets 429 while it keeps failing.
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(
        retry_after.iter().all(|s| (1..=2).contains(s)),
        "{retry_after:?}"
    );
    // Without any token it is the same: a missing token is a failure too.
    assert_eq!(post_with(&server, None, INITIALIZE).await.status(), 429);
    // A valid token is accepted at once from the throttled address (behind a proxy every client has
    // that address; one client's failures must not lock the others out) — fresh or not.
    let ok = post_with(&server, Some(&format!("Bearer {meta}")), INITIALIZE).await;
    assert_eq!(ok.status(), 200);
    let forged = format!("Bearer svt_{:043}", 100);
    assert_eq!(
        post_with(&server, Some(&forged), INITIALIZE).await.status(),
        429
    );
    let ok = post_with(&server, Some(&format!("Bearer {meta}")), INITIALIZE).await;
    assert_eq!(ok.status(), 200);
    // A client that pauses as told is answered normally again.
    tokio::time::sleep(Duration::from_millis(1100 * retry_after[0])).await;
    assert_eq!(
        post_with(&server, Some(&forged), INITIALIZE).await.status(),
        401
    );
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("auth_throttled"), "{metrics}");
}

async fn the_bearer_scheme_is_case_insensitive_and_malformed_json_is_a_parse_error(ws: Workspace) {
    state(&ws, "");
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = post_with(&server, Some(&format!("{scheme} {meta}")), INITIALIZE).await;
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let r = post_with(&server, Some(&format!("Basic {meta}")), INITIALIZE).await;
    assert_eq!(r.status(), 401);

    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"#,
        "not json at all",
        "{}}",
    ] {
        let r = post_with(&server, Some(&format!("Bearer {meta}")), body).await;
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["id"], Value::Null);
        assert_eq!(answer["error"]["code"], -32700, "{answer}");
    }
    // Valid JSON that is not JSON-RPC is rmcp's to answer, and not a parse error.
    let r = post_with(&server, Some(&format!("Bearer {meta}")), "[1, 2]").await;
    assert_ne!(r.status(), 400);
}

async fn sessions_per_token_are_capped_and_idle_ones_expire(ws: Workspace) {
    state(&ws, "sessions_per_token = 3\nsession_idle_secs = 3\n");
    let (meta, _) = create_token(&ws, None);
    let (other, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;
    let url = server.url("/mcp/meta");

    let b = McpClient::connect(&url, Some(&other)).await;
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(McpClient::connect(&url, Some(&meta)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = |r: (u16, String)| r.0;
    // The two least recently used sessions of the token were closed; the three newest work, and the
    // other token's session is untouched.
    assert_eq!(status(a[0].try_rpc("ping", json!({})).await), 404);
    assert_eq!(status(a[1].try_rpc("ping", json!({})).await), 404);
    for c in &a[2..] {
        assert_eq!(status(c.try_rpc("ping", json!({})).await), 200);
    }
    assert_eq!(status(b.try_rpc("ping", json!({})).await), 200);

    // A session used recently is not the one closed: a[2] is used, then a new session closes a[3].
    a[2].try_rpc("ping", json!({})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newest = McpClient::connect(&url, Some(&meta)).await;
    assert_eq!(status(a[3].try_rpc("ping", json!({})).await), 404);
    assert_eq!(status(a[2].try_rpc("ping", json!({})).await), 200);
    assert_eq!(status(newest.try_rpc("ping", json!({})).await), 200);

    // Idle sessions are closed after session_idle_secs; the client is told to start a new one.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(status(newest.try_rpc("ping", json!({})).await), 404);
    assert_eq!(status(b.try_rpc("ping", json!({})).await), 404);
    let again = McpClient::connect(&url, Some(&meta)).await;
    assert_eq!(status(again.try_rpc("ping", json!({})).await), 200);
}
