use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;

mod accounts;
mod cluster;
mod service_account;
use crate::secret::SecretSource;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("relay.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The inline password of a config (what `upstream.password` or the environment set).
fn password(cfg: &Config) -> String {
    match &cfg.default_account().upstream.auth {
        AuthConfig::Password(SecretSource::Inline(s)) => s.expose().to_owned(),
        other => panic!("not an inline password: {other:?}"),
    }
}

/// The OAuth2 settings of a config.
fn oauth2(cfg: &Config) -> &OAuth2Config {
    match &cfg.default_account().upstream.auth {
        AuthConfig::XOAuth2(o) => o,
        other => panic!("not xoauth2: {other:?}"),
    }
}

const MINIMAL: &str = "[upstream]\nusername = \"me@gmail.com\"\npassword = \"pw\"\n";

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    load_with_env(&write(dir.path(), text), env(&[]))
}

fn invalid_key(text: &str) -> (String, String) {
    match load_text(text) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[test]
fn the_sample_config_is_valid_with_a_password_from_the_environment() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.toml");
    let cfg = load_with_env(
        &sample,
        env(&[("GMAIL_RELAY__UPSTREAM__PASSWORD", "abcd efgh ijkl mnop")]),
    )
    .unwrap();
    assert_eq!(cfg.listen.addrs, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert!(
        cfg.listen.addrs[0].port() > 1024,
        "sample must run as non-root"
    );
    assert_eq!(cfg.default_account().upstream.host, "smtp.gmail.com");
    assert_eq!(cfg.default_account().upstream.port, 587);
    assert_eq!(cfg.default_account().upstream.tls, TlsMode::StartTls);
    assert_eq!(password(&cfg), "abcd efgh ijkl mnop");
    assert_eq!(cfg.queue.dir, sample.parent().unwrap().join("spool"));
}

#[test]
fn defaults_are_the_documented_ones() {
    let cfg = load_text(MINIMAL).unwrap();
    assert_eq!(cfg.listen.max_message_size, 35_880_529);
    assert_eq!(cfg.listen.max_recipients, 1000);
    assert_eq!(cfg.listen.allowed_networks.len(), 2);
    assert_eq!(cfg.queue.retry_min, Duration::from_secs(60));
    assert_eq!(cfg.queue.retry_max, Duration::from_secs(3600));
    assert_eq!(cfg.queue.max_age, Duration::from_secs(5 * 86400));
    assert_eq!(cfg.queue.dir, PathBuf::from("/var/spool/gmail-relay"));
    assert_eq!(cfg.default_account().upstream.max_connections, 2);
    assert!(!cfg.delivery.hold);
}

#[test]
fn implicit_tls_defaults_to_port_465() {
    let cfg = load_text(&format!("{MINIMAL}tls = \"implicit\"\n")).unwrap();
    assert_eq!(cfg.default_account().upstream.tls, TlsMode::Implicit);
    assert_eq!(cfg.default_account().upstream.port, 465);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let err = load_text(&format!("{MINIMAL}\n[listen]\nmax_mesage_size = 10\n")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(
        text.contains(
            "unknown key `listen.max_mesage_size`; did you mean `listen.max_message_size`?"
        ),
        "{text}"
    );

    let err = load_text(&format!("{MINIMAL}\n[lsten]\naddrs = []\n")).unwrap_err();
    assert!(
        err.to_string().contains(
            "unknown key `lsten`; did you mean `listen`? the sections are: listen, queue,"
        ),
        "{err}"
    );

    let err = load_text(&format!(
        "{MINIMAL}\n[accounts.billing]\nusername = \"b@example.com\"\nsender = []\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "unknown key `accounts.billing.sender`; did you mean `accounts.billing.senders`?"
        ),
        "{err}"
    );
}

#[test]
fn unknown_keys_from_the_environment_are_rejected_too() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_with_env(
        &write(dir.path(), MINIMAL),
        env(&[("GMAIL_RELAY__UPSTREAM__PASWORD", "x")]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "unknown key `upstream.pasword` (set by the environment variable \
             GMAIL_RELAY__UPSTREAM__PASWORD); did you mean `upstream.password`?"
        ),
        "{err}"
    );
}

#[test]
fn bad_cidr_names_the_key_and_index() {
    let (key, msg) = invalid_key(&format!(
        "{MINIMAL}[listen]\nallowed_networks = [\"127.0.0.0/8\", \"10.0.0/8\"]\n"
    ));
    assert_eq!(key, "listen.allowed_networks[1]");
    assert!(msg.contains("10.0.0/8"), "{msg}");

    let (key, msg) = invalid_key(&format!(
        "{MINIMAL}[listen]\nallowed_networks = [\"10.1.2.3/8\"]\n"
    ));
    assert_eq!(key, "listen.allowed_networks[0]");
    assert!(msg.contains("10.0.0.0/8"), "suggests the network: {msg}");
}

#[test]
fn single_addresses_are_networks_of_one() {
    let cfg = load_text(&format!(
        "{MINIMAL}[listen]\nallowed_networks = [\"192.168.1.20\", \"::1\"]\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.listen.allowed_networks[0].to_string(),
        "192.168.1.20/32"
    );
    assert_eq!(cfg.listen.allowed_networks[1].to_string(), "::1/128");
}

#[test]
fn missing_password_names_the_key_and_the_ways_to_set_it() {
    let (key, msg) = invalid_key("[upstream]\nusername = \"me@gmail.com\"\n");
    assert_eq!(key, "upstream.password");
    assert!(msg.contains("password_file") && msg.contains("GMAIL_RELAY__UPSTREAM__PASSWORD"));
}

#[test]
fn password_file_is_relative_to_the_config_and_read_later() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(
            dir.path(),
            "[upstream]\nusername = \"me@gmail.com\"\npassword_file = \"pw\"\n",
        ),
        env(&[]),
    )
    .unwrap();
    assert_eq!(
        cfg.default_account().upstream.auth,
        AuthConfig::Password(SecretSource::File(dir.path().join("pw"))),
        "a reference: the file need not exist until the daemon prepares the credentials"
    );
}

#[test]
fn tls_must_be_one_of_two_values() {
    let (key, msg) = invalid_key(&format!("{MINIMAL}tls = \"ssl\"\n"));
    assert_eq!(key, "upstream.tls");
    assert!(
        msg.contains("starttls") && msg.contains("implicit"),
        "{msg}"
    );
}

#[test]
fn missing_username_is_an_error() {
    let (key, _) = invalid_key("[upstream]\npassword = \"pw\"\n");
    assert_eq!(key, "upstream.username");
}

#[test]
fn bad_durations_and_addresses_name_their_keys() {
    let (key, _) = invalid_key(&format!("{MINIMAL}[queue]\nretry_min = \"soon\"\n"));
    assert_eq!(key, "queue.retry_min");
    let (key, _) = invalid_key(&format!("{MINIMAL}[queue]\nretry_min = \"2h\"\n"));
    assert_eq!(key, "queue.retry_max");
    let (key, _) = invalid_key(&format!("{MINIMAL}[listen]\naddrs = [\"localhost:25\"]\n"));
    assert_eq!(key, "listen.addrs[0]");
    let (key, _) = invalid_key(&format!("{MINIMAL}[listen]\nmax_message_size = 0\n"));
    assert_eq!(key, "listen.max_message_size");
}

#[test]
fn wrong_types_name_the_key() {
    let err = load_text(&format!("{MINIMAL}port = \"submission\"\n")).unwrap_err();
    assert!(err.to_string().contains("upstream.port"), "{err}");
}

#[test]
fn environment_overrides_the_file_including_lists() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), MINIMAL),
        env(&[
            ("GMAIL_RELAY__UPSTREAM__PASSWORD", "from-env"),
            ("GMAIL_RELAY__UPSTREAM__PORT", "2587"),
            ("GMAIL_RELAY__LISTEN__ADDRS", "127.0.0.1:2600,[::1]:2600"),
            ("GMAIL_RELAY__QUEUE__RETRY_MIN", "30s"),
        ]),
    )
    .unwrap();
    assert_eq!(password(&cfg), "from-env");
    assert_eq!(cfg.default_account().upstream.port, 2587);
    assert_eq!(cfg.listen.addrs.len(), 2);
    assert_eq!(cfg.queue.retry_min, Duration::from_secs(30));
}

#[test]
fn a_password_that_looks_like_a_number_stays_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), "[upstream]\nusername = \"me@gmail.com\"\n"),
        env(&[("GMAIL_RELAY__UPSTREAM__PASSWORD", "1e5")]),
    )
    .unwrap();
    assert_eq!(password(&cfg), "1e5");
}

#[test]
fn config_debug_output_has_no_password() {
    let cfg = load_text("[upstream]\nusername = \"me@gmail.com\"\npassword = \"hunter2hunter2\"\n")
        .unwrap();
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn missing_file_is_a_read_error_naming_it() {
    let err = load_with_env(Path::new("/nonexistent/relay.toml"), env(&[])).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/relay.toml"));
}

#[test]
fn any_network_on_a_public_listener_needs_the_danger_switch() {
    let open = format!(
        "{MINIMAL}[listen]\naddrs = [\"0.0.0.0:25\"]\nallowed_networks = [\"0.0.0.0/0\"]\n"
    );
    let (key, msg) = invalid_key(&open);
    assert_eq!(key, "listen.allowed_networks");
    assert!(
        msg.contains("danger_allow_any_network") && msg.contains("0.0.0.0:25"),
        "{msg}"
    );

    let six = format!("{MINIMAL}[listen]\naddrs = [\"[::]:25\"]\nallowed_networks = [\"::/0\"]\n");
    assert_eq!(invalid_key(&six).0, "listen.allowed_networks");

    let allowed = format!("{open}danger_allow_any_network = true\n");
    let cfg = load_text(&allowed).unwrap();
    assert!(cfg.listen.exposure().contains("0.0.0.0:25"));

    // On loopback only, /0 reaches nobody outside the machine.
    let local = format!("{MINIMAL}[listen]\nallowed_networks = [\"0.0.0.0/0\"]\n");
    assert_eq!(
        load_text(&local).unwrap().listen.exposure(),
        "loopback only"
    );
}

#[test]
fn allowlist_entries_are_checked_and_normalised() {
    let cfg = load_text(&format!(
        "{MINIMAL}[listen]\nallowed_senders = [\"Printer@LAN.test\", \"example.com\", \"@x.test\", \"<>\"]\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.listen.allowed_senders,
        ["printer@lan.test", "@example.com", "@x.test", "<>"]
    );
    let (key, _) = invalid_key(&format!(
        "{MINIMAL}[listen]\nallowed_recipients = [\"<>\"]\n"
    ));
    assert_eq!(key, "listen.allowed_recipients[0]");
    let (key, _) = invalid_key(&format!(
        "{MINIMAL}[listen]\nallowed_senders = [\"a b@c\"]\n"
    ));
    assert_eq!(key, "listen.allowed_senders[0]");
}

const XOAUTH2: &str = "[upstream]\nusername = \"me@gmail.com\"\nauth = \"xoauth2\"\n[upstream.oauth2]\nclient_id = \"id.apps.googleusercontent.com\"\nrefresh_token_file = \"refresh-token\"\n";

#[test]
fn xoauth2_needs_no_password_and_refuses_one() {
    let cfg = load_text(XOAUTH2).unwrap();
    let o = oauth2(&cfg);
    assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(o.refresh_before, Duration::from_secs(300));

    let (key, msg) =
        invalid_key(&XOAUTH2.replace("auth = \"xoauth2\"", "auth = \"xoauth2\"\npassword = \"x\""));
    assert_eq!(key, "upstream.password");
    assert!(msg.contains("never uses a password"), "{msg}");
}

#[test]
fn xoauth2_keys_are_checked() {
    let (key, _) =
        invalid_key(&XOAUTH2.replace("client_id = \"id.apps.googleusercontent.com\"\n", ""));
    assert_eq!(key, "upstream.oauth2.client_id");
    let (key, _) = invalid_key(&XOAUTH2.replace("refresh_token_file = \"refresh-token\"\n", ""));
    assert_eq!(key, "upstream.oauth2.refresh_token_file");
    let (key, _) = invalid_key(&format!(
        "{XOAUTH2}token_url = \"http://example.com/token\"\n"
    ));
    assert_eq!(
        key, "upstream.oauth2.token_url",
        "plain http only on loopback"
    );
    assert!(
        load_text(&format!(
            "{XOAUTH2}token_url = \"http://127.0.0.1:8080/token\"\n"
        ))
        .is_ok()
    );
    let (key, _) = invalid_key("[upstream]\nusername = \"me@gmail.com\"\nauth = \"xoauth2\"\n");
    assert_eq!(key, "upstream.oauth2");
    let (key, _) = invalid_key(&format!("{MINIMAL}auth = \"oauth\"\n"));
    assert_eq!(key, "upstream.auth");
    let err = load_text(&format!("{XOAUTH2}client_sercet = \"x\"\n")).unwrap_err();
    assert!(
        err.to_string().contains("client_sercet"),
        "unknown keys in [upstream.oauth2] too"
    );
}

#[test]
fn oauth2_keys_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), "[upstream]\nusername = \"me@gmail.com\"\n"),
        env(&[
            ("GMAIL_RELAY__UPSTREAM__AUTH", "xoauth2"),
            ("GMAIL_RELAY__UPSTREAM__OAUTH2__CLIENT_ID", "cid"),
            ("GMAIL_RELAY__UPSTREAM__OAUTH2__REFRESH_TOKEN", "1//refresh"),
        ]),
    )
    .unwrap();
    assert_eq!(oauth2(&cfg).client_id, "cid");
    assert!(!format!("{cfg:?}").contains("1//refresh"));
}

#[test]
fn a_size_limit_without_room_for_the_relays_headers_is_refused_with_gmail() {
    let (key, msg) = invalid_key(&format!("{MINIMAL}[listen]\nmax_message_size = 35882577\n"));
    assert_eq!(key, "listen.max_message_size");
    assert!(msg.contains("at most 35880529"), "{msg}");
    assert!(
        load_text(&format!(
            "{MINIMAL}host = \"mail.example.net\"\n[listen]\nmax_message_size = 35882577\n"
        ))
        .is_ok(),
        "another upstream's SIZE is its own business"
    );
}
