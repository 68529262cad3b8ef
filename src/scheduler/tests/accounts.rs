//! Several accounts in one scheduler: a pause or a budget holds only its own account's mail;
//! quota and credentials pauses send an account's mail through its failover account, and back
//! when it resumes.

use super::*;

fn with_failover(name: &str, concurrency: usize, failover: &[&str]) -> AccountSettings {
    AccountSettings {
        failover: failover.iter().map(|f| f.to_string()).collect(),
        ..account(name, concurrency, None)
    }
}

/// `default` (failing over to `backup`) and `backup` with `messages`; default's first attempt
/// pauses it for `kind`; returned 20 s later.
async fn paused_with_backup(
    messages: &[(Option<&str>, &[&str], SystemTime)],
    kind: PauseKind,
) -> Harness {
    let accounts = vec![
        with_failover("default", 1, &["backup"]),
        account("backup", 1, None),
    ];
    let h = start(messages, accounts, false, Duration::ZERO).await;
    h.courier.then_for("default", Answer::Pause(kind));
    h.settle().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.settle().await;
    h
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_pauses_its_account_only() {
    let t = now();
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> = vec![
        (Some("billing"), &["a@x.test"], t),
        (None, &["b@x.test"], t),
        (Some("billing"), &["c@x.test"], t),
        (None, &["d@x.test"], t),
    ];
    let accounts = vec![account("default", 1, None), account("billing", 1, None)];
    let h = start(&messages, accounts, false, Duration::ZERO).await;
    h.courier
        .then_for("billing", Answer::Pause(PauseKind::Credentials));
    h.settle().await;
    let calls = h.courier.accounts();
    assert_eq!(
        calls.iter().filter(|a| *a == "billing").count(),
        1,
        "one refused login, then billing waits: {calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|a| *a == "default").count(),
        2,
        "the default account delivered both of its messages: {calls:?}"
    );
    let status = h.handle.status().await.unwrap();
    let billing = status
        .accounts
        .iter()
        .find(|a| a.name == "billing")
        .unwrap();
    assert_eq!(billing.pause.as_ref().unwrap().cause, "credentials");
    assert_eq!(billing.scheduled, 2, "both billing messages wait");
    assert!(status.accounts[0].pause.is_none());

    tokio::time::sleep(MIN * 2).await;
    h.settle().await;
    assert_eq!(
        h.files("queue")
            .iter()
            .filter(|f| f.ends_with(".msg"))
            .count(),
        0,
        "the probe got through and billing's mail went"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_sends_through_the_failover_account_and_back_when_it_resumes() {
    let t = now();
    let first: Vec<(Option<&str>, &[&str], SystemTime)> =
        vec![(None, &["a@x.test", "b@x.test"], t)];
    let accounts = vec![
        with_failover("default", 1, &["backup"]),
        account("backup", 1, None),
    ];
    let h = start(&first, accounts, false, Duration::ZERO).await;
    // The first attempt: a delivered, then Gmail's daily limit for b.
    h.courier.then_for(
        "default",
        Answer::Outcomes(vec![
            RecipientOutcome::Delivered("250 ok".into()),
            RecipientOutcome::Deferred("550 5.4.5 Daily user sending limit exceeded".into()),
        ]),
    );
    h.courier
        .then_for("default", Answer::Pause(PauseKind::Quota));
    h.settle().await;
    // Retried after retry_min; the limit now pauses default for quota_pause (1 h).
    tokio::time::sleep(MIN + MIN / 4 + Duration::from_secs(1)).await;
    h.settle().await;
    // It is still due (put off by the pause): backup carries it, for b only.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.settle().await;
    let calls = h.courier.calls.lock().unwrap().clone();
    let routes: Vec<(&str, Vec<String>)> =
        calls.iter().map(|c| (c.1.as_str(), c.2.clone())).collect();
    println!("{routes:?}");
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert_eq!(
        routes[0],
        ("default", vec!["a@x.test".into(), "b@x.test".into()])
    );
    assert_eq!(routes[1], ("default", vec!["b@x.test".into()]));
    assert_eq!(
        routes[2],
        ("backup", vec!["b@x.test".into()]),
        "only the pending recipient, through backup"
    );
    assert!(h.files("queue").is_empty(), "delivered through backup");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn mail_goes_back_to_its_account_when_the_quota_pause_ends() {
    let t = now();
    let later = t + MAX + Duration::from_secs(120);
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> = vec![
        (None, &["a@x.test"], t),
        (None, &["b@x.test"], t + Duration::from_secs(10)),
        (None, &["c@x.test"], later),
    ];
    let h = paused_with_backup(&messages, PauseKind::Quota).await;
    assert_eq!(
        h.courier.accounts(),
        ["default", "backup", "backup"],
        "a paused default: its mail (a again, then b) goes through backup"
    );
    // After quota_pause (1 h) default is probed with the next message (c) and resumes.
    tokio::time::sleep_until(tokio::time::Instant::now() + MAX + Duration::from_secs(200)).await;
    h.settle().await;
    assert_eq!(
        h.courier.accounts(),
        ["default", "backup", "backup", "default"],
        "back through its own account"
    );
    assert!(h.handle.status().await.unwrap().pause.is_none());
    h.stop().await;
}

/// A refused login is the account's own trouble, like its quota: its mail goes through the
/// failover account meanwhile. An unreachable Gmail is everyone's: the mail waits for the probe
/// instead of trying the failover account, which would meet the same network.
#[tokio::test(start_paused = true)]
async fn a_refused_login_fails_over_and_an_unreachable_upstream_does_not() {
    let t = now();
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> = vec![
        (None, &["a@x.test"], t),
        (None, &["b@x.test"], t + Duration::from_secs(10)),
    ];
    let h = paused_with_backup(&messages, PauseKind::Credentials).await;
    assert_eq!(
        h.courier.accounts(),
        ["default", "backup", "backup"],
        "a refused login on default: a (again) and b go through backup"
    );
    assert!(h.files("queue").is_empty(), "delivered through backup");
    h.stop().await;

    let h = paused_with_backup(&messages, PauseKind::Unreachable).await;
    assert_eq!(
        h.courier.accounts(),
        ["default"],
        "unreachable: nothing tried through backup; the mail waits for default's probe"
    );
    let status = h.handle.status().await.unwrap();
    assert_eq!(
        status.accounts[0].pause.as_ref().unwrap().cause,
        "unreachable"
    );
    assert_eq!(status.accounts[0].scheduled, 2);
    tokio::time::sleep(MAX + Duration::from_secs(60)).await;
    h.settle().await;
    assert_eq!(
        h.courier.accounts(),
        ["default", "default", "default"],
        "after the probe both went through default itself"
    );
    assert!(h.files("queue").is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_holds_its_account_only() {
    let t = now();
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> = vec![
        (Some("small"), &["a@x.test"], t),
        (Some("small"), &["b@x.test"], t),
        (None, &["c@x.test"], t),
        (None, &["d@x.test"], t),
    ];
    let accounts = vec![account("default", 2, None), account("small", 2, Some(1))];
    let h = start(&messages, accounts, false, Duration::ZERO).await;
    h.settle().await;
    let calls = h.courier.accounts();
    assert_eq!(
        calls.iter().filter(|a| *a == "small").count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|a| *a == "default").count(),
        2,
        "{calls:?}"
    );
    let status = h.handle.status().await.unwrap();
    let small = status.accounts.iter().find(|a| a.name == "small").unwrap();
    assert_eq!((small.budget_minute, small.scheduled), (Some(0), 1));
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 4, "the next minute, the second one");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn mail_for_an_account_that_went_away_waits_and_is_never_rerouted() {
    let t = now();
    let messages: Vec<(Option<&str>, &[&str], SystemTime)> =
        vec![(Some("old"), &["a@x.test"], t), (None, &["b@x.test"], t)];
    let accounts = vec![account("default", 1, None)];
    let h = start(&messages, accounts, false, Duration::ZERO).await;
    h.settle().await;
    assert_eq!(
        h.courier.accounts(),
        ["default"],
        "only the default's own message"
    );
    let status = h.handle.status().await.unwrap();
    assert_eq!(status.missing, [("old".to_owned(), 1)]);

    // A reload brings the account back: its mail goes.
    h.handle.reload(
        reloaded(vec![account("default", 1, None), account("old", 1, None)]),
        vec![],
    );
    h.settle().await;
    assert_eq!(h.courier.accounts(), ["default", "old"]);
    assert!(h.handle.status().await.unwrap().missing.is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_sender_of_a_per_sender_account_has_its_own_lane_pause_and_budget() {
    let t = now();
    let domain = AccountSettings {
        per_sender: true,
        max_per_minute: Some(1),
        ..account("domain", 2, None)
    };
    let messages: Vec<(&str, Option<&str>, &[&str], SystemTime)> = vec![
        ("Scanner@Example.com", Some("domain"), &["a@x.test"], t),
        ("printer@example.com", Some("domain"), &["b@x.test"], t),
        ("scanner@example.com", Some("domain"), &["c@x.test"], t),
        ("", Some("domain"), &["d@x.test"], t),
    ];
    let h = start_from(
        &messages,
        vec![account("default", 1, None), domain],
        false,
        Duration::ZERO,
    )
    .await;
    // Gmail refuses the printer's login: only its lane pauses.
    h.courier.then_for(
        "domain/printer@example.com",
        Answer::Pause(PauseKind::Credentials),
    );
    h.settle().await;
    let mut calls = h.courier.accounts();
    calls.sort();
    assert_eq!(
        calls,
        [
            "domain",
            "domain/printer@example.com",
            "domain/scanner@example.com"
        ],
        "each sender through its own mailbox (case folded), the null sender through the \
         account; one message a minute per mailbox"
    );
    let status = h.handle.status().await.unwrap();
    let lane = |name: &str| {
        status
            .accounts
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no lane {name}: {:?}", status.accounts))
    };
    assert_eq!(
        lane("domain/printer@example.com")
            .pause
            .as_ref()
            .unwrap()
            .cause,
        "credentials"
    );
    assert_eq!(
        lane("domain/printer@example.com").label,
        "printer@example.com"
    );
    assert!(lane("domain/scanner@example.com").pause.is_none());
    assert_eq!(
        lane("domain/scanner@example.com").scheduled,
        1,
        "its budget: 1 a minute"
    );
    assert!(lane("domain").pause.is_none());

    // A minute on, the scanner's second message goes and its lane, idle, is dropped; the
    // printer's probe gets through too.
    tokio::time::sleep(MIN * 2).await;
    h.settle().await;
    assert_eq!(h.courier.calls(), 5);
    let status = h.handle.status().await.unwrap();
    let names: Vec<&str> = status.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["default", "domain"],
        "idle mailbox lanes are dropped"
    );
    h.stop().await;
}

/// A per-sender account `domain` with one message from printer@example.com, whose own
/// mailbox lane the first attempt paused for its login.
async fn printer_paused() -> Harness {
    let domain = AccountSettings {
        per_sender: true,
        ..account("domain", 2, None)
    };
    let messages: Vec<(&str, Option<&str>, &[&str], SystemTime)> =
        vec![("printer@example.com", Some("domain"), &["b@x.test"], now())];
    let h = start_from(
        &messages,
        vec![account("default", 1, None), domain],
        false,
        Duration::ZERO,
    )
    .await;
    h.courier.then_for(
        "domain/printer@example.com",
        Answer::Pause(PauseKind::Credentials),
    );
    h.settle().await;
    h
}

#[tokio::test(start_paused = true)]
async fn retry_now_probes_the_senders_own_lane_where_its_mail_waits() {
    let h = printer_paused().await;
    assert_eq!(h.courier.calls(), 1);
    let id = h.queued_id();
    assert_eq!(h.handle.retry_now(Some(id)).await, Some(1));
    h.settle().await;
    assert_eq!(
        h.courier.accounts(),
        ["domain/printer@example.com", "domain/printer@example.com"],
        "the printer's paused lane was probed at once, not the account's"
    );
    assert!(h.files("queue").is_empty(), "delivered by the probe");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_senders_lane_without_mail_goes_when_its_probe_time_comes() {
    let h = printer_paused().await;
    let id = h.queued_id();
    // The operator deletes the mail; the mailbox stays paused until its probe time.
    assert_eq!(h.handle.withdraw(id, false).await, Some(true));
    h.settle().await;
    let status = h.handle.status().await.unwrap();
    assert!(status.pause.is_some(), "still paused before the probe time");
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
    h.settle().await;
    let status = h.handle.status().await.unwrap();
    let names: Vec<&str> = status.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["default", "domain"], "the printer's lane went");
    assert!(status.pause.is_none(), "nothing shows paused any more");
    assert_eq!(h.courier.calls(), 1, "no probe without mail");
    h.stop().await;
}

/// The settings a reload puts in force, with these accounts.
fn reloaded(accounts: Vec<AccountSettings>) -> Settings {
    Settings {
        policy: policy(),
        hold: false,
        bounce: crate::bounce::BounceTo::Nobody,
        hostname: "relay.test".into(),
        accounts,
        metrics: Default::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_senders_mail_waits_while_its_account_is_gone_and_goes_as_the_sender_when_it_is_back() {
    let domain = || AccountSettings {
        per_sender: true,
        ..account("domain", 2, None)
    };
    let messages: Vec<(&str, Option<&str>, &[&str], SystemTime)> =
        vec![("printer@example.com", Some("domain"), &["b@x.test"], now())];
    let h = start_from(
        &messages,
        vec![account("default", 1, None), domain()],
        false,
        Duration::ZERO,
    )
    .await;
    // The printer's mailbox is refused; while it waits, the account is taken out.
    h.courier.then_for(
        "domain/printer@example.com",
        Answer::Outcomes(vec![RecipientOutcome::Deferred("451 4.3.0 later".into())]),
    );
    h.settle().await;
    h.handle
        .reload(reloaded(vec![account("default", 1, None)]), vec![]);
    h.settle().await;
    let status = h.handle.status().await.unwrap();
    assert_eq!(status.missing.len(), 1, "{:?}", status.missing);

    // Back: the message goes through the printer's own mailbox, not the account's.
    h.handle.reload(
        reloaded(vec![account("default", 1, None), domain()]),
        vec![],
    );
    tokio::time::sleep(MAX).await;
    h.settle().await;
    assert_eq!(
        h.courier.accounts(),
        ["domain/printer@example.com", "domain/printer@example.com"]
    );
    assert!(h.files("queue").is_empty(), "delivered");
    assert!(h.handle.status().await.unwrap().missing.is_empty());
    h.stop().await;
}
