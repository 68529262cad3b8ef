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

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// The relay binary in its own process (so its memory can be measured alone), on a free port.
struct Child {
    process: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn relay_process(listen_extra: &str) -> Child {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = intake_config(listen_extra).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("relay.toml"), config).unwrap();
    let process = std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"))
        .args(["serve", "--config"])
        .arg(dir.path().join("relay.toml"))
        .env("GMAIL_RELAY__UPSTREAM__PASSWORD", "unused")
        .env("GMAIL_RELAY__LOG__LEVEL", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Child {
        process,
        addr,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_100_mb_line_without_newline_is_refused_in_bounded_memory() {
    let relay = relay_process("max_message_size = 1000000").await;
    let pid = relay.process.id();
    let mut c = Client::connect(relay.addr).await;
    c.reply().await;
    for cmd in [
        "HELO big",
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.com>",
    ] {
        assert!(c.cmd(cmd).await.starts_with("250"));
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    let before = rss_mib(pid);
    let chunk = vec![b'x'; 1 << 20];
    let mut peak = before;
    for _ in 0..100 {
        c.send(&chunk).await;
        peak = peak.max(rss_mib(pid));
    }
    c.send(b"\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    assert!(
        peak < before + 16,
        "the relay grew from {before} MiB to {peak} MiB while 100 MB streamed in"
    );
    let queue = relay._dir.path().join("spool/queue");
    assert_eq!(
        std::fs::read_dir(queue).unwrap().count(),
        0,
        "nothing queued"
    );
}

#[tokio::test]
async fn replies_say_nothing_about_the_upstream_account() {
    let mut relay = TestRelay::start(&intake_config("max_recipients = 1")).await;
    let mut c = Client::connect(relay.addr()).await;
    let mut all = c.reply().await;
    for cmd in [
        "EHLO probe",
        "HELP",
        "VRFY relay",
        "EXPN staff",
        "AUTH PLAIN",
        "MAIL FROM:<a@b.c> SIZE=999999999",
        "MAIL FROM:<a@b.c>",
        "RCPT TO:<x@y.z>",
        "RCPT TO:<w@y.z>",
        "NOOP",
        "FOO",
        "QUIT",
    ] {
        all.push_str(&c.cmd(cmd).await);
        all.push('\n');
    }
    let user = common::upstream::USER;
    for secret in [user, "gmail.com", "127.0.0.1:9", "port 9"] {
        assert!(
            !all.to_lowercase().contains(secret),
            "{secret:?} in replies:\n{all}"
        );
    }
    relay.stop().await;
}

/// swaks (a third-party SMTP client) with `--pipeline`: MAIL, three RCPTs and DATA in one
/// write. Skipped where swaks is not installed, unless GMAIL_RELAY_REQUIRE_SWAKS is set (CI
/// installs it and sets that).
#[tokio::test]
async fn swaks_pipelines_a_multi_recipient_submission() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("GMAIL_RELAY_REQUIRE_SWAKS").is_none(),
            "swaks is required here: apt-get install swaks"
        );
        eprintln!("skipped: swaks is not installed");
        return;
    }
    let mut relay = TestRelay::start(&intake_config("")).await;
    let server = relay.addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("swaks")
            .args([
                "--server",
                &server,
                "--pipeline",
                "--from",
                "app@example.com",
            ])
            .args([
                "--to",
                "a@example.com,b@example.com,c@example.com",
                "--header",
                "Subject: swaks",
            ])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains(" -> MAIL FROM:<app@example.com>\n -> RCPT TO:<a@example.com>\n -> RCPT TO:<b@example.com>\n -> RCPT TO:<c@example.com>\n -> DATA\n"),
        "sent as one pipelined batch: {transcript}"
    );
    assert!(
        transcript.contains("<-  250 2.0.0 OK queued as"),
        "{transcript}"
    );
    let stored = relay.stored();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1,
        ["a@example.com", "b@example.com", "c@example.com"]
    );
    relay.stop().await;
}
