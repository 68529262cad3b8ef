//! The one table of defaults: every key that has a fixed default, with that default written as
//! it would be in `relay.toml`.
//!
//! Validation takes a missing value from here (and checks it like any value an operator
//! writes), and a unit test holds `relay.toml`'s "Default:" comments to it, so the sample and
//! the code cannot drift apart (the README points to the sample for defaults rather than
//! repeating them). Keys whose default depends on the machine
//! or on another key (`listen.hostname`, `upstream.helo_name`, `upstream.port`) are not here;
//! `validate` says what they default to.

/// The largest message Gmail accepts (its EHLO `SIZE`).
pub const GMAIL_MAX_SIZE: u64 = 35_882_577;

/// The largest message the Gmail API accepts (`users.messages.send`'s `maxSize`, 35 MiB).
pub const GMAIL_API_MAX_SIZE: u64 = 36_700_160;

/// The most bytes the relay adds to a message on the way through (`Received:`, and `Date:` and
/// `Message-ID:` when missing); `intake` keeps what it adds within this.
pub const ADDED_HEADERS_MAX: u64 = 2048;

/// `(key, default as TOML)`.
pub const TABLE: &[(&str, &str)] = &[
    ("listen.addrs", r#"["127.0.0.1:2525"]"#),
    ("listen.no_starttls_addrs", "[]"),
    ("listen.implicit_tls_addrs", "[]"),
    ("listen.allowed_networks", r#"["127.0.0.0/8", "::1/128"]"#),
    ("listen.danger_allow_any_network", "false"),
    ("listen.danger_allow_plaintext_auth", "false"),
    ("listen.allowed_senders", "[]"),
    ("listen.allowed_recipients", "[]"),
    // Gmail's SIZE less what the relay adds, so nothing accepted is too big for Gmail.
    ("listen.max_message_size", "35880529"),
    ("listen.max_recipients", "1000"),
    ("listen.max_connections", "512"),
    ("listen.max_connections_per_client", "128"),
    ("listen.idle_timeout", r#""5m""#),
    ("listen.data_timeout", r#""10m""#),
    ("queue.dir", r#""/var/spool/gmail-relay""#),
    ("queue.retry_min", r#""1m""#),
    ("queue.retry_max", r#""1h""#),
    ("queue.max_age", r#""5d""#),
    ("upstream.transport", r#""smtp""#),
    ("upstream.api_url", r#""https://gmail.googleapis.com""#),
    ("upstream.host", r#""smtp.gmail.com""#),
    ("upstream.tls", r#""starttls""#),
    ("upstream.auth", r#""password""#),
    ("upstream.max_connections", "2"),
    ("upstream.max_recipients_per_message", "100"),
    ("upstream.pipelining", "true"),
    ("upstream.timeout", r#""60s""#),
    ("upstream.idle_timeout", r#""4m""#),
    ("upstream.oauth2.refresh_before", r#""5m""#),
    (
        "upstream.oauth2.token_url",
        r#""https://oauth2.googleapis.com/token""#,
    ),
    (
        "upstream.oauth2.auth_url",
        r#""https://accounts.google.com/o/oauth2/v2/auth""#,
    ),
    ("cluster.key_prefix", r#""gmail-relay""#),
    ("delivery.hold", "false"),
    ("delivery.auth_pause_min", r#""1m""#),
    ("delivery.auth_pause_max", r#""30m""#),
    ("delivery.quota_pause", r#""1h""#),
    ("delivery.bounce", r#""sender""#),
    ("rewrite.envelope_from", r#""keep""#),
    ("rewrite.header_from", r#""keep""#),
    ("log.level", r#""info""#),
    ("log.format", r#""text""#),
];

/// The default of `key`, as TOML text. Panics on a key without one: that is a bug in the
/// caller, found by the first test that loads a config.
pub fn toml(key: &str) -> &'static str {
    TABLE
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no default for {key} in config::defaults::TABLE"))
}

/// A string default, without its quotes.
pub fn text(key: &str) -> String {
    toml(key).trim_matches('"').to_owned()
}

/// A number default.
pub fn number(key: &str) -> u64 {
    toml(key)
        .parse()
        .unwrap_or_else(|_| panic!("the default of {key} is not a number"))
}

/// A boolean default.
pub fn flag(key: &str) -> bool {
    toml(key) == "true"
}

/// A list default, its items without quotes.
pub fn list(key: &str) -> Vec<String> {
    toml(key)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|item| item.trim().trim_matches('"').to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_default_leaves_room_for_the_added_headers() {
        assert_eq!(
            number("listen.max_message_size"),
            GMAIL_MAX_SIZE - ADDED_HEADERS_MAX
        );
    }

    #[test]
    fn every_default_parses_as_its_kind() {
        for (key, value) in TABLE {
            let ok = value.parse::<u64>().is_ok()
                || matches!(*value, "true" | "false")
                || (value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('[') && value.ends_with(']'));
            assert!(ok, "{key} = {value}");
        }
        assert_eq!(list("listen.allowed_networks"), ["127.0.0.0/8", "::1/128"]);
        assert!(list("listen.allowed_senders").is_empty());
    }

    /// `relay.toml` documents each key with a "Default:" comment above it; it must name the
    /// default in this table.
    #[test]
    fn the_sample_config_states_these_defaults() {
        let sample = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.toml"),
        )
        .unwrap();
        let lines: Vec<&str> = sample.lines().collect();
        for (key, value) in TABLE {
            let (section, name) = key.rsplit_once('.').unwrap();
            let header = lines
                .iter()
                .position(|l| {
                    let l = l.trim_start_matches('#').trim();
                    l == format!("[{section}]")
                })
                .unwrap_or_else(|| panic!("relay.toml has no [{section}] for {key}"));
            let at = lines[header + 1..]
                .iter()
                .take_while(|l| !l.trim_start_matches('#').trim().starts_with('['))
                .position(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.split_once('=').is_some_and(|(k, _)| k.trim() == name)
                })
                .map(|i| header + 1 + i)
                .unwrap_or_else(|| panic!("relay.toml does not show {key}"));
            let default_line = lines[..at]
                .iter()
                .rev()
                .take_while(|l| !l.trim().is_empty())
                .find(|l| l.starts_with("# Default:"))
                .unwrap_or_else(|| panic!("no \"# Default:\" comment above {key} in relay.toml"));
            assert!(
                default_line.contains(value),
                "relay.toml says {default_line:?} above {key}; the default is {value}"
            );
        }
    }
}
