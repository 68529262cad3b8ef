//! A fake Gmail: an SMTP server on 127.0.0.1 with real TLS (a CA and certificate generated per
//! run), STARTTLS or implicit TLS, AUTH PLAIN and LOGIN, scripted replies at each stage, and a
//! record of everything it was sent.

mod conn;
mod session;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub const USER: &str = "relay@example.com";
pub const PASSWORD: &str = "abcd efgh ijkl mnop";

/// How the fake upstream secures connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain greeting, STARTTLS offered (unless scripted off).
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// Scripted behaviour. Queues are consumed one reply per command; when empty, the command
/// succeeds normally.
#[derive(Debug, Default, Clone)]
pub struct Script {
    /// Do not advertise STARTTLS (a misconfigured or downgraded server).
    pub no_starttls: bool,
    /// Replies to the end of DATA, in order.
    pub data_replies: VecDeque<String>,
    /// Reply to RCPT TO for a given address, every time.
    pub rcpt_replies: HashMap<String, String>,
    /// The AUTH mechanisms advertised after TLS (default `LOGIN PLAIN XOAUTH2`).
    pub auth_mechanisms: Option<&'static str>,
    /// Greetings for the next connections instead of 220; a 4xx/5xx one is followed by close.
    pub greetings: VecDeque<String>,
    /// Replies to the next AUTH attempts instead of checking the credentials.
    pub auth_replies: VecDeque<String>,
    /// The next this many connections are accepted and then get no byte at all.
    pub stall: usize,
    /// The next this many connections (implicit TLS) get garbage instead of a TLS handshake.
    pub tls_garbage: usize,
    /// RCPTs beyond this many in one transaction get `452 4.5.3`.
    pub max_rcpt_per_tx: Option<usize>,
    /// The next this many DATA phases are cut off: the connection drops after the first line.
    pub drop_in_data: usize,
    /// A connection silent this long gets `451 4.4.2 Timeout - closing connection` and is closed.
    pub idle_close: Option<Duration>,
    /// The SIZE advertised in EHLO (default 35882577).
    pub size: Option<usize>,
    /// XOAUTH2 bearer tokens refused (with Google's 334 JSON challenge, then 535).
    pub rejected_tokens: std::collections::HashSet<String>,
    /// Replies to the next STARTTLS commands instead of 220 (e.g. Exim's
    /// `454 4.7.0 TLS not available due to temporary reason`).
    pub starttls_replies: VecDeque<String>,
    /// The reply to a RCPT over `max_rcpt_per_tx` (default Gmail's `452 4.5.3 ...`; Exim
    /// says a bare `452 too many recipients`).
    pub too_many_rcpt_reply: Option<String>,
    /// More accounts (user → password) besides [`USER`]; XOAUTH2 accepts any of them.
    pub users: HashMap<String, String>,
    /// Users whose logins are refused with Gmail's `535 5.7.8` (a revoked app password).
    pub refused_users: std::collections::HashSet<String>,
    /// Users whose daily quota is spent: `550 5.4.5` after DATA.
    pub quota_users: std::collections::HashSet<String>,
    /// Take mail without AUTH, as Google Workspace's SMTP relay service does for a registered
    /// IP address (TLS is still required).
    pub relay_service: bool,
    /// Do not advertise PIPELINING (which also means no CHUNKING use by the relay).
    pub no_pipelining: bool,
    /// Do not advertise CHUNKING (BDAT).
    pub no_chunking: bool,
    /// Each time the server sends its pending replies and waits for the client (one round
    /// trip), it waits this long first: a distant server. Replies to a pipelined batch go out
    /// together, after one delay.
    pub reply_delay: Option<Duration>,
    /// The next this many messages (DATA or BDAT LAST) are read whole, then the connection
    /// drops before the reply: the relay cannot know whether they were taken.
    pub drop_before_data_reply: usize,
}

impl Script {
    /// The password of `user`, if it is an account of this fake.
    pub fn password_of(&self, user: &str) -> Option<&str> {
        if user == USER {
            return Some(PASSWORD);
        }
        self.users.get(user).map(String::as_str)
    }

    /// Every login refused with Gmail's `535 5.7.8` (a revoked app password).
    pub fn refusing_logins() -> Script {
        Script {
            auth_replies: (0..1000)
                .map(|_| "535 5.7.8 Username and Password not accepted".to_owned())
                .collect(),
            ..Script::default()
        }
    }
}

/// A message the fake upstream accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub user: Option<String>,
    /// Round trips the transaction took, from MAIL to the reply to the message: one more than
    /// the times the server sent replies and had to wait for the client before the message
    /// was whole.
    pub round_trips: usize,
    /// It came by BDAT (in this many chunks), not DATA.
    pub bdat_chunks: usize,
    /// When it was whole at the server.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
pub struct Record {
    pub messages: Vec<Received>,
    pub connections: usize,
    /// Every AUTH command, successful or not.
    pub auth_attempts: usize,
    pub mechanisms: Vec<String>,
    /// Every command line, in order, across connections.
    pub commands: Vec<String>,
    /// Every XOAUTH2 bearer token presented, in order.
    pub tokens: Vec<String>,
    /// Replies to the message refused with `bdat_error`s and the like: (command, reply).
    pub refused_messages: Vec<String>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub mode: Mode,
    /// PEM of the CA that signed the server certificate (what `upstream.ca_file` points to).
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
    state: Arc<Shared>,
    acceptor: TlsAcceptor,
    task: Mutex<tokio::task::JoinHandle<()>>,
}

struct Shared {
    script: Mutex<Script>,
    record: Mutex<Record>,
    count: watch::Sender<usize>,
}

impl FakeUpstream {
    pub async fn start(mode: Mode, script: Script) -> FakeUpstream {
        Self::start_named(mode, script, &["127.0.0.1", "localhost"]).await
    }

    /// Like [`FakeUpstream::start`], with a certificate for exactly these names.
    pub async fn start_named(mode: Mode, script: Script, names: &[&str]) -> FakeUpstream {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_pem) = tls_acceptor(names);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Shared {
            script: Mutex::new(script),
            record: Mutex::new(Record::default()),
            count: watch::channel(0).0,
        });
        let task = accept_loop(listener, mode, acceptor.clone(), state.clone());
        FakeUpstream {
            addr,
            mode,
            ca_file,
            _dir: dir,
            state,
            acceptor,
            task: Mutex::new(task),
        }
    }

    /// Listens again on the same port, with the same certificate and record, after [`stop`].
    pub async fn resume(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {} again: {e}", self.addr),
            }
        };
        let task = accept_loop(
            listener,
            self.mode,
            self.acceptor.clone(),
            self.state.clone(),
        );
        *self.task.lock().unwrap() = task;
    }

    /// Changes the script for the commands still to come.
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.script.lock().unwrap());
    }

    pub fn record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.state.record.lock().unwrap())
    }

    /// How many messages were sent whole to it (by DATA or by a final `BDAT ... LAST`),
    /// taken or not.
    pub fn message_attempts(&self) -> usize {
        self.record(|r| {
            r.commands
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .filter(|c| c == "DATA" || (c.starts_with("BDAT ") && c.ends_with(" LAST")))
                .count()
        })
    }

    /// How many commands starting with `verb` (e.g. "MAIL", "AUTH") it has seen.
    pub fn count(&self, verb: &str) -> usize {
        self.record(|r| {
            r.commands
                .iter()
                .filter(|c| c.to_ascii_uppercase().starts_with(verb))
                .count()
        })
    }

    pub fn messages(&self) -> Vec<Received> {
        self.record(|r| r.messages.clone())
    }

    /// Waits (bounded) until at least `n` messages have arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let mut rx = self.state.count.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|&c| c >= n)).await;
        assert!(
            reached.is_ok(),
            "expected {n} messages at the fake upstream within {limit:?}; got {}; commands: {:?}",
            self.messages().len(),
            self.record(|r| r.commands.clone())
        );
        self.messages()
    }

    /// Stops accepting connections (the port then refuses).
    pub fn stop(&self) {
        self.task.lock().unwrap().abort();
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (shared, acceptor) = (shared.clone(), acceptor.clone());
            tokio::spawn(async move {
                shared.record.lock().unwrap().connections += 1;
                let _ = session::serve(tcp, mode, acceptor, &shared).await;
            });
        }
    })
}

/// A CA, and a certificate for `names` signed by it.
fn tls_acceptor(names: &[&str]) -> (TlsAcceptor, String) {
    let (config, ca_pem) = super::certs::server_config(names, &[]);
    (TlsAcceptor::from(Arc::new(config)), ca_pem)
}
