//! Time on adversarial input: each parser and scanner fed about a mebibyte (or the worst a limit lets
//! through) of text built to be slow — near-matches of every detector pattern, definitions nested
//! ever deeper, alias bombs, nesting far past any limit. The property tests
//! (`tests/hostile_input.rs`) check what these return; this measures how long they take, so a
//! quadratic corner shows up as a number.
//!
//! ```sh
//! cargo bench --bench hostile
//! ```
//!
//! Knobs: `HOSTILE_BENCH_BYTES` (the size of each adversarial text, default 1 MiB),
//! `HOSTILE_BENCH_RUNS` (runs per input, the median is printed; default 3). Each line prints the
//! input's size, the median time and the throughput; a second column at a quarter of the size
//! shows how the time grows (×4 the input should take about ×4 the time).

use std::time::{Duration, Instant};

use supervisor::engine::Plan;
use supervisor::knowledge::chunk::chunk_document;
use supervisor::knowledge::index::parse_jsonl;
use supervisor::secrets::detector;
use supervisor::store::DocumentKind;
use supervisor::timing::history::parse_history;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `unit` repeated to at least `bytes`.
fn repeat(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes / unit.len().max(1) + 1)
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// An input at a given size.
type Input = (&'static str, fn(usize) -> String);

fn detector_inputs() -> Vec<Input> {
    vec![
        ("random printable text", |n| {
            // A fixed xorshift stream of printable ASCII and spaces: the baseline.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (b' ' + (x % 95) as u8) as char
                })
                .collect()
        }),
        ("AWS key ids, one per word", |n| {
            repeat("AKIAIOSFODNN7EXAMPLQ ", n)
        }),
        ("private-key headers, no footer", |n| {
            repeat("-----BEGIN PRIVATE KEY-----\n", n)
        }),
        ("random tokens, commas, no spaces", |n| {
            repeat("aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF,", n)
        }),
        ("URL runs without whitespace", |n| {
            repeat("https://x.example/aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eFaa?", n)
        }),
        ("Slack webhook prefixes", |n| {
            repeat("https://hooks.slack.com/services/", n)
        }),
        ("password = \" openings", |n| repeat("password = \"", n)),
        ("JWT-like segments", |n| repeat("eyJhbGciOiJIUzI1NiJ9.", n)),
        ("GitHub tokens", |n| {
            repeat("ghp_1234567890abcdefghijABCDEFGHIJ123456 ", n)
        }),
        ("KEY= lines", |n| repeat("MY_API_KEY=\n", n)),
        ("one 1 MiB word", |n| "a".repeat(n)),
    ]
}

fn chunker_inputs() -> Vec<Input> {
    vec![
        ("definitions nested ever deeper", |n| {
            let mut s = String::new();
            let mut i = 0;
            while s.len() < n {
                s.push_str(&"\t".repeat(i));
                s.push_str(&format!("fn f{i}() {{\n"));
                i += 1;
            }
            s
        }),
        ("two-line paragraphs", |n| repeat("a\n\n", n)),
        ("short lines, no blank", |n| repeat("a\n", n)),
        ("one long line", |n| "é".repeat(n / 2)),
        ("headings only", |n| repeat("# h\n", n)),
        ("definitions only", |n| repeat("fn f() {\n", n)),
    ]
}

fn state_inputs() -> Vec<Input> {
    vec![
        ("nesting far past the limit", |n| {
            format!("name: {}", "[".repeat(n))
        }),
        ("a huge scalar", |n| {
            format!("name: shop\npath: {}\n", "a".repeat(n))
        }),
        ("many keys", |n| {
            let mut s = String::new();
            let mut i = 0;
            while s.len() < n {
                s.push_str(&format!("k{i}: {i}\n"));
                i += 1;
            }
            s
        }),
        ("alias bomb (9 levels × 9)", |_| {
            let mut s = String::from("a0: &a0 [\"lol\"]\n");
            for l in 1..9 {
                let refs = vec![format!("*a{}", l - 1); 9].join(", ");
                s.push_str(&format!("a{l}: &a{l} [{refs}]\n"));
            }
            s.push_str("name: shop\nchecks: *a8\n");
            s
        }),
    ]
}

fn jsonl_inputs() -> Vec<Input> {
    vec![
        ("one huge line", |n| {
            format!("{{\"task_id\": \"{}\"}}\n", "x".repeat(n))
        }),
        ("many good lines", |n| {
            let line = r#"{"task_id": "T-1", "description": "fix the form", "task_type": "bugfix", "project": "shop", "duration_seconds": 60}"#;
            let mut s = String::new();
            let mut i = 0;
            while s.len() < n {
                s.push_str(&line.replace("T-1", &format!("T-{i}")));
                s.push('\n');
                i += 1;
            }
            s
        }),
        ("nesting far past the limit", |n| {
            format!("{{\"task_id\": {}}}\n", "[".repeat(n))
        }),
    ]
}

fn row(what: &str, make: &dyn Fn(usize) -> String, bytes: usize, runs: usize, f: &dyn Fn(&str)) {
    let small = make(bytes / 4);
    let full = make(bytes);
    let t_small = median(runs, || f(&small));
    let t_full = median(runs, || f(&full));
    let mib_s = full.len() as f64 / (1 << 20) as f64 / t_full.as_secs_f64().max(1e-9);
    println!(
        "| {what} | {:.2} MiB | {:.1} ms | {:.1} ms | {:.1}× | {mib_s:.0} MiB/s |",
        full.len() as f64 / (1 << 20) as f64,
        t_small.as_secs_f64() * 1000.0,
        t_full.as_secs_f64() * 1000.0,
        t_full.as_secs_f64() / t_small.as_secs_f64().max(1e-9),
    );
}

fn main() {
    let bytes = env_number("HOSTILE_BENCH_BYTES", 1 << 20);
    let runs = env_number("HOSTILE_BENCH_RUNS", 3);
    println!(
        "Adversarial inputs, {runs} runs each (median): time at a quarter of the size, at the full size, and their ratio.\n"
    );
    println!("| input | size | time at ¼ | time | ratio | throughput |");
    println!("|---|---|---|---|---|---|");
    for (name, make) in detector_inputs() {
        row(&format!("detector: {name}"), &make, bytes, runs, &|t| {
            std::hint::black_box(detector::redact(t));
        });
    }
    for (name, make) in chunker_inputs() {
        for kind in [
            DocumentKind::Code,
            DocumentKind::Markdown,
            DocumentKind::Text,
        ] {
            row(
                &format!("chunker ({kind:?}): {name}"),
                &make,
                bytes,
                runs,
                &|t| {
                    std::hint::black_box(chunk_document(kind, t));
                },
            );
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let state = dir.path().join("state");
    for (name, make) in state_inputs() {
        row(&format!("state load: {name}"), &make, bytes, runs, &|t| {
            let _ = std::fs::remove_dir_all(&state);
            std::fs::create_dir_all(state.join("projects")).unwrap();
            std::fs::write(state.join("projects/shop.yaml"), t).unwrap();
            let outcome = supervisor::state::load(&state);
            assert!(outcome.is_err() || name == "a huge scalar", "{name} loaded");
        });
    }
    let now = chrono::Utc::now();
    for (name, make) in jsonl_inputs() {
        row(
            &format!("timing import: {name}"),
            &make,
            bytes,
            runs,
            &|t| {
                std::hint::black_box(parse_history("h.jsonl", t, now).ok());
            },
        );
        row(
            &format!("knowledge JSONL: {name}"),
            &make,
            bytes,
            runs,
            &|t| {
                std::hint::black_box(
                    parse_jsonl(std::path::Path::new("h.jsonl"), t.as_bytes()).ok(),
                );
            },
        );
    }
    const PLAN: &str = r#"{"format_version": "1", "desired_revision": "sha256:a", "observed_fingerprint": "sha256:b", "observed": {}, "scope": {}, "changes": [], "errors": [], "warnings": [], "summary": {"add": 0, "change": 0, "destroy": 0}}"#;
    row(
        "saved plan: blanks, then a plan",
        &|n| format!("{}{PLAN}", " ".repeat(n)),
        bytes,
        runs,
        &|t| {
            assert!(Plan::from_saved(t.as_bytes()).is_ok());
        },
    );
    row(
        "saved plan: nesting far past the limit",
        &|n| {
            PLAN.replace(
                "\"changes\": []",
                &format!("\"changes\": {}", "[".repeat(n)),
            )
        },
        bytes,
        runs,
        &|t| {
            assert!(Plan::from_saved(t.as_bytes()).is_err());
        },
    );
}
