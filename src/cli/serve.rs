//! `gmail-relay serve` and `gmail-relay check`: running the daemon, validating a config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use gmail_relay::{config, daemon, delivery, observe};
use tokio::sync::mpsc::UnboundedSender;

use super::EXIT_CONFIG;

/// Loads, validates and prepares the config (the files it names are read: password, CA,
/// certificate, users), printing the error and returning the exit code on failure.
fn load(path: &Path) -> Result<daemon::Prepared, ExitCode> {
    let cfg = config::load(path).map_err(|e| {
        eprintln!("gmail-relay: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    daemon::prepare(cfg).map_err(|e| {
        eprintln!("gmail-relay: configuration error: {}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn check(path: &Path, upstream: bool) -> ExitCode {
    let prepared = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cfg = &prepared.config;
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
        cfg.upstream.username,
    );
    if !upstream {
        return ExitCode::SUCCESS;
    }
    let login = async {
        let upstream = delivery::Upstream::new(prepared.upstream, observe::Metrics::new());
        let done = upstream
            .check_login()
            .await
            .map_err(|p| anyhow::anyhow!("{p}"))?;
        println!("  upstream check: {done}");
        Ok(())
    };
    super::with_runtime(login)
}

pub fn serve(path: &Path) -> ExitCode {
    let prepared = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = observe::init(&prepared.config.log) {
        eprintln!("gmail-relay: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(signals(path.to_path_buf(), tx));
                daemon::run(prepared, rx).await.map_err(anyhow::Error::from)
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

/// Turns signals into [`daemon::Signal`]s: SIGHUP reloads `path` (a config that does not load
/// is refused with a log line, and the running one stays); the first SIGTERM or SIGINT stops
/// the relay gracefully, a second one exits at once, which is safe because every acknowledged
/// message is already on disk.
async fn signals(path: PathBuf, tx: UnboundedSender<daemon::Signal>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the relay with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                match config::load(&path) {
                    Ok(cfg) => {
                        let _ = tx.send(daemon::Signal::Reload(Box::new(cfg)));
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "configuration not reloaded; the running configuration stays in force"
                    ),
                }
            }
        }
    }
    tracing::info!(
        "signal received; finishing sessions and deliveries in flight (signal again to exit at once)"
    );
    let _ = tx.send(daemon::Signal::Shutdown);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting at once; queued mail is safe on disk");
    std::process::exit(1);
}
