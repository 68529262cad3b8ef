//! One account's connection and login: `[upstream]` or `[accounts.NAME]` (with what it
//! inherits from `[upstream]` already merged in), and its `oauth2` table. Secrets are kept as
//! references ([`SecretSource`]); their files are read when the daemon prepares the
//! credentials. Every key is named under the account's own section.

use std::path::Path;

use super::{
    Result, choice, duration, invalid, is_hostname, pem_file, positive, resolve, secret_source,
    text,
};
use crate::config::raw::{RawOAuth2, RawUpstream};
use crate::config::{
    AuthConfig, OAuth2Config, TlsMode, Transport, UpstreamConfig, system_hostname,
};
use crate::secret::{Secret, SecretSource};

/// Google Workspace's SMTP relay service, which refuses generic EHLO names.
const WORKSPACE_RELAY: &str = "smtp-relay.gmail.com";

/// The account `name` from `raw`, its keys named under `section` (`upstream`,
/// `accounts.NAME`). Defaults are the `[upstream]` ones.
pub(super) fn upstream(
    raw: RawUpstream,
    base: &Path,
    name: &str,
    section: &str,
) -> Result<UpstreamConfig> {
    let key = |k: &str| format!("{section}.{k}");
    let host = raw
        .host
        .unwrap_or_else(|| super::defaults::text("upstream.host"));
    if host.trim().is_empty() || host.contains(char::is_whitespace) {
        return invalid(&key("host"), format!("{host:?} is not a host name"));
    }
    let tls_name = match raw.tls_name.map(|n| n.trim().to_owned()) {
        None => host.clone(),
        Some(n) if !n.is_empty() && !n.contains(char::is_whitespace) => n,
        Some(n) => {
            return invalid(
                &key("tls_name"),
                format!("{n:?} is not a host name or IP address"),
            );
        }
    };
    let tls = match choice(
        &key("tls"),
        raw.tls
            .or_else(|| Some(super::defaults::text("upstream.tls"))),
        &["starttls", "implicit"],
        " (\"starttls\" for port 587, \"implicit\" for port 465); plain-text upstreams are \
         not supported",
    )? {
        "implicit" => TlsMode::Implicit,
        _ => TlsMode::StartTls,
    };
    let port = match raw.port {
        Some(0) => return invalid(&key("port"), "0 is not a port"),
        Some(p) => p,
        None if tls == TlsMode::Implicit => 465,
        None => 587,
    };
    let transport = match choice(
        &key("transport"),
        raw.transport
            .clone()
            .or_else(|| Some(super::defaults::text("upstream.transport"))),
        &["smtp", "api"],
        " (\"api\": the Gmail API over HTTPS, where SMTP ports are blocked)",
    )? {
        "api" => Transport::Api,
        _ => Transport::Smtp,
    };
    let api_url = raw
        .api_url
        .clone()
        .unwrap_or_else(|| super::defaults::text("upstream.api_url"));
    check_endpoint(&api_url).or_else(|why| invalid(&key("api_url"), why))?;
    let auth_name = choice(
        &key("auth"),
        raw.auth
            .clone()
            .or_else(|| Some(super::defaults::text("upstream.auth"))),
        &["password", "xoauth2", "none", "service-account"],
        "",
    )?;
    if transport == Transport::Api && !matches!(auth_name, "xoauth2" | "service-account") {
        let why = if auth_name == "none" {
            "the Gmail API needs OAuth2; \"none\" is for the Workspace SMTP relay service"
        } else {
            "Google's API does not take app passwords"
        };
        return invalid(
            &key("transport"),
            format!(
                "is \"api\" but {} = {auth_name:?}: {why}; set {} = \"xoauth2\" and run \
                 `gmail-relay oauth authorize` (the same refresh token works for SMTP and the \
                 API), or use a service account (\"service-account\")",
                key("auth"),
                key("auth")
            ),
        );
    }
    let impersonate_sender = raw.impersonate_sender.unwrap_or(false);
    if impersonate_sender && auth_name != "service-account" {
        return invalid(
            &key("impersonate_sender"),
            format!(
                "needs {} = \"service-account\": only a service account with domain-wide \
                 delegation can log in as each sender",
                key("auth")
            ),
        );
    }
    let subject = raw
        .service_account
        .as_ref()
        .and_then(|sa| sa.subject.clone())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let username = match raw.username.clone().map(|u| u.trim().to_owned()) {
        Some(u) if !u.is_empty() => u,
        _ if auth_name == "none" => String::new(),
        _ if let Some(s) = subject.as_ref().filter(|_| auth_name == "service-account") => s.clone(),
        _ if impersonate_sender => String::new(),
        _ if auth_name == "service-account" => {
            return invalid(
                &key("service_account.subject"),
                "is missing; set it to the mailbox the service account acts as (or set \
                 impersonate_sender = true in an [accounts.NAME] so that each sender logs in as \
                 itself)",
            );
        }
        _ => {
            return invalid(
                &key("username"),
                "is missing; set it to the Gmail address the relay logs in as (an account never \
                 takes it from [upstream])",
            );
        }
    };
    let no_password = |why: &str| -> Result<()> {
        for (k, set) in [
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
        ] {
            if set {
                return invalid(&key(k), format!("is set, but {why}; remove it"));
            }
        }
        Ok(())
    };
    // A credentials table belongs to one kind of login; set for another it would be ignored.
    for (table, set, wants) in [
        ("oauth2", raw.oauth2.is_some(), "xoauth2"),
        (
            "service_account",
            raw.service_account.is_some(),
            "service-account",
        ),
    ] {
        if set && auth_name != wants {
            return invalid(
                &key("auth"),
                format!(
                    "is \"{auth_name}\" but [{}] is set; set {} = \"{wants}\" to use it, or \
                     remove the table",
                    key(table),
                    key("auth")
                ),
            );
        }
    }
    let auth = match auth_name {
        "xoauth2" => {
            no_password(&format!(
                "{} = \"xoauth2\" never uses a password",
                key("auth")
            ))?;
            let Some(oauth2) = raw.oauth2 else {
                return invalid(
                    &key("oauth2"),
                    format!(
                        "is missing; {} = \"xoauth2\" needs client_id and a refresh token",
                        key("auth")
                    ),
                );
            };
            AuthConfig::XOAuth2(oauth2_config(oauth2, base, &key("oauth2"))?)
        }
        "none" => {
            no_password(&format!("{} = \"none\" sends no AUTH", key("auth")))?;
            AuthConfig::None
        }
        "service-account" => {
            no_password(&format!(
                "{} = \"service-account\" logs in with the service account's tokens",
                key("auth")
            ))?;
            let Some(sa) = raw.service_account.clone() else {
                return invalid(
                    &key("service_account"),
                    format!(
                        "is missing; {} = \"service-account\" needs [{}] with key_file",
                        key("auth"),
                        key("service_account")
                    ),
                );
            };
            if let (Some(subject), false) = (&subject, impersonate_sender)
                && !subject.contains('@')
            {
                return invalid(
                    &key("service_account.subject"),
                    format!("{subject:?} is not a mailbox address"),
                );
            }
            if subject.as_ref().is_some_and(|s| *s != username) {
                return invalid(
                    &key("service_account.subject"),
                    format!(
                        "names another mailbox than {} ({username:?}); set only one of them",
                        key("username")
                    ),
                );
            }
            AuthConfig::ServiceAccount(service_account(sa, base, &key("service_account"))?)
        }
        _ => AuthConfig::Password(password(raw.password, raw.password_file, base, section)?),
    };
    let ca_file = raw
        .ca_file
        .map(|f| pem_file(&key("ca_file"), &resolve(base, &f), "CERTIFICATE"))
        .transpose()?;
    let helo_name = raw.helo_name.unwrap_or_else(system_hostname);
    if !is_hostname(&helo_name) {
        return invalid(
            &key("helo_name"),
            format!("{helo_name:?} is not a host name (letters, digits, '-' and '.')"),
        );
    }
    if host.eq_ignore_ascii_case(WORKSPACE_RELAY)
        && (helo_name.eq_ignore_ascii_case("localhost") || !helo_name.contains('.'))
    {
        return invalid(
            &key("helo_name"),
            format!(
                "is {helo_name:?}; Google's SMTP relay service answers \"421 4.7.0 Try again \
                 later\" to a generic EHLO name: set it to this host's fully qualified name \
                 (e.g. \"relay.example.com\")"
            ),
        );
    }
    Ok(UpstreamConfig {
        name: name.to_owned(),
        section: section.to_owned(),
        host,
        tls_name,
        port,
        tls,
        username,
        impersonate_sender,
        auth,
        ca_file,
        helo_name,
        max_connections: positive("upstream.max_connections", raw.max_connections)
            .map_err(|(_, m)| (key("max_connections"), m))?,
        max_recipients_per_message: positive(
            "upstream.max_recipients_per_message",
            raw.max_recipients_per_message,
        )
        .map_err(|(_, m)| (key("max_recipients_per_message"), m))?,
        pipelining: super::flag("upstream.pipelining", raw.pipelining),
        transport,
        api_url,
        timeout: duration("upstream.timeout", raw.timeout).map_err(|(_, m)| (key("timeout"), m))?,
        idle_timeout: duration("upstream.idle_timeout", raw.idle_timeout)
            .map_err(|(_, m)| (key("idle_timeout"), m))?,
    })
}

/// A `service_account` table (`section` is e.g. `upstream.service_account`).
fn service_account(
    raw: crate::config::raw::RawServiceAccount,
    base: &Path,
    section: &str,
) -> Result<crate::config::ServiceAccountConfig> {
    let key = |k: &str| format!("{section}.{k}");
    let key_file = match raw.key_file.map(|f| f.trim().to_owned()) {
        Some(f) if !f.is_empty() => resolve(base, &f),
        _ => {
            return invalid(
                &key("key_file"),
                "is missing; give the JSON key file of the service account (Google Cloud: IAM \
                 → Service accounts → Keys → Add key → JSON)",
            );
        }
    };
    let token_url = match raw.token_url {
        None => None,
        Some(url) => {
            check_endpoint(&url).or_else(|why| invalid(&key("token_url"), why))?;
            Some(url)
        }
    };
    Ok(crate::config::ServiceAccountConfig {
        key_file,
        token_url,
        section: section.to_owned(),
    })
}

/// A Google endpoint URL (token, consent): https, or plain http on loopback only (the fakes
/// tests point it at), since it carries secrets.
pub(crate) fn check_endpoint(url: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if parsed.scheme() == "https" || (parsed.scheme() == "http" && local) {
        Ok(())
    } else {
        Err(format!(
            "{url:?} must be https:// (http:// only on loopback)"
        ))
    }
}

/// The app password, from exactly one of `password` and `password_file`.
fn password(
    inline: Option<String>,
    file: Option<String>,
    base: &Path,
    section: &str,
) -> Result<SecretSource> {
    let key = |k: &str| format!("{section}.{k}");
    let given = secret_source(inline, file, base, &key("password"), &key("password_file"))?;
    match given {
        Some(source) => Ok(source),
        None => invalid(
            &key("password"),
            format!(
                "is missing; set {} (a file holding the Gmail app password), {}, or the \
                 environment variable GMAIL_RELAY__{}__PASSWORD",
                key("password_file"),
                key("password"),
                section.replace('.', "__").to_uppercase()
            ),
        ),
    }
}

/// An `oauth2` table (`section` is e.g. `upstream.oauth2`). The refresh token file need not
/// exist yet (`oauth authorize` makes it).
fn oauth2_config(raw: RawOAuth2, base: &Path, section: &str) -> Result<OAuth2Config> {
    let key = |k: &str| format!("{section}.{k}");
    let client_id = match raw.client_id.map(|c| c.trim().to_owned()) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return invalid(
                &key("client_id"),
                "is missing; it is the OAuth client id from Google Cloud (…apps.googleusercontent.com)",
            );
        }
    };
    let client_secret = match (raw.client_secret, raw.client_secret_file) {
        (Some(_), Some(_)) => {
            return invalid(
                &key("client_secret"),
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
                &key("refresh_token"),
                "is set together with refresh_token_file; set only one",
            );
        }
        (Some(t), None) => SecretSource::Inline(Secret::new(t.trim())),
        (None, Some(f)) => SecretSource::File(resolve(base, &f)),
        (None, None) => {
            return invalid(
                &key("refresh_token_file"),
                format!(
                    "is missing; set it (then run `gmail-relay oauth authorize` to fill it), or \
                     set {}",
                    key("refresh_token")
                ),
            );
        }
    };
    let endpoint = |name: &str, value: Option<String>| -> Result<String> {
        let url = text(&format!("upstream.oauth2.{name}"), value);
        check_endpoint(&url).or_else(|why| invalid(&key(name), why))?;
        Ok(url)
    };
    Ok(OAuth2Config {
        client_id,
        client_secret,
        refresh_token,
        token_url: endpoint("token_url", raw.token_url)?,
        auth_url: endpoint("auth_url", raw.auth_url)?,
        refresh_before: duration("upstream.oauth2.refresh_before", raw.refresh_before)
            .map_err(|(_, m)| (key("refresh_before"), m))?,
        section: section.to_owned(),
    })
}
