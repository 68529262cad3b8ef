//! AUTH on the relay's listener: clients outside `listen.allowed_networks` may send after
//! authenticating (argon2 or bcrypt hashes), never before, and never with a password in clear
//! over the network. Client: lettre with credentials.

mod common;

use common::{Client, TestRelay, intake_config};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// 127.0.0.1 is outside allowed_networks here, so every test client must authenticate.
async fn relay_with_users(users: &str) -> TestRelay {
    TestRelay::start(&intake_config(&format!(
        "allowed_networks = [\"10.0.0.0/8\"]\n{users}"
    )))
    .await
}

async fn send(relay: &TestRelay, credentials: Option<(&str, &str)>) -> Result<(), String> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr().port());
    if let Some((u, p)) = credentials {
        builder = builder.credentials(Credentials::new(u.into(), p.into()));
    }
    let envelope = Envelope::new(
        Some("printer@lan.test".parse().unwrap()),
        vec!["a@example.com".parse().unwrap()],
    )
    .unwrap();
    builder
        .build()
        .send_raw(&envelope, b"Subject: scan\r\n\r\nx")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_argon2_user_can_send_and_others_cannot() {
    let hash = gmail_relay::auth::hash_password(b"printer-secret");
    let mut relay = relay_with_users(&format!("users = [\"printer:{hash}\"]")).await;

    let err = send(&relay, None).await.unwrap_err();
    assert!(err.contains("530"), "no AUTH, no mail: {err}");
    let err = send(&relay, Some(("printer", "wrong"))).await.unwrap_err();
    assert!(err.contains("535"), "{err}");
    let err = send(&relay, Some(("nobody", "printer-secret")))
        .await
        .unwrap_err();
    assert!(err.contains("535"), "{err}");
    assert!(relay.stored().is_empty());

    send(&relay, Some(("printer", "printer-secret")))
        .await
        .unwrap();
    let stored = relay.stored();
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0].2).contains("with ESMTPA id"));
    relay.stop().await;
}

#[tokio::test]
async fn bcrypt_users_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let hash = bcrypt::hash("scanner-secret", 4).unwrap();
    std::fs::write(&file, format!("# name:hash\nscanner:{hash}\n")).unwrap();
    let mut relay = relay_with_users(&format!("users_file = \"{}\"", file.display())).await;
    send(&relay, Some(("scanner", "scanner-secret")))
        .await
        .unwrap();
    assert_eq!(relay.stored().len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn without_users_a_client_outside_the_networks_is_refused_at_once() {
    let mut relay = relay_with_users("").await;
    let mut c = Client::connect(relay.addr()).await;
    assert!(c.reply().await.starts_with("554 5.7.1"));
    relay.stop().await;
}
