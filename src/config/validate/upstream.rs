//! `[upstream]` and `[upstream.oauth2]`: the server, the TLS mode, the account and how it logs
//! in. Secrets are kept as references ([`SecretSource`]); their files are read when the daemon
//! prepares the credentials.

use std::path::Path;

use super::{Result, choice, duration, invalid, is_hostname, pem_file, positive, resolve, text};
use crate::config::raw::{RawOAuth2, RawUpstream};
use crate::config::{AuthConfig, OAuth2Config, TlsMode, UpstreamConfig, system_hostname};
use crate::secret::{Secret, SecretSource};

pub(super) fn upstream(raw: RawUpstream, base: &Path) -> Result<UpstreamConfig> {
    let host = text("upstream.host", raw.host);
    if host.trim().is_empty() || host.contains(char::is_whitespace) {
        return invalid("upstream.host", format!("{host:?} is not a host name"));
    }
    let tls_name = match raw.tls_name.map(|n| n.trim().to_owned()) {
        None => host.clone(),
        Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => name,
        Some(name) => {
            return invalid(
                "upstream.tls_name",
                format!("{name:?} is not a host name or IP address"),
            );
        }
    };
    let tls = match choice(
        "upstream.tls",
        raw.tls,
        &["starttls", "implicit"],
        " (\"starttls\" for port 587, \"implicit\" for port 465); plain-text upstreams are \
         not supported",
    )? {
        "implicit" => TlsMode::Implicit,
        _ => TlsMode::StartTls,
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
    let auth = match choice("upstream.auth", raw.auth, &["password", "xoauth2"], "")? {
        "xoauth2" => {
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
            AuthConfig::XOAuth2(oauth2_config(oauth2, base)?)
        }
        _ => {
            if raw.oauth2.is_some() {
                return invalid(
                    "upstream.auth",
                    "is \"password\" but [upstream.oauth2] is set; set upstream.auth = \"xoauth2\" to use it",
                );
            }
            AuthConfig::Password(password(raw.password, raw.password_file, base)?)
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
        section: "upstream".to_owned(),
        host,
        tls_name,
        port,
        tls,
        username,
        auth,
        ca_file,
        helo_name,
        max_connections: positive("upstream.max_connections", raw.max_connections)?,
        max_recipients_per_message: positive(
            "upstream.max_recipients_per_message",
            raw.max_recipients_per_message,
        )?,
        timeout: duration("upstream.timeout", raw.timeout)?,
        idle_timeout: duration("upstream.idle_timeout", raw.idle_timeout)?,
    })
}

/// The app password, from exactly one of `upstream.password` and `upstream.password_file`.
fn password(inline: Option<String>, file: Option<String>, base: &Path) -> Result<SecretSource> {
    match (inline, file) {
        (Some(_), Some(_)) => invalid(
            "upstream.password",
            "is set together with upstream.password_file; set only one",
        ),
        (Some(p), None) if !p.trim().is_empty() => {
            Ok(SecretSource::Inline(Secret::new(p.trim_end())))
        }
        (Some(_), None) => invalid("upstream.password", "is empty"),
        (None, Some(file)) if !file.trim().is_empty() => {
            Ok(SecretSource::File(resolve(base, &file)))
        }
        (None, Some(_)) => invalid("upstream.password_file", "is empty; give a file name"),
        (None, None) => invalid(
            "upstream.password",
            "is missing; set upstream.password_file (a file holding the Gmail app password), \
             upstream.password, or the environment variable GMAIL_RELAY__UPSTREAM__PASSWORD",
        ),
    }
}

/// `[upstream.oauth2]`. The refresh token file need not exist yet (`oauth authorize` makes it).
fn oauth2_config(raw: RawOAuth2, base: &Path) -> Result<OAuth2Config> {
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
        (Some(s), None) => Some(SecretSource::Inline(Secret::new(s.trim()))),
        (None, Some(f)) => Some(SecretSource::File(resolve(base, &f))),
        (None, None) => None,
    };
    let refresh_token = match (raw.refresh_token, raw.refresh_token_file) {
        (Some(_), Some(_)) => {
            return invalid(
                "upstream.oauth2.refresh_token",
                "is set together with refresh_token_file; set only one",
            );
        }
        (Some(t), None) => SecretSource::Inline(Secret::new(t.trim())),
        (None, Some(f)) => SecretSource::File(resolve(base, &f)),
        (None, None) => {
            return invalid(
                "upstream.oauth2.refresh_token_file",
                "is missing; set it (then run `gmail-relay oauth authorize` to fill it), or set \
                 upstream.oauth2.refresh_token",
            );
        }
    };
    Ok(OAuth2Config {
        client_id,
        client_secret,
        refresh_token,
        token_url: endpoint("upstream.oauth2.token_url", raw.token_url)?,
        auth_url: endpoint("upstream.oauth2.auth_url", raw.auth_url)?,
        refresh_before: duration("upstream.oauth2.refresh_before", raw.refresh_before)?,
        section: "upstream.oauth2".to_owned(),
    })
}

/// An https URL (http only on loopback, for tests and local proxies).
fn endpoint(key: &str, value: Option<String>) -> Result<String> {
    let url = text(key, value);
    let parsed =
        url::Url::parse(&url).or_else(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && local) {
        return invalid(
            key,
            format!("{url:?} must be https:// (http:// only on loopback)"),
        );
    }
    Ok(url)
}
