//! `gmail-relay send-test --to ADDR`: one small message through the whole path (intake, spool,
//! delivery), watched until the upstream takes it or refuses it.
//!
//! The message comes from the Gmail account itself (`upstream.username`; an address Gmail
//! knows) and asks for no delivery status notification (`NOTIFY=NEVER`): a failed test is
//! reported here, with the upstream's reply for each recipient, never by a bounce.
//!
//! Exit codes: 0 delivered, 1 failed (the reason is printed), 2 config, 75 not settled within
//! `--wait` (still queued: the relay keeps trying) or the relay is not running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use gmail_relay::control::{self, ErrorKind, MessageState, Reply, Request};
use gmail_relay::sendmail::{self, Submission};
use gmail_relay::spool::{QueueId, RecipientStatus};

use super::EXIT_CONFIG;

const EX_TEMPFAIL: u8 = 75;

/// Runs `send-test`.
pub fn run(config: Option<PathBuf>, to: &str, wait: Duration) -> ExitCode {
    let local = match super::local_config(config, "gmail-relay", EXIT_CONFIG) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if !to.contains('@') || to.contains(['<', '>', ' ']) {
        eprintln!("gmail-relay: --to {to:?} is not an email address");
        return ExitCode::from(EXIT_CONFIG);
    }
    let sender = local
        .account
        .clone()
        .unwrap_or_else(|| format!("gmail-relay@{}", local.hostname));
    let now = SystemTime::now();
    let message = format!(
        "From: gmail-relay on {host} <{sender}>\r\nTo: <{to}>\r\nSubject: gmail-relay test from {host}\r\n\r\n\
         This is a test message from gmail-relay on {host}, sent at {at}.\r\n\
         If you can read it, the relay delivers mail to Gmail.\r\n",
        host = local.hostname,
        at = humantime::format_rfc3339_seconds(now),
    );
    let sub = Submission {
        sender,
        recipients: vec![to.to_owned()],
        message: message.into_bytes(),
        notify_never: true,
    };
    super::block_on(async {
        let reply = match sendmail::submit(&local.submit_addrs, &local.hostname, &sub).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gmail-relay: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        let Some(id) = reply.split_whitespace().last().and_then(QueueId::parse) else {
            eprintln!(
                "gmail-relay: the relay accepted the message but its reply {reply:?} has no queue id"
            );
            return ExitCode::FAILURE;
        };
        println!(
            "queued as {id}; waiting up to {} for the outcome",
            humantime::format_duration(wait)
        );
        watch(&local.queue_dir, id, wait).await
    })
}

/// Polls the message's state until it settles or `wait` runs out, printing each new state.
async fn watch(dir: &std::path::Path, id: QueueId, wait: Duration) -> ExitCode {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = String::new();
    loop {
        let answer = control::request(dir, Request::Show { id, body: false }).await;
        let news = match answer {
            Err(e) if e.kind == ErrorKind::NotFound => {
                println!("delivered: the upstream accepted {id}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("gmail-relay: {e}");
                return ExitCode::from(e.exit_code());
            }
            Ok(a) if !a.running => {
                println!("the relay stopped; {id} waits in the queue for its next start");
                return ExitCode::from(EX_TEMPFAIL);
            }
            Ok(a) => match a.reply {
                Reply::Show(shown) => {
                    let m = &shown.message;
                    if m.state == MessageState::Failed {
                        let failed: Vec<_> = m
                            .recipients
                            .iter()
                            .filter(|r| r.status == RecipientStatus::Failed)
                            .collect();
                        if failed.is_empty() {
                            println!(
                                "failed: {}",
                                m.failed_reason.as_deref().unwrap_or("(no reason recorded)")
                            );
                        }
                        for r in failed {
                            println!(
                                "failed: {}: {}",
                                r.address,
                                r.reply.as_deref().unwrap_or("(no reply recorded)")
                            );
                        }
                        return ExitCode::FAILURE;
                    }
                    match &m.last_error {
                        Some(e) => format!("{}: {e}", m.state.as_str()),
                        None => m.state.as_str().to_owned(),
                    }
                }
                _ => "unexpected answer".to_owned(),
            },
        };
        if news != said {
            println!("{news}");
            said = news;
        }
        if tokio::time::Instant::now() >= deadline {
            println!(
                "not settled within the wait; the relay keeps trying (gmail-relay queue show {id})"
            );
            return ExitCode::from(EX_TEMPFAIL);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
