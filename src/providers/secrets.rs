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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::vault::VaultHealth;
    use crate::state::{Project, RequiredSecrets};

    fn desired(required: &[(&str, &[&str])]) -> Desired {
        Desired {
            dir: "state".into(),
            revision: "r".into(),
            ports: crate::state::PortSettings {
                projects_start: 3000,
                projects_end: 3099,
                block: 100,
                shared_start: 9000,
                shared_end: 9099,
            },
            shared_services: vec![],
            cloudflare: None,
            gcloud: None,
            vms: vec![],
            instructions: Default::default(),
            projects: required
                .iter()
                .map(|(name, paths)| {
                    let p = Project {
                        name: (*name).into(),
                        host: crate::store::DEFAULT_HOST.into(),
                        path: None,
                        port_range: None,
                        services: vec![],
                        secrets: RequiredSecrets {
                            required: paths.iter().map(|p| p.to_string()).collect(),
                        },
                        checks: vec![],
                        knowledge: vec![],
                        instructions: None,
                        instructions_dir: None,
                        api_keys: vec![],
                    };
                    (p.name.clone(), p)
                })
                .collect(),
            warnings: vec![],
        }
    }

    fn meta(path: &str, project: Option<&str>, expired: bool, rotate: bool) -> SecretMeta {
        let now = Utc::now();
        SecretMeta {
            path: path.into(),
            scope: "project".into(),
            project: project.map(str::to_string),
            service: None,
            description: None,
            key_version: 1,
            created_at: now,
            updated_at: now,
            last_accessed_at: None,
            access_count: 0,
            expires_at: expired.then(|| now - chrono::Duration::days(1)),
            rotation_required: rotate,
        }
    }

    #[test]
    fn missing_expired_and_rotation_are_told_apart_by_path() {
        let d = desired(&[
            (
                "shop",
                &[
                    "project/shop/db",
                    "project/shop/stripe",
                    "meta/cloudflare/token",
                ],
            ),
            ("blog", &["project/blog/key"]),
        ]);
        let present = [
            meta("project/shop/stripe", Some("shop"), true, false),
            meta("project/blog/key", Some("blog"), false, true),
            meta("project/blog/other", Some("blog"), false, false),
        ];
        let missing = |project| -> Vec<(String, String)> {
            super::missing(&d, &present, project)
                .into_iter()
                .map(|m| (m.project, m.path))
                .collect()
        };
        assert_eq!(
            missing(None),
            [
                ("shop".to_string(), "project/shop/db".to_string()),
                ("shop".to_string(), "meta/cloudflare/token".to_string())
            ]
        );
        assert!(missing(Some("blog")).is_empty());
        // The plan's warnings say the same, one per problem.
        let warnings: Vec<String> = diff(&d, &present, Utc::now())
            .warnings
            .into_iter()
            .map(|w| w.message)
            .collect();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("project/shop/db is required"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("project/shop/stripe expired"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("project/blog/key is flagged"))
        );
        // The vault's health of a project: its own secrets only.
        let blog = VaultHealth::of(&present, Some("blog"), Utc::now());
        assert_eq!(
            (blog.total, blog.expired.len(), blog.rotation_required),
            (2, 0, vec!["project/blog/key".to_string()])
        );
        let all = VaultHealth::of(&present, None, Utc::now());
        assert_eq!(
            (all.total, all.expired),
            (3, vec!["project/shop/stripe".to_string()])
        );
    }
}
