//! Required secrets: a project's `secrets.required` must exist in the vault. This provider never
//! changes anything (values are set by people, never planned); it reports what is missing, expired or
//! flagged for rotation as plan warnings. It reads metadata only — nothing is decrypted.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::engine::{Notice, Outputs, Provider, ProviderError, ProviderPlan, fingerprint};
use crate::state::Desired;
use crate::store::{SecretFilter, SecretMeta, Store};

pub const NAME: &str = "secrets";

pub struct RequiredSecretsProvider {
    store: Arc<dyn Store>,
}

impl RequiredSecretsProvider {
    pub fn new(store: Arc<dyn Store>) -> Self {
        RequiredSecretsProvider { store }
    }
}

#[async_trait]
impl Provider for RequiredSecretsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn plan(
        &self,
        desired: &Desired,
        _earlier: &Outputs,
    ) -> Result<ProviderPlan, ProviderError> {
        let present = self.store.list_secrets(&SecretFilter::default()).await?;
        let mut plan = diff(desired, &present, Utc::now());
        let seen: Vec<(&str, Option<DateTime<Utc>>, bool)> = present
            .iter()
            .map(|m| (m.path.as_str(), m.expires_at, m.rotation_required))
            .collect();
        plan.fingerprint = fingerprint(&seen);
        Ok(plan)
    }

    async fn apply(&self, change: &crate::engine::Change) -> Result<(), ProviderError> {
        Err(ProviderError::Failed(format!(
            "{}: secrets are set by people, never planned",
            change.address
        )))
    }
}

/// A secret a project requires that the vault does not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct MissingSecret {
    pub project: String,
    pub path: String,
}

/// The secrets `desired`'s projects (or only `project`) require that are not among `present`. Pure.
pub fn missing(
    desired: &Desired,
    present: &[SecretMeta],
    project: Option<&str>,
) -> Vec<MissingSecret> {
    let have: std::collections::HashSet<&str> = present.iter().map(|m| m.path.as_str()).collect();
    desired
        .projects
        .values()
        .filter(|p| project.is_none_or(|name| p.name == name))
        .flat_map(|p| {
            p.secrets
                .required
                .iter()
                .filter(|path| !have.contains(path.as_str()))
                .map(|path| MissingSecret {
                    project: p.name.clone(),
                    path: path.clone(),
                })
        })
        .collect()
}

/// Warnings for required secrets that are missing, expired or due for rotation. Pure.
pub fn diff(desired: &Desired, present: &[SecretMeta], now: DateTime<Utc>) -> ProviderPlan {
    let by_path: HashMap<&str, &SecretMeta> =
        present.iter().map(|m| (m.path.as_str(), m)).collect();
    let missing = missing(desired, present, None);
    let absent: std::collections::HashSet<(&str, &str)> = missing
        .iter()
        .map(|m| (m.project.as_str(), m.path.as_str()))
        .collect();
    let mut plan = ProviderPlan::default();
    for p in desired.projects.values() {
        for path in &p.secrets.required {
            let notice = |message: String| Notice {
                provider: NAME.into(),
                address: Some(format!("secrets/{path}")),
                project: Some(p.name.clone()),
                message,
            };
            if absent.contains(&(p.name.as_str(), path.as_str())) {
                plan.warnings.push(notice(format!(
                    "{path} is required by project `{}` but not set (supervisor secrets set {path})",
                    p.name
                )));
                continue;
            }
            let Some(m) = by_path.get(path.as_str()) else {
                continue;
            };
            if m.expires_at.is_some_and(|e| e <= now) {
                plan.warnings
                    .push(notice(format!("{path} expired and should be replaced")));
            }
            if m.rotation_required {
                plan.warnings
                    .push(notice(format!("{path} is flagged for rotation")));
            }
        }
    }
    plan
}
