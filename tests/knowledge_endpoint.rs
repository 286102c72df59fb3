//! Embeddings from an OpenAI-compatible endpoint: the real client against a local fake that follows
//! OpenAI's `/v1/embeddings` contract (tests/support/fake_embeddings.rs) — ordering, retries under the
//! HTTP policy, errors that name the call and never the key — and the CLI configured with
//! `[knowledge.endpoint]`, its API key read from the vault, on both backends. Changing the model
//! re-embeds, visibly in a dry run first.

mod support;

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use supervisor::clients::embeddings::EmbeddingsClient;
use supervisor::clients::{ApiError, HttpPolicy, RetryPolicy};
use support::fake_embeddings::{self, FakeEmbeddings, KEY};
use support::{Workspace, expect_code, stderr, stdout};

fn policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        },
    }
}

fn client(fake: &FakeEmbeddings, model: &str, key: &str) -> EmbeddingsClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    EmbeddingsClient::new(
        &fake.url,
        model,
        Some(SecretString::from(key.to_string())),
        None,
        policy(),
    )
    .unwrap()
}

#[tokio::test]
async fn vectors_come_back_in_input_order() {
    let fake = FakeEmbeddings::start(&["text-embedding-3-small"]).await;
    let c = client(&fake, "text-embedding-3-small", KEY);
    let input = vec![
        "alpha beta".to_string(),
        "gamma".into(),
        "delta epsilon".into(),
    ];
    let v = c.embed(&input).await.unwrap();
    assert_eq!(v.len(), 3);
    for (got, text) in v.iter().zip(&input) {
        assert_eq!(
            got,
            &fake_embeddings::vector(text, fake_embeddings::DIMENSIONS)
        );
    }
    assert_eq!(fake.calls(), 1);
    assert_eq!(
        fake.last_authorization().as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(c.embed(&[]).await.unwrap().is_empty());
    assert_eq!(fake.calls(), 1, "nothing to embed, no call");
}

#[tokio::test]
async fn server_errors_are_retried_and_429_waits_for_retry_after() {
    let fake = FakeEmbeddings::start(&["m"]).await;
    let c = client(&fake, "m", KEY);
    fake.fail_next(&[500, 503]);
    let v = c.embed(&["x".to_string()]).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(
        fake.calls(),
        3,
        "embedding is idempotent: retried after 5xx"
    );

    fake.rate_limit_next(1);
    let started = Instant::now();
    c.embed(&["y".to_string()]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(fake.calls(), 5);

    fake.fail_next(&[500, 500, 500]);
    let err = c.embed(&["z".to_string()]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::Server {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn errors_name_the_call_and_never_the_key() {
    let fake = FakeEmbeddings::start(&["m"]).await;
    let wrong = "sk-wrong-key-ABCDEFGHIJKLMNOPQRSTUV";
    let err = client(&fake, "m", wrong)
        .embed(&["x".to_string()])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ApiError::Auth { status: 401, .. }), "{msg}");
    assert!(
        msg.contains("POST /embeddings") && msg.contains("Incorrect API key"),
        "{msg}"
    );
    assert!(
        !msg.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{msg}"
    );
    assert_eq!(fake.calls(), 1, "a 401 is not retried");

    let err = client(&fake, "no-such-model", KEY)
        .embed(&["x".to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Rejected { status: 404, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("`no-such-model` does not exist"),
        "{err}"
    );
}

cli_conformance!(the_cli_embeds_through_a_configured_endpoint_with_a_vault_key,);

const VAULT_KEY: &str = "5f0c8e1ab1d6e0a4c3b2a19f8e7d6c5b4a392817161514131211100f0e0d0c0b";

fn config(ws: &Workspace, url: &str, model: &str) {
    ws.write(
        "supervisor.toml",
        &format!(
            "[knowledge.endpoint]\nurl = \"{url}\"\nmodel = \"{model}\"\napi_key = \"secret:meta/openai/api_key\"\n"
        ),
    );
}

fn run(ws: &Workspace, args: &[&str], code: i32) -> std::process::Output {
    let o = ws
        .cmd()
        .env("SECRETS_ENCRYPTION_KEY", VAULT_KEY)
        .args(args)
        .output()
        .unwrap();
    expect_code(&o, code);
    o
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

async fn the_cli_embeds_through_a_configured_endpoint_with_a_vault_key(ws: Workspace) {
    let fake = FakeEmbeddings::start(&["text-embedding-3-small", "text-embedding-3-large"]).await;
    ws.write("docs/a.md", "# Billing\n\nInvoices are exported as CSV.\n\n# Accounts\n\nPasswords are reset in settings.\n");
    ws.write("docs/b.txt", "Support answers within a day.\n");
    config(&ws, &fake.url, "text-embedding-3-small");

    // No key in the vault yet: a clear error naming the path, nothing indexed.
    let o = run(&ws, &["knowledge", "index", "docs"], 1);
    assert!(stderr(&o).contains("meta/openai/api_key"), "{}", stderr(&o));
    assert_eq!(fake.calls(), 0);

    let mut set = ws
        .cmd()
        .env("SECRETS_ENCRYPTION_KEY", VAULT_KEY)
        .args(["secrets", "set", "meta/openai/api_key"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        set.stdin.take().unwrap().write_all(KEY.as_bytes()).unwrap();
    }
    assert!(set.wait().unwrap().success());

    let r = json(&run(&ws, &["knowledge", "index", "docs", "--json"], 0));
    assert_eq!(r["model"], "text-embedding-3-small");
    assert_eq!(
        (r["added"].as_i64(), r["chunks_embedded"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(fake.inputs(), 3);

    let s = json(&run(
        &ws,
        &["knowledge", "search", "export invoices csv", "--json"],
        0,
    ));
    assert_eq!(s["strategy"], "hybrid");
    assert_eq!(s["model"], "text-embedding-3-small");
    assert_eq!(s["results"][0]["title"], "Billing");

    // Another model: a dry run shows the re-embedding and calls nothing; the run re-embeds everything.
    config(&ws, &fake.url, "text-embedding-3-large");
    let before = fake.inputs();
    let r = json(&run(
        &ws,
        &["knowledge", "index", "docs", "--dry-run", "--json"],
        0,
    ));
    assert_eq!(
        (r["reembedded"].as_i64(), r["chunks_embedded"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(fake.inputs(), before);
    // Until then, the new model's search finds no vectors and says why.
    let s = json(&run(
        &ws,
        &["knowledge", "search", "export invoices", "--json"],
        0,
    ));
    let notes = s["notes"].to_string();
    assert!(
        notes.contains("embedded with text-embedding-3-small"),
        "{notes}"
    );
    let r = json(&run(&ws, &["knowledge", "index", "docs", "--json"], 0));
    assert_eq!(
        (r["reembedded"].as_i64(), r["chunks_embedded"].as_i64()),
        (Some(2), Some(3))
    );
    let l = json(&run(&ws, &["knowledge", "list", "--json"], 0));
    assert_eq!(
        l["sources"][0]["models"],
        serde_json::json!({"text-embedding-3-large": 3})
    );

    // The key never reaches any output.
    for o in [
        run(&ws, &["knowledge", "index", "docs", "-vvv"], 0),
        run(&ws, &["knowledge", "search", "support", "-vvv"], 0),
    ] {
        assert!(!stdout(&o).contains(KEY) && !stderr(&o).contains(KEY));
    }
}
