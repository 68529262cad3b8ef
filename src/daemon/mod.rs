//! The daemon: start-up order, live reconfiguration and ordered shutdown. It wires the modules
//! together and knows nothing of SMTP.
//!
//! Every configuration goes through [`prepare`] first (users, certificates, credentials, TLS
//! contexts; shared with `check`), so nothing below fails on a bad file.
//!
//! Start: prepare → lock and recover the spool → open the control
//! socket → start the scheduler (recovered messages are due at once or at their recorded time)
//! → bind and start the listeners → start the health/metrics endpoint → tell systemd we are
//! ready. A failure at any step stops before the next, so a relay that cannot queue never
//! accepts mail.
//!
//! Reload ([`Daemon::reload`], on SIGHUP): the new configuration's policy, users, limits,
//! timeouts, listener certificate, upstream credentials and settings, retry schedule, bounce
//! and rate limits take effect for new sessions and the next delivery attempts; queued mail and
//! open sessions are untouched. What needs a restart (addresses, the spool directory,
//! connection counts, logging) keeps its old value and is named in a warning.
//!
//! Shutdown: stop accepting; sessions finish their current command or message and get `421`;
//! the scheduler starts nothing new and waits for attempts in flight; all of this within a grace
//! period; then idle upstream connections are closed with QUIT. Anything cut off by the grace
//! period is safe: every acknowledged message is on disk and is sent after the next start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod prepare;

pub use prepare::{PrepareError, Prepared, prepare};

use crate::cluster::{Cluster, SharedAccount, SharedCourier};
use crate::config::Config;
use crate::control;
use crate::delivery::{Rewrite, Upstreams};
use crate::intake::{self, Intake};
use crate::observe::http::{AccountHealth, PauseInfo, Probe, State};
use crate::observe::{AccountSnapshot, Metrics, Snapshot};
use crate::scheduler::{self, RetryPolicy};
use crate::spool::{Area, Spool, SpoolError};

/// How long shutdown waits for sessions and deliveries in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file the configuration names is unusable.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The spool could not be opened, locked or recovered.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] control::BindError),
    /// The cluster's Redis settings are unusable.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}{}", bind_hint(*addr, source))]
    Bind {
        /// The config key naming the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a new configuration was not put in force (the running one stays).
pub type ReloadError = PrepareError;

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
    metrics_addr: Option<SocketAddr>,
    spool_dir: PathBuf,
    /// What a reload changes.
    live: Option<Live>,
}

/// The parts a reload reconfigures, and the configuration in force.
struct Live {
    config: Mutex<Config>,
    intake: Intake,
    upstreams: Upstreams,
    scheduler: scheduler::Handle,
    metrics: Metrics,
    cluster: Option<Cluster>,
}

/// The accounts as the cluster shares them: by username (or name and host), with their
/// budgets.
fn shared_accounts(config: &Config) -> Vec<SharedAccount> {
    config
        .accounts
        .iter()
        .map(|a| SharedAccount {
            name: a.name().to_owned(),
            key: if a.upstream.username.is_empty() {
                format!("{}@{}", a.name(), a.upstream.host)
            } else {
                a.upstream.username.to_lowercase()
            },
            per_minute: a.max_per_minute,
            per_day: a.max_per_day,
        })
        .collect()
}

/// The scheduler's settings from a configuration.
fn scheduler_settings(config: &Config, metrics: &Metrics) -> scheduler::Settings {
    scheduler::Settings {
        policy: RetryPolicy::new(&config.queue, &config.delivery),
        hold: config.delivery.hold,
        bounce: config.delivery.bounce.clone(),
        hostname: config.listen.hostname.clone(),
        accounts: config
            .accounts
            .iter()
            .map(|a| scheduler::AccountSettings {
                name: a.name().to_owned(),
                label: a.upstream.label(),
                concurrency: a.upstream.max_connections,
                max_per_minute: a.max_per_minute,
                max_per_day: a.max_per_day,
                failover: a.failover.clone(),
                rewrite: Rewrite::new(a.rewrite, &a.upstream.username),
                per_sender: a.upstream.impersonate_sender,
            })
            .collect(),
        metrics: metrics.clone(),
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

impl Daemon {
    /// Prepares `config` and starts the relay (see the module header for the order).
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        Daemon::start_prepared(prepare(config)?).await
    }

    /// Starts the relay with a configuration already prepared.
    pub async fn start_prepared(prepared: Prepared) -> Result<Daemon, StartError> {
        let Prepared {
            config,
            listen,
            upstreams,
        } = prepared;
        let metrics = Metrics::new();
        let upstreams = Upstreams::new(upstreams, metrics.clone());
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
        let cluster = match &config.cluster {
            Some(c) => {
                let policy = RetryPolicy::new(&config.queue, &config.delivery);
                let cluster = Cluster::new(c, policy, metrics.clone())?;
                let records =
                    scheduler::budget::Records::parse(opened.spool.load_budget().await.as_deref());
                let sent = config
                    .accounts
                    .iter()
                    .map(|a| (a.name().to_owned(), records.sends(a.name())))
                    .collect();
                cluster.set_accounts(shared_accounts(&config), &sent);
                tracing::info!(
                    redis = %c.redis_url,
                    replicas = c.replicas,
                    replica = %c.replica,
                    "sharing the accounts' budgets and pauses with the other replicas"
                );
                Some(cluster)
            }
            None => None,
        };

        let close_upstream = CancellationToken::new();
        let mut daemon = Daemon {
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            maintenance: tokio::spawn({
                let upstreams = upstreams.clone();
                let token = close_upstream.clone();
                async move { upstreams.maintain(token).await }
            }),
            close_upstream,
            addrs: Vec::new(),
            metrics_addr: None,
            spool_dir: config.queue.dir.clone(),
            live: None,
        };

        if let Some(cluster) = &cluster {
            let (cluster, stop) = (cluster.clone(), daemon.stop.clone());
            daemon
                .tracker
                .spawn(async move { cluster.maintain(stop).await });
        }
        let (scheduler, commands) = scheduler::Handle::new();
        daemon.tracker.spawn(scheduler::run(
            opened.spool.clone(),
            SharedCourier::new(upstreams.clone(), cluster.clone()),
            scheduler_settings(&config, &metrics),
            opened.recovered,
            opened.committed,
            commands,
            daemon.stop.clone(),
        ));
        daemon.tracker.spawn(control::serve(
            control,
            control::Operator::live(opened.spool.clone(), scheduler.clone()),
            daemon.stop.clone(),
            daemon.tracker.clone(),
        ));

        match daemon
            .open(&config, &listen, &opened.spool, &metrics, &scheduler)
            .await
        {
            Ok(intake) => {
                daemon.live = Some(Live {
                    config: Mutex::new(config.clone()),
                    intake,
                    upstreams,
                    scheduler,
                    metrics,
                    cluster,
                });
            }
            Err(e) => {
                daemon.shutdown(Duration::from_secs(5)).await;
                return Err(e);
            }
        }

        if config.listen.danger_allow_any_network {
            tracing::warn!(
                exposure = %config.listen.exposure(),
                "listen.danger_allow_any_network is set: any address that can reach the \
                 listeners can send mail as your Gmail account"
            );
        }
        tracing::info!(
            listen = ?daemon.addrs,
            exposure = %config.listen.exposure(),
            allowed_networks = ?config.listen.allowed_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            accounts = %config
                .accounts
                .iter()
                .map(|a| format!(
                    "{} ({} via {})",
                    a.name(),
                    a.upstream.label(),
                    a.upstream.destination()
                ))
                .collect::<Vec<_>>()
                .join(", "),
            hold = config.delivery.hold,
            metrics = ?daemon.metrics_addr,
            "gmail-relay ready"
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Ok(daemon)
    }

    /// Binds and starts the listeners and the metrics endpoint.
    async fn open(
        &mut self,
        config: &Config,
        listen: &intake::Setup,
        spool: &Spool,
        metrics: &Metrics,
        scheduler: &scheduler::Handle,
    ) -> Result<Intake, StartError> {
        let mut listeners = Vec::new();
        for spec in config.listen.listeners() {
            let listener = bind("listen", spec.addr).await?;
            self.addrs.push(listener.local_addr().unwrap_or(spec.addr));
            listeners.push((listener, spec.kind));
        }
        let metrics_listener = match config.metrics.addr {
            Some(addr) => {
                let l = bind("metrics.addr", addr).await?;
                self.metrics_addr = Some(l.local_addr().unwrap_or(addr));
                Some(l)
            }
            None => None,
        };
        let intake = intake::start(
            listeners,
            listen,
            spool.clone(),
            metrics.clone(),
            &self.stop,
            &self.tracker,
        );
        if let Some(listener) = metrics_listener {
            if !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                tracing::warn!(
                    addr = ?self.metrics_addr,
                    "metrics.addr is not a loopback address: anyone who can reach it sees the \
                     queue's size and the relay's state (no mail content, no credentials)"
                );
            }
            let probe = RelayProbe {
                scheduler: scheduler.clone(),
                spool: spool.clone(),
            };
            self.tracker.spawn(crate::observe::http::serve(
                listener,
                metrics.clone(),
                probe,
                self.stop.clone(),
                self.tracker.clone(),
            ));
        }
        Ok(intake)
    }

    /// The addresses actually bound (useful with port 0), in the order of `listen.addrs`,
    /// `listen.no_starttls_addrs`, `listen.implicit_tls_addrs`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address of the health and metrics endpoint, if `metrics.addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    /// Puts `new` in force (see the module header). Returns the settings that changed but
    /// need a restart to take effect. On error nothing has changed.
    pub fn reload(&self, new: Config) -> Result<Vec<&'static str>, ReloadError> {
        let live = self.live.as_ref().expect("a started daemon is live");
        // Everything that can fail is done before anything changes.
        let Prepared {
            config: new,
            listen,
            upstreams,
        } = prepare(new)?;
        live.intake.reconfigure(&listen);
        // A pause may be over once an account's settings or credentials change: those are
        // probed now rather than at the end of a backoff of up to half an hour.
        let changed = live.upstreams.reconfigure(upstreams);
        if let Some(cluster) = &live.cluster {
            cluster.set_accounts(shared_accounts(&new), &Default::default());
        }
        live.scheduler
            .reload(scheduler_settings(&new, &live.metrics), changed);
        let mut old = live.config.lock().expect("config lock");
        let restart = needs_restart(&old, &new);
        *old = new;
        Ok(restart)
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

/// The keys whose new values wait for a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key| {
        if changed {
            keys.push(key);
        }
    };
    check(
        old.listen.listeners() != new.listen.listeners(),
        "listen addresses",
    );
    check(
        old.listen.max_connections != new.listen.max_connections
            || old.listen.max_connections_per_client != new.listen.max_connections_per_client,
        "listen.max_connections(_per_client)",
    );
    check(old.queue.dir != new.queue.dir, "queue.dir");
    check(
        old.accounts.iter().any(|a| {
            new.account(a.name())
                .is_some_and(|b| b.upstream.max_connections != a.upstream.max_connections)
        }),
        "upstream.max_connections",
    );
    check(old.metrics != new.metrics, "metrics.addr");
    check(old.cluster != new.cluster, "cluster");
    check(
        old.log.level != new.log.level || old.log.format != new.log.format,
        "log",
    );
    keys
}

/// The health endpoint's view of the relay: the scheduler's status and the failed area.
struct RelayProbe {
    scheduler: scheduler::Handle,
    spool: Spool,
}

impl Probe for RelayProbe {
    async fn state(&self) -> Option<State> {
        let status = self.scheduler.status().await?;
        let failed = self
            .spool
            .list(Area::Failed)
            .await
            .map_or(0, |ids| ids.len());
        let pause_info = |p: &scheduler::PauseStatus| PauseInfo {
            account: p.account.clone(),
            cause: p.cause.clone(),
            reason: p.reason.clone(),
            next_probe: humantime::format_rfc3339_seconds(p.next_probe).to_string(),
        };
        Some(State {
            snapshot: Snapshot {
                waiting: status.scheduled,
                active: status.active.len(),
                held: status.held,
                failed,
                oldest: status.oldest.map(|id| id.time()),
                accounts: status
                    .accounts
                    .iter()
                    .map(|a| AccountSnapshot {
                        name: a.name.clone(),
                        pause: a.pause.as_ref().map(|p| p.cause.clone()),
                        budget_minute: a.budget_minute,
                        budget_day: a.budget_day,
                    })
                    .collect(),
            },
            pause: status.pause.as_ref().map(pause_info),
            accounts: status
                .accounts
                .iter()
                .map(|a| AccountHealth {
                    name: a.name.clone(),
                    label: a.label.clone(),
                    pause: a.pause.as_ref().map(pause_info),
                })
                .collect(),
            missing: status.missing.clone(),
            hold: status.on_hold,
        })
    }
}

/// What the binary tells a running relay.
#[derive(Debug)]
pub enum Signal {
    /// Put this configuration in force (SIGHUP, after it loaded and validated).
    Reload(Box<Config>),
    /// Stop (SIGTERM, SIGINT).
    Shutdown,
}

/// Runs the relay until a [`Signal::Shutdown`] arrives (or the sender is dropped), applying
/// reloads meanwhile, then stops it within [`SHUTDOWN_GRACE`].
pub async fn run(
    prepared: Prepared,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<(), StartError> {
    let daemon = Daemon::start_prepared(prepared).await?;
    while let Some(Signal::Reload(new)) = signals.recv().await {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match daemon.reload(*new) {
            Ok(restart) if restart.is_empty() => tracing::info!("configuration reloaded"),
            Ok(restart) => tracing::warn!(
                needs_restart = ?restart,
                "configuration reloaded; these settings keep their old values until a restart"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "configuration not reloaded; the running configuration stays in force"
            ),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    tracing::info!("shutting down");
    daemon.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("stopped");
    Ok(())
}
