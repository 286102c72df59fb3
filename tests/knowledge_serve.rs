//! `serve` keeps the knowledge folders a project declares (`knowledge: [docs]`) indexed: at start, after
//! files change, when the declared folders change — with the offline model, on both backends.

mod support;

use std::time::{Duration, Instant};

use supervisor::store::Store;
use support::Workspace;
use support::mcp::Server;

cli_conformance!(serve_keeps_declared_folders_indexed);

/// Polls the store until `check` holds (60 s at most).
async fn until<F>(store: &dyn Store, what: &str, server: &Server, check: F)
where
    F: Fn(&[supervisor::store::DocumentRecord], &[supervisor::store::DocumentRecord]) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let docs = store.knowledge_documents("shop", "docs").await.unwrap();
        let notes = store.knowledge_documents("shop", "notes").await.unwrap();
        if check(&docs, &notes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s; docs: {:?}\nnotes: {:?}\nserve log:\n{}",
            docs.iter().map(|d| &d.document).collect::<Vec<_>>(),
            notes.iter().map(|d| &d.document).collect::<Vec<_>>(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn serve_keeps_declared_folders_indexed(ws: Workspace) {
    let root = ws.path().canonicalize().unwrap();
    let shop = root.join("shop");
    ws.write("state/supervisor.yaml", "");
    let project = |folders: &str| {
        format!(
            "name: shop\npath: {}\nknowledge: [{folders}]\n",
            shop.display()
        )
    };
    ws.write("state/projects/shop.yaml", &project("docs"));
    ws.write(
        "supervisor.toml",
        &format!(
            "[serve]\ndebounce_millis = 100\n\n[knowledge]\nmodel_dir = \"{}\"\n",
            support::model::model_dir().display()
        ),
    );
    ws.write(
        "shop/docs/deploy.md",
        "# Deploy\n\nUse the blue-green script.\n",
    );
    ws.write("shop/notes/todo.txt", "Rotate the keys in March.\n");
    let server = Server::start(&ws, &["--no-auth"]).await;
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let doc = |name: &str| shop.join("docs").join(name).display().to_string();

    until(
        store.as_ref(),
        "the folder indexed at start",
        &server,
        |docs, notes| {
            docs.len() == 1
                && docs[0].document == doc("deploy.md")
                && docs[0].model.as_deref() == Some("all-MiniLM-L6-v2")
                && notes.is_empty()
        },
    )
    .await;

    ws.write(
        "shop/docs/rollback.md",
        "# Rollback\n\nSwap the symlink back.\n",
    );
    until(store.as_ref(), "a new file indexed", &server, |docs, _| {
        docs.iter().any(|d| d.document == doc("rollback.md"))
    })
    .await;
    let before = store.knowledge_documents("shop", "docs").await.unwrap();
    let old_hash = before
        .iter()
        .find(|d| d.document == doc("deploy.md"))
        .map(|d| d.content_hash.clone())
        .unwrap();

    ws.write(
        "shop/docs/deploy.md",
        "# Deploy\n\nUse the canary script now.\n",
    );
    until(
        store.as_ref(),
        "a changed file re-indexed",
        &server,
        |docs, _| {
            docs.iter()
                .any(|d| d.document == doc("deploy.md") && d.content_hash != old_hash)
        },
    )
    .await;

    ws.remove("shop/docs/rollback.md");
    until(
        store.as_ref(),
        "a deleted file dropped",
        &server,
        |docs, _| docs.len() == 1,
    )
    .await;

    // A folder added to the desired state is indexed too.
    ws.write("state/projects/shop.yaml", &project("docs, notes"));
    until(
        store.as_ref(),
        "a newly declared folder indexed",
        &server,
        |_, notes| notes.len() == 1 && notes[0].chunk_count == 1,
    )
    .await;

    // And it is searchable like anything indexed by hand.
    let o = ws
        .cmd()
        .env("SUPERVISOR_MODEL_DIR", support::model::model_dir())
        .args([
            "knowledge",
            "search",
            "canary",
            "--project",
            "shop",
            "--json",
        ])
        .output()
        .unwrap();
    support::expect_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&support::stdout(&o)).unwrap();
    assert_eq!(v["results"][0]["title"], "Deploy");
    assert_eq!(v["results"][0]["source"], "docs");
}
