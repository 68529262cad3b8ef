//! The scheduler and the operator: retry now, withdraw and add, and what an attempt that
//! crashes leaves behind.

use super::*;

#[tokio::test(start_paused = true)]
async fn retry_now_attempts_a_deferred_message_and_probes_a_pause_at_once() {
    let h = harness(&[(&["a@x.test"], now())], 2, false).await;
    h.courier
        .then(Answer::Outcomes(vec![RecipientOutcome::Deferred(
            "451 4.3.0 try later".into(),
        )]));
    h.courier.then(Answer::Pause(PauseKind::Credentials));
    h.settle().await;
    assert_eq!(h.courier.calls(), 1);
    let status = h.handle.status().await.unwrap();
    assert_eq!((status.scheduled, status.active.len()), (1, 0));
    assert!(status.pause.is_none());

    assert_eq!(h.handle.retry_now(None).await, Some(1));
    h.settle().await;
    assert_eq!(
        h.courier.calls(),
        2,
        "attempted without waiting for retry_min"
    );
    let status = h.handle.status().await.unwrap();
    let pause = status.pause.expect("the second attempt paused delivery");
    assert_eq!(pause.cause, "credentials");
    assert!(pause.reason.contains("Credentials"), "{}", pause.reason);

    assert_eq!(h.handle.retry_now(None).await, Some(1));
    h.settle().await;
    assert_eq!(h.courier.calls(), 3, "the pause was probed now");
    assert!(h.files("queue").is_empty(), "delivered by the probe");
    assert!(h.handle.status().await.unwrap().pause.is_none());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_message_is_not_attempted_until_added_again() {
    let later = now() + Duration::from_secs(600);
    let h = harness(&[(&["a@x.test"], later)], 2, false).await;
    h.settle().await;
    let id = h.queued_id();
    assert_eq!(h.handle.withdraw(id, true).await, Some(true));
    assert_eq!(h.handle.status().await.unwrap().held, 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 0, "held messages are not attempted");

    h.handle.add(QueuedMessage {
        id,
        received_at: now(),
        next_attempt: now(),
        pending: 1,
        held: false,
        account: "default".into(),
        sender: "app@example.com".into(),
    });
    h.settle().await;
    assert_eq!(h.courier.calls(), 1, "released and attempted");
    assert_eq!(h.handle.status().await.unwrap().held, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_in_flight_cannot_be_withdrawn() {
    let h = harness_with(&[(&["a@x.test"], now())], 1, false, Duration::from_secs(5)).await;
    tokio::task::yield_now().await;
    h.settle().await;
    let id = h.queued_id();
    assert_eq!(h.handle.status().await.unwrap().active, [id]);
    assert_eq!(h.handle.withdraw(id, false).await, Some(false));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_attempt_is_retried_and_holds_neither_its_message_nor_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of one recipient a minute: a reservation the crash kept would block forever.
    let (courier, cancel, task) = budgeted(dir.path(), 1, 1).await;
    courier.then(Answer::Panic);
    settle().await;
    assert_eq!(courier.calls(), 1, "the attempt ran and crashed");
    assert_eq!(
        std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
        1,
        "the message stays queued"
    );

    tokio::time::sleep(MIN + MIN / 4 + Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        courier.calls(),
        2,
        "tried again like after a temporary failure"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
        0,
        "and delivered: the crashed attempt's budget share was given back"
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_crashed_attempt_leaves_its_message_neither_active_nor_busy() {
    let h = harness(&[(&["a@x.test"], now())], 2, false).await;
    h.courier.then(Answer::Panic);
    h.settle().await;
    assert_eq!(h.courier.calls(), 1);
    let status = h.handle.status().await.unwrap();
    assert!(status.active.is_empty(), "not stuck as active: {status:?}");
    assert_eq!(status.scheduled, 1, "scheduled again");
    let id = h.queued_id();
    assert_eq!(
        h.handle.withdraw(id, true).await,
        Some(true),
        "hold (and delete) are not refused as busy"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_retry_during_a_pause_does_not_push_the_next_probe_out() {
    let h = harness(&[(&["a@x.test"], now())], 1, false).await;
    let start = Instant::now();
    for _ in 0..3 {
        h.courier.then(Answer::Pause(PauseKind::Unreachable));
    }
    h.settle().await;
    assert_eq!(h.courier.calls(), 1, "paused for 60-75 s");
    let first = h.handle.status().await.unwrap().pause.unwrap().next_probe;

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.handle.retry_now(None).await, Some(1));
    h.settle().await;
    assert_eq!(h.courier.calls(), 2, "the operator's probe ran at once");
    let after = h.handle.status().await.unwrap().pause.unwrap().next_probe;
    assert_eq!(
        after, first,
        "the failed manual probe kept the automatic probe time"
    );

    tokio::time::sleep_until(start + Duration::from_secs(76)).await;
    h.settle().await;
    assert_eq!(
        h.courier.calls(),
        3,
        "the automatic probe came when it was due"
    );
    h.stop().await;
}
