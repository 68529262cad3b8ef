//! The configuration as written: serde structs that mirror `relay.toml` key for key.
//!
//! Every table rejects unknown keys, so a typo (`max_mesage_size`) is an error naming the key
//! rather than a silently ignored setting. Every value is optional here; defaults and checks
//! are applied in one place, `super::validate`, so that an error can always name the key.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub upstream: RawUpstream,
    /// `[accounts.NAME]`: more Gmail accounts, by name (sorted, so errors come in a stable
    /// order).
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub rewrite: RawRewrite,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub sendmail: RawSendmail,
    pub cluster: Option<RawCluster>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub redis_url: Option<String>,
    pub redis_password: Option<String>,
    pub redis_password_file: Option<String>,
    pub key_prefix: Option<String>,
    pub replicas: Option<u64>,
    pub replica: Option<String>,
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for RawCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCluster")
            .field("redis_url", &self.redis_url)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrite {
    pub envelope_from: Option<String>,
    pub header_from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub addrs: Option<List>,
    pub no_starttls_addrs: Option<List>,
    pub implicit_tls_addrs: Option<List>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub allowed_networks: Option<List>,
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_client: Option<u64>,
    pub allowed_senders: Option<List>,
    pub allowed_recipients: Option<List>,
    pub danger_allow_any_network: Option<bool>,
    pub users: Option<Vec<String>>,
    pub users_file: Option<String>,
    pub danger_allow_plaintext_auth: Option<bool>,
    pub hostname: Option<String>,
    pub idle_timeout: Option<String>,
    pub data_timeout: Option<String>,
}

/// A list in the file (`["a", "b"]`), or a comma-separated string from the environment
/// (`GMAIL_RELAY__LISTEN__ADDRS=a,b`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum List {
    Many(Vec<String>),
    One(String),
}

impl List {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            List::Many(v) => v,
            List::One(s) => s
                .split(',')
                .map(|part| part.trim().to_owned())
                .filter(|part| !part.is_empty())
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub dir: Option<String>,
    pub retry_min: Option<String>,
    pub retry_max: Option<String>,
    pub max_age: Option<String>,
}

/// `[upstream]`, and each `[accounts.NAME]` (the same keys, plus `rewrite`).
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub senders: Option<List>,
    pub failover: Option<List>,
    pub max_per_minute: Option<u64>,
    pub max_per_day: Option<u64>,
    pub rewrite: Option<RawRewrite>,
    pub impersonate_sender: Option<bool>,
    pub service_account: Option<RawServiceAccount>,
    pub auth: Option<String>,
    pub oauth2: Option<RawOAuth2>,
    pub host: Option<String>,
    pub tls_name: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub helo_name: Option<String>,
    pub max_connections: Option<u64>,
    pub max_recipients_per_message: Option<u64>,
    pub pipelining: Option<bool>,
    pub transport: Option<String>,
    pub api_url: Option<String>,
    pub timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

// Hand-written so the password cannot reach a Debug print of the raw config.
impl std::fmt::Debug for RawUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawUpstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceAccount {
    pub key_file: Option<String>,
    pub subject: Option<String>,
    pub token_url: Option<String>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub refresh_token: Option<String>,
    pub refresh_token_file: Option<String>,
    pub token_url: Option<String>,
    pub auth_url: Option<String>,
    pub refresh_before: Option<String>,
}

// Hand-written so no secret can reach a Debug print of the raw config.
impl std::fmt::Debug for RawOAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOAuth2")
            .field("client_id", &self.client_id)
            .field("refresh_token_file", &self.refresh_token_file)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub hold: Option<bool>,
    pub auth_pause_min: Option<String>,
    pub auth_pause_max: Option<String>,
    pub quota_pause: Option<String>,
    pub bounce: Option<String>,
    pub postmaster: Option<String>,
    pub max_per_minute: Option<u64>,
    pub max_per_day: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSendmail {
    pub admin_address: Option<String>,
}

impl RawUpstream {
    /// This account's settings with what it leaves out taken from `base` (`[upstream]`),
    /// except its identity (username and credentials) and what is its own (senders, failover,
    /// budget, rewrite), which are never inherited.
    pub fn inheriting(self, base: &RawUpstream) -> RawUpstream {
        let base = base.clone();
        RawUpstream {
            host: self.host.or(base.host),
            tls_name: self.tls_name.or(base.tls_name),
            port: self.port.or(base.port),
            tls: self.tls.or(base.tls),
            ca_file: self.ca_file.or(base.ca_file),
            helo_name: self.helo_name.or(base.helo_name),
            max_connections: self.max_connections.or(base.max_connections),
            max_recipients_per_message: self
                .max_recipients_per_message
                .or(base.max_recipients_per_message),
            pipelining: self.pipelining.or(base.pipelining),
            transport: self.transport.or(base.transport),
            api_url: self.api_url.or(base.api_url),
            timeout: self.timeout.or(base.timeout),
            idle_timeout: self.idle_timeout.or(base.idle_timeout),
            ..self
        }
    }
}
