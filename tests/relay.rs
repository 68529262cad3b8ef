//! End to end: a client submits to the relay started in process, the relay forwards to a fake
//! Gmail with real TLS. Each test names the behaviour it proves.

mod common;

use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, Script, USER};
use common::{Client, TestRelay, WAIT, config_for, submit, without_trace_header};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// A message as its author wrote it (complete headers; one line starts with a dot).
const BODY: &[u8] = b"From: App <app@example.com>\r\nTo: a@example.com\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@app.example.com>\r\n\r\nline one\r\n.starts with a dot\r\n\r\nlast line\r\n";
/// The same message as a raw client puts it after DATA (dot-stuffed).
const WIRE: &[u8] = b"From: App <app@example.com>\r\nTo: a@example.com\r\nSubject: hello\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@app.example.com>\r\n\r\nline one\r\n..starts with a dot\r\n\r\nlast line\r\n";

async fn lettre_submit(relay: &TestRelay, from: &str, to: &[&str], body: &[u8]) {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr().port())
        .build();
    let envelope = Envelope::new(
        Some(from.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap();
    let response = transport.send_raw(&envelope, body).await.unwrap();
    assert_eq!(response.code().to_string(), "250");
}

#[tokio::test]
async fn starttls_and_auth_plain_deliver_the_same_envelope_and_bytes() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    // lettre dot-stuffs and ends the data with CRLF.CRLF itself, so it gets the message
    // without its last line ending.
    lettre_submit(
        &relay,
        "app@example.com",
        &["a@example.com", "b@example.com"],
        &BODY[..BODY.len() - 2],
    )
    .await;

    let got = up.wait_for(1, WAIT).await;
    let m = &got[0];
    assert_eq!(m.from, "app@example.com");
    assert_eq!(m.to, ["a@example.com", "b@example.com"]);
    assert!(m.tls, "mail went over TLS");
    assert_eq!(m.user.as_deref(), Some(USER));
    assert_eq!(without_trace_header(&m.data), BODY);
    assert_eq!(up.record(|r| r.mechanisms.clone()), ["PLAIN"]);
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn implicit_tls_delivers_the_same_bytes() {
    let up = FakeUpstream::start(Mode::Implicit, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    assert!(
        submit(relay.addr(), "app@example.com", &["a@example.com"], WIRE)
            .await
            .starts_with("250 2.0.0")
    );
    let got = up.wait_for(1, WAIT).await;
    assert!(got[0].tls);
    assert_eq!(without_trace_header(&got[0].data), BODY);
    assert!(!up.record(|r| r.commands.iter().any(|c| c == "STARTTLS")));
    relay.stop().await;
}

#[tokio::test]
async fn auth_login_is_used_when_plain_is_not_offered() {
    let script = Script {
        auth_mechanisms: Some("LOGIN"),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    submit(relay.addr(), "app@example.com", &["a@example.com"], WIRE).await;
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].user.as_deref(), Some(USER));
    assert_eq!(up.record(|r| r.mechanisms.clone()), ["LOGIN"]);
    relay.stop().await;
}

#[tokio::test]
async fn null_sender_is_accepted_and_forwarded() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    assert!(
        submit(relay.addr(), "", &["a@example.com"], WIRE)
            .await
            .starts_with("250 2.0.0")
    );
    assert_eq!(up.wait_for(1, WAIT).await[0].from, "");
    relay.stop().await;
}

/// Waits long enough for several retry rounds (retry_min is 100ms in these tests).
async fn several_retry_rounds() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// The relay tried more than once, never sent AUTH or MAIL, and kept the message.
fn assert_no_login_and_still_queued(up: &FakeUpstream, relay: &TestRelay) {
    let commands = up.record(|r| r.commands.clone());
    assert!(
        up.record(|r| r.connections) >= 2,
        "it retried: {commands:?}"
    );
    let sent = |c: &String| c.starts_with("AUTH") || c.starts_with("MAIL");
    assert!(!commands.iter().any(sent), "{commands:?}");
    assert!(up.messages().is_empty());
    assert_eq!(relay.queued(), 1, "still queued");
    assert!(relay.files("failed").is_empty(), "not bounced");
}

#[tokio::test]
async fn no_starttls_means_no_auth_and_the_message_stays_queued() {
    let script = Script {
        no_starttls: true,
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    assert!(
        submit(relay.addr(), "app@example.com", &["a@example.com"], WIRE)
            .await
            .starts_with("250")
    );
    several_retry_rounds().await;
    assert_no_login_and_still_queued(&up, &relay);
    relay.stop().await;
}

#[tokio::test]
async fn untrusted_certificate_means_no_auth_and_the_message_stays_queued() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let config =
        config_for(&up, "").replace(&format!("ca_file = \"{}\"", up.ca_file.display()), "");
    let mut relay = TestRelay::start(&config).await;
    assert!(
        submit(relay.addr(), "app@example.com", &["a@example.com"], WIRE)
            .await
            .starts_with("250")
    );
    several_retry_rounds().await;
    assert!(up.record(|r| r.commands.iter().any(|c| c == "STARTTLS")));
    assert_no_login_and_still_queued(&up, &relay);
    relay.stop().await;
}

#[tokio::test]
async fn a_rejected_recipient_fails_alone_and_the_other_is_delivered() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "gone@example.com".into(),
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 https://support.google.com/mail/?p=NoSuchUser - gsmtp".into(),
    );
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    submit(
        relay.addr(),
        "app@example.com",
        &["gone@example.com", "ok@example.com"],
        WIRE,
    )
    .await;
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].to, ["ok@example.com"]);
    relay.wait_queue_empty().await;
    // The message is kept in the failed area with the refused recipient and the reply.
    let failed = relay.files("failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    let state = std::fs::read_to_string(relay.spool().join("failed").join(&failed[1])).unwrap();
    assert!(
        state.contains("\"status\": \"failed\"") && state.contains("5.1.1"),
        "{state}"
    );
    assert!(state.contains("\"status\": \"delivered\""), "{state}");
    relay.stop().await;
}

#[tokio::test]
async fn a_451_is_retried_and_the_message_delivered_once() {
    let mut script = Script::default();
    script
        .data_replies
        .push_back("451 4.3.0 Mail server temporarily rejected message. - gsmtp".into());
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    submit(relay.addr(), "app@example.com", &["a@example.com"], WIRE).await;
    up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    several_retry_rounds().await;
    assert_eq!(up.messages().len(), 1, "delivered exactly once");
    assert_eq!(up.message_attempts(), 2);
    assert!(relay.files("failed").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn mail_accepted_while_the_upstream_is_down_is_delivered_after_a_restart() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.stop();
    let config = config_for(&up, "");
    let mut relay = TestRelay::start(&config).await;
    for i in 0..3 {
        let body = format!(
            "Subject: {i}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}@app>\r\n\r\nbody {i}\r\n"
        );
        assert!(
            submit(
                relay.addr(),
                "app@example.com",
                &["a@example.com"],
                body.as_bytes()
            )
            .await
            .starts_with("250")
        );
    }
    relay.stop().await;
    assert_eq!(relay.queued(), 3);

    // The upstream comes back on the same port; the relay restarts on the same spool.
    up.resume().await;
    relay.restart().await;
    let got = up.wait_for(3, WAIT).await;
    let mut subjects: Vec<String> = got
        .iter()
        .map(|m| {
            String::from_utf8_lossy(without_trace_header(&m.data))
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["Subject: 0", "Subject: 1", "Subject: 2"]);
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn authenticated_connections_are_reused_across_messages() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "max_connections = 1")).await;
    for i in 0..10 {
        submit(
            relay.addr(),
            "app@example.com",
            &["a@example.com"],
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        )
        .await;
    }
    up.wait_for(10, WAIT).await;
    assert_eq!(
        up.record(|r| r.auth_attempts),
        1,
        "one login for ten messages"
    );
    assert_eq!(up.record(|r| r.connections), 1);
    relay.stop().await;
}

#[tokio::test]
async fn a_client_outside_allowed_networks_gets_554_and_nothing_is_queued() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let config = config_for(&up, "").replace(
        "hostname = \"relay.test\"",
        "hostname = \"relay.test\"\nallowed_networks = [\"10.0.0.0/8\"]",
    );
    let mut relay = TestRelay::start(&config).await;
    let mut c = Client::connect(relay.addr()).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    c.send(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n").await;
    assert_eq!(c.reply().await, "", "connection closed after the 554");
    assert!(relay.files("queue").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn a_second_relay_on_the_same_spool_is_refused_with_a_clear_error() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    let cfg = gmail_relay::config::load_with_env(&relay.config, Some(relay.env.clone())).unwrap();
    let err = gmail_relay::daemon::Daemon::start(cfg)
        .await
        .err()
        .expect("must refuse");
    let text = err.to_string();
    assert!(
        text.contains("in use by another gmail-relay")
            && text.contains(&relay.spool().display().to_string()),
        "{text}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn legacy_messages_get_date_and_message_id_and_lose_bcc() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    let legacy = b"From: printer@example.com\r\nTo: a@example.com\r\nBcc: boss@example.com\r\nSubject: scan\r\n\r\nscan attached\r\n";
    for _ in 0..2 {
        submit(
            relay.addr(),
            "printer@example.com",
            &["a@example.com", "boss@example.com"],
            legacy,
        )
        .await;
    }
    let got = up.wait_for(2, WAIT).await;
    let mut ids = Vec::new();
    for m in &got {
        assert_eq!(
            m.to,
            ["a@example.com", "boss@example.com"],
            "Bcc recipient still gets it"
        );
        let text = String::from_utf8_lossy(without_trace_header(&m.data)).to_string();
        assert!(text.starts_with("Date: "), "{text}");
        let id_line = text
            .lines()
            .find(|l| l.starts_with("Message-ID: <"))
            .unwrap()
            .to_string();
        assert!(id_line.ends_with("@relay.test>"), "{id_line}");
        ids.push(id_line);
        assert!(!text.contains("Bcc") && !text.contains("boss@"), "{text}");
        assert!(text.ends_with("From: printer@example.com\r\nTo: a@example.com\r\nSubject: scan\r\n\r\nscan attached\r\n"), "{text}");
    }
    assert_ne!(ids[0], ids[1], "Message-IDs are unique");
    relay.stop().await;
}

#[tokio::test]
async fn lines_starting_with_dots_reach_the_upstream_byte_exact() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    let head =
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dots@app>\r\nSubject: dots\r\n\r\n";
    // As the author wrote it, and as a client stuffs it on the wire.
    let lines = [".", "..", "...", ". leading", ".x.", "a.", "", "."];
    let written: String = head.to_string() + &lines.map(|l| format!("{l}\r\n")).concat();
    let stuffed: String = head.to_string()
        + &lines
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}\r\n")
                } else {
                    format!("{l}\r\n")
                }
            })
            .concat();
    submit(
        relay.addr(),
        "app@example.com",
        &["a@example.com"],
        stuffed.as_bytes(),
    )
    .await;
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(
        String::from_utf8_lossy(without_trace_header(&got[0].data)),
        written
    );
    relay.stop().await;
}

#[tokio::test]
async fn rewrites_to_the_account_when_asked() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let cfg = format!(
        "{}\n[rewrite]\nenvelope_from = \"account\"\nheader_from = \"account\"\n",
        config_for(&up, "")
    );
    let mut relay = TestRelay::start(&cfg).await;
    let msg = b"From: \"Printer 3F\" <printer@lan.test>\r\nSubject: scan\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <s@lan>\r\n\r\nscan\r\n";
    submit(relay.addr(), "printer@lan.test", &["a@example.com"], msg).await;
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].from, USER, "envelope sender is the account");
    let text = String::from_utf8_lossy(without_trace_header(&got[0].data)).to_string();
    assert!(
        text.starts_with(&format!(
            "From: \"Printer 3F\" <{USER}>\r\nReply-To: \"Printer 3F\" <printer@lan.test>\r\nSubject: scan\r\n"
        )),
        "{text}"
    );
    relay.stop().await;
}

/// A message of exactly the default `listen.max_message_size` gets through Gmail's SIZE with
/// the headers the relay adds; two in a row, each accepted and delivered (a field report saw
/// the first bounced as too large, and once a 451 for the second).
#[tokio::test]
async fn messages_at_the_default_size_limit_are_delivered_not_bounced() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    let limit = gmail_relay::config::defaults::number("listen.max_message_size") as usize;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() + 80 < limit - 2 {
        body.extend_from_slice(&[b'x'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    body.resize(limit - 2, b'y');
    body.extend_from_slice(b"\r\n");
    assert_eq!(body.len(), limit);
    for n in 1..=2 {
        let reply = submit(relay.addr(), "app@example.com", &["a@example.com"], &body).await;
        assert!(reply.starts_with("250 2.0.0"), "message {n}: {reply}");
    }
    let got = up.wait_for(2, WAIT).await;
    for m in &got {
        assert!(
            m.data.len() > limit && m.data.len() <= 35_882_577,
            "{}",
            m.data.len()
        );
    }
    relay.wait_queue_empty().await;
    assert!(relay.files("failed").is_empty(), "nothing bounced");
    relay.stop().await;
}
