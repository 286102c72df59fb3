//! Knowledge search: latency at scale on both backends, and indexing throughput with the offline model.
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://… SUPERVISOR_MODEL_DIR=…/model cargo bench --bench knowledge
//! ```
//!
//! - **search**: 20,000 chunks on SQLite and 100,000 on PostgreSQL (synthetic: words drawn from a
//!   5,000-word vocabulary with a Zipf-like law, 384-dimension unit vectors stored as all-MiniLM-L6-v2's,
//!   so PostgreSQL uses that model's HNSW index), 300 queries through `Searcher::search` (hybrid,
//!   full text, vector; limit 10, depth 100). The query vector comes from a table (a query's own
//!   embedding time is measured separately below), so the figures are the store's and the fusion's.
//!   Also: recall@10 of the HNSW scan against an exact scan of the same vectors.
//! - **embed**: one short query with the local model (what a search adds), and 512 chunk-sized texts
//!   (texts/s on this machine's cores).
//! - **index**: a generated tree of 400 code files and 100 markdown files through the real indexer
//!   (chunks/s, texts/s) and the process's peak memory (`VmHWM`).
//!
//! Knobs: `KNOWLEDGE_BENCH_SQLITE_CHUNKS` (20000), `KNOWLEDGE_BENCH_PG_CHUNKS` (100000),
//! `KNOWLEDGE_BENCH_PARTS=search,embed,index` (all). PostgreSQL is measured when TEST_DATABASE_URL is
//! set; the model parts when SUPERVISOR_MODEL_DIR is.

#[path = "../tests/support/db.rs"]
#[allow(dead_code)]
mod db;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use supervisor::knowledge::embed::{EmbedError, Embedder, EmbedderChoice, EmbedderConfig};
use supervisor::knowledge::index::{IndexOptions, Indexer, NoProgress, Target};
use supervisor::knowledge::search::{SearchQuery, Searcher, Strategy};
use supervisor::store::{
    self, ChunkFilter, DocumentKind, DocumentRecord, Location, NewChunk, Store,
};

const DIM: usize = 384;
const MODEL: &str = "all-MiniLM-L6-v2";
const CHUNKS_PER_DOC: usize = 10;
const QUERIES: usize = 300;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (no dependency on rand's algorithms across versions).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
    fn vector(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM).map(|_| self.gauss()).collect();
        normalize(&mut v);
        v
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn vocabulary() -> Vec<String> {
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "fa", "gu", "ho", "ji", "be", "zo",
        "ve", "wa", "xi", "yu", "co",
    ];
    let mut rng = Rng(7);
    (0..5000)
        .map(|_| {
            let n = 2 + (rng.next() % 3) as usize;
            (0..n)
                .map(|_| syllables[(rng.next() % syllables.len() as u64) as usize])
                .collect()
        })
        .collect()
}

/// A word index with a Zipf-like law (rank r has weight ~1/r).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let u = rng.unit() as f64;
    ((n as f64).powf(u) - 1.0) as usize % n
}

/// Query text → vector, as if a model had embedded it.
struct TableEmbedder(HashMap<String, Vec<f32>>);

#[async_trait]
impl Embedder for TableEmbedder {
    fn model(&self) -> &str {
        MODEL
    }
    fn batch_size(&self) -> usize {
        64
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|t| self.0.get(t).cloned().unwrap_or_else(|| vec![0.0; DIM]))
            .collect())
    }
}

struct Corpus {
    vectors: Vec<Vec<f32>>,
    queries: Vec<(String, Vec<f32>)>,
}

async fn load(store: &Arc<dyn Store>, chunks: usize) -> Corpus {
    let words = vocabulary();
    let mut rng = Rng(42);
    let mut vectors = Vec::with_capacity(chunks);
    let started = Instant::now();
    for d in 0..chunks / CHUNKS_PER_DOC {
        let mut new_chunks = Vec::with_capacity(CHUNKS_PER_DOC);
        for c in 0..CHUNKS_PER_DOC {
            let content: Vec<&str> = (0..60)
                .map(|_| words[zipf(&mut rng, words.len())].as_str())
                .collect();
            let content = content.join(" ");
            let v = rng.vector();
            vectors.push(v.clone());
            new_chunks.push(NewChunk {
                chunk_index: c as i32,
                title: Some(format!("section {d}.{c}")),
                lexemes: String::new(),
                content_hash: format!("{d}-{c}"),
                content,
                url: None,
                line_start: Some(c as i32 * 10 + 1),
                line_end: Some(c as i32 * 10 + 10),
                tags: vec![],
                embedding: Some((MODEL.to_string(), v)),
            });
        }
        let doc = DocumentRecord {
            project: format!("p{}", d % 10),
            source: "docs".into(),
            document: format!("/srv/p/doc-{d}.md"),
            kind: DocumentKind::Markdown,
            url: None,
            title: None,
            tags: vec![],
            content_hash: format!("doc-{d}"),
            size_bytes: 4000,
            modified_at: None,
            model: Some(MODEL.into()),
            chunk_count: CHUNKS_PER_DOC as i32,
            masked_secrets: 0,
            indexed_at: Utc::now(),
        };
        store
            .replace_document(&doc, &new_chunks)
            .await
            .expect("load a document");
    }
    eprintln!(
        "  loaded {chunks} chunks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let queries = (0..QUERIES)
        .map(|i| {
            let base = &vectors[(rng.next() % vectors.len() as u64) as usize];
            let mut q: Vec<f32> = base.iter().map(|x| x + 0.05 * rng.gauss()).collect();
            normalize(&mut q);
            let text = format!(
                "{} {} q{i}",
                words[zipf(&mut rng, words.len())],
                words[zipf(&mut rng, 500) + 20]
            );
            (text, q)
        })
        .collect();
    Corpus { vectors, queries }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn search_phase(backend: &str, store: Arc<dyn Store>, corpus: &Corpus) {
    let table: HashMap<String, Vec<f32>> = corpus.queries.iter().cloned().collect();
    let searcher = Searcher::new(store.clone(), Some(Arc::new(TableEmbedder(table))));
    for (strategy, filtered) in [
        (Strategy::Hybrid, false),
        (Strategy::FullText, false),
        (Strategy::Vector, false),
        (Strategy::Hybrid, true),
    ] {
        let filter = ChunkFilter {
            projects: filtered.then(|| vec!["p3".to_string(), String::new()]),
            ..Default::default()
        };
        // Warm-up: caches and prepared statements, as in a running server.
        for (text, _) in corpus.queries.iter().take(20) {
            let _ = searcher
                .search(&SearchQuery {
                    text: text.clone(),
                    filter: filter.clone(),
                    limit: 10,
                    strategy,
                })
                .await;
        }
        let mut times = Vec::with_capacity(corpus.queries.len());
        let mut hits = 0usize;
        for (text, _) in &corpus.queries {
            let t = Instant::now();
            let r = searcher
                .search(&SearchQuery {
                    text: text.clone(),
                    filter: filter.clone(),
                    limit: 10,
                    strategy,
                })
                .await
                .expect("search");
            times.push(t.elapsed());
            hits += r.hits.len();
        }
        times.sort();
        println!(
            "| {backend} | {} chunks | {strategy:?}{} | {:.1} | {:.1} | {:.1} | {:.1} |",
            corpus.vectors.len(),
            if filtered {
                " (one project of 10 + shared)"
            } else {
                ""
            },
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
            hits as f64 / corpus.queries.len() as f64,
        );
    }
    // Approximate (HNSW) against exact nearest neighbours.
    let mut found = 0usize;
    for (_, q) in corpus.queries.iter().take(100) {
        let mut exact: Vec<(usize, f32)> = corpus
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(q).map(|(a, b)| a * b).sum()))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let want: Vec<f32> = exact.iter().take(10).map(|x| x.1).collect();
        let got = store
            .vector_search(&ChunkFilter::default(), MODEL, q, 10)
            .await
            .expect("vector search");
        // Compare by similarity value (ids differ from positions): a hit within 1e-4 of an exact one.
        found += got
            .iter()
            .filter(|h| want.iter().any(|w| (h.score as f32 - w).abs() < 1e-4))
            .count();
    }
    println!(
        "  {backend}: vector recall@10 against an exact scan: {:.3}",
        found as f64 / 1000.0
    );
}

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = store::open(&Location::Sqlite(dir.path().join("bench.db")))
        .await
        .expect("open SQLite");
    (store, dir)
}

async fn postgres_store() -> (Arc<dyn Store>, String) {
    let url = db::fresh_postgres_url().await;
    let store = store::open(&Location::Postgres(url.clone()))
        .await
        .expect("open PostgreSQL");
    (store, url)
}

/// PostgreSQL: load without the HNSW index, then build it once (as a restore or a re-embed would).
async fn postgres_corpus(url: &str, store: &Arc<dyn Store>, chunks: usize) -> Corpus {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    sqlx::query("DROP INDEX knowledge_chunks_hnsw_all_minilm_l6_v2")
        .execute(&pool)
        .await
        .expect("drop index");
    let corpus = load(store, chunks).await;
    let started = Instant::now();
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *conn)
        .await
        .expect("set");
    sqlx::query(
        "CREATE INDEX knowledge_chunks_hnsw_all_minilm_l6_v2 ON knowledge_chunks
             USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE model = 'all-MiniLM-L6-v2'",
    )
    .execute(&mut *conn)
    .await
    .expect("create index");
    sqlx::query("ANALYZE knowledge_chunks")
        .execute(&mut *conn)
        .await
        .expect("analyze");
    eprintln!(
        "  built the HNSW index in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(conn);
    pool.close().await;
    corpus
}

fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn model() -> Option<Arc<dyn Embedder>> {
    match EmbedderConfig::default().open(None, "bench").await {
        Ok(EmbedderChoice::Ready(e)) => Some(e),
        Ok(EmbedderChoice::Unavailable(_)) => None,
        Err(e) => panic!("{e}"),
    }
}

fn chunk_text(rng: &mut Rng, words: &[String], n: usize) -> String {
    (0..n)
        .map(|_| words[zipf(rng, words.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn embed_phase(model: &Arc<dyn Embedder>) {
    let mut times = Vec::new();
    for i in 0..50 {
        let q = vec![format!("how do I roll back deploy number {i}")];
        let t = Instant::now();
        model.embed(&q).await.expect("embed");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "  one query embedded: p50 {:.1} ms, p95 {:.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.95)
    );
    let words: Vec<String> = [
        "deploy", "the", "service", "port", "config", "read", "file", "error", "value", "return",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(9);
    let texts: Vec<String> = (0..512)
        .map(|_| chunk_text(&mut rng, &words, 150))
        .collect();
    let t = Instant::now();
    model.embed(&texts).await.expect("embed");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  512 chunk-sized texts (150 words, ~200 tokens): {:.1} s, {:.1} texts/s on {} cores",
        secs,
        512.0 / secs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

async fn index_phase(model: Option<Arc<dyn Embedder>>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tree = dir.path().join("tree");
    for i in 0..400 {
        let body: String = (0..12)
            .map(|j| format!("    let value_{j} = compute_{i}_{j}(input, {j});\n"))
            .collect();
        let p = tree.join(format!("src/mod{}/file{i}.rs", i % 20));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            format!("/// Computes part {i}.\npub fn part_{i}(input: u32) -> u32 {{\n{body}    input\n}}\n\npub struct Holder{i} {{ value: u32 }}\n"),
        )
        .unwrap();
    }
    for i in 0..100 {
        let p = tree.join(format!("docs/guide{i}.md"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let sections: String = (0..4)
            .map(|s| format!("## Step {s}\n\nRun the deploy step {s} of guide {i}, then check the service logs and the port registry before moving on.\n\n"))
            .collect();
        std::fs::write(&p, format!("# Guide {i}\n\n{sections}")).unwrap();
    }
    let (store, _db) = sqlite_store().await;
    let has_model = model.is_some();
    let indexer = Indexer::new(store, model, IndexOptions::default());
    let target = Target::new(Some("bench"), "tree").expect("target");
    let t = Instant::now();
    let r = indexer
        .index_paths(&target, std::slice::from_ref(&tree), &NoProgress)
        .await
        .expect("index");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  indexed 500 files ({} chunks, {} embedded) in {secs:.1} s: {:.0} chunks/s{}; peak memory {:.0} MB",
        r.chunks_written,
        r.chunks_embedded,
        r.chunks_written as f64 / secs,
        if has_model {
            format!(", {:.1} embedded texts/s", r.chunks_embedded as f64 / secs)
        } else {
            " (no model: full text only)".to_string()
        },
        peak_memory_mb().unwrap_or(0.0)
    );
    let t = Instant::now();
    let r = indexer
        .index_paths(&target, &[tree], &NoProgress)
        .await
        .expect("index again");
    println!(
        "  re-index unchanged: {:.0} ms, {} embedded",
        t.elapsed().as_secs_f64() * 1000.0,
        r.chunks_embedded
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` builds benches; only `cargo bench` runs them.
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parts =
        std::env::var("KNOWLEDGE_BENCH_PARTS").unwrap_or_else(|_| "search,embed,index".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let model = model().await;
        if parts.contains("index") {
            println!("\nindexing (SQLite):");
            index_phase(model.clone()).await;
        }
        if parts.contains("embed") {
            match &model {
                Some(m) => {
                    println!("\nembedding ({}):", m.model());
                    embed_phase(m).await;
                }
                None => eprintln!("SUPERVISOR_MODEL_DIR is not set: embedding not measured"),
            }
        }
        if parts.contains("search") {
            println!("\n| backend | size | strategy | p50 ms | p95 ms | p99 ms | results |");
            println!("|---|---|---|---|---|---|---|");
            let (store, _dir) = sqlite_store().await;
            let corpus = load(&store, env_number("KNOWLEDGE_BENCH_SQLITE_CHUNKS", 20_000)).await;
            search_phase("SQLite", store, &corpus).await;
            if std::env::var("TEST_DATABASE_URL").is_ok() {
                let (store, url) = postgres_store().await;
                let corpus = postgres_corpus(
                    &url,
                    &store,
                    env_number("KNOWLEDGE_BENCH_PG_CHUNKS", 100_000),
                )
                .await;
                search_phase("PostgreSQL", store, &corpus).await;
                db::drop_test_database(&url);
            } else {
                eprintln!("TEST_DATABASE_URL is not set: PostgreSQL not measured");
            }
        }
    });
}
