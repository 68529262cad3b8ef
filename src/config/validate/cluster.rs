//! `[cluster]`: the Redis that replicas share budgets and pauses through. The password is a
//! secret kept as a reference (read when the daemon connects), never in the URL.

use std::path::Path;

use super::{Result, invalid, pem_file, resolve, secret_source, text};
use crate::config::ClusterConfig;
use crate::config::raw::RawCluster;

pub(super) fn cluster(raw: RawCluster, base: &Path, hostname: &str) -> Result<ClusterConfig> {
    let redis_url = match raw.redis_url.map(|u| u.trim().to_owned()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            return invalid(
                "cluster.redis_url",
                "is missing; give the Redis the replicas share, e.g. \"redis://127.0.0.1:6379/0\" \
                 (or leave out [cluster] for a relay on its own)",
            );
        }
    };
    let parsed = url::Url::parse(&redis_url).or_else(|e| {
        invalid(
            "cluster.redis_url",
            format!("{redis_url:?} is not a URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return invalid(
            "cluster.redis_url",
            format!("{redis_url:?} must start with redis:// (or rediss:// for TLS)"),
        );
    }
    if parsed.password().is_some() {
        return invalid(
            "cluster.redis_url",
            "holds a password; put it in cluster.redis_password_file (or \
             GMAIL_RELAY__CLUSTER__REDIS_PASSWORD) so it never shows in the config or the logs",
        );
    }
    let password = secret_source(
        raw.redis_password,
        raw.redis_password_file,
        base,
        "cluster.redis_password",
        "cluster.redis_password_file",
    )?;
    let replicas = match raw.replicas {
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            return invalid(
                "cluster.replicas",
                format!("{n} is not a number of replicas (1 to 1000)"),
            );
        }
        None => {
            return invalid(
                "cluster.replicas",
                "is missing; give how many replicas share the accounts: when Redis cannot be \
                 reached, each sends at most its share of what is left of a budget",
            );
        }
    };
    let key_prefix = text("cluster.key_prefix", raw.key_prefix);
    if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
        return invalid(
            "cluster.key_prefix",
            format!("{key_prefix:?} is not a key prefix"),
        );
    }
    let replica = match raw.replica.map(|r| r.trim().to_owned()) {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => r,
        Some(r) => return invalid("cluster.replica", format!("{r:?} is not a name")),
        None => hostname.to_owned(),
    };
    let ca_file = match raw.ca_file {
        Some(_) if parsed.scheme() != "rediss" => {
            return invalid(
                "cluster.ca_file",
                "is for a Redis reached over TLS; make cluster.redis_url start with rediss://",
            );
        }
        Some(f) => Some(pem_file(
            "cluster.ca_file",
            &resolve(base, &f),
            "CERTIFICATE",
        )?),
        None => None,
    };
    Ok(ClusterConfig {
        redis_url,
        password,
        key_prefix,
        replicas,
        replica,
        ca_file,
    })
}
