//! Health, metrics and reload: `/healthz` turning 503 during a credentials pause and back, a
//! Prometheus scrape with every listed series, `gmail-relay health`, and SIGHUP with a valid
//! and an invalid configuration (in process, and the real binary).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, PASSWORD, Script};
use common::{TestRelay, WAIT, config_for, eventually, http_get, send, slow_retries};
use gmail_relay::control::{self, Request};

/// A relay with the metrics endpoint on and `extra` config, whose config file names the bound
/// ports so that the binary's local tools find it.
async fn relay(up: &FakeUpstream, extra: &str) -> TestRelay {
    TestRelay::start_for_tools(&format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n{extra}",
        config_for(up, "")
    ))
    .await
}

async fn health_binary(relay: &TestRelay) -> (i32, String) {
    let run = relay.tool("health", &[]).await;
    (run.code, run.stdout)
}

#[tokio::test]
async fn health_is_503_during_a_credentials_pause_and_200_again_after() {
    let up = FakeUpstream::start(Mode::StartTls, Script::refusing_logins()).await;
    let mut relay = relay(
        &up,
        "[delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n",
    )
    .await;
    let metrics = relay.metrics_addr().unwrap();

    let (code, body) = http_get(metrics, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let ok: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ok["status"], "ok");
    assert_eq!(
        health_binary(&relay).await,
        (0, "ok: 0 queued\n".to_owned())
    );

    send(&relay, "a@example.com").await;
    eventually("the login refused", || up.count("AUTH") >= 1).await;
    let mut paused = (0, String::new());
    for _ in 0..200 {
        paused = http_get(metrics, "/healthz").await;
        if paused.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(paused.0, 503, "{}", paused.1);
    let body: serde_json::Value = serde_json::from_str(&paused.1).unwrap();
    assert_eq!(body["status"], "paused");
    assert_eq!(body["cause"], "credentials");
    assert!(
        body["reason"].as_str().unwrap().contains("535 5.7.8"),
        "{body}"
    );
    assert!(body["next_probe"].is_string());
    assert_eq!(body["queue"]["waiting"], 1);
    let (code, text) = health_binary(&relay).await;
    println!("gmail-relay health: {}", text.trim());
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("paused (credentials): ")
            && text.contains("535 5.7.8")
            && text.contains("; next probe in ")
            && text.trim_end().ends_with("; 1 queued"),
        "one line for people: {text}"
    );
    let json = relay.tool("health", &["--json"]).await;
    assert_eq!(json.code, 1);
    assert_eq!(json.json()["cause"], "credentials", "JSON with --json");

    // The password is fixed; the operator asks for a probe now.
    up.script(|s| s.auth_replies.clear());
    assert_eq!(relay.queue(&["retry", "--all"]).await.code, 0);
    up.wait_for(1, WAIT).await;
    let mut back = (0, String::new());
    for _ in 0..200 {
        back = http_get(metrics, "/healthz").await;
        if back.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(back.0, 200, "{}", back.1);
    assert_eq!(health_binary(&relay).await.0, 0);
    assert_eq!(http_get(metrics, "/nothing").await.0, 404);
    relay.stop().await;
}

/// The metric names in an exposition (the part before `{` or the value).
fn series(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap().to_owned();
        out.entry(name).or_default().push(line.to_owned());
    }
    out
}

#[tokio::test]
async fn a_scrape_has_every_listed_series() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    up.script(|s| {
        s.rcpt_replies
            .insert("bad@example.com".into(), "550 5.1.1 no such user".into());
        s.rcpt_replies
            .insert("later@example.com".into(), "451 4.3.0 try later".into());
    });
    // Retries an hour apart: the 451 recipient is tried once, so the deferral count is exact.
    let mut relay = TestRelay::start_for_tools(&slow_retries(&format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n[delivery]\nmax_per_day = 2000\nbounce = \"none\"\n",
        config_for(&up, "")
    )))
    .await;
    send(&relay, "a@example.com").await;
    up.wait_for(1, WAIT).await;
    send(&relay, "b@example.com").await;
    up.wait_for(2, WAIT).await;
    send(&relay, "bad@example.com").await;
    send(&relay, "later@example.com").await;
    eventually("one failed, one deferred", || {
        relay.failed_ids().len() == 1 && up.count("RCPT") >= 4
    })
    .await;
    let mut text = String::new();
    for _ in 0..200 {
        let (code, body) = http_get(relay.metrics_addr().unwrap(), "/metrics").await;
        assert_eq!(code, 200);
        text = body;
        if text.contains("gmail_relay_messages_deferred_total{account=\"default\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = series(&text);
    for name in [
        "gmail_relay_queue_messages",
        "gmail_relay_oldest_message_age_seconds",
        "gmail_relay_messages_received_total",
        "gmail_relay_messages_delivered_total",
        "gmail_relay_messages_deferred_total",
        "gmail_relay_messages_failed_total",
        "gmail_relay_recipients_total",
        "gmail_relay_upstream_logins_total",
        "gmail_relay_upstream_transactions_total",
        "gmail_relay_delivery_latency_seconds_bucket",
        "gmail_relay_delivery_latency_seconds_count",
        "gmail_relay_delivery_paused",
        "gmail_relay_send_budget_remaining",
    ] {
        assert!(s.contains_key(name), "{name} missing:\n{text}");
    }
    for line in [
        "gmail_relay_messages_received_total 4",
        "gmail_relay_messages_delivered_total{account=\"default\"} 2",
        "gmail_relay_messages_failed_total{account=\"default\"} 1",
        "gmail_relay_recipients_total{account=\"default\",outcome=\"delivered\"} 2",
        "gmail_relay_recipients_total{account=\"default\",outcome=\"failed\"} 1",
        "gmail_relay_recipients_total{account=\"default\",outcome=\"deferred\"} 1",
        "gmail_relay_upstream_logins_total{account=\"default\",result=\"ok\"} 1",
        "gmail_relay_queue_messages{state=\"failed\"} 1",
        "gmail_relay_delivery_paused{account=\"default\",cause=\"credentials\"} 0",
        "gmail_relay_send_budget_remaining{account=\"default\",window=\"day\"} 1998",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let reused = &s["gmail_relay_upstream_transactions_total"];
    assert!(
        reused.iter().any(|l| l.contains("reused")),
        "one login, the later messages on the same connection: {reused:?}"
    );
    assert!(
        text.contains("gmail_relay_queue_messages{state=\"waiting\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gmail_relay_messages_deferred_total{account=\"default\"} 1"),
        "{text}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_reload_puts_new_credentials_and_policy_in_force_and_refuses_a_bad_config() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let base = format!(
        "{}\n[delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n",
        config_for(&up, "")
    );
    let env = HashMap::from([(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
        "wrong password".to_owned(),
    )]);
    let mut relay = TestRelay::start_with_env(&base, env).await;
    send(&relay, "a@example.com").await;
    eventually("the login refused", || up.count("AUTH") >= 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.messages().len(), 0);

    // An invalid config is refused and changes nothing.
    std::fs::write(
        &relay.config,
        base.replace("retry_min = \"100ms\"", "retry_min = \"soon\""),
    )
    .unwrap();
    let err = relay.reload().unwrap_err();
    assert!(err.contains("queue.retry_min"), "{err}");

    // The right password and a recipient policy, by reload; the queued message goes out.
    std::fs::write(
        &relay.config,
        base.replace(
            "[listen]\n",
            "[listen]\nallowed_recipients = [\"@example.com\"]\n",
        ),
    )
    .unwrap();
    relay
        .env
        .insert("GMAIL_RELAY__UPSTREAM__PASSWORD".into(), PASSWORD.into());
    let restart = relay.reload().unwrap();
    assert!(restart.is_empty(), "{restart:?}");
    // New credentials are tried at once, not after the hour-long pause.
    up.wait_for(1, WAIT).await;
    let mut c = common::Client::connect(relay.addr()).await;
    c.reply().await;
    c.cmd("EHLO t").await;
    c.cmd("MAIL FROM:<app@example.com>").await;
    let refused = c.cmd("RCPT TO:<x@elsewhere.test>").await;
    assert!(
        refused.starts_with("550"),
        "the new policy applies: {refused}"
    );

    // Put the wrong password back: the next login fails and pauses again; a reload that
    // changes nothing upstream does not probe.
    relay.env.insert(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".into(),
        "wrong password".into(),
    );
    relay.reload().unwrap();
    let logins = up.count("AUTH");
    send(&relay, "b@example.com").await;
    eventually("refused again", || up.count("AUTH") > logins).await;
    let logins = up.count("AUTH");
    relay.reload().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count("AUTH"), logins, "same credentials: no probe");

    // A change that needs a restart is named.
    std::fs::write(
        &relay.config,
        base.replace("[upstream]\n", "[upstream]\nmax_connections = 7\n"),
    )
    .unwrap();
    assert_eq!(relay.reload().unwrap(), ["upstream.max_connections"]);
    relay.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_an_invalid_config_keeps_the_old_one() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    let port = common::free_port();
    let base = config_for(&up, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let write = |listen_extra: &str| {
        std::fs::write(
            &path,
            base.replace("[listen]\n", &format!("[listen]\n{listen_extra}\n")),
        )
        .unwrap()
    };
    write("allowed_recipients = [\"@a.example\"]");
    let stderr = dir.path().join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("GMAIL_RELAY__UPSTREAM__PASSWORD", PASSWORD)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
    eventually("the relay is ready", || log().contains("gmail-relay ready")).await;
    let rcpt = |to: &'static str| async move {
        let mut c = common::Client::connect(addr).await;
        c.reply().await;
        c.cmd("EHLO t").await;
        c.cmd("MAIL FROM:<app@a.example>").await;
        c.cmd(&format!("RCPT TO:<{to}>")).await
    };
    assert!(rcpt("x@b.example").await.starts_with("550"));

    let hup = |pid: u32| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    write("allowed_recipients = [\"@a.example\", \"@b.example\"]");
    hup(child.id());
    eventually("reloaded", || log().contains("configuration reloaded")).await;
    assert!(rcpt("x@b.example").await.starts_with("250"), "{}", log());

    write("allowed_recipients = [\"not an address\"]");
    hup(child.id());
    eventually("refused", || log().contains("configuration not reloaded")).await;
    assert!(log().contains("listen.allowed_recipients[0]"), "{}", log());
    assert!(
        rcpt("x@b.example").await.starts_with("250"),
        "the previous configuration stays in force"
    );

    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}: {}", log());
}

/// What `gmail-relay oauth authorize` does after writing a new refresh token: the running
/// relay probes its credentials pause at once instead of at the end of the backoff.
#[tokio::test]
async fn a_probe_request_tries_the_login_at_once() {
    let up = FakeUpstream::start(Mode::StartTls, Script::refusing_logins()).await;
    let mut relay = relay(
        &up,
        "[delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n",
    )
    .await;
    send(&relay, "a@example.com").await;
    send(&relay, "b@example.com").await;
    eventually("the login refused", || up.count("AUTH") >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = up.count("AUTH");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count("AUTH"), refused, "paused for an hour");

    up.script(|s| s.auth_replies.clear());
    let done = control::request_running(&relay.spool(), Request::Probe)
        .await
        .unwrap();
    println!("{done:?}");
    up.wait_for(2, WAIT).await;
    relay.wait_queue_empty().await;
    relay.stop().await;
}
