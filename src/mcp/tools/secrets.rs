//! Secret tools: read and write the vault through an actor confined to the endpoint's project, list
//! metadata, and turn pasted credentials into stored secrets. Values leave only through `get_secret`.

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::McpServer;
use crate::ops::OpsError;
use crate::secrets::detector;
use crate::secrets::path::SecretPath;
use crate::secrets::vault::{Expiry, ListFilter, SecretValue, SetOptions};
use crate::store::SecretScope;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SecretPathArgs {
    /// The secret's path: `project/<project>/<name>`, `service/<project>/<service>/<name>`, or (meta
    /// endpoint only) `meta/<name>`. A project endpoint only reaches its own project's secrets.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SetSecretArgs {
    /// Where to store it (see get_secret for the path forms).
    pub path: String,
    /// The value. It is encrypted at rest and never appears in logs or plans.
    pub value: String,
    /// What the secret is for.
    #[serde(default)]
    pub description: Option<String>,
    /// When it expires: an RFC 3339 time (2027-01-31T00:00:00Z), a date (2027-01-31), a number of
    /// days (90d) or `never`. Omitted: an existing secret keeps its expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
pub struct ListSecretsArgs {
    /// Only `meta`, `project` or `service` secrets.
    #[serde(default)]
    pub scope: Option<String>,
    /// Only this project's secrets (a project endpoint always lists only its own).
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DetectSecretsArgs {
    /// Text that may contain credentials (a pasted .env, a config file, a message).
    pub text: String,
    /// Suggest paths under this project (defaults to the endpoint's project; on the meta endpoint
    /// without it, paths under meta/<vendor>/).
    #[serde(default)]
    pub project: Option<String>,
    /// Store each credential found at its suggested path (default false: only report).
    #[serde(default)]
    pub store: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretOut {
    pub path: String,
    pub value: String,
    pub expires_at: Option<String>,
    /// Expired secrets are still returned; replace them soon.
    pub expired: bool,
    pub rotation_required: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SetSecretOut {
    pub path: String,
    /// `created` or `updated`.
    pub written: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretsOut {
    /// Metadata only, never values.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub secrets: Vec<crate::secrets::vault::SecretInfo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedOut {
    pub path: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetectedOut {
    pub kind: String,
    /// The credential with all but a short prefix hidden.
    pub masked: String,
    pub line: usize,
    pub column: usize,
    pub suggested_path: String,
    /// Whether it was stored at the suggested path by this call.
    pub stored: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetectOut {
    pub findings: Vec<DetectedOut>,
}

fn secret_path(text: &str) -> Result<SecretPath, OpsError> {
    SecretPath::parse(text).map_err(|e| OpsError::InvalidArgument(e.to_string()))
}

#[tool_router(router = secrets_tools, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Read a secret's value by path (project/<p>/<name> or service/<p>/<service>/<name>; meta/… on the meta endpoint only). Every read is audited. Use the value directly; never write it into files or logs."
    )]
    async fn get_secret(
        &self,
        Parameters(args): Parameters<SecretPathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SecretOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("get_secret", async {
            let path = secret_path(&args.path)?;
            let revealed = self.runtime.vault()?.get(&path, &actor).await?;
            Ok(Json(SecretOut {
                path: path.to_string(),
                expired: revealed.expired(),
                expires_at: revealed.expires_at.map(|t| t.to_rfc3339()),
                rotation_required: revealed.rotation_required,
                value: revealed.value.expose().to_string(),
            }))
        })
        .await
    }

    #[tool(
        description = "Store a secret (encrypted at rest, audited) at a path this endpoint may write: project/<p>/<name> or service/<p>/<service>/<name> (meta/… on the meta endpoint). Replaces an existing value."
    )]
    async fn set_secret(
        &self,
        Parameters(args): Parameters<SetSecretArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SetSecretOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("set_secret", async {
            let path = secret_path(&args.path)?;
            let expiry = match &args.expires_at {
                Some(t) => Expiry::parse(t, chrono::Utc::now())
                    .map_err(|e| OpsError::InvalidArgument(format!("expires_at: {e}")))?,
                None => Expiry::Keep,
            };
            let options = SetOptions {
                description: args.description,
                expiry,
                rotation_required: false,
            };
            let value = SecretValue::new(zeroize::Zeroizing::new(args.value));
            let written = self
                .runtime
                .vault()?
                .set(&path, &value, &options, &actor)
                .await?;
            Ok(Json(SetSecretOut {
                path: path.to_string(),
                written: serde_json::to_value(written)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            }))
        })
        .await
    }

    #[tool(
        description = "List secrets this endpoint may see: path, description, scope, created/updated, last accessed, access count, expiry, rotation flag. Never values."
    )]
    async fn list_secrets(
        &self,
        Parameters(args): Parameters<ListSecretsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<SecretsOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("list_secrets", async {
            let scope = match args.scope.as_deref() {
                Some(s) => Some(SecretScope::parse(s).ok_or_else(|| {
                    OpsError::InvalidArgument(format!(
                        "scope `{s}` is not meta, project or service"
                    ))
                })?),
                None => None,
            };
            let project = self.visibility().filter(args.project)?;
            let secrets = crate::secrets::vault::list(
                self.runtime.store.as_ref(),
                &ListFilter { scope, project },
                &actor,
            )
            .await?;
            Ok(Json(SecretsOut { secrets }))
        })
        .await
    }

    #[tool(description = "Delete a secret this endpoint may write (audited).")]
    async fn delete_secret(
        &self,
        Parameters(args): Parameters<SecretPathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DeletedOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("delete_secret", async {
            let path = secret_path(&args.path)?;
            self.runtime.vault()?.delete(&path, &actor).await?;
            Ok(Json(DeletedOut {
                path: path.to_string(),
                deleted: true,
            }))
        })
        .await
    }

    #[tool(
        description = "Find credentials (API keys, tokens, private keys, passwords in URLs…) in pasted text and suggest a vault path for each; with store: true, store each one there. Values are never echoed back (masked only)."
    )]
    async fn detect_secrets(
        &self,
        Parameters(args): Parameters<DetectSecretsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<DetectOut>, String> {
        let actor = self.vault_actor(&self.principal(&ctx));
        self.track("detect_secrets", async {
            let project = self.visibility().filter(args.project)?;
            let suggestions = detector::suggest(&args.text, project.as_deref())
                .map_err(|e| OpsError::InvalidArgument(e.to_string()))?;
            let store = args.store.unwrap_or(false);
            let mut findings = Vec::with_capacity(suggestions.len());
            for s in suggestions {
                let mut stored = false;
                if store {
                    let value = SecretValue::new(zeroize::Zeroizing::new(
                        args.text[s.finding.start..s.finding.end].to_string(),
                    ));
                    let options = SetOptions {
                        description: Some(format!("detected {}", s.finding.kind)),
                        ..Default::default()
                    };
                    self.runtime
                        .vault()?
                        .set(&s.path, &value, &options, &actor)
                        .await?;
                    stored = true;
                }
                findings.push(DetectedOut {
                    kind: s.finding.kind.to_string(),
                    masked: s.finding.masked().to_string(),
                    line: s.line,
                    column: s.column,
                    suggested_path: s.path.to_string(),
                    stored,
                });
            }
            Ok(Json(DetectOut { findings }))
        })
        .await
    }
}
