//! The queue commands (`gmail-relay queue ...`, the real binary) against a running in-process
//! relay (through its control socket) and against a stopped one (on the spool directly).

mod common;

use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, Script};
use common::{TestRelay, WAIT, config_for, eventually, submit};

const MSG: &[u8] = b"Subject: queue test\r\nFrom: app@example.com\r\n\r\nthe body text\r\n";

/// Retries an hour apart, so a deferred message stays put unless the test moves it; no
/// bounces, so the upstream sees only the test's messages.
fn slow_retries(up: &FakeUpstream) -> String {
    common::slow_retries(&config_for(up, "")) + "\n[delivery]\nbounce = \"none\"\n"
}

async fn send(relay: &TestRelay, to: &str) -> String {
    let reply = submit(relay.addr(), "app@example.com", &[to], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    reply.split_whitespace().last().unwrap().to_owned()
}

fn message<'a>(list: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[tokio::test]
async fn queue_commands_work_through_the_running_relay() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.script(|s| {
        s.rcpt_replies
            .insert("bad@example.com".into(), "550 5.1.1 no such user".into());
        s.rcpt_replies
            .insert("later@example.com".into(), "451 4.3.0 try later".into());
    });
    let mut relay = TestRelay::start(&slow_retries(&up)).await;
    let failed = send(&relay, "bad@example.com").await;
    eventually("a failed message", || relay.failed_ids().len() == 1).await;
    let deferred = send(&relay, "later@example.com").await;
    eventually("a deferred message", || up.count("RCPT") == 2).await;
    eventually("its state recorded", || relay.files("queue").len() == 2).await;

    // list (the state file is written a moment before the scheduler hears the attempt's
    // report and shows the message "deferred" rather than "active")
    let mut list = relay.queue(&["list", "--json"]).await;
    for _ in 0..100 {
        if list.code != 0 || message(&list.json(), &deferred)["state"] == "deferred" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        list = relay.queue(&["list", "--json"]).await;
    }
    assert_eq!(list.code, 0, "{list:?}");
    let list = list.json();
    assert_eq!(list["running"], true);
    assert_eq!(list["status"]["pause"], serde_json::Value::Null);
    let d = message(&list, &deferred);
    assert_eq!(d["state"], "deferred");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["sender"], "app@example.com");
    assert_eq!(d["recipients"][0]["address"], "later@example.com");
    assert_eq!(d["recipients"][0]["status"], "pending");
    assert!(
        d["last_error"].as_str().unwrap().contains("451 4.3.0"),
        "{d}"
    );
    assert!(d["next_attempt"].is_string() && d["size"].as_u64().unwrap() > 0);
    let f = message(&list, &failed);
    assert_eq!(f["state"], "failed");
    assert!(
        f["failed_reason"]
            .as_str()
            .unwrap()
            .contains("bad@example.com"),
        "{f}"
    );
    assert!(
        f["recipients"][0]["reply"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1"),
        "{f}"
    );
    let text = relay.queue(&["list"]).await;
    assert!(
        text.stdout.starts_with("delivery running"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&deferred) && text.stdout.contains("451 4.3.0 try later"));
    assert!(text.stdout.contains("1 queued") && text.stdout.contains("1 failed"));

    // show
    let show = relay.queue(&["show", &deferred]).await;
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout.contains("Subject: queue test"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("attempt 1: 0 delivered, 0 failed, 1 deferred")
    );
    assert!(!show.stdout.contains("the body text"), "headers only");
    let body = relay.queue(&["show", &deferred, "--body"]).await;
    assert!(body.stdout.contains("the body text"), "{}", body.stdout);
    let json = relay.queue(&["show", &deferred, "--json"]).await.json();
    assert_eq!(json["message"]["id"], deferred.as_str());
    assert!(json["headers"].as_str().unwrap().contains("Received: from"));

    // hold: not attempted, even by retry --all
    assert_eq!(relay.queue(&["hold", &deferred]).await.code, 0);
    let held = relay.queue(&["list", "--json"]).await.json();
    assert_eq!(message(&held, &deferred)["state"], "held");
    assert_eq!(held["status"]["held"], 1);
    let retry = relay.queue(&["retry", &deferred]).await;
    assert_eq!(retry.code, 1, "a held message is not retried: {retry:?}");
    assert!(
        retry.stderr.contains("release it first"),
        "{}",
        retry.stderr
    );
    let all = relay.queue(&["retry", "--all", "--json"]).await.json();
    assert_eq!(all["count"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        up.count("RCPT"),
        2,
        "nothing attempted while held: {:?}",
        up.record(|r| r.commands.clone())
    );

    // release and retry now: delivered once the upstream takes it
    up.script(|s| s.rcpt_replies.clear());
    let release = relay.queue(&["release", &deferred]).await;
    assert_eq!(release.code, 0, "{release:?}");
    let retry = relay.queue(&["retry", &deferred]).await;
    assert_eq!(retry.code, 0, "{retry:?}");
    up.wait_for(1, WAIT).await;
    eventually("the retried message delivered", || relay.queued() == 0).await;

    // requeue from the failed area: delivered too
    let requeue = relay.queue(&["requeue", &failed]).await;
    assert_eq!(requeue.code, 0, "{requeue:?}");
    up.wait_for(2, WAIT).await;
    eventually("the requeued message delivered", || {
        relay.queued() == 0 && relay.failed_ids().is_empty()
    })
    .await;
    assert_eq!(up.messages()[1].to, ["bad@example.com"]);

    // delete a deferred message, and the failed area
    up.script(|s| {
        s.rcpt_replies
            .insert("later@example.com".into(), "451 4.3.0 try later".into());
        s.rcpt_replies
            .insert("bad@example.com".into(), "550 5.1.1 no such user".into());
    });
    let d2 = send(&relay, "later@example.com").await;
    send(&relay, "bad@example.com").await;
    eventually("deferred and failed again", || {
        relay.failed_ids().len() == 1 && up.count("RCPT") == 6
    })
    .await;
    let del = relay.queue(&["delete", &d2]).await;
    assert_eq!(del.code, 0, "{del:?}");
    assert_eq!(relay.queued(), 0);
    let del = relay.queue(&["delete", "--failed", "--json"]).await;
    assert_eq!(del.json()["count"], 1);
    assert!(relay.failed_ids().is_empty());

    // errors a script can rely on
    let missing = relay.queue(&["show", "0000000000000001"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(missing.stderr.contains("no message 0000000000000001"));
    let bad_id = relay.queue(&["hold", "nonsense"]).await;
    assert_eq!(bad_id.code, 2, "{bad_id:?}");
    relay.stop().await;
}

#[tokio::test]
async fn queue_commands_work_on_a_stopped_relay_and_the_relay_honours_them() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.script(|s| {
        s.rcpt_replies
            .insert("bad@example.com".into(), "550 5.1.1 no such user".into());
    });
    // Two failed messages first (delivery on), then three held in the queue (delivery off).
    let delivering = format!("{}\n[delivery]\nbounce = \"none\"\n", config_for(&up, ""));
    let holding = delivering.replace("[delivery]\n", "[delivery]\nhold = true\n");
    let mut relay = TestRelay::start(&delivering).await;
    let failed = send(&relay, "bad@example.com").await;
    let failed2 = send(&relay, "bad@example.com").await;
    eventually("two failed messages", || relay.failed_ids().len() == 2).await;
    std::fs::write(&relay.config, &holding).unwrap();
    relay.restart().await;
    let keep = send(&relay, "keep@example.com").await;
    let drop = send(&relay, "drop@example.com").await;
    let later = send(&relay, "later@example.com").await;
    relay.stop().await;

    let list = relay.queue(&["list", "--json"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let list = list.json();
    assert_eq!(list["running"], false);
    assert_eq!(list["messages"].as_array().unwrap().len(), 5);
    assert_eq!(message(&list, &keep)["state"], "queued");
    assert_eq!(message(&list, &failed)["state"], "failed");
    let text = relay.queue(&["list"]).await;
    assert!(
        text.stdout.starts_with("relay not running"),
        "{}",
        text.stdout
    );
    let status = relay.queue(&["status", "--json"]).await.json();
    assert_eq!(status["running"], false);

    assert_eq!(relay.queue(&["delete", &drop]).await.code, 0);
    assert_eq!(relay.queue(&["show", &drop]).await.code, 3);
    assert_eq!(relay.queue(&["hold", &later]).await.code, 0);
    let show = relay.queue(&["show", &later]).await;
    assert!(
        show.stdout.contains("held by the operator"),
        "{}",
        show.stdout
    );
    assert_eq!(relay.queue(&["hold", &keep]).await.code, 0);
    let release = relay.queue(&["release", &keep]).await;
    assert_eq!(release.code, 0, "{release:?}");
    assert!(release.stdout.contains("released"), "{}", release.stdout);
    let retry = relay.queue(&["retry", &keep, "--json"]).await.json();
    assert_eq!(retry["count"], 1);
    let requeue = relay.queue(&["requeue", &failed]).await;
    assert_eq!(requeue.code, 0, "{requeue:?}");
    assert_eq!(relay.failed_ids(), std::slice::from_ref(&failed2));
    let del = relay.queue(&["delete", "--failed", "--json"]).await.json();
    assert_eq!(del["count"], 1);
    assert!(relay.failed_ids().is_empty());

    // Start delivering: the deleted message is gone, the held one waits, the released and the
    // requeued ones go (the address that failed is accepted now).
    up.script(|s| s.rcpt_replies.clear());
    std::fs::write(&relay.config, &delivering).unwrap();
    relay.restart().await;
    let got = up.wait_for(2, WAIT).await;
    let mut to: Vec<String> = got.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["bad@example.com", "keep@example.com"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.messages().len(), 2, "the held message was not sent");
    assert_eq!(relay.queued_ids(), std::slice::from_ref(&later));

    let release = relay.queue(&["release", &later]).await;
    assert_eq!(release.code, 0, "{release:?}");
    let got = up.wait_for(3, WAIT).await;
    assert_eq!(got[2].to, ["later@example.com"]);
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_message_being_attempted_cannot_be_deleted() {
    let script = Script {
        stall: 1,
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let mut relay = TestRelay::start(&config_for(&up, "")).await;
    let id = send(&relay, "a@example.com").await;
    eventually("the attempt started", || up.record(|r| r.connections) >= 1).await;
    let del = relay.queue(&["delete", &id]).await;
    assert_eq!(del.code, 4, "{del:?}");
    assert!(
        del.stderr.contains("being attempted right now"),
        "{}",
        del.stderr
    );
    let list = relay.queue(&["list", "--json"]).await.json();
    assert_eq!(message(&list, &id)["state"], "active");
    // The stalled attempt times out (upstream.timeout = 5s), the retry delivers it.
    up.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn status_shows_a_credentials_pause_in_one_line() {
    let up = FakeUpstream::start(Mode::StartTls, Script::refusing_logins()).await;
    let mut relay = TestRelay::start(&slow_retries(&up)).await;
    send(&relay, "a@example.com").await;
    eventually("the login refused", || up.count("AUTH") >= 1).await;
    let mut line = String::new();
    for _ in 0..100 {
        line = relay.queue(&["status"]).await.stdout;
        if line.contains("PAUSED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(line.starts_with("delivery PAUSED (credentials)"), "{line}");
    assert!(
        line.contains("535 5.7.8") && line.contains("next probe"),
        "{line}"
    );
    assert_eq!(line.trim_end().lines().count(), 1, "{line}");
    let list = relay.queue(&["list"]).await.stdout;
    assert!(list.starts_with("delivery PAUSED (credentials)"), "{list}");
    relay.stop().await;
}

#[tokio::test]
async fn hold_mode_is_said_in_the_text_output() {
    let mut relay = TestRelay::start(&common::intake_config("")).await;
    send(&relay, "a@example.com").await;
    let status = relay.queue(&["status"]).await;
    println!("{}", status.stdout.trim());
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status
            .stdout
            .starts_with("delivery on hold (delivery.hold = true): 1 message(s) wait"),
        "{}",
        status.stdout
    );
    let list = relay.queue(&["list"]).await;
    println!("{}", list.stdout.trim());
    assert!(
        list.stdout.contains("queued, on hold (delivery.hold)")
            && !list.stdout.contains("next now"),
        "{}",
        list.stdout
    );
    relay.stop().await;
}
