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
