//! Hybrid search: full text and vectors, fused by weighted, normalised scores.
//!
//! Each side returns its best [`Fusion::depth`] candidates. Each list's scores are z-scored (mean 0,
//! standard deviation 1 over that list), so bm25, `ts_rank_cd` and cosine similarity become comparable;
//! a candidate missing from one list gets that list's lowest z-score (it ranked below everything the
//! list returned). The fused score is `w · z_vector + (1 − w) · z_text`.
//!
//! Why not reciprocal-rank fusion: on code search the two halves differ a lot in quality (design.md §9:
//! BM25 MRR@10 0.32, MiniLM cosine 0.53, unweighted RRF 0.45 — worse than the dense half alone). A
//! weight chosen on development data keeps the better half's ranking and lets the other half add what
//! it finds; [`Fusion::default`] holds the weight chosen on the CoSQA dev split
//! (`examples/eval_knowledge.rs`, figures in docs/benchmarks.md).
//!
//! Without an embedder (or with no vectors of its model), search is full-text only and the results say
//! so in [`SearchResults::notes`]. Snippets pass the credential detector (chunks were masked when
//! indexed; this is a second net).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::embed::{EmbedError, Embedder, NO_EMBEDDER_HINT};
use super::lexical;
use crate::secrets::detector;
use crate::store::knowledge::SHARED;
use crate::store::{ChunkFilter, ChunkHit, ChunkRow, Store, StoreError};

/// The most results one search returns.
pub const MAX_LIMIT: usize = 100;

/// The longest query, in characters (a pasted stack trace fits; a mebibyte does not).
pub const MAX_QUERY_CHARS: usize = 10_000;

const SNIPPET_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("invalid search: {0}")]
    Invalid(String),
}

/// Which halves a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Full text and vectors, fused (full text only when there is no embedder).
    #[default]
    Hybrid,
    FullText,
    Vector,
}

/// How each candidate list's scores are made comparable before weighting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// (score − mean) / standard deviation over the list.
    ZScore,
    /// (score − min) / (max − min) over the list.
    MinMax,
    /// 1 / (k + rank): weighted reciprocal-rank fusion (scores ignored).
    Rank { k: f64 },
}

/// How the two candidate lists are fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    pub normalization: Normalization,
    /// Weight of the vector side, 0 (text only) to 1 (vectors only).
    pub vector_weight: f64,
    /// Candidates taken from each side.
    pub depth: usize,
}

impl Default for Fusion {
    /// Tuned on the CoSQA dev split (docs/benchmarks.md).
    fn default() -> Self {
        Fusion {
            normalization: Normalization::ZScore,
            vector_weight: 0.7,
            depth: 100,
        }
    }
}

/// A list's normalised scores, and the score a candidate missing from the list gets.
fn normalized(hits: &[ChunkHit], how: Normalization) -> (Vec<f64>, f64) {
    if hits.is_empty() {
        return (Vec::new(), 0.0);
    }
    let n = hits.len() as f64;
    let scores: Vec<f64> = match how {
        Normalization::ZScore => {
            let mean = hits.iter().map(|h| h.score).sum::<f64>() / n;
            let sd = (hits.iter().map(|h| (h.score - mean).powi(2)).sum::<f64>() / n).sqrt();
            hits.iter()
                .map(|h| {
                    if sd > 1e-12 {
                        (h.score - mean) / sd
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        Normalization::MinMax => {
            let max = hits
                .iter()
                .map(|h| h.score)
                .fold(f64::NEG_INFINITY, f64::max);
            let min = hits.iter().map(|h| h.score).fold(f64::INFINITY, f64::min);
            hits.iter()
                .map(|h| {
                    if max - min > 1e-12 {
                        (h.score - min) / (max - min)
                    } else {
                        1.0
                    }
                })
                .collect()
        }
        Normalization::Rank { k } => (0..hits.len())
            .map(|r| 1.0 / (k + r as f64 + 1.0))
            .collect(),
    };
    let floor = match how {
        Normalization::Rank { .. } => 0.0,
        _ => scores.iter().copied().fold(f64::INFINITY, f64::min),
    };
    (scores, floor)
}

impl Fusion {
    /// Fuses two candidate lists (each best first) into `(id, score)`, best first; ties by id.
    pub fn fuse(&self, text: &[ChunkHit], vector: &[ChunkHit]) -> Vec<(i64, f64)> {
        let w = self.vector_weight.clamp(0.0, 1.0);
        let (zt, floor_t) = normalized(text, self.normalization);
        let (zv, floor_v) = normalized(vector, self.normalization);
        let mut by_id: HashMap<i64, (Option<f64>, Option<f64>)> = HashMap::new();
        for (h, z) in text.iter().zip(&zt) {
            by_id.entry(h.id).or_default().0 = Some(*z);
        }
        for (h, z) in vector.iter().zip(&zv) {
            by_id.entry(h.id).or_default().1 = Some(*z);
        }
        let mut fused: Vec<(i64, f64)> = by_id
            .into_iter()
            .map(|(id, (t, v))| {
                let t = if text.is_empty() {
                    0.0
                } else {
                    t.unwrap_or(floor_t)
                };
                let v = if vector.is_empty() {
                    0.0
                } else {
                    v.unwrap_or(floor_v)
                };
                (id, w * v + (1.0 - w) * t)
            })
            .collect();
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        fused
    }
}

/// One search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: String,
    pub filter: ChunkFilter,
    /// 1 to [`MAX_LIMIT`].
    pub limit: usize,
    pub strategy: Strategy,
}

/// One result: where it is (path or URL, lines), what it is (title, snippet), how good (score).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SearchHit {
    pub id: i64,
    pub score: f64,
    pub title: Option<String>,
    /// The indexed file (absolute path) or record id.
    pub document: String,
    pub url: Option<String>,
    pub line_start: Option<i32>,
    pub line_end: Option<i32>,
    /// `None` for shared sources.
    pub project: Option<String>,
    pub source: String,
    pub tags: Vec<String>,
    pub snippet: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SearchResults {
    /// What was actually used: `hybrid`, `full_text` or `vector`.
    pub strategy: Strategy,
    pub model: Option<String>,
    pub hits: Vec<SearchHit>,
    /// Why a half was missing, and what to do about it.
    pub notes: Vec<String>,
}

/// Searches one store with one (optional) embedder.
#[derive(Clone)]
pub struct Searcher {
    store: Arc<dyn Store>,
    embedder: Option<Arc<dyn Embedder>>,
    fusion: Fusion,
}

impl Searcher {
    pub fn new(store: Arc<dyn Store>, embedder: Option<Arc<dyn Embedder>>) -> Self {
        Searcher {
            store,
            embedder,
            fusion: Fusion::default(),
        }
    }

    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// The raw candidate lists of both halves (for evaluation and tuning): (text, vector).
    pub async fn candidates(
        &self,
        query: &str,
        filter: &ChunkFilter,
        depth: usize,
    ) -> Result<(Vec<ChunkHit>, Vec<ChunkHit>), SearchError> {
        let text = self
            .store
            .text_search(filter, &lexical::query_terms(query), depth as i64)
            .await?;
        let vector = match &self.embedder {
            Some(e) => {
                let v = e.embed(&[query.to_string()]).await?;
                match v.first() {
                    Some(v) => {
                        self.store
                            .vector_search(filter, e.model(), v, depth as i64)
                            .await?
                    }
                    None => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        Ok((text, vector))
    }

    pub async fn search(&self, q: &SearchQuery) -> Result<SearchResults, SearchError> {
        if q.limit == 0 || q.limit > MAX_LIMIT {
            return Err(SearchError::Invalid(format!(
                "limit must be 1 to {MAX_LIMIT}, got {}",
                q.limit
            )));
        }
        if q.text.trim().is_empty() {
            return Err(SearchError::Invalid("the query is empty".into()));
        }
        if q.text.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::Invalid(format!(
                "the query is longer than {MAX_QUERY_CHARS} characters; search with the words that matter"
            )));
        }
        if q.text.contains('\0') {
            return Err(SearchError::Invalid(format!(
                "the query: {}",
                crate::store::NUL_IN_TEXT
            )));
        }
        let mut notes = Vec::new();
        let mut strategy = q.strategy;
        if self.embedder.is_none() && strategy != Strategy::FullText {
            notes.push(format!("full-text only: {NO_EMBEDDER_HINT}"));
            strategy = Strategy::FullText;
        }
        let depth = self.fusion.depth.max(q.limit);
        let text = if strategy == Strategy::Vector {
            Vec::new()
        } else {
            self.store
                .text_search(&q.filter, &lexical::query_terms(&q.text), depth as i64)
                .await?
        };
        let mut vector = Vec::new();
        let model = self.embedder.as_ref().map(|e| e.model().to_string());
        if strategy != Strategy::FullText
            && let Some(e) = &self.embedder
        {
            match e.embed(std::slice::from_ref(&q.text)).await {
                Ok(v) => {
                    if let Some(v) = v.first() {
                        vector = self
                            .store
                            .vector_search(&q.filter, e.model(), v, depth as i64)
                            .await?;
                    }
                    if vector.is_empty() {
                        self.note_missing_vectors(e.model(), &q.filter, &mut notes)
                            .await?;
                    }
                }
                // A failing endpoint degrades a hybrid search to full text, visibly.
                Err(err) if strategy == Strategy::Hybrid => {
                    notes.push(format!(
                        "full-text only: the query could not be embedded: {err}"
                    ));
                    strategy = Strategy::FullText;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let ranked: Vec<(i64, f64)> = match strategy {
            Strategy::FullText => text.iter().map(|h| (h.id, h.score)).collect(),
            Strategy::Vector => vector.iter().map(|h| (h.id, h.score)).collect(),
            Strategy::Hybrid => self.fusion.fuse(&text, &vector),
        };
        let top: Vec<(i64, f64)> = ranked.into_iter().take(q.limit).collect();
        let ids: Vec<i64> = top.iter().map(|(id, _)| *id).collect();
        let rows: HashMap<i64, ChunkRow> = self
            .store
            .chunks_by_id(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let terms = lexical::query_terms(&q.text);
        let hits = top
            .into_iter()
            .filter_map(|(id, score)| rows.get(&id).map(|r| hit(r, score, &terms)))
            .collect();
        Ok(SearchResults {
            strategy,
            model: if strategy == Strategy::FullText {
                None
            } else {
                model
            },
            hits,
            notes,
        })
    }

    /// When the vector side found nothing: are the chunks embedded with another model, or not at all?
    async fn note_missing_vectors(
        &self,
        model: &str,
        filter: &ChunkFilter,
        notes: &mut Vec<String>,
    ) -> Result<(), SearchError> {
        let sources = self
            .store
            .knowledge_sources(filter.projects.as_deref())
            .await?;
        let (mut other, mut none) = (0i64, 0i64);
        let mut other_models: Vec<String> = Vec::new();
        for s in sources
            .iter()
            .filter(|s| filter.sources.is_empty() || filter.sources.contains(&s.source))
        {
            none += s.unembedded;
            for (m, n) in &s.models {
                if m != model {
                    other += n;
                    if !other_models.contains(m) {
                        other_models.push(m.clone());
                    }
                }
            }
        }
        if other > 0 {
            notes.push(format!(
                "{other} chunks are embedded with {} and not with {model}: run `supervisor knowledge index` on their sources to re-embed them",
                other_models.join(", ")
            ));
        }
        if none > 0 {
            notes.push(format!(
                "{none} chunks have no vector yet (indexed without an embedder): run `supervisor knowledge index` again to embed them"
            ));
        }
        Ok(())
    }
}

fn hit(r: &ChunkRow, score: f64, terms: &[String]) -> SearchHit {
    SearchHit {
        id: r.id,
        score,
        title: r.title.clone(),
        document: r.document.clone(),
        url: r.url.clone(),
        line_start: r.line_start,
        line_end: r.line_end,
        project: (r.project != SHARED).then(|| r.project.clone()),
        source: r.source.clone(),
        tags: r.tags.clone(),
        snippet: snippet(&r.content, terms),
    }
}

/// Up to [`SNIPPET_CHARS`] characters of `content` around the first query term it contains (its start
/// otherwise), on whole lines where possible, credentials masked.
pub fn snippet(content: &str, terms: &[String]) -> String {
    let lower = content.to_lowercase();
    let at = terms
        .iter()
        .filter_map(|t| lower.find(t.as_str()))
        .min()
        .filter(|&i| lower.len() == content.len() && content.is_char_boundary(i))
        .unwrap_or(0);
    // Start at the beginning of the line holding the match, or a little before it.
    let line_start = content[..at].rfind('\n').map_or(0, |i| i + 1);
    let start = if at - line_start > SNIPPET_CHARS / 2 {
        let mut s = at - SNIPPET_CHARS / 3;
        while !content.is_char_boundary(s) {
            s -= 1;
        }
        s
    } else {
        line_start
    };
    let piece: String = content[start..].chars().take(SNIPPET_CHARS).collect();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(piece.trim_end());
    if content[start..].chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    detector::redact(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(scores: &[(i64, f64)]) -> Vec<ChunkHit> {
        scores
            .iter()
            .map(|&(id, score)| ChunkHit {
                id,
                document: format!("d{id}"),
                chunk_index: 0,
                score,
            })
            .collect()
    }

    #[test]
    fn fusion_weights_z_scores_and_floors_missing_candidates() {
        let text = hits(&[(1, 10.0), (2, 5.0), (3, 0.0)]);
        let vector = hits(&[(3, 0.9), (4, 0.5), (1, 0.1)]);
        let ids = |f: Fusion| -> Vec<i64> { f.fuse(&text, &vector).iter().map(|x| x.0).collect() };
        assert_eq!(
            ids(Fusion {
                vector_weight: 1.0,
                depth: 10,
                ..Fusion::default()
            }),
            [3, 4, 1, 2],
            "vector only: 2 is missing from the vector list, so it ties with its floor and loses on id"
        );
        assert_eq!(
            ids(Fusion {
                vector_weight: 0.0,
                depth: 10,
                ..Fusion::default()
            }),
            [1, 2, 3, 4]
        );
        // Equal weights: 1 is first in text and last in vectors; 3 is the reverse.
        let both = Fusion {
            vector_weight: 0.5,
            depth: 10,
            ..Fusion::default()
        }
        .fuse(&text, &vector);
        assert_eq!(both.len(), 4);
        assert!((both[0].1 - both[1].1).abs() < 1e-9, "{both:?}");
        // One empty side leaves the other's order.
        let only_text = Fusion::default().fuse(&text, &[]);
        assert_eq!(only_text.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn snippets_centre_on_the_first_term_and_mask_credentials() {
        let content = format!(
            "{}\nthe deploy step uses token ghp_1234567890abcdefghijABCDEFGHIJ123456\n",
            "intro ".repeat(100)
        );
        let s = snippet(&content, &["deploy".to_string()]);
        assert!(s.starts_with("…the deploy step"), "{s}");
        assert!(!s.contains("ghp_1234567890"), "{s}");
        assert_eq!(snippet("short text", &["nothing".into()]), "short text");
        let long = "word ".repeat(200);
        let s = snippet(&long, &[]);
        assert!(
            s.ends_with('…') && s.chars().count() <= SNIPPET_CHARS + 1,
            "{s}"
        );
    }
}
