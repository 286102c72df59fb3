//! `knowledge index|search|learn|list|remove`: thin over `crate::knowledge` (the indexer, the
//! searcher, learnings) and the store's source listing. A progress bar on a terminal; `--json` prints
//! one versioned document; `search --batch` prints one JSON line per query.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Context;
use super::common::{cli_actor, open_store, vault};
use super::output::Style;
use crate::knowledge::embed::{Embedder, EmbedderChoice};
use crate::knowledge::index::{self, IndexOptions, IndexReport, Indexer, Progress, Target};
use crate::knowledge::search::{SearchHit, SearchQuery, SearchResults, Searcher, Strategy};
use crate::knowledge::{self as kn, Learning};
use crate::store::knowledge::SHARED;
use crate::store::{ChunkFilter, Store};

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Index folders and files (or a JSONL document set) into a source; only what changed is
    /// re-embedded.
    Index(IndexArgs),
    /// Hybrid (full-text + vector) search.
    Search(SearchArgs),
    /// Record a learning, searchable by every later agent of the project.
    Learn(LearnArgs),
    /// Indexed sources with their documents, chunks and embedding models.
    List {
        /// Only this project's sources and the shared ones.
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
    /// Remove a source and everything indexed in it.
    Remove {
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The project the source belongs to (default: the shared sources).
        #[arg(long, value_name = "P")]
        project: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Directories or files to index (.gitignore is honoured).
    #[arg(required_unless_present = "jsonl", conflicts_with = "jsonl")]
    pub paths: Vec<PathBuf>,
    /// Index a JSONL document set instead: lines {id, text[, title, url, tags, kind]}. Records missing
    /// from the file are removed from the source.
    #[arg(long, value_name = "FILE", requires = "source")]
    pub jsonl: Option<PathBuf>,
    /// The project the knowledge belongs to (default: shared by every project).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// The source name: docs, codebase, learnings or any NAME (default: the folder's name).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Show what would be indexed, embedded and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = index::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    Hybrid,
    FullText,
    Vector,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub query: Option<String>,
    /// Answer a JSONL file of {query_id, query} lines: one line {query_id, results} each.
    #[arg(long, value_name = "FILE.jsonl")]
    pub batch: Option<PathBuf>,
    /// This project's knowledge and the shared sources (default: everything).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Only chunks with all these tags (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub limit: usize,
    #[arg(long, value_enum, default_value_t = StrategyArg::Hybrid)]
    pub strategy: StrategyArg,
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    #[arg(long)]
    pub title: String,
    /// The text (default: read from --file or stdin).
    #[arg(long, conflicts_with = "file")]
    pub text: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Tags (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The project it applies to (default: shared by every project).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
}

pub async fn run(ctx: &Context, command: KnowledgeCommand) -> anyhow::Result<ExitCode> {
    match command {
        KnowledgeCommand::Index(args) => index(ctx, args).await,
        KnowledgeCommand::Search(args) => search(ctx, args).await,
        KnowledgeCommand::Learn(args) => learn(ctx, args).await,
        KnowledgeCommand::List { project } => list(ctx, project).await,
        KnowledgeCommand::Remove { source, project } => remove(ctx, source, project).await,
    }
}

/// When a state directory exists, a project named on the command line must be declared in it.
fn check_project(ctx: &Context, project: Option<&str>) -> anyhow::Result<()> {
    let Some(p) = project else { return Ok(()) };
    if !ctx.settings.state_dir.is_dir() {
        return Ok(());
    }
    let desired = crate::state::load(&ctx.settings.state_dir)
        .map_err(|d| anyhow::anyhow!("the desired state does not load:\n{d}"))?;
    if !desired.projects.contains_key(p) {
        let known: Vec<&str> = desired.projects.keys().map(String::as_str).collect();
        bail!(
            "project {p:?} is not declared in {} (known: {})",
            ctx.settings.state_dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    Ok(())
}

/// The configured embedder, or `None` with the reason printed (full-text only).
async fn embedder(
    ctx: &Context,
    store: Arc<dyn Store>,
) -> anyhow::Result<(Option<Arc<dyn Embedder>>, Option<String>)> {
    let config = &ctx.settings.file.knowledge;
    let secrets = if config
        .endpoint
        .as_ref()
        .is_some_and(|e| e.api_key.is_some())
    {
        vault(ctx, store).await?
    } else {
        None
    };
    let choice = config
        .open(
            secrets
                .as_deref()
                .map(|v| v as &dyn crate::secrets::SecretSource),
            &cli_actor(),
        )
        .await?;
    Ok(match choice {
        EmbedderChoice::Ready(e) => (Some(e), None),
        EmbedderChoice::Unavailable(why) => (None, Some(why)),
    })
}

/// A progress bar on stderr, only on a terminal and never in JSON mode.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(ctx: &Context) -> Self {
        if ctx.out.json || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} indexing {pos}/{len} documents [{bar:30}] {elapsed} (eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(Some(bar))
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

fn default_source(paths: &[PathBuf]) -> anyhow::Result<String> {
    match paths {
        [one] => {
            let abs = std::fs::canonicalize(one)
                .with_context(|| format!("cannot read {}", one.display()))?;
            let name = if abs.is_dir() {
                abs.file_name()
            } else {
                abs.parent().and_then(|p| p.file_name())
            };
            name.map(|n| n.to_string_lossy().to_string())
                .context("cannot name a source after the file system root: give --source")
        }
        _ => bail!("several paths: name the source with --source (e.g. docs or codebase)"),
    }
}

async fn index(ctx: &Context, args: IndexArgs) -> anyhow::Result<ExitCode> {
    check_project(ctx, args.project.as_deref())?;
    let source = match (&args.source, &args.jsonl) {
        (Some(s), _) => s.clone(),
        (None, _) => default_source(&args.paths)?,
    };
    let target = Target::new(args.project.as_deref(), &source)?;
    let records = match &args.jsonl {
        Some(file) => Some(index::read_jsonl(file)?),
        None => None,
    };
    let store = open_store(ctx).await?;
    let (embedder, why_none) = embedder(ctx, store.clone()).await?;
    if let Some(why) = &why_none {
        eprintln!("warning: {why}; chunks are stored without vectors");
    }
    let indexer = Indexer::new(
        store,
        embedder,
        IndexOptions {
            dry_run: args.dry_run,
            max_file_bytes: args.max_file_bytes,
        },
    );
    let bar = Bar::new(ctx);
    let report = match records {
        Some(records) => indexer.index_records(&target, records, &bar).await,
        None => indexer.index_paths(&target, &args.paths, &bar).await,
    };
    bar.finish();
    let report = report?;
    if ctx.out.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("format_version".into(), json!("1"));
            o.insert("embedder_note".into(), json!(why_none));
        }
        ctx.out.json(&v)?;
    } else {
        ctx.out.text(&render_report(ctx, &report))?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render_report(ctx: &Context, r: &IndexReport) -> String {
    let project = r.project.as_deref().unwrap_or("shared");
    let model = r.model.as_deref().unwrap_or("no embedder");
    let verb = if r.dry_run { "Would index" } else { "Indexed" };
    let mut s = format!(
        "{verb} source {} ({project}, {model}): {} documents — {} added, {} changed, {} re-embedded, {} unchanged, {} deleted.\n",
        ctx.out.paint(&r.source, Style::Bold),
        r.documents_seen,
        r.added,
        r.changed,
        r.reembedded,
        r.unchanged,
        r.deleted,
    );
    if r.dry_run {
        s.push_str(&format!("Chunks to embed: {}.\n", r.chunks_embedded));
    } else {
        s.push_str(&format!(
            "Chunks: {} written, {} embedded, {} vectors reused, {} deleted.\n",
            r.chunks_written, r.chunks_embedded, r.chunks_reused, r.chunks_deleted
        ));
    }
    if r.skipped_binary + r.skipped_large + r.skipped_ignored > 0 {
        s.push_str(&format!(
            "Skipped: {} binary, {} too large, {} ignored (.gitignore).\n",
            r.skipped_binary, r.skipped_large, r.skipped_ignored
        ));
    }
    for m in &r.secrets_masked {
        s.push_str(&format!(
            "{} {}:{}: {} {} (masked before indexing)\n",
            ctx.out.paint("credential", Style::Yellow),
            m.document,
            m.line,
            m.kind,
            m.masked
        ));
    }
    for e in &r.errors {
        s.push_str(&format!("{} {e}\n", ctx.out.paint("error:", Style::Red)));
    }
    s
}

fn filter(project: Option<&str>, sources: Vec<String>, tags: Vec<String>) -> ChunkFilter {
    ChunkFilter {
        projects: project.map(|p| vec![p.to_string(), SHARED.to_string()]),
        sources,
        tags,
    }
}

/// A result as the CLI prints it in JSON.
#[derive(Serialize)]
struct JsonHit<'a> {
    /// The document: a record id (JSONL), a learning id or a file path.
    id: &'a str,
    chunk_id: i64,
    score: f64,
    title: Option<&'a str>,
    url: Option<&'a str>,
    path: Option<&'a str>,
    line_start: Option<i32>,
    line_end: Option<i32>,
    project: Option<&'a str>,
    source: &'a str,
    tags: &'a [String],
    snippet: &'a str,
}

fn json_hit(h: &SearchHit) -> JsonHit<'_> {
    JsonHit {
        id: &h.document,
        chunk_id: h.id,
        score: h.score,
        title: h.title.as_deref(),
        url: h.url.as_deref(),
        path: h.document.starts_with('/').then_some(h.document.as_str()),
        line_start: h.line_start,
        line_end: h.line_end,
        project: h.project.as_deref(),
        source: &h.source,
        tags: &h.tags,
        snippet: &h.snippet,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    query_id: serde_json::Value,
    query: String,
}

async fn search(ctx: &Context, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let strategy = match args.strategy {
        StrategyArg::Hybrid => Strategy::Hybrid,
        StrategyArg::FullText => Strategy::FullText,
        StrategyArg::Vector => Strategy::Vector,
    };
    let filter = filter(args.project.as_deref(), args.sources, args.tags);
    let store = open_store(ctx).await?;
    let (embedder, _) = embedder(ctx, store.clone()).await?;
    let searcher = Searcher::new(store, embedder);
    let query = |text: String| SearchQuery {
        text,
        filter: filter.clone(),
        limit: args.limit,
        strategy,
    };
    if let Some(file) = &args.batch {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut lines = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: BatchLine = serde_json::from_str(&line).with_context(|| {
                format!("{}:{}: expected {{query_id, query}}", file.display(), i + 1)
            })?;
            lines.push(parsed);
        }
        let mut out = std::io::stdout().lock();
        for l in lines {
            let res = searcher.search(&query(l.query)).await?;
            let results: Vec<JsonHit> = res.hits.iter().map(json_hit).collect();
            serde_json::to_writer(
                &mut out,
                &json!({"format_version": "1", "query_id": l.query_id, "results": results}),
            )?;
            writeln!(out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = args.query.unwrap_or_default();
    let res = searcher.search(&query(text.clone())).await?;
    if ctx.out.json {
        let results: Vec<JsonHit> = res.hits.iter().map(json_hit).collect();
        ctx.out.json(&json!({
            "format_version": "1",
            "query": text,
            "strategy": res.strategy,
            "model": res.model,
            "notes": res.notes,
            "results": results,
        }))?;
    } else {
        ctx.out.text(&render_results(ctx, &res))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_results(ctx: &Context, res: &SearchResults) -> String {
    let mut s = String::new();
    for n in &res.notes {
        s.push_str(&format!("{} {n}\n", ctx.out.paint("note:", Style::Yellow)));
    }
    if res.hits.is_empty() {
        s.push_str("No results.\n");
        return s;
    }
    for (i, h) in res.hits.iter().enumerate() {
        let place = match (h.line_start, h.line_end) {
            (Some(a), Some(b)) if a != b => format!("{}:{a}-{b}", h.document),
            (Some(a), _) => format!("{}:{a}", h.document),
            _ => h.document.clone(),
        };
        let title = h.title.as_deref().unwrap_or("(untitled)");
        s.push_str(&format!(
            "{}. {}  {}\n   {}{}  [{}{}]\n",
            i + 1,
            ctx.out.paint(title, Style::Bold),
            ctx.out.paint(&format!("{:.3}", h.score), Style::Dim),
            place,
            h.url
                .as_deref()
                .map(|u| format!("  {u}"))
                .unwrap_or_default(),
            h.source,
            h.project
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default(),
        ));
        for line in h.snippet.lines().take(4) {
            s.push_str(&format!("   │ {line}\n"));
        }
    }
    s
}

async fn learn(ctx: &Context, args: LearnArgs) -> anyhow::Result<ExitCode> {
    check_project(ctx, args.project.as_deref())?;
    let text = match (args.text, &args.file) {
        (Some(t), _) => t,
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => {
            if std::io::stdin().is_terminal() {
                bail!("give the learning's text with --text, --file or on stdin");
            }
            let mut t = String::new();
            std::io::stdin().read_to_string(&mut t)?;
            t
        }
    };
    let store = open_store(ctx).await?;
    let (embedder, why_none) = embedder(ctx, store.clone()).await?;
    let record = kn::learn(
        store,
        embedder,
        Learning {
            project: args.project,
            title: args.title,
            text,
            tags: args.tags,
        },
    )
    .await?;
    if ctx.out.json {
        let mut v = serde_json::to_value(&record)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("format_version".into(), json!("1"));
            o.insert("embedder_note".into(), json!(why_none));
        }
        ctx.out.json(&v)?;
    } else {
        let mut s = format!(
            "Learned {} ({}, {} chunk(s), {}).\n",
            record.id,
            record.project.as_deref().unwrap_or("shared"),
            record.chunks,
            record.model.as_deref().unwrap_or("full-text only"),
        );
        if record.secrets_masked > 0 {
            s.push_str(&format!(
                "{} {} credential(s) in the text were masked before storing.\n",
                ctx.out.paint("warning:", Style::Yellow),
                record.secrets_masked
            ));
        }
        ctx.out.text(&s)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(ctx: &Context, project: Option<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx).await?;
    let projects = project.map(|p| vec![p, SHARED.to_string()]);
    let sources = store.knowledge_sources(projects.as_deref()).await?;
    if ctx.out.json {
        let list: Vec<serde_json::Value> = sources
            .iter()
            .map(|s| {
                json!({
                    "project": (s.project != SHARED).then_some(&s.project),
                    "source": s.source,
                    "documents": s.documents,
                    "chunks": s.chunks,
                    "models": s.models,
                    "unembedded": s.unembedded,
                    "masked_secrets": s.masked_secrets,
                    "last_indexed_at": s.last_indexed_at,
                })
            })
            .collect();
        ctx.out
            .json(&json!({"format_version": "1", "sources": list}))?;
        return Ok(ExitCode::SUCCESS);
    }
    if sources.is_empty() {
        ctx.out
            .text("Nothing indexed. Run `supervisor knowledge index PATH` to index a folder.\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(vec![
            "PROJECT",
            "SOURCE",
            "DOCUMENTS",
            "CHUNKS",
            "MODELS",
            "NO VECTOR",
            "MASKED",
            "INDEXED",
        ]);
    for s in &sources {
        let models: Vec<String> = s.models.iter().map(|(m, n)| format!("{m} ({n})")).collect();
        table.add_row(vec![
            if s.project == SHARED {
                "(shared)".to_string()
            } else {
                s.project.clone()
            },
            s.source.clone(),
            s.documents.to_string(),
            s.chunks.to_string(),
            models.join(", "),
            s.unembedded.to_string(),
            s.masked_secrets.to_string(),
            s.last_indexed_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
        ]);
    }
    ctx.out.text(&format!("{table}\n"))?;
    Ok(ExitCode::SUCCESS)
}

async fn remove(
    ctx: &Context,
    source: String,
    project: Option<String>,
) -> anyhow::Result<ExitCode> {
    let target = Target::new(project.as_deref(), &source)?;
    let store = open_store(ctx).await?;
    let (documents, chunks) = store.delete_source(&target.project, &target.source).await?;
    let owner = project.as_deref().unwrap_or("shared");
    if documents == 0 && chunks == 0 {
        bail!("no source {source:?} in {owner}; `supervisor knowledge list` shows what is indexed");
    }
    if ctx.out.json {
        ctx.out.json(&json!({
            "format_version": "1",
            "project": project,
            "source": source,
            "documents_removed": documents,
            "chunks_removed": chunks,
        }))?;
    } else {
        ctx.out.text(&format!(
            "Removed source {source} ({owner}): {documents} documents, {chunks} chunks.\n"
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
