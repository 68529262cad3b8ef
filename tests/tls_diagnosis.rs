//! What an operator reads when TLS to the upstream goes wrong: a refused STARTTLS is a TLS
//! problem (never "credentials"), a port that speaks the other TLS mode is named with the fix
//! (in seconds, not after a 60-second timeout), certificate errors say once what to change,
//! `upstream.tls_name` verifies a private upstream reached by IP, and a login costs one EHLO
//! after TLS.

mod common;

use common::upstream::{FakeUpstream, Mode, Script};
use common::{TestRelay, check_upstream, config_for, eventually, http_get, send};

/// Exim's refusal when its TLS is not available.
const EXIM_NO_TLS: &str = "454 4.7.0 TLS not available due to temporary reason";

#[tokio::test]
async fn a_refused_starttls_is_reported_as_tls_everywhere_never_as_credentials() {
    let script = Script {
        starttls_replies: (0..1000).map(|_| EXIM_NO_TLS.to_owned()).collect(),
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let config = format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n",
        config_for(&up, "")
            .replace("retry_min = \"100ms\"", "retry_min = \"1h\"")
            .replace("retry_max = \"400ms\"", "retry_max = \"2h\"")
    );
    let mut relay = TestRelay::start_for_tools(&config).await;
    send(&relay, "a@example.com").await;
    eventually("STARTTLS refused", || up.count("STARTTLS") >= 1).await;
    eventually("the pause recorded", || relay.files("queue").len() == 2).await;

    let status = relay.queue(&["status"]).await;
    println!("queue status: {}", status.stdout.trim());
    assert!(
        status.stdout.contains("PAUSED (tls)") && status.stdout.contains(EXIM_NO_TLS),
        "{status:?}"
    );
    assert!(!status.stdout.contains("credentials"), "{status:?}");

    let metrics = relay.metrics_addr().unwrap();
    let (code, health) = http_get(metrics, "/healthz").await;
    println!("/healthz: {code} {health}");
    assert_eq!(code, 503);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["cause"], "tls");
    let (_, scrape) = http_get(metrics, "/metrics").await;
    assert!(
        scrape.contains("gmail_relay_delivery_paused{account=\"default\",cause=\"tls\"} 1"),
        "{scrape}"
    );
    assert!(
        !scrape
            .contains("gmail_relay_upstream_logins_total{account=\"default\",result=\"refused\"}"),
        "no login was attempted, so none was refused"
    );
    assert_eq!(up.count("AUTH"), 0, "no credentials without TLS");

    let check = check_upstream(&config_for(&up, "")).await;
    println!("check --upstream: {}", check.stderr.trim());
    assert_eq!(check.code, 1);
    assert!(
        check
            .stderr
            .contains("TLS with the upstream failed: STARTTLS refused")
            && check.stderr.contains(EXIM_NO_TLS),
        "{check:?}"
    );
    assert!(!check.stderr.contains("refused the login"), "{check:?}");
    relay.stop().await;
}

#[tokio::test]
async fn implicit_tls_against_a_starttls_port_says_to_set_starttls() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let config = config_for(&up, "").replace("tls = \"starttls\"", "tls = \"implicit\"");
    let check = check_upstream(&config).await;
    println!("check --upstream: {}", check.stderr.trim());
    assert_eq!(check.code, 1);
    assert!(
        check
            .stderr
            .contains("that port expects STARTTLS; set upstream.tls = \"starttls\""),
        "{check:?}"
    );
    assert!(!check.stderr.contains("InvalidContentType"), "{check:?}");
}

#[tokio::test]
async fn starttls_against_an_implicit_tls_port_is_named_within_seconds() {
    let up = FakeUpstream::start(Mode::Implicit, Script::default()).await;
    let config = config_for(&up, "")
        .replace("tls = \"implicit\"", "tls = \"starttls\"")
        .replace("timeout = \"5s\"", "timeout = \"60s\"");
    let started = std::time::Instant::now();
    let check = check_upstream(&config).await;
    let took = started.elapsed();
    println!("check --upstream after {took:?}: {}", check.stderr.trim());
    assert_eq!(check.code, 1);
    assert!(
        check.stderr.contains(
            "speaks TLS from the first byte (like port 465); set upstream.tls = \"implicit\""
        ),
        "{check:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "found by the TLS probe, not by the 60 s timeout: {took:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_explained_once_with_the_fix() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let ca_line = format!("ca_file = \"{}\"\n", up.ca_file.display());
    let config = config_for(&up, "").replace(&ca_line, "");
    let check = check_upstream(&config).await;
    println!("check --upstream: {}", check.stderr.trim());
    assert_eq!(check.code, 1);
    assert_eq!(
        check.stderr.matches("UnknownIssuer").count(),
        1,
        "said once: {check:?}"
    );
    assert!(check.stderr.contains("set upstream.ca_file"), "{check:?}");
    assert!(!check.stderr.contains("Connection error"), "{check:?}");
}

#[tokio::test]
async fn tls_name_verifies_a_private_upstream_reached_by_its_address() {
    let up = FakeUpstream::start_named(Mode::StartTls, Script::default(), &["smtp.test"]).await;
    let config = config_for(&up, "");
    let check = check_upstream(&config).await;
    println!("without tls_name: {}", check.stderr.trim());
    assert_eq!(check.code, 1);
    assert!(
        check
            .stderr
            .contains("is not valid for \"127.0.0.1\" (it names smtp.test)")
            && check.stderr.contains("set upstream.tls_name"),
        "{check:?}"
    );

    let named = config_for(&up, "tls_name = \"smtp.test\"");
    let check = check_upstream(&named).await;
    assert_eq!(check.code, 0, "{check:?}");
    let mut relay = TestRelay::start(&named).await;
    send(&relay, "a@example.com").await;
    up.wait_for(1, common::WAIT).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_login_costs_one_ehlo_after_tls() {
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let check = check_upstream(&config_for(&up, "")).await;
    assert_eq!(check.code, 0, "{check:?}");
    let commands = up.record(|r| r.commands.clone());
    let verbs: Vec<&str> = commands
        .iter()
        .map(|c| c.split_whitespace().next().unwrap_or(""))
        .collect();
    println!("STARTTLS login: {verbs:?}");
    assert_eq!(verbs, ["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]);

    let up = FakeUpstream::start(Mode::Implicit, Script::default()).await;
    let check = check_upstream(&config_for(&up, "")).await;
    assert_eq!(check.code, 0, "{check:?}");
    let verbs: Vec<String> = up.record(|r| {
        r.commands
            .iter()
            .map(|c| c.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    });
    println!("implicit TLS login: {verbs:?}");
    assert_eq!(verbs, ["EHLO", "AUTH", "QUIT"]);
}
