//! `[listen]`: addresses, certificate, who may relay, limits.

use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;

use super::{
    Result, duration, flag, invalid, is_hostname, pem_file, positive, resolve, socket_addrs,
};
use crate::config::raw::{List, RawListen};
use crate::config::{
    ListenConfig, Transport, UpstreamConfig, UserEntry, defaults, system_hostname,
};

pub(super) fn hostname(raw: Option<String>) -> Result<String> {
    let hostname = raw.unwrap_or_else(system_hostname);
    if !is_hostname(&hostname) {
        return invalid(
            "listen.hostname",
            format!("{hostname:?} is not a host name (letters, digits, '-' and '.')"),
        );
    }
    Ok(hostname)
}

pub(super) fn listen(raw: RawListen, base: &Path) -> Result<ListenConfig> {
    let addrs = socket_addrs("listen.addrs", raw.addrs)?;
    let no_starttls_addrs = socket_addrs("listen.no_starttls_addrs", raw.no_starttls_addrs)?;
    let implicit_tls_addrs = socket_addrs("listen.implicit_tls_addrs", raw.implicit_tls_addrs)?;
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
        .unwrap_or_else(|| defaults::list("listen.allowed_networks"));
    let allowed_networks = nets
        .iter()
        .enumerate()
        .map(|(i, n)| network(&format!("listen.allowed_networks[{i}]"), n))
        .collect::<Result<Vec<_>>>()?;

    let danger_allow_any_network = flag(
        "listen.danger_allow_any_network",
        raw.danger_allow_any_network,
    );
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
    Ok(ListenConfig {
        addrs,
        no_starttls_addrs,
        implicit_tls_addrs,
        tls_cert,
        tls_key,
        allowed_networks,
        max_message_size: positive("listen.max_message_size", raw.max_message_size)?,
        max_recipients: positive("listen.max_recipients", raw.max_recipients)?,
        max_connections: positive("listen.max_connections", raw.max_connections)?,
        max_connections_per_client: positive(
            "listen.max_connections_per_client",
            raw.max_connections_per_client,
        )?,
        allowed_senders: address_list("listen.allowed_senders", raw.allowed_senders, true)?,
        allowed_recipients: address_list(
            "listen.allowed_recipients",
            raw.allowed_recipients,
            false,
        )?,
        danger_allow_any_network,
        users: users(raw.users, raw.users_file, base)?,
        danger_allow_plaintext_auth: flag(
            "listen.danger_allow_plaintext_auth",
            raw.danger_allow_plaintext_auth,
        ),
        hostname: hostname(raw.hostname)?,
        idle_timeout: duration("listen.idle_timeout", raw.idle_timeout)?,
        data_timeout: duration("listen.data_timeout", raw.data_timeout)?,
    })
}

/// Gmail refuses messages over its SIZE, and the relay adds up to
/// [`defaults::ADDED_HEADERS_MAX`] bytes of headers: a limit that leaves no room for them
/// would acknowledge messages that can only bounce.
pub(super) fn fits_upstream(listen: &ListenConfig, upstream: &UpstreamConfig) -> Result<()> {
    let limit = match upstream.transport {
        Transport::Smtp
            if upstream.host.eq_ignore_ascii_case("smtp.gmail.com")
                || upstream.host.eq_ignore_ascii_case("smtp-relay.gmail.com") =>
        {
            Some((defaults::GMAIL_MAX_SIZE, "Gmail's limit"))
        }
        Transport::Api
            if url::Url::parse(&upstream.api_url)
                .is_ok_and(|u| u.host_str() == Some("gmail.googleapis.com")) =>
        {
            Some((defaults::GMAIL_API_MAX_SIZE, "the Gmail API's limit"))
        }
        _ => None,
    };
    let Some((max, whose)) = limit else {
        return Ok(());
    };
    let most = max - defaults::ADDED_HEADERS_MAX;
    if listen.max_message_size as u64 > most {
        return invalid(
            "listen.max_message_size",
            format!(
                "{} leaves no room for the headers the relay adds (up to {} bytes) within \
                 {whose} of {max} bytes, so such messages would be accepted and then bounced; \
                 set at most {most}, or leave it out",
                listen.max_message_size,
                defaults::ADDED_HEADERS_MAX,
            ),
        );
    }
    Ok(())
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
pub(super) fn address_list(key: &str, raw: Option<List>, null_ok: bool) -> Result<Vec<String>> {
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
/// `#` comments), together. The hashes are checked when the daemon prepares its users.
fn users(list: Option<Vec<String>>, file: Option<String>, base: &Path) -> Result<Vec<UserEntry>> {
    let mut entries: Vec<UserEntry> = list
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, line)| UserEntry {
            origin: format!("listen.users[{i}]"),
            line,
        })
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
                entries.push(UserEntry {
                    origin: format!("listen.users_file ({} line {})", path.display(), n + 1),
                    line: line.to_owned(),
                });
            }
        }
    }
    Ok(entries)
}
