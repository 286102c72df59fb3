//! Public hostnames, normalised once: lower case, no surrounding blanks, no trailing dot — how Cloudflare
//! and cloudflared compare names. Desired state holds [`Hostname`]s; names observed at Cloudflare go
//! through [`Hostname::normalize`] before they are compared with them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A hostname in normal form. Its syntax is checked by state validation (`check_hostname`), which
/// names the file and line; this type only guarantees the normal form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    pub fn new(name: &str) -> Hostname {
        Hostname(Self::normalize(name))
    }

    /// The normal form of any name (desired or observed).
    pub fn normalize(name: &str) -> String {
        name.trim().trim_end_matches('.').to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Hostname {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Hostname {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Hostname {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Hostname {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Hostname::new(&s))
    }
}

impl schemars::JsonSchema for Hostname {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Hostname".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A public hostname inside the Cloudflare zone, e.g. api.example.com (no scheme, port or path).",
            "format": "hostname"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_normal_form() {
        assert_eq!(
            Hostname::new(" API.Example.com. ").as_str(),
            "api.example.com"
        );
        let parsed: Hostname = serde_json::from_str("\"Web.EXAMPLE.com.\"").unwrap();
        assert_eq!(parsed, "web.example.com");
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            "\"web.example.com\""
        );
    }
}
