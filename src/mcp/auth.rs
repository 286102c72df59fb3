//! Bearer tokens for the MCP endpoints. A token is shown once at creation; only its SHA-256 is stored.
//! A meta token works on every endpoint; a project token only on `/mcp/<its project>`.

use chrono::Utc;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::{Store, StoreError, TokenRow};

/// Tokens look like `svt_<43 base64url characters>` (256 random bits), so the credential detector and
/// secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "svt_";

/// Who a request comes from, once its token is verified (or `Local` without auth on loopback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    Meta {
        token_id: String,
    },
    Project {
        token_id: String,
        project: String,
    },
    /// `serve --no-auth` on loopback, or `supervisor mcp` over stdio (the local user).
    Local {
        who: String,
    },
}

impl Principal {
    /// The actor recorded in the secret access log and the journal.
    pub fn actor(&self) -> String {
        match self {
            Principal::Meta { token_id } | Principal::Project { token_id, .. } => {
                format!("mcp:{token_id}")
            }
            Principal::Local { who } => who.clone(),
        }
    }

    /// Whether this principal may use the endpoint of `project` (`None` = the meta endpoint).
    pub fn may_use(&self, endpoint_project: Option<&str>) -> bool {
        match (self, endpoint_project) {
            (Principal::Meta { .. } | Principal::Local { .. }, _) => true,
            (Principal::Project { project, .. }, Some(p)) => project == p,
            (Principal::Project { .. }, None) => false,
        }
    }

    pub fn token_id(&self) -> Option<&str> {
        match self {
            Principal::Meta { token_id } | Principal::Project { token_id, .. } => Some(token_id),
            Principal::Local { .. } => None,
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token (shown once) and its stored row.
pub struct NewToken {
    pub token: Zeroizing<String>,
    pub row: TokenRow,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.row.id)
            .finish_non_exhaustive()
    }
}

pub async fn create_token(
    store: &dyn Store,
    project: Option<&str>,
    description: Option<&str>,
) -> Result<NewToken, StoreError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut_slice());
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", base64url(bytes.as_slice())));
    let mut id_bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut id_bytes);
    let row = TokenRow {
        id: format!("tok_{}", hex::encode(id_bytes)),
        project: project.map(str::to_string),
        description: description.map(str::to_string),
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    store.insert_token(&row, &hash_token(&token)).await?;
    Ok(NewToken { token, row })
}

/// Looks a presented token up; `None` when unknown or revoked.
pub async fn verify(store: &dyn Store, presented: &str) -> Result<Option<Principal>, StoreError> {
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 128 {
        return Ok(None);
    }
    verify_hash(store, &hash_token(presented)).await
}

/// Looks a token up by its hash ([`hash_token`]) — for a login session, which keeps the hash and never
/// the token; `None` when unknown or revoked.
pub async fn verify_hash(store: &dyn Store, hash: &str) -> Result<Option<Principal>, StoreError> {
    Ok(store
        .token_by_hash(hash)
        .await?
        .map(|row| match row.project {
            Some(project) => Principal::Project {
                token_id: row.id,
                project,
            },
            None => Principal::Meta { token_id: row.id },
        }))
}

/// `bytes` in base64url without padding (tokens, the status page's session ids).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let meta = Principal::Meta {
            token_id: "t".into(),
        };
        let shop = Principal::Project {
            token_id: "u".into(),
            project: "shop".into(),
        };
        assert!(meta.may_use(None) && meta.may_use(Some("shop")));
        assert!(shop.may_use(Some("shop")));
        assert!(!shop.may_use(Some("blog")) && !shop.may_use(None));
        assert_eq!(shop.actor(), "mcp:u");
    }

    #[test]
    fn base64url_encodes_without_padding() {
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64url(&[0u8; 32]).len(), 43);
    }
}
