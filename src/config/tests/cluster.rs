//! `[cluster]`: the Redis URL (scheme, no password in it), the password as a secret reference,
//! the replica count the fallback share divides by, and the replica's name.

use super::*;

const CLUSTER: &str = "[upstream]\nusername = \"me@gmail.com\"\npassword = \"pw\"\n\
     [listen]\nhostname = \"relay-a.example.com\"\n\
     [cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\nreplicas = 4\n";

#[test]
fn without_a_cluster_section_there_is_no_cluster() {
    assert_eq!(load_text(MINIMAL).unwrap().cluster, None);
}

#[test]
fn a_cluster_takes_its_defaults_and_names_the_replica_after_the_host() {
    let cfg = load_text(CLUSTER).unwrap();
    let cluster = cfg.cluster.expect("[cluster] is set");
    assert_eq!(cluster.redis_url, "redis://127.0.0.1:6379/0");
    assert_eq!(cluster.replicas, 4);
    assert_eq!(cluster.key_prefix, "gmail-relay");
    assert_eq!(cluster.replica, "relay-a.example.com");
    assert_eq!(cluster.password, None);

    let cfg = load_text(&format!(
        "{CLUSTER}key_prefix = \"fleet2\"\nreplica = \"pod-7\"\n\
         redis_password_file = \"secrets/redis\"\n"
    ))
    .unwrap();
    let cluster = cfg.cluster.unwrap();
    assert_eq!(cluster.key_prefix, "fleet2");
    assert_eq!(cluster.replica, "pod-7");
    match cluster.password {
        Some(SecretSource::File(p)) => assert!(p.ends_with("secrets/redis"), "{p:?}"),
        other => panic!("expected a password file, got {other:?}"),
    }
}

#[test]
fn the_redis_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), CLUSTER),
        env(&[("GMAIL_RELAY__CLUSTER__REDIS_PASSWORD", "s3cret")]),
    )
    .unwrap();
    let cluster = cfg.cluster.unwrap();
    match &cluster.password {
        Some(SecretSource::Inline(s)) => assert_eq!(s.expose(), "s3cret"),
        other => panic!("expected an inline password, got {other:?}"),
    }
    assert!(
        !format!("{cluster:?}").contains("s3cret"),
        "the password never shows in Debug"
    );
}

#[test]
fn a_bad_cluster_section_names_the_key_and_what_to_do() {
    let cases: [(&str, &str, &str); 8] = [
        ("replicas = 4\n", "", "cluster.replicas"),
        ("replicas = 4\n", "replicas = 0\n", "cluster.replicas"),
        (
            "redis_url = \"redis://127.0.0.1:6379/0\"\n",
            "",
            "cluster.redis_url",
        ),
        (
            "redis://127.0.0.1:6379/0",
            "http://127.0.0.1:6379/0",
            "cluster.redis_url",
        ),
        (
            "redis://127.0.0.1:6379/0",
            "redis://:hunter2@127.0.0.1:6379/0",
            "cluster.redis_url",
        ),
        ("redis://127.0.0.1:6379/0", "not a url", "cluster.redis_url"),
        (
            "replicas = 4\n",
            "replicas = 4\nredis_password = \"a\"\nredis_password_file = \"b\"\n",
            "cluster.redis_password",
        ),
        (
            "replicas = 4\n",
            "replicas = 4\nkey_prefix = \"two words\"\n",
            "cluster.key_prefix",
        ),
    ];
    for (from, to, want) in cases {
        let (key, msg) = invalid_key(&CLUSTER.replace(from, to));
        assert_eq!(key, want, "{from:?} -> {to:?}: {msg}");
        assert!(
            !msg.contains("hunter2"),
            "a password is never echoed: {msg}"
        );
    }
    let (key, msg) = invalid_key(&format!("{CLUSTER}ca_file = \"ca.pem\"\n"));
    assert_eq!(key, "cluster.ca_file");
    assert!(msg.contains("rediss://"), "a CA is for TLS: {msg}");
    let (key, msg) = invalid_key(
        &format!("{CLUSTER}ca_file = \"/nonexistent/ca.pem\"\n").replace("redis://", "rediss://"),
    );
    assert_eq!(key, "cluster.ca_file");
    assert!(msg.contains("/nonexistent/ca.pem"), "names the file: {msg}");
    let (_, msg) = invalid_key(&CLUSTER.replace("replicas = 4\n", ""));
    assert!(msg.contains("share"), "says why the count matters: {msg}");
    let (_, msg) = invalid_key(&CLUSTER.replace(
        "redis://127.0.0.1:6379/0",
        "redis://:hunter2@127.0.0.1:6379/0",
    ));
    assert!(
        msg.contains("redis_password_file"),
        "says where it goes: {msg}"
    );
}
