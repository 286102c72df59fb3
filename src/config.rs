//! Per-host runtime configuration: `supervisor.toml` (optional), environment variables and command-line
//! flags, resolved in that order of increasing precedence. Desired state is *not* configured here: it
//! lives in YAML under `state/`.
//!
//! ```toml
//! # supervisor.toml
//! state_dir = "/srv/supervisor/state"
//! database_url = "postgres://supervisor@localhost/supervisor"   # default: SQLite next to state_dir
//! secrets_key_file = "/etc/supervisor/secrets.key"                # default: $SECRETS_ENCRYPTION_KEY
//!
//! [timing]
//! abandoned_after_secs = 86400     # a running timer older than this is reported as abandoned
//!
//! [serve]
//! listen = "127.0.0.1:8080"
//! auto_apply = false
//! resync_interval_secs = 300
//! allowed_hosts = ["localhost", "127.0.0.1"]
//! rate_limit_per_second = 50
//! max_connections = 1024          # capped below the open-file limit; /health keeps a reserve
//! header_read_timeout_secs = 10   # also how long an idle keep-alive connection is kept
//! sessions_per_token = 128        # MCP sessions one token may hold; the least recently used goes
//! session_idle_secs = 120         # an MCP session unused this long is closed
//! auth_failures_burst = 10        # failed authentications per client address before 429
//!
//! [knowledge]
//! model_dir = "/opt/models/all-MiniLM-L6-v2"   # the offline model; SUPERVISOR_MODEL_DIR wins
//! # [knowledge.endpoint]                        # or an OpenAI-compatible endpoint instead
//! # url = "http://localhost:11434/v1"
//! # model = "nomic-embed-text"
//! # api_key = "secret:meta/openai/api_key"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::{Location, StoreError};

pub const STATE_DIR_ENV: &str = "SUPERVISOR_STATE_DIR";
pub const CONFIG_ENV: &str = "SUPERVISOR_CONFIG";
pub const DEFAULT_STATE_DIR: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Database(#[from] StoreError),
}

/// The contents of `supervisor.toml`. Unknown keys are errors (a typo must not silently do nothing).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub secrets_key_file: Option<PathBuf>,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub timing: TimingConfig,
    /// Knowledge search: the embedding model (local directory or OpenAI-compatible endpoint).
    #[serde(default)]
    pub knowledge: crate::knowledge::embed::EmbedderConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingConfig {
    /// A running task timer older than this is reported as abandoned (`timing list`, `/health`).
    pub abandoned_after_secs: u64,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            // 24 h, as timing::DEFAULT_ABANDONED_AFTER (config sits below the services it configures).
            abandoned_after_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub listen: String,
    pub auto_apply: bool,
    pub resync_interval_secs: u64,
    pub debounce_millis: u64,
    /// Host names accepted in the `Host` header (DNS-rebinding protection). Loopback names always are.
    pub allowed_hosts: Vec<String>,
    /// Requests per second per token (burst: twice that). 0 disables the limit.
    pub rate_limit_per_second: u32,
    /// Most simultaneous connections (lowered to fit the process's open-file limit). A few more are
    /// always accepted for `/health` and `/metrics` only.
    pub max_connections: u32,
    /// A request's headers must arrive within this time, and an idle keep-alive connection is closed
    /// after it.
    pub header_read_timeout_secs: u64,
    /// Open MCP sessions per token (per principal); a new one beyond this closes the least recently
    /// used.
    pub sessions_per_token: u32,
    /// An MCP session with no request for this long is closed (the client starts a new one).
    pub session_idle_secs: u64,
    /// Failed authentications a client address may have at once before it gets 429 (then one per
    /// second). Behind a reverse proxy every client shares the proxy's address.
    pub auth_failures_burst: u32,
    /// The URL agents use to reach this server (behind a proxy or tunnel), named in generated
    /// CLAUDE.md files; default `http://<listen>`.
    pub public_url: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            auto_apply: false,
            resync_interval_secs: 300,
            debounce_millis: 300,
            allowed_hosts: Vec::new(),
            rate_limit_per_second: 100,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            sessions_per_token: 128,
            session_idle_secs: 120,
            auth_failures_burst: 10,
            public_url: None,
        }
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// What the command line (and clap's environment fallbacks) said.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub config_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The resolved settings every command starts from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub database: Location,
    pub key_file: Option<PathBuf>,
    /// The configuration file that was read, if any.
    pub config_path: Option<PathBuf>,
    pub file: ConfigFile,
}

impl Settings {
    /// Flags (and their environment variables) win over `supervisor.toml`, which wins over defaults.
    /// Without `--config`/`SUPERVISOR_CONFIG`, `./supervisor.toml` is read when it exists.
    pub fn resolve(o: Overrides) -> Result<Settings, ConfigError> {
        let config_path = o.config_file.clone().or_else(|| {
            let local = PathBuf::from("supervisor.toml");
            local.is_file().then_some(local)
        });
        let file = match &config_path {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let state_dir = o
            .state_dir
            .or_else(|| file.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let url = o.database_url.or_else(|| file.database_url.clone());
        let database = Location::resolve(url.as_deref(), &state_dir)?;
        let key_file = o.key_file.or_else(|| file.secrets_key_file.clone());
        Ok(Settings {
            state_dir,
            database,
            key_file,
            config_path,
            file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("supervisor.toml");
        std::fs::write(&p, "state_dri = \"x\"\n").unwrap();
        let err = ConfigFile::load(&p).unwrap_err().to_string();
        assert!(err.contains("state_dri"), "{err}");
        assert!(err.contains("supervisor.toml"), "{err}");
    }

    #[test]
    fn flags_win_over_file_and_default_database_is_next_to_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("supervisor.toml");
        std::fs::write(
            &p,
            "state_dir = \"/srv/state\"\n[serve]\nauto_apply = true\n[timing]\nabandoned_after_secs = 600\n",
        )
        .unwrap();
        let s = Settings::resolve(Overrides {
            config_file: Some(p.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/srv/state"));
        assert_eq!(
            s.database,
            Location::Sqlite(PathBuf::from("/srv/.supervisor/supervisor.db"))
        );
        assert!(s.file.serve.auto_apply);
        assert_eq!(s.file.timing.abandoned_after_secs, 600);
        assert_eq!(ConfigFile::default().timing.abandoned_after_secs, 86_400);
        let s = Settings::resolve(Overrides {
            config_file: Some(p),
            state_dir: Some("/other/state".into()),
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/other/state"));
        assert_eq!(s.database.to_string(), "postgres://u:***@h/db");
    }
}
