//! Measures the estimator on real data: the Deep-SE story-point dataset (16 open-source projects,
//! 23,313 Jira issues, chronological train/val/test split per project).
//!
//! ```sh
//! cargo run --release --example eval_estimation -- /path/to/deepse-storypoints
//! # or SUPERVISOR_DEEPSE_DIR=/path/to/deepse-storypoints; DATABASE_URL=postgres://… for PostgreSQL
//! # --split val|test (default: both), --sweep (tune the estimator's parameters on val)
//! ```
//!
//! How: story points × 3600 are seconds, the project is the file name, the task type is `story`, the
//! description is the title and the description joined. The `train` issues are written to a real store
//! (a temporary SQLite file, or the PostgreSQL database of DATABASE_URL) through `Timing::import` —
//! the code path of `supervisor timing import` — and every `val`/`test` issue is estimated with
//! `Timing::estimate`, the call behind `timing estimate` and the `estimate_task` tool. Baselines are
//! computed from the same train issues: the specification's method (category mean ± 1.96 σ in seconds,
//! category = type + project) and the global median (with the 2.5 %–97.5 % quantiles of all durations
//! as its interval).
//!
//! Deep-SE has no estimates made by the people who did the work, so the caller's-estimate mode uses a
//! simulated caller: `own = actual × exp(N(μ = −0.3, σ = 0.6))`, i.e. an optimist who on average says
//! 74 % of the real effort and is off by a factor of 1.8 either way one time in three (seeded, so every
//! run sees the same estimates). Train issues carry such an estimate too, which is the history the
//! calibration learns the caller's bias and spread from (Evidence-Based Scheduling).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use supervisor::store::{self, Location, Store};
use supervisor::timing::estimate::{Levels, Params};
use supervisor::timing::service::EstimateRequest;
use supervisor::timing::{Scope, Timing};

const SEED: u64 = 20_261_101;
const CALLER_BIAS: f64 = -0.3;
const CALLER_NOISE: f64 = 0.6;
const Z: f64 = 1.959_963_984_540_054;

struct Issue {
    key: String,
    project: String,
    text: String,
    seconds: f64,
    split: String,
    /// The simulated caller's own estimate.
    own: f64,
}

/// RFC 4180 CSV: quoted fields may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn normal(rng: &mut impl Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn load(dir: &Path) -> anyhow::Result<Vec<Issue>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.csv files in {}", dir.display());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut issues = Vec::new();
    for f in files {
        let project = f
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?
            .to_string();
        let text = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        let rows = parse_csv(&text);
        let header = rows.first().context("empty CSV")?;
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .with_context(|| format!("{}: no column {name}", f.display()))
        };
        let (k, t, d, sp, sm) = (
            col("issuekey")?,
            col("title")?,
            col("description")?,
            col("storypoint")?,
            col("split_mark")?,
        );
        for (i, r) in rows.iter().enumerate().skip(1) {
            if r.len() < header.len() {
                continue;
            }
            let points: f64 = r[sp]
                .trim()
                .parse()
                .with_context(|| format!("{}: row {i}: storypoint `{}`", f.display(), r[sp]))?;
            let seconds = points * 3600.0;
            issues.push(Issue {
                key: r[k].clone(),
                project: project.clone(),
                text: format!("{}\n{}", r[t], r[d]),
                seconds,
                split: r[sm].trim().to_string(),
                own: seconds * (CALLER_BIAS + CALLER_NOISE * normal(&mut rng)).exp(),
            });
        }
    }
    Ok(issues)
}

/// One method's figures on one split.
#[derive(Default)]
struct Tally {
    log_errors: Vec<f64>,
    covered: usize,
    with_interval: usize,
    /// high / low (infinite when low <= 0).
    widths: Vec<f64>,
    negative_lows: usize,
}

impl Tally {
    fn add(&mut self, estimate: f64, actual: f64, interval: Option<(f64, f64)>) {
        self.log_errors
            .push((estimate.max(1e-9) / actual).ln().abs());
        if let Some((lo, hi)) = interval {
            self.with_interval += 1;
            if lo <= actual && actual <= hi {
                self.covered += 1;
            }
            if lo <= 0.0 {
                self.negative_lows += 1;
                self.widths.push(f64::INFINITY);
            } else {
                self.widths.push(hi / lo);
            }
        }
    }

    fn median_error(&self) -> f64 {
        median(&self.log_errors)
    }

    fn row(&self, name: &str, reference: Option<f64>) -> String {
        let err = self.median_error();
        let vs = match reference {
            Some(r) if r > 0.0 => format!("{:+.1} %", (err / r - 1.0) * 100.0),
            _ => "—".into(),
        };
        let (cov, width) = if self.with_interval == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            let w = median(&self.widths);
            let w = if w.is_finite() {
                format!("{w:.1}")
            } else {
                "∞".into()
            };
            let neg = if self.negative_lows > 0 {
                format!(
                    " ({:.0} % of lows < 0)",
                    100.0 * self.negative_lows as f64 / self.with_interval as f64
                )
            } else {
                String::new()
            };
            (
                format!("{:.3}", self.covered as f64 / self.with_interval as f64),
                format!("{w}{neg}"),
            )
        };
        format!(
            "| {name} | {err:.3} | {vs} | {:.3} | {cov} | {width} |",
            mean(&self.log_errors)
        )
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn percentile_ms(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    quantile(v, q)
}

fn history_jsonl(train: &[&Issue]) -> String {
    let mut out = String::new();
    for i in train {
        out.push_str(
            &serde_json::json!({
                "task_id": i.key, "description": i.text, "task_type": "story", "project": i.project,
                "duration_seconds": i.seconds, "estimated_seconds": i.own,
            })
            .to_string(),
        );
        out.push('\n');
    }
    out
}

struct Results {
    spec: Tally,
    global: Tally,
    ours: Tally,
    raw_own: Tally,
    calibrated_own_only: Tally,
    ours_own: Tally,
    latencies_ms: Vec<f64>,
}

async fn evaluate(
    timing: &Timing,
    train: &[&Issue],
    items: &[&Issue],
    with_own: bool,
) -> anyhow::Result<Results> {
    // Baselines from the train issues.
    let mut by_project: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    for i in train {
        by_project.entry(&i.project).or_default().push(i.seconds);
        ratios
            .entry(&i.project)
            .or_default()
            .push((i.seconds / i.own).ln());
    }
    let mut all: Vec<f64> = train.iter().map(|i| i.seconds).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let (g_med, g_lo, g_hi) = (
        quantile(&all, 0.5),
        quantile(&all, 0.025),
        quantile(&all, 0.975),
    );
    let mut r = Results {
        spec: Tally::default(),
        global: Tally::default(),
        ours: Tally::default(),
        raw_own: Tally::default(),
        calibrated_own_only: Tally::default(),
        ours_own: Tally::default(),
        latencies_ms: Vec::new(),
    };
    for item in items {
        let ys = by_project.get(item.project.as_str()).map_or(&[][..], |v| v);
        if ys.len() >= 2 {
            let m = mean(ys);
            let sd =
                (ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (ys.len() - 1) as f64).sqrt();
            r.spec.add(m, item.seconds, Some((m - Z * sd, m + Z * sd)));
        }
        r.global.add(g_med, item.seconds, Some((g_lo, g_hi)));

        let req = EstimateRequest {
            task_id: Some(item.key.clone()),
            description: item.text.clone(),
            task_type: "story".into(),
            project: Some(item.project.clone()),
            agent_estimate_seconds: None,
        };
        let started = Instant::now();
        let e = timing.estimate(&Scope::All, &req).await?;
        r.latencies_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        r.ours.add(
            e.estimated_seconds,
            item.seconds,
            Some((e.interval_low_seconds, e.interval_high_seconds)),
        );
        if with_own {
            r.raw_own.add(item.own, item.seconds, None);
            // Evidence-Based Scheduling alone: own × exp(mean ln(actual/own)) ± t·sd of the project.
            if let Some(rs) = ratios.get(item.project.as_str()).filter(|v| v.len() >= 2) {
                let m = mean(rs);
                let sd = (rs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (rs.len() - 1) as f64)
                    .sqrt()
                    * (1.0 + 1.0 / rs.len() as f64).sqrt();
                let c = item.own.ln() + m;
                r.calibrated_own_only.add(
                    c.exp(),
                    item.seconds,
                    Some(((c - Z * sd).exp(), (c + Z * sd).exp())),
                );
            }
            let e = timing
                .estimate(
                    &Scope::All,
                    &EstimateRequest {
                        agent_estimate_seconds: Some(item.own),
                        ..req
                    },
                )
                .await?;
            r.ours_own.add(
                e.estimated_seconds,
                item.seconds,
                Some((e.interval_low_seconds, e.interval_high_seconds)),
            );
        }
    }
    Ok(r)
}

fn print_results(split: &str, n: usize, r: &mut Results) {
    let spec = r.spec.median_error();
    println!("\n### {split} ({n} issues)\n");
    println!(
        "| method | median \\|ln(est/actual)\\| | vs specification | mean \\|ln\\| | 95 % coverage | median width (high/low) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        r.spec
            .row("specification: category mean ± 1.96 σ (seconds)", None)
    );
    println!(
        "{}",
        r.global
            .row("global median (2.5–97.5 % quantiles)", Some(spec))
    );
    println!(
        "{}",
        r.ours.row(
            "**ours** (similar tasks + fallback levels, log space)",
            Some(spec)
        )
    );
    if !r.raw_own.log_errors.is_empty() {
        println!(
            "{}",
            r.raw_own
                .row("caller's own estimate, raw (simulated)", Some(spec))
        );
        println!(
            "{}",
            r.calibrated_own_only
                .row("caller's own estimate, calibrated alone (EBS)", Some(spec))
        );
        println!(
            "{}",
            r.ours_own
                .row("**ours with the caller's estimate**", Some(spec))
        );
    }
    let mut l = r.latencies_ms.clone();
    println!(
        "\n`estimate` latency over {} calls: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        l.len(),
        percentile_ms(&mut l, 0.5),
        percentile_ms(&mut l, 0.95),
        percentile_ms(&mut l, 0.99)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let mut dir = std::env::var_os("SUPERVISOR_DEEPSE_DIR").map(PathBuf::from);
    let mut splits = vec!["val".to_string(), "test".to_string()];
    let mut sweep = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--split" => splits = vec![args.next().context("--split val|test")?],
            "--sweep" => sweep = true,
            other => dir = Some(PathBuf::from(other)),
        }
    }
    let dir = dir.context(
        "give the Deep-SE directory as an argument or in SUPERVISOR_DEEPSE_DIR (e.g. ../shared/data/deepse-storypoints)",
    )?;
    let issues = load(&dir)?;
    let train: Vec<&Issue> = issues.iter().filter(|i| i.split == "train").collect();
    let per_split: BTreeMap<&str, Vec<&Issue>> = ["val", "test"]
        .into_iter()
        .map(|s| (s, issues.iter().filter(|i| i.split == s).collect()))
        .collect();

    let tmp = tempfile::tempdir()?;
    let (location, backend) = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => (Location::Postgres(url), "PostgreSQL"),
        _ => (
            Location::Sqlite(tmp.path().join("eval.db")),
            "SQLite (temporary file)",
        ),
    };
    let store: Arc<dyn Store> = store::open(&location).await?;
    let timing = Timing::new(store.clone());
    let started = Instant::now();
    let report = timing
        .import("deepse-train.jsonl", &history_jsonl(&train))
        .await?;
    println!(
        "Deep-SE from {}: {} issues in {} projects; train {} (imported {}, already present {}, {:.1} s), val {}, test {}. Store: {backend}.",
        dir.display(),
        issues.len(),
        issues
            .iter()
            .map(|i| &i.project)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        train.len(),
        report.imported,
        report.skipped,
        started.elapsed().as_secs_f64(),
        per_split["val"].len(),
        per_split["test"].len()
    );
    println!(
        "Simulated caller: own = actual × exp(N({CALLER_BIAS}, {CALLER_NOISE}²)), seed {SEED}."
    );

    if sweep {
        let val = &per_split["val"];
        sweep_val(&store, &train, val).await?;
        return Ok(());
    }

    for split in &splits {
        let items = per_split
            .get(split.as_str())
            .with_context(|| format!("unknown split {split}"))?;
        let mut r = evaluate(&timing, &train, items, true).await?;
        print_results(split, items.len(), &mut r);
    }
    if let Location::Postgres(_) = location {
        println!("\n(The PostgreSQL database keeps the imported history; drop it when done.)");
    }
    Ok(())
}

/// What one validation issue's estimate can rest on, gathered once so that estimators can be compared
/// in memory.
struct Case {
    actual: f64,
    project: String,
    levels: Levels,
    /// Similar tasks in the issue's project: (ln seconds, score).
    local: Vec<(f64, f64)>,
    /// Similar tasks in every project: (ln seconds, score, project).
    global: Vec<(f64, f64, String)>,
}

fn weighted_median(points: &mut [(f64, f64)]) -> f64 {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = points.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for &(x, w) in points.iter() {
        acc += w;
        if acc >= total / 2.0 {
            return x;
        }
    }
    points.last().map_or(f64::NAN, |p| p.0)
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// (score / best)^p
    Score(f64),
    /// 1 / (1 + rank)^p
    Rank(f64),
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    k: usize,
    kernel: Kernel,
    base_weight: f64,
    median: bool,
    /// Neighbours from every project, shifted by the difference of the projects' mean ln-durations.
    global: bool,
}

fn variant_centre(c: &Case, base: f64, v: &Variant, project_means: &HashMap<String, f64>) -> f64 {
    let nbrs: Vec<(f64, f64)> = if v.global {
        let own = project_means.get(&c.project).copied().unwrap_or(base);
        c.global
            .iter()
            .map(|(x, s, p)| (x - project_means.get(p).copied().unwrap_or(own) + own, *s))
            .take(v.k)
            .collect()
    } else {
        c.local.iter().copied().take(v.k).collect()
    };
    let best = nbrs.iter().map(|n| n.1).fold(0.0, f64::max);
    let mut points: Vec<(f64, f64)> = nbrs
        .iter()
        .enumerate()
        .filter(|(_, n)| n.1 > 0.0)
        .map(|(i, n)| {
            let w = match v.kernel {
                Kernel::Score(p) => (n.1 / best).powf(p),
                Kernel::Rank(p) => (1.0 + i as f64).powf(-p),
            };
            (n.0, w)
        })
        .collect();
    if v.base_weight > 0.0 {
        points.push((base, v.base_weight));
    }
    if points.is_empty() {
        return base;
    }
    if v.median {
        weighted_median(&mut points)
    } else {
        points.iter().map(|p| p.0 * p.1).sum::<f64>() / points.iter().map(|p| p.1).sum::<f64>()
    }
}

async fn sweep_val(store: &Arc<dyn Store>, train: &[&Issue], val: &[&Issue]) -> anyhow::Result<()> {
    const POOL: usize = 160;
    let started = Instant::now();
    let local_t = Timing::new(store.clone());
    // min_samples beyond any level: similar tasks are searched across all projects.
    let global_t = Timing::new(store.clone()).with_params(Params {
        min_samples: i64::MAX,
        ..Params::default()
    });
    let mut cases = Vec::with_capacity(val.len());
    for item in val {
        let req = EstimateRequest {
            task_id: None,
            description: item.text.clone(),
            task_type: "story".into(),
            project: Some(item.project.clone()),
            agent_estimate_seconds: None,
        };
        let (levels, local) = local_t.evidence(&Scope::All, &req, POOL).await?;
        let (_, global) = global_t.evidence(&Scope::All, &req, POOL).await?;
        cases.push(Case {
            actual: item.seconds.ln(),
            project: item.project.clone(),
            levels,
            local: local
                .iter()
                .map(|s| (s.duration_seconds.ln(), s.score))
                .collect(),
            global: global
                .into_iter()
                .map(|s| (s.duration_seconds.ln(), s.score, s.project))
                .collect(),
        });
    }
    println!(
        "\nEvidence for {} val issues gathered in {:.1} s (up to {POOL} similar tasks each).",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
    for i in train {
        let e = sums.entry(i.project.clone()).or_default();
        e.0 += i.seconds.ln();
        e.1 += 1.0;
    }
    let project_means: HashMap<String, f64> =
        sums.into_iter().map(|(p, (s, n))| (p, s / n)).collect();
    // The base level alone (no similar tasks): centre and half-width in log space.
    let bases: Vec<(f64, f64)> = cases
        .iter()
        .map(|c| {
            let e =
                supervisor::timing::estimate::estimate(&c.levels, &[], None, &Params::default());
            e.map_or((f64::NAN, f64::NAN), |e| {
                let centre = e.estimated_seconds.ln();
                (centre, e.interval_high_seconds.ln() - centre)
            })
        })
        .collect();
    let score = |v: &Variant| -> (f64, f64, f64) {
        let mut errs = Vec::with_capacity(cases.len());
        let mut covered = 0usize;
        for (c, (b, half)) in cases.iter().zip(&bases) {
            let centre = variant_centre(c, *b, v, &project_means);
            errs.push((centre - c.actual).abs());
            if (centre - c.actual).abs() <= *half {
                covered += 1;
            }
        }
        (
            median(&errs),
            mean(&errs),
            covered as f64 / cases.len() as f64,
        )
    };
    println!("\nvariant: median |ln err| / mean |ln err| / coverage of the base half-width\n");
    let mut results = Vec::new();
    for global in [false, true] {
        for median_centre in [false, true] {
            for k in [5, 10, 20, 40, 80, 160] {
                let kernels = [
                    Kernel::Score(0.0),
                    Kernel::Score(1.0),
                    Kernel::Score(2.0),
                    Kernel::Score(4.0),
                    Kernel::Rank(0.5),
                    Kernel::Rank(1.0),
                ];
                for kernel in kernels {
                    for base_weight in [0.0, 1.0, 2.0, 4.0, 8.0, 16.0] {
                        let v = Variant {
                            k,
                            kernel,
                            base_weight,
                            median: median_centre,
                            global,
                        };
                        let r = score(&v);
                        results.push((r, v));
                    }
                }
            }
        }
    }
    results.sort_by(|a, b| a.0.0.total_cmp(&b.0.0));
    for ((med, mn, cov), v) in results.iter().take(40) {
        println!("{med:.4} / {mn:.4} / {cov:.3}  {v:?}");
    }
    for global in [false, true] {
        for m in [false, true] {
            if let Some(((med, mn, cov), v)) = results
                .iter()
                .find(|(_, v)| v.global == global && v.median == m)
            {
                println!("best global={global} median={m}: {med:.4} / {mn:.4} / {cov:.3}  {v:?}");
            }
        }
    }
    let current = Variant {
        k: 40,
        kernel: Kernel::Score(2.0),
        base_weight: 4.0,
        median: false,
        global: false,
    };
    let (med, mn, cov) = score(&current);
    println!("current defaults: {med:.4} / {mn:.4} / {cov:.3}  {current:?}");
    Ok(())
}
