//! A minimal MCP client over streamable HTTP for Rust tests (the Python SDK tests cover the official
//! client): initialize, then JSON-RPC requests with the session id, answers read from JSON or SSE.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// A `supervisor serve` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `cmd` (a `supervisor serve …` command without `--listen`) and waits for `/health`.
    pub async fn start(mut cmd: Command) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let child = cmd
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start supervisor serve");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/health", server.base)).await
                && r.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("supervisor serve did not become healthy on port {port}");
    }

    pub async fn health(&self) -> Value {
        reqwest::get(format!("{}/health", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
