//! Every account's upstream, by name: what the scheduler delivers through. Each account has
//! its own TLS context, credentials and pool of authenticated connections, so a refused login
//! or a spent quota on one never touches another's connections.
//!
//! A reload replaces the set: an account whose settings did not change keeps its pool (and its
//! OAuth2 token); a changed one is reconfigured (its idle connections closed); a new one is
//! added; a removed one closes its idle connections and is forgotten.
//!
//! An account whose service account logs in as each sender (`impersonate_sender`) has one
//! upstream per sender mailbox, named `ACCOUNT/mailbox`: made on first use (its own token,
//! connections, and so its own pause and budget in the scheduler) and dropped once it has been
//! idle for the account's `idle_timeout`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Outgoing, Pause, PauseKind, Report, Setup, Upstream};
use crate::observe::Metrics;

/// The accounts' upstreams. Cheap to clone; clones share the set.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<RwLock<BTreeMap<String, Upstream>>>,
    metrics: Metrics,
}

impl Upstreams {
    /// An upstream for each set-up (nothing is connected yet).
    pub fn new(setups: Vec<Setup>, metrics: Metrics) -> Upstreams {
        let map = setups
            .into_iter()
            .map(|s| (s.cfg.name.clone(), Upstream::new(s, metrics.clone())))
            .collect();
        Upstreams {
            inner: Arc::new(RwLock::new(map)),
            metrics,
        }
    }

    /// The upstream of `account`; for `ACCOUNT/mailbox`, of that sender's own mailbox, made
    /// now if it has none (when `ACCOUNT` logs in as each sender).
    pub fn get(&self, account: &str) -> Option<Upstream> {
        if let Some(upstream) = self.inner.read().expect("upstreams lock").get(account) {
            return Some(upstream.clone());
        }
        let (base, Some(mailbox)) = crate::config::split_lane(account) else {
            return None;
        };
        let mut map = self.inner.write().expect("upstreams lock");
        if let Some(upstream) = map.get(account) {
            return Some(upstream.clone());
        }
        let setup = map.get(base)?.setup().for_mailbox(mailbox, account)?;
        let upstream = Upstream::new(setup, self.metrics.clone());
        map.insert(account.to_owned(), upstream.clone());
        Some(upstream)
    }

    /// Every upstream, by account name.
    pub fn all(&self) -> Vec<Upstream> {
        self.inner
            .read()
            .expect("upstreams lock")
            .values()
            .cloned()
            .collect()
    }

    /// Puts a new set of accounts in force (see the module header). Returns the names of the
    /// accounts whose settings or credentials changed, so a pause of theirs can be probed.
    pub fn reconfigure(&self, setups: Vec<Setup>) -> Vec<String> {
        let mut changed = Vec::new();
        let mut map = self.inner.write().expect("upstreams lock");
        let mut next = BTreeMap::new();
        // Senders' own upstreams are made again from their account's new settings.
        let senders: Vec<String> = map
            .keys()
            .filter(|k| crate::config::split_lane(k).1.is_some())
            .cloned()
            .collect();
        for name in senders {
            if let Some(upstream) = map.remove(&name) {
                tokio::spawn(async move { upstream.close_all().await });
            }
        }
        for setup in setups {
            let name = setup.cfg.name.clone();
            match map.remove(&name) {
                Some(upstream) => {
                    if upstream.setup().differs_from(&setup) {
                        changed.push(name.clone());
                        upstream.reconfigure(setup);
                    }
                    next.insert(name, upstream);
                }
                None => {
                    next.insert(name, Upstream::new(setup, self.metrics.clone()));
                }
            }
        }
        for (_, removed) in std::mem::replace(&mut *map, next) {
            tokio::spawn(async move { removed.close_all().await });
        }
        changed
    }

    /// Tries to deliver `msg` to `recipients` through `account`.
    pub async fn deliver(
        &self,
        account: &str,
        msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> Report {
        match self.get(account) {
            Some(upstream) => upstream.deliver(msg, recipients).await,
            // The scheduler sends only through configured accounts; a reload may have removed
            // this one a moment ago.
            None => Report::paused(
                recipients.len(),
                Pause::new(
                    PauseKind::Unreachable,
                    format!("the account {account} is not configured"),
                ),
            ),
        }
    }

    /// Forgets the senders' own upstreams that have been idle for their `idle_timeout`.
    fn drop_idle_senders(&self) {
        let mut map = self.inner.write().expect("upstreams lock");
        map.retain(|name, upstream| {
            crate::config::split_lane(name).1.is_none()
                || !upstream.unused_for(upstream.setup().cfg.idle_timeout)
        });
    }

    /// Closes idle connections as they go stale, and all of them when `cancel` fires. Run it as
    /// a background task.
    pub async fn maintain(&self, cancel: CancellationToken) {
        loop {
            let period = self
                .all()
                .iter()
                .map(Upstream::maintenance_period)
                .min()
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = cancel.cancelled() => break,
            }
            for upstream in self.all() {
                upstream.close_stale().await;
            }
            self.drop_idle_senders();
        }
        for upstream in self.all() {
            upstream.close_all().await;
        }
    }
}
