//! Secret paths: `meta/<name>…`, `project/<project>/<name>…`, `service/<project>/<service>/<name>…`.
//! Scope and owner are derived from the path, never given separately, so they cannot disagree.
//!
//! Segments are lower-case ASCII letters, digits, `_`, `-` and `.` (not `.`/`..`), so a path can never
//! escape its scope (`project/a/../b/x`), hide an encoded slash, or collide after normalisation.

use std::fmt;

use crate::store::SecretScope;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath {
    path: String,
    scope: SecretScope,
    project: Option<String>,
    service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret path `{path}`: {problem}")]
pub struct PathError {
    pub path: String,
    pub problem: String,
}

const HINT: &str =
    "expected meta/<name>, project/<project>/<name> or service/<project>/<service>/<name>";

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

impl SecretPath {
    pub fn parse(text: &str) -> Result<SecretPath, PathError> {
        // Keep the offending text short in messages, and out of them entirely when it looks like a
        // credential (a value pasted where a path belongs).
        let err = |problem: String| {
            if crate::secrets::detector::scan(text).is_empty() {
                PathError {
                    path: text.chars().take(60).collect(),
                    problem,
                }
            } else {
                PathError {
                    path: "<text that looks like a credential>".to_string(),
                    problem: format!("a value was given where a path belongs; {HINT}"),
                }
            }
        };
        if text.len() > 512 {
            return Err(err("longer than 512 characters".into()));
        }
        let segments: Vec<&str> = text.split('/').collect();
        if let Some(bad) = segments.iter().find(|s| !valid_segment(s)) {
            return Err(err(if bad.is_empty() {
                format!("empty segment; {HINT}")
            } else {
                format!(
                    "segment `{}` may only contain lower-case letters, digits, `_`, `-` and `.` (and not be `.` or `..`)",
                    bad.chars().take(40).collect::<String>()
                )
            }));
        }
        let (scope, project, service, min) = match segments[0] {
            "meta" => (SecretScope::Meta, None, None, 2),
            "project" => (SecretScope::Project, segments.get(1), None, 3),
            "service" => (SecretScope::Service, segments.get(1), segments.get(2), 4),
            other => {
                return Err(err(format!(
                    "unknown scope `{}`; {HINT}",
                    other.chars().take(20).collect::<String>()
                )));
            }
        };
        if segments.len() < min {
            return Err(err(format!("too few segments; {HINT}")));
        }
        Ok(SecretPath {
            path: text.to_string(),
            scope,
            project: project.map(|s| s.to_string()),
            service: service.map(|s| s.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }
    pub fn scope(&self) -> SecretScope {
        self.scope
    }
    /// The project that owns the secret (`None` for meta secrets).
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
    /// Whether an endpoint scoped to `project` may see this secret.
    pub fn visible_to(&self, project: &str) -> bool {
        self.project.as_deref() == Some(project)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_derived_from_the_path() {
        let p = SecretPath::parse("service/consilio/api/stripe_key").unwrap();
        assert_eq!(
            (p.scope(), p.project(), p.service()),
            (SecretScope::Service, Some("consilio"), Some("api"))
        );
        let p = SecretPath::parse("meta/cloudflare/api_token").unwrap();
        assert_eq!((p.scope(), p.project()), (SecretScope::Meta, None));
        assert!(!p.visible_to("consilio"));
        assert!(
            SecretPath::parse("project/consilio/x")
                .unwrap()
                .visible_to("consilio")
        );
    }

    #[test]
    fn a_credential_given_as_a_path_is_not_echoed() {
        let token = "ghp_1234567890abcdefghijABCDEFGHIJ123456";
        let err = SecretPath::parse(token).unwrap_err().to_string();
        assert!(!err.contains("ghp_1234"), "{err}");
        assert!(err.contains("looks like a credential"), "{err}");
    }

    #[test]
    fn escapes_and_oddities_are_refused() {
        for bad in [
            "project/a/../b/x",
            "project/a/%2e%2e/x",
            "project/a",
            "project//x",
            "Project/a/x",
            "meta",
            "meta/",
            "/meta/x",
            "secrets/a/x",
            "project/a/x y",
            "project/a/x\\y",
            "service/a/b",
        ] {
            assert!(SecretPath::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
