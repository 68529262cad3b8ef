//! `gmail-relay check --upstream` (log in without sending) and `gmail-relay send-test` (one
//! message through the whole path, watched to its outcome), the real binary against an
//! in-process relay and a fake upstream.

mod common;

use common::upstream::{FakeUpstream, Mode, Script, USER};
use common::{TestRelay, config_for, password_env as password, run_binary};

#[tokio::test]
async fn check_upstream_logs_in_and_reports_the_capabilities_without_sending() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config_for(&up, "")).unwrap();
    let args = vec![
        "check".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        "--upstream".to_owned(),
    ];
    let run = run_binary(args.clone(), password(), vec![]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("logged in to 127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("AUTH "),
        "capabilities listed: {}",
        run.stdout
    );
    assert_eq!(up.count("AUTH"), 1);
    assert_eq!(up.count("MAIL"), 0, "nothing sent");

    up.script(|s| {
        s.auth_replies
            .push_back("535 5.7.8 Username and Password not accepted".into())
    });
    let run = run_binary(args, password(), vec![]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("535 5.7.8"), "{}", run.stderr);
}

async fn relay(up: &FakeUpstream) -> TestRelay {
    TestRelay::start_for_tools(&config_for(up, "")).await
}

fn send_test(relay: &TestRelay, to: &str) -> Vec<String> {
    [
        "send-test",
        "--config",
        &relay.config.display().to_string(),
        "--to",
        to,
        "--wait",
        "20s",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn send_test_waits_for_delivery_or_failure() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.script(|s| {
        s.rcpt_replies
            .insert("nobody@example.com".into(), "550 5.1.1 no such user".into());
    });
    let mut relay = relay(&up).await;

    let run = run_binary(send_test(&relay, "me@example.com"), vec![], vec![]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("delivered"), "{}", run.stdout);
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["me@example.com"]);
    assert_eq!(got[0].from, USER, "sent from the Gmail account itself");
    assert!(
        String::from_utf8_lossy(&got[0].data).contains("Subject: gmail-relay test from relay.test")
    );

    let run = run_binary(send_test(&relay, "nobody@example.com"), vec![], vec![]).await;
    println!("{}", run.stdout);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("failed: nobody@example.com: 550 5.1.1 no such user"),
        "the upstream's reply for the recipient: {}",
        run.stdout
    );
    // A failed test is reported here, never by a bounce: nothing new is queued or sent.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(relay.queued(), 0, "no DSN queued");
    assert_eq!(up.messages().len(), 1, "no DSN sent");

    relay.stop().await;
    let run = run_binary(send_test(&relay, "me@example.com"), vec![], vec![]).await;
    assert_eq!(run.code, 75, "{run:?}");
}
