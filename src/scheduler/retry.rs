//! The retry schedule: exponential backoff with jitter, bounded by `queue.retry_min` and
//! `queue.retry_max`, and the maximum age after which a message is given up on.
//!
//! Pure functions of (attempt count, random number): unit-tested without clocks.

use std::time::{Duration, SystemTime};

use crate::config::QueueConfig;

/// `queue.retry_min`, `queue.retry_max`, `queue.max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Give up on messages older than this.
    pub max_age: Duration,
}

impl RetryPolicy {
    /// From the `[queue]` section.
    pub fn new(cfg: &QueueConfig) -> Self {
        RetryPolicy {
            min: cfg.retry_min,
            max: cfg.retry_max,
            max_age: cfg.max_age,
        }
    }

    /// Delay before the next try after `failures` consecutive failures (≥ 1). `jitter` in
    /// [0, 1) spreads retries up to a quarter later, so messages deferred together do not all
    /// come back in the same second.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let base = self
            .min
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
            .clamp(self.min, self.max)
    }

    /// When a message received at `received` should be given up on.
    pub fn expires(&self, received: SystemTime) -> SystemTime {
        received + self.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 86400),
        }
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
