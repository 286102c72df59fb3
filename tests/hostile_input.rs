//! Hostile input: property tests that feed every parser and validator the supervisor exposes what an
//! attacker (or a broken tool) would — arbitrary bytes, invalid UTF-8, deep nesting, huge values,
//! near-valid documents with one thing wrong — and check that the answer is an error naming what and
//! where, never a panic, and that nothing is written or applied on a refusal.
//!
//! Targets (one test each, `target_…`): state parsing and validation, the saved-plan reader, the
//! knowledge chunker, the JSONL readers (`timing import`, `timing estimate --batch`,
//! `knowledge index --jsonl`), the credential detector, and every MCP tool's arguments on both endpoint
//! kinds (in process, over rmcp's stdio transport, on SQLite and on PostgreSQL).
//!
//! Case counts: each target has a small default so the whole file runs in well under a minute in
//! debug; `PROPTEST_CASES=N` overrides it for every target (the long runs in `docs/reliability.md`).
//! Each target prints `hostile_input <target>: <executions> executions, 0 crashes, <time>` when it
//! passes (a crash — a panic, a hang, a write on refusal — fails it with the minimal input).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How many cases of a target took each way (printed with the executions).
struct Outcomes(Vec<(&'static str, AtomicU64)>);

impl Outcomes {
    fn new(names: &[&'static str]) -> Self {
        Outcomes(names.iter().map(|n| (*n, AtomicU64::new(0))).collect())
    }

    fn count(&self, name: &str) {
        if let Some((_, c)) = self.0.iter().find(|(n, _)| *n == name) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn print(&self, target: &str) {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, c)| format!("{} {n}", c.load(Ordering::Relaxed)))
            .collect();
        eprintln!("hostile_input {target}: outcomes: {}", parts.join(", "));
    }
}

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---------------------------------------------------------------------------------------------------
// Running a target

/// The number of cases of a target: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `test` on `cases(default)` values of `strategy`; panics with the minimal failing input, or
/// prints how many executions passed.
fn run<S: Strategy>(
    target: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(default),
        failure_persistence: None,
        // Generated documents can be large; a failing case is shrunk, but not for ever.
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let executions = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    if let Err(e) = result {
        panic!("hostile_input {target}: {e}");
    }
    eprintln!(
        "hostile_input {target}: {} executions, 0 crashes, {:.1} s",
        executions.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

/// `text` shortened for an assertion message.
fn short(text: &str) -> String {
    if text.chars().count() <= 300 {
        text.to_string()
    } else {
        format!(
            "{}…({} chars)",
            text.chars().take(300).collect::<String>(),
            text.chars().count()
        )
    }
}

/// Bytes with a bias toward what breaks parsers: structure characters, quotes, line breaks, NUL,
/// bytes that start or continue UTF-8 sequences.
fn hostile_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        3 => prop::sample::select(b"{}[]:,-&*!|>'\"#%@`\n\t \\\0".to_vec()),
        2 => prop::sample::select(vec![0x80u8, 0xbf, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff]),
        3 => prop::sample::select(b"abcnameportservices0123456789".to_vec()),
    ];
    prop::collection::vec(byte, 0..max)
}

// ---------------------------------------------------------------------------------------------------
// YAML documents: a tree rendered in block or flow style, with anchors and aliases

#[derive(Debug, Clone)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// The text and how it is quoted: 0 plain, 1 single, 2 double.
    Str(String, u8),
    /// Items; rendered in flow style (`[a, b]`) when the flag is set.
    Seq(Vec<Yaml>, bool),
    Map(Vec<(String, Yaml)>, bool),
    /// `&aN value`
    Anchor(u8, Box<Yaml>),
    /// `*aN`
    Alias(u8),
}

fn quoted(s: &str, style: u8) -> String {
    match style {
        1 => format!("'{}'", s.replace('\'', "''")),
        2 => serde_json::to_string(s).unwrap(),
        _ => s.to_string(),
    }
}

impl Yaml {
    fn is_block_collection(&self) -> bool {
        match self {
            Yaml::Seq(items, false) => !items.is_empty(),
            Yaml::Map(entries, false) => !entries.is_empty(),
            Yaml::Anchor(_, inner) => inner.is_block_collection(),
            _ => false,
        }
    }

    fn flow(&self) -> String {
        match self {
            Yaml::Null => "null".into(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Int(i) => i.to_string(),
            Yaml::Float(f) => format!("{f:?}"),
            Yaml::Str(s, style) => quoted(s, *style),
            Yaml::Seq(items, _) => format!(
                "[{}]",
                items.iter().map(Yaml::flow).collect::<Vec<_>>().join(", ")
            ),
            Yaml::Map(entries, _) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.flow()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Yaml::Anchor(n, inner) => format!("&a{n} {}", inner.flow()),
            Yaml::Alias(n) => format!("*a{n}"),
        }
    }

    /// Block style at `indent` spaces; `out` gets whole lines.
    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Yaml::Seq(items, false) if !items.is_empty() => {
                for item in items {
                    if item.is_block_collection() {
                        out.push_str(&format!("{pad}-\n"));
                        item.block(indent + 2, out);
                    } else {
                        out.push_str(&format!("{pad}- {}\n", item.flow()));
                    }
                }
            }
            Yaml::Map(entries, false) if !entries.is_empty() => {
                for (k, v) in entries {
                    if v.is_block_collection() {
                        match v {
                            Yaml::Anchor(n, inner) => {
                                out.push_str(&format!("{pad}{k}: &a{n}\n"));
                                inner.block(indent + 2, out);
                            }
                            _ => {
                                out.push_str(&format!("{pad}{k}:\n"));
                                v.block(indent + 2, out);
                            }
                        }
                    } else {
                        out.push_str(&format!("{pad}{k}: {}\n", v.flow()));
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", other.flow())),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.block(0, &mut out);
        out
    }
}

/// Keys of the state files, so generated documents reach the validator, not only the parser.
const STATE_KEYS: &[&str] = &[
    "name",
    "path",
    "port_range",
    "services",
    "port",
    "hostname",
    "prevent_destroy",
    "secrets",
    "required",
    "checks",
    "knowledge",
    "instructions",
    "instructions_dir",
    "api_keys",
    "ports",
    "projects",
    "start",
    "end",
    "block",
    "shared",
    "shared_services",
    "cloudflare",
    "zone",
    "account_id",
    "api_token",
    "tunnel",
    "id",
    "mode",
    "config_path",
    "credentials_file",
    "reload",
    "gcloud",
    "credentials",
    "vms",
    "gcp_project",
    "project",
    "machine_type",
    "running",
    "budget",
    "meta_path",
    "display_name",
    "restrict_apis",
    "store",
    "target",
    "host",
];

/// Strings that mean something to the validator, or to a file system, or to YAML.
const STATE_STRINGS: &[&str] = &[
    "shop",
    "alpha",
    "beta",
    "api",
    "web",
    "Shop",
    "a b",
    "",
    " ",
    "..",
    "../beta",
    "alpha/../beta",
    "/etc/passwd",
    "projects/../../x",
    "secret:meta/cloudflare/api_token",
    "secret:../x",
    "secret:",
    "api.example.com",
    "*.example.com",
    "example.com.",
    "-bad-.example.com",
    "local",
    "remote",
    "e2-standard-4",
    "us-central1-a",
    "my-gcp-project",
    "project/shop/db_password",
    "meta/x",
    "service/shop/api/key",
    "project/beta/../../meta/x",
    "cargo test",
    "true",
    "~",
    "null",
    "yes",
    "0x10",
    "1e9",
    "3000",
    "-1",
    "65536",
    "\u{0}",
    "\u{202e}evil",
    "名前",
    "\t",
    "#",
    "- x",
    "ghp_1234567890abcdefghijABCDEFGHIJ123456",
];

fn state_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(STATE_STRINGS).prop_map(str::to_string),
        2 => "\\PC{0,40}",
        1 => "[a-z][a-z0-9-]{0,70}",
    ]
}

fn scalar() -> impl Strategy<Value = Yaml> {
    prop_oneof![
        1 => Just(Yaml::Null),
        1 => any::<bool>().prop_map(Yaml::Bool),
        2 => prop_oneof![
            -100i64..70_000,
            any::<i64>(),
            prop::sample::select(vec![0i64, 1, 80, 443, 1023, 1024, 3000, 9000, 65535, 65536]),
        ]
        .prop_map(Yaml::Int),
        1 => prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(1e308)]
            .prop_map(Yaml::Float),
        4 => (state_string(), 0u8..3).prop_map(|(s, q)| Yaml::Str(s, q)),
        1 => (0u8..4).prop_map(Yaml::Alias),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(STATE_KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
        1 => "\\PC{1,12}".prop_map(|s| quoted(&s, 2)),
        1 => Just("<<".to_string()),
    ]
}

fn yaml_tree() -> impl Strategy<Value = Yaml> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            3 => (prop::collection::vec((key(), inner.clone()), 0..8), prop::bool::weighted(0.2))
                .prop_map(|(entries, flow)| Yaml::Map(entries, flow)),
            2 => (prop::collection::vec(inner.clone(), 0..6), prop::bool::weighted(0.3))
                .prop_map(|(items, flow)| Yaml::Seq(items, flow)),
            1 => (0u8..4, inner).prop_map(|(n, v)| Yaml::Anchor(n, Box::new(v))),
        ]
    })
}

/// A document whose top level is a mapping (as state files are).
fn yaml_document() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), yaml_tree()), 0..8)
        .prop_map(|entries| Yaml::Map(entries, false).render())
}

// ---------------------------------------------------------------------------------------------------
// Near-valid state: well-formed files whose values are drawn from edge cases, so cross-file rules
// (blocks, pins, hostnames, secrets, api keys) run on them.

fn port() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 20_000i64..20_400,
        1 => prop::sample::select(vec![-1i64, 0, 1, 1023, 9000, 9099, 65535, 65536, 1 << 40]),
    ]
}

fn service() -> impl Strategy<Value = Yaml> {
    (
        prop::sample::select(vec![
            "api",
            "web",
            "db",
            "worker",
            "api",
            "Bad Name",
            "x".repeat(80).leak(),
        ]),
        prop::option::weighted(0.4, port()),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![
                "api.example.com",
                "web.example.com",
                "api.example.com",
                "bad_host",
                "*.example.com",
                "x.other.org",
                "EXAMPLE.com.",
            ]),
        ),
        prop::option::weighted(0.2, any::<bool>()),
    )
        .prop_map(|(name, port, hostname, protect)| {
            let mut m = vec![("name".to_string(), Yaml::Str(name.into(), 0))];
            if let Some(p) = port {
                m.push(("port".into(), Yaml::Int(p)));
            }
            if let Some(h) = hostname {
                m.push(("hostname".into(), Yaml::Str(h.into(), 0)));
            }
            if let Some(b) = protect {
                m.push(("prevent_destroy".into(), Yaml::Bool(b)));
            }
            Yaml::Map(m, false)
        })
}

/// Mostly one of `valid`, sometimes anything.
fn valid_or_not(valid: &[&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(valid.to_vec()).prop_map(str::to_string),
        1 => state_string(),
    ]
}

fn project_doc() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec!["alpha", "beta", "gamma", "alpha", "Bad", "a--b"]),
        prop::bool::weighted(0.9),
        prop::option::weighted(
            0.5,
            prop_oneof![3 => prop::sample::select(vec![20_000i64, 20_100, 20_200]), 1 => port()],
        ),
        prop::collection::vec(service(), 0..5),
        prop::collection::vec(
            valid_or_not(&[
                "project/alpha/db_password",
                "service/beta/api/key",
                "meta/x",
            ]),
            0..3,
        ),
        prop::collection::vec(
            valid_or_not(&["cargo test", "true", "npm run lint -- --fix"]),
            0..3,
        ),
        prop::collection::vec(valid_or_not(&["docs", "src/", "./notes"]), 0..3),
        prop::option::weighted(0.1, yaml_tree()),
    )
        .prop_map(
            |(file, same_name, range, services, secrets, checks, knowledge, extra)| {
                let name = if same_name { file } else { "other" };
                let mut m = vec![("name".to_string(), Yaml::Str(name.into(), 0))];
                if let Some(r) = range {
                    m.push(("port_range".into(), Yaml::Int(r)));
                }
                m.push(("services".into(), Yaml::Seq(services, false)));
                let strs = |v: Vec<String>| {
                    Yaml::Seq(v.into_iter().map(|s| Yaml::Str(s, 2)).collect(), true)
                };
                if !secrets.is_empty() {
                    m.push((
                        "secrets".into(),
                        Yaml::Map(vec![("required".into(), strs(secrets))], false),
                    ));
                }
                if !checks.is_empty() {
                    m.push(("checks".into(), strs(checks)));
                }
                if !knowledge.is_empty() {
                    m.push(("knowledge".into(), strs(knowledge)));
                }
                if let Some(extra) = extra {
                    m.push(("api_keys".into(), extra));
                }
                (file.to_string(), Yaml::Map(m, false).render())
            },
        )
}

fn supervisor_doc() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            3 => Just((20_000i64, 20_999i64, 100i64)),
            1 => (port(), port(), prop::sample::select(vec![0i64, 1, 10, 100, 1000, 70_000])),
        ],
        prop::collection::vec(
            (
                valid_or_not(&["redis", "pg", "cache"]),
                prop_oneof![3 => 9_000i64..9_100, 1 => port()],
            ),
            0..3,
        ),
        prop::option::weighted(0.15, yaml_tree()),
        prop::option::weighted(0.1, yaml_tree()),
    )
        .prop_map(|((start, end, block), shared, cloudflare, vms)| {
            let range = |s: i64, e: i64| {
                Yaml::Map(
                    vec![("start".into(), Yaml::Int(s)), ("end".into(), Yaml::Int(e))],
                    true,
                )
            };
            let mut projects = range(start, end);
            if let Yaml::Map(m, _) = &mut projects {
                m.push(("block".into(), Yaml::Int(block)));
            }
            let mut m = vec![(
                "ports".to_string(),
                Yaml::Map(
                    vec![
                        ("projects".into(), projects),
                        ("shared".into(), range(9000, 9099)),
                    ],
                    false,
                ),
            )];
            m.push((
                "shared_services".into(),
                Yaml::Seq(
                    shared
                        .into_iter()
                        .map(|(n, p)| {
                            Yaml::Map(
                                vec![
                                    ("name".into(), Yaml::Str(n, 2)),
                                    ("port".into(), Yaml::Int(p)),
                                ],
                                true,
                            )
                        })
                        .collect(),
                    false,
                ),
            ));
            if let Some(c) = cloudflare {
                m.push(("cloudflare".into(), c));
            }
            if let Some(v) = vms {
                m.push(("vms".into(), v));
            }
            Yaml::Map(m, false).render()
        })
}

/// Documents that stress the parser's limits: deep nesting, huge scalars, alias bombs, long lines.
fn pathological_yaml() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..20_000).prop_map(|n| format!("name: {}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..20_000).prop_map(|n| format!("services: {}", "[".repeat(n))),
        (1usize..5_000).prop_map(|n| {
            let mut s = String::from("name: shop\nservices:\n");
            for i in 0..n {
                s.push_str(&" ".repeat(2 * i + 2));
                s.push_str("-\n");
            }
            s
        }),
        (1usize..20_000).prop_map(|n| format!("name: {}x{}", "{a: ".repeat(n), "}".repeat(n))),
        (1usize..3_000_000).prop_map(|n| format!("name: shop\npath: {}\n", "a".repeat(n))),
        (1usize..3_000_000).prop_map(|n| format!("name: \"{}\"\n", "\\u00e9".repeat(n / 6 + 1))),
        (2usize..12, 2usize..12).prop_map(|(levels, width)| {
            // "Billion laughs": each level aliases the previous one `width` times.
            let mut s = String::from("a0: &a0 [\"lol\"]\n");
            for l in 1..levels {
                let refs = vec![format!("*a{}", l - 1); width].join(", ");
                s.push_str(&format!("a{l}: &a{l} [{refs}]\n"));
            }
            s.push_str(&format!("name: shop\nchecks: *a{}\n", levels - 1));
            s
        }),
        (1usize..100_000)
            .prop_map(|n| { (0..n).map(|i| format!("k{i}: {i}\n")).collect::<String>() }),
        (1usize..10_000).prop_map(|n| format!("name: shop\n{}", "---\n".repeat(n))),
        (1usize..50_000)
            .prop_map(|n| format!("name: shop\nchecks: [{}]\n", vec!["x"; n].join(","))),
    ]
}

/// One state directory's files: supervisor.yaml (if any) and projects/<name>.yaml, as bytes.
type StateFiles = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

fn state_files() -> impl Strategy<Value = StateFiles> {
    let text = |s: String| s.into_bytes();
    prop_oneof![
        // Arbitrary bytes, in either file.
        2 => (prop::option::of(hostile_bytes(2048)), hostile_bytes(2048))
            .prop_map(|(sup, p)| (sup, vec![("shop".to_string(), p)])),
        // Random YAML trees over the state keys.
        3 => (prop::option::of(yaml_document()), prop::collection::vec(yaml_document(), 0..3))
            .prop_map(move |(sup, ps)| (
                sup.map(text),
                ps.into_iter().enumerate().map(|(i, p)| (format!("p{i}"), p.into_bytes())).collect(),
            )),
        // Near-valid states.
        4 => (supervisor_doc(), prop::collection::vec(project_doc(), 0..4))
            .prop_map(|(sup, ps)| {
                let mut files: Vec<(String, Vec<u8>)> = Vec::new();
                for (name, text) in ps {
                    if !files.iter().any(|(n, _)| *n == name) {
                        files.push((name, text.into_bytes()));
                    }
                }
                (Some(sup.into_bytes()), files)
            }),
        // Parser limits.
        1 => pathological_yaml().prop_map(|p| (None, vec![("shop".to_string(), p.into_bytes())])),
        1 => pathological_yaml().prop_map(|s| (Some(s.into_bytes()), vec![])),
    ]
}

fn write_state(dir: &Path, files: &StateFiles) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("projects")).unwrap();
    if let Some(sup) = &files.0 {
        std::fs::write(dir.join("supervisor.yaml"), sup).unwrap();
    }
    for (name, bytes) in &files.1 {
        std::fs::write(dir.join("projects").join(format!("{name}.yaml")), bytes).unwrap();
    }
}

#[test]
fn target_state_parsing_and_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let again = tmp.path().join("formatted");
    let outcomes = Outcomes::new(&["refused", "valid"]);
    run("state", 200, state_files(), |files| {
        write_state(&dir, &files);
        match supervisor::state::load(&dir) {
            Err(diags) => {
                outcomes.count("refused");
                prop_assert!(!diags.0.is_empty(), "an error without a diagnostic");
                prop_assert!(
                    diags.0.iter().any(|d| d.is_error()),
                    "refused without an error: {diags}"
                );
                for d in &diags.0 {
                    // Every message says something, and is capped (an alias bomb or a 3 MB value
                    // prints a few hundred characters).
                    prop_assert!(!d.message.trim().is_empty(), "an empty message: {d}");
                    prop_assert!(
                        d.message.chars().count() <= 300,
                        "a message of {} characters: {}",
                        d.message.chars().count(),
                        short(&d.message)
                    );
                    prop_assert!(
                        d.to_string().chars().count() <= 2_000,
                        "{}",
                        short(&d.to_string())
                    );
                }
            }
            Ok(desired) => {
                outcomes.count("valid");
                // Loading is deterministic, and the canonical form (`fmt`, machine edits) means the
                // same state.
                let second = supervisor::state::load(&dir)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&second, &desired);
                let formatted = supervisor::state::canonical_files(&dir).map_err(|e| {
                    TestCaseError::fail(format!("a valid state does not format: {e}"))
                })?;
                let _ = std::fs::remove_dir_all(&again);
                std::fs::create_dir_all(again.join("projects")).unwrap();
                for f in &formatted {
                    let rel = f.path.strip_prefix(&dir).unwrap();
                    std::fs::write(again.join(rel), &f.canonical).unwrap();
                }
                let reloaded = supervisor::state::load(&again).map_err(|e| {
                    TestCaseError::fail(format!("the canonical form does not load: {e}"))
                })?;
                let strip = |d: &supervisor::state::Desired| {
                    let mut d = d.clone();
                    d.dir = Default::default();
                    d.revision = String::new();
                    d.warnings.clear();
                    d
                };
                prop_assert_eq!(strip(&reloaded), strip(&desired));
                // Formatting is idempotent.
                let twice = supervisor::state::canonical_files(&again).unwrap();
                for f in &twice {
                    prop_assert!(
                        !f.changed(),
                        "fmt is not idempotent on {}:\n{}",
                        f.path.display(),
                        f.original
                    );
                }
            }
        }
        Ok(())
    });
    outcomes.print("state");
}

// ---------------------------------------------------------------------------------------------------
// JSON values (plan mutations, JSONL lines, MCP arguments)

/// Strings an attacker would try on a path, name or identifier argument.
const HOSTILE_STRINGS: &[&str] = &[
    "alpha",
    "beta",
    "alpha/../beta",
    "../beta",
    "..",
    ".",
    "/",
    "/etc/passwd",
    "beta/",
    "alpha\u{0}",
    "\u{0}",
    "alpha%2F..%2Fbeta",
    "ALPHA",
    " alpha",
    "alpha\n",
    "project/beta/db_password",
    "project/alpha/../beta/db_password",
    "meta/cloudflare/api_token",
    "service/beta/db/password",
    "project/alpha/x",
    "service/alpha/api/token",
    "file:///etc/passwd",
    "C:\\Windows",
    "~root",
    "$(touch /tmp/pwned)",
    "`id`",
    "; rm -rf /",
    "true",
    "cargo test",
    "'",
    "\"",
    "\\",
    "{}",
    "[]",
    "null",
    "-1",
    "1e309",
    "NaN",
    "\u{202e}",
    "\u{feff}",
    "名前",
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(HOSTILE_STRINGS).prop_map(str::to_string),
        1 => Just("x".repeat(201)),
        3 => "\\PC{0,40}",
        1 => "[a-z0-9_-]{1,20}",
        1 => prop::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect()),
    ]
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        2 => prop_oneof![
            any::<i64>(),
            -5i64..100_000,
            prop::sample::select(vec![0i64, 1, -1, i64::MIN, i64::MAX, 65535, 65536, 1 << 53]),
        ]
        .prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        4 => hostile_string().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((hostile_string(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// One edit of a JSON document: at the `at`-th node (pre-order), replace it, remove it (from its
/// object or array), add a key next to it, or wrap it in deep nesting.
#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(prop::sample::Index, serde_json::Value),
    Remove(prop::sample::Index),
    AddKey(prop::sample::Index, String, serde_json::Value),
    Nest(prop::sample::Index, usize),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        4 => (at(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        2 => at().prop_map(JsonEdit::Remove),
        2 => (at(), hostile_string(), json_value()).prop_map(|(i, k, v)| JsonEdit::AddKey(i, k, v)),
        1 => (at(), 1usize..300).prop_map(|(i, d)| JsonEdit::Nest(i, d)),
    ]
}

fn node_count(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(node_count).sum(),
        serde_json::Value::Object(o) => o.values().map(node_count).sum(),
        _ => 0,
    }
}

/// Applies `f` to the `n`-th node (pre-order) and its parent's view: `f(parent, key in parent)`.
fn edit_nth(root: &mut serde_json::Value, edit: &JsonEdit) {
    use serde_json::Value;
    fn walk(v: &mut Value, n: &mut usize, edit: &JsonEdit) -> bool {
        // Children first looked at from the parent, so removal can happen there.
        let children: Vec<String> = match v {
            Value::Object(o) => o.keys().cloned().collect(),
            Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => vec![],
        };
        for key in children {
            if *n == 0 {
                return true;
            }
            *n -= 1;
            let is_target = *n == 0;
            if is_target {
                match (edit, &mut *v) {
                    (JsonEdit::Remove(_), Value::Object(o)) => {
                        o.remove(&key);
                    }
                    (JsonEdit::Remove(_), Value::Array(a)) => {
                        a.remove(key.parse::<usize>().unwrap());
                    }
                    (JsonEdit::AddKey(_, k, val), Value::Object(o)) => {
                        o.insert(k.clone(), val.clone());
                    }
                    (JsonEdit::AddKey(_, _, val), Value::Array(a)) => a.push(val.clone()),
                    (JsonEdit::Replace(_, val), Value::Object(o)) => {
                        o.insert(key.clone(), val.clone());
                    }
                    (JsonEdit::Replace(_, val), Value::Array(a)) => {
                        a[key.parse::<usize>().unwrap()] = val.clone();
                    }
                    (JsonEdit::Nest(_, depth), Value::Object(o)) => {
                        let inner = o[&key].to_string();
                        o.insert(
                            key.clone(),
                            serde_json::from_str(&nested(*depth, &inner)).unwrap_or(Value::Null),
                        );
                    }
                    (JsonEdit::Nest(_, depth), Value::Array(a)) => {
                        let i = key.parse::<usize>().unwrap();
                        let inner = a[i].to_string();
                        a[i] = serde_json::from_str(&nested(*depth, &inner)).unwrap_or(Value::Null);
                    }
                    _ => {}
                }
                return true;
            }
            let child = match v {
                Value::Object(o) => o.get_mut(&key).unwrap(),
                Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
            if walk(child, n, edit) {
                return true;
            }
        }
        false
    }
    let index = match edit {
        JsonEdit::Replace(i, _)
        | JsonEdit::Remove(i)
        | JsonEdit::AddKey(i, _, _)
        | JsonEdit::Nest(i, _) => i,
    };
    // Node 0 is the root: edits target a node below it (1..count).
    let count = node_count(root);
    if count < 2 {
        return;
    }
    let mut n = 1 + index.index(count - 1);
    walk(root, &mut n, edit);
}

/// Byte-level edits of a text: (position, operation, byte).
fn byte_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            0u8..6,
            prop_oneof![
                any::<u8>(),
                prop::sample::select(b"{}[]\":,0-n\\\0".to_vec())
            ],
        ),
        1..6,
    )
}

fn apply_byte_edits(text: &[u8], edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut b = text.to_vec();
    for (at, op, byte) in edits {
        let i = at.index(b.len() + 1);
        match op {
            0 => b.insert(i, *byte),
            1 if i < b.len() => {
                b.remove(i);
            }
            2 => b.truncate(i),
            3 if i < b.len() => b[i] = *byte,
            4 if i < b.len() => b[i] ^= 1 << (byte % 8),
            _ => {
                // Duplicate a span.
                let end = (i + usize::from(*byte)).min(b.len());
                let span = b[i..end].to_vec();
                b.splice(i..i, span);
            }
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------------
// The saved-plan reader (`supervisor plan --out FILE`, `supervisor apply FILE`)

/// What a saved plan file can become on its way to `apply`.
#[derive(Debug, Clone)]
enum PlanFile {
    Bytes(Vec<(prop::sample::Index, u8, u8)>),
    Json(Vec<JsonEdit>),
    Arbitrary(Vec<u8>),
    /// The genuine plan inside `depth` arrays, or a value nested `depth` deep in a change.
    Deep(usize, bool),
}

fn plan_file() -> impl Strategy<Value = PlanFile> {
    prop_oneof![
        4 => byte_edits().prop_map(PlanFile::Bytes),
        5 => prop::collection::vec(json_edit(), 1..4).prop_map(PlanFile::Json),
        1 => hostile_bytes(4096).prop_map(PlanFile::Arbitrary),
        1 => (1usize..20_000, any::<bool>()).prop_map(|(d, inside)| PlanFile::Deep(d, inside)),
    ]
}

fn plan_bytes(genuine: &str, file: &PlanFile) -> Vec<u8> {
    match file {
        PlanFile::Bytes(edits) => apply_byte_edits(genuine.as_bytes(), edits),
        PlanFile::Json(edits) => {
            let mut v: serde_json::Value = serde_json::from_str(genuine).unwrap();
            for e in edits {
                edit_nth(&mut v, e);
            }
            serde_json::to_vec_pretty(&v).unwrap()
        }
        PlanFile::Arbitrary(b) => b.clone(),
        PlanFile::Deep(depth, false) => nested(*depth, genuine).into_bytes(),
        PlanFile::Deep(depth, true) => genuine
            .replacen(
                "\"after\": {",
                &format!("\"after\": {{\"deep\": {},", nested(*depth, "1")),
                1,
            )
            .into_bytes(),
    }
}

/// A state directory with applied ports and pending changes of every action (create, update, delete).
struct PlanFixture {
    _dir: tempfile::TempDir,
    rt: std::sync::Arc<supervisor::ops::Runtime>,
}

const PLAN_ALPHA: &str =
    "name: alpha\nport_range: 20000\nservices:\n  - name: api\n    port: 20001\n  - name: web\n";
const PLAN_BETA: &str = "name: beta\nport_range: 20100\nservices:\n  - name: db\n  - name: app\n";
const PLAN_SUP: &str = "ports:\n  projects: { start: 20000, end: 20999, block: 100 }\n  shared: { start: 9000, end: 9099 }\nshared_services:\n  - name: redis\n    port: 9079\n";

async fn plan_fixture(
    location: supervisor::store::Location,
    dir: tempfile::TempDir,
) -> PlanFixture {
    use supervisor::ops::{self, ApplyOutcome, ApplyRequest, Runtime, Unattended};
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("projects")).unwrap();
    std::fs::write(state.join("supervisor.yaml"), PLAN_SUP).unwrap();
    std::fs::write(state.join("projects/alpha.yaml"), PLAN_ALPHA).unwrap();
    std::fs::write(state.join("projects/beta.yaml"), PLAN_BETA).unwrap();
    let store = supervisor::store::open(&location).await.unwrap();
    let settings = supervisor::config::Settings {
        state_dir: state.clone(),
        database: location,
        key_file: None,
        config_path: None,
        file: Default::default(),
    };
    let rt = Runtime::load(
        settings,
        store,
        supervisor::ops::runtime::VaultState::NoKey,
        false,
    )
    .await
    .unwrap();
    let outcome = ops::apply(
        &rt,
        ApplyRequest::unattended(Default::default(), "test"),
        &mut Unattended,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, ApplyOutcome::Applied { .. }),
        "the fixture did not apply"
    );
    // Pending: a new service (create), a pin moved (update), a service gone (delete).
    std::fs::write(
        state.join("projects/alpha.yaml"),
        "name: alpha\nport_range: 20000\nservices:\n  - name: api\n    port: 20005\n  - name: worker\n",
    )
    .unwrap();
    rt.reload().await;
    PlanFixture { _dir: dir, rt }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn target_saved_plan_reader() {
    use supervisor::engine::{Engine, Plan, Scope};
    use supervisor::ops::{self, ApplyRequest, Unattended};
    let tokio = tokio_rt();
    let dir = tempfile::tempdir().unwrap();
    let location = supervisor::store::Location::Sqlite(dir.path().join("supervisor.db"));
    let fixture = tokio.block_on(plan_fixture(location, dir));
    let rt = fixture.rt.clone();
    let fresh = tokio.block_on(rt.plan(&Scope::default(), "test")).unwrap();
    let actions: std::collections::BTreeSet<_> = fresh.changes.iter().map(|c| c.action).collect();
    assert_eq!(
        actions.len(),
        3,
        "the fixture plan lacks an action: {fresh:#?}"
    );
    let genuine = serde_json::to_string_pretty(&fresh).unwrap();
    // The genuine file reads back as the plan, and is fresh.
    let read = Plan::from_saved(genuine.as_bytes()).unwrap();
    Engine::check_fresh(&read, &fresh).unwrap();

    let outcomes = Outcomes::new(&["unreadable", "stale", "same plan"]);
    run("saved_plan", 400, plan_file(), |file| {
        let bytes = plan_bytes(&genuine, &file);
        let saved = match Plan::from_saved(&bytes) {
            Err(e) => {
                outcomes.count("unreadable");
                let msg = e.to_string();
                prop_assert!(
                    msg.starts_with("the saved plan cannot be read: "),
                    "{}",
                    short(&msg)
                );
                prop_assert!(msg.chars().count() < 2_000, "{}", short(&msg));
                return Ok(());
            }
            Ok(p) => p,
        };
        match Engine::check_fresh(&saved, &fresh) {
            Ok(()) => {
                // Accepted only when it is the plan that would be applied anyway.
                outcomes.count("same plan");
                prop_assert_eq!(&saved.format_version, &fresh.format_version);
                prop_assert_eq!(&saved.desired_revision, &fresh.desired_revision);
                prop_assert_eq!(&saved.observed_fingerprint, &fresh.observed_fingerprint);
                prop_assert_eq!(&saved.changes, &fresh.changes);
            }
            Err(_) => {
                outcomes.count("stale");
                // The one apply flow, as `apply FILE` runs it (with the saved plan's scope): refused,
                // and nothing changed.
                let mut request = ApplyRequest::unattended(saved.scope.clone(), "test");
                request.saved = Some(saved);
                let outcome = tokio.block_on(ops::apply(&rt, request, &mut Unattended));
                prop_assert!(
                    outcome.is_err(),
                    "a stale or altered plan was not refused: {:?}",
                    outcome.map(|_| ())
                );
                let after = tokio.block_on(rt.plan(&Scope::default(), "test")).unwrap();
                prop_assert_eq!(&after.changes, &fresh.changes, "something was applied");
            }
        }
        Ok(())
    });
    outcomes.print("saved_plan");
}

// ---------------------------------------------------------------------------------------------------
// The knowledge chunker

/// Lines that look like the things the chunker cuts at: headings, fences, definitions, prefaces.
const CHUNK_LINES: &[&str] = &[
    "# Title",
    "## Install",
    "###### deep",
    "####### not a heading",
    "#",
    "# Other #",
    "```",
    "```rust",
    "~~~",
    "````",
    "    ```",
    "fn main() {",
    "pub fn add(a: u8) -> u8 {",
    "    fn inner() {",
    "}",
    "impl S {",
    "struct S;",
    "/// doc",
    "#[derive(Debug)]",
    "@decorator",
    "def f(x):",
    "    def g():",
    "class A:",
    "class B(A):",
    "export async function h() {",
    "const f = (x) => {",
    "func main() {",
    "public static void main(String[] args) {",
    "CREATE TABLE t (",
    "-- comment",
    "/*",
    " * x",
    "*/",
    "",
    " ",
    "\t",
    "\r",
    "text",
    "a paragraph line",
    "\u{feff}",
    "é",
    "\u{0}",
];

fn chunk_input() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        6 => prop::sample::select(CHUNK_LINES).prop_map(str::to_string),
        3 => "\\PC{0,80}",
        1 => ("[ \t]{0,40}", prop::sample::select(CHUNK_LINES)).prop_map(|(i, l)| format!("{i}{l}")),
        1 => (1usize..6_000, prop::sample::select(vec!["a", "é", "🦀", " ", "x "])).prop_map(|(n, c)| c.repeat(n)),
    ];
    prop_oneof![
        6 => prop::collection::vec(line, 0..200).prop_map(|l| l.join("\n")),
        1 => prop::collection::vec(any::<char>(), 0..3_000).prop_map(|c| c.into_iter().collect()),
        1 => hostile_bytes(3_000).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        // Definitions nested ever deeper (each level indented by a tab).
        1 => (1usize..1_500).prop_map(|n| (0..n).map(|i| format!("{}fn f{i}() {{\n", "\t".repeat(i))).collect()),
        // Many tiny paragraphs, many blank lines, one huge line.
        1 => (1usize..20_000).prop_map(|n| "a\n\n".repeat(n)),
        1 => (1usize..200_000).prop_map(|n| "\n".repeat(n)),
        1 => (1usize..300_000).prop_map(|n| "é".repeat(n)),
    ]
}

#[test]
fn target_knowledge_chunker() {
    use supervisor::knowledge::chunk::{MAX_CHUNK_CHARS, chunk_document};
    use supervisor::store::DocumentKind;
    let outcomes = Outcomes::new(&["markdown", "code", "text"]);
    let kind = prop::sample::select(vec![
        DocumentKind::Markdown,
        DocumentKind::Code,
        DocumentKind::Text,
    ]);
    run("chunker", 200, (kind, chunk_input()), |(kind, text)| {
        outcomes.count(match kind {
            DocumentKind::Markdown => "markdown",
            DocumentKind::Code => "code",
            DocumentKind::Text => "text",
        });
        let chunks = chunk_document(kind, &text);
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        let mut covered = vec![false; lines.len()];
        for c in &chunks {
            // Bounded, in range, no blank edges, and made of the document's own lines: either whole
            // lines start..=end joined, or a piece of one long line cut at character boundaries.
            prop_assert!(
                c.text.chars().count() <= MAX_CHUNK_CHARS,
                "a chunk of {} chars",
                c.text.chars().count()
            );
            prop_assert!(
                !c.text.trim().is_empty(),
                "an empty chunk at {}..{}",
                c.line_start,
                c.line_end
            );
            prop_assert!(
                1 <= c.line_start && c.line_start <= c.line_end && c.line_end <= lines.len(),
                "lines {}..{} of {}",
                c.line_start,
                c.line_end,
                lines.len()
            );
            let whole = lines[c.line_start - 1..c.line_end].join("\n");
            if c.text == whole {
                prop_assert!(
                    !lines[c.line_start - 1].trim().is_empty()
                        && !lines[c.line_end - 1].trim().is_empty(),
                    "blank edge lines in {}..{}",
                    c.line_start,
                    c.line_end
                );
            } else {
                prop_assert_eq!(c.line_start, c.line_end, "a cut chunk spans lines");
                prop_assert!(
                    whole.contains(&c.text),
                    "a chunk that is not the document's text"
                );
            }
            if let Some(t) = &c.title {
                prop_assert!(t.chars().count() <= 160 && !t.trim().is_empty());
            }
            for line in &mut covered[c.line_start - 1..c.line_end] {
                *line = true;
            }
        }
        // Every line with content is in some chunk (markdown headings with nothing under them live on
        // only in their subsections' titles).
        for (i, line) in lines.iter().enumerate() {
            if covered[i] || line.trim().is_empty() {
                continue;
            }
            let heading = kind == DocumentKind::Markdown && {
                let t = line.trim_start();
                line.len() - t.len() < 4
                    && t.starts_with('#')
                    && t.chars().take_while(|&c| c == '#').count() <= 6
            };
            prop_assert!(heading, "line {} is in no chunk: {:?}", i + 1, short(line));
        }
        // A long line cut into pieces: the pieces are the line (but for pieces of only whitespace).
        let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        for (i, line) in lines.iter().enumerate() {
            if line.chars().count() > MAX_CHUNK_CHARS {
                let pieces: String = chunks
                    .iter()
                    .filter(|c| c.line_start == i + 1 && c.line_end == i + 1)
                    .map(|c| c.text.as_str())
                    .collect();
                if !pieces.is_empty() {
                    prop_assert_eq!(
                        visible(&pieces),
                        visible(line),
                        "line {} cut into pieces that are not it",
                        i + 1
                    );
                }
            }
        }
        // Deterministic.
        prop_assert_eq!(chunk_document(kind, &text), chunks);
        Ok(())
    });
    outcomes.print("chunker");
}

// ---------------------------------------------------------------------------------------------------
// JSONL readers: `timing import`, `timing estimate --batch`, `knowledge index --jsonl`

fn history_line() -> impl Strategy<Value = String> {
    use serde_json::json;
    let valid = (
        "[A-Z]{1,3}-[0-9]{1,4}",
        prop::sample::select(vec!["alpha", "beta", "Bad!", ""]),
        prop::sample::select(vec!["bugfix", "feature", " Docs ", ""]),
        prop_oneof![1.0f64..100_000.0, Just(-1.0), Just(0.0), Just(1e12)],
        prop::option::of(prop::sample::select(vec!["2026-10-01T10:00:00Z", "not a time", "2026-13-01T00:00:00Z"])),
        prop::option::of(0.5f64..1e6),
    )
        .prop_map(|(id, project, ty, secs, started, est)| {
            let mut v = json!({"task_id": id, "description": "fix the form", "task_type": ty, "project": project, "duration_seconds": secs});
            if let Some(s) = started {
                v["started_at"] = json!(s);
            }
            if let Some(e) = est {
                v["estimated_seconds"] = json!(e);
            }
            v.to_string()
        });
    prop_oneof![
        6 => valid.clone(),
        2 => (valid.clone(), prop::collection::vec(json_edit(), 1..3)).prop_map(|(line, edits)| {
            let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
            for e in &edits {
                edit_nth(&mut v, e);
            }
            v.to_string()
        }),
        2 => (valid, byte_edits()).prop_map(|(line, edits)| String::from_utf8_lossy(&apply_byte_edits(line.as_bytes(), &edits)).into_owned()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => Just(String::new()),
        1 => (1usize..2_000).prop_map(|d| nested(d, "1")),
        1 => (1usize..2_000_000).prop_map(|n| format!("{{\"task_id\": \"x\", \"description\": \"{}\"}}", "a".repeat(n))),
    ]
}

fn record_line() -> impl Strategy<Value = String> {
    use serde_json::json;
    let valid = (
        prop_oneof![4 => "[a-z0-9/._-]{1,30}", 1 => hostile_string()],
        prop_oneof![4 => "\\PC{1,200}", 1 => Just(" ".to_string())],
        prop::option::of(hostile_string()),
        prop::collection::vec(hostile_string(), 0..3),
        prop::option::of(prop::sample::select(vec![
            "markdown", "code", "text", "pdf",
        ])),
    )
        .prop_map(|(id, text, title, tags, kind)| {
            let mut v = json!({"id": id, "text": text, "tags": tags});
            if let Some(t) = title {
                v["title"] = json!(t);
            }
            if let Some(k) = kind {
                v["kind"] = json!(k);
            }
            v.to_string()
        })
        .boxed();
    prop_oneof![
        4 => valid.clone(),
        1 => (valid, prop::collection::vec(json_edit(), 1..3)).prop_map(|(line, edits)| {
            let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
            for e in &edits {
                edit_nth(&mut v, e);
            }
            v.to_string()
        }),
    ]
}

fn jsonl_line() -> impl Strategy<Value = String> {
    prop_oneof![history_line(), record_line()]
}

/// A JSONL file: lines of the formats with mistakes, joined, possibly with bytes that are not UTF-8.
fn jsonl_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::collection::vec(history_line(), 0..12), prop::sample::select(vec!["\n", "\r\n", "\n\n"]))
            .prop_map(|(lines, sep)| lines.join(sep).into_bytes()),
        4 => (prop::collection::vec(record_line(), 0..12), prop::sample::select(vec!["\n", "\r\n", "\n\n"]))
            .prop_map(|(lines, sep)| lines.join(sep).into_bytes()),
        2 => (prop::collection::vec(jsonl_line(), 1..6), any::<prop::sample::Index>(), prop::sample::select(vec![vec![0xffu8], vec![0xc3], vec![0xed, 0xa0, 0x80], vec![0xe2, 0x82]]))
            .prop_map(|(lines, at, bad)| {
                let mut b = lines.join("\n").into_bytes();
                let i = at.index(b.len() + 1);
                b.splice(i..i, bad);
                b
            }),
        1 => hostile_bytes(2_000),
    ]
}

/// The 1-based line number a JSONL error names (`file:LINE: …`).
fn error_line(message: &str, file: &str) -> Option<usize> {
    message
        .strip_prefix(file)?
        .strip_prefix(':')?
        .split(':')
        .next()?
        .parse()
        .ok()
}

#[test]
fn target_jsonl_readers() {
    use supervisor::knowledge::index::parse_jsonl;
    use supervisor::timing::history::{
        NOTHING_IMPORTED, parse_estimate_batch, parse_history, utf8_text,
    };
    let now = chrono::Utc::now();
    let outcomes = Outcomes::new(&[
        "history ok",
        "history refused",
        "batch ok",
        "batch refused",
        "records ok",
        "records refused",
    ]);
    run("jsonl", 300, jsonl_file(), |bytes| {
        let line_count = bytes.split(|&b| b == b'\n').count();
        let non_blank = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !String::from_utf8_lossy(l).trim().is_empty())
            .count();
        let check_error = |message: String| -> Result<(), TestCaseError> {
            let line = error_line(&message, "h.jsonl");
            prop_assert!(
                line.is_some_and(|n| (1..=line_count).contains(&n)),
                "no line number in range 1..={}: {}",
                line_count,
                short(&message)
            );
            prop_assert!(
                message.chars().count() <= 1_000,
                "an error of {} characters: {}",
                message.chars().count(),
                short(&message)
            );
            Ok(())
        };
        // timing import and estimate --batch: all or nothing, the first bad line named.
        match utf8_text("h.jsonl", bytes.clone(), NOTHING_IMPORTED) {
            Err(e) => {
                outcomes.count("history refused");
                let msg = e.to_string();
                check_error(msg.clone())?;
                prop_assert!(msg.ends_with("nothing was imported"), "{}", short(&msg));
            }
            Ok(text) => {
                match parse_history("h.jsonl", &text, now) {
                    Ok(tasks) => {
                        outcomes.count("history ok");
                        prop_assert_eq!(tasks.len(), non_blank);
                    }
                    Err(e) => {
                        outcomes.count("history refused");
                        let msg = e.to_string();
                        check_error(msg.clone())?;
                        prop_assert!(
                            msg.contains("nothing was imported")
                                || msg.contains("unknown field")
                                || msg.contains("missing field")
                                || msg.contains("invalid"),
                            "{}",
                            short(&msg)
                        );
                    }
                }
                match parse_estimate_batch("h.jsonl", &text) {
                    Ok(lines) => {
                        outcomes.count("batch ok");
                        prop_assert_eq!(lines.len(), non_blank);
                    }
                    Err(e) => {
                        outcomes.count("batch refused");
                        check_error(e.to_string())?;
                    }
                }
            }
        }
        // knowledge index --jsonl: records, or the first bad line named.
        match parse_jsonl(Path::new("h.jsonl"), &bytes) {
            Ok(records) => {
                outcomes.count("records ok");
                prop_assert_eq!(records.len(), non_blank);
            }
            Err(e) => {
                outcomes.count("records refused");
                check_error(e.to_string())?;
            }
        }
        Ok(())
    });
    outcomes.print("jsonl");
}

// ---------------------------------------------------------------------------------------------------
// The credential detector

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters of `alphabet`, drawn by the strategy.
fn chars_of(
    alphabet: &'static str,
    n: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), n).prop_map(|c| c.into_iter().collect())
}

/// Base62 with at least two digits, an upper- and a lower-case letter among `n` characters (what real
/// tokens look like; the detector's vendor formats do not need it, the entropy fallback does).
fn token_body(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    chars_of(ALNUM, n).prop_map(|s| {
        let mut c: Vec<char> = s.chars().collect();
        let len = c.len();
        for (i, x) in ['7', '3', 'Q', 'k'].into_iter().enumerate() {
            if len > i * 3 {
                c[i * 3] = x;
            }
        }
        c.into_iter().collect()
    })
}

/// A credential of each kind the detector knows, as it would be pasted: (kind, text to plant, the
/// secret part that must not survive redaction).
fn planted_credential() -> impl Strategy<Value = (&'static str, String, String)> {
    let plain = |kind: &'static str, s: BoxedStrategy<String>| {
        s.prop_map(move |v| (kind, v.clone(), v)).boxed()
    };
    prop_oneof![
        plain(
            "anthropic_api_key",
            token_body(80..=110)
                .prop_map(|b| format!("sk-ant-api03-{b}"))
                .boxed()
        ),
        plain(
            "openai_api_key",
            token_body(40..=120)
                .prop_map(|b| format!("sk-proj-{b}"))
                .boxed()
        ),
        plain(
            "openai_api_key",
            token_body(48..=48).prop_map(|b| format!("sk-{b}")).boxed()
        ),
        plain(
            "stripe_secret_key",
            token_body(24..=99)
                .prop_map(|b| format!("sk_live_{b}"))
                .boxed()
        ),
        plain(
            "stripe_secret_key",
            token_body(24..=99)
                .prop_map(|b| format!("rk_test_{b}"))
                .boxed()
        ),
        plain(
            "stripe_webhook_secret",
            token_body(32..=64)
                .prop_map(|b| format!("whsec_{b}"))
                .boxed()
        ),
        plain(
            "github_fine_grained_token",
            (token_body(22..=22), token_body(59..=59))
                .prop_map(|(a, b)| format!("github_pat_{a}_{b}"))
                .boxed()
        ),
        plain(
            "github_token",
            (
                prop::sample::select(vec!['p', 'o', 'u', 's', 'r']),
                token_body(36..=40)
            )
                .prop_map(|(c, b)| format!("gh{c}_{b}"))
                .boxed()
        ),
        plain(
            "gitlab_token",
            token_body(20..=40)
                .prop_map(|b| format!("glpat-{b}"))
                .boxed()
        ),
        plain(
            "aws_access_key_id",
            chars_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16..=16)
                .prop_map(|b| format!("AKIA{b}"))
                .boxed()
        ),
        token_body(40..=40)
            .prop_map(|b| (
                "aws_secret_access_key",
                format!("aws_secret_access_key = {b}"),
                b
            ))
            .boxed(),
        plain(
            "google_api_key",
            token_body(35..=35).prop_map(|b| format!("AIza{b}")).boxed()
        ),
        token_body(40..=40)
            .prop_map(|b| (
                "cloudflare_api_token",
                format!("CLOUDFLARE_API_TOKEN: {b}"),
                b
            ))
            .boxed(),
        plain(
            "cloudflare_api_token",
            token_body(40..=60)
                .prop_map(|b| format!("cfut_{b}"))
                .boxed()
        ),
        plain(
            "slack_token",
            token_body(20..=40)
                .prop_map(|b| format!("xoxb-1234567890-{b}"))
                .boxed()
        ),
        plain(
            "slack_webhook",
            token_body(24..=44)
                .prop_map(|b| format!("https://hooks.slack.com/services/T0/B0/{b}"))
                .boxed(),
        ),
        token_body(40..=400)
            .prop_map(|b| {
                let key = format!(
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIE{b}\n-----END RSA PRIVATE KEY-----"
                );
                ("private_key", key.clone(), key)
            })
            .boxed(),
        (
            token_body(12..=40),
            token_body(12..=60),
            token_body(12..=43)
        )
            .prop_map(|(h, p, s)| {
                let jwt = format!("eyJ{h}.eyJ{p}.{s}");
                ("jwt", jwt.clone(), jwt)
            })
            .boxed(),
        token_body(8..=40)
            .prop_map(|p| (
                "url_credentials",
                format!("postgres://app:{p}@db.internal:5432/app"),
                p
            ))
            .boxed(),
        (
            prop::sample::select(vec!["password", "api_key", "client_secret", "auth_token"]),
            token_body(12..=60)
        )
            .prop_map(|(k, v)| ("assigned_secret", format!("{k} = \"{v}\""), v))
            .boxed(),
        (
            prop::sample::select(vec![
                "DB_PASSWORD",
                "export STRIPE_SECRET",
                "GH_TOKEN",
                "MY_API_KEY"
            ]),
            token_body(12..=60)
        )
            .prop_map(|(k, v)| ("assigned_secret", format!("\n{k}={v}\n"), v))
            .boxed(),
        // Random 32–62 distinct base62 characters: entropy log2(n) ≥ 5 bits per character.
        (
            Just(ALNUM.chars().collect::<Vec<char>>()).prop_shuffle(),
            32usize..=62
        )
            .prop_map(|(c, n)| {
                let mut t: String = c.into_iter().take(n).collect();
                if t.chars().filter(char::is_ascii_digit).count() < 2
                    || !t.chars().any(|c| c.is_ascii_uppercase())
                    || !t.chars().any(|c| c.is_ascii_lowercase())
                {
                    t.replace_range(0..3, "7Qk");
                }
                ("high_entropy", t.clone(), t)
            })
            .boxed(),
    ]
}

/// Text around planted credentials: prose, code, logs, any characters.
fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z ,.;:()=\n]{0,200}",
        2 => "\\PC{0,200}",
        1 => prop::collection::vec(prop::sample::select(vec!["let x = 1;", "INFO request done", "user: alice", "see https://example.com/docs", "id 123e4567-e89b-12d3-a456-426614174000", "\n", "é", "🦀"]), 0..10).prop_map(|p| p.join(" ")),
    ]
}

#[derive(Debug, Clone)]
struct Planted {
    text: String,
    secrets: Vec<(&'static str, String)>,
}

/// Whitespace, some of it wider than a byte.
fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        " ", "\n", " \n", "\t", "\r\n", "\u{3000}", "\u{a0}", "\u{2028}", "\u{85}",
    ])
}

fn planted_text() -> impl Strategy<Value = Planted> {
    let part = (planted_credential(), separator(), separator(), filler());
    (filler(), prop::collection::vec(part, 0..5)).prop_map(|(head, parts)| {
        let mut text = head;
        let mut secrets = Vec::new();
        for ((kind, shown, secret), before, after, tail) in parts {
            // Whitespace around a credential: it must not continue a word of the filler.
            text.push_str(before);
            text.push_str(&shown);
            text.push_str(after);
            text.push_str(&tail);
            secrets.push((kind, secret));
        }
        Planted { text, secrets }
    })
}

#[test]
fn target_secret_detector() {
    use supervisor::secrets::detector::{redact, scan, suggest};
    let outcomes = Outcomes::new(&[
        "texts with credentials",
        "credentials planted",
        "arbitrary texts",
    ]);
    let input = prop_oneof![
        4 => planted_text().prop_map(Ok),
        1 => prop_oneof![
            "\\PC{0,500}",
            hostile_bytes(2_000).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ].prop_map(Err),
    ];
    run(
        "detector",
        300,
        (input, prop::option::of(hostile_string())),
        |(input, project)| {
            let text = match &input {
                Ok(p) => &p.text,
                Err(t) => t,
            };
            let found = scan(text);
            // Findings: in order, not overlapping, on character boundaries, masked without the value.
            let mut last_end = 0;
            for f in &found {
                prop_assert!(f.start < f.end && f.end <= text.len());
                prop_assert!(f.start >= last_end, "overlapping findings");
                prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
                let value = &text[f.start..f.end];
                if value.chars().count() > 8 {
                    prop_assert!(
                        !f.masked().contains(value),
                        "a masked value shows the value"
                    );
                }
                last_end = f.end;
            }
            // Redaction: the text outside the findings is kept as it was, each finding is a marker.
            let redacted = redact(text);
            let mut expected = String::new();
            let mut at = 0;
            for f in &found {
                expected.push_str(&text[at..f.start]);
                expected.push_str(&format!("[REDACTED:{}]", f.kind.as_str()));
                at = f.end;
            }
            expected.push_str(&text[at..]);
            prop_assert_eq!(redacted.as_ref(), expected.as_str());
            if let Ok(p) = &input {
                outcomes.count("texts with credentials");
                for (kind, secret) in &p.secrets {
                    outcomes.count("credentials planted");
                    prop_assert!(
                        !redacted.contains(secret.as_str()),
                        "a planted {} survived redaction: {}",
                        kind,
                        short(secret)
                    );
                    // Not even a long piece of it (a finding that covered only part of it).
                    let chars: Vec<char> = secret.chars().collect();
                    for piece in chars.windows(24).step_by(8) {
                        let piece: String = piece.iter().collect();
                        prop_assert!(
                            !redacted.contains(&piece),
                            "part of a planted {} survived redaction: {}",
                            kind,
                            piece
                        );
                    }
                }
            } else {
                outcomes.count("arbitrary texts");
            }
            // Suggestions: a vault path per finding, or an error for a project name that cannot be one.
            if let Ok(s) = suggest(text, project.as_deref()) {
                prop_assert_eq!(s.len(), found.len());
            } else {
                prop_assert!(project.is_some());
            }
            Ok(())
        },
    );
    outcomes.print("detector");
}

// ---------------------------------------------------------------------------------------------------
// Every MCP tool's arguments, on both endpoint kinds, in process (rmcp's stdio transport over an
// in-memory pipe), on SQLite and on PostgreSQL.

cli_conformance!(
    target_mcp_tool_arguments,
    saved_plans_that_are_not_the_plan_are_refused_and_apply_nothing,
    jsonl_files_with_a_bad_line_import_nothing,
);

use serde_json::{Value, json};
use support::hostile::{self as h, World};

/// Panics anywhere in the process (tool handlers run on rmcp's tasks: a panic there is no answer).
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(info.to_string());
            default(info);
        }));
    });
}

/// One MCP connection to an in-process server over a pipe: newline-delimited JSON-RPC.
struct Pipe {
    write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    read: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    next_id: u64,
}

/// What came back for a request.
#[derive(Debug)]
enum Answer {
    /// A JSON-RPC error.
    Error(Value),
    /// A tool result: `isError`, and the text of its content.
    Tool {
        is_error: bool,
        text: String,
        result: Value,
    },
    /// Any other result.
    Other(Value),
}

impl Pipe {
    async fn open(server: supervisor::mcp::McpServer) -> Pipe {
        use rmcp::ServiceExt;
        use tokio::io::AsyncBufReadExt;
        let (client, server_end) = tokio::io::duplex(1 << 20);
        let (server_read, server_write) = tokio::io::split(server_end);
        tokio::spawn(async move {
            if let Ok(running) = server.serve((server_read, server_write)).await {
                let _ = running.waiting().await;
            }
        });
        let (read, write) = tokio::io::split(client);
        let mut pipe = Pipe {
            write,
            read: tokio::io::BufReader::new(read).lines(),
            next_id: 1,
        };
        let init = pipe
            .request("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile", "version": "1"}}))
            .await
            .expect("initialize answered");
        assert!(matches!(init, Answer::Other(_)), "initialize: {init:?}");
        pipe.send_line(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
                .to_string()
                .as_bytes(),
        )
        .await;
        pipe
    }

    async fn send_line(&mut self, line: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.write.write_all(line).await.unwrap();
        self.write.write_all(b"\n").await.unwrap();
        self.write.flush().await.unwrap();
    }

    /// Sends a request; waits (at most 60 s, failing fast on a panic) for the answer with its id.
    async fn request(&mut self, method: &str, params: Value) -> Result<Answer, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        self.send_line(line.as_bytes()).await;
        self.answer(id).await
    }

    async fn answer(&mut self, id: u64) -> Result<Answer, String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let panicked = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if !panicked.is_empty() {
                return Err(format!("panicked: {panicked:?}"));
            }
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(200), self.read.next_line())
                    .await;
            let line = match next {
                Err(_) if tokio::time::Instant::now() > deadline => {
                    return Err("no answer within 60 s".into());
                }
                Err(_) => continue,
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => return Err("the server closed the connection".into()),
                Ok(Err(e)) => return Err(format!("reading the answer: {e}")),
            };
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("an answer that is not JSON ({e}): {}", short(&line)))?;
            if v.get("id") != Some(&json!(id)) {
                continue; // a notification, or the answer to an unusable request (id null)
            }
            if let Some(e) = v.get("error") {
                return Ok(Answer::Error(e.clone()));
            }
            let result = v
                .get("result")
                .cloned()
                .ok_or_else(|| format!("neither result nor error: {}", short(&line)))?;
            if result.get("content").is_some() {
                let text = result["content"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(|x| x["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                return Ok(Answer::Tool {
                    is_error: result.get("isError") == Some(&json!(true)),
                    text,
                    result,
                });
            }
            return Ok(Answer::Other(result));
        }
    }
}

/// Values an argument of this name is tried with (besides any value of its type, and any value).
fn named_values(name: &str) -> Vec<Value> {
    let strs = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<Value>>();
    match name {
        "project" => strs(&[
            "alpha",
            "beta",
            "alpha/../beta",
            "../beta",
            "/etc",
            "alpha\u{0}",
            "",
            "ALPHA",
            "gamma",
            "alpha/",
            "*",
        ]),
        "service" => strs(&[
            "api", "web", "db", "app", "../db", "new-svc", "a b", "api\u{0}",
        ])
        .into_iter()
        .chain([
            json!({"name": "cache"}),
            json!({"name": "api", "port": 20009}),
            json!({"name": "db", "port": 20101}),
            json!({"name": "x", "hostname": "x.example.com"}),
            json!({"name": "../x"}),
        ])
        .collect(),
        "path" => strs(&[
            "project/alpha/api_key",
            "project/alpha/new_key",
            "service/alpha/api/token",
            "project/beta/db_password",
            "service/beta/db/password",
            "meta/cloudflare/api_token",
            "project/alpha/../beta/db_password",
            "meta/../project/beta/db_password",
            "project/alpha/x\u{0}",
            "project//beta/db_password",
            "/project/alpha/api_key",
        ]),
        "revision" => strs(&[
            "$REVISION",
            "$REVISION",
            "$REVISION",
            "sha256:00000000000000000000000000000000",
            "",
        ]),
        "task_id" | "group_id" | "parent_task_id" | "parallel_group" => strs(&[
            "a-run", "b-1", "alpha-h1", "beta-h1", "new-1", "g-1", "../b-1", "a run", "a\u{0}",
        ]),
        "child_task_ids" => vec![
            json!(["a-run", "new-1"]),
            json!(["b-1"]),
            json!([]),
            json!(["x", "x", "x"]),
        ],
        "check" => strs(&[
            "true",
            "printf checked",
            "false",
            "true; touch pwned",
            "sh -c true",
            " true",
            "TRUE",
            "true\u{0}",
        ]),
        "value" => strs(&["given-s3cr3t-value-1", "given-s3cr3t-value-\u{0}-2", ""]),
        "scope" => strs(&["meta", "project", "service", "all", ""]),
        "expires_at" => strs(&[
            "never",
            "90d",
            "2027-01-31",
            "2027-01-31T00:00:00Z",
            "-1d",
            "999999999999d",
            "yesterday",
        ]),
        "complexity" => strs(&["low", "medium", "high", "huge"]),
        "name" => strs(&["host-1", "key-1", "../x", "Bad Name", ""]),
        "machine_type" => strs(&["e2-standard-8", "custom-4-16384", "x"]),
        "store" => vec![
            json!(true),
            json!(false),
            json!("project/alpha/k"),
            json!("project/beta/k"),
        ],
        "tags" | "sources" | "restrict_apis" => vec![
            json!(["docs"]),
            json!(["learnings"]),
            json!(["a b", "../x"]),
            json!([]),
            json!(["x".repeat(60)]),
        ],
        _ => vec![],
    }
}

/// A near-valid project for `upsert_project`.
fn project_object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["alpha", "beta", "new-proj", "../x", "Bad"]),
        prop::option::of(prop::sample::select(vec![20000i64, 20100, 20300, 70000, -1])),
        prop::collection::vec(prop::sample::select(vec!["api", "web", "db", "cache", "a b"]), 0..4),
        prop::option::of(prop::sample::select(vec!["/tmp", "../../etc", "relative", ""])),
        prop::collection::vec(prop::sample::select(vec!["true", "rm -rf /", ""]), 0..2),
    )
        .prop_map(|(name, range, services, path, checks)| {
            let mut p = json!({"name": name, "services": services.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(), "checks": checks});
            if let Some(r) = range {
                p["port_range"] = json!(r);
            }
            if let Some(path) = path {
                p["path"] = json!(path);
            }
            p
        })
}

/// Free text, now and then with a credential in it, a NUL, or more than a mebibyte.
fn text_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "\\PC{0,120}".prop_map(Value::from),
        2 => prop::sample::select(vec!["fix the form", "the refund crash", "", " ", "a\u{0}b", "token ghp_1234567890abcdefghijABCDEFGHIJ123456 here", "password = \"hunter2hunter2\""]).prop_map(Value::from),
        1 => Just(Value::from("x".repeat((1 << 20) + 1))),
    ]
}

/// The schema type of a property (`string`, `integer`, …), `any` when it says none.
fn schema_type(schema: &Value) -> String {
    match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_string(),
        _ => {
            if let Some(one) = schema
                .get("anyOf")
                .or(schema.get("oneOf"))
                .and_then(Value::as_array)
            {
                one.iter()
                    .map(schema_type)
                    .find(|t| t != "null" && t != "any")
                    .unwrap_or_else(|| "any".into())
            } else {
                "any".into()
            }
        }
    }
}

fn value_of_type(ty: &str) -> BoxedStrategy<Value> {
    match ty {
        "string" => {
            prop_oneof![3 => hostile_string().prop_map(Value::from), 1 => text_value()].boxed()
        }
        "integer" => prop_oneof![
            prop::sample::select(vec![
                0i64,
                1,
                -1,
                5,
                100,
                101,
                10_080,
                10_081,
                65_535,
                i64::MAX,
                i64::MIN
            ]),
            any::<i64>(),
        ]
        .prop_map(Value::from)
        .boxed(),
        "number" => prop_oneof![
            prop::sample::select(vec![
                0.0f64,
                -3.0,
                1e-9,
                60.0,
                600.0,
                7_776_001.0,
                1e308,
                f64::MIN_POSITIVE
            ]),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]
        .prop_map(Value::from)
        .boxed(),
        "boolean" => any::<bool>().prop_map(Value::from).boxed(),
        "array" => prop::collection::vec(hostile_string().prop_map(Value::from), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        _ => json_value().boxed(),
    }
}

/// Arguments for a tool from its input schema: each property (or not) with a value of its name's
/// interesting values, of its type, or of any type; sometimes an unknown key too.
fn arguments_for(tool: &str, schema: &Value) -> BoxedStrategy<Value> {
    let props: Vec<(String, Value)> = schema["properties"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    for (name, prop_schema) in props {
        let named = named_values(&name);
        let typed = value_of_type(&schema_type(&prop_schema));
        let value: BoxedStrategy<Value> = if tool == "upsert_project" && name == "project" {
            prop_oneof![4 => project_object(), 1 => json_value()].boxed()
        } else if matches!(
            name.as_str(),
            "description"
                | "text"
                | "title"
                | "query"
                | "output_summary"
                | "error_message"
                | "display_name"
        ) {
            prop_oneof![4 => text_value(), 1 => json_value()].boxed()
        } else if named.is_empty() {
            prop_oneof![5 => typed, 1 => json_value()].boxed()
        } else {
            prop_oneof![4 => prop::sample::select(named), 2 => typed, 1 => json_value()].boxed()
        };
        let name2 = name.clone();
        fields.push(
            prop::option::weighted(0.85, value.prop_map(move |v| (name2.clone(), v))).boxed(),
        );
    }
    let extra = prop::option::weighted(0.1, (hostile_string(), json_value()));
    (fields, extra)
        .prop_map(|(fields, extra)| {
            let mut o = serde_json::Map::new();
            for (k, v) in fields.into_iter().flatten() {
                o.insert(k, v);
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
        .boxed()
}

#[derive(Clone)]
struct ToolCase {
    /// The project endpoint (alpha's) or the meta endpoint.
    project_endpoint: bool,
    tool: String,
    /// `None`: no `arguments` at all.
    arguments: Option<Value>,
}

/// A value with its long strings shortened, for failure messages.
fn abbreviated(v: &Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > 200 => Value::String(format!(
            "{}…({} chars)",
            s.chars().take(40).collect::<String>(),
            s.chars().count()
        )),
        Value::Array(a) => Value::Array(a.iter().map(abbreviated).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (short(k), abbreviated(v))).collect())
        }
        other => other.clone(),
    }
}

impl std::fmt::Debug for ToolCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} with {}",
            self.tool,
            if self.project_endpoint {
                "/mcp/alpha"
            } else {
                "/mcp/meta"
            },
            self.arguments
                .as_ref()
                .map_or("no arguments".into(), |a| abbreviated(a).to_string())
        )
    }
}

fn tool_cases(tools: Vec<(String, Value)>) -> impl Strategy<Value = ToolCase> {
    let mut per_tool: Vec<BoxedStrategy<(String, Option<Value>)>> = tools
        .into_iter()
        .map(|(name, schema)| {
            let args = prop_oneof![
                16 => arguments_for(&name, &schema).prop_map(Some),
                2 => json_value().prop_map(Some),
                1 => Just(None),
            ];
            (Just(name), args).boxed()
        })
        .collect();
    per_tool.push(
        (
            Just("no_such_tool".to_string()),
            json_value().prop_map(Some),
        )
            .boxed(),
    );
    let count = per_tool.len();
    (any::<bool>(), 0..count).prop_flat_map(move |(project_endpoint, i)| {
        per_tool[i]
            .clone()
            .prop_map(move |(tool, arguments)| ToolCase {
                project_endpoint,
                tool,
                arguments,
            })
    })
}

fn with_revision(v: &mut Value, revision: &str) {
    match v {
        Value::String(s) if s == "$REVISION" => *s = revision.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| with_revision(x, revision)),
        Value::Object(o) => o.values_mut().for_each(|x| with_revision(x, revision)),
        _ => {}
    }
}

async fn target_mcp_tool_arguments(ws: support::Workspace) {
    use supervisor::mcp::auth::Principal;
    use supervisor::mcp::{Endpoint, McpServer};
    count_panics();
    let key = h::seed(&ws);
    let settings = supervisor::config::Settings {
        state_dir: ws.state(),
        database: ws.location(),
        key_file: Some(key),
        config_path: None,
        file: Default::default(),
    };
    let store = supervisor::store::open(&settings.database).await.unwrap();
    let vault = supervisor::ops::runtime::VaultState::load(&settings, &store);
    let rt = supervisor::ops::Runtime::load(settings, store, vault, false)
        .await
        .unwrap();
    let local = || Principal::Local {
        who: "hostile".into(),
    };
    let mut meta = Pipe::open(McpServer::new(rt.clone(), Endpoint::Meta, local())).await;
    let alpha = Pipe::open(McpServer::new(
        rt.clone(),
        Endpoint::Project("alpha".into()),
        local(),
    ))
    .await;
    let world = World::open(&ws).await;

    let listed = match meta.request("tools/list", json!({})).await.unwrap() {
        Answer::Other(v) => v,
        other => panic!("tools/list: {other:?}"),
    };
    let tools: Vec<(String, Value)> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["inputSchema"].clone(),
            )
        })
        .collect();
    assert!(tools.len() >= 29, "{} tools listed", tools.len());
    let strategy = tool_cases(tools);

    let handle = tokio::runtime::Handle::current();
    let state = std::sync::Mutex::new((meta, alpha, world, rt));
    let outcomes = Outcomes::new(&["ok", "tool error", "protocol error"]);
    let backend = if ws.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    tokio::task::block_in_place(|| {
        run(
            &format!("mcp_tool_arguments ({backend})"),
            150,
            strategy,
            |case| {
                let mut guard = state.lock().unwrap();
                let (meta, alpha, world, rt) = &mut *guard;
                handle.block_on(async {
                    let revision = rt.desired().await.revision.clone();
                    let mut params = json!({"name": case.tool});
                    if let Some(mut args) = case.arguments.clone() {
                        with_revision(&mut args, &revision);
                        params["arguments"] = args;
                    }
                    let before = world.fingerprint(None).await;
                    let beta_before = world.fingerprint(Some("beta")).await;
                    let pipe = if case.project_endpoint { alpha } else { meta };
                    let answer = pipe
                        .request("tools/call", params)
                        .await
                        .map_err(TestCaseError::fail)?;
                    let after = world.fingerprint(None).await;
                    let (refused, text) = match &answer {
                        Answer::Error(e) => {
                            outcomes.count("protocol error");
                            let msg = e["message"].as_str().unwrap_or_default().to_string();
                            prop_assert!(!msg.is_empty(), "an error without a message: {e}");
                            (true, e.to_string())
                        }
                        Answer::Tool {
                            is_error: true,
                            text,
                            ..
                        } => {
                            outcomes.count("tool error");
                            prop_assert!(!text.trim().is_empty(), "a tool error without a message");
                            (true, text.clone())
                        }
                        Answer::Tool { result, .. } => {
                            outcomes.count("ok");
                            (false, result.to_string())
                        }
                        Answer::Other(v) => {
                            return Err(TestCaseError::fail(format!("tools/call answered {v}")));
                        }
                    };
                    if refused && std::env::var_os("HOSTILE_SHOW_ERRORS").is_some() {
                        eprintln!(
                            "refused {} : {}",
                            case.tool,
                            short(&text).replace('\n', " ")
                        );
                    }
                    if refused {
                        let changed = h::changed(&before, &after);
                        prop_assert!(
                            changed.is_empty(),
                            "{} refused ({}) but changed {:?}",
                            case.tool,
                            short(&text),
                            changed
                        );
                        prop_assert!(
                            text.chars().count() <= 4_000,
                            "an error of {} characters: {}",
                            text.chars().count(),
                            short(&text)
                        );
                        // The database's own complaint is not an answer an agent can act on: bad
                        // input is refused before it reaches the store, the same on both backends.
                        prop_assert!(
                            !text.contains("error returned from database"),
                            "{} refused by the database: {}",
                            case.tool,
                            short(&text)
                        );
                    }
                    if case.project_endpoint {
                        let beta_after = world.fingerprint(Some("beta")).await;
                        let changed = h::changed(&beta_before, &beta_after);
                        prop_assert!(
                            changed.is_empty(),
                            "alpha's endpoint changed beta's {:?} ({})",
                            changed,
                            short(&text)
                        );
                        prop_assert!(
                            !text.contains(h::BETA_MARK),
                            "alpha's endpoint returned beta's data: {}",
                            short(&text)
                        );
                    }
                    if case.tool != "get_secret" || refused {
                        prop_assert!(
                            !text.contains(h::SECRET_MARK),
                            "{} returned a secret value: {}",
                            case.tool,
                            short(&text)
                        );
                    }
                    Ok(())
                })
            },
        );
    });
    outcomes.print(&format!("mcp_tool_arguments ({backend})"));

    // Lines that are not requests at all: bytes that are not UTF-8, nesting beyond the parser's
    // limit, a request whose id is unusable. Each gets no answer or an error, changes nothing, and
    // the connection keeps serving.
    let (mut meta, mut alpha, world, _rt) = state.into_inner().unwrap();
    for pipe in [&mut meta, &mut alpha] {
        let before = world.fingerprint(None).await;
        let mut not_utf8 = br#"{"jsonrpc": "2.0", "id": 9000, "method": "tools/call", "params": {"name": "add_learning", "arguments": {"title": "t", "text": ""#.to_vec();
        not_utf8.extend([0xff, 0xfe, b'"', b'}', b'}', b'}']);
        let deep = format!(
            r#"{{"jsonrpc": "2.0", "id": 9001, "method": "tools/call", "params": {{"name": "add_learning", "arguments": {{"title": "t", "text": "x", "tags": {}}}}}}}"#,
            nested(10_000, "\"x\"")
        );
        for line in [
            not_utf8,
            deep.into_bytes(),
            br#"{"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/list"}"#.to_vec(),
            b"\0\0\0".to_vec(),
        ] {
            pipe.send_line(&line).await;
            let pong = pipe
                .request("ping", json!({}))
                .await
                .expect("the connection keeps serving");
            assert!(matches!(pong, Answer::Other(_)), "{pong:?}");
        }
        assert_eq!(
            h::changed(&before, &world.fingerprint(None).await),
            Vec::<String>::new()
        );
    }
    assert!(PANICS.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// The readers end to end: the binary, on both backends

/// `supervisor apply FILE` with every kind of broken or altered plan file: exit 1, a message saying
/// what is wrong, and nothing applied (the pending changes are still pending); the genuine file then
/// applies.
async fn saved_plans_that_are_not_the_plan_are_refused_and_apply_nothing(ws: support::Workspace) {
    ws.write("state/supervisor.yaml", PLAN_SUP);
    ws.write("state/projects/alpha.yaml", PLAN_ALPHA);
    ws.write("state/projects/beta.yaml", PLAN_BETA);
    ws.ok(&["apply", "--auto-approve"], 0);
    ws.write(
        "state/projects/alpha.yaml",
        "name: alpha\nport_range: 20000\nservices:\n  - name: api\n    port: 20005\n  - name: worker\n",
    );
    ws.ok(&["plan", "--out", "plan.json"], 0);
    let genuine = ws.read("plan.json");
    let ports_before = ws.ok(&["ports", "list", "--json"], 0);
    let world = World::open(&ws).await;
    let before = world.fingerprint(None).await;

    let mut not_utf8 = genuine.clone().into_bytes();
    let at = genuine.find("\"summary\"").unwrap() + 12;
    not_utf8.splice(at..at, [0xc3, 0x28]);
    let deep_after = genuine.replacen(
        "\"after\": {",
        &format!("\"after\": {{\"deep\": {},", nested(10_000, "1")),
        1,
    );
    let other_port = genuine.replacen("20005", "20007", 1);
    let other_scope = genuine.replacen("\"scope\": {}", "\"scope\": {\"project\": \"../beta\"}", 1);
    let only_beta = genuine.replacen("\"scope\": {}", "\"scope\": {\"project\": \"beta\"}", 1);
    let v2 = genuine.replacen("\"format_version\": \"1\"", "\"format_version\": \"2\"", 1);
    let no_changes = {
        let mut v: Value = serde_json::from_str(&genuine).unwrap();
        v["changes"] = json!([]);
        v.to_string()
    };
    let huge = format!("{}{genuine}", " ".repeat(20 << 20));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not UTF-8", not_utf8, "the file is not UTF-8 text"),
        (
            "10,000-deep after",
            deep_after.into_bytes(),
            "recursion limit exceeded",
        ),
        (
            "cut in half",
            genuine.as_bytes()[..genuine.len() / 2].to_vec(),
            "EOF while parsing",
        ),
        ("empty", Vec::new(), "EOF while parsing"),
        (
            "format 2",
            v2.into_bytes(),
            "format_version \"2\" is not supported",
        ),
        ("another port", other_port.into_bytes(), "stale"),
        ("no changes", no_changes.into_bytes(), "stale"),
        ("scope ../beta", other_scope.into_bytes(), "../beta"),
        ("scope beta", only_beta.into_bytes(), "stale"),
    ];
    for (what, bytes, says) in cases {
        std::fs::write(ws.path().join("altered.json"), &bytes).unwrap();
        let out = ws.run(&["apply", "altered.json"]);
        let (stdout, stderr) = (support::stdout(&out), support::stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{what}:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(says) || stdout.contains(says),
            "{what}: no `{says}` in:\n{stdout}\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(
            h::changed(&before, &world.fingerprint(None).await),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(
            ws.ok(&["ports", "list", "--json"], 0),
            ports_before,
            "{what}"
        );
    }
    // A directory, a missing file.
    for path in [".", "missing.json"] {
        let out = ws.run(&["apply", path]);
        assert_eq!(out.status.code(), Some(1), "{path}");
        assert!(
            support::stderr(&out).contains("the saved plan cannot be read"),
            "{path}: {}",
            support::stderr(&out)
        );
        assert_eq!(
            h::changed(&before, &world.fingerprint(None).await),
            Vec::<String>::new()
        );
    }
    // The genuine plan behind 20 MB of blanks (JSON's whitespace) is the plan: it reads and applies.
    std::fs::write(ws.path().join("padded.json"), huge).unwrap();
    ws.ok(&["apply", "--allow-disruptive", "padded.json"], 0);
    ws.ok(&["plan", "--detailed-exitcode"], 0);
    assert_ne!(ws.ok(&["ports", "list", "--json"], 0), ports_before);
}

/// `timing import` and `knowledge index --jsonl` with one bad line among good ones: exit 1, the line
/// named, nothing imported (no row written).
async fn jsonl_files_with_a_bad_line_import_nothing(ws: support::Workspace) {
    ws.write("state/supervisor.yaml", "");
    ws.write("state/projects/alpha.yaml", "name: alpha\n");
    ws.ok(&["plan"], 0);
    let world = World::open(&ws).await;
    let before = world.fingerprint(None).await;
    let good = |i: usize| {
        json!({"task_id": format!("T-{i}"), "description": "fix the form", "task_type": "bugfix", "project": "alpha", "duration_seconds": 60}).to_string()
    };
    let record = |i: usize| json!({"id": format!("doc-{i}"), "text": "how to deploy"}).to_string();
    let bad_lines: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not UTF-8", b"{\"task_id\": \"T-\xff\"}".to_vec(), "the line is not UTF-8 text"),
        // Each reader refuses the first key it cannot take (a type, or an unknown field).
        ("10,000 deep", format!("{{\"task_id\": {}, \"id\": {0}}}", nested(10_000, "1")).into_bytes(), ""),
        ("a 2 MB line", format!("{{\"task_id\": \"{}\"}}", "x".repeat(2 << 20)).into_bytes(), ""),
        ("a NUL", br#"{"task_id": "T-9", "description": "a\u0000b", "task_type": "bugfix", "project": "alpha", "duration_seconds": 60, "id": "d", "text": "a\u0000b"}"#.to_vec(), ""),
        ("not an object", b"[1, 2]".to_vec(), "invalid type"),
    ];
    for (what, bad, says) in bad_lines {
        for (command, line) in [
            ("timing", &good as &dyn Fn(usize) -> String),
            ("knowledge", &record),
        ] {
            let mut file = format!("{}\n{}\n", line(1), line(2)).into_bytes();
            file.extend_from_slice(&bad);
            file.extend_from_slice(format!("\n{}\n", line(4)).as_bytes());
            std::fs::write(ws.path().join("in.jsonl"), &file).unwrap();
            let out = match command {
                "timing" => ws.run(&["timing", "import", "in.jsonl"]),
                _ => ws.run(&[
                    "knowledge",
                    "index",
                    "--jsonl",
                    "in.jsonl",
                    "--source",
                    "docs",
                    "--project",
                    "alpha",
                ]),
            };
            let stderr = support::stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{command} {what}: {stderr}");
            assert!(
                stderr.contains("in.jsonl:3:"),
                "{command} {what}: the line is not named: {}",
                short(&stderr)
            );
            assert!(
                stderr.contains(says),
                "{command} {what}: no `{says}` in {}",
                short(&stderr)
            );
            assert!(
                stderr.chars().count() < 2_000,
                "{command} {what}: {}",
                short(&stderr)
            );
            assert_eq!(
                h::changed(&before, &world.fingerprint(None).await),
                Vec::<String>::new(),
                "{command} {what}"
            );
        }
    }
}
