//! The indexer: files, JSONL records and learnings into chunks in the store, incrementally.
//!
//! Guarantees:
//! - **Incremental.** A document whose bytes (and the chunker's version) are unchanged and whose
//!   vectors are of the current model is not read again when its size and modification time match,
//!   and never re-embedded. A changed document is re-chunked; only chunks whose embedding text is new
//!   are embedded (vectors are reused by content hash, across documents and projects). A document that
//!   disappeared from an indexed tree (or from a JSONL set) loses its chunks.
//! - **Model changes re-embed.** A document embedded with another model than the current one is
//!   re-embedded; `dry_run` shows how many would be, before any work.
//! - **Resumable.** Each document is written with its chunks in one transaction, in batches; an
//!   interrupted run keeps what it committed and the next run continues from there.
//! - **No credentials.** Every document passes the credential detector before chunking; a credential is
//!   replaced by `[REDACTED:<kind>]` (line breaks kept, so line numbers stay true) and reported with its
//!   location and masked form, never its value.
//! - **Skipped and counted:** binary files (a NUL byte in the first 8 KiB), files over
//!   [`IndexOptions::max_file_bytes`], files excluded by `.gitignore`.
//! - Embedding happens in batches on the embedder's bounded worker; file reading on blocking threads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chunk::{self, CHUNKER_VERSION, Chunk};
use super::embed::{EmbedError, Embedder};
use super::lexical;
use super::walk::{self, FoundFile};
use crate::secrets::detector;
use crate::store::{DocumentKind, DocumentRecord, NewChunk, Store, StoreError};

/// Files larger than this are skipped by default.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 20;

/// The source learnings are stored under.
pub const LEARNINGS_SOURCE: &str = "learnings";

/// Texts collected before the embedder is called (across documents): bounds memory per batch.
const PENDING_TEXTS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{path}:{line}: {detail}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a background task failed: {0}")]
    Task(String),
}

/// Where documents go: a project (or [`crate::store::knowledge::SHARED`]) and a source name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub project: String,
    pub source: String,
}

impl Target {
    /// Checks the names: a project is empty (shared) or lower-case letters, digits and dashes; a source
    /// is 1–64 letters, digits, `.`, `_`, `-` or `/`.
    pub fn new(project: Option<&str>, source: &str) -> Result<Self, IndexError> {
        let project = project.unwrap_or("");
        let valid = project.len() <= 64
            && project
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(IndexError::Invalid {
                what: "project",
                detail: format!(
                    "{project:?}: use lower-case letters, digits and dashes (at most 64)"
                ),
            });
        }
        if source.is_empty()
            || source.len() > 64
            || !source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            return Err(IndexError::Invalid {
                what: "source",
                detail: format!(
                    "{source:?}: use 1 to 64 letters, digits and . _ - / (e.g. docs, codebase)"
                ),
            });
        }
        Ok(Target {
            project: project.to_string(),
            source: source.to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Report what would be done; change nothing, embed nothing.
    pub dry_run: bool,
    pub max_file_bytes: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            dry_run: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// A credential found and masked before indexing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedSecret {
    pub document: String,
    pub line: usize,
    pub kind: String,
    /// The detector's masked form (a short, non-identifying prefix and the length).
    pub masked: String,
}

/// What an index run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IndexReport {
    /// `None` for shared sources.
    pub project: Option<String>,
    pub source: String,
    /// The embedding model; `None` when no embedder is available (chunks are stored without vectors).
    pub model: Option<String>,
    pub dry_run: bool,
    pub documents_seen: usize,
    pub unchanged: usize,
    pub added: usize,
    pub changed: usize,
    /// Unchanged documents re-embedded because their vectors are of another model (or none).
    pub reembedded: usize,
    pub deleted: usize,
    pub chunks_written: usize,
    pub chunks_embedded: usize,
    pub chunks_reused: usize,
    pub chunks_deleted: u64,
    pub skipped_binary: usize,
    pub skipped_large: usize,
    pub skipped_ignored: usize,
    pub secrets_masked: Vec<MaskedSecret>,
    pub errors: Vec<String>,
}

/// Progress of a run, for a progress bar.
pub trait Progress: Send + Sync {
    /// The number of documents the run will look at.
    fn start(&self, total: u64);
    /// `n` more documents looked at.
    fn advance(&self, n: u64);
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total: u64) {}
    fn advance(&self, _n: u64) {}
}

/// One JSONL line of `index --jsonl`: `{id, text[, title, url, tags, kind]}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `markdown`, `code` or `text` (default): how the text is cut into chunks.
    #[serde(default)]
    pub kind: Option<DocumentKind>,
}

/// A document ready to be chunked.
struct Source {
    document: String,
    kind: DocumentKind,
    text: String,
    title: Option<String>,
    url: Option<String>,
    tags: Vec<String>,
    content_hash: String,
    size_bytes: i64,
    modified_at: Option<DateTime<Utc>>,
    change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Changed,
    /// Same content, vectors of another model (or none).
    Reembed,
    /// Same content and model: only the recorded modification time moves.
    Touched,
}

/// The text the embedder sees for a chunk: its title (a heading path or record title says what the
/// section is about) and its content; for code the title is the definition line, already in the
/// content, so it is not repeated.
pub fn embedding_text(kind: DocumentKind, title: Option<&str>, content: &str) -> String {
    match (kind, title) {
        (DocumentKind::Code, _) | (_, None) => content.to_string(),
        (_, Some(t)) => format!("{t}\n{content}"),
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The hash a document is compared by: its bytes and everything that shapes its chunks.
fn document_hash(kind: DocumentKind, meta: &[&str], bytes: &[u8]) -> String {
    let version = CHUNKER_VERSION.to_string();
    let mut parts: Vec<&[u8]> = vec![version.as_bytes(), kind.as_str().as_bytes()];
    parts.extend(meta.iter().map(|m| m.as_bytes()));
    parts.push(bytes);
    format!("c{CHUNKER_VERSION}:{}", sha256_hex(&parts))
}

/// Replaces every credential the detector finds by `[REDACTED:<kind>]` plus the line breaks it spanned.
fn mask_secrets(document: &str, text: &str, found: &mut Vec<MaskedSecret>) -> (String, usize) {
    let findings = detector::scan(text);
    if findings.is_empty() {
        return (text.to_string(), 0);
    }
    let lines = detector::LineIndex::new(text);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in &findings {
        out.push_str(&text[at..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.as_str());
        out.push(']');
        out.extend(text[f.start..f.end].chars().filter(|&c| c == '\n'));
        at = f.end;
        found.push(MaskedSecret {
            document: document.to_string(),
            line: lines.position(text, f.start).0,
            kind: f.kind.as_str().to_string(),
            masked: f.masked().to_string(),
        });
    }
    out.push_str(&text[at..]);
    (out, findings.len())
}

/// Indexes into one store with one (optional) embedder.
pub struct Indexer {
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn Embedder>>,
    options: IndexOptions,
}

/// A document whose chunks wait for vectors.
struct Pending {
    record: DocumentRecord,
    chunks: Vec<NewChunk>,
    /// Embedding texts of the chunks still without a vector, by chunk position.
    missing: Vec<(usize, String)>,
}

impl Indexer {
    pub fn new(
        store: Arc<dyn Store>,
        embedder: Option<Arc<dyn Embedder>>,
        options: IndexOptions,
    ) -> Self {
        Indexer {
            store,
            embedder,
            options,
        }
    }

    fn model(&self) -> Option<&str> {
        self.embedder.as_deref().map(|e| e.model())
    }

    fn report(&self, target: &Target) -> IndexReport {
        IndexReport {
            project: (!target.project.is_empty()).then(|| target.project.clone()),
            source: target.source.clone(),
            model: self.model().map(str::to_string),
            dry_run: self.options.dry_run,
            ..Default::default()
        }
    }

    /// Whether a recorded document needs no work, given its hash is unchanged.
    fn same_model(&self, existing: &DocumentRecord) -> bool {
        match self.model() {
            None => true,
            Some(m) => existing.model.as_deref() == Some(m) || existing.chunk_count == 0,
        }
    }

    /// Indexes the files under `roots` (directories or files) into `target`.
    pub async fn index_paths(
        &self,
        target: &Target,
        roots: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IndexReport, IndexError> {
        let mut report = self.report(target);
        let roots_owned = roots.to_vec();
        let walked = tokio::task::spawn_blocking(move || walk::walk(&roots_owned))
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?;
        report.skipped_ignored = walked.ignored;
        report.errors.extend(walked.errors.iter().cloned());
        let existing: HashMap<String, DocumentRecord> = self
            .store
            .knowledge_documents(&target.project, &target.source)
            .await?
            .into_iter()
            .map(|d| (d.document.clone(), d))
            .collect();
        progress.start(walked.files.len() as u64);
        report.documents_seen = walked.files.len();

        let mut seen: HashSet<String> = HashSet::new();
        let mut to_read: Vec<FoundFile> = Vec::new();
        for f in &walked.files {
            let name = f.path.to_string_lossy().to_string();
            seen.insert(name.clone());
            let quick_same = existing.get(&name).is_some_and(|e| {
                e.size_bytes == f.size as i64
                    && e.modified_at.is_some()
                    && e.modified_at == f.modified
                    && e.content_hash.starts_with(&format!("c{CHUNKER_VERSION}:"))
                    && self.same_model(e)
            });
            if quick_same {
                report.unchanged += 1;
                progress.advance(1);
            } else {
                to_read.push(f.clone());
            }
        }

        let mut batch: Vec<Pending> = Vec::new();
        for group in to_read.chunks(32) {
            let files = group.to_vec();
            let max = self.options.max_file_bytes;
            let read = tokio::task::spawn_blocking(move || {
                files
                    .into_iter()
                    .map(|f| {
                        let r = read_file(&f.path, max);
                        (f, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?;
            for (file, outcome) in read {
                progress.advance(1);
                let name = file.path.to_string_lossy().to_string();
                let bytes = match outcome {
                    FileRead::Text(b) => b,
                    FileRead::Binary => {
                        report.skipped_binary += 1;
                        continue;
                    }
                    FileRead::TooLarge => {
                        report.skipped_large += 1;
                        continue;
                    }
                    FileRead::Failed(e) => {
                        report.errors.push(format!("{}: {e}", file.path.display()));
                        continue;
                    }
                };
                let kind = chunk::kind_of(&file.path);
                let hash = document_hash(kind, &[], &bytes);
                let change = match existing.get(&name) {
                    None => Change::Added,
                    Some(e) if e.content_hash != hash => Change::Changed,
                    Some(e) if !self.same_model(e) => Change::Reembed,
                    Some(_) => Change::Touched,
                };
                let source = Source {
                    document: name,
                    kind,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    title: None,
                    url: None,
                    tags: Vec::new(),
                    content_hash: hash,
                    size_bytes: bytes.len() as i64,
                    modified_at: file.modified,
                    change,
                };
                self.stage(target, source, &mut batch, &mut report).await?;
            }
        }
        self.flush(&mut batch, &mut report).await?;

        // Documents under the walked roots that are gone.
        let gone: Vec<String> = existing
            .keys()
            .filter(|d| !seen.contains(*d))
            .filter(|d| walked.roots.iter().any(|r| Path::new(d).starts_with(r)))
            .cloned()
            .collect();
        self.delete(target, gone, &mut report).await?;
        Ok(report)
    }

    /// Indexes a complete set of records (a JSONL file) into `target`: records not in the set are
    /// deleted from it.
    pub async fn index_records(
        &self,
        target: &Target,
        records: Vec<InputRecord>,
        progress: &dyn Progress,
    ) -> Result<IndexReport, IndexError> {
        let mut report = self.report(target);
        let existing: HashMap<String, DocumentRecord> = self
            .store
            .knowledge_documents(&target.project, &target.source)
            .await?
            .into_iter()
            .map(|d| (d.document.clone(), d))
            .collect();
        progress.start(records.len() as u64);
        report.documents_seen = records.len();
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch: Vec<Pending> = Vec::new();
        for r in records {
            progress.advance(1);
            if !seen.insert(r.id.clone()) {
                return Err(IndexError::Invalid {
                    what: "record",
                    detail: format!("id {:?} appears more than once", r.id),
                });
            }
            let kind = r.kind.unwrap_or(DocumentKind::Text);
            let tags = r.tags.join("\u{1f}");
            let hash = document_hash(
                kind,
                &[
                    r.title.as_deref().unwrap_or(""),
                    r.url.as_deref().unwrap_or(""),
                    &tags,
                ],
                r.text.as_bytes(),
            );
            let change = match existing.get(&r.id) {
                None => Change::Added,
                Some(e) if e.content_hash != hash => Change::Changed,
                Some(e) if !self.same_model(e) => Change::Reembed,
                Some(_) => {
                    report.unchanged += 1;
                    continue;
                }
            };
            let source = Source {
                document: r.id,
                kind,
                size_bytes: r.text.len() as i64,
                text: r.text,
                title: r.title,
                url: r.url,
                tags: r.tags,
                content_hash: hash,
                modified_at: None,
                change,
            };
            self.stage(target, source, &mut batch, &mut report).await?;
        }
        self.flush(&mut batch, &mut report).await?;
        let gone: Vec<String> = existing
            .keys()
            .filter(|d| !seen.contains(*d))
            .cloned()
            .collect();
        self.delete(target, gone, &mut report).await?;
        Ok(report)
    }

    /// Adds (or replaces) one document without touching the others of its source: a learning.
    pub async fn index_one(
        &self,
        target: &Target,
        record: InputRecord,
    ) -> Result<IndexReport, IndexError> {
        let mut report = self.report(target);
        report.documents_seen = 1;
        let kind = record.kind.unwrap_or(DocumentKind::Text);
        let tags = record.tags.join("\u{1f}");
        let hash = document_hash(
            kind,
            &[
                record.title.as_deref().unwrap_or(""),
                record.url.as_deref().unwrap_or(""),
                &tags,
            ],
            record.text.as_bytes(),
        );
        let source = Source {
            document: record.id,
            kind,
            size_bytes: record.text.len() as i64,
            text: record.text,
            title: record.title,
            url: record.url,
            tags: record.tags,
            content_hash: hash,
            modified_at: None,
            change: Change::Added,
        };
        let mut batch = Vec::new();
        self.stage(target, source, &mut batch, &mut report).await?;
        self.flush(&mut batch, &mut report).await?;
        Ok(report)
    }

    async fn delete(
        &self,
        target: &Target,
        gone: Vec<String>,
        report: &mut IndexReport,
    ) -> Result<(), IndexError> {
        report.deleted = gone.len();
        if !gone.is_empty() && !self.options.dry_run {
            report.chunks_deleted = self
                .store
                .delete_documents(&target.project, &target.source, &gone)
                .await?;
        }
        Ok(())
    }

    /// Masks, chunks and queues one document; flushes the queue when enough texts wait for vectors.
    async fn stage(
        &self,
        target: &Target,
        src: Source,
        batch: &mut Vec<Pending>,
        report: &mut IndexReport,
    ) -> Result<(), IndexError> {
        match src.change {
            Change::Added => report.added += 1,
            Change::Changed => report.changed += 1,
            Change::Reembed => report.reembedded += 1,
            Change::Touched => report.unchanged += 1,
        }
        let (text, masked) = mask_secrets(&src.document, &src.text, &mut report.secrets_masked);
        let chunks = chunk::chunk_document(src.kind, &text);
        if self.options.dry_run {
            if src.change != Change::Touched && self.embedder.is_some() {
                report.chunks_embedded += chunks.len();
            }
            return Ok(());
        }
        let model = self.model().map(str::to_string);
        let mut new_chunks: Vec<NewChunk> = Vec::with_capacity(chunks.len());
        let mut missing: Vec<(usize, String)> = Vec::new();
        for (i, c) in chunks.into_iter().enumerate() {
            let Chunk {
                title,
                text,
                line_start,
                line_end,
            } = c;
            let title = title.or_else(|| src.title.clone());
            let embed_text = embedding_text(src.kind, title.as_deref(), &text);
            let lexemes = lexical::lexemes(&format!("{}\n{text}", title.as_deref().unwrap_or("")));
            let content_hash = sha256_hex(&[embed_text.as_bytes()]);
            if model.is_some() {
                missing.push((i, embed_text));
            }
            new_chunks.push(NewChunk {
                chunk_index: i as i32,
                title,
                content: text,
                lexemes,
                content_hash,
                url: src.url.clone(),
                line_start: Some(line_start as i32),
                line_end: Some(line_end as i32),
                tags: src.tags.clone(),
                embedding: None,
            });
        }
        // Vectors already stored for the same text and model are reused.
        if let Some(m) = &model
            && !missing.is_empty()
        {
            let hashes: Vec<String> = missing
                .iter()
                .map(|(i, _)| new_chunks[*i].content_hash.clone())
                .collect();
            let known: HashMap<String, Vec<f32>> = self
                .store
                .embeddings_by_hash(m, &hashes)
                .await?
                .into_iter()
                .collect();
            missing.retain(|(i, _)| match known.get(&new_chunks[*i].content_hash) {
                Some(v) => {
                    new_chunks[*i].embedding = Some((m.clone(), v.clone()));
                    report.chunks_reused += 1;
                    false
                }
                None => true,
            });
        }
        let record = DocumentRecord {
            project: target.project.clone(),
            source: target.source.clone(),
            document: src.document,
            kind: src.kind,
            url: src.url,
            title: src.title,
            tags: src.tags,
            content_hash: src.content_hash,
            size_bytes: src.size_bytes,
            modified_at: src.modified_at,
            model: if new_chunks.is_empty() { None } else { model },
            chunk_count: new_chunks.len() as i32,
            masked_secrets: masked as i32,
            indexed_at: Utc::now(),
        };
        batch.push(Pending {
            record,
            chunks: new_chunks,
            missing,
        });
        if batch.iter().map(|p| p.missing.len()).sum::<usize>() >= PENDING_TEXTS {
            self.flush(batch, report).await?;
        }
        Ok(())
    }

    /// Embeds what the queued documents miss, then writes each document with its chunks.
    async fn flush(
        &self,
        batch: &mut Vec<Pending>,
        report: &mut IndexReport,
    ) -> Result<(), IndexError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(embedder) = &self.embedder {
            let texts: Vec<String> = batch
                .iter()
                .flat_map(|p| p.missing.iter().map(|(_, t)| t.clone()))
                .collect();
            if !texts.is_empty() {
                let vectors = embedder.embed(&texts).await?;
                report.chunks_embedded += vectors.len();
                let mut it = vectors.into_iter();
                for p in batch.iter_mut() {
                    for (i, _) in std::mem::take(&mut p.missing) {
                        if let Some(v) = it.next() {
                            p.chunks[i].embedding = Some((embedder.model().to_string(), v));
                        }
                    }
                }
            }
        }
        for p in batch.drain(..) {
            self.store.replace_document(&p.record, &p.chunks).await?;
            report.chunks_written += p.chunks.len();
        }
        Ok(())
    }
}

enum FileRead {
    Text(Vec<u8>),
    Binary,
    TooLarge,
    Failed(std::io::Error),
}

fn read_file(path: &Path, max: u64) -> FileRead {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return FileRead::Failed(e),
    };
    if file.metadata().is_ok_and(|m| m.len() > max) {
        return FileRead::TooLarge;
    }
    let mut bytes = Vec::new();
    // Read at most one byte past the limit: a file that grew since the check is still refused.
    if let Err(e) = file.take(max + 1).read_to_end(&mut bytes) {
        return FileRead::Failed(e);
    }
    if bytes.len() as u64 > max {
        return FileRead::TooLarge;
    }
    // A NUL anywhere: not text (and no database keeps it in text).
    if bytes.contains(&0) {
        return FileRead::Binary;
    }
    FileRead::Text(bytes)
}

/// Reads a JSONL file of [`InputRecord`]s; a bad line is an error naming the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<InputRecord>, IndexError> {
    let bytes = std::fs::read(path).map_err(|source| IndexError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_jsonl(path, &bytes)
}

/// The records of a JSONL text (`path` names it in errors): the first bad line — not UTF-8, not JSON,
/// not a record — is an error naming the file and line, and no record is returned.
pub fn parse_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<InputRecord>, IndexError> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|e| IndexError::Jsonl {
            path: path.to_path_buf(),
            line: i + 1,
            detail: format!(
                "the line is not UTF-8 text (column {}); JSONL is UTF-8",
                String::from_utf8_lossy(&line[..e.valid_up_to()])
                    .chars()
                    .count()
                    + 1
            ),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record: InputRecord = serde_json::from_str(line).map_err(|e| IndexError::Jsonl {
            path: path.to_path_buf(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        let strings = [
            Some(&record.id),
            Some(&record.text),
            record.title.as_ref(),
            record.url.as_ref(),
        ];
        if let Some(field) = ["id", "text", "title", "url"]
            .into_iter()
            .zip(strings)
            .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
            .map(|(f, _)| f)
            .or_else(|| {
                record
                    .tags
                    .iter()
                    .any(|t| t.contains('\0'))
                    .then_some("tags")
            })
        {
            return Err(IndexError::Jsonl {
                path: path.to_path_buf(),
                line: i + 1,
                detail: format!("{field}: {}", crate::store::NUL_IN_TEXT),
            });
        }
        if record.id.trim().is_empty() || record.id.len() > 1000 {
            return Err(IndexError::Jsonl {
                path: path.to_path_buf(),
                line: i + 1,
                detail: "id must be 1 to 1000 characters".into(),
            });
        }
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_lines_kept() {
        let text = "line one\ntoken = \"ghp_1234567890abcdefghijABCDEFGHIJ123456\"\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----\nlast line\n";
        let mut found = Vec::new();
        let (masked, n) = mask_secrets("doc.md", text, &mut found);
        assert_eq!(n, found.len());
        assert!(!masked.contains("ghp_1234567890"), "{masked}");
        assert!(masked.contains("[REDACTED:github_token]"), "{masked}");
        assert_eq!(masked.lines().count(), text.lines().count());
        assert_eq!(masked.lines().last(), Some("last line"));
        assert_eq!(found[0].line, 2);
        assert_eq!(found[0].kind, "github_token");
        assert!(!found[0].masked.contains("1234567890abcdef"));
    }

    #[test]
    fn targets_are_checked() {
        assert!(Target::new(Some("shop"), "docs").is_ok());
        assert!(Target::new(None, "handbook/v2").is_ok());
        assert!(Target::new(Some("Shop"), "docs").is_err());
        assert!(Target::new(Some("shop"), "").is_err());
        assert!(Target::new(Some("shop"), "a b").is_err());
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("docs.jsonl");
        std::fs::write(
            &p,
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\", \"txt\": \"y\"}\n",
        )
        .unwrap();
        let err = read_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("docs.jsonl:3:"), "{err}");
        std::fs::write(
            &p,
            "{\"id\": \"a\", \"text\": \"x\", \"tags\": [\"t\"], \"kind\": \"code\"}\n",
        )
        .unwrap();
        let records = read_jsonl(&p).unwrap();
        assert_eq!(records[0].kind, Some(DocumentKind::Code));
        assert_eq!(records[0].tags, ["t"]);
        let mut bytes =
            b"{\"id\": \"a\", \"text\": \"x\"}\r\n{\"id\": \"b\", \"text\": \"caf".to_vec();
        bytes.extend([0xe9, b'"', b'}']);
        let err = parse_jsonl(&p, &bytes).unwrap_err().to_string();
        let nul = parse_jsonl(&p, b"{\"id\": \"a\", \"text\": \"x\\u0000y\"}").unwrap_err();
        assert!(
            nul.to_string().ends_with(
                "docs.jsonl:1: text: it contains a NUL character (\\u0000), which text cannot hold"
            ),
            "{nul}"
        );
        assert!(
            err.ends_with("docs.jsonl:2: the line is not UTF-8 text (column 25); JSONL is UTF-8"),
            "{err}"
        );
    }
}
