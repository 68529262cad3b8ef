//! The subcommands' implementations; `main.rs` parses the command line and dispatches here.

pub mod args;
pub mod health;
pub mod oauth;
pub mod queue;
pub mod send_test;
pub mod sendmail;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use gmail_relay::config;

/// Exit code for a configuration (or usage) error; the systemd unit does not restart on it.
pub const EXIT_CONFIG: u8 = 2;

/// Where the local tools look for the config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/gmail-relay/relay.toml";

/// `--config`, else `$GMAIL_RELAY_CONFIG`, else [`DEFAULT_CONFIG`].
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GMAIL_RELAY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// Sets up logging and loads the local tools' view of the config (`--config`, else
/// `$GMAIL_RELAY_CONFIG`, else the default), or prints the error and returns the exit code
/// (`code`: 2, or sysexits' 78 for sendmail).
pub fn local_config(flag: Option<PathBuf>, who: &str, code: u8) -> Result<config::Local, ExitCode> {
    init_cli_logging();
    config::load_local(&config_path(flag), None).map_err(|e| {
        eprintln!("{who}: configuration error: {e}");
        ExitCode::from(code)
    })
}

/// Logging for the local tools: warnings and errors on standard error (`RUST_LOG` for more).
pub fn init_cli_logging() {
    let _ = gmail_relay::observe::init(&config::LogConfig {
        level: "warn".to_owned(),
        format: config::LogFormat::Text,
    });
}

/// Runs a future on a single-threaded runtime (the local tools do little at a time).
pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(fut)
}

/// Runs a command's future and turns its result into an exit code.
pub fn with_runtime(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(fut));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gmail-relay: {e:#}");
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

pub fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!(
            "gmail-relay: give the password on standard input, e.g. `gmail-relay hash-password <<< 'the password'`"
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{}",
        gmail_relay::auth::hash_password(line.trim_end_matches(['\r', '\n']).as_bytes())
    );
    ExitCode::SUCCESS
}
