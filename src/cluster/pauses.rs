//! Shared pauses: publishing one this replica found (with its cause, Gmail's words, the
//! replica and when every replica probes), adopting one another replica found, and lifting it
//! when a probe gets through.
//!
//! Invariant: a stored pause always carries its probe time; the probe lock (in the admit
//! script) lets one replica at a time try it, and publishing a new pause releases that lock.

use super::*;

/// A shared pause, as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    cause: String,
    reason: String,
    until: u64,
    by: String,
    failures: u32,
}

/// The kinds of pause that are the account's, not the replica's: the ones published (a
/// network or TLS problem may be this replica's own).
pub(super) const SHARED: [PauseKind; 3] = [
    PauseKind::Credentials,
    PauseKind::Quota,
    PauseKind::RateLimited,
];

/// The kind a stored cause names (`scheduler::cause_name` wrote it).
fn kind_of(cause: &str) -> PauseKind {
    SHARED
        .into_iter()
        .find(|k| crate::scheduler::cause_name(*k) == cause)
        .unwrap_or(PauseKind::Credentials)
}

impl Cluster {
    /// The pause another replica published, as this replica's own.
    pub(super) fn adopt(&self, stored: &str, probing: Option<(SystemTime, &str)>) -> Pause {
        let Ok(p) = serde_json::from_str::<Stored>(stored) else {
            return Pause::new(PauseKind::Credentials, format!("a shared pause: {stored}"));
        };
        let (until, also) = match probing {
            Some((until, holder)) => (
                until.min(SystemTime::now() + PROBE_RECHECK),
                format!("; replica {holder} is probing it"),
            ),
            None => (at_ms(p.until), String::new()),
        };
        Pause {
            kind: kind_of(&p.cause),
            reason: format!("{} (found by replica {}{also})", p.reason, p.by),
            until: Some(until),
        }
    }

    /// Publishes `pause`, found by this replica on account `name`, for every replica. Returns
    /// it timed for the cluster (every replica probes at the same time).
    pub async fn publish(&self, name: &str, pause: Pause) -> Pause {
        let Some(account) = self.account(name) else {
            return pause;
        };
        let cause = crate::scheduler::cause_name(pause.kind);
        let key = self.key("pause", &account.key);
        let mut conn = self.inner.conn.clone();
        let previous: Result<Option<String>, _> =
            timed(redis::cmd("GET").arg(&key).query_async(&mut conn)).await;
        let previous = match previous {
            Ok(p) => p.and_then(|p| serde_json::from_str::<Stored>(&p).ok()),
            Err(e) => {
                self.unavailable(&e);
                return pause;
            }
        };
        let failures = previous
            .filter(|p| p.cause == cause)
            .map_or(1, |p| p.failures + 1);
        let now = SystemTime::now();
        let until = pause.until.filter(|u| *u > now).unwrap_or_else(|| {
            now + self
                .inner
                .policy
                .pause(pause.kind, failures, fastrand::f64())
        });
        let until_ms = until
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let stored = Stored {
            cause: cause.to_owned(),
            reason: pause.reason.clone(),
            until: until_ms,
            by: self.inner.replica.clone(),
            failures,
        };
        let json = serde_json::to_string(&stored).expect("serialisable");
        let written: Result<(), _> = timed(
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(until_ms.saturating_sub(now_ms()) + DAY_MS)
                .ignore()
                .cmd("DEL")
                .arg(self.key("probe", &account.key))
                .ignore()
                .query_async(&mut conn),
        )
        .await;
        if let Err(e) = written {
            self.unavailable(&e);
        }
        Pause {
            until: Some(until),
            ..pause
        }
    }

    /// An attempt through account `name` got through while its pause was shared: every
    /// replica may send again.
    pub async fn resume(&self, name: &str) {
        let Some(account) = self.account(name) else {
            return;
        };
        let mut conn = self.inner.conn.clone();
        let done: Result<(), _> = timed(
            redis::cmd("DEL")
                .arg(self.key("pause", &account.key))
                .arg(self.key("probe", &account.key))
                .query_async(&mut conn),
        )
        .await;
        if let Err(e) = done {
            self.unavailable(&e);
        }
    }
}
