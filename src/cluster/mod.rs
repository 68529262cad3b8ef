//! Replicas that share their accounts' send budgets and pauses through Redis (`[cluster]`).
//!
//! What belongs to a Gmail account, not to a replica, is kept in Redis, keyed by the account's
//! username (or, for `auth = "none"` without one, its name and host), so replicas that name an
//! account differently still share it:
//!
//! - **The send budget** (`max_per_minute`, `max_per_day`): every attempt is admitted by one
//!   atomic script that counts the account's sends over the same rolling windows as the local
//!   budget and reserves the attempt's recipients, so two replicas can never both take the last
//!   unit; the reservation is settled into the recipients actually accepted afterwards.
//! - **The pause** (refused credentials, spent quota, a rate limit): a pause found by one
//!   replica is published with its cause, Gmail's words, its replica and when to probe; every
//!   replica then holds that account's mail until then, and only the replica that takes the
//!   probe lock probes. When its attempt gets through, the pause is deleted and every replica
//!   sends again.
//!
//! Nothing here keeps mail safe (the spool does, locally): when Redis cannot be reached (down at
//! start, lost, slow), the replica keeps accepting and delivering, but within its share of what
//! was left: (limit − the shared count it last saw) / `replicas` for each window, limit /
//! `replicas` when it never saw Redis. It logs one warning, sets `cluster_redis_up` to 0, and
//! when Redis answers again adds what it sent meanwhile to the shared count.
//!
//! Redis may lose its data (a restart without persistence). An epoch key tells: the first
//! replica to find it missing starts a new epoch, and every replica adds back its own sends of
//! the last 24 hours (kept in memory, seeded at start from `rate.json`) before it sends again,
//! and on its heartbeat when idle. Sending waits until every replica has done so, or for
//! [`GRACE`], so the shared count is
//! whole again before it is spent; what a replica that stays away longer sent before the loss
//! is the most the accounts can be overspent by.

mod courier;
mod link;
mod pauses;
mod scripts;

pub use courier::SharedCourier;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::delivery::{Pause, PauseKind};
use crate::observe::Metrics;
use crate::scheduler::RetryPolicy;
use crate::scheduler::budget::{Budget, Wait};

/// How long a probe lock lasts (longer than any attempt).
const PROBE_LOCK: Duration = Duration::from_secs(120);
/// While another replica probes, how soon to ask again (its probe may let everyone go).
const PROBE_RECHECK: Duration = Duration::from_secs(2);
/// How long sending waits after Redis started afresh for the other replicas to add back their
/// sends.
pub const GRACE: Duration = Duration::from_secs(15);
/// Any Redis operation slower than this counts as Redis being unavailable.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often the replica checks on Redis when idle (reconnect, catch up, the epoch).
const HEARTBEAT: Duration = Duration::from_secs(5);
const DAY_MS: u64 = 86_400_000;

/// Sends as (Unix ms, budget member).
type Sends = Vec<(u64, String)>;

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL, the password or the CA file is unusable.
    #[error("{key}: {reason}; fix it, or leave out [cluster] to run this relay on its own")]
    Setup {
        /// The key at fault (`cluster.redis_url`, `cluster.redis_password_file`,
        /// `cluster.ca_file`).
        key: &'static str,
        /// What is wrong, naming the URL or the file.
        reason: String,
    },
}

/// One account as the cluster shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAccount {
    /// The account's name in this replica's config.
    pub name: String,
    /// What replicas share it under: the username, lower-case (or `name@host`).
    pub key: String,
    /// Its budget.
    pub per_minute: Option<u32>,
    /// See `per_minute`.
    pub per_day: Option<u32>,
}

/// Whether an attempt may go.
#[derive(Debug)]
pub enum Admission {
    /// Yes, with this ticket to settle afterwards.
    Go(Ticket),
    /// No: hold the account's mail for this pause (its `until` says how long).
    Hold(Pause),
}

/// An admitted attempt.
#[derive(Debug)]
pub struct Ticket {
    key: String,
    /// The reservation in Redis; `None` when admitted from the local fallback share.
    member: Option<String>,
    nonce: String,
    /// This attempt probes a shared pause.
    pub probing: bool,
}

/// What one replica knows of a shared account.
#[derive(Default)]
struct KeyState {
    /// The shared counts (minute, day) last seen.
    seen: (u32, u32),
    /// This replica's own sends of the last day: (ms, member), to add back after a loss.
    history: VecDeque<(u64, String)>,
    /// The local share used while Redis cannot be reached.
    fallback: Option<Budget>,
    /// Sends made meanwhile, to add to the shared count when Redis is back.
    unsynced: Sends,
}

struct State {
    /// Accounts by name (a sender's own lane `ACCOUNT/mailbox` uses its account's settings and
    /// the mailbox as key).
    accounts: HashMap<String, SharedAccount>,
    keys: HashMap<String, KeyState>,
    /// Redis answered the last operation (`None` before the first).
    up: Option<bool>,
    /// The epoch this replica added its sends back under.
    epoch: Option<String>,
}

/// The shared state client. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    url: String,
    prefix: String,
    replica: String,
    replicas: u32,
    policy: RetryPolicy,
    metrics: Metrics,
    admit: redis::Script,
    settle: redis::Script,
    count: redis::Script,
    epoch: redis::Script,
    add: redis::Script,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The member's recipient count (its last `:` field).
fn count_of(member: &str) -> u32 {
    member
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Cluster {
    /// A client for `cfg`'s Redis (nothing is connected yet: a relay starts without Redis).
    /// `policy` times the shared pauses as the scheduler times local ones.
    pub fn new(
        cfg: &ClusterConfig,
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> Result<Cluster, ClusterError> {
        let err = |key, reason: String| ClusterError::Setup { key, reason };
        let url =
            |e: redis::RedisError| err("cluster.redis_url", format!("{}: {e}", cfg.redis_url));
        let mut info =
            redis::IntoConnectionInfo::into_connection_info(cfg.redis_url.as_str()).map_err(url)?;
        if let Some(source) = &cfg.password {
            // (The source names its file, or says it came inline.)
            let password = source
                .load()
                .map_err(|e| err("cluster.redis_password_file", e.to_string()))?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca_file {
            // Trust this CA alone (a private Redis), not the public roots.
            Some(path) => {
                let ca = |e: String| err("cluster.ca_file", format!("{}: {e}", path.display()));
                let pem = std::fs::read(path).map_err(|e| ca(format!("cannot read it: {e}")))?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs).map_err(|e| ca(e.to_string()))?
            }
            None => redis::Client::open(info).map_err(url)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(url)?;
        metrics.cluster_up(false);
        Ok(Cluster {
            inner: Arc::new(Inner {
                conn,
                url: cfg.redis_url.clone(),
                prefix: cfg.key_prefix.clone(),
                replica: cfg.replica.clone(),
                replicas: cfg.replicas,
                policy,
                metrics,
                admit: redis::Script::new(scripts::ADMIT),
                settle: redis::Script::new(scripts::SETTLE),
                count: redis::Script::new(scripts::COUNT),
                epoch: redis::Script::new(scripts::EPOCH),
                add: redis::Script::new(scripts::ADD),
                state: Mutex::new(State {
                    accounts: HashMap::new(),
                    keys: HashMap::new(),
                    up: None,
                    epoch: None,
                }),
            }),
        })
    }

    /// Puts these accounts in force (at start and on reload), with the sends this replica made
    /// recently (from `rate.json`: (Unix second, recipients)) for accounts it knows nothing of.
    pub fn set_accounts(
        &self,
        accounts: Vec<SharedAccount>,
        sent: &HashMap<String, Vec<(u64, u32)>>,
    ) {
        let mut state = self.inner.state.lock().expect("cluster state");
        for a in &accounts {
            let ks = state.keys.entry(a.key.clone()).or_default();
            if ks.history.is_empty()
                && let Some(sends) = sent.get(&a.name)
            {
                for (i, &(secs, n)) in sends.iter().enumerate() {
                    ks.history.push_back((
                        secs * 1000,
                        format!("s:{}:seed{secs}x{i}:{n}", self.inner.replica),
                    ));
                }
            }
        }
        state.accounts = accounts.into_iter().map(|a| (a.name.clone(), a)).collect();
    }

    fn account(&self, name: &str) -> Option<SharedAccount> {
        let state = self.inner.state.lock().expect("cluster state");
        if let Some(a) = state.accounts.get(name) {
            return Some(a.clone());
        }
        let (base, Some(mailbox)) = crate::config::split_lane(name) else {
            return None;
        };
        let a = state.accounts.get(base)?;
        Some(SharedAccount {
            name: name.to_owned(),
            key: mailbox.to_lowercase(),
            ..a.clone()
        })
    }

    /// The Redis key of `what` (`budget`, `total`, `pause`, `probe`) for the shared account
    /// `key`.
    fn key(&self, what: &str, key: &str) -> String {
        format!("{}:{what}:{key}", self.inner.prefix)
    }

    /// The Redis key of `what` (`epoch`, `reseeded`) for the whole fleet.
    fn fleet_key(&self, what: &str) -> String {
        format!("{}:{what}", self.inner.prefix)
    }

    /// Admits an attempt of `cost` recipients through account `name`.
    pub async fn admit(&self, name: &str, cost: u32) -> Admission {
        let Some(account) = self.account(name) else {
            return Admission::Go(Ticket {
                key: String::new(),
                member: None,
                nonce: nonce(),
                probing: false,
            });
        };
        for _ in 0..3 {
            match self.admit_shared(&account, cost).await {
                Ok(Some(admission)) => return admission,
                Ok(None) => continue, // reseeded: ask again
                Err(e) => {
                    self.unavailable(&e);
                    return self.admit_fallback(&account, cost);
                }
            }
        }
        self.admit_fallback(&account, cost)
    }

    /// One run of the admit script; `None` after adding this replica's sends back.
    async fn admit_shared(
        &self,
        account: &SharedAccount,
        cost: u32,
    ) -> Result<Option<Admission>, redis::RedisError> {
        let nonce = nonce();
        let member = format!("r:{}:{nonce}:{cost}", self.inner.replica);
        let limit = |l: Option<u32>| l.map_or(-1, i64::from);
        let mut conn = self.inner.conn.clone();
        let answer: Vec<String> = timed(
            self.inner
                .admit
                .key(self.key("budget", &account.key))
                .key(self.key("pause", &account.key))
                .key(self.key("probe", &account.key))
                .key(self.fleet_key("epoch"))
                .key(self.fleet_key("reseeded"))
                .key(self.key("total", &account.key))
                .arg(now_ms())
                .arg(limit(account.per_minute))
                .arg(limit(account.per_day))
                .arg(cost)
                .arg(&member)
                .arg(&self.inner.replica)
                .arg(PROBE_LOCK.as_millis() as u64)
                .arg(nonce.clone())
                .arg(GRACE.as_millis() as u64)
                .arg(self.inner.replicas)
                .invoke_async(&mut conn),
        )
        .await?;
        self.available().await;
        let field = |i: usize| answer.get(i).map(String::as_str).unwrap_or("");
        let epoch = field(1).to_owned();
        let ms = |i: usize| field(i).parse::<u64>().unwrap_or_else(|_| now_ms());
        let count = |i: usize| field(i).parse::<u32>().unwrap_or(0);
        match field(0) {
            "reseed" => {
                self.reseed(&epoch).await?;
                Ok(None)
            }
            "wait" => {
                let mut until = at_ms(ms(2));
                let reason = if field(3) == "epoch" {
                    // The others may be done sooner than the grace: ask again shortly.
                    until = until.min(SystemTime::now() + PROBE_RECHECK);
                    "held while Redis, which started afresh, gets the replicas' recent sends \
                     back (so the day's count is whole before more is sent)"
                        .to_owned()
                } else {
                    self.note_seen(&account.key, count(4), count(5));
                    format!(
                        "spent for {} across the replicas (max_per_minute {}, max_per_day {}; {} \
                         in the last minute, {} today)",
                        account.key,
                        show(account.per_minute),
                        show(account.per_day),
                        field(4),
                        field(5)
                    )
                };
                Ok(Some(Admission::Hold(Pause {
                    kind: PauseKind::Budget,
                    reason,
                    until: Some(until),
                })))
            }
            "paused" => Ok(Some(Admission::Hold(self.adopt(field(2), None)))),
            "probing" => Ok(Some(Admission::Hold(
                self.adopt(field(2), Some((at_ms(ms(3)), field(4)))),
            ))),
            _ => {
                self.note_seen(&account.key, count(3), count(4));
                Ok(Some(Admission::Go(Ticket {
                    key: account.key.clone(),
                    member: Some(member),
                    nonce,
                    probing: field(2) == "1",
                })))
            }
        }
    }

    /// Remembers the shared counts (minute, day) Redis last gave for `key`.
    fn note_seen(&self, key: &str, minute: u32, day: u32) {
        let mut state = self.inner.state.lock().expect("cluster state");
        state.keys.entry(key.to_owned()).or_default().seen = (minute, day);
    }

    /// Admits from the local share while Redis cannot be reached.
    fn admit_fallback(&self, account: &SharedAccount, cost: u32) -> Admission {
        let mut state = self.inner.state.lock().expect("cluster state");
        let replicas = self.inner.replicas;
        let ks = state.keys.entry(account.key.clone()).or_default();
        let seen = ks.seen;
        let share =
            |limit: Option<u32>, seen: u32| limit.map(|l| l.saturating_sub(seen) / replicas);
        let budget = ks.fallback.get_or_insert_with(|| {
            Budget::new(
                share(account.per_minute, seen.0),
                share(account.per_day, seen.1),
                None,
            )
        });
        let now = SystemTime::now();
        match budget.wait(now, 0, cost) {
            Wait::Until(until) => Admission::Hold(Pause {
                kind: PauseKind::Budget,
                reason: format!(
                    "this replica's share for {} is spent while Redis cannot be reached (what \
                     was left, divided by cluster.replicas = {replicas})",
                    account.key
                ),
                until: Some(until),
            }),
            Wait::Now | Wait::InFlight => {
                // Counted now, so concurrent attempts cannot exceed the share.
                budget.record(now, cost);
                Admission::Go(Ticket {
                    key: account.key.clone(),
                    member: None,
                    nonce: nonce(),
                    probing: false,
                })
            }
        }
    }

    /// The attempt of `ticket` ended with `delivered` recipients accepted.
    pub async fn settle(&self, ticket: Ticket, delivered: u32) {
        if ticket.key.is_empty() {
            return;
        }
        let sent = format!("s:{}:{}:{delivered}", self.inner.replica, ticket.nonce);
        let now = now_ms();
        if delivered > 0 {
            let mut state = self.inner.state.lock().expect("cluster state");
            let ks = state.keys.entry(ticket.key.clone()).or_default();
            ks.history.push_back((now, sent.clone()));
            while ks.history.front().is_some_and(|(at, _)| *at + DAY_MS < now) {
                ks.history.pop_front();
            }
        }
        let Some(member) = ticket.member else {
            if delivered > 0 {
                self.unsynced(&ticket.key, now, sent);
            }
            return;
        };
        let mut conn = self.inner.conn.clone();
        let settled: Result<i64, _> = timed(
            self.inner
                .settle
                .key(self.key("budget", &ticket.key))
                .key(self.key("total", &ticket.key))
                .arg(&member)
                .arg(&sent)
                .arg(delivered)
                .arg(now)
                .invoke_async(&mut conn),
        )
        .await;
        if let Err(e) = settled {
            self.unavailable(&e);
            if delivered > 0 {
                self.unsynced(&ticket.key, now, sent);
            }
        }
    }

    fn unsynced(&self, key: &str, at: u64, member: String) {
        let mut state = self.inner.state.lock().expect("cluster state");
        state
            .keys
            .entry(key.to_owned())
            .or_default()
            .unsynced
            .push((at, member));
    }
}

fn show(limit: Option<u32>) -> String {
    limit.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

/// A Redis operation within [`OP_TIMEOUT`] (the connection manager bounds each, this bounds a
/// reconnect too).
async fn timed<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(OP_TIMEOUT * 2, op).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer in time",
        ))),
    }
}
