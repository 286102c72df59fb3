//! API Keys API v2: create (a long-running operation), get, list, getKeyString, delete, and
//! `operations.get`. Keys are global resources: the location is always `global`.
//!
//! The key string is only ever returned by [`ApiKeysClient::key_string`], as a `SecretString`; the
//! [`V2Key`] type has no field for it (the API leaves it out of get/list, and an operation's
//! `response` that carried it would have it dropped while decoding), so a key string cannot end up in
//! a `Debug` print, a plan or a log.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::TokenSource;
use super::{GoogleApi, GoogleError};
use crate::clients::HttpPolicy;
use crate::clients::http::{ApiError, ApiRequest};

const API: &str = "API Keys API";

/// A key, as get/list/create answer it (without its key string).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct V2Key {
    /// `projects/<number>/locations/global/keys/<keyId>` (output only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Set while the key is deleted (recoverable for 30 days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<V2Restrictions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl V2Key {
    /// The last segment of the name: the key id.
    pub fn key_id(&self) -> &str {
        super::short_name(&self.name)
    }

    /// The services of `restrictions.apiTargets`, lower case, sorted.
    pub fn api_targets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .restrictions
            .as_ref()
            .map(|r| {
                r.api_targets
                    .iter()
                    .map(|t| t.service.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }
}

/// `V2Restrictions`: API targets are modelled; the other restriction kinds are kept as they came.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct V2Restrictions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_targets: Vec<V2ApiTarget>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct V2ApiTarget {
    pub service: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Status {
    pub code: i64,
    pub message: String,
}

/// A long-running operation of the API Keys API. `response` is decoded as a key (the key string, if
/// any, is dropped).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KeyOperation {
    /// `operations/<id>`.
    pub name: String,
    pub done: bool,
    pub error: Option<Status>,
    pub response: Option<V2Key>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListKeysResponse {
    keys: Vec<V2Key>,
    next_page_token: Option<String>,
}

/// Holds the key string only long enough to move it into a `SecretString`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyStringResponse {
    key_string: zeroize::Zeroizing<String>,
}

/// The API Keys client.
pub struct ApiKeysClient {
    api: GoogleApi,
}

/// `projects/<project>/locations/global`.
pub fn parent(project: &str) -> String {
    format!("projects/{project}/locations/global")
}

/// A resource name as path segments (`projects/p/locations/global/keys/k` → 6 segments), so that
/// no part of it can change the route.
fn segments(name: &str) -> Vec<String> {
    name.split('/').map(str::to_string).collect()
}

impl ApiKeysClient {
    /// `base_url` like `https://apikeys.googleapis.com/v2`.
    pub fn new(
        base_url: &str,
        auth: Arc<TokenSource>,
        policy: HttpPolicy,
    ) -> Result<Self, ApiError> {
        Ok(ApiKeysClient {
            api: GoogleApi::new(API, base_url, auth, policy)?,
        })
    }

    /// `keys.create` with a chosen key id. Not repeated on a lost answer (there is no request id):
    /// the caller reads the key by name to learn whether it was created.
    pub async fn create_key(
        &self,
        project: &str,
        key_id: &str,
        key: &V2Key,
    ) -> Result<KeyOperation, GoogleError> {
        let mut segs = segments(&parent(project));
        segs.push("keys".into());
        let req = ApiRequest::new(Method::POST, segs)
            .query("keyId", key_id)
            .json(key);
        self.api.json(&req).await
    }

    /// `operations.get`.
    pub async fn get_operation(&self, name: &str) -> Result<KeyOperation, GoogleError> {
        self.api
            .json(&ApiRequest::new(Method::GET, segments(name)))
            .await
    }

    /// `keys.get` by full name.
    pub async fn get_key(&self, name: &str) -> Result<V2Key, GoogleError> {
        self.api
            .json(&ApiRequest::new(Method::GET, segments(name)))
            .await
    }

    /// `keys.list`, every page; `show_deleted` adds keys deleted in the last 30 days.
    pub async fn list_keys(
        &self,
        project: &str,
        show_deleted: bool,
    ) -> Result<Vec<V2Key>, GoogleError> {
        let mut segs = segments(&parent(project));
        segs.push("keys".into());
        self.api
            .paged(
                |token| {
                    let mut req =
                        ApiRequest::new(Method::GET, segs.clone()).query("pageSize", "300");
                    if show_deleted {
                        req = req.query("showDeleted", "true");
                    }
                    if let Some(t) = token {
                        req = req.query("pageToken", t);
                    }
                    req
                },
                |page: ListKeysResponse| (page.keys, page.next_page_token),
            )
            .await
    }

    /// `keys.getKeyString`: the key's secret value.
    pub async fn key_string(&self, name: &str) -> Result<SecretString, GoogleError> {
        let mut segs = segments(name);
        segs.push("keyString".into());
        let answer: KeyStringResponse = self.api.json(&ApiRequest::new(Method::GET, segs)).await?;
        Ok(SecretString::from(answer.key_string.to_string()))
    }

    /// `keys.delete` (the key stays recoverable for 30 days). A key that is gone answers 404.
    pub async fn delete_key(&self, name: &str) -> Result<KeyOperation, GoogleError> {
        self.api
            .json(&ApiRequest::new(Method::DELETE, segments(name)))
            .await
    }
}
