//! The send budget of one account: its `max_per_minute` and `max_per_day` (or
//! `delivery.max_per_minute` / `max_per_day`), counted in recipients the upstream accepted, over
//! rolling windows (the last 60 seconds, the last 24 hours), as Gmail counts its sending limits.
//!
//! When the budget is spent, messages wait; they never fail for it. The record of recent sends
//! of every account is kept in the spool (`rate.json`, see [`Records`]), so a restart does not
//! reset the day's count.
//!
//! Two layers: [`Budget`] is the pure record and arithmetic (times come in as arguments);
//! [`SendBudget`] is the scheduler's accounting around it: recipients of attempts in flight are
//! reserved against it when the attempt starts and settled when it reports (or released, if
//! the attempt died), so concurrent attempts can never spend the same unit twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::spool::QueueId;

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// Recent sends and the limits they count against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    per_minute: Option<u32>,
    per_day: Option<u32>,
    /// (unix second, recipients accepted in that second), oldest first, at most a day old.
    sends: VecDeque<(u64, u32)>,
}

/// When the next message may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Now.
    Now,
    /// At this time, when older sends leave the window.
    Until(SystemTime),
    /// When the attempts in flight have reported.
    InFlight,
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct Saved {
    sends: Vec<(u64, u32)>,
}

/// The saved records of every account's budget, as `rate.json` holds them:
/// `{"accounts": {"default": {"sends": [...]}, ...}}`. A file from before accounts
/// (`{"sends": [...]}`) is the default account's.
#[derive(Default)]
pub struct Records {
    accounts: BTreeMap<String, Saved>,
}

#[derive(Serialize, Deserialize)]
struct SavedAll {
    accounts: BTreeMap<String, Saved>,
}

impl Records {
    /// Reads `rate.json`; an unreadable file is no record.
    pub fn parse(bytes: Option<&[u8]>) -> Records {
        let Some(bytes) = bytes else {
            return Records::default();
        };
        if let Ok(all) = serde_json::from_slice::<SavedAll>(bytes) {
            return Records {
                accounts: all.accounts,
            };
        }
        let mut accounts = BTreeMap::new();
        if let Ok(one) = serde_json::from_slice::<Saved>(bytes) {
            accounts.insert(crate::config::DEFAULT_ACCOUNT.to_owned(), one);
        }
        Records { accounts }
    }

    /// The record of `account`, as [`Budget::new`] takes it.
    pub fn of(&self, account: &str) -> Option<Vec<u8>> {
        self.accounts
            .get(account)
            .map(|s| serde_json::to_vec(s).expect("serialisable"))
    }

    /// The sends recorded for `account`: (Unix second, recipients).
    pub fn sends(&self, account: &str) -> Vec<(u64, u32)> {
        self.accounts
            .get(account)
            .map(|s| s.sends.clone())
            .unwrap_or_default()
    }

    /// Sets the record of `account` (a [`SendBudget::save`]). Records whose last send is more
    /// than a day older than this one's limit nothing any more and are forgotten: senders' own
    /// mailboxes come and go, and `rate.json` must not keep every one ever seen.
    pub fn set(&mut self, account: &str, saved: &[u8]) {
        let Ok(s) = serde_json::from_slice::<Saved>(saved) else {
            return;
        };
        let newest = s.sends.iter().map(|&(t, _)| t).max();
        self.accounts.insert(account.to_owned(), s);
        if let Some(newest) = newest {
            self.accounts
                .retain(|_, r| r.sends.iter().any(|&(t, _)| t + 86_400 > newest));
        }
    }

    /// `rate.json`'s content.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&SavedAll {
            accounts: self.accounts.clone(),
        })
        .expect("serialisable")
    }
}

/// Writes `rate.json` behind the scheduler: each new record replaces the one waiting, and a
/// task writes the latest whenever the previous write is done.
///
/// Why: the write is an fsync'd replace (two fsyncs), and awaiting it in the scheduler's loop
/// after every delivery held up every other report and dispatch: with a budget set, draining
/// ran at half the speed. Written behind, a burst of deliveries costs one write. The record is
/// written after Gmail accepted the mail either way; a crash loses at most the sends of the
/// write in progress and of the one waiting, and [`RecordWriter::finish`] writes the last one
/// on shutdown.
pub struct RecordWriter {
    latest: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordWriter {
    /// Starts the writer for `spool`.
    pub fn start(spool: crate::spool::Spool) -> RecordWriter {
        let (latest, mut waiting) = tokio::sync::watch::channel(None::<Vec<u8>>);
        let task = tokio::spawn(async move {
            // `changed` still reports a record sent just before the sender was dropped.
            while waiting.changed().await.is_ok() {
                let Some(bytes) = waiting.borrow_and_update().clone() else {
                    continue;
                };
                if let Err(e) = spool.save_budget(bytes).await {
                    tracing::warn!(error = %e, "could not record the send budget; a restart may forget recent sends");
                }
            }
        });
        RecordWriter { latest, task }
    }

    /// Queues `records` to be written, replacing any record not yet written.
    pub fn write(&self, records: &Records) {
        self.latest.send_replace(Some(records.to_bytes()));
    }

    /// Writes the last record queued, then returns.
    pub async fn finish(self) {
        drop(self.latest);
        let _ = self.task.await;
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Budget {
    /// A budget with these limits (`None`: no limit), resuming from `saved` (a previous
    /// [`Budget::save`]) if given and readable.
    pub fn new(per_minute: Option<u32>, per_day: Option<u32>, saved: Option<&[u8]>) -> Budget {
        let sends = saved
            .and_then(|bytes| serde_json::from_slice::<Saved>(bytes).ok())
            .map(|s| s.sends.into_iter().collect())
            .unwrap_or_default();
        Budget {
            per_minute,
            per_day,
            sends,
        }
    }

    /// True when there is any limit (otherwise nothing needs recording).
    pub fn is_limited(&self) -> bool {
        self.per_minute.is_some() || self.per_day.is_some()
    }

    /// The record, for the spool.
    pub fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&Saved {
            sends: self.sends.iter().copied().collect(),
        })
        .expect("serialisable")
    }

    /// Counts `recipients` accepted at `now`.
    pub fn record(&mut self, now: SystemTime, recipients: u32) {
        if recipients == 0 || !self.is_limited() {
            return;
        }
        let s = secs(now);
        match self.sends.back_mut() {
            Some((t, n)) if *t == s => *n += recipients,
            _ => self.sends.push_back((s, recipients)),
        }
        while self.sends.front().is_some_and(|&(t, _)| t + DAY <= s) {
            self.sends.pop_front();
        }
    }

    /// Puts new limits in force, keeping the record of recent sends.
    pub fn set_limits(&mut self, per_minute: Option<u32>, per_day: Option<u32>) {
        self.per_minute = per_minute;
        self.per_day = per_day;
    }

    /// Recipients that may still be sent now in the minute and the day windows (`None` where
    /// there is no limit).
    pub fn remaining(&self, now: SystemTime) -> (Option<u32>, Option<u32>) {
        let s = secs(now);
        let left = |limit: Option<u32>, window: u64| {
            limit.map(|limit| {
                let used: u32 = self
                    .sends
                    .iter()
                    .filter(|&&(t, _)| t + window > s)
                    .map(|&(_, n)| n)
                    .sum();
                limit.saturating_sub(used)
            })
        };
        (left(self.per_minute, MINUTE), left(self.per_day, DAY))
    }

    /// Whether `cost` more recipients may be sent now, with `in_flight` recipients already on
    /// their way (not recorded yet).
    pub fn wait(&self, now: SystemTime, in_flight: u32, cost: u32) -> Wait {
        let s = secs(now);
        let mut until = None;
        for (limit, window) in [(self.per_minute, MINUTE), (self.per_day, DAY)] {
            let Some(limit) = limit else { continue };
            match self.free_at(s, in_flight, cost, limit, window) {
                Wait::Now => {}
                Wait::InFlight => return Wait::InFlight,
                Wait::Until(t) => until = until.max(Some(t)),
            }
        }
        until.map_or(Wait::Now, Wait::Until)
    }

    /// Whether `cost` fits under `limit` in a window of `window` seconds ending now. A cost above
    /// the limit waits for an empty window, then goes.
    fn free_at(&self, now: u64, in_flight: u32, cost: u32, limit: u32, window: u64) -> Wait {
        let cost = cost.min(limit);
        let in_window: Vec<(u64, u32)> = self
            .sends
            .iter()
            .copied()
            .filter(|&(t, _)| t + window > now)
            .collect();
        let mut used: u32 = in_window.iter().map(|&(_, n)| n).sum::<u32>() + in_flight;
        if used + cost <= limit {
            return Wait::Now;
        }
        for (t, n) in in_window {
            used -= n;
            if used + cost <= limit {
                return Wait::Until(UNIX_EPOCH + Duration::from_secs(t + window));
            }
        }
        // Only what is in flight stands in the way; it is recorded when it reports.
        Wait::InFlight
    }
}

/// Whether an attempt may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes; its recipients are reserved.
    Now,
    /// Not before this time (the budget is spent until then).
    Until(SystemTime),
    /// Not until an attempt in flight reports.
    InFlight,
}

/// A budget with the reservations of the attempts in flight.
#[derive(Debug, Default)]
pub struct SendBudget {
    budget: Budget,
    /// Recipients of attempts in flight, counted against the budget until they report.
    reserved: HashMap<QueueId, u32>,
    /// Dispatch waits for the budget until then.
    wait: Option<Instant>,
    /// The last attempt to admit found only reservations in the way: nothing fits until an
    /// attempt in flight reports.
    held_back: bool,
}

impl SendBudget {
    /// A budget with these limits, resuming from a saved record.
    pub fn new(per_minute: Option<u32>, per_day: Option<u32>, saved: Option<&[u8]>) -> Self {
        SendBudget {
            budget: Budget::new(per_minute, per_day, saved),
            reserved: HashMap::new(),
            wait: None,
            held_back: false,
        }
    }

    /// May message `id`, costing `cost` recipients, start now? If so its cost is reserved;
    /// if not, dispatch waits (see [`SendBudget::wake`]).
    pub fn admit(&mut self, id: QueueId, cost: u32, clock: &super::Clock) -> Admit {
        let in_flight: u32 = self.reserved.values().sum();
        match self.budget.wait(clock.now(), in_flight, cost) {
            Wait::Now => {
                self.wait = None;
                self.held_back = false;
                if self.budget.is_limited() {
                    self.reserved.insert(id, cost);
                }
                Admit::Now
            }
            Wait::InFlight => {
                self.held_back = true;
                Admit::InFlight
            }
            Wait::Until(until) => {
                self.wait = Some(clock.instant_of(until));
                Admit::Until(until)
            }
        }
    }

    /// True while dispatch is waiting for the budget (so a spent budget is logged once).
    pub fn waiting(&self) -> bool {
        self.wait.is_some()
    }

    /// Nothing more fits now: the budget is spent, or only reservations are in the way.
    pub fn blocked(&self) -> bool {
        self.wait.is_some() || self.held_back
    }

    /// When dispatch may try again, if it is waiting.
    pub fn wake(&self) -> Option<Instant> {
        self.wait
    }

    /// Try again at once (the operator asked, or the limits changed).
    pub fn wake_now(&mut self) {
        self.wait = None;
        self.held_back = false;
    }

    /// The attempt for `id` reported `delivered` recipients at `now`. Returns true if the
    /// record changed (and should be saved).
    pub fn settle(&mut self, id: QueueId, delivered: u32, now: SystemTime) -> bool {
        self.reserved.remove(&id);
        self.held_back = false;
        if delivered > 0 && self.budget.is_limited() {
            self.budget.record(now, delivered);
            true
        } else {
            false
        }
    }

    /// Attempts in flight hold part of it.
    pub fn has_reservations(&self) -> bool {
        !self.reserved.is_empty()
    }

    /// The attempt for `id` ended without a report (it panicked): its reservation goes.
    pub fn release(&mut self, id: QueueId) {
        self.reserved.remove(&id);
        self.held_back = false;
    }

    /// Puts new limits in force, keeping the record of recent sends.
    pub fn set_limits(&mut self, per_minute: Option<u32>, per_day: Option<u32>) {
        self.budget.set_limits(per_minute, per_day);
        self.wait = None;
        self.held_back = false;
    }

    /// Recipients left this minute and today (where limited).
    pub fn remaining(&self, now: SystemTime) -> (Option<u32>, Option<u32>) {
        self.budget.remaining(now)
    }

    /// The record, for the spool.
    pub fn save(&self) -> Vec<u8> {
        self.budget.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written one after another, faster than the disk: the file ends with the last
    /// one, whether or not the ones between were written, and `finish` waits for it.
    #[tokio::test]
    async fn the_writer_leaves_the_latest_record_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let opened = crate::spool::Spool::open(dir.path()).unwrap();
        let writer = RecordWriter::start(opened.spool.clone());
        let mut records = Records::default();
        for n in 1..=50u32 {
            let mut b = Budget::new(None, Some(1000), None);
            b.record(at(u64::from(n)), n);
            records.set("default", &b.save());
            writer.write(&records);
        }
        writer.finish().await;
        let saved = Records::parse(opened.spool.load_budget().await.as_deref());
        assert_eq!(saved.sends("default"), vec![(1_800_000_050, 50)]);
    }

    #[test]
    fn records_keep_each_account_and_read_the_old_single_record() {
        let mut old = Budget::new(None, Some(5), None);
        old.record(at(0), 3);
        let records = Records::parse(Some(&old.save()));
        let default = Budget::new(None, Some(5), records.of("default").as_deref());
        assert_eq!(default.wait(at(1), 0, 3), Wait::Until(at(86_400)));
        assert!(records.of("billing").is_none());

        let mut all = Records::default();
        all.set("billing", &old.save());
        let back = Records::parse(Some(&all.to_bytes()));
        assert!(back.of("billing").is_some() && back.of("default").is_none());
        assert!(Records::parse(Some(b"garbage")).of("default").is_none());

        // A day after billing's last send, its record goes when another account records.
        let mut later = Budget::new(None, Some(5), None);
        later.record(at(86_400), 1);
        all.set("domain/scanner@example.com", &later.save());
        assert!(all.of("billing").is_none());
        assert!(all.of("domain/scanner@example.com").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_keep_concurrent_attempts_within_the_budget() {
        let id = |n: u64| QueueId::parse(&format!("{n:016x}")).unwrap();
        let clock = super::super::Clock::start();
        let mut b = SendBudget::new(Some(3), None, None);
        assert_eq!(b.admit(id(1), 2, &clock), Admit::Now);
        assert_eq!(b.admit(id(2), 1, &clock), Admit::Now);
        assert_eq!(
            b.admit(id(3), 1, &clock),
            Admit::InFlight,
            "three recipients are on their way"
        );
        b.release(id(2));
        assert_eq!(
            b.admit(id(3), 1, &clock),
            Admit::Now,
            "a dead attempt frees its share"
        );
        assert!(b.settle(id(1), 2, clock.now()));
        assert!(b.settle(id(3), 1, clock.now()));
        assert!(matches!(b.admit(id(4), 1, &clock), Admit::Until(_)));
        assert!(b.waiting());
        assert_eq!(b.remaining(clock.now()), (Some(0), None));
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn no_limits_never_wait_and_record_nothing() {
        let mut b = Budget::new(None, None, None);
        b.record(at(0), 1000);
        assert_eq!(b.wait(at(0), 0, 1000), Wait::Now);
        assert!(b.sends.is_empty());
    }

    #[test]
    fn per_minute_window_rolls() {
        let mut b = Budget::new(Some(10), None, None);
        b.record(at(0), 6);
        b.record(at(30), 4);
        assert_eq!(
            b.wait(at(40), 0, 1),
            Wait::Until(at(60)),
            "the first 6 leave the window at 60 s"
        );
        assert_eq!(b.wait(at(60), 0, 6), Wait::Now);
        assert_eq!(b.wait(at(60), 0, 7), Wait::Until(at(90)));
        assert_eq!(b.wait(at(95), 0, 10), Wait::Now);
        assert_eq!(
            b.wait(at(95), 9, 2),
            Wait::InFlight,
            "only sends in flight are in the way"
        );
    }

    #[test]
    fn per_day_window_and_the_stricter_limit_wins() {
        let mut b = Budget::new(Some(100), Some(20), None);
        b.record(at(0), 15);
        b.record(at(3600), 5);
        assert_eq!(b.wait(at(3700), 0, 1), Wait::Until(at(86_400)));
        assert_eq!(b.wait(at(86_400), 0, 15), Wait::Now);
    }

    #[test]
    fn a_message_larger_than_the_limit_goes_when_the_window_is_empty() {
        let mut b = Budget::new(Some(10), None, None);
        assert_eq!(b.wait(at(0), 0, 50), Wait::Now);
        b.record(at(0), 50);
        assert_eq!(b.wait(at(1), 0, 50), Wait::Until(at(60)));
    }

    #[test]
    fn the_record_survives_a_restart_and_old_sends_are_dropped() {
        let mut b = Budget::new(None, Some(5), None);
        b.record(at(0), 3);
        b.record(at(10), 2);
        let again = Budget::new(None, Some(5), Some(&b.save()));
        assert_eq!(again.wait(at(20), 0, 1), Wait::Until(at(86_400)));
        let mut b = again;
        b.record(at(86_400 + 5), 1);
        assert_eq!(b.sends.len(), 2, "the first send fell out of the day");
        assert_eq!(Budget::new(None, Some(5), Some(b"garbage")).sends.len(), 0);
    }
}
