//! A fake Gmail: an SMTP server on 127.0.0.1 with real TLS (a CA and certificate generated per
//! run), STARTTLS or implicit TLS, AUTH PLAIN and LOGIN, scripted replies at each stage, and a
//! record of everything it was sent.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
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
}

impl Script {
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
                let _ = serve(tcp, mode, acceptor, &shared).await;
            });
        }
    })
}

/// A CA, and a certificate for `names` signed by it.
fn tls_acceptor(names: &[&str]) -> (TlsAcceptor, String) {
    let certs = super::certs::generate_for(names);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), certs.ca_pem)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

struct Conn {
    io: Io,
    buf: Vec<u8>,
}

impl Conn {
    async fn line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ));
            }
            let mut chunk = [0u8; 8192];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        self.io.write_all(format!("{text}\r\n").as_bytes()).await?;
        self.io.flush().await
    }

    /// Reads DATA up to the terminating dot, undoing dot-stuffing.
    async fn data(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                let mut chunk = [0u8; 65536];
                let n = self.io.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                continue;
            };
            let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
            if line == b".\r\n" {
                return Ok(Some(out));
            }
            let line = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            out.extend_from_slice(line);
        }
    }
}

/// Takes one unit of a "next N connections" counter.
fn take(counter: &mut usize) -> bool {
    let hit = *counter > 0;
    *counter = counter.saturating_sub(1);
    hit
}

async fn serve(
    mut tcp: TcpStream,
    mode: Mode,
    acceptor: TlsAcceptor,
    shared: &Shared,
) -> io::Result<()> {
    let (stall, garbage, greeting) = {
        let mut script = shared.script.lock().unwrap();
        let stall = take(&mut script.stall);
        let garbage = mode == Mode::Implicit && take(&mut script.tls_garbage);
        (stall, garbage, script.greetings.pop_front())
    };
    if stall {
        // Hold the socket without a word until the client gives up.
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    if garbage {
        tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await?;
        return Ok(());
    }
    let io = match mode {
        Mode::Implicit => Io::Tls(Box::new(acceptor.accept(tcp).await?)),
        Mode::StartTls => Io::Plain(tcp),
    };
    let mut c = Conn {
        io,
        buf: Vec::new(),
    };
    let mut tls = mode == Mode::Implicit;
    let mut user: Option<String> = None;
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    match greeting {
        Some(g) if !g.starts_with("220") => {
            c.reply(&g).await?;
            return Ok(());
        }
        Some(g) => c.reply(&g).await?,
        None => c.reply("220 fake.gmail ESMTP ready").await?,
    }
    loop {
        let idle_close = shared.script.lock().unwrap().idle_close;
        let line = match idle_close {
            Some(limit) => match tokio::time::timeout(limit, c.line()).await {
                Ok(line) => line?,
                Err(_) => {
                    c.reply("451 4.4.2 Timeout - closing connection. - gsmtp")
                        .await?;
                    return Ok(());
                }
            },
            None => c.line().await?,
        };
        let Some(line) = line else { break };
        shared.record.lock().unwrap().commands.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let offer_starttls = !tls && !shared.script.lock().unwrap().no_starttls;
                let size = shared.script.lock().unwrap().size.unwrap_or(35_882_577);
                let mut lines = vec![
                    "250-fake.gmail at your service".to_string(),
                    format!("250-SIZE {size}"),
                    "250-8BITMIME".into(),
                ];
                if offer_starttls {
                    lines.push("250-STARTTLS".into());
                }
                if tls {
                    let mechs = shared
                        .script
                        .lock()
                        .unwrap()
                        .auth_mechanisms
                        .unwrap_or("LOGIN PLAIN XOAUTH2");
                    lines.push(format!("250-AUTH {mechs}"));
                }
                lines.push("250-ENHANCEDSTATUSCODES".into());
                lines.push("250-PIPELINING".into());
                lines.push("250 SMTPUTF8".into());
                c.reply(&lines.join("\r\n")).await?;
            }
            "STARTTLS" if !tls => {
                let scripted = shared.script.lock().unwrap().starttls_replies.pop_front();
                if let Some(reply) = scripted {
                    c.reply(&reply).await?;
                    continue;
                }
                c.reply("220 2.0.0 Ready to start TLS").await?;
                let Io::Plain(tcp) = std::mem::replace(&mut c.io, Io::Gone) else {
                    unreachable!()
                };
                c.io = Io::Tls(Box::new(acceptor.accept(tcp).await?));
                tls = true;
            }
            "AUTH" => {
                if !tls {
                    c.reply("530 5.7.0 Must issue a STARTTLS command first")
                        .await?;
                    continue;
                }
                let args: Vec<&str> = line.split_whitespace().collect();
                let mech = args
                    .get(1)
                    .map(|m| m.to_ascii_uppercase())
                    .unwrap_or_default();
                {
                    let mut r = shared.record.lock().unwrap();
                    r.auth_attempts += 1;
                    r.mechanisms.push(mech.clone());
                }
                let (u, p) = match mech.as_str() {
                    "PLAIN" => {
                        let b64 = match args.get(2) {
                            Some(b) => b.to_string(),
                            None => {
                                c.reply("334 ").await?;
                                c.line().await?.unwrap_or_default()
                            }
                        };
                        let raw = B64.decode(b64.trim()).unwrap_or_default();
                        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
                        let text = |i: usize| {
                            parts
                                .get(i)
                                .map(|p| String::from_utf8_lossy(p).to_string())
                                .unwrap_or_default()
                        };
                        (text(1), text(2))
                    }
                    "XOAUTH2" => {
                        let raw = B64
                            .decode(args.get(2).unwrap_or(&"").trim())
                            .unwrap_or_default();
                        let text = String::from_utf8_lossy(&raw).to_string();
                        let parts: Vec<&str> = text.split('\u{1}').collect();
                        let who = parts
                            .first()
                            .and_then(|p| p.strip_prefix("user="))
                            .unwrap_or("");
                        let token = parts
                            .get(1)
                            .and_then(|p| p.strip_prefix("auth=Bearer "))
                            .unwrap_or("")
                            .to_string();
                        shared.record.lock().unwrap().tokens.push(token.clone());
                        let refused = shared
                            .script
                            .lock()
                            .unwrap()
                            .rejected_tokens
                            .contains(&token);
                        if who == USER
                            && !token.is_empty()
                            && !refused
                            && text.ends_with("\u{1}\u{1}")
                        {
                            user = Some(who.to_string());
                            c.reply("235 2.7.0 Accepted").await?;
                        } else {
                            let json = r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
                            c.reply(&format!("334 {}", B64.encode(json))).await?;
                            let answer = c.line().await?.unwrap_or_default();
                            shared
                                .record
                                .lock()
                                .unwrap()
                                .commands
                                .push(format!("(challenge answer: {answer:?})"));
                            c.reply("535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp").await?;
                        }
                        continue;
                    }
                    "LOGIN" => {
                        c.reply(&format!("334 {}", B64.encode("Username:"))).await?;
                        let u = c.line().await?.unwrap_or_default();
                        c.reply(&format!("334 {}", B64.encode("Password:"))).await?;
                        let p = c.line().await?.unwrap_or_default();
                        let dec = |s: &str| {
                            String::from_utf8_lossy(&B64.decode(s.trim()).unwrap_or_default())
                                .to_string()
                        };
                        (dec(&u), dec(&p))
                    }
                    _ => {
                        c.reply("504 5.7.4 Unrecognized authentication type")
                            .await?;
                        continue;
                    }
                };
                let scripted = shared.script.lock().unwrap().auth_replies.pop_front();
                if let Some(reply) = scripted {
                    c.reply(&reply).await?;
                } else if u == USER && p == PASSWORD {
                    user = Some(u);
                    c.reply("235 2.7.0 Accepted").await?;
                } else {
                    c.reply("535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp").await?;
                }
            }
            "MAIL" => {
                if user.is_none() {
                    c.reply("530 5.7.0 Authentication Required").await?;
                    continue;
                }
                from = between_brackets(&line);
                to.clear();
                c.reply("250 2.1.0 OK").await?;
            }
            "RCPT" => {
                let addr = between_brackets(&line);
                let (scripted, max, too_many) = {
                    let script = shared.script.lock().unwrap();
                    (
                        script.rcpt_replies.get(&addr).cloned(),
                        script.max_rcpt_per_tx,
                        script.too_many_rcpt_reply.clone(),
                    )
                };
                if max.is_some_and(|max| to.len() >= max) {
                    let reply = too_many.unwrap_or_else(|| {
                        "452 4.5.3 Your message has too many recipients. - gsmtp".into()
                    });
                    c.reply(&reply).await?;
                    continue;
                }
                match scripted {
                    Some(reply) => c.reply(&reply).await?,
                    None => {
                        to.push(addr);
                        c.reply("250 2.1.5 OK").await?;
                    }
                }
            }
            "DATA" => {
                if to.is_empty() {
                    c.reply("503 5.5.1 RCPT first").await?;
                    continue;
                }
                c.reply("354  Go ahead").await?;
                if take(&mut shared.script.lock().unwrap().drop_in_data) {
                    let _ = c.line().await?;
                    return Ok(()); // dropped mid-DATA
                }
                let Some(data) = c.data().await? else {
                    return Ok(());
                };
                let scripted = shared.script.lock().unwrap().data_replies.pop_front();
                match scripted {
                    Some(reply) if reply.starts_with("421") => {
                        c.reply(&reply).await?;
                        return Ok(());
                    }
                    Some(reply) => c.reply(&reply).await?,
                    None => {
                        let n = {
                            let mut r = shared.record.lock().unwrap();
                            r.messages.push(Received {
                                from: from.clone(),
                                to: to.clone(),
                                data,
                                tls,
                                user: user.clone(),
                            });
                            r.messages.len()
                        };
                        shared.count.send_replace(n);
                        c.reply("250 2.0.0 OK 1700000000 x1-20020a - gsmtp").await?;
                    }
                }
                to.clear();
            }
            "RSET" => {
                to.clear();
                c.reply("250 2.1.5 Flushed").await?;
            }
            "NOOP" => c.reply("250 2.0.0 OK").await?,
            "QUIT" => {
                c.reply("221 2.0.0 closing connection").await?;
                return Ok(());
            }
            _ => c.reply("502 5.5.1 Unrecognized command").await?,
        }
    }
    Ok(())
}

fn between_brackets(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}
