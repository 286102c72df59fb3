//! A [`SecretSource`] test double holding fixed values (the fake Cloudflare's token), counting reads.
//! Stands in for the vault in library-level tests of providers that need credentials.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::SecretString;
use supervisor::secrets::{SecretSource, SecretSourceError};

#[derive(Default)]
pub struct StaticSecrets {
    values: HashMap<String, String>,
    reads: Mutex<Vec<(String, String)>>,
}

impl StaticSecrets {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        StaticSecrets {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reads: Mutex::new(Vec::new()),
        }
    }

    /// Every read so far, as (path, actor).
    pub fn reads(&self) -> Vec<(String, String)> {
        self.reads.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl SecretSource for StaticSecrets {
    async fn read_secret(
        &self,
        path: &str,
        actor: &str,
    ) -> Result<SecretString, SecretSourceError> {
        self.reads
            .lock()
            .unwrap()
            .push((path.to_string(), actor.to_string()));
        self.values
            .get(path)
            .map(|v| SecretString::from(v.clone()))
            .ok_or_else(|| SecretSourceError {
                path: path.to_string(),
                reason: "no secret at this path".into(),
            })
    }
}
