//! A fuzzing entry point: one client's bytes through the intake's own I/O loop
//! (`connection::serve`: line framing, command parsing, the session, STARTTLS and AUTH, the
//! DATA reader, header hygiene, the trace header), over an in-memory stream, with the spool
//! replaced by a [`Queue`] that checks what would be committed. Used by
//! `fuzz/fuzz_targets/session.rs`; not part of the relay's API.
//!
//! The invariants checked for any input: a committed message has no bare LF, at least one
//! recipient, and is no larger than the size limit plus what the relay adds.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::connection::{Queue, Shared, serve};
use super::session::{Peer, Session, Settings};
use crate::auth::Users;
use crate::config::{ListenConfig, defaults};
use crate::policy::Policy;
use crate::spool::{Envelope, QueueId, SpoolError};

/// The fuzz target's size limit.
const MAX_SIZE: usize = 4096;

/// Checks instead of committing.
struct Check;

impl Queue for Check {
    fn new_id(&self) -> QueueId {
        QueueId::parse("0000000000000001").expect("a valid id")
    }

    async fn commit(
        &self,
        _id: QueueId,
        envelope: Envelope,
        parts: Vec<Vec<u8>>,
    ) -> Result<(), SpoolError> {
        assert!(
            !envelope.recipients.is_empty(),
            "a message without recipients"
        );
        let size: usize = parts.iter().map(Vec::len).sum();
        assert!(
            size as u64 <= MAX_SIZE as u64 + defaults::ADDED_HEADERS_MAX,
            "{size} bytes stored"
        );
        for part in &parts {
            for (i, &b) in part.iter().enumerate() {
                assert!(
                    b != b'\n' || (i > 0 && part[i - 1] == b'\r'),
                    "bare LF stored"
                );
            }
        }
        Ok(())
    }
}

thread_local! {
    /// One runtime per fuzzing thread: building one per input would cost more than the input.
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `input` as everything one client sends. Panics if an invariant breaks.
pub fn session(input: &[u8]) {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime")
        });
        rt.block_on(run(input));
    });
}

async fn run(input: &[u8]) {
    let cfg = ListenConfig {
        max_message_size: MAX_SIZE,
        max_recipients: 8,
        ..ListenConfig::for_tests()
    };
    let shared = Shared {
        settings: Arc::new(Settings {
            hostname: cfg.hostname.clone(),
            policy: Policy::new(&cfg),
            users: fuzz_users(),
            plaintext_auth: false,
        }),
        queue: Check,
        idle_timeout: cfg.idle_timeout,
        data_timeout: cfg.data_timeout,
        tls: None,
        router: Arc::new(crate::policy::Router::new(&[])),
        metrics: Default::default(),
    };
    let peer = Peer {
        ip: "127.0.0.1".parse().expect("literal"),
        tls: false,
        can_starttls: true,
        needs_auth: input.first().is_some_and(|b| b & 1 == 1),
    };
    let session = Session::new(shared.settings.clone(), peer);
    let (mut client, mut server) = tokio::io::duplex(input.len() + 1);
    // Everything the client sends, then the end of its stream; its replies are drained so the
    // server never waits for room to write.
    client.write_all(input).await.expect("room for the input");
    client.shutdown().await.expect("an in-memory shutdown");
    let drain = async {
        let mut replies = Vec::new();
        let _ = client.read_to_end(&mut replies).await;
    };
    let serve = async {
        serve(&mut server, session, &shared, &CancellationToken::new()).await;
        drop(server);
    };
    tokio::join!(serve, drain);
}

/// One user, `u`, with the password `ok` (bcrypt at the lowest cost, made once), so AUTH is
/// offered and can succeed.
fn fuzz_users() -> Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS
        .get_or_init(|| {
            let hash = bcrypt::hash("ok", 4).expect("bcrypt hashes");
            Users::parse([format!("u:{hash}").as_str()]).expect("a valid entry")
        })
        .clone()
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

    #[test]
    #[should_panic(expected = "a message without recipients")]
    fn the_check_runs_on_what_would_be_committed() {
        use super::Queue;
        let envelope = crate::spool::Envelope {
            sender: String::new(),
            recipients: vec![],
            received_at: std::time::SystemTime::now(),
            client: "127.0.0.1".parse().unwrap(),
            helo: "x".into(),
            eight_bit_mime: false,
            smtputf8: false,
            notify_never: vec![],
            account: None,
        };
        let id = super::Check.new_id();
        let _ = block_on(super::Check.commit(id, envelope, vec![]));
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
