//! Claude Code, registered exactly as `examples/claude-code.md` says, connects to the meta and project
//! endpoints over HTTP (with tokens) and stdio, and validates every tool's schemas without a warning
//! (it used to print one per non-standard integer format: `unknown format "uint16" ignored in schema …`).
//! `claude mcp list` needs no API key; HOME is a temporary directory so nothing of the user's is read.

mod support;

use std::process::Command;

use support::Workspace;
use support::mcp::{Server, claude, create_token};

const NOTES: &str = "name: notes\nservices:\n  - name: app\n  - name: search\n";

fn claude_in(home: &std::path::Path, cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(claude())
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("ANTHROPIC_API_KEY")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .output()
        .expect("run claude")
}

#[tokio::test]
async fn claude_code_connects_to_every_endpoint_without_a_schema_warning() {
    let ws = Workspace::new(None);
    ws.write("state/projects/notes.yaml", NOTES);
    ws.ok(&["apply", "--auto-approve"], 0);
    let server = Server::start(&ws, &[]).await;
    let (meta_token, _) = create_token(&ws, None);
    let (notes_token, _) = create_token(&ws, Some("notes"));
    let home = tempfile::tempdir().unwrap();
    let bin = support::bin();
    let bin = bin.to_str().unwrap();
    let registrations: Vec<Vec<String>> = vec![
        vec![
            "--transport".into(),
            "http".into(),
            "meta".into(),
            server.url("/mcp/meta"),
            "--header".into(),
            format!("Authorization: Bearer {meta_token}"),
        ],
        vec![
            "--transport".into(),
            "http".into(),
            "notes".into(),
            server.url("/mcp/notes"),
            "--header".into(),
            format!("Authorization: Bearer {notes_token}"),
        ],
        vec![
            "stdio-notes".into(),
            "--".into(),
            bin.into(),
            "mcp".into(),
            "--project".into(),
            "notes".into(),
        ],
        vec![
            "stdio-meta".into(),
            "--".into(),
            bin.into(),
            "mcp".into(),
            "--meta".into(),
        ],
    ];
    for r in &registrations {
        let mut args = vec!["mcp", "add"];
        args.extend(r.iter().map(String::as_str));
        let out = claude_in(home.path(), ws.path(), &args);
        assert!(
            out.status.success(),
            "claude mcp add {r:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tokio::task::spawn_blocking({
        let (home, cwd) = (home.path().to_path_buf(), ws.path().to_path_buf());
        move || claude_in(&home, &cwd, &["mcp", "list"])
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["meta", "notes", "stdio-notes", "stdio-meta"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} is not listed:\n{text}"));
        assert!(line.contains("Connected"), "{line}\n{text}");
    }
    assert!(
        !text.contains("unknown format") && !text.contains("ignored in schema"),
        "schema warnings:\n{text}"
    );
}
