//! `gmail-relay serve` and `gmail-relay check`: running the daemon, validating a config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use gmail_relay::{config, daemon, delivery, observe};
use tokio::sync::mpsc::UnboundedSender;

use super::EXIT_CONFIG;

/// Loads, validates and prepares the config (the files it names are read: password, CA,
/// certificate, users, service account keys), printing the error and returning the exit code
/// on failure. Logging starts in between, with `log` (or the config's `[log]`), so that what
/// preparing warns about (a key file others can read) is seen.
fn load(path: &Path, log: Option<config::LogConfig>) -> Result<daemon::Prepared, ExitCode> {
    let cfg = config::load(path).map_err(|e| {
        eprintln!("gmail-relay: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Err(e) = observe::init(log.as_ref().unwrap_or(&cfg.log)) {
        eprintln!("gmail-relay: {e}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    daemon::prepare(cfg).map_err(|e| {
        eprintln!("gmail-relay: configuration error: {}: {e}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn check(path: &Path, upstream: bool, as_sender: Option<&str>) -> ExitCode {
    // Only warnings: the check's own lines are its output.
    let warnings = config::LogConfig {
        level: "warn".into(),
        format: config::LogFormat::Text,
    };
    let prepared = match load(path, Some(warnings)) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cfg = &prepared.config;
    println!(
        "{}: OK\n  listen: {}\n  allowed networks: {}\n  queue: {}",
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
    );
    let several = cfg.accounts.len() > 1;
    for account in &cfg.accounts {
        let up = &account.upstream;
        let what = format!("{} as {}", up.destination(), up.label());
        if several {
            let senders: Vec<String> = account.senders.iter().map(ToString::to_string).collect();
            println!(
                "  account {}: {what}; senders: {}{}",
                account.name(),
                if senders.is_empty() {
                    "(the rest)".to_owned()
                } else {
                    senders.join(", ")
                },
                if account.failover.is_empty() {
                    String::new()
                } else {
                    format!("; failover: {}", account.failover.join(", "))
                }
            );
        } else {
            println!("  upstream: {what}");
        }
    }
    // The Redis the replicas share: reachable or not. A replica runs without it, so an
    // unreachable Redis fails the check only with --upstream (after the logins); settings that
    // cannot work (an unreadable password or CA file) are a configuration error.
    let mut cluster_failed = false;
    if let Some(c) = &cfg.cluster {
        let policy = gmail_relay::scheduler::RetryPolicy::new(&cfg.queue, &cfg.delivery);
        let mut said = None;
        let built = super::with_runtime(async {
            let cluster = gmail_relay::cluster::Cluster::new(c, policy, observe::Metrics::new())?;
            said = Some(cluster.check().await);
            Ok(())
        });
        let Some(said) = said.filter(|_| built == ExitCode::SUCCESS) else {
            return ExitCode::from(EXIT_CONFIG); // (with_runtime printed why)
        };
        cluster_failed = said.is_err();
        println!("  cluster: {}", said.unwrap_or_else(|why| why));
    }
    if !upstream {
        return ExitCode::SUCCESS;
    }
    // `--as`: the account that carries this sender must log in as each sender.
    let as_account = match as_sender {
        None => None,
        Some(address) => {
            let router = gmail_relay::policy::Router::new(&cfg.accounts);
            let name = router.route(address);
            let setup = prepared
                .upstreams
                .iter()
                .find(|u| u.cfg.name == name)
                .expect("the router names a configured account");
            if !setup.cfg.impersonate_sender {
                eprintln!(
                    "gmail-relay: --as {address}: mail from it goes through account {name}, \
                     which logs in as {}, not as each sender; leave out --as",
                    setup.cfg.label()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            Some((name.to_owned(), address.to_lowercase()))
        }
    };
    // Every account logs in, one after the other, so each gets its own line.
    let login = async {
        let mut failed = 0;
        for setup in prepared.upstreams {
            let name = setup.cfg.name.clone();
            let prefix = if several {
                format!("account {name}: ")
            } else {
                String::new()
            };
            let setup = match &as_account {
                Some((account, mailbox)) if *account == name => setup
                    .for_mailbox(mailbox, &config::sender_lane(&name, mailbox))
                    .expect("an account that logs in as each sender has per-mailbox setups"),
                _ if setup.cfg.impersonate_sender => {
                    println!(
                        "  {prefix}upstream check: skipped; the service account logs in as \
                         each sender: add --as ADDRESS (one of {}) to try one",
                        account_senders(cfg, &name)
                    );
                    continue;
                }
                _ => setup,
            };
            let upstream = delivery::Upstream::new(setup, observe::Metrics::new());
            match upstream.check_login().await {
                Ok(done) => println!("  {prefix}upstream check: {done}"),
                Err(pause) if !several => anyhow::bail!("{pause}"),
                Err(pause) => {
                    failed += 1;
                    eprintln!("gmail-relay: {prefix}{pause}");
                }
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} account(s) could not log in (see above)");
        }
        if cluster_failed {
            anyhow::bail!("the Redis the replicas share ([cluster]) cannot be reached (see above)");
        }
        Ok(())
    };
    super::with_runtime(login)
}

/// The `senders` of account `name`, for messages.
fn account_senders(cfg: &config::Config, name: &str) -> String {
    cfg.accounts
        .iter()
        .find(|a| a.name() == name)
        .map(|a| {
            a.senders
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn serve(path: &Path) -> ExitCode {
    let prepared = match load(path, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
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
