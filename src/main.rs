//! The `gmail-relay` binary: parses the command line and hands over to the library.
//!
//! Exit codes: 0 success, 1 runtime failure (spool locked, port in use, ...), 2 bad config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use gmail_relay::{config, daemon, delivery, intake, observe};

#[derive(Parser)]
#[command(
    name = "gmail-relay",
    version,
    about = "Local SMTP relay that queues mail durably and forwards it to Gmail"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the configuration and exit (0 valid, 2 invalid).
    Check {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Read a password on standard input and print its argon2id hash, for `listen.users`.
    HashPassword,
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
        Command::HashPassword => hash_password(),
    }
}

fn hash_password() -> ExitCode {
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

/// Loads and validates the config, printing the error and returning the exit code on failure.
fn load(path: &Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("gmail-relay: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Err(e) = delivery::Upstream::new(cfg.upstream.clone()) {
        eprintln!("gmail-relay: configuration error: {}: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(e) = intake::tls_acceptor(&cfg.listen) {
        eprintln!("gmail-relay: configuration error: {}: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}: OK\n  listen: {}\n  allowed networks: {}\n  queue: {}\n  upstream: {}:{} ({}) as {}",
        path.display(),
        cfg.listen
            .listeners()
            .iter()
            .map(|l| match l.kind {
                config::ListenerKind::Plain { starttls: true } => format!("{} (STARTTLS)", l.addr),
                config::ListenerKind::Plain { starttls: false } => l.addr.to_string(),
                config::ListenerKind::ImplicitTls => format!("{} (TLS)", l.addr),
            })
            .collect::<Vec<_>>()
            .join(", "),
        cfg.listen
            .allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cfg.queue.dir.display(),
        cfg.upstream.host,
        cfg.upstream.port,
        cfg.upstream.tls,
        cfg.upstream.credentials.username(),
    );
    ExitCode::SUCCESS
}

fn serve(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Err(e) = observe::init(&cfg.log) {
        eprintln!("gmail-relay: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                daemon::run(cfg, signals())
                    .await
                    .map_err(anyhow::Error::from)
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gmail-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT. A second one exits at once: safe, because every
/// acknowledged message is already on disk.
async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the relay with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(
        "signal received; finishing sessions and deliveries in flight (signal again to exit at once)"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting at once; queued mail is safe on disk");
        std::process::exit(1);
    });
}
