//! The binary's contract: `check` exits 0 for a valid config and 2 for an invalid one, with an
//! error that names the key.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gmail-relay"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("GMAIL_RELAY") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap(), stderr)
}

const VALID: &str = "[upstream]\nusername = \"me@gmail.com\"\npassword = \"app password\"\n";

#[test]
fn a_valid_config_checks_out() {
    let (code, stderr) = check(VALID);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_sample_config_checks_out_with_a_password_from_the_environment() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.toml");
    let out = run(
        &["check", "--config", sample.to_str().unwrap()],
        &[("GMAIL_RELAY__UPSTREAM__PASSWORD", "abcd efgh ijkl mnop")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("smtp.gmail.com:587") && !stdout.contains("abcd efgh"),
        "{stdout}"
    );
}

#[test]
fn bad_configs_exit_2_and_name_the_key() {
    let cases = [
        (
            format!("{VALID}\n[listen]\nmax_mesage_size = 10\n"),
            "max_mesage_size",
        ),
        (
            format!("{VALID}\n[listen]\nallowed_networks = [\"10.0.0/8\"]\n"),
            "listen.allowed_networks[0]",
        ),
        (
            "[upstream]\nusername = \"me@gmail.com\"\n".to_string(),
            "upstream.password",
        ),
        (format!("{VALID}tls = \"ssl\"\n"), "upstream.tls"),
        (
            format!("{VALID}ca_file = \"/nonexistent/ca.pem\"\n"),
            "upstream.ca_file",
        ),
        ("[upstream\n".to_string(), "relay.toml"),
        (
            format!(
                "{VALID}\n[listen]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n"
            ),
            "listen.tls_cert",
        ),
        (
            format!("{VALID}\n[listen]\ntls_cert = \"c.pem\"\n"),
            "listen.tls_key",
        ),
        (
            format!("{VALID}\n[listen]\nimplicit_tls_addrs = [\"127.0.0.1:465\"]\n"),
            "listen.implicit_tls_addrs",
        ),
    ];
    for (text, key) in cases {
        let (code, stderr) = check(&text);
        assert_eq!(code, 2, "{text:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{text:?}: error must name {key}: {stderr}"
        );
    }
}

#[test]
fn serve_with_a_bad_config_exits_2_before_doing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!("{VALID}tls = \"none\"\n[queue]\ndir = \"spool\"\n"),
    )
    .unwrap();
    let out = run(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.tls"));
    assert!(
        !dir.path().join("spool").exists(),
        "no spool created for a config that is refused"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = run(&["check", "--config", "/nonexistent/relay.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/relay.toml"));
}

#[test]
fn hash_password_prints_a_hash_that_verifies() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gmail-relay"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"printer-secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let entry = format!("printer:{hash}");
    let users = gmail_relay::auth::Users::parse([entry.as_str()]).unwrap();
    assert!(users.verify("printer", b"printer-secret"));
}

#[test]
fn a_bad_users_file_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users"),
        "# users\nok:$2b$04$abcdefghijklmnopqrstuuO2Fj7bWQ0F7d8uy8bQ3Vm1e4yTn4W.S\nbroken-line\n",
    )
    .unwrap();
    let (code, stderr) = check(&format!(
        "{VALID}\n[listen]\nusers_file = \"{}\"\n",
        dir.path().join("users").display()
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("listen.users_file") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn the_systemd_and_container_configs_check_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let systemd = run(
        &[
            "check",
            "--config",
            root.join("systemd/relay.toml").to_str().unwrap(),
        ],
        &[("GMAIL_RELAY__UPSTREAM__PASSWORD", "abcd efgh ijkl mnop")],
    );
    let stdout = String::from_utf8_lossy(&systemd.stdout);
    assert_eq!(systemd.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("127.0.0.1:25") && stdout.contains("/var/lib/gmail-relay"));
    // The image's config with what docker-compose.yml sets in the environment.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gmail-password");
    std::fs::write(&secret, "abcd efgh ijkl mnop").unwrap();
    let container = run(
        &[
            "check",
            "--config",
            root.join("docker/relay.toml").to_str().unwrap(),
        ],
        &[
            ("GMAIL_RELAY__UPSTREAM__USERNAME", "you@gmail.com"),
            (
                "GMAIL_RELAY__UPSTREAM__PASSWORD_FILE",
                secret.to_str().unwrap(),
            ),
            ("GMAIL_RELAY__LISTEN__ALLOWED_NETWORKS", "172.30.0.0/24"),
        ],
    );
    let stdout = String::from_utf8_lossy(&container.stdout);
    assert_eq!(
        container.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&container.stderr)
    );
    assert!(stdout.contains("0.0.0.0:2525") && stdout.contains("172.30.0.0/24"));
}

/// What `docker/replicas-compose.yml` sets in a replica's environment loads, and `check` says
/// whether the shared Redis answers (here it does not: a closed loopback port stands in for
/// `valkey:6379`, which would need DNS) without failing, since a replica runs without it.
#[test]
fn the_replicas_compose_example_checks_out_and_reports_its_redis() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker/replicas-compose.yml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gmail-password");
    std::fs::write(&secret, "abcd efgh ijkl mnop").unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = format!("redis://127.0.0.1:{closed}/0");
    let mut env: Vec<(String, String)> = compose
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.starts_with("GMAIL_RELAY__"))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    assert!(env.len() >= 6, "the example's environment: {env:?}");
    for (k, v) in &mut env {
        match k.as_str() {
            "GMAIL_RELAY__UPSTREAM__PASSWORD_FILE" => *v = secret.to_str().unwrap().to_owned(),
            "GMAIL_RELAY__CLUSTER__REDIS_URL" => *v = redis.clone(),
            _ => {}
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = root.join("docker/relay.toml");
    let out = run(&["check", "--config", config.to_str().unwrap()], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("cluster: Redis at {redis} cannot be reached")),
        "{stdout}"
    );
}

/// A `[cluster]` whose Redis password cannot be read is a configuration error for `check`
/// (exit 2, naming the key), even without `--upstream`: `serve` could not start with it.
#[test]
fn check_refuses_a_cluster_whose_password_file_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[upstream]\nusername = \"me@gmail.com\"\npassword = \"pw\"\n\
         [cluster]\nredis_url = \"redis://127.0.0.1:9/0\"\nreplicas = 2\n\
         redis_password_file = \"missing-redis-password\"\n",
    )
    .unwrap();
    let out = run(&["check", "--config", config.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster.redis_password_file") && stderr.contains("missing-redis-password"),
        "{stderr}"
    );
}
