//! Observability: log setup, the mail event log, metrics and the health endpoint.
//!
//! [`init`] installs the tracing subscriber (text or JSON lines on stderr, filter from
//! `log.level` unless `RUST_LOG` is set). [`events`] is the mail log: one function per thing
//! that happens to a message, each writing one line with stable field names, so operators can
//! grep and parse it the way they parse Postfix's `status=sent` lines.
//!
//! [`metrics`] counts what happens and reports the queue and pause state in Prometheus form;
//! [`http`] serves it and `/healthz` on `metrics.addr`.
//!
//! Invariant: no function here takes a secret; credentials never reach a log line.

pub mod events;
pub mod http;
pub mod metrics;

pub use metrics::{AccountSnapshot, Metrics, Snapshot};

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    /// `RUST_LOG` or `log.level` is not a valid filter.
    #[error("invalid log filter {filter:?} (from {origin}): {reason}")]
    Filter {
        /// The filter text.
        filter: String,
        /// `RUST_LOG` or `log.level`.
        origin: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Installs the global log subscriber. Call once, early in the binary.
pub fn init(cfg: &LogConfig) -> Result<(), LogInitError> {
    let (filter, origin) = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => (f, "RUST_LOG"),
        _ => (cfg.level.clone(), "log.level"),
    };
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| LogInitError::Filter {
            filter: filter.clone(),
            origin,
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| LogInitError::AlreadySet)
}
