//! The relay's metrics, in Prometheus/OpenMetrics form (prometheus-client), every series
//! prefixed `gmail_relay_`.
//!
//! Counters are incremented where things happen (intake commit, delivery attempt, upstream
//! login). State that already lives somewhere (queue depth, pause, send budget) is not
//! duplicated: the gauges are set from the scheduler's status just before each scrape.
//!
//! What belongs to an account (its logins and transactions, the outcomes of the mail it sent,
//! its pause and its budget) carries an `account` label.
//!
//! One [`Metrics`] per relay, passed to the parts that count; there is no global registry, so
//! several relays in one process (the tests) keep their own numbers.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Labels = [(&'static str, &'static str); 1];
/// `account` and one more label.
type AccountLabels = Vec<(&'static str, String)>;

fn of(account: &str, more: &[(&'static str, &str)]) -> AccountLabels {
    let mut labels = vec![("account", account.to_owned())];
    labels.extend(more.iter().map(|&(k, v)| (k, v.to_owned())));
    labels
}

/// The relay's counters and gauges. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    received: Counter,
    delivered: Family<AccountLabels, Counter>,
    deferred: Family<AccountLabels, Counter>,
    failed: Family<AccountLabels, Counter>,
    recipients: Family<AccountLabels, Counter>,
    logins: Family<AccountLabels, Counter>,
    transactions: Family<AccountLabels, Counter>,
    latency: Histogram,
    queue: Family<Labels, Gauge>,
    oldest: Gauge<f64, AtomicU64>,
    paused: Family<AccountLabels, Gauge>,
    budget: Family<AccountLabels, Gauge>,
    cluster_up: Gauge,
    cluster_fallbacks: Counter,
    registry: Registry,
}

/// What the scrape reports about state owned elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Messages waiting for their time.
    pub waiting: usize,
    /// Messages being attempted.
    pub active: usize,
    /// Messages held by the operator.
    pub held: usize,
    /// Messages in the failed area.
    pub failed: usize,
    /// When the oldest queued message arrived.
    pub oldest: Option<SystemTime>,
    /// Each account's pause and budget.
    pub accounts: Vec<AccountSnapshot>,
}

/// One account's state at a scrape.
#[derive(Debug, Clone, Default)]
pub struct AccountSnapshot {
    /// The account's name.
    pub name: String,
    /// The cause of its pause ("unreachable", "tls", "credentials", "quota").
    pub pause: Option<String>,
    /// Recipients left in its send budget's minute and day windows (when limited).
    pub budget_minute: Option<u32>,
    /// See `budget_minute`.
    pub budget_day: Option<u32>,
}

/// The causes a pause can have, each with its own series.
const CAUSES: [&str; 6] = [
    "unreachable",
    "tls",
    "credentials",
    "quota",
    "rate",
    "budget",
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gmail_relay");
        let received = Counter::default();
        let delivered = Family::<AccountLabels, Counter>::default();
        let deferred = Family::<AccountLabels, Counter>::default();
        let failed = Family::<AccountLabels, Counter>::default();
        let recipients = Family::<AccountLabels, Counter>::default();
        let logins = Family::<AccountLabels, Counter>::default();
        let transactions = Family::<AccountLabels, Counter>::default();
        // 10 ms to about 2.8 hours: a warm delivery to a queue that waited through a pause.
        let latency = Histogram::new(exponential_buckets(0.01, 4.0, 11));
        let queue = Family::<Labels, Gauge>::default();
        let oldest = Gauge::<f64, AtomicU64>::default();
        let paused = Family::<AccountLabels, Gauge>::default();
        let budget = Family::<AccountLabels, Gauge>::default();
        let cluster_up = Gauge::default();
        let cluster_fallbacks = Counter::default();
        registry.register(
            "messages_received",
            "Messages acknowledged with 250 and queued",
            received.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages the upstream accepted for every recipient, removed from the queue, by account",
            delivered.clone(),
        );
        registry.register(
            "messages_deferred",
            "Attempts that left a message queued for a later try, by account",
            deferred.clone(),
        );
        registry.register(
            "messages_failed",
            "Messages moved to the failed area, by account",
            failed.clone(),
        );
        registry.register(
            "recipients",
            "Recipient outcomes of delivery attempts, by sending account and outcome",
            recipients.clone(),
        );
        registry.register(
            "upstream_logins",
            "Logins to the upstream, by account and result (ok, refused)",
            logins.clone(),
        );
        registry.register(
            "upstream_transactions",
            "Mail transactions sent upstream, by account and transport: smtp (connection new or \
             reused) or api (http version)",
            transactions.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "From acknowledgement to the upstream's acceptance",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in the spool, by state (waiting, active, held, failed)",
            queue.clone(),
        );
        registry.register_with_unit(
            "oldest_message_age",
            "Age of the oldest queued message (0 when the queue is empty)",
            Unit::Seconds,
            oldest.clone(),
        );
        registry.register(
            "delivery_paused",
            "1 while the account is paused for this cause (unreachable, tls, credentials, quota, rate, budget)",
            paused.clone(),
        );
        registry.register(
            "send_budget_remaining",
            "Recipients the account may still send in the window (minute, day), when limited",
            budget.clone(),
        );
        registry.register(
            "cluster_redis_up",
            "1 while the Redis the replicas share ([cluster]) answers, 0 while this replica sends \
             within its own share",
            cluster_up.clone(),
        );
        registry.register(
            "cluster_redis_losses",
            "Times this replica lost Redis and fell back to its share of the budgets",
            cluster_fallbacks.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                received,
                delivered,
                deferred,
                failed,
                recipients,
                logins,
                transactions,
                latency,
                queue,
                oldest,
                paused,
                budget,
                cluster_up,
                cluster_fallbacks,
                registry,
            }),
        }
    }

    /// A message was acknowledged.
    pub fn received(&self) {
        self.inner.received.inc();
    }

    /// A message of `account` left the queue delivered to every recipient.
    pub fn delivered(&self, account: &str) {
        self.inner.delivered.get_or_create(&of(account, &[])).inc();
    }

    /// An attempt left a message of `account` for later.
    pub fn deferred(&self, account: &str) {
        self.inner.deferred.get_or_create(&of(account, &[])).inc();
    }

    /// A message of `account` moved to the failed area.
    pub fn failed(&self, account: &str) {
        self.inner.failed.get_or_create(&of(account, &[])).inc();
    }

    /// Recipient outcomes of one attempt sent through `account`.
    pub fn recipients(&self, account: &str, delivered: u64, deferred: u64, failed: u64) {
        for (outcome, n) in [
            ("delivered", delivered),
            ("deferred", deferred),
            ("failed", failed),
        ] {
            if n > 0 {
                self.inner
                    .recipients
                    .get_or_create(&of(account, &[("outcome", outcome)]))
                    .inc_by(n);
            }
        }
    }

    /// A login to the upstream as `account` succeeded (`true`) or was refused.
    pub fn login(&self, account: &str, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.inner
            .logins
            .get_or_create(&of(account, &[("result", result)]))
            .inc();
    }

    /// An SMTP transaction went upstream through `account` on a new or a reused connection.
    pub fn transaction(&self, account: &str, reused: bool) {
        let connection = if reused { "reused" } else { "new" };
        self.inner
            .transactions
            .get_or_create(&of(
                account,
                &[("transport", "smtp"), ("connection", connection)],
            ))
            .inc();
    }

    /// A Gmail API upload through `account` got an answer, over `http` ("HTTP/2", "HTTP/1.1").
    pub fn api_request(&self, account: &str, http: &str) {
        self.inner
            .transactions
            .get_or_create(&of(account, &[("transport", "api"), ("http", http)]))
            .inc();
    }

    /// Whether the cluster's Redis answers.
    pub fn cluster_up(&self, up: bool) {
        self.inner.cluster_up.set(i64::from(up));
    }

    /// The replica lost Redis.
    pub fn cluster_fallback(&self) {
        self.inner.cluster_fallbacks.inc();
    }

    /// The upstream accepted a message `waited` after it was acknowledged.
    pub fn latency(&self, waited: Duration) {
        self.inner.latency.observe(waited.as_secs_f64());
    }

    /// The exposition text, with the gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot, now: SystemTime) -> String {
        let i = &self.inner;
        for (state, n) in [
            ("waiting", snapshot.waiting),
            ("active", snapshot.active),
            ("held", snapshot.held),
            ("failed", snapshot.failed),
        ] {
            i.queue.get_or_create(&[("state", state)]).set(n as i64);
        }
        let age = snapshot
            .oldest
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        i.oldest.set(age.as_secs_f64());
        // Accounts a reload removed keep no series.
        i.paused.clear();
        i.budget.clear();
        for a in &snapshot.accounts {
            for cause in CAUSES {
                let on = a.pause.as_deref() == Some(cause);
                i.paused
                    .get_or_create(&of(&a.name, &[("cause", cause)]))
                    .set(on.into());
            }
            for (window, left) in [("minute", a.budget_minute), ("day", a.budget_day)] {
                if let Some(left) = left {
                    i.budget
                        .get_or_create(&of(&a.name, &[("window", window)]))
                        .set(left.into());
                }
            }
        }
        let mut text = String::new();
        encode(&mut text, &i.registry).expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_prefixed_and_the_gauges_follow_the_snapshot() {
        let m = Metrics::new();
        m.received();
        m.recipients("default", 2, 1, 0);
        m.login("default", true);
        m.login("billing", false);
        m.transaction("default", true);
        m.latency(Duration::from_millis(30));
        let now = SystemTime::now();
        let text = m.encode(
            &Snapshot {
                waiting: 3,
                held: 1,
                oldest: Some(now - Duration::from_secs(90)),
                accounts: vec![
                    AccountSnapshot {
                        name: "default".into(),
                        pause: Some("quota".into()),
                        budget_day: Some(1500),
                        ..AccountSnapshot::default()
                    },
                    AccountSnapshot {
                        name: "billing".into(),
                        ..AccountSnapshot::default()
                    },
                ],
                ..Snapshot::default()
            },
            now,
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gmail_relay_"), "{line}");
        }
        for want in [
            "gmail_relay_messages_received_total 1",
            "gmail_relay_recipients_total{account=\"default\",outcome=\"delivered\"} 2",
            "gmail_relay_upstream_logins_total{account=\"default\",result=\"ok\"} 1",
            "gmail_relay_upstream_logins_total{account=\"billing\",result=\"refused\"} 1",
            "gmail_relay_upstream_transactions_total{account=\"default\",transport=\"smtp\",connection=\"reused\"} 1",
            "gmail_relay_delivery_latency_seconds_count 1",
            "gmail_relay_queue_messages{state=\"waiting\"} 3",
            "gmail_relay_queue_messages{state=\"held\"} 1",
            "gmail_relay_oldest_message_age_seconds 90",
            "gmail_relay_delivery_paused{account=\"default\",cause=\"quota\"} 1",
            "gmail_relay_delivery_paused{account=\"default\",cause=\"credentials\"} 0",
            "gmail_relay_delivery_paused{account=\"billing\",cause=\"quota\"} 0",
            "gmail_relay_send_budget_remaining{account=\"default\",window=\"day\"} 1500",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
