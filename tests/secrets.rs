//! No secret in any log line: every event of a full delivery, at TRACE level, is captured and
//! searched for the password and for its AUTH PLAIN / AUTH LOGIN encodings; and for a service
//! account's private key, its signed assertions and the access tokens they bought.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::upstream::{FakeUpstream, Mode, PASSWORD, Script, USER};
use common::{TestRelay, WAIT, config_for, submit};

#[tokio::test]
async fn no_log_line_contains_the_password_in_any_form() {
    let capture = common::logs::capture();

    for (mode, mechs) in [(Mode::StartTls, None), (Mode::Implicit, Some("LOGIN"))] {
        let up = FakeUpstream::start(
            mode,
            Script {
                auth_mechanisms: mechs,
                ..Script::default()
            },
        )
        .await;
        let mut relay = TestRelay::start(&config_for(&up, "")).await;
        submit(
            relay.addr(),
            "app@example.com",
            &["a@example.com"],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await;
        up.wait_for(1, WAIT).await;
        relay.wait_queue_empty().await;
        relay.stop().await;
    }
    // A refused login is logged loudly; the password still must not appear.
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    relay.env.insert(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".into(),
        "wrong-password-123".into(),
    );
    relay.restart().await;
    submit(
        relay.addr(),
        "app@example.com",
        &["a@example.com"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    relay.stop().await;

    // XOAUTH2, with a rejected first token (the 334 challenge path) and a rotated refresh token.
    let mut script = Script::default();
    script.rejected_tokens.insert("tok-1".into());
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let ep = common::token::TokenEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt");
    std::fs::write(&rt, "1//refresh-secret-abc\n").unwrap();
    let cfg = format!(
        "{}\n[upstream.oauth2]\nclient_id = \"cid\"\nclient_secret = \"csecret-xyz\"\n\
         refresh_token_file = \"{}\"\ntoken_url = \"{}\"\n",
        config_for(&up, "auth = \"xoauth2\""),
        rt.display(),
        ep.url()
    );
    let mut relay = TestRelay::start_with_env(&cfg, Default::default()).await;
    submit(
        relay.addr(),
        "app@example.com",
        &["a@example.com"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    up.wait_for(1, WAIT).await;
    relay.stop().await;

    let logs = capture.text();
    assert!(logs.contains("delivered"), "the capture works: {logs}");
    assert!(
        logs.contains("refused the login"),
        "a refused login is logged: {logs}"
    );
    let plain = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    for secret in [
        PASSWORD,
        "wrong-password-123",
        &plain,
        &B64.encode(PASSWORD),
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}

#[tokio::test]
async fn no_log_line_contains_the_service_account_key_its_assertions_or_tokens() {
    let capture = common::logs::capture();
    let users = [("alerts@example.com".to_owned(), "unused".to_owned())].into();
    // The first token is refused by Gmail (the 334 challenge path), the second accepted.
    let mut script = Script {
        users,
        ..Script::default()
    };
    script.rejected_tokens.insert("tok-2".into());
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let ep = common::token::TokenEndpoint::start().await;
    // The first request is refused (domain-wide delegation missing), then granted.
    ep.script.lock().unwrap().unauthorized = true;
    let dir = tempfile::tempdir().unwrap();
    let key = common::service_key::write_key_file(dir.path(), &ep.url());
    let cfg = format!(
        "{}\n[upstream.service_account]\nkey_file = \"{}\"\nsubject = \"alerts@example.com\"\n\
         [delivery]\nauth_pause_min = \"100ms\"\nauth_pause_max = \"200ms\"\n",
        config_for(&up, "auth = \"service-account\"")
            .replace(&format!("username = \"{USER}\"\n"), ""),
        key.display(),
    );
    let mut relay = TestRelay::start_with_env(&cfg, Default::default()).await;
    submit(
        relay.addr(),
        "app@example.com",
        &["a@example.com"],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    common::eventually("a refused request", || ep.count() >= 1).await;
    ep.script.lock().unwrap().unauthorized = false;
    up.wait_for(1, WAIT).await;
    relay.stop().await;

    let logs = capture.text();
    assert!(
        logs.contains("unauthorized_client") && logs.contains("delivered"),
        "the capture works: {logs}"
    );
    let jwt = ep.jwt.lock().unwrap();
    assert!(jwt.errors.is_empty(), "{:?}", jwt.errors);
    assert!(jwt.issued.len() >= 2, "{:?}", jwt.issued);
    let mut secrets: Vec<String> = Vec::new();
    // Every line of the private key's PEM body.
    secrets.extend(
        common::service_key::key()
            .private_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    // Every assertion, and its signature alone.
    for assertion in &jwt.assertions {
        secrets.push(assertion.clone());
        secrets.push(assertion.rsplit('.').next().unwrap().to_owned());
    }
    // Every access token, bare and as the XOAUTH2 initial response.
    for (subject, token) in &jwt.issued {
        secrets.push(token.clone());
        secrets.push(B64.encode(format!("user={subject}\x01auth=Bearer {token}\x01\x01")));
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret:?} appears in the logs"
        );
    }
}
