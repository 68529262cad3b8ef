//! The delivery fault matrix: one test per way the upstream (Gmail) can fail, each asserting
//! where every message ends up and that nothing is lost. Fast schedules: retries from 100 ms,
//! login pauses from 100 ms, quota pauses of 500 ms.

mod common;

use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, Script, USER};
use common::{TestRelay, WAIT, config_for, submit, without_trace_header};

const MSG: &[u8] = b"Subject: fault\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <f@app>\r\n\r\nbody\r\n";

/// Fast pauses, and anything in `extra` (more `[upstream]` keys, then other sections).
fn config(up: &FakeUpstream, upstream_extra: &str) -> String {
    format!(
        "{}\n[delivery]\nauth_pause_min = \"100ms\"\nauth_pause_max = \"400ms\"\nquota_pause = \"500ms\"\n",
        config_for(up, upstream_extra)
    )
}

async fn start(mode: Mode, script: Script) -> (FakeUpstream, TestRelay) {
    let up = FakeUpstream::start(mode, script).await;
    let relay = TestRelay::start(&config(&up, "")).await;
    (up, relay)
}

async fn send_one(relay: &TestRelay) {
    let reply = submit(relay.addr(), "app@example.com", &["a@example.com"], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

/// Nothing bounced, nothing failed, nothing lost: the message was delivered exactly once.
async fn delivered_once(up: &FakeUpstream, relay: &mut TestRelay) {
    up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.messages().len(), 1, "delivered exactly once");
    assert!(relay.files("failed").is_empty(), "nothing failed");
    relay.stop().await;
}

#[tokio::test]
async fn connection_refused_keeps_the_message_until_the_upstream_is_back() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.stop();
    let mut relay = TestRelay::start(&config(&up, "")).await;
    send_one(&relay).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(relay.queued(), 1, "kept while refused");
    assert!(relay.files("failed").is_empty());
    up.resume().await;
    delivered_once(&up, &mut relay).await;
}

#[tokio::test]
async fn a_stalled_upstream_times_out_and_the_message_waits() {
    let script = Script {
        stall: 2,
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let cfg = config(&up, "").replace("timeout = \"5s\"", "timeout = \"300ms\"");
    let mut relay = TestRelay::start(&cfg).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert!(
        up.record(|r| r.connections) >= 3,
        "two stalled connections, then one that worked"
    );
}

#[tokio::test]
async fn a_failed_tls_handshake_sends_nothing_and_retries() {
    let script = Script {
        tls_garbage: 2,
        ..Script::default()
    };
    let (up, mut relay) = start(Mode::Implicit, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert_eq!(
        up.count("AUTH"),
        1,
        "credentials only over the working TLS connection"
    );
}

#[tokio::test]
async fn a_421_greeting_defers() {
    let mut script = Script::default();
    script
        .greetings
        .push_back("421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp".into());
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
}

#[tokio::test]
async fn a_454_at_auth_pauses_then_delivers() {
    let mut script = Script::default();
    script
        .auth_replies
        .push_back("454 4.7.0 Too many login attempts, please try again later. - gsmtp".into());
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert_eq!(
        up.count("AUTH"),
        2,
        "one refused login, one after the pause, no login loop"
    );
}

#[tokio::test]
async fn a_535_at_auth_pauses_without_bouncing_and_delivers_once_the_password_is_fixed() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config(&up, "")).await;
    relay.env.insert(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".into(),
        "revoked-app-password".into(),
    );
    relay.restart().await;
    for _ in 0..3 {
        send_one(&relay).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(relay.queued(), 3, "everything kept");
    assert!(
        relay.files("failed").is_empty(),
        "nothing bounced for a refused login"
    );
    let logins = up.count("AUTH");
    assert!(
        (2..=6).contains(&logins),
        "a few probes, no login storm: {logins} in 1.5 s"
    );
    assert_eq!(up.count("MAIL"), 0);

    relay.env.insert(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".into(),
        common::upstream::PASSWORD.into(),
    );
    relay.restart().await;
    up.wait_for(3, WAIT).await;
    relay.wait_queue_empty().await;
    assert!(relay.files("failed").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn gmails_daily_limit_pauses_everything_without_bouncing() {
    let mut script = Script::default();
    script.data_replies.push_back(
        "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n550 5.4.5 sending limits go to https://support.google.com/a/answer/166852 - gsmtp".into(),
    );
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config(&up, "max_connections = 1")).await;
    send_one(&relay).await;
    // Wait for the refusal, then queue a second message: it must wait out the quota pause.
    let deadline = tokio::time::Instant::now() + WAIT;
    while up.message_attempts() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send_one(&relay).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        up.count("MAIL"),
        1,
        "nothing is tried while the quota is spent"
    );
    up.wait_for(2, WAIT).await;
    relay.wait_queue_empty().await;
    assert!(
        relay.files("failed").is_empty(),
        "never bounced for the quota"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_452_on_the_101st_recipient_sends_the_rest_in_another_transaction() {
    let script = Script {
        max_rcpt_per_tx: Some(100),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config(&up, "max_recipients_per_message = 150")).await;
    let rcpts: Vec<String> = (0..120).map(|i| format!("r{i}@example.com")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let reply = submit(relay.addr(), "app@example.com", &refs, MSG).await;
    assert!(reply.starts_with("250"));
    let got = up.wait_for(2, WAIT).await;
    assert_eq!(got[0].to.len(), 100);
    assert_eq!(got[1].to.len(), 20);
    assert_eq!(up.count("AUTH"), 1, "same connection, same login");
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn more_than_100_recipients_are_split_by_default() {
    let (up, mut relay) = start(Mode::StartTls, Script::default()).await;
    let rcpts: Vec<String> = (0..250).map(|i| format!("r{i}@example.com")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    submit(relay.addr(), "app@example.com", &refs, MSG).await;
    let got = up.wait_for(3, WAIT).await;
    let sizes: Vec<usize> = got.iter().map(|m| m.to.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    relay.stop().await;
}

#[tokio::test]
async fn a_552_after_data_fails_the_message_and_bounces_to_the_sender() {
    let mut script = Script::default();
    script.data_replies.push_back(
        "552-5.2.3 Your message exceeded Google's message size limits. Please visit\r\n552 5.2.3 https://support.google.com/mail/?p=MaxSizeError - gsmtp".into(),
    );
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    let got = up.wait_for(1, WAIT).await;
    let dsn = &got[0];
    assert_eq!(dsn.from, "", "a DSN has the null sender");
    assert_eq!(dsn.to, ["app@example.com"]);
    let text = String::from_utf8_lossy(&dsn.data).to_string();
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; a@example.com"),
        "{text}"
    );
    assert!(text.contains("Status: 5.2.3"), "{text}");
    assert!(
        text.contains("Subject: fault"),
        "the original headers come back: {text}"
    );
    relay.wait_queue_empty().await;
    assert_eq!(
        relay.files("failed").len(),
        2,
        "the original is kept in failed/"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_failed_dsn_is_not_bounced_again() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "a@example.com".into(),
        "550 5.1.1 no such user - gsmtp".into(),
    );
    script.rcpt_replies.insert(
        "app@example.com".into(),
        "550 5.1.1 no such user either - gsmtp".into(),
    );
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    relay.wait_queue_empty().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(up.messages().is_empty());
    assert_eq!(
        relay.files("failed").len(),
        4,
        "the message and its DSN, both failed; no third"
    );
    assert_eq!(up.count("MAIL"), 2);
    relay.stop().await;
}

#[tokio::test]
async fn bounces_can_go_to_the_postmaster_or_nowhere() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "a@example.com".into(),
        "550 5.1.1 no such user - gsmtp".into(),
    );
    let up = FakeUpstream::start(Mode::StartTls, script.clone()).await;
    let cfg = config(&up, "").replace(
        "[delivery]\n",
        "[delivery]\nbounce = \"postmaster\"\npostmaster = \"pm@example.com\"\n",
    );
    let mut relay = TestRelay::start(&cfg).await;
    send_one(&relay).await;
    assert_eq!(up.wait_for(1, WAIT).await[0].to, ["pm@example.com"]);
    relay.stop().await;

    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let cfg = config(&up, "").replace("[delivery]\n", "[delivery]\nbounce = \"none\"\n");
    let mut relay = TestRelay::start(&cfg).await;
    send_one(&relay).await;
    relay.wait_queue_empty().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.messages().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn a_connection_dropped_in_the_middle_of_data_is_resent_and_delivered_once() {
    // Without CHUNKING: DATA, pipelined after the RCPTs.
    let script = Script {
        drop_in_data: 1,
        no_chunking: true,
        ..Script::default()
    };
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert_eq!(up.count("DATA"), 2);
}

#[tokio::test]
async fn a_connection_dropped_between_bdat_and_its_reply_is_resent_and_delivered_once() {
    let script = Script {
        drop_before_data_reply: 1,
        ..Script::default()
    };
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert_eq!(
        up.message_attempts(),
        2,
        "sent whole twice: once lost, once taken"
    );
    assert_eq!(up.count("DATA"), 0, "as BDAT");
    assert_eq!(up.record(|r| r.connections), 2);
}

#[tokio::test]
async fn a_421_after_data_is_resent_on_a_new_connection() {
    let mut script = Script::default();
    script
        .data_replies
        .push_back("421 4.7.0 Try again later, closing connection. - gsmtp".into());
    let (up, mut relay) = start(Mode::StartTls, script).await;
    send_one(&relay).await;
    delivered_once(&up, &mut relay).await;
    assert_eq!(up.record(|r| r.connections), 2);
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_server_is_replaced_transparently() {
    let script = Script {
        idle_close: Some(Duration::from_millis(300)),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config(&up, "max_connections = 1")).await;
    send_one(&relay).await;
    up.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // the server times the connection out
    send_one(&relay).await;
    up.wait_for(2, WAIT).await;
    relay.wait_queue_empty().await;
    assert_eq!(up.record(|r| r.connections), 2, "one reconnect, no failure");
    assert!(relay.files("failed").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn a_message_over_the_upstream_size_fails_at_once_without_being_sent() {
    let script = Script {
        size: Some(3000),
        ..Script::default()
    };
    let (up, mut relay) = start(Mode::StartTls, script).await;
    let mut big = MSG.to_vec();
    big.extend_from_slice(&[b'x'; 4000]);
    big.extend_from_slice(b"\r\n");
    submit(relay.addr(), "app@example.com", &["a@example.com"], &big).await;
    let got = up.wait_for(1, WAIT).await; // the DSN, which is small
    let text = String::from_utf8_lossy(&got[0].data).to_string();
    assert!(text.contains("EHLO SIZE"), "{text}");
    assert_eq!(
        up.message_attempts(),
        1,
        "only the DSN was sent: the big one never was"
    );
    relay.stop().await;
}

#[tokio::test]
async fn five_hundred_messages_take_two_logins() {
    let (up, mut relay) = start(Mode::StartTls, Script::default()).await;
    let addr = relay.addr();
    let clients: Vec<_> = (0..10)
        .map(|c| {
            tokio::spawn(async move {
                for i in 0..50 {
                    let body = format!("Subject: {c}-{i}\r\n\r\nx\r\n");
                    assert!(
                        submit(addr, "app@example.com", &["a@example.com"], body.as_bytes())
                            .await
                            .starts_with("250")
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    up.wait_for(500, WAIT * 3).await;
    relay.wait_queue_empty().await;
    let logins = up.count("AUTH");
    let connections = up.record(|r| r.connections);
    println!("500 messages: {logins} logins, {connections} upstream connections");
    assert!(logins <= 2, "{logins} logins for 500 messages");
    assert!(
        connections <= 2,
        "{connections} connections for 500 messages"
    );
    assert!(
        up.messages()
            .iter()
            .all(|m| m.user.as_deref() == Some(USER))
    );
    let _ = without_trace_header;
    relay.stop().await;
}

/// Exim says a bare `452 too many recipients` (no enhanced code) when a transaction is full:
/// the rest go at once in another transaction, not a retry interval later.
#[tokio::test]
async fn a_bare_452_after_an_accepted_recipient_sends_the_rest_at_once() {
    let script = Script {
        max_rcpt_per_tx: Some(2),
        too_many_rcpt_reply: Some("452 too many recipients".into()),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let slow = common::slow_retries(&config(&up, ""));
    let mut relay = TestRelay::start(&slow).await;
    let to = ["a@example.com", "b@example.com", "c@example.com"];
    assert!(
        submit(
            relay.addr(),
            "app@example.com",
            &to,
            b"Subject: x\r\n\r\nx\r\n"
        )
        .await
        .starts_with("250")
    );
    let got = up.wait_for(2, Duration::from_secs(10)).await;
    let mut all: Vec<String> = got.iter().flat_map(|m| m.to.clone()).collect();
    all.sort();
    assert_eq!(all, to, "each recipient once, in two transactions");
    relay.wait_queue_empty().await;
    relay.stop().await;
}
