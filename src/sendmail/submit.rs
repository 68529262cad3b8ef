//! Handing a prepared message to the running relay over SMTP on one of its local listeners,
//! with the relay's own SMTP client (plain: the listener is on this machine).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{SendmailError, Submission};
use crate::delivery::Failure;
use crate::delivery::client::{Client, Reply};

/// How long each step may take; the relay answers the end of DATA after an fsync.
const STEP: Duration = Duration::from_secs(60);

/// A listener bound to every address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// What the relay's refusal at `step` means for sendmail's exit code.
fn refusal(failure: Failure, step: &str) -> SendmailError {
    let (code, text) = match failure {
        Failure::Reply { code, text } => (code, text),
        Failure::Broken(why) => {
            return SendmailError::TempFail(format!("{step}: {why}; try again later"));
        }
    };
    let shown = format!("{step}: {code} {text}");
    if code < 500 {
        return SendmailError::TempFail(format!("{shown}; try again later"));
    }
    match text.split_whitespace().next().unwrap_or("") {
        e if e.starts_with("5.7.") => SendmailError::NoPerm(shown),
        e if e.starts_with("5.1.") => SendmailError::NoUser(shown),
        e if e.starts_with("5.3.4") => SendmailError::Data(shown),
        _ => SendmailError::Refused(shown),
    }
}

/// Submits `sub` to the first of `addrs` that accepts a connection; returns the relay's final
/// reply (`250 2.0.0 OK queued as <id>`).
pub async fn submit(
    addrs: &[SocketAddr],
    hostname: &str,
    sub: &Submission,
) -> Result<String, SendmailError> {
    let mut refused = Vec::new();
    let mut connected = None;
    for &addr in addrs {
        let addr = reachable(addr);
        match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                connected = Some((s, addr));
                break;
            }
            Ok(Err(e)) => refused.push(format!("{addr}: {e}")),
            Err(_) => refused.push(format!("{addr}: timed out")),
        }
    }
    let Some((stream, addr)) = connected else {
        return Err(SendmailError::TempFail(format!(
            "the relay is not running (cannot connect to {}); the message was not sent, \
             try again later",
            refused.join(", ")
        )));
    };
    let _ = stream.set_nodelay(true);
    let mut client = Client::plain(stream, addr.to_string(), STEP);
    let result = transaction(&mut client, hostname, sub).await;
    client.quit().await;
    result.map(|reply| reply.describe())
}

async fn transaction(
    client: &mut Client,
    hostname: &str,
    sub: &Submission,
) -> Result<Reply, SendmailError> {
    match client.read_reply().await {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return Err(refusal(r.failure(), "greeting")),
        Err(f) => return Err(refusal(f, "greeting")),
    }
    client
        .command(&format!("EHLO {hostname}"))
        .await
        .map_err(|f| refusal(f, "EHLO"))?;
    let utf8 = !sub.sender.is_ascii() || sub.recipients.iter().any(|r| !r.is_ascii());
    let mut mail = format!("MAIL FROM:<{}> SIZE={}", sub.sender, sub.message.len());
    if !sub.message.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    client
        .command(&mail)
        .await
        .map_err(|f| refusal(f, "MAIL FROM"))?;
    for r in &sub.recipients {
        let mut rcpt = format!("RCPT TO:<{r}>");
        if sub.notify_never {
            rcpt.push_str(" NOTIFY=NEVER");
        }
        client
            .command(&rcpt)
            .await
            .map_err(|f| refusal(f, &format!("RCPT TO:<{r}>")))?;
    }
    client
        .command("DATA")
        .await
        .map_err(|f| refusal(f, "DATA"))?;
    client
        .data(&sub.message, STEP)
        .await
        .map_err(|f| refusal(f, "end of data"))
}
