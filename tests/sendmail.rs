//! The sendmail interface (the real binary) handing messages to an in-process relay, as cron,
//! PHP and git send-email call it; and its exit codes when it cannot.

mod common;

use common::upstream::{FakeUpstream, Mode, Script};
use common::{Run, TestRelay, WAIT, config_for, run_binary, without_trace_header};

async fn sendmail(relay: &TestRelay, args: &[&str], stdin: &[u8]) -> Run {
    let mut all = vec![
        "sendmail".to_owned(),
        "--config".to_owned(),
        relay.config.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run_binary(all, vec![], stdin.to_vec()).await
}

/// A relay forwarding to a fake upstream; `listen_extra` goes into `[listen]`, `extra` at the
/// end. The config file is then rewritten with the port the relay got, so that `sendmail`,
/// reading it, finds the relay.
async fn relay_with(listen_extra: &str, extra: &str) -> (FakeUpstream, TestRelay) {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let config = format!("{}{extra}", config_for(&up, ""))
        .replace("[listen]\n", &format!("[listen]\n{listen_extra}\n"));
    let relay = TestRelay::start(&config).await;
    let bound = config.replace("127.0.0.1:0", &relay.addr().to_string());
    std::fs::write(&relay.config, bound).unwrap();
    (up, relay)
}

async fn relay(extra: &str) -> (FakeUpstream, TestRelay) {
    relay_with("", extra).await
}

#[tokio::test]
async fn minus_t_takes_to_cc_and_bcc_and_bcc_never_reaches_gmail() {
    let (up, mut relay) = relay("").await;
    let msg = b"From: App <app@example.com>\nTo: a@example.com\nCc: \"C, c\" <c@example.com>\nBcc: hidden@example.com\nSubject: -t\n\nbody\n";
    let run = sendmail(&relay, &["-t", "-i", "-f", "bounces@example.com"], msg).await;
    assert_eq!(run.code, 0, "{run:?}");
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].from, "bounces@example.com");
    let mut to = got[0].to.clone();
    to.sort();
    assert_eq!(to, ["a@example.com", "c@example.com", "hidden@example.com"]);
    let data = String::from_utf8_lossy(without_trace_header(&got[0].data)).into_owned();
    assert!(!data.contains("hidden@example.com"), "{data}");
    assert!(
        data.contains("\r\nFrom: App <app@example.com>\r\nTo: a@example.com\r\n"),
        "{data}"
    );
    assert!(data.contains("Message-ID:"), "the relay adds one: {data}");
    relay.stop().await;
}

#[tokio::test]
async fn recipients_as_arguments_with_a_full_name_and_a_dot_line() {
    let (up, mut relay) = relay("").await;
    // cron's command line; without -i a lone "." would end the message, with it not.
    let run = sendmail(
        &relay,
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "-f",
            "cron@example.com",
            "ops@example.com,dev@example.com",
        ],
        b"Subject: cron output\n\nline 1\n.\nline 3\n",
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].from, "cron@example.com");
    assert_eq!(got[0].to, ["ops@example.com", "dev@example.com"]);
    let data = String::from_utf8_lossy(without_trace_header(&got[0].data)).into_owned();
    assert!(
        data.contains("\r\nFrom: \"CronDaemon\" <cron@example.com>\r\nSubject: cron output\r\n"),
        "{data}"
    );
    assert!(data.ends_with("line 1\r\n.\r\nline 3\r\n"), "{data}");

    // Without -i the dot line ends the message.
    let run = sendmail(
        &relay,
        &["a@example.com"],
        b"Subject: dot\n\nbefore\n.\nafter\n",
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let got = up.wait_for(2, WAIT).await;
    let data = String::from_utf8_lossy(&got[1].data).into_owned();
    assert!(
        data.ends_with("before\r\n") && !data.contains("after"),
        "{data}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_binary_called_sendmail_finds_its_config_in_the_environment() {
    let (up, mut relay) = relay("\n[sendmail]\nadmin_address = \"ops@example.com\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gmail-relay"), &link).unwrap();
    let config = relay.config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(&link)
            .args(["-oi", "root"])
            .env("GMAIL_RELAY_CONFIG", config)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: smartd\n\nSMART error\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].to,
        ["ops@example.com"],
        "root goes to the admin address"
    );
    relay.stop().await;
}

#[tokio::test]
async fn exit_codes_tell_the_caller_whether_to_retry() {
    let (_up, mut relay) = relay("").await;
    // A local user with no admin address: EX_NOUSER, nothing sent.
    let run = sendmail(&relay, &["root"], b"Subject: x\n\nx\n").await;
    assert_eq!(run.code, 67, "{run:?}");
    assert!(
        run.stderr.contains("sendmail.admin_address"),
        "{}",
        run.stderr
    );
    // No recipients at all: EX_DATAERR.
    let run = sendmail(&relay, &["-t"], b"Subject: x\n\nx\n").await;
    assert_eq!(run.code, 65, "{run:?}");
    // Bad usage: EX_USAGE.
    let run = sendmail(&relay, &["-bs"], b"").await;
    assert_eq!(run.code, 64, "{run:?}");
    relay.stop().await;
    let run = sendmail(&relay, &["a@example.com"], b"Subject: x\n\nx\n").await;
    assert_eq!(run.code, 75, "the relay is down: EX_TEMPFAIL, {run:?}");
    assert!(run.stderr.contains("not running"), "{}", run.stderr);
    // A missing config: EX_CONFIG.
    let run = run_binary(
        vec![
            "sendmail".into(),
            "--config".into(),
            "/nonexistent/relay.toml".into(),
            "a@x".into(),
        ],
        vec![],
        b"x\n".to_vec(),
    )
    .await;
    assert_eq!(run.code, 78, "{run:?}");
}

#[tokio::test]
async fn a_recipient_the_relay_refuses_is_ex_noperm_and_minus_bp_lists_the_queue() {
    let (_up, mut relay) = relay_with(
        "allowed_recipients = [\"@example.com\"]",
        "\n[delivery]\nhold = true\n",
    )
    .await;
    let run = sendmail(&relay, &["someone@elsewhere.test"], b"Subject: x\n\nx\n").await;
    assert_eq!(run.code, 77, "{run:?}");
    let run = sendmail(&relay, &["held@example.com"], b"Subject: x\n\nx\n").await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = sendmail(&relay, &["-bp"], b"").await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("held@example.com"), "{}", run.stdout);
    relay.stop().await;
}

/// Packages run `newaliases` after touching /etc/aliases (as with Postfix); with no alias
/// database it must succeed without a config or a running relay, or their install fails.
#[test]
fn the_binary_called_newaliases_does_nothing_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("newaliases");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gmail-relay"), &link).unwrap();
    let out = std::process::Command::new(&link)
        .env("GMAIL_RELAY_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}
