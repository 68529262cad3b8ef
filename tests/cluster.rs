//! Replicas sharing one Gmail account through a real `redis-server` (`[cluster]`): one daily
//! budget for the pair, a pause found by one holding the other before it tries a login, the
//! fallback share while Redis is down and the return to the shared count, Redis losing its
//! data, and reservations racing on the last units.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::RedisServer;
use common::upstream::{FakeUpstream, Mode, PASSWORD, Script, USER};
use common::{TestRelay, WAIT, config_for, eventually, submit};
use gmail_relay::cluster::{Admission, Cluster, SharedAccount};
use gmail_relay::config::ClusterConfig;

const MSG: &[u8] =
    b"Subject: cluster\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <c@x>\r\n\r\nbody\r\n";

/// A replica named `name` of a relay for `up`'s account, sharing it through `redis`.
fn replica(up: &FakeUpstream, redis: &RedisServer, name: &str, upstream_extra: &str) -> String {
    format!(
        "{}\n[delivery]\nauth_pause_min = \"1s\"\nauth_pause_max = \"2s\"\nquota_pause = \"2s\"\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n\
         [cluster]\nredis_url = \"{}\"\nreplicas = 2\nreplica = \"{name}\"\n",
        config_for(up, upstream_extra),
        redis.url()
    )
}

async fn pair(
    up: &FakeUpstream,
    redis: &RedisServer,
    upstream_extra: &str,
) -> (TestRelay, TestRelay) {
    let env = || {
        HashMap::from([(
            "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        )])
    };
    let a =
        TestRelay::start_for_tools_with_env(&replica(up, redis, "a", upstream_extra), env()).await;
    let b =
        TestRelay::start_for_tools_with_env(&replica(up, redis, "b", upstream_extra), env()).await;
    (a, b)
}

/// Sends `a{i}@x.test` through `a` and `b{i}@x.test` through `b` for each `i`, alternating.
async fn send_each(a: &TestRelay, b: &TestRelay, range: std::ops::Range<u32>) {
    for i in range {
        send(a, &format!("a{i}@x.test")).await;
        send(b, &format!("b{i}@x.test")).await;
    }
}

/// How many messages submitted through `replica` ('a' or 'b') reached the upstream.
fn delivered_from(up: &FakeUpstream, replica: char) -> usize {
    up.messages()
        .iter()
        .filter(|m| m.to[0].starts_with(replica))
        .count()
}

async fn send(relay: &TestRelay, to: &str) {
    let reply = submit(relay.addr(), "app@example.com", &[to], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

#[tokio::test]
async fn two_replicas_share_one_daily_budget_across_restarts() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let (mut a, mut b) = pair(&up, &redis, "max_per_day = 10").await;
    send_each(&a, &b, 0..15).await;
    up.wait_for(10, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = |replica: char| delivered_from(&up, replica);
    println!(
        "delivered: {} (a: {}, b: {})",
        up.messages().len(),
        from('a'),
        from('b')
    );
    assert_eq!(
        up.messages().len(),
        10,
        "exactly the day's budget, for the pair"
    );
    assert_eq!(
        a.queued_ids().len() + b.queued_ids().len(),
        20,
        "the other 20 wait"
    );
    assert_eq!(a.health().await["accounts"]["default"]["cause"], "budget");
    for r in [&a, &b] {
        assert_eq!(
            r.metric("gmail_relay_cluster_redis_losses_total").await,
            "gmail_relay_cluster_redis_losses_total 0",
            "Redis was up all along"
        );
    }

    // Either replica restarting changes nothing: the count is in Redis.
    a.restart().await;
    b.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(up.messages().len(), 10);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_refused_login_on_one_replica_pauses_the_other_before_it_tries() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = FakeUpstream::start(Mode::StartTls, Script::refusing_logins()).await;
    let (mut a, mut b) = pair(&up, &redis, "").await;
    send(&a, "one@x.test").await;
    eventually("a's login refused", || up.record(|r| r.auth_attempts) >= 1).await;
    paused(&a, "credentials").await;
    assert_eq!(up.record(|r| r.auth_attempts), 1);
    send(&b, "two@x.test").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.record(|r| r.auth_attempts),
        1,
        "b held its mail without trying a login of its own"
    );
    let hb = b.health().await;
    println!("b: {hb}");
    assert_eq!(hb["accounts"]["default"]["cause"], "credentials");
    assert!(
        hb["accounts"]["default"]["reason"]
            .as_str()
            .unwrap()
            .contains("found by replica a"),
        "{hb}"
    );

    // The password is fixed at Gmail: one probe gets through, both send.
    up.script(|s| s.auth_replies.clear());
    up.wait_for(2, WAIT).await;
    assert!(
        up.record(|r| r.auth_attempts) <= 3,
        "the refused login, then one login per replica: {}",
        up.record(|r| r.auth_attempts)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_spent_quota_on_one_replica_holds_the_other_until_the_same_time() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = FakeUpstream::start(
        Mode::StartTls,
        Script {
            quota_users: [USER.to_owned()].into(),
            ..Script::default()
        },
    )
    .await;
    let (mut a, mut b) = pair(&up, &redis, "").await;
    send(&a, "one@x.test").await;
    eventually("a hit the quota", || up.message_attempts() >= 1).await;
    paused(&a, "quota").await;
    send(&b, "two@x.test").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        up.message_attempts(),
        1,
        "b did not send into the spent quota"
    );
    let (ha, hb) = (a.health().await, b.health().await);
    assert_eq!(ha["accounts"]["default"]["cause"], "quota");
    assert_eq!(hb["accounts"]["default"]["cause"], "quota");
    assert_eq!(
        ha["accounts"]["default"]["next_probe"], hb["accounts"]["default"]["next_probe"],
        "one pause, ending for both at the same time"
    );

    up.script(|s| s.quota_users.clear());
    up.wait_for(2, WAIT).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_redis_each_replica_sends_its_share_and_counts_it_when_redis_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let (mut a, mut b) = pair(&up, &redis, "max_per_day = 10").await;
    send_each(&a, &b, 0..2).await;
    up.wait_for(4, WAIT).await;
    // Let both replicas see the shared count (their heartbeat reads it).
    tokio::time::sleep(Duration::from_secs(6)).await;

    redis.stop();
    send_each(&a, &b, 2..12).await; // still accepted
    up.wait_for(10, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = |replica: char| delivered_from(&up, replica);
    println!("without Redis: a {}, b {}", from('a'), from('b'));
    assert_eq!(
        (from('a'), from('b')),
        (5, 5),
        "each sent its share of the 6 left: 3 more"
    );
    assert_eq!(
        a.metric("gmail_relay_cluster_redis_up").await,
        "gmail_relay_cluster_redis_up 0"
    );

    // Redis is back, empty (no persistence): the replicas put back what they sent, and the
    // day's budget stays spent.
    redis.restart();
    for r in [&a, &b] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while r.metric("gmail_relay_cluster_redis_up").await != "gmail_relay_cluster_redis_up 1" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a replica never saw Redis again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    send(&a, "late-a@x.test").await;
    send(&b, "late-b@x.test").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        up.messages().len(),
        10,
        "nothing over the budget after Redis lost its data"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn reservations_racing_on_the_last_units_never_overspend() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut replicas = Vec::new();
    for i in 0..8 {
        replicas.push(client(&redis.url(), "race", &format!("r{i}"), None));
    }
    let mut racing = Vec::new();
    for cluster in &replicas {
        for _ in 0..3 {
            let cluster = cluster.clone();
            racing.push(tokio::spawn(
                async move { cluster.admit("default", 1).await },
            ));
        }
    }
    let mut granted = 0;
    for task in racing {
        match task.await.unwrap() {
            Admission::Go(ticket) => {
                granted += 1;
                drop(ticket);
            }
            Admission::Hold(pause) => assert!(pause.until.is_some(), "{pause:?}"),
        }
    }
    assert_eq!(
        granted, 5,
        "24 reservations from 8 replicas, 5 units: 5 granted"
    );
}

/// Waits until `relay` shows its default account paused for `cause`. A shared pause is
/// published before the lane that found it pauses, so from then on Redis holds it.
async fn paused(relay: &TestRelay, cause: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.health().await["accounts"]["default"]["cause"] != cause {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paused for {cause}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A replica's cluster client used directly (no relay around it), sharing one account,
/// `shared@example.com`, with a day's budget of 5.
fn client(url: &str, prefix: &str, replica: &str, ca_file: Option<std::path::PathBuf>) -> Cluster {
    let cfg = ClusterConfig {
        redis_url: url.to_owned(),
        password: None,
        key_prefix: prefix.to_owned(),
        replicas: 1,
        replica: replica.to_owned(),
        ca_file,
    };
    let cluster = Cluster::new(&cfg, policy(), gmail_relay::observe::Metrics::new()).unwrap();
    cluster.set_accounts(
        vec![SharedAccount {
            name: "default".into(),
            key: "shared@example.com".into(),
            per_minute: None,
            per_day: Some(5),
        }],
        &HashMap::new(),
    );
    cluster
}

fn policy() -> gmail_relay::scheduler::RetryPolicy {
    gmail_relay::scheduler::RetryPolicy {
        min: Duration::from_secs(60),
        max: Duration::from_secs(3600),
        max_age: Duration::from_secs(86_400),
        auth_pause_min: Duration::from_secs(60),
        auth_pause_max: Duration::from_secs(1800),
        quota_pause: Duration::from_secs(3600),
    }
}

/// Redis over TLS with a private CA (`rediss://` and `cluster.ca_file`): the budget is shared
/// as over plain TCP (2 of 3 delivered; the fallback share would be 1), and a client that
/// trusts another CA is refused at the handshake and says so.
#[tokio::test]
async fn a_replica_reaches_redis_over_tls_trusting_its_ca_alone() {
    let certs = common::certs::generate();
    let Some(redis) = RedisServer::start_tls(&certs) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("redis-ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let up = FakeUpstream::start(Mode::StartTls, Script::default()).await;
    let cfg = format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:0\"\n\
         [cluster]\nredis_url = \"{url}\"\nreplicas = 2\nreplica = \"t\"\nca_file = \"{}\"\n",
        config_for(&up, "max_per_day = 2"),
        ca.display()
    );
    let env = HashMap::from([(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
        PASSWORD.to_owned(),
    )]);
    let mut relay = TestRelay::start_for_tools_with_env(&cfg, env).await;
    for i in 0..3 {
        send(&relay, &format!("t{i}@x.test")).await;
    }
    up.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        up.messages().len(),
        2,
        "the shared budget, counted over TLS"
    );
    assert_eq!(
        relay.metric("gmail_relay_cluster_redis_up").await,
        "gmail_relay_cluster_redis_up 1"
    );
    relay.stop().await;

    let other = common::certs::generate();
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&wrong, &other.ca_pem).unwrap();
    let cluster = client(&url, "tls", "x", Some(wrong));
    let said = cluster.check().await.expect_err("an unknown CA is refused");
    assert!(
        said.contains(&url) && said.contains("cannot be reached"),
        "{said}"
    );
    println!("with another CA: {said}");
}

/// The day's count kept beside the budget's set agrees with the set: a reservation settled
/// with nothing delivered frees its unit, and a counter lost from Redis (evicted) is rebuilt
/// from the set rather than read as zero.
#[tokio::test]
async fn the_shared_day_count_survives_settling_and_a_lost_counter() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = client(&redis.url(), "count", "r", None);
    let go = |a: Admission| match a {
        Admission::Go(ticket) => ticket,
        Admission::Hold(pause) => panic!("held: {pause:?}"),
    };
    let first = go(cluster.admit("default", 1).await);
    cluster.settle(first, 0).await; // refused: the unit is free again
    for _ in 0..5 {
        let ticket = go(cluster.admit("default", 1).await);
        cluster.settle(ticket, 1).await;
    }
    assert!(
        matches!(cluster.admit("default", 1).await, Admission::Hold(_)),
        "5 of 5 sent"
    );

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let total: u32 = redis::cmd("GET")
        .arg("count:total:shared@example.com")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, 5);
    let _: () = redis::cmd("DEL")
        .arg("count:total:shared@example.com")
        .query_async(&mut conn)
        .await
        .unwrap();
    match cluster.admit("default", 1).await {
        Admission::Hold(pause) => assert!(pause.reason.contains("5 today"), "{}", pause.reason),
        Admission::Go(_) => panic!("a lost counter read as zero"),
    }
}
