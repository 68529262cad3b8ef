use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use super::*;

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: "app@example.com".into(),
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        received_at: SystemTime::now(),
        client: "127.0.0.1".parse().unwrap(),
        helo: "app".into(),
        eight_bit_mime: false,
        smtputf8: false,
        notify_never: vec![],
        account: None,
    }
}

async fn commit_one(spool: &Spool, body: &[u8]) -> QueueId {
    let id = spool.new_id();
    spool
        .commit(
            id,
            envelope(&["a@example.com", "b@example.com"]),
            vec![b"Received: x\r\n".to_vec(), body.to_vec()],
        )
        .await
        .unwrap();
    id
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn committed_message_is_recovered_after_reopen_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let id = {
        let mut opened = Spool::open(&root).unwrap();
        assert!(opened.recovered.is_empty());
        let id = commit_one(&opened.spool, b"Subject: t\r\n\r\nbody\r\n").await;
        let note = opened.committed.recv().await.unwrap();
        assert_eq!(note.id, id);
        id
    };
    let opened = Spool::open(&root).unwrap();
    assert_eq!(opened.recovered.len(), 1);
    assert_eq!(opened.recovered[0].id, id);
    let msg = opened.spool.load(id).await.unwrap();
    assert_eq!(msg.body, b"Received: x\r\nSubject: t\r\n\r\nbody\r\n");
    assert_eq!(msg.state.pending().count(), 2);
    assert!(opened.spool.new_id() > id);
    for d in ["", "queue", "tmp", "failed"] {
        assert_eq!(mode(&root.join(d)), 0o700, "dir {d:?}");
    }
    assert_eq!(mode(&root.join("queue").join(format!("{id}.msg"))), 0o600);
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Spool::open(dir.path()).unwrap();
    let err = Spool::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, SpoolError::Locked { .. }));
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("pid"),
        "{text}"
    );
}

#[tokio::test]
async fn debris_in_tmp_is_removed_and_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    drop(Spool::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("tmp/0006455f3c2a1b2c.msg"), b"half a mess").unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    assert!(opened.recovered.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn truncated_message_is_quarantined_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let opened = Spool::open(dir.path()).unwrap();
        commit_one(&opened.spool, &[b'x'; 1000]).await
    };
    let path = dir.path().join(format!("queue/{id}.msg"));
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let opened = Spool::open(dir.path()).unwrap();
    assert!(opened.recovered.is_empty(), "a cut file is never sent");
    assert!(dir.path().join(format!("failed/{id}.msg")).exists());
    let state = std::fs::read_to_string(dir.path().join(format!("failed/{id}.state"))).unwrap();
    assert!(state.contains("header says"), "{state}");
}

#[tokio::test]
async fn unreadable_state_quarantines_instead_of_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let opened = Spool::open(dir.path()).unwrap();
        commit_one(&opened.spool, b"x\r\n").await
    };
    std::fs::write(dir.path().join(format!("queue/{id}.state")), b"{not json").unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    assert!(opened.recovered.is_empty());
    assert!(dir.path().join(format!("failed/{id}.msg")).exists());
}

#[tokio::test]
async fn orphan_state_files_are_finished() {
    let dir = tempfile::tempdir().unwrap();
    drop(Spool::open(dir.path()).unwrap());
    // Removed after delivery, crash before the state went: the state is debris.
    std::fs::write(dir.path().join("queue/0000000000000001.state"), b"{}").unwrap();
    // Moved to failed/, crash before the state followed: it is moved too.
    std::fs::write(dir.path().join("failed/0000000000000002.msg"), b"m").unwrap();
    std::fs::write(dir.path().join("queue/0000000000000002.state"), b"{}").unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    assert!(opened.recovered.is_empty());
    assert!(!dir.path().join("queue/0000000000000001.state").exists());
    assert!(dir.path().join("failed/0000000000000002.state").exists());
}

#[tokio::test]
async fn state_is_saved_and_next_attempt_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let later = SystemTime::UNIX_EPOCH + Duration::from_millis(4_000_000_000_000);
    let id = {
        let opened = Spool::open(dir.path()).unwrap();
        let id = commit_one(&opened.spool, b"x\r\n").await;
        let mut msg = opened.spool.load(id).await.unwrap();
        msg.state.attempts = 1;
        msg.state.next_attempt = later;
        msg.state.recipients[0].status = RecipientStatus::Delivered;
        opened.spool.save_state(id, &msg.state).await.unwrap();
        id
    };
    let opened = Spool::open(dir.path()).unwrap();
    assert_eq!(opened.recovered[0].next_attempt, later);
    let msg = opened.spool.load(id).await.unwrap();
    assert_eq!(msg.state.attempts, 1);
    assert_eq!(msg.state.pending().count(), 1);
}

#[tokio::test]
async fn remove_and_fail_leave_the_queue_empty() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    let a = commit_one(&opened.spool, b"a\r\n").await;
    let b = commit_one(&opened.spool, b"b\r\n").await;
    opened.spool.remove(a).await.unwrap();
    let mut msg = opened.spool.load(b).await.unwrap();
    msg.state.failed_reason = Some("550 5.1.1 no such user".into());
    opened.spool.fail(b, &msg.state).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
        0
    );
    assert!(dir.path().join(format!("failed/{b}.msg")).exists());
    let st = std::fs::read_to_string(dir.path().join(format!("failed/{b}.state"))).unwrap();
    assert!(st.contains("5.1.1"));
    assert!(matches!(
        opened.spool.load(a).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_all_durable_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let spool = opened.spool.clone();
            tokio::spawn(async move { commit_one(&spool, format!("msg {i}\r\n").as_bytes()).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    drop(opened);
    let reopened = Spool::open(dir.path()).unwrap();
    let mut got: Vec<_> = reopened.recovered.iter().map(|q| q.id).collect();
    ids.sort();
    got.sort();
    assert_eq!(got, ids);
}

/// A full disk or quota is a 452 "try later", also when the error passed through the
/// committer, which re-wraps it with its own text and loses the OS error number.
#[test]
fn a_full_disk_or_quota_is_storage_full_even_when_rewrapped() {
    let full = |source: io::Error| SpoolError::Io {
        op: "commit",
        path: PathBuf::from("spool/queue/x.msg"),
        source,
    };
    for raw in [28, 122] {
        let e = io::Error::from_raw_os_error(raw);
        let rewrapped = io::Error::new(e.kind(), format!("fsync of queue directory: {e}"));
        assert!(full(e).is_storage_full(), "os error {raw}");
        assert!(
            full(rewrapped).is_storage_full(),
            "os error {raw}, rewrapped"
        );
    }
    let other = io::Error::from_raw_os_error(5); // EIO: a fault, not a full disk
    assert!(!full(other).is_storage_full());
}

/// Halfway through a move to failed/ (the message has gone, its state not yet), a reader of
/// the failed message sees the state it is about to get, not a blank one.
#[tokio::test]
async fn a_message_halfway_to_failed_shows_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Spool::open(dir.path()).unwrap();
    let id = commit_one(&opened.spool, b"a\r\n").await;
    let mut msg = opened.spool.load(id).await.unwrap();
    msg.state.failed_reason = Some("550 5.1.1 no such user".into());
    opened.spool.save_state(id, &msg.state).await.unwrap();
    std::fs::rename(
        dir.path().join(format!("queue/{id}.msg")),
        dir.path().join(format!("failed/{id}.msg")),
    )
    .unwrap();
    let summary = opened.spool.summary(Area::Failed, id).await.unwrap();
    assert_eq!(
        summary.state.failed_reason.as_deref(),
        Some("550 5.1.1 no such user")
    );
}
