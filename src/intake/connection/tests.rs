use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::config::ListenConfig;
use crate::policy::Policy;
use crate::spool::{Opened, QueueId};

struct Fixture {
    _dir: tempfile::TempDir,
    opened: Opened,
    shared: Arc<Shared>,
}

fn fixture(max_size: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::spool::Spool::open(dir.path()).unwrap();
    let cfg = ListenConfig {
        max_message_size: max_size,
        max_recipients: 10,
        ..ListenConfig::for_tests()
    };
    let shared = Arc::new(Shared {
        settings: Arc::new(Settings {
            hostname: cfg.hostname.clone(),
            policy: Policy::new(&cfg),
            users: crate::auth::Users::default(),
            plaintext_auth: false,
        }),
        queue: opened.spool.clone(),
        idle_timeout: cfg.idle_timeout,
        data_timeout: cfg.data_timeout,
        tls: None,
        router: Arc::new(crate::policy::Router::new(&[])),
        metrics: Default::default(),
    });
    Fixture {
        _dir: dir,
        opened,
        shared,
    }
}

/// Starts a session on one end of an in-memory pipe; returns the client end.
fn connect(f: &Fixture) -> (Client, tokio::task::JoinHandle<()>) {
    let (io, mut server) = tokio::io::duplex(1 << 16);
    let shared = f.shared.clone();
    let task = tokio::spawn(async move {
        let session = Session::new(
            shared.settings.clone(),
            crate::intake::session::tests_peer(),
        );
        serve(&mut server, session, &shared, &CancellationToken::new()).await;
    });
    (
        Client {
            io,
            text: String::new(),
        },
        task,
    )
}

/// The client side of a test session; keeps everything it has read.
struct Client {
    io: DuplexStream,
    text: String,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// Reads until `n` complete replies (counted from the greeting on) have arrived; returns
    /// the last line of each.
    async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut buf = [0u8; 4096];
        loop {
            let done: Vec<String> = self
                .text
                .split("\r\n")
                .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
                .map(str::to_owned)
                .collect();
            if done.len() >= n {
                return done;
            }
            // Longer than any server timeout, so paused-time tests see the server's.
            let read = tokio::time::timeout(Duration::from_secs(3600), self.io.read(&mut buf));
            let k = read.await.expect("no reply").unwrap();
            assert!(k > 0, "connection closed; got so far: {:?}", self.text);
            self.text.push_str(&String::from_utf8_lossy(&buf[..k]));
        }
    }
}

fn queue_ids(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.opened.spool.dir().join("queue"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn pipelined_transaction_is_queued_with_a_trace_header() {
    let f = fixture(1000);
    let (mut c, task) = connect(&f);
    assert!(c.replies(1).await[0].starts_with("220 relay.test"));
    c.send(b"EHLO app\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n").await;
    let r = c.replies(6).await;
    assert!(
        r[2].starts_with("250 2.1.0") && r[4].starts_with("250 2.1.5"),
        "{r:?}"
    );
    assert!(r[5].starts_with("354"), "{r:?}");
    c.send(b"Subject: hi\r\n\r\n..dot\r\nbare lf\nlast\r\n.\r\nQUIT\r\n")
        .await;
    let r = c.replies(8).await;
    assert!(r[6].starts_with("250 2.0.0 OK queued as "), "{r:?}");
    assert!(r[7].starts_with("221"), "{r:?}");
    task.await.unwrap();

    let id = r[6].rsplit(' ').next().unwrap();
    let msg = f
        .opened
        .spool
        .load(QueueId::parse(id).unwrap())
        .await
        .unwrap();
    let body = String::from_utf8(msg.body).unwrap();
    assert!(
        body.starts_with("Received: from app ([127.0.0.1])\r\n\tby relay.test"),
        "{body}"
    );
    assert!(
        body.ends_with("Subject: hi\r\n\r\n.dot\r\nbare lf\r\nlast\r\n"),
        "{body:?}"
    );
    assert_eq!(msg.envelope.sender, "app@example.com");
    assert_eq!(msg.envelope.recipients, ["a@example.com", "b@example.com"]);
}

#[tokio::test]
async fn two_transactions_on_one_connection() {
    let f = fixture(1000);
    let (mut c, _task) = connect(&f);
    c.send(b"HELO app\r\n").await;
    for _ in 0..2 {
        c.send(b"MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
            .await;
        c.send(b"x\r\n.\r\n").await;
    }
    let r = c.replies(10).await;
    assert!(r[5].starts_with("250 2.0.0 OK queued"), "{r:?}");
    assert!(r[9].starts_with("250 2.0.0 OK queued"), "{r:?}");
    assert_eq!(queue_ids(&f).len(), 2);
}

#[tokio::test]
async fn long_command_line_is_refused_and_the_session_goes_on() {
    let f = fixture(1000);
    let (mut c, _task) = connect(&f);
    let mut long = vec![b'A'; 10_000];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    c.send(&long).await;
    let r = c.replies(3).await;
    assert_eq!(r[1], "500 5.5.6 Line too long");
    assert!(r[2].starts_with("250 2.0.0"));
}

#[tokio::test]
async fn oversized_message_gets_552_and_nothing_is_queued() {
    let f = fixture(100);
    let (mut c, _task) = connect(&f);
    c.send(b"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n")
        .await;
    c.replies(5).await;
    c.send(&[b'x'; 500]).await;
    c.send(b"\r\n.\r\nNOOP\r\n").await;
    let r = c.replies(7).await;
    assert!(r[5].starts_with("552 5.3.4"), "{r:?}");
    assert!(r[6].starts_with("250"), "{r:?}");
    assert!(queue_ids(&f).is_empty());
}

#[tokio::test]
async fn disconnect_mid_data_leaves_nothing_behind() {
    let f = fixture(1000);
    let (mut c, task) = connect(&f);
    c.send(b"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\nhalf a mess")
        .await;
    c.replies(5).await;
    drop(c.io);
    task.await.unwrap();
    assert!(queue_ids(&f).is_empty());
    assert_eq!(
        std::fs::read_dir(f.opened.spool.dir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn idle_client_is_told_421_and_disconnected() {
    let f = fixture(1000);
    let (mut c, task) = connect(&f);
    let r = c.replies(2).await;
    assert_eq!(r[1], "421 4.4.2 Timeout; closing connection");
    task.await.unwrap();
}

#[tokio::test]
async fn shutdown_tells_an_idle_client_421() {
    let f = fixture(1000);
    let (io, mut server) = tokio::io::duplex(4096);
    let mut c = Client {
        io,
        text: String::new(),
    };
    let cancel = CancellationToken::new();
    let shared = f.shared.clone();
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let session = Session::new(
            shared.settings.clone(),
            crate::intake::session::tests_peer(),
        );
        serve(&mut server, session, &shared, &token).await;
    });
    c.replies(1).await;
    cancel.cancel();
    let r = c.replies(2).await;
    assert!(r[1].starts_with("421 4.3.2"), "{r:?}");
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_data_phase_is_cut_at_the_data_timeout() {
    let f = fixture(1000);
    let (mut c, task) = connect(&f);
    c.send(b"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.c>\r\nDATA\r\n")
        .await;
    c.replies(5).await;
    // A byte every four minutes keeps each read inside the idle timeout (5 min), but the whole
    // DATA is limited to 10 minutes.
    for _ in 0..3 {
        c.send(b"x").await;
        tokio::time::sleep(Duration::from_secs(240)).await;
    }
    let r = c.replies(6).await;
    assert_eq!(r[5], "421 4.4.2 Timeout; closing connection");
    task.await.unwrap();
    assert!(queue_ids(&f).is_empty());
}
