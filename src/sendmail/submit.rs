//! Handing a prepared message to the running relay over SMTP on one of its local listeners.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

use super::{SendmailError, Submission};

/// How long each step may take; the relay answers the end of DATA after an fsync.
const STEP: Duration = Duration::from_secs(60);

/// One command line, as lettre's `command` takes it.
struct Line(String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// A listener bound to every address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The reply text of a refusal, and its class.
fn refusal(e: &SmtpError, step: &str) -> SendmailError {
    let text = match std::error::Error::source(e) {
        Some(m) => format!(
            "{} {m}",
            e.status().map(|c| c.to_string()).unwrap_or_default()
        ),
        None => e.to_string(),
    };
    let text = format!("{step}: {}", text.trim());
    if e.is_transient() {
        SendmailError::TempFail(format!("{text}; try again later"))
    } else if e.is_permanent() {
        match text.split_whitespace().find(|w| w.starts_with("5.")) {
            Some(code) if code.starts_with("5.7.") => SendmailError::NoPerm(text),
            Some(code) if code.starts_with("5.1.") => SendmailError::NoUser(text),
            Some(code) if code.starts_with("5.3.4") => SendmailError::Data(text),
            _ => SendmailError::Refused(text),
        }
    } else {
        SendmailError::TempFail(format!("{text}; try again later"))
    }
}

async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = Result<T, SmtpError>>,
) -> Result<T, SendmailError> {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refusal(&e, what)),
        Err(_) => Err(SendmailError::TempFail(format!(
            "{what}: the relay did not answer within {}s",
            STEP.as_secs()
        ))),
    }
}

/// Submits `sub` to the first of `addrs` that accepts a connection; returns the relay's final
/// reply (`250 2.0.0 Ok: queued as <id>`).
pub async fn submit(
    addrs: &[SocketAddr],
    hostname: &str,
    sub: &Submission,
) -> Result<String, SendmailError> {
    let mut refused = Vec::new();
    let mut stream = None;
    for &addr in addrs {
        let addr = reachable(addr);
        match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => refused.push(format!("{addr}: {e}")),
            Err(_) => refused.push(format!("{addr}: timed out")),
        }
    }
    let Some(stream) = stream else {
        return Err(SendmailError::TempFail(format!(
            "the relay is not running (cannot connect to {}); the message was not sent, \
             try again later",
            refused.join(", ")
        )));
    };
    let _ = stream.set_nodelay(true);
    let client_id = ClientId::Domain(hostname.to_owned());
    let mut smtp = bounded(
        "greeting",
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &client_id),
    )
    .await?;
    let utf8 = !sub.sender.is_ascii() || sub.recipients.iter().any(|r| !r.is_ascii());
    let mut mail = format!("MAIL FROM:<{}> SIZE={}", sub.sender, sub.message.len());
    if !sub.message.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    let result = async {
        bounded("MAIL FROM", smtp.command(Line(mail))).await?;
        for r in &sub.recipients {
            bounded(
                &format!("RCPT TO:<{r}>"),
                smtp.command(Line(format!("RCPT TO:<{r}>"))),
            )
            .await?;
        }
        bounded("DATA", smtp.command(Line("DATA".into()))).await?;
        // lettre appends CRLF . CRLF; the message already ends its last line with CRLF.
        let body = sub.message.strip_suffix(b"\r\n").unwrap_or(&sub.message);
        let reply = bounded("end of data", smtp.message(body)).await?;
        Ok(reply.message().collect::<Vec<_>>().join(" "))
    }
    .await;
    match &result {
        Ok(_) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), smtp.quit()).await;
        }
        Err(_) => smtp.abort().await,
    }
    let code_text = result?;
    Ok(format!("250 {code_text}"))
}
