//! Configuration: `relay.toml` plus `GMAIL_RELAY__<SECTION>__<KEY>` environment overrides,
//! validated into typed sections.
//!
//! Loading has two steps. The `config` crate layers the file and the environment into the
//! serde structs of `raw` (unknown keys are errors); then `validate` applies the defaults and
//! checks every value, turning strings into addresses, networks, durations and secrets. Every
//! error names the file and the key (`upstream.tls`, `listen.allowed_networks[1]`) and says
//! what would be accepted.
//!
//! Relative paths (`queue.dir`, `upstream.password_file`, `upstream.ca_file`) are resolved
//! against the directory of the config file, so a config and its spool can move together.
//!
//! Each module receives only its own section ([`ListenConfig`] for intake, [`QueueConfig`] for
//! the spool and scheduler, [`UpstreamConfig`] for delivery, ...). There is no global config.

mod raw;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::auth::Credentials;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[listen]`: the SMTP intake.
    pub listen: ListenConfig,
    /// `[queue]`: the spool and the retry schedule.
    pub queue: QueueConfig,
    /// `[upstream]`: the server mail is forwarded to.
    pub upstream: UpstreamConfig,
    /// `[delivery]`: switches for the delivery side.
    pub delivery: DeliveryConfig,
    /// `[rewrite]`: optional sender rewrites for Gmail (the account is `upstream.username`).
    pub rewrite: crate::delivery::Rewrite,
    /// `[log]`: log level and format.
    pub log: LogConfig,
    /// `[metrics]`: the health and metrics endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the HTTP endpoint for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve it; `None` (the default) serves nothing.
    pub addr: Option<SocketAddr>,
}

/// What the local tools (`queue`, `sendmail`, `health`) need to find a running relay: read
/// without the upstream credentials or the listener's key, which the user running them may
/// not be allowed to read.
#[derive(Debug, Clone)]
pub struct Local {
    /// The plain (non-implicit-TLS) listeners, where a local submission goes.
    pub submit_addrs: Vec<SocketAddr>,
    /// The relay's host name.
    pub hostname: String,
    /// The spool directory.
    pub queue_dir: PathBuf,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// `sendmail.admin_address`: where `sendmail` sends mail for local users (`root`, a cron
    /// job's owner), which have no domain Gmail could deliver to.
    pub admin_address: Option<String>,
}

/// How one listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain SMTP; STARTTLS is offered when `starttls` (a certificate is configured).
    Plain {
        /// Offer STARTTLS.
        starttls: bool,
    },
    /// TLS from the first byte (SMTPS).
    ImplicitTls,
}

/// A listener to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The address.
    pub addr: SocketAddr,
    /// Plain (with or without STARTTLS) or implicit TLS.
    pub kind: ListenerKind,
}

/// `[listen]`: where and how the relay accepts mail.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Plain SMTP listeners (`ip:port`); they offer STARTTLS when a certificate is configured.
    pub addrs: Vec<SocketAddr>,
    /// Plain SMTP listeners that never offer STARTTLS (for devices whose TLS is broken).
    pub no_starttls_addrs: Vec<SocketAddr>,
    /// Listeners that speak TLS from the first byte.
    pub implicit_tls_addrs: Vec<SocketAddr>,
    /// Certificate chain (PEM) for STARTTLS and implicit TLS.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Client networks allowed to relay; everyone else gets `554 5.7.1`.
    pub allowed_networks: Vec<IpNet>,
    /// Largest message accepted, in bytes (advertised as EHLO SIZE).
    pub max_message_size: usize,
    /// Most recipients in one transaction.
    pub max_recipients: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Most concurrent connections from one client address.
    pub max_connections_per_client: usize,
    /// Envelope senders allowed to relay (addresses, `@domain`s, `<>`); empty: any.
    pub allowed_senders: Vec<String>,
    /// Envelope recipients allowed (addresses, `@domain`s); empty: any.
    pub allowed_recipients: Vec<String>,
    /// The operator accepts `allowed_networks` covering every address on a non-loopback
    /// listener (e.g. a firewall restricts access instead).
    pub danger_allow_any_network: bool,
    /// Users who may AUTH to the listener (from `listen.users` and `listen.users_file`).
    pub users: crate::auth::Users,
    /// Offer AUTH to non-loopback clients on unencrypted connections.
    pub danger_allow_plaintext_auth: bool,
    /// The relay's own name: SMTP banner, `Received:` header.
    pub hostname: String,
    /// How long a client may stay silent between commands.
    pub idle_timeout: Duration,
    /// How long a client may take to send one message's DATA.
    pub data_timeout: Duration,
}

impl ListenConfig {
    /// Every listener to open, in the order of `addrs`, `no_starttls_addrs`,
    /// `implicit_tls_addrs`.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        let starttls = self.tls_cert.is_some();
        let plain = self.addrs.iter().map(|&addr| ListenerSpec {
            addr,
            kind: ListenerKind::Plain { starttls },
        });
        let no_tls = self.no_starttls_addrs.iter().map(|&addr| ListenerSpec {
            addr,
            kind: ListenerKind::Plain { starttls: false },
        });
        let implicit = self.implicit_tls_addrs.iter().map(|&addr| ListenerSpec {
            addr,
            kind: ListenerKind::ImplicitTls,
        });
        plain.chain(no_tls).chain(implicit).collect()
    }

    /// A small configuration for tests and the fuzz target: relay.test, 1000-byte messages,
    /// 3 recipients.
    #[doc(hidden)]
    pub fn for_tests() -> ListenConfig {
        ListenConfig {
            addrs: vec![],
            no_starttls_addrs: vec![],
            implicit_tls_addrs: vec![],
            tls_cert: None,
            tls_key: None,
            allowed_networks: vec![],
            max_message_size: 1000,
            max_recipients: 3,
            max_connections: 10,
            max_connections_per_client: 10,
            allowed_senders: vec![],
            allowed_recipients: vec![],
            danger_allow_any_network: false,
            users: crate::auth::Users::default(),
            danger_allow_plaintext_auth: false,
            hostname: "relay.test".into(),
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }

    /// Who can reach the relay, in words, for the start-up log line.
    pub fn exposure(&self) -> String {
        let public: Vec<String> = self
            .listeners()
            .iter()
            .filter(|l| !l.addr.ip().is_loopback())
            .map(|l| l.addr.to_string())
            .collect();
        if public.is_empty() {
            "loopback only".to_owned()
        } else {
            format!(
                "network listeners {} accept clients from {}",
                public.join(", "),
                self.allowed_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// `[queue]`: the spool directory and the retry schedule.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Spool directory (queue, failed area, lock).
    pub dir: PathBuf,
    /// Delay before the first retry; retries back off exponentially from here.
    pub retry_min: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// A message still undelivered after this long is given up on.
    pub max_age: Duration,
}

/// How the connection to the upstream is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connect, then mandatory STARTTLS before anything else (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "implicit",
        })
    }
}

/// `[upstream]`: the server mail is forwarded to (Gmail).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Host name, also the name the certificate must match.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// STARTTLS or implicit TLS.
    pub tls: TlsMode,
    /// Account and secret to log in with.
    pub credentials: Credentials,
    /// Extra trust anchors (PEM), in addition to the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO (Gmail records it in the `Received:` header).
    pub helo_name: String,
    /// Most connections open to the upstream at once (and most messages in flight).
    pub max_connections: usize,
    /// Most recipients in one upstream transaction (Gmail: 100); more go in several.
    pub max_recipients_per_message: usize,
    /// Longest wait for any one reply from the upstream.
    pub timeout: Duration,
    /// An authenticated connection unused for this long is closed.
    pub idle_timeout: Duration,
}

/// `[delivery]`: delivery-side switches.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Accept and queue, but attempt no delivery (maintenance, benchmarks of the intake).
    pub hold: bool,
    /// First wait after the upstream refuses our login; doubles up to `auth_pause_max`.
    pub auth_pause_min: Duration,
    /// Longest wait between login probes.
    pub auth_pause_max: Duration,
    /// Wait between probes while the sending quota is spent.
    pub quota_pause: Duration,
    /// Who is told when mail fails (`delivery.bounce`, `delivery.postmaster`).
    pub bounce: crate::bounce::BounceTo,
    /// Most recipients delivered per rolling minute.
    pub max_per_minute: Option<u32>,
    /// Most recipients delivered per rolling 24 hours.
    pub max_per_day: Option<u32>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Default filter (`info`, `debug`, or a tracing filter); `RUST_LOG` overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
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
            message: e.to_string(),
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
