//! Defaults and checks: raw values in, typed sections out, or `(key, message)` naming the first
//! problem. One file per section (`listen`, `upstream`, `delivery` for the smaller ones); the
//! value checks they share are here. Missing values come from [`super::defaults`].

mod accounts;
mod cluster;
mod delivery;
mod listen;
mod upstream;
pub(crate) use upstream::check_endpoint;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{List, Raw};
use super::{Config, defaults};
use crate::secret::{Secret, SecretSource};

/// `(key, message)`: what [`super::ConfigError::Invalid`] is built from.
pub(super) type Invalid = (String, String);
type Result<T> = std::result::Result<T, Invalid>;

fn invalid<T>(key: &str, message: impl Into<String>) -> Result<T> {
    Err((key.to_owned(), message.into()))
}

pub(super) fn validate(raw: Raw, base: &Path) -> Result<Config> {
    let accounts = accounts::accounts(&raw, base)?;
    let listen = listen::listen(raw.listen, base)?;
    let cluster = raw
        .cluster
        .map(|c| cluster::cluster(c, base, &listen.hostname))
        .transpose()?;
    let config = Config {
        listen,
        queue: delivery::queue(raw.queue, base)?,
        accounts,
        delivery: delivery::delivery(raw.delivery)?,
        log: delivery::log(raw.log)?,
        metrics: delivery::metrics(raw.metrics)?,
        cluster,
    };
    delivery::admin_address(raw.sendmail.admin_address)?;
    for account in &config.accounts {
        listen::fits_upstream(&config.listen, &account.upstream)?;
    }
    Ok(config)
}

/// The part of the config the local tools need; see [`super::Local`].
pub(super) fn local(raw: Raw, base: &Path) -> Result<super::Local> {
    let addrs = socket_addrs("listen.addrs", raw.listen.addrs)?;
    let no_starttls_addrs = socket_addrs("listen.no_starttls_addrs", raw.listen.no_starttls_addrs)?;
    Ok(super::Local {
        submit_addrs: addrs.into_iter().chain(no_starttls_addrs).collect(),
        hostname: listen::hostname(raw.listen.hostname)?,
        queue_dir: delivery::queue(raw.queue, base)?.dir,
        metrics: delivery::metrics(raw.metrics)?,
        admin_address: delivery::admin_address(raw.sendmail.admin_address)?,
        account: raw
            .upstream
            .username
            .map(|u| u.trim().to_owned())
            .filter(|u| u.contains('@')),
        accounts: std::iter::once(crate::config::DEFAULT_ACCOUNT.to_owned())
            .chain(raw.accounts.keys().cloned())
            .collect(),
    })
}

/// A list of `ip:port` (no host names: nothing at start-up depends on DNS).
fn socket_addrs(key: &str, raw: Option<List>) -> Result<Vec<std::net::SocketAddr>> {
    let items = raw
        .map(List::into_vec)
        .unwrap_or_else(|| defaults::list(key));
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.trim().parse().or_else(|_| {
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
    let found = String::from_utf8_lossy(&pem).lines().any(|l| {
        l == marker || (any_key && l.starts_with("-----BEGIN ") && l.ends_with(" PRIVATE KEY-----"))
    });
    if !found {
        return invalid(
            key,
            format!("{} holds no PEM {}", path.display(), what.to_lowercase()),
        );
    }
    Ok(path.to_path_buf())
}

/// A secret given inline (`inline_key`) or in a file (`file_key`, relative to `base`), or
/// `None` when neither is set; both, or an empty one, is an error naming the key.
fn secret_source(
    inline: Option<String>,
    file: Option<String>,
    base: &Path,
    inline_key: &str,
    file_key: &str,
) -> Result<Option<SecretSource>> {
    match (inline, file) {
        (Some(_), Some(_)) => invalid(
            inline_key,
            format!("is set together with {file_key}; set only one"),
        ),
        (Some(p), None) if !p.trim().is_empty() => {
            Ok(Some(SecretSource::Inline(Secret::new(p.trim_end()))))
        }
        (Some(_), None) => invalid(inline_key, "is empty"),
        (None, Some(file)) if !file.trim().is_empty() => {
            Ok(Some(SecretSource::File(resolve(base, &file))))
        }
        (None, Some(_)) => invalid(file_key, "is empty; give a file name"),
        (None, None) => Ok(None),
    }
}

/// `key`'s boolean, or its default.
fn flag(key: &str, value: Option<bool>) -> bool {
    value.unwrap_or_else(|| defaults::flag(key))
}

/// `key`'s text, or its default.
fn text(key: &str, value: Option<String>) -> String {
    value.unwrap_or_else(|| defaults::text(key))
}

/// An optional positive limit that fits in 32 bits (no default: absent is no limit).
fn rate(key: &str, value: Option<u64>) -> Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(0) => invalid(key, "must be greater than 0 (leave it out for no limit)"),
        Some(v) => u32::try_from(v)
            .map(Some)
            .or_else(|_| invalid(key, format!("{v} is too large"))),
    }
}

/// A positive count: `key`'s value, or its default.
fn positive(key: &str, value: Option<u64>) -> Result<usize> {
    let value = value.unwrap_or_else(|| defaults::number(key));
    match usize::try_from(value) {
        Ok(0) => invalid(key, "must be greater than 0"),
        Ok(v) => Ok(v),
        Err(_) => invalid(key, format!("{value} is too large")),
    }
}

/// A positive duration: `key`'s value, or its default.
fn duration(key: &str, value: Option<String>) -> Result<Duration> {
    let text = text(key, value);
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => invalid(key, "must be longer than 0"),
        Ok(d) => Ok(d),
        Err(e) => invalid(
            key,
            format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\", \"5d\""),
        ),
    }
}

/// One of `allowed`: `key`'s value, or its default.
fn choice<'a>(
    key: &str,
    value: Option<String>,
    allowed: &[&'a str],
    hint: &str,
) -> Result<&'a str> {
    let value = text(key, value);
    let value = value.trim();
    match allowed.iter().find(|a| **a == value) {
        Some(a) => Ok(a),
        None => {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            let list = match quoted.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            invalid(key, format!("{value:?} is not one of {list}{hint}"))
        }
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
