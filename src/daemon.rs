//! The daemon: start-up order and ordered shutdown. It wires the modules together and knows
//! nothing of SMTP.
//!
//! Start: check the upstream TLS settings → lock and recover the spool → start the scheduler
//! (recovered messages are due at once or at their recorded time) → bind and start the
//! listeners → tell systemd we are ready. A failure at any step stops before the next, so a
//! relay that cannot queue never accepts mail.
//!
//! Shutdown: stop accepting; sessions finish their current command or message and get `421`;
//! the scheduler starts nothing new and waits for attempts in flight; all of this within a grace
//! period; then idle upstream connections are closed with QUIT. Anything cut off by the grace
//! period is safe: every acknowledged message is on disk and is sent after the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control;
use crate::delivery::{TlsSetupError, Upstream};
use crate::intake;
use crate::scheduler::{self, RetryPolicy};
use crate::spool::{Spool, SpoolError};

/// How long shutdown waits for sessions and deliveries in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The spool could not be opened, locked or recovered.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] control::BindError),
    /// The listener certificate or key is unusable.
    #[error(transparent)]
    ListenTls(#[from] intake::ListenTlsError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} (listen): {source}{}", bind_hint(*addr, source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE (the systemd unit grants it)"
        }
        std::io::ErrorKind::AddrInUse => {
            "; another program (a local Postfix?) already listens there"
        }
        _ => "",
    }
}

/// A running relay.
pub struct Daemon {
    stop: CancellationToken,
    tracker: TaskTracker,
    close_upstream: CancellationToken,
    maintenance: tokio::task::JoinHandle<()>,
    addrs: Vec<SocketAddr>,
    spool_dir: PathBuf,
}

impl Daemon {
    /// Starts the relay (see the module header for the order).
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let upstream = Upstream::new(config.upstream.clone())?;
        let dir = config.queue.dir.clone();
        let opened = tokio::task::spawn_blocking(move || Spool::open(&dir))
            .await
            .expect("spool open does not panic")?;
        tracing::info!(
            spool = %config.queue.dir.display(),
            queued = opened.recovered.len(),
            "spool open"
        );

        let control = control::bind(&config.queue.dir)?;

        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let close_upstream = CancellationToken::new();
        let maintenance = tokio::spawn({
            let upstream = upstream.clone();
            let token = close_upstream.clone();
            async move { upstream.maintain(token).await }
        });

        let settings = scheduler::Settings {
            policy: RetryPolicy::new(&config.queue, &config.delivery),
            concurrency: upstream.max_connections(),
            hold: config.delivery.hold,
            bounce: config.delivery.bounce.clone(),
            hostname: config.listen.hostname.clone(),
            max_per_minute: config.delivery.max_per_minute,
            max_per_day: config.delivery.max_per_day,
            rewrite: config.rewrite.clone(),
        };
        let (scheduler, commands) = scheduler::Handle::new();
        tracker.spawn(scheduler::run(
            opened.spool.clone(),
            upstream,
            settings,
            opened.recovered,
            opened.committed,
            commands,
            stop.clone(),
        ));
        tracker.spawn(control::serve(
            control,
            control::Operator::live(opened.spool.clone(), scheduler),
            stop.clone(),
            tracker.clone(),
        ));

        let specs = config.listen.listeners();
        let mut listeners = Vec::with_capacity(specs.len());
        let mut addrs = Vec::with_capacity(specs.len());
        for spec in specs {
            let addr = spec.addr;
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    let daemon = Daemon {
                        stop,
                        tracker,
                        close_upstream,
                        maintenance,
                        addrs,
                        spool_dir: config.queue.dir.clone(),
                    };
                    daemon.shutdown(Duration::from_secs(5)).await;
                    return Err(StartError::Bind { addr, source });
                }
            };
            addrs.push(listener.local_addr().unwrap_or(addr));
            listeners.push((listener, spec.kind));
        }
        if let Err(e) = intake::start(listeners, &config.listen, opened.spool, &stop, &tracker) {
            let daemon = Daemon {
                stop,
                tracker,
                close_upstream,
                maintenance,
                addrs,
                spool_dir: config.queue.dir.clone(),
            };
            daemon.shutdown(Duration::from_secs(5)).await;
            return Err(e.into());
        }

        if config.listen.danger_allow_any_network {
            tracing::warn!(
                exposure = %config.listen.exposure(),
                "listen.danger_allow_any_network is set: any address that can reach the \
                 listeners can send mail as your Gmail account"
            );
        }
        tracing::info!(
            listen = ?addrs,
            exposure = %config.listen.exposure(),
            allowed_networks = ?config.listen.allowed_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            upstream = %format!("{}:{}", config.upstream.host, config.upstream.port),
            tls = %config.upstream.tls,
            user = config.upstream.credentials.username(),
            hold = config.delivery.hold,
            "gmail-relay ready"
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Ok(Daemon {
            stop,
            tracker,
            close_upstream,
            maintenance,
            addrs,
            spool_dir: config.queue.dir,
        })
    }

    /// The addresses actually bound (useful with port 0), in the order of `listen.addrs`,
    /// `listen.no_starttls_addrs`, `listen.implicit_tls_addrs`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    /// Stops the relay. Returns `false` if sessions or deliveries were still running when
    /// `grace` ran out (they are abandoned; nothing acknowledged is lost).
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.stop.cancel();
        self.tracker.close();
        let clean = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !clean {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "shutdown grace period over; abandoning sessions and deliveries still running \
                 (queued mail is safe and is sent after the next start)"
            );
        }
        self.close_upstream.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.maintenance).await;
        clean
    }
}

/// Runs the relay until `shutdown` resolves, then stops it within [`SHUTDOWN_GRACE`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let daemon = Daemon::start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    daemon.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("stopped");
    Ok(())
}
