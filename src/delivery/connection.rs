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

use super::classify::{Class, Failure, Stage};
use super::tls::UpstreamTls;
use super::transaction::command;
use super::{Pause, PauseKind};
use crate::config::{TlsMode, UpstreamConfig};

/// An authenticated connection and what the server said about itself.
pub struct Conn {
    /// The lettre connection.
    pub smtp: AsyncSmtpConnection,
    /// The largest message the server accepts (its EHLO `SIZE`), if it said.
    pub max_size: Option<usize>,
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

/// Opens, secures and authenticates one connection.
pub async fn open(cfg: &UpstreamConfig, tls: &UpstreamTls) -> Result<Conn, Pause> {
    let server = format!("{}:{}", cfg.host, cfg.port);
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
        failure => refused(Stage::Greeting, &failure, &server),
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
                        failure => refused(Stage::StartTls, &failure, &server),
                    })
            })
            .await?;
            smtp
        }
    };

    // lettre keeps only the EHLO keywords it knows; SIZE is read from a second EHLO.
    let max_size = match command(&mut smtp, format!("EHLO {}", cfg.helo_name), cfg.timeout).await {
        Ok(reply) => reply.message().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()?.eq_ignore_ascii_case("SIZE"))
                .then(|| words.next()?.parse::<usize>().ok())
                .flatten()
                .filter(|&n| n > 0)
        }),
        Err(failure) => {
            smtp.abort().await;
            return Err(refused(Stage::Ehlo, &failure, &server));
        }
    };

    let login = cfg.credentials.login();
    let creds = SmtpCredentials::new(login.username, login.password.expose().to_owned());
    let auth = step(cfg.timeout, &format!("AUTH at {server}"), async {
        smtp.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
            .map_err(|e| {
                if e.is_client() {
                    return Pause {
                        kind: PauseKind::Credentials,
                        reason: format!("{server} offers no AUTH PLAIN or LOGIN: {e}"),
                    };
                }
                match Failure::from_lettre(&e) {
                    Failure::Broken(why) => unreachable(format!("AUTH at {server} failed: {why}")),
                    failure => {
                        let mut pause = refused(Stage::Auth, &failure, &server);
                        pause.reason = format!(
                            "{} (logging in as {})",
                            pause.reason,
                            cfg.credentials.username()
                        );
                        pause
                    }
                }
            })
    })
    .await;
    if let Err(e) = auth {
        smtp.abort().await;
        return Err(e);
    }
    Ok(Conn { smtp, max_size })
}
