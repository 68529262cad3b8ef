//! The mail log has every refusal, with its reason and the client: an operator greps one log
//! for why a device's mail did not get in. Clients see the refusal, not the relay's settings.

mod common;

use common::{Client, TestRelay, intake_config, logs};

/// The log lines that mention `needle`.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_refusal_is_one_line_in_the_mail_log_and_the_client_sees_no_setting() {
    let capture = logs::capture();
    let mut relay = TestRelay::start(&intake_config(
        "allowed_senders = [\"@example.com\"]\nallowed_recipients = [\"@example.com\"]\n",
    ))
    .await;

    let mut c = Client::connect(relay.addr()).await;
    c.reply().await;
    c.cmd("EHLO device.lan").await;
    let sender = c.cmd("MAIL FROM:<scanner@elsewhere.test>").await;
    assert!(sender.starts_with("550 5.7.1"), "{sender}");
    c.cmd("MAIL FROM:<scanner@example.com>").await;
    let rcpt = c.cmd("RCPT TO:<someone@gmail.test>").await;
    assert!(rcpt.starts_with("550 5.7.1"), "{rcpt}");
    c.cmd("QUIT").await;
    relay.stop().await;

    // A listener that allows nobody from loopback: the client is refused at connect.
    let mut closed =
        TestRelay::start(&intake_config("allowed_networks = [\"10.0.0.0/8\"]\n")).await;
    let mut c = Client::connect(closed.addr()).await;
    let greeting = c.reply().await;
    println!("client sees: {greeting}");
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    assert!(
        !greeting.contains("listen.") && !greeting.contains("allowed_networks"),
        "the setting is for the log, not the client: {greeting}"
    );
    closed.stop().await;

    let log = capture.text();
    let sender = lines_with(&log, "sender refused");
    let rcpt = lines_with(&log, "recipient refused");
    let client = lines_with(&log, "client refused");
    for line in sender.iter().chain(&rcpt).chain(&client) {
        println!("{line}");
    }
    assert!(
        sender.iter().any(|l| l.contains("scanner@elsewhere.test")
            && l.contains("client=127.0.0.1")
            && l.contains("550 5.7.1")),
        "{sender:?}"
    );
    assert!(
        rcpt.iter()
            .any(|l| l.contains("someone@gmail.test") && l.contains("550 5.7.1")),
        "{rcpt:?}"
    );
    assert!(
        client
            .iter()
            .any(|l| l.contains("reason=\"not in listen.allowed_networks\"")
                && l.contains("127.0.0.1:")),
        "{client:?}"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("refused"))
            .all(|l| l.contains("gmail_relay::mail")),
        "all in the mail log's target"
    );
}
