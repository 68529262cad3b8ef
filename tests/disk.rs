//! Disk faults: the spool on a small tmpfs that fills up (the relay answers `452 4.3.1`, keeps
//! everything already queued, and accepts again when space returns), and a spool that cannot
//! be created (a clear start-up error).
//!
//! Mounting needs root. Without it the tmpfs test says it is skipped, unless
//! `GMAIL_RELAY_REQUIRE_MOUNT` is set (CI sets it), in which case it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::upstream::{FakeUpstream, Mode, Script};
use common::{Client, TestRelay, WAIT, config_for, list};

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One message of about `size` bytes; the reply to its end of data.
async fn send(c: &mut Client, n: usize, size: usize) -> String {
    assert!(
        c.cmd("MAIL FROM:<app@example.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<you@example.com>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let line = "x".repeat(76);
    let mut body = format!("Subject: fill {n}\r\nMessage-ID: <fill-{n}@test>\r\n\r\n");
    while body.len() < size {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    c.send(body.as_bytes()).await;
    c.reply().await
}

#[tokio::test]
async fn a_full_disk_refuses_with_452_keeps_the_queue_and_recovers() {
    let outer = tempfile::tempdir().unwrap();
    let spool = outer.path().join("spool");
    let Some(fs) = Tmpfs::mount(&spool, "512k") else {
        assert!(
            std::env::var_os("GMAIL_RELAY_REQUIRE_MOUNT").is_none(),
            "cannot mount a tmpfs (needs root) and GMAIL_RELAY_REQUIRE_MOUNT is set"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let held = format!(
        "{}\n[delivery]\nhold = true\n",
        config_for(&up, "").replace("dir = \"spool\"", &format!("dir = {:?}", spool))
    );
    let mut relay = TestRelay::start(&held).await;

    // Fill it: 40 KB messages until the relay says the disk is full.
    let mut c = Client::connect(relay.addr()).await;
    assert!(c.reply().await.starts_with("220"));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let mut acked = Vec::new();
    let mut refusal = String::new();
    for n in 0..100 {
        let reply = send(&mut c, n, 40_000).await;
        if reply.starts_with("250") {
            acked.push(n);
        } else {
            refusal = reply;
            break;
        }
    }
    assert!(
        refusal.starts_with("452 4.3.1"),
        "the disk filled up and the relay said so: {refusal:?} after {} messages",
        acked.len()
    );
    assert!(!acked.is_empty());
    // Nothing half-written, everything acknowledged intact.
    assert!(
        list(&spool.join("tmp")).is_empty(),
        "{:?}",
        list(&spool.join("tmp"))
    );
    let stored: Vec<String> = list(&spool.join("queue"))
        .into_iter()
        .filter(|f| f.ends_with(".msg"))
        .collect();
    assert_eq!(stored.len(), acked.len());
    for f in &stored {
        let bytes = std::fs::read(spool.join("queue").join(f)).unwrap();
        assert!(bytes.len() > 40_000 && bytes.ends_with(b"\r\n"), "{f}");
    }
    let listed = relay.queue(&["list", "--json"]).await.json();
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        acked.len(),
        "every stored message reads back"
    );
    // The session goes on after the refusal: it was a reply, not a dropped connection.
    assert!(c.cmd("RSET").await.starts_with("250"));

    // Space returns: the next message is accepted, and every one is delivered.
    fs.resize("8m");
    let reply = send(&mut c, 1000, 40_000).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    std::fs::write(&relay.config, held.replace("hold = true", "hold = false")).unwrap();
    relay.reload().unwrap();
    let got = up.wait_for(acked.len() + 1, WAIT).await;
    assert_eq!(got.len(), acked.len() + 1, "nothing lost, nothing twice");
    common::eventually("the queue empties", || {
        list(&spool.join("queue")).is_empty()
    })
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn a_spool_that_cannot_be_created_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file where the spool's parent should be").unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddrs = [\"127.0.0.1:0\"]\n[queue]\ndir = {:?}\n[upstream]\nusername = \"me@gmail.com\"\npassword = \"x\"\n",
            blocker.join("spool")
        ),
    )
    .unwrap();
    let run = common::run_binary(
        vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        vec![],
        vec![],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("spool: cannot create")
            && run.stderr.contains("not-a-dir/spool")
            && run.stderr.contains("a file is in the way of queue.dir"),
        "{}",
        run.stderr
    );
}
