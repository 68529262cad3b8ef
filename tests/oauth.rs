//! XOAUTH2 end to end: the relay gets access tokens from a fake token endpoint and logs in to
//! the fake Gmail with them.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::token::TokenEndpoint;
use common::upstream::{FakeUpstream, Mode, Script};
use common::{TestRelay, WAIT, config_for, submit};

const MSG: &[u8] = b"Subject: oauth\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <o@app>\r\n\r\nbody\r\n";

struct Setup {
    up: FakeUpstream,
    ep: TokenEndpoint,
    relay: TestRelay,
    refresh_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A relay using XOAUTH2 with refresh token `refresh` (in a file), fast pauses, and `extra`
/// added to `[upstream.oauth2]`.
async fn setup(script: Script, refresh: &str, extra: &str) -> Setup {
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let ep = TokenEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let refresh_file = dir.path().join("refresh-token");
    std::fs::write(&refresh_file, format!("{refresh}\n")).unwrap();
    let cfg = format!(
        "{}\n[upstream.oauth2]\nclient_id = \"cid.apps.googleusercontent.com\"\nclient_secret = \"csecret\"\n\
         refresh_token_file = \"{}\"\ntoken_url = \"{}\"\n{extra}\n\
         [delivery]\nauth_pause_min = \"100ms\"\nauth_pause_max = \"300ms\"\n",
        config_for(&up, "auth = \"xoauth2\""),
        refresh_file.display(),
        ep.url()
    );
    let relay = TestRelay::start_with_env(&cfg, HashMap::new()).await;
    Setup {
        up,
        ep,
        relay,
        refresh_file,
        _dir: dir,
    }
}

async fn send(relay: &TestRelay) {
    assert!(
        submit(relay.addr(), "app@example.com", &["a@example.com"], MSG)
            .await
            .starts_with("250")
    );
}

#[tokio::test]
async fn the_first_token_is_fetched_and_used_and_no_password_is_sent() {
    let mut s = setup(Script::default(), "1//good", "").await;
    send(&s.relay).await;
    send(&s.relay).await;
    s.up.wait_for(2, WAIT).await;
    assert_eq!(
        s.ep.count(),
        1,
        "one token for both messages (and both connections)"
    );
    let tokens = s.up.record(|r| r.tokens.clone());
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t == "tok-1"),
        "{tokens:?}"
    );
    assert_eq!(
        s.up.count("AUTH XOAUTH2"),
        s.up.count("AUTH"),
        "never a password mechanism"
    );
    let form = s.ep.requests.lock().unwrap()[0].clone();
    assert!(
        form.contains("grant_type=refresh_token") && form.contains("refresh_token=1%2F%2Fgood"),
        "{form}"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_login_retried() {
    let mut script = Script::default();
    script.rejected_tokens.insert("tok-1".into());
    let mut s = setup(script, "1//good", "").await;
    send(&s.relay).await;
    s.up.wait_for(1, WAIT).await;
    assert_eq!(s.up.record(|r| r.tokens.clone()), ["tok-1", "tok-2"]);
    assert_eq!(s.ep.count(), 2, "exactly one refresh after the rejection");
    let answered =
        s.up.record(|r| r.commands.iter().any(|c| c == "(challenge answer: \"\")"));
    assert!(
        answered,
        "the 334 challenge was answered with an empty line"
    );
    s.relay.wait_queue_empty().await;
    assert!(s.relay.files("failed").is_empty());
    s.relay.stop().await;
}

#[tokio::test]
async fn invalid_grant_pauses_without_failing_and_a_fixed_refresh_token_resumes() {
    let mut s = setup(Script::default(), "1//revoked", "").await;
    s.ep.script
        .lock()
        .unwrap()
        .rejected
        .insert("1//revoked".into());
    for _ in 0..2 {
        send(&s.relay).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.relay.queued(), 2, "everything kept");
    assert!(
        s.relay.files("failed").is_empty(),
        "nothing failed or bounced"
    );
    assert_eq!(
        s.up.record(|r| r.connections),
        0,
        "no login attempt without a token"
    );
    let probes = s.ep.count();
    assert!(
        (2..=8).contains(&probes),
        "probing with backoff, not in a loop: {probes}"
    );

    // The operator re-authorizes: the file gets a working refresh token.
    std::fs::write(&s.refresh_file, "1//fixed\n").unwrap();
    s.up.wait_for(2, WAIT).await;
    s.relay.wait_queue_empty().await;
    assert!(s.relay.files("failed").is_empty());
    s.relay.stop().await;
}

#[tokio::test]
async fn a_token_endpoint_down_briefly_does_not_stop_delivery() {
    // Tokens live 3 s and are refreshed when less than 2 s remain.
    let mut s = setup(Script::default(), "1//good", "refresh_before = \"2s\"").await;
    s.ep.script.lock().unwrap().expires_in = Some(3);
    send(&s.relay).await;
    s.up.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.ep.script
        .lock()
        .unwrap()
        .replies
        .push_back((503, "{}".into()));
    let before = std::time::Instant::now();
    send(&s.relay).await;
    s.up.wait_for(2, WAIT).await;
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "delivered at once, no pause"
    );
    assert_eq!(
        s.up.record(|r| r.tokens.clone()).last().unwrap(),
        "tok-1",
        "the still valid token"
    );
    assert_eq!(
        s.ep.count(),
        2,
        "the refresh was tried, failed, and did not stop anything"
    );
    s.relay.stop().await;
}

/// Runs `gmail-relay oauth authorize` against the fake token endpoint; `finish` completes the
/// consent given the URL the command printed. Returns the written refresh-token file's path.
async fn authorize(
    finish: impl FnOnce(&url::Url, &mut std::process::ChildStdin),
) -> (PathBuf, TokenEndpoint, tempfile::TempDir) {
    use std::io::BufRead;
    let ep = TokenEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[upstream]\nusername = \"relay@example.com\"\nauth = \"xoauth2\"\n[upstream.oauth2]\n\
             client_id = \"cid\"\nclient_secret = \"csecret\"\nrefresh_token_file = \"rt\"\n\
             token_url = \"{}\"\nauth_url = \"http://127.0.0.1:1/auth\"\n",
            ep.url()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"))
        .args(["oauth", "authorize", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let url = url::Url::parse(first.trim()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    finish(&url, &mut stdin);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    (dir.path().join("rt"), ep, dir)
}

fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn check_authorized(file: &std::path::Path, ep: &TokenEndpoint, url: &url::Url) {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::read_to_string(file).unwrap().trim(),
        "1//from-code"
    );
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let form = ep.requests.lock().unwrap()[0].clone();
    let get = |k: &str| {
        url::form_urlencoded::parse(form.as_bytes())
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    assert_eq!(get("grant_type"), "authorization_code");
    assert_eq!(get("code"), "the-code");
    let verifier = get("code_verifier");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    assert_eq!(challenge, param(url, "code_challenge"), "PKCE S256");
    assert_eq!(param(url, "scope"), "https://mail.google.com/");
    assert_eq!(param(url, "access_type"), "offline");
}

#[tokio::test]
async fn oauth_authorize_takes_the_loopback_redirect_and_writes_a_0600_file() {
    let mut printed = None;
    let (file, ep, _dir) = authorize(|url, _stdin| {
        printed = Some(url.clone());
        let redirect = url::Url::parse(&param(url, "redirect_uri")).unwrap();
        let mut tcp =
            std::net::TcpStream::connect(redirect.socket_addrs(|| None).unwrap()[0]).unwrap();
        use std::io::{Read, Write};
        write!(
            tcp,
            "GET /?state={}&code=the-code&scope=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            param(url, "state")
        )
        .unwrap();
        let mut page = String::new();
        tcp.read_to_string(&mut page).unwrap();
        assert!(page.contains("authorized"), "{page}");
    })
    .await;
    check_authorized(&file, &ep, &printed.unwrap());
}

#[tokio::test]
async fn oauth_authorize_takes_a_pasted_redirect_url() {
    let mut printed = None;
    let (file, ep, _dir) = authorize(|url, stdin| {
        printed = Some(url.clone());
        use std::io::Write;
        let pasted = format!(
            "{}?state={}&code=the-code",
            param(url, "redirect_uri"),
            param(url, "state")
        );
        writeln!(stdin, "{pasted}").unwrap();
    })
    .await;
    check_authorized(&file, &ep, &printed.unwrap());
}

#[tokio::test]
async fn oauth_test_logs_in_without_sending_mail() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let ep = TokenEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rt"), "1//good\n").unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[upstream.oauth2]\nclient_id = \"cid\"\nrefresh_token_file = \"rt\"\ntoken_url = \"{}\"\n",
            config_for(&up, "auth = \"xoauth2\""),
            ep.url()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"))
            .args(["oauth", "test", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("access token: OK"), "{stdout}");
    assert!(stdout.contains("with XOAUTH2"), "{stdout}");
    assert_eq!(up.record(|r| r.tokens.clone()), ["tok-1"]);
    assert_eq!(up.count("MAIL"), 0, "no mail sent");
    assert!(!stdout.contains("tok-1"), "the token is not printed");
}
