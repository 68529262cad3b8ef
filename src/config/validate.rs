//! Defaults and checks: raw values in, typed sections out, or `(key, message)` naming the first
//! problem. The defaults below are the documented ones (`relay.toml` repeats them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{
    List, Raw, RawDelivery, RawListen, RawLog, RawMetrics, RawOAuth2, RawQueue, RawUpstream,
};
use super::{
    Config, DeliveryConfig, ListenConfig, LogConfig, LogFormat, MetricsConfig, QueueConfig,
    TlsMode, UpstreamConfig, system_hostname,
};
use crate::auth::{
    Credentials, GOOGLE_AUTH_URL, GOOGLE_TOKEN_URL, OAuth2Settings, RefreshToken, Secret, Users,
};
use crate::bounce::BounceTo;
use crate::delivery::Rewrite;

/// `(key, message)`: what [`super::ConfigError::Invalid`] is built from.
pub(super) type Invalid = (String, String);
type Result<T> = std::result::Result<T, Invalid>;

fn invalid<T>(key: &str, message: impl Into<String>) -> Result<T> {
    Err((key.to_owned(), message.into()))
}

/// Gmail's advertised SIZE; larger messages would be refused upstream anyway.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 35_882_577;

pub(super) fn validate(raw: Raw, base: &Path) -> Result<Config> {
    let upstream = upstream(raw.upstream, base)?;
    let rewrite = Rewrite {
        envelope_from: keep_or_account("rewrite.envelope_from", raw.rewrite.envelope_from)?,
        header_from: keep_or_account("rewrite.header_from", raw.rewrite.header_from)?,
        account: upstream.credentials.username().to_owned(),
    };
    Ok(Config {
        listen: listen(raw.listen, base)?,
        queue: queue(raw.queue, base)?,
        upstream,
        rewrite,
        delivery: delivery(raw.delivery)?,
        log: log(raw.log)?,
        metrics: metrics(raw.metrics)?,
    })
    .and_then(|config| {
        admin_address(raw.sendmail.admin_address)?;
        Ok(config)
    })
}

/// The part of the config the local tools need; see [`super::Local`].
pub(super) fn local(raw: Raw, base: &Path) -> Result<super::Local> {
    let addrs = socket_addrs("listen.addrs", raw.listen.addrs, &["127.0.0.1:2525"])?;
    let no_starttls_addrs = socket_addrs(
        "listen.no_starttls_addrs",
        raw.listen.no_starttls_addrs,
        &[],
    )?;
    Ok(super::Local {
        submit_addrs: addrs.into_iter().chain(no_starttls_addrs).collect(),
        hostname: hostname(raw.listen.hostname)?,
        queue_dir: queue(raw.queue, base)?.dir,
        metrics: metrics(raw.metrics)?,
        admin_address: admin_address(raw.sendmail.admin_address)?,
    })
}

fn admin_address(raw: Option<String>) -> Result<Option<String>> {
    match raw.map(|a| a.trim().to_owned()) {
        None => Ok(None),
        Some(a) if a.contains('@') && !a.contains(['<', '>', ' ', ',']) => Ok(Some(a)),
        Some(a) => invalid(
            "sendmail.admin_address",
            format!("{a:?} is not one email address (user@domain)"),
        ),
    }
}

fn metrics(raw: RawMetrics) -> Result<MetricsConfig> {
    let addr = match raw.addr.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<SocketAddr>().or_else(|e| {
            invalid(
                "metrics.addr",
                format!("{text:?} is not ip:port ({e}), e.g. \"127.0.0.1:9925\""),
            )
        })?),
    };
    Ok(MetricsConfig { addr })
}

fn hostname(raw: Option<String>) -> Result<String> {
    let hostname = raw.unwrap_or_else(system_hostname);
    if !is_hostname(&hostname) {
        return invalid(
            "listen.hostname",
            format!("{hostname:?} is not a host name (letters, digits, '-' and '.')"),
        );
    }
    Ok(hostname)
}

fn listen(raw: RawListen, base: &Path) -> Result<ListenConfig> {
    let addrs = socket_addrs("listen.addrs", raw.addrs, &["127.0.0.1:2525"])?;
    let no_starttls_addrs = socket_addrs("listen.no_starttls_addrs", raw.no_starttls_addrs, &[])?;
    let implicit_tls_addrs =
        socket_addrs("listen.implicit_tls_addrs", raw.implicit_tls_addrs, &[])?;
    if addrs.is_empty() && no_starttls_addrs.is_empty() && implicit_tls_addrs.is_empty() {
        return invalid("listen.addrs", "is empty; give at least one ip:port");
    }
    let (tls_cert, tls_key) = match (raw.tls_cert, raw.tls_key) {
        (None, None) => (None, None),
        (Some(cert), Some(key)) => (
            Some(pem_file(
                "listen.tls_cert",
                &resolve(base, &cert),
                "CERTIFICATE",
            )?),
            Some(pem_file(
                "listen.tls_key",
                &resolve(base, &key),
                "PRIVATE KEY",
            )?),
        ),
        (Some(_), None) => {
            return invalid(
                "listen.tls_key",
                "is missing; listen.tls_cert needs its key",
            );
        }
        (None, Some(_)) => {
            return invalid(
                "listen.tls_cert",
                "is missing; listen.tls_key needs its certificate",
            );
        }
    };
    if !implicit_tls_addrs.is_empty() && tls_cert.is_none() {
        return invalid(
            "listen.implicit_tls_addrs",
            "needs a certificate: set listen.tls_cert and listen.tls_key",
        );
    }
    let all_addrs: Vec<SocketAddr> = addrs
        .iter()
        .chain(&no_starttls_addrs)
        .chain(&implicit_tls_addrs)
        .copied()
        .collect();
    let nets = raw
        .allowed_networks
        .map(List::into_vec)
        .unwrap_or_else(|| vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]);
    let allowed_networks = nets
        .iter()
        .enumerate()
        .map(|(i, n)| network(&format!("listen.allowed_networks[{i}]"), n))
        .collect::<Result<Vec<_>>>()?;

    let danger_allow_any_network = raw.danger_allow_any_network.unwrap_or(false);
    if let Some(public) = all_addrs.iter().find(|a| !a.ip().is_loopback())
        && let Some(any) = allowed_networks.iter().find(|n| n.prefix_len() == 0)
        && !danger_allow_any_network
    {
        return invalid(
            "listen.allowed_networks",
            format!(
                "contains {any}, which lets every address on the network use the relay \
                 (listening on {public}); list the networks of your clients, or set \
                 listen.danger_allow_any_network = true if a firewall restricts access"
            ),
        );
    }
    let allowed_senders = address_list("listen.allowed_senders", raw.allowed_senders, true)?;
    let allowed_recipients =
        address_list("listen.allowed_recipients", raw.allowed_recipients, false)?;
    let users = users(raw.users, raw.users_file, base)?;
    let max_message_size = positive(
        "listen.max_message_size",
        raw.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
    )?;
    let hostname = hostname(raw.hostname)?;
    Ok(ListenConfig {
        addrs,
        no_starttls_addrs,
        implicit_tls_addrs,
        tls_cert,
        tls_key,
        allowed_networks,
        max_message_size,
        max_recipients: positive("listen.max_recipients", raw.max_recipients.unwrap_or(1000))?,
        max_connections: positive("listen.max_connections", raw.max_connections.unwrap_or(512))?,
        max_connections_per_client: positive(
            "listen.max_connections_per_client",
            raw.max_connections_per_client.unwrap_or(128),
        )?,
        allowed_senders,
        allowed_recipients,
        danger_allow_any_network,
        users,
        danger_allow_plaintext_auth: raw.danger_allow_plaintext_auth.unwrap_or(false),
        hostname,
        idle_timeout: duration("listen.idle_timeout", raw.idle_timeout, "5m")?,
        data_timeout: duration("listen.data_timeout", raw.data_timeout, "10m")?,
    })
}

/// A list of `ip:port` (no host names: nothing at start-up depends on DNS).
fn socket_addrs(key: &str, raw: Option<List>, default: &[&str]) -> Result<Vec<SocketAddr>> {
    let items = raw
        .map(List::into_vec)
        .unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect());
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.trim().parse::<SocketAddr>().or_else(|_| {
                invalid(
                    &format!("{key}[{i}]"),
                    format!(
                        "{a:?} is not an ip:port (e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"; \
                         host names are not resolved)"
                    ),
                )
            })
        })
        .collect()
}

/// A readable file holding at least one PEM block of `what` (`CERTIFICATE`, `PRIVATE KEY`).
fn pem_file(key: &str, path: &Path, what: &str) -> Result<PathBuf> {
    let pem = std::fs::read(path)
        .or_else(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let marker = format!("-----BEGIN {what}-----");
    let any_key = what == "PRIVATE KEY";
    let found = pem.windows(11).any(|w| w == b"-----BEGIN ")
        && String::from_utf8_lossy(&pem).lines().any(|l| {
            l == marker
                || (any_key && l.starts_with("-----BEGIN ") && l.ends_with(" PRIVATE KEY-----"))
        });
    if !found {
        return invalid(
            key,
            format!("{} holds no PEM {}", path.display(), what.to_lowercase()),
        );
    }
    Ok(path.to_path_buf())
}

/// A CIDR (`10.0.0.0/8`) or a single address (`192.168.1.20`, taken as /32 or /128).
fn network(key: &str, text: &str) -> Result<IpNet> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return invalid(
                    key,
                    format!("{text:?} is not a network (e.g. \"192.168.1.0/24\" or \"::1/128\")"),
                );
            }
        },
    };
    if net.trunc() != net {
        return invalid(
            key,
            format!(
                "{text:?} has host bits set; did you mean \"{}\"?",
                net.trunc()
            ),
        );
    }
    Ok(net)
}

/// An allowlist of addresses (`user@example.com`), domains (`@example.com` or `example.com`)
/// and, for senders, the null sender `<>`. Stored lower-case; domains as `@domain`.
fn address_list(key: &str, raw: Option<List>, null_ok: bool) -> Result<Vec<String>> {
    let items = raw.map(List::into_vec).unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim().to_lowercase();
            let bad = |why: &str| invalid(&format!("{key}[{i}]"), format!("{item:?} {why}"));
            if item == "<>" {
                return if null_ok {
                    Ok(item)
                } else {
                    bad("is the null sender; it can only be a sender")
                };
            }
            let (local, domain) = match item.rsplit_once('@') {
                Some((local, domain)) => (local, domain),
                None => ("", item.as_str()),
            };
            if domain.is_empty()
                || domain.contains(char::is_whitespace)
                || local.contains(char::is_whitespace)
            {
                return bad("is not an address (user@example.com) or a domain (@example.com)");
            }
            Ok(if local.is_empty() {
                format!("@{domain}")
            } else {
                item.clone()
            })
        })
        .collect()
}

/// `listen.users` (a list of `name:hash`) and `listen.users_file` (one `name:hash` per line,
/// `#` comments), together.
fn users(list: Option<Vec<String>>, file: Option<String>, base: &Path) -> Result<Users> {
    let list = list.unwrap_or_default();
    let mut entries: Vec<(String, String)> = list
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("listen.users[{i}]"), e.clone()))
        .collect();
    if let Some(file) = file {
        let path = resolve(base, &file);
        let text = std::fs::read_to_string(&path).or_else(|e| {
            invalid(
                "listen.users_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                let at = format!("listen.users_file ({} line {})", path.display(), n + 1);
                entries.push((at, line.to_owned()));
            }
        }
    }
    Users::parse(entries.iter().map(|(_, e)| e.as_str()))
        .or_else(|(i, why)| invalid(&entries[i].0, why))
}

fn queue(raw: RawQueue, base: &Path) -> Result<QueueConfig> {
    let dir = raw
        .dir
        .unwrap_or_else(|| "/var/spool/gmail-relay".to_owned());
    if dir.trim().is_empty() {
        return invalid("queue.dir", "is empty; give the spool directory");
    }
    let retry_min = duration("queue.retry_min", raw.retry_min, "1m")?;
    let retry_max = duration("queue.retry_max", raw.retry_max, "1h")?;
    if retry_max < retry_min {
        return invalid(
            "queue.retry_max",
            format!(
                "({}) is shorter than queue.retry_min ({})",
                humantime::format_duration(retry_max),
                humantime::format_duration(retry_min)
            ),
        );
    }
    Ok(QueueConfig {
        dir: resolve(base, &dir),
        retry_min,
        retry_max,
        max_age: duration("queue.max_age", raw.max_age, "5d")?,
    })
}

fn upstream(raw: RawUpstream, base: &Path) -> Result<UpstreamConfig> {
    let host = raw.host.unwrap_or_else(|| "smtp.gmail.com".to_owned());
    if host.trim().is_empty() || host.contains(char::is_whitespace) {
        return invalid("upstream.host", format!("{host:?} is not a host name"));
    }
    let tls = match raw.tls.as_deref().map(str::trim) {
        None | Some("starttls") => TlsMode::StartTls,
        Some("implicit") => TlsMode::Implicit,
        Some(other) => {
            return invalid(
                "upstream.tls",
                format!(
                    "{other:?} is not one of \"starttls\" (port 587) or \"implicit\" (port 465); \
                     plain-text upstreams are not supported"
                ),
            );
        }
    };
    let port = match raw.port {
        Some(0) => return invalid("upstream.port", "0 is not a port"),
        Some(p) => p,
        None if tls == TlsMode::Implicit => 465,
        None => 587,
    };
    let username = match raw.username.map(|u| u.trim().to_owned()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return invalid(
                "upstream.username",
                "is missing; set it to the Gmail address the relay logs in as",
            );
        }
    };
    let username_for = username.clone();
    let credentials = match raw.auth.as_deref().map(str::trim) {
        None | Some("password") => {
            if raw.oauth2.is_some() {
                return invalid(
                    "upstream.auth",
                    "is \"password\" but [upstream.oauth2] is set; set upstream.auth = \"xoauth2\" to use it",
                );
            }
            Credentials::password(
                username_for,
                password(raw.password, raw.password_file, base)?,
            )
        }
        Some("xoauth2") => {
            for (key, set) in [
                ("upstream.password", raw.password.is_some()),
                ("upstream.password_file", raw.password_file.is_some()),
            ] {
                if set {
                    return invalid(
                        key,
                        "is set, but upstream.auth = \"xoauth2\" never uses a password; remove it",
                    );
                }
            }
            let Some(oauth2) = raw.oauth2 else {
                return invalid(
                    "upstream.oauth2",
                    "is missing; upstream.auth = \"xoauth2\" needs client_id and a refresh token",
                );
            };
            Credentials::oauth2(username_for, oauth2_settings(oauth2, base)?)
        }
        Some(other) => {
            return invalid(
                "upstream.auth",
                format!("{other:?} is not one of \"password\" or \"xoauth2\""),
            );
        }
    };
    let ca_file = raw
        .ca_file
        .map(|f| pem_file("upstream.ca_file", &resolve(base, &f), "CERTIFICATE"))
        .transpose()?;
    let helo_name = raw.helo_name.unwrap_or_else(system_hostname);
    if !is_hostname(&helo_name) {
        return invalid(
            "upstream.helo_name",
            format!("{helo_name:?} is not a host name (letters, digits, '-' and '.')"),
        );
    }
    Ok(UpstreamConfig {
        host,
        port,
        tls,
        credentials,
        ca_file,
        helo_name,
        max_connections: positive("upstream.max_connections", raw.max_connections.unwrap_or(2))?,
        max_recipients_per_message: positive(
            "upstream.max_recipients_per_message",
            raw.max_recipients_per_message.unwrap_or(100),
        )?,
        timeout: duration("upstream.timeout", raw.timeout, "60s")?,
        idle_timeout: duration("upstream.idle_timeout", raw.idle_timeout, "4m")?,
    })
}

/// The app password, from exactly one of `upstream.password` and `upstream.password_file`.
fn password(inline: Option<String>, file: Option<String>, base: &Path) -> Result<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => invalid(
            "upstream.password",
            "is set together with upstream.password_file; set only one",
        ),
        (Some(p), None) if !p.trim().is_empty() => Ok(Secret::new(p.trim_end())),
        (Some(_), None) => invalid("upstream.password", "is empty"),
        (None, Some(file)) => Secret::from_file(&resolve(base, &file))
            .or_else(|e| invalid("upstream.password_file", e.to_string())),
        (None, None) => invalid(
            "upstream.password",
            "is missing; set upstream.password_file (a file holding the Gmail app password), \
             upstream.password, or the environment variable GMAIL_RELAY__UPSTREAM__PASSWORD",
        ),
    }
}

/// `[upstream.oauth2]`. The refresh token file need not exist yet (`oauth authorize` makes it).
fn oauth2_settings(raw: RawOAuth2, base: &Path) -> Result<OAuth2Settings> {
    let client_id = match raw.client_id.map(|c| c.trim().to_owned()) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return invalid(
                "upstream.oauth2.client_id",
                "is missing; it is the OAuth client id from Google Cloud (…apps.googleusercontent.com)",
            );
        }
    };
    let client_secret = match (raw.client_secret, raw.client_secret_file) {
        (Some(_), Some(_)) => {
            return invalid(
                "upstream.oauth2.client_secret",
                "is set together with client_secret_file; set only one",
            );
        }
        (Some(s), None) => Some(Secret::new(s.trim())),
        (None, Some(f)) => Some(
            Secret::from_file(&resolve(base, &f))
                .or_else(|e| invalid("upstream.oauth2.client_secret_file", e.to_string()))?,
        ),
        (None, None) => None,
    };
    let refresh_token = match (raw.refresh_token, raw.refresh_token_file) {
        (Some(_), Some(_)) => {
            return invalid(
                "upstream.oauth2.refresh_token",
                "is set together with refresh_token_file; set only one",
            );
        }
        (Some(t), None) => RefreshToken::Inline(Secret::new(t.trim())),
        (None, Some(f)) => RefreshToken::File(resolve(base, &f)),
        (None, None) => {
            return invalid(
                "upstream.oauth2.refresh_token_file",
                "is missing; set it (then run `gmail-relay oauth authorize` to fill it), or set \
                 upstream.oauth2.refresh_token",
            );
        }
    };
    let endpoint = |key: &str, value: Option<String>, default: &str| -> Result<String> {
        let url = value.unwrap_or_else(|| default.to_owned());
        let parsed = url::Url::parse(&url)
            .or_else(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
        let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && local) {
            return invalid(
                key,
                format!("{url:?} must be https:// (http:// only on loopback)"),
            );
        }
        Ok(url)
    };
    Ok(OAuth2Settings {
        client_id,
        client_secret,
        refresh_token,
        token_url: endpoint("upstream.oauth2.token_url", raw.token_url, GOOGLE_TOKEN_URL)?,
        auth_url: endpoint("upstream.oauth2.auth_url", raw.auth_url, GOOGLE_AUTH_URL)?,
        refresh_before: duration("upstream.oauth2.refresh_before", raw.refresh_before, "5m")?,
    })
}

fn delivery(raw: RawDelivery) -> Result<DeliveryConfig> {
    let auth_pause_min = duration("delivery.auth_pause_min", raw.auth_pause_min, "1m")?;
    let auth_pause_max = duration("delivery.auth_pause_max", raw.auth_pause_max, "30m")?;
    if auth_pause_max < auth_pause_min {
        return invalid(
            "delivery.auth_pause_max",
            "is shorter than delivery.auth_pause_min",
        );
    }
    let bounce = match (raw.bounce.as_deref().map(str::trim), raw.postmaster) {
        (None | Some("sender"), _) => BounceTo::Sender,
        (Some("none"), _) => BounceTo::Nobody,
        (Some("postmaster"), Some(addr))
            if addr.contains('@') && !addr.contains(char::is_whitespace) =>
        {
            BounceTo::Postmaster(addr.trim().to_owned())
        }
        (Some("postmaster"), Some(addr)) => {
            return invalid("delivery.postmaster", format!("{addr:?} is not an address"));
        }
        (Some("postmaster"), None) => {
            return invalid(
                "delivery.postmaster",
                "is missing; delivery.bounce = \"postmaster\" needs the address to send to",
            );
        }
        (Some(other), _) => {
            return invalid(
                "delivery.bounce",
                format!("{other:?} is not one of \"sender\", \"postmaster\" or \"none\""),
            );
        }
    };
    Ok(DeliveryConfig {
        hold: raw.hold.unwrap_or(false),
        auth_pause_min,
        auth_pause_max,
        quota_pause: duration("delivery.quota_pause", raw.quota_pause, "1h")?,
        bounce,
        max_per_minute: rate("delivery.max_per_minute", raw.max_per_minute)?,
        max_per_day: rate("delivery.max_per_day", raw.max_per_day)?,
    })
}

fn log(raw: RawLog) -> Result<LogConfig> {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return invalid(
                "log.format",
                format!("{other:?} is not one of \"text\" or \"json\""),
            );
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return invalid(
            "log.level",
            format!("{level:?} is not a level (error, warn, info, debug, trace) or a filter"),
        );
    }
    Ok(LogConfig { level, format })
}

/// `"keep"` (default) or `"account"`.
fn keep_or_account(key: &str, value: Option<String>) -> Result<bool> {
    match value.as_deref().map(str::trim) {
        None | Some("keep") => Ok(false),
        Some("account") => Ok(true),
        Some(other) => invalid(
            key,
            format!("{other:?} is not one of \"keep\" or \"account\""),
        ),
    }
}

/// An optional positive limit that fits in 32 bits.
fn rate(key: &str, value: Option<u64>) -> Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(0) => invalid(key, "must be greater than 0 (leave it out for no limit)"),
        Some(v) => u32::try_from(v)
            .map(Some)
            .or_else(|_| invalid(key, format!("{v} is too large"))),
    }
}

fn positive(key: &str, value: u64) -> Result<usize> {
    match usize::try_from(value) {
        Ok(0) => invalid(key, "must be greater than 0"),
        Ok(v) => Ok(v),
        Err(_) => invalid(key, format!("{value} is too large")),
    }
}

fn duration(key: &str, value: Option<String>, default: &str) -> Result<Duration> {
    let text = value.unwrap_or_else(|| default.to_owned());
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => invalid(key, "must be longer than 0"),
        Ok(d) => Ok(d),
        Err(e) => invalid(
            key,
            format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\", \"5d\""),
        ),
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}
