//! HTTP clients for the remote APIs the supervisor observes and changes: Cloudflare (`cloudflare.rs`)
//! and Google Cloud (`google/`: OAuth, Compute Engine, Monitoring, API Keys, long-running operations).
//!
//! Each API gets one [`http::ApiTransport`]: one `reqwest::Client`, one [`http::HttpPolicy`] (timeouts,
//! retries with capped exponential backoff and full jitter, `429 Retry-After`), one error type
//! ([`http::ApiError`]) that names the method and path of the failed call and the API's own error codes.
//! The API-specific modules (`cloudflare.rs`) add typed requests and responses on top.
//!
//! Guarantees and caveats:
//! - A request that may have been processed is never sent twice unless it is idempotent. A `POST` that
//!   fails with a 5xx or a timeout ends in [`http::ApiError::OutcomeUnknown`]: the caller must re-read the
//!   remote state before deciding to try again.
//! - A `429` means the request was not processed, so it is retried for every method after `Retry-After`.
//! - Tokens travel only in a sensitive `Authorization` header; errors and logs carry the method and the
//!   path without the query string, never headers, tokens or request bodies.
//! - These clients know nothing of plans, desired state or the engine: they only speak the APIs.

pub mod cloudflare;
pub mod embeddings;
pub mod google;
pub mod http;

pub use http::{ApiError, ApiMessage, HttpPolicy, RetryPolicy};
