//! Crash safety: 16 clients submit messages to the real binary while it is killed with SIGKILL
//! at random moments and restarted on the same spool, with the upstream sometimes down, and
//! once more while the queue drains. At the end every message that got a `250` must have
//! reached the upstream.
//!
//! Bounded for CI (300 messages, 3 kills + 1 while draining); `bench/crash.sh` runs the full
//! version (2,000 messages, 5 + 1 kills) through `GMAIL_RELAY_CRASH_MESSAGES` and
//! `GMAIL_RELAY_CRASH_KILLS`.
//!
//! A client that loses its connection after sending the message but before the reply does not
//! know whether it was queued: such messages are counted apart ("unacknowledged"); they may
//! arrive or not. A message may arrive twice only if the relay was killed after the upstream
//! accepted it and before it was removed from the spool; each duplicate is listed with the
//! kill that followed its first arrival.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config_for;
use common::upstream::{FakeUpstream, Mode, Script};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one submission came to.
enum Sent {
    /// `250`: the relay owns it now.
    Acked,
    /// The connection broke after the message was sent, before the reply.
    Unknown,
    /// Not sent (refused, broken before DATA, or a 4xx): try again.
    Retry,
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(all);
        }
    }
}

async fn submit(addr: SocketAddr, token: &str) -> Sent {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let ok = |s: Option<String>, code: &str| s.filter(|s| s.starts_with(code));
        ok(reply(&mut r).await, "220")?;
        for (cmd, code) in [
            ("EHLO crash.test\r\n".to_owned(), "250"),
            ("MAIL FROM:<app@example.com>\r\n".to_owned(), "250"),
            ("RCPT TO:<you@example.com>\r\n".to_owned(), "250"),
            ("DATA\r\n".to_owned(), "354"),
        ] {
            w.write_all(cmd.as_bytes()).await.ok()?;
            ok(reply(&mut r).await, code)?;
        }
        let body = format!(
            "Message-ID: <{token}@crash.test>\r\nSubject: {token}\r\n\r\n{}\r\n.\r\n",
            "0123456789".repeat(100)
        );
        Some((
            w.write_all(body.as_bytes()).await.is_ok(),
            reply(&mut r).await,
        ))
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Some((_, Some(r)))) if r.starts_with("250") => Sent::Acked,
        Ok(Some((_, Some(_)))) => Sent::Retry,
        Ok(Some((_, None))) | Err(_) => Sent::Unknown,
        Ok(None) => Sent::Retry,
    }
}

struct Relay {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Relay {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(common::spawn_relay(&self.config, log, None));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the relay did not come back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn token_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let start = text.find("Message-ID: <")? + "Message-ID: <".len();
    let end = text[start..].find('@')?;
    Some(text[start..start + end].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_message_is_lost_across_sigkills() {
    let messages = env_or("GMAIL_RELAY_CRASH_MESSAGES", 300);
    let kills = env_or("GMAIL_RELAY_CRASH_KILLS", 3);
    let clients = 16;

    let up = Arc::new(FakeUpstream::start(Mode::StartTls, Script::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = common::fixed_port_config(
        dir.path(),
        &format!(
            "{}\n[delivery]\nbounce = \"none\"\n",
            config_for(&up, "max_connections = 4")
        ),
    );
    let mut relay = Relay {
        config,
        log: dir.path().join("relay.log"),
        child: None,
    };
    relay.start();
    wait_listening(addr).await;

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let unknown = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (acked, unknown, next) = (acked.clone(), unknown.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= messages {
                    return;
                }
                let token = format!("crash-{n}");
                loop {
                    assert!(Instant::now() < deadline, "clients did not finish");
                    match submit(addr, &token).await {
                        Sent::Acked => {
                            acked.lock().unwrap().insert(token);
                            break;
                        }
                        Sent::Unknown => {
                            unknown.lock().unwrap().insert(token);
                            break;
                        }
                        Sent::Retry => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }));
    }

    // The killer: SIGKILL at random moments while the clients run (at random points of the
    // submission, so every kill lands mid-burst); the upstream goes down or comes back at some
    // of them, so kills also hit a queue that is waiting.
    let mut at: Vec<usize> = (0..kills).map(|_| fastrand::usize(1..messages)).collect();
    at.sort_unstable();
    let mut kill_times = Vec::new();
    let mut upstream_down = false;
    let started = Instant::now();
    for threshold in at {
        while acked.lock().unwrap().len() + unknown.lock().unwrap().len() < threshold {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if fastrand::bool() {
            if upstream_down {
                up.resume().await;
            } else {
                up.stop();
            }
            upstream_down = !upstream_down;
        }
        relay.kill();
        kill_times.push((started.elapsed(), up.record(|r| r.messages.len())));
        relay.start();
        wait_listening(addr).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    if upstream_down {
        up.resume().await;
    }
    let acked = acked.lock().unwrap().clone();
    let unknown = unknown.lock().unwrap().clone();

    // One more kill while the queue drains, once about half of it has arrived: the kills
    // above land mid-submission and may all find the upstream down, and a crash mid-delivery
    // is where the at-least-once window is.
    let arrived_count = || up.record(|r| r.messages.len());
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while arrived_count() < (acked.len() / 2).max(1) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    relay.kill();
    kill_times.push((started.elapsed(), arrived_count()));
    relay.start();
    wait_listening(addr).await;
    let kills = kills + 1;

    // Everything acknowledged must arrive (bounded wait), then stop the relay gracefully.
    let arrived = |up: &FakeUpstream| -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for m in up.messages() {
            if let Some(t) = token_of(&m.data) {
                *seen.entry(t).or_insert(0) += 1;
            }
        }
        seen
    };
    let wait_until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = arrived(&up);
        if acked.iter().all(|t| seen.contains_key(t)) || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop();

    let seen = arrived(&up);
    let lost: Vec<&String> = acked.iter().filter(|t| !seen.contains_key(*t)).collect();
    let order: Vec<String> = up
        .messages()
        .iter()
        .filter_map(|m| token_of(&m.data))
        .collect();
    // Each duplicate with its first arrival (its index at the upstream) and the kill after it.
    let duplicated: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, n)| {
            let first = order.iter().position(|o| o == t).unwrap();
            let kill = kill_times.iter().position(|&(_, count)| count > first);
            format!(
                "{t} x{n}: first arrival was upstream message {first}; {}",
                match kill {
                    Some(k) => format!(
                        "kill {} came when the upstream had {} messages",
                        k + 1,
                        kill_times[k].1
                    ),
                    None => "no kill after it".to_owned(),
                }
            )
        })
        .collect();
    let unknown_arrived = unknown.iter().filter(|t| seen.contains_key(*t)).count();
    eprintln!(
        "crash: {messages} messages from {clients} clients, {kills} SIGKILLs at {:?} \
         (time, messages at the upstream), upstream toggled at some; acknowledged {}, \
         unacknowledged {} ({} of them arrived anyway); lost {}; duplicated {}",
        kill_times,
        acked.len(),
        unknown.len(),
        unknown_arrived,
        lost.len(),
        duplicated.len(),
    );
    for d in &duplicated {
        eprintln!("  duplicate {d}");
    }
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}\nrelay log:\n{}",
        std::fs::read_to_string(&relay.log).unwrap_or_default()
    );
    assert_eq!(
        acked.len() + unknown.len(),
        messages,
        "every message was tried"
    );
    // A message can only repeat when a kill cut the relay between the upstream's 250 and the
    // removal from the spool: at most the attempts in flight (4 connections) per kill.
    assert!(
        duplicated.len() <= kills * 4,
        "{} duplicates for {kills} kills: {duplicated:?}",
        duplicated.len()
    );
}
