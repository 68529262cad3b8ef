//! Opening an authenticated upstream connection: TCP, TLS (STARTTLS or implicit), EHLO, AUTH.
//!
//! STARTTLS is mandatory in `starttls` mode: if the server does not offer it, or the handshake
//! or certificate check fails, the connection is dropped before any credential or mail is
//! sent. AUTH happens only on an encrypted connection, with PLAIN (or LOGIN if PLAIN is not
//! offered). Every step is bounded by `upstream.timeout`.

use std::future::Future;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials as SmtpCredentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::{ClientId, Extension};
use tokio::net::TcpStream;

use super::classify::describe;
use super::tls::UpstreamTls;
use crate::config::{TlsMode, UpstreamConfig};

/// Why no usable upstream session could be had. Either way no message was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The upstream could not be reached or did not offer a secure session: connection refused
    /// or reset, DNS, TLS handshake or certificate, no STARTTLS, greeting or EHLO refused,
    /// timeout, or a temporary AUTH failure.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream refused the login (wrong or revoked app password, account locked, too many
    /// logins, no usable mechanism). Retrying at once would not help and may make it worse.
    #[error("upstream refused the login: {0}")]
    Login(String),
}

/// Bounds one step; a timeout becomes [`SessionError::Unavailable`].
async fn step<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(SessionError::Unavailable(format!(
            "{what}: no answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// Opens, secures and authenticates one connection.
pub async fn open(
    cfg: &UpstreamConfig,
    tls: &UpstreamTls,
) -> Result<AsyncSmtpConnection, SessionError> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        SessionError::Unavailable(format!("{what} {server}: {e}"))
    };
    let tcp = step(cfg.timeout, &format!("connect to {server}"), async {
        TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| unavailable("cannot connect to", &e))
    })
    .await?;
    // lettre writes the final "." of a message separately; without NODELAY it would wait for
    // the server's delayed ACK of the body.
    let _ = tcp.set_nodelay(true);
    let client_id = ClientId::Domain(cfg.helo_name.clone());

    let mut conn = match cfg.tls {
        TlsMode::Implicit => {
            let stream = step(
                cfg.timeout,
                &format!("TLS handshake with {server}"),
                async {
                    tls.wrap(tcp)
                        .await
                        .map_err(|e| unavailable("TLS handshake failed with", &e))
                },
            )
            .await?;
            step(cfg.timeout, &format!("greeting from {server}"), async {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &client_id)
                    .await
                    .map_err(|e| unavailable("greeting or EHLO refused by", &describe(&e)))
            })
            .await?
        }
        TlsMode::StartTls => {
            let mut conn = step(cfg.timeout, &format!("greeting from {server}"), async {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &client_id)
                    .await
                    .map_err(|e| unavailable("greeting or EHLO refused by", &describe(&e)))
            })
            .await?;
            if !conn.server_info().supports_feature(Extension::StartTls) {
                conn.abort().await;
                return Err(SessionError::Unavailable(format!(
                    "{server} does not offer STARTTLS; refusing to log in or send mail \
                     without TLS (use tls = \"implicit\" for port 465)"
                )));
            }
            step(cfg.timeout, &format!("STARTTLS with {server}"), async {
                conn.starttls(tls.starttls.clone(), &client_id)
                    .await
                    .map_err(|e| unavailable("STARTTLS failed with", &describe(&e)))
            })
            .await?;
            conn
        }
    };

    let login = cfg.credentials.login();
    let creds = SmtpCredentials::new(login.username, login.password.expose().to_owned());
    let auth = step(cfg.timeout, &format!("AUTH at {server}"), async {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
            .map_err(|e| {
                let reason = describe(&e);
                if e.status().is_some() || e.is_client() {
                    SessionError::Login(format!(
                        "{server} answered {reason} for user {}",
                        cfg.credentials.username()
                    ))
                } else {
                    SessionError::Unavailable(format!("AUTH at {server} failed: {reason}"))
                }
            })
    })
    .await;
    if let Err(e) = auth {
        conn.abort().await;
        return Err(e);
    }
    Ok(conn)
}
