//! An OpenAI-compatible embeddings client: `POST {base}/embeddings` with `{"model", "input": [...]}`,
//! answered by `{"data": [{"index", "embedding"}], "model"}` — the API of OpenAI, Ollama (`/v1`), Hugging
//! Face TEI and vLLM.
//!
//! Embedding is a pure function of model and input, so the call is declared idempotent: timeouts and
//! 5xx answers are retried under the [`HttpPolicy`] like a GET (a repeated request costs tokens, never
//! correctness). Vectors come back in input order whatever order the server lists them in; a response
//! with a missing, duplicated or out-of-range index, or vectors of different lengths, is a decode error.
//! The API key travels only in the `Authorization` header.

use std::fmt;

use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::http::{ApiError, ApiMessage, ApiRequest, ApiTransport, HttpPolicy};

const API: &str = "embeddings API";

/// A client of one endpoint and model.
pub struct EmbeddingsClient {
    transport: ApiTransport,
    model: String,
    api_key: Option<SecretString>,
    dimensions: Option<u32>,
}

impl fmt::Debug for EmbeddingsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingsClient")
            .field("transport", &self.transport)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// `{"error": {"message", "code"|"type"}}` (OpenAI) or `{"error": "..."}` (Ollama, TEI).
fn parse_errors(body: &[u8]) -> Vec<ApiMessage> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object {
            message: String,
            #[serde(default)]
            code: Option<serde_json::Value>,
        },
        Text(String),
    }
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorField,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope {
            error: ErrorField::Object { message, code },
        }) => vec![ApiMessage {
            code: code.and_then(|c| c.as_i64()).unwrap_or(0),
            message,
            pointer: None,
        }],
        Ok(Envelope {
            error: ErrorField::Text(message),
        }) => vec![ApiMessage {
            code: 0,
            message,
            pointer: None,
        }],
        Err(_) => Vec::new(),
    }
}

impl EmbeddingsClient {
    /// `base_url` ends before `/embeddings`, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1`. `dimensions` asks models that support it for shorter vectors.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<SecretString>,
        dimensions: Option<u32>,
        policy: HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(EmbeddingsClient {
            transport: ApiTransport::new(API, base_url, policy, parse_errors)?,
            model: model.to_string(),
            api_key,
            dimensions,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// One vector per input, in input order.
    pub async fn embed(&self, input: &[String]) -> Result<Vec<Vec<f32>>, ApiError> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let req = ApiRequest::new(Method::POST, ["embeddings"])
            .json(&EmbeddingsRequest {
                model: &self.model,
                input,
                encoding_format: "float",
                dimensions: self.dimensions,
            })
            .idempotent();
        let resp = self.transport.send(&req, self.api_key.as_ref()).await?;
        let parsed: EmbeddingsResponse = serde_json::from_slice(&resp.body).map_err(|e| {
            self.transport.decode_error(
                &req,
                resp.status,
                format!("not an embeddings response: {e}"),
            )
        })?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; input.len()];
        for item in parsed.data {
            let slot = out.get_mut(item.index).ok_or_else(|| {
                self.transport.decode_error(
                    &req,
                    resp.status,
                    format!(
                        "vector index {} out of range for {} inputs",
                        item.index,
                        input.len()
                    ),
                )
            })?;
            if slot.replace(item.embedding).is_some() {
                return Err(self.transport.decode_error(
                    &req,
                    resp.status,
                    format!("vector index {} appears twice", item.index),
                ));
            }
        }
        let vectors: Vec<Vec<f32>> = out
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    self.transport.decode_error(
                        &req,
                        resp.status,
                        format!("no vector for input {i}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let dim = vectors[0].len();
        if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
            return Err(self.transport.decode_error(
                &req,
                resp.status,
                "vectors are empty or of different lengths",
            ));
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_known_servers() {
        let openai = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(
            parse_errors(openai)[0].message,
            "Incorrect API key provided"
        );
        let ollama = br#"{"error":"model \"nomic\" not found, try pulling it first"}"#;
        assert_eq!(
            parse_errors(ollama)[0].message,
            "model \"nomic\" not found, try pulling it first"
        );
        assert!(parse_errors(b"<html>").is_empty());
    }

    #[test]
    fn debug_hides_the_key() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = EmbeddingsClient::new(
            "http://127.0.0.1:1/v1",
            "m",
            Some(SecretString::from("sk-secret-value")),
            None,
            HttpPolicy::default(),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret-value"), "{shown}");
    }
}
