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
    /// OAuth2 for Gmail (upstream.auth = "xoauth2").
    #[command(subcommand)]
    Oauth(Oauth),
}

#[derive(Subcommand)]
enum Oauth {
    /// Get a refresh token: open the printed URL, consent, and the token is written to
    /// upstream.oauth2.refresh_token_file (mode 0600).
    Authorize {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Fetch an access token and log in to the upstream with XOAUTH2, without sending mail.
    Test {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
        Command::HashPassword => hash_password(),
        Command::Oauth(Oauth::Authorize { config }) => with_runtime(oauth_authorize(&config)),
        Command::Oauth(Oauth::Test { config }) => with_runtime(oauth_test(&config)),
    }
}

/// Runs a command's future on a runtime and turns its result into an exit code.
fn with_runtime(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
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

/// The XOAUTH2 token source of a config, or an error saying how to enable it.
fn token_source(
    cfg: &config::Config,
    path: &Path,
) -> anyhow::Result<gmail_relay::auth::TokenSource> {
    cfg.upstream
        .credentials
        .token_source()
        .cloned()
        .with_context(|| {
            format!(
                "{}: upstream.auth is not \"xoauth2\"; set it and [upstream.oauth2] first",
                path.display()
            )
        })
}

async fn oauth_authorize(path: &Path) -> anyhow::Result<()> {
    use gmail_relay::auth::{RefreshToken, authorize, write_secret_file};
    let cfg = config::load(path)?;
    let source = token_source(&cfg, path)?;
    let settings = source.settings();
    let RefreshToken::File(file) = &settings.refresh_token else {
        anyhow::bail!(
            "{}: set upstream.oauth2.refresh_token_file (instead of refresh_token) so the \
             token can be stored",
            path.display()
        );
    };
    let auth = authorize::begin(settings, cfg.upstream.credentials.username()).await?;
    println!("{}", auth.url);
    eprintln!(
        "\nOpen the URL above in a browser, sign in as {} and allow access.\n\
         Google then redirects to {} on this machine. If the browser runs elsewhere and that page\n\
         does not load, copy the address from the browser's address bar and paste it here.\n",
        cfg.upstream.credentials.username(),
        auth.redirect_uri
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let code = auth.wait_for_code(rx).await?;
    let refresh = auth.exchange(settings, source.http(), &code).await?;
    write_secret_file(file, refresh.expose())
        .with_context(|| format!("cannot write {}", file.display()))?;
    eprintln!(
        "Authorized. The refresh token is in {} (mode 0600). Check it with:\n  gmail-relay oauth test --config {}",
        file.display(),
        path.display()
    );
    Ok(())
}

async fn oauth_test(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let source = token_source(&cfg, path)?;
    let token = source.token().await.context("fetching an access token")?;
    let valid = token
        .expires_at
        .saturating_duration_since(tokio::time::Instant::now());
    println!(
        "access token: OK (valid for {})",
        humantime::format_duration(std::time::Duration::from_secs(valid.as_secs()))
    );
    let upstream = delivery::Upstream::new(cfg.upstream.clone())?;
    let done = upstream
        .check_login()
        .await
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    println!("upstream: {done}");
    Ok(())
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
