//! `search_knowledge` and `add_learning` through the official Python MCP SDK, on a project endpoint,
//! on `/mcp/meta` and over stdio, on both backends: project scoping (a project endpoint sees its own
//! knowledge and the shared sources, never another project's), learnings found by later agents of the
//! same project only, tens of concurrent calls, and a credential planted in an indexed file never
//! returned.

mod support;

use serde_json::{Value, json};
use support::Workspace;
use support::mcp::{PyClient, Server, create_token, run_all, tool_err, tool_ok};

cli_conformance!(
    knowledge_tools_are_scoped_to_the_endpoints_project,
    learnings_reach_later_agents_of_the_same_project_only,
    tens_of_concurrent_searches_all_succeed,
);

const TOKEN: &str = "ghp_Pl4ntedT0kenNeverReturned0123456789ab";

/// Projects shop and blog, each with indexed docs (shop's with a planted credential), and a shared
/// handbook; the offline model configured for `serve` and the CLI.
fn fixture(ws: &Workspace) {
    let root = ws.path().canonicalize().unwrap();
    ws.write("state/supervisor.yaml", "");
    for p in ["shop", "blog"] {
        ws.write(
            &format!("state/projects/{p}.yaml"),
            &format!("name: {p}\npath: {}\n", root.join(p).display()),
        );
    }
    ws.write(
        "supervisor.toml",
        &format!(
            "[knowledge]\nmodel_dir = \"{}\"\n",
            support::model::model_dir().display()
        ),
    );
    ws.write(
        "shop/docs/deploy.md",
        &format!("# Deploy\n\nThe shop deploys with the blue-green script.\nDeploy token: {TOKEN}\n\n# Payments\n\nStripe webhooks are verified before the order is paid.\n"),
    );
    ws.write(
        "blog/docs/deploy.md",
        "# Deploy\n\nThe blog deploys by pushing to the pages branch.\n",
    );
    ws.write(
        "handbook/review.md",
        "# Reviews\n\nEvery deploy needs a reviewed changelog entry.\n",
    );
    ws.ok(&["knowledge", "index", "shop/docs", "--project", "shop"], 0);
    ws.ok(&["knowledge", "index", "blog/docs", "--project", "blog"], 0);
    ws.ok(&["knowledge", "index", "handbook"], 0);
}

fn search(query: &str, extra: Value) -> Value {
    let mut args = json!({"query": query});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    json!({"op": "call", "name": "search_knowledge", "arguments": args})
}

/// (project, source, title) of each result.
fn hits(result: &Value) -> Vec<(Option<String>, String, String)> {
    tool_ok(result)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["project"].as_str().map(str::to_string),
                h["source"].as_str().unwrap().to_string(),
                h["title"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn projects(result: &Value) -> Vec<Option<String>> {
    let mut p: Vec<Option<String>> = hits(result).into_iter().map(|h| h.0).collect();
    p.sort();
    p.dedup();
    p
}

async fn knowledge_tools_are_scoped_to_the_endpoints_project(ws: Workspace) {
    fixture(&ws);
    let (shop, _) = create_token(&ws, Some("shop"));
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;
    let reports = run_all(vec![
        (
            PyClient::http(&server.url("/mcp/shop")).token(&shop),
            json!([
                {"op": "list_tools"},
                search("how does the project deploy", json!({})),
                search("how does the project deploy", json!({"project": "blog"})),
                search(TOKEN, json!({})),
                search("deploy token", json!({"limit": 100})),
                search("deploy", json!({"limit": 0})),
                search("deploy", json!({"sources": ["handbook"]})),
            ]),
        ),
        (
            PyClient::http(&server.url("/mcp/meta")).token(&meta),
            json!([
                search("how does the project deploy", json!({"limit": 10})),
                search("how does the project deploy", json!({"project": "blog"})),
                search("deploy", json!({"project": "news"})),
            ]),
        ),
        (
            PyClient::stdio(&ws, &["mcp", "--project", "blog"]),
            json!([
                search("how does the project deploy", json!({})),
                search("stripe webhooks", json!({})),
            ]),
        ),
    ])
    .await;

    let r = PyClient::expect_connected(&reports[0]);
    let tools = r[0]["tools"].as_array().unwrap();
    for name in ["search_knowledge", "add_learning"] {
        let t = tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t["input_schema"]["type"], "object");
        assert_eq!(t["output_schema"]["type"], "object");
        let schemas = format!("{}{}", t["input_schema"], t["output_schema"]);
        for f in [
            "\"int32\"",
            "\"int64\"",
            "\"uint\"",
            "\"double\"",
            "\"float\"",
        ] {
            assert!(
                !schemas.contains(f),
                "{name}: non-standard format {f}: {schemas}"
            );
        }
    }
    // Shop: its own docs first, the shared handbook too, never the blog.
    let shop_hits = hits(&r[1]);
    assert_eq!(
        shop_hits[0],
        (Some("shop".into()), "docs".into(), "Deploy".into()),
        "{:#}",
        r[1]
    );
    assert_eq!(projects(&r[1]), [None, Some("shop".into())]);
    let first = &tool_ok(&r[1])["hits"][0];
    assert!(
        first["document"]
            .as_str()
            .unwrap()
            .ends_with("shop/docs/deploy.md")
    );
    assert_eq!(
        (first["line_start"].as_i64(), first["line_end"].as_i64()),
        (Some(1), Some(4))
    );
    assert_eq!(tool_ok(&r[1])["strategy"], "hybrid");
    assert!(
        tool_err(&r[2]).contains("serves project `shop` only"),
        "{:#}",
        r[2]
    );
    // The planted credential is never returned, whatever is asked.
    for i in [3, 4] {
        let text = r[i].to_string();
        assert!(!text.contains(&TOKEN[10..]), "{text}");
    }
    assert!(r[4].to_string().contains("[REDACTED:github_token]"));
    assert!(
        tool_err(&r[5]).contains("limit must be 1 to 100"),
        "{:#}",
        r[5]
    );
    assert_eq!(projects(&r[6]), [None]);

    // Meta: every project, or one project plus the shared sources; an unknown project is an error.
    let r = PyClient::expect_connected(&reports[1]);
    assert_eq!(
        projects(&r[0]),
        [None, Some("blog".into()), Some("shop".into())]
    );
    assert_eq!(projects(&r[1]), [None, Some("blog".into())]);
    assert!(tool_err(&r[2]).contains("no project `news`"), "{:#}", r[2]);

    // stdio, confined to blog.
    let r = PyClient::expect_connected(&reports[2]);
    assert_eq!(
        hits(&r[0])[0],
        (Some("blog".into()), "docs".into(), "Deploy".into())
    );
    assert!(projects(&r[1]).iter().all(|p| p.as_deref() != Some("shop")));
}

async fn learnings_reach_later_agents_of_the_same_project_only(ws: Workspace) {
    fixture(&ws);
    let (shop, _) = create_token(&ws, Some("shop"));
    let (blog, _) = create_token(&ws, Some("blog"));
    let (meta, _) = create_token(&ws, None);
    let server = Server::start(&ws, &[]).await;
    let learn = |args: Value| json!({"op": "call", "name": "add_learning", "arguments": args});
    let first = run_all(vec![
        (
            PyClient::http(&server.url("/mcp/shop")).token(&shop),
            json!([
                learn(json!({"title": "Migrations need a lock timeout", "text": "Run migrations with lock_timeout = 5s or the checkout table blocks.", "tags": ["database"]})),
                learn(json!({"title": "x", "text": "y", "project": "blog"})),
                learn(json!({"title": "", "text": "y"})),
                learn(json!({"title": "Token", "text": format!("the key is {TOKEN}")})),
            ]),
        ),
        (
            PyClient::http(&server.url("/mcp/meta")).token(&meta),
            json!([learn(json!({"title": "Ask before deleting data", "text": "Never drop a table without a backup and a human's yes."}))]),
        ),
    ])
    .await;
    let r = PyClient::expect_connected(&first[0]);
    let rec = tool_ok(&r[0]);
    assert_eq!(rec["project"], "shop");
    assert_eq!(rec["source"], "learnings");
    assert_eq!(rec["model"], "all-MiniLM-L6-v2");
    assert!(rec["id"].as_str().unwrap().starts_with("learning-"));
    assert!(tool_err(&r[1]).contains("serves project `shop` only"));
    assert!(tool_err(&r[2]).contains("title must be 1 to 200 characters"));
    assert_eq!(tool_ok(&r[3])["secrets_masked"], 1);
    let r = PyClient::expect_connected(&first[1]);
    assert_eq!(
        tool_ok(&r[0])["project"],
        Value::Null,
        "meta without a project: shared"
    );

    // A later agent of shop finds its project's learning and the shared one; blog only the shared one.
    let later = run_all(vec![
        (
            PyClient::http(&server.url("/mcp/shop")).token(&shop),
            json!([
                search(
                    "database migration locks",
                    json!({"sources": ["learnings"]})
                ),
                search("token", json!({"sources": ["learnings"]}))
            ]),
        ),
        (
            PyClient::http(&server.url("/mcp/blog")).token(&blog),
            json!([search(
                "database migration locks",
                json!({"sources": ["learnings"]})
            )]),
        ),
    ])
    .await;
    let r = PyClient::expect_connected(&later[0]);
    let titles: Vec<String> = hits(&r[0]).into_iter().map(|h| h.2).collect();
    assert_eq!(titles[0], "Migrations need a lock timeout", "{titles:?}");
    assert!(titles.contains(&"Ask before deleting data".to_string()));
    assert!(!r[1].to_string().contains(&TOKEN[10..]));
    let r = PyClient::expect_connected(&later[1]);
    let titles: Vec<String> = hits(&r[0]).into_iter().map(|h| h.2).collect();
    assert_eq!(titles, ["Ask before deleting data"]);
}

async fn tens_of_concurrent_searches_all_succeed(ws: Workspace) {
    fixture(&ws);
    let (shop, _) = create_token(&ws, Some("shop"));
    let server = Server::start(&ws, &[]).await;
    let url = server.url("/mcp/shop");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = PyClient::http(&url).token(&shop).mode("auto");
        tasks.push(tokio::spawn(async move {
            client
                .run(json!([
                    search(&format!("how does the shop deploy {i}"), json!({})),
                    {"op": "call", "name": "add_learning", "arguments": {"title": format!("note {i}"), "text": format!("concurrent learning number {i}")}},
                    search("stripe webhooks", json!({"limit": 3})),
                ]))
                .await
        }));
    }
    for t in tasks {
        let report = t.await.unwrap();
        let r = PyClient::expect_connected(&report);
        assert_eq!(hits(&r[0])[0].2, "Deploy");
        assert_eq!(tool_ok(&r[1])["project"], "shop");
        assert_eq!(hits(&r[2])[0].2, "Payments");
        assert!(projects(&r[2]).iter().all(|p| p.as_deref() != Some("blog")));
    }
    let listed: Value =
        serde_json::from_str(&ws.ok(&["knowledge", "list", "--project", "shop", "--json"], 0))
            .unwrap();
    let learnings = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "learnings")
        .unwrap();
    assert_eq!(learnings["documents"], 20);
}
