//! The status page (`GET /` and its sub-pages) against `supervisor serve` seeded with everything it
//! shows — two projects (ports, a hostname on the fake Cloudflare, a pending change, a CLAUDE.md), a VM
//! on the fake Compute Engine with CPU and memory samples, secrets that are missing, expired and due for
//! rotation, finished and running task timers with estimates, a socket listening where it should not —
//! on SQLite and on PostgreSQL:
//!
//! * in a real browser (headless Chromium over the DevTools protocol, `tests/browser/drive.mjs`): the
//!   login form refuses a wrong token and opens a session with a meta token, every page shows what it
//!   must, nothing overflows a 375 px phone, the Content-Security-Policy blocks nothing the page needs,
//!   logging out ends the session; screenshots land in `target/status-page/`;
//! * over plain HTTP: who is refused (no credential: 303 to /login for a browser, 401 otherwise; a
//!   project token: 403; a foreign Host or Origin: 403, for MCP as well; a form posted from elsewhere:
//!   403; failed logins: 429 after the burst), the cookie's attributes, sessions that end with logout or
//!   with their token, the security headers, `--no-auth`.

mod support;

use std::net::TcpListener;

use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use support::browser::{chromium, drive, screenshot_dir};
use support::fake_cloudflare::{ACCOUNT_ID, FakeCloudflare, TOKEN as CF_TOKEN};
use support::fake_google::FakeGoogle;
use support::mcp::{Server, create_token};
use support::{Workspace, expect_code};

cli_conformance!(
    the_page_shows_everything_in_a_real_browser,
    the_page_admits_meta_tokens_from_its_own_origin_only,
);

const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";
const CF_TOKEN_PATH: &str = "meta/cloudflare/api_token";
const GCLOUD_CREDS: &str = "meta/gcloud/service_account";
/// A secret value that must never appear on the page.
const STRIPE_VALUE: &str = "sk_live_pagetest_4eC39HqLyjWDarjtT1zdp7dc";

/// What a seeded workspace holds besides its files.
struct Seeded {
    _cloudflare: FakeCloudflare,
    _google: FakeGoogle,
    meta_token: String,
    meta_id: String,
    project_token: String,
    /// Listening on `web`'s port (the page shows it listening).
    _claim: TcpListener,
    _web_listener: TcpListener,
    /// Listening on a port of shop's block that no service has (a conflict).
    _stray_listener: TcpListener,
    stray_port: u16,
    web_port: u16,
    api_port: u16,
    block: (u16, u16),
}

fn secret(ws: &Workspace, path: &str, value: &str, extra: &[&str]) {
    let file = ws.path().join("secret.value");
    std::fs::write(&file, value).unwrap();
    let mut args = vec![
        "secrets",
        "set",
        path,
        "--value-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    expect_code(&ws.run(&args), 0);
    std::fs::remove_file(&file).unwrap();
}

/// A range of 300 ports below the ephemeral range that no test running at the same time uses, claimed
/// by listening on its last port (outside the two blocks the projects get).
fn port_space() -> (u16, TcpListener) {
    loop {
        let n = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
        let base = 20_000 + (n % 40) * 300;
        if let Ok(claim) = TcpListener::bind(("127.0.0.1", base + 299)) {
            return (base, claim);
        }
    }
}

async fn seed(ws: &Workspace, serve_extra: &str) -> Seeded {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cloudflare = FakeCloudflare::start().await;
    cloudflare.add_zone("example.com");
    let tunnel = cloudflare.add_tunnel(ACCOUNT_ID, "host-1");
    let google = FakeGoogle::start().await;
    let account = google.service_account("supervisor@my-gcp-project.iam.gserviceaccount.com");
    google.add_instance(
        "my-gcp-project",
        "us-central1-a",
        "host-1",
        "e2-standard-4",
        "RUNNING",
    );
    let id = google.instance("host-1").id;
    let now = chrono::Utc::now();
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    google.add_points(
        "my-gcp-project",
        &id,
        "compute.googleapis.com/instance/cpu/utilization",
        &[],
        &[
            (ago(30), 0.20),
            (ago(20), 0.45),
            (ago(10), 0.30),
            (ago(1), 0.60),
        ],
    );
    google.add_points(
        "my-gcp-project",
        &id,
        "agent.googleapis.com/memory/percent_used",
        &[("state", "used")],
        &[(ago(20), 40.0), (ago(1), 55.0)],
    );

    let (base, claim) = port_space();
    ws.write("vault.key", KEY);
    ws.write("sa.json", &account.json);
    ws.write(
        "supervisor.toml",
        &format!(
            "secrets_key_file = \"{}\"\n[serve]\nauth_failures_burst = 3\nallowed_hosts = [\"status.example.test\"]\n{serve_extra}",
            ws.path().join("vault.key").display()
        ),
    );
    ws.write(
        "state/supervisor.yaml",
        &format!(
            "ports:\n  projects: {{ start: {base}, end: {}, block: 100 }}\n\
             cloudflare:\n  zone: example.com\n  account_id: \"{ACCOUNT_ID}\"\n  api_token: secret:{CF_TOKEN_PATH}\n  api_url: {}\n  tunnel:\n    id: {tunnel}\n    mode: remote\n\
             gcloud:\n  credentials: secret:{GCLOUD_CREDS}\n  api_url: {}\n  monitoring_api_url: {}\n  apikeys_api_url: {}\n\
             vms:\n  - name: host-1\n    gcp_project: my-gcp-project\n    zone: us-central1-a\n    machine_type: e2-standard-4\n",
            base + 299,
            cloudflare.base_url(),
            google.compute_url(),
            google.monitoring_url(),
            google.apikeys_url()
        ),
    );
    std::fs::create_dir_all(ws.path().join("srv/shop")).unwrap();
    ws.write(
        "state/projects/shop.yaml",
        &format!(
            "name: shop\npath: {}\nservices:\n  - name: api\n    hostname: api.example.com\n  - name: web\n\
             secrets:\n  required:\n    - project/shop/db_password\n    - project/shop/stripe_key\nchecks:\n  - \"true\"\n",
            ws.path().join("srv/shop").display()
        ),
    );
    ws.write(
        "state/projects/blog.yaml",
        "name: blog\nservices:\n  - name: www\n",
    );
    let sa = std::fs::read_to_string(ws.path().join("sa.json")).unwrap();
    secret(ws, CF_TOKEN_PATH, CF_TOKEN, &[]);
    secret(ws, GCLOUD_CREDS, &sa, &[]);
    secret(
        ws,
        "project/shop/stripe_key",
        STRIPE_VALUE,
        &["--expires", "2020-01-01"],
    );
    secret(
        ws,
        "project/blog/api_key",
        "blog-key-value-not-shown",
        &["--rotation-required"],
    );
    let applied = ws.run(&["apply", "--auto-approve"]);
    expect_code(&applied, 0);

    // A change left pending: a new service of blog.
    ws.write(
        "state/projects/blog.yaml",
        "name: blog\nservices:\n  - name: www\n  - name: worker\n",
    );

    let listing: Value = serde_json::from_str(&ws.ok(&["ports", "list", "--json"], 0)).unwrap();
    let port_of = |service: &str| {
        listing["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["project"] == "shop" && p["service"] == service)
            .unwrap_or_else(|| panic!("no port for shop/{service}: {listing:#}"))["port"]
            .as_u64()
            .unwrap() as u16
    };
    let (api_port, web_port) = (port_of("api"), port_of("web"));
    let b = listing["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["project"] == "shop")
        .unwrap();
    let block = (
        b["start_port"].as_u64().unwrap() as u16,
        b["end_port"].as_u64().unwrap() as u16,
    );
    let stray_port = block.0 + 50;
    let web_listener = TcpListener::bind(("127.0.0.1", web_port)).expect("listen on web's port");
    let stray_listener =
        TcpListener::bind(("127.0.0.1", stray_port)).expect("listen in shop's block");

    // Task history to estimate from, then two finished timers (one inside its interval, one far
    // outside) and one still running.
    let history: String = (1..=6)
        .map(|i| {
            format!(
                "{{\"task_id\": \"H-{i}\", \"description\": \"Add a checkout step {i}\", \"task_type\": \"feature\", \"project\": \"shop\", \"duration_seconds\": {}}}\n",
                1500 + i * 120
            )
        })
        .collect();
    ws.write("history.jsonl", &history);
    expect_code(&ws.run(&["timing", "import", "history.jsonl"]), 0);
    for (task, duration) in [("T-INSIDE", "30m"), ("T-OUTSIDE", "20h"), ("T-RUNNING", "")] {
        expect_code(
            &ws.run(&[
                "timing",
                "start",
                "--task-id",
                task,
                "--type",
                "feature",
                "--project",
                "shop",
                "-d",
                "Add a gift card step to the checkout",
            ]),
            0,
        );
        if !duration.is_empty() {
            expect_code(
                &ws.run(&["timing", "complete", task, "--duration", duration]),
                0,
            );
        }
    }

    let (meta_token, meta_id) = create_token(ws, None);
    let (project_token, _) = create_token(ws, Some("shop"));
    Seeded {
        _cloudflare: cloudflare,
        _google: google,
        meta_token,
        meta_id,
        project_token,
        _claim: claim,
        _web_listener: web_listener,
        _stray_listener: stray_listener,
        stray_port,
        web_port,
        api_port,
        block,
    }
}

fn backend(ws: &Workspace) -> &'static str {
    if ws.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

#[track_caller]
fn contains_all(what: &str, text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{what} lacks {p:?}:\n{text}");
    }
}

async fn the_page_shows_everything_in_a_real_browser(ws: Workspace) {
    let s = seed(&ws, "").await;
    let server = Server::start(&ws, &[]).await;
    let out = screenshot_dir();
    let report = drive(json!({
        "chromium": chromium(),
        "base": server.url(""),
        "token": s.meta_token,
        "out": out,
        "prefix": backend(&ws),
        "pages": ["/", "/projects/shop", "/plan", "/tasks", "/vms"],
        "phone": ["/", "/projects/shop"],
    }))
    .await;
    let page = |key: &str| -> (String, String) {
        let p = &report["pages"][key];
        assert_eq!(p["status"], 200, "{key}: {p:#}");
        (
            p["text"].as_str().unwrap().to_string(),
            p["html"].as_str().unwrap().to_string(),
        )
    };

    // No session: the browser lands on the login form; a wrong token is refused there.
    let first = &report["unauthenticated"];
    assert_eq!(first["url"], server.url("/login"), "{first:#}");
    contains_all(
        "the login page",
        first["text"].as_str().unwrap(),
        &["Meta token", "Log in"],
    );
    assert_eq!(report["wrong_token"]["status"], 401);
    contains_all(
        "the refused login",
        report["wrong_token"]["text"].as_str().unwrap(),
        &["unknown or revoked"],
    );
    assert_eq!(report["logged_in"]["url"], server.url("/"));

    let (text, html) = page("/");
    let (api, web) = (s.api_port.to_string(), s.web_port.to_string());
    contains_all(
        "the overview",
        &text,
        &[
            "1 change is pending — see the plan.",
            "3 secrets need attention — see below.",
            "shop",
            "blog",
            &format!("api :{api} → api.example.com"),
            &format!("web :{web}"),
            &format!("{}–{}", s.block.0, s.block.1),
            "in sync",
            "pending",
            "project/shop/db_password",
            "✗ missing",
            "project/shop/stripe_key",
            "✗ expired",
            "project/blog/api_key",
            "rotation due",
            "Recent applies",
            "succeeded",
            "T-RUNNING",
            "1 of the last 2 completed tasks (50 %) ended inside the 95 % interval",
            "host-1",
            "e2-standard-4",
        ],
    );
    contains_all(
        "the overview's HTML",
        &html,
        &[
            r#"<a href="https://api.example.com/" rel="noreferrer">api.example.com</a>"#,
            r#"<a href="/projects/shop">shop</a>"#,
            r#"<span class="st st-pending"><span aria-hidden="true">● </span>pending</span>"#,
            r#"<th scope="col">"#,
        ],
    );

    let (text, html) = page("/projects/shop");
    contains_all(
        "shop's page",
        &text,
        &[
            "Project shop",
            &format!(
                "Ports {} to {}: 2 used (1 listening, 1 idle), 97 free, 1 conflicting.",
                s.block.0, s.block.1
            ),
            &format!("port {} in project `shop`'s block", s.stray_port),
            "✓ listening",
            "api.example.com",
            "dns/api.example.com",
            "tunnel/api.example.com",
            "instructions/shop",
            "Plan for shop",
            "No changes: reality matches the desired state.",
            "true",
            "never run",
            "T-INSIDE",
            "T-OUTSIDE",
            "✓ yes",
            "✗ no",
            "project/shop/db_password",
        ],
    );
    contains_all(
        "shop's HTML",
        &html,
        &[
            r#"<svg class="grid" role="img" aria-label="Ports "#,
            &format!("<title>{}: {}", s.stray_port, "port "),
            &format!("<title>{web}: web (listening)</title>"),
            r#"<svg class="durations" role="img""#,
        ],
    );

    let (text, _) = page("/plan");
    contains_all(
        "the plan page",
        &text,
        &[
            "Pending plan",
            "ports/blog/worker",
            "1 to add, 0 to change, 0 to destroy",
        ],
    );
    let (text, _) = page("/tasks");
    contains_all(
        "the tasks page",
        &text,
        &[
            "T-INSIDE",
            "T-OUTSIDE",
            "T-RUNNING",
            "feature",
            "Statistics per task type",
        ],
    );
    let (text, html) = page("/vms");
    contains_all(
        "the VMs page",
        &text,
        &[
            "host-1",
            "RUNNING",
            "e2-standard-4",
            "4 vCPU",
            "now 60.0 %",
            "now 55.0 %",
        ],
    );
    assert_eq!(
        html.matches("<polyline").count(),
        2,
        "CPU and memory sparklines"
    );

    // Usable on a phone: nothing wider than the screen (wide tables scroll inside their region).
    for (path, p) in report["phone"].as_object().unwrap() {
        assert_eq!(p["status"], 200, "{path}");
        assert!(
            p["scroll_width"].as_u64().unwrap() <= 375,
            "{path} overflows a 375 px screen: {p}"
        );
    }
    // The policy blocks nothing the page uses (a violation is a console error), and no script ran.
    for m in report["console"].as_array().unwrap() {
        let m = m.as_str().unwrap();
        assert!(
            !m.contains("Content Security Policy") && !m.starts_with("exception"),
            "{m}"
        );
    }
    // Logging out ends the session.
    assert_eq!(report["logged_out"]["url"], server.url("/login"));
    assert_eq!(report["after_logout"]["url"], server.url("/login"));
    // Secrets by path only, on every page.
    for page in report["pages"].as_object().unwrap().values() {
        let html = page["html"].as_str().unwrap();
        for value in [STRIPE_VALUE, CF_TOKEN, s.meta_token.as_str()] {
            assert!(!html.contains(value), "a secret value is on the page");
        }
    }
    for shot in report["screenshots"].as_array().unwrap() {
        let meta = std::fs::metadata(shot.as_str().unwrap()).expect("the screenshot exists");
        assert!(meta.len() > 10_000, "{shot}: {} bytes", meta.len());
    }
}

/// A client that never follows redirects (the tests look at them).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The session id from `Set-Cookie`.
fn session_of(h: &HeaderMap) -> String {
    let c = header(h, "set-cookie");
    c.strip_prefix("supervisor_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {c:?}"))
        .to_string()
}

async fn the_page_admits_meta_tokens_from_its_own_origin_only(ws: Workspace) {
    let s = seed(&ws, "").await;
    let server = Server::start(&ws, &[]).await;
    let http = client();
    let own = server.url("");
    let get = |path: &str| http.get(server.url(path));
    let login = |token: &str| {
        http.post(server.url("/login"))
            .header(header::ORIGIN, own.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
    };

    // No credential: a browser is sent to the login form, another client gets 401. Either way the
    // page's security headers are there.
    let r = get("/")
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(r.headers(), "location"), "/login");
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(header(r.headers(), name), value, "{name}");
    }
    let r = get("/projects/shop").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(r.headers(), "www-authenticate"),
        "Bearer realm=\"supervisor\""
    );

    // A project token is refused: the page shows every project.
    let r = get("/").bearer_auth(&s.project_token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("needs a meta token"));
    let r = login(&s.project_token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());

    // A meta token as a bearer works without a session.
    let r = get("/").bearer_auth(&s.meta_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-type"),
        "text/html; charset=utf-8"
    );
    assert!(r.text().await.unwrap().contains("Status of every project"));
    let r = get("/projects/nope")
        .bearer_auth(&s.meta_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The same Host/Origin check as MCP, before any credential is looked at.
    for path in ["/", "/login", "/mcp/meta"] {
        let r = get(path)
            .header(header::HOST, "evil.example.com")
            .bearer_auth(&s.meta_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = get(path)
            .header(header::ORIGIN, "http://evil.example.com")
            .bearer_auth(&s.meta_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    assert_eq!(
        get("/health")
            .header(header::HOST, "evil.example.com")
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "/health is for monitors, whatever Host they send"
    );

    // A form posted from elsewhere (CSRF) is refused and counts nothing.
    let r = http
        .post(server.url("/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={}", s.meta_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no Origin and no Sec-Fetch-Site");
    let r = login(&s.meta_token)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the browser says cross-site");
    assert!(r.headers().get("set-cookie").is_none());

    // Logging in: 303 to the overview with a session cookie that holds no token.
    let r = login(&s.meta_token).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(r.headers(), "location"), "/");
    let cookie = header(r.headers(), "set-cookie").to_string();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "plain HTTP on loopback: no Secure: {cookie}"
    );
    let session = session_of(r.headers());
    assert_eq!(session.len(), 43, "256 random bits in base64url");
    assert!(!cookie.contains(&s.meta_token));
    let with_cookie = |path: &str, session: &str| {
        get(path)
            .header(header::ACCEPT, "text/html")
            .header(header::COOKIE, format!("supervisor_session={session}"))
    };
    let r = with_cookie("/projects/shop", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Log out"));
    let r = with_cookie("/", "made-up-session").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(r.headers(), "location")),
        (303, "/login")
    );
    let r = get("/login")
        .header(header::COOKIE, format!("supervisor_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        303,
        "logged in already: the form sends you to the page"
    );

    // Through a configured public name the cookie is Secure (a TLS proxy is in front).
    let port = server.addr.port();
    let r = http
        .post(server.url("/login"))
        .header(header::HOST, format!("status.example.test:{port}"))
        .header(header::ORIGIN, format!("http://status.example.test:{port}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={}", s.meta_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        header(r.headers(), "set-cookie").ends_with("; Secure"),
        "{:?}",
        r.headers()
    );
    let second = session_of(r.headers());

    // Logging out ends that session only.
    let r = http
        .post(server.url("/logout"))
        .header(header::ORIGIN, own.clone())
        .header(header::COOKIE, format!("supervisor_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), header(r.headers(), "location")),
        (303, "/login")
    );
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    let r = with_cookie("/", &session).send().await.unwrap();
    assert_eq!(r.status(), 303, "the session ended");
    assert_eq!(
        with_cookie("/", &second).send().await.unwrap().status(),
        200
    );

    // Revoking the token ends the sessions it opened (within the token cache's two seconds).
    expect_code(&ws.run(&["token", "revoke", &s.meta_id]), 0);
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    let r = with_cookie("/", &second).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(r.headers(), "location")),
        (303, "/login")
    );

    // Failed logins count like failed bearer tokens: after the burst (3), 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = login("svt_wrong").send().await.unwrap();
        if r.status() == 429 {
            assert!(!header(r.headers(), "retry-after").is_empty());
        }
        statuses.push(r.status().as_u16());
    }
    // The revoked token's own failure above counted too.
    assert!(statuses.starts_with(&[401]), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // `--no-auth` (loopback only): the page needs no login.
    drop(server);
    let open = Server::start(&ws, &["--no-auth"]).await;
    let r = http.get(open.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("Log out"));
    let r = http.get(open.url("/login")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(r.headers(), "location")),
        (303, "/")
    );
}
