//! Public hostnames end to end: the real engine with the tunnel and DNS providers, the real Cloudflare
//! client against the stateful fake API, on SQLite and on PostgreSQL. The API token comes from a
//! `SecretSource` test double holding the fake's token (the vault's stand-in).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};
use supervisor::engine::{ApplyOptions, ApplyReport, Engine, EngineError, Plan, Scope, render};
use supervisor::providers::adoption::{Adopted, Skipped, import_cloudflare};
use supervisor::providers::{ProviderContext, for_desired};
use supervisor::state::Desired;
use supervisor::store::Store;
use support::fake_cloudflare::{ACCOUNT_ID, FakeCloudflare, FakeRecord, Fault, TOKEN};
use support::test_secrets::StaticSecrets;
use support::{Workspace, expect_code, stderr};

cli_conformance!(
    new_hostname_gets_ingress_and_cname_and_the_second_plan_is_empty,
    local_mode_writes_config_yml_shows_its_diff_and_reloads,
    a_failed_reload_restores_the_previous_file_and_reports_the_output,
    removing_a_hostname_removes_both_and_never_touches_unmanaged_objects,
    an_unmanaged_record_is_a_plan_error_until_adopted,
    adopting_a_matching_record_does_not_change_it,
    dashboard_drift_is_shown_and_repaired,
    a_rate_limited_run_completes,
    a_fault_in_the_middle_of_a_batch_applies_nothing_and_the_next_run_converges,
    a_lost_batch_answer_is_resolved_by_reading_the_zone_again,
    a_missing_batch_endpoint_falls_back_to_single_calls,
    changes_are_chunked_within_the_batch_limit,
    deleting_many_managed_records_needs_force,
    a_missing_token_is_a_clear_error,
    the_cli_names_the_token_path_when_no_key_is_configured,
    import_adopts_existing_records_and_writes_hostnames_into_state,
    cli_plan_adopt_apply_through_the_vault,
    cli_local_mode_plan_shows_sections_and_the_file_diff,
    cli_import_cloudflare_reports_and_changes_nothing,
    cli_environment_url_wins_over_supervisor_yaml,
    cli_status_calls_a_resource_blocked_by_someone_elses_record_blocked,
);

/// A fixed test key (64 hex characters) for the vault.
const KEY: &str = "6a1f0c3e9b2d4f5a7c8e0b1d3f5a7c9e2b4d6f8a0c2e4b6d8f0a1c3e5b7d9f1a";

const TOKEN_PATH: &str = "meta/cloudflare/api_token";

enum Mode {
    Remote,
    Local { reload: String },
}

/// A workspace whose state points at a fake Cloudflare, with the store open.
struct Cf {
    ws: Workspace,
    fake: FakeCloudflare,
    zone: String,
    tunnel: String,
    store: Arc<dyn Store>,
    secrets: Arc<StaticSecrets>,
}

impl Cf {
    async fn start(ws: Workspace, mode: Mode) -> Cf {
        // As `main` does: one TLS crypto provider for the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeCloudflare::start().await;
        let zone = fake.add_zone("example.com");
        let tunnel = fake.add_tunnel(ACCOUNT_ID, "host-1");
        let store = supervisor::store::open(&ws.location()).await.unwrap();
        let cf = Cf {
            ws,
            fake,
            zone,
            tunnel,
            store,
            secrets: Arc::new(StaticSecrets::new(&[(TOKEN_PATH, TOKEN)])),
        };
        cf.settings(&mode);
        cf
    }

    async fn remote(ws: Workspace) -> Cf {
        Cf::start(ws, Mode::Remote).await
    }

    async fn local(ws: Workspace, reload: &str) -> Cf {
        Cf::start(
            ws,
            Mode::Local {
                reload: reload.into(),
            },
        )
        .await
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.ws.path().join("cloudflared/config.yml")
    }

    fn settings(&self, mode: &Mode) {
        let tunnel = match mode {
            Mode::Remote => format!("    id: {}\n    mode: remote\n", self.tunnel),
            Mode::Local { reload } => format!(
                "    id: {}\n    mode: local\n    config_path: {}\n    credentials_file: {}\n    reload: {}\n",
                self.tunnel,
                self.config_path().display(),
                self.ws.path().join("cloudflared/creds.json").display(),
                serde_json::to_string(reload).unwrap()
            ),
        };
        self.ws.write(
            "state/supervisor.yaml",
            &format!(
                "cloudflare:\n  zone: example.com\n  account_id: \"{ACCOUNT_ID}\"\n  api_token: secret:{TOKEN_PATH}\n  api_url: {}\n  tunnel:\n{tunnel}",
                self.fake.base_url()
            ),
        );
    }

    /// `state/projects/<name>.yaml` with block `range` and services (name, hostname).
    fn project(&self, name: &str, range: u16, services: &[(&str, Option<&str>)]) {
        let mut text = format!("name: {name}\nport_range: {range}\nservices:\n");
        for (s, h) in services {
            text.push_str(&format!("  - name: {s}\n"));
            if let Some(h) = h {
                text.push_str(&format!("    hostname: {h}\n"));
            }
        }
        self.ws.write(&format!("state/projects/{name}.yaml"), &text);
    }

    fn desired(&self) -> Desired {
        supervisor::state::load(&self.ws.state()).unwrap_or_else(|d| panic!("{d}"))
    }

    fn context(&self, adopt: &[&str]) -> ProviderContext {
        let mut ctx = ProviderContext::new(self.store.clone());
        ctx.secrets = Some(self.secrets.clone());
        ctx.adopt = adopt.iter().map(|s| s.to_string()).collect();
        ctx.actor = "test".into();
        ctx
    }

    async fn engine(&self, adopt: &[&str]) -> (Desired, Engine) {
        let desired = self.desired();
        let ctx = self.context(adopt);
        let providers = for_desired(&desired, &ctx).await.unwrap();
        (desired, Engine::new(self.store.clone(), providers))
    }

    async fn plan(&self) -> Plan {
        self.plan_adopting(&[]).await
    }

    async fn plan_adopting(&self, adopt: &[&str]) -> Plan {
        let (desired, engine) = self.engine(adopt).await;
        engine.plan(&desired, &Scope::default()).await.unwrap()
    }

    /// Plans and applies; `Err` when the plan is refused, `failed` in the report when a change failed.
    async fn apply_with(
        &self,
        adopt: &[&str],
        force: bool,
    ) -> Result<(Plan, ApplyReport), EngineError> {
        let (desired, engine) = self.engine(adopt).await;
        let plan = engine.plan(&desired, &Scope::default()).await?;
        let opts = ApplyOptions {
            force,
            actor: "test".into(),
            ..Default::default()
        };
        let report = engine.apply(&plan, &opts, |_| {}).await?;
        Ok((plan, report))
    }

    /// Applies and expects success.
    async fn apply(&self) -> Plan {
        let (plan, report) = self.apply_with(&[], false).await.unwrap();
        assert_eq!(report.failed, None, "{}", render::plan_text(&plan));
        plan
    }

    async fn assert_converged(&self) {
        let plan = self.plan().await;
        assert!(
            plan.changes.is_empty() && plan.errors.is_empty(),
            "expected no changes:\n{}",
            render::plan_text(&plan)
        );
        assert_eq!(
            render::plan_text(&plan),
            "No changes. Reality matches the desired state.\n"
        );
    }

    fn records(&self) -> Vec<FakeRecord> {
        self.fake.records(&self.zone)
    }

    fn record(&self, name: &str) -> FakeRecord {
        let found: Vec<FakeRecord> = self
            .records()
            .into_iter()
            .filter(|r| r.name == name)
            .collect();
        assert_eq!(found.len(), 1, "records at {name}: {found:?}");
        found.into_iter().next().unwrap()
    }

    fn target(&self) -> String {
        format!("{}.cfargotunnel.com", self.tunnel)
    }

    /// The remote ingress as (hostname, service).
    fn ingress(&self) -> Vec<(Option<String>, String)> {
        let config = self
            .fake
            .tunnel_config(ACCOUNT_ID, &self.tunnel)
            .and_then(|c| c.config)
            .unwrap_or(Value::Null);
        config["ingress"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| {
                        (
                            r["hostname"].as_str().map(str::to_string),
                            r["service"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn managed(&self, provider: &str) -> Vec<(String, Option<String>, bool)> {
        let mut v: Vec<_> = self
            .store
            .list_managed(provider)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.address, o.external_id, o.adopted))
            .collect();
        v.sort();
        v
    }

    /// Seeds a record as someone else would have made it.
    fn seed(&self, body: Value) -> String {
        self.fake.add_record(&self.zone, body)
    }

    /// The binary with the vault key set (and `USER` fixed, for the access log), run off the async
    /// threads so the fake keeps serving.
    async fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        self.cli_with(args, stdin, &[]).await
    }

    async fn cli_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut cmd = self.ws.cmd();
        cmd.args(args)
            .env("SECRETS_ENCRYPTION_KEY", KEY)
            .env("USER", "tester")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let input = stdin.map(|s| s.as_bytes().to_vec());
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("run supervisor");
            if let Some(bytes) = input {
                child.stdin.take().unwrap().write_all(&bytes).unwrap();
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// Stores the fake's token in the vault through `supervisor secrets set`.
    async fn store_token(&self) {
        let out = self.cli(&["secrets", "set", TOKEN_PATH], Some(TOKEN)).await;
        expect_code(&out, 0);
    }

    /// A raw client for dashboard-style edits.
    fn client(&self) -> supervisor::clients::cloudflare::CloudflareClient {
        supervisor::clients::cloudflare::CloudflareClient::new(
            self.fake.base_url(),
            self.fake.token(),
            supervisor::clients::HttpPolicy::default(),
        )
        .unwrap()
    }
}

/// The plan's lines with runs of blanks squeezed (the renderer pads addresses).
fn squeezed(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[track_caller]
fn assert_lines(text: &str, expected: &[&str]) {
    let lines = squeezed(text);
    for e in expected {
        assert!(lines.iter().any(|l| l == e), "missing `{e}` in:\n{text}");
    }
}

fn owned(pairs: &[(Option<&str>, &str)]) -> Vec<(Option<String>, String)> {
    pairs
        .iter()
        .map(|(h, s)| (h.map(str::to_string), s.to_string()))
        .collect()
}

async fn new_hostname_gets_ingress_and_cname_and_the_second_plan_is_empty(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[("api", Some("api.example.com")), ("web", None)],
    );
    let plan = cf.plan().await;
    let text = render::plan_text(&plan);
    let target = cf.target();
    assert_lines(
        &text,
        &[
            &format!("tunnel (remote, tunnel {}…)", &cf.tunnel[..8]),
            "+ tunnel/api.example.com ingress api.example.com → http://localhost:3100",
            "dns (zone example.com)",
            &format!("+ dns/api.example.com CNAME api.example.com → {target} (proxied)"),
            "Plan: 5 to add, 0 to change, 0 to destroy.",
        ],
    );
    let sections: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(sections[..3], ["ports", "tunnel", "dns"], "{text}");
    assert_eq!(
        cf.secrets.reads(),
        [(TOKEN_PATH.to_string(), "test".to_string())],
        "the token is read once per engine"
    );

    cf.apply().await;
    assert_eq!(
        cf.ingress(),
        owned(&[
            (Some("api.example.com"), "http://localhost:3100"),
            (None, "http_status:404")
        ])
    );
    let r = cf.record("api.example.com");
    assert_eq!(
        (
            r.record_type.as_str(),
            r.content.as_str(),
            r.proxied,
            r.ttl,
            r.comment.as_deref()
        ),
        (
            "CNAME",
            target.as_str(),
            true,
            1,
            Some("managed-by: supervisor")
        )
    );
    assert_eq!(
        cf.managed("dns").await,
        [("dns/api.example.com".to_string(), Some(r.id.clone()), false)]
    );
    assert_eq!(
        cf.managed("tunnel").await,
        [(
            "tunnel/api.example.com".to_string(),
            Some(cf.tunnel.clone()),
            false
        )]
    );
    cf.fake.clear_requests();
    cf.assert_converged().await;
    // A plan costs one zone lookup, one record listing and one configuration read.
    assert_eq!(cf.fake.requests().len(), 3, "{:?}", cf.fake.requests());
    assert_eq!(cf.fake.count(Method::GET, "/zones/*/dns_records"), 1);
}

async fn local_mode_writes_config_yml_shows_its_diff_and_reloads(ws: Workspace) {
    let log = ws.path().join("reloads.log");
    let cf = Cf::local(ws, &format!("echo reloaded >> {}", log.display())).await;
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    let plan = cf.plan().await;
    let text = render::plan_text(&plan);
    let path = cf.config_path().display().to_string();
    assert_lines(
        &text,
        &[
            "+ tunnel/api.example.com ingress api.example.com → http://localhost:3100",
            "+ tunnel/web.example.com ingress web.example.com → http://localhost:3101",
            &format!(
                "+ tunnel/config.yml {path}, then reload: echo reloaded >> {}",
                log.display()
            ),
            &format!("--- a{path}"),
            &format!("+++ b{path}"),
            &format!("+tunnel: {}", cf.tunnel),
            "+ - hostname: api.example.com",
            "+ service: http://localhost:3100",
            "+ - service: http_status:404",
        ],
    );
    // The diff sits under the file's change, indented.
    let file_line = text
        .lines()
        .position(|l| l.contains("tunnel/config.yml"))
        .unwrap();
    assert!(
        text.lines()
            .nth(file_line + 1)
            .unwrap()
            .starts_with("        --- a"),
        "{text}"
    );
    cf.apply().await;
    let written = std::fs::read_to_string(cf.config_path()).unwrap();
    assert!(
        written.ends_with(&format!(
            "tunnel: {}\ncredentials-file: {}\ningress:\n  - hostname: api.example.com\n    service: http://localhost:3100\n  - hostname: web.example.com\n    service: http://localhost:3101\n  - service: http_status:404\n",
            cf.tunnel,
            cf.ws.path().join("cloudflared/creds.json").display()
        )),
        "{written}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "reloaded\n",
        "one reload per apply"
    );
    assert_eq!(cf.records().len(), 2);
    cf.assert_converged().await;

    // Removing a hostname shows the removed lines in the diff.
    cf.project(
        "shop",
        3100,
        &[("api", Some("api.example.com")), ("web", None)],
    );
    let text = render::plan_text(&cf.plan().await);
    assert_lines(
        &text,
        &[
            "- tunnel/web.example.com ingress web.example.com → http://localhost:3101",
            "- - hostname: web.example.com",
            "- service: http://localhost:3101",
        ],
    );
    cf.apply().await;
    assert!(
        !std::fs::read_to_string(cf.config_path())
            .unwrap()
            .contains("web.example.com")
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "reloaded\nreloaded\n"
    );
    cf.assert_converged().await;
}

async fn a_failed_reload_restores_the_previous_file_and_reports_the_output(ws: Workspace) {
    let cf = Cf::local(ws, "true").await;
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    cf.apply().await;
    let before = std::fs::read_to_string(cf.config_path()).unwrap();

    cf.settings(&Mode::Local {
        reload: "echo 'cloudflared: config is broken' && exit 3".into(),
    });
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    let (_, report) = cf.apply_with(&[], false).await.unwrap();
    let failed = report.failed.expect("the reload fails");
    assert!(
        failed.contains("`echo 'cloudflared: config is broken' && exit 3` failed (exit status 3): cloudflared: config is broken"),
        "{failed}"
    );
    assert!(failed.contains("was restored"), "{failed}");
    assert_eq!(
        std::fs::read_to_string(cf.config_path()).unwrap(),
        before,
        "rolled back"
    );
    assert_eq!(
        cf.managed("tunnel")
            .await
            .iter()
            .map(|m| m.0.as_str())
            .collect::<Vec<_>>(),
        ["tunnel/api.example.com", "tunnel/config.yml"],
        "the failed rule is not recorded"
    );
    assert!(
        cf.records().iter().all(|r| r.name != "web.example.com"),
        "DNS waits for the tunnel"
    );

    // Fixed: the next run converges.
    cf.settings(&Mode::Local {
        reload: "true".into(),
    });
    cf.apply().await;
    assert!(
        std::fs::read_to_string(cf.config_path())
            .unwrap()
            .contains("web.example.com")
    );
    cf.assert_converged().await;
}

async fn removing_a_hostname_removes_both_and_never_touches_unmanaged_objects(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    let apex =
        cf.seed(json!({"type": "A", "name": "example.com", "content": "192.0.2.1", "ttl": 300}));
    let blog = cf.seed(json!({"type": "CNAME", "name": "blog.example.com", "content": "blogs.example.net", "ttl": 1, "proxied": true, "comment": "hand-made"}));
    let txt =
        cf.seed(json!({"type": "TXT", "name": "example.com", "content": "v=spf1 -all", "ttl": 1}));
    cf.fake.set_tunnel_config(
        ACCOUNT_ID,
        &cf.tunnel,
        json!({"ingress": [
            {"hostname": "legacy.example.com", "service": "http://10.0.0.5:8080", "originRequest": {"noTLSVerify": true}},
            {"service": "http_status:404"}
        ], "warp-routing": {"enabled": true}}),
    );
    let untouched: Vec<FakeRecord> = cf.records();
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    cf.apply().await;
    assert_eq!(
        cf.ingress(),
        owned(&[
            (Some("legacy.example.com"), "http://10.0.0.5:8080"),
            (Some("api.example.com"), "http://localhost:3100"),
            (Some("web.example.com"), "http://localhost:3101"),
            (None, "http_status:404"),
        ])
    );

    cf.project(
        "shop",
        3100,
        &[("api", Some("api.example.com")), ("web", None)],
    );
    let plan = cf.plan().await;
    assert_lines(
        &render::plan_text(&plan),
        &[
            "- tunnel/web.example.com ingress web.example.com → http://localhost:3101",
            &format!(
                "- dns/web.example.com CNAME web.example.com → {} (proxied)",
                cf.target()
            ),
            "Plan: 0 to add, 0 to change, 2 to destroy.",
        ],
    );
    cf.apply().await;
    assert_eq!(
        cf.ingress(),
        owned(&[
            (Some("legacy.example.com"), "http://10.0.0.5:8080"),
            (Some("api.example.com"), "http://localhost:3100"),
            (None, "http_status:404"),
        ])
    );
    let config = cf
        .fake
        .tunnel_config(ACCOUNT_ID, &cf.tunnel)
        .unwrap()
        .config
        .unwrap();
    assert_eq!(
        config["ingress"][0]["originRequest"],
        json!({"noTLSVerify": true})
    );
    assert_eq!(config["warp-routing"], json!({"enabled": true}));
    assert!(cf.records().iter().all(|r| r.name != "web.example.com"));

    // Everything goes: only our objects are deleted. Removing the last hostname of a small setup is
    // an ordinary edit (the mass-delete guard starts at 10 managed objects of a kind).
    cf.project("shop", 3100, &[("api", None), ("web", None)]);
    let (_, report) = cf.apply_with(&[], false).await.unwrap();
    assert_eq!(report.failed, None);
    let mut left = cf.records();
    left.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = untouched.clone();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        left, expected,
        "unmanaged records are exactly as they were (modified_on included)"
    );
    assert!(
        [apex, blog, txt]
            .iter()
            .all(|id| left.iter().any(|r| &r.id == id))
    );
    assert_eq!(
        cf.ingress(),
        owned(&[
            (Some("legacy.example.com"), "http://10.0.0.5:8080"),
            (None, "http_status:404")
        ])
    );
    assert!(cf.managed("dns").await.is_empty());
    assert!(cf.managed("tunnel").await.is_empty());
    cf.assert_converged().await;
}

async fn an_unmanaged_record_is_a_plan_error_until_adopted(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    let id = cf.seed(json!({"type": "CNAME", "name": "api.example.com", "content": "old-host.example.net", "ttl": 300, "comment": "hand-made"}));
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let plan = cf.plan().await;
    let text = render::plan_text(&plan);
    let message = format!(
        "dns/api.example.com: api.example.com already has a record not managed by supervisor: CNAME api.example.com → old-host.example.net (DNS only, TTL 300) (id {id}); adopt it with `supervisor apply --adopt api.example.com` (or `supervisor import cloudflare`), or delete it"
    );
    assert!(
        text.contains(&format!(
            "errors (the plan cannot be applied)\n  ✗   {message}"
        )),
        "{text}"
    );
    let refused = cf.apply_with(&[], false).await;
    assert!(
        matches!(refused, Err(EngineError::PlanHasErrors(ref m)) if m.contains(&message)),
        "{refused:?}"
    );
    assert!(
        cf.ingress().is_empty(),
        "nothing is applied while the plan has errors"
    );
    assert_eq!(cf.record("api.example.com").content, "old-host.example.net");

    let plan = cf.plan_adopting(&["API.example.com."]).await;
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_lines(
        &render::plan_text(&plan),
        &[&format!(
            "~ dns/api.example.com adopt CNAME api.example.com → old-host.example.net (DNS only, TTL 300) (id {id}), then content old-host.example.net → {}, proxied false → true, ttl 300 → auto, comment \"hand-made\" → \"hand-made; managed-by: supervisor\"",
            cf.target()
        )],
    );
    let (_, report) = cf.apply_with(&["api.example.com"], false).await.unwrap();
    assert_eq!(report.failed, None);
    let r = cf.record("api.example.com");
    assert_eq!(r.id, id, "adopted in place");
    assert_eq!(
        (r.content.as_str(), r.proxied, r.ttl, r.comment.as_deref()),
        (
            cf.target().as_str(),
            true,
            1,
            Some("hand-made; managed-by: supervisor")
        )
    );
    assert_eq!(
        cf.managed("dns").await,
        [("dns/api.example.com".to_string(), Some(id), true)]
    );
    cf.assert_converged().await;
}

async fn adopting_a_matching_record_does_not_change_it(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let target = cf.target();
    let id = cf.seed(json!({"type": "CNAME", "name": "api.example.com", "content": target, "ttl": 1, "proxied": true, "comment": "ops ticket 42"}));
    cf.fake.set_tunnel_config(
        ACCOUNT_ID,
        &cf.tunnel,
        json!({"ingress": [
            {"hostname": "api.example.com", "service": "http://localhost:3100", "originRequest": {"httpHostHeader": "api"}},
            {"service": "http_status:404"}
        ]}),
    );
    let before = cf.record("api.example.com");
    let version = cf
        .fake
        .tunnel_config(ACCOUNT_ID, &cf.tunnel)
        .unwrap()
        .version;
    let plan = cf.plan().await;
    assert_eq!(plan.errors.len(), 2, "{:?}", plan.errors);
    assert!(plan.errors[0].message.starts_with(
        "tunnel/api.example.com: the tunnel already routes api.example.com → http://localhost:3100"
    ));
    let plan = cf.plan_adopting(&["api.example.com"]).await;
    assert_lines(
        &render::plan_text(&plan),
        &[
            "~ tunnel/api.example.com adopt ingress api.example.com → http://localhost:3100; the rule is not changed",
            &format!(
                "~ dns/api.example.com adopt CNAME api.example.com → {target} (proxied) (id {id}); the record is not changed"
            ),
        ],
    );
    cf.fake.clear_requests();
    let (_, report) = cf.apply_with(&["api.example.com"], false).await.unwrap();
    assert_eq!(report.failed, None);
    assert_eq!(
        cf.record("api.example.com"),
        before,
        "not even modified_on moves"
    );
    assert_eq!(
        cf.fake
            .tunnel_config(ACCOUNT_ID, &cf.tunnel)
            .unwrap()
            .version,
        version
    );
    assert_eq!(cf.fake.count(Method::POST, "/zones/*/dns_records/batch"), 0);
    assert_eq!(
        cf.fake
            .count(Method::PUT, "/accounts/*/cfd_tunnel/*/configurations"),
        0
    );
    assert_eq!(
        cf.managed("dns").await,
        [("dns/api.example.com".to_string(), Some(id), true)]
    );
    assert_eq!(
        cf.managed("tunnel").await,
        [(
            "tunnel/api.example.com".to_string(),
            Some(cf.tunnel.clone()),
            true
        )]
    );
    cf.assert_converged().await;
}

async fn dashboard_drift_is_shown_and_repaired(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    cf.apply().await;
    let api = cf.record("api.example.com");
    let web = cf.record("web.example.com");
    // Someone turns the proxy off on api, deletes web, and points the tunnel's api rule elsewhere.
    let client = cf.client();
    client
        .update_dns_record(
            &cf.zone,
            &api.id,
            &supervisor::clients::cloudflare::DnsRecordPatch {
                proxied: Some(false),
                ttl: Some(120),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.delete_dns_record(&cf.zone, &web.id).await.unwrap();
    cf.fake.set_tunnel_config(
        ACCOUNT_ID,
        &cf.tunnel,
        json!({"ingress": [
            {"hostname": "api.example.com", "service": "http://localhost:9999"},
            {"hostname": "web.example.com", "service": "http://localhost:3101"},
            {"service": "http_status:404"}
        ]}),
    );
    let plan = cf.plan().await;
    let text = render::plan_text(&plan);
    assert_lines(
        &text,
        &[
            "~ tunnel/api.example.com ingress api.example.com: http://localhost:9999 → http://localhost:3100 (drifted: changed outside supervisor)",
            "~ dns/api.example.com CNAME api.example.com: proxied false → true, ttl 120 → auto (drifted: changed outside supervisor)",
            &format!(
                "+ dns/web.example.com CNAME web.example.com → {} (proxied) (deleted outside supervisor) (drifted: changed outside supervisor)",
                cf.target()
            ),
        ],
    );
    assert_eq!(plan.changes.iter().filter(|c| c.drifted).count(), 3);
    cf.apply().await;
    let repaired = cf.record("api.example.com");
    assert_eq!(
        (repaired.id.as_str(), repaired.proxied, repaired.ttl),
        (api.id.as_str(), true, 1)
    );
    assert_eq!(
        cf.record("web.example.com").comment.as_deref(),
        Some("managed-by: supervisor")
    );
    assert_eq!(
        cf.ingress()[0],
        (
            Some("api.example.com".to_string()),
            "http://localhost:3100".to_string()
        )
    );
    cf.assert_converged().await;
}

async fn a_rate_limited_run_completes(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    // Two requests per second: plan and apply need about ten, so most wait for Retry-After.
    cf.fake.set_rate_limit(2, Duration::from_secs(1));
    cf.apply().await;
    assert_eq!(cf.records().len(), 2);
    let throttled = cf
        .fake
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(throttled >= 2, "the fake throttled {throttled} requests");
    cf.assert_converged().await;
}

async fn a_fault_in_the_middle_of_a_batch_applies_nothing_and_the_next_run_converges(
    ws: Workspace,
) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[
            ("a", Some("a.example.com")),
            ("b", Some("b.example.com")),
            ("c", Some("c.example.com")),
        ],
    );
    cf.fake.fail_next_batch_at(1);
    let (_, report) = cf.apply_with(&[], false).await.unwrap();
    let failed = report.failed.expect("the batch fails");
    assert!(
        failed.contains("3 changes starting at dns/a.example.com"),
        "{failed}"
    );
    assert!(failed.contains("injected failure"), "{failed}");
    assert!(
        cf.records().is_empty(),
        "nothing half-applied: {:?}",
        cf.records()
    );
    assert!(
        cf.managed("dns").await.is_empty(),
        "no pending entries are left behind"
    );
    assert_eq!(
        cf.fake.count(Method::POST, "/zones/*/dns_records/batch"),
        1,
        "a rejected batch is not resent"
    );
    assert_eq!(
        cf.fake.count(Method::POST, "/zones/*/dns_records"),
        0,
        "and does not fall back to single calls"
    );
    let plan = cf.plan().await;
    assert_eq!(plan.changes.len(), 3, "{}", render::plan_text(&plan));
    cf.apply().await;
    assert_eq!(cf.records().len(), 3);
    cf.assert_converged().await;
}

async fn a_lost_batch_answer_is_resolved_by_reading_the_zone_again(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[("a", Some("a.example.com")), ("b", Some("b.example.com"))],
    );
    // Applied, but the answer is a 502: the records exist, the client cannot know.
    cf.fake
        .inject(Fault::status_after_apply(502).on(Method::POST, "/zones/*/dns_records/batch"));
    cf.apply().await;
    assert_eq!(cf.records().len(), 2, "no duplicates");
    assert_eq!(
        cf.fake.count(Method::POST, "/zones/*/dns_records/batch"),
        1,
        "not resent"
    );
    let ids: HashSet<String> = cf.records().into_iter().map(|r| r.id).collect();
    let managed: HashSet<String> = cf
        .managed("dns")
        .await
        .into_iter()
        .filter_map(|m| m.1)
        .collect();
    assert_eq!(managed, ids);
    cf.assert_converged().await;

    // Not applied, and the answer is a 503: re-read, then sent once more.
    cf.project(
        "shop",
        3100,
        &[
            ("a", Some("a.example.com")),
            ("b", Some("b.example.com")),
            ("c", Some("c.example.com")),
        ],
    );
    cf.fake.clear_requests();
    cf.fake
        .inject(Fault::status(503).on(Method::POST, "/zones/*/dns_records/batch"));
    cf.apply().await;
    assert_eq!(cf.fake.count(Method::POST, "/zones/*/dns_records/batch"), 2);
    assert_eq!(cf.records().len(), 3);
    cf.assert_converged().await;
}

async fn a_missing_batch_endpoint_falls_back_to_single_calls(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[("a", Some("a.example.com")), ("b", Some("b.example.com"))],
    );
    cf.apply().await;
    cf.project(
        "shop",
        3100,
        &[("a", Some("a.example.com")), ("c", Some("c.example.com"))],
    );
    cf.fake.clear_requests();
    cf.fake
        .inject(Fault::status(404).on(Method::POST, "/zones/*/dns_records/batch"));
    // And the single create's answer is lost once: it is looked up, not duplicated.
    cf.fake
        .inject(Fault::status_after_apply(502).on(Method::POST, "/zones/*/dns_records"));
    cf.apply().await;
    assert_eq!(cf.fake.count(Method::POST, "/zones/*/dns_records/batch"), 1);
    assert_eq!(cf.fake.count(Method::DELETE, "/zones/*/dns_records/*"), 1);
    assert_eq!(cf.fake.count(Method::POST, "/zones/*/dns_records"), 1);
    let names: Vec<String> = cf.records().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a.example.com", "c.example.com"]);
    cf.assert_converged().await;
}

async fn changes_are_chunked_within_the_batch_limit(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    let hosts: Vec<String> = (0..250).map(|i| format!("h{i:03}.example.com")).collect();
    for p in 0..3 {
        let services: Vec<(String, String)> = hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| i / 100 == p)
            .map(|(i, h)| (format!("s{i:03}"), h.clone()))
            .collect();
        let refs: Vec<(&str, Option<&str>)> = services
            .iter()
            .map(|(s, h)| (s.as_str(), Some(h.as_str())))
            .collect();
        cf.project(&format!("p{p}"), 3000 + 100 * p as u16, &refs);
    }
    cf.apply().await;
    assert_eq!(cf.records().len(), 250);
    assert_eq!(
        cf.fake.count(Method::POST, "/zones/*/dns_records/batch"),
        2,
        "200 + 50"
    );
    assert_eq!(
        cf.fake
            .count(Method::PUT, "/accounts/*/cfd_tunnel/*/configurations"),
        1,
        "one write for all rules"
    );
    assert_eq!(cf.ingress().len(), 251);
    cf.assert_converged().await;
}

async fn deleting_many_managed_records_needs_force(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    let services: Vec<(String, String)> = (0..10)
        .map(|i| (format!("s{i}"), format!("h{i}.example.com")))
        .collect();
    let all: Vec<(&str, Option<&str>)> = services
        .iter()
        .map(|(s, h)| (s.as_str(), Some(h.as_str())))
        .collect();
    cf.project("shop", 3100, &all);
    cf.apply().await;
    // Keep the services, drop four hostnames: 4 of 10 managed records and rules (40 % > 30 %).
    let fewer: Vec<(&str, Option<&str>)> = all
        .iter()
        .enumerate()
        .map(|(i, (s, h))| (*s, if i < 4 { None } else { *h }))
        .collect();
    cf.project("shop", 3100, &fewer);
    let plan = cf.plan().await;
    let text = render::plan_text(&plan);
    assert!(
        text.contains(
            "the plan deletes 4 of 10 managed dns objects (40 % > 30 %) — apply needs --force"
        ),
        "{text}"
    );
    let refused = cf.apply_with(&[], false).await;
    assert!(
        matches!(refused, Err(EngineError::Unsafe(_))),
        "{refused:?}"
    );
    assert_eq!(cf.records().len(), 10);
    let (_, report) = cf.apply_with(&[], true).await.unwrap();
    assert_eq!(report.failed, None);
    assert_eq!(cf.records().len(), 6);
    cf.assert_converged().await;
}

async fn a_missing_token_is_a_clear_error(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let desired = supervisor::state::load(&cf.ws.state()).unwrap();
    let mut ctx = ProviderContext::new(cf.store.clone());
    let err = for_desired(&desired, &ctx)
        .await
        .err()
        .expect("no key")
        .to_string();
    assert_eq!(
        err,
        "the Cloudflare API token is read from the vault at `meta/cloudflare/api_token` (cloudflare.api_token), but no encryption key is configured: set SECRETS_ENCRYPTION_KEY (or key_file in supervisor.toml), then store the token with `supervisor secrets set meta/cloudflare/api_token`"
    );
    ctx.secrets = Some(Arc::new(StaticSecrets::new(&[])));
    let err = for_desired(&desired, &ctx)
        .await
        .err()
        .expect("no secret")
        .to_string();
    assert_eq!(
        err,
        "cannot read the Cloudflare API token (cloudflare.api_token): cannot read secret meta/cloudflare/api_token: no secret at this path; store it with `supervisor secrets set meta/cloudflare/api_token`"
    );
    // A wrong token: the API's authentication error, without the token.
    ctx.secrets = Some(Arc::new(StaticSecrets::new(&[(
        TOKEN_PATH,
        "wrong-token-value",
    )])));
    let providers = for_desired(&desired, &ctx).await.unwrap();
    let engine = Engine::new(cf.store.clone(), providers);
    let err = engine
        .plan(&desired, &Scope::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tunnel: Cloudflare API: GET /accounts/"),
        "{err}"
    );
    assert!(err.contains("authentication failed (HTTP 403)"), "{err}");
    assert!(!err.contains("wrong-token-value"));
}

async fn the_cli_names_the_token_path_when_no_key_is_configured(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let out = cf.ws.run(&["plan"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("supervisor secrets set meta/cloudflare/api_token"),
        "{}",
        stderr(&out)
    );
    let out = cf.ws.run(&["import", "cloudflare"]);
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("no encryption key is configured"),
        "{}",
        stderr(&out)
    );
    assert!(
        cf.fake.requests().is_empty(),
        "nothing is called without a token"
    );
    // A key that cannot be used is named by the providers that need it ...
    let out = cf
        .cli_with(&["plan"], None, &[("SECRETS_ENCRYPTION_KEY", "not-a-key")])
        .await;
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains(
            "cannot read secret meta/cloudflare/api_token: the encryption key cannot be used:"
        ),
        "{}",
        stderr(&out)
    );
    // ... and does not stop a plan that needs no credential.
    cf.ws
        .write("state/supervisor.yaml", "shared_services: []\n");
    cf.project("shop", 3100, &[("api", None)]);
    let out = cf
        .cli_with(&["plan"], None, &[("SECRETS_ENCRYPTION_KEY", "not-a-key")])
        .await;
    expect_code(&out, 0);
}

async fn import_adopts_existing_records_and_writes_hostnames_into_state(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    // The ports exist first: api 3100, web 3101, worker 3102.
    cf.project(
        "shop",
        3100,
        &[("api", None), ("web", None), ("worker", None)],
    );
    cf.apply().await;
    // What was clicked together by hand before the supervisor took over.
    let target = cf.target();
    let api = cf.seed(json!({"type": "CNAME", "name": "api.example.com", "content": target, "ttl": 1, "proxied": true, "comment": "ops"}));
    let web =
        cf.seed(json!({"type": "CNAME", "name": "web.example.com", "content": target, "ttl": 300}));
    cf.seed(json!({"type": "CNAME", "name": "old.example.com", "content": target, "ttl": 1, "proxied": true}));
    cf.seed(json!({"type": "CNAME", "name": "ghost.example.com", "content": target, "ttl": 1, "proxied": true}));
    cf.seed(json!({"type": "CNAME", "name": "blog.example.com", "content": "blogs.example.net", "ttl": 1}));
    cf.fake.set_tunnel_config(
        ACCOUNT_ID,
        &cf.tunnel,
        json!({"ingress": [
            {"hostname": "api.example.com", "service": "http://localhost:3100"},
            {"hostname": "web.example.com", "service": "http://127.0.0.1:3101", "originRequest": {"httpHostHeader": "web"}},
            {"hostname": "old.example.com", "service": "http://localhost:8080"},
            {"service": "http_status:404"}
        ]}),
    );
    cf.ws.write(
        "state/projects/shop.yaml",
        "# The shop.\nname: shop\nport_range: 3100\nservices:\n  - name: api\n    hostname: api.example.com\n  # The storefront.\n  - name: web\n  - name: worker\n",
    );
    let records_before = cf.records();
    let version = cf
        .fake
        .tunnel_config(ACCOUNT_ID, &cf.tunnel)
        .unwrap()
        .version;

    let report = import_cloudflare(&cf.desired(), &cf.context(&[]))
        .await
        .unwrap();
    assert_eq!(report.state_edits.len(), 1);
    let e = &report.state_edits[0];
    assert_eq!(
        (
            e.edit.project.as_str(),
            e.edit.service.as_str(),
            e.edit.hostname.as_str(),
            e.port
        ),
        ("shop", "web", "web.example.com", 3101)
    );
    let adopted = |address: &str, found: String| Adopted {
        address: address.into(),
        project: "shop".into(),
        found,
    };
    assert_eq!(
        report.adopted,
        [
            adopted(
                "dns/api.example.com",
                format!("CNAME api.example.com → {target} (proxied) (id {api})")
            ),
            adopted(
                "tunnel/api.example.com",
                "ingress api.example.com → http://localhost:3100".into()
            ),
            adopted(
                "dns/web.example.com",
                format!("CNAME web.example.com → {target} (DNS only, TTL 300) (id {web})")
            ),
            adopted(
                "tunnel/web.example.com",
                "ingress web.example.com → http://127.0.0.1:3101".into()
            ),
        ]
    );
    assert_eq!(
        report.skipped,
        [
            Skipped { hostname: "ghost.example.com".into(), reason: "it points at the tunnel, but no ingress rule routes it".into() },
            Skipped { hostname: "old.example.com".into(), reason: "its ingress rule routes it to port 8080, which no service in the port registry holds (apply the ports first, or add the service)".into() },
        ]
    );
    // State: the hostname is written, the comments stay, and the result is valid.
    let file = cf.ws.read("state/projects/shop.yaml");
    assert!(
        file.contains("  # The storefront.\n  - name: web\n    hostname: web.example.com\n"),
        "{file}"
    );
    assert!(file.starts_with("# The shop.\n"), "{file}");
    // Nothing changed at Cloudflare.
    assert_eq!(cf.records(), records_before);
    assert_eq!(
        cf.fake
            .tunnel_config(ACCOUNT_ID, &cf.tunnel)
            .unwrap()
            .version,
        version
    );
    assert_eq!(
        cf.managed("dns").await,
        [
            ("dns/api.example.com".to_string(), Some(api.clone()), true),
            ("dns/web.example.com".to_string(), Some(web.clone()), true),
        ]
    );

    // The next plan has no errors and shows only what differs from the desired state.
    let plan = cf.plan().await;
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let changes: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("{} {}", c.address, c.summary))
        .collect();
    assert_eq!(
        changes,
        [
            "tunnel/web.example.com ingress web.example.com: http://127.0.0.1:3101 → http://localhost:3101".to_string(),
            "dns/web.example.com CNAME web.example.com: proxied false → true, ttl 300 → auto, comment \"\" → \"managed-by: supervisor\"".to_string(),
        ]
    );
    cf.apply().await;
    let config = cf
        .fake
        .tunnel_config(ACCOUNT_ID, &cf.tunnel)
        .unwrap()
        .config
        .unwrap();
    let web_rule = config["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hostname"] == "web.example.com")
        .unwrap();
    assert_eq!(
        web_rule["originRequest"],
        json!({"httpHostHeader": "web"}),
        "kept"
    );
    assert_eq!(
        cf.ingress(),
        owned(&[
            (Some("old.example.com"), "http://localhost:8080"),
            (Some("api.example.com"), "http://localhost:3100"),
            (Some("web.example.com"), "http://localhost:3101"),
            (None, "http_status:404"),
        ])
    );
    assert_eq!(
        cf.record("api.example.com").comment.as_deref(),
        Some("ops"),
        "unchanged records keep their comment"
    );
    assert_eq!(cf.record("web.example.com").id, web);
    cf.assert_converged().await;

    // Importing again finds everything managed.
    let again = import_cloudflare(&cf.desired(), &cf.context(&[]))
        .await
        .unwrap();
    assert!(again.adopted.is_empty() && again.state_edits.is_empty());
    assert_eq!(again.already_managed, 2);
}

async fn cli_plan_adopt_apply_through_the_vault(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.project(
        "shop",
        3100,
        &[
            ("api", Some("api.example.com")),
            ("web", Some("web.example.com")),
        ],
    );
    let id = cf.seed(
        json!({"type": "CNAME", "name": "api.example.com", "content": "old.example.net", "ttl": 1}),
    );
    // With a key but no token stored: the error says how to store it.
    let out = cf.cli(&["plan"], None).await;
    expect_code(&out, 1);
    assert!(
        stderr(&out).contains("cannot read the Cloudflare API token (cloudflare.api_token): cannot read secret meta/cloudflare/api_token: it is not set (supervisor secrets set meta/cloudflare/api_token)"),
        "{}",
        stderr(&out)
    );
    cf.store_token().await;

    let out = cf.cli(&["plan", "--detailed-exitcode"], None).await;
    expect_code(&out, 1);
    let text = support::stdout(&out);
    assert_lines(
        &text,
        &[
            &format!("tunnel (remote, tunnel {}…)", &cf.tunnel[..8]),
            "+ tunnel/api.example.com ingress api.example.com → http://localhost:3100",
            "dns (zone example.com)",
            &format!(
                "+ dns/web.example.com CNAME web.example.com → {} (proxied)",
                cf.target()
            ),
            "errors (the plan cannot be applied)",
        ],
    );
    assert!(
        text.contains(&format!(
            "(id {id}); adopt it with `supervisor apply --adopt api.example.com`"
        )),
        "{text}"
    );
    let out = cf.cli(&["apply", "--auto-approve"], None).await;
    expect_code(&out, 1);
    assert_eq!(cf.records().len(), 1, "nothing applied");

    let out = cf
        .cli(
            &["apply", "--auto-approve", "--adopt", "api.example.com"],
            None,
        )
        .await;
    expect_code(&out, 0);
    assert!(
        support::stdout(&out)
            .contains("Apply complete! Resources: 6 added, 1 changed, 0 destroyed."),
        "{}",
        support::stdout(&out)
    );
    assert_eq!(cf.record("api.example.com").id, id);
    assert_eq!(cf.record("api.example.com").content, cf.target());
    let out = cf.cli(&["plan", "--detailed-exitcode"], None).await;
    expect_code(&out, 0);
    assert!(
        support::stdout(&out).contains("No changes."),
        "{}",
        support::stdout(&out)
    );
    // Every token read is in the vault's access log, under the CLI user.
    let out = cf
        .cli(&["secrets", "audit", "--path", TOKEN_PATH, "--json"], None)
        .await;
    expect_code(&out, 0);
    let audit: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let reads: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read" && e["outcome"] == "ok")
        .collect();
    assert_eq!(reads.len(), 4, "plan, apply, apply, plan: {audit}");
    assert!(reads.iter().all(|e| e["actor"] == "cli:tester"), "{audit}");
    // The token never reaches any output.
    for args in [&["plan"][..], &["status"][..]] {
        let out = cf.cli(args, None).await;
        assert!(!support::stdout(&out).contains(TOKEN) && !stderr(&out).contains(TOKEN));
    }
}

async fn cli_local_mode_plan_shows_sections_and_the_file_diff(ws: Workspace) {
    let cf = Cf::local(ws, "true").await;
    cf.store_token().await;
    // doctor reaches the zone with the stored token, or says why not.
    let out = cf.cli(&["doctor"], None).await;
    expect_code(&out, 0);
    assert!(
        support::stdout(&out).contains("ok    cloudflare api  zone example.com reachable"),
        "{}",
        support::stdout(&out)
    );
    let dead = format!("http://127.0.0.1:{}/client/v4", support::mcp::free_port());
    let out = cf
        .cli_with(
            &["doctor"],
            None,
            &[("SUPERVISOR_CLOUDFLARE_API_URL", &dead)],
        )
        .await;
    expect_code(&out, 1);
    assert!(
        support::stdout(&out).contains("FAIL  cloudflare api"),
        "{}",
        support::stdout(&out)
    );
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let out = cf.cli(&["plan"], None).await;
    expect_code(&out, 0);
    let text = support::stdout(&out);
    let path = cf.config_path().display().to_string();
    assert!(
        text.contains(&format!(
            "tunnel (local, tunnel {}…)\n  +   tunnel/api.example.com  ingress api.example.com → http://localhost:3100\n  +   tunnel/config.yml       {path}, then reload: true\n        --- a{path}\n        +++ b{path}\n        @@ -0,0 +1,8 @@\n",
            &cf.tunnel[..8]
        )),
        "{text}"
    );
    assert!(text.contains("        +  - hostname: api.example.com\n        +    service: http://localhost:3100\n        +  - service: http_status:404\n"), "{text}");
    assert!(
        text.contains(&format!(
            "\ndns (zone example.com)\n  +   dns/api.example.com     CNAME api.example.com → {} (proxied)\n",
            cf.target()
        )),
        "{text}"
    );
    assert!(
        text.contains("Plan: 5 to add, 0 to change, 0 to destroy."),
        "{text}"
    );
    let out = cf.cli(&["apply", "--auto-approve"], None).await;
    expect_code(&out, 0);
    assert!(
        std::fs::read_to_string(cf.config_path())
            .unwrap()
            .contains("service: http://localhost:3100")
    );
    let out = cf.cli(&["plan", "--detailed-exitcode"], None).await;
    expect_code(&out, 0);
    // status lists the file and the rule as in sync.
    let out = cf.cli(&["status", "--json"], None).await;
    let status: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    let text = status.to_string();
    for address in [
        "tunnel/config.yml",
        "tunnel/api.example.com",
        "dns/api.example.com",
    ] {
        assert!(text.contains(address), "{address} missing in {text}");
    }
}

async fn cli_import_cloudflare_reports_and_changes_nothing(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.store_token().await;
    cf.project("shop", 3100, &[("api", None), ("web", None)]);
    let out = cf.cli(&["apply", "--auto-approve"], None).await;
    expect_code(&out, 0);
    let target = cf.target();
    let api = cf.seed(json!({"type": "CNAME", "name": "api.example.com", "content": target, "ttl": 1, "proxied": true}));
    cf.fake.set_tunnel_config(
        ACCOUNT_ID,
        &cf.tunnel,
        json!({"ingress": [
            {"hostname": "api.example.com", "service": "http://localhost:3100"},
            {"service": "http_status:404"}
        ]}),
    );
    let before = cf.records();
    let out = cf.cli(&["import", "cloudflare"], None).await;
    expect_code(&out, 0);
    let text = support::stdout(&out);
    assert_eq!(
        text,
        format!(
            "Cloudflare zone example.com, tunnel {}\n  state    {}: shop/api hostname api.example.com (the tunnel routes it to port 3100)\n  adopted  dns/api.example.com     CNAME api.example.com → {target} (proxied) (id {api})\n  adopted  tunnel/api.example.com  ingress api.example.com → http://localhost:3100\n\n2 adopted, 1 hostname written into state/, 0 skipped, 0 already managed. Nothing was changed at Cloudflare; run `supervisor plan` to see what still differs.\n",
            cf.tunnel, "state/projects/shop.yaml"
        )
    );
    assert_eq!(cf.records(), before);
    assert!(
        cf.ws
            .read("state/projects/shop.yaml")
            .contains("  - name: api\n    hostname: api.example.com\n")
    );
    let out = cf.cli(&["plan", "--detailed-exitcode"], None).await;
    expect_code(&out, 0);
    let out = cf.cli(&["import", "cloudflare", "--json"], None).await;
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert_eq!(report["format_version"], "1");
    assert_eq!(report["import"]["already_managed"], 1);
    assert_eq!(report["import"]["adopted"], json!([]));
}

async fn cli_environment_url_wins_over_supervisor_yaml(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.store_token().await;
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    // supervisor.yaml points nowhere; the environment points at the fake.
    let yaml = cf
        .ws
        .read("state/supervisor.yaml")
        .replace(cf.fake.base_url(), "http://127.0.0.1:9/client/v4");
    cf.ws.write("state/supervisor.yaml", &yaml);
    let out = cf
        .cli_with(
            &["plan", "--detailed-exitcode"],
            None,
            &[("SUPERVISOR_CLOUDFLARE_API_URL", cf.fake.base_url())],
        )
        .await;
    expect_code(&out, 2);
    assert!(
        support::stdout(&out).contains("dns/api.example.com"),
        "{}",
        support::stdout(&out)
    );
    assert_eq!(cf.fake.count(Method::GET, "/zones"), 1);
}

/// `status` never reports a resource the plan has an error about as in sync: an unmanaged record at the
/// wanted name, or a managed CNAME replaced by someone else's record, is `blocked`, and `status` exits 1.
async fn cli_status_calls_a_resource_blocked_by_someone_elses_record_blocked(ws: Workspace) {
    let cf = Cf::remote(ws).await;
    cf.store_token().await;
    let status_of = |out: &std::process::Output, address: &str| -> (Value, Value) {
        let report: Value = serde_json::from_str(&support::stdout(out)).unwrap();
        let line = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == address)
            .cloned()
            .unwrap_or_else(|| panic!("no {address} in {report:#}"));
        (line, report)
    };

    // Someone else's record holds the hostname: apply fails, status says blocked.
    cf.project("shop", 3100, &[("api", Some("taken.example.com"))]);
    cf.seed(json!({"type": "A", "name": "taken.example.com", "content": "192.0.2.7", "ttl": 1}));
    let out = cf.cli(&["apply", "--auto-approve"], None).await;
    expect_code(&out, 1);
    let out = cf.cli(&["status"], None).await;
    expect_code(&out, 1);
    let text = support::stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("dns/taken.example.com"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("blocked") && line.contains("not managed by supervisor"),
        "{text}"
    );
    let out = cf.cli(&["status", "--json"], None).await;
    expect_code(&out, 1);
    let (line, report) = status_of(&out, "dns/taken.example.com");
    assert_eq!(line["status"], "blocked", "{report:#}");
    assert_eq!(report["problems"], true);

    // A hostname of our own, applied: in sync, exit 0.
    cf.project("shop", 3100, &[("api", Some("api.example.com"))]);
    let out = cf.cli(&["apply", "--auto-approve", "--force"], None).await;
    expect_code(&out, 0);
    let out = cf.cli(&["status", "--json"], None).await;
    expect_code(&out, 0);
    assert_eq!(
        status_of(&out, "dns/api.example.com").0["status"],
        "in_sync"
    );

    // Someone replaces our CNAME with their own record: blocked again, never "in sync".
    let ours = cf.record("api.example.com").id;
    let client = cf.client();
    client.delete_dns_record(&cf.zone, &ours).await.unwrap();
    cf.seed(json!({"type": "A", "name": "api.example.com", "content": "192.0.2.8", "ttl": 1}));
    let out = cf.cli(&["status", "--json"], None).await;
    expect_code(&out, 1);
    let (line, report) = status_of(&out, "dns/api.example.com");
    assert_eq!(line["status"], "blocked", "{report:#}");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("not managed by supervisor"),
        "{line}"
    );
}
