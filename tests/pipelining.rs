//! PIPELINING and CHUNKING on the upstream side: MAIL, every RCPT and the message in one write,
//! one round trip per message on a warm connection; per-recipient outcomes exactly as one
//! command at a time; chunked BDAT for a large message; and the fallbacks (no CHUNKING: DATA
//! pipelined, two round trips; neither, or `upstream.pipelining = false`: four).
//!
//! The fake Gmail sends its pending replies together when it needs more input, after a
//! scripted delay: each delay is one round trip, as a distant server costs.

mod common;

use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, Received, Script};
use common::{TestRelay, WAIT, config_for, submit, without_trace_header};

const MSG: &[u8] = b"Subject: pipelined\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@app.test>\r\n\r\nbody\r\n";

/// A delay per round trip that dwarfs the processing on loopback.
const D: Duration = Duration::from_millis(80);

async fn relay_for(up: &FakeUpstream, upstream_extra: &str) -> TestRelay {
    TestRelay::start(&config_for(up, upstream_extra)).await
}

async fn send(relay: &TestRelay, to: &[&str], body: &[u8]) {
    let reply = submit(relay.addr(), "app@example.com", to, body).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

/// Round trips of the second and third messages on a warm connection, and the time between
/// their arrivals (the second's transaction ending, then the whole third one): one round trip
/// each when pipelined with BDAT.
async fn warm_round_trips(script: Script, upstream_extra: &str) -> (Vec<Received>, Duration) {
    let up = FakeUpstream::start(
        Mode::StartTls,
        Script {
            reply_delay: Some(D),
            ..script
        },
    )
    .await;
    let extra = format!("max_connections = 1\n{upstream_extra}");
    let mut relay = relay_for(&up, &extra).await;
    send(&relay, &["a@example.com"], MSG).await;
    up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    send(&relay, &["b@example.com"], MSG).await;
    send(&relay, &["c@example.com"], MSG).await;
    let got = up.wait_for(3, WAIT).await;
    relay.wait_queue_empty().await;
    relay.stop().await;
    assert_eq!(up.record(|r| r.connections), 1, "one warm connection");
    let gap = got[2].at.duration_since(got[1].at);
    (got, gap)
}

#[tokio::test]
async fn a_warm_connection_sends_a_message_in_one_round_trip() {
    let (got, gap) = warm_round_trips(Script::default(), "").await;
    println!("pipelined + BDAT: gap {gap:?} (D = {D:?})");
    for m in &got[1..] {
        assert_eq!(m.round_trips, 1, "MAIL, RCPT and BDAT LAST in one batch");
        assert_eq!(m.bdat_chunks, 1);
    }
    // The third message waits for the second's reply (one D) and then needs none itself.
    assert!(
        gap >= D && gap < D * 2,
        "{gap:?}: about one round trip of {D:?}"
    );
}

#[tokio::test]
async fn without_chunking_data_is_pipelined_in_two_round_trips() {
    let script = Script {
        no_chunking: true,
        ..Script::default()
    };
    let (got, gap) = warm_round_trips(script, "").await;
    println!("pipelined + DATA: gap {gap:?} (D = {D:?})");
    for m in &got[1..] {
        assert_eq!(
            m.round_trips, 2,
            "MAIL+RCPT+DATA, then the message after the 354"
        );
        assert_eq!(m.bdat_chunks, 0);
    }
    assert!(gap >= D * 2 && gap < D * 3, "{gap:?}");
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let script = Script {
        no_pipelining: true,
        ..Script::default()
    };
    let (got, gap) = warm_round_trips(script, "").await;
    println!("one command at a time: gap {gap:?} (D = {D:?})");
    for m in &got[1..] {
        assert_eq!(m.round_trips, 4, "MAIL, RCPT, DATA, the message");
        assert_eq!(m.bdat_chunks, 0, "BDAT is only used pipelined");
    }
    assert!(gap >= D * 4, "{gap:?}");

    // The switch for a misbehaving server: offered, but not used.
    let (got, _) = warm_round_trips(Script::default(), "pipelining = false").await;
    assert!(
        got[1..]
            .iter()
            .all(|m| m.round_trips == 4 && m.bdat_chunks == 0)
    );
}

#[tokio::test]
async fn mixed_recipient_outcomes_in_one_batch_settle_each_recipient() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "gone@example.com".into(),
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 https://support.google.com/mail/?p=NoSuchUser - gsmtp".into(),
    );
    script.rcpt_replies.insert(
        "busy@example.com".into(),
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. - gsmtp".into(),
    );
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = relay_for(&up, "").await;
    send(
        &relay,
        &[
            "a@example.com",
            "gone@example.com",
            "busy@example.com",
            "b@example.com",
        ],
        MSG,
    )
    .await;
    let first = up.wait_for(1, WAIT).await;
    assert_eq!(first[0].to, ["a@example.com", "b@example.com"]);
    assert_eq!(first[0].bdat_chunks, 1);
    // busy@ is tried again later; gone@ fails with a DSN to the sender.
    up.script(|s| {
        s.rcpt_replies.remove("busy@example.com");
    });
    let got = up.wait_for(3, WAIT).await;
    relay.wait_queue_empty().await;
    let to: Vec<String> = got.iter().map(|m| m.to.join(",")).collect();
    assert!(to.contains(&"busy@example.com".to_owned()), "{to:?}");
    let dsn = got.iter().find(|m| m.from.is_empty()).expect("a DSN");
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; gone@example.com") && text.contains("5.1.1"),
        "{text}"
    );
    assert!(!text.contains("Final-Recipient: rfc822; a@example.com"));
    relay.stop().await;
}

#[tokio::test]
async fn a_452_in_a_pipelined_batch_leaves_the_rest_for_the_next_transaction() {
    let script = Script {
        max_rcpt_per_tx: Some(2),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = relay_for(&up, "").await;
    let rcpts = [
        "r1@x.test",
        "r2@x.test",
        "r3@x.test",
        "r4@x.test",
        "r5@x.test",
    ];
    send(&relay, &rcpts, MSG).await;
    let got = up.wait_for(3, WAIT).await;
    relay.wait_queue_empty().await;
    let batches: Vec<Vec<String>> = got.iter().map(|m| m.to.clone()).collect();
    assert_eq!(
        batches,
        [
            vec!["r1@x.test", "r2@x.test"],
            vec!["r3@x.test", "r4@x.test"],
            vec!["r5@x.test"]
        ]
    );
    assert_eq!(
        up.record(|r| r.connections),
        1,
        "at once, on the same connection"
    );
    assert_eq!(
        up.count("RCPT"),
        5 + 3 + 1,
        "the refused RCPTs were sent again"
    );
    assert!(relay.files("failed").is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn bdat_after_every_recipient_was_refused_settles_nothing_new() {
    let mut script = Script::default();
    for r in ["x@example.com", "y@example.com"] {
        script.rcpt_replies.insert(
            r.into(),
            "550 5.1.1 The email account that you tried to reach does not exist. - gsmtp".into(),
        );
    }
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = relay_for(&up, "").await;
    send(&relay, &["x@example.com", "y@example.com"], MSG).await;
    let got = up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    assert_eq!(got[0].from, "", "only the DSN arrived");
    let refused = up.record(|r| r.refused_messages.clone());
    assert!(
        refused.len() == 1
            && refused[0].starts_with("BDAT ")
            && refused[0].ends_with(" LAST: 554 5.5.1 Error: no valid recipients"),
        "the server refused the pipelined BDAT: {refused:?}"
    );
    let failed = relay.files("failed");
    let state = std::fs::read_to_string(relay.spool().join("failed").join(&failed[1])).unwrap();
    assert!(
        state.matches("\"status\": \"failed\"").count() == 2
            && state.matches("5.1.1").count() >= 2
            && !state.contains("\"status\": \"delivered\""),
        "both failed with their RCPT reply, neither counted delivered: {state}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_large_message_goes_in_chunks_byte_identical() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = relay_for(&up, "").await;
    // 5 MB whose lines start with dots: DATA would have to stuff them, BDAT sends them as
    // they are. (The client below stuffs them for the intake's DATA.)
    let mut body = MSG.to_vec();
    let line = b".a line that starts with a dot, as DATA would have to stuff it......\r\n";
    while body.len() < 5_000_000 {
        body.extend_from_slice(line);
    }
    let mut stuffed = MSG.to_vec();
    for l in body[MSG.len()..].split_inclusive(|&b| b == b'\n') {
        stuffed.push(b'.');
        stuffed.extend_from_slice(l);
    }
    send(&relay, &["a@example.com"], &stuffed).await;
    let got = up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    let data = without_trace_header(&got[0].data);
    assert!(
        data == &body[..],
        "byte-identical: {} bytes sent, {} arrived",
        body.len(),
        data.len()
    );
    assert_eq!(
        got[0].bdat_chunks,
        got[0].data.len().div_ceil(1 << 20),
        "1 MiB chunks, the last one LAST"
    );
    assert_eq!(up.count("BDAT") - up.count("BDAT 0"), got[0].bdat_chunks);
    relay.stop().await;
}

#[tokio::test]
async fn a_refused_mail_decides_and_the_pipelined_bdat_settles_nothing() {
    // No AUTH against a server that wants it: MAIL gets 530, the RCPT and BDAT that were
    // pipelined behind it get 503s; the 530 pauses delivery, nothing fails or bounces.
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let cfg = config_for(&up, "auth = \"none\"").replace(
        "[queue]",
        "[delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n[queue]",
    );
    let mut relay = TestRelay::start_with_env(&cfg, Default::default()).await;
    send(&relay, &["a@example.com"], MSG).await;
    common::eventually("the BDAT refused", || {
        !up.record(|r| r.refused_messages.is_empty())
    })
    .await;
    let refused = up.record(|r| r.refused_messages.clone());
    assert!(
        refused[0].starts_with("BDAT ") && refused[0].ends_with(" LAST: 503 5.5.1 MAIL first"),
        "{refused:?}"
    );
    assert_eq!(
        up.count("MAIL"),
        1,
        "paused after the 530, not retried at once"
    );
    assert!(up.messages().is_empty());
    assert!(
        relay.files("failed").is_empty(),
        "nothing failed or bounced"
    );
    assert_eq!(relay.queued_ids().len(), 1, "still queued");
    relay.stop().await;
}

/// A reply that pauses the account at one RCPT of a pipelined batch (Gmail's daily limit):
/// the message went with the batch, so the recipient accepted before it has it; that one
/// waits with the account's pause (nothing fails, no DSN) and goes when the limit passes.
#[tokio::test]
async fn a_pausing_rcpt_reply_in_a_batch_keeps_what_was_accepted_and_holds_the_rest() {
    let mut script = Script::default();
    script.rcpt_replies.insert(
        "second@example.com".into(),
        "550 5.4.5 Daily user sending limit exceeded. - gsmtp".into(),
    );
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&format!(
        "{}\n[delivery]\nquota_pause = \"1s\"\n",
        config_for(&up, "")
    ))
    .await;
    send(&relay, &["first@example.com", "second@example.com"], MSG).await;
    let first = up.wait_for(1, WAIT).await;
    assert_eq!(first[0].to, ["first@example.com"]);
    assert_eq!(first[0].round_trips, 1, "still one batch");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.queued_ids().len(), 1, "second@ waits");
    assert!(relay.files("failed").is_empty(), "nothing failed");

    up.script(|s| {
        s.rcpt_replies.remove("second@example.com");
    });
    let got = up.wait_for(2, WAIT).await;
    assert_eq!(got[1].to, ["second@example.com"]);
    assert!(got.iter().all(|m| !m.from.is_empty()), "no DSN");
    relay.wait_queue_empty().await;
    relay.stop().await;
}
