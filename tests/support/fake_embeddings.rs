//! A fake OpenAI-compatible embeddings API (`POST /v1/embeddings`), for tests, on 127.0.0.1 and a free
//! port. It follows OpenAI's published contract: a bearer key, `{"model", "input": string | [string],
//! "encoding_format"?, "dimensions"?}` in, `{"object": "list", "data": [{"object": "embedding", "index",
//! "embedding"}], "model", "usage"}` out, errors as `{"error": {"message", "type", "code"}}` (401 for a
//! bad key, 404 for an unknown model, 400 for a bad body), `429` with `Retry-After`.
//!
//! Vectors are deterministic: the words of the text hashed into [`DIMENSIONS`] buckets, normalised, so
//! texts sharing words are similar. The `data` list comes back in reverse order (the contract orders by
//! `index`, not by position). Faults: [`FakeEmbeddings::fail_next`] (5xx), [`FakeEmbeddings::rate_limit_next`]
//! (429 + Retry-After), and a queue of [`Fault`]s one per call ([`FakeEmbeddings::inject`]: 5xx, 429 or 503
//! with `Retry-After`, a connection reset, an answer slower than the client's timeout).
//! [`FakeEmbeddings::calls`] and [`FakeEmbeddings::inputs`] count what arrived;
//! [`FakeEmbeddings::attempts`] has every call's arrival time, status and `Retry-After`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const KEY: &str = "sk-fake-embeddings-0123456789abcdefABCDEF";
pub const DIMENSIONS: usize = 64;

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answered with this status (an OpenAI error body).
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// 503 with `Retry-After: secs`.
    Unavailable(u64),
    /// The connection is reset without an answer.
    Reset,
    /// Answered normally after this delay.
    Latency(Duration),
    /// Answered normally.
    Pass,
}

#[derive(Default)]
struct Inner {
    models: Vec<String>,
    calls: usize,
    inputs: usize,
    fail_next: Vec<u16>,
    rate_limit_next: Option<u64>,
    faults: std::collections::VecDeque<Fault>,
    log: Vec<super::faults::Attempt>,
    last_authorization: Option<String>,
}

pub struct FakeEmbeddings {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEmbeddings {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fake's vector for `text` (also what tests compare against).
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 1469598103934665603;
        for b in w.to_lowercase().bytes() {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
        v[(h % dims as u64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    } else {
        v[0] = 1.0;
    }
    v
}

fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        ),
    )
        .into_response()
}

async fn embeddings(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let index;
    let fault;
    {
        let mut s = inner.lock().unwrap();
        index = s.log.len();
        s.log.push(super::faults::Attempt {
            method: Method::POST,
            target: "/v1/embeddings".into(),
            at: Instant::now(),
            status: 0,
            retry_after: None,
        });
        fault = s.faults.pop_front();
    }
    let reset = fault == Some(Fault::Reset);
    let response = match fault {
        Some(Fault::Reset) => super::faults::reset_response(),
        Some(Fault::Status(code)) => error(
            StatusCode::from_u16(code).unwrap(),
            "The server had an error while processing your request.",
            "server_error",
            None,
        ),
        Some(Fault::RateLimited(secs)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached",
                "requests",
                Some("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            r
        }
        Some(Fault::Unavailable(secs)) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            );
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            r
        }
        Some(Fault::Latency(d)) => {
            tokio::time::sleep(d).await;
            answer(&inner, &headers, &body)
        }
        Some(Fault::Pass) | None => answer(&inner, &headers, &body),
    };
    let mut s = inner.lock().unwrap();
    if let Some(a) = s.log.get_mut(index) {
        a.status = if reset {
            super::faults::RESET
        } else {
            response.status().as_u16()
        };
        a.retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
    }
    response
}

fn answer(inner: &Arc<Mutex<Inner>>, headers: &HeaderMap, body: &Bytes) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    {
        let mut s = inner.lock().unwrap();
        s.calls += 1;
        s.last_authorization = auth.clone();
        if let Some(secs) = s.rate_limit_next.take() {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached",
                "requests",
                Some("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            return r;
        }
        if !s.fail_next.is_empty() {
            let code = s.fail_next.remove(0);
            return error(
                StatusCode::from_u16(code).unwrap(),
                "The server had an error while processing your request.",
                "server_error",
                None,
            );
        }
    }
    if auth.as_deref() != Some(&format!("Bearer {KEY}")) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let model = req["model"].as_str().unwrap_or_default().to_string();
    if !inner.lock().unwrap().models.contains(&model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        );
    }
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' must be a non-empty string or array of strings",
                "invalid_request_error",
                None,
            );
        }
    };
    let dims = req["dimensions"]
        .as_u64()
        .map_or(DIMENSIONS, |d| d as usize);
    inner.lock().unwrap().inputs += inputs.len();
    let tokens: usize = inputs.iter().map(|i| i.split_whitespace().count()).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(
            |(i, text)| json!({"object": "embedding", "index": i, "embedding": vector(text, dims)}),
        )
        .collect();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

impl FakeEmbeddings {
    /// Serves the given model names.
    pub async fn start(models: &[&str]) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            models: models.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(inner.clone());
        let (addr, listener) = super::faults::listener().await;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeEmbeddings {
            url: format!("http://{addr}/v1"),
            inner,
            server,
        }
    }

    /// The next calls fail with these HTTP statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().fail_next = statuses.to_vec();
    }

    /// The next call is answered 429 with `Retry-After: secs`.
    pub fn rate_limit_next(&self, secs: u64) {
        self.inner.lock().unwrap().rate_limit_next = Some(secs);
    }

    /// The next calls meet these faults, one each, in order ([`Fault::Pass`] lets one through).
    pub fn inject(&self, faults: &[Fault]) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }

    /// Every call's arrival, status and `Retry-After`.
    pub fn attempts(&self) -> Vec<super::faults::Attempt> {
        self.inner.lock().unwrap().log.clone()
    }

    /// Faults injected and not yet met.
    pub fn pending_faults(&self) -> usize {
        self.inner.lock().unwrap().faults.len()
    }

    pub fn calls(&self) -> usize {
        self.inner.lock().unwrap().calls
    }

    /// Texts embedded so far (successful calls only).
    pub fn inputs(&self) -> usize {
        self.inner.lock().unwrap().inputs
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.inner.lock().unwrap().last_authorization.clone()
    }
}
