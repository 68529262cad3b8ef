//! The scheduler against a scripted courier, in paused tokio time: retries, pauses, expiry.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::spool::{Envelope, Opened};

mod accounts;
mod operator;

/// What the scripted courier answers: these outcomes, a pause of this kind, or a panic (a bug
/// in an attempt).
enum Answer {
    Outcomes(Vec<RecipientOutcome>),
    Pause(PauseKind),
    Panic,
}

use crate::delivery::{Pause, PauseKind, RecipientOutcome};

/// A courier that answers from a script and records when it was called.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    /// Answers for one account, taken before the general ones.
    answers_for: Mutex<std::collections::HashMap<String, VecDeque<Answer>>>,
    /// (when, through which account, to whom).
    calls: Mutex<Vec<(Instant, String, Vec<String>)>>,
    /// How long each delivery takes.
    delay: Duration,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

impl Courier for Arc<Scripted> {
    fn deliver(
        &self,
        account: &str,
        _msg: &Outgoing<'_>,
        recipients: &[String],
    ) -> impl Future<Output = Report> + Send {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), account.to_owned(), recipients.to_vec()));
        let own = self
            .answers_for
            .lock()
            .unwrap()
            .get_mut(account)
            .and_then(VecDeque::pop_front);
        let next = own.or_else(|| self.answers.lock().unwrap().pop_front());
        let answer = match next {
            Some(Answer::Outcomes(outcomes)) => Report {
                outcomes,
                pause: None,
            },
            Some(Answer::Pause(kind)) => Report::paused(
                recipients.len(),
                Pause::new(kind, format!("scripted {kind:?}")),
            ),
            Some(Answer::Panic) => panic!("scripted panic in an attempt"),
            None => Report {
                outcomes: recipients
                    .iter()
                    .map(|_| RecipientOutcome::Delivered("250 2.0.0 OK".into()))
                    .collect(),
                pause: None,
            },
        };
        let this = self.clone();
        async move {
            use std::sync::atomic::Ordering::SeqCst;
            let now = this.in_flight.fetch_add(1, SeqCst) + 1;
            this.max_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(this.delay).await;
            this.in_flight.fetch_sub(1, SeqCst);
            answer
        }
    }
}

impl Scripted {
    fn then(&self, answer: Answer) {
        self.answers.lock().unwrap().push_back(answer);
    }
    /// The next answer for attempts through `account`.
    fn then_for(&self, account: &str, answer: Answer) {
        self.answers_for
            .lock()
            .unwrap()
            .entry(account.to_owned())
            .or_default()
            .push_back(answer);
    }
    /// The accounts the attempts went through, in order.
    fn accounts(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1.clone())
            .collect()
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    courier: Arc<Scripted>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    handle: Handle,
}

/// An account's scheduler settings: `concurrency` attempts at once, `per_minute` recipients a
/// minute.
fn account(name: &str, concurrency: usize, per_minute: Option<u32>) -> AccountSettings {
    AccountSettings {
        name: name.into(),
        label: format!("{name}@example.com"),
        concurrency,
        max_per_minute: per_minute,
        max_per_day: None,
        failover: vec![],
        rewrite: Default::default(),
        per_sender: false,
    }
}

const MIN: Duration = Duration::from_secs(60);
const MAX: Duration = Duration::from_secs(3600);

async fn harness(messages: &[(&[&str], SystemTime)], concurrency: usize, hold: bool) -> Harness {
    harness_with(messages, concurrency, hold, Duration::ZERO).await
}

async fn harness_with(
    messages: &[(&[&str], SystemTime)],
    concurrency: usize,
    hold: bool,
    delay: Duration,
) -> Harness {
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> =
        messages.iter().map(|&(r, at)| (None, r, at)).collect();
    start(
        &messages,
        vec![account("default", concurrency, None)],
        hold,
        delay,
    )
    .await
}

/// The scheduler over a spool holding `messages` (account, recipients, received), with these
/// accounts.
async fn start(
    messages: &[(Option<&str>, &[&str], SystemTime)],
    accounts: Vec<AccountSettings>,
    hold: bool,
    delay: Duration,
) -> Harness {
    let from: Vec<_> = messages
        .iter()
        .map(|&(account, rcpts, at)| ("app@example.com", account, rcpts, at))
        .collect();
    start_from(&from, accounts, hold, delay).await
}

/// Like [`start`], each message with its own envelope sender.
async fn start_from(
    messages: &[(&str, Option<&str>, &[&str], SystemTime)],
    accounts: Vec<AccountSettings>,
    hold: bool,
    delay: Duration,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let Opened {
        spool,
        recovered,
        committed,
    } = Spool::open(dir.path()).unwrap();
    for (sender, account, rcpts, received_at) in messages {
        let envelope = Envelope {
            sender: sender.to_string(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            received_at: *received_at,
            client: "127.0.0.1".parse().unwrap(),
            helo: "t".into(),
            eight_bit_mime: false,
            smtputf8: false,
            notify_never: vec![],
            account: account.map(str::to_owned),
        };
        let id = spool.new_id();
        spool
            .commit(id, envelope, vec![b"Subject: t\r\n\r\nx\r\n".to_vec()])
            .await
            .unwrap();
    }
    let courier = Arc::new(Scripted {
        delay,
        ..Scripted::default()
    });
    let cancel = CancellationToken::new();
    let settings = Settings {
        policy: policy(),
        hold,
        bounce: crate::bounce::BounceTo::Nobody,
        hostname: "relay.test".into(),
        accounts,
        metrics: Default::default(),
    };
    let (handle, commands) = Handle::new();
    let task = tokio::spawn(run(
        spool.clone(),
        courier.clone(),
        settings,
        recovered,
        committed,
        commands,
        cancel.clone(),
    ));
    Harness {
        dir,
        courier,
        cancel,
        task,
        handle,
    }
}

/// The retry policy of the tests: retries from `MIN` to `MAX`, login pauses up to 30 minutes.
fn policy() -> RetryPolicy {
    RetryPolicy {
        min: MIN,
        max: MAX,
        max_age: Duration::from_secs(5 * 86400),
        auth_pause_min: MIN,
        auth_pause_max: Duration::from_secs(1800),
        quota_pause: MAX,
    }
}

impl Harness {
    /// The id of the (first) message in queue/.
    fn queued_id(&self) -> QueueId {
        self.files("queue")
            .iter()
            .find_map(|f| QueueId::parse(f.strip_suffix(".msg")?))
            .expect("a queued message")
    }

    fn files(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Lets the scheduler and its attempts run until nothing more happens at this instant.
    async fn settle(&self) {
        for _ in 0..50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[tokio::test(start_paused = true)]
async fn a_temporary_failure_is_retried_after_retry_min_then_delivered() {
    let h = harness(&[(&["a@x.test"], now())], 2, false).await;
    h.courier
        .then(Answer::Outcomes(vec![RecipientOutcome::Deferred(
            "451 4.3.0 try later".into(),
        )]));
    h.settle().await;
    assert_eq!(h.courier.calls(), 1);
    let state = h.files("queue");
    assert_eq!(state.len(), 2, "message and its state: {state:?}");

    tokio::time::sleep(MIN - Duration::from_secs(1)).await;
    assert_eq!(h.courier.calls(), 1, "not before retry_min");
    tokio::time::sleep(MIN / 4 + Duration::from_secs(2)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 2, "retried within retry_min plus jitter");
    assert!(h.files("queue").is_empty(), "delivered and removed");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn only_pending_recipients_are_retried() {
    let h = harness(&[(&["a@x.test", "b@x.test", "c@x.test"], now())], 2, false).await;
    h.courier.then(Answer::Outcomes(vec![
        RecipientOutcome::Delivered("250 ok".into()),
        RecipientOutcome::Deferred("450 4.2.1 slow down".into()),
        RecipientOutcome::Failed("550 5.1.1 no such user".into()),
    ]));
    h.settle().await;
    tokio::time::sleep(MIN * 2).await;
    h.settle().await;
    let calls = h.courier.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].2, ["b@x.test"]);
    assert!(h.files("queue").is_empty());
    assert_eq!(h.files("failed").len(), 2, "kept for the failed recipient");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_session_pauses_everything_then_one_probe_then_full_speed() {
    let msgs: Vec<(&[&str], SystemTime)> = (0..5).map(|_| (&["a@x.test"][..], now())).collect();
    let h = harness(&msgs, 1, false).await;
    h.courier.then(Answer::Pause(PauseKind::Unreachable));
    h.courier.then(Answer::Pause(PauseKind::Unreachable));
    h.settle().await;
    assert_eq!(h.courier.calls(), 1, "the first failure pauses delivery");
    assert_eq!(
        h.files("queue")
            .iter()
            .filter(|f| f.ends_with(".msg"))
            .count(),
        5
    );

    // Jitter adds up to a quarter: the first pause ends between 60 s and 75 s, the second (twice
    // as long) 120 s to 150 s after that, so between 180 s and 225 s.
    let start = Instant::now();
    tokio::time::sleep_until(start + Duration::from_secs(76)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 2, "one probe after the first pause");

    tokio::time::sleep_until(start + Duration::from_secs(178)).await;
    h.settle().await;
    assert_eq!(
        h.courier.calls(),
        2,
        "backoff doubles while the upstream stays away"
    );

    tokio::time::sleep_until(start + Duration::from_secs(230)).await;
    h.settle().await;
    assert_eq!(
        h.courier.calls(),
        2 + 5,
        "the probe succeeded and all five went"
    );
    assert!(h.files("queue").is_empty());
    assert!(
        h.files("failed").is_empty(),
        "nothing bounced for an unreachable upstream"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_never_fails_or_expires_a_message() {
    let old = now() - Duration::from_secs(6 * 86400);
    let h = harness(&[(&["a@x.test"], old)], 1, false).await;
    h.courier.then(Answer::Pause(PauseKind::Credentials));
    h.settle().await;
    assert_eq!(h.courier.calls(), 1);
    assert!(
        h.files("failed").is_empty(),
        "kept although older than max_age"
    );
    tokio::time::sleep(MIN * 2).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 2);
    assert!(
        h.files("queue").is_empty(),
        "delivered once the login works"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_older_than_max_age_fails_on_its_next_temporary_failure() {
    let old = now() - Duration::from_secs(6 * 86400);
    let h = harness(&[(&["a@x.test"], old)], 1, false).await;
    h.courier
        .then(Answer::Outcomes(vec![RecipientOutcome::Deferred(
            "451 4.3.0 later".into(),
        )]));
    h.settle().await;
    assert!(h.files("queue").is_empty());
    let failed = h.files("failed");
    assert_eq!(failed.len(), 2);
    let state = std::fs::read_to_string(h.dir.path().join("failed").join(&failed[1])).unwrap();
    assert!(
        state.contains("queue.max_age") && state.contains("451 4.3.0"),
        "{state}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn hold_attempts_nothing() {
    let h = harness(&[(&["a@x.test"], now())], 1, true).await;
    tokio::time::sleep(MAX).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 0);
    assert_eq!(h.files("queue").len(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_by_the_connection_limit() {
    let msgs: Vec<(&[&str], SystemTime)> = (0..6).map(|_| (&["a@x.test"][..], now())).collect();
    let h = harness_with(&msgs, 2, false, Duration::from_secs(10)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 2, "two at a time");
    tokio::time::sleep(Duration::from_secs(35)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 6);
    assert_eq!(
        h.courier
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert!(h.files("queue").is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_attempts_in_flight_and_starts_no_more() {
    let msgs: Vec<(&[&str], SystemTime)> = (0..3).map(|_| (&["a@x.test"][..], now())).collect();
    let h = harness_with(&msgs, 1, false, Duration::from_secs(10)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 1);
    h.cancel.cancel();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.courier.calls(), 1, "nothing new after cancel");
    let queued = h
        .files("queue")
        .iter()
        .filter(|f| f.ends_with(".msg"))
        .count();
    assert_eq!(
        queued, 2,
        "the attempt in flight finished; the rest stay queued"
    );
    h.task.await.unwrap();
}

/// Starts the scheduler on the spool in `dir` (committing `count` one-recipient messages
/// first) with a per-minute budget; returns its courier, cancel token and task.
async fn budgeted(
    dir: &std::path::Path,
    count: usize,
    per_minute: u32,
) -> (
    Arc<Scripted>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let Opened {
        spool,
        recovered,
        committed,
    } = Spool::open(dir).unwrap();
    for _ in 0..count {
        let envelope = Envelope {
            sender: "app@example.com".into(),
            recipients: vec!["a@x.test".into()],
            received_at: now(),
            client: "127.0.0.1".parse().unwrap(),
            helo: "t".into(),
            eight_bit_mime: false,
            smtputf8: false,
            notify_never: vec![],
            account: None,
        };
        spool
            .commit(spool.new_id(), envelope, vec![b"x\r\n".to_vec()])
            .await
            .unwrap();
    }
    let courier = Arc::new(Scripted::default());
    let cancel = CancellationToken::new();
    let settings = Settings {
        policy: RetryPolicy {
            min: MIN,
            max: MAX,
            max_age: Duration::from_secs(5 * 86400),
            auth_pause_min: MIN,
            auth_pause_max: MAX,
            quota_pause: MAX,
        },
        hold: false,
        bounce: crate::bounce::BounceTo::Nobody,
        hostname: "relay.test".into(),
        accounts: vec![account("default", 4, Some(per_minute))],
        metrics: Default::default(),
    };
    let (_handle, commands) = Handle::new();
    let task = tokio::spawn(run(
        spool,
        courier.clone(),
        settings,
        recovered,
        committed,
        commands,
        cancel.clone(),
    ));
    (courier, cancel, task)
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_send_budget_makes_messages_wait_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (courier, cancel, task) = budgeted(dir.path(), 5, 2).await;
    settle().await;
    assert_eq!(courier.calls(), 2, "two recipients per minute");
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(courier.calls(), 2, "still within the minute");
    cancel.cancel();
    task.await.unwrap();
    let queued = std::fs::read_dir(dir.path().join("queue")).unwrap().count();
    assert_eq!(queued, 3, "waiting, not failed");

    // A restart does not reset the count. (The new run's clock starts again from the real wall
    // clock, which paused time did not move, so the minute still has all of its 60 s to run.)
    let (courier, cancel, task) = budgeted(dir.path(), 0, 2).await;
    settle().await;
    assert_eq!(courier.calls(), 0, "the budget was remembered");
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(courier.calls(), 2);
    tokio::time::sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(courier.calls(), 3);
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
        0
    );
}
