//! A fuzzing entry point: one client's bytes through the whole sans-IO intake (line framing,
//! command parsing, the session, the DATA reader, header hygiene, the trace header), without
//! sockets or disk. Used by `fuzz/fuzz_targets/session.rs`; not part of the relay's API.
//!
//! It follows the I/O loop in `connection` step for step, with "commit" replaced by building
//! the bytes that would be committed, and asserts the invariants that must hold for any input:
//! stored messages only contain CRLF line endings and stay within the size limit.

use std::sync::Arc;
use std::time::SystemTime;

use super::connection::{Input, Line};
use super::data::{DataReader, Progress};
use super::message::{self, Trace};
use super::reply;
use super::session::{Action, Peer, Session, Settings};
use crate::auth::Users;
use crate::config::ListenConfig;
use crate::policy::Policy;

/// Runs `input` as everything one client sends. Panics if an invariant breaks.
pub fn session(input: &[u8]) {
    let cfg = ListenConfig {
        max_message_size: 4096,
        max_recipients: 8,
        ..ListenConfig::for_tests()
    };
    let settings = Arc::new(Settings {
        hostname: cfg.hostname.clone(),
        policy: Policy::new(&cfg),
        users: fuzz_users(),
        plaintext_auth: false,
    });
    let peer = Peer {
        ip: "127.0.0.1".parse().expect("literal"),
        tls: false,
        can_starttls: true,
        needs_auth: input.first().is_some_and(|b| b & 1 == 1),
    };
    let mut session = Session::new(settings, peer);
    let mut input = Input::new(input.to_vec());
    let mut out = Vec::new();
    session.greeting().write_to(&mut out);
    while let Some(line) = input.next_line() {
        let action = match line {
            Line::Command(range) => session.command(&input.buf[range]),
            Line::TooLong => session.error(reply::line_too_long()),
        };
        let action = match action {
            Action::ReadData(go) => {
                go.write_to(&mut out);
                let tx = session.take_transaction().expect("a transaction after 354");
                let mut reader = DataReader::new(cfg.max_message_size);
                let Progress::Done(n) = reader.feed(input.pending()) else {
                    return; // the client stopped mid-DATA: nothing would be queued
                };
                input.start += n;
                let reply = match reader.finish() {
                    None => Policy::new(&cfg).too_big().into(),
                    Some(mut body) => {
                        assert!(body.len() <= cfg.max_message_size);
                        let fixed = message::hygiene(&mut body, "id@relay.test", SystemTime::now());
                        let trace = message::received_header(&Trace {
                            helo: session.helo(),
                            client: session.client(),
                            by: "relay.test",
                            protocol: session.protocol(&tx),
                            id: "0000000000000001",
                            recipients: &tx.recipients,
                            at: SystemTime::now(),
                        });
                        for part in [&trace, &fixed.added, &body] {
                            for (i, &b) in part.iter().enumerate() {
                                assert!(
                                    b != b'\n' || (i > 0 && part[i - 1] == b'\r'),
                                    "bare LF stored"
                                );
                            }
                        }
                        assert!(!tx.recipients.is_empty());
                        reply::queued("0000000000000001")
                    }
                };
                session.message_done(reply)
            }
            other => other,
        };
        match action {
            Action::Reply(r) | Action::ReadData(r) => r.write_to(&mut out),
            // Checking a real hash is slow; the outcome is taken from the password instead.
            Action::Verify { user, password } => {
                let ok = password.expose() == "ok";
                match session.auth_checked(user, ok) {
                    Action::Reply(r) => r.write_to(&mut out),
                    _ => return,
                }
            }
            // Take the rest of the input as what came over TLS, to reach the states after it.
            Action::StartTls(r) => {
                r.write_to(&mut out);
                session.tls_started();
            }
            Action::Close(r) => {
                r.write_to(&mut out);
                return;
            }
        }
    }
}

/// One user, so AUTH is offered; its hash is never checked (see `Action::Verify` above).
fn fuzz_users() -> Users {
    Users::parse(["u:$2b$04$abcdefghijklmnopqrstuuO2Fj7bWQ0F7d8uy8bQ3Vm1e4yTn4W.S"])
        .expect("a valid bcrypt-shaped entry")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_runs_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session");
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("the corpus is committed")
            .collect();
        assert!(entries.len() > 10, "a corpus worth the name");
        for entry in entries {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            super::session(&bytes);
        }
    }

    #[test]
    fn a_plain_conversation() {
        super::session(
            b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nSubject: x\r\nBcc: y\r\n\r\nhi\n.\r\n.\r\nQUIT\r\n",
        );
    }
}
