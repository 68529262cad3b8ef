//! Google Workspace service accounts with domain-wide delegation, end to end: the relay signs
//! assertions with a key made at test time, a fake token endpoint verifies them (signature,
//! `kid`, `iss`, `aud`, `scope`, `sub`, `iat`/`exp`) and issues tokens, and the fake Gmail
//! takes XOAUTH2 logins as each mailbox. One fixed mailbox, or every sender as itself.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::service_key::{CLIENT_EMAIL, CLIENT_ID, write_key_file};
use common::token::TokenEndpoint;
use common::upstream::{FakeUpstream, Mode, PASSWORD, Script, USER};
use common::{TestRelay, WAIT, config_for, eventually, submit};
use gmail_relay::auth::{ServiceKey, TokenSource};

const ALERTS: &str = "alerts@example.com";
const SCANNER: &str = "scanner@example.com";
const PRINTER: &str = "printer@example.com";
const GHOST: &str = "ghost@example.com";
const MSG: &[u8] =
    b"Subject: service account\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n";

/// A fake Gmail that knows the default user and the domain's mailboxes.
async fn gmail() -> FakeUpstream {
    let users = [ALERTS, SCANNER, PRINTER]
        .iter()
        .map(|u| (u.to_string(), "unused".to_owned()))
        .collect();
    FakeUpstream::start(
        Mode::StartTls,
        Script {
            users,
            ..Script::default()
        },
    )
    .await
}

struct Setup {
    up: FakeUpstream,
    ep: TokenEndpoint,
    relay: TestRelay,
    _keys: tempfile::TempDir,
}

/// The `[upstream]` of `config_for(up)` without its username, and the key file in `dir`
/// (whose `token_uri` is Google's: the config's `token_url` points at the fake).
fn key_file(dir: &std::path::Path) -> String {
    write_key_file(dir, "https://oauth2.googleapis.com/token")
        .display()
        .to_string()
}

/// The default upstream logs in as the fixed mailbox [`ALERTS`] through a service account.
fn fixed_subject(up: &FakeUpstream, ep: &TokenEndpoint, key: &str) -> String {
    format!(
        "{}\n[upstream.service_account]\nkey_file = \"{key}\"\nsubject = \"{ALERTS}\"\n\
         token_url = \"{}\"\n[delivery]\nauth_pause_min = \"100ms\"\nauth_pause_max = \"300ms\"\n",
        config_for(up, "auth = \"service-account\"")
            .replace(&format!("username = \"{USER}\"\n"), ""),
        ep.url()
    )
}

/// The default upstream logs in with the app password; `[accounts.domain]` sends mail from
/// `@example.com` as each sender's own mailbox.
fn every_sender(up: &FakeUpstream, ep: &TokenEndpoint, key: &str) -> String {
    format!(
        "{}\n[accounts.domain]\nauth = \"service-account\"\nimpersonate_sender = true\n\
         senders = [\"@example.com\"]\n\
         [accounts.domain.service_account]\nkey_file = \"{key}\"\ntoken_url = \"{}\"\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n\
         [delivery]\nauth_pause_min = \"1s\"\nauth_pause_max = \"2s\"\n",
        config_for(up, ""),
        ep.url()
    )
}

async fn start(config: impl Fn(&FakeUpstream, &TokenEndpoint, &str) -> String) -> Setup {
    let up = gmail().await;
    let ep = TokenEndpoint::start().await;
    let keys = tempfile::tempdir().unwrap();
    let cfg = config(&up, &ep, &key_file(keys.path()));
    // The default account's app password, when it has one.
    let env = if cfg.contains("[upstream.service_account]") {
        HashMap::new()
    } else {
        HashMap::from([(
            "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        )])
    };
    let relay = TestRelay::start_for_tools_with_env(&cfg, env).await;
    Setup {
        up,
        ep,
        relay,
        _keys: keys,
    }
}

async fn send_from(relay: &TestRelay, from: &str, to: &str) {
    let reply = submit(relay.addr(), from, &[to], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

/// (sender, login) of every message the fake received, sorted.
fn logins(up: &FakeUpstream) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = up
        .messages()
        .iter()
        .map(|m| (m.from.clone(), m.user.clone().unwrap_or_default()))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_fixed_subject_gets_one_token_and_logs_in_as_the_mailbox() {
    let mut s = start(fixed_subject).await;
    for i in 0..3 {
        send_from(&s.relay, "app@example.com", &format!("r{i}@example.net")).await;
    }
    s.up.wait_for(3, WAIT).await;

    {
        let jwt = s.ep.jwt.lock().unwrap();
        assert!(
            jwt.errors.is_empty(),
            "every assertion verified: {:?}",
            jwt.errors
        );
        assert_eq!(jwt.subjects, [ALERTS], "one assertion, for the mailbox");
    }
    assert_eq!(s.ep.count(), 1, "one token for the three messages");
    let form = s.ep.requests.lock().unwrap()[0].clone();
    assert!(
        form.starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
        ),
        "{form}"
    );
    for m in s.up.messages() {
        assert_eq!(
            m.user.as_deref(),
            Some(ALERTS),
            "the mailbox logs in, never {CLIENT_EMAIL}"
        );
    }
    let tokens = s.up.record(|r| r.tokens.clone());
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t == "tok-1"),
        "{tokens:?}"
    );
    assert_eq!(
        s.up.count("AUTH XOAUTH2"),
        s.up.count("AUTH"),
        "only XOAUTH2"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn one_refresh_before_expiry_serves_every_connection() {
    let ep = TokenEndpoint::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key = Arc::new(ServiceKey::load(&write_key_file(keys.path(), &ep.url())).unwrap());
    // Tokens are refreshed when less than 5 minutes remain: one living 5 minutes and 1 second
    // is due for a refresh after a second, while it is still valid. Slow answers make
    // concurrent logins overlap.
    {
        let mut script = ep.script.lock().unwrap();
        script.expires_in = Some(301);
        script.delay = Some(Duration::from_millis(200));
    }
    let source = TokenSource::service_account(key, ALERTS, &ep.url(), "upstream.service_account");
    let logins = |n| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.token().await.unwrap() })
            })
            .collect();
        async move {
            let mut values = Vec::new();
            for h in handles {
                values.push(h.await.unwrap().value.expose().to_owned());
            }
            values
        }
    };
    assert_eq!(logins(8).await, vec!["tok-1"; 8]);
    assert_eq!(ep.count(), 1, "eight connections, one token request");
    assert_eq!(logins(8).await, vec!["tok-1"; 8], "cached while fresh");
    assert_eq!(ep.count(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(logins(8).await, vec!["tok-2"; 8]);
    assert_eq!(ep.count(), 2, "one refresh, shared by the eight");
    let jwt = ep.jwt.lock().unwrap();
    assert!(jwt.errors.is_empty(), "{:?}", jwt.errors);
    assert_eq!(jwt.subjects, [ALERTS, ALERTS]);
    assert_ne!(
        jwt.assertions[0], jwt.assertions[1],
        "each request signs a new assertion"
    );
}

#[tokio::test]
async fn every_sender_logs_in_as_its_own_mailbox_and_others_use_the_default_account() {
    let mut s = start(every_sender).await;
    // Gmail refuses the printer's login (say, its mailbox is suspended): that mailbox pauses,
    // no other.
    s.up.script(|script| {
        script.refused_users.insert(PRINTER.to_owned());
    });
    send_from(&s.relay, SCANNER, "a@example.net").await;
    send_from(&s.relay, PRINTER, "b@example.net").await;
    send_from(&s.relay, "app@other.test", "c@example.net").await;
    send_from(&s.relay, SCANNER, "d@example.net").await;
    s.up.wait_for(3, WAIT).await;
    eventually("the printer refused", || {
        s.up.record(|r| r.tokens.len()) >= 3
    })
    .await;
    assert_eq!(
        logins(&s.up),
        [
            ("app@other.test".to_owned(), USER.to_owned()),
            (SCANNER.to_owned(), SCANNER.to_owned()),
            (SCANNER.to_owned(), SCANNER.to_owned()),
        ],
        "each sender of the domain by its own login; the other by the default account's"
    );

    // Each mailbox is visible on its own: its pause in `queue status` and /healthz, its
    // logins in /metrics.
    let status = s.relay.tool("queue", &["status"]).await;
    println!("{}", status.stdout);
    let printer_line = status
        .stdout
        .lines()
        .find(|l| l.contains(&format!("domain/{PRINTER}")))
        .unwrap_or_else(|| panic!("the printer's mailbox in: {}", status.stdout));
    assert!(
        printer_line.contains("PAUSED (credentials)"),
        "{printer_line}"
    );
    let (_, health) = common::http_get(s.relay.metrics_addr().unwrap(), "/healthz").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["accounts"][format!("domain/{PRINTER}")]["status"],
        "paused",
        "{health}"
    );
    assert_eq!(health["accounts"]["domain"]["status"], "ok", "{health}");
    let (_, scrape) = common::http_get(s.relay.metrics_addr().unwrap(), "/metrics").await;
    for (mailbox, result) in [(SCANNER, "ok"), (PRINTER, "refused")] {
        let line = format!(
            "gmail_relay_upstream_logins_total{{account=\"domain/{mailbox}\",result=\"{result}\"}}"
        );
        assert!(scrape.contains(&line), "{line} in {scrape}");
    }

    // The mailbox is back: its mail goes as itself.
    s.up.script(|script| {
        script.refused_users.clear();
    });
    s.up.wait_for(4, WAIT).await;
    s.relay.wait_queue_empty().await;
    assert!(logins(&s.up).contains(&(PRINTER.to_owned(), PRINTER.to_owned())));
    {
        let jwt = s.ep.jwt.lock().unwrap();
        assert!(jwt.errors.is_empty(), "{:?}", jwt.errors);
        let mut subjects = jwt.subjects.clone();
        subjects.sort();
        subjects.dedup();
        assert_eq!(
            subjects,
            [PRINTER, SCANNER],
            "tokens for the mailboxes only"
        );
    }
    assert!(
        s.relay.files("failed").is_empty(),
        "nothing failed or bounced"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn unauthorized_client_pauses_without_bouncing_and_a_grant_resumes_delivery() {
    let mut s = start(fixed_subject).await;
    s.ep.script.lock().unwrap().unauthorized = true;
    send_from(&s.relay, "app@example.com", "a@example.net").await;
    eventually("the token endpoint asked twice", || s.ep.count() >= 2).await;

    let health = s.relay.tool("health", &[]).await;
    println!("health: {}{}", health.stdout, health.stderr);
    let said = format!("{}{}", health.stdout, health.stderr);
    assert!(
        said.contains("paused")
            && said.contains("Domain-wide delegation")
            && said.contains(CLIENT_ID)
            && said.contains("https://mail.google.com/"),
        "the cause says where to grant it: {said}"
    );
    assert!(s.up.messages().is_empty());
    assert!(
        s.relay.files("failed").is_empty(),
        "nothing failed or bounced"
    );
    assert_eq!(s.up.count("AUTH"), 0, "no login without a token");

    // The admin grants the delegation: the next probe delivers, once, and nothing bounced.
    s.ep.script.lock().unwrap().unauthorized = false;
    let got = s.up.wait_for(1, WAIT).await;
    assert_eq!(got[0].from, "app@example.com");
    assert_eq!(got[0].user.as_deref(), Some(ALERTS));
    s.relay.wait_queue_empty().await;
    assert_eq!(s.up.messages().len(), 1, "no DSN");
    s.relay.stop().await;
}

/// Google's token endpoint is down (503): no token, so no login is tried; the account waits
/// as for an unreachable Gmail (not a credentials problem, nothing bounced), and the first
/// token it gets after that delivers the mail.
#[tokio::test]
async fn a_token_endpoint_that_is_down_holds_the_mail_until_it_answers() {
    let mut s = start(fixed_subject).await;
    {
        let mut script = s.ep.script.lock().unwrap();
        // Four refusals: the pause (retries from 100 ms, doubling) outlasts reading health.
        for _ in 0..4 {
            script
                .replies
                .push_back((503, r#"{"error":"temporarily_unavailable"}"#.to_owned()));
        }
    }
    send_from(&s.relay, "app@example.com", "a@example.net").await;
    // The request reaches the endpoint before the attempt reports the pause: wait for it.
    let mut said = String::new();
    for _ in 0..100 {
        let health = s.relay.tool("health", &[]).await;
        said = format!("{}{}", health.stdout, health.stderr);
        if said.contains("paused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        said.contains("paused (unreachable)") && said.contains("503"),
        "{said}"
    );
    assert!(!said.contains("credentials"), "{said}");
    assert_eq!(s.up.count("AUTH"), 0, "no login without a token");
    assert!(s.relay.files("failed").is_empty());

    let got = s.up.wait_for(1, WAIT).await;
    assert_eq!(got[0].user.as_deref(), Some(ALERTS));
    assert!(
        s.ep.count() >= 5,
        "four refusals, then the token that was used"
    );
    s.relay.wait_queue_empty().await;
    assert!(s.relay.files("failed").is_empty(), "nothing bounced");
    assert_eq!(s.up.messages().len(), 1, "no DSN");
    s.relay.stop().await;
}

#[tokio::test]
async fn an_unknown_mailbox_fails_only_its_senders_mail_with_a_dsn() {
    let mut s = start(every_sender).await;
    s.ep.script
        .lock()
        .unwrap()
        .unknown_mailboxes
        .insert(GHOST.to_owned());
    send_from(&s.relay, GHOST, "a@example.net").await;
    send_from(&s.relay, SCANNER, "b@example.net").await;
    let got = s.up.wait_for(2, WAIT).await;
    s.relay.wait_queue_empty().await;

    let scanner = got
        .iter()
        .find(|m| m.from == SCANNER)
        .expect("scanner's mail");
    assert_eq!(
        scanner.user.as_deref(),
        Some(SCANNER),
        "other mailboxes unaffected"
    );
    let dsn = got.iter().find(|m| m.from.is_empty()).expect("a DSN");
    assert_eq!(dsn.to, [GHOST], "to the sender");
    assert_eq!(
        dsn.user.as_deref(),
        Some(USER),
        "sent by the default account"
    );
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Status: 5.7.1")
            && text.contains("is not a mailbox of the domain")
            && text.contains("Final-Recipient: rfc822; a@example.net"),
        "{text}"
    );
    let failed = s.relay.files("failed");
    assert_eq!(failed.len(), 2, "the message and its state: {failed:?}");
    assert_eq!(s.up.messages().len(), 2, "nothing else sent");
    s.relay.stop().await;
}

/// `gmail-relay check --config <config> --upstream <args>`, with the default account's app
/// password in the environment when it has one.
async fn check(config: &str, args: &[&str]) -> common::Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    let mut all = vec![
        "check".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
        "--upstream".to_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let env = if config.contains("[upstream.service_account]") {
        vec![]
    } else {
        common::password_env()
    };
    let run = common::run_binary(all, env, vec![]).await;
    println!(
        "check {args:?}: {}\n{}\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

#[tokio::test]
async fn check_upstream_mints_a_token_and_logs_in_without_sending() {
    let up = gmail().await;
    let ep = TokenEndpoint::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path());

    // One fixed mailbox.
    let run = check(&fixed_subject(&up, &ep, &key), &[]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "as {ALERTS} with XOAUTH2 (service account, domain-wide delegation)"
        )),
        "{}",
        run.stdout
    );

    // Every sender as itself: that account is skipped without --as, and tried with it.
    let config = every_sender(&up, &ep, &key);
    let run = check(&config, &[]).await;
    assert_eq!(run.code, 0, "the default account logged in; nothing failed");
    assert!(
        run.stdout
            .contains("account domain: upstream check: skipped")
            && run.stdout.contains("--as ADDRESS (one of @example.com)"),
        "{}",
        run.stdout
    );
    let run = check(&config, &["--as", SCANNER]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("account domain: upstream check: logged in")
            && run.stdout.contains(&format!("as {SCANNER} with XOAUTH2")),
        "{}",
        run.stdout
    );
    let run = check(&config, &["--as", "app@other.test"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("goes through account default"),
        "{}",
        run.stderr
    );
    assert!(up.messages().is_empty(), "nothing sent");
    assert_eq!(
        ep.jwt.lock().unwrap().subjects,
        [ALERTS, SCANNER],
        "a token minted for each login"
    );

    // Google's refusals, each with what to do.
    let cases = [
        (
            (
                401,
                r#"{"error":"unauthorized_client","error_description":"Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."}"#,
            ),
            vec![
                "Domain-wide delegation",
                CLIENT_ID,
                "https://mail.google.com/",
            ],
        ),
        (
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."}"#,
            ),
            vec![common::service_key::KEY_ID, "clock"],
        ),
        (
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            ),
            vec![
                common::service_key::KEY_ID,
                "deleted or disabled",
                "key_file",
            ],
        ),
        (
            (
                401,
                r#"{"error":"invalid_client","error_description":"The OAuth client was disabled."}"#,
            ),
            vec![common::service_key::KEY_ID, "deleted or disabled"],
        ),
        (
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid email or User ID"}"#,
            ),
            vec![ALERTS, "not a mailbox", "upstream.service_account.subject"],
        ),
    ];
    for ((status, body), wanted) in cases {
        ep.script
            .lock()
            .unwrap()
            .replies
            .push_back((status, body.to_owned()));
        let run = check(&fixed_subject(&up, &ep, &key), &[]).await;
        assert_eq!(run.code, 1, "{body}");
        for w in wanted {
            assert!(run.stderr.contains(w), "{w:?} for {body}: {}", run.stderr);
        }
    }
    assert_eq!(up.count("AUTH XOAUTH2"), 2, "no login without a token");
}

#[tokio::test]
async fn a_bad_key_file_is_a_configuration_error_and_a_readable_one_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let up = gmail().await;
    let ep = TokenEndpoint::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path());

    // Readable by others: it works, with a warning that says what to do.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = check(&fixed_subject(&up, &ep, &key), &[]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("can be read by other users") && run.stderr.contains("chmod 600"),
        "{}",
        run.stderr
    );

    // An OAuth client file where the key should be: refused before anything runs.
    std::fs::write(
        &key,
        r#"{"installed":{"client_id":"x.apps.googleusercontent.com"}}"#,
    )
    .unwrap();
    let run = check(&fixed_subject(&up, &ep, &key), &[]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("upstream.service_account.key_file")
            && run.stderr.contains(&format!("{key}: type:"))
            && run.stderr.contains("not a service account key"),
        "{}",
        run.stderr
    );
    assert_eq!(ep.count(), 1, "only the first check asked for a token");
}
