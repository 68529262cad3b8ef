//! `auth = "service-account"`: the `service_account` table, the mailbox it acts as (`subject`
//! or `username`), and `impersonate_sender`, which only an account of its own may set.

use super::*;

const FIXED: &str = "[upstream]\nauth = \"service-account\"\n\
     [upstream.service_account]\nkey_file = \"sa.json\"\nsubject = \"alerts@example.com\"\n";

const PER_SENDER: &str = "[upstream]\nusername = \"relay@example.com\"\npassword = \"pw\"\n\
     [accounts.domain]\nauth = \"service-account\"\nimpersonate_sender = true\n\
     senders = [\"@example.com\"]\n\
     [accounts.domain.service_account]\nkey_file = \"/etc/gmail-relay/sa.json\"\n";

fn service_account(upstream: &UpstreamConfig) -> &ServiceAccountConfig {
    match &upstream.auth {
        AuthConfig::ServiceAccount(sa) => sa,
        other => panic!("not a service account: {other:?}"),
    }
}

#[test]
fn the_subject_is_the_login_and_the_key_file_is_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(&write(dir.path(), FIXED), env(&[])).unwrap();
    let up = &cfg.default_account().upstream;
    assert_eq!(
        up.username, "alerts@example.com",
        "username defaults to subject"
    );
    assert!(!up.impersonate_sender);
    let sa = service_account(up);
    assert_eq!(sa.key_file, dir.path().join("sa.json"));
    assert_eq!(sa.token_url, None, "the key file's token_uri");
    assert_eq!(sa.section, "upstream.service_account");

    // username alone works too; both must agree.
    let cfg = load_text(
        &FIXED
            .replace("subject = \"alerts@example.com\"\n", "")
            .replace(
                "[upstream]\n",
                "[upstream]\nusername = \"alerts@example.com\"\n",
            ),
    )
    .unwrap();
    assert_eq!(
        cfg.default_account().upstream.username,
        "alerts@example.com"
    );
    let (key, msg) = invalid_key(&FIXED.replace(
        "[upstream]\n",
        "[upstream]\nusername = \"other@example.com\"\n",
    ));
    assert_eq!(key, "upstream.service_account.subject");
    assert!(msg.contains("other@example.com"), "{msg}");

    // Neither: the mailbox is unknown.
    let (key, msg) = invalid_key(&FIXED.replace("subject = \"alerts@example.com\"\n", ""));
    assert_eq!(key, "upstream.service_account.subject");
    assert!(msg.contains("impersonate_sender = true"), "{msg}");
}

#[test]
fn the_key_file_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), PER_SENDER),
        env(&[(
            "GMAIL_RELAY__ACCOUNTS__DOMAIN__SERVICE_ACCOUNT__KEY_FILE",
            "/run/credentials/gmail-relay/sa.json",
        )]),
    )
    .unwrap();
    let domain = cfg.account("domain").unwrap();
    assert_eq!(
        service_account(&domain.upstream).key_file,
        Path::new("/run/credentials/gmail-relay/sa.json")
    );
    assert!(domain.upstream.impersonate_sender);
    assert_eq!(domain.upstream.username, "", "no mailbox of its own");
    assert_eq!(domain.upstream.label(), "each sender's own mailbox");
}

#[test]
fn mistakes_name_their_key_and_the_fix() {
    let cases = [
        (
            FIXED.replace("[upstream.service_account]\nkey_file = \"sa.json\"\nsubject = \"alerts@example.com\"\n", "")
                .replace("[upstream]\n", "[upstream]\nusername = \"a@example.com\"\n"),
            "upstream.service_account",
            "is missing",
        ),
        (
            FIXED.replace("key_file = \"sa.json\"\n", ""),
            "upstream.service_account.key_file",
            "JSON key file",
        ),
        (
            FIXED.replace("alerts@example.com", "alerts"),
            "upstream.service_account.subject",
            "not a mailbox address",
        ),
        (
            format!("{FIXED}token_url = \"http://oauth2.example.com/token\"\n"),
            "upstream.service_account.token_url",
            "must be https://",
        ),
        (
            FIXED.replace("[upstream]\n", "[upstream]\npassword = \"pw\"\n"),
            "upstream.password",
            "service account's tokens",
        ),
        (
            FIXED.replace("auth = \"service-account\"\n", "username = \"a@example.com\"\npassword = \"pw\"\n"),
            "upstream.auth",
            "set upstream.auth = \"service-account\"",
        ),
        (
            // Every sender as itself, on the default account (which also carries <>).
            FIXED.replace("[upstream]\n", "[upstream]\nimpersonate_sender = true\n"),
            "upstream.impersonate_sender",
            "[accounts.NAME]",
        ),
        (
            PER_SENDER.replace("auth = \"service-account\"\n", "password = \"pw2\"\nusername = \"d@example.com\"\n")
                .replace("[accounts.domain.service_account]\nkey_file = \"/etc/gmail-relay/sa.json\"\n", ""),
            "accounts.domain.impersonate_sender",
            "needs accounts.domain.auth = \"service-account\"",
        ),
        (
            PER_SENDER.replace("senders = [\"@example.com\"]\n", "senders = [\"*\"]\n"),
            "accounts.domain.senders",
            "* is not allowed",
        ),
        (
            // A key file under another kind of login would be ignored.
            FIXED
                .replace("auth = \"service-account\"", "auth = \"xoauth2\"")
                .replace("[upstream]\n", "[upstream]\nusername = \"alerts@example.com\"\n"),
            "upstream.auth",
            "set upstream.auth = \"service-account\" to use it",
        ),
        (
            FIXED
                .replace("auth = \"service-account\"", "auth = \"none\"")
                .replace("[upstream]\n", "[upstream]\nusername = \"alerts@example.com\"\n"),
            "upstream.auth",
            "is \"none\" but [upstream.service_account] is set",
        ),
    ];
    for (text, want_key, want) in cases {
        let (key, msg) = invalid_key(&text);
        assert_eq!(key, want_key, "{text}\n{msg}");
        assert!(msg.contains(want), "{want_key}: {msg}");
    }
}
