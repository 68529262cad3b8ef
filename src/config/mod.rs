//! Configuration: `relay.toml` plus `GMAIL_RELAY__<SECTION>__<KEY>` environment overrides,
//! validated into typed sections of plain data.
//!
//! Loading has two steps. The `config` crate layers the file and the environment into the
//! serde structs of `raw` (unknown keys are errors); then `validate` applies the defaults (one
//! table, [`defaults`]) and checks every value, turning strings into addresses, networks,
//! durations and secret references. Every error names the file and the key (`upstream.tls`,
//! `listen.allowed_networks[1]`) and says what would be accepted.
//!
//! The result holds data only: no file is read for a secret, no TLS context or token source
//! is built here. The daemon does that from these values (`daemon::prepare`), the same way for
//! `check`, start and reload. This module imports nothing of the relay's but the leaf
//! [`crate::secret`].
//!
//! Relative paths (`queue.dir`, `upstream.password_file`, `upstream.ca_file`) are resolved
//! against the directory of the config file, so a config and its spool can move together.
//!
//! Each module receives only its own section ([`ListenConfig`] for intake, [`QueueConfig`] for
//! the spool and scheduler, [`UpstreamConfig`] for delivery, ...). There is no global config.

pub mod defaults;
mod raw;
mod sections;
mod unknown;
mod validate;
pub(crate) use validate::check_endpoint;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use sections::*;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[listen]`: the SMTP intake.
    pub listen: ListenConfig,
    /// `[queue]`: the spool and the retry schedule.
    pub queue: QueueConfig,
    /// The Gmail accounts: `[upstream]` (named `default`) first, then `[accounts.NAME]` by
    /// name. Never empty.
    pub accounts: Vec<AccountConfig>,
    /// `[delivery]`: switches for the delivery side.
    pub delivery: DeliveryConfig,
    /// `[log]`: log level and format.
    pub log: LogConfig,
    /// `[metrics]`: the health and metrics endpoint.
    pub metrics: MetricsConfig,
    /// `[cluster]`: budgets and pauses shared with other replicas through Redis.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// The default account (`[upstream]`).
    pub fn default_account(&self) -> &AccountConfig {
        &self.accounts[0]
    }

    /// The account named `name`.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name() == name)
    }
}

/// Why the configuration could not be loaded. Every variant names the file; invalid values
/// also name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's description, including the key where it knows it.
        message: String,
    },
    /// A value is present but not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, e.g. `upstream.tls`.
        key: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

impl ConfigError {
    /// The key the error is about, when it is about one value.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The environment variable prefix: `GMAIL_RELAY__UPSTREAM__PASSWORD` sets `upstream.password`.
pub const ENV_PREFIX: &str = "GMAIL_RELAY";

/// Loads `path` with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, None)
}

/// Loads `path` with overrides from `env` (variable name → value) instead of the process
/// environment when `env` is `Some`; tests use this to stay independent of each other.
pub fn load_with_env(
    path: &Path,
    env: Option<HashMap<String, String>>,
) -> Result<Config, ConfigError> {
    let (raw, base) = parse(path, env)?;
    validate::validate(raw, &base).map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    })
}

/// Loads the part of `path` the local tools need (see [`Local`]), with overrides from `env`
/// as in [`load_with_env`].
pub fn load_local(path: &Path, env: Option<HashMap<String, String>>) -> Result<Local, ConfigError> {
    let (raw, base) = parse(path, env)?;
    validate::local(raw, &base).map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    })
}

/// Reads `path` and layers the environment over it, into the raw structs.
fn parse(
    path: &Path,
    env: Option<HashMap<String, String>>,
) -> Result<(raw::Raw, PathBuf), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let env_names: Vec<String> = match &env {
        Some(vars) => vars.keys().cloned().collect(),
        None => std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect(),
    };
    let env = env.map(|vars| vars.into_iter().collect());
    let raw = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .source(env),
        )
        .build()
        .and_then(|c| c.try_deserialize::<raw::Raw>())
        .map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: unknown::explain(&e.to_string(), &env_names),
        })?;
    Ok((raw, base))
}

/// This machine's host name (for the banner, `Received:` and EHLO), `localhost` if unknown.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests;
