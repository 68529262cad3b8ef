//! The retry schedule: exponential backoff with jitter, bounded by `queue.retry_min` and
//! `queue.retry_max`, the maximum age after which a message is given up on, and how long each
//! kind of pause lasts.
//!
//! Pure functions of (attempt count, random number): unit-tested without clocks.

use std::time::{Duration, SystemTime};

use crate::config::{DeliveryConfig, QueueConfig};
use crate::delivery::PauseKind;

/// `queue.retry_min`, `queue.retry_max`, `queue.max_age`, and the pause lengths of `[delivery]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Give up on messages older than this.
    pub max_age: Duration,
    /// First pause after a refused login; doubles up to `auth_pause_max`.
    pub auth_pause_min: Duration,
    /// Longest pause after refused logins.
    pub auth_pause_max: Duration,
    /// Pause while the sending quota is spent.
    pub quota_pause: Duration,
}

impl RetryPolicy {
    /// From the `[queue]` and `[delivery]` sections.
    pub fn new(queue: &QueueConfig, delivery: &DeliveryConfig) -> Self {
        RetryPolicy {
            min: queue.retry_min,
            max: queue.retry_max,
            max_age: queue.max_age,
            auth_pause_min: delivery.auth_pause_min,
            auth_pause_max: delivery.auth_pause_max,
            quota_pause: delivery.quota_pause,
        }
    }

    /// Delay before the next try after `failures` consecutive failures (≥ 1). `jitter` in
    /// [0, 1) spreads retries up to a quarter later, so messages deferred together do not all
    /// come back in the same second.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        backoff(self.min, self.max, failures, jitter)
    }

    /// How long delivery pauses after `failures` consecutive pauses (≥ 1) of this kind, when
    /// the upstream did not say: the retry schedule for an unreachable or rate-limiting upstream, `auth_pause_min` doubling to
    /// `auth_pause_max` for refused credentials, `quota_pause` between quota probes.
    pub fn pause(&self, kind: PauseKind, failures: u32, jitter: f64) -> Duration {
        match kind {
            PauseKind::Unreachable
            | PauseKind::Tls
            | PauseKind::RateLimited
            | PauseKind::Budget => self.delay(failures, jitter),
            PauseKind::Credentials => {
                backoff(self.auth_pause_min, self.auth_pause_max, failures, jitter)
            }
            PauseKind::Quota => self.quota_pause,
        }
    }

    /// When a message received at `received` should be given up on.
    pub fn expires(&self, received: SystemTime) -> SystemTime {
        received + self.max_age
    }
}

/// `min` doubling per failure up to `max`, plus up to a quarter of jitter, within [min, max].
fn backoff(min: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let base = min.checked_mul(1u32 << doublings).unwrap_or(max).min(max);
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
        .clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 86400),
            auth_pause_min: Duration::from_secs(60),
            auth_pause_max: Duration::from_secs(1800),
            quota_pause: Duration::from_secs(3600),
        }
    }

    #[test]
    fn pauses_by_kind() {
        let p = policy();
        let auth: Vec<u64> = (1..=7)
            .map(|n| p.pause(PauseKind::Credentials, n, 0.0).as_secs())
            .collect();
        assert_eq!(
            auth,
            [60, 120, 240, 480, 960, 1800, 1800],
            "1 minute up to 30 minutes"
        );
        assert_eq!(p.pause(PauseKind::Quota, 1, 0.9).as_secs(), 3600);
        assert_eq!(p.pause(PauseKind::Quota, 9, 0.0).as_secs(), 3600);
        assert_eq!(p.pause(PauseKind::Unreachable, 2, 0.0).as_secs(), 120);
    }

    #[test]
    fn doubles_from_min_to_max() {
        let p = policy();
        let secs: Vec<u64> = (1..=9).map(|n| p.delay(n, 0.0).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(p.delay(1000, 0.0).as_secs(), 3600, "no overflow");
        assert_eq!(p.delay(0, 0.0).as_secs(), 60);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy();
        for n in 1..12 {
            for j in [0.0, 0.3, 0.999] {
                let d = p.delay(n, j);
                assert!(d >= p.min && d <= p.max, "{n} {j} {d:?}");
            }
        }
        assert_eq!(p.delay(1, 0.999).as_secs(), 74);
        assert_eq!(p.delay(12, 0.999).as_secs(), 3600);
    }
}
