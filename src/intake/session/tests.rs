//! The session state machine over plain bytes: transitions, limits, STARTTLS, AUTH.

use super::*;
use crate::config::ListenConfig;
use crate::intake::reply;

fn session() -> Session {
    let cfg = ListenConfig::for_tests();
    let settings = Arc::new(Settings {
        hostname: cfg.hostname.clone(),
        policy: Policy::new(&cfg),
        users: Users::default(),
        plaintext_auth: false,
    });
    Session::new(settings, tests_peer())
}

/// Runs a dialog: each line is sent, and the reply's first line must start with the
/// expected prefix. "D" marks where DATA is accepted.
fn dialog(s: &mut Session, steps: &[(&str, &str)]) {
    for (line, want) in steps {
        let action = s.command(format!("{line}\r\n").as_bytes());
        let got = match &action {
            Action::Reply(r) | Action::ReadData(r) | Action::Close(r) | Action::StartTls(r) => {
                r.first_line()
            }
            Action::Verify { user, .. } => format!("VERIFY {user}"),
        };
        assert!(
            got.starts_with(want),
            "{line:?}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn ehlo_advertises_the_extensions() {
    let mut s = session();
    let Action::Reply(r) = s.command(b"EHLO client\r\n") else {
        panic!()
    };
    let text: Vec<_> = r.lines.iter().map(|l| l.to_string()).collect();
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(text.iter().any(|l| l == ext), "{ext} in {text:?}");
    }
}

#[test]
fn a_full_transaction() {
    let mut s = session();
    dialog(
        &mut s,
        &[
            ("EHLO client", "250 relay.test"),
            ("MAIL FROM:<>", "250 2.1.0"),
            ("RCPT TO:<a@example.com>", "250 2.1.5"),
            ("RCPT TO:<b@example.com>", "250 2.1.5"),
            ("DATA", "354"),
        ],
    );
    let tx = s.take_transaction().unwrap();
    assert_eq!(tx.sender, "");
    assert_eq!(tx.recipients, ["a@example.com", "b@example.com"]);
    dialog(&mut s, &[("MAIL FROM:<x@y.z>", "250 2.1.0")]);
}

#[test]
fn out_of_sequence_commands() {
    let mut s = session();
    dialog(
        &mut s,
        &[
            ("MAIL FROM:<a@b.c>", "503 5.5.1"),
            ("HELO client", "250 relay.test"),
            ("RCPT TO:<a@b.c>", "503 5.5.1"),
            ("DATA", "503 5.5.1"),
            ("MAIL FROM:<a@b.c>", "250 2.1.0"),
            ("MAIL FROM:<a@b.c>", "503 5.5.1"),
            ("DATA", "503 5.5.1"),
            ("RSET", "250 2.0.0"),
            ("RCPT TO:<a@b.c>", "503 5.5.1"),
        ],
    );
}

#[test]
fn limits_and_bad_input() {
    let mut s = session();
    dialog(
        &mut s,
        &[
            ("EHLO", "501 5.5.4"),
            ("EHLO c", "250"),
            ("MAIL FROM:<a@b.c> SIZE=1001", "552 5.3.4"),
            ("MAIL FROM:<a@b.c> SIZE=1000", "250 2.1.0"),
            ("RCPT TO:<>", "501 5.1.3"),
            ("RCPT TO:<ü@b.c>", "553 5.6.7"),
            ("RCPT TO:<1@b.c>", "250"),
            ("RCPT TO:<2@b.c>", "250"),
            ("RCPT TO:<3@b.c>", "250"),
            ("RCPT TO:<4@b.c>", "452 4.5.3"),
            ("FROB", "500 5.5.2"),
            ("STARTTLS", "502 5.5.1"),
            ("VRFY bob", "252"),
            ("HELP", "214 2.0.0"),
            ("NOOP", "250 2.0.0"),
            ("QUIT", "221 2.0.0"),
        ],
    );
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut s = session();
    dialog(
        &mut s,
        &[
            ("EHLO c", "250"),
            ("MAIL FROM:<ü@b.c>", "553 5.6.7"),
            ("MAIL FROM:<ü@b.c> SMTPUTF8", "250"),
            ("RCPT TO:<δ@例え.jp>", "250"),
        ],
    );
}

#[test]
fn starttls_is_offered_only_when_possible_and_resets_the_session() {
    let mut s = session();
    s.can_starttls = true;
    let Action::Reply(r) = s.command(b"EHLO c\r\n") else {
        panic!()
    };
    assert!(r.lines.iter().any(|l| l == "STARTTLS"));
    dialog(
        &mut s,
        &[("MAIL FROM:<a@b.c>", "250"), ("STARTTLS", "220 2.0.0")],
    );
    s.tls_started();
    dialog(
        &mut s,
        &[("RCPT TO:<a@b.c>", "503 5.5.1"), ("STARTTLS", "503 5.5.1")],
    );
    let Action::Reply(r) = s.command(b"EHLO c\r\n") else {
        panic!()
    };
    assert!(
        !r.lines.iter().any(|l| l == "STARTTLS"),
        "not offered twice"
    );
    let mut plain = session();
    dialog(&mut plain, &[("EHLO c", "250"), ("STARTTLS", "502 5.5.1")]);
}

fn with_users(peer: Peer) -> Session {
    let cfg = ListenConfig::for_tests();
    let users =
        Users::parse([format!("printer:{}", crate::auth::users::BCRYPT_SHAPED).as_str()]).unwrap();
    let settings = Arc::new(Settings {
        hostname: cfg.hostname.clone(),
        policy: Policy::new(&cfg),
        users,
        plaintext_auth: false,
    });
    Session::new(settings, peer)
}

fn plain(user: &str, pw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

#[test]
fn auth_is_offered_on_loopback_and_verified_by_the_io_loop() {
    let mut s = with_users(tests_peer());
    let Action::Reply(r) = s.command(b"EHLO c\r\n") else {
        panic!()
    };
    assert!(r.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"));
    let action = s.command(format!("AUTH PLAIN {}\r\n", plain("printer", "pw")).as_bytes());
    let Action::Verify { user, password } = action else {
        panic!("{action:?}")
    };
    assert_eq!((user.as_str(), password.expose()), ("printer", "pw"));
    assert_eq!(
        s.auth_checked(user, false),
        Action::Reply(reply::auth_failed())
    );
    assert!(matches!(s.command(b"AUTH LOGIN\r\n"), Action::Reply(r) if r.code == 334));
    assert!(matches!(s.command(b"cHJpbnRlcg==\r\n"), Action::Reply(r) if r.code == 334));
    let Action::Verify { user, .. } = s.command(b"cHc=\r\n") else {
        panic!()
    };
    assert_eq!(s.auth_checked(user, true), Action::Reply(reply::auth_ok()));
    dialog(
        &mut s,
        &[("AUTH PLAIN", "503 5.5.1"), ("MAIL FROM:<a@b.c>", "250")],
    );
    let tx = Transaction {
        sender: "a@b.c".into(),
        recipients: vec![],
        notify_never: vec![],
        eight_bit_mime: false,
        smtputf8: false,
    };
    assert_eq!(s.protocol(&tx), "ESMTPA");
}

#[test]
fn a_client_outside_the_networks_must_authenticate_over_tls() {
    let outside = Peer {
        ip: "192.0.2.7".parse().unwrap(),
        tls: false,
        can_starttls: true,
        needs_auth: true,
    };
    let mut s = with_users(outside);
    let Action::Reply(r) = s.command(b"EHLO c\r\n") else {
        panic!()
    };
    assert!(
        !r.lines.iter().any(|l| l.starts_with("AUTH")),
        "no password in clear"
    );
    dialog(
        &mut s,
        &[
            ("MAIL FROM:<a@b.c>", "530 5.7.0"),
            (
                &format!("AUTH PLAIN {}", plain("printer", "pw")),
                "538 5.7.11",
            ),
            ("STARTTLS", "220"),
        ],
    );
    s.tls_started();
    dialog(
        &mut s,
        &[
            ("EHLO c", "250"),
            ("MAIL FROM:<a@b.c>", "530 5.7.0"),
            ("AUTH CRAM-MD5", "504 5.5.4"),
            ("AUTH LOGIN", "334"),
            ("*", "501 5.7.0"),
            (
                &format!("AUTH PLAIN {}", plain("printer", "pw")),
                "VERIFY printer",
            ),
        ],
    );
    assert_eq!(
        s.auth_checked("printer".into(), true),
        Action::Reply(reply::auth_ok())
    );
    dialog(&mut s, &[("MAIL FROM:<a@b.c>", "250 2.1.0")]);
}

#[test]
fn without_users_auth_is_not_implemented() {
    let mut s = session();
    dialog(
        &mut s,
        &[("EHLO c", "250"), ("AUTH PLAIN AGEAYg==", "502 5.5.1")],
    );
}

#[test]
fn too_many_errors_close_the_session() {
    let mut s = session();
    for _ in 0..MAX_ERRORS - 1 {
        assert!(matches!(s.command(b"FROB\r\n"), Action::Reply(_)));
    }
    assert_eq!(
        s.command(b"FROB\r\n"),
        Action::Close(reply::too_many_errors())
    );
}
