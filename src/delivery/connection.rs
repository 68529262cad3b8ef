//! Opening an authenticated upstream connection: TCP, TLS (STARTTLS or implicit), EHLO, AUTH.
//!
//! STARTTLS is mandatory in `starttls` mode: if the server does not offer it, or the handshake
//! or certificate check fails, the connection is dropped before any credential or mail is
//! sent. AUTH happens only on an encrypted connection, with PLAIN (or LOGIN if PLAIN is not
//! offered). Every step is bounded by `upstream.timeout`.
//!
//! A failure here means no message was sent, and says why delivery as a whole should pause: the
//! upstream is unreachable (network, TLS, greeting), or it refuses us (login, account, our
//! EHLO name). See `classify` for which reply is which.

use std::future::Future;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::{ClientId, Extension};
use tokio::net::TcpStream;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::classify::{Class, Failure, Stage};
use super::tls::UpstreamTls;
use super::transaction::command;
use super::{Pause, PauseKind};
use crate::auth::{Login, TokenError, xoauth2_response};
use crate::config::{TlsMode, UpstreamConfig};

/// An authenticated connection and what the server said about itself.
pub struct Conn {
    /// The lettre connection.
    pub smtp: AsyncSmtpConnection,
    /// The largest message the server accepts (its EHLO `SIZE`), if it said.
    pub max_size: Option<usize>,
    /// The EHLO keywords it offered over TLS (`SIZE 35882577`, `AUTH LOGIN PLAIN ...`).
    pub capabilities: Vec<String>,
    /// When the OAuth2 token it logged in with expires (Gmail bounds the session by it).
    pub expires: Option<tokio::time::Instant>,
    /// The settings generation it was opened with (see `Upstream::reconfigure`).
    pub generation: u64,
}

fn unreachable(reason: String) -> Pause {
    Pause {
        kind: PauseKind::Unreachable,
        reason,
    }
}

/// The pause a refused setup step calls for.
fn refused(stage: Stage, failure: &Failure, server: &str) -> Pause {
    let reason = format!("{server} answered {}", failure.describe());
    let kind = match failure.class(stage) {
        Class::PauseUpstream => PauseKind::Credentials,
        Class::PauseQuota => PauseKind::Quota,
        _ => PauseKind::Unreachable,
    };
    Pause { kind, reason }
}

/// Bounds one step; a timeout means the upstream is unreachable.
async fn step<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, Pause>>,
) -> Result<T, Pause> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(unreachable(format!(
            "{what}: no answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// Opens, secures and authenticates one connection. With XOAUTH2, a token the server rejects
/// is dropped and the login tried once more, with a fresh token on a new connection.
pub async fn open(cfg: &UpstreamConfig, tls: &UpstreamTls) -> Result<Conn, Pause> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    for last_try in [false, true] {
        let login = cfg.credentials.login().await.map_err(|e| match e {
            TokenError::Rejected(why) => Pause {
                kind: PauseKind::Credentials,
                reason: why,
            },
            TokenError::Unavailable(why) => unreachable(format!("no OAuth2 access token: {why}")),
        })?;
        let (mut smtp, capabilities) = secure(cfg, tls, &server).await?;
        let max_size = capabilities.iter().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()?.eq_ignore_ascii_case("SIZE"))
                .then(|| words.next()?.parse::<usize>().ok())
                .flatten()
                .filter(|&n| n > 0)
        });
        let expires = match &login {
            Login::XOAuth2 { token, .. } => Some(token.expires_at),
            Login::Password { .. } => None,
        };
        match authenticate(&mut smtp, cfg, &server, &login).await {
            Ok(()) => {
                return Ok(Conn {
                    smtp,
                    max_size,
                    capabilities,
                    expires,
                    generation: 0,
                });
            }
            Err(refusal) => {
                smtp.abort().await;
                match refusal {
                    Refusal::Token(why) if !last_try => {
                        tracing::info!(reason = %why, "the upstream rejected the OAuth2 access token; refreshing it and trying once more");
                        cfg.credentials.rejected(&login).await;
                    }
                    Refusal::Token(why) => {
                        return Err(Pause {
                            kind: PauseKind::Credentials,
                            reason: format!(
                                "{server} rejected a freshly refreshed OAuth2 token for {}: {why}; \
                                 check that the token has the https://mail.google.com/ scope and \
                                 belongs to this account",
                                cfg.credentials.username()
                            ),
                        });
                    }
                    Refusal::Pause(pause) => return Err(pause),
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

/// TCP, TLS and EHLO: a secure connection ready for AUTH, and the EHLO keywords.
async fn secure(
    cfg: &UpstreamConfig,
    tls: &UpstreamTls,
    server: &str,
) -> Result<(AsyncSmtpConnection, Vec<String>), Pause> {
    let tcp = step(cfg.timeout, &format!("connect to {server}"), async {
        TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| unreachable(format!("cannot connect to {server}: {e}")))
    })
    .await?;
    // lettre writes the final "." of a message separately; without NODELAY it would wait for
    // the server's delayed ACK of the body.
    let _ = tcp.set_nodelay(true);
    let client_id = ClientId::Domain(cfg.helo_name.clone());
    let greeting_refused = |e: lettre::transport::smtp::Error| match Failure::from_lettre(&e) {
        Failure::Broken(why) => unreachable(format!("no greeting from {server}: {why}")),
        failure => refused(Stage::Greeting, &failure, server),
    };

    let mut smtp = match cfg.tls {
        TlsMode::Implicit => {
            let stream = step(
                cfg.timeout,
                &format!("TLS handshake with {server}"),
                async {
                    tls.wrap(tcp).await.map_err(|e| {
                        unreachable(format!("TLS handshake failed with {server}: {e}"))
                    })
                },
            )
            .await?;
            step(cfg.timeout, &format!("greeting from {server}"), async {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &client_id)
                    .await
                    .map_err(greeting_refused)
            })
            .await?
        }
        TlsMode::StartTls => {
            let mut smtp = step(cfg.timeout, &format!("greeting from {server}"), async {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &client_id)
                    .await
                    .map_err(greeting_refused)
            })
            .await?;
            if !smtp.server_info().supports_feature(Extension::StartTls) {
                smtp.abort().await;
                return Err(unreachable(format!(
                    "{server} does not offer STARTTLS; refusing to log in or send mail \
                     without TLS (use tls = \"implicit\" for port 465)"
                )));
            }
            step(cfg.timeout, &format!("STARTTLS with {server}"), async {
                smtp.starttls(tls.starttls.clone(), &client_id)
                    .await
                    .map_err(|e| match Failure::from_lettre(&e) {
                        Failure::Broken(why) => {
                            unreachable(format!("STARTTLS failed with {server}: {why}"))
                        }
                        failure => refused(Stage::StartTls, &failure, server),
                    })
            })
            .await?;
            smtp
        }
    };

    // lettre keeps only the EHLO keywords it knows; SIZE and the rest come from a second EHLO.
    let capabilities =
        match command(&mut smtp, format!("EHLO {}", cfg.helo_name), cfg.timeout).await {
            // The first line is the server's greeting name, the rest its keywords.
            Ok(reply) => reply.message().skip(1).map(str::to_owned).collect(),
            Err(failure) => {
                smtp.abort().await;
                return Err(refused(Stage::Ehlo, &failure, server));
            }
        };

    Ok((smtp, capabilities))
}

/// AUTH with the login: PLAIN or LOGIN for a password, XOAUTH2 for a token.
async fn authenticate(
    smtp: &mut AsyncSmtpConnection,
    cfg: &UpstreamConfig,
    server: &str,
    login: &Login,
) -> Result<(), Refusal> {
    let refused_at_auth = |failure: &Failure| {
        let mut pause = refused(Stage::Auth, failure, server);
        pause.reason = format!(
            "{} (logging in as {})",
            pause.reason,
            cfg.credentials.username()
        );
        pause
    };
    match login {
        Login::Password { username, password } => {
            let creds = SmtpCredentials::new(username.clone(), password.expose().to_owned());
            step(cfg.timeout, &format!("AUTH at {server}"), async {
                smtp.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        if e.is_client() {
                            return Pause {
                                kind: PauseKind::Credentials,
                                reason: format!("{server} offers no AUTH PLAIN or LOGIN: {e}"),
                            };
                        }
                        match Failure::from_lettre(&e) {
                            Failure::Broken(why) => {
                                unreachable(format!("AUTH at {server} failed: {why}"))
                            }
                            failure => refused_at_auth(&failure),
                        }
                    })
            })
            .await
            .map_err(Refusal::Pause)
        }
        Login::XOAuth2 { username, token } => {
            if !smtp
                .server_info()
                .supports_auth_mechanism(Mechanism::Xoauth2)
            {
                return Err(Refusal::Pause(Pause {
                    kind: PauseKind::Credentials,
                    reason: format!(
                        "{server} does not offer AUTH XOAUTH2; use upstream.auth = \"password\" there"
                    ),
                }));
            }
            let response = B64.encode(xoauth2_response(username, &token.value));
            match command(smtp, format!("AUTH XOAUTH2 {response}"), cfg.timeout).await {
                Ok(reply) if reply.code().to_string() == "334" => {
                    // Google's error challenge (base64 JSON); answer with an empty line and
                    // read the final refusal.
                    let detail = reply
                        .message()
                        .next()
                        .and_then(|b| B64.decode(b.trim()).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let last = match command(smtp, String::new(), cfg.timeout).await {
                        Ok(r) => r.code().to_string(),
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
