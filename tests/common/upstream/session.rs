//! One connection of the fake Gmail: the SMTP conversation, STARTTLS, AUTH PLAIN / LOGIN /
//! XOAUTH2, PIPELINING and CHUNKING (BDAT), and the scripted replies and faults.
//!
//! Replies are held until the server needs more input, then sent together (after
//! `reply_delay`, if scripted): a pipelined batch is answered in one go, and each time the
//! server has to wait for the client after answering counts as a round trip. With a delay,
//! input that arrives within a moment of the last is taken as part of the same batch (a client
//! that pipelines does not wait for replies).

use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::conn::{Conn, Io};
use super::{Mode, Received, Shared};

/// Takes one unit of a "next N connections" counter.
fn take(counter: &mut usize) -> bool {
    let hit = *counter > 0;
    *counter = counter.saturating_sub(1);
    hit
}

pub(super) async fn serve(
    mut tcp: TcpStream,
    mode: Mode,
    acceptor: TlsAcceptor,
    shared: &Shared,
) -> io::Result<()> {
    let (stall, garbage) = {
        let mut script = shared.script.lock().unwrap();
        let stall = take(&mut script.stall);
        let garbage = mode == Mode::Implicit && take(&mut script.tls_garbage);
        (stall, garbage)
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
    let delay = shared.script.lock().unwrap().reply_delay;
    let mut c = Conn {
        io,
        buf: Vec::new(),
        out: Vec::new(),
        delay,
        flushes: 0,
    };
    let result = converse(&mut c, mode, acceptor, shared).await;
    let _ = c.flush().await;
    result
}

/// The conversation on `c`, from the greeting to QUIT or a scripted end.
async fn converse(
    c: &mut Conn,
    mode: Mode,
    acceptor: TlsAcceptor,
    shared: &Shared,
) -> io::Result<()> {
    let greeting = shared.script.lock().unwrap().greetings.pop_front();
    let mut tls = mode == Mode::Implicit;
    // A transaction is open (MAIL accepted), since `tx_flushes` replies went out.
    let mut in_tx = false;
    let mut tx_flushes = 0;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
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
                let (pipelining, chunking) = {
                    let script = shared.script.lock().unwrap();
                    (!script.no_pipelining, !script.no_chunking)
                };
                if pipelining {
                    lines.push("250-PIPELINING".into());
                }
                if chunking {
                    lines.push("250-CHUNKING".into());
                }
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
                c.flush().await?;
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
                        let (refused, known) = {
                            let script = shared.script.lock().unwrap();
                            (
                                script.rejected_tokens.contains(&token)
                                    || script.refused_users.contains(who),
                                script.password_of(who).is_some(),
                            )
                        };
                        if known && !token.is_empty() && !refused && text.ends_with("\u{1}\u{1}") {
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
                let (scripted, accepted) = {
                    let mut script = shared.script.lock().unwrap();
                    let accepted = script.password_of(&u) == Some(p.as_str())
                        && !script.refused_users.contains(&u);
                    (script.auth_replies.pop_front(), accepted)
                };
                if let Some(reply) = scripted {
                    c.reply(&reply).await?;
                } else if accepted {
                    user = Some(u);
                    c.reply("235 2.7.0 Accepted").await?;
                } else {
                    c.reply("535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials - gsmtp").await?;
                }
            }
            "MAIL" => {
                let relay_service = shared.script.lock().unwrap().relay_service;
                if user.is_none() && !(relay_service && tls) {
                    c.reply("530 5.7.0 Authentication Required").await?;
                    continue;
                }
                from = between_brackets(&line);
                to.clear();
                in_tx = true;
                tx_flushes = c.flushes;
                chunks.clear();
                c.reply("250 2.1.0 OK").await?;
            }
            "RCPT" => {
                if !in_tx {
                    c.reply("503 5.5.1 MAIL first").await?;
                    continue;
                }
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
                let message = Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                    tls,
                    user: user.clone(),
                    round_trips: c.flushes - tx_flushes + 1,
                    bdat_chunks: 0,
                    at: std::time::Instant::now(),
                };
                in_tx = false;
                if !end_of_message(c, shared, message).await? {
                    return Ok(());
                }
            }
            "BDAT" => {
                // BDAT <size> [LAST] (RFC 3030): the chunk is read whatever the state, so
                // the session stays in step with a client that pipelined it.
                let args: Vec<&str> = upper.split_whitespace().collect();
                let size = args.get(1).and_then(|n| n.parse::<usize>().ok());
                let last = args.get(2) == Some(&"LAST");
                let Some(size) = size else {
                    c.reply("501 5.5.4 Syntax: BDAT <size> [LAST]").await?;
                    continue;
                };
                let Some(chunk) = c.exact(size).await? else {
                    return Ok(());
                };
                let refusal = if !in_tx {
                    Some("503 5.5.1 MAIL first")
                } else if to.is_empty() {
                    Some("554 5.5.1 Error: no valid recipients")
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    shared
                        .record
                        .lock()
                        .unwrap()
                        .refused_messages
                        .push(format!("{}: {refusal}", line.trim()));
                    if last {
                        in_tx = false;
                        to.clear();
                        chunks.clear();
                    }
                    c.reply(refusal).await?;
                    continue;
                }
                chunks.push(chunk);
                if !last {
                    c.reply(&format!("250 2.0.0 {size} octets received"))
                        .await?;
                    continue;
                }
                let n = chunks.len();
                let message = Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data: std::mem::take(&mut chunks).concat(),
                    tls,
                    user: user.clone(),
                    round_trips: c.flushes - tx_flushes + 1,
                    bdat_chunks: n,
                    at: std::time::Instant::now(),
                };
                in_tx = false;
                if !end_of_message(c, shared, message).await? {
                    return Ok(());
                }
            }
            "RSET" => {
                to.clear();
                chunks.clear();
                in_tx = false;
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

/// The message is whole: the scripted reply to it, or it is taken (recorded, 250). False when
/// the connection is to end now (a scripted drop or 421).
async fn end_of_message(c: &mut Conn, shared: &Shared, message: Received) -> io::Result<bool> {
    let (scripted, drop) = {
        let mut script = shared.script.lock().unwrap();
        let quota = message
            .user
            .as_ref()
            .is_some_and(|u| script.quota_users.contains(u));
        let drop = take(&mut script.drop_before_data_reply);
        let reply = match script.data_replies.pop_front() {
            Some(reply) => Some(reply),
            None if quota => Some(
                "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n550 5.4.5 sending limits go to https://support.google.com/a/answer/166852 - gsmtp"
                    .to_owned(),
            ),
            None => None,
        };
        (reply, drop)
    };
    if drop {
        c.out.clear();
        return Ok(false);
    }
    match scripted {
        Some(reply) if reply.starts_with("421") => {
            c.reply(&reply).await?;
            Ok(false)
        }
        Some(reply) => {
            c.reply(&reply).await?;
            Ok(true)
        }
        None => {
            let n = {
                let mut r = shared.record.lock().unwrap();
                r.messages.push(message);
                r.messages.len()
            };
            shared.count.send_replace(n);
            c.reply("250 2.0.0 OK 1700000000 x1-20020a - gsmtp").await?;
            Ok(true)
        }
    }
}

fn between_brackets(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}
