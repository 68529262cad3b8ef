//! Several Gmail accounts in one relay, end to end against a fake Gmail that knows several
//! users: routing by sender, a refused login pausing one account only, failover on a spent
//! quota and back, per-account budgets and rewrites, Google Workspace's SMTP relay service (no
//! AUTH), and a spool from before accounts.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::upstream::{FakeUpstream, Mode, PASSWORD, Script, USER};
use common::{TestRelay, WAIT, config_for, eventually, submit, without_trace_header};

const BILLING: &str = "billing@example.com";
const ALERTS: &str = "alerts@example.com";
const BACKUP: &str = "relay-backup@gmail.test";
const MSG: &[u8] = b"Subject: accounts\r\n\r\nbody\r\n";

/// A fake Gmail that knows the default user and these three.
async fn gmail(script: Script) -> FakeUpstream {
    let users = HashMap::from([
        (BILLING.to_owned(), "pw-billing".to_owned()),
        (ALERTS.to_owned(), "pw-alerts".to_owned()),
        (BACKUP.to_owned(), "pw-backup".to_owned()),
    ]);
    FakeUpstream::start(Mode::StartTls, Script { users, ..script }).await
}

/// The passwords of the default account and of `accounts`, from the environment, as an
/// operator would pass them. (A variable for an account the file does not have would make one.)
fn passwords(accounts: &[&str]) -> HashMap<String, String> {
    let mut env = HashMap::from([(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
        PASSWORD.to_owned(),
    )]);
    for name in accounts {
        env.insert(
            format!("GMAIL_RELAY__ACCOUNTS__{}__PASSWORD", name.to_uppercase()),
            format!("pw-{name}"),
        );
    }
    env
}

async fn send_from(relay: &TestRelay, from: &str, to: &str) {
    let reply = submit(relay.addr(), from, &[to], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

/// Who logged in for each message the fake received, in order: (to, user).
fn carriers(up: &FakeUpstream) -> Vec<(String, String)> {
    up.messages()
        .iter()
        .map(|m| (m.to.join(","), m.user.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn each_sender_arrives_through_its_accounts_login_and_only_there() {
    let up = gmail(Script::default()).await;
    let config = format!(
        "{}\n[accounts.billing]\nusername = \"{BILLING}\"\n\
         senders = [\"billing@example.com\", \"@billing.example.com\"]\n\
         [accounts.alerts]\nusername = \"{ALERTS}\"\nsenders = [\"@example.com\"]\n",
        config_for(&up, "")
    );
    let mut relay = TestRelay::start_with_env(&config, passwords(&["billing", "alerts"])).await;
    send_from(&relay, "billing@example.com", "to-billing-1@x.test").await;
    send_from(&relay, "someone@billing.example.com", "to-billing-2@x.test").await;
    send_from(&relay, "other@example.com", "to-alerts@x.test").await;
    send_from(&relay, "", "to-default@x.test").await;
    up.wait_for(4, WAIT).await;
    let mut got = carriers(&up);
    got.sort();
    println!("{got:?}");
    assert_eq!(
        got,
        [
            ("to-alerts@x.test".to_owned(), ALERTS.to_owned()),
            ("to-billing-1@x.test".to_owned(), BILLING.to_owned()),
            ("to-billing-2@x.test".to_owned(), BILLING.to_owned()),
            ("to-default@x.test".to_owned(), USER.to_owned()),
        ]
    );
    let logins = up.count("AUTH");
    assert!(
        (3..=4).contains(&logins),
        "one login per account (billing's two messages may have used two connections): {logins}"
    );
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_refused_login_pauses_that_account_alone_and_a_reload_with_the_fix_resumes_it() {
    let up = gmail(Script::default()).await;
    let config = format!(
        "{}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n\
         [delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n",
        config_for(&up, "")
    );
    let mut env = passwords(&["billing"]);
    env.insert(
        "GMAIL_RELAY__ACCOUNTS__BILLING__PASSWORD".into(),
        "revoked".into(),
    );
    let mut relay = TestRelay::start_with_env(&config, env).await;
    send_from(&relay, "app@billing.example.com", "a@x.test").await;
    send_from(&relay, "app@example.com", "b@x.test").await;
    up.wait_for(1, WAIT).await;
    eventually("billing's login refused", || up.count("AUTH") >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(carriers(&up), [("b@x.test".to_owned(), USER.to_owned())]);

    let status = relay.queue(&["status"]).await;
    println!("{}", status.stdout.trim());
    assert!(
        status
            .stdout
            .contains("account billing (billing@example.com): PAUSED (credentials)")
            && status
                .stdout
                .contains("account default (relay@example.com): running"),
        "{status:?}"
    );

    // The new password, by reload: billing is probed at once and its mail goes.
    relay.env.insert(
        "GMAIL_RELAY__ACCOUNTS__BILLING__PASSWORD".into(),
        "pw-billing".into(),
    );
    relay.reload().unwrap();
    up.wait_for(2, WAIT).await;
    assert_eq!(
        carriers(&up)[1],
        ("a@x.test".to_owned(), BILLING.to_owned())
    );
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_spent_daily_limit_sends_through_the_failover_account_and_back_when_it_passes() {
    let script = Script {
        quota_users: [USER.to_owned()].into(),
        ..Script::default()
    };
    let up = gmail(script).await;
    let config = format!(
        "{}failover = [\"backup\"]\n[accounts.backup]\nusername = \"{BACKUP}\"\nsenders = []\n\
         [delivery]\nquota_pause = \"1s\"\nbounce = \"none\"\n",
        config_for(&up, "")
    );
    let mut relay = TestRelay::start_with_env(&config, passwords(&["backup"])).await;
    send_from(&relay, "app@example.com", "one@x.test").await;
    send_from(&relay, "app@example.com", "two@x.test").await;
    up.wait_for(2, WAIT).await;
    let carried = carriers(&up);
    assert!(
        carried.iter().all(|(_, user)| user == BACKUP),
        "the default account's quota is spent: its mail went through backup: {carried:?}"
    );

    // The limit passes; after quota_pause the default account is probed and carries its
    // mail again.
    up.script(|s| s.quota_users.clear());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_from(&relay, "app@example.com", "three@x.test").await;
    up.wait_for(3, WAIT).await;
    let carried = carriers(&up);
    for (to, user) in &carried {
        println!("{to} carried by {user}");
    }
    assert_eq!(carried[2], ("three@x.test".to_owned(), USER.to_owned()));
    let mut recipients: Vec<&str> = carried.iter().map(|(to, _)| to.as_str()).collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["one@x.test", "three@x.test", "two@x.test"],
        "each recipient received the message once"
    );
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn an_accounts_budget_holds_its_mail_only() {
    let up = gmail(Script::default()).await;
    let config = format!(
        "{}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n\
         max_per_day = 3\n",
        config_for(&up, "")
    );
    let mut relay = TestRelay::start_with_env(&config, passwords(&["billing"])).await;
    for n in 0..4 {
        send_from(&relay, "app@billing.example.com", &format!("b{n}@x.test")).await;
    }
    for n in 0..2 {
        send_from(&relay, "app@example.com", &format!("d{n}@x.test")).await;
    }
    up.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let carried = carriers(&up);
    assert_eq!(carried.len(), 5, "{carried:?}");
    assert_eq!(carried.iter().filter(|(_, u)| u == BILLING).count(), 3);
    assert_eq!(carried.iter().filter(|(_, u)| u == USER).count(), 2);
    assert_eq!(
        relay.queued(),
        1,
        "the fourth billing message waits for its budget"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_workspace_relay_service_takes_mail_without_auth_but_over_tls() {
    let script = Script {
        relay_service: true,
        ..Script::default()
    };
    let up = FakeUpstream::start(Mode::StartTls, script).await;
    let config =
        config_for(&up, "auth = \"none\"").replace(&format!("username = \"{USER}\"\n"), "");
    let mut relay = TestRelay::start_with_env(&config, HashMap::new()).await;
    send_from(&relay, "scanner@example.com", "a@x.test").await;
    let got = up.wait_for(1, WAIT).await;
    assert!(got[0].tls, "TLS still required");
    assert_eq!(got[0].user, None, "no login");
    assert_eq!(up.count("AUTH"), 0, "no AUTH command at all");
    assert!(up.count("STARTTLS") >= 1);
    relay.stop().await;

    // Google refuses generic EHLO names: `check` says which key to set.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "[upstream]\nhost = \"smtp-relay.gmail.com\"\nauth = \"none\"\nhelo_name = \"localhost\"\n",
    )
    .unwrap();
    let run = common::check_file(&path, &[], vec![]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("upstream.helo_name"), "{}", run.stderr);
}

#[tokio::test]
async fn a_spool_from_before_accounts_is_delivered_through_the_default_account() {
    let up = gmail(Script::default()).await;
    let base = config_for(&up, "");
    // Queue a message on hold, then take the account out of its file, as an older relay wrote it.
    let mut relay = TestRelay::start_with_env(
        &format!("{base}\n[delivery]\nhold = true\n"),
        passwords(&[]),
    )
    .await;
    send_from(&relay, "app@billing.example.com", "old@x.test").await;
    relay.stop().await;
    let file = relay.spool().join("queue").join(&relay.files("queue")[0]);
    let bytes = std::fs::read(&file).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    assert_eq!(header["envelope"]["account"], "default");
    header["envelope"]
        .as_object_mut()
        .unwrap()
        .remove("account");
    let mut old = serde_json::to_vec(&header).unwrap();
    old.extend_from_slice(&bytes[nl..]);
    std::fs::write(&file, old).unwrap();

    // The upgraded relay has a billing account for that sender's domain now; the old message
    // still goes through the default account (it is never re-routed silently).
    std::fs::write(
        &relay.config,
        format!(
            "{base}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n"
        ),
    )
    .unwrap();
    relay.env = passwords(&["billing"]);
    relay.restart().await;
    up.wait_for(1, WAIT).await;
    assert_eq!(carriers(&up), [("old@x.test".to_owned(), USER.to_owned())]);
    relay.wait_queue_empty().await;
    relay.stop().await;
}

#[tokio::test]
async fn mail_of_a_removed_account_waits_until_it_is_moved_and_every_account_is_visible() {
    let up = gmail(Script {
        refused_users: [BILLING.to_owned()].into(),
        ..Script::default()
    })
    .await;
    let base = config_for(&up, "");
    let with_billing = format!(
        "{base}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n\
         [delivery]\nauth_pause_min = \"1h\"\nauth_pause_max = \"2h\"\n",
    );
    let mut relay =
        TestRelay::start_for_tools_with_env(&with_billing, passwords(&["billing"])).await;
    let bound = std::fs::read_to_string(&relay.config).unwrap();
    send_from(&relay, "app@billing.example.com", "a@x.test").await;
    eventually("billing refused", || up.count("AUTH") >= 1).await;
    eventually("its state recorded", || relay.files("queue").len() == 2).await;

    let (code, health) = common::http_get(relay.metrics_addr().unwrap(), "/healthz").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    println!("/healthz: {code} {health}");
    assert_eq!(code, 503, "not ok while any account is paused");
    assert_eq!(health["accounts"]["billing"]["status"], "paused");
    assert_eq!(health["accounts"]["default"]["status"], "ok");
    let (_, scrape) = common::http_get(relay.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        scrape.contains("gmail_relay_delivery_paused{account=\"billing\",cause=\"credentials\"} 1")
            && scrape.contains(
                "gmail_relay_upstream_logins_total{account=\"billing\",result=\"refused\"}"
            ),
        "{scrape}"
    );

    // The operator removes the account: its mail waits, and says so.
    let without = bound.replace(
        &format!(
            "[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n"
        ),
        "",
    );
    std::fs::write(&relay.config, &without).unwrap();
    relay.env.remove("GMAIL_RELAY__ACCOUNTS__BILLING__PASSWORD");
    relay.reload().unwrap();
    let status = relay.queue(&["status"]).await;
    println!("{}", status.stdout.trim());
    assert!(
        status.stdout.contains(
            "WARNING: 1 message(s) wait for the account \"billing\", which is not configured"
        ),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.messages().len(), 0, "never re-routed silently");

    // ... until it is moved to the default account.
    let id = relay.queued_ids()[0].clone();
    let moved = relay.queue(&["requeue", "--account", "default", &id]).await;
    assert_eq!(moved.code, 0, "{moved:?}");
    let got = up.wait_for(1, WAIT).await;
    assert_eq!(got[0].user.as_deref(), Some(USER));
    let show = relay.queue(&["show", &id]).await;
    assert_eq!(show.code, 3, "delivered and gone");
    relay.stop().await;
}

#[tokio::test]
async fn check_upstream_logs_in_to_every_account() {
    let up = gmail(Script {
        refused_users: [BILLING.to_owned()].into(),
        ..Script::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n\
             [accounts.backup]\nusername = \"{BACKUP}\"\n",
            config_for(&up, "")
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = passwords(&["billing", "backup"]).into_iter().collect();
    let run = common::check_file(&path, &["--upstream"], env).await;
    println!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "one account cannot log in");
    for line in [
        "account default: upstream check: logged in",
        "account backup: upstream check: logged in",
    ] {
        assert!(run.stdout.contains(line), "{line}: {run:?}");
    }
    assert!(
        run.stderr
            .contains("account billing: upstream refused the login")
            && run.stderr.contains("535 5.7.8"),
        "{run:?}"
    );
}

/// `[accounts.NAME.rewrite]` applies to the mail that account sends, and only to it: billing's
/// senders go out as billing's mailbox (envelope and `From:`, the original kept in `Reply-To:`)
/// while the default account, under `[rewrite]`'s "keep", sends as the client wrote.
#[tokio::test]
async fn an_accounts_rewrite_applies_to_its_own_mail_only() {
    let up = gmail(Script::default()).await;
    let config = format!(
        "{}\n[accounts.billing]\nusername = \"{BILLING}\"\nsenders = [\"@billing.example.com\"]\n\
         [accounts.billing.rewrite]\nenvelope_from = \"account\"\nheader_from = \"account\"\n",
        config_for(&up, "")
    );
    let mut relay = TestRelay::start_with_env(&config, passwords(&["billing"])).await;
    for (from, to) in [
        ("invoices@billing.example.com", "customer@x.test"),
        ("app@example.com", "ops@x.test"),
    ] {
        let msg = format!("From: \"Sender\" <{from}>\r\nSubject: rewrite\r\n\r\nbody\r\n");
        let reply = submit(relay.addr(), from, &[to], msg.as_bytes()).await;
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    up.wait_for(2, WAIT).await;
    let messages = up.messages();
    let by_to = |to: &str| {
        messages
            .iter()
            .find(|m| m.to == [to.to_owned()])
            .unwrap_or_else(|| panic!("no message to {to}"))
    };
    let billing = by_to("customer@x.test");
    assert_eq!(billing.user.as_deref(), Some(BILLING));
    assert_eq!(
        billing.from, BILLING,
        "envelope sender rewritten to the account"
    );
    let text = String::from_utf8_lossy(without_trace_header(&billing.data)).to_string();
    assert!(
        text.contains(&format!(
            "From: \"Sender\" <{BILLING}>\r\nReply-To: \"Sender\" <invoices@billing.example.com>\r\n"
        )),
        "{text}"
    );
    let default = by_to("ops@x.test");
    assert_eq!(default.user.as_deref(), Some(USER));
    assert_eq!(
        default.from, "app@example.com",
        "the default account keeps the sender"
    );
    let text = String::from_utf8_lossy(without_trace_header(&default.data)).to_string();
    assert!(
        text.contains("From: \"Sender\" <app@example.com>\r\n"),
        "{text}"
    );
    assert!(!text.contains("Reply-To:"), "{text}");
    relay.wait_queue_empty().await;
    relay.stop().await;
}
