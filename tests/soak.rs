//! Soak: the real binary under a steady moderate load for a long time while the fake upstream
//! injects faults at random (a connection dropped mid-DATA, 421 and 451 replies, a 421
//! greeting, a stall until the relay's timeout). Every acknowledged message must arrive, and
//! the relay's memory (RSS) and open file descriptors, sampled every minute, must not grow.
//!
//! Ignored by default (it takes as long as it is told): `bench/soak.sh` runs it for 30
//! minutes; `GMAIL_RELAY_SOAK_SECS` sets the duration.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::upstream::{FakeUpstream, Mode, Script};
use common::{Client, config_for};

/// One sample of the relay process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Resident set, KiB.
    rss: u64,
    /// Its anonymous part (heap and stacks), KiB: what a leak would grow. The rest is mostly
    /// the binary's code pages, which grow a little as rarer paths (fault handling) first run.
    anon: u64,
    /// Open file descriptors.
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample {
        rss: kib("VmRSS:"),
        anon: kib("RssAnon:"),
        fds,
    }
}

async fn send(addr: SocketAddr, token: &str) -> bool {
    let attempt = async {
        let mut c = Client::connect(addr).await;
        c.reply().await;
        c.cmd("EHLO soak.test").await;
        c.cmd("MAIL FROM:<app@example.com>").await;
        c.cmd("RCPT TO:<you@example.com>").await;
        c.cmd("DATA").await;
        c.send(
            format!(
                "Message-ID: <{token}@soak.test>\r\nSubject: {token}\r\n\r\n{}\r\n.\r\n",
                "soak ".repeat(400)
            )
            .as_bytes(),
        )
        .await;
        let ok = c.reply().await.starts_with("250");
        c.cmd("QUIT").await;
        ok
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with bench/soak.sh"]
async fn a_long_run_with_upstream_faults_loses_nothing_and_does_not_grow() {
    let secs: u64 = std::env::var("GMAIL_RELAY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let up = Arc::new(FakeUpstream::start(Mode::StartTls, Script::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = common::fixed_port_config(
        dir.path(),
        &(config_for(&up, "")
            .replace("retry_min = \"100ms\"", "retry_min = \"1s\"")
            .replace("retry_max = \"400ms\"", "retry_max = \"5s\"")
            .replace("timeout = \"5s\"", "timeout = \"2s\"")
            + "\n[delivery]\nbounce = \"none\"\nauth_pause_min = \"1s\"\nauth_pause_max = \"5s\"\n"),
    );
    let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
    let mut child = common::spawn_relay(&config, log, Some("info"));
    let pid = child.id();
    common::eventually("the relay listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    // Load: 4 clients, one message each every 200 ms (about 20 messages a second).
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, acked, next) = (stop.clone(), acked.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let token = format!("soak-{}", next.fetch_add(1, Ordering::Relaxed));
                if send(addr, &token).await {
                    acked.lock().unwrap().insert(token);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Faults: one kind at random after every 10 messages the upstream accepts (about one
    // fault per ten transactions), armed only if the previous fault of that kind has happened.
    // Tied to traffic rather than to the clock, so that faults cannot outpace the probes of a
    // paused relay and turn into a permanent outage.
    let faults = {
        let (up, stop) = (up.clone(), stop.clone());
        tokio::spawn(async move {
            let mut injected = [0usize; 5];
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let delivered = up.record(|r| r.messages.len());
                if delivered < last + 10 {
                    continue;
                }
                last = delivered;
                let kind = fastrand::usize(0..5);
                let armed = {
                    let mut armed = false;
                    up.script(|s| {
                        armed = match kind {
                            0 if s.drop_in_data == 0 => {
                                s.drop_in_data = 1;
                                true
                            }
                            1 | 2 if s.data_replies.is_empty() => {
                                s.data_replies.push_back(if kind == 1 {
                                    "451 4.3.0 Mail server temporarily rejected message.".into()
                                } else {
                                    "421 4.7.0 Try again later, closing connection. (EHLO)".into()
                                });
                                true
                            }
                            3 if s.greetings.is_empty() => {
                                s.greetings.push_back(
                                    "421 4.7.0 Try again later, closing connection.".into(),
                                );
                                true
                            }
                            4 if s.stall == 0 => {
                                s.stall = 1;
                                true
                            }
                            _ => false,
                        }
                    });
                    armed
                };
                if armed {
                    injected[kind] += 1;
                }
            }
            injected
        })
    };

    let started = Instant::now();
    let mut samples = vec![(0u64, sample(pid))];
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(60).min(Duration::from_secs(secs))).await;
        let s = sample(pid);
        eprintln!(
            "soak: {:>4}s rss {} KiB (anonymous {} KiB), fds {}, acknowledged {}, delivered {}",
            started.elapsed().as_secs(),
            s.rss,
            s.anon,
            s.fds,
            acked.lock().unwrap().len(),
            up.messages().len()
        );
        samples.push((started.elapsed().as_secs(), s));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let injected = faults.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let delivered = || -> HashSet<String> {
        up.messages()
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(&m.data);
                let start = text.find("Message-ID: <")? + 13;
                let end = text[start..].find('@')?;
                Some(text[start..start + end].to_owned())
            })
            .collect()
    };
    // Keep the relay's log where it can be read after a failure.
    let log_copy = std::env::temp_dir().join("gmail-relay-soak.log");
    let copy_log = || {
        let _ = std::fs::copy(dir.path().join("relay.log"), &log_copy);
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !acked.is_subset(&delivered()) {
        if Instant::now() > deadline {
            copy_log();
            panic!(
                "{} acknowledged messages not delivered after 2 minutes; relay log in {}",
                acked.difference(&delivered()).count(),
                log_copy.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    copy_log();
    let total = up.messages().len();
    let lost = acked.difference(&delivered()).count();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let status = child.wait().unwrap();

    let (first, last) = (samples[1].1, samples[samples.len() - 1].1);
    let peak = samples.iter().map(|s| s.1.rss).max().unwrap();
    eprintln!(
        "soak: {secs}s, {} acknowledged, {total} upstream receipts ({} duplicates), lost {lost}; \
         faults injected: {} drops mid-DATA, {} 451 at end of data, {} 421 at end of data, \
         {} 421 greetings, {} stalls; RSS first {} KiB, last {} KiB, peak {peak} KiB; anonymous \
         first {} KiB, last {} KiB; fds first {}, last {}; exit {status} (a fault is armed when \
         the previous one of its kind has happened)",
        acked.len(),
        total - delivered().len(),
        injected[0],
        injected[1],
        injected[2],
        injected[3],
        injected[4],
        first.rss,
        last.rss,
        first.anon,
        last.anon,
        first.fds,
        last.fds,
    );
    assert_eq!(lost, 0);
    assert!(status.success());
    assert!(
        last.fds <= first.fds + 8,
        "file descriptors grew: {samples:?}"
    );
    assert!(
        last.rss <= first.rss + 16 * 1024,
        "memory grew: {samples:?}"
    );
    assert!(last.anon <= first.anon + 4 * 1024, "heap grew: {samples:?}");
}
