//! The smaller sections: `[queue]`, `[delivery]`, `[rewrite]`, `[log]`, `[metrics]` and
//! `[sendmail]`.

use std::net::SocketAddr;
use std::path::Path;

use super::{Result, choice, duration, flag, invalid, resolve, text};
use crate::config::raw::{RawDelivery, RawLog, RawMetrics, RawQueue, RawRewrite};
use crate::config::{
    BounceTo, DeliveryConfig, LogConfig, LogFormat, MetricsConfig, QueueConfig, RewriteConfig,
};

pub(super) fn queue(raw: RawQueue, base: &Path) -> Result<QueueConfig> {
    let dir = text("queue.dir", raw.dir);
    if dir.trim().is_empty() {
        return invalid("queue.dir", "is empty; give the spool directory");
    }
    let retry_min = duration("queue.retry_min", raw.retry_min)?;
    let retry_max = duration("queue.retry_max", raw.retry_max)?;
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
        max_age: duration("queue.max_age", raw.max_age)?,
    })
}

pub(super) fn delivery(raw: RawDelivery) -> Result<DeliveryConfig> {
    let auth_pause_min = duration("delivery.auth_pause_min", raw.auth_pause_min)?;
    let auth_pause_max = duration("delivery.auth_pause_max", raw.auth_pause_max)?;
    if auth_pause_max < auth_pause_min {
        return invalid(
            "delivery.auth_pause_max",
            "is shorter than delivery.auth_pause_min",
        );
    }
    let bounce = match choice(
        "delivery.bounce",
        raw.bounce,
        &["sender", "postmaster", "none"],
        "",
    )? {
        "none" => BounceTo::Nobody,
        "postmaster" => match raw.postmaster.map(|a| a.trim().to_owned()) {
            Some(addr) if addr.contains('@') && !addr.contains(char::is_whitespace) => {
                BounceTo::Postmaster(addr)
            }
            Some(addr) => {
                return invalid("delivery.postmaster", format!("{addr:?} is not an address"));
            }
            None => {
                return invalid(
                    "delivery.postmaster",
                    "is missing; delivery.bounce = \"postmaster\" needs the address to send to",
                );
            }
        },
        _ => BounceTo::Sender,
    };
    Ok(DeliveryConfig {
        hold: flag("delivery.hold", raw.hold),
        auth_pause_min,
        auth_pause_max,
        quota_pause: duration("delivery.quota_pause", raw.quota_pause)?,
        bounce,
    })
}

/// `[rewrite]`, or an account's `rewrite` table (`section` names it).
pub(super) fn rewrite(raw: RawRewrite, section: &str) -> Result<RewriteConfig> {
    let account = |name: &str, value: Option<String>| -> Result<bool> {
        let value = value.or_else(|| Some(super::defaults::text(&format!("rewrite.{name}"))));
        let key = format!("{section}.{name}");
        Ok(choice(&key, value, &["keep", "account"], "")? == "account")
    };
    Ok(RewriteConfig {
        envelope_from: account("envelope_from", raw.envelope_from)?,
        header_from: account("header_from", raw.header_from)?,
    })
}

pub(super) fn log(raw: RawLog) -> Result<LogConfig> {
    let format = match choice("log.format", raw.format, &["text", "json"], "")? {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let level = text("log.level", raw.level);
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return invalid(
            "log.level",
            format!("{level:?} is not a level (error, warn, info, debug, trace) or a filter"),
        );
    }
    Ok(LogConfig { level, format })
}

pub(super) fn metrics(raw: RawMetrics) -> Result<MetricsConfig> {
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

pub(super) fn admin_address(raw: Option<String>) -> Result<Option<String>> {
    match raw.map(|a| a.trim().to_owned()) {
        None => Ok(None),
        Some(a) if a.contains('@') && !a.contains(['<', '>', ' ', ',']) => Ok(Some(a)),
        Some(a) => invalid(
            "sendmail.admin_address",
            format!("{a:?} is not one email address (user@domain)"),
        ),
    }
}
