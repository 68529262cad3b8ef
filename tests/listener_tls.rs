//! TLS on the relay's own listeners: STARTTLS, implicit TLS, a listener that never offers
//! STARTTLS, and the STARTTLS command-injection defence. Clients: lettre and tokio-rustls.

mod common;

use std::sync::Arc;

use common::{Client, TestRelay, certs, intake_config};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TlsRelay {
    relay: TestRelay,
    ca_pem: String,
    _certs: tempfile::TempDir,
}

/// A relay with a certificate, listening plain (STARTTLS offered), plain without STARTTLS, and
/// implicit TLS, in that order.
async fn start() -> TlsRelay {
    let certs = certs::generate();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &certs.cert_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    let listen = format!(
        "no_starttls_addrs = [\"127.0.0.1:0\"]\nimplicit_tls_addrs = [\"127.0.0.1:0\"]\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    TlsRelay {
        relay: TestRelay::start(&intake_config(&listen)).await,
        ca_pem: certs.ca_pem,
        _certs: dir,
    }
}

fn lettre_tls(ca_pem: &str) -> TlsParameters {
    TlsParameters::builder("127.0.0.1".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

async fn send_with_lettre(port: u16, tls: Tls) {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .build();
    let envelope = Envelope::new(
        Some("app@example.com".parse().unwrap()),
        vec![
            "a@example.com".parse().unwrap(),
            "b@example.com".parse().unwrap(),
        ],
    )
    .unwrap();
    transport
        .send_raw(&envelope, b"Subject: tls\r\n\r\nover TLS")
        .await
        .unwrap();
}

fn received_protocol(relay: &TestRelay) -> String {
    let stored = relay.stored();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].2).to_string();
    text.split(" with ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn starttls_on_the_listener_with_lettre() {
    let mut t = start().await;
    let port = t.relay.addrs()[0].port();
    send_with_lettre(port, Tls::Required(lettre_tls(&t.ca_pem))).await;
    assert_eq!(received_protocol(&t.relay), "ESMTPS");
    t.relay.stop().await;
}

#[tokio::test]
async fn implicit_tls_listener_with_lettre() {
    let mut t = start().await;
    let port = t.relay.addrs()[2].port();
    send_with_lettre(port, Tls::Wrapper(lettre_tls(&t.ca_pem))).await;
    assert_eq!(received_protocol(&t.relay), "ESMTPS");
    t.relay.stop().await;
}

#[tokio::test]
async fn a_no_starttls_listener_never_offers_it() {
    let mut t = start().await;
    let mut c = Client::connect(t.relay.addrs()[1]).await;
    c.reply().await;
    c.send(b"EHLO old-printer\r\n").await;
    let mut ehlo = String::new();
    loop {
        let line = c.reply_line().await;
        ehlo.push_str(&line);
        ehlo.push('\n');
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("502 5.5.1"));
    // Plain mail still works there.
    assert!(c.cmd("MAIL FROM:<p@lan.test>").await.starts_with("250"));
    t.relay.stop().await;
}

#[tokio::test]
async fn commands_pipelined_after_starttls_in_the_clear_are_discarded() {
    let mut t = start().await;
    let mut tcp = tokio::net::TcpStream::connect(t.relay.addrs()[0])
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut tcp, &mut seen, b"ready\r\n").await;
    tcp.write_all(b"EHLO x\r\nSTARTTLS\r\nNOOP\r\nMAIL FROM:<injected@evil.test>\r\n")
        .await
        .unwrap();
    read_until(&mut tcp, &mut seen, b"220 2.0.0 Ready to start TLS\r\n").await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(t.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"RCPT TO:<a@example.com>\r\n").await.unwrap();
    let mut reply = Vec::new();
    read_until(&mut tls, &mut reply, b"\r\n").await;
    let reply = String::from_utf8_lossy(&reply);
    // Had NOOP and MAIL been taken over into the TLS session, this would be 250s.
    assert!(reply.starts_with("503 5.5.1"), "{reply}");
    t.relay.stop().await;
}

async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, end: &[u8]) {
    let mut byte = [0u8; 1];
    while !buf.ends_with(end) {
        let n = tokio::time::timeout(common::WAIT, s.read(&mut byte))
            .await
            .expect("timed out")
            .unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(buf));
        buf.push(byte[0]);
    }
}
