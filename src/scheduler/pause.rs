//! The pause of one upstream: when delivery through it stops, when it is probed again, and
//! what a probe that fails does to the schedule.
//!
//! States: running → paused (until a time; nothing is attempted) → probing (one attempt at a
//! time) → running again when an attempt gets an upstream session, or paused again, longer,
//! when the probe fails. How much longer depends on the cause and the number of pauses in a
//! row ([`super::RetryPolicy::pause`]).
//!
//! A probe the operator asks for (`queue retry`, or a reload that changed the credentials)
//! runs at once but does not count: if it fails, the automatic schedule stays as it was
//! (the next automatic probe at its old time, the backoff not doubled), so poking a relay
//! never makes it wait longer.

use std::time::SystemTime;

use tokio::time::Instant;

use super::RetryPolicy;
use super::commands::{PauseStatus, cause_name};
use crate::delivery::{Pause, PauseKind};

/// Why delivery stopped and until when.
#[derive(Debug, Clone)]
struct Paused {
    until: Instant,
    /// Pauses in a row (sets the backoff).
    failures: u32,
    kind: PauseKind,
    /// The upstream's words.
    reason: String,
    /// The automatic probe time a manual probe was brought forward from.
    automatic: Option<Instant>,
}

/// One upstream's pause state.
#[derive(Debug, Clone, Default)]
pub struct PauseState {
    current: Option<Paused>,
}

/// How an attempt schedules the next probe should it pause delivery (again): worked out when
/// it is dispatched, applied by the attempt to the time it records in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePlan {
    /// Back off: this would be pause number `n` in a row.
    Backoff(u32),
    /// A manual probe: keep the automatic schedule (`at`, after `failures` pauses).
    Keep {
        /// The automatic probe time.
        at: SystemTime,
        /// Pauses in a row so far.
        failures: u32,
    },
}

impl ProbePlan {
    /// When to probe next if the attempt pauses delivery for `kind` at `now`.
    pub fn next(
        &self,
        policy: &RetryPolicy,
        kind: PauseKind,
        now: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        match *self {
            ProbePlan::Backoff(n) => now + policy.pause(kind, n, jitter),
            ProbePlan::Keep { at, .. } if at > now => at,
            ProbePlan::Keep { failures, .. } => now + policy.pause(kind, failures.max(1), jitter),
        }
    }

    /// Pauses in a row once this attempt has paused delivery.
    fn failures(&self) -> u32 {
        match *self {
            ProbePlan::Backoff(n) => n,
            ProbePlan::Keep { failures, .. } => failures,
        }
    }
}

impl PauseState {
    /// How many attempts may start at `now`: none while paused, one to probe once the pause
    /// is over, `full` when running.
    pub fn capacity(&self, now: Instant, full: usize) -> usize {
        match &self.current {
            Some(p) if now < p.until => 0,
            Some(_) => 1,
            None => full,
        }
    }

    /// When the pause ends, if delivery is paused and that is still ahead.
    pub fn wake(&self, now: Instant) -> Option<Instant> {
        self.current
            .as_ref()
            .map(|p| p.until)
            .filter(|&until| now < until)
    }

    /// The plan for an attempt dispatched now.
    pub fn plan(&self, clock: &super::Clock) -> ProbePlan {
        match &self.current {
            None => ProbePlan::Backoff(1),
            Some(p) => match p.automatic {
                Some(at) => ProbePlan::Keep {
                    at: clock.at(at),
                    failures: p.failures,
                },
                None => ProbePlan::Backoff(p.failures + 1),
            },
        }
    }

    /// An attempt paused delivery: probe again at `until`. Returns true when this starts a
    /// pause or changes its cause (worth a log line), false when a probe failed again.
    pub fn pause(&mut self, pause: Pause, until: Instant, plan: ProbePlan) -> bool {
        let news = self.current.as_ref().is_none_or(|p| p.kind != pause.kind);
        self.current = Some(Paused {
            until,
            failures: plan.failures(),
            kind: pause.kind,
            reason: pause.reason,
            automatic: None,
        });
        news
    }

    /// An attempt got through: delivery runs again. Returns true if it was paused.
    pub fn resume(&mut self) -> bool {
        self.current.take().is_some()
    }

    /// Probe at once (the operator asked, or the credentials changed), keeping the automatic
    /// schedule in case the probe fails. Returns true if a probe was brought forward.
    pub fn probe_now(&mut self, now: Instant) -> bool {
        match &mut self.current {
            Some(p) if now < p.until => {
                p.automatic = Some(p.automatic.unwrap_or(p.until));
                p.until = now;
                true
            }
            _ => false,
        }
    }

    /// The cause, if paused.
    pub fn kind(&self) -> Option<PauseKind> {
        self.current.as_ref().map(|p| p.kind)
    }

    /// The pause as the queue commands show it.
    pub fn status(&self, clock: &super::Clock) -> Option<PauseStatus> {
        self.current.as_ref().map(|p| PauseStatus {
            account: String::new(),
            cause: cause_name(p.kind).to_owned(),
            reason: p.reason.clone(),
            next_probe: clock.at(p.until),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    fn unreachable() -> Pause {
        Pause::new(PauseKind::Unreachable, "connection refused")
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_manual_probe_keeps_the_automatic_schedule() {
        let clock = super::super::Clock::start();
        let mut state = PauseState::default();
        let t0 = Instant::now();
        // Two automatic failures: 60 s, then 120 s.
        let plan = state.plan(&clock);
        assert_eq!(plan, ProbePlan::Backoff(1));
        assert!(state.pause(unreachable(), t0 + Duration::from_secs(60), plan));
        tokio::time::advance(Duration::from_secs(60)).await;
        let plan = state.plan(&clock);
        assert_eq!(plan, ProbePlan::Backoff(2));
        let next = plan.next(&policy(), PauseKind::Unreachable, clock.now(), 0.0);
        assert_eq!(next, clock.now() + Duration::from_secs(120));
        assert!(!state.pause(unreachable(), clock.instant_of(next), plan));
        let automatic = state.wake(Instant::now()).unwrap();

        // The operator retries 10 s later: a probe at once...
        tokio::time::advance(Duration::from_secs(10)).await;
        state.probe_now(Instant::now());
        assert_eq!(state.capacity(Instant::now(), 4), 1);
        let plan = state.plan(&clock);
        // ... which fails: the next probe is still the automatic one, not 240 s from now.
        let next = plan.next(&policy(), PauseKind::Unreachable, clock.now(), 0.0);
        assert_eq!(clock.instant_of(next), automatic);
        state.pause(unreachable(), clock.instant_of(next), plan);
        assert_eq!(state.wake(Instant::now()), Some(automatic));
        assert_eq!(
            state.plan(&clock),
            ProbePlan::Backoff(3),
            "the automatic probe after it doubles as before"
        );
        assert!(state.resume());
        assert_eq!(state.capacity(Instant::now(), 4), 4);
    }
}
