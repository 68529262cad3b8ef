//! Opening an authenticated upstream connection: TCP, TLS (STARTTLS or implicit), one EHLO
//! over TLS, AUTH.
//!
//! STARTTLS is mandatory in `starttls` mode: if the server does not offer it, refuses it, or
//! the handshake or certificate check fails, the connection is dropped before any credential
//! or mail is sent. AUTH happens only on an encrypted connection, with PLAIN (or LOGIN if PLAIN
//! is not offered), or XOAUTH2 with a token. Every step is bounded by `upstream.timeout`.
//!
//! A failure here means no message was sent, and says why delivery as a whole should pause:
//! the upstream is unreachable (network, greeting), TLS failed (refused, certificate, a port
//! that speaks the other TLS mode), or it refuses us (login, account, our EHLO name). See
//! `classify` for which reply is which.
//!
//! A TLS-mode mismatch is named, not left to a timeout: `implicit` against a STARTTLS port
//! gets a plain-text greeting where the TLS handshake expected a record; `starttls` against an
//! implicit-TLS port gets silence, so after [`PROBE_AFTER`] without a greeting a second
//! connection tries a TLS handshake, and if the port answers in TLS the error says to set
//! `tls = "implicit"`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::classify::{Class, Failure, Stage};
use super::client::{Client, Reply};
use super::setup::Setup;
use super::{Pause, PauseKind};
use crate::auth::{Login, TokenError, xoauth2_response};
use crate::config::{TlsMode, UpstreamConfig};

/// How long a STARTTLS connection waits for a greeting before checking, on a second
/// connection, whether the port speaks TLS from the first byte instead.
pub const PROBE_AFTER: Duration = Duration::from_secs(2);

/// An authenticated connection and what the server said about itself.
pub struct Conn {
    /// The connection.
    pub client: Client,
    /// The EHLO keywords it offered over TLS.
    pub caps: Capabilities,
    /// When the OAuth2 token it logged in with expires (Gmail bounds the session by it).
    pub expires: Option<Instant>,
    /// The settings generation it was opened with (see `Upstream::reconfigure`).
    pub generation: u64,
}

/// The EHLO keywords a server offers (`SIZE 35882577`, `AUTH LOGIN PLAIN XOAUTH2`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// One keyword line each, as sent.
    pub keywords: Vec<String>,
}

impl Capabilities {
    fn from_ehlo(reply: &Reply) -> Capabilities {
        // The first line is the server's name and greeting, the rest its keywords.
        Capabilities {
            keywords: reply.lines.iter().skip(1).cloned().collect(),
        }
    }

    fn line(&self, keyword: &str) -> Option<&str> {
        self.keywords.iter().map(String::as_str).find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// The server offers `keyword` (`STARTTLS`, `PIPELINING`, `SMTPUTF8`, ...).
    pub fn has(&self, keyword: &str) -> bool {
        self.line(keyword).is_some()
    }

    /// The largest message the server accepts (its `SIZE`), if it said.
    pub fn size(&self) -> Option<usize> {
        self.line("SIZE")?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
            .filter(|&n| n > 0)
    }

    /// The server offers AUTH with `mechanism`.
    pub fn auth(&self, mechanism: &str) -> bool {
        self.line("AUTH").is_some_and(|l| {
            l.split_whitespace()
                .skip(1)
                .any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }
}

fn pause(kind: PauseKind, reason: String) -> Pause {
    Pause::new(kind, reason)
}

fn unreachable(reason: String) -> Pause {
    pause(PauseKind::Unreachable, reason)
}

/// The pause a refused setup step calls for.
fn refused(stage: Stage, failure: &Failure, server: &str) -> Pause {
    let kind = match failure.class(stage) {
        Class::PauseUpstream => PauseKind::Credentials,
        Class::PauseQuota => PauseKind::Quota,
        Class::PauseTls => PauseKind::Tls,
        _ => PauseKind::Unreachable,
    };
    let reason = match failure {
        Failure::Reply { .. } => format!("{server} answered {}", failure.describe()),
        Failure::Broken(why) => why.clone(),
    };
    pause(kind, reason)
}

/// Why no authenticated connection could be had.
#[derive(Debug)]
pub enum OpenError {
    /// Delivery through the account should pause.
    Pause(Pause),
    /// The mailbox to log in as does not exist (a service account acting as each sender):
    /// that sender's messages fail; retrying cannot help.
    NoMailbox(String),
}

impl From<Pause> for OpenError {
    fn from(p: Pause) -> OpenError {
        OpenError::Pause(p)
    }
}

/// What a failure to get the login (an OAuth2 or service account token) means for delivery;
/// for the Gmail API too.
pub(super) fn login_error(e: TokenError) -> OpenError {
    match e {
        TokenError::Rejected(why) => OpenError::Pause(pause(PauseKind::Credentials, why)),
        TokenError::Unavailable(why) => {
            OpenError::Pause(unreachable(format!("no OAuth2 access token: {why}")))
        }
        // 5.7.1: the relay is not authorized to send as this sender (RFC 3463).
        TokenError::NoSuchMailbox(why) => OpenError::NoMailbox(format!(
            "5.7.1 not sent: {why}; retrying cannot help: send from an existing mailbox, or \
             create this one"
        )),
    }
}

/// Opens, secures and authenticates one connection. With XOAUTH2, a token the server rejects
/// is dropped and the login tried once more, with a fresh token on a new connection.
pub async fn open(setup: &Setup) -> Result<Conn, OpenError> {
    let cfg = &setup.cfg;
    for last_try in [false, true] {
        let login = setup.credentials.login().await.map_err(login_error)?;
        let (mut client, caps) = secure(setup).await?;
        let expires = match &login {
            Login::XOAuth2 { token, .. } => Some(token.expires_at),
            Login::Password { .. } | Login::None => None,
        };
        match authenticate(&mut client, &caps, cfg, &login).await {
            Ok(()) => {
                return Ok(Conn {
                    client,
                    caps,
                    expires,
                    generation: 0,
                });
            }
            Err(refusal) => {
                drop(client);
                match refusal {
                    Refusal::Token(why) if !last_try => {
                        tracing::info!(reason = %why, "the upstream rejected the OAuth2 access token; refreshing it and trying once more");
                        setup.credentials.rejected(&login).await;
                    }
                    Refusal::Token(why) => {
                        return Err(OpenError::Pause(pause(
                            PauseKind::Credentials,
                            format!(
                                "{}:{} rejected a freshly refreshed OAuth2 token for {}: {why}; \
                                 check that the token has the https://mail.google.com/ scope \
                                 and belongs to this account",
                                cfg.host, cfg.port, cfg.username
                            ),
                        )));
                    }
                    Refusal::Pause(pause) => return Err(OpenError::Pause(pause)),
                }
            }
        }
    }
    unreachable!("the loop returns on its second round")
}

/// Why a login did not succeed.
enum Refusal {
    /// The XOAUTH2 token was refused: a fresh one may work.
    Token(String),
    /// Anything else: pause as this says.
    Pause(Pause),
}

/// A TLS handshake (implicit, or after STARTTLS) within `upstream.timeout`; a failure is a TLS
/// pause that says why (see `tls::explain`).
async fn handshake<T>(
    cfg: &UpstreamConfig,
    server: &str,
    shake: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Pause> {
    tokio::time::timeout(cfg.timeout, shake)
        .await
        .map_err(|_| {
            pause(
                PauseKind::Tls,
                format!(
                    "no TLS handshake with {server} within {}",
                    humantime::format_duration(cfg.timeout)
                ),
            )
        })?
        .map_err(|e| pause(PauseKind::Tls, super::tls::explain(&e, cfg, server)))
}

/// TCP, TLS and one EHLO over TLS: a secure connection ready for AUTH, and its keywords.
async fn secure(setup: &Setup) -> Result<(Client, Capabilities), Pause> {
    let cfg = &setup.cfg;
    let server = format!("{}:{}", cfg.host, cfg.port);
    let tcp = connect(cfg, &server).await?;
    match cfg.tls {
        TlsMode::Implicit => {
            let tls = handshake(cfg, &server, setup.tls.handshake(tcp)).await?;
            let mut client = Client::tls(tls, server.clone(), cfg.timeout);
            let greeting = client.read_reply().await;
            greeted(greeting, &server)?;
            let caps = ehlo(&mut client, cfg).await?;
            Ok((client, caps))
        }
        TlsMode::StartTls => {
            let mut client = Client::plain(tcp, server.clone(), cfg.timeout);
            let greeting = plain_greeting(&mut client, setup).await?;
            greeted(greeting, &server).map_err(|p| match client.saw_tls_record() {
                true => pause(
                    PauseKind::Tls,
                    format!(
                        "{server} speaks TLS from the first byte (it sent a TLS record where \
                         an SMTP greeting was expected): set {} = \"implicit\"",
                        cfg.key("tls")
                    ),
                ),
                false => p,
            })?;
            let caps = ehlo(&mut client, cfg).await?;
            if !caps.has("STARTTLS") {
                return Err(pause(
                    PauseKind::Tls,
                    format!(
                        "{server} does not offer STARTTLS; refusing to log in or send mail \
                         without TLS (for a port that speaks TLS from the first byte, such as \
                         465, set {} = \"implicit\")",
                        cfg.key("tls")
                    ),
                ));
            }
            client
                .command("STARTTLS")
                .await
                .map_err(|f| refused(Stage::StartTls, &f, &server))
                .map_err(|mut p| {
                    if p.kind == PauseKind::Tls {
                        p.reason = format!("STARTTLS refused: {}", p.reason);
                    }
                    p
                })?;
            handshake(cfg, &server, client.starttls(&setup.tls)).await?;
            let caps = ehlo(&mut client, cfg).await?;
            Ok((client, caps))
        }
    }
}

async fn connect(cfg: &UpstreamConfig, server: &str) -> Result<TcpStream, Pause> {
    let tcp = tokio::time::timeout(
        cfg.timeout,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "cannot connect to {server}: no answer within {}",
            humantime::format_duration(cfg.timeout)
        ))
    })?
    .map_err(|e| unreachable(format!("cannot connect to {server}: {e}")))?;
    // Each command is one small write; do not let Nagle hold it back.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The greeting on a plain connection. If none has come after [`PROBE_AFTER`], a second
/// connection checks whether the port expects TLS first; if it does, waiting longer is
/// pointless and the error (the outer one) says what to change.
async fn plain_greeting(
    client: &mut Client,
    setup: &Setup,
) -> Result<Result<Reply, Failure>, Pause> {
    let cfg = &setup.cfg;
    let deadline = Instant::now() + cfg.timeout;
    if let Ok(answer) =
        tokio::time::timeout(PROBE_AFTER, client.read_reply_within(cfg.timeout)).await
    {
        return Ok(answer);
    }
    let probe = speaks_tls(setup);
    tokio::pin!(probe);
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::select! {
        answer = client.read_reply_within(left) => Ok(answer),
        tls = &mut probe => {
            if tls {
                return Err(pause(
                    PauseKind::Tls,
                    format!(
                        "{} sent no greeting but answers a TLS handshake: it speaks TLS from \
                         the first byte (like port 465); set {} = \"implicit\"",
                        client.server(),
                        cfg.key("tls")
                    ),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            Ok(client.read_reply_within(left).await)
        }
    }
}

/// Does the port answer a TLS handshake? A certificate error or an alert counts as yes: only
/// a TLS server sends those.
async fn speaks_tls(setup: &Setup) -> bool {
    let cfg = &setup.cfg;
    let limit = cfg.timeout.min(Duration::from_secs(5));
    let Ok(Ok(tcp)) =
        tokio::time::timeout(limit, TcpStream::connect((cfg.host.as_str(), cfg.port))).await
    else {
        return false;
    };
    match tokio::time::timeout(limit, setup.tls.handshake(tcp)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| !matches!(e, rustls::Error::InvalidMessage(_))),
        Err(_) => false,
    }
}

/// Checks a greeting: a 220 goes on; anything else explains why not.
fn greeted(greeting: Result<Reply, Failure>, server: &str) -> Result<(), Pause> {
    match greeting {
        Ok(r) if r.code == 220 => Ok(()),
        Ok(r) => Err(refused(Stage::Greeting, &r.failure(), server)),
        Err(Failure::Broken(why)) => Err(unreachable(format!("no greeting: {why}"))),
        Err(failure) => Err(refused(Stage::Greeting, &failure, server)),
    }
}

async fn ehlo(client: &mut Client, cfg: &UpstreamConfig) -> Result<Capabilities, Pause> {
    let server = client.server().to_owned();
    client
        .command(&format!("EHLO {}", cfg.helo_name))
        .await
        .map(|r| Capabilities::from_ehlo(&r))
        .map_err(|f| refused(Stage::Ehlo, &f, &server))
}

/// AUTH with the login: PLAIN or LOGIN for a password, XOAUTH2 for a token.
async fn authenticate(
    client: &mut Client,
    caps: &Capabilities,
    cfg: &UpstreamConfig,
    login: &Login,
) -> Result<(), Refusal> {
    let server = client.server().to_owned();
    let refused_at_auth = |failure: &Failure| {
        let mut pause = refused(Stage::Auth, failure, &server);
        if matches!(failure, Failure::Reply { .. }) {
            pause.reason = format!("{} (logging in as {})", pause.reason, cfg.username);
        } else {
            pause.reason = format!("AUTH at {server} failed: {}", pause.reason);
        }
        pause
    };
    match login {
        // Google's relay service knows the relay by its IP address; TLS is already up.
        Login::None => Ok(()),
        Login::Password { username, password } => {
            let result = if caps.auth("PLAIN") {
                let response = B64.encode(format!("\0{username}\0{}", password.expose()));
                match client.command(&format!("AUTH PLAIN {response}")).await {
                    // A server that wants the response after an empty challenge.
                    Ok(r) if r.code == 334 => client.command(&response).await,
                    other => other,
                }
            } else if caps.auth("LOGIN") {
                async {
                    client.command("AUTH LOGIN").await?;
                    client.command(&B64.encode(username)).await?;
                    client.command(&B64.encode(password.expose())).await
                }
                .await
            } else {
                return Err(Refusal::Pause(pause(
                    PauseKind::Credentials,
                    format!(
                        "{server} offers no AUTH PLAIN or LOGIN (it offers {}); set {} to a \
                         method it supports",
                        caps.line("AUTH").unwrap_or("no AUTH at all"),
                        cfg.key("auth")
                    ),
                )));
            };
            match result {
                Ok(r) if r.code == 235 => Ok(()),
                Ok(r) => Err(Refusal::Pause(refused_at_auth(&Failure::Reply {
                    code: r.code,
                    text: r.text(),
                }))),
                Err(failure) => Err(Refusal::Pause(refused_at_auth(&failure))),
            }
        }
        Login::XOAuth2 { username, token } => {
            if !caps.auth("XOAUTH2") {
                return Err(Refusal::Pause(pause(
                    PauseKind::Credentials,
                    format!(
                        "{server} does not offer AUTH XOAUTH2; use {} = \"password\" there",
                        cfg.key("auth")
                    ),
                )));
            }
            let response = B64.encode(xoauth2_response(username, &token.value));
            match client.command(&format!("AUTH XOAUTH2 {response}")).await {
                Ok(reply) if reply.code == 334 => {
                    // Google's error challenge (base64 JSON); answer with an empty line and
                    // read the final refusal.
                    let detail = reply
                        .lines
                        .first()
                        .and_then(|b| B64.decode(b.trim()).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let last = match client.command("").await {
                        Ok(r) => r.describe(),
                        Err(failure) => failure.describe(),
                    };
                    Err(Refusal::Token(format!("{detail} {last}").trim().to_owned()))
                }
                Ok(_) => Ok(()),
                Err(Failure::Broken(why)) => Err(Refusal::Pause(unreachable(format!(
                    "AUTH at {server} failed: {why}"
                )))),
                Err(failure) if failure.class(Stage::Auth) == Class::PauseUpstream => {
                    Err(Refusal::Token(failure.describe()))
                }
                Err(failure) => Err(Refusal::Pause(refused_at_auth(&failure))),
            }
        }
    }
}
