//! `[accounts.NAME]`: inheritance from `[upstream]` (never the identity), names, sender
//! patterns, failover lists, per-account budgets and rewrites, and `auth = "none"` for
//! Google's SMTP relay service.

use super::*;

const TWO: &str = "[upstream]\nusername = \"alerts@example.com\"\npassword = \"pw\"\n\
     host = \"mail.example.net\"\nport = 2587\ntimeout = \"7s\"\nfailover = [\"backup\"]\n\
     [accounts.billing]\nusername = \"billing@example.com\"\npassword = \"pw2\"\n\
     senders = [\"Billing@Example.com\", \"@billing.example.com\"]\nmax_per_day = 2000\n\
     [accounts.backup]\nusername = \"relay-backup@gmail.com\"\npassword = \"pw3\"\n\
     host = \"smtp.gmail.com\"\nport = 587\nsenders = []\n";

fn account<'a>(cfg: &'a Config, name: &str) -> &'a AccountConfig {
    cfg.account(name)
        .unwrap_or_else(|| panic!("no account {name}"))
}

#[test]
fn accounts_inherit_the_connection_but_never_the_identity() {
    let cfg = load_text(TWO).unwrap();
    let names: Vec<&str> = cfg.accounts.iter().map(AccountConfig::name).collect();
    assert_eq!(
        names,
        ["default", "backup", "billing"],
        "default first, then by name"
    );
    let billing = account(&cfg, "billing");
    assert_eq!(billing.upstream.host, "mail.example.net", "inherited");
    assert_eq!(billing.upstream.port, 2587);
    assert_eq!(billing.upstream.timeout, Duration::from_secs(7));
    assert_eq!(billing.upstream.username, "billing@example.com");
    assert_eq!(billing.upstream.section, "accounts.billing");
    assert_eq!(
        billing.senders,
        [
            SenderPattern::Address("billing@example.com".into()),
            SenderPattern::Domain("billing.example.com".into())
        ]
    );
    assert_eq!(billing.max_per_day, Some(2000));
    assert!(billing.failover.is_empty(), "failover is not inherited");
    assert_eq!(cfg.default_account().failover, ["backup"]);
    assert_eq!(account(&cfg, "backup").upstream.host, "smtp.gmail.com");

    // The identity is the account's own: a missing one is an error naming its key.
    let (key, msg) = invalid_key(&TWO.replace(
        "username = \"billing@example.com\"\npassword = \"pw2\"\n",
        "",
    ));
    assert_eq!(key, "accounts.billing.username");
    assert!(msg.contains("never takes it from [upstream]"), "{msg}");
    let (key, msg) = invalid_key(&TWO.replace("password = \"pw2\"\n", ""));
    assert_eq!(key, "accounts.billing.password");
    assert!(
        msg.contains("GMAIL_RELAY__ACCOUNTS__BILLING__PASSWORD"),
        "{msg}"
    );
}

#[test]
fn account_keys_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load_with_env(
        &write(dir.path(), &TWO.replace("password = \"pw2\"\n", "")),
        env(&[("GMAIL_RELAY__ACCOUNTS__BILLING__PASSWORD", "from-env")]),
    )
    .unwrap();
    assert_eq!(
        account(&cfg, "billing").upstream.auth,
        AuthConfig::Password(SecretSource::Inline(crate::secret::Secret::new("from-env")))
    );
}

#[test]
fn budgets_fall_back_to_the_delivery_section() {
    let cfg = load_text(&format!(
        "{TWO}[delivery]\nmax_per_day = 500\nmax_per_minute = 20\n"
    ))
    .unwrap();
    assert_eq!(account(&cfg, "billing").max_per_day, Some(2000), "its own");
    assert_eq!(
        account(&cfg, "backup").max_per_day,
        Some(500),
        "[delivery]'s"
    );
    assert_eq!(cfg.default_account().max_per_minute, Some(20));
}

#[test]
fn names_patterns_and_failover_are_checked() {
    let (key, msg) = invalid_key(&TWO.replace("[accounts.backup]", "[accounts.Backup]"));
    assert_eq!(key, "accounts.Backup");
    assert!(msg.contains("lower-case"), "{msg}");
    let (key, _) = invalid_key(&TWO.replace("[accounts.backup]", "[accounts.default]"));
    assert_eq!(key, "accounts.default");

    let (key, msg) =
        invalid_key(&TWO.replace("senders = []", "senders = [\"billing@EXAMPLE.com\"]"));
    assert_eq!(key, "accounts.billing.senders[0]");
    assert!(
        msg.contains("\"backup\"") && msg.contains("\"billing\""),
        "names both accounts: {msg}"
    );
    let (key, _) = invalid_key(&TWO.replace("senders = []", "senders = [\"not an address\"]"));
    assert_eq!(key, "accounts.backup.senders[0]");

    let (key, msg) = invalid_key(&TWO.replace("failover = [\"backup\"]", "failover = [\"spare\"]"));
    assert_eq!(key, "upstream.failover[0]");
    assert!(msg.contains("\"spare\" is not an account"), "{msg}");
    let looped = TWO.replace("senders = []", "senders = []\nfailover = [\"billing\"]") + "";
    let looped = looped.replace(
        "max_per_day = 2000",
        "max_per_day = 2000\nfailover = [\"default\"]",
    );
    let (key, msg) = invalid_key(&looped);
    assert_eq!(key, "upstream.failover");
    assert!(
        msg.contains("default → backup → billing → default"),
        "{msg}"
    );
}

#[test]
fn the_workspace_relay_service_needs_no_login_but_a_real_helo_name() {
    let relay = "[upstream]\nhost = \"smtp-relay.gmail.com\"\nauth = \"none\"\n\
                 helo_name = \"relay.example.com\"\n";
    let cfg = load_text(relay).unwrap();
    let up = &cfg.default_account().upstream;
    assert_eq!(up.auth, AuthConfig::None);
    assert_eq!(up.username, "", "optional with auth = none");
    assert_eq!(up.label(), "default at smtp-relay.gmail.com");

    let (key, msg) = invalid_key(&relay.replace("relay.example.com", "localhost"));
    assert_eq!(key, "upstream.helo_name");
    assert!(msg.contains("421 4.7.0"), "{msg}");
    let (key, _) = invalid_key(&relay.replace("relay.example.com", "nas"));
    assert_eq!(
        key, "upstream.helo_name",
        "a name without a dot is generic too"
    );
    let (key, _) = invalid_key(&format!("{relay}password = \"x\"\n"));
    assert_eq!(key, "upstream.password");
}

#[test]
fn an_account_may_rewrite_to_itself() {
    let cfg = load_text(&format!(
        "{TWO}[accounts.backup.rewrite]\nheader_from = \"account\"\n[rewrite]\nenvelope_from = \"account\"\n"
    ))
    .unwrap();
    assert_eq!(
        account(&cfg, "backup").rewrite,
        RewriteConfig {
            envelope_from: false,
            header_from: true
        },
        "its own table replaces [rewrite]"
    );
    assert!(cfg.default_account().rewrite.envelope_from);
    let (key, _) = invalid_key(&format!(
        "{TWO}[upstream.rewrite]\nheader_from = \"account\"\n"
    ));
    assert_eq!(key, "upstream.rewrite");
}

#[test]
fn the_api_transport_needs_oauth2_and_its_own_size_limit() {
    let api = "[upstream]\nusername = \"me@gmail.com\"\ntransport = \"api\"\nauth = \"xoauth2\"\n\
               [upstream.oauth2]\nclient_id = \"c\"\nrefresh_token = \"1//r\"\n";
    let cfg = load_text(api).unwrap();
    let up = &cfg.default_account().upstream;
    assert_eq!(up.transport, Transport::Api);
    assert_eq!(up.api_url, "https://gmail.googleapis.com");
    assert_eq!(
        up.destination(),
        "the Gmail API at https://gmail.googleapis.com"
    );
    // Accounts inherit the transport like the host.
    let two = format!(
        "{api}[accounts.b]\nusername = \"b@gmail.com\"\nauth = \"xoauth2\"\nsenders = [\"b@x\"]\n\
         [accounts.b.oauth2]\nclient_id = \"c\"\nrefresh_token = \"1//r\"\n"
    );
    assert_eq!(
        load_text(&two)
            .unwrap()
            .account("b")
            .unwrap()
            .upstream
            .transport,
        Transport::Api
    );

    let (key, msg) =
        invalid_key(&MINIMAL.replace("[upstream]\n", "[upstream]\ntransport = \"api\"\n"));
    assert_eq!(key, "upstream.transport");
    assert!(
        msg.contains("does not take app passwords") && msg.contains("oauth authorize"),
        "{msg}"
    );
    let (key, _) = invalid_key(&api.replace("transport = \"api\"", "transport = \"http\""));
    assert_eq!(key, "upstream.transport");
    let (key, msg) = invalid_key(&api.replace(
        "transport = \"api\"\n",
        "transport = \"api\"\napi_url = \"http://gmail.googleapis.com\"\n",
    ));
    assert_eq!(key, "upstream.api_url");
    assert!(msg.contains("https"), "{msg}");
    // The API's limit is 35 MiB, above SMTP's: the intake may take more, but not beyond it.
    let big = |n: u64| format!("[listen]\nmax_message_size = {n}\n{api}");
    assert!(load_text(&big(36_000_000)).is_ok());
    let (key, msg) = invalid_key(&big(36_700_000));
    assert_eq!(key, "listen.max_message_size");
    assert!(msg.contains("the Gmail API's limit of 36700160"), "{msg}");
}
