//! Intake conformance: SMTP dialog transcripts (tests/dialogs/*.smtp) against the relay
//! started in process, plus what ended up in the queue.

mod common;

use common::{Client, TestRelay, dialog, intake_config};

/// Starts a relay that only queues, with `listen_extra` in `[listen]`, and runs a transcript.
async fn run(transcript: &str, listen_extra: &str) -> TestRelay {
    let relay = TestRelay::start(&intake_config(listen_extra)).await;
    dialog::run(relay.addr(), transcript).await;
    relay
}

#[tokio::test]
async fn null_sender_space_after_colon_any_case_and_no_brackets() {
    let mut relay = run("null_sender_and_legacy_forms.smtp", "").await;
    let stored = relay.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "app@example.com");
    assert_eq!(stored[0].1, ["b@example.com"]);
    relay.stop().await;
}

#[tokio::test]
async fn esmtp_parameters_size_body_smtputf8_and_unknown() {
    let mut relay = run("esmtp_parameters.smtp", "max_message_size = 1000").await;
    let stored = relay.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "δοκιμή@παράδειγμα.δοκιμή");
    assert_eq!(stored[0].1, ["用户@例子.广告"]);
    let received = String::from_utf8_lossy(&stored[0].2).to_string();
    assert!(received.contains("with UTF8SMTP id"), "{received}");
    relay.stop().await;
}

#[tokio::test]
async fn pipelined_batches_and_two_transactions_with_rset() {
    let mut relay = run("pipelining.smtp", "").await;
    let stored = relay.stored();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1, ["b@example.com", "c@example.com"]);
    assert_eq!(stored[1].1, ["e@example.com"], "the RSET dropped d@");
    relay.stop().await;
}

#[tokio::test]
async fn out_of_sequence_unknown_nameless_helo_and_too_many_recipients() {
    let mut relay = run("sequence_and_errors.smtp", "max_recipients = 2").await;
    assert!(relay.stored().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn exactly_the_size_limit_is_accepted_one_byte_more_is_not() {
    let mut relay = run("size_limit.smtp", "max_message_size = 100").await;
    let stored = relay.stored();
    assert_eq!(stored.len(), 1, "only the message at the limit is queued");
    assert!(
        stored[0]
            .2
            .ends_with(&[[b'x'; 84].as_slice(), b"\r\n"].concat())
    );
    assert!(relay.files("tmp").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn bare_lf_is_stored_as_crlf_and_smuggling_stays_one_message() {
    let mut relay = run("bare_lf_and_smuggling.smtp", "").await;
    let stored = relay.stored();
    assert_eq!(stored.len(), 1, "one transaction, not five");
    assert_eq!(
        stored[0].1,
        ["b@example.com"],
        "victim@ never became a recipient"
    );
    let body = &stored[0].2;
    let text = String::from_utf8_lossy(body);
    for n in 1..=4 {
        assert!(text.contains(&format!("smuggled {n}\r\n")), "{text}");
    }
    assert_eq!(text.matches("MAIL FROM:<evil@example.com>").count(), 4);
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            assert_eq!(body[i - 1], b'\r', "bare LF stored at byte {i}: {text:?}");
        }
    }
    assert!(text.ends_with("bare lf line\r\nend\r\n"), "{text:?}");
    relay.stop().await;
}

#[tokio::test]
async fn sender_and_recipient_allowlists_refuse_with_550() {
    let mut relay = run(
        "allowlists.smtp",
        "allowed_senders = [\"@example.com\", \"<>\"]\nallowed_recipients = [\"@example.com\", \"boss@partner.test\"]",
    )
    .await;
    relay.stop().await;
}

/// Opens a connection and returns its greeting.
async fn greeting(relay: &TestRelay) -> (Client, String) {
    let mut c = Client::connect(relay.addr()).await;
    let g = c.reply().await;
    (c, g)
}

#[tokio::test]
async fn a_client_over_its_connection_limit_gets_421_at_once() {
    let mut relay = TestRelay::start(&intake_config("max_connections_per_client = 2")).await;
    let (_a, g1) = greeting(&relay).await;
    let (_b, g2) = greeting(&relay).await;
    assert!(g1.starts_with("220") && g2.starts_with("220"));
    let (mut c, g3) = greeting(&relay).await;
    assert!(g3.starts_with("421 4.7.0"), "{g3}");
    assert_eq!(c.reply().await, "", "and is disconnected");
    drop(_a);
    // The slot comes back once the first connection is gone.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (_d, g) = greeting(&relay).await;
        if g.starts_with("220") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn connections_over_the_total_limit_get_421_at_once() {
    let mut relay = TestRelay::start(&intake_config("max_connections = 3")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (c, g) = greeting(&relay).await;
        assert!(g.starts_with("220"), "{g}");
        open.push(c);
    }
    let (_c, g) = greeting(&relay).await;
    assert!(g.starts_with("421 4.7.0"), "{g}");
    relay.stop().await;
}
