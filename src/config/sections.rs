//! The validated configuration, one plain-data struct per section. Nothing here opens a file,
//! a socket or a token source: the daemon builds those from these values (`daemon::prepare`).
//! Every type compares with `==`, so a reload can tell what changed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::secret::SecretSource;

/// `[metrics]`: the HTTP endpoint for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve it; `None` (the default) serves nothing.
    pub addr: Option<SocketAddr>,
}

/// What the local tools (`queue`, `sendmail`, `health`, `send-test`) need to find a running
/// relay: read without the upstream credentials or the listener's key, which the user running
/// them may not be allowed to read.
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
    /// `upstream.username`, if set: the Gmail account (a real address for test messages).
    pub account: Option<String>,
    /// The names of the accounts: `default`, then those of `[accounts.NAME]`.
    pub accounts: Vec<String>,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Users who may AUTH to the listener: `name:hash` entries, with where each was written
    /// (`listen.users[0]`, `listen.users_file (path line 3)`) for error messages.
    pub users: Vec<UserEntry>,
    /// Offer AUTH to non-loopback clients on unencrypted connections.
    pub danger_allow_plaintext_auth: bool,
    /// The relay's own name: SMTP banner, `Received:` header.
    pub hostname: String,
    /// How long a client may stay silent between commands.
    pub idle_timeout: Duration,
    /// How long a client may take to send one message's DATA.
    pub data_timeout: Duration,
}

/// One `name:hash` line of `listen.users` or `listen.users_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// Where it was written, for errors.
    pub origin: String,
    /// The entry.
    pub line: String,
}

/// An `[upstream]` for unit tests: `relay@example.com` with an inline password, at
/// `smtp.test:587`.
#[doc(hidden)]
pub fn tests_upstream() -> UpstreamConfig {
    UpstreamConfig {
        name: DEFAULT_ACCOUNT.into(),
        section: "upstream".into(),
        host: "smtp.test".into(),
        tls_name: "smtp.test".into(),
        port: 587,
        tls: TlsMode::StartTls,
        username: "relay@example.com".into(),
        impersonate_sender: false,
        auth: AuthConfig::Password(SecretSource::Inline(crate::secret::Secret::new("pw"))),
        ca_file: None,
        helo_name: "relay.test".into(),
        max_connections: 2,
        max_recipients_per_message: 100,
        pipelining: true,
        transport: Transport::Smtp,
        api_url: "https://gmail.googleapis.com".into(),
        timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(240),
    }
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
            users: vec![],
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// How the relay hands mail to Google.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SMTP submission (`host`, `port`, `tls`).
    Smtp,
    /// The Gmail API over HTTPS (`api_url`, port 443), for hosts whose SMTP ports are blocked.
    Api,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Smtp => "smtp",
            Transport::Api => "api",
        })
    }
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

/// How the relay logs in to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// An app password (AUTH PLAIN, or LOGIN when PLAIN is not offered).
    Password(SecretSource),
    /// OAuth2 access tokens (AUTH XOAUTH2); never a password.
    XOAuth2(OAuth2Config),
    /// No AUTH at all: Google Workspace's SMTP relay service, which knows the relay by its IP
    /// address (TLS is still required and verified).
    None,
    /// A Google Workspace service account with domain-wide delegation, acting as a mailbox
    /// (AUTH XOAUTH2 with tokens from its signed assertions).
    ServiceAccount(ServiceAccountConfig),
}

/// `[upstream.service_account]` (or an account's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountConfig {
    /// The JSON key file from Google Cloud (a secret: read when the daemon prepares the
    /// credentials).
    pub key_file: PathBuf,
    /// The token endpoint, if not the key file's `token_uri`.
    pub token_url: Option<String>,
    /// The config section (`upstream.service_account`), for messages.
    pub section: String,
}

impl AuthConfig {
    /// The value of the `auth` key this stands for.
    pub fn name(&self) -> &'static str {
        match self {
            AuthConfig::Password(_) => "password",
            AuthConfig::XOAuth2(_) => "xoauth2",
            AuthConfig::None => "none",
            AuthConfig::ServiceAccount(_) => "service-account",
        }
    }
}

/// `[upstream.oauth2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret (desktop clients have one; it is not very secret, but redacted).
    pub client_secret: Option<SecretSource>,
    /// The refresh token; a file is read at each refresh and written when Google rotates it.
    pub refresh_token: SecretSource,
    /// Token endpoint.
    pub token_url: String,
    /// Authorization endpoint (for `oauth authorize`).
    pub auth_url: String,
    /// Refresh when the token expires within this.
    pub refresh_before: Duration,
    /// The config section these keys are in (`upstream.oauth2`), for messages.
    pub section: String,
}

/// `[upstream]` or `[accounts.NAME]`: the server mail is forwarded to (Gmail), and the account
/// it logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The account's name: `default` for `[upstream]`, `NAME` for `[accounts.NAME]`.
    pub name: String,
    /// The config section (`upstream`, `accounts.NAME`), for messages that name a key.
    pub section: String,
    /// Host name to connect to.
    pub host: String,
    /// The name the server certificate must carry (`upstream.tls_name`; default `host`).
    pub tls_name: String,
    /// TCP port.
    pub port: u16,
    /// STARTTLS or implicit TLS.
    pub tls: TlsMode,
    /// The account to log in as: the mailbox (with a service account, its `subject`); empty
    /// only with `auth = "none"` and no username, or when every sender logs in as itself.
    pub username: String,
    /// A service account logs in as each sender's own mailbox (`impersonate_sender`).
    pub impersonate_sender: bool,
    /// How to log in.
    pub auth: AuthConfig,
    /// Extra trust anchors (PEM), in addition to the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO (Gmail records it in the `Received:` header).
    pub helo_name: String,
    /// Most connections open to the upstream at once (and most messages in flight).
    pub max_connections: usize,
    /// Most recipients in one upstream transaction (Gmail: 100); more go in several.
    pub max_recipients_per_message: usize,
    /// Use the upstream's PIPELINING and CHUNKING when it offers them (one round trip per
    /// message); off only for a server that advertises them and misbehaves.
    pub pipelining: bool,
    /// SMTP or the Gmail API.
    pub transport: Transport,
    /// The Gmail API's base URL (with `transport = "api"`).
    pub api_url: String,
    /// Longest wait for any one reply from the upstream.
    pub timeout: Duration,
    /// An authenticated connection unused for this long is closed.
    pub idle_timeout: Duration,
}

impl UpstreamConfig {
    /// `section.name`, e.g. `upstream.password_file`: the key to name in a message.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.section)
    }

    /// Where mail goes, for people: `smtp.gmail.com:587 (starttls)`, or `the Gmail API at
    /// https://gmail.googleapis.com`.
    pub fn destination(&self) -> String {
        match self.transport {
            Transport::Smtp => format!("{}:{} ({})", self.host, self.port, self.tls),
            Transport::Api => format!("the Gmail API at {}", self.api_url),
        }
    }

    /// Who this account is, for people: its username, or (with `auth = "none"` and no
    /// username) its name and host.
    pub fn label(&self) -> String {
        if self.impersonate_sender {
            "each sender's own mailbox".to_owned()
        } else if self.username.is_empty() {
            format!("{} at {}", self.name, self.host)
        } else {
            self.username.clone()
        }
    }
}

/// The name of the account `[upstream]` configures.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The name under which a sender of an account that logs in as each sender
/// (`impersonate_sender`) has its own lane, upstream and budget: `ACCOUNT/mailbox`. Account
/// names cannot hold a `/`, so the two never mix.
pub fn sender_lane(account: &str, mailbox: &str) -> String {
    format!("{account}/{mailbox}")
}

/// A lane's account, and the sender's mailbox when it is a sender's own lane.
pub fn split_lane(name: &str) -> (&str, Option<&str>) {
    match name.split_once('/') {
        Some((account, mailbox)) => (account, Some(mailbox)),
        None => (name, None),
    }
}

/// `name` is `account`'s own lane or one of its senders'.
pub fn lane_of_account(name: &str, account: &str) -> bool {
    split_lane(name).0 == account
}

/// An envelope sender pattern of `senders`: which mail an account carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SenderPattern {
    /// One address, lower-case.
    Address(String),
    /// Every address of one domain (`@domain`, lower-case; not its subdomains).
    Domain(String),
    /// Every non-null sender no more specific pattern claims (`*`).
    Any,
}

impl std::fmt::Display for SenderPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SenderPattern::Address(a) => f.write_str(a),
            SenderPattern::Domain(d) => write!(f, "@{d}"),
            SenderPattern::Any => f.write_str("*"),
        }
    }
}

/// One Gmail account the relay sends through: `[upstream]` (named `default`) or
/// `[accounts.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// Where and as whom it logs in.
    pub upstream: UpstreamConfig,
    /// The envelope senders it carries (the default account also carries the rest).
    pub senders: Vec<SenderPattern>,
    /// Accounts that carry its mail while it is paused for quota or credentials, in order.
    pub failover: Vec<String>,
    /// Most recipients per rolling minute (its own, else `delivery.max_per_minute`).
    pub max_per_minute: Option<u32>,
    /// Most recipients per rolling 24 hours (its own, else `delivery.max_per_day`).
    pub max_per_day: Option<u32>,
    /// Sender rewrites to this account (its own `rewrite`, else `[rewrite]`).
    pub rewrite: RewriteConfig,
}

impl AccountConfig {
    /// The account's name.
    pub fn name(&self) -> &str {
        &self.upstream.name
    }
}

/// Where delivery status notifications go (`delivery.bounce`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceTo {
    /// The envelope sender of the failed message.
    Sender,
    /// This address (`delivery.postmaster`).
    Postmaster(String),
    /// Nobody; failures are only logged and kept in the failed area.
    Nobody,
}

/// `[delivery]`: delivery-side switches.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub bounce: BounceTo,
}

/// `[rewrite]` (and an account's `rewrite`): optional sender rewrites for Gmail (to the account
/// logged in as).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteConfig {
    /// MAIL FROM becomes the account.
    pub envelope_from: bool,
    /// The `From:` address becomes the account; the original moves to `Reply-To:`.
    pub header_from: bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Default filter (`info`, `debug`, or a tracing filter); `RUST_LOG` overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// `[cluster]`: replicas of the relay that share their accounts' send budgets and pauses
/// through Redis (each keeps its own spool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://` (TLS), without a password.
    pub redis_url: String,
    /// The Redis password (AUTH), if any.
    pub password: Option<SecretSource>,
    /// Prefix of every key, so several fleets can share one Redis.
    pub key_prefix: String,
    /// How many replicas share the accounts: a replica that cannot reach Redis sends at most
    /// its share (what was left of the budget, divided by this).
    pub replicas: u32,
    /// This replica's name, shown with a pause it found.
    pub replica: String,
    /// With `rediss://`: the CA (PEM) to trust for Redis's certificate instead of the public
    /// roots.
    pub ca_file: Option<PathBuf>,
}
