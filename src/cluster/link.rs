//! The link to Redis: noticing it go and come back, adding the sends made meanwhile to the
//! shared count, adding this replica's recent sends back when Redis lost its data (a new
//! epoch), the heartbeat that does both when the replica is idle, and `check`'s probe.
//!
//! Invariant: `State::up` changes only here, and each change is logged once and mirrored in
//! the `cluster_redis_up` metric.

use super::*;

impl Cluster {
    /// Adds this replica's own sends of the last day back under `epoch` (Redis started
    /// afresh), and says so.
    pub(super) async fn reseed(&self, epoch: &str) -> Result<(), redis::RedisError> {
        let now = now_ms();
        let (sends, keys): (Vec<(String, Sends)>, usize) = {
            let state = self.inner.state.lock().expect("cluster state");
            let sends = state
                .keys
                .iter()
                .map(|(key, ks)| {
                    let recent = ks.history.iter().chain(&ks.unsynced);
                    let recent = recent.filter(|(at, _)| at + DAY_MS > now).cloned();
                    (key.clone(), recent.collect())
                })
                .collect();
            (sends, state.keys.len())
        };
        let mut count = 0;
        for (key, sends) in &sends {
            self.add_sends(key, sends).await?;
            count += sends.len();
        }
        let mut conn = self.inner.conn.clone();
        timed(
            redis::cmd("SADD")
                .arg(self.fleet_key("reseeded"))
                .arg(&self.inner.replica)
                .query_async::<()>(&mut conn),
        )
        .await?;
        let mut state = self.inner.state.lock().expect("cluster state");
        let first = state.epoch.is_none();
        state.epoch = Some(epoch.to_owned());
        for ks in state.keys.values_mut() {
            ks.unsynced.clear();
            ks.fallback = None;
        }
        if !first || count > 0 {
            tracing::warn!(
                epoch,
                sends = count,
                accounts = keys,
                "Redis holds no record of the replicas' recent sends (it started afresh, or \
                 lost its data); this replica added its own back"
            );
        }
        Ok(())
    }

    /// Redis answered: when it had not, add the sends made meanwhile to the shared count.
    pub(super) async fn available(&self) {
        let (was, catch_up): (_, Vec<(String, Sends)>) = {
            let mut state = self.inner.state.lock().expect("cluster state");
            let was = state.up.replace(true);
            if was == Some(true) {
                return;
            }
            let catch_up = state
                .keys
                .iter_mut()
                .map(|(k, ks)| {
                    ks.fallback = None;
                    (k.clone(), std::mem::take(&mut ks.unsynced))
                })
                .filter(|(_, u)| !u.is_empty())
                .collect();
            (was, catch_up)
        };
        self.inner.metrics.cluster_up(true);
        if catch_up.is_empty() {
            // (Redis refuses an empty pipeline.)
            if was == Some(false) {
                tracing::info!(
                    redis = %self.inner.url,
                    "Redis answers again: the shared budgets and pauses are back in force"
                );
            }
            return;
        }
        let mut count = 0;
        let mut added = Ok(());
        for (key, sends) in &catch_up {
            added = self.add_sends(key, sends).await;
            if added.is_err() {
                break;
            }
            count += sends.iter().map(|(_, m)| count_of(m)).sum::<u32>();
        }
        match added {
            Ok(()) => tracing::info!(
                redis = %self.inner.url,
                recipients = count,
                "Redis answers again: the shared budgets and pauses are back in force (the \
                 sends made meanwhile are counted)"
            ),
            Err(e) => {
                // Put them back for the next time.
                let mut state = self.inner.state.lock().expect("cluster state");
                for (key, sends) in catch_up {
                    state.keys.entry(key).or_default().unsynced.extend(sends);
                }
                drop(state);
                self.unavailable(&e);
            }
        }
    }

    pub(super) fn unavailable(&self, e: &redis::RedisError) {
        let was = self
            .inner
            .state
            .lock()
            .expect("cluster state")
            .up
            .replace(false);
        if was == Some(false) {
            return; // said once
        }
        self.inner.metrics.cluster_up(false);
        self.inner.metrics.cluster_fallback();
        {
            tracing::warn!(
                redis = %self.inner.url,
                error = %e,
                replicas = self.inner.replicas,
                "Redis cannot be reached: mail is still accepted and delivered, each account \
                 within this replica's share of its send budget (what was left, divided by \
                 cluster.replicas), and pauses are no longer shared until it is back"
            );
        }
    }

    /// Adds `sends` (this replica's, made while Redis could not count them or before it lost
    /// its data) to `key`'s shared budget; one already there is not counted twice.
    async fn add_sends(&self, key: &str, sends: &[(u64, String)]) -> Result<(), redis::RedisError> {
        // In slices, so that one call stays short for Redis's single thread.
        for slice in sends.chunks(500) {
            let mut invocation = self.inner.add.key(self.key("budget", key));
            invocation.key(self.key("total", key)).arg(now_ms());
            for (at, member) in slice {
                invocation.arg(*at).arg(member);
            }
            let mut conn = self.inner.conn.clone();
            timed(invocation.invoke_async::<u32>(&mut conn)).await?;
        }
        Ok(())
    }

    /// Checks on Redis every few seconds until `cancel`: reconnects, adds the sends made while
    /// it was away, and notices when it started afresh.
    pub async fn maintain(&self, cancel: CancellationToken) {
        loop {
            match self.join_epoch().await {
                Ok(()) => {
                    self.available().await;
                    self.refresh_counts().await;
                }
                Err(e) => self.unavailable(&e),
            }
            // While Redis is away, look sooner: the shared budget is the better one.
            let down = self.inner.state.lock().expect("cluster state").up == Some(false);
            let pause = if down { HEARTBEAT / 5 } else { HEARTBEAT };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Makes sure this replica's recent sends are in the current epoch's count: starts an
    /// epoch when Redis holds none (it started afresh, or lost its data) and adds them back
    /// when this replica has not yet. Done on every heartbeat, so an idle replica does its
    /// part at once rather than at its next attempt, and the others wait less.
    async fn join_epoch(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.inner.conn.clone();
        let (epoch, joined): (String, i64) = timed(
            self.inner
                .epoch
                .key(self.fleet_key("epoch"))
                .key(self.fleet_key("reseeded"))
                .arg(format!("{}:{}", nonce(), now_ms()))
                .arg(&self.inner.replica)
                .invoke_async(&mut conn),
        )
        .await?;
        if joined == 0 {
            self.reseed(&epoch).await?;
        }
        Ok(())
    }

    /// Reads every account's shared counts, so the share used if Redis goes away is of what
    /// was really left.
    async fn refresh_counts(&self) {
        let keys: Vec<String> = {
            let state = self.inner.state.lock().expect("cluster state");
            state
                .accounts
                .values()
                .filter(|a| a.per_minute.is_some() || a.per_day.is_some())
                .map(|a| a.key.clone())
                .collect()
        };
        for key in keys {
            let mut conn = self.inner.conn.clone();
            let counts: Result<(u32, u32), _> = timed(
                self.inner
                    .count
                    .key(self.key("budget", &key))
                    .key(self.key("total", &key))
                    .arg(now_ms())
                    .invoke_async(&mut conn),
            )
            .await;
            match counts {
                Ok((minute, day)) => self.note_seen(&key, minute, day),
                Err(e) => return self.unavailable(&e),
            }
        }
    }

    /// For `gmail-relay check`: whether Redis answers, and what it holds.
    pub async fn check(&self) -> Result<String, String> {
        let mut conn = self.inner.conn.clone();
        let pong: Result<String, _> = timed(redis::cmd("PING").query_async(&mut conn)).await;
        match pong {
            Ok(_) => {
                let epoch: Option<String> = timed(
                    redis::cmd("GET")
                        .arg(self.fleet_key("epoch"))
                        .query_async(&mut conn),
                )
                .await
                .unwrap_or(None);
                Ok(format!(
                    "Redis at {} answers; {} replicas share the accounts under the key prefix \
                     {:?}{}",
                    self.inner.url,
                    self.inner.replicas,
                    self.inner.prefix,
                    match epoch {
                        Some(_) => "",
                        None => " (no replica has used it yet)",
                    }
                ))
            }
            Err(e) => Err(format!(
                "Redis at {} cannot be reached: {e}; the replicas would each send within their \
                 share of the budgets until it can",
                self.inner.url
            )),
        }
    }
}
